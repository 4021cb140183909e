r"""The demo's monitored part of the facility, and what its calibration changes.

The part: ``racks`` racks of the facility's first site (building 0, floor 0, row 0, racks
0..racks-1), one simulated host per tray (an NVL72 compute tray: 4 GPUs, one OS), each with its
own sensor daemon (:class:`sensors.daemon.Daemon` over :class:`sensors.simulated.SimulatedSource`,
time-accelerated) labelled ``SITE/b0/f0/r0/kRACK/tTRAY`` as ``twin sensord --location`` labels a
host; the daemons write one store.

Hidden truth: :func:`sensors.simulated.draw_parameters` over the whole part at the facility GPU
model's TDP (die-to-coolant resistance 0.018-0.030 K/W, die capacity, leakage, idle power, HBM,
coolant 24-32 degC), with its one poorly mounted plate set to :data:`DEGRADED` times the part's
median resistance (a blocked plate; its place is drawn, so the twin is not told).

What the calibration changes, read against that truth: each monitored GPU's die temperature at
its TDP and its rack's design coolant inlet, :math:`T_{in} + r\,P_{TDP}`, with :math:`r` the
twin's die rise over the inlet per watt of package power at full load
(:func:`physics.facility.package_steady`, utilization 1) with and without the calibration, and
:math:`r = R_{true}` for the truth (the simulated die sits :math:`R\,P` over its coolant at
package power :math:`P`); and the GPU-hours each rack ran in a placement replay.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from physics import facility as F
from sensors.simulated import TrueParameters, draw_parameters
from twin.model.calibrated import parse_location
from twin.spec import FacilitySpec
from twin.units import ZERO_CELSIUS_K, SpecError

#: The degraded plate's resistance over the part's median [-] (sensors.simulated's 1.8x).
DEGRADED = 1.8


class FastClock:
    """A clock that advances one second per reading: simulated minutes in wall seconds."""

    def __init__(self, start: float):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += 1.0


class Limited:
    """Wraps a source: ends (returns None, like a replay at its end) after ``n`` readings."""

    def __init__(self, source, n: int, clock: FastClock | None = None):
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


def run_daemon(store: Path, source, n_reads: int, clock: FastClock | None = None) -> None:
    """The sensor daemon on ``source`` for ``n_reads`` polls into ``store`` (1 s apart)."""
    from sensors.daemon import Daemon, DaemonConfig

    host = source.devices()[0].host if source.devices() else "localhost"
    paced = clock is not None  # simulated: as fast as it computes
    cfg = DaemonConfig(
        source="sim" if paced else "nvml",
        store=str(store),
        interval=0.0 if paced else 1.0,
        flush_interval=0.5,
        hostname=host,
    )
    log = logging.getLogger("twin.sensors.daemon")
    level = log.level
    log.setLevel(max(level, logging.WARNING))  # one daemon per tray: no start/flush lines
    try:
        status = Daemon(cfg, source=Limited(source, n_reads, clock)).run()
    finally:
        log.setLevel(level)
    if status != 0:
        raise RuntimeError(f"sensor daemon of {host} exited with status {status}")


@dataclasses.dataclass(frozen=True)
class FleetPart:
    """The monitored part: its store, each GPU's location label and hidden parameters."""

    store: Path
    location: list[str]  # SITE/BUILDING/FLOOR/ROW/RACK/TRAY/GPU per GPU
    truth: TrueParameters  # per GPU, in the order of ``location``
    degraded: int  # index of the degraded plate

    @property
    def degraded_rack(self) -> int:
        """Rack index (within the site's row 0: also the facility's) of the degraded plate."""
        return int(self.location[self.degraded].split("/")[4].lstrip("k"))


def part_truth(n: int, rng: np.random.Generator, tdp: float) -> tuple[TrueParameters, int]:
    """Hidden parameters of ``n`` GPUs at ``tdp`` [W] and the index of the degraded plate."""
    truth = draw_parameters(n, rng, tdp)
    bad = int(np.argmax(truth.resistance))  # draw_parameters' one poorly mounted plate
    r = truth.resistance.copy()
    r[bad] = DEGRADED * np.median(np.delete(r, bad))
    return dataclasses.replace(truth, resistance=r), bad


def tray_labels(spec: FacilitySpec, racks: int) -> list[str]:
    """Host (tray) labels ``SITE/b0/f0/r0/kRACK/tTRAY`` of the part's ``racks`` racks."""
    site = spec.sites[0]
    if not 1 <= racks <= site.building.racks_per_row:
        raise SpecError("--sim-racks", racks, f"1 to {site.building.racks_per_row} racks")
    trays = site.building.rack.trays
    return [f"{site.key}/b0/f0/r0/k{k}/t{t}" for k in range(racks) for t in range(trays)]


def simulate_part(
    out: Path, spec: FacilitySpec, racks: int, minutes: float, seed: int = 0
) -> FleetPart:
    """One sensor daemon per tray of the part, ``minutes`` of 1 s readings, into one store."""
    from sensors.simulated import SimulatedSource

    rack = spec.sites[0].building.rack
    per_tray = rack.paths_per_tray * rack.plates_in_series
    hosts = tray_labels(spec, racks)
    truth, bad = part_truth(len(hosts) * per_tray, np.random.default_rng(seed), rack.gpu.tdp)
    store = out / "telemetry.sqlite"
    store.unlink(missing_ok=True)
    for h, label in enumerate(hosts):
        clock = FastClock(start=1.7e9)
        gpus = truth.subset(slice(h * per_tray, (h + 1) * per_tray))
        src = SimulatedSource(
            per_tray, seed + h, host=label.replace("/", "-"), clock=clock,
            location=label, parameters=gpus, gpu_name=f"Simulated {rack.gpu.name}",
        )  # fmt: skip
        run_daemon(store, src, int(round(minutes * 60)), clock)
    location = [f"{h}/{g}" for h in hosts for g in range(per_tray)]
    return FleetPart(store, location, truth, bad)


def full_load_rise(run, spec: FacilitySpec | None = None, location: list[str] | None = None):
    """The twin's die rise over the plate inlet per watt of package power [K/W] at utilization
    1 and the rack's design inlet, and that inlet [degC]: (R, T, P, S) arrays, or of the GPUs
    at ``location`` (labels in ``spec``)."""
    p = run.params
    inlet = np.asarray(p.tcs_supply_setpoint)[np.asarray(p.rack_cdu)][:, None, None, None]
    st = F.package_steady(p, run.derived, inlet, 1.0)
    shape = tuple(p.gpu_shape)
    rise = np.broadcast_to((np.asarray(st.die) - inlet) / np.asarray(st.power), shape)
    inlet = np.broadcast_to(inlet, shape) - ZERO_CELSIUS_K
    if location is None:
        return rise, inlet
    slots = [parse_location(label, spec) for label in location]
    at = tuple(np.array([getattr(s, k) for s in slots]) for k in ("rack", "tray", "path", "series"))
    return rise[at], inlet[at]


def rack_label(spec: FacilitySpec, rack: int) -> str:
    """The location label ``SITE/bB/fF/rROW/kRACK`` of the facility's rack index ``rack``
    (the inverse of :func:`twin.model.calibrated.parse_location`'s rack)."""
    for site in spec.sites:
        if rack < site.racks:
            b = site.building
            idx = []
            for n in (b.racks_per_row, b.rows_per_floor, b.floors):
                rack, i = divmod(rack, n)
                idx.append(i)
            k, row, floor = idx
            return f"{site.key}/b{rack}/f{floor}/r{row}/k{k}"
        rack -= site.racks
    raise SpecError("rack", rack, f"a rack index below {sum(s.racks for s in spec.sites)}")


def facility_hottest(run, tdp: float) -> tuple[int, float]:
    """The twin's hottest GPU of the facility at ``tdp`` [W] and design inlet: (rack, degC)."""
    rise, inlet = full_load_rise(run)
    die = (inlet + rise * tdp).reshape(run.params.n_racks, -1).max(axis=1)
    r = int(np.argmax(die))
    return r, float(die[r])


def rack_gpu_hours(plan: xr.Dataset, table: pd.DataFrame, n_racks: int, hours: float):
    """GPU-hours each rack ran jobs within ``hours`` of a placement plan (R,)."""
    out = np.zeros(n_racks)
    duration = dict(zip(table["id"].astype(str), table["duration"], strict=True))
    for job, alloc, start in zip(
        plan.job.values, plan.job_racks.values, plan.job_start.values, strict=True
    ):
        if not alloc or not np.isfinite(start):
            continue
        end = min(start + duration[str(job)], hours * 3600.0)
        span = max(end - max(start, 0.0), 0.0) / 3600.0
        for part in str(alloc).split(";"):
            rack, count = part.split(":")
            out[int(rack)] += int(count) * span
    return out


def rack_jobs(plan: xr.Dataset, rack: int) -> int:
    """Jobs of a placement plan with GPUs on ``rack``."""
    return sum(
        any(p.split(":")[0] == str(rack) for p in str(a).split(";") if p)
        for a in plan.job_racks.values
    )


def story(
    spec: FacilitySpec, part: FleetPart, runs: dict, plans: dict, table: pd.DataFrame, hours: float
) -> tuple[dict, xr.Dataset]:
    """What the calibration changed, against the hidden truth: ``runs`` and ``plans`` (one
    policy's placement) keyed ``calibrated`` and ``spec`` (the twin without calibration).
    Returns the summary and the per-GPU, per-rack figures (netCDF-ready)."""
    loc, tdp = part.location, part.truth.tdp
    rise = {k: full_load_rise(run, spec, loc) for k, run in runs.items()}
    die = {k: inlet + r * tdp for k, (r, inlet) in rise.items()}
    die["truth"] = rise["spec"][1] + part.truth.resistance * tdp
    n_racks = runs["spec"].params.n_racks
    hours_of = {k: rack_gpu_hours(plan, table, n_racks, hours) for k, plan in plans.items()}
    summary = _summary(part, die, hours_of, plans)
    rack, die_c = facility_hottest(runs["calibrated"], float(tdp[0]))
    summary["facility_hottest"] = {
        "rack": rack,
        "label": rack_label(spec, rack),
        "die_c": die_c,
        "monitored": rack in summary["racks"],
    }
    data = {f"die_{k}": ("gpu", v, {"units": "degC"}) for k, v in die.items()}
    data["resistance_truth"] = ("gpu", part.truth.resistance, {"units": "K/W"})
    for k, v in hours_of.items():
        data[f"rack_gpu_hours_{k}"] = ("rack", v, {"units": "h"})
    ds = xr.Dataset(
        data, coords={"gpu": np.array(loc)}, attrs={"degraded_gpu": summary["degraded_gpu"]}
    )
    return summary, ds


def _summary(part: FleetPart, die: dict, hours_of: dict, plans: dict) -> dict:
    """Hottest GPUs (truth, calibrated, spec) and the degraded rack's GPU-hours and jobs."""
    loc, r = part.location, part.degraded_rack
    racks = sorted({int(label.split("/")[4].lstrip("k")) for label in loc})

    def hottest(k: str) -> dict:
        i = int(np.argmax(die[k]))
        alike = float(np.ptp(die[k])) < 1e-6
        return {"gpu": "all alike" if alike else loc[i], "die_c": float(die[k][i])}

    def healthy(v: np.ndarray) -> float:
        return float(np.mean([v[q] for q in racks if q != r])) if len(racks) > 1 else math.nan

    return {
        "gpus": len(loc),
        "racks": racks,
        "degraded_gpu": loc[part.degraded],
        "degraded_resistance_k_per_w": float(part.truth.resistance[part.degraded]),
        "median_resistance_k_per_w": float(np.median(part.truth.resistance)),
        "hottest": {k: hottest(k) for k in ("truth", "calibrated", "spec")},
        "rmse_k": {
            k: float(np.sqrt(np.mean((die[k] - die["truth"]) ** 2))) for k in ("calibrated", "spec")
        },
        "degraded_rack": r,
        "gpu_hours": {k: float(v[r]) for k, v in hours_of.items()},
        "healthy_racks_gpu_hours": {k: healthy(v) for k, v in hours_of.items()},
        "mean_rack_gpu_hours": {k: float(v.mean()) for k, v in hours_of.items()},
        "jobs": {k: rack_jobs(plan, r) for k, plan in plans.items()},
    }


__all__ = [
    "DEGRADED",
    "FastClock",
    "FleetPart",
    "Limited",
    "facility_hottest",
    "full_load_rise",
    "part_truth",
    "rack_gpu_hours",
    "rack_jobs",
    "rack_label",
    "run_daemon",
    "simulate_part",
    "story",
    "tray_labels",
]
