"""Job format, Alibaba trace loader and generator (twin.io.jobs)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from twin.io.jobs import generate_jobs, load_jobs, trace_statistics, write_jobs
from twin.units import SpecError

TRACE = "jobs/alibaba_gpu_v2023_openb_pod_list_default.csv"
SUPERFACTORY_GPUS = 303_840  # data/facilities/superfactory.toml: 151,200 + 152,640
SITE_GPUS = 151_200


def test_trace_is_recognised_by_header_and_scaled_to_load(shared_data):
    jobs = load_jobs(
        shared_data / TRACE,
        facility_gpus=SUPERFACTORY_GPUS,
        load=0.7,
        hours=168,
        site_gpus=SITE_GPUS,
    )
    t = jobs.table
    assert jobs.meta["format"] == "alibaba_openb"
    # Little's-law scaling: offered GPU load within the realistic 60-85 % band, near the target.
    assert 0.6 <= jobs.meta["offered_load"] <= 0.85
    assert abs(jobs.meta["offered_load"] - 0.7) < 0.03
    assert set(t.workload) == {"training", "inference", "batch"}
    # BE pods are flexible batch work with a deferral window; the others are not deferrable.
    assert (t.deferral[t.workload == "batch"] > 0).all()
    assert (t.deferral[t.workload != "batch"] == 0).all()
    # Locality: large training jobs take whole racks; no job exceeds a site.
    big = t[(t.workload == "training") & (t.gpus > 36)]
    assert len(big) and (big.gpus % 72 == 0).all()
    assert t.gpus.max() <= SITE_GPUS
    # Replicas of the window, each pod present once per replica.
    assert len(t) == jobs.meta["pods"] * jobs.meta["replicas"]
    assert t.arrival.between(0, 168 * 3600).all()


def test_generator_reproduces_published_statistics():
    st = trace_statistics()
    jobs = generate_jobs(
        SUPERFACTORY_GPUS, hours=168, load=0.75, n_jobs=20_000, site_gpus=SITE_GPUS, seed=3
    )
    t = jobs.table
    fresh = t[t.arrival > 0]  # jobs drawn inside the horizon keep their full duration
    med, p90 = np.median(fresh.duration), np.quantile(fresh.duration, 0.9)
    # Sampling error of quantiles with ~20,000 draws: a few per cent.
    assert med == pytest.approx(st["duration"]["median_s"], rel=0.06)
    assert p90 == pytest.approx(st["duration"]["p90_s"], rel=0.08)
    # GPU-count mix: multi-GPU pods (-> training) are ~1.06 % of GPU pods (0.92 % / 86.65 %).
    shares = dict(zip(st["gpu_count"]["values"], st["gpu_count"]["shares"], strict=True))
    multi = (shares[2] + shares[4] + shares[8]) / (1 - shares[0])
    assert (fresh.workload == "training").mean() == pytest.approx(multi, abs=0.004)
    be = st["qos"]["BE"] / sum(st["qos"].values())
    assert (fresh.workload == "batch").mean() == pytest.approx(be * (1 - multi), abs=0.02)
    # Arrival rate: n_jobs over the horizon (Poisson-like spacing).
    assert len(fresh) == pytest.approx(20_000, rel=0.03)
    assert jobs.meta["offered_load"] == pytest.approx(0.75, abs=0.01)


def test_job_format_round_trip_csv_and_json(tmp_path):
    jobs = generate_jobs(4 * 72, hours=6, load=0.7, n_jobs=30, seed=1)
    for name in ("jobs.csv", "jobs.json"):
        path = write_jobs(jobs, tmp_path / name)
        back = load_jobs(path)
        pd.testing.assert_frame_equal(
            back.table.reset_index(drop=True), jobs.table.reset_index(drop=True), check_dtype=False
        )


def test_minimal_csv_gets_class_profiles(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text("id,arrival,duration,gpus,workload\na,0,3600,72,training\nb,60,600,8,batch\n")
    t = load_jobs(path).table
    a, b = t.set_index("id").loc["a"], t.set_index("id").loc["b"]
    assert (a.power_low, a.power_high) == (0.45, 1.0) and 1.0 <= a.period <= 2.0
    assert b.power_low == b.power_high == 0.76 and b.deferral == 4 * 3600


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("", "<empty file>", "at least one job"),
        ("id,arrival,duration,gpus,workload\n", "<no jobs>", "at least one job"),
        ("id,arrival,duration,gpus,workload\na,0,10,0,training\n", "field gpus", "integer from 1"),
        ("id,arrival,duration,gpus,workload\na,0,10,2,render\n", "field workload", "training"),
        ("id,arrival,duration,gpus,workload\na,0,-5,2,batch\n", "field duration", "> 0"),
        ("id,arrival,gpus,workload\na,0,2,batch\n", "column duration", "job columns"),
    ],
)
def test_bad_job_files_name_field_value_expectation(tmp_path, text, field, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_jobs(path)
    msg = str(exc.value)
    assert field in msg and expected in msg and "bad.csv" in msg


def test_bad_json_and_load_target(tmp_path):
    path = tmp_path / "j.json"
    path.write_text(json.dumps({"jobs": {"id": "x"}}))
    with pytest.raises(SpecError, match="a list of job objects"):
        load_jobs(path)
    with pytest.raises(SpecError, match="target load between 0.05 and 1"):
        generate_jobs(1000, load=1.7)


HEADER = b"id,arrival,duration,gpus,workload\n"


@pytest.mark.parametrize(
    ("data", "name", "where", "value", "expected"),
    [  # each gave a traceback (UnicodeDecodeError, IntCastingNaNError, ParserError) or no error
        (b"\xff\xfe\x00\x01\x89PNG", "bin.csv", "line 1, column 1", "'byte 0xff'", "UTF-8 text"),
        (HEADER + b"a,0,60,2,tr\xe9ining\n", "l1.csv", "line 2, column 12", "'byte 0xe9'", "UTF-8"),
        (HEADER + b"a,0,60,2,training\x00\n", "nul.csv", "line 2", "'byte 0x00'", "UTF-8 text"),
        (HEADER + b"a,0,60,1e400,training\n", "big.csv", "row 1 (a) field gpus", "'1e400'", "1 to"),
        (HEADER + b"a,0,60,2,training,9\n", "wide.csv", "line 2", "'6 cells'", "5 cells"),
        (b'[{"id":"a","arrival":0,"duration":60,"gpus":-5,"workload":"batch"}]', "neg.json",
         "row 1 (a) field gpus", "-5", "an integer from 1"),
        (HEADER.replace(b"\n", b",power_lo\n") + b"a,0,60,2,training,0.5\n", "typo.csv",
         "header", "'power_lo'", "only the job columns"),
        (HEADER.replace(b"\n", b",period\n") + b"a,0,60,2,training,abc\n", "opt.csv",
         "row 1 (a) field period", "'abc'", "a finite number, or empty"),
    ],
)  # fmt: skip
def test_hostile_job_files_are_clear_errors(tmp_path, data, name, where, value, expected):
    """Bytes that are not UTF-8, a binary file, an overflowing GPU count, a malformed CSV row, an
    unknown (misspelt) column, a non-numeric optional field: a SpecError naming the file, the
    place, the value as written (``-5``, never ``np.int64(-5)``) and what was expected."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(SpecError) as exc:
        load_jobs(path)
    msg = str(exc.value)
    assert msg.startswith(str(path)) and where in msg, msg
    assert f"got {value}" in msg and expected in msg and "np." not in msg, msg


def test_empty_optional_cells_take_the_class_default(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text(
        "id,arrival,duration,gpus,workload,deferral\na,0,60,2,batch,\nb,0,60,2,batch,5\n"
    )
    t = load_jobs(path).table.set_index("id")
    assert t.deferral.to_dict() == {"a": 4 * 3600.0, "b": 5.0}
