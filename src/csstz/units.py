"""Canonical internal units and physical constants (CGS, Angstrom).

Internally csstz works in plain floats with the unit in the variable name:
wavelengths in Angstrom (``*_aa``), flux densities in 1e-17 erg/s/cm^2/A
(``*_flam17``, the DESI unit), times in seconds, areas in cm^2, counts in
electrons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._types import ArrayLike

#: Planck constant [erg s] (CODATA 2018, exact).
H_ERG_S = 6.62607015e-27
#: Speed of light [Angstrom / s] (exact).
C_AA_PER_S = 2.99792458e18
#: The DESI flux-density unit [erg/s/cm^2/A].
FLAM17 = 1e-17
#: AB zero point: f_nu = 10**(-0.4 (m + 48.60)) erg/s/cm^2/Hz (Oke & Gunn 1983).
AB_ZEROPOINT = 48.60


def abmag_to_flam17(mag_ab: ArrayLike, wave_aa: ArrayLike) -> np.ndarray:
    """Flux density of a flat-f_nu source of AB magnitude ``mag_ab``.

    Parameters
    ----------
    mag_ab : float or array
        AB magnitude.
    wave_aa : array, shape (L,)
        Wavelength [A].

    Returns
    -------
    array, shape (L,)
        f_lambda in 1e-17 erg/s/cm^2/A.
    """
    fnu = 10.0 ** (-0.4 * (np.asarray(mag_ab, float) + AB_ZEROPOINT))
    return fnu * C_AA_PER_S / np.asarray(wave_aa, float) ** 2 / FLAM17


def photon_energy_erg(wave_aa: ArrayLike) -> np.ndarray:
    """Energy of a photon of wavelength ``wave_aa`` [A], in erg."""
    return H_ERG_S * C_AA_PER_S / np.asarray(wave_aa, float)
