"""The replay's events in time order: job ends, arrivals (or releases of deferred jobs), wakes."""

from __future__ import annotations

import enum
import heapq
from typing import NamedTuple


class EventKind(enum.IntEnum):
    """What happens at an event; at equal times ends come first (capacity frees before it is
    asked for), then arrivals, then woken racks."""

    END = 0
    ARRIVAL = 1  # an arrival, or the release of a deferred job
    WAKE = 2  # woken racks take jobs from now


class Event(NamedTuple):
    """One event; ordered as a tuple."""

    time: float  # [s] from the replay start
    kind: EventKind
    job: int  # -1 for WAKE


class EventQueue:
    """Events ordered by (time, kind, job)."""

    def __init__(self, events: list[Event] | None = None) -> None:
        self._heap = list(events or [])
        heapq.heapify(self._heap)

    def push(self, time: float, kind: EventKind, job: int = -1) -> None:
        heapq.heappush(self._heap, Event(time, kind, job))

    def pop_before(self, t_end: float) -> Event | None:
        """The next event before ``t_end``, or None (it stays queued)."""
        if self._heap and self._heap[0].time < t_end:
            return heapq.heappop(self._heap)
        return None
