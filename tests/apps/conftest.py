"""Fixtures of the dashboard tests (constants in dashboard_testlib)."""

from __future__ import annotations

import pytest
from dashboard_testlib import APP, FACILITY, GPU_SPREAD, HOURS, RECORD_S, START, STEP_S


@pytest.fixture
def app(monkeypatch):
    """A fresh AppTest of the dashboard on the mini facility, no telemetry source."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TWIN_FACILITY", str(FACILITY))
    monkeypatch.delenv("TWIN_TELEMETRY", raising=False)
    return AppTest.from_file(str(APP), default_timeout=600)


@pytest.fixture(scope="session")
def twin_run():
    """The twin run the Fleet and Hall pages show, computed here with twin functions."""
    from twin.model import LoadMix
    from twin.simulation import prepare, simulate
    from twin.spec import load_facility

    spec = load_facility(FACILITY)
    run = prepare(spec, STEP_S, START, LoadMix.parse(None), seed=0, gpu_spread=GPU_SPREAD)
    ds, summary = simulate(spec, HOURS, record_interval=RECORD_S, run=run)
    return run, ds, summary
