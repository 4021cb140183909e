"""Time to result as users run it (issue 17): light ``--help``, compilation paid once per machine.

No timing assertions (the machine is shared): what is checked is what a command imports and that
the compilation cache is filled, read back, announced and harmless to the results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twin import jaxcache

ROOT = Path(__file__).resolve().parents[2]
#: Libraries a parser must not load: seconds of start-up each (JAX alone ~1 s).
HEAVY = ("jax", "jaxlib", "xarray", "scipy", "streamlit", "pandas", "pint", "matplotlib")
#: Wall-clock fields: the only ones a cached run may change.
WALL = ("wall_seconds", "gpu_steps_per_second")

RUNNER = """
import json, sys
from twin.cli import build_parser, main
heavy = set(json.loads(sys.argv[1]))
names = [None] + sorted(build_parser()._subparsers._group_actions[0].choices)
found = {}
for name in names:
    try:
        main(["--help"] if name is None else [name, "--help"])
    except SystemExit:
        pass
    loaded = sorted({m.split(".")[0] for m in sys.modules} & heavy)
    if loaded:
        found[str(name)] = loaded
        break
print(json.dumps(found))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "TWIN_CACHE"))}
    return env | {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"} | extra


def test_help_of_twin_and_every_subcommand_imports_no_heavy_library():
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(HEAVY)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == {}, "the first --help that loaded them"


def test_sensord_help_shows_the_daemons_own_defaults():
    from sensors.daemon import DaemonConfig
    from twin.cli import sensors as cli_sensors

    d = DaemonConfig()
    assert cli_sensors.HELP_DEFAULTS == {k: getattr(d, k) for k in cli_sensors.HELP_DEFAULTS}
    assert cli_sensors._env("flush_interval") == DaemonConfig.env_name("flush_interval")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TWIN_CACHE_DIR": "/c/t", "XDG_CACHE_HOME": "/x"}, "/c/t/jax"),
        ({"TWIN_CACHE_DIR": " OFF "}, None),
        ({"TWIN_CACHE_DIR": "0", "JAX_COMPILATION_CACHE_DIR": "/j"}, None),
        ({"JAX_COMPILATION_CACHE_DIR": "/j"}, "/j"),
        ({"XDG_CACHE_HOME": "/x"}, "/x/superfactory-twin/jax"),
        ({"XDG_CACHE_HOME": "relative"}, str(Path.home() / ".cache/superfactory-twin/jax")),
    ],
)
def test_cache_folder_from_the_environment(env, expected):
    got = jaxcache.jax_cache_dir(env)
    assert (None if got is None else str(got)) == expected


def test_cache_off_and_unwritable_folder_turn_jax_cache_off(tmp_path):
    env = {"TWIN_CACHE_DIR": "off", "JAX_COMPILATION_CACHE_DIR": "/j"}
    assert jaxcache.configure(env) is None
    assert env["JAX_ENABLE_COMPILATION_CACHE"] == "false"
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {"TWIN_CACHE_DIR": str(blocker)}  # a file where the folder should be
    assert jaxcache.configure(env) is None
    assert env["JAX_ENABLE_COMPILATION_CACHE"] == "false"


def _simulate(cache: str) -> subprocess.CompletedProcess:
    argv = ["simulate", "--facility", "single-rack", "--hours", "0.1", "--json"]
    return subprocess.run(
        [sys.executable, "-m", "twin.cli", *argv],
        env=_env(TWIN_CACHE_DIR=cache),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def _results(out: str) -> dict:
    s = json.loads(out)
    for block in [s, *s["sites"].values()]:
        for key in WALL:
            block.pop(key)
    return s


@pytest.mark.slow
def test_second_run_reads_the_cache_and_gives_the_same_results(tmp_path):
    """Cold run (compiles, fills the cache, says so), warm run (reads it, silent), same JSON."""
    cold = _simulate(str(tmp_path))
    entries = list((tmp_path / "jax").iterdir())
    assert entries, "the cold run wrote no compiled program"
    assert "compiling the facility step" in cold.stderr
    warm = _simulate(str(tmp_path))
    assert "compiling" not in warm.stderr, warm.stderr
    assert _results(warm.stdout) == _results(cold.stdout)
    off = _simulate("off")
    assert "compiling the facility step (the compilation cache is off)" in off.stderr
    assert _results(off.stdout) == _results(cold.stdout)


def test_compile_notice_writes_to_the_stderr_of_the_moment(monkeypatch):
    """The process's notice is installed once, under whatever stderr the first command had (in
    the test suite: pytest's capture, closed after that test); later notices go to the stderr in
    force when they are printed (a closed one gave 'I/O operation on closed file' in 10 tests)."""
    import io

    from twin.jaxcache import CompileNotice

    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    notice = CompileNotice()
    first.close()
    later = io.StringIO()
    monkeypatch.setattr("sys.stderr", later)
    notice._shown = True
    notice._on_duration("/jax/core/compile/backend_compile_duration", 2.0)
    assert "twin: compiled in 2 s" in later.getvalue()
