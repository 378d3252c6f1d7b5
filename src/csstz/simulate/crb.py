"""Cramer-Rao bound on redshift from a galaxy's noiseless extracted spectrum (``ZERR_CRB``).

Definition (docs/crb.md). With the observed SED shape known and only the
redshift z and an amplitude A free, the model of band pixel p is
``A m_p(z)``, m the noiseless extracted spectrum [1e-17 erg/s/cm^2/A], and the
spectrum's 1-sigma errors sigma_p are those the simulator returns. The Fisher
matrix over (z, A) at A = 1 is::

    F_zz = sum_p (dm_p/dz)^2 / sigma_p^2
    F_zA = sum_p (dm_p/dz) m_p / sigma_p^2
    F_AA = sum_p m_p^2 / sigma_p^2

and the amplitude-marginalised bound is ``sigma_z = 1 / sqrt(F_zz - F_zA^2 / F_AA)``,
in z (not divided by 1 + z). The sum runs over the chosen bands (GV + GI by
default) and over pixels with a finite, positive error.

Redshifting by dz stretches the observed SED: f_lambda at z + dz is
f(lambda / s) with s = (1 + z + dz) / (1 + z), up to a normalisation that A
absorbs, so ``dm/dz = (dm/d ln s) / (1 + z)``.

The fast forward model (:func:`band_models`) is the simulator's own linear
chain written in one dimension: the SED integrated exactly over
:data:`CRB_OVERSAMPLE` sub-bins per pixel, times throughput x lambda, placed at the
sub-bins' sub-pixel positions by a Fourier shift per sub-bin phase, convolved
with the extraction's line-spread function, and divided by the LSF-smoothed
sensitivity (as the simulator calibrates). Its stretch derivative is analytic:
a sub-bin [a, b] holds s (F(b/s) - F(a/s)) of the stretched SED, F the
cumulative integral of f, so ``d/d ln s = (F(b) - F(a)) - (b f(b) - a f(a))``.
Absolute throughput constants (area, exposure time, h c) cancel in the
calibrated spectrum.

The LSF: :func:`extraction_lsf` of the galaxy's rendered stamp, its rows
weighted as the Horne extraction weights them at the band's median flux
(within 1.3% of finite differences through the simulator on 100 galaxies), or,
without a stamp, a Gaussian of
:func:`csstz.templates.basis.galaxy_lsf_sigma_pix` width (a fallback:
0.56-2.6x for extended galaxies). Not modelled: the column-to-column change of
the Horne weights with the flux (docs/crb.md).

This module is torch-free.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from scipy import fft as sp_fft
from scipy import sparse
from scipy.special import ndtr

from ..errors import InputError
from ..instrument import Band, Instrument

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._types import ArrayLike

    #: An extraction LSF: one array for every galaxy, one array per galaxy, or per galaxy a dict band -> array.
    LsfInput: TypeAlias = np.ndarray | dict[str, np.ndarray] | Sequence[np.ndarray | dict[str, np.ndarray]]

#: Default bands of the bound: GV + GI (the bands the estimators read).
CRB_BANDS = ("GV", "GI")
#: Sub-bins per pixel of the bound's forward model: 2 keeps sigma_z within 1% of the simulator's 4
#: (measured on 100 population galaxies: 0.996-1.011; 1 sub-bin: 0.958-1.070) at half the cost.
CRB_OVERSAMPLE = 2
#: The Gaussian LSF kernel is cut at this many sigmas (plus one pixel).
LSF_CUT_SIGMA = 6.0
#: The bound is reported as inf (no redshift information beyond rounding) when the information left
#: after marginalising the amplitude, F_zz - F_zA^2/F_AA, is below this fraction of F_zz (a power law,
#: whose stretch is a pure amplitude change) or of F_AA (a flat f_lambda, whose stretch changes
#: nothing: sigma_z would exceed 1e5 / total SNR).
MIN_INFO_FRACTION = 1e-10


# ------------------------------------------------------------------------------------------------
# line-spread function
# ------------------------------------------------------------------------------------------------
def gaussian_lsf_pix(sigma_pix: float) -> np.ndarray:
    """Pixel-integrated Gaussian LSF sampled at whole-pixel offsets, odd length, sums to 1.

    Parameters
    ----------
    sigma_pix : float
        Gaussian sigma before pixel integration [pixels] (e.g. from
        :func:`csstz.templates.basis.galaxy_lsf_sigma_pix`).
    """
    half = int(np.ceil(LSF_CUT_SIGMA * float(sigma_pix))) + 1
    d = np.arange(-half, half + 1, dtype=np.float64)
    k = ndtr((d + 0.5) / sigma_pix) - ndtr((d - 0.5) / sigma_pix)
    return k / k.sum()


def extraction_lsf(image_rows: np.ndarray, profile_y: np.ndarray, var_bkg_e2: float, flux_e: float = 0.0) -> np.ndarray:
    """LSF of the Horne extraction of a galaxy (in pixels), shape (2h+1,), sums to 1.

    The Horne weight of row y is w_y = P_y / V_y with V_y = B + f P_y, so a spectrum feature
    is spread along x by ``L(x) = sum_y w_y P(x, y) / sum_y w_y P_y``. With ``flux_e = 0``
    (sky-limited) this is ``csstz.simulate.api.effective_lsf``; for bright, large galaxies the
    source term down-weights the core and broadens the LSF (the bound of a 1.7 arcsec n = 4
    galaxy at GI SNR 106 moves by 13%, docs/crb.md).

    Parameters
    ----------
    image_rows : ndarray, shape (ny, 2h+1)
        The stamp's rows used in the extraction (``stamp.image[rows]``).
    profile_y : ndarray, shape (ny,)
        Their cross-dispersion profile (``stamp.profile_y[rows]``).
    var_bkg_e2 : float
        Source-free variance per pixel [e-^2] (``noise.background_variance_e2``).
    flux_e : float
        Typical extracted source electrons per column (e.g. the band's median of the extraction);
        negative values count as 0.
    """
    p = np.asarray(profile_y, np.float64)
    w = p / (float(var_bkg_e2) + max(float(flux_e), 0.0) * p)
    return (w[:, None] * np.asarray(image_rows, np.float64)).sum(axis=0) / float((w * p).sum())


@lru_cache(maxsize=64)
def _band_tables(band: Band, pad: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-bin edges [A], relative sensitivity (T lambda) at sub-bin and column centres, for a padded band."""
    disp = band.dispersion_aa_per_pix
    width = band.n_pix + 2 * pad
    edges_x = -0.5 + np.arange(width * k + 1) / k  # column coordinates, as the simulator's deposit
    edges_aa = band.wave_min_aa + (edges_x - pad) * disp
    centre_aa = 0.5 * (edges_aa[1:] + edges_aa[:-1])
    sens_sub = band.throughput(centre_aa) * centre_aa / disp  # counts per A per unit f, up to a constant
    col_aa = band.wave_min_aa + (np.arange(width) - pad) * disp
    sens_col = band.throughput(col_aa) * col_aa  # counts per pixel per unit f, same constant
    return edges_aa, sens_sub, sens_col


@lru_cache(maxsize=16)
def _phases(nfft: int, k: int) -> np.ndarray:
    freq = np.fft.rfftfreq(nfft)
    shifts = (np.arange(k) + 0.5) / k - 0.5  # sub-bin q sits this far from its column centre [pixels]
    return np.exp(-2j * np.pi * freq[:, None] * shifts[None, :])


# ------------------------------------------------------------------------------------------------
# forward model and its stretch derivative
# ------------------------------------------------------------------------------------------------
def _lerp_table(wave_aa: np.ndarray, at_aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of linear interpolation on ``wave_aa`` at ``at_aa`` (clamped like np.interp)."""
    i = np.clip(np.searchsorted(wave_aa, at_aa) - 1, 0, wave_aa.size - 2)
    t = np.clip((at_aa - wave_aa[i]) / (wave_aa[i + 1] - wave_aa[i]), 0.0, 1.0)
    return i, t


def _lsf_list(lsf_pix: LsfInput, n: int, band: str | None = None) -> list:
    """One LSF array per galaxy: from one array, N arrays, or N dicts band -> array."""
    if isinstance(lsf_pix, np.ndarray) and lsf_pix.ndim == 1:
        return [lsf_pix] * n
    if isinstance(lsf_pix, dict):
        return _lsf_list(np.asarray(lsf_pix[band], np.float64), n)
    out = [np.asarray(x[band] if isinstance(x, dict) else x, np.float64) for x in lsf_pix]
    if len(out) != n:
        raise InputError("lsf_pix", "one LSF per galaxy needed", value=len(out), allowed=str(n))
    return out


@lru_cache(maxsize=32)
def _deposit_matrix(wave_bytes: bytes, band: Band, pad: int, k: int) -> sparse.csr_matrix:
    """Sparse map from an SED sampled on a grid to sub-bin counts and their stretch derivative.

    Rows 0..E-1: integral of f over sub-bin j (linear interpolation of its cumulative trapezoid
    integral, as the simulator's deposit) times throughput x lambda at the sub-bin centre; rows
    E..2E-1: d/d ln s of the same for f(lambda / s) at s = 1, i.e.
    ``s (F(b/s) - F(a/s))' = (F(b) - F(a)) - (b f(b) - a f(a))``.
    """
    wave = np.frombuffer(wave_bytes, np.float64)
    n_w = wave.size
    edges_aa, sens_sub, _ = _band_tables(band, pad, k)
    i, t = _lerp_table(wave, edges_aa)
    n_e = edges_aa.size - 1
    # integral between edges as a combination of trapezoid segments seg_m = (f_m + f_m+1) dw_m / 2
    lo, hi = i[:-1], i[1:]
    span = hi - lo
    rows = np.repeat(np.arange(n_e), span)
    cols = np.repeat(lo, span) + (np.arange(rows.size) - np.repeat(np.cumsum(span) - span, span))
    g_rows = np.concatenate([rows, np.arange(n_e), np.arange(n_e)])
    g_cols = np.concatenate([cols, hi, lo])
    g_vals = np.concatenate([np.ones(rows.size), t[1:], -t[:-1]])
    seg_to_sub = sparse.csr_matrix((g_vals, (g_rows, g_cols)), shape=(n_e, n_w - 1))
    half_dw = 0.5 * np.diff(wave)
    f_to_seg = sparse.csr_matrix(
        (
            np.concatenate([half_dw, half_dw]),
            (np.tile(np.arange(n_w - 1), 2), np.concatenate([np.arange(n_w - 1), np.arange(1, n_w)])),
        ),
        shape=(n_w - 1, n_w),
    )
    integ = seg_to_sub @ f_to_seg
    at_edge = sparse.csr_matrix(
        (
            np.concatenate([edges_aa * (1.0 - t), edges_aa * t]),
            (np.tile(np.arange(n_e + 1), 2), np.concatenate([i, i + 1])),
        ),
        shape=(n_e + 1, n_w),
    )
    d_integ = integ - (at_edge[1:] - at_edge[:-1])
    weight = sparse.diags(sens_sub)
    return sparse.vstack([weight @ integ, weight @ d_integ]).tocsr()


def band_models(
    wave_aa: np.ndarray, flux_flam17: np.ndarray, band: Band, lsf_pix: LsfInput, oversample: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless extracted spectra of N galaxies in one band and their derivatives with respect to ln(stretch).

    Parameters
    ----------
    wave_aa : ndarray, shape (L,)
        Observed wavelength [A], strictly increasing, covering the band plus the LSF reach.
    flux_flam17 : ndarray, shape (N, L)
        Observed f_lambda [1e-17 erg/s/cm^2/A].
    band : Band
    lsf_pix : ndarray (2h+1,), or sequence of N such arrays or of N dicts band -> array
        Pixel-sampled, pixel-integrated LSF of the extraction (sums to 1): :func:`extraction_lsf`
        of each galaxy's stamp, or :func:`gaussian_lsf_pix`.
    oversample : int
        Sub-bins per pixel (the simulator uses the instrument's ``oversample_x``, 4; the bound
        uses :data:`CRB_OVERSAMPLE`).

    Returns
    -------
    m : ndarray, shape (N, n_pix)
        Extracted f_lambda on the band grid [1e-17 erg/s/cm^2/A] (0 where the sensitivity is 0).
    dm_dlns : ndarray, shape (N, n_pix)
        d m / d ln s for the SEDs stretched to f(lambda / s); d m / dz = dm_dlns / (1 + z).
    """
    flux = np.atleast_2d(np.asarray(flux_flam17, np.float64))
    n = flux.shape[0]
    lsfs = _lsf_list(lsf_pix, n, band.name)
    half = max(x.size // 2 for x in lsfs)
    pad = 8 * int(np.ceil((half + 2) / 8.0))  # a few sizes only: the deposit matrices stay cached
    k = int(oversample)
    wave = np.ascontiguousarray(wave_aa, np.float64)
    dep = _deposit_matrix(wave.tobytes(), band, pad, k)  # (2 width k, L) sparse
    _, _, sens_col = _band_tables(band, pad, k)
    width = band.n_pix + 2 * pad
    counts = (dep @ flux.T).reshape(2, width, k, n)  # sub-bin counts and their d/d ln s; galaxies last
    nfft = sp_fft.next_fast_len(width + 2 * half + 1, real=True)
    kern = np.zeros((nfft, n))
    for j, lsf in enumerate(lsfs):
        h = lsf.size // 2
        kern[: h + 1, j] = lsf[h:]
        kern[nfft - h :, j] = lsf[:h]
    kern_hat = sp_fft.rfft(kern, axis=0)  # (nf, N)
    spec_hat = np.einsum("cfqn,fq->cfn", sp_fft.rfft(counts, n=nfft, axis=1), _phases(nfft, k))
    out = sp_fft.irfft(spec_hat * kern_hat, n=nfft, axis=1)[:, pad : pad + band.n_pix]  # (2, n_pix, N)
    # the sensitivity at column centres smoothed by each galaxy's LSF: the simulator's flux calibration
    sens = sp_fft.irfft(sp_fft.rfft(sens_col, n=nfft)[:, None] * kern_hat, n=nfft, axis=0)[pad : pad + band.n_pix]
    good = sens > 1e-12 * np.maximum(sens.max(axis=0, keepdims=True), 1e-300)
    safe = np.where(good, sens, 1.0)
    return np.where(good, out[0] / safe, 0.0).T, np.where(good, out[1] / safe, 0.0).T


def band_model(
    wave_aa: np.ndarray, flam17: np.ndarray, band: Band, lsf_pix: np.ndarray, oversample: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """One galaxy's :func:`band_models`: (m, dm_dlns), each shape (n_pix,)."""
    m, dm = band_models(
        wave_aa, np.asarray(flam17, np.float64)[None], band, np.asarray(lsf_pix, np.float64), oversample
    )
    return m[0], dm[0]


# ------------------------------------------------------------------------------------------------
# Fisher matrix
# ------------------------------------------------------------------------------------------------
def sigma_z_from_fisher(m: np.ndarray, dm_dz: np.ndarray, err: np.ndarray) -> np.ndarray | float:
    """Amplitude-marginalised Cramer-Rao bound on z from models, their z-derivatives and errors.

    Parameters
    ----------
    m, dm_dz, err : ndarray, shape (P,) or (N, P)
        Model spectrum, its derivative with respect to z, 1-sigma errors (same unit as m).
        Pixels with a non-finite or non-positive error, or a non-finite model, carry no weight.

    Returns
    -------
    float or ndarray, shape (N,)
        1 / sqrt(F_zz - F_zA^2 / F_AA); ``inf`` when a spectrum holds no redshift information
        (no valid pixel, no flux, or less than :data:`MIN_INFO_FRACTION` of F_zz or of F_AA left
        after marginalising the amplitude). Never NaN.
    """
    m = np.asarray(m, np.float64)
    scalar = m.ndim == 1
    m = np.atleast_2d(m)
    d = np.atleast_2d(np.asarray(dm_dz, np.float64))
    e = np.atleast_2d(np.asarray(err, np.float64))
    ok = np.isfinite(e) & (e > 0) & np.isfinite(m) & np.isfinite(d)
    w = np.where(ok, 1.0 / np.where(ok, e, 1.0) ** 2, 0.0)
    m = np.where(ok, m, 0.0)
    d = np.where(ok, d, 0.0)
    f_zz = np.sum(d * d * w, axis=1)
    f_za = np.sum(d * m * w, axis=1)
    f_aa = np.sum(m * m * w, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        info = f_zz - f_za * f_za / f_aa
        sig = 1.0 / np.sqrt(info)
    bad = ~((f_aa > 0) & (f_zz > 0) & np.isfinite(info) & (info > MIN_INFO_FRACTION * np.maximum(f_zz, f_aa)))
    sig[bad] = np.inf
    return float(sig[0]) if scalar else sig


def zerr_crb_arrays(
    wave_aa: np.ndarray,
    flux_flam17: np.ndarray,
    z: ArrayLike,
    err: dict,
    instrument: Instrument,
    *,
    lsf_pix: LsfInput | None = None,
    lsf_sigma_pix: ArrayLike | None = None,
    bands: Sequence[str] = CRB_BANDS,
    oversample: int = CRB_OVERSAMPLE,
) -> np.ndarray:
    """``ZERR_CRB`` of N galaxies sharing one SED grid (what ``simulate_arrays`` / ``build`` have at hand).

    Parameters
    ----------
    wave_aa : ndarray, shape (L,)
        Observed wavelength of the SEDs [A], strictly increasing, covering the bands.
    flux_flam17 : ndarray, shape (N, L)
        Observed f_lambda [1e-17 erg/s/cm^2/A].
    z : array, shape (N,)
        True redshifts (only 1 + z enters: dm/dz = dm/d ln s / (1 + z)).
    err : dict
        Band name -> ndarray (N, n_pix): the simulated spectra's errors (``BandSpectra.err``;
        inf where unusable).
    instrument : Instrument
    lsf_pix : sequence of N arrays or of N dicts band -> array, optional
        Each galaxy's extraction LSF (:func:`extraction_lsf` of its stamp, per band with the band's
        typical flux): the accurate choice (within 1.2% of the simulator, docs/crb.md).
    lsf_sigma_pix : array, shape (N,), optional
        Gaussian LSF widths [pixels], used when ``lsf_pix`` is not given (e.g. the morphology
        widths of :func:`csstz.templates.basis.galaxy_lsf_sigma_pix`; within ~40% of the
        simulator for large or high-n galaxies). With neither: the point-source LSF.
    bands : sequence of str
        Bands summed in the Fisher matrix (default GV + GI).
    oversample : int
        Sub-bins per pixel of the forward model (:data:`CRB_OVERSAMPLE`).

    Returns
    -------
    ndarray, shape (N,)
        sigma_z [z units, not divided by 1 + z]; inf where the spectrum holds no redshift information.
    """
    wave = np.asarray(wave_aa, np.float64)
    flux = np.atleast_2d(np.asarray(flux_flam17, np.float64))
    n = flux.shape[0]
    zz = np.asarray(z, np.float64).reshape(-1)
    if zz.shape[0] != n:
        raise InputError("Z", "length does not match the flux rows", value=zz.shape[0], allowed=str(n))
    if n == 0:
        return np.empty(0)
    if lsf_pix is None:
        if lsf_sigma_pix is None:
            lsf_pix = gaussian_lsf_pix(instrument.psf_sigma_pix)
        else:
            lsf_pix = [gaussian_lsf_pix(s) for s in np.asarray(lsf_sigma_pix, np.float64).reshape(-1)]
    ms, ds, es = [], [], []
    for b in bands:
        if b not in err:
            raise InputError("err", "no errors for a band of the bound", value=b, allowed=", ".join(err))
        e = np.atleast_2d(np.asarray(err[b], np.float64))
        band = instrument.band(b)
        if e.shape != (n, band.n_pix):
            raise InputError(
                f"err[{b}]",
                "shape does not match (N galaxies, band pixels)",
                value=e.shape,
                allowed=f"({n}, {band.n_pix})",
            )
        m, dm = band_models(wave, flux, band, lsf_pix, oversample)
        ms.append(m)
        ds.append(dm)
        es.append(e)
    dm_dz = np.concatenate(ds, axis=1) / (1.0 + zz[:, None])
    return sigma_z_from_fisher(np.concatenate(ms, axis=1), dm_dz, np.concatenate(es, axis=1))


def zerr_crb(
    wave_aa: np.ndarray,
    flam17: np.ndarray,
    z: float,
    err: dict,
    instrument: Instrument,
    lsf_sigma_pix: float | None = None,
    lsf_pix: np.ndarray | None = None,
    bands: Sequence[str] = CRB_BANDS,
    oversample: int = CRB_OVERSAMPLE,
) -> float:
    """Cramer-Rao bound on z of one galaxy (fast forward model; see :func:`zerr_crb_arrays`).

    Parameters
    ----------
    wave_aa : ndarray, shape (L,)
    flam17 : ndarray, shape (L,)
        Observed f_lambda [1e-17 erg/s/cm^2/A] at redshift ``z``.
    z : float
        True redshift.
    err : dict
        Band name -> 1-sigma errors, shape (n_pix,) [1e-17 erg/s/cm^2/A].
    instrument : Instrument
    lsf_sigma_pix : float, optional
        Gaussian LSF sigma [pixels]; default: the PSF's.
    lsf_pix : ndarray or dict band -> ndarray, optional
        The stamp's extraction LSF (:func:`extraction_lsf`); overrides ``lsf_sigma_pix``.
    bands : sequence of str
    oversample : int
        Sub-bins per pixel of the forward model.

    Returns
    -------
    float
        sigma_z in z (not divided by 1 + z); inf for a spectrum without redshift information.
    """
    if lsf_pix is None:
        lsf_pix = gaussian_lsf_pix(instrument.psf_sigma_pix if lsf_sigma_pix is None else float(lsf_sigma_pix))
    e = {b: np.asarray(err[b])[None] for b in bands if b in err}
    lsf = lsf_pix if isinstance(lsf_pix, dict) else np.asarray(lsf_pix, np.float64)
    return float(
        zerr_crb_arrays(
            wave_aa, np.asarray(flam17)[None], [z], e, instrument, lsf_pix=lsf, bands=bands, oversample=oversample
        )[0]
    )


# ------------------------------------------------------------------------------------------------
# the reference: finite differences through the simulator itself
# ------------------------------------------------------------------------------------------------
def zerr_crb_simulator(
    wave_aa: np.ndarray,
    flam17: np.ndarray,
    z: float,
    shape_r_arcsec: float,
    sersic: float,
    ba: float,
    pa_deg: float,
    instrument: Instrument,
    err: dict | None = None,
    bands: Sequence[str] = CRB_BANDS,
    dlns: float = 3e-4,
) -> float:
    """Cramer-Rao bound with dm/dz from central finite differences through ``simulate_source``.

    Three noiseless simulations (SED stretched by exp(-dlns), 1, exp(+dlns)) sharing one rendered
    stamp; exact for the simulator (including the flux-dependent Horne weights) up to O(dlns^2).

    Parameters
    ----------
    err : dict, optional
        Band -> errors; default: the noiseless run's expected errors.
    dlns : float
        Step in ln(1 + z).

    Returns
    -------
    float
        sigma_z [z units].
    """
    from .api import simulate_source
    from .render import render_stamp

    stamp = render_stamp(shape_r_arcsec, sersic, ba, pa_deg, instrument)
    wave = np.asarray(wave_aa, np.float64)
    runs = [
        simulate_source(
            wave * np.exp(s * dlns),
            flam17,
            shape_r_arcsec,
            sersic,
            ba,
            pa_deg,
            instrument,
            bands=bands,
            noiseless=True,
            stamp=stamp,
        )
        for s in (-1, 0, 1)
    ]
    m = np.concatenate([runs[1][b].flux for b in bands]).astype(np.float64)
    dm = np.concatenate([runs[2][b].flux.astype(np.float64) - runs[0][b].flux for b in bands]) / (2 * dlns)
    e = np.concatenate([(runs[1][b].err if err is None else err[b]) for b in bands]).astype(np.float64)
    return sigma_z_from_fisher(m, dm / (1.0 + float(z)), e)


# ------------------------------------------------------------------------------------------------
# the noiseless extracted spectrum, for the build's flux_noiseless
# ------------------------------------------------------------------------------------------------
def calibrated_extract(
    image_e: np.ndarray, profile_y: np.ndarray, var_bkg_e2: float, sens_e_per_flam17: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal extraction and flux calibration of one band's image, as ``simulate_source`` does it.

    Given the *expected* (noiseless) image this is the noiseless extracted spectrum
    (``flux_noiseless``), identical to what ``simulate_source(..., noiseless=True)`` returns.

    Parameters
    ----------
    image_e : ndarray, shape (ny, n_pix)
        Electrons in the extraction rows and the band's columns (sky-subtracted).
    profile_y : ndarray, shape (ny,)
        Cross-dispersion profile of those rows.
    var_bkg_e2 : float
        Source-free variance per pixel [e-^2] (``noise.background_variance_e2``).
    sens_e_per_flam17 : ndarray, shape (n_pix,)
        LSF-smoothed sensitivity of the band's columns (``api.effective_sensitivity(...)[cols]``).

    Returns
    -------
    flux, err : ndarray, shape (n_pix,), float32
        [1e-17 erg/s/cm^2/A]; flux 0 and err inf where the sensitivity is 0.
    """
    from .extract import optimal_extract

    f_e, err_e = optimal_extract(image_e, profile_y, var_bkg_e2)
    good = sens_e_per_flam17 > 0
    safe = np.where(good, sens_e_per_flam17, 1.0)
    flux = np.where(good, f_e / safe, 0.0)
    err = np.where(good, err_e / safe, np.inf)
    return flux.astype(np.float32), err.astype(np.float32)


__all__ = [
    "zerr_crb",
    "zerr_crb_arrays",
    "zerr_crb_simulator",
    "band_model",
    "band_models",
    "sigma_z_from_fisher",
    "gaussian_lsf_pix",
    "extraction_lsf",
    "calibrated_extract",
    "CRB_BANDS",
    "CRB_OVERSAMPLE",
    "MIN_INFO_FRACTION",
]
