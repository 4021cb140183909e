"""The calibration grid leaves out long stretches without readings (issue 15, Deliver 1: memory
of calibrate/validate in proportion to the samples, not to the time span).

Old code refused both cases below ("a time span in proportion to the readings"): two stretches
a month apart asked for a grid of a month.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import twin.calibration as C
from sensors.synthetic import simulate_fleet
from twin.io.telemetry import GRID_BRIDGE_S, to_grid

MONTH = np.timedelta64(30, "D")


def _two_stretches(n: int = 3600) -> xr.Dataset:
    """One GPU read every second for ``n`` s, and again ``n`` s a month later (power 100 W then
    300 W + 1 W per reading)."""
    t0 = np.datetime64("2026-03-01T00:00:00", "ns")
    t = t0 + np.arange(n) * np.timedelta64(1, "s")
    t = np.concatenate([t, t + MONTH])
    power = np.concatenate([np.full(n, 100.0), 300.0 + np.arange(n)])
    return xr.Dataset(
        {"temp_gpu": (("time", "gpu"), np.full((2 * n, 1), 40.0)),
         "power_average": (("time", "gpu"), power[:, None])},
        coords={"time": t, "gpu": ["g0"]},
    )  # fmt: skip


def test_month_without_readings_is_left_out_of_the_grid():
    ds = _two_stretches()
    g = to_grid(ds)
    # 2 x 3600 readings + the bridge, not a month of steps
    assert g.n_steps < 2 * 3600 + GRID_BRIDGE_S + 2
    times = ds.time.values.astype(np.int64)
    # every reading lands on a step at its own time, on both sides of the cut
    assert np.isin(times, g.times).all()
    assert g.cuts == ((int(times[3599]), int(times[3600])),)
    assert g.end_ns == int(times[-1]) + 10**9
    # the bridge: power held at the next stretch's first reading, nothing compared there
    k = int(np.searchsorted(g.times, times[3600]))
    bridge = slice(k - int(GRID_BRIDGE_S) + 1, k)
    assert np.all(g.power[0, bridge] == 300.0)
    assert g.gap[0, bridge].all() and np.isnan(g.temp[0, bridge]).all()
    assert not g.gap[0, :3599].any() and not g.gap[0, k:].any()
    # the filter's clock (seconds of steps) maps to real times across the cut (anomalies' "since")
    assert g.time_at(k * g.dt) == int(times[3600]) and g.time_at(10.0) == int(times[10])
    # a window of the second stretch keeps its real times
    w = g.window(k, g.n_steps)
    assert w.t0_ns == int(times[3600]) and w.cuts == ()
    np.testing.assert_array_equal(w.times, times[3600:])


def test_calibrates_two_stretches_a_month_apart():
    ds, truth = simulate_fleet(2, 3000, seed=5)
    t = ds.time.values.copy()
    t[t >= t[0] + np.timedelta64(1500, "s")] += MONTH
    res = C.calibrate(
        ds.assign_coords(time=t), "h100-node", C.CalibrationConfig(train_fraction=0.8)
    )
    assert res.grid.n_steps < 3000 + GRID_BRIDGE_S + 10 and len(res.grid.cuts) == 1
    np.testing.assert_allclose(res.params.resistance.values, truth.resistance, rtol=0.03)
    assert res.summary["holdout_rmse_k"] < 0.6
    (gap,) = res.summary["gaps_left_out"]  # said, never silent
    assert abs(gap["seconds"] - MONTH / np.timedelta64(1, "s")) < 5
