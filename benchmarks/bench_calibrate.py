"""Calibration and filter benchmarks (docs/benchmarks.md, "Calibration").

    python benchmarks/bench_calibrate.py [--gpus 1000] [--hours 2] [--filter-gpus 300000]

1. A synthetic fleet (``sensors.synthetic.simulate_fleet``: hidden R and C spread ±30 %, 0.25 K
   sensor noise, 1 °C quantization, 1 s averaged power, jitter, drops and gaps) is calibrated on
   the first 60 % and predicted on the rest; recovery of R and C and the coverage of the stated
   95 % intervals are printed.
2. One extended-Kalman-filter update (predict + update + alarms) for a whole fleet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import twin  # noqa: E402,F401  (float64)
from sensors.synthetic import simulate_fleet
from twin import estimate as E  # noqa: E402
from twin.calibration import CalibrationConfig, calibrate  # noqa: E402
from twin.io.telemetry import to_grid  # noqa: E402


def fleet_recovery(n: int, hours: float, seed: int = 7) -> dict:
    t = time.perf_counter()
    ds, truth = simulate_fleet(n, hours * 3600, seed=seed)
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    grid = to_grid(ds)
    t_grid = time.perf_counter() - t
    # warm-up compile on a tiny fleet of the same step count is part of any real run; report
    # the cold run (compilation included), as a user sees it
    t = time.perf_counter()
    res = calibrate(grid, "h100-node", CalibrationConfig(train_fraction=0.6))
    t_cal = time.perf_counter() - t
    p = res.params
    eR = p.resistance.values / truth.resistance - 1
    eC = p.capacitance.values / truth.capacitance - 1
    zR = (p.resistance.values - truth.resistance) / p.resistance_se.values
    zC = (p.capacitance.values - truth.capacitance) / p.capacitance_se.values
    return {
        "gpus": n,
        "hours": hours,
        "simulate_s": t_sim,
        "grid_s": t_grid,
        "calibrate_s": t_cal,
        "R_median_rel_err": float(np.nanmedian(np.abs(eR))),
        "R_p99_rel_err": float(np.nanpercentile(np.abs(eR), 99)),
        "C_median_rel_err": float(np.nanmedian(np.abs(eC))),
        "C_p99_rel_err": float(np.nanpercentile(np.abs(eC), 99)),
        "R_cover95": float(np.nanmean(np.abs(zR) < 1.96)),
        "C_cover95": float(np.nanmean(np.abs(zC) < 1.96)),
        "unidentified": int(np.isnan(eR).sum() + np.isnan(eC).sum()),
        "holdout_rmse_k": res.summary["holdout_rmse_k"],
        "cv_rmse": res.summary["cv_rmse"],
        "nmbe": res.summary["nmbe"],
        "holdout_coverage_95": res.summary["holdout_coverage_95"],
        "models": res.summary["models"],
        "anomalies": len(res.summary["anomalies"]),
    }


def filter_update(n: int, repeats: int = 20) -> dict:
    rng = np.random.default_rng(0)
    hosts = n // 8
    model = E.FilterModel(
        r_f=np.full(n, 0.025) * rng.uniform(0.7, 1.3, n),
        cap=np.full(n, 250.0),
        r_s=np.zeros(n),
        tau_s=np.full(n, 100.0),
        beta=np.zeros(n),
        intercept=np.full(n, 28.0),
        meas_var=np.full(n, 0.15),
        m_var0=np.full(n, 1e-4),
        loop=np.arange(n) // 8,
        n_loops=hosts,
    )
    model = E.FilterModel(*[E.jnp.asarray(x) if isinstance(x, np.ndarray) else x for x in model])
    power = rng.uniform(100, 700, n)
    state = E.init_state(model, power)
    step = E.make_step(model, 1.0)
    temp = E.jnp.asarray(np.round(28 + 0.025 * power))
    p = E.jnp.asarray(power)
    t = time.perf_counter()
    state = step(state, p, temp)
    state.x.block_until_ready()
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state = step(state, p, temp)
        state.x.block_until_ready()
        times.append(time.perf_counter() - t)
    return {"gpus": n, "compile_s": compile_s, "median_ms": 1e3 * float(np.median(times)),
            "min_ms": 1e3 * float(np.min(times))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--filter-gpus", type=int, default=300_000)
    a = ap.parse_args()
    r = fleet_recovery(a.gpus, a.hours)
    print("| calibration | value |\n|---|---|")
    for k, v in r.items():
        print(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    for n in sorted({8_000, a.filter_gpus}):
        f = filter_update(n)
        print(
            f"| filter update, {f['gpus']:,} GPUs | median {f['median_ms']:.1f} ms, "
            f"min {f['min_ms']:.1f} ms (compile {f['compile_s']:.1f} s) |"
        )


if __name__ == "__main__":
    main()
