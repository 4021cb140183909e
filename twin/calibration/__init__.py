"""Calibration of the twin's per-GPU thermal parameters against telemetry (docs/calibration.md).

Public API: :func:`calibrate` fits a telemetry Dataset; :class:`CalibrationConfig` and
:class:`Priors` set it up; :class:`CalibrationResult` holds the fit; :func:`load_params` reads a
written calibration; :func:`summary_json` and :func:`plot_fit` report it; :data:`Z95` is the
two-sided 95 % normal quantile used for every interval.
"""

from twin.calibration.core import (
    NP,
    PARAMS,
    Z95,
    CalibrationConfig,
    CalibrationResult,
    Priors,
    calibrate,
    load_params,
    load_spec,
    negative_log_likelihood,
    plot_fit,
    predict_readings,
    prediction_sd,
    summary_json,
)

__all__ = [
    "NP",
    "PARAMS",
    "Z95",
    "CalibrationConfig",
    "CalibrationResult",
    "Priors",
    "calibrate",
    "load_params",
    "load_spec",
    "negative_log_likelihood",
    "plot_fit",
    "predict_readings",
    "prediction_sd",
    "summary_json",
]
