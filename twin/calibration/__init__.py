"""Calibration of the twin's per-GPU thermal parameters against telemetry (docs/calibration.md).

Public API: :func:`calibrate` fits a telemetry Dataset; :class:`CalibrationConfig` and
:class:`Priors` set it up; :class:`CalibrationResult` holds the fit; :func:`load_params` reads a
written calibration; :func:`summary_json` and :func:`plot_fit` report it; :data:`Z95` is the
two-sided 95 % normal quantile used for every interval.  :func:`detect_anomalies` (returning
:class:`PeerAnomalies`) finds GPUs that read hotter than their peers at equal power, from the
readings alone: the one detector of ``twin calibrate``, the live filter and the dashboard.

Modules, by role: ``config`` (parameter vector, structures, options, priors), ``model`` (the
Foster-network simulation, predicted readings, likelihood), ``solver`` (batched
Levenberg-Marquardt and the score covariance), ``uncertainty`` (sandwich covariance, prediction
s.d.), ``fit`` (initial values, structure choice, :func:`calibrate`), ``identify``, ``peers``,
``validation``, ``leakage`` (assessment of the fit), ``anomaly`` (peer anomalies from the
readings), ``result`` (the result Dataset, its JSON
summary and file), ``plot``.
"""

from twin.calibration.anomaly import PeerAnomalies, detect_anomalies
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
    "PeerAnomalies",
    "Priors",
    "calibrate",
    "detect_anomalies",
    "load_params",
    "load_spec",
    "negative_log_likelihood",
    "plot_fit",
    "predict_readings",
    "prediction_sd",
    "summary_json",
]
