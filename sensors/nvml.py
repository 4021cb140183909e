"""NVML reader through nvidia-ml-py (``import pynvml``), an optional dependency.

Per GPU (read once): UUID, PCI bus id, name, enforced power limit, slowdown/shutdown temperature
thresholds.  Per sample: ``nvmlDeviceGetPowerUsage`` (on Ampere and later drivers a ~1 s average),
``NVML_FI_DEV_POWER_INSTANT`` (instantaneous, where supported), the total energy counter, GPU
temperature, HBM temperature (``NVML_FI_DEV_MEMORY_TEMP``), SM and memory clocks, utilization
and clocks-event (throttle) reasons.

Failure handling: a field the GPU does not support (``NVMLError_NotSupported`` or a field value
whose ``nvmlReturn`` is not success), or that the driver/binding lacks (``NVMLError_FunctionNotFound``,
a missing function or constant) is marked unsupported for that GPU, logged once and read as NaN;
the other fields continue.  A GPU that falls off the bus (``NVMLError_GpuIsLost``) is marked lost
and skipped; the other GPUs continue.  No library or driver raises :class:`NvmlUnavailable` with
a message saying what to install or use instead.

The library object is injectable (``lib=``) so tests can use a fake one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from sensors.base import AbstractSource, Batch, Clock, FieldProvenance, GpuInfo, hostname

log = logging.getLogger("twin.sensors.nvml")


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this machine (no library, no driver or no GPU)."""


PROVENANCE = {
    "power_average": FieldProvenance("nvmlDeviceGetPowerUsage", "average", "W", 1.0),
    "power_instant": FieldProvenance(
        "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)", "instant", "W"
    ),
    "energy_total": FieldProvenance("nvmlDeviceGetTotalEnergyConsumption", "counter", "J"),
    "temp_gpu": FieldProvenance("nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)", "gauge", "degC"),
    "temp_memory": FieldProvenance(
        "nvmlDeviceGetFieldValues(NVML_FI_DEV_MEMORY_TEMP)", "gauge", "degC"
    ),
    "clock_sm": FieldProvenance("nvmlDeviceGetClockInfo(NVML_CLOCK_SM)", "gauge", "MHz"),
    "clock_memory": FieldProvenance("nvmlDeviceGetClockInfo(NVML_CLOCK_MEM)", "gauge", "MHz"),
    "utilization_gpu": FieldProvenance("nvmlDeviceGetUtilizationRates().gpu", "average", "percent"),
    "clocks_event_reasons": FieldProvenance(
        "nvmlDeviceGetCurrentClocksEventReasons", "gauge", "dimensionless"
    ),
}


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class NvmlSource(AbstractSource):
    """Read every GPU NVML sees.  ``lib`` defaults to the ``pynvml`` module (nvidia-ml-py)."""

    name = "nvml"

    def __init__(
        self,
        lib: Any = None,
        *,
        host: str | None = None,
        clock: Clock = time.time,
        location: str = "",
    ) -> None:
        if lib is None:
            try:
                import pynvml as lib
            except ImportError as exc:
                raise NvmlUnavailable(
                    "the NVML binding is not installed: pip install nvidia-ml-py "
                    "(or run with --source sim)"
                ) from exc
        self.lib = lib
        self.host = host or hostname()
        self._clock = clock
        err = getattr(lib, "NVMLError", Exception)
        try:
            lib.nvmlInit()
            count = int(lib.nvmlDeviceGetCount())
        except err as exc:
            raise NvmlUnavailable(
                f"NVML is not usable here ({exc}): no NVIDIA driver or GPU found; install the "
                "driver, check `nvidia-smi`, or run with --source sim"
            ) from exc
        if count == 0:
            raise NvmlUnavailable("NVML reports no GPU on this machine; run with --source sim")
        self._handles = []
        self._devices: list[GpuInfo] = []
        self.unsupported: dict[int, set[str]] = {}
        self.lost: dict[int, str] = {}
        for i in range(count):
            h = lib.nvmlDeviceGetHandleByIndex(i)
            self._handles.append(h)
            self.unsupported[i] = set()
            self._devices.append(self._device_info(i, h, location))
        self._fi = []
        for name, fld in (
            ("NVML_FI_DEV_POWER_INSTANT", "power_instant"),
            ("NVML_FI_DEV_MEMORY_TEMP", "temp_memory"),
        ):
            fid = getattr(lib, name, None)
            if fid is None:
                log.warning("this nvidia-ml-py has no %s: %s is unsupported", name, fld)
                for i in range(count):
                    self.unsupported[i].add(fld)
            else:
                self._fi.append((int(fid), fld))

    # --------------------------------------------------------------------- helpers
    def _device_info(self, i: int, h: Any, location: str) -> GpuInfo:
        """Static facts of GPU ``i`` (an unsupported query leaves its field empty or NaN)."""
        lib = self.lib

        def threshold(kind: str) -> float:
            return float(lib.nvmlDeviceGetTemperatureThreshold(h, getattr(lib, kind)))

        uuid = self._static(i, "uuid", lambda: _s(lib.nvmlDeviceGetUUID(h)), "")
        nan = float("nan")
        slowdown, shutdown = (
            "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN",
            "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN",
        )
        return GpuInfo(
            key=uuid or f"{self.host}:{i}",
            index=i,
            host=self.host,
            uuid=uuid,
            name=self._static(i, "name", lambda: _s(lib.nvmlDeviceGetName(h)), ""),
            pci_bus_id=self._static(
                i, "pci_bus_id", lambda: _s(lib.nvmlDeviceGetPciInfo(h).busId), ""
            ),
            power_limit=self._static(
                i, "power_limit", lambda: lib.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0, nan
            ),
            temp_slowdown=self._static(i, "temp_slowdown", lambda: threshold(slowdown), nan),
            temp_shutdown=self._static(i, "temp_shutdown", lambda: threshold(shutdown), nan),
            location=location,
        )

    def _classify(self, exc: BaseException) -> str:
        lib = self.lib
        if isinstance(exc, getattr(lib, "NVMLError_GpuIsLost", ())):
            return "lost"
        if isinstance(exc, getattr(lib, "NVMLError_NotSupported", ())) or isinstance(
            exc, getattr(lib, "NVMLError_FunctionNotFound", ())
        ):
            return "unsupported"
        if isinstance(exc, AttributeError):  # binding or fake library without the function
            return "unsupported"
        return "error"

    def _mark_unsupported(self, i: int, what: str, exc: BaseException) -> None:
        if what not in self.unsupported[i]:
            self.unsupported[i].add(what)
            log.warning("GPU %d: %s unsupported (%s); it will read as NaN", i, what, exc)

    def _mark_lost(self, i: int, exc: BaseException) -> None:
        if i not in self.lost:
            self.lost[i] = str(exc)
            log.error("GPU %d (%s) lost: %s; other GPUs continue", i, self._devices[i].uuid, exc)

    def _static(self, i: int, what: str, fn: Any, default: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # classified below, never silently ignored
            kind = self._classify(exc)
            if kind == "lost":
                self._mark_lost(i, exc)
            elif kind == "unsupported":
                self._mark_unsupported(i, what, exc)
            else:
                log.warning("GPU %d: reading %s failed: %s", i, what, exc)
            return default

    # --------------------------------------------------------------------- source API
    def devices(self) -> list[GpuInfo]:
        return self._devices

    def provenance(self) -> Mapping[str, FieldProvenance]:
        return PROVENANCE

    def status(self) -> dict[str, object]:
        return {
            "lost": {self._devices[i].key: why for i, why in self.lost.items()},
            "unsupported": {self._devices[i].key: sorted(u) for i, u in self.unsupported.items()},
        }

    def _read_gpu(self, i: int, h: Any) -> dict[str, float] | None:
        lib = self.lib
        out: dict[str, float] = {}
        unsup = self.unsupported[i]

        def get(field: str, fn: Any) -> None:
            if field in unsup:
                out[field] = np.nan
                return
            try:
                out[field] = float(fn())
            except Exception as exc:  # classified: lost GPU stops the GPU, others mark the field
                kind = self._classify(exc)
                if kind == "lost":
                    raise
                if kind == "unsupported":
                    self._mark_unsupported(i, field, exc)
                else:
                    log.warning("GPU %d: %s failed this poll: %s", i, field, exc)
                out[field] = np.nan

        try:
            get("power_average", lambda: lib.nvmlDeviceGetPowerUsage(h) / 1000.0)
            get("energy_total", lambda: lib.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0)
            get("temp_gpu", lambda: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU))
            get("clock_sm", lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_SM))
            get("clock_memory", lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_MEM))
            get("utilization_gpu", lambda: lib.nvmlDeviceGetUtilizationRates(h).gpu)

            def reasons() -> float:
                fn = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None)
                if fn is None:  # older binding name
                    fn = lib.nvmlDeviceGetCurrentClocksThrottleReasons
                return fn(h)

            get("clocks_event_reasons", reasons)
            fis = [(fid, f) for fid, f in self._fi if f not in unsup]
            for _, f in self._fi:
                out.setdefault(f, np.nan)
            if fis:
                try:
                    vals = lib.nvmlDeviceGetFieldValues(h, [fid for fid, _ in fis])
                except Exception as exc:
                    kind = self._classify(exc)
                    if kind == "lost":
                        raise
                    for _, f in fis:
                        if kind == "unsupported":
                            self._mark_unsupported(i, f, exc)
                    if kind != "unsupported":
                        log.warning("GPU %d: reading field values failed: %s", i, exc)
                    vals = []
                for (_, f), v in zip(fis, vals, strict=False):
                    if int(v.nvmlReturn) != 0:
                        self._mark_unsupported(i, f, f"nvmlReturn {int(v.nvmlReturn)}")
                        continue
                    x = _field_value(v)
                    out[f] = x / 1000.0 if f == "power_instant" else x  # mW -> W
        except Exception as exc:
            if self._classify(exc) == "lost":
                self._mark_lost(i, exc)
                return None
            raise
        return out

    def read(self) -> Batch:
        t_ns = int(round(self._clock() * 1e9))
        rows: list[int] = []
        vals: dict[str, list[float]] = {f: [] for f in PROVENANCE}
        for i, h in enumerate(self._handles):
            if i in self.lost:
                continue
            r = self._read_gpu(i, h)
            if r is None:
                continue
            rows.append(i)
            for f in vals:
                vals[f].append(r.get(f, np.nan))
        return Batch(
            np.full(len(rows), t_ns, np.int64),
            np.array(rows, np.int64),
            {f: np.array(v, np.float64) for f, v in vals.items()},
        )

    def close(self) -> None:
        err = getattr(self.lib, "NVMLError", Exception)
        try:
            self.lib.nvmlShutdown()
        except err as exc:
            log.warning("nvmlShutdown failed: %s", exc)


def _field_value(v: Any) -> float:
    """Decode a ``c_nvmlFieldValue_t`` union by its ``valueType``."""
    vt = int(v.valueType)
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    return float(getattr(v.value, member.get(vt, "dVal")))
