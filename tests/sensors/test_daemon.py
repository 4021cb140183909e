"""sensord: /metrics, env configuration, clean SIGTERM, and the SIGKILL crash test."""

from __future__ import annotations

import contextlib
import random
import signal
import time

import numpy as np
from sensors_testlib import free_port, http_get, info, sensord_argv, wait_until

from sensors.store import Store


def test_env_config_metrics_and_clean_sigterm(spawn, tmp_path):
    port = free_port()
    store = tmp_path / "s.db"
    d = spawn(
        sensord_argv(),
        "sensord",
        TWIN_SOURCE="sim",
        TWIN_STORE=str(store),
        TWIN_INTERVAL="0.1",
        TWIN_METRICS_ADDR=f":{port}",
        TWIN_SIM_GPUS="4",
        TWIN_HOSTNAME="node-x",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    text = wait_until(
        lambda: (t := http_get(url)) and "DCGM_FI_DEV_POWER_USAGE{" in t and t, 60, "/metrics"
    )
    assert text.count("DCGM_FI_DEV_GPU_TEMP{") == 4
    assert 'Hostname="node-x"' in text and 'device="nvidia3"' in text
    assert 'twin_collector_success{collector="sim"} 1' in text
    wait_until(
        lambda: (
            "twin_ingest_samples_total 0" not in (http_get(url) or "twin_ingest_samples_total 0")
        ),
        10,
        "a flush",
    )
    assert d.stop(signal.SIGTERM) == 0
    logs = d.lines()
    start = next(x for x in logs if x.get("event") == "start")
    assert start["metrics_addr"] == f"127.0.0.1:{port}"  # loopback by default
    ex = next(x for x in logs if x.get("event") == "exit")
    assert ex["reason"] == "stopped" and ex["status"] == 0
    i = info(store)
    assert i["samples"] == ex["samples"] > 0 and i["samples"] % 4 == 0 and i["gpus"] == 4
    assert i["quarantined"] == {}


def test_sigint_flushes_everything_read(spawn, tmp_path):
    store = tmp_path / "s.db"
    d = spawn(
        sensord_argv(
            source="sim", store=str(store), interval="0.05", flush_interval="100", sim_gpus="2"
        ),
        "sensord",
    )
    wait_until(lambda: any(x.get("event") == "start" for x in d.lines()), 60, "start")
    time.sleep(3.0)  # the first poll includes JIT compilation (~1 s)
    assert d.stop(signal.SIGINT) == 0
    # the flush interval was never reached: everything came from the final flush
    flushes = [x for x in d.lines() if x.get("event") == "flush"]
    assert len(flushes) == 1
    assert info(store)["samples"] == flushes[0]["committed_total"] >= 2 * 10


def test_crash_sigkill_five_times(spawn, tmp_path):
    """SIGKILL at random moments while writing: acknowledged samples all survive, none twice."""
    store = tmp_path / "crash.db"
    rng = random.Random(1234)
    acked: list[tuple[int, int]] = []  # per run: (committed_total, last_time_ns) of the last ack
    for run in range(5):
        d = spawn(
            sensord_argv(
                source="sim",
                store=str(store),
                interval="0.01",
                flush_interval="0.03",
                sim_gpus="8",
                seed=str(run),
            ),
            f"crash{run}",
        )
        wait_until(
            lambda d=d: sum(x.get("event") == "flush" for x in d.lines()) >= 3, 60, "flushes"
        )
        time.sleep(rng.uniform(0.0, 0.7))
        d.stop(signal.SIGKILL)
        flushes = [x for x in d.lines() if x.get("event") == "flush"]
        acked.append((flushes[-1]["committed_total"], flushes[-1]["last_time_ns"]))
        # the store opens after every kill, and holds everything acknowledged so far
        with contextlib.closing(Store(store, readonly=True)) as st:
            times = st.sample_times()
            allt = np.concatenate(list(times.values()))
            prev_last = acked[-2][1] if run else -1
            this_run = int(((allt > prev_last) & (allt <= acked[-1][1])).sum())
            assert this_run >= acked[-1][0], f"run {run}: acknowledged samples missing"
            assert int((allt <= acked[-1][1]).sum()) >= sum(a for a, _ in acked)
            for key, t in times.items():
                assert np.all(np.diff(t) > 0), f"{key}: timestamps not increasing"
            # no duplicates: chunk sample counts equal the distinct (time, gpu) cells read back
            ds = st.read()
            cells = int(ds.power_average.notnull().sum())
            assert cells == st.info()["samples"] == allt.size
    # a writer can reopen and continue after the last kill
    with Store(store) as st:
        assert st.info()["samples"] >= sum(a for a, _ in acked)
