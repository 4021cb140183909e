"""Superfactory Twin dashboard: the fleet, the two-story halls, every GPU, placement what-ifs.

Start it with ``twin dashboard [--facility F] [--telemetry SOURCE] [--port P]`` (binds
127.0.0.1), or ``streamlit run apps/dashboard.py -- --facility F --telemetry SOURCE``. Options
also come from ``TWIN_FACILITY`` and ``TWIN_TELEMETRY``. The pages only present: the numbers
come from :mod:`apps.data`, which calls the twin. See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run apps/dashboard.py` puts only apps/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

import twin  # noqa: E402,F401  (float64 JAX)
from apps import data  # noqa: E402
from apps.views import fleet, gpu, hall, live, placement  # noqa: E402
from twin.resources import env_default  # noqa: E402
from twin.units import InputError  # noqa: E402

PAGES = {
    "Fleet": fleet.render,
    "Hall": hall.render,
    "GPU": gpu.render,
    "Placement": placement.render,
    "Live": live.render,
}


@dataclasses.dataclass(frozen=True)
class Context:
    """What every page gets: the validated twin inputs and the telemetry source ('' = none)."""

    settings: data.SimSettings
    telemetry: str
    access: data.Access  # what the server may read and fetch for the page (--data-dir ...)


def command_line() -> argparse.Namespace:
    """Options after ``--`` of ``streamlit run``; defaults from ``TWIN_*`` variables."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--facility", default=env_default("facility", "superfactory"))
    p.add_argument("--telemetry", default=env_default("telemetry", ""))
    p.add_argument("--calibration", default=env_default("calibration", ""))
    p.add_argument("--data-dir", action="append", default=None)
    p.add_argument("--allow-url", action="append", default=None)
    args, _unknown = p.parse_known_args(sys.argv[1:])
    if args.data_dir is None:  # TWIN_DATA_DIR: directories separated by os.pathsep
        args.data_dir = (env_default("data_dir") or "").split(os.pathsep)
    if args.allow_url is None:  # TWIN_ALLOW_URL: prefixes separated by spaces
        args.allow_url = (env_default("allow_url") or "").split()
    return args


def access(args: argparse.Namespace) -> data.Access:
    """The operator's read/fetch policy (:class:`apps.access.Access`) of the command line."""
    named = (args.telemetry, args.calibration, args.facility)
    return data.Access.from_options(args.data_dir, args.allow_url, named)


def sidebar(args: argparse.Namespace) -> tuple[str, Context | None]:
    """Page choice and twin inputs; shows a message and returns no context on bad input."""
    st.sidebar.title("Superfactory Twin")
    names = list(PAGES)
    wanted = str(st.query_params.get("page", "fleet")).lower()
    index = next((i for i, n in enumerate(names) if n.lower() == wanted), 0)
    page = st.sidebar.radio("Page", names, index=index, key="page")
    st.query_params["page"] = page.lower()
    with st.sidebar.expander("Twin inputs", expanded=False):
        facility = st.text_input(
            "Facility (shipped name or TOML path)", args.facility, key="facility"
        )
        start = st.text_input("Start (ISO 8601, UTC)", "2023-07-15T12:00Z", key="start")
        hours = st.number_input("Simulated hours", 0.05, 168.0, 1.0, 0.25, key="hours")
        step = st.text_input("Time step", "30 s", key="step")
        record = st.text_input("Record interval", "5 min", key="record")
        load = st.text_input(
            "Load mix (training=F,inference=F,idle=F or constant=F)", "", key="load"
        )
        spread = st.number_input(
            "GPU-to-GPU spread (relative s.d. of resistance, capacity, leakage; 0 = identical)",
            0.0,
            0.5,
            0.05,
            0.01,
            key="gpu_spread",
        )
        calibration = st.text_input(
            "Calibration (params.nc of twin calibrate; empty: the spec's GPUs)",
            args.calibration,
            key="calibration",
        )
        telemetry = st.text_input(
            "Telemetry source (store, file or http:// Prometheus; empty: simulated fleet)",
            args.telemetry,
            key="telemetry",
        )
    try:
        policy = access(args)
        policy.check_sources(facility, calibration, telemetry)
        settings = data.parse_settings(
            facility, hours, step, record, start, load, spread, calibration=calibration
        )
    except InputError as exc:
        st.error(f"Twin inputs: {exc}")
        return page, None
    return page, Context(settings, telemetry.strip(), policy)


def main() -> None:
    st.set_page_config(page_title="Superfactory Twin", layout="wide")
    page, ctx = sidebar(command_line())
    if ctx is None:
        return
    try:
        PAGES[page](ctx)
    except (InputError, FileNotFoundError) as exc:
        st.error(f"{page}: {exc}")


main()
