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
    one_minus = 1.0 - cr
    balanced = jnp.abs(one_minus) < 1e-9
    safe = jnp.where(balanced, 0.5, one_minus)
    e = jnp.exp(-ntu * safe)
    eps_general = (1.0 - e) / (1.0 - (1.0 - safe) * e)
    # First-order expansion about C_r = 1 keeps the value and its derivative exact there.
    eps_balanced = ntu / (1.0 + ntu) + one_minus * ntu**2 / (2.0 * (1.0 + ntu) ** 2)
    return jnp.where(balanced, eps_balanced, eps_general)


def ntu_counterflow(effectiveness, capacity_ratio):
    r"""Inverse of :func:`effectiveness_counterflow`: NTU for a given ε [-] ([1]_ Eq. 11.30a).

    .. math:: N = \frac{1}{C_r - 1}\ln\frac{\varepsilon - 1}{\varepsilon C_r - 1},
              \qquad N = \frac{\varepsilon}{1-\varepsilon}\ \text{for}\ C_r = 1
    """
    eps = jnp.asarray(effectiveness)
    cr = jnp.asarray(capacity_ratio)
    balanced = jnp.abs(1.0 - cr) < 1e-9
    safe = jnp.where(balanced, 0.5, cr)
    ntu_general = jnp.log((eps - 1.0) / (eps * safe - 1.0)) / (safe - 1.0)
    return jnp.where(balanced, eps / (1.0 - eps), ntu_general)


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
