"""Fixtures for the sensors tests; every started process is stopped by a finalizer."""

from __future__ import annotations

import pytest
from sensors_testlib import Proc, twin_env


@pytest.fixture
def spawn(tmp_path):
    """Start processes (stderr to a log file); all are killed at teardown if still running."""
    procs: list[Proc] = []

    def _spawn(argv: list[str], name: str = "proc", **env: str) -> Proc:
        p = Proc(argv, tmp_path / f"{name}-{len(procs)}.log", twin_env(**env))
        procs.append(p)
        return p

    yield _spawn
    for p in procs:
        if p.p.poll() is None:
            p.p.kill()
            p.p.wait(10)
        p._fh.close()
