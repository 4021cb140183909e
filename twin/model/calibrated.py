r"""A calibration applied to the facility model: each calibrated GPU's parameters where it sits.

``twin calibrate --out params.nc`` fits, per GPU, the die's rise over its coolant inlet per watt
of package power :math:`R_{cal}` (``resistance``, K/W), the heat capacity of the die node
(``capacitance``, J/K) and the leakage slope (``leakage_coeff``, 1/K). This module puts them into
:class:`physics.facility.FacilityParams`, so that ``twin simulate``, ``twin optimize`` and the
dashboard run on the calibrated GPUs rather than on the spec's nominal one.

Where a GPU sits
    Its location label, ``SITE/BUILDING/FLOOR/ROW/RACK/TRAY/GPU`` (:data:`LOCATION_SCHEME`): the
    site's key in the facility spec, then 0-based indices, each optionally after a letter prefix
    (``mount_pleasant/b0/f1/r12/k3/t5/g2`` = ``mount_pleasant/0/1/12/3/5/2``). ``GPU`` counts
    the GPUs of a tray; GPU ``g`` is on plate path ``g // plates_in_series``, position
    ``g % plates_in_series`` in series. The label is the one ``twin sensord --location`` records,
    (a host labelled down to its tray, ``SITE/BUILDING/FLOOR/ROW/RACK/TRAY``, has each GPU's
    NVML index appended), or comes from a map file (CSV with columns ``gpu`` — UUID or telemetry GPU id — and
    ``location``) that overrides it.

The resistance on the facility's terms
    The facility model splits :math:`R_{cal}` as :func:`twin.model.components.gpu_params` does
    for the vendor figure: at the package's TDP split, :math:`T_d - T_{in} = R_{pw}\,Q +
    R_{jw}\,Q_{die}` with :math:`R_{pw} = 1/(\varepsilon\,\dot m c_p)` the plate's wall-to-inlet
    resistance at the design path flow (:func:`physics.coldplate.junction_to_inlet_resistance`
    with :math:`R_{jw}=0`). So :math:`R_{jw} = (R_{cal} - R_{pw})/s_{die}`; a GPU whose
    :math:`R_{cal}` is below what the plate alone allows keeps 5 % of the spec's :math:`R_{jw}`. The fit's slow branch and conductance curvature enter through
    :math:`R_{cal}` at the training power (docs/calibration.md); their dynamics are not carried.

The fleet prior
    GPUs of the calibrated GPU model without a calibration of their own (no label, a label
    elsewhere, a parameter not identified) draw from the calibrated population: log-normal with
    the robust median and spread (1.4826 MAD) of the population's log-parameters, anomalies
    excluded, so one degraded plate is not copied across the fleet. GPUs of other models keep
    the spec's values. :func:`calibration_counts` says how many of each.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import xarray as xr

from twin.spec import FacilitySpec, Site
from twin.units import SpecError

LOCATION_SCHEME = "SITE/BUILDING/FLOOR/ROW/RACK/TRAY/GPU"
_INDEX = re.compile(r"^[A-Za-z]*(\d+)$")
#: Units the file must give for each parameter the facility takes (read, never assumed).
_UNITS = {"resistance": "K/W", "capacitance": "J/K", "leakage_coeff": "1/K"}
#: Share of the spec's junction-wall resistance kept where the calibration asks for less.
_RJW_FLOOR = 0.05


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Per-GPU parameters of a calibration file, with the GPUs' identities."""

    path: str
    gpu_model: str  # the spec GPU model the telemetry was fitted against
    gpu: list[str]
    location: list[str]  # "" where unknown
    resistance: np.ndarray  # [K/W] die over inlet per package W (NaN: not identified)
    capacitance: np.ndarray  # [J/K]
    leakage_coeff: np.ndarray  # [1/K]
    anomaly: np.ndarray  # bool


@dataclasses.dataclass(frozen=True)
class Slot:
    """A GPU's place in the facility model: site, rack (global), tray, plate path, series."""

    site: int
    rack: int
    tray: int
    path: int
    series: int


def load_calibration(path: str | Path, gpu_map: str | Path | None = None) -> Calibration:
    """Read ``twin calibrate --out`` (netCDF), checking units; ``gpu_map`` relabels GPUs."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("--calibration", str(path), "an existing file from twin calibrate --out")
    try:
        ds = xr.load_dataset(path)
    except (OSError, ValueError) as exc:
        raise SpecError("--calibration", str(path), f"a netCDF calibration file ({exc})") from exc
    for name, units in _UNITS.items():
        if name not in ds:
            raise SpecError(f"{path}:{name}", "<missing>", "a twin calibration file")
        if ds[name].attrs.get("units") != units:
            raise SpecError(f"{path}:{name}.units", ds[name].attrs.get("units"), units)
    if not ds.attrs.get("gpu_model"):
        raise SpecError(f"{path}:gpu_model", "<missing>", "the GPU model it was fitted to")
    gpus = [str(g) for g in ds["gpu"].values]
    location = [str(v) for v in ds["location"].values] if "location" in ds else [""] * len(gpus)
    if "gpu_index" in ds:  # a host labelled down to its tray: the GPU's index completes it
        location = [
            f"{loc}/{int(i)}" if loc.count("/") == 5 and str(i).lstrip("-").isdigit() and int(i) >= 0
            else loc
            for loc, i in zip(location, ds["gpu_index"].values, strict=True)
        ]  # fmt: skip
    if gpu_map is not None:
        location = _relabel(gpus, ds, location, read_gpu_map(gpu_map))
    return Calibration(
        path=str(path),
        gpu_model=str(ds.attrs["gpu_model"]),
        gpu=gpus,
        location=location,
        resistance=ds["resistance"].values.astype(float),
        capacitance=ds["capacitance"].values.astype(float),
        leakage_coeff=ds["leakage_coeff"].values.astype(float),
        anomaly=ds["anomaly"].values.astype(bool) if "anomaly" in ds else np.zeros(len(gpus), bool),
    )


def read_gpu_map(path: str | Path) -> dict[str, str]:
    """A map file: CSV with a header ``gpu,location`` (``gpu`` a UUID or telemetry GPU id)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("--gpu-map", str(path), "an existing CSV file with columns gpu,location")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or {"gpu", "location"} - set(rows[0]):
        raise SpecError("--gpu-map", str(path), "a CSV header with columns gpu,location")
    return {r["gpu"].strip(): r["location"].strip() for r in rows}


def _relabel(gpus: list[str], ds: xr.Dataset, location: list[str], m: dict) -> list[str]:
    uuids = [str(u) for u in ds["uuid"].values] if "uuid" in ds else [""] * len(gpus)
    return [m.get(u) or m.get(g) or loc for g, u, loc in zip(gpus, uuids, location, strict=True)]


def parse_location(label: str, spec: FacilitySpec) -> Slot | None:
    """The :class:`Slot` of a location label; None for a site that ``spec`` does not have."""
    parts = label.strip().split("/")
    if len(parts) != 7:
        raise SpecError("location", label, f"{LOCATION_SCHEME} (7 parts separated by '/')")
    keys = [s.key for s in spec.sites]
    if parts[0] not in keys:
        return None
    site_i = keys.index(parts[0])
    site = spec.sites[site_i]
    idx = [_index(label, name, part) for name, part in zip(_PARTS, parts[1:], strict=True)]
    for name, value, n in zip(_PARTS, idx, _sizes(site), strict=True):
        if value >= n:
            raise SpecError("location", label, f"{name} below {n} at site {site.key}")
    b_, f_, row, rack, tray, g = idx
    b = site.building
    local = ((b_ * b.floors + f_) * b.rows_per_floor + row) * b.racks_per_row + rack
    first = sum(s.racks for s in spec.sites[:site_i])
    series = b.rack.plates_in_series
    return Slot(site_i, first + local, tray, g // series, g % series)


_PARTS = ("BUILDING", "FLOOR", "ROW", "RACK", "TRAY", "GPU")


def _index(label: str, name: str, part: str) -> int:
    m = _INDEX.match(part.strip())
    if not m:
        raise SpecError("location", label, f"{name} as a 0-based index such as 3 or r3")
    return int(m.group(1))


def _sizes(site: Site) -> tuple[int, ...]:
    b = site.building
    r = b.rack
    return (b.count, b.floors, b.rows_per_floor, b.racks_per_row, r.trays,
            r.paths_per_tray * r.plates_in_series)  # fmt: skip


def calibration_slots(spec: FacilitySpec, cal: Calibration) -> list[Slot | None]:
    """Each calibrated GPU's slot (None: no label, or a site elsewhere); duplicates rejected."""
    slots: list[Slot | None] = []
    seen: dict[Slot, str] = {}
    for gpu, label in zip(cal.gpu, cal.location, strict=True):
        slot = parse_location(label, spec) if label else None
        if slot is not None and slot in seen:
            raise SpecError("location", label, f"one GPU per slot ({seen[slot]} is there too)")
        if slot is not None:
            seen[slot] = gpu
        slots.append(slot)
    return slots


def calibration_counts(spec: FacilitySpec, cal: Calibration) -> dict[str, int]:
    """How many GPUs of the facility take their own calibration, the fleet prior, the spec."""
    slots = calibration_slots(spec, cal)
    own = sum(
        1
        for s, r in zip(slots, cal.resistance, strict=True)
        if s is not None and spec.sites[s.site].building.rack.gpu.name == cal.gpu_model
        and np.isfinite(r) and r > 0
    )  # fmt: skip
    same_model = sum(s.gpus for s in spec.sites if s.building.rack.gpu.name == cal.gpu_model)
    total = sum(s.gpus for s in spec.sites)
    return {
        "calibrated": own,
        "fleet_prior": same_model - own,
        "spec_default": total - same_model,
        "calibration_gpus_elsewhere": sum(1 for s in slots if s is None),
    }


def fleet_prior(values: np.ndarray, anomaly: np.ndarray) -> tuple[float, float] | None:
    """Robust log-normal (median, sd) of a positive parameter over the non-anomalous GPUs."""
    v = values[np.isfinite(values) & (values > 0) & ~anomaly]
    if v.size == 0:
        return None
    logs = np.log(v)
    med = float(np.median(logs))
    return med, float(1.4826 * np.median(np.abs(logs - med)))


def calibrated_gpu_fields(
    fields: dict[str, np.ndarray],
    site: Site,
    site_index: int,
    first_rack: int,
    plate_resistance: float,
    die_share: float,
    slots: list[Slot | None],
    cal: Calibration,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``fields`` of one site with per-GPU resistance, capacity and leakage from ``cal``."""
    if site.building.rack.gpu.name != cal.gpu_model:
        return fields
    r = site.building.rack
    shape = (site.racks, r.trays, r.paths_per_tray, r.plates_in_series)
    floor = _RJW_FLOOR * float(np.asarray(fields["gpu_resistance_jw"]).flat[0])
    r_jw_cal = np.maximum((cal.resistance - plate_resistance) / die_share, floor)
    out = dict(fields)
    for name, own in (
        ("gpu_resistance_jw", r_jw_cal),
        ("gpu_capacitance", cal.capacitance),
        ("gpu_leakage_coeff", cal.leakage_coeff),
    ):
        arr = _prior_draw(np.broadcast_to(fields[name], shape), own, cal.anomaly, rng)
        for slot, value in zip(slots, own, strict=True):
            if slot is not None and slot.site == site_index and np.isfinite(value) and value > 0:
                arr[slot.rack - first_rack, slot.tray, slot.path, slot.series] = value
        out[name] = arr
    return out


def _prior_draw(
    base: np.ndarray, own: np.ndarray, anomaly: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Every GPU drawn from the population of ``own`` (the spec's value where none is usable)."""
    prior = fleet_prior(own, anomaly)
    if prior is None:
        return np.array(base, dtype=float)
    med, sd = prior
    return np.exp(rng.normal(med, sd, base.shape))


__all__ = [
    "LOCATION_SCHEME",
    "Calibration",
    "Slot",
    "calibrated_gpu_fields",
    "calibration_counts",
    "calibration_slots",
    "fleet_prior",
    "load_calibration",
    "parse_location",
    "read_gpu_map",
]
