"""Closed-form solutions the staining solver is validated against.

Sources:
- Crank, *The Mathematics of Diffusion*, 2nd ed. (1975), eq. 2.45: constant surface
  concentration into a semi-infinite medium, ``c/c0 = erfc(x / (2 sqrt(D t)))``.
- Danckwerts, Trans. Faraday Soc. 46, 300 (1950) (also Crank 1975, eq. 14.7):
  the same with a first-order reaction ``-k c``.
- Steady state of diffusion with a first-order sink in a slab with a no-flux
  back face: ``c/c0 = cosh(m (L - x)) / cosh(m L)``, ``m = sqrt(k / D)`` (the
  Thiele-modulus profile, e.g. Crank 1975, section 14.2).
- Crank 1975, eq. 4.17: a plane sheet ``-l < X < l`` whose faces are held at ``c0``,
  ``c/c0 = 1 - (4/pi) sum_n (-1)^n / (2n+1) exp(-(2n+1)^2 pi^2 D t / (4 l^2)) cos((2n+1) pi X / (2 l))``
  (the two-face staining geometry without binding; ``x = 1 - X/l`` from a face).
- Well-mixed Langmuir binding (the thin-section limit):
  ``b/S = theta (1 - exp(-(k_on c0 + k_off) t))``, ``theta = c0 / (c0 + k_off/k_on)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfc

ArrayLike = np.ndarray | float


def erfc_profile(x: ArrayLike, t: float, diffusivity: float) -> np.ndarray:
    """Pure diffusion from a face held at ``c0`` into a semi-infinite medium, ``c/c0``."""
    return erfc(np.asarray(x, dtype=float) / (2.0 * np.sqrt(diffusivity * t)))


def danckwerts_profile(x: ArrayLike, t: float, diffusivity: float, rate: float) -> np.ndarray:
    """Diffusion with first-order consumption ``-rate c`` into a semi-infinite medium, ``c/c0``."""
    x = np.asarray(x, dtype=float)
    m = np.sqrt(rate / diffusivity)
    s = x / (2.0 * np.sqrt(diffusivity * t))
    r = np.sqrt(rate * t)
    # written with exp(-x m) factored in and erfc scaled to avoid overflow of exp(+x m)
    a = 0.5 * np.exp(-x * m) * erfc(s - r)
    b = 0.5 * np.exp(np.minimum(x * m - (s + r) ** 2, 700.0)) * _erfcx(s + r)
    return a + b


def _erfcx(z: np.ndarray) -> np.ndarray:
    from scipy.special import erfcx

    return erfcx(z)


def steady_first_order_profile(x: ArrayLike, length: float, diffusivity: float, rate: float) -> np.ndarray:
    """Steady diffusion with first-order sink in ``[0, length]``, ``c(0) = c0``, no flux at ``length``."""
    x = np.asarray(x, dtype=float)
    m = np.sqrt(rate / diffusivity)
    return np.cosh(m * (length - x)) / np.cosh(m * length)


def langmuir_bound_fraction(t_s: ArrayLike, c0_m: float, k_on_per_m_s: float, k_off_per_s: float) -> np.ndarray:
    """Fraction of sites bound under constant free concentration ``c0`` (well mixed)."""
    k_obs = k_on_per_m_s * c0_m + k_off_per_s
    theta = k_on_per_m_s * c0_m / k_obs
    return theta * (1.0 - np.exp(-k_obs * np.asarray(t_s, dtype=float)))


def slab_profile(x: ArrayLike, tau: float, *, terms: int = 200) -> np.ndarray:
    """Crank 1975 eq. 4.17 on the scaled slab: ``c/c0`` at depth ``x`` (0 = face, 1 = mid-plane)
    after dimensionless time ``tau = D t / l^2``, faces at ``c0`` from ``tau = 0``."""
    mid = 1.0 - np.asarray(x, dtype=float)  # distance from the mid-plane
    k = 2 * np.arange(terms)[:, None] + 1
    sign = np.where(np.arange(terms) % 2 == 0, 1.0, -1.0)[:, None]
    series = np.sum(sign / k * np.exp(-(k**2) * np.pi**2 * tau / 4.0) * np.cos(k * np.pi * mid[None, :] / 2.0), axis=0)
    return 1.0 - 4.0 / np.pi * series
