"""Pure-JAX physics of a liquid-cooled AI superfactory (SI units, temperatures in kelvin, no I/O)."""
