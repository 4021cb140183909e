"""Calibration of the twin's per-GPU thermal parameters against telemetry."""
