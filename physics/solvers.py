"""Root finding with implicit differentiation.

Every nonlinear solve in the model goes through :func:`solve_monotone` or :func:`solve_newton`,
both built on :func:`jax.lax.custom_root`, so gradients flow through the implicit function theorem
(dx*/dθ = -(∂f/∂x)⁻¹ ∂f/∂θ) and never through the unrolled iterations.
"""

from __future__ import annotations

from collections.abc import Callable

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


def solve_newton(
    f: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    iterations: int = 30,
) -> jax.Array:
    """Solve the vector equation ``f(x) = 0`` by damped Newton from ``x0``; implicit gradients.

    ``x`` is one-dimensional; the Jacobian is dense (small systems: flow splits in a row).
    """

    def solve(fun, guess):
        def body(_, x):
            fx = fun(x)
            jac = jax.jacfwd(fun)(x)
            dx = jnp.linalg.solve(jac, fx)
            return x - dx

        return jax.lax.fori_loop(0, iterations, body, guess)

    def tangent_solve(g, y):
        jac = jax.jacfwd(g)(y)
        return jnp.linalg.solve(jac, y)

    return jax.lax.custom_root(f, x0, solve, tangent_solve)


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
