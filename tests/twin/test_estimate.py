"""Live estimation: drift alarms, loop approach drift, 60 s forecast, fleet-size update."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sensors.synthetic import simulate_fleet
from twin import estimate as E
from twin.calibration import CalibrationConfig, calibrate
from twin.io.telemetry import to_grid
from twin.units import SpecError

CAL_S = 7200


def _run(hours, **kw):
    ds, truth = simulate_fleet(8, hours * 3600, seed=5, **kw)
    g = to_grid(ds)
    cal = calibrate(g.window(0, CAL_S), "h100-node", CalibrationConfig(train_fraction=1.0))
    model = E.model_from_calibration(cal.params, g.gpu)
    rest = g.window(CAL_S, g.n_steps)
    P, T = E.grid_arrays(rest)
    state = E.init_state(model, P[0], T[0])
    return g, cal, model, rest, P, T, state


@pytest.fixture(scope="module")
def day_with_failure():
    step_at = 14 * 3600
    g, cal, model, rest, P, T, state = _run(24, resistance_step=(3, step_at, 1.2))
    state, trace = E.assimilate(model, state, P, T)
    return g, model, rest, state, trace, step_at


@pytest.mark.slow
def test_resistance_rise_flagged_within_10_minutes(day_with_failure):
    g, model, rest, state, trace, step_at = day_with_failure
    first = np.asarray(state.first_drift)
    delay = first[3] - (step_at - CAL_S)
    assert 0 < delay <= 600
    recs = E.anomalies(model, state, g.gpu, sorted(set(g.host)), t0_ns=rest.t0_ns)
    drift = [r for r in recs if r["kind"] == "resistance_drift"]
    assert [r["gpu"] for r in drift] == [g.gpu[3]]
    assert 0.1 < drift[0]["change"] < 0.35


@pytest.mark.slow
def test_no_false_alarm_in_a_day_of_normal_data(day_with_failure):
    g, model, rest, state, trace, step_at = day_with_failure
    first = np.asarray(state.first_drift)
    others = np.delete(first, 3)
    assert np.isnan(others).all()  # 22 h of normal data on 7 GPUs
    assert np.isnan(np.asarray(state.first_loop)).all()
    before = trace["t"] < step_at - CAL_S
    assert trace["r_mult"][before].max() < 1.1  # the failing GPU too, before its failure


def test_live_peer_anomalies_are_the_calibrations_detector():
    """The dashboard's synthetic fleet (GPU 5's cold plate 1.8 x worse from the start): the
    filter's peer records (twin.calibration.anomaly on the tracked readings) and the
    calibration's records (the same detector on its window, read back from params) flag it
    alone, with the same figures."""
    from twin.calibration import detect_anomalies

    ds, _ = simulate_fleet(8, 900.0, seed=0, resistance_step=(5, 0, 1.8))
    g = to_grid(ds)
    cal = calibrate(g, "h100-node")
    r0 = E.anomaly_resistance(cal.params)
    live = E.peer_anomalies(g, r0)
    assert [r["gpu"] for r in live] == [g.gpu[5]] == cal.summary["anomalies"]
    from_params = E.calibration_anomalies(cal.params)
    direct = detect_anomalies(g, r0).records()
    for a, b, c in zip(live, from_params, direct, strict=True):
        for key in ("gpu", "excess_k", "z", "at_w", "test", "reason"):
            assert a[key] == b[key] == c[key]
    assert live[0]["excess_k"] >= 5.0 and "failing interface" in live[0]["reason"]


@pytest.mark.slow
def test_unidentified_resistance_is_learned_then_watched(day_with_failure):
    """A GPU whose calibration left R unknown (10 % off, wide prior): no alarm while the
    filter learns it, and the 20 % rise at 14 h is still flagged within 10 minutes."""
    g, model, rest, state, trace, step_at = day_with_failure
    ok = np.ones(len(g.gpu), bool)
    ok[3] = False
    odd = model._replace(
        r_f=model.r_f.at[3].multiply(0.9), m_var0=model.m_var0.at[3].set(0.04), r_ok=ok
    )
    P, T = E.grid_arrays(rest)
    st, tr = E.assimilate(odd, E.init_state(odd, P[0], T[0]), P, T)
    first = np.asarray(st.first_drift)
    assert np.isnan(np.delete(first, 3)).all()
    delay = first[3] - (step_at - CAL_S)
    assert 0 < delay <= 600
    # it had learned the 10 % before arming; the alarm reports the change from that baseline
    rec = [r for r in E.anomalies(odd, st, g.gpu, sorted(set(g.host))) if r["gpu"] == g.gpu[3]]
    assert rec[0]["baseline"] == "learned while tracking"
    assert 0.1 < rec[0]["change"] < 0.35
    assert abs(float(st.m_base[3]) - np.log(1 / 0.9)) < 0.05
    # without the learning period the same misfit latches an alarm in the first hour
    no_learn = E.FilterConfig(learn_s=0.0)
    st0, _ = E.assimilate(odd, E.init_state(odd, P[0], T[0]), P[:3600], T[:3600], cfg=no_learn)
    assert np.asarray(st0.first_drift)[3] < 3600


@pytest.mark.slow
def test_loop_approach_drift_flagged():
    g, cal, model, rest, P, T, state = _run(4, inlet_drift=(0, 3 * 3600, 3.0))
    state, _ = E.assimilate(model, state, P, T)
    first = np.asarray(state.first_loop)
    assert np.isfinite(first[0])
    # 2 K at 3 K/h needs 40 min after the drift starts (1 h after calibration); the
    # decoupled loop update lags by ~30 min more (docs/calibration.md)
    assert 3600 + 2400 <= first[0] <= 3600 + 5400
    assert np.isnan(np.asarray(state.first_drift)).all()


@pytest.mark.slow
def test_forecast_60_s_ahead():
    g, cal, model, rest, P, T, state = _run(3)
    n = 1800
    state, _ = E.assimilate(model, state, P[:n], T[:n])
    errs = []
    for k in range(n, P.shape[0] - 60, 300):
        temp, sd = E.forecast(model, state, power=P[k : k + 60], horizon_s=60.0)
        obs = T[k + 59]
        ok = np.isfinite(obs)
        errs.append(temp[ok] - obs[ok])
        assert np.all(sd > 0)
        state, _ = E.assimilate(model, state, P[k : k + 300], T[k : k + 300])
    e = np.concatenate(errs)
    assert np.sqrt(np.mean(e**2)) < 0.8
    temp, _ = E.forecast(model, state, last_power=P[-1])
    assert temp.shape == (8,)


def test_unknown_gpu_is_an_error():
    ds, _ = simulate_fleet(4, 900, seed=1)
    cal = calibrate(ds, "h100-node")
    with pytest.raises(SpecError, match="gpu"):
        E.model_from_calibration(cal.params, ["nope:0"])


@pytest.mark.slow
def test_cli_watch_runs_on_a_recorded_trace(shared_data, tmp_path, capsys):
    from twin.cli import main

    export = tmp_path / "anomalies.jsonl"
    csv = shared_data / "telemetry" / "nanogpt_pr643_h100x8_b443a1c3.csv"
    argv = ["watch", "--telemetry", str(csv), "--facility", "h100-node"]
    rc = main(argv + ["--calibration-seconds", "700", "--export", str(export), "--forecast"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "forecast_60s" in out and "tracked 8 GPUs" in out
    # the calibration's peer anomaly (GPU 1, ~20 K hot) is reported when tracking starts; the
    # idle tail lies outside the calibrated power range: no drift alarm from extrapolation
    recs = [json.loads(line) for line in export.read_text().splitlines()]
    assert [(r["kind"], r["gpu"].rsplit(":", 1)[1]) for r in recs] == [("peer_excess", "1")]
    assert recs[0]["excess_k"] > 15 and "ANOMALY peer_excess" in out
    # calibrated on 1,000 s the resistances are not identified (docs/calibration.md): the
    # filter still learning them raised resistance_drift alarms on GPUs 5 and 6 within 3 min;
    # their drift is now measured from what it learned over its first 30 min
    export.unlink()
    assert main(argv + ["--calibration-seconds", "1000", "--export", str(export)]) == 0
    kinds = [json.loads(line)["kind"] for line in export.read_text().splitlines()]
    assert kinds == ["peer_excess"]
    assert "did not identify the resistance of 8 of 8 GPUs" in capsys.readouterr().err
    assert main(argv[:-2] + ["--facility", "nope"]) == 2


def test_elementwise_jacobian_matches_jacfwd():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    g = 40
    model = E.FilterModel(
        r_f=jnp.asarray(rng.uniform(0.015, 0.035, g)), cap=jnp.asarray(rng.uniform(150, 400, g)),
        r_s=jnp.asarray(rng.uniform(0, 0.01, g)), tau_s=jnp.asarray(rng.uniform(30, 300, g)),
        beta=jnp.asarray(rng.uniform(-0.01, 0.03, g)), intercept=jnp.zeros(g),
        meas_var=jnp.ones(g), m_var0=jnp.ones(g), loop=jnp.zeros(g, int), n_loops=1,
    )  # fmt: skip
    x = jnp.asarray(
        np.stack([rng.uniform(0, 20, g), rng.uniform(0, 5, g), rng.normal(0, 0.1, g)], 1)
    )
    a = rng.normal(size=(g, 3, 3))
    P = jnp.asarray(a @ a.transpose(0, 2, 1))
    p = jnp.asarray(rng.uniform(50, 700, g))
    args = (model.r_f, model.cap, model.r_s, model.tau_s, model.beta, 1.0)
    F = E._jac_v(x, p, *args)
    want = np.einsum("gij,gjk,glk->gil", F, P, F) + np.diag([1e-4, 2e-4, 3e-4])
    prop = jax.jit(E._propagate, static_argnums=(4, 5))
    x2, e = prop(x, P, p, model._replace(n_loops=None), 1.0, (1e-4, 2e-4, 3e-4))
    np.testing.assert_allclose(np.asarray(x2), np.asarray(E._step_v(x, p, *args)), atol=1e-12)
    np.testing.assert_allclose(np.asarray(E._sym(e)), want, rtol=1e-10, atol=1e-10)


def test_no_drift_alarm_from_start_up_misfit():
    # the dashboard's synthetic fleet (apps/data.py): filter started at the first step, where
    # most GPUs have no reading yet; GPU 5 is bad from the start (a peer anomaly, not drift)
    from twin.spec import load_facility

    spec = load_facility("superfactory")  # the dashboard's default facility
    tdp = spec.sites[0].building.rack.gpu.tdp
    ds, _ = simulate_fleet(8, 900.0, seed=0, tdp=tdp, resistance_step=(5, 0, 1.8))
    g = to_grid(ds)
    cal = calibrate(g, spec)
    model = E.model_from_calibration(cal.params, g.gpu)
    P, T = E.grid_arrays(g)
    state = E.init_state(model, P[0], T[0])
    state, _ = E.assimilate(model, state, P, T, record_every=30)
    assert np.isnan(np.asarray(state.first_drift)).all()
    assert np.isnan(np.asarray(state.first_loop)).all()
