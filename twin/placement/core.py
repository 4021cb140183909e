r"""Energy-optimal workload placement, co-optimized with cooling setpoints, replayed on the twin.

Every policy sees the same jobs, the same facility twin (:mod:`physics.facility`) and the same
initial state. Jobs are placed online, at arrival, in time order; the replay advances the twin in
epochs (default 15 min), each with the per-rack workload schedule of the jobs that ran in it
(GPU-seconds weighted, so rack energy is exact: GPU power and leakage are linear in utilization
and temperature) and the setpoints the policy chose. The state is carried across epochs.

Policies
--------
``pack``     first fit in rack order (site by site) at the design setpoints: today's schedulers.
``spread``   round robin over racks, design setpoints.
``coolest``  the rack whose GPUs ran coolest in the last epoch first, design setpoints.
``random``   a random feasible rack, design setpoints.
``twin``     optimization through the differentiable twin. Each setpoint interval, the steady
             state of the twin's own loop physics (:func:`steady_state`, which calls
             :func:`physics.facility.derive` and :func:`physics.facility.loop_substep`) is
             minimized by L-BFGS-B on its value and ``jax.grad`` over the facility-water supply
             setpoint of every building, the CDU (TCS) supply setpoint and pump speed of every
             row, subject to the GPU and HBM temperature limits (penalty, then repair). The
             gradient of the optimized objective with respect to each rack's utilization (the
             continuous relaxation of placement) gives each rack's marginal cost; arriving jobs
             are rounded onto the cheapest feasible racks (site by estimated cost, ties towards the
             least-loaded row), and flexible jobs are deferred within their window to the hour
             of least forecast marginal cost. :func:`milp_placement` solves the linearized
             placement exactly with ``scipy.optimize.milp`` (HiGHS) for checks on small cases.

Constraints: GPU die temperature <= max-operating - ``margin`` (the hottest busy GPU, at its
high-phase power, steady), HBM <= its limit - ``margin``, rack/row (CDU)/site peak power caps,
no GPU over-committed, locality (:mod:`twin.io.jobs`). Infeasible inputs raise :class:`Infeasible`
naming the binding constraint and where.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from physics import facility as F
from physics import gpu
from twin.io.jobs import WORKLOAD_CLASSES, JobSet
from twin.simulate import Run
from twin.units import ZERO_CELSIUS_K, SpecError

log = logging.getLogger(__name__)

POLICIES = ("twin", "pack", "spread", "coolest", "random")
#: A step long enough that every tank of the loops reaches its inflow temperature [s].
STEADY_DT = 1.0e9
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
#: Idle-rack parking (twin policy; Slurm's power saving does the same for nodes): a rack with
#: no job for PARK_IDLE_S (Slurm SuspendTime) is powered down unless it is part of its site's
#: reserve of powered idle racks; waking takes RACK_WAKE_S (power-on, boot, GPU health check:
#: published Slurm configurations set ResumeTimeout = 600 s, AWS PCS scales down after 600 s
#: idle by default). A parked rack draws RACK_STANDBY_W (BMCs, management network, power-shelf
#: no-load losses: an engineering estimate, ~1 % of a 140 kW rack's design power).
PARK_IDLE_S = 900.0
RACK_WAKE_S = 600.0
RACK_STANDBY_W = 1500.0
#: Powered idle racks kept per site, as a multiple of the largest GPU demand that arrived (in
#: the whole facility) in any window of one epoch plus the wake time over the last day.
PARK_RESERVE_FACTOR = 1.0
PARK_HISTORY_S = 86400.0


class Infeasible(SpecError):
    """No placement can satisfy a constraint; names the constraint, where, and what is needed."""


# ============================================================================ steady model
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


def _gpu_terms(p: F.FacilityParams, d: F.Derived):
    res = d.gpu_resistance
    g = gpu.die_conductance(res, p.gpu_leakage_ref, p.gpu_leakage_coeff)
    die_idle = p.gpu_power_idle - p.gpu_hbm_power_idle
    die_dyn = (1.0 - p.gpu_hbm_power_share) * p.gpu_power_dynamic
    c0 = p.gpu_leakage_ref * (1.0 - p.gpu_leakage_coeff * p.gpu_temp_ref)
    return res, g, die_idle, die_dyn, c0


def rack_conditions(p, d, t_in, u_mean, u_hot, p_hot=None):
    """Per-rack IT power, liquid and air heat (from ``p``) and the hottest GPU die and HBM
    temperatures at ``u_hot`` (from ``p_hot``: a powered rack, even if ``p`` parks it)."""
    r = p.n_racks
    res, g, die_idle, die_dyn, c0 = _gpu_terms(p, d)
    tin = t_in[:, None, None, None]
    u = u_mean[:, None, None, None]
    t_die = (die_idle + u * die_dyn + c0 + tin / res) / g
    p_hbm = p.gpu_hbm_power_idle + p.gpu_hbm_power_share * p.gpu_power_dynamic * u
    p_gpu = (
        die_idle
        + u * die_dyn
        + gpu.leakage_power(t_die, p.gpu_leakage_ref, p.gpu_leakage_coeff, p.gpu_temp_ref)
        + p_hbm
    )
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
    uh = u_hot[:, None, None, None]
    ph = p
    if p_hot is not None:
        ph = p_hot
        res, g, die_idle, die_dyn, c0 = _gpu_terms(ph, d)
    hot = (die_idle + uh * die_dyn + c0 + tin / res) / g
    hbm = (
        tin
        + (ph.gpu_hbm_power_idle + ph.gpu_hbm_power_share * ph.gpu_power_dynamic * uh)
        * ph.gpu_hbm_resistance
    )
    rmax = lambda x: jnp.broadcast_to(x, (r,) + tuple(jnp.shape(x)[1:])).reshape(r, -1).max(axis=1)  # noqa: E731
    return rack_gpu + other, liquid, air_heat, rmax(hot), rmax(hbm)


def steady_state(
    p: F.FacilityParams,
    d: F.Derived,
    u_mean: jax.Array,
    u_hot: jax.Array,
    hours: jax.Array,
    passes: int = 2,
    power: tuple | None = None,
) -> Steady:
    """Steady state of the twin at hour-of-year ``hours`` for per-rack mean and hot utilization.

    ``power`` = (powered (R,), standby W): racks in that power state (:func:`with_power_state`)
    for the energy; the hottest-GPU temperatures are those of powered racks (a job wakes one).

    GPU nodes at their time-mean temperature (exact for the linear die model), the loops by
    :func:`physics.facility.loop_substep` over a step long enough that every tank equals its
    inflow (so its flows are the steady ones); the FWS supply is at its setpoint. Two passes
    take a saturated CDU valve (TCS supply above its setpoint) into account (``passes=1``: the
    inlet at the setpoint, used inside the optimizer; the repair step re-checks with two).
    """
    n, b, sites = p.n_cdus, p.n_buildings, p.n_sites
    p_hot = None
    if power is not None:
        p_hot, p = p, with_power_state(p, *power)
    t_in = p.tcs_supply_setpoint[p.rack_cdu]
    for _ in range(passes):
        rack_it, liquid, air_heat, hot, hbm = rack_conditions(p, d, t_in, u_mean, u_hot, p_hot)
        cdu_liquid = F._segment_sum(liquid, p.rack_cdu, n) + d.tcs_pump_heat
        mixed = p.tcs_supply_setpoint + cdu_liquid / d.cdu_capacity_rate
        sup = jnp.broadcast_to(p.fws_supply_setpoint[:, None], (b, p.n_fws_tanks))
        ls = F.LoopState(jnp.broadcast_to(mixed[:, None], (n, p.n_tcs_tanks)), sup, sup)
        _, fl, _ = F.loop_substep(p, d, ls, mixed, STEADY_DT, hours)
        t_in = jnp.maximum(fl.tcs_supply, p.tcs_supply_setpoint)[p.rack_cdu]

    def site_of_bld(x):
        return F._segment_sum(x, p.building_site, sites)

    def site_of_cdu(x):
        return site_of_bld(F._segment_sum(x, p.cdu_building, b))

    it = site_of_cdu(F._segment_sum(rack_it, p.rack_cdu, n))
    air = site_of_cdu(F._segment_sum(air_heat, p.rack_cdu, n))
    pumps = site_of_cdu(d.tcs_pump_power) + site_of_bld(fl.fws_pump_power)
    fans = site_of_bld(fl.fan_power) + p.air_fan_power_ratio * air
    chillers = site_of_bld(fl.chiller_power)
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


def with_setpoints(p: F.FacilityParams, fws_k, tcs_k, pump) -> F.FacilityParams:
    return eqx.tree_at(
        lambda q: (q.fws_supply_setpoint, q.tcs_supply_setpoint, q.tcs_pump_speed),
        p,
        (fws_k, tcs_k, pump),
    )


def with_schedule(p: F.FacilityParams, low, high, period, phase) -> F.FacilityParams:
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


# ----------------------------------------------------------------------------- optimizer
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
    b, n = p.n_buildings, p.n_cdus
    fws_c = x[:b]
    tcs_c = jnp.maximum(fws_c[p.cdu_building] + x[b : b + n], TCS_BOUNDS_C[0])
    tcs_c = jnp.minimum(tcs_c, TCS_BOUNDS_C[1])
    return fws_c + ZERO_CELSIUS_K, tcs_c + ZERO_CELSIUS_K, x[b + n :]


def _pack(p, fws_k, tcs_k, pump):
    return jnp.concatenate([fws_k - ZERO_CELSIUS_K, tcs_k - fws_k[p.cdu_building], pump])


def _objective(x, p, u_mean, u_hot, hours, weight, t_lim, hbm_lim, scale, power=None):
    fws, tcs, pump = _unpack(p, x)
    q = with_setpoints(p, fws, tcs, pump)
    d = F.derive(q)
    s = steady_state(q, d, u_mean, u_hot, hours, passes=1, power=power)
    over = jax.nn.relu(s.gpu_hot - t_lim) ** 2 + jax.nn.relu(s.hbm_hot - hbm_lim) ** 2
    return jnp.sum(weight * s.total) / scale + 10.0 * jnp.sum(over), s


@eqx.filter_jit
def _objective_value_and_grad(x, p, u_mean, u_hot, hours, weight, t_lim, hbm_lim, scale, power):
    return jax.value_and_grad(
        lambda xx: _objective(xx, p, u_mean, u_hot, hours, weight, t_lim, hbm_lim, scale, power)[0]
    )(x)


@eqx.filter_jit
def _weighted_total(p, u_mean, u_hot, hours, weight, power):
    s = steady_state(p, F.derive(p), u_mean, u_hot, hours, passes=1, power=power)
    return jnp.sum(weight * s.total)


@eqx.filter_jit
def _evaluate(p, u_mean, u_hot, hours, weight, power=None):
    d = F.derive(p)

    def f(u):
        s = steady_state(p, d, u, u_hot, hours, power=power)
        return jnp.sum(weight * s.total), s

    (val, s), grad_u = jax.value_and_grad(f, has_aux=True)(u_mean)
    return val, s, grad_u


@eqx.filter_jit
def _marginal_factor(p, u_mean, u_hot, hours_vec, weight_vec, power=None):
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


# ============================================================================ topology
@dataclass
class Topology:
    """Racks, rows, sites, caps and per-rack GPU model constants (numpy, SI)."""

    site_keys: list[str]
    rack_site: np.ndarray
    rack_cdu: np.ndarray
    cdu_building: np.ndarray
    gpus_per_rack: int
    rack_cap: np.ndarray  # W
    cdu_cap: np.ndarray  # W
    site_cap: np.ndarray  # W
    tdp: np.ndarray  # (R,) W
    util_a: np.ndarray  # u = a * fraction + b
    util_b: np.ndarray
    other_idle: np.ndarray
    other_max: np.ndarray
    idle_power: np.ndarray  # (R,) per GPU W
    gpu_limit: np.ndarray  # (R,) K, max operating - margin
    hbm_limit: np.ndarray  # (R,) K
    tz_hours: np.ndarray  # (S,)
    site_gpus: np.ndarray  # (S,)

    @property
    def n_racks(self) -> int:
        return len(self.rack_site)

    def utilization(self, frac, racks):
        return np.clip(self.util_a[racks] * frac + self.util_b[racks], 0.0, None)


def parse_caps(items: list[str] | None) -> dict:
    """``--cap rack=120kW --cap row=1.2MW --cap site:atlanta=150MW`` -> {"rack": W, ...}."""
    from twin.units import parse_quantity

    out: dict = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not (key in ("rack", "row") or key.startswith("site:")):
            raise SpecError(
                "--cap", item, "rack=POWER, row=POWER or site:KEY=POWER, e.g. rack=120kW"
            )
        out[key] = parse_quantity(val.strip(), f"--cap {key}", "W")
        if out[key] <= 0:
            raise SpecError(f"--cap {key}", val, "a positive power")
    return out


def build_topology(run: Run, caps: dict | None = None, margin: float = 5.0) -> Topology:
    """Topology and caps of ``run``'s facility (defaults: rack design power, CDU capacity)."""
    caps = caps or {}
    p, spec = run.params, run.spec
    site_of_rack = np.asarray(p.building_site)[np.asarray(p.cdu_building)[np.asarray(p.rack_cdu)]]
    keys = [s.key for s in spec.sites]
    for k in caps:
        if k.startswith("site:") and k[5:] not in keys:
            raise SpecError(f"--cap {k}", caps[k], f"a site of {spec.name}: {', '.join(keys)}")
    per_site = lambda f: np.array([f(s) for s in spec.sites])[site_of_rack]  # noqa: E731
    g = lambda s: s.building.rack.gpu  # noqa: E731
    a = per_site(lambda s: g(s).tdp / g(s).power_dynamic)
    b = per_site(
        lambda s: -(g(s).power_idle_static + g(s).leakage_at_reference) / g(s).power_dynamic
    )
    n_cdu = p.n_cdus
    cdu_site = np.asarray(p.building_site)[np.asarray(p.cdu_building)]
    cdu_cap = np.array([spec.sites[s].building.cdu.capacity for s in cdu_site], float)
    if "row" in caps:
        cdu_cap[:] = caps["row"]
    rack_cap = per_site(lambda s: s.building.rack.design_power).astype(float)
    if "rack" in caps:
        rack_cap[:] = caps["rack"]
    site_cap = np.array([np.sum(cdu_cap[cdu_site == i]) for i in range(len(keys))])
    for i, k in enumerate(keys):
        if f"site:{k}" in caps:
            site_cap[i] = caps[f"site:{k}"]
    return Topology(
        site_keys=keys,
        rack_site=site_of_rack,
        rack_cdu=np.asarray(p.rack_cdu),
        cdu_building=np.asarray(p.cdu_building),
        gpus_per_rack=int(np.prod(p.gpu_shape[1:])),
        rack_cap=rack_cap,
        cdu_cap=cdu_cap[:n_cdu],
        site_cap=site_cap,
        tdp=per_site(lambda s: g(s).tdp),
        util_a=a,
        util_b=b,
        other_idle=per_site(lambda s: s.building.rack.other_power_idle),
        other_max=per_site(lambda s: s.building.rack.other_power_max),
        idle_power=per_site(lambda s: g(s).idle_power),
        gpu_limit=per_site(lambda s: g(s).max_operating_temperature) - margin,
        hbm_limit=per_site(lambda s: g(s).hbm_max_operating_temperature) - margin,
        tz_hours=np.array([s.timezone_offset_hours for s in spec.sites]),
        site_gpus=np.array([s.gpus for s in spec.sites]),
    )


def _peak_power(topo: Topology, racks, n_gpus, frac_high):
    """Peak power a job adds on ``racks`` with ``n_gpus`` each [W] (GPUs at the high phase,
    their share of the rack's other IT)."""
    other = (topo.other_max[racks] - topo.other_idle[racks]) * n_gpus / topo.gpus_per_rack
    return n_gpus * (frac_high * topo.tdp[racks] - topo.idle_power[racks]) + other


def check_feasible(run: Run, topo: Topology, jobs: JobSet) -> None:
    """Raise :class:`Infeasible` (naming constraint and place) for a job no policy can place."""
    t = jobs.table
    big = int(topo.site_gpus.max())
    i_big = int(np.argmax(topo.site_gpus))
    too_big = t.gpus > big
    if too_big.any():
        j = t[too_big].iloc[0]
        raise Infeasible(
            f"job {j.id} field gpus",
            int(j.gpus),
            f"at most {big} GPUs, the largest site ({topo.site_keys[i_big]}); jobs stay in one site",
        )
    g_rack = np.minimum(t.gpus.to_numpy(), topo.gpus_per_rack)
    r_best = int(np.argmax(topo.rack_cap))
    need = (
        _peak_power(topo, np.full(len(t), r_best), g_rack, t.power_high.to_numpy())
        + topo.other_idle[r_best]
        + (topo.gpus_per_rack - g_rack) * topo.idle_power[r_best]
    )
    bad = need > topo.rack_cap[r_best]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise Infeasible(
            f"rack power cap (rack {r_best}, site {topo.site_keys[topo.rack_site[r_best]]})",
            f"{topo.rack_cap[r_best] / 1e3:.1f} kW",
            f"at least {need[i] / 1e3:.1f} kW for job {t.id[i]} ({g_rack[i]} GPUs of it in one rack "
            f"at {t.power_high[i]:.2f} TDP); raise --cap rack",
        )
    rack_idle = topo.other_idle + topo.gpus_per_rack * topo.idle_power
    for s, key in enumerate(topo.site_keys):
        m = topo.rack_site == s
        idle = float(rack_idle[m].sum())
        if idle > topo.site_cap[s]:
            raise Infeasible(
                f"site power cap (site {key})",
                f"{topo.site_cap[s] / 1e6:.2f} MW",
                f"at least the site's idle power {idle / 1e6:.2f} MW; raise --cap site:{key}",
            )
    for c in range(len(topo.cdu_cap)):
        idle = float(rack_idle[topo.rack_cdu == c].sum())
        if idle > topo.cdu_cap[c]:
            raise Infeasible(
                f"row (CDU) power cap (row {c}, site {topo.site_keys[topo.rack_site[topo.rack_cdu == c][0]]})",
                f"{topo.cdu_cap[c] / 1e3:.1f} kW",
                f"at least the row's idle power {idle / 1e3:.1f} kW; raise --cap row",
            )
    # Thermal: the hottest job class at the design setpoints, steady.
    p, d = run.params, run.derived
    u_hot = jnp.asarray(topo.utilization(float(t.power_high.max()), np.arange(topo.n_racks)))
    s = jax.jit(steady_state)(p, d, u_hot, u_hot, jnp.asarray(run.hour0))
    over = np.asarray(s.gpu_hot) - topo.gpu_limit
    if (over > 0).all():
        r = int(np.argmin(over))
        raise Infeasible(
            f"GPU temperature limit (rack {r}, site {topo.site_keys[topo.rack_site[r]]})",
            f"{float(s.gpu_hot[r]) - ZERO_CELSIUS_K:.1f} degC predicted",
            f"at most {topo.gpu_limit[r] - ZERO_CELSIUS_K:.1f} degC (max operating minus margin) "
            "for the hottest job at the design setpoints; lower the supply setpoints or the margin",
        )


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
    (idle-rack parking).
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
            jnp.asarray(x), p, u_mean, u_hot, h, weight, t_lim, hbm_lim, scale, power
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
    n_cdu = p.n_cdus
    for _ in range(8):
        q = with_setpoints(p, fws_k, tcs_k, pump)
        val, s, grad_u = _evaluate(q, u_mean, u_hot, h, weight, power)
        excess = np.maximum(
            np.asarray(s.gpu_hot) - topo.gpu_limit, np.asarray(s.hbm_hot) - topo.hbm_limit
        )
        cdu_excess = np.full(n_cdu, -np.inf)
        np.maximum.at(cdu_excess, topo.rack_cdu, excess)
        # keep REPAIR_BUFFER_K below the limit so placements at the optimum stay admissible
        if (cdu_excess <= -REPAIR_BUFFER_K).all():
            break
        tcs_k = jnp.asarray(
            np.asarray(tcs_k) - np.where(cdu_excess > -REPAIR_BUFFER_K, cdu_excess + 0.3, 0.0)
        )
        low_fws = np.full(p.n_buildings, np.inf)
        np.minimum.at(low_fws, topo.cdu_building, np.asarray(tcs_k) - CDU_APPROACH_MIN_K)
        fws_k = jnp.minimum(fws_k, jnp.asarray(low_fws))
    return SetpointResult(jnp.asarray(x_opt), (fws_k, tcs_k, pump), s, float(val), grad_u)


# ============================================================================ replay engine
@dataclass
class _Running:
    end: float
    job: int
    racks: np.ndarray
    counts: np.ndarray


@dataclass
class PolicyResult:
    policy: str
    summary: dict
    plan: xr.Dataset


@dataclass
class _Ctx:
    topo: Topology
    free: np.ndarray
    rack_peak: np.ndarray
    cdu_peak: np.ndarray
    site_peak: np.ndarray
    hot_a: np.ndarray  # T_hot(u) = hot_a + hot_b * u per rack at current setpoints
    hot_b: np.ndarray
    rack_temp: np.ndarray  # last epoch's mean GPU temperature per rack [K]
    row_load: np.ndarray  # busy GPU share per row
    rng: np.random.Generator
    pointer: int = 0
    cost: np.ndarray | None = None  # twin: marginal cost per busy GPU-utilization per rack
    unavailable: np.ndarray | None = None  # parked or still waking racks (twin)


def _hot_coefficients(p, d, t_in_rack):
    res, g, die_idle, die_dyn, c0 = (np.asarray(x) for x in _gpu_terms(p, d))
    r = p.n_racks
    a = (die_idle + c0 + np.asarray(t_in_rack)[:, None, None, None] / res) / g
    b = np.broadcast_to(die_dyn / g, a.shape)
    a = np.broadcast_to(a, (r,) + a.shape[1:]).reshape(r, -1)
    b = np.broadcast_to(b, (r,) + b.shape[1:]).reshape(r, -1)
    return a.max(axis=1), b.max(axis=1)


def _score(policy: str, ctx: _Ctx) -> np.ndarray:
    r = ctx.topo.n_racks
    idx = np.arange(r, dtype=float)
    if policy == "pack":
        return idx
    if policy == "spread":
        return (idx - ctx.pointer) % r
    if policy == "coolest":
        return ctx.rack_temp + 1e-9 * idx
    if policy == "random":
        return ctx.rng.permutation(r).astype(float)
    # twin: marginal cost; within 1 % of it, best fit (fullest rack) against fragmentation.
    return (
        ctx.cost + 1e-2 * np.abs(ctx.cost).mean() * ctx.free / ctx.topo.gpus_per_rack + 1e-12 * idx
    )


def _allocate(policy: str, ctx: _Ctx, g: int, workload: str, frac_high: float, score: np.ndarray):
    """Racks and GPU counts for a job, or None when no site can take it now."""
    topo = ctx.topo
    n_rack = topo.gpus_per_rack
    u_high = topo.utilization(frac_high, np.arange(topo.n_racks))
    thermal_ok = ctx.hot_a + ctx.hot_b * u_high <= topo.gpu_limit
    if ctx.unavailable is not None:
        thermal_ok = thermal_ok & ~ctx.unavailable
    if g <= n_rack:
        add = _peak_power(topo, np.arange(topo.n_racks), np.full(topo.n_racks, g), frac_high)
        ok = (
            (ctx.free >= g)
            & thermal_ok
            & (ctx.rack_peak + add <= topo.rack_cap)
            & (ctx.cdu_peak[topo.rack_cdu] + add <= topo.cdu_cap[topo.rack_cdu])
            & (ctx.site_peak[topo.rack_site] + add <= topo.site_cap[topo.rack_site])
        )
        if not ok.any():
            return None
        cand = np.flatnonzero(ok)
        r = cand[np.argmin(score[cand])]
        return np.array([r]), np.array([g])
    whole = workload == "training"
    sites = np.unique(topo.rack_site)
    best_site_score = np.array([score[topo.rack_site == s].min() for s in sites])
    if policy == "twin":
        order = np.argsort(best_site_score)
    elif policy == "spread":
        order = np.roll(sites, -int(topo.rack_site[ctx.pointer % topo.n_racks]))
    else:
        order = np.argsort(best_site_score)
    for s in sites[order] if policy != "spread" else order:
        m = (topo.rack_site == s) & thermal_ok & ((ctx.free == n_rack) if whole else (ctx.free > 0))
        cand = np.flatnonzero(m)
        if ctx.free[cand].sum() < g:
            continue
        cand = cand[np.argsort(score[cand], kind="stable")]
        racks, counts = [], []
        left = g
        cdu_add = {}
        site_add = 0.0
        for r in cand:
            k = min(int(ctx.free[r]), left)
            add = float(_peak_power(topo, np.array([r]), np.array([k]), frac_high)[0])
            c = topo.rack_cdu[r]
            if (
                ctx.rack_peak[r] + add > topo.rack_cap[r]
                or ctx.cdu_peak[c] + cdu_add.get(c, 0.0) + add > topo.cdu_cap[c]
            ):
                continue
            if ctx.site_peak[s] + site_add + add > topo.site_cap[s]:
                break
            racks.append(r)
            counts.append(k)
            cdu_add[c] = cdu_add.get(c, 0.0) + add
            site_add += add
            left -= k
            if left == 0:
                return np.array(racks), np.array(counts)
    return None


def replay(
    run: Run,
    jobs: JobSet,
    policy: str,
    hours: float,
    epoch: float = 900.0,
    setpoint_interval: float = 3600.0,
    topo: Topology | None = None,
    objective: str = "energy",
    iterations: int = 40,
    seed: int = 0,
    progress: Callable[[float, float], None] | None = None,
    ramp: bool = True,
    park: bool = True,
    wake_time: float = RACK_WAKE_S,
    standby_w: float = RACK_STANDBY_W,
) -> PolicyResult:
    """Replay ``jobs`` for ``hours`` on ``run``'s twin under ``policy``; returns summary and plan.

    ``park`` (twin policy only): power down idle racks beyond each site's reserve and wake them
    when demand returns (``wake_time`` [s] until a woken rack takes jobs; ``standby_w`` [W]
    drawn by a parked rack); see :data:`PARK_IDLE_S` and :func:`with_power_state`.
    """
    if policy not in POLICIES:
        raise SpecError("--policy", policy, f"one of {', '.join(POLICIES)}")
    if objective not in ("energy", "carbon", "cost"):
        raise SpecError("--objective", objective, "one of energy, carbon, cost")
    if not (math.isfinite(hours) and hours > 0):
        raise SpecError("--hours", hours, "a positive number of hours")
    if not (math.isfinite(wake_time) and wake_time >= 0):
        raise SpecError("--wake-time", wake_time, "a wake time >= 0 s")
    if not (math.isfinite(standby_w) and standby_w >= 0):
        raise SpecError("--standby-power", standby_w, "a standby power >= 0 W")
    topo = topo or build_topology(run)
    p0, d0, dt = run.params, run.derived, run.dt
    steps = max(1, int(round(epoch / dt)))
    epoch = steps * dt
    n_epochs = max(1, int(math.ceil(hours * 3600.0 / epoch)))
    r_n, n_cdu = p0.n_racks, p0.n_cdus
    t = jobs.table
    arrival = t.arrival.to_numpy(float)
    duration = t.duration.to_numpy(float)
    gpus = t.gpus.to_numpy(int)
    wl = t.workload.to_numpy()
    f_low = t.power_low.to_numpy(float)
    f_high = t.power_high.to_numpy(float)
    period = t.period.to_numpy(float)
    deferral = t.deferral.to_numpy(float)
    diurnal = np.array([WORKLOAD_CLASSES[w].diurnal_amplitude for w in wl])
    rng = np.random.default_rng(seed)
    phase_of = rng.uniform(0, 1, len(t))
    # Weights per site and hour: energy 1, carbon and cost normalized to a mean of 1.
    ci = np.asarray(p0.carbon_intensity)
    pr = np.asarray(p0.price)
    w_hour = {
        "energy": np.ones_like(ci),
        "carbon": ci / max(ci.mean(), 1e-30),
        "cost": pr / max(pr.mean(), 1e-30),
    }[objective]
    ctx = _Ctx(
        topo,
        free=np.full(r_n, topo.gpus_per_rack),
        rack_peak=topo.other_idle + topo.gpus_per_rack * topo.idle_power,
        cdu_peak=np.zeros(n_cdu),
        site_peak=np.zeros(len(topo.site_keys)),
        hot_a=np.zeros(r_n),
        hot_b=np.zeros(r_n),
        rack_temp=np.zeros(r_n),
        row_load=np.zeros(n_cdu),
        rng=rng,
    )
    np.add.at(ctx.cdu_peak, topo.rack_cdu, ctx.rack_peak)
    np.add.at(ctx.site_peak, topo.rack_site, ctx.rack_peak)
    # idle-rack parking (twin): parked racks, the time a woken rack takes jobs, idle since when
    parking = policy == "twin" and park
    parked = np.zeros(r_n, bool)
    wake_at = np.full(r_n, -np.inf)
    idle_since = np.zeros(r_n)
    ctx.unavailable = np.zeros(r_n, bool)
    demand_log: list[tuple[float, int]] = []  # (arrival time, GPUs) of arrivals after t = 0
    park_stats = {"wakes": 0, "parks": 0, "parked_rack_seconds": 0.0}
    waited_for_wake: set[int] = set()
    parked_count: list[np.ndarray] = []
    design = (p0.fws_supply_setpoint, p0.tcs_supply_setpoint, p0.tcs_pump_speed)
    fws_k, tcs_k, pump = design
    state = F.initial_state(p0, d0)
    ledger = F.empty_ledger(p0.n_sites)
    ctx.hot_a, ctx.hot_b = _hot_coefficients(p0, d0, np.asarray(tcs_k)[topo.rack_cdu])
    ctx.rack_temp = np.asarray(state.gpu_temp).reshape(r_n, -1).mean(axis=1)
    # Events: (time, kind, job) with kind 0 = end, 1 = start/arrival (ends first).
    events: list = [(float(a), 1, i) for i, a in enumerate(arrival)]
    heapq.heapify(events)
    running: dict[int, _Running] = {}
    queue: list[int] = []
    start_time = np.full(len(t), np.nan)
    placed_racks: list = [None] * len(t)
    deferred = np.zeros(len(t), bool)
    rate_low = np.zeros(r_n)
    rate_high = np.zeros(r_n)
    rack_jobs: list[dict] = [dict() for _ in range(r_n)]
    periods = np.ones(r_n)
    phases = np.zeros(r_n)
    recs, sp_fws, sp_tcs, sp_pump = [], [], [], []
    counters = {"gpu": 0, "hbm": 0, "rack_cap": 0, "row_cap": 0, "site_cap": 0, "overcommit": 0}
    hot_max = -np.inf
    throttle_gpu_s = 0.0
    t_place = 0.0
    t_wall = time.perf_counter()
    hour0 = run.hour0
    reserve = topo.utilization(1.0, np.arange(r_n))
    total_gpus = float(r_n * topo.gpus_per_rack)
    busy_gpu_s = 0.0
    row_gpus = np.bincount(topo.rack_cdu, minlength=n_cdu) * float(topo.gpus_per_rack)
    per_rack = lambda x: np.broadcast_to(np.asarray(x), p0.gpu_shape).reshape(r_n, -1).max(axis=1)  # noqa: E731
    hbm_idle, hbm_dyn = (
        per_rack(p0.gpu_hbm_power_idle),
        per_rack(p0.gpu_hbm_power_share * p0.gpu_power_dynamic),
    )
    hbm_res, t_max_op = per_rack(p0.gpu_hbm_resistance), per_rack(p0.gpu_temp_max_operating)

    def level(i, tt, site):
        if diurnal[i] == 0.0:
            return 1.0
        local = (hour0 + tt / 3600.0 + topo.tz_hours[site]) % 24.0
        return 1.0 + diurnal[i] * math.cos(2 * math.pi * (local - 20.0) / 24.0)

    def apply(i, racks, counts, sign):
        s = topo.rack_site[racks[0]]
        ul = topo.utilization(f_low[i], racks) * counts / topo.gpus_per_rack
        uh = topo.utilization(f_high[i], racks) * counts / topo.gpus_per_rack
        rate_low[racks] += sign * ul
        rate_high[racks] += sign * uh
        ctx.free[racks] -= sign * counts
        add = _peak_power(topo, racks, counts, f_high[i])
        ctx.rack_peak[racks] += sign * add
        np.add.at(ctx.cdu_peak, topo.rack_cdu[racks], sign * add)
        ctx.site_peak[s] += sign * add.sum()
        np.add.at(
            ctx.row_load, topo.rack_cdu[racks], sign * counts / row_gpus[topo.rack_cdu[racks]]
        )
        for r, c in zip(racks, counts, strict=True):
            if sign > 0:
                rack_jobs[r][i] = (
                    topo.utilization(f_high[i], np.array([r]))[0],
                    c,
                    period[i] if wl[i] == "training" else 0.0,
                )
            else:
                rack_jobs[r].pop(i, None)
        if (ctx.free < 0).any():
            counters["overcommit"] += 1

    site_racks = [topo.rack_site == site for site in range(len(topo.site_keys))]
    reservation_cache: dict = {}

    def fits(i: int, site: int, free: np.ndarray) -> bool:
        """Whether job ``i`` fits the free GPUs ``free`` (R,) of ``site`` by the locality rules
        of :func:`_allocate` (one rack; whole racks for multi-rack training; else any racks)."""
        g, n_rack = int(gpus[i]), topo.gpus_per_rack
        f = free[site_racks[site] & ~ctx.unavailable]
        if len(f) == 0:
            return False
        if g <= n_rack:
            return bool(f.max() >= g)
        if wl[i] == "training":
            return int((f == n_rack).sum()) * n_rack >= g
        return int(f.sum()) >= g

    def reservation(now: float) -> tuple[int, float]:
        """EASY backfilling: the site and time (shadow) at which the queue's head job will fit,
        replaying the ends of the jobs running there; (-1, inf) if no queue. A head that fits by
        count but could not start (caps, temperatures) is reserved the site's next job end."""
        if not queue:
            return -1, math.inf
        head = queue[0]
        # the same state asks again for every job tried behind the head: answer once
        key = (now, head, len(running), int(ctx.free.sum()), int(ctx.unavailable.sum()))
        if key in reservation_cache:
            return reservation_cache[key]
        reservation_cache.clear()
        best = (-1, math.inf)
        for site in range(len(topo.site_keys)):
            ends = sorted(
                (r.end, r.racks, r.counts)
                for r in running.values()
                if topo.rack_site[r.racks[0]] == site
            )
            if fits(head, site, ctx.free):
                if ends and ends[0][0] < best[1]:
                    best = (site, ends[0][0])
                continue
            free = ctx.free.copy()
            for end, racks, counts in ends:
                if end >= best[1]:
                    break
                free[racks] += counts
                if fits(head, site, free):
                    best = (site, end)
                    break
        reservation_cache[key] = best
        return best

    def try_start(i, now):
        s0 = time.perf_counter()
        # a job behind the queue's head may not delay it: at the head's site it starts only
        # if it ends before the head's reserved start (EASY backfilling, as in Slurm's backfill)
        blocked = None
        if queue and i != queue[0]:
            site, shadow = reservation(now)
            if site >= 0 and now + duration[i] > shadow:
                blocked = ctx.unavailable
                ctx.unavailable = blocked | site_racks[site]
        try:
            alloc = _allocate(policy, ctx, int(gpus[i]), wl[i], f_high[i], _score(policy, ctx))
        finally:
            if blocked is not None:
                ctx.unavailable = blocked
        nonlocal t_place
        t_place += time.perf_counter() - s0
        if alloc is None:
            return False
        racks, counts = alloc
        apply(i, racks, counts, +1)
        start_time[i] = now
        placed_racks[i] = (racks, counts)
        running[i] = _Running(now + duration[i], i, racks, counts)
        heapq.heappush(events, (now + duration[i], 0, i))
        if policy == "spread":
            ctx.pointer = int(racks[-1]) + 1
        return True

    def reserve_racks(now: float) -> int:
        """Powered idle racks a site keeps: the peak GPU demand over any (epoch + wake) window."""
        while demand_log and demand_log[0][0] < now - PARK_HISTORY_S:
            demand_log.pop(0)
        window = epoch + wake_time
        peak, lo, acc = 0, 0, 0
        for a, g in demand_log:
            acc += g
            while demand_log[lo][0] < a - window:
                acc -= demand_log[lo][1]
                lo += 1
            peak = max(peak, acc)
        return int(math.ceil(PARK_RESERVE_FACTOR * peak / topo.gpus_per_rack))

    def rack_cost() -> np.ndarray:
        return ctx.cost if ctx.cost is not None else np.arange(r_n, dtype=float)

    def wake(racks: np.ndarray, now: float) -> None:
        if len(racks) == 0:
            return
        parked[racks] = False
        wake_at[racks] = now + wake_time
        park_stats["wakes"] += len(racks)
        heapq.heappush(events, (now + wake_time, 2, -1))

    def park_control(now: float) -> None:
        """Park idle racks beyond each site's reserve (costliest first); wake racks when short."""
        # the reserve covers recent demand and every job still waiting in the queue
        queued = sum(int(gpus[j]) for j in queue)
        need = reserve_racks(now) + int(math.ceil(queued / topo.gpus_per_rack))
        idle = ~parked & (ctx.free == topo.gpus_per_rack)
        cost = rack_cost()
        for in_s in site_racks:
            n_idle = int((idle & in_s).sum())
            if n_idle > need:
                cand = np.flatnonzero(
                    in_s & idle & ~ctx.unavailable & (now - idle_since >= PARK_IDLE_S)
                )
                cand = cand[np.argsort(-cost[cand], kind="stable")][: n_idle - need]
                parked[cand] = True
                ctx.unavailable[cand] = True
                park_stats["parks"] += len(cand)
            elif n_idle < need:
                cand = np.flatnonzero(in_s & parked)
                wake(cand[np.argsort(cost[cand], kind="stable")][: need - n_idle], now)

    def wake_for(i: int, now: float) -> None:
        """Job ``i`` (queued) found no room: wake parked racks for the GPUs that the whole queue
        needs beyond the free and waking GPUs, in the site with the most parked racks where
        the job fits once they are awake."""
        if not parking or not parked.any():
            return
        n_rack = topo.gpus_per_rack
        waking = ~parked & (wake_at > now)
        sites = range(len(topo.site_keys))
        room = {
            site: int(ctx.free[site_racks[site] & (~ctx.unavailable | waking)].sum())
            for site in sites
        }
        parked_n = {site: int((parked & site_racks[site]).sum()) for site in sites}
        ok = [st for st in sites if room[st] + parked_n[st] * n_rack >= gpus[i] and parked_n[st]]
        if not ok:
            return
        site = max(ok, key=lambda st: parked_n[st])
        queued = int(sum(gpus[j] for j in queue))  # includes i and every job queued before it
        short = queued - room[site]
        if short <= 0:
            return
        cand = np.flatnonzero(site_racks[site] & parked)
        cand = cand[np.argsort(rack_cost()[cand], kind="stable")]
        wake(cand[: int(math.ceil(short / n_rack))], now)
        waited_for_wake.add(i)

    def retry_queue(now: float) -> None:
        """Retry the queue in arrival order (jobs that cannot fit in any site's free GPUs are
        skipped without a search)."""
        if not queue:
            return

        def most_free() -> int:  # usable free GPUs of the emptiest site
            usable = np.where(ctx.unavailable, 0, ctx.free)
            return int(np.bincount(topo.rack_site, weights=usable).max())

        room = most_free()
        for j in list(queue):
            if gpus[j] <= room and try_start(j, now):
                queue.remove(j)  # the next job's reservation is for the new head
                room = most_free()
        if queue:
            wake_for(queue[0], now)  # parked racks for a head that still waits

    factor_cache: dict = {}
    for e in range(n_epochs):
        t0, t1 = e * epoch, (e + 1) * epoch
        hours_now = hour0 + t0 / 3600.0
        hour_idx = int(hours_now) % ci.shape[0]
        reoptimize = policy == "twin" and (e == 0 or (t0 % setpoint_interval) < 1e-9)
        if parking and reoptimize:
            # with the setpoints, so that the optimizer sees the racks' power state for the
            # interval (only bursts wake racks in between)
            park_control(t0)
        # ---------------- setpoints (twin) ----------------
        if reoptimize:
            s0 = time.perf_counter()
            u_mean = jnp.asarray(rate_low + 0.5 * (rate_high - rate_low))
            u_hot = np.array(
                [max((v[0] for v in rack_jobs[r].values()), default=0.0) for r in range(r_n)]
            )
            # every rack keeps room for a job at TDP: GPUs freed within the hour stay admissible
            u_hot = jnp.asarray(np.maximum(u_hot, reserve))
            weight = jnp.asarray(w_hour[hour_idx])
            # warm start from the setpoints in force; the FWS supply falls at most
            # FWS_RAMP_DOWN_K_PER_H per hour and at most that much at a time, however long the
            # setpoint interval (a longer step down would again be pulled down by the chiller)
            ramp_hours = min(setpoint_interval, 3600.0) / 3600.0
            floor = np.asarray(fws_k) - FWS_RAMP_DOWN_K_PER_H * ramp_hours
            power_now = (jnp.asarray((~parked).astype(float)), jnp.asarray(standby_w))
            opt = optimize_setpoints(
                p0,
                topo,
                u_mean,
                u_hot,
                hours_now,
                weight,
                iterations,
                x0=(fws_k, tcs_k, pump),
                fws_floor=floor if ramp else None,
                power=power_now,
            )
            (fws_k, tcs_k, pump), s, grad_u = opt.setpoints, opt.steady, opt.grad_u
            q = with_setpoints(p0, fws_k, tcs_k, pump)
            dq = _derive_jit(q)
            ctx.hot_a, ctx.hot_b = _hot_coefficients(q, dq, np.asarray(s.tcs_supply)[topo.rack_cdu])
            ctx.cost = np.asarray(grad_u)
            horizon_h = jnp.asarray(hours_now + np.arange(24.0))
            wv = jnp.asarray(w_hour[(hour_idx + np.arange(24)) % ci.shape[0]])
            factor_cache = {
                "t0": t0,
                "f": np.asarray(_marginal_factor(q, u_mean, u_hot, horizon_h, wv, power_now)),
            }
            t_place += time.perf_counter() - s0
        # ---------------- events of this epoch ----------------
        acc_low = np.zeros(r_n)
        acc_high = np.zeros(r_n)
        acc_busy = 0.0
        acc_on = np.zeros(r_n)
        t_last_busy = [t0]
        lvl_now = np.ones(r_n)
        t_last = t0
        hot_epoch = np.zeros(r_n)
        for r in np.flatnonzero(ctx.free < topo.gpus_per_rack):
            hot_epoch[r] = max((v[0] for v in rack_jobs[r].values()), default=0.0)
        while events and events[0][0] < t1:
            tt, kind, i = heapq.heappop(events)
            acc_low += rate_low * (tt - t_last)
            acc_high += rate_high * (tt - t_last)
            acc_busy += (total_gpus - ctx.free.sum()) * (tt - t_last)
            acc_on += ~parked * (tt - t_last)
            t_last = tt
            t_last_busy[0] = tt
            if kind == 2:  # woken racks take jobs from now; idle counts from here
                awake = ctx.unavailable & ~parked & (wake_at <= tt)
                idle_since[awake] = tt
                ctx.unavailable = parked | (wake_at > tt)
                retry_queue(tt)
                continue
            if kind == 0:
                run_i = running.pop(i)
                apply(i, run_i.racks, run_i.counts, -1)
                idle_since[run_i.racks[ctx.free[run_i.racks] == topo.gpus_per_rack]] = tt
                retry_queue(tt)  # capacity freed
                continue
            # arrival (or the release of a deferred job)
            if policy == "twin" and deferral[i] > 0 and not deferred[i] and factor_cache:
                f = factor_cache["f"]  # (24, S)
                k_max = int(min(deferral[i] // 3600.0, 23))
                h_now = int((tt - factor_cache["t0"]) // 3600.0)
                # Only within the replay: the job must still finish before its end, so every
                # policy delivers the same work inside the horizon.
                k_max = int(min(k_max, (n_epochs * epoch - tt - duration[i]) // 3600.0))
                if k_max >= 1 and h_now + k_max < f.shape[0]:
                    best = f[h_now : h_now + k_max + 1].min(axis=1)
                    k = int(np.argmin(best))
                    if k > 0 and best[k] < 0.995 * best[0]:
                        deferred[i] = True
                        heapq.heappush(events, (tt + k * 3600.0, 1, i))
                        continue
            if tt > 0:
                demand_log.append((tt, int(gpus[i])))
            if not try_start(i, tt):
                queue.append(i)
                wake_for(i, tt)
            else:
                for r in placed_racks[i][0]:
                    hot_epoch[r] = max(hot_epoch[r], rack_jobs[r][i][0])
        acc_low += rate_low * (t1 - t_last)
        acc_high += rate_high * (t1 - t_last)
        acc_on += ~parked * (t1 - t_last)
        powered = acc_on / epoch
        park_stats["parked_rack_seconds"] += float(epoch * r_n - acc_on.sum())
        parked_count.append(np.bincount(topo.rack_site[parked], minlength=len(topo.site_keys)))
        busy_gpu_s += float(acc_busy + (total_gpus - ctx.free.sum()) * (t1 - t_last_busy[0]))
        acc_busy = 0.0
        # Diurnal inference level: scale racks by the epoch-mid level of their inference jobs.
        mid = 0.5 * (t0 + t1)
        for s in range(len(topo.site_keys)):
            lvl_now[topo.rack_site == s] = 1.0 + 0.25 * math.cos(
                2 * math.pi * (((hour0 + mid / 3600.0 + topo.tz_hours[s]) % 24.0) - 20.0) / 24.0
            )
        inf_share = np.zeros(r_n)
        for r in np.flatnonzero(ctx.free < topo.gpus_per_rack):
            tot = sum(v[1] for v in rack_jobs[r].values())
            inf = sum(v[1] for j, v in rack_jobs[r].items() if diurnal[j] > 0)
            inf_share[r] = inf / tot if tot else 0.0
            trains = [(v[1], v[2], j) for j, v in rack_jobs[r].items() if v[2] > 0]
            if trains:
                _, per, j = max(trains)
                periods[r], phases[r] = per, phase_of[j] * per
        scale = 1.0 + (lvl_now - 1.0) * inf_share
        low = acc_low / epoch * scale
        high = acc_high / epoch * scale
        # ---------------- advance the twin ----------------
        q_hot = with_setpoints(p0, fws_k, tcs_k, pump)  # racks powered: temperature checks
        q = with_schedule(with_power_state(q_hot, powered, standby_w), low, high, periods, phases)
        dq = _derive_jit(q) if policy == "twin" else d0
        state, ledger, rec = _run_jit(q, dq, state, ledger, dt, hour0, 1, steps, run.n_sub)
        rec = jax.tree.map(lambda x: np.asarray(x)[0], rec)
        recs.append(rec)
        sp_fws.append(np.asarray(fws_k) - ZERO_CELSIUS_K)
        sp_tcs.append(np.asarray(tcs_k) - ZERO_CELSIUS_K)
        sp_pump.append(np.asarray(pump))
        if policy == "coolest":
            ctx.rack_temp = np.asarray(state.gpu_temp).reshape(r_n, -1).mean(axis=1)
        if policy != "twin":
            ctx.hot_a, ctx.hot_b = _hot_coefficients(
                q_hot, dq, np.asarray(state.tcs_supply)[topo.rack_cdu]
            )
        # ---------------- constraint audit at the simulated inlet ----------------
        t_in = np.asarray(state.tcs_supply)[topo.rack_cdu]
        a_act, b_act = _hot_coefficients(q_hot, dq, t_in)
        busy = hot_epoch > 0
        hot = np.where(busy, a_act + b_act * hot_epoch, -np.inf)
        hot_max = max(hot_max, float(hot.max()) if busy.any() else -np.inf)
        counters["gpu"] += int((hot > topo.gpu_limit + 1e-6).sum())
        over_op = hot > t_max_op
        throttle_gpu_s += float(((topo.gpus_per_rack - ctx.free) * over_op).sum() * epoch)
        hbm = np.where(busy, t_in + (hbm_idle + hbm_dyn * hot_epoch) * hbm_res, -np.inf)
        counters["hbm"] += int((hbm > topo.hbm_limit + 1e-6).sum())
        counters["rack_cap"] += int((ctx.rack_peak > topo.rack_cap * (1 + 1e-9)).sum())
        counters["row_cap"] += int((ctx.cdu_peak > topo.cdu_cap * (1 + 1e-9)).sum())
        counters["site_cap"] += int((ctx.site_peak > topo.site_cap * (1 + 1e-9)).sum())
        if progress:
            progress((e + 1) / n_epochs, time.perf_counter() - t_wall)
    wall = time.perf_counter() - t_wall
    led = jax.tree.map(np.asarray, ledger)
    kwh = 3.6e6
    energy = {
        "it": float(led.it_energy.sum() / kwh),
        "pumps": float(led.pump_energy.sum() / kwh),
        "fans": float(led.fan_energy.sum() / kwh),
        "chillers": float(led.chiller_energy.sum() / kwh),
        "electrical_losses": float(led.electrical_loss_energy.sum() / kwh),
    }
    energy["cooling"] = energy["pumps"] + energy["fans"] + energy["chillers"]
    energy["total"] = energy["it"] + energy["cooling"] + energy["electrical_losses"]
    horizon = n_epochs * epoch
    started = ~np.isnan(start_time)
    # waits of jobs not deferred; a job still queued at the end counts up to the horizon
    wait = (np.where(started, start_time, horizon) - arrival)[
        (started | (arrival < horizon)) & ~deferred
    ]
    max_t = max(float(led.max_gpu_temp.max()), hot_max)
    summary = {
        "policy": policy,
        "objective": objective,
        "facility": run.spec.name,
        "start": run.start.isoformat(),
        "hours": horizon / 3600.0,
        "jobs": int((arrival < horizon).sum()),
        "jobs_started": int((started & (start_time < horizon)).sum()),
        "energy_kwh": energy,
        "carbon_kg": float(led.carbon_mass.sum()),
        "cost": float(led.cost.sum()),
        "pue": energy["total"] / energy["it"],
        "max_gpu_temperature_c": max_t - ZERO_CELSIUS_K,
        "throttle_minutes": (throttle_gpu_s + float(led.throttle_gpu_seconds.sum())) / 60.0,
        "violations": int(sum(counters.values())),
        "violations_by_constraint": counters,
        "deferred_jobs": int(deferred.sum()),
        "queued_jobs": int(len(queue)),
        # waiting for capacity (deferral excluded): start (or the horizon) - arrival
        "mean_wait_seconds": float(np.mean(wait)) if len(wait) else 0.0,
        "max_wait_seconds": float(np.max(wait)) if len(wait) else 0.0,
        "parking": parking,
        "parked_rack_hours": park_stats["parked_rack_seconds"] / 3600.0,
        "rack_parks": park_stats["parks"],
        "rack_wakes": park_stats["wakes"],
        "jobs_waited_for_wake": len(waited_for_wake),
        "mean_gpu_load": busy_gpu_s / (total_gpus * horizon),
        "work_gpu_hours": busy_gpu_s / 3600.0,
        "kwh_per_gpu_hour": energy["total"] / max(busy_gpu_s / 3600.0, 1e-9),
        "placement_seconds": t_place,
        "wall_seconds": wall,
        "sites": {
            k: {
                "it_kwh": float(led.it_energy[i] / kwh),
                "cooling_kwh": float(
                    (led.pump_energy[i] + led.fan_energy[i] + led.chiller_energy[i]) / kwh
                ),
                "chiller_kwh": float(led.chiller_energy[i] / kwh),
                "chiller_hours": float(led.chiller_seconds[i] / 3600.0),
                "carbon_kg": float(led.carbon_mass[i]),
            }
            for i, k in enumerate(topo.site_keys)
        },
    }
    plan = _plan_dataset(
        run,
        topo,
        t,
        start_time,
        placed_racks,
        deferred,
        recs,
        sp_fws,
        sp_tcs,
        sp_pump,
        epoch,
        summary,
        np.stack(parked_count),
    )
    return PolicyResult(policy, summary, plan)


_run_jit = jax.jit(F.run_records, static_argnums=(4, 5, 6, 7, 8))
_derive_jit = jax.jit(F.derive)


def _plan_dataset(
    run, topo, t, start_time, placed, deferred, recs, fws, tcs, pump, epoch, summary, parked
):
    n = len(recs)
    times = run.start + pd.to_timedelta((np.arange(n) + 0.5) * epoch, unit="s")
    site_idx = np.array([topo.rack_site[pl[0][0]] if pl is not None else -1 for pl in placed])
    racks = [
        ";".join(f"{r}:{c}" for r, c in zip(*pl, strict=True)) if pl is not None else ""
        for pl in placed
    ]
    stack = lambda name: np.stack([getattr(r, name) for r in recs])  # noqa: E731
    ds = xr.Dataset(
        {
            "job_site": ("job", np.array([topo.site_keys[s] if s >= 0 else "" for s in site_idx])),
            "job_racks": (
                "job",
                np.array(racks),
                {"long_name": "rack:GPUs allocations (NVLink domains)"},
            ),
            "job_gpus": ("job", t.gpus.to_numpy()),
            "job_workload": ("job", t.workload.to_numpy().astype(str)),
            "job_arrival": ("job", t.arrival.to_numpy(), {"units": "s"}),
            "job_start": ("job", start_time, {"units": "s"}),
            "job_deferred": ("job", deferred.astype(np.int8)),
            "it_power": (("time", "site"), stack("it_power"), {"units": "W"}),
            "pump_power": (("time", "site"), stack("pump_power"), {"units": "W"}),
            "fan_power": (("time", "site"), stack("fan_power"), {"units": "W"}),
            "chiller_power": (("time", "site"), stack("chiller_power"), {"units": "W"}),
            "max_gpu_temperature": (
                ("time", "site"),
                stack("max_gpu_temp") - ZERO_CELSIUS_K,
                {"units": "degC"},
            ),
            "mean_gpu_temperature": (
                ("time", "site"),
                stack("mean_gpu_temp") - ZERO_CELSIUS_K,
                {"units": "degC"},
            ),
            "fws_supply_temperature": (
                ("time", "site"),
                stack("fws_supply_temp") - ZERO_CELSIUS_K,
                {"units": "degC"},
            ),
            "temp_air": (("time", "site"), stack("temp_air") - ZERO_CELSIUS_K, {"units": "degC"}),
            "fws_supply_setpoint": (("time", "building"), np.stack(fws), {"units": "degC"}),
            "tcs_supply_setpoint": (("time", "cdu"), np.stack(tcs), {"units": "degC"}),
            "tcs_pump_speed": (("time", "cdu"), np.stack(pump), {"units": "1"}),
            "parked_racks": (
                ("time", "site"),
                parked,
                {"long_name": "racks powered down (idle-rack parking) at the epoch end"},
            ),
        },
        coords={
            "time": times.tz_convert(None),
            "site": topo.site_keys,
            "job": t.id.to_numpy().astype(str),
        },
        attrs={
            "policy": summary["policy"],
            "facility": run.spec.name,
            "epoch_seconds": epoch,
            "summary_json": json.dumps(summary),
        },
    )
    return ds


# ============================================================================ MILP (small cases)
def milp_placement(
    cost: np.ndarray,
    job_gpus: np.ndarray,
    free: np.ndarray,
    job_power: np.ndarray,
    rack_cap: np.ndarray,
):
    """Exact linearized placement: each job (<= one rack) on one rack, minimizing Σ cost[j, r] x[j, r]
    s.t. GPUs and rack power caps (``scipy.optimize.milp``, HiGHS). Returns the rack of each job."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    nj, nr = cost.shape
    nv = nj * nr
    a = lil_matrix((nj + 2 * nr, nv))
    for j in range(nj):
        a[j, j * nr : (j + 1) * nr] = 1.0
        for r in range(nr):
            a[nj + r, j * nr + r] = job_gpus[j]
            a[nj + nr + r, j * nr + r] = job_power[j]
    lo = np.r_[np.ones(nj), np.full(2 * nr, -np.inf)]
    hi = np.r_[np.ones(nj), free, rack_cap]
    res = milp(
        cost.ravel(),
        constraints=LinearConstraint(a.tocsr(), lo, hi),
        integrality=np.ones(nv),
        bounds=Bounds(0, 1),
    )
    if not res.success:
        raise Infeasible(
            "milp placement", res.message, "a feasible assignment of the jobs to racks"
        )
    return res.x.reshape(nj, nr).argmax(axis=1), float(res.fun)


def place_snapshot(
    p: F.FacilityParams,
    topo: Topology,
    gpus: np.ndarray,
    workload: np.ndarray,
    frac_mean: np.ndarray,
    frac_high: np.ndarray,
    hours: float,
    weight=None,
) -> tuple[np.ndarray, float]:
    """Twin rounding for a set of jobs present together (each <= one rack): jobs in order, each
    on the feasible rack of least marginal cost (gradient of the steady objective with respect to
    rack utilization, refreshed after every job). Returns each job's rack and the objective [W]."""
    r_n = p.n_racks
    weight = jnp.ones(p.n_sites) if weight is None else jnp.asarray(weight)
    h = jnp.asarray(hours, dtype=float)
    u_mean = np.zeros(r_n)
    u_hot = np.zeros(r_n)
    d = _derive_jit(p)
    ctx = _Ctx(
        topo,
        np.full(r_n, topo.gpus_per_rack),
        topo.other_idle + topo.gpus_per_rack * topo.idle_power,
        np.zeros(p.n_cdus),
        np.zeros(len(topo.site_keys)),
        *_hot_coefficients(p, d, np.asarray(p.tcs_supply_setpoint)[topo.rack_cdu]),
        np.zeros(r_n),
        np.zeros(p.n_cdus),
        np.random.default_rng(0),
    )
    np.add.at(ctx.cdu_peak, topo.rack_cdu, ctx.rack_peak)
    np.add.at(ctx.site_peak, topo.rack_site, ctx.rack_peak)
    out = np.full(len(gpus), -1)
    for j in range(len(gpus)):
        _, _, grad_u = _evaluate(p, jnp.asarray(u_mean), jnp.asarray(u_hot), h, weight)
        ctx.cost = np.asarray(grad_u)
        alloc = _allocate(
            "twin", ctx, int(gpus[j]), str(workload[j]), float(frac_high[j]), _score("twin", ctx)
        )
        if alloc is None:
            raise Infeasible(
                f"job {j} gpus", int(gpus[j]), "a rack with enough free GPUs within the caps"
            )
        r = int(alloc[0][0])
        out[j] = r
        ctx.free[r] -= gpus[j]
        add = _peak_power(topo, np.array([r]), np.array([gpus[j]]), frac_high[j])[0]
        ctx.rack_peak[r] += add
        ctx.cdu_peak[topo.rack_cdu[r]] += add
        ctx.site_peak[topo.rack_site[r]] += add
        u_mean[r] += topo.utilization(frac_mean[j], np.array([r]))[0] * gpus[j] / topo.gpus_per_rack
        u_hot[r] = max(u_hot[r], topo.utilization(frac_high[j], np.array([r]))[0])
    val, _, _ = _evaluate(p, jnp.asarray(u_mean), jnp.asarray(u_hot), h, weight)
    return out, float(val)


def snapshot_objective(p, topo: Topology, assign, gpus, frac_mean, frac_high, hours, weight=None):
    """Weighted steady facility power [W] of assignments ``assign`` (A, jobs) -> (A,) (vmapped)."""
    weight = jnp.ones(p.n_sites) if weight is None else jnp.asarray(weight)
    assign = np.atleast_2d(assign)
    r_n = p.n_racks
    racks = np.arange(r_n)
    um = np.zeros((len(assign), r_n))
    uh = np.zeros((len(assign), r_n))
    for j in range(assign.shape[1]):
        rj = assign[:, j]
        np.add.at(
            um,
            (np.arange(len(assign)), rj),
            topo.utilization(frac_mean[j], rj) * gpus[j] / topo.gpus_per_rack,
        )
        uh[np.arange(len(assign)), rj] = np.maximum(
            uh[np.arange(len(assign)), rj], topo.utilization(frac_high[j], rj)
        )
    del racks
    return np.asarray(
        _snapshot_eval(p, jnp.asarray(um), jnp.asarray(uh), jnp.asarray(hours, dtype=float), weight)
    )


@eqx.filter_jit
def _snapshot_eval(p, um, uh, h, weight):
    d = F.derive(p)
    return jax.vmap(lambda a, b: jnp.sum(weight * steady_state(p, d, a, b, h).total))(um, uh)


def compare(
    run: Run, jobs: JobSet, hours: float, policies=POLICIES, **kw
) -> dict[str, PolicyResult]:
    """Replay every policy on the same jobs and twin."""
    topo = kw.pop("topo", None) or build_topology(run, kw.pop("caps", None), kw.pop("margin", 5.0))
    check_feasible(run, topo, jobs)
    return {pol: replay(run, jobs, pol, hours, topo=topo, **kw) for pol in policies}


__all__ = [
    "POLICIES",
    "Infeasible",
    "Topology",
    "build_topology",
    "check_feasible",
    "compare",
    "milp_placement",
    "optimize_setpoints",
    "place_snapshot",
    "snapshot_objective",
    "parse_caps",
    "replay",
    "steady_state",
]
