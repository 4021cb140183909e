"""The site boundary: hourly weather, grid carbon intensity and electricity price."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from twin.spec import FacilitySpec

#: Default electricity price, used only when none is given [USD/kWh] (a user input; refs data
#: README: no public hourly price exists for these areas in the shipped sources).
DEFAULT_PRICE_USD_PER_KWH = 0.08
_J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Boundary:
    """Hourly boundary conditions per site (arrays of shape (hours,)), already in UTC order."""

    temp_air: np.ndarray  # K
    temp_wet_bulb: np.ndarray  # K
    carbon_intensity: np.ndarray  # g CO2 / kWh
    price: np.ndarray  # USD / kWh


def boundary_params(spec: FacilitySpec, boundary: dict[str, Boundary]) -> dict[str, jax.Array]:
    """The boundary fields of FacilityParams: (hours, sites) arrays in SI units (per J).

    All sites are cut to the shortest weather series among them.
    """
    sites = [boundary[site.key] for site in spec.sites]
    hours = min(len(b.temp_air) for b in sites)

    def stacked(values: list[np.ndarray]) -> jax.Array:
        return jnp.asarray(np.stack([v[:hours] for v in values], axis=1))

    return {
        "weather_temp_air": stacked([b.temp_air for b in sites]),
        "weather_temp_wet_bulb": stacked([b.temp_wet_bulb for b in sites]),
        "carbon_intensity": stacked([b.carbon_intensity for b in sites]) / 1e3 / _J_PER_KWH,
        "price": stacked([b.price for b in sites]) / _J_PER_KWH,
    }
