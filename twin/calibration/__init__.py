"""Calibration of the twin's per-GPU thermal parameters against telemetry (docs/calibration.md).

Public API: :func:`calibrate` fits a telemetry Dataset; :class:`CalibrationConfig` and
:class:`Priors` set it up; :class:`CalibrationResult` holds the fit; :func:`load_params` reads a
written calibration; :func:`summary_json` and :func:`plot_fit` report it; :data:`Z95` is the
two-sided 95 % normal quantile used for every interval.

Modules, by role: ``config`` (parameter vector, structures, options, priors), ``model`` (the
Foster-network simulation, predicted readings, likelihood), ``solver`` (batched
Levenberg-Marquardt and the score covariance), ``uncertainty`` (sandwich covariance, prediction
s.d.), ``fit`` (initial values, structure choice, :func:`calibrate`), ``identify``, ``peers``,
``validation``, ``leakage`` (assessment of the fit), ``result`` (the result Dataset, its JSON
summary and file), ``plot``.
"""

from twin.calibration.config import (
    NP,
    PARAMS,
    Z95,
    CalibrationConfig,
    Priors,
)
from twin.calibration.fit import calibrate
from twin.calibration.model import negative_log_likelihood, predict_readings
from twin.calibration.plot import plot_fit
from twin.calibration.result import CalibrationResult, load_params, summary_json
from twin.calibration.uncertainty import prediction_sd
from twin.spec import load_spec

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
