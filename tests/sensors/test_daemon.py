"""sensord: /metrics, env configuration, clean SIGTERM (the SIGKILL crash test is in test_faults.py)."""

from __future__ import annotations

import signal
import time

from sensors_testlib import free_port, http_get, info, sensord_argv, wait_until


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
