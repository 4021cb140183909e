"""Data behind the dashboard: every number comes from ``twin`` functions (only twin's public names).

The views only present. This module calls the twin, caches its results for the Streamlit
session (``st.cache_resource``: results are shared, never copied) and reshapes them into the
small tables the pages draw: one row per site and record, one row per rack, one cell per GPU
of one selected rack. Nothing here draws 300,000 marks; the largest table is one row per rack.

Sources of each quantity:

* site time series, run totals and the final state: one :func:`twin.simulation.simulate_run`
  (Dataset, summary and the final :class:`twin.simulation.SimState`; nothing is simulated twice);
* per-GPU temperatures at the end of the run: that final state (it gives the Dataset's
  ``final_rack_max_gpu_temperature``, which the tests check);
* per-rack IT power and coolant return: the twin's steady state for each rack's load at the
  run's last hour (:func:`twin.placement.rack_steady`), because the dynamic run records site
  totals only; a row's coolant loop: :func:`twin.simulation.loop_conditions` of the final state;
* placement what-if: :func:`twin.placement.compare` on jobs from :mod:`twin.io.jobs`;
* GPU page: :func:`twin.calibration.calibrate` and :func:`twin.estimate.rolling_forecast` on
  telemetry read by
  :func:`twin.io.telemetry.open_telemetry` (store, recorded file or Prometheus) or, with no
  source, the synthetic fleet of :func:`twin.io.telemetry.synthetic_fleet`;
* live: the telemetry source, or the simulated fleet :class:`twin.io.telemetry.SimulatedTelemetry`
  read in-process when nothing else runs.

The views import nothing from the twin: the errors they catch (:class:`InputError`,
:class:`SpecError`) and the parsing of their inputs come from here too. No formula of the
physics is written here: only unit changes for display (K to degC, W to kW).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

# Access, InputError, SpecError and parse_quantity are also the views' (they import only
# apps.data)
from apps.access import Access
from twin.units import ZERO_CELSIUS_K, InputError, SpecError, parse_quantity

try:  # the pages run under Streamlit; the benchmark and tests may import without a session
    import streamlit as st

    cache_resource = st.cache_resource
except ModuleNotFoundError:  # pragma: no cover - streamlit is a dependency
    import functools

    def cache_resource(func=None, **_kw):  # type: ignore[no-redef]
        if func is None:
            return lambda f: functools.lru_cache(maxsize=16)(f)
        return functools.lru_cache(maxsize=16)(func)


# ------------------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True)
class SimSettings:
    """What the Fleet and Hall pages simulate (hashable: the cache key)."""

    facility: str
    hours: float
    step_s: float
    record_s: float
    start: str
    load: str
    gpu_spread: float = 0.0
    seed: int = 0
    calibration: str = ""  # params.nc of twin calibrate; "" the spec's GPUs


def parse_settings(
    facility: str,
    hours: float,
    step: str,
    record: str,
    start: str,
    load: str,
    gpu_spread: float = 0.0,
    seed: int = 0,
    calibration: str = "",
) -> SimSettings:
    """Check the sidebar inputs (quantities with units); raise :class:`SpecError` on bad ones."""
    from twin.model import LoadMix
    from twin.simulation import parse_start

    if not facility.strip():
        raise SpecError("facility", facility, "a facility TOML path or shipped name")
    if not (math.isfinite(hours) and hours > 0):
        raise SpecError("hours", hours, "a positive number of hours")
    step_s = parse_quantity(step, "time step", "s")
    record_s = parse_quantity(record, "record interval", "s")
    if record_s < step_s:
        raise SpecError("record interval", record, f"at least the time step ({step})")
    parse_start(start or None)
    LoadMix.parse(load or None)
    if not (math.isfinite(gpu_spread) and 0.0 <= gpu_spread <= 0.5):
        raise SpecError("GPU spread", gpu_spread, "a relative standard deviation from 0 to 0.5")
    if calibration.strip():
        calibration_file(calibration.strip())  # a bad file is reported here, naming the input
    return SimSettings(
        facility.strip(), float(hours), step_s, record_s, start, load, float(gpu_spread),
        int(seed), calibration.strip(),
    )  # fmt: skip


@cache_resource(show_spinner="Reading the calibration ...")
def calibration_file(path: str):
    """:func:`twin.model.calibrated.load_calibration` of ``path`` (its errors name the input)."""
    from twin.model.calibrated import load_calibration

    try:
        return load_calibration(path)
    except InputError as exc:
        raise Access.hide_contents(exc, path) from None


# ------------------------------------------------------------------------------ fleet
@dataclasses.dataclass
class FleetRun:
    """One simulated run: the twin's Dataset and summary, its Run and final state, racks."""

    settings: SimSettings
    ds: xr.Dataset
    summary: dict
    run: object  # twin.simulation.Run
    state: object  # the physics state of twin.simulation.SimState at the end of the run (NumPy)
    racks: pd.DataFrame  # one row per rack (see rack_table)


@cache_resource(show_spinner="Loading the facility spec ...")
def load_spec(facility: str):
    """The validated facility spec (:func:`twin.spec.load_spec`; a name or path not found is a
    :class:`SpecError` naming the facility input)."""
    from twin.spec import load_spec as twin_load_spec

    try:
        return twin_load_spec(facility, field="facility")
    except InputError as exc:
        raise Access.hide_contents(exc, facility) from None


@cache_resource(show_spinner="Preparing the twin (boundary data, hydraulics) ...")
def prepared(
    facility: str,
    step_s: float,
    start: str,
    load: str,
    seed: int,
    gpu_spread: float = 0.0,
    calibration: str = "",
):
    """:func:`twin.simulation.prepare` for these inputs."""
    from twin.model import LoadMix
    from twin.simulation import prepare

    return prepare(
        load_spec(facility),
        step_s,
        start or None,
        LoadMix.parse(load or None),
        seed=seed,
        gpu_spread=gpu_spread,
        calibration=calibration_file(calibration) if calibration else None,
    )


@cache_resource(show_spinner="Simulating the facility with the twin ...")
def fleet_run(s: SimSettings) -> FleetRun:
    """Simulate ``s`` once with :func:`twin.simulation.simulate_run`: Dataset, summary, final state
    (host copy) and the rack table."""
    from twin.simulation import simulate_run

    run = prepared(s.facility, s.step_s, s.start, s.load, s.seed, s.gpu_spread, s.calibration)
    ds, summary, final = simulate_run(run, s.hours, record_interval=s.record_s)
    state = final.numpy().physics
    racks = rack_table(run, state, s.hours)
    return FleetRun(s, ds, summary, run, state, racks)


def site_frame(ds: xr.Dataset) -> pd.DataFrame:
    """Long table (time, site, variable columns) of the site-level records, SI units."""
    names = [v for v in ds.data_vars if ds[v].dims == ("time", "site")]
    df = ds[names].to_dataframe().reset_index()
    df["site_name"] = df["site"].map(dict(zip(ds.site.values, ds.site_name.values, strict=True)))
    df["cooling_power"] = df.pump_power + df.fan_power + df.chiller_power
    return df


def latest(ds: xr.Dataset, site: str) -> dict[str, float]:
    """Values of the last record of ``site`` (SI, temperatures in degC)."""
    last = ds.isel(time=-1).sel(site=site)
    return {v: float(last[v]) for v in ds.data_vars if ds[v].dims == ("time", "site")}


# ------------------------------------------------------------------------------ racks
def rack_layout(params) -> pd.DataFrame:
    """Where each rack stands: site, building (in its site), floor, row (on its floor), slot."""
    rack_cdu = np.asarray(params.rack_cdu)
    cdu_bld = np.asarray(params.cdu_building)
    cdu_floor = np.asarray(params.cdu_floor)
    bld_site = np.asarray(params.building_site)
    r = rack_cdu.size
    first_rack = np.searchsorted(rack_cdu, np.arange(params.n_cdus))  # racks ordered by row
    slot = np.arange(r) - first_rack[rack_cdu]
    # row number of each CDU within (building, floor), in CDU order
    row_of_cdu = np.zeros(params.n_cdus, dtype=int)
    counter: dict[tuple[int, int], int] = {}
    for c in range(params.n_cdus):
        key = (int(cdu_bld[c]), int(cdu_floor[c]))
        row_of_cdu[c] = counter.get(key, 0)
        counter[key] = row_of_cdu[c] + 1
    first_bld = np.searchsorted(bld_site, np.arange(params.n_sites))
    bld = cdu_bld[rack_cdu]
    site = bld_site[bld]
    return pd.DataFrame(
        {
            "rack": np.arange(r),
            "site_index": site,
            "building_index": bld,
            "building": bld - first_bld[site] + 1,
            "floor": cdu_floor[rack_cdu] + 1,
            "row": row_of_cdu[rack_cdu] + 1,
            "slot": slot + 1,
            "cdu": rack_cdu,
        }
    )


def rack_table(run, state, hours: float) -> pd.DataFrame:
    """One row per rack: layout, GPU temperatures at the end of the run (dynamic twin), IT power
    and coolant temperatures of the twin's steady state for the rack's load at the last hour
    (:func:`twin.placement.rack_steady`)."""
    from twin.placement import rack_steady

    p = run.params
    out = rack_layout(p)
    names = {i: s.key for i, s in enumerate(run.spec.sites)}
    out.insert(1, "site", out.site_index.map(names))
    r = p.n_racks
    temps = np.asarray(state.gpu_temp).reshape(r, -1) - ZERO_CELSIUS_K
    out["gpu_max_c"] = temps.max(axis=1)
    out["gpu_mean_c"] = temps.mean(axis=1)
    out["inlet_c"] = np.asarray(state.tcs_supply)[np.asarray(p.rack_cdu)] - ZERO_CELSIUS_K
    steady = rack_steady(run, run.hour0 + hours)
    out["power_kw"] = steady.it_power / 1e3
    out["steady_inlet_c"] = steady.inlet - ZERO_CELSIUS_K
    out["return_c"] = steady.outlet - ZERO_CELSIUS_K
    out["utilization"] = steady.utilization
    return out


#: Colourings of the floor plan: column of :func:`rack_table`, label, unit.
RACK_METRICS = {
    "GPU temperature (hottest)": ("gpu_max_c", "degC"),
    "Rack IT power": ("power_kw", "kW"),
    "Coolant return": ("return_c", "degC"),
}


def rack_gpus(run, state, rack: int) -> pd.DataFrame:
    """GPU die temperatures of one rack at the end of the run: tray, slot (path x series)."""
    t = np.asarray(state.gpu_temp)[rack] - ZERO_CELSIUS_K  # (trays, paths, series)
    trays, paths, series = t.shape
    tray, path, ser = np.meshgrid(
        np.arange(trays), np.arange(paths), np.arange(series), indexing="ij"
    )
    return pd.DataFrame(
        {
            "tray": tray.ravel() + 1,
            "gpu": (path * series + ser).ravel() + 1,
            "temperature_c": t.ravel(),
        }
    )


def cdu_loop(run, state, cdu: int) -> dict[str, float]:
    """The row's coolant loop (CDU) at the end of the run, and its building's facility water
    (:func:`twin.simulation.loop_conditions`), in degC, L/s and kW."""
    from twin.simulation import loop_conditions

    loop = loop_conditions(run, state)
    return {
        "tcs_supply_c": float(loop.tcs_supply[cdu]) - ZERO_CELSIUS_K,
        "tcs_supply_setpoint_c": float(loop.tcs_supply_setpoint[cdu]) - ZERO_CELSIUS_K,
        "tcs_return_c": float(loop.tcs_return[cdu]) - ZERO_CELSIUS_K,
        "tcs_flow_l_s": float(loop.tcs_flow[cdu]) * 1e3,
        "tcs_pump_power_kw": float(loop.tcs_pump_power[cdu]) / 1e3,
        "fws_supply_c": float(loop.fws_supply[cdu]) - ZERO_CELSIUS_K,
        "fws_supply_setpoint_c": float(loop.fws_supply_setpoint[cdu]) - ZERO_CELSIUS_K,
        "fws_return_c": float(loop.fws_return[cdu]) - ZERO_CELSIUS_K,
        "racks": int(loop.racks[cdu]),
    }


# ------------------------------------------------------------------------------ placement
def jobs_from_upload(name: str, data: bytes, seed: int = 0):
    """A job file uploaded in the UI (CSV or JSON job format), via :func:`twin.io.jobs.load_jobs`."""
    from twin.io.jobs import load_jobs

    suffix = Path(name).suffix.lower() or ".csv"
    with tempfile.TemporaryDirectory(prefix="twin-dash-") as tmp:
        path = Path(tmp) / f"jobs{suffix}"
        path.write_bytes(data)
        try:
            jobs = load_jobs(path, seed=seed)
        except InputError as exc:  # name the uploaded file, not the temporary copy
            raise SpecError(
                str(exc.path).replace(str(path), name), exc.value, exc.expected
            ) from None
    jobs.meta["source"] = name
    return jobs


def jobs_from_path(path: str, facility_gpus: int, hours: float):
    """A job file on the dashboard's machine (:func:`twin.io.jobs.load_jobs`) and the SHA-1 of
    its bytes (what identifies it in the replay's cache key)."""
    import hashlib

    from twin.io.jobs import load_jobs

    try:
        jobs = load_jobs(path, facility_gpus=facility_gpus, hours=hours)
    except InputError as exc:
        raise Access.hide_contents(exc, path) from None
    with open(path, "rb") as fh:
        digest = hashlib.sha1(fh.read()).hexdigest()
    return jobs, digest


def policies() -> tuple[str, ...]:
    """The placement policies :func:`twin.placement.compare` knows."""
    from twin.placement import POLICIES

    return tuple(POLICIES)


def parse_epoch(text: str, step_s: float) -> float:
    """The placement epoch [s] from ``text`` ('15 min'); at least the twin's time step."""
    epoch_s = parse_quantity(text, "epoch", "s")
    if not epoch_s >= step_s:
        raise SpecError("epoch", text, f"at least the twin's time step ({step_s:g} s)")
    return epoch_s


@cache_resource(show_spinner="Drawing jobs from the openb trace statistics ...")
def generated_jobs(gpus: int, hours: float, load: float, seed: int, site_gpus: int):
    """Synthetic jobs (:func:`twin.io.jobs.generate_jobs`)."""
    from twin.io.jobs import generate_jobs

    return generate_jobs(gpus, hours, load, seed=seed, site_gpus=site_gpus)


@cache_resource(show_spinner="Replaying the jobs under each policy on the twin ...", max_entries=8)
def placement_results(
    facility: str,
    step_s: float,
    start: str,
    jobs_key: str,
    _jobs,
    hours: float,
    policies: tuple[str, ...],
    epoch_s: float,
    caps_text: str,
    objective: str,
):
    """:func:`twin.placement.compare` of ``policies`` (``_jobs``: the JobSet, keyed by
    ``jobs_key``); returns (results by policy, comparison table)."""
    from twin import placement

    run = prepared(facility, step_s, start, "", 0)
    caps = placement.parse_caps([c.strip() for c in caps_text.split(",") if c.strip()])
    results = placement.compare(
        run, _jobs, hours, policies, epoch=epoch_s, caps=caps, objective=objective
    )
    return results, comparison_table(results)


def parse_caps_text(caps_text: str) -> dict:
    """'rack=130 kW, row=1.3 MW' -> caps in W (:func:`twin.placement.parse_caps`)."""
    from twin import placement

    return placement.parse_caps([c.strip() for c in caps_text.split(",") if c.strip()])


def comparison_table(results: dict) -> pd.DataFrame:
    """One row per policy: energy, cooling, carbon, PUE, max GPU temperature, jobs, waits and
    idle-rack parking."""
    rows = []
    for name, res in results.items():
        s = res.summary
        rows.append(
            {
                "policy": name,
                "energy_kwh": s["energy_kwh"]["total"],
                "it_kwh": s["energy_kwh"]["it"],
                "cooling_kwh": s["energy_kwh"]["cooling"],
                "carbon_kg": s["carbon_kg"],
                "pue": s["pue"],
                "max_gpu_temperature_c": s["max_gpu_temperature_c"],
                "jobs_started": s["jobs_started"],
                "jobs": s["jobs"],
                "job_wait_mean_s": s["job_wait_mean_s"],
                "job_wait_p95_s": s["job_wait_p95_s"],
                "completed_gpu_hours": s["completed_gpu_hours"],
                "kwh_per_completed_gpu_hour": s["kwh_per_completed_gpu_hour"],
                "parked_rack_hours": s["parked_rack_hours"],
                "violations": s["violations"],
                # saving per completed GPU-hour against the strongest baseline replayed
                "saving_vs_strongest_percent": s["savings_by_mechanism"]
                .get(s.get("strongest_baseline"), {})
                .get("per_completed_gpu_hour_percent"),
            }
        )
    return pd.DataFrame(rows).set_index("policy")


def plan_csv(result) -> bytes:
    """The placement plan of one policy as CSV: one row per job (site, racks:GPUs, start)."""
    plan = result.plan
    cols = ["job_site", "job_racks", "job_gpus", "job_workload", "job_arrival", "job_start"]
    cols += [c for c in ("job_deferred",) if c in plan]
    df = plan[cols].to_dataframe()
    df.columns = [c.removeprefix("job_") for c in df.columns]
    df.insert(0, "policy", result.policy)
    return df.to_csv().encode()


# ------------------------------------------------------------------------------ telemetry
def read_telemetry(source: str) -> xr.Dataset:
    """Telemetry from a store, recorded file or Prometheus URL (:func:`open_telemetry`);
    raises :class:`SpecError` saying what is wrong (missing, empty, unreachable)."""
    from twin.io.telemetry import open_telemetry

    try:
        return open_telemetry(source)
    except InputError as exc:  # a file that is not telemetry: its first line is not shown
        raise Access.hide_contents(exc, source) from None


class SimulatedFleet:
    """The embedded default of the Live page: :class:`twin.io.telemetry.SimulatedTelemetry` read
    in this process at each refresh, the samples kept in a bounded buffer."""

    def __init__(self, n_gpus: int = 8, seed: int = 0, keep: int = 600) -> None:
        from twin.io.telemetry import SimulatedTelemetry

        self.source = SimulatedTelemetry(n_gpus=n_gpus, seed=seed, host="simulated")
        self.keep = keep
        self.frames: list[pd.DataFrame] = []

    def poll(self) -> pd.DataFrame:
        """Read one batch; return every kept sample (time, gpu, fields)."""
        self.frames.append(self.source.read_frame())
        self.frames = self.frames[-self.keep :]
        return pd.concat(self.frames, ignore_index=True)


def telemetry_frame(ds: xr.Dataset, last_s: float | None = None) -> pd.DataFrame:
    """Long table (time, gpu, fields) of a telemetry Dataset, optionally its last seconds."""
    if last_s is not None and ds.sizes.get("time", 0):
        t_end = ds.time.values.max()
        ds = ds.sel(time=slice(t_end - np.timedelta64(int(last_s * 1e9), "ns"), None))
    fields = [v for v in ("temp_gpu", "power_average", "utilization_gpu", "temp_memory") if v in ds]
    return (
        ds[fields]
        .to_dataframe()
        .reset_index()
        .dropna(subset=["temp_gpu", "power_average"], how="all")
    )


def latest_per_gpu(frame: pd.DataFrame) -> pd.DataFrame:
    """The last reading of each GPU (per field, the last non-missing value)."""
    fields = [c for c in frame.columns if c not in ("time", "gpu")]
    return frame.sort_values("time").groupby("gpu")[fields + ["time"]].last()


# ------------------------------------------------------------------------------ formatting
def fmt_power(watts: float) -> str:
    """'151.2 MW', '480.3 kW', '950.0 W': four significant digits."""
    for scale, unit in ((1e9, "GW"), (1e6, "MW"), (1e3, "kW")):
        if abs(watts) >= scale:
            return f"{watts / scale:.4g} {unit}"
    return f"{watts:.4g} W"


def parse_power(text: str) -> float:
    """Inverse of :func:`fmt_power` (for tests and round trips) [W]."""
    return parse_quantity(text, "power", "W")


def read_live(source: str, window_s: float) -> xr.Dataset:
    """The last ``window_s`` seconds of a live source (store being written, Prometheus URL) or a
    recorded file; raises :class:`SpecError` for a missing, empty, foreign or unreachable one
    (never quoting the file)."""
    try:
        return _read_live(source, window_s)
    except InputError as exc:
        raise Access.hide_contents(exc, source) from None


def _read_live(source: str, window_s: float) -> xr.Dataset:
    from twin.io.telemetry import is_store, open_telemetry, store_info

    if source.startswith(("http://", "https://")):
        now = pd.Timestamp.now(tz="UTC")
        start = now - pd.Timedelta(seconds=window_s)
        return open_telemetry(
            source, start=start, end=now, prometheus_step=max(1.0, window_s / 300)
        )
    path = Path(source)
    if path.is_file() and is_store(path):
        info = store_info(source, label="telemetry")
        if not info["samples"]:
            raise SpecError(
                "telemetry",
                source,
                "a store with samples: this one is empty (is `twin sensord` running and "
                "writing to it?)",
            )
        start = pd.Timestamp(info["last"]) - pd.Timedelta(seconds=window_s)
        return open_telemetry(source, start=start.tz_convert(None))
    return open_telemetry(source)


@dataclasses.dataclass
class GpuFit:
    """Telemetry, the twin's per-GPU calibration of it, and the live filter's forecasts."""

    telemetry: xr.Dataset
    result: object  # twin.calibration.CalibrationResult
    source: str
    forecast: pd.DataFrame  # time, gpu, forecast_c, sd_k: each made FORECAST_S earlier
    flags: list[dict]  # twin.estimate.anomalies at the end of the record


#: Forecast horizon of the GPU page [s] and the spacing of its forecast origins [s].
FORECAST_S = 60.0
FORECAST_EVERY_S = 30.0


def rolling_forecast(result, horizon_s: float = FORECAST_S, every_s: float = FORECAST_EVERY_S):
    """:func:`twin.estimate.rolling_forecast` over the record as a long table (time, gpu,
    forecast_c, sd_k: each forecast made ``horizon_s`` before its time), and the anomalies at
    the end of the record."""
    from twin.estimate import rolling_forecast as twin_rolling_forecast

    fc = twin_rolling_forecast(result, horizon_s, every_s)
    rows = [
        (int(t), g, float(fc.temp[k, i]), float(fc.sd[k, i]))
        for k, t in enumerate(fc.time)
        for i, g in enumerate(fc.gpu)
    ]
    frame = pd.DataFrame(rows, columns=["time", "gpu", "forecast_c", "sd_k"])
    frame["time"] = pd.to_datetime(frame.time, unit="ns")
    return frame, fc.flags


@cache_resource(show_spinner="Calibrating every GPU against its telemetry ...", max_entries=4)
def gpu_fit(source: str, facility: str, seconds: float = 900.0, seed: int = 0) -> GpuFit:
    """:func:`twin.calibration.calibrate` on ``source`` or, with none, on the synthetic fleet of
    :func:`twin.io.telemetry.synthetic_fleet` (8 GPUs of the facility's TDP; GPU 5 has a cold
    plate gone bad, 1.8 x its resistance, so that the anomaly flags have something to show)."""
    from twin.calibration import calibrate
    from twin.io.telemetry import synthetic_fleet

    spec = load_spec(facility)
    if source:
        ds = read_telemetry(source)
        label = source
    else:
        tdp = spec.sites[0].building.rack.gpu.tdp
        ds, _truth = synthetic_fleet(8, seconds, seed=seed, tdp=tdp, resistance_step=(5, 0, 1.8))
        label = f"synthetic fleet (sensors.synthetic.simulate_fleet, 8 GPUs, {seconds:g} s)"
    result = calibrate(ds, spec)
    forecast, flags = rolling_forecast(result)
    return GpuFit(ds, result, label, forecast, flags)


#: Columns of :func:`gpu_anomalies`.
ANOMALY_COLUMNS = ("gpu", "excess_k", "z", "at_w", "test", "reason")


def gpu_anomalies(fit: GpuFit) -> pd.DataFrame:
    """GPUs that read hotter than their peers at equal power, indexed by GPU (excess_k, z,
    at_w, test, reason): :func:`twin.calibration.detect_anomalies` on the page's telemetry, the
    detector and the data of ``twin calibrate`` (``params.anomaly``) and of the live filter."""
    from twin.calibration import detect_anomalies

    res = fit.result
    found = detect_anomalies(res.grid, float(res.params.attrs["anomaly_resistance_k_per_w"]))
    rows = [{k: r[k] for k in ANOMALY_COLUMNS} for r in found.records()]
    return pd.DataFrame(rows, columns=list(ANOMALY_COLUMNS)).set_index("gpu")


#: Calibrated parameters shown with their standard error: variable, label, unit, scale.
GPU_PARAMETERS = (
    ("resistance", "resistance_se", "junction → coolant resistance", "K/W", 1.0),
    ("capacitance", "capacitance_se", "heat capacity", "J/K", 1.0),
    ("temp_intercept", "temp_intercept_se", "coolant inlet + sensor offset", "degC", 1.0),
    ("leakage_slope", "leakage_slope_se", "leakage slope dP/dT", "W/K", 1.0),
)


def gpu_parameters(params: xr.Dataset, gpu: str) -> pd.DataFrame:
    """One GPU's calibrated parameters, their standard errors and whether they are identified."""
    p = params.sel(gpu=gpu)
    rows = []
    for var, se, label, unit, scale in GPU_PARAMETERS:
        if var not in p:
            continue
        rows.append(
            {
                "parameter": label,
                "value": float(p[var]) * scale,
                "± (1 s.e.)": float(p[se]) * scale,
                "unit": unit,
            }
        )
    return pd.DataFrame(rows).set_index("parameter")


def gpu_series(fit: GpuFit, gpu: str) -> pd.DataFrame:
    """Measured and predicted die temperature of one GPU on the calibration grid."""
    res = fit.result
    g = res.grid
    i = g.gpu.index(gpu)
    from twin.calibration import Z95

    sd = res.prediction_sd[i]  # parameters (delta method) + reading noise [K]
    t = pd.to_datetime(g.times, unit="ns")
    pred = res.prediction[i]
    return pd.DataFrame(
        {
            "time": t,
            "measured_c": g.temp[i],
            "predicted_c": pred,
            "low_c": pred - Z95 * sd,
            "high_c": pred + Z95 * sd,
            "power_w": g.power[i],
            "training": np.arange(g.n_steps) < res.train_steps,
        }
    )
