"""Setpoint optimization on the steady twin: L-BFGS-B over the FWS supply of every building and
the TCS supply and pump speed of every CDU, then repair of the temperature limits.

The optimizer's variables are the FWS supply [degC] (B,), the CDU approach [K] (N,) and the pump
speed (N,) (:func:`_pack`, :func:`_unpack`); the objective is the weighted steady facility power
relative to that at the starting setpoints plus a quadratic penalty on GPU and HBM temperatures
over their limits (:func:`_objective`).
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from physics import facility as F
from twin.placement.steady import Steady, evaluate, steady_state, with_setpoints
from twin.placement.topology import Topology
from twin.units import ZERO_CELSIUS_K

#: Bounds of the twin's setpoints: FWS >= 15 degC and TCS >= 20 degC keep the liquid above the
#: data-hall dew point (ASHRAE recommended dew point <= 15 degC); upper bounds W40+ class.
FWS_BOUNDS_C = (15.0, 42.0)
TCS_BOUNDS_C = (20.0, 47.0)
CDU_APPROACH_MIN_K = 1.0
PUMP_BOUNDS = (0.5, 1.0)
#: Distance below the temperature limits that the repair step leaves [K].
REPAIR_BUFFER_K = 0.1
#: Largest decrease of a building's FWS supply setpoint per hour [K/h] (a reset ramp), and per
#: re-optimization when setpoints are re-optimized less often than hourly. The
#: steady model does not see the heat stored in the FWS mains (about 4.2 MJ/K per m^3): a step
#: down of several K is pulled down by the trim chiller, which holds the new setpoint at once,
#: in the first epoch after the change. At 1 K/h the dry coolers' spare capacity does it.
#: The repair step (temperature limits) is not ramped.
FWS_RAMP_DOWN_K_PER_H = 1.0


def _bounds(p, fws_floor_c=None):
    """Box bounds of the optimizer's variables (FWS degC, CDU approach K, pump speed);
    ``fws_floor_c`` (B,) raises the FWS lower bound per building (the ramp limit)."""
    fws_lo = jnp.full(p.n_buildings, FWS_BOUNDS_C[0])
    if fws_floor_c is not None:
        fws_lo = jnp.clip(jnp.asarray(fws_floor_c), FWS_BOUNDS_C[0], FWS_BOUNDS_C[1] - 1e-3)
    lo = jnp.concatenate(
        [
            fws_lo,
            jnp.full(p.n_cdus, CDU_APPROACH_MIN_K),
            jnp.full(p.n_cdus, PUMP_BOUNDS[0]),
        ]
    )
    hi = jnp.concatenate(
        [
            jnp.full(p.n_buildings, FWS_BOUNDS_C[1]),
            jnp.full(p.n_cdus, TCS_BOUNDS_C[1] - FWS_BOUNDS_C[0]),
            jnp.full(p.n_cdus, PUMP_BOUNDS[1]),
        ]
    )
    return lo, hi


def _unpack(p, x):
    """Optimizer variables -> (FWS K (B,), TCS K (N,), pump speed (N,)), TCS within its bounds."""
    b, n = p.n_buildings, p.n_cdus
    fws_c = x[:b]
    tcs_c = jnp.maximum(fws_c[p.cdu_building] + x[b : b + n], TCS_BOUNDS_C[0])
    tcs_c = jnp.minimum(tcs_c, TCS_BOUNDS_C[1])
    return fws_c + ZERO_CELSIUS_K, tcs_c + ZERO_CELSIUS_K, x[b + n :]


def _pack(p, fws_k, tcs_k, pump):
    """Setpoints (FWS K, TCS K, pump speed) -> the optimizer's variables."""
    return jnp.concatenate([fws_k - ZERO_CELSIUS_K, tcs_k - fws_k[p.cdu_building], pump])


def _objective(x, p, u_mean, u_hot, hours, weight, t_lim, hbm_lim, scale, power=None, u_valve=None):
    """Weighted steady facility power / ``scale`` plus 10 x the squared GPU and HBM temperature
    excess over ``t_lim``/``hbm_lim`` [K^2]; and the steady state (one pass)."""
    fws, tcs, pump = _unpack(p, x)
    q = with_setpoints(p, fws, tcs, pump)
    d = F.derive(q)
    s = steady_state(q, d, u_mean, u_hot, hours, passes=1, power=power, u_valve=u_valve)
    over = jax.nn.relu(s.gpu_hot - t_lim) ** 2 + jax.nn.relu(s.hbm_hot - hbm_lim) ** 2
    return jnp.sum(weight * s.total) / scale + 10.0 * jnp.sum(over), s


@eqx.filter_jit
def _objective_value_and_grad(
    x, p, u_mean, u_hot, hours, weight, t_lim, hbm_lim, scale, power, u_valve
):
    args = (p, u_mean, u_hot, hours, weight, t_lim, hbm_lim, scale, power, u_valve)
    return jax.value_and_grad(lambda xx: _objective(xx, *args)[0])(x)


@eqx.filter_jit
def _weighted_total(p, u_mean, u_hot, hours, weight, power):
    """Weighted steady facility power at ``p``'s setpoints (one pass) [W]."""
    s = steady_state(p, F.derive(p), u_mean, u_hot, hours, passes=1, power=power)
    return jnp.sum(weight * s.total)


@dataclass
class SetpointResult:
    """Optimized setpoints (K, K, -), the steady state there, and d(objective)/d(rack utilization)."""

    x: jax.Array  # the optimizer's variables: FWS degC (B,), CDU approach K (N,), pump (N,)
    setpoints: tuple
    steady: Steady
    objective: float
    grad_u: jax.Array


def optimize_setpoints(
    p: F.FacilityParams,
    topo: Topology,
    u_mean,
    u_hot,
    hours: float,
    weight,
    iterations: int = 40,
    x0=None,
    fws_floor=None,
    power: tuple | None = None,
    u_valve=None,
) -> SetpointResult:
    """Minimize the weighted steady facility power over the FWS setpoint of every building and
    the TCS setpoint and pump speed of every CDU (L-BFGS-B, scipy, on the value and ``jax.grad``
    of the objective through :func:`physics.facility.derive` and :func:`steady_state`), then
    repair: a CDU whose hottest GPU (or HBM) exceeds its limit has its supply lowered by the
    excess until none does.

    ``u_mean``/``u_hot``: per-rack mean and hottest-GPU utilization; ``weight``: per-site weight
    of a W (1 for energy). ``x0`` = (fws K, tcs K, pump) starts from setpoints (default: the
    design setpoints; clipped into the bounds); ``iterations``: at most this many L-BFGS-B
    iterations. ``fws_floor`` (B,) K: lowest FWS setpoint allowed per building (the ramp limit;
    repair may go below). ``power`` = (powered (R,), standby W): the racks' power state
    (idle-rack parking); ``u_valve`` (R,): the utilization whose heat sets the valve flow the
    hottest GPU is checked at (:func:`twin.placement.steady.steady_state`).
    """
    from scipy.optimize import minimize

    floor_c = None if fws_floor is None else np.asarray(fws_floor) - ZERO_CELSIUS_K
    lo, hi = (np.asarray(b, dtype=float) for b in _bounds(p, floor_c))
    xs = (p.fws_supply_setpoint, p.tcs_supply_setpoint, p.tcs_pump_speed) if x0 is None else x0
    x_start = np.clip(np.asarray(_pack(p, *(jnp.asarray(v) for v in xs)), dtype=float), lo, hi)
    u_mean, u_hot, weight = jnp.asarray(u_mean), jnp.asarray(u_hot), jnp.asarray(weight)
    h = jnp.asarray(hours, dtype=float)
    # the objective is relative to the design setpoints' weighted total (about 1)
    scale = _weighted_total(p, u_mean, u_hot, h, weight, power)
    t_lim, hbm_lim = jnp.asarray(topo.gpu_limit), jnp.asarray(topo.hbm_limit)

    seen: list[float] = []  # objective values in call order; the first is at x_start

    def fun(x):
        v, g = _objective_value_and_grad(
            jnp.asarray(x), p, u_mean, u_hot, h, weight, t_lim, hbm_lim, scale, power, u_valve
        )
        seen.append(float(v))
        return seen[-1], np.asarray(g, dtype=float)

    res = minimize(
        fun,
        x_start,
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lo, hi, strict=True)),
        options={"maxiter": iterations},
    )
    x_opt = res.x if res.fun <= seen[0] else x_start
    fws_k, tcs_k, pump = _unpack(p, jnp.asarray(x_opt))
    (fws_k, tcs_k, pump), s, val, grad_u = _repair(
        p, topo, (fws_k, tcs_k, pump), u_mean, u_hot, h, weight, power, u_valve
    )
    return SetpointResult(jnp.asarray(x_opt), (fws_k, tcs_k, pump), s, float(val), grad_u)


def _repair(p, topo: Topology, setpoints, u_mean, u_hot, h, weight, power, u_valve=None):
    """Lower the TCS supply of every CDU whose hottest GPU (or HBM) is within REPAIR_BUFFER_K of
    its limit by the excess (and its building's FWS supply with it), never below the setpoint
    bounds, at most 8 times; returns
    the setpoints, the steady state, the objective and its gradient there."""
    fws_k, tcs_k, pump = setpoints
    n_cdu = p.n_cdus
    for _ in range(8):
        q = with_setpoints(p, fws_k, tcs_k, pump)
        val, s, grad_u = evaluate(q, u_mean, u_hot, h, weight, power, u_valve)
        excess = np.maximum(
            np.asarray(s.gpu_hot) - topo.gpu_limit, np.asarray(s.hbm_hot) - topo.hbm_limit
        )
        cdu_excess = np.full(n_cdu, -np.inf)
        np.maximum.at(cdu_excess, topo.rack_cdu, excess)
        # keep REPAIR_BUFFER_K below the limit so placements at the optimum stay admissible
        if (cdu_excess <= -REPAIR_BUFFER_K).all():
            break
        # never below the bounds (the dew-point floors): a CDU at its floor that still runs
        # too hot is left to the placement's admission check
        old_tcs = np.asarray(tcs_k)
        lowered = old_tcs - np.where(cdu_excess > -REPAIR_BUFFER_K, cdu_excess + 0.3, 0.0)
        new_tcs = np.maximum(lowered, np.minimum(old_tcs, TCS_BOUNDS_C[0] + ZERO_CELSIUS_K))
        if np.array_equal(new_tcs, old_tcs):
            break
        tcs_k = jnp.asarray(new_tcs)
        low_fws = np.full(p.n_buildings, np.inf)
        np.minimum.at(low_fws, topo.cdu_building, new_tcs - CDU_APPROACH_MIN_K)
        low_fws = np.maximum(low_fws, FWS_BOUNDS_C[0] + ZERO_CELSIUS_K)
        fws_k = jnp.minimum(fws_k, jnp.asarray(low_fws))
    return (fws_k, tcs_k, pump), s, val, grad_u
