"""Which racks take a job: each policy's rack order and the feasible allocation under the caps,
temperatures and locality rules, on the racks' current occupancy (:class:`RackState`).

Policies
--------
``pack``     first fit in rack order (site by site).
``spread``   round robin over racks.
``coolest``  the rack whose GPUs ran coolest in the last epoch first.
``random``   a random feasible rack.
``twin``     the least marginal cost (the gradient of the optimized steady objective with
             respect to the rack's utilization); within 1 % of it, the fullest rack.

A policy (:data:`MECHANISMS`) is one of these rack orders together with its setpoints
(``design``: the spec's, held; ``static``: the twin's optimizer run once for the period, then
held; ``twin``: re-optimized hourly), idle-rack parking (:mod:`.parking`) and the deferral of
flexible jobs to cheaper hours. ``pack-park`` and ``pack-static`` are the baselines an operator
compares with (Slurm's power saving; the best fixed setpoints); ``twin-setpoints`` and
``twin-placement`` are ablations of ``twin``: its setpoints alone, its placement (and
deferral) alone. Parking alone is ``pack-park``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.placement.topology import Topology, peak_power


@dataclass(frozen=True)
class Mechanisms:
    """What a policy does: rack order (:func:`rack_score`), setpoints (design, static or twin),
    idle-rack parking, deferral of flexible jobs (needs the twin's marginal-cost forecast)."""

    placement: str
    setpoints: str
    park: bool
    defer: bool


MECHANISMS = {
    "twin": Mechanisms("twin", "twin", park=True, defer=True),
    "pack": Mechanisms("pack", "design", park=False, defer=False),
    "spread": Mechanisms("spread", "design", park=False, defer=False),
    "coolest": Mechanisms("coolest", "design", park=False, defer=False),
    "random": Mechanisms("random", "design", park=False, defer=False),
    "pack-park": Mechanisms("pack", "design", park=True, defer=False),
    "pack-static": Mechanisms("pack", "static", park=False, defer=False),
    "twin-setpoints": Mechanisms("pack", "twin", park=False, defer=False),
    "twin-placement": Mechanisms("twin", "design", park=False, defer=True),
}
POLICIES = tuple(MECHANISMS)
#: Policies that use none of the twin's mechanisms: what ``twin`` is measured against.
BASELINES = ("pack", "spread", "coolest", "random", "pack-park", "pack-static")


@dataclass
class RackState:
    """Occupancy and admission state of the racks (numpy, (R,) unless noted)."""

    topo: Topology
    free: np.ndarray  # free GPUs
    rack_peak: np.ndarray  # peak power [W]
    cdu_peak: np.ndarray  # (N,) [W]
    site_peak: np.ndarray  # (S,) [W]
    hot_a: np.ndarray  # T_hot(u) = hot_a + hot_b * u per rack at current setpoints
    hot_b: np.ndarray
    rack_temp: np.ndarray  # last epoch's mean GPU temperature per rack [K]
    rng: np.random.Generator
    unavailable: np.ndarray  # bool: parked or still waking racks (twin)
    pointer: int = 0  # spread: the next rack of the round robin
    cost: np.ndarray | None = None  # twin: marginal cost per busy GPU-utilization per rack

    @classmethod
    def idle(
        cls,
        topo: Topology,
        n_cdus: int,
        hot: tuple[np.ndarray, np.ndarray],
        rack_temp: np.ndarray,
        rng: np.random.Generator,
    ) -> RackState:
        """Every rack powered, free and at its idle peak power; ``hot`` = (hot_a, hot_b)."""
        r_n = topo.n_racks
        state = cls(
            topo,
            free=np.full(r_n, topo.gpus_per_rack),
            rack_peak=topo.other_idle + topo.gpus_per_rack * topo.idle_power,
            cdu_peak=np.zeros(n_cdus),
            site_peak=np.zeros(len(topo.site_keys)),
            hot_a=hot[0],
            hot_b=hot[1],
            rack_temp=rack_temp,
            rng=rng,
            unavailable=np.zeros(r_n, bool),
        )
        np.add.at(state.cdu_peak, topo.rack_cdu, state.rack_peak)
        np.add.at(state.site_peak, topo.rack_site, state.rack_peak)
        return state


def rack_score(policy: str, state: RackState) -> np.ndarray:
    """Rack preference of ``policy`` (lower first) (R,)."""
    r = state.topo.n_racks
    idx = np.arange(r, dtype=float)
    if policy == "pack":
        return idx
    if policy == "spread":
        return (idx - state.pointer) % r
    if policy == "coolest":
        return state.rack_temp + 1e-9 * idx
    if policy == "random":
        return state.rng.permutation(r).astype(float)
    # twin: marginal cost; within 1 % of it, best fit (fullest rack) against fragmentation.
    cost = state.cost
    return cost + 1e-2 * np.abs(cost).mean() * state.free / state.topo.gpus_per_rack + 1e-12 * idx


def allocate(
    policy: str, state: RackState, g: int, workload: str, frac_high: float, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Racks and GPU counts for a job of ``g`` GPUs, or None when no site can take it now.

    Up to one rack of GPUs: the best-scored rack with room within every cap. More: the sites
    in order (best rack score first; ``spread``: round robin from its pointer), in the first
    with enough room its best-scored racks (whole free racks for training, else any free GPUs).
    """
    topo = state.topo
    u_high = topo.utilization(frac_high, np.arange(topo.n_racks))
    thermal_ok = (state.hot_a + state.hot_b * u_high <= topo.gpu_limit) & ~state.unavailable
    if g <= topo.gpus_per_rack:
        return _allocate_one_rack(state, g, frac_high, score, thermal_ok)
    for s in _site_order(policy, state, score):
        alloc = _allocate_in_site(state, s, g, workload == "training", frac_high, score, thermal_ok)
        if alloc is not None:
            return alloc
    return None


def _allocate_one_rack(state: RackState, g: int, frac_high: float, score, thermal_ok):
    """The best-scored rack with ``g`` free GPUs and room within the rack, row and site caps."""
    topo = state.topo
    add = peak_power(topo, np.arange(topo.n_racks), np.full(topo.n_racks, g), frac_high)
    ok = (
        (state.free >= g)
        & thermal_ok
        & (state.rack_peak + add <= topo.rack_cap)
        & (state.cdu_peak[topo.rack_cdu] + add <= topo.cdu_cap[topo.rack_cdu])
        & (state.site_peak[topo.rack_site] + add <= topo.site_cap[topo.rack_site])
    )
    if not ok.any():
        return None
    cand = np.flatnonzero(ok)
    r = cand[np.argmin(score[cand])]
    return np.array([r]), np.array([g])


def _site_order(policy: str, state: RackState, score: np.ndarray) -> np.ndarray:
    """Sites to try for a multi-rack job: ``spread`` round robin from the pointer's site, the
    others by their best rack score."""
    topo = state.topo
    sites = np.unique(topo.rack_site)
    if policy == "spread":
        return np.roll(sites, -int(topo.rack_site[state.pointer % topo.n_racks]))
    best_site_score = np.array([score[topo.rack_site == s].min() for s in sites])
    return sites[np.argsort(best_site_score)]


def _allocate_in_site(
    state: RackState, s: int, g: int, whole: bool, frac_high: float, score, thermal_ok
):
    """``g`` GPUs on site ``s``'s best-scored racks (``whole``: free racks only) within the rack,
    row and site caps, or None."""
    topo = state.topo
    free = state.free
    room = (free == topo.gpus_per_rack) if whole else (free > 0)
    cand = np.flatnonzero((topo.rack_site == s) & thermal_ok & room)
    if free[cand].sum() < g:
        return None
    cand = cand[np.argsort(score[cand], kind="stable")]
    racks, counts = [], []
    left = g
    cdu_add = {}
    site_add = 0.0
    for r in cand:
        k = min(int(free[r]), left)
        add = float(peak_power(topo, np.array([r]), np.array([k]), frac_high)[0])
        c = topo.rack_cdu[r]
        if (
            state.rack_peak[r] + add > topo.rack_cap[r]
            or state.cdu_peak[c] + cdu_add.get(c, 0.0) + add > topo.cdu_cap[c]
        ):
            continue
        if state.site_peak[s] + site_add + add > topo.site_cap[s]:
            break
        racks.append(r)
        counts.append(k)
        cdu_add[c] = cdu_add.get(c, 0.0) + add
        site_add += add
        left -= k
        if left == 0:
            return np.array(racks), np.array(counts)
    return None
