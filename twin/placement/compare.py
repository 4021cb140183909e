"""Every policy replayed on the same jobs and twin."""

from __future__ import annotations

from twin.io.jobs import JobSet
from twin.placement.allocation import POLICIES
from twin.placement.replay import PolicyResult, replay
from twin.placement.topology import build_topology, check_feasible
from twin.simulation import Run


def compare(
    run: Run, jobs: JobSet, hours: float, policies=POLICIES, **kw
) -> dict[str, PolicyResult]:
    """Replay every policy on the same jobs and twin (``topo``, or one built from ``caps`` and
    ``margin``; other keywords go to :func:`replay`), after :func:`check_feasible`."""
    topo = kw.pop("topo", None) or build_topology(run, kw.pop("caps", None), kw.pop("margin", 5.0))
    check_feasible(run, topo, jobs)
    return {pol: replay(run, jobs, pol, hours, topo=topo, **kw) for pol in policies}
