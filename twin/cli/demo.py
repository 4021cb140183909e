"""``twin demo``: the whole product end to end on a laptop, with no GPU and no data file.

Stages (each prints its progress on stderr):

1. **sensors**: a simulated part of the facility (``--sim-racks`` racks of its first row, one
   sensor daemon per tray of 4 GPUs, labelled ``SITE/b0/f0/r0/kRACK/tTRAY``; a hidden spread of
   cold-plate resistances and one degraded plate) feeds the real sensor daemon, time-accelerated,
   into a durable store (or the local GPUs with ``--nvml``, or a recorded ``--telemetry``);
2. **calibrate**: the twin is fitted to that telemetry against the facility's own GPU model
   (``params.nc``); held-out error, CV-RMSE, NMBE, anomalies;
3. **simulate**: ``--sim-hours`` (6 by default) of the superfactory at 60 s steps in each site's
   weather (energy balance), on the calibrated GPUs (the monitored ones where their labels say,
   the rest from the calibrated population) and on the spec's GPUs;
4. **placement**: a week of generated jobs (or ``--jobs``) replayed under every policy on the
   calibrated twin, and the twin policy on the same jobs on the spec's GPUs, with each site's
   typical-year (or ``--weather``) weather and grid carbon;
5. **report**: ``report.md`` with plots, ``results.nc`` and a summary on stdout: how many GPUs
   are calibrated or from the fleet prior, the hottest monitored GPU by the hidden truth and by
   the twin with and without calibration, and the GPU-hours the twin policy put on the degraded
   plate's rack with and without it (:mod:`twin.cli.demo_fleet`).
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


def ingest(out: Path, minutes: float, nvml: bool, spec, racks: int, seed: int = 0):
    """Telemetry through the real sensor daemon: (store, the simulated part or None for NVML)."""
    from twin.cli.demo_fleet import run_daemon, simulate_part

    if not nvml:
        part = simulate_part(out, spec, racks, minutes, seed)
        return part.store, part
    from sensors.nvml import NvmlSource

    store = out / "telemetry.sqlite"
    store.unlink(missing_ok=True)
    run_daemon(store, NvmlSource(), int(round(minutes * 60)))
    return store, None


def run_demo(args: argparse.Namespace) -> int:
    from twin.spec import load_facility

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weather = site_pairs(args.weather, "--weather")
    spec = load_facility(args.facility)
    stages = _Stages(5)
    t_start = time.perf_counter()

    stages.start("sensors: telemetry into the store")
    part = None
    if args.telemetry:
        source = args.telemetry
    else:
        store, part = ingest(out, args.minutes, args.nvml, spec, args.sim_racks, args.seed)
        source = str(store)
    stages.start("calibrate: fit the twin to the telemetry")
    cal_json, cal = _calibrate(args, out, source, spec, part)
    stages.start(f"simulate: {args.sim_hours:g} h of the facility")
    sims = _simulate(args, spec, weather, cal)
    stages.start("placement: every policy on the same jobs and twin")
    runs, jobs, results, baseline = _place(args, spec, weather, cal)

    stages.start("report")
    effect, effect_ds = None, None
    if part is not None and cal is not None:
        effect, effect_ds = _effect(out, spec, part, runs, results, baseline, jobs, args.hours)
    summaries = {k: v.summary for k, v in results.items()}
    if baseline is not None:
        summaries[f"{baseline.policy} (uncalibrated)"] = baseline.summary
    _write_netcdf(out / "results.nc", sims, results, baseline, effect_ds)
    _plots(out, sims[_MAIN if _MAIN in sims else "spec"][0], summaries)
    wall = time.perf_counter() - t_start
    report = _report(out, spec, sims, cal_json, effect, summaries, wall, args)
    (out / "report.md").write_text(report)
    _print_table(summaries, cal_json, sims, effect, wall)
    print(f"\nreport: {out / 'report.md'}  results: {out / 'results.nc'}", file=sys.stderr)
    return 0


def _effect(out: Path, spec, part, runs, results, baseline, jobs, hours: float):
    """The calibration's effect against the hidden truth (summary, Dataset) and its plot."""
    from twin.cli.demo_fleet import story

    plans = {_MAIN: results[baseline.policy].plan, "spec": baseline.plan}
    effect, ds = story(spec, part, runs, plans, jobs.table, hours)
    effect["policy"] = baseline.policy
    effect["calibration"] = runs[_MAIN].calibration
    ds.attrs["summary_json"] = json.dumps(effect)
    _effect_plot(out, effect, ds)
    return effect, ds


#: The key of the calibrated twin's results (``spec``: the twin on the spec's GPUs).
_MAIN = "calibrated"


def _calibrate(args, out: Path, source: str, spec, part):
    """Fit, write ``params.nc`` and the fit plot; the calibration when the facility runs its GPU
    model (else None: the twin stays on the spec's GPUs)."""
    from twin.calibration import CalibrationConfig, calibrate, plot_fit
    from twin.model.calibrated import load_calibration

    facility = args.calibration_facility or (spec if part is not None else "h100-node")
    result = calibrate(source, facility, CalibrationConfig())
    result.write(out / "params.nc")
    plot_fit(result, out / "calibration.png")
    cal = load_calibration(out / "params.nc")
    models = {s.building.rack.gpu.name for s in spec.sites}
    if cal.gpu_model not in models:
        print(
            f"demo: the calibration is of {cal.gpu_model}, {spec.name} runs "
            f"{', '.join(sorted(models))}: the twin stays on the spec's GPUs",
            file=sys.stderr,
        )
        cal = None
    return json.loads(_cal_summary(result)), cal


def _simulate(args, spec, weather, cal) -> dict:
    """``--sim-hours`` of the facility, calibrated (when there is a calibration) and on the
    spec's GPUs: {key: (Dataset, summary)}."""
    from twin.model import LoadMix
    from twin.simulation import prepare, progress_printer, simulate

    sims = {}
    for key, c in ((_MAIN, cal), ("spec", None)):
        if key == _MAIN and c is None:
            continue
        run = prepare(spec, 60.0, args.start, LoadMix(), weather, seed=args.seed, calibration=c)
        sims[key] = simulate(
            spec, args.sim_hours, 60.0, args.start, LoadMix(), weather,
            record_interval=600.0, seed=args.seed, progress=progress_printer(f"simulate {key}"),
            run=run,
        )  # fmt: skip
    return sims


def _place(args, spec, weather, cal):
    """Every policy on the (calibrated) twin, and the story's policy on the spec's GPUs too:
    (runs, jobs, results, the uncalibrated replay or None)."""
    from twin.io.jobs import generate_jobs, load_jobs
    from twin.model import LoadMix
    from twin.placement import compare
    from twin.simulation import prepare

    runs = {
        key: prepare(spec, args.placement_step, args.start, LoadMix(), weather, seed=args.seed,
                     calibration=c)
        for key, c in ((_MAIN, cal), ("spec", None))
        if key != _MAIN or c is not None
    }  # fmt: skip
    if args.jobs:
        jobs = load_jobs(args.jobs, facility_gpus=spec.gpus)
    else:
        jobs = generate_jobs(
            spec.gpus, hours=args.hours, load=0.7, seed=args.seed,
            site_gpus=max(s.gpus for s in spec.sites),
        )  # fmt: skip
    kw = {
        "epoch": args.placement_step,
        "setpoint_interval": max(args.setpoint_hours * 3600.0, args.placement_step),
        "iterations": args.iterations,
    }
    main = runs.get(_MAIN, runs["spec"])
    results = compare(main, jobs, args.hours, policies=tuple(args.policies), **kw)
    baseline = None
    if _MAIN in runs:
        policy = "twin" if "twin" in args.policies else args.policies[0]
        baseline = compare(runs["spec"], jobs, args.hours, policies=(policy,), **kw)[policy]
    return runs, jobs, results, baseline


def _cal_summary(cal) -> str:
    from twin.calibration import summary_json

    return summary_json(cal)


def _write_netcdf(path: Path, sims: dict, results: dict, baseline, effect) -> None:
    """Groups ``simulate`` (the calibrated twin where there is one), ``simulate_uncalibrated``,
    ``placement_<policy>``, ``placement_<policy>_uncalibrated`` and ``calibration_effect``."""
    main = _MAIN if _MAIN in sims else "spec"
    sims[main][0].to_netcdf(path, group="simulate", mode="w")
    if main == _MAIN:
        sims["spec"][0].to_netcdf(path, group="simulate_uncalibrated", mode="a")
    plans = {f"placement_{k}": v.plan for k, v in results.items()}
    if baseline is not None:
        plans[f"placement_{baseline.policy}_uncalibrated"] = baseline.plan
    for group, plan in plans.items():
        plan = plan.assign_attrs({k: str(v) for k, v in plan.attrs.items()})
        plan.to_netcdf(path, group=group, mode="a")
    if effect is not None:
        effect.to_netcdf(path, group="calibration_effect", mode="a")


def _effect_plot(out: Path, effect: dict, ds) -> None:
    """The monitored GPUs' full-load die temperature (truth, calibrated, spec) and the GPU-hours
    of the part's racks with and without the calibration."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(ds.sizes["gpu"])
    for key, style in (("truth", "k."), ("calibrated", "C3x"), ("spec", "C0-")):
        ax[0].plot(x, ds[f"die_{key}"], style, ms=4, label=_LABEL[key])
    bad = list(ds.gpu.values).index(effect["degraded_gpu"])
    ax[0].annotate("degraded plate", (bad, float(ds.die_truth[bad])), xytext=(8, -4),
                   textcoords="offset points")  # fmt: skip
    ax[0].set_xlabel("monitored GPU (rack, tray, GPU order)")
    ax[0].set_ylabel("die at full load, design inlet [°C]")
    ax[0].legend(fontsize=8)
    racks = effect["racks"]
    w = 0.4
    for i, key in enumerate(("spec", "calibrated")):
        hours = ds[f"rack_gpu_hours_{key}"].values[racks]
        ax[1].bar(np.arange(len(racks)) + (i - 0.5) * w, hours, w, label=_LABEL[key])
    ax[1].set_xticks(np.arange(len(racks)), [f"k{r}" for r in racks])
    ax[1].set_title(f"{effect['policy']} policy: GPU-hours per rack", fontsize=9)
    ax[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "calibration_effect.png", dpi=110)
    plt.close(fig)


_LABEL = {"truth": "hidden truth", "calibrated": "calibrated twin", "spec": "uncalibrated twin"}


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


def _report(out, spec, sims, cal, effect, summaries, wall, args) -> str:
    lines = [
        f"# Superfactory Twin demo: {spec.name}",
        "",
        f"{spec.gpus:,} GPUs in {len(spec.sites)} sites; wall time {wall:.0f} s.",
        "",
        *_calibration_lines(cal, args),
        *(_effect_lines(effect, args) if effect else []),
        *_simulate_lines(sims, args),
        f"## Placement ({args.hours:g} h of jobs)",
        "",
        "Every policy on the "
        + ("calibrated twin" if _MAIN in sims else "twin (the spec's GPUs)")
        + (
            f"; `{effect['policy']} (uncalibrated)`: the same jobs on the spec's GPUs."
            if effect
            else "."
        ),
        "",
        _markdown_table(summaries),
        "",
        "![policies](policies.png)",
        "",
    ]
    return "\n".join(lines)


def _calibration_lines(cal: dict, args) -> list[str]:
    return [
        "## Calibration",
        "",
        f"Telemetry: {args.telemetry or ('NVML' if args.nvml else 'simulated racks')}; "
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
    ]


def _effect_lines(e: dict, args) -> list[str]:
    c, h, f = e["calibration"], e["hottest"], e["facility_hottest"]
    rack = e["degraded_gpu"].rsplit("/", 2)[0]
    ratio = e["degraded_resistance_k_per_w"] / e["median_resistance_k_per_w"]
    rows = [f"| {_LABEL[k]} | {h[k]['gpu']} | {h[k]['die_c']:.1f} |" for k in _LABEL]
    return [
        "## The calibrated twin against the hidden truth",
        "",
        f"Sensors: {e['gpus']} simulated GPUs in racks "
        f"{', '.join(f'k{r}' for r in e['racks'])} of {rack.rsplit('/', 1)[0]}, one sensor "
        f"daemon per tray, {args.minutes:g} simulated minutes at 1 s. Hidden: cold-plate "
        "resistances 0.018-0.030 K/W and one degraded plate, "
        f"`{e['degraded_gpu']}` at {e['degraded_resistance_k_per_w']:.4f} K/W "
        f"({ratio:.1f}x the median).",
        "",
        f"The twin runs {c['calibrated']:,} GPUs on their own calibration and "
        f"{c['fleet_prior']:,} on the fleet prior (the calibrated population of "
        f"{c['gpu_model']}); {c['spec_default']:,} on the spec's values.",
        "",
        "Hottest monitored GPU at full load and its rack's design coolant inlet:",
        "",
        "| | GPU | die °C |",
        "|---|---|---|",
        *rows,
        "",
        f"Error of the monitored GPUs' full-load die temperature against the truth (RMSE): "
        f"calibrated {e['rmse_k']['calibrated']:.2f} K, uncalibrated {e['rmse_k']['spec']:.2f} K. "
        f"The calibrated twin's hottest GPU of the whole facility at full load: rack "
        f"`{f['label']}` at {f['die_c']:.1f} °C"
        + (" (monitored)." if f["monitored"] else " (not monitored: a draw from the fleet prior)."),
        "",
        f"`{e['policy']}` policy, {args.hours:g} h of jobs: the degraded plate's rack `{rack}` ran "
        f"{e['gpu_hours']['calibrated']:,.0f} GPU-hours ({e['jobs']['calibrated']} jobs) on the "
        f"calibrated twin and {e['gpu_hours']['spec']:,.0f} ({e['jobs']['spec']} jobs) on the "
        "uncalibrated one; the part's healthy racks "
        f"{e['healthy_racks_gpu_hours']['calibrated']:,.0f} and "
        f"{e['healthy_racks_gpu_hours']['spec']:,.0f} on average, every rack "
        f"{e['mean_rack_gpu_hours']['calibrated']:,.0f} and {e['mean_rack_gpu_hours']['spec']:,.0f}.",
        "",
        "![calibration effect](calibration_effect.png)",
        "",
    ]


def _simulate_lines(sims: dict, args) -> list[str]:
    lines = [
        f"## {args.sim_hours:g} h of the facility (60 s steps)",
        "",
        "| twin | site | IT MWh | pumps MWh | fans MWh | chillers MWh | PUE | hottest GPU °C | "
        "energy balance |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, (_ds, sim) in sims.items():
        for site, s in sim["sites"].items():
            lines.append(
                f"| {_LABEL[key]} | {site} | {s['it_energy_kwh'] / 1e3:,.1f} | "
                f"{s['pump_energy_kwh'] / 1e3:,.2f} | {s['fan_energy_kwh'] / 1e3:,.2f} | "
                f"{s['chiller_energy_kwh'] / 1e3:,.2f} | {s['pue']:.4f} | "
                f"{s['max_gpu_temperature_c']:.1f} | {s['energy_balance_relative_error']:.1e} |"
            )
    return [*lines, "", "![simulate](simulate.png)", ""]


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


def _print_table(summaries, cal, sims, effect, wall) -> None:
    print(
        f"{'policy':<22}{'energy MWh':>14}{'cooling MWh':>14}{'carbon t':>12}"
        f"{'max GPU °C':>12}{'violations':>12}"
    )
    for r in _rows(summaries):
        viol = r[5] if isinstance(r[5], (int, float)) else len(r[5])
        print(f"{r[0]:<22}{r[1]:>14,.1f}{r[2]:>14,.2f}{r[3]:>12,.1f}{r[4]:>12.1f}{viol:>12}")
    sim = sims[_MAIN if _MAIN in sims else "spec"][1]
    print(
        f"calibration held-out RMSE {cal['holdout_rmse_k']:.2f} K "
        f"(CV-RMSE {cal['cv_rmse']:.2f} %, NMBE {cal['nmbe']:.2f} %); "
        f"simulated {sim['hours']:g} h: PUE {sim['pue']:.4f}, energy balance "
        f"{sim['energy_balance_relative_error']:.1e}; wall {wall:.0f} s"
    )
    if effect:
        _print_effect(effect)


def _print_effect(e: dict) -> None:
    c, h = e["calibration"], e["hottest"]
    print(
        f"calibrated twin: {c['calibrated']:,} GPUs calibrated, {c['fleet_prior']:,} from the "
        f"fleet prior, {c['spec_default']:,} spec defaults"
    )
    print(
        "hottest monitored GPU at full load: "
        + "; ".join(f"{_LABEL[k]} {h[k]['gpu']} {h[k]['die_c']:.1f} °C" for k in _LABEL)
    )
    print(
        f"{e['policy']} policy, degraded rack {e['degraded_gpu'].rsplit('/', 2)[0]}: "
        f"{e['gpu_hours']['calibrated']:,.0f} GPU-h ({e['jobs']['calibrated']} jobs) calibrated vs "
        f"{e['gpu_hours']['spec']:,.0f} ({e['jobs']['spec']} jobs) uncalibrated; healthy part racks "
        f"{e['healthy_racks_gpu_hours']['calibrated']:,.0f} vs "
        f"{e['healthy_racks_gpu_hours']['spec']:,.0f}"
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
    p.add_argument(
        "--sim-racks",
        type=int,
        default=2,
        help="racks of the simulated part of the facility (one sensor daemon per tray)",
    )
    p.add_argument(
        "--calibration-facility",
        default=None,
        help="facility spec whose priors the calibration uses [the demo's --facility for the "
        "simulated racks, h100-node for --telemetry or --nvml]",
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
