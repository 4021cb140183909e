"""Store integrity: checksummed blocks, writer lock, file identity, bytes-safe names, flush
rollback, the synchronous setting and re-ingested rows (issue 15, Why 3/4/5/7/8)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sensors_testlib import ROOT, twin_env

from sensors.base import Batch, GpuInfo, QuarantineRecord
from sensors.daemon import DaemonConfig
from sensors.errors import InputError
from sensors.store import CorruptBlockWarning, Store, StoreBusy

GPUS = [GpuInfo(key=f"GPU-{i}", index=i, host="h1", uuid=f"GPU-{i}") for i in range(3)]
T0 = pd.Timestamp("2025-01-01T00:00:00Z").value


def block_batch(k: int, n_times: int = 50, off_grid: bool = False) -> Batch:
    """Times ``k*n_times ..`` s on 3 GPUs; power on the 0.01 W grid (compressed) or off it (raw)."""
    t = np.repeat(np.arange(k * n_times, (k + 1) * n_times), 3)
    g = np.tile(np.arange(3), n_times)
    rng = np.random.default_rng(k)
    p = rng.normal(300, 5, t.size)
    p = p if off_grid else np.round(p, 2)
    return Batch(T0 + t * 10**9, g, {"power_average": p, "temp_gpu": 40.0 + g + k})


def write_chunks(path, n: int = 3, off_grid: bool = False):
    with Store(path) as st:
        for k in range(n):
            st.append(block_batch(k, off_grid=off_grid), GPUS, "test")
            st.flush()
    with contextlib.closing(Store(path, readonly=True)) as st:
        return st.read()


def flip(path, chunk_index: int, column: str = "data", at: int = 10, n: int = 64) -> int:
    """Invert ``n`` bytes of one chunk's ``column`` blob (as a disk fault would); its chunk_id."""
    con = sqlite3.connect(path)
    cid, blob = con.execute(
        f"SELECT chunk_id, {column} FROM chunks ORDER BY chunk_id LIMIT 1 OFFSET ?",
        (chunk_index,),
    ).fetchone()
    b = bytearray(blob)
    b[at : at + n] = bytes(x ^ 0xFF for x in b[at : at + n])
    con.execute(f"UPDATE chunks SET {column}=? WHERE chunk_id=?", (bytes(b), cid))
    con.commit()
    con.close()
    return cid


def read_warned(path):
    with (
        contextlib.closing(Store(path, readonly=True)) as st,
        pytest.warns(CorruptBlockWarning) as rec,
    ):
        ds = st.read()
    return ds, [str(w.message) for w in rec]


@pytest.mark.parametrize("off_grid", [False, True], ids=["compressed", "raw"])
def test_corrupt_block_is_skipped_named_and_the_rest_read(tmp_path, off_grid):
    """64 flipped bytes in one block: that block is skipped and named (chunk, field, GPUs, time
    range), every other block reads back exactly (was: zlib.error and nothing readable; a raw
    block was silently wrong)."""
    path = tmp_path / "s.db"
    before = write_chunks(path, off_grid=off_grid)
    flip(path, 1)  # the second chunk's first block: power_average, times 50..99 s
    ds, msgs = read_warned(path)
    assert len(msgs) == 1
    assert "power_average" in msgs[0] and "GPU-0, GPU-1, GPU-2" in msgs[0]
    assert "2025-01-01T00:00:50+00:00 .. 2025-01-01T00:01:39+00:00" in msgs[0]
    assert ds.attrs["corrupt_blocks"] == 1
    bad = json.loads(ds.attrs["corrupt_detail"])[0]
    assert bad["fields"] == ["power_average"] and bad["samples"] == 150
    p, p0 = ds.power_average.values, before.power_average.values
    assert np.isnan(p[50:100]).all()
    np.testing.assert_array_equal(p[:50], p0[:50])
    np.testing.assert_array_equal(p[100:], p0[100:])
    np.testing.assert_array_equal(ds.temp_gpu.values, before.temp_gpu.values)


def test_corrupt_chunk_metadata_skips_that_chunk(tmp_path):
    """A flipped times blob would put values at wrong times: the chunk is skipped and named."""
    path = tmp_path / "s.db"
    before = write_chunks(path)
    flip(path, 1, column="times", at=8, n=4)  # one timestamp changed, still in order
    ds, msgs = read_warned(path)
    assert len(msgs) == 1 and "metadata checksum" in msgs[0]
    assert "2025-01-01T00:00:50+00:00 .. 2025-01-01T00:01:39+00:00" in msgs[0]
    assert ds.sizes["time"] == 100
    np.testing.assert_array_equal(
        ds.power_average.values, np.delete(before.power_average.values, slice(50, 100), axis=0)
    )
    flip(path, 2, column="gpus", at=0, n=8)  # a GPU id of absurd size: no allocation by it
    ds, msgs = read_warned(path)
    assert len(msgs) == 2 and any("metadata damaged" in m for m in msgs)
    np.testing.assert_array_equal(ds.power_average.values, before.power_average.values[:50])


def test_blocks_without_checksum_read_as_before(tmp_path):
    """Stores written before checksums: blocks have no CRC and read unchanged; a damaged one
    is skipped on its decoding error instead of failing the whole read."""
    path = tmp_path / "s.db"
    before = write_chunks(path)
    con = sqlite3.connect(path)
    for cid, codec in list(con.execute("SELECT chunk_id, codec FROM chunks")):
        c = json.loads(codec)
        old = json.dumps({"f": [s[:7] for s in c["f"]]}, separators=(",", ":"))
        con.execute("UPDATE chunks SET codec=? WHERE chunk_id=?", (old, cid))
    con.commit()
    con.close()
    with contextlib.closing(Store(path, readonly=True)) as st:
        ds = st.read()
        assert st.check()["unchecksummed"] == 6 and not st.check()["bad"]
    assert ds.attrs["corrupt_blocks"] == 0
    np.testing.assert_array_equal(ds.power_average.values, before.power_average.values)
    flip(path, 0)
    ds, msgs = read_warned(path)
    assert len(msgs) == 1 and "undecodable" in msgs[0]
    np.testing.assert_array_equal(ds.power_average.values[50:], before.power_average.values[50:])


def test_compaction_leaves_a_corrupt_chunk_alone(tmp_path):
    """Merging would give damaged values fresh checksums: that group is not compacted."""
    path = tmp_path / "s.db"
    write_chunks(path, n=4)
    flip(path, 1)
    with Store(path) as st:
        res = st.compact(merge_target_samples=10**6)
        assert res["new_chunks"] == 0
        assert [b["chunk"] for b in st.check()["bad"]] == [2]


def test_cli_check_and_export_name_the_bad_block(tmp_path, capsys):
    from twin.cli import main

    path = tmp_path / "s.db"
    write_chunks(path)
    assert main(["telemetry", "check", "--store", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    cid = flip(path, 1)
    assert main(["telemetry", "check", "--store", str(path), "--json"]) == 1
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["ok"] is False and [b["chunk"] for b in res["bad"]] == [cid]
    assert f"chunk {cid}, field power_average" in cap.err
    out = tmp_path / "o.csv"
    with pytest.warns(CorruptBlockWarning, match=f"chunk {cid}, field power_average"):
        assert main(["telemetry", "export", "--store", str(path), "--out", str(out)]) == 1
    assert "WITHOUT 1 corrupt block" in capsys.readouterr().err
    df = pd.read_csv(out)
    assert len(df) == 450 and df["power_average [W]"].notna().sum() == 300


def test_second_writer_refused_naming_the_holder_readers_not_blocked(tmp_path):
    path = tmp_path / "s.db"
    st = Store(path)
    st.append(block_batch(0), GPUS)
    st.flush()
    with pytest.raises(StoreBusy, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
        Store(path)
    with contextlib.closing(Store(path, readonly=True)) as r:
        assert r.info()["samples"] == 150
    st.close()
    Store(path).close()  # released on close


def test_lock_of_a_killed_writer_does_not_block(tmp_path):
    """flock dies with its process: a writer SIGKILLed while holding the lock leaves a lock
    file naming it, and the next writer opens the store."""
    path = tmp_path / "s.db"
    code = (
        "import os, signal, sys; from sensors.store import Store; "
        "s = Store(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=twin_env(), cwd=ROOT, timeout=60
    )
    assert p.returncode == -9
    assert '"pid"' in (tmp_path / "s.db.lock").read_text()
    with Store(path) as st:
        assert st.append(block_batch(0), GPUS) == 150


def test_deleted_or_replaced_file_is_not_acknowledged(tmp_path):
    """SQLite keeps committing into a deleted file's inode; the store notices, keeps the
    samples pending and reports why (was: flushes 'succeeded', everything lost)."""
    for how in ("delete", "replace"):
        path = tmp_path / f"{how}.db"
        st = Store(path)
        st.append(block_batch(0), GPUS)
        assert st.flush() == 150
        if how == "delete":
            path.unlink()
        else:
            other = tmp_path / "other.db"
            other.write_bytes(b"")
            os.replace(other, path)
        st.append(block_batch(1), GPUS)
        assert st.flush() == 0
        assert st.lost and ("deleted" if how == "delete" else "replaced") in st.lost
        assert st.pending_samples == 150
        st.append(block_batch(2), GPUS)
        assert st.flush() == 0 and st.pending_samples == 300  # kept, bounded, never acked
        st.close()


def test_non_utf8_names_are_stored_escaped(tmp_path):
    """A host, GPU key, source or raw line with an undecodable byte (surrogate-escaped, as
    argv and file names arrive) is stored with the byte escaped (was: UnicodeEncodeError, the
    flush not rolled back, nothing stored, nothing counted)."""
    gpus = [GpuInfo(key="run\udcff.csv:0", index=0, host="node\udcff", name="H\udcff100")]
    b = Batch(T0 + np.arange(3) * 10**9, np.zeros(3, int), {"power_average": np.ones(3)})
    b.quarantine.append(QuarantineRecord("malformed_line", "line 5: \udcff\udcfe"))
    b.rows = 4
    path = tmp_path / "s.db"
    with Store(path) as st:
        st.record_provenance("replay:run\udcff.csv", {})
        assert st.append(b, gpus, "replay:run\udcff.csv") == 3
        assert st.flush() == 3
    with Store(path) as st:  # the same GPU after a restart, not a new one
        b2 = Batch(T0 + np.arange(3, 5) * 10**9, np.zeros(2, int), {"power_average": np.ones(2)})
        assert st.append(b2, gpus, "replay:run\udcff.csv") == 2
        st.flush()
        i = st.info()
        ds = st.read()
        q = st.quarantine_records()
    assert i["samples"] == 5 and i["rows"] == 6 and i["quarantined"] == {"malformed_line": 1}
    assert list(ds.gpu.values) == ["run\\xff.csv:0"] and list(ds.host.values) == ["node\\xff"]
    assert q[0][3] == "line 5: \\xff\\xfe"


def test_failed_flush_rolls_back_and_keeps_the_data(tmp_path, monkeypatch):
    """Any error inside the flush transaction (not only SQLite's) rolls it back; the samples
    stay pending and are written by the next flush, once."""
    import sensors.store as store_mod

    path = tmp_path / "s.db"
    st = Store(path)
    st.append(block_batch(0), GPUS)
    real = store_mod._chunk_row
    monkeypatch.setattr(store_mod, "_chunk_row", lambda c: (_ for _ in ()).throw(ValueError("x")))
    assert st.flush() == 0
    assert not st._con.in_transaction and st.pending_samples == 150
    assert "ValueError" in st.last_error and st.stats["write_errors"] == 1
    monkeypatch.setattr(store_mod, "_chunk_row", real)
    assert st.flush() == 150
    assert st.info()["samples"] == 150 == st.read().power_average.notnull().sum()
    st.close()


def test_synchronous_is_validated(tmp_path):
    """TWIN_SYNCHRONOUS=OFFF was pasted into SQL and silently became NORMAL."""
    with pytest.raises(InputError, match="TWIN_SYNCHRONOUS: got 'OFFF'; expected one of OFF"):
        DaemonConfig.from_env({"TWIN_SYNCHRONOUS": "OFFF"})
    assert DaemonConfig.from_env({"TWIN_SYNCHRONOUS": "normal"}).synchronous == "NORMAL"
    with pytest.raises(InputError, match="synchronous: got 'FULL; DROP TABLE chunks'"):
        Store(tmp_path / "s.db", synchronous="FULL; DROP TABLE chunks")
    with Store(tmp_path / "s.db", synchronous="off") as st:
        assert st._con.execute("PRAGMA synchronous").fetchone()[0] == 0


def test_reingested_rows_are_already_stored_not_time_backwards(tmp_path):
    """Replaying a file into a store that holds it: its rows are `already_stored`; a row
    before the stored clock that the store does not hold is still `time_backwards`."""
    path = tmp_path / "s.db"
    with Store(path) as st:
        st.append(block_batch(0), GPUS)
        st.append(block_batch(2), GPUS)  # a gap: times 50..99 s never stored
    with Store(path) as st:
        assert st.append(block_batch(0), GPUS) == 0
        assert st.append(block_batch(1), GPUS) == 0
        st.flush()
        i = st.info()
    assert i["quarantined"] == {"already_stored": 150, "time_backwards": 150}
    assert i["samples"] + sum(i["quarantined"].values()) == i["rows"] == 600
