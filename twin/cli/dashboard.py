"""``twin dashboard``: start the Streamlit dashboard (apps/dashboard.py) on this machine.

Binds 127.0.0.1 unless told otherwise. Every option also reads a ``TWIN_*`` environment
variable (flags win): ``TWIN_TELEMETRY``, ``TWIN_FACILITY``, ``TWIN_DASHBOARD_PORT``,
``TWIN_DASHBOARD_ADDRESS``. See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
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
    p.set_defaults(func=run)


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
    cmd = streamlit_command(args)
    print(f"twin dashboard: http://{args.address}:{args.port}/", file=sys.stderr)
    env = dict(
        os.environ,
        TWIN_FACILITY=args.facility,
        TWIN_TELEMETRY=args.telemetry,
        TWIN_CALIBRATION=args.calibration,
    )
    sys.stderr.flush()
    # Replace this process with streamlit (no child left behind): SIGTERM/SIGINT sent to
    # `twin dashboard` reach the server itself, so service managers and tests stop it cleanly.
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached
