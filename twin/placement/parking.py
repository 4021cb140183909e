"""Idle-rack parking (twin policy): power idle racks down beyond each site's reserve, wake them
when demand returns.

Slurm's power saving does the same for nodes: a rack with no job for :data:`PARK_IDLE_S` (Slurm
``SuspendTime``) is powered down unless it is part of its site's reserve of powered idle racks;
waking takes :data:`RACK_WAKE_S` (power-on, boot, GPU health check: published Slurm
configurations set ``ResumeTimeout = 600`` s, AWS PCS scales down after 600 s idle by default).
A parked rack draws :data:`RACK_STANDBY_W` (BMCs, management network, power-shelf no-load
losses: an engineering estimate, ~1 % of a 140 kW rack's design power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from twin.placement.allocation import RackState
from twin.placement.events import EventKind, EventQueue
from twin.placement.topology import Topology

PARK_IDLE_S = 900.0
RACK_WAKE_S = 600.0
RACK_STANDBY_W = 1500.0
#: Powered idle racks kept per site, as a multiple of the largest GPU demand that arrived (in
#: the whole facility) in any window of one epoch plus the wake time over the last day.
PARK_RESERVE_FACTOR = 1.0
PARK_HISTORY_S = 86400.0


@dataclass
class Parking:
    """Parked racks, racks waking, and the demand history the reserve follows.

    ``enabled`` False (baselines, ``park=False``): nothing is ever parked or woken. A woken rack
    is in ``racks.unavailable`` until its ``wake_at``; a parked one until it is woken.
    """

    enabled: bool
    topo: Topology
    racks: RackState
    events: EventQueue
    job_gpus: np.ndarray  # GPUs of every job
    epoch: float  # [s]
    wake_time: float  # [s]
    parked: np.ndarray  # (R,) bool
    wake_at: np.ndarray  # (R,) time a woken rack takes jobs [s]
    idle_since: np.ndarray  # (R,) [s]
    site_racks: list[np.ndarray]  # (S,) masks (R,)
    demand_log: list[tuple[float, int]] = field(default_factory=list)  # arrivals after t = 0
    wakes: int = 0
    parks: int = 0
    parked_rack_seconds: float = 0.0
    waited_for_wake: set[int] = field(default_factory=set)  # jobs that woke racks
    parked_count: list[np.ndarray] = field(default_factory=list)  # (S,) at each epoch end

    @classmethod
    def start(
        cls,
        enabled: bool,
        racks: RackState,
        events: EventQueue,
        job_gpus: np.ndarray,
        epoch: float,
        wake_time: float,
    ) -> Parking:
        """No rack parked, every rack idle since t = 0."""
        topo = racks.topo
        r_n = topo.n_racks
        return cls(
            enabled,
            topo,
            racks,
            events,
            job_gpus,
            epoch,
            wake_time,
            parked=np.zeros(r_n, bool),
            wake_at=np.full(r_n, -np.inf),
            idle_since=np.zeros(r_n),
            site_racks=[topo.rack_site == site for site in range(len(topo.site_keys))],
        )

    def note_arrival(self, now: float, gpus: int) -> None:
        """Record the demand of an arrival (after t = 0) for the reserve."""
        if self.enabled and now > 0:
            self.demand_log.append((now, gpus))

    def reserve_racks(self, now: float) -> int:
        """Powered idle racks a site keeps: the peak GPU demand over any (epoch + wake) window."""
        log = self.demand_log
        while log and log[0][0] < now - PARK_HISTORY_S:
            log.pop(0)
        window = self.epoch + self.wake_time
        peak, lo, acc = 0, 0, 0
        for a, g in log:
            acc += g
            while log[lo][0] < a - window:
                acc -= log[lo][1]
                lo += 1
            peak = max(peak, acc)
        return int(math.ceil(PARK_RESERVE_FACTOR * peak / self.topo.gpus_per_rack))

    def _rack_cost(self) -> np.ndarray:
        cost = self.racks.cost
        return cost if cost is not None else np.arange(self.topo.n_racks, dtype=float)

    def control(self, now: float, queue: list[int]) -> None:
        """Park idle racks beyond each site's reserve (costliest first); wake racks when short."""
        racks, gpr = self.racks, self.topo.gpus_per_rack
        # the reserve covers recent demand and every job still waiting in the queue
        queued = sum(int(self.job_gpus[j]) for j in queue)
        need = self.reserve_racks(now) + int(math.ceil(queued / gpr))
        idle = ~self.parked & (racks.free == gpr)
        cost = self._rack_cost()
        for in_s in self.site_racks:
            n_idle = int((idle & in_s).sum())
            if n_idle > need:
                cand = np.flatnonzero(
                    in_s & idle & ~racks.unavailable & (now - self.idle_since >= PARK_IDLE_S)
                )
                cand = cand[np.argsort(-cost[cand], kind="stable")][: n_idle - need]
                self.parked[cand] = True
                racks.unavailable[cand] = True
                self.parks += len(cand)
            elif n_idle < need:
                cand = np.flatnonzero(in_s & self.parked)
                self.wake(cand[np.argsort(cost[cand], kind="stable")][: need - n_idle], now)

    def wake(self, racks: np.ndarray, now: float) -> None:
        """Power ``racks`` up; they take jobs after the wake time."""
        if len(racks) == 0:
            return
        self.parked[racks] = False
        self.wake_at[racks] = now + self.wake_time
        self.wakes += len(racks)
        self.events.push(now + self.wake_time, EventKind.WAKE)

    def wake_for(self, i: int, now: float, queue: list[int]) -> None:
        """Job ``i`` (queued) found no room: wake parked racks for the GPUs that the whole queue
        needs beyond the free and waking GPUs, in the site with the most parked racks where
        the job fits once they are awake."""
        if not self.enabled or not self.parked.any():
            return
        racks, n_rack, parked = self.racks, self.topo.gpus_per_rack, self.parked
        waking = ~parked & (self.wake_at > now)
        sites = range(len(self.topo.site_keys))
        room = {
            site: int(racks.free[self.site_racks[site] & (~racks.unavailable | waking)].sum())
            for site in sites
        }
        parked_n = {site: int((parked & self.site_racks[site]).sum()) for site in sites}
        gpus = self.job_gpus
        ok = [st for st in sites if room[st] + parked_n[st] * n_rack >= gpus[i] and parked_n[st]]
        if not ok:
            return
        site = max(ok, key=lambda st: parked_n[st])
        queued = int(sum(gpus[j] for j in queue))  # includes i and every job queued before it
        short = queued - room[site]
        if short <= 0:
            return
        cand = np.flatnonzero(self.site_racks[site] & parked)
        cand = cand[np.argsort(self._rack_cost()[cand], kind="stable")]
        self.wake(cand[: int(math.ceil(short / n_rack))], now)
        self.waited_for_wake.add(i)

    def woken(self, now: float) -> None:
        """Racks whose wake time has come take jobs from ``now``; their idle time counts from
        here."""
        racks = self.racks
        awake = racks.unavailable & ~self.parked & (self.wake_at <= now)
        self.idle_since[awake] = now
        racks.unavailable = self.parked | (self.wake_at > now)

    def mark_idle(self, racks: np.ndarray, now: float) -> None:
        """``racks`` have no job from ``now``."""
        self.idle_since[racks] = now

    def end_epoch(self, powered_seconds: np.ndarray) -> None:
        """Account the parked rack-seconds of an epoch (``powered_seconds`` (R,)) and the
        parked racks per site at its end."""
        self.parked_rack_seconds += float(self.epoch * self.topo.n_racks - powered_seconds.sum())
        n_sites = len(self.topo.site_keys)
        self.parked_count.append(np.bincount(self.topo.rack_site[self.parked], minlength=n_sites))
