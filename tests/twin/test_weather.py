"""EPW reader on the real shared files, its error handling, and the cited typical-year generator.

Expected numbers come from the project's physics references (section 4a and case 8.9: hour counts
and monthly means of the TMY3 files) and from the ASHRAE 2009 design conditions of the stations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from twin.io.weather import (
    free_cooling_hours,
    free_cooling_hours_epw,
    load_climate,
    load_epw,
    typical_year,
)
from twin.units import SpecError

MKE = "USA_WI_Milwaukee-Mitchell.Intl.AP.726400_TMY3.epw"
ATL = "USA_GA_Atlanta-Hartsfield-Jackson.Intl.AP.722190_TMY3.epw"
FULTON = "USA_GA_Fulton.County.AP.722195_TMY3.epw"
ATL_TMYX = "dcrl_USA_GA_Atlanta-Hartsfield-Jackson.epw"
VARIABLES = {
    "temp_air": "degC",
    "temp_dew": "degC",
    "relative_humidity": "%",
    "pressure": "Pa",
    "temp_wet_bulb": "degC",
    "source_year": "1",
}
# Refs case 8.9 / section 4a: hours with T_db <= setpoint - 8 K in the TMY3 files.
FREE_COOLING_TMY3 = {
    "milwaukee": (MKE, {27: 7004, 32: 8152, 40: 8732}),
    "atlanta": (ATL, {27: 4839, 32: 6829, 40: 8557}),
}
# Refs section 4a: monthly mean dry-bulb of the TMY3 files [degC].
MONTHLY_TMY3 = {
    MKE: [-7.5, -5.7, 1.6, 7.4, 12.9, 18.5, 21.7, 21.2, 17.3, 10.0, 3.2, -4.3],
    ATL: [4.0, 7.9, 13.8, 17.2, 20.8, 24.8, 26.1, 26.5, 22.5, 16.0, 11.9, 7.7],
}


@pytest.fixture(scope="module")
def weather_dir(shared_data) -> Path:
    return shared_data / "weather"


@pytest.fixture(scope="module")
def epws(weather_dir):
    return {name: load_epw(weather_dir / name) for name in (MKE, ATL, FULTON, ATL_TMYX)}


# ----------------------------------------------------------------------------- EPW reader


@pytest.mark.parametrize("name", [MKE, ATL, FULTON, ATL_TMYX])
def test_load_epw_layout(epws, name):
    ds = epws[name]
    assert ds.sizes == {"time": 8760}
    assert set(ds.data_vars) == set(VARIABLES)
    for var, units in VARIABLES.items():
        assert ds[var].attrs["units"] == units
    t = ds.indexes["time"]
    assert str(t[0]) == "2023-01-01 00:00:00" and str(t[-1]) == "2023-12-31 23:00:00"
    assert (np.diff(t.values) == np.timedelta64(1, "h")).all()
    for key in ("location", "state", "country", "wmo", "latitude", "longitude", "timezone"):
        assert key in ds.attrs
    assert ds.attrs["data_source"] == "epw" and ds.attrs["source"].endswith(name)
    assert ds.attrs["elevation"] > 100
    for var in ("temp_air", "temp_dew", "relative_humidity", "pressure", "temp_wet_bulb"):
        assert np.isfinite(ds[var].values).all()
    # Wet-bulb (computed from T_db and RH) lies below the dry-bulb and, except in EPW hours whose
    # RH and dew point disagree (integer RH; a few records by up to 2.4 K), above the dew point.
    assert (ds.temp_wet_bulb <= ds.temp_air + 1e-6).all()
    assert ((ds.temp_wet_bulb - ds.temp_dew).values >= -0.6).mean() > 0.99


def test_load_epw_metadata_and_first_record(epws):
    mke = epws[MKE]
    assert mke.attrs["wmo"] == "726400" and mke.attrs["state"] == "WI"
    assert_allclose([mke.attrs["latitude"], mke.attrs["longitude"]], [42.95, -87.90])
    assert mke.attrs["timezone"] == -6.0 and mke.attrs["elevation"] == 205.0
    # First record of the file: 1988-01-01 hour 1: -15.6 C, dew -18.9 C, 76 %, 99800 Pa.
    first = mke.isel(time=0)
    assert_allclose(
        [first.temp_air, first.temp_dew, first.relative_humidity, first.pressure],
        [-15.6, -18.9, 76.0, 99800.0],
    )
    assert int(first.source_year) == 1988


def test_tmyx_years_differ_by_month(epws):
    # The TMYx header: Jan=2015; Feb=2016; Mar=2011; Apr=2016; May=2014; Jun=2018; Jul=2017;
    # Aug=2015; Sep=2017; Oct=2017; Nov=2012; Dec=2014.
    ds = epws[ATL_TMYX]
    by_month = ds.source_year.groupby("time.month").max().values
    assert by_month.tolist() == [
        2015,
        2016,
        2011,
        2016,
        2014,
        2018,
        2017,
        2015,
        2017,
        2017,
        2012,
        2014,
    ]
    assert (ds.source_year.groupby("time.month").min().values == by_month).all()
    assert ds.indexes["time"].year.unique().tolist() == [2023]


@pytest.mark.parametrize("city", ["milwaukee", "atlanta"])
def test_epw_free_cooling_hours_reproduce_refs_exactly(weather_dir, epws, city):
    name, expected = FREE_COOLING_TMY3[city]
    for setpoint, hours in expected.items():
        assert free_cooling_hours(epws[name], setpoint, 8.0) == hours
    assert free_cooling_hours_epw(weather_dir / name, 32, 8.0) == expected[32]


def test_epw_free_cooling_other_approaches(epws):
    # Refs section 4a: W32 with 5 and 10 K approach; Fulton County W32/8 K: 7,282 h.
    assert free_cooling_hours(epws[MKE], 32, 5.0) == 8510
    assert free_cooling_hours(epws[ATL], 32, 10.0) == 5910
    assert free_cooling_hours(epws[FULTON], 32, 8.0) == 7282


@pytest.mark.parametrize("name", [MKE, ATL])
def test_epw_monthly_and_annual_means_match_refs(epws, name):
    monthly = epws[name].temp_air.groupby("time.month").mean().values
    assert_allclose(monthly, MONTHLY_TMY3[name], atol=0.051)  # refs round to 0.1 K
    annual = {MKE: 8.1, ATL: 16.7}[name]
    assert abs(float(epws[name].temp_air.mean()) - annual) < 0.051


def test_epw_design_percentiles_match_refs(epws):
    # Refs 4a: 0.4 % design dry-bulb 31.7 (MKE) / 33.9 (ATL); 0.4 % wet-bulb 25.3 / 24.4.
    # Percentiles of EPW data are ties of 0.1-K-rounded values: half a step of tolerance.
    for name, db, wb in [(MKE, 31.7, 25.3), (ATL, 33.9, 24.4)]:
        ds = epws[name]
        hot = np.sort(ds.temp_air.values)[-35]  # the 35th warmest hour = 0.4 % of 8760
        assert abs(hot - db) < 0.35
        assert abs(float(ds.temp_wet_bulb.quantile(0.996)) - wb) < 0.3


# ----------------------------------------------------------------------------- EPW quirks


def _epw_lines(weather_dir: Path, name: str) -> list[str]:
    return (weather_dir / name).read_text(encoding="latin-1").splitlines()


def _write(tmp_path: Path, lines: list[str], newline: str = "\n", tail: str = "") -> Path:
    path = tmp_path / "test.epw"
    path.write_bytes((newline.join(lines) + newline + tail).encode("latin-1"))
    return path


def test_crlf_lf_and_trailing_blank_lines(tmp_path, weather_dir, epws):
    lines = _epw_lines(weather_dir, ATL)  # this one is LF; the Milwaukee file is CRLF
    path = _write(tmp_path, lines, newline="\r\n", tail="\r\n\r\n  \r\n")
    ds = load_epw(path)
    assert_allclose(ds.temp_air.values, epws[ATL].temp_air.values)


def _set_field(line: str, index: int, value: str) -> str:
    parts = line.split(",")
    parts[index] = value
    return ",".join(parts)


def test_missing_value_sentinels_are_filled(tmp_path, weather_dir, epws, caplog):
    lines = _epw_lines(weather_dir, MKE)
    row = 8 + 100
    lines[row] = _set_field(lines[row], 6, "99.9")
    lines[row + 1] = _set_field(lines[row + 1], 6, "99.9")
    lines[row] = _set_field(lines[row], 9, "999999")
    lines[row] = _set_field(lines[row], 8, "999")
    ds = load_epw(_write(tmp_path, lines))
    ref = epws[MKE].temp_air.values
    assert ds.attrs["filled_hours_temp_air"] == 2
    assert ds.attrs["filled_hours_pressure"] == 1
    assert ds.attrs["filled_hours_relative_humidity"] == 1
    assert ds.attrs["filled_hours_temp_dew"] == 0
    expected = ref[99] + (ref[102] - ref[99]) * np.array([1, 2]) / 3
    assert_allclose(ds.temp_air.values[100:102], expected)
    assert "missing temp_air" in caplog.text


def test_leap_day_rows_are_dropped(tmp_path, weather_dir, epws):
    lines = _epw_lines(weather_dir, ATL_TMYX)
    feb28 = [i for i, line in enumerate(lines[8:], 8) if ",2,28," in line[:12]]
    leap = [_set_field(lines[i], 2, "29") for i in feb28]
    insert_at = feb28[-1] + 1
    lines = lines[:insert_at] + leap + lines[insert_at:]
    assert len(lines) == 8 + 8784
    ds = load_epw(_write(tmp_path, lines))
    assert ds.attrs["leap_day_hours_dropped"] == 24
    assert_allclose(ds.temp_air.values, epws[ATL_TMYX].temp_air.values)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no_such.epw"):
        load_epw("/nonexistent/no_such.epw")


def test_wrong_header(tmp_path, weather_dir):
    lines = _epw_lines(weather_dir, ATL)
    with pytest.raises(SpecError, match=r"test\.epw:1.*PLACE,Atlanta.*LOCATION"):
        load_epw(_write(tmp_path, ["PLACE,Atlanta"] + lines[1:]))
    with pytest.raises(SpecError, match=r"test\.epw:4.*GROUND TEMPERATURES"):
        load_epw(_write(tmp_path, lines[:3] + lines[4:]))


def test_missing_columns(tmp_path, weather_dir):
    lines = _epw_lines(weather_dir, ATL)
    lines[20] = ",".join(lines[20].split(",")[:8])
    with pytest.raises(SpecError, match=r"test\.epw:21.*at least 10 comma-separated fields"):
        load_epw(_write(tmp_path, lines))


def test_non_numeric_dry_bulb(tmp_path, weather_dir):
    lines = _epw_lines(weather_dir, ATL)
    lines[30] = _set_field(lines[30], 6, "warm")
    with pytest.raises(SpecError, match=r"test\.epw:31:temp_air: got 'warm'; expected a number"):
        load_epw(_write(tmp_path, lines))


def test_wrong_number_of_rows(tmp_path, weather_dir):
    lines = _epw_lines(weather_dir, ATL)
    with pytest.raises(SpecError, match=r"8759 data rows.*8760 hourly rows"):
        load_epw(_write(tmp_path, lines[:-1]))


def test_out_of_order_rows(tmp_path, weather_dir):
    lines = _epw_lines(weather_dir, ATL)
    lines[10], lines[11] = lines[11], lines[10]
    with pytest.raises(
        SpecError, match=r"test\.epw:11:month/day/hour: got '1/1/4'; expected 1/1/3"
    ):
        load_epw(_write(tmp_path, lines))


# ----------------------------------------------------------------------------- climate + typical


@pytest.fixture(scope="module")
def typical():
    return {city: typical_year(city, seed=0) for city in ("milwaukee", "atlanta")}


def test_load_climate_values():
    mke = load_climate("milwaukee")
    assert mke.station["wmo"] == 726400 and mke.station["icao"] == "KMKE"
    assert_allclose(mke.station["elevation"], 205.0)
    # NOAA 1991-2020: January mean 24.0 F = -4.44 C, July mean daily max 81.9 F = 27.72 C.
    assert_allclose(mke.temp_mean["normals_1991_2020"][0], -4.444, atol=1e-3)
    assert_allclose(mke.temp_max[6], 27.722, atol=1e-3)
    assert_allclose(mke.temp_mean["tmy3"], MONTHLY_TMY3[MKE])
    atl = load_climate("atlanta")
    assert (atl.cooling_db_0p4, atl.cooling_mcwb_0p4, atl.heating_db_99p6) == (34.4, 23.5, -6.3)
    assert (atl.daily_range > 4).all()


def test_load_climate_errors(tmp_path):
    with pytest.raises(SpecError, match=r"climate: got 'paris'; expected one of \['atlanta'"):
        load_climate("paris")
    with pytest.raises(FileNotFoundError):
        load_climate(tmp_path / "none.toml")
    src = load_climate("atlanta").source
    text = Path(src).read_text().replace("7.7]", "]", 1)  # tmy3: 11 values
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(SpecError, match=r"bad\.toml:tmy3\.temp_mean.*12 monthly numbers"):
        load_climate(bad)


@pytest.mark.parametrize("city", ["milwaukee", "atlanta"])
@pytest.mark.parametrize("period", ["tmy3", "normals_1991_2020"])
def test_typical_year_monthly_means(city, period):
    climate = load_climate(city)
    ds = typical_year(climate, period=period) if period != "tmy3" else typical_year(climate)
    monthly = ds.temp_air.groupby("time.month").mean().values
    assert np.abs(monthly - climate.temp_mean[period]).max() < 0.5
    # The annual mean follows (day-weighted).
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    annual = np.sum(climate.temp_mean[period] * days) / 365
    assert abs(float(ds.temp_air.mean()) - annual) < 0.1


def test_typical_year_layout_matches_epw(typical, epws):
    for ds in typical.values():
        assert set(ds.data_vars) == set(epws[MKE].data_vars)
        for var in ds.data_vars:
            assert ds[var].attrs["units"] == epws[MKE][var].attrs["units"]
        assert (ds.indexes["time"] == epws[MKE].indexes["time"]).all()
        assert set(epws[MKE].attrs) >= {k for k in ds.attrs if k in epws[MKE].attrs}
        for key in ("location", "state", "country", "wmo", "latitude", "longitude", "timezone"):
            assert key in ds.attrs
        assert ds.attrs["data_source"] == "typical_year"


@pytest.mark.parametrize("city", ["milwaukee", "atlanta"])
def test_typical_year_free_cooling_within_5_percent_of_tmy3(typical, epws, city):
    name, expected = FREE_COOLING_TMY3[city]
    for setpoint in (27, 32, 40):
        synthetic = free_cooling_hours(typical[city], setpoint, 8.0)
        measured = free_cooling_hours(epws[name], setpoint, 8.0)
        assert measured == expected[setpoint]
        assert abs(synthetic - measured) <= 0.05 * measured, (setpoint, synthetic, measured)


@pytest.mark.parametrize("city", ["milwaukee", "atlanta"])
def test_typical_year_design_values(typical, city):
    climate = load_climate(city)
    ds = typical[city]
    t = ds.temp_air.values
    # Fitted: the 0.4 % / 99.6 % hours equal the ASHRAE 2009 design dry-bulbs.
    assert abs(np.quantile(t, 0.996) - climate.cooling_db_0p4) < 0.05
    assert abs(np.quantile(t, 0.004) - climate.heating_db_99p6) < 0.05
    assert abs(float(ds.temp_wet_bulb.quantile(0.996)) - climate.evaporation_wb_0p4) < 0.3
    # Not fitted: the mean coincident wet-bulb of the hours near the 0.4 % dry-bulb.
    near = np.abs(t - climate.cooling_db_0p4) < 1.0
    assert abs(float(ds.temp_wet_bulb.values[near].mean()) - climate.cooling_mcwb_0p4) < 2.0
    # Extremes plausibly beyond the design values, not absurd.
    assert climate.cooling_db_0p4 < t.max() < climate.cooling_db_0p4 + 6
    assert climate.heating_db_99p6 - 8 < t.min() < climate.heating_db_99p6


@pytest.mark.parametrize("city", ["milwaukee", "atlanta"])
def test_typical_year_physical_consistency(typical, city):
    ds = typical[city]
    assert (ds.temp_dew <= ds.temp_air + 1e-9).all()
    assert (ds.temp_wet_bulb <= ds.temp_air + 1e-6).all()
    assert (ds.temp_wet_bulb >= ds.temp_dew - 1e-6).all()
    rh = ds.relative_humidity.values
    assert rh.min() > 5 and rh.max() <= 100 + 1e-9
    assert 55 < rh.mean() < 85  # cited annual morning/afternoon RH: 80/63 % MKE, 82/56 % ATL
    # Smooth: no hour-to-hour jump beyond what the diurnal cycle gives (month changes included).
    assert np.abs(np.diff(ds.temp_air.values)).max() < 4.0
    # Diurnal phase: coldest hour near sunrise, warmest mid-afternoon (hour-beginning labels).
    by_hour = ds.temp_air.groupby("time.hour").mean().values
    assert int(np.argmin(by_hour)) in (3, 4, 5) and int(np.argmax(by_hour)) in (13, 14, 15)


def test_typical_year_is_seeded():
    a = typical_year("atlanta", seed=3)
    b = typical_year("atlanta", seed=3)
    c = typical_year("atlanta", seed=4)
    assert_allclose(a.temp_air.values, b.temp_air.values)
    assert np.abs(a.temp_air.values - c.temp_air.values).max() > 1.0
    # Different seeds keep the cited monthly means.
    assert_allclose(
        c.temp_air.groupby("time.month").mean().values,
        load_climate("atlanta").temp_mean["tmy3"],
        atol=0.5,
    )


def test_typical_year_bad_input():
    with pytest.raises(SpecError, match="typical_year.period"):
        typical_year("atlanta", period="2050")
    with pytest.raises(SpecError, match="typical_year.year"):
        typical_year("atlanta", year="2023")
