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
    The calibration's fast branch :math:`R_f` is the package; its slow branch (:math:`R_s`,
    :math:`\tau_s`) becomes the GPU's sink node and its curvature :math:`\beta` the package's
    conductance curvature (:func:`physics.gpu.first_order_rise_step`,
    :func:`physics.gpu.conductance_curvature_factor`: the functions both models run). The
    facility model reads :math:`R_f` as :func:`twin.model.components.gpu_params` reads the
    vendor figure: at the package's TDP split, :math:`T_d - T_{in} = R_{pw}\,Q +
    R_{jw}\,Q_{die}` with :math:`R_{pw} = 1/(\varepsilon\,\dot m c_p)` the plate's wall-to-inlet
    resistance at the design path flow; :func:`package_split` divides it between plate (a
    per-GPU plate UA) and junction-wall resistance.

The fleet prior
    GPUs of the calibrated GPU model without a calibration of their own (no label, a label
    elsewhere, a parameter not identified) draw from the calibrated population: log-normal with
    the robust median and spread (1.4826 MAD) of the population's log-parameters, anomalies
    excluded, so one degraded plate is not copied across the fleet, and truncated to the range
    the population showed (sink node and curvature: the
    population's median). GPUs of other models keep
    the spec's values. :func:`calibration_counts` says how many of each.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import NamedTuple

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
    # the fit itself (every GPU, identified or not): fast and slow branch, curvature
    r_fast: np.ndarray  # [K/W]
    c_fast: np.ndarray  # [J/K] the fast branch's heat capacity
    r_slow: np.ndarray  # [K/W], 0 where the chosen structure has no slow branch
    tau_slow: np.ndarray  # [s]
    curvature: np.ndarray  # [1/K]
    intercept: np.ndarray  # inlet plus sensor offset [degC]


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
        **_fitted(ds, path),
    )


def _fitted(ds: xr.Dataset, path: Path) -> dict[str, np.ndarray]:
    """Branch parameters from the fitted vector ``theta`` (layout of the calibration's PARAMS)."""
    for need in ("theta", "theta_mask"):
        if need not in ds:
            raise SpecError(f"{path}:{need}", "<missing>", "a twin calibration file")
    names = [str(v) for v in ds["param"].values]
    th, mask = ds["theta"].values, ds["theta_mask"].values.astype(bool)

    def col(name: str) -> int:
        if name not in names:
            raise SpecError(f"{path}:param", name, f"a parameter vector with {name}")
        return names.index(name)

    slow = mask[:, col("log_resistance_slow")]
    return {
        "r_fast": np.exp(th[:, col("log_resistance")]),
        "c_fast": np.exp(th[:, col("log_capacitance")]),
        "r_slow": np.where(slow, np.exp(th[:, col("log_resistance_slow")]), 0.0),
        "tau_slow": np.where(slow, np.exp(th[:, col("log_tau_slow")]), 60.0),
        "curvature": np.where(mask[:, col("beta")], th[:, col("beta")], 0.0),
        "intercept": th[:, col("temp_intercept")],
    }


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
    path_capacity: float,
    die_share: float,
    slots: list[Slot | None],
    cal: Calibration,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``fields`` of one site with each GPU's package, sink node and curvature from ``cal``."""
    if site.building.rack.gpu.name != cal.gpu_model:
        return fields
    r = site.building.rack
    shape = (site.racks, r.trays, r.paths_per_tray, r.plates_in_series)
    ok = np.isfinite(cal.resistance)
    split = package_split(
        cal.r_fast, cal.r_slow, plate_resistance,
        float(np.asarray(fields["gpu_resistance_jw"]).flat[0]), die_share, path_capacity,
    )  # fmt: skip
    ua = plate_conductance(split.r_pw, path_capacity)
    r_jw = np.where(ok, split.r_jw, np.nan)
    out = dict(fields)
    # (field, the calibrated GPUs' values, drawn log-normal (else the population median))
    for name, own, drawn in (
        ("gpu_resistance_jw", r_jw, True),
        ("gpu_capacitance", cal.capacitance, True),
        ("gpu_leakage_coeff", cal.leakage_coeff, True),
        ("coldplate_ua_ref", np.where(ok, ua, np.nan), True),
        ("gpu_sink_resistance", np.where(ok, split.r_slow, np.nan), False),
        ("gpu_sink_time", np.where(ok, cal.tau_slow, np.nan), False),
        ("gpu_conductance_curvature", np.where(ok, cal.curvature, np.nan), False),
    ):
        base = np.broadcast_to(fields[name], shape)
        if drawn:
            arr = _prior_draw(base, own, cal.anomaly, rng)
            usable = np.isfinite(own) & (own > 0)
        else:
            usable = np.isfinite(own)
            typical = own[usable & ~cal.anomaly]
            arr = np.full(shape, np.median(typical) if typical.size else base.flat[0])
        for slot, value, use in zip(slots, own, usable, strict=True):
            if slot is not None and slot.site == site_index and use:
                arr[slot.rack - first_rack, slot.tray, slot.path, slot.series] = value
        out[name] = arr
    return out


class PackageSplit(NamedTuple):
    """A calibrated GPU on the facility's terms (arrays over GPUs)."""

    r_pw: np.ndarray  # plate wall → inlet, 1/(ε ṁ c_p) [K/W]
    r_jw: np.ndarray  # junction → plate wall [K/W]
    r_slow: np.ndarray  # the sink node [K/W]
    clamped: np.ndarray  # bool: the fast branch is below what the plate can reach


#: Highest plate effectiveness a calibrated plate is given [-].
_EPS_MAX = 0.99


def package_split(r_fast, r_slow, r_pw_spec, r_jw_spec, die_share, path_capacity) -> PackageSplit:
    r"""Split a calibrated fast branch :math:`R_f` into plate and junction-wall resistance.

    Both keep the spec's proportion (a degraded interface and a fouled plate look alike in a
    die temperature): :math:`k = R_f / (R_{pw} + s_{die} R_{jw})`, :math:`R_{pw}' = k R_{pw}`,
    :math:`R_{jw}' = k R_{jw}`. The plate cannot beat its coolant: :math:`R_{pw}' \ge
    1/(arepsilon_{max}\dot m c_p)`, :math:`R_{jw}' \ge 5\,\%` of the spec's; what a GPU's
    :math:`R_f` falls short of that floor is taken from its slow branch (the local coolant
    rise that the fit put there), so its steady rise is kept.
    """
    r_fast = np.asarray(r_fast, float)
    k = r_fast / (r_pw_spec + die_share * r_jw_spec)
    r_pw = np.maximum(k * r_pw_spec, 1.0 / (_EPS_MAX * path_capacity))
    r_jw = np.maximum((r_fast - r_pw) / die_share, _RJW_FLOOR * r_jw_spec)
    excess = r_pw + die_share * r_jw - r_fast
    return PackageSplit(
        r_pw, r_jw, np.maximum(np.asarray(r_slow, float) - excess, 0.0), excess > 1e-12
    )


def plate_conductance(r_pw, path_capacity):
    r"""Plate UA [W/K] with wall-to-inlet resistance :math:`R_{pw} = 1/(arepsilon C)`:
    :math:`UA = -C\ln(1-arepsilon)` (:mod:`physics.coldplate`)."""
    eps = np.clip(1.0 / (np.asarray(r_pw) * path_capacity), 1e-9, _EPS_MAX)
    return -path_capacity * np.log1p(-eps)


def _prior_draw(
    base: np.ndarray, own: np.ndarray, anomaly: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Every GPU drawn from the population of ``own`` (the spec's value where none is usable)."""
    prior = fleet_prior(own, anomaly)
    if prior is None:
        return np.array(base, dtype=float)
    med, sd = prior
    seen = own[np.isfinite(own) & (own > 0) & ~anomaly]
    # within what the fleet showed: a log-normal tail over 300k draws would invent GPUs worse
    # than any measured one (and put them in every rack)
    return np.clip(np.exp(rng.normal(med, sd, base.shape)), seen.min(), seen.max())


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
