r"""GPU package thermal and electrical model: workload power, leakage, die and HBM nodes.

Temperature convention: absolute kelvin everywhere in ``physics``.

The package is two first-order nodes that exchange heat with the coolant entering its cold plate:

* the die node (die, lid, copper cold-plate base and the water inside it, lumped), heat capacity
  :math:`C` [J K⁻¹], resistance :math:`R` [K W⁻¹] from junction to cold-plate inlet coolant
  (see :func:`physics.coldplate.junction_to_inlet_resistance`);
* the HBM node, driven by the memory share of the power, resistance :math:`R_{hbm}` to the same
  coolant. NVML reports both temperatures (``NVML_TEMPERATURE_GPU``, ``NVML_FI_DEV_MEMORY_TEMP``).

References
----------
.. [1] Physics references of this project, ``shared/refs/physics-references.md``: section 1
   (TDP, thresholds, R_j→coolant 0.015–0.035 K/W, C ≈ 150–400 J/K), section 6 (leakage rising
   ~1.5–2.5 %/K of TDP, an engineering estimate) and section 8 cases 4, 5 and 11.
.. [2] K. Skadron et al., "Temperature-aware microarchitecture: modeling and implementation",
   ACM TACO 1(1), 2004 — the lumped RC (HotSpot) formulation used here.
.. [3] M. Hochbruck, A. Ostermann, "Exponential integrators", Acta Numerica 19 (2010) 209–286 —
   exact integration of linear ODEs with piecewise-smooth forcing.
"""

from __future__ import annotations

import jax.numpy as jnp

from physics import workload


def leakage_power(temp, leakage_ref, leakage_coeff, temp_ref):
    r"""Static (leakage) power of the die [W], linear in temperature ([1]_ section 6).

    .. math:: P_{leak}(T) = P_{leak,ref}\,\bigl(1 + \alpha\,(T - T_{ref})\bigr)

    Parameters
    ----------
    temp : die temperature [K]
    leakage_ref : leakage power at ``temp_ref`` [W]
    leakage_coeff : relative slope α [K⁻¹] (0.015–0.025 K⁻¹ per [1]_)
    temp_ref : reference temperature [K]
    """
    return leakage_ref * (1.0 + leakage_coeff * (temp - temp_ref))


def package_power(
    utilization, power_idle, power_dynamic_max, temp, leakage_ref, leakage_coeff, temp_ref
):
    r"""Total GPU package power [W] at utilization ``u`` (0–1) and die temperature ``T``.

    .. math:: P = P_{idle} + u\,P_{dyn,max} + P_{leak}(T)

    ``power_idle`` is the temperature-independent idle power (clocks, HBM refresh, I/O); the
    power NVML reports is this total.
    """
    return (
        power_idle
        + utilization * power_dynamic_max
        + leakage_power(temp, leakage_ref, leakage_coeff, temp_ref)
    )


def power_capped_utilization(
    utilization,
    power_limit,
    power_idle,
    power_dynamic_max,
    temp,
    leakage_ref,
    leakage_coeff,
    temp_ref,
):
    r"""Utilization after the firmware power cap ([1]_ section 6: the power cap acts first).

    .. math:: u' = \min\Bigl(u, \frac{P_{limit} - P_{idle} - P_{leak}(T)}{P_{dyn,max}}\Bigr)
    """
    headroom = power_limit - power_idle - leakage_power(temp, leakage_ref, leakage_coeff, temp_ref)
    return jnp.clip(jnp.minimum(utilization, headroom / power_dynamic_max), 0.0, None)


def die_conductance(resistance, leakage_ref, leakage_coeff):
    r"""Net conductance of the die node [W K⁻¹]: :math:`G = 1/R - \alpha P_{leak,ref}`.

    Leakage rises with temperature, so it acts as a negative conductance. :math:`G \le 0`
    means thermal runaway; specs are validated so that :math:`G > 0`.
    """
    return 1.0 / resistance - leakage_coeff * leakage_ref


def die_temperature_rhs(
    temp, temp_coolant, power, resistance, capacitance, leakage_ref, leakage_coeff, temp_ref
):
    r"""Time derivative of the die temperature [K s⁻¹] ([2]_):

    .. math:: C\,\frac{dT}{dt} = P(t) + P_{leak}(T) - \frac{T - T_c}{R}

    ``power`` is the workload (non-leakage) power [W] and ``temp_coolant`` the cold-plate inlet
    coolant temperature [K].
    """
    leak = leakage_power(temp, leakage_ref, leakage_coeff, temp_ref)
    return (power + leak - (temp - temp_coolant) / resistance) / capacitance


def die_temperature_step(
    temp, temp_coolant, power, resistance, capacitance, leakage_ref, leakage_coeff, temp_ref, dt
):
    r"""Die temperature after ``dt`` [K] for power held constant over the step (exact).

    With :math:`G` from :func:`die_conductance`, :math:`T_\infty = S/G`,
    :math:`S = P + P_{leak,ref}(1-\alpha T_{ref}) + T_c/R`, and :math:`\lambda = G/C`:

    .. math:: T(t+\Delta t) = T_\infty + (T(t) - T_\infty)\,e^{-\lambda\Delta t}

    Unconditionally stable and exact for piecewise-constant inputs ([3]_).
    """
    g = die_conductance(resistance, leakage_ref, leakage_coeff)
    source = power + leakage_ref * (1.0 - leakage_coeff * temp_ref) + temp_coolant / resistance
    t_inf = source / g
    return t_inf + (temp - t_inf) * jnp.exp(-g / capacitance * dt)


def die_square_wave_step(
    temp,
    temp_coolant,
    power_low,
    power_high,
    period,
    duty,
    phase,
    resistance,
    capacitance,
    leakage_ref,
    leakage_coeff,
    temp_ref,
    t0,
    dt,
):
    r"""Exact die temperature after ``dt`` under a square-wave workload power, and step integrals.

    The workload power is :math:`P(t) = P_{lo} + (P_{hi}-P_{lo})\,q(t)` with :math:`q` the
    square wave of :func:`physics.workload.square_wave`. The linear ODE of
    :func:`die_temperature_rhs` is integrated exactly ([3]_):

    .. math:: T_1 = e^{-\lambda\Delta t}T_0 + (1-e^{-\lambda\Delta t})\frac{S_{lo}}{G}
              + \frac{P_{hi}-P_{lo}}{G}\,W,\qquad
              W = \int_{t_0}^{t_1}\lambda e^{-\lambda(t_1-s)}q(s)\,ds

    with :math:`W` in closed form (:func:`physics.workload.square_wave_exponential_integral`).
    This makes 60 s steps exact for a 1–2 s training power cycle.

    Returns
    -------
    temp_new : die temperature at ``t0 + dt`` [K]
    mean_temp : time-mean die temperature over the step [K]
    workload_energy : ∫ P dt over the step [J]
    """
    g = die_conductance(resistance, leakage_ref, leakage_coeff)
    lam = g / capacitance
    decay = jnp.exp(-lam * dt)
    s_low = power_low + leakage_ref * (1.0 - leakage_coeff * temp_ref) + temp_coolant / resistance
    amplitude = power_high - power_low
    w = workload.square_wave_exponential_integral(lam, period, duty, phase, t0, dt)
    temp_new = decay * temp + (1.0 - decay) * s_low / g + amplitude / g * w
    on_time = workload.square_wave_on_time(period, duty, phase, t0, dt)
    workload_energy = power_low * dt + amplitude * on_time
    # Energy identity of the linear ODE: C ΔT = ∫S dt − G ∫T dt  ⇒  mean temperature.
    source_integral = s_low * dt + amplitude * on_time
    mean_temp = (source_integral - capacitance * (temp_new - temp)) / (g * dt)
    return temp_new, mean_temp, workload_energy


def hbm_temperature_step(temp, temp_coolant, power, resistance, capacitance, dt):
    r"""HBM node temperature after ``dt`` [K], power held at its step mean (exact for that).

    .. math:: C_{hbm}\frac{dT}{dt} = P_{hbm} - \frac{T - T_c}{R_{hbm}},\qquad
              T_1 = T_\infty + (T_0-T_\infty)e^{-\Delta t/(R_{hbm}C_{hbm})}

    Returns the new temperature and the step-mean temperature [K].
    """
    t_inf = temp_coolant + power * resistance
    tau = resistance * capacitance
    decay = jnp.exp(-dt / tau)
    temp_new = t_inf + (temp - t_inf) * decay
    mean_temp = t_inf + (temp - t_inf) * tau / dt * (1.0 - decay)
    return temp_new, mean_temp
