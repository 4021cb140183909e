"""A synthetic liquid-cooled GPU fleet, read the way NVML reports it, with known hidden parameters.

:func:`simulate_fleet` writes the schema of :meth:`sensors.store.Store.read` (dims ``time``,
``gpu``) from a fleet whose thermal parameters are drawn at random and returned alongside
(:class:`FleetTruth`), for the calibration and estimation tests, the benchmarks and the demo.
It lives next to :mod:`sensors.simulated` (the live simulated source of the daemon): both
integrate the same die model, :func:`physics.gpu.die_temperature_step`. Kept here rather than
taken from a library: no package generates NVML-like readings (1 s power averages, 1 °C
quantization, clock jitter, dropped samples) from a physical model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import xarray as xr

from physics.constants import ZERO_CELSIUS_K

#: Reference temperature of the leakage model of the synthetic GPUs [K].
LEAKAGE_REFERENCE_K = ZERO_CELSIUS_K + 60.0


@dataclasses.dataclass(frozen=True)
class FleetTruth:
    """Hidden parameters of :func:`simulate_fleet` (arrays over GPUs, SI, temperatures in K)."""

    resistance: np.ndarray  # [K/W], die -> inlet coolant
    capacitance: np.ndarray  # [J/K]
    temp_inlet: np.ndarray  # [K]
    sensor_offset: np.ndarray  # [K]
    hbm_gain: np.ndarray  # HBM share x HBM resistance [K/W]
    hbm_tau: np.ndarray  # [s]


@dataclasses.dataclass(frozen=True)
class _Hidden:
    """Everything drawn per GPU: the truth plus leakage and the workload phase."""

    truth: FleetTruth
    leak_ref: np.ndarray  # leakage at the reference temperature [W]
    leak_coeff: np.ndarray  # [1/K]
    host_of: np.ndarray  # host index of each GPU


def _draw_fleet(rng, n: int, gpus_per_host: int, spread: float, r0: float, c0: float, tdp: float):
    n_hosts = -(-n // gpus_per_host)
    host_of = np.arange(n) // gpus_per_host
    R = r0 * rng.uniform(1 - spread, 1 + spread, n)
    C = c0 * rng.uniform(1 - spread, 1 + spread, n)
    t_in = ZERO_CELSIUS_K + rng.uniform(24.0, 32.0, n_hosts)[host_of] + rng.normal(0, 0.3, n)
    offset = rng.normal(0.0, 0.5, n)
    hbm_gain = rng.uniform(0.010, 0.020, n)
    hbm_tau = rng.uniform(3.0, 8.0, n)
    leak_ref = rng.uniform(0.06, 0.10, n) * tdp
    leak_coeff = rng.uniform(0.015, 0.025, n)
    truth = FleetTruth(R, C, t_in, offset, hbm_gain, hbm_tau)
    return _Hidden(truth, leak_ref, leak_coeff, host_of)


def _workload_schedule(rng, n: int, n_sec: int, tdp: float):
    """Per-second (low, high, period) of each GPU: idle, inference or training, 20-120 s each."""
    low = np.empty((n, n_sec))
    high = np.empty((n, n_sec))
    period = np.empty((n, n_sec))
    for i in range(n):
        s = 0
        while s < n_sec:
            length = int(rng.uniform(20, 120))
            mode = rng.choice(3, p=[0.2, 0.35, 0.45])
            if mode == 2:
                lo_, hi_ = 0.45 * tdp, tdp
            elif mode == 1:
                lo_ = hi_ = rng.uniform(0.2, 0.8) * tdp
            else:
                lo_ = hi_ = rng.uniform(0.09, 0.12) * tdp
            low[i, s : s + length] = lo_
            high[i, s : s + length] = hi_
            period[i, s : s + length] = rng.uniform(1.0, 2.0)
            s += length
    return low, high, period


def _faults(n: int, n_sec: int, host_of, resistance_step, inlet_drift):
    """Per-second resistance factor and inlet rise [K] of the injected faults."""
    r_factor = np.ones((n, n_sec))
    if resistance_step is not None:
        gi, ts_, fac = resistance_step
        r_factor[gi, int(ts_) :] = fac
    inlet_add = np.zeros((n, n_sec))
    if inlet_drift is not None:
        hi_, ts_, rate = inlet_drift
        ramp = np.clip(np.arange(n_sec) - ts_, 0, None) * rate / 3600.0
        inlet_add[host_of == hi_] = ramp
    return r_factor, inlet_add


def _integrate_dies(h: _Hidden, sched, faults, phase, tdp: float, n_ticks: int, tick_s: float):
    """Die temperature [K] at the end of each tick and the mean package power [W] in it."""
    import jax
    import jax.numpy as jnp

    from physics import gpu as pg

    per_s = int(round(1.0 / tick_s))
    low_j, high_j, period_j = map(jnp.asarray, sched)
    leak_j, coeff_j = jnp.asarray(h.leak_ref), jnp.asarray(h.leak_coeff)
    r_j, c_j = jnp.asarray(h.truth.resistance), jnp.asarray(h.truth.capacitance)
    rf_j, add_j = map(jnp.asarray, faults)
    tin_j, phase_j = jnp.asarray(h.truth.temp_inlet), jnp.asarray(phase)

    def tick(temp, k):
        t = k * tick_s
        sec = jnp.asarray(k // per_s, jnp.int32)
        lo_, hi_ = low_j[:, sec], high_j[:, sec]
        q = jnp.where(jnp.mod(t + phase_j, period_j[:, sec]) < 0.5 * period_j[:, sec], 1.0, 0.0)
        target = lo_ + (hi_ - lo_) * q
        tref = LEAKAGE_REFERENCE_K
        leak = pg.leakage_power(temp, leak_j, coeff_j, tref)
        work = jnp.maximum(target - leak, 0.3 * target)
        tc = tin_j + add_j[:, sec]
        new = pg.die_temperature_step(
            temp, tc, work, r_j * rf_j[:, sec], c_j, leak_j, coeff_j, tref, tick_s
        )
        return new, (new, work + leak)

    # integrate in chunks of one hour to bound memory
    temps, powers = [], []
    chunk = 3600 * per_s
    run = jax.jit(lambda c, ks: jax.lax.scan(tick, c, ks))
    state = jnp.asarray(h.truth.temp_inlet + 0.1 * tdp * h.truth.resistance)
    for a in range(0, n_ticks, chunk):
        state, (tt, pp) = run(state, jnp.arange(a, min(a + chunk, n_ticks)))
        temps.append(np.asarray(tt))
        powers.append(np.asarray(pp))
    return np.concatenate(temps).T, np.concatenate(powers).T  # (n, ticks)


def _hbm_rise(truth: FleetTruth, p_fine, tdp: float, tick_s: float):
    """HBM rise over the inlet [K]: a first-order node driven by the package power (exact)."""
    a_h = np.exp(-tick_s / truth.hbm_tau)
    rise = np.empty_like(p_fine)
    x = 0.1 * tdp * truth.hbm_gain
    for k in range(p_fine.shape[1]):
        x = a_h * x + (1 - a_h) * truth.hbm_gain * p_fine[:, k]
        rise[:, k] = x
    return rise


def _read_times(rng, n: int, duration_s: float, jitter_s, drop_fraction, gaps_per_hour):
    """Reading times at ~1 Hz, each GPU its own jitter, and which readings survive drops/gaps."""
    n_read = int(duration_s) - 2
    base = np.arange(1, n_read + 1, dtype=float)
    t_read = base[None, :] + rng.uniform(-jitter_s, jitter_s, (n, n_read))
    keep = rng.random((n, n_read)) >= drop_fraction
    n_gaps = rng.poisson(gaps_per_hour * duration_s / 3600.0, n)
    for i in range(n):
        for _ in range(n_gaps[i]):
            a = rng.integers(0, n_read)
            keep[i, a : a + rng.integers(3, 21)] = False
    return t_read, keep


def _interp_ticks(a: np.ndarray, t: np.ndarray, t_first: float, tick_s: float) -> np.ndarray:
    """Linear interpolation of samples ``a[:, j]`` taken at ``t_first + j * tick_s``."""
    rows = np.arange(a.shape[0])[:, None]
    x = np.clip((t - t_first) / tick_s, 0, a.shape[1] - 1 - 1e-9)
    j = np.floor(x).astype(int)
    f = x - j
    return (1 - f) * a[rows, j] + f * a[rows, j + 1]


def _readings(rng, h: _Hidden, fine, inlet_add, t_read, tick_s: float, noise: tuple):
    """What NVML reports: 1 s trailing mean power plus noise; 1 °C-rounded die and HBM."""
    temp_fine, p_fine, hbm_rise = fine
    power_noise_w, temp_noise_k = noise
    n, n_ticks = p_fine.shape
    n_sec = inlet_add.shape[1]
    rows = np.arange(n)[:, None]
    # energy integral E(t) (piecewise linear between ticks) -> exact 1 s trailing mean
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(p_fine, axis=1) * tick_s], axis=1)
    p_avg = _interp_ticks(csum, t_read, 0.0, tick_s) - _interp_ticks(
        csum, t_read - 1.0, 0.0, tick_s
    )
    offset = h.truth.sensor_offset[:, None]
    temp_read = _interp_ticks(temp_fine, t_read, tick_s, tick_s) - ZERO_CELSIUS_K + offset
    idx_t = np.clip(np.floor(t_read / tick_s).astype(int) - 1, 0, n_ticks - 1)
    per_s = int(round(1.0 / tick_s))
    tc_read = h.truth.temp_inlet[:, None] + inlet_add[rows, np.clip(idx_t // per_s, 0, n_sec - 1)]
    mem_read = tc_read - ZERO_CELSIUS_K + hbm_rise[rows, idx_t] + offset
    power = np.round(p_avg + rng.normal(0, power_noise_w, p_avg.shape), 2)
    temp = np.round(temp_read + rng.normal(0, temp_noise_k, temp_read.shape))
    mem = np.round(mem_read + rng.normal(0, temp_noise_k, mem_read.shape))
    return power, temp, mem


def _dataset(t_read, keep, values, host_of, gpus_per_host: int, t0: str) -> xr.Dataset:
    """The store's schema: one shared time axis at 10 ms resolution, NaN where no sample."""
    import pandas as pd

    n = t_read.shape[0]
    t_cent = np.round(t_read * 100).astype(np.int64)
    axis = np.unique(t_cent[keep])
    pos = np.searchsorted(axis, t_cent)
    ii, kk = np.nonzero(keep)

    def dense(v: np.ndarray) -> np.ndarray:
        out = np.full((axis.size, n), np.nan)
        out[pos[ii, kk], ii] = v[ii, kk]
        return out

    power, temp, mem = values
    time = pd.Timestamp(t0).value + axis * 10_000_000
    gpus = np.array([f"sim{h:04d}:{i % gpus_per_host}" for i, h in enumerate(host_of)])
    return xr.Dataset(
        {
            "power_average": (("time", "gpu"), dense(power), {"units": "W"}),
            "temp_gpu": (("time", "gpu"), dense(temp), {"units": "degC"}),
            "temp_memory": (("time", "gpu"), dense(mem), {"units": "degC"}),
        },
        coords={
            "time": ("time", time.astype("datetime64[ns]")),
            "gpu": ("gpu", gpus),
            "host": ("gpu", np.array([f"sim{h:04d}" for h in host_of])),
            "index": ("gpu", np.arange(n) % gpus_per_host),
        },
        attrs={"title": "synthetic GPU telemetry (sensors.synthetic.simulate_fleet)"},
    )


def simulate_fleet(
    n_gpus: int,
    duration_s: float,
    *,
    seed: int = 0,
    spread: float = 0.30,
    gpus_per_host: int = 8,
    resistance: float = 0.025,
    capacitance: float = 250.0,
    tdp: float = 700.0,
    temp_noise_k: float = 0.25,
    power_noise_w: float = 1.0,
    jitter_s: float = 0.15,
    drop_fraction: float = 0.02,
    gaps_per_hour: float = 1.0,
    resistance_step: tuple[int, float, float] | None = None,
    inlet_drift: tuple[int, float, float] | None = None,
    tick_s: float = 0.25,
    t0: str = "2026-01-01T00:00:00",
) -> tuple[xr.Dataset, FleetTruth]:
    """A synthetic liquid-cooled fleet read the way NVML reports it.

    Each GPU integrates ``physics.gpu.die_temperature_step`` (leakage included in the package
    power) on a ``tick_s`` grid with hidden resistance and heat capacity drawn uniformly within
    ``±spread`` of ``resistance``/``capacitance``; the inlet temperature is shared by the
    ``gpus_per_host`` GPUs of a host (24–32 °C per host) plus a small per-GPU offset.  Workloads:
    idle, inference levels and synchronous training (square wave 0.45↔1.0 TDP, 1–2 s period),
    switching every 20–120 s.  Readings at ~1 Hz with ``jitter_s`` jitter, ``drop_fraction``
    dropped samples and ``gaps_per_hour`` gaps of 3–20 s: power is the trailing 1 s mean plus
    noise, temperatures are noisy and rounded to 1 °C.

    ``resistance_step=(gpu, time_s, factor)`` multiplies one GPU's resistance from ``time_s`` on
    (a failing interface); ``inlet_drift=(host, time_s, kelvin_per_hour)`` ramps one host's inlet.
    """
    rng = np.random.default_rng(seed)
    n = int(n_gpus)
    h = _draw_fleet(rng, n, gpus_per_host, spread, resistance, capacitance, tdp)
    n_ticks = int(round(duration_s / tick_s))
    n_sec = int(math.ceil(duration_s)) + 2
    sched = _workload_schedule(rng, n, n_sec, tdp)
    faults = _faults(n, n_sec, h.host_of, resistance_step, inlet_drift)
    phase = rng.uniform(0, 2, n)
    temp_fine, p_fine = _integrate_dies(h, sched, faults, phase, tdp, n_ticks, tick_s)
    hbm = _hbm_rise(h.truth, p_fine, tdp, tick_s)
    t_read, keep = _read_times(rng, n, duration_s, jitter_s, drop_fraction, gaps_per_hour)
    values = _readings(
        rng, h, (temp_fine, p_fine, hbm), faults[1], t_read, tick_s, (power_noise_w, temp_noise_k)
    )
    return _dataset(t_read, keep, values, h.host_of, gpus_per_host, t0), h.truth
