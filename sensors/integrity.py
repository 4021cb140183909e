"""What the telemetry store does to defend its own file: writer lock, file identity, checksums.

Hand-written because SQLite gives none of these for our case:

* **One writer.**  SQLite serializes transactions but lets two daemons append to one file, which
  interleaves their samples under the same GPU ids.  :class:`WriterLock` takes an exclusive
  ``flock`` on a sidecar ``<store>.lock`` holding the writer's pid and host.  The kernel releases
  it when the process dies (SIGKILL included), so a stale lock never blocks; readers never take it.
* **The file under us.**  Deleting or replacing the store file does not disturb an open SQLite
  connection: it keeps committing into the orphaned inode and nothing says so.  :func:`file_id`
  (device, inode) taken at open and compared at every flush detects it.
* **Silent corruption.**  zlib's own check covers only compressed blocks and fails the whole
  read; raw blocks and a chunk's times/GPU/mask blobs had nothing.  Each chunk row stores a CRC32
  per field block and one over its metadata (:func:`meta_crc`), so a reader can skip exactly the
  damaged block and read the rest.  Chunks written before have no checksum and read as before.
* **Text that is not UTF-8.**  Host and file names arrive as surrogate-escaped ``str`` (a byte
  like ``\\xff`` in a name); SQLite cannot store them.  :func:`safe_text` writes such a byte as
  the four characters ``\\xff``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np

from sensors.base import escape_undecodable


class StoreLocked(RuntimeError):
    """Another process holds the store's writer lock (see :class:`WriterLock`)."""


def safe_text(s: str | None) -> str | None:
    """``s`` as it is stored: :func:`sensors.base.escape_undecodable` (None stays None)."""
    return None if s is None else escape_undecodable(s)


def file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


class WriterLock:
    """Exclusive, non-blocking ``flock`` on ``<store>.lock``; holds ``{"pid", "host"}``."""

    def __init__(self, store: Path) -> None:
        self.path = lock_path(store)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreLocked(
                f"telemetry store {store} is already being written by {holder} (lock "
                f"{self.path}); stop that writer or give this one another --store"
            ) from None
        except OSError:
            os.close(fd)
            raise
        me = json.dumps({"pid": os.getpid(), "host": safe_text(socket.gethostname())})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (me + "\n").encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        h = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        return f"pid {int(h['pid'])} on host {h['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (pid and host not recorded yet)"


_META = struct.Struct("<qqqqq")


def meta_crc(
    t_min: int,
    t_max: int,
    n_samples: int,
    nt: int,
    ng: int,
    fields: str,
    times_b: bytes,
    gpus_b: bytes,
    pres_b: bytes | None,
) -> int:
    """CRC32 over a chunk row's metadata columns (everything but the field blocks)."""
    crc = zlib.crc32(_META.pack(t_min, t_max, n_samples, nt, ng))
    crc = zlib.crc32(fields.encode(), crc)
    crc = zlib.crc32(times_b, crc)
    crc = zlib.crc32(gpus_b, crc)
    return zlib.crc32(pres_b or b"", crc)


def meta_sane(
    times_b: bytes, gpus_b: bytes, pres_b: bytes | None, nt: int, ng: int, known: np.ndarray
) -> bool:
    """Cheap structural check of a chunk's metadata before its checksum can be read.

    ``known[gpu_id]`` is True for every GPU id in the store.  Keeps a damaged times/GPU/mask
    blob from steering an allocation or an index (a flipped GPU id of 2**60 would size an
    array by it); the checksum then catches the rest.
    """
    if nt < 1 or ng < 1 or len(times_b) != 8 * nt or len(gpus_b) != 8 * ng:
        return False
    if pres_b is not None and len(pres_b) != (nt * ng + 7) // 8:
        return False
    g = np.frombuffer(gpus_b, dtype="<i8")
    return bool(g.min() >= 0 and g.max() < known.size and known[g].all())
