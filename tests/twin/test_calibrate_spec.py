"""``twin calibrate`` picks the node spec the user names and says when the telemetry contradict it.

The shared 8xH100 nanoGPT traces (../shared/data/telemetry) come from an air-cooled-looking
node: 46 degC at ~388 W and 53-73 degC at ~690 W over a ~25 degC inlet.  The liquid-cooled
h100-node spec predicts far cooler dies; the air-cooled h100-node-air does not.  The figures
asserted here are computed independently: from the raw CSV with pandas, and from the facility
model (physics.facility through twin.simulation) run to steady state at the measured power.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import twin.calibration as C
from twin.cli import main
from twin.model import LoadMix
from twin.simulation import prepare, simulate_run
from twin.spec import load_facility

STEADY = "nanogpt_pr643_h100x8_32fcbd7a.csv"  # ~388 W throughout
STEP = "nanogpt_pr643_h100x8_b443a1c3.csv"  # a ~690 W plateau, then ~390 W, then idle
INLET_C = 25.0  # both node specs' supply (inlet) temperature


def _csv(shared_data, name: str) -> pd.DataFrame:
    return pd.read_csv(shared_data / "telemetry" / name, skipinitialspace=True)


def _calibrate_cli(shared_data, name: str, facility: str, capsys) -> tuple[dict, str]:
    rc = main(
        [
            "calibrate", "--telemetry", str(shared_data / "telemetry" / name),
            "--facility", facility, "--json",
        ]
    )  # fmt: skip
    assert rc == 0
    cap = capsys.readouterr()
    return json.loads(cap.out), cap.err


def _model_steady_die_c(facility: str, power_w: float) -> float:
    """Mean die temperature [degC] of the facility model after 1 h at a constant GPU power.

    ``LoadMix(constant=f)`` draws ``f`` x TDP at the reference temperature; one correction
    makes the GPUs draw ``power_w`` at the model's own die temperature (leakage slope
    alpha x P_leak,ref of the spec)."""
    spec = load_facility(facility)
    g = spec.sites[0].building.rack.gpu
    f = power_w / g.tdp
    for _ in range(2):
        run = prepare(spec, step=60.0, load=LoadMix(constant=f))
        ds, _, _ = simulate_run(run, 1.0)
        temp_c = float(ds.mean_gpu_temperature.values[-1, 0])
        slope = g.leakage_coefficient * g.leakage_at_reference  # [W/K]
        f = (power_w - slope * (temp_c + 273.15 - g.reference_temperature)) / g.tdp
    return temp_c


@pytest.fixture(scope="module")
def steady_runs(shared_data):
    """Calibration of the steady trace against each node spec (library call, no CLI)."""
    return {
        spec: C.calibrate(shared_data / "telemetry" / STEADY, spec)
        for spec in ("h100-node", "h100-node-air")
    }


@pytest.mark.slow
def test_liquid_spec_is_contradicted_and_air_spec_is_not(shared_data, capsys):
    df = _csv(shared_data, STEADY)
    load = df[df.power_W >= 350.0]  # the spec check's "at load": >= 50 % of the 700 W TDP
    measured_c = float(load.temperature_C.mean())
    r_app = float(
        load.assign(r=(load.temperature_C - INLET_C) / load.power_W)
        .groupby("gpu_index")
        .r.median()
        .median()
    )
    liquid, err_liquid = _calibrate_cli(shared_data, STEADY, "h100-node", capsys)
    air, err_air = _calibrate_cli(shared_data, STEADY, "h100-node-air", capsys)
    print(
        "spec_check liquid:", json.dumps(liquid["spec_check"]),
        "\nspec_check air:", json.dumps(air["spec_check"]),
        f"\nheld-out RMSE liquid {liquid['holdout_rmse_k']} K, air {air['holdout_rmse_k']} K",
    )  # fmt: skip
    cl, ca = liquid["spec_check"], air["spec_check"]
    assert cl["facility"] == "h100-node" and ca["facility"] == "h100-node-air"
    # the liquid spec: contradicted, said on stderr with the numbers and the suggestion
    assert cl["checked"] and cl["contradiction"]
    assert "WARNING" in err_liquid and "'h100-node'" in err_liquid
    assert (
        "--facility h100-node-air" in err_liquid and "--facility h100-node-air" in cl["suggestion"]
    )
    assert f"{cl['apparent_resistance_k_per_w']:.4f}" in err_liquid
    assert cl["resistance_range_k_per_w"] == [0.023, 0.036]
    # the air spec: no contradiction, no warning
    assert ca["checked"] and not ca["contradiction"] and ca["message"] is None
    assert "WARNING" not in err_air
    # the figures, against the raw CSV: the same readings give the same mean and slope
    for c in (cl, ca):
        assert c["measured_mean_c"] == pytest.approx(measured_c, abs=0.3)
        assert c["apparent_resistance_k_per_w"] == pytest.approx(r_app, rel=0.03)
    # the slope lies in the air range of refs 1, outside the liquid one
    assert 0.023 < 0.036 < r_app < 0.067
    # the uncalibrated error of the air spec is much smaller than the liquid spec's
    assert cl["mean_residual_k"] > 5.0
    assert abs(ca["mean_residual_k"]) < 2.0
    assert abs(ca["mean_residual_k"]) < 0.25 * cl["mean_residual_k"]
    # and the calibration itself still fits both: held-out RMSE under 1 K (1 degC readout)
    assert liquid["holdout_rmse_k"] < 1.0 and air["holdout_rmse_k"] < 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("name", "lo_w"), [(STEADY, 350.0), (STEP, 650.0)])
def test_facility_model_of_the_air_spec_matches_the_plateau(shared_data, name, lo_w):
    """The facility model of each spec, run to steady state at the trace's plateau power,
    against the plateau's measured mean die temperature (the last half of the plateau)."""
    df = _csv(shared_data, name)
    df["t"] = pd.to_datetime(df.timestamp)
    hi = df[df.power_W >= lo_w]
    if name == STEP:  # the ~690 W plateau's first stretch, before the power falls
        hi = hi[hi.t <= hi.t.min() + pd.Timedelta(seconds=270)]
    plateau = hi[hi.t >= hi.t.min() + (hi.t.max() - hi.t.min()) / 2]
    power_w, measured_c = float(plateau.power_W.mean()), float(plateau.temperature_C.mean())
    liquid_c = _model_steady_die_c("h100-node", power_w)
    air_c = _model_steady_die_c("h100-node-air", power_w)
    print(
        f"{name}: plateau {power_w:.1f} W, measured {measured_c:.2f} degC; facility model "
        f"h100-node {liquid_c:.2f} degC, h100-node-air {air_c:.2f} degC"
    )
    err_liquid, err_air = measured_c - liquid_c, measured_c - air_c
    assert err_liquid > 7.0  # the liquid spec's dies run far too cool
    assert abs(err_air) < 0.5 * err_liquid
    assert abs(err_air) < (5.0 if name == STEADY else 7.0)


@pytest.mark.slow
def test_spec_check_in_the_summary_and_the_file(steady_runs, tmp_path):
    res = steady_runs["h100-node"]
    s = json.loads(C.summary_json(res))
    assert s["spec_check"]["contradiction"] and s["facility"] == "h100-node"
    f = C.load_params(res.write(tmp_path / "p.nc"))
    assert json.loads(f.attrs["spec_check"]) == s["spec_check"]
    assert not steady_runs["h100-node-air"].summary["spec_check"]["contradiction"]


def _node_dataset(temp_c: float, power_w: float, n_t: int = 600) -> xr.Dataset:
    """Two GPUs of one host at a constant power and a constant (rounded) reading."""
    rng = np.random.default_rng(3)
    t = np.datetime64("2026-01-01T00:00:00", "ns") + np.arange(n_t) * np.timedelta64(1, "s")
    p = power_w + rng.normal(0, 15.0, (n_t, 2))
    temp = np.round(temp_c + rng.normal(0, 0.3, (n_t, 2)))
    return xr.Dataset(
        {"power_average": (("time", "gpu"), p), "temp_gpu": (("time", "gpu"), temp)},
        coords={"time": t, "gpu": ["h:0", "h:1"], "host": ("gpu", ["h", "h"])},
    )


def test_spec_check_criterion_on_synthetic_readings():
    """At 600 W over the 25 degC inlet: 0.034 K/W (the liquid spec's own) agrees with the
    liquid spec; 0.055 K/W (inside refs 1's air range) contradicts it and points to the air
    spec; both read the same against the air spec the other way round."""
    liquid_ok = C.calibrate(_node_dataset(25 + 0.034 * 600, 600.0), "h100-node")
    c = liquid_ok.summary["spec_check"]
    assert c["checked"] and not c["contradiction"]
    assert c["resistance_k_per_w"] == pytest.approx(0.030 + 0.5 / 132.65, rel=1e-3)
    hot = _node_dataset(25 + 0.055 * 600, 600.0)
    c = C.calibrate(hot, "h100-node").summary["spec_check"]
    assert c["contradiction"] and "h100-node-air" in c["suggestion"]
    assert len(c["reasons"]) == 2  # outside the cited range, and a mean residual > 5 K
    assert not C.calibrate(hot, "h100-node-air").summary["spec_check"]["contradiction"]
    c = C.calibrate(_node_dataset(25 + 0.034 * 600, 600.0), "h100-node-air").summary
    c = c["spec_check"]
    assert c["contradiction"] and c["mean_residual_k"] < -5.0
    assert c["suggestion"] == "the data look like a liquid-cooled node; try --facility h100-node"


def test_spec_check_needs_readings_at_load():
    c = C.calibrate(_node_dataset(30.0, 100.0), "h100-node").summary["spec_check"]
    assert c["checked"] is False and "at load" in c["reason"] and not c["contradiction"]


@pytest.mark.slow
def test_simulate_air_node_fans_and_temperatures(capsys):
    """``twin simulate --facility h100-node-air --hours 1 --json``: the fans (the secondary
    loop's "pump", at their design speed) draw Q H / eta = 0.714 m3/s x 600 Pa (their whole
    head) / 0.45 = 952 W, 5-15 % of the node; the dies run between the 25 degC inlet and the
    87 degC max operating temperature."""
    rc = main(["simulate", "--facility", "h100-node-air", "--hours", "1", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    pump_w = s["pump_energy_kwh"] * 1e3 / s["hours"]  # fans + facility-water pump
    it_w = s["it_energy_kwh"] * 1e3 / s["hours"]
    print(
        f"h100-node-air, 1 h: fans+FWS pump {pump_w:.0f} W, IT {it_w:.0f} W, "
        f"max die {s['max_gpu_temperature_c']:.1f} degC, max HBM "
        f"{s['max_hbm_temperature_c']:.1f} degC, PUE {s['pue']:.3f}"
    )
    fans_w = 0.714 * 600 / 0.45
    assert fans_w <= pump_w <= fans_w + 50.0  # the FWS pump adds little
    assert 0.05 <= fans_w / (it_w + fans_w) <= 0.15
    assert 25.0 < s["max_gpu_temperature_c"] < 87.0
    assert 25.0 < s["max_hbm_temperature_c"] < 95.0
    assert s["energy_balance_relative_error"] < 1e-9
