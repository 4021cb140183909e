"""Shared inputs of the dashboard tests: a two-site, two-story mini facility and the sidebar's
default twin inputs (the tests recompute what the pages show from these with twin functions)."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "dashboard.py"
FACILITY = Path(__file__).resolve().parent / "fixtures" / "two-story-mini.toml"

#: The sidebar's defaults (apps/dashboard.py): what the pages simulate unless changed.
START = "2023-07-15T12:00Z"
HOURS = 1.0
STEP_S = 30.0
RECORD_S = 300.0
GPU_SPREAD = 0.05


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
