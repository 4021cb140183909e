"""``twin simulate``: step a facility under a workload and report energy, PUE and temperatures."""

from __future__ import annotations

import argparse
import json
import sys

from twin.cli.options import (
    add_calibration,
    add_command,
    add_facility,
    calibration_arg,
    say_calibration,
    site_pairs,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "simulate", "step a facility and report energy, PUE, temperatures", __doc__
    )
    add_facility(p)
    add_calibration(p)
    p.add_argument("--hours", type=float, default=1.0, help="simulated hours (fractions allowed)")
    p.add_argument("--step", type=float, default=1.0, help="time step in seconds (0.01-3600)")
    p.add_argument("--start", default=None, help="start time, ISO 8601 UTC (default 2023-01-01)")
    p.add_argument(
        "--load",
        default=None,
        help="workload: training=F,inference=F,idle=F (rack shares) or constant=F",
    )
    p.add_argument(
        "--weather",
        action="append",
        metavar="SITE=EPW",
        help="EPW weather file for a site (default: its embedded typical year)",
    )
    p.add_argument(
        "--carbon",
        action="append",
        metavar="SITE=CSV",
        help="EIA-930-style hourly carbon CSV for a site",
    )
    p.add_argument("--record", type=float, default=60.0, help="record interval in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results to this netCDF file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twin.model import LoadMix
    from twin.simulation import prepare, progress_printer, simulate, write_netcdf
    from twin.spec import load_facility

    spec = load_facility(args.facility)
    load = LoadMix.parse(args.load)
    weather = site_pairs(args.weather, "--weather")
    carbon = site_pairs(args.carbon, "--carbon")
    cal = calibration_arg(args)
    run_ = prepare(spec, args.step, args.start, load, weather, carbon, args.seed, calibration=cal)
    say_calibration("simulate", run_)
    print(
        f"twin simulate: {spec.name}, {spec.gpus:,} GPUs, {args.hours} h at {args.step} s steps",
        file=sys.stderr,
    )
    ds, summary = simulate(
        spec,
        args.hours,
        args.step,
        args.start,
        load,
        site_pairs(args.weather, "--weather"),
        site_pairs(args.carbon, "--carbon"),
        record_interval=args.record,
        seed=args.seed,
        progress=progress_printer(),
        run=run_,
    )
    if args.out:
        path = write_netcdf(ds, args.out)
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _table(summary)
    return 0


def _table(s: dict) -> None:
    keys = [
        ("gpus", "{:,.0f}"),
        ("it_energy_kwh", "{:,.1f}"),
        ("pump_energy_kwh", "{:,.1f}"),
        ("fan_energy_kwh", "{:,.1f}"),
        ("chiller_energy_kwh", "{:,.1f}"),
        ("pue", "{:.4f}"),
        ("max_gpu_temperature_c", "{:.2f}"),
        ("water_liters", "{:,.0f}"),
        ("carbon_kg", "{:,.0f}"),
        ("energy_balance_relative_error", "{:.1e}"),
    ]
    header = f"{'':26}{'total':>16}" + "".join(f"{k:>16}" for k in s["sites"])
    print(header)
    for key, fmt in keys:
        vals = [s[key]] + [s["sites"][k][key] for k in s["sites"]]
        print(f"{key:26}" + "".join(f"{fmt.format(v):>16}" for v in vals))
    print(
        f"steps {s['steps']} x {s['step_seconds']} s in {s['wall_seconds']:.1f} s wall, "
        f"{s['gpu_steps_per_second']:.3g} GPU-steps/s"
    )
