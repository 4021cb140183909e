"""``twin validate``: backtest the calibrated facility model on telemetry it was not fitted to.

Examples::

    twin calibrate --telemetry node.csv --facility h100-node-air --out params.nc
    twin validate --telemetry node.csv --facility h100-node-air --calibration params.nc --json

By default only readings after the calibration's training window are scored; ``--start`` and
``--end`` (ISO 8601) choose another window. Scores: per GPU RMSE and bias [K], pooled RMSE,
CV(RMSE) and NMBE [%] (ASHRAE Guideline 14), inside and outside the trained power envelope,
and the share of readings inside the 95 % prediction interval. See twin/validate.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from twin.cli.options import add_command, add_facility, add_telemetry, add_units, telemetry_units


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "validate", "score the calibrated facility model against telemetry", __doc__
    )
    add_telemetry(p)
    add_facility(p, default=None)
    p.add_argument(
        "--calibration", required=True, metavar="PARAMS_NC", help="file of `twin calibrate --out`"
    )
    p.add_argument("--start", default=None, help="score from this time (ISO 8601)")
    p.add_argument("--end", default=None, help="score up to this time (ISO 8601)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_units(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twin.units import SpecError
    from twin.validate import backtest

    if not args.telemetry:
        raise SpecError("--telemetry", None, "a telemetry source (or TWIN_TELEMETRY)")
    if not args.facility:
        raise SpecError("--facility", None, "the facility spec the calibration was fitted to")
    from twin.cli.options import print_ingest
    from twin.io.telemetry import open_telemetry

    ds = open_telemetry(args.telemetry, units=telemetry_units(args))
    ingest = print_ingest(ds, "twin validate")
    out = backtest(ds, args.facility, args.calibration, args.start, args.end)
    out["ingest"] = ingest
    if out["gaps_left_out"]:
        n = len(out["gaps_left_out"])
        print(
            f"twin validate: {n:,} stretches without readings left out of the grid", file=sys.stderr
        )
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'gpu':40}{'rmse K':>10}{'bias K':>10}{'readings':>10}")
    for g in out["gpus"]:
        print(f"{g['gpu']:40}{_f(g['rmse_k'])}{_f(g['bias_k'])}{g['readings']:>10}")
    for key in ("envelope", "extrapolated"):
        m = out[key]
        print(
            f"{key:14} rmse {_f(m['rmse_k'])} K  cv-rmse {_f(m['cv_rmse'])} %  "
            f"nmbe {_f(m['nmbe'])} %  95 % coverage {_f(m['coverage_95'])}  ({m['readings']})"
        )
    print(
        f"{'pooled':14} rmse {_f(out['rmse_k'])} K  cv-rmse {_f(out['cv_rmse'])} %  "
        f"nmbe {_f(out['nmbe'])} %  95 % coverage {_f(out['coverage_95'])}  ({out['readings']})"
    )
    return 0


def _f(x: float | None) -> str:
    return f"{'-':>10}" if x is None else f"{x:>10.3f}"
