"""The calibration result: one xarray Dataset, its JSON summary, the netCDF file.

:func:`build_dataset` lays out every reported quantity once, as Dataset variables with units
and long names (per GPU, per loop, and pooled over the fleet) and attributes.  The JSON summary
(:func:`summarize`) is read off that Dataset.  The netCDF file (:meth:`CalibrationResult.write`,
read back by :func:`load_params` for ``twin watch``) holds the per-GPU and per-loop part; the
fleet-pooled metrics (dimensions ``pool`` and ``structure``, attributes in
:data:`SUMMARY_ONLY_ATTRS`) stay in the summary.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from twin.calibration.anomaly import TESTS, PeerAnomalies, detect_anomalies
from twin.calibration.config import PARAMS, CalibrationConfig, Priors
from twin.calibration.identify import (
    Identifiability,
    Physical,
    identifiability,
    physical_parameters,
)
from twin.calibration.leakage import Leakage
from twin.calibration.peers import Peers, compare_peers, flow_share
from twin.calibration.validation import POOLS, Validation, validate
from twin.io.telemetry import Grid
from twin.units import SpecError

#: Dimensions of the fleet-level summaries, and attributes, that are not written to the file.
SUMMARY_ONLY_DIMS: tuple[str, ...] = ("pool", "structure")
SUMMARY_ONLY_ATTRS: tuple[str, ...] = ("steps", "holdout_coverage_95", "extrapolation")


@dataclasses.dataclass(frozen=True)
class Fit:
    """What :func:`twin.calibration.calibrate` fitted (arrays over ``gpu``), before reporting."""

    grid: Grid
    n_train: int  # training steps (the first of the record)
    valid: np.ndarray  # (gpu, step) a usable reading: not in a gap, not throttled
    w_train: np.ndarray  # (gpu, n_train) 1.0 where a training reading is fitted
    theta: np.ndarray  # (gpu, NP) parameters, branches ordered (fast first)
    mask: np.ndarray  # (gpu, NP) active parameters of the chosen structure
    cov: np.ndarray  # (gpu, NP, NP) sandwich covariance (zeros for inactive)
    model: list[str]  # chosen structure of each GPU
    structures: tuple[str, ...]  # structures tried
    resid_var: np.ndarray  # training residual variance [K^2]
    acf: np.ndarray  # (gpu, 3) residual autocorrelation at 1, 10, 60 steps
    inflation: np.ndarray  # sandwich / Gauss-Newton variance of ln R_f
    prediction: np.ndarray  # (gpu, step) predicted readings [degC]
    prediction_sd: np.ndarray  # (gpu, step) their s.d., reading noise included [K]
    leakage: Leakage
    hbm_theta: np.ndarray | None  # (gpu, NP) the M1 fit to HBM temperature, where measured


@dataclasses.dataclass
class CalibrationResult:
    """Fitted parameters (:attr:`params`), predictions and the summary of :func:`calibrate`."""

    params: xr.Dataset
    summary: dict
    grid: Grid
    prediction: np.ndarray  # (gpu, step) predicted readings [degC]
    prediction_sd: np.ndarray  # (gpu, step) s.d. of a reading's prediction [K], noise included
    train_steps: int
    theta: np.ndarray  # (gpu, NP)
    covariance: np.ndarray  # (gpu, NP, NP) in parameter space (zeros for inactive)

    def to_json(self) -> dict:
        """The JSON summary (:func:`summarize` of :attr:`params`)."""
        return self.summary

    def write(self, path: str | Path) -> Path:
        """Write :attr:`params` to netCDF, less the summary-only fleet metrics."""
        path = Path(path)
        if path.suffix.lower() not in (".nc", ".nc4", ".netcdf"):
            raise SpecError("--out", str(path), "a file ending in .nc (netCDF)")
        file_dataset(self.params).to_netcdf(path)
        return path


def file_dataset(ds: xr.Dataset) -> xr.Dataset:
    """The part of a calibration Dataset that its netCDF file holds."""
    out = ds.drop_dims([d for d in SUMMARY_ONLY_DIMS if d in ds.dims])
    out.attrs = {k: v for k, v in ds.attrs.items() if k not in SUMMARY_ONLY_ATTRS}
    return out


def build_dataset(fit: Fit, cfg: CalibrationConfig, pri: Priors, facility: str) -> xr.Dataset:
    """Assess ``fit`` (identifiability, peers, hold-out) and lay it out as one Dataset."""
    grid, n_train = fit.grid, fit.n_train
    phys = physical_parameters(fit.theta, fit.mask, fit.cov)
    ident = identifiability(grid, n_train, fit.w_train, phys, cfg)
    peers = compare_peers(grid, n_train, fit.theta[:, 2], phys)
    # anomalies from the readings of the whole record, not from the fit (anomaly.py)
    anomalies = detect_anomalies(grid, pri.resistance, cfg)
    val = validate(
        grid, n_train, fit.prediction, fit.prediction_sd, fit.valid, fit.w_train,
        int(fit.mask.sum()), cfg,
    )  # fmt: skip
    data = _gpu_variables(fit, phys, ident, peers, val, pri)
    data.update(_anomaly_variables(anomalies))
    data.update(_fleet_variables(fit, val))
    hold = val.pooled[POOLS.index("holdout")]
    attrs = {
        "title": "twin calibration",
        "facility": facility,
        "train_fraction": cfg.train_fraction,
        "train_start": str(np.datetime64(int(grid.times[0]), "ns")),
        "train_end": str(np.datetime64(int(grid.times[n_train - 1]), "ns")),
        "dt": cfg.dt,
        "p_ref": peers.p_ref,
        "anomaly_resistance_k_per_w": pri.resistance,
        "holdout_rmse_k": _round_or_nan(hold["rmse_k"]),
        "cv_rmse": _round_or_nan(hold["cv_rmse"]),
        "nmbe": _round_or_nan(hold["nmbe"]),
        "t0_ns": int(grid.t0_ns),
        "steps": int(grid.n_steps),
        "holdout_coverage_95": val.coverage_pooled,
        "extrapolation": val.extrapolation,
    }
    coords = {
        "gpu": ("gpu", np.array(grid.gpu)),
        "host": ("gpu", np.array(grid.host)),
        **_identity_coords(grid),
        "loop": ("loop", np.array(peers.loops)),
        "param": ("param", np.array(PARAMS)),
        "param2": ("param2", np.array(PARAMS)),
        "comparison": ("comparison", np.array(TESTS)),
        "bound": ("bound", np.array(["low", "high"])),
        "lag": ("lag", np.array([1, 10, 60]) * cfg.dt, {"units": "s"}),
        "pool": ("pool", np.array(POOLS)),
        "structure": ("structure", np.array(fit.structures, dtype=str)),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


#: Identity coordinates of the file: telemetry's name → the file's (``index`` would shadow
#: xarray's own meaning, ``name`` a Dataset attribute).
_IDENTITY_NAMES = {"uuid": "uuid", "index": "gpu_index", "name": "gpu_name", "location": "location"}


def _identity_coords(grid: Grid) -> dict[str, tuple]:
    """Each GPU's UUID, index, product name and location label (empty where not given)."""
    n = len(grid.gpu)
    return {
        out: ("gpu", np.array(grid.identity.get(key, [""] * n), dtype=str))
        for key, out in _IDENTITY_NAMES.items()
    }


def _var(x: Any, units: str, long_name: str, dims: tuple[str, ...] = ("gpu",)) -> tuple:
    """A Dataset variable over ``dims`` with its units and long name."""
    return (dims, np.asarray(x), {"units": units, "long_name": long_name})


def _gpu_variables(
    fit: Fit, phys: Physical, ident: Identifiability, peers: Peers, val: Validation, pri: Priors
) -> dict[str, tuple]:
    """The per-GPU (and per-loop) variables, in the file's order."""
    return {
        **_parameter_variables(fit, phys, ident, peers, pri),
        **_validation_variables(val),
        **_diagnostic_variables(fit, ident, peers),
    }


def _parameter_variables(
    fit: Fit, phys: Physical, ident: Identifiability, peers: Peers, pri: Priors
) -> dict[str, tuple]:
    """Fitted parameters (NaN where not identified), peer comparison, leakage, structure."""
    ok_r, ok_c, leak = ident.resistance, ident.capacitance, fit.leakage
    alpha = leak.slope / max(pri.leakage_at_reference, 1e-9)
    return {
        "resistance": _var(
            np.where(ok_r, phys.r_tot, np.nan),
            "K/W",
            "junction to inlet-coolant resistance R_f + R_s",
        ),
        "resistance_se": _var(
            np.where(ok_r, phys.rel_se_r * phys.r_tot, np.nan), "K/W", "standard error"
        ),
        "resistance_fast": _var(np.where(ok_r, phys.r_f, np.nan), "K/W", "fast branch R_f"),
        "capacitance": _var(
            np.where(ok_c, phys.cap, np.nan), "J/K", "die + cold-plate heat capacity C"
        ),
        "capacitance_se": _var(
            np.where(ok_c, phys.rel_se_c * phys.cap, np.nan), "J/K", "standard error"
        ),
        "resistance_slow": _var(
            np.where(phys.slow & ok_r, phys.r_s, np.nan), "K/W", "slow branch R_s"
        ),
        "tau_slow": _var(np.where(ok_r, phys.tau_s, np.nan), "s", "slow branch time constant"),
        "conductance_temp_coeff": _var(
            phys.beta, "1/K", "relative conductance growth per K of rise"
        ),
        "temp_intercept": _var(fit.theta[:, 2], "degC", "inlet temperature plus sensor offset"),
        "temp_intercept_se": _var(phys.se[:, 2], "K", "standard error"),
        "sensor_offset": _var(peers.offset, "K", "intercept minus the loop's median intercept"),
        "apparent_resistance": _var(
            peers.r_app, "K/W", "rise above the loop inlet per watt at p_ref"
        ),
        "flow_share": _var(
            flow_share(peers, phys), "1", "flow share within the loop, from the slow branch"
        ),
        "leakage_slope": _var(
            np.where(leak.ok, leak.slope, np.nan), "W/K", "dP/dT at constant work"
        ),
        "leakage_slope_se": _var(np.where(leak.ok, leak.se, np.nan), "W/K", "standard error"),
        "leakage_coeff": _var(
            np.where(leak.ok, alpha, np.nan), "1/K", "alpha = dP/dT / leakage_at_reference (spec)"
        ),
        "model": _var(np.array(fit.model), "", "model structure chosen by BIC"),
    }


def _validation_variables(val: Validation) -> dict[str, tuple]:
    """Per-GPU hold-out and training errors, coverage, and the trained power envelope."""
    return {
        "holdout_rmse": _var(val.holdout_rmse, "K", "held-out RMSE, predicted from power alone"),
        "train_rmse": _var(val.train_rmse, "K", "training RMSE"),
        "holdout_rmse_envelope": _var(
            val.rmse_envelope, "K", "held-out RMSE at powers inside training's"
        ),
        "holdout_rmse_extrapolated": _var(
            val.rmse_extrapolated, "K", "held-out RMSE at powers outside it"
        ),
        "holdout_extrapolated_fraction": _var(
            val.extrapolated_fraction, "1", "share of held-out readings outside"
        ),
        "holdout_coverage_95": _var(
            val.coverage, "1", "held-out readings inside the 95 % interval"
        ),
        "holdout_prediction_sd": _var(
            val.prediction_sd, "K", "RMS s.d. of the held-out predictions"
        ),
        "power_envelope": _var(val.envelope, "W", "trained power envelope", ("gpu", "bound")),
    }


def _diagnostic_variables(fit: Fit, ident: Identifiability, peers: Peers) -> dict[str, tuple]:
    """Residuals, anomalies, reasons, data coverage, the raw fit, loop inlets, the HBM node."""
    grid, P_tr = fit.grid, fit.grid.power[:, : fit.n_train]
    data = {
        "residual_sd": _var(np.sqrt(fit.resid_var), "K", "training residual standard deviation"),
        "residual_acf": _var(fit.acf, "1", "residual autocorrelation", ("gpu", "lag")),
        "covariance_inflation": _var(
            fit.inflation, "1", "sandwich / Gauss-Newton variance of ln R_f"
        ),
        "identifiable_resistance": _var(ident.resistance, "", ""),
        "identifiable_capacitance": _var(ident.capacitance, "", ""),
        "unidentifiable_reason": _var(
            np.array(["; ".join(r) for r in ident.reasons]).astype(str), "", ""
        ),
        "leakage_reason": _var(np.array(fit.leakage.why).astype(str), "", ""),
        "power_p05": _var(np.percentile(P_tr, 5, axis=1), "W", "5th percentile of training power"),
        "power_p95": _var(
            np.percentile(P_tr, 95, axis=1), "W", "95th percentile of training power"
        ),
        "throttled_seconds": _var(
            grid.throttled.sum(1) * grid.dt, "s", "thermally throttled time (excluded from fit)"
        ),
        "gap_seconds": _var(grid.gap.sum(1) * grid.dt, "s", "time without readings"),
        "theta": _var(fit.theta, "", "fitted parameter vector", ("gpu", "param")),
        "theta_mask": _var(fit.mask, "", "active parameters", ("gpu", "param")),
        "theta_cov": _var(fit.cov, "", "Laplace covariance", ("gpu", "param", "param2")),
        "loop_inlet": _var(
            peers.loop_inlet, "degC", "median intercept of the loop's GPUs", ("loop",)
        ),
    }
    if fit.hbm_theta is not None:
        th_h = fit.hbm_theta
        data["hbm_gain"] = _var(np.exp(th_h[:, 0]), "K/W", "HBM rise per watt of package power")
        data["hbm_tau"] = _var(np.exp(th_h[:, 0] + th_h[:, 1]), "s", "HBM time constant")
        data["hbm_intercept"] = _var(th_h[:, 2], "degC", "HBM inlet plus offset")
    return data


def _anomaly_variables(a: PeerAnomalies) -> dict[str, tuple]:
    """The peer comparison of :func:`twin.calibration.anomaly.detect_anomalies`."""
    excess, z, power = a.decisive()
    by = ("gpu", "comparison")
    return {
        "anomaly": _var(a.anomaly, "", "reads hotter than its peers at equal power"),
        "anomaly_reason": _var(np.array(a.reason, dtype=object).astype(str), "", "why"),
        "peer_excess": _var(excess, "K", "excess over the peers at equal power (decisive test)"),
        "peer_z": _var(z, "1", "robust z-score of that excess"),
        "peer_power": _var(power, "W", "power compared at"),
        "peer_test": _var(np.array(a.test, dtype=object).astype(str), "", "decisive test"),
        "peer_comparison_excess": _var(a.excess, "K", "excess over peers, each test", by),
        "peer_comparison_z": _var(a.z, "1", "robust z-score, each test", by),
        "peer_comparison_power": _var(a.power, "W", "power compared at, each test", by),
        "peer_comparison_windows": _var(a.windows, "1", "windows compared, each test", by),
    }


def _fleet_variables(fit: Fit, val: Validation) -> dict[str, tuple]:
    """Metrics pooled over all GPUs' readings (ASHRAE Guideline 14), and structure counts."""

    def pooled(key: str) -> np.ndarray:
        return np.array([m[key] for m in val.pooled])

    pool = ("pool",)
    return {
        "pooled_rmse": _var(pooled("rmse_k"), "K", "RMSE of the pooled readings", pool),
        "pooled_cv_rmse": _var(pooled("cv_rmse"), "%", "CV(RMSE), ASHRAE Guideline 14", pool),
        "pooled_nmbe": _var(pooled("nmbe"), "%", "NMBE, ASHRAE Guideline 14", pool),
        "pooled_samples": _var(pooled("n").astype(np.int64), "1", "readings pooled", pool),
        "structure_gpus": _var(
            [sum(1 for m in fit.model if m == s) for s in fit.structures],
            "1",
            "GPUs whose chosen model structure this is",
            ("structure",),
        ),
    }


def _round_or_nan(x: float, nd: int = 4) -> float:
    """``x`` rounded to ``nd`` decimals, NaN where it is not finite (a true 0.0 stays 0.0)."""
    return round(float(x), nd) if np.isfinite(x) else float("nan")


def _fmt(x: Any, nd: int = 4) -> float | None:
    """JSON number: ``x`` rounded to ``nd`` decimals, None where missing or not finite."""
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


#: Per-GPU entries of the JSON summary: key, Dataset variable, decimals (None: as is).
GPU_SUMMARY: tuple[tuple[str, str, int | None], ...] = (
    ("gpu", "gpu", None),
    ("host", "host", None),
    ("model", "model", None),
    ("resistance_k_per_w", "resistance", 5),
    ("resistance_se_k_per_w", "resistance_se", 5),
    ("capacitance_j_per_k", "capacitance", 1),
    ("capacitance_se_j_per_k", "capacitance_se", 1),
    ("resistance_slow_k_per_w", "resistance_slow", 5),
    ("tau_slow_s", "tau_slow", 1),
    ("conductance_temp_coeff_per_k", "conductance_temp_coeff", 5),
    ("temp_intercept_c", "temp_intercept", 2),
    ("sensor_offset_k", "sensor_offset", 2),
    ("apparent_resistance_k_per_w", "apparent_resistance", 5),
    ("flow_share", "flow_share", 4),
    ("leakage_slope_w_per_k", "leakage_slope", 3),
    ("hbm_gain_k_per_w", "hbm_gain", 5),
    ("holdout_rmse_k", "holdout_rmse", 3),
    ("train_rmse_k", "train_rmse", 3),
    ("holdout_rmse_envelope_k", "holdout_rmse_envelope", 3),
    ("holdout_rmse_extrapolated_k", "holdout_rmse_extrapolated", 3),
    ("holdout_extrapolated_fraction", "holdout_extrapolated_fraction", 3),
    ("holdout_prediction_sd_k", "holdout_prediction_sd", 3),
    ("holdout_coverage_95", "holdout_coverage_95", 3),
    ("residual_acf_lag1", "residual_acf", 3),  # at the first lag
    ("throttled_seconds", "throttled_seconds", None),
    ("anomaly", "anomaly", None),
    ("anomaly_reason", "anomaly_reason", None),
    ("peer_excess_k", "peer_excess", 2),
    ("peer_z", "peer_z", 2),
    ("peer_power_w", "peer_power", 1),
    ("peer_test", "peer_test", None),
    ("unidentifiable", "unidentifiable_reason", None),
    ("leakage_unidentifiable", "leakage_reason", None),
)


def _json_value(x: np.ndarray, nd: int | None) -> Any:
    """One Dataset element as JSON: rounded number, bool, or text (None for missing/empty)."""
    if x.dtype.kind in "US":
        return str(x) or None
    if x.dtype.kind == "b":
        return bool(x)
    return float(x) if nd is None else _fmt(x, nd)


def _gpu_summaries(ds: xr.Dataset) -> list[dict]:
    """One JSON object per GPU (:data:`GPU_SUMMARY`); a variable not in ``ds`` gives None."""
    columns = {}
    for key, var, _ in GPU_SUMMARY:
        x = ds[var].values if var in ds else None
        columns[key] = x[:, 0] if x is not None and x.ndim == 2 else x  # residual_acf: lag 1
    return [
        {
            key: None if columns[key] is None else _json_value(columns[key][i], nd)
            for key, _, nd in GPU_SUMMARY
        }
        for i in range(ds.sizes["gpu"])
    ]


def summarize(ds: xr.Dataset) -> dict:
    """The JSON summary of a calibration Dataset built by :func:`build_dataset`."""

    def pooled(var: str, pool: str) -> float | None:
        return _fmt(ds[var].sel(pool=pool).item(), 4)

    def samples(pool: str) -> int:
        return int(ds["pooled_samples"].sel(pool=pool).item())

    gpus = _gpu_summaries(ds)
    summary = {
        "facility": ds.attrs["facility"],
        "gpus": gpus,
        "n_gpus": int(ds.sizes["gpu"]),
        "train_fraction": ds.attrs["train_fraction"],
        "steps": ds.attrs["steps"],
        "dt_s": ds.attrs["dt"],
        "holdout_rmse_k": _fmt(ds.attrs["holdout_rmse_k"], 4),
        "cv_rmse": _fmt(ds.attrs["cv_rmse"], 4),
        "nmbe": _fmt(ds.attrs["nmbe"], 4),
        "holdout_samples": samples("holdout"),
        "holdout_rmse_envelope_k": pooled("pooled_rmse", "envelope"),
        "cv_rmse_envelope": pooled("pooled_cv_rmse", "envelope"),
        "nmbe_envelope": pooled("pooled_nmbe", "envelope"),
        "holdout_rmse_extrapolated_k": pooled("pooled_rmse", "extrapolated"),
        "holdout_extrapolated_samples": samples("extrapolated"),
        "holdout_coverage_95": _fmt(ds.attrs["holdout_coverage_95"], 4),
        "extrapolation": ds.attrs["extrapolation"] or None,
        "train_rmse_k": pooled("pooled_rmse", "train"),
        "train_cv_rmse": pooled("pooled_cv_rmse", "train"),
        "train_nmbe": pooled("pooled_nmbe", "train"),
        "loops": [
            {"loop": str(name), "inlet_c": _fmt(t, 2)}
            for name, t in zip(ds["loop"].values, ds["loop_inlet"].values, strict=True)
        ],
        "anomalies": [g["gpu"] for g in gpus if g["anomaly"]],
        "models": {
            str(s): int(c)
            for s, c in zip(ds["structure"].values, ds["structure_gpus"].values, strict=True)
        },
    }
    if "spec_check" in ds.attrs:  # twin.calibration.spec_check, as JSON text
        summary["spec_check"] = json.loads(ds.attrs["spec_check"])
    if "wall_seconds" in ds.attrs:
        summary["wall_seconds"] = ds.attrs["wall_seconds"]
    return summary


def summary_json(result: CalibrationResult) -> str:
    """The summary as strict JSON (no NaN)."""
    return json.dumps(result.summary, allow_nan=False, default=str)


def load_params(path: str | Path) -> xr.Dataset:
    """Read a calibration written by :meth:`CalibrationResult.write`."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            "--params", str(path), "an existing calibration file (twin calibrate --out)"
        )
    ds = xr.load_dataset(path)
    for need in ("theta", "theta_mask", "theta_cov"):
        if need not in ds:
            raise SpecError(f"{path}:{need}", "<missing>", "a twin calibration netCDF")
    return ds
