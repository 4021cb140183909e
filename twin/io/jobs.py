"""Jobs for placement: the job format, a loader for the Alibaba GPU trace, and a generator.

Job format
----------
One row (CSV) or one object (JSON) per job; times in seconds from the start of the replay:

============  ==========================================================================
field         meaning
============  ==========================================================================
id            unique job name (string)
arrival       submission time [s] (>= 0)
duration      run time once started [s] (> 0)
gpus          GPUs requested (integer >= 1)
workload      ``training`` (synchronous), ``inference`` or ``batch`` (flexible)
power_low     optional: low-phase power [fraction of TDP] (class default otherwise)
power_high    optional: high-phase power [fraction of TDP]
period        optional: power-cycle period [s] of synchronous training
deferral      optional: how long the start may be delayed [s] (flexible work; default
              :data:`DEFAULT_BATCH_DEFERRAL_S` for ``batch``, 0 otherwise)
============  ==========================================================================

JSON is either a list of such objects or ``{"jobs": [...]}``.  Locality rules (enforced by
:mod:`twin.placement`): a job of at most one rack of GPUs (72 on an NVL72) stays in one rack
(NVLink domain); larger jobs stay in one site, and ``training`` jobs larger than half a rack take
whole racks.

The Alibaba ``openb`` pod list (``cluster-trace-gpu-v2023``, ATC'23 "Beware of Fragmentation") is
recognised by its header (``num_gpu``, ``gpu_milli``, ``creation_time``) and mapped by
:func:`load_alibaba_trace`; without a job file :func:`generate_jobs` draws jobs from the trace's
statistics, kept as cited figures in ``data/jobs/alibaba_openb.toml``.  See ``docs/placement.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twin.resources import data_dir
from twin.spec import FacilitySpec
from twin.units import SpecError

JOBS_DIR = data_dir("jobs")
COLUMNS = ("id", "arrival", "duration", "gpus", "workload")
OPTIONAL = ("power_low", "power_high", "period", "deferral")
ALIBABA_HEADER = {"name", "num_gpu", "gpu_milli", "creation_time", "deletion_time", "qos"}
#: Most GPUs one job may ask for (a bound, so that ``gpus=1e400`` is an error, not an overflow).
MAX_JOB_GPUS = 10_000_000
#: Default deferral window of flexible (batch) work [s].
DEFAULT_BATCH_DEFERRAL_S = 4 * 3600.0


@dataclass(frozen=True)
class WorkloadClass:
    """Power profile of a workload class, as fractions of GPU TDP.

    Training: synchronous compute/communication square wave, 0.45 <-> 1.0 TDP every 1-2 s
    (refs 6 arXiv:2508.14318 and case 11; mean 0.725 TDP, cf. 76 % measured, arXiv:2506.14551).
    Inference: decode-dominated, 0.2-0.45 TDP (refs 6 and 7), with a daily cycle.
    Batch (offline inference, fine-tuning, evaluation): steady near the measured training mean,
    0.76 TDP (refs 6), flexible within its deferral window.
    """

    power_low: tuple[float, float]  # range the per-job level is drawn from
    power_high: tuple[float, float]
    period: tuple[float, float]  # [s]
    diurnal_amplitude: float
    flexible: bool


WORKLOAD_CLASSES: dict[str, WorkloadClass] = {
    "training": WorkloadClass((0.45, 0.45), (1.0, 1.0), (1.0, 2.0), 0.0, False),
    "inference": WorkloadClass((0.2, 0.45), (0.2, 0.45), (1.0, 1.0), 0.25, False),
    "batch": WorkloadClass((0.76, 0.76), (0.76, 0.76), (1.0, 1.0), 0.0, True),
}


@dataclass
class JobSet:
    """A validated job table (columns of the job format, all filled) and its provenance."""

    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def gpu_seconds(self) -> float:
        return float((self.table.gpus * self.table.duration).sum())


def trace_statistics(path: str | Path | None = None) -> dict:
    """The cited statistics of the openb trace (``data/jobs/alibaba_openb.toml``)."""
    path = Path(path) if path else JOBS_DIR / "alibaba_openb.toml"
    return tomllib.loads(path.read_text())


# ----------------------------------------------------------------------------- validation
def _fill_profiles(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    df = df.copy()
    for col in OPTIONAL:
        if col not in df:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for name, cls in WORKLOAD_CLASSES.items():
        m = (df.workload == name).to_numpy()
        n = int(m.sum())
        if not n:
            continue
        level = rng.uniform(*cls.power_low, n)
        hi = level if cls.power_low == cls.power_high else rng.uniform(*cls.power_high, n)
        for col, val in (
            ("power_low", level),
            ("power_high", hi),
            ("period", rng.uniform(*cls.period, n)),
            ("deferral", np.full(n, DEFAULT_BATCH_DEFERRAL_S if cls.flexible else 0.0)),
        ):
            cur = df.loc[m, col].to_numpy()
            df.loc[m, col] = np.where(np.isnan(cur), val, cur)
    return df


def _plain(value: object) -> object:
    """A cell as the message shows it: NumPy scalars as plain Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def _fail(source: str, df: pd.DataFrame, bad: pd.Series, col: str, expected: str, value=None):
    """Raise :class:`SpecError` for the first row marked in ``bad`` (row, id, field, value)."""
    i = int(np.flatnonzero(bad.to_numpy())[0])
    raise SpecError(
        f"{source}: row {i + 1} ({df.id[i]}) field {col}",
        _plain(df[col][i] if value is None else value[i]),
        expected,
    )


def _check_columns(df: pd.DataFrame, source: str) -> None:
    """The job columns must all be there, and no other: an unknown column is a typo or a file
    of another kind, never ignored."""
    allowed = f"the job columns {', '.join(COLUMNS)} (optional: {', '.join(OPTIONAL)})"
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SpecError(f"{source}: column {missing[0]}", "<missing>", allowed)
    unknown = [str(c) for c in df.columns if c not in COLUMNS + OPTIONAL]
    if unknown:
        raise SpecError(f"{source}: header", unknown[0], f"only {allowed}")


def _numbers(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """arrival, duration and gpus as finite numbers in range; the optional columns numeric or
    empty (empty: the class default)."""
    for col, lo, strict in (("arrival", 0.0, False), ("duration", 0.0, True)):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() | ~np.isfinite(vals) | ((vals <= lo) if strict else (vals < lo))
        if bad.any():
            _fail(source, df, bad, col, f"a number of seconds {'>' if strict else '>='} {lo:g}")
        df[col] = vals.astype(float)
    g = pd.to_numeric(df["gpus"], errors="coerce")
    bad = g.isna() | ~np.isfinite(g) | (g < 1) | (g > MAX_JOB_GPUS) | (g != np.round(g))
    if bad.any():
        _fail(source, df, bad, "gpus", f"an integer from 1 to {MAX_JOB_GPUS:,}")
    df["gpus"] = g.astype(np.int64)
    for col in OPTIONAL:
        if col not in df:
            continue
        vals = pd.to_numeric(df[col], errors="coerce")
        given = df[col].notna() & (df[col].astype(str).str.strip() != "")
        bad = given & (vals.isna() | ~np.isfinite(vals))
        if bad.any():
            _fail(source, df, bad, col, "a finite number, or empty for the class default")
        df[col] = vals
    return df


def validate_jobs(df: pd.DataFrame, source: str = "jobs", seed: int = 0) -> pd.DataFrame:
    """Check a job table; fill optional columns from the class profiles.

    Raises :class:`SpecError` naming the file, row, field, value and what was expected; an
    unknown column is rejected by name.
    """
    if df is None or len(df) == 0:
        raise SpecError(source, "<no jobs>", "at least one job row (" + ",".join(COLUMNS) + ")")
    _check_columns(df, source)
    df = df.reset_index(drop=True).copy()
    df["id"] = df["id"].astype(str)
    df = _numbers(df, source)
    df["workload"] = df["workload"].astype(str).str.strip().str.lower()
    bad = ~df.workload.isin(list(WORKLOAD_CLASSES))
    if bad.any():
        _fail(source, df, bad, "workload", f"one of {', '.join(WORKLOAD_CLASSES)}")
    dup = df.id.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise SpecError(f"{source}: row {i + 1} field id", df.id[i], "a unique job id")
    df = _fill_profiles(df, np.random.default_rng(seed))
    for col, lo, hi in (("power_low", 0.0, 1.2), ("power_high", 0.0, 1.2), ("period", 0.05, 3600)):
        bad = ~df[col].between(lo, hi)
        if bad.any():
            _fail(source, df, bad, col, f"a value between {lo:g} and {hi:g}")
    bad = df.power_low > df.power_high
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        _fail(source, df, bad, "power_low", f"at most power_high ({df.power_high[i]:g})")
    bad = ~(df.deferral >= 0)
    if bad.any():
        _fail(source, df, bad, "deferral", ">= 0 s")
    df = df[list(COLUMNS + OPTIONAL)]
    return df.sort_values(["arrival", "id"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- file loading
def load_jobs(
    path: str | Path,
    facility_gpus: int | None = None,
    load: float = 0.7,
    hours: float = 168.0,
    seed: int = 0,
    **trace_options,
) -> JobSet:
    """Load a job file (CSV or JSON job format) or the raw Alibaba trace (recognised by header).

    ``facility_gpus``, ``load``, ``hours`` and ``trace_options`` apply to the trace only
    (:func:`load_alibaba_trace`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"job file {str(path)!r} not found")
    text = read_text(path)
    if not text.strip():
        raise SpecError(str(path), "<empty file>", "a job file with a header and at least one job")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(str(path), "<file>", f"valid JSON ({exc})") from exc
        rows = doc.get("jobs") if isinstance(doc, dict) else doc
        if not isinstance(rows, list):
            raise SpecError(f"{path}: jobs", type(rows).__name__, "a list of job objects")
        df = pd.DataFrame(rows)
        return JobSet(validate_jobs(df, str(path), seed), {"source": str(path), "format": "json"})
    header = {h.strip() for h in text.splitlines()[0].split(",")}
    if ALIBABA_HEADER <= header:
        if facility_gpus is None:
            raise SpecError("facility_gpus", None, "the facility's GPU count to scale the trace to")
        return load_alibaba_trace(path, facility_gpus, load, hours, seed=seed, **trace_options)
    df = _read_csv(text, path)
    return JobSet(validate_jobs(df, str(path), seed), {"source": str(path), "format": "csv"})


def _read_csv(text: str, path: Path) -> pd.DataFrame:
    """The CSV's cells as strings; a row with more or fewer cells than the header is an error
    naming its line (pandas would shift a longer row's cells into an index)."""
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    header = [h.strip() for h in next(rows)]
    body = []
    for row in rows:
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise SpecError(
                f"{path}: line {rows.line_num}",
                f"{len(row)} cells",
                f"{len(header)} cells, one per column of the header",
            )
        body.append([c.strip() for c in row])
    return pd.DataFrame(body, columns=header, dtype=object)


def read_text(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 (or NUL: a binary file) are a
    :class:`SpecError` naming the file, the line and the byte, never a traceback."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at, byte = exc.start, f"byte 0x{data[exc.start]:02x}"
    else:
        if "\x00" not in text:
            return text
        at, byte = data.index(b"\x00"), "byte 0x00"
    line = data.count(b"\n", 0, at) + 1
    col = at - (data.rfind(b"\n", 0, at) + 1) + 1
    raise SpecError(
        f"{path}: line {line}, column {col}", byte, "UTF-8 text (a CSV or JSON job file)"
    )


def write_jobs(jobs: JobSet, path: str | Path) -> Path:
    """Write jobs in the job format (CSV, or JSON by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(COLUMNS + OPTIONAL)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"jobs": jobs.table[cols].to_dict("records")}, indent=1))
    else:
        jobs.table[cols].to_csv(path, index=False)
    return path


def _scale_sizes(
    gpu_equiv: np.ndarray, workload: np.ndarray, k: float, rack_gpus: int, max_gpus: int
):
    gpus = np.maximum(1, np.round(gpu_equiv * k)).astype(int)
    big_train = (workload == "training") & (gpus > rack_gpus // 2)
    gpus = np.where(big_train, np.ceil(gpus / rack_gpus).astype(int) * rack_gpus, gpus)
    cap = (max_gpus // rack_gpus) * rack_gpus if max_gpus >= rack_gpus else max_gpus
    return np.minimum(gpus, cap)


def _busy_equiv(arrival, duration, g, hours):
    horizon = hours * 3600.0
    overlap = np.clip(np.minimum(arrival + duration, horizon) - np.maximum(arrival, 0.0), 0, None)
    return float((g * overlap).sum() / horizon)


def load_alibaba_trace(
    path: str | Path,
    facility_gpus: int,
    load: float = 0.7,
    hours: float = 168.0,
    window_end_s: float | None = None,
    max_jobs: int = 10_000,
    rack_gpus: int = 72,
    site_gpus: int | None = None,
    batch_deferral_s: float = DEFAULT_BATCH_DEFERRAL_S,
    seed: int = 0,
) -> JobSet:
    """Map the openb pod list to jobs and scale it to ``load`` of ``facility_gpus``.

    Mapping (documented in ``docs/placement.md``):

    * window: the ``hours`` before ``window_end_s`` (default: the trace's last deletion, its
      busiest week); pods never scheduled or without GPUs are dropped; pods running at the
      window start arrive at 0 with their remaining run time;
    * GPU demand of a pod: ``num_gpu x gpu_milli / 1000`` GPU-equivalents (GPU sharing);
    * class: multi-GPU pods -> ``training``; ``qos`` BE (best effort) -> ``batch`` (flexible,
      deferral ``batch_deferral_s``); other pods (LS, Burstable, Guaranteed) -> ``inference``;
    * scale: ``S = load x facility_gpus / B``, ``B`` the mean busy GPU-equivalents of the window
      (Little's law); ``r = max(1, max_jobs // pods)`` replicas of the window, each shifted
      cyclically by ``i/r`` of the window, and every GPU-equivalent becomes ``k = S / r`` GPUs;
      training jobs above half a rack are rounded up to whole racks; no job exceeds a site.
    """
    if not (0.05 <= load <= 1.0):
        raise SpecError("load", load, "a target load between 0.05 and 1 of the facility's GPUs")
    raw = pd.read_csv(path)
    raw = raw[(raw.num_gpu > 0) & raw.scheduled_time.notna()]
    end = float(raw.deletion_time.max()) if window_end_s is None else float(window_end_s)
    w0 = end - hours * 3600.0
    m = (raw.deletion_time > w0) & (raw.creation_time < end)
    pods = raw[m]
    if pods.empty:
        raise SpecError("window_end_s", window_end_s, f"a trace window with pods ({path})")
    start = np.maximum(pods.creation_time.to_numpy(float), w0)
    arrival = start - w0
    duration = pods.deletion_time.to_numpy(float) - start
    keep = duration > 0
    pods, arrival, duration = pods[keep], arrival[keep], duration[keep]
    g = pods.num_gpu.to_numpy(float) * pods.gpu_milli.to_numpy(float) / 1000.0
    workload = np.where(
        pods.num_gpu.to_numpy() >= 2,
        "training",
        np.where(pods.qos.to_numpy() == "BE", "batch", "inference"),
    )
    busy = _busy_equiv(arrival, duration, g, hours)
    scale = load * facility_gpus / busy
    replicas = max(1, int(max_jobs // len(pods)))
    k = scale / replicas
    horizon = hours * 3600.0
    frames = []
    for i in range(replicas):
        shift = i * horizon / replicas
        a = np.where(arrival > 0, (arrival + shift) % horizon, 0.0)
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"{n}#{i}" if replicas > 1 else n for n in pods.name],
                    "arrival": a,
                    "duration": duration,
                    "gpus": _scale_sizes(g, workload, k, rack_gpus, site_gpus or facility_gpus),
                    "workload": workload,
                    "deferral": np.where(workload == "batch", batch_deferral_s, 0.0),
                }
            )
        )
    df = validate_jobs(pd.concat(frames, ignore_index=True), str(path), seed)
    offered = float((df.gpus * (np.minimum(df.arrival + df.duration, horizon) - df.arrival)).sum())
    meta = {
        "source": str(path),
        "format": "alibaba_openb",
        "window_start_s": w0,
        "window_end_s": end,
        "pods": int(len(pods)),
        "busy_gpu_equivalents": busy,
        "scale": scale,
        "replicas": replicas,
        "gpus_per_gpu_equivalent": k,
        "offered_load": offered / (horizon * facility_gpus),
    }
    return JobSet(df, meta)


# ----------------------------------------------------------------------------- generator
def _interp_inverse(u, q, v):
    return np.interp(u, q, v)


def generate_jobs(
    facility_gpus: int,
    hours: float = 168.0,
    load: float = 0.7,
    n_jobs: int | None = None,
    rack_gpus: int = 72,
    site_gpus: int | None = None,
    seed: int = 0,
    stats: dict | None = None,
) -> JobSet:
    """Draw jobs that reproduce the openb trace's cited statistics, scaled to ``load``.

    * arrivals: Poisson; ``n_jobs`` over ``hours`` (default: the trace's busiest-week rate,
      1,956 pods per 168 h); a warm-up of 24 h before 0 is drawn too and the jobs still
      running at 0 start there (the replay begins at steady state);
    * duration: log-normal through the published median (540 s) and p90 (6,574 s);
    * GPU-equivalents: the trace's GPU-count mix of GPU pods (1, 2, 4, 8) and, for one-GPU
      pods, its share of fractional GPUs and their quantiles;
    * class and deferral, and the scaling to ``load`` (Little's law on the drawn jobs) as in
      :func:`load_alibaba_trace`.
    """
    if not (0.05 <= load <= 1.0):
        raise SpecError("load", load, "a target load between 0.05 and 1 of the facility's GPUs")
    if not (hours > 0 and math.isfinite(hours)):
        raise SpecError("hours", hours, "a positive number of hours")
    st = stats or trace_statistics()
    rng = np.random.default_rng(seed)
    rate = (n_jobs / hours) if n_jobs else st["counts"]["busiest_week_arrivals"] / 168.0
    warm = 24.0
    n_total = (
        rng.poisson(rate * (hours + warm)) if not n_jobs else int(round(rate * (hours + warm)))
    )
    arrival = np.sort(rng.uniform(-warm * 3600.0, hours * 3600.0, n_total))
    d = st["duration"]
    sigma = math.log(d["p90_s"] / d["median_s"]) / 1.2815515655446004
    duration = np.exp(math.log(d["median_s"]) + sigma * rng.standard_normal(n_total))
    vals = np.asarray(st["gpu_count"]["values"])
    shares = np.asarray(st["gpu_count"]["shares"], float)
    gpu_pods = vals > 0
    count = rng.choice(vals[gpu_pods], n_total, p=shares[gpu_pods] / shares[gpu_pods].sum())
    gs = st["gpu_share"]
    frac = rng.uniform(size=n_total) < gs["fractional_share"]
    # Fractional shares: the trace's quantiles of all one-GPU pods, restricted to those < 1.
    fq = np.asarray(gs["quantiles"]) / gs["fractional_share"]
    u = rng.uniform(size=n_total)
    share = _interp_inverse(u, np.r_[0.0, fq[:-1], 1.0], np.r_[0.05, gs["values"][:-1], 1.0])
    g = np.where((count == 1) & frac, share, count.astype(float))
    q = st["qos"]
    p_be = q["BE"] / sum(q.values())
    workload = np.where(
        count >= 2, "training", np.where(rng.uniform(size=n_total) < p_be, "batch", "inference")
    )
    running = arrival + duration > 0
    arrival, duration, g, workload = (
        arrival[running],
        duration[running],
        g[running],
        workload[running],
    )
    duration = np.where(arrival < 0, arrival + duration, duration)
    arrival = np.maximum(arrival, 0.0)
    busy = _busy_equiv(arrival, duration, g, hours)
    k = load * facility_gpus / busy
    df = pd.DataFrame(
        {
            "id": [f"gen-{i:06d}" for i in range(len(arrival))],
            "arrival": arrival,
            "duration": duration,
            "gpus": _scale_sizes(g, workload, k, rack_gpus, site_gpus or facility_gpus),
            "workload": workload,
            "deferral": np.where(workload == "batch", DEFAULT_BATCH_DEFERRAL_S, 0.0),
        }
    )
    df = validate_jobs(df, "generated jobs", seed)
    horizon = hours * 3600.0
    offered = float((df.gpus * (np.minimum(df.arrival + df.duration, horizon) - df.arrival)).sum())
    meta = {
        "source": "generator (data/jobs/alibaba_openb.toml statistics)",
        "format": "generated",
        "seed": seed,
        "gpus_per_gpu_equivalent": k,
        "duration_sigma": sigma,
        "offered_load": offered / (horizon * facility_gpus),
    }
    return JobSet(df, meta)


__all__ = [
    "WORKLOAD_CLASSES",
    "WorkloadClass",
    "JobSet",
    "load_jobs",
    "load_alibaba_trace",
    "generate_jobs",
    "validate_jobs",
    "write_jobs",
    "trace_statistics",
]


def jobs_for_facility(
    path: str | Path | None, spec: FacilitySpec, *, load: float, hours: float, seed: int
) -> JobSet:
    """The jobs of a placement run on ``spec``: ``path`` read and scaled, or generated.

    A job file or raw trace at ``path`` goes through :func:`load_jobs` scaled to the facility
    (``load`` of its GPUs over ``hours``); without one, :func:`generate_jobs` draws them. Either
    way no job is larger than the smallest site.
    """
    site_gpus = int(min(s.gpus for s in spec.sites))
    if path:
        return load_jobs(
            path, facility_gpus=spec.gpus, load=load, hours=hours, seed=seed, site_gpus=site_gpus
        )
    return generate_jobs(spec.gpus, hours=hours, load=load, site_gpus=site_gpus, seed=seed)
