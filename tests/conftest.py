"""Test configuration: float64 JAX, the shared third-party data directory, markers."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]
#: Third-party data lives beside the clone (CI has ../shared); never inside the project.
SHARED_DATA = Path(os.environ.get("TWIN_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"third-party data directory {SHARED_DATA} is missing: clone the project beside "
            "'shared/' or set TWIN_SHARED_DATA"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache(tmp_path_factory):
    """The session's own JAX compilation cache (twin.jaxcache), for this process and the twin
    commands the tests start: never the user's, and on from the first test whatever the order
    (the CLI's ``main`` turns it on in-process too)."""
    from twin import jaxcache

    os.environ["TWIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("twin-cache"))
    jaxcache.configure()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop each test file's compiled XLA programs when it ends: a long session otherwise keeps
    every executable (and its JIT code memory) alive to the end."""
    yield
    jax.clear_caches()
    gc.collect()
