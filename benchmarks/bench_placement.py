"""Placement benchmark: every policy on the superfactory, a replayed week of the Alibaba trace.

Usage (from the project root; third-party data beside the clone in ../shared/data)::

    python benchmarks/bench_placement.py [--hours 168] [--start 2023-07-10T00:00Z] [--quick]

Prints (1) the policy comparison (energy, cooling, carbon, PUE, temperatures, violations),
(2) savings of ``twin`` against ``pack``, (3) placement time for 2,500-10,000 generated jobs on
the superfactory and on the mini superfactory (time growth with jobs and GPUs). Writes the plots
``docs/placement_policies.png`` and ``docs/placement_mechanisms.png`` (matplotlib Agg).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import twin  # noqa: E402,F401
from twin.io.jobs import generate_jobs, load_jobs  # noqa: E402
from twin.placement import POLICIES, build_topology, check_feasible, replay  # noqa: E402
from twin.simulation import prepare  # noqa: E402
from twin.spec import load_facility  # noqa: E402

SHARED = Path(os.environ.get("TWIN_SHARED_DATA", ROOT.parent / "shared" / "data"))
WEATHER = {
    "mount_pleasant": SHARED / "weather" / "USA_WI_Milwaukee-Mitchell.Intl.AP.726400_TMY3.epw",
    "atlanta": SHARED / "weather" / "USA_GA_Atlanta-Hartsfield-Jackson.Intl.AP.722190_TMY3.epw",
}
CARBON = {
    "mount_pleasant": SHARED / "grid" / "dcrl_MISO_NG_and_avgCI.csv",
    "atlanta": SHARED / "grid" / "dcrl_SOCO_NG_and_avgCI.csv",
}
TRACE = SHARED / "jobs" / "alibaba_gpu_v2023_openb_pod_list_default.csv"
NO_PARK = "twin, no parking"


def comparison(facility: str, hours: float, start: str, objective: str) -> dict:
    spec = load_facility(facility)
    run = prepare(
        spec,
        step=300.0,
        start=start,
        weather={k: str(v) for k, v in WEATHER.items()},
        carbon={k: str(v) for k, v in CARBON.items()},
    )
    site_gpus = min(s.gpus for s in spec.sites)
    jobs = load_jobs(TRACE, facility_gpus=spec.gpus, load=0.7, hours=hours, site_gpus=site_gpus)
    topo = build_topology(run)
    check_feasible(run, topo, jobs)
    print(
        f"{facility}: {spec.gpus:,} GPUs, {len(jobs):,} jobs from the trace, {jobs.meta['replicas']} replicas x "
        f"{jobs.meta['gpus_per_gpu_equivalent']:.0f} GPUs per GPU-equivalent, offered load "
        f"{jobs.meta['offered_load']:.3f}; {hours} h from {start}; objective {objective}",
        flush=True,
    )
    out = {}
    # the twin without idle-rack parking separates that mechanism from setpoints and placement
    for pol, park in [(p, True) for p in POLICIES[1:]] + [("twin", False), ("twin", True)]:
        res = replay(run, jobs, pol, hours, topo=topo, objective=objective, park=park)
        pol = pol if park or pol != "twin" else NO_PARK
        out[pol] = res
        s = res.summary
        print(
            f"  {pol}: {s['energy_kwh']['total']:,.0f} kWh in {s['wall_seconds']:.0f} s", flush=True
        )
    return out


def table(results: dict) -> str:
    lines = []
    head = [
        "policy",
        "total MWh",
        "IT MWh",
        "cooling MWh",
        "pumps",
        "fans",
        "chillers",
        "tCO2",
        "PUE",
        "max GPU C",
        "viol.",
        "throttle min",
        "deferred",
        "work GPU-h",
        "kWh/GPU-h",
        "parked rack-h",
        "mean wait s",
        "wall s",
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for pol, r in results.items():
        s, e = r.summary, r.summary["energy_kwh"]
        lines.append(
            "| "
            + " | ".join(
                [
                    pol,
                    f"{e['total'] / 1e3:,.1f}",
                    f"{e['it'] / 1e3:,.1f}",
                    f"{e['cooling'] / 1e3:,.2f}",
                    f"{e['pumps'] / 1e3:,.2f}",
                    f"{e['fans'] / 1e3:,.2f}",
                    f"{e['chillers'] / 1e3:,.2f}",
                    f"{s['carbon_kg'] / 1e3:,.1f}",
                    f"{s['pue']:.4f}",
                    f"{s['max_gpu_temperature_c']:.1f}",
                    f"{s['violations']}",
                    f"{s['throttle_minutes']:.0f}",
                    f"{s['deferred_jobs']}",
                    f"{s['work_gpu_hours']:,.0f}",
                    f"{s['kwh_per_completed_gpu_hour']:.4f}",
                    f"{s['parked_rack_hours']:,.0f}",
                    f"{s['job_wait_mean_s']:.0f}",
                    f"{s['wall_seconds']:.0f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def savings(results: dict) -> str:
    tw, pk = results["twin"].summary, results["pack"].summary
    lines = []
    for base in [p for p in results if p != "twin"]:
        b = results[base].summary
        d_tot = 1 - tw["energy_kwh"]["total"] / b["energy_kwh"]["total"]
        d_cool = 1 - tw["energy_kwh"]["cooling"] / b["energy_kwh"]["cooling"]
        d_co2 = 1 - tw["carbon_kg"] / b["carbon_kg"]
        d_work = 1 - tw["kwh_per_completed_gpu_hour"] / b["kwh_per_completed_gpu_hour"]
        lines.append(
            f"twin vs {base}: total {d_tot:+.2%}, cooling {d_cool:+.2%}, carbon {d_co2:+.2%}, "
            f"energy per GPU-hour {d_work:+.2%}"
        )
    del pk
    return "\n".join(lines)


def plots(results: dict, docs: Path) -> None:
    pols = list(results)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    tot = [results[p].summary["energy_kwh"]["total"] / 1e3 for p in pols]
    cool = [results[p].summary["energy_kwh"]["cooling"] / 1e3 for p in pols]
    co2 = [results[p].summary["carbon_kg"] / 1e3 for p in pols]
    for a, vals, title in zip(
        ax,
        (tot, cool, co2),
        ("total energy [MWh]", "cooling energy [MWh]", "carbon [t CO2]"),
        strict=True,
    ):
        colors = {"twin": "#d62728", NO_PARK: "#ff9896"}
        a.bar(
            [p.replace(", ", "\n") for p in pols],
            vals,
            color=[colors.get(p, "#7f7f7f") for p in pols],
        )
        lo = min(vals)
        a.set_ylim(lo * 0.97 if title != "cooling energy [MWh]" else 0, max(vals) * 1.01)
        a.set_title(title)
    fig.tight_layout()
    fig.savefig(docs / "placement_policies.png", dpi=110)
    plt.close(fig)
    pk, tw = results["pack"].plan, results["twin"].plan
    fig, ax = plt.subplots(3, 2, figsize=(13, 10.5))
    t = pk.time.values
    for i, site in enumerate(pk.site.values):
        ax[0, 0].plot(t, pk.chiller_power.sel(site=site) / 1e6, "--", label=f"pack {site}")
        ax[0, 0].plot(t, tw.chiller_power.sel(site=site) / 1e6, label=f"twin {site}")
        ax[0, 1].plot(t, pk.mean_gpu_temperature.sel(site=site), "--", label=f"pack {site}")
        ax[0, 1].plot(t, tw.mean_gpu_temperature.sel(site=site), label=f"twin {site}")
        ax[1, 0].plot(t, pk.pump_power.sel(site=site) / 1e6, "--", label=f"pack {site}")
        ax[1, 0].plot(t, tw.pump_power.sel(site=site) / 1e6, label=f"twin {site}")
        ax[1, 1].plot(t, pk.fan_power.sel(site=site) / 1e6, "--", label=f"pack {site}")
        ax[1, 1].plot(t, tw.fan_power.sel(site=site) / 1e6, label=f"twin {site}")
        ax[2, 0].plot(t, tw.parked_racks.sel(site=site), label=f"twin {site}")
        ax[2, 1].plot(t, pk.it_power.sel(site=site) / 1e6, "--", label=f"pack {site}")
        ax[2, 1].plot(t, tw.it_power.sel(site=site) / 1e6, label=f"twin {site}")
        if NO_PARK in results:
            np_ = results[NO_PARK].plan
            ax[2, 1].plot(t, np_.it_power.sel(site=site) / 1e6, ":", label=f"{NO_PARK} {site}")
        del i
    ch_p = sum(v["chiller_hours"] for v in results["pack"].summary["sites"].values())
    ch_t = sum(v["chiller_hours"] for v in results["twin"].summary["sites"].values())
    ax[0, 0].set_title(
        f"chiller power [MW] (free cooling: chiller plant-hours {ch_p:.0f} pack -> {ch_t:.0f} twin)"
    )
    ax[0, 1].set_title("mean GPU temperature [degC] (leakage)")
    ax[1, 0].set_title("pump power [MW]")
    ax[1, 1].set_title("fan power [MW]")
    parked_h = results["twin"].summary["parked_rack_hours"]
    ax[2, 0].set_title(f"idle racks parked (powered down): {parked_h:,.0f} rack-hours")
    ax[2, 1].set_title("IT power [MW] (idle power of parked racks, leakage)")
    for a in ax.ravel():
        a.legend(fontsize=7)
        a.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(docs / "placement_mechanisms.png", dpi=110)
    plt.close(fig)


def scaling(quick: bool) -> str:
    lines = [
        "| facility | GPUs | jobs | policy | placement s | replay wall s |",
        "|---|---|---|---|---|---|",
    ]
    for fac in ("mini-superfactory", "superfactory"):
        spec = load_facility(fac)
        run = prepare(spec, step=300.0, start="2023-07-10T00:00Z")
        topo = build_topology(run)
        for n in (2500, 10000) if quick else (2500, 5000, 10000):
            jobs = generate_jobs(
                spec.gpus,
                hours=168,
                load=0.7,
                n_jobs=n,
                site_gpus=min(s.gpus for s in spec.sites),
                seed=2,
            )
            for pol in ("pack", "twin"):
                res = replay(run, jobs, pol, 24.0, topo=topo)
                s = res.summary
                lines.append(
                    f"| {fac} | {spec.gpus:,} | {len(jobs):,} | {pol} | {s['placement_seconds']:.1f} | {s['wall_seconds']:.1f} |"
                )
                print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--facility", default="superfactory")
    ap.add_argument("--hours", type=float, default=168.0)
    ap.add_argument("--start", default="2023-07-10T00:00Z")
    ap.add_argument("--objective", default="energy")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--only-scaling", action="store_true")
    args = ap.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    t0 = time.perf_counter()
    if args.only_scaling:
        print(scaling(args.quick))
        return 0
    results = comparison(args.facility, args.hours, args.start, args.objective)
    print(table(results))
    print(savings(results))
    plots(results, ROOT / "docs")
    print(json.dumps({p: r.summary["violations_by_constraint"] for p, r in results.items()}))
    if not args.skip_scaling:
        print(scaling(args.quick))
    print(f"benchmark wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
