"""Simulation throughput, accuracy-matched baseline, memory in simulated time, bandwidth ratio.

Run:  python benchmarks/bench_simulate.py [--quick]

Prints a table:
* GPU-steps/s at 1 s steps for single-rack, one row, one site and the whole superfactory
  (default workload mix, per-GPU parameters spread 10 %), and the real-time factor;
* the same single-rack GPU model through scipy.integrate.solve_ivp (BDF) tuned to the issue's
  accuracy bar (max error <= 0.05 K against a tight diffrax reference), side by side, as a ratio;
* peak resident memory for 1, 6 and 24 simulated hours (flat = memory does not grow);
* bytes moved per GPU-step against this machine's measured memory bandwidth.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

import twin  # noqa: E402,F401  (float64)
from physics import facility as F  # noqa: E402
from twin.model import Boundary, LoadMix, build_params  # noqa: E402
from twin.spec import FACILITY_DIR, load_facility, parse_facility  # noqa: E402
from twin.units import ZERO_CELSIUS_K  # noqa: E402

C0 = ZERO_CELSIUS_K


def boundary(spec):
    h = np.arange(8760)
    t = C0 + 20.0 + 8.0 * np.sin(2 * np.pi * h / 24)
    return {
        s.key: Boundary(t, t - 5.0, np.full(8760, 400.0), np.full(8760, 0.08)) for s in spec.sites
    }


def specs():
    doc = tomllib.loads((FACILITY_DIR / "superfactory.toml").read_text())
    row = copy.deepcopy(doc)
    del row["sites"]["atlanta"]
    b = row["sites"]["mount_pleasant"]["building"]
    b.update(count=1, floors=1, rows_per_floor=1)
    fw = row["sites"]["mount_pleasant"]["facility_water"]
    fw.update(supply_volume="40 m^3", return_volume="40 m^3", riser_pressure_drop="0 kPa")
    site = copy.deepcopy(doc)
    del site["sites"]["atlanta"]
    return [
        ("single-rack", load_facility("single-rack")),
        ("one row", parse_facility(row)),
        ("one site (WI)", parse_facility(site)),
        ("superfactory", load_facility("superfactory")),
    ]


_run = jax.jit(F.run_records, static_argnums=(4, 5, 6, 7, 8))


def throughput(spec, dt=1.0, min_seconds=3.0, spread=0.1):
    p = build_params(spec, boundary(spec), LoadMix(), gpu_spread=spread)
    d = F.derive(p)
    gpus = int(np.prod(p.gpu_shape))
    spr = 100
    n_rec = max(1, int(2e7 / gpus / spr))  # ~2e7 GPU-steps per call
    s = F.initial_state(p, d)
    led = F.empty_ledger(p.n_sites)
    n_sub = F.substeps(p, d, dt)
    out = _run(p, d, s, led, dt, 4000.0, n_rec, spr, n_sub)
    # a second warm-up call from the returned state and ledger (the timed calls' inputs): any
    # difference in their abstract types would compile once more inside the timing
    out = _run(p, d, out[0], out[1], dt, 4000.0, n_rec, spr, n_sub)
    jax.block_until_ready(out[0].gpu_temp)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds or calls < 2:
        out = _run(p, d, out[0], out[1], dt, 4000.0, n_rec, spr, n_sub)
        jax.block_until_ready(out[0].gpu_temp)
        calls += 1
    wall = time.perf_counter() - t0
    steps = calls * n_rec * spr
    return gpus, gpus * steps / wall, steps * dt / wall


def hlo_traffic(spec, dt=1.0, spread=0.1, spr=100):
    """Bytes of GPU-sized arrays that the compiled time step reads and writes, per GPU-step.

    Counted on XLA's optimized HLO of :func:`physics.facility.run_records`: in the loop body,
    every fusion or copy reads each GPU-sized operand once and writes a GPU-sized result once
    (bytes by element type). This is the traffic the step really moves, not an estimate of the
    state size.
    """
    p = build_params(spec, boundary(spec), LoadMix(), gpu_spread=spread)
    d = F.derive(p)
    s = F.initial_state(p, d)
    n_sub = F.substeps(p, d, dt)
    led = F.empty_ledger(p.n_sites)
    text = _run.lower(p, d, s, led, dt, 4000.0, 1, spr, n_sub).compile().as_text()
    gpus = int(np.prod(p.gpu_shape))
    shapes = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\s*(?:ROOT )?(%[\w.\-]+) = (\w+\[[\d,]*\])", text, re.M)
    }

    def elems(sh: str) -> int:
        dims = sh[sh.index("[") + 1 : -1]
        return int(np.prod([int(x) for x in dims.split(",")])) if dims else 1

    size = {"f64": 8, "s64": 8, "f32": 4, "s32": 4, "pred": 1}

    def nbytes(sh: str) -> int:
        return size.get(sh[: sh.index("[")], 8) * elems(sh)

    def traffic(body: str) -> int:
        start = text.index(body + " ")
        block = text[start : text.index("\n}\n", start)]
        moved = 0
        for m in re.finditer(r"= (\w+\[[\d,]*\])\{?[\d,]*\}? (?:fusion|copy)\((.*?)\)", block):
            out, args = m.groups()
            ops = [o for o in re.findall(r"%[\w.\-]+", args) if o in shapes]
            moved += sum(nbytes(shapes[o]) for o in ops if elems(shapes[o]) == gpus)
            moved += nbytes(out) if elems(out) == gpus else 0
        return moved

    # the loop over time steps: of the while loops whose trip count divides steps_per_record,
    # the one that moves GPU-sized arrays (the solver loops inside a step move none)
    loops = re.findall(r"while\(.*?body=(%[\w.\-]+).*?\"known_trip_count\":\{\"n\":\"(\d+)\"", text)
    moved, body, trips = max(
        (traffic(b), b, int(n)) for b, n in loops if spr % int(n) == 0 and int(n) > 1
    )
    steps_per_body = spr // trips
    return moved / steps_per_body / gpus  # bytes per GPU-step


# Just over 100 lines on purpose: the scipy baseline, its Jacobian and the diffrax reference it
# is checked against are one self-contained reimplementation, read top to bottom in one place.
def baseline_solve_ivp(t_span=600.0):
    """Single-rack die ODEs (72 GPUs, square-wave training power, inlet at the CDU setpoint)
    with scipy's BDF; tolerances tightened until the max error vs diffrax is <= 0.05 K."""
    import diffrax
    import jax.numpy as jnp
    from scipy.integrate import solve_ivp

    from physics import gpu, workload

    spec = load_facility("single-rack")
    p = build_params(spec, boundary(spec), LoadMix.parse("training=1"), gpu_spread=0.1, seed=3)
    d = F.derive(p)
    inlet = float(p.tcs_supply_setpoint[0])
    res = np.asarray(np.broadcast_to(d.gpu_resistance, p.gpu_shape)).ravel()
    cap = np.asarray(np.broadcast_to(p.gpu_capacitance, p.gpu_shape)).ravel()
    leak = np.asarray(np.broadcast_to(p.gpu_leakage_ref, p.gpu_shape)).ravel()
    alpha = np.asarray(np.broadcast_to(p.gpu_leakage_coeff, p.gpu_shape)).ravel()
    tref = float(np.asarray(p.gpu_temp_ref).ravel()[0])
    die_idle = float(np.ravel(p.gpu_power_idle - p.gpu_hbm_power_idle)[0])
    die_dyn = float(np.ravel((1 - p.gpu_hbm_power_share) * p.gpu_power_dynamic)[0])
    per, duty, ph = (float(x[0]) for x in (p.load_period, p.load_duty, p.load_phase))
    lo, hi = float(p.load_low[0]), float(p.load_high[0])
    y0 = np.asarray(F.initial_state(p, d).gpu_temp).ravel()

    def power(t):
        q = float(workload.square_wave(per, duty, ph, t))
        return die_idle + (lo + (hi - lo) * q) * die_dyn

    def rhs(t, y):
        leak_p = leak * (1 + alpha * (y - tref))
        return (power(t) + leak_p - (y - inlet) / res) / cap

    ts = np.arange(1.0, t_span + 1e-9, 1.0)
    k = np.arange(-1, int(t_span / per) + 3)
    edges = np.unique(np.clip(np.r_[k * per - ph, k * per - ph + duty * per], 0, t_span))

    def rhs_j(t, y, args):
        q = workload.square_wave(per, duty, ph, t)
        pw = die_idle + (lo + (hi - lo) * q) * die_dyn
        return gpu.die_temperature_rhs(y, inlet, pw, res, cap, leak, alpha, tref)

    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs_j),
        diffrax.Kvaerno5(),
        0.0,
        t_span,
        0.05,
        jnp.asarray(y0),
        saveat=diffrax.SaveAt(ts=jnp.asarray(ts)),
        stepsize_controller=diffrax.PIDController(
            rtol=1e-10, atol=1e-10, jump_ts=jnp.asarray(edges)
        ),
        max_steps=500_000,
    ).ys
    ref = np.asarray(ref)
    for rtol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
        t0 = time.perf_counter()
        sol = solve_ivp(
            rhs,
            (0.0, t_span),
            y0,
            method="BDF",
            t_eval=ts,
            rtol=rtol,
            atol=rtol * 10,
            max_step=per * duty / 2,
        )
        wall = time.perf_counter() - t0
        err = float(np.max(np.abs(sol.y.T - ref)))
        if err <= 0.05:
            break
    # The twin on the same problem (its whole facility step, loops included), same grid.
    s = F.initial_state(p, d)
    step = jax.jit(lambda s: F.step(p, d, s, 1.0, 0.0)[0])
    s = step(s)
    jax.block_until_ready(s.gpu_temp)
    s = F.initial_state(p, d)
    got = []
    t0 = time.perf_counter()
    for _ in ts:
        s = step(s)
        got.append(s.gpu_temp)
    jax.block_until_ready(s.gpu_temp)
    twin_wall_loop = time.perf_counter() - t0
    twin_err = float(np.max(np.abs(np.asarray(got).reshape(len(ts), -1) - ref)))
    # Scanned (how `twin simulate` runs it): one jitted call for the whole span.
    led = F.empty_ledger(p.n_sites)
    args = (p, d, F.initial_state(p, d), led, 1.0, 0.0, 1, int(t_span), 1)
    jax.block_until_ready(_run(*args)[0].gpu_temp)
    t0 = time.perf_counter()
    jax.block_until_ready(_run(*args)[0].gpu_temp)
    twin_wall = time.perf_counter() - t0
    return dict(
        ivp_wall=wall,
        ivp_err=err,
        ivp_rtol=rtol,
        ivp_nfev=int(sol.nfev),
        twin_wall=twin_wall,
        twin_wall_python_loop=twin_wall_loop,
        twin_err=twin_err,
        gpus=res.size,
        sim_seconds=t_span,
    )


def memory_probe(name: str, hours: float, dt: float) -> float:
    """Peak RSS [MiB] of a fresh process simulating ``hours`` (via twin.simulation).

    Read from ``VmHWM`` in /proc/self/status: a new address space after exec starts its own
    high-water mark (``ru_maxrss`` would carry the parent's over the fork).
    """
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from twin.spec import load_facility; from twin.simulation import simulate\n"
        f"simulate(load_facility({name!r}), {hours!r}, {dt!r}, record_interval=600)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory_bandwidth() -> float:
    """Copy bandwidth [GB/s] (read + write) of this machine: numpy, 256 MiB arrays."""
    a = np.ones(32 * 1024 * 1024)
    b = np.empty_like(a)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t0))
    return best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the memory probes")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {os.cpu_count()} cores, jax {jax.__version__}, float64")
    results: dict = {"machine": cpu, "cores": os.cpu_count()}
    print(
        "\nGPU-steps/s at 1 s steps: 'spec' = GPUs of a template identical (as `twin simulate`"
        "\nbuilds a spec), 'calibrated' = per-GPU R, C and leakage slope spread 10 %"
    )
    print(f"\n{'facility':<16}{'GPUs':>10}{'spec':>12}{'x real':>9}{'calibrated':>12}{'x real':>9}")
    rows = []
    for name, spec in specs():
        gpus, rate0, rt0 = throughput(spec, spread=0.0)
        _, rate, rt = throughput(spec)
        rows.append(
            {
                "facility": name,
                "gpus": gpus,
                "gpu_steps_per_s_spec": rate0,
                "realtime_spec": rt0,
                "gpu_steps_per_s": rate,
                "realtime": rt,
            }
        )
        print(f"{name:<16}{gpus:>10,}{rate0:>12.3g}{rt0:>9.0f}{rate:>12.3g}{rt:>9.0f}", flush=True)
    results["throughput"] = rows

    b = baseline_solve_ivp()
    results["baseline"] = b
    print(f"\nsingle-rack, {b['gpus']} GPUs, {b['sim_seconds']:.0f} s simulated, 1 s outputs")
    print(f"{'method':<34}{'wall s':>10}{'max err K':>12}")
    print(
        f"{'solve_ivp BDF (rtol {:.0e})'.format(b['ivp_rtol']):<34}{b['ivp_wall']:>10.3f}"
        f"{b['ivp_err']:>12.2e}"
    )
    print(
        f"{'twin, jitted scan (whole facility)':<34}{b['twin_wall']:>10.4f}{b['twin_err']:>12.2e}"
    )
    print(
        f"{'twin, Python loop of jitted steps':<34}{b['twin_wall_python_loop']:>10.4f}"
        f"{b['twin_err']:>12.2e}"
    )
    print(
        f"speed-up vs solve_ivp: {b['ivp_wall'] / b['twin_wall']:.0f}x (scan), "
        f"{b['ivp_wall'] / b['twin_wall_python_loop']:.0f}x (Python loop)"
    )

    bw = memory_bandwidth()
    sf = specs()[-1][1]
    traffic = {}
    for label, spread, key in (
        ("spec", 0.0, "gpu_steps_per_s_spec"),
        ("calibrated", 0.1, "gpu_steps_per_s"),
    ):
        moved = hlo_traffic(sf, spread=spread)
        rate = rows[-1][key]
        traffic[label] = {
            "bytes_per_gpu_step": moved,
            "achieved_gb_per_s": rate * moved / 1e9,
            "bandwidth_bound_gpu_steps_per_s": bw * 1e9 / moved,
        }
    results["bandwidth"] = {"copy_gb_per_s": bw, **traffic}
    print(f"\nmemory bandwidth (numpy copy, read + write): {bw:.1f} GB/s")
    print(f"{'superfactory':<14}{'B/GPU-step':>12}{'GB/s moved':>12}{'of bw':>8}{'bw bound':>12}")
    for label, t in traffic.items():
        print(
            f"{label:<14}{t['bytes_per_gpu_step']:>12.0f}{t['achieved_gb_per_s']:>12.1f}"
            f"{t['achieved_gb_per_s'] / bw:>8.0%}{t['bandwidth_bound_gpu_steps_per_s']:>12.3g}"
        )

    if not args.quick:
        print(f"\n{'peak RSS (MiB)':<28}{'1 h':>10}{'6 h':>10}{'24 h':>10}")
        mem = {}
        for name, dt in (("single-rack", 1.0), ("superfactory", 60.0)):
            vals = [memory_probe(name, h, dt) for h in (1.0, 6.0, 24.0)]
            mem[name] = vals
            print(f"{name + f' @ {dt:g} s':<28}" + "".join(f"{v:>10.0f}" for v in vals), flush=True)
        results["peak_rss_mib"] = mem
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
