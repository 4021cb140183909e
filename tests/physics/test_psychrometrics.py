"""Psychrometrics against CoolProp's IAPWS-based humid-air model, plus gradient checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from CoolProp.CoolProp import PropsSI
from CoolProp.HumidAirProp import HAPropsSI
from numpy.testing import assert_allclose

from physics import psychrometrics as ps
from twin.io.weather import load_epw

K = 273.15
EPWS = (
    "USA_WI_Milwaukee-Mitchell.Intl.AP.726400_TMY3.epw",
    "USA_GA_Atlanta-Hartsfield-Jackson.Intl.AP.722190_TMY3.epw",
    "USA_GA_Fulton.County.AP.722195_TMY3.epw",
    "dcrl_USA_GA_Atlanta-Hartsfield-Jackson.epw",
)


def test_saturation_pressure_liquid_matches_iapws95():
    # IAPWS-95 (CoolProp HEOS) saturation pressure; Hyland-Wexler is quoted to ~0.02 %.
    t = np.linspace(0.01, 90.0, 60) + K
    ref = np.array([PropsSI("P", "T", x, "Q", 0, "Water") for x in t])
    assert_allclose(ps.saturation_vapor_pressure(t), ref, rtol=5e-4)


def test_saturation_pressure_over_ice_matches_coolprop():
    # HAPropsSI's saturated vapour partial pressure includes the enhancement factor f (about
    # 1.004-1.005 near 100 kPa), which the ASHRAE ideal-gas form omits: divide it out via f.
    t = np.linspace(-40.0, -0.5, 30) + K
    p = 101325.0
    pw = np.array([HAPropsSI("P_w", "T", x, "P", p, "R", 1.0) for x in t])
    assert_allclose(ps.saturation_vapor_pressure(t), pw, rtol=6e-3)
    # Magnus over ice (Alduchov and Eskridge 1996, 611.21 exp(22.587 t/(t+273.86))) within 0.5 %.
    tc = t - K
    magnus = 611.21 * np.exp(22.587 * tc / (tc + 273.86))
    assert_allclose(ps.saturation_vapor_pressure(t), magnus, rtol=5e-3)


def test_humidity_ratio_matches_coolprop():
    td = np.array([-20.0, 0.0, 10.0, 20.0, 25.0]) + K
    p = 98000.0
    ref = np.array([HAPropsSI("W", "T", 35.0 + K, "P", p, "D", x) for x in td])
    # Within 0.6 %: the enhancement factor is neglected here.
    assert_allclose(ps.humidity_ratio(td, p), ref, rtol=6e-3)


@pytest.fixture(scope="module")
def epw_hours(shared_data):
    """(T_db [K], RH [-], p [Pa]) of every 11th hour of the four shared EPW files."""
    cols = []
    for name in EPWS:
        ds = load_epw(shared_data / "weather" / name).isel(time=slice(0, None, 11))
        cols.append(
            np.stack(
                [
                    ds.temp_air.values + K,
                    np.clip(ds.relative_humidity.values / 100.0, 0.01, 1.0),
                    ds.pressure.values,
                ]
            )
        )
    return np.concatenate(cols, axis=1)


def test_wet_bulb_matches_coolprop_over_epw_range(epw_hours):
    t, rh, p = epw_hours
    assert t.min() < -20 + K and t.max() > 35 + K  # the EPW range is covered
    ours = np.asarray(ps.wet_bulb_temperature(t, rh, p))
    ref = np.array(
        [HAPropsSI("B", "T", a, "P", c, "R", b) for a, b, c in zip(t, rh, p, strict=True)]
    )
    err = np.abs(ours - ref)
    # Near 0 degC the psychrometric equation is two-valued (ice-bulb vs water-bulb branch);
    # both codes are right, but may pick different roots.  Outside that band: 0.1 K.
    ambiguous = (np.minimum(ours, ref) > K - 0.3) & (np.maximum(ours, ref) < K + 0.8)
    assert err[~ambiguous].max() < 0.1
    assert err[ambiguous].max() < 0.8
    assert (err > 0.1).mean() < 0.01  # the two roots differ in under 1 % of the hours


def test_wet_bulb_limits():
    # Saturated air: wet-bulb = dry-bulb; dry air is well below it.
    t = jnp.array([263.15, 283.15, 303.15])
    assert_allclose(ps.wet_bulb_temperature(t, 1.0, 101325.0), t, atol=1e-6)
    assert np.all(np.asarray(ps.wet_bulb_temperature(t, 0.2, 101325.0)) < np.asarray(t) - 2.0)


def test_wet_bulb_vectorised_over_a_year_and_jit_parity():
    rng = np.random.default_rng(1)
    t = rng.uniform(-25, 38, 8760) + K
    rh = rng.uniform(0.1, 1.0, 8760)
    eager = ps.wet_bulb_temperature(t, rh, 99000.0)
    jitted = jax.jit(ps.wet_bulb_temperature)(t, rh, 99000.0)
    assert eager.shape == (8760,)
    assert_allclose(eager, jitted, atol=1e-9)


@pytest.mark.parametrize("t_c,rh", [(30.0, 0.5), (15.0, 0.8), (-10.0, 0.7), (5.0, 0.3)])
def test_wet_bulb_gradient_matches_finite_differences(t_c, rh):
    p = 99000.0

    @jax.jit
    def f(x):
        return ps.wet_bulb_temperature(x[0], x[1], x[2])

    x = jnp.array([t_c + K, rh, p])
    grad = jax.jit(jax.grad(f))(x)
    steps = jnp.array([1e-4, 1e-6, 1e-1])
    fd = jnp.array(
        [(f(x.at[i].add(h)) - f(x.at[i].add(-h))) / (2 * h) for i, h in enumerate(steps)]
    )
    assert_allclose(grad, fd, rtol=1e-5, atol=1e-9)


def test_saturation_pressure_and_dew_point_gradients():
    t = jnp.array([250.0, 290.0, 305.0])
    g = jax.vmap(jax.grad(ps.saturation_vapor_pressure))(t)
    fd = (ps.saturation_vapor_pressure(t + 1e-4) - ps.saturation_vapor_pressure(t - 1e-4)) / 2e-4
    assert_allclose(g, fd, rtol=1e-6)
    # Dew point inverts the saturation curve; its derivative w.r.t. RH is implicit.
    td = ps.dew_point_temperature(300.0, 0.5)
    assert_allclose(ps.saturation_vapor_pressure(td), 0.5 * ps.saturation_vapor_pressure(300.0))
    d = jax.grad(lambda r: ps.dew_point_temperature(300.0, r))(0.5)
    d_fd = (
        ps.dew_point_temperature(300.0, 0.5001) - ps.dew_point_temperature(300.0, 0.4999)
    ) / 2e-4
    assert_allclose(d, d_fd, rtol=1e-5)


def test_standard_pressure():
    # ASHRAE Fundamentals 2017 ch. 1 Table 1: 101.325 kPa at 0 m, 98.945 kPa at 200 m.
    assert_allclose(ps.standard_pressure(0.0), 101325.0)
    assert_allclose(ps.standard_pressure(200.0), 98945.0, rtol=2e-4)
