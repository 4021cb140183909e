r"""Batched Levenberg-Marquardt fit of one model structure to many GPUs, with its score "meat".

A batched Levenberg-Marquardt [1]_ on the residual vector of :func:`twin.calibration.model
.standardized_residuals`, Jacobians by forward-mode JAX differentiation through the ``lax.scan`` of the
simulation, ``vmap`` over GPUs.  Besides the fit it returns what the sandwich covariance of
:mod:`twin.calibration.uncertainty` needs: the Gauss-Newton information of the data and prior
rows, and the long-run covariance of the per-step data scores (Bartlett kernel in time, clustered
by temperature level and rounding phase).

References
----------
.. [1] K. Levenberg (1944), D. Marquardt (1963): damped Gauss-Newton least squares.
.. [2] A. C. Cameron, J. B. Gelbach, D. L. Miller, "Robust inference with multiway
   clustering", J. Bus. Econ. Stat. 29 (2011) 238-249.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from twin.calibration.config import NP
from twin.calibration.model import standardized_residuals


def _lm_iterate(theta0, res, jac, basis, data, iterations, tol):
    """Damped Gauss-Newton steps in the subspace ``basis`` until no GPU gains ``tol``.

    ``res(th, *data)`` and ``jac(th, *data)`` are the batched residuals and their Jacobian in
    the active subspace.  Returns the parameters and the cost of every GPU.
    """
    k = basis.shape[1]

    def cost_of(th):
        r = res(th, *data)
        return jnp.sum(r * r, axis=1)

    def cond(carry):
        it, _, _, _, gain = carry
        return (it < iterations) & (gain > tol)

    def body(carry):
        it, th, lam, cost, _ = carry
        J = jac(th, *data)
        r = res(th, *data)
        A = jnp.einsum("gmi,gmj->gij", J, J)
        g = jnp.einsum("gmi,gm->gi", J, r)
        d = jnp.diagonal(A, axis1=1, axis2=2)
        A = A + (lam[:, None] * (d + 1e-9))[:, :, None] * jnp.eye(k)
        step = -jnp.linalg.solve(A, g[..., None])[..., 0]
        cand = th + step @ basis.T
        c_new = cost_of(cand)
        ok = jnp.isfinite(c_new) & (c_new < cost)
        gain = jnp.max(jnp.where(ok, (cost - c_new) / jnp.maximum(cost, 1e-12), 0.0))
        # a rejected step with small damping is not convergence
        gain = jnp.maximum(gain, jnp.where(jnp.any(~ok & (lam < 1e3)), 1.0, 0.0))
        th = jnp.where(ok[:, None], cand, th)
        cost = jnp.where(ok, c_new, cost)
        lam = jnp.clip(jnp.where(ok, lam / 3.0, lam * 4.0), 1e-9, 1e9)
        return it + 1, th, lam, cost, gain

    lam0 = jnp.full(theta0.shape[0], 1e-2)
    carry = (0, theta0, lam0, cost_of(theta0), jnp.inf)
    _, th, _, cost, _ = jax.lax.while_loop(cond, body, carry)
    return th, cost


def _score_meat(J, r, y, w, sigma, block):
    """Long-run covariance of the per-step data scores ``s_k = J_k r_k`` (active subspace).

    ``J`` (G, N, k) is the Jacobian of the data rows, ``r`` (G, N) their residuals in units of
    ``sigma``.  Bartlett-kernel long-run variance in time, as overlapping block sums of length B
    (equal to Newey-West with bandwidth B up to edge terms), plus the clustering by predicted
    temperature level (1 K bins) and by its phase within the 1 K step (0.1 K bins): the rounding
    error of a 1 degC readout is a fixed function of the true temperature (periodic in it), so
    readings at the same level, or at the same phase of different levels, share it however far
    apart in time they are.  Multi-way cluster-robust [2]_: Omega_time + Omega_level +
    Omega_phase minus the white part counted twice; each clustered term is scaled by G/(G - k)
    for G non-empty clusters (the k fitted parameters absorb k cluster directions).
    """
    n, k = J.shape[1], J.shape[2]
    blk = max(1, min(int(block), n))
    s = J * r[:, :, None]
    cs = jnp.concatenate([jnp.zeros_like(s[:, :1]), jnp.cumsum(s, axis=1)], axis=1)
    b = cs[:, blk:] - cs[:, :-blk]
    meat_t = jnp.einsum("gmi,gmj->gij", b, b) / blk
    t_pred = y + r * sigma
    lvl = jnp.clip(jnp.round(t_pred) + 64.0, 0, 255).astype(jnp.int32)
    ph = jnp.clip(jnp.floor((t_pred - jnp.floor(t_pred)) * 10.0), 0, 9).astype(jnp.int32)
    cl = jax.vmap(lambda sg, lv: jax.ops.segment_sum(sg, lv, 256))(s, lvl)
    cp = jax.vmap(lambda sg, lv: jax.ops.segment_sum(sg, lv, 10))(s, ph)

    def dof(g_c):
        return (g_c / jnp.maximum(g_c - k, 1.0))[:, None, None]

    def n_clusters(c):
        return jnp.sum(jnp.any(c != 0.0, axis=2), axis=1).astype(s.dtype)

    n_blocks = jnp.sum(w > 0, axis=1).astype(s.dtype) / blk
    return (
        dof(n_blocks) * meat_t
        + dof(n_clusters(cl)) * jnp.einsum("gci,gcj->gij", cl, cl)
        + dof(n_clusters(cp)) * jnp.einsum("gci,gcj->gij", cp, cp)
        - 2.0 * jnp.einsum("gmi,gmj->gij", s, s)
    )


def _lm_block(
    theta0, active, power, y, frac, w, sigma, mu, prec, dt, iterations, block=120, tol=1e-7
):
    """Batched Levenberg-Marquardt over GPUs in the ``active`` parameter subspace.

    Returns theta, cost, J^T J of the data and prior rows (full ``NP x NP``, zeros outside the
    active block), the data residuals [K] and the HAC long-run covariance of the data scores
    (:func:`_score_meat`, bandwidth ``block`` steps).  Stops early when no GPU improves by
    ``tol``.
    """
    act = jnp.asarray(active)
    k = len(active)
    basis = jnp.zeros((NP, k)).at[act, jnp.arange(k)].set(1.0)
    prec_m = prec * jnp.zeros(NP).at[act].set(1.0)

    def res1(th, p, yy, fr, ww, pm):
        return standardized_residuals(th, p, yy, fr, ww, sigma, mu, pm, dt)

    def jac1(th, p, yy, fr, ww, pm):
        f = lambda z: res1(th + basis @ z, p, yy, fr, ww, pm)  # noqa: E731
        return jax.jacfwd(f)(jnp.zeros(k))

    res: Callable = jax.vmap(res1)
    jac: Callable = jax.vmap(jac1)
    data = (power, y, frac, w, prec_m)
    th, cost = _lm_iterate(theta0, res, jac, basis, data, iterations, tol)
    Jk = jac(th, *data)
    n = power.shape[1]
    r = res(th, *data)[:, :n]
    meat = basis @ _score_meat(Jk[:, :n], r, y, w, sigma, block) @ basis.T
    J = Jk @ basis.T
    Jd, Jp = J[:, :n], J[:, n:]
    return (
        th,
        cost,
        jnp.einsum("gmi,gmj->gij", Jd, Jd),
        jnp.einsum("gmi,gmj->gij", Jp, Jp),
        r * sigma,
        meat,
    )


_lm_jit = jax.jit(_lm_block, static_argnames=("active", "dt", "iterations", "block"))


def fit_structure(
    theta0: np.ndarray,
    active: Sequence[int],
    power: np.ndarray,
    y: np.ndarray,
    frac: np.ndarray,
    w: np.ndarray,
    mu: np.ndarray,
    prec: np.ndarray,
    sigma: float,
    dt: float,
    iterations: int,
    chunk: int,
    block: int = 120,
) -> dict[str, np.ndarray]:
    """Fit one model structure to many GPUs (arrays ``(gpu, step)``), in vectorized blocks."""
    g_n = theta0.shape[0]
    mask = np.zeros((g_n, NP), bool)
    mask[:, list(active)] = True
    chunk = max(1, min(chunk, g_n))
    n_chunks = -(-g_n // chunk)
    chunk = -(-g_n // n_chunks)  # equal blocks: one compiled shape, little padding
    keys = ("theta", "cost", "h_data", "h_prior", "r", "meat")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    yv = np.where(w > 0, y, 0.0)
    for a in range(0, g_n, chunk):
        b = min(a + chunk, g_n)
        args = [pad_to_blocks(x[a:b], chunk) for x in (theta0, mask, power, yv, frac, w, prec)]
        res = _lm_jit(
            jnp.asarray(args[0]),
            tuple(int(i) for i in active),
            jnp.asarray(args[2]),
            jnp.asarray(args[3]),
            jnp.asarray(args[4]),
            jnp.asarray(args[5]),
            float(sigma),
            jnp.asarray(mu),
            jnp.asarray(args[6]),
            dt=float(dt),
            iterations=int(iterations),
            block=int(block),
        )
        m = b - a
        for k, v in zip(keys, res, strict=True):
            out[k].append(np.asarray(v)[:m])
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["mask"] = mask
    return res


def pad_to_blocks(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` with its last row repeated to ``size`` rows (one compiled block shape)."""
    if a.shape[0] == size:
        return a
    pad = np.repeat(a[-1:], size - a.shape[0], axis=0)
    return np.concatenate([a, pad], axis=0)
