"""Faults in recorded telemetry (issue 15): implausible times, units, missing GPU columns.

Each test builds its input in a tmp dir, from text written here or from a slice of a shared trace
taken at test time (never committed).  Every case checks the accounting too:
``samples + quarantined == rows`` (rows of the file).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from sensors_testlib import ROOT, twin, twin_env

from sensors.errors import InputError
from sensors.replay import ReplaySource
from sensors.store import Store
from sensors.validate import Limits

TRACE = "nanogpt_pr643_h100x8_b443a1c3.csv"
STRAY_2099 = "2099-01-01T00:00:00.000Z,0, 48, 100, 397.30\n"


def replay(path, tmp_path, **kw):
    src = ReplaySource(path, math.inf, **kw)
    st = Store(tmp_path / "s.db", limits=kw.get("limits"))
    while (b := src.read()) is not None:
        st.append(b, src.devices(), "replay")
    st.flush()
    info = st.info()
    return src, st, info


def accounted(info, rows):
    assert info["rows"] == rows
    assert info["samples"] + sum(info["quarantined"].values()) == rows


@pytest.fixture
def file_2099(shared_data, tmp_path):
    """2,000 rows of a real trace (250 ticks x 8 GPUs) and one row of GPU 0 dated 2099 after
    tick 125: 125 valid rows of GPU 0 follow it."""
    lines = (shared_data / "telemetry" / TRACE).read_text().splitlines(True)
    rows = lines[1:2001]
    path = tmp_path / "f2099.csv"
    path.write_text("".join([lines[0], *rows[:1000], STRAY_2099, *rows[1000:]]))
    return path


def test_far_future_row_quarantined_and_the_rows_after_it_stored(file_2099, tmp_path):
    # old code: the 2099 row was stored and the 125 rows of GPU 0 after it were time_backwards
    _, st, info = replay(file_2099, tmp_path)
    assert info["quarantined"] == {"time_implausible": 1}
    accounted(info, 2001)
    ds = st.read()
    gpu0 = ds.sel(gpu=ds.gpu[ds["index"] == 0].item())
    assert int(gpu0.power_average.notnull().sum()) == 250
    assert str(ds.time.values.max()).startswith("2025-09-24")
    (rec,) = st.quarantine_records("time_implausible")
    assert "line 1002" in rec[3] and "2099-01-01" in rec[3]
    st.close()


def _sample_file(path, times, idx=0):
    rows = [f"{t},{idx}, 40, 50, 100.5\n" for t in times]
    path.write_text(
        "timestamp,gpu_index,temperature_C,utilization_gpu_percent,power_W\n" + "".join(rows)
    )
    return path


def _iso(t_s):
    return np.datetime_as_string(np.datetime64(int(t_s * 1000), "ms"), unit="ms") + "Z"


def test_time_before_the_gpu_era_and_past_the_clock_skew_quarantined(tmp_path):
    # old code stored 1970 and a time 2 days past the reader's clock (and then called every
    # later row time_backwards)
    now = 1_780_000_000.0
    ts = [_iso(now - 3600 + k) for k in range(30)]
    ts[5] = "1970-01-01T00:00:05.000Z"
    ts[10] = _iso(now + 2 * 86400)
    p = _sample_file(tmp_path / "t.csv", ts)
    limits = Limits(clock=lambda: now)
    _, st, info = replay(p, tmp_path, limits=limits, span_margin_s=3 * 86400)
    assert info["quarantined"] == {"time_implausible": 2}
    accounted(info, 30)
    details = " ".join(r[3] for r in st.quarantine_records())
    assert "before 2007-01-01" in details and "past this reader's clock" in details
    st.close()


def test_time_far_outside_the_files_span_quarantined(tmp_path):
    # a stray time within the reader's clock but a year away from the rest of the file
    ts = [_iso(1_750_000_000 + k) for k in range(100)]
    ts[40] = _iso(1_750_000_000 + 365 * 86400)
    p = _sample_file(tmp_path / "s.csv", ts)
    _, st, info = replay(p, tmp_path, limits=Limits(clock=lambda: 1_790_000_000.0))
    assert info["quarantined"] == {"time_implausible": 1}
    assert info["samples"] == 99
    assert "far outside this file's span" in st.quarantine_records()[0][3]
    st.close()


def test_store_validation_refuses_implausible_times_from_any_source():
    from sensors.base import Batch
    from sensors.validate import validate

    now = 1_800_000_000
    b = Batch([(now - 10) * 10**9, 10**9, (now + 10 * 86400) * 10**9, (now - 5) * 10**9],
              [0, 0, 0, 0], {"power_average": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    last: dict[str, int] = {}
    ok, recs = validate(b, ["g"], last, Limits(clock=lambda: now))
    assert ok.tolist() == [True, False, False, True]
    assert [r.reason for r in recs] == ["time_implausible"] * 2
    assert last["g"] == (now - 5) * 10**9  # the bad times never advanced the GPU's clock


SMI_HEADER = (
    "timestamp, index, power.draw [{p}], temperature.gpu, utilization.gpu [%], memory.used [MiB]\n"
)


def _smi(path, p_unit, cells):
    rows = [
        f"2025/09/24 03:17:0{k}.000, 0, {power}, {temp}, 50 %, 1234 MiB\n"
        for k, (power, temp) in enumerate(cells)
    ]
    path.write_text(SMI_HEADER.format(p=p_unit) + "".join(rows))
    return path


@pytest.mark.parametrize(
    ("p_unit", "power", "temp", "want_w", "want_c"),
    [
        ("W", "390.78 W", "45", 390.78, 45.0),
        ("kW", "0.39078 kW", "45", 390.78, 45.0),
        ("mW", "390780 mW", "45", 390.78, 45.0),
        ("kW", "0.39078", "45", 390.78, 45.0),  # header unit, plain cells
        ("W", "390.78 W", "107 F", 390.78, 41.666666666666664),
    ],
)
def test_units_read_from_header_and_cells(tmp_path, p_unit, power, temp, want_w, want_c):
    # old code stored 0.39078 kW as 0.39 W, 107 F as 107 degC, and mW as absurd power
    p = _smi(tmp_path / "u.csv", p_unit, [(power, temp)] * 3)
    _, st, info = replay(p, tmp_path)
    ds = st.read()
    assert info["quarantined"] == {}
    accounted(info, 3)
    np.testing.assert_allclose(ds.power_average.values.ravel(), want_w, rtol=1e-12)
    np.testing.assert_allclose(ds.temp_gpu.values.ravel(), want_c, rtol=1e-12)
    assert info["ignored_columns"] == {"unknown_column": 1}  # memory.used, not a store field
    st.close()


def test_unknown_cell_unit_quarantined_with_its_name(tmp_path):
    p = _smi(tmp_path / "u.csv", "W", [("390 W", "45"), ("390 furlongs", "45"), ("390 C", "45")])
    _, st, info = replay(p, tmp_path)
    assert info["quarantined"] == {"unknown_unit": 2}
    accounted(info, 3)
    details = [r[3] for r in st.quarantine_records("unknown_unit")]
    assert "'furlongs'" in details[0] and "'C'" in details[1]
    st.close()


def test_unknown_header_unit_refuses_the_file_naming_column_and_unit(tmp_path):
    p = _smi(tmp_path / "u.csv", "furlongs", [("390", "45")])
    with pytest.raises(InputError, match=r"power\.draw \[furlongs\].*'furlongs'.*a unit of W"):
        ReplaySource(p, math.inf)


def test_power_without_a_unit_needs_an_override(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("timestamp,index,power.draw,temperature.gpu\n"
                 "2025-01-01T00:00:00Z,0,390780,45\n2025-01-01T00:00:01Z,0,390790,46\n")  # fmt: skip
    with pytest.raises(InputError, match=r"'power\.draw'.*--power-unit"):
        ReplaySource(p, math.inf)
    _, st, info = replay(p, tmp_path, units={"power": "mW", "temperature": "F"})
    ds = st.read()
    np.testing.assert_allclose(ds.power_average.values.ravel(), [390.78, 390.79])
    np.testing.assert_allclose(ds.temp_gpu.values.ravel(), [(45 - 32) / 1.8, (46 - 32) / 1.8])
    accounted(info, 2)
    st.close()


def test_override_that_contradicts_the_header_is_refused(tmp_path):
    p = _smi(tmp_path / "u.csv", "W", [("390", "45")])
    with pytest.raises(InputError, match="header says 'W'"):
        ReplaySource(p, math.inf, units={"power": "kW"})


def test_missing_gpu_column_is_an_error_and_uuid_is_enough(tmp_path):
    # old code put every row on GPU 0: 7 of 8 rows per tick became duplicate_timestamp
    rows = "".join(
        f"2025-01-01T00:00:0{k}Z,GPU-{g}, 40, 100.5\n" for k in range(3) for g in range(8)
    )
    p = tmp_path / "noidx.csv"
    p.write_text("timestamp, temperature_C, power_W\n" + "\n".join(
        ",".join(r.split(",")[i] for i in (0, 2, 3)) for r in rows.splitlines()) + "\n")  # fmt: skip
    with pytest.raises(InputError, match="a GPU column"):
        ReplaySource(p, math.inf)
    p.write_text("timestamp, uuid, temperature_C, power_W\n" + rows)
    _, st, info = replay(p, tmp_path)
    assert info["gpus"] == 8 and info["quarantined"] == {}
    accounted(info, 24)
    st.close()


def test_messages_print_plain_numbers():
    # old: "gpus: got np.int64(-5); expected ..."
    assert "got -5;" in str(InputError("gpus", np.int64(-5), "a positive count"))


# ------------------------------------------------------------------ twin: calibrate, validate
def test_grid_is_bounded_before_allocating(tmp_path):
    """A Dataset with a 2099 time (e.g. a store written before these checks) gets a grid of
    its readings (the 73 years without any are left out; old code allocated a 17 GiB grid);
    readings too sparse for the grid (one every 29 min, under the cut) are refused with the
    span named before anything is allocated."""
    from twin.io.telemetry import GRID_CUT_GAP_S, to_grid
    from twin.units import SpecError

    t = np.array(["2025-09-24T00:00:00", "2025-09-24T00:00:01", "2099-01-01T00:00:00"],
                 dtype="datetime64[ns]")  # fmt: skip
    ds = xr.Dataset(
        {"temp_gpu": (("time", "gpu"), [[40.0], [41.0], [42.0]]),
         "power_average": (("time", "gpu"), [[100.0], [101.0], [102.0]])},
        coords={"time": t, "gpu": ["g0"]},
    )  # fmt: skip
    g = to_grid(ds)
    assert g.n_steps < 1000 and len(g.cuts) == 1 and g.times[-1] == t[-1].astype(np.int64)
    n = 2400
    sparse = xr.Dataset(
        {"temp_gpu": (("time", "gpu"), np.full((n, 1), 40.0)),
         "power_average": (("time", "gpu"), np.full((n, 1), 100.0))},
        coords={"time": t[0] + np.arange(n) * np.timedelta64(int(GRID_CUT_GAP_S) - 1, "s"),
                "gpu": ["g0"]},
    )  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SpecError, match=r"50.0 days on the grid.*--start/--end"):
        to_grid(sparse)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_reading_the_2099_file_stays_small(file_2099):
    """open_telemetry + to_grid of the 2099 file in a fresh process: a few hundred MB at most
    (old: the grid alone asked for 17 GiB); the calibrate CLI itself peaks at ~0.6 GB."""
    code = (
        "import resource, sys\n"
        "from twin.io.telemetry import open_telemetry, to_grid\n"
        f"g = to_grid(open_telemetry({str(file_2099)!r}))\n"
        "print(g.n_steps, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=twin_env(), cwd=ROOT, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    steps, rss_kib = int(r.stdout.split()[0]), int(r.stdout.split()[-1])
    assert steps < 100  # 80 s of telemetry on a 1 s grid
    assert rss_kib < 2 * 2**20  # < 2 GiB


@pytest.mark.slow
def test_calibrate_reports_what_it_quarantined(file_2099, tmp_path):
    """``twin calibrate --json`` carries the ingest report and says it on stderr (old code: no
    word about the quarantined rows); ~35 s, the fit included."""
    r = twin("calibrate", "--telemetry", str(file_2099), "--facility", "h100-node-air", "--json",
             timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ingest"]["quarantined"] == {"time_implausible": 1}
    assert out["ingest"]["rows"] == 2001 and out["ingest"]["samples"] == 2000
    assert out["n_gpus"] == 8
    assert "2,001 rows read: 2,000 samples, 1 quarantined (time_implausible 1)" in r.stderr


def test_no_samples_left_says_why(tmp_path):
    # old: "0 times x 0 GPUs" with no reason
    from twin.io.telemetry import open_telemetry
    from twin.units import SpecError

    p = tmp_path / "bad.csv"
    p.write_text("timestamp,index,power.draw [W],temperature.gpu\n"
                 "2025-01-01T00:00:00Z,0,390 furlongs,45\n2025-01-01T00:00:01Z,0,391 furlongs,45\n")  # fmt: skip
    with pytest.raises(
        SpecError, match=r"2 rows read: 0 samples, 2 quarantined \(unknown_unit 2\)"
    ):
        open_telemetry(p)
