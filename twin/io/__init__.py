"""Readers and generators of the twin's inputs: weather, grid carbon, jobs and telemetry.

Each module turns a user's file (or an embedded default built from cited figures) into labelled
xarray/pandas data with SI units; bad input raises :class:`twin.units.SpecError` naming the field.
"""
