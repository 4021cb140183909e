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

Every data row ends up either in a batch or as a :class:`QuarantineRecord`; ``Batch.rows``
counts them.  ``[N/A]``/``[Not Supported]``/empty cells are *not available* (NaN), a literal
``nan`` is quarantined.  Replay runs at the recorded pace times ``speed`` (``inf`` = as fast as
possible); :meth:`ReplaySource.read` returns ``None`` at end of input.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from sensors.base import (
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

#: nvidia-smi query names (and the nanoGPT logger's names) -> store field.
SMI_COLUMNS: dict[str, str] = {
    "power.draw": "power_average",
    "power.draw.average": "power_average",
    "power_w": "power_average",
    "power.draw.instant": "power_instant",
    "temperature.gpu": "temp_gpu",
    "temperature_c": "temp_gpu",
    "temperature.memory": "temp_memory",
    "utilization.gpu": "utilization_gpu",
    "utilization_gpu_percent": "utilization_gpu",
    "clocks.sm": "clock_sm",
    "clocks.current.sm": "clock_sm",
    "clocks.mem": "clock_memory",
    "clocks.current.memory": "clock_memory",
    "clocks_event_reasons.active": "clocks_event_reasons",
    "clocks_throttle_reasons.active": "clocks_event_reasons",
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


def _num(text: str, col: str) -> float:
    s = text.strip()
    low = s.lower()
    if low in NOT_AVAILABLE:
        return math.nan
    if low in ("nan", "-nan", "+nan"):
        raise _Bad("nan", f"{col}={s!r}")
    s = s.split(" ", 1)[0] if " " in s else s  # "395.12 W", "1980 MHz", "100 %"
    try:
        return float(int(s, 16)) if s.lower().startswith("0x") else float(s)
    except ValueError:
        raise _Bad("malformed_line", f"{col}={text.strip()!r} is not a number") from None


class ReplaySource(AbstractSource):
    """Replay ``path`` (format auto-detected) at ``speed`` x recorded pace."""

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
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"replay input {self.path} does not exist")
        self.speed = float(speed)
        self.host = host or self.path.stem
        self.start = self.path.stat().st_mtime if start is None else float(start)
        self.step = step
        self._clock, self._sleep = clock, sleep
        self._devices: list[GpuInfo] = []
        self._dev_pos: dict[str, int] = {}
        self._fh = self.path.open(newline="", encoding="utf-8", errors="replace")
        first = self._fh.readline()
        self.format = self._detect(first)
        self._prov = self._provenance()
        gens = {"smi": self._smi, "nvprof": self._nvprof, "prom": self._prom}
        self._rows: Iterator[_Row] = gens[self.format](first)
        self._peek: _Row | None = None
        self._t0: int | None = None
        self._wall0: float | None = None
        self._done = False
        self.rows_read = 0

    # ------------------------------------------------------------------ formats
    @staticmethod
    def _detect(first: str) -> str:
        s = first.strip()
        if s.startswith("#") or _PROM_LINE.match(s):
            return "prom"
        cols = [c.strip().lower() for c in s.split(",")]
        if cols[:2] == ["t_s", "metric"]:
            return "nvprof"
        if "timestamp" in [c.split(" [")[0] for c in cols]:
            return "smi"

        raise InputError(
            "replay input",
            s[:120],
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

    def _device(self, index: int, uuid: str = "", **kw: object) -> int:
        key = uuid or f"{self.host}:{index}"
        pos = self._dev_pos.get(key)
        if pos is None:
            pos = len(self._devices)
            self._dev_pos[key] = pos
            self._devices.append(GpuInfo(key=key, index=index, host=self.host, uuid=uuid, **kw))
        return pos

    def _lines(self) -> Iterator[tuple[int, str]]:
        for lineno, line in enumerate(self._fh, start=2):
            if line.strip():
                yield lineno, line

    def _smi(self, header: str) -> Iterator[_Row]:
        cols = [c.strip() for c in next(csv.reader([header]))]
        names = [c.split(" [")[0].strip().lower() for c in cols]
        i_time = next((i for i, c in enumerate(names) if c in SMI_TIME), None)
        i_idx = next((i for i, c in enumerate(names) if c in SMI_INDEX), None)
        fields = {i: SMI_COLUMNS[c] for i, c in enumerate(names) if c in SMI_COLUMNS}
        ident = {i: SMI_IDENTITY[c] for i, c in enumerate(names) if c in SMI_IDENTITY}
        unknown = [
            cols[i]
            for i, c in enumerate(names)
            if i not in fields and i not in ident and i not in (i_time, i_idx)
        ]
        ncol = len(cols)
        unknown_counts = 0
        cache: dict[str, int] = {}
        for lineno, line in self._lines():
            self.rows_read += 1
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
                idx = int(parts[i_idx]) if i_idx is not None else 0
                vals = {}
                for i, f in fields.items():
                    vals[f] = _num(parts[i], cols[i])
                kw = {}
                for i, attr in ident.items():
                    v = parts[i].strip()
                    kw[attr] = _num(v, cols[i]) if attr == "power_limit" else v
            except _Bad as exc:
                yield QuarantineRecord(exc.reason, f"line {lineno}: {exc}: {line.strip()[:160]}")
                continue
            except (ValueError, TypeError) as exc:
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

    def _nvprof(self, header: str) -> Iterator[_Row]:
        t0 = int(round(self.start * 1e9))
        pos = self._device(0)
        for lineno, line in self._lines():
            self.rows_read += 1
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
            except ValueError as exc:
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

        for lineno, line in lines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            self.rows_read += 1
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
            t = (
                int(m["ts"]) * 1_000_000
                if m["ts"] is not None
                else t_base + int(round(scrape * self.step * 1e9))
            )
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
        )

    def close(self) -> None:
        self._fh.close()


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
