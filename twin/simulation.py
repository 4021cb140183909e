"""Run the facility model over time: boundary data, chunked jitted stepping, progress, results.

``simulate`` returns an :class:`xarray.Dataset` (dims ``time`` and ``site``, units in attrs)
and a summary dict (the ``twin simulate --json`` object); :func:`simulate_run` also the final
state. In the init/step style of jax-md, :func:`init_run` starts a prepared run and
:func:`step_run` advances it by any number of hours, continuing its time and ledger, with the
same compiled step (so a run stepped in pieces ends where one long step ends).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
import xarray as xr

from physics import facility as F
from physics import workload
from twin.io.carbon import load_grid_carbon_csv, typical_carbon_profile
from twin.io.weather import load_climate, load_epw, typical_year
from twin.model import DEFAULT_PRICE_USD_PER_KWH, Boundary, LoadMix, build_params
from twin.model.calibrated import Calibration, calibration_counts
from twin.spec import FacilitySpec
from twin.units import ZERO_CELSIUS_K, SpecError

log = logging.getLogger(__name__)

HOURS_PER_YEAR = 8760


def _to_utc_hourly(values: np.ndarray, tz_offset_hours: float) -> np.ndarray:
    """Reorder a local-standard-time hourly year so index i is UTC hour i of the year."""
    return np.roll(np.asarray(values, dtype=float), int(round(tz_offset_hours)))


def site_weather(site, weather_file: str | None = None) -> xr.Dataset:
    """The site's hourly weather: an EPW file if given (CLI or spec), else its typical year."""
    path = weather_file or site.weather_file
    if path:
        return load_epw(path)
    return typical_year(load_climate(site.climate))


def site_boundary(
    site,
    weather_file: str | None = None,
    carbon_file: str | None = None,
    price_usd_per_kwh: float = DEFAULT_PRICE_USD_PER_KWH,
) -> Boundary:
    """Hourly boundary arrays of one site, in UTC hour-of-year order."""
    w = site_weather(site, weather_file)
    tz = site.timezone_offset_hours
    t_air = _to_utc_hourly(w["temp_air"].values, tz)[:HOURS_PER_YEAR] + ZERO_CELSIUS_K
    t_wb = _to_utc_hourly(w["temp_wet_bulb"].values, tz)[:HOURS_PER_YEAR] + ZERO_CELSIUS_K
    cpath = carbon_file or site.carbon_file
    if cpath:
        ci = load_grid_carbon_csv(cpath).values.astype(float)
    elif site.grid:
        ci = typical_carbon_profile(site.grid).values.astype(float)
    else:
        ci = np.zeros(HOURS_PER_YEAR)
    if ci.size < HOURS_PER_YEAR:
        raise SpecError(
            f"sites.{site.key}.carbon_file",
            cpath,
            f"an hourly series of at least {HOURS_PER_YEAR} hours (got {ci.size})",
        )
    return Boundary(
        temp_air=t_air,
        temp_wet_bulb=t_wb,
        carbon_intensity=ci[:HOURS_PER_YEAR],
        price=np.full(HOURS_PER_YEAR, price_usd_per_kwh),
    )


def parse_start(start: str | None) -> tuple[pd.Timestamp, float]:
    """Start time (UTC) and its hour of the year."""
    try:
        ts = pd.Timestamp(start or "2023-01-01T00:00Z")
    except (ValueError, TypeError) as exc:
        raise SpecError("--start", start, "an ISO 8601 time such as 2023-07-15T12:00Z") from exc
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    hour0 = (ts - pd.Timestamp(year=ts.year, month=1, day=1, tz="UTC")).total_seconds() / 3600
    return ts, hour0 % HOURS_PER_YEAR


@dataclass
class Run:
    """A prepared model: parameters, derived flows and the stepping function."""

    spec: FacilitySpec
    params: F.FacilityParams
    derived: F.Derived
    dt: float
    hour0: float
    start: pd.Timestamp
    n_sub: int
    #: where the GPUs' parameters came from (:func:`twin.model.calibrated.calibration_counts`
    #: and the file), or None: the spec's
    calibration: dict | None = None


def prepare(
    spec: FacilitySpec,
    step: float = 1.0,
    start: str | None = None,
    load: LoadMix | None = None,
    weather: dict[str, str] | None = None,
    carbon: dict[str, str] | None = None,
    seed: int = 0,
    gpu_spread: float = 0.0,
    calibration: Calibration | None = None,
    **overrides,
) -> Run:
    """Build boundary data and parameters for ``spec`` (``weather``/``carbon``: site → path);
    ``calibration`` (:func:`twin.model.calibrated.load_calibration`) sets the GPUs' parameters."""
    if not (math.isfinite(step) and 0.01 <= step <= 3600):
        raise SpecError("--step", step, "a step between 0.01 s and 3600 s")
    weather = weather or {}
    carbon = carbon or {}
    keys = {s.key for s in spec.sites}
    for name, given in (("--weather", weather), ("--carbon", carbon)):
        for k in given:
            if k not in keys:
                raise SpecError(name, k, f"a site of {spec.name}: {', '.join(sorted(keys))}")
    ts, hour0 = parse_start(start)
    boundary = {s.key: site_boundary(s, weather.get(s.key), carbon.get(s.key)) for s in spec.sites}
    params = build_params(
        spec, boundary, load, seed=seed, gpu_spread=gpu_spread, calibration=calibration,
        **overrides,
    )  # fmt: skip
    derived = derive(params)
    n_sub = F.substeps(params, derived, step)
    used = None
    if calibration is not None:
        used = {"file": calibration.path, "gpu_model": calibration.gpu_model}
        used |= calibration_counts(spec, calibration)
    return Run(spec, params, derived, step, hour0, ts, n_sub, used)


#: :func:`physics.facility.derive` as one compiled program: read back from the persistent
#: compilation cache (twin.jaxcache) in a fraction of the second it takes op by op.
derive = jax.jit(F.derive)

#: :func:`physics.facility.run_records` compiled once per process and shape; shared by the
#: simulation and the placement replay (static: dt, hour0, records, steps per record, substeps).
run_records = jax.jit(F.run_records, static_argnums=(4, 5, 6, 7, 8))


def _divisor_at_most(n: int, target: int) -> int:
    for k in range(min(n, max(1, target)), 0, -1):
        if n % k == 0:
            return k
    return 1


def _check_hours(hours: float) -> None:
    if not (math.isfinite(hours) and hours > 0):
        raise SpecError("--hours", hours, "a positive number of hours (fractions allowed)")


class SimState(NamedTuple):
    """Where a run stands (jax-md style: :func:`init_run` makes it, :func:`step_run` advances it).

    ``physics`` is the model state (its ``t`` is the time reached since the run's start [s]),
    ``ledger`` the per-site streaming sums since the start, ``steps`` the steps taken.
    """

    physics: F.State
    ledger: F.Ledger
    steps: int

    @property
    def seconds(self) -> float:
        """Simulated time reached since the run's start [s]."""
        return float(self.physics.t)

    def numpy(self) -> SimState:
        """The same state with every array copied to host NumPy."""
        return jax.tree.map(np.asarray, self)


@dataclass(frozen=True)
class StepPlan:
    """How :func:`step_run` covers ``hours``: steps, steps per record, records per compiled call.

    Records per call (``chunk``) divide the records, so one compiled function serves the whole
    run; host chunks keep progress visible on long runs and memory flat.
    """

    steps: int
    steps_per_record: int
    chunk: int

    @property
    def records(self) -> int:
        return self.steps // self.steps_per_record


def plan_steps(run: Run, hours: float, record_interval: float = 60.0) -> StepPlan:
    """The :class:`StepPlan` of ``hours`` at ``run.dt``, one record per ``record_interval`` s
    (rounded to a divisor of the step count)."""
    _check_hours(hours)
    n_steps = max(1, int(round(hours * 3600.0 / run.dt)))
    spr = _divisor_at_most(n_steps, int(round(record_interval / run.dt)))
    gpus = int(np.prod(run.params.gpu_shape))
    target_chunk_steps = max(spr, int(2e8 / max(gpus, 1)))
    chunk = _divisor_at_most(n_steps // spr, max(1, target_chunk_steps // spr))
    return StepPlan(n_steps, spr, chunk)


def init_run(run: Run) -> SimState:
    """The state at the start of ``run``: initial temperatures, an empty ledger, no step."""
    p = run.params
    return SimState(F.initial_state(p, run.derived), F.empty_ledger(p.n_sites), 0)


def step_run(
    run: Run,
    state: SimState,
    hours: float,
    record_interval: float = 60.0,
    progress: Callable[[float, float], None] | None = None,
) -> tuple[SimState, F.StepOutput]:
    """Advance ``state`` by ``hours`` (:func:`plan_steps`); returns the new state and the site
    records (NumPy ``(records, sites)`` per field: means over each record, max for the hottest
    GPU). ``progress(fraction, elapsed_s)`` is called after each compiled chunk.

    Steps continue from ``state`` (its time, its ledger), so runs may be stepped in pieces.
    """
    plan = plan_steps(run, hours, record_interval)
    p, d, dt = run.params, run.derived, run.dt
    phys, ledger = state.physics, state.ledger
    records = []
    t0 = time.perf_counter()
    done = 0
    while done < plan.records:
        phys, ledger, rec = run_records(
            p, d, phys, ledger, dt, run.hour0, plan.chunk, plan.steps_per_record, run.n_sub
        )
        jax.block_until_ready(phys.gpu_temp)
        records.append(jax.tree.map(np.asarray, rec))
        done += plan.chunk
        if progress:
            progress(done / plan.records, time.perf_counter() - t0)
    out = F.StepOutput(*[np.concatenate(x) for x in zip(*records, strict=True)])
    return SimState(phys, ledger, state.steps + plan.steps), out


class SimResult(NamedTuple):
    """What :func:`simulate_run` gives: the Dataset, the summary and the final state."""

    ds: xr.Dataset
    summary: dict
    state: SimState


def simulate_run(
    run: Run,
    hours: float,
    record_interval: float = 60.0,
    progress: Callable[[float, float], None] | None = None,
) -> SimResult:
    """Step a prepared ``run`` from its start for ``hours`` (:func:`init_run`,
    :func:`step_run`); returns the Dataset, summary and final :class:`SimState`."""
    plan = plan_steps(run, hours, record_interval)
    p, d, dt = run.params, run.derived, run.dt
    state = init_run(run)
    e0 = F.stored_heat(p, d, state.physics, dt)
    first: list[float] = []

    def chunk_done(frac: float, elapsed: float) -> None:
        if not first:
            first.append(time.perf_counter())
        if progress:
            progress(frac, elapsed)

    t_wall = time.perf_counter()
    state, rec = step_run(run, state, hours, record_interval, chunk_done)
    wall = time.perf_counter() - t_wall
    # Throughput excludes the first chunk (compilation) when there is more than one.
    n_steps, spr = plan.steps, plan.steps_per_record
    several = plan.records > plan.chunk
    steady = (time.perf_counter() - first[0]) if several else wall
    steady_steps = (plan.records - plan.chunk) * spr if several else n_steps
    e1 = F.stored_heat(p, d, state.physics, dt)
    ds = _dataset(run, rec, spr, state.physics)
    gpus = int(np.prod(p.gpu_shape))
    summary = _summary(run, state.ledger, e0, e1, n_steps, wall, gpus * steady_steps / steady)
    if run.calibration is not None:
        summary["calibration"] = run.calibration
    ds.attrs["summary_json"] = json.dumps(summary)
    return SimResult(ds, summary, state)


def simulate(
    spec: FacilitySpec,
    hours: float,
    step: float = 1.0,
    start: str | None = None,
    load: LoadMix | None = None,
    weather: dict[str, str] | None = None,
    carbon: dict[str, str] | None = None,
    record_interval: float = 60.0,
    seed: int = 0,
    progress: Callable[[float, float], None] | None = None,
    run: Run | None = None,
) -> tuple[xr.Dataset, dict]:
    """Step ``spec`` for ``hours`` at ``step`` seconds; returns (Dataset, summary).

    Memory stays flat in simulated time: the model state is fixed-size, energies are streaming
    sums, and only one site-level record per ``record_interval`` is kept. The final state too:
    :func:`simulate_run` on ``prepare(...)``.
    """
    _check_hours(hours)
    run = run or prepare(spec, step, start, load, weather, carbon, seed)
    ds, summary, _state = simulate_run(run, hours, record_interval, progress)
    return ds, summary


def rack_utilization(params: F.FacilityParams, hour: float) -> tuple[np.ndarray, np.ndarray]:
    """Each rack's time-mean and high-phase utilization at UTC hour-of-year ``hour``: the
    workload schedule of :func:`physics.facility.step` (square wave between ``load_low`` and
    ``load_high`` at ``load_duty``, times :func:`physics.workload.diurnal_factor`)."""
    diurnal = np.asarray(
        workload.diurnal_factor(
            np.asarray(params.load_diurnal_amplitude),
            np.asarray(params.load_diurnal_peak_hour),
            hour,
        )
    )
    low, high = np.asarray(params.load_low), np.asarray(params.load_high)
    return (low + (high - low) * np.asarray(params.load_duty)) * diurnal, high * diurnal


def cdu_flow(params: F.FacilityParams, derived: F.Derived) -> np.ndarray:
    """Volumetric coolant flow of each CDU's TCS loop (N,) [m^3/s]: its capacity rate over the
    coolant's volumetric heat capacity (rho c_p)."""
    rho_cp = np.asarray(params.tcs_density) * np.asarray(params.tcs_specific_heat)
    return np.asarray(derived.cdu_capacity_rate) / rho_cp


class LoopConditions(NamedTuple):
    """Each CDU's coolant loop and its building's facility water, per CDU (N,) (NumPy)."""

    tcs_supply: np.ndarray  # CDU outlet to the racks [K]
    tcs_supply_setpoint: np.ndarray  # [K]
    tcs_return: np.ndarray  # return from the racks, the last TCS tank [K]
    tcs_flow: np.ndarray  # [m^3/s] (:func:`cdu_flow`)
    tcs_pump_power: np.ndarray  # [W]
    fws_supply: np.ndarray  # the building's FWS supply, its last supply tank [K]
    fws_supply_setpoint: np.ndarray  # [K]
    fws_return: np.ndarray  # the building's FWS return, its first return tank [K]
    racks: np.ndarray  # racks on the CDU's loop


def loop_conditions(run: Run, state: F.State) -> LoopConditions:
    """The coolant loops of ``run`` in the physics ``state`` (e.g. ``simulate_run``'s final
    state), one entry per CDU; the facility-water values are those of the CDU's building."""
    p, d = run.params, run.derived
    b = np.asarray(p.cdu_building)
    return LoopConditions(
        np.asarray(state.tcs_supply),
        np.asarray(p.tcs_supply_setpoint),
        np.asarray(state.tcs_tanks)[:, -1],
        cdu_flow(p, d),
        np.asarray(d.tcs_pump_power),
        np.asarray(state.fws_supply_tanks)[b, -1],
        np.asarray(p.fws_supply_setpoint)[b],
        np.asarray(state.fws_return_tanks)[b, 0],
        np.bincount(np.asarray(p.rack_cdu), minlength=p.n_cdus),
    )


def _dataset(run: Run, rec: F.StepOutput, spr: int, state: F.State) -> xr.Dataset:
    n = rec.it_power.shape[0]
    times = run.start + pd.to_timedelta((np.arange(n) + 0.5) * spr * run.dt, unit="s")
    sites = [s.key for s in run.spec.sites]
    dims = ("time", "site")

    def var(x, units, long_name, offset=0.0):
        return xr.Variable(dims, np.asarray(x) + offset, {"units": units, "long_name": long_name})

    ds = xr.Dataset(
        {
            "it_power": var(rec.it_power, "W", "IT power (GPUs and other rack IT)"),
            "pump_power": var(rec.pump_power, "W", "TCS and FWS pump electric power"),
            "fan_power": var(rec.fan_power, "W", "dry-cooler and air-path fan power"),
            "chiller_power": var(rec.chiller_power, "W", "trim chiller electric power"),
            "heat_rejected": var(rec.heat_rejected, "W", "heat rejected to ambient"),
            "water_rate": var(rec.water_rate, "kg/s", "adiabatic water evaporated"),
            "max_gpu_temperature": var(
                rec.max_gpu_temp, "degC", "hottest GPU die", -ZERO_CELSIUS_K
            ),
            "mean_gpu_temperature": var(rec.mean_gpu_temp, "degC", "mean GPU die", -ZERO_CELSIUS_K),
            "fws_supply_temperature": var(
                rec.fws_supply_temp, "degC", "facility water supply at the CDUs", -ZERO_CELSIUS_K
            ),
            "temp_air": var(rec.temp_air, "degC", "outdoor dry-bulb", -ZERO_CELSIUS_K),
            "carbon_intensity": var(
                np.asarray(rec.carbon_intensity) * 3.6e9, "g/kWh", "grid carbon intensity"
            ),
        },
        coords={
            "time": times.tz_convert(None),
            "site": sites,
            "site_name": ("site", [s.name for s in run.spec.sites]),
        },
        attrs={
            "facility": run.spec.name,
            "step_seconds": run.dt,
            "record_seconds": spr * run.dt,
            "temperature_convention": "degC in files, K inside",
        },
    )
    r = run.params.n_racks
    rack_max = np.asarray(state.gpu_temp).reshape(r, -1).max(axis=1) - ZERO_CELSIUS_K
    ds["final_rack_max_gpu_temperature"] = xr.Variable(
        ("rack",), rack_max, {"units": "degC", "long_name": "hottest GPU per rack at the end"}
    )
    ds["rack_cdu"] = xr.Variable(("rack",), np.asarray(run.params.rack_cdu))
    pue = (ds.it_power + ds.pump_power + ds.fan_power + ds.chiller_power) / ds.it_power
    ds["pue_mechanical"] = pue.assign_attrs(units="1", long_name="(IT + mechanical) / IT")
    return ds


def _summary(run: Run, led: F.Ledger, e0, e1, n_steps: int, wall: float, rate: float) -> dict:
    led = jax.tree.map(np.asarray, led)
    e0, e1 = np.asarray(e0), np.asarray(e1)
    kwh = 3.6e6

    def block(i):
        sl = slice(None) if i is None else i
        s = (lambda x: float(np.sum(x[sl]))) if i is None else (lambda x: float(x[sl]))
        it = s(led.it_energy)
        total = (
            it
            + s(led.pump_energy)
            + s(led.fan_energy)
            + s(led.chiller_energy)
            + s(led.electrical_loss_energy)
        )
        heat_in = s(led.heat_in)
        imbalance = heat_in - s(led.heat_rejected) - (s(e1) - s(e0))
        gpus = run.spec.gpus if i is None else run.spec.sites[i].gpus
        tmax = np.max(led.max_gpu_temp) if i is None else led.max_gpu_temp[i]
        hmax = np.max(led.max_hbm_temp) if i is None else led.max_hbm_temp[i]
        return {
            "gpus": gpus,
            "steps": n_steps,
            "step_seconds": run.dt,
            "wall_seconds": wall,
            "gpu_steps_per_second": rate * (1.0 if i is None else gpus / run.spec.gpus),
            "it_energy_kwh": it / kwh,
            "pump_energy_kwh": s(led.pump_energy) / kwh,
            "fan_energy_kwh": s(led.fan_energy) / kwh,
            "chiller_energy_kwh": s(led.chiller_energy) / kwh,
            # heat each plant component moved: COP = chiller_heat_kwh / chiller_energy_kwh
            "chiller_heat_kwh": s(led.chiller_heat) / kwh,
            "chiller_condenser_heat_kwh": s(led.chiller_condenser_heat) / kwh,
            "drycooler_heat_kwh": s(led.drycooler_heat) / kwh,
            "electrical_loss_energy_kwh": s(led.electrical_loss_energy) / kwh,
            "total_energy_kwh": total / kwh,
            "water_liters": s(led.water_mass),  # 1 kg of water ~ 1 L
            "carbon_kg": s(led.carbon_mass),
            "cost_usd": s(led.cost),
            "pue": total / it,
            "max_gpu_temperature_c": float(tmax) - ZERO_CELSIUS_K,
            "max_hbm_temperature_c": float(hmax) - ZERO_CELSIUS_K,
            "throttle_gpu_minutes": s(led.throttle_gpu_seconds) / 60.0,
            "gpu_leakage_energy_kwh": s(led.leakage_energy) / kwh,
            "slowdown_gpu_hours": s(led.slowdown_gpu_seconds) / 3600.0,
            "work_lost_gpu_hours": s(led.work_lost_gpu_seconds) / 3600.0,
            "chiller_hours": s(led.chiller_seconds) / 3600.0,
            "energy_balance_relative_error": abs(imbalance) / heat_in,
        }

    out = {
        "facility": run.spec.name,
        "start": run.start.isoformat(),
        "hours": n_steps * run.dt / 3600.0,
    }
    out.update(block(None))
    out["sites"] = {s.key: block(i) for i, s in enumerate(run.spec.sites)}
    return out


def progress_printer(label: str = "simulate") -> Callable[[float, float], None]:
    """A stderr progress display: a bar on a terminal, a line per 10 % otherwise."""
    tty = sys.stderr.isatty()
    state = {"last": -1}

    def show(frac: float, elapsed: float) -> None:
        pct = int(frac * 100)
        eta = elapsed / frac * (1 - frac) if frac > 0 else float("nan")
        if tty:
            bar = "#" * (pct // 4)
            print(
                f"\r{label} [{bar:<25}] {pct:3d}%  {elapsed:6.1f}s elapsed, ~{eta:5.1f}s left",
                end="" if frac < 1 else "\n",
                file=sys.stderr,
                flush=True,
            )
        elif pct // 10 > state["last"]:
            state["last"] = pct // 10
            print(
                f"{label}: {pct}% ({elapsed:.1f} s elapsed, ~{eta:.1f} s left)",
                file=sys.stderr,
                flush=True,
            )

    return show


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to netCDF (units in attributes), creating the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


__all__ = [
    "simulate",
    "simulate_run",
    "init_run",
    "step_run",
    "plan_steps",
    "rack_utilization",
    "SimState",
    "SimResult",
    "StepPlan",
    "Run",
    "prepare",
    "site_boundary",
    "site_weather",
    "parse_start",
    "write_netcdf",
    "progress_printer",
]
