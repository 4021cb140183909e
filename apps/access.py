"""What the dashboard may read and fetch on behalf of whoever can reach its page.

Hand-written because every text box of the dashboard that takes a path or a URL is read by the
server's process, with the server's rights: without a policy, anyone who can open the page can
read ``/etc/shadow`` or ``/proc/self/environ`` through the telemetry box and make the server
fetch any URL. The operator decides instead:

* files are read only under the ``--data-dir`` directories (default: the working directory of
  ``twin dashboard``) or when they are exactly a file named on the command line
  (``--telemetry``, ``--calibration``, ``--facility``); a path is resolved (symlinks and ``..``)
  before it is checked, so neither leads out;
* ``http(s)://`` URLs are fetched only under an ``--allow-url`` prefix (same scheme and host,
  path at a ``/`` boundary) or when they are the ``--telemetry`` URL of the command line; none
  otherwise;
* shipped facility names (``superfactory``) are always allowed: they name files of the package.

:meth:`Access.hide_contents` keeps values read from a file out of the messages the page shows.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from twin.units import InputError, SpecError

#: Values of twin's errors that are placeholders written by the code, not read from a file.
PLACEHOLDERS = frozenset({"<empty file>", "<no jobs>", "<missing>", "<file>", None})
#: Shown instead of a value that was read from a file on the server.
NOT_SHOWN = "<read from the file, not shown>"


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _url_parts(url: str) -> tuple[str, str, str]:
    u = urlsplit(url)
    return u.scheme.lower(), u.netloc.lower(), u.path or "/"


@dataclasses.dataclass(frozen=True)
class Access:
    """The operator's policy: data directories, files and URL prefixes (all resolved)."""

    data_dirs: tuple[Path, ...]
    files: tuple[Path, ...] = ()
    url_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_options(
        cls, data_dirs: Iterable[str], allow_urls: Iterable[str], named: Iterable[str] = ()
    ) -> Access:
        """The policy of the command line: ``--data-dir`` (none given: the working
        directory), ``--allow-url`` and the sources it names (files and URLs)."""
        dirs = tuple(Path(d).expanduser().resolve() for d in data_dirs if str(d).strip())
        named = [n.strip() for n in named if n and n.strip()]
        files = tuple(Path(n).expanduser().resolve() for n in named if not _is_url(n))
        urls = tuple(u.strip() for u in allow_urls if u.strip()) + tuple(filter(_is_url, named))
        for u in urls:
            if not _is_url(u) or not urlsplit(u).netloc:
                raise SpecError("--allow-url", u, "an http:// or https:// URL prefix with a host")
        return cls(dirs or (Path.cwd().resolve(),), files, urls)

    def path(self, text: str, field: str) -> Path:
        """``text`` resolved, if it lies under a data directory or is a named file; else a
        :class:`SpecError` naming ``field`` (the file is not opened)."""
        p = Path(text).expanduser().resolve()
        if p in self.files or any(p.is_relative_to(d) for d in self.data_dirs):
            return p
        dirs = ", ".join(str(d) for d in self.data_dirs)
        raise SpecError(
            field, text, f"a file under the dashboard's data directories ({dirs}; --data-dir)"
        )

    def url(self, text: str, field: str) -> str:
        """``text`` if it is under an allowed URL prefix; else a :class:`SpecError`."""
        scheme, host, path = _url_parts(text)
        for prefix in self.url_prefixes:
            s, h, p = _url_parts(prefix)
            base = p.rstrip("/")
            if (s, h) == (scheme, host) and (path == base or path.startswith(base + "/")):
                return text
        allowed = ", ".join(self.url_prefixes) or "none"
        raise SpecError(field, text, f"a URL under an --allow-url prefix (allowed: {allowed})")

    def source(self, text: str, field: str) -> str:
        """A telemetry source: an allowed URL or an allowed path ('' stays '')."""
        if not text:
            return text
        return self.url(text, field) if _is_url(text) else str(self.path(text, field))

    def facility(self, text: str, field: str = "facility") -> str:
        """A shipped facility name as is; a TOML path only if allowed."""
        name = text.strip()
        if name and os.sep not in name and "/" not in name and not Path(name).suffix:
            if not Path(name).exists():
                return name  # a shipped name: twin.spec looks in its own directory
        return str(self.path(name, field))

    def check_sources(self, facility: str, calibration: str, telemetry: str) -> None:
        """The sidebar's facility, calibration and telemetry, checked before anything is
        opened; raises :class:`SpecError` naming the input that is not allowed."""
        self.facility(facility, "facility")
        if calibration.strip():
            self.path(calibration.strip(), "calibration")
        self.source(telemetry.strip(), "telemetry")

    @staticmethod
    def hide_contents(exc: InputError, source: str) -> SpecError:
        """``exc`` without any value read from the file ``source``: the value is kept only if
        it is the source itself (not found, not a store) or a placeholder of the code; a job
        id in the field path is dropped too. The field and what was expected stay."""
        value = exc.value
        own = isinstance(value, str) and bool(source) and value.startswith(source)
        if own or (isinstance(value, str | None) and value in PLACEHOLDERS):
            return SpecError(exc.path, value, exc.expected)
        where = re.sub(r" \([^)]*\) field ", " field ", str(exc.path))
        if source not in where:  # name the file the value was read from
            where = f"{where} ({source})"
        return SpecError(where, NOT_SHOWN, exc.expected)
