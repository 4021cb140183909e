"""Superfactory Twin: composes physics and sensors into simulation, calibration and placement.

Importing ``twin`` imports :mod:`physics`, which turns on JAX float64 (the one place that does).
The small public API is re-exported here and imported on first use, so that ``twin --help`` and
the sensor daemon do not pay for JAX compilation machinery they never use:

* :func:`load_spec` (:func:`twin.spec.load_spec`): a facility spec by name, TOML path or spec;
* :func:`prepare`, :func:`simulate`, :func:`simulate_run`, :func:`init_run`, :func:`step_run`
  (:mod:`twin.simulation`): the facility model stepped in time, with its final state;
* :func:`calibrate` (:mod:`twin.calibration`): fit the model to telemetry;
* :func:`assimilate` (:mod:`twin.estimate`): live state estimation;
* :func:`replay`, :func:`compare` (:mod:`twin.placement`): placement under policies.

See docs/architecture.md for the layout and the rule of layers.
"""

from __future__ import annotations

import importlib
from typing import Any

import physics  # noqa: F401  (float64 JAX, see physics/__init__.py)

#: Public name -> "module:attribute" it is re-exported from.
_PUBLIC = {
    "load_spec": "twin.spec:load_spec",
    "prepare": "twin.simulation:prepare",
    "simulate": "twin.simulation:simulate",
    "init_run": "twin.simulation:init_run",
    "step_run": "twin.simulation:step_run",
    "simulate_run": "twin.simulation:simulate_run",
    "calibrate": "twin.calibration:calibrate",
    "assimilate": "twin.estimate:assimilate",
    "replay": "twin.placement:replay",
    "compare": "twin.placement:compare",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'twin' has no attribute {name!r}")
    module, attr = _PUBLIC[name].split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
