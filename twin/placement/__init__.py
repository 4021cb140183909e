"""Workload placement and setpoint optimization on the twin.

Public API (see docs/placement.md): :func:`replay` steps the facility through a job set under a
policy; :func:`compare` runs several policies; :func:`build_topology` and :func:`check_feasible`
prepare a run; :func:`optimize_setpoints`, :func:`steady_state` and :func:`rack_conditions`
expose the steady-state model the twin policy optimizes.
"""

from twin.placement.core import (
    FWS_RAMP_DOWN_K_PER_H,
    POLICIES,
    RACK_STANDBY_W,
    RACK_WAKE_S,
    Infeasible,
    PolicyResult,
    SetpointResult,
    Steady,
    Topology,
    build_topology,
    check_feasible,
    compare,
    milp_placement,
    optimize_setpoints,
    parse_caps,
    place_snapshot,
    rack_conditions,
    replay,
    snapshot_objective,
    steady_state,
    with_power_state,
    with_schedule,
    with_setpoints,
)

__all__ = [
    "FWS_RAMP_DOWN_K_PER_H",
    "POLICIES",
    "RACK_STANDBY_W",
    "RACK_WAKE_S",
    "Infeasible",
    "PolicyResult",
    "SetpointResult",
    "Steady",
    "Topology",
    "build_topology",
    "check_feasible",
    "compare",
    "milp_placement",
    "optimize_setpoints",
    "parse_caps",
    "place_snapshot",
    "rack_conditions",
    "replay",
    "snapshot_objective",
    "steady_state",
    "with_power_state",
    "with_schedule",
    "with_setpoints",
]
