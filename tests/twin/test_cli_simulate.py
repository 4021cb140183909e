"""``twin simulate`` end to end: JSON keys, netCDF output, errors."""

from __future__ import annotations

import json

import pytest
import xarray as xr

from twin.cli import main

KEYS = (
    "gpus",
    "steps",
    "step_seconds",
    "wall_seconds",
    "gpu_steps_per_second",
    "it_energy_kwh",
    "pump_energy_kwh",
    "fan_energy_kwh",
    "chiller_energy_kwh",
    "chiller_heat_kwh",
    "chiller_condenser_heat_kwh",
    "drycooler_heat_kwh",
    "water_liters",
    "pue",
    "max_gpu_temperature_c",
    "energy_balance_relative_error",
)


class Result:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def twin(capsys):
    """Run ``twin ARGS`` in-process (the console script calls the same ``main``)."""

    def run(*args, check=True):
        code = main(list(args))
        out, err = capsys.readouterr()
        if check:
            assert code == 0, err
        return Result(code, out, err)

    return run


def test_simulate_json_and_netcdf(tmp_path, twin):
    out = tmp_path / "run.nc"
    r = twin(
        "simulate",
        "--facility",
        "single-rack",
        "--hours",
        "0.25",
        "--step",
        "5",
        "--json",
        "--out",
        str(out),
    )
    s = json.loads(r.stdout)  # stdout is exactly one JSON object
    for k in KEYS:
        assert k in s and k in s["sites"]["lab"], k
    assert s["gpus"] == 72 and s["steps"] == 180 and s["step_seconds"] == 5.0
    assert s["energy_balance_relative_error"] < 1e-9
    assert 1.0 < s["pue"] < 1.25
    # IT energy equals the mean IT power of the records times the duration.
    ds = xr.open_dataset(out)
    assert ds.it_power.attrs["units"] == "W"
    assert (
        abs(float(ds.it_power.mean()) * 0.25 / 1e3 - s["it_energy_kwh"])
        < 1e-6 * s["it_energy_kwh"] + 1e-9
    )
    assert "simulate:" in r.stderr  # progress goes to stderr


def test_simulate_bad_inputs_give_clear_errors(twin):
    r = twin("simulate", "--facility", "single-rack", "--hours", "-1", check=False)
    assert r.returncode == 2 and "--hours" in r.stderr and "Traceback" not in r.stderr
    r = twin("simulate", "--facility", "single-rack", "--load", "training=2", check=False)
    assert r.returncode == 2 and "--load training" in r.stderr
    r = twin("simulate", "--facility", "nope", check=False)
    assert r.returncode == 2 and "superfactory" in r.stderr


@pytest.mark.slow
def test_superfactory_summer_day_atlanta_chiller_cop_from_json(twin):
    """Issue 13: a July day of the full superfactory in Atlanta's embedded typical year; the
    trim chillers run and their COP, checked from the JSON alone as chiller_heat_kwh /
    chiller_energy_kwh, lies in [3, 10]; the condensers reject heat + compressor energy."""
    r = twin(
        "simulate",
        "--facility",
        "superfactory",
        "--hours",
        "24",
        "--step",
        "600",
        "--start",
        "2023-07-10T00:00Z",
        "--json",
    )
    atl = json.loads(r.stdout)["sites"]["atlanta"]
    cop = atl["chiller_heat_kwh"] / atl["chiller_energy_kwh"]
    print(
        f"Atlanta 2023-07-10: chiller heat {atl['chiller_heat_kwh']:,.0f} kWh, "
        f"energy {atl['chiller_energy_kwh']:,.0f} kWh, COP {cop:.2f}"
    )
    assert atl["chiller_heat_kwh"] > 0.0
    assert 3.0 <= cop <= 10.0
    assert atl["chiller_condenser_heat_kwh"] == pytest.approx(
        atl["chiller_heat_kwh"] + atl["chiller_energy_kwh"], rel=1e-9
    )
    assert atl["drycooler_heat_kwh"] > atl["chiller_heat_kwh"]
