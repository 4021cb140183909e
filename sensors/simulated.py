"""A simulated GPU node driven by ``physics.gpu``: the embedded default wherever no GPU is present.

Each GPU has hidden "true" parameters drawn from a seeded generator (cold-plate resistance, die
heat capacity, leakage, idle power, HBM node, coolant inlet temperature; ranges from
``shared/refs/physics-references.md`` section 1 and 6, as used by ``physics.gpu``).  Workloads
change over time: synchronous training (square wave between 0.45 and 1.0 of TDP with a 1-2 s
period), inference (0.2-0.45 of TDP) and idle.  The die and HBM nodes are integrated exactly
(``physics.gpu.die_temperature_step``, ``hbm_temperature_step``) on a 50 ms internal tick.
One jitted call simulates a 1 s block (20 ticks) and keeps every tick's readings; polls within
that second are served from the block (a 10 Hz daemon makes one JAX call per second, not ten),
and workloads switch on block boundaries.

The readings imitate NVML: power averaged over the last 1 s (``nvmlDeviceGetPowerUsage`` on
recent drivers), an instantaneous power with more noise, an energy counter with 1 mJ resolution,
temperatures with sensor noise quantized to 1 degC, clocks, utilization and clocks-event reasons.
Given the same seed and the same clock, the output is identical.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import numpy as np

from physics.constants import ZERO_CELSIUS_K
from sensors.base import (
    AbstractSource,
    Batch,
    Clock,
    FieldProvenance,
    GpuInfo,
    hostname,
)

TICK = 0.05  # internal step [s]
WINDOW_TICKS = 20  # 1 s power average
BLOCK_TICKS = 20  # ticks simulated per JAX call (1 s)
ZERO_C = ZERO_CELSIUS_K


@dataclasses.dataclass(frozen=True)
class TrueParameters:
    """Hidden per-GPU parameters (arrays over GPUs), SI units, temperatures in K."""

    tdp: np.ndarray  # [W]
    resistance: np.ndarray  # die -> coolant [K/W]
    capacitance: np.ndarray  # [J/K]
    leakage_ref: np.ndarray  # [W] at temp_ref
    leakage_coeff: np.ndarray  # [1/K]
    temp_ref: np.ndarray  # [K]
    power_idle: np.ndarray  # [W]
    hbm_share: np.ndarray  # share of package power dissipated in HBM [-]
    hbm_resistance: np.ndarray  # [K/W]
    hbm_capacitance: np.ndarray  # [J/K]
    temp_coolant: np.ndarray  # cold-plate inlet [K]

    def subset(self, idx: slice | np.ndarray) -> TrueParameters:
        """These parameters for the GPUs ``idx`` (a slice or an index array)."""
        return TrueParameters(
            **{f.name: np.asarray(getattr(self, f.name))[idx] for f in dataclasses.fields(self)}
        )


def draw_parameters(n: int, rng: np.random.Generator, tdp: float = 700.0) -> TrueParameters:
    resistance = rng.uniform(0.018, 0.030, n)
    # one GPU with a poor cold-plate contact, as seen on real nodes (+~20 K at load)
    if n > 1:
        resistance[rng.integers(n)] *= 1.8
    return TrueParameters(
        tdp=np.full(n, tdp),
        resistance=resistance,
        capacitance=rng.uniform(150.0, 400.0, n),
        leakage_ref=rng.uniform(0.06, 0.10, n) * tdp,
        leakage_coeff=rng.uniform(0.015, 0.025, n),
        temp_ref=np.full(n, ZERO_C + 60.0),
        power_idle=rng.uniform(0.06, 0.08, n) * tdp,
        hbm_share=rng.uniform(0.08, 0.14, n),
        hbm_resistance=rng.uniform(0.10, 0.16, n),
        hbm_capacitance=rng.uniform(40.0, 80.0, n),
        temp_coolant=ZERO_C + rng.uniform(24.0, 32.0, n) + np.zeros(n),
    )


def _make_kernel():
    import jax
    import jax.numpy as jnp

    from physics import gpu, workload  # importing physics turns on float64 (energy counter)

    def tick(carry, t, p, wl):
        temp, temp_hbm, energy, ring, k = carry
        q = workload.square_wave(wl["period"], 0.5, wl["phase"], t)
        target = wl["low"] + (wl["high"] - wl["low"]) * q  # package power target [W]
        leak = gpu.leakage_power(temp, p["leakage_ref"], p["leakage_coeff"], p["temp_ref"])
        p_work = jnp.maximum(target - leak, p["power_idle"] * 0.5)
        p_total = p_work + leak
        temp = gpu.die_temperature_step(
            temp,
            p["temp_coolant"],
            p_work,
            p["resistance"],
            p["capacitance"],
            p["leakage_ref"],
            p["leakage_coeff"],
            p["temp_ref"],
            TICK,
        )
        temp_hbm, _ = gpu.hbm_temperature_step(
            temp_hbm,
            p["temp_coolant"],
            p["hbm_share"] * p_total,
            p["hbm_resistance"],
            p["hbm_capacitance"],
            TICK,
        )
        ring = ring.at[k % WINDOW_TICKS].set(p_total)
        return (temp, temp_hbm, energy + p_total * TICK, ring, k + 1), p_total

    def run(state, p, wl, t0, n_skip):
        """Advance ``n_skip`` ticks, then ``BLOCK_TICKS`` more, recording every one of those.

        One dispatch serves ``BLOCK_TICKS`` ticks of readings (1 s: 10 polls at 10 Hz), so the
        per-poll cost is an array slice, not a JAX call.
        """

        def skip(i, carry):
            return tick(carry, t0 + i * TICK, p, wl)[0]

        state = jax.lax.fori_loop(0, n_skip, skip, state)

        def body(carry, j):
            carry, p_total = tick(carry, t0 + (n_skip + j) * TICK, p, wl)
            temp, temp_hbm, energy, ring, _ = carry
            return carry, (temp, temp_hbm, energy, p_total, ring.mean(axis=0))

        return jax.lax.scan(body, state, jnp.arange(BLOCK_TICKS))

    return jax.jit(run)


_KERNEL = None


class SimulatedSource(AbstractSource):
    """``n_gpus`` simulated GPUs on one host; ``clock`` gives Unix seconds (injectable).

    ``parameters`` sets the hidden truth (:class:`TrueParameters` over the ``n_gpus``) instead
    of :func:`draw_parameters`: a fleet of hosts drawn as one, e.g. with one degraded plate in all.
    """

    name = "sim"

    def __init__(
        self,
        n_gpus: int = 8,
        seed: int = 0,
        *,
        host: str | None = None,
        clock: Clock = time.time,
        tdp: float = 700.0,
        location: str = "",
        parameters: TrueParameters | None = None,
        gpu_name: str = "Simulated H100 SXM 80GB",
    ) -> None:
        global _KERNEL
        if _KERNEL is None:
            _KERNEL = _make_kernel()
        self._kernel = _KERNEL
        self.n = int(n_gpus)
        self.seed = int(seed)
        self.host = host or hostname()
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        if parameters is None:
            parameters = draw_parameters(self.n, self._rng, tdp)
        elif len(parameters.resistance) != self.n:
            raise ValueError(
                f"parameters: {len(parameters.resistance)} GPUs given, expected n_gpus={self.n}"
            )
        self.true_parameters = parameters
        p = self.true_parameters
        self._p = {k: np.asarray(v, np.float64) for k, v in dataclasses.asdict(p).items()}
        self._p.pop("tdp")
        temp0 = p.temp_coolant + p.power_idle * p.resistance
        self._state = (
            temp0,
            p.temp_coolant + p.hbm_share * p.power_idle * p.hbm_resistance,
            np.zeros(self.n),
            np.tile(p.power_idle[:, None], (1, WINDOW_TICKS)).T.copy(),
            np.int64(0),
        )
        self._t_sim = 0.0
        self._tick = 0  # ticks elapsed at the latest reading
        self._buf_first = 1 - BLOCK_TICKS  # tick of the block's first row (none simulated yet)
        self._block: dict[str, np.ndarray] | None = None
        self._gpu_pos = np.arange(self.n)
        self._t_last: float | None = None
        self._remainder = 0.0
        self._next_switch = np.zeros(self.n)
        self._mode = np.zeros(self.n, dtype=np.int64)  # 0 idle, 1 inference, 2 training
        self._wl = {k: np.zeros(self.n) for k in ("low", "high", "period", "phase")}
        for k in ("period",):
            self._wl[k] += 1.0
        uuids = [f"GPU-sim{self.seed:04d}-{_hash(self.host)}-{i:04d}" for i in range(self.n)]
        self._devices = [
            GpuInfo(
                key=uuids[i],
                index=i,
                host=self.host,
                uuid=uuids[i],
                name=gpu_name,
                pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0",
                power_limit=float(parameters.tdp[i]),
                temp_slowdown=87.0,
                temp_shutdown=92.0,
                location=location,
            )
            for i in range(self.n)
        ]
        self.modes_seen: set[str] = set()

    def devices(self) -> list[GpuInfo]:
        return self._devices

    def provenance(self) -> Mapping[str, FieldProvenance]:
        o = f"simulated(physics.gpu, seed={self.seed})"
        return {
            "power_average": FieldProvenance(
                f"{o} 1 s boxcar of package power", "average", "W", 1.0
            ),
            "power_instant": FieldProvenance(f"{o} instantaneous package power", "instant", "W"),
            "energy_total": FieldProvenance(f"{o} energy counter (1 mJ)", "counter", "J"),
            "temp_gpu": FieldProvenance(f"{o} die node, 1 degC steps", "gauge", "degC"),
            "temp_memory": FieldProvenance(f"{o} HBM node, 1 degC steps", "gauge", "degC"),
            "clock_sm": FieldProvenance(f"{o} SM clock", "gauge", "MHz"),
            "clock_memory": FieldProvenance(f"{o} memory clock", "gauge", "MHz"),
            "utilization_gpu": FieldProvenance(f"{o} utilization", "average", "percent"),
            "clocks_event_reasons": FieldProvenance(
                f"{o} clocks-event reasons", "gauge", "dimensionless"
            ),
        }

    def _switch_workloads(self) -> None:
        due = self._t_sim >= self._next_switch
        if not due.any():
            return
        rng = self._rng
        tdp = self.true_parameters.tdp
        for i in np.flatnonzero(due):
            mode = int(rng.choice(3, p=[0.2, 0.3, 0.5]))
            self._mode[i] = mode
            self.modes_seen.add(("idle", "inference", "training")[mode])
            if mode == 2:
                self._wl["low"][i] = 0.45 * tdp[i]
                self._wl["high"][i] = 1.0 * tdp[i]
                self._wl["period"][i] = rng.uniform(1.0, 2.0)
                self._wl["phase"][i] = rng.uniform(0.0, 2.0)
            elif mode == 1:
                level = rng.uniform(0.2, 0.45) * tdp[i]
                self._wl["low"][i] = self._wl["high"][i] = level
            else:
                level = self.true_parameters.power_idle[i] * 1.05
                self._wl["low"][i] = self._wl["high"][i] = level
            self._next_switch[i] = self._t_sim + rng.uniform(20.0, 90.0)

    def _compute_block(self, target: int) -> None:
        """Simulate up to tick ``target`` and ``BLOCK_TICKS - 1`` beyond; readings per tick."""
        end = self._buf_first + BLOCK_TICKS - 1  # last tick simulated so far
        self._t_sim = end * TICK
        self._switch_workloads()  # workloads change on block boundaries (1 s)
        skip = target - end - 1
        state, (temp, temp_hbm, energy, p_inst, p_avg) = self._kernel(
            self._state, self._p, self._wl, self._t_sim, skip
        )
        self._state = tuple(np.asarray(x) for x in state)
        self._buf_first = target
        rng = self._rng
        shape = (BLOCK_TICKS, self.n)
        p_inst = np.asarray(p_inst)
        mode = self._mode
        util = np.where(mode == 2, 100.0, np.where(mode == 1, 70.0, 0.0))
        util = np.where(mode == 1, np.round(util + rng.normal(0, 10, shape)).clip(30, 95), util)
        capped = p_inst >= 0.98 * self.true_parameters.tdp
        clock_sm = np.where(mode == 0, 345.0, np.where(capped, 1755.0, 1980.0))
        reasons = np.where(mode == 0, 0x1, np.where(capped, 0x4, 0x0)).astype(float)
        block = {
            "power_average": np.round(np.asarray(p_avg) + rng.normal(0, 0.8, shape), 2),
            "power_instant": np.round(p_inst + rng.normal(0, 4.0, shape), 2),
            "energy_total": np.round(np.asarray(energy), 3),
            "temp_gpu": np.round(np.asarray(temp) - ZERO_C + rng.normal(0, 0.25, shape)),
            "temp_memory": np.round(np.asarray(temp_hbm) - ZERO_C + rng.normal(0, 0.25, shape)),
            "clock_sm": clock_sm,
            "clock_memory": np.full(shape, 2619.0),
            "utilization_gpu": np.broadcast_to(util, shape),
            "clocks_event_reasons": reasons,
        }
        # rows are served as views: make each block's arrays C-contiguous and never mutated
        self._block = {f: np.ascontiguousarray(v, dtype=np.float64) for f, v in block.items()}

    def read(self) -> Batch:
        now = self._clock()
        if self._t_last is None:
            elapsed = 2.0  # fill the power-average window before the first reading
        else:
            elapsed = min(max(now - self._t_last, 0.0), 600.0) + self._remainder
        self._t_last = now
        n_ticks = int(elapsed / TICK)
        self._remainder = elapsed - n_ticks * TICK
        self._tick += n_ticks
        row = self._tick - self._buf_first
        if row >= BLOCK_TICKS or self._block is None:
            self._compute_block(self._tick)
            row = 0
        values = {f: v[row] for f, v in self._block.items()}
        t_ns = int(round(now * 1e9))
        return Batch(np.full(self.n, t_ns, np.int64), self._gpu_pos, values)


def _hash(s: str) -> str:
    import zlib

    # surrogatepass: a host name with an undecodable byte (surrogate-escaped) hashes too
    return f"{zlib.crc32(s.encode('utf-8', 'surrogatepass')) & 0xFFFFFFFF:08x}"
