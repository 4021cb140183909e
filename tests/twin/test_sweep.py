"""Batch sweeps on a real dask.distributed LocalCluster with worker processes (twin.sweep)."""

from __future__ import annotations

import io

import pytest

from twin.sweep import make_cases, parse_weather_years, run_case, run_sweep
from twin.units import SpecError


def test_sweep_on_local_cluster_processes_matches_in_process_runs(tmp_path):
    cases = make_cases(
        "single-rack", ["2023-01-15", "2023-07-15"], ["pack"], ["typical"], hours=1.0, load=0.6
    )
    assert len(cases) == 2
    progress = io.StringIO()
    df = run_sweep(cases, n_workers=2, stream=progress)
    assert len(df) == 2
    assert set(df.policy) == {"pack"} and set(df.day) == {"2023-01-15", "2023-07-15"}
    lines = [x for x in progress.getvalue().splitlines() if x.startswith("sweep: ")]
    assert len(lines) == 2 and lines[-1].startswith("sweep: 2/2 done")
    assert (df.violations == 0).all() and (df.total_kwh > df.it_kwh).all()
    # Worker processes, not the test process.
    import os

    assert os.getpid() not in set(df.worker_pid)
    # Same result as the same case run here: the cluster changes where, not what.
    july_pack = df[(df.day == "2023-07-15") & (df.policy == "pack")].iloc[0]
    local = run_case(next(c for c in cases if c.day == "2023-07-15" and c.policy == "pack"))
    assert local["total_kwh"] == pytest.approx(july_pack.total_kwh, rel=1e-9)
    # Weather matters: a July hour in Atlanta costs more cooling than a January one.
    jan = df[(df.day == "2023-01-15") & (df.policy == "pack")].iloc[0]
    assert july_pack.total_kwh - july_pack.it_kwh > jan.total_kwh - jan.it_kwh


def test_sweep_input_errors():
    with pytest.raises(SpecError, match="--policy: got 'fifo'"):
        make_cases("single-rack", ["2023-01-15"], ["fifo"])
    with pytest.raises(SpecError, match="typical or NAME:SITE=EPW"):
        parse_weather_years(["hot-year"])
    with pytest.raises(SpecError, match="--start"):
        make_cases("single-rack", ["not-a-date"], ["pack"])
