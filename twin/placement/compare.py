"""Every policy replayed on the same jobs and twin, and each policy's savings against the
baselines split by mechanism (:data:`twin.placement.accounting.ENERGY_PARTS`)."""

from __future__ import annotations

import json

from twin.io.jobs import JobSet
from twin.placement.accounting import ENERGY_PARTS
from twin.placement.allocation import BASELINES, POLICIES
from twin.placement.replay import PolicyResult, replay
from twin.placement.topology import build_topology, check_feasible
from twin.simulation import Run


def compare(
    run: Run, jobs: JobSet, hours: float, policies=POLICIES, **kw
) -> dict[str, PolicyResult]:
    """Replay every policy on the same jobs and twin (``topo``, or one built from ``caps`` and
    ``margin``; other keywords go to :func:`replay`), after :func:`check_feasible`; each
    summary's ``savings_by_mechanism`` against the baselines among them
    (:func:`attach_savings`)."""
    topo = kw.pop("topo", None) or build_topology(run, kw.pop("caps", None), kw.pop("margin", 5.0))
    check_feasible(run, topo, jobs)
    results = {pol: replay(run, jobs, pol, hours, topo=topo, **kw) for pol in policies}
    attach_savings(results)
    return results


def strongest_baseline(summaries: dict[str, dict]) -> str | None:
    """The baseline among ``summaries`` (policy -> summary) with the least total energy per
    completed GPU-hour, or None when none was replayed."""
    base = [p for p in summaries if p in BASELINES]
    return min(base, key=lambda p: summaries[p]["kwh_per_completed_gpu_hour"], default=None)


def savings_by_mechanism(summary: dict, base: dict) -> dict:
    """What ``summary``'s policy saves against ``base`` (baseline minus policy), per part of the
    energy (:data:`ENERGY_PARTS`) and in total: in kWh, and in kWh per completed GPU-hour (each
    part over its own replay's completed GPU-hours, so that a policy doing less work does not
    look better); the parts add up to the total. Also the differences in work and waits
    (policy minus baseline)."""
    e, b = summary["energy_kwh"], base["energy_kwh"]
    w, bw = summary["completed_gpu_hours"], base["completed_gpu_hours"]
    kwh = {k: b[k] - e[k] for k in ENERGY_PARTS}
    per = {k: b[k] / max(bw, 1e-9) - e[k] / max(w, 1e-9) for k in ENERGY_PARTS}
    kwh["total"] = b["total"] - e["total"]
    per["total"] = base["kwh_per_completed_gpu_hour"] - summary["kwh_per_completed_gpu_hour"]
    return {
        "kwh": kwh,
        "kwh_per_completed_gpu_hour": per,
        "total_percent": 100.0 * kwh["total"] / b["total"] if b["total"] else 0.0,
        "per_completed_gpu_hour_percent": 100.0
        * per["total"]
        / max(base["kwh_per_completed_gpu_hour"], 1e-30),
        "carbon_kg": base["carbon_kg"] - summary["carbon_kg"],
        "completed_gpu_hours_difference": w - bw,
        "job_wait_p95_s_difference": summary["job_wait_p95_s"] - base["job_wait_p95_s"],
        "job_delay_p95_s_difference": summary["job_delay_p95_s"] - base["job_delay_p95_s"],
    }


def attach_savings(results: dict[str, PolicyResult]) -> str | None:
    """Set every summary's ``savings_by_mechanism`` (baseline -> :func:`savings_by_mechanism`)
    against each other baseline in ``results`` and ``strongest_baseline`` (also in each plan's
    ``summary_json``); returns the strongest baseline."""
    summaries = {p: r.summary for p, r in results.items()}
    strongest = strongest_baseline(summaries)
    for pol, res in results.items():
        res.summary["savings_by_mechanism"] = {
            b: savings_by_mechanism(res.summary, summaries[b])
            for b in summaries
            if b in BASELINES and b != pol
        }
        res.summary["strongest_baseline"] = strongest
        res.plan.attrs["summary_json"] = json.dumps(res.summary)
    return strongest
