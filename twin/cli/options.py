"""Options several commands share, written once: the facility and the telemetry source.

Each reads its ``TWIN_*`` environment default through :func:`twin.resources.env_default`
(flags win) and says that default in its help.
"""

from __future__ import annotations

import argparse
import sys

from twin.resources import env_default
from twin.units import SpecError


def add_facility(p: argparse.ArgumentParser, default: str | None = "superfactory") -> None:
    """``--facility``: a shipped spec name or a TOML path (``TWIN_FACILITY``)."""
    shown = default if default else "required"
    p.add_argument(
        "--facility",
        default=env_default("facility", default),
        help=f"facility TOML path or shipped name [TWIN_FACILITY; {shown}]",
    )


def add_telemetry(p: argparse.ArgumentParser, default: str | None = None, none: str = "") -> None:
    """``--telemetry SOURCE``: a store, recorded file or Prometheus URL (``TWIN_TELEMETRY``)."""
    shown = none or ("required" if default is None else repr(default))
    p.add_argument(
        "--telemetry",
        default=env_default("telemetry", default),
        metavar="SOURCE",
        help="telemetry store of `twin sensord`, recorded nvidia-smi/nvprof CSV, Prometheus text "
        f"file or http(s):// Prometheus URL [TWIN_TELEMETRY; {shown}]",
    )


def add_units(p: argparse.ArgumentParser) -> None:
    """``--power-unit``/``--temperature-unit``: units of recorded-file columns whose header
    carries none (a unit in the header or on a value always wins; a conflict is an error)."""
    p.add_argument(
        "--power-unit",
        default=env_default("power_unit", None),
        metavar="UNIT",
        help="unit of power columns without one in their header, e.g. W, kW, mW [TWIN_POWER_UNIT]",
    )
    p.add_argument(
        "--temperature-unit",
        default=env_default("temperature_unit", None),
        metavar="UNIT",
        help="unit of temperature columns without one in their header, e.g. C, F, K "
        "[TWIN_TEMPERATURE_UNIT; nvidia-smi's temperature.gpu: C]",
    )


def telemetry_units(args: argparse.Namespace) -> dict[str, str]:
    """The unit overrides ``args`` give (see :func:`add_units`)."""
    out = {
        "power": getattr(args, "power_unit", None),
        "temperature": getattr(args, "temperature_unit", None),
    }
    return {k: v for k, v in out.items() if v}


def print_ingest(ds, command: str) -> dict:
    """Say on stderr what reading the telemetry cost (rows, samples, quarantined by reason);
    returns the report for the command's JSON."""
    from twin.io.telemetry import format_ingest, ingest_report

    report = ingest_report(ds)
    if report:
        print(f"{command}: telemetry: {format_ingest(report)}", file=sys.stderr)
    return report


def add_calibration(p: argparse.ArgumentParser) -> None:
    """``--calibration params.nc`` and ``--gpu-map map.csv`` (``TWIN_CALIBRATION``)."""
    p.add_argument(
        "--calibration",
        default=env_default("calibration", None),
        metavar="PARAMS_NC",
        help="run on the GPUs calibrated by `twin calibrate --out`, placed by their location "
        "labels; other GPUs of that model draw from the calibrated population "
        "[TWIN_CALIBRATION; default: the spec's GPUs]",
    )
    p.add_argument(
        "--gpu-map",
        default=None,
        metavar="CSV",
        help="CSV with columns gpu,location (gpu: UUID or telemetry id) that places the "
        "calibrated GPUs, overriding their recorded labels",
    )


def calibration_arg(args: argparse.Namespace):
    """The :class:`twin.model.calibrated.Calibration` that ``args`` name, or None."""
    if not getattr(args, "calibration", None):
        if getattr(args, "gpu_map", None):
            raise SpecError("--gpu-map", args.gpu_map, "given together with --calibration")
        return None
    from twin.model.calibrated import load_calibration

    return load_calibration(args.calibration, args.gpu_map)


def say_calibration(command: str, run) -> None:
    """One line on stderr: how many GPUs of ``run`` are calibrated, drawn or the spec's."""
    c = run.calibration
    if c is None:
        return
    print(
        f"twin {command}: calibration {c['file']}: {c['calibrated']:,} GPUs calibrated, "
        f"{c['fleet_prior']:,} from the fleet prior, {c['spec_default']:,} spec defaults",
        file=sys.stderr,
    )


def add_command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``description`` with its line breaks kept."""
    return sub.add_parser(
        name,
        help=summary,
        description=description or summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def site_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """Parse repeated ``SITE=PATH`` options (``--weather``, ``--carbon``) into a mapping."""
    out: dict[str, str] = {}
    for v in values or []:
        key, sep, path = v.partition("=")
        if not sep or not key or not path:
            raise SpecError(flag, v, "SITE=PATH, e.g. atlanta=USA_GA_Atlanta.epw")
        out[key] = path
    return out
