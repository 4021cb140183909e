r"""GPU package thermal and electrical model: workload power, leakage, die and HBM nodes.

Temperature convention: absolute kelvin everywhere in ``physics``.

The package is two first-order nodes on one cold plate:

* the die node (die, lid, copper cold-plate base and the water inside it, lumped), heat capacity
  :math:`C` [J K⁻¹], resistance :math:`R_{jw}` from junction to the plate wall;
* the HBM node (the memory stacks beside the die), driven by the memory share of the power,
  resistance :math:`R_{hw}` to the same wall;
* the wall reaches the plate's inlet coolant through :math:`R_{pw} = 1/(\varepsilon\dot m c_p)`
  (:mod:`physics.coldplate`), shared by both: the die's heat warms the HBM and the HBM's the die
  (:func:`package_conductances`). NVML reports both temperatures (``NVML_TEMPERATURE_GPU``,
  ``NVML_FI_DEV_MEMORY_TEMP``).

References
----------
.. [1] Physics references of this project, ``shared/refs/physics-references.md``: section 1
   (TDP, thresholds, R_j→coolant 0.015–0.035 K/W, C ≈ 150–400 J/K), section 6 (leakage rising
   ~1.5–2.5 %/K of TDP, an engineering estimate) and section 8 cases 4, 5 and 11.
.. [2] K. Skadron et al., "Temperature-aware microarchitecture: modeling and implementation",
   ACM TACO 1(1), 2004 — the lumped RC (HotSpot) formulation used here.
.. [3] M. Hochbruck, A. Ostermann, "Exponential integrators", Acta Numerica 19 (2010) 209–286 —
   exact integration of linear ODEs with piecewise-smooth forcing.
.. [4] A. E. Kennelly, "The equivalence of triangles and three-pointed stars in conducting
   networks", Electrical World and Engineer 34 (1899) 413–414 — the star–mesh transform.
.. [5] N. Weste, D. Harris, *CMOS VLSI Design*, 4th ed., Addison-Wesley, 2010, sec. 5.1
   (dynamic power :math:`\alpha C V^2 f`) and sec. 5.3 (DVFS).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
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


# --------------------------------------------------------------------------------------------
# The package as two coupled nodes (die, HBM) on one cold plate
# --------------------------------------------------------------------------------------------


def package_conductances(resistance_die_wall, resistance_hbm_wall, resistance_wall_inlet):
    r"""Star-to-mesh (Y-Δ) transform of the package network [W K⁻¹] ([4]_).

    The die (junction → plate wall :math:`R_{jw}`) and the HBM stacks (→ wall :math:`R_{hw}`)
    sit on one cold plate whose wall reaches the inlet coolant through
    :math:`R_{pw} = 1/(\varepsilon\,\dot m c_p)`. Eliminating the massless wall node, with
    :math:`g_j = 1/R_j` and :math:`\Sigma = g_{jw} + g_{hw} + g_{pw}`:

    .. math:: G_{d0} = \frac{g_{jw}g_{pw}}{\Sigma},\quad G_{h0} = \frac{g_{hw}g_{pw}}{\Sigma},
              \quad G_{dh} = \frac{g_{jw}g_{hw}}{\Sigma}

    die → inlet, HBM → inlet and die ↔ HBM (the coupling through the shared plate).
    """
    g_d, g_h, g_p = (
        1.0 / resistance_die_wall,
        1.0 / resistance_hbm_wall,
        1.0 / resistance_wall_inlet,
    )
    total = g_d + g_h + g_p
    return g_d * g_p / total, g_h * g_p / total, g_d * g_h / total


def package_steady_temperatures(temp_inlet, power_die, power_hbm, g_d0, g_h0, g_dh, leak0, leak1):
    r"""Steady die and HBM temperatures [K] of the coupled package ([2]_, [4]_).

    With the die's leakage :math:`P_{leak} = l_0 + l_1 T_d` (:func:`leakage_power`) and the
    conductances of :func:`package_conductances`:

    .. math:: \begin{pmatrix} G_{d0}+G_{dh}-l_1 & -G_{dh}\\ -G_{dh} & G_{h0}+G_{dh}\end{pmatrix}
              \begin{pmatrix}T_d\\ T_h\end{pmatrix} =
              \begin{pmatrix}P_d + l_0 + G_{d0}T_{in}\\ P_h + G_{h0}T_{in}\end{pmatrix}

    ``power_die`` is the die's power without leakage [W], ``power_hbm`` the HBM's [W].
    """
    k11 = g_d0 + g_dh - leak1
    k22 = g_h0 + g_dh
    det = k11 * k22 - g_dh**2
    s_d = power_die + leak0 + g_d0 * temp_inlet
    s_h = power_hbm + g_h0 * temp_inlet
    return (k22 * s_d + g_dh * s_h) / det, (g_dh * s_d + k11 * s_h) / det


class PackageModes(NamedTuple):
    r"""Modal form of the package ODE :math:`C\dot x = -Kx + s`, :math:`x = V z`,
    :math:`\dot z_i = -\lambda_i z_i + (V^{-1}C^{-1}s)_i` ([3]_)."""

    rate_fast: jax.Array  # λ₁ [1/s]
    rate_slow: jax.Array  # λ₂ [1/s]
    v_die: tuple  # (V₀₁, V₀₂): die row of V
    v_hbm: tuple  # (V₁₁, V₁₂): HBM row of V
    w_fast: tuple  # row 1 of V⁻¹C⁻¹ [K/J]: (die, HBM) source weights of mode 1
    w_slow: tuple  # row 2 of V⁻¹C⁻¹


def package_modes(capacitance_die, capacitance_hbm, g_d0, g_h0, g_dh, leak1) -> PackageModes:
    r"""Eigen-decomposition of the two-node package (:func:`package_steady_temperatures`).

    :math:`C^{-1}K` has real positive eigenvalues (it is similar to the symmetric
    :math:`C^{-1/2}KC^{-1/2}`):

    .. math:: \lambda_{1,2} = \tfrac{1}{2}\mathrm{tr} \pm \sqrt{\tfrac{1}{4}\mathrm{tr}^2 - \det},
              \quad \mathrm{tr} = \frac{K_{11}}{C_d}+\frac{K_{22}}{C_h},\ \
              \det = \frac{K_{11}K_{22}-G_{dh}^2}{C_dC_h}

    with eigenvectors :math:`v_i = (G_{dh},\ K_{11} - \lambda_i C_d)`; :math:`G_{dh} > 0`
    keeps them independent.
    """
    k11 = g_d0 + g_dh - leak1
    k22 = g_h0 + g_dh
    a11, a22 = k11 / capacitance_die, k22 / capacitance_hbm
    half_tr = 0.5 * (a11 + a22)
    root = jnp.sqrt(0.25 * (a11 - a22) ** 2 + g_dh**2 / (capacitance_die * capacitance_hbm))
    lam1, lam2 = half_tr + root, half_tr - root
    v01, v02 = g_dh, g_dh
    v11, v12 = k11 - lam1 * capacitance_die, k11 - lam2 * capacitance_die
    det_v = v01 * v12 - v02 * v11
    # V⁻¹ = [[v12, -v02], [-v11, v01]] / det_v, then times C⁻¹ = diag(1/C_d, 1/C_h)
    w1 = (v12 / det_v / capacitance_die, -v02 / det_v / capacitance_hbm)
    w2 = (-v11 / det_v / capacitance_die, v01 / det_v / capacitance_hbm)
    return PackageModes(lam1, lam2, (v01, v02), (v11, v12), w1, w2)


def thermal_slowdown_utilization(
    temp_slowdown,
    temp_inlet,
    power_die_idle,
    power_die_dynamic,
    power_hbm_idle,
    power_hbm_dynamic,
    g_d0,
    g_h0,
    g_dh,
    leak0,
    leak1,
):
    r"""Utilization at which the die settles at its slowdown temperature [-] ([1]_ section 6).

    Above ``temp_slowdown`` the hardware lowers clocks until the die holds it; at steady state
    that is the utilization :math:`u_{th}` with :math:`T_d(u_{th}) = T_{slow}` in
    :func:`package_steady_temperatures` (linear in :math:`u`, since both the die power
    :math:`P_{d,0} + u P_{d,1}` and the HBM power :math:`P_{h,0} + u P_{h,1}` are):

    .. math:: u_{th} = \frac{T_{slow} - T_d(0)}{T_d(1) - T_d(0)}
    """
    t0, _ = package_steady_temperatures(
        temp_inlet, power_die_idle, power_hbm_idle, g_d0, g_h0, g_dh, leak0, leak1
    )
    t1, _ = package_steady_temperatures(
        temp_inlet,
        power_die_idle + power_die_dynamic,
        power_hbm_idle + power_hbm_dynamic,
        g_d0,
        g_h0,
        g_dh,
        leak0,
        leak1,
    )
    return (temp_slowdown - t0) / (t1 - t0)


def clock_ratio(utilization_delivered, utilization_requested, exponent=3.0):
    r"""Clock frequency under a power or thermal cap relative to the uncapped clock [-].

    Dynamic CMOS power :math:`P = \alpha C V^2 f` with the voltage following the clock on the
    DVFS curve (:math:`V \propto f`) gives :math:`P \propto f^3` ([5]_), so a cap that cuts the
    dynamic power from :math:`u_{req}P_{dyn}` to :math:`u P_{dyn}` leaves

    .. math:: f/f_0 = (u/u_{req})^{1/n},\quad n = 3

    and the work a GPU does is proportional to its clock. With :math:`n = 3` a 37.5 % cut of
    dynamic power costs 14.5 % of the work; the V100/A100 capping measurement in [1]_ section 6
    (−30 % power for +6-7 % latency) shows memory-bound work loses less, so this errs on the
    side of counting too much work lost. Returns 1 where nothing was requested.
    """
    safe = jnp.where(utilization_requested > 0, utilization_requested, 1.0)
    ratio = jnp.clip(utilization_delivered / safe, 1e-12, 1.0)
    return jnp.where(utilization_requested > 0, ratio ** (1.0 / exponent), 1.0)


def package_temperature_step(temp_die, temp_hbm, steady_die, steady_hbm, modes: PackageModes, dt):
    r"""Die and HBM temperatures [K] after ``dt`` [s] at constant powers and inlet ([3]_).

    The package ODE :math:`C\dot x = -K x + s` of :func:`package_steady_temperatures` is exact
    in the modes of :func:`package_modes`:

    .. math:: x(\Delta t) = x_\infty + V\,\mathrm{diag}(e^{-\lambda_i\Delta t})\,V^{-1}
              (x(0) - x_\infty)

    with :math:`x_\infty` = (``steady_die``, ``steady_hbm``) the steady temperatures at the
    step's powers and inlet. :func:`physics.facility.gpu_plate_step` is the same update under
    the facility's square-wave workload; this form takes powers that were measured.
    """
    v01, v02 = modes.v_die
    v11, v12 = modes.v_hbm
    det_v = v01 * v12 - v02 * v11
    dd, dh = temp_die - steady_die, temp_hbm - steady_hbm
    z1 = (v12 * dd - v02 * dh) / det_v * jnp.exp(-modes.rate_fast * dt)
    z2 = (-v11 * dd + v01 * dh) / det_v * jnp.exp(-modes.rate_slow * dt)
    return steady_die + v01 * z1 + v02 * z2, steady_hbm + v11 * z1 + v12 * z2


def conductance_curvature_factor(rise, curvature):
    r"""Resistance multiplier of a conductance that grows with the temperature rise [-].

    .. math:: h = \frac{1}{1 + \beta\,\Delta T},\quad R_{eff} = h\,R

    :math:`\beta` [K⁻¹] is the relative conductance growth per kelvin of rise above the inlet:
    fans and pumps that speed up with temperature, film coefficients that grow as viscosity
    falls (air-cooled heat sinks under fan control show 0.5–1 %/K). Bounded to
    :math:`h \le 5` so a negative :math:`\beta` cannot make a resistance blow up. Used by the
    calibration's model and by the facility model's GPU step alike.
    """
    return 1.0 / jnp.maximum(1.0 + curvature * rise, 0.2)


def first_order_rise_step(rise, heat, resistance, tau, dt):
    r"""Exact step of one first-order (Foster) branch [K] for heat held over ``dt`` [s] ([3]_).

    .. math:: x_1 = a\,x_0 + (1 - a)\,R\,Q,\quad a = e^{-\Delta t/\tau}

    ``resistance`` [K/W] and ``tau`` = RC [s] (both already scaled by
    :func:`conductance_curvature_factor` where the conductance curves). The calibration fits
    the package as such branches; the facility model's GPU carries the slow one as its sink
    node (heat sink and local coolant or air between the package and the loop's inlet).
    """
    a = jnp.exp(-dt / tau)
    return a * rise + (1.0 - a) * resistance * heat
