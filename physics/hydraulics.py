r"""Hydraulics of the closed loops: pumps with affinity laws, branch resistances, flow splits.

Pressure drops are quadratic in flow, :math:`\Delta p = K\,Q|Q|`, for fully turbulent pipes and
fittings (and a conservative approximation for cold-plate channels). A centrifugal pump at
relative speed :math:`s` follows the affinity laws ([1]_, [2]_ case 6):

.. math:: H(Q, s) = s^2 H_0 - k\,Q^2,\qquad Q \propto s,\ H \propto s^2,\ P \propto s^3

All flow splits are solved with :mod:`physics.solvers`, so gradients come from the implicit
function theorem, not from unrolled iterations.

References
----------
.. [1] I. J. Karassik et al., *Pump Handbook*, 4th ed., McGraw-Hill, 2008, ch. 2 (affinity laws).
.. [2] ``shared/refs/physics-references.md`` section 3 and section 8 cases 6 and 7.
.. [3] I. E. Idelchik, *Handbook of Hydraulic Resistance*, 3rd ed., 1996 (loss coefficients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from physics.constants import STANDARD_GRAVITY
from physics.solvers import solve_monotone, solve_newton

GRAVITY = STANDARD_GRAVITY  # [m s⁻²]


def pump_head(flow, speed, head_shutoff, curve_coeff):
    r"""Pump pressure rise [Pa] at volumetric flow ``flow`` [m³ s⁻¹] and relative speed [-]:
    :math:`\Delta p = s^2\Delta p_0 - k Q^2` (affinity-consistent quadratic curve, [1]_)."""
    return speed**2 * head_shutoff - curve_coeff * flow**2


def pump_curve_from_design(flow_design, pressure_design, shutoff_ratio=1.25):
    r"""Quadratic pump curve through the design point ([1]_).

    Returns ``(head_shutoff [Pa], curve_coeff [Pa s² m⁻⁶])`` with shut-off head
    ``shutoff_ratio`` times the design head (1.2–1.3 typical for end-suction pumps).
    """
    head_shutoff = shutoff_ratio * pressure_design
    return head_shutoff, (head_shutoff - pressure_design) / flow_design**2


def pump_power(flow, pressure_rise, efficiency):
    r"""Electric (wire-to-water) pump power [W]: :math:`P = Q\,\Delta p/\eta` ([2]_ case 7)."""
    return flow * pressure_rise / efficiency


def affinity_scaled(flow_design, pressure_design, power_design, speed):
    r"""Affinity laws on a fixed system curve ([2]_ case 6): :math:`(sQ, s^2\Delta p, s^3 P)`."""
    return speed * flow_design, speed**2 * pressure_design, speed**3 * power_design


def branch_pressure_drop(resistance, flow):
    r"""Quadratic branch loss [Pa]: :math:`\Delta p = K Q |Q|` ([3]_)."""
    return resistance * flow * jnp.abs(flow)


def resistance_from_design(pressure_design, flow_design):
    r"""Loss coefficient [Pa s² m⁻⁶] of a branch with ``pressure_design`` at ``flow_design``."""
    return pressure_design / flow_design**2


def parallel_resistance(resistances, axis=-1):
    r"""Equivalent resistance of quadratic branches in parallel [Pa s² m⁻⁶]:
    :math:`K_{eq} = \bigl(\sum_i K_i^{-1/2}\bigr)^{-2}`."""
    return jnp.sum(resistances**-0.5, axis=axis) ** -2.0


def loop_buoyancy_pressure(density_rising, density_falling, height):
    r"""Buoyancy drive of a closed loop along its flow direction [Pa]: the fluid rises by
    ``height`` [m] in one leg of density ``density_rising`` and falls back in the other, of
    density ``density_falling`` [kg m⁻³]:

    .. math:: \Delta p_{buoy} = (\rho_{fall} - \rho_{rise})\,g\,h

    Positive helps the flow (a thermosiphon: heated at the bottom, cooled at the top), negative
    opposes it. The static head of each leg cancels around a closed loop; only the density
    difference remains (hydrostatic balance around the loop). In a facility-water loop the cold
    supply rises to the CDUs, which heat it, and the warm return falls to the plant at grade:
    :math:`\rho_{fall} = \rho_{ret} < \rho_{sup} = \rho_{rise}`, so buoyancy opposes the
    flow to the upper floors."""
    return (density_falling - density_rising) * GRAVITY * height


def row_flow_split(speed, head_shutoff, curve_coeff, rack_resistance, header_resistance):
    r"""Rack flows [m³ s⁻¹] in a row fed by one CDU pump through a direct-return header ladder.

    Rack :math:`i` (0 nearest the CDU) sees the pump pressure less the supply and return header
    losses of the segments before it:

    .. math:: K_i q_i^2 = \Delta p_0 - \sum_{j<i} 2K_h\Bigl(\sum_{k>j} q_k\Bigr)^2,\qquad
              \Delta p_0 = s^2\Delta p_{00} - k\Bigl(\sum_k q_k\Bigr)^2

    solved by damped Newton with implicit differentiation. ``rack_resistance`` has shape (n,).
    Flows are NaN where the solve does not converge, so a failed split shows in every result
    instead of passing for a flow.
    """
    n = rack_resistance.shape[0]

    def residual(q):
        total = jnp.sum(q)
        dp0 = pump_head(total, speed, head_shutoff, curve_coeff)
        downstream = total - jnp.cumsum(q)  # flow in the segment after rack i
        seg_loss = 2.0 * header_resistance * downstream[:-1] ** 2
        dp = dp0 - jnp.concatenate([jnp.zeros(1), jnp.cumsum(seg_loss)])
        return (rack_resistance * q * jnp.abs(q) - dp) / (head_shutoff + 1.0)

    k_eq = parallel_resistance(rack_resistance)
    q_guess = speed * jnp.sqrt(head_shutoff / (k_eq + curve_coeff)) / n * jnp.ones(n)
    flows, converged = solve_newton(residual, q_guess)
    return jnp.where(converged, flows, jnp.nan)


def floor_flow_split(
    speed,
    head_shutoff,
    curve_coeff,
    riser_resistance,
    branch_resistance,
    branches_per_floor,
    buoyancy_pressure,
):
    r"""Per-branch flow [m³ s⁻¹] on each floor of a building fed by one plant pump.

    Floor :math:`f` has ``branches_per_floor[f]`` identical branches (CDU primaries) of
    resistance :math:`K_b` behind a riser of resistance :math:`K_{r,f}`, with the loop's
    buoyancy drive :math:`\Delta p_{b,f}` along the flow to that floor
    (:func:`loop_buoyancy_pressure`: positive helps the flow, negative opposes it):

    .. math:: \Delta p = K_{r,f}(n_f q_f)^2 + K_b q_f^2 - \Delta p_{b,f},\qquad
              \Delta p = s^2\Delta p_{00} - k\Bigl(\sum_f n_f q_f\Bigr)^2

    The common pressure :math:`\Delta p` is found by a monotone scalar solve.
    """
    n = branches_per_floor

    def floor_flows(dp):
        return jnp.sqrt(
            jnp.clip(dp + buoyancy_pressure, 0.0, None)
            / (riser_resistance * n**2 + branch_resistance)
        )

    def residual(dp):
        total = jnp.sum(n * floor_flows(dp))
        return pump_head(total, speed, head_shutoff, curve_coeff) - dp

    dp = solve_monotone(residual, jnp.asarray(0.0), speed**2 * head_shutoff)
    return floor_flows(dp), dp


def rack_flow_split_many(speed, head_shutoff, curve_coeff, rack_resistance, header_resistance):
    """:func:`row_flow_split` vmapped over rows: ``speed`` (m,), ``rack_resistance`` (m, n)."""
    return jax.vmap(row_flow_split, in_axes=(0, None, None, 0, None))(
        speed, head_shutoff, curve_coeff, rack_resistance, header_resistance
    )
