"""Store: round trip, quarantine by reason, concurrent reads, disk full, retention/compaction."""

from __future__ import annotations

import contextlib
import sqlite3

import numpy as np
import pandas as pd
import pint_xarray  # noqa: F401 - registers the .pint accessor
import pytest
import xarray as xr
from sensors_testlib import info, twin

from sensors.base import Batch, GpuInfo, QuarantineRecord
from sensors.store import Store, StoreError

GPUS = [
    GpuInfo(key=f"GPU-{i}", index=i, host="h1", uuid=f"GPU-{i}", power_limit=700.0)
    for i in range(3)
]
T0 = pd.Timestamp("2025-01-01T00:00:00Z").value


def batch(times_s, power, temp=None, gpu=None):
    n = len(times_s)
    gpu = np.arange(n) % 3 if gpu is None else np.asarray(gpu)
    vals = {"power_average": np.asarray(power, float)}
    vals["temp_gpu"] = np.full(n, 40.0) if temp is None else np.asarray(temp, float)
    return Batch(T0 + (np.asarray(times_s) * 1e9).astype(np.int64), gpu, vals)


def dense_batch(t_start, n_times, g=3):
    t = np.repeat(np.arange(t_start, t_start + n_times), g)
    gi = np.tile(np.arange(g), n_times)
    return batch(t, 100.0 + t + gi, gpu=gi)


def test_round_trip_units_and_identity(tmp_path):
    with Store(tmp_path / "s.db") as st:
        assert st.append(dense_batch(0, 10), GPUS, "test") == 30
    with contextlib.closing(Store(tmp_path / "s.db", readonly=True)) as st:
        ds = st.read()
    assert ds.sizes == {"time": 10, "gpu": 3}
    assert list(ds.uuid.values) == ["GPU-0", "GPU-1", "GPU-2"]
    assert ds.power_limit.values.tolist() == [700.0] * 3
    np.testing.assert_array_equal(ds.power_average.values[:, 2], 102.0 + np.arange(10))
    q = ds.pint.quantify()
    temp_k = q.temp_gpu.pint.to("K")
    np.testing.assert_allclose(temp_k.pint.magnitude, 313.15)
    assert str(q.power_average.pint.units) == "watt"


def test_quarantine_every_reason_counted(tmp_path):
    st = Store(tmp_path / "s.db")
    st.append(dense_batch(0, 5), GPUS)  # t=0..4 on all GPUs
    nan = float("nan")
    b = batch(
        [10, 11, 12, 13, 14, 15, 3, 15, 16],
        [100, -5, 6000, 100, 100, nan, 100, 101, 100],
        [40, 40, 40, 200, -60, nan, 40, 40, 40],
        gpu=[0, 0, 0, 0, 0, 1, 1, 0, 1],
    )
    b.quarantine.append(QuarantineRecord("malformed_line", "line 7: garbage"))
    b.rows = len(b) + 1
    accepted = st.append(b, GPUS)
    st.flush()
    # accepted: t=10 gpu0 and t=15 gpu0 (the one at 16 on gpu1 too)
    assert accepted == 3
    i = st.info()
    assert i["quarantined"] == {
        "malformed_line": 1,
        "power_negative": 1,
        "power_absurd": 1,
        "temperature_out_of_range": 2,
        "nan": 1,
        "time_backwards": 1,
    }
    dup = batch([15], [100.0], gpu=[0])
    assert st.append(dup, GPUS) == 0
    st.flush()
    i = st.info()
    assert i["quarantined"]["duplicate_timestamp"] == 1
    assert i["samples"] + sum(i["quarantined"].values()) == i["rows"] == 15 + 10 + 1
    reasons = [r[0] for r in st.quarantine_records()]
    assert "time_backwards" in reasons
    st.close()


def test_reader_sees_snapshot_while_writer_holds_transaction(tmp_path):
    st = Store(tmp_path / "s.db")
    st.append(dense_batch(0, 5), GPUS)
    st.flush()
    reader = Store(tmp_path / "s.db", readonly=True)
    st._con.execute("BEGIN IMMEDIATE")
    st._con.execute("DELETE FROM chunks")  # uncommitted: invisible to the reader
    assert reader.info()["samples"] == 15
    assert reader.read().sizes["time"] == 5
    st._con.execute("ROLLBACK")
    for k in range(1, 4):
        st.append(dense_batch(5 * k, 5), GPUS)
        st.flush()
        assert reader.info()["samples"] == 15 * (k + 1)
    reader.close()
    st.close()


def test_disk_full_buffers_bounded_and_counts_drops(tmp_path, caplog):
    st = Store(tmp_path / "s.db", max_buffer_samples=600)
    st.append(dense_batch(0, 10), GPUS)
    assert st.flush() == 30
    pages = st._con.execute("PRAGMA page_count").fetchone()[0]
    st._con.execute(f"PRAGMA max_page_count={pages}")  # the "disk" is now full
    committed, k = 30, 1
    while st.flush() or k == 1:  # fill the last free pages until a write fails
        st.append(dense_batch(10 * k, 10), GPUS)
        k += 1
        committed += 30 if st.pending_samples == 0 else 0
        assert k < 100, "the store never filled up"
    committed = st.info()["samples"]
    pending0 = st.pending_samples
    assert pending0 == 30
    for _ in range(30):  # 30 more batches of 30 samples: 930 > buffer of 600
        st.append(dense_batch(10 * k, 10), GPUS)
        k += 1
        assert st.flush() == 0
    assert "full" in st.last_error
    assert st.stats["write_errors"] == 31
    assert st.pending_samples <= 600
    dropped = st.stats["dropped"]
    assert dropped == 930 - st.pending_samples > 0
    assert "cannot write telemetry store" in caplog.text
    st._con.execute("PRAGMA max_page_count=1073741823")
    assert st.flush() == 930 - dropped
    i = st.info()
    assert i["samples"] == committed + 930 - dropped
    assert i["dropped"] == dropped
    assert i["samples"] + i["dropped"] + sum(i["quarantined"].values()) == i["rows"]
    st.close()


def test_unwritable_path_clear_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open telemetry store .*afile"):
        Store(blocker / "s.db")
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        Store(tmp_path / "junk.db")


def test_retention_and_compaction_keep_data(tmp_path):
    st = Store(tmp_path / "s.db")
    for k in range(20):
        st.append(dense_batch(10 * k, 10), GPUS)
        st.flush()
    before = st.read()
    assert st.info()["chunks"] == 20
    res = st.compact(merge_target_samples=150)
    assert res["merged_chunks"] == 20 and res["new_chunks"] == 4
    after = st.read()
    xr.testing.assert_identical(before, after)
    now = (T0 / 1e9) + 200.0
    res = st.compact(retention_s=100.5, now=now)
    kept = st.read()
    # merged chunks hold 50 s each; the one ending at t=99 s is older than the cutoff (99.5 s)
    assert res["deleted_chunks"] == 2
    assert kept.time.values[0] == np.datetime64(T0 + 100 * 10**9, "ns")
    assert st.info()["samples"] == kept.power_average.notnull().sum().item()
    # new samples after compaction still validated against the stored per-GPU clocks
    st.close()
    st = Store(tmp_path / "s.db")
    assert st.append(dense_batch(100, 5), GPUS) == 0  # kept by the retention: stored
    assert st.append(dense_batch(50, 2), GPUS) == 0  # deleted by the retention: not stored
    st.flush()
    assert st.info()["quarantined"] == {"already_stored": 15, "time_backwards": 6}
    st.close()


def test_cli_info_and_export(tmp_path):
    with Store(tmp_path / "s.db") as st:
        st.append(dense_batch(0, 4), GPUS)
    i = info(tmp_path / "s.db")
    assert i["samples"] == 12 and i["gpus"] == 3 and i["quarantined"] == {}
    assert i["first"].startswith("2025-01-01T00:00:00") and i["last"].startswith(
        "2025-01-01T00:00:03"
    )
    r = twin(
        "telemetry", "export", "--store", str(tmp_path / "s.db"), "--out", str(tmp_path / "o.nc")
    )
    assert r.returncode == 0, r.stderr
    ds = xr.open_dataset(tmp_path / "o.nc")
    assert float(ds.power_average.sum()) == pytest.approx(
        sum(100 + t + g for t in range(4) for g in range(3))
    )
    ds.close()
    r = twin(
        "telemetry", "export", "--store", str(tmp_path / "s.db"), "--out", str(tmp_path / "o.csv")
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "o.csv")
    assert len(df) == 12 and "power_average [W]" in df.columns
    r = twin("telemetry", "info", "--store", str(tmp_path / "missing.db"), "--json")
    assert r.returncode == 2 and "does not exist" in r.stderr
    with pytest.raises(sqlite3.OperationalError):
        Store(tmp_path / "s.db", readonly=True)._con.execute("DELETE FROM chunks")


def test_live_poll_fast_path_orders_per_gpu(tmp_path):
    st = Store(tmp_path / "s.db")

    def poll(t_s, gpu=(0, 1, 2)):
        return batch([t_s] * len(gpu), [100.0] * len(gpu), gpu=list(gpu))

    assert st.append(poll(5), GPUS) == 3
    assert st.append(poll(5, (0,)), GPUS) == 0  # same instant again
    assert st.append(poll(4, (1, 2)), GPUS) == 0  # earlier
    assert st.append(poll(6, (2, 2)), GPUS) == 1  # one GPU twice at one instant: 2nd is a dup
    st.flush()
    assert st.info()["quarantined"] == {"duplicate_timestamp": 2, "time_backwards": 2}
    st.close()


def test_codec_lossless_and_compact(tmp_path):
    """Grid values are stored as compressed integers and read back bit for bit; others raw."""
    from sensors.store import _decode_block, _encode_block

    rng = np.random.default_rng(0)
    cases = {
        "power_average": np.where(
            rng.random((30, 40)) < 0.1, np.nan, np.round(rng.uniform(0, 900, (30, 40)), 2)
        ),
        "energy_total": np.round(np.cumsum(rng.uniform(0, 700, (30, 200)), axis=0) + 5e5, 3),
        "temp_gpu": np.round(rng.normal(60, 2, (30, 300))),
        "utilization_gpu": rng.uniform(0, 100, (30, 4)),  # off-grid: must stay raw
        "clock_sm": np.full((2, 3), np.nan),
    }
    for f, a in cases.items():
        spec, payload = _encode_block(f, a)
        assert spec[1] == ("f8" if f in ("utilization_gpu", "clock_sm") else spec[1])
        out = _decode_block(spec, payload, a.shape, None)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, a)  # NaN == NaN here, values bit for bit
        if spec[1] != "f8":
            assert len(payload) < a.nbytes / 2
    st = Store(tmp_path / "s.db")
    t = np.repeat(np.arange(100), 3)
    g = np.tile(np.arange(3), 100)
    vals = {"power_average": np.round(rng.uniform(50, 700, 300), 2), "temp_gpu": 40.0 + g}
    st.append(Batch(T0 + t * 10**9, g, vals), GPUS)
    st.flush()
    ds = st.read()
    np.testing.assert_array_equal(ds.power_average.values.ravel(), vals["power_average"])
    assert ds.power_average.attrs["units"] == "W"
    st.close()


def test_schema_v1_store_is_read_and_upgraded(tmp_path):
    """A version-1 store (raw float64 blobs, no codec column) reads as before; a writer upgrades
    it; an unknown version is refused clearly."""
    path = tmp_path / "v1.db"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES('schema_version','1');"
        "CREATE TABLE gpus(gpu_id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, idx INTEGER,"
        " host TEXT, uuid TEXT, name TEXT, pci_bus_id TEXT, power_limit REAL,"
        " temp_slowdown REAL, temp_shutdown REAL, location TEXT, last_time_ns INTEGER);"
        "CREATE TABLE provenance(field TEXT NOT NULL, source TEXT NOT NULL, origin TEXT NOT NULL,"
        " kind TEXT, unit TEXT, window_s REAL, PRIMARY KEY(field, source, origin));"
        "CREATE TABLE chunks(chunk_id INTEGER PRIMARY KEY AUTOINCREMENT, t_min INTEGER NOT NULL,"
        " t_max INTEGER NOT NULL, n_samples INTEGER NOT NULL, n_times INTEGER NOT NULL,"
        " n_gpus INTEGER NOT NULL, fields TEXT NOT NULL, times BLOB NOT NULL, gpus BLOB NOT NULL,"
        " present BLOB, data BLOB NOT NULL, source TEXT);"
        "CREATE TABLE quarantine(id INTEGER PRIMARY KEY, reason TEXT NOT NULL, time_ns INTEGER,"
        " gpu TEXT, detail TEXT);"
        "CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO gpus(gpu_id, key, idx, host, last_time_ns) VALUES(1,'GPU-0',0,'h1',NULL);"
    )
    times = T0 + np.arange(4, dtype=np.int64) * 10**9
    power = np.array([[100.123456], [101.0], [102.5], [103.0]])  # raw float64, any digits
    con.execute(
        "INSERT INTO chunks(t_min,t_max,n_samples,n_times,n_gpus,fields,times,gpus,present,data,"
        "source) VALUES(?,?,4,4,1,'power_average',?,?,NULL,?,'old')",
        (int(times[0]), int(times[-1]), times.tobytes(), np.array([1]).tobytes(), power.tobytes()),
    )
    con.execute("UPDATE gpus SET last_time_ns=? WHERE gpu_id=1", (int(times[-1]),))
    con.commit()
    con.close()
    with contextlib.closing(Store(path, readonly=True)) as st:
        np.testing.assert_array_equal(st.read().power_average.values, power)
    with Store(path) as st:  # a writer upgrades in place and appends new-format chunks
        st.append(batch([4, 5], [104.25, 105.5], gpu=[0, 0]), GPUS[:1])
    with contextlib.closing(Store(path, readonly=True)) as st:
        v = st.read().power_average.values[:, 0]
        np.testing.assert_array_equal(v, [100.123456, 101.0, 102.5, 103.0, 104.25, 105.5])
        assert (
            st._con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
            == "2"
        )
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema version '99'.*reads versions 1, 2"):
        Store(path, readonly=True)


def test_pack_in_order_groups_consecutive_items_within_the_budget():
    from sensors.base import pack_in_order

    sizes = [3, 4, 2, 9, 1, 1]
    groups = pack_in_order("abcdef", sizes, budget=7)
    assert groups == [["a", "b"], ["c"], ["d"], ["e", "f"]]  # d alone: larger than the budget
    assert pack_in_order([], [], 5) == []


def test_compact_refuses_a_missing_or_foreign_file(tmp_path, capsys):
    from twin.cli import main

    missing = tmp_path / "typo.sqlite"
    assert main(["telemetry", "compact", "--store", str(missing)]) == 2
    assert not missing.exists()  # a typo must not create an empty store
    assert "no store at" in capsys.readouterr().err
    foreign = tmp_path / "notes.db"
    foreign.write_text("not a store")
    assert main(["telemetry", "compact", "--store", str(foreign)]) == 2
    assert "file is not a database" in capsys.readouterr().err
    assert foreign.read_text() == "not a store"
