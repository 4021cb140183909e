"""The calibrated twin decides: a calibration file sets the facility model's GPUs.

A synthetic fleet with hidden resistances (one tray degraded to 1.8x) is calibrated against the
mini superfactory's GPU model; its file then feeds ``prepare``/``twin simulate``/``twin
optimize``. The facility model's die rise per watt is checked against the hidden truth of the
generator, not against the mapping's own formula.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import physics.facility as F
from sensors.synthetic import simulate_fleet
from twin.calibration import calibrate
from twin.cli import main
from twin.model.calibrated import (
    calibration_counts,
    load_calibration,
    parse_location,
    read_gpu_map,
)
from twin.placement import build_topology
from twin.placement.snapshot import place_snapshot
from twin.simulation import prepare
from twin.spec import load_facility
from twin.units import SpecError

DEGRADED = np.array([4, 5, 6, 7])  # tray 1 of the first rack: a blocked manifold branch
N_GPUS = 16
JULY = "2023-07-10T00:00Z"


@pytest.fixture(scope="module")
def spec():
    return load_facility("mini-superfactory")


@pytest.fixture(scope="module")
def calibrated(spec, tmp_path_factory):
    """(params.nc path, hidden per-GPU resistance) of a 16-GPU synthetic fleet in rack 0."""
    ds, truth = simulate_fleet(
        N_GPUS, 1800, seed=3, spread=0.1, gpus_per_host=4, resistance=0.025,
        capacitance=250.0, tdp=1200.0, resistance_step=(DEGRADED, 0.0, 1.8),
    )  # fmt: skip
    site = spec.sites[0].key
    labels = [f"{site}/b0/f0/r0/k0/t{i // 4}/g{i % 4}" for i in range(N_GPUS)]
    ds = ds.assign_coords(
        location=("gpu", np.array(labels)),
        uuid=("gpu", np.array([f"GPU-test-{i:04d}" for i in range(N_GPUS)])),
    )
    path = tmp_path_factory.mktemp("cal") / "params.nc"
    calibrate(ds, spec).write(path)
    r_true = truth.resistance * np.where(np.isin(np.arange(N_GPUS), DEGRADED), 1.8, 1.0)
    return path, r_true


def _rise_per_watt(run) -> np.ndarray:
    """Steady die rise over the plate inlet per watt of package power, (R, T, P, S)."""
    inlet = 308.15
    st = F.package_steady(run.params, run.derived, inlet, 1.0)
    return (np.asarray(st.die) - inlet) / np.asarray(st.power)


def test_file_carries_identity_units_and_provenance(calibrated):
    import xarray as xr

    path, _ = calibrated
    ds = xr.load_dataset(path)
    assert ds["resistance"].attrs["units"] == "K/W"
    assert ds["resistance_se"].attrs["units"] == "K/W"
    assert list(ds["uuid"].values[:2]) == ["GPU-test-0000", "GPU-test-0001"]
    assert ds["location"].values[5].endswith("/t1/g1")
    assert ds.attrs["gpu_model"] == "b200_gb200"
    assert ds.attrs["train_start"] < ds.attrs["train_end"]
    assert ds.attrs["telemetry_source"]


def test_facility_model_runs_on_the_calibrated_gpus(spec, calibrated):
    path, r_true = calibrated
    cal = load_calibration(path)
    run = prepare(spec, step=300.0, start=JULY, calibration=cal)
    rise = _rise_per_watt(run)
    # The 16 located GPUs: the facility model's die rise per watt is the hidden truth (the
    # generator's die -> inlet resistance), within the fit's few per cent.
    located = rise[0, :4, :, 0].ravel()
    np.testing.assert_allclose(located, r_true, rtol=0.06)
    # The degraded tray runs hotter by what its resistance says: (1.8 - 1) x R at ~1.2 kW.
    assert located[DEGRADED].mean() / np.delete(located, DEGRADED).mean() == pytest.approx(
        r_true[DEGRADED].mean() / np.delete(r_true, DEGRADED).mean(), rel=0.05
    )
    # Every other GPU of that model draws from the calibrated population: its median, not the
    # spec's nominal value, and a spread like the population's.
    others = rise.reshape(rise.shape[0], -1)[1:].ravel()
    assert np.median(others) == pytest.approx(np.median(r_true), rel=0.06)
    assert run.calibration["calibrated"] == N_GPUS
    assert run.calibration["fleet_prior"] == spec.gpus - N_GPUS
    assert run.calibration["spec_default"] == 0
    # Without the calibration every GPU is the spec's nominal one.
    nominal = _rise_per_watt(prepare(spec, step=300.0, start=JULY))
    assert np.ptp(nominal) < 1e-12


def test_twin_placement_keeps_jobs_off_the_degraded_tray(spec, calibrated):
    path, _ = calibrated
    n = 6
    gpus, workload = np.full(n, 72), np.array(["training"] * n)
    f_mean, f_high = np.full(n, 0.725), np.full(n, 1.0)
    assigned = {}
    for cal in (None, load_calibration(path)):
        run = prepare(spec, step=300.0, start=JULY, calibration=cal)
        rack_of, _ = place_snapshot(
            run.params, build_topology(run), gpus, workload, f_mean, f_high, run.hour0
        )
        assigned[cal is not None] = set(rack_of.tolist())
    assert 0 in assigned[False]  # on the spec's identical GPUs, rack 0 is as good as any
    assert 0 not in assigned[True]  # the calibrated twin sees the degraded tray and avoids it


def test_cli_simulate_reports_where_gpu_parameters_came_from(calibrated, capsys):
    path, _ = calibrated
    args = ["simulate", "--facility", "mini-superfactory", "--hours", "0.1", "--step", "60"]
    assert main([*args, "--calibration", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration"]["calibrated"] == N_GPUS
    assert out["calibration"]["file"] == str(path)


def test_location_labels_and_their_errors(spec, tmp_path, calibrated):
    site = spec.sites[1].key
    slot = parse_location(f"{site}/0/0/1/2/17/3", spec)
    b = spec.sites[1].building
    assert slot.site == 1
    assert slot.rack == spec.sites[0].racks + 1 * b.racks_per_row + 2
    assert (slot.tray, slot.path, slot.series) == (17, 3, 0)
    assert parse_location("elsewhere/0/0/0/0/0/0", spec) is None
    for label, expect in (
        (f"{site}/0/0/0/0/0", "7 parts"),
        (f"{site}/0/0/0/0/18/0", "TRAY below 18"),
        (f"{site}/0/0/x1y/0/0/0", "ROW as a 0-based index"),
        (f"{site}/0/0/0/0/0/4", "GPU below 4"),
    ):
        with pytest.raises(SpecError, match=expect) as err:
            parse_location(label, spec)
        assert err.value.path == "location" and label in str(err.value)
    path, _ = calibrated
    bad = tmp_path / "map.csv"
    bad.write_text("uuid,where\nGPU-test-0000,x\n")
    with pytest.raises(SpecError, match="gpu,location"):
        read_gpu_map(bad)
    # a map file moves a GPU; two GPUs in one slot is an error that names the slot
    good = tmp_path / "map2.csv"
    good.write_text(f"gpu,location\nGPU-test-0000,{site}/0/0/0/0/0/0\n")
    cal = load_calibration(path, good)
    assert cal.location[0] == f"{site}/0/0/0/0/0/0"
    assert calibration_counts(spec, cal)["calibrated"] == N_GPUS
    clash = tmp_path / "map3.csv"
    clash.write_text(f"gpu,location\nGPU-test-0000,{cal.location[1]}\n")
    with pytest.raises(SpecError, match="one GPU per slot"):
        calibration_counts(spec, load_calibration(path, clash))
    with pytest.raises(SpecError, match="--calibration"):
        load_calibration(tmp_path / "missing.nc")
    not_nc = tmp_path / "params.nc"
    not_nc.write_text("not a netCDF file")
    with pytest.raises(SpecError, match="netCDF"):
        load_calibration(not_nc)


def test_validate_refuses_what_it_cannot_score(calibrated, tmp_path):
    """A calibration of another GPU model, telemetry of none of its GPUs, an empty window."""
    from twin.validate import backtest

    path, _ = calibrated
    ds, _ = simulate_fleet(4, 120, seed=9, gpus_per_host=4, tdp=1200.0)
    with pytest.raises(SpecError, match="GPU model"):
        backtest(ds, "h100-node", path)
    with pytest.raises(SpecError, match="GPUs that the calibration file holds"):
        backtest(ds.assign_coords(gpu=[f"other:{i}" for i in range(4)]), "mini-superfactory", path)
    with pytest.raises(SpecError, match="a window with telemetry"):
        backtest(ds, "mini-superfactory", path, start="2031-01-01T00:00")
    with pytest.raises(SpecError, match="--calibration"):
        backtest(ds, "mini-superfactory", tmp_path / "none.nc")
