"""Sensors benchmarks (not timed tests): prints a table; results go to docs/benchmarks.md.

1. store ingest rate, bulk, one core: GPU-field samples/s through validation + commit;
2. daemon CPU at 10 Hz with 8 simulated GPUs: share of one core over a measured window;
3. read one day of 1,000 GPUs at 1 Hz (power, temperature, utilization) into xarray.

Usage: python benchmarks/bench_sensors.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sensors.base import FIELD_NAMES, Batch, GpuInfo  # noqa: E402
from sensors.store import Store  # noqa: E402


def gpus(n: int) -> list[GpuInfo]:
    return [GpuInfo(key=f"GPU-{i:05d}", index=i % 8, host=f"node{i // 8:04d}") for i in range(n)]


def bench_ingest(tmp: Path, n_gpu: int = 1000, ticks_per_batch: int = 100, batches: int = 20):
    g = gpus(n_gpu)
    rng = np.random.default_rng(0)
    n = n_gpu * ticks_per_batch
    base = {f: rng.uniform(10, 90, n) for f in FIELD_NAMES}
    st = Store(tmp / "ingest.db", synchronous="NORMAL")
    t0 = time.process_time()
    w0 = time.perf_counter()
    for k in range(batches):
        t = (k * ticks_per_batch + np.repeat(np.arange(ticks_per_batch), n_gpu)) * 10**9
        st.append(Batch(t, np.tile(np.arange(n_gpu), ticks_per_batch), dict(base)), g)
        st.flush()
    cpu = time.process_time() - t0
    wall = time.perf_counter() - w0
    fields = n * batches * len(FIELD_NAMES)
    st.close()
    return fields / cpu, fields / wall, fields


def bench_daemon_cpu(tmp: Path, seconds: float):
    import psutil

    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    argv = [
        sys.executable,
        "-m",
        "twin.cli",
        "sensord",
        "--source",
        "sim",
        "--sim-gpus",
        "8",
        "--interval",
        "0.1",
        "--store",
        str(tmp / "d.db"),
    ]
    p = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        proc = psutil.Process(p.pid)
        time.sleep(8.0)  # imports, JIT compilation
        c0 = sum(proc.cpu_times()[:2])
        w0 = time.perf_counter()
        time.sleep(seconds)
        c1 = sum(proc.cpu_times()[:2])
        w1 = time.perf_counter()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    return (c1 - c0) / (w1 - w0)


def bench_read_day(tmp: Path, n_gpu: int = 1000, seconds: int = 86400, chunk_s: int = 60):
    path = tmp / "day.db"
    g = gpus(n_gpu)
    st = Store(path, synchronous="OFF")
    rng = np.random.default_rng(1)
    t_w = time.perf_counter()
    block = {
        f: rng.uniform(10, 90, n_gpu * chunk_s)
        for f in ("power_average", "temp_gpu", "utilization_gpu")
    }
    for k in range(seconds // chunk_s):
        t = (k * chunk_s + np.repeat(np.arange(chunk_s), n_gpu)) * 10**9
        st.append(Batch(t, np.tile(np.arange(n_gpu), chunk_s), dict(block)), g)
        if k % 10 == 9:
            st.flush()
    st.flush()
    st.close()
    write_s = time.perf_counter() - t_w
    times = []
    for _ in range(2):  # first read in a fresh process state, then a repeat
        rd = Store(path, readonly=True)
        t0 = time.perf_counter()
        ds = rd.read()
        times.append(time.perf_counter() - t0)
        assert ds.sizes == {"time": seconds, "gpu": n_gpu}, ds.sizes
        rd.close()
        del ds
    return times, write_s, path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        per_cpu, per_wall, n = bench_ingest(tmp, batches=5 if args.quick else 20)
        rows.append(
            (
                "store ingest, bulk (GPU-field samples/s, per CPU-second)",
                f"{per_cpu:,.0f}",
                ">= 1,000,000",
            )
        )
        rows.append(("store ingest, bulk (GPU-field samples/s, wall)", f"{per_wall:,.0f}", ""))
        share = bench_daemon_cpu(tmp, 10.0 if args.quick else 30.0)
        rows.append(
            ("sensord CPU, sim 8 GPUs at 10 Hz (% of one core)", f"{100 * share:.2f}", "<= 1")
        )
        secs = 3600 if args.quick else 86400
        dt, write_s, size = bench_read_day(tmp, seconds=secs)
        label = "1 day" if secs == 86400 else "1 hour"
        rows.append(
            (f"read {label} x 1,000 GPUs at 1 Hz, 3 fields, into xarray (s)", f"{dt:.2f}", "<= 2")
        )
        rows.append(
            (f"  (writing it took {write_s:.1f} s; store size)", f"{size / 2**30:.2f} GiB", "")
        )
    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':{w}s} | {'result':>14s} | target")
    print("-" * (w + 30))
    for r in rows:
        print(f"{r[0]:{w}s} | {r[1]:>14s} | {r[2]}")


if __name__ == "__main__":
    main()
