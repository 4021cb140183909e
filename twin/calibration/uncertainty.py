r"""Uncertainty of the fit: sandwich covariance of the parameters, s.d. of each prediction.

The covariance is the Laplace (Gauss-Newton) information made robust: :math:`H^{-1}(\Omega +
H_p)H^{-1}` with :math:`\Omega` the long-run covariance of the data scores that
:func:`twin.calibration.solver._score_meat` returns.  A prediction's s.d. follows by the delta
method; the Newey-West factor :math:`1 + 2\sum_l (1 - l/(L+1))\rho_l` of the residuals is kept
as a diagnostic.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from twin.calibration.config import NP, CalibrationConfig
from twin.calibration.metrics import autocorrelation
from twin.calibration.model import predict_readings
from twin.calibration.solver import pad_to_blocks


def _prediction_var_one(theta, cov, power, frac, dt):
    """J Sigma J^T of one GPU's predicted readings, J by forward-mode differentiation."""
    jac = jax.jacfwd(lambda th: predict_readings(th, power, frac, dt))(theta)  # (N, NP)
    return jnp.einsum("ni,ij,nj->n", jac, cov, jac)


@functools.partial(jax.jit, static_argnames=("dt",))
def _prediction_var(theta, cov, power, frac, dt):
    """:func:`_prediction_var_one` over a block of GPUs."""
    return jax.vmap(_prediction_var_one, in_axes=(0, 0, 0, 0, None))(theta, cov, power, frac, dt)


def prediction_sd(
    theta: np.ndarray,
    cov: np.ndarray,
    power: np.ndarray,
    frac: np.ndarray,
    dt: float,
    chunk: int = 256,
) -> np.ndarray:
    """Standard deviation [K] of the predicted readings from the parameters' uncertainty.

    Delta method: :math:`\\mathrm{var}\\,\\hat T_k = J_k \\Sigma J_k^T` with
    :math:`J_k = \\partial \\hat T_k / \\partial\\theta` by forward-mode differentiation
    through the simulation.  ``theta`` (G, NP), ``cov`` (G, NP, NP), ``power``/``frac``
    (G, N).  The reading noise is not included; a GPU whose covariance is not finite gets NaN.
    """
    g_n = theta.shape[0]
    chunk = max(1, min(chunk, g_n))
    bad = ~np.isfinite(cov).all(axis=(1, 2))  # a failed covariance: no stated uncertainty
    cov = np.where(bad[:, None, None], 0.0, cov)
    out = []
    for a in range(0, g_n, chunk):
        b = min(a + chunk, g_n)
        args = [pad_to_blocks(x[a:b], chunk) for x in (theta, cov, power, frac)]
        v = _prediction_var(*(jnp.asarray(x) for x in args), dt=float(dt))
        out.append(np.asarray(v)[: b - a])
    sd = np.sqrt(np.maximum(np.concatenate(out), 0.0))
    sd[bad] = np.nan
    return sd


def _order_branches(theta, mask, h_data, h_prior, meat):
    """Label the branch with the shorter time constant 'fast' (the model is symmetric)."""
    theta = theta.copy()
    h_data = h_data.copy()
    h_prior = h_prior.copy()
    meat = meat.copy()
    # theta' = A theta for the swap: (lnR_f, lnC, d_f, lnR_s, ln tau_s, d_s) ->
    # (lnR_s, ln tau_s - lnR_s, d_s, lnR_f, lnR_f + lnC, d_f)
    A = np.eye(NP)
    A[[0, 1, 3, 4, 5, 6]] = 0.0
    A[0, 4] = 1.0
    A[1, 5], A[1, 4] = 1.0, -1.0
    A[3, 6] = 1.0
    A[4, 0] = 1.0
    A[5, 0], A[5, 1] = 1.0, 1.0
    A[6, 3] = 1.0
    Ainv = np.linalg.inv(A)
    for i in range(theta.shape[0]):
        if not mask[i, 4]:
            continue
        if theta[i, 5] < theta[i, 0] + theta[i, 1]:  # tau_s < tau_f
            theta[i] = A @ theta[i]
            # information matrices transform with the inverse map: H' = A^-T H A^-1
            h_data[i] = Ainv.T @ h_data[i] @ Ainv
            h_prior[i] = Ainv.T @ h_prior[i] @ Ainv
            meat[i] = Ainv.T @ meat[i] @ Ainv
    return theta, h_data, h_prior, meat


def _covariance(h_data, h_prior, meat, mask):
    r"""Sandwich (HAC) covariance :math:`H^{-1}(\Omega + H_p)H^{-1}`, :math:`H = H_d + H_p`.

    ``meat`` :math:`\Omega` is the Bartlett long-run covariance of the per-step data scores: it
    carries the actual residual scale and its autocorrelation *as seen through each parameter's
    sensitivity* (a parameter driven by slowly varying power sees the long correlations of the
    rounding error, a scalar variance inflation does not).
    """
    g_n = h_data.shape[0]
    cov = np.zeros((g_n, NP, NP))
    for i in range(g_n):
        idx = np.flatnonzero(mask[i])
        ix = np.ix_(idx, idx)
        H = h_data[i][ix] + h_prior[i][ix]
        try:
            Hi = np.linalg.inv(H)
            # the two-way estimate need not be positive semi-definite: clip its spectrum
            ev, vec = np.linalg.eigh(0.5 * (meat[i][ix] + meat[i][ix].T))
            m = (vec * np.maximum(ev, 0.0)) @ vec.T
            c = Hi @ (m + h_prior[i][ix]) @ Hi
        except np.linalg.LinAlgError:
            c = np.full((idx.size, idx.size), np.nan)
        cov[i][ix] = 0.5 * (c + c.T)
    return cov


def parameter_uncertainty(
    chosen: dict[str, np.ndarray], w_tr: np.ndarray, sigma0: float, cfg: CalibrationConfig
) -> dict[str, np.ndarray]:
    """Covariance and residual diagnostics of the chosen fits (``chosen`` from the solver).

    Returns ``theta`` (branches ordered), ``cov`` (sandwich), ``resid_var`` [K^2] of the
    training residuals, their autocorrelation ``acf`` at 1, 10 and 60 steps, and
    ``inflation``, the sandwich over the Gauss-Newton variance of ln R_f (where that is not
    positive: the residuals' Newey-West factor).
    """
    mask, r_tr = chosen["mask"], chosen["r"]
    theta, h_data, h_prior, meat = _order_branches(
        chosen["theta"], mask, chosen["h_data"], chosen["h_prior"], chosen["meat"]
    )
    n_obs = w_tr.sum(1)
    rss = np.sum(np.where(w_tr > 0, r_tr, 0.0) ** 2, axis=1)
    s2 = rss / np.maximum(n_obs - mask.sum(1), 1) / sigma0**2  # residual variance / assumed
    acf = autocorrelation(r_tr, w_tr, [1, 10, 60])
    # long-run variance of autocorrelated residuals (Bartlett / Newey-West weights)
    lags = np.arange(1, cfg.hac_lags + 1)
    acf_all = np.nan_to_num(autocorrelation(r_tr, w_tr, lags), nan=0.0)
    weights = 1.0 - lags / (cfg.hac_lags + 1.0)
    kappa = np.clip(1.0 + 2.0 * (acf_all * weights).sum(1), 1.0, None)
    cov = _covariance(h_data, h_prior, meat, mask)
    # how much the sandwich widens ln R_f against the plain Gauss-Newton covariance
    naive = _covariance(h_data, h_prior, h_data, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        inflation = np.where(naive[:, 0, 0] > 0, cov[:, 0, 0] / naive[:, 0, 0], kappa)
    return {
        "theta": theta,
        "cov": cov,
        "resid_var": s2 * sigma0**2,
        "acf": acf,
        "inflation": inflation,
    }
