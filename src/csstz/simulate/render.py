"""Render a galaxy's achromatic image (Sersic profile x Gaussian PSF) with GalSim.

The stamp is drawn at the detector pixel scale, integrated over each pixel
(GalSim ``method='auto'``), centred on the centre of its middle pixel. The
dispersion step (:mod:`csstz.simulate.disperse`) shifts it to every
wavelength's sub-pixel position in Fourier space; that is exact because the
PSF-convolved, pixel-integrated profile is band-limited: the 0.3" Gaussian PSF
(sigma = 1.72 px) is down by exp(-sigma^2 pi^2 / 2) ~ 5e-7 at the Nyquist
frequency.

Speed: :func:`render_stamp` performs GalSim's FFT drawing itself (GalSim's
k-space values of the sheared Sersic times the cached k-space image of PSF x
pixel, one inverse FFT, the central stamp cut out) instead of calling
``drawImage``. The FFT grid is the smaller of GalSim's own choice and the
smallest fast length that keeps every periodic copy of the truncated galaxy
(plus 8 PSF sigma) off the stamp; with the latter nothing wraps onto the
stamp, so it is as accurate as GalSim's. Big galaxies (truncated at 5
half-light radii, far beyond the 97-pixel stamp) need a 2-3x smaller grid than
GalSim picks. The inverse FFT runs in single precision (1e-7 of the peak).
tests/test_render.py checks the stamps against
``drawImage(method='auto')`` to 1e-4 of the peak (measured:
2e-5, GalSim's own k-value accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import galsim
import numpy as np
from scipy import fft as sp_fft

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

    @cached_property
    def profile_y(self) -> np.ndarray:
        """Cross-dispersion profile: the image summed along x, shape (ny,) (computed once)."""
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
def _psf(fwhm_arcsec: float) -> galsim.Gaussian:
    return galsim.Gaussian(fwhm=fwhm_arcsec, gsparams=_GSPARAMS)


@lru_cache(maxsize=256)
def _unit_sersic(n: float, trunc_hlr: float) -> galsim.Sersic:
    """Sersic of half-light radius 1 arcsec truncated at ``trunc_hlr``, flux 1 (cached per n)."""
    prof = galsim.Sersic(n=n, half_light_radius=1.0, trunc=trunc_hlr, flux=1.0, gsparams=_GSPARAMS)
    prof.maxk, prof.stepk  # computed once here, inherited (scaled) by every dilation
    return prof


def _galaxy(hlr_arcsec: float, sersic_n: float, ba: float, pa_deg: float, instrument: Instrument) -> galsim.GSObject:
    """The sheared, flux-1 Sersic galaxy before the PSF (hlr_arcsec > 0); see :func:`galaxy_profile`."""
    n = round_sersic_n(sersic_n, instrument.sersic_n_step)
    # a unit-radius profile cached per n, dilated: GalSim then reuses its maxk/stepk instead of
    # re-solving the truncated profile for every radius (6-7 ms per galaxy otherwise)
    # SHAPE_R is the half-light radius along the MAJOR axis (LS DR9 / Tractor convention). GalSim's shear
    # conserves area (a -> r / sqrt(q), b -> r sqrt(q)), so shrink by sqrt(q) first: a = r, b = q r.
    q = float(ba)
    gal = _unit_sersic(n, instrument.sersic_truncation_hlr).dilate(float(hlr_arcsec) * math.sqrt(q))
    if q < 1.0:
        gal = gal.shear(q=q, beta=float(pa_deg) * galsim.degrees)
    return gal


def galaxy_profile(
    hlr_arcsec: float, sersic_n: float, ba: float, pa_deg: float, instrument: Instrument
) -> galsim.GSObject:
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
    gal = _galaxy(hlr_arcsec, sersic_n, ba, pa_deg, instrument)
    return galsim.Convolve(gal, psf, gsparams=_GSPARAMS)


@lru_cache(maxsize=8)
def _pixel(scale_arcsec: float) -> galsim.Pixel:
    return galsim.Pixel(scale_arcsec, gsparams=_GSPARAMS)


#: Margin kept between the stamp and the periodic copies of the truncated galaxy, in PSF sigma
#: (the Gaussian PSF is down by exp(-8^2 / 2) ~ 1e-14 there).
_WRAP_MARGIN_SIGMA = 8.0


#: The own FFT drawing is used only where the Gaussian PSF's transform at the pixel Nyquist frequency is below
#: this (5e-7 for the 0.3" PSF at 0.074"/px); otherwise render_stamp calls GalSim's drawImage.
_BAND_LIMIT = 1e-5


def _k_bounds(n_fft: int) -> galsim.BoundsI:
    return galsim.BoundsI(0, n_fft // 2, -(n_fft // 2), n_fft // 2)


@lru_cache(maxsize=64)
def _psf_pixel_k(fwhm_arcsec: float, scale_arcsec: float, n_fft: int) -> np.ndarray:
    """GalSim's k-space image of PSF x pixel on the half-plane grid of an ``n_fft`` FFT (real, cached)."""
    kim = galsim.ImageCD(bounds=_k_bounds(n_fft), scale=2.0 * math.pi / (n_fft * scale_arcsec))
    galsim.Convolve(_psf(fwhm_arcsec), _pixel(scale_arcsec), gsparams=_GSPARAMS)._drawKImage(kim)
    return np.ascontiguousarray(kim.array.real)


def _galsim_fft_size(stepk_world: float, half: int, scale_arcsec: float) -> int:
    """The FFT size ``drawImage(method='auto')`` uses for a (2 half + 1)^2 image (GalSim's rule)."""
    # drawImage works in pixel units and convolves by a unit pixel; Convolve adds 1/stepk^2
    stepk_pix = stepk_world / (1.0 / scale_arcsec)
    stepk_pix = (stepk_pix**-2 + _pixel(1.0).stepk ** -2) ** -0.5
    n = int(math.ceil(2.0 * math.pi / stepk_pix * (1.0 - 1.0e-12)))
    n = 2 * ((n + 1) // 2)
    n = galsim.Image.good_fft_size(max(n, 2 * half + 1))
    return int(max(n, _GSPARAMS.minimum_fft_size))


def _no_wrap_fft_size(extent_pix: float, half: int, psf_sigma_pix: float) -> int:
    """Smallest even fast FFT length whose periodic copies of the source stay off the stamp."""
    need = int(math.ceil(half + extent_pix + _WRAP_MARGIN_SIGMA * psf_sigma_pix + 1.0))
    n = int(sp_fft.next_fast_len(need, real=True))
    while n % 2:
        n = int(sp_fft.next_fast_len(n + 1, real=True))
    return n


def render_stamp(hlr_arcsec: float, sersic_n: float, ba: float, pa_deg: float, instrument: Instrument) -> Stamp:
    """Draw the flux-1 PSF-convolved galaxy at the detector pixel scale.

    The same image as GalSim's ``galaxy_profile(...).drawImage(nx=ny=2 half + 1, method='auto')`` (to 2e-5 of
    the peak, GalSim's k-value accuracy), computed with a smaller FFT where GalSim's would be larger than needed
    (module docstring).

    Returns
    -------
    Stamp
        The pixel-integrated profile image, centred on its middle pixel.
    """
    half = stamp_half_size_pix(hlr_arcsec, instrument)
    scale = float(instrument.pixel_scale_arcsec)
    fwhm = float(instrument.psf_fwhm_arcsec)
    psf = _psf(fwhm)
    psf_sigma_pix = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / scale
    if math.exp(-0.5 * (math.pi * psf_sigma_pix) ** 2) > _BAND_LIMIT:
        # the PSF does not band-limit the image at the pixel scale (a PSF not much wider than a pixel): the
        # smaller grid would fold the ringing differently; leave that case to drawImage itself
        return render_stamp_galsim(hlr_arcsec, sersic_n, ba, pa_deg, instrument)
    gal = None
    extent_pix = 0.0
    stepk = psf.stepk
    if hlr_arcsec > 0:
        gal = _galaxy(hlr_arcsec, sersic_n, ba, pa_deg, instrument)
        # the major axis is the half-light radius r (see _galaxy): the truncation radius is trunc * r there and
        # less in every other direction
        extent_pix = instrument.sersic_truncation_hlr * float(hlr_arcsec) / scale
        stepk = (gal.stepk**-2 + psf.stepk**-2) ** -0.5  # galsim.Convolve's rule
    n_fft = min(_galsim_fft_size(stepk, half, scale), _no_wrap_fft_size(extent_pix, half, psf_sigma_pix))
    psf_pix_k = _psf_pixel_k(fwhm, scale, n_fft)
    if gal is None:
        kimg = psf_pix_k.astype(np.complex128)
    else:
        kim = galsim.ImageCD(bounds=_k_bounds(n_fft), scale=2.0 * math.pi / (n_fft * scale))
        gal._drawKImage(kim)
        kimg = kim.array
        kimg *= psf_pix_k
    # rows are ky = -N/2 .. N/2: the two Nyquist rows are one frequency (GalSim's wrap), then FFT order
    kimg[0] += kimg[n_fft]
    kimg = np.fft.ifftshift(kimg[:n_fft], axes=0).astype(np.complex64)  # single precision: 1e-7 of the peak
    img = sp_fft.irfft2(kimg, s=(n_fft, n_fft))  # flux per pixel: k = 0 holds the flux (1)
    idx = np.arange(-half, half + 1) % n_fft
    return Stamp(img[np.ix_(idx, idx)].astype(np.float64), half)


def render_stamp_galsim(hlr_arcsec: float, sersic_n: float, ba: float, pa_deg: float, instrument: Instrument) -> Stamp:
    """Reference: the same stamp from GalSim's ``drawImage(method='auto')`` (slower; used by the tests)."""
    half = stamp_half_size_pix(hlr_arcsec, instrument)
    prof = galaxy_profile(hlr_arcsec, sersic_n, ba, pa_deg, instrument)
    # odd size: the profile centre falls on the centre of pixel (half, half)
    img = prof.drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=instrument.pixel_scale_arcsec, method="auto")
    return Stamp(np.asarray(img.array, dtype=np.float64), half)


__all__ = ["Stamp", "render_stamp", "render_stamp_galsim", "galaxy_profile", "stamp_half_size_pix", "round_sersic_n"]
