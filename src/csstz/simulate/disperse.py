"""Disperse a rendered galaxy into a band's first-order 2D image.

For an achromatic profile P(x, y) the first-order image is the profile
convolved along the dispersion axis with the spectrum's photon counts placed
at their positions x(lambda)::

    I(X, y) = sum_lambda  c(lambda) * P(X - x(lambda), y)
    x(lambda) = pad + (lambda - lambda_0) / dispersion      [pixel columns]

with c(lambda) = f_lambda T(lambda) A t lambda / (h c) dlambda. Nothing is
rounded to whole pixels:

1. The photon counts are integrated exactly (cumulative integrals of the
   photon density and of its first moment in x) over ``oversample_x``
   sub-bins per pixel, and each sub-bin's counts are split between the two
   nearest sub-bin centres so that both the counts and their mean position are
   preserved (a line lands at its exact sub-pixel centroid).
2. Each of the ``oversample_x`` sub-bin phases is a comb at whole-pixel
   spacing shifted by a known fraction of a pixel; the shifts are applied in
   Fourier space to the pixel-integrated profile (exact for a band-limited
   profile, see :mod:`csstz.simulate.render`), so the result is the
   pixel-integrated image of every wavelength at its true position.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft

from ..instrument import Band, Instrument
from ..units import C_AA_PER_S, FLAM17, H_ERG_S
from .render import Stamp


def photon_density_e_per_aa(wave_aa: np.ndarray, flam17: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Photo-electrons per Angstrom over all exposures, before throughput.

    Parameters
    ----------
    wave_aa : ndarray, shape (L,)
        Observed wavelength [A].
    flam17 : ndarray, shape (L,)
        Flux density [1e-17 erg/s/cm^2/A].

    Returns
    -------
    ndarray, shape (L,)
        f_lambda * A * t_total * lambda / (h c)  [e-/A] (multiply by T(lambda)).
    """
    return flam17 * (FLAM17 * instrument.area_cm2 * instrument.total_exptime_s / (H_ERG_S * C_AA_PER_S)) * wave_aa


def _cumtrapz(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(y)
    out[0] = 0.0
    np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x), out=out[1:])
    return out


def deposit_counts(
    wave_aa: np.ndarray, dens_e_per_aa: np.ndarray, band: Band, pad_pix: int, oversample: int
) -> np.ndarray:
    """Counts of one band on the sub-pixel grid of its 2D image.

    Parameters
    ----------
    wave_aa : ndarray, shape (L,)
        SED wavelengths [A], strictly increasing.
    dens_e_per_aa : ndarray, shape (L,)
        Photon density before throughput [e-/A] (:func:`photon_density_e_per_aa`).
    band : Band
    pad_pix : int
        Columns of the 2D image before the first grid pixel (and after the last).
    oversample : int
        Sub-bins per pixel.

    Returns
    -------
    ndarray, shape (W, oversample)
        Electrons deposited at sub-bin q of column X (W = band.n_pix + 2 pad),
        whose centre is at column X + (q + 0.5) / oversample - 0.5.
    """
    plan = _deposit_plan(wave_aa, band, int(pad_pix), int(oversample))
    width, k = plan.width, plan.k
    if plan.lo < 0:
        return np.zeros((width, k))
    n = dens_e_per_aa[plan.lo : plan.hi] * plan.throughput
    # cumulative integrals (trapezoid) of the photon density and of its first moment in x, interpolated
    # linearly at the sub-bin edges (indices and weights precomputed), then differenced per sub-bin
    counts, moment = (np.diff(_interp_at(_cumtrapz_w(y, plan.half_dw), plan)) for y in (n, n * plan.x))
    # split each sub-bin between its centre and the neighbour on the side of its centroid, moving
    # counts * |centroid offset| (in sub-bins, at most half the counts): both counts and first moment kept
    d = moment - plan.centre * counts
    d *= k
    right = d > 0
    moved = np.minimum(np.abs(d), np.maximum(0.5 * counts, 0.0))
    out = counts - moved
    moved_r = moved * right
    moved -= moved_r  # now the part moved left
    out[1:] += moved_r[:-1]
    out[:-1] += moved[1:]
    return out.reshape(width, k)


def _cumtrapz_w(y: np.ndarray, half_dw: np.ndarray) -> np.ndarray:
    out = np.empty_like(y)
    out[0] = 0.0
    tmp = y[1:] + y[:-1]
    tmp *= half_dw
    np.cumsum(tmp, out=out[1:])
    return out


def _interp_at(cum: np.ndarray, plan: _DepositPlan) -> np.ndarray:
    lo = cum.take(plan.j)
    hi = cum.take(plan.j1)
    hi -= lo
    hi *= plan.t
    hi += lo
    return hi


@dataclass(frozen=True)
class _DepositPlan:
    """What :func:`deposit_counts` needs that depends only on the SED grid, the band, the pad and k."""

    width: int
    k: int
    lo: int  # SED samples lo:hi are used (lo = -1: the SED does not reach the band)
    hi: int
    throughput: np.ndarray  # T(lambda) on those samples
    x: np.ndarray  # their column coordinate
    half_dw: np.ndarray  # half the wavelength steps (trapezoid weights)
    j: np.ndarray  # interpolation interval of each sub-bin edge (samples j, j1 = j + 1)
    j1: np.ndarray
    t: np.ndarray  # and its weight
    centre: np.ndarray  # sub-bin centres [columns]


_PLAN_CACHE: dict = {}
#: plans kept: one per band and stamp size (pad) in use, ~3 x 41 for the packaged instrument, ~90 kB each
_PLAN_CACHE_SIZE = 384


def _deposit_plan(wave_aa: np.ndarray, band: Band, pad_pix: int, k: int) -> _DepositPlan:
    disp = band.dispersion_aa_per_pix
    width = band.n_pix + 2 * pad_pix
    lam_lo = band.wave_min_aa + (-0.5 - pad_pix) * disp
    lam_hi = band.wave_min_aa + (width - 0.5 - pad_pix) * disp
    a = int(np.searchsorted(wave_aa, lam_lo - 2 * disp, side="left"))
    b = int(np.searchsorted(wave_aa, lam_hi + 2 * disp, side="right"))
    lo, hi = max(a - 1, 0), min(b + 1, len(wave_aa))
    w = np.ascontiguousarray(wave_aa[lo:hi], dtype=np.float64)
    # Band is frozen: its identity is a safe key while the entry holds it (hashing its tables costs more)
    key = (id(band), pad_pix, k, lo, hi, w.tobytes())
    hit = _PLAN_CACHE.get(key)
    if hit is not None and hit[0] is band:
        return hit[1]
    edges_x = -0.5 + np.arange(width * k + 1) / k
    centre = edges_x[:-1] + 0.5 / k
    if b - a < 2:
        plan = _DepositPlan(width, k, -1, -1, *(np.empty(0),) * 6, centre)
    else:
        edges_w = band.wave_min_aa + (edges_x - pad_pix) * disp
        j = np.clip(np.searchsorted(w, edges_w, side="right") - 1, 0, w.size - 2)
        t = np.clip((edges_w - w[j]) / (w[j + 1] - w[j]), 0.0, 1.0)  # np.interp's clamping outside w
        plan = _DepositPlan(
            width,
            k,
            lo,
            hi,
            band.throughput(w),
            pad_pix + (w - band.wave_min_aa) / disp,
            0.5 * np.diff(w),
            j,
            j + 1,
            t,
            centre,
        )
    if len(_PLAN_CACHE) >= _PLAN_CACHE_SIZE:  # drop the oldest entry
        del _PLAN_CACHE[next(iter(_PLAN_CACHE))]
    _PLAN_CACHE[key] = (band, plan)
    return plan


#: FFT lengths are rounded up to a multiple of this before :func:`scipy.fft.next_fast_len`, so that the
#: three bands of a galaxy (whose image widths differ by a few pixels) usually share one FFT length and with
#: it the Fourier transform of the profile (see :func:`_kernel_hat`).
_NFFT_QUANTUM = 64

_KERNEL_CACHE: list = []  # one entry: (stamp, row range, nfft, kernel_hat); the stamp is held, so `is` is safe


def fft_length(width: int, half: int) -> int:
    """FFT length for an image of ``width`` columns convolved with a stamp of half size ``half`` (no wrap)."""
    need = width + 2 * half + 1
    return int(sp_fft.next_fast_len(-(-need // _NFFT_QUANTUM) * _NFFT_QUANTUM, real=True))


@lru_cache(maxsize=32)
def _phase(nfft: int, k: int) -> np.ndarray:
    """exp(-2 pi i f s_q): the sub-pixel shift of each sub-bin phase q, shape (nfft//2+1, k), complex64."""
    freq = np.fft.rfftfreq(nfft)  # cycles per pixel
    # sub-bin q sits (q + 0.5)/k - 0.5 pixel from its column centre: a phase shift per comb
    shifts = (np.arange(k) + 0.5) / k - 0.5
    return np.exp(-2j * np.pi * freq[:, None] * shifts[None, :]).astype(np.complex64)


def _kernel_hat(stamp: Stamp, rows: slice, nfft: int) -> np.ndarray:
    """Row-wise real FFT of the stamp's rows, centred on column 0 and zero-padded to ``nfft`` (complex64).

    Cached for the last (stamp, rows, nfft): the bands of one galaxy reuse it.
    """
    ny = stamp.image.shape[0]
    key = rows.indices(ny)
    if _KERNEL_CACHE:
        c_stamp, c_key, c_nfft, c_hat = _KERNEL_CACHE[0]
        if c_stamp is stamp and c_key == key and c_nfft == nfft:
            return c_hat
    half = stamp.half
    prof = stamp.image[rows]
    kernel = np.zeros((prof.shape[0], nfft), dtype=np.float32)
    kernel[:, : half + 1] = prof[:, half:]
    kernel[:, nfft - half :] = prof[:, :half]
    hat = sp_fft.rfft(kernel, axis=1)
    _KERNEL_CACHE[:] = [(stamp, key, nfft, hat)]
    return hat


def disperse(stamp: Stamp, deposit: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """The noiseless first-order image: profile convolved with the deposited counts.

    The FFTs run in single precision: their rounding (~1e-7 of the peak) is at the level of the Fourier
    ringing of the band-limited profile and far below the noise.

    Parameters
    ----------
    stamp : Stamp
        Flux-normalised pixel-integrated profile, shape (ny, 2h+1).
    deposit : ndarray, shape (W, k)
        Counts per sub-bin from :func:`deposit_counts`.
    rows : slice
        Rows of the stamp to compute (default all).

    Returns
    -------
    ndarray, shape (len(rows), W), float32
        Expected electrons per pixel (all exposures), >= 0.
    """
    width, k = deposit.shape
    nfft = fft_length(width, stamp.half)
    dep_hat = sp_fft.rfft(deposit.astype(np.float32), n=nfft, axis=0)  # (nf, k)
    dep_hat *= _phase(nfft, k)
    spec_hat = dep_hat.sum(axis=1)  # (nf,)
    img = sp_fft.irfft(_kernel_hat(stamp, rows, nfft) * spec_hat[None, :], n=nfft, axis=1)[:, :width]
    np.maximum(img, 0.0, out=img)  # Fourier ringing is ~1e-7 of the peak; counts cannot be negative
    return img


__all__ = ["photon_density_e_per_aa", "deposit_counts", "disperse"]
