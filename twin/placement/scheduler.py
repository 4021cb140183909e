"""The job queue: jobs start at once when a policy finds racks for them, else wait in arrival
order, served with EASY backfilling (as Slurm's backfill scheduler does)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twin.io.jobs import WORKLOAD_CLASSES
from twin.placement.allocation import RackState, allocate, rack_score
from twin.placement.events import EventKind, EventQueue
from twin.placement.parking import Parking
from twin.placement.topology import Topology, peak_power


@dataclass(frozen=True)
class JobArrays:
    """The job table as arrays (one entry per job)."""

    arrival: np.ndarray  # [s]
    duration: np.ndarray  # [s]
    gpus: np.ndarray
    workload: np.ndarray  # class names
    frac_low: np.ndarray  # GPU power at the low/high phase, fraction of TDP
    frac_high: np.ndarray
    period: np.ndarray  # [s]
    deferral: np.ndarray  # [s] a flexible job may start this much later
    diurnal: np.ndarray  # diurnal amplitude of the job's class
    phase: np.ndarray  # phase of the job's cycle, fraction of its period

    @classmethod
    def of(cls, table: pd.DataFrame, rng: np.random.Generator) -> JobArrays:
        """Arrays of ``table``; each job's phase is drawn from ``rng``."""
        wl = table.workload.to_numpy()
        return cls(
            arrival=table.arrival.to_numpy(float),
            duration=table.duration.to_numpy(float),
            gpus=table.gpus.to_numpy(int),
            workload=wl,
            frac_low=table.power_low.to_numpy(float),
            frac_high=table.power_high.to_numpy(float),
            period=table.period.to_numpy(float),
            deferral=table.deferral.to_numpy(float),
            diurnal=np.array([WORKLOAD_CLASSES[w].diurnal_amplitude for w in wl]),
            phase=rng.uniform(0, 1, len(table)),
        )


@dataclass
class RackLoad:
    """What runs on the racks: the racks' utilization at the low and high phase of their jobs
    (R,), the jobs on each rack {job: (high-phase utilization, GPUs, training period or 0)},
    and each rack's load period and phase [s] (of its largest training job, kept when it ends)."""

    low: np.ndarray
    high: np.ndarray
    jobs: list[dict[int, tuple[float, int, float]]]
    periods: np.ndarray
    phases: np.ndarray

    @classmethod
    def empty(cls, n_racks: int) -> RackLoad:
        """No job on any rack; period 1 s, phase 0."""
        return cls(
            np.zeros(n_racks),
            np.zeros(n_racks),
            [dict() for _ in range(n_racks)],
            np.ones(n_racks),
            np.zeros(n_racks),
        )

    def hottest(self, r: int) -> float:
        """The highest high-phase utilization of the jobs on rack ``r`` (0 if none)."""
        return max((v[0] for v in self.jobs[r].values()), default=0.0)


@dataclass
class RunningJob:
    """A job running until ``end`` [s] with ``counts`` GPUs on each of ``racks``."""

    end: float
    job: int
    racks: np.ndarray
    counts: np.ndarray


@dataclass
class Scheduler:
    """Starts, queues and ends jobs on the racks under ``policy``."""

    policy: str
    jobs: JobArrays
    racks: RackState
    load: RackLoad
    events: EventQueue
    parking: Parking
    start_time: np.ndarray  # (jobs,) [s], NaN until started
    placed: list  # (jobs,) (racks, GPU counts) or None
    deferred: np.ndarray  # (jobs,) bool
    site_racks: list[np.ndarray]  # (S,) masks (R,)
    queue: list[int] = field(default_factory=list)
    running: dict[int, RunningJob] = field(default_factory=dict)
    overcommits: int = 0
    placement_seconds: float = 0.0  # wall time spent placing
    _reservations: dict = field(default_factory=dict)

    @classmethod
    def start(
        cls, policy: str, jobs: JobArrays, racks: RackState, events: EventQueue, parking: Parking
    ) -> Scheduler:
        """No job running or queued; every job's arrival in ``events``."""
        topo = racks.topo
        n = len(jobs.arrival)
        for i, a in enumerate(jobs.arrival):
            events.push(float(a), EventKind.ARRIVAL, i)
        return cls(
            policy,
            jobs,
            racks,
            RackLoad.empty(topo.n_racks),
            events,
            parking,
            start_time=np.full(n, np.nan),
            placed=[None] * n,
            deferred=np.zeros(n, bool),
            site_racks=[topo.rack_site == site for site in range(len(topo.site_keys))],
        )

    @property
    def topo(self) -> Topology:
        return self.racks.topo

    # ------------------------------------------------------------------ events
    def submit(self, i: int, now: float) -> bool:
        """Job ``i`` arrives: start it, or queue it (and wake parked racks for it)."""
        if self.try_start(i, now):
            return True
        self.queue.append(i)
        self.parking.wake_for(i, now, self.queue)
        return False

    def finish(self, i: int, now: float) -> None:
        """Job ``i`` ends: free its racks and retry the queue."""
        job = self.running.pop(i)
        self._occupy(i, job.racks, job.counts, -1)
        empty = self.racks.free[job.racks] == self.topo.gpus_per_rack
        self.parking.mark_idle(job.racks[empty], now)
        self.retry(now)  # capacity freed

    def retry(self, now: float) -> None:
        """Retry the queue in arrival order (jobs that cannot fit in any site's free GPUs are
        skipped without a search); wake parked racks for a head that still waits."""
        if not self.queue:
            return
        room = self._most_free()
        for j in list(self.queue):
            if self.jobs.gpus[j] <= room and self.try_start(j, now):
                self.queue.remove(j)  # the next job's reservation is for the new head
                room = self._most_free()
        if self.queue:
            self.parking.wake_for(self.queue[0], now, self.queue)

    # ------------------------------------------------------------------ placement
    def try_start(self, i: int, now: float) -> bool:
        """Start job ``i`` at ``now`` if the policy finds racks for it without delaying the
        queue's head."""
        s0 = time.perf_counter()
        jobs, racks = self.jobs, self.racks
        # a job behind the queue's head may not delay it: at the head's site it starts only
        # if it ends before the head's reserved start (EASY backfilling, as in Slurm's backfill)
        blocked = None
        if self.queue and i != self.queue[0]:
            site, shadow = self._reservation(now)
            if site >= 0 and now + jobs.duration[i] > shadow:
                blocked = racks.unavailable
                racks.unavailable = blocked | self.site_racks[site]
        try:
            alloc = allocate(
                self.policy,
                racks,
                int(jobs.gpus[i]),
                jobs.workload[i],
                jobs.frac_high[i],
                rack_score(self.policy, racks),
            )
        finally:
            if blocked is not None:
                racks.unavailable = blocked
        self.placement_seconds += time.perf_counter() - s0
        if alloc is None:
            return False
        on, counts = alloc
        self._occupy(i, on, counts, +1)
        self.start_time[i] = now
        self.placed[i] = (on, counts)
        end = now + jobs.duration[i]
        self.running[i] = RunningJob(end, i, on, counts)
        self.events.push(end, EventKind.END, i)
        if self.policy == "spread":
            racks.pointer = int(on[-1]) + 1
        return True

    def _occupy(self, i: int, on: np.ndarray, counts: np.ndarray, sign: int) -> None:
        """Add (``sign`` +1) or remove (-1) job ``i``'s load, GPUs and peak power on racks ``on``."""
        topo, jobs, racks, load = self.topo, self.jobs, self.racks, self.load
        s = topo.rack_site[on[0]]
        gpr = topo.gpus_per_rack
        load.low[on] += sign * (topo.utilization(jobs.frac_low[i], on) * counts / gpr)
        load.high[on] += sign * (topo.utilization(jobs.frac_high[i], on) * counts / gpr)
        racks.free[on] -= sign * counts
        add = peak_power(topo, on, counts, jobs.frac_high[i])
        racks.rack_peak[on] += sign * add
        np.add.at(racks.cdu_peak, topo.rack_cdu[on], sign * add)
        racks.site_peak[s] += sign * add.sum()
        for r, c in zip(on, counts, strict=True):
            if sign > 0:
                load.jobs[r][i] = (
                    topo.utilization(jobs.frac_high[i], np.array([r]))[0],
                    c,
                    jobs.period[i] if jobs.workload[i] == "training" else 0.0,
                )
            else:
                load.jobs[r].pop(i, None)
        if (racks.free < 0).any():
            self.overcommits += 1

    def _most_free(self) -> int:
        """Usable free GPUs of the emptiest site."""
        racks = self.racks
        usable = np.where(racks.unavailable, 0, racks.free)
        return int(np.bincount(self.topo.rack_site, weights=usable).max())

    # ------------------------------------------------------------------ EASY backfilling
    def _fits(self, i: int, site: int, free: np.ndarray) -> bool:
        """Whether job ``i`` fits the free GPUs ``free`` (R,) of ``site`` by the locality rules
        of :func:`allocate` (one rack; whole racks for multi-rack training; else any racks)."""
        g, n_rack = int(self.jobs.gpus[i]), self.topo.gpus_per_rack
        f = free[self.site_racks[site] & ~self.racks.unavailable]
        if len(f) == 0:
            return False
        if g <= n_rack:
            return bool(f.max() >= g)
        if self.jobs.workload[i] == "training":
            return int((f == n_rack).sum()) * n_rack >= g
        return int(f.sum()) >= g

    def _reservation(self, now: float) -> tuple[int, float]:
        """EASY backfilling: the site and time (shadow) at which the queue's head job will fit,
        replaying the ends of the jobs running there; (-1, inf) if no queue. A head that fits by
        count but could not start (caps, temperatures) is reserved the site's next job end."""
        if not self.queue:
            return -1, math.inf
        head, racks = self.queue[0], self.racks
        # the same state asks again for every job tried behind the head: answer once
        key = (now, head, len(self.running), int(racks.free.sum()), int(racks.unavailable.sum()))
        if key in self._reservations:
            return self._reservations[key]
        self._reservations.clear()
        best = (-1, math.inf)
        for site in range(len(self.topo.site_keys)):
            ends = sorted(
                (r.end, r.racks, r.counts)
                for r in self.running.values()
                if self.topo.rack_site[r.racks[0]] == site
            )
            if self._fits(head, site, racks.free):
                if ends and ends[0][0] < best[1]:
                    best = (site, ends[0][0])
                continue
            free = racks.free.copy()
            for end, on, counts in ends:
                if end >= best[1]:
                    break
                free[on] += counts
                if self._fits(head, site, free):
                    best = (site, end)
                    break
        self._reservations[key] = best
        return best
