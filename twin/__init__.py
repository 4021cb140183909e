"""Superfactory Twin: composes physics and sensors into simulation, calibration and placement.

Importing ``twin`` turns on JAX float64: energy balances to 1e-6 over a day of a 300,000-GPU
facility and finite-difference gradient checks need it.
"""

import jax

jax.config.update("jax_enable_x64", True)
