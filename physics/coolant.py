r"""Coolant thermophysical properties versus temperature: water and PG25 at 2 bar abs, air at 1 atm.

Properties are linear interpolations (:func:`jax.numpy.interp`) of tables computed offline with
CoolProp [1]_ by ``data/coolants/generate_coolant_tables.py``, which writes them with their
citation and date to ``physics/tables/coolant_properties.csv``.  That file ships with this package
and is read once, at import, through :mod:`importlib.resources` (physics reads no user file and
does not depend on CoolProp).  No ad-hoc polynomial fits are used.

* ``water``: CoolProp ``Water`` (IAPWS-95 equation of state [2]_, IAPWS 2008 viscosity,
  IAPWS 2011 thermal conductivity), 2 bar abs.
* ``pg25``: CoolProp ``INCOMP::MPG[0.25]``, aqueous 1,2-propylene glycol at 25 % mass fraction
  (Melinder [3]_ fits), 2 bar abs; freezing point about -9.8 degC.
* ``air``: CoolProp ``Air``, dry air as a pseudo-pure fluid (Lemmon et al. [5]_; viscosity and
  conductivity Lemmon and Jacobsen [6]_) at 101.325 kPa: the coolant of an air-cooled server,
  whose fans move it through the heat sinks (the "pump" and "cold plates" of the facility
  model's secondary loop).  Sensible heat only (no moisture, no condensation on the coil).

Grid 0-90 degC every 1 K (water boils at 120 degC at 2 bar).  Linear interpolation reproduces
CoolProp to better than 0.04 % for every property (viscosity, the most curved, is the worst:
2.4e-4 water, 3.6e-4 PG25, 5e-7 air; density, c_p and k are below 1.3e-5).  A 2 K grid would
give 0.14 % on PG25 viscosity, above the 0.1 % target.  Outside 0-90 degC
:func:`jax.numpy.interp` holds the end values (no extrapolation): callers must stay in range.

Pressure dependence is neglected.  For the liquids it is about 5e-5 relative change in density
per bar.  Air is an ideal gas to 0.1 % here, so its density scales with absolute pressure: a
server fan's rise of a few hundred pascals changes it by under 1 %, and a site at altitude
has proportionally thinner air (about 1.2 % less per 100 m); c_p, mu and k barely change.

Between grid points the interpolant is piecewise linear, so its temperature derivative is
piecewise constant (the secant slope of the 1 K interval).

References
----------
.. [1] I. H. Bell, J. Wronski, S. Quoilin, V. Lemort, "Pure and pseudo-pure fluid thermophysical
   property evaluation and the open-source thermophysical property library CoolProp",
   Ind. Eng. Chem. Res. 53(6), 2498-2508, 2014.  Version 8.0.0 generated these tables.
.. [2] W. Wagner, A. Pruss, "The IAPWS formulation 1995 for the thermodynamic properties of
   ordinary water substance for general and scientific use", J. Phys. Chem. Ref. Data 31(2),
   387-535, 2002.
.. [3] A. Melinder, *Properties of Secondary Working Fluids for Indirect Systems*, 2nd ed.,
   International Institute of Refrigeration, 2010.
.. [4] F. P. Incropera, D. P. DeWitt, T. L. Bergman, A. S. Lavine, *Fundamentals of Heat and
   Mass Transfer*, 6th ed., Wiley, 2007, Eq. 6.42 (Prandtl number).
.. [5] E. W. Lemmon, R. T Jacobsen, S. G. Penoncello, D. G. Friend, "Thermodynamic properties
   of air and mixtures of nitrogen, argon, and oxygen from 60 to 2000 K at pressures to
   2000 MPa", J. Phys. Chem. Ref. Data 29(3), 331-385, 2000.
.. [6] E. W. Lemmon, R. T Jacobsen, "Viscosity and thermal conductivity equations for nitrogen,
   oxygen, argon, and air", Int. J. Thermophys. 25(1), 21-69, 2004.
"""

from __future__ import annotations

import csv
from importlib import resources

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from physics.constants import ZERO_CELSIUS_K

__all__ = [
    "COOLANT_PARAMETERS",
    "CoolantTable",
    "coolant_table",
    "density",
    "dynamic_viscosity",
    "prandtl_number",
    "specific_heat",
    "thermal_conductivity",
    "volumetric_heat_capacity",
]

_KELVIN_OFFSET = ZERO_CELSIUS_K

# The property table shipped with this package (a dated, cited CSV written by
# data/coolants/generate_coolant_tables.py; package-data in pyproject.toml) and its columns.
_TABLE_FOLDER, _TABLE_NAME = "tables", "coolant_properties.csv"
_COLUMNS = (
    "fluid",
    "temperature_degC",  # [degC]
    "density",  # [kg m-3]
    "specific_heat",  # [J kg-1 K-1]
    "viscosity_mPa_s",  # [mPa s]
    "conductivity",  # [W m-1 K-1]
)


class CoolantTable(eqx.Module):
    """Tabulated properties of one coolant on a common temperature grid.

    Attributes
    ----------
    temperature : grid temperatures [K], strictly increasing
    density : mass density [kg m-3]
    specific_heat : isobaric specific heat capacity [J kg-1 K-1]
    viscosity : dynamic viscosity [Pa s]
    conductivity : thermal conductivity [W m-1 K-1]
    name : label of the coolant (static)
    """

    temperature: np.ndarray
    density: np.ndarray
    specific_heat: np.ndarray
    viscosity: np.ndarray
    conductivity: np.ndarray
    name: str = eqx.field(static=True)

    def __check_init__(self):
        n = np.shape(self.temperature)
        for field in ("density", "specific_heat", "viscosity", "conductivity"):
            if np.shape(getattr(self, field)) != n:
                raise ValueError(
                    f"CoolantTable {self.name!r}: {field} has shape "
                    f"{np.shape(getattr(self, field))}, expected {n} like temperature"
                )


def _from_rows(name: str, rows: list[list[float]]) -> CoolantTable:
    arr = np.asarray(rows, dtype=np.float64)
    return CoolantTable(
        temperature=arr[:, 0] + _KELVIN_OFFSET,
        density=arr[:, 1],
        specific_heat=arr[:, 2],
        viscosity=arr[:, 3] * 1e-3,  # mPa s -> Pa s
        conductivity=arr[:, 4],
        name=name,
    )


def _read_tables() -> dict[str, CoolantTable]:
    """The :class:`CoolantTable` of every fluid in the shipped CSV, in file order."""
    resource = resources.files("physics") / _TABLE_FOLDER / _TABLE_NAME
    text = resource.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.reader(lines)
    header = tuple(next(reader))
    if header != _COLUMNS:
        raise ValueError(
            f"physics/{_TABLE_FOLDER}/{_TABLE_NAME}: columns {header}, expected {_COLUMNS}"
        )
    rows: dict[str, list[list[float]]] = {}
    for record in reader:
        rows.setdefault(record[0], []).append([float(v) for v in record[1:]])
    return {name: _from_rows(name, fluid_rows) for name, fluid_rows in rows.items()}


#: Coolant property tables by name (numpy float64 leaves, so they keep full precision whether
#: or not JAX x64 is enabled at import time).
COOLANT_PARAMETERS: dict[str, CoolantTable] = _read_tables()


def coolant_table(name: str) -> CoolantTable:
    """Return the :class:`CoolantTable` called ``name`` from :data:`COOLANT_PARAMETERS`.

    Raises
    ------
    KeyError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return COOLANT_PARAMETERS[name]
    except KeyError:
        valid = ", ".join(repr(k) for k in sorted(COOLANT_PARAMETERS))
        raise KeyError(
            f"unknown coolant {name!r}; valid names are {valid} "
            "(see physics.coolant.COOLANT_PARAMETERS)"
        ) from None


def _interp(table: CoolantTable, temp, values):
    return jnp.interp(jnp.asarray(temp), table.temperature, values)


def density(table: CoolantTable, temp):
    r"""Mass density of the coolant [kg m-3], interpolated in the CoolProp table [1]_.

    .. math:: \rho(T) = \rho_i + (\rho_{i+1} - \rho_i)\,\frac{T - T_i}{T_{i+1} - T_i}

    Parameters
    ----------
    table : CoolantTable
    temp : temperature [K], any shape
    """
    return _interp(table, temp, table.density)


def specific_heat(table: CoolantTable, temp):
    r"""Isobaric specific heat capacity :math:`c_p(T)` [J kg-1 K-1], table interpolation [1]_.

    Parameters
    ----------
    table : CoolantTable
    temp : temperature [K], any shape
    """
    return _interp(table, temp, table.specific_heat)


def dynamic_viscosity(table: CoolantTable, temp):
    r"""Dynamic viscosity :math:`\mu(T)` [Pa s], table interpolation [1]_.

    Parameters
    ----------
    table : CoolantTable
    temp : temperature [K], any shape
    """
    return _interp(table, temp, table.viscosity)


def thermal_conductivity(table: CoolantTable, temp):
    r"""Thermal conductivity :math:`k(T)` [W m-1 K-1], table interpolation [1]_.

    Parameters
    ----------
    table : CoolantTable
    temp : temperature [K], any shape
    """
    return _interp(table, temp, table.conductivity)


def prandtl_number(table: CoolantTable, temp):
    r"""Prandtl number [-] from the interpolated properties ([4]_ Eq. 6.42).

    .. math:: \mathrm{Pr} = \frac{c_p\,\mu}{k}

    Parameters
    ----------
    table : CoolantTable
    temp : temperature [K], any shape
    """
    return (specific_heat(table, temp) * dynamic_viscosity(table, temp)) / thermal_conductivity(
        table, temp
    )


def volumetric_heat_capacity(table: CoolantTable, temp):
    r"""Volumetric heat capacity :math:`\rho c_p` [J m-3 K-1].

    The coolant temperature rise at volumetric flow :math:`\dot V` [m3 s-1] carrying heat
    :math:`Q` [W] is :math:`\Delta T = Q / (\rho c_p \dot V)`.

    Parameters
    ----------
    table : CoolantTable
    temp : temperature [K], any shape
    """
    return density(table, temp) * specific_heat(table, temp)
