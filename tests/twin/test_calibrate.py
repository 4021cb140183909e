"""Calibration: likelihood gradients, simulated-fleet recovery, real H100 traces, refusals.

The 1,000-GPU fleet is in benchmarks/bench_calibrate.py (docs/benchmarks.md, "Calibration");
the suite uses 24 GPUs x 2 h so that it stays fast.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import twin.calibration as C
from sensors.synthetic import simulate_fleet
from twin.calibration import calibrate, summary_json
from twin.calibration.metrics import moving_average
from twin.cli import main
from twin.io.telemetry import open_telemetry, to_grid
from twin.units import SpecError

TRACES = ("nanogpt_pr643_h100x8_b443a1c3.csv", "nanogpt_pr643_h100x8_32fcbd7a.csv")


def test_gradient_matches_central_differences():
    rng = np.random.default_rng(0)
    n = 300
    power = jnp.asarray(np.repeat(rng.uniform(100, 700, n // 20), 20))
    theta = jnp.array(
        [np.log(0.02), np.log(250.0), 27.0, 0.5, np.log(0.01), np.log(60.0), 0.3, 0.01]
    )
    frac = jnp.asarray(rng.uniform(0, 1, n))
    y = jnp.round(C.predict_readings(theta, power, frac, 1.0) + rng.normal(0, 0.3, n))
    w = jnp.asarray((rng.random(n) > 0.1).astype(float))
    mu = theta + 0.1
    prec = jnp.full(C.NP, 0.5)

    @jax.jit
    def f(th):
        return C.negative_log_likelihood(th, power, y, frac, w, 0.4, mu, prec, 1.0)

    g = jax.grad(f)(theta)
    h = 1e-6
    fd = np.array([(f(theta.at[i].add(h)) - f(theta.at[i].add(-h))) / (2 * h) for i in range(C.NP)])
    np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-6 * float(np.abs(fd).max()))


def test_prediction_sd_is_the_delta_method_by_finite_differences():
    rng = np.random.default_rng(3)
    n = 200
    power = np.repeat(rng.uniform(80, 700, n // 20), 20)[None]
    frac = rng.uniform(0, 1, (1, n))
    theta = np.array(
        [[np.log(0.02), np.log(250.0), 27.0, 0.5, np.log(0.01), np.log(60.0), 0.3, 0.01]]
    )
    a = rng.normal(size=(C.NP, C.NP)) * np.array([0.05, 0.2, 0.5, 0.3, 0.1, 0.1, 0.3, 0.002])
    cov = (a @ a.T)[None]
    sd = C.prediction_sd(theta, cov, power, frac, 1.0)
    # independent: central differences of the prediction for each parameter, J Sigma J^T
    h = 1e-6
    jac = np.stack(
        [
            (
                np.asarray(
                    C.predict_readings(jnp.asarray(theta[0] + h * e), power[0], frac[0], 1.0)
                )
                - np.asarray(
                    C.predict_readings(jnp.asarray(theta[0] - h * e), power[0], frac[0], 1.0)
                )
            )
            / (2 * h)
            for e in np.eye(C.NP)
        ],
        axis=1,
    )
    ref = np.sqrt(np.einsum("ni,ij,nj->n", jac, cov[0], jac))
    np.testing.assert_allclose(sd[0], ref, rtol=1e-5)
    assert sd.shape == (1, n) and sd.min() > 0
    # five GPUs in blocks of two (padding), a 2 s grid, one covariance that failed (NaN)
    th5 = np.repeat(theta, 5, 0) + rng.normal(0, 0.05, (5, C.NP))
    cov5 = np.repeat(cov, 5, 0)
    cov5[3, 0, 0] = np.nan
    p5, f5 = np.repeat(power, 5, 0), np.repeat(frac, 5, 0)
    sd5 = C.prediction_sd(th5, cov5, p5, f5, 2.0, chunk=2)
    assert np.isnan(sd5[3]).all() and np.isfinite(np.delete(sd5, 3, 0)).all()
    for i in (0, 4):
        j = np.stack(
            [
                (
                    np.asarray(C.predict_readings(jnp.asarray(th5[i] + h * e), p5[i], f5[i], 2.0))
                    - np.asarray(C.predict_readings(jnp.asarray(th5[i] - h * e), p5[i], f5[i], 2.0))
                )
                / (2 * h)
                for e in np.eye(C.NP)
            ],
            axis=1,
        )
        np.testing.assert_allclose(
            sd5[i], np.sqrt(np.einsum("ni,ij,nj->n", j, cov5[i], j)), rtol=1e-5
        )


def test_grid_step_must_match_the_config():
    ds, _ = simulate_fleet(2, 600, seed=2)
    with pytest.raises(SpecError, match="dt"):
        C.calibrate(to_grid(ds, dt=2.0), "h100-node")


def test_no_hold_out_reports_not_applicable():
    ds, _ = simulate_fleet(3, 1200, seed=4)
    res = C.calibrate(ds, "h100-node", C.CalibrationConfig(train_fraction=1.0))
    s = json.loads(C.summary_json(res))  # strict JSON: no NaN
    assert s["holdout_rmse_k"] is None and s["holdout_coverage_95"] is None
    assert s["extrapolation"] is None
    for g in s["gpus"]:
        assert g["holdout_extrapolated_fraction"] is None and g["holdout_coverage_95"] is None


@pytest.fixture(scope="module")
def fleet():
    ds, truth = simulate_fleet(24, 7200, seed=11)
    res = C.calibrate(ds, "h100-node")
    return res, truth


@pytest.mark.slow
def test_fleet_recovers_resistance_and_capacity(fleet):
    res, truth = fleet
    p = res.params
    eR = np.abs(p.resistance.values / truth.resistance - 1)
    eC = np.abs(p.capacitance.values / truth.capacitance - 1)
    assert np.isfinite(eR).all() and np.isfinite(eC).all()
    assert np.median(eR) <= 0.03 and np.percentile(eR, 99) <= 0.10
    assert np.median(eC) <= 0.03 and np.percentile(eC, 99) <= 0.10
    # held-out prediction from power alone, within the 1 degC readout
    assert res.summary["holdout_rmse_k"] < 0.6
    assert abs(res.summary["nmbe"]) < 0.5
    assert res.summary["anomalies"] == []  # a +-30 % spread is normal, not an anomaly
    # the hold-out stays inside the trained power envelope, and the stated 95 % prediction
    # interval (parameters + reading noise) holds at its rate
    assert res.summary["extrapolation"] is None
    assert 0.93 <= res.summary["holdout_coverage_95"] <= 0.975


@pytest.mark.slow
def test_fleet_uncertainty_covers_truth(fleet):
    res, truth = fleet
    p = res.params
    zR = (p.resistance.values - truth.resistance) / p.resistance_se.values
    zC = (p.capacitance.values - truth.capacitance) / p.capacitance_se.values
    # stated 95 % intervals (sandwich covariance clustered by time block, temperature level
    # and phase); the 1,000-GPU benchmark reports the exact rates (R 95 %, C 98-99 %).  With
    # 24 GPUs a true 95 % rate gives >= 21 of 24 with probability ~0.97
    assert np.mean(np.abs(zR) < 1.96) >= 21 / 24
    assert np.mean(np.abs(zC) < 1.96) >= 21 / 24
    # ... and they are not merely wide: the +-1 SE interval (68 % nominal) must miss some
    assert np.mean(np.abs(zR) < 1.0) <= 0.9 and np.mean(np.abs(zC) < 1.0) <= 0.9
    assert np.all(np.abs(zR) < 4) and np.all(np.abs(zC) < 4)


@pytest.mark.slow
def test_hbm_node_fitted_where_measured(fleet):
    res, truth = fleet
    err = np.abs(res.params.hbm_gain.values / truth.hbm_gain - 1)
    assert np.median(err) < 0.05


@pytest.mark.slow
def test_summary_and_file_are_read_off_the_dataset(fleet, tmp_path):
    res, _ = fleet
    p, s, g = res.params, res.summary, res.grid
    assert all({"units", "long_name"} <= set(p[v].attrs) for v in p.data_vars)
    # pooled hold-out metrics, from the readings and predictions (ASHRAE Guideline 14, p = 0)
    held = np.isfinite(g.temp) & ~g.gap & ~g.throttled
    held[:, : res.train_steps] = False
    e = g.temp[held] - res.prediction[held]
    rmse = round(float(np.sqrt(np.mean(e**2))), 4)
    assert s["holdout_samples"] == e.size == int(p.pooled_samples.sel(pool="holdout"))
    assert s["holdout_rmse_k"] == rmse == p.attrs["holdout_rmse_k"]
    assert s["nmbe"] == round(100 * float(np.sum(e)) / (e.size * float(np.mean(g.temp[held]))), 4)
    # per GPU: the Dataset's value rounded, null where it is NaN
    for i, gj in enumerate(s["gpus"]):
        for key, var, nd in (
            ("resistance_k_per_w", "resistance", 5),
            ("tau_slow_s", "tau_slow", 1),
        ):
            x = float(p[var][i])
            assert gj[key] == (round(x, nd) if np.isfinite(x) else None)
    assert sum(s["models"].values()) == s["n_gpus"] == p.sizes["gpu"] == 24
    # the file: the per-GPU and per-loop part, as load_params reads it back
    f = C.load_params(res.write(tmp_path / "p.nc"))
    assert set(f.data_vars) == {v for v in p.data_vars if {"gpu", "loop"} & set(p[v].dims)}
    assert "pool" not in f.dims and "extrapolation" not in f.attrs
    xr.testing.assert_identical(f["theta_cov"], p["theta_cov"])


@pytest.fixture(scope="module")
def real(shared_data):
    out = {}
    for name in TRACES:
        out[name] = C.calibrate(shared_data / "telemetry" / name, "h100-node")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", TRACES)
def test_real_trace_flags_gpu1_only(real, name):
    s = real[name].summary
    flagged = [g["gpu"].rsplit(":", 1)[1] for g in s["gpus"] if g["anomaly"]]
    assert flagged == ["1"]
    g1 = s["gpus"][1]
    # from the readings, at its own power, not from the fitted intercept (test_anomaly.py)
    assert "above peers at equal power" in g1["anomaly_reason"] and g1["peer_excess_k"] > 14
    per_gpu = [g["holdout_rmse_k"] for g in s["gpus"]]
    assert all(np.isfinite(per_gpu)) and len(per_gpu) == 8


@pytest.mark.slow
@pytest.mark.parametrize("name", TRACES)
def test_twin_validate_scores_the_calibrated_facility_model(real, name, shared_data, tmp_path):
    """``twin validate`` drives the facility model's GPUs (package, sink node, curvature) with
    the measured power of the 40 % held out and meets ASHRAE Guideline 14's calibration
    criteria (CV(RMSE) <= 2 %, |NMBE| <= 1 %) inside the trained power envelope, every GPU
    within 1 K there."""
    from twin.cli import main

    params = real[name].write(tmp_path / "params.nc")
    out = tmp_path / "validate.json"
    argv = ["validate", "--telemetry", str(shared_data / "telemetry" / name)]
    argv += ["--facility", "h100-node", "--calibration", str(params), "--json"]
    import contextlib
    import io
    import json

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    out = json.loads(buf.getvalue())
    env = out["envelope"]
    assert env["readings"] > 1000
    assert env["cv_rmse"] <= 2.0 and abs(env["nmbe"]) <= 1.0 and env["rmse_k"] <= 1.0
    assert env["coverage_95"] >= 0.90  # the 95 % intervals are not too narrow
    assert all(g["rmse_envelope_k"] <= 1.0 for g in out["gpus"]), out["gpus"]
    assert len(out["gpus"]) == 8 and out["gpus_uncalibrated"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.55, 0.8])
@pytest.mark.parametrize("name", TRACES)
def test_real_trace_flags_gpu1_only_at_other_splits(shared_data, name, fraction):
    """The anomaly verdict does not hinge on where training ends."""
    res = C.calibrate(
        shared_data / "telemetry" / name, "h100-node", C.CalibrationConfig(train_fraction=fraction)
    )
    assert [g.rsplit(":", 1)[1] for g in res.summary["anomalies"]] == ["1"]


@pytest.mark.slow
def test_real_trace_steady_run_meets_targets(real):
    s = real[TRACES[1]].summary
    assert max(g["holdout_rmse_k"] for g in s["gpus"]) <= 1.0
    assert s["cv_rmse"] <= 2.0 and abs(s["nmbe"]) <= 1.0


@pytest.mark.slow
def test_real_trace_step_run_close(real):
    """The step/cool-down trace: held-out prediction of an idle period never seen in training."""
    s = real[TRACES[0]].summary
    assert s["holdout_rmse_k"] <= 1.5
    assert s["cv_rmse"] <= 3.5 and abs(s["nmbe"]) <= 1.5


@pytest.mark.slow
def test_real_trace_step_run_flags_extrapolation_and_meets_targets_inside_envelope(real):
    """The idle tail lies outside the trained power envelope: said so, with honest intervals;
    inside the envelope the targets hold for every GPU."""
    s = real[TRACES[0]].summary
    assert s["extrapolation"] and "outside the trained envelope" in s["extrapolation"]
    for g in s["gpus"]:
        assert 0.2 <= g["holdout_extrapolated_fraction"] <= 0.6  # the ~250-290 s idle tail
        assert g["holdout_rmse_envelope_k"] <= 0.6
        assert g["holdout_coverage_95"] >= 0.95
        # extrapolation is where the error is, and the stated uncertainty there is wide
        assert g["holdout_rmse_extrapolated_k"] > g["holdout_rmse_envelope_k"]
    # ... and so is the stated uncertainty: wider outside the envelope than inside, per GPU
    res = real[TRACES[0]]
    env = res.params["power_envelope"].values
    p30 = moving_average(np.nan_to_num(res.grid.power), 30.0)
    held = np.arange(res.grid.n_steps) >= res.train_steps
    for i in range(len(res.grid.gpu)):
        out = held & ((p30[i] < env[i, 0]) | (p30[i] > env[i, 1]))
        assert np.median(res.prediction_sd[i][out]) > 2 * np.median(
            res.prediction_sd[i][held & ~out]
        )
    assert s["cv_rmse_envelope"] <= 2.0 and abs(s["nmbe_envelope"]) <= 1.0


@pytest.mark.slow
def test_real_trace_steady_run_stays_in_envelope(real):
    s = real[TRACES[1]].summary
    assert s["extrapolation"] is None and s["holdout_extrapolated_samples"] == 0
    assert s["holdout_rmse_envelope_k"] == s["holdout_rmse_k"]
    assert s["holdout_coverage_95"] >= 0.93


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="extrapolation to idle: 1.26 K pooled (docs/calibration.md)")
def test_real_trace_step_run_meets_targets(real):
    s = real[TRACES[0]].summary
    assert max(g["holdout_rmse_k"] for g in s["gpus"]) <= 1.0
    assert s["cv_rmse"] <= 2.0 and abs(s["nmbe"]) <= 1.0


@pytest.mark.slow
def test_real_trace_refuses_unresolved_heat_capacity(real):
    # nvidia-smi at 0.3 s shows no die lag: the fast pole is below the sampling, C is refused
    for g in real[TRACES[0]].summary["gpus"]:
        assert g["capacitance_j_per_k"] is None
        assert "shorter than" in g["unidentifiable"]


def _constant_dataset(n_t: int = 1800) -> xr.Dataset:
    rng = np.random.default_rng(1)
    t = np.datetime64("2026-01-01T00:00:00", "ns") + np.arange(n_t) * np.timedelta64(1, "s")
    p = 400.0 + rng.normal(0, 1.0, (n_t, 2))
    temp = np.round(45.0 + rng.normal(0, 0.25, (n_t, 2)))
    reasons = np.zeros((n_t, 2))
    reasons[100:130, 1] = 0x20  # SW thermal slowdown
    return xr.Dataset(
        {
            "power_average": (("time", "gpu"), p),
            "temp_gpu": (("time", "gpu"), temp),
            "clocks_event_reasons": (("time", "gpu"), reasons),
        },
        coords={"time": t, "gpu": ["h:0", "h:1"], "host": ("gpu", ["h", "h"])},
    )


def test_no_excitation_is_reported_unidentifiable():
    res = C.calibrate(_constant_dataset(), "h100-node")
    for g in res.summary["gpus"]:
        assert g["resistance_k_per_w"] is None and g["capacitance_j_per_k"] is None
        assert g["unidentifiable"].startswith("no excitation")
    assert np.isnan(res.params.resistance.values).all()
    # the level is still predicted
    assert res.summary["holdout_rmse_k"] < 0.6


def test_throttled_intervals_flagged_and_excluded():
    ds = _constant_dataset()
    grid = to_grid(ds)
    assert grid.throttled[1].sum() == 30 and grid.throttled[0].sum() == 0
    res = C.calibrate(grid, "h100-node")
    assert res.summary["gpus"][1]["throttled_seconds"] == 30.0


def test_bad_inputs_name_the_field(tmp_path):
    with pytest.raises(SpecError, match="--telemetry"):
        open_telemetry(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,gpu_index,temperature_C,utilization_gpu_percent,power_W\n")
    with pytest.raises(SpecError, match="--telemetry"):
        open_telemetry(empty)
    with pytest.raises(SpecError, match="--telemetry"):
        open_telemetry("http://127.0.0.1:9/")
    with pytest.raises(SpecError, match="temp_gpu"):
        C.calibrate(_constant_dataset().drop_vars("temp_gpu"), "h100-node")
    with pytest.raises(SpecError):
        C.calibrate(_constant_dataset(), "no-such-facility")
    with pytest.raises(SpecError, match="--train-fraction"):
        C.calibrate(_constant_dataset(), "h100-node", C.CalibrationConfig(train_fraction=2.0))


@pytest.mark.slow
def test_cli_calibrate_json_and_outputs(shared_data, tmp_path, capsys):
    out, png = tmp_path / "p.nc", tmp_path / "fit.png"
    rc = main(
        [
            "calibrate", "--telemetry", str(shared_data / "telemetry" / TRACES[1]),
            "--facility", "h100-node", "--out", str(out), "--plot", str(png), "--json",
        ]
    )  # fmt: skip
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("gpus", "holdout_rmse_k", "cv_rmse", "nmbe", "wall_seconds"):
        assert key in d
    assert {"gpu", "resistance_k_per_w", "holdout_rmse_k", "anomaly"} <= set(d["gpus"][0])
    ds = C.load_params(out)
    assert ds.sizes["gpu"] == 8 and png.stat().st_size > 10_000
    rc = main(["calibrate", "--telemetry", str(tmp_path / "nope.db"), "--facility", "h100-node"])
    assert rc == 2


def _steady_dataset(temp: np.ndarray) -> xr.Dataset:
    """Two GPUs at a constant 400 W, one reading a second, ``temp`` (time, gpu) [degC]."""
    n_t = temp.shape[0]
    t = np.datetime64("2026-01-01T00:00:00", "ns") + np.arange(n_t) * np.timedelta64(1, "s")
    return xr.Dataset(
        {
            "power_average": (("time", "gpu"), np.full((n_t, 2), 400.0)),
            "temp_gpu": (("time", "gpu"), temp),
        },
        coords={"time": t, "gpu": ["h:0", "h:1"], "host": ("gpu", ["h", "h"])},
    )


@pytest.mark.slow
def test_exact_zero_bias_is_reported_as_zero():
    """A hold-out whose errors cancel has NMBE 0: reported as 0.0 (file and JSON), not missing.

    The training readings fix the fit; the held-out readings are then set to the prediction
    +-0.5 K alternately, so the bias is zero and the RMSE 0.5 K by construction.
    """
    n_t = 600
    train = np.full((n_t, 2), 45.0)
    first = calibrate(_steady_dataset(train), "h100-node")
    held = np.arange(n_t) >= first.train_steps
    assert held.sum() % 2 == 0
    sign = np.where(np.arange(n_t) % 2 == 0, 0.5, -0.5)
    temp = np.where(held[:, None], first.prediction.T + sign[:, None], train)
    res = calibrate(_steady_dataset(temp), "h100-node")
    np.testing.assert_array_equal(res.prediction, first.prediction)  # training alone decides
    s = json.loads(summary_json(res))
    assert s["nmbe"] == 0.0 and res.params.attrs["nmbe"] == 0.0
    assert s["holdout_rmse_k"] == 0.5 and res.params.attrs["holdout_rmse_k"] == 0.5
    # CV(RMSE) = RMSE / mean reading, here 0.5 K over the mean level (ASHRAE Guideline 14)
    ybar = float(np.mean(temp[held]))
    assert s["cv_rmse"] == round(100 * 0.5 / ybar, 4) == res.params.attrs["cv_rmse"]
