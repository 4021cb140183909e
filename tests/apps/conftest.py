"""Fixtures of the dashboard tests (constants in dashboard_testlib)."""

from __future__ import annotations

import os

import pytest
from dashboard_testlib import APP, FACILITY, GPU_SPREAD, HOURS, RECORD_S, ROOT, START, STEP_S


@pytest.fixture
def app(monkeypatch, tmp_path):
    """A fresh AppTest of the dashboard on the mini facility, no telemetry source; the page may
    read files of the project and of the test's ``tmp_path`` (its --data-dir), fetch no URL."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TWIN_FACILITY", str(FACILITY))
    monkeypatch.delenv("TWIN_TELEMETRY", raising=False)
    monkeypatch.delenv("TWIN_CALIBRATION", raising=False)
    monkeypatch.delenv("TWIN_ALLOW_URL", raising=False)
    monkeypatch.setenv("TWIN_DATA_DIR", os.pathsep.join((str(ROOT), str(tmp_path))))
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
