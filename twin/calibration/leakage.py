"""Leakage power's temperature slope dP/dT, from constant-workload segments of the training data."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from twin.calibration.config import Priors
from twin.io.telemetry import Grid


class Leakage(NamedTuple):
    """Per-GPU leakage slope [W/K], its standard error and why it is not reported ("" if it is)."""

    slope: np.ndarray
    se: np.ndarray
    why: list[str]

    @property
    def ok(self) -> np.ndarray:
        """Where the slope is reported."""
        return np.array([w == "" for w in self.why])


def leakage_slope(grid: Grid, n_train: int, pri: Priors, block: int = 30) -> Leakage:
    """dP/dT [W/K] at constant workload: within-segment regression of power on temperature.

    Segments: consecutive ``block``-step means with the same utilization (±1 %, or all >= 95 %),
    power within 10 W of the previous block and below 97 % of the power limit (a capped GPU holds
    its power).  ``why`` is empty where the slope is a positive, resolved estimate.
    """
    g_n = grid.power.shape[0]
    slope = np.full(g_n, np.nan)
    se = np.full(g_n, np.nan)
    why = [""] * g_n
    if grid.utilization is None:
        return Leakage(
            slope, se, ["no utilization readings: constant workload cannot be recognised"] * g_n
        )
    nb = n_train // block
    for i in range(g_n):
        P = grid.power[i, : nb * block].reshape(nb, block).mean(1)
        with np.errstate(invalid="ignore"):
            T = np.nanmean(grid.temp[i, : nb * block].reshape(nb, block), 1)
        U = grid.utilization[i, : nb * block].reshape(nb, block)
        u_mean = U.mean(1)
        steady = (
            ((np.ptp(U, axis=1) <= 1.0) | (U.min(1) >= 95.0))
            & np.isfinite(T)
            & (P < 0.97 * pri.power_limit)
        )
        seg = np.zeros(nb, np.int64)
        s = 0
        for k in range(1, nb):
            same = (
                steady[k]
                and steady[k - 1]
                and abs(u_mean[k] - u_mean[k - 1]) <= 1.0
                and abs(P[k] - P[k - 1]) <= 10.0
            )
            s += 0 if same else 1
            seg[k] = s
        dP, dT = [], []
        for sid in np.unique(seg[steady]):
            sel = steady & (seg == sid)
            if sel.sum() >= 3:
                dP.append(P[sel] - P[sel].mean())
                dT.append(T[sel] - T[sel].mean())
        if not dP:
            why[i] = "no constant-workload segment of 90 s or more below the power limit"
            continue
        dP_a, dT_a = np.concatenate(dP), np.concatenate(dT)
        sxx = float(np.sum(dT_a**2))
        if sxx < 4.0 * 2:
            why[i] = (
                f"temperature moved only {math.sqrt(sxx / max(dT_a.size, 1)):.2f} K rms at "
                "constant workload: leakage cannot be separated"
            )
            continue
        b = float(np.sum(dT_a * dP_a) / sxx)
        resid = dP_a - b * dT_a
        dof = max(dT_a.size - len(dP) - 1, 1)
        s_b = math.sqrt(float(np.sum(resid**2)) / dof / sxx)
        slope[i], se[i] = b, s_b
        if not (b > 0 and s_b < 0.3 * b):
            why[i] = f"dP/dT = {b:.2f} ± {s_b:.2f} W/K is not a positive, resolved slope"
    return Leakage(slope, se, why)
