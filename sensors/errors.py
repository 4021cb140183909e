"""The error every layer raises for bad input (a CLI flag, a file, a spec field).

Defined here, at the lowest layer that validates user input, so that sensors never reaches up
into twin for it; :class:`twin.units.SpecError` subclasses it.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad value in user input.

    The message always names the field path, the value received and what was expected.
    """

    def __init__(self, path: str, value: object, expected: str):
        if (
            type(value).__module__ == "numpy"
            and hasattr(value, "item")
            and not getattr(value, "shape", ())
        ):  # a NumPy scalar: shown as the plain number, not np.int64(-5)
            value = value.item()
        self.path = path
        self.value = value
        self.expected = expected
        super().__init__(f"{path}: got {value!r}; expected {expected}")
