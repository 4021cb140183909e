r"""``twin validate``: the facility model's GPUs, calibrated, driven by measured power, scored.

The backtest an operator runs on new data. Each GPU of the telemetry that the calibration file
holds becomes the facility model's GPU package (:mod:`physics.gpu`: die and HBM nodes on one
cold plate, :func:`physics.gpu.package_conductances`, :func:`physics.gpu.package_modes`) with
the calibrated parameters put on the facility's terms exactly as ``twin simulate
--calibration`` puts them (:mod:`twin.model.calibrated`: junction-wall resistance from the
calibrated die-over-inlet resistance and the spec's plate at design flow, die heat capacity,
the spec's HBM node, the sink node and conductance curvature of the fit's slow branch and
:math:`\beta`). It is stepped with the measured package power
(:func:`physics.gpu.package_temperature_step`, exact for power held over each 1 s cell; the HBM
takes its idle power plus its share of the power above idle), from the calibration's inlet
(inlet plus sensor offset, the intercept). The telemetry of ``twin sensord`` carries no coolant
temperature; where it is missing, none is invented.

Scores (ASHRAE Guideline 14 [1]_, :func:`twin.calibration.metrics.ashrae_metrics`): per GPU
RMSE and bias [K], pooled RMSE, CV(RMSE) and NMBE [%], inside and outside the power envelope the
calibration was trained on, and the share of readings inside the 95 % prediction interval. The
interval's s.d. combines the calibration's training residual (reading noise and quantization
included) and the parameters' uncertainty propagated to each reading (the fit's sandwich
covariance by the delta method, :func:`twin.calibration.uncertainty.prediction_sd`). By default only readings after the calibration's training
window are scored.

References
----------
.. [1] ASHRAE Guideline 14-2014, *Measurement of Energy, Demand, and Water Savings*.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from physics import coolant, gpu
from twin.calibration.config import Z95
from twin.calibration.metrics import ashrae_metrics
from twin.calibration.uncertainty import prediction_sd
from twin.io.telemetry import Grid, cuts_report, open_telemetry, to_grid
from twin.model.calibrated import Calibration, load_calibration, package_split
from twin.model.components import (
    die_share_at_tdp,
    gpu_params,
    path_capacity_rate,
    plate_wall_resistance,
)
from twin.model.design import size_site
from twin.spec import FacilitySpec, load_spec
from twin.units import SpecError


def package_parameters(spec: FacilitySpec, cal: Calibration, rows: np.ndarray) -> dict:
    """Each calibrated GPU (``rows`` of ``cal``) as the facility model's package, sink node and
    curvature on the spec's first site (the mapping of :mod:`twin.model.calibrated`, applied to
    the fit of every GPU, identified or not, since its intercept was fitted with it)."""
    site = spec.sites[0]
    g = site.building.rack.gpu
    design = size_site(
        site, coolant.coolant_table(spec.tcs_coolant), coolant.coolant_table(spec.fws_coolant)
    )
    fields = gpu_params(site, design, np.random.default_rng(0), 0.0)
    r_pw = plate_wall_resistance(site, design, fields)
    split = package_split(
        cal.r_fast[rows], cal.r_slow[rows], r_pw, g.resistance_junction_wall,
        die_share_at_tdp(g), path_capacity_rate(site, design),
    )  # fmt: skip
    return {
        "r_jw": split.r_jw,
        "r_pw": split.r_pw,
        "c_d": cal.c_fast[rows],
        "r_hw": g.hbm_resistance,
        "c_h": g.hbm_heat_capacity,
        "r_s": split.r_slow,
        "tau_s": cal.tau_slow[rows],
        "beta": cal.curvature[rows],
        "hbm_idle": g.hbm_idle_power,
        "hbm_share": g.hbm_power_share,
        "idle": g.idle_power,
    }


def _package(pp: dict, h):
    """Conductances and modes of the package with every resistance times ``h``."""
    g = gpu.package_conductances(pp["r_jw"] * h, pp["r_hw"] * h, pp["r_pw"] * h)
    return g, gpu.package_modes(pp["c_d"], pp["c_h"], *g, 0.0)


def _split(pp: dict, p):
    """Measured package power [W] into die and HBM: the HBM takes its idle power plus its
    share of the power above the package's idle."""
    p_hbm = jnp.minimum(p, pp["hbm_idle"] + pp["hbm_share"] * jnp.maximum(p - pp["idle"], 0.0))
    return p - p_hbm, p_hbm


def _steady_start(pp: dict, p0):
    """Die, HBM and sink rise over the inlet at steady state under power ``p0`` (fixed point)."""
    p_d, p_h = _split(pp, p0)
    x_s, die = 0.0 * p0, 0.0 * p0
    for _ in range(8):
        h = gpu.conductance_curvature_factor(die, pp["beta"])
        x_s = pp["r_s"] * h * p0
        (g_d0, g_h0, g_dh), _ = _package(pp, h)
        die, hbm = gpu.package_steady_temperatures(x_s, p_d, p_h, g_d0, g_h0, g_dh, 0.0, 0.0)
    return die, hbm, x_s


def _simulate(pp: dict, power: np.ndarray, dt: float) -> np.ndarray:
    """Die rise over the inlet [K] of each GPU (rows of ``power`` [W]) at each grid time:
    the facility model's GPU (:func:`physics.facility.gpu_step` with ``gpu_sink``) under the
    measured power."""
    p = jnp.asarray(power)
    p_die, p_hbm = _split(pp, p)

    def step(x, ps):
        die, hbm, x_s = x
        pd_, ph_ = ps
        h = gpu.conductance_curvature_factor(die, pp["beta"])
        (g_d0, g_h0, g_dh), modes = _package(pp, h)
        st = gpu.package_steady_temperatures(x_s, pd_, ph_, g_d0, g_h0, g_dh, 0.0, 0.0)
        die1, hbm1 = gpu.package_temperature_step(die, hbm, st[0], st[1], modes, dt)
        heat = pd_ + ph_ - (pp["c_d"] * (die1 - die) + pp["c_h"] * (hbm1 - hbm)) / dt
        x_s = gpu.first_order_rise_step(x_s, heat, pp["r_s"] * h, pp["tau_s"] * h, dt)
        return (die1, hbm1, x_s), die1

    x0 = _steady_start(pp, p[:, 0])
    _, die = jax.lax.scan(step, x0, (p_die[:, 1:].T, p_hbm[:, 1:].T))
    return np.concatenate([np.asarray(x0[0])[:, None], np.asarray(die).T], axis=1)


def backtest(
    telemetry: str | Path | xr.Dataset,
    facility: object,
    calibration: str | Path,
    start: str | None = None,
    end: str | None = None,
) -> dict:
    """Score the calibrated facility model against ``telemetry`` (see the module docstring)."""
    spec = load_spec(facility)
    cal = load_calibration(calibration)  # checks the file, its units
    cal_file = xr.load_dataset(Path(calibration))
    if cal.gpu_model != spec.sites[0].building.rack.gpu.name:
        raise SpecError(
            "--calibration", cal.path,
            f"a calibration of {spec.name}'s GPU model {spec.sites[0].building.rack.gpu.name} "
            f"(it holds {cal.gpu_model})",
        )  # fmt: skip
    ds = telemetry if isinstance(telemetry, xr.Dataset) else open_telemetry(telemetry)
    grid = to_grid(ds, dt=float(cal_file.attrs.get("dt", 1.0)))
    known = {g: i for i, g in enumerate(cal.gpu)}
    rows = [i for i, g in enumerate(grid.gpu) if g in known]
    if not rows:
        where = (
            ds.attrs.get("source", "the telemetry")
            if isinstance(telemetry, xr.Dataset)
            else telemetry
        )
        raise SpecError("--telemetry", str(where), "GPUs that the calibration file holds")
    grid = grid.select(np.array(rows))
    ci = np.array([known[g] for g in grid.gpu])
    power = pd.DataFrame(grid.power.T).ffill().bfill().to_numpy().T
    pp = package_parameters(spec, cal, ci)
    rise = _simulate(pp, power, grid.dt)
    prev = np.concatenate([rise[:, :1], rise[:, :-1]], axis=1)
    icpt = cal.intercept[ci]
    pred = icpt[:, None] + (1.0 - grid.frac) * prev + grid.frac * rise
    scored = _scored(grid, cal_file, start, end)
    param_sd = prediction_sd(
        cal_file["theta"].values[ci], cal_file["theta_cov"].values[ci], power, grid.frac, grid.dt
    )
    return _scores(grid, cal_file, ci, pred, np.nan_to_num(param_sd), scored) | {
        "facility": spec.name,
        "calibration": cal.path,
        "gpus_uncalibrated": len(set(ds["gpu"].values.astype(str)) - set(cal.gpu)),
        "gaps_left_out": cuts_report(grid),
    }


def _scored(grid: Grid, cal: xr.Dataset, start: str | None, end: str | None) -> np.ndarray:
    """Readings to score: a reading, no gap or throttling, inside [start, end] (default: after
    the calibration's training window)."""
    t = grid.times
    lo = pd.Timestamp(start or cal.attrs["train_end"]).tz_localize(None).value
    ok = t > lo if start is None else t >= lo
    if end is not None:
        ok &= t <= pd.Timestamp(end).tz_localize(None).value
    if not ok.any():
        raise SpecError("--start/--end", f"{start}..{end}", "a window with telemetry in it")
    return np.isfinite(grid.temp) & ~grid.gap & ~grid.throttled & ok[None, :]


def _scores(grid, cal, ci, pred, param_sd, scored) -> dict:
    """Per-GPU and pooled scores, inside and outside the trained power envelope."""
    env = cal["power_envelope"].values[ci]
    inside = (grid.power >= env[:, :1]) & (grid.power <= env[:, 1:])
    # the training residual already holds the reading noise and its 1 degC quantization
    sd = np.sqrt(np.nan_to_num(cal["train_rmse"].values[ci])[:, None] ** 2 + param_sd**2)
    err = grid.temp - pred
    gpus = []
    for i, name in enumerate(grid.gpu):
        e, e_in = err[i, scored[i]], err[i, scored[i] & inside[i]]
        gpus.append(
            {
                "gpu": name,
                "rmse_k": _rms(e),
                "bias_k": _r(np.mean(e) if e.size else math.nan),
                "rmse_envelope_k": _rms(e_in),
                "readings": int(e.size),
            }
        )
    pooled = ashrae_metrics(grid.temp[scored], pred[scored])
    cover = np.abs(err[scored]) <= Z95 * sd[scored]
    out = {
        "gpus": gpus,
        "rmse_k": _r(pooled["rmse_k"]),
        "cv_rmse": _r(pooled["cv_rmse"]),
        "nmbe": _r(pooled["nmbe"]),
        "coverage_95": _r(float(cover.mean()) if cover.size else math.nan),
        "readings": int(scored.sum()),
    }
    for key, sel in (("envelope", scored & inside), ("extrapolated", scored & ~inside)):
        m = ashrae_metrics(grid.temp[sel], pred[sel])
        c = np.abs(err[sel]) <= Z95 * sd[sel]
        out[key] = {
            "rmse_k": _r(m["rmse_k"]),
            "cv_rmse": _r(m["cv_rmse"]),
            "nmbe": _r(m["nmbe"]),
            "coverage_95": _r(float(c.mean()) if c.size else math.nan),
            "readings": int(sel.sum()),
        }
    return out


def _rms(e: np.ndarray) -> float | None:
    return _r(float(np.sqrt(np.mean(e**2)))) if e.size else None


def _r(x: float, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


__all__ = ["backtest", "package_parameters"]
