"""Placement of a snapshot of jobs present together (each <= one rack), for checks on small cases:
the twin's rounding (:func:`place_snapshot`), the exact linearized placement
(:func:`milp_placement`, ``scipy.optimize.milp``/HiGHS) and the steady objective of given
assignments (:func:`snapshot_objective`, for exhaustive search).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from physics import facility as F
from twin.placement.allocation import RackState, allocate, rack_score
from twin.placement.steady import derive_jit, evaluate, hot_coefficients, steady_state
from twin.placement.topology import Infeasible, Topology, peak_power


def milp_placement(
    cost: np.ndarray,
    job_gpus: np.ndarray,
    free: np.ndarray,
    job_power: np.ndarray,
    rack_cap: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Exact linearized placement: each job (<= one rack) on one rack, minimizing Σ cost[j, r] x[j, r]
    s.t. GPUs and rack power caps (``scipy.optimize.milp``, HiGHS). Returns the rack of each job."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    nj, nr = cost.shape
    nv = nj * nr
    a = lil_matrix((nj + 2 * nr, nv))
    for j in range(nj):
        a[j, j * nr : (j + 1) * nr] = 1.0
        for r in range(nr):
            a[nj + r, j * nr + r] = job_gpus[j]
            a[nj + nr + r, j * nr + r] = job_power[j]
    lo = np.r_[np.ones(nj), np.full(2 * nr, -np.inf)]
    hi = np.r_[np.ones(nj), free, rack_cap]
    res = milp(
        cost.ravel(),
        constraints=LinearConstraint(a.tocsr(), lo, hi),
        integrality=np.ones(nv),
        bounds=Bounds(0, 1),
    )
    if not res.success:
        raise Infeasible(
            "milp placement", res.message, "a feasible assignment of the jobs to racks"
        )
    return res.x.reshape(nj, nr).argmax(axis=1), float(res.fun)


def place_snapshot(
    p: F.FacilityParams,
    topo: Topology,
    gpus: np.ndarray,
    workload: np.ndarray,
    frac_mean: np.ndarray,
    frac_high: np.ndarray,
    hours: float,
    weight=None,
) -> tuple[np.ndarray, float]:
    """Twin rounding for a set of jobs present together (each <= one rack): jobs in order, each
    on the feasible rack of least marginal cost (gradient of the steady objective with respect to
    rack utilization, refreshed after every job). Returns each job's rack and the objective [W]."""
    r_n = p.n_racks
    weight = jnp.ones(p.n_sites) if weight is None else jnp.asarray(weight)
    h = jnp.asarray(hours, dtype=float)
    u_mean = np.zeros(r_n)
    u_hot = np.zeros(r_n)
    d = derive_jit(p)
    hot = hot_coefficients(p, d, np.asarray(p.tcs_supply_setpoint)[topo.rack_cdu])
    racks = RackState.idle(topo, p.n_cdus, hot, np.zeros(r_n), np.random.default_rng(0))
    out = np.full(len(gpus), -1)
    for j in range(len(gpus)):
        _, _, grad_u = evaluate(p, jnp.asarray(u_mean), jnp.asarray(u_hot), h, weight)
        racks.cost = np.asarray(grad_u)
        alloc = allocate(
            "twin",
            racks,
            int(gpus[j]),
            str(workload[j]),
            float(frac_high[j]),
            rack_score("twin", racks),
        )
        if alloc is None:
            raise Infeasible(
                f"job {j} gpus", int(gpus[j]), "a rack with enough free GPUs within the caps"
            )
        r = int(alloc[0][0])
        out[j] = r
        racks.free[r] -= gpus[j]
        add = peak_power(topo, np.array([r]), np.array([gpus[j]]), frac_high[j])[0]
        racks.rack_peak[r] += add
        racks.cdu_peak[topo.rack_cdu[r]] += add
        racks.site_peak[topo.rack_site[r]] += add
        u_mean[r] += topo.utilization(frac_mean[j], np.array([r]))[0] * gpus[j] / topo.gpus_per_rack
        u_hot[r] = max(u_hot[r], topo.utilization(frac_high[j], np.array([r]))[0])
    val, _, _ = evaluate(p, jnp.asarray(u_mean), jnp.asarray(u_hot), h, weight)
    return out, float(val)


def snapshot_objective(
    p: F.FacilityParams,
    topo: Topology,
    assign,
    gpus: np.ndarray,
    frac_mean: np.ndarray,
    frac_high: np.ndarray,
    hours: float,
    weight=None,
) -> np.ndarray:
    """Weighted steady facility power [W] of assignments ``assign`` (A, jobs) -> (A,) (vmapped)."""
    weight = jnp.ones(p.n_sites) if weight is None else jnp.asarray(weight)
    assign = np.atleast_2d(assign)
    r_n = p.n_racks
    um = np.zeros((len(assign), r_n))
    uh = np.zeros((len(assign), r_n))
    for j in range(assign.shape[1]):
        rj = assign[:, j]
        np.add.at(
            um,
            (np.arange(len(assign)), rj),
            topo.utilization(frac_mean[j], rj) * gpus[j] / topo.gpus_per_rack,
        )
        uh[np.arange(len(assign)), rj] = np.maximum(
            uh[np.arange(len(assign)), rj], topo.utilization(frac_high[j], rj)
        )
    return np.asarray(
        _snapshot_eval(p, jnp.asarray(um), jnp.asarray(uh), jnp.asarray(hours, dtype=float), weight)
    )


@eqx.filter_jit
def _snapshot_eval(p, um, uh, h, weight):
    """Weighted steady facility power of each row of per-rack utilizations ``um``/``uh``."""
    d = F.derive(p)
    return jax.vmap(lambda a, b: jnp.sum(weight * steady_state(p, d, a, b, h).total))(um, uh)
