"""``twin dashboard``: start the Streamlit dashboard (apps/dashboard.py) on this machine.

Binds 127.0.0.1; any other address needs ``--allow-remote`` (the dashboard has no
authentication). The page reads files only under ``--data-dir`` (default: the working
directory) and fetches URLs only under ``--allow-url`` (default: none). Options also read a
``TWIN_*`` environment variable (flags win): ``TWIN_TELEMETRY``, ``TWIN_FACILITY``,
``TWIN_DASHBOARD_PORT``, ``TWIN_DASHBOARD_ADDRESS``, ``TWIN_DATA_DIR`` (directories separated
by ``os.pathsep``), ``TWIN_ALLOW_URL`` (prefixes separated by spaces). The server runs as a
child process; SIGTERM and SIGINT sent to this command are passed on to it and the command
waits until it has stopped. See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from twin.cli.options import add_command, add_facility, add_telemetry
from twin.resources import env_default


def app_script() -> Path:
    """The Streamlit script the command runs (``apps/dashboard.py`` of the installed package).

    Located with :func:`importlib.util.find_spec` on the top-level ``apps`` package, which
    finds it without importing it: twin never imports the presentation layer.
    """
    spec = importlib.util.find_spec("apps")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the dashboard package 'apps' is not installed")
    return Path(spec.origin).with_name("dashboard.py")


DEFAULT_PORT = 8501
DEFAULT_ADDRESS = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dashboard`` to the ``twin`` command line."""
    summary = "start the Streamlit dashboard (fleet, halls, GPUs, placement, live)"
    p = add_command(subparsers, "dashboard", summary, __doc__)
    add_telemetry(p, default="", none="none: the simulated fleet")
    add_facility(p)
    p.add_argument(
        "--calibration",
        default=env_default("calibration", ""),
        metavar="PARAMS_NC",
        help="show the GPUs calibrated by `twin calibrate --out` [TWIN_CALIBRATION; the spec's]",
    )
    p.add_argument(
        "--port",
        type=int,
        default=env_default("dashboard_port", str(DEFAULT_PORT)),
        help=f"TCP port [TWIN_DASHBOARD_PORT; {DEFAULT_PORT}]",
    )
    p.add_argument(
        "--address",
        default=env_default("dashboard_address", DEFAULT_ADDRESS),
        help=f"address to bind [TWIN_DASHBOARD_ADDRESS; {DEFAULT_ADDRESS}: this machine only]",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow an --address other than loopback (the dashboard has no authentication)",
    )
    p.add_argument(
        "--data-dir",
        action="append",
        default=None,
        metavar="DIR",
        help="directory whose files the page may read (repeatable) [TWIN_DATA_DIR; the "
        "working directory]",
    )
    p.add_argument(
        "--allow-url",
        action="append",
        default=None,
        metavar="PREFIX",
        help="http(s) URL prefix the page may fetch, e.g. a Prometheus (repeatable) "
        "[TWIN_ALLOW_URL; none but the --telemetry URL]",
    )
    p.set_defaults(func=run)


def is_loopback(address: str) -> bool:
    """Whether ``address`` (IP or host name) is this machine only (127.0.0.0/8, ::1,
    localhost)."""
    if address.strip().lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(address.strip("[] ")).is_loopback
    except ValueError:
        return False


def check_address(args: argparse.Namespace) -> None:
    """Refuse an address other than loopback without ``--allow-remote``; warn with it."""
    from twin.units import SpecError

    if is_loopback(args.address):
        return
    if not args.allow_remote:
        raise SpecError(
            "--address",
            args.address,
            "a loopback address (127.0.0.1), or --allow-remote to serve other machines: the "
            "dashboard has no authentication",
        )
    print(
        f"twin dashboard: warning: serving {args.address}: the dashboard has NO authentication; "
        "anyone who reaches this port can use it and read files under "
        + ", ".join(data_dirs(args))
        + " (put it behind an authenticating proxy or a firewall)",
        file=sys.stderr,
    )


def data_dirs(args: argparse.Namespace) -> list[str]:
    """The page's data directories, absolute: ``--data-dir``, TWIN_DATA_DIR, else the working
    directory."""
    dirs = args.data_dir
    if dirs is None:
        dirs = (env_default("data_dir") or "").split(os.pathsep)
    return [str(Path(d).expanduser().resolve()) for d in dirs if d.strip()] or [str(Path.cwd())]


def allow_urls(args: argparse.Namespace) -> list[str]:
    """``--allow-url`` prefixes, else TWIN_ALLOW_URL's."""
    urls = args.allow_url
    return (env_default("allow_url") or "").split() if urls is None else urls


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args``."""
    if not 1 <= args.port <= 65535:
        from twin.units import SpecError

        raise SpecError("--port", args.port, "a TCP port from 1 to 65535")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_script()),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--",
        "--facility",
        args.facility,
    ]
    if args.telemetry:
        cmd += ["--telemetry", args.telemetry]
    if args.calibration:
        cmd += ["--calibration", args.calibration]
    for d in data_dirs(args):
        cmd += ["--data-dir", d]
    for u in allow_urls(args):
        cmd += ["--allow-url", u]
    return cmd


def run(args: argparse.Namespace) -> int:
    try:
        import streamlit  # noqa: F401
    except ModuleNotFoundError:
        print(
            "twin dashboard: error: streamlit is not installed (pip install streamlit)",
            file=sys.stderr,
        )
        return 2
    check_address(args)
    cmd = streamlit_command(args)
    print(f"twin dashboard: http://{args.address}:{args.port}/", file=sys.stderr)
    env = dict(
        os.environ,
        TWIN_FACILITY=args.facility,
        TWIN_TELEMETRY=args.telemetry,
        TWIN_CALIBRATION=args.calibration,
    )
    sys.stderr.flush()
    return supervise(cmd, env)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM when this command dies, even by SIGKILL (PR_SET_PDEATHSIG),
    so no server is left behind without its supervisor."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def supervise(cmd: list[str], env: dict[str, str], grace_s: float = 20.0) -> int:
    """Run the server as a child in its own session; pass SIGTERM/SIGINT on to it and wait.

    The child has its own process group, so a terminal's Ctrl-C reaches it once (through us);
    if it is still running ``grace_s`` after a signal, its whole group is killed. Returns the
    child's exit status (128 + signal number after a forwarded signal, as a shell reports).
    """
    linux = sys.platform.startswith("linux")
    child = subprocess.Popen(
        cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent if linux else None
    )
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = None
    try:
        while (rc := child.poll()) is None:
            if received and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 128 + received[0] if received and rc < 0 else rc
