"""Compose the per-component builders into one :class:`physics.facility.FacilityParams`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from physics import coolant
from physics.facility import FacilityParams
from twin.model.boundary import Boundary, boundary_params
from twin.model.calibrated import Calibration, calibrated_gpu_fields, calibration_slots
from twin.model.components import (
    cdu_params,
    die_share_at_tdp,
    electrical_params,
    facility_water_params,
    gpu_params,
    heat_rejection_params,
    path_capacity_rate,
    plate_wall_resistance,
    rack_params,
)
from twin.model.design import SiteDesign, size_site
from twin.model.workload import LoadMix, workload_params
from twin.spec import FacilitySpec, Site

#: Integer index fields; every other field is float64.
_INDEX_FIELDS = frozenset({"rack_cdu", "cdu_building", "cdu_floor", "building_site"})


def build_params(
    spec: FacilitySpec,
    boundary: dict[str, Boundary],
    load: LoadMix | None = None,
    seed: int = 0,
    gpu_spread: float = 0.0,
    hour0_utc: float = 0.0,
    tcs_supply_offset: float = 0.0,
    fws_supply_offset: float = 0.0,
    pump_speed: float = 1.0,
    calibration: Calibration | None = None,
) -> FacilityParams:
    """Lay out every array of :class:`physics.facility.FacilityParams` for ``spec``.

    ``gpu_spread`` draws per-GPU multiplicative spreads (log-normal, this relative std) of the
    junction resistance, heat capacity and leakage coefficient (manufacturing and TIM
    variation); 0 makes all GPUs of a model identical. ``tcs_supply_offset`` and
    ``fws_supply_offset`` [K] shift every setpoint (what-if studies); ``pump_speed`` sets every
    CDU pump's relative speed. ``hour0_utc`` is accepted for callers' convenience and unused.
    ``calibration`` puts each calibrated GPU's parameters where its location label says, and
    draws the rest of its GPU model from the calibrated population (:mod:`twin.model.calibrated`).
    """
    load = load or LoadMix()
    rng = np.random.default_rng(seed)
    tcs_table = coolant.coolant_table(spec.tcs_coolant)
    fws_table = coolant.coolant_table(spec.fws_coolant)
    per_site = []
    first_cdu = first_building = first_rack = 0
    slots = calibration_slots(spec, calibration) if calibration is not None else []
    for index, site in enumerate(spec.sites):
        design = size_site(site, tcs_table, fws_table)
        # Random draws happen in the GPU builder, then the workload builder, site by site.
        per_site.append(
            _gpu_fields(site, index, design, rng, gpu_spread, calibration, slots, first_rack, seed)
            | workload_params(
                load, site.building.rack.gpu, site.racks, rng, site.timezone_offset_hours
            )
            | rack_params(site, design, first_cdu)
            | cdu_params(site, design, first_building, tcs_supply_offset, pump_speed)
            | facility_water_params(site, design, index, fws_supply_offset)
            | heat_rejection_params(site, design)
            | electrical_params(site)
        )
        first_cdu += site.cdus
        first_building += site.building.count
        first_rack += site.racks
    rack = spec.sites[0].building.rack  # the spec checks that all sites share this geometry
    return FacilityParams(
        **_concatenate_sites(per_site),
        **boundary_params(spec, boundary),
        gpu_layout=(
            sum(s.racks for s in spec.sites),
            rack.trays,
            rack.paths_per_tray,
            rack.plates_in_series,
        ),
        n_tcs_tanks=spec.tcs_tanks,
        n_fws_tanks=spec.fws_tanks,
        gpu_sink=any(
            np.any(site["gpu_sink_resistance"] > 0)
            or np.any(site["gpu_conductance_curvature"] != 0)
            for site in per_site
        ),
    )


def _gpu_fields(
    site: Site,
    index: int,
    design: SiteDesign,
    rng: np.random.Generator,
    gpu_spread: float,
    calibration: Calibration | None,
    slots: list,
    first_rack: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """The site's GPU fields: the spec's (with ``gpu_spread``), then the calibration's.

    The fleet prior draws from its own generator, so a run with and without the calibration
    sees the same workload draws.
    """
    fields = gpu_params(site, design, rng, gpu_spread)
    if calibration is None:
        return fields
    return calibrated_gpu_fields(
        fields, site, index, first_rack, plate_wall_resistance(site, design, fields), path_capacity_rate(site, design),
        die_share_at_tdp(site.building.rack.gpu), slots, calibration,
        np.random.default_rng((seed, index, 14)),
    )  # fmt: skip


def _concatenate_sites(per_site: list[dict[str, np.ndarray]]) -> dict[str, jax.Array]:
    """Join each field over sites along its first axis (index fields int32, the rest float64).

    GPU fields (4-D) stay per rack, shape (racks, 1, 1, 1), unless some site has per-GPU
    values; then every site is broadcast to the full (racks, trays, paths, series) layout.
    """
    out = {}
    for name in per_site[0]:
        parts = [fields[name] for fields in per_site]
        if parts[0].ndim == 4 and any(p.shape[1:] != (1, 1, 1) for p in parts):
            full = next(p.shape[1:] for p in parts if p.shape[1:] != (1, 1, 1))
            parts = [np.broadcast_to(p, (p.shape[0], *full)) for p in parts]
        dtype = np.int32 if name in _INDEX_FIELDS else float
        out[name] = jnp.asarray(np.concatenate(parts).astype(dtype))
    return out
