r"""Effectiveness-NTU relations for the heat exchangers of the loop.

References
----------
.. [1] F. P. Incropera, D. P. DeWitt, T. L. Bergman, A. S. Lavine, *Fundamentals of Heat and
   Mass Transfer*, 6th ed., Wiley, 2007, Table 11.3 (ε-NTU relations) and Table 11.4.
"""

from __future__ import annotations

import jax.numpy as jnp


def effectiveness_counterflow(ntu, capacity_ratio):
    r"""Effectiveness of a counterflow exchanger [-] ([1]_ Eq. 11.29a).

    .. math:: \varepsilon = \frac{1 - e^{-N(1-C_r)}}{1 - C_r e^{-N(1-C_r)}},\qquad
              \varepsilon = \frac{N}{1+N}\ \text{for}\ C_r = 1

    Parameters
    ----------
    ntu : number of transfer units UA/C_min [-]
    capacity_ratio : C_r = C_min/C_max [-], in [0, 1]
    """
    ntu = jnp.asarray(ntu)
    cr = jnp.asarray(capacity_ratio)
    delta = 1.0 - cr
    # Written as ε = a / (a + δ e^{-Nδ}), a = 1 - e^{-Nδ} (expm1), which stays accurate as
    # C_r → 1; the limit N/(1+N) (with its first-order term) is used only for |δ| < 1e-12.
    balanced = jnp.abs(delta) < 1e-12
    safe = jnp.where(balanced, 0.5, delta)
    a = -jnp.expm1(-ntu * safe)
    eps_general = a / (a + safe * jnp.exp(-ntu * safe))
    eps_balanced = ntu / (1.0 + ntu) + delta * ntu**2 / (2.0 * (1.0 + ntu) ** 2)
    return jnp.where(balanced, eps_balanced, eps_general)


def ntu_counterflow(effectiveness, capacity_ratio):
    r"""Inverse of :func:`effectiveness_counterflow`: NTU for a given ε [-] ([1]_ Eq. 11.30a).

    .. math:: N = \frac{1}{C_r - 1}\ln\frac{\varepsilon - 1}{\varepsilon C_r - 1},
              \qquad N = \frac{\varepsilon}{1-\varepsilon}\ \text{for}\ C_r = 1
    """
    eps = jnp.asarray(effectiveness)
    cr = jnp.asarray(capacity_ratio)
    delta = 1.0 - cr
    # ln((ε-1)/(εC_r-1))/(C_r-1) = ln1p(εδ/(1-ε))/δ: accurate as δ → 0.
    balanced = jnp.abs(delta) < 1e-12
    safe = jnp.where(balanced, 0.5, delta)
    ntu_general = jnp.log1p(eps * safe / (1.0 - eps)) / safe
    n0 = eps / (1.0 - eps)
    return jnp.where(balanced, n0 - delta * n0**2 / 2.0, ntu_general)


def effectiveness_isothermal_wall(ntu):
    r"""Effectiveness of a stream heated by a wall at uniform temperature (C_r = 0) [-].

    .. math:: \varepsilon = 1 - e^{-N}

    This is the cold-plate limit ([1]_ Eq. 11.35a): the copper base is nearly isothermal, so
    the heat into the coolant is :math:`Q = \varepsilon\,\dot m c_p (T_{wall} - T_{in})`.
    """
    return 1.0 - jnp.exp(-jnp.asarray(ntu))


def heat_transfer_rate(effectiveness, capacity_rate_min, temp_hot_in, temp_cold_in):
    r"""Heat flow from hot to cold stream [W]: :math:`Q = \varepsilon C_{min}(T_{h,i} - T_{c,i})`."""
    return effectiveness * capacity_rate_min * (temp_hot_in - temp_cold_in)
