"""Workload placement and setpoint optimization on the twin.

Public API (see docs/placement.md): :func:`replay` steps the facility through a job set under a
policy; :func:`compare` runs several policies; :func:`build_topology` and :func:`check_feasible`
prepare a run; :func:`optimize_setpoints`, :func:`steady_state` and :func:`rack_conditions`
expose the steady-state model the twin policy optimizes; :func:`rack_steady` gives each rack's
steady IT power and coolant inlet and return temperatures (:func:`rack_inlet`) for a run's load.

Modules, by role: :mod:`.steady` (steady state, gradients, parameter setters),
:mod:`.setpoints` (L-BFGS-B setpoint optimization), :mod:`.topology` (racks, rows, sites, caps,
feasibility), :mod:`.allocation` (each policy's rack choice), :mod:`.snapshot` (placement of a
snapshot of jobs, MILP), :mod:`.events`, :mod:`.scheduler` (the job queue, EASY backfilling),
:mod:`.parking` (idle-rack parking and wake), :mod:`.controller` (setpoints in force, twin
re-optimization and deferral forecast), :mod:`.accounting` (epoch schedule, the twin advanced,
audit, summary and plan), :mod:`.replay` (the loop), :mod:`.compare`.
"""

from twin.placement.accounting import ENERGY_PARTS
from twin.placement.allocation import BASELINES, MECHANISMS, POLICIES
from twin.placement.compare import (
    attach_savings,
    compare,
    savings_by_mechanism,
    strongest_baseline,
)
from twin.placement.parking import RACK_STANDBY_W, RACK_WAKE_S
from twin.placement.replay import PolicyResult, replay
from twin.placement.setpoints import FWS_RAMP_DOWN_K_PER_H, SetpointResult, optimize_setpoints
from twin.placement.snapshot import milp_placement, place_snapshot, snapshot_objective
from twin.placement.steady import (
    RackSteady,
    Steady,
    rack_conditions,
    rack_inlet,
    rack_steady,
    steady_state,
    with_power_state,
    with_schedule,
    with_setpoints,
)
from twin.placement.topology import (
    Infeasible,
    Topology,
    build_topology,
    check_feasible,
    parse_caps,
)

__all__ = [
    "BASELINES",
    "ENERGY_PARTS",
    "MECHANISMS",
    "FWS_RAMP_DOWN_K_PER_H",
    "POLICIES",
    "RACK_STANDBY_W",
    "RACK_WAKE_S",
    "Infeasible",
    "PolicyResult",
    "RackSteady",
    "SetpointResult",
    "Steady",
    "Topology",
    "attach_savings",
    "build_topology",
    "check_feasible",
    "compare",
    "milp_placement",
    "optimize_setpoints",
    "parse_caps",
    "place_snapshot",
    "rack_conditions",
    "rack_inlet",
    "rack_steady",
    "replay",
    "savings_by_mechanism",
    "snapshot_objective",
    "steady_state",
    "strongest_baseline",
    "with_power_state",
    "with_schedule",
    "with_setpoints",
]
