"""``twin calibrate`` and ``twin watch``: fit the twin to telemetry; estimate and alarm live.

SOURCE is a telemetry store (``twin sensord --store``), a recorded nvidia-smi/nvprof CSV or
Prometheus text file, or an ``http(s)://`` Prometheus URL.  Options also read ``TWIN_<OPTION>``
(e.g. ``TWIN_TELEMETRY``, ``TWIN_FACILITY``); flags win.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from twin.cli.options import (
    add_command,
    add_facility,
    add_telemetry,
    add_units,
    print_ingest,
    telemetry_units,
)
from twin.resources import env_default
from twin.units import SpecError

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from twin.estimate import FilterConfig, FilterModel, FilterState
    from twin.io.telemetry import Grid


def _telemetry_command(subparsers, name: str, summary: str, description: str):
    """A command that reads ``--telemetry`` of a ``--facility``."""
    p = add_command(subparsers, name, summary, description)
    add_telemetry(p)
    add_facility(p, default=None)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``calibrate`` and ``watch`` to the ``twin`` command line."""
    c = _telemetry_command(
        subparsers,
        "calibrate",
        "fit per-GPU thermal parameters to telemetry; predict held-out temperatures",
        "Maximum-likelihood calibration (see docs/calibration.md).",
    )
    c.add_argument(
        "--train-fraction",
        type=float,
        default=env_default("train_fraction", "0.6"),
        help="share of the record (from its start) to fit on; the rest is held out [0.6]",
    )
    c.add_argument("--start", default=None, help="first time to read (ISO-8601)")
    c.add_argument("--end", default=None, help="last time to read (ISO-8601)")
    c.add_argument("--out", default=env_default("calibration_out"), help="write parameters (.nc)")
    c.add_argument("--plot", default=None, help="PNG of measured vs predicted, best/worst GPU")
    c.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_units(c)
    c.set_defaults(func=cmd_calibrate)

    w = _telemetry_command(
        subparsers,
        "watch",
        "track GPU temperatures and resistance drift live; print and export anomalies",
        "Extended Kalman filter over the calibrated twin (see docs/calibration.md).",
    )
    w.add_argument(
        "--params", default=env_default("params"), help="calibration from `twin calibrate`"
    )
    w.add_argument(
        "--calibration-seconds",
        type=float,
        default=env_default("calibration_seconds", "1800"),
        help="without --params: calibrate on this much of the start of the record",
    )
    w.add_argument(
        "--batch-seconds",
        type=float,
        default=env_default("batch_seconds", "60"),
        help="seconds of telemetry assimilated per filter update [TWIN_BATCH_SECONDS; 60]",
    )
    w.add_argument("--follow", action="store_true", help="keep polling the source for new data")
    w.add_argument(
        "--interval",
        type=float,
        default=env_default("watch_interval", "10"),
        help="seconds between polls with --follow [TWIN_WATCH_INTERVAL; 10]",
    )
    w.add_argument("--max-polls", type=int, default=None, help="stop after this many polls")
    w.add_argument("--export", default=env_default("anomalies"), help="append anomalies (.jsonl)")
    w.add_argument("--forecast", action="store_true", help="print the 60 s-ahead forecast")
    w.add_argument("--json", action="store_true", help="JSON lines on stdout")
    w.set_defaults(func=cmd_watch)


def _need(args: argparse.Namespace, name: str) -> str:
    v = getattr(args, name)
    if not v:
        raise SpecError(f"--{name}", v, f"a value (or TWIN_{name.upper()})")
    return str(v)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from twin.calibration import (
        CalibrationConfig,
        calibrate,
        plot_fit,
        summary_json,
    )
    from twin.io.telemetry import format_cuts, open_telemetry
    from twin.spec import load_spec

    telemetry = _need(args, "telemetry")
    facility = _need(args, "facility")
    if not (0.05 <= args.train_fraction <= 1.0):
        raise SpecError("--train-fraction", args.train_fraction, "a fraction between 0.05 and 1")
    t0 = time.perf_counter()
    spec = load_spec(facility)
    ds = open_telemetry(telemetry, start=args.start, end=args.end, units=telemetry_units(args))
    ingest = print_ingest(ds, "twin calibrate")
    result = calibrate(ds, spec, CalibrationConfig(train_fraction=args.train_fraction))
    result.summary["wall_seconds"] = round(time.perf_counter() - t0, 3)
    result.summary["ingest"] = ingest
    if cut := format_cuts(result.grid):
        print(f"twin calibrate: {cut}", file=sys.stderr)
    _warn_spec_check(result.summary)
    if args.out:
        result.write(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.plot:
        plot_fit(result, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    s = result.summary
    if args.json:
        sys.stdout.write(summary_json(result) + "\n")
    else:
        print(
            f"{s['n_gpus']} GPUs, held-out RMSE {s['holdout_rmse_k']} K, CV(RMSE) "
            f"{s['cv_rmse']} %, NMBE {s['nmbe']} %, {s['wall_seconds']} s"
        )
        cov = s["holdout_coverage_95"]
        if cov is not None:
            print(
                f"  the stated 95 % prediction intervals hold {_pct(cov)} of the held-out readings"
                + (" (wider than the errors need)" if cov > 0.99 else "")
                + (" (too narrow)" if cov < 0.9 else "")
            )
        if s["extrapolation"]:
            print(
                f"  inside the trained power envelope: RMSE {s['holdout_rmse_envelope_k']} K, "
                f"CV(RMSE) {s['cv_rmse_envelope']} %, NMBE {s['nmbe_envelope']} %; outside: "
                f"RMSE {s['holdout_rmse_extrapolated_k']} K"
            )
            print(f"  EXTRAPOLATION: {s['extrapolation']}")
        for g in s["gpus"]:
            flag = "  ANOMALY: " + g["anomaly_reason"] if g["anomaly"] else ""
            why = f"  ({g['unidentifiable']})" if g["unidentifiable"] else ""
            print(
                f"  {g['gpu']:>36s} {g['model']} R={g['resistance_k_per_w']} K/W "
                f"C={g['capacitance_j_per_k']} J/K{_held_out(g)}{flag}{why}"
            )
    return 0


def _warn_spec_check(summary: dict) -> None:
    """Say on stderr when the telemetry contradict the named facility spec (a warning: the
    calibration still fits its own parameters; ``spec_check`` in the JSON has the figures)."""
    chk = summary.get("spec_check") or {}
    if chk.get("contradiction"):
        print(f"WARNING: {chk['message']}", file=sys.stderr)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _held_out(g: dict) -> str:
    if g["holdout_rmse_k"] is None:
        return " (no held-out readings)"
    sd = g["holdout_prediction_sd_k"]
    stated = "" if sd is None else f", stated 1 s.d. {sd} K"
    cover = _pct(g["holdout_coverage_95"])
    return f" held-out RMSE {g['holdout_rmse_k']} K{stated}, 95 % coverage {cover}"


def _emit(records: list[dict], args: argparse.Namespace, seen: set) -> None:
    new = []
    for r in records:
        key = (r["kind"], r.get("gpu") or r.get("loop"))
        if key not in seen:
            seen.add(key)
            new.append(r)
    for r in new:
        if args.json:
            sys.stdout.write(json.dumps({"event": "anomaly", **r}) + "\n")
        else:
            what = r.get("gpu") or r.get("loop")
            vals = r.get("reason") or ", ".join(
                f"{k}={v:.4g}" for k, v in r.items() if isinstance(v, float)
            )
            print(f"ANOMALY {r['kind']} {what} since {r['since']}: {vals}")
        if args.export:
            with Path(args.export).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(r) + "\n")
    sys.stdout.flush()


def cmd_watch(args: argparse.Namespace) -> int:
    import numpy as np

    from twin import estimate as E
    from twin.calibration import Priors, load_params
    from twin.io.telemetry import format_cuts, open_telemetry, to_grid
    from twin.spec import load_spec

    telemetry = _need(args, "telemetry")
    spec = load_spec(_need(args, "facility"))
    ds = open_telemetry(telemetry)
    print_ingest(ds, "twin watch")
    grid = to_grid(ds)
    if cut := format_cuts(grid):
        print(f"twin watch: {cut}", file=sys.stderr)
    if args.params:
        params, start = load_params(args.params), 0
    else:
        params, start = _calibrate_start(args, grid, spec)
    model = E.model_from_calibration(params, grid.gpu)
    loops = sorted(set(grid.host))
    cfg = E.FilterConfig()
    r_peer = E.anomaly_resistance(params, Priors.from_spec(spec).resistance)
    seen: set = set()
    _emit(E.calibration_anomalies(params, grid.gpu), args, seen)
    _warn_unidentified(model, cfg)
    state = None
    t_end_ns = grid.end_ns
    polls = 0
    batch = max(int(args.batch_seconds / grid.dt), 1)
    if not args.follow and start >= grid.n_steps:
        print("nothing left to track after the calibration window", file=sys.stderr)
    while True:
        rest = grid.window(start, grid.n_steps)
        P, T = E.grid_arrays(rest)
        if P.shape[0]:
            if state is None:
                state = E.init_state(model, P[0], T[0])
                clock = rest.time_at
            for a in range(0, P.shape[0], batch):
                state, _ = E.assimilate(model, state, P[a : a + batch], T[a : a + batch], grid.dt, cfg, record_every=max(1, min(batch, P.shape[0] - a)))  # fmt: skip
                _emit(E.anomalies(model, state, grid.gpu, loops, cfg, clock=clock), args, seen)
            # GPUs hot against their peers at equal power, in the latest readings
            recent = _recent_readings(telemetry, rest, args.follow, cfg.peer_history_s)
            _emit(E.peer_anomalies(recent, r_peer), args, seen)
            if args.forecast:
                _print_forecast(args, model, state, P[-1], grid)
        polls += 1
        if not args.follow or (args.max_polls is not None and polls >= args.max_polls):
            break
        time.sleep(args.interval)
        start_ts = np.datetime64(int(t_end_ns), "ns")
        grid = to_grid(open_telemetry(telemetry, start=str(start_ts)))
        missing = set(grid.gpu) - set(model_gpus := [str(g) for g in params["gpu"].values])
        if missing:
            raise SpecError("--telemetry gpu", sorted(missing)[0], f"one of {model_gpus[:3]}...")
        grid = grid.select(np.array([grid.gpu.index(g) for g in model_gpus if g in grid.gpu]))
        if grid.gpu != [str(g) for g in model_gpus]:
            model = E.model_from_calibration(params, grid.gpu)
            state = None
        t_end_ns = grid.end_ns
        start = 1
    if state is not None and not args.json:
        r = E.resistance_estimate(model, state)
        ok = np.ones(r.shape, bool) if model.r_ok is None else np.asarray(model.r_ok)
        shown = [round(float(x), 4) if k else None for x, k in zip(r, ok, strict=True)]
        print(
            f"tracked {len(grid.gpu)} GPUs; resistance now {shown} K/W"
            + (" (None: not identified by the calibration)" if not ok.all() else "")
        )
    return 0


def _calibrate_start(args: argparse.Namespace, grid: Grid, spec: object) -> tuple[xr.Dataset, int]:
    """Without ``--params``: calibrate on the start of the record; (parameters, first step)."""
    from twin.calibration import CalibrationConfig, calibrate

    min_cal = max(60, CalibrationConfig().min_train_obs)
    n_cal = int(min(grid.n_steps, max(args.calibration_seconds / grid.dt, min_cal)))
    if not args.follow and n_cal >= grid.n_steps:
        # a recorded file no longer than the calibration window would leave nothing to
        # track: calibrate on its first 60 % (at least min_cal steps) and track the rest
        n_cal = min(grid.n_steps, max(int(0.6 * grid.n_steps), min_cal))
        print(
            f"the record ({grid.n_steps * grid.dt:.0f} s) is not longer than "
            f"--calibration-seconds {args.calibration_seconds:g}: calibrating on its first "
            f"{n_cal * grid.dt:.0f} s",
            file=sys.stderr,
        )
    res = calibrate(grid.window(0, n_cal), spec, CalibrationConfig(train_fraction=1.0))
    print(f"calibrated on the first {n_cal * grid.dt:.0f} s", file=sys.stderr)
    _warn_spec_check(res.summary)
    return res.params, n_cal


def _warn_unidentified(model: FilterModel, cfg: FilterConfig) -> None:
    """Say which GPUs' resistance the filter must learn before their drift alarms arm."""
    import numpy as np

    if model.r_ok is None or np.asarray(model.r_ok).all():
        return
    r_ok = np.asarray(model.r_ok)
    print(
        f"the calibration did not identify the resistance of {int((~r_ok).sum())} of "
        f"{r_ok.size} GPUs (see twin calibrate): the filter learns it over their first "
        f"{cfg.learn_s / 60:g} min inside the calibrated power range, and their drift "
        "alarms arm after that (the peer comparison, from the readings, does not wait)",
        file=sys.stderr,
    )


def _recent_readings(telemetry: str, rest: Grid, follow: bool, seconds: float) -> Grid:
    """The readings the live peer comparison looks at: the tracked part of a recorded source,
    or the last ``seconds`` of a followed one (re-read: each poll brings only new samples)."""
    import numpy as np

    from twin.io.telemetry import open_telemetry, to_grid

    if not follow:
        return rest
    end_ns = rest.end_ns
    start = np.datetime64(int(end_ns - seconds * 1e9), "ns")
    recent = to_grid(open_telemetry(telemetry, start=str(start)))
    return recent.select(np.array([recent.gpu.index(g) for g in rest.gpu if g in recent.gpu]))


def _print_forecast(
    args: argparse.Namespace,
    model: FilterModel,
    state: FilterState,
    last_power: np.ndarray,
    grid: Grid,
) -> None:
    """The 60 s-ahead forecast of every GPU: temperature and s.d. [degC, K]."""
    from twin import estimate as E

    temp, sd = E.forecast(model, state, last_power=last_power, horizon_s=60.0, dt=grid.dt)
    out = {
        "event": "forecast_60s",
        "gpus": {
            g: [round(float(t), 2), round(float(s), 2)]
            for g, t, s in zip(grid.gpu, temp, sd, strict=True)
        },  # fmt: skip
    }
    print(json.dumps(out) if args.json else out)
