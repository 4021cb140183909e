"""Fleet reader against a real Prometheus (Debian's binary) scraping a simulated sensord."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time

import numpy as np
import pytest
from sensors_testlib import free_port, http_get, sensord_argv, wait_until

from sensors.fleet import PrometheusReader, PrometheusUnavailable
from sensors.store import Store

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus_scraping_sensord(spawn, tmp_path):
    if PROMETHEUS is None:
        pytest.fail("the prometheus binary is missing: apt-get install prometheus (.ci/run does)")
    mport, pport = free_port(), free_port()
    store = tmp_path / "s.db"
    d = spawn(
        sensord_argv(
            source="sim",
            store=str(store),
            interval="0.2",
            metrics_addr=f"127.0.0.1:{mport}",
            sim_gpus="4",
            hostname="simnode",
        ),
        "sensord",
    )
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: twin\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{mport}']\n"
    )
    p = spawn(
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{pport}",
            "--log.level=warn",
        ],
        "prometheus",
    )
    url = f"http://127.0.0.1:{pport}"
    wait_until(lambda: http_get(f"{url}/-/ready") is not None, 60, "prometheus ready")
    yield d, p, url, store


def test_round_trip_matches_daemon_store(prometheus_scraping_sensord):
    d, p, url, store = prometheus_scraping_sensord
    reader = PrometheusReader(url, backoff=0.2)
    wait_until(
        lambda: len(reader.series("DCGM_FI_DEV_POWER_USAGE", time.time() - 60, time.time())) == 4,
        60,
        "4 GPU series in prometheus",
        interval=0.5,
    )
    t_start = time.time()
    time.sleep(6.0)
    t_end = time.time()
    assert d.stop(signal.SIGTERM) == 0
    ds = reader.read(t_start, t_end, step=1.0)
    # one request per metric, and chunked: 3-point chunks give the same answer
    chunked = PrometheusReader(url, max_points=3, max_series=2).read(t_start, t_end, step=1.0)
    np.testing.assert_array_equal(chunked.power_average.values, ds.power_average.values)
    assert chunked.gpu.values.tolist() == ds.gpu.values.tolist()
    with contextlib.closing(Store(store, readonly=True)) as st:
        own = st.read()
    assert sorted(ds.uuid.values) == sorted(own.uuid.values)
    assert set(ds.host.values) == {"simnode"}
    assert ds.sizes["time"] >= 5
    checked = 0
    for field in ("power_average", "temp_gpu", "energy_total", "utilization_gpu"):
        for uuid in ds.uuid.values:
            prom = ds[field].sel(gpu=uuid).dropna("time")
            mine = (
                own[field].isel(gpu=int(np.flatnonzero(own.uuid.values == uuid)[0])).dropna("time")
            )
            mt = mine.time.values.astype("int64")
            for t, v in zip(prom.time.values.astype("int64"), prom.values, strict=True):
                # Prometheus holds the value scraped at or before t: it must be one of the
                # daemon's own samples from the preceding few seconds, exactly.
                window = (mt <= t) & (mt >= t - 4_000_000_000)
                assert np.any(mine.values[window] == v), (field, uuid, t, v)
                checked += 1
    assert checked >= 4 * 4 * 5
    assert ds.energy_total.attrs["units"] == "J"


def test_unreachable_prometheus_retries_then_clear_message():
    port = free_port()
    slept = []
    reader = PrometheusReader(
        f"http://127.0.0.1:{port}", retries=3, backoff=0.5, sleep=slept.append
    )
    with pytest.raises(
        PrometheusUnavailable, match=f"127.0.0.1:{port} unreachable after 4 attempts"
    ):
        reader.read(0, 10, step=1.0)
    assert slept == [0.5, 1.0, 2.0]
