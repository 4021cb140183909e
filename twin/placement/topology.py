"""Racks, rows (CDUs), sites, their power caps and GPU limits; inputs no policy can serve.

:func:`build_topology` reads them from a prepared run (caps from :func:`parse_caps`);
:func:`check_feasible` raises :class:`Infeasible`, naming the binding constraint and where.

Constraints of every placement: GPU die temperature <= max-operating - ``margin`` (the hottest
busy GPU, at its high-phase power, steady), HBM <= its limit - ``margin``, rack/row (CDU)/site
peak power caps, no GPU over-committed, locality (:mod:`twin.io.jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from twin.io.jobs import JobSet
from twin.placement.steady import steady_state
from twin.simulation import Run
from twin.units import ZERO_CELSIUS_K, SpecError


class Infeasible(SpecError):
    """No placement can satisfy a constraint; names the constraint, where, and what is needed."""


@dataclass
class Topology:
    """Racks, rows, sites, caps and per-rack GPU model constants (numpy, SI)."""

    site_keys: list[str]
    rack_site: np.ndarray
    rack_cdu: np.ndarray
    cdu_building: np.ndarray
    gpus_per_rack: int
    rack_cap: np.ndarray  # W
    cdu_cap: np.ndarray  # W
    site_cap: np.ndarray  # W
    tdp: np.ndarray  # (R,) W
    util_a: np.ndarray  # u = a * fraction + b
    util_b: np.ndarray
    other_idle: np.ndarray
    other_max: np.ndarray
    idle_power: np.ndarray  # (R,) per GPU W
    gpu_limit: np.ndarray  # (R,) K, max operating - margin
    hbm_limit: np.ndarray  # (R,) K
    tz_hours: np.ndarray  # (S,)
    site_gpus: np.ndarray  # (S,)

    @property
    def n_racks(self) -> int:
        return len(self.rack_site)

    def utilization(self, frac, racks) -> np.ndarray:
        """GPU utilization on ``racks`` of a job drawing ``frac`` of TDP (>= 0)."""
        return np.clip(self.util_a[racks] * frac + self.util_b[racks], 0.0, None)


def parse_caps(items: list[str] | None) -> dict:
    """``--cap rack=120kW --cap row=1.2MW --cap site:atlanta=150MW`` -> {"rack": W, ...}."""
    from twin.units import parse_quantity

    out: dict = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not (key in ("rack", "row") or key.startswith("site:")):
            raise SpecError(
                "--cap", item, "rack=POWER, row=POWER or site:KEY=POWER, e.g. rack=120kW"
            )
        out[key] = parse_quantity(val.strip(), f"--cap {key}", "W")
        if out[key] <= 0:
            raise SpecError(f"--cap {key}", val, "a positive power")
    return out


def build_topology(run: Run, caps: dict | None = None, margin: float = 5.0) -> Topology:
    """Topology and caps of ``run``'s facility (defaults: rack design power, CDU capacity)."""
    caps = caps or {}
    p, spec = run.params, run.spec
    site_of_rack = np.asarray(p.building_site)[np.asarray(p.cdu_building)[np.asarray(p.rack_cdu)]]
    keys = [s.key for s in spec.sites]
    for k in caps:
        if k.startswith("site:") and k[5:] not in keys:
            raise SpecError(f"--cap {k}", caps[k], f"a site of {spec.name}: {', '.join(keys)}")
    per_site = lambda f: np.array([f(s) for s in spec.sites])[site_of_rack]  # noqa: E731
    g = lambda s: s.building.rack.gpu  # noqa: E731
    a = per_site(lambda s: g(s).tdp / g(s).power_dynamic)
    b = per_site(
        lambda s: -(g(s).power_idle_static + g(s).leakage_at_reference) / g(s).power_dynamic
    )
    n_cdu = p.n_cdus
    cdu_site = np.asarray(p.building_site)[np.asarray(p.cdu_building)]
    cdu_cap = np.array([spec.sites[s].building.cdu.capacity for s in cdu_site], float)
    if "row" in caps:
        cdu_cap[:] = caps["row"]
    rack_cap = per_site(lambda s: s.building.rack.design_power).astype(float)
    if "rack" in caps:
        rack_cap[:] = caps["rack"]
    site_cap = np.array([np.sum(cdu_cap[cdu_site == i]) for i in range(len(keys))])
    for i, k in enumerate(keys):
        if f"site:{k}" in caps:
            site_cap[i] = caps[f"site:{k}"]
    return Topology(
        site_keys=keys,
        rack_site=site_of_rack,
        rack_cdu=np.asarray(p.rack_cdu),
        cdu_building=np.asarray(p.cdu_building),
        gpus_per_rack=int(np.prod(p.gpu_shape[1:])),
        rack_cap=rack_cap,
        cdu_cap=cdu_cap[:n_cdu],
        site_cap=site_cap,
        tdp=per_site(lambda s: g(s).tdp),
        util_a=a,
        util_b=b,
        other_idle=per_site(lambda s: s.building.rack.other_power_idle),
        other_max=per_site(lambda s: s.building.rack.other_power_max),
        idle_power=per_site(lambda s: g(s).idle_power),
        gpu_limit=per_site(lambda s: g(s).max_operating_temperature) - margin,
        hbm_limit=per_site(lambda s: g(s).hbm_max_operating_temperature) - margin,
        tz_hours=np.array([s.timezone_offset_hours for s in spec.sites]),
        site_gpus=np.array([s.gpus for s in spec.sites]),
    )


def peak_power(topo: Topology, racks, n_gpus, frac_high):
    """Peak power a job adds on ``racks`` with ``n_gpus`` each [W] (GPUs at the high phase,
    their share of the rack's other IT)."""
    other = (topo.other_max[racks] - topo.other_idle[racks]) * n_gpus / topo.gpus_per_rack
    return n_gpus * (frac_high * topo.tdp[racks] - topo.idle_power[racks]) + other


def check_feasible(run: Run, topo: Topology, jobs: JobSet) -> None:
    """Raise :class:`Infeasible` (naming constraint and place) for a job no policy can place."""
    t = jobs.table
    big = int(topo.site_gpus.max())
    i_big = int(np.argmax(topo.site_gpus))
    too_big = t.gpus > big
    if too_big.any():
        j = t[too_big].iloc[0]
        raise Infeasible(
            f"job {j.id} field gpus",
            int(j.gpus),
            f"at most {big} GPUs, the largest site ({topo.site_keys[i_big]}); jobs stay in one site",
        )
    g_rack = np.minimum(t.gpus.to_numpy(), topo.gpus_per_rack)
    r_best = int(np.argmax(topo.rack_cap))
    need = (
        peak_power(topo, np.full(len(t), r_best), g_rack, t.power_high.to_numpy())
        + topo.other_idle[r_best]
        + (topo.gpus_per_rack - g_rack) * topo.idle_power[r_best]
    )
    bad = need > topo.rack_cap[r_best]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise Infeasible(
            f"rack power cap (rack {r_best}, site {topo.site_keys[topo.rack_site[r_best]]})",
            f"{topo.rack_cap[r_best] / 1e3:.1f} kW",
            f"at least {need[i] / 1e3:.1f} kW for job {t.id[i]} ({g_rack[i]} GPUs of it in one rack "
            f"at {t.power_high[i]:.2f} TDP); raise --cap rack",
        )
    rack_idle = topo.other_idle + topo.gpus_per_rack * topo.idle_power
    for s, key in enumerate(topo.site_keys):
        m = topo.rack_site == s
        idle = float(rack_idle[m].sum())
        if idle > topo.site_cap[s]:
            raise Infeasible(
                f"site power cap (site {key})",
                f"{topo.site_cap[s] / 1e6:.2f} MW",
                f"at least the site's idle power {idle / 1e6:.2f} MW; raise --cap site:{key}",
            )
    for c in range(len(topo.cdu_cap)):
        idle = float(rack_idle[topo.rack_cdu == c].sum())
        if idle > topo.cdu_cap[c]:
            raise Infeasible(
                f"row (CDU) power cap (row {c}, site {topo.site_keys[topo.rack_site[topo.rack_cdu == c][0]]})",
                f"{topo.cdu_cap[c] / 1e3:.1f} kW",
                f"at least the row's idle power {idle / 1e3:.1f} kW; raise --cap row",
            )
    # Thermal: the hottest job class at the design setpoints, steady.
    p, d = run.params, run.derived
    u_hot = jnp.asarray(topo.utilization(float(t.power_high.max()), np.arange(topo.n_racks)))
    s = jax.jit(steady_state)(p, d, u_hot, u_hot, jnp.asarray(run.hour0))
    over = np.asarray(s.gpu_hot) - topo.gpu_limit
    if (over > 0).all():
        r = int(np.argmin(over))
        raise Infeasible(
            f"GPU temperature limit (rack {r}, site {topo.site_keys[topo.rack_site[r]]})",
            f"{float(s.gpu_hot[r]) - ZERO_CELSIUS_K:.1f} degC predicted",
            f"at most {topo.gpu_limit[r] - ZERO_CELSIUS_K:.1f} degC (max operating minus margin) "
            "for the hottest job at the design setpoints; lower the supply setpoints or the margin",
        )
