"""Physical constants shared by every layer (SI units).

The one place that defines them: physics, sensors and twin import from here.

References: BIPM, *The International System of Units (SI)*, 9th ed. (2019): the kelvin and the
degree Celsius; CODATA 2018 / ISO 80000-3 for standard gravity.
"""

#: 0 °C in kelvin [K]: T[K] = t[°C] + 273.15 (SI Brochure, 9th ed., 2.3.1).
ZERO_CELSIUS_K = 273.15

#: Standard acceleration of gravity g_n [m/s²] (CGPM 1901, ISO 80000-3).
STANDARD_GRAVITY = 9.80665
