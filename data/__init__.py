"""Data shipped with Superfactory Twin, installed as the package ``twin.data``.

Facility specs (``facilities/``), climate statistics (``climate/``), hourly grid carbon
profiles (``grid/``), job-trace statistics (``jobs/``), the generator of the coolant property
table that ships with physics (``coolants/``) and deployment examples (``deploy/``). Code finds them through
:func:`twin.resources.data_dir`, never through a path relative to the source tree.
"""
