"""Where the data shipped with the package lives, and the ``TWIN_*`` environment defaults.

The source tree's top-level ``data/`` folder (facility specs, climate statistics, grid carbon
tables, the job-trace statistics, deployment examples) is installed as the package
``twin.data`` (``[tool.setuptools.package-dir]`` in pyproject.toml), so it is found through
:mod:`importlib.resources` whatever the install (editable or not) and whatever the working
directory. A checkout that was never installed falls back to the folder beside the source.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def data_dir(kind: str = "") -> Path:
    """The shipped data folder ``kind`` (``facilities``, ``climate``, ``grid``, ``jobs``, ...)."""
    try:
        root = resources.files("twin.data")
    except ModuleNotFoundError:  # a source checkout run without installing the package
        root = Path(__file__).resolve().parents[1] / "data"
    if not isinstance(root, Path):
        raise RuntimeError(f"twin.data is not a folder on disk ({root!r}); install unzipped")
    return root / kind if kind else root


def env_default(name: str, default: str | None = None) -> str | None:
    """``TWIN_<NAME>`` from the environment (``-`` read as ``_``), else ``default``.

    Every command-line option that has an environment default reads it through here, so the
    variable's name is always ``TWIN_`` plus the option's name in upper case.
    """
    return os.environ.get("TWIN_" + name.upper().replace("-", "_"), default)
