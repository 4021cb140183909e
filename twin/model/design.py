"""The design point of one site's cooling chain, sized once and shared by the component builders.

Flows follow from the spec's design values: rack flow = ``flow_per_power`` x rack design power,
a row (one CDU) carries ``racks_per_row`` racks, and the CDU primary side carries
``primary_flow_ratio`` times the secondary capacity rate. Coolant properties are taken at the
loop's supply temperature + 5 K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physics import coolant, hydraulics
from twin.spec import Site
from twin.units import SpecError

#: Margin of a fully open CDU primary valve over the design flow (valve authority).
VALVE_OPEN_FLOW_MARGIN = 1.2
#: Pump shut-off head relative to the design head (end-suction centrifugal pumps).
PUMP_SHUTOFF_RATIO = 1.25
#: Coolant properties are taken this far above the loop's supply temperature [K].
_PROPERTY_OFFSET_K = 5.0


@dataclass(frozen=True)
class SiteDesign:
    """Design flows, heats, coolant properties and the row hydraulics of one site (SI units)."""

    tcs_density: float  # kg/m3, secondary (TCS) loop
    tcs_specific_heat: float  # J/kg/K
    fws_density: float  # kg/m3, facility water (FWS) loop
    fws_specific_heat: float  # J/kg/K
    rack_flow: float  # m3/s per rack
    rack_resistance: tuple  # Pa s2/m6 of each rack branch of a row, balanced (nearest first)
    row_flow: float  # m3/s through one CDU's row
    row_heat: float  # W of one row at design power
    header_resistance: float  # Pa s2/m6 per row header segment
    tcs_pump_head_shutoff: float  # Pa
    tcs_pump_curve_coeff: float  # Pa s2/m6: the pump's own curve
    tcs_internal_resistance: float  # Pa s2/m6: CDU exchanger, strainer, piping
    cdu_capacity_rate_hot: float  # W/K, secondary side of a CDU
    cdu_capacity_rate_cold: float  # W/K, primary side of a CDU
    cdus_per_building: int
    building_heat: float  # W of one building at design power
    fws_density_supply: float = 0.0  # kg/m3 at the FWS supply temperature
    fws_density_return: float = 0.0  # kg/m3 at supply + design ΔT
    air_coil_heat: float = 0.0  # W of one building's air coils at full load (0: outside air)

    @property
    def cdu_primary_flow(self) -> float:
        """Design facility-water flow through one CDU [m3/s]."""
        return self.cdu_capacity_rate_cold / (self.fws_density * self.fws_specific_heat)

    def air_coil_flow_ratio(self, design_delta_t: float) -> float:
        """Design flow of a building's air coils (its air heat at the FWS design ΔT) over its
        CDUs' design primary flow [-]."""
        coil_cap = self.air_coil_heat / design_delta_t
        return coil_cap / (self.cdus_per_building * self.cdu_capacity_rate_cold)


def balanced_row(
    racks: int, rack_flow: float, rack_pressure_drop: float, header_resistance: float
) -> tuple[list[float], float]:
    r"""Rack branch resistances of a row balanced at commissioning [Pa s2/m6], and the
    pressure the row needs at the CDU [Pa].

    Rack :math:`i` (0 nearest the CDU) sees the CDU's pressure less the supply and return
    header losses before it, :math:`\Delta p_i = \Delta p_0 - \sum_{j<i} 2K_h\,((n-1-j)\,q)^2`
    at the design flow :math:`q` of every rack. The index (farthest) rack gets its design
    pressure drop; each nearer rack's balancing valve adds what makes its flow the same, so
    the row carries exactly ``racks`` x ``rack_flow``:
    :math:`K_i = \Delta p_i/q^2`, :math:`\Delta p_0 = \Delta p_{rack} + \sum_j 2K_h((n-1-j)q)^2`.
    """
    downstream = (racks - 1 - np.arange(racks - 1)) * rack_flow  # flow after rack j
    seg = 2.0 * header_resistance * downstream**2
    dp0 = rack_pressure_drop + float(seg.sum())
    dp = dp0 - np.concatenate([[0.0], np.cumsum(seg)])
    return list(dp / rack_flow**2), dp0


def size_site(site: Site, tcs_table, fws_table) -> SiteDesign:
    """Size ``site``'s design point; raise SpecError if the CDU pump cannot drive its row."""
    b = site.building
    rack = b.rack
    t_tcs = site.tcs_supply_temperature + _PROPERTY_OFFSET_K
    t_fws = site.facility_water.supply_temperature + _PROPERTY_OFFSET_K
    rho_tcs = float(coolant.density(tcs_table, t_tcs))
    cp_tcs = float(coolant.specific_heat(tcs_table, t_tcs))
    q_rack = rack.flow_per_power * rack.design_power
    q_row = b.racks_per_row * q_rack
    k_header = (
        hydraulics.resistance_from_design(b.cdu.header_pressure_drop, 0.5 * q_row)
        if b.cdu.header_pressure_drop > 0
        else 0.0
    )
    h0, k_pump = hydraulics.pump_curve_from_design(q_row, b.cdu.pump_pressure, PUMP_SHUTOFF_RATIO)
    rack_k, index_dp = balanced_row(b.racks_per_row, q_rack, rack.pressure_drop, k_header)
    internal = b.cdu.pump_pressure - index_dp
    if internal < 0:
        raise SpecError(
            f"cdu_templates.{b.cdu.name}.pump_pressure",
            b.cdu.pump_pressure,
            f"at least the index rack's pressure drop plus the row headers' "
            f"({index_dp / 1e3:.1f} kPa)",
        )
    row_heat = b.racks_per_row * rack.design_power
    c_hot = rho_tcs * cp_tcs * q_row
    cdus_per_building = b.floors * b.rows_per_floor
    fw = site.facility_water
    # Heat to air of a rack at full load: the GPUs' air share at TDP and the non-liquid share of
    # the other equipment at its maximum; coils also take the air-path fans' heat.
    rack_air = rack.gpus * rack.gpu.tdp * rack.gpu.air_fraction + rack.other_power_max * (
        1.0 - rack.other_liquid_fraction
    )
    on_coils = site.air_cooling.kind == "rear_door"
    coil_heat = on_coils * (1.0 + site.air_fan_power_ratio) * rack_air * b.racks_per_row
    return SiteDesign(
        tcs_density=rho_tcs,
        tcs_specific_heat=cp_tcs,
        fws_density=float(coolant.density(fws_table, t_fws)),
        fws_specific_heat=float(coolant.specific_heat(fws_table, t_fws)),
        rack_flow=q_rack,
        rack_resistance=tuple(rack_k),
        row_flow=q_row,
        row_heat=row_heat,
        header_resistance=k_header,
        tcs_pump_head_shutoff=h0,
        tcs_pump_curve_coeff=k_pump,
        # CDU exchanger, strainer and piping lose the rest of the pump head, in series.
        tcs_internal_resistance=internal / q_row**2,
        cdu_capacity_rate_hot=c_hot,
        cdu_capacity_rate_cold=b.cdu.primary_flow_ratio * c_hot,
        cdus_per_building=cdus_per_building,
        building_heat=cdus_per_building * row_heat,
        fws_density_supply=float(coolant.density(fws_table, fw.supply_temperature)),
        fws_density_return=float(
            coolant.density(fws_table, fw.supply_temperature + fw.design_delta_t)
        ),
        air_coil_heat=float(coil_heat * cdus_per_building),
    )
