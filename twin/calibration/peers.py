"""Each GPU against its peers: loop inlet, sensor offset, steady temperature excess, anomalies.

Peers are the other GPUs of the loop (host), or of the fleet where a loop has fewer than three
others.  A GPU is an anomaly where its steady temperature at equal power departs from the peers'
median by ``peer_excess_k`` and by ``peer_z_threshold`` robust standard deviations (the modified
z-score rule of Iglewicz & Hoaglin, docs/calibration.md [8]).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from twin.calibration.config import CalibrationConfig
from twin.calibration.identify import Identifiability, Physical
from twin.io.telemetry import Grid, fleet_hosts


class Peers(NamedTuple):
    """The peer comparison of every GPU (arrays over ``gpu`` unless said)."""

    loops: list[str]  # loop (host) names
    loop_of: np.ndarray  # loop index of each GPU
    loop_inlet: np.ndarray  # (loop,) median intercept of the loop's GPUs [degC]
    offset: np.ndarray  # intercept minus its loop's [K]
    p_ref: float  # the fleet's median training power [W]
    r_app: np.ndarray  # rise above the loop inlet per watt at p_ref [K/W]
    excess: np.ndarray  # (gpu, 2) steady temperature minus the peers' median at 0 W, p_ref [K]
    anomaly: np.ndarray  # bool
    reason: list[str]  # why an anomaly ("" where none)


def compare_peers(
    grid: Grid,
    n_train: int,
    icpt: np.ndarray,
    phys: Physical,
    ident: Identifiability,
    n_obs: np.ndarray,
    cfg: CalibrationConfig,
) -> Peers:
    """Steady temperatures at 0 W and the median training power, compared within each loop."""
    loops, loop_of = fleet_hosts(grid)
    loop_inlet = np.array([np.median(icpt[loop_of == j]) for j in range(len(loops))])
    p_ref = float(np.nanmedian(grid.power[:, :n_train]))
    t_ref = _steady_temperatures(icpt, phys, p_ref)
    r_app = (t_ref[:, 1] - loop_inlet[loop_of]) / p_ref
    # what may be compared: a GPU with too few readings not at all; the intercept (0 W) only
    # where the training power varied, else it is an extrapolation the data do not support
    t_cmp = t_ref.copy()
    t_cmp[n_obs < cfg.min_train_obs] = np.nan
    t_cmp[~ident.excited, 0] = np.nan
    excess, zdep = _departures(t_cmp, loop_of, cfg.peer_scale_floor_k)
    peers = Peers(
        loops=loops,
        loop_of=loop_of,
        loop_inlet=loop_inlet,
        offset=icpt - loop_inlet[loop_of],
        p_ref=p_ref,
        r_app=r_app,
        excess=excess,
        anomaly=np.zeros(icpt.size, bool),
        reason=[""] * icpt.size,
    )
    _flag_anomalies(peers, zdep, icpt, phys, ident, cfg)
    return peers


def _steady_temperatures(icpt: np.ndarray, phys: Physical, p_ref: float) -> np.ndarray:
    """(gpu, 2) steady die temperature at 0 W (the intercept) and at ``p_ref`` [degC].

    Closed-form steady state of the model: rise = R_t P h(rise), h = 1/(1 + beta rise).
    """

    def steady(i: int, p: float) -> float:
        r_t = phys.r_tot[i]
        disc = max(1.0 + 4.0 * phys.beta[i] * r_t * p, 0.04)
        return float(icpt[i] + 2.0 * r_t * p / (1.0 + math.sqrt(disc)))

    return np.array([[steady(i, 0.0), steady(i, p_ref)] for i in range(icpt.size)])


def _departures(
    t_cmp: np.ndarray, loop_of: np.ndarray, floor_k: float
) -> tuple[np.ndarray, np.ndarray]:
    """Excess over the peers' median [K] and robust z of each GPU at each power (gpu, 2)."""
    g_n = t_cmp.shape[0]

    def peer_values(i: int) -> np.ndarray:
        members = np.flatnonzero((loop_of == loop_of[i]) & (np.arange(g_n) != i))
        peers = members if members.size >= 3 else np.flatnonzero(np.arange(g_n) != i)
        v = t_cmp[peers]
        return np.where(np.isfinite(v).sum(0) >= 3, v, np.nan)  # at least 3 peers per power

    excess = np.full((g_n, 2), np.nan)
    zdep = np.full((g_n, 2), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no comparison
        for i in range(g_n):
            excess[i] = t_cmp[i] - np.nanmedian(peer_values(i), axis=0)
        # robust scale: the loop peers' MAD, but never below the fleet-wide MAD of the excess
        # (a loop of 8 has too few peers for a stable MAD) nor the 1 degC readout
        dev = np.abs(excess - np.nanmedian(excess, axis=0))
        fleet_mad = np.nan_to_num(1.4826 * np.nanmedian(dev, axis=0))
        for i in range(g_n):
            v = peer_values(i)
            med = np.nanmedian(v, axis=0)
            mad = 1.4826 * np.nanmedian(np.abs(v - med), axis=0)
            scale = np.maximum(np.maximum(mad, fleet_mad), floor_k)
            zdep[i] = excess[i] / scale
    return excess, zdep


def _flag_anomalies(
    peers: Peers,
    zdep: np.ndarray,
    icpt: np.ndarray,
    phys: Physical,
    ident: Identifiability,
    cfg: CalibrationConfig,
) -> None:
    """Set ``peers.anomaly`` and ``peers.reason`` where the departure passes both thresholds."""
    excess = peers.excess
    at = ["0 W (intercept)", f"{peers.p_ref:.0f} W"]
    for i in range(icpt.size):
        if not np.isfinite(zdep[i]).any():
            continue
        hit = (np.abs(excess[i]) >= cfg.peer_excess_k) & (np.abs(zdep[i]) >= cfg.peer_z_threshold)
        j = int(np.nanargmax(np.abs(zdep[i])))
        if not hit.any():
            continue
        peers.anomaly[i] = True
        r_txt = f"{phys.r_tot[i]:.4f} K/W" if ident.resistance[i] else "unidentifiable"
        other = (
            f"{excess[i, 1 - j]:+.1f} K at {at[1 - j]}"
            if np.isfinite(excess[i, 1 - j])
            else f"not compared at {at[1 - j]}"
        )
        peers.reason[i] = (
            f"runs {excess[i, j]:+.1f} K from its peers at equal power ({at[j]}; robust z "
            f"{zdep[i, j]:+.1f}; {other}); estimated "
            f"resistance {r_txt}, apparent resistance to the loop inlet {peers.r_app[i]:.4f} K/W, "
            f"intercept {icpt[i]:.1f} degC vs loop {peers.loop_inlet[peers.loop_of[i]]:.1f} degC"
        )


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
