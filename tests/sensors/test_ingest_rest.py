"""The rest of issue 15: Prometheus-text file span, errors that never quote a file, lines read in
bounded pieces, hostile inputs to ``twin calibrate``, ``twin watch``'s ingest line and
``twin telemetry info --verify``.  Each test fails on the code before this change (noted)."""

from __future__ import annotations

import math
import tracemalloc

import pytest
from sensors_testlib import twin
from test_store_integrity import flip, write_chunks

from sensors.errors import InputError
from sensors.replay import ReplaySource
from sensors.store import Store
from sensors.validate import Limits

SECRET = "root:x:0:0:s3cret-token:/root:/bin/bash"
SMI = "timestamp,index,power.draw [W],temperature.gpu\n"


def _rows(n: int, t0: int = 0) -> str:
    return "".join(
        f"2025-01-01T00:{(t0 + i) // 60:02d}:{(t0 + i) % 60:02d}Z,0,{300 + i % 7}.0,{45 + i % 3}\n"
        for i in range(n)
    )


def test_prometheus_file_span_quarantines_a_stray_scrape(tmp_path):
    # old: only the era/clock bounds; a scrape 17 months after the file's day was stored
    ms = 1_704_067_200_000  # 2024-01-01
    lines = [f'DCGM_FI_DEV_GPU_TEMP{{gpu="0"}} {40 + k % 3} {ms + k * 1000}\n' for k in range(300)]
    lines.insert(30, f'DCGM_FI_DEV_GPU_TEMP{{gpu="0"}} 41 {ms + 520 * 86_400_000}\n')
    p = tmp_path / "scrapes.prom"
    p.write_text("".join(lines))
    src = ReplaySource(p, math.inf, limits=Limits(clock=lambda: 1_790_000_000.0))
    st = Store(tmp_path / "s.db")
    while (b := src.read()) is not None:
        st.append(b, src.devices(), "replay")
    st.flush()
    info = st.info()
    assert info["quarantined"] == {"time_implausible": 1}
    assert info["samples"] == 300 and info["rows"] == 301
    (rec,) = st.quarantine_records("time_implausible")
    assert "line 31" in rec[3] and "far outside this file's span" in rec[3]


def test_unknown_file_is_named_never_quoted(tmp_path):
    # old: "replay input: got 'root:x:0:0:...'" (the first 120 characters of any file)
    p = tmp_path / "passwd"
    p.write_text(SECRET + "\n")
    with pytest.raises(InputError) as exc:
        ReplaySource(p, math.inf)
    msg = str(exc.value)
    assert "s3cret" not in msg and "0:0" not in msg
    assert f"{p} line 1" in msg and "1 comma-separated field" in msg and "'timestamp'" in msg


def test_header_without_gpu_column_is_not_quoted(tmp_path):
    # old: the header's first 160 characters in the message
    p = tmp_path / "f.csv"
    p.write_text("timestamp,s3cret_col,power.draw [W]\n" + "1700000000,x,300\n")
    with pytest.raises(InputError, match="GPU column") as exc:
        ReplaySource(p, math.inf)
    assert "s3cret" not in str(exc.value) and "3 columns" in str(exc.value)
    assert "timestamp, power.draw [W]" in str(exc.value)  # the columns it understood


def test_long_line_is_read_in_pieces_and_quarantined(tmp_path):
    # old: the 8 MB line was held whole (and split) before being quarantined
    p = tmp_path / "f.csv"
    p.write_text(
        SMI + _rows(30) + "2025-01-01T00:00:40Z,0," + "9" * 8_000_000 + "\n" + _rows(30, 200)
    )
    tracemalloc.start()
    src = ReplaySource(p, math.inf)
    rows, recs = 0, []
    while (b := src.read()) is not None:
        rows += len(b)
        recs += b.quarantine
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4_000_000
    assert rows == 60 and [r.reason for r in recs] == ["malformed_line"]
    assert "line 32: longer than" in recs[0].detail


HOSTILE = {
    "empty": (b"", "an empty file"),
    "binary": (b"\x7fELF\x02\x01\x01\x00\xff\xfe" * 50, "not UTF-8 text"),
    "header_only": (SMI.encode(), "0 times x 0 GPUs"),
    "two_columns": (b"a,b\n1,2\n3,4\n", "2 comma-separated field"),
    "huge_line": (b"x" * 10_000_000, "longer than 65,536 characters"),
}


@pytest.mark.parametrize("case", [*HOSTILE, "directory"])
def test_hostile_telemetry_gives_one_line_and_exit_2(tmp_path, capsys, case):
    # old: the binary, two-column and huge-line files were quoted (120 characters)
    from twin.cli import main

    p = tmp_path / case
    if case == "directory":
        p.mkdir()
        want = "an existing telemetry store"
    else:
        p.write_bytes(HOSTILE[case][0])
        want = HOSTILE[case][1]
    assert main(["calibrate", "--telemetry", str(p), "--facility", "h100-node"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and want in err[0]
    assert "xxxxxxxx" not in err[0] and "ELF" not in err[0] and "a,b" not in err[0]


def test_watch_prints_what_it_quarantined(tmp_path):
    # old: twin watch read the telemetry without a word about what was quarantined
    p = tmp_path / "f.csv"
    p.write_text(SMI + _rows(40) + "2025-01-01T00:00:50Z,0,nan,45\n")
    r = twin("watch", "--telemetry", str(p), "--facility", "h100-node",
             "--params", str(tmp_path / "missing.nc"))  # fmt: skip
    assert r.returncode == 2
    assert "twin watch: telemetry: 41 rows read: 40 samples, 1 quarantined (nan 1)" in r.stderr


def test_info_says_it_does_not_verify_and_verify_counts_damage(tmp_path, capsys):
    # old: info counted the samples of a damaged block as good, with no word; no --verify
    import json

    from twin.cli import main

    path = tmp_path / "s.db"
    write_chunks(path)
    cid = flip(path, 1)
    assert main(["telemetry", "info", "--store", str(path)]) == 0
    assert "blocks not verified" in capsys.readouterr().out
    assert main(["telemetry", "info", "--store", str(path), "--json", "--verify"]) == 1
    cap = capsys.readouterr()
    info = json.loads(cap.out)
    assert info["verified"] is True and info["samples"] == 450
    assert info["damaged_blocks"] == 1 and info["samples_in_damaged_blocks"] == 150
    assert f"chunk {cid}, field power_average" in cap.err
