"""Process wall time of the main commands as users run them, cold (empty cache) and warm.

Run:  python benchmarks/bench_commands.py [--repeat N] [--only NAME ...]

Each command runs as its own process (``python -m twin.cli ...``), timed from start to exit, with
``TWIN_CACHE_DIR`` set to a fresh empty folder for the cold run and left filled for the warm runs
(``--repeat`` of them, the median shown). Also counts the modules ``twin --help`` loads. Prints a
table (Markdown) for docs/benchmarks.md; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> twin arguments.
COMMANDS = {
    "help": ["--help"],
    "simulate single-rack 0.1 h": ["simulate", "--facility", "single-rack", "--hours", "0.1"],
    "simulate superfactory 0.05 h": [
        "simulate",
        *("--facility", "superfactory", "--hours", "0.05", "--step", "1", "--json"),
    ],
}


def timed(args: list[str], cache: str) -> tuple[float, str]:
    """Process wall [s] of ``twin ARGS`` and its stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TWIN_CACHE_DIR=cache, JAX_PLATFORMS="cpu")
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "twin.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 2) or (out.returncode == 2 and args != ["--help"]):
        raise RuntimeError(f"twin {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return wall, out.stderr


def help_modules() -> int:
    code = "import sys\nfrom twin.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
    code += "print(len(sys.modules), file=sys.stderr)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stderr.split()[-1])


def measure(args: list[str], repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="twin-cache-") as cache:
        cold, err = timed(args, cache)
        warm = [timed(args, cache)[0] for _ in range(repeat)]
        size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    return {
        "cold": cold,
        "warm": statistics.median(warm),
        "cache_mb": size / 1e6,
        "announced": "compiling" in err,
    }


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {load:.1f} at start"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="warm runs per command (median)")
    ap.add_argument("--only", nargs="*", choices=sorted(COMMANDS), help="commands to time")
    a = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"twin --help loads {help_modules()} modules")
    print("\n| command | cold wall [s] | warm wall [s] | cache [MB] | cold run said 'compiling' |")
    print("|---|---|---|---|---|")
    for name in a.only or COMMANDS:
        r = measure(COMMANDS[name], a.repeat)
        print(
            f"| `twin {' '.join(COMMANDS[name])}` | {r['cold']:.1f} | {r['warm']:.1f} | "
            f"{r['cache_mb']:.1f} | {'yes' if r['announced'] else 'no'} |",
            flush=True,
        )
    print(json.dumps({"python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
