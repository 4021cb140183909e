r"""Replay of a job set on the twin under a placement policy.

Every policy sees the same jobs, the same facility twin (:mod:`physics.facility`) and the same
initial state. Jobs are placed online, at arrival, in time order (:mod:`.scheduler`); the replay
advances the twin in epochs (default 15 min), each with the per-rack workload schedule of the
jobs that ran in it (GPU-seconds weighted, so rack energy is exact: GPU power and leakage are
linear in utilization and temperature) and the setpoints the policy chose (:mod:`.controller`);
the state is carried across epochs (:mod:`.accounting`). The twin policy re-optimizes its
setpoints hourly and parks idle racks (:mod:`.parking`); the baselines and ablations use some
of these mechanisms (:data:`twin.placement.allocation.MECHANISMS`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from twin.io.jobs import JobSet
from twin.placement.accounting import (
    Audit,
    EpochTally,
    FacilityTrace,
    epoch_schedule,
    plan_dataset,
    summarize,
)
from twin.placement.allocation import MECHANISMS, POLICIES, Mechanisms, RackState
from twin.placement.controller import SetpointControl
from twin.placement.events import Event, EventKind, EventQueue
from twin.placement.parking import RACK_STANDBY_W, RACK_WAKE_S, Parking
from twin.placement.scheduler import JobArrays, Scheduler
from twin.placement.steady import (
    derive_jit,
    hot_coefficients,
    with_power_state,
    with_schedule,
    with_setpoints,
)
from twin.placement.topology import Topology, build_topology
from twin.simulation import Run
from twin.units import SpecError


@dataclass
class PolicyResult:
    """One policy's replay: its summary (docs/placement.md) and plan (xarray)."""

    policy: str
    summary: dict
    plan: xr.Dataset


def replay(
    run: Run,
    jobs: JobSet,
    policy: str,
    hours: float,
    epoch: float = 900.0,
    setpoint_interval: float = 3600.0,
    topo: Topology | None = None,
    objective: str = "energy",
    iterations: int = 40,
    seed: int = 0,
    progress: Callable[[float, float], None] | None = None,
    ramp: bool = True,
    park: bool = True,
    wake_time: float = RACK_WAKE_S,
    standby_w: float = RACK_STANDBY_W,
) -> PolicyResult:
    """Replay ``jobs`` for ``hours`` on ``run``'s twin under ``policy``; returns summary and plan.

    ``epoch`` [s]: the twin's schedule step (a whole number of ``run.dt``); ``setpoint_interval``
    [s]: how often the twin policy re-optimizes its setpoints (``iterations`` L-BFGS-B
    iterations, the FWS supply ramped down at most FWS_RAMP_DOWN_K_PER_H unless ``ramp`` is
    False) for ``objective`` (energy, carbon or cost); ``seed``: job phases and the random
    policy. ``park`` (policies that park: ``twin``, ``pack-park``; False turns it off): power
    down idle racks beyond each site's reserve and wake them when demand returns (``wake_time`` [s] until a woken rack takes jobs;
    ``standby_w`` [W] drawn by a parked rack); see :mod:`twin.placement.parking`.
    """
    _check_arguments(policy, objective, hours, wake_time, standby_w)
    options = _Options(
        epoch=epoch,
        setpoint_interval=setpoint_interval,
        objective=objective,
        iterations=iterations,
        seed=seed,
        ramp=ramp,
        park=park,
        wake_time=wake_time,
        standby_w=standby_w,
    )
    rp = _Replay.start(run, jobs, policy, hours, topo or build_topology(run), options)
    t_wall = time.perf_counter()
    for e in range(rp.n_epochs):
        t0, t1 = e * rp.epoch, (e + 1) * rp.epoch
        if rp.reoptimize_due(e, t0):
            rp.reoptimize(t0)  # park idle racks, then setpoints and marginal costs
        tally = EpochTally.begin(t0, rp.sched.load, rp.racks)
        while (event := rp.events.pop_before(t1)) is not None:
            tally.advance(event.time, rp.sched.load, rp.racks, rp.parking.parked)
            rp.handle(event, tally)
        tally.advance(t1, rp.sched.load, rp.racks, rp.parking.parked)
        rp.close_epoch(tally, t0, t1)  # the twin over the epoch's schedule; audit
        if progress:
            progress((e + 1) / rp.n_epochs, time.perf_counter() - t_wall)
    return rp.result(time.perf_counter() - t_wall)


def _check_arguments(policy, objective, hours, wake_time, standby_w) -> None:
    if policy not in POLICIES:
        raise SpecError("--policy", policy, f"one of {', '.join(POLICIES)}")
    if objective not in ("energy", "carbon", "cost"):
        raise SpecError("--objective", objective, "one of energy, carbon, cost")
    if not (math.isfinite(hours) and hours > 0):
        raise SpecError("--hours", hours, "a positive number of hours")
    if not (math.isfinite(wake_time) and wake_time >= 0):
        raise SpecError("--wake-time", wake_time, "a wake time >= 0 s")
    if not (math.isfinite(standby_w) and standby_w >= 0):
        raise SpecError("--standby-power", standby_w, "a standby power >= 0 W")


def period_load(
    run: Run, jobs: JobArrays, topo: Topology, horizon: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """The period's load for ``pack-static``'s one optimization: (hour of year, mean rack
    utilization (R,), hottest-GPU utilization (R,)).

    Taken from the job set before the replay, as a planner would: the GPU-seconds of the jobs
    arriving in [0, ``horizon``) that fall inside it (each started at arrival), at the
    GPU-seconds weighted mean of their low- and high-phase power, filled into racks in pack
    order (the mean number of busy GPUs on the first racks). Every rack keeps room for a job at
    TDP, as the twin's hourly optimization does (the setpoints must admit any placement all
    period). The hour is the one whose site-mean outdoor dry-bulb temperature is nearest the
    period's mean.
    """
    inside = np.clip(np.minimum(jobs.arrival + jobs.duration, horizon) - jobs.arrival, 0.0, None)
    gpu_s = jobs.gpus * inside * (jobs.arrival < horizon)
    frac = 0.5 * (jobs.frac_low + jobs.frac_high)
    frac_mean = float((gpu_s * frac).sum() / max(gpu_s.sum(), 1e-30))
    busy = gpu_s.sum() / horizon  # mean busy GPUs
    gpr = topo.gpus_per_rack
    share = np.clip((busy - gpr * np.arange(topo.n_racks)) / gpr, 0.0, 1.0)
    racks = np.arange(topo.n_racks)
    u_mean = share * topo.utilization(frac_mean, racks)
    u_hot = topo.utilization(1.0, racks)
    temp = np.asarray(run.params.weather_temp_air).mean(axis=1)  # (hours of the year,)
    hours = run.hour0 + np.arange(max(1, int(math.ceil(horizon / 3600.0))))
    t_h = temp[hours.astype(int) % len(temp)]
    return float(hours[np.argmin(np.abs(t_h - t_h.mean()))]), u_mean, u_hot


def _hourly_weights(run: Run, objective: str) -> np.ndarray:
    """Weight of a W per hour of the year and site: energy 1, carbon and cost normalized to a
    mean of 1."""
    if objective == "energy":
        return np.ones_like(np.asarray(run.params.carbon_intensity))
    x = np.asarray(run.params.carbon_intensity if objective == "carbon" else run.params.price)
    return x / max(x.mean(), 1e-30)


@dataclass(frozen=True)
class _Options:
    """The replay's options (see :func:`replay`)."""

    epoch: float
    setpoint_interval: float
    objective: str
    iterations: int
    seed: int
    ramp: bool
    park: bool
    wake_time: float
    standby_w: float


@dataclass
class _Replay:
    """The parts of one replay and the steps of its loop."""

    run: Run
    policy: str
    options: _Options
    epoch: float  # [s], a whole number of twin steps
    steps: int  # twin steps per epoch
    n_epochs: int
    job_table: pd.DataFrame
    jobs: JobArrays
    racks: RackState
    events: EventQueue
    parking: Parking
    sched: Scheduler
    control: SetpointControl
    trace: FacilityTrace
    audit: Audit
    control_seconds: float = 0.0  # wall time of setpoint optimization

    @classmethod
    def start(
        cls, run: Run, jobs: JobSet, policy: str, hours: float, topo: Topology, options: _Options
    ) -> _Replay:
        """Every part at t = 0: design setpoints, the twin's settled initial state, no job."""
        p0, d0, dt = run.params, run.derived, run.dt
        steps = max(1, int(round(options.epoch / dt)))
        epoch = steps * dt
        n_epochs = max(1, int(math.ceil(hours * 3600.0 / epoch)))
        rng = np.random.default_rng(options.seed)
        arrays = JobArrays.of(jobs.table, rng)  # draws the job phases first
        trace = FacilityTrace.start(p0, d0)
        r_n = p0.n_racks
        hot = hot_coefficients(p0, d0, np.asarray(p0.tcs_supply_setpoint)[topo.rack_cdu])
        rack_temp = np.asarray(trace.state.gpu_temp).reshape(r_n, -1).mean(axis=1)
        racks = RackState.idle(topo, p0.n_cdus, hot, rack_temp, rng)
        events = EventQueue()
        mech = MECHANISMS[policy]
        parking = Parking.start(
            mech.park and options.park, racks, events, arrays.gpus, epoch, options.wake_time
        )
        control = SetpointControl.at_design(
            p0,
            topo,
            _hourly_weights(run, options.objective),
            options.iterations,
            options.setpoint_interval,
            options.ramp,
            options.standby_w,
        )
        if mech.setpoints == "static":
            control.hold_static(*period_load(run, arrays, topo, n_epochs * epoch))
        return cls(
            run,
            policy,
            options,
            epoch,
            steps,
            n_epochs,
            job_table=jobs.table,
            jobs=arrays,
            racks=racks,
            events=events,
            parking=parking,
            sched=Scheduler.start(mech.placement, arrays, racks, events, parking),
            control=control,
            trace=trace,
            audit=Audit.of(p0, topo),
        )

    # ------------------------------------------------------------------ setpoints (twin)
    @property
    def mech(self) -> Mechanisms:
        return MECHANISMS[self.policy]

    def _steers(self) -> bool:
        """Whether the policy needs the twin's marginal costs (placement, deferral) or setpoints."""
        m = self.mech
        return m.setpoints == "twin" or m.placement == "twin" or m.defer

    def reoptimize_due(self, e: int, t0: float) -> bool:
        """Policies that park or steer by the twin: at the first epoch and every
        ``setpoint_interval``."""
        interval = self.options.setpoint_interval
        due = self.parking.enabled or self._steers()
        return due and (e == 0 or (t0 % interval) < 1e-9)

    def reoptimize(self, t0: float) -> None:
        """Parking first, so that the optimizer sees the racks' power state for the interval
        (only bursts wake racks in between); then setpoints (``twin`` setpoints only) and
        marginal costs."""
        if self.parking.enabled:
            self.parking.control(t0, self.sched.queue)
        if not self._steers():
            return
        s0 = time.perf_counter()
        hours_now = self.run.hour0 + t0 / 3600.0
        self.control.reoptimize(
            t0,
            hours_now,
            self.sched.load,
            self.racks,
            self.parking.parked,
            optimize=self.mech.setpoints == "twin",
        )
        self.control_seconds += time.perf_counter() - s0

    # ------------------------------------------------------------------ events
    def handle(self, event: Event, tally: EpochTally) -> None:
        """One event at ``event.time`` (the tally integrated up to it)."""
        now, i = event.time, event.job
        if event.kind == EventKind.WAKE:
            self.parking.woken(now)
            self.sched.retry(now)
        elif event.kind == EventKind.END:
            self.sched.finish(i, now)
        else:
            self._arrive(i, now, tally)

    def _arrive(self, i: int, now: float, tally: EpochTally) -> None:
        """Job ``i`` arrives (or its deferral ends): defer it (twin, flexible), start or queue."""
        jobs, sched = self.jobs, self.sched
        if self.mech.defer and jobs.deferral[i] > 0 and not sched.deferred[i]:
            horizon = self.n_epochs * self.epoch
            k = self.control.deferral_hours(now, jobs.deferral[i], jobs.duration[i], horizon)
            if k > 0:
                sched.deferred[i] = True
                self.events.push(now + k * 3600.0, EventKind.ARRIVAL, i)
                return
        self.parking.note_arrival(now, int(jobs.gpus[i]))
        if sched.submit(i, now):
            tally.note_start(i, sched.placed[i][0], sched.load)

    # ------------------------------------------------------------------ epoch end
    def close_epoch(self, tally: EpochTally, t0: float, t1: float) -> None:
        """Advance the twin over the epoch's schedule with the setpoints in force, refresh what
        the baselines place by, and audit the constraints."""
        run, racks, load, topo = self.run, self.racks, self.sched.load, self.racks.topo
        powered = tally.on / self.epoch
        self.parking.end_epoch(tally.on)
        self.audit.busy_gpu_s += float(tally.busy)
        low, high = epoch_schedule(tally, load, self.jobs, racks, run.hour0, t0, t1, self.epoch)
        q_hot = with_setpoints(run.params, *self.control.setpoints)  # powered: temperatures
        q = with_power_state(q_hot, powered, self.options.standby_w)
        q = with_schedule(q, low, high, load.periods, load.phases)
        as_spec = self.mech.setpoints == "design" and not self.parking.enabled
        dq = run.derived if as_spec else derive_jit(q)
        self.trace.advance(q, dq, run, self.steps, self.control.setpoints)
        self.trace.note_power_state(q, powered, self.options.standby_w, self.epoch)
        state = self.trace.state
        if self.mech.placement == "coolest":
            racks.rack_temp = np.asarray(state.gpu_temp).reshape(topo.n_racks, -1).mean(axis=1)
        if self.mech.setpoints != "twin":
            tcs_rack = np.asarray(state.tcs_supply)[topo.rack_cdu]
            racks.hot_a, racks.hot_b = hot_coefficients(q_hot, dq, tcs_rack)
        self.audit.check(q_hot, dq, state, tally.hot, racks, self.epoch)

    def result(self, wall: float) -> PolicyResult:
        """Summary and plan; ``wall``: the loop's wall time [s]."""
        sched, trace = self.sched, self.trace
        horizon = self.n_epochs * self.epoch
        summary = summarize(
            self.policy,
            self.run,
            self.options.objective,
            horizon,
            sched,
            self.parking,
            self.audit,
            trace,
            placement_seconds=sched.placement_seconds + self.control_seconds,
            wall=wall,
        )
        plan = plan_dataset(
            self.run,
            self.racks.topo,
            self.job_table,
            sched.start_time,
            sched.placed,
            sched.deferred,
            trace.records,
            trace.fws,
            trace.tcs,
            trace.pump,
            self.epoch,
            summary,
            np.stack(self.parking.parked_count),
        )
        return PolicyResult(self.policy, summary, plan)
