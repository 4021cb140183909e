"""The metric catalogue (``sensors/metrics.csv``) as data: dcgm-exporter names and twin health."""

from __future__ import annotations

import csv
import dataclasses
from functools import cache
from pathlib import Path

CATALOGUE = Path(__file__).with_name("metrics.csv")


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    type: str
    field: str  # store field for GPU metrics, "" for health metrics
    scale: float  # metric value = store value * scale
    unit: str
    help: str


@cache
def catalogue() -> tuple[Metric, ...]:
    with CATALOGUE.open(newline="") as fh:
        return tuple(
            Metric(
                r["name"],
                r["type"],
                r["field"],
                float(r["scale"]) if r["scale"] else 1.0,
                r["unit"],
                r["help"],
            )
            for r in csv.DictReader(fh)
        )


def gpu_metrics() -> tuple[Metric, ...]:
    return tuple(m for m in catalogue() if m.field)


def health_metrics() -> dict[str, Metric]:
    return {m.name: m for m in catalogue() if not m.field}


def by_name() -> dict[str, Metric]:
    return {m.name: m for m in catalogue()}
