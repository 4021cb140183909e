"""GPU node, workload and cold-plate models: the integrators against exact solutions (refs
section 8 cases 5 and 11 give the numbers). The section 8 validation of the facility model
(cases 4, 5, 11 through its GPU step) is tests/validation/test_reference_cases.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import quad

from physics import coldplate, gpu, workload

C0 = 273.15


def test_coldplate_resistance_roundtrip_and_flow_dependence():
    cap = 194.0  # W/K
    ua = coldplate.ua_for_mean_fluid_resistance(0.025, 0.012, cap)
    r_ji = coldplate.junction_to_inlet_resistance(0.012, ua, cap)
    assert_allclose(coldplate.junction_to_mean_fluid_resistance(r_ji, cap), 0.025, rtol=1e-12)

    # Halving the flow raises the resistance; doubling lowers it (UA ~ flow^0.8, eps-NTU).
    def r_at(scale):
        ua_s = coldplate.coldplate_conductance(ua, scale, 1.0, 0.8)
        return coldplate.junction_to_inlet_resistance(0.012, ua_s, cap * scale)

    assert r_at(0.5) > r_at(1.0) > r_at(2.0) > 0.012


def test_case5_first_order_step_response():
    """refs 8.5: C 250 J/K, R 0.02 K/W, 0 -> 1000 W step: 63 % (12.6 K) at 5 s, 95 % at 15 s,
    within 0.1 K of the analytic curve at dt <= tau/10 (here: at every dt, it is exact)."""
    c, r, tc = 250.0, 0.02, C0 + 30.0
    for dt in (0.1, 0.5, 5.0):
        temp = jnp.asarray(tc)
        times, temps = [], []
        for i in range(int(round(20.0 / dt))):
            temp = gpu.die_temperature_step(temp, tc, 1000.0, r, c, 0.0, 0.0, C0, dt)
            times.append((i + 1) * dt)
            temps.append(float(temp) - tc)
        analytic = 20.0 * (1.0 - np.exp(-np.asarray(times) / 5.0))
        assert np.max(np.abs(np.asarray(temps) - analytic)) < 0.1
    rise = lambda t: float(  # noqa: E731
        gpu.die_temperature_step(jnp.asarray(tc), tc, 1000.0, r, c, 0.0, 0.0, C0, t) - tc
    )
    assert_allclose(rise(5.0), 12.64, atol=0.01)
    assert_allclose(rise(15.0) / 20.0, 0.95, atol=0.001)


@pytest.mark.parametrize("dt", [0.1, 1.0, 60.0])
def test_case11_square_wave_ripple(dt):
    """refs 8.11: 450 <-> 1000 W, R 0.025, tau 5 s (C 200), period 2 s, fixed coolant:
    steady ripple p-p = dP R tanh(T/(4 tau)) = 1.37 K +/- 0.02 K, mean 18.1 K above coolant.
    The exact square-wave integrator gives the right instantaneous value at any step."""
    r, c, tc = 0.025, 200.0, C0 + 30.0
    temp = jnp.asarray(tc + 18.1)
    t = 0.0
    for _ in range(int(round(60.0 / dt))):  # settle 12 tau
        temp, _, _ = gpu.die_square_wave_step(
            temp, tc, 450.0, 1000.0, 2.0, 0.5, 0.0, r, c, 0.0, 0.0, C0, t, dt
        )
        t += dt
    # Sample the settled cycle finely with 0.01 s steps from the state reached at step dt.
    samples = []
    for _ in range(400):
        temp, _, _ = gpu.die_square_wave_step(
            temp, tc, 450.0, 1000.0, 2.0, 0.5, 0.0, r, c, 0.0, 0.0, C0, t, 0.01
        )
        t += 0.01
        samples.append(float(temp) - tc)
    samples = np.asarray(samples)
    exact = 550.0 * r * np.tanh(2.0 / (4 * 5.0))
    assert_allclose(exact, 1.37, atol=0.005)
    assert_allclose(samples.max() - samples.min(), 1.37, atol=0.02)
    assert_allclose(samples.mean(), 725.0 * r, atol=0.02)


def test_square_wave_integrals_against_quadrature():
    lam, p, d, ph = 0.2, 1.7, 0.4, 0.3
    for t0, dt in [(0.0, 1.0), (0.65, 1.0), (3.3, 60.0), (10.1, 0.1)]:
        w = float(workload.square_wave_exponential_integral(lam, p, d, ph, t0, dt))
        edges = np.linspace(t0, t0 + dt, 400)
        ref = sum(
            quad(
                lambda s, t1=t0 + dt: (
                    lam * np.exp(-lam * (t1 - s)) * float(workload.square_wave(p, d, ph, s))
                ),
                a,
                b,
            )[0]
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        )
        assert_allclose(w, ref, atol=1e-9)
        on = float(workload.square_wave_on_time(p, d, ph, t0, dt))
        ref_on = sum(
            quad(lambda s: float(workload.square_wave(p, d, ph, s)), a, b)[0]
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        )
        assert_allclose(on, ref_on, atol=1e-6)
        hoisted = workload.square_wave_exponential_integral_hoisted(
            lam,
            p,
            d,
            ph,
            t0,
            dt,
            *workload.square_wave_memory_constants(
                np.exp(-lam * d * p), np.exp(-lam * (1 - d) * p)
            ),
            np.exp(-lam * dt),
        )
        assert_allclose(float(hoisted), w, rtol=1e-12, atol=1e-15)


def test_die_step_energy_identity_and_leakage():
    """C dT = (workload + leakage - heat to coolant) dt holds exactly over a step."""
    args = dict(
        resistance=0.028, capacitance=250.0, leakage_ref=144.0, leakage_coeff=0.02, temp_ref=C0 + 60
    )
    t0, tc, dt = C0 + 50.0, C0 + 35.0, 7.3
    t1, tmean, work = gpu.die_square_wave_step(
        t0,
        tc,
        400.0,
        1000.0,
        1.5,
        0.5,
        0.2,
        args["resistance"],
        args["capacitance"],
        args["leakage_ref"],
        args["leakage_coeff"],
        args["temp_ref"],
        3.0,
        dt,
    )
    leak = gpu.leakage_power(tmean, 144.0, 0.02, C0 + 60) * dt
    out = (tmean - tc) / 0.028 * dt
    assert_allclose(250.0 * (t1 - t0), work + leak - out, rtol=1e-12)
    # Leakage: linear, 2 %/K of its reference (refs 6).
    assert_allclose(gpu.leakage_power(C0 + 70, 144.0, 0.02, C0 + 60), 144.0 * 1.2)
    with pytest.raises(AssertionError):
        assert_allclose(gpu.die_conductance(0.028, 144.0, 0.02), 1 / 0.028)


def test_die_step_gradients_match_finite_differences():
    def f(x):
        r, c, p_hi, tc = x
        t1, tmean, _ = gpu.die_square_wave_step(
            C0 + 50, tc, 450.0, p_hi, 2.0, 0.5, 0.3, r, c, 144.0, 0.02, C0 + 60, 1.0, 3.0
        )
        return t1 + 0.5 * tmean

    x = jnp.array([0.027, 240.0, 1000.0, C0 + 35.0])
    g = jax.grad(f)(x)
    h = x * 1e-6
    fd = jnp.array([(f(x.at[i].add(h[i])) - f(x.at[i].add(-h[i]))) / (2 * h[i]) for i in range(4)])
    assert_allclose(g, fd, rtol=1e-5)


def test_jit_vmap_parity():
    temps = jnp.linspace(C0 + 30, C0 + 80, 7)

    def f(t):
        return gpu.die_square_wave_step(
            t, C0 + 35, 450.0, 1000.0, 2.0, 0.5, 0.1, 0.027, 250.0, 144.0, 0.02, C0 + 60, 0.0, 1.0
        )[0]

    assert_allclose(jax.jit(jax.vmap(f))(temps), jnp.stack([f(t) for t in temps]), rtol=1e-13)
