r"""Per-site heat rejection: dry coolers, adiabatic pre-cooling, chillers, free-cooling hours.

Temperatures are absolute [K].  The DOE-2 chiller curves are defined in degC and are converted
locally.  Every function is elementwise and broadcasts over its array arguments.

References
----------
.. [1] F. P. Incropera, D. P. DeWitt, T. L. Bergman, A. S. Lavine, *Fundamentals of Heat and
   Mass Transfer*, 6th ed., Wiley, 2007: Eq. 11.15 (LMTD), 11.29a (counterflow ε-NTU),
   Eq. 7.58 and Table 7.5 (Zukauskas correlation for tube banks, Nu ∝ Re^m, m ≈ 0.6).
.. [2] R. K. Shah, D. P. Sekulić, *Fundamentals of Heat Exchanger Design*, Wiley, 2003,
   Sect. 3.6 (multipass cross-counterflow exchangers approach counterflow effectiveness as the
   number of passes grows; fin-tube coils have 3-8 tube rows).
.. [3] A. Žukauskas, "Heat transfer from tubes in crossflow", *Adv. Heat Transfer* 8, 93-160,
   1972.
.. [4] ASHRAE Handbook - HVAC Systems and Equipment, ch. 21 "Fans" (fan laws: flow ∝ N,
   pressure ∝ N², power ∝ N³) and ch. 41 "Evaporative Air-Cooling Equipment" (direct
   evaporative cooler saturation effectiveness).
.. [5] ASHRAE Handbook - Fundamentals, ch. 1 "Psychrometrics" (adiabatic saturation: sensible
   heat given up by the air equals latent heat of the evaporated water).
.. [6] R. R. Rogers, M. K. Yau, *A Short Course in Cloud Physics*, 3rd ed., Pergamon, 1989,
   Table 2.1; the cubic fit L(T) = 2500.8 − 2.36 T + 0.0016 T² − 0.00006 T³ [J/g], T in degC,
   −25 to 40 degC, is the usual fit to that table.
.. [7] EnergyPlus Engineering Reference, "Electric Chiller Model Based on Condenser Entering
   Temperature" (Chiller:Electric:EIR), and EnergyPlus ``ChillerElectricEIR.cc``; dataset
   ``Chillers.idf`` entry "DOE-2 Centrifugal/5.50COP".  The same data are in LBNL Modelica
   Buildings ``Buildings.Fluid.Chillers.Data.ElectricEIR.DOE_2_Centrifugal_5_50COP``.
.. [8] M. Wetter et al., Modelica Buildings library, ``Buildings.Fluid.Chillers.ElectricEIR``
   ("Electric chiller based on the DOE-2.1 model") and ``Buildings.Fluid.Chillers.Carnot_TEva``.
.. [9] Y. A. Çengel, M. A. Boles, *Thermodynamics: An Engineering Approach*, 8th ed.,
   McGraw-Hill, 2015, Eq. 6-18 (Carnot refrigerator COP).
.. [10] ``shared/refs/physics-references.md`` section 4 (chiller rows) and section 8 case 8.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from physics.constants import ZERO_CELSIUS_K
from physics.heat_exchangers import effectiveness_counterflow
from physics.solvers import solve_monotone

__all__ = [
    "CHILLER_CURVE_CARNOT",
    "CHILLER_CURVE_DOE2",
    "CHILLER_LIFT_MIN_K",
    "DOE2_CENTRIFUGAL_5_50COP",
    "ChillerEIRCurve",
    "adiabatic_precooled_air_temperature",
    "biquadratic",
    "chiller_carnot_cop",
    "chiller_eir_available_capacity",
    "chiller_eir_cop",
    "chiller_eir_power",
    "chiller_full_load_cop",
    "chiller_plant",
    "chiller_power",
    "chiller_staging",
    "dry_cooler_design",
    "dry_cooler_fan_power",
    "dry_cooler_fan_speed_for_setpoint",
    "dry_cooler_leaving_temperature",
    "dry_cooler_ua",
    "evaporated_water_rate",
    "free_cooling_hours",
    "latent_heat_of_vaporization",
    "quadratic",
]

_KELVIN_OFFSET = ZERO_CELSIUS_K
#: Fan speeds are floored here so that s = 0 (fans off) stays finite: C_air → 0 gives ε → 1 and
#: a vanishing heat flow instead of 0/0.  Natural convection with fans off is neglected.
_SPEED_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------
# Dry cooler
# --------------------------------------------------------------------------------------------


def _log_mean_temperature_difference(delta_a, delta_b):
    r"""LMTD [K], stable near ``delta_a == delta_b`` (series of d/ln(1+d) about d = 0)."""
    d = delta_a / delta_b - 1.0
    small = jnp.abs(d) < 1e-4
    d_safe = jnp.where(small, 1.0, d)
    ratio_general = d_safe / jnp.log1p(d_safe)
    ratio_series = 1.0 + d / 2.0 - d**2 / 12.0 + d**3 / 24.0
    return delta_b * jnp.where(small, ratio_series, ratio_general)


def dry_cooler_design(
    heat_design,
    temp_air_design,
    approach_design,
    air_temperature_rise_design,
    capacity_rate_fluid_design,
):
    r"""Size a dry cooler: design conductance UA and air capacity rate at full fan speed.

    The fin-tube air-to-liquid coil is treated as a counterflow exchanger.  Dry coolers have
    several tube rows circuited against the air flow (cross-counterflow), whose effectiveness
    approaches pure counterflow as the number of passes grows ([2]_ Sect. 3.6); the design UA is
    calibrated here, so the approximation only affects off-design behaviour.

    At the design point the fluid leaves at :math:`T_{f,o} = T_{a,i} + A` and the air warms by
    :math:`\Delta T_a`, so

    .. math::
        C_a = \frac{Q_d}{\Delta T_a},\quad T_{f,i} = T_{f,o} + \frac{Q_d}{C_f},\quad
        UA_d = \frac{Q_d}{\Delta T_{lm}},\quad
        \Delta T_{lm} = \frac{(T_{f,i} - T_{a,o}) - (T_{f,o} - T_{a,i})}
                             {\ln\left[(T_{f,i} - T_{a,o}) / (T_{f,o} - T_{a,i})\right]}

    (counterflow LMTD, [1]_ Eq. 11.15; identical to NTU from [1]_ Eq. 11.30a, but smooth
    through :math:`C_f = C_a`).

    Parameters
    ----------
    heat_design : heat rejected at design [W]
    temp_air_design : design ambient dry-bulb temperature [K]
    approach_design : leaving fluid minus entering air temperature at design [K], > 0
    air_temperature_rise_design : air temperature rise through the coil at design [K], > 0
    capacity_rate_fluid_design : fluid capacity rate :math:`\dot m c_p` at design [W K-1]

    Returns
    -------
    ua_design : overall conductance at full fan speed [W K-1]
    capacity_rate_air_design : air capacity rate at full fan speed [W K-1]

    Raises
    ------
    equinox.EquinoxRuntimeError
        If the design is infeasible for counterflow: the air would leave warmer than the fluid
        enters (:math:`\Delta T_a \ge A + Q_d/C_f`).
    """
    heat_design = jnp.asarray(heat_design)
    capacity_rate_air = heat_design / air_temperature_rise_design
    temp_fluid_out = temp_air_design + approach_design
    temp_fluid_in = temp_fluid_out + heat_design / capacity_rate_fluid_design
    temp_air_out = temp_air_design + air_temperature_rise_design
    delta_hot = temp_fluid_in - temp_air_out
    delta_cold = jnp.asarray(approach_design) + jnp.zeros_like(delta_hot)
    delta_hot = eqx.error_if(
        delta_hot,
        jnp.any(delta_hot <= 0.0) | jnp.any(delta_cold <= 0.0),
        "dry_cooler_design: infeasible design; the approach must be > 0 and the air temperature "
        "rise must be below approach + fluid range (heat_design / capacity_rate_fluid_design)",
    )
    ua_design = heat_design / _log_mean_temperature_difference(delta_hot, delta_cold)
    return ua_design, capacity_rate_air


def dry_cooler_ua(ua_design, fan_speed, exponent=0.6):
    r"""Dry-cooler conductance at part fan speed [W K-1].

    .. math:: UA(s) = UA_d\, s^{n}

    The coil is air-side controlled, and the air-side coefficient of a tube bank scales as
    :math:`h \propto \mathrm{Re}^m` with :math:`m \approx 0.6` for
    :math:`10^3 < \mathrm{Re} < 2\times10^5` (Žukauskas [3]_; [1]_ Eq. 7.58, Table 7.5), with
    air velocity proportional to fan speed.  Fluid-side resistance and the small change of fin
    efficiency with h are neglected.

    Parameters
    ----------
    ua_design : conductance at full fan speed [W K-1]
    fan_speed : fan speed fraction s [-], in (0, 1]
    exponent : Reynolds exponent n [-]
    """
    return ua_design * jnp.asarray(fan_speed) ** exponent


def dry_cooler_leaving_temperature(
    temp_fluid_in,
    temp_air_in,
    capacity_rate_fluid,
    fan_speed,
    ua_design,
    capacity_rate_air_design,
    exponent=0.6,
):
    r"""Fluid temperature leaving a dry cooler [K] (counterflow ε-NTU, [1]_ Eq. 11.29a).

    .. math::
        C_a = s\,C_{a,d},\quad C_{min} = \min(C_f, C_a),\quad C_r = C_{min}/C_{max},\quad
        N = \frac{UA(s)}{C_{min}},

        Q = \varepsilon(N, C_r)\,C_{min}\,(T_{f,i} - T_{a,i}),\qquad
        T_{f,o} = T_{f,i} - Q / C_f

    with :math:`UA(s)` from :func:`dry_cooler_ua`.  Either stream may be :math:`C_{min}`; the
    counterflow relation is symmetric, so the result is smooth through :math:`C_f = C_a`.
    If the air is warmer than the fluid, Q < 0 and the fluid is heated.

    Parameters
    ----------
    temp_fluid_in : fluid entering temperature [K]
    temp_air_in : air entering (dry-bulb or adiabatically pre-cooled) temperature [K]
    capacity_rate_fluid : fluid capacity rate [W K-1], > 0
    fan_speed : fan speed fraction [-], in (0, 1] (floored at 1e-6)
    ua_design : design conductance [W K-1] from :func:`dry_cooler_design`
    capacity_rate_air_design : air capacity rate at full speed [W K-1]
    exponent : UA fan-speed exponent [-], see :func:`dry_cooler_ua`
    """
    heat_per_kelvin = _dry_cooler_heat_per_kelvin(
        capacity_rate_fluid, fan_speed, ua_design, capacity_rate_air_design, exponent
    )
    return temp_fluid_in - heat_per_kelvin * (temp_fluid_in - temp_air_in) / capacity_rate_fluid


def _dry_cooler_heat_per_kelvin(
    capacity_rate_fluid, fan_speed, ua_design, capacity_rate_air_design, exponent
):
    """ε·C_min [W/K]: heat per kelvin of inlet temperature difference; increasing in fan speed."""
    speed = jnp.maximum(jnp.asarray(fan_speed), _SPEED_FLOOR)
    ua = dry_cooler_ua(ua_design, speed, exponent)
    capacity_rate_air = speed * capacity_rate_air_design
    c_min = jnp.minimum(capacity_rate_fluid, capacity_rate_air)
    c_max = jnp.maximum(capacity_rate_fluid, capacity_rate_air)
    return effectiveness_counterflow(ua / c_min, c_min / c_max) * c_min


def dry_cooler_fan_power(fan_speed, fan_power_design):
    r"""Dry-cooler fan electric power [W] from the fan affinity law ([4]_ ch. 21).

    .. math:: P = P_d\, s^3

    Parameters
    ----------
    fan_speed : fan speed fraction s [-]
    fan_power_design : electric fan power at full speed [W]

    Notes
    -----
    Motor and drive efficiency are taken as constant; EC-fan efficiency falls at low speed, so
    this underestimates power at small s.
    """
    return fan_power_design * jnp.asarray(fan_speed) ** 3


def dry_cooler_fan_speed_for_setpoint(
    temp_fluid_in,
    temp_air_in,
    capacity_rate_fluid,
    temp_target,
    ua_design,
    capacity_rate_air_design,
    speed_min,
    exponent=0.6,
):
    r"""Fan speed at which the dry cooler's leaving fluid equals ``temp_target`` [-].

    Solves, elementwise, with :func:`physics.solvers.solve_monotone` (implicit gradients)

    .. math::
        g(s) = \frac{\varepsilon(s)\,C_{min}(s)}{C_f} = \varphi,\qquad
        \varphi = \frac{T_{f,i} - T_{target}}{T_{f,i} - T_{a,i}}

    which is :func:`dry_cooler_leaving_temperature` = ``temp_target`` divided by the inlet
    temperature difference; :math:`g` depends on neither temperature and is strictly
    increasing in :math:`s`, so the solve is well conditioned even when
    :math:`T_{f,i} \approx T_{a,i}`.

    Saturation (the result is clipped to ``[speed_min, 1]``):

    * target not reachable, :math:`\varphi \ge g(1)`: speed 1; the caller's trim chiller takes
      the rest.
    * even ``speed_min`` overcools, :math:`\varphi \le g(s_{min})` (including a target at or
      above the entering fluid temperature): ``speed_min``.
    * air not colder than the fluid (:math:`T_{a,i} \ge T_{f,i}`): the fans can only heat the
      fluid, so ``speed_min`` is returned (not 1).

    At saturation the result is a constant (or ``speed_min``), so its gradient with respect to
    the target and the temperatures is exactly zero; in the interior it is the implicit
    derivative :math:`\partial s/\partial\theta = (\partial\varphi/\partial\theta -
    \partial g/\partial\theta)/g'(s)`.

    Parameters
    ----------
    temp_fluid_in : fluid entering temperature [K]
    temp_air_in : air entering temperature [K]
    capacity_rate_fluid : fluid capacity rate [W K-1]
    temp_target : wanted leaving fluid temperature [K]
    ua_design : design conductance [W K-1]
    capacity_rate_air_design : air capacity rate at full speed [W K-1]
    speed_min : minimum fan speed fraction [-], in (0, 1]
    exponent : UA fan-speed exponent [-]

    Returns
    -------
    fan_speed : [-], broadcast shape of the inputs
    """
    fluid = (temp_fluid_in, capacity_rate_fluid, temp_target)
    air = (temp_air_in, ua_design, capacity_rate_air_design, speed_min)
    t_in, c_fluid, t_target, t_air, ua_d, c_air_d, s_min = jnp.broadcast_arrays(
        *(jnp.asarray(a, dtype=float) for a in fluid + air)
    )

    def g(speed):
        return _dry_cooler_heat_per_kelvin(c_fluid, speed, ua_d, c_air_d, exponent) / c_fluid

    delta = t_in - t_air
    can_cool = delta > 0.0
    phi = (t_in - t_target) / jnp.where(can_cool, delta, 1.0)
    g_max = g(jnp.ones_like(s_min))
    g_min = g(s_min)
    at_full = can_cool & (phi >= g_max)
    at_min = (~can_cool) | (phi <= g_min)
    # Keep the (unselected) root inside the bracket so its implicit tangent stays finite.
    phi_inner = jnp.clip(phi, g_min, g_max)
    root = solve_monotone(lambda s: g(s) - phi_inner, s_min, jnp.ones_like(s_min))
    return jnp.where(at_full, 1.0, jnp.where(at_min, s_min, root))


# --------------------------------------------------------------------------------------------
# Adiabatic (direct evaporative) pre-cooling
# --------------------------------------------------------------------------------------------


def adiabatic_precooled_air_temperature(temp_db, temp_wb, pad_effectiveness):
    r"""Air dry-bulb temperature after an adiabatic pad (direct evaporative cooler) [K].

    .. math:: T_{a} = T_{db} - \eta\,(T_{db} - T_{wb})

    with the saturation effectiveness :math:`\eta` of [4]_ ch. 41 (typically 0.7-0.9 for wetted
    media pads).

    Parameters
    ----------
    temp_db : ambient dry-bulb temperature [K]
    temp_wb : ambient thermodynamic wet-bulb temperature [K]
    pad_effectiveness : saturation effectiveness η [-], in [0, 1]
    """
    return temp_db - pad_effectiveness * (temp_db - temp_wb)


def latent_heat_of_vaporization(temp):
    r"""Latent heat of vaporization of water [J kg-1] ([6]_ cubic fit, -25 to 40 degC).

    .. math:: h_{fg} = 10^3\,(2500.8 - 2.36\,t + 0.0016\,t^2 - 0.00006\,t^3),\quad
              t = T - 273.15\ [^\circ\mathrm{C}]

    Within 0.07 % of IAPWS-95 (CoolProp) over 0-40 degC, 0.11 % at 50 degC.

    Parameters
    ----------
    temp : temperature [K]
    """
    t = jnp.asarray(temp) - _KELVIN_OFFSET
    return 1e3 * (2500.8 + t * (-2.36 + t * (0.0016 - 0.00006 * t)))


def evaporated_water_rate(capacity_rate_air, temp_db, temp_air_cooled, temp_wb):
    r"""Water evaporated by an adiabatic pad [kg s-1] (adiabatic saturation balance, [5]_).

    .. math:: \dot m_w = \frac{C_a\,(T_{db} - T_{a})}{h_{fg}(T_{wb})}

    Sensible heat given up by the air is the latent heat of the evaporated water; the sensible
    heat of the make-up water and the change of the moist-air heat capacity are neglected
    (about 1 %).

    Parameters
    ----------
    capacity_rate_air : air capacity rate :math:`\dot m_{da} c_{p,moist}` [W K-1]
    temp_db : entering dry-bulb temperature [K]
    temp_air_cooled : leaving dry-bulb temperature [K]
    temp_wb : wet-bulb temperature [K] (where h_fg is evaluated)
    """
    return capacity_rate_air * (temp_db - temp_air_cooled) / latent_heat_of_vaporization(temp_wb)


# --------------------------------------------------------------------------------------------
# Chillers
# --------------------------------------------------------------------------------------------


class ChillerEIRCurve(eqx.Module):
    """Performance data of a DOE-2 / EnergyPlus ``Chiller:Electric:EIR`` ([7]_).

    Attributes
    ----------
    capft : CAPFT biquadratic coefficients (a..f) in degC [-]
    eirft : EIRFT biquadratic coefficients (a..f) in degC [-]
    eirfplr : EIRFPLR quadratic coefficients (a, b, c) [-]
    cop_reference : reference COP [-]
    temp_chw_leaving_reference, temp_cond_entering_reference : reference temperatures [K]
    temp_chw_leaving_min, temp_chw_leaving_max : curve validity range, chilled water [K]
    temp_cond_entering_min, temp_cond_entering_max : curve validity range, condenser [K]
    part_load_ratio_min : below it the chiller cycles on/off [-]
    part_load_ratio_min_unloading : below it the chiller false-loads (hot-gas bypass) [-]
    part_load_ratio_max : maximum part-load ratio [-]
    name : dataset name (static)
    """

    capft: np.ndarray
    eirft: np.ndarray
    eirfplr: np.ndarray
    cop_reference: np.ndarray
    temp_chw_leaving_reference: np.ndarray
    temp_cond_entering_reference: np.ndarray
    temp_chw_leaving_min: np.ndarray
    temp_chw_leaving_max: np.ndarray
    temp_cond_entering_min: np.ndarray
    temp_cond_entering_max: np.ndarray
    part_load_ratio_min: np.ndarray
    part_load_ratio_min_unloading: np.ndarray
    part_load_ratio_max: np.ndarray
    name: str = eqx.field(static=True)


def _a(x):
    return np.asarray(x, dtype=np.float64)


#: DOE-2 Centrifugal/5.50COP (EnergyPlus ``Chillers.idf``; Modelica Buildings
#: ``DOE_2_Centrifugal_5_50COP``, [7]_).  The minimum unloading ratio 0.2 comes from that dataset
#: (it is not in the refs table 4, which lists PLR_min 0.1 only).
DOE2_CENTRIFUGAL_5_50COP = ChillerEIRCurve(
    capft=_a([0.257896, 0.0389016, -0.00021708, 0.0468684, -0.00094284, -0.00034344]),
    eirft=_a([0.933884, -0.058212, 0.00450036, 0.00243, 0.000486, -0.001215]),
    eirfplr=_a([0.222903, 0.313387, 0.463710]),
    cop_reference=_a(5.5),
    temp_chw_leaving_reference=_a(_KELVIN_OFFSET + 6.67),
    temp_cond_entering_reference=_a(_KELVIN_OFFSET + 29.4),
    temp_chw_leaving_min=_a(_KELVIN_OFFSET + 5.0),
    temp_chw_leaving_max=_a(_KELVIN_OFFSET + 10.0),
    temp_cond_entering_min=_a(_KELVIN_OFFSET + 24.0),
    temp_cond_entering_max=_a(_KELVIN_OFFSET + 35.0),
    part_load_ratio_min=_a(0.1),
    part_load_ratio_min_unloading=_a(0.2),
    part_load_ratio_max=_a(1.0),
    name="DOE-2 Centrifugal/5.50COP",
)


def biquadratic(c, x, y):
    r"""Biquadratic performance curve [-] ([7]_ ``Curve:Biquadratic``).

    .. math:: f = c_0 + c_1 x + c_2 x^2 + c_3 y + c_4 y^2 + c_5 x y

    Parameters
    ----------
    c : six coefficients, last axis
    x, y : independent variables, in the units the coefficients were fitted in (degC for DOE-2)
    """
    c = jnp.asarray(c)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    return (
        c[..., 0]
        + x * (c[..., 1] + c[..., 2] * x)
        + y * (c[..., 3] + c[..., 4] * y)
        + (c[..., 5] * x * y)
    )


def quadratic(c, x):
    r"""Quadratic performance curve [-] ([7]_ ``Curve:Quadratic``): :math:`c_0 + c_1 x + c_2 x^2`.

    Parameters
    ----------
    c : three coefficients, last axis
    x : independent variable
    """
    c = jnp.asarray(c)
    x = jnp.asarray(x)
    return c[..., 0] + x * (c[..., 1] + c[..., 2] * x)


def _curve_temperatures_degc(temp_chw_leaving, temp_cond_entering, curve):
    # EnergyPlus evaluates every curve with its inputs clamped to the curve's min/max x and y
    # (CurveManager::CurveValue), which makes the COP flat outside the validity range.
    t_chw = jnp.clip(temp_chw_leaving, curve.temp_chw_leaving_min, curve.temp_chw_leaving_max)
    t_cond = jnp.clip(
        temp_cond_entering, curve.temp_cond_entering_min, curve.temp_cond_entering_max
    )
    return t_chw - _KELVIN_OFFSET, t_cond - _KELVIN_OFFSET


def chiller_eir_available_capacity(
    capacity_reference, temp_chw_leaving, temp_cond_entering, curve=DOE2_CENTRIFUGAL_5_50COP
):
    r"""Available cooling capacity of an EIR chiller [W] ([7]_).

    .. math:: Q_{avail} = Q_{ref}\,\mathrm{CAPFT}(t_{chw,l}, t_{cond,e})

    The part-load ratio of :func:`chiller_eir_cop` is :math:`Q / Q_{avail}`.

    Parameters
    ----------
    capacity_reference : reference capacity Q_ref [W]
    temp_chw_leaving : leaving chilled-water temperature [K] (clamped to the curve range)
    temp_cond_entering : entering condenser fluid temperature [K] (clamped to the curve range)
    curve : ChillerEIRCurve
    """
    t_chw, t_cond = _curve_temperatures_degc(temp_chw_leaving, temp_cond_entering, curve)
    return capacity_reference * biquadratic(curve.capft, t_chw, t_cond)


def chiller_eir_cop(
    temp_chw_leaving, temp_cond_entering, part_load_ratio, curve=DOE2_CENTRIFUGAL_5_50COP
):
    r"""COP of a DOE-2 / EnergyPlus ``Chiller:Electric:EIR`` [-] ([7]_, [8]_).

    EnergyPlus computes, with :math:`\mathrm{PLR} = Q/(Q_{ref}\,\mathrm{CAPFT})`,

    .. math::
        P = \frac{Q_{ref}\,\mathrm{CAPFT}}{\mathrm{COP}_{ref}}\,\mathrm{EIRFT}\,
            \mathrm{EIRFPLR}(\max(\mathrm{PLR}, \mathrm{PLR}_{unl}))\,
            \min\!\left(1, \frac{\mathrm{PLR}}{\mathrm{PLR}_{min}}\right)

    (false loading below the minimum unloading ratio, on/off cycling below the minimum PLR),
    so :math:`\mathrm{COP} = Q/P` is

    .. math::
        \mathrm{COP} = \frac{\mathrm{COP}_{ref}\,\max(\mathrm{PLR}, \mathrm{PLR}_{min})}
                            {\mathrm{EIRFT}\,\mathrm{EIRFPLR}(\max(\mathrm{PLR},
                             \mathrm{PLR}_{unl}))}

    CAPFT cancels.  As in EnergyPlus, the temperatures are clamped to the curves' validity range
    (DOE-2 5.50COP: 5-10 degC chilled water, 24-35 degC condenser) before the curves are
    evaluated, so the COP is flat outside it (use :func:`chiller_carnot_cop` for warm-water
    trim chillers), and PLR is clamped to [0, PLR_max].

    Parameters
    ----------
    temp_chw_leaving : leaving chilled-water temperature [K]
    temp_cond_entering : entering condenser fluid temperature [K]
    part_load_ratio : Q / Q_avail [-]
    curve : ChillerEIRCurve, default :data:`DOE2_CENTRIFUGAL_5_50COP`
    """
    t_chw, t_cond = _curve_temperatures_degc(temp_chw_leaving, temp_cond_entering, curve)
    eirft = biquadratic(curve.eirft, t_chw, t_cond)
    plr = jnp.clip(part_load_ratio, 0.0, curve.part_load_ratio_max)
    plr_eir = jnp.maximum(plr, curve.part_load_ratio_min_unloading)
    eirfplr = quadratic(curve.eirfplr, plr_eir)
    return curve.cop_reference * jnp.maximum(plr, curve.part_load_ratio_min) / (eirft * eirfplr)


def chiller_eir_power(
    heat,
    temp_chw_leaving,
    temp_cond_entering,
    capacity_reference,
    curve=DOE2_CENTRIFUGAL_5_50COP,
):
    r"""Electric power of an EIR chiller removing ``heat`` [W] ([7]_).

    .. math:: P = Q / \mathrm{COP}(t_{chw,l}, t_{cond,e}, Q / Q_{avail})

    Heat above :math:`Q_{avail}\,\mathrm{PLR}_{max}` is not checked: the caller must size the
    chiller (the COP is then that at PLR_max).

    Parameters
    ----------
    heat : evaporator heat flow [W], >= 0
    temp_chw_leaving : leaving chilled-water temperature [K]
    temp_cond_entering : entering condenser fluid temperature [K]
    capacity_reference : reference capacity [W]
    curve : ChillerEIRCurve
    """
    capacity = chiller_eir_available_capacity(
        capacity_reference, temp_chw_leaving, temp_cond_entering, curve
    )
    cop = chiller_eir_cop(temp_chw_leaving, temp_cond_entering, heat / capacity, curve)
    return chiller_power(heat, cop)


def chiller_carnot_cop(temp_evaporating, temp_condensing, second_law_efficiency, lift_min=1.0):
    r"""COP of a chiller as a fraction of the Carnot COP [-] ([9]_ Eq. 6-18; [8]_).

    .. math:: \mathrm{COP} = \eta_{II}\,\frac{T_e}{\max(T_c - T_e,\ \Delta T_{min})}

    For warm-water trim chillers outside the DOE-2 curve range.  The lift is floored at
    ``lift_min`` so the COP stays finite (and its gradient zero) as the lift vanishes.

    Parameters
    ----------
    temp_evaporating : evaporating (or leaving chilled-water) temperature [K]
    temp_condensing : condensing (or condenser-side) temperature [K]
    second_law_efficiency : η_II = COP / COP_Carnot [-] (≈ 0.6 water-cooled centrifugal,
        0.45-0.55 air-cooled)
    lift_min : smallest lift used [K]
    """
    lift = jnp.maximum(jnp.asarray(temp_condensing) - temp_evaporating, lift_min)
    return second_law_efficiency * temp_evaporating / lift


def chiller_power(heat, cop):
    r"""Chiller electric power [W]: :math:`P = Q / \mathrm{COP}`.

    Parameters
    ----------
    heat : heat removed at the evaporator [W]
    cop : coefficient of performance [-]
    """
    return jnp.asarray(heat) / cop


#: ``curve_kind`` of :func:`chiller_full_load_cop` and :func:`chiller_plant`: DOE-2 biquadratics.
CHILLER_CURVE_DOE2 = 0.0
#: ``curve_kind``: Carnot fraction with a minimum lift (warm-water trim chillers).
CHILLER_CURVE_CARNOT = 1.0

#: Minimum refrigerant lift of the Carnot-fraction chiller [K], derived from the lowest-lift
#: measured chiller of [10]_ section 4, Trane CVHF 2300 kW, COP 8.10 at 4.44 degC leaving
#: chilled water and 12.78 degC entering condenser water (EnergyPlus ``Chiller:Electric:EIR``
#: record, reference condenser flow 0.09085 m3/s).  Its condenser heat 2.2999 MW x (1 + 1/8.10)
#: = 2.584 MW warms that flow by 6.79 K, so the water-to-water lift is 12.78 + 6.79 - 4.44 =
#: 15.1 K, and the refrigerant lift at least that plus the evaporator approach: 17.1 K with the
#: 2 K approach the facility uses.  Inverting the Carnot form with eta_II 0.5 and the same
#: approach, COP 8.10 at T_e = 2.44 degC needs a lift of 0.5 x 275.59 / 8.10 = 17.0 K.  No chiller
#: in the data is rated at a lower lift (that curve's range also starts there), so the COP is
#: not extrapolated below 17 K.
CHILLER_LIFT_MIN_K = 17.0


def chiller_full_load_cop(
    temp_chw_leaving,
    temp_cond_entering,
    curve_kind,
    cop_reference,
    capft,
    eirft,
    temp_chw_range,
    temp_cond_range,
    second_law_efficiency,
    evaporator_approach,
    condenser_approach,
    lift_min,
):
    r"""Full-load COP [-] and capacity ratio CAPFT [-] of a chiller, one of two forms.

    ``curve_kind`` = :data:`CHILLER_CURVE_DOE2` (0): DOE-2 / EnergyPlus ``Chiller:Electric:EIR``
    ([7]_, [10]_ section 4), temperatures clamped to the curves' validity range as EnergyPlus
    does,

    .. math:: \mathrm{COP}_{fl} = \frac{\mathrm{COP}_{ref}}{\mathrm{EIRFT}(t_{chw}, t_{cond})},
              \qquad \mathrm{CAPFT}(t_{chw}, t_{cond})

    ``curve_kind`` = :data:`CHILLER_CURVE_CARNOT` (1): Carnot fraction for warm-water trim
    chillers, where the DOE-2 curves are out of range ([10]_ sections 4 and 9; [9]_ Eq. 6-18),

    .. math:: T_e = T_{chw} - \Delta T_{evap},\quad T_c = T_{cond} + \Delta T_{cond},\quad
              \mathrm{COP}_{fl} = \eta_{II}\,\frac{T_e}{\max(T_c - T_e,\ \Delta T_{lift,min})},
              \qquad \mathrm{CAPFT} = 1

    (see :data:`CHILLER_LIFT_MIN_K` for the minimum lift).  The flag is numeric so the choice
    stays inside ``jit``; both forms are evaluated and one selected.

    Parameters
    ----------
    temp_chw_leaving : leaving chilled-water temperature [K]
    temp_cond_entering : entering condenser fluid temperature [K] (outdoor dry-bulb for an
        air-cooled condenser, as EnergyPlus takes it)
    curve_kind : 0 DOE-2 curves, 1 Carnot fraction [-]
    cop_reference : DOE-2 reference COP [-]
    capft, eirft : DOE-2 biquadratic coefficients (last axis 6), fitted in degC [-]
    temp_chw_range, temp_cond_range : DOE-2 validity ranges (last axis: min, max) [K]
    second_law_efficiency : η_II [-]
    evaporator_approach : chilled water minus evaporating temperature [K]
    condenser_approach : condensing minus entering condenser fluid temperature [K]
    lift_min : minimum refrigerant lift [K]

    Returns
    -------
    cop_full_load : [-]
    capacity_ratio : available / reference capacity [-]
    """
    temp_chw_range = jnp.asarray(temp_chw_range)
    temp_cond_range = jnp.asarray(temp_cond_range)
    t_chw = jnp.clip(temp_chw_leaving, temp_chw_range[..., 0], temp_chw_range[..., 1])
    t_cond = jnp.clip(temp_cond_entering, temp_cond_range[..., 0], temp_cond_range[..., 1])
    t_chw_c = t_chw - _KELVIN_OFFSET
    t_cond_c = t_cond - _KELVIN_OFFSET
    cop_doe2 = cop_reference / biquadratic(eirft, t_chw_c, t_cond_c)
    cap_doe2 = biquadratic(capft, t_chw_c, t_cond_c)
    cop_carnot = chiller_carnot_cop(
        jnp.asarray(temp_chw_leaving) - evaporator_approach,
        jnp.asarray(temp_cond_entering) + condenser_approach,
        second_law_efficiency,
        lift_min,
    )
    carnot = jnp.asarray(curve_kind) == CHILLER_CURVE_CARNOT
    return jnp.where(carnot, cop_carnot, cop_doe2), jnp.where(carnot, 1.0, cap_doe2)


def chiller_staging(heat, unit_capacity_available, units):
    r"""Units running and their part-load ratio for ``heat`` shared by identical units.

    .. math:: n_{on} = \mathrm{clip}\bigl(\lceil Q / Q_u \rceil,\ 1,\ n\bigr),\qquad
              \mathrm{PLR} = \frac{Q}{n_{on}\,Q_u}

    Units are staged on as the load grows (lead/lag sequencing, every running unit at the same
    PLR; ASHRAE Handbook - HVAC Applications, ch. "Supervisory control strategies").  The count
    is piecewise constant, so its derivative is zero; PLR is smooth between staging points.

    Parameters
    ----------
    heat : evaporator heat flow [W], in [0, n Q_u]
    unit_capacity_available : available capacity of one unit Q_u [W], > 0
    units : installed units n [-]

    Returns
    -------
    units_on : [-] (float)
    part_load_ratio : [-]
    """
    heat = jnp.asarray(heat)
    # a plant with no units (capacity 0) gets no heat; one "unit" keeps PLR = 0 finite
    units_on = jnp.clip(jnp.ceil(heat / unit_capacity_available), 1.0, jnp.maximum(units, 1.0))
    return units_on, heat / (units_on * unit_capacity_available)


def chiller_plant(
    heat_demand,
    temp_chw_leaving,
    temp_cond_entering,
    unit_capacity,
    units,
    curve_kind,
    cop_reference,
    capft,
    eirft,
    eirfplr,
    temp_chw_range,
    temp_cond_range,
    second_law_efficiency,
    evaporator_approach,
    condenser_approach,
    lift_min,
    part_load_ratio_min,
):
    r"""A plant of ``units`` identical ``Chiller:Electric:EIR``-form chillers ([7]_, [10]_).

    With :math:`\mathrm{COP}_{fl}` and CAPFT from :func:`chiller_full_load_cop`,
    :math:`Q_u = Q_{unit}\,\mathrm{CAPFT}` the available capacity of a unit,
    :math:`n_{on}` and PLR from :func:`chiller_staging`:

    .. math::
        Q = \mathrm{clip}(Q_{dem},\ 0,\ n\,Q_u),\qquad
        P = n_{on}\,\frac{Q_u}{\mathrm{COP}_{fl}}\,
            \mathrm{EIRFPLR}\bigl(\max(\mathrm{PLR}, \mathrm{PLR}_{min})\bigr)\,
            \min\!\left(1, \frac{\mathrm{PLR}}{\mathrm{PLR}_{min}}\right),\qquad
        Q_{cond} = Q + P

    EIRFPLR is the DOE-2 part-load quadratic (:func:`quadratic`, = 1 at PLR 1).  Below
    :math:`\mathrm{PLR}_{min}` (DOE-2 0.1, [10]_ section 4) the running unit cannot unload
    further: it runs at PLR_min for a fraction PLR/PLR_min of the time and is off otherwise
    (on/off cycling, EnergyPlus's "minimum part load ratio", [7]_; :func:`chiller_eir_cop` with
    the minimum unloading ratio equal to PLR_min), so the COP stays at that of PLR_min.
    No load, no power.  The condenser rejects the evaporator heat plus the compressor power
    (first law of the refrigerant circuit) to outdoor air.

    Parameters
    ----------
    heat_demand : heat to remove from the chilled water [W], >= 0
    temp_chw_leaving : leaving chilled-water temperature [K]
    temp_cond_entering : entering condenser fluid (outdoor air) temperature [K]
    unit_capacity : reference capacity of one unit [W]
    units : installed units [-]
    curve_kind, cop_reference, capft, eirft, temp_chw_range, temp_cond_range,
    second_law_efficiency, evaporator_approach, condenser_approach, lift_min :
        see :func:`chiller_full_load_cop`
    eirfplr : EIRFPLR quadratic coefficients (last axis 3) [-]
    part_load_ratio_min : minimum part-load ratio [-], below it a unit cycles on and off

    Returns
    -------
    heat : evaporator heat removed [W]
    power : compressor electric power [W]
    condenser_heat : heat rejected to outdoor air [W]
    """
    cop_full, capacity_ratio = chiller_full_load_cop(
        temp_chw_leaving,
        temp_cond_entering,
        curve_kind,
        cop_reference,
        capft,
        eirft,
        temp_chw_range,
        temp_cond_range,
        second_law_efficiency,
        evaporator_approach,
        condenser_approach,
        lift_min,
    )
    unit_available = unit_capacity * capacity_ratio
    heat = jnp.clip(heat_demand, 0.0, units * unit_available)
    units_on, plr = chiller_staging(heat, unit_available, units)
    eir = quadratic(eirfplr, jnp.maximum(plr, part_load_ratio_min))
    cycling = jnp.minimum(1.0, plr / part_load_ratio_min)
    power = jnp.where(heat > 0.0, units_on * unit_available / cop_full * eir * cycling, 0.0)
    return heat, power, heat + power


# --------------------------------------------------------------------------------------------
# Climate statistics
# --------------------------------------------------------------------------------------------


def free_cooling_hours(temp_air, temp_supply, approach, tolerance=1e-3):
    r"""Number of hours of full free cooling [h] (refs section 4a).

    .. math:: N = \#\{k : T_{db,k} \le T_{supply} - A\}

    Each element of ``temp_air`` along its last axis is one hourly record.  The comparison
    allows ``tolerance`` [K] so that hours exactly on the threshold still count after the degC
    to K conversion (EPW dry-bulb has 0.1 K resolution; 305.15 - 8 is not 24 + 273.15 in
    floating point).  A count: not differentiable.

    Parameters
    ----------
    temp_air : hourly dry-bulb temperatures [K], time on the last axis
    temp_supply : facility supply setpoint [K], broadcast against ``temp_air[..., 0]``
    approach : dry-cooler approach [K]
    tolerance : comparison tolerance [K]

    Returns
    -------
    hours : integer count, shape ``temp_air.shape[:-1]`` broadcast with the setpoints
    """
    temp_air = jnp.asarray(temp_air)
    threshold = jnp.asarray(temp_supply) - approach + tolerance
    return jnp.sum(temp_air <= jnp.expand_dims(threshold, -1), axis=-1)
