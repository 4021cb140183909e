"""The ``--compare`` report of ``twin optimize``: the twin against the strongest baseline, the
savings by mechanism as a table and as a plot (matplotlib, Agg, written next to ``--out``)."""

from __future__ import annotations

from twin.placement import ENERGY_PARTS, PolicyResult

#: Row labels of the mechanism table and the plot's legend, per part of the energy.
PART_LABELS = {
    "gpu_dynamic": "GPU dynamic (work)",
    "gpu_idle": "GPU idle",
    "gpu_leakage": "GPU leakage",
    "rack_overhead": "rack CPU/switch/NIC",
    "parked_standby": "parked standby",
    "pumps": "pumps",
    "fans": "fans",
    "chillers": "chillers",
    "electrical_losses": "electrical losses",
}


def headline(results: dict[str, PolicyResult], strongest: str | None) -> dict | None:
    """The twin's savings against the strongest baseline (None without both)."""
    if strongest is None or "twin" not in results:
        return None
    sv = results["twin"].summary["savings_by_mechanism"][strongest]
    return {"baseline": strongest} | sv


def mechanism_table(results: dict[str, PolicyResult], strongest: str) -> str:
    """Each policy's saving against ``strongest`` by part [Wh per completed GPU-hour], the total
    (the parts add up to it), the change in completed work and p95 wait."""
    pols = [p for p in results if p != strongest]
    sv = {p: results[p].summary["savings_by_mechanism"][strongest] for p in pols}
    head = f"saving vs {strongest} [Wh per completed GPU-h]"
    lines = [f"{head:38}" + "".join(f"{p:>15}" for p in pols)]

    def row(label, get, fmt="{:+,.1f}"):
        lines.append(f"{label:38}" + "".join(f"{fmt.format(get(p)):>15}" for p in pols))

    for k in ENERGY_PARTS:
        row(f"  {PART_LABELS[k]}", lambda p, k=k: 1e3 * sv[p]["kwh_per_completed_gpu_hour"][k])
    row("  total", lambda p: 1e3 * sv[p]["kwh_per_completed_gpu_hour"]["total"])
    row("  total %", lambda p: sv[p]["per_completed_gpu_hour_percent"], "{:+.2f}")
    row("saving kWh (same period)", lambda p: sv[p]["kwh"]["total"])
    row("completed GPU-h (policy - base)", lambda p: sv[p]["completed_gpu_hours_difference"])
    row("p95 wait s (policy - base)", lambda p: sv[p]["job_wait_p95_s_difference"], "{:+,.0f}")
    row("p95 delay s (policy - base)", lambda p: sv[p]["job_delay_p95_s_difference"], "{:+,.0f}")
    return "\n".join(lines)


def plot_savings(results: dict[str, PolicyResult], strongest: str | None, path: str) -> str:
    """Stacked bars: each policy's saving per completed GPU-hour against ``strongest`` by part
    (positive: the policy uses less), the total marked; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pols = [p for p in results if p != strongest] if strongest else []
    fig, ax = plt.subplots(figsize=(1.6 * max(len(pols), 3) + 3, 5))
    x = np.arange(len(pols))
    pos, neg = np.zeros(len(pols)), np.zeros(len(pols))
    colors = plt.get_cmap("tab10").colors
    for i, k in enumerate(ENERGY_PARTS):
        v = np.array(
            [
                1e3
                * results[p].summary["savings_by_mechanism"][strongest][
                    "kwh_per_completed_gpu_hour"
                ][k]
                for p in pols
            ]
        )
        bottom = np.where(v >= 0, pos, neg)
        ax.bar(x, v, 0.6, bottom=bottom, label=PART_LABELS[k], color=colors[i % 10])
        pos, neg = pos + np.clip(v, 0, None), neg + np.clip(v, None, 0)
    tot = [
        1e3
        * results[p].summary["savings_by_mechanism"][strongest]["kwh_per_completed_gpu_hour"][
            "total"
        ]
        for p in pols
    ]
    ax.scatter(x, tot, marker="D", color="black", zorder=3, label="total")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.margins(y=0.1)
    ax.set_xticks(x, pols, rotation=20)
    ax.set_ylabel(f"saving vs {strongest} [Wh per completed GPU-h]")
    ax.set_title("Savings by mechanism against the strongest baseline (positive: less energy)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
