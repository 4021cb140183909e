r"""Peer anomalies: a GPU that reads hotter than its peers at equal power and coolant.

One detector, :func:`detect_anomalies`, used by ``twin calibrate`` (the params Dataset's
``anomaly``, ``anomaly_reason`` and ``peer_*`` variables), by the live filter
(:func:`twin.estimate.peer_anomalies`, run by ``twin watch``) and by the dashboard's GPU page.
It reads the telemetry only (power and die temperature), so its verdict depends neither on how
a fit went nor on whether the GPU's power varied, and a sensor offset or a hot GPU is never
absorbed into a fitted intercept.

Method (docs/calibration.md, "Anomalies"):

1. **Windows.** The record is cut into windows of ``anomaly_window_s``; in each, every GPU's mean
   power :math:`\bar P_{iw}` and mean reading :math:`\bar T_{iw}`.  A window counts for a GPU
   where at least half its steps have a reading and the mean readings of its two halves differ
   by less than ``anomaly_steady_k`` (one readout step): near steady state, so a power step or
   a warm-up inside it does not count.
2. **Excess over the peers at equal power and coolant, window by window.**  The peers are the
   other GPUs of the loop (host), or of the fleet where the loop has fewer than ``min_peers``
   others; in the same window they share the loop's coolant.  Each peer's reading is moved to
   the GPU's power along the nominal junction-to-coolant resistance :math:`R_0` (the facility
   spec's), :math:`S_{jw} = \bar T_{jw} + R_0 (\bar P_{iw} - \bar P_{jw})`, and

   .. math:: e_{iw} = \bar T_{iw} - \operatorname{median}_j S_{jw},\qquad
             s_{iw} = \max\left(Q_n(S_{jw}),\ \tilde Q_w\right)

   with :math:`Q_n` the scale of Rousseeuw and Croux [1]_ (the MAD's 50 % breakdown at 82 %
   rather than 37 % Gaussian efficiency: a loop has only 7 peers) and :math:`\tilde Q_w` the
   median :math:`Q_n` of the fleet's other loops in that window where it has at least three
   (a loop's healthy spread is a fleet property).  Where a loop runs one job the move along
   :math:`R_0` is small (40 W x 0.03 K/W = 1.2 K).
3. **At each operating point of the GPU.**  Its operating points (up to three: low, middle,
   high) are the densest clusters of its counted windows' powers, each the windows within the
   tolerance max(``envelope_margin_w``, ``envelope_margin_rel`` x P) of the power that has the
   most of them (at least three).  At each, the excess
   :math:`d = \operatorname{median}_w e_{iw}` [K] and its robust z-score
   :math:`z = d / \max(\operatorname{median}_w s_{iw}, s_{min})`: the modified z-score of
   Iglewicz and Hoaglin [2]_ with the GPU left out of its peers, the scale floored at
   ``peer_scale_floor_k`` (the 1 degC readout step).  A GPU whose power never varied has one
   operating point and is compared there.
4. **Rise.**  A worse thermal path (failing interface, blocked plate) grows with power; a sensor
   or inlet offset does not.  Where a GPU's lowest and highest operating points lie at least
   ``min_power_range_w`` apart, its excess grows at a rate (K/W) that is compared with its
   peers' rates: median and :math:`Q_n` of theirs (at least ``min_peers``; scale floored at the
   readout step over the GPU's span); the departure is reported in K over its span.
5. **Flag** where :math:`d \ge` ``peer_excess_k`` and :math:`z \ge` ``peer_z_threshold`` at an
   operating point, or for the rise where the GPU also reads ``peer_excess_k`` above its peers
   at its highest operating point (not merely less cool there than they are).  One-sided: a GPU
   colder than its peers at equal power is the better cooled one (on the b443a1c3 trace three
   healthy GPUs run 9-12 K below the others at 690 W); its negative excess and z are reported,
   not flagged.

References
----------
.. [1] P. J. Rousseeuw and C. Croux, "Alternatives to the median absolute deviation", J. Am.
   Stat. Assoc. 88 (1993) 1273-1283; small-sample factors d_n from C. Croux and P. J.
   Rousseeuw, "Time-efficient algorithms for two highly robust estimators of scale",
   Computational Statistics 1 (1992) 411-428.
.. [2] B. Iglewicz and D. C. Hoaglin, *How to Detect and Handle Outliers*, ASQC Quality Press
   (1993): the modified z-score; values beyond 3.5 are labelled outliers.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import xarray as xr

from twin.calibration.config import CalibrationConfig
from twin.io.telemetry import Grid
from twin.units import SpecError

#: The comparisons of :class:`PeerAnomalies`, in order: the excess at the GPU's low, middle
#: and high operating point, and the rise of the excess from its lowest to its highest.
TESTS: tuple[str, ...] = ("low", "middle", "high", "rise")
#: Windows an operating point needs (their median outvotes one spoiled window).
MIN_GROUP = 3
QN_GAUSS = 2.2219  # consistency factor of Qn at the normal distribution
MAD_SD = 1.4826  # consistency factor of the MAD at the normal distribution
QN_MAX = 100  # Qn (O(n^2) pairs) up to this many values, the MAD above
#: Small-sample factors d_n of Qn for n = 2..9 (Croux & Rousseeuw 1992, table).
_QN_SMALL = {2: 0.399, 3: 0.994, 4: 0.512, 5: 0.844, 6: 0.611, 7: 0.857, 8: 0.669, 9: 0.872}


@dataclasses.dataclass(frozen=True)
class PeerAnomalies:
    """What :func:`detect_anomalies` found: arrays over ``gpu``, ``(gpu, 4)`` over :data:`TESTS`.

    ``excess`` [K] is the GPU's excess over its peers' median at equal power (for ``rise``: how
    much more its excess grows over its powers than its peers' does, in K over its span); ``z``
    its robust z-score; ``power`` the GPU's power compared at [W] (``rise``: its highest);
    ``windows`` the windows compared (0 for ``rise``).  NaN where no comparison was made.
    ``test`` is each GPU's decisive comparison (the flagged one with the largest ``z``, else the
    operating point with the largest ``|z|``, else the rise; "" if none).
    """

    gpu: list[str]
    excess: np.ndarray
    z: np.ndarray
    power: np.ndarray
    windows: np.ndarray
    anomaly: np.ndarray
    test: list[str]
    reason: list[str]

    def decisive(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Excess [K], z and power [W] of each GPU's decisive comparison (NaN where none)."""
        out = np.full((3, len(self.gpu)), np.nan)  # excess, z, power
        for i, t in enumerate(self.test):
            if t:
                k = TESTS.index(t)
                out[:, i] = self.excess[i, k], self.z[i, k], self.power[i, k]
        return out[0], out[1], out[2]

    def flagged(self) -> list[str]:
        """Names of the flagged GPUs, in order."""
        return [g for g, a in zip(self.gpu, self.anomaly, strict=True) if a]

    def records(self, since: str = "", keep: set[str] | None = None) -> list[dict]:
        """The flagged GPUs (those in ``keep``, if given) as anomaly records of kind
        ``peer_excess``: ``excess_k``, ``z``, ``at_w``, ``test``, ``reason``."""
        excess, z, power = self.decisive()
        return [
            {
                "kind": "peer_excess",
                "gpu": self.gpu[i],
                "since": since,
                "excess_k": round(float(excess[i]), 2),
                "z": round(float(z[i]), 2),
                "at_w": round(float(power[i]), 1),
                "test": self.test[i],
                "reason": self.reason[i],
            }
            for i in np.flatnonzero(self.anomaly)
            if keep is None or self.gpu[i] in keep
        ]

    @classmethod
    def from_dataset(cls, params: xr.Dataset) -> PeerAnomalies:
        """The detector's output as ``twin calibrate`` stored it in its params Dataset."""
        need = ("peer_comparison_excess", "peer_comparison_z", "peer_comparison_power")
        for var in (*need, "peer_comparison_windows", "peer_test", "anomaly", "anomaly_reason"):
            if var not in params:
                raise SpecError(f"params:{var}", "<missing>", "a calibration of this version")
        return cls(
            gpu=[str(g) for g in params["gpu"].values],
            excess=params[need[0]].values,
            z=params[need[1]].values,
            power=params[need[2]].values,
            windows=params["peer_comparison_windows"].values,
            anomaly=params["anomaly"].values.astype(bool),
            test=[str(t) for t in params["peer_test"].values],
            reason=[str(r) for r in params["anomaly_reason"].values],
        )


def detect_anomalies(
    grid: Grid, resistance_k_per_w: float, config: CalibrationConfig | None = None
) -> PeerAnomalies:
    """Compare every GPU of ``grid`` with its peers at equal power (method: module docstring).

    ``resistance_k_per_w`` is the nominal junction-to-coolant resistance [K/W] along which a
    peer's reading is moved to the GPU's power (the facility spec's
    ``resistance_junction_coolant``); thresholds come from ``config``
    (:class:`CalibrationConfig`).
    """
    cfg = config or CalibrationConfig()
    if not (np.isfinite(resistance_k_per_w) and 0.0 <= resistance_k_per_w < 1.0):
        raise SpecError("resistance_k_per_w", resistance_k_per_w, "a resistance in [0, 1) K/W")
    if not cfg.anomaly_window_s >= 2 * grid.dt:
        raise SpecError(
            "anomaly_window_s", cfg.anomaly_window_s, f"at least two grid steps ({grid.dt:g} s)"
        )
    width = int(round(cfg.anomaly_window_s / grid.dt))
    temp = np.where(grid.gap, np.nan, grid.temp)
    p_bar, t_bar = window_means(grid.power, temp, width, cfg.anomaly_steady_k)
    groups = peer_groups(grid.host, cfg.min_peers)
    e, spread = _window_excess(p_bar, t_bar, groups, resistance_k_per_w, cfg.min_peers)
    spread = np.fmax(spread, _fleet_spread(e, grid.host, cfg.min_peers))
    excess, z, power, n_win = _levels(p_bar, e, spread, cfg)
    _rise(excess, z, power, groups, grid.host, cfg)
    return _flag(list(grid.gpu), excess, z, power, n_win, cfg)


def window_means(
    power: np.ndarray, temp: np.ndarray, width: int, steady_k: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """``(gpu, window)`` mean power [W] and mean reading [degC] over windows of ``width`` steps.

    A mean needs at least half the window's steps with a value; a reading mean also needs the
    mean readings of the window's two halves (``width // 2`` steps each) to differ by less than
    ``steady_k`` [K]: the GPU near steady state.  Else NaN.  The steps after the last whole
    window are left out.
    """
    g_n, n = power.shape
    n_win, half = n // width, width // 2

    def mean(a: np.ndarray, w: int) -> np.ndarray:
        a = a.reshape(g_n, -1, w)
        ok = np.isfinite(a)
        cnt = ok.sum(2)
        return np.where(cnt >= 0.5 * w, np.where(ok, a, 0.0).sum(2) / np.maximum(cnt, 1), np.nan)

    whole = temp[:, : n_win * width]
    p_bar, t_bar = mean(power[:, : n_win * width], width), mean(whole, width)
    if half >= 1 and np.isfinite(steady_k):
        halves = mean(whole.reshape(g_n, n_win, width)[:, :, : 2 * half].reshape(g_n, -1), half)
        with np.errstate(invalid="ignore"):
            steady = np.abs(halves[:, 1::2] - halves[:, 0::2]) < steady_k
        t_bar = np.where(steady, t_bar, np.nan)
    return p_bar, t_bar


def peer_groups(host: list[str], min_peers: int) -> list[np.ndarray]:
    """Each GPU's peers: the other GPUs of its host (loop), or of the fleet where the host has
    fewer than ``min_peers`` others."""
    host_arr = np.asarray(host)
    every = np.arange(host_arr.size)
    out = []
    for i in every:
        same = np.flatnonzero((host_arr == host_arr[i]) & (every != i))
        out.append(same if same.size >= min_peers else np.delete(every, i))
    return out


def tolerance_w(p: float | np.ndarray, cfg: CalibrationConfig) -> float | np.ndarray:
    """How far [W] a power may lie from ``p`` [W] and count as the same operating point: the
    trained envelope's margin, max(``envelope_margin_w``, ``envelope_margin_rel`` x p)."""
    return np.maximum(cfg.envelope_margin_w, cfg.envelope_margin_rel * np.abs(p))


def robust_scale(x: np.ndarray, axis: int = 0) -> np.ndarray | float:
    """Rousseeuw & Croux's Qn of ``x`` along ``axis``, NaNs left out: the k-th smallest of the
    pairwise distances, k = C(h, 2), h = n//2 + 1, times 2.2219 d_n; a consistent estimate of
    the standard deviation at the normal (d_n: tabulated for n <= 9, n/(n + 1.4) for odd and
    n/(n + 3.8) for even n above).  NaN for fewer than two values.  Above :data:`QN_MAX`
    values (where the MAD's lower efficiency no longer matters) it is 1.4826 MAD, in O(n).
    """
    x = np.moveaxis(np.asarray(x, float), axis, 0)
    shape = x.shape[1:]
    x = x.reshape(x.shape[0], -1)
    n_all = x.shape[0]
    if n_all > QN_MAX:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mad = MAD_SD * np.nanmedian(np.abs(x - np.nanmedian(x, axis=0)), axis=0)
        out = np.where(np.isfinite(x).sum(0) >= 2, mad, np.nan).reshape(shape)
        return float(out) if out.ndim == 0 else out
    i, j = np.triu_indices(n_all, 1)
    out = np.full(x.shape[1], np.nan)
    step = max(1, int(4e6 // max(i.size, 1)))  # columns per block: ~32 MB of distances
    for c in range(0, x.shape[1], step):
        v = x[:, c : c + step]
        n = np.isfinite(v).sum(0)
        d = np.sort(np.abs(v[i] - v[j]), axis=0)  # NaN pairs sort last
        h = n // 2 + 1
        k = np.maximum(h * (h - 1) // 2, 1)
        pick = d[np.minimum(k, max(i.size, 1)) - 1, np.arange(v.shape[1])] if i.size else np.nan
        d_n = np.array([_QN_SMALL.get(m, m / (m + 1.4) if m % 2 else m / (m + 3.8)) for m in n])
        out[c : c + step] = np.where(n >= 2, QN_GAUSS * d_n * pick, np.nan)
    out = out.reshape(shape)
    return float(out) if out.ndim == 0 else out


def _window_excess(
    p_bar: np.ndarray, t_bar: np.ndarray, groups: list[np.ndarray], r0: float, min_peers: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(gpu, window)``: each reading minus the median of its peers' readings moved to its
    power [K], and the spread (Qn) of those moved readings [K]; NaN with fewer than
    ``min_peers`` peers read."""
    u = t_bar - r0 * p_bar  # a peer's reading moved to 0 W; + r0 P_iw moves it to P_iw
    e = np.full(t_bar.shape, np.nan)
    spread = np.full(t_bar.shape, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: no comparison
        for i, peers in enumerate(groups):
            v = u[peers]
            enough = (np.isfinite(v).sum(0) >= min_peers) & np.isfinite(t_bar[i])
            if not enough.any():
                continue
            ref = np.nanmedian(v[:, enough], axis=0) + r0 * p_bar[i, enough]
            e[i, enough] = t_bar[i, enough] - ref
            spread[i, enough] = robust_scale(v[:, enough], axis=0)
    return e, spread


def _fleet_spread(e: np.ndarray, host: list[str], min_peers: int) -> np.ndarray:
    """``(gpu, column)`` the median Qn of the values ``e`` of the fleet's other loops in each
    column, where at least three other loops (of more than ``min_peers`` GPUs) have one: how
    much healthy GPUs of a loop spread (a fleet property that 7 peers estimate poorly)."""
    host_arr = np.asarray(host)
    loops = [h for h in sorted(set(host)) if (host_arr == h).sum() > min_peers]
    out = np.full(e.shape, np.nan)
    if len(loops) < 4:
        return out
    q = np.stack([robust_scale(e[host_arr == h], axis=0) for h in loops])  # (loop, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for j, h in enumerate(loops):
            others = np.delete(q, j, axis=0)
            med = np.nanmedian(others, axis=0)
            out[host_arr == h] = np.where(np.isfinite(others).sum(0) >= 3, med, np.nan)
    return out


def operating_points(p: np.ndarray, cfg: CalibrationConfig) -> list[np.ndarray]:
    """A GPU's operating points: masks over its window powers ``p`` [W] (NaN: not counted), in
    order of power, at most three.  Each is the densest one left: the power with the most
    windows within its tolerance (:func:`tolerance_w`), those windows taken out before the
    next; one needs :data:`MIN_GROUP` windows.  (Modes rather than percentiles: a GPU that
    idles, infers and trains, or a node that steps 400 <-> 690 W, has its levels found.)"""
    left = np.isfinite(p)
    points = []
    while len(points) < 3 and left.sum() >= MIN_GROUP:
        x = p[left]
        near = np.abs(x[None, :] - x[:, None]) <= tolerance_w(x, cfg)[:, None]
        best = int(np.argmax(near.sum(1)))
        if near[best].sum() < MIN_GROUP:
            break
        mask = left & (np.abs(p - x[best]) <= tolerance_w(x[best], cfg))
        points.append(mask)
        left &= ~mask
    return sorted(points, key=lambda m: float(np.median(p[m])))


def _levels(
    p_bar: np.ndarray, e: np.ndarray, spread: np.ndarray, cfg: CalibrationConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(gpu, 4)`` excess [K], z, power [W] and windows at each operating point of each GPU
    (slots low, middle, high: one point is the middle, two are low and high; the rise slot
    left NaN): medians over the point's windows."""
    g_n = e.shape[0]
    n_t = len(TESTS)
    excess, z, power = (np.full((g_n, n_t), np.nan) for _ in range(3))
    n_win = np.zeros((g_n, n_t), dtype=np.int64)
    slots = {1: (1,), 2: (0, 2), 3: (0, 1, 2)}
    for i in range(g_n):
        ok = np.isfinite(p_bar[i]) & np.isfinite(e[i])
        if ok.sum() < cfg.anomaly_min_windows:
            continue
        points = operating_points(np.where(ok, p_bar[i], np.nan), cfg)
        for k, near in zip(slots.get(len(points), ()), points, strict=False):
            excess[i, k] = np.median(e[i, near])
            scale = max(float(np.median(spread[i, near])), cfg.peer_scale_floor_k)
            z[i, k] = excess[i, k] / scale
            power[i, k] = np.median(p_bar[i, near])
            n_win[i, k] = near.sum()
    return excess, z, power, n_win


def _rise(
    excess: np.ndarray,
    z: np.ndarray,
    power: np.ndarray,
    groups: list[np.ndarray],
    host: list[str],
    cfg: CalibrationConfig,
) -> None:
    """Fill the rise slot: how much more a GPU's excess grows per watt from its lowest to its
    highest operating point than its peers' does, in K over its own span, with a robust z
    against the peers' growth rates (at least ``min_peers`` of them, over spans of at least
    ``min_power_range_w``; scale as for the levels: their Qn, never below the median Qn of the
    fleet's other loops nor the readout step over the span).  In place."""
    r = TESTS.index("rise")
    have = np.isfinite(excess[:, :r])
    lo = np.where(have.any(1), np.argmax(have, axis=1), 0)
    hi = np.where(have.any(1), r - 1 - np.argmax(have[:, ::-1], axis=1), 0)
    rows = np.arange(excess.shape[0])
    span = power[rows, hi] - power[rows, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(
            span >= cfg.min_power_range_w, (excess[rows, hi] - excess[rows, lo]) / span, np.nan
        )
    pooled = _fleet_spread(rate[:, None], host, cfg.min_peers)[:, 0]
    for i, peers in enumerate(groups):
        peer_rate = rate[peers][np.isfinite(rate[peers])]
        if not np.isfinite(rate[i]) or peer_rate.size < cfg.min_peers:
            continue
        d = rate[i] - float(np.median(peer_rate))
        scale = np.nanmax([robust_scale(peer_rate), pooled[i], cfg.peer_scale_floor_k / span[i]])
        excess[i, r] = d * span[i]
        z[i, r] = d / scale
        power[i, r] = power[i, hi[i]]


def _flag(
    gpu: list[str],
    excess: np.ndarray,
    z: np.ndarray,
    power: np.ndarray,
    n_win: np.ndarray,
    cfg: CalibrationConfig,
) -> PeerAnomalies:
    """Flag where a comparison passes both thresholds (hot side); decisive test and reason."""
    r = TESTS.index("rise")
    with np.errstate(invalid="ignore"):
        hit = (excess >= cfg.peer_excess_k) & (z >= cfg.peer_z_threshold)
        # a growing excess flags a GPU that also reads hot at its highest power, not one that
        # is merely less cool there than its peers
        top = np.array([x[np.flatnonzero(np.isfinite(x))[-1]] if np.isfinite(x).any() else np.nan
                        for x in excess[:, :r]])  # fmt: skip
        hit[:, r] &= top >= cfg.peer_excess_k
    anomaly = hit.any(1)
    test, reason = [], []
    for i in range(len(gpu)):
        # a flagged comparison first, then the levels (K at equal power), the rise last
        level = np.arange(len(TESTS)) < r
        rank = np.where(hit[i], 1e9, np.where(level, 1e6, 0.0)) + np.nan_to_num(
            np.abs(z[i]), nan=-2e9
        )
        k = int(np.argmax(rank)) if np.isfinite(z[i]).any() else -1
        test.append(TESTS[k] if k >= 0 else "")
        reason.append(_reason(excess[i], z[i], power[i], k) if anomaly[i] else "")
    return PeerAnomalies(gpu, excess, z, power, n_win, anomaly, test, reason)


def _reason(excess: np.ndarray, z: np.ndarray, power: np.ndarray, k: int) -> str:
    """Why a GPU is flagged: the decisive comparison ``k`` first, the others after."""
    r = TESTS.index("rise")
    at = [j for j in range(r) if np.isfinite(excess[j])]

    def level(j: int) -> str:
        return f"{excess[j]:+.1f} K at {power[j]:.0f} W (robust z {z[j]:+.1f})"

    if k == r:
        return (
            f"reads {excess[at[-1]]:.1f} K above peers at equal power ({power[at[-1]]:.0f} W), "
            f"{excess[at[0]]:+.1f} K at {power[at[0]]:.0f} W: its excess grows {excess[r]:.1f} K "
            f"more than its peers' over that range (robust z {z[r]:+.1f}): a thermal path worse "
            "than its peers' (failing interface or blocked plate)"
        )
    head = (
        f"reads {excess[k]:.1f} K above peers at equal power ({power[k]:.0f} W; robust z "
        f"{z[k]:+.1f}): failing interface, blocked plate or a sensor fault"
    )
    others = [level(j) for j in at if j != k]
    if others:
        head += "; " + ", ".join(others)
    if np.isfinite(excess[r]):
        head += f"; its excess changes {excess[r]:+.1f} K against its peers' over its powers"
    return head
