"""Workload placement and setpoint optimization on the twin."""
