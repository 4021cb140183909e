"""Facility specs: TOML → validated, SI-unit spec → :class:`physics.facility.FacilityParams`.

The hierarchy site → building (floors) → row (one CDU) → rack → tray → GPU is declared by
templates and counts (never GPU by GPU). Every quantity is a string with units, parsed by pint
("140 kW", "1.5 L/min/kW", "32 degC"). Every error names the field path, the value and what
was expected (:class:`twin.units.SpecError`).

See ``docs/spec.md`` for every field; the shipped specs are in ``data/facilities/``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.resources import data_dir
from twin.units import ZERO_CELSIUS_K, SpecError, parse_quantity

FACILITY_DIR = data_dir("facilities")

#: Physically meaningful range of a liquid coolant setpoint [K]: above PG25's freezing point
#: (-9.8 °C, refs 2a) with margin, below the ASHRAE W+ band's practical ceiling (~65 °C).
SETPOINT_RANGE_K = (ZERO_CELSIUS_K + 2.0, ZERO_CELSIUS_K + 65.0)
#: Range of a server inlet-air setpoint [K] where the secondary coolant is air (an air-cooled
#: node, docs/spec.md): the ASHRAE TC9.9 class A4 allowable inlet range, 5-45 °C (unverified,
#: from memory like the W classes of refs 2; the recommended envelope is 18-27 °C).
AIR_SETPOINT_RANGE_K = (ZERO_CELSIUS_K + 5.0, ZERO_CELSIUS_K + 45.0)

#: ``heat_rejection.chiller_curve`` values: the Carnot fraction with a minimum lift (warm-water
#: trim chillers) or the DOE-2 Centrifugal/5.50COP EIR curves (refs 4).
CHILLER_CURVES = ("carnot", "doe2_centrifugal")


def bundled_toml(name_or_path: str | Path, directory: Path, field: str, kind: str) -> Path:
    """Resolve a TOML path, or the name of one shipped in ``directory``.

    A missing explicit path raises FileNotFoundError; an unknown name raises SpecError on
    ``field`` listing the shipped names.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise FileNotFoundError(f"{kind} file not found: {candidate}")
        return candidate
    path = directory / f"{str(name_or_path).lower()}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.toml"))
        raise SpecError(field, name_or_path, f"one of {known} or a .toml path")
    return path


class Fields:
    """Reads one TOML table, tracking the keys used so unknown keys are reported."""

    def __init__(self, table: Any, path: str):
        if not isinstance(table, dict):
            raise SpecError(path, table, "a table (section)")
        self.table = table
        self.path = path
        self.used: set[str] = set()

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise SpecError(self._p(key), "<missing>", "this required field to be present")
            return default
        return self.table[key]

    def quantity(
        self,
        key: str,
        unit: str,
        default: Any = ...,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
        expected: str | None = None,
    ) -> float:
        value = self.raw(key, default)
        if value is None:
            return None  # type: ignore[return-value]
        v = parse_quantity(value, self._p(key), unit)
        if not math.isfinite(v):
            raise SpecError(self._p(key), value, f"a finite quantity in {unit}")
        if positive and v <= 0:
            raise SpecError(self._p(key), value, expected or f"a positive quantity in {unit}")
        if minimum is not None and v < minimum:
            raise SpecError(self._p(key), value, expected or f">= {minimum} {unit}")
        if maximum is not None and v > maximum:
            raise SpecError(self._p(key), value, expected or f"<= {maximum} {unit}")
        return v

    def temperature(
        self, key: str, default: Any = ..., setpoint: bool = False, air: bool = False
    ) -> float:
        """A temperature [K]; ``setpoint``: within the liquid-coolant range, or with ``air``
        the server inlet-air range."""
        v = self.quantity(key, "K", default)
        lo, hi = AIR_SETPOINT_RANGE_K if air else SETPOINT_RANGE_K
        if setpoint and not (lo <= v <= hi):
            raise SpecError(
                self._p(key),
                self.table.get(key, default),
                "a server inlet-air setpoint between 5 degC and 45 degC (ASHRAE class A4 allowable)"
                if air
                else "a liquid-coolant setpoint between 2 degC and 65 degC (above freezing of "
                "PG25, within the ASHRAE W17..W+ classes)",
            )
        return v

    def fraction(self, key: str, default: Any = ..., lo: float = 0.0, hi: float = 1.0) -> float:
        value = self.raw(key, default)
        v = parse_quantity(value, self._p(key), "dimensionless")
        if not (lo <= v <= hi):
            raise SpecError(self._p(key), value, f"a fraction between {lo} and {hi}")
        return v

    def integer(self, key: str, default: Any = ..., minimum: int = 1) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self._p(key), value, f"an integer >= {minimum}")
        if value < minimum:
            raise SpecError(self._p(key), value, f"an integer >= {minimum}")
        return value

    def string(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(key, default)
        if value is None:
            return None  # type: ignore[return-value]
        if not isinstance(value, str):
            raise SpecError(self._p(key), value, "a string")
        if choices is not None and value not in choices:
            raise SpecError(self._p(key), value, f"one of {', '.join(choices)}")
        return value

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise SpecError(self._p(key), value, "true or false")
        return value

    def sub(self, key: str, default: Any = ...) -> Fields:
        return Fields(self.raw(key, default), self._p(key))

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise SpecError(
                self._p(unknown[0]),
                self.table[unknown[0]],
                f"a known field; valid fields here are: {', '.join(sorted(self.used))}",
            )


@dataclass(frozen=True)
class GpuModel:
    name: str
    tdp: float  # W
    power_limit: float  # W
    idle_power: float  # W, total at idle_temperature
    idle_temperature: float  # K
    leakage_at_reference: float  # W
    leakage_coefficient: float  # 1/K
    reference_temperature: float  # K
    resistance_junction_wall: float  # K/W
    resistance_junction_coolant: float  # K/W, referred to mean fluid at design flow
    heat_capacity: float  # J/K
    hbm_resistance: float  # K/W
    hbm_heat_capacity: float  # J/K
    hbm_idle_power: float  # W
    hbm_power_share: float  # -
    max_operating_temperature: float  # K
    slowdown_temperature: float  # K
    shutdown_temperature: float  # K
    hbm_max_operating_temperature: float  # K
    air_fraction: float  # -
    #: cited range of the junction -> coolant-inlet resistance at load [K/W] (low, high), or
    #: None; ``twin calibrate`` says when telemetry falls outside it (docs/calibration.md)
    resistance_range: tuple[float, float] | None = None

    @property
    def power_idle_static(self) -> float:
        """Temperature-independent part of the idle power [W]."""
        leak = self.leakage_at_reference * (
            1.0 + self.leakage_coefficient * (self.idle_temperature - self.reference_temperature)
        )
        return self.idle_power - leak

    @property
    def power_dynamic(self) -> float:
        """Dynamic power at utilization 1 [W]: TDP at the reference temperature."""
        return self.tdp - self.power_idle_static - self.leakage_at_reference

    def utilization_for_power_fraction(self, fraction: float) -> float:
        """Utilization that draws ``fraction`` of TDP at the reference temperature."""
        return (fraction * self.tdp - self.power_idle_static - self.leakage_at_reference) / (
            self.power_dynamic
        )


@dataclass(frozen=True)
class RackTemplate:
    name: str
    gpu: GpuModel
    gpus: int
    trays: int
    paths_per_tray: int
    plates_in_series: int
    design_power: float  # W
    flow_per_power: float  # m3/s per W
    pressure_drop: float  # Pa at design flow
    other_power_idle: float  # W
    other_power_max: float  # W
    other_liquid_fraction: float
    coldplate_flow_exponent: float


@dataclass(frozen=True)
class CduTemplate:
    name: str
    capacity: float  # W
    approach: float  # K
    pump_pressure: float  # Pa at design flow
    pump_efficiency: float
    header_pressure_drop: float  # Pa per segment at row flow
    loop_volume: float  # m3
    primary_pressure_drop: float  # Pa at design primary flow
    primary_flow_ratio: float  # design FWS / TCS capacity-rate ratio
    supply_volume_fraction: float = 0.5  # share of loop_volume in the supply leg (CDU → racks)
    pump_control: str = "differential_pressure"  # rack valves follow heat, pump holds dp; "fixed"
    minimum_rack_flow: float = 0.3  # a rack valve's minimum flow, fraction of design [-]
    control_time_constant: float = 60.0  # s, filter of the heat the rack valves follow


@dataclass(frozen=True)
class Building:
    count: int
    floors: int
    floor_height: float
    rows_per_floor: int
    racks_per_row: int
    rack: RackTemplate
    cdu: CduTemplate


@dataclass(frozen=True)
class FacilityWater:
    supply_temperature: float
    design_delta_t: float
    pump_pressure: float
    pump_efficiency: float
    minimum_pressure: float
    riser_pressure_drop: float
    supply_volume: float
    return_volume: float


@dataclass(frozen=True)
class AirCooling:
    """Where the racks' heat to air goes: ``rear_door`` coils (or fan coils) on facility water,
    which the plant then rejects, or ``outside_air`` (it leaves with the air)."""

    kind: str = "rear_door"
    approach: float = 3.0  # K, air leaving the coils above the FWS supply


AIR_COOLING_KINDS = ("rear_door", "outside_air")
#: Hottest allowable server inlet air of any ASHRAE class (A4: 5-45 °C; ASHRAE TC9.9 Thermal
#: Guidelines for Data Processing Environments, 4th ed., 2015) [K].
_AIR_INLET_MAX_K = ZERO_CELSIUS_K + 45.0


@dataclass(frozen=True)
class HeatRejection:
    approach: float
    air_temperature_rise: float
    fan_power_ratio: float
    min_fan_speed: float
    ua_exponent: float
    chiller_capacity_fraction: float
    chiller_second_law_efficiency: float
    chiller_evaporator_approach: float
    chiller_condenser_approach: float
    chiller_unit_capacity: float
    chiller_curve: str
    chiller_minimum_lift: float
    chiller_minimum_part_load: float
    adiabatic: bool
    adiabatic_effectiveness: float
    adiabatic_switch_temperature: float


@dataclass(frozen=True)
class Site:
    key: str
    name: str
    climate: str | None
    weather_file: str | None
    grid: str | None
    carbon_file: str | None
    timezone_offset_hours: float
    electrical_loss_fraction: float
    air_fan_power_ratio: float
    tcs_supply_temperature: float
    building: Building
    facility_water: FacilityWater
    heat_rejection: HeatRejection
    air_cooling: AirCooling = AirCooling()

    @property
    def racks(self) -> int:
        b = self.building
        return b.count * b.floors * b.rows_per_floor * b.racks_per_row

    @property
    def gpus(self) -> int:
        return self.racks * self.building.rack.gpus

    @property
    def cdus(self) -> int:
        b = self.building
        return b.count * b.floors * b.rows_per_floor


@dataclass(frozen=True)
class FacilitySpec:
    name: str
    description: str
    tcs_coolant: str
    fws_coolant: str
    sites: tuple[Site, ...]
    source: str = ""
    tcs_tanks: int = 3
    fws_tanks: int = 3
    extra: dict = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return sum(s.gpus for s in self.sites)


#: Coolants of the secondary (TCS) loop: the liquids, or air for an air-cooled node (server
#: fans as the pump, heat sinks as the cold plates, the room's cooling coil as the CDU).
COOLANTS = ("water", "pg25", "air")
#: Facility water is a liquid.
FWS_COOLANTS = ("water", "pg25")


def _gpu_model(f: Fields, name: str) -> GpuModel:
    tdp = f.quantity("tdp", "W", positive=True)
    m = GpuModel(
        name=name,
        tdp=tdp,
        power_limit=f.quantity("power_limit", "W", f"{tdp} W", positive=True),
        idle_power=f.quantity("idle_power", "W", positive=True),
        idle_temperature=f.temperature("idle_temperature", "35 degC"),
        leakage_at_reference=f.quantity("leakage_at_reference", "W", minimum=0.0),
        leakage_coefficient=f.quantity("leakage_coefficient", "1/K", minimum=0.0, maximum=0.1),
        reference_temperature=f.temperature("reference_temperature", "60 degC"),
        resistance_junction_wall=f.quantity("resistance_junction_wall", "K/W", positive=True),
        resistance_junction_coolant=f.quantity("resistance_junction_coolant", "K/W", positive=True),
        heat_capacity=f.quantity("heat_capacity", "J/K", positive=True),
        hbm_resistance=f.quantity("hbm_resistance", "K/W", positive=True),
        hbm_heat_capacity=f.quantity("hbm_heat_capacity", "J/K", positive=True),
        hbm_idle_power=f.quantity("hbm_idle_power", "W", minimum=0.0),
        hbm_power_share=f.fraction("hbm_power_share"),
        max_operating_temperature=f.temperature("max_operating_temperature", "87 degC"),
        slowdown_temperature=f.temperature("slowdown_temperature", "89 degC"),
        shutdown_temperature=f.temperature("shutdown_temperature", "92 degC"),
        hbm_max_operating_temperature=f.temperature("hbm_max_operating_temperature", "95 degC"),
        air_fraction=f.fraction("air_fraction", 0.0, hi=0.5),
        resistance_range=_resistance_range(f),
    )
    f.finish()
    if m.power_dynamic <= 0:
        raise SpecError(
            f"{f.path}.tdp",
            f.table.get("tdp"),
            "a TDP above idle power plus leakage at the reference temperature",
        )
    if m.resistance_junction_wall >= m.resistance_junction_coolant:
        raise SpecError(
            f"{f.path}.resistance_junction_wall",
            f.table["resistance_junction_wall"],
            "less than resistance_junction_coolant (the wall-to-fluid path adds to it)",
        )
    if 1.0 / m.resistance_junction_coolant <= m.leakage_coefficient * m.leakage_at_reference:
        raise SpecError(
            f"{f.path}.leakage_coefficient",
            f.table["leakage_coefficient"],
            "leakage slope below the die-to-coolant conductance (else thermal runaway)",
        )
    return m


def _resistance_range(f: Fields) -> tuple[float, float] | None:
    """``resistance_range = ["0.02 K/W", "0.035 K/W"]``: two increasing positive resistances."""
    key = "resistance_range"
    value = f.raw(key, None)
    if value is None:
        return None
    expected = "two increasing resistances, e.g. ['0.020 K/W', '0.035 K/W']"
    if not isinstance(value, list) or len(value) != 2:
        raise SpecError(f._p(key), value, expected)
    lo, hi = (parse_quantity(v, f._p(key), "K/W") for v in value)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise SpecError(f._p(key), value, expected)
    return (lo, hi)


def _rack(f: Fields, name: str, gpus: dict[str, GpuModel]) -> RackTemplate:
    gpu_name = f.string("gpu")
    if gpu_name not in gpus:
        raise SpecError(f"{f.path}.gpu", gpu_name, f"one of the gpu_models: {', '.join(gpus)}")
    r = RackTemplate(
        name=name,
        gpu=gpus[gpu_name],
        gpus=f.integer("gpus"),
        trays=f.integer("trays"),
        paths_per_tray=f.integer("paths_per_tray"),
        plates_in_series=f.integer("plates_in_series", 1),
        design_power=f.quantity("design_power", "W", positive=True),
        flow_per_power=f.quantity(
            "flow_per_power",
            "m^3/s/W",
            positive=True,
            expected="a positive coolant flow per power, e.g. '1.5 L/min/kW'",
        ),
        pressure_drop=f.quantity("pressure_drop", "Pa", positive=True),
        other_power_idle=f.quantity("other_power_idle", "W", minimum=0.0),
        other_power_max=f.quantity("other_power_max", "W", minimum=0.0),
        other_liquid_fraction=f.fraction("other_liquid_fraction"),
        coldplate_flow_exponent=f.quantity(
            "coldplate_flow_exponent", "dimensionless", 0.8, minimum=0.2, maximum=1.0
        ),
    )
    f.finish()
    if r.trays * r.paths_per_tray * r.plates_in_series != r.gpus:
        raise SpecError(
            f"{f.path}.gpus",
            r.gpus,
            f"trays x paths_per_tray x plates_in_series = {r.trays} x {r.paths_per_tray} x "
            f"{r.plates_in_series} = {r.trays * r.paths_per_tray * r.plates_in_series}",
        )
    peak = r.gpus * r.gpu.tdp + r.other_power_max
    if peak > 1.25 * r.design_power:
        raise SpecError(
            f"{f.path}.design_power",
            f.table["design_power"],
            f"at least 80 % of the rack's peak power ({peak / 1e3:.1f} kW = GPUs at TDP "
            "plus other_power_max)",
        )
    return r


def _cdu(f: Fields, name: str) -> CduTemplate:
    c = CduTemplate(
        name=name,
        capacity=f.quantity("capacity", "W", positive=True),
        approach=f.quantity("approach", "K", positive=True, maximum=20.0),
        pump_pressure=f.quantity("pump_pressure", "Pa", positive=True),
        pump_efficiency=f.fraction("pump_efficiency", lo=0.05, hi=0.95),
        header_pressure_drop=f.quantity("header_pressure_drop", "Pa", minimum=0.0),
        loop_volume=f.quantity("loop_volume", "m^3", positive=True),
        primary_pressure_drop=f.quantity("primary_pressure_drop", "Pa", positive=True),
        primary_flow_ratio=f.quantity(
            "primary_flow_ratio", "dimensionless", 1.0, minimum=0.3, maximum=3.0
        ),
        # Supply and return headers run side by side along the row, sized for the same flow,
        # and the rack manifolds have a supply and a return pipe each: half the volume each way.
        supply_volume_fraction=f.fraction("supply_volume_fraction", 0.5, lo=0.05, hi=0.95),
        # Row CDUs run their pumps on VFDs (refs 2: Vertiv reference design "dual VFD pumps")
        # holding a differential pressure while each rack's valve follows its heat (refs 8
        # case 6); 30 % is the valves' minimum flow (estimate: pump minimum flow and cold
        # plates kept wetted).
        pump_control=f.string(
            "pump_control", "differential_pressure", choices=("differential_pressure", "fixed")
        ),
        minimum_rack_flow=f.fraction("minimum_rack_flow", 0.3, lo=0.05, hi=1.0),
        control_time_constant=f.quantity(
            "control_time_constant", "s", "60 s", positive=True, maximum=3600.0
        ),
    )
    f.finish()
    return c


def _site(
    key: str,
    f: Fields,
    racks: dict[str, RackTemplate],
    cdus: dict[str, CduTemplate],
    tcs_coolant: str = "pg25",
) -> Site:
    bf = f.sub("building")
    rack_name = bf.string("rack")
    cdu_name = bf.string("cdu")
    if rack_name not in racks:
        raise SpecError(
            f"{bf.path}.rack", rack_name, f"one of the rack_templates: {', '.join(racks)}"
        )
    if cdu_name not in cdus:
        raise SpecError(f"{bf.path}.cdu", cdu_name, f"one of the cdu_templates: {', '.join(cdus)}")
    building = Building(
        count=bf.integer("count"),
        floors=bf.integer("floors"),
        floor_height=bf.quantity("floor_height", "m", "6 m", minimum=0.0),
        rows_per_floor=bf.integer("rows_per_floor"),
        racks_per_row=bf.integer("racks_per_row"),
        rack=racks[rack_name],
        cdu=cdus[cdu_name],
    )
    bf.finish()
    row_power = building.racks_per_row * building.rack.design_power
    if row_power > building.cdu.capacity * 1.0001:
        raise SpecError(
            f"{bf.path}.racks_per_row",
            building.racks_per_row,
            f"racks_per_row x rack design_power ({row_power / 1e3:.0f} kW) within the CDU "
            f"capacity ({building.cdu.capacity / 1e3:.0f} kW)",
        )
    wf = f.sub("facility_water")
    fws = FacilityWater(
        supply_temperature=wf.temperature("supply_temperature", setpoint=True),
        design_delta_t=wf.quantity("design_delta_t", "K", positive=True, maximum=30.0),
        pump_pressure=wf.quantity("pump_pressure", "Pa", positive=True),
        pump_efficiency=wf.fraction("pump_efficiency", lo=0.05, hi=0.95),
        minimum_pressure=wf.quantity("minimum_pressure", "Pa", minimum=0.0),
        riser_pressure_drop=wf.quantity("riser_pressure_drop", "Pa", minimum=0.0),
        supply_volume=wf.quantity("supply_volume", "m^3", positive=True),
        return_volume=wf.quantity("return_volume", "m^3", positive=True),
    )
    wf.finish()
    hf = f.sub("heat_rejection")
    hr = HeatRejection(
        approach=hf.quantity("approach", "K", positive=True, maximum=30.0),
        air_temperature_rise=hf.quantity("air_temperature_rise", "K", positive=True),
        fan_power_ratio=hf.quantity("fan_power", "W/W", minimum=0.0, maximum=0.2),
        min_fan_speed=hf.fraction("min_fan_speed", 0.1, lo=0.01, hi=1.0),
        ua_exponent=hf.quantity("ua_exponent", "dimensionless", 0.6, minimum=0.2, maximum=1.0),
        chiller_capacity_fraction=hf.fraction("chiller_capacity_fraction", 1.0, hi=2.0),
        chiller_second_law_efficiency=hf.fraction(
            "chiller_second_law_efficiency", 0.5, lo=0.1, hi=0.9
        ),
        chiller_evaporator_approach=hf.quantity(
            "chiller_evaporator_approach", "K", "2 K", minimum=0.0
        ),
        chiller_condenser_approach=hf.quantity(
            "chiller_condenser_approach", "K", "10 K", minimum=0.0
        ),
        # refs 4: the measured large units are 2.1-2.8 MW (McQuay PFH 2124 kW, Trane CVHF
        # 2300 and 2799 kW)
        chiller_unit_capacity=hf.quantity(
            "chiller_unit_capacity",
            "W",
            "2 MW",
            positive=True,
            maximum=20e6,
            expected='a positive capacity of one chiller unit up to 20 MW (e.g. "2 MW")',
        ),
        # refs 4 and 9: DOE-2 curves only for 5-10 degC chilled water; Carnot fraction for
        # warm-water trim chillers
        chiller_curve=hf.string("chiller_curve", "carnot", choices=CHILLER_CURVES),
        # physics.heat_rejection.CHILLER_LIFT_MIN_K: lowest-lift measured chiller of refs 4
        chiller_minimum_lift=hf.quantity(
            "chiller_minimum_lift",
            "K",
            "17 K",
            positive=True,
            maximum=40.0,
            expected='a refrigerant lift between 0 and 40 K (e.g. "17 K")',
        ),
        # refs 4: DOE-2 PLR_min 0.1
        chiller_minimum_part_load=hf.fraction("chiller_minimum_part_load", 0.1, hi=0.9),
        adiabatic=hf.boolean("adiabatic", False),
        adiabatic_effectiveness=hf.fraction("adiabatic_effectiveness", 0.8),
        adiabatic_switch_temperature=hf.temperature("adiabatic_switch_temperature", "30 degC"),
    )
    hf.finish()
    af = f.sub("air_cooling", {})
    air = AirCooling(
        kind=af.string("kind", "rear_door", choices=AIR_COOLING_KINDS),
        approach=af.quantity("approach", "K", "3 K", minimum=0.0, maximum=20.0),
    )
    af.finish()
    if air.kind == "rear_door" and fws.supply_temperature + air.approach > _AIR_INLET_MAX_K:
        raise SpecError(
            f"{af.path}.approach",
            af.table.get("approach", "3 K"),
            "an approach that keeps the air leaving the coils (facility_water."
            "supply_temperature + approach) at or below 45 degC, the ASHRAE A4 allowable limit",
        )
    tcs_supply = f.temperature("tcs_supply_temperature", setpoint=True, air=tcs_coolant == "air")
    if tcs_supply < fws.supply_temperature:
        raise SpecError(
            f"{f.path}.tcs_supply_temperature",
            f.table["tcs_supply_temperature"],
            "at or above facility_water.supply_temperature (the CDU cannot cool below "
            "its primary supply)",
        )
    site = Site(
        key=key,
        name=f.string("name", key),
        climate=f.string("climate", None),
        weather_file=f.string("weather_file", None),
        grid=f.string("grid", None),
        carbon_file=f.string("carbon_file", None),
        timezone_offset_hours=f.quantity(
            "timezone_offset", "hour", "0 hour", minimum=-14, maximum=14
        ),
        electrical_loss_fraction=f.fraction("electrical_loss_fraction", 0.03, hi=0.2),
        air_fan_power_ratio=f.quantity(
            "air_fan_power", "W/W", "0.06 W/W", minimum=0.0, maximum=0.5
        ),
        tcs_supply_temperature=tcs_supply,
        building=building,
        facility_water=fws,
        heat_rejection=hr,
        air_cooling=air,
    )
    f.finish()
    if site.climate is None and site.weather_file is None:
        raise SpecError(
            f"{f.path}.climate",
            None,
            "a climate name (embedded typical year) or a weather_file (EPW path)",
        )
    return site


def load_facility(path_or_name: str | Path) -> FacilitySpec:
    """Load and validate a facility spec from a TOML path or a shipped name ('superfactory')."""
    path = Path(path_or_name)
    if not path.suffix and not path.exists():
        path = FACILITY_DIR / f"{path_or_name}.toml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in FACILITY_DIR.glob("*.toml")))
        raise FileNotFoundError(
            f"facility spec {str(path_or_name)!r} not found (give a TOML path or one of: {shipped})"
        )
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), "<file>", f"valid TOML ({exc})") from exc
    return parse_facility(doc, source=str(path))


def load_spec(facility: FacilitySpec | str | Path, field: str = "--facility") -> FacilitySpec:
    """A facility spec from itself, a shipped name or a TOML path (:func:`load_facility`).

    Anything else, or a name or path that is not found, raises :class:`SpecError` naming
    ``field`` (the input the value came from).
    """
    if isinstance(facility, FacilitySpec):
        return facility
    if isinstance(facility, (str, Path)):
        try:
            return load_facility(facility)
        except FileNotFoundError as exc:
            raise SpecError(field, str(facility), f"a facility spec ({exc})") from exc
    raise SpecError(field, facility, "a facility spec name or TOML path")


def parse_facility(doc: dict, source: str = "") -> FacilitySpec:
    """Validate a parsed TOML document (see :func:`load_facility`)."""
    top = Fields(doc, "")
    fac = top.sub("facility")
    name = fac.string("name")
    description = fac.string("description", "")
    tcs_tanks = fac.integer("tcs_transport_tanks", 3)
    fws_tanks = fac.integer("fws_transport_tanks", 3)
    fac.finish()
    cool = top.sub("coolant")
    tcs_coolant = cool.string("tcs", "pg25", choices=COOLANTS)
    fws_coolant = cool.string("fws", "water", choices=FWS_COOLANTS)
    cool.finish()
    gpus_t = top.sub("gpu_models")
    gpus = {k: _gpu_model(gpus_t.sub(k), k) for k in list(gpus_t.table)}
    gpus_t.used.update(gpus)
    racks_t = top.sub("rack_templates")
    racks = {k: _rack(racks_t.sub(k), k, gpus) for k in list(racks_t.table)}
    cdus_t = top.sub("cdu_templates")
    cdus = {k: _cdu(cdus_t.sub(k), k) for k in list(cdus_t.table)}
    sites_t = top.sub("sites")
    if not sites_t.table:
        raise SpecError("sites", {}, "at least one site")
    sites = tuple(_site(k, sites_t.sub(k), racks, cdus, tcs_coolant) for k in list(sites_t.table))
    top.finish()
    ref = sites[0].building
    for s in sites[1:]:
        b = s.building
        geom = (b.rack.trays, b.rack.paths_per_tray, b.rack.plates_in_series)
        ref_geom = (ref.rack.trays, ref.rack.paths_per_tray, ref.rack.plates_in_series)
        if geom != ref_geom:
            raise SpecError(
                f"sites.{s.key}.building.rack",
                b.rack.name,
                f"a rack with the same trays x paths x series {ref_geom} as the first "
                "site (one facility shares one GPU array layout)",
            )
        if b.racks_per_row != ref.racks_per_row:
            raise SpecError(
                f"sites.{s.key}.building.racks_per_row",
                b.racks_per_row,
                f"{ref.racks_per_row}, as in the first site (rows are solved together)",
            )
        if b.floors != ref.floors:
            raise SpecError(
                f"sites.{s.key}.building.floors", b.floors, f"{ref.floors}, as in the first site"
            )
    return FacilitySpec(
        name=name,
        description=description,
        tcs_coolant=tcs_coolant,
        fws_coolant=fws_coolant,
        sites=sites,
        source=source,
        tcs_tanks=tcs_tanks,
        fws_tanks=fws_tanks,
    )
