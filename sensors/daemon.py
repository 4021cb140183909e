"""The sensor daemon: poll a source, validate, persist, export; flush and exit cleanly.

Every option has a ``TWIN_*`` environment variable; defaults live in :class:`DaemonConfig`.
Logs are JSON lines on stderr.  After every committed flush the daemon logs
``{"event": "flush", "committed_total": ..., "last_time_ns": ...}``: those samples are
*acknowledged* and survive any crash.  SIGTERM/SIGINT: final flush, exit 0.  A replay that
reaches the end of its input: final flush, exit 0.  Data that could not be written at exit:
exit 1 with the count in the log.  A store file deleted or replaced under the daemon (checked at
every flush): nothing more is acknowledged, the daemon stops and exits 1 with the count of
samples it could not write.  A store another process writes (its lock): exit 2 naming it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping

from sensors.base import AbstractSource, hostname
from sensors.errors import InputError
from sensors.exporter import Exporter, MetricsServer
from sensors.store import Store, check_synchronous, ensure_not_locked

log = logging.getLogger("twin.sensors.daemon")


@dataclasses.dataclass
class DaemonConfig:
    """Daemon options; each field ``x`` is also read from ``TWIN_X`` (see :meth:`from_env`)."""

    source: str = "sim"  # nvml | sim | replay:PATH
    store: str = "telemetry.db"
    interval: float = 1.0  # poll interval [s]
    flush_interval: float = 1.0  # commit interval [s]: at most this much is lost on SIGKILL
    metrics_addr: str = ""  # e.g. 127.0.0.1:9400; empty: no HTTP endpoint
    speed: str = "1"  # replay pace: 1 = recorded, 10, or max
    sim_gpus: int = 8
    seed: int = 0
    hostname: str = dataclasses.field(default_factory=hostname)
    location: str = ""
    retention_days: float = 0.0  # 0 = keep everything
    max_buffer_samples: int = 1_000_000
    synchronous: str = "FULL"
    power_unit: str = ""  # replay: unit of power columns whose header has none (W, kW, mW)
    temperature_unit: str = ""  # replay: unit of temperature columns whose header has none

    @classmethod
    def env_name(cls, field: str) -> str:
        return "TWIN_" + field.upper()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> DaemonConfig:
        """Defaults, then ``TWIN_*`` variables, then non-None ``overrides`` (the CLI flags)."""
        env = os.environ if env is None else env
        cfg = cls()
        for f in dataclasses.fields(cls):
            raw = env.get(cls.env_name(f.name))
            if raw is not None and raw != "":
                setattr(cfg, f.name, _convert(f.name, type(getattr(cfg, f.name)), raw))
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        cfg.synchronous = check_synchronous(cfg.synchronous, cls.env_name("synchronous"))
        return cfg


def _convert(name: str, typ: type, raw: str) -> object:

    try:
        return typ(raw)
    except ValueError:
        raise InputError(
            DaemonConfig.env_name(name), raw, f"a value of type {typ.__name__}"
        ) from None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_json_logging(level: int = logging.INFO) -> None:
    lg = logging.getLogger("twin.sensors")
    for h in list(lg.handlers):
        if getattr(h, "_twin_json", False):
            lg.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter())
    h._twin_json = True  # type: ignore[attr-defined]
    lg.addHandler(h)
    lg.setLevel(level)
    lg.propagate = False


def make_source(cfg: DaemonConfig, stop: threading.Event | None = None) -> AbstractSource:

    spec = cfg.source
    if spec == "sim":
        from sensors.simulated import SimulatedSource

        return SimulatedSource(cfg.sim_gpus, cfg.seed, host=cfg.hostname, location=cfg.location)
    if spec == "nvml":
        from sensors.nvml import NvmlSource

        return NvmlSource(host=cfg.hostname, location=cfg.location)
    if spec.startswith("replay:"):
        from sensors.replay import ReplaySource, parse_speed

        wait = stop.wait if stop is not None else time.sleep
        units = {"power": cfg.power_unit, "temperature": cfg.temperature_unit}
        return ReplaySource(spec[len("replay:") :], parse_speed(cfg.speed), sleep=wait, units=units)
    raise InputError("--source", spec, "nvml, sim or replay:PATH")


class Daemon:
    """Poll loop; ``run()`` returns the process exit status."""

    def __init__(self, cfg: DaemonConfig, source: AbstractSource | None = None) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        ensure_not_locked(cfg.store)  # a second daemon stops before starting a source
        self.source = source if source is not None else make_source(cfg, self.stop)
        self.store = Store(
            cfg.store, max_buffer_samples=cfg.max_buffer_samples, synchronous=cfg.synchronous
        )
        self.store.record_provenance(self.source.name, dict(self.source.provenance()))
        self.exporter = Exporter(cfg.hostname, self.source.name)
        self.server: MetricsServer | None = None
        self.last_time_ns: int | None = None
        self._committed_total = 0

    def _info(self, msg: str, **fields: object) -> None:
        log.info(msg, extra={"fields": fields})

    def install_signals(self) -> None:
        def handler(signum: int, frame: object) -> None:
            self._info("signal received, stopping", event="signal", signal=signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _flush(self) -> None:
        n = self.store.flush()
        if n:
            self._committed_total += n
            self._info(
                "flushed",
                event="flush",
                committed=n,
                committed_total=self._committed_total,
                last_time_ns=self.last_time_ns,
            )
        self._update_health()

    def _update_health(self) -> None:
        st = self.store.stats
        lag = time.time() - self.last_time_ns / 1e9 if self.last_time_ns is not None else math.nan
        self.exporter.set_health(
            twin_ingest_samples_total=st["committed"],
            twin_ingest_rows_total=st["rows"],
            twin_ingest_dropped_total=st["dropped"],
            twin_ingest_buffered_samples=self.store.pending_samples,
            twin_ingest_lag_seconds=lag,
            twin_store_write_errors_total=st["write_errors"],
        )
        self.exporter.set_quarantined(
            {k.split(":", 1)[1]: v for k, v in st.items() if k.startswith("quarantined:")}
        )

    def run(self) -> int:
        cfg = self.cfg
        if cfg.metrics_addr:
            self.server = MetricsServer(self.exporter, cfg.metrics_addr)
        self._info(
            "sensord started",
            event="start",
            source=cfg.source,
            store=str(cfg.store),
            interval=cfg.interval,
            metrics_addr=self.server.address if self.server else None,
            devices=len(self.source.devices()),
            pid=os.getpid(),
        )
        paced = cfg.source.startswith("replay:")
        next_poll = time.monotonic()
        last_flush = time.monotonic()
        last_compact = -math.inf
        status = 0
        reason = "stopped"
        try:
            while not self.stop.is_set():
                try:
                    batch = self.source.read()
                    self.exporter.collector_success = 1.0
                except Exception:
                    self.exporter.collector_success = 0.0
                    log.exception("source read failed", extra={"fields": {"event": "read_error"}})
                    if paced:
                        status, reason = 1, "replay read failed"
                        break
                    self.stop.wait(cfg.interval)
                    continue
                if batch is None:
                    reason = "end of replay input"
                    break
                gpus = self.source.devices()
                before = self.store.stats["samples"]
                self.store.append(batch, gpus, self.source.name)
                if self.store.stats["samples"] > before and len(batch):
                    self.last_time_ns = max(self.last_time_ns or 0, int(batch.time_ns.max()))
                self.exporter.update(batch, gpus, self.store.last_accepted)
                lost = getattr(self.source, "lost", None)
                if lost:
                    self.exporter.set_lost({gpus[i].key: gpus[i] for i in lost})
                now = time.monotonic()
                if now - last_flush >= cfg.flush_interval:
                    self._flush()
                    last_flush = now
                    if self.store.lost:
                        status, reason = 1, "store file lost"
                        break
                    if cfg.retention_days > 0 and now - last_compact >= 3600.0:
                        last_compact = now
                        self._info(
                            "compacting",
                            event="compact",
                            **self.store.compact(cfg.retention_days * 86400.0),
                        )
                if not paced:
                    next_poll += cfg.interval
                    delay = next_poll - time.monotonic()
                    if delay < -cfg.interval:  # fell behind: do not burst, count from now
                        next_poll = time.monotonic()
                        delay = 0.0
                    if delay > 0:
                        self.stop.wait(delay)
        finally:
            self._flush()
            left = self.store.pending_samples
            if self.store.lost:
                reason = "store file lost"
                log.error(
                    f"{self.store.lost}; {left} samples not written, and the "
                    f"{self._committed_total} acknowledged before went with the old file",
                    extra={
                        "fields": {
                            "event": "store_lost",
                            "unwritten": left,
                            "acknowledged_lost": self._committed_total,
                        }
                    },
                )
            if left:
                log.error(
                    "exiting with unwritten samples",
                    extra={
                        "fields": {
                            "event": "unwritten",
                            "samples": left,
                            "error": self.store.last_error,
                        }
                    },
                )
                status = 1
            info = self.store.info()  # (of the file we hold open, even if it left its path)
            self._info(
                "sensord exiting",
                event="exit",
                reason=reason,
                samples=None if self.store.lost else info["samples"],
                read=self.store.stats["rows"],
                unwritten=left,
                committed_into_lost_file=self.store.stats["committed_into_lost_file"],
                quarantined=info["quarantined"],
                dropped=info["dropped"],
                status=status,
            )
            if self.server:
                self.server.close()
            self.source.close()
            self.store.close()
        return status
