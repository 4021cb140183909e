r"""Cold plates: flow-dependent conductance by ε-NTU, junction-to-inlet resistance, fluid rise.

A cold plate's copper base is nearly isothermal, so the coolant sees a wall at uniform
temperature: :math:`\varepsilon = 1 - e^{-NTU}` with :math:`NTU = UA/(\dot m c_p)`
(:func:`physics.heat_exchangers.effectiveness_isothermal_wall`). The convective conductance
grows with flow as :math:`UA = UA_{ref}(\dot m/\dot m_{ref})^{n}` (Dittus–Boelter-type scaling,
:math:`n = 0.8` turbulent; microchannel cold plates in transitional flow are closer to 0.5–0.8).

References
----------
.. [1] F. P. Incropera et al., *Fundamentals of Heat and Mass Transfer*, 6th ed., Eq. 8.60
   (Dittus–Boelter) and Eq. 11.35a.
.. [2] ``shared/refs/physics-references.md`` section 1: R = (T_j − T_coolant)/Q =
   R_TIM + R_base + R_conv, R_conv dominant; GB200-class plate < 0.03 K/W; case 8.4.
"""

from __future__ import annotations

import jax.numpy as jnp

from physics.heat_exchangers import effectiveness_isothermal_wall


def coldplate_conductance(ua_ref, mass_flow, mass_flow_ref, exponent=0.8):
    r"""Convective conductance of the plate [W K⁻¹]: :math:`UA = UA_{ref}(\dot m/\dot m_{ref})^n`."""
    return ua_ref * (mass_flow / mass_flow_ref) ** exponent


def coldplate_effectiveness(ua, capacity_rate):
    r"""Plate effectiveness [-]: :math:`\varepsilon = 1 - e^{-UA/(\dot m c_p)}`."""
    return effectiveness_isothermal_wall(ua / capacity_rate)


def junction_to_inlet_resistance(resistance_junction_wall, ua, capacity_rate):
    r"""Resistance from junction to the plate's *inlet* coolant [K W⁻¹].

    .. math:: R_{ji} = R_{jw} + \frac{1}{\varepsilon\,\dot m c_p}

    :math:`R_{jw}` (die, TIM, base conduction) is in series with the wall-to-fluid path; the
    heat into the coolant is :math:`Q = (T_j - T_{in})/R_{ji}` ([1]_ Eq. 11.35a).
    """
    return resistance_junction_wall + 1.0 / (
        coldplate_effectiveness(ua, capacity_rate) * capacity_rate
    )


def junction_to_mean_fluid_resistance(resistance_junction_inlet, capacity_rate):
    r"""The vendor-style resistance referred to the mean fluid temperature [K W⁻¹] ([2]_, case 4).

    .. math:: R_{jm} = R_{ji} - \frac{1}{2\,\dot m c_p}

    since :math:`T_{mean} = T_{in} + Q/(2\dot m c_p)`.
    """
    return resistance_junction_inlet - 0.5 / capacity_rate


def coolant_temperature_rise(heat, capacity_rate):
    r"""Coolant temperature rise across a plate, tray or rack [K]: :math:`\Delta T = Q/(\dot m c_p)`."""
    return heat / capacity_rate


def junction_temperature_steady(temp_inlet, heat, resistance_junction_mean, capacity_rate):
    r"""Steady junction temperature [K] ([2]_ case 8.4):

    .. math:: T_j = T_{in} + \frac{Q}{2\dot m c_p} + R_{jm} Q
    """
    return temp_inlet + 0.5 * heat / capacity_rate + resistance_junction_mean * heat


def ua_for_mean_fluid_resistance(resistance_junction_mean, resistance_junction_wall, capacity_rate):
    r"""Plate conductance [W K⁻¹] that gives a vendor resistance :math:`R_{jm}` at a flow.

    Inverts :func:`junction_to_mean_fluid_resistance`: :math:`1/(\varepsilon C) = R_{jm} - R_{jw}
    + 1/(2C)`, :math:`NTU = -\ln(1-\varepsilon)`, :math:`UA = NTU\cdot C`.
    """
    eps = 1.0 / (
        (resistance_junction_mean - resistance_junction_wall + 0.5 / capacity_rate) * capacity_rate
    )
    return -jnp.log1p(-eps) * capacity_rate
