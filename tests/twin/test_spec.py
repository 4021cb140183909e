"""Facility specs: shipped files load; every kind of bad spec names field, value, expectation."""

from __future__ import annotations

import copy
import tomllib

import pytest

from twin.simulation import prepare, site_boundary
from twin.spec import FACILITY_DIR, load_facility, parse_facility
from twin.units import SpecError

SUPER = tomllib.loads((FACILITY_DIR / "superfactory.toml").read_text())


def test_shipped_specs_load_with_declared_counts():
    s = load_facility("superfactory")
    assert [x.key for x in s.sites] == ["mount_pleasant", "atlanta"]
    assert all(x.gpus >= 150_000 for x in s.sites)
    assert s.gpus == 151_200 + 152_640
    rack = s.sites[0].building.rack
    assert rack.gpus == 72 and abs(rack.design_power - 140e3) < 1
    # ~1.36 MW rows (refs 2): 10 racks x 140 kW = 1.4 MW within 3 %
    assert abs(s.sites[0].building.racks_per_row * rack.design_power - 1.36e6) / 1.36e6 < 0.03
    assert s.sites[0].building.floors == 2
    assert load_facility("single-rack").gpus == 72
    assert load_facility("h100-node").gpus == 8
    assert abs(load_facility("h100-node").sites[0].building.rack.gpu.tdp - 700.0) < 1e-9


def bad(mutate):
    doc = copy.deepcopy(SUPER)
    mutate(doc)
    with pytest.raises(SpecError) as info:
        parse_facility(doc)
    return info.value


def test_wrong_dimension():
    e = bad(lambda d: d["rack_templates"]["gb200_nvl72"].update(design_power="140 kg"))
    assert e.path == "rack_templates.gb200_nvl72.design_power"
    assert "140 kg" in str(e) and "W" in e.expected


def test_unknown_key():
    e = bad(lambda d: d["sites"]["atlanta"]["facility_water"].update(suply_temperature="30 degC"))
    assert e.path == "sites.atlanta.facility_water.suply_temperature"
    assert "supply_temperature" in e.expected


def test_missing_field():
    e = bad(lambda d: d["gpu_models"]["b200_gb200"].pop("tdp"))
    assert e.path == "gpu_models.b200_gb200.tdp" and "present" in e.expected


@pytest.mark.parametrize("flow", ["0 L/min/kW", "-1.5 L/min/kW"])
def test_zero_or_negative_flow(flow):
    e = bad(lambda d: d["rack_templates"]["gb200_nvl72"].update(flow_per_power=flow))
    assert e.path == "rack_templates.gb200_nvl72.flow_per_power" and flow in str(e)
    assert "positive" in e.expected


def test_inconsistent_counts():
    e = bad(lambda d: d["rack_templates"]["gb200_nvl72"].update(gpus=64))
    assert e.path == "rack_templates.gb200_nvl72.gpus" and e.value == 64
    assert "18 x 4 x 1 = 72" in e.expected


def test_row_overloads_cdu():
    e = bad(lambda d: d["sites"]["atlanta"]["building"].update(racks_per_row=12))
    assert e.path == "sites.atlanta.building.racks_per_row" and "CDU capacity" in e.expected


@pytest.mark.parametrize("value", ["-20 degC", "95 degC"])
def test_setpoint_outside_physical_range(value):
    e = bad(
        lambda d: d["sites"]["mount_pleasant"]["facility_water"].update(supply_temperature=value)
    )
    assert e.path == "sites.mount_pleasant.facility_water.supply_temperature"
    assert "2 degC and 65 degC" in e.expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("chiller_curve", "doe2", "one of carnot, doe2_centrifugal"),
        ("chiller_unit_capacity", "0 MW", "positive capacity of one chiller unit"),
        ("chiller_unit_capacity", "2 m^3", "W"),
        ("chiller_minimum_lift", "-3 K", "refrigerant lift between 0 and 40 K"),
        ("chiller_minimum_part_load", 1.5, "fraction between 0.0 and 0.9"),
    ],
)
def test_bad_chiller_values(key, value, expected):
    e = bad(lambda d: d["sites"]["atlanta"]["heat_rejection"].update({key: value}))
    assert e.path == f"sites.atlanta.heat_rejection.{key}"
    assert e.value == value and expected in e.expected


def test_chiller_defaults_and_curve_choice():
    doc = copy.deepcopy(SUPER)
    for k in ("chiller_unit_capacity", "chiller_curve", "chiller_minimum_lift"):
        doc["sites"]["atlanta"]["heat_rejection"].pop(k)
    doc["sites"]["mount_pleasant"]["heat_rejection"]["chiller_curve"] = "doe2_centrifugal"
    spec = parse_facility(doc)
    mp, atl = (s.heat_rejection for s in spec.sites)
    assert atl.chiller_unit_capacity == 2e6 and atl.chiller_curve == "carnot"
    assert atl.chiller_minimum_lift == 17.0 and atl.chiller_minimum_part_load == 0.1
    assert mp.chiller_curve == "doe2_centrifugal"


def test_tcs_setpoint_below_facility_water():
    e = bad(lambda d: d["sites"]["atlanta"].update(tcs_supply_temperature="30 degC"))
    assert e.path == "sites.atlanta.tcs_supply_temperature"


def test_malformed_quantity_and_unknown_template():
    e = bad(lambda d: d["cdu_templates"]["row_cdu"].update(capacity="lots"))
    assert e.path == "cdu_templates.row_cdu.capacity"
    e = bad(lambda d: d["sites"]["atlanta"]["building"].update(rack="nvl144"))
    assert e.path == "sites.atlanta.building.rack" and "gb200_nvl72" in e.expected


def test_missing_weather_file(tmp_path):
    spec = load_facility("single-rack")
    site = spec.sites[0]
    with pytest.raises(FileNotFoundError, match="nope.epw"):
        site_boundary(site, weather_file=str(tmp_path / "nope.epw"))


def test_malformed_epw(tmp_path):
    path = tmp_path / "bad.epw"
    path.write_text("LOCATION,Nowhere\nthis is not an EPW file\n")
    spec = load_facility("single-rack")
    with pytest.raises(SpecError) as info:
        site_boundary(spec.sites[0], weather_file=str(path))
    assert "bad.epw" in str(info.value)


def test_unknown_site_in_weather_override(shared_data):
    spec = load_facility("single-rack")
    with pytest.raises(SpecError) as info:
        prepare(spec, 1.0, weather={"atlantis": str(shared_data / "weather" / "x.epw")})
    assert info.value.path == "--weather" and "lab" in info.value.expected


def test_missing_spec_file_lists_shipped_names():
    with pytest.raises(FileNotFoundError, match="superfactory"):
        load_facility("no-such-facility")


def test_bad_toml_syntax(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("[facility\nname = 1")
    with pytest.raises(SpecError, match="valid TOML"):
        load_facility(path)


# --------------------------------------------------------------------------------------------
# The air-cooled node (issue 13, deliverable 6): air as the secondary coolant
# --------------------------------------------------------------------------------------------

AIR_NODE = tomllib.loads((FACILITY_DIR / "h100-node-air.toml").read_text())


def bad_air(mutate):
    doc = copy.deepcopy(AIR_NODE)
    mutate(doc)
    with pytest.raises(SpecError) as info:
        parse_facility(doc)
    return info.value


def test_air_node_spec_loads_with_its_cited_figures():
    s = load_facility("h100-node-air")
    assert s.tcs_coolant == "air" and s.fws_coolant == "water" and s.gpus == 8
    rack = s.sites[0].building.rack
    g = rack.gpu
    # refs 1: 54-72 degC (air) at ~700 W over a 25 degC inlet
    assert g.resistance_range == pytest.approx(((54 - 25) / 700, (72 - 25) / 700), abs=5e-4)
    # 0.07 m3/s per kW of node power (a ~12 K server air rise): 0.714 m3/s for 10.2 kW,
    # about 1,513 CFM (1 ft3/min = 4.719474e-4 m3/s)
    q = rack.flow_per_power * rack.design_power
    assert q == pytest.approx(0.714, rel=1e-9)
    assert q / 4.719474e-4 == pytest.approx(1513, rel=1e-3)
    assert rack.other_liquid_fraction == 1.0 and g.air_fraction == 0.0
    liquid = load_facility("h100-node").sites[0].building.rack.gpu
    assert liquid.resistance_range == pytest.approx((16 / 700, 25 / 700), abs=5e-4)


def test_air_only_as_the_secondary_coolant():
    e = bad_air(lambda d: d["coolant"].update(fws="air"))
    assert e.path == "coolant.fws" and "water" in e.expected


@pytest.mark.parametrize("value", ["2 degC", "50 degC"])
def test_air_inlet_outside_the_server_range(value):
    e = bad_air(lambda d: d["sites"]["node"].update(tcs_supply_temperature=value))
    assert e.path == "sites.node.tcs_supply_temperature"
    assert "inlet-air" in e.expected and "5 degC and 45 degC" in e.expected


@pytest.mark.parametrize("value", [["0.05 K/W"], ["0.06 K/W", "0.04 K/W"], "0.05 K/W"])
def test_bad_resistance_range(value):
    e = bad_air(lambda d: d["gpu_models"]["h100_sxm"].update(resistance_range=value))
    assert e.path == "gpu_models.h100_sxm.resistance_range"


def test_air_node_design_point():
    """The facility model's design point of the air node, against the spec's figures:
    junction -> inlet resistance (refs 1: (63 - 25)/700 = 0.054 K/W) and fan power
    Q H / eta = 0.714 m3/s x 600 Pa (the fans' whole head, the server's 400 Pa drop included)
    / 0.45 = 952 W."""
    run = prepare(load_facility("h100-node-air"), step=60.0)
    r_ji = float(run.derived.gpu_resistance.ravel()[0])
    assert r_ji == pytest.approx((63 - 25) / 700, rel=0.02)
    assert float(run.derived.tcs_pump_power[0]) == pytest.approx(
        0.714 * 600 / 0.45, rel=1e-6
    )  # whole 600 Pa
    # air rise through the node at design: 10.2 kW / (rho cp Q) at 30 degC (CoolProp Air,
    # 1.1648 kg/m3 x 1006.5 J/kg/K), about 12.2 K
    rise = 10.2e3 / float(run.derived.rack_capacity_rate[0])
    assert rise == pytest.approx(10.2e3 / (1.1648 * 1006.5 * 0.714), rel=2e-3)
