"""GPU page: measured vs twin-predicted die temperature with its band, the calibrated
parameters with their uncertainty, and anomaly flags (:mod:`twin.calibration`)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps import data


def temperature_chart(
    series: pd.DataFrame, forecast: pd.DataFrame, horizon_s: float
) -> alt.LayerChart:
    """Measured readings, the calibrated prediction (95 % band: parameters + reading noise)
    and the live filter's forecasts made ``horizon_s`` earlier (±2 sigma error bars)."""
    base = alt.Chart(series).encode(x=alt.X("time:T", title=None))
    band = base.mark_area(opacity=0.2, color="#e45756").encode(
        y=alt.Y("low_c:Q", title="die temperature [°C]", scale=alt.Scale(zero=False)),
        y2="high_c:Q",
    )
    pred = base.mark_line(color="#e45756", strokeWidth=1.2).encode(y="predicted_c:Q")
    meas = base.mark_circle(size=9, color="#4c78a8").encode(
        y="measured_c:Q",
        tooltip=["time:T", "measured_c:Q", alt.Tooltip("predicted_c:Q", format=".2f")],
    )
    fc = forecast.assign(
        lo=forecast.forecast_c - 2 * forecast.sd_k, hi=forecast.forecast_c + 2 * forecast.sd_k
    )
    fbase = alt.Chart(fc).encode(x="time:T")
    bars = fbase.mark_errorbar(color="#2ca02c", thickness=2).encode(y="lo:Q", y2="hi:Q")
    pts = fbase.mark_point(color="#2ca02c", filled=True, size=40).encode(
        y="forecast_c:Q",
        tooltip=[
            "time:T",
            alt.Tooltip("forecast_c:Q", format=".2f"),
            alt.Tooltip("sd_k:Q", format=".3f"),
        ],
    )
    return (band + pred + meas + bars + pts).properties(
        height=300,
        title=(
            "Measured (blue dots); calibrated prediction from power (red line, ±2 σ); "
            f"{horizon_s:g}-s-ahead forecasts of the live filter (green, ±2 σ)"
        ),
    )


def render(ctx) -> None:
    fit = data.gpu_fit(ctx.telemetry, ctx.settings.facility)
    params = fit.result.params
    summary = fit.result.summary
    st.header("GPUs — calibrated twin vs measurement")
    st.caption(
        f"Telemetry: {fit.source}. {summary['n_gpus']} GPUs calibrated (twin.calibration); the "
        f"first {100 * summary['train_fraction']:.0f} % of the record is fitted, the rest "
        "predicted from the measured power alone."
    )
    flagged = data.gpu_anomalies(fit)  # the one detector: as twin calibrate and twin watch
    m = st.columns(4)
    m[0].metric("GPUs", f"{summary['n_gpus']}")
    m[1].metric("Held-out RMSE", f"{summary['holdout_rmse_k']:.3f} K")
    m[2].metric("CV(RMSE)", f"{summary['cv_rmse']:.4f}")
    m[3].metric("Anomalies", f"{len(flagged)}")
    if len(flagged):
        for gpu, row in flagged.iterrows():
            st.error(f"Anomaly — {gpu}: {row.reason}")
    else:
        st.success("No GPU reads hotter than its peers at equal power.")
    gpus = [str(g) for g in params.gpu.values]
    default = gpus.index(flagged.index[0]) if len(flagged) else 0
    gpu = st.selectbox("GPU", gpus, index=default, key="gpu_pick")
    series = data.gpu_series(fit, gpu)
    fc = fit.forecast[fit.forecast.gpu == gpu]
    st.altair_chart(temperature_chart(series, fc, data.FORECAST_S), width="stretch")
    flags = [
        f
        for f in fit.flags
        if f.get("gpu") == gpu or f.get("loop") == str(params.host.sel(gpu=gpu).values)
    ]
    st.markdown(f"**Live filter flags of {gpu}** (twin.estimate, end of the record)")
    if flags:
        st.dataframe(pd.DataFrame(flags), width="stretch")
    else:
        st.success("The live filter raises no flag for this GPU or its loop.")
    left, right = st.columns([3, 2])
    with left:
        st.subheader(f"Calibrated parameters of {gpu}")
        st.dataframe(data.gpu_parameters(params, gpu), width="stretch")
        why = str(params["unidentifiable_reason"].sel(gpu=gpu).values)
        if why:
            st.warning(f"Not identified: {why}")
    with right:
        st.subheader("Fit")
        p = params.sel(gpu=gpu)
        st.metric("Model structure", str(p["model"].values))
        st.metric("Held-out RMSE of this GPU", f"{float(p['holdout_rmse']):.3f} K")
        st.metric("Anomaly", "yes" if gpu in flagged.index else "no")
    st.subheader("All GPUs")
    table = params[
        [
            "host",
            "resistance",
            "resistance_se",
            "capacitance",
            "capacitance_se",
            "holdout_rmse",
            "anomaly",
        ]
    ].to_dataframe()
    st.dataframe(table, width="stretch")
