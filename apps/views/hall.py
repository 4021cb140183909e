"""Hall page: the two-story floor plan of each building, one cell per rack, coloured by the
hottest GPU, the rack's IT power or its coolant return; a selected rack shows its trays, GPUs
and the row's CDU loop."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps import data

FLOOR_NAMES = {1: "Floor 1 (ground)", 2: "Floor 2 (upper)"}


def building_table(racks: pd.DataFrame, site: str) -> pd.DataFrame:
    """Per building and floor of a site: racks, hottest GPU, IT power, mean coolant return."""
    r = racks[racks.site == site]
    g = r.groupby(["building", "floor"])
    return pd.DataFrame(
        {
            "racks": g.size(),
            "hottest GPU [degC]": g.gpu_max_c.max(),
            "IT power [MW]": g.power_kw.sum() / 1e3,
            "mean coolant return [degC]": g.return_c.mean(),
        }
    )


def floor_plan(cells: pd.DataFrame, column: str, unit: str, lo: float, hi: float) -> alt.Chart:
    """One floor: rows top to bottom, racks left to right (one mark per rack)."""
    d = cells.assign(
        value=cells[column], label="R" + cells.row.astype(str) + "-" + cells.slot.astype(str)
    )
    return (
        alt.Chart(d)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("slot:O", title="rack in row"),
            y=alt.Y("row:O", title="row (one CDU each)"),
            color=alt.Color(
                "value:Q",
                title=unit,
                scale=alt.Scale(scheme="turbo", domain=[lo, hi]),
            ),
            tooltip=[
                "label:N",
                "rack:Q",
                alt.Tooltip("gpu_max_c:Q", title="hottest GPU [degC]", format=".1f"),
                alt.Tooltip("power_kw:Q", title="IT power [kW]", format=".1f"),
                alt.Tooltip("return_c:Q", title="coolant return [degC]", format=".2f"),
            ],
        )
        .properties(height=max(120, 14 * int(d.row.max())))
    )


def gpu_grid(gpus: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(gpus, title="GPU die temperature by tray [degC]")
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("gpu:O", title="GPU in tray"),
            y=alt.Y("tray:O", title="tray"),
            color=alt.Color("temperature_c:Q", title="degC", scale=alt.Scale(scheme="turbo")),
            tooltip=["tray:O", "gpu:O", alt.Tooltip("temperature_c:Q", format=".2f")],
        )
        .properties(height=320, width=220)
    )


def render(ctx) -> None:
    fr = data.fleet_run(ctx.settings)
    racks, spec = fr.racks, fr.run.spec
    st.header(f"Halls — {spec.name}")
    st.caption(
        "GPU temperatures: end of the twin run (dynamic). Rack IT power and coolant return: the "
        "twin's steady state for each rack's load at that hour (twin.placement.steady_state)."
    )
    sites = {s.name: s for s in spec.sites}
    c1, c2, c3 = st.columns([2, 1, 2])
    site = sites[c1.selectbox("Site", list(sites), key="hall_site")]
    building = c2.selectbox(
        "Building", list(range(1, site.building.count + 1)), key="hall_building"
    )
    metric = c3.radio(
        "Colour racks by", list(data.RACK_METRICS), horizontal=True, key="hall_metric"
    )
    column, unit = data.RACK_METRICS[metric]
    st.dataframe(building_table(racks, site.key), width="stretch")
    here = racks[(racks.site == site.key) & (racks.building == building)]
    lo, hi = float(here[column].min()), float(here[column].max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    st.subheader(f"{site.name}, building {building}: {metric}")
    floors = sorted(here.floor.unique())
    for col, f in zip(st.columns(len(floors)), floors, strict=True):
        with col:
            cells = here[here.floor == f]
            st.markdown(f"**{FLOOR_NAMES.get(f, f'Floor {f}')}** — {len(cells)} racks")
            st.altair_chart(floor_plan(cells, column, unit, lo, hi), width="stretch")
    st.subheader("Rack")
    labels = {
        f"floor {r.floor}, row {r.row}, rack {r.slot} (#{r.rack})": int(r.rack)
        for r in here.itertuples()
    }
    hottest = here.loc[here.gpu_max_c.idxmax()]
    default = next(i for i, v in enumerate(labels.values()) if v == int(hottest.rack))
    rack = labels[
        st.selectbox(
            "Select a rack (default: the hottest)", list(labels), index=default, key="hall_rack"
        )
    ]
    row = racks.loc[racks.rack == rack].iloc[0]
    m = st.columns(5)
    m[0].metric("Hottest GPU", f"{row.gpu_max_c:.2f} °C")
    m[1].metric("Mean GPU", f"{row.gpu_mean_c:.2f} °C")
    m[2].metric("Rack IT power", f"{row.power_kw:.1f} kW")
    m[3].metric("Coolant inlet", f"{row.inlet_c:.2f} °C")
    m[4].metric("Coolant return", f"{row.return_c:.2f} °C")
    left, right = st.columns([1, 2])
    gpus = data.rack_gpus(fr.run, fr.state, rack)
    left.altair_chart(gpu_grid(gpus))
    loop = data.cdu_loop(fr.run, fr.state, int(row.cdu))
    with right:
        st.markdown(f"**CDU loop of row {row.row}** (CDU #{int(row.cdu)}, {loop['racks']} racks)")
        a = st.columns(3)
        a[0].metric("TCS supply", f"{loop['tcs_supply_c']:.2f} °C", help="CDU outlet to the racks")
        a[1].metric("TCS return", f"{loop['tcs_return_c']:.2f} °C", help="into the CDU exchanger")
        a[2].metric("TCS flow", f"{loop['tcs_flow_l_s']:.2f} L/s")
        b = st.columns(3)
        b[0].metric(
            "FWS supply", f"{loop['fws_supply_c']:.2f} °C", help="facility water at the CDU"
        )
        b[1].metric("FWS return", f"{loop['fws_return_c']:.2f} °C")
        b[2].metric("CDU pump", f"{loop['tcs_pump_power_kw']:.2f} kW")
        st.caption(
            f"Setpoints: TCS supply {loop['tcs_supply_setpoint_c']:.1f} °C, facility water "
            f"{loop['fws_supply_setpoint_c']:.1f} °C."
        )
        row_racks = racks[racks.cdu == row.cdu][["slot", "gpu_max_c", "power_kw", "return_c"]]
        st.dataframe(row_racks.set_index("slot"), width="stretch")
