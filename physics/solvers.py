"""Root finding with implicit differentiation.

Every nonlinear solve in the model goes through :func:`solve_monotone` or :func:`solve_newton`,
both built on :func:`jax.lax.custom_root`, so gradients flow through the implicit function theorem
(dx*/dθ = -(∂f/∂x)⁻¹ ∂f/∂θ) and never through the unrolled iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


def _diagonal_tangent_solve(g: Callable, y: jax.Array) -> jax.Array:
    # The problems solved by solve_monotone are elementwise: the Jacobian is diagonal.
    return y / g(jnp.ones_like(y))


def solve_monotone(
    f: Callable[[jax.Array], jax.Array],
    lower: jax.Array,
    upper: jax.Array,
    iterations: int = 60,
) -> jax.Array:
    """Solve elementwise ``f(x) = 0`` for ``x`` in ``[lower, upper]``, ``f`` monotone in each element.

    Bisection (robust, fixed iteration count so it jits and vmaps) polished by two Newton steps;
    the derivative is implicit.  Elements whose root lies outside the bracket return the nearer
    bound with a meaningless gradient, so callers whose actuators saturate use
    :func:`solve_monotone_saturating`.
    """
    lower = jnp.asarray(lower)
    upper = jnp.asarray(upper)

    def solve(fun, x0):
        del x0
        lo, hi = jnp.broadcast_arrays(lower, upper)
        f_lo = fun(lo)
        increasing = fun(hi) >= f_lo

        def body(_, bracket):
            a, b = bracket
            m = 0.5 * (a + b)
            fm = fun(m)
            go_right = jnp.where(increasing, fm < 0, fm > 0)
            return jnp.where(go_right, m, a), jnp.where(go_right, b, m)

        a, b = jax.lax.fori_loop(0, iterations, body, (lo, hi))
        x = 0.5 * (a + b)
        for _ in range(2):
            fx, dfx = jax.jvp(fun, (x,), (jnp.ones_like(x),))
            step = jnp.where(jnp.abs(dfx) > 0, fx / jnp.where(dfx == 0, 1.0, dfx), 0.0)
            x = jnp.clip(x - step, lo, hi)
        return x

    x0 = 0.5 * (lower + upper)
    return jax.lax.custom_root(f, x0, solve, _diagonal_tangent_solve)


class NewtonResult(NamedTuple):
    """What :func:`solve_newton` returns: unpack as ``root, converged = solve_newton(...)``.

    ``converged`` is a boolean scalar array: every element of the root finite and the last Newton
    step a full, undamped one within ``atol + rtol * |root|`` (Newton's error after such a step
    is of the order of its square).
    """

    root: jax.Array
    converged: jax.Array


def _step_length(fun, x, dx, norm0, small, max_halvings):
    """1 if the Newton step ``dx`` is ``small``, else the largest ``t`` in 1, 1/2, 1/4, ... with
    ``|fun(x - t dx)| < norm0``, or ``2**-max_halvings`` if none of them is."""

    def keep_halving(state):
        t, k = state
        worse = jnp.linalg.norm(fun(x - t * dx)) >= norm0
        return ~small & worse & (k < max_halvings)

    t, _ = jax.lax.while_loop(keep_halving, lambda s: (0.5 * s[0], s[1] + 1), (1.0, 0))
    return t


def solve_newton(
    f: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    iterations: int = 30,
    rtol: float = 1e-10,
    atol: float = 1e-14,
    max_halvings: int = 30,
) -> NewtonResult:
    """Solve the vector equation ``f(x) = 0`` by damped Newton from ``x0``; implicit gradients.

    ``x`` is one-dimensional; the Jacobian is dense (small systems: flow splits in a row).
    Each of the ``iterations`` steps is the Newton step ``dx = J⁻¹ f(x)`` scaled by the largest
    ``t`` in 1, 1/2, ... (at most ``max_halvings`` halvings) for which ``|f(x - t dx)|₂ < |f(x)|₂``
    (backtracking on the residual norm), so a full step that reduces the residual is taken
    unchanged and the iterates of a problem that plain Newton solves are plain Newton's. A step already within ``atol + rtol |x|`` is taken whole too: the residual is then at
    round-off and its norm cannot rank the candidates. Returns a :class:`NewtonResult`; its
    ``converged`` flag is not differentiated, the root's gradient is implicit.
    """

    def solve(fun, guess):
        def body(_, carry):
            x, _ = carry
            fx = fun(x)
            dx = jnp.linalg.solve(jax.jacfwd(fun)(x), fx)
            scaled = jnp.max(jnp.abs(dx) / (atol + rtol * jnp.abs(x)))  # <= 1: step is small
            t = _step_length(fun, x, dx, jnp.linalg.norm(fx), scaled <= 1.0, max_halvings)
            return x - t * dx, scaled

        x, last_scaled_step = jax.lax.fori_loop(0, iterations, body, (guess, jnp.inf))
        # A float, not a bool: custom_root's JVP rule cannot carry a boolean auxiliary output.
        return x, jnp.where(jnp.all(jnp.isfinite(x)), last_scaled_step, jnp.inf)

    def tangent_solve(g, y):
        jac = jax.jacfwd(g)(y)
        return jnp.linalg.solve(jac, y)

    root, last_scaled_step = jax.lax.custom_root(f, x0, solve, tangent_solve, has_aux=True)
    return NewtonResult(root, last_scaled_step <= 1.0)


def solve_monotone_saturating(
    f: Callable[[jax.Array], jax.Array],
    lower: jax.Array,
    upper: jax.Array,
    iterations: int = 50,
) -> jax.Array:
    """Like :func:`solve_monotone`, but where ``f`` has no sign change in ``[lower, upper]``
    return the bound with the smaller ``|f|`` (an actuator at its limit) with the gradient of
    that bound, not of a fictitious interior root."""
    f_lo = f(jnp.asarray(lower))
    f_hi = f(jnp.asarray(upper))
    bracketed = f_lo * f_hi <= 0
    root = solve_monotone(f, lower, upper, iterations)
    bound = jnp.where(jnp.abs(f_lo) < jnp.abs(f_hi), lower, upper)
    return jnp.where(bracketed, root, bound)
