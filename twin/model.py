"""Build the physics parameters of a facility from its validated spec, load and boundary data.

``twin.spec`` parses and validates; this module sizes the design point (flows, pump curves,
exchanger UAs, dry coolers) from the spec's design values and lays out the arrays that
:mod:`physics.facility` steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from physics import coldplate, coolant, heat_rejection, hydraulics
from physics.facility import FacilityParams
from physics.heat_exchangers import ntu_counterflow
from twin.spec import FacilitySpec, Site
from twin.units import SpecError

log = logging.getLogger(__name__)

#: Margin of a fully open CDU primary valve over the design flow (valve authority).
VALVE_OPEN_FLOW_MARGIN = 1.2
#: Pump shut-off head relative to the design head (end-suction centrifugal pumps).
PUMP_SHUTOFF_RATIO = 1.25
#: Default electricity price, used only when none is given [USD/kWh] (a user input; refs data
#: README: no public hourly price exists for these areas in the shipped sources).
DEFAULT_PRICE_USD_PER_KWH = 0.08


@dataclass(frozen=True)
class LoadMix:
    """The default workload: shares of racks running synchronous training, inference, idle.

    Training swings between ``training_low`` and ``training_high`` of TDP with a period drawn in
    ``training_period`` (refs 6: every 1-2 s, 0.45 <-> 1.0 TDP); inference holds
    ``inference_range`` of TDP (refs 6: 0.2-0.45) with a daily cycle.
    """

    training: float = 0.7
    inference: float = 0.25
    idle: float = 0.05
    training_low: float = 0.45
    training_high: float = 1.0
    training_period: tuple[float, float] = (1.0, 2.0)
    training_duty: float = 0.5
    job_racks: tuple[int, int] = (8, 64)
    inference_range: tuple[float, float] = (0.2, 0.45)
    inference_diurnal_amplitude: float = 0.25
    inference_peak_local_hour: float = 20.0
    constant: float | None = None  # every GPU at this fraction of TDP, no swing

    @classmethod
    def parse(cls, text: str | None) -> LoadMix:
        """Parse ``--load``: 'training=0.7,inference=0.25,idle=0.05' or 'constant=0.8'."""
        if text is None or text.strip() in ("", "default", "mix"):
            return cls()
        fields: dict[str, float] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ("training", "inference", "idle", "constant"):
                raise SpecError(
                    "--load",
                    text,
                    "comma-separated training=F,inference=F,idle=F "
                    "(fractions of racks) or constant=F (fraction of TDP)",
                )
            try:
                fields[key] = float(value)
            except ValueError as exc:
                raise SpecError(f"--load {key}", value, "a number") from exc
            if not (0.0 <= fields[key] <= 1.0):
                raise SpecError(f"--load {key}", value, "a fraction between 0 and 1")
        if "constant" in fields:
            return cls(training=0.0, inference=0.0, idle=0.0, constant=fields["constant"])
        mix = {k: fields.get(k, 0.0) for k in ("training", "inference", "idle")}
        total = sum(mix.values())
        if total <= 0:
            raise SpecError("--load", text, "shares that sum to more than 0")
        return cls(**{k: v / total for k, v in mix.items()})


@dataclass(frozen=True)
class Boundary:
    """Hourly boundary conditions per site (arrays of shape (hours,)), already in UTC order."""

    temp_air: np.ndarray  # K
    temp_wet_bulb: np.ndarray  # K
    carbon_intensity: np.ndarray  # g CO2 / kWh
    price: np.ndarray  # USD / kWh


def _design_row(site: Site, rho_cp_tcs: float):
    b = site.building
    rack = b.rack
    q_rack = rack.flow_per_power * rack.design_power  # m3/s
    k_rack = hydraulics.resistance_from_design(rack.pressure_drop, q_rack)
    q_row = b.racks_per_row * q_rack
    k_header = (
        hydraulics.resistance_from_design(b.cdu.header_pressure_drop, 0.5 * q_row)
        if (b.cdu.header_pressure_drop > 0)
        else 0.0
    )
    h0, k_pump = hydraulics.pump_curve_from_design(q_row, b.cdu.pump_pressure, PUMP_SHUTOFF_RATIO)
    internal = b.cdu.pump_pressure - rack.pressure_drop
    if internal < 0:
        raise SpecError(
            f"cdu_templates.{b.cdu.name}.pump_pressure",
            b.cdu.pump_pressure,
            f"at least the rack pressure drop ({rack.pressure_drop / 1e3:.0f} kPa)",
        )
    k_internal = internal / q_row**2  # CDU exchanger, strainer, piping, in series with the row
    return q_rack, k_rack, q_row, k_header, h0, k_pump + k_internal


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
) -> FacilityParams:
    """Lay out every array of :class:`physics.facility.FacilityParams` for ``spec``.

    ``gpu_spread`` draws per-GPU multiplicative spreads (log-normal, this relative std) of the
    junction resistance, heat capacity and leakage coefficient (manufacturing and TIM
    variation); 0 makes all GPUs of a model identical. ``tcs_supply_offset`` and
    ``fws_supply_offset`` [K] shift every setpoint (what-if studies); ``pump_speed`` sets every
    CDU pump's relative speed.
    """
    load = load or LoadMix()
    rng = np.random.default_rng(seed)
    tcs_table = coolant.coolant_table(spec.tcs_coolant)
    fws_table = coolant.coolant_table(spec.fws_coolant)
    geom = spec.sites[0].building.rack
    n_t, n_p, n_s = geom.trays, geom.paths_per_tray, geom.plates_in_series
    racks_per_row = spec.sites[0].building.racks_per_row
    floors = spec.sites[0].building.floors

    gpu_cols: dict[str, list] = {
        k: []
        for k in (
            "rjw",
            "cap",
            "leak",
            "alpha",
            "idle",
            "dyn",
            "limit",
            "hbm_r",
            "hbm_c",
            "hbm_idle",
            "hbm_share",
            "tref",
            "tmax",
            "air",
            "ua",
            "qref",
            "nexp",
        )
    }
    rack_cols: dict[str, list] = {
        k: []
        for k in (
            "low",
            "high",
            "period",
            "duty",
            "phase",
            "amp",
            "peak",
            "oidle",
            "omax",
            "oliq",
            "k",
            "cdu",
        )
    }
    cdu_cols: dict[str, list] = {
        k: []
        for k in (
            "rho",
            "cp",
            "speed",
            "h0",
            "kp",
            "eta",
            "kh",
            "vol",
            "set",
            "ua",
            "ch",
            "cc",
            "bld",
            "floor",
        )
    }
    bld_cols: dict[str, list] = {
        k: []
        for k in (
            "rho",
            "cp",
            "set",
            "h0",
            "kp",
            "eta",
            "pmin",
            "kcdu",
            "kriser",
            "height",
            "ncdu",
            "vsup",
            "vret",
            "ua_dc",
            "cair",
            "pfan",
            "smin",
            "nexp",
            "adi",
            "adi_eff",
            "adi_t",
            "chcap",
            "cheta",
            "chevap",
            "chcond",
            "site",
        )
    }
    site_cols: dict[str, list] = {k: [] for k in ("airfan", "loss")}
    weather_t, weather_wb, carbon, price = [], [], [], []
    rack_index = 0
    cdu_index = 0
    bld_index = 0
    for si, site in enumerate(spec.sites):
        b = site.building
        rack = b.rack
        g = rack.gpu
        t_design = site.tcs_supply_temperature + 5.0
        rho_tcs = float(coolant.density(tcs_table, t_design))
        cp_tcs = float(coolant.specific_heat(tcs_table, t_design))
        rho_fws = float(coolant.density(fws_table, site.facility_water.supply_temperature + 5.0))
        cp_fws = float(
            coolant.specific_heat(fws_table, site.facility_water.supply_temperature + 5.0)
        )
        q_rack, k_rack, q_row, k_header, h0, k_curve = _design_row(site, rho_tcs * cp_tcs)
        # Cold plate: UA that gives the vendor resistance at design flow (per plate path).
        path_flow = q_rack / (n_t * n_p)
        path_cap = rho_tcs * cp_tcs * path_flow
        ua_ref = float(
            coldplate.ua_for_mean_fluid_resistance(
                g.resistance_junction_coolant, g.resistance_junction_wall, path_cap
            )
        )
        if not np.isfinite(ua_ref) or ua_ref <= 0:
            raise SpecError(
                f"gpu_models.{g.name}.resistance_junction_coolant",
                g.resistance_junction_coolant,
                "a resistance that the cold plate can reach at the design flow "
                f"(path capacity rate {path_cap:.0f} W/K): larger than "
                f"resistance_junction_wall + 1/(2 m cp) = "
                f"{g.resistance_junction_wall + 0.5 / path_cap:.4f} K/W",
            )
        n_racks = site.racks

        shape = (n_racks, n_t, n_p, n_s)
        # Parameters shared by all GPUs of a rack are stored per rack and broadcast.
        rack_shape = (n_racks, 1, 1, 1)

        def spread(base, shape=shape, rack_shape=rack_shape):
            if gpu_spread <= 0:
                return np.full(rack_shape, base)
            return base * rng.lognormal(0.0, gpu_spread, shape)

        gpu_cols["rjw"].append(spread(g.resistance_junction_wall))
        gpu_cols["cap"].append(spread(g.heat_capacity))
        gpu_cols["alpha"].append(spread(g.leakage_coefficient))
        for key, val in (
            ("leak", g.leakage_at_reference),
            ("idle", g.power_idle_static),
            ("dyn", g.power_dynamic),
            ("limit", g.power_limit),
            ("hbm_r", g.hbm_resistance),
            ("hbm_c", g.hbm_heat_capacity),
            ("hbm_idle", g.hbm_idle_power),
            ("hbm_share", g.hbm_power_share),
            ("tref", g.reference_temperature),
            ("tmax", g.max_operating_temperature),
            ("air", g.air_fraction),
            ("ua", ua_ref),
            ("qref", path_flow),
            ("nexp", rack.coldplate_flow_exponent),
        ):
            gpu_cols[key].append(np.full(rack_shape, val))
        # Workload per rack.
        low, high, period, duty, phase, amp, peak = _schedule(
            load, g, n_racks, rng, site.timezone_offset_hours
        )
        for key, arr in (
            ("low", low),
            ("high", high),
            ("period", period),
            ("duty", duty),
            ("phase", phase),
            ("amp", amp),
            ("peak", peak),
        ):
            rack_cols[key].append(arr)
        rack_cols["oidle"].append(np.full(n_racks, rack.other_power_idle))
        rack_cols["omax"].append(np.full(n_racks, rack.other_power_max))
        rack_cols["oliq"].append(np.full(n_racks, rack.other_liquid_fraction))
        rack_cols["k"].append(np.full(n_racks, k_rack))
        n_cdus_site = site.cdus
        rack_cols["cdu"].append(cdu_index + np.repeat(np.arange(n_cdus_site), racks_per_row))
        # CDUs.
        row_heat = b.racks_per_row * rack.design_power
        c_hot = rho_tcs * cp_tcs * q_row
        c_cold = b.cdu.primary_flow_ratio * c_hot
        c_min, c_max = min(c_hot, c_cold), max(c_hot, c_cold)
        dt_min_side = row_heat / c_min
        eps = (
            dt_min_side / (dt_min_side + b.cdu.approach)
            if c_hot <= c_cold
            else (row_heat / c_max) / (row_heat / c_max + b.cdu.approach) * c_max / c_min
        )
        if not 0 < eps < 1:
            raise SpecError(
                f"cdu_templates.{b.cdu.name}.approach",
                b.cdu.approach,
                "an approach the exchanger can reach at design flows",
            )
        ua_cdu = float(ntu_counterflow(eps, c_min / c_max)) * c_min
        floor_of_cdu = np.tile(np.repeat(np.arange(floors), b.rows_per_floor), b.count)
        bld_of_cdu = bld_index + np.repeat(np.arange(b.count), floors * b.rows_per_floor)
        for key, val in (
            ("rho", rho_tcs),
            ("cp", cp_tcs),
            ("speed", pump_speed),
            ("h0", h0),
            ("kp", k_curve),
            ("eta", b.cdu.pump_efficiency),
            ("kh", k_header),
            ("vol", b.cdu.loop_volume),
            ("set", site.tcs_supply_temperature + tcs_supply_offset),
            ("ua", ua_cdu),
            ("ch", c_hot),
            ("cc", c_cold),
        ):
            cdu_cols[key].append(np.full(n_cdus_site, val))
        cdu_cols["bld"].append(bld_of_cdu)
        cdu_cols["floor"].append(floor_of_cdu)
        # Buildings: facility water loop and plant.
        fw = site.facility_water
        hr = site.heat_rejection
        q_cdu_primary = c_cold / (rho_fws * cp_fws)
        k_cdu = (
            fw.pump_pressure * 0
            + b.cdu.primary_pressure_drop / (VALVE_OPEN_FLOW_MARGIN * q_cdu_primary) ** 2
        )
        n_cdu_bld = floors * b.rows_per_floor
        q_bld = n_cdu_bld * q_cdu_primary
        h0_f, kp_f = hydraulics.pump_curve_from_design(q_bld, fw.pump_pressure, PUMP_SHUTOFF_RATIO)
        internal = fw.pump_pressure - b.cdu.primary_pressure_drop
        if internal < 0:
            raise SpecError(
                f"sites.{site.key}.facility_water.pump_pressure",
                fw.pump_pressure,
                "at least the CDU primary pressure drop",
            )
        kp_f = kp_f + internal / q_bld**2
        riser = np.array(
            [
                f * fw.riser_pressure_drop / (b.rows_per_floor * q_cdu_primary) ** 2
                for f in range(floors)
            ]
        )
        heights = np.arange(floors) * b.floor_height
        heat_design = n_cdu_bld * row_heat
        c_fluid = heat_design / fw.design_delta_t
        ua_dc, c_air = heat_rejection.dry_cooler_design(
            heat_design, 298.15, hr.approach, hr.air_temperature_rise, c_fluid
        )
        for _ in range(b.count):
            for key, val in (
                ("rho", rho_fws),
                ("cp", cp_fws),
                ("set", fw.supply_temperature + fws_supply_offset),
                ("h0", h0_f),
                ("kp", kp_f),
                ("eta", fw.pump_efficiency),
                ("pmin", fw.minimum_pressure),
                ("kcdu", k_cdu),
                ("vsup", fw.supply_volume),
                ("vret", fw.return_volume),
                ("ua_dc", float(ua_dc)),
                ("cair", float(c_air)),
                ("pfan", hr.fan_power_ratio * heat_design),
                ("smin", hr.min_fan_speed),
                ("nexp", hr.ua_exponent),
                ("adi", float(hr.adiabatic)),
                ("adi_eff", hr.adiabatic_effectiveness),
                ("adi_t", hr.adiabatic_switch_temperature),
                ("chcap", hr.chiller_capacity_fraction * heat_design),
                ("cheta", hr.chiller_second_law_efficiency),
                ("chevap", hr.chiller_evaporator_approach),
                ("chcond", hr.chiller_condenser_approach),
                ("site", si),
            ):
                bld_cols[key].append(val)
            bld_cols["kriser"].append(riser)
            bld_cols["height"].append(heights)
            bld_cols["ncdu"].append(np.full(floors, float(b.rows_per_floor)))
        site_cols["airfan"].append(site.air_fan_power_ratio)
        site_cols["loss"].append(site.electrical_loss_fraction)
        bnd = boundary[site.key]
        weather_t.append(bnd.temp_air)
        weather_wb.append(bnd.temp_wet_bulb)
        carbon.append(bnd.carbon_intensity)
        price.append(bnd.price)
        rack_index += n_racks
        cdu_index += n_cdus_site
        bld_index += b.count

    def cat(cols, key, dtype=float):
        parts = cols[key]
        if parts[0].ndim == 4:  # GPU parameters: full layout only where some site varies
            full = any(x.shape[1:] != (1, 1, 1) for x in parts)
            parts = [np.broadcast_to(x, (x.shape[0], n_t, n_p, n_s)) if full else x for x in parts]
        return jnp.asarray(np.concatenate(parts).astype(dtype))

    def arr(cols, key, dtype=float):
        return jnp.asarray(np.asarray(cols[key], dtype=dtype))

    hours = min(len(x) for x in weather_t)
    kwh = 3.6e6
    return FacilityParams(
        gpu_resistance_jw=cat(gpu_cols, "rjw"),
        gpu_capacitance=cat(gpu_cols, "cap"),
        gpu_leakage_ref=cat(gpu_cols, "leak"),
        gpu_leakage_coeff=cat(gpu_cols, "alpha"),
        gpu_power_idle=cat(gpu_cols, "idle"),
        gpu_power_dynamic=cat(gpu_cols, "dyn"),
        gpu_power_limit=cat(gpu_cols, "limit"),
        gpu_hbm_resistance=cat(gpu_cols, "hbm_r"),
        gpu_hbm_capacitance=cat(gpu_cols, "hbm_c"),
        gpu_hbm_power_idle=cat(gpu_cols, "hbm_idle"),
        gpu_hbm_power_share=cat(gpu_cols, "hbm_share"),
        gpu_temp_ref=cat(gpu_cols, "tref"),
        gpu_temp_max_operating=cat(gpu_cols, "tmax"),
        gpu_air_fraction=cat(gpu_cols, "air"),
        coldplate_ua_ref=cat(gpu_cols, "ua"),
        coldplate_flow_ref=cat(gpu_cols, "qref"),
        coldplate_exponent=cat(gpu_cols, "nexp"),
        load_low=cat(rack_cols, "low"),
        load_high=cat(rack_cols, "high"),
        load_period=cat(rack_cols, "period"),
        load_duty=cat(rack_cols, "duty"),
        load_phase=cat(rack_cols, "phase"),
        load_diurnal_amplitude=cat(rack_cols, "amp"),
        load_diurnal_peak_hour=cat(rack_cols, "peak"),
        rack_other_power_idle=cat(rack_cols, "oidle"),
        rack_other_power_max=cat(rack_cols, "omax"),
        rack_other_liquid_fraction=cat(rack_cols, "oliq"),
        rack_resistance=cat(rack_cols, "k"),
        rack_cdu=cat(rack_cols, "cdu", np.int32),
        tcs_density=cat(cdu_cols, "rho"),
        tcs_specific_heat=cat(cdu_cols, "cp"),
        tcs_pump_speed=cat(cdu_cols, "speed"),
        tcs_pump_head_shutoff=cat(cdu_cols, "h0"),
        tcs_pump_curve_coeff=cat(cdu_cols, "kp"),
        tcs_pump_efficiency=cat(cdu_cols, "eta"),
        tcs_header_resistance=cat(cdu_cols, "kh"),
        tcs_volume=cat(cdu_cols, "vol"),
        tcs_supply_setpoint=cat(cdu_cols, "set"),
        cdu_ua_design=cat(cdu_cols, "ua"),
        cdu_flow_design_hot=cat(cdu_cols, "ch"),
        cdu_flow_design_cold=cat(cdu_cols, "cc"),
        cdu_building=cat(cdu_cols, "bld", np.int32),
        cdu_floor=cat(cdu_cols, "floor", np.int32),
        fws_density=arr(bld_cols, "rho"),
        fws_specific_heat=arr(bld_cols, "cp"),
        fws_supply_setpoint=arr(bld_cols, "set"),
        fws_pump_head_shutoff=arr(bld_cols, "h0"),
        fws_pump_curve_coeff=arr(bld_cols, "kp"),
        fws_pump_efficiency=arr(bld_cols, "eta"),
        fws_pressure_min=arr(bld_cols, "pmin"),
        fws_cdu_resistance=arr(bld_cols, "kcdu"),
        fws_riser_resistance=arr(bld_cols, "kriser"),
        fws_riser_height=arr(bld_cols, "height"),
        fws_cdus_per_floor=arr(bld_cols, "ncdu"),
        fws_supply_volume=arr(bld_cols, "vsup"),
        fws_return_volume=arr(bld_cols, "vret"),
        drycooler_ua_design=arr(bld_cols, "ua_dc"),
        drycooler_air_capacity_design=arr(bld_cols, "cair"),
        drycooler_fan_power_design=arr(bld_cols, "pfan"),
        drycooler_speed_min=arr(bld_cols, "smin"),
        drycooler_ua_exponent=arr(bld_cols, "nexp"),
        adiabatic_enabled=arr(bld_cols, "adi"),
        adiabatic_effectiveness=arr(bld_cols, "adi_eff"),
        adiabatic_switch_temp=arr(bld_cols, "adi_t"),
        chiller_capacity=arr(bld_cols, "chcap"),
        chiller_second_law_efficiency=arr(bld_cols, "cheta"),
        chiller_evaporator_approach=arr(bld_cols, "chevap"),
        chiller_condenser_approach=arr(bld_cols, "chcond"),
        building_site=arr(bld_cols, "site", np.int32),
        air_fan_power_ratio=arr(site_cols, "airfan"),
        electrical_loss_fraction=arr(site_cols, "loss"),
        weather_temp_air=jnp.asarray(np.stack([w[:hours] for w in weather_t], axis=1)),
        weather_temp_wet_bulb=jnp.asarray(np.stack([w[:hours] for w in weather_wb], axis=1)),
        carbon_intensity=jnp.asarray(np.stack([c[:hours] for c in carbon], axis=1)) / 1e3 / kwh,
        price=jnp.asarray(np.stack([c[:hours] for c in price], axis=1)) / kwh,
        gpu_layout=(rack_index, n_t, n_p, n_s),
        n_tcs_tanks=spec.tcs_tanks,
        n_fws_tanks=spec.fws_tanks,
    )


def _schedule(load: LoadMix, g, n_racks: int, rng: np.random.Generator, tz_hours: float):
    """Per-rack workload arrays: (low, high, period, duty, phase, diurnal amplitude, peak UTC h)."""
    low = np.zeros(n_racks)
    high = np.zeros(n_racks)
    period = np.ones(n_racks)
    duty = np.full(n_racks, 0.5)
    phase = np.zeros(n_racks)
    amp = np.zeros(n_racks)
    peak = np.full(n_racks, (load.inference_peak_local_hour - tz_hours) % 24.0)
    u = g.utilization_for_power_fraction
    u_idle = 0.0
    if load.constant is not None:
        level = max(u(load.constant), 0.0)
        return (np.full(n_racks, level), np.full(n_racks, level), period, duty, phase, amp, peak)
    n_train = int(round(load.training * n_racks))
    n_inf = int(round(load.inference * n_racks))
    n_train = min(n_train, n_racks)
    n_inf = min(n_inf, n_racks - n_train)
    # Each training job spans several racks that share one synchronous power cycle.
    i = 0
    while i < n_train:
        size = int(rng.integers(load.job_racks[0], load.job_racks[1] + 1))
        size = min(size, n_train - i)
        sl = slice(i, i + size)
        low[sl] = u(load.training_low)
        high[sl] = u(load.training_high)
        period[sl] = rng.uniform(*load.training_period)
        duty[sl] = load.training_duty
        phase[sl] = rng.uniform(0.0, period[i])
        i += size
    inf = slice(n_train, n_train + n_inf)
    level = rng.uniform(u(load.inference_range[0]), u(load.inference_range[1]), n_inf)
    low[inf] = level
    high[inf] = level
    amp[inf] = load.inference_diurnal_amplitude
    idle = slice(n_train + n_inf, n_racks)
    low[idle] = u_idle
    high[idle] = u_idle
    # Spread job types over the halls rather than filling rows by type.
    order = rng.permutation(n_racks)
    return (
        np.clip(low[order], 0, None),
        np.clip(high[order], 0, None),
        period[order],
        duty[order],
        phase[order],
        amp[order],
        peak[order],
    )
