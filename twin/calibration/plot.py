"""Figure of a calibration: measured vs predicted die temperature, best and worst GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin.calibration.config import Z95
from twin.calibration.result import CalibrationResult


def plot_fit(result: CalibrationResult, path: str | Path) -> Path:
    """Measured vs predicted die temperature for the best and worst GPU (held-out RMSE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rmse = result.params["holdout_rmse"].values
    if not np.isfinite(rmse).any():
        rmse = result.params["train_rmse"].values
    order = np.argsort(np.where(np.isfinite(rmse), rmse, np.inf))
    picks = [("best", int(order[0]))]
    finite = order[np.isfinite(rmse[order])]
    if finite.size > 1:
        picks.append(("worst", int(finite[-1])))
    g = result.grid
    t = np.arange(g.n_steps) * g.dt
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 3.6 * len(picks)), squeeze=False)
    for ax, (label, i) in zip(axes[:, 0], picks, strict=True):
        ok = np.isfinite(g.temp[i])
        ax.plot(t[ok], g.temp[i][ok], ".", ms=2, color="0.4", label="measured (1 °C steps)")
        ax.plot(t, result.prediction[i], "-", lw=1.2, color="C3", label="predicted from power")
        band = Z95 * result.prediction_sd[i]
        ax.fill_between(
            t, result.prediction[i] - band, result.prediction[i] + band, color="C3", alpha=0.15,
            lw=0, label="95 % interval (parameters + reading noise)",
        )  # fmt: skip
        ax.axvline(t[result.train_steps - 1], color="k", ls="--", lw=0.8)
        ax.set_ylabel("die temperature [°C]")
        ax.set_title(
            f"{label}: {g.gpu[i]}  held-out RMSE {rmse[i]:.2f} K  "
            f"({result.params['model'].values[i]})"
        )
        ax2 = ax.twinx()
        ax2.plot(t, g.power[i], "-", lw=0.5, color="C0", alpha=0.4)
        ax2.set_ylabel("power [W]", color="C0")
        ax.legend(loc="lower left", fontsize=8)
    axes[-1, 0].set_xlabel("time [s]  (dashed: end of training)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
