r"""The facility network: GPUs → cold plates → trays → racks → row CDUs → facility water → plant.

One explicit, energy-conservative time step (:func:`step`) advances every GPU of every site
together. Structure (all arrays SI, temperatures in kelvin):

* GPU arrays have shape ``(racks, trays, paths, series)``: a tray's coolant splits into
  ``paths`` parallel cold-plate paths, each with ``series`` plates in series.
* Rack arrays ``(racks,)``; racks are ordered by row; every row has one CDU (``rack_cdu``).
* CDU arrays ``(cdus,)``; ``cdu_building`` maps CDUs to buildings.
* Building arrays ``(buildings,)``: one facility-water (FWS) loop and heat-rejection plant
  each; ``building_site`` maps buildings to sites, whose weather drives the plant.

Time integration, per step of length :math:`\Delta t`:

1. GPU die nodes are integrated exactly under the square-wave workload
   (:func:`physics.gpu.die_square_wave_step`); HBM nodes exactly for the step-mean power.
   Series plates see the inlet warmed by the step-mean heat of the plates before them.
2. The TCS loop of each CDU has a supply leg (CDU → racks) and a return leg (racks → CDU),
   each a chain of well-mixed tanks (tanks-in-series transport delay, integrated exactly for
   a constant inflow). The racks see the supply leg's last tank; their outlets mix into the
   return leg. The CDU's primary valve is set so that its counterflow exchanger delivers the
   TCS supply setpoint, solved with both legs in closed form (:func:`cdu_loop_control`); if
   the valve is fully open (flow limited by the FWS hydraulics) the supply rises above the
   setpoint (saturation).
3. The racks' heat to air goes to rear-door coils on facility water (:func:`air_coil_heat`)
   or, where a site says so, to outside air.
4. FWS returns (CDUs and air coils) mix into the building return volume, then the plant: dry coolers with
   variable-speed fans (optional adiabatic pre-cooling) and a trim chiller hold the FWS supply
   setpoint; the supply main is another tank chain whose last tank is updated with an explicit
   outflow so that the CDUs see a temperature known at the start of the step (this breaks the
   FWS loop's algebraic cycle while keeping energy exact; it requires
   :math:`C\,\Delta t \le M c_p` of that tank, checked by :func:`check_step`).

Every heat flow is computed once and used both for the state update and for the energy
ledger, so heat in − heat rejected − Δ(stored heat) vanishes to round-off.

References
----------
.. [1] ``shared/refs/physics-references.md`` sections 2–4, 7, 8.
.. [2] O. Levenspiel, *Chemical Reaction Engineering*, 3rd ed., Wiley, 1999, ch. 14
   (tanks-in-series model of plug flow with dispersion).
.. [3] R. K. Shah, D. P. Sekulić, *Fundamentals of Heat Exchanger Design*, Wiley, 2003,
   sec. 7 (film coefficients scaling as flow^0.7 in plate exchangers).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from physics import coldplate, gpu, heat_rejection, hydraulics, workload
from physics.heat_exchangers import effectiveness_counterflow
from physics.solvers import solve_monotone_saturating

#: Exponent of the film coefficients of the CDU plate exchanger with flow ([3]_).
CDU_FILM_EXPONENT = 0.7


class FacilityParams(eqx.Module):
    """Every parameter of the facility, in SI units (temperatures in K). Built by ``twin.spec``."""

    # --- GPU (shape (R, T, P, S) or broadcastable to it) ---
    gpu_resistance_jw: jax.Array  # junction → cold-plate wall [K/W]
    gpu_capacitance: jax.Array  # die node heat capacity [J/K]
    gpu_leakage_ref: jax.Array  # leakage at temp_ref [W]
    gpu_leakage_coeff: jax.Array  # relative leakage slope [1/K]
    gpu_power_idle: jax.Array  # temperature-independent idle power [W]
    gpu_power_dynamic: jax.Array  # dynamic power at utilization 1 [W]
    gpu_power_limit: jax.Array  # firmware power cap [W]
    gpu_hbm_resistance: jax.Array  # HBM stacks → cold-plate wall [K/W]
    gpu_hbm_capacitance: jax.Array  # [J/K]
    gpu_hbm_power_idle: jax.Array  # [W]
    gpu_hbm_power_share: jax.Array  # share of dynamic power dissipated in HBM [-]
    gpu_temp_ref: jax.Array  # leakage reference temperature [K]
    gpu_temp_max_operating: jax.Array  # NVML max operating temperature [K]
    gpu_temp_slowdown: jax.Array  # NVML HW slowdown temperature: clocks drop above it [K]
    gpu_air_fraction: jax.Array  # share of GPU heat that leaves to air [-]
    gpu_sink_resistance: jax.Array  # package → loop inlet through the sink node [K/W]
    gpu_sink_time: jax.Array  # the sink node's time constant R_s C_s [s]
    gpu_conductance_curvature: jax.Array  # conductance growth per K of die rise [1/K]
    coldplate_ua_ref: jax.Array  # plate conductance at coldplate_flow_ref [W/K]
    coldplate_flow_ref: jax.Array  # [m3/s] per plate path
    coldplate_exponent: jax.Array  # UA ∝ flow^n [-]
    # --- workload schedule per rack (R,) ---
    load_low: jax.Array  # utilization in the low phase [-]
    load_high: jax.Array  # utilization in the high phase [-]
    load_period: jax.Array  # [s]
    load_duty: jax.Array  # [-]
    load_phase: jax.Array  # [s]
    load_diurnal_amplitude: jax.Array  # [-]
    load_diurnal_peak_hour: jax.Array  # [h]
    # --- rack (R,) ---
    rack_other_power_idle: jax.Array  # CPUs, switches, NICs at idle [W]
    rack_other_power_max: jax.Array  # ... at full load [W]
    rack_other_liquid_fraction: jax.Array  # share of that heat into the liquid [-]
    rack_resistance: jax.Array  # hydraulic loss coefficient of a rack branch [Pa s2/m6]
    rack_cdu: jax.Array  # int index of the row CDU
    rack_design_heat: jax.Array  # liquid heat at which a rack's valve is fully open [W]
    rack_flow_min: jax.Array  # the valve's minimum flow, fraction of the design flow [-]
    # --- TCS (secondary) loop per CDU (N,) ---
    tcs_density: jax.Array  # [kg/m3] at the loop's design temperature
    tcs_specific_heat: jax.Array  # [J/kg/K]
    tcs_pump_speed: jax.Array  # relative speed [-]
    tcs_pump_head_shutoff: jax.Array  # [Pa]
    tcs_pump_curve_coeff: jax.Array  # pump curve H = s²H₀ - kQ² [Pa s2/m6]
    tcs_internal_resistance: jax.Array  # CDU exchanger, strainer, piping [Pa s2/m6]
    tcs_dp_setpoint: jax.Array  # rack design pressure drop: the DP setpoint at full flow [Pa]
    tcs_control_time: jax.Array  # time constant of the rack valves' heat filter [s]
    tcs_pump_efficiency: jax.Array  # wire-to-water [-]
    tcs_header_resistance: jax.Array  # per header segment [Pa s2/m6]
    tcs_volume: jax.Array  # fluid volume of the row loop's return leg (racks → CDU) [m3]
    tcs_supply_volume: jax.Array  # ... of its supply leg (CDU → racks) [m3]
    tcs_supply_setpoint: jax.Array  # [K]
    cdu_ua_design: jax.Array  # [W/K]
    cdu_flow_design_hot: jax.Array  # TCS capacity rate at design [W/K]
    cdu_flow_design_cold: jax.Array  # FWS capacity rate at design [W/K]
    cdu_building: jax.Array  # int index
    cdu_floor: jax.Array  # int index of the floor within its building
    # --- FWS (facility) loop per building (B,) ---
    fws_density: jax.Array
    fws_specific_heat: jax.Array
    fws_supply_setpoint: jax.Array  # [K]
    fws_pump_head_shutoff: jax.Array  # [Pa]
    fws_pump_curve_coeff: jax.Array  # [Pa s2/m6]
    fws_pump_efficiency: jax.Array
    fws_pressure_min: jax.Array  # differential-pressure setpoint floor [Pa]
    fws_internal_resistance: jax.Array  # plant, mains: loss outside risers and CDUs [Pa s2/m6]
    fws_cdu_resistance: jax.Array  # CDU primary branch, valve open [Pa s2/m6]
    fws_riser_resistance: jax.Array  # (B, F) riser to each floor [Pa s2/m6]
    fws_riser_height: jax.Array  # (B, F) elevation of each floor above the plant [m]
    fws_cdus_per_floor: jax.Array  # (B, F) counts (float)
    fws_supply_volume: jax.Array  # [m3]
    fws_return_volume: jax.Array  # [m3]
    fws_density_supply: jax.Array  # (B,) at the supply setpoint: the rising leg [kg/m3]
    fws_density_return: jax.Array  # (B,) at supply + design ΔT: the falling leg [kg/m3]
    fws_design_delta_t: jax.Array  # (B,) design supply-return difference [K]
    air_coil_fws: jax.Array  # (B,) 1: rack heat to air goes to coils on the FWS; 0: outside air
    air_coil_flow_ratio: jax.Array  # (B,) coil design flow / CDUs' design primary flow [-]
    # --- plant per building (B,) ---
    drycooler_ua_design: jax.Array  # [W/K]
    drycooler_air_capacity_design: jax.Array  # [W/K]
    drycooler_fan_power_design: jax.Array  # [W]
    drycooler_speed_min: jax.Array  # [-]
    drycooler_ua_exponent: jax.Array  # [-]
    adiabatic_enabled: jax.Array  # 0/1
    adiabatic_effectiveness: jax.Array  # pad effectiveness [-]
    adiabatic_switch_temp: jax.Array  # dry-bulb above which pads are wetted [K]
    chiller_capacity: jax.Array  # [W]
    chiller_second_law_efficiency: jax.Array  # [-]
    chiller_evaporator_approach: jax.Array  # [K]
    chiller_condenser_approach: jax.Array  # [K]
    chiller_unit_capacity: jax.Array  # reference capacity of one unit [W]
    chiller_units: jax.Array  # installed units (float) [-]
    chiller_minimum_lift: jax.Array  # Carnot form's lift floor [K]
    chiller_minimum_part_load: jax.Array  # below it a running unit cycles on/off [-]
    chiller_curve_kind: jax.Array  # 0 DOE-2 EIR curves, 1 Carnot fraction
    chiller_cop_reference: jax.Array  # DOE-2 reference COP [-]
    chiller_capft: jax.Array  # (B, 6) DOE-2 CAPFT biquadratic, degC
    chiller_eirft: jax.Array  # (B, 6) DOE-2 EIRFT biquadratic, degC
    chiller_eirfplr: jax.Array  # (B, 3) EIRFPLR quadratic
    chiller_chw_range: jax.Array  # (B, 2) DOE-2 validity, leaving chilled water [K]
    chiller_cond_range: jax.Array  # (B, 2) DOE-2 validity, entering condenser [K]
    building_site: jax.Array  # int index
    # --- site (S,) ---
    air_fan_power_ratio: jax.Array  # air-path fan power per W of air heat [-]
    electrical_loss_fraction: jax.Array  # distribution losses / delivered power [-]
    # --- boundary conditions (H hours, S sites) ---
    weather_temp_air: jax.Array  # dry-bulb [K], hourly
    weather_temp_wet_bulb: jax.Array  # [K]
    carbon_intensity: jax.Array  # [kg CO2 / J], hourly
    price: jax.Array  # [currency / J], hourly
    # --- static topology ---
    gpu_layout: tuple = eqx.field(static=True, default=(1, 1, 1, 1))  # (R, T, P, S)
    n_tcs_tanks: int = eqx.field(static=True, default=3)
    n_fws_tanks: int = eqx.field(static=True, default=3)
    #: the GPUs carry a sink node and curved conductances (a calibration asked for them);
    #: False: both are skipped (the spec's GPUs, and every run's speed without them)
    gpu_sink: bool = eqx.field(static=True, default=False)

    @property
    def gpu_shape(self) -> tuple[int, int, int, int]:
        return self.gpu_layout

    @property
    def n_racks(self) -> int:
        return self.rack_cdu.shape[0]

    @property
    def n_cdus(self) -> int:
        return self.cdu_building.shape[0]

    @property
    def n_buildings(self) -> int:
        return self.building_site.shape[0]

    @property
    def n_sites(self) -> int:
        return self.air_fan_power_ratio.shape[0]


class Derived(NamedTuple):
    """Quantities fixed for a run (flows, resistances), derived from the parameters."""

    rack_flow: jax.Array  # (R,) m3/s
    gpu_resistance: jax.Array  # (R,T,P,S) junction → inlet for the die's own heat [K/W]
    plate_resistance: jax.Array  # (R,T,P,S) plate wall → inlet coolant 1/(ε ṁ cp) [K/W]
    path_capacity_rate: jax.Array  # (R,) W/K per plate path
    rack_capacity_rate: jax.Array  # (R,) W/K
    cdu_capacity_rate: jax.Array  # (N,) TCS W/K
    tcs_pump_power: jax.Array  # (N,) W electric
    tcs_pump_heat: jax.Array  # (N,) W hydraulic, dissipated in the fluid
    cdu_cold_capacity_max: jax.Array  # (N,) W/K, valve fully open
    fws_flow_design: jax.Array  # (B,) m3/s, all valves open (CDUs and air coils)
    fws_pressure_design: jax.Array  # (B,) Pa at that flow
    air_coil_capacity_max: jax.Array  # (B,) W/K, air coils' valves fully open


class GpuConstants(NamedTuple):
    """Per-GPU constants of a run at a fixed step, hoisted out of the time loop.

    The package's two coupled nodes (:func:`physics.gpu.package_conductances`) in modal form
    (:func:`physics.gpu.package_modes`): each mode is a first-order node integrated exactly under
    the square-wave workload with :func:`physics.workload.square_wave_exponential_integral_hoisted`,
    so a step (:func:`gpu_step`) needs two such integrals and multiply-adds per GPU.
    """

    g_d0: jax.Array  # die → inlet conductance [W/K]
    g_h0: jax.Array  # HBM → inlet conductance [W/K]
    steady_die: jax.Array  # ∂T_d/∂s_d at steady state, (K⁻¹)₀₀ [K/W]
    steady_hbm: jax.Array  # ∂T_d/∂s_h at steady state, (K⁻¹)₀₁ [K/W]
    rate: tuple  # (λ₁, λ₂) [1/s]
    inv_rate: tuple  # (1/λ₁, 1/λ₂) [s]
    decay: tuple  # exp(-λᵢ Δt)
    v: tuple  # (V₀₁, V₀₂, V₁₁, V₁₂): modes → (die, HBM)
    w: tuple  # (W₁d, W₁h, W₂d, W₂h): rows of V⁻¹C⁻¹ [K/J]
    vinv: tuple  # (W₁d C_d, W₁h C_h, W₂d C_d, W₂h C_h): rows of V⁻¹ [-]
    memory_tail: tuple  # per mode, (1 - e_on)/(1 - e_on e_off) (physics.workload)
    memory_on: tuple  # per mode, 1 - e_off × memory_tail
    #: resistance multiplier of the step (physics.gpu.conductance_curvature_factor), 1 without
    curvature: jax.Array | float = 1.0


def gpu_constants(p: FacilityParams, d: Derived, dt: float) -> GpuConstants:
    """Constants of :func:`step`'s GPU update that do not change during a run."""
    g_d0, g_h0, g_dh = gpu.package_conductances(
        p.gpu_resistance_jw, p.gpu_hbm_resistance, d.plate_resistance
    )
    leak1 = p.gpu_leakage_coeff * p.gpu_leakage_ref
    m = gpu.package_modes(p.gpu_capacitance, p.gpu_hbm_capacitance, g_d0, g_h0, g_dh, leak1)
    k11, k22 = g_d0 + g_dh - leak1, g_h0 + g_dh
    det = k11 * k22 - g_dh**2
    on = (p.load_duty * p.load_period)[:, None, None, None]
    off = ((1.0 - p.load_duty) * p.load_period)[:, None, None, None]
    tails, ons, decays = [], [], []
    for lam in (m.rate_fast, m.rate_slow):
        tail, memory_on = workload.square_wave_memory_constants(
            jnp.exp(-lam * on), jnp.exp(-lam * off)
        )
        tails.append(tail)
        ons.append(memory_on)
        decays.append(jnp.exp(-lam * dt))
    return GpuConstants(
        g_d0=g_d0,
        g_h0=g_h0,
        steady_die=k22 / det,
        steady_hbm=g_dh / det,
        rate=(m.rate_fast, m.rate_slow),
        inv_rate=(1.0 / m.rate_fast, 1.0 / m.rate_slow),
        decay=tuple(decays),
        v=m.v_die + m.v_hbm,
        w=m.w_fast + m.w_slow,
        vinv=(
            m.w_fast[0] * p.gpu_capacitance,
            m.w_fast[1] * p.gpu_hbm_capacitance,
            m.w_slow[0] * p.gpu_capacitance,
            m.w_slow[1] * p.gpu_hbm_capacitance,
        ),
        memory_tail=tuple(tails),
        memory_on=tuple(ons),
    )


class State(NamedTuple):
    """The model state (all temperatures in K)."""

    t: jax.Array  # time since the run's start [s]
    gpu_temp: jax.Array  # (R,T,P,S) die
    hbm_temp: jax.Array  # (R,T,P,S)
    tcs_supply: jax.Array  # (N,) rack inlet: outflow of the supply leg's last tank
    tcs_tanks: jax.Array  # (N, n_tcs_tanks) return volume
    fws_supply_tanks: jax.Array  # (B, n_fws_tanks)
    fws_return_tanks: jax.Array  # (B, n_fws_tanks)
    fws_flow: jax.Array  # (B,) capacity rate of the last step [W/K]
    tcs_supply_tanks: jax.Array  # (N, n_tcs_tanks) supply leg, CDU → racks
    rack_heat_filtered: jax.Array  # (R,) rack heat its flow valve acts on (filtered) [W]
    #: (R,T,P,S) rise of each GPU's sink node over its plate inlet [K]; () zero without sinks
    gpu_sink_rise: jax.Array = 0.0
    #: (R,) the valves' feed-forward estimate of the rack heat at the last step [W]; NaN
    #: before the first step (:func:`valve_heat`)
    rack_heat_estimate: jax.Array = jnp.nan


class Ledger(NamedTuple):
    """Streaming sums over a run, per site (S,), energies in J."""

    it_energy: jax.Array
    gpu_energy: jax.Array
    pump_energy: jax.Array
    fan_energy: jax.Array
    chiller_energy: jax.Array
    electrical_loss_energy: jax.Array
    heat_in: jax.Array
    heat_rejected: jax.Array
    water_mass: jax.Array  # evaporated [kg]
    carbon_mass: jax.Array  # [kg CO2]
    cost: jax.Array
    throttle_gpu_seconds: jax.Array  # GPU-seconds above max operating temperature
    chiller_seconds: jax.Array  # plant-seconds with the trim chiller running
    max_gpu_temp: jax.Array  # [K]
    max_hbm_temp: jax.Array  # [K]
    leakage_energy: jax.Array  # GPU leakage (part of gpu_energy) [J]
    work_lost_gpu_seconds: jax.Array  # GPU-seconds of work lost to power and thermal caps
    slowdown_gpu_seconds: jax.Array  # GPU-seconds in thermal slowdown (clocks lowered)
    chiller_heat: jax.Array  # heat the trim chillers removed from the water (evaporator) [J]
    chiller_condenser_heat: jax.Array  # their condenser heat to outdoor air [J]
    drycooler_heat: jax.Array  # heat the dry coolers rejected [J]


#: Ledger fields reduced by maximum over a run; every other field is a sum.
LEDGER_MAXIMA = frozenset({"max_gpu_temp", "max_hbm_temp"})


class StepOutput(NamedTuple):
    """Per-step site-level power flows [W] and temperatures [K] (S,)."""

    it_power: jax.Array
    pump_power: jax.Array
    fan_power: jax.Array
    chiller_power: jax.Array
    heat_rejected: jax.Array
    water_rate: jax.Array  # kg/s
    max_gpu_temp: jax.Array
    mean_gpu_temp: jax.Array
    fws_supply_temp: jax.Array
    temp_air: jax.Array
    carbon_intensity: jax.Array  # kg/J


def _segment_sum(values, index, n):
    return jax.ops.segment_sum(values, index, num_segments=n, indices_are_sorted=True)


def _segment_max(values, index, n):
    return jax.ops.segment_max(values, index, num_segments=n, indices_are_sorted=True)


def derive(p: FacilityParams) -> Derived:
    """Solve the hydraulics and the flow-dependent resistances for a run (differentiable)."""
    r, t, pth, _ = p.gpu_shape
    n = p.n_cdus
    racks_per_row = r // n
    # TCS: pump curve against the row's rack branches and header ladder (implicit Newton).
    # The CDU's own loss (exchanger, strainer, piping) is in series with the pump: the row sees
    # the pump head less it; the pump's electric power is on its whole head.
    rack_k = p.rack_resistance.reshape(n, racks_per_row)
    flows = jax.vmap(hydraulics.row_flow_split)(
        p.tcs_pump_speed,
        p.tcs_pump_head_shutoff,
        p.tcs_pump_curve_coeff + p.tcs_internal_resistance,
        rack_k,
        p.tcs_header_resistance,
    )
    rack_flow = flows.reshape(r)
    cdu_flow = flows.sum(axis=1)
    pump_head = hydraulics.pump_head(
        cdu_flow, p.tcs_pump_speed, p.tcs_pump_head_shutoff, p.tcs_pump_curve_coeff
    )
    tcs_heat = cdu_flow * pump_head  # all of the pump's work ends as heat in the fluid
    tcs_power = hydraulics.pump_power(cdu_flow, pump_head, p.tcs_pump_efficiency)
    rho_cp_tcs = p.tcs_density * p.tcs_specific_heat  # (N,)
    rack_cap = rack_flow * rho_cp_tcs[p.rack_cdu]
    path_cap = rack_cap / (t * pth)
    r_ji = junction_to_inlet_resistance(p, rack_flow, path_cap)
    # FWS: plant pump (full speed) against risers and CDU primaries, per building. The cold
    # supply rises to the floors and the warm return falls to the plant: buoyancy opposes the
    # flow to the upper floors (at the design supply and return densities).
    buoyancy = hydraulics.loop_buoyancy_pressure(
        p.fws_density_supply[:, None], p.fws_density_return[:, None], p.fws_riser_height
    )
    # Air coils on each floor are branches in parallel with its CDUs, sized for the same
    # pressure at their design flow: air_coil_flow_ratio CDU-equivalent branches per CDU.
    branches = p.fws_cdus_per_floor * (1.0 + p.air_coil_flow_ratio[:, None])
    per_cdu_flow, fws_dp = jax.vmap(hydraulics.floor_flow_split)(
        jnp.ones(p.n_buildings),
        p.fws_pump_head_shutoff,
        p.fws_pump_curve_coeff,
        p.fws_riser_resistance,
        p.fws_cdu_resistance,
        branches,
        buoyancy,
    )
    cdu_max_flow = per_cdu_flow[p.cdu_building, p.cdu_floor]
    fws_rho_cp = (p.fws_density * p.fws_specific_heat)[p.cdu_building]
    cdu_flow_open = jnp.sum(per_cdu_flow * p.fws_cdus_per_floor, axis=1)
    fws_flow_design = (1.0 + p.air_coil_flow_ratio) * cdu_flow_open
    fws_pressure_design = fws_dp
    return Derived(
        rack_flow=rack_flow,
        gpu_resistance=r_ji,
        plate_resistance=r_ji - p.gpu_resistance_jw,
        path_capacity_rate=path_cap,
        rack_capacity_rate=rack_cap,
        cdu_capacity_rate=cdu_flow * rho_cp_tcs,
        tcs_pump_power=tcs_power,
        tcs_pump_heat=tcs_heat,
        cdu_cold_capacity_max=cdu_max_flow * fws_rho_cp,
        fws_flow_design=fws_flow_design,
        fws_pressure_design=fws_pressure_design,
        air_coil_capacity_max=p.air_coil_flow_ratio
        * cdu_flow_open
        * p.fws_density
        * p.fws_specific_heat,
    )


def junction_to_inlet_resistance(p: FacilityParams, rack_flow, path_cap):
    """Die junction → plate inlet resistance of every GPU [K/W], (R, T, P, S), at the racks'
    flows ``rack_flow`` [m3/s] (R,) and plate-path capacity rates ``path_cap`` [W/K] (R,):
    the plate's UA follows its flow (:func:`physics.coldplate.coldplate_conductance`)."""
    _, t, pth, _ = p.gpu_shape
    ua = coldplate.coldplate_conductance(
        p.coldplate_ua_ref,
        (rack_flow / (t * pth))[:, None, None, None],
        p.coldplate_flow_ref,
        p.coldplate_exponent,
    )
    return coldplate.junction_to_inlet_resistance(
        p.gpu_resistance_jw, ua, path_cap[:, None, None, None]
    )


def rack_flow_fraction(p: FacilityParams, rack_heat) -> jax.Array:
    r"""Each rack's flow valve: the fraction of its design flow [-], (R,).

    The valve follows the rack's heat so that its supply-return difference stays at the design
    value (flow ∝ heat), not below its minimum flow and at most fully open:

    .. math:: \phi_r = \mathrm{clip}\bigl(\dot Q_r/\dot Q_{r,design},\ \phi_{min},\ 1\bigr)

    ``rack_heat`` [W] (R,) is the heat the valve acts on (filtered, :func:`controller_heat`).
    A minimum flow of 1 is a fixed-flow row.
    """
    return jnp.clip(rack_heat / p.rack_design_heat, p.rack_flow_min, 1.0)


def at_tcs_flow(p: FacilityParams, d: Derived, fraction) -> Derived:
    r"""The derived quantities with each rack's valve at ``fraction`` (R,) of its design flow.

    The CDU pump runs on differential-pressure control (variable speed) with setpoint reset
    (ASHRAE Guideline 36 "trim and respond"): it holds at the rack manifold just the pressure
    the neediest rack's fully open valve needs, :math:`\Delta p_{set} = \Delta p_{rack}
    \max_r \phi_r^2`, and the row headers and the CDU's own loss shrink with the flow squared:

    .. math:: H = \Delta p_{rack}\max_r\phi_r^2 + (H_d - \Delta p_{rack})(\dot V/\dot V_d)^2,
              \qquad P = \dot V H/\eta

    With every rack at the same fraction this is the affinity laws' cube (refs 3, 8 case 6:
    12.5 % of full-flow power at half flow); one busy rack in a quiet row holds the pressure
    up. Every rack's plate resistances follow its flow.
    """
    rack_flow = d.rack_flow * fraction
    path_cap = d.path_capacity_rate * fraction
    r_ji = junction_to_inlet_resistance(p, rack_flow, path_cap)
    cdu_full = rack_to_cdu(p, d.rack_flow)
    cdu_flow = rack_to_cdu(p, rack_flow)
    head_full = d.tcs_pump_heat / cdu_full
    x = cdu_flow / cdu_full
    neediest = _segment_max(fraction, p.rack_cdu, p.n_cdus)
    head = p.tcs_dp_setpoint * neediest**2 + (head_full - p.tcs_dp_setpoint) * x**2
    return d._replace(
        rack_flow=rack_flow,
        gpu_resistance=r_ji,
        plate_resistance=r_ji - p.gpu_resistance_jw,
        path_capacity_rate=path_cap,
        rack_capacity_rate=d.rack_capacity_rate * fraction,
        cdu_capacity_rate=d.cdu_capacity_rate * x,
        tcs_pump_power=hydraulics.pump_power(cdu_flow, head, p.tcs_pump_efficiency),
        tcs_pump_heat=cdu_flow * head,
    )


def tcs_tank_capacity(p: FacilityParams) -> jax.Array:
    """Heat capacity of each TCS return tank [J/K], (N,)."""
    return p.tcs_volume * p.tcs_density * p.tcs_specific_heat / p.n_tcs_tanks


def tcs_supply_tank_capacity(p: FacilityParams) -> jax.Array:
    """Heat capacity of each TCS supply tank (CDU → racks) [J/K], (N,)."""
    return p.tcs_supply_volume * p.tcs_density * p.tcs_specific_heat / p.n_tcs_tanks


def fws_tank_capacity(p: FacilityParams, volume: jax.Array) -> jax.Array:
    """Heat capacity of each FWS tank [J/K], (B,)."""
    return volume * p.fws_density * p.fws_specific_heat / p.n_fws_tanks


def check_step(p: FacilityParams, d: Derived, dt: float) -> float:
    """Largest stable step [s] of the explicit FWS supply tank, the loops' only explicit part
    (the TCS legs are exact, :func:`cdu_loop_control`); ``dt`` must not exceed it. The FWS flow
    is at most every CDU's and air coil's flow with its valve open."""
    cdu_max = _segment_sum(d.cdu_cold_capacity_max, p.cdu_building, p.n_buildings)
    cap_max = cdu_max + d.air_coil_capacity_max
    limit = fws_tank_capacity(p, p.fws_supply_volume) / cap_max
    return float(jnp.min(limit))


def substeps(p: FacilityParams, d: Derived, dt: float) -> int:
    """Number of loop sub-steps that keeps the explicit FWS supply tank stable at step ``dt``
    (with a 20 % margin for valve flows above design)."""
    import math

    return max(1, math.ceil(1.2 * dt / check_step(p, d, dt)))


class PackageSteady(NamedTuple):
    """Steady package state per GPU (broadcastable to (R, T, P, S))."""

    die: jax.Array  # die temperature [K]
    hbm: jax.Array  # HBM temperature [K]
    power: jax.Array  # package electrical power, leakage included [W]


def package_steady(p: FacilityParams, d: Derived, temp_inlet, utilization) -> PackageSteady:
    """Steady die and HBM temperatures and package power at a constant ``utilization`` [-] and
    plate inlet ``temp_inlet`` [K] (both broadcastable to (R, T, P, S)), by
    :func:`physics.gpu.package_steady_temperatures`: the same network :func:`gpu_step`
    integrates, at its fixed point. With sink nodes (``p.gpu_sink``) the package sits
    :math:`R_s h P` above the inlet and its resistances are scaled by the curvature factor
    :math:`h` of its rise: a fixed point, reached by a few substitutions."""
    st = _package_steady(p, d, temp_inlet, utilization, 1.0)
    if not p.gpu_sink:
        return st
    for _ in range(6):
        h = gpu.conductance_curvature_factor(st.die - temp_inlet, p.gpu_conductance_curvature)
        sink = p.gpu_sink_resistance * h * st.power
        st = _package_steady(p, d, temp_inlet + sink, utilization, h)
    return st


def _package_steady(p: FacilityParams, d: Derived, temp_inlet, utilization, h) -> PackageSteady:
    """:func:`package_steady` of the package alone, its resistances times ``h``."""
    g_d0, g_h0, g_dh = gpu.package_conductances(
        p.gpu_resistance_jw * h, p.gpu_hbm_resistance * h, d.plate_resistance * h
    )
    leak1 = p.gpu_leakage_coeff * p.gpu_leakage_ref
    leak0 = p.gpu_leakage_ref - leak1 * p.gpu_temp_ref
    p_hbm = p.gpu_hbm_power_idle + p.gpu_hbm_power_share * p.gpu_power_dynamic * utilization
    p_die = (
        p.gpu_power_idle
        - p.gpu_hbm_power_idle
        + (1.0 - p.gpu_hbm_power_share) * p.gpu_power_dynamic * utilization
    )
    die, hbm = gpu.package_steady_temperatures(
        temp_inlet, p_die, p_hbm, g_d0, g_h0, g_dh, leak0, leak1
    )
    return PackageSteady(die, hbm, p_die + p_hbm + leak0 + leak1 * die)


def initial_state(p: FacilityParams, d: Derived) -> State:
    """A thermally settled start: every node at its setpoint-driven idle temperature."""
    tcs_sup = p.tcs_supply_setpoint
    rack_sup = tcs_sup[p.rack_cdu][:, None, None, None]
    shape = p.gpu_shape
    idle = package_steady(p, d, rack_sup, 0.0)
    die0 = jnp.broadcast_to(idle.die, shape)
    sink0 = jnp.asarray(0.0)
    if p.gpu_sink:
        h = gpu.conductance_curvature_factor(idle.die - rack_sup, p.gpu_conductance_curvature)
        sink0 = jnp.broadcast_to(p.gpu_sink_resistance * h * idle.power, shape) + 0.0
    hbm0 = jnp.broadcast_to(idle.hbm, shape)
    fws_sup = p.fws_supply_setpoint
    return State(
        t=jnp.asarray(0.0),
        gpu_temp=die0 + 0.0 * d.gpu_resistance,
        hbm_temp=hbm0 + 0.0 * d.gpu_resistance,
        tcs_supply=tcs_sup + 0.0,
        tcs_tanks=jnp.broadcast_to(tcs_sup[:, None], (p.n_cdus, p.n_tcs_tanks)) + 0.0,
        fws_supply_tanks=jnp.broadcast_to(fws_sup[:, None], (p.n_buildings, p.n_fws_tanks)) + 0.0,
        fws_return_tanks=jnp.broadcast_to(fws_sup[:, None], (p.n_buildings, p.n_fws_tanks)) + 0.0,
        fws_flow=0.5 * _segment_sum(d.cdu_cold_capacity_max, p.cdu_building, p.n_buildings),
        tcs_supply_tanks=jnp.broadcast_to(tcs_sup[:, None], (p.n_cdus, p.n_tcs_tanks)) + 0.0,
        rack_heat_filtered=p.rack_design_heat + 0.0,  # the valves start fully open
        gpu_sink_rise=sink0,
        rack_heat_estimate=jnp.full(p.n_racks, jnp.nan),
    )


def stored_heat(p: FacilityParams, d: Derived, s: State, dt: float) -> jax.Array:
    """Heat stored in every node relative to 0 K [J], per site (S,): GPU die and HBM nodes, the
    TCS return and supply tanks and the FWS tanks (every fluid volume of the loops is a tank:
    no parcel is in transit between steps, so ``d`` and ``dt`` are not needed)."""
    del d, dt
    cap = jnp.broadcast_to(p.gpu_capacitance, p.gpu_shape)
    hcap = jnp.broadcast_to(p.gpu_hbm_capacitance, p.gpu_shape)
    node = cap * s.gpu_temp + hcap * s.hbm_temp
    if p.gpu_sink:  # the sink node's heat above its inlet, C_s = tau_s / R_s
        node = node + sink_capacitance(p) * s.gpu_sink_rise
    rack = node.reshape(p.n_racks, -1).sum(axis=1)
    cdu = _segment_sum(rack, p.rack_cdu, p.n_cdus)
    cdu = cdu + tcs_tank_capacity(p) * s.tcs_tanks.sum(axis=1)
    cdu = cdu + tcs_supply_tank_capacity(p) * s.tcs_supply_tanks.sum(axis=1)
    bld = _segment_sum(cdu, p.cdu_building, p.n_buildings)
    bld = bld + fws_tank_capacity(p, p.fws_supply_volume) * s.fws_supply_tanks.sum(axis=1)
    bld = bld + fws_tank_capacity(p, p.fws_return_volume) * s.fws_return_tanks.sum(axis=1)
    return _segment_sum(bld, p.building_site, p.n_sites)


def sink_capacitance(p: FacilityParams) -> jax.Array:
    """Heat capacity of each GPU's sink node [J/K], :math:`C_s = \tau_s/R_s` (0 where no sink)."""
    r = jnp.broadcast_to(p.gpu_sink_resistance, p.gpu_shape)
    return jnp.where(r > 0, p.gpu_sink_time / jnp.where(r > 0, r, 1.0), 0.0)


def tank_chain_step(temps, temp_in, capacity_rate, tank_capacity, dt):
    r"""Tanks in series ([2]_), each integrated exactly for a constant inflow over the step.

    .. math:: M c_p\frac{dT_k}{dt} = C\,(T_{k-1} - T_k),\quad
              T_k' = \bar T_{k-1} + (T_k - \bar T_{k-1})e^{-C\Delta t/(M c_p)}

    The step-mean outflow of each tank, :math:`\bar T_k = \bar T_{k-1} - M c_p(T_k'-T_k)/(C\Delta t)`,
    feeds the next, so energy is conserved exactly. ``temps`` (..., k); returns new temps and
    the step-mean outflow of the last tank.
    """
    ratio = capacity_rate * dt / tank_capacity
    decay = jnp.exp(-ratio)
    new = []
    inflow = temp_in
    for k in range(temps.shape[-1]):
        tk = temps[..., k]
        tk_new = inflow + (tk - inflow) * decay
        inflow = inflow - (tk_new - tk) / ratio
        new.append(tk_new)
    return jnp.stack(new, axis=-1), inflow


def cdu_exchanger(temp_hot_in, temp_cold_in, cap_hot, cap_cold, p: FacilityParams):
    r"""Counterflow CDU exchanger by ε-NTU with flow-dependent UA ([3]_).

    .. math:: \frac{1}{UA} = \frac{1}{hA_h}+\frac{1}{hA_c},\quad hA_i = 2UA_d
              \Bigl(\frac{C_i}{C_{i,d}}\Bigr)^{0.7},\quad Q = \varepsilon C_{min}(T_{h,i}-T_{c,i})

    Returns the heat [W] moved from the TCS to the FWS.
    """
    ha_h = 2.0 * p.cdu_ua_design * (cap_hot / p.cdu_flow_design_hot) ** CDU_FILM_EXPONENT
    ha_c = 2.0 * p.cdu_ua_design * (cap_cold / p.cdu_flow_design_cold) ** CDU_FILM_EXPONENT
    ua = 1.0 / (1.0 / ha_h + 1.0 / ha_c)
    c_min = jnp.minimum(cap_hot, cap_cold)
    c_max = jnp.maximum(cap_hot, cap_cold)
    eps = effectiveness_counterflow(ua / c_min, c_min / c_max)
    return eps * c_min * (temp_hot_in - temp_cold_in)


def _hourly(series, hours):
    """Linear interpolation of an hourly (H, S) series at fractional hours, periodic in H."""
    n = series.shape[0]
    i0 = jnp.floor(hours)
    frac = hours - i0
    i0 = i0.astype(jnp.int32) % n
    i1 = (i0 + 1) % n
    return series[i0] * (1.0 - frac) + series[i1] * frac


class LoopState(NamedTuple):
    tcs_tanks: jax.Array  # (N, n_tcs_tanks) TCS return leg
    fws_supply_tanks: jax.Array  # (B, n_fws_tanks)
    fws_return_tanks: jax.Array  # (B, n_fws_tanks)
    tcs_supply_tanks: jax.Array  # (N, n_tcs_tanks) TCS supply leg


class LoopFlows(NamedTuple):
    """Step-mean flows of one loop sub-step, per building (B,) unless noted."""

    tcs_supply: jax.Array  # (N,) K, CDU outlet
    fws_cap: jax.Array  # W/K, CDUs and air coils
    fws_pump_power: jax.Array  # W
    fws_pump_heat: jax.Array  # W
    q_dc: jax.Array  # W rejected by dry coolers
    q_chiller: jax.Array  # W removed by trim chillers
    fan_power: jax.Array  # W
    chiller_power: jax.Array  # W
    water_rate: jax.Array  # kg/s
    cold_supply: jax.Array  # K, FWS supply seen by the CDUs
    chiller_on: jax.Array  # 0/1
    q_condenser: jax.Array  # W rejected to air by the chillers' condensers (Q + P)
    rack_inlet: jax.Array  # (N,) K, step-mean outflow of the TCS supply leg
    coil_heat: jax.Array  # W carried by air coils into the FWS return


def cdu_loop_control(
    p: FacilityParams,
    supply_tanks,
    return_tanks,
    cdu_heat,
    tcs_cap,
    temp_cold,
    cap_cold_max,
    dt,
):
    r"""One sub-step of each TCS loop: supply leg → racks → return leg → CDU exchanger, with the
    CDU primary valve set so that the exchanger delivers the TCS supply setpoint.

    Both legs are tank chains (:func:`tank_chain_step`), exact for a constant inflow, so their
    step-mean outflows are affine in it: the racks see :math:`\bar S = a_s T_c + b_s` for a CDU
    outlet :math:`T_c` held over the step, the CDU sees
    :math:`T_h = a_r(\bar S + \dot Q/C) + b_r = A T_c + B` (:math:`\dot Q` the racks' and the
    pump's heat ``cdu_heat`` [W], :math:`C` = ``tcs_cap`` [W/K]). The exchanger at valve
    capacity rate :math:`C_c` (:func:`cdu_exchanger`) moves
    :math:`k(C_c)\,C\,(T_h - T_{cold})`, so the loop closes at

    .. math:: T_c = T_h - k(T_h - T_{cold}) \;\Rightarrow\;
              T_c(C_c) = \frac{(1-k)B + kT_{cold}}{1 - (1-k)A}

    solved for :math:`T_c = T_{set}` with :math:`C_c \in [0.01\,C_{c,max}, C_{c,max}]`; with the
    valve fully open the supply rises above the setpoint (saturation). No algebraic cycle is
    left and nothing is explicit, so no step limit applies. The heat moved,
    :math:`C(T_h - T_c)`, is what the TCS loses, so energy is exact.

    Returns the new supply and return tanks, the FWS capacity rate [W/K], the heat moved [W],
    the CDU outlet [K] and the racks' step-mean inlet [K].
    """
    sup_cap, ret_cap = tcs_supply_tank_capacity(p), tcs_tank_capacity(p)
    zeros = jnp.zeros_like(supply_tanks)
    _, a_s = tank_chain_step(zeros, 1.0, tcs_cap, sup_cap, dt)
    _, b_s = tank_chain_step(supply_tanks, 0.0, tcs_cap, sup_cap, dt)
    _, a_r = tank_chain_step(jnp.zeros_like(return_tanks), 1.0, tcs_cap, ret_cap, dt)
    _, b_r = tank_chain_step(return_tanks, 0.0, tcs_cap, ret_cap, dt)
    slope = a_r * a_s
    offset = a_r * (b_s + cdu_heat / tcs_cap) + b_r

    def outlet(cap_c):
        k = cdu_exchanger(1.0, 0.0, tcs_cap, cap_c, p) / tcs_cap
        return ((1.0 - k) * offset + k * temp_cold) / (1.0 - (1.0 - k) * slope)

    cap_c = solve_monotone_saturating(
        lambda c: outlet(c) - p.tcs_supply_setpoint, 0.01 * cap_cold_max, cap_cold_max, 40
    )
    temp_out = outlet(cap_c)
    supply_tanks, rack_inlet = tank_chain_step(supply_tanks, temp_out, tcs_cap, sup_cap, dt)
    mixed_return = rack_inlet + cdu_heat / tcs_cap
    return_tanks, temp_hot = tank_chain_step(return_tanks, mixed_return, tcs_cap, ret_cap, dt)
    q_cdu = tcs_cap * (temp_hot - temp_out)
    return supply_tanks, return_tanks, cap_c, q_cdu, temp_out, rack_inlet


def air_coil_heat(p: FacilityParams, rack_air):
    r"""Heat that each building's air coils (rear doors, fan coils) give its FWS return [W], (B,).

    Where ``air_coil_fws`` is 1 the racks' heat to air ``rack_air`` [W] (R,) and the air-path
    fans' power, ``air_fan_power_ratio`` per W of it (the fans dissipate into the air stream),
    are taken up by coils on facility water: :math:`\dot Q_{coil} = (1 + r_{fan})\dot Q_{air}`.
    Elsewhere (outside air) the heat leaves with the air and the coils carry nothing.
    """
    air_b = _segment_sum(rack_to_cdu(p, rack_air), p.cdu_building, p.n_buildings)
    fan_ratio = p.air_fan_power_ratio[p.building_site]
    return p.air_coil_fws * (1.0 + fan_ratio) * air_b


def air_coil_flow(p: FacilityParams, d: Derived, coil_heat):
    r"""FWS capacity rate of each building's air coils [W/K], (B,): their valves hold the FWS
    design difference, :math:`C = \dot Q_{coil}/\Delta T_d`, up to fully open
    (``air_coil_capacity_max``)."""
    return jnp.minimum(coil_heat / p.fws_design_delta_t, d.air_coil_capacity_max)


def fws_pump(p: FacilityParams, d: Derived, fws_cap):
    r"""FWS plant pump under differential-pressure control, on the pump's whole head.

    The variable-speed pump holds the pressure across the risers and CDU branches on their
    system curve, but not below the setpoint floor :math:`\Delta p_{min}` (the valves throttle
    what the CDUs do not need); the plant and mains (dry-cooler coils, chiller evaporators,
    headers) lose :math:`K_{int}\dot V^2` on top:

    .. math:: \dot V = \frac{C}{\rho c_p},\quad
              H = \max\Bigl(\Delta p_{min},\ \Delta p_d\bigl(\dot V/\dot V_d\bigr)^2\Bigr)
              + K_{int}\dot V^2,\quad \dot Q_{pump} = \dot V H

    At the design flow :math:`H` is the spec's pump pressure (refs 8 case 7: 250 kPa).
    ``fws_cap``: loop capacity rate [W/K], (B,). Returns the hydraulic heat left in the water
    [W] and the pump's electric power [W] (:func:`physics.hydraulics.pump_power`), each (B,).
    """
    fws_rho_cp = p.fws_density * p.fws_specific_heat
    fws_q = fws_cap / fws_rho_cp  # m3/s
    head = (
        jnp.maximum(p.fws_pressure_min, d.fws_pressure_design * (fws_q / d.fws_flow_design) ** 2)
        + p.fws_internal_resistance * fws_q**2
    )
    return fws_q * head, hydraulics.pump_power(fws_q, head, p.fws_pump_efficiency)


def coil_air_temperature(p: FacilityParams, hours):
    r"""Weather at ``hours`` and the air entering each building's dry-cooler coil [K].

    Where adiabatic pads are enabled and the dry-bulb exceeds their switch temperature, the
    air is pre-cooled toward the wet-bulb
    (:func:`physics.heat_rejection.adiabatic_precooled_air_temperature`):
    :math:`T_{coil} = T_{db} - \varepsilon_{pad}(T_{db} - T_{wb})`.

    Returns the site dry-bulb (S,) and, per building (B,), dry-bulb, wet-bulb, the pads-wet
    flag and the coil air temperature.
    """
    t_air_site = _hourly(p.weather_temp_air, hours)
    t_wb_site = _hourly(p.weather_temp_wet_bulb, hours)
    t_air = t_air_site[p.building_site]
    t_wb = t_wb_site[p.building_site]
    wet = (p.adiabatic_enabled > 0) & (t_air > p.adiabatic_switch_temp)
    t_coil = jnp.where(
        wet,
        heat_rejection.adiabatic_precooled_air_temperature(t_air, t_wb, p.adiabatic_effectiveness),
        t_air,
    )
    return t_air_site, t_air, t_wb, wet, t_coil


def dry_cooler(p: FacilityParams, plant_in, t_coil, fws_cap):
    r"""Variable-speed dry coolers holding the FWS supply setpoint, with a coil bypass.

    Fan speed from :func:`physics.heat_rejection.dry_cooler_fan_speed_for_setpoint` (not below
    the minimum speed); leaving water :math:`T_{dc}` by ε-NTU
    (:func:`physics.heat_rejection.dry_cooler_leaving_temperature`). At minimum speed the
    bypass valve avoids overcooling:

    .. math:: T_{after} = \max\bigl(T_{dc},\ \min(T_{set}, T_{in})\bigr),\quad
              \dot Q = C\,(T_{in} - T_{after})

    Returns fan speed [-], water temperature after the coolers [K], heat rejected [W] and fan
    power [W] (cube law, :func:`physics.heat_rejection.dry_cooler_fan_power`), each (B,).
    """
    setpoint = p.fws_supply_setpoint
    speed = heat_rejection.dry_cooler_fan_speed_for_setpoint(
        plant_in,
        t_coil,
        fws_cap,
        setpoint,
        p.drycooler_ua_design,
        p.drycooler_air_capacity_design,
        p.drycooler_speed_min,
        p.drycooler_ua_exponent,
    )
    t_dc = heat_rejection.dry_cooler_leaving_temperature(
        plant_in,
        t_coil,
        fws_cap,
        speed,
        p.drycooler_ua_design,
        p.drycooler_air_capacity_design,
        p.drycooler_ua_exponent,
    )
    # Overcooling at minimum fan speed is avoided by the coil bypass valve.
    t_after_dc = jnp.maximum(t_dc, jnp.minimum(setpoint, plant_in))
    q_dc = fws_cap * (plant_in - t_after_dc)
    fan_power = heat_rejection.dry_cooler_fan_power(speed, p.drycooler_fan_power_design)
    return speed, t_after_dc, q_dc, fan_power


def adiabatic_water_rate(p: FacilityParams, wet, speed, t_air, t_coil, t_wb):
    r"""Water evaporated by wetted adiabatic pads [kg/s], (B,); zero where the pads are dry.

    The sensible heat taken from the air, :math:`C_{air}(T_{db} - T_{coil})` with
    :math:`C_{air}` = fan speed × design air capacity rate, evaporates water
    (:func:`physics.heat_rejection.evaporated_water_rate`).
    """
    return jnp.where(
        wet,
        heat_rejection.evaporated_water_rate(
            speed * p.drycooler_air_capacity_design, t_air, t_coil, t_wb
        ),
        0.0,
    )


def trim_chiller(p: FacilityParams, t_after_dc, fws_cap, t_air):
    r"""Trim chillers that bring the FWS down to its setpoint, staged and capacity-limited.

    .. math:: \dot Q_{dem} = \max\bigl(C(T_{after} - T_{set}),\ 0\bigr),\quad
              T_{out} = T_{after} - \dot Q/C

    with the heat :math:`\dot Q`, compressor power and condenser heat of
    :func:`physics.heat_rejection.chiller_plant`: ``chiller_units`` air-cooled units of
    ``chiller_unit_capacity`` leaving the water at the FWS setpoint, condensers in the site's
    dry-bulb; full-load COP from the DOE-2 curves or the Carnot fraction with a minimum lift
    (``chiller_curve_kind``), DOE-2 part-load curve, on/off cycling below the minimum PLR.
    Returns the heat removed [W], the plant outlet [K], the electric power [W] and the
    condenser heat [W], each (B,).
    """
    setpoint = p.fws_supply_setpoint
    q_chiller, power, q_condenser = heat_rejection.chiller_plant(
        fws_cap * (t_after_dc - setpoint),
        setpoint,
        t_air,
        p.chiller_unit_capacity,
        p.chiller_units,
        p.chiller_curve_kind,
        p.chiller_cop_reference,
        p.chiller_capft,
        p.chiller_eirft,
        p.chiller_eirfplr,
        p.chiller_chw_range,
        p.chiller_cond_range,
        p.chiller_second_law_efficiency,
        p.chiller_evaporator_approach,
        p.chiller_condenser_approach,
        p.chiller_minimum_lift,
        p.chiller_minimum_part_load,
    )
    plant_out = t_after_dc - q_chiller / fws_cap
    return q_chiller, plant_out, power, q_condenser


def fws_supply_main_step(p: FacilityParams, tanks, plant_out, fws_cap, dt):
    r"""FWS supply main: tanks in series from the plant outlet to the CDUs, (B, n_fws_tanks) [K].

    Every tank but the last is exact (:func:`tank_chain_step`); the last is updated with its
    start-of-step outflow, so that the CDUs see a temperature known at the start of the step
    (stable for :math:`C\,\Delta t \le M c_p`, :func:`check_step`):

    .. math:: T_N' = T_N + \frac{C\,\Delta t}{M c_p}\,(\bar T_{N-1} - T_N)
    """
    sup_cap = fws_tank_capacity(p, p.fws_supply_volume)
    head, mid_out = tank_chain_step(tanks[:, :-1], plant_out, fws_cap, sup_cap, dt)
    last = tanks[:, -1]
    last_new = last + fws_cap * dt / sup_cap * (mid_out - last)
    return jnp.concatenate([head, last_new[:, None]], axis=1)


def loop_substep(
    p: FacilityParams,
    d: Derived,
    s: LoopState,
    cdu_heat,
    tcs_cap,
    coil_heat,
    dt,
    hours,
):
    """Advance the liquid loops (TCS legs, CDUs, FWS with its air coils, plant) by ``dt`` for a
    heat input held constant: ``cdu_heat`` the racks' heat into the liquid plus the TCS pump
    heat per CDU [W] (N,), ``tcs_cap`` the TCS capacity rate of each CDU's loop [W/K] (N,), the
    one value of it this sub-step uses, and ``coil_heat`` the air coils' heat per building [W]
    (B,, :func:`air_coil_heat`).

    Returns the new :class:`LoopState`, the step-mean :class:`LoopFlows` and the site dry-bulb.
    """
    # ---------------- TCS loops and CDU valve control ----------------
    b = p.n_buildings
    temp_cold = s.fws_supply_tanks[:, -1][p.cdu_building]  # explicit outflow of the last tank
    tcs_supply_tanks, tcs_tanks, cap_c, q_cdu, tcs_supply, rack_inlet = cdu_loop_control(
        p,
        s.tcs_supply_tanks,
        s.tcs_tanks,
        cdu_heat,
        tcs_cap,
        temp_cold,
        d.cdu_cold_capacity_max,
        dt,
    )
    # ---------------- FWS loop per building: CDU primaries + air coils ----------------
    coil_cap = air_coil_flow(p, d, coil_heat)
    fws_cap = _segment_sum(cap_c, p.cdu_building, b) + coil_cap
    fws_pump_heat, fws_pump_power = fws_pump(p, d, fws_cap)
    cdu_heat_b = _segment_sum(q_cdu, p.cdu_building, b)
    cold_supply = s.fws_supply_tanks[:, -1]
    mixed_fws_return = cold_supply + (cdu_heat_b + coil_heat + fws_pump_heat) / fws_cap
    fws_return_tanks, plant_in = tank_chain_step(
        s.fws_return_tanks,
        mixed_fws_return,
        fws_cap,
        fws_tank_capacity(p, p.fws_return_volume),
        dt,
    )
    # ---------------- plant: dry coolers + adiabatic assist + trim chiller ----------------
    t_air_site, t_air, t_wb, wet, t_coil = coil_air_temperature(p, hours)
    speed, t_after_dc, q_dc, fan_power = dry_cooler(p, plant_in, t_coil, fws_cap)
    water_rate = adiabatic_water_rate(p, wet, speed, t_air, t_coil, t_wb)
    q_chiller, plant_out, chiller_power, q_condenser = trim_chiller(p, t_after_dc, fws_cap, t_air)
    fws_supply_tanks = fws_supply_main_step(p, s.fws_supply_tanks, plant_out, fws_cap, dt)

    flows = LoopFlows(
        tcs_supply=tcs_supply,
        fws_cap=fws_cap,
        fws_pump_power=fws_pump_power,
        fws_pump_heat=fws_pump_heat,
        q_dc=q_dc,
        q_chiller=q_chiller,
        fan_power=fan_power,
        chiller_power=chiller_power,
        water_rate=water_rate,
        cold_supply=cold_supply,
        chiller_on=jnp.where(q_chiller > 0, 1.0, 0.0),
        q_condenser=q_condenser,
        rack_inlet=rack_inlet,
        coil_heat=coil_heat,
    )
    new = LoopState(tcs_tanks, fws_supply_tanks, fws_return_tanks, tcs_supply_tanks)
    return new, flows, t_air_site


class GpuStep(NamedTuple):
    """GPU nodes after one step and their per-rack step totals (R,)."""

    gpu_temp: jax.Array  # die temperatures (R, T, P, S) [K]
    hbm_temp: jax.Array  # HBM temperatures (R, T, P, S) [K]
    rack_energy: jax.Array  # GPU electrical energy over the step [J]
    rack_heat_liquid: jax.Array  # GPU heat into the coolant over the step [J]
    rack_heat_air: jax.Array  # GPU heat into the room air over the step [J]
    rack_sum_temp: jax.Array  # sum of die temperatures at the step end [K]
    rack_max_temp: jax.Array  # hottest die at the step end [K]
    rack_max_hbm_temp: jax.Array  # hottest HBM at the step end [K]
    rack_throttle_seconds: jax.Array  # GPU-seconds above the max-operating temperature [s]
    rack_leakage_energy: jax.Array  # GPU leakage energy over the step [J]
    rack_work_lost: jax.Array  # GPU-seconds of work lost to power and thermal caps [s]
    rack_slowdown_seconds: jax.Array  # GPU-seconds in thermal slowdown [s]
    sink_rise: jax.Array = 0.0  # (R, T, P, S) sink nodes at the step end [K]; () without


class RackWorkload(NamedTuple):
    """The square-wave workload of each rack over one step, shaped (R, 1, 1) for the GPUs."""

    u_low: jax.Array  # utilization of the low phase, diurnal factor applied [-]
    u_high: jax.Array  # utilization of the high phase, diurnal factor applied [-]
    period: jax.Array  # [s]
    duty: jax.Array  # [-]
    phase: jax.Array  # [s]
    on_time: jax.Array  # time in the high phase during the step [s]
    on_fraction: jax.Array  # on_time / Δt [-]


def rack_workload(p: FacilityParams, diurnal, t0, dt) -> RackWorkload:
    """Each rack's square wave between ``load_low`` and ``load_high`` (times the diurnal factor)
    and its high-phase time within ``[t0, t0 + dt]`` (:func:`physics.workload.square_wave_on_time`)."""
    period = p.load_period[:, None, None]
    duty = p.load_duty[:, None, None]
    phase = p.load_phase[:, None, None]
    on_time = workload.square_wave_on_time(period, duty, phase, t0, dt)
    return RackWorkload(
        u_low=(p.load_low * diurnal)[:, None, None],
        u_high=(p.load_high * diurnal)[:, None, None],
        period=period,
        duty=duty,
        phase=phase,
        on_time=on_time,
        on_fraction=on_time / dt,
    )


def _at_series(x, k):
    """A GPU-shaped (R, T, P, S) parameter at series position ``k``; a broadcastable one as is."""
    x = jnp.asarray(x)
    return x[..., k] if x.ndim == 4 else x


def leakage_line(p: FacilityParams, k: int):
    r"""Leakage power as a line in die temperature, :math:`P_{leak}(T) = l_0 + l_1 T` [W]
    (:func:`physics.gpu.leakage_power`): :math:`l_1 = \alpha P_{ref}` [W/K],
    :math:`l_0 = P_{ref} - l_1 T_{ref}` [W]; for series position ``k``."""
    leak1 = _at_series(p.gpu_leakage_coeff, k) * _at_series(p.gpu_leakage_ref, k)
    leak0 = _at_series(p.gpu_leakage_ref, k) - leak1 * _at_series(p.gpu_temp_ref, k)
    return leak0, leak1


def power_capped_utilization(power_limit, p_idle, p_dyn, temp, u_low, u_high, leak0, leak1):
    r"""Firmware power cap at the step's start die temperature ``temp`` [K]
    (:func:`physics.gpu.power_capped_utilization`):

    .. math:: u_{hi} = \max\Bigl(\min\bigl(u_{high},\ \frac{P_{cap} - P_{idle} - P_{leak}(T_0)}
              {P_{dyn}}\bigr),\ 0\Bigr),\quad u_{lo} = \min(u_{low}, u_{hi})

    Returns the capped low- and high-phase utilizations [-].
    """
    headroom = power_limit - p_idle - (leak0 + leak1 * temp)
    u_hi = jnp.maximum(jnp.minimum(u_high, headroom / p_dyn), 0.0)
    u_lo = jnp.minimum(u_low, u_hi)
    return u_lo, u_hi


def _at(x, k):
    """``_at_series`` over a tuple of arrays."""
    return tuple(_at_series(xi, k) for xi in x)


class PackagePower(NamedTuple):
    """One series position's package powers over a step, after the power and thermal caps."""

    u_lo: jax.Array  # utilization of the low phase [-]
    u_hi: jax.Array  # utilization of the high phase [-]
    die_lo: jax.Array  # die source in the low phase without leakage [W]
    hbm_lo: jax.Array  # HBM power in the low phase [W]
    die_amp: jax.Array  # extra die power in the high phase [W]
    hbm_amp: jax.Array  # extra HBM power in the high phase [W]
    slowed: jax.Array  # the die was at or above its slowdown temperature [bool]


def package_power_step(p: FacilityParams, c: GpuConstants, k: int, temp, inlet, wl):
    r"""Die and HBM powers of series position ``k`` over the step, with the caps the hardware
    applies at the step's start die temperature ``temp`` [K]:

    * the firmware power cap (:func:`power_capped_utilization`);
    * thermal slowdown: a die at or above ``gpu_temp_slowdown`` has its clocks lowered until it
      holds that temperature, i.e. its utilization capped at the steady-state value
      :math:`u_{th}` (:func:`physics.gpu.thermal_slowdown_utilization`), with the
      steady-state coefficients of :class:`GpuConstants`:

      .. math:: u_{th} = \frac{T_{slow} - k_d s_{d,0} - k_h s_{h,0}}{k_d P_{d,1} + k_h P_{h,1}}

    The die draws :math:`P_{idle} - P_{hbm,idle} + u(1-s)P_{dyn}` (plus leakage) and the HBM
    :math:`P_{hbm,idle} + u\,s\,P_{dyn}`.
    """
    leak0, leak1 = leakage_line(p, k)
    p_idle, p_dyn = _at_series(p.gpu_power_idle, k), _at_series(p.gpu_power_dynamic, k)
    u_lo, u_hi = power_capped_utilization(
        _at_series(p.gpu_power_limit, k), p_idle, p_dyn, temp, wl.u_low, wl.u_high, leak0, leak1
    )
    share = _at_series(p.gpu_hbm_power_share, k)
    hbm_idle = _at_series(p.gpu_hbm_power_idle, k)
    die_idle = p_idle - hbm_idle
    die_dyn, hbm_dyn = (1.0 - share) * p_dyn, share * p_dyn
    kd, kh = _at_series(c.steady_die, k), _at_series(c.steady_hbm, k)
    s_d0 = die_idle + leak0 + _at_series(c.g_d0, k) * inlet
    s_h0 = hbm_idle + _at_series(c.g_h0, k) * inlet
    t_slow = _at_series(p.gpu_temp_slowdown, k)
    u_th = (t_slow - kd * s_d0 - kh * s_h0) / (kd * die_dyn + kh * hbm_dyn)
    slowed = temp >= t_slow
    u_hi = jnp.where(slowed, jnp.clip(jnp.minimum(u_hi, u_th), 0.0, None), u_hi)
    u_lo = jnp.minimum(u_lo, u_hi)
    return PackagePower(
        u_lo=u_lo,
        u_hi=u_hi,
        die_lo=die_idle + u_lo * die_dyn,
        hbm_lo=hbm_idle + u_lo * hbm_dyn,
        die_amp=(u_hi - u_lo) * die_dyn,
        hbm_amp=(u_hi - u_lo) * hbm_dyn,
        slowed=slowed,
    )


def gpu_plate_step(p: FacilityParams, c: GpuConstants, k: int, temp, h_old, inlet, wl, t0, dt):
    r"""One series position ``k`` of every path: the coupled die and HBM nodes over the step.

    In the modes :math:`z = V^{-1}x` of :func:`physics.gpu.package_modes` each node is exact
    under the square-wave workload ([physics.gpu]_ ref. 3):

    .. math:: z_{i,1} = e^{-\lambda_i\Delta t}z_{i,0} + \frac{1-e^{-\lambda_i\Delta t}}{\lambda_i}
              b_i + \frac{a_i}{\lambda_i}W_i,\qquad
              \int z_i\,dt = \frac{b_i\Delta t + a_i t_{on} - (z_{i,1}-z_{i,0})}{\lambda_i}

    with :math:`b = V^{-1}C^{-1}s_{lo}`, :math:`a = V^{-1}C^{-1}(A_d, A_h)`, :math:`s_{lo}` the
    low-phase sources (die power + :math:`l_0 + G_{d0}T_{in}`, HBM power +
    :math:`G_{h0}T_{in}`) and :math:`W_i` the exponentially weighted on-fraction. The GPU's
    electrical energy is :math:`E = (P_{d,lo}+P_{h,lo})\Delta t + (A_d+A_h)t_{on} + E_{leak}`,
    :math:`E_{leak} = l_0\Delta t + l_1\int T_d\,dt`, and the heat it gives its coolant
    :math:`Q\Delta t = E - C(T_1-T_0) - C_{hbm}(H_1-H_0)` [J].

    Returns the die and HBM temperatures [K], ``E``, ``Q Δt`` and ``E_leak`` [J] and the
    :class:`PackagePower`, each (R, T, P).
    """
    pw = package_power_step(p, c, k, temp, inlet, wl)
    leak0, leak1 = leakage_line(p, k)
    v01, v02, v11, v12 = _at(c.v, k)
    w1d, w1h, w2d, w2h = _at(c.w, k)
    cap_d, cap_h = _at_series(p.gpu_capacitance, k), _at_series(p.gpu_hbm_capacitance, k)
    s_d = pw.die_lo + leak0 + _at_series(c.g_d0, k) * inlet
    s_h = pw.hbm_lo + _at_series(c.g_h0, k) * inlet
    vinv = _at(c.vinv, k)
    z_new, z_int = [], []
    for i, (wd, wh) in enumerate(((w1d, w1h), (w2d, w2h))):
        lam, decay = _at_series(c.rate[i], k), _at_series(c.decay[i], k)
        inv_lam = _at_series(c.inv_rate[i], k)
        w = workload.square_wave_exponential_integral_hoisted(
            lam, wl.period, wl.duty, wl.phase, t0, dt,
            _at_series(c.memory_tail[i], k), _at_series(c.memory_on[i], k), decay,
        )  # fmt: skip
        z0 = vinv[2 * i] * temp + vinv[2 * i + 1] * h_old
        b = wd * s_d + wh * s_h
        amp = wd * pw.die_amp + wh * pw.hbm_amp
        z1 = decay * z0 + ((1.0 - decay) * b + amp * w) * inv_lam
        z_new.append(z1)
        z_int.append((b * dt + amp * wl.on_time - (z1 - z0)) * inv_lam)
    die_new = v01 * z_new[0] + v02 * z_new[1]
    h_new = v11 * z_new[0] + v12 * z_new[1]
    leak_energy = leak0 * dt + leak1 * (v01 * z_int[0] + v02 * z_int[1])
    e_k = (pw.die_lo + pw.hbm_lo) * dt + (pw.die_amp + pw.hbm_amp) * wl.on_time + leak_energy
    q_k = e_k - cap_d * (die_new - temp) - cap_h * (h_new - h_old)
    return die_new, h_new, e_k, q_k, leak_energy, pw


def utilization_deficit(pw: PackagePower, wl, dt):
    r"""GPU-seconds of utilization the caps took over the step, per GPU [s]: each phase's
    :math:`1 - u/u_{req}` times its duration (linear, so a rack's total is one sum)."""
    hi = jnp.where(wl.u_high > 0, 1.0 - pw.u_hi / jnp.where(wl.u_high > 0, wl.u_high, 1.0), 0.0)
    lo = jnp.where(wl.u_low > 0, 1.0 - pw.u_lo / jnp.where(wl.u_low > 0, wl.u_low, 1.0), 0.0)
    return wl.on_time * hi + (dt - wl.on_time) * lo


def _air_fraction_per_rack(p: FacilityParams) -> bool:
    """Whether the GPU air share ``gpu_air_fraction`` is one value per rack (or global)."""
    f_air = jnp.asarray(p.gpu_air_fraction)
    return f_air.ndim < 4 or f_air.shape[1:] == (1, 1, 1)


def _per_rack_sum(p: FacilityParams, x):
    """Sum of a per-GPU-position (R, T, P) quantity (or broadcastable) over each rack, (R,)."""
    r, n_t, n_p, _ = p.gpu_shape
    return jnp.broadcast_to(x, (r, n_t, n_p)).reshape(r, -1).sum(axis=1)


def rack_air_heat(p: FacilityParams, rack_heat, heat_air):
    """GPU heat into the room air over the step [J], (R,): the air share ``gpu_air_fraction``
    of ``rack_heat``, or the per-GPU sum ``heat_air`` where the share varies within a rack."""
    r = p.gpu_shape[0]
    f_air = jnp.asarray(p.gpu_air_fraction)
    if _air_fraction_per_rack(p):  # one air share per rack: no second sum over its GPUs
        x = jnp.broadcast_to(f_air, (r, 1, 1, 1)) if f_air.ndim == 4 else f_air
        return jnp.broadcast_to(x.reshape(-1), (r,)) * rack_heat
    return _per_rack_sum(p, heat_air)


def throttle_seconds(p: FacilityParams, gpu_temp, rack_tmax, dt):
    """GPU-seconds above the max-operating temperature per rack [s], (R,); counted only in a
    step where some rack is over it."""
    r = p.gpu_shape[0]
    limit = jnp.asarray(p.gpu_temp_max_operating)
    limit = limit.reshape(limit.shape[0], -1) if limit.ndim == 4 else limit.reshape(1, 1)
    return jax.lax.cond(
        jnp.any(rack_tmax > limit.min(axis=1)),
        lambda: jnp.where(gpu_temp.reshape(r, -1) > limit, dt, 0.0).sum(axis=1),
        lambda: jnp.zeros(r),
    )


def gpu_step(
    p: FacilityParams,
    d: Derived,
    s: State,
    c: GpuConstants,
    dt: float,
    t0: jax.Array,
    diurnal: jax.Array,
) -> GpuStep:
    r"""Advance every GPU's die and HBM node by ``dt`` and total the step per rack.

    Die (:func:`physics.gpu.die_square_wave_step`, exact for the square-wave workload):

    .. math:: T_1 = e^{-\lambda\Delta t}T_0 + \frac{1-e^{-\lambda\Delta t}}{G}S_{lo}
              + \frac{P_{hi}-P_{lo}}{G}W,\quad
              S_{lo} = P_{lo} + P_{leak}(0) + T_{in}/R

    with the power cap of :func:`physics.gpu.power_capped_utilization` applied at the step's
    start temperature; HBM (:func:`physics.gpu.hbm_temperature_step`) at its step-mean power.
    The heat a GPU gives its coolant over the step follows from its energy balance,

    .. math:: Q\,\Delta t = E_{el} - C\,(T_1 - T_0) - C_{hbm}(H_1 - H_0),

    which equals :math:`\int (T-T_{in})/R\,dt + \int (H - T_{in})/R_{hbm}\,dt` of the exact
    solution, so every rack total is one sum over its GPUs. Series plates see the inlet warmed
    by the plates before them; the share ``gpu_air_fraction`` of the heat goes to air.
    """
    r, n_t, n_p, n_s = p.gpu_shape
    wl = rack_workload(p, diurnal, t0, dt)
    f_air = jnp.asarray(p.gpu_air_fraction)
    air_per_rack = _air_fraction_per_rack(p)
    inlet = s.tcs_supply[p.rack_cdu][:, None, None]
    energy = heat = heat_air = leak = 0.0
    gpu_new, hbm_new, powers, sink_new = [], [], [], []
    for k in range(n_s):
        package_inlet = inlet + s.gpu_sink_rise[..., k] if p.gpu_sink else inlet
        # materialized once: the per-rack sums below read these instead of each recomputing
        # the whole package update inside its own fusion (XLA duplicates producers into
        # every reduction that consumes them)
        die_new, h_new, e_k, q_k, leak_k, pw = jax.lax.optimization_barrier(
            gpu_plate_step(
                p, c, k, s.gpu_temp[..., k], s.hbm_temp[..., k], package_inlet, wl, t0, dt
            )
        )
        if p.gpu_sink:
            x1, q_k = sink_step(p, c, k, s.gpu_sink_rise[..., k], q_k, dt)
            sink_new.append(x1)
        energy = energy + e_k
        heat = heat + q_k
        leak = leak + leak_k
        powers.append(pw)
        if not air_per_rack:
            heat_air = heat_air + _at_series(f_air, k) * q_k
        if k + 1 < n_s:  # the next plate of the path sees this one's heat
            path_cap = d.path_capacity_rate[:, None, None]
            inlet = inlet + (1.0 - _at_series(f_air, k)) * q_k / (dt * path_cap)
        gpu_new.append(die_new)
        hbm_new.append(h_new)
    gpu_temp = jnp.stack(gpu_new, axis=-1) if n_s > 1 else gpu_new[0][..., None]
    hbm_temp = jnp.stack(hbm_new, axis=-1) if n_s > 1 else hbm_new[0][..., None]
    rack_heat = _per_rack_sum(p, heat)
    rack_air = rack_air_heat(p, rack_heat, heat_air)
    rack_energy = _per_rack_sum(p, energy)
    rack_tmax = gpu_temp.reshape(r, -1).max(axis=1)
    return GpuStep(
        gpu_temp=gpu_temp,
        hbm_temp=hbm_temp,
        rack_energy=rack_energy,
        rack_heat_liquid=rack_heat - rack_air,
        rack_heat_air=rack_air,
        rack_sum_temp=gpu_temp.reshape(r, -1).sum(axis=1),
        rack_max_temp=rack_tmax,
        rack_max_hbm_temp=hbm_temp.reshape(r, -1).max(axis=1),
        rack_throttle_seconds=throttle_seconds(p, gpu_temp, rack_tmax, dt),
        rack_leakage_energy=_per_rack_sum(p, leak),
        **capped_seconds(p, powers, wl, dt),
        sink_rise=jnp.stack(sink_new, axis=-1) if p.gpu_sink else s.gpu_sink_rise,
    )


def sink_step(p: FacilityParams, c: GpuConstants, k: int, rise, heat_dt, dt):
    r"""Series position ``k``'s sink nodes over the step: the package's heat ``heat_dt`` [J]
    enters the sink (:func:`physics.gpu.first_order_rise_step`, resistance and time constant
    times the step's curvature factor), whose stored heat :math:`C_s\Delta x` the coolant does
    not get yet. Returns the new rise [K] and the heat to the coolant [J]."""
    h = _at_series(jnp.broadcast_to(c.curvature, p.gpu_shape), k)
    r_s = _at_series(p.gpu_sink_resistance, k)
    tau = _at_series(p.gpu_sink_time, k)
    x1 = gpu.first_order_rise_step(rise, heat_dt / dt, r_s * h, tau * h, dt)
    c_s = jnp.where(r_s > 0, tau / jnp.where(r_s > 0, r_s, 1.0), 0.0)
    return x1, heat_dt - c_s * (x1 - rise)


def capped_seconds(p: FacilityParams, powers: list, wl: RackWorkload, dt) -> dict:
    r"""Per rack (R,): GPU-seconds of work lost to the power and thermal caps, and GPU-seconds
    in thermal slowdown.

    A rack's GPUs lose the utilization share :math:`\bar x` (:func:`utilization_deficit`,
    averaged over its GPU-seconds); their clocks fall to :math:`(1-\bar x)^{1/3}`
    (:func:`physics.gpu.clock_ratio`), so the work lost is
    :math:`N\Delta t\,(1 - (1-\bar x)^{1/3})`. Exact when a rack's GPUs are capped alike (as a
    spec builds them); with per-GPU spreads it averages before the cube root.
    """
    r, n_t, n_p, n_s = p.gpu_shape
    gpu_seconds = n_t * n_p * n_s * dt
    deficit = _per_rack_sum(p, sum(utilization_deficit(pw, wl, dt) for pw in powers))
    x = jnp.clip(deficit / gpu_seconds, 0.0, 1.0)
    lost = gpu_seconds * (1.0 - gpu.clock_ratio(1.0 - x, jnp.ones_like(x)))
    slow = _per_rack_sum(p, sum(jnp.where(pw.slowed, dt, 0.0) for pw in powers))
    return {"rack_work_lost": lost, "rack_slowdown_seconds": slow}


def rack_other_power(p: FacilityParams, diurnal, t0, dt):
    r"""Power of each rack's non-GPU equipment (CPUs, switches, NICs) [W], (R,), linear in the
    rack's step-mean utilization:

    .. math:: u = \bigl(u_{low} + (u_{high} - u_{low})\,t_{on}/\Delta t\bigr)\,d(t),\quad
              P = P_{idle} + (P_{max} - P_{idle})\,\mathrm{clip}(u, 0, 1)
    """
    rack_u = rack_step_utilization(p, diurnal, t0, dt)
    return p.rack_other_power_idle + (p.rack_other_power_max - p.rack_other_power_idle) * (
        jnp.clip(rack_u, 0.0, 1.0)
    )


def rack_step_utilization(p: FacilityParams, diurnal, t0, dt):
    """Each rack's step-mean utilization (R,): its square wave's on-time share over
    [t0, t0 + dt] between ``load_low`` and ``load_high``, times the diurnal factor."""
    rack_on = workload.square_wave_on_time(p.load_period, p.load_duty, p.load_phase, t0, dt) / dt
    return (p.load_low + (p.load_high - p.load_low) * rack_on) * diurnal


def rack_heat_estimate(p: FacilityParams, rack_u):
    r"""The valves' feed-forward estimate of each rack's liquid heat [W], (R,), from its
    step-mean utilization u and the rack's parameters (leakage at its reference temperature):

    .. math:: \hat Q = n_{gpu}\,(1 - f_{air})\,\overline{P_{idle} + P_{leak,ref} + u P_{dyn}}
              + f_{liq}\,\bigl(P_{o,idle} + (P_{o,max} - P_{o,idle})\,u\bigr)

    Only its change from step to step is used (:func:`valve_heat`), so its error in level
    never reaches a steady flow.
    """
    r = p.n_racks
    n_gpu = float(math.prod(p.gpu_shape[1:]))

    def rack_mean(x):
        x = jnp.asarray(x)
        if x.ndim <= 1:
            return jnp.broadcast_to(x, (r,))
        return jnp.broadcast_to(x, (r,) + x.shape[1:]).reshape(r, -1).mean(axis=1)

    u = jnp.clip(rack_u, 0.0, 1.0)
    per_gpu = rack_mean(p.gpu_power_idle + p.gpu_leakage_ref) + u * rack_mean(p.gpu_power_dynamic)
    air = rack_mean(p.gpu_air_fraction)
    other = p.rack_other_power_idle + (p.rack_other_power_max - p.rack_other_power_idle) * u
    return n_gpu * (1.0 - air) * per_gpu + p.rack_other_liquid_fraction * other


def valve_heat(p: FacilityParams, s: State, estimate, dt):
    r"""The rack heat each valve acts on over the step [W], (R,): the filtered heat of the
    steps before (:func:`controller_heat`) plus the step-mean response of that first-order
    filter (time constant :math:`\tau`) to the estimated change of heat at the step's start:

    .. math:: \bar Q = \tilde Q + \Bigl(1 - \frac{\tau}{\Delta t}
              \bigl(1 - e^{-\Delta t/\tau}\bigr)\Bigr)(\hat Q - \hat Q_{prev})

    So a rack whose load steps (a job starts, a parked rack wakes) opens its valve within
    :math:`\tau` whatever the step (a 300 s step held it at the old flow for the whole step);
    at 1 s steps the response is 0.8 % of the change, and at a steady load it is zero.
    """
    tau = p.tcs_control_time[p.rack_cdu]
    x = dt / tau
    gain = 1.0 - (1.0 - jnp.exp(-x)) / x
    delta = jnp.where(jnp.isnan(s.rack_heat_estimate), 0.0, estimate - s.rack_heat_estimate)
    return s.rack_heat_filtered + gain * delta


def liquid_loops_step(
    p: FacilityParams, d: Derived, s: State, rack_liquid, dt, hour0, n_sub, rack_air
):
    r"""Advance the liquid loops over the step in ``n_sub`` sub-steps of :func:`loop_substep`.

    The racks' heat into the liquid ``rack_liquid`` [W] (R,), the TCS pump heat and the racks'
    heat to air ``rack_air`` [W] (R,; carried by the air coils, :func:`air_coil_heat`) are held
    constant over the step.
    Returns the new :class:`LoopState`, the step-mean :class:`LoopFlows` and the step-mean
    site dry-bulb [K] (S,).
    """
    t0 = s.t
    tcs_cap = d.cdu_capacity_rate  # the TCS capacity rate of the step: read here only
    cdu_heat = _segment_sum(rack_liquid, p.rack_cdu, p.n_cdus) + d.tcs_pump_heat
    coil_heat = air_coil_heat(p, rack_air)
    dt_sub = dt / n_sub

    def one(loop_state, j):
        hours_j = hour0 + (t0 + (j + 0.5) * dt_sub) / 3600.0
        loop_state, flows, t_air_j = loop_substep(
            p, d, loop_state, cdu_heat, tcs_cap, coil_heat, dt_sub, hours_j
        )
        return loop_state, (flows, t_air_j)

    loop0 = LoopState(s.tcs_tanks, s.fws_supply_tanks, s.fws_return_tanks, s.tcs_supply_tanks)
    loop1, (flows_j, t_air_j) = jax.lax.scan(one, loop0, jnp.arange(n_sub))
    fl = LoopFlows(*[x.mean(axis=0) for x in flows_j])  # step means
    return loop1, fl, t_air_j.mean(axis=0)


def rack_to_cdu(p: FacilityParams, x):
    """Per-rack (R,) values summed per CDU (N,)."""
    return _segment_sum(x, p.rack_cdu, p.n_cdus)


def building_to_site(p: FacilityParams, x):
    """Per-building (B,) values summed per site (S,)."""
    return _segment_sum(x, p.building_site, p.n_sites)


def cdu_to_site(p: FacilityParams, x):
    """Per-CDU (N,) values summed per site (S,)."""
    return building_to_site(p, _segment_sum(x, p.cdu_building, p.n_buildings))


def rack_to_site(p: FacilityParams, x):
    """Per-rack (R,) values summed per site (S,)."""
    return cdu_to_site(p, _segment_sum(x, p.rack_cdu, p.n_cdus))


class SitePower(NamedTuple):
    """Per-site power flows and energies of one step (S,)."""

    it_energy: jax.Array  # IT (GPUs + other rack equipment) electrical energy [J]
    it_power: jax.Array  # its step mean [W]
    pump_power: jax.Array  # TCS + FWS pumps [W]
    fan_power: jax.Array  # dry-cooler fans + air path fans [W]
    chiller_power: jax.Array  # [W]
    electrical_loss: jax.Array  # distribution losses [W]
    total_power: jax.Array  # IT + mechanical + losses [W]
    heat_in: jax.Array  # heat into the facility: IT energy + pump heat + coil-fan heat [J]
    heat_rejected: jax.Array  # plant + heat to outside air [W]


def site_power(p: FacilityParams, d: Derived, fl: LoopFlows, rack_it_energy, rack_air, dt):
    r"""Per-site power balance of the step.

    .. math:: P_{mech} = P_{pump} + P_{fan} + P_{chiller},\quad
              P_{loss} = f_{loss}\,(P_{IT} + P_{mech}),\quad
              P_{total} = P_{IT} + P_{mech} + P_{loss}

    Air-path fans draw ``air_fan_power_ratio`` per W of rack heat to air. Where air coils on
    facility water take that heat (:func:`air_coil_heat`), it and the fans' heat enter the FWS
    and leave through the plant; elsewhere the air heat leaves with outside air. So the heat
    rejected is the plant's (dry coolers + chiller evaporators) plus the air heat not on coils,
    and the heat in counts the coil fans' heat like the pumps'. ``rack_it_energy`` [J] and
    ``rack_air`` [W] are (R,).

    The balance's control volume is the IT equipment and the liquid loops. The compressor
    power is not part of it: it enters the refrigerant circuit and leaves with the condenser
    heat (:math:`Q_{cond} = Q_{evap} + P`, exact by construction in
    :func:`physics.heat_rejection.chiller_plant`); the ledger records that condenser heat
    separately (``chiller_condenser_heat``).
    """
    it_energy = rack_to_site(p, rack_it_energy)
    air_heat = rack_to_site(p, rack_air)
    air_fan = p.air_fan_power_ratio * air_heat
    coil_heat = building_to_site(p, air_coil_heat(p, rack_air))
    air_on_coils = building_to_site(
        p, p.air_coil_fws * _segment_sum(rack_to_cdu(p, rack_air), p.cdu_building, p.n_buildings)
    )
    coil_fan_heat = coil_heat - air_on_coils
    pump_power = cdu_to_site(p, d.tcs_pump_power) + building_to_site(p, fl.fws_pump_power)
    fan_power_site = building_to_site(p, fl.fan_power) + air_fan
    chiller_site = building_to_site(p, fl.chiller_power)
    mech = pump_power + fan_power_site + chiller_site
    it_power = it_energy / dt
    elec_loss = p.electrical_loss_fraction * (it_power + mech)
    pump_heat = cdu_to_site(p, d.tcs_pump_heat) + building_to_site(p, fl.fws_pump_heat)
    return SitePower(
        it_energy=it_energy,
        it_power=it_power,
        pump_power=pump_power,
        fan_power=fan_power_site,
        chiller_power=chiller_site,
        electrical_loss=elec_loss,
        total_power=it_power + mech + elec_loss,
        heat_in=it_energy + dt * (pump_heat + coil_fan_heat),
        heat_rejected=building_to_site(p, fl.q_dc + fl.q_chiller) + air_heat - air_on_coils,
    )


def site_gpu_temperatures(p: FacilityParams, g: GpuStep):
    """Hottest die, hottest HBM and mean die temperature per site at the step end [K], (S,)."""
    r, n_t, n_p, n_s = p.gpu_shape
    sites = p.n_sites
    site_of_rack = p.building_site[p.cdu_building[p.rack_cdu]]
    site_tmax = _segment_max(g.rack_max_temp, site_of_rack, sites)
    site_hmax = _segment_max(g.rack_max_hbm_temp, site_of_rack, sites)
    gpus_per_site = rack_to_site(p, jnp.full(r, float(n_t * n_p * n_s)))
    site_tmean = rack_to_site(p, g.rack_sum_temp) / gpus_per_site
    return site_tmax, site_hmax, site_tmean


def step_ledger(
    p: FacilityParams, g: GpuStep, fl: LoopFlows, sp: SitePower, ci, price, site_tmax, site_hmax, dt
):
    """Per-site ledger increments of one step: energies [J] (power × Δt), water [kg],
    carbon [kg] = P_total × intensity × Δt, cost = P_total × price × Δt, and the maxima."""
    return Ledger(
        it_energy=sp.it_energy,
        gpu_energy=rack_to_site(p, g.rack_energy),
        pump_energy=sp.pump_power * dt,
        fan_energy=sp.fan_power * dt,
        chiller_energy=sp.chiller_power * dt,
        electrical_loss_energy=sp.electrical_loss * dt,
        heat_in=sp.heat_in,
        heat_rejected=sp.heat_rejected * dt,
        water_mass=building_to_site(p, fl.water_rate) * dt,
        carbon_mass=sp.total_power * ci * dt,
        cost=sp.total_power * price * dt,
        throttle_gpu_seconds=rack_to_site(p, g.rack_throttle_seconds),
        chiller_seconds=building_to_site(p, fl.chiller_on * dt),
        max_gpu_temp=site_tmax,
        max_hbm_temp=site_hmax,
        leakage_energy=rack_to_site(p, g.rack_leakage_energy),
        work_lost_gpu_seconds=rack_to_site(p, g.rack_work_lost),
        slowdown_gpu_seconds=rack_to_site(p, g.rack_slowdown_seconds),
        chiller_heat=building_to_site(p, fl.q_chiller) * dt,
        chiller_condenser_heat=building_to_site(p, fl.q_condenser) * dt,
        drycooler_heat=building_to_site(p, fl.q_dc) * dt,
    )


def step(
    p: FacilityParams,
    d: Derived,
    s: State,
    dt: float,
    hour0: float,
    n_sub: int = 1,
):
    """Advance the facility by ``dt`` seconds. ``hour0``: hour of the weather year at t = 0.

    ``d`` is the full-flow operating point of :func:`derive`; the racks' valves and the CDU
    pumps run this step at the flows their control set from the filtered heat of the steps
    before
    (:func:`rack_flow_fraction`, :func:`at_tcs_flow`), so the GPU constants
    (:func:`gpu_constants`) follow the step's flows. ``n_sub`` sub-steps advance the liquid
    loops (:func:`loop_substep`) within the step, so steps longer than the FWS supply tank's
    explicit limit (:func:`check_step`) stay stable; the GPU nodes are integrated exactly over
    the whole step. :func:`substeps` picks it.

    Returns the new state, the per-site step output, and the per-site ledger increments.
    """
    t0 = s.t
    t_mid = t0 + 0.5 * dt
    diurnal = workload.diurnal_factor(
        p.load_diurnal_amplitude, p.load_diurnal_peak_hour, t_mid / 3600.0 + hour0
    )
    estimate = rack_heat_estimate(p, rack_step_utilization(p, diurnal, t0, dt))
    d = at_tcs_flow(p, d, rack_flow_fraction(p, valve_heat(p, s, estimate, dt)))
    c = jax.lax.optimization_barrier(_step_constants(p, d, s, dt))
    # ---------------- GPUs and the rest of the racks ----------------
    g = gpu_step(p, d, s, c, dt, t0, diurnal)
    other = rack_other_power(p, diurnal, t0, dt)
    rack_liquid = g.rack_heat_liquid / dt + p.rack_other_liquid_fraction * other
    rack_air = g.rack_heat_air / dt + (1.0 - p.rack_other_liquid_fraction) * other
    rack_it_energy = g.rack_energy + other * dt
    # ---------------- liquid loops, sub-stepped for long steps ----------------
    loop1, fl, t_air_site = liquid_loops_step(p, d, s, rack_liquid, dt, hour0, n_sub, rack_air)
    # ---------------- ledger per site ----------------
    hours = hour0 + (t0 + 0.5 * dt) / 3600.0
    sp = site_power(p, d, fl, rack_it_energy, rack_air, dt)
    ci = _hourly(p.carbon_intensity, hours)
    price = _hourly(p.price, hours)
    site_tmax, site_hmax, site_tmean = site_gpu_temperatures(p, g)
    ledger = step_ledger(p, g, fl, sp, ci, price, site_tmax, site_hmax, dt)
    out = StepOutput(
        it_power=sp.it_power,
        pump_power=sp.pump_power,
        fan_power=sp.fan_power,
        chiller_power=sp.chiller_power,
        heat_rejected=sp.heat_rejected,
        water_rate=building_to_site(p, fl.water_rate),
        max_gpu_temp=site_tmax,
        mean_gpu_temp=site_tmean,
        fws_supply_temp=building_to_site(p, fl.cold_supply)
        / building_to_site(p, jnp.ones(p.n_buildings)),
        temp_air=t_air_site,
        carbon_intensity=ci,
    )
    new_state = State(
        t=t0 + dt,
        gpu_temp=g.gpu_temp,
        hbm_temp=g.hbm_temp,
        tcs_supply=loop1.tcs_supply_tanks[:, -1],
        tcs_tanks=loop1.tcs_tanks,
        fws_supply_tanks=loop1.fws_supply_tanks,
        fws_return_tanks=loop1.fws_return_tanks,
        fws_flow=fl.fws_cap,
        tcs_supply_tanks=loop1.tcs_supply_tanks,
        rack_heat_filtered=controller_heat(p, s.rack_heat_filtered, rack_liquid, dt),
        gpu_sink_rise=g.sink_rise,
        rack_heat_estimate=estimate,
    )
    return new_state, out, ledger


def _step_constants(p: FacilityParams, d: Derived, s: State, dt: float) -> GpuConstants:
    """:func:`gpu_constants` of the step; with sink nodes, every package resistance times the
    curvature factor of the die's rise over its rack inlet at the step's start."""
    if not p.gpu_sink:
        return gpu_constants(p, d, dt)
    inlet = s.tcs_supply[p.rack_cdu][:, None, None, None]
    h = gpu.conductance_curvature_factor(s.gpu_temp - inlet, p.gpu_conductance_curvature)
    ph = eqx.tree_at(
        lambda q: (q.gpu_resistance_jw, q.gpu_hbm_resistance),
        p,
        (p.gpu_resistance_jw * h, p.gpu_hbm_resistance * h),
    )
    return gpu_constants(ph, d._replace(plate_resistance=d.plate_resistance * h), dt)._replace(
        curvature=h
    )


def controller_heat(p: FacilityParams, filtered, rack_heat, dt):
    r"""The rack heat each flow valve acts on [W], (R,): the measured heat through a
    first-order filter of time constant :math:`\tau` (exact for a step held over ``dt``, so the
    control does not depend on the step):

    .. math:: \tilde Q' = \tilde Q + \bigl(1 - e^{-\Delta t/\tau}\bigr)(\dot Q - \tilde Q)

    It keeps the valves from chasing the 1-2 s swings of synchronous training.
    """
    tau = p.tcs_control_time[p.rack_cdu]
    return filtered + (1.0 - jnp.exp(-dt / tau)) * (rack_heat - filtered)


def empty_ledger(n_sites: int) -> Ledger:
    """A ledger to start a run from: sums zero, maxima -inf (fields of :data:`LEDGER_MAXIMA`)."""
    z = jnp.zeros(n_sites)
    # strongly typed like the ledger a run returns: no second compilation of a run that
    # continues from it
    low = jnp.full(n_sites, -jnp.inf, dtype=z.dtype)
    return Ledger(*[low if name in LEDGER_MAXIMA else z for name in Ledger._fields])


def _accumulate(total: Ledger, inc: Ledger) -> Ledger:
    return Ledger(
        *[
            jnp.maximum(a, b) if name in LEDGER_MAXIMA else a + b
            for name, a, b in zip(Ledger._fields, total, inc, strict=True)
        ]
    )


def run_records(
    p: FacilityParams,
    d: Derived,
    s: State,
    ledger: Ledger,
    dt: float,
    hour0: float,
    n_records: int,
    steps_per_record: int,
    n_sub: int = 1,
):
    """Advance ``n_records × steps_per_record`` steps with streaming reductions.

    ``n_sub`` (static): loop sub-steps per step, from :func:`substeps`.

    Memory does not grow with simulated time beyond one record (the mean of the step outputs
    over each record, and their max for temperatures) per record.
    """

    shape4 = p.gpu_shape
    flat = (shape4[0], shape4[1] * shape4[2] * shape4[3])

    def inner(carry, _):
        state, led, acc = carry
        state = state._replace(
            gpu_temp=state.gpu_temp.reshape(shape4), hbm_temp=state.hbm_temp.reshape(shape4)
        )
        state, out, inc = step(p, d, state, dt, hour0, n_sub)
        state = state._replace(
            gpu_temp=state.gpu_temp.reshape(flat), hbm_temp=state.hbm_temp.reshape(flat)
        )
        acc = StepOutput(
            *[
                jnp.maximum(a, o) if name == "max_gpu_temp" else a + o
                for name, a, o in zip(StepOutput._fields, acc, out, strict=True)
            ]
        )
        return (state, _accumulate(led, inc), acc), None

    def outer(carry, _):
        state, led = carry
        zero = StepOutput(*[jnp.zeros(p.n_sites)] * len(StepOutput._fields))
        zero = zero._replace(max_gpu_temp=jnp.full(p.n_sites, -jnp.inf))
        (state, led, acc), _ = jax.lax.scan(
            inner, (state, led, zero), None, length=steps_per_record, unroll=2
        )
        rec = StepOutput(
            *[
                a if name == "max_gpu_temp" else a / steps_per_record
                for name, a in zip(StepOutput._fields, acc, strict=True)
            ]
        )
        return (state, led), rec

    s = s._replace(gpu_temp=s.gpu_temp.reshape(flat), hbm_temp=s.hbm_temp.reshape(flat))
    (s, ledger), records = jax.lax.scan(outer, (s, ledger), None, length=n_records)
    s = s._replace(gpu_temp=s.gpu_temp.reshape(shape4), hbm_temp=s.hbm_temp.reshape(shape4))
    return s, ledger, records
