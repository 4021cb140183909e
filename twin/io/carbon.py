"""Grid carbon intensity: loader for EIA-930-derived hourly CSVs, typical month-by-hour profiles.

Carbon intensity is in gCO2/kWh (grams of CO2 per kWh of electricity generated), hourly, with
timestamps in UTC.  The CSV layout is that of the ``HewlettPackard/dc-rl`` carbon-intensity files
(``data/CarbonIntensity/*_NG_and_avgCI.csv``): a ``timestamp`` column (ISO 8601 with offset),
generation by fuel in MWh and ``avg_CI``, a generation-weighted lifecycle average.

The embedded defaults, ``data/grid/<name>.toml``, hold a 12 x 24 (month x UTC hour) table of
mean carbon intensity with its provenance; :func:`typical_carbon_profile` expands it to 8,760
hours.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from twin.resources import data_dir
from twin.spec import bundled_toml
from twin.units import SpecError

log = logging.getLogger(__name__)

#: Directory of the typical month-by-hour profiles (``<name>.toml``).
GRID_DIR = data_dir("grid")
CARBON_UNITS = "gCO2/kWh"


def load_grid_carbon_csv(path: str | Path, column: str = "avg_CI") -> xr.DataArray:
    """Read an hourly grid carbon-intensity CSV into a :class:`xarray.DataArray`.

    Rows are sorted by time; exact duplicate timestamps keep their first row (counted in
    ``attrs["duplicates_dropped"]``); the series is put on a complete hourly UTC grid, and empty
    cells or absent hours are filled by linear interpolation in time, counted in
    ``attrs["filled_hours"]`` and reported with a warning.

    Parameters
    ----------
    path : str or pathlib.Path
        CSV file with a ``timestamp`` column (parsable dates; naive ones are taken as UTC).
    column : str, optional
        Carbon-intensity column [gCO2/kWh] (default ``"avg_CI"``).

    Returns
    -------
    xarray.DataArray
        Dim ``time`` (hourly, UTC, timezone-naive ``datetime64``), values in gCO2/kWh;
        ``attrs``: ``units``, ``source``, ``column``, ``filled_hours``, ``duplicates_dropped``,
        ``timezone = "UTC"``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    SpecError
        For a missing column, an unparsable timestamp, a non-numeric or negative value, or a
        file with no data; the message names the file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid carbon CSV not found: {path}")
    frame = _read_carbon_frame(path, column)
    stamps = _parse_timestamps(frame, path)
    values = _parse_intensity(frame, path, column)
    series = pd.Series(values.to_numpy(dtype=float), index=stamps.dt.tz_convert("UTC"))
    series, n_dup = _drop_duplicate_hours(series, path, column)
    series, n_missing = _fill_hourly_grid(series, path, column)
    time = series.index.tz_convert("UTC").tz_localize(None)
    return xr.DataArray(
        series.to_numpy(),
        coords={"time": time.to_numpy()},
        dims="time",
        name="carbon_intensity",
        attrs={
            "units": CARBON_UNITS,
            "long_name": f"grid carbon intensity ({column})",
            "source": str(path),
            "column": column,
            "timezone": "UTC",
            "filled_hours": n_missing,
            "duplicates_dropped": n_dup,
        },
    )


def _read_carbon_frame(path: Path, column: str) -> pd.DataFrame:
    """The CSV as text cells, header names stripped; checks ``timestamp`` and ``column``."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), str(exc), "a comma-separated table with a header row") from exc
    frame.columns = [c.strip() for c in frame.columns]
    for needed in ("timestamp", column):
        if needed not in frame.columns:
            raise SpecError(f"{path}:{needed}", list(frame.columns), f"a column named {needed!r}")
    if frame.empty:
        raise SpecError(str(path), "no data rows", "hourly rows after the header")
    return frame


def _parse_timestamps(frame: pd.DataFrame, path: Path) -> pd.Series:
    """The ``timestamp`` column as UTC datetimes (naive ones taken as UTC).

    Row numbers in messages are 1-based file lines (the header is line 1): row i is line i + 2.
    """
    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    bad = stamps.isna()
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise SpecError(
            f"{path}:{i + 2}:timestamp",
            frame["timestamp"].iloc[i],
            "an ISO 8601 timestamp such as '2022-01-01 00:00:00+00:00'",
        )
    return stamps


def _parse_intensity(frame: pd.DataFrame, path: Path, column: str) -> pd.Series:
    """``column`` as non-negative numbers [gCO2/kWh]; empty cells are NaN."""
    text = frame[column].str.strip()
    values = pd.to_numeric(text.where(text != "", None), errors="coerce")
    non_numeric = values.isna() & (text != "")
    if non_numeric.any():
        i = int(np.argmax(non_numeric.to_numpy()))
        raise SpecError(
            f"{path}:{i + 2}:{column}", text.iloc[i], f"a number in {CARBON_UNITS} or an empty cell"
        )
    negative = values < 0
    if negative.any():
        i = int(np.argmax(negative.to_numpy()))
        raise SpecError(f"{path}:{i + 2}:{column}", text.iloc[i], "a non-negative intensity")
    return values


def _drop_duplicate_hours(series: pd.Series, path: Path, column: str) -> tuple[pd.Series, int]:
    """Sorted by time (stable), the first row of each repeated timestamp kept; and the count."""
    series = series.sort_index(kind="stable")
    duplicated = series.index.duplicated(keep="first")
    n_dup = int(duplicated.sum())
    if n_dup:
        log.warning("%s: %d duplicate timestamps dropped (first kept)", path, n_dup)
        series = series[~duplicated]
    if series.notna().sum() < 2:
        raise SpecError(f"{path}:{column}", "fewer than 2 values", "an hourly series")
    return series, n_dup


def _fill_hourly_grid(series: pd.Series, path: Path, column: str) -> tuple[pd.Series, int]:
    """The series on a complete hourly grid, gaps filled by time interpolation; and the count."""
    off_hour = series.index != series.index.floor("h")
    if off_hour.any():
        raise SpecError(
            f"{path}:timestamp", str(series.index[off_hour][0]), "timestamps on the whole hour"
        )
    grid = pd.date_range(series.index[0], series.index[-1], freq="h")
    series = series.reindex(grid)
    n_missing = int(series.isna().sum())
    if n_missing:
        series = series.interpolate(method="time", limit_direction="both")
        log.warning("%s: %d hours without %s filled by time interpolation", path, n_missing, column)
    return series, n_missing


def load_carbon_profile_table(name_or_path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a 12 x 24 month-by-hour carbon-intensity table [gCO2/kWh] and its metadata.

    Parameters
    ----------
    name_or_path : str or pathlib.Path
        A bundled balancing-area name (``"miso"``, ``"soco"``) or a TOML path.

    Returns
    -------
    table : numpy.ndarray
        Shape (12, 24): month (Jan..Dec) by hour of day (0-23, in ``meta["hour_timezone"]``).
    meta : dict
        The TOML's top-level metadata (``name``, ``units``, ``hour_timezone``, ...).
    """
    path = bundled_toml(name_or_path, GRID_DIR, "grid", "carbon profile")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), str(exc), "valid TOML") from exc
    profile = doc.get("month_hour")
    if not isinstance(profile, dict):
        raise SpecError(f"{path}:month_hour", profile, "a [month_hour] table")
    units = profile.get("units")
    if units != CARBON_UNITS:
        raise SpecError(f"{path}:month_hour.units", units, repr(CARBON_UNITS))
    rows = profile.get("values")
    ok = (
        isinstance(rows, list)
        and len(rows) == 12
        and all(isinstance(r, list) and len(r) == 24 for r in rows)
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for r in rows
            for v in r
        )
    )
    if not ok:
        raise SpecError(
            f"{path}:month_hour.values",
            "malformed",
            "12 rows (Jan..Dec) of 24 non-negative numbers",
        )
    meta = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    meta["hour_timezone"] = profile.get("hour_timezone", "UTC")
    meta["source"] = str(path)
    return np.asarray(rows, dtype=float), meta


def typical_carbon_profile(name: str | Path, year: int = 2022) -> xr.DataArray:
    """Hourly carbon intensity of a typical year from a cited 12 x 24 month-by-hour table.

    Each hour of ``year`` takes the table value of its month and hour of day (UTC, the table's
    convention).  The annual mean therefore equals the day-weighted mean of the table.

    Parameters
    ----------
    name : str or pathlib.Path
        ``"miso"``, ``"soco"`` or a TOML path (see ``data/grid/``).
    year : int, optional
        Calendar year of the time labels (default 2022, the year of the bundled statistics).
        A leap year gives 8,784 hours.

    Returns
    -------
    xarray.DataArray
        Dim ``time`` (hourly, UTC, timezone-naive), values in gCO2/kWh, with the TOML's
        provenance in ``attrs``.
    """
    if isinstance(year, bool) or not isinstance(year, (int, np.integer)):
        raise SpecError("typical_carbon_profile.year", year, "an integer calendar year")
    table, meta = load_carbon_profile_table(name)
    time = pd.date_range(f"{int(year)}-01-01", f"{int(year)}-12-31 23:00", freq="h")
    values = table[time.month - 1, time.hour]
    attrs = {
        "units": CARBON_UNITS,
        "long_name": "typical grid carbon intensity (month-by-hour means)",
        "timezone": "UTC",
        "data_source": "typical_profile",
    }
    attrs.update({k: v for k, v in meta.items() if k != "units"})
    return xr.DataArray(
        values, coords={"time": time.to_numpy()}, dims="time", name="carbon_intensity", attrs=attrs
    )
