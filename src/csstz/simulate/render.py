"""Render a galaxy's achromatic image (Sersic profile x Gaussian PSF) with GalSim.

The stamp is drawn at the detector pixel scale, integrated over each pixel
(GalSim ``method='auto'``), centred on the centre of its middle pixel. The
dispersion step (:mod:`csstz.simulate.disperse`) shifts it to every
wavelength's sub-pixel position in Fourier space; that is exact because the
PSF-convolved, pixel-integrated profile is band-limited: the 0.3" Gaussian PSF
(sigma = 1.72 px) is down by exp(-sigma^2 pi^2 / 2) ~ 5e-7 at the Nyquist
frequency.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import galsim
import numpy as np

from ..instrument import Instrument

#: GalSim accuracy settings: defaults, but a larger FFT allowance for large
#: high-n galaxies (their stamps are capped by ``stamp_max_half_pix`` anyway).
_GSPARAMS = galsim.GSParams(maximum_fft_size=16384)


@dataclass(frozen=True)
class Stamp:
    """A rendered, flux-normalised profile image.

    Attributes
    ----------
    image : ndarray, shape (2*half+1, 2*half+1)
        Fraction of the source's flux in each pixel; sums to the fraction
        inside the stamp (<= 1). Rows are y (cross-dispersion), columns x
        (dispersion); the source centre is the centre of pixel (half, half).
    half : int
        Half size in detector pixels.
    """

    image: np.ndarray
    half: int

    @property
    def profile_y(self) -> np.ndarray:
        """Cross-dispersion profile: the image summed along x, shape (ny,)."""
        return self.image.sum(axis=1)


def stamp_half_size_pix(hlr_arcsec: float, instrument: Instrument) -> int:
    """Half size of the stamp in detector pixels for a half-light radius.

    3 half-light radii plus 2 PSF FWHM, clipped to the instrument's
    ``stamp_min_half_pix`` .. ``stamp_max_half_pix``. Light beyond the stamp is
    not drawn; extraction uses the same flux-normalised profile, so the
    extracted flux stays unbiased.
    """
    ext_arcsec = 3.0 * float(hlr_arcsec) + 2.0 * instrument.psf_fwhm_arcsec
    half = int(math.ceil(ext_arcsec / instrument.pixel_scale_arcsec))
    return int(min(max(half, instrument.stamp_min_half_pix), instrument.stamp_max_half_pix))


def round_sersic_n(n: float, step: float) -> float:
    """Sersic index on the grid of ``step`` (GalSim caches its tables per n)."""
    return float(min(max(round(round(float(n) / step) * step, 6), 0.3), 6.2))


@lru_cache(maxsize=8)
def _psf(fwhm_arcsec: float):
    return galsim.Gaussian(fwhm=fwhm_arcsec, gsparams=_GSPARAMS)


@lru_cache(maxsize=256)
def _unit_sersic(n: float, trunc_hlr: float):
    """Sersic of half-light radius 1 arcsec truncated at ``trunc_hlr``, flux 1 (cached per n)."""
    prof = galsim.Sersic(n=n, half_light_radius=1.0, trunc=trunc_hlr, flux=1.0, gsparams=_GSPARAMS)
    prof.maxk, prof.stepk  # computed once here, inherited (scaled) by every dilation
    return prof


def galaxy_profile(hlr_arcsec: float, sersic_n: float, ba: float, pa_deg: float, instrument: Instrument):
    """GalSim object of the PSF-convolved galaxy, flux 1.

    Parameters
    ----------
    hlr_arcsec : float
        Half-light radius along the major axis [arcsec] (the LS DR9 SHAPE_R convention);
        0 means a point source.
    sersic_n : float
        Sersic index (rounded to ``instrument.sersic_n_step``).
    ba : float
        Axis ratio b/a in (0, 1].
    pa_deg : float
        Angle of the major axis from the dispersion (x) axis, counter-clockwise [deg].
    """
    psf = _psf(instrument.psf_fwhm_arcsec)
    if hlr_arcsec <= 0:
        return psf
    n = round_sersic_n(sersic_n, instrument.sersic_n_step)
    # a unit-radius profile cached per n, dilated: GalSim then reuses its maxk/stepk instead of
    # re-solving the truncated profile for every radius (6-7 ms per galaxy otherwise)
    # SHAPE_R is the half-light radius along the MAJOR axis (LS DR9 / Tractor convention). GalSim's shear
    # conserves area (a -> r / sqrt(q), b -> r sqrt(q)), so shrink by sqrt(q) first: a = r, b = q r.
    q = float(ba)
    gal = _unit_sersic(n, instrument.sersic_truncation_hlr).dilate(float(hlr_arcsec) * math.sqrt(q))
    if q < 1.0:
        gal = gal.shear(q=q, beta=float(pa_deg) * galsim.degrees)
    return galsim.Convolve(gal, psf, gsparams=_GSPARAMS)


def render_stamp(hlr_arcsec: float, sersic_n: float, ba: float, pa_deg: float, instrument: Instrument) -> Stamp:
    """Draw the flux-1 PSF-convolved galaxy at the detector pixel scale.

    Returns
    -------
    Stamp
        The pixel-integrated profile image, centred on its middle pixel.
    """
    half = stamp_half_size_pix(hlr_arcsec, instrument)
    prof = galaxy_profile(hlr_arcsec, sersic_n, ba, pa_deg, instrument)
    # odd size: the profile centre falls on the centre of pixel (half, half)
    img = prof.drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=instrument.pixel_scale_arcsec, method="auto")
    return Stamp(np.asarray(img.array, dtype=np.float64), half)


__all__ = ["Stamp", "render_stamp", "galaxy_profile", "stamp_half_size_pix", "round_sersic_n"]
