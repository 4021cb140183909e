"""Accounting of a replay: each epoch's GPU-seconds weighted rack schedule, the twin advanced
over it, the constraint audit at the simulated inlet, and the summary and plan at the end."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import jax
import numpy as np
import pandas as pd
import xarray as xr

from physics import facility as F
from physics import workload
from twin.io.jobs import WORKLOAD_CLASSES
from twin.model import LoadMix
from twin.placement.allocation import RackState
from twin.placement.parking import Parking
from twin.placement.scheduler import JobArrays, RackLoad, Scheduler
from twin.placement.steady import hot_coefficients
from twin.placement.topology import Topology
from twin.simulation import Run, run_records
from twin.units import ZERO_CELSIUS_K

#: Diurnal level of inference racks in the twin's schedule, taken at each epoch's middle
#: (:func:`physics.workload.diurnal_factor`): the inference class's amplitude, peaking at the
#: load mix's local peak hour.
INFERENCE_DIURNAL_AMPLITUDE = WORKLOAD_CLASSES["inference"].diurnal_amplitude
INFERENCE_PEAK_LOCAL_HOUR = LoadMix.inference_peak_local_hour
_KWH = 3.6e6  # J


@dataclass
class EpochTally:
    """Time integrals over one epoch, up to ``t_last`` [s]: the racks' low/high-phase
    utilization (R,) [s], busy GPU-seconds, powered rack-seconds (R,); and the highest
    high-phase utilization each rack ran in the epoch (R,) (for the audit)."""

    t_last: float
    low: np.ndarray
    high: np.ndarray
    busy: float
    on: np.ndarray
    hot: np.ndarray

    @classmethod
    def begin(cls, t0: float, load: RackLoad, racks: RackState) -> EpochTally:
        """Nothing integrated yet at ``t0``; each busy rack's hottest job as it stands."""
        r_n = racks.topo.n_racks
        hot = np.zeros(r_n)
        for r in np.flatnonzero(racks.free < racks.topo.gpus_per_rack):
            hot[r] = load.hottest(r)
        return cls(t0, np.zeros(r_n), np.zeros(r_n), 0.0, np.zeros(r_n), hot)

    def advance(self, t: float, load: RackLoad, racks: RackState, parked: np.ndarray) -> None:
        """Integrate the current state from ``t_last`` to ``t``."""
        span = t - self.t_last
        total_gpus = float(racks.topo.n_racks * racks.topo.gpus_per_rack)
        self.low += load.low * span
        self.high += load.high * span
        self.busy += (total_gpus - racks.free.sum()) * span
        self.on += ~parked * span
        self.t_last = t

    def note_start(self, i: int, on: np.ndarray, load: RackLoad) -> None:
        """Job ``i`` started on racks ``on`` at an arrival."""
        for r in on:
            self.hot[r] = max(self.hot[r], load.jobs[r][i][0])


def epoch_schedule(
    tally: EpochTally,
    load: RackLoad,
    jobs: JobArrays,
    racks: RackState,
    hour0: float,
    t0: float,
    t1: float,
    epoch: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-rack low and high utilization of the epoch [t0, t1) of length ``epoch`` [s]: the GPU-seconds weighted mean,
    with the inference share of a rack scaled by the diurnal level at the epoch's middle.
    Sets each busy rack's period and phase to those of its largest training job."""
    topo = racks.topo
    mid = 0.5 * (t0 + t1)
    level = np.ones(topo.n_racks)
    for s in range(len(topo.site_keys)):
        local = (hour0 + mid / 3600.0 + topo.tz_hours[s]) % 24.0
        level[topo.rack_site == s] = float(
            workload.diurnal_factor(INFERENCE_DIURNAL_AMPLITUDE, INFERENCE_PEAK_LOCAL_HOUR, local)
        )
    inf_share = np.zeros(topo.n_racks)
    for r in np.flatnonzero(racks.free < topo.gpus_per_rack):
        on_r = load.jobs[r]
        tot = sum(v[1] for v in on_r.values())
        inf = sum(v[1] for j, v in on_r.items() if jobs.diurnal[j] > 0)
        inf_share[r] = inf / tot if tot else 0.0
        trains = [(v[1], v[2], j) for j, v in on_r.items() if v[2] > 0]
        if trains:
            _, per, j = max(trains)
            load.periods[r], load.phases[r] = per, jobs.phase[j] * per
    scale = 1.0 + (level - 1.0) * inf_share
    return tally.low / epoch * scale, tally.high / epoch * scale


@dataclass
class FacilityTrace:
    """The twin's state and ledger carried across epochs, and per epoch its records and the
    setpoints in force (degC, degC, -); the GPUs' idle energy and the parked racks' standby
    energy [J], which the ledger does not separate (:func:`energy_parts`)."""

    state: F.State
    ledger: F.Ledger
    gpu_idle_j: float = 0.0
    standby_j: float = 0.0
    records: list = field(default_factory=list)
    fws: list = field(default_factory=list)
    tcs: list = field(default_factory=list)
    pump: list = field(default_factory=list)

    @classmethod
    def start(cls, p: F.FacilityParams, d: F.Derived) -> FacilityTrace:
        """The twin's thermally settled initial state, an empty ledger."""
        return cls(F.initial_state(p, d), F.empty_ledger(p.n_sites))

    def advance(self, q: F.FacilityParams, dq: F.Derived, run: Run, steps: int, setpoints) -> None:
        """Advance the twin ``steps`` steps of ``run.dt`` on ``q`` and record the epoch."""
        self.state, self.ledger, rec = run_records(
            q, dq, self.state, self.ledger, run.dt, run.hour0, 1, steps, run.n_sub
        )
        self.records.append(jax.tree.map(lambda x: np.asarray(x)[0], rec))
        fws_k, tcs_k, pump = setpoints
        self.fws.append(np.asarray(fws_k) - ZERO_CELSIUS_K)
        self.tcs.append(np.asarray(tcs_k) - ZERO_CELSIUS_K)
        self.pump.append(np.asarray(pump))

    def note_power_state(
        self, q: F.FacilityParams, powered: np.ndarray, standby_w: float, epoch: float
    ) -> None:
        """Add an epoch's GPU idle energy (the temperature-independent idle power of every GPU,
        scaled by its rack's powered share in ``q``, :func:`.steady.with_power_state`) and
        standby energy (``standby_w`` [W] over the parked share of each rack, ``powered`` (R,))."""
        idle = np.broadcast_to(np.asarray(q.gpu_power_idle), q.gpu_shape)
        self.gpu_idle_j += float(idle.sum()) * epoch
        self.standby_j += float((1.0 - np.asarray(powered)).sum()) * standby_w * epoch


@dataclass
class Audit:
    """Constraint audit each epoch at the simulated TCS supply, and the GPU work delivered."""

    topo: Topology
    t_max_op: np.ndarray  # (R,) the hottest GPU's max operating temperature [K]
    counters: dict = field(
        default_factory=lambda: {"gpu": 0, "hbm": 0, "rack_cap": 0, "row_cap": 0, "site_cap": 0}
    )
    hot_max: float = -np.inf  # hottest busy GPU seen [K]
    throttle_gpu_s: float = 0.0  # GPU-seconds over the max operating temperature
    busy_gpu_s: float = 0.0

    @classmethod
    def of(cls, p: F.FacilityParams, topo: Topology) -> Audit:
        """No violation yet; each rack's max operating temperature (its strictest GPU)."""
        r_n = p.n_racks

        def per_rack(x):
            return np.broadcast_to(np.asarray(x), p.gpu_shape).reshape(r_n, -1).max(axis=1)

        return cls(
            topo,
            t_max_op=per_rack(p.gpu_temp_max_operating),
        )

    def check(
        self,
        q_hot: F.FacilityParams,
        dq: F.Derived,
        state: F.State,
        hot_u: np.ndarray,
        racks: RackState,
        epoch: float,
    ) -> None:
        """Count the racks over a limit at the epoch's end: hottest GPU and HBM at the highest
        high-phase utilization ``hot_u`` (R,) they ran (steady at the simulated inlet), peak
        power over the rack, row and site caps; GPU-seconds over the max operating temperature."""
        topo, c = self.topo, self.counters
        t_in = np.asarray(state.tcs_supply)[topo.rack_cdu]
        a_act, b_act = hot_coefficients(q_hot, dq, t_in)
        busy = hot_u > 0
        hot = np.where(busy, a_act + b_act * hot_u, -np.inf)
        self.hot_max = max(self.hot_max, float(hot.max()) if busy.any() else -np.inf)
        c["gpu"] += int((hot > topo.gpu_limit + 1e-6).sum())
        over_op = hot > self.t_max_op
        self.throttle_gpu_s += float(((topo.gpus_per_rack - racks.free) * over_op).sum() * epoch)
        a_hbm, b_hbm = hot_coefficients(q_hot, dq, t_in, node="hbm")
        hbm = np.where(busy, a_hbm + b_hbm * hot_u, -np.inf)
        c["hbm"] += int((hbm > topo.hbm_limit + 1e-6).sum())
        c["rack_cap"] += int((racks.rack_peak > topo.rack_cap * (1 + 1e-9)).sum())
        c["row_cap"] += int((racks.cdu_peak > topo.cdu_cap * (1 + 1e-9)).sum())
        c["site_cap"] += int((racks.site_peak > topo.site_cap * (1 + 1e-9)).sum())


#: The parts of the total energy (kWh keys of ``energy_kwh``), which add up to it: IT as GPU
#: dynamic (utilization) power, GPU idle, GPU leakage, rack CPUs/switches/NICs of powered racks
#: and parked racks' standby; then pumps, fans, chillers and electrical losses.
ENERGY_PARTS = (
    "gpu_dynamic",
    "gpu_idle",
    "gpu_leakage",
    "rack_overhead",
    "parked_standby",
    "pumps",
    "fans",
    "chillers",
    "electrical_losses",
)


def energy_parts(led, trace: FacilityTrace) -> dict:
    """IT energy split as :data:`ENERGY_PARTS` [kWh]: the ledger's GPU energy and GPU leakage;
    GPU idle and parked standby as accounted each epoch (:meth:`FacilityTrace.note_power_state`);
    GPU dynamic = GPU - leakage - idle, rack overhead = IT - GPU - standby."""
    it, gpu = float(led.it_energy.sum()), float(led.gpu_energy.sum())
    leak = float(led.leakage_energy.sum())
    return {
        "gpu_dynamic": (gpu - leak - trace.gpu_idle_j) / _KWH,
        "gpu_idle": trace.gpu_idle_j / _KWH,
        "gpu_leakage": leak / _KWH,
        "rack_overhead": (it - gpu - trace.standby_j) / _KWH,
        "parked_standby": trace.standby_j / _KWH,
    }


def _energy_kwh(led, trace: FacilityTrace) -> dict:
    energy = {
        "it": float(led.it_energy.sum() / _KWH),
        "pumps": float(led.pump_energy.sum() / _KWH),
        "fans": float(led.fan_energy.sum() / _KWH),
        "chillers": float(led.chiller_energy.sum() / _KWH),
        "electrical_losses": float(led.electrical_loss_energy.sum() / _KWH),
    }
    energy["cooling"] = energy["pumps"] + energy["fans"] + energy["chillers"]
    energy["total"] = energy["it"] + energy["cooling"] + energy["electrical_losses"]
    return energy | energy_parts(led, trace)


def _waits(sched: Scheduler, horizon: float) -> dict:
    """Waits for capacity of the jobs not deferred (start, or the horizon for a job still
    queued, minus arrival) and delays of every job (deferral included) [s]."""
    arrival, start_time, deferred = sched.jobs.arrival, sched.start_time, sched.deferred
    started = ~np.isnan(start_time)
    seen = started | (arrival < horizon)
    delay = np.where(started, start_time, horizon) - arrival
    wait, delay = delay[seen & ~deferred], delay[seen]

    def stat(x, f):
        return float(f(x)) if len(x) else 0.0

    return {
        "job_wait_mean_s": stat(wait, np.mean),
        "job_wait_p95_s": stat(wait, lambda x: np.percentile(x, 95)),
        "job_wait_max_s": stat(wait, np.max),
        "job_delay_p95_s": stat(delay, lambda x: np.percentile(x, 95)),
        "job_delay_max_s": stat(delay, np.max),
    }


def _site_summary(led, topo: Topology) -> dict:
    return {
        k: {
            "it_kwh": float(led.it_energy[i] / _KWH),
            "cooling_kwh": float(
                (led.pump_energy[i] + led.fan_energy[i] + led.chiller_energy[i]) / _KWH
            ),
            "chiller_kwh": float(led.chiller_energy[i] / _KWH),
            "chiller_hours": float(led.chiller_seconds[i] / 3600.0),
            "carbon_kg": float(led.carbon_mass[i]),
        }
        for i, k in enumerate(topo.site_keys)
    }


def summarize(
    policy: str,
    run: Run,
    objective: str,
    horizon: float,
    sched: Scheduler,
    parking: Parking,
    audit: Audit,
    trace: FacilityTrace,
    placement_seconds: float,
    wall: float,
) -> dict:
    """The replay's summary (energies in kWh, waits in s, see docs/placement.md)."""
    led = jax.tree.map(np.asarray, trace.ledger)
    energy = _energy_kwh(led, trace)
    arrival, start_time, deferred = sched.jobs.arrival, sched.start_time, sched.deferred
    started = ~np.isnan(start_time)
    max_t = max(float(led.max_gpu_temp.max()), audit.hot_max)
    counters = {**audit.counters, "overcommit": sched.overcommits}
    busy_gpu_s, total_gpus = audit.busy_gpu_s, float(sched.topo.n_racks * sched.topo.gpus_per_rack)
    lost_gpu_s = float(led.work_lost_gpu_seconds.sum())
    completed = (busy_gpu_s - lost_gpu_s) / 3600.0
    return {
        "policy": policy,
        "objective": objective,
        "facility": run.spec.name,
        "start": run.start.isoformat(),
        "hours": horizon / 3600.0,
        "jobs": int((arrival < horizon).sum()),
        # arriving at or after the end of the replay: counted, never replayed
        "jobs_after_horizon": int((arrival >= horizon).sum()),
        "jobs_started": int((started & (start_time < horizon)).sum()),
        "energy_kwh": energy,
        "carbon_kg": float(led.carbon_mass.sum()),
        "cost_usd": float(led.cost.sum()),
        "pue": energy["total"] / energy["it"],
        "max_gpu_temperature_c": max_t - ZERO_CELSIUS_K,
        "throttle_minutes": (audit.throttle_gpu_s + float(led.throttle_gpu_seconds.sum())) / 60.0,
        "violations": int(sum(counters.values())),
        "violations_by_constraint": counters,
        "deferred_jobs": int(deferred.sum()),
        "queued_jobs": int(len(sched.queue)),
        **_waits(sched, horizon),
        "parking": parking.enabled,
        "parked_rack_hours": parking.parked_rack_seconds / 3600.0,
        "rack_parks": parking.parks,
        "rack_wakes": parking.wakes,
        "jobs_waited_for_wake": len(parking.waited_for_wake),
        "mean_gpu_load": busy_gpu_s / (total_gpus * horizon),
        "work_gpu_hours": busy_gpu_s / 3600.0,
        # the facility model's power and thermal caps: GPU-hours at reduced clocks
        "work_lost_gpu_hours": lost_gpu_s / 3600.0,
        # GPU-hours of jobs' work done in the replay: busy less lost to the caps
        "completed_gpu_hours": completed,
        "kwh_per_completed_gpu_hour": energy["total"] / max(completed, 1e-9),
        "savings_by_mechanism": {},  # filled by compare (against the baselines replayed)
        "placement_seconds": placement_seconds,
        "wall_seconds": wall,
        "sites": _site_summary(led, sched.topo),
    }


def plan_dataset(
    run, topo, t, start_time, placed, deferred, recs, fws, tcs, pump, epoch, summary, parked
) -> xr.Dataset:
    """The plan: per job its site, rack:GPUs allocations, start and deferral; per epoch and site
    powers, temperatures and parked racks; per epoch the setpoints."""
    n = len(recs)
    times = run.start + pd.to_timedelta((np.arange(n) + 0.5) * epoch, unit="s")
    site_idx = np.array([topo.rack_site[pl[0][0]] if pl is not None else -1 for pl in placed])
    racks = [
        ";".join(f"{r}:{c}" for r, c in zip(*pl, strict=True)) if pl is not None else ""
        for pl in placed
    ]
    stack = lambda name: np.stack([getattr(r, name) for r in recs])  # noqa: E731
    ds = xr.Dataset(
        {
            "job_site": ("job", np.array([topo.site_keys[s] if s >= 0 else "" for s in site_idx])),
            "job_racks": (
                "job",
                np.array(racks),
                {"long_name": "rack:GPUs allocations (NVLink domains)"},
            ),
            "job_gpus": ("job", t.gpus.to_numpy()),
            "job_workload": ("job", t.workload.to_numpy().astype(str)),
            "job_arrival": ("job", t.arrival.to_numpy(), {"units": "s"}),
            "job_start": ("job", start_time, {"units": "s"}),
            "job_deferred": ("job", deferred.astype(np.int8)),
            "it_power": (("time", "site"), stack("it_power"), {"units": "W"}),
            "pump_power": (("time", "site"), stack("pump_power"), {"units": "W"}),
            "fan_power": (("time", "site"), stack("fan_power"), {"units": "W"}),
            "chiller_power": (("time", "site"), stack("chiller_power"), {"units": "W"}),
            "max_gpu_temperature": (
                ("time", "site"),
                stack("max_gpu_temp") - ZERO_CELSIUS_K,
                {"units": "degC"},
            ),
            "mean_gpu_temperature": (
                ("time", "site"),
                stack("mean_gpu_temp") - ZERO_CELSIUS_K,
                {"units": "degC"},
            ),
            "fws_supply_temperature": (
                ("time", "site"),
                stack("fws_supply_temp") - ZERO_CELSIUS_K,
                {"units": "degC"},
            ),
            "temp_air": (("time", "site"), stack("temp_air") - ZERO_CELSIUS_K, {"units": "degC"}),
            "fws_supply_setpoint": (("time", "building"), np.stack(fws), {"units": "degC"}),
            "tcs_supply_setpoint": (("time", "cdu"), np.stack(tcs), {"units": "degC"}),
            "tcs_pump_speed": (("time", "cdu"), np.stack(pump), {"units": "1"}),
            "parked_racks": (
                ("time", "site"),
                parked,
                {"long_name": "racks powered down (idle-rack parking) at the epoch end"},
            ),
        },
        coords={
            "time": times.tz_convert(None),
            "site": topo.site_keys,
            "job": t.id.to_numpy().astype(str),
        },
        attrs={
            "policy": summary["policy"],
            "facility": run.spec.name,
            "epoch_seconds": epoch,
            "summary_json": json.dumps(summary),
        },
    )
    return ds
