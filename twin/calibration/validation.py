"""Held-out validation: per-GPU and pooled errors, inside and outside the trained power envelope.

The first ``train_fraction`` of the record is fitted; the rest is predicted from power alone.  A
held-out reading taken at a power outside the trained envelope (e.g. idle after training at
load) is a prediction by extrapolation and is reported separately.  Operating points are the
power averaged over ``envelope_window_s``, so a brief dip in training does not count as having
visited its power.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from twin.calibration.config import Z95, CalibrationConfig
from twin.calibration.metrics import ashrae_metrics, moving_average, rms_rows
from twin.io.telemetry import Grid

#: The pooled subsets of readings, in the order of :attr:`Validation.pooled`.
POOLS: tuple[str, ...] = ("holdout", "envelope", "extrapolated", "train")


class Validation(NamedTuple):
    """Per-GPU arrays (over ``gpu``) and pooled metrics of the held-out and training readings."""

    holdout_rmse: np.ndarray  # [K]
    train_rmse: np.ndarray  # [K]
    rmse_envelope: np.ndarray  # held-out, at powers inside the trained envelope [K]
    rmse_extrapolated: np.ndarray  # held-out, outside it [K]
    extrapolated_fraction: np.ndarray  # share of held-out readings outside
    coverage: np.ndarray  # share of held-out readings inside the stated 95 % interval
    prediction_sd: np.ndarray  # RMS stated s.d. of the held-out predictions [K]
    envelope: np.ndarray  # (gpu, 2) low, high bound of the trained power envelope [W]
    pooled: list[dict[str, float]]  # ashrae_metrics of each subset of POOLS
    coverage_pooled: float  # of all held-out readings with a stated s.d. (NaN if none)
    extrapolation: str  # what was extrapolated ("" if nothing)


def validate(
    grid: Grid,
    n_train: int,
    pred: np.ndarray,
    pred_sd: np.ndarray,
    valid: np.ndarray,
    w_tr: np.ndarray,
    n_params: int,
    cfg: CalibrationConfig,
) -> Validation:
    """Compare ``pred`` (gpu, step) with the readings; ``n_params`` fitted over the fleet."""
    test_w = valid.copy()
    test_w[:, :n_train] = False
    err = grid.temp - pred
    envelope = _trained_envelope(grid.power, n_train, grid.dt, cfg)
    hold_in = test_w & envelope.inside
    hold_out = test_w & ~envelope.inside
    with np.errstate(invalid="ignore"):
        covered = np.abs(err) <= Z95 * pred_sd
    stated = test_w & np.isfinite(pred_sd)  # held-out readings with a stated uncertainty
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_out = np.where(test_w.any(1), hold_out.sum(1) / test_w.sum(1), np.nan)
    used = w_tr > 0

    def pool(sel: np.ndarray) -> dict[str, float]:
        return ashrae_metrics(grid.temp[sel], pred[sel])

    train = ashrae_metrics(grid.temp[:, :n_train][used], pred[:, :n_train][used], n_params)
    return Validation(
        holdout_rmse=rms_rows(err, test_w),
        train_rmse=rms_rows(err[:, :n_train], used),
        rmse_envelope=rms_rows(err, hold_in),
        rmse_extrapolated=rms_rows(err, hold_out),
        extrapolated_fraction=frac_out,
        coverage=rms_rows(covered.astype(float), stated) ** 2,  # mean of a 0/1 indicator
        prediction_sd=rms_rows(pred_sd, stated),
        envelope=np.stack([envelope.low, envelope.high], 1),
        pooled=[pool(test_w), pool(hold_in), pool(hold_out), train],
        coverage_pooled=float(np.mean(covered[stated])) if stated.any() else float("nan"),
        extrapolation=_extrapolation_note(envelope, test_w, hold_out, pred_sd, cfg),
    )


class _Envelope(NamedTuple):
    low: np.ndarray  # (gpu,) [W]
    high: np.ndarray  # (gpu,) [W]
    inside: np.ndarray  # (gpu, step): the operating point lies inside


def _trained_envelope(
    power: np.ndarray, n_train: int, dt: float, cfg: CalibrationConfig
) -> _Envelope:
    """The p0.5-p99.5 range of training operating points widened by the configured margin."""
    p_op = moving_average(np.nan_to_num(power, nan=0.0), cfg.envelope_window_s / dt)
    p_lo, p_hi = np.percentile(p_op[:, :n_train], [0.5, 99.5], axis=1)
    margin = np.maximum(cfg.envelope_margin_w, cfg.envelope_margin_rel * (p_hi - p_lo))
    low, high = p_lo - margin, p_hi + margin
    inside = (p_op >= low[:, None]) & (p_op <= high[:, None])
    return _Envelope(low, high, inside)


def _extrapolation_note(
    env: _Envelope,
    test_w: np.ndarray,
    hold_out: np.ndarray,
    pred_sd: np.ndarray,
    cfg: CalibrationConfig,
) -> str:
    """What share of the hold-out is extrapolated, the envelope, and the stated uncertainty."""
    if not hold_out.any():
        return ""
    lo, hi = env.low, env.high
    ext_sd = pred_sd[hold_out & np.isfinite(pred_sd)]
    sd_txt = (
        f"its stated uncertainty is {float(np.sqrt(np.mean(ext_sd**2))):.1f} K (1 s.d., RMS)"
        if ext_sd.size
        else "no uncertainty could be stated"
    )
    return (
        f"{100 * hold_out.sum() / max(test_w.sum(), 1):.0f} % of the held-out readings were "
        f"taken at powers outside the trained envelope (per GPU, the p0.5-p99.5 range of the "
        f"{cfg.envelope_window_s:g} s mean training power widened by max("
        f"{cfg.envelope_margin_w:g} W, {100 * cfg.envelope_margin_rel:g} %): lower bounds "
        f"{np.min(lo):.0f}-{np.max(lo):.0f} W, upper {np.min(hi):.0f}-{np.max(hi):.0f} W); "
        f"there the prediction extrapolates and {sd_txt}"
    )
