"""The init/step API of ``twin.simulation`` (jax-md style): a run stepped in pieces ends where one
long step ends, ``simulate`` is ``simulate_run`` on ``prepare``, and the records and ledger agree
with each other (energy = mean power x time) and with the final state."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import twin
from physics import workload
from physics.constants import ZERO_CELSIUS_K
from twin.model import LoadMix
from twin.simulation import (
    SimState,
    init_run,
    plan_steps,
    prepare,
    rack_utilization,
    simulate,
    simulate_run,
    step_run,
)
from twin.spec import load_facility
from twin.units import SpecError

STEP_S = 30.0
RECORD_S = 300.0


@pytest.fixture(scope="module")
def run():
    return prepare(load_facility("single-rack"), STEP_S, "2023-07-15T12:00Z", LoadMix.parse(None))


def _equal_trees(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_a_run_stepped_in_pieces_ends_where_one_long_step_ends(run):
    s0 = init_run(run)
    assert isinstance(s0, SimState) and s0.steps == 0 and s0.seconds == 0.0
    half, rec_a = step_run(run, s0, 0.25, RECORD_S)
    assert half.steps == 30 and half.seconds == pytest.approx(900.0, abs=1e-9)
    two, rec_b = step_run(run, half, 0.25, RECORD_S)
    one, rec = step_run(run, init_run(run), 0.5, RECORD_S)
    assert two.steps == one.steps == 60
    assert two.seconds == one.seconds == pytest.approx(1800.0, abs=1e-9)
    assert _equal_trees(two.physics, one.physics)
    assert _equal_trees(two.ledger, one.ledger)
    for a, b, whole in zip(rec_a, rec_b, rec, strict=True):
        assert np.array_equal(np.concatenate([a, b]), whole)
    assert rec.it_power.shape == (6, len(run.spec.sites))  # one record per 300 s


def test_simulate_is_simulate_run_and_its_state_gives_the_dataset(run):
    ds, summary, state = simulate_run(run, 0.5, RECORD_S)
    ds2, summary2 = simulate(run.spec, 0.5, record_interval=RECORD_S, run=run)
    for v in ds.variables:
        assert np.array_equal(ds[v].values, ds2[v].values), v
    timing = {"wall_seconds", "gpu_steps_per_second"}
    assert {k: v for k, v in summary.items() if k not in timing and k != "sites"} == {
        k: v for k, v in summary2.items() if k not in timing and k != "sites"
    }
    host = state.numpy()
    rack_max = host.physics.gpu_temp.reshape(run.params.n_racks, -1).max(axis=1) - ZERO_CELSIUS_K
    assert np.array_equal(ds.final_rack_max_gpu_temperature.values, rack_max)
    # the ledger's IT energy is the records' mean IT power times the record length
    energy_kwh = float(ds.it_power.sum()) * ds.attrs["record_seconds"] / 3.6e6
    assert summary["it_energy_kwh"] == pytest.approx(energy_kwh, rel=1e-12)
    assert summary["steps"] == state.steps == 60
    # the top-level lazy names are these functions
    assert twin.init_run is init_run and twin.step_run is step_run


def test_plan_steps_divides_the_run_into_records_and_chunks(run):
    plan = plan_steps(run, 1.0, 420.0)  # 120 steps; 14 steps per record do not divide 120
    assert plan.steps == 120 and 120 % plan.steps_per_record == 0
    assert plan.steps_per_record == 12  # the largest divisor of 120 not above 14
    assert plan.records % plan.chunk == 0
    with pytest.raises(SpecError, match="--hours"):
        step_run(run, init_run(run), 0.0)


@pytest.mark.parametrize("load", [None, "inference=1"])
def test_rack_utilization_follows_the_workload_schedule(load):
    """Mean load: the square wave's on-time over one period (physics.workload), times the
    diurnal factor; the high phase: ``load_high`` times the same factor."""
    run = prepare(load_facility("single-rack"), STEP_S, "2023-07-15T12:00Z", LoadMix.parse(load))
    p = run.params
    period = np.asarray(p.load_period)
    on = (
        np.asarray(workload.square_wave_on_time(period, p.load_duty, p.load_phase, 123.0, period))
        / period
    )
    low, high = np.asarray(p.load_low), np.asarray(p.load_high)
    for hour in (run.hour0, run.hour0 + 7.5):
        u_mean, u_hot = rack_utilization(p, hour)
        f = np.asarray(
            workload.diurnal_factor(p.load_diurnal_amplitude, p.load_diurnal_peak_hour, hour)
        )
        np.testing.assert_allclose(u_hot, high * f, rtol=1e-15)
        np.testing.assert_allclose(u_mean, (low + (high - low) * on) * f, rtol=1e-12)
    if load:  # inference follows the day: 1 + 0.25 cos(...) differs between the two hours
        assert not np.allclose(rack_utilization(p, run.hour0)[0], u_mean)
