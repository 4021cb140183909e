"""Batch sweeps of placement replays on dask.distributed: days x policies x weather years.

Each task prepares the twin for one (day, weather year) on all of the facility's sites and
replays one policy on jobs drawn by the generator (or loaded from a job file) — the same jobs
for every policy of a case. Tasks run on a :class:`dask.distributed.LocalCluster` of worker
*processes* by default, or on an existing scheduler (``tcp://HOST:8786``). Progress is printed
as tasks complete.

Weather years: ``typical`` (the site's embedded typical year) or an EPW path per site, given as
``NAME:SITE=EPW[,SITE=EPW]``.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from twin import jaxcache
from twin.units import SpecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One sweep task."""

    facility: str
    day: str  # ISO date, start of the replay
    hours: float
    policy: str
    weather_name: str
    weather: tuple[tuple[str, str], ...]  # (site, EPW path)
    carbon: tuple[tuple[str, str], ...]
    jobs: str | None
    load: float
    seed: int
    step: float
    epoch: float


def parse_weather_years(
    items: Sequence[str] | None,
) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """``typical`` or ``NAME:SITE=EPW[,SITE=EPW]`` -> [(name, ((site, path), ...))]."""
    out = []
    for item in items or ["typical"]:
        if item == "typical":
            out.append(("typical", ()))
            continue
        name, sep, rest = item.partition(":")
        pairs = []
        for part in rest.split(",") if sep else []:
            site, eq, path = part.partition("=")
            if not eq or not site or not path:
                raise SpecError("--weather-year", item, "typical or NAME:SITE=EPW[,SITE=EPW]")
            pairs.append((site.strip(), path.strip()))
        if not pairs:
            raise SpecError("--weather-year", item, "typical or NAME:SITE=EPW[,SITE=EPW]")
        out.append((name, tuple(pairs)))
    return out


def run_case(case: Case) -> dict:
    """Run one sweep case (in a worker process); returns a flat result row."""
    import twin  # noqa: F401  (float64)
    from twin.io.jobs import jobs_for_facility
    from twin.placement import build_topology, check_feasible, replay
    from twin.simulation import prepare
    from twin.spec import load_facility

    jaxcache.configure()  # a worker started outside the CLI gets the CLI's cache too
    t0 = time.perf_counter()
    spec = load_facility(case.facility)
    run = prepare(
        spec, step=case.step, start=case.day, weather=dict(case.weather), carbon=dict(case.carbon)
    )
    topo = build_topology(run)
    jobs = jobs_for_facility(case.jobs, spec, load=case.load, hours=case.hours, seed=case.seed)
    check_feasible(run, topo, jobs)
    res = replay(run, jobs, case.policy, case.hours, epoch=case.epoch, topo=topo, seed=case.seed)
    s = res.summary
    e = s["energy_kwh"]
    return {
        "day": case.day,
        "weather": case.weather_name,
        "policy": case.policy,
        "facility": spec.name,
        "hours": s["hours"],
        "jobs": s["jobs"],
        "it_kwh": e["it"],
        "pumps_kwh": e["pumps"],
        "fans_kwh": e["fans"],
        "chillers_kwh": e["chillers"],
        "total_kwh": e["total"],
        "carbon_kg": s["carbon_kg"],
        "pue": s["pue"],
        "max_gpu_temperature_c": s["max_gpu_temperature_c"],
        "violations": s["violations"],
        "deferred_jobs": s["deferred_jobs"],
        "wall_seconds": time.perf_counter() - t0,
        "worker_pid": os.getpid(),
    }


def make_cases(
    facility: str,
    days: Sequence[str],
    policies: Sequence[str],
    weather_years: Sequence[str] | None = None,
    hours: float = 24.0,
    jobs: str | None = None,
    load: float = 0.7,
    seed: int = 0,
    step: float = 300.0,
    epoch: float = 900.0,
    carbon: dict[str, str] | None = None,
) -> list[Case]:
    """The cross product days x weather years x policies (sites are those of the facility)."""
    from twin.placement import POLICIES
    from twin.simulation import parse_start

    for pol in policies:
        if pol not in POLICIES:
            raise SpecError("--policy", pol, f"one of {', '.join(POLICIES)}")
    for day in days:
        parse_start(day)
    if not days:
        raise SpecError("--days", "<none>", "at least one ISO date")
    cases = []
    for day, (wname, wpairs), pol in itertools.product(
        days, parse_weather_years(weather_years), policies
    ):
        cases.append(
            Case(
                facility,
                day,
                hours,
                pol,
                wname,
                wpairs,
                tuple(sorted((carbon or {}).items())),
                jobs,
                load,
                seed,
                step,
                epoch,
            )
        )
    return cases


def run_sweep(
    cases: Sequence[Case],
    scheduler: str | None = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    progress: bool = True,
    stream=None,
) -> pd.DataFrame:
    """Run ``cases`` on dask.distributed (LocalCluster of processes, or ``scheduler``)."""
    from dask.distributed import Client, LocalCluster, as_completed

    stream = stream or sys.stderr
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="20s")
    else:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
    rows = []
    t0 = time.perf_counter()
    try:
        futures = client.map(run_case, list(cases), pure=False)
        for k, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            rows.append(row)
            if progress:
                print(
                    f"sweep: {k}/{len(futures)} done ({row['day']} {row['weather']} {row['policy']}: "
                    f"{row['total_kwh']:.0f} kWh) {time.perf_counter() - t0:.0f} s elapsed",
                    file=stream,
                    flush=True,
                )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return pd.DataFrame(rows).sort_values(["day", "weather", "policy"]).reset_index(drop=True)


__all__ = ["Case", "make_cases", "run_case", "run_sweep", "parse_weather_years"]
