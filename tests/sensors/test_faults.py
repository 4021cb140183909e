"""Fault injection on a running ``twin sensord`` (issue 15): kill -9 at random points, the store
deleted under it, a second writer, a corrupted block.  Each case checks the guarantees of
docs/sensors.md ("Guarantees"): no acknowledged sample lost, none stored twice, every row
accounted for (stored, quarantined, or reported unwritten).

Daemons share a JAX compilation cache (module-scoped) so that each start costs the import, not
a recompilation; the whole module runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import time
import warnings

import numpy as np
import pytest
from sensors_testlib import sensord_argv, wait_until

from sensors.store import CorruptBlockWarning, Store

FAST = {"source": "sim", "interval": "0.01", "flush_interval": "0.03", "sim_gpus": "8"}


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jaxcache")),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def flushes(d) -> list[dict]:
    return [x for x in d.lines() if x.get("event") == "flush"]


def integrity(store) -> dict:
    """Samples, per-GPU order, duplicates and row accounting of the store at ``store``."""
    with contextlib.closing(Store(store, readonly=True)) as st:
        times = st.sample_times()
        cells = int(st.read().power_average.notnull().sum())
        i = st.info()
    allt = np.concatenate(list(times.values())) if times else np.zeros(0, np.int64)
    for key, t in times.items():
        assert np.all(np.diff(t) > 0), f"{key}: timestamps not strictly increasing"
    # no duplicates: the chunks' sample counts equal the distinct (time, GPU) cells read back
    assert cells == i["samples"] == allt.size
    assert i["samples"] + sum(i["quarantined"].values()) == i["rows"]
    return {"samples": i["samples"], "times": allt}


@pytest.fixture(scope="module")
def killed_store(tmp_path_factory, jax_cache):
    """A store written by five daemons, each SIGKILLed at a random moment after it began
    acknowledging; returns the store and, per run, (committed_total, last_time_ns) last logged
    and the store's samples after the kill."""
    from sensors_testlib import Proc, twin_env

    tmp = tmp_path_factory.mktemp("kill9")
    store = tmp / "crash.db"
    rng = random.Random(1234)
    runs = []
    for run in range(5):
        d = Proc(
            sensord_argv(store=str(store), seed=str(run), **FAST),
            tmp / f"crash{run}.log",
            twin_env(**jax_cache),
        )
        try:
            wait_until(lambda d=d: flushes(d), 60, "a first flush")
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            d.stop(signal.SIGKILL)
        last = flushes(d)[-1]
        runs.append((last["committed_total"], last["last_time_ns"], integrity(store)))
    return store, runs


def test_kill9_at_random_points_loses_no_acknowledged_sample(killed_store):
    """Five SIGKILLs; after each, every acknowledged sample is there, once, in order, and a
    new daemon opens the store although the killed one's lock file still names it."""
    store, runs = killed_store
    acked_so_far = 0
    prev_last = -1
    for run, (acked, last_ns, after) in enumerate(runs):
        acked_so_far += acked
        this_run = int(((after["times"] > prev_last) & (after["times"] <= last_ns)).sum())
        assert this_run >= acked, f"run {run}: acknowledged samples missing"
        assert int((after["times"] <= last_ns).sum()) >= acked_so_far
        prev_last = last_ns
    assert '"pid"' in (store.parent / "crash.db.lock").read_text()
    with Store(store) as st:  # a writer can reopen after the last kill (stale lock ignored)
        assert st.info()["samples"] >= acked_so_far


def test_corrupted_block_costs_only_that_block(killed_store, tmp_path):
    """64 flipped bytes in one data block of a daemon-written store: reads skip and name that
    block and return every other sample as stored; `check` finds exactly it."""
    src, _ = killed_store
    store = tmp_path / "corrupt.db"
    Store(src).close()  # a writer's close folds the WAL into the file: one file to copy
    shutil.copy(src, store)
    with contextlib.closing(Store(store, readonly=True)) as st:
        before = st.read()
    con = sqlite3.connect(store)
    cid, blob, fields, n, codec = con.execute(
        "SELECT chunk_id, data, fields, n_samples, codec FROM chunks "
        "ORDER BY n_samples DESC LIMIT 1"
    ).fetchone()
    first = json.loads(codec)["f"][0]  # the chunk's first block: power_average
    end = min(64, first[5])
    b = bytearray(blob)
    b[:end] = bytes(x ^ 0xFF for x in b[:end])  # up to 64 bytes, all inside that block
    con.execute("UPDATE chunks SET data=? WHERE chunk_id=?", (bytes(b), cid))
    con.commit()
    con.close()
    with (
        contextlib.closing(Store(store, readonly=True)) as st,
        warnings.catch_warnings(record=True) as rec,
    ):
        warnings.simplefilter("always")
        after = st.read()
        bad = st.check()["bad"]
    msgs = [str(w.message) for w in rec if issubclass(w.category, CorruptBlockWarning)]
    assert len(msgs) == 1 and f"chunk {cid}, field {fields.split(',')[0]}" in msgs[0], msgs
    assert [(x["chunk"], x["fields"]) for x in bad] == [(cid, [fields.split(",")[0]])]
    p0, p1 = before.power_average.values, after.power_average.values
    lost = np.isnan(p1) & ~np.isnan(p0)
    assert int(lost.sum()) == n  # exactly that block's samples
    np.testing.assert_array_equal(p1[~lost], p0[~lost])
    for f in before.data_vars:  # the chunk's other fields still read
        if f != "power_average":
            np.testing.assert_array_equal(after[f].values, before[f].values)


def test_second_writer_refused_then_store_deleted(spawn, tmp_path, jax_cache):
    """A second daemon on the same store exits 2 naming the first one's pid and host; the
    first keeps writing.  Then the store file is deleted under it: it stops acknowledging,
    exits 1 with the count of samples it could not write, and every sample it read is
    either in the (deleted) file or in that count."""
    store = tmp_path / "s.db"
    a = spawn(sensord_argv(store=str(store), **FAST), "a", **jax_cache)
    wait_until(lambda: flushes(a), 60, "a's first flush")
    b = spawn(sensord_argv(store=str(store), **FAST), "b", **jax_cache)
    assert b.p.wait(60) == 2
    pid = next(x for x in a.lines() if x.get("event") == "start")["pid"]
    err = b.log.read_text()
    assert f"already being written by pid {pid} on host " in err and "s.db.lock" in err
    n = len(flushes(a))
    wait_until(lambda: len(flushes(a)) > n + 2, 30, "a still acknowledging")
    keep = tmp_path / "kept.db"
    os.link(store, keep)  # the inode outlives the name: count what the daemon committed
    store.unlink()
    assert a.p.wait(30) == 1
    logs = a.lines()
    lost = next(x for x in logs if x.get("event") == "store_lost")
    ex = next(x for x in logs if x.get("event") == "exit")
    assert ex["reason"] == "store file lost" and ex["status"] == 1
    assert lost["unwritten"] == ex["unwritten"] > 0
    assert "was deleted" in lost["msg"] and f"{ex['unwritten']} samples not written" in lost["msg"]
    acked = flushes(a)[-1]["committed_total"]
    assert lost["acknowledged_lost"] == acked
    assert not store.exists()  # no empty store made behind the operator's back
    got = integrity(keep)
    assert got["samples"] == acked + ex["committed_into_lost_file"]  # none acked lost
    assert got["samples"] + ex["unwritten"] - ex["committed_into_lost_file"] == ex["read"]
