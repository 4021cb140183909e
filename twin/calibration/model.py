r"""The calibration's thermal model of a GPU, its predicted readings and likelihood.

Model (per GPU, on a grid of ``dt`` seconds; see docs/calibration.md for the derivation)
-------------------------------------------------------------------------------------------
The die temperature reading is the loop inlet temperature plus the rise of a two-branch Foster
network driven by the measured package power (which already contains leakage):

.. math::
   T_k = T_{in} + x_{f,k} + x_{s,k},\qquad
   x_{k} = a\,x_{k-1} + (1-a)\,R\,h_k\,P_k,\quad a = e^{-\Delta t/(\tau h_k)},\quad
   h_k = \frac{1}{1 + \beta\,(x_{f,k-1}+x_{s,k-1})}

for the fast branch (:math:`R_f`, :math:`\tau_f = R_f C`: die, lid, cold-plate base, the water in
the plate) and the slow branch (:math:`R_s`, :math:`\tau_s`: coolant / sink heating up).  Each
step is the exact exponential update of ``physics.gpu.first_order_rise_step`` for power held at
its 1 s average :math:`P_k` over the step, with ``physics.gpu.conductance_curvature_factor``: the
functions the facility model's GPU step runs (its die node and its sink node).  :math:`\beta` lets the conductance grow with the
temperature rise (flow or fan control, temperature-dependent film coefficients).  Three nested
structures are fitted and chosen per GPU by the Bayesian information criterion with an effective
sample size (residuals are autocorrelated):

* ``M1``: :math:`R, C, T_{in}` and the initial state (the lumped node of ``physics.gpu``);
* ``M2``: M1 plus the slow branch :math:`R_s, \tau_s` and its initial state;
* ``M3``: M2 plus :math:`\beta`.

Observation model: readings are instantaneous, irregular, 1 °C quantized: the prediction is
interpolated to each reading's time inside its grid cell and compared with variance
:math:`\sigma^2 + 1/12` K² (Sheppard's correction for rounding [1]_).  The loop inlet has a prior from
the facility spec (TCS supply temperature, ±``inlet_prior_sd``); log-parameters have weak
priors (a factor ~20) that only matter where the data say nothing.

The model structures are chosen in :mod:`twin.calibration.fit`, the solver is in
:mod:`twin.calibration.solver`.

References
----------
.. [1] W. F. Sheppard, "On the calculation of the most probable values of frequency
   constants...", Proc. London Math. Soc. 29 (1898): variance of rounding, 1/12 of the step².
.. [2] Physics references of this project, ``shared/refs/physics-references.md`` sections 1, 6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from physics import gpu


def simulate_rise(theta: jax.Array, power: jax.Array, dt: float) -> jax.Array:
    """Temperature rise above the intercept at each grid time [K] (``power`` (N,) [W])."""
    r_f = jnp.exp(theta[0])
    cap = jnp.exp(theta[1])
    r_s = jnp.exp(theta[4])
    tau_s = jnp.exp(theta[5])
    beta = theta[7]
    p0 = power[0]
    r_t = r_f + r_s
    disc = jnp.maximum(1.0 + 4.0 * beta * r_t * p0, 0.04)
    rise0 = 2.0 * r_t * p0 / (1.0 + jnp.sqrt(disc))
    h0 = 1.0 / jnp.maximum(1.0 + beta * rise0, 0.2)
    xf0 = r_f * h0 * p0 + theta[3]
    xs0 = r_s * h0 * p0 + theta[6]

    def step(carry, p):
        xf, xs = carry
        h = gpu.conductance_curvature_factor(xf + xs, beta)
        xf = gpu.first_order_rise_step(xf, p, r_f * h, r_f * cap * h, dt)
        xs = gpu.first_order_rise_step(xs, p, r_s * h, tau_s * h, dt)
        return (xf, xs), xf + xs

    _, rise = jax.lax.scan(step, (xf0, xs0), power[1:])
    return jnp.concatenate([(xf0 + xs0)[None], rise])


def predict_readings(theta: jax.Array, power: jax.Array, frac: jax.Array, dt: float) -> jax.Array:
    """Predicted reading in each grid cell [degC], interpolated at the readings' mean time."""
    s = simulate_rise(theta, power, dt)
    prev = jnp.concatenate([s[:1], s[:-1]])
    return theta[2] + (1.0 - frac) * prev + frac * s


def standardized_residuals(theta, power, y, frac, w, sigma, mu, prec, dt):
    """Data residuals in units of ``sigma`` (zero where ``w`` is 0), then the prior rows."""
    pred = predict_readings(theta, power, frac, dt)
    r_data = jnp.where(w > 0, (pred - jnp.where(w > 0, y, 0.0)) / sigma, 0.0)
    r_prior = (theta - mu) * jnp.sqrt(prec)
    return jnp.concatenate([r_data, r_prior])


def negative_log_likelihood(
    theta: jax.Array,
    power: jax.Array,
    y: jax.Array,
    frac: jax.Array,
    w: jax.Array,
    sigma: float,
    mu: jax.Array,
    prec: jax.Array,
    dt: float = 1.0,
) -> jax.Array:
    """Negative log posterior of one GPU (Gaussian readings with variance ``sigma**2``, priors).

    ``w`` (N,) is 1 where a reading is used.  Constant terms are dropped.
    """
    r = standardized_residuals(theta, power, y, frac, w, sigma, mu, prec, dt)
    return 0.5 * jnp.sum(r * r)


@jax.jit
def _predict_batch_dt1(theta, power, frac):
    """:func:`predict_readings` of many GPUs on the 1 s grid (compiled once)."""
    return jax.vmap(predict_readings, in_axes=(0, 0, 0, None))(theta, power, frac, 1.0)


def predict_batch(theta, power, frac, dt):
    """Predicted readings of many GPUs (``theta`` (G, NP), ``power`` (G, N))."""
    if dt == 1.0:
        return _predict_batch_dt1(theta, power, frac)
    return jax.vmap(predict_readings, in_axes=(0, 0, 0, None))(theta, power, frac, dt)
