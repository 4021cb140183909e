"""Physical parameters of the fit, their standard errors, and whether the data identify them."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from twin.calibration.config import CalibrationConfig
from twin.io.telemetry import Grid


class Physical(NamedTuple):
    """Per-GPU physical parameters from the parameter vector (arrays over ``gpu``)."""

    r_f: np.ndarray  # fast-branch resistance [K/W]
    cap: np.ndarray  # heat capacity C [J/K]
    r_s: np.ndarray  # slow-branch resistance [K/W] (0 without the slow branch)
    tau_s: np.ndarray  # slow-branch time constant [s] (NaN without it)
    beta: np.ndarray  # conductance growth per K of rise [1/K] (0 unless fitted)
    slow: np.ndarray  # the slow branch is fitted
    r_tot: np.ndarray  # R_f + R_s [K/W]
    se: np.ndarray  # (gpu, NP) standard errors in parameter space
    rel_se_r: np.ndarray  # relative standard error of R_f + R_s
    rel_se_c: np.ndarray  # relative standard error of C


def physical_parameters(theta: np.ndarray, mask: np.ndarray, cov: np.ndarray) -> Physical:
    """R_f, C, R_s, tau_s, beta and R_f + R_s with relative standard errors (delta method)."""
    var = np.stack([np.diagonal(c) for c in cov])
    se = np.sqrt(np.maximum(var, 0.0))
    r_f = np.exp(theta[:, 0])
    cap = np.exp(theta[:, 1])
    slow = mask[:, 4]
    r_s = np.where(slow, np.exp(theta[:, 4]), 0.0)
    r_tot = r_f + r_s
    # log-parameters: their SE is relative; R_f + R_s by the delta method
    var_rtot = (
        (r_f**2) * var[:, 0]
        + (r_s**2) * var[:, 4]
        + 2 * r_f * r_s * np.array([c[0, 4] for c in cov])
    )
    return Physical(
        r_f=r_f,
        cap=cap,
        r_s=r_s,
        tau_s=np.where(slow, np.exp(theta[:, 5]), np.nan),
        beta=np.where(mask[:, 7], theta[:, 7], 0.0),
        slow=slow,
        r_tot=r_tot,
        se=se,
        rel_se_r=np.sqrt(np.maximum(var_rtot, 0.0)) / r_tot,
        rel_se_c=se[:, 1],
    )


class Identifiability(NamedTuple):
    """Which parameters the training data determine, per GPU, and why not."""

    resistance: np.ndarray  # bool: R_f + R_s is reported
    capacitance: np.ndarray  # bool: C is reported
    excited: np.ndarray  # bool: enough readings and a training power that varied
    reasons: list[list[str]]  # why a parameter is not reported


def identifiability(
    grid: Grid, n_train: int, w_tr: np.ndarray, phys: Physical, cfg: CalibrationConfig
) -> Identifiability:
    """Excitation (readings, power range) and precision (relative SE) tests of each GPU."""
    g_n = grid.power.shape[0]
    P_tr = grid.power[:, :n_train]
    n_obs = w_tr.sum(1)
    out = Identifiability(np.ones(g_n, bool), np.ones(g_n, bool), np.zeros(g_n, bool), [])
    for i in range(g_n):
        out.reasons.append([])
        if n_obs[i] < cfg.min_train_obs:
            out.reasons[i].append(
                f"only {int(n_obs[i])} usable temperature readings in the training window "
                f"(need {cfg.min_train_obs})"
            )
            out.resistance[i] = out.capacitance[i] = False
            continue
        p5, p95 = np.percentile(P_tr[i], [5, 95])
        need = max(cfg.min_power_range_w, cfg.min_power_range_rel * float(np.mean(P_tr[i])))
        if p95 - p5 < need:
            t_rng = float(np.ptp(grid.temp[i, :n_train][w_tr[i] > 0]))
            out.reasons[i].append(
                f"no excitation: training power varied only {p95 - p5:.1f} W (p5-p95; need "
                f">= {need:.1f} W) and temperature {t_rng:.0f} K, so the resistance cannot be "
                "told apart from the inlet temperature nor the heat capacity from the time "
                "constant"
            )
            out.resistance[i] = out.capacitance[i] = False
            continue
        out.excited[i] = True
        _precision(i, phys, grid.dt, cfg, out)
    return out


def _precision(i: int, phys: Physical, dt: float, cfg: CalibrationConfig, out: Identifiability):
    """Refuse GPU ``i``'s resistance or heat capacity where its relative SE exceeds the limit."""
    rel_r, rel_c = phys.rel_se_r[i], phys.rel_se_c[i]
    if not rel_r <= cfg.max_rel_se:
        out.reasons[i].append(
            f"resistance known only to ±{100 * rel_r:.0f} % (limit {100 * cfg.max_rel_se:.0f} %)"
        )
        out.resistance[i] = False
    tau_f = phys.r_f[i] * phys.cap[i]
    if not rel_c <= cfg.max_rel_se and tau_f < 2 * dt:
        out.reasons[i].append(
            f"heat capacity unidentifiable: the die time constant R_f*C = {tau_f:.2g} s is "
            f"shorter than twice the {dt:g} s sampling (relative SE {100 * rel_c:.0f} %)"
        )
        out.capacitance[i] = False
    elif not rel_c <= cfg.max_rel_se:
        out.reasons[i].append(
            f"heat capacity known only to ±{100 * rel_c:.0f} %: the power changes are slow "
            "compared with the die time constant"
        )
        out.capacitance[i] = False
