"""``calibrate``: priors, initial values, the choice of model structure per GPU, the result.

M1 (the lumped node) is fitted to every GPU; GPUs whose M1 residuals are still structured 10 s
apart (or too large) also get M2 and M3 (beta from several starts), and the Bayesian information
criterion [1]_ with an effective sample size n(1 - rho_1)/(1 + rho_1) chooses.

References
----------
.. [1] G. Schwarz, "Estimating the dimension of a model", Ann. Stat. 6 (1978) 461-464 (BIC).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import xarray as xr

from twin.calibration.config import (
    MODELS,
    NP,
    QUANT_VAR,
    CalibrationConfig,
    Priors,
)
from twin.calibration.leakage import leakage_slope
from twin.calibration.metrics import autocorrelation
from twin.calibration.model import predict_batch
from twin.calibration.result import CalibrationResult, Fit, build_dataset, summarize
from twin.calibration.solver import fit_structure
from twin.calibration.spec_check import check_spec
from twin.calibration.uncertainty import parameter_uncertainty, prediction_sd
from twin.io.telemetry import Grid, cuts_report, open_telemetry, to_grid
from twin.spec import load_spec
from twin.units import SpecError


class _Training(NamedTuple):
    """The training window (arrays ``(gpu, n_train)``) and the likelihood's constants."""

    power: np.ndarray  # [W], NaN as 0
    temp: np.ndarray  # readings [degC]
    frac: np.ndarray  # their position in the cell
    w: np.ndarray  # 1.0 where a reading is fitted
    mu: np.ndarray  # (NP,) prior means
    prec: np.ndarray  # (gpu, NP) prior precisions
    sigma: float  # assumed reading s.d. [K]
    block: int  # Bartlett bandwidth of the score covariance [steps]

    def fit(self, theta0: np.ndarray, name: str, rows: np.ndarray, cfg: CalibrationConfig):
        """:func:`fit_structure` of structure ``name`` on GPUs ``rows``."""
        return fit_structure(
            theta0, MODELS[name], self.power[rows], self.temp[rows], self.frac[rows],
            self.w[rows], self.mu, self.prec[rows], self.sigma, cfg.dt, cfg.iterations,
            cfg.chunk, self.block,
        )  # fmt: skip


def calibrate(
    telemetry: xr.Dataset | Grid | str | Path,
    facility: object,
    config: CalibrationConfig | None = None,
) -> CalibrationResult:
    """Fit every GPU of ``telemetry`` (source, Dataset or :class:`Grid`) against ``facility``.

    ``facility`` is a :class:`twin.spec.FacilitySpec` (or a spec name/path).  The first
    ``train_fraction`` of the record is fitted; the rest is predicted from power alone.
    """
    cfg = config or CalibrationConfig()
    if not 0.05 <= cfg.train_fraction <= 1.0:
        raise SpecError("--train-fraction", cfg.train_fraction, "a fraction between 0.05 and 1")
    t_start = time.perf_counter()
    spec = load_spec(facility)
    pri = Priors.from_spec(spec)
    grid = _telemetry_grid(telemetry, cfg, pri)
    spec_check = check_spec(grid, spec, cfg)  # the uncalibrated spec against the readings
    for name in cfg.models:
        if name not in MODELS:
            raise SpecError("models", name, f"one of {', '.join(MODELS)}")
    n_train = max(int(round(cfg.train_fraction * grid.n_steps)), 2)
    valid = np.isfinite(grid.temp) & ~grid.gap & ~grid.throttled
    power = np.nan_to_num(grid.power, nan=0.0)
    tr = _training(grid, power, valid, n_train, pri, cfg)
    chosen, model_name = _choose_structures(tr, _initial_theta(tr.power, tr.temp, tr.w, pri), cfg)
    unc = parameter_uncertainty(chosen, tr.w, tr.sigma, cfg)
    theta, cov = unc["theta"], unc["cov"]
    pred = _predict_all(theta, power, grid.frac, cfg)
    # uncertainty of each predicted reading: the parameters' (delta method) and the training
    # residuals' (reading noise, 1 degC rounding, unmodelled dynamics)
    pred_sd = np.sqrt(
        prediction_sd(theta, cov, power, grid.frac, cfg.dt, cfg.chunk) ** 2
        + unc["resid_var"][:, None]
    )
    fit = Fit(
        grid=grid, n_train=n_train, valid=valid, w_train=tr.w, theta=theta,
        mask=chosen["mask"], cov=cov, model=model_name, structures=tuple(cfg.models),
        resid_var=unc["resid_var"], acf=unc["acf"], inflation=unc["inflation"],
        prediction=pred, prediction_sd=pred_sd, leakage=leakage_slope(grid, n_train, pri),
        hbm_theta=_fit_hbm(grid, tr, pri, cfg),
    )  # fmt: skip
    params = build_dataset(fit, cfg, pri, getattr(spec, "name", ""))
    params.attrs["gpu_model"] = spec.sites[0].building.rack.gpu.name
    params.attrs["telemetry_source"] = _source_name(telemetry)
    params.attrs["spec_check"] = json.dumps(spec_check)
    params.attrs["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    summary = summarize(params) | {"gaps_left_out": cuts_report(grid)}
    return CalibrationResult(params, summary, grid, pred, pred_sd, n_train, theta, cov)


def _source_name(telemetry: object) -> str:
    """Where the telemetry came from, for the calibration file's provenance."""
    if isinstance(telemetry, (str, Path)):
        return str(telemetry)
    if isinstance(telemetry, xr.Dataset):
        return str(telemetry.attrs.get("source", telemetry.attrs.get("title", "dataset")))
    return type(telemetry).__name__


def _telemetry_grid(telemetry: object, cfg: CalibrationConfig, pri: Priors) -> Grid:
    """The telemetry on the ``cfg.dt`` grid (a given :class:`Grid` must already have that step)."""
    if isinstance(telemetry, Grid):
        if not math.isclose(telemetry.dt, cfg.dt):
            raise SpecError(
                "dt",
                cfg.dt,
                f"the step of the given grid ({telemetry.dt:g} s): set CalibrationConfig.dt",
            )
        return telemetry
    ds = telemetry if isinstance(telemetry, xr.Dataset) else open_telemetry(telemetry)
    return to_grid(ds, dt=cfg.dt, gap_s=cfg.gap_s, slowdown_c=pri.slowdown_c)


def _training(
    grid: Grid,
    power: np.ndarray,
    valid: np.ndarray,
    n_train: int,
    pri: Priors,
    cfg: CalibrationConfig,
) -> _Training:
    """The first ``n_train`` steps; readings are fitted where ``valid``."""
    mu, prec = _prior_arrays(pri, cfg, grid.power.shape[0])
    return _Training(
        power=power[:, :n_train],
        temp=grid.temp[:, :n_train],
        frac=grid.frac[:, :n_train],
        w=valid[:, :n_train].astype(float),
        mu=mu,
        prec=prec,
        sigma=math.sqrt(0.25**2 + QUANT_VAR),
        block=max(1, int(round(cfg.hac_block_s / cfg.dt))),
    )


def _choose_structures(
    tr: _Training, theta0: np.ndarray, cfg: CalibrationConfig
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fit M1 to every GPU, M2/M3 to the screened ones; keep each GPU's lowest-BIC fit.

    Returns the chosen fit (arrays of :func:`fit_structure` over all GPUs) and its names.
    """
    g_n = theta0.shape[0]
    n_obs = tr.w.sum(1)
    fit1 = tr.fit(theta0, "M1", np.arange(g_n), cfg)
    acf1 = autocorrelation(fit1["r"], tr.w, [1, 10])
    rho1 = np.clip(np.nan_to_num(acf1[:, 0], nan=0.0), 0.0, 0.98)
    n_eff = np.maximum(n_obs * (1 - rho1) / (1 + rho1), 2.0)

    def bic_of(f: dict, idx: np.ndarray, k: int) -> np.ndarray:
        rss = np.sum(np.where(tr.w[idx] > 0, f["r"], 0.0) ** 2, axis=1)
        ne = n_eff[idx]
        return ne * np.log(np.maximum(rss, 1e-12) / np.maximum(n_obs[idx], 1)) + k * np.log(ne)

    # screening: only GPUs whose M1 residuals are still structured 10 s apart get the slow
    # branch (and beta); the BIC then decides, with a margin of cfg.bic_margin
    chosen = {k: v.copy() for k, v in fit1.items()}
    model_name = ["M1"] * g_n
    bic_best = bic_of(fit1, np.arange(g_n), len(MODELS["M1"]))
    rss1 = np.sum(np.where(tr.w > 0, fit1["r"], 0.0) ** 2, axis=1)
    rmse1 = np.sqrt(rss1 / np.maximum(n_obs, 1))
    cand = np.flatnonzero(
        (np.nan_to_num(acf1[:, 1], nan=0.0) > cfg.screen_acf10)
        | (rmse1 > cfg.screen_rmse_ratio * tr.sigma)
    )
    th_c = fit1["theta"][cand].copy()
    th_c[:, 4] = th_c[:, 0] + math.log(0.3)
    th_c[:, 0] = th_c[:, 0] + math.log(0.7)
    for name in [m for m in ("M2", "M3") if m in cfg.models]:
        if cand.size == 0:
            break
        best = _multi_start(tr, th_c, name, cand, cfg)
        bic = bic_of(best, cand, len(MODELS[name]))
        win = bic < bic_best[cand] - cfg.bic_margin
        for j in np.flatnonzero(win):
            i = cand[j]
            for key in chosen:
                chosen[key][i] = best[key][j]
            model_name[i] = name
            bic_best[i] = bic[j]
        th_c = best["theta"].copy()
    return chosen, model_name


def _multi_start(
    tr: _Training, th_c: np.ndarray, name: str, cand: np.ndarray, cfg: CalibrationConfig
) -> dict[str, np.ndarray]:
    """Fit ``name`` to GPUs ``cand``; M3 from each of ``cfg.beta_starts``, the lowest cost kept."""
    best = None
    for b0 in cfg.beta_starts if name == "M3" else (None,):
        th0 = th_c.copy()
        if b0 is not None:
            th0[:, 7] = b0
        f = tr.fit(th0, name, cand, cfg)
        if best is None:
            best = f
        else:
            better = f["cost"] < best["cost"]
            best = {
                k: np.where(better.reshape((-1,) + (1,) * (v.ndim - 1)), f[k], v)
                for k, v in best.items()
            }
    return best


def _predict_all(
    theta: np.ndarray, power: np.ndarray, frac: np.ndarray, cfg: CalibrationConfig
) -> np.ndarray:
    """Predicted readings over the whole record from power alone, ``cfg.chunk`` GPUs at a time."""
    return np.concatenate(
        [
            np.asarray(
                predict_batch(
                    jnp.asarray(theta[a : a + cfg.chunk]),
                    jnp.asarray(power[a : a + cfg.chunk]),
                    jnp.asarray(frac[a : a + cfg.chunk]),
                    dt=cfg.dt,
                )
            )
            for a in range(0, theta.shape[0], cfg.chunk)
        ]
    )


def _fit_hbm(grid: Grid, tr: _Training, pri: Priors, cfg: CalibrationConfig) -> np.ndarray | None:
    """The M1 structure fitted to the HBM temperature, where measured (its parameter vectors)."""
    if grid.temp_memory is None:
        return None
    n_train = tr.power.shape[1]
    temp = grid.temp_memory[:, :n_train]
    wm = (np.isfinite(temp) & ~grid.gap[:, :n_train]).astype(float)
    thm0 = _initial_theta(tr.power, temp, wm, pri)
    thm0[:, 1] = math.log(300.0)
    fm = fit_structure(
        thm0, MODELS["M1"], tr.power, temp, grid.frac_memory[:, :n_train], wm, tr.mu, tr.prec,
        tr.sigma, cfg.dt, cfg.iterations, cfg.chunk,
    )  # fmt: skip
    return fm["theta"]


def _initial_theta(power: np.ndarray, y: np.ndarray, w: np.ndarray, pri: Priors) -> np.ndarray:
    """Starting parameters: R and the intercept from a line through (15 s mean power, reading)."""
    g_n = power.shape[0]
    th = np.zeros((g_n, NP))
    for i in range(g_n):
        ok = w[i] > 0
        slope, icpt = pri.resistance * 2, pri.temp_inlet_c
        if ok.sum() > 5:
            k = 15
            ps = np.convolve(power[i], np.ones(k) / k, mode="same")
            x, yy = ps[ok], y[i, ok]
            if np.ptp(x) > 1.0:
                slope, icpt = np.polyfit(x, yy, 1)
            else:
                icpt = float(np.mean(yy)) - slope * float(np.mean(x))
        slope = float(np.clip(slope, 0.005, 0.3))
        th[i] = [
            math.log(slope),
            math.log(pri.capacitance),
            float(icpt),
            0.0,
            -30.0,
            math.log(100.0),
            0.0,
            0.0,
        ]
    return th


def _prior_arrays(pri: Priors, cfg: CalibrationConfig, g_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Prior means (NP,) and precisions (g_n, NP); the initial states have no prior."""
    mu = np.array(
        [
            math.log(pri.resistance),
            math.log(pri.capacitance),
            pri.temp_inlet_c,
            0.0,
            math.log(pri.resistance),
            math.log(100.0),
            0.0,
            0.0,
        ]
    )
    sd = np.array(
        [
            cfg.log_prior_sd,
            cfg.log_prior_sd,
            cfg.inlet_prior_sd,
            np.inf,
            cfg.log_prior_sd,
            cfg.log_prior_sd,
            np.inf,
            cfg.beta_prior_sd,
        ]
    )
    prec = np.where(np.isfinite(sd), 1.0 / sd**2, 0.0)
    return mu, np.tile(prec, (g_n, 1))
