"""The ``twin`` command line: simulate, sensord, telemetry, ... .

Progress and logs go to stderr; ``--json`` output goes to stdout as one JSON object.
Each subcommand lives in its own module and registers itself here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from twin import jaxcache
from twin.units import InputError

log = logging.getLogger("twin")

#: Modules that each define ``register(subparsers)``; their parsers set ``func``.
SUBCOMMAND_MODULES = (
    "twin.cli.simulate",
    "twin.cli.sensors",
    "twin.cli.optimize",
    "twin.cli.dashboard",
    "twin.cli.calibrate",
    "twin.cli.validate",
    "twin.cli.demo",
)

#: Commands that compile the facility model (the others never import JAX for themselves).
COMPILING = frozenset({"simulate", "optimize", "calibrate", "validate", "demo"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twin", description="Superfactory Twin: thermal and energy twin of AI superfactories"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:  # every one ships: a missing module is a packaging error
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("jax").setLevel(logging.WARNING)
    jaxcache.configure()  # compiled programs kept per user (TWIN_CACHE_DIR; off: TWIN_CACHE_DIR=off)
    if args.command in COMPILING:
        jaxcache.announce_compiles()  # "compiling the facility step ..." on stderr
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"twin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"twin {args.command}: error: {exc}", file=sys.stderr)
        return 2
