"""Placement what-if: a job set and policies, replayed on the twin by
:func:`twin.placement.compare`; energy, carbon and maximum temperature compared; plan download."""

from __future__ import annotations

import hashlib
import json

import altair as alt
import pandas as pd
import streamlit as st

from apps import data

SOURCES = ("Generated (Alibaba openb statistics)", "Job file (upload)", "Job file (path)")
#: Policies run by default: today's schedulers and the twin's optimizer.
DEFAULT_POLICIES = ("pack", "pack-park", "pack-static", "twin")


def bar(table: pd.DataFrame, column: str, title: str) -> alt.Chart:
    d = table.reset_index()
    return (
        alt.Chart(d, title=title)
        .mark_bar()
        .encode(
            x=alt.X("policy:N", title=None, sort=None),
            y=alt.Y(f"{column}:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("policy:N", legend=None),
            tooltip=["policy:N", alt.Tooltip(f"{column}:Q", format=".5g")],
        )
        .properties(height=220)
    )


def power_trend(results: dict) -> alt.Chart:
    """Facility power (IT + cooling) per policy over the replay [MW]."""
    frames = []
    for name, res in results.items():
        p = res.plan
        total = (p.it_power + p.pump_power + p.fan_power + p.chiller_power).sum("site") / 1e6
        frames.append(pd.DataFrame({"time": p.time.values, "MW": total.values, "policy": name}))
    d = pd.concat(frames)
    return (
        alt.Chart(d, title="Facility power, IT + cooling [MW]")
        .mark_line()
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("MW:Q", title=None, scale=alt.Scale(zero=False)),
            color="policy:N",
            tooltip=["time:T", "policy:N", alt.Tooltip("MW:Q", format=".5g")],
        )
        .properties(height=240)
    )


def _jobs(source: str, spec, hours: float, access):
    """The chosen job set and a key that identifies it (cache key of the replay); a path is read
    only if ``access`` (the operator's policy) allows it."""
    if source == SOURCES[0]:
        c1, c2 = st.columns(2)
        load = c1.slider(
            "Target load (share of the facility's GPUs)", 0.05, 1.0, 0.6, 0.05, key="pl_load"
        )
        seed = int(c2.number_input("Seed", 0, 10_000, 0, key="pl_seed"))
        site_gpus = max(s.gpus for s in spec.sites)
        jobs = data.generated_jobs(spec.gpus, hours, load, seed, site_gpus)
        return jobs, f"gen:{spec.name}:{hours}:{load}:{seed}"
    if source == SOURCES[1]:
        up = st.file_uploader(
            "Job file (CSV or JSON job format)", type=["csv", "json"], key="pl_upload"
        )
        if up is None:
            st.info("Upload a job file: columns id, arrival [s], duration [s], gpus, workload.")
            return None, ""
        raw = up.getvalue()
        return data.jobs_from_upload(up.name, raw), "up:" + hashlib.sha1(raw).hexdigest()
    path = st.text_input("Job file path (CSV or JSON job format)", "", key="pl_path").strip()
    if not path:
        st.info("Give the path of a job file on the dashboard's machine.")
        return None, ""
    path = str(access.path(path, "job file path"))  # only under the operator's --data-dir
    jobs, digest = data.jobs_from_path(path, spec.gpus, hours)
    return jobs, f"path:{path}:{digest}"


def _settings(s) -> tuple[float, float, str, list[str], str]:
    """The what-if's inputs: replay hours, epoch [s], objective, policies, caps text (checked:
    wrong units or keys raise before anything runs)."""
    known = data.policies()
    c1, c2, c3 = st.columns(3)
    q = st.query_params  # shareable what-ifs: ?page=placement&policies=pack,spread&hours=1
    try:
        hours0 = min(max(float(q.get("hours", 2.0)), 0.25), 168.0)
    except ValueError:
        hours0 = 2.0
    hours = float(c1.number_input("Replay hours", 0.25, 168.0, hours0, 0.25, key="pl_hours"))
    epoch_text = c2.text_input("Epoch (twin step between placements)", "15 min", key="pl_epoch")
    objective = c3.selectbox(
        "Objective of 'twin'", ("energy", "carbon", "cost"), key="pl_objective"
    )
    c4, c5 = st.columns([2, 1])
    wanted = [p for p in str(q.get("policies", "")).split(",") if p in known]
    policies = c4.multiselect(
        "Policies", known, wanted or list(DEFAULT_POLICIES), key="pl_policies"
    )
    caps_text = c5.text_input(
        "Power caps (optional)", "", key="pl_caps", placeholder="rack=130 kW, row=1.3 MW"
    )
    epoch_s = data.parse_epoch(epoch_text, s.step_s)
    data.parse_caps_text(caps_text)  # wrong units or keys: a message before anything runs
    return hours, epoch_s, objective, policies, caps_text


def _show_results(results: dict, table: pd.DataFrame) -> None:
    """The comparison table and charts, the least-energy policy and the plan downloads."""
    st.subheader("Comparison")
    st.dataframe(table, width="stretch")
    c1, c2, c3 = st.columns(3)
    c1.altair_chart(bar(table, "energy_kwh", "Energy [kWh]"), width="stretch")
    c2.altair_chart(bar(table, "carbon_kg", "Carbon [kg CO2]"), width="stretch")
    c3.altair_chart(bar(table, "max_gpu_temperature_c", "Hottest GPU [degC]"), width="stretch")
    st.altair_chart(power_trend(results), width="stretch")
    best = table.energy_kwh.idxmin()
    st.success(
        f"Least energy: {best} ({table.energy_kwh[best]:,.1f} kWh, carbon "
        f"{table.carbon_kg[best]:,.1f} kg, hottest GPU {table.max_gpu_temperature_c[best]:.1f} °C)."
    )
    st.subheader("Download the plan")
    pick = st.selectbox("Policy", list(results), index=list(results).index(best), key="pl_pick")
    d1, d2 = st.columns(2)
    d1.download_button(
        f"Plan of '{pick}' (CSV: job, site, racks:GPUs, start)",
        data.plan_csv(results[pick]),
        file_name=f"plan-{pick}.csv",
        mime="text/csv",
        key="pl_download",
    )
    d2.download_button(
        "Summaries of all policies (JSON)",
        json.dumps({k: r.summary for k, r in results.items()}, indent=1, default=float),
        file_name="placement-summaries.json",
        mime="application/json",
        key="pl_download_json",
    )


def render(ctx) -> None:
    s = ctx.settings
    spec = data.load_spec(s.facility)
    st.header(f"Placement what-if — {spec.name}")
    st.caption(
        "Every policy sees the same jobs, the same twin and the same start; jobs are placed at "
        "arrival and the twin is stepped in epochs (twin.placement.compare). 'twin' co-optimizes "
        "placement and cooling setpoints through the differentiable twin."
    )
    source = st.radio("Job set", SOURCES, horizontal=True, key="pl_source")
    hours, epoch_s, objective, policies, caps_text = _settings(s)
    jobs, key = _jobs(source, spec, hours, ctx.access)
    if jobs is None:
        return
    st.caption(
        f"{len(jobs):,} jobs, {jobs.gpu_seconds / 3600:,.0f} GPU-hours requested "
        f"(source: {jobs.meta.get('source', '?')})."
    )
    if not policies:
        st.warning("Choose at least one policy.")
        return
    request = (
        s.facility,
        s.step_s,
        s.start,
        key,
        hours,
        tuple(policies),
        epoch_s,
        caps_text,
        objective,
    )
    if st.button("Run the optimizer", type="primary", key="pl_run"):
        st.session_state["pl_request"] = request
    if st.session_state.get("pl_request") != request:
        st.info("Press 'Run the optimizer' to replay the jobs under each policy.")
        return
    results, table = data.placement_results(
        s.facility,
        s.step_s,
        s.start,
        key,
        jobs,
        hours,
        tuple(policies),
        epoch_s,
        caps_text,
        objective,
    )
    _show_results(results, table)
