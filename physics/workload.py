r"""Compact workload power schedules, evaluated inside the time step (never a GPU × time array).

Synchronous training alternates compute (near TDP) and communication (much lower) phases every
1–2 s; inference sits at 0.2–0.45 of TDP ([1]_ section 6, case 11). A square wave

.. math:: q(t) = \begin{cases}1 & \operatorname{frac}\bigl((t+\varphi)/p\bigr) < d\\
                 0 & \text{otherwise}\end{cases}

with period :math:`p` [s], duty :math:`d` [-] and phase :math:`\varphi` [s] describes a job; all
GPUs of one synchronous job share :math:`(p, d, \varphi)`.

References
----------
.. [1] ``shared/refs/physics-references.md`` section 6 (arXiv:2508.14318, Uptime Intelligence).
"""

from __future__ import annotations

import jax.numpy as jnp


def square_wave(period, duty, phase, t):
    """Square wave q(t) ∈ {0, 1} (module docstring)."""
    x = (t + phase) / period
    return jnp.where(x - jnp.floor(x) < duty, 1.0, 0.0)


def _cumulative_on_time(period, duty, phase, t):
    # ∫_{-φ}^{t} q(s) ds: full periods contribute d·p each, the current one min(θ, d·p).
    x = (t + phase) / period
    n = jnp.floor(x)
    theta = (x - n) * period
    return n * duty * period + jnp.minimum(theta, duty * period)


def square_wave_on_time(period, duty, phase, t0, dt):
    r"""Time the square wave is on within :math:`[t_0, t_0+\Delta t]` [s]: :math:`\int q\,ds`."""
    return _cumulative_on_time(period, duty, phase, t0 + dt) - _cumulative_on_time(
        period, duty, phase, t0
    )


def _exponential_memory(lam, period, duty, phase, t):
    r"""Infinite-past exponentially weighted integral :math:`\int_{-\infty}^{t}\lambda
    e^{-\lambda(t-s)}q(s)\,ds` in closed form (geometric series over past periods)."""
    on = duty * period
    x = (t + phase) / period
    theta = (x - jnp.floor(x)) * period  # time since the current period's on-edge
    r_on = jnp.exp(-lam * on)
    r_off = jnp.exp(-lam * (period - on))
    tail = (1.0 - r_on) / (1.0 - r_on * r_off)  # one on-interval, all earlier periods summed
    is_on = theta < on
    since = jnp.where(is_on, theta, theta - on)
    e = jnp.exp(-lam * since)
    return jnp.where(is_on, (1.0 - e) + e * r_off * tail, e * tail)


def square_wave_exponential_integral(lam, period, duty, phase, t0, dt):
    r"""Exponentially weighted on-fraction over a step [-]:

    .. math:: W = \int_{t_0}^{t_0+\Delta t}\lambda e^{-\lambda(t_0+\Delta t-s)}q(s)\,ds
              = M(t_0+\Delta t) - e^{-\lambda\Delta t}M(t_0)

    where :math:`M` is the infinite-past memory (geometric sum over earlier periods). For a
    constant drive (``duty`` 0 or 1) it reduces to 0 or :math:`1-e^{-\lambda\Delta t}`.
    """
    m1 = _exponential_memory(lam, period, duty, phase, t0 + dt)
    m0 = _exponential_memory(lam, period, duty, phase, t0)
    return m1 - jnp.exp(-lam * dt) * m0


def diurnal_factor(amplitude, peak_hour, hour):
    r"""Daily request cycle of inference load, as a factor on its mean utilization [-]:

    .. math:: f(h) = 1 + a\cos\bigl(2\pi (h - h_{peak})/24\bigr)

    ``hour`` and ``peak_hour`` [h] on the same clock (UTC hour of year in the facility model);
    ``amplitude`` :math:`a` [-]. Works on NumPy and JAX arrays alike. Request traffic of
    interactive services peaks once a day (refs 6).
    """
    return 1.0 + amplitude * jnp.cos(2.0 * jnp.pi * (hour - peak_hour) / 24.0)


def square_wave_memory_constants(decay_on, decay_off):
    r"""Step-independent factors of the infinite-past memory :math:`M` (geometric sum over
    earlier periods), from :math:`e_{on} = e^{-\lambda d p}` and :math:`e_{off} =
    e^{-\lambda (1-d) p}`: ``tail`` :math:`= (1-e_{on})/(1-e_{on}e_{off})` and ``on``
    :math:`= 1 - e_{off}\,\mathrm{tail}`, so that :math:`M = 1 - e\,\mathrm{on}` in an on-phase
    and :math:`M = e\,\mathrm{tail}` in an off-phase, :math:`e = e^{-\lambda s}` with :math:`s`
    the time since the last edge."""
    tail = (1.0 - decay_on) / (1.0 - decay_on * decay_off)
    return tail, 1.0 - decay_off * tail


def square_wave_exponential_integral_hoisted(
    lam, period, duty, phase, t0, dt, memory_tail, memory_on, decay_step
):
    """:func:`square_wave_exponential_integral` with the step-independent factors of
    :func:`square_wave_memory_constants` and ``exp(-λ Δt)`` given (two exponentials per call)."""

    def memory(t):
        on = duty * period
        x = (t + phase) / period
        theta = (x - jnp.floor(x)) * period
        is_on = theta < on
        e = jnp.exp(-lam * jnp.where(is_on, theta, theta - on))
        return jnp.where(is_on, 1.0 - e * memory_on, e * memory_tail)

    return memory(t0 + dt) - decay_step * memory(t0)
