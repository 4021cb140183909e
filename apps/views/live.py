"""Live page: the telemetry store written by ``twin sensord`` (or a Prometheus server),
refreshed every few seconds; with no source, the simulated fleet read in this process."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps import data

#: Above this many GPUs the charts show the fleet's max / mean / min instead of one line each.
MAX_LINES = 16


def _chart(frame: pd.DataFrame, field: str, title: str) -> alt.Chart:
    d = frame[["time", "gpu", field]].dropna()
    if d.gpu.nunique() > MAX_LINES:
        g = d.groupby("time")[field]
        d = pd.concat(
            [g.max().rename("max"), g.mean().rename("mean"), g.min().rename("min")], axis=1
        ).reset_index()
        d = d.melt(id_vars="time", var_name="gpu", value_name=field)
    return (
        alt.Chart(d, title=title)
        .mark_line()
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y(f"{field}:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("gpu:N", legend=alt.Legend(orient="bottom", columns=4)),
        )
        .properties(height=260)
    )


def _frame(source: str, window_s: float) -> tuple[pd.DataFrame, str]:
    if not source:
        fleet = st.session_state.get("live_fleet")
        if fleet is None:
            fleet = st.session_state["live_fleet"] = data.SimulatedFleet()
        frame = fleet.poll()
        cut = frame.time.max() - pd.Timedelta(seconds=window_s)
        return frame[frame.time >= cut], "simulated fleet (sensors.simulated, in this process)"
    ds = data.read_live(source, window_s)
    return data.telemetry_frame(ds), source


def show(source: str, window_s: float) -> None:
    """One refresh (a fragment: re-runs alone, so it shows its own errors)."""
    try:
        frame, label = _frame(source, window_s)
    except data.InputError as exc:
        st.error(f"Live: {exc}")
        return
    last = data.latest_per_gpu(frame)
    st.caption(f"Source: {label}. Last sample {last.time.max()} UTC.")
    m = st.columns(4)
    m[0].metric("GPUs", f"{len(last)}")
    m[1].metric("Hottest GPU now", f"{last.temp_gpu.max():.0f} °C")
    m[2].metric("Mean GPU power now", f"{last.power_average.mean():.1f} W")
    m[3].metric("Samples shown", f"{len(frame):,}")
    c1, c2 = st.columns(2)
    c1.altair_chart(_chart(frame, "temp_gpu", "GPU temperature [°C]"), width="stretch")
    c2.altair_chart(_chart(frame, "power_average", "GPU power [W]"), width="stretch")
    st.dataframe(last, width="stretch")


def render(ctx) -> None:
    st.header("Live telemetry")
    c1, c2, c3 = st.columns(3)
    auto = c1.toggle("Auto refresh", True, key="live_auto")
    every = c2.number_input("Refresh every [s]", 1.0, 60.0, 2.0, 1.0, key="live_every")
    window = c3.number_input("Window [s]", 10.0, 3600.0, 300.0, 10.0, key="live_window")
    fragment = st.fragment(run_every=every if auto else None)(show)
    fragment(ctx.telemetry, float(window))
