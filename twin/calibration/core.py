r"""Calibration: fit each GPU's thermal parameters to telemetry by maximum likelihood.

Model (per GPU, on a grid of ``dt`` seconds; see docs/calibration.md for the derivation)
-------------------------------------------------------------------------------------------
The die temperature reading is the loop inlet temperature plus the rise of a two-branch Foster
network driven by the measured package power (which already contains leakage):

.. math::
   T_k = T_{in} + x_{f,k} + x_{s,k},\qquad
   x_{k} = a\,x_{k-1} + (1-a)\,R\,h_k\,P_k,\quad a = e^{-\Delta t/(\tau h_k)},\quad
   h_k = \frac{1}{1 + \beta\,(x_{f,k-1}+x_{s,k-1})}

for the fast branch (:math:`R_f`, :math:`\tau_f = R_f C`: die, lid, cold-plate base, the water in
the plate) and the slow branch (:math:`R_s`, :math:`\tau_s`: coolant / sink heating up).  Each
step is the exact exponential update of ``physics.gpu.die_temperature_step`` for power held at its
1 s average :math:`P_k` over the step.  :math:`\beta` lets the conductance grow with the
temperature rise (flow or fan control, temperature-dependent film coefficients).  Three nested
structures are fitted and chosen per GPU by the Bayesian information criterion with an effective
sample size (residuals are autocorrelated):

* ``M1``: :math:`R, C, T_{in}` and the initial state (the lumped node of ``physics.gpu``);
* ``M2``: M1 plus the slow branch :math:`R_s, \tau_s` and its initial state;
* ``M3``: M2 plus :math:`\beta`.

Observation model: readings are instantaneous, irregular, 1 °C quantized: the prediction is
interpolated to each reading's time inside its grid cell and compared with variance
:math:`\sigma^2 + 1/12` K² (Sheppard's correction for rounding).  The loop inlet has a prior from
the facility spec (TCS supply temperature, ±``inlet_prior_sd``); log-parameters have weak
priors (a factor ~20) that only matter where the data say nothing.

Fitting: a batched Levenberg–Marquardt on the residual vector, Jacobians by forward-mode JAX
differentiation through the ``lax.scan`` of the simulation, ``vmap`` over GPUs.  Uncertainty:
the Laplace (Gauss–Newton) covariance, the data part scaled by the residual variance and the
Newey–West long-run variance factor :math:`1 + 2\sum_l (1 - l/(L+1))\rho_l` for autocorrelated
residuals.

References
----------
.. [1] ASHRAE Guideline 14-2014, *Measurement of Energy, Demand, and Water Savings*: CV(RMSE)
   and NMBE.
.. [2] K. Levenberg (1944), D. Marquardt (1963): damped Gauss–Newton least squares.
.. [3] G. Schwarz, "Estimating the dimension of a model", Ann. Stat. 6 (1978) 461–464 (BIC).
.. [4] W. F. Sheppard, "On the calculation of the most probable values of frequency
   constants...", Proc. London Math. Soc. 29 (1898): variance of rounding, 1/12 of the step².
.. [5] Physics references of this project, ``shared/refs/physics-references.md`` sections 1, 6.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from twin.io.telemetry import Grid, fleet_hosts, open_telemetry, to_grid
from twin.units import ZERO_CELSIUS_K, SpecError

log = logging.getLogger("twin.calibration.core")

#: Parameter vector of one GPU, in order.
PARAMS: tuple[str, ...] = (
    "log_resistance",  # ln R_f [K/W]
    "log_capacitance",  # ln C [J/K]
    "temp_intercept",  # T_in + sensor offset [degC]
    "init_fast",  # initial fast-branch deviation from steady state [K]
    "log_resistance_slow",  # ln R_s [K/W]
    "log_tau_slow",  # ln tau_s [s]
    "init_slow",  # initial slow-branch deviation [K]
    "beta",  # conductance growth with temperature rise [1/K]
)
NP = len(PARAMS)
#: Active parameters of each model structure.
MODELS: dict[str, tuple[int, ...]] = {
    "M1": (0, 1, 2, 3),
    "M2": (0, 1, 2, 3, 4, 5, 6),
    "M3": (0, 1, 2, 3, 4, 5, 6, 7),
}
QUANT_VAR = 1.0 / 12.0  # variance of 1 degC rounding [K^2]
Z95 = 1.959964  # two-sided 95 % quantile of the standard normal


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Options of :func:`calibrate`; defaults documented in docs/calibration.md."""

    train_fraction: float = 0.6
    dt: float = 1.0  # grid step [s]
    gap_s: float = 5.0  # no reading for longer than this: gap [s]
    iterations: int = 30  # Levenberg-Marquardt iterations per structure
    chunk: int = 512  # GPUs per vectorized block
    inlet_prior_sd: float = 3.0  # [K], around the spec's TCS supply temperature
    log_prior_sd: float = 3.0  # weak prior on log-parameters
    beta_prior_sd: float = 0.02  # [1/K]
    models: tuple[str, ...] = ("M1", "M2", "M3")
    hac_lags: int = 30  # lags of the residual-only Newey-West factor (a diagnostic) [steps]
    hac_block_s: float = 120.0  # Bartlett bandwidth of the sandwich covariance [s]
    screen_acf10: float = 0.3  # M1 residual autocorrelation at 10 s that calls for M2/M3
    screen_rmse_ratio: float = 1.5  # ... or M1 RMSE above this multiple of the reading noise
    bic_margin: float = 0.0  # a richer structure must lower the BIC by this much
    beta_starts: tuple[float, ...] = (
        0.0,
        0.01,
        0.02,
    )  # multi-start: the cost is multimodal in beta
    min_power_range_w: float = 20.0  # excitation: p95 - p5 of training power at least this
    min_power_range_rel: float = 0.05  # ... and this share of the mean power
    max_rel_se: float = 0.5  # a parameter known worse than this is reported unidentifiable
    peer_excess_k: float = 5.0  # anomaly: steady temperature differs from peers by >= 5 K
    # ... and by >= 3.5 robust standard deviations of the peers: the modified z-score rule of
    # Iglewicz & Hoaglin (1993), docs/calibration.md [8]
    peer_z_threshold: float = 3.5
    peer_scale_floor_k: float = 1.0  # robust scale floor: the 1 degC readout
    min_train_obs: int = 30
    envelope_window_s: float = 30.0  # operating point: power averaged over this window [s]
    envelope_margin_w: float = 20.0  # trained power envelope: p0.5-p99.5 widened by this ...
    envelope_margin_rel: float = 0.1  # ... or this share of its width, whichever is larger


@dataclasses.dataclass(frozen=True)
class Priors:
    """Prior means (in parameter space) from the facility spec."""

    resistance: float  # [K/W]
    capacitance: float  # [J/K]
    temp_inlet_c: float  # [degC]
    slowdown_c: float  # [degC]
    power_limit: float  # [W]
    leakage_at_reference: float  # [W]

    @classmethod
    def from_spec(cls, spec: object) -> Priors:
        site = spec.sites[0]  # type: ignore[attr-defined]
        g = site.building.rack.gpu
        return cls(
            resistance=float(g.resistance_junction_coolant),
            capacitance=float(g.heat_capacity),
            temp_inlet_c=float(site.tcs_supply_temperature - ZERO_CELSIUS_K),
            slowdown_c=float(g.max_operating_temperature - ZERO_CELSIUS_K),
            power_limit=float(g.power_limit),
            leakage_at_reference=float(g.leakage_at_reference),
        )


# ---------------------------------------------------------------------------- the model
def simulate_rise(theta: jax.Array, power: jax.Array, dt: float) -> jax.Array:
    """Temperature rise above the intercept at each grid time [K] (``power`` (N,) [W])."""
    r_f = jnp.exp(theta[0])
    cap = jnp.exp(theta[1])
    r_s = jnp.exp(theta[4])
    tau_s = jnp.exp(theta[5])
    beta = theta[7]
    p0 = power[0]
    r_t = r_f + r_s
    disc = jnp.maximum(1.0 + 4.0 * beta * r_t * p0, 0.04)
    rise0 = 2.0 * r_t * p0 / (1.0 + jnp.sqrt(disc))
    h0 = 1.0 / jnp.maximum(1.0 + beta * rise0, 0.2)
    xf0 = r_f * h0 * p0 + theta[3]
    xs0 = r_s * h0 * p0 + theta[6]

    def step(carry, p):
        xf, xs = carry
        h = 1.0 / jnp.maximum(1.0 + beta * (xf + xs), 0.2)
        af = jnp.exp(-dt / (r_f * cap * h))
        as_ = jnp.exp(-dt / (tau_s * h))
        xf = af * xf + (1.0 - af) * r_f * h * p
        xs = as_ * xs + (1.0 - as_) * r_s * h * p
        return (xf, xs), xf + xs

    _, rise = jax.lax.scan(step, (xf0, xs0), power[1:])
    return jnp.concatenate([(xf0 + xs0)[None], rise])


def predict_readings(theta: jax.Array, power: jax.Array, frac: jax.Array, dt: float) -> jax.Array:
    """Predicted reading in each grid cell [degC], interpolated at the readings' mean time."""
    s = simulate_rise(theta, power, dt)
    prev = jnp.concatenate([s[:1], s[:-1]])
    return theta[2] + (1.0 - frac) * prev + frac * s


def _residuals(theta, power, y, frac, w, sigma, mu, prec, dt):
    pred = predict_readings(theta, power, frac, dt)
    r_data = jnp.where(w > 0, (pred - jnp.where(w > 0, y, 0.0)) / sigma, 0.0)
    r_prior = (theta - mu) * jnp.sqrt(prec)
    return jnp.concatenate([r_data, r_prior])


def negative_log_likelihood(
    theta: jax.Array,
    power: jax.Array,
    y: jax.Array,
    frac: jax.Array,
    w: jax.Array,
    sigma: float,
    mu: jax.Array,
    prec: jax.Array,
    dt: float = 1.0,
) -> jax.Array:
    """Negative log posterior of one GPU (Gaussian readings with variance ``sigma**2``, priors).

    ``w`` (N,) is 1 where a reading is used.  Constant terms are dropped.
    """
    r = _residuals(theta, power, y, frac, w, sigma, mu, prec, dt)
    return 0.5 * jnp.sum(r * r)


def _lm_block(
    theta0, active, power, y, frac, w, sigma, mu, prec, dt, iterations, block=120, tol=1e-7
):
    """Batched Levenberg-Marquardt over GPUs in the ``active`` parameter subspace.

    Returns theta, cost, J^T J of the data and prior rows (full ``NP x NP``, zeros outside the
    active block), the data residuals [K] and the HAC long-run covariance of the data scores
    (Bartlett kernel, bandwidth ``block`` steps).  Stops early when no GPU improves by ``tol``.
    """
    act = jnp.asarray(active)
    k = len(active)
    basis = jnp.zeros((NP, k)).at[act, jnp.arange(k)].set(1.0)
    prec_m = prec * jnp.zeros(NP).at[act].set(1.0)

    def res1(th, p, yy, fr, ww, pm):
        return _residuals(th, p, yy, fr, ww, sigma, mu, pm, dt)

    def jac1(th, p, yy, fr, ww, pm):
        f = lambda z: res1(th + basis @ z, p, yy, fr, ww, pm)  # noqa: E731
        return jax.jacfwd(f)(jnp.zeros(k))

    res = jax.vmap(res1)
    jac = jax.vmap(jac1)

    def cost_of(th):
        r = res(th, power, y, frac, w, prec_m)
        return jnp.sum(r * r, axis=1)

    def cond(carry):
        it, _, _, _, gain = carry
        return (it < iterations) & (gain > tol)

    def body(carry):
        it, th, lam, cost, _ = carry
        J = jac(th, power, y, frac, w, prec_m)
        r = res(th, power, y, frac, w, prec_m)
        A = jnp.einsum("gmi,gmj->gij", J, J)
        g = jnp.einsum("gmi,gm->gi", J, r)
        d = jnp.diagonal(A, axis1=1, axis2=2)
        A = A + (lam[:, None] * (d + 1e-9))[:, :, None] * jnp.eye(k)
        step = -jnp.linalg.solve(A, g[..., None])[..., 0]
        cand = th + step @ basis.T
        c_new = cost_of(cand)
        ok = jnp.isfinite(c_new) & (c_new < cost)
        gain = jnp.max(jnp.where(ok, (cost - c_new) / jnp.maximum(cost, 1e-12), 0.0))
        # a rejected step with small damping is not convergence
        gain = jnp.maximum(gain, jnp.where(jnp.any(~ok & (lam < 1e3)), 1.0, 0.0))
        th = jnp.where(ok[:, None], cand, th)
        cost = jnp.where(ok, c_new, cost)
        lam = jnp.clip(jnp.where(ok, lam / 3.0, lam * 4.0), 1e-9, 1e9)
        return it + 1, th, lam, cost, gain

    lam0 = jnp.full(theta0.shape[0], 1e-2)
    carry = (0, theta0, lam0, cost_of(theta0), jnp.inf)
    _, th, _, cost, _ = jax.lax.while_loop(cond, body, carry)
    Jk = jac(th, power, y, frac, w, prec_m)
    n = power.shape[1]
    r = res(th, power, y, frac, w, prec_m)[:, :n]
    # HAC "meat" of the sandwich covariance: Bartlett-kernel long-run variance of the per-step
    # scores s_k = J_k r_k, as overlapping block sums of length B (equal to Newey-West with
    # bandwidth B up to edge terms), in the active subspace
    blk = max(1, min(int(block), n))
    s = Jk[:, :n] * r[:, :, None]
    cs = jnp.concatenate([jnp.zeros_like(s[:, :1]), jnp.cumsum(s, axis=1)], axis=1)
    b = cs[:, blk:] - cs[:, :-blk]
    meat_t = jnp.einsum("gmi,gmj->gij", b, b) / blk
    # ... clustered by predicted temperature level (1 K bins) and by its phase within the 1 K
    # step (0.1 K bins): the rounding error of a 1 degC readout is a fixed function of the true
    # temperature (periodic in it), so readings at the same level, or at the same phase of
    # different levels, share it however far apart in time they are.  Multi-way
    # cluster-robust (Cameron-Gelbach-Miller): Omega_time + Omega_level + Omega_phase minus the
    # white part counted twice; each clustered term is scaled by G/(G - k) for G non-empty
    # clusters (the k fitted parameters absorb k cluster directions of the residuals).
    t_pred = y + r * sigma
    lvl = jnp.clip(jnp.round(t_pred) + 64.0, 0, 255).astype(jnp.int32)
    ph = jnp.clip(jnp.floor((t_pred - jnp.floor(t_pred)) * 10.0), 0, 9).astype(jnp.int32)
    cl = jax.vmap(lambda sg, lv: jax.ops.segment_sum(sg, lv, 256))(s, lvl)
    cp = jax.vmap(lambda sg, lv: jax.ops.segment_sum(sg, lv, 10))(s, ph)

    def dof(g_c):
        return (g_c / jnp.maximum(g_c - k, 1.0))[:, None, None]

    def n_clusters(c):
        return jnp.sum(jnp.any(c != 0.0, axis=2), axis=1).astype(s.dtype)

    n_blocks = jnp.sum(w > 0, axis=1).astype(s.dtype) / blk
    meat = (
        dof(n_blocks) * meat_t
        + dof(n_clusters(cl)) * jnp.einsum("gci,gcj->gij", cl, cl)
        + dof(n_clusters(cp)) * jnp.einsum("gci,gcj->gij", cp, cp)
        - 2.0 * jnp.einsum("gmi,gmj->gij", s, s)
    )
    meat = basis @ meat @ basis.T
    J = Jk @ basis.T
    Jd, Jp = J[:, :n], J[:, n:]
    return (
        th,
        cost,
        jnp.einsum("gmi,gmj->gij", Jd, Jd),
        jnp.einsum("gmi,gmj->gij", Jp, Jp),
        r * sigma,
        meat,
    )


_lm_jit = jax.jit(_lm_block, static_argnames=("active", "dt", "iterations", "block"))


@jax.jit
def _predict_batch_dt1(theta, power, frac):
    return jax.vmap(predict_readings, in_axes=(0, 0, 0, None))(theta, power, frac, 1.0)


def _predict_batch(theta, power, frac, dt):
    """Predicted readings of many GPUs (``theta`` (G, NP), ``power`` (G, N))."""
    if dt == 1.0:
        return _predict_batch_dt1(theta, power, frac)
    return jax.vmap(predict_readings, in_axes=(0, 0, 0, None))(theta, power, frac, dt)


def _prediction_var_one(theta, cov, power, frac, dt):
    jac = jax.jacfwd(lambda th: predict_readings(th, power, frac, dt))(theta)  # (N, NP)
    return jnp.einsum("ni,ij,nj->n", jac, cov, jac)


@functools.partial(jax.jit, static_argnames=("dt",))
def _prediction_var(theta, cov, power, frac, dt):
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
        args = [_pad(x[a:b], chunk) for x in (theta, cov, power, frac)]
        v = _prediction_var(*(jnp.asarray(x) for x in args), dt=float(dt))
        out.append(np.asarray(v)[: b - a])
    sd = np.sqrt(np.maximum(np.concatenate(out), 0.0))
    sd[bad] = np.nan
    return sd


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    if a.shape[0] == size:
        return a
    pad = np.repeat(a[-1:], size - a.shape[0], axis=0)
    return np.concatenate([a, pad], axis=0)


def fit_structure(
    theta0: np.ndarray,
    active: Sequence[int],
    power: np.ndarray,
    y: np.ndarray,
    frac: np.ndarray,
    w: np.ndarray,
    mu: np.ndarray,
    prec: np.ndarray,
    sigma: float,
    dt: float,
    iterations: int,
    chunk: int,
    block: int = 120,
) -> dict[str, np.ndarray]:
    """Fit one model structure to many GPUs (arrays ``(gpu, step)``), in vectorized blocks."""
    g_n = theta0.shape[0]
    mask = np.zeros((g_n, NP), bool)
    mask[:, list(active)] = True
    chunk = max(1, min(chunk, g_n))
    n_chunks = -(-g_n // chunk)
    chunk = -(-g_n // n_chunks)  # equal blocks: one compiled shape, little padding
    keys = ("theta", "cost", "h_data", "h_prior", "r", "meat")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    yv = np.where(w > 0, y, 0.0)
    for a in range(0, g_n, chunk):
        b = min(a + chunk, g_n)
        args = [_pad(x[a:b], chunk) for x in (theta0, mask, power, yv, frac, w, prec)]
        res = _lm_jit(
            jnp.asarray(args[0]),
            tuple(int(i) for i in active),
            jnp.asarray(args[2]),
            jnp.asarray(args[3]),
            jnp.asarray(args[4]),
            jnp.asarray(args[5]),
            float(sigma),
            jnp.asarray(mu),
            jnp.asarray(args[6]),
            dt=float(dt),
            iterations=int(iterations),
            block=int(block),
        )
        m = b - a
        for k, v in zip(keys, res, strict=True):
            out[k].append(np.asarray(v)[:m])
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["mask"] = mask
    return res


# ------------------------------------------------------------------------- diagnostics
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


def robust_z(x: np.ndarray, floor_rel: float = 0.02) -> tuple[np.ndarray, np.ndarray, float]:
    """Relative departure from the median and robust z-score (MAD, floored) of ``x``."""
    ok = np.isfinite(x)
    if ok.sum() < 3:
        return np.zeros_like(x), np.zeros_like(x), math.nan
    med = float(np.median(x[ok]))
    mad = 1.4826 * float(np.median(np.abs(x[ok] - med)))
    scale = max(mad, floor_rel * abs(med), 1e-12)
    return (x - med) / med, (x - med) / scale, med


# --------------------------------------------------------------------------- calibrate
@dataclasses.dataclass
class CalibrationResult:
    """Fitted parameters (:attr:`params`), predictions and the summary of :func:`calibrate`."""

    params: xr.Dataset
    summary: dict
    grid: Grid
    prediction: np.ndarray  # (gpu, step) predicted readings [degC]
    prediction_sd: np.ndarray  # (gpu, step) s.d. of a reading's prediction [K], noise included
    train_steps: int
    theta: np.ndarray  # (gpu, NP)
    covariance: np.ndarray  # (gpu, NP, NP) in parameter space (zeros for inactive)

    def to_json(self) -> dict:
        return self.summary

    def write(self, path: str | Path) -> Path:
        """Write :attr:`params` to netCDF."""
        path = Path(path)
        if path.suffix.lower() not in (".nc", ".nc4", ".netcdf"):
            raise SpecError("--out", str(path), "a file ending in .nc (netCDF)")
        self.params.to_netcdf(path)
        return path


def _initial_theta(power, y, w, pri: Priors) -> np.ndarray:
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


def _leakage_slope(grid: Grid, n_train: int, pri: Priors, block: int = 30):
    """dP/dT [W/K] at constant workload: within-segment regression of power on temperature.

    Segments: consecutive ``block``-step means with the same utilization (±1 %, or all >= 95 %),
    power within
    10 W of the previous block and below 97 % of the power limit (a capped GPU holds its power).
    """
    g_n = grid.power.shape[0]
    slope = np.full(g_n, np.nan)
    se = np.full(g_n, np.nan)
    why = [""] * g_n
    if grid.utilization is None:
        return slope, se, ["no utilization readings: constant workload cannot be recognised"] * g_n
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
    return slope, se, why


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
    if isinstance(telemetry, Grid):
        grid = telemetry
        if not math.isclose(grid.dt, cfg.dt):
            raise SpecError(
                "dt",
                cfg.dt,
                f"the step of the given grid ({grid.dt:g} s): set CalibrationConfig.dt",
            )
    else:
        ds = telemetry if isinstance(telemetry, xr.Dataset) else open_telemetry(telemetry)
        grid = to_grid(ds, dt=cfg.dt, gap_s=cfg.gap_s, slowdown_c=pri.slowdown_c)
    g_n, n = grid.power.shape
    n_train = max(int(round(cfg.train_fraction * n)), 2)
    valid = np.isfinite(grid.temp) & ~grid.gap & ~grid.throttled
    w_train = np.zeros((g_n, n))
    w_train[:, :n_train] = valid[:, :n_train]
    power = np.nan_to_num(grid.power, nan=0.0)
    P_tr, y_tr, f_tr, w_tr = (
        power[:, :n_train],
        grid.temp[:, :n_train],
        grid.frac[:, :n_train],
        w_train[:, :n_train],
    )
    sigma0 = math.sqrt(0.25**2 + QUANT_VAR)
    mu, prec = _prior_arrays(pri, cfg, g_n)
    theta = _initial_theta(P_tr, y_tr, w_tr, pri)
    n_obs = w_tr.sum(1)
    block = max(1, int(round(cfg.hac_block_s / cfg.dt)))
    for name in cfg.models:
        if name not in MODELS:
            raise SpecError("models", name, f"one of {', '.join(MODELS)}")
    # 1. the lumped node (M1) for every GPU
    fit1 = fit_structure(
        theta, MODELS["M1"], P_tr, y_tr, f_tr, w_tr, mu, prec, sigma0, cfg.dt,
        cfg.iterations, cfg.chunk, block,
    )  # fmt: skip
    acf1 = autocorrelation(fit1["r"], w_tr, [1, 10])
    rho1 = np.clip(np.nan_to_num(acf1[:, 0], nan=0.0), 0.0, 0.98)
    n_eff = np.maximum(n_obs * (1 - rho1) / (1 + rho1), 2.0)

    def bic_of(f: dict, idx: np.ndarray, k: int) -> np.ndarray:
        rss = np.sum(np.where(w_tr[idx] > 0, f["r"], 0.0) ** 2, axis=1)
        ne = n_eff[idx]
        return ne * np.log(np.maximum(rss, 1e-12) / np.maximum(n_obs[idx], 1)) + k * np.log(ne)

    # 2. screening: only GPUs whose M1 residuals are still structured 10 s apart get the
    #    slow branch (and beta); the BIC then decides, with a margin of cfg.bic_margin
    chosen = {k: v.copy() for k, v in fit1.items()}
    model_name = ["M1"] * g_n
    bic_best = bic_of(fit1, np.arange(g_n), len(MODELS["M1"]))
    rss1 = np.sum(np.where(w_tr > 0, fit1["r"], 0.0) ** 2, axis=1)
    rmse1 = np.sqrt(rss1 / np.maximum(n_obs, 1))
    cand = np.flatnonzero(
        (np.nan_to_num(acf1[:, 1], nan=0.0) > cfg.screen_acf10)
        | (rmse1 > cfg.screen_rmse_ratio * sigma0)
    )
    th_c = fit1["theta"][cand].copy()
    th_c[:, 4] = th_c[:, 0] + math.log(0.3)
    th_c[:, 0] = th_c[:, 0] + math.log(0.7)
    for name in [m for m in ("M2", "M3") if m in cfg.models]:
        if cand.size == 0:
            break
        best = None
        for b0 in cfg.beta_starts if name == "M3" else (None,):
            th0 = th_c.copy()
            if b0 is not None:
                th0[:, 7] = b0
            f = fit_structure(
                th0, MODELS[name], P_tr[cand], y_tr[cand], f_tr[cand], w_tr[cand], mu,
                prec[cand], sigma0, cfg.dt, cfg.iterations, cfg.chunk, block,
            )  # fmt: skip
            if best is None:
                best = f
            else:
                better = f["cost"] < best["cost"]
                best = {k: np.where(better.reshape((-1,) + (1,) * (v.ndim - 1)), f[k], v)
                        for k, v in best.items()}  # fmt: skip
        bic = bic_of(best, cand, len(MODELS[name]))
        win = bic < bic_best[cand] - cfg.bic_margin
        for j in np.flatnonzero(win):
            i = cand[j]
            for key in chosen:
                chosen[key][i] = best[key][j]
            model_name[i] = name
            bic_best[i] = bic[j]
        th_c = best["theta"].copy()
    theta, mask, r_tr = chosen["theta"], chosen["mask"], chosen["r"]
    h_data, h_prior, meat = chosen["h_data"], chosen["h_prior"], chosen["meat"]
    bic = {m: None for m in cfg.models}
    theta, h_data, h_prior, meat = _order_branches(theta, mask, h_data, h_prior, meat)
    k_act = mask.sum(1)
    rss = np.sum(np.where(w_tr > 0, r_tr, 0.0) ** 2, axis=1)
    s2 = rss / np.maximum(n_obs - k_act, 1) / sigma0**2  # residual variance / assumed
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
    # predictions over the whole record from power alone
    pred = np.concatenate(
        [
            np.asarray(
                _predict_batch(
                    jnp.asarray(theta[a : a + cfg.chunk]),
                    jnp.asarray(power[a : a + cfg.chunk]),
                    jnp.asarray(grid.frac[a : a + cfg.chunk]),
                    dt=cfg.dt,
                )
            )
            for a in range(0, g_n, cfg.chunk)
        ]
    )
    # HBM node, where measured: the M1 structure on the memory temperature
    hbm = None
    if grid.temp_memory is not None:
        vm = np.isfinite(grid.temp_memory[:, :n_train]) & ~grid.gap[:, :n_train]
        wm = vm.astype(float)
        thm0 = _initial_theta(P_tr, grid.temp_memory[:, :n_train], wm, pri)
        thm0[:, 1] = math.log(300.0)
        fm = fit_structure(
            thm0, MODELS["M1"], P_tr, grid.temp_memory[:, :n_train], grid.frac_memory[:, :n_train],
            wm, mu, prec, sigma0, cfg.dt, cfg.iterations, cfg.chunk,
        )  # fmt: skip
        hbm = fm
        hbm["n_obs"] = wm.sum(1)
    leak_slope, leak_se, leak_why = _leakage_slope(grid, n_train, pri)
    # uncertainty of each predicted reading: the parameters' (delta method) and the training
    # residuals' (reading noise, 1 degC rounding, unmodelled dynamics)
    resid_var = s2 * sigma0**2
    pred_sd = np.sqrt(
        prediction_sd(theta, cov, power, grid.frac, cfg.dt, cfg.chunk) ** 2 + resid_var[:, None]
    )
    summary, params = _assemble(
        grid, cfg, pri, spec, n_train, theta, mask, cov, model_name, pred, pred_sd, valid, w_tr,
        r_tr, acf, inflation, resid_var, hbm, (leak_slope, leak_se, leak_why), bic,
    )  # fmt: skip
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    params.attrs["wall_seconds"] = summary["wall_seconds"]
    return CalibrationResult(params, summary, grid, pred, pred_sd, n_train, theta, cov)


def load_spec(facility: object) -> object:
    from twin.spec import FacilitySpec, load_facility

    if isinstance(facility, FacilitySpec):
        return facility
    if isinstance(facility, (str, Path)):
        try:
            return load_facility(facility)
        except FileNotFoundError as exc:
            raise SpecError("--facility", str(facility), f"a facility spec ({exc})") from exc
    raise SpecError("--facility", facility, "a facility spec name or TOML path")


def _rms_rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Root mean square of each row of ``x`` over ``mask`` (NaN for a row with none)."""
    cnt = mask.sum(1)
    ss = np.where(mask, x, 0.0) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.sqrt(ss.sum(1) / cnt), np.nan)


def _moving_average(x: np.ndarray, width: float) -> np.ndarray:
    """Trailing mean of ``x`` (gpu, step) over ``width`` steps (shorter at the start)."""
    k = max(1, int(round(width)))
    c = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1)], axis=1)
    idx = np.arange(x.shape[1])
    lo = np.maximum(idx + 1 - k, 0)
    return (c[:, idx + 1] - c[:, lo]) / (idx + 1 - lo)


def _fmt(x: float, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def _assemble(
    grid, cfg, pri, spec, n_train, theta, mask, cov, model_name, pred, pred_sd, valid, w_tr,
    r_tr, acf, inflation, resid_var, hbm, leak, bic,
):  # fmt: skip
    g_n, n = grid.power.shape
    var = np.stack([np.diagonal(c) for c in cov])
    se = np.sqrt(np.maximum(var, 0.0))
    r_f = np.exp(theta[:, 0])
    cap = np.exp(theta[:, 1])
    slow = mask[:, 4]
    r_s = np.where(slow, np.exp(theta[:, 4]), 0.0)
    tau_s = np.where(slow, np.exp(theta[:, 5]), np.nan)
    beta = np.where(mask[:, 7], theta[:, 7], 0.0)
    r_tot = r_f + r_s
    # relative standard errors (log-parameters: SE is relative); R_total by the delta method
    var_rtot = (
        (r_f**2) * var[:, 0]
        + (r_s**2) * var[:, 4]
        + 2 * r_f * r_s * np.array([c[0, 4] for c in cov])
    )
    rel_se_r = np.sqrt(np.maximum(var_rtot, 0.0)) / r_tot
    rel_se_c = se[:, 1]
    # excitation and identifiability
    P_tr = grid.power[:, :n_train]
    n_obs = w_tr.sum(1)
    reasons: list[list[str]] = [[] for _ in range(g_n)]
    ident_r = np.ones(g_n, bool)
    ident_c = np.ones(g_n, bool)
    excited = np.zeros(g_n, bool)  # enough readings and a training power that varied
    for i in range(g_n):
        used = w_tr[i] > 0
        if n_obs[i] < cfg.min_train_obs:
            reasons[i].append(
                f"only {int(n_obs[i])} usable temperature readings in the training window "
                f"(need {cfg.min_train_obs})"
            )
            ident_r[i] = ident_c[i] = False
            continue
        p5, p95 = np.percentile(P_tr[i], [5, 95])
        need = max(cfg.min_power_range_w, cfg.min_power_range_rel * float(np.mean(P_tr[i])))
        t_rng = float(np.ptp(grid.temp[i, :n_train][used]))
        if p95 - p5 < need:
            reasons[i].append(
                f"no excitation: training power varied only {p95 - p5:.1f} W (p5-p95; need "
                f">= {need:.1f} W) and temperature {t_rng:.0f} K, so the resistance cannot be "
                "told apart from the inlet temperature nor the heat capacity from the time "
                "constant"
            )
            ident_r[i] = ident_c[i] = False
            continue
        excited[i] = True
        if not rel_se_r[i] <= cfg.max_rel_se:
            reasons[i].append(
                f"resistance known only to ±{100 * rel_se_r[i]:.0f} % (limit "
                f"{100 * cfg.max_rel_se:.0f} %)"
            )
            ident_r[i] = False
        tau_f = r_f[i] * cap[i]
        if not rel_se_c[i] <= cfg.max_rel_se and tau_f < 2 * grid.dt:
            reasons[i].append(
                f"heat capacity unidentifiable: the die time constant R_f*C = {tau_f:.2g} s is "
                f"shorter than twice the {grid.dt:g} s sampling (relative SE "
                f"{100 * rel_se_c[i]:.0f} %)"
            )
            ident_c[i] = False
        elif not rel_se_c[i] <= cfg.max_rel_se:
            reasons[i].append(
                f"heat capacity known only to ±{100 * rel_se_c[i]:.0f} %: the power changes "
                "are slow compared with the die time constant"
            )
            ident_c[i] = False
    # loop (host) inlet and relative sensor offsets
    loops, loop_of = fleet_hosts(grid)
    icpt = theta[:, 2]
    loop_inlet = np.array([np.median(icpt[loop_of == j]) for j in range(len(loops))])
    offset = icpt - loop_inlet[loop_of]
    # steady die temperature of every GPU at common powers: zero (the intercept) and the
    # fleet's median training power; peers are the other GPUs of the loop (or of the fleet)
    p_ref = float(np.nanmedian(P_tr))

    def steady(i: int, p: float) -> float:
        # closed-form steady state of the model: rise = R_t P h(rise), h = 1/(1 + beta rise)
        r_t = r_tot[i]
        disc = max(1.0 + 4.0 * beta[i] * r_t * p, 0.04)
        return float(icpt[i] + 2.0 * r_t * p / (1.0 + math.sqrt(disc)))

    t_ref = np.array([[steady(i, 0.0), steady(i, p_ref)] for i in range(g_n)])
    r_app = (t_ref[:, 1] - loop_inlet[loop_of]) / p_ref
    # what may be compared: a GPU with too few readings not at all; the intercept (0 W) only
    # where the training power varied, else it is an extrapolation the data do not support
    t_cmp = t_ref.copy()
    t_cmp[n_obs < cfg.min_train_obs] = np.nan
    t_cmp[~excited, 0] = np.nan

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
            scale = np.maximum(np.maximum(mad, fleet_mad), cfg.peer_scale_floor_k)
            zdep[i] = excess[i] / scale
    anomaly = np.zeros(g_n, bool)
    anomaly_reason = [""] * g_n
    at = ["0 W (intercept)", f"{p_ref:.0f} W"]
    for i in range(g_n):
        if not np.isfinite(zdep[i]).any():
            continue
        hit = (np.abs(excess[i]) >= cfg.peer_excess_k) & (np.abs(zdep[i]) >= cfg.peer_z_threshold)
        j = int(np.nanargmax(np.abs(zdep[i])))
        if hit.any():
            anomaly[i] = True
            r_txt = f"{r_tot[i]:.4f} K/W" if ident_r[i] else "unidentifiable"
            other = (
                f"{excess[i, 1 - j]:+.1f} K at {at[1 - j]}"
                if np.isfinite(excess[i, 1 - j])
                else f"not compared at {at[1 - j]}"
            )
            anomaly_reason[i] = (
                f"runs {excess[i, j]:+.1f} K from its peers at equal power ({at[j]}; robust z "
                f"{zdep[i, j]:+.1f}; {other}); estimated "
                f"resistance {r_txt}, apparent resistance to the loop inlet {r_app[i]:.4f} K/W, "
                f"intercept {icpt[i]:.1f} degC vs loop {loop_inlet[loop_of[i]]:.1f} degC"
            )
    # flow shares from the slow (coolant) branch, per loop
    flow_share = np.full(g_n, np.nan)
    for j in range(len(loops)):
        members = np.flatnonzero(loop_of == j)
        if slow[members].all() and members.size > 1:
            inv = 1.0 / r_s[members]
            flow_share[members] = inv / inv.sum()
    # hold-out and training metrics
    test_w = valid.copy()
    test_w[:, :n_train] = False
    err = grid.temp - pred
    per_gpu_rmse = _rms_rows(err, test_w)
    per_gpu_train = _rms_rows(err[:, :n_train], w_tr > 0)
    hold = ashrae_metrics(grid.temp[test_w], pred[test_w])
    # the trained power envelope: a held-out reading taken at a power outside it is a
    # prediction by extrapolation (e.g. idle after training at load), reported separately
    # (operating points: power averaged over envelope_window_s, so a brief dip in training does
    # not count as having visited its power)
    p_op = _moving_average(np.nan_to_num(grid.power, nan=0.0), cfg.envelope_window_s / grid.dt)
    p_lo, p_hi = np.percentile(p_op[:, :n_train], [0.5, 99.5], axis=1)
    margin = np.maximum(cfg.envelope_margin_w, cfg.envelope_margin_rel * (p_hi - p_lo))
    inside = (p_op >= (p_lo - margin)[:, None]) & (p_op <= (p_hi + margin)[:, None])
    with np.errstate(invalid="ignore"):
        covered = np.abs(err) <= Z95 * pred_sd
    stated = test_w & np.isfinite(pred_sd)  # held-out readings with a stated uncertainty
    hold_in = test_w & inside
    hold_out = test_w & ~inside
    rmse_in = _rms_rows(err, hold_in)
    rmse_out = _rms_rows(err, hold_out)
    sd_hold = _rms_rows(pred_sd, stated)
    cover = _rms_rows(covered.astype(float), stated) ** 2  # mean of a 0/1 indicator
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_out = np.where(test_w.any(1), hold_out.sum(1) / test_w.sum(1), np.nan)
    hold_env = ashrae_metrics(grid.temp[hold_in], pred[hold_in])
    hold_ext = ashrae_metrics(grid.temp[hold_out], pred[hold_out])
    extrapolation = None
    if hold_out.any():
        lo, hi = p_lo - margin, p_hi + margin
        ext_sd = pred_sd[hold_out & np.isfinite(pred_sd)]
        sd_txt = (
            f"its stated uncertainty is {float(np.sqrt(np.mean(ext_sd**2))):.1f} K (1 s.d., RMS)"
            if ext_sd.size
            else "no uncertainty could be stated"
        )
        extrapolation = (
            f"{100 * hold_out.sum() / max(test_w.sum(), 1):.0f} % of the held-out readings were "
            f"taken at powers outside the trained envelope (per GPU, the p0.5-p99.5 range of the "
            f"{cfg.envelope_window_s:g} s mean training power widened by max("
            f"{cfg.envelope_margin_w:g} W, {100 * cfg.envelope_margin_rel:g} %): lower bounds "
            f"{np.min(lo):.0f}-{np.max(lo):.0f} W, upper {np.min(hi):.0f}-{np.max(hi):.0f} W); "
            f"there the prediction extrapolates and {sd_txt}"
        )
    train = ashrae_metrics(
        grid.temp[:, :n_train][w_tr > 0], pred[:, :n_train][w_tr > 0], int(mask.sum())
    )
    throttled_s = grid.throttled.sum(1) * grid.dt
    gaps_s = grid.gap.sum(1) * grid.dt
    leak_slope, leak_se, leak_why = leak
    leak_ok = np.array([w == "" for w in leak_why])
    # the Dataset
    gpu = np.array(grid.gpu)

    def v(x, units, long, dims=("gpu",)):
        return (dims, np.asarray(x), {"units": units, "long_name": long})

    resistance_rep = np.where(ident_r, r_tot, np.nan)
    capacitance_rep = np.where(ident_c, cap, np.nan)
    data = {
        "resistance": v(resistance_rep, "K/W", "junction to inlet-coolant resistance R_f + R_s"),
        "resistance_se": v(np.where(ident_r, rel_se_r * r_tot, np.nan), "K/W", "standard error"),
        "resistance_fast": v(np.where(ident_r, r_f, np.nan), "K/W", "fast branch R_f"),
        "capacitance": v(capacitance_rep, "J/K", "die + cold-plate heat capacity C"),
        "capacitance_se": v(np.where(ident_c, rel_se_c * cap, np.nan), "J/K", "standard error"),
        "resistance_slow": v(np.where(slow & ident_r, r_s, np.nan), "K/W", "slow branch R_s"),
        "tau_slow": v(np.where(ident_r, tau_s, np.nan), "s", "slow branch time constant"),
        "conductance_temp_coeff": v(beta, "1/K", "relative conductance growth per K of rise"),
        "temp_intercept": v(icpt, "degC", "inlet temperature plus sensor offset"),
        "temp_intercept_se": v(se[:, 2], "K", "standard error"),
        "sensor_offset": v(offset, "K", "intercept minus the loop's median intercept"),
        "apparent_resistance": v(r_app, "K/W", "rise above the loop inlet per watt at p_ref"),
        "peer_excess": v(
            excess, "K", "steady temperature minus peers' median at 0 W and p_ref", ("gpu", "ref")
        ),
        "flow_share": v(flow_share, "1", "flow share within the loop, from the slow branch"),
        "leakage_slope": v(np.where(leak_ok, leak_slope, np.nan), "W/K", "dP/dT at constant work"),
        "leakage_slope_se": v(np.where(leak_ok, leak_se, np.nan), "W/K", "standard error"),
        "leakage_coeff": v(
            np.where(leak_ok, leak_slope / max(pri.leakage_at_reference, 1e-9), np.nan),
            "1/K",
            "alpha = dP/dT / leakage_at_reference (spec)",
        ),
        "model": v(np.array(model_name), "", "model structure chosen by BIC"),
        "holdout_rmse": v(per_gpu_rmse, "K", "held-out RMSE, predicted from power alone"),
        "train_rmse": v(per_gpu_train, "K", "training RMSE"),
        "holdout_rmse_envelope": v(rmse_in, "K", "held-out RMSE at powers inside training's"),
        "holdout_rmse_extrapolated": v(rmse_out, "K", "held-out RMSE at powers outside it"),
        "holdout_extrapolated_fraction": v(frac_out, "1", "share of held-out readings outside"),
        "holdout_coverage_95": v(cover, "1", "held-out readings inside the 95 % interval"),
        "holdout_prediction_sd": v(sd_hold, "K", "RMS s.d. of the held-out predictions"),
        "power_envelope": v(
            np.stack([p_lo - margin, p_hi + margin], 1),
            "W",
            "trained power envelope",
            ("gpu", "bound"),
        ),
        "residual_sd": v(np.sqrt(resid_var), "K", "training residual standard deviation"),
        "residual_acf": v(acf, "1", "residual autocorrelation", ("gpu", "lag")),
        "covariance_inflation": v(inflation, "1", "sandwich / Gauss-Newton variance of ln R_f"),
        "anomaly": v(anomaly, "", "departs from its peers"),
        "anomaly_reason": v(np.array(anomaly_reason, dtype=object).astype(str), "", "why"),
        "identifiable_resistance": v(ident_r, "", ""),
        "identifiable_capacitance": v(ident_c, "", ""),
        "unidentifiable_reason": v(np.array(["; ".join(r) for r in reasons]).astype(str), "", ""),
        "leakage_reason": v(np.array(leak_why).astype(str), "", ""),
        "power_p05": v(np.percentile(P_tr, 5, axis=1), "W", "5th percentile of training power"),
        "power_p95": v(np.percentile(P_tr, 95, axis=1), "W", "95th percentile of training power"),
        "throttled_seconds": v(throttled_s, "s", "thermally throttled time (excluded from fit)"),
        "gap_seconds": v(gaps_s, "s", "time without readings"),
        "theta": v(theta, "", "fitted parameter vector", ("gpu", "param")),
        "theta_mask": v(mask, "", "active parameters", ("gpu", "param")),
        "theta_cov": v(cov, "", "Laplace covariance", ("gpu", "param", "param2")),
        "loop_inlet": v(loop_inlet, "degC", "median intercept of the loop's GPUs", ("loop",)),
    }
    if hbm is not None:
        th_h = hbm["theta"]
        data["hbm_gain"] = v(np.exp(th_h[:, 0]), "K/W", "HBM rise per watt of package power")
        data["hbm_tau"] = v(np.exp(th_h[:, 0] + th_h[:, 1]), "s", "HBM time constant")
        data["hbm_intercept"] = v(th_h[:, 2], "degC", "HBM inlet plus offset")
    attrs = {
        "title": "twin calibration",
        "facility": getattr(spec, "name", ""),
        "train_fraction": cfg.train_fraction,
        "train_end": str(np.datetime64(int(grid.times[n_train - 1]), "ns")),
        "dt": cfg.dt,
        "p_ref": p_ref,
        "holdout_rmse_k": _fmt(hold["rmse_k"]) or float("nan"),
        "cv_rmse": _fmt(hold["cv_rmse"]) or float("nan"),
        "nmbe": _fmt(hold["nmbe"]) or float("nan"),
        "t0_ns": int(grid.t0_ns),
    }
    ds = xr.Dataset(
        data,
        coords={
            "gpu": ("gpu", gpu),
            "host": ("gpu", np.array(grid.host)),
            "loop": ("loop", np.array(loops)),
            "param": ("param", np.array(PARAMS)),
            "param2": ("param2", np.array(PARAMS)),
            "ref": ("ref", np.array(["0 W", "p_ref"])),
            "bound": ("bound", np.array(["low", "high"])),
            "lag": ("lag", np.array([1, 10, 60]) * cfg.dt, {"units": "s"}),
        },
        attrs=attrs,
    )
    gpus_json = []
    for i in range(g_n):
        gpus_json.append(
            {
                "gpu": str(gpu[i]),
                "host": grid.host[i],
                "model": model_name[i],
                "resistance_k_per_w": _fmt(resistance_rep[i], 5),
                "resistance_se_k_per_w": _fmt(rel_se_r[i] * r_tot[i], 5) if ident_r[i] else None,
                "capacitance_j_per_k": _fmt(capacitance_rep[i], 1),
                "capacitance_se_j_per_k": _fmt(rel_se_c[i] * cap[i], 1) if ident_c[i] else None,
                "resistance_slow_k_per_w": _fmt(r_s[i], 5) if slow[i] and ident_r[i] else None,
                "tau_slow_s": _fmt(tau_s[i], 1) if ident_r[i] else None,
                "conductance_temp_coeff_per_k": _fmt(beta[i], 5),
                "temp_intercept_c": _fmt(icpt[i], 2),
                "sensor_offset_k": _fmt(offset[i], 2),
                "apparent_resistance_k_per_w": _fmt(r_app[i], 5),
                "flow_share": _fmt(flow_share[i], 4),
                "leakage_slope_w_per_k": _fmt(leak_slope[i], 3) if leak_ok[i] else None,
                "hbm_gain_k_per_w": _fmt(float(np.exp(hbm["theta"][i, 0])), 5) if hbm else None,
                "holdout_rmse_k": _fmt(per_gpu_rmse[i], 3),
                "train_rmse_k": _fmt(per_gpu_train[i], 3),
                "holdout_rmse_envelope_k": _fmt(rmse_in[i], 3),
                "holdout_rmse_extrapolated_k": _fmt(rmse_out[i], 3),
                "holdout_extrapolated_fraction": _fmt(frac_out[i], 3),
                "holdout_prediction_sd_k": _fmt(sd_hold[i], 3),
                "holdout_coverage_95": _fmt(cover[i], 3),
                "residual_acf_lag1": _fmt(acf[i, 0], 3),
                "throttled_seconds": float(throttled_s[i]),
                "anomaly": bool(anomaly[i]),
                "anomaly_reason": anomaly_reason[i] or None,
                "unidentifiable": "; ".join(reasons[i]) or None,
                "leakage_unidentifiable": leak_why[i] or None,
            }
        )
    summary = {
        "facility": getattr(spec, "name", ""),
        "gpus": gpus_json,
        "n_gpus": g_n,
        "train_fraction": cfg.train_fraction,
        "steps": int(n),
        "dt_s": cfg.dt,
        "holdout_rmse_k": _fmt(hold["rmse_k"], 4),
        "cv_rmse": _fmt(hold["cv_rmse"], 4),
        "nmbe": _fmt(hold["nmbe"], 4),
        "holdout_samples": hold["n"],
        "holdout_rmse_envelope_k": _fmt(hold_env["rmse_k"], 4),
        "cv_rmse_envelope": _fmt(hold_env["cv_rmse"], 4),
        "nmbe_envelope": _fmt(hold_env["nmbe"], 4),
        "holdout_rmse_extrapolated_k": _fmt(hold_ext["rmse_k"], 4),
        "holdout_extrapolated_samples": hold_ext["n"],
        "holdout_coverage_95": _fmt(float(np.mean(covered[stated])), 4) if stated.any() else None,
        "extrapolation": extrapolation,
        "train_rmse_k": _fmt(train["rmse_k"], 4),
        "train_cv_rmse": _fmt(train["cv_rmse"], 4),
        "train_nmbe": _fmt(train["nmbe"], 4),
        "loops": [
            {"loop": name, "inlet_c": _fmt(loop_inlet[j], 2)} for j, name in enumerate(loops)
        ],
        "anomalies": [g["gpu"] for g in gpus_json if g["anomaly"]],
        "models": {m: int(sum(1 for x in model_name if x == m)) for m in bic},
    }
    return summary, ds


# ------------------------------------------------------------------------------ plot
def plot_fit(result: CalibrationResult, path: str | Path) -> Path:
    """Measured vs predicted die temperature for the best and worst GPU (held-out RMSE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rmse = result.params["holdout_rmse"].values
    if not np.isfinite(rmse).any():
        rmse = result.params["train_rmse"].values
    order = np.argsort(np.where(np.isfinite(rmse), rmse, np.inf))
    picks = [("best", int(order[0]))]
    finite = order[np.isfinite(rmse[order])]
    if finite.size > 1:
        picks.append(("worst", int(finite[-1])))
    g = result.grid
    t = np.arange(g.n_steps) * g.dt
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 3.6 * len(picks)), squeeze=False)
    for ax, (label, i) in zip(axes[:, 0], picks, strict=True):
        ok = np.isfinite(g.temp[i])
        ax.plot(t[ok], g.temp[i][ok], ".", ms=2, color="0.4", label="measured (1 °C steps)")
        ax.plot(t, result.prediction[i], "-", lw=1.2, color="C3", label="predicted from power")
        band = Z95 * result.prediction_sd[i]
        ax.fill_between(
            t, result.prediction[i] - band, result.prediction[i] + band, color="C3", alpha=0.15,
            lw=0, label="95 % interval (parameters + reading noise)",
        )  # fmt: skip
        ax.axvline(t[result.train_steps - 1], color="k", ls="--", lw=0.8)
        ax.set_ylabel("die temperature [°C]")
        ax.set_title(
            f"{label}: {g.gpu[i]}  held-out RMSE {rmse[i]:.2f} K  "
            f"({result.params['model'].values[i]})"
        )
        ax2 = ax.twinx()
        ax2.plot(t, g.power[i], "-", lw=0.5, color="C0", alpha=0.4)
        ax2.set_ylabel("power [W]", color="C0")
        ax.legend(loc="lower left", fontsize=8)
    axes[-1, 0].set_xlabel("time [s]  (dashed: end of training)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_params(path: str | Path) -> xr.Dataset:
    """Read a calibration written by :meth:`CalibrationResult.write`."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            "--params", str(path), "an existing calibration file (twin calibrate --out)"
        )
    ds = xr.load_dataset(path)
    for need in ("theta", "theta_mask", "theta_cov"):
        if need not in ds:
            raise SpecError(f"{path}:{need}", "<missing>", "a twin calibration netCDF")
    return ds


def summary_json(result: CalibrationResult) -> str:
    return json.dumps(result.summary, allow_nan=False, default=str)
