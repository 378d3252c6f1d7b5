"""chi2(z) and log p(z) of spectra against a template basis at every redshift at once, by FFT cross-correlation.

On a grid uniform in ln(lambda) a redshift is a shift: the model of a galaxy at ln(1+z) is the rest-frame
template moved by ln(1+z). The chosen bands (GV + GI by default) are resampled, flux-conserving, onto ONE
common ln(lambda) grid of step ``h`` (:data:`DEFAULT_DLNLAM` = 1.15e-3: GV's 6.0 A/px at 5200 A and GI's
9.676 A/px at 8345 A, instrument file), with inverse-variance weights ``w`` (0 where no valid data). With
``T_k`` the templates pre-convolved with the line-spread function and sampled on the rest grid, for each
shift ``s`` and coefficient vector ``a``::

    chi2(s, a) = sum_p w_p f_p^2 - 2 a.b(s) + a^T M(s) a
    b_k(s)   = sum_p (w f)_p T_k[p + s]          -> FFT cross-correlation of (w f) with T_k
    M_jk(s)  = sum_p w_p T_j[p + s] T_k[p + s]    -> FFT cross-correlation of w with T_j T_k

so two forward FFTs per spectrum and K + K(K+1)/2 inverse ones give the normal equations at all shifts;
a batched K x K Cholesky per shift then gives

* ``mode="ls"``: plain least squares, ``chi2_min(s) = f.W.f - b.a``, log L = -chi2_min / 2;
* ``mode="prior"``: the marginal likelihood with the basis's Gaussian (mixture) prior on the coefficients
  of a unit-amplitude SED, ``a ~ N(A mu, A^2 C)`` per component, with the amplitude ``A = norm . a`` taken
  from the data at each shift (fixed-point passes, floored at 1% of the spectrum's largest amplitude), C
  broadened along ``mu`` (:data:`AMPLITUDE_SCATTER`) so that the amplitude itself stays free::

      P = C^-1 / A^2,  H = M + P,  a* = H^-1 (b + P A mu)
      log L = -[f.W.f + A^2 mu.P.mu - (b + P A mu).a*] / 2 - log det H / 2 + log det P / 2

  and the components are summed with their weights (log-sum-exp);
* :func:`archetype_loglike`: a sum over fixed prototype SEDs (e.g. training SEDs), each with a free
  positive amplitude marginalised analytically.

FFTs run in float64 by default (``dtype``); ``dtype_m=np.float32`` puts only the M(s) correlations in
float32 (faster; log L off by <= 0.5 near the peak on real spectra, docs/estimator.md).

Sub-grid shifts: ``n_phase`` copies of each template displaced by ``h / n_phase`` give a redshift grid of
step ``h / n_phase`` in ln(1+z).

Line-spread function: a Gaussian of sigma = (PSF or galaxy) sigma [pixels] x the median pixel width in
ln(lambda) (dispersion/lambda is 1.15e-3 +- 25% over GV and GI), times the native pixel box and the common
grid's box; galaxies are binned by LSF width (``lsf="morphology"``, :func:`galaxy_lsf_sigma_pix`).

p(z) (:func:`posterior`): ``exp(log L / T) x prior(z)`` turned into a density per unit z and normalised by
the trapezoid rule on the z grid (the PZ / PZ_GRID convention of docs/estimator.md). Z is the mode refined
by a parabola in ln(1+z); ZERR half the central 68.3% interval; P_SECOND the probability mass farther than
|dz|/(1+z) = 0.02 from the mode (a multimodality indicator).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft as sfft
from scipy import sparse

from ..errors import InputError
from .learned import TemplateBasis
from .solve_kernel import solve_ls, solve_ls_forward, solve_prior

if TYPE_CHECKING:
    from collections.abc import Sequence

    from astropy.table import Table
    from numpy.typing import DTypeLike

    from .._types import PathLike
    from ..instrument import Instrument
    from ..io.spectra import SpectraSet

#: Common grid step in ln(lambda): GV 6.0 A/px at 5200 A = 1.154e-3, GI 9.676 A/px at 8345 A = 1.159e-3
#: (instrument file); one grid pixel per native pixel at the band centres.
DEFAULT_DLNLAM = 1.15e-3
#: A common-grid pixel is used when at least this fraction of it is covered by valid native pixels.
MIN_COVER = 0.5
#: Fine sub-samples per grid step when the templates are convolved with the LSF.
N_FINE = 8
#: Relative 1-sigma scatter allowed on the amplitude along the prior mean (keeps A free; project choice).
AMPLITUDE_SCATTER = 1.0
#: Amplitude floor of the prior, relative to the spectrum's largest amplitude over shifts (project choice).
AMPLITUDE_FLOOR_REL = 0.01
#: A compact template counts as absent at a shift where its M_jj is below this fraction of its maximum.
COMPACT_ABSENT_REL = 1e-6
#: Values of a compact template's convolved rest-grid samples below this fraction of its peak are the FFT
#: convolution's round-off (~1e-16 relative) and are set to 0 for the direct sums of ``local_loglike``.
COMPACT_TAIL_REL = 1e-12
#: Outlier window of the multimodality indicator, |dz|/(1+z) (the catastrophic-outlier threshold).
SECOND_PEAK_DZ = 0.02
#: LSF bins for lsf="morphology": edges grow by this factor from the PSF sigma (as the NNLS template fit).
LSF_BIN_RATIO = 1.3
LSF_MAX_BINS = 10
#: Elements (spectra x shifts) per chunk of the batched K x K solves: arrays stay in the CPU cache.
SOLVE_ELEMENTS = 8192
#: Likelihoods of :meth:`XcorrModel.loglike`.
MODES = ("ls", "prior", "prior+ls", "prior+ls+nested")
#: Number of log-likelihood curves each mode returns per spectrum.
N_CURVES = {"ls": 1, "prior": 1, "prior+ls": 2, "prior+ls+nested": 3}
#: Spectra per block of the batched FFTs (memory ~ block x (K + K(K+1)/2) x n_fft x 16 bytes: 6 MB at K = 6).
#: Small blocks keep the correlations in the CPU cache: with 8 instead of 128, one thread computed 21% (training's
#: "prior+ls") to 42% (prediction's "prior+ls+nested") more curves per CPU-second on 2,000 validation spectra; on 2
#: threads the gain was within the host's noise (benchmarks/results/xcorr.json). Curves are bit-identical for any
#: block size.
BLOCK = 8


# --- the common ln(lambda) grid and the flux-conserving resampling -------------------------------------------
def _pixel_edges(wave_aa: np.ndarray) -> np.ndarray:
    lw = np.log(np.asarray(wave_aa, np.float64))
    mid = 0.5 * (lw[1:] + lw[:-1])
    return np.concatenate([[lw[0] - (mid[0] - lw[0])], mid, [lw[-1] + (lw[-1] - mid[-1])]])


def common_grid(wave_by_band: dict, dlnlam: float = DEFAULT_DLNLAM) -> np.ndarray:
    """Centres (ln lambda [ln A]) of the common grid covering every band's pixels, shape (L,)."""
    lo = min(_pixel_edges(w)[0] for w in wave_by_band.values())
    hi = max(_pixel_edges(w)[-1] for w in wave_by_band.values())
    n = int(math.ceil((hi - lo) / dlnlam))
    return lo + dlnlam * (np.arange(n) + 0.5)


def resampling_matrix(wave_aa: np.ndarray, grid_ln: np.ndarray) -> sparse.csr_matrix:
    """Overlap of each native pixel (rows) with each common-grid pixel (columns), in units of the grid step.

    A common pixel's flux is ``sum_i O_ij f_i / sum_i O_ij`` (flux-conserving mean of f_lambda over
    the pixel) and its variance ``sum_i O_ij^2 s_i^2 / (sum_i O_ij)^2``.
    """
    e = _pixel_edges(wave_aa)
    h = float(grid_ln[1] - grid_ln[0])
    g_lo = grid_ln[0] - 0.5 * h
    rows, cols, vals = [], [], []
    for i in range(e.size - 1):
        j0 = max(int(math.floor((e[i] - g_lo) / h)), 0)
        j1 = min(int(math.floor((e[i + 1] - g_lo) / h)), grid_ln.size - 1)
        for j in range(j0, j1 + 1):
            a, b = max(e[i], g_lo + j * h), min(e[i + 1], g_lo + (j + 1) * h)
            if b > a:
                rows.append(i)
                cols.append(j)
                vals.append((b - a) / h)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(e.size - 1, grid_ln.size))


def resample(
    flux_by_band: dict, err_by_band: dict, mats: dict, min_cover: float = MIN_COVER
) -> tuple[np.ndarray, np.ndarray]:
    """Flux (N, L) and inverse-variance weights (N, L) on the common grid (weights 0 where no data).

    Each band is resampled separately (:func:`resampling_matrix`); where bands overlap the estimates are
    combined with inverse-variance weights.
    """
    from .solve_kernel import resample_band

    wsum = fsum = None
    for b, op in mats.items():
        op = sparse.csr_matrix(op)  # no copy for the csr matrices of resampling_matrix
        f = np.ascontiguousarray(flux_by_band[b], np.float64)
        e = np.ascontiguousarray(err_by_band[b], np.float64)
        n = f.shape[0] if f.ndim == 2 else -1
        if f.ndim != 2 or e.shape != f.shape or f.shape[1] != op.shape[0] or (wsum is not None and n != wsum.shape[0]):
            want = f"(N, {op.shape[0]})" if wsum is None else f"({wsum.shape[0]}, {op.shape[0]})"
            raise InputError(f"{b}.flux", f"flux and err must both have shape {want}", value=(f.shape, e.shape))
        if wsum is None:
            wsum, fsum = np.zeros((n, op.shape[1])), np.zeros((n, op.shape[1]))
        resample_band(
            f, e, op.indptr.astype(np.int64), op.indices.astype(np.int64), op.data, float(min_cover), wsum, fsum
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(wsum > 0, fsum / np.where(wsum > 0, wsum, 1.0), 0.0)
    return f, wsum


def _box(width: float) -> np.ndarray:
    """A centred box of ``width`` samples (fractional ends), odd length, unit sum."""
    half = 0.5 * width
    n = int(math.ceil(half - 0.5))
    x = np.arange(-n, n + 1, dtype=np.float64)
    k = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    return k / k.sum()


# --- the model ---------------------------------------------------------------------------------------------------
@dataclass
class _Kernel:
    TF: np.ndarray  # (P, K, nf) complex: rfft of each phase's templates on the rest grid
    QF: np.ndarray  # (P, npair, nf) complex: rfft of the template products
    # (n_rest, K + npair) float64: phase 0's templates on the rest grid (compact ones exactly 0 off their support)
    # and their pair products, rest-index major (the direct sums of local_loglike)
    rest_tq: np.ndarray


class XcorrModel:
    """A template basis on a common ln(lambda) grid, ready for chi2(z) by FFT.

    Parameters
    ----------
    basis : TemplateBasis
        Rest-frame templates (and optionally the Gaussian coefficient prior).
    wave_by_band : dict of str -> ndarray
        Native pixel-centre wavelengths [A] of the bands used (e.g. GV, GI).
    lsf_sigma_pix : sequence of float
        LSF Gaussian sigmas [native pixels] to prepare (one template set each; PSF: 1.72).
    zmin, zmax : float
        Redshift range.
    dlnlam : float
        Common grid step in ln(lambda).
    n_phase : int
        Sub-grid template phases: the z grid step is ``dlnlam / n_phase`` in ln(1+z).
    dtype : numpy dtype
        FFT precision. float64 (default): float32 FFTs were measured to move log L by up to 3.4 near the
        peak on real validation spectra (round-off relative to sum |w f||T| and the cancellation in
        f.W.f - b.M^-1.b for bright spectra), too much for p(z).
    dtype_m : numpy dtype, optional
        Precision of the M(s) correlations alone (default: ``dtype``).
    occam : bool
        Keep the log-determinant (Occam) terms of the marginal likelihood (False: the prior-penalised
        best fit, -min_a [chi2 + prior penalty] / 2).

    Attributes
    ----------
    grid_ln : (L,)  common grid centres [ln A]
    lnz : (J,)      ln(1+z) grid, increasing;  z : (J,)
    """

    def __init__(
        self,
        basis: TemplateBasis,
        wave_by_band: dict,
        lsf_sigma_pix: Sequence[float] = (1.72,),
        zmin: float = 0.0,
        zmax: float = 1.6,
        dlnlam: float = DEFAULT_DLNLAM,
        n_phase: int = 1,
        dtype: DTypeLike = np.float64,
        occam: bool = True,
        dtype_m: DTypeLike | None = None,
    ) -> None:
        if not (0 <= zmin < zmax) or not (math.isfinite(zmax)):
            raise InputError("zmax", "need 0 <= zmin < zmax", value=(zmin, zmax))
        if not (1e-5 <= dlnlam <= 0.01):
            raise InputError("dlnlam", "out of range", value=dlnlam, allowed="1e-5 .. 0.01")
        if not (isinstance(n_phase, (int, np.integer)) and 1 <= n_phase <= 16):
            raise InputError("n_phase", "must be an integer 1..16", value=n_phase)
        if not wave_by_band:
            raise InputError("bands", "no band")
        self.basis = basis
        self.occam = bool(occam)
        self.bands = tuple(wave_by_band)
        self.dtype = np.dtype(dtype)
        self.dtype_m = np.dtype(dtype_m) if dtype_m is not None else self.dtype
        self.h = float(dlnlam)
        self.n_phase = int(n_phase)
        self.grid_ln = common_grid(wave_by_band, dlnlam)
        self.mats = {b: resampling_matrix(np.asarray(w, np.float64), self.grid_ln) for b, w in wave_by_band.items()}
        # native pixel width in ln(lambda), median over the bands' pixels (sets the LSF in ln units)
        self.pix_ln = float(np.median(np.concatenate([np.diff(_pixel_edges(w)) for w in wave_by_band.values()])))
        L = self.grid_ln.size
        step = self.h / self.n_phase
        lz0, lz1 = math.log1p(zmin), math.log1p(zmax)
        n_shift = int(math.ceil((lz1 - lz0) / self.h - 1e-9)) + 1  # shifts per phase
        self.lnz_max = lz0 + (n_shift - 1) * self.h + (self.n_phase - 1) * step
        # descending index j = m * n_phase + phase  ->  lnz = lnz_max - j * step ; keep lnz >= lz0 - tiny
        J = n_shift * self.n_phase
        lnz_desc = self.lnz_max - step * np.arange(J)
        self._keep = lnz_desc >= lz0 - 1e-12
        self.lnz = lnz_desc[self._keep][::-1].copy()
        self.z = np.expm1(self.lnz)
        self.n_shift = n_shift
        self.L = L
        self._check_rest_coverage(wave_by_band, float(self.z[0]), float(self.z[-1]))
        self.n_rest = L + n_shift - 1
        self.n_fft = sfft.next_fast_len(self.n_rest, real=True)
        self.K = basis.n_templates
        # templates that vanish over part of the rest grid (emission lines): see _phase_equations
        self._compact = [j for j in range(self.K) if np.mean(basis.templates[j] == 0.0) > 0.5]
        # trailing free emission-line templates (zero norm and prior mean, add_emission_lines' provenance)
        # and whose prior is independent of the others: the nested likelihood drops them
        n_free = int(basis.provenance.get("emission_lines", {}).get("n_templates", 0)) if basis.has_prior else 0
        k0 = self.K - n_free
        self.n_free = (
            n_free
            if 0 < n_free < self.K
            and np.all(basis.norm[k0:] == 0)
            and np.all(basis.prior_mean[:, k0:] == 0)
            and np.all(basis.prior_cov[:, :k0, k0:] == 0)
            else 0
        )
        self.pairs = [(j, k) for j in range(self.K) for k in range(j, self.K)]
        self._pair_index = (np.array([j for j, _ in self.pairs]), np.array([k for _, k in self.pairs]))
        # each compact template: its M_jj pair and every pair that involves it (zeroed where it is absent)
        self._compact_pairs = [
            (j, self.pairs.index((j, j)), [p for p, (a, c) in enumerate(self.pairs) if j in (a, c)])
            for j in self._compact
        ]
        self.lsf_sigma_pix = tuple(float(s) for s in lsf_sigma_pix)
        self.kernels = [self._prepare(s) for s in self.lsf_sigma_pix]
        self.norm = np.asarray(basis.norm, np.float64)
        self.prior = []  # (log weight, mean, precision, log det precision) per component
        if basis.has_prior:
            for wg, mu, C in zip(basis.prior_weight, basis.prior_mean, basis.prior_cov):
                C = np.asarray(C, np.float64) + AMPLITUDE_SCATTER**2 * np.outer(mu, mu)
                # a relative ridge, scaled by the learned (continuum) block alone: free lines leave it as it was
                k0 = self.K - self.n_free
                C = C + 1e-9 * np.trace(C[:k0, :k0]) / k0 * np.eye(self.K)
                prec = np.linalg.inv(C)
                self.prior.append(
                    (
                        math.log(max(float(wg), 1e-300)),
                        np.asarray(mu, np.float64),
                        prec,
                        float(np.linalg.slogdet(prec)[1]),
                    )
                )

    def _check_rest_coverage(self, wave_by_band: dict, zmin: float, zmax: float) -> None:
        """Refuse a band that leaves the basis' rest-frame range somewhere on the redshift grid.

        Outside that range the templates are zero, so those pixels would be fitted by a zero model whose extent
        changes with z (a band reaching below it at high z would penalise every high redshift)."""
        w0, w1 = float(self.basis.wave_aa[0]), float(self.basis.wave_aa[-1])
        for b, w in wave_by_band.items():
            lo, hi = float(np.min(w)), float(np.max(w))
            if lo / (1.0 + zmax) < w0:
                # the grid's last ln(1 + z) may lie up to one step plus the phases' offsets beyond the zmax asked
                # for (see __init__): a bound that the grid accepts
                reach = self.h + (self.n_phase - 1) * self.h / self.n_phase
                usable = math.floor(((lo / w0) * math.exp(-reach) - 1.0) * 100.0) / 100.0
                raise InputError(
                    "bands",
                    f"band {b} starts at {lo:.0f} A, {lo / (1.0 + zmax):.0f} A in the rest frame at z = {zmax:.3f}, "
                    f"below the {self.basis.name} basis' {w0:.0f} A: drop the band or use zmax <= {usable:.2f}",
                    value=b,
                )
            if hi / (1.0 + zmin) > w1:
                usable = math.ceil((hi / w1 - 1.0) * 100.0) / 100.0
                raise InputError(
                    "bands",
                    f"band {b} ends at {hi:.0f} A, {hi / (1.0 + zmin):.0f} A in the rest frame at z = {zmin:.3f}, "
                    f"beyond the {self.basis.name} basis' {w1:.0f} A: drop the band or use zmin >= {usable:.2f}",
                    value=b,
                )

    # templates on the rest grid, LSF-convolved
    def _prepare(self, sigma_pix: float) -> _Kernel:
        h, nf = self.h, N_FINE
        fine_step = h / nf
        y0 = self.grid_ln[0] - self.lnz_max  # rest ln(lambda) of rest-grid index 0
        sig_ln = sigma_pix * self.pix_ln
        half = int(math.ceil((5 * sig_ln + self.pix_ln + h) / fine_step)) + 2
        fine = y0 + fine_step * np.arange(-half, self.n_rest * nf + half + nf)
        lw = np.log(self.basis.wave_aa)
        T = np.stack([np.interp(fine, lw, t, left=0.0, right=0.0) for t in self.basis.templates])
        xk = fine_step * np.arange(-half, half + 1)
        g = np.exp(-0.5 * (xk / sig_ln) ** 2)
        for width in (self.pix_ln, h):  # native pixel box, then common-grid box
            g = np.convolve(g, _box(width / fine_step), mode="same")
        g /= g.sum()
        from scipy.signal import fftconvolve

        Tc = fftconvolve(T, g[None, :], mode="same", axes=1)
        TF, QF, rest = [], [], None
        for ph in range(self.n_phase):
            # template phase ph is sampled at y0 + q h + ph h / n_phase  (lnz = lnz_max - (m + ph/n_phase) h)
            idx = half + nf * np.arange(self.n_rest) + int(round(ph * nf / self.n_phase))
            Tq = Tc[:, idx]
            Q = np.stack([Tq[j] * Tq[k] for j, k in self.pairs])
            TF.append(sfft.rfft(Tq.astype(self.dtype), n=self.n_fft, axis=1))
            QF.append(sfft.rfft(Q.astype(self.dtype_m), n=self.n_fft, axis=1))
            if ph == 0:
                rest = np.array(Tq, np.float64)
                for j in self._compact:  # the convolution's round-off tails: exactly absent off the support
                    rest[j][np.abs(rest[j]) <= COMPACT_TAIL_REL * np.max(np.abs(rest[j]))] = 0.0
        if self.n_phase > 1 and nf % self.n_phase:
            raise InputError("n_phase", f"must divide N_FINE={nf}", value=self.n_phase)
        tq = np.concatenate([rest, np.stack([rest[j] * rest[k] for j, k in self.pairs])])
        return _Kernel(np.stack(TF), np.stack(QF), np.ascontiguousarray(tq.T))

    def rest_templates(self, lsf_index: int = 0, phase: int = 0) -> np.ndarray:
        """The convolved templates on the rest grid (K, n_rest) (for tests/plots)."""
        TF = self.kernels[lsf_index].TF[phase]
        return sfft.irfft(TF, n=self.n_fft, axis=1)[:, : self.n_rest]

    # --- input ------------------------------------------------------------------------------------------
    def prepare_spectra(self, flux_by_band: dict, err_by_band: dict) -> tuple[np.ndarray, np.ndarray]:
        """Flux and weights on the common grid, (N, L) each (see :func:`resample`)."""
        for b in self.bands:
            if b not in flux_by_band or b not in err_by_band:
                raise InputError("bands", "band missing from the input", value=b)
            f, e = np.asarray(flux_by_band[b]), np.asarray(err_by_band[b])
            n_pix = self.mats[b].shape[0]
            if f.ndim != 2 or f.shape[1] != n_pix or e.shape != f.shape:
                raise InputError(f"{b}.flux", f"flux and err must have shape (N, {n_pix})", value=f.shape)
        return resample(flux_by_band, err_by_band, self.mats)

    # --- the normal equations at all shifts -------------------------------------------------------------
    def _phase_equations(self, G1: np.ndarray, G0: np.ndarray, ker: _Kernel, ph: int) -> tuple[np.ndarray, np.ndarray]:
        """b (K, N, ns) and the pair products of M (npair, N, ns) of one template phase (descending lnz)."""
        ns = self.n_shift
        bb = sfft.irfft(G1[:, None, :] * ker.TF[ph][None], n=self.n_fft, axis=2)[:, :, :ns]
        mm = sfft.irfft(G0[:, None, :] * ker.QF[ph][None], n=self.n_fft, axis=2)[:, :, :ns]
        bb, mm = bb.transpose(1, 0, 2), mm.transpose(1, 0, 2)
        for j, pjj, involved in self._compact_pairs:
            # a template with compact support (an emission line) has no data at many shifts: there its
            # normal equations hold only FFT round-off, which must read as exactly "absent"
            djj = mm[pjj]
            gone = djj <= COMPACT_ABSENT_REL * np.max(djj, axis=1, keepdims=True)
            if gone.any():
                bb[j][gone] = 0.0
                for p in involved:
                    mm[p][gone] = 0.0
        return bb, mm

    def _spectra_ffts(self, f: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        wf = (w * f).astype(self.dtype)
        G1 = np.conj(sfft.rfft(wf, n=self.n_fft, axis=1))
        G0 = np.conj(sfft.rfft(w.astype(self.dtype_m), n=self.n_fft, axis=1))
        fwf = np.einsum("np,np,np->n", w, f, f)
        return G1, G0, fwf

    def _to_grid(self, x: np.ndarray) -> np.ndarray:
        """(P, N, ns, ...) per-phase arrays in descending lnz -> (N, J, ...) on the increasing grid."""
        x = np.moveaxis(x, 0, 2)  # (N, ns, P, ...)
        x = x.reshape((x.shape[0], self.n_shift * self.n_phase) + x.shape[3:])
        return x[:, self._keep][:, ::-1]

    def normal_equations(
        self, f: np.ndarray, w: np.ndarray, lsf_index: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """b (N, J, K), M (N, J, K, K) and f.W.f (N,) on the increasing z grid :attr:`lnz` (float64)."""
        G1, G0, fwf = self._spectra_ffts(f, w)
        bs, Ms = [], []
        for ph in range(self.n_phase):
            bb, mm = self._phase_equations(G1, G0, self.kernels[lsf_index], ph)
            M = np.empty((f.shape[0], self.n_shift, self.K, self.K))
            for p, (j, k) in enumerate(self.pairs):
                M[:, :, j, k] = mm[p]
                M[:, :, k, j] = mm[p]
            bs.append(np.moveaxis(bb, 0, -1).astype(np.float64))
            Ms.append(M)
        return self._to_grid(np.stack(bs)), self._to_grid(np.stack(Ms)), fwf

    def _prior_arrays(self) -> tuple[np.ndarray, ...]:
        """The prior components as arrays for :func:`csstz.templates.solve_kernel.solve_prior`."""
        if not hasattr(self, "_prior_arr"):
            self._prior_arr = (
                np.array([c[0] for c in self.prior], np.float64),
                np.array([c[1] for c in self.prior], np.float64).reshape(len(self.prior), self.K),
                np.array([c[2] for c in self.prior], np.float64).reshape(len(self.prior), self.K, self.K),
                np.array([c[3] for c in self.prior], np.float64),
            )
        return self._prior_arr

    def _solve_phase(
        self, bb: np.ndarray, mm: np.ndarray, fwf: np.ndarray, mode: str, with_coeff: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """log L ((N, ns), or (C, N, ns) for the C-curve modes) and coefficients (K, N, ns) (None for "ls" without
        ``with_coeff``) of one phase from its normal equations (compiled solves, :mod:`.solve_kernel`)."""
        bb = np.ascontiguousarray(bb, np.float64)
        mm = np.ascontiguousarray(mm, np.float64)
        fwf = np.ascontiguousarray(fwf, np.float64)
        N, ns = bb.shape[1:]
        pj, pk = self._pair_index
        if mode == "ls" and not with_coeff:
            ll = np.empty((N, ns))
            solve_ls_forward(bb, mm, fwf, pj, pk, ll)
            return ll, None
        coef = np.empty((self.K, N, ns))
        if mode == "ls":
            ll = np.empty((N, ns))
            solve_ls(bb, mm, fwf, pj, pk, ll, coef)
            return ll, coef
        n_nested = self.n_free if mode == "prior+ls+nested" else 0  # only that mode pays for the nested curve
        ll = self._solve_prior(bb, mm, fwf, coef, n_nested)
        if mode == "prior+ls+nested" and n_nested == 0:
            ll[2] = ll[0]  # nothing to drop: the nested model is the model
        return (ll[0] if mode == "prior" else ll[: N_CURVES[mode]]), coef

    def _solve_prior(
        self, bb: np.ndarray, mm: np.ndarray, fwf: np.ndarray, coef: np.ndarray, n_nested: int
    ) -> np.ndarray:
        """The prior marginal, least-squares and nested (without the last ``n_nested`` templates) log-likelihoods
        (3, N, S) of normal equations b (K, N, S), M pairs (npair, N, S), f.W.f (N,); fills ``coef`` (K, N, S)."""
        ll = np.empty((3,) + bb.shape[1:])
        logw, mu, prec, logdet_prec = self._prior_arrays()
        pj, pk = self._pair_index
        solve_prior(
            bb, mm, fwf, pj, pk, self.norm, logw, mu, prec, logdet_prec, AMPLITUDE_FLOOR_REL, self.occam,
            ll[0], ll[1], coef, n_nested, ll[2],
        )  # fmt: skip
        return ll

    def loglike(
        self, f: np.ndarray, w: np.ndarray, lsf_index: int = 0, mode: str = "ls", with_coeff: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """log L(z) (N, J) on :attr:`z`, and the coefficients at each z (N, J, K) (None for "ls" unless
        ``with_coeff``: the least-squares chi2 needs only the forward substitution).

        ``mode="ls"``: -chi2_min/2 (plain least squares, coefficients of any sign).
        ``mode="prior"``: log marginal likelihood with the basis's coefficient prior (module docstring).
        ``mode="prior+ls"``: both from one set of FFTs and solves, log L of shape (N, 2, J) (prior, ls).
        ``mode="prior+ls+nested"``: (N, 3, J), the third the prior likelihood without the basis's free emission
        lines (:attr:`n_free` trailing templates; the prior likelihood itself when there are none).
        """
        if mode not in MODES:
            raise InputError("mode", "unknown likelihood", value=mode, allowed=", ".join(MODES))
        if mode != "ls" and not self.basis.has_prior:
            raise InputError("mode", f"basis {self.basis.name!r} has no coefficient prior", value=mode)
        G1, G0, fwf = self._spectra_ffts(f, w)
        ker = self.kernels[lsf_index]
        lls, coefs = [], []
        N = f.shape[0]
        sub = max(1, SOLVE_ELEMENTS // self.n_shift)  # spectra per cache-sized solve chunk
        for ph in range(self.n_phase):
            bb, mm = self._phase_equations(G1, G0, ker, ph)
            nc = N_CURVES[mode]
            ll = np.empty((nc, N, self.n_shift) if nc > 1 else (N, self.n_shift))
            a = np.empty((self.K, N, self.n_shift))
            for s in range(0, N, sub):
                sl = slice(s, min(s + sub, N))
                ll[..., sl, :], a_sl = self._solve_phase(bb[:, sl], mm[:, sl], fwf[sl], mode, with_coeff)
                a[:, sl] = np.nan if a_sl is None else a_sl
            lls.append(np.moveaxis(ll, 0, -1) if nc > 1 else ll)
            coefs.append(np.moveaxis(a, 0, -1))
        ll = self._to_grid(np.stack(lls))  # (N, J) or (N, J, C)
        if N_CURVES[mode] > 1:
            ll = np.moveaxis(ll, -1, 1)
        return ll, (None if mode == "ls" and not with_coeff else self._to_grid(np.stack(coefs)))

    def local_loglike(
        self, f: np.ndarray, w: np.ndarray, lsf_index: int, grid_index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The prior marginal log-likelihood and its nested version (without the free lines) at a few grid
        redshifts per spectrum, from normal equations summed directly on the common grid (no FFT).

        The same likelihood as :meth:`loglike` ``mode="prior+ls+nested"`` (curves 0 and 2) at those
        redshifts, to round-off, except (a) that the amplitude floor (:data:`AMPLITUDE_FLOOR_REL`) is relative
        to the largest amplitude over the given redshifts only, and (b) at the redshifts where the FFT declares a
        compact (emission-line) template absent (its ``M_jj`` below :data:`COMPACT_ABSENT_REL` of its maximum:
        the line barely on a band's edge), where the direct sums keep its small contribution (~1e-4 in log L).

        Costs ``(K + K(K+1)/2) L`` multiply-adds per redshift (one matrix product per spectrum over the
        rest-grid window its redshifts span): cheap for a handful, which is what the peak relocation of
        :meth:`csstz.templates.physics.PhysicsCurves.relocate` needs.

        Parameters
        ----------
        f, w : ndarray, shape (N, L)
            :meth:`prepare_spectra`'s flux and weights.
        lsf_index : int
            The LSF template set.
        grid_index : ndarray of int, shape (N, S)
            Indices into :attr:`z` (``n_phase`` must be 1).

        Returns
        -------
        ll, ll_nested : ndarray, shape (N, S)
            ``ll_nested`` equals ``ll`` for a basis without free lines.
        """
        if self.n_phase != 1:
            raise InputError("n_phase", "local likelihoods need one template phase", value=self.n_phase)
        if not self.basis.has_prior:
            raise InputError("basis", f"basis {self.basis.name!r} has no coefficient prior")
        gi = np.atleast_2d(np.asarray(grid_index, np.int64))
        f = np.ascontiguousarray(f, np.float64)
        w = np.ascontiguousarray(w, np.float64)
        if f.ndim != 2 or f.shape != w.shape or f.shape[1] != self.L or gi.shape[0] != f.shape[0]:
            raise InputError("f", f"flux and weights must be (N, {self.L}) with one row of grid_index each")
        if gi.size and (gi.min() < 0 or gi.max() >= self.z.size):
            raise InputError("grid_index", "outside the redshift grid", allowed=f"0 .. {self.z.size - 1}")
        # rest-grid index of common-grid pixel 0 at ln(1+z) = lnz_max - m h  is  m
        offset = np.rint((self.lnz_max - self.lnz[gi]) / self.h).astype(np.int64)
        N, S = gi.shape
        K, L = self.K, self.L
        tq = self.kernels[lsf_index].rest_tq  # (n_rest, K + npair)
        bb = np.empty((K, N, S))
        mm = np.empty((len(self.pairs), N, S))
        wf = w * f
        lo_all = offset.min(axis=1)
        spans = offset.max(axis=1) - lo_all + L
        V = np.zeros((2 * S, int(spans.max()) if N else L))
        for n in range(N):
            lo, span = int(lo_all[n]), int(spans[n])
            # row s of V holds w f (rows < S) or w (rows >= S) where shift s's window meets the rest grid
            V[:, :span] = 0.0
            for s in range(S):
                a = int(offset[n, s]) - lo
                V[s, a : a + L] = wf[n]
                V[S + s, a : a + L] = w[n]
            out = V[:, :span] @ tq[lo : lo + span]  # (2 S, K + npair)
            bb[:, n] = out[:S, :K].T
            mm[:, n] = out[S:, K:].T
        fwf = np.einsum("np,np,np->n", w, f, f)
        ll = self._solve_prior(bb, mm, fwf, np.empty((self.K, N, S)), self.n_free)
        return ll[0], (ll[2] if self.n_free > 0 else ll[0].copy())


# --- drivers -------------------------------------------------------------------------------------------------
def lsf_bins(sigma_pix: np.ndarray, psf_sigma_pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of each galaxy's LSF sigma and the bins' centre sigmas [pixels] (ratio LSF_BIN_RATIO)."""
    k = np.clip(
        np.floor(np.log(np.maximum(sigma_pix, psf_sigma_pix) / psf_sigma_pix) / math.log(LSF_BIN_RATIO)).astype(int),
        0,
        LSF_MAX_BINS - 1,
    )
    return k, psf_sigma_pix * LSF_BIN_RATIO ** (np.arange(LSF_MAX_BINS) + 0.5)


def loglike_curves(
    model: XcorrModel,
    flux_by_band: dict,
    err_by_band: dict,
    lsf_index: np.ndarray | None = None,
    mode: str = "ls",
    threads: int = 2,
    block: int = BLOCK,
    with_coeff: bool = False,
    prepared: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """log L(z) of N spectra, (N, J) float32 ((N, C, J) for the C-curve modes ``"prior+ls"``,
    ``"prior+ls+nested"``), blocks of ``block`` run
    on ``threads`` threads.

    ``lsf_index``: None (all use template set 0) or an int array (N,) choosing the LSF set of each spectrum.
    ``with_coeff``: also return the basis coefficients at every redshift, (N, J, K) float32 (the prior's
    best component for ``"prior"`` modes, least squares for ``"ls"``).
    ``prepared``: the spectra's :meth:`XcorrModel.prepare_spectra` (f, w), when the caller has them already.
    """
    f, w = prepared if prepared is not None else model.prepare_spectra(flux_by_band, err_by_band)
    N = f.shape[0]
    idx = np.zeros(N, int) if lsf_index is None else np.asarray(lsf_index, int)
    nc = N_CURVES.get(mode, 1)
    out = np.empty((N, nc, model.lnz.size) if nc > 1 else (N, model.lnz.size), np.float32)
    coef = np.empty((N, model.lnz.size, model.K), np.float32) if with_coeff else None
    jobs = []
    for k in np.unique(idx):
        rows = np.flatnonzero(idx == k)
        for s in range(0, rows.size, block):
            jobs.append((int(k), rows[s : s + block]))

    def run(job: tuple[int, np.ndarray]) -> None:
        k, rows = job
        ll, a = model.loglike(f[rows], w[rows], k, mode, with_coeff=with_coeff)
        out[rows] = ll
        if with_coeff:
            coef[rows] = a

    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(run, jobs))
    else:
        for j in jobs:
            run(j)
    return (out, coef) if with_coeff else out


def archetype_loglike(
    model: XcorrModel, f: np.ndarray, w: np.ndarray, prototypes: np.ndarray, lsf_index: int = 0, block: int = 16
) -> np.ndarray:
    """log L(z) marginalised over P prototype SEDs (archetypes), each with a free positive amplitude.

    Each prototype is a fixed coefficient vector c_p of the basis (e.g. training SEDs projected on it). With
    b_p = c_p.b(s), m_p = c_p.M(s).c_p, the amplitude-marginalised (flat prior on A > 0, Laplace) likelihood
    is -[f.W.f - b_p^2/m_p]/2 - log(m_p)/2 when b_p > 0 (else -f.W.f/2), and the prototypes are summed
    with equal weights (a kernel-density prior on SED shapes). Cost ~ 30 P flops per shift and spectrum.

    Parameters
    ----------
    f, w : (N, L) flux and weights on the common grid (:meth:`XcorrModel.prepare_spectra`).
    prototypes : (P, K)

    Returns
    -------
    (N, J) log L on :attr:`XcorrModel.z`.
    """
    from scipy.special import logsumexp

    C = np.asarray(prototypes, np.float64)
    P, K = C.shape
    if K != model.K:
        raise InputError("prototypes", f"must have {model.K} coefficients per row", value=C.shape)
    outer = np.einsum("pj,pk->pjk", C, C).reshape(P, K * K)
    out = np.empty((f.shape[0], model.z.size))
    for s in range(0, f.shape[0], block):
        sl = slice(s, min(s + block, f.shape[0]))
        b, M, fwf = model.normal_equations(f[sl], w[sl], lsf_index)
        bp = b @ C.T
        mp = np.maximum(M.reshape(M.shape[0], M.shape[1], K * K) @ outer.T, 1e-300)
        chi = np.where(bp > 0, fwf[:, None, None] - bp**2 / mp, fwf[:, None, None])
        out[sl] = logsumexp(-0.5 * chi - 0.5 * np.log(mp), axis=2) - math.log(P)
    return out


def posterior(
    lnz: np.ndarray, logl: np.ndarray, temperature: float = 1.0, log_prior_z: np.ndarray | None = None
) -> dict:
    """p(z) and its summaries from log-likelihood curves on a ln(1+z) grid.

    Parameters
    ----------
    lnz : (J,) increasing ln(1+z) grid.
    logl : (N, J) log-likelihood (any additive constant per row).
    temperature : float
        log L is divided by it (calibration; 1 = none).
    log_prior_z : (J,) optional
        log of a prior density per unit z (e.g. the training split's n(z)).

    Returns
    -------
    dict
        ``z_grid`` (J,), ``pz`` (N, J) float32 density per unit z (trapezoid-normalised),
        ``z`` (mode, parabola-refined in ln(1+z)), ``zerr`` (half the central 68.3% interval),
        ``z_lo68, z_hi68, z_lo95, z_hi95``, ``p_second`` (mass beyond 0.02 (1+z) of the mode).
    """
    if not temperature > 0:
        raise InputError("temperature", "must be > 0", value=temperature)
    z = np.expm1(lnz)
    lp = np.asarray(logl, np.float64) / temperature - np.log1p(z)[None, :]  # density per unit z
    if log_prior_z is not None:
        lp = lp + np.asarray(log_prior_z, np.float64)[None, :]
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    i = np.argmax(lp, axis=1)
    rows = np.arange(lp.shape[0])
    p = np.exp(lp - lp[rows, i][:, None])
    dz = np.diff(z)
    area = (0.5 * (p[:, 1:] + p[:, :-1]) * dz).sum(axis=1)
    p /= area[:, None]
    # mode refined by a parabola through the log-density in ln(1+z)
    J = lnz.size
    ic = np.clip(i, 1, J - 2)
    y0, y1, y2 = lp[rows, ic - 1], lp[rows, ic], lp[rows, ic + 1]
    den = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(den < 0, 0.5 * (y0 - y2) / den, 0.0)
    off = np.where((i == 0) | (i == J - 1) | ~np.isfinite(off), 0.0, np.clip(off, -0.5, 0.5))
    h = np.diff(lnz)
    zmode = np.expm1(lnz[i] + off * np.where(off >= 0, h[np.minimum(i, J - 2)], h[np.maximum(i - 1, 0)]))
    cdf = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(0.5 * (p[:, 1:] + p[:, :-1]) * dz, axis=1)], axis=1)
    q = {}
    for name, lev in (
        ("lo68", 0.5 - 0.6827 / 2),
        ("hi68", 0.5 + 0.6827 / 2),
        ("lo95", 0.5 - 0.9545 / 2),
        ("hi95", 0.5 + 0.9545 / 2),
    ):
        q[name] = np.array([np.interp(lev, c, z) for c in cdf])
    far = np.abs(z[None, :] - zmode[:, None]) / (1 + zmode[:, None]) > SECOND_PEAK_DZ
    mass_far = (0.5 * ((p * far)[:, 1:] + (p * far)[:, :-1]) * dz).sum(axis=1)
    return {
        "z_grid": z,
        "pz": p.astype(np.float32),
        "z": zmode,
        "zerr": 0.5 * (q["hi68"] - q["lo68"]),
        "z_lo68": q["lo68"],
        "z_hi68": q["hi68"],
        "z_lo95": q["lo95"],
        "z_hi95": q["hi95"],
        "p_second": mass_far,
        "cdf": cdf,
    }


def pit(z_grid: np.ndarray, cdf: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """CDF of each p(z) at the true redshift (PIT), shape (N,)."""
    return np.array([np.interp(zt, z_grid, c) for zt, c in zip(z_true, cdf)])


def nz_log_prior(z_train: np.ndarray, z_grid: np.ndarray, smooth_dz: float = 0.02) -> np.ndarray:
    """log of the training split's n(z) (Gaussian-smoothed histogram, density per unit z) on ``z_grid``."""
    zt = np.asarray(z_train, np.float64)
    zt = zt[np.isfinite(zt)]
    dens = np.zeros_like(z_grid)
    for s in range(0, zt.size, 2000):
        dens += np.exp(-0.5 * ((z_grid[None, :] - zt[s : s + 2000, None]) / smooth_dz) ** 2).sum(axis=0)
    dens /= np.trapezoid(dens, z_grid)
    return np.log(np.maximum(dens, 1e-6 * dens.max()))


def fit_xcorr(
    spectra: SpectraSet,
    basis: TemplateBasis,
    bands: Sequence[str] = ("GV", "GI"),
    lsf: str = "morphology",
    mode: str = "prior",
    temperature: float = 1.0,
    log_prior_z: np.ndarray | None = None,
    zmin: float = 0.0,
    zmax: float = 1.6,
    instrument: Instrument | PathLike | None = None,
    threads: int = 2,
) -> tuple[Table, np.ndarray, np.ndarray]:
    """Redshifts and p(z) of every spectrum of a :class:`csstz.io.spectra.SpectraSet` by FFT chi2.

    Parameters
    ----------
    spectra : SpectraSet
        With ``bands`` and a catalogue (TARGETID; SHAPE_R, SERSIC, BA, PA for ``lsf="morphology"``).
    basis : TemplateBasis
        From :func:`csstz.templates.learned.load_basis`.
    lsf : {"point", "morphology"}
        PSF-only LSF, or broadened by each galaxy's catalogue shape (bins of :data:`LSF_BIN_RATIO`).
    mode : {"ls", "prior"}
    temperature, log_prior_z
        Passed to :func:`posterior` (log_prior_z on the model's z grid, e.g. :func:`nz_log_prior`).

    Returns
    -------
    table : astropy.table.Table
        ``TARGETID, Z, ZERR, Z_LO68, Z_HI68, Z_LO95, Z_HI95, P_SECOND, LOGL_MAX, LSF_SIGMA_PIX``.
    pz : ndarray (N, J) float32
        Density per unit z, trapezoid-normalised on ``z_grid`` (the PZ HDU).
    z_grid : ndarray (J,)
        The PZ_GRID HDU.
    """
    from astropy.table import Table

    from ..instrument import Instrument, load_instrument, parse_instrument
    from .basis import galaxy_lsf_sigma_pix

    bands = tuple(bands)
    for b in bands:
        if b not in spectra.bands:
            raise InputError("bands", "band not in the spectra", value=b, allowed=", ".join(spectra.bands))
    if lsf not in ("point", "morphology"):
        raise InputError("lsf", "unknown line-spread model", value=lsf, allowed="point, morphology")
    if isinstance(instrument, Instrument):
        inst = instrument
    elif instrument is not None:
        inst = load_instrument(instrument)
    else:
        text = spectra.attrs.get("instrument") if spectra.attrs else None
        inst = parse_instrument(text, origin="spectra file") if text else load_instrument()
    cat = spectra.catalog
    n = len(cat)
    if lsf == "morphology":
        for col in ("SHAPE_R", "SERSIC", "BA", "PA"):
            if col not in cat.colnames:
                raise InputError(col, "column missing from the catalogue (needed for lsf='morphology')")
        sig = galaxy_lsf_sigma_pix(inst, cat["SHAPE_R"], cat["SERSIC"], cat["BA"], cat["PA"])
        idx, centres = lsf_bins(sig, inst.psf_sigma_pix)
        used = np.unique(idx)
        sigmas, idx = centres[used], np.searchsorted(used, idx)
    else:
        sigmas, idx = np.array([inst.psf_sigma_pix]), np.zeros(n, int)
    model = XcorrModel(
        basis,
        {b: np.asarray(spectra.bands[b].wave_aa, np.float64) for b in bands},
        lsf_sigma_pix=sigmas,
        zmin=zmin,
        zmax=zmax,
    )
    logl = loglike_curves(
        model,
        {b: spectra.bands[b].flux for b in bands},
        {b: spectra.bands[b].err for b in bands},
        lsf_index=idx,
        mode=mode,
        threads=threads,
    )
    po = posterior(model.lnz, logl, temperature=temperature, log_prior_z=log_prior_z)
    tab = Table()
    tab["TARGETID"] = np.asarray(cat["TARGETID"], np.int64)
    for col, key in (
        ("Z", "z"),
        ("ZERR", "zerr"),
        ("Z_LO68", "z_lo68"),
        ("Z_HI68", "z_hi68"),
        ("Z_LO95", "z_lo95"),
        ("Z_HI95", "z_hi95"),
        ("P_SECOND", "p_second"),
    ):
        tab[col] = po[key]
    tab["LOGL_MAX"] = logl.max(axis=1)
    tab["LSF_SIGMA_PIX"] = sigmas[idx].astype(np.float32)
    tab.meta.update(
        {
            "METHOD": f"xcorr-{mode}",
            "BASIS": basis.name,
            "BANDS": ",".join(bands),
            "LSF": lsf,
            "DLNLAM": model.h,
            "TEMPER": float(temperature),
        }
    )
    return tab, po["pz"], po["z_grid"]


__all__ = [
    "XcorrModel",
    "fit_xcorr",
    "archetype_loglike",
    "common_grid",
    "resampling_matrix",
    "resample",
    "loglike_curves",
    "posterior",
    "pit",
    "nz_log_prior",
    "lsf_bins",
    "DEFAULT_DLNLAM",
    "SECOND_PEAK_DZ",
    "LSF_BIN_RATIO",
    "LSF_MAX_BINS",
]
