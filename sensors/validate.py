"""Value and ordering checks applied to every batch before it is stored.

Rejected rows are quarantined with a reason from :data:`sensors.base.REASONS`; nothing is dropped
without a count.  Value checks run first, so a row rejected for its value never advances the
per-GPU clock; then, per GPU in arrival order, a row earlier than the latest accepted time is
``time_backwards`` and a row equal to it is ``duplicate_timestamp``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from sensors.base import REASONS, Batch, Clock, QuarantineRecord

_NO_TIME = np.iinfo(np.int64).min
#: Per-sample reason codes: positions in the per-sample tail of :data:`REASONS`.
_NAMES = REASONS[REASONS.index("nan") :]
_IMPLAUSIBLE = _NAMES.index("time_implausible")
_BACKWARDS = _NAMES.index("time_backwards")
_DUPLICATE = _NAMES.index("duplicate_timestamp")
#: 2007-01-01T00:00Z.  No GPU telemetry can be older than CUDA: its first public release (the
#: CUDA SDK 1.0 beta) came out in February 2007 and CUDA Toolkit 1.0 in June 2007 (NVIDIA, CUDA
#: Toolkit Archive, https://developer.nvidia.com/cuda-toolkit-archive); nvidia-smi's
#: ``--query-gpu`` and NVML came later still.  A time before it is a clock or parsing fault.
GPU_ERA_START_NS = 1_167_609_600 * 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Limits:
    """Physical plausibility limits.

    No GPU board draws more than a few kW (GB200 superchip ~2.7 kW), so 5 kW is absurd; GPU and
    HBM sensors report -40 to 150 degC at most (shutdown is ~90-105 degC).
    """

    power_max: float = 5000.0  # [W]
    temp_min: float = -40.0  # [degC]
    temp_max: float = 150.0  # [degC]
    #: earliest plausible sample time [ns since the epoch]: the start of the GPU era
    time_min_ns: int = GPU_ERA_START_NS
    #: how far past the reader's clock a sample may lie [s] (clock skew between hosts)
    future_skew_s: float = 86_400.0
    #: the reader's clock (Unix seconds); injectable for tests
    clock: Clock = time.time

    def time_bounds(self) -> tuple[int, int]:
        """(earliest, latest) plausible sample time [ns] as of now."""
        return self.time_min_ns, int((self.clock() + self.future_skew_s) * 1e9)

    def time_problem(self, t_ns: int) -> str:
        """Why ``t_ns`` is implausible (``""`` if it is not), with the bound it breaks."""
        lo, hi = self.time_bounds()
        if t_ns < lo:
            return f"{iso_time(t_ns)} is before {iso_time(lo)} (the GPU era: CUDA's first release)"
        if t_ns > hi:
            return (
                f"{iso_time(t_ns)} is more than {self.future_skew_s:g} s past this reader's "
                f"clock ({iso_time(int(self.clock() * 1e9))})"
            )
        return ""


def iso_time(t_ns: int) -> str:
    """``t_ns`` as ISO-8601 UTC (to the second), or the raw number where out of range."""
    import datetime as dt

    try:
        d = dt.datetime.fromtimestamp(t_ns // 1_000_000_000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"t_ns={t_ns}"
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_row(batch: Batch, i: int, keys: list[str]) -> str:
    vals = ", ".join(f"{k}={v[i]:g}" for k, v in batch.values.items() if np.isfinite(v[i]))
    return f"gpu={keys[batch.gpu[i]]} t_ns={batch.time_ns[i]} {vals}"[:240]


_BOUNDS: dict[tuple[tuple[str, ...], Limits], tuple[np.ndarray, np.ndarray]] = {}


def _bounds(names: tuple[str, ...], limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Per-field (lower, upper) plausibility bounds for :func:`_values_plausible`."""
    b = _BOUNDS.get((names, limits))
    if b is None:
        lim = {
            "power_average": (0.0, limits.power_max),
            "power_instant": (0.0, limits.power_max),
            "energy_total": (0.0, np.inf),
            "temp_gpu": (limits.temp_min, limits.temp_max),
            "temp_memory": (limits.temp_min, limits.temp_max),
            "utilization_gpu": (0.0, 100.0),
        }
        lo = np.array([lim.get(f, (-np.inf, np.inf))[0] for f in names])
        hi = np.array([lim.get(f, (-np.inf, np.inf))[1] for f in names])
        b = _BOUNDS[(names, limits)] = (lo, hi)
    return b


def stacked(batch: Batch) -> np.ndarray:
    """The batch's values as one ``(fields, rows)`` array, built once per batch (cached on it)."""
    m = getattr(batch, "_stacked", None)
    if m is None or m.shape != (len(batch.values), len(batch)):
        m = np.stack(list(batch.values.values())) if batch.values else np.zeros((0, len(batch)))
        batch._stacked = m  # type: ignore[attr-defined]
    return m


def _values_plausible(batch: Batch, limits: Limits) -> bool:
    """True when no row fails a value check (the usual case), in a handful of array operations.

    Equivalent to the per-reason checks in :func:`validate` finding nothing; when it returns
    False those checks run to tell the reasons apart.
    """
    if not batch.values:
        return False  # every row is "nan"
    m = stacked(batch)
    lo, hi = _bounds(tuple(batch.values), limits)
    if np.isnan(m.sum()):  # some values not available: NaN-aware extremes, all-NaN rows
        if np.isnan(m).all(axis=0).any():
            return False
        mn, mx = np.fmin.reduce(m, axis=1), np.fmax.reduce(m, axis=1)
    else:
        mn, mx = m.min(axis=1), m.max(axis=1)
    # NaN extremes (a field absent in every row) compare False: fine
    return not (bool((mn < lo).any()) or bool((mx > hi).any()))


def validate(
    batch: Batch, keys: list[str], last_time: dict[str, int], limits: Limits | None = None
) -> tuple[np.ndarray, list[QuarantineRecord]]:
    """Check ``batch``; return the mask of accepted rows and quarantine records for the others.

    ``keys`` maps batch GPU positions to store keys; ``last_time`` (key -> latest accepted
    time [ns]) is updated in place with the accepted rows.
    """
    limits = limits if limits is not None else Limits()
    n = len(batch)
    reason = np.full(n, -1, dtype=np.int64)
    names = _NAMES

    def mark(mask: np.ndarray, code: int) -> None:
        reason[(reason < 0) & mask] = code

    fast = n > 0 and _values_plausible(batch, limits)
    if n and not fast:
        finite_any = np.zeros(n, dtype=bool)
        for v in batch.values.values():
            finite_any |= ~np.isnan(v)
        mark(~finite_any, 0)
        with np.errstate(invalid="ignore"):
            for f in ("power_average", "power_instant"):
                v = batch.values.get(f)
                if v is not None:
                    mark(v < 0, 1)
                    mark(v > limits.power_max, 2)
            for f in ("temp_gpu", "temp_memory"):
                v = batch.values.get(f)
                if v is not None:
                    mark((v < limits.temp_min) | (v > limits.temp_max), 3)
            v = batch.values.get("utilization_gpu")
            if v is not None:
                mark((v < 0) | (v > 100), 4)
            v = batch.values.get("energy_total")
            if v is not None:
                mark(v < 0, 1)

    if n:
        # an implausible time never advances the per-GPU clock (a stray 2099 row would make
        # every later row of its GPU "time_backwards")
        lo, hi = limits.time_bounds()
        bad_t = (batch.time_ns < lo) | (batch.time_ns > hi)
        if bad_t.any():
            reason[(reason < 0) & bad_t] = _IMPLAUSIBLE
            fast = False
        ok = np.arange(n) if fast else np.flatnonzero(reason < 0)
        if ok.size:
            _check_order(batch, keys, last_time, ok, reason)

    accepted = reason < 0
    if n and reason.max() < 0:
        return accepted, []
    records = [
        QuarantineRecord(
            names[reason[i]],
            _detail(batch, i, keys, int(reason[i]), limits),
            int(batch.time_ns[i]),
            keys[batch.gpu[i]],
        )
        for i in np.flatnonzero(~accepted)
    ]
    return accepted, records


def _detail(batch: Batch, i: int, keys: list[str], code: int, limits: Limits) -> str:
    row = _fmt_row(batch, i, keys)
    if code == _IMPLAUSIBLE:
        return f"time {limits.time_problem(int(batch.time_ns[i]))}: {row}"[:320]
    return row


def _check_order(
    batch: Batch, keys: list[str], last_time: dict[str, int], ok: np.ndarray, reason: np.ndarray
) -> None:
    """Vectorised per-GPU running-maximum check (segments sorted by GPU, arrival order kept)."""
    g = batch.gpu[ok]
    t = batch.time_ns[ok]
    if t.size <= 256 and t[0] == t[-1] and np.all(t == t[0]):
        # live poll: one instant, each GPU once; only the stored clocks matter (fast path)
        ks = [keys[k] for k in g.tolist()]
        if len(set(ks)) == len(ks):
            t0 = int(t[0])
            for j, k in enumerate(ks):
                last = last_time.get(k)
                if last is not None and t0 <= last:
                    reason[ok[j]] = _BACKWARDS if t0 < last else _DUPLICATE
                else:
                    last_time[k] = t0
            return
    order = np.argsort(g, kind="stable")
    gs, ts = g[order], t[order]
    groups, gnum = np.unique(gs, return_inverse=True)
    last = np.array([last_time.get(keys[k], _NO_TIME) for k in groups], dtype=np.int64)
    # Ranks preserve order and equality; group offsets make one running max segment-wise.
    _, ranks = np.unique(np.concatenate([ts, last]), return_inverse=True)
    m = ts.size
    span = m + last.size + 1
    key = gnum * span + ranks[:m]
    key_last = np.arange(groups.size) * span + ranks[m:]
    prev = np.empty(m, dtype=np.int64)
    prev[0] = -1
    prev[1:] = np.maximum.accumulate(key)[:-1]
    start = np.ones(m, dtype=bool)
    start[1:] = gs[1:] != gs[:-1]
    prev[start] = -1
    prev = np.maximum(prev, key_last[gnum])
    has_last = last[gnum] != _NO_TIME
    back = (key < prev) & (has_last | ~start)
    dup = (key == prev) & (has_last | ~start)
    idx = ok[order]
    reason[idx[back]] = _BACKWARDS
    reason[idx[dup]] = _DUPLICATE
    good = ~(back | dup)
    if good.any():
        # latest accepted time per GPU
        gg, tt = gnum[good], ts[good]
        mx = np.full(groups.size, _NO_TIME, dtype=np.int64)
        np.maximum.at(mx, gg, tt)
        for j, k in enumerate(groups):
            if mx[j] != _NO_TIME:
                last_time[keys[k]] = int(mx[j])
