"""The template basis of the baseline fit and the CSST line-spread function it is seen through.

* :func:`load_templates`: the kcorrect NMF galaxy basis (Blanton & Roweis 2007,
  AJ 133, 734; ``kcorrect-default-v4.fits`` shipped with the ``kcorrect`` package).
* :func:`lsf_sigma_aa`: the point-source LSF, a Gaussian of sigma = PSF sigma
  [pixels] x dispersion [A/pixel] (``docs/design.md``).
* :func:`galaxy_lsf_sigma_pix`: the LSF broadened by an extended galaxy's light
  profile projected on the dispersion axis.
* :func:`resolution_matrix`: the sparse operator taking a finely sampled spectrum
  to LSF-convolved, pixel-averaged values on a band's pixel grid.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from scipy import sparse

from ..errors import FileFormatError, InputError
from ..instrument import Instrument
from ..schema import SERSIC_RANGE

if TYPE_CHECKING:
    from .._types import ArrayLike

#: Package and path of the kcorrect NMF template basis (Blanton & Roweis 2007, AJ 133, 734).
TEMPLATE_PACKAGE = "kcorrect"
TEMPLATE_RELPATH = ("data", "templates", "kcorrect-default-v4.fits")
#: Fine sub-samples per band pixel used to render the redshifted templates before the LSF.
N_SUB = 4
#: The LSF kernel is cut at this many Gaussian sigmas beyond the pixel box.
LSF_CUT_SIGMA = 5.0


@lru_cache(maxsize=2)
def load_templates(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The kcorrect NMF basis, each template scaled to unit mean flux over 1500-11000 A rest.

    Parameters
    ----------
    path : str, optional
        Template FITS file with HDU ``FLUX`` (columns ``wave`` (W,) and ``flux`` (K, W));
        default: ``kcorrect/data/templates/kcorrect-default-v4.fits`` of the installed package.

    Returns
    -------
    wave_rest_aa : ndarray, shape (W,)
        Rest-frame wavelength [A], increasing.
    flux : ndarray, shape (K, W)
        Rest-frame f_lambda of each template (arbitrary unit; only shapes matter).

    Raises
    ------
    FileFormatError
        Missing file or unexpected layout.
    """
    if path is None:
        path = str(resources.files(TEMPLATE_PACKAGE).joinpath(*TEMPLATE_RELPATH))
    try:
        with fits.open(path) as hdul:
            data = hdul["FLUX"].data
            wave = np.asarray(data["wave"][0], np.float64).ravel()
            flux = np.asarray(data["flux"][0], np.float64)
    except (OSError, KeyError) as exc:
        raise FileFormatError(str(path), f"not a kcorrect template file ({exc})") from None
    flux = flux.reshape(-1, wave.size)
    if not (np.all(np.diff(wave) > 0) and np.all(np.isfinite(flux))):
        raise FileFormatError(str(path), "template wavelengths must increase and fluxes be finite")
    sel = (wave > 1500.0) & (wave < 11000.0)
    return wave, flux / flux[:, sel].mean(axis=1, keepdims=True)


def lsf_sigma_aa(instrument: Instrument, band: str) -> float:
    """Gaussian sigma of the point-source line-spread function in band ``band`` [A].

    PSF sigma in pixels (FWHM 0.3" / 2.355 / 0.074"/px = 1.72 px, arXiv:2407.13991
    sec. 2.1) times the band's dispersion [A/pixel] (instrument file).
    """
    return instrument.psf_sigma_pix * instrument.band(band).dispersion_aa_per_pix


def _norm_cdf(x: ArrayLike) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)


def resolution_matrix(wave_aa: np.ndarray, sigma_aa: float) -> tuple[np.ndarray, sparse.csr_matrix]:
    """Fine grid and the sparse matrix taking a spectrum sampled on it to pixel values.

    Pixel value = mean over the pixel (width from the pixel-centre spacing) of the
    spectrum convolved with a Gaussian of sigma ``sigma_aa``; the combined kernel
    ``[Phi((x + w/2)/s) - Phi((x - w/2)/s)] / w`` is exact for that convolution.

    Returns
    -------
    fine_aa : ndarray, shape (F,)
        Uniform fine grid [A] (step = smallest pixel width / N_SUB).
    R : csr_matrix, shape (F, P)
        Weights (each column sums to 1).
    """
    width = np.gradient(wave_aa)
    step = float(width.min()) / N_SUB
    reach = 0.5 * float(width.max()) + LSF_CUT_SIGMA * sigma_aa
    n_lo = int(math.ceil(reach / step)) + 1
    fine = wave_aa[0] + step * np.arange(-n_lo, int(math.ceil((wave_aa[-1] - wave_aa[0] + reach) / step)) + 2)
    half = int(math.ceil(reach / step))
    rows, cols, vals = [], [], []
    for p, (centre, w) in enumerate(zip(wave_aa, width)):
        j0 = int(round((centre - fine[0]) / step))
        j = np.arange(j0 - half - 1, j0 + half + 2)
        x = fine[j] - centre
        k = _norm_cdf((x + 0.5 * w) / sigma_aa) - _norm_cdf((x - 0.5 * w) / sigma_aa)
        k /= k.sum()
        rows.append(j)
        cols.append(np.full(j.size, p))
        vals.append(k)
    R = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(fine.size, wave_aa.size)
    )
    return fine, R


@lru_cache(maxsize=4)
def sersic_width_factor_table(truncation_hlr: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-equivalent sigma of a Sersic profile projected on one axis, in half-light radii.

    For a circular Sersic profile of half-light radius 1, truncated at ``truncation_hlr``
    (as rendered by the simulator, instrument ``rendering.sersic_truncation_hlr``), the
    light projected on the dispersion axis has an interquartile range IQR; the returned
    factor is IQR / 1.349 (the sigma of a Gaussian with the same IQR). Computed
    numerically on a 1201 x 1201 grid.

    Returns
    -------
    n : ndarray, shape (M,)
        Sersic indices over :data:`csstz.schema.SERSIC_RANGE`.
    factor : ndarray, shape (M,)
    """
    from scipy.special import gammaincinv

    n_grid = np.array([SERSIC_RANGE[0], 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, SERSIC_RANGE[1]])
    x = np.linspace(-truncation_hlr, truncation_hlr, 1201)
    r = np.hypot(x[:, None], x[None, :])
    out = []
    for n in n_grid:
        b_n = gammaincinv(2.0 * n, 0.5)  # I(r) = exp(-b_n r^(1/n)) encloses half the light at r = 1
        img = np.where(r <= truncation_hlr, np.exp(-b_n * r ** (1.0 / n)), 0.0)
        cdf = np.cumsum(img.sum(axis=0))
        cdf /= cdf[-1]
        q1, q3 = np.interp([0.25, 0.75], cdf, x)
        out.append((q3 - q1) / 1.349)
    return n_grid, np.array(out)


def galaxy_lsf_sigma_pix(
    instrument: Instrument, shape_r_arcsec: ArrayLike, sersic: ArrayLike, ba: ArrayLike, pa_deg: ArrayLike
) -> np.ndarray:
    """Gaussian-equivalent line-spread sigma of extended galaxies [pixels].

    sigma^2 = sigma_PSF^2 + (r_e * p * k(n) / pixel scale)^2, with r_e = SHAPE_R (half-light
    radius of the major axis) [arcsec], p = sqrt(cos^2 PA + (b/a)^2 sin^2 PA) the projection of
    the ellipse on the dispersion axis (PA from that axis), and k(n) from
    :func:`sersic_width_factor_table` (0.83 for n = 1, 0.63 for n = 4). SHAPE_R = 0 is a point source.

    Parameters
    ----------
    shape_r_arcsec, sersic, ba, pa_deg : array_like, shape (N,)

    Returns
    -------
    ndarray, shape (N,)
    """
    r = np.asarray(shape_r_arcsec, np.float64)
    n = np.asarray(sersic, np.float64)
    q = np.asarray(ba, np.float64)
    pa = np.deg2rad(np.asarray(pa_deg, np.float64))
    for name, v in (("SHAPE_R", r), ("SERSIC", n), ("BA", q), ("PA", pa)):
        if v.shape != r.shape or not np.all(np.isfinite(v)):
            raise InputError(name, "must be finite and one value per source")
    if np.any(r < 0) or np.any((q <= 0) | (q > 1)):
        raise InputError("SHAPE_R/BA", "need SHAPE_R >= 0 and 0 < BA <= 1")
    n_grid, k = sersic_width_factor_table(float(instrument.sersic_truncation_hlr))
    proj = np.sqrt(np.cos(pa) ** 2 + (q * np.sin(pa)) ** 2)
    sig_gal = r * proj * np.interp(n, n_grid, k) / instrument.pixel_scale_arcsec
    return np.sqrt(instrument.psf_sigma_pix**2 + sig_gal**2)


__all__ = [
    "load_templates",
    "lsf_sigma_aa",
    "resolution_matrix",
    "sersic_width_factor_table",
    "galaxy_lsf_sigma_pix",
    "TEMPLATE_PACKAGE",
    "TEMPLATE_RELPATH",
    "N_SUB",
    "LSF_CUT_SIGMA",
]
