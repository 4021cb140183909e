"""Durable append-only telemetry store on SQLite in WAL mode.

Layout (see docs/sensors.md for why SQLite): each flush commits one transaction holding one
*chunk* per batch group -- a dense block of ``T`` timestamps x ``G`` GPUs stored as raw float64
blobs (one per field) plus a presence mask -- together with its quarantine records and per-GPU
clocks.  A crash (SIGKILL, power loss with ``synchronous=FULL``) loses at most the transactions
not yet committed; committed chunks are never rewritten except by :meth:`Store.compact`, which
replaces them inside one transaction.  Readers use separate connections and see a consistent
snapshot while the writer appends.

Writes that fail (disk full, read-only file system) keep the pending chunks in a bounded memory
buffer and raise nothing into the polling loop; when the buffer is full the oldest pending samples
are dropped *and counted* (``dropped``), and every failure is logged with the SQLite message.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from sensors.base import FIELD_NAMES, FIELDS, Batch, FieldProvenance, GpuInfo, QuarantineRecord
from sensors.validate import Limits, validate

log = logging.getLogger("twin.sensors.store")

SCHEMA_VERSION = "1"

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
    source TEXT);
CREATE INDEX IF NOT EXISTS chunks_t ON chunks(t_max, t_min);
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY, reason TEXT NOT NULL, time_ns INTEGER, gpu TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says which path and what to do."""


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
    time_ns: np.ndarray, gpu_ids: np.ndarray, values: dict[str, np.ndarray], source: str
) -> _Chunk:
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


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"telemetry store {path} does not exist")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    else:
        con = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    con.execute("PRAGMA busy_timeout=30000")
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
        self.stats = collections.Counter()  # this process: samples, quarantined:<reason>, ...
        self.last_error: str | None = None
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
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
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open telemetry store {self.path}: {exc} (check that the directory "
                "exists and is writable, the disk has space and the file is a twin store)"
            ) from exc

    def _check_schema(self) -> None:
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a twin telemetry store: {exc}") from exc
        if row is None or row[0] != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {row and row[0]!r}; expected {SCHEMA_VERSION!r}"
            )

    # ------------------------------------------------------------------ writing
    def close(self) -> None:
        if not self.readonly:
            try:  # fold the WAL into the main file so readers start fast
                self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        with contextlib.suppress(sqlite3.Error):
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.readonly:
            self.flush()
        self.close()

    def register_gpus(self, gpus: Sequence[GpuInfo]) -> list[int]:
        """Make sure every GPU has an id; identity columns are refreshed at the next flush."""
        ids = []
        for g in gpus:
            if g.key not in self._gpu_ids:
                cur = self._con.execute(
                    "INSERT OR IGNORE INTO gpus(key, idx, host) VALUES(?,?,?)",
                    (g.key, g.index, g.host),
                )
                if cur.lastrowid and cur.rowcount:
                    self._gpu_ids[g.key] = cur.lastrowid
                else:
                    self._gpu_ids[g.key] = self._con.execute(
                        "SELECT gpu_id FROM gpus WHERE key=?", (g.key,)
                    ).fetchone()[0]
            ids.append(self._gpu_ids[g.key])
        self._gpu_info = {g.key: g for g in gpus} | getattr(self, "_gpu_info", {})
        self._gpu_dirty.update(g.key for g in gpus)
        return ids

    def record_provenance(self, source: str, prov: dict[str, FieldProvenance]) -> None:
        self._prov_pending.extend(
            (f, source, p.origin, p.kind, p.unit, p.window_s) for f, p in prov.items()
        )

    def append(self, batch: Batch, gpus: Sequence[GpuInfo], source: str = "") -> int:
        """Validate ``batch`` (positions index ``gpus``) and queue it; returns accepted samples."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        keys = [g.key for g in gpus]
        gids = np.asarray(self.register_gpus(gpus), dtype=np.int64)
        accepted, records = validate(batch, keys, self._last_time, self.limits)
        self.last_accepted = accepted
        q = list(batch.quarantine) + records
        self._pending_q.extend(q)
        for r in q:
            self.stats[f"quarantined:{r.reason}"] += 1
        n_ok = int(accepted.sum())
        if n_ok:
            if accepted.all():
                t, g, vals = batch.time_ns, batch.gpu, batch.values
            else:
                t, g = batch.time_ns[accepted], batch.gpu[accepted]
                vals = {f: v[accepted] for f, v in batch.values.items()}
            chunk = _dense(t, gids[g], vals, source)
            self._pending.append(chunk)
            self._pending_samples += chunk.n_samples
            # rows whose (time, gpu) collapse are impossible: duplicates were quarantined
        self._pending_rows += int(batch.rows or 0)
        self.stats["samples"] += n_ok
        self.stats["rows"] += int(batch.rows or 0)
        self._enforce_buffer()
        return n_ok

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
        pending = list(self._pending)
        n = sum(c.n_samples for c in pending)
        qcounts = collections.Counter(r.reason for r in self._pending_q)
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO chunks(t_min,t_max,n_samples,n_times,n_gpus,fields,times,gpus,"
                "present,data,source) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                [_chunk_row(c) for c in pending],
            )
            con.executemany(
                "INSERT INTO quarantine(reason,time_ns,gpu,detail) VALUES(?,?,?,?)",
                [(r.reason, r.time_ns, r.gpu, r.detail) for r in self._pending_q],
            )
            inc = [(f"quarantined:{k}", v) for k, v in qcounts.items()]
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
                        g.host,
                        g.uuid,
                        g.name,
                        g.pci_bus_id,
                        _nan_none(g.power_limit),
                        _nan_none(g.temp_slowdown),
                        _nan_none(g.temp_shutdown),
                        g.location,
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
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            self.last_error = str(exc)
            self.stats["write_errors"] += 1
            log.error(
                "cannot write telemetry store %s: %s; %d samples kept in memory (limit %d)",
                self.path,
                exc,
                self._pending_samples,
                self.max_buffer_samples,
            )
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

    def _iter_chunks(
        self, start_ns: int | None, end_ns: int | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray | None]]:
        sql = "SELECT times, gpus, present, fields, data, n_times, n_gpus FROM chunks"
        args: list[int] = []
        cond = []
        if start_ns is not None:
            cond.append("t_max >= ?")
            args.append(start_ns)
        if end_ns is not None:
            cond.append("t_min <= ?")
            args.append(end_ns)
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        sql += " ORDER BY chunk_id"
        for times_b, gpus_b, pres_b, fields, data_b, nt, ng in self._con.execute(sql, args):
            times = np.frombuffer(times_b, dtype=np.int64)
            gids = np.frombuffer(gpus_b, dtype=np.int64)
            present = (
                None
                if pres_b is None
                else np.unpackbits(np.frombuffer(pres_b, np.uint8), count=nt * ng)
                .reshape(nt, ng)
                .astype(bool)
            )
            names = fields.split(",") if fields else []
            block = np.frombuffer(data_b, dtype=np.float64).reshape(len(names), nt, ng)
            yield times, gids, dict(zip(names, block, strict=True)), present

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
        chunks = list(self._iter_chunks(start_ns, end_ns))
        gpu_rows = {
            r[0]: r[1:]
            for r in self._con.execute(
                "SELECT gpu_id, key, idx, host, uuid, name, pci_bus_id, power_limit, location "
                "FROM gpus ORDER BY gpu_id"
            )
        }
        all_g = np.unique(np.concatenate([c[1] for c in chunks])) if chunks else np.zeros(0, int)
        gpos = np.full(int(all_g.max()) + 1 if all_g.size else 1, -1, dtype=np.int64)
        gpos[all_g] = np.arange(all_g.size)
        time_list = [c[0] for c in chunks]
        cat = np.concatenate(time_list) if time_list else np.zeros(0, np.int64)
        monotone = cat.size == 0 or bool(np.all(cat[1:] > cat[:-1]))
        times = cat if monotone else np.unique(cat)
        present_fields = sorted({f for c in chunks for f in c[2]} & set(want), key=want.index)
        out = {f: np.full((times.size, all_g.size), np.nan) for f in present_fields}
        offset = 0
        for ctimes, gids, data, present in chunks:
            if monotone:
                tsl: slice | np.ndarray = slice(offset, offset + ctimes.size)
                offset += ctimes.size
            else:
                tsl = np.searchsorted(times, ctimes)
            gi = gpos[gids]
            full_g = gi.size == all_g.size and bool(np.all(gi == np.arange(gi.size)))
            for f, block in data.items():
                if f not in out:
                    continue
                dst = out[f]
                if present is not None:
                    block = np.where(present, block, np.nan)
                if full_g and isinstance(tsl, slice) and present is None:
                    dst[tsl] = block
                else:
                    rows = np.arange(times.size)[tsl]
                    sub = dst[np.ix_(rows, gi)]
                    dst[np.ix_(rows, gi)] = np.where(np.isnan(block), sub, block)
        if start_ns is not None or end_ns is not None:
            keep = np.ones(times.size, dtype=bool)
            if start_ns is not None:
                keep &= times >= start_ns
            if end_ns is not None:
                keep &= times <= end_ns
            if not keep.all():
                times = times[keep]
                out = {f: a[keep] for f, a in out.items()}
        prov = self.provenance()
        ginfo = [gpu_rows[int(g)] for g in all_g]
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
        groups: list[list[int]] = []
        cur_g: list[int] = []
        acc = 0
        for cid, ns in rows:
            if acc + ns > merge_target_samples and cur_g:
                groups.append(cur_g)
                cur_g, acc = [], 0
            cur_g.append(cid)
            acc += ns
        if cur_g:
            groups.append(cur_g)
        for grp in groups:
            if len(grp) < 2:
                continue
            lo, hi = grp[0], grp[-1]
            con.execute("BEGIN IMMEDIATE")
            parts = []
            for times_b, gpus_b, pres_b, fields, data_b, nt, ng, src in con.execute(
                "SELECT times,gpus,present,fields,data,n_times,n_gpus,source FROM chunks "
                "WHERE chunk_id BETWEEN ? AND ? ORDER BY chunk_id",
                (lo, hi),
            ):
                times = np.frombuffer(times_b, np.int64)
                gids = np.frombuffer(gpus_b, np.int64)
                pres = (
                    np.ones((nt, ng), bool)
                    if pres_b is None
                    else np.unpackbits(np.frombuffer(pres_b, np.uint8), count=nt * ng)
                    .reshape(nt, ng)
                    .astype(bool)
                )
                names = fields.split(",") if fields else []
                block = np.frombuffer(data_b, np.float64).reshape(len(names), nt, ng)
                ti, gi = np.nonzero(pres)
                parts.append(
                    (times[ti], gids[gi], {f: block[k][ti, gi] for k, f in enumerate(names)}, src)
                )
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
                "gpus,present,data,source) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                (hi, *_chunk_row(merged)),
            )
            con.execute("COMMIT")
            res["merged_chunks"] += len(grp)
            res["new_chunks"] += 1
        con.execute("PRAGMA incremental_vacuum")
        return res


def _chunk_row(c: _Chunk) -> tuple:
    names = [f for f in FIELD_NAMES if f in c.data]
    data = (
        np.stack([c.data[f] for f in names]).tobytes()
        if names
        else np.zeros((0,), np.float64).tobytes()
    )
    present = None if c.present.all() else np.packbits(c.present.ravel()).tobytes()
    return (
        int(c.times[0]),
        int(c.times[-1]),
        c.n_samples,
        int(c.times.size),
        int(c.gpu_ids.size),
        ",".join(names),
        c.times.astype(np.int64).tobytes(),
        c.gpu_ids.astype(np.int64).tobytes(),
        present,
        data,
        c.source,
    )


def _nan_none(x: float) -> float | None:
    return None if x is None or x != x else float(x)


def _none_nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def export(store_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the whole store to ``out``: netCDF (``.nc``) or long-format CSV (``.csv``)."""
    out = Path(out)
    with contextlib.closing(Store(store_path, readonly=True)) as st:
        ds = st.read()
        info = st.info()
    if out.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        ds.attrs["quarantined"] = json.dumps(info["quarantined"])
        ds.to_netcdf(out)
    elif out.suffix.lower() == ".csv":
        df = ds.to_dataframe().reset_index()
        fields = [f for f in FIELD_NAMES if f in ds.data_vars]
        df = df.dropna(subset=fields, how="all")
        df.rename(columns={f: f"{f} [{FIELDS[f][0]}]" for f in fields}).to_csv(out, index=False)
    else:
        from twin.units import SpecError

        raise SpecError("--out", str(out), "a file ending in .nc (netCDF) or .csv")
    return out
