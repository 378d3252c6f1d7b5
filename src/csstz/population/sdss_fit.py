"""The real SDSS galaxies shipped with kcorrect and their NMF template fits.

kcorrect (Blanton & Roweis 2007) ships 10,000 real SDSS main-sample galaxies
(``kcorrect/data/test/gst_tests_small.fits``: ugriz MODELFLUX in nanomaggies,
MODELFLUX_IVAR, Galactic EXTINCTION in mag, spectroscopic Z) and its 5-component
NMF template basis (``kcorrect/data/templates/kcorrect-default-v4.fits``), whose
components carry nebular emission lines. This module reads the photometry,
builds kcorrect's own fitter, and loads the precomputed coefficients that the
package ships (``data/sdss_nmf_coeffs.ecsv``, made by
``scripts/fit_sdss_coefficients.py``), so that nothing is fitted at run time.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FileFormatError

if TYPE_CHECKING:
    from astropy.table import Table
    from kcorrect.kcorrect import KcorrectSDSS

#: SDSS bands, in the order of the MODELFLUX arrays.
SDSS_BANDS = ("u", "g", "r", "i", "z")
#: Calibration error floor [mag] added in quadrature to the SDSS errors; the
#: values kcorrect's documentation uses for SDSS ugriz fits (Blanton & Roweis 2007).
ERR_FLOOR_MAG = (0.05, 0.02, 0.02, 0.02, 0.03)
#: Packaged coefficient table.
COEFF_FILE = "sdss_nmf_coeffs.ecsv"


def kcorrect_dir() -> str:
    """Directory of the installed kcorrect package (found without importing it: its import
    pulls in matplotlib and takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("kcorrect")
    if spec is None or spec.origin is None:
        raise FileFormatError("kcorrect", "the kcorrect package is not installed")
    return os.path.dirname(spec.origin)


def read_templates(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """kcorrect's NMF basis: rest wavelength [A] (W,) and templates (5, W) in erg/s/cm^2/A at 10 pc.

    Reads the FITS table the way ``kcorrect.template.Template`` does (first row of
    the FLUX HDU, columns wave and flux).
    """
    from astropy.io import fits

    path = path or template_path()
    try:
        with fits.open(path) as hdul:
            row = hdul["FLUX"].data[0]
            wave = np.asarray(row["wave"], np.float64).ravel()
            flux = np.asarray(row["flux"], np.float64).reshape(-1, wave.size)
    except (OSError, KeyError) as exc:
        raise FileFormatError(path, f"not a kcorrect template file ({exc})") from None
    return wave, flux


def rest_frame_projections() -> dict:
    """Rest-frame SDSS maggies at 10 pc of each template, per unit coefficient.

    Returns
    -------
    dict
        ``sdss_u0``, ``sdss_r0`` -> ndarray (5,). Computed with
        ``kcorrect.response.Response.project`` by the fit script and stored in the
        coefficient file's header (keys PROJ_SDSS_U0, PROJ_SDSS_R0).
    """
    meta = load_coefficients().meta
    try:
        return {b: np.asarray(meta[f"PROJ_{b.upper()}"], np.float64) for b in ("sdss_u0", "sdss_r0")}
    except KeyError as exc:
        raise FileFormatError(COEFF_FILE, f"header lacks {exc}; rerun scripts/fit_sdss_coefficients.py") from None


def template_path() -> str:
    """Path of kcorrect's default v4 NMF basis (5 templates)."""
    return os.path.join(kcorrect_dir(), "data", "templates", "kcorrect-default-v4.fits")


def sdss_sample_path() -> str:
    """Path of the 10,000 real SDSS galaxies shipped with kcorrect."""
    return os.path.join(kcorrect_dir(), "data", "test", "gst_tests_small.fits")


def load_sdss_photometry(path: str | None = None) -> dict:
    """Extinction-corrected SDSS ugriz photometry of kcorrect's test sample.

    Returns
    -------
    dict
        ``RA``, ``DEC`` (N,) deg; ``Z`` (N,); ``MAGGIES``, ``IVAR`` (N, 5): SDSS-system
        maggies (MODELFLUX * 1e-9 * 10**(0.4 EXTINCTION)) and their inverse variance with
        :data:`ERR_FLOOR_MAG` added in quadrature (0 where the band is unmeasured);
        ``MAGGIES_AB``, ``IVAR_AB``: the same converted to AB with kcorrect's SDSS offsets;
        ``NBAND`` (N,): number of bands with ivar > 0.

    Raises
    ------
    FileFormatError
        The file lacks one of the columns.
    """
    import kcorrect.utils
    from astropy.io import fits

    path = path or sdss_sample_path()
    data = fits.getdata(path, 1)
    for col in ("RA", "DEC", "Z", "MODELFLUX", "MODELFLUX_IVAR", "EXTINCTION"):
        if col not in data.columns.names:
            raise FileFormatError(path, f"column {col} missing")
    ext_mag = np.asarray(data["EXTINCTION"], np.float64)
    corr = 10.0 ** (0.4 * ext_mag)
    maggies = np.asarray(data["MODELFLUX"], np.float64) * 1e-9 * corr  # nanomaggies -> maggies
    ivar_raw = np.asarray(data["MODELFLUX_IVAR"], np.float64) * 1e18 / corr**2
    good = ivar_raw > 0
    sig2 = np.where(good, 1.0 / np.where(good, ivar_raw, 1.0), 0.0)
    floor = 0.4 * np.log(10.0) * np.asarray(ERR_FLOOR_MAG)[None, :] * np.abs(maggies)
    ivar = np.where(good, 1.0 / (sig2 + floor**2), 0.0)
    m_ab, iv_ab = kcorrect.utils.sdss_ab_correct(maggies=maggies.astype(np.float32), ivar=ivar.astype(np.float32))
    return {
        "RA": np.asarray(data["RA"], np.float64),
        "DEC": np.asarray(data["DEC"], np.float64),
        "Z": np.asarray(data["Z"], np.float64),
        "MAGGIES": maggies.astype(np.float32),
        "IVAR": ivar.astype(np.float32),
        "MAGGIES_AB": np.asarray(m_ab, np.float64),
        "IVAR_AB": np.asarray(iv_ab, np.float64),
        "NBAND": good.sum(axis=1),
    }


def make_fitter(zmax: float = 0.6, nredshift: int = 600) -> KcorrectSDSS:
    """kcorrect's own fitter for SDSS ugriz on the default v4 basis.

    Parameters
    ----------
    zmax : float
        Upper end of its redshift grid (the sample has z < 0.59).
    nredshift : int
        Points of its grid (kcorrect's default is 4000 over 0-2; 600 over 0-0.6 is
        the same spacing as 2000 over 0-2).

    Returns
    -------
    kcorrect.kcorrect.KcorrectSDSS
        A ``Kcorrect`` with responses sdss_u0..sdss_z0 and SDSS->AB conversion.
    """
    import kcorrect.kcorrect

    return kcorrect.kcorrect.KcorrectSDSS(redshift_range=[0.0, float(zmax)], nredshift=int(nredshift))


def fit_chi2(maggies_ab: np.ndarray, ivar_ab: np.ndarray, model_ab: np.ndarray) -> np.ndarray:
    """Chi-square of model maggies against data, summed over bands, shape (N,)."""
    return np.sum((np.asarray(model_ab, np.float64) - maggies_ab) ** 2 * ivar_ab, axis=1)


@lru_cache(maxsize=2)
def load_coefficients(path: str | None = None) -> Table:
    """The packaged NMF coefficients of the 10,000 SDSS galaxies.

    Returns
    -------
    astropy.table.Table
        SDSS_INDEX, RA, DEC, Z, COEFF (N, 5) [coefficient units of kcorrect: observed
        AB maggies at Z = A(Z) . COEFF], CHI2, NBAND.

    Raises
    ------
    FileFormatError
        The file is missing or lacks a column.
    """
    from astropy.table import Table

    if path is None:
        ref = resources.files("csstz.population") / "data" / COEFF_FILE
        path = str(ref)
    if not os.path.isfile(path):
        raise FileFormatError(path, "coefficient table not found (run scripts/fit_sdss_coefficients.py)")
    tab = Table.read(path, format="ascii.ecsv")
    for col in ("SDSS_INDEX", "Z", "COEFF"):
        if col not in tab.colnames:
            raise FileFormatError(path, f"column {col} missing")
    return tab


__all__ = [
    "SDSS_BANDS",
    "ERR_FLOOR_MAG",
    "load_sdss_photometry",
    "make_fitter",
    "fit_chi2",
    "load_coefficients",
    "template_path",
    "sdss_sample_path",
    "read_templates",
    "rest_frame_projections",
]
