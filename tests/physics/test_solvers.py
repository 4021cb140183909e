"""physics.solvers.solve_newton: damping (backtracking on the residual norm), convergence status,
implicit gradients, jit/vmap.

Roots and derivatives are checked against closed forms: arctan(x - c) = 0 at x = c, x³ = a at
a^(1/3) with d/da = a^(-2/3)/3, the circle-line intersection at (√2, √2).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from physics.solvers import NewtonResult, solve_newton


def _plain_newton_arctan(x: float, steps: int) -> list[float]:
    """Undamped Newton on arctan(x) = 0 (x <- x - arctan(x) (1 + x²)), in plain Python floats."""
    iterates = [x]
    for _ in range(steps):
        x = x - math.atan(x) * (1.0 + x * x)
        iterates.append(x)
    return iterates


def test_undamped_newton_diverges_on_arctan_from_2():
    """The premise of the damping test: from |x0| > 1.39 the plain Newton iterates grow."""
    iterates = _plain_newton_arctan(2.0, 5)
    assert all(abs(b) > abs(a) for a, b in zip(iterates, iterates[1:], strict=False))
    assert abs(iterates[-1]) > 1e10


@pytest.mark.parametrize("x0", [2.0, -3.0, 50.0])
def test_damped_newton_converges_where_plain_newton_diverges(x0):
    root, converged = solve_newton(jnp.arctan, jnp.array([x0]))
    assert bool(converged)
    assert_allclose(root, [0.0], atol=1e-14)


def test_damped_newton_vector_problem_far_from_the_root():
    centres = jnp.array([0.5, -1.0, 4.0])
    result = solve_newton(lambda x: jnp.arctan(x - centres), jnp.array([10.0, 10.0, -10.0]))
    assert isinstance(result, NewtonResult)
    assert bool(result.converged)
    assert_allclose(result.root, centres, rtol=1e-14)


def test_status_is_false_when_the_iteration_cap_is_too_low():
    f = jnp.arctan
    assert not bool(solve_newton(f, jnp.array([2.0]), iterations=3).converged)
    assert not bool(solve_newton(f, jnp.array([2.0]), iterations=0).converged)
    # Quadratic convergence from x0 = 1 to the cube root of 8 needs more than 2 steps.
    cube = lambda x: x**3 - 8.0  # noqa: E731
    assert not bool(solve_newton(cube, jnp.array([1.0]), iterations=2).converged)
    root, converged = solve_newton(cube, jnp.array([1.0]))
    assert bool(converged)
    assert_allclose(root, [2.0], rtol=1e-15)


def test_status_is_false_when_the_residual_is_not_finite():
    # sqrt of a negative number: NaN residual from the first step.
    root, converged = solve_newton(lambda x: jnp.sqrt(x) - 1.0, jnp.array([-1.0]))
    assert not bool(converged)
    assert not np.all(np.isfinite(np.asarray(root)))


def test_two_dimensional_system():
    """x² + y² = 4 and x = y: the root (√2, √2) from (3, 0.5)."""

    def f(v):
        x, y = v
        return jnp.stack([x**2 + y**2 - 4.0, x - y])

    root, converged = solve_newton(f, jnp.array([3.0, 0.5]))
    assert bool(converged)
    assert_allclose(root, [math.sqrt(2.0)] * 2, rtol=1e-14)


def test_implicit_gradient_jit_and_vmap():
    def cube_root(a):
        return solve_newton(lambda x: x**3 - a, jnp.array([1.0])).root[0]

    a = jnp.array([8.0, 27.0, 2.0])
    assert_allclose(jax.jit(jax.vmap(cube_root))(a), np.cbrt(np.asarray(a)), rtol=1e-14)
    grads = jax.vmap(jax.grad(cube_root))(a)
    assert_allclose(grads, np.asarray(a) ** (-2.0 / 3.0) / 3.0, rtol=1e-12)
    # A damped solve has the same implicit gradient: d(root)/dc = 1 for arctan(x - c) = 0.
    grad_c = jax.grad(lambda c: solve_newton(lambda x: jnp.arctan(x - c), jnp.array([9.0])).root[0])
    assert_allclose(grad_c(0.5), 1.0, rtol=1e-12)
    flags = jax.vmap(
        lambda c: solve_newton(lambda x: jnp.arctan(x - c), jnp.array([0.0])).converged
    )(jnp.array([0.5, 3.0, 20.0]))
    assert np.all(np.asarray(flags))
