"""The project's pint UnitRegistry (defined in sensors.units) and helpers that convert boundary quantities to SI.

Physics code is SI only (K, Pa, kg, s, W, m); pint appears only at the boundaries (TOML specs,
files, CLI, UI).  Temperatures inside ``physics`` are absolute, in kelvin.

pint (half a second to import) is loaded on first use: ``ureg`` and ``Q_`` are resolved by the
module's ``__getattr__``, so the command line's parser and ``--help``, which only need
:class:`SpecError`, start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from physics.constants import ZERO_CELSIUS_K
from sensors.errors import InputError

if TYPE_CHECKING:
    from sensors.units import ureg

    Q_ = ureg.Quantity

__all__ = ["ZERO_CELSIUS_K", "InputError", "SpecError", "Q_", "ureg", "parse_quantity"]


def __getattr__(name: str) -> Any:
    if name not in ("ureg", "Q_"):
        raise AttributeError(f"module 'twin.units' has no attribute {name!r}")
    from sensors.units import ureg  # the registry lives in sensors so that readers use it too

    globals().update(ureg=ureg, Q_=ureg.Quantity)
    return globals()[name]


class SpecError(InputError):
    """A bad value in a facility spec or other input of the twin.

    The message always names the field path, the value received and what was expected. A
    subclass of :class:`sensors.errors.InputError`, so one ``except InputError`` catches bad
    input from either layer.
    """


def parse_quantity(text: object, path: str, unit: str) -> float:
    """Parse ``text`` (e.g. ``"140 kW"``) and return its magnitude in ``unit``.

    Raises :class:`SpecError` naming ``path`` when the string is not a quantity or has the
    wrong dimension.  Temperatures given in degC/degF are converted as absolute values.
    """
    import pint

    from sensors.units import ureg

    Q_ = ureg.Quantity
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SpecError(path, text, f"a quantity string with units of {unit}, e.g. '1 {unit}'")
    try:
        q = Q_(text) if isinstance(text, str) else Q_(text, "dimensionless")
    except Exception as exc:  # pint raises several unrelated types for malformed input
        raise SpecError(path, text, f"a quantity with units of {unit} ({exc})") from exc
    if not isinstance(q, pint.Quantity):
        q = Q_(q, "dimensionless")
    target = ureg.Unit(unit)
    if q.dimensionality != target.dimensionality:
        raise SpecError(
            path,
            text,
            f"a quantity with the dimension of {unit} ({target.dimensionality}), "
            f"not {q.dimensionality}",
        )
    return float(q.to(target).magnitude)


def kelvin_to_celsius(t_k):
    """Absolute temperature [K] to degree Celsius [degC]."""
    return t_k - ZERO_CELSIUS_K


def celsius_to_kelvin(t_c):
    """Degree Celsius [degC] to absolute temperature [K]."""
    return t_c + ZERO_CELSIUS_K
