"""Every page of the dashboard under ``streamlit.testing.v1.AppTest``: no exception, and the key
numbers shown equal what the twin computes for the same inputs (recomputed here with twin
functions, not with ``apps``). Bad input shows a clear message, never a traceback."""

from __future__ import annotations

import re

import numpy as np
import pytest
from dashboard_testlib import FACILITY, HOURS, RECORD_S, free_port

from twin.units import parse_quantity


def _no_exception(at) -> None:
    assert not at.exception, [e.message for e in at.exception]


def _number(text: str, unit: str) -> float:
    """A displayed quantity such as '616.6 kW' or '35.00 °C' in ``unit``."""
    return parse_quantity(text.replace("°C", "degC").replace("g/kWh", "g/kWh"), "shown", unit)


def _metrics(at) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in at.metric]


def _goto(at, page: str):
    at.sidebar.radio(key="page").set_value(page).run()
    _no_exception(at)
    return at


# ------------------------------------------------------------------------------ Fleet
def test_fleet_shows_the_twin_numbers_of_both_sites(app, twin_run):
    run, ds, summary = twin_run
    app.run()
    _no_exception(app)
    assert not app.error, [e.value for e in app.error]
    shown = _metrics(app)
    sites = list(ds.site.values)
    assert len(shown) == 8 * len(sites)
    for i, site in enumerate(sites):
        tiles = dict(shown[8 * i : 8 * (i + 1)])
        last = ds.isel(time=-1).sel(site=site)
        # four significant digits in the tiles
        for label, var in (
            ("IT power", "it_power"),
            ("Pumps", "pump_power"),
            ("Fans", "fan_power"),
        ):
            assert _number(tiles[label], "W") == pytest.approx(float(last[var]), rel=6e-4), label
        assert _number(tiles["Chillers"], "W") == pytest.approx(float(last.chiller_power), abs=0.5)
        assert float(tiles["PUE (run, with electrical losses)"]) == pytest.approx(
            summary["sites"][site]["pue"], abs=6e-5
        )
        assert float(tiles["Grid carbon"].split()[0]) == pytest.approx(
            float(last.carbon_intensity), abs=0.06
        )
        assert _number(tiles["Outdoor"], "degC") == pytest.approx(float(last.temp_air), abs=0.06)
        assert _number(tiles["Hottest GPU"], "degC") == pytest.approx(
            float(last.max_gpu_temperature), abs=0.06
        )
    totals = app.dataframe[0].value
    for site in sites:
        s = summary["sites"][site]
        assert totals.loc["IT energy [kWh]", site] == pytest.approx(s["it_energy_kwh"], rel=1e-12)
        assert totals.loc["chiller energy [kWh]", site] == pytest.approx(
            s["chiller_energy_kwh"], rel=1e-12, abs=1e-12
        )
        assert totals.loc["carbon [kg CO2]", site] == pytest.approx(s["carbon_kg"], rel=1e-12)
    assert totals.loc["PUE", "facility"] == pytest.approx(summary["pue"], rel=1e-12)
    assert totals.loc["GPUs", "facility"] == summary["gpus"]


# ------------------------------------------------------------------------------ Hall
def test_hall_floor_plans_and_rack_drill_down_match_the_twin(app, twin_run):
    import jax.numpy as jnp

    from physics import workload
    from twin import placement

    run, ds, summary = twin_run
    p = run.params
    app.run()
    _goto(app, "Hall")
    assert not app.error, [e.value for e in app.error]
    table = app.dataframe[0].value  # building 1 of the first site, one row per floor
    site0 = run.spec.sites[0]
    assert sorted(table.index.get_level_values("floor")) == [1, 2]
    rack_floor = np.asarray(p.cdu_floor)[np.asarray(p.rack_cdu)]
    rack_site = np.asarray(p.building_site)[np.asarray(p.cdu_building)[np.asarray(p.rack_cdu)]]
    rack_max = ds.final_rack_max_gpu_temperature.values
    for floor in (0, 1):
        m = (rack_site == 0) & (rack_floor == floor)
        shown = table.xs(floor + 1, level="floor")["hottest GPU [degC]"].iloc[0]
        assert shown == pytest.approx(rack_max[m].max(), abs=1e-9)
        assert table.xs(floor + 1, level="floor")["racks"].iloc[0] == m.sum()
    # Rack IT power: the twin's steady state at the last hour, for each rack's mean load
    hour = run.hour0 + HOURS
    diurnal = np.asarray(
        workload.diurnal_factor(p.load_diurnal_amplitude, p.load_diurnal_peak_hour, hour)
    )
    low, high = np.asarray(p.load_low), np.asarray(p.load_high)
    period = np.asarray(p.load_period)  # mean of the square wave: its on-time over a period
    on = np.asarray(workload.square_wave_on_time(period, p.load_duty, p.load_phase, 0.0, period))
    u_mean = (low + (high - low) * on / period) * diurnal
    steady = placement.steady_state(
        p, run.derived, jnp.asarray(u_mean), jnp.asarray(high * diurnal), jnp.asarray(hour)
    )
    assert table["IT power [MW]"].sum() == pytest.approx(float(steady.it[0]) / 1e6, rel=1e-9)
    # the default rack is the hottest of the building; its metrics
    tiles = dict(_metrics(app))
    hottest = int(np.flatnonzero(rack_site == 0)[np.argmax(rack_max[rack_site == 0])])
    assert _number(tiles["Hottest GPU"], "degC") == pytest.approx(rack_max[hottest], abs=0.006)
    assert float(tiles["Rack IT power"].split()[0]) == pytest.approx(
        float(steady.rack_it[hottest]) / 1e3, abs=0.06
    )
    cdu = int(p.rack_cdu[hottest])
    flow = float(
        run.derived.cdu_capacity_rate[cdu] / (p.tcs_density[cdu] * p.tcs_specific_heat[cdu])
    )
    assert float(tiles["TCS flow"].split()[0]) == pytest.approx(flow * 1e3, abs=0.006)
    # another rack, on the second floor of the second site
    app.selectbox(key="hall_site").set_value(run.spec.sites[1].name).run()
    _no_exception(app)
    labels = app.selectbox(key="hall_rack").options
    pick = next(lbl for lbl in labels if lbl.startswith("floor 2"))
    app.selectbox(key="hall_rack").set_value(pick).run()
    _no_exception(app)
    rack = int(re.search(r"#(\d+)", pick).group(1))
    assert rack_site[rack] == 1 and rack_floor[rack] == 1
    tiles = dict(_metrics(app))
    assert _number(tiles["Hottest GPU"], "degC") == pytest.approx(rack_max[rack], abs=0.006)
    assert site0.building.floors == 2


# ------------------------------------------------------------------------------ GPU
def test_gpu_page_shows_the_calibration_of_the_synthetic_fleet(app):
    from sensors.synthetic import simulate_fleet
    from twin.calibration import calibrate
    from twin.spec import load_facility

    spec = load_facility(FACILITY)
    tdp = spec.sites[0].building.rack.gpu.tdp
    ds, _ = simulate_fleet(8, 900.0, seed=0, tdp=tdp, resistance_step=(5, 0, 1.8))
    res = calibrate(ds, spec)
    app.run()
    _goto(app, "GPU")
    tiles = dict(_metrics(app))
    assert int(tiles["Anomalies"]) == len(res.summary["anomalies"]) >= 1
    assert float(tiles["Held-out RMSE"].split()[0]) == pytest.approx(
        res.summary["holdout_rmse_k"], abs=6e-4
    )
    flagged = res.summary["anomalies"][0]
    assert any(flagged in e.value for e in app.error)  # the anomaly flag
    assert app.selectbox(key="gpu_pick").value == flagged
    live_flags = app.dataframe[0].value  # twin.estimate flags of the selected GPU
    assert "peer_excess" in set(live_flags.kind)  # GPU 5's cold plate is 1.8 x worse
    params = app.dataframe[1].value
    ref = res.params.sel(gpu=flagged)
    assert float(tiles["Held-out RMSE of this GPU"].split()[0]) == pytest.approx(
        float(res.params.holdout_rmse.sel(gpu=flagged)), abs=6e-4
    )
    row = params.loc["junction → coolant resistance"]
    assert row["value"] == pytest.approx(float(ref.resistance), rel=1e-12)
    assert row["± (1 s.e.)"] == pytest.approx(float(ref.resistance_se), rel=1e-12)


# ------------------------------------------------------------------------------ Placement
def test_placement_compares_policies_like_the_twin(app, tmp_path):
    from twin.io.jobs import load_jobs
    from twin.model import LoadMix
    from twin.placement import compare
    from twin.simulation import prepare
    from twin.spec import load_facility

    jobs_csv = tmp_path / "jobs.csv"
    jobs_csv.write_text(
        "id,arrival,duration,gpus,workload\n"
        "a,0,1800,72,training\nb,60,900,8,inference\nc,120,2400,144,training\nd,300,600,4,batch\n"
    )
    app.query_params["page"] = "placement"
    app.run()
    _no_exception(app)
    app.radio(key="pl_source").set_value("Job file (path)").run()
    app.number_input(key="pl_hours").set_value(0.5)
    app.multiselect(key="pl_policies").set_value(["pack", "spread"])
    app.text_input(key="pl_path").set_value(str(jobs_csv)).run()
    app.button(key="pl_run").click().run()
    _no_exception(app)
    assert not app.error, [e.value for e in app.error]
    table = app.dataframe[0].value
    spec = load_facility(FACILITY)
    run = prepare(spec, 30.0, "2023-07-15T12:00Z", LoadMix.parse(None), seed=0)
    jobs = load_jobs(jobs_csv, facility_gpus=spec.gpus, hours=0.5)
    ref = compare(run, jobs, 0.5, ("pack", "spread"), epoch=900.0, objective="energy")
    for pol, res in ref.items():
        assert table.loc[pol, "energy_kwh"] == pytest.approx(
            res.summary["energy_kwh"]["total"], rel=1e-9
        )
        assert table.loc[pol, "carbon_kg"] == pytest.approx(res.summary["carbon_kg"], rel=1e-9)
        assert table.loc[pol, "max_gpu_temperature_c"] == pytest.approx(
            res.summary["max_gpu_temperature_c"], abs=1e-9
        )
    labels = [d.label for d in app.get("download_button")]
    assert any(lbl.startswith("Plan of") for lbl in labels), labels


# ------------------------------------------------------------------------------ Live
def test_live_uses_the_simulated_fleet_when_nothing_runs(app):
    app.query_params["page"] = "live"
    app.run()
    _no_exception(app)
    tiles = dict(_metrics(app))
    assert tiles["GPUs"] == "8"
    table = app.dataframe[0].value
    assert _number(tiles["Hottest GPU now"], "degC") == pytest.approx(table.temp_gpu.max(), abs=0.5)


def _write_store(path, seconds: int = 20):
    from sensors.simulated import SimulatedSource
    from sensors.store import Store

    clock = {"t": 1.7e9}
    src = SimulatedSource(n_gpus=4, seed=3, host="node-a", clock=lambda: clock["t"])
    with Store(path) as st:
        st.record_provenance(src.name, dict(src.provenance()))
        for _ in range(seconds):
            clock["t"] += 1.0
            st.append(src.read(), src.devices(), source=src.name)
        st.flush()
        return st.read()


def test_live_reads_the_sensord_store(app, tmp_path, monkeypatch):
    store = tmp_path / "telemetry.db"
    ds = _write_store(store)
    monkeypatch.setenv("TWIN_TELEMETRY", str(store))
    app.query_params["page"] = "live"
    app.run()
    _no_exception(app)
    assert not app.error, [e.value for e in app.error]
    tiles = dict(_metrics(app))
    assert tiles["GPUs"] == "4"
    last_t = ds.temp_gpu.to_pandas().ffill().iloc[-1]  # last reading of each GPU
    assert tiles["Hottest GPU now"] == f"{last_t.max():.0f} °C"
    last_p = ds.power_average.to_pandas().ffill().iloc[-1]
    assert tiles["Mean GPU power now"] == f"{last_p.mean():.1f} W"


# ------------------------------------------------------------------------------ bad input
def _errors(at) -> str:
    return " | ".join(e.value for e in at.error)


def test_empty_job_file_is_a_message(app, tmp_path):
    empty = tmp_path / "jobs.csv"
    empty.write_text("")
    app.query_params["page"] = "placement"
    app.run()
    app.radio(key="pl_source").set_value("Job file (path)").run()
    app.text_input(key="pl_path").set_value(str(empty)).run()
    _no_exception(app)
    assert "empty file" in _errors(app) and str(empty) in _errors(app)


def test_wrong_units_are_a_message(app):
    app.run()
    app.text_input(key="step").set_value("30 kg").run()
    _no_exception(app)
    assert "time step" in _errors(app) and "30 kg" in _errors(app)
    app.text_input(key="step").set_value("30 s").run()
    app.sidebar.radio(key="page").set_value("Placement").run()
    app.text_input(key="pl_caps").set_value("rack=130 degC").run()
    _no_exception(app)
    assert "--cap rack" in _errors(app) and "W" in _errors(app)


def test_unreachable_prometheus_is_a_message(app, monkeypatch):
    port = free_port()
    monkeypatch.setenv("TWIN_TELEMETRY", f"http://127.0.0.1:{port}")
    app.query_params["page"] = "live"
    app.run()
    _no_exception(app)
    assert "reachable Prometheus" in _errors(app), _errors(app)


def test_empty_store_is_a_message(app, tmp_path, monkeypatch):
    from sensors.store import Store

    store = tmp_path / "empty.db"
    Store(store).close()
    monkeypatch.setenv("TWIN_TELEMETRY", str(store))
    app.query_params["page"] = "live"
    app.run()
    _no_exception(app)
    assert "empty" in _errors(app) and "twin sensord" in _errors(app), _errors(app)


def test_cli_dashboard_command_line():
    from twin.cli import build_parser
    from twin.cli.dashboard import app_script, streamlit_command

    args = build_parser().parse_args(["dashboard", "--facility", "single-rack", "--port", "8765"])
    cmd = streamlit_command(args)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert str(app_script()) in cmd and cmd[cmd.index("--facility") + 1] == "single-rack"
    assert "--telemetry" not in cmd
    args = build_parser().parse_args(["dashboard", "--telemetry", "x.db", "--address", "0.0.0.0"])
    cmd = streamlit_command(args)
    assert cmd[cmd.index("--telemetry") + 1] == "x.db"
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert "--calibration" not in cmd
    args = build_parser().parse_args(["dashboard", "--calibration", "params.nc"])
    cmd = streamlit_command(args)
    assert cmd[cmd.index("--calibration") + 1] == "params.nc"


def test_a_bad_calibration_file_is_a_message(app, tmp_path):
    """The sidebar's calibration input: a file that is not a calibration names the input."""
    bad = tmp_path / "params.nc"
    bad.write_text("not netCDF")
    app.run()
    app.text_input(key="calibration").set_value(str(bad)).run()
    assert any("netCDF" in e.value and "--calibration" in e.value for e in app.error)


def test_record_interval_shorter_than_step_is_a_message(app):
    app.run()
    app.text_input(key="record").set_value("10 s").run()
    _no_exception(app)
    assert "record interval" in _errors(app)
    assert RECORD_S > 0


def test_unknown_facility_is_a_message(app):
    app.run()
    app.text_input(key="facility").set_value("no-such-facility").run()
    _no_exception(app)
    errors = _errors(app)
    assert "facility: got 'no-such-facility'" in errors, errors
    assert "single-rack" in errors  # the shipped names it could have been
