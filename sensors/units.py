"""Units of recorded telemetry, read from the file and converted with pint at the edge.

nvidia-smi states units in two places: the CSV header (``power.draw [W]``, ``utilization.gpu
[%]``, ``memory.used [MiB]``) and a suffix on each cell (``390.78 W``, ``100 %``); loggers that
rename columns put them in the name (``power_W``, ``temperature_C``). A reader must never assume
them: a log in kW or mW, or temperatures in degF, would otherwise be stored as W and degC.

:func:`parse_unit` maps such a unit text to a pint unit (``C``/``F`` are temperatures here, not
coulomb and farad); :func:`converter` gives the affine map from a unit to a store field's unit,
refusing a unit of another dimension. This module holds the project's one pint registry
(``twin.units`` re-exports it), so sensors never reach up into twin for it.
"""

from __future__ import annotations

import dataclasses
import functools

import pint

ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
if "percent" not in ureg:
    ureg.define("percent = 0.01 = pct")

#: Unit texts whose pint reading is not what telemetry means by them.
_ALIASES = {
    "c": "degC",
    "°c": "degC",
    "degc": "degC",
    "celsius": "degC",
    "f": "degF",
    "°f": "degF",
    "degf": "degF",
    "fahrenheit": "degF",
    "k": "kelvin",
    "%": "percent",
    "pct": "percent",
}


class UnitProblem(ValueError):
    """A unit text that is not a unit, or not one of the dimension expected."""


@functools.cache
def parse_unit(text: str) -> pint.Unit:
    """The pint unit for ``text`` (``"W"``, ``"kW"``, ``"mW"``, ``"C"``, ``"F"``, ``"%"``,
    ``"MiB"``, ``"MHz"``); raises :class:`UnitProblem` naming it when pint does not know it."""
    s = text.strip()
    s = _ALIASES.get(s.lower(), s)
    try:
        return ureg.Unit(s)
    except (pint.errors.UndefinedUnitError, ValueError, TypeError, AttributeError) as exc:
        raise UnitProblem(f"unit {text.strip()!r} is not a unit pint knows ({exc})") from None
    except Exception as exc:  # pint raises several unrelated types for malformed unit text
        raise UnitProblem(f"unit {text.strip()!r} is not a unit ({exc})") from None


@dataclasses.dataclass(frozen=True)
class Converter:
    """``value_in_target = offset + scale * value``; ``identity`` when nothing changes."""

    unit: str
    scale: float = 1.0
    offset: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def __call__(self, x: float) -> float:
        return x if self.identity else self.offset + self.scale * x


@functools.cache
def converter(unit: str, target: str) -> Converter:
    """The affine map from ``unit`` (text as found in a file) to ``target`` (a store unit).

    Raises :class:`UnitProblem` naming the unit when it is unknown or not of the dimension of
    ``target`` (a power column in degC, a temperature in MiB).
    """
    u, t = parse_unit(unit), parse_unit(target)
    if u == t:
        return Converter(unit)
    if u.dimensionality != t.dimensionality:
        raise UnitProblem(
            f"unit {unit.strip()!r} ({u}) is not a unit of {target} ({t.dimensionality})"
        )
    y0 = float(ureg.Quantity(0.0, u).to(t).magnitude)
    y1 = float(ureg.Quantity(1000.0, u).to(t).magnitude)  # a wide step: an exact 5/9 for degF
    return Converter(unit, (y1 - y0) / 1000.0, y0)
