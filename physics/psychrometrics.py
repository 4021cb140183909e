r"""Moist-air psychrometrics: saturation pressure, humidity ratio, dew point and wet-bulb.

Pure JAX, SI units: temperatures in kelvin, pressures in pascal, relative humidity as a fraction
in [0, 1].  Every function broadcasts over arrays (a year of 8,760 hours at once) and is
differentiable; the implicit solves (wet-bulb, dew point) go through
:func:`physics.solvers.solve_monotone`, so their gradients come from the implicit function
theorem, not from the unrolled bisection.

Accuracy
--------
The saturation pressure is the Hyland-Wexler form of [1]_ (eqs. 5 and 6).  Against CoolProp's
IAPWS-based ``HAPropsSI`` it agrees within 0.1 % from -40 to +50 degC (checked in
``tests/physics/test_psychrometrics.py``).  The humidity ratio neglects the enhancement factor
(about 1.004 near 100 kPa), so it is about 0.4 % low; the wet-bulb temperature solved from the
psychrometric equation ([1]_ eqs. 33 and 35) agrees with ``HAPropsSI('B', ...)`` within 0.1 K over
the -30 to +40 degC range met in the project's weather files, except in the narrow band
where the wet-bulb is within about -0.2..+0.7 degC: there the ice/water switch of the
psychrometric equation makes it two-valued, and the two codes may pick different roots (up to
0.7 K apart).

References
----------
.. [1] ASHRAE, *ASHRAE Handbook - Fundamentals* (SI), 2017, ch. 1 "Psychrometrics":
   eqs. (5)-(6) saturation pressure over ice and over liquid water (Hyland and Wexler, 1983),
   eq. (20)/(22) humidity ratio, eq. (3) standard-atmosphere pressure, eqs. (33) and (35)
   wet-bulb (thermodynamic) psychrometric equation above and below freezing.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import ArrayLike

from physics.constants import ZERO_CELSIUS_K
from physics.solvers import solve_monotone

#: Triple-point / ice-point temperature used to switch between ice and liquid water [K].
T_FREEZE = ZERO_CELSIUS_K  # ice point [K]
#: Ratio of the molar masses of water and dry air, M_w/M_da [-] ([1]_ eq. 20).
EPSILON_WATER_AIR = 0.621945

# Hyland-Wexler coefficients, [1]_ eq. (5) (over ice, 173.15 K to 273.15 K).
_C_ICE = (
    -5.6745359e03,
    6.3925247e00,
    -9.6778430e-03,
    6.2215701e-07,
    2.0747825e-09,
    -9.4840240e-13,
    4.1635019e00,
)
# Hyland-Wexler coefficients, [1]_ eq. (6) (over liquid water, 273.15 K to 473.15 K).
_C_LIQ = (
    -5.8002206e03,
    1.3914993e00,
    -4.8640239e-02,
    4.1764768e-05,
    -1.4452093e-08,
    6.5459673e00,
)


def saturation_vapor_pressure(temp: ArrayLike) -> jnp.ndarray:
    r"""Saturation pressure of water vapour [Pa], over ice below 0 degC and liquid water above.

    .. math::
        \ln p_{ws} = C_1/T + C_2 + C_3 T + C_4 T^2 + C_5 T^3 + C_6 T^4 + C_7 \ln T
        \quad (T < 273.15\ \mathrm{K}),

        \ln p_{ws} = C_8/T + C_9 + C_{10} T + C_{11} T^2 + C_{12} T^3 + C_{13} \ln T
        \quad (T \ge 273.15\ \mathrm{K})

    ([1]_ eqs. 5 and 6).  Valid from 173.15 K to 473.15 K; within 0.1 % of IAPWS over
    -40 to +50 degC.

    Parameters
    ----------
    temp : array_like
        Temperature [K].

    Returns
    -------
    jax.Array
        Saturation vapour pressure [Pa].
    """
    t = jnp.asarray(temp, dtype=float)
    c = _C_ICE
    ln_ice = (
        c[0] / t + c[1] + c[2] * t + c[3] * t**2 + c[4] * t**3 + c[5] * t**4 + c[6] * jnp.log(t)
    )
    c = _C_LIQ
    ln_liq = c[0] / t + c[1] + c[2] * t + c[3] * t**2 + c[4] * t**3 + c[5] * jnp.log(t)
    return jnp.exp(jnp.where(t < T_FREEZE, ln_ice, ln_liq))


def humidity_ratio_from_vapor_pressure(vapor_pressure: ArrayLike, pressure: ArrayLike):
    r"""Humidity ratio [kg water / kg dry air] from the partial pressure of water vapour.

    .. math:: W = 0.621945\,\frac{p_w}{p - p_w}\qquad ([1]_\ \text{eq. 20})

    Parameters
    ----------
    vapor_pressure : array_like
        Partial pressure of water vapour [Pa].
    pressure : array_like
        Total (station) pressure [Pa].
    """
    pw = jnp.asarray(vapor_pressure, dtype=float)
    return EPSILON_WATER_AIR * pw / (jnp.asarray(pressure, dtype=float) - pw)


def humidity_ratio(temp_dew: ArrayLike, pressure: ArrayLike) -> jnp.ndarray:
    r"""Humidity ratio [kg kg⁻¹] of moist air with dew point ``temp_dew``.

    The vapour pressure equals the saturation pressure at the dew point ([1]_ eq. 37 with
    eq. 20); the enhancement factor is neglected (about 0.4 % in W).

    Parameters
    ----------
    temp_dew : array_like
        Dew-point temperature [K].
    pressure : array_like
        Total (station) pressure [Pa].

    Returns
    -------
    jax.Array
        Humidity ratio [kg water per kg dry air].
    """
    return humidity_ratio_from_vapor_pressure(saturation_vapor_pressure(temp_dew), pressure)


def dew_point_temperature(temp_db: ArrayLike, relative_humidity: ArrayLike) -> jnp.ndarray:
    """Dew-point (frost-point below 0 degC) temperature [K] from dry-bulb and relative humidity.

    Solves ``p_ws(T_d) = RH * p_ws(T_db)`` with :func:`physics.solvers.solve_monotone`.

    Parameters
    ----------
    temp_db : array_like
        Dry-bulb temperature [K].
    relative_humidity : array_like
        Relative humidity as a fraction [-], in (0, 1].

    Returns
    -------
    jax.Array
        Dew-point temperature [K]; equals ``temp_db`` at saturation.
    """
    t, rh = jnp.broadcast_arrays(
        jnp.asarray(temp_db, dtype=float), jnp.asarray(relative_humidity, dtype=float)
    )
    ln_target = jnp.log(rh) + jnp.log(saturation_vapor_pressure(t))

    def residual(td):
        return jnp.log(saturation_vapor_pressure(td)) - ln_target

    return solve_monotone(residual, jnp.full_like(t, 173.15), t + 1e-6)


def _psychrometric_humidity_ratio(temp_db, temp_wb, pressure, over_ice: bool):
    """Humidity ratio [kg/kg] implied by a (dry-bulb, wet-bulb) pair ([1]_ eq. 33 or 35)."""
    t = temp_db - T_FREEZE  # the equations are written in degC
    ts = temp_wb - T_FREEZE
    ws = humidity_ratio(temp_wb, pressure)  # W*_s, saturation at the wet-bulb temperature
    if over_ice:
        return ((2830.0 - 0.24 * ts) * ws - 1.006 * (t - ts)) / (2830.0 + 1.86 * t - 2.1 * ts)
    return ((2501.0 - 2.326 * ts) * ws - 1.006 * (t - ts)) / (2501.0 + 1.86 * t - 4.186 * ts)


def wet_bulb_temperature(
    temp_db: ArrayLike, relative_humidity: ArrayLike, pressure: ArrayLike
) -> jnp.ndarray:
    r"""Thermodynamic wet-bulb temperature [K] from dry-bulb, relative humidity and pressure.

    Solves the psychrometric equation ([1]_ eq. 33 above freezing, eq. 35 below)

    .. math::
        W = \frac{(2501 - 2.326\,t^*)\,W_s^* - 1.006\,(t - t^*)}{2501 + 1.86\,t - 4.186\,t^*}

    for :math:`t^*`, where :math:`W` follows from the relative humidity and :math:`W_s^*` is the
    saturation humidity ratio at :math:`t^*`.  Each branch (liquid, ice) is monotone in
    :math:`t^*`, so the bracketed solver :func:`physics.solvers.solve_monotone` is used
    (gradients implicit); the ice-bulb root is taken whenever it lies below 0 degC.

    Inputs as for :func:`dew_point_temperature`, plus the total (station) ``pressure`` [Pa].
    Returns the wet-bulb temperature [K], broadcast over the inputs; accurate to 0.1 K against
    CoolProp ``HAPropsSI('B', ...)`` from -30 to +40 degC.
    """
    t, rh, p = jnp.broadcast_arrays(
        jnp.asarray(temp_db, dtype=float),
        jnp.asarray(relative_humidity, dtype=float),
        jnp.asarray(pressure, dtype=float),
    )
    w = humidity_ratio_from_vapor_pressure(rh * saturation_vapor_pressure(t), p)

    def residual_liquid(ts):
        return _psychrometric_humidity_ratio(t, ts, p, over_ice=False) - w

    def residual_ice(ts):
        return _psychrometric_humidity_ratio(t, ts, p, over_ice=True) - w

    # The wet-bulb lies between the dew point and the dry-bulb: a 60 K bracket below T_db holds
    # it for any RH above ~1 % at the temperatures of interest.  Each branch is monotone in t*.
    # The ice branch (eq. 35) is used when its root lies below freezing, else the liquid branch
    # (eq. 33).  Just around 0 degC both branches can have a root (the equation is two-valued
    # within about -0.2..+0.7 degC); this rule picks the ice-bulb one, deterministically.
    lower, upper = t - 60.0, t + 1e-6
    ts_ice = solve_monotone(residual_ice, lower, upper)
    ts_liquid = solve_monotone(residual_liquid, lower, upper)
    return jnp.where(ts_ice < T_FREEZE, ts_ice, ts_liquid)


def relative_humidity(temp_db: ArrayLike, temp_dew: ArrayLike) -> jnp.ndarray:
    """Relative humidity as a fraction [-] from dry-bulb [K] and dew-point [K] temperatures.

    ``RH = p_ws(T_dew) / p_ws(T_db)`` ([1]_ eq. 24 with eq. 37).
    """
    return saturation_vapor_pressure(temp_dew) / saturation_vapor_pressure(temp_db)


def standard_pressure(elevation: ArrayLike) -> jnp.ndarray:
    r"""Standard-atmosphere pressure [Pa] at ``elevation`` [m] ([1]_ eq. 3).

    .. math:: p = 101\,325\,(1 - 2.25577\times10^{-5}\,Z)^{5.2559}
    """
    z = jnp.asarray(elevation, dtype=float)
    return 101325.0 * (1.0 - 2.25577e-5 * z) ** 5.2559
