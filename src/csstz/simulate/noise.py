"""Detector noise: Poisson on source + sky + dark, Gaussian read noise, per exposure.

The observation is ``n_exposures`` exposures of ``exptime_s`` each, summed,
with the known sky and dark subtracted. Two equivalent modes:

* ``"each"``: every exposure drawn separately (Poisson of source + sky + dark
  for that exposure, read noise added, counts clipped at the full well), then
  summed. Literal, and needed where a pixel can saturate.
* ``"summed"`` (default): a sum of independent Poisson variables is Poisson
  with the summed mean, and a sum of Gaussians is Gaussian, so one draw of
  Poisson(total) + N(0, sqrt(n_exp) * read_noise) has exactly the same
  distribution as the summed exposures. Pixels whose per-exposure expectation
  exceeds the full well are clipped at n_exp * full well.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..instrument import Band, Instrument

NOISE_MODES = ("summed", "each")


def background_e(band: Band, instrument: Instrument) -> float:
    """Sky + dark electrons per pixel summed over all exposures."""
    return (band.sky_e_per_s_per_pix + instrument.dark_e_per_s) * instrument.total_exptime_s


def background_variance_e2(band: Band, instrument: Instrument) -> float:
    """Variance per pixel without the source: sky + dark + read noise of every exposure [e-^2]."""
    return background_e(band, instrument) + instrument.n_exposures * instrument.read_noise_e ** 2


def add_noise(expected_src_e: np.ndarray, band: Band, instrument: Instrument, rng: np.random.Generator,
              mode: str = "summed") -> np.ndarray:
    """A noisy, sky- and dark-subtracted realisation of a 2D image.

    Parameters
    ----------
    expected_src_e : ndarray, shape (ny, nx)
        Expected source electrons per pixel, all exposures together (>= 0).
    rng : numpy.random.Generator
    mode : {"summed", "each"}

    Returns
    -------
    ndarray, shape (ny, nx), float64
        Electrons, summed over exposures, minus the expected sky and dark.
    """
    if mode not in NOISE_MODES:
        raise InputError("noise_mode", "unknown noise mode", value=mode, allowed=", ".join(NOISE_MODES))
    n_exp = instrument.n_exposures
    bkg = background_e(band, instrument)
    mean_per_exp = (expected_src_e + bkg) / n_exp
    full_well = instrument.saturation_e
    if mode == "summed":
        counts = rng.poisson(np.minimum(mean_per_exp, full_well) * n_exp).astype(np.float64)
        counts += rng.normal(0.0, np.sqrt(n_exp) * instrument.read_noise_e, size=counts.shape)
    else:
        counts = np.zeros_like(expected_src_e, dtype=np.float64)
        for _ in range(n_exp):
            one = rng.poisson(mean_per_exp).astype(np.float64)
            np.minimum(one, full_well, out=one)
            one += rng.normal(0.0, instrument.read_noise_e, size=one.shape)
            counts += one
    # The pipeline works in electrons; the gain (1 e-/ADU in the CSST simulation settings) would only add
    # ADU quantisation, which is negligible next to 5 e- read noise and is not modelled.
    return counts - bkg
