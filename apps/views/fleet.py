"""Fleet page: both sites side by side — IT power, cooling power by part, PUE, grid carbon,
outdoor temperature — with trend charts, all from :func:`twin.simulation.simulate`."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps import data

#: Rows of the run-totals table: summary key, label.
TOTALS = (
    ("gpus", "GPUs"),
    ("it_energy_kwh", "IT energy [kWh]"),
    ("pump_energy_kwh", "pump energy [kWh]"),
    ("fan_energy_kwh", "fan energy [kWh]"),
    ("chiller_energy_kwh", "chiller energy [kWh]"),
    ("electrical_loss_energy_kwh", "electrical losses [kWh]"),
    ("total_energy_kwh", "total energy [kWh]"),
    ("pue", "PUE"),
    ("carbon_kg", "carbon [kg CO2]"),
    ("water_liters", "water evaporated [L]"),
    ("max_gpu_temperature_c", "hottest GPU [degC]"),
    ("throttle_gpu_minutes", "GPU-minutes above max operating"),
    ("work_lost_gpu_hours", "work lost to power/thermal caps [GPU-h]"),
)


def totals_table(summary: dict) -> pd.DataFrame:
    """Run totals per site and for the facility (from the ``simulate`` summary)."""
    cols = {k: [v[key] for key, _ in TOTALS] for k, v in summary["sites"].items()}
    cols["facility"] = [summary[key] for key, _ in TOTALS]
    return pd.DataFrame(cols, index=[label for _, label in TOTALS])


def site_metrics(ds, summary: dict, site: str) -> list[tuple[str, str]]:
    """(label, shown value) of one site's metric tiles, last record and run PUE."""
    last = data.latest(ds, site)
    s = summary["sites"][site]
    return [
        ("IT power", data.fmt_power(last["it_power"])),
        ("PUE (run, with electrical losses)", f"{s['pue']:.4f}"),
        ("Pumps", data.fmt_power(last["pump_power"])),
        ("Fans", data.fmt_power(last["fan_power"])),
        ("Chillers", data.fmt_power(last["chiller_power"])),
        ("Grid carbon", f"{last['carbon_intensity']:.1f} g/kWh"),
        ("Outdoor", f"{last['temp_air']:.1f} °C"),
        ("Hottest GPU", f"{last['max_gpu_temperature']:.1f} °C"),
    ]


def _line(df: pd.DataFrame, y: str, title: str, scale: float = 1.0) -> alt.Chart:
    d = df.assign(value=df[y] / scale)
    return (
        alt.Chart(d, title=title)
        .mark_line(point=len(d) < 40)
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("site_name:N", title="site", legend=alt.Legend(orient="bottom")),
            tooltip=["time:T", "site_name:N", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(height=220)
    )


def cooling_chart(df: pd.DataFrame) -> alt.Chart:
    """Cooling power by part, stacked, one panel per site [kW]."""
    long = df.melt(
        id_vars=["time", "site_name"],
        value_vars=["pump_power", "fan_power", "chiller_power"],
        var_name="part",
        value_name="watts",
    )
    long["part"] = long.part.str.replace("_power", "s").str.replace("chillers", "chillers")
    long["kW"] = long.watts / 1e3
    return (
        alt.Chart(long, title="Cooling power by part [kW]")
        .mark_area()
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("kW:Q", stack=True, title=None),
            color=alt.Color("part:N", legend=alt.Legend(orient="bottom")),
            tooltip=["time:T", "part:N", alt.Tooltip("kW:Q", format=".4g")],
        )
        .properties(height=200, width=250)
        .facet(column=alt.Column("site_name:N", title=None))
    )


def render(ctx) -> None:
    run = data.fleet_run(ctx.settings)
    ds, summary = run.ds, run.summary
    st.header(f"Fleet — {ds.attrs['facility']}")
    st.caption(
        f"{summary['gpus']:,} GPUs; twin run of {summary['hours']:.2f} h from "
        f"{summary['start']} at {ctx.settings.step_s:g} s steps, one record per "
        f"{ds.attrs['record_seconds']:g} s. Tiles: the last record; PUE: the whole run."
    )
    names = dict(zip(ds.site.values, ds.site_name.values, strict=True))
    for col, site in zip(st.columns(ds.sizes["site"]), ds.site.values, strict=True):
        with col:
            st.subheader(names[site])
            tiles = st.columns(2)
            for i, (label, value) in enumerate(site_metrics(ds, summary, site)):
                tiles[i % 2].metric(label, value)
    st.subheader("Run totals")
    totals = totals_table(summary)
    st.dataframe(totals, width="stretch", height=36 * (len(totals) + 1) + 2)
    st.subheader("Trends")
    df = data.site_frame(ds)
    c1, c2 = st.columns([1, 2])
    c1.altair_chart(_line(df, "it_power", "IT power [MW]", 1e6), width="stretch")
    c2.altair_chart(cooling_chart(df))
    c3, c4, c5 = st.columns(3)
    c3.altair_chart(_line(df, "pue_mechanical", "PUE (IT + cooling) / IT"), width="stretch")
    c4.altair_chart(_line(df, "carbon_intensity", "Grid carbon [g/kWh]"), width="stretch")
    c5.altair_chart(_line(df, "temp_air", "Outdoor dry-bulb [°C]"), width="stretch")
