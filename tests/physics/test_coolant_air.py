"""The ``air`` coolant table (server air stream, 101.325 kPa): CoolProp where importable, else
published values; and the table's water and PG25 rows unchanged by adding it.

The air table is written by data/coolants/generate_coolant_tables.py from CoolProp "Air".
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from physics import coolant

K = 273.15
P_ATM = 101325.0  # Pa


def test_air_grid_covers_0_to_90_degc():
    table = coolant.coolant_table("air")
    assert_allclose(table.temperature, np.arange(91.0) + K, rtol=0, atol=1e-12)
    # a gas: density falls as 1/T, viscosity and conductivity rise with T
    assert np.all(np.diff(np.asarray(table.density)) < 0)
    assert np.all(np.diff(np.asarray(table.viscosity)) > 0)
    assert np.all(np.diff(np.asarray(table.conductivity)) > 0)


def test_air_against_coolprop_off_grid():
    """Within 0.01 % of CoolProp "Air" at 1 atm between grid nodes, 0-90 degC (the 1 K linear
    interpolation of these smooth properties is good to ~3e-6, the 7-digit rounding to 5e-7)."""
    cp_mod = pytest.importorskip("CoolProp.CoolProp")
    temp = np.arange(0.0, 90.0, 0.5) + 0.37 + K
    table = coolant.coolant_table("air")
    for func, key in (
        (coolant.density, "D"),
        (coolant.specific_heat, "C"),
        (coolant.dynamic_viscosity, "V"),
        (coolant.thermal_conductivity, "L"),
        (coolant.prandtl_number, "Prandtl"),
    ):
        expected = np.array([cp_mod.PropsSI(key, "T", float(t), "P", P_ATM, "Air") for t in temp])
        assert_allclose(np.asarray(func(table, jnp.asarray(temp))), expected, rtol=1e-4)


def test_air_against_published_values():
    """Dry air at 25 degC, 1 atm: density by the ideal-gas law with the molar mass of dry air
    28.9647 g/mol (ICAO/ISO 2533 standard atmosphere) and R = 8.314462618 J/mol/K (CODATA 2018),
    1.1839 kg/m3 (the gas is ideal to 0.05 % here); c_p 1007 J/kg/K, mu 184.6e-7 Pa s,
    k 26.3e-3 W/m/K and Pr 0.707 at 300 K (Incropera et al., Fundamentals of Heat and Mass
    Transfer, 6th ed., Table A.4; their tabulated 300 K values, hence the wider tolerance on
    the transport properties: 1.85 K apart, mu and k change by ~0.3 % over that)."""
    table = coolant.coolant_table("air")
    t25 = 25.0 + K
    rho_ideal = P_ATM * 28.9647e-3 / (8.314462618 * t25)
    assert_allclose(float(coolant.density(table, t25)), rho_ideal, rtol=1e-3)
    assert_allclose(float(coolant.specific_heat(table, 300.0)), 1007.0, rtol=2e-3)
    assert_allclose(float(coolant.dynamic_viscosity(table, 300.0)), 184.6e-7, rtol=1e-2)
    assert_allclose(float(coolant.thermal_conductivity(table, 300.0)), 26.3e-3, rtol=1e-2)
    assert_allclose(float(coolant.prandtl_number(table, 300.0)), 0.707, rtol=1e-2)
    # the server-airflow rule of thumb: 1 kW heats 0.07 m3/s of 25 degC air by ~12 K
    assert 11.5 < 1e3 / (float(coolant.volumetric_heat_capacity(table, t25)) * 0.07) < 12.5
