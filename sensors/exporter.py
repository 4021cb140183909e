"""Prometheus text exposition with dcgm-exporter's metric names and labels, plus health metrics.

The GPU metrics keep dcgm-exporter's names, types, help texts and labels (``gpu``, ``UUID``,
``pci_bus_id``, ``device``, ``modelName``, ``Hostname``) so existing Grafana dashboards work; the
catalogue is data (``sensors/metrics.csv``).  Values are the latest accepted sample of each GPU,
worked out when scraped: :meth:`Exporter.update` only queues the batch (the poll loop pays
almost nothing per poll) and :meth:`Exporter.render` folds the queue, newest first;
a field the GPU does not support is omitted (as dcgm-exporter does), and a lost GPU keeps only
``twin_gpu_lost 1``.  Like dcgm-exporter, samples carry no timestamp: Prometheus stamps them at
scrape time.
"""

from __future__ import annotations

import http.server
import math
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from sensors.base import COLUMN_REASONS, REASONS, Batch, GpuInfo, printable
from sensors.errors import InputError
from sensors.metrics import gpu_metrics, health_metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def _esc(s: str) -> str:
    """A label value of the text exposition: :func:`printable`, then the format's escapes of
    backslash, newline and double quote (the only escapes Prometheus' parsers accept)."""
    s = printable(s)
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in pairs) + "}"


def gpu_labels(g: GpuInfo, hostname: str) -> list[tuple[str, str]]:
    """dcgm-exporter's label set for one GPU, in its order."""
    return [
        ("gpu", str(g.index)),
        ("UUID", g.uuid),
        ("pci_bus_id", g.pci_bus_id),
        ("device", f"nvidia{g.index}"),
        ("modelName", g.name),
        ("Hostname", g.host or hostname),
    ]


class Exporter:
    """Holds the latest sample per GPU and the health counters; renders exposition text."""

    def __init__(self, hostname: str, collector: str) -> None:
        self.hostname = hostname
        self.collector = collector
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[GpuInfo, dict[str, float]]] = {}
        self._lost: dict[str, GpuInfo] = {}
        self.health: dict[str, float] = {}
        self.quarantined: dict[str, int] = {r: 0 for r in REASONS if r not in COLUMN_REASONS}
        self.collector_success = 1.0
        self._queue: list[tuple[Batch, Sequence[GpuInfo], np.ndarray | None]] = []
        self.max_queue = 256  # batches queued between scrapes before they are folded anyway

    def update(
        self, batch: Batch, gpus: Sequence[GpuInfo], accepted: np.ndarray | None = None
    ) -> None:
        """Remember the last value of every field per GPU from ``batch`` (rows in ``accepted``)."""
        if not len(batch):
            return
        with self._lock:
            self._queue.append((batch, gpus, accepted))
            if len(self._queue) > self.max_queue:
                self._fold()

    def _fold(self) -> None:
        """Apply the queued batches (caller holds the lock), newest first.

        A (GPU, field) value already taken from a newer batch is never overwritten, so old
        batches cost a set lookup per row once their GPUs are covered; the result equals
        applying every batch in order.
        """
        queue, self._queue = self._queue, []
        done: dict[str, set[str]] = {}
        updates: dict[str, tuple[GpuInfo, dict[str, float]]] = {}
        for batch, gpus, accepted in reversed(queue):
            names = set(batch.values)
            rows = np.arange(len(batch)) if accepted is None else np.flatnonzero(accepted)
            pos = batch.gpu
            for i in rows[::-1].tolist():
                g = gpus[pos[i]]
                got = done.get(g.key)
                if got is None:
                    got = done[g.key] = set()
                    updates[g.key] = (g, {})
                elif names <= got:
                    continue
                vals = updates[g.key][1]
                for f, v in batch.values.items():
                    if f in got:
                        continue
                    x = float(v[i])
                    if not math.isnan(x):
                        vals[f] = x
                        got.add(f)
        # newest GpuInfo first seen wins; dict order: the first time a GPU was ever seen
        for key, (g, vals) in reversed(list(updates.items())):
            old = self._latest.get(key)
            merged = dict(old[1]) if old is not None else {}
            merged.update(vals)
            self._latest[key] = (g, merged)

    def set_lost(self, gpus: Mapping[str, GpuInfo]) -> None:
        with self._lock:
            self._fold()
            self._lost = dict(gpus)
            for k in gpus:
                self._latest.pop(k, None)

    def set_health(self, **values: float) -> None:
        with self._lock:
            self.health.update(values)

    def set_quarantined(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for k, v in counts.items():
                self.quarantined[k] = int(v)

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            self._fold()
            latest = sorted(self._latest.values(), key=lambda gv: (gv[0].host, gv[0].index))
            for m in gpu_metrics():
                series = [(g, vals[m.field] * m.scale) for g, vals in latest if m.field in vals]
                if not series:
                    continue
                out.append(f"# HELP {m.name} {m.help}")
                out.append(f"# TYPE {m.name} {m.type}")
                for g, v in series:
                    out.append(f"{m.name}{_labels(gpu_labels(g, self.hostname))} {_fmt(v)}")
            hm = health_metrics()

            def emit(name: str, samples: list[tuple[list[tuple[str, str]], float]]) -> None:
                m = hm[name]
                out.append(f"# HELP {name} {m.help}")
                out.append(f"# TYPE {name} {m.type}")
                for labels, v in samples:
                    out.append(f"{name}{_labels(labels) if labels else ''} {_fmt(v)}")

            for name in (
                "twin_ingest_samples_total",
                "twin_ingest_rows_total",
                "twin_ingest_dropped_total",
                "twin_ingest_buffered_samples",
                "twin_ingest_lag_seconds",
                "twin_store_write_errors_total",
            ):
                emit(name, [([], float(self.health.get(name, 0.0)))])
            emit(
                "twin_ingest_quarantined_total",
                [([("reason", r)], float(c)) for r, c in sorted(self.quarantined.items())],
            )
            emit(
                "twin_collector_success",
                [([("collector", self.collector)], self.collector_success)],
            )
            lost = [(g, 1.0) for g in self._lost.values()] + [(g, 0.0) for g, _ in latest]
            lost.sort(key=lambda gv: (gv[0].host, gv[0].index))
            emit(
                "twin_gpu_lost",
                [
                    (
                        [
                            ("gpu", str(g.index)),
                            ("UUID", g.uuid),
                            ("Hostname", g.host or self.hostname),
                        ],
                        v,
                    )
                    for g, v in lost
                ],
            )
        return "\n".join(out) + "\n"


def parse_addr(addr: str) -> tuple[str, int]:
    """``"127.0.0.1:9400"`` -> (host, port); ``":9400"`` binds 127.0.0.1 (never all interfaces
    unless asked, e.g. ``0.0.0.0:9400``)."""

    host, sep, port = addr.rpartition(":")
    if not sep:
        raise InputError("--metrics-addr", addr, "HOST:PORT, e.g. 127.0.0.1:9400")
    try:
        p = int(port)
    except ValueError:
        raise InputError("--metrics-addr", addr, "HOST:PORT with a numeric port") from None
    if not 0 <= p <= 65535:
        raise InputError("--metrics-addr", addr, "a port between 0 and 65535")
    return (host.strip("[]") or "127.0.0.1"), p


class MetricsServer:
    """Serve ``exporter.render()`` at ``/metrics`` from a daemon thread."""

    def __init__(self, exporter: Exporter, addr: str) -> None:
        host, port = parse_addr(addr)
        exp = exporter

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = exp.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, daemon=True, name="metrics"
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
