"""Pure-JAX physics of a liquid-cooled AI superfactory (SI units, temperatures in kelvin, no I/O).

This package owns the project's one numerical switch: importing it turns on JAX float64
(``jax_enable_x64``). Energy balances to 1e-6 over a day of a 300,000-GPU facility, iterative
property solves and the finite-difference gradient checks need double precision, and every layer
that runs JAX (sensors' simulated source, the twin) imports physics first. Nothing else in the
project touches the flag.

The switch does not import JAX itself (1 s of start-up): when JAX is not loaded yet it is set
through JAX's own environment variable, which JAX reads when it is first imported, so that
``physics.constants`` (and with it ``twin --help`` or the sensor daemon) stays light.
"""

import os
import sys

if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    os.environ["JAX_ENABLE_X64"] = "true"
