r"""Live state estimation: an extended Kalman filter over the calibrated GPU model, in JAX.

State of GPU :math:`i` (``(G, 3)``): the fast and slow branch rises :math:`x_f, x_s` [K] of the
model of :mod:`twin.calibration` and :math:`m = \ln(R_f/R_{f,cal})`, the log-drift of the die
resistance (a failing thermal interface, a blocked cold plate).  State of loop :math:`\ell`:
:math:`d_\ell` [K], the drift of its inlet temperature (an approach that grows: fouling, a pump or
valve losing flow).  Both drifts are random walks:

.. math::
   x_{k} = f(x_{k-1}, P_k; R_f e^{m}),\quad m_k = m_{k-1} + w_m,\quad
   d_{\ell,k} = d_{\ell,k-1} + w_d,\quad
   y_{i,k} = T_{0,i} + d_{\ell(i),k} + x_{f,i,k} + x_{s,i,k} + v

with :math:`f` the exact exponential step of the calibration model, its Jacobian written out
elementwise (equal to ``jax.jacfwd`` of it, which the tests check) and :math:`\operatorname{var} v = \sigma_i^2 + 1/12 +
\sigma_{model}^2`.  The loop drift is updated first from the loop's mean innovation, then each
GPU from its innovation less that correction (a decoupled, Schmidt-style update: cross
covariances between loop and GPU states are not carried, which keeps the update O(G)).

The drift :math:`m` is only updated while the GPU's power lies within the calibration's trained
power envelope (``power_envelope``): outside it a misfit is extrapolation error of the model,
not drift.  Neither :math:`m` nor :math:`d_\ell` is updated or alarmed on during the first
``warmup_s`` (the GPU states converging from their initial guess is not drift); a GPU without a
first reading starts with a variance that spans idle to the steady state of its first power.

Anomalies (raised when a condition holds for ``hold_s`` seconds):

* ``resistance_drift``: :math:`e^{\hat m - m_b}-1 \ge` ``drift_threshold`` and
  :math:`(\hat m - m_b)/\sqrt{P_{mm}} \ge` ``z_threshold`` (departs from its own history).
  :math:`m_b = 0` where the calibration identified the resistance; elsewhere the filter first
  learns it and :math:`m_b` is :math:`\hat m` after ``learn_s`` of tracking inside the calibrated
  power range, before which the alarm is not armed;
* ``approach_drift``: :math:`|\hat d_\ell| \ge` ``approach_threshold_k`` at ``z_threshold``.

A GPU that reads hotter than its peers at equal power (kind ``peer_excess``) is found by the one
detector of :mod:`twin.calibration.anomaly`, on the readings the filter tracks
(:func:`peer_anomalies`) and, as ``twin calibrate`` found it, on the calibration window
(:func:`calibration_anomalies`): the CLI, the filter and the dashboard flag the same GPUs on the
same data.

:func:`forecast` propagates the state (and its covariance) ``horizon_s`` ahead;
:func:`rolling_forecast` runs the filter over a calibrated record, forecasting as it goes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from twin.calibration.anomaly import PeerAnomalies, detect_anomalies
from twin.calibration.config import CalibrationConfig
from twin.io.telemetry import Grid, fleet_hosts
from twin.units import SpecError

if TYPE_CHECKING:
    from collections.abc import Callable

    from twin.calibration import CalibrationResult


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Noise levels and alarm thresholds of :func:`assimilate`."""

    q_fast: float = 0.02**2  # process noise of the fast rise [K^2/s]
    q_slow: float = 0.02**2  # [K^2/s]
    q_drift: float = 0.001**2  # random walk of ln R_f [1/s]
    q_loop: float = 0.01**2  # random walk of the loop inlet drift [K^2/s]
    model_sd: float = 0.1  # model error added to the reading noise [K]
    drift_threshold: float = 0.10  # relative resistance rise that is an anomaly
    z_threshold: float = 5.0
    approach_threshold_k: float = 2.0
    hold_s: float = 60.0  # a condition must hold this long
    warmup_s: float = 120.0  # drifts are not updated nor alarmed on before this [s]
    # a GPU whose resistance the calibration did not identify first learns it: its drift is
    # measured from the value m has after this much tracking inside the calibrated power range
    learn_s: float = 1800.0
    # the live peer comparison (peer_anomalies) looks at this much of the latest readings [s]
    peer_history_s: float = 1800.0


class FilterModel(NamedTuple):
    """Calibrated per-GPU constants (arrays over GPUs) and the GPU -> loop map."""

    r_f: jax.Array  # [K/W]
    cap: jax.Array  # [J/K]
    r_s: jax.Array  # [K/W]
    tau_s: jax.Array  # [s]
    beta: jax.Array  # [1/K]
    intercept: jax.Array  # [degC]
    meas_var: jax.Array  # [K^2]
    m_var0: jax.Array  # prior variance of m (calibration uncertainty of ln R_f)
    loop: jax.Array  # (G,) int
    n_loops: int
    p_lo: jax.Array | None = None  # calibrated power range [W]: m is only updated inside it
    p_hi: jax.Array | None = None
    r_ok: np.ndarray | None = None  # (G,) bool: the calibration identified the resistance


class FilterState(NamedTuple):
    x: jax.Array  # (G, 3): x_f, x_s, m
    P: jax.Array  # (G, 3, 3)
    d: jax.Array  # (L,)
    Pd: jax.Array  # (L,)
    t: jax.Array  # seconds since the filter started
    hold_drift: jax.Array  # (G,) seconds the drift condition has held
    hold_loop: jax.Array  # (L,)
    first_drift: jax.Array  # (G,) time of the first alarm [s], NaN if none
    first_loop: jax.Array  # (L,)
    m_base: jax.Array  # (G,) the m drift is measured from (0, or the learned value)
    learned: jax.Array  # (G,) seconds tracked inside the calibrated power range


def model_from_calibration(params: xr.Dataset, gpus: list[str] | None = None) -> FilterModel:
    """Build the filter's constants from a calibration Dataset (``theta``, masks, residuals).

    ``gpus`` selects and orders GPUs by name; an unknown name raises :class:`SpecError`.
    """
    names = [str(g) for g in params["gpu"].values]
    if gpus is None:
        idx = np.arange(len(names))
    else:
        pos = {g: i for i, g in enumerate(names)}
        missing = [g for g in gpus if g not in pos]
        if missing:
            raise SpecError(
                "--telemetry gpu",
                missing[0],
                f"a GPU of the calibration ({len(names)} GPUs, e.g. {names[:3]}); recalibrate",
            )
        idx = np.array([pos[g] for g in gpus])
    th = params["theta"].values[idx]
    mask = params["theta_mask"].values[idx].astype(bool)
    cov = params["theta_cov"].values[idx]
    sd = params["residual_sd"].values[idx]
    hosts = [str(h) for h in params["host"].values[idx]]
    loops = sorted(set(hosts))
    lpos = {h: i for i, h in enumerate(loops)}
    r_s = np.where(mask[:, 4], np.exp(th[:, 4]), 0.0)
    # the calibrated power range: the calibration's trained envelope
    # (twin/calibration/validation.py); files written before it existed give their training
    # power's p05-p95, +/- 10 %
    env = None
    if "power_envelope" in params:
        env = params["power_envelope"].values[idx]
    elif "power_p05" in params:
        env = np.stack(
            [0.9 * params["power_p05"].values[idx], 1.1 * params["power_p95"].values[idx]], 1
        )
    return FilterModel(
        r_f=jnp.asarray(np.exp(th[:, 0])),
        cap=jnp.asarray(np.exp(th[:, 1])),
        r_s=jnp.asarray(r_s),
        tau_s=jnp.asarray(np.exp(th[:, 5])),
        beta=jnp.asarray(np.where(mask[:, 7], th[:, 7], 0.0)),
        intercept=jnp.asarray(th[:, 2]),
        meas_var=jnp.asarray(np.nan_to_num(sd, nan=0.4) ** 2 + 1.0 / 12.0),
        m_var0=jnp.asarray(np.clip(np.nan_to_num(cov[:, 0, 0], nan=1e-4), 1e-6, 0.04)),
        loop=jnp.asarray(np.array([lpos[h] for h in hosts], dtype=np.int64)),
        n_loops=len(loops),
        p_lo=None if env is None else jnp.asarray(env[:, 0]),
        p_hi=None if env is None else jnp.asarray(env[:, 1]),
        r_ok=(
            params["identifiable_resistance"].values[idx].astype(bool)
            if "identifiable_resistance" in params
            else None
        ),
    )


def calibration_anomalies(params: xr.Dataset, gpus: list[str] | None = None) -> list[dict]:
    """The calibration's peer anomalies (``params.anomaly``) as records of kind ``peer_excess``.

    A GPU that ran hot against its peers in the calibration's record is reported when tracking
    starts (``since``: that record's start, ``calibration_end``: its training end); the live
    filter then watches for drift from that state.
    """
    t0 = params.attrs.get("t0_ns")
    since = str(np.datetime64(int(t0), "ns")) if t0 is not None else ""
    until = str(params.attrs.get("train_end", ""))
    found = PeerAnomalies.from_dataset(params)
    keep = set(gpus) if gpus is not None else None
    return [{**r, "calibration_end": until} for r in found.records(since, keep)]


def peer_anomalies(
    grid: Grid, resistance_k_per_w: float, config: CalibrationConfig | None = None
) -> list[dict]:
    """GPUs of ``grid`` (the readings being tracked) that read hotter than their peers at equal
    power: :func:`twin.calibration.anomaly.detect_anomalies`, as records of kind
    ``peer_excess`` (``since``: the start of ``grid``).

    ``resistance_k_per_w`` is the nominal junction-to-coolant resistance the calibration used
    (its params attribute ``anomaly_resistance_k_per_w``, the spec's); ``config`` a
    :class:`twin.calibration.CalibrationConfig` (its defaults where None).
    """
    found = detect_anomalies(grid, resistance_k_per_w, config)
    return found.records(str(np.datetime64(int(grid.t0_ns), "ns")))


def anomaly_resistance(params: xr.Dataset, default: float | None = None) -> float:
    """The nominal resistance [K/W] ``twin calibrate`` compared peers along (params attribute
    ``anomaly_resistance_k_per_w``), else ``default``; :class:`SpecError` if neither."""
    r = params.attrs.get("anomaly_resistance_k_per_w", default)
    if r is None:
        raise SpecError(
            "params:anomaly_resistance_k_per_w", "<missing>", "a calibration of this version"
        )
    return float(r)


def _gpu_step(x, p, r_f, cap, r_s, tau_s, beta, dt):
    """Exact exponential step of the calibration model with R_f scaled by exp(m)."""
    xf, xs, m = x[0], x[1], x[2]
    rf = r_f * jnp.exp(m)
    h = 1.0 / jnp.maximum(1.0 + beta * (xf + xs), 0.2)
    af = jnp.exp(-dt / (rf * cap * h))
    as_ = jnp.exp(-dt / (tau_s * h))
    return jnp.stack([af * xf + (1 - af) * rf * h * p, as_ * xs + (1 - as_) * r_s * h * p, m])


_step_v = jax.vmap(_gpu_step, in_axes=(0, 0, 0, 0, 0, 0, 0, None))
_jac_v = jax.vmap(jax.jacfwd(_gpu_step), in_axes=(0, 0, 0, 0, 0, 0, 0, None))


def init_state(
    model: FilterModel, power0: np.ndarray, temp0: np.ndarray | None = None
) -> FilterState:
    """Steady state at ``power0`` [W]; the first readings ``temp0`` [degC] set the level."""
    p = jnp.asarray(power0)
    r_t = model.r_f + model.r_s
    disc = jnp.maximum(1.0 + 4.0 * model.beta * r_t * p, 0.04)
    rise = 2.0 * r_t * p / (1.0 + jnp.sqrt(disc))
    share = model.r_f / r_t
    xf, xs = rise * share, rise * (1 - share)
    # a GPU without a first reading may be anywhere between idle and this steady state
    seen = jnp.zeros(p.shape, bool)
    if temp0 is not None:
        t0 = jnp.asarray(temp0)
        seen = jnp.isfinite(t0)
        dev = jnp.where(seen, t0 - model.intercept - rise, 0.0)
        xf = xf + dev
    g = p.shape[0]
    P = jnp.zeros((g, 3, 3))
    var_f = jnp.where(seen, 1.0, 1.0 + (0.5 * xf) ** 2)
    var_s = jnp.where(seen, 1.0, 1.0 + (0.5 * xs) ** 2)
    P = P.at[:, 0, 0].set(var_f).at[:, 1, 1].set(var_s).at[:, 2, 2].set(model.m_var0)
    L = model.n_loops
    return FilterState(
        x=jnp.stack([xf, xs, jnp.zeros(g)], axis=1),
        P=P,
        d=jnp.zeros(L),
        Pd=jnp.full(L, 0.25),
        t=jnp.asarray(0.0),
        hold_drift=jnp.zeros(g),
        hold_loop=jnp.zeros(L),
        first_drift=jnp.full(g, jnp.nan),
        first_loop=jnp.full(L, jnp.nan),
        m_base=jnp.zeros(g),
        learned=jnp.zeros(g),
    )


def _propagate(x, P, p, model: FilterModel, dt: float, q: tuple[float, float, float]):
    """Exact step of every GPU and its covariance ``F P F^T + Q``, elementwise.

    The Jacobian ``F`` of :func:`_gpu_step` is written out (it equals ``jax.jacfwd`` of it,
    checked in tests/twin/test_estimate.py): a batched 3 x 3 ``einsum`` over 300,000 GPUs is
    dominated by small-matrix overhead on CPU, the fused elementwise form is not.
    """
    xf, xs, m = x[:, 0], x[:, 1], x[:, 2]
    rf = model.r_f * jnp.exp(m)
    u = 1.0 + model.beta * (xf + xs)
    h = 1.0 / jnp.maximum(u, 0.2)
    dh_ds = jnp.where(u > 0.2, -model.beta * h * h, 0.0)
    ef = dt / (rf * model.cap * h)
    es = dt / (model.tau_s * h)
    af = jnp.exp(-ef)
    as_ = jnp.exp(-es)
    tf = rf * h * p
    ts = model.r_s * h * p
    # derivatives through h (both branches) and through m (fast branch)
    dxf_dh = af * ef / h * (xf - tf) + (1.0 - af) * rf * p
    dxs_dh = as_ * es / h * (xs - ts) + (1.0 - as_) * model.r_s * p
    f00 = af + dxf_dh * dh_ds
    f01 = dxf_dh * dh_ds
    f02 = af * ef * (xf - tf) + (1.0 - af) * tf
    f10 = dxs_dh * dh_ds
    f11 = as_ + dxs_dh * dh_ds
    x_new = jnp.stack([af * xf + (1.0 - af) * tf, as_ * xs + (1.0 - as_) * ts, m], axis=1)
    p00, p01, p02 = P[:, 0, 0], P[:, 0, 1], P[:, 0, 2]
    p11, p12, p22 = P[:, 1, 1], P[:, 1, 2], P[:, 2, 2]
    # rows of F P (F has rows (f00, f01, f02), (f10, f11, 0), (0, 0, 1))
    a0 = f00 * p00 + f01 * p01 + f02 * p02
    a1 = f00 * p01 + f01 * p11 + f02 * p12
    a2 = f00 * p02 + f01 * p12 + f02 * p22
    b0 = f10 * p00 + f11 * p01
    b1 = f10 * p01 + f11 * p11
    b2 = f10 * p02 + f11 * p12
    n00 = a0 * f00 + a1 * f01 + a2 * f02 + q[0] * dt
    n01 = a0 * f10 + a1 * f11
    n02 = a2
    n11 = b0 * f10 + b1 * f11 + q[1] * dt
    n12 = b2
    n22 = p22 + q[2] * dt
    return x_new, (n00, n01, n02, n11, n12, n22)


def _sym(e):
    n00, n01, n02, n11, n12, n22 = e
    return jnp.stack(
        [
            jnp.stack([n00, n01, n02], axis=1),
            jnp.stack([n01, n11, n12], axis=1),
            jnp.stack([n02, n12, n22], axis=1),
        ],
        axis=1,
    )


def filter_step(
    model: FilterModel,
    state: FilterState,
    power: jax.Array,
    temp: jax.Array,
    dt: float,
    cfg: FilterConfig,
) -> FilterState:
    """One predict + update for every GPU: ``power`` (G,) [W] mean over the step, ``temp`` (G,)
    readings [degC] at the end of the step (NaN: no reading)."""
    x, (p00, p01, p02, p11, p12, p22) = _propagate(
        state.x, state.P, power, model, dt, (cfg.q_fast, cfg.q_slow, cfg.q_drift)
    )
    d = state.d
    Pd = state.Pd + cfg.q_loop * dt
    t = state.t + dt
    # warm-up: the drift states (m, d) are neither updated nor alarmed on until the GPU
    # states have converged from their initial guess (an initial misfit is not drift)
    armed = t > cfg.warmup_s
    have = jnp.isfinite(temp)
    y = jnp.where(have, temp, 0.0)
    rvar = model.meas_var + cfg.model_sd**2
    pred = model.intercept + d[model.loop] + x[:, 0] + x[:, 1]
    nu = jnp.where(have, y - pred, 0.0)
    ph0, ph1, ph2 = p00 + p01, p01 + p11, p02 + p12  # P H^T, H = [1, 1, 0]
    S = ph0 + ph1 + rvar
    # loop drift from the loop's mean innovation
    cnt = jax.ops.segment_sum(have.astype(x.dtype), model.loop, model.n_loops)
    nu_sum = jax.ops.segment_sum(nu, model.loop, model.n_loops)
    s_sum = jax.ops.segment_sum(jnp.where(have, S, 0.0), model.loop, model.n_loops)
    nu_bar = nu_sum / jnp.maximum(cnt, 1.0)
    s_bar = s_sum / jnp.maximum(cnt, 1.0) ** 2
    k_d = jnp.where((cnt > 0) & armed, Pd / (Pd + jnp.maximum(s_bar, 1e-12)), 0.0)
    d = d + k_d * nu_bar
    Pd = (1 - k_d) * Pd
    nu = jnp.where(have, nu - (k_d * nu_bar)[model.loop], 0.0)
    # GPU update
    g = jnp.where(have, 1.0 / S, 0.0)
    k0, k1, k2 = ph0 * g, ph1 * g, ph2 * g
    gate_m = armed
    if model.p_lo is not None:
        # outside the calibrated power range a misfit is extrapolation error, not drift
        gate_m = gate_m & (power >= model.p_lo) & (power <= model.p_hi)
    k2 = jnp.where(gate_m, k2, 0.0)
    x = x + jnp.stack([k0, k1, k2], axis=1) * nu[:, None]
    # Joseph-free update of the symmetric entries, P - K (P H^T)^T, symmetrised
    n00 = p00 - k0 * ph0
    n01 = p01 - 0.5 * (k0 * ph1 + k1 * ph0)
    n02 = p02 - 0.5 * (k0 * ph2 + k2 * ph0)
    n11 = p11 - k1 * ph1
    n12 = p12 - 0.5 * (k1 * ph2 + k2 * ph1)
    n22 = p22 - k2 * ph2
    P = _sym((n00, n01, n02, n11, n12, n22))
    # alarms with persistence, on m's departure from its baseline: 0 for a calibrated
    # resistance, else the value learned over the first learn_s inside the power range
    m = x[:, 2]
    learned = state.learned + jnp.where(gate_m, dt, 0.0)
    if model.r_ok is None:
        active = jnp.ones(m.shape, bool)
        m_base = state.m_base
    else:
        done = learned >= cfg.learn_s
        m_base = jnp.where(~model.r_ok & done & (state.learned < cfg.learn_s), m, state.m_base)
        active = model.r_ok | done
    dm = m - m_base
    z = dm / jnp.sqrt(jnp.maximum(n22, 1e-12))
    cond = (jnp.expm1(dm) >= cfg.drift_threshold) & (z >= cfg.z_threshold) & armed & active
    hold = jnp.where(cond, state.hold_drift + dt, 0.0)
    first = jnp.where(jnp.isnan(state.first_drift) & (hold >= cfg.hold_s), t, state.first_drift)
    zd = d / jnp.sqrt(jnp.maximum(Pd, 1e-12))
    cond_l = (jnp.abs(d) >= cfg.approach_threshold_k) & (jnp.abs(zd) >= cfg.z_threshold) & armed
    hold_l = jnp.where(cond_l, state.hold_loop + dt, 0.0)
    first_l = jnp.where(jnp.isnan(state.first_loop) & (hold_l >= cfg.hold_s), t, state.first_loop)
    return FilterState(x, P, d, Pd, t, hold, hold_l, first, first_l, m_base, learned)


@functools.partial(jax.jit, static_argnames=("n_loops", "dt", "cfg"))
def _filter_step_jit(model, state, power, temp, n_loops, dt, cfg):
    return filter_step(model._replace(n_loops=n_loops), state, power, temp, dt, cfg)


def make_step(model: FilterModel, dt: float = 1.0, cfg: FilterConfig | None = None):
    """A jitted ``step(state, power, temp) -> state`` for the whole fleet.

    The model's arrays are arguments of one compiled function (not constants folded into a
    new program per model), so a recalibrated fleet of the same size reuses the compilation.
    """
    cfg = cfg or FilterConfig()
    dt = float(dt)
    arrays = model._replace(n_loops=None)
    n_loops = int(model.n_loops)
    return lambda s, p, y: _filter_step_jit(arrays, s, p, y, n_loops=n_loops, dt=dt, cfg=cfg)


def assimilate(
    model: FilterModel,
    state: FilterState,
    power: np.ndarray,
    temp: np.ndarray,
    dt: float = 1.0,
    cfg: FilterConfig | None = None,
    record_every: int = 60,
) -> tuple[FilterState, dict[str, np.ndarray]]:
    """Assimilate a batch (``power``, ``temp`` of shape ``(steps, G)``); ``lax.scan`` inside.

    Returns the new state and a trace every ``record_every`` steps: ``t``, resistance
    multiplier ``r_mult`` (G), loop drift ``d`` (L).
    """
    cfg = cfg or FilterConfig()
    fn = _assimilate_jit(model, cfg, float(dt), int(record_every))
    n = power.shape[0]
    n_rec = n // record_every
    state, rec = fn(
        state, jnp.asarray(power[: n_rec * record_every]), jnp.asarray(temp[: n_rec * record_every])
    )
    # the remainder, if any
    if n_rec * record_every < n:
        step = make_step(model, dt, cfg)
        for k in range(n_rec * record_every, n):
            state = step(state, jnp.asarray(power[k]), jnp.asarray(temp[k]))
    trace = {k: np.asarray(v) for k, v in rec.items()}
    return state, trace


_ASSIM_CACHE: dict = {}


def _assimilate_jit(model: FilterModel, cfg: FilterConfig, dt: float, every: int):
    key = (id(model), cfg, dt, every)
    if key in _ASSIM_CACHE:
        return _ASSIM_CACHE[key]

    def run(state, power, temp):
        g = power.shape[1]
        p = power.reshape(-1, every, g)
        y = temp.reshape(-1, every, g)

        def outer(s, py):
            def inner(s2, pk):
                return filter_step(model, s2, pk[0], pk[1], dt, cfg), None

            s, _ = jax.lax.scan(inner, s, (py[0], py[1]))
            return s, {"t": s.t, "r_mult": jnp.exp(s.x[:, 2]), "d": s.d}

        return jax.lax.scan(outer, state, (p, y))

    fn = jax.jit(run)
    _ASSIM_CACHE.clear()
    _ASSIM_CACHE[key] = fn
    return fn


def resistance_estimate(model: FilterModel, state: FilterState) -> np.ndarray:
    """Current junction-to-inlet resistance estimate [K/W]: R_f e^m + R_s."""
    return np.asarray(model.r_f * jnp.exp(state.x[:, 2]) + model.r_s)


def anomalies(
    model: FilterModel,
    state: FilterState,
    gpus: list[str],
    loops: list[str],
    cfg: FilterConfig | None = None,
    t0_ns: int = 0,
    clock: Callable[[float], int] | None = None,
) -> list[dict]:
    """Current drift anomalies as records (``kind``, ``gpu``/``loop``, values, time); GPUs hot
    against their peers: :func:`peer_anomalies`.  ``clock`` maps the filter's seconds to a time
    [ns] (:meth:`Grid.time_at`, which skips a grid's cuts); default ``t0_ns`` plus them."""
    r_hat = resistance_estimate(model, state)
    ok = np.ones(len(gpus), bool) if model.r_ok is None else np.asarray(model.r_ok, bool)

    def record(kind: str, where: tuple[str, str], t: float, **values: object) -> dict:
        ns = clock(t) if clock is not None else t0_ns + t * 1e9
        since = str(np.datetime64(int(ns), "ns"))
        return {"kind": kind, where[0]: where[1], "since": since, **values}

    return [
        *_drift_records(model, state, gpus, r_hat, ok, record),
        *(
            record("approach_drift", ("loop", loops[j]), float(t), inlet_drift_k=float(d))
            for j, (t, d) in enumerate(
                zip(np.asarray(state.first_loop), np.asarray(state.d), strict=True)
            )
            if np.isfinite(t)
        ),
    ]


def _drift_records(model, state, gpus, r_hat, ok, record) -> list[dict]:
    """GPUs whose resistance drifted from its calibrated (or learned) baseline."""
    r_cal = np.asarray(model.r_f + model.r_s)
    m, m_base = np.asarray(state.x[:, 2]), np.asarray(state.m_base)
    sd_m = np.sqrt(np.asarray(state.P[:, 2, 2]))
    first = np.asarray(state.first_drift)
    return [
        record(
            "resistance_drift",
            ("gpu", gpus[i]),
            float(first[i]),
            resistance_k_per_w=float(r_hat[i]),
            calibrated_k_per_w=float(r_cal[i]),
            baseline_k_per_w=float(model.r_f[i] * math.exp(m_base[i]) + model.r_s[i]),
            baseline="calibration" if ok[i] else "learned while tracking",
            change=float(math.expm1(m[i] - m_base[i])),
            z=float((m[i] - m_base[i]) / max(sd_m[i], 1e-12)),
        )
        for i in np.flatnonzero(np.isfinite(first))
    ]


def forecast(
    model: FilterModel,
    state: FilterState,
    power: np.ndarray | None = None,
    horizon_s: float = 60.0,
    dt: float = 1.0,
    last_power: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Die temperature [degC] and its standard deviation [K] ``horizon_s`` ahead for every GPU.

    ``power`` ``(steps, G)`` is the planned power; ``None`` holds ``last_power`` (the latest
    reading).  The covariance is propagated with the same Jacobians as the filter.
    """
    n = int(round(horizon_s / dt))
    if power is None:
        if last_power is None:
            raise SpecError("power", None, "a power schedule or the last power reading")
        power = np.tile(np.asarray(last_power)[None, :], (n, 1))
    if power.shape[0] < n:
        raise SpecError("power", power.shape, f"at least {n} steps of power")
    cfg = FilterConfig()
    q = (cfg.q_fast, cfg.q_slow, cfg.q_drift)

    def body(c, p):
        x, P = c
        x, e = _propagate(x, P, p, model, dt, q)
        return (x, _sym(e)), None

    (x, P), _ = jax.lax.scan(body, (state.x, state.P), jnp.asarray(power[:n]))
    temp = model.intercept + state.d[model.loop] + x[:, 0] + x[:, 1]
    var = P[:, 0, 0] + P[:, 1, 1] + 2 * P[:, 0, 1] + state.Pd[model.loop]
    return np.asarray(temp), np.sqrt(np.asarray(var))


def grid_arrays(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, G)`` power and temperature arrays of a :class:`Grid` for :func:`assimilate`."""
    return np.nan_to_num(grid.power, nan=0.0).T.copy(), grid.temp.T.copy()


class RollingForecast(NamedTuple):
    """Forecasts of :func:`rolling_forecast`: one row per origin, one column per GPU."""

    time: np.ndarray  # (K,) time each forecast is for, ns since the epoch (int64)
    gpu: list[str]  # (G,) GPU names
    temp: np.ndarray  # (K, G) forecast die temperature [degC]
    sd: np.ndarray  # (K, G) its standard deviation [K]
    flags: list[dict]  # :func:`anomalies` at the end of the record, and :func:`peer_anomalies`


def rolling_forecast(
    result: CalibrationResult, horizon_s: float = 60.0, every_s: float = 30.0
) -> RollingForecast:
    """The live filter run over a calibrated record, forecasting as it goes.

    The training part of ``result.grid`` is assimilated; then every ``every_s`` of the held-out
    part a ``horizon_s``-ahead :func:`forecast` is made from the measured power before the
    readings up to the next origin are assimilated; the rest is assimilated at the end, and the
    anomalies of the final state, with the peer anomalies of the whole record, are returned with
    the forecasts.
    """
    grid = result.grid
    dt = grid.dt
    model = model_from_calibration(result.params, list(grid.gpu))
    power, temp = grid_arrays(grid)
    n, h, every = power.shape[0], int(round(horizon_s / dt)), max(1, int(round(every_s / dt)))
    state = init_state(model, power[0], temp[0])
    train = result.train_steps
    state, _ = assimilate(model, state, power[:train], temp[:train], dt)
    times, temps, sds = [], [], []
    k = train
    while k + h <= n:
        fc, sd = forecast(model, state, power[k : k + h], horizon_s, dt)
        times.append(int(grid.times[k + h - 1]))
        temps.append(fc)
        sds.append(sd)
        state, _ = assimilate(
            model, state, power[k : k + every], temp[k : k + every], dt, record_every=every
        )
        k += every
    if k < n:
        state, _ = assimilate(model, state, power[k:], temp[k:], dt, record_every=n - k)
    loops, _ = fleet_hosts(grid)
    flags = anomalies(model, state, list(grid.gpu), loops, clock=grid.time_at)
    flags += peer_anomalies(grid, anomaly_resistance(result.params))
    g = len(grid.gpu)
    return RollingForecast(
        np.array(times, dtype=np.int64),
        list(grid.gpu),
        np.array(temps, dtype=float).reshape(-1, g),
        np.array(sds, dtype=float).reshape(-1, g),
        flags,
    )
