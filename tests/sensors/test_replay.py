"""Replay: every real trace accounted for, values vs independent pandas, formats, pacing, CLI."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd
import pytest
from sensors_testlib import TELEMETRY_TRACES, info, twin

from sensors.base import Batch, GpuInfo
from sensors.exporter import Exporter
from sensors.replay import ReplaySource, parse_speed
from sensors.store import Store

#: anchor of relative-time replays (nvprof, Prometheus text without timestamps): 2023-11-14, inside
#: the GPU era (times before 2007 are quarantined as time_implausible)
START = 1_700_000_000.0


def replay_into(path, store_path, speed=math.inf, **kw):
    src = ReplaySource(path, speed, start=START, **kw)
    st = Store(store_path)
    st.record_provenance("replay", dict(src.provenance()))
    while (b := src.read()) is not None:
        st.append(b, src.devices(), "replay")
    st.flush()
    return src, st


def data_rows(path) -> int:
    with open(path) as fh:
        return sum(1 for line in fh if line.strip()) - 1


@pytest.mark.parametrize("name", TELEMETRY_TRACES)
def test_every_real_trace_row_accounted(shared_data, tmp_path, name):
    path = shared_data / "telemetry" / name
    src, st = replay_into(path, tmp_path / "s.db")
    i = st.info()
    assert i["samples"] + sum(i["quarantined"].values()) == data_rows(path) == i["rows"]
    assert src.rows_read == data_rows(path)
    st.close()


@pytest.mark.parametrize("name", TELEMETRY_TRACES[:2])
def test_nanogpt_energy_and_temperature_match_pandas(shared_data, tmp_path, name):
    path = shared_data / "telemetry" / name
    _, st = replay_into(path, tmp_path / "s.db")
    ds = st.read()
    st.close()
    raw = pd.read_csv(path, skipinitialspace=True)
    raw["t"] = (pd.to_datetime(raw["timestamp"]) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    assert ds.sizes["gpu"] == raw["gpu_index"].nunique() == 8
    for g, df in raw.groupby("gpu_index"):
        col = ds.sel(gpu=ds.gpu[ds["index"] == g].item())
        p = col.power_average.dropna("time")
        t = p.time.values.astype("int64") / 1e9
        e_store = np.trapezoid(p.values, t)
        e_pandas = np.trapezoid(df["power_W"].to_numpy(), df["t"].to_numpy())
        # float64 epoch seconds carry ~1e-7 s rounding: 1e-9 relative is the honest bound
        assert e_store == pytest.approx(e_pandas, rel=1e-9)
        assert e_store > 1e4  # tens of kJ per GPU: a real run, not an empty one
        assert float(col.temp_gpu.max()) == df["temperature_C"].max()
        assert int(col.utilization_gpu.notnull().sum()) == len(df)
    # provenance says averaged power from nvidia-smi
    assert "power.draw (average; window 1 s; W)" in ds.power_average.attrs["provenance"]


def test_nvprof_values_and_power_limit(shared_data, tmp_path):
    path = shared_data / "telemetry" / "titanv_pagerank_nvprof_samples.csv"
    _, st = replay_into(path, tmp_path / "s.db")
    ds = st.read()
    st.close()
    raw = pd.read_csv(path)
    pw = raw[raw.metric == "power_W"]
    assert int(ds.power_average.notnull().sum()) == len(pw)
    assert float(ds.power_average.mean()) == pytest.approx(pw.value.mean(), rel=1e-12)
    assert float(ds.power_limit.item()) == 250.0
    clk = raw[raw.metric == "sm_mem_clock_MHz"]
    assert float(ds.clock_memory.max()) == clk.value2.max()
    assert ds.time.size == len(raw)


def test_nvidia_smi_native_header_units_and_na(tmp_path):
    p = tmp_path / "smi.csv"
    p.write_text(
        "timestamp, index, name, uuid, power.draw [W], power.draw.instant [W], "
        "temperature.gpu, temperature.memory, utilization.gpu [%], clocks.current.sm [MHz], "
        "clocks_event_reasons.active\n"
        "2024/05/01 12:00:00.100, 0, NVIDIA H100 80GB HBM3, GPU-aaa, 395.12 W, 402.50 W, 45, 51, "
        "100 %, 1980 MHz, 0x0000000000000004\n"
        "2024/05/01 12:00:00.100, 1, NVIDIA H100 80GB HBM3, GPU-bbb, 80.00 W, [N/A], 30, [N/A], "
        "0 %, 345 MHz, 0x0000000000000001\n"
        "2024/05/01 12:00:01.100, 0, NVIDIA H100 80GB HBM3, GPU-aaa, 401.00 W, 399.00 W, 46, 52, "
        "100 %, 1980 MHz, 0x0000000000000000\n"
    )
    _, st = replay_into(p, tmp_path / "s.db")
    ds = st.read()
    assert st.info()["samples"] == 3 and st.info()["quarantined"] == {}
    st.close()
    assert list(ds.uuid.values) == ["GPU-aaa", "GPU-bbb"]
    assert ds.name.values[0] == "NVIDIA H100 80GB HBM3"
    a = ds.sel(gpu="GPU-aaa")
    assert a.power_average.values.tolist() == [395.12, 401.0]
    assert a.power_instant.values.tolist() == [402.5, 399.0]
    assert a.clocks_event_reasons.values.tolist() == [4.0, 0.0]
    assert ds.time.values[0] == np.datetime64("2024-05-01T12:00:00.100")
    b = ds.sel(gpu="GPU-bbb")
    assert math.isnan(float(b.power_instant[0])) and math.isnan(float(b.temp_memory[0]))
    assert float(b.utilization_gpu[0]) == 0.0


def test_bad_rows_quarantined_by_reason(shared_data, tmp_path):
    real = (shared_data / "telemetry" / "nanogpt_pr643_h100x8_32fcbd7a.csv").read_text()
    lines = real.splitlines()
    header, good = lines[0], lines[1:41]  # 5 ticks x 8 GPUs, taken from the real trace
    bad = [
        "2025-09-24T02:58:00.000Z,0, 42, 100, nan",  # nan
        "2025-09-24T02:58:00.000Z,1, 42, 100, -3.0",  # power_negative
        "2025-09-24T02:58:00.000Z,2, 42, 100, 99999",  # power_absurd
        "2025-09-24T02:58:00.000Z,3, 420, 100, 300",  # temperature_out_of_range
        "2025-09-24T02:58:00.000Z,4, 42, 130, 300",  # utilization_out_of_range
        "2025-09-24T02:57:00.000Z,5, 42, 100, 300",  # time_backwards
        lines[40],  # duplicate_timestamp (last good row again)
        "2025-09-24T02:58:00.000Z,6, 42",  # truncated_line
        "2025-09-24T02:58:00.000Z,7, 42, 100, 300, 7",  # malformed_line (extra field)
        "yesterday,7, 42, 100, 300",  # malformed_line (time)
        "2025-09-24T02:58:01.000Z,7, 4x2, 100, 300",  # malformed_line (number)
    ]
    p = tmp_path / "bad.csv"
    p.write_text("\n".join([header, *good, *bad]) + "\n2025-09-24T02:58:02.000Z,0, 4")
    _, st = replay_into(p, tmp_path / "s.db")
    i = st.info()
    st.close()
    assert i["quarantined"] == {
        "nan": 1,
        "power_negative": 1,
        "power_absurd": 1,
        "temperature_out_of_range": 1,
        "utilization_out_of_range": 1,
        "time_backwards": 1,
        "duplicate_timestamp": 1,
        "truncated_line": 2,
        "malformed_line": 3,
    }
    assert i["samples"] == 40
    assert i["samples"] + sum(i["quarantined"].values()) == data_rows(p)


def test_unknown_columns_counted_and_rows_kept(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text(
        "timestamp,gpu_index,temperature_C,fan_speed_rpm,power_W\n"
        "2025-01-01T00:00:00Z,0, 40, 1200, 100.5\n2025-01-01T00:00:01Z,0, 41, 1300, 101.5\n"
    )
    _, st = replay_into(p, tmp_path / "s.db")
    i = st.info()
    assert i["samples"] == 2
    # a column is not a row: it is reported apart and samples + quarantined == rows holds
    # (the old store counted it as a quarantined row and as a third row of this 2-row file)
    assert i["quarantined"] == {}
    assert i["ignored_columns"] == {"unknown_column": 1}
    assert i["samples"] + sum(i["quarantined"].values()) == i["rows"] == 2
    (rec,) = st.quarantine_records("unknown_column")
    assert "fan_speed_rpm" in rec[3] and "2 rows" in rec[3]
    st.close()


def test_prometheus_text_replay_round_trip(tmp_path):
    gpus = [
        GpuInfo(key=f"GPU-{i}", index=i, host="node7", uuid=f"GPU-{i}", name="H100")
        for i in range(2)
    ]
    text = []
    for k in range(3):
        exp = Exporter("node7", "sim")
        exp.update(
            Batch(
                [k, k],
                [0, 1],
                {
                    "power_average": [100.25 + k, 200.5 + k],
                    "energy_total": [1000.0 + k, 5.5],
                    "temp_gpu": [40.0, 41.0 + k],
                },
            ),
            gpus,
        )
        text.append(exp.render())
    p = tmp_path / "scrapes.prom"
    p.write_text("".join(text) + 'DCGM_FI_DEV_FB_USED{gpu="0"} 5\nthis is not a metric line\n')
    src, st = replay_into(p, tmp_path / "s.db", step=15.0)
    ds = st.read()
    i = st.info()
    st.close()
    assert ds.sizes == {"time": 3, "gpu": 2}
    np.testing.assert_array_equal(
        ds.sel(gpu="GPU-0").power_average.values, [100.25, 101.25, 102.25]
    )
    np.testing.assert_array_equal(ds.sel(gpu="GPU-0").energy_total.values, [1000.0, 1001.0, 1002.0])
    np.testing.assert_array_equal(ds.sel(gpu="GPU-1").temp_gpu.values, [41.0, 42.0, 43.0])
    assert np.diff(ds.time.values).astype("int64").tolist() == [15 * 10**9] * 2
    assert set(ds.host.values) == {"node7"}
    # health metrics (twin_*) and other DCGM fields are not GPU samples: counted as unknown
    assert i["quarantined"]["unknown_metric"] >= 1 + 3 * 9
    assert i["quarantined"]["malformed_line"] == 1


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.slept = 0.0
        self.calls = 0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.calls += 1
        self.slept += s
        self.t += s


@pytest.mark.parametrize("speed", [1.0, 10.0])
def test_pacing_recorded_and_scaled(shared_data, speed):
    path = shared_data / "telemetry" / "nanogpt_pr643_h100x8_32fcbd7a.csv"
    clk = FakeClock()
    src = ReplaySource(path, speed, clock=clk, sleep=clk.sleep)
    n = 0
    while (b := src.read()) is not None:
        n += len(b)
    raw = pd.read_csv(path, usecols=["timestamp"])
    t = pd.to_datetime(raw.timestamp)
    duration = (t.max() - t.min()).total_seconds()
    assert n == len(raw)
    assert clk.t == pytest.approx(duration / speed, abs=1e-6)


def test_speed_max_never_sleeps(shared_data):
    clk = FakeClock()
    src = ReplaySource(
        shared_data / "telemetry" / TELEMETRY_TRACES[2], math.inf, clock=clk, sleep=clk.sleep
    )
    while src.read() is not None:
        pass
    assert clk.calls == 0
    assert parse_speed("max") == math.inf and parse_speed("10") == 10.0
    with pytest.raises(ValueError, match="--speed"):
        parse_speed("fast")


def test_daemon_replay_exits_zero_and_stores_everything(shared_data, tmp_path):
    path = shared_data / "telemetry" / TELEMETRY_TRACES[0]
    store = tmp_path / "d.db"
    r = twin("sensord", "--source", f"replay:{path}", "--speed", "max", "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert '"event": "exit"' in r.stderr and "end of replay input" in r.stderr
    i = info(store)
    assert i["samples"] == data_rows(path) and i["gpus"] == 8
    assert i["first"] == "2025-09-24T03:17:04.490000+00:00"
    assert i["last"] == "2025-09-24T03:39:32.123000+00:00"
    with contextlib.closing(Store(store, readonly=True)) as st:
        peak = pd.read_csv(path, skipinitialspace=True)["power_W"].max()
        assert st.read().power_average.max().item() == peak > 690.0
