"""Detector noise: Poisson on source + sky + dark, Gaussian read noise, per exposure.

The observation is ``n_exposures`` exposures of ``exptime_s`` each, summed,
with the known sky and dark subtracted. Two modes:

* ``"each"``: every exposure drawn separately (Poisson of source + sky + dark
  for that exposure, read noise added, counts clipped at the full well), then
  summed. Literal, and needed where a pixel can saturate.
* ``"summed"`` (default): a sum of independent Poisson variables is Poisson
  with the summed mean, and a sum of Gaussians is Gaussian, so one draw of
  Poisson(lambda) + N(0, n_exp * read_noise^2), lambda the expected
  electrons of all exposures, has exactly the distribution of the summed
  exposures. Pixels whose per-exposure expectation exceeds the full well are
  clipped at n_exp * full well.

  Speed (the noise was ~40% of the simulator's cost): where lambda >=
  ``gauss_above_e`` (default :data:`GAUSS_ABOVE_E`, 100 e-) the pixel is drawn
  from the Gaussian of the same mean and variance, N(lambda, lambda +
  n_exp * read_noise^2), one normal draw instead of a Poisson and a normal;
  below it the Poisson draw is exact. Mean and variance are exact everywhere;
  only the third cumulant differs (lambda vs 0). With the default 4 x 5 e-
  read noise the largest difference between the two cumulative distributions
  of a pixel (Kolmogorov distance, computed exactly by convolving the Poisson
  pmf with the read-noise Gaussian) is 0.0024 at lambda = 100 e- and at most
  0.0026 for any lambda (at lambda ~ 200 e-, where the skewness of the exact
  sum, lambda / (lambda + 100)^1.5, peaks at 0.039); an extracted pixel sums
  ~10 rows, which divides the skewness by ~3 again. Sky + dark alone are
  23 / 140 / 209 e- per pixel in GU / GV / GI, so GU stays exact Poisson and
  GV, GI are Gaussian. ``gauss_above_e=None`` gives the exact Poisson draw
  everywhere (tests/test_simulate.py checks the threshold's effect). The exact
  draws come from :func:`csstz.simulate.poisson.poisson` (alias tables, exact
  to double precision, ~2x faster than numpy's sampler).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..instrument import Band, Instrument
from .poisson import poisson

NOISE_MODES = ("summed", "each")

#: Expected electrons per pixel (all exposures) from which the "summed" mode draws the Gaussian of the same
#: mean and variance instead of Poisson + read noise; see the module docstring for the effect on the noise
#: distribution (Kolmogorov distance <= 0.0026 per pixel with 4 x 5 e- read noise).
GAUSS_ABOVE_E = 100.0


def background_e(band: Band, instrument: Instrument) -> float:
    """Sky + dark electrons per pixel summed over all exposures."""
    return (band.sky_e_per_s_per_pix + instrument.dark_e_per_s) * instrument.total_exptime_s


def background_variance_e2(band: Band, instrument: Instrument) -> float:
    """Variance per pixel without the source: sky + dark + read noise of every exposure [e-^2]."""
    return background_e(band, instrument) + instrument.n_exposures * instrument.read_noise_e**2


def add_noise(
    expected_src_e: np.ndarray,
    band: Band,
    instrument: Instrument,
    rng: np.random.Generator,
    mode: str = "summed",
    gauss_above_e: float | None = GAUSS_ABOVE_E,
) -> np.ndarray:
    """A noisy, sky- and dark-subtracted realisation of a 2D image.

    Parameters
    ----------
    expected_src_e : ndarray, shape (ny, nx)
        Expected source electrons per pixel, all exposures together (>= 0).
    rng : numpy.random.Generator
    mode : {"summed", "each"}
    gauss_above_e : float or None
        ``"summed"`` only: expected electrons (source + sky + dark, all
        exposures) from which a pixel is drawn from the Gaussian of the same
        mean and variance; None draws exact Poisson everywhere.

    Returns
    -------
    ndarray, shape (ny, nx)
        Electrons, summed over exposures, minus the expected sky and dark
        (float32 in the ``"summed"`` mode: ~1e-3 e- resolution against >= 10 e-
        of noise; float64 in ``"each"``).
    """
    if mode not in NOISE_MODES:
        raise InputError("noise_mode", "unknown noise mode", value=mode, allowed=", ".join(NOISE_MODES))
    n_exp = instrument.n_exposures
    bkg = background_e(band, instrument)
    full_well = instrument.saturation_e
    if mode == "summed":
        return _summed(expected_src_e, bkg, n_exp, full_well, instrument.read_noise_e, rng, gauss_above_e)
    mean_per_exp = (expected_src_e + bkg) / n_exp
    counts = np.zeros_like(expected_src_e, dtype=np.float64)
    for _ in range(n_exp):
        one = rng.poisson(mean_per_exp).astype(np.float64)
        np.minimum(one, full_well, out=one)
        one += rng.normal(0.0, instrument.read_noise_e, size=one.shape)
        counts += one
    # The pipeline works in electrons; the gain (1 e-/ADU in the CSST simulation settings) would only add
    # ADU quantisation, which is negligible next to 5 e- read noise and is not modelled.
    return counts - bkg


def _summed(
    src_e: np.ndarray,
    bkg_e: float,
    n_exp: int,
    full_well_e: float,
    read_noise_e: float,
    rng: np.random.Generator,
    gauss_above_e: float | None,
) -> np.ndarray:
    """The ``"summed"`` mode (module docstring), in float32 where only the noise is drawn."""
    src = np.asarray(src_e, dtype=np.float32)
    cap_src = np.float32(full_well_e * n_exp - bkg_e)  # lambda is clipped at n_exp * full well
    if src.size and src.max() > cap_src:
        src = np.minimum(src, cap_src)
    var_rn = n_exp * read_noise_e**2
    # one standard normal per pixel, always drawn first, so the stream does not depend on the split below
    z = rng.standard_normal(src.shape, dtype=np.float32)
    thresh = math.inf if gauss_above_e is None else float(gauss_above_e)
    low = None
    n_low = 0
    if thresh - bkg_e > 0:  # else no pixel (src >= 0) can be below the threshold
        low = src < np.float32(thresh - bkg_e)
        n_low = int(np.count_nonzero(low))
    if n_low == src.size:  # all exact: Poisson + read noise - background
        z *= np.float32(math.sqrt(var_rn))
        z += poisson(src.astype(np.float64) + bkg_e, rng) - bkg_e
        return z
    # Gaussian of the same mean and variance: lambda + sqrt(lambda + sigma_rn^2) z, minus the background
    out = src + np.float32(bkg_e + var_rn)
    np.sqrt(out, out=out)
    out *= z
    out += src
    if n_low:
        lam_low = src[low].astype(np.float64) + bkg_e
        out[low] = (poisson(lam_low, rng) - bkg_e) + math.sqrt(var_rn) * z[low]
    return out
