"""The workload: the ``--load`` mix of racks and the per-rack schedule it lays out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.spec import GpuModel
from twin.units import SpecError


@dataclass(frozen=True)
class LoadMix:
    """The default workload: shares of racks running synchronous training, inference, idle.

    Training swings between ``training_low`` and ``training_high`` of TDP with a period drawn in
    ``training_period`` (refs 6: every 1-2 s, 0.45 <-> 1.0 TDP); inference holds
    ``inference_range`` of TDP (refs 6: 0.2-0.45) with a daily cycle.
    """

    training: float = 0.7
    inference: float = 0.25
    idle: float = 0.05
    training_low: float = 0.45
    training_high: float = 1.0
    training_period: tuple[float, float] = (1.0, 2.0)
    training_duty: float = 0.5
    job_racks: tuple[int, int] = (8, 64)
    inference_range: tuple[float, float] = (0.2, 0.45)
    inference_diurnal_amplitude: float = 0.25
    inference_peak_local_hour: float = 20.0
    constant: float | None = None  # every GPU at this fraction of TDP, no swing

    @classmethod
    def parse(cls, text: str | None) -> LoadMix:
        """Parse ``--load``: 'training=0.7,inference=0.25,idle=0.05' or 'constant=0.8'."""
        if text is None or text.strip() in ("", "default", "mix"):
            return cls()
        fields: dict[str, float] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ("training", "inference", "idle", "constant"):
                raise SpecError(
                    "--load",
                    text,
                    "comma-separated training=F,inference=F,idle=F "
                    "(fractions of racks) or constant=F (fraction of TDP)",
                )
            try:
                fields[key] = float(value)
            except ValueError as exc:
                raise SpecError(f"--load {key}", value, "a number") from exc
            if not (0.0 <= fields[key] <= 1.0):
                raise SpecError(f"--load {key}", value, "a fraction between 0 and 1")
        if "constant" in fields:
            return cls(training=0.0, inference=0.0, idle=0.0, constant=fields["constant"])
        mix = {k: fields.get(k, 0.0) for k in ("training", "inference", "idle")}
        total = sum(mix.values())
        if total <= 0:
            raise SpecError("--load", text, "shares that sum to more than 0")
        return cls(**{k: v / total for k, v in mix.items()})


def workload_params(
    load: LoadMix, gpu: GpuModel, n_racks: int, rng: np.random.Generator, tz_hours: float
) -> dict[str, np.ndarray]:
    """The ``load_*`` fields of :class:`~physics.facility.FacilityParams` for one site's racks.

    Training jobs span several racks sharing one synchronous power cycle; inference racks hold
    a level with a daily cycle peaking at ``inference_peak_local_hour`` local time (stored in
    UTC); job types are spread over the halls by one random permutation. Draws from ``rng`` in a
    fixed order (job sizes, periods and phases, inference levels, the permutation).
    """
    u = gpu.utilization_for_power_fraction
    s = {
        "load_low": np.zeros(n_racks),
        "load_high": np.zeros(n_racks),
        "load_period": np.ones(n_racks),
        "load_duty": np.full(n_racks, 0.5),
        "load_phase": np.zeros(n_racks),
        "load_diurnal_amplitude": np.zeros(n_racks),
        "load_diurnal_peak_hour": np.full(
            n_racks, (load.inference_peak_local_hour - tz_hours) % 24.0
        ),
    }
    if load.constant is not None:
        level = max(u(load.constant), 0.0)
        return {**s, "load_low": np.full(n_racks, level), "load_high": np.full(n_racks, level)}
    n_train = min(int(round(load.training * n_racks)), n_racks)
    n_inf = min(int(round(load.inference * n_racks)), n_racks - n_train)
    i = 0
    while i < n_train:
        size = min(int(rng.integers(load.job_racks[0], load.job_racks[1] + 1)), n_train - i)
        job = slice(i, i + size)
        s["load_low"][job] = u(load.training_low)
        s["load_high"][job] = u(load.training_high)
        s["load_period"][job] = rng.uniform(*load.training_period)
        s["load_duty"][job] = load.training_duty
        s["load_phase"][job] = rng.uniform(0.0, s["load_period"][i])
        i += size
    inference = slice(n_train, n_train + n_inf)
    level = rng.uniform(u(load.inference_range[0]), u(load.inference_range[1]), n_inf)
    s["load_low"][inference] = level
    s["load_high"][inference] = level
    s["load_diurnal_amplitude"][inference] = load.inference_diurnal_amplitude
    # Idle racks (the rest) stay at utilization 0.
    order = rng.permutation(n_racks)
    s = {name: values[order] for name, values in s.items()}
    s["load_low"] = np.clip(s["load_low"], 0, None)
    s["load_high"] = np.clip(s["load_high"], 0, None)
    return s
