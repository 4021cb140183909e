"""Dashboard benchmark: how long each page of the 300,000-GPU superfactory takes once its data
are loaded (target <= 3 s), and how long loading takes. Prints a table (not a timed test).

The app runs in-process under ``streamlit.testing.v1.AppTest`` (the script run that a browser
session triggers, minus the websocket); each page is run once to load its data, then
``--repeat`` times more from the Streamlit caches. ``python benchmarks/bench_dashboard.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Page, widget changes made before the timed runs (key -> value), what is drawn.
PAGES = (
    ("Fleet", {}, "2 sites x 8 tiles, totals table, 5 trend charts"),
    ("Hall", {}, "per-floor table, 2 floor plans of 350 racks, 72-GPU rack, CDU loop"),
    ("Hall", {"hall_metric": "Coolant return"}, "same, recoloured by coolant return"),
    ("Hall", {"hall_building": 3}, "same, building 3"),
    ("GPU", {}, "8 calibrated GPUs, forecast band, parameters"),
    ("Live", {}, "simulated fleet, 8 GPUs"),
)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--facility", default="superfactory")
    ap.add_argument(
        "--hours", type=float, default=1.0, help="simulated hours behind the views (sidebar: 1)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from streamlit.testing.v1 import AppTest

    os.environ["TWIN_FACILITY"] = args.facility
    os.environ.pop("TWIN_TELEMETRY", None)
    at = AppTest.from_file(str(ROOT / "apps" / "dashboard.py"), default_timeout=3600)
    t = time.perf_counter()
    at.run()
    if at.number_input(key="hours").value != args.hours:
        t = time.perf_counter()
        at.number_input(key="hours").set_value(args.hours).run()
    load = time.perf_counter() - t
    if at.exception:
        raise SystemExit(at.exception[0].message)
    gpus = at.caption[0].value.split(" GPUs")[0]
    rows = [("Fleet, first run: load (simulate, final state, rack table)", load, "-", "load")]
    for page, changes, what in PAGES:
        at.sidebar.radio(key="page").set_value(page)
        for key, value in changes.items():
            at.get_by_key(key).set_value(value)  # widgets of the page just run
        t = time.perf_counter()
        at.run()
        first = time.perf_counter() - t
        if at.exception:
            raise SystemExit(f"{page}: {at.exception[0].message}")
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
        label = page + (
            f" ({', '.join(f'{k}={v}' for k, v in changes.items())})" if changes else ""
        )
        rows.append((label, first, statistics.median(times), what))
    print(
        f"facility {args.facility} ({gpus} GPUs), {args.hours} h simulated; {cpu_name()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"| view | first run [s] | cached run, median of {args.repeat} [s] | <= 3 s | drawn |")
    print("|---|---|---|---|---|")
    for label, first, cached, what in rows:
        ok = "-" if cached == "-" else ("yes" if cached <= 3.0 else "**no**")
        cached_s = cached if cached == "-" else f"{cached:.2f}"
        print(f"| {label} | {first:.2f} | {cached_s} | {ok} | {what} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
