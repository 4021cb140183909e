"""Exposition text: golden file, dcgm-exporter names/labels, parseable by Prometheus' parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sensors_testlib import free_port, http_get, info, sensord_argv, wait_until

from sensors.base import Batch, GpuInfo
from sensors.exporter import Exporter, parse_addr
from sensors.metrics import catalogue
from sensors.store import Store

GOLDEN = Path(__file__).with_name("fixtures") / "golden_exposition.txt"


def snapshot() -> Exporter:
    gpus = [
        GpuInfo(
            key=f"GPU-{c}",
            index=i,
            host="node-a",
            uuid=f"GPU-{c}",
            name="NVIDIA H100 80GB HBM3",
            pci_bus_id=f"00000000:{0x18 + i:02X}:00.0",
        )
        for i, c in enumerate("ab")
    ]
    exp = Exporter("node-a", "nvml")
    nan = float("nan")
    exp.update(
        Batch(
            [1, 1, 2],
            [0, 1, 0],
            {
                "power_average": [395.0, 80.25, 401.5],
                "power_instant": [410.75, nan, 399.0],
                "energy_total": [123456.789, 5000.0, 123457.5],
                "temp_gpu": [45.0, 31.0, 46.0],
                "temp_memory": [51.0, nan, 52.0],
                "clock_sm": [1980.0, 345.0, 1980.0],
                "clock_memory": [2619.0, 2619.0, 2619.0],
                "utilization_gpu": [100.0, 0.0, 99.0],
                "clocks_event_reasons": [4.0, 1.0, 0.0],
            },
        ),
        gpus,
    )
    exp.set_health(
        twin_ingest_samples_total=3, twin_ingest_rows_total=4, twin_ingest_lag_seconds=0.5
    )
    exp.set_quarantined({"nan": 1})
    return exp


def test_golden_exposition():
    text = snapshot().render()
    assert text == GOLDEN.read_text()


def test_dcgm_names_labels_units_and_parser():
    fams = {f.name: f for f in text_string_to_metric_families(snapshot().render())}
    for name in (
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_POWER_USAGE_INSTANT",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_GPU_UTIL",
    ):
        assert name in fams, name
    s = {(x.labels["gpu"]): x for x in fams["DCGM_FI_DEV_POWER_USAGE"].samples}
    assert s["0"].value == 401.5  # the latest sample of GPU 0
    assert s["0"].labels == {
        "gpu": "0",
        "UUID": "GPU-a",
        "pci_bus_id": "00000000:18:00.0",
        "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": "node-a",
    }
    # energy in mJ as dcgm-exporter (the store keeps J)
    energy = fams["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
    assert {x.labels["gpu"]: x.value for x in energy.samples} == {"0": 123457500.0, "1": 5000000.0}
    # unsupported field omitted for that GPU only
    assert [x.labels["gpu"] for x in fams["DCGM_FI_DEV_MEMORY_TEMP"].samples] == ["0"]
    q = {x.labels["reason"]: x.value for x in fams["twin_ingest_quarantined"].samples}
    assert q["nan"] == 1 and q["time_backwards"] == 0


def test_catalogue_is_complete_and_named_by_convention():
    cat = catalogue()
    names = [m.name for m in cat]
    assert len(names) == len(set(names))
    for m in cat:
        if m.name.startswith("twin_") and m.type == "counter":
            assert m.name.endswith("_total"), m.name
        assert m.help.strip(), m.name


def test_metrics_addr_defaults_to_loopback():
    assert parse_addr(":9400") == ("127.0.0.1", 9400)
    assert parse_addr("0.0.0.0:9400") == ("0.0.0.0", 9400)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_addr("9400")


def test_non_utf8_names_and_control_characters_are_escaped_not_fatal():
    """A hostname or GPU name holding bytes that are not UTF-8 (``--hostname $'\\xff'`` reaches
    Python as the surrogate escape U+DCFF) renders as the text ``\\xff``; CR and NUL in a label
    value are escaped too, so the body encodes and Prometheus' parser reads every label back."""
    gpu = GpuInfo(
        key="GPU-x",
        index=0,
        host="",
        uuid="GPU-x\r\nfake_metric 1",
        name="H100\x00\udcfe",
        pci_bus_id='00000000:18:00.0"\\',
    )
    exp = Exporter("node-\udcff", "sim")
    exp.update(Batch([1], [0], {"temp_gpu": [40.0]}), [gpu])
    body = exp.render().encode("utf-8")  # raised UnicodeEncodeError before
    text = body.decode("utf-8")
    assert "\r" not in text and "\x00" not in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = fams["DCGM_FI_DEV_GPU_TEMP"].samples
    assert sample.labels["Hostname"] == "node-\\xff"
    assert sample.labels["modelName"] == "H100\\x00\\xfe"
    assert sample.labels["UUID"] == "GPU-x\\r\nfake_metric 1"
    assert sample.labels["pci_bus_id"] == '00000000:18:00.0"\\'
    assert "fake_metric" not in fams


def test_sensord_starts_with_a_hostname_that_is_not_utf8(spawn, tmp_path):
    """``twin sensord --hostname $'\\xff'`` raised UnicodeEncodeError before the first poll; the
    label is kept as its escaped text ``\\xff`` where it is stored and shown in /metrics."""
    port, store = free_port(), tmp_path / "s.db"
    argv = sensord_argv(
        "--hostname", "node-\udcff", store=store, interval=0.1, sim_gpus=2, metrics_addr=f":{port}"
    )
    d = spawn(argv, "sensord")
    url = f"http://127.0.0.1:{port}/metrics"

    def scraped() -> str | None:
        if d.p.poll() is not None:  # exited (the old code: a traceback at start)
            pytest.fail(d.log.read_text()[-2000:])
        text = http_get(url)
        return text if text and "DCGM_FI_DEV_GPU_TEMP{" in text else None

    text = wait_until(scraped, 60, "the GPU metrics")
    assert 'Hostname="node-\\\\xff"' in text
    wait_until(lambda: info(store)["samples"] > 0, 30, "a flush")
    assert d.stop() == 0, d.log.read_text()[-2000:]
    with Store(store, readonly=True) as st:
        assert set(st.read().host.values.tolist()) == {"node-\\xff"}
