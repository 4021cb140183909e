"""Hydraulics (pump curve, flow splits) and the counterflow exchanger: the solvers against
their equations. The section 8 cases 2, 3, 6 and 7 run through the facility model in
tests/validation/test_reference_cases.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpy.testing import assert_allclose

from physics import hydraulics as h
from physics.heat_exchangers import effectiveness_counterflow, ntu_counterflow

Q_ROW = 2040.0 / 60_000  # m3/s


def _row(speed, k_header=0.0, n=10):
    h0, kp = h.pump_curve_from_design(Q_ROW, 200e3)
    k = jnp.full(n, 150e3 / (Q_ROW / n) ** 2) * jnp.linspace(0.9, 1.1, n)
    return h.row_flow_split(speed, h0, kp, k, k_header), h0, kp, k


def test_row_flow_split_satisfies_pump_and_branch_equations():
    """The solved rack flows satisfy the pump curve and every branch equation of the header
    ladder (the row's flow against refs 8 case 2 runs through the facility model in
    tests/validation/test_reference_cases.py)."""
    q, h0, kp, k = _row(1.0, k_header=2e3 / (Q_ROW / 2) ** 2)
    total = q.sum()
    dp0 = h.pump_head(total, 1.0, h0, kp)
    assert abs(k[0] * q[0] ** 2 - dp0) / dp0 < 1e-10
    # Each rack's pressure equals the upstream pressure less the header segment losses.
    downstream = total - jnp.cumsum(q)
    dp = dp0 - jnp.concatenate(
        [jnp.zeros(1), jnp.cumsum(2 * 2e3 / (Q_ROW / 2) ** 2 * downstream[:-1] ** 2)]
    )
    assert_allclose(k * q**2, dp, rtol=1e-9)
    # Far racks get less flow (header maldistribution).
    assert q[-1] < q[0]


def test_parallel_resistance():
    k = jnp.array([1.0, 4.0])
    # sqrt(dp) (1 + 1/2) = Q  ->  K_eq = 1/(1.5)^2
    assert_allclose(h.parallel_resistance(k), 1 / 1.5**2)


def test_buoyancy_opposes_flow_heated_at_the_top():
    # FWS: cold supply at 32 degC rises 7 m to the CDUs, warm return at 42 degC falls to the
    # plant. Water densities from refs 2a (IAPWS-95), linear between the 5 K rows:
    # rho(32) = 995.69 + 0.4 (994.08 - 995.69) = 995.046, rho(42) = 992.26 + 0.4 (990.26 -
    # 992.26) = 991.460; (991.460 - 995.046) * 9.80665 * 7 = -246.2 Pa (opposes the flow).
    rho_32, rho_42 = 995.046, 991.460
    assert_allclose(h.loop_buoyancy_pressure(rho_32, rho_42, 7.0), -246.2, atol=0.1)
    # A thermosiphon (heated in the rising leg) is driven: the same magnitude, positive.
    assert_allclose(h.loop_buoyancy_pressure(rho_42, rho_32, 7.0), 246.2, atol=0.1)


def test_floor_split_conserves_flow_and_upper_floor_gets_less():
    h0, kp = h.pump_curve_from_design(0.2, 250e3)
    n = jnp.array([10.0, 10.0])
    k_b = 150e3 / 0.012**2
    q_f, dp = h.floor_flow_split(
        1.0, h0, kp, jnp.array([0.0, 2e6]), k_b, n, jnp.array([0.0, 250.0])
    )
    total = jnp.sum(n * q_f)
    assert_allclose(h.pump_head(total, 1.0, h0, kp), dp, rtol=1e-9)
    assert_allclose(2e6 * (10 * q_f[1]) ** 2 + k_b * q_f[1] ** 2 - 250.0, dp, rtol=1e-9)
    assert q_f[1] < q_f[0]


def test_flow_split_gradients_are_implicit_and_match_fd():
    h0, kp = h.pump_curve_from_design(Q_ROW, 200e3)
    k = jnp.full(10, 150e3 / (Q_ROW / 10) ** 2) * jnp.linspace(0.9, 1.1, 10)

    def f(x):
        speed, k_header, k_scale = x
        q = h.row_flow_split(speed, h0, kp, k * k_scale, k_header)
        return q[-1] * 1e3 + q.sum() * 10

    x = jnp.array([0.8, 3e7, 1.1])
    g = jax.grad(f)(x)
    eps = x * 1e-6
    fd = jnp.array(
        [(f(x.at[i].add(eps[i])) - f(x.at[i].add(-eps[i]))) / (2 * eps[i]) for i in range(3)]
    )
    assert_allclose(g, fd, rtol=1e-5)
    # The solve itself is not differentiated through: custom_root appears in the jaxpr.
    assert "custom_root" in str(jax.make_jaxpr(f)(x)) or "root" in str(jax.make_jaxpr(f)(x))


def test_counterflow_ntu_and_effectiveness_are_inverse():
    """Balanced counterflow: the refs 8 case 3 pair ε = 9.63/12.63 = 0.762 <-> NTU 3.21
    (closed form at C_r = 1: NTU = ε/(1-ε)); the facility's CDU against the whole case runs in
    tests/validation/test_reference_cases.py."""
    eps = 9.63 / 12.63
    ntu = ntu_counterflow(eps, 1.0)
    assert_allclose(ntu, 3.21, atol=0.005)
    assert_allclose(effectiveness_counterflow(ntu, 1.0), eps, rtol=1e-12)
    assert_allclose(ntu, eps / (1.0 - eps), rtol=1e-9)


def test_counterflow_limits_and_smoothness_at_balance():
    assert_allclose(effectiveness_counterflow(1e-8, 0.5), 1e-8, rtol=1e-6)
    assert_allclose(effectiveness_counterflow(50.0, 0.3), 1.0, atol=1e-12)
    g = jax.grad(effectiveness_counterflow, 1)
    for d in (0.0, 1e-9, 1e-6, 1e-3):
        fd = (
            effectiveness_counterflow(3.21, 1 - d + 1e-7)
            - effectiveness_counterflow(3.21, 1 - d - 1e-7)
        ) / 2e-7
        assert_allclose(g(3.21, 1.0 - d), fd, rtol=1e-5)
    assert np.isfinite(float(jax.grad(ntu_counterflow, 1)(0.7, 1.0)))
