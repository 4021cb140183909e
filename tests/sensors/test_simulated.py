"""Simulated fleet: reproducible, NVML-like readings, physics-consistent energy and temperature."""

from __future__ import annotations

import numpy as np
import pytest

from sensors.simulated import SimulatedSource


def run(seed, n_reads=400, dt=0.1, n=4):
    t = [1.7e9]
    src = SimulatedSource(n, seed, host="h", clock=lambda: t[0])
    out = []
    for _ in range(n_reads):
        t[0] += dt
        out.append(src.read())
    return src, out


def stack(batches, f):
    return np.stack([b.values[f] for b in batches])


def test_seeded_and_reproducible():
    a_src, a = run(3, 50)
    _, b = run(3, 50)
    _, c = run(4, 50)
    for f in a[0].values:
        np.testing.assert_array_equal(stack(a, f), stack(b, f))
    assert not np.array_equal(stack(a, "power_average"), stack(c, "power_average"))
    p = a_src.true_parameters
    assert np.all((p.capacitance >= 150) & (p.capacitance <= 400))
    # the hidden parameters never appear in the readings
    assert set(a[0].values) == set(a_src.provenance())


def test_nvml_like_readings():
    src, bs = run(7, 600)  # 60 s at 10 Hz
    tdp = src.true_parameters.tdp[0]
    temp = stack(bs, "temp_gpu")
    assert np.array_equal(temp, np.round(temp))  # 1 degC quantization
    inst, avg = stack(bs, "power_instant"), stack(bs, "power_average")
    # training square waves 0.45-1.0 TDP appear in the instantaneous power, the 1 s average is
    # smooth: its tick-to-tick changes are far smaller
    assert inst.max() > 0.95 * tdp and inst.min() < 0.5 * tdp
    assert np.abs(np.diff(avg, axis=0)).mean() < 0.5 * np.abs(np.diff(inst, axis=0)).mean()
    assert "training" in src.modes_seen
    # energy counter = integral of power: mean power over 60 s from the counter vs the average
    e = stack(bs, "energy_total")
    p_counter = (e[-1] - e[10]) / (0.1 * (len(bs) - 11))
    np.testing.assert_allclose(p_counter, avg[10:].mean(axis=0), rtol=0.03)


def test_steady_state_follows_physics():
    """At a held inference level, the die settles at T_c + R (P_work + P_leak) within 1.5 K."""
    src, bs = run(11, 10, dt=0.1, n=2)
    src._mode[:] = 1
    src._next_switch[:] = 1e12
    level = 0.3 * src.true_parameters.tdp
    for k in ("low", "high"):
        src._wl[k][:] = level
    t = [src._t_last]
    src._clock = lambda: t[0]
    for _ in range(30):
        t[0] += 10.0
        b = src.read()
    p = src.true_parameters
    expect = p.temp_coolant + p.resistance * level - 273.15
    assert b.values["temp_gpu"] == pytest.approx(expect, abs=1.5)
    assert b.values["power_average"] == pytest.approx(level, rel=0.01)


def test_given_parameters_are_the_hidden_truth():
    """A fleet drawn as one and split over hosts: each host runs exactly its slice."""
    from sensors.simulated import draw_parameters

    fleet = draw_parameters(8, np.random.default_rng(0), tdp=1200.0)
    part = fleet.subset(slice(4, 8))
    np.testing.assert_array_equal(part.resistance, fleet.resistance[4:])
    src = SimulatedSource(4, 0, host="h", parameters=part, gpu_name="Simulated B200")
    assert src.true_parameters is part
    assert {(d.name, d.power_limit) for d in src.devices()} == {("Simulated B200", 1200.0)}
    with pytest.raises(ValueError, match="n_gpus=3"):
        SimulatedSource(3, 0, host="h", parameters=part)
