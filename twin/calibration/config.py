"""Setup of a calibration: the parameter vector, the model structures, options and priors."""

from __future__ import annotations

import dataclasses

from twin.units import ZERO_CELSIUS_K

#: Parameter vector of one GPU, in order.
PARAMS: tuple[str, ...] = (
    "log_resistance",  # ln R_f [K/W]
    "log_capacitance",  # ln C [J/K]
    "temp_intercept",  # T_in + sensor offset [degC]
    "init_fast",  # initial fast-branch deviation from steady state [K]
    "log_resistance_slow",  # ln R_s [K/W]
    "log_tau_slow",  # ln tau_s [s]
    "init_slow",  # initial slow-branch deviation [K]
    "beta",  # conductance growth with temperature rise [1/K]
)
NP = len(PARAMS)
#: Active parameters of each model structure.
MODELS: dict[str, tuple[int, ...]] = {
    "M1": (0, 1, 2, 3),
    "M2": (0, 1, 2, 3, 4, 5, 6),
    "M3": (0, 1, 2, 3, 4, 5, 6, 7),
}
QUANT_VAR = 1.0 / 12.0  # variance of 1 degC rounding [K^2]
Z95 = 1.959964  # two-sided 95 % quantile of the standard normal


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Options of :func:`calibrate`; defaults documented in docs/calibration.md."""

    train_fraction: float = 0.6
    dt: float = 1.0  # grid step [s]
    gap_s: float = 5.0  # no reading for longer than this: gap [s]
    iterations: int = 30  # Levenberg-Marquardt iterations per structure
    chunk: int = 512  # GPUs per vectorized block
    inlet_prior_sd: float = 3.0  # [K], around the spec's TCS supply temperature
    log_prior_sd: float = 3.0  # weak prior on log-parameters
    beta_prior_sd: float = 0.02  # [1/K]
    models: tuple[str, ...] = ("M1", "M2", "M3")
    hac_lags: int = 30  # lags of the residual-only Newey-West factor (a diagnostic) [steps]
    hac_block_s: float = 120.0  # Bartlett bandwidth of the sandwich covariance [s]
    screen_acf10: float = 0.3  # M1 residual autocorrelation at 10 s that calls for M2/M3
    screen_rmse_ratio: float = 1.5  # ... or M1 RMSE above this multiple of the reading noise
    bic_margin: float = 0.0  # a richer structure must lower the BIC by this much
    beta_starts: tuple[float, ...] = (
        0.0,
        0.01,
        0.02,
    )  # multi-start: the cost is multimodal in beta
    min_power_range_w: float = 20.0  # excitation: p95 - p5 of training power at least this
    min_power_range_rel: float = 0.05  # ... and this share of the mean power
    max_rel_se: float = 0.5  # a parameter known worse than this is reported unidentifiable
    peer_excess_k: float = 5.0  # anomaly: steady temperature differs from peers by >= 5 K
    # ... and by >= 3.5 robust standard deviations of the peers: the modified z-score rule of
    # Iglewicz & Hoaglin (1993), docs/calibration.md [8]
    peer_z_threshold: float = 3.5
    peer_scale_floor_k: float = 1.0  # robust scale floor: the 1 degC readout
    # peer anomalies (twin.calibration.anomaly): a peer group needs this many others (fewer on
    # a loop: the fleet); the median of 3 already outvotes one odd peer
    min_peers: int = 3
    # window of the peer comparison [s]: three die time constants (R C ~ 0.03 K/W x 300 J/K),
    # and its mean of ~30 dithered 1 degC readings resolves the level to a fraction of a step
    anomaly_window_s: float = 30.0
    # ... and near steady state: the mean readings of its two halves differ by less than one
    # readout step [K] (a window with a power step or a slow warm-up in it is left out)
    anomaly_steady_k: float = 1.0
    # a GPU is compared once it has this many windows (their median tolerates two spoiled ones)
    anomaly_min_windows: int = 5
    min_train_obs: int = 30
    envelope_window_s: float = 30.0  # operating point: power averaged over this window [s]
    envelope_margin_w: float = 20.0  # trained power envelope: p0.5-p99.5 widened by this ...
    envelope_margin_rel: float = 0.1  # ... or this share of its width, whichever is larger
    # spec check (twin.calibration.spec_check): readings at load are those at >= this share of
    # TDP; the data contradict the spec where the apparent resistance leaves the spec's cited
    # range or the mean residual at load exceeds this [K]
    spec_check_load_fraction: float = 0.5
    spec_check_residual_k: float = 5.0


@dataclasses.dataclass(frozen=True)
class Priors:
    """Prior means (in parameter space) from the facility spec."""

    resistance: float  # [K/W]
    capacitance: float  # [J/K]
    temp_inlet_c: float  # [degC]
    slowdown_c: float  # [degC]
    power_limit: float  # [W]
    leakage_at_reference: float  # [W]

    @classmethod
    def from_spec(cls, spec: object) -> Priors:
        """The first site's GPU and TCS supply temperature of a :class:`twin.spec.FacilitySpec`."""
        site = spec.sites[0]  # type: ignore[attr-defined]
        g = site.building.rack.gpu
        return cls(
            resistance=float(g.resistance_junction_coolant),
            capacitance=float(g.heat_capacity),
            temp_inlet_c=float(site.tcs_supply_temperature - ZERO_CELSIUS_K),
            slowdown_c=float(g.max_operating_temperature - ZERO_CELSIUS_K),
            power_limit=float(g.power_limit),
            leakage_at_reference=float(g.leakage_at_reference),
        )
