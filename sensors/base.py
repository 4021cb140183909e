"""Sample schema shared by every source, the store and the exporter.

A source yields :class:`Batch` objects: long-format arrays (one row per GPU-sample, i.e. one GPU at
one instant) of timestamps, GPU positions and per-field values, plus the rows it could not parse
(:class:`QuarantineRecord`).  ``NaN`` in a field means *not available* (unsupported by the device,
not logged by the recorder); values that are present but wrong are quarantined instead.

Every field carries its provenance (:class:`FieldProvenance`): which NVML call or recorded column
produced it, whether it is an average, an instantaneous reading or a counter, and its unit.
"""

from __future__ import annotations

import abc
import dataclasses
import socket
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

#: Canonical fields: name -> (unit understood by pint, description).  Temperatures stay in degC
#: (as every GPU reports them, 1 degC resolution); convert with pint-xarray where kelvin is needed.
FIELDS: dict[str, tuple[str, str]] = {
    "power_average": ("W", "board power, averaged by the driver over ~1 s"),
    "power_instant": ("W", "board power, instantaneous reading"),
    "energy_total": ("J", "energy counter since driver load"),
    "temp_gpu": ("degC", "GPU die temperature"),
    "temp_memory": ("degC", "HBM temperature"),
    "clock_sm": ("MHz", "SM clock"),
    "clock_memory": ("MHz", "memory clock"),
    "utilization_gpu": ("percent", "share of time a kernel was running"),
    "clocks_event_reasons": ("dimensionless", "bitmask of clocks-event (throttle) reasons"),
}
FIELD_NAMES: tuple[str, ...] = tuple(FIELDS)

#: Quarantine reasons, in the order they are checked.  ``unknown_unit``: a value whose unit is
#: not a unit, or not of its field's dimension; ``time_implausible``: a time before the GPU era,
#: past the reader's clock plus the allowed skew, or far outside the file's own span.
REASONS: tuple[str, ...] = (
    "malformed_line",
    "truncated_line",
    "unknown_column",
    "unknown_metric",
    "unknown_unit",
    "nan",
    "power_negative",
    "power_absurd",
    "temperature_out_of_range",
    "utilization_out_of_range",
    "time_implausible",
    "time_backwards",
    "duplicate_timestamp",
    "already_stored",
)

#: Reasons about a whole column, not a row: the rows are stored without it, so these records are
#: counted apart from the row-level quarantine (``samples + quarantined == rows`` holds).
COLUMN_REASONS: frozenset[str] = frozenset({"unknown_column"})


@dataclasses.dataclass(frozen=True)
class FieldProvenance:
    """Where the values of one field come from.

    ``kind`` is one of ``"average"``, ``"instant"``, ``"counter"``, ``"gauge"``; ``window_s`` is the
    averaging window [s] when known (NVML's power average: ~1 s).
    """

    origin: str
    kind: str
    unit: str
    window_s: float | None = None

    def as_text(self) -> str:
        window = f"; window {self.window_s:g} s" if self.window_s else ""
        return f"{self.origin} ({self.kind}{window}; {self.unit})"


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """Identity of one GPU.  ``key`` is unique across hosts and used as the store's GPU label."""

    key: str
    index: int
    host: str
    uuid: str = ""
    name: str = ""
    pci_bus_id: str = ""
    power_limit: float = float("nan")  # [W]
    temp_slowdown: float = float("nan")  # [degC]
    temp_shutdown: float = float("nan")  # [degC]
    location: str = ""  # free-form placement label given by the operator, never interpreted here


@dataclasses.dataclass(frozen=True)
class QuarantineRecord:
    """One rejected input row (or value) and why."""

    reason: str
    detail: str
    time_ns: int | None = None
    gpu: str | None = None


@dataclasses.dataclass
class Batch:
    """Long-format GPU-samples.

    ``time_ns`` (n,) int64 nanoseconds since the Unix epoch; ``gpu`` (n,) int positions into the
    source's :meth:`AbstractSource.devices`; ``values[field]`` (n,) float64 with NaN = not available.
    ``rows`` counts the input rows this batch accounts for (stored + quarantined).
    """

    time_ns: np.ndarray
    gpu: np.ndarray
    values: dict[str, np.ndarray]
    quarantine: list[QuarantineRecord] = dataclasses.field(default_factory=list)
    rows: int | None = None

    def __post_init__(self) -> None:
        self.time_ns = np.asarray(self.time_ns, dtype=np.int64)
        self.gpu = np.asarray(self.gpu, dtype=np.int64)
        n = self.time_ns.shape[0]
        if self.gpu.shape != (n,):
            raise ValueError(f"Batch.gpu has shape {self.gpu.shape}; expected ({n},)")
        for name, v in list(self.values.items()):
            if name not in FIELDS:
                raise ValueError(f"Batch field {name!r} unknown; expected one of {FIELD_NAMES}")
            v = np.asarray(v, dtype=np.float64)
            if v.shape != (n,):
                raise ValueError(f"Batch field {name!r} has shape {v.shape}; expected ({n},)")
            self.values[name] = v
        if self.rows is None:
            self.rows = n + len(self.quarantine)

    def __len__(self) -> int:
        return int(self.time_ns.shape[0])

    @classmethod
    def empty(cls) -> Batch:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), {}, rows=0)


Clock = Callable[[], float]
Sleep = Callable[[float], None]


def hostname() -> str:
    return socket.gethostname()


#: Control characters shown as escapes (newline is left to the format that shows the text).
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if c != 0x0A} | {0x0D: "\\r"}


def printable(s: str) -> str:
    """``s`` as text that any consumer can show: bytes that were not UTF-8 (surrogate escapes,
    as ``os.fsdecode`` and ``surrogateescape`` decoding leave them) become ``\\xff``, control
    characters ``\\r`` and ``\\x00`` (the backslash is literal text); ``\\n`` is kept."""
    return escape_undecodable(s).translate(_CONTROL)


def escape_undecodable(s: str) -> str:
    """``s`` with each byte that was not UTF-8 (a surrogate escape, as ``os.fsdecode`` and
    ``sys.argv`` leave it) written as the text ``\\xff``, and any other lone surrogate as
    ``\\udXXX``; valid text is returned unchanged."""
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte left
        raw = s.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


class AbstractSource(abc.ABC):
    """A source of GPU samples.  ``read()`` returns the next batch, or ``None`` at end of input.

    Live sources (NVML, simulated) never end; replay sources end at the end of their file.
    Clocks are injectable (``clock`` returns Unix seconds, ``sleep`` waits).
    """

    name: str = "abstract"

    @abc.abstractmethod
    def devices(self) -> Sequence[GpuInfo]:
        """The GPUs this source reports, in position order (may grow while reading)."""

    @abc.abstractmethod
    def provenance(self) -> Mapping[str, FieldProvenance]:
        """Provenance of every field the source can produce."""

    @abc.abstractmethod
    def read(self) -> Batch | None:
        """Next batch (possibly empty), or ``None`` when the input has ended."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def status(self) -> dict[str, object]:
        """Per-source health for logs and metrics (lost GPUs, unsupported fields, ...)."""
        return {}


def now_ns(clock: Clock = time.time) -> int:
    return int(round(clock() * 1e9))


def pack_in_order(items: Sequence, sizes: Sequence[int], budget: int) -> list[list]:
    """Consecutive groups of ``items`` whose ``sizes`` add up to at most ``budget`` each.

    Greedy, in the given order: a group closes when the next item would overflow it; an item
    larger than the budget stands alone. Used to batch Prometheus queries by series count and
    to merge store chunks by sample count.
    """
    groups: list[list] = []
    current: list = []
    total = 0
    for item, size in zip(items, sizes, strict=True):
        if current and total + size > budget:
            groups.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        groups.append(current)
    return groups
