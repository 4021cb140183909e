"""``twin optimize``: place jobs on the twin with a policy (or compare them all); ``twin sweep``.

Examples::

    twin optimize --facility superfactory --policy twin --hours 168 --json
    twin optimize --facility mini-superfactory --jobs pods.csv --compare --out plan.nc
    twin sweep --facility mini-superfactory --days 2023-01-15 2023-07-15 --policy pack twin
"""

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
from twin.resources import env_default
from twin.units import SpecError

SUMMARY_KEYS = (
    "energy_kwh",
    "carbon_kg",
    "cost_usd",
    "pue",
    "max_gpu_temperature_c",
    "throttle_minutes",
    "violations",
    "completed_gpu_hours",
    "kwh_per_completed_gpu_hour",
    "work_lost_gpu_hours",
    "job_wait_mean_s",
    "job_wait_p95_s",
    "job_wait_max_s",
    "deferred_jobs",
    "savings_by_mechanism",
    "jobs",
    "jobs_after_horizon",
    "wall_seconds",
)


SWEEP_DESCRIPTION = """\
``twin sweep``: placement replays for days x policies x weather years, each on all of the
facility's sites, fanned out on dask.distributed (a LocalCluster of worker processes, or an
existing scheduler with --scheduler tcp://HOST:8786); the same jobs for every policy of a case.
Weather years: ``typical`` or NAME:SITE=EPW[,SITE=EPW]. See twin/sweep.py.
"""


def _common(p: argparse.ArgumentParser) -> None:
    add_facility(p)
    p.add_argument(
        "--jobs",
        default=env_default("jobs"),
        help="job file (CSV/JSON job format) or the raw Alibaba openb pod list; default: generator",
    )
    p.add_argument(
        "--load",
        type=float,
        default=0.7,
        help="target GPU load for trace/generator (0.6-0.85 typical)",
    )
    p.add_argument("--hours", type=float, default=24.0, help="replay length in hours")
    p.add_argument("--step", type=float, default=300.0, help="twin time step [s]")
    p.add_argument("--epoch", type=float, default=900.0, help="placement/schedule epoch [s]")
    p.add_argument("--seed", type=int, default=0)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "optimize", "energy-optimal job placement and cooling setpoints", __doc__)
    _common(p)
    p.add_argument(
        "--policy",
        default="twin",
        help="twin; baselines pack, spread, coolest, random, pack-park (idle-rack parking), "
        "pack-static (the best fixed setpoints); ablations twin-setpoints, twin-placement",
    )
    p.add_argument(
        "--compare", action="store_true", help="run every policy on the same jobs and twin"
    )
    p.add_argument("--start", default=None, help="replay start, ISO 8601 UTC (default 2023-01-01)")
    p.add_argument("--objective", default="energy", help="energy, carbon or cost (twin policy)")
    p.add_argument(
        "--margin", type=float, default=5.0, help="GPU/HBM temperature margin below the limits [K]"
    )
    p.add_argument(
        "--cap",
        action="append",
        metavar="rack=P|row=P|site:KEY=P",
        help="power caps, e.g. rack=120kW",
    )
    p.add_argument(
        "--weather", action="append", metavar="SITE=EPW", help="EPW weather file for a site"
    )
    p.add_argument(
        "--carbon", action="append", metavar="SITE=CSV", help="EIA-930-style hourly carbon CSV"
    )
    p.add_argument(
        "--price", type=float, default=None, help="electricity price [USD/kWh] (all sites)"
    )
    p.add_argument(
        "--no-park",
        dest="park",
        action="store_false",
        help="twin and pack-park: keep idle racks powered (no idle-rack parking)",
    )
    p.add_argument(
        "--wake-time",
        default="10 min",
        help="idle-rack parking: time from power-on until a rack takes jobs (default 10 min)",
    )
    p.add_argument(
        "--standby-power",
        default="1.5 kW",
        help="idle-rack parking: power of a parked rack (default 1.5 kW, an estimate)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="write the plan (xarray/netCDF); per policy with --compare, and a PNG of the "
        "savings by mechanism next to it",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object (per policy) on stdout"
    )
    p.add_argument(
        "--scheduler", default=env_default("scheduler"), help="dask scheduler for --sweep"
    )
    p.add_argument("--sweep", action="store_true", help="run a sweep (see `twin sweep`) instead")
    p.add_argument("--days", nargs="*", default=None, help="sweep start dates")
    p.add_argument("--weather-year", action="append", default=None, help="sweep weather years")
    p.add_argument("--workers", type=int, default=2)
    add_calibration(p)
    p.set_defaults(func=run)

    s = add_command(
        sub,
        "sweep",
        "days x policies x weather years of placement replays on dask",
        SWEEP_DESCRIPTION,
    )
    _common(s)
    s.add_argument("--days", nargs="+", required=True, help="start dates (ISO 8601)")
    s.add_argument("--policy", nargs="+", default=["pack", "twin"], help="policies to run")
    s.add_argument(
        "--weather-year", action="append", default=None, help="typical or NAME:SITE=EPW[,SITE=EPW]"
    )
    s.add_argument("--carbon", action="append", metavar="SITE=CSV")
    s.add_argument(
        "--scheduler",
        default=env_default("scheduler"),
        help="tcp://HOST:8786 (default: LocalCluster)",
    )
    s.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    s.add_argument("--out", default=None, help="write the results table (CSV)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_sweep_cli)


def _jobs(args, spec):
    from twin.io.jobs import jobs_for_facility

    return jobs_for_facility(args.jobs, spec, load=args.load, hours=args.hours, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    if args.sweep:
        if args.calibration:
            raise SpecError(
                "--calibration", args.calibration, "a plain optimize run (sweeps use the spec)"
            )
        args.policy = [args.policy] if not args.compare else None
        return run_sweep_cli(args)
    from twin.placement import (
        POLICIES,
        attach_savings,
        build_topology,
        check_feasible,
        parse_caps,
        replay,
    )
    from twin.simulation import prepare, progress_printer, write_netcdf
    from twin.spec import load_facility

    policies = list(POLICIES) if args.compare else [args.policy]
    if args.policy not in POLICIES:
        raise SpecError("--policy", args.policy, f"one of {', '.join(POLICIES)}")
    spec = load_facility(args.facility)
    run_ = prepare(
        spec,
        args.step,
        args.start,
        weather=site_pairs(args.weather, "--weather"),
        carbon=site_pairs(args.carbon, "--carbon"),
        calibration=calibration_arg(args),
    )
    say_calibration("optimize", run_)
    if args.price is not None:
        import equinox as eqx
        import jax.numpy as jnp

        if not args.price >= 0:
            raise SpecError("--price", args.price, "a price >= 0 USD/kWh")
        run_.params = eqx.tree_at(
            lambda q: q.price, run_.params, jnp.full_like(run_.params.price, args.price / 3.6e6)
        )
    from twin.units import parse_quantity

    wake_time = parse_quantity(args.wake_time, "--wake-time", "s")
    standby_w = parse_quantity(args.standby_power, "--standby-power", "W")
    jobs = _jobs(args, spec)
    topo = build_topology(run_, parse_caps(args.cap), args.margin)
    check_feasible(run_, topo, jobs)
    print(
        f"twin optimize: {spec.name}, {spec.gpus:,} GPUs, {len(jobs):,} jobs ({jobs.meta.get('format')}), "
        f"{args.hours} h from {run_.start.isoformat()}",
        file=sys.stderr,
    )
    results = {}
    for pol in policies:
        res = replay(
            run_,
            jobs,
            pol,
            args.hours,
            epoch=args.epoch,
            topo=topo,
            objective=args.objective,
            seed=args.seed,
            progress=progress_printer(f"optimize {pol}"),
            park=args.park,
            wake_time=wake_time,
            standby_w=standby_w,
        )
        results[pol] = res
        if args.out:
            path = args.out if len(policies) == 1 else _suffixed(args.out, pol)
            print(f"wrote {write_netcdf(res.plan, path)}", file=sys.stderr)
    strongest = attach_savings(results)
    if args.out and len(policies) > 1:
        from twin.cli.placement_report import plot_savings

        print(
            f"wrote {plot_savings(results, strongest, _suffixed(args.out, 'savings', 'png'))}",
            file=sys.stderr,
        )
    _say_after_horizon(results, len(jobs))
    cal = {"calibration": run_.calibration} if run_.calibration is not None else {}
    out = {
        pol: {k: r.summary[k] for k in SUMMARY_KEYS} | cal | {"details": r.summary}
        for pol, r in results.items()
    }
    if len(policies) > 1:
        from twin.cli.placement_report import headline

        out = {
            "strongest_baseline": strongest,
            "twin_vs_strongest": headline(results, strongest),
        } | out
    if args.json:
        json.dump(out if len(policies) > 1 else out[policies[0]], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from twin.cli.placement_report import mechanism_table

        _table({p: r.summary for p, r in results.items()})
        if strongest is not None:
            print()
            print(mechanism_table(results, strongest))
    return 0


def _say_after_horizon(results: dict, n_jobs: int) -> None:
    """Jobs that arrive after the replay's end are not replayed: say how many (stderr; the
    JSON has ``jobs_after_horizon``)."""
    s = next(iter(results.values())).summary
    if s["jobs_after_horizon"]:
        print(
            f"twin optimize: {s['jobs_after_horizon']:,} of {n_jobs:,} jobs arrive after the "
            f"{s['hours']:g} h horizon and are not replayed (longer --hours replays them)",
            file=sys.stderr,
        )


def _suffixed(path: str, policy: str, ext: str | None = None) -> str:
    root, dot, old = path.rpartition(".")
    root, old = (root, old) if dot else (path, "")
    ext = ext or old
    return f"{root}-{policy}.{ext}" if ext else f"{root}-{policy}"


def _table(summaries: dict) -> None:
    rows = [
        ("total kWh", lambda s: s["energy_kwh"]["total"], "{:,.0f}"),
        ("IT kWh", lambda s: s["energy_kwh"]["it"], "{:,.0f}"),
        ("cooling kWh", lambda s: s["energy_kwh"]["cooling"], "{:,.1f}"),
        ("pumps kWh", lambda s: s["energy_kwh"]["pumps"], "{:,.1f}"),
        ("fans kWh", lambda s: s["energy_kwh"]["fans"], "{:,.1f}"),
        ("chillers kWh", lambda s: s["energy_kwh"]["chillers"], "{:,.1f}"),
        ("carbon kg", lambda s: s["carbon_kg"], "{:,.0f}"),
        ("cost USD", lambda s: s["cost_usd"], "{:,.0f}"),
        ("PUE", lambda s: s["pue"], "{:.4f}"),
        ("max GPU degC", lambda s: s["max_gpu_temperature_c"], "{:.1f}"),
        ("violations", lambda s: s["violations"], "{:d}"),
        ("deferred jobs", lambda s: s["deferred_jobs"], "{:d}"),
        ("after horizon", lambda s: s["jobs_after_horizon"], "{:d}"),
        ("work GPU-h", lambda s: s["work_gpu_hours"], "{:,.0f}"),
        ("lost GPU-h", lambda s: s["work_lost_gpu_hours"], "{:,.1f}"),
        ("completed GPU-h", lambda s: s["completed_gpu_hours"], "{:,.0f}"),
        ("kWh/compl. GPU-h", lambda s: s["kwh_per_completed_gpu_hour"], "{:.4f}"),
        ("parked rack-h", lambda s: s["parked_rack_hours"], "{:,.0f}"),
        ("mean wait s", lambda s: s["job_wait_mean_s"], "{:,.0f}"),
        ("p95 wait s", lambda s: s["job_wait_p95_s"], "{:,.0f}"),
        ("max wait s", lambda s: s["job_wait_max_s"], "{:,.0f}"),
        ("p95 delay s", lambda s: s["job_delay_p95_s"], "{:,.0f}"),
        ("wall s", lambda s: s["wall_seconds"], "{:.1f}"),
    ]
    print(f"{'':17}" + "".join(f"{p:>15}" for p in summaries))
    for name, get, fmt in rows:
        print(f"{name:17}" + "".join(f"{fmt.format(get(s)):>15}" for s in summaries.values()))


def run_sweep_cli(args: argparse.Namespace) -> int:
    from twin.placement import POLICIES
    from twin.sweep import make_cases, run_sweep

    if not args.days:
        raise SpecError(
            "--days", "<none>", "at least one start date, e.g. --days 2023-01-15 2023-07-15"
        )
    policies = args.policy if isinstance(args.policy, list) else list(POLICIES)
    cases = make_cases(
        args.facility,
        args.days,
        policies,
        args.weather_year,
        hours=args.hours,
        jobs=args.jobs,
        load=args.load,
        seed=args.seed,
        step=args.step,
        epoch=args.epoch,
        carbon=site_pairs(getattr(args, "carbon", None), "--carbon"),
    )
    print(
        f"twin sweep: {len(cases)} cases on {args.scheduler or f'LocalCluster({args.workers} processes)'}",
        file=sys.stderr,
    )
    df = run_sweep(cases, scheduler=args.scheduler, n_workers=args.workers)
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        print(df.to_json(orient="records", indent=1))
    else:
        print(df.drop(columns=["worker_pid"]).to_string(index=False))
    return 0
