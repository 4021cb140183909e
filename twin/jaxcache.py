"""JAX's persistent compilation cache for the twin's commands: compile once per machine.

A command spends most of a short run tracing and compiling the facility step. JAX can keep the
compiled programs on disk (its *persistent compilation cache*); this module turns it on for the
``twin`` command line (and the dashboard it starts) in a per-user cache directory:

* ``$TWIN_CACHE_DIR`` if set (``off``, ``0``, ``no``, ``false`` or ``none`` turns the cache off);
  else ``$JAX_COMPILATION_CACHE_DIR`` if the user set JAX's own variable; else
  ``$XDG_CACHE_HOME/superfactory-twin`` (``~/.cache/superfactory-twin``). JAX's programs go in
  its ``jax/`` folder, capped at :data:`MAX_BYTES` where the ``filelock`` package is installed
  (least recently used entries go first; without it the folder is not capped).
* Deleting the folder is always safe: the next command compiles again and refills it.

It is set through JAX's environment variables, which JAX reads when it is first imported, so that
commands which never run JAX (``--help``, ``twin sensord`` replaying a file) do not import it, and
child processes (the dashboard's Streamlit server, the sweep's workers) inherit the setting. A
process that already imported JAX gets the same values through ``jax.config``.

:class:`CompileNotice` says on stderr when a command is compiling rather than silent for a
minute: JAX publishes the start and end of each backend compilation and each cache hit through
:mod:`jax.monitoring`, and a compilation still running after :data:`NOTICE_AFTER_S` is announced.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

#: Values of ``TWIN_CACHE_DIR`` that turn the cache off.
OFF = frozenset({"off", "0", "no", "false", "none"})
#: Largest size of the JAX cache folder [bytes]; JAX evicts the least recently used entries.
MAX_BYTES = 2 * 1024**3
#: A compilation still running after this long [s] is announced on stderr.
NOTICE_AFTER_S = 1.5
#: What a compiled function is, for the notice (JAX's name for it -> words).
DESCRIPTIONS = {"run_records": "the facility step"}


def cache_root(env: Mapping[str, str] | None = None) -> Path | None:
    """The twin's per-user cache folder, or None when ``TWIN_CACHE_DIR`` turns it off."""
    env = os.environ if env is None else env
    raw = env.get("TWIN_CACHE_DIR")
    if raw is not None and raw.strip().lower() in OFF:
        return None
    if raw and raw.strip():
        return Path(raw.strip()).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "superfactory-twin"


def jax_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where JAX's compiled programs go (None: the cache is off)."""
    env = os.environ if env is None else env
    if "TWIN_CACHE_DIR" not in env and env.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(env["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    root = cache_root(env)
    return None if root is None else root / "jax"


def jax_settings(path: Path | None) -> dict[str, str]:
    """JAX's environment variables for a cache in ``path`` (None: off)."""
    if path is None:
        return {"JAX_ENABLE_COMPILATION_CACHE": "false"}
    return {
        "JAX_ENABLE_COMPILATION_CACHE": "true",
        "JAX_COMPILATION_CACHE_DIR": str(path),
        # every program, however quick to compile or small: a run compiles a dozen small ones
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    } | _max_size()


def _max_size() -> dict[str, str]:
    """The size cap, where JAX can apply it (it needs the ``filelock`` package, else every
    cache read fails with a warning)."""
    if importlib.util.find_spec("filelock") is None:
        return {}
    return {"JAX_COMPILATION_CACHE_MAX_SIZE": str(MAX_BYTES)}


def configure(env: MutableMapping[str, str] | None = None) -> Path | None:
    """Turn the cache on (or off) for this process and its children; returns JAX's folder.

    A folder that cannot be created turns the cache off with a warning on stderr: a command
    never fails for want of a cache.
    """
    env = os.environ if env is None else env
    path = jax_cache_dir(env)
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)  # trusted: this user's only
        except OSError as exc:
            print(f"twin: compilation cache off ({path}: {exc.strerror})", file=sys.stderr)
            path = None
    settings = jax_settings(path)
    env.update(settings)
    if "jax" in sys.modules and env is os.environ:
        _update_jax_config(settings)
    return path


def _update_jax_config(settings: Mapping[str, str]) -> None:
    jax = sys.modules["jax"]
    for name, raw in settings.items():
        value: Any = raw
        if raw in ("true", "false"):
            value = raw == "true"
        elif name != "JAX_COMPILATION_CACHE_DIR":
            value = float(raw) if "." in raw or name.endswith("SECS") else int(raw)
        jax.config.update(name.lower(), value)


class CompileNotice:
    """Announce long JAX compilations on ``stream`` while they run, and their time at the end.

    Install it once per process (:meth:`install`), after JAX is imported; cache hits are silent.
    """

    def __init__(self, stream: TextIO | None = None, after_s: float = NOTICE_AFTER_S):
        self._stream = stream  # None: sys.stderr as it is when a notice is printed
        self.after_s = after_s
        self.announced: list[str] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._shown = False

    @property
    def stream(self) -> TextIO:
        """Where notices go: the given stream, else the process's stderr at the time (looked
        up each time: a notice installed under a redirected stderr, as in tests, must not keep
        writing to it once it is closed)."""
        return self._stream if self._stream is not None else sys.stderr

    def install(self) -> CompileNotice:
        from jax import monitoring

        monitoring.register_scalar_listener(self._on_scalar)
        monitoring.register_event_listener(self._on_event)
        monitoring.register_event_duration_secs_listener(self._on_duration)
        return self

    def _on_scalar(self, event: str, value: float, **kwargs: Any) -> None:
        if event == _BACKEND_COMPILE:  # recorded when a compilation (or cache lookup) starts
            name = str(kwargs.get("fun_name", "a function"))
            with self._lock:
                self._cancel()
                self._shown = False
                self._timer = threading.Timer(self.after_s, self._announce, (name,))
                self._timer.daemon = True
                self._timer.start()

    def _on_event(self, event: str, **kwargs: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            with self._lock:
                self._cancel()

    def _on_duration(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == _BACKEND_COMPILE:
            with self._lock:
                self._cancel()
                shown, self._shown = self._shown, False
            if shown:
                print(f"twin: compiled in {duration:.0f} s", file=self.stream, flush=True)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _announce(self, name: str) -> None:
        import jax

        bare = name.removeprefix("jit(").removesuffix(")")
        what = DESCRIPTIONS.get(bare, bare)
        cached = jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir
        where = (
            "first run on this machine for this facility and step; cached for the next"
            if cached
            else "the compilation cache is off"
        )
        with self._lock:
            self._shown = True
        self.announced.append(name)
        print(f"twin: compiling {what} ({where})…", file=self.stream, flush=True)


_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_NOTICE: list[CompileNotice] = []


def announce_compiles() -> CompileNotice:
    """The process's :class:`CompileNotice` (installed on first call)."""
    if not _NOTICE:
        _NOTICE.append(CompileNotice().install())
    return _NOTICE[0]
