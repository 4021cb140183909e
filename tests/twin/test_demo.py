"""``twin demo`` tells the twin's story: monitored racks with a hidden spread and one degraded
cold plate feed the sensor daemons; the calibrated twin finds the plate and places around it.

One shortened demo on the mini superfactory (2 sites x 8 NVL72 racks); the checks read its
outputs against the hidden truth and against physics: a plate at 1.8x the median resistance
puts its GPU over the placement limit (max operating - 5 K) at full power, so a twin that knows
it keeps full-power (training) work off that rack, and one that does not, cannot.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from twin.cli import main
from twin.model.calibrated import load_calibration, parse_location
from twin.spec import load_facility

FACILITY = "mini-superfactory"
HOURS = 12.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    args = [
        "demo", "--facility", FACILITY, "--out", str(out), "--hours", str(HOURS),
        "--sim-hours", "0.1", "--minutes", "3", "--policies", "pack", "twin",
        "--iterations", "10",
    ]  # fmt: skip
    assert main(args) == 0
    effect = xr.open_dataset(out / "results.nc", group="calibration_effect").load()
    return out, effect, json.loads(effect.attrs["summary_json"])


def test_outputs_carry_every_policy_and_both_twins(demo):
    import netCDF4

    out, _, _ = demo
    with netCDF4.Dataset(out / "results.nc") as nc:
        groups = set(nc.groups)
    assert {"simulate", "simulate_uncalibrated", "placement_pack", "placement_twin"} <= groups
    assert {"placement_twin_uncalibrated", "calibration_effect"} <= groups
    report = (out / "report.md").read_text()
    assert "twin (uncalibrated)" in report and "| pack |" in report
    assert (out / "calibration_effect.png").stat().st_size > 10_000


def test_calibration_is_of_the_facility_and_places_every_monitored_gpu(demo):
    out, effect, s = demo
    spec = load_facility(FACILITY)
    cal = load_calibration(out / "params.nc")
    assert cal.gpu_model == spec.sites[0].building.rack.gpu.name
    assert sorted(cal.location) == sorted(effect.gpu.values.tolist())  # one daemon per tray
    slots = [parse_location(label, spec) for label in cal.location]
    assert {s_.rack for s_ in slots} == {0, 1}
    identified = int(np.isfinite(cal.resistance).sum())
    assert s["calibration"]["calibrated"] == identified > 0.9 * len(cal.gpu)
    assert s["calibration"]["fleet_prior"] == spec.gpus - identified
    # the degraded plate's fitted die-to-inlet resistance is its hidden one
    i = cal.location.index(s["degraded_gpu"])
    truth = float(effect.resistance_truth.sel(gpu=s["degraded_gpu"]))
    assert cal.resistance[i] == pytest.approx(truth, rel=0.1)


def test_calibrated_twin_finds_the_hidden_hottest_gpu(demo):
    _, effect, s = demo
    r = effect.resistance_truth.values
    worst = effect.gpu.values[np.argmax(r)]
    assert worst == s["degraded_gpu"]
    assert r.max() == pytest.approx(1.8 * np.median(np.delete(r, np.argmax(r))), rel=1e-9)
    # the calibrated twin's hottest monitored GPU is the truth's, at its temperature
    assert effect.gpu.values[np.argmax(effect.die_calibrated.values)] == worst
    assert float(effect.die_calibrated.max()) == pytest.approx(float(effect.die_truth.max()), abs=2)
    # uncalibrated, every GPU is the spec's: no hottest GPU, all of them off by the spread
    assert np.ptp(effect.die_spec.values) < 1e-6
    assert s["hottest"]["spec"]["gpu"] == "all alike"
    err = {
        k: np.sqrt(np.mean((effect[f"die_{k}"] - effect.die_truth) ** 2))
        for k in ("calibrated", "spec")
    }
    assert err["calibrated"] < 0.7 * err["spec"]


def test_calibrated_twin_keeps_work_off_the_degraded_rack(demo):
    _, effect, s = demo
    spec = load_facility(FACILITY)
    limit = spec.sites[0].building.rack.gpu.max_operating_temperature - 273.15 - 5.0
    # physics: the degraded plate's GPU exceeds the placement limit (max operating - 5 K) at
    # full power, every other monitored GPU stays under it
    assert float(effect.die_truth.max()) > limit
    assert np.sort(effect.die_truth.values)[-2] < limit
    # the calibrated twin sees it and puts less work on its rack than the uncalibrated twin
    # does, and less than on the healthy monitored rack
    rack = s["degraded_rack"]
    cal, uncal = effect.rack_gpu_hours_calibrated.values, effect.rack_gpu_hours_spec.values
    assert cal[rack] < 0.9 * uncal[rack]
    assert cal[rack] < 0.9 * cal[1 - rack]
    assert s["gpu_hours"] == {"calibrated": cal[rack], "spec": uncal[rack]}


def test_rack_labels_name_the_rack_that_location_labels_parse_to():
    from twin.cli.demo_fleet import rack_label

    spec = load_facility("superfactory")
    racks = sum(s.racks for s in spec.sites)
    assert all(parse_location(f"{rack_label(spec, r)}/t0/0", spec).rack == r for r in range(racks))
