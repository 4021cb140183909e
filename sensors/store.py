"""Durable append-only telemetry store on SQLite in WAL mode.

Layout (see docs/sensors.md for why SQLite): each flush commits one transaction holding one
*chunk* per run of batches -- a dense block of ``T`` timestamps x ``G`` GPUs per field plus a
presence mask -- together with its quarantine records and per-GPU clocks.  Since schema version 2
each field block is stored losslessly compressed when its values lie on the field's resolution
grid (0.01 W, 1 mJ, 1 degC, 1 MHz, 1 %): integers offset to the block minimum, differenced along
time, split into byte planes and deflated (zlib); other blocks are raw float64 (see
:func:`_encode_block`).  Version-1 stores (raw float64 only) are read as they are and upgraded in
place by the first writer.  A crash (SIGKILL, power loss with ``synchronous=FULL``) loses at most the transactions
not yet committed; committed chunks are never rewritten except by :meth:`Store.compact`, which
replaces them inside one transaction.  Readers use separate connections and see a consistent
snapshot while the writer appends.

Writes that fail (disk full, read-only file system) keep the pending chunks in a bounded memory
buffer and raise nothing into the polling loop; when the buffer is full the oldest pending samples
are dropped *and counted* (``dropped``), and every failure is logged with the SQLite message.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import operator
import os
import sqlite3
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from sensors.base import (
    COLUMN_REASONS,
    FIELD_NAMES,
    FIELDS,
    Batch,
    FieldProvenance,
    GpuInfo,
    QuarantineRecord,
    pack_in_order,
)
from sensors.errors import InputError
from sensors.integrity import (
    StoreLocked,
    WriterLock,
    file_id,
    lock_path,
    meta_crc,
    meta_sane,
    safe_text,
)
from sensors.validate import Limits, stacked, validate

log = logging.getLogger("twin.sensors.store")

SCHEMA_VERSION = "2"
#: versions this code reads; "1" chunks hold raw float64 blocks (``codec`` NULL)
_READABLE_VERSIONS = ("1", "2")

#: Resolution grid per field (values x scale are integers): what NVML, nvidia-smi and dcgm report.
#: A block whose values are exactly ``integer / scale`` is stored as integers (lossless, checked).
_SCALE: dict[str, float] = {
    "power_average": 100.0,  # 0.01 W
    "power_instant": 100.0,
    "energy_total": 1000.0,  # 1 mJ
    "temp_gpu": 1.0,  # 1 degC
    "temp_memory": 1.0,
    "clock_sm": 1.0,  # 1 MHz
    "clock_memory": 1.0,
    "utilization_gpu": 1.0,  # 1 %
    "clocks_event_reasons": 1.0,
}
_INTS = (np.int8, np.int16, np.int32)
_UINTS = (np.uint8, np.uint16, np.uint32)
_DELTA_FIELDS = frozenset({"energy_total"})
_ZLIB_LEVEL = 6
_MMAP_BYTES = 1 << 40  # SQLite caps it at its compile-time SQLITE_MAX_MMAP_SIZE (2 GiB default)
_ROWLOOP_MIN_GPUS = 128
_NO_TIME = np.iinfo(np.int64).min
_READ_WORKERS = min(4, os.cpu_count() or 1)
_MAX_MERGE_SAMPLES = 1_000_000  # pending live polls are merged into chunks of at most this
#: SQLite's ``PRAGMA synchronous`` levels (the value goes into SQL, so only these)
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: order failures that may be rows stored by an earlier run (see :meth:`Store._relabel_stored`)
_ORDER_REASONS = frozenset({"time_backwards", "duplicate_timestamp"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gpus(
    gpu_id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, idx INTEGER, host TEXT, uuid TEXT,
    name TEXT, pci_bus_id TEXT, power_limit REAL, temp_slowdown REAL, temp_shutdown REAL,
    location TEXT, last_time_ns INTEGER);
CREATE TABLE IF NOT EXISTS provenance(
    field TEXT NOT NULL, source TEXT NOT NULL, origin TEXT NOT NULL, kind TEXT, unit TEXT,
    window_s REAL, PRIMARY KEY(field, source, origin));
CREATE TABLE IF NOT EXISTS chunks(
    chunk_id INTEGER PRIMARY KEY AUTOINCREMENT, t_min INTEGER NOT NULL, t_max INTEGER NOT NULL,
    n_samples INTEGER NOT NULL, n_times INTEGER NOT NULL, n_gpus INTEGER NOT NULL,
    fields TEXT NOT NULL, times BLOB NOT NULL, gpus BLOB NOT NULL, present BLOB, data BLOB NOT NULL,
    source TEXT, codec TEXT);
CREATE INDEX IF NOT EXISTS chunks_t ON chunks(t_max, t_min);
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY, reason TEXT NOT NULL, time_ns INTEGER, gpu TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says which path and what to do."""


class CorruptBlockWarning(UserWarning):
    """A stored block failed its checksum and was skipped; the message names it."""


class _DamagedChunk(Exception):
    """A chunk's metadata failed its checksum after the read's layout was built from it."""


class StoreBusy(StoreError):
    """Another process is writing this store; the message names its pid and host."""


def ensure_not_locked(path: str | os.PathLike) -> None:
    """Raise :class:`StoreBusy` now if another process holds ``path``'s writer lock.

    A quick check before slow start-up work (a daemon's source); :class:`Store` takes the lock
    itself.  Creates nothing: a store without a lock file has no writer.
    """
    path = Path(path)
    if lock_path(path).exists():
        try:
            WriterLock(path).release()
        except StoreLocked as exc:
            raise StoreBusy(str(exc)) from None
        except OSError:
            pass  # Store reports it with the store's own message


def check_synchronous(value: str, name: str = "synchronous") -> str:
    """``value`` as one of :data:`SYNCHRONOUS` (case-insensitive), else :class:`InputError`."""
    up = str(value).strip().upper()
    if up not in SYNCHRONOUS:
        raise InputError(name, value, "one of " + ", ".join(SYNCHRONOUS) + " (SQLite synchronous)")
    return up


@dataclasses.dataclass
class _Chunk:
    times: np.ndarray  # (T,) int64
    gpu_ids: np.ndarray  # (G,) int64, store gpu_id
    data: dict[str, np.ndarray]  # field -> (T, G)
    present: np.ndarray  # (T, G) bool
    source: str

    @property
    def n_samples(self) -> int:
        return int(self.present.sum())


def _dense(
    time_ns: np.ndarray,
    gpu_ids: np.ndarray,
    values: dict[str, np.ndarray],
    source: str,
    stacked: np.ndarray | None = None,
) -> _Chunk:
    n = time_ns.size
    if (
        n
        and time_ns[0] == time_ns[-1]
        and (n == 1 or bool((gpu_ids[1:] > gpu_ids[:-1]).all()))
        and bool((time_ns == time_ns[0]).all())
    ):
        # a live poll: one instant, each GPU once in id order -> one row, no scatter
        m = np.stack(list(values.values())) if stacked is None else stacked.copy()
        absent = np.isnan(m).all(axis=1).tolist()
        data = {f: m[k : k + 1] for k, f in enumerate(values) if not absent[k]}
        return _Chunk(time_ns[:1].copy(), gpu_ids.copy(), data, np.ones((1, n), bool), source)
    times, ti = np.unique(time_ns, return_inverse=True)
    gids, gi = np.unique(gpu_ids, return_inverse=True)
    present = np.zeros((times.size, gids.size), dtype=bool)
    present[ti, gi] = True
    data = {}
    for f, v in values.items():
        if np.isnan(v).all():
            continue
        a = np.full((times.size, gids.size), np.nan)
        a[ti, gi] = v
        data[f] = a
    return _Chunk(times, gids, data, present, source)


def _merge_pending(chunks: Sequence[_Chunk]) -> list[_Chunk]:
    """Join consecutive chunks with the same GPUs and fields whose times follow each other.

    A live daemon queues one single-instant chunk per poll; committing them as one ``T x G``
    block per flush keeps the chunk count (and per-chunk overhead on read) independent of the
    poll rate.  The samples are the same; only their grouping into rows changes.
    """
    out: list[_Chunk] = []
    run: list[_Chunk] = []
    acc = 0

    def close_run() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            names = list(run[0].data)
            out.append(
                _Chunk(
                    np.concatenate([c.times for c in run]),
                    run[0].gpu_ids,
                    {f: np.concatenate([c.data[f] for c in run]) for f in names},
                    np.concatenate([c.present for c in run]),
                    run[-1].source,
                )
            )

    for c in chunks:
        if run:
            last = run[-1]
            if (
                acc + c.present.size <= _MAX_MERGE_SAMPLES
                and c.times[0] > last.times[-1]
                and c.source == last.source
                and c.data.keys() == last.data.keys()
                and np.array_equal(c.gpu_ids, last.gpu_ids)
            ):
                run.append(c)
                acc += c.present.size
                continue
            close_run()
        run, acc = [c], c.present.size
    close_run()
    return out


def _encode_block(field: str, a: np.ndarray) -> tuple[list, bytes]:
    """One field's ``(T, G)`` float64 block -> (codec entry, payload).

    Lossless.  Values on the field's grid (``q / scale`` reproduces every value bit for bit,
    checked here) become integers ``q - lo`` (``lo`` the block minimum) in the smallest unsigned
    type that holds the block's range (kind ``qz``; counters, ``_DELTA_FIELDS``: first row as
    int32, later rows as differences along time in the smallest signed type, kind ``qdz``),
    split into byte planes and deflated (zlib, ``_ZLIB_LEVEL``); NaN cells ("not available")
    are a bitmap.  Quantized sensor readings shrink to a few bits each (about one byte for
    noisy power); decoding is one inflate and one or two array passes.  Anything else (off-grid, infinite, huge range, all NaN)
    is kept as raw float64.
    """
    scale = _SCALE.get(field)
    if scale is not None and a.size:
        with np.errstate(invalid="ignore", over="ignore"):
            q = np.round(a * scale)
            nan = np.isnan(a)
            has_nan = bool(nan.any())
            if has_nan and nan.all():
                lo = hi = np.nan  # nothing to quantize: raw
            elif has_nan:
                lo, hi = np.nanmin(q), np.nanmax(q)
            else:
                lo, hi = q.min(), q.max()
            if (
                np.isfinite(lo)
                and np.isfinite(hi)
                and hi - lo < 2**31 - 1
                and abs(lo) < 2**52
                and np.array_equal(q / scale, a, equal_nan=True)
            ):
                q -= lo
                if has_nan:
                    q[nan] = 0.0
                if field in _DELTA_FIELDS:  # counters: differences along time
                    kind, u = "qdz", q.astype(np.int32)
                    d = u[1:] - u[:-1]
                    big = int(max(-int(d.min()), int(d.max()))) if d.size else 0
                    dt = next(t for t in _INTS if big <= np.iinfo(t).max)
                    head, d = u[0].tobytes(), d.astype(dt)
                else:  # gauges: the offset values themselves (no prefix sum to undo)
                    dt = next(t for t in _UINTS if hi - lo <= np.iinfo(t).max)
                    kind, head, d = "qz", b"", q.astype(dt)
                size = np.dtype(dt).itemsize
                planes = d.view(np.uint8).reshape(-1, size).T.tobytes() if size > 1 else d.tobytes()
                payload = zlib.compress(head + planes, _ZLIB_LEVEL)
                n_data = len(payload)
                if has_nan:
                    payload += zlib.compress(np.packbits(nan.ravel()).tobytes(), _ZLIB_LEVEL)
                spec = [field, kind, scale, int(lo), np.dtype(dt).str, len(payload), n_data]
                return spec, payload
    payload = np.ascontiguousarray(a, dtype="<f8").tobytes()
    return [field, "f8", 1.0, 0, "<f8", len(payload), 0], payload


def _decode_block(
    spec: Sequence, payload: bytes | memoryview, shape: tuple[int, int], out: np.ndarray | None
) -> np.ndarray:
    """Inverse of :func:`_encode_block`, written into ``out`` (float64, ``shape``) if given."""
    _, kind, scale, lo, dts, n_all, n_data = spec[:7]  # spec[7]: CRC32 (checked by callers)
    if kind == "f8":
        a = np.frombuffer(payload, dtype="<f8").reshape(shape)
        if out is None:
            return a
        out[...] = a
        return out
    dt = np.dtype(dts)
    nt, ng = shape
    raw = zlib.decompress(payload[:n_data])
    if out is None:
        out = np.empty(shape)
    if kind == "qz":
        count = nt * ng
        if dt.itemsize > 1:
            planes = np.frombuffer(raw, np.uint8).reshape(dt.itemsize, count)
            u = np.empty(count, dt)
            u8 = u.view(np.uint8).reshape(count, dt.itemsize)
            for k in range(dt.itemsize):
                u8[:, k] = planes[k]
        else:
            u = np.frombuffer(raw, dt)
        np.add(u.reshape(shape), float(lo), out=out)
    else:
        _undo_delta(raw, dt, shape, float(lo), out)
    if scale != 1.0:  # (u + lo) / scale in float64 is exactly the stored value
        np.divide(out, scale, out=out)
    if n_data < n_all:
        bits = zlib.decompress(payload[n_data:n_all])
        nan = np.unpackbits(np.frombuffer(bits, np.uint8), count=nt * ng).reshape(shape)
        out[nan.astype(bool)] = np.nan
    return out


def _undo_delta(raw: bytes, dt: np.dtype, shape: tuple[int, int], lo: float, out: np.ndarray):
    nt, ng = shape
    acc = np.empty(shape, np.int32)
    acc[0] = np.frombuffer(raw, np.int32, count=ng)
    count = (nt - 1) * ng
    if dt.itemsize > 1:
        planes = np.frombuffer(raw, np.uint8, offset=4 * ng).reshape(dt.itemsize, count)
        d = np.empty(count, dt)
        d8 = d.view(np.uint8).reshape(count, dt.itemsize)
        for k in range(dt.itemsize):
            d8[:, k] = planes[k]
    else:
        d = np.frombuffer(raw, dt, offset=4 * ng)
    d = d.reshape(nt - 1, ng)
    if ng >= _ROWLOOP_MIN_GPUS:  # undo the differences row by row (wide rows: fastest)
        for i in range(1, nt):
            np.add(acc[i - 1], d[i - 1], out=acc[i])
    elif nt > 1:
        np.cumsum(d, axis=0, dtype=np.int32, out=acc[1:])
        acc[1:] += acc[0]
    np.add(acc, lo, out=out)


def _split_blocks(
    fields: str, data_b: bytes, codec: str | None, nt: int, ng: int
) -> dict[str, tuple[Sequence, memoryview]]:
    """A chunk row's blocks: field -> (codec entry, payload); version-1 rows are raw float64."""
    names = fields.split(",") if fields else []
    mv = memoryview(data_b)
    if codec is None:
        size = nt * ng * 8
        return {
            f: ([f, "f8", 1.0, 0, "<f8", size, 0], mv[k * size : (k + 1) * size])
            for k, f in enumerate(names)
        }
    specs = json.loads(codec)["f"]
    out = {}
    pos = 0
    for spec in specs:
        out[spec[0]] = (spec, mv[pos : pos + spec[5]])
        pos += spec[5]
    return out


def _checked_blocks(
    crc_args: tuple, data_b: bytes, codec: str | None
) -> tuple[dict[str, tuple[Sequence, memoryview]], str | None]:
    """A chunk's blocks (:func:`_split_blocks`) after its metadata checksum, or why not.

    ``crc_args`` are :func:`sensors.integrity.meta_crc`'s arguments from the row.  Chunks
    written before checksums existed have none and pass.
    """
    nt, ng, fields = crc_args[3], crc_args[4], crc_args[5]
    try:
        if codec is not None:
            m = json.loads(codec).get("m")
            if m is not None and meta_crc(*crc_args) != m:
                return {}, "chunk metadata checksum mismatch"
        return _split_blocks(fields, data_b, codec, nt, ng), None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return {}, f"chunk codec entry unreadable ({type(exc).__name__}: {exc})"


def _decode_checked(
    spec: Sequence, payload: bytes | memoryview, shape: tuple[int, int], out: np.ndarray | None
) -> np.ndarray | str:
    """:func:`_decode_block` after the block's CRC32 (``spec[7]``); a damaged block gives the
    reason as a string (and ``out``, if given, NaN).  Blocks without a CRC are only decoded."""
    if len(spec) > 7 and zlib.crc32(payload) != spec[7]:
        why = "block checksum mismatch"
    else:
        try:
            return _decode_block(spec, payload, shape, out)
        except (zlib.error, ValueError, TypeError) as exc:
            why = f"block undecodable ({type(exc).__name__}: {exc})"
    if out is not None:
        out[...] = np.nan
    return why


def _iso(t: object) -> str | None:
    if not isinstance(t, int):
        return None
    try:
        return pd.Timestamp(t, unit="ns", tz="UTC").isoformat()
    except (ValueError, OverflowError):
        return str(t)


def describe_corrupt(path: Path, b: dict) -> str:
    """One line naming a damaged block of the store at ``path`` (a report from a read/check)."""
    gpus = ", ".join(b["gpus"][:8]) + (", ..." if len(b["gpus"]) > 8 else "")
    return (
        f"{path}: skipped a corrupt block ({b['problem']}): chunk {b['chunk']}, "
        f"field {', '.join(b['fields']) or '?'}, GPU {gpus or '?'}, "
        f"{b['first']} .. {b['last']}, {b['samples']} samples"
    )


def _chunk_meta(
    times_b: bytes, gpus_b: bytes, pres_b: bytes | None, nt: int, ng: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    times = np.frombuffer(times_b, dtype=np.int64)
    gids = np.frombuffer(gpus_b, dtype=np.int64)
    present = (
        None
        if pres_b is None
        else np.unpackbits(np.frombuffer(pres_b, np.uint8), count=nt * ng)
        .reshape(nt, ng)
        .astype(bool)
    )
    return times, gids, present


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"telemetry store {path} does not exist")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    else:
        con = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    con.execute("PRAGMA busy_timeout=30000")
    if readonly:  # memory-mapped reads: no read() call per 4 KiB overflow page, kernel readahead
        con.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
    return con


class Store:
    """Open (creating if needed) the telemetry store at ``path``.

    ``readonly=True`` opens a reader that may run while a daemon writes.  ``max_buffer_samples``
    bounds the memory used while writes fail; ``synchronous`` is SQLite's durability level
    (``"FULL"``: a committed flush survives power loss; ``"NORMAL"``: survives process crashes).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        readonly: bool = False,
        limits: Limits | None = None,
        max_buffer_samples: int = 1_000_000,
        synchronous: str = "FULL",
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.limits = limits if limits is not None else Limits()
        self.max_buffer_samples = int(max_buffer_samples)
        self._pending: collections.deque[_Chunk] = collections.deque()
        self._pending_q: list[QuarantineRecord] = []
        self._pending_samples = 0
        self._pending_rows = 0
        self._pending_dropped = 0
        self._gpu_ids: dict[str, int] = {}
        self._gpu_dirty: set[str] = set()
        self._last_time: dict[str, int] = {}
        self._prov_pending: list[tuple] = []
        self._last_gpus: list[GpuInfo] = []
        self._last_keys: list[str] = []
        self._last_gids = np.zeros(0, np.int64)
        self._codec_col = "codec"
        self.stats = collections.Counter()  # this process: samples, quarantined:<reason>, ...
        self.last_error: str | None = None
        self.lost: str | None = None  # why the file can no longer be written (deleted, replaced)
        self.corrupt: list[dict] = []  # corrupt blocks met by this object's reads
        self._lock: WriterLock | None = None
        if not readonly:
            synchronous = check_synchronous(synchronous)
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock = WriterLock(self.path)
            self._con = _connect(self.path, readonly)
            if not readonly:
                self._con.execute("PRAGMA auto_vacuum=INCREMENTAL")
                mode = self._con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"telemetry store {self.path}: SQLite refused WAL mode")
                self._con.execute(f"PRAGMA synchronous={synchronous}")
                self._con.executescript(_SCHEMA)
                self._con.execute(
                    "INSERT OR IGNORE INTO meta VALUES('schema_version', ?)", (SCHEMA_VERSION,)
                )
                self._con.execute(
                    "INSERT OR IGNORE INTO meta VALUES('created', ?)",
                    (pd.Timestamp.now(tz="UTC").isoformat(),),
                )
            self._check_schema()
            for gid, key, last in self._con.execute("SELECT gpu_id, key, last_time_ns FROM gpus"):
                self._gpu_ids[key] = gid
                if last is not None:
                    self._last_time[key] = int(last)
            self._opened_time = dict(self._last_time)  # clocks of what earlier runs stored
            self._file_id = file_id(self.path)
        except StoreLocked as exc:
            raise StoreBusy(str(exc)) from None
        except StoreError:
            self._release_lock()
            raise
        except (sqlite3.Error, OSError) as exc:
            self._release_lock()
            raise StoreError(
                f"cannot open telemetry store {self.path}: {exc} (check that the directory "
                "exists and is writable, the disk has space and the file is a twin store)"
            ) from exc

    def _check_schema(self) -> None:
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a twin telemetry store: {exc}") from exc
        version = row and row[0]
        if version not in _READABLE_VERSIONS:
            raise StoreError(
                f"{self.path}: telemetry store schema version {version!r}; this twin reads "
                f"versions {', '.join(_READABLE_VERSIONS)} (a newer twin wrote it? upgrade twin)"
            )
        if version == "1" and not self.readonly:
            # v1 -> v2: chunks gain a codec column (NULL = v1 raw float64 blocks, still read)
            self._con.execute("BEGIN IMMEDIATE")
            cols = [r[1] for r in self._con.execute("PRAGMA table_info(chunks)")]
            if "codec" not in cols:
                self._con.execute("ALTER TABLE chunks ADD COLUMN codec TEXT")
            self._con.execute(
                "UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION,)
            )
            self._con.execute("COMMIT")
            version = SCHEMA_VERSION
        self._codec_col = "codec" if version != "1" else "NULL"

    # ------------------------------------------------------------------ writing
    def close(self) -> None:
        if not self.readonly:
            try:  # fold the WAL into the main file so readers start fast
                self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        with contextlib.suppress(sqlite3.Error):
            self._con.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.readonly:
            self.flush()
        self.close()

    def register_gpus(self, gpus: Sequence[GpuInfo]) -> list[int]:
        """Make sure every GPU has an id; identity columns are refreshed at the next flush."""
        ids = []
        keys = [safe_text(g.key) for g in gpus]  # the stored key: names may not be UTF-8
        for g, key in zip(gpus, keys, strict=True):
            if key not in self._gpu_ids:
                cur = self._con.execute(
                    "INSERT OR IGNORE INTO gpus(key, idx, host) VALUES(?,?,?)",
                    (key, g.index, safe_text(g.host)),
                )
                if cur.lastrowid and cur.rowcount:
                    self._gpu_ids[key] = cur.lastrowid
                else:
                    self._gpu_ids[key] = self._con.execute(
                        "SELECT gpu_id FROM gpus WHERE key=?", (key,)
                    ).fetchone()[0]
            ids.append(self._gpu_ids[key])
        self._gpu_info = dict(zip(keys, gpus, strict=True)) | getattr(self, "_gpu_info", {})
        self._gpu_dirty.update(keys)
        return ids

    def record_provenance(self, source: str, prov: dict[str, FieldProvenance]) -> None:
        self._prov_pending.extend(
            (f, safe_text(source), safe_text(p.origin), p.kind, p.unit, p.window_s)
            for f, p in prov.items()
        )

    def append(self, batch: Batch, gpus: Sequence[GpuInfo], source: str = "") -> int:
        """Validate ``batch`` (positions index ``gpus``) and queue it; returns accepted samples."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        cached = self._last_gpus
        if len(gpus) == len(cached) and all(map(operator.is_, gpus, cached)):
            keys, gids = self._last_keys, self._last_gids  # same GpuInfo objects as last time
        else:
            keys = [safe_text(g.key) for g in gpus]
            gids = np.asarray(self.register_gpus(gpus), dtype=np.int64)
            self._last_gpus, self._last_keys, self._last_gids = list(gpus), keys, gids
        accepted, records = validate(batch, keys, self._last_time, self.limits)
        if records and self._opened_time:
            records = self._relabel_stored(records)
        self.last_accepted = accepted
        q = list(batch.quarantine) + records
        self._pending_q.extend(q)
        for r in q:
            self.stats[_counter(r.reason)] += 1
        n_ok = int(accepted.sum())
        if n_ok:
            if n_ok == accepted.size:
                t, g, vals = batch.time_ns, batch.gpu, batch.values
                m = stacked(batch)
            else:
                t, g = batch.time_ns[accepted], batch.gpu[accepted]
                vals = {f: v[accepted] for f, v in batch.values.items()}
                m = None
            chunk = _dense(t, gids[g], vals, source, m)
            self._pending.append(chunk)
            self._pending_samples += chunk.n_samples
            # rows whose (time, gpu) collapse are impossible: duplicates were quarantined
        self._pending_rows += int(batch.rows or 0)
        self.stats["samples"] += n_ok
        self.stats["rows"] += int(batch.rows or 0)
        self._enforce_buffer()
        return n_ok

    def _relabel_stored(self, records: list[QuarantineRecord]) -> list[QuarantineRecord]:
        """Order failures that are samples an earlier run stored become ``already_stored``.

        Re-ingesting a file repeats rows the store holds; they are not time running backwards.
        Only rows at or before a GPU's clock as it was when this store was opened can be such
        rows (later ones were checked against this run's own samples); each is looked up in the
        committed chunks.
        """
        cand = [
            i
            for i, r in enumerate(records)
            if r.reason in _ORDER_REASONS
            and r.time_ns is not None
            and r.time_ns <= self._opened_time.get(r.gpu, _NO_TIME)
        ]
        if not cand:
            return records
        gids = np.array([self._gpu_ids.get(records[i].gpu, -1) for i in cand], np.int64)
        times = np.array([records[i].time_ns for i in cand], np.int64)
        hit = self._stored_cells(gids, times)
        out = list(records)
        for i, h in zip(cand, hit.tolist(), strict=True):
            if h:
                r = records[i]
                out[i] = dataclasses.replace(r, reason="already_stored")
        return out

    def _stored_cells(self, gids: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Per (gid, time) pair: is there a committed sample of that GPU at that time?"""
        hit = np.zeros(times.size, dtype=bool)
        where, args = self._chunk_where(int(times.min()), int(times.max()))
        for times_b, gpus_b, pres_b, nt, ng in self._con.execute(
            "SELECT times, gpus, present, n_times, n_gpus FROM chunks" + where, args
        ):
            try:
                ct, cg, present = _chunk_meta(times_b, gpus_b, pres_b, nt, ng)
            except ValueError:  # damaged metadata: not evidence of anything
                continue
            ti = np.minimum(np.searchsorted(ct, times), ct.size - 1)
            order = np.argsort(cg)
            gj = np.minimum(np.searchsorted(cg[order], gids), cg.size - 1)
            gi = order[gj]
            ok = (ct[ti] == times) & (cg[gi] == gids)
            if present is not None:
                ok &= present[ti, gi]
            hit |= ok
        return hit

    def _enforce_buffer(self) -> None:
        while self._pending_samples > self.max_buffer_samples and len(self._pending) > 1:
            old = self._pending.popleft()
            self._pending_samples -= old.n_samples
            self._pending_dropped += old.n_samples
            self.stats["dropped"] += old.n_samples
            log.error(
                "store buffer full (%d samples): dropped %d oldest samples; fix the store at %s",
                self.max_buffer_samples,
                old.n_samples,
                self.path,
            )

    @property
    def pending_samples(self) -> int:
        return self._pending_samples

    def flush(self) -> int:
        """Commit everything pending in one transaction; returns samples committed (0 on error).

        On failure the data stays buffered (bounded), ``last_error`` holds the reason and the
        error is logged; the next flush retries.
        """
        if self.readonly:
            return 0
        if not (self._pending or self._pending_q or self._gpu_dirty or self._prov_pending):
            return 0
        if self.lost or self._file_moved():
            return 0
        pending = list(self._pending)
        n = sum(c.n_samples for c in pending)
        qcounts = collections.Counter(r.reason for r in self._pending_q)
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO chunks(t_min,t_max,n_samples,n_times,n_gpus,fields,times,gpus,"
                "present,data,source,codec) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                [_chunk_row(c) for c in _merge_pending(pending)],
            )
            con.executemany(
                "INSERT INTO quarantine(reason,time_ns,gpu,detail) VALUES(?,?,?,?)",
                [
                    (r.reason, r.time_ns, safe_text(r.gpu), safe_text(r.detail))
                    for r in self._pending_q
                ],
            )
            inc = [(_counter(k), v) for k, v in qcounts.items()]
            inc += [("samples", n), ("rows", self._pending_rows)]
            if self._pending_dropped:
                inc.append(("dropped", self._pending_dropped))
            con.executemany(
                "INSERT INTO counters(name,value) VALUES(?,?) "
                "ON CONFLICT(name) DO UPDATE SET value=value+excluded.value",
                inc,
            )
            info = getattr(self, "_gpu_info", {})
            con.executemany(
                "UPDATE gpus SET idx=?,host=?,uuid=?,name=?,pci_bus_id=?,power_limit=?,"
                "temp_slowdown=?,temp_shutdown=?,location=?,last_time_ns=? WHERE key=?",
                [
                    (
                        g.index,
                        safe_text(g.host),
                        safe_text(g.uuid),
                        safe_text(g.name),
                        safe_text(g.pci_bus_id),
                        _nan_none(g.power_limit),
                        _nan_none(g.temp_slowdown),
                        _nan_none(g.temp_shutdown),
                        safe_text(g.location),
                        self._last_time.get(k),
                        k,
                    )
                    for k in self._gpu_dirty | {k for k in self._last_time if k in info}
                    if (g := info.get(k)) is not None
                ],
            )
            con.executemany(
                "INSERT OR IGNORE INTO provenance VALUES(?,?,?,?,?,?)", self._prov_pending
            )
            con.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - any failure: roll back, keep the data, count
            with contextlib.suppress(sqlite3.Error):
                if con.in_transaction:
                    con.execute("ROLLBACK")
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.stats["write_errors"] += 1
            log.error(
                "cannot write telemetry store %s: %s; %d samples kept in memory (limit %d)",
                self.path,
                self.last_error,
                self._pending_samples,
                self.max_buffer_samples,
            )
            return 0
        if self._file_moved():  # committed into a file no longer at our path: not written
            self.stats["committed_into_lost_file"] += n
            return 0
        for _ in pending:
            self._pending.popleft()
        self._pending_samples -= n
        self._pending_q.clear()
        self._pending_rows = 0
        self._pending_dropped = 0
        self._gpu_dirty.clear()
        self._prov_pending.clear()
        self.last_error = None
        self.stats["committed"] += n
        return n

    def _file_moved(self) -> bool:
        """True (and ``lost`` set, logged) when the store's path no longer holds our file.

        SQLite keeps writing into a deleted or replaced file's inode without an error; what it
        commits there is lost, so a writer checks (device, inode) around every flush.
        """
        now = file_id(self.path)
        if now == self._file_id:
            return False
        what = "was deleted" if now is None else "was replaced by another file"
        self.lost = (
            f"telemetry store {self.path} {what} while this process was writing it; "
            "nothing more is written (restart the writer to start a new store)"
        )
        self.last_error = self.lost
        self.stats["write_errors"] += 1
        log.error("%s; %d samples not written", self.lost, self._pending_samples)
        return True

    # ------------------------------------------------------------------ reading
    def counters(self) -> dict[str, int]:
        return dict(self._con.execute("SELECT name, value FROM counters"))

    def info(self) -> dict[str, object]:
        """Summary: samples, gpus, first, last (ISO-8601 UTC), quarantined {reason: count}, ..."""
        c = self.counters()
        row = self._con.execute(
            "SELECT COALESCE(SUM(n_samples),0), MIN(t_min), MAX(t_max), COUNT(*) FROM chunks"
        ).fetchone()
        gpus = self._con.execute(
            "SELECT COUNT(*) FROM gpus WHERE last_time_ns IS NOT NULL"
        ).fetchone()[0]

        def iso(t: int | None) -> str | None:
            return None if t is None else pd.Timestamp(t, unit="ns", tz="UTC").isoformat()

        return {
            "store": str(self.path),
            "samples": int(row[0]),
            "gpus": int(gpus),
            "first": iso(row[1]),
            "last": iso(row[2]),
            "quarantined": {
                k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("quarantined:")
            },
            "ignored_columns": {
                k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("ignored:")
            },
            "dropped": int(c.get("dropped", 0)),
            "rows": int(c.get("rows", 0)),
            "chunks": int(row[3]),
        }

    def quarantine_records(self, reason: str | None = None) -> list[tuple]:
        sql = "SELECT reason, time_ns, gpu, detail FROM quarantine"
        if reason:
            return list(self._con.execute(sql + " WHERE reason=? ORDER BY id", (reason,)))
        return list(self._con.execute(sql + " ORDER BY id"))

    def gpus(self) -> list[GpuInfo]:
        out = []
        for r in self._con.execute(
            "SELECT key, idx, host, uuid, name, pci_bus_id, power_limit, temp_slowdown, "
            "temp_shutdown, location FROM gpus ORDER BY gpu_id"
        ):
            out.append(
                GpuInfo(
                    key=r[0],
                    index=int(r[1] if r[1] is not None else -1),
                    host=r[2] or "",
                    uuid=r[3] or "",
                    name=r[4] or "",
                    pci_bus_id=r[5] or "",
                    power_limit=_none_nan(r[6]),
                    temp_slowdown=_none_nan(r[7]),
                    temp_shutdown=_none_nan(r[8]),
                    location=r[9] or "",
                )
            )
        return out

    def sample_times(self) -> dict[str, np.ndarray]:
        """Per GPU key, the sample times [ns] in commit order (for integrity checks)."""
        keys = dict(self._con.execute("SELECT gpu_id, key FROM gpus"))
        parts: dict[str, list[np.ndarray]] = collections.defaultdict(list)
        for times, gids, _, present in self._iter_chunks(None, None):
            for j, gid in enumerate(gids):
                col = times if present is None else times[present[:, j]]
                parts[keys[int(gid)]].append(col)
        return {k: np.concatenate(v) for k, v in parts.items()}

    def provenance(self) -> dict[str, list[FieldProvenance]]:
        out: dict[str, list[FieldProvenance]] = collections.defaultdict(list)
        for f, _src, origin, kind, unit, window in self._con.execute(
            "SELECT * FROM provenance ORDER BY field, source"
        ):
            out[f].append(FieldProvenance(origin, kind, unit, window))
        return dict(out)

    def _chunk_where(self, start_ns: int | None, end_ns: int | None) -> tuple[str, list[int]]:
        cond, args = [], []
        if start_ns is not None:
            cond.append("t_max >= ?")
            args.append(start_ns)
        if end_ns is not None:
            cond.append("t_min <= ?")
            args.append(end_ns)
        where = (" WHERE " + " AND ".join(cond)) if cond else ""
        return where + " ORDER BY chunk_id", args

    def _iter_chunks(
        self, start_ns: int | None, end_ns: int | None
    ) -> Iterator[
        tuple[np.ndarray, np.ndarray, dict[str, tuple[Sequence, memoryview]], np.ndarray | None]
    ]:
        """Per chunk: times, gpu ids, field -> encoded block (see :func:`_decode_checked`), mask.

        Chunks whose metadata fails its checks are skipped with a :class:`CorruptBlockWarning`.
        """
        for row, data_b, codec in self._chunk_rows(start_ns, end_ns):
            blocks, why = self._verify_meta(row, data_b, codec)
            if why:
                self._report_skipped(self._corrupt_report(row, None, why))
                continue
            _, times_b, gpus_b, pres_b, _, nt, ng = row[:7]
            times, gids, present = _chunk_meta(times_b, gpus_b, pres_b, nt, ng)
            yield times, gids, blocks, present

    def _chunk_rows(self, start_ns: int | None, end_ns: int | None) -> Iterator[tuple]:
        """Whole chunk rows: (pass-1 columns as :meth:`_read_chunk_meta` reads them, data, codec)."""
        where, args = self._chunk_where(start_ns, end_ns)
        sql = (
            "SELECT chunk_id, times, gpus, present, fields, n_times, n_gpus, t_min, t_max, "
            f"n_samples, data, {self._codec_col} FROM chunks" + where
        )
        for r in self._con.execute(sql, args):
            yield r[:10], r[10], r[11]

    def _verify_meta(
        self, row: tuple, data_b: bytes, codec: str | None
    ) -> tuple[dict[str, tuple[Sequence, memoryview]], str | None]:
        """A whole chunk row's blocks after its structural and checksum checks, or why not."""
        _, times_b, gpus_b, pres_b, fields, nt, ng, t_min, t_max, n_samples = row
        if not meta_sane(times_b, gpus_b, pres_b, nt, ng, self._known_gpus()):
            return {}, "chunk metadata damaged"
        crc_args = (t_min, t_max, n_samples, nt, ng, fields, times_b, gpus_b, pres_b)
        return _checked_blocks(crc_args, data_b, codec)

    def _known_gpus(self) -> np.ndarray:
        ids = [r[0] for r in self._con.execute("SELECT gpu_id FROM gpus")]
        known = np.zeros(max(ids, default=0) + 1, dtype=bool)
        known[ids] = True
        return known

    def _report_skipped(self, b: dict) -> None:
        self.corrupt.append(b)
        self.stats["corrupt_blocks"] += 1
        warnings.warn(CorruptBlockWarning(describe_corrupt(self.path, b)), stacklevel=3)

    def check(self) -> dict[str, object]:
        """Verify every block of the store: SQLite's ``quick_check``, then each chunk's metadata
        and each block's checksum (blocks written before checksums: decoded instead).

        Returns ``{"chunks", "blocks", "unchecksummed", "sqlite", "bad": [report, ...]}``;
        ``bad`` names each damaged block (chunk, fields, GPUs, time range, problem).
        """
        res: dict = {"chunks": 0, "blocks": 0, "unchecksummed": 0, "sqlite": "ok", "bad": []}
        try:
            res["sqlite"] = ", ".join(r[0] for r in self._con.execute("PRAGMA quick_check"))
            self._check_chunks(res)
        except sqlite3.DatabaseError as exc:  # pages SQLite itself cannot read
            res["sqlite"] = f"error: {exc}"
        return res

    def _check_chunks(self, res: dict) -> None:
        for row, data_b, codec in self._chunk_rows(None, None):
            res["chunks"] += 1
            blocks, why = self._verify_meta(row, data_b, codec)
            if why:
                res["bad"].append(self._corrupt_report(row, None, why))
                continue
            nt, ng = row[5], row[6]
            for f, (spec, payload) in blocks.items():
                res["blocks"] += 1
                res["unchecksummed"] += len(spec) <= 7
                if len(spec) > 7:  # a CRC32 decides; no need to inflate
                    ok = zlib.crc32(payload) == spec[7]
                    problem = "block checksum mismatch"
                else:
                    problem = _decode_checked(spec, payload, (nt, ng), None)
                    ok = not isinstance(problem, str)
                if not ok:
                    res["bad"].append(self._corrupt_report(row, f, problem))

    def read(
        self,
        start: object = None,
        end: object = None,
        fields: Sequence[str] | None = None,
    ) -> xr.Dataset:
        """Samples in ``[start, end]`` as a Dataset with dims ``time`` and ``gpu``.

        GPU identity (uuid, index, host, name, pci_bus_id, power_limit, location) are coordinates
        along ``gpu``; each variable has ``units`` (pint-xarray: ``ds.pint.quantify()``) and a
        ``provenance`` attribute.  Cells with no sample are NaN.
        """
        start_ns = None if start is None else pd.Timestamp(start).value
        end_ns = None if end is None else pd.Timestamp(end).value
        want = list(fields) if fields is not None else list(FIELD_NAMES)
        con = self._con
        own = not con.in_transaction
        if own:  # one snapshot for the two passes below, even while a daemon appends
            con.execute("BEGIN")
        try:
            return self._read(start_ns, end_ns, want)
        finally:
            if own:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("COMMIT")

    def _read(self, start_ns: int | None, end_ns: int | None, want: list[str]) -> xr.Dataset:
        # pass 1: chunk metadata (small) -> output layout; pass 2: stream the blobs, decode
        # into place on worker threads (zlib and numpy release the GIL; reading the next blobs
        # from disk overlaps decoding the previous ones).  A block whose checksum fails is
        # skipped and named; a chunk whose metadata fails its checksum in pass 2 (the layout
        # was built from it) is skipped and the read starts again without it.
        where, args = self._chunk_where(start_ns, end_ns)
        gpu_rows = {
            r[0]: r[1:]
            for r in self._con.execute(
                "SELECT gpu_id, key, idx, host, uuid, name, pci_bus_id, power_limit, location "
                "FROM gpus ORDER BY gpu_id"
            )
        }
        skip: dict[int, dict] = {}  # chunk_id -> report of a chunk with damaged metadata
        while True:
            chunks = self._read_chunk_meta(where, args, skip, gpu_rows)
            layout = _read_layout(chunks, want)
            alloc = np.empty if layout.covered else (lambda shape: np.full(shape, np.nan))
            out = {f: alloc((layout.times.size, layout.all_g.size)) for f in layout.fields}
            try:
                bad = self._decode_into(chunks, layout, out, where, args, skip)
                break
            except _DamagedChunk:
                continue
        times, out = _trim_window(layout.times, out, start_ns, end_ns)
        ds = self._read_dataset(times, out, [gpu_rows[int(g)] for g in layout.all_g])
        return self._report_corrupt(ds, [*skip.values(), *bad])

    def _read_chunk_meta(
        self, where: str, args: list[int], skip: dict[int, dict], gpu_rows: dict[int, tuple]
    ) -> list[_ChunkMeta]:
        """Pass 1 of :meth:`_read`: every selected chunk's times, GPUs, fields and mask.

        Chunks in ``skip`` are left out; one whose metadata is structurally impossible is added
        to it (its checksum is only read in pass 2).
        """
        known = np.zeros(max(gpu_rows, default=0) + 1, dtype=bool)
        known[list(gpu_rows)] = True
        chunks = []
        # (columns stored before ``data`` only: reading one after a blob walks its overflow pages)
        for row in self._con.execute(
            "SELECT chunk_id, times, gpus, present, fields, n_times, n_gpus, t_min, t_max, "
            "n_samples FROM chunks" + where,
            args,
        ):
            cid, times_b, gpus_b, pres_b, fields, nt, ng, t_min, t_max, n_samples = row
            if cid in skip:
                continue
            if not meta_sane(times_b, gpus_b, pres_b, nt, ng, known):
                skip[cid] = self._corrupt_report(row, None, "chunk metadata damaged")
                continue
            times, gids, present = _chunk_meta(times_b, gpus_b, pres_b, nt, ng)
            names = fields.split(",") if fields else []
            crc_args = (t_min, t_max, n_samples, nt, ng, fields, times_b, gpus_b, pres_b)
            chunks.append(_ChunkMeta(times, gids, names, present, cid, fields, crc_args))
        return chunks

    def _decode_into(
        self,
        chunks: list[_ChunkMeta],
        layout: _ReadLayout,
        out: dict[str, np.ndarray],
        where: str,
        args: list[int],
        skip: dict[int, dict],
    ) -> list[dict]:
        """Pass 2 of :meth:`_read`: stream the chunks' blobs and decode them into ``out``.

        Blocks that fill whole rows of the output (every GPU, no mask, times in order) are
        decoded in place on worker threads; the others are merged over what is already there
        (:func:`_merge_block`).  Returns a report per block that failed its checksum (its
        cells stay NaN); raises :class:`_DamagedChunk` after adding a chunk whose metadata
        fails its checksum to ``skip``.
        """
        times = layout.times
        offset = 0
        blobs = (
            r
            for r in self._con.execute(
                f"SELECT chunk_id, data, {self._codec_col} FROM chunks" + where, args
            )
            if r[0] not in skip
        )
        bad: list[dict] = []
        with concurrent.futures.ThreadPoolExecutor(_READ_WORKERS) as pool:
            jobs = []
            for c, full_g, (cid2, data_b, codec) in zip(chunks, layout.full, blobs, strict=True):
                if c.chunk_id != cid2:  # cannot happen inside one snapshot
                    raise StoreError(f"{self.path}: chunk list changed while reading")
                if layout.monotone:
                    tsl: slice | np.ndarray = slice(offset, offset + c.times.size)
                    offset += c.times.size
                else:
                    tsl = np.searchsorted(times, c.times)
                if not layout.wanted.intersection(c.names):
                    continue
                shape = (c.times.size, c.gpu_ids.size)
                data, why = _checked_blocks(c.crc_args, data_b, codec)
                if why:
                    skip[c.chunk_id] = self._corrupt_report(c, None, why)
                    raise _DamagedChunk(c.chunk_id)
                for f, (spec, payload) in data.items():
                    if f not in out:
                        continue
                    dst = out[f]
                    if full_g and isinstance(tsl, slice):  # disjoint rows: in parallel
                        job = pool.submit(_decode_checked, spec, payload, shape, dst[tsl])
                        jobs.append((job, c, f))
                        continue
                    block = _decode_checked(spec, payload, shape, None)
                    if isinstance(block, str):
                        bad.append(self._corrupt_report(c, f, block))
                        continue
                    _merge_block(
                        dst, block, c.present, np.arange(times.size)[tsl], layout.gpos[c.gpu_ids]
                    )
            for job, c, f in jobs:
                if isinstance(why := job.result(), str):
                    bad.append(self._corrupt_report(c, f, why))
        return bad

    def _corrupt_report(self, c: _ChunkMeta | tuple, field: str | None, why: str) -> dict:
        """Name a damaged block: chunk, field, GPUs and time range (from the chunk row)."""
        if isinstance(c, _ChunkMeta):
            cid, names, gids = c.chunk_id, c.names, c.gpu_ids
            t_min, t_max, n_samples = c.crc_args[:3]
        else:  # a pass-1 row whose metadata is unusable
            cid, _, gpus_b, _, fields, _, _, t_min, t_max, n_samples = c
            names = fields.split(",") if isinstance(fields, str) and fields else []
            gids = np.frombuffer(gpus_b[: len(gpus_b) // 8 * 8], "<i8") if gpus_b else []
        keys = self._gpu_keys()
        return {
            "chunk": int(cid),
            "fields": [field] if field else names,
            "gpus": [keys.get(int(g), f"?{int(g)}") for g in gids][:64],
            "first": _iso(t_min),
            "last": _iso(t_max),
            "samples": int(n_samples) if isinstance(n_samples, int) else None,
            "problem": why,
        }

    def _gpu_keys(self) -> dict[int, str]:
        return dict(self._con.execute("SELECT gpu_id, key FROM gpus"))

    def _report_corrupt(self, ds: xr.Dataset, bad: list[dict]) -> xr.Dataset:
        """Warn about each skipped block and record them in ``ds.attrs`` and ``self.corrupt``."""
        ds.attrs["corrupt_blocks"] = len(bad)
        if bad:
            ds.attrs["corrupt_detail"] = json.dumps(bad)
            self.corrupt.extend(bad)
            self.stats["corrupt_blocks"] += len(bad)
            for b in bad:
                warnings.warn(CorruptBlockWarning(describe_corrupt(self.path, b)), stacklevel=4)
        return ds

    def _read_dataset(
        self, times: np.ndarray, out: dict[str, np.ndarray], ginfo: list[tuple]
    ) -> xr.Dataset:
        """The read's Dataset: GPU identity as ``gpu`` coordinates, units and provenance."""
        prov = self.provenance()
        coords = {
            "time": ("time", times.view("datetime64[ns]")),
            "gpu": ("gpu", np.array([r[0] for r in ginfo], dtype=object).astype(str)),
            "index": ("gpu", np.array([-1 if r[1] is None else r[1] for r in ginfo], np.int64)),
            "host": ("gpu", np.array([r[2] or "" for r in ginfo], dtype=str)),
            "uuid": ("gpu", np.array([r[3] or "" for r in ginfo], dtype=str)),
            "name": ("gpu", np.array([r[4] or "" for r in ginfo], dtype=str)),
            "pci_bus_id": ("gpu", np.array([r[5] or "" for r in ginfo], dtype=str)),
            "power_limit": (
                "gpu",
                np.array([_none_nan(r[6]) for r in ginfo], dtype=float),
                {"units": "W"},
            ),
            "location": ("gpu", np.array([r[7] or "" for r in ginfo], dtype=str)),
        }
        data_vars = {
            f: (
                ("time", "gpu"),
                a,
                {
                    "units": FIELDS[f][0],
                    "long_name": FIELDS[f][1],
                    "provenance": "; ".join(p.as_text() for p in prov.get(f, [])),
                },
            )
            for f, a in out.items()
        }
        return xr.Dataset(
            data_vars,
            coords=coords,
            attrs={"title": "GPU telemetry", "store": str(self.path)},
        )

    # --------------------------------------------------------------- maintenance
    def compact(
        self,
        retention_s: float | None = None,
        now: float | None = None,
        merge_target_samples: int = 100_000,
    ) -> dict[str, int]:
        """Delete chunks older than ``retention_s`` and merge small neighbouring chunks.

        Both happen in one transaction each, so a crash during compaction leaves either the old or
        the new chunks.  Returns ``{"deleted_chunks", "merged_chunks", "new_chunks"}``.
        """
        self.flush()
        con = self._con
        res = {"deleted_chunks": 0, "merged_chunks": 0, "new_chunks": 0}
        if retention_s is not None:
            cutoff = int(((now if now is not None else time.time()) - retention_s) * 1e9)
            con.execute("BEGIN IMMEDIATE")
            cur = con.execute("DELETE FROM chunks WHERE t_max < ?", (cutoff,))
            res["deleted_chunks"] = cur.rowcount
            con.execute("DELETE FROM quarantine WHERE time_ns < ?", (cutoff,))
            con.execute("COMMIT")
        rows = list(con.execute("SELECT chunk_id, n_samples FROM chunks ORDER BY chunk_id"))
        groups = pack_in_order([r[0] for r in rows], [r[1] for r in rows], merge_target_samples)
        for grp in groups:
            if len(grp) >= 2 and self._compact_group(grp[0], grp[-1]):
                res["merged_chunks"] += len(grp)
                res["new_chunks"] += 1
        con.execute("PRAGMA incremental_vacuum")
        return res

    def _compact_group(self, lo: int, hi: int) -> bool:
        """Replace chunks ``lo..hi`` by one, in one transaction; False (nothing changed) when
        one of them is damaged: a merged chunk would carry fresh checksums over bad data."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        parts = []
        for r in con.execute(
            "SELECT chunk_id, times, gpus, present, fields, n_times, n_gpus, t_min, t_max, "
            "n_samples, data, codec, source FROM chunks WHERE chunk_id BETWEEN ? AND ? "
            "ORDER BY chunk_id",
            (lo, hi),
        ):
            row, (data_b, codec, src) = r[:10], r[10:]
            blocks, why = self._verify_meta(row, data_b, codec)
            nt, ng = row[5], row[6]
            decoded = {f: _decode_checked(sp, pl, (nt, ng), None) for f, (sp, pl) in blocks.items()}
            bad = [(f, d) for f, d in decoded.items() if isinstance(d, str)]
            if why or bad:
                con.execute("ROLLBACK")
                f, problem = bad[0] if bad else (None, why)
                log.warning(
                    "compaction leaves chunks %d..%d as they are: %s",
                    lo,
                    hi,
                    describe_corrupt(self.path, self._corrupt_report(row, f, problem)),
                )
                return False
            times, gids, pres = _chunk_meta(row[1], row[2], row[3], nt, ng)
            pres = np.ones((nt, ng), bool) if pres is None else pres
            ti, gi = np.nonzero(pres)
            parts.append((times[ti], gids[gi], {f: b[ti, gi] for f, b in decoded.items()}, src))
        t = np.concatenate([p[0] for p in parts])
        g = np.concatenate([p[1] for p in parts])
        names = sorted({f for p in parts for f in p[2]}, key=FIELD_NAMES.index)
        vals = {
            f: np.concatenate([p[2].get(f, np.full(p[0].size, np.nan)) for p in parts])
            for f in names
        }
        merged = _dense(t, g, vals, parts[-1][3] or "")
        con.execute("DELETE FROM chunks WHERE chunk_id BETWEEN ? AND ?", (lo, hi))
        con.execute(
            "INSERT INTO chunks(chunk_id,t_min,t_max,n_samples,n_times,n_gpus,fields,times,"
            "gpus,present,data,source,codec) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (hi, *_chunk_row(merged)),
        )
        con.execute("COMMIT")
        return True


class _ChunkMeta(NamedTuple):
    """A chunk's metadata, read before its data blob (pass 1 of :meth:`Store._read`)."""

    times: np.ndarray  # (T,) int64 [ns]
    gpu_ids: np.ndarray  # (G,) int64, store gpu_id
    names: list[str]  # fields stored
    present: np.ndarray | None  # (T, G) mask; None when every cell has a sample
    chunk_id: int
    fields: str  # the stored comma-separated field list
    crc_args: tuple  # the row's metadata, as :func:`sensors.integrity.meta_crc` takes it


class _ReadLayout(NamedTuple):
    """Where each chunk of a read goes in the output arrays."""

    all_g: np.ndarray  # store gpu ids of the output columns, sorted
    gpos: np.ndarray  # gpu_id -> output column (-1: absent)
    times: np.ndarray  # output times [ns], increasing
    monotone: bool  # chunks' times concatenate in increasing order (no overlap)
    fields: list[str]  # fields read, in the order asked for
    wanted: set[str]  # the same, as a set
    full: list[bool]  # per chunk: all output GPUs in output order, no mask
    covered: bool  # every output cell is written by a full block (no NaN pre-fill needed)


def _read_layout(chunks: list[_ChunkMeta], want: list[str]) -> _ReadLayout:
    """Output layout of a read of ``chunks``: union of their GPUs and times, fields in ``want``."""
    all_g = np.unique(np.concatenate([c.gpu_ids for c in chunks])) if chunks else np.zeros(0, int)
    gpos = np.full(int(all_g.max()) + 1 if all_g.size else 1, -1, dtype=np.int64)
    gpos[all_g] = np.arange(all_g.size)
    time_list = [c.times for c in chunks]
    cat = np.concatenate(time_list) if time_list else np.zeros(0, np.int64)
    monotone = cat.size == 0 or bool(np.all(cat[1:] > cat[:-1]))
    times = cat if monotone else np.unique(cat)
    present_fields = sorted({f for c in chunks for f in c.names} & set(want), key=want.index)
    ident = np.arange(all_g.size)
    full = [
        c.gpu_ids.size == all_g.size
        and bool(np.all(gpos[c.gpu_ids] == ident))
        and c.present is None
        for c in chunks
    ]
    # every cell written by a full block: no NaN pre-fill (saves a pass over the output)
    covered = (
        monotone and all(full) and all(all(f in c.names for f in present_fields) for c in chunks)
    )
    return _ReadLayout(
        all_g, gpos, times, monotone, present_fields, set(present_fields), full, covered
    )


def _merge_block(
    dst: np.ndarray, block: np.ndarray, present: np.ndarray | None, rows: np.ndarray, gi: np.ndarray
) -> None:
    """Write ``block`` (masked by ``present``) at ``rows`` x ``gi`` of ``dst``; NaN cells of
    the block keep what ``dst`` holds there."""
    if present is not None:
        block = np.where(present, block, np.nan)
    sub = dst[np.ix_(rows, gi)]
    dst[np.ix_(rows, gi)] = np.where(np.isnan(block), sub, block)


def _trim_window(
    times: np.ndarray, out: dict[str, np.ndarray], start_ns: int | None, end_ns: int | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Times and arrays restricted to ``[start_ns, end_ns]`` (chunks straddle the bounds)."""
    if start_ns is not None or end_ns is not None:
        keep = np.ones(times.size, dtype=bool)
        if start_ns is not None:
            keep &= times >= start_ns
        if end_ns is not None:
            keep &= times <= end_ns
        if not keep.all():
            times = times[keep]
            out = {f: a[keep] for f, a in out.items()}
    return times, out


def _chunk_row(c: _Chunk) -> tuple:
    """The ``chunks`` row of ``c``; its codec entry holds a CRC32 per block and of the metadata."""
    names = [f for f in FIELD_NAMES if f in c.data]
    specs, payloads = [], []
    for f in names:
        spec, payload = _encode_block(f, c.data[f])
        specs.append([*spec, zlib.crc32(payload)])
        payloads.append(payload)
    data = b"".join(payloads)
    present = None if c.present.all() else np.packbits(c.present.ravel()).tobytes()
    meta = (int(c.times[0]), int(c.times[-1]), c.n_samples, int(c.times.size), int(c.gpu_ids.size))
    fields = ",".join(names)
    times_b = c.times.astype(np.int64).tobytes()
    gpus_b = c.gpu_ids.astype(np.int64).tobytes()
    crc = meta_crc(*meta, fields, times_b, gpus_b, present)
    codec = json.dumps({"f": specs, "m": crc}, separators=(",", ":"))
    return (*meta, fields, times_b, gpus_b, present, data, safe_text(c.source), codec)


def _counter(reason: str) -> str:
    """Counter of a quarantine reason: column-level records (an ignored column) are not rows,
    so they are counted apart and ``samples + quarantined == rows`` holds."""
    return f"ignored:{reason}" if reason in COLUMN_REASONS else f"quarantined:{reason}"


def _nan_none(x: float) -> float | None:
    return None if x is None or x != x else float(x)


def _none_nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def export(store_path: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, list[dict]]:
    """Write the whole store to ``out``: netCDF (``.nc``) or long-format CSV (``.csv``).

    Returns the path and the corrupt blocks skipped (each named; also in the netCDF's
    ``corrupt_detail`` attribute).
    """
    out = Path(out)
    with contextlib.closing(Store(store_path, readonly=True)) as st:
        ds = st.read()
        info = st.info()
        skipped = list(st.corrupt)
    if out.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        ds.attrs["quarantined"] = json.dumps(info["quarantined"])
        ds.to_netcdf(out)
    elif out.suffix.lower() == ".csv":
        df = ds.to_dataframe().reset_index()
        fields = [f for f in FIELD_NAMES if f in ds.data_vars]
        df = df.dropna(subset=fields, how="all")
        df.rename(columns={f: f"{f} [{FIELDS[f][0]}]" for f in fields}).to_csv(out, index=False)
    else:
        raise InputError("--out", str(out), "a file ending in .nc (netCDF) or .csv")
    return out, skipped
