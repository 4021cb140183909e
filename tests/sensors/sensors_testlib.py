"""Helpers for the sensors tests: free ports, the ``twin`` command in a subprocess, processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY_TRACES = (
    "nanogpt_pr643_h100x8_b443a1c3.csv",
    "nanogpt_pr643_h100x8_32fcbd7a.csv",
    "titanv_pagerank_nvprof_samples.csv",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twin_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def twin(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "twin.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=twin_env(**env),
        cwd=ROOT,
    )


def info(store: Path) -> dict:
    r = twin("telemetry", "info", "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_until(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def http_get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except OSError:
        return None


class Proc:
    """A started process whose stderr goes to a file; always stopped by the fixture."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._fh = log.open("w")
        self.p = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=self._fh, env=env, cwd=ROOT
        )

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
                pytest.fail(f"{self.p.args[:4]} did not stop within {timeout} s after {sig}")
        self._fh.close()
        return self.p.returncode


def sensord_argv(*args: str, **options: object) -> list[str]:
    """``twin sensord ARGS --opt value ...``; keyword ``flush_interval=1`` is ``--flush-interval 1``."""
    opts = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return [sys.executable, "-m", "twin.cli", "sensord", *args, *opts]
