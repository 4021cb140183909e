"""Fleet telemetry from a Prometheus server's HTTP API (``/api/v1/query_range``).

For fleets that already run dcgm-exporter (or ``twin sensord``): the dcgm-exporter metrics of the
catalogue are read into the same Dataset as :meth:`sensors.store.Store.read` (dims ``time`` and
``gpu``; GPU identity from the ``UUID``, ``gpu``, ``Hostname``, ``modelName``, ``pci_bus_id``
labels).  Requests are chunked over time (at most ``max_points`` points per series and request,
below Prometheus' 11,000 limit) and over series (hosts grouped so that one request returns at
most ``max_series`` series).  Values are Prometheus' evaluation on the ``step`` grid: the last
scraped value at or before each grid time.

Network failures and 5xx answers are retried with exponential backoff; when the server stays
unreachable :class:`PrometheusUnavailable` says which URL and what was tried.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from sensors.base import FIELDS, pack_in_order
from sensors.metrics import Metric, gpu_metrics

log = logging.getLogger("twin.sensors.fleet")


class PrometheusUnavailable(RuntimeError):
    """The Prometheus server did not answer after all retries."""


class PrometheusQueryError(ValueError):
    """Prometheus answered with an error (bad query, too many points, ...)."""


def _ts(x: object) -> float:
    if isinstance(x, (int, float)):
        return float(x)
    return pd.Timestamp(x).value / 1e9


class PrometheusReader:
    """Read GPU metrics from the Prometheus at ``url`` (e.g. ``http://127.0.0.1:9090``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_points: int = 10_000,
        max_series: int = 500,
        sleep=time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_points = max_points
        self.max_series = max_series
        self._sleep = sleep
        self.requests = 0

    def _get(self, path: str, params: Sequence[tuple[str, str]]) -> object:
        q = urllib.parse.urlencode(list(params))
        full = f"{self.url}{path}?{q}"
        delay = self.backoff
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                self.requests += 1
                with urllib.request.urlopen(full, timeout=self.timeout) as resp:
                    body = json.load(resp)
                if body.get("status") != "success":
                    raise PrometheusQueryError(f"{path}: {body.get('error', body)}")
                return body["data"]
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    try:
                        msg = json.load(exc).get("error", "")
                    except ValueError:
                        msg = ""
                    raise PrometheusQueryError(
                        f"Prometheus at {self.url} rejected {path} (HTTP {exc.code}): {msg}"
                    ) from exc
                last = exc
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = exc
            if attempt < self.retries:
                log.warning(
                    "Prometheus at %s: %s; retry %d/%d in %.1f s",
                    self.url,
                    last,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                self._sleep(delay)
                delay *= 2
        raise PrometheusUnavailable(
            f"Prometheus at {self.url} unreachable after {self.retries + 1} attempts "
            f"(last error: {last}); check the URL, that the server runs and that this host may "
            "reach it"
        )

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        return self._get(
            "/api/v1/series", [("match[]", match), ("start", str(start)), ("end", str(end))]
        )

    def _host_groups(self, metric: str, selector: str, start: float, end: float) -> list[str]:
        """Label matchers that each select at most ``max_series`` series of ``metric``."""
        sel = f"{metric}{{{selector}}}" if selector else metric
        found = self.series(sel, start, end)
        per_host: dict[str, int] = defaultdict(int)
        for s in found:
            per_host[s.get("Hostname", "")] += 1
        hosts = sorted(per_host)
        groups = pack_in_order(hosts, [per_host[h] for h in hosts], self.max_series)
        out = []
        for g in groups:
            rx = "|".join(re.escape(h) for h in g)
            m = f'Hostname=~"{rx}"'
            out.append(f"{metric}{{{selector + ',' if selector else ''}{m}}}")
        return out

    def read(
        self,
        start: object,
        end: object,
        step: float = 15.0,
        *,
        fields: Sequence[str] | None = None,
        selector: str = "",
    ) -> xr.Dataset:
        """Metrics between ``start`` and ``end`` (Unix seconds, or anything pandas parses)."""
        t0, t1 = _ts(start), _ts(end)
        if not t1 >= t0:
            raise ValueError(f"end {end!r} is before start {start!r}")
        metrics: list[Metric] = [
            m for m in gpu_metrics() if fields is None or m.field in set(fields)
        ]
        chunk = self.max_points * step
        values: dict[str, dict[tuple[str, ...], dict[float, float]]] = defaultdict(dict)
        ident: dict[str, tuple[str, ...]] = {}
        for m in metrics:
            for query in self._host_groups(m.name, selector, t0, t1):
                a = t0
                while a <= t1:
                    b = min(t1, a + chunk - step)
                    data = self._get(
                        "/api/v1/query_range",
                        [
                            ("query", query),
                            ("start", f"{a:.3f}"),
                            ("end", f"{b:.3f}"),
                            ("step", f"{step:g}"),
                        ],
                    )
                    for res in data["result"]:
                        lab = res["metric"]
                        key = lab.get("UUID") or f"{lab.get('Hostname', '')}:{lab.get('gpu', '')}"
                        ident[key] = (
                            lab.get("gpu", "-1"),
                            lab.get("Hostname", ""),
                            lab.get("UUID", ""),
                            lab.get("modelName", ""),
                            lab.get("pci_bus_id", ""),
                        )
                        series = values[m.field].setdefault(key, {})
                        for ts, v in res["values"]:
                            series[float(ts)] = float(v) / m.scale
                    a = b + step
        keys = sorted(ident, key=lambda k: (ident[k][1], int(ident[k][0]), k))
        all_t = sorted({t for f in values.values() for s in f.values() for t in s})
        tpos = {t: i for i, t in enumerate(all_t)}
        data_vars = {}
        for m in metrics:
            if m.field not in values:
                continue
            arr = np.full((len(all_t), len(keys)), np.nan)
            for j, k in enumerate(keys):
                for t, v in values[m.field].get(k, {}).items():
                    arr[tpos[t], j] = v
            data_vars[m.field] = (
                ("time", "gpu"),
                arr,
                {
                    "units": FIELDS[m.field][0],
                    "long_name": FIELDS[m.field][1],
                    "provenance": f"prometheus {self.url} query_range {m.name} step {step:g} s",
                },
            )
        times = (np.array(all_t) * 1e9).round().astype("int64").view("datetime64[ns]")
        coords = {
            "time": ("time", times),
            "gpu": ("gpu", np.array(keys, dtype=str)),
            "index": ("gpu", np.array([int(ident[k][0]) for k in keys], np.int64)),
            "host": ("gpu", np.array([ident[k][1] for k in keys], dtype=str)),
            "uuid": ("gpu", np.array([ident[k][2] for k in keys], dtype=str)),
            "name": ("gpu", np.array([ident[k][3] for k in keys], dtype=str)),
            "pci_bus_id": ("gpu", np.array([ident[k][4] for k in keys], dtype=str)),
            "power_limit": ("gpu", np.full(len(keys), math.nan), {"units": "W"}),
            "location": ("gpu", np.array([""] * len(keys), dtype=str)),
        }
        return xr.Dataset(
            data_vars, coords=coords, attrs={"title": "GPU telemetry", "prometheus": self.url}
        )
