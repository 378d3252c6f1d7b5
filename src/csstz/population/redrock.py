"""SEDs from Redrock templates times a redshift catalogue's COEFF.

A Redrock template file (e.g. DESI's ``rrtemplate-galaxy.fits``) holds in HDU
``BASIS_VECTORS`` (or the primary HDU) an image of shape (nbasis, nwave): the
rest-frame basis, on the grid ``CRVAL1 + CDELT1 * i`` [A] (``10**(...)`` when the
header has ``LOGLAM`` true). Redrock's model of an observed spectrum at
redshift z is ``sum_k COEFF_k B_k(lambda / (1+z))`` directly in the data's flux
unit (1e-17 erg/s/cm^2/A for DESI and BOSS); the first ``nbasis`` entries of
COEFF are used (catalogues pad COEFF to 10 entries with zeros).

The model is averaged over each pixel of the output grid (integral of the
basis between pixel edges, as Redrock resamples), so narrow lines keep their
flux. Outside the basis's rest range the nearest basis value is held constant
(only at z < 0.06, red end of GI): a documented approximation.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FileFormatError, InputError
from .embedded import sed_wave_aa

if TYPE_CHECKING:
    from .._types import ArrayLike


@lru_cache(maxsize=4)
def read_redrock_templates(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Rest wavelength [A] (W,) and basis vectors (nbasis, W) of a Redrock template file.

    Raises
    ------
    FileFormatError
        Not a FITS file, or no 2D basis image with a wavelength header.
    """
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            hdu = hdul["BASIS_VECTORS"] if "BASIS_VECTORS" in hdul else hdul[0]
            data = hdu.data
            hdr = hdu.header
            if data is None or data.ndim != 2:
                raise FileFormatError(path, "no 2D BASIS_VECTORS image")
            if "CRVAL1" not in hdr or "CDELT1" not in hdr:
                raise FileFormatError(path, "BASIS_VECTORS header lacks CRVAL1/CDELT1")
            basis = np.asarray(data, np.float64)
            wave = hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(basis.shape[1], dtype=np.float64)
            if hdr.get("LOGLAM", False):
                wave = 10.0**wave
    except OSError as exc:
        raise FileFormatError(path, f"not a readable FITS file ({exc})") from None
    if not np.all(np.isfinite(basis)):
        raise FileFormatError(path, "basis vectors contain non-finite values")
    return wave, basis


@lru_cache(maxsize=4)
def _cumulative(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    wave, basis = read_redrock_templates(path)
    # cumulative trapezoid integral of each basis vector [flux * A]
    seg = 0.5 * (basis[:, 1:] + basis[:, :-1]) * np.diff(wave)[None, :]
    cum = np.concatenate([np.zeros((basis.shape[0], 1)), np.cumsum(seg, axis=1)], axis=1)
    return wave, basis, cum


def redrock_sed_flam17(
    template_path: str, z: ArrayLike, coeff: ArrayLike, wave_aa: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Observed-frame Redrock model spectra.

    Parameters
    ----------
    template_path : str
        Redrock template FITS.
    z : array, shape (N,)
        Redshifts.
    coeff : array, shape (N, ncoeff)
        Redrock COEFF (ncoeff >= nbasis; extra entries ignored).
    wave_aa : array, shape (L,), optional
        Output grid [A] (default: :func:`csstz.population.embedded.sed_wave_aa`).

    Returns
    -------
    wave_aa : ndarray, shape (L,)
    flux_flam17 : ndarray, shape (N, L)
        Pixel-averaged model [1e-17 erg/s/cm^2/A].

    Raises
    ------
    InputError
        COEFF has fewer entries than the basis, or z/COEFF are not finite.
    """
    rest, basis, cum = _cumulative(str(template_path))
    nb = basis.shape[0]
    z = np.atleast_1d(np.asarray(z, np.float64))
    coeff = np.atleast_2d(np.asarray(coeff, np.float64))
    if coeff.shape[0] != z.shape[0] or coeff.shape[1] < nb:
        raise InputError("COEFF", f"shape {coeff.shape} does not fit {z.shape[0]} sources x {nb} basis vectors")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(coeff[:, :nb]))):
        raise InputError("COEFF", "non-finite redshift or coefficient")
    wave = sed_wave_aa() if wave_aa is None else np.asarray(wave_aa, np.float64)
    edges = np.concatenate(
        [[wave[0] - 0.5 * (wave[1] - wave[0])], 0.5 * (wave[1:] + wave[:-1]), [wave[-1] + 0.5 * (wave[-1] - wave[-2])]]
    )
    out = np.empty((len(z), len(wave)))
    lo_r, hi_r = rest[0], rest[-1]
    for i, (zi, ci) in enumerate(zip(z, coeff[:, :nb])):
        e = edges / (1.0 + zi)
        ec = np.clip(e, lo_r, hi_r)
        width = np.diff(e)
        integ = np.stack([np.interp(ec, rest, cum[k]) for k in range(nb)])  # (nb, L+1)
        avg = np.diff(integ, axis=1) / width[None, :]
        # parts of a pixel outside the basis: hold the edge value
        below = np.clip(np.minimum(e[1:], lo_r) - e[:-1], 0.0, None) / width
        above = np.clip(e[1:] - np.maximum(e[:-1], hi_r), 0.0, None) / width
        avg += below[None, :] * basis[:, :1] + above[None, :] * basis[:, -1:]
        out[i] = ci @ avg
    return wave, out


__all__ = ["read_redrock_templates", "redrock_sed_flam17"]
