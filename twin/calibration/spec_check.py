r"""Spec check: do the telemetry fit the named facility spec *before* anything is fitted?

``twin calibrate`` fits each GPU's own resistance and inlet, so it fits a liquid-cooled spec to
an air-cooled node without complaint; the fitted parameters then silently disagree with the
spec that the simulation and the placement use.  This check compares the readings with the
spec's own steady prediction, uncalibrated, and says when they contradict it.

Prediction (the spec's GPU at load, refs 8 case 4): the die at measured package power
:math:`P` (its 30 s trailing mean, the operating point of :mod:`twin.calibration.validation`)
sits above the spec's coolant supply (inlet) temperature :math:`T_{sup}` by the junction ->
inlet resistance of the spec's cold plate (or heat sink) at its design flow,

.. math:: \hat T = T_{sup} + R_{ji}\,P,\qquad
          R_{ji} = R_{jw} + \frac{1}{\varepsilon\,\dot m c_p}
          = R_{j,mean} + \frac{1}{2\,\dot m c_p}

(:func:`physics.coldplate.junction_to_inlet_resistance` on the plate conductance that the
facility model builds from the spec, :mod:`twin.model.design`).  The apparent resistance of a
GPU is the median of :math:`(T - T_{sup})/P` over its readings at load.

Only readings at load are compared (30 s mean power at least ``spec_check_load_fraction`` of
TDP, valid: no gap, not throttled), where the rise dominates the inlet's uncertainty.

Criterion (documented in docs/calibration.md): the data **contradict** the spec when

* the fleet's apparent resistance (median over GPUs) lies outside the range the spec cites for
  it (``resistance_range`` of the GPU model, e.g. 0.023-0.036 K/W for the liquid-cooled H100
  node, 0.041-0.067 K/W for the air-cooled one), or
* the mean residual (reading - prediction) at load exceeds ``spec_check_residual_k`` (5 K) in
  magnitude: more than the inlet prior's 3 K s.d. and far beyond the 1 °C readout.

A contradiction is a warning (the calibration still runs: it fits its own parameters), with a
suggestion: the shipped specs whose cited range holds the apparent resistance.
"""

from __future__ import annotations

import math

import numpy as np

from physics import coldplate, coolant
from twin.calibration.config import CalibrationConfig
from twin.calibration.metrics import moving_average
from twin.io.telemetry import Grid
from twin.model.design import size_site
from twin.spec import FACILITY_DIR, FacilitySpec, load_facility
from twin.units import ZERO_CELSIUS_K, SpecError


def spec_junction_resistance(spec: FacilitySpec) -> float:
    """Junction -> inlet resistance of the spec's first-site GPU at its design flow [K/W].

    The plate (or heat-sink) conductance is the one the facility model builds
    (:func:`physics.coldplate.ua_for_mean_fluid_resistance` at the design path capacity rate),
    read back as :func:`physics.coldplate.junction_to_inlet_resistance`.
    """
    site = spec.sites[0]
    rack = site.building.rack
    g = rack.gpu
    design = size_site(
        site, coolant.coolant_table(spec.tcs_coolant), coolant.coolant_table(spec.fws_coolant)
    )
    path_cap = (
        design.tcs_density
        * design.tcs_specific_heat
        * design.rack_flow
        / (rack.trays * rack.paths_per_tray)
    )
    ua = coldplate.ua_for_mean_fluid_resistance(
        g.resistance_junction_coolant, g.resistance_junction_wall, path_cap
    )
    return float(coldplate.junction_to_inlet_resistance(g.resistance_junction_wall, ua, path_cap))


def _round(x: float, nd: int) -> float | None:
    return round(float(x), nd) if math.isfinite(x) else None


def _specs_holding(resistance: float, exclude: str) -> list[tuple[str, str]]:
    """Shipped facility specs (name, secondary coolant) whose GPU's cited resistance range
    holds ``resistance``."""
    out = []
    for path in sorted(FACILITY_DIR.glob("*.toml")):
        try:
            other = load_facility(path)
        except (SpecError, OSError):
            continue
        rng = other.sites[0].building.rack.gpu.resistance_range
        if other.name != exclude and rng is not None and rng[0] <= resistance <= rng[1]:
            out.append((other.name, other.tcs_coolant))
    return out


def check_spec(grid: Grid, spec: FacilitySpec, cfg: CalibrationConfig) -> dict:
    """The ``spec_check`` block: the uncalibrated spec's prediction against the readings.

    Keys: ``facility``, ``checked`` (False, with ``reason``, where no GPU has enough readings
    at load), the spec's ``inlet_c``, ``resistance_k_per_w`` (junction -> inlet) and its cited
    ``resistance_range_k_per_w``; at load: ``load_threshold_w``, ``readings``,
    ``mean_power_w``, ``measured_mean_c``, ``predicted_mean_c``, ``mean_residual_k``,
    ``max_abs_residual_k``, ``apparent_resistance_k_per_w`` (median over GPUs) and
    ``apparent_resistance_gpus_k_per_w`` (min, max); ``contradiction``, ``reasons``,
    ``suggestion`` and ``message`` (None where there is no contradiction).
    """
    site = spec.sites[0]
    g = site.building.rack.gpu
    inlet_c = float(site.tcs_supply_temperature - ZERO_CELSIUS_K)
    r_ji = spec_junction_resistance(spec)
    out: dict = {
        "facility": spec.name,
        "checked": False,
        "inlet_c": round(inlet_c, 2),
        "resistance_k_per_w": round(r_ji, 5),
        "resistance_range_k_per_w": None
        if g.resistance_range is None
        else list(g.resistance_range),
        "contradiction": False,
        "reasons": [],
        "suggestion": None,
        "message": None,
    }
    threshold = cfg.spec_check_load_fraction * g.tdp
    p_op = moving_average(np.nan_to_num(grid.power, nan=0.0), cfg.envelope_window_s / grid.dt)
    loaded = np.isfinite(grid.temp) & ~grid.gap & ~grid.throttled & (p_op >= threshold)
    per_gpu = loaded.sum(1)
    usable = per_gpu >= cfg.min_train_obs
    out["load_threshold_w"] = round(threshold, 1)
    if not usable.any():
        out["reason"] = (
            f"no GPU has {cfg.min_train_obs} readings at load (30 s mean power >= "
            f"{threshold:.0f} W, {100 * cfg.spec_check_load_fraction:.0f} % of TDP)"
        )
        return out
    sel = loaded & usable[:, None]
    temp, power = grid.temp[sel], p_op[sel]
    pred = inlet_c + r_ji * power
    resid = temp - pred
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(sel, (grid.temp - inlet_c) / p_op, np.nan)
    r_gpu = np.array([np.nanmedian(ratio[i]) for i in np.flatnonzero(usable)])
    r_app = float(np.median(r_gpu))
    mean_resid = float(np.mean(resid))
    out.update(
        checked=True,
        readings=int(sel.sum()),
        gpus=int(usable.sum()),
        mean_power_w=round(float(np.mean(power)), 1),
        measured_mean_c=round(float(np.mean(temp)), 2),
        predicted_mean_c=round(float(np.mean(pred)), 2),
        mean_residual_k=round(mean_resid, 2),
        max_abs_residual_k=round(float(np.max(np.abs(resid))), 2),
        apparent_resistance_k_per_w=_round(r_app, 5),
        apparent_resistance_gpus_k_per_w=[_round(r_gpu.min(), 5), _round(r_gpu.max(), 5)],
    )
    reasons = []
    rng = g.resistance_range
    if rng is not None and not rng[0] <= r_app <= rng[1]:
        reasons.append(
            f"apparent junction->inlet resistance {r_app:.4f} K/W (median of {int(usable.sum())} "
            f"GPUs, {r_gpu.min():.4f}-{r_gpu.max():.4f}) outside the spec's cited "
            f"{rng[0]:.3f}-{rng[1]:.3f} K/W (its own {r_ji:.4f} K/W)"
        )
    if abs(mean_resid) > cfg.spec_check_residual_k:
        reasons.append(
            f"dies read {float(np.mean(temp)):.1f} degC on average at load (mean "
            f"{float(np.mean(power)):.0f} W) against the spec's {float(np.mean(pred)):.1f} degC: "
            f"mean residual {mean_resid:+.1f} K (limit ±{cfg.spec_check_residual_k:g} K), "
            f"max |residual| {float(np.max(np.abs(resid))):.1f} K"
        )
    if not reasons:
        return out
    others = _specs_holding(r_app, spec.name)
    if others:
        kinds = {"an air-cooled node" if c == "air" else "a liquid-cooled node" for _, c in others}
        kind = kinds.pop() if len(kinds) == 1 else "another node"
        suggestion = f"the data look like {kind}; try " + " or ".join(
            f"--facility {name}" for name, _ in others
        )
    elif r_app > r_ji:
        suggestion = (
            f"the GPUs run hotter than the spec allows: a warmer inlet than its {inlet_c:.0f} "
            "degC, less flow, or a poorer cooler than the spec describes; give a spec that "
            "matches the node"
        )
    else:
        suggestion = (
            f"the GPUs run cooler than the spec predicts: a colder inlet than its "
            f"{inlet_c:.0f} degC or a better cooler; give a spec that matches the node"
        )
    out.update(
        contradiction=True,
        reasons=reasons,
        suggestion=suggestion,
        message=(
            f"the telemetry contradict facility spec '{spec.name}' ({spec.tcs_coolant} coolant "
            f"at {inlet_c:.0f} degC): "
            + "; ".join(reasons)
            + f". {suggestion[0].upper()}{suggestion[1:]}"
        ),
    )
    return out
