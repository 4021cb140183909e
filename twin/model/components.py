"""One builder per component of a site: each returns FacilityParams fields for that site.

Arrays have the site's own leading dimension (racks, CDUs, buildings or 1 for the site);
:func:`twin.model.build.build_params` concatenates them over sites. Index fields (which CDU a
rack belongs to, ...) count from the offsets of the sites before.
"""

from __future__ import annotations

import math

import numpy as np

from physics import coldplate, heat_rejection, hydraulics
from physics.heat_exchangers import ntu_counterflow
from twin.model.design import PUMP_SHUTOFF_RATIO, VALVE_OPEN_FLOW_MARGIN, SiteDesign
from twin.spec import GpuModel, Site
from twin.units import SpecError

#: Design air temperature at which the dry coolers are sized [K] (25 °C).
_DRY_COOLER_DESIGN_AIR_K = 298.15

Fields = dict[str, np.ndarray]

#: ``heat_rejection.chiller_curve`` → ``FacilityParams.chiller_curve_kind``.
_CHILLER_CURVE_KIND = {
    "carnot": heat_rejection.CHILLER_CURVE_CARNOT,
    "doe2_centrifugal": heat_rejection.CHILLER_CURVE_DOE2,
}


def path_capacity_rate(site: Site, design: SiteDesign) -> float:
    """Capacity rate of one cold-plate path at the design rack flow [W/K]."""
    rack = site.building.rack
    path_flow = design.rack_flow / (rack.trays * rack.paths_per_tray)
    return design.tcs_density * design.tcs_specific_heat * path_flow


def plate_wall_resistance(site: Site, design: SiteDesign, fields: Fields) -> float:
    """The plate's wall-to-inlet resistance 1/(ε ṁ c_p) at the design path flow [K/W], from the
    ``coldplate_ua_ref`` of :func:`gpu_params`' ``fields``."""
    ua = float(np.asarray(fields["coldplate_ua_ref"]).flat[0])
    return float(coldplate.junction_to_inlet_resistance(0.0, ua, path_capacity_rate(site, design)))


def die_share_at_tdp(g: GpuModel) -> float:
    """Share of the package's TDP dissipated in the die (the rest in the HBM stacks) [-]."""
    return 1.0 - (g.hbm_idle_power + g.hbm_power_share * g.power_dynamic) / g.tdp


def gpu_params(
    site: Site, design: SiteDesign, rng: np.random.Generator, gpu_spread: float
) -> Fields:
    r"""GPU and cold-plate fields, shape (racks, 1, 1, 1), or (racks, trays, paths, series) with
    ``gpu_spread`` > 0: per-GPU log-normal spreads of junction resistance, heat capacity and
    leakage slope (drawn from ``rng`` in that order).

    The cold plate's reference UA gives the vendor junction-coolant resistance at the design
    flow of one plate path, read as vendors and refs section 1 define it: the die's rise over
    the mean coolant per watt of the whole package at TDP, :math:`(T_j - T_m)/Q`. The die and
    HBM share the plate (:func:`physics.gpu.package_conductances`), so at TDP
    :math:`T_j - T_m = R_{pw}Q + R_{jw}Q_{die} - Q/(2\dot m c_p)`: the plate's wall-to-inlet
    resistance is that of :func:`physics.coldplate.ua_for_mean_fluid_resistance` with
    :math:`R_{jw}` weighted by the die's share of the TDP power.
    """
    rack = site.building.rack
    g = rack.gpu
    path_flow = design.rack_flow / (rack.trays * rack.paths_per_tray)
    path_cap = path_capacity_rate(site, design)
    die_share = die_share_at_tdp(g)
    ua_ref = float(
        coldplate.ua_for_mean_fluid_resistance(
            g.resistance_junction_coolant, g.resistance_junction_wall * die_share, path_cap
        )
    )
    if not np.isfinite(ua_ref) or ua_ref <= 0:
        raise SpecError(
            f"gpu_models.{g.name}.resistance_junction_coolant",
            g.resistance_junction_coolant,
            "a resistance that the cold plate can reach at the design flow "
            f"(path capacity rate {path_cap:.0f} W/K): larger than "
            f"resistance_junction_wall x die share of TDP + 1/(2 m cp) = "
            f"{g.resistance_junction_wall * die_share + 0.5 / path_cap:.4f} K/W",
        )
    # Parameters shared by all GPUs of a rack are stored per rack and broadcast.
    per_rack = (site.racks, 1, 1, 1)
    per_gpu = (site.racks, rack.trays, rack.paths_per_tray, rack.plates_in_series)

    def spread(base: float) -> np.ndarray:
        if gpu_spread <= 0:
            return np.full(per_rack, base)
        return base * rng.lognormal(0.0, gpu_spread, per_gpu)

    fields = {"gpu_resistance_jw": spread(g.resistance_junction_wall)}
    fields["gpu_capacitance"] = spread(g.heat_capacity)
    fields["gpu_leakage_coeff"] = spread(g.leakage_coefficient)
    shared = {
        "gpu_leakage_ref": g.leakage_at_reference,
        "gpu_power_idle": g.power_idle_static,
        "gpu_power_dynamic": g.power_dynamic,
        "gpu_power_limit": g.power_limit,
        "gpu_hbm_resistance": g.hbm_resistance,
        "gpu_hbm_capacitance": g.hbm_heat_capacity,
        "gpu_hbm_power_idle": g.hbm_idle_power,
        "gpu_hbm_power_share": g.hbm_power_share,
        "gpu_temp_ref": g.reference_temperature,
        "gpu_temp_max_operating": g.max_operating_temperature,
        "gpu_temp_slowdown": g.slowdown_temperature,
        "gpu_air_fraction": g.air_fraction,
        "coldplate_ua_ref": ua_ref,
        "coldplate_flow_ref": path_flow,
        "coldplate_exponent": rack.coldplate_flow_exponent,
        # no sink node and straight conductances unless a calibration finds them
        # (twin.model.calibrated); the time constant only matters where R_s > 0
        "gpu_sink_resistance": 0.0,
        "gpu_sink_time": 60.0,
        "gpu_conductance_curvature": 0.0,
    }
    return fields | {name: np.full(per_rack, value) for name, value in shared.items()}


def rack_params(site: Site, design: SiteDesign, first_cdu: int) -> Fields:
    """Per-rack non-GPU power, branch resistance and row CDU (racks fill rows in order)."""
    b = site.building
    rack = b.rack
    n = site.racks
    return {
        "rack_other_power_idle": np.full(n, rack.other_power_idle),
        "rack_other_power_max": np.full(n, rack.other_power_max),
        "rack_other_liquid_fraction": np.full(n, rack.other_liquid_fraction),
        "rack_resistance": np.tile(np.asarray(design.rack_resistance), site.cdus),
        "rack_cdu": first_cdu + np.repeat(np.arange(site.cdus), b.racks_per_row),
        "rack_design_heat": np.full(n, rack.design_power),
        "rack_flow_min": np.full(
            n, 1.0 if b.cdu.pump_control == "fixed" else b.cdu.minimum_rack_flow
        ),
    }


def _cdu_ua(site: Site, design: SiteDesign) -> float:
    """CDU exchanger UA [W/K] that reaches the template's approach at design heat and flows."""
    cdu = site.building.cdu
    row_heat = design.row_heat
    c_hot, c_cold = design.cdu_capacity_rate_hot, design.cdu_capacity_rate_cold
    c_min, c_max = min(c_hot, c_cold), max(c_hot, c_cold)
    dt_min_side = row_heat / c_min
    eps = (
        dt_min_side / (dt_min_side + cdu.approach)
        if c_hot <= c_cold
        else (row_heat / c_max) / (row_heat / c_max + cdu.approach) * c_max / c_min
    )
    if not 0 < eps < 1:
        raise SpecError(
            f"cdu_templates.{cdu.name}.approach",
            cdu.approach,
            "an approach the exchanger can reach at design flows",
        )
    return float(ntu_counterflow(eps, c_min / c_max)) * c_min


def cdu_params(
    site: Site,
    design: SiteDesign,
    first_building: int,
    setpoint_offset: float = 0.0,
    pump_speed: float = 1.0,
) -> Fields:
    """Per-CDU secondary (TCS) loop and exchanger fields; CDUs go building, floor, row."""
    b = site.building
    n = site.cdus
    ua = _cdu_ua(site, design)
    shared = {
        "tcs_density": design.tcs_density,
        "tcs_specific_heat": design.tcs_specific_heat,
        "tcs_pump_speed": pump_speed,
        "tcs_pump_head_shutoff": design.tcs_pump_head_shutoff,
        "tcs_pump_curve_coeff": design.tcs_pump_curve_coeff,
        "tcs_internal_resistance": design.tcs_internal_resistance,
        "tcs_dp_setpoint": b.rack.pressure_drop,
        "tcs_control_time": b.cdu.control_time_constant,
        "tcs_pump_efficiency": b.cdu.pump_efficiency,
        "tcs_header_resistance": design.header_resistance,
        "tcs_volume": (1.0 - b.cdu.supply_volume_fraction) * b.cdu.loop_volume,
        "tcs_supply_volume": b.cdu.supply_volume_fraction * b.cdu.loop_volume,
        "tcs_supply_setpoint": site.tcs_supply_temperature + setpoint_offset,
        "cdu_ua_design": ua,
        "cdu_flow_design_hot": design.cdu_capacity_rate_hot,
        "cdu_flow_design_cold": design.cdu_capacity_rate_cold,
    }
    fields = {name: np.full(n, value) for name, value in shared.items()}
    fields["cdu_building"] = first_building + np.repeat(
        np.arange(b.count), design.cdus_per_building
    )
    fields["cdu_floor"] = np.tile(np.repeat(np.arange(b.floors), b.rows_per_floor), b.count)
    return fields


def plant_pump_design(site: Site, design: SiteDesign) -> tuple[float, float, float]:
    r"""Operating point of a building's plant pump, sized on its index circuit [m3/s, Pa, Pa].

    The rule: with every valve open, the index circuit (the top floor: its riser, its CDU
    primary and the buoyancy that opposes the flow up to it) passes exactly the CDU design
    primary flow; every lower floor then gets more (its control valves throttle it). The
    common pressure at the foot of the risers that does this is

    .. math:: \Delta p^* = K_{r,top}\,Q_{top}^2 + K_b q_d^2 - \Delta p_{b,top}

    (:math:`Q_{top}` the top floor's CDU and coil flow, :math:`\Delta p_b < 0`,
    :func:`physics.hydraulics.loop_buoyancy_pressure`); each lower floor's flow follows at
    that pressure, and the pump's design point is their total :math:`Q^*` at head
    :math:`\Delta p^* + K_{int} Q^{*2}`, :math:`K_{int}` the plant and mains (everything but
    risers and CDU primaries), sized so that the ground floor's circuit needs ``pump_pressure``
    at design flow (refs 8.7: 250 kPa). Air coils are branches in parallel with each floor's
    CDUs, sized for the same pressure at their design flow (``air_coil_flow_ratio`` CDU
    equivalents per CDU).

    Returns the design flow :math:`Q^*`, head and the plant's internal loss coefficient
    [Pa s2/m6] (the last as a third value so that the curve can fold it in).
    """
    b = site.building
    fw = site.facility_water
    q_cdu = design.cdu_primary_flow
    phi = design.air_coil_flow_ratio(fw.design_delta_t)
    n_eff = (1.0 + phi) * b.rows_per_floor
    k_branch = b.cdu.primary_pressure_drop / (VALVE_OPEN_FLOW_MARGIN * q_cdu) ** 2
    k_riser = riser_resistance(site, design)
    buoy = np.asarray(
        hydraulics.loop_buoyancy_pressure(
            design.fws_density_supply, design.fws_density_return, riser_heights(site)
        )
    )
    dp_star = k_riser[-1] * (n_eff * q_cdu) ** 2 + k_branch * q_cdu**2 - buoy[-1]
    q_floor = np.sqrt(np.clip(dp_star + buoy, 0.0, None) / (k_riser * n_eff**2 + k_branch))
    q_total = float(np.sum(n_eff * q_floor))
    q_building = (1.0 + phi) * design.cdus_per_building * q_cdu
    # At design flow the pump's head is pump_pressure: the branches' differential pressure
    # (a CDU branch at its design flow, not below the DP setpoint floor) + plant and mains.
    branch_dp = max(fw.minimum_pressure, k_branch * q_cdu**2)
    k_internal = (fw.pump_pressure - branch_dp) / q_building**2
    return q_total, float(dp_star + k_internal * q_total**2), k_internal


def riser_heights(site: Site) -> np.ndarray:
    """Elevation of each floor above the plant at grade [m], (floors,)."""
    b = site.building
    return np.arange(b.floors) * b.floor_height


def riser_resistance(site: Site, design: SiteDesign) -> np.ndarray:
    """Riser loss coefficient to each floor [Pa s2/m6], (floors,): floor f's riser loses
    ``f`` x ``riser_pressure_drop`` at the design flow of one floor's CDUs and air coils."""
    b = site.building
    fw = site.facility_water
    phi = design.air_coil_flow_ratio(fw.design_delta_t)
    floor_flow = (1.0 + phi) * b.rows_per_floor * design.cdu_primary_flow
    return np.arange(b.floors) * fw.riser_pressure_drop / floor_flow**2


def facility_water_params(
    site: Site, design: SiteDesign, site_index: int, setpoint_offset: float = 0.0
) -> Fields:
    """Per-building facility water (FWS) loop: pump curve, CDU branches, risers, volumes, air
    coils.

    One pump per building drives all its CDUs' primary sides (and its air coils), sized on the
    index circuit (:func:`plant_pump_design`): with every valve open each CDU gets at least its
    design primary flow, the top floor's exactly.
    """
    b = site.building
    fw = site.facility_water
    q_cdu = design.cdu_primary_flow
    if fw.pump_pressure < b.cdu.primary_pressure_drop:
        raise SpecError(
            f"sites.{site.key}.facility_water.pump_pressure",
            fw.pump_pressure,
            "at least the CDU primary pressure drop",
        )
    q_pump, head, k_internal = plant_pump_design(site, design)
    h0, k_pump = hydraulics.pump_curve_from_design(q_pump, head, PUMP_SHUTOFF_RATIO)
    shared = {
        "fws_density": design.fws_density,
        "fws_specific_heat": design.fws_specific_heat,
        "fws_supply_setpoint": fw.supply_temperature + setpoint_offset,
        "fws_pump_head_shutoff": h0,
        "fws_pump_curve_coeff": k_pump + k_internal,
        "fws_pump_efficiency": fw.pump_efficiency,
        "fws_pressure_min": fw.minimum_pressure,
        "fws_internal_resistance": k_internal,
        "fws_cdu_resistance": (b.cdu.primary_pressure_drop / (VALVE_OPEN_FLOW_MARGIN * q_cdu) ** 2),
        "fws_supply_volume": fw.supply_volume,
        "fws_return_volume": fw.return_volume,
        "fws_density_supply": design.fws_density_supply,
        "fws_density_return": design.fws_density_return,
        "fws_design_delta_t": fw.design_delta_t,
        "air_coil_fws": float(site.air_cooling.kind == "rear_door"),
        "air_coil_flow_ratio": design.air_coil_flow_ratio(fw.design_delta_t),
    }
    fields = {name: np.full(b.count, value, dtype=float) for name, value in shared.items()}
    per_floor = {
        "fws_riser_resistance": riser_resistance(site, design),
        "fws_riser_height": riser_heights(site),
        "fws_cdus_per_floor": np.full(b.floors, float(b.rows_per_floor)),
    }
    fields |= {name: np.tile(row, (b.count, 1)) for name, row in per_floor.items()}
    fields["building_site"] = np.full(b.count, site_index)
    return fields


def heat_rejection_params(site: Site, design: SiteDesign) -> Fields:
    """Per-building heat rejection: dry coolers sized for the building's design heat at 25 °C
    air, optional adiabatic pads, and trim chillers: ``ceil(chiller_capacity_fraction x design
    heat / chiller_unit_capacity)`` identical units, DOE-2 Centrifugal/5.50COP curves (used when
    ``chiller_curve = "doe2_centrifugal"``; its EIRFPLR also for ``"carnot"``)."""
    hr = site.heat_rejection
    heat = design.building_heat
    # identical units enough for the wanted capacity (chiller_capacity_fraction x design heat);
    # the part-load curve (EIRFPLR) is the DOE-2 one for both COP forms (refs 4)
    units = math.ceil(hr.chiller_capacity_fraction * heat / hr.chiller_unit_capacity - 1e-9)
    doe2 = heat_rejection.DOE2_CENTRIFUGAL_5_50COP
    ua, c_air = heat_rejection.dry_cooler_design(
        heat,
        _DRY_COOLER_DESIGN_AIR_K,
        hr.approach,
        hr.air_temperature_rise,
        heat / site.facility_water.design_delta_t,
    )
    shared = {
        "drycooler_ua_design": float(ua),
        "drycooler_air_capacity_design": float(c_air),
        "drycooler_fan_power_design": hr.fan_power_ratio * heat,
        "drycooler_speed_min": hr.min_fan_speed,
        "drycooler_ua_exponent": hr.ua_exponent,
        "adiabatic_enabled": float(hr.adiabatic),
        "adiabatic_effectiveness": hr.adiabatic_effectiveness,
        "adiabatic_switch_temp": hr.adiabatic_switch_temperature,
        "chiller_capacity": units * hr.chiller_unit_capacity,
        "chiller_second_law_efficiency": hr.chiller_second_law_efficiency,
        "chiller_evaporator_approach": hr.chiller_evaporator_approach,
        "chiller_condenser_approach": hr.chiller_condenser_approach,
        "chiller_unit_capacity": hr.chiller_unit_capacity,
        "chiller_units": float(units),
        "chiller_minimum_lift": hr.chiller_minimum_lift,
        "chiller_minimum_part_load": hr.chiller_minimum_part_load,
        "chiller_curve_kind": _CHILLER_CURVE_KIND[hr.chiller_curve],
        "chiller_cop_reference": float(doe2.cop_reference),
    }
    curves = {
        "chiller_capft": doe2.capft,
        "chiller_eirft": doe2.eirft,
        "chiller_eirfplr": doe2.eirfplr,
        "chiller_chw_range": [doe2.temp_chw_leaving_min, doe2.temp_chw_leaving_max],
        "chiller_cond_range": [doe2.temp_cond_entering_min, doe2.temp_cond_entering_max],
    }
    n = site.building.count
    out = {name: np.full(n, value, dtype=float) for name, value in shared.items()}
    out |= {name: np.tile(np.asarray(row, dtype=float), (n, 1)) for name, row in curves.items()}
    return out


def electrical_params(site: Site) -> Fields:
    """Site-level air-path fan power ratio and electrical distribution loss, shape (1,)."""
    return {
        "air_fan_power_ratio": np.array([site.air_fan_power_ratio], dtype=float),
        "electrical_loss_fraction": np.array([site.electrical_loss_fraction], dtype=float),
    }
