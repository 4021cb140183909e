"""Each GPU against its loop: loop inlet, sensor offset, apparent resistance, flow shares.

Peers are the other GPUs of the loop (host).  Anomalies (a GPU hotter than its peers at equal
power) are found from the readings, not from these fitted values: :mod:`twin.calibration.anomaly`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from twin.calibration.identify import Physical
from twin.io.telemetry import Grid, fleet_hosts


class Peers(NamedTuple):
    """The loop comparison of every GPU's fit (arrays over ``gpu`` unless said)."""

    loops: list[str]  # loop (host) names
    loop_of: np.ndarray  # loop index of each GPU
    loop_inlet: np.ndarray  # (loop,) median intercept of the loop's GPUs [degC]
    offset: np.ndarray  # intercept minus its loop's [K]
    p_ref: float  # the fleet's median training power [W]
    r_app: np.ndarray  # rise above the loop inlet per watt at p_ref [K/W]


def compare_peers(grid: Grid, n_train: int, icpt: np.ndarray, phys: Physical) -> Peers:
    """Loop inlets (median intercept), sensor offsets and apparent resistances at the fleet's
    median training power."""
    loops, loop_of = fleet_hosts(grid)
    loop_inlet = np.array([np.median(icpt[loop_of == j]) for j in range(len(loops))])
    p_ref = float(np.nanmedian(grid.power[:, :n_train]))
    t_ref = _steady_temperatures(icpt, phys, p_ref)
    r_app = (t_ref[:, 1] - loop_inlet[loop_of]) / p_ref
    return Peers(
        loops=loops,
        loop_of=loop_of,
        loop_inlet=loop_inlet,
        offset=icpt - loop_inlet[loop_of],
        p_ref=p_ref,
        r_app=r_app,
    )


def _steady_temperatures(icpt: np.ndarray, phys: Physical, p_ref: float) -> np.ndarray:
    """(gpu, 2) steady die temperature at 0 W (the intercept) and at ``p_ref`` [degC].

    Closed-form steady state of the model: rise = R_t P h(rise), h = 1/(1 + beta rise).
    """

    def steady(i: int, p: float) -> float:
        r_t = phys.r_tot[i]
        disc = max(1.0 + 4.0 * phys.beta[i] * r_t * p, 0.04)
        return float(icpt[i] + 2.0 * r_t * p / (1.0 + math.sqrt(disc)))

    return np.array([[steady(i, 0.0), steady(i, p_ref)] for i in range(icpt.size)])


def flow_share(peers: Peers, phys: Physical) -> np.ndarray:
    """Each GPU's share of its loop's flow from the slow (coolant) branch conductances.

    NaN unless every GPU of the loop (two or more) has the slow branch.
    """
    share = np.full(peers.loop_of.size, np.nan)
    for j in range(len(peers.loops)):
        members = np.flatnonzero(peers.loop_of == j)
        if phys.slow[members].all() and members.size > 1:
            inv = 1.0 / phys.r_s[members]
            share[members] = inv / inv.sum()
    return share
