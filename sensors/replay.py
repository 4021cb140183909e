"""Replay of recorded GPU telemetry.

Formats (detected from the first line):

* ``nvidia-smi --query-gpu=... --format=csv`` logs, with nvidia-smi's own header convention
  (``timestamp, index, power.draw [W], temperature.gpu, utilization.gpu [%]``, values such as
  ``395.12 W`` or ``[N/A]``) or the simplified header of the nanoGPT logs
  (``timestamp,gpu_index,temperature_C,utilization_gpu_percent,power_W``).  nvidia-smi writes
  local time without a zone; timestamps without a zone are read as UTC.
* nvprof ``--system-profiling on`` samples in long format (``t_s,metric,value,value2``); ``t_s`` is
  relative, so the replay anchors it at ``start`` (default: the file's modification time).
* dcgm-exporter's Prometheus text exposition (concatenated scrapes).  Lines without a timestamp
  belong to scrape ``k`` (a new scrape starts when a series repeats), at ``start + k * step``.

Units are read, never assumed (:mod:`sensors.units`, pint): from the header (``power.draw
[kW]``, ``power_W``, ``temperature_F``), else from ``units`` (``--power-unit``,
``--temperature-unit``), else, for ``temperature.gpu``/``temperature.memory`` only, nvidia-smi's
documented degC; a cell's own suffix (``0.39 kW``, ``107 F``) wins for that cell. A header unit
that is not a unit of its field refuses the file; a cell's is quarantined as ``unknown_unit``.

Times are checked against :class:`sensors.validate.Limits` (not before the GPU era, not past the
reader's clock plus a skew) and against the file's own robust span (1st to 99th percentile of its
plausible times, widened by that span or ``span_margin_s``, whichever is larger), found by a
first pass over the time column: rows outside are ``time_implausible`` and never advance a GPU's
clock.  nvidia-smi files need a GPU column (``index``, ``uuid`` or ``pci.bus_id``); without one
the rows of different GPUs would collapse onto one.

Every data row ends up either in a batch or as a :class:`QuarantineRecord`; ``Batch.rows``
counts them (column-level records such as ``unknown_column`` are not rows).  ``[N/A]``/``[Not Supported]``/empty cells are *not available* (NaN), a literal
``nan`` is quarantined.  Replay runs at the recorded pace times ``speed`` (``inf`` = as fast as
possible); :meth:`ReplaySource.read` returns ``None`` at end of input.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import datetime as dt
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from sensors.base import (
    COLUMN_REASONS,
    FIELDS,
    AbstractSource,
    Batch,
    Clock,
    FieldProvenance,
    GpuInfo,
    QuarantineRecord,
    Sleep,
)
from sensors.errors import InputError
from sensors.metrics import gpu_metrics
from sensors.units import Converter, UnitProblem, converter
from sensors.validate import Limits, iso_time

#: nvidia-smi query names -> store field.
SMI_COLUMNS: dict[str, str] = {
    "power.draw": "power_average",
    "power.draw.average": "power_average",
    "power.draw.instant": "power_instant",
    "temperature.gpu": "temp_gpu",
    "temperature.memory": "temp_memory",
    "utilization.gpu": "utilization_gpu",
    "clocks.sm": "clock_sm",
    "clocks.current.sm": "clock_sm",
    "clocks.mem": "clock_memory",
    "clocks.current.memory": "clock_memory",
    "clocks_event_reasons.active": "clocks_event_reasons",
    "clocks_throttle_reasons.active": "clocks_event_reasons",
}
#: Loggers that rename columns put the unit last (``power_W``, ``temperature_C``,
#: ``utilization_gpu_percent``): name without the unit -> store field.
SUFFIXED_COLUMNS: dict[str, str] = {
    "power": "power_average",
    "power_draw": "power_average",
    "temperature": "temp_gpu",
    "temperature_gpu": "temp_gpu",
    "temp": "temp_gpu",
    "temperature_memory": "temp_memory",
    "utilization_gpu": "utilization_gpu",
    "utilization": "utilization_gpu",
}
#: Units nvidia-smi documents but does not print in its header (``nvidia-smi
#: --help-query-gpu``: "temperature.gpu: Core GPU temperature. in degrees C.").
SMI_DEFAULT_UNITS: dict[str, str] = {
    "temperature.gpu": "degC",
    "temperature.memory": "degC",
    "clocks_event_reasons.active": "dimensionless",
    "clocks_throttle_reasons.active": "dimensionless",
}
#: ``units`` keys (``--power-unit``, ``--temperature-unit``) -> the store fields they cover.
UNIT_OVERRIDES: dict[str, tuple[str, ...]] = {
    "power": ("power_average", "power_instant", "power_limit"),
    "temperature": ("temp_gpu", "temp_memory"),
}
SMI_TIME = ("timestamp",)
SMI_INDEX = ("index", "gpu_index")
SMI_IDENTITY = {
    "uuid": "uuid",
    "gpu_uuid": "uuid",
    "name": "name",
    "gpu_name": "name",
    "pci.bus_id": "pci_bus_id",
    "gpu_bus_id": "pci_bus_id",
    "power.limit": "power_limit",
    "enforced.power.limit": "power_limit",
}
NOT_AVAILABLE = {
    "",
    "[n/a]",
    "n/a",
    "[not supported]",
    "[unknown error]",
    "[insufficient permissions]",
}
NVPROF_METRICS = {
    "temperature_gpu_C": ("temp_gpu", None),
    "power_W": ("power_average", "power_limit"),
    "sm_mem_clock_MHz": ("clock_sm", "clock_memory"),
}
_PROM_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+(?P<ts>-?\d+))?\s*$"
)
_PROM_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')

MAX_BATCH_ROWS = 50_000
#: The longest line read [characters]: a longer one (a binary file, a file without newlines) is
#: read in pieces of this size and never held whole; a data line that long is ``malformed_line``.
MAX_LINE_CHARS = 1 << 16

_Row = tuple[int, int, dict[str, float]] | QuarantineRecord


def parse_speed(text: str | float) -> float:
    """``"max"`` -> inf, else a positive number (1 = recorded pace)."""
    if isinstance(text, str) and text.strip().lower() in ("max", "inf"):
        return math.inf
    try:
        v = float(text)
    except (TypeError, ValueError):
        v = float("nan")
    if not v > 0:
        raise InputError("--speed", text, "a positive number (1 = recorded pace) or 'max'")
    return v


def _parse_time(text: str, cache: dict[str, int]) -> int:
    t = cache.get(text)
    if t is None:
        s = text.strip()
        try:
            d = dt.datetime.fromisoformat(s)
        except ValueError:
            d = dt.datetime.strptime(s, "%Y/%m/%d %H:%M:%S.%f")
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.UTC)
        t = int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000
        if len(cache) > 4096:
            cache.clear()
        cache[text] = t
    return t


class _Bad(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class _Col:
    """One value column: its header text, the store field (or identity attribute), the unit the
    store wants and the converter from the column's declared unit (None: only cells say)."""

    name: str
    field: str
    target: str
    unit: str | None
    conv: Converter | None

    def cell_converter(self, suffix: str, text: str) -> Converter:
        if not suffix:
            if self.conv is None:
                override = next((k for k, v in UNIT_OVERRIDES.items() if self.field in v), "")
                hint = f" or --{override}-unit" if override else ""
                raise InputError(
                    f"replay input column {self.name!r}",
                    text,
                    f"a unit in the header (e.g. '{self.name} [{self.target}]'), on the value "
                    f"(e.g. '{text.strip()} {self.target}'){hint}",
                )
            return self.conv
        if suffix == self.unit and self.conv is not None:
            return self.conv
        try:
            return converter(suffix, self.target)
        except UnitProblem as exc:
            raise _Bad("unknown_unit", f"{self.name}={text.strip()!r}: {exc}") from None


def _num(text: str, col: str | _Col) -> float:
    """The value of one cell, converted to its field's unit where ``col`` is a :class:`_Col`."""
    s = text.strip()
    low = s.lower()
    if low in NOT_AVAILABLE:
        return math.nan
    name = col.name if isinstance(col, _Col) else col
    if low in ("nan", "-nan", "+nan"):
        raise _Bad("nan", f"{name}={s!r}")
    num, _, suffix = s.partition(" ")  # "395.12 W", "1980 MHz", "100 %", "0.39 kW"
    try:
        x = float(int(num, 16)) if num.lower().startswith("0x") else float(num)
    except ValueError:
        raise _Bad("malformed_line", f"{name}={s!r} is not a number") from None
    if not isinstance(col, _Col):
        return x
    return col.cell_converter(suffix.strip(), s)(x)


class ReplaySource(AbstractSource):
    """Replay ``path`` (format auto-detected) at ``speed`` x recorded pace.

    ``units`` overrides the unit of columns whose header has none (``{"power": "mW",
    "temperature": "degF"}``); ``limits`` holds the time bounds (GPU era, reader's clock and
    skew); ``span_margin_s`` is the least widening of the file's robust time span.
    """

    name = "replay"

    def __init__(
        self,
        path: str | os.PathLike,
        speed: float = 1.0,
        *,
        host: str | None = None,
        start: float | None = None,
        step: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        units: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        span_margin_s: float = 86_400.0,
    ) -> None:
        self.units = {k: v for k, v in (units or {}).items() if v}
        for k in self.units:
            if k not in UNIT_OVERRIDES:
                raise InputError("replay units", k, f"one of {sorted(UNIT_OVERRIDES)}")
        self.limits = limits if limits is not None else Limits()
        self.span_margin_s = float(span_margin_s)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"replay input {self.path} does not exist")
        self.speed = float(speed)
        self.host = host or self.path.stem
        self.start = self.path.stat().st_mtime if start is None else float(start)
        self.step = step
        self._clock, self._sleep = clock, sleep
        self.rows_read = 0
        self._devices: list[GpuInfo] = []
        self._dev_pos: dict[str, int] = {}
        self._fh = self.path.open(newline="", encoding="utf-8", errors="replace")
        first = self._fh.readline(MAX_LINE_CHARS)
        self.format = self._detect(first, self.path)
        self._prov = self._provenance()
        gens = {"smi": self._smi, "nvprof": self._nvprof, "prom": self._prom}
        self._rows: Iterator[_Row] = gens[self.format](first)
        # the first row now: a header that cannot be read (a unit that is not one, no GPU
        # column) refuses the file here, before anything is stored
        self._peek: _Row | None = next(self._rows, None)
        self._t0: int | None = None
        self._wall0: float | None = None
        self._done = False

    # ------------------------------------------------------------------ formats
    @staticmethod
    def _detect(first: str, path: Path) -> str:
        s = first.strip()
        if len(first) < MAX_LINE_CHARS or first.endswith("\n"):
            if s.startswith("#") or _PROM_LINE.match(s):
                return "prom"
            cols = [c.strip().lower() for c in s.split(",")]
            if cols[:2] == ["t_s", "metric"]:
                return "nvprof"
            if "timestamp" in [c.split(" [")[0] for c in cols]:
                return "smi"
        # never the line itself: the file may be anything the reader can open (a secret)
        raise InputError(
            f"replay input {path} line 1",
            _describe_line(first),
            "an nvidia-smi --query-gpu CSV header with 'timestamp', an nvprof 't_s,metric,...' "
            "header or Prometheus text exposition",
        )

    def _provenance(self) -> dict[str, FieldProvenance]:
        origin = f"replay:{self.path.name}"
        if self.format == "smi":
            return {
                "power_average": FieldProvenance(
                    f"{origin} nvidia-smi power.draw", "average", "W", 1.0
                ),
                "power_instant": FieldProvenance(
                    f"{origin} nvidia-smi power.draw.instant", "instant", "W"
                ),
                "temp_gpu": FieldProvenance(
                    f"{origin} nvidia-smi temperature.gpu", "gauge", "degC"
                ),
                "temp_memory": FieldProvenance(
                    f"{origin} nvidia-smi temperature.memory", "gauge", "degC"
                ),
                "utilization_gpu": FieldProvenance(
                    f"{origin} nvidia-smi utilization.gpu", "average", "percent"
                ),
                "clock_sm": FieldProvenance(f"{origin} nvidia-smi clocks.sm", "gauge", "MHz"),
                "clock_memory": FieldProvenance(f"{origin} nvidia-smi clocks.mem", "gauge", "MHz"),
                "clocks_event_reasons": FieldProvenance(
                    f"{origin} nvidia-smi clocks_event_reasons.active", "gauge", "dimensionless"
                ),
            }
        if self.format == "nvprof":
            return {
                "power_average": FieldProvenance(
                    f"{origin} nvprof system-profiling power", "average", "W"
                ),
                "temp_gpu": FieldProvenance(f"{origin} nvprof temperature", "gauge", "degC"),
                "clock_sm": FieldProvenance(f"{origin} nvprof SM clock", "gauge", "MHz"),
                "clock_memory": FieldProvenance(f"{origin} nvprof memory clock", "gauge", "MHz"),
            }
        out = {}
        for m in gpu_metrics():
            kind = {"power_average": "average", "power_instant": "instant"}.get(m.field, m.type)
            out[m.field] = FieldProvenance(f"{origin} dcgm {m.name}", kind, _unit(m.field))
        return out

    def _device(self, index: int | None, uuid: str = "", **kw: object) -> int:
        if index is None:  # no index column: the GPU is its UUID or PCI bus id
            key = uuid or f"{self.host}:{kw.get('pci_bus_id', '')}"
        else:
            key = uuid or f"{self.host}:{index}"
        pos = self._dev_pos.get(key)
        if pos is None:
            pos = len(self._devices)
            index = pos if index is None else index
            self._dev_pos[key] = pos
            self._devices.append(GpuInfo(key=key, index=index, host=self.host, uuid=uuid, **kw))
        return pos

    def _lines(self) -> Iterator[tuple[int, str]]:
        """Data lines (not blank); one longer than :data:`MAX_LINE_CHARS` comes as ``""``."""
        for lineno, line in enumerate(_bounded_lines(self._fh), start=2):
            if line is _TOO_LONG or line.strip():
                yield lineno, "" if line is _TOO_LONG else line

    @staticmethod
    def _too_long(lineno: int) -> QuarantineRecord:
        return QuarantineRecord(
            "malformed_line", f"line {lineno}: longer than {MAX_LINE_CHARS:,} characters"
        )

    def _column(self, i: int, text: str) -> tuple[str, _Col] | None:
        """(kind, column) for a value or identity column; ``None`` for anything else."""
        base, _, rest = text.partition(" [")
        name = base.strip().lower()
        unit = rest.rstrip("]").strip() if rest else None
        field = SMI_COLUMNS.get(name)
        kind = "field"
        if field is None and name in SMI_IDENTITY:
            kind, field = "ident", SMI_IDENTITY[name]
            if field != "power_limit":
                return kind, _Col(text, field, "", None, None)
        if field is None and unit is None and "_" in name:
            stem, _, suffix = base.strip().rpartition("_")
            field = SUFFIXED_COLUMNS.get(stem.lower())
            unit = suffix if field else None
        if field is None:
            return None
        target = "W" if field == "power_limit" else FIELDS[field][0]
        override = next(
            (self.units[k] for k, v in UNIT_OVERRIDES.items() if field in v and k in self.units),
            None,
        )
        if (
            unit is not None
            and override is not None
            and converter(override, target) != converter(unit, target)
        ):
            raise InputError(
                f"replay input column {text!r}",
                override,
                f"no unit override: the header says {unit!r}",
            )
        unit = unit if unit is not None else override or SMI_DEFAULT_UNITS.get(name)
        try:
            conv = converter(unit, target) if unit is not None else None
        except UnitProblem as exc:
            raise InputError(
                f"replay input column {text!r}", unit, f"a unit of {target} ({exc})"
            ) from None
        return kind, _Col(text, field, target, unit, conv)

    def _smi_header(self, cols: list[str]) -> tuple[dict[int, _Col], dict[int, _Col], list[str]]:
        """Value columns, identity columns and the names of columns not understood."""
        fields: dict[int, _Col] = {}
        ident: dict[int, _Col] = {}
        unknown = []
        for i, c in enumerate(cols):
            name = c.split(" [")[0].strip().lower()
            if name in SMI_TIME or name in SMI_INDEX:
                continue
            got = self._column(i, c)
            if got is None:
                unknown.append(c)
            else:
                (fields if got[0] == "field" else ident)[i] = got[1]
        return fields, ident, unknown

    def _smi(self, header: str) -> Iterator[_Row]:
        cols = [c.strip() for c in next(csv.reader([header]))]
        names = [c.split(" [")[0].strip().lower() for c in cols]
        i_time = next((i for i, c in enumerate(names) if c in SMI_TIME), None)
        i_idx = next((i for i, c in enumerate(names) if c in SMI_INDEX), None)
        fields, ident, unknown = self._smi_header(cols)
        if i_idx is None and not {"uuid", "pci_bus_id"} & {c.field for c in ident.values()}:
            known = [
                c for c, n in zip(cols, names, strict=True) if n in SMI_TIME or self._column(0, c)
            ]
            raise InputError(
                f"replay input {self.path} line 1 (header)",
                f"{len(cols)} columns, of which understood: {', '.join(known)}",
                "a GPU column: 'index' (or 'gpu_index'), 'uuid' or 'pci.bus_id' (nvidia-smi "
                "--query-gpu=timestamp,index,...); without one every GPU's rows collapse onto one",
            )
        ncol = len(cols)
        unknown_counts = 0
        cache: dict[str, int] = {}
        ok_time = self._time_check(lambda p: _parse_time(p[i_time], cache), ncol)
        for lineno, line in self._lines():
            self.rows_read += 1
            if not line:
                yield self._too_long(lineno)
                continue
            complete = line.endswith("\n")
            parts = line.rstrip("\r\n").split(",")
            if len(parts) != ncol:
                reason = "truncated_line" if len(parts) < ncol or not complete else "malformed_line"
                yield QuarantineRecord(
                    reason, f"line {lineno}: {len(parts)} of {ncol} fields: {line.strip()[:160]}"
                )
                continue
            try:
                t = _parse_time(parts[i_time], cache)
                why = ok_time(t)
                if why:
                    raise _Bad("time_implausible", f"time {why}")
                idx = int(parts[i_idx]) if i_idx is not None else None
                vals = {c.field: _num(parts[i], c) for i, c in fields.items()}
                kw = {
                    c.field: _num(parts[i], c) if c.field == "power_limit" else parts[i].strip()
                    for i, c in ident.items()
                }
            except _Bad as exc:
                yield QuarantineRecord(exc.reason, f"line {lineno}: {exc}: {line.strip()[:160]}")
                continue
            except (ValueError, TypeError) as exc:
                if isinstance(exc, InputError):
                    raise
                yield QuarantineRecord(
                    "malformed_line", f"line {lineno}: {exc}: {line.strip()[:160]}"
                )
                continue
            uuid = str(kw.pop("uuid", ""))
            pos = self._device(idx, uuid, **kw)
            unknown_counts += 1 if unknown else 0
            yield (t, pos, vals)
        if unknown:
            # Column-level, not row-level: the rows were stored without these columns.
            yield QuarantineRecord(
                "unknown_column",
                f"columns {unknown} not understood; ignored in {unknown_counts} rows",
            )

    def _time_check(self, get: Callable[[list[str]], int], ncol: int) -> Callable[[int], str]:
        """A first pass over the file's times; returns ``t -> why it is implausible`` ("" if
        not): before the GPU era, past the reader's clock plus skew, or outside the file's
        robust span (see the module docstring)."""

        def times(line: str) -> int | None:
            parts = line.rstrip("\r\n").split(",")
            return get(parts) if len(parts) == ncol else None

        return self._span_check(times)

    def _span_check(self, time_of: Callable[[str], int | None]) -> Callable[[int], str]:
        """The first pass: ``time_of(line)`` of each data line (None or an error: no time);
        returns ``t -> why it is implausible``."""
        lo, hi = self.limits.time_bounds()
        sample = _TimeSample()
        with self.path.open(newline="", encoding="utf-8", errors="replace") as fh:
            for line in _bounded_lines(fh):
                try:
                    t = time_of(line)
                except (ValueError, TypeError, OverflowError):
                    continue
                if t is not None and lo <= t <= hi:
                    sample.add(t)
        span = sample.robust_span(self.span_margin_s)

        def why(t: int) -> str:
            problem = self.limits.time_problem(t)
            if problem or span is None or span[0] <= t <= span[1]:
                return problem
            return (
                f"{iso_time(t)} is far outside this file's span ({iso_time(span[0])} to {iso_time(span[1])}, "
                "its 1st-99th percentile widened by that span or the margin)"
            )

        return why

    def _nvprof(self, header: str) -> Iterator[_Row]:
        t0 = int(round(self.start * 1e9))
        pos = self._device(0)
        ok_time = self._time_check(lambda p: t0 + int(round(float(p[0]) * 1e9)), 4)
        for lineno, line in self._lines():
            self.rows_read += 1
            if not line:
                yield self._too_long(lineno)
                continue
            parts = line.rstrip("\r\n").split(",")
            if len(parts) != 4:
                reason = "truncated_line" if len(parts) < 4 else "malformed_line"
                yield QuarantineRecord(reason, f"line {lineno}: {line.strip()[:160]}")
                continue
            t_s, metric, v1, v2 = (p.strip() for p in parts)
            spec = NVPROF_METRICS.get(metric)
            if spec is None:
                yield QuarantineRecord("unknown_metric", f"line {lineno}: metric {metric!r}")
                continue
            try:
                t = t0 + int(round(float(t_s) * 1e9))
                why = ok_time(t)
                if why:
                    raise _Bad("time_implausible", f"time {why}")
                vals = {spec[0]: _num(v1, metric)}
                if spec[1] == "power_limit":
                    limit = _num(v2, metric)
                    if self._devices[pos].power_limit != self._devices[pos].power_limit:
                        self._devices[pos] = _replace(self._devices[pos], power_limit=limit)
                elif spec[1]:
                    vals[spec[1]] = _num(v2, metric)
                if math.isnan(vals[spec[0]]):
                    raise _Bad("malformed_line", f"{metric} without a value")
            except _Bad as exc:
                yield QuarantineRecord(exc.reason, f"line {lineno}: {exc}")
                continue
            except (ValueError, OverflowError) as exc:
                yield QuarantineRecord("malformed_line", f"line {lineno}: {exc}")
                continue
            yield (t, pos, vals)

    def _prom(self, first: str) -> Iterator[_Row]:
        by_name = {m.name: m for m in gpu_metrics()}
        t_base = int(round(self.start * 1e9))
        scrape = 0
        seen: set[tuple[str, str]] = set()
        pending: dict[tuple[int, int], dict[str, float]] = {}

        def lines() -> Iterator[tuple[int, str]]:
            yield 1, first
            yield from self._lines()

        ok_time = self._span_check(_prom_time)
        for lineno, line in lines():
            s = line.strip()
            if line and (not s or s.startswith("#")):
                continue
            self.rows_read += 1
            if not line:
                yield self._too_long(lineno)
                continue
            m = _PROM_LINE.match(s)
            if not m:
                yield QuarantineRecord("malformed_line", f"line {lineno}: {s[:160]}")
                continue
            metric = by_name.get(m["name"])
            if metric is None:
                yield QuarantineRecord("unknown_metric", f"line {lineno}: {m['name']}")
                continue
            labels = dict(_PROM_LABEL.findall(m["labels"] or ""))
            try:
                idx = int(labels.get("gpu", "0"))
                value = float(m["value"])
            except ValueError:
                yield QuarantineRecord("malformed_line", f"line {lineno}: {s[:160]}")
                continue
            if math.isnan(value):
                yield QuarantineRecord("nan", f"line {lineno}: {s[:160]}")
                continue
            series = (m["name"], labels.get("UUID", "") + labels.get("gpu", ""))
            if m["ts"] is None and series in seen:
                yield from _flush_pending(pending)
                seen.clear()
                scrape += 1
            seen.add(series)
            if m["ts"] is not None:
                t = int(m["ts"]) * 1_000_000
                if why := ok_time(t):  # a scrape's own time: checked as nvidia-smi times are
                    yield QuarantineRecord("time_implausible", f"line {lineno}: time {why}")
                    continue
            else:
                t = t_base + int(round(scrape * self.step * 1e9))
            pos = self._device(
                idx,
                labels.get("UUID", ""),
                name=labels.get("modelName", ""),
                pci_bus_id=labels.get("pci_bus_id", ""),
            )
            if labels.get("Hostname") and self._devices[pos].host != labels["Hostname"]:
                self._devices[pos] = _replace(self._devices[pos], host=labels["Hostname"])
            pending.setdefault((t, pos), {})[metric.field] = value / metric.scale
        yield from _flush_pending(pending)

    # ------------------------------------------------------------------ source API
    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def provenance(self) -> Mapping[str, FieldProvenance]:
        return self._prov

    def _next(self) -> _Row | None:
        if self._peek is not None:
            r, self._peek = self._peek, None
            return r
        return next(self._rows, None)

    def read(self) -> Batch | None:
        if self._done:
            return None
        times: list[int] = []
        gpus: list[int] = []
        vals: dict[str, list[float]] = {}
        quarantine: list[QuarantineRecord] = []
        n = 0
        while n < MAX_BATCH_ROWS:
            row = self._next()
            if row is None:
                self._done = True
                break
            if isinstance(row, QuarantineRecord):
                quarantine.append(row)
                continue
            t, pos, v = row
            if math.isfinite(self.speed):
                now = self._clock()
                if self._t0 is None:
                    self._t0, self._wall0 = t, now
                due = self._wall0 + max(0, t - self._t0) / 1e9 / self.speed
                if due > now:
                    if n or quarantine:
                        self._peek = row
                        break
                    self._sleep(min(due - now, 1.0))
                    self._peek = row
                    continue
            for f in v:
                if f not in vals:
                    vals[f] = [math.nan] * n
            for f, lst in vals.items():
                lst.append(v.get(f, math.nan))
            times.append(t)
            gpus.append(pos)
            n += 1
        if self._done and not n and not quarantine:
            self._fh.close()
            return None
        return Batch(
            np.array(times, np.int64),
            np.array(gpus, np.int64),
            {f: np.array(x) for f, x in vals.items()},
            quarantine,
            rows=n + sum(r.reason not in COLUMN_REASONS for r in quarantine),
        )

    def close(self) -> None:
        self._fh.close()


class _TimeSample:
    """A bounded, evenly thinned sample of a file's times (every ``stride``-th kept; the stride
    doubles when full), for robust quantiles in memory independent of the file's length."""

    def __init__(self, capacity: int = 1 << 18) -> None:
        self.capacity, self.stride, self.seen = capacity, 1, 0
        self.times = array.array("q")

    def add(self, t: int) -> None:
        if self.seen % self.stride == 0:
            self.times.append(t)
            if len(self.times) >= self.capacity:
                self.times = self.times[::2]
                self.stride *= 2
        self.seen += 1

    def robust_span(self, margin_s: float) -> tuple[int, int] | None:
        """[q01 - w, q99 + w] with w = max(q99 - q01, margin); None below 20 times."""
        if len(self.times) < 20:
            return None
        t = np.frombuffer(self.times, dtype=np.int64)
        q01, q99 = (int(x) for x in np.quantile(t, [0.01, 0.99], method="inverted_cdf"))
        w = max(q99 - q01, int(margin_s * 1e9))
        return q01 - w, q99 + w


_TOO_LONG = "\x00too long\x00"


def _bounded_lines(fh) -> Iterator[str]:
    """The lines of ``fh``, never more than :data:`MAX_LINE_CHARS` held: a longer line is read
    through in pieces and comes as ``_TOO_LONG``."""
    while line := fh.readline(MAX_LINE_CHARS):
        if len(line) < MAX_LINE_CHARS or line.endswith("\n"):
            yield line
            continue
        while (rest := fh.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
            pass
        yield _TOO_LONG


def _prom_time(line: str) -> int | None:
    """The timestamp [ns] of a Prometheus sample line, None without one."""
    m = _PROM_LINE.match(line.strip())
    return int(m["ts"]) * 1_000_000 if m and m["ts"] is not None else None


def _describe_line(line: str) -> str:
    """What a line looks like, without a character of it (for errors about unknown files)."""
    if not line:
        return "an empty file"
    if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
        return f"a line longer than {MAX_LINE_CHARS:,} characters"
    if "\x00" in line or "\ufffd" in line:
        return f"{len(line):,} characters that are not UTF-8 text (a binary file?)"
    fields = line.count(",") + 1
    return f"a line of {len(line.rstrip()):,} characters, {fields} comma-separated field(s)"


def _flush_pending(pending: dict[tuple[int, int], dict[str, float]]) -> Iterator[_Row]:
    for (t, pos), vals in pending.items():
        yield (t, pos, vals)
    pending.clear()


def _replace(g: GpuInfo, **kw: object) -> GpuInfo:
    import dataclasses

    return dataclasses.replace(g, **kw)


def _unit(field: str) -> str:
    from sensors.base import FIELDS

    return FIELDS[field][0]
