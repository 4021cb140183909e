r"""Telemetry for calibration and estimation: open a source, put it on a regular grid.

Sources (``--telemetry SOURCE``) are read through ``sensors``:

* a telemetry store written by ``twin sensord`` (:class:`sensors.store.Store`, read-only);
* a recorded file that :class:`sensors.replay.ReplaySource` understands (nvidia-smi CSV, nvprof
  samples, Prometheus text exposition); its batches are validated by the store's checks
  (:meth:`sensors.store.Store.append` on a temporary store) so that quarantined rows never reach
  the fit;
* an ``http(s)://`` Prometheus server (:class:`sensors.fleet.PrometheusReader`).

All three give the Dataset of :meth:`sensors.store.Store.read` (dims ``time``, ``gpu``).
:func:`to_grid` turns it into the arrays the fit needs, modelling what the sensors do:

* power readings are ~1 s trailing averages (NVML ``power.draw``): the reading at grid time
  :math:`t_k` is taken as the mean power over :math:`(t_{k-1}, t_k]`, exactly the zero-order-hold
  input of the exponential step (``physics.gpu.die_temperature_step``);
* temperatures are instantaneous, 1 °C quantized readings at irregular times: each reading keeps
  its fractional position inside its grid cell and the model is interpolated there;
* gaps (no reading for more than ``gap_s``) are flagged; power is interpolated through them but
  no temperature is compared there.

:func:`sensors.synthetic.simulate_fleet` writes a synthetic fleet in the same schema, with hidden
parameters, for tests and benchmarks (:func:`synthetic_fleet` here). For the dashboard, which
reaches sensors only through twin: :func:`is_store`, :func:`store_info` and
:class:`SimulatedTelemetry` (an in-process simulated fleet read batch by batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

# re-exported as is: apps reach the synthetic fleet only through twin
from sensors.synthetic import simulate_fleet as synthetic_fleet  # noqa: F401
from twin.units import SpecError

#: A grid never holds more cells (GPUs x steps) than this many per reading present, nor more
#: than GRID_MIN_CELLS when that is larger: memory follows the samples, not the time span (one
#: stray 2099 time in a 2025 log once asked for a 17 GiB grid of 2.3e9 steps).
GRID_CELLS_PER_SAMPLE = 64
GRID_MIN_CELLS = 4_000_000
#: bytes per grid cell at the peak of :func:`to_grid` (its arrays and temporaries), for messages
GRID_BYTES_PER_CELL = 200
#: A stretch with no reading of any GPU longer than this [s] is cut out of the grid (two 1 h
#: stretches a month apart make a grid of ~2 h, not of a month) ...
GRID_CUT_GAP_S = 1800.0
#: ... except its last GRID_BRIDGE_S seconds, kept as a bridge: power held at the first reading
#: after the gap, no temperature compared (``gap``), so the model reaches the steady state at the
#: next stretch's first power, the same state it starts the record from, and never integrates
#: the readings before the gap into the stretch after it.  600 s is six times the slow branch's
#: prior time constant (100 s): what is left of the state before the gap is ~0.25 %.
GRID_BRIDGE_S = 600.0

#: clocks-event reason bits that mean thermal throttling (NVML ``nvmlClocksEventReason*``):
#: HW slowdown 0x8, SW thermal slowdown 0x20, HW thermal slowdown 0x40, HW power brake 0x80.
THERMAL_THROTTLE_BITS = 0x8 | 0x20 | 0x40 | 0x80


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an SQLite file (what a ``twin sensord`` telemetry store is)."""
    try:
        with Path(path).open("rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def store_info(path: str | os.PathLike, label: str = "--telemetry") -> dict:
    """:meth:`sensors.store.Store.info` of a telemetry store, opened read-only (samples, first
    and last time, ...); raises :class:`SpecError` naming ``label`` when it is not a store."""
    from sensors.store import Store, StoreError

    try:
        with contextlib.closing(Store(Path(path), readonly=True)) as store:
            return store.info()
    except StoreError as exc:
        raise SpecError(label, str(path), f"a twin telemetry store ({exc})") from exc


class SimulatedTelemetry:
    """GPUs simulated in this process (:class:`sensors.simulated.SimulatedSource`, wall clock):
    each :meth:`read_frame` is the batch of readings since the previous one."""

    def __init__(self, n_gpus: int = 8, seed: int = 0, host: str = "simulated") -> None:
        from sensors.simulated import SimulatedSource

        self.source = SimulatedSource(n_gpus=n_gpus, seed=seed, host=host)

    def read_frame(self) -> pd.DataFrame:
        """One batch as a long table: ``time`` (UTC, naive), ``gpu`` key, one column per field."""
        batch = self.source.read()
        keys = [d.key for d in self.source.devices()]
        df = pd.DataFrame(batch.values)
        df.insert(0, "gpu", [keys[i] for i in batch.gpu])
        df.insert(0, "time", pd.to_datetime(batch.time_ns, unit="ns"))
        return df


def open_telemetry(
    source: str | os.PathLike,
    *,
    start: object = None,
    end: object = None,
    prometheus_step: float = 1.0,
    units: dict[str, str] | None = None,
) -> xr.Dataset:
    """Read ``source`` (store, recorded file, or Prometheus URL) into a ``time x gpu`` Dataset.

    ``units`` overrides the units of recorded-file columns whose header has none (``{"power":
    "mW"}``, see :class:`sensors.replay.ReplaySource`).  What was read and quarantined is in
    :func:`ingest_report` of the result.  Raises :class:`SpecError` naming ``--telemetry`` when
    the source does not exist, cannot be parsed, is unreachable or holds no sample.
    """
    text = str(source)
    if text.startswith(("http://", "https://")):
        from sensors.fleet import PrometheusQueryError, PrometheusReader, PrometheusUnavailable

        t1 = pd.Timestamp.now(tz="UTC") if end is None else pd.Timestamp(end)
        t0 = t1 - pd.Timedelta(hours=2) if start is None else pd.Timestamp(start)
        reader = PrometheusReader(text, retries=2, backoff=0.2)
        try:
            ds = reader.read(t0, t1, step=prometheus_step)
        except PrometheusUnavailable as exc:
            raise SpecError("--telemetry", text, f"a reachable Prometheus server ({exc})") from exc
        except PrometheusQueryError as exc:
            raise SpecError("--telemetry", text, f"a Prometheus that answers ({exc})") from exc
    else:
        path = Path(text)
        if not path.is_file():
            raise SpecError(
                "--telemetry",
                text,
                "an existing telemetry store, an nvidia-smi/nvprof CSV or Prometheus text file, "
                "or an http(s):// Prometheus URL",
            )
        if is_store(path):
            from sensors.store import Store, StoreError

            try:
                with contextlib.closing(Store(path, readonly=True)) as st:
                    ds = st.read(start, end)
                    _set_ingest(ds, st.info(), "store")
            except StoreError as exc:
                raise SpecError("--telemetry", text, f"a twin telemetry store ({exc})") from exc
        else:
            ds = _read_replay(path, start, end, units)
    return check_telemetry(ds, text)


def _read_replay(
    path: Path, start: object, end: object, units: dict[str, str] | None = None
) -> xr.Dataset:
    """Replay ``path`` as fast as possible through a temporary store (validation included)."""
    from sensors.errors import InputError
    from sensors.replay import ReplaySource
    from sensors.store import Store

    try:
        src = ReplaySource(path, speed=math.inf, units=units)
        with tempfile.TemporaryDirectory(prefix="twin-cal-") as tmp:
            with Store(Path(tmp) / "replay.db", synchronous="OFF") as st:
                st.record_provenance(src.name, dict(src.provenance()))
                while (batch := src.read()) is not None:
                    if len(batch) or batch.quarantine:
                        st.append(batch, src.devices(), source=src.name)
                st.flush()
                ds = st.read(start, end)
                _set_ingest(ds, st.info(), "file")
            src.close()
    except InputError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"--telemetry {exc.path}", exc.value, exc.expected) from exc
    ds = ds.load()
    ds.attrs["source"] = str(path)
    return ds


def _set_ingest(ds: xr.Dataset, info: dict, scope: str) -> None:
    """Keep what reading cost in ``ds.attrs["ingest"]`` (JSON text: netCDF attributes are
    strings): rows, samples, quarantined rows by reason, ignored columns."""
    report = {
        "scope": scope,  # "file": this read; "store": the store's whole history
        "rows": int(info.get("rows", 0)),
        "samples": int(info.get("samples", 0)),
        "quarantined": {k: int(v) for k, v in dict(info.get("quarantined", {})).items()},
        "ignored_columns": {k: int(v) for k, v in dict(info.get("ignored_columns", {})).items()},
    }
    ds.attrs["ingest"] = json.dumps(report)


def ingest_report(ds: xr.Dataset) -> dict:
    """What reading ``ds`` cost: ``rows``, ``samples``, ``quarantined`` {reason: rows},
    ``ignored_columns``; ``{}`` where the source does not say (Prometheus, a Dataset)."""
    text = ds.attrs.get("ingest")
    return json.loads(text) if text else {}


def format_ingest(report: dict) -> str:
    """One line for people: ``2,001 rows: 2,000 samples, 1 quarantined (time_implausible 1)``."""
    if not report:
        return ""
    q = report.get("quarantined", {})
    why = ", ".join(f"{k} {v:,}" for k, v in sorted(q.items()))
    where = "rows in the store" if report.get("scope") == "store" else "rows read"
    line = f"{report['rows']:,} {where}: {report['samples']:,} samples, {sum(q.values()):,} quarantined"
    line += f" ({why})" if why else ""
    cols = report.get("ignored_columns") or {}
    return line + (f"; ignored columns: {sum(cols.values())}" if cols else "")


def check_telemetry(ds: xr.Dataset, source: str = "") -> xr.Dataset:
    """Make sure ``ds`` has GPUs, times, die temperature and power; raise :class:`SpecError`."""
    label = "--telemetry"
    if ds.sizes.get("time", 0) < 2 or ds.sizes.get("gpu", 0) < 1:
        lost = format_ingest(ingest_report(ds))
        raise SpecError(
            label,
            f"{source or 'Dataset'} with {ds.sizes.get('time', 0)} times x "
            f"{ds.sizes.get('gpu', 0)} GPUs" + (f" ({lost})" if lost else ""),
            "telemetry with at least 2 samples of one GPU",
        )
    for need in ("temp_gpu", "power_average"):
        if need not in ds.data_vars:
            raise SpecError(
                f"{label}:{need}",
                sorted(ds.data_vars),
                f"a '{need}' variable (GPU {'temperature' if 'temp' in need else 'power'})",
            )
    return ds


@dataclasses.dataclass
class Grid:
    """Telemetry on a regular grid of ``dt`` seconds; arrays are ``(gpu, step)``.

    ``power[:, k]`` is the mean power over ``(t_k - dt, t_k]`` [W]; ``temp[:, k]`` the mean of
    the temperature readings [°C] taken in ``(t_{k-1}, t_k]`` (NaN if none) and ``frac[:, k]``
    their mean position in the cell (0 = ``t_{k-1}``, 1 = ``t_k``); ``temp_memory``/``frac_memory``
    likewise for HBM.  ``gap`` marks steps with no reading within ``gap_s``; ``throttled`` steps
    whose clocks-event reasons show thermal throttling or whose temperature reached the slowdown
    limit.

    Steps are ``dt`` apart except across a cut (see :data:`GRID_CUT_GAP_S`): ``time_ns`` then
    holds each step's time and ``cuts`` the (start, end) [ns] of each interval left out.
    """

    gpu: list[str]
    host: list[str]
    t0_ns: int
    dt: float
    power: np.ndarray
    temp: np.ndarray
    frac: np.ndarray
    temp_memory: np.ndarray | None
    frac_memory: np.ndarray | None
    utilization: np.ndarray | None
    gap: np.ndarray
    throttled: np.ndarray
    #: each GPU's identity from the telemetry's coordinates, where given: ``uuid``, ``index``,
    #: ``name`` (NVML product name), ``location`` (operator's label); lists over ``gpu``
    identity: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: each step's time [ns] where the grid has cuts (``None``: ``t0_ns + k * dt``)
    time_ns: np.ndarray | None = None
    #: (start, end) [ns since the epoch] of each interval without readings left out of the grid
    cuts: tuple[tuple[int, int], ...] = ()

    @property
    def n_steps(self) -> int:
        return int(self.power.shape[1])

    @property
    def times(self) -> np.ndarray:
        if self.time_ns is not None:
            return self.time_ns
        return self.t0_ns + (np.arange(self.n_steps) * self.dt * 1e9).astype(np.int64)

    @property
    def end_ns(self) -> int:
        """The end of the last step's cell [ns]."""
        return int(self.times[-1] + self.dt * 1e9) if self.n_steps else int(self.t0_ns)

    def time_at(self, seconds: float) -> int:
        """The time [ns] ``seconds`` of grid steps after the first step (cuts skipped)."""
        if self.time_ns is None or not self.n_steps:
            return int(self.t0_ns + seconds * 1e9)
        k = min(max(int(round(seconds / self.dt)), 0), self.n_steps - 1)
        return int(self.time_ns[k] + (seconds - k * self.dt) * 1e9)

    def window(self, start: int, stop: int) -> Grid:
        """Steps ``start`` to ``stop`` (exclusive)."""

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:, start:stop]

        t = self.times[start:stop]
        return dataclasses.replace(
            self,
            t0_ns=int(t[0]) if t.size else int(self.t0_ns + start * self.dt * 1e9),
            time_ns=None if self.time_ns is None else t,
            cuts=tuple(c for c in self.cuts if t.size and c[0] < t[-1] and c[1] > t[0]),
            power=self.power[:, start:stop],
            temp=self.temp[:, start:stop],
            frac=self.frac[:, start:stop],
            temp_memory=sub(self.temp_memory),
            frac_memory=sub(self.frac_memory),
            utilization=sub(self.utilization),
            gap=self.gap[:, start:stop],
            throttled=self.throttled[:, start:stop],
        )

    def select(self, idx: np.ndarray) -> Grid:
        """The GPUs at positions ``idx``."""
        idx = np.asarray(idx)

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return dataclasses.replace(
            self,
            gpu=[self.gpu[i] for i in idx],
            host=[self.host[i] for i in idx],
            power=self.power[idx],
            temp=self.temp[idx],
            frac=self.frac[idx],
            temp_memory=sub(self.temp_memory),
            frac_memory=sub(self.frac_memory),
            utilization=sub(self.utilization),
            gap=self.gap[idx],
            throttled=self.throttled[idx],
            identity={k: [v[i] for i in idx] for k, v in self.identity.items()},
        )


def _bin_readings(t: np.ndarray, v: np.ndarray, n: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean value and mean cell position of readings ``v`` at times ``t`` [s] per grid cell."""
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    k = np.clip(np.ceil(t / dt - 1e-9).astype(np.int64), 0, n - 1)
    pos = np.clip(t / dt - (k - 1), 0.0, 1.0)
    cnt = np.bincount(k, minlength=n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(k, weights=v, minlength=n) / cnt
        fr = np.bincount(k, weights=pos, minlength=n) / cnt
    return mean, np.where(cnt > 0, fr, 0.0)


def _flat_readings(ts: np.ndarray, V: np.ndarray):
    """Finite entries of ``V`` (time, gpu) as (gpu, time, value), grouped by GPU, time-ordered."""
    ri, gi = np.nonzero(np.isfinite(V))
    order = np.argsort(gi, kind="stable")  # rows come time-ordered within each GPU
    ri, gi = ri[order], gi[order]
    return gi, ts[ri], V[ri, gi]


def _interp_rows(
    ts: np.ndarray, V: np.ndarray, grid_t: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``np.interp`` of every column of ``V`` (time, gpu) onto ``grid_t``, vectorized over
    GPUs, and the distance from each grid time to the column's nearest reading [s].

    Columns not in ``rows`` (bool, gpu) come back as garbage; the caller masks them.
    """
    g_n, n = V.shape[1], grid_t.size
    gi, t, v = _flat_readings(ts, V)
    keep = rows[gi]
    gi, t, v = gi[keep], t[keep], v[keep]
    out = np.full((g_n, n), np.nan)
    dist = np.full((g_n, n), np.inf)
    if gi.size == 0:
        return out, dist
    span = float(max(grid_t[-1], t.max()) - min(0.0, t.min())) + 10.0
    off = -min(0.0, float(t.min()))
    key = gi * span + (t + off)
    start = np.searchsorted(gi, np.arange(g_n), side="left")
    stop = np.searchsorted(gi, np.arange(g_n), side="right")
    sel = np.flatnonzero(rows & (stop > start))
    q = (sel[:, None] * span + (grid_t[None, :] + off)).ravel()
    pos = np.searchsorted(key, q, side="left").reshape(sel.size, n)
    a, b = start[sel][:, None], stop[sel][:, None] - 1
    lo = np.clip(pos - 1, a, b)
    hi = np.clip(pos, a, b)
    t_lo, t_hi = t[lo], t[hi]
    v_lo, v_hi = v[lo], v[hi]
    gt = grid_t[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(t_hi > t_lo, (gt - t_lo) / (t_hi - t_lo), 0.0)
    f = np.clip(f, 0.0, 1.0)
    out[sel] = v_lo + f * (v_hi - v_lo)
    dist[sel] = np.minimum(np.abs(gt - t_lo), np.abs(t_hi - gt))
    return out, dist


def _bin_rows(ts: np.ndarray, V: np.ndarray, n: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_bin_readings` of every column of ``V`` (time, gpu) at once: (gpu, step)."""
    g_n = V.shape[1]
    gi, t, v = _flat_readings(ts, V)
    k = np.clip(np.ceil(t / dt - 1e-9).astype(np.int64), 0, n - 1)
    pos = np.clip(t / dt - (k - 1), 0.0, 1.0)
    flat = gi * n + k
    cnt = np.bincount(flat, minlength=g_n * n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(flat, weights=v, minlength=g_n * n) / cnt
        fr = np.bincount(flat, weights=pos, minlength=g_n * n) / cnt
    fr = np.where(cnt > 0, fr, 0.0)
    return mean.reshape(g_n, n), fr.reshape(g_n, n)


def to_grid(
    ds: xr.Dataset,
    dt: float = 1.0,
    gap_s: float = 5.0,
    slowdown_c: float = 87.0,
    cut_gap_s: float = GRID_CUT_GAP_S,
    bridge_s: float = GRID_BRIDGE_S,
) -> Grid:
    """Resample a telemetry Dataset onto a regular grid (see :class:`Grid`); stretches with
    no reading longer than ``cut_gap_s`` are cut down to ``bridge_s`` (:data:`GRID_CUT_GAP_S`)."""
    ds = check_telemetry(ds)
    if not dt > 0:
        raise SpecError("dt", dt, "a positive grid step in seconds")
    if not cut_gap_s > bridge_s >= 0:
        raise SpecError("cut_gap_s", cut_gap_s, f"more than bridge_s ({bridge_s:g} s) >= 0")
    tns = ds["time"].values.astype("datetime64[ns]").astype(np.int64)
    t0 = int(tns.min())
    ts, cuts = _cut_gaps((tns - t0) / 1e9, dt, cut_gap_s, bridge_s)
    g_n = ds.sizes["gpu"]
    n = _grid_steps(ds, ts, dt, g_n, cuts)
    grid_t = np.arange(n) * dt
    power = np.full((g_n, n), np.nan)
    temp = np.full((g_n, n), np.nan)
    frac = np.zeros((g_n, n))
    has_mem = "temp_memory" in ds.data_vars and bool(np.isfinite(ds["temp_memory"].values).any())
    tm = np.full((g_n, n), np.nan) if has_mem else None
    fm = np.zeros((g_n, n)) if has_mem else None
    util = np.full((g_n, n), np.nan) if "utilization_gpu" in ds.data_vars else None
    gap = np.zeros((g_n, n), bool)
    throttled = np.zeros((g_n, n), bool)
    P = ds["power_average"].values
    T = ds["temp_gpu"].values
    # every GPU at once (no Python loop over GPUs): readings as flat (gpu, time) lists
    n_p = np.isfinite(P).sum(0)
    n_t = np.isfinite(T).sum(0)
    usable = (n_p >= 2) & (n_t >= 2)
    power_v, near = _interp_rows(ts, P, grid_t, usable)
    power[usable] = power_v[usable]
    gap[usable] = near[usable] > gap_s
    temp_v, frac_v = _bin_rows(ts, T, n, dt)
    temp[usable], frac[usable] = temp_v[usable], frac_v[usable]
    if has_mem:
        tm_v, fm_v = _bin_rows(ts, ds["temp_memory"].values, n, dt)
        tm[usable], fm[usable] = tm_v[usable], fm_v[usable]
    if util is not None:
        U = ds["utilization_gpu"].values
        ok_u = usable & (np.isfinite(U).sum(0) >= 2)
        util_v, _ = _interp_rows(ts, U, grid_t, ok_u)
        util[ok_u] = util_v[ok_u]
    bridge, k_next = cuts.bridge(grid_t, dt)
    if bridge.any():  # power held at the next stretch's first step; nothing compared there
        power[:, bridge] = power[:, k_next[bridge]]
        gap[:, bridge] = True
    throttled[:] = usable[:, None] & (temp >= slowdown_c)
    if "clocks_event_reasons" in ds.data_vars:
        r = ds["clocks_event_reasons"].values
        ri, gi = np.nonzero(np.isfinite(r))
        bits = r[ri, gi].astype(np.int64) & THERMAL_THROTTLE_BITS
        sel = (bits > 0) & usable[gi]
        kb = np.clip(np.ceil(ts[ri[sel]] / dt).astype(np.int64), 0, n - 1)
        throttled[gi[sel], kb] = True
    missing = [
        str(g) for g, row in zip(ds["gpu"].values, power, strict=True) if np.isnan(row).all()
    ]
    if len(missing) == g_n:
        raise SpecError(
            "--telemetry", "no GPU with 2+ power and temperature readings", "telemetry samples"
        )
    keep = np.array([not np.isnan(row).all() for row in power])
    hosts = [str(h) for h in ds["host"].values] if "host" in ds.coords else [""] * g_n
    grid = Grid(
        gpu=[str(g) for g in ds["gpu"].values],
        host=hosts,
        t0_ns=t0,
        dt=float(dt),
        power=power,
        temp=temp,
        frac=frac,
        temp_memory=tm,
        frac_memory=fm,
        utilization=util,
        gap=gap,
        throttled=throttled,
        identity=_identity(ds),
        time_ns=cuts.times(t0, grid_t, dt) if cuts.removed.size else None,
        cuts=cuts.real(t0),
    )
    return grid.select(np.flatnonzero(keep)) if not keep.all() else grid


@dataclasses.dataclass(frozen=True)
class _Cuts:
    """Intervals without readings cut out of the grid, on the cut time axis [s since t0]:
    ``after``/``before`` the last reading before and the first after each, ``removed`` the
    seconds taken out there (a multiple of ``dt``, so readings keep their place in the cell)."""

    after: np.ndarray
    before: np.ndarray
    removed: np.ndarray

    def _shift(self, grid_t: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Cuts whose last reading is before each step's cell, and those whose next is by its end."""
        ja = np.searchsorted(self.after, grid_t - dt, side="right")
        jb = np.searchsorted(self.before, grid_t, side="right")
        return ja, jb

    def bridge(self, grid_t: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Steps whose cell lies inside a cut interval, and the first step after that interval."""
        if not self.removed.size:
            return np.zeros(grid_t.size, bool), np.zeros(grid_t.size, np.int64)
        ja, jb = self._shift(grid_t, dt)
        k_after = np.minimum(np.ceil(self.before / dt - 1e-9).astype(np.int64), grid_t.size - 1)
        return ja > jb, k_after[np.maximum(ja - 1, 0)]

    def times(self, t0: int, grid_t: np.ndarray, dt: float) -> np.ndarray:
        """Each step's real time [ns]."""
        ja, _ = self._shift(grid_t, dt)
        shift = np.concatenate([[0.0], np.cumsum(self.removed)])[ja]
        return t0 + np.round((grid_t + shift) * 1e9).astype(np.int64)

    def real(self, t0: int) -> tuple[tuple[int, int], ...]:
        """(last reading before, first reading after) of each cut [ns since the epoch]."""
        shift = np.concatenate([[0.0], np.cumsum(self.removed)])
        return tuple(
            (int(t0 + round((a + shift[i]) * 1e9)), int(t0 + round((b + shift[i + 1]) * 1e9)))
            for i, (a, b) in enumerate(zip(self.after, self.before, strict=True))
        )


def _cut_gaps(
    ts: np.ndarray, dt: float, cut_gap_s: float, bridge_s: float
) -> tuple[np.ndarray, _Cuts]:
    """Times ``ts`` [s since the first] with every interval of more than ``cut_gap_s`` without
    a reading shortened to ``bridge_s`` (plus less than ``dt``), and what was cut."""
    order = np.argsort(ts, kind="stable")
    srt = ts[order]
    d = np.diff(srt)
    i = np.flatnonzero(d > cut_gap_s)
    removed = np.floor((d[i] - bridge_s) / dt) * dt
    step = np.zeros(srt.size)
    step[i + 1] = removed
    shift = np.cumsum(step)
    out = np.empty_like(ts)
    out[order] = srt - shift
    cuts = _Cuts(after=srt[i] - shift[i], before=srt[i + 1] - shift[i + 1], removed=removed)
    return out, cuts


def _grid_steps(ds: xr.Dataset, ts: np.ndarray, dt: float, g_n: int, cuts: _Cuts) -> int:
    """Steps of the grid, checked against the readings present before anything is allocated."""
    span = float(ts.max())
    steps = math.floor(span / dt) + 1
    readings = int(
        np.isfinite(ds["temp_gpu"].values).sum() + np.isfinite(ds["power_average"].values).sum()
    )
    limit = max(GRID_CELLS_PER_SAMPLE * readings, GRID_MIN_CELLS)
    if steps * g_n > limit:
        first = np.datetime_as_string(ds["time"].values.min(), unit="s")
        last = np.datetime_as_string(ds["time"].values.max(), unit="s")
        need = steps * g_n * GRID_BYTES_PER_CELL / 2**30
        cut = (
            f", {cuts.removed.size:,} gaps over {GRID_CUT_GAP_S:g} s left out"
            if cuts.removed.size
            else ""
        )
        raise SpecError(
            "--telemetry",
            f"{g_n} GPUs x {steps:,} steps of {dt:g} s ({first} to {last}, {span / 86400:,.1f} "
            f"days on the grid{cut}; ~{need:,.1f} GiB) for {readings:,} readings",
            f"readings in proportion to the time they cover (at most {limit:,} GPU-steps): "
            "choose --start/--end, or remove stray times from the file",
        )
    return steps


#: Per-GPU identity coordinates that a calibration carries into its file.
IDENTITY_COORDS: tuple[str, ...] = ("uuid", "index", "name", "location")


def _identity(ds: xr.Dataset) -> dict[str, list[str]]:
    """The identity coordinates of ``ds`` that it has (as strings, one per GPU)."""
    return {
        k: [str(v) for v in ds[k].values]
        for k in IDENTITY_COORDS
        if k in ds.coords and ds[k].dims == ("gpu",)
    }


def cuts_report(grid: Grid) -> list[dict]:
    """The intervals without readings left out of ``grid`` (for a command's JSON): ``after``
    the last reading before, ``before`` the first after (ISO times), ``seconds`` between."""
    return [
        {
            "after": str(np.datetime64(a, "ns")),
            "before": str(np.datetime64(b, "ns")),
            "seconds": round((b - a) / 1e9, 3),
        }
        for a, b in grid.cuts
    ]


def format_cuts(grid: Grid) -> str:
    """One line for people, "" without cuts."""
    if not grid.cuts:
        return ""
    total = sum(b - a for a, b in grid.cuts) / 1e9
    return (
        f"{len(grid.cuts):,} stretches without readings over {GRID_CUT_GAP_S:g} s ({total / 3600:,.1f} h "
        f"in all) left out of the grid, the model restarted after each at its next power "
        f"({GRID_BRIDGE_S:g} s bridge)"
    )


def fleet_hosts(grid: Grid) -> tuple[list[str], np.ndarray]:
    """Distinct hosts (loops) and each GPU's loop position."""
    names = sorted(set(grid.host))
    pos = {h: i for i, h in enumerate(names)}
    return names, np.array([pos[h] for h in grid.host], dtype=np.int64)
