"""Build the physics parameters of a facility from its validated spec, load and boundary data.

``twin.spec`` parses and validates; this package sizes the design point (flows, pump curves,
exchanger UAs, dry coolers) from the spec's design values (:mod:`twin.model.design`), lays
out each component's arrays (:mod:`twin.model.components`, :mod:`twin.model.workload`,
:mod:`twin.model.boundary`) and joins them over sites into the
:class:`physics.facility.FacilityParams` that :mod:`physics.facility` steps
(:func:`build_params`).
"""

from twin.model.boundary import DEFAULT_PRICE_USD_PER_KWH, Boundary
from twin.model.build import build_params
from twin.model.workload import LoadMix

__all__ = ["DEFAULT_PRICE_USD_PER_KWH", "Boundary", "LoadMix", "build_params"]
