"""The dashboard simulates once: the final state behind the Hall page is the state that
``twin.simulation`` reaches, equal bit for bit to the same run stepped in two pieces with
``init_run``/``step_run``, and it gives the Dataset's per-rack hottest GPU."""

from __future__ import annotations

import jax
import numpy as np
from dashboard_testlib import FACILITY, GPU_SPREAD, HOURS, RECORD_S, START, STEP_S

from twin.simulation import init_run, step_run


def test_fleet_run_state_is_the_final_state_of_the_run(twin_run):
    from apps import data

    run, ds, summary = twin_run
    settings = data.parse_settings(
        str(FACILITY), HOURS, f"{STEP_S:g} s", f"{RECORD_S:g} s", START, "", GPU_SPREAD
    )
    fr = data.fleet_run(settings)
    half, _ = step_run(run, init_run(run), HOURS / 2, RECORD_S)
    end, _ = step_run(run, half, HOURS / 2, RECORD_S)
    assert end.seconds == HOURS * 3600.0
    for shown, ref in zip(
        jax.tree.leaves(fr.state), jax.tree.leaves(end.numpy().physics), strict=True
    ):
        assert np.array_equal(shown, ref)
    for v in ds.variables:
        assert np.array_equal(fr.ds[v].values, ds[v].values), v
    assert fr.summary["it_energy_kwh"] == summary["it_energy_kwh"]
    # the rack table's hottest GPU per rack is the Dataset's final_rack_max_gpu_temperature
    assert np.array_equal(fr.racks.gpu_max_c.values, ds.final_rack_max_gpu_temperature.values)
    gpus = data.rack_gpus(fr.run, fr.state, 0)
    assert gpus.temperature_c.max() == fr.racks.gpu_max_c.iloc[0]
