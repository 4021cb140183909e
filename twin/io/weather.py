"""Hourly weather: an EnergyPlus EPW reader and a typical-year generator from cited climate normals.

Both :func:`load_epw` and :func:`typical_year` return the same :class:`xarray.Dataset` layout:

- dim ``time``: 8,760 hourly timestamps of one nominal year in local standard time (no DST).
  Labels are **hour-beginning**: the EPW record for hour ``h`` (1-24, hour-ending, i.e. the
  interval ``(h-1, h]``) is labelled ``h-1``:00, so EPW hour 24 of Dec 31 is ``Dec 31 23:00``
  and never spills into the next year.
- variables ``temp_air`` [degC], ``temp_dew`` [degC], ``relative_humidity`` [%], ``pressure``
  [Pa], ``temp_wet_bulb`` [degC] (computed with :mod:`physics.psychrometrics`) and
  ``source_year`` (the calendar year each hour was taken from: TMY files mix years by month),
  each with ``attrs["units"]``.
- dataset attrs: ``location``, ``state``, ``country``, ``wmo``, ``latitude``, ``longitude``
  [deg], ``timezone`` [h from UTC], ``elevation`` [m], ``source`` (path), ``data_source``
  (``"epw"`` or ``"typical_year"``) and ``time_convention``.

The EPW format is specified in EnergyPlus, *Auxiliary Programs*, ch. 2.9 "EnergyPlus Weather File
(EPW) Data Dictionary" [1]_: 8 header records, then one record per hour with 35 fields; field 7
is dry-bulb [degC], 8 dew point [degC], 9 relative humidity [%], 10 station pressure [Pa];
missing values are 99.9 (temperatures), 999 (RH) and 999999 (pressure).

References
----------
.. [1] U.S. DOE, *EnergyPlus Auxiliary Programs*, "EnergyPlus Weather File (EPW) Data
   Dictionary" (missing-value codes and valid ranges of each field).
.. [2] ASHRAE, *ASHRAE Handbook - Fundamentals* (SI), 2009 (and 2013/2017), ch. 14 "Climatic
   Design Information", Table 6 "Fraction of Daily Temperature Range" (design-day profile).
"""

from __future__ import annotations

import calendar
import logging
import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
import xarray as xr

from physics import psychrometrics
from twin.resources import data_dir
from twin.spec import bundled_toml
from twin.units import ZERO_CELSIUS_K, SpecError, parse_quantity, ureg

# float64 is enabled by twin/__init__.py

log = logging.getLogger(__name__)

#: Directory of the cited climate tables (``<name>.toml``).
CLIMATE_DIR = data_dir("climate")

HOURS_PER_YEAR = 8760
EPW_HEADER_RECORDS = (
    "LOCATION",
    "DESIGN CONDITIONS",
    "TYPICAL/EXTREME PERIODS",
    "GROUND TEMPERATURES",
    "HOLIDAYS/DAYLIGHT SAVINGS",
    "COMMENTS 1",
    "COMMENTS 2",
    "DATA PERIODS",
)
TIME_CONVENTION = (
    "hour-beginning labels in local standard time: EPW hour h (interval h-1..h, hour-ending) "
    "is labelled h-1:00"
)

# (EPW field index 0-based, variable, units, long name, missing code, valid open range) after [1].
_EPW_FIELDS = (
    (6, "temp_air", "degC", "dry-bulb air temperature", 99.9, (-70.0, 70.0)),
    (7, "temp_dew", "degC", "dew-point temperature", 99.9, (-70.0, 70.0)),
    (8, "relative_humidity", "%", "relative humidity", 999.0, (0.0, 110.0)),
    (9, "pressure", "Pa", "station pressure", 999999.0, (31000.0, 120000.0)),
)
_N_FIELDS_NEEDED = 10

#: ASHRAE Fundamentals 2009 ch. 14 Table 6 [2]_: fraction of the daily range below the daily
#: maximum, for hours 1..24 local standard time (1.0 at 05:00, 0.0 at 14:00-15:00).
ASHRAE_DIURNAL_FRACTION = np.array(
    [0.88, 0.92, 0.95, 0.98, 1.00, 0.98, 0.91, 0.74, 0.55, 0.38, 0.23, 0.13,
     0.05, 0.00, 0.00, 0.06, 0.14, 0.24, 0.39, 0.50, 0.59, 0.68, 0.75, 0.82]
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# EPW reader
# --------------------------------------------------------------------------------------------


def _nominal_calendar(year: int) -> pd.DataFrame:
    """Month, day and EPW hour (1-24) of the 8,760 hours of a non-leap year, in order."""
    hours = pd.date_range("2023-01-01", periods=HOURS_PER_YEAR, freq="h")
    frame = pd.DataFrame({"month": hours.month, "day": hours.day, "hour": hours.hour + 1})
    return frame


def _time_index(
    year: int, month: np.ndarray, day: np.ndarray, hour: np.ndarray
) -> pd.DatetimeIndex:
    """Hour-beginning timestamps for EPW (month, day, hour-ending 1-24) in ``year``."""
    return pd.to_datetime(
        pd.DataFrame({"year": year, "month": month, "day": day, "hour": hour - 1})
    ).rename(None)


def _check_year(year: object, path: str) -> int:
    if isinstance(year, bool) or not isinstance(year, (int, np.integer)) or not 1 <= year <= 9999:
        raise SpecError(path, year, "an integer calendar year, e.g. 2023")
    return int(year)


def _float_field(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{where}:{name}", text, f"a number for {name}") from None
    if not np.isfinite(value):
        raise SpecError(f"{where}:{name}", text, f"a finite number for {name}")
    return value


def _parse_location(line: str, where: str) -> dict:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 10:
        raise SpecError(
            where,
            line,
            "LOCATION,city,state,country,source,WMO,latitude,longitude,timezone,elevation",
        )
    return {
        "location": parts[1],
        "state": parts[2],
        "country": parts[3],
        "epw_source": parts[4],
        "wmo": parts[5],
        "latitude": _float_field(parts[6], where, "latitude"),
        "longitude": _float_field(parts[7], where, "longitude"),
        "timezone": _float_field(parts[8], where, "timezone"),
        "elevation": _float_field(parts[9], where, "elevation"),
    }


def _fill_gaps(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Linear interpolation over NaNs (flat at the ends); returns values and the count filled."""
    bad = ~np.isfinite(values)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return values, 0
    idx = np.arange(values.size)
    out = values.copy()
    out[bad] = np.interp(idx[bad], idx[~bad], values[~bad])
    return out, n_bad


_wet_bulb_jit = jax.jit(psychrometrics.wet_bulb_temperature)
_relative_humidity_jit = jax.jit(psychrometrics.relative_humidity)  # one program per call


def _wet_bulb_celsius(temp_air_c, rh_percent, pressure_pa) -> np.ndarray:
    rh = np.clip(np.asarray(rh_percent, dtype=float) / 100.0, 0.005, 1.0)
    t_wb = _wet_bulb_jit(
        np.asarray(temp_air_c, dtype=float) + ZERO_CELSIUS_K, rh, np.asarray(pressure_pa, float)
    )
    return np.asarray(t_wb) - ZERO_CELSIUS_K


def _assemble(
    time: pd.DatetimeIndex,
    columns: dict[str, np.ndarray],
    source_year: np.ndarray,
    attrs: dict,
) -> xr.Dataset:
    """Dataset in the common layout of :func:`load_epw` and :func:`typical_year`."""
    meta = {name: (units, long) for _, name, units, long, _, _ in _EPW_FIELDS}
    data_vars = {
        name: ("time", np.asarray(columns[name], dtype=float), {"units": u, "long_name": ln})
        for name, (u, ln) in meta.items()
    }
    wet_bulb = _wet_bulb_celsius(
        columns["temp_air"], columns["relative_humidity"], columns["pressure"]
    )
    data_vars["temp_wet_bulb"] = (
        "time",
        wet_bulb,
        {"units": "degC", "long_name": "thermodynamic wet-bulb temperature (computed)"},
    )
    data_vars["source_year"] = (
        "time",
        np.asarray(source_year, dtype=np.int64),
        {"units": "1", "long_name": "calendar year the hour was taken from"},
    )
    ds = xr.Dataset(data_vars, coords={"time": time})
    ds["time"].attrs["long_name"] = "hour-beginning local standard time"
    ds.attrs.update(attrs)
    ds.attrs["time_convention"] = TIME_CONVENTION
    return ds


def _read_epw_lines(path: Path) -> list[str]:
    """The file's lines (UTF-8, else Latin-1; any line end), trailing blank lines removed."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _parse_epw_header(lines: list[str], path: Path) -> dict:
    """Check the 8 header records of [1]_; return the LOCATION record's station attrs."""
    for i, key in enumerate(EPW_HEADER_RECORDS):
        where = f"{path}:{i + 1}"
        got = lines[i] if i < len(lines) else "<end of file>"
        if not got.upper().startswith(key):
            raise SpecError(where, got[:60], f"EPW header record {i + 1} starting with {key!r}")
    attrs = _parse_location(lines[0], f"{path}:1")
    periods = [p.strip() for p in lines[7].split(",")]
    if len(periods) > 2 and periods[2] not in ("", "1"):
        raise SpecError(f"{path}:8:records_per_hour", periods[2], "1 record per hour")
    return attrs


def _parse_epw_records(body: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Year/month/day/hour (int, (n, 4)) and the :data:`_EPW_FIELDS` values ((n, 4)) per row."""
    n_header = len(EPW_HEADER_RECORDS)
    n_rows = len(body)
    ints = np.zeros((n_rows, 4), dtype=np.int64)  # year, month, day, hour
    values = np.zeros((n_rows, len(_EPW_FIELDS)))
    names = ("year", "month", "day", "hour")
    for r, line in enumerate(body):
        where = f"{path}:{n_header + r + 1}"
        parts = line.split(",")
        if len(parts) < _N_FIELDS_NEEDED:
            raise SpecError(
                where,
                line[:80],
                f"at least {_N_FIELDS_NEEDED} comma-separated fields (an EPW record has 35), "
                f"got {len(parts)}",
            )
        for j, name in enumerate(names):
            v = _float_field(parts[j], where, name)
            if v != int(v):
                raise SpecError(f"{where}:{name}", parts[j], f"an integer {name}")
            ints[r, j] = int(v)
        for k, (col, name, *_rest) in enumerate(_EPW_FIELDS):
            values[r, k] = _float_field(parts[col], where, name)
    return ints, values


def _check_epw_calendar(
    ints: np.ndarray, values: np.ndarray, path: Path, year: int
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Drop Feb 29 rows and check the rest are the 8,760 hours of Jan 1..Dec 31 in order.

    Returns the kept ``ints`` and ``values``, the number of leap-day rows dropped and the
    nominal (month, day, hour) calendar of ``year``.
    """
    n_header = len(EPW_HEADER_RECORDS)
    n_rows = ints.shape[0]
    month, day = ints[:, 1], ints[:, 2]
    leap = (month == 2) & (day == 29)
    n_leap = int(leap.sum())
    keep = ~leap
    line_no = np.arange(n_rows)[keep] + n_header + 1
    ints, values = ints[keep], values[keep]
    if ints.shape[0] != HOURS_PER_YEAR:
        raise SpecError(
            f"{path}",
            f"{n_rows} data rows ({ints.shape[0]} without Feb 29)",
            f"{HOURS_PER_YEAR} hourly rows after the {n_header} header lines "
            f"({HOURS_PER_YEAR + 24} in a leap year)",
        )
    expected = _nominal_calendar(year).to_numpy()
    mismatch = np.nonzero((ints[:, 1:] != expected).any(axis=1))[0]
    if mismatch.size:
        i = mismatch[0]
        raise SpecError(
            f"{path}:{line_no[i]}:month/day/hour",
            "/".join(str(v) for v in ints[i, 1:]),
            "/".join(str(v) for v in expected[i]) + " (hourly records of Jan 1 to Dec 31 in order)",
        )
    return ints, values, n_leap, expected


def _clean_epw_columns(values: np.ndarray, path: Path, attrs: dict) -> dict[str, np.ndarray]:
    """Per variable: missing codes and out-of-range values of [1]_ filled by interpolation.

    The count filled goes to ``attrs["filled_hours_<variable>"]`` (and a warning).
    """
    columns: dict[str, np.ndarray] = {}
    for k, (_, name, _units, _long, missing, (lo, hi)) in enumerate(_EPW_FIELDS):
        v = values[:, k].copy()
        invalid = (v == missing) | (v <= lo) | (v >= hi)
        if name == "relative_humidity":  # 0 % is valid; only the upper bound is open
            invalid = (v == missing) | (v < lo) | (v > hi)
        v[invalid] = np.nan
        if np.isnan(v).all():
            raise SpecError(f"{path}:{name}", "all values missing", f"valid {name} values")
        v, n_filled = _fill_gaps(v)
        if n_filled:
            log.warning("%s: %d missing %s values filled by interpolation", path, n_filled, name)
        attrs[f"filled_hours_{name}"] = n_filled
        columns[name] = v
    return columns


def load_epw(path: str | Path, year: int = 2023) -> xr.Dataset:
    """Read an EnergyPlus EPW weather file into an hourly :class:`xarray.Dataset`.

    Handles CRLF line ends, trailing blank lines, TMY files whose year changes from month to
    month (re-keyed onto the nominal ``year``; the original kept in ``source_year``), leap-year
    files with Feb 29 rows (dropped; ``attrs["leap_day_hours_dropped"]``), and missing or
    out-of-range values (99.9 / 999 / 999999 codes of [1]_), which are filled by linear
    interpolation in time and counted per variable in ``attrs["filled_hours_<variable>"]``.

    Parameters
    ----------
    path : str or pathlib.Path
        EPW file (one record per hour).
    year : int, optional
        Nominal calendar year for the time labels (default 2023).  In a leap year Feb 29 is
        absent from the index.

    Returns
    -------
    xarray.Dataset
        Dims ``time`` (8,760 hour-beginning labels, local standard time); variables
        ``temp_air`` [degC], ``temp_dew`` [degC], ``relative_humidity`` [%], ``pressure`` [Pa],
        ``temp_wet_bulb`` [degC], ``source_year`` [-]; station metadata in ``attrs``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    SpecError
        When the file is not a valid hourly EPW; the message names the file, line and field,
        the value read and what was expected.
    """
    path = Path(path)
    year = _check_year(year, "load_epw.year")
    if not path.is_file():
        raise FileNotFoundError(f"EPW weather file not found: {path}")
    lines = _read_epw_lines(path)
    attrs = _parse_epw_header(lines, path)
    n_header = len(EPW_HEADER_RECORDS)
    ints, values = _parse_epw_records(lines[n_header:], path)
    ints, values, n_leap, expected = _check_epw_calendar(ints, values, path, year)
    columns = _clean_epw_columns(values, path, attrs)
    time = _time_index(year, expected[:, 0], expected[:, 1], expected[:, 2])
    attrs.update(
        source=str(path),
        data_source="epw",
        nominal_year=year,
        leap_day_hours_dropped=n_leap,
        source_years=" ".join(str(y) for y in dict.fromkeys(ints[:, 0].tolist())),
    )
    return _assemble(time, columns, ints[:, 0], attrs)


def free_cooling_hours(weather: xr.Dataset, supply_temp: float, approach: float = 8.0) -> int:
    """Hours whose dry-bulb allows full free cooling: ``T_db <= supply_temp - approach``.

    Parameters
    ----------
    weather : xarray.Dataset
        Output of :func:`load_epw` or :func:`typical_year` (``temp_air`` in degC).
    supply_temp : float
        Facility-water supply setpoint [degC], e.g. 32 for ASHRAE W32.
    approach : float, optional
        Dry-cooler approach, leaving fluid minus ambient dry-bulb [K] (default 8).

    Returns
    -------
    int
        Number of hours (out of 8,760).
    """
    return int((weather["temp_air"].values <= supply_temp - approach).sum())


def free_cooling_hours_epw(path: str | Path, supply_temp: float, approach: float = 8.0) -> int:
    """:func:`free_cooling_hours` of the EPW file at ``path`` (see there for the parameters)."""
    return free_cooling_hours(load_epw(path), supply_temp, approach)


# --------------------------------------------------------------------------------------------
# Climate statistics and typical-year generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClimateStats:
    """Cited monthly climate statistics of one station (see ``data/climate/*.toml``).

    Temperatures in degC, relative humidity in %, arrays of 12 monthly values (Jan..Dec).

    Attributes
    ----------
    name : str
        Short name (``"milwaukee"``).
    station : dict
        Station metadata: ``name``, ``state``, ``country``, ``wmo``, ``icao``, ``latitude``,
        ``longitude`` [deg], ``elevation`` [m], ``timezone`` [h from UTC].
    temp_mean : dict[str, numpy.ndarray]
        Monthly mean dry-bulb [degC] per period: ``"tmy3"`` and ``"normals_1991_2020"``.
    temp_max, temp_min : numpy.ndarray
        NOAA 1991-2020 mean daily maximum and minimum [degC].
    rh_morning, rh_afternoon : float
        Mean relative humidity at 06 and 15 local standard time [%].
    cooling_db_0p4, cooling_mcwb_0p4, evaporation_wb_0p4, heating_db_99p6 : float
        ASHRAE 0.4 % cooling dry-bulb and its mean coincident wet-bulb, 0.4 % evaporation
        wet-bulb and 99.6 % heating dry-bulb [degC].
    synoptic_autocorrelation, dew_point_correlation : float
        Lag-one autocorrelation of daily anomalies and dew-point/dry-bulb anomaly correlation.
    source : str
        Path of the TOML file read.
    """

    name: str
    station: dict
    temp_mean: dict
    temp_max: np.ndarray
    temp_min: np.ndarray
    rh_morning: float
    rh_afternoon: float
    cooling_db_0p4: float
    cooling_mcwb_0p4: float
    evaporation_wb_0p4: float
    heating_db_99p6: float
    synoptic_autocorrelation: float = 0.7
    dew_point_correlation: float = 0.7
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def daily_range(self) -> np.ndarray:
        """Monthly mean daily temperature range, max minus min [K]."""
        return self.temp_max - self.temp_min


def _table(doc: dict, key: str, where: str) -> dict:
    t = doc.get(key)
    if not isinstance(t, dict):
        raise SpecError(f"{where}:{key}", t, f"a [{key}] table")
    return t


def _monthly_celsius(table: dict, key: str, where: str) -> np.ndarray:
    units = table.get("units")
    values = table.get(key)
    if (
        not isinstance(values, list)
        or len(values) != 12
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise SpecError(f"{where}.{key}", values, "a list of 12 monthly numbers (Jan..Dec)")
    if units not in ("degC", "degF", "K"):
        raise SpecError(f"{where}.units", units, "'degC', 'degF' or 'K'")
    q = ureg.Quantity(np.asarray(values, dtype=float), units)
    return np.asarray(q.to("degC").magnitude)


def _scalar(table: dict, key: str, where: str, to: str) -> float:
    units = table.get("units", "")
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where}.{key}", value, f"a number in {units or to}")
    if units == "percent":
        return float(value)
    return float(ureg.Quantity(float(value), units).to(to).magnitude)


def load_climate(name_or_path: str | Path) -> ClimateStats:
    """Read cited climate statistics from ``data/climate/<name>.toml`` or a TOML path.

    Parameters
    ----------
    name_or_path : str or pathlib.Path
        A bundled station name (``"milwaukee"``, ``"atlanta"``) or the path of a TOML file
        with the same tables.

    Returns
    -------
    ClimateStats

    Raises
    ------
    SpecError
        For an unknown name (the message lists the bundled ones) or a malformed table.
    """
    path = bundled_toml(name_or_path, CLIMATE_DIR, "climate", "climate")
    where = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(where, str(exc), "valid TOML") from exc

    st = _table(doc, "station", where)
    station = dict(st)
    for key in ("latitude", "longitude", "timezone"):
        station[key] = _scalar(st, key, f"{where}:station", "")
    station["elevation"] = parse_quantity(st.get("elevation"), f"{where}:station.elevation", "m")

    normals = _table(doc, "normals_1991_2020", where)
    tmy3 = _table(doc, "tmy3", where)
    hum = _table(doc, "humidity", where)
    design = _table(doc, "design", where)
    var = doc.get("variability", {})
    w_n, w_d = f"{where}:normals_1991_2020", f"{where}:design"
    return ClimateStats(
        name=str(doc.get("name", path.stem)),
        station=station,
        temp_mean={
            "tmy3": _monthly_celsius(tmy3, "temp_mean", f"{where}:tmy3"),
            "normals_1991_2020": _monthly_celsius(normals, "temp_mean", w_n),
        },
        temp_max=_monthly_celsius(normals, "temp_max", w_n),
        temp_min=_monthly_celsius(normals, "temp_min", w_n),
        rh_morning=_scalar(hum, "rh_morning", f"{where}:humidity", "percent"),
        rh_afternoon=_scalar(hum, "rh_afternoon", f"{where}:humidity", "percent"),
        cooling_db_0p4=_scalar(design, "cooling_db_0p4", w_d, "degC"),
        cooling_mcwb_0p4=_scalar(design, "cooling_mcwb_0p4", w_d, "degC"),
        evaporation_wb_0p4=_scalar(design, "evaporation_wb_0p4", w_d, "degC"),
        heating_db_99p6=_scalar(design, "heating_db_99p6", w_d, "degC"),
        synoptic_autocorrelation=float(var.get("synoptic_autocorrelation", 0.7)),
        dew_point_correlation=float(var.get("dew_point_correlation", 0.7)),
        source=where,
    )


def _month_of_day(n_days: int = 365) -> np.ndarray:
    days = pd.date_range("2023-01-01", periods=n_days, freq="D")
    return np.asarray(days.month - 1)


def _monthly_means(x: np.ndarray, month: np.ndarray) -> np.ndarray:
    return np.array([x[month == m].mean() for m in range(12)])


def _periodic_interp(monthly: np.ndarray, positions: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Periodic piecewise-linear interpolation of 12 values at ``centers`` onto ``positions``."""
    xp = np.concatenate([centers[-1:] - 365.0, centers, centers[:1] + 365.0])
    fp = np.concatenate([monthly[-1:], monthly, monthly[:1]])
    return np.interp(positions, xp, fp)


def _smooth_monthly(
    targets: np.ndarray, positions: np.ndarray, month: np.ndarray, iterations: int = 30
) -> np.ndarray:
    """Smooth curve at ``positions`` (days) whose means over each month equal ``targets``.

    Piecewise-linear through mid-month knots; the knot values are corrected iteratively until
    the monthly means match (mean-preserving interpolation).
    """
    starts = np.cumsum([0] + [calendar.monthrange(2023, m)[1] for m in range(1, 12)])
    lengths = np.array([calendar.monthrange(2023, m)[1] for m in range(1, 13)])
    centers = starts + lengths / 2.0
    knots = np.asarray(targets, dtype=float).copy()
    for _ in range(iterations):
        curve = _periodic_interp(knots, positions, centers)
        knots = knots + (targets - _monthly_means(curve, month))
    return _periodic_interp(knots, positions, centers)


def _remove_monthly_mean(x: np.ndarray, positions: np.ndarray, month: np.ndarray) -> np.ndarray:
    """Subtract a smooth curve so that ``x`` has zero mean in every month."""
    return x - _smooth_monthly(_monthly_means(x, month), positions, month)


def _ar1(n: int, phi: float, rng: np.random.Generator, spin_up: int = 60) -> np.ndarray:
    """Unit-variance AR(1) series of length ``n``."""
    e = rng.standard_normal(n + spin_up)
    x = np.empty_like(e)
    x[0] = e[0]
    scale = np.sqrt(1.0 - phi**2)
    for i in range(1, e.size):
        x[i] = phi * x[i - 1] + scale * e[i]
    return x[spin_up:]


def _dew_point_celsius(temp_c: np.ndarray, rh_percent: float) -> np.ndarray:
    td = psychrometrics.dew_point_temperature(temp_c + ZERO_CELSIUS_K, rh_percent / 100.0)
    return np.asarray(td) - ZERO_CELSIUS_K


_N_DAYS = 365
#: Quantiles of the ASHRAE 0.4 % (warm, wet-bulb) and 99.6 % (cold) design values.
_Q_HI, _Q_LO = 1.0 - 0.004, 0.004


class _YearGrid(NamedTuple):
    """Positions in a 365-day year and the diurnal profile repeated over it."""

    month_h: np.ndarray  # month (0-11) of each hour
    day_pos: np.ndarray  # day midpoints [d]
    hour_pos: np.ndarray  # hour midpoints [d]
    frac: np.ndarray  # ASHRAE fraction of daily range of each hour [-]
    f_mean: float  # its daily mean [-]


def _year_grid() -> _YearGrid:
    """The hourly and daily positions of :func:`typical_year`."""
    month_d = _month_of_day(_N_DAYS)
    return _YearGrid(
        month_h=np.repeat(month_d, 24),
        day_pos=np.arange(_N_DAYS) + 0.5,
        hour_pos=(np.arange(HOURS_PER_YEAR) + 0.5) / 24.0,
        frac=np.tile(ASHRAE_DIURNAL_FRACTION, _N_DAYS),
        f_mean=float(ASHRAE_DIURNAL_FRACTION.mean()),
    )


def _check_typical_year_args(
    climate: ClimateStats | str | Path, year: object, seed: object, period: str
) -> tuple[ClimateStats, int]:
    """The climate statistics (loaded when named) and the checked year; checks seed, period."""
    if not isinstance(climate, ClimateStats):
        climate = load_climate(climate)
    year = _check_year(year, "typical_year.year")
    if period not in climate.temp_mean:
        raise SpecError("typical_year.period", period, f"one of {sorted(climate.temp_mean)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SpecError("typical_year.seed", seed, "an integer seed")
    return climate, year


class _DryBulb(NamedTuple):
    """Hourly dry-bulb of :func:`typical_year` and the parts it is made of."""

    temp_air: np.ndarray  # [degC]
    base: np.ndarray  # climatology + diurnal cycle, without the synoptic anomaly [degC]
    summer: np.ndarray  # seasonal weight of the summer anomaly std, 0 mid-Jan, 1 mid-Jul [-]
    sig_w: float  # winter anomaly std [K]
    sig_s: float  # summer anomaly std [K]


def _synoptic_dry_bulb(
    climate: ClimateStats, period: str, grid: _YearGrid, noise_t: np.ndarray
) -> _DryBulb:
    """Dry-bulb = smooth climatology + ASHRAE diurnal cycle + fitted synoptic anomaly.

    ``T = T_mean + DR (f_mean - f(h)) + sigma_w b_w + sigma_s b_s``: ``b_w``, ``b_s`` are the
    daily AR(1) anomaly ``noise_t`` interpolated to hours and weighted by winter/summer, each
    made zero-mean by month; the two std [K] are fitted to the ASHRAE 99.6 % heating and 0.4 %
    cooling dry-bulb (steps 1-3 of :func:`typical_year`).
    """
    hour_pos, month_h = grid.hour_pos, grid.month_h
    t_clim = _smooth_monthly(climate.temp_mean[period], hour_pos, month_h)
    dr = _smooth_monthly(climate.daily_range, hour_pos, month_h)
    diurnal = dr * (grid.f_mean - grid.frac)
    summer = 0.5 * (1.0 - np.cos(2.0 * np.pi * (hour_pos - 15.0) / 365.0))  # 0 mid-Jan, 1 mid-Jul
    unit_h = np.interp(hour_pos, grid.day_pos, noise_t)
    # Anomaly basis for the winter and the summer standard deviation, each zero-mean by month.
    basis_w = _remove_monthly_mean(unit_h * (1.0 - summer), hour_pos, month_h)
    basis_s = _remove_monthly_mean(unit_h * summer, hour_pos, month_h)
    base = t_clim + diurnal

    def temps(sig_w: float, sig_s: float) -> np.ndarray:
        return base + sig_w * basis_w + sig_s * basis_s

    sig_w, sig_s = _fit_sigmas(temps, _Q_LO, _Q_HI, climate.heating_db_99p6, climate.cooling_db_0p4)
    return _DryBulb(temps(sig_w, sig_s), base, summer, sig_w, sig_s)


def _dew_point_climatology(climate: ClimateStats, period: str, grid: _YearGrid) -> np.ndarray:
    """Hourly dew-point climatology [degC] from the morning and afternoon humidities.

    The monthly daily minimum (``T_mean - (1 - f_mean) DR``) at ``rh_morning`` and maximum
    (``T_mean + f_mean DR``) at ``rh_afternoon`` give a morning and an afternoon dew point,
    joined by the ASHRAE diurnal profile: ``Td = Td_pm - (Td_pm - Td_am) f(h)``.
    """
    t_mean_m, dr_m, f_mean = climate.temp_mean[period], climate.daily_range, grid.f_mean
    t_max_m = t_mean_m + f_mean * dr_m
    t_min_m = t_mean_m - (1.0 - f_mean) * dr_m
    td_morning_m = _dew_point_celsius(t_min_m, climate.rh_morning)
    td_afternoon_m = _dew_point_celsius(t_max_m, climate.rh_afternoon)
    td_morning = _smooth_monthly(td_morning_m, grid.hour_pos, grid.month_h)
    td_afternoon = _smooth_monthly(td_afternoon_m, grid.hour_pos, grid.month_h)
    return td_afternoon - (td_afternoon - td_morning) * grid.frac


def _fitted_dew_point(
    climate: ClimateStats,
    period: str,
    grid: _YearGrid,
    dry: _DryBulb,
    noise_d: np.ndarray,
    pressure: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Dew point [degC], relative humidity [%] and the fitted dew-point anomaly scale [-].

    Anomaly ``rho (T - base) + sqrt(1 - rho^2) sigma(h) n_d`` (``n_d``: the second AR(1)
    series), scaled so that the year's 0.4 % wet-bulb equals the ASHRAE evaporation value;
    the dew point is clipped to the dry-bulb.
    """
    temp_air = dry.temp_air
    td_clim = _dew_point_climatology(climate, period, grid)
    rho = climate.dew_point_correlation
    unit_d = np.interp(grid.hour_pos, grid.day_pos, noise_d)
    sigma_h = dry.sig_w * (1.0 - dry.summer) + dry.sig_s * dry.summer
    anomaly_d = rho * (temp_air - dry.base) + np.sqrt(1.0 - rho**2) * sigma_h * unit_d

    def humid(scale: float) -> tuple[np.ndarray, np.ndarray]:
        temp_dew = np.minimum(td_clim + scale * anomaly_d, temp_air)
        rh = 100.0 * np.asarray(
            _relative_humidity_jit(temp_air + ZERO_CELSIUS_K, temp_dew + ZERO_CELSIUS_K)
        )
        return temp_dew, rh

    def wet_bulb_q(scale: float) -> float:
        _, rh = humid(scale)
        return float(np.quantile(_wet_bulb_celsius(temp_air, rh, pressure), _Q_HI))

    # Scale of the dew-point anomaly so that the 0.4 % wet-bulb equals the ASHRAE value.
    dew_scale = _fit_monotone(
        lambda k: wet_bulb_q(k) - climate.evaporation_wb_0p4, 0.0, 1.5, default=1.0
    )
    temp_dew, rh = humid(dew_scale)
    return temp_dew, rh, dew_scale


def _typical_year_attrs(
    climate: ClimateStats, period: str, seed: int, year: int, dry: _DryBulb, dew_scale: float
) -> dict:
    """Dataset attrs of :func:`typical_year`: station metadata and the fitted parameters."""
    st = climate.station
    return {
        "location": st.get("name", climate.name),
        "state": st.get("state", ""),
        "country": st.get("country", ""),
        "wmo": str(st.get("wmo", "")),
        "latitude": st["latitude"],
        "longitude": st["longitude"],
        "timezone": st["timezone"],
        "elevation": st["elevation"],
        "source": climate.source,
        "data_source": "typical_year",
        "climate_period": period,
        "seed": seed,
        "nominal_year": year,
        "synoptic_std_winter": dry.sig_w,
        "synoptic_std_summer": dry.sig_s,
        "dew_point_anomaly_scale": dew_scale,
    }


def typical_year(
    climate: ClimateStats | str | Path,
    year: int = 2023,
    seed: int = 0,
    period: str = "tmy3",
) -> xr.Dataset:
    """Synthesise an hourly typical year from cited monthly statistics (the embedded default).

    Dry-bulb = smooth daily climatology + ASHRAE diurnal profile + synoptic anomaly:

    1. daily mean: the monthly means of ``period`` interpolated to days with a mean-preserving
       piecewise-linear curve through mid-month knots (no steps between months);
    2. diurnal cycle: ``T = T_mean + DR (0.536 - f(h))``, with ``f`` the ASHRAE Fundamentals
       ch. 14 fraction-of-daily-range profile ([2]_, minimum at 05:00, maximum at 14-15 LST,
       mean 0.536) and ``DR`` the NOAA 1991-2020 monthly mean daily range, interpolated to days;
    3. synoptic variability: a seeded AR(1) day-to-day anomaly (lag-one autocorrelation from the
       TOML, 0.7), interpolated to hours, with a standard deviation that varies seasonally
       between a winter and a summer value.  The two are fitted so that the year's 0.4 %
       warmest hour equals the ASHRAE 0.4 % cooling dry-bulb and its 0.4 % coldest hour the
       99.6 % heating dry-bulb; the anomaly is then made zero-mean in every month (smoothly),
       so the monthly means equal the cited ones.

    Dew point: the annual morning (06 LST) and afternoon (15 LST) relative humidities applied
    to the monthly daily minimum and maximum give a morning and an afternoon dew point; the same
    diurnal profile joins them, plus an anomaly correlated with the dry-bulb one; then clipped to
    the dry-bulb.  Pressure is the standard atmosphere at the station elevation.  Relative
    humidity and wet-bulb follow from :mod:`physics.psychrometrics`.

    Parameters
    ----------
    climate : ClimateStats or str or pathlib.Path
        Statistics, or a name/path for :func:`load_climate`.
    year : int, optional
        Nominal calendar year of the time labels (default 2023).
    seed : int, optional
        Seed of the synoptic anomalies (default 0); the same seed gives the same year.
    period : {"tmy3", "normals_1991_2020"}, optional
        Which monthly means to reproduce: the TMY3 typical year (1973-2005, default; matches
        the free-cooling figures of the project references) or the NOAA 1991-2020 normals
        (about 1 K warmer).

    Returns
    -------
    xarray.Dataset
        Same layout as :func:`load_epw` with ``attrs["data_source"] = "typical_year"``.
    """
    climate, year = _check_typical_year_args(climate, year, seed, period)
    grid = _year_grid()
    rng = np.random.default_rng(int(seed))
    phi = climate.synoptic_autocorrelation
    noise_t = _ar1(_N_DAYS, phi, rng)
    noise_d = _ar1(_N_DAYS, phi, rng)
    dry = _synoptic_dry_bulb(climate, period, grid, noise_t)
    p = float(psychrometrics.standard_pressure(climate.station["elevation"]))
    pressure = np.full(HOURS_PER_YEAR, p)
    temp_dew, rh, dew_scale = _fitted_dew_point(climate, period, grid, dry, noise_d, pressure)

    expected = _nominal_calendar(year).to_numpy()
    time = _time_index(year, expected[:, 0], expected[:, 1], expected[:, 2])
    attrs = _typical_year_attrs(climate, period, int(seed), year, dry, dew_scale)
    columns = {
        "temp_air": dry.temp_air,
        "temp_dew": temp_dew,
        "relative_humidity": rh,
        "pressure": pressure,
    }
    return _assemble(time, columns, np.full(HOURS_PER_YEAR, year), attrs)


def _fit_monotone(fun, lo: float, hi: float, default: float) -> float:
    """Root of an increasing scalar ``fun`` in [lo, hi]; the nearer bound when none is inside."""
    from scipy.optimize import brentq

    f_lo, f_hi = fun(lo), fun(hi)
    if not (np.isfinite(f_lo) and np.isfinite(f_hi)):
        return default
    if f_lo >= 0.0:
        return lo
    if f_hi <= 0.0:
        return hi
    return float(brentq(fun, lo, hi, xtol=1e-4))


def _fit_sigmas(temps, q_lo: float, q_hi: float, target_lo: float, target_hi: float):
    """Winter and summer anomaly std [K] such that the q_lo/q_hi quantiles hit the targets.

    Alternating one-dimensional solves: the warm quantile depends mostly on the summer std, the
    cold one on the winter std.
    """

    def hot_error(sig_s: float, sig_w: float) -> float:
        return float(np.quantile(temps(sig_w, sig_s), q_hi)) - target_hi

    def cold_error(sig_w: float, sig_s: float) -> float:
        return target_lo - float(np.quantile(temps(sig_w, sig_s), q_lo))

    sig_w, sig_s = 4.0, 3.0
    for _ in range(6):
        sig_s = _fit_monotone(partial(hot_error, sig_w=sig_w), 0.0, 25.0, default=3.0)
        sig_w = _fit_monotone(partial(cold_error, sig_s=sig_s), 0.0, 25.0, default=4.0)
    return float(sig_w), float(sig_s)
