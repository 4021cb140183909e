"""The setpoints in force during a replay and, for the twin policy, their hourly re-optimization
with the racks' marginal costs and the forecast that defers flexible jobs."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from physics import facility as F
from twin.placement.allocation import RackState
from twin.placement.scheduler import RackLoad
from twin.placement.setpoints import FWS_RAMP_DOWN_K_PER_H, optimize_setpoints
from twin.placement.steady import (
    derive_jit,
    evaluate,
    hot_coefficients,
    marginal_factor,
    with_setpoints,
)
from twin.placement.topology import Topology

#: Hours of marginal-cost forecast (and the latest a flexible job is deferred by, less one).
FORECAST_HOURS = 24
#: A flexible job is deferred only if its hour's marginal cost is this fraction of now's or less.
DEFER_GAIN = 0.995


@dataclass
class SetpointControl:
    """FWS supply (B,) [K], TCS supply (N,) [K] and pump speeds (N,) in force (the design
    setpoints until the twin policy re-optimizes them), and after each re-optimization the
    weighted facility power per W of IT per site over the next hours (``factor`` (24, S), from
    ``factor_t0`` [s])."""

    p: F.FacilityParams
    topo: Topology
    w_hour: np.ndarray  # (hours of the year, S) weight of a W per site and hour
    iterations: int
    setpoint_interval: float  # [s]
    ramp: bool
    standby_w: float  # [W]
    fws_k: object
    tcs_k: object
    pump: object
    factor: np.ndarray | None = None
    factor_t0: float = 0.0

    @classmethod
    def at_design(
        cls,
        p: F.FacilityParams,
        topo: Topology,
        w_hour: np.ndarray,
        iterations: int,
        setpoint_interval: float,
        ramp: bool,
        standby_w: float,
    ) -> SetpointControl:
        """The spec's design setpoints in force."""
        fws, tcs, pump = p.fws_supply_setpoint, p.tcs_supply_setpoint, p.tcs_pump_speed
        return cls(p, topo, w_hour, iterations, setpoint_interval, ramp, standby_w, fws, tcs, pump)

    @property
    def setpoints(self) -> tuple:
        """(FWS supply K (B,), TCS supply K (N,), pump speed (N,)) in force."""
        return self.fws_k, self.tcs_k, self.pump

    def reoptimize(
        self,
        t0: float,
        hours_now: float,
        load: RackLoad,
        racks: RackState,
        parked: np.ndarray,
        optimize: bool = True,
    ) -> None:
        """Optimize the setpoints for the racks' load and power state at hour-of-year
        ``hours_now`` (``optimize`` False: keep the setpoints in force, as the
        ``twin-placement`` ablation does); set the racks' hottest-GPU coefficients and marginal
        costs there, and the marginal-cost forecast from ``t0`` [s]."""
        p, topo = self.p, self.topo
        r_n = topo.n_racks
        hour_idx = int(hours_now) % self.w_hour.shape[0]
        u_mean = jnp.asarray(load.low + 0.5 * (load.high - load.low))
        # The hottest GPU as the simulation runs it: the rack's GPUs on one schedule, at its
        # high phase, the valve at the flow of its (filtered, so mean) heat; every rack keeps
        # room for jobs at TDP on its free GPUs, at the flow their heat opens the valve to
        # (docs/placement.md, "The hottest GPU")
        room = racks.free / topo.gpus_per_rack * topo.utilization(1.0, np.arange(r_n))
        u_hot = jnp.asarray(np.asarray(load.high) + room)
        u_valve = jnp.asarray(np.asarray(u_mean) + room)
        weight = jnp.asarray(self.w_hour[hour_idx])
        # warm start from the setpoints in force; the FWS supply falls at most
        # FWS_RAMP_DOWN_K_PER_H per hour and at most that much at a time, however long the
        # setpoint interval (a longer step down would again be pulled down by the chiller)
        ramp_hours = min(self.setpoint_interval, 3600.0) / 3600.0
        floor = np.asarray(self.fws_k) - FWS_RAMP_DOWN_K_PER_H * ramp_hours
        power_now = (jnp.asarray((~parked).astype(float)), jnp.asarray(self.standby_w))
        if optimize:
            opt = optimize_setpoints(
                p,
                topo,
                u_mean,
                u_hot,
                hours_now,
                weight,
                self.iterations,
                x0=self.setpoints,
                fws_floor=floor if self.ramp else None,
                power=power_now,
                u_valve=u_valve,
            )
            self.fws_k, self.tcs_k, self.pump = opt.setpoints
            steady, grad_u = opt.steady, opt.grad_u
        else:
            h = jnp.asarray(hours_now, dtype=float)
            q_now = with_setpoints(p, *self.setpoints)
            _, steady, grad_u = evaluate(q_now, u_mean, u_hot, h, weight, power_now, u_valve)
        q = with_setpoints(p, *self.setpoints)
        dq = derive_jit(q)
        tcs_rack = np.asarray(steady.tcs_supply)[topo.rack_cdu]
        racks.hot_a, racks.hot_b = hot_coefficients(q, dq, tcs_rack)
        racks.cost = np.asarray(grad_u)
        horizon_h = jnp.asarray(hours_now + np.arange(float(FORECAST_HOURS)))
        ahead = (hour_idx + np.arange(FORECAST_HOURS)) % self.w_hour.shape[0]
        wv = jnp.asarray(self.w_hour[ahead])
        self.factor = np.asarray(marginal_factor(q, u_mean, u_hot, horizon_h, wv, power_now))
        self.factor_t0 = t0

    def hold_static(self, hours: float, u_mean: np.ndarray, u_hot: np.ndarray) -> None:
        """Optimize the setpoints once for the steady load ``u_mean``/``u_hot`` (R,) at
        hour-of-year ``hours`` (every rack powered) and hold them (``pack-static``)."""
        hour_idx = int(hours) % self.w_hour.shape[0]
        opt = optimize_setpoints(
            self.p,
            self.topo,
            jnp.asarray(u_mean),
            jnp.asarray(u_hot),
            hours,
            jnp.asarray(self.w_hour[hour_idx]),
            self.iterations,
            u_valve=jnp.asarray(u_hot),  # room for a whole-rack job at TDP, at its flow
        )
        self.fws_k, self.tcs_k, self.pump = opt.setpoints

    def deferral_hours(self, now: float, window: float, duration: float, horizon: float) -> int:
        """Whole hours to defer a flexible job (``window`` [s] of deferral, ``duration`` [s])
        arriving at ``now`` [s]: the hour of least forecast marginal cost if that saves more than
        0.5 %, else 0. Only within the replay: the job must still finish by ``horizon`` [s], so
        every policy delivers the same work inside it."""
        if self.factor is None:
            return 0
        f = self.factor
        k_max = int(min(window // 3600.0, FORECAST_HOURS - 1))
        h_now = int((now - self.factor_t0) // 3600.0)
        k_max = int(min(k_max, (horizon - now - duration) // 3600.0))
        if k_max >= 1 and h_now + k_max < f.shape[0]:
            best = f[h_now : h_now + k_max + 1].min(axis=1)
            k = int(np.argmin(best))
            if k > 0 and best[k] < DEFER_GAIN * best[0]:
                return k
        return 0
