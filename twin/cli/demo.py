"""``twin demo``: the whole product end to end on a laptop, with no GPU and no data file.

Stages (each prints its progress on stderr):

1. **sensors**: the simulated GPU fleet (or the local GPUs with ``--nvml``, or a recorded
   ``--telemetry`` source) feeds the real sensor daemon, time-accelerated, into a durable store;
2. **calibrate**: the twin is fitted to that telemetry; held-out error, CV-RMSE, NMBE, anomalies;
3. **simulate**: ``--sim-hours`` (6 by default) of the superfactory at 60 s steps in each site's weather (energy balance);
4. **placement**: a week of generated jobs (or ``--jobs``) replayed under every policy on the
   same twin, with each site's typical-year (or ``--weather``) weather and grid carbon;
5. **report**: ``report.md`` with plots, ``results.nc`` and a summary table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from twin.cli.options import add_command, add_facility, add_telemetry, site_pairs


class _Stages:
    def __init__(self, total: int):
        self.total = total
        self.i = 0
        self.t0 = time.perf_counter()

    def start(self, name: str) -> None:
        self.i += 1
        el = time.perf_counter() - self.t0
        print(f"[{self.i}/{self.total}] {name} (t = {el:.0f} s)", file=sys.stderr, flush=True)


def ingest(out: Path, minutes: float, n_gpus: int, nvml: bool, seed: int = 0) -> Path:
    """Run the sensor daemon on the simulated fleet (1 s samples, time-accelerated) or NVML."""
    from sensors.daemon import Daemon, DaemonConfig

    store = out / "telemetry.sqlite"
    if store.exists():
        store.unlink()
    n_reads = int(round(minutes * 60))
    if nvml:
        from sensors.nvml import NvmlSource

        source = _Limited(NvmlSource(), n_reads)
        cfg = DaemonConfig(source="nvml", store=str(store), interval=1.0)
    else:
        from sensors.simulated import SimulatedSource

        clock = _FastClock(start=1.7e9)
        source = _Limited(SimulatedSource(n_gpus=n_gpus, seed=seed, clock=clock), n_reads, clock)
        cfg = DaemonConfig(source="sim", store=str(store), interval=0.0, flush_interval=0.5)
    status = Daemon(cfg, source=source).run()
    if status != 0:
        raise RuntimeError(f"sensor daemon exited with status {status}")
    return store


class _FastClock:
    """A clock that advances one second per reading: simulated minutes in wall seconds."""

    def __init__(self, start: float):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += 1.0


class _Limited:
    """Wraps a source: ends (returns None, like a replay at its end) after ``n`` readings."""

    def __init__(self, source, n: int, clock: _FastClock | None = None):
        self._s = source
        self._n = n
        self._clock = clock
        self.name = source.name

    def __getattr__(self, item):
        return getattr(self._s, item)

    def read(self):
        if self._n <= 0:
            return None
        self._n -= 1
        if self._clock is not None:
            self._clock.tick()
        return self._s.read()


def run_demo(args: argparse.Namespace) -> int:
    from twin.calibration import CalibrationConfig, calibrate, plot_fit
    from twin.io.jobs import generate_jobs, load_jobs
    from twin.model import LoadMix
    from twin.placement import compare
    from twin.simulation import prepare, progress_printer, simulate
    from twin.spec import load_facility

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weather = site_pairs(args.weather, "--weather")
    stages = _Stages(5)
    t_start = time.perf_counter()

    stages.start("sensors: telemetry into the store")
    if args.telemetry:
        source = args.telemetry
    else:
        source = str(ingest(out, args.minutes, args.sim_gpus, args.nvml, args.seed))
    stages.start("calibrate: fit the twin to the telemetry")
    cal = calibrate(source, args.calibration_facility, CalibrationConfig())
    plot_fit(cal, out / "calibration.png")
    cal_json = json.loads(_cal_summary(cal))

    stages.start(f"simulate: {args.sim_hours:g} h of the facility")
    spec = load_facility(args.facility)
    ds, sim = simulate(
        spec,
        args.sim_hours,
        60.0,
        args.start,
        LoadMix(),
        weather,
        record_interval=600.0,
        seed=args.seed,
        progress=progress_printer(),
    )

    stages.start("placement: every policy on the same jobs and twin")
    run = prepare(spec, args.placement_step, args.start, LoadMix(), weather, seed=args.seed)
    if args.jobs:
        jobs = load_jobs(args.jobs, facility_gpus=spec.gpus)
    else:
        jobs = generate_jobs(
            spec.gpus,
            hours=args.hours,
            load=0.7,
            seed=args.seed,
            site_gpus=max(s.gpus for s in spec.sites),
        )
    results = compare(
        run,
        jobs,
        args.hours,
        policies=tuple(args.policies),
        epoch=args.placement_step,
        setpoint_interval=max(args.setpoint_hours * 3600.0, args.placement_step),
        iterations=args.iterations,
    )

    stages.start("report")
    summaries = {k: v.summary for k, v in results.items()}
    _write_netcdf(out / "results.nc", ds, results)
    _plots(out, ds, summaries)
    wall = time.perf_counter() - t_start
    report = _report(out, spec, sim, cal_json, summaries, wall, args)
    (out / "report.md").write_text(report)
    _print_table(summaries, cal_json, sim, wall)
    print(f"\nreport: {out / 'report.md'}  results: {out / 'results.nc'}", file=sys.stderr)
    return 0


def _cal_summary(cal) -> str:
    from twin.calibration import summary_json

    return summary_json(cal)


def _write_netcdf(path: Path, ds, results) -> None:
    ds.to_netcdf(path, group="simulate", mode="w")
    for name, res in results.items():
        plan = res.plan
        plan = plan.assign_attrs({k: str(v) for k, v in plan.attrs.items()})
        plan.to_netcdf(path, group=f"placement_{name}", mode="a")


def _plots(out: Path, ds, summaries: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = list(summaries)
    total = [summaries[n]["energy_kwh"]["total"] / 1e3 for n in names]
    cooling = [
        sum(summaries[n]["energy_kwh"][k] for k in ("pumps", "fans", "chillers")) / 1e3
        for n in names
    ]
    axes[0].bar(names, total, color="#4477aa")
    axes[0].set_ylim(min(total) * 0.995, max(total) * 1.002)
    axes[0].set_title("total energy [MWh]")
    axes[1].bar(names, cooling, color="#66ccee")
    axes[1].set_title("cooling energy [MWh]")
    axes[2].bar(names, [summaries[n]["max_gpu_temperature_c"] for n in names], color="#ee6677")
    axes[2].set_title("hottest GPU [°C]")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "policies.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(1, 2, figsize=(13, 3.5))
    for site in ds.site.values:
        sel = ds.sel(site=site)
        ax[0].plot(sel.time, sel.it_power / 1e6, label=f"{site} IT")
        cool = (sel.pump_power + sel.fan_power + sel.chiller_power) / 1e6
        ax[1].plot(sel.time, cool, label=f"{site} cooling")
    ax[0].set_ylabel("MW")
    ax[1].set_ylabel("MW")
    ax[0].legend()
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "simulate.png", dpi=110)
    plt.close(fig)


def _report(out, spec, sim, cal, summaries, wall, args) -> str:
    lines = [
        f"# Superfactory Twin demo: {spec.name}",
        "",
        f"{spec.gpus:,} GPUs in {len(spec.sites)} sites; wall time {wall:.0f} s.",
        "",
        "## Calibration",
        "",
        f"Telemetry: {args.telemetry or ('NVML' if args.nvml else 'simulated fleet')}; "
        f"held-out RMSE {cal['holdout_rmse_k']:.2f} K, CV-RMSE {cal['cv_rmse']:.2f} %, "
        f"NMBE {cal['nmbe']:.2f} %; "
        + (
            f"the stated 95 % prediction interval covers {100 * cal['holdout_coverage_95']:.1f} % "
            "of the held-out readings; "
            if cal.get("holdout_coverage_95") is not None
            else ""
        )
        + "anomalies: "
        + (", ".join(str(g["gpu"]) for g in cal["gpus"] if g.get("anomaly")) or "none"),
        "",
        *([f"Extrapolation: {cal['extrapolation']}.", ""] if cal.get("extrapolation") else []),
        "![calibration](calibration.png)",
        "",
        f"## {args.sim_hours:g} h of the facility (60 s steps)",
        "",
        "| site | IT MWh | pumps MWh | fans MWh | chillers MWh | PUE | hottest GPU °C | "
        "energy balance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, s in sim["sites"].items():
        lines.append(
            f"| {key} | {s['it_energy_kwh'] / 1e3:,.1f} | {s['pump_energy_kwh'] / 1e3:,.2f} | "
            f"{s['fan_energy_kwh'] / 1e3:,.2f} | {s['chiller_energy_kwh'] / 1e3:,.2f} | "
            f"{s['pue']:.4f} | {s['max_gpu_temperature_c']:.1f} | "
            f"{s['energy_balance_relative_error']:.1e} |"
        )
    lines += [
        "",
        "![simulate](simulate.png)",
        "",
        f"## Placement ({args.hours:g} h of jobs)",
        "",
        _markdown_table(summaries),
        "",
        "![policies](policies.png)",
        "",
    ]
    return "\n".join(lines)


def _rows(summaries):
    for name, s in summaries.items():
        e = s["energy_kwh"]
        yield (
            name,
            e["total"] / 1e3,
            (e["pumps"] + e["fans"] + e["chillers"]) / 1e3,
            s["carbon_kg"] / 1e3,
            s["max_gpu_temperature_c"],
            s["violations"],
            s["deferred_jobs"],
        )


def _markdown_table(summaries) -> str:
    head = (
        "| policy | energy MWh | cooling MWh | carbon t | hottest GPU °C | violations | "
        "deferred |\n|---|---|---|---|---|---|---|"
    )
    body = "\n".join(
        f"| {r[0]} | {r[1]:,.1f} | {r[2]:,.2f} | {r[3]:,.1f} | {r[4]:.1f} | {r[5]} | {r[6]} |"
        for r in _rows(summaries)
    )
    return head + "\n" + body


def _print_table(summaries, cal, sim, wall) -> None:
    print(
        f"{'policy':<10}{'energy MWh':>14}{'cooling MWh':>14}{'carbon t':>12}"
        f"{'max GPU °C':>12}{'violations':>12}"
    )
    for r in _rows(summaries):
        viol = r[5] if isinstance(r[5], (int, float)) else len(r[5])
        print(f"{r[0]:<10}{r[1]:>14,.1f}{r[2]:>14,.2f}{r[3]:>12,.1f}{r[4]:>12.1f}{viol:>12}")
    print(
        f"calibration held-out RMSE {cal['holdout_rmse_k']:.2f} K "
        f"(CV-RMSE {cal['cv_rmse']:.2f} %, NMBE {cal['nmbe']:.2f} %); "
        f"simulated {sim['hours']:g} h: PUE {sim['pue']:.4f}, energy balance "
        f"{sim['energy_balance_relative_error']:.1e}; wall {wall:.0f} s"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", "the whole product end to end on embedded defaults", __doc__)
    add_facility(p)
    p.add_argument("--out", default="demo-out", help="output folder (report.md, results.nc)")
    p.add_argument("--nvml", action="store_true", help="use the local GPUs through NVML")
    add_telemetry(p, none="none: a simulated fleet through the sensor daemon")
    p.add_argument("--jobs", default=None, help="a job file or the Alibaba trace CSV")
    p.add_argument("--weather", action="append", metavar="SITE=EPW")
    p.add_argument("--hours", type=float, default=168.0, help="hours of jobs to place")
    p.add_argument("--sim-hours", type=float, default=6.0, help="hours of the simulate stage")
    p.add_argument("--minutes", type=float, default=10.0, help="simulated minutes of telemetry")
    p.add_argument("--sim-gpus", type=int, default=16, help="GPUs of the simulated fleet")
    p.add_argument(
        "--calibration-facility",
        default="h100-node",
        help="facility spec whose priors the calibration uses",
    )
    p.add_argument(
        "--placement-step",
        type=float,
        default=3600.0,
        help="twin step and placement epoch of the placement stage [s]",
    )
    p.add_argument("--policies", nargs="+", default=["pack", "spread", "coolest", "random", "twin"])
    p.add_argument(
        "--setpoint-hours",
        type=float,
        default=6.0,
        help="how often the twin policy re-optimizes setpoints [h]",
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=40,
        help="gradient iterations of each setpoint optimization",
    )
    p.add_argument("--start", default="2023-07-10T00:00Z", help="start (ISO UTC): a summer week")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_demo)


__all__ = ["register", "run_demo", "ingest"]
