"""Grid carbon-intensity loader on the shared EIA-930-derived files, and the typical profiles."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from twin.io.carbon import load_carbon_profile_table, load_grid_carbon_csv, typical_carbon_profile
from twin.units import SpecError

FILES = {"miso": "dcrl_MISO_NG_and_avgCI.csv", "soco": "dcrl_SOCO_NG_and_avgCI.csv"}


@pytest.fixture(scope="module")
def grid_dir(shared_data) -> Path:
    return shared_data / "grid"


@pytest.mark.parametrize("name", ["miso", "soco"])
def test_loader_on_shared_files(grid_dir, name, caplog):
    path = grid_dir / FILES[name]
    with caplog.at_level(logging.WARNING, logger="twin.io.carbon"):
        da = load_grid_carbon_csv(path)
    assert da.dims == ("time",) and da.size == 8760
    assert da.attrs["units"] == "gCO2/kWh" and da.attrs["timezone"] == "UTC"
    assert str(da.indexes["time"][0]) == "2022-01-01 00:00:00"
    assert (np.diff(da.indexes["time"].values) == np.timedelta64(1, "h")).all()
    assert np.isfinite(da.values).all()
    expected_filled = {"miso": 3, "soco": 0}[name]
    assert da.attrs["filled_hours"] == expected_filled
    assert ("filled by time interpolation" in caplog.text) == bool(expected_filled)

    # Independent pandas computation: the mean of the non-empty cells, and each filled hour lies
    # between its neighbours.
    raw = pd.read_csv(path)
    assert len(raw) == 8760
    assert int(raw["avg_CI"].isna().sum()) == expected_filled
    assert abs(float(da.mean()) - raw["avg_CI"].mean()) < 0.05
    ok = raw["avg_CI"].notna().to_numpy()
    assert_allclose(da.values[ok], raw["avg_CI"].to_numpy()[ok])
    for i in np.nonzero(~ok)[0]:
        lo, hi = sorted([da.values[i - 1], da.values[i + 1]])
        assert lo - 1e-9 <= da.values[i] <= hi + 1e-9


def test_known_annual_means(grid_dir):
    # 2022 annual means of the lifecycle-weighted series (computed with pandas above): MISO is
    # the more carbon-intensive grid (coal), SOCO the lower (nuclear + gas).
    miso = float(load_grid_carbon_csv(grid_dir / FILES["miso"]).mean())
    soco = float(load_grid_carbon_csv(grid_dir / FILES["soco"]).mean())
    assert_allclose([miso, soco], [440.57, 423.20], atol=0.05)


@pytest.mark.parametrize("name", ["miso", "soco"])
def test_typical_profile_annual_mean_within_5_percent(grid_dir, name):
    loaded = load_grid_carbon_csv(grid_dir / FILES[name])
    profile = typical_carbon_profile(name)
    assert profile.size == 8760 and profile.attrs["units"] == "gCO2/kWh"
    assert (profile.indexes["time"] == loaded.indexes["time"]).all()
    assert abs(float(profile.mean()) / float(loaded.mean()) - 1.0) < 0.05
    # Month-by-hour structure is kept: each month's diurnal shape correlates with the data's.
    data = loaded.to_series()
    table, meta = load_carbon_profile_table(name)
    assert meta["hour_timezone"] == "UTC"
    measured = data.groupby([data.index.month, data.index.hour]).mean().unstack().to_numpy()
    assert_allclose(table, measured, atol=0.051)
    assert typical_carbon_profile(name, year=2024).size == 8784


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ci.csv"
    path.write_text(text)
    return path


GOOD = (
    "timestamp,NG,avg_CI\n"
    "2022-01-01 02:00:00+00:00,1,300\n"
    "2022-01-01 00:00:00+00:00,1,100\n"
    "2022-01-01 01:00:00+00:00,1,\n"
    "2022-01-01 01:00:00+00:00,1,\n"
    "2022-01-01 05:00:00+00:00,1,600\n"
)


def test_sorting_duplicates_gaps(tmp_path):
    da = load_grid_carbon_csv(_csv(tmp_path, GOOD))
    assert [str(t) for t in da.indexes["time"]][:2] == [
        "2022-01-01 00:00:00",
        "2022-01-01 01:00:00",
    ]
    assert da.size == 6  # 00..05, hours 03 and 04 absent from the file
    assert_allclose(da.values, [100, 200, 300, 400, 500, 600])
    assert da.attrs["duplicates_dropped"] == 1
    assert da.attrs["filled_hours"] == 3


def test_other_offsets_are_converted_to_utc(tmp_path):
    text = "timestamp,avg_CI\n2022-01-01T00:00:00-05:00,10\n2022-01-01T01:00:00-05:00,20\n"
    da = load_grid_carbon_csv(_csv(tmp_path, text))
    assert str(da.indexes["time"][0]) == "2022-01-01 05:00:00"


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_grid_carbon_csv("/nonexistent/nope.csv")


def test_missing_column(tmp_path):
    path = _csv(tmp_path, GOOD)
    with pytest.raises(SpecError, match=r"ci\.csv:carbon: got \['timestamp', 'NG', 'avg_CI'\]"):
        load_grid_carbon_csv(path, column="carbon")


def test_unparsable_timestamp(tmp_path):
    text = GOOD.replace("2022-01-01 05:00:00+00:00", "yesterday noon")
    with pytest.raises(SpecError, match=r"ci\.csv:6:timestamp: got 'yesterday noon'"):
        load_grid_carbon_csv(_csv(tmp_path, text))


def test_non_numeric_value(tmp_path):
    text = GOOD.replace(",300\n", ",high\n")
    with pytest.raises(SpecError, match=r"ci\.csv:2:avg_CI: got 'high'; expected a number"):
        load_grid_carbon_csv(_csv(tmp_path, text))


def test_negative_value(tmp_path):
    text = GOOD.replace(",300\n", ",-3\n")
    with pytest.raises(SpecError, match=r"ci\.csv:2:avg_CI.*non-negative"):
        load_grid_carbon_csv(_csv(tmp_path, text))


def test_unknown_profile_and_malformed_table(tmp_path):
    with pytest.raises(SpecError, match=r"grid: got 'ercot'; expected one of \['miso', 'soco'\]"):
        typical_carbon_profile("ercot")
    bad = tmp_path / "bad.toml"
    bad.write_text('[month_hour]\nunits = "gCO2/kWh"\nvalues = [[1.0, 2.0]]\n')
    with pytest.raises(SpecError, match=r"bad\.toml:month_hour\.values"):
        typical_carbon_profile(bad)
