"""``twin sensord`` and ``twin telemetry``: the sensor daemon and its store tools.

Every ``sensord`` option also comes from a ``TWIN_*`` environment variable (flags win); see
:class:`sensors.daemon.DaemonConfig` and docs/sensors.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from twin.cli.options import add_command

#: :class:`sensors.daemon.DaemonConfig`'s defaults shown in ``--help``, written out here so that
#: building the parser does not import the daemon (its store pulls in pandas and xarray);
#: tests/twin/test_cli_startup.py checks them against the dataclass.
HELP_DEFAULTS = {"source": "sim", "store": "telemetry.db"}


def _env(field: str) -> str:
    """``DaemonConfig.env_name``: the ``TWIN_*`` variable of a daemon option."""
    return "TWIN_" + field.upper()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sensord`` and ``telemetry`` to the ``twin`` command line."""
    d = HELP_DEFAULTS
    p = add_command(
        subparsers,
        "sensord",
        "poll GPU sensors into a durable store and serve Prometheus metrics",
        "Poll nvml|sim|replay:PATH, store every sample, serve /metrics. Each option "
        "also reads TWIN_<OPTION> from the environment (e.g. TWIN_STORE, TWIN_METRICS_ADDR).",
    )
    env = _env
    p.add_argument("--source", help=f"nvml, sim or replay:PATH [{env('source')}; {d['source']}]")
    p.add_argument("--store", help=f"store file [{env('store')}; {d['store']}]")
    p.add_argument("--interval", type=float, help=f"poll interval, s [{env('interval')}; 1]")
    p.add_argument(
        "--flush-interval",
        type=float,
        help=f"commit interval, s: most data a crash can lose [{env('flush_interval')}; 1]",
    )
    p.add_argument(
        "--metrics-addr",
        help=f"HOST:PORT for /metrics, e.g. 127.0.0.1:9400 (binds 127.0.0.1 unless told "
        f"otherwise) [{env('metrics_addr')}; off]",
    )
    p.add_argument("--speed", help=f"replay pace: 1, 10, ... or max [{env('speed')}; 1]")
    p.add_argument("--sim-gpus", type=int, help=f"simulated GPUs [{env('sim_gpus')}; 8]")
    p.add_argument("--seed", type=int, help=f"simulation seed [{env('seed')}; 0]")
    p.add_argument("--hostname", help=f"Hostname label [{env('hostname')}; this host]")
    p.add_argument("--location", help=f"free-form placement label [{env('location')}]")
    p.add_argument(
        "--retention-days",
        type=float,
        help=f"delete older data, 0 = keep [{env('retention_days')}]",
    )
    p.add_argument(
        "--max-buffer-samples",
        type=int,
        help=f"memory buffer while the store is not writable [{env('max_buffer_samples')}]",
    )
    p.add_argument(
        "--power-unit",
        help=f"replay: unit of power columns whose header has none (W, kW, mW) "
        f"[{env('power_unit')}]",
    )
    p.add_argument(
        "--temperature-unit",
        help=f"replay: unit of temperature columns whose header has none (C, F, K) "
        f"[{env('temperature_unit')}; nvidia-smi's temperature.gpu: C]",
    )
    p.set_defaults(func=cmd_sensord)

    t = subparsers.add_parser("telemetry", help="inspect and export a telemetry store")
    tsub = t.add_subparsers(dest="telemetry_command", metavar="ACTION")
    i = tsub.add_parser(
        "info",
        help="summary of a store, from its index (cheap; blocks not verified unless --verify)",
    )
    i.add_argument("--store", required=True)
    i.add_argument("--json", action="store_true", help="one JSON object on stdout")
    i.add_argument(
        "--verify",
        action="store_true",
        help="also verify every block's checksum (reads the whole store, as `twin telemetry "
        "check`): damaged blocks and the samples in them; exit 1 if any",
    )
    i.set_defaults(func=cmd_info)
    e = tsub.add_parser("export", help="write a store to netCDF (.nc) or CSV (.csv)")
    e.add_argument("--store", required=True)
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_export)
    k = tsub.add_parser(
        "check",
        help="verify every block's checksum; exit 1 naming each damaged block",
    )
    k.add_argument("--store", required=True)
    k.add_argument("--json", action="store_true", help="one JSON object on stdout")
    k.set_defaults(func=cmd_check)
    c = tsub.add_parser("compact", help="apply retention and merge small chunks")
    c.add_argument("--store", required=True)
    c.add_argument("--retention-days", type=float, default=None)
    c.set_defaults(func=cmd_compact)
    t.set_defaults(func=lambda args: (t.print_help(sys.stderr), 2)[1])


def cmd_sensord(args: argparse.Namespace) -> int:
    from sensors.base import (
        FIELDS,  # noqa: F401 - fail early on a broken install
        printable,
    )
    from sensors.daemon import Daemon, DaemonConfig, setup_json_logging
    from sensors.nvml import NvmlUnavailable
    from sensors.store import StoreError

    setup_json_logging()
    keys = [
        "source",
        "store",
        "interval",
        "flush_interval",
        "metrics_addr",
        "speed",
        "sim_gpus",
        "seed",
        "hostname",
        "location",
        "retention_days",
        "max_buffer_samples",
        "power_unit",
        "temperature_unit",
    ]
    cfg = DaemonConfig.from_env(**{k: getattr(args, k, None) for k in keys})
    # labels that are not UTF-8 (--hostname $'\xff') are kept as their escaped text
    cfg.hostname, cfg.location = printable(cfg.hostname), printable(cfg.location)
    try:
        daemon = Daemon(cfg)
    except (NvmlUnavailable, StoreError, OSError) as exc:
        print(f"twin sensord: error: {exc}", file=sys.stderr)
        return 2
    daemon.install_signals()
    return daemon.run()


def cmd_info(args: argparse.Namespace) -> int:
    import contextlib

    from sensors.store import Store, StoreError, describe_corrupt

    try:
        with contextlib.closing(Store(args.store, readonly=True)) as st:
            info = st.info()
            bad = st.check()["bad"] if args.verify else []
    except StoreError as exc:
        print(f"twin telemetry info: error: {exc}", file=sys.stderr)
        return 2
    info["verified"] = bool(args.verify)
    if args.verify:
        chunks = {b["chunk"]: b.get("samples") or 0 for b in bad}
        info["damaged_blocks"] = len(bad)
        info["samples_in_damaged_blocks"] = int(sum(chunks.values()))
    if args.json:
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
    else:
        for k, v in info.items():
            print(f"{k:12s} {v}")
        if not args.verify:
            print(
                "(samples counted from the store's index, blocks not verified: "
                "--verify or `twin telemetry check` reads and checks every block)"
            )
    for b in bad:
        print(describe_corrupt(Path(args.store), b), file=sys.stderr)
    return 1 if bad else 0


def cmd_export(args: argparse.Namespace) -> int:
    from sensors.store import StoreError, export

    try:
        out, skipped = export(args.store, args.out)
    except StoreError as exc:
        print(f"twin telemetry export: error: {exc}", file=sys.stderr)
        return 2
    if skipped:  # each was also warned about by name
        print(
            f"wrote {out} WITHOUT {len(skipped)} corrupt block(s) (see the warnings above and "
            "`twin telemetry check`); everything else is in it",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``twin telemetry check``: 0 when every block verifies, 1 naming each that does not."""
    import contextlib

    from sensors.store import Store, StoreError, describe_corrupt

    try:
        with contextlib.closing(Store(args.store, readonly=True)) as st:
            res = st.check()
    except StoreError as exc:
        print(f"twin telemetry check: error: {exc}", file=sys.stderr)
        return 2
    ok = not res["bad"] and res["sqlite"] == "ok"
    if args.json:
        json.dump({**res, "ok": ok}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(
            f"{args.store}: {res['chunks']} chunks, {res['blocks']} blocks "
            f"({res['unchecksummed']} written before checksums, decoded instead); "
            f"SQLite quick_check: {res['sqlite']}"
        )
    for b in res["bad"]:
        print(describe_corrupt(Path(args.store), b), file=sys.stderr)
    if not ok:
        print(f"twin telemetry check: {len(res['bad'])} damaged block(s)", file=sys.stderr)
    return 0 if ok else 1


def cmd_compact(args: argparse.Namespace) -> int:
    from sensors.store import Store, StoreError

    if not Path(args.store).is_file():  # opening for writing would create an empty store
        print(f"twin telemetry compact: error: no store at {args.store}", file=sys.stderr)
        return 2
    retention_s = None if args.retention_days is None else args.retention_days * 86400.0
    try:
        with Store(args.store) as st:
            res = st.compact(retention_s)
    except StoreError as exc:
        print(f"twin telemetry compact: error: {exc}", file=sys.stderr)
        return 2
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    return 0
