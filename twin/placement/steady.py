"""Steady state of the twin for a per-rack load and setpoints, and its gradients.

:func:`steady_state` runs the twin's own loop physics (:func:`physics.facility.derive`,
:func:`physics.facility.loop_substep`) over a step long enough that every tank reaches its
inflow temperature; :func:`rack_conditions` gives each rack's IT power, liquid and air heat and
hottest GPU/HBM; :func:`rack_steady` each rack's IT power and coolant inlet and return
temperatures for a prepared run's load at an hour. :func:`with_setpoints`, :func:`with_schedule` and :func:`with_power_state` set
the parameters a policy controls. ``evaluate`` and ``marginal_factor`` are the gradients the
twin policy places jobs by.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from physics import facility as F
from twin.simulation import Run, rack_utilization

#: A step long enough that every tank of the loops reaches its inflow temperature [s].
STEADY_DT = 1.0e9

#: Jitted :func:`physics.facility.derive` (derived parameters of changed setpoints).
derive_jit = jax.jit(F.derive)


class Steady(eqx.Module):
    """Steady state of the twin for a load and setpoints (site arrays (S,), rack arrays (R,))."""

    it: jax.Array
    pumps: jax.Array
    fans: jax.Array
    chillers: jax.Array
    losses: jax.Array
    total: jax.Array
    gpu_hot: jax.Array  # (R,) hottest busy GPU die [K]
    hbm_hot: jax.Array  # (R,) [K]
    rack_it: jax.Array  # (R,) [W]
    tcs_supply: jax.Array  # (N,) [K]


def rack_conditions(
    p: F.FacilityParams,
    d: F.Derived,
    t_in: jax.Array,
    u_mean: jax.Array,
    u_hot: jax.Array,
    p_hot: F.FacilityParams | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-rack IT power, liquid and air heat (from ``p``) and the hottest GPU die and HBM
    temperatures at ``u_hot`` (from ``p_hot``: a powered rack, even if ``p`` parks it)."""
    r = p.n_racks
    tin = t_in[:, None, None, None]
    u = u_mean[:, None, None, None]
    p_gpu = F.package_steady(p, d, tin, u).power
    air = p.gpu_air_fraction
    full = p.gpu_shape
    n_gpu = float(np.prod(full[1:]))

    def per_rack(x):
        x = jnp.broadcast_to(x, (r,) + tuple(jnp.shape(x)[1:]))
        return x.reshape(r, -1).sum(axis=1) * (n_gpu / x.reshape(r, -1).shape[1])

    rack_gpu = per_rack(p_gpu)
    rack_gpu_air = per_rack(air * p_gpu)
    other = p.rack_other_power_idle + (p.rack_other_power_max - p.rack_other_power_idle) * jnp.clip(
        u_mean, 0.0, 1.0
    )
    liquid = rack_gpu - rack_gpu_air + p.rack_other_liquid_fraction * other
    air_heat = rack_gpu_air + (1.0 - p.rack_other_liquid_fraction) * other
    hot = F.package_steady(p if p_hot is None else p_hot, d, tin, u_hot[:, None, None, None])
    rmax = lambda x: jnp.broadcast_to(x, (r,) + tuple(jnp.shape(x)[1:])).reshape(r, -1).max(axis=1)  # noqa: E731
    return rack_gpu + other, liquid, air_heat, rmax(hot.die), rmax(hot.hbm)


def steady_state(
    p: F.FacilityParams,
    d: F.Derived,
    u_mean: jax.Array,
    u_hot: jax.Array,
    hours: jax.Array,
    passes: int = 2,
    power: tuple | None = None,
    u_valve: jax.Array | None = None,
) -> Steady:
    """Steady state of the twin at hour-of-year ``hours`` for per-rack mean and hot utilization.

    ``power`` = (powered (R,), standby W): racks in that power state (:func:`with_power_state`)
    for the energy; the hottest-GPU temperatures are those of powered racks (a job wakes one).
    ``u_valve`` (R,): the rack utilization whose heat sets the valve flow the hottest GPU is
    checked at (default ``u_mean``). A rack kept free for jobs yet to come is checked at the
    flow its valve opens to once they run (the valve follows the rack's heat within
    ``tcs_control_time``, a minute), not at the minimum flow of an empty rack.

    GPU nodes at their time-mean temperature (exact for the linear die model), the loops by
    :func:`physics.facility.loop_substep` over a step long enough that every tank equals its
    inflow (so its flows are the steady ones); the FWS supply is at its setpoint. Two passes
    take a saturated CDU valve (TCS supply above its setpoint) into account (``passes=1``: the
    inlet at the setpoint, used inside the optimizer; the repair step re-checks with two).
    """
    n, b = p.n_cdus, p.n_buildings
    p_hot = None
    if power is not None:
        p_hot, p = p, with_power_state(p, *power)
    t_in = p.tcs_supply_setpoint[p.rack_cdu]
    dd = d
    for _ in range(passes):
        # the racks' valves at the flow their heat sets (physics.facility.rack_flow_fraction),
        # then the racks again at that flow: the same row control the simulation runs
        liquid = rack_conditions(p, dd, t_in, u_mean, u_hot, p_hot)[1]
        dd = F.at_tcs_flow(p, d, F.rack_flow_fraction(p, liquid))
        rack_it, liquid, air_heat, hot, hbm = rack_conditions(p, dd, t_in, u_mean, u_hot, p_hot)
        if u_valve is not None:
            hot, hbm = _hot_at_valve(p, d, t_in, u_mean, u_hot, u_valve, p_hot, liquid)
        cdu_liquid = F.rack_to_cdu(p, liquid) + dd.tcs_pump_heat
        tcs_cap = dd.cdu_capacity_rate
        mixed = p.tcs_supply_setpoint + cdu_liquid / tcs_cap
        sup = jnp.broadcast_to(p.fws_supply_setpoint[:, None], (b, p.n_fws_tanks))
        tcs_sup = jnp.broadcast_to(p.tcs_supply_setpoint[:, None], (n, p.n_tcs_tanks))
        ls = F.LoopState(jnp.broadcast_to(mixed[:, None], (n, p.n_tcs_tanks)), sup, sup, tcs_sup)
        coil_heat = F.air_coil_heat(p, air_heat)
        _, fl, _ = F.loop_substep(p, dd, ls, cdu_liquid, tcs_cap, coil_heat, STEADY_DT, hours)
        t_in = rack_inlet(p, fl.tcs_supply)

    it = F.rack_to_site(p, rack_it)
    air = F.rack_to_site(p, air_heat)
    pumps = F.cdu_to_site(p, dd.tcs_pump_power) + F.building_to_site(p, fl.fws_pump_power)
    fans = F.building_to_site(p, fl.fan_power) + p.air_fan_power_ratio * air
    chillers = F.building_to_site(p, fl.chiller_power)
    losses = p.electrical_loss_fraction * (it + pumps + fans + chillers)
    return Steady(
        it,
        pumps,
        fans,
        chillers,
        losses,
        it + pumps + fans + chillers + losses,
        hot,
        hbm,
        rack_it,
        fl.tcs_supply,
    )


def _hot_at_valve(p, d, t_in, u_mean, u_hot, u_valve, p_hot, liquid):
    """Hottest GPU die and HBM (R,) [K] at ``u_hot`` with each rack's valve at the flow of
    the larger of its present liquid heat and that at ``u_valve``."""
    u_v = jnp.maximum(u_mean, u_valve)
    liquid_v = rack_conditions(p if p_hot is None else p_hot, d, t_in, u_v, u_hot)[1]
    frac = F.rack_flow_fraction(p, jnp.maximum(liquid, liquid_v))
    dv = F.at_tcs_flow(p, d, frac)
    return rack_conditions(p, dv, t_in, u_mean, u_hot, p_hot)[3:]


def rack_inlet(p: F.FacilityParams, tcs_supply: jax.Array) -> jax.Array:
    """Coolant inlet temperature of each rack (R,) [K] for its CDU's TCS supply (N,) [K]: never
    below the supply setpoint (the CDU's valve mixes down to it; saturated, the supply is above)."""
    return jnp.maximum(tcs_supply, p.tcs_supply_setpoint)[p.rack_cdu]


class RackSteady(NamedTuple):
    """Per-rack steady state (R,) of :func:`rack_steady` (NumPy)."""

    utilization: np.ndarray  # time-mean utilization [1]
    it_power: np.ndarray  # rack IT power [W]
    inlet: np.ndarray  # coolant inlet temperature [K]
    outlet: np.ndarray  # coolant return (outlet) temperature [K]


def rack_steady(run: Run, hour: float) -> RackSteady:
    """Each rack's steady state for its scheduled load at UTC hour-of-year ``hour``.

    The loads are :func:`twin.simulation.rack_utilization`; the loops are :func:`steady_state`
    (two passes), the inlets :func:`rack_inlet` of its TCS supply and the return temperature
    the inlet plus the rack's liquid heat over its coolant capacity rate.
    """
    p, d = run.params, run.derived
    u_mean, u_hot = rack_utilization(p, hour)
    steady = steady_state(p, d, jnp.asarray(u_mean), jnp.asarray(u_hot), jnp.asarray(hour))
    t_in = rack_inlet(p, steady.tcs_supply)
    _it, liquid, _air, _hot, _hbm = rack_conditions(
        p, d, t_in, jnp.asarray(u_mean), jnp.asarray(u_hot)
    )
    d = F.at_tcs_flow(p, d, F.rack_flow_fraction(p, liquid))  # the rack valves' flows
    _it, liquid, _air, _hot, _hbm = rack_conditions(
        p, d, t_in, jnp.asarray(u_mean), jnp.asarray(u_hot)
    )
    return RackSteady(
        u_mean,
        np.asarray(steady.rack_it),
        np.asarray(t_in),
        np.asarray(t_in + liquid / d.rack_capacity_rate),
    )


def with_setpoints(p: F.FacilityParams, fws_k, tcs_k, pump) -> F.FacilityParams:
    """``p`` with FWS supply setpoints (B,) [K], TCS supply setpoints (N,) [K], pump speeds (N,)."""
    return eqx.tree_at(
        lambda q: (q.fws_supply_setpoint, q.tcs_supply_setpoint, q.tcs_pump_speed),
        p,
        (fws_k, tcs_k, pump),
    )


def with_schedule(p: F.FacilityParams, low, high, period, phase) -> F.FacilityParams:
    """``p`` with a per-rack square-wave load (R,): low/high utilization, period [s], phase [s]
    (duty 0.5, no diurnal modulation)."""
    r = p.n_racks
    return eqx.tree_at(
        lambda q: (
            q.load_low,
            q.load_high,
            q.load_period,
            q.load_duty,
            q.load_phase,
            q.load_diurnal_amplitude,
        ),
        p,
        (
            jnp.asarray(low),
            jnp.asarray(high),
            jnp.asarray(period),
            jnp.full(r, 0.5),
            jnp.asarray(phase),
            jnp.zeros(r),
        ),
    )


def with_power_state(p: F.FacilityParams, powered, standby_w: float) -> F.FacilityParams:
    """Parameters of racks that are powered for the share ``powered`` (R,) of the time.

    A powered-down (parked) rack's GPUs draw nothing: their idle power, HBM idle power and
    leakage (:func:`physics.gpu.leakage_power`, no supply voltage) scale with ``powered``; its
    CPUs, switches and NICs draw ``standby_w`` [W] instead of their idle power. Energy is
    linear in these terms, so a share between 0 and 1 gives the mean of an epoch in which the
    rack was parked part of the time; the load-dependent part (idle to max) is left to the
    rack's utilization, which is the epoch mean and zero while parked. ``powered = 1`` leaves
    every value as it was.
    """
    on = jnp.asarray(powered, dtype=float)
    g4 = on[:, None, None, None]
    idle_w = on * p.rack_other_power_idle + (1.0 - on) * standby_w
    return eqx.tree_at(
        lambda q: (
            q.gpu_power_idle,
            q.gpu_hbm_power_idle,
            q.gpu_leakage_ref,
            q.rack_other_power_idle,
            q.rack_other_power_max,
        ),
        p,
        (
            g4 * p.gpu_power_idle,
            g4 * p.gpu_hbm_power_idle,
            g4 * p.gpu_leakage_ref,
            idle_w,
            # the load-dependent part is not scaled: the rack's utilization is already the
            # mean over the epoch (zero while parked)
            idle_w + (p.rack_other_power_max - p.rack_other_power_idle),
        ),
    )


@eqx.filter_jit
def evaluate(p, u_mean, u_hot, hours, weight, power=None, u_valve=None):
    """Weighted steady facility power, the steady state, and its gradient with respect to the
    per-rack mean utilization (each rack's marginal cost)."""
    d = F.derive(p)

    def f(u):
        s = steady_state(p, d, u, u_hot, hours, power=power, u_valve=u_valve)
        return jnp.sum(weight * s.total), s

    (val, s), grad_u = jax.value_and_grad(f, has_aux=True)(u_mean)
    return val, s, grad_u


@eqx.filter_jit
def marginal_factor(p, u_mean, u_hot, hours_vec, weight_vec, power=None):
    """Weighted facility power per W of IT added uniformly per site, at each future hour."""
    d = F.derive(p)
    site_of_rack = p.building_site[p.cdu_building[p.rack_cdu]]

    def one(h, w):
        def tot(eps):
            s = steady_state(p, d, u_mean + eps[site_of_rack], u_hot, h, power=power)
            return jnp.stack([w * s.total, s.it])

        j = jax.jacfwd(tot)(jnp.zeros(p.n_sites))  # (2, S, S)
        return jnp.diag(j[0]) / jnp.diag(j[1])

    return jax.lax.map(lambda a: one(*a), (hours_vec, weight_vec))


def hot_coefficients(p, d, t_in_rack, node: str = "die"):
    """Per rack (a, b) with the hottest GPU die (``node="hbm"``: HBM) at utilization
    u = a + b * u for the rack's inlet temperatures ``t_in_rack`` (R,) [K] (numpy): the steady
    package (:func:`physics.facility.package_steady`) is linear in u at a fixed inlet."""
    r = p.n_racks
    t_in = jnp.asarray(t_in_rack)[:, None, None, None]
    a = np.asarray(getattr(F.package_steady(p, d, t_in, 0.0), node))
    b = np.asarray(getattr(F.package_steady(p, d, t_in, 1.0), node)) - a
    a = np.broadcast_to(a, (r,) + a.shape[1:]).reshape(r, -1)
    b = np.broadcast_to(b, (r,) + b.shape[1:]).reshape(r, -1)
    return a.max(axis=1), b.max(axis=1)
