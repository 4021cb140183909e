"""A year at hourly steps for each site: TMY3 weather against the embedded typical year.

The superfactory's templates, setpoints and per-row residence times are kept; building and row
counts are reduced (2 rows per site) because the annual PUE is intensive in the number of
identical rows. The full-size run is ``twin simulate --hours 8760 --step 3600`` (docs).
"""

from __future__ import annotations

import tomllib

import pytest

from twin.io.weather import free_cooling_hours_epw
from twin.model import LoadMix
from twin.simulation import simulate
from twin.spec import FACILITY_DIR, parse_facility

EPW = {
    "mount_pleasant": "USA_WI_Milwaukee-Mitchell.Intl.AP.726400_TMY3.epw",
    "atlanta": "USA_GA_Atlanta-Hartsfield-Jackson.Intl.AP.722190_TMY3.epw",
}
ROWS = {"mount_pleasant": 35, "atlanta": 53}


def reduced_superfactory(
    design_power: str | None = None, adiabatic: bool | None = None, air_cooling: str | None = None
):
    doc = tomllib.loads((FACILITY_DIR / "superfactory.toml").read_text())
    for key, rows in ROWS.items():
        site = doc["sites"][key]
        site["building"]["count"] = 1
        site["building"]["rows_per_floor"] = 2
        for v in ("supply_volume", "return_volume"):
            q = float(site["facility_water"][v].split()[0])
            site["facility_water"][v] = f"{q * 2 / rows} m^3"  # same residence time
        if adiabatic is not None:
            site["heat_rejection"]["adiabatic"] = adiabatic
        if air_cooling is not None:
            site.setdefault("air_cooling", {})["kind"] = air_cooling
    if design_power:
        doc["rack_templates"]["gb200_nvl72"]["design_power"] = design_power
    return parse_facility(doc)


@pytest.fixture(scope="module")
def annual(shared_data):
    spec = reduced_superfactory()
    weather = {k: str(shared_data / "weather" / v) for k, v in EPW.items()}
    _, tmy3 = simulate(
        spec, 8760, 3600, "2023-01-01T00:00Z", LoadMix(), weather, record_interval=3600
    )
    _, typical = simulate(
        spec, 8760, 3600, "2023-01-01T00:00Z", LoadMix(), None, record_interval=3600
    )
    return tmy3, typical


def cooling(site):
    return site["pump_energy_kwh"] + site["fan_energy_kwh"] + site["chiller_energy_kwh"]


def test_annual_pue_band_and_site_order(annual):
    for s in annual:
        wi, ga = s["sites"]["mount_pleasant"], s["sites"]["atlanta"]
        for site in (wi, ga):
            # refs 8 case 10: "A model whose result falls outside 1.05-1.25 for these sites is
            # suspect" (its own estimate, 1.08-1.15, assumes design-load fans, 1.7 % pumps and a
            # 0.02 chiller term; docs/model.md compares them term by term)
            assert 1.05 < site["pue"] < 1.25
            assert site["energy_balance_relative_error"] < 1e-9
            assert site["steps"] == 8760
        assert wi["pue"] < ga["pue"]
        assert wi["chiller_hours"] < ga["chiller_hours"]
        assert wi["water_liters"] == 0.0  # zero-water design in Wisconsin


def test_weather_sources_agree_within_5_percent(annual):
    tmy3, typical = annual
    for key in EPW:
        a, b = tmy3["sites"][key], typical["sites"][key]
        assert abs(cooling(a) - cooling(b)) / cooling(a) < 0.05
        free_a = 8760 - a["chiller_hours"]
        free_b = 8760 - b["chiller_hours"]
        assert abs(free_a - free_b) / free_a < 0.05


def test_chiller_hours_consistent_with_reference_free_cooling(shared_data):
    """refs 8.9: W32 with an 8 K approach needs trim cooling ~608 h (MKE) and ~1,931 h (ATL)
    when the dry coolers carry their design heat. With the racks at their design power the
    simulated chiller hours fall just below those counts (the liquid carries ~93 % of IT heat,
    so the coils run slightly under design), and never above them. The racks' heat to air is
    kept off the facility water (``outside_air``) so that the dry coolers carry what the
    reference's count assumes: the liquid heat alone."""
    spec = reduced_superfactory(design_power="124 kW", adiabatic=False, air_cooling="outside_air")
    weather = {k: str(shared_data / "weather" / v) for k, v in EPW.items()}
    _, s = simulate(
        spec,
        8760,
        3600,
        "2023-01-01T00:00Z",
        LoadMix.parse("constant=1.0"),
        weather,
        record_interval=3600,
    )
    for key, path in EPW.items():
        trim_hours = 8760 - free_cooling_hours_epw(shared_data / "weather" / path, 32.0, 8.0)
        assert trim_hours == {"mount_pleasant": 608, "atlanta": 1931}[key]
        got = s["sites"][key]["chiller_hours"]
        assert 0.7 * trim_hours <= got <= trim_hours, (key, got, trim_hours)
