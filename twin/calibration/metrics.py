"""Fit statistics: residual autocorrelation, ASHRAE Guideline 14 metrics, masked row RMS.

References
----------
.. [1] ASHRAE Guideline 14-2014, *Measurement of Energy, Demand, and Water Savings*: CV(RMSE)
   and NMBE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def autocorrelation(r: np.ndarray, w: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """Autocorrelation of residuals ``r`` (gpu, step) at ``lags`` [steps], used cells ``w``."""
    out = np.full((r.shape[0], len(lags)), np.nan)
    for j, lag in enumerate(lags):
        if lag >= r.shape[1]:
            continue
        both = (w[:, lag:] > 0) & (w[:, :-lag] > 0)
        a = np.where(both, r[:, lag:], 0.0)
        b = np.where(both, r[:, :-lag], 0.0)
        cnt = both.sum(1)
        ma = a.sum(1) / np.maximum(cnt, 1)
        mb = b.sum(1) / np.maximum(cnt, 1)
        num = (np.where(both, (a - ma[:, None]) * (b - mb[:, None]), 0.0)).sum(1)
        den = np.sqrt(
            np.where(both, (a - ma[:, None]) ** 2, 0.0).sum(1)
            * np.where(both, (b - mb[:, None]) ** 2, 0.0).sum(1)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(cnt > 10, num / den, np.nan)
    return out


def ashrae_metrics(y: np.ndarray, pred: np.ndarray, n_params: int = 0) -> dict[str, float]:
    """RMSE [K], CV(RMSE) and NMBE [%] as ASHRAE Guideline 14 defines them ([1]_).

    .. math:: CV = \\frac{\\sqrt{\\sum (y-\\hat y)^2/(n-p)}}{\\bar y},\\quad
              NMBE = \\frac{\\sum (y-\\hat y)}{(n-p)\\,\\bar y}

    ``y`` are the readings in °C as reported (the unit the sensor quantizes in).
    """
    ok = np.isfinite(y) & np.isfinite(pred)
    y, pred = y[ok], pred[ok]
    n = y.size
    if n <= n_params or n == 0:
        return {"rmse_k": math.nan, "cv_rmse": math.nan, "nmbe": math.nan, "n": int(n)}
    e = y - pred
    ybar = float(np.mean(y))
    return {
        "rmse_k": float(np.sqrt(np.mean(e * e))),
        "cv_rmse": float(100.0 * np.sqrt(np.sum(e * e) / (n - n_params)) / ybar),
        "nmbe": float(100.0 * np.sum(e) / ((n - n_params) * ybar)),
        "n": int(n),
    }


def rms_rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Root mean square of each row of ``x`` over ``mask`` (NaN for a row with none)."""
    cnt = mask.sum(1)
    ss = np.where(mask, x, 0.0) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.sqrt(ss.sum(1) / cnt), np.nan)


def moving_average(x: np.ndarray, width: float) -> np.ndarray:
    """Trailing mean of ``x`` (gpu, step) over ``width`` steps (shorter at the start)."""
    k = max(1, int(round(width)))
    c = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1)], axis=1)
    idx = np.arange(x.shape[1])
    lo = np.maximum(idx + 1 - k, 0)
    return (c[:, idx + 1] - c[:, lo]) / (idx + 1 - lo)
