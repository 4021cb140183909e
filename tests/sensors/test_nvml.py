"""NVML source against a fake library injected at the pynvml boundary (no GPU in CI)."""

from __future__ import annotations

import math
import types

import numpy as np
import pynvml
import pytest
from sensors_testlib import twin

from sensors.exporter import Exporter
from sensors.nvml import NvmlSource, NvmlUnavailable


class FieldValue:
    def __init__(self, ret, vtype=0, **val):
        self.nvmlReturn = ret
        self.valueType = vtype
        self.value = types.SimpleNamespace(
            dVal=0.0, uiVal=0, ulVal=0, ullVal=0, sllVal=0, siVal=0, usVal=0
        )
        for k, v in val.items():
            setattr(self.value, k, v)


class FakeNvml(types.SimpleNamespace):
    """Same names as the pynvml module; exceptions and constants are pynvml's own."""

    def __init__(self, n=2, *, no_instant=(), lost_after=None, drop=()):
        super().__init__()
        for name in dir(pynvml):
            if name.startswith(("NVMLError", "NVML_")):
                setattr(self, name, getattr(pynvml, name))
        for name in drop:
            delattr(self, name)
        self.n = n
        self.no_instant = set(no_instant)
        self.lost_after = lost_after  # {gpu: polls before it falls off the bus}
        self.polls = dict.fromkeys(range(n), 0)
        self.shutdown = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetCount(self):
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def _check(self, h):
        if self.lost_after and h in self.lost_after and self.polls[h] >= self.lost_after[h]:
            raise pynvml.NVMLError_GpuIsLost()

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-fake-{h}"

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPciInfo(self, h):
        return types.SimpleNamespace(busId=f"00000000:{0x18 + h:02X}:00.0".encode())

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetTemperatureThreshold(self, h, which):
        return {
            pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: 87,
            pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: 92,
        }[which]

    def nvmlDeviceGetPowerUsage(self, h):
        self._check(h)
        return 400_000 + 1000 * h + 123  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._check(h)
        return 5_000_000_000 + h  # mJ

    def nvmlDeviceGetTemperature(self, h, sensor):
        self._check(h)
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return 45 + h

    def nvmlDeviceGetClockInfo(self, h, which):
        self._check(h)
        return {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}[which]

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check(h)
        return types.SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self._check(h)
        return 0x4

    def nvmlDeviceGetFieldValues(self, h, ids):  # the last call of a poll
        self._check(h)
        self.polls[h] += 1
        out = []
        for fid in ids:
            if fid == pynvml.NVML_FI_DEV_POWER_INSTANT:
                if h in self.no_instant:
                    out.append(FieldValue(pynvml.NVML_ERROR_NOT_SUPPORTED))
                else:
                    out.append(FieldValue(0, pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, uiVal=455_500))
            elif fid == pynvml.NVML_FI_DEV_MEMORY_TEMP:
                out.append(FieldValue(0, pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, uiVal=60 + h))
            else:
                out.append(FieldValue(pynvml.NVML_ERROR_NOT_SUPPORTED))
        return out


def test_reads_identity_and_every_field_in_si():
    lib = FakeNvml(2)
    src = NvmlSource(lib, host="n1", clock=lambda: 1000.0)
    d = src.devices()
    assert [g.uuid for g in d] == ["GPU-fake-0", "GPU-fake-1"]
    assert d[1].pci_bus_id == "00000000:19:00.0" and d[0].name == "NVIDIA H100 80GB HBM3"
    assert d[0].power_limit == 700.0 and d[0].temp_slowdown == 87.0 and d[0].temp_shutdown == 92.0
    b = src.read()
    assert b.time_ns.tolist() == [1000 * 10**9] * 2
    v = b.values
    assert v["power_average"].tolist() == [400.123, 401.123]
    assert v["power_instant"].tolist() == [455.5, 455.5]
    assert v["energy_total"].tolist() == [5_000_000.0, 5_000_000.001]
    assert v["temp_gpu"].tolist() == [45.0, 46.0] and v["temp_memory"].tolist() == [60.0, 61.0]
    assert v["clock_sm"].tolist() == [1980.0] * 2 and v["clock_memory"].tolist() == [2619.0] * 2
    assert v["utilization_gpu"].tolist() == [97.0] * 2
    assert v["clocks_event_reasons"].tolist() == [4.0] * 2
    assert "NVML_FI_DEV_POWER_INSTANT" in src.provenance()["power_instant"].origin
    assert src.provenance()["power_average"].kind == "average"
    src.close()
    assert lib.shutdown


def test_unsupported_field_marks_that_field_only(caplog):
    lib = FakeNvml(2, no_instant={1})

    def no_memtemp(h, ids):  # a driver that raises NotSupported for the whole call on GPU 0
        if h == 0:
            raise pynvml.NVMLError_NotSupported()
        return FakeNvml.nvmlDeviceGetFieldValues(lib, h, ids)

    lib.nvmlDeviceGetFieldValues = no_memtemp
    src = NvmlSource(lib, host="n1")
    for _ in range(3):
        b = src.read()
    v = b.values
    assert math.isnan(v["power_instant"][0]) and math.isnan(v["temp_memory"][0])
    assert math.isnan(v["power_instant"][1]) and v["temp_memory"][1] == 61.0
    assert v["power_average"].tolist() == [400.123, 401.123]
    assert src.status()["unsupported"] == {
        "GPU-fake-0": ["power_instant", "temp_memory"],
        "GPU-fake-1": ["power_instant"],
    }
    assert caplog.text.count("unsupported") == 3  # logged once per GPU and field, not per poll


def test_driver_without_a_field_or_function():
    lib = FakeNvml(1, drop=["NVML_FI_DEV_POWER_INSTANT"])
    del FakeNvml.nvmlDeviceGetCurrentClocksEventReasons  # an old driver/binding
    try:
        src = NvmlSource(lib, host="n1")
        b = src.read()
    finally:
        FakeNvml.nvmlDeviceGetCurrentClocksEventReasons = lambda self, h: 0x4
    assert math.isnan(b.values["power_instant"][0])
    assert math.isnan(b.values["clocks_event_reasons"][0])
    assert b.values["temp_memory"][0] == 60.0
    assert set(src.status()["unsupported"]["GPU-fake-0"]) == {
        "power_instant",
        "clocks_event_reasons",
    }


def test_function_not_found_error_is_unsupported():
    lib = FakeNvml(1)

    def missing(h):
        raise pynvml.NVMLError_FunctionNotFound()

    lib.nvmlDeviceGetTotalEnergyConsumption = missing
    b = NvmlSource(lib, host="n1").read()
    assert math.isnan(b.values["energy_total"][0]) and b.values["power_average"][0] == 400.123


def test_lost_gpu_is_marked_and_others_continue():
    lib = FakeNvml(3, lost_after={1: 2})
    src = NvmlSource(lib, host="n1")
    assert src.read().gpu.tolist() == [0, 1, 2]
    assert src.read().gpu.tolist() == [0, 1, 2]
    b = src.read()
    assert b.gpu.tolist() == [0, 2]
    assert src.read().gpu.tolist() == [0, 2]
    assert list(src.status()["lost"]) == ["GPU-fake-1"]
    exp = Exporter("n1", "nvml")
    exp.update(b, src.devices())
    exp.set_lost({src.devices()[1].key: src.devices()[1]})
    text = exp.render()
    assert 'twin_gpu_lost{gpu="1",UUID="GPU-fake-1",Hostname="n1"} 1' in text
    assert 'twin_gpu_lost{gpu="2",UUID="GPU-fake-2",Hostname="n1"} 0' in text
    assert 'DCGM_FI_DEV_POWER_USAGE{gpu="1"' not in text


@pytest.mark.parametrize(
    "err", [pynvml.NVMLError_DriverNotLoaded, pynvml.NVMLError_LibraryNotFound]
)
def test_no_driver_clear_message(err):
    lib = FakeNvml(1)

    def fail():
        raise err()

    lib.nvmlInit = fail
    with pytest.raises(NvmlUnavailable, match="--source sim"):
        NvmlSource(lib)
    lib = FakeNvml(0)
    with pytest.raises(NvmlUnavailable, match="no GPU"):
        NvmlSource(lib)


def test_cli_nvml_without_driver_exits_2_with_message():
    pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    except pynvml.NVMLError:
        pass
    r = twin("sensord", "--source", "nvml", "--store", "/tmp/never-created-by-tests.db")
    assert r.returncode == 2
    assert "NVML is not usable here" in r.stderr and "--source sim" in r.stderr


def test_values_are_float_arrays():
    b = NvmlSource(FakeNvml(1), host="n").read()
    assert all(a.dtype == np.float64 for a in b.values.values())
