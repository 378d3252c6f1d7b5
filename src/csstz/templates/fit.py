"""The traditional baseline: chi-square template fitting over a fine redshift grid.

At every redshift of a grid uniform in ln(1+z), each spectrum is fitted by a
non-negative combination of the kcorrect NMF galaxy basis (Blanton & Roweis
2007; the ``kcorrect-default-v4`` templates shipped in the ``kcorrect``
package), redshifted, convolved with the CSST line-spread function and averaged
over each pixel of the instrument's band grid:

    chi2(z) = min_{c >= 0} sum_p w_p (f_p - sum_k c_k M_kp(z))^2,   w_p = 1/err_p^2,

over the pixels with finite ``err > 0`` of the chosen bands (GV + GI by default,
the paper's network inputs). The best redshift is the grid minimum refined by a
parabola through it and its two neighbours.

Line-spread function (``docs/design.md``): a Gaussian of
sigma = PSF sigma [pixels] x dispersion [A/pixel] (0.3" FWHM -> 1.72 px; GV
6.0 A/px -> 10.3 A) convolved with the one-pixel box. Extended galaxies have
broader lines: with ``lsf="morphology"`` the Gaussian is widened by each galaxy's
catalogue shape projected on the dispersion axis (:func:`galaxy_lsf_sigma_pix`),
galaxies being grouped in bins of LSF width (one template grid per bin).

Output columns (:func:`fit_templates`): ``TARGETID, Z, ZERR, ZWARN, CHI2_MIN,
DELTA_CHI2, NPIX, COEFF`` (best non-negative template coefficients, (N, 5)),
``LSF_SIGMA_PIX`` (the LSF sigma used, pixels).

* ``ZERR``: half the width of the region where ``chi2 < chi2_min + 1``
  (linear interpolation between grid points), floored at the grid step
  ``(1 + z) dlnz``.
* ``ZWARN`` bits (:class:`csstz.zwarn.ZWARN`): ``SMALL_DELTA_CHI2`` another local
  minimum of the chi2 curve lies more than ``|dz|/(1+z) = 0.01`` away with
  ``chi2 < chi2_min + 9``; ``Z_FITLIMIT`` the minimum is the first or last grid point;
  ``LITTLE_COVERAGE`` fewer than ``MIN_VALID_PIX`` usable pixels (Z, ZERR are then NaN).
* ``DELTA_CHI2``: chi2 of the best other local minimum beyond 0.01 (1+z), minus
  ``CHI2_MIN`` (inf if none). Values above 9 are lower bounds (see below).
* p(z) (``table.meta["PZ"]``, (N, Nz) float32, and ``table.meta["PZ_GRID"]``, the grid
  redshifts; written as the predictions HDUs PZ / PZ_GRID): ``exp(-(chi2 - chi2_min)/2)``
  on the grid (a flat prior in z), a density per unit z, trapezoid-normalised
  (:func:`csstz.templates.pdf.from_chi2`); all NaN where the fit failed (ZWARN LITTLE_COVERAGE).

Basis (``basis=``, ``csstz fit-templates --basis``; :func:`resolve_basis`):

* ``"kcorrect"`` (default) or a kcorrect-layout template FITS: the non-negative fit above
  (``METHOD = templates``).
* ``"learned:DATASET.h5[:K]"`` or a basis HDF5 (:func:`csstz.templates.learned.save_basis`): a PCA basis
  learned from the training split's rest-frame SEDs (:func:`csstz.templates.physics.learn_physics_basis`;
  embedded, sps and mixed builds; the test split is never read). Its components have both signs, so
  NNLS does not apply and plain least squares over a PCA basis has many outliers (docs/estimator.md);
  instead log L(z) is the marginal likelihood with the basis's Gaussian coefficient prior
  (:class:`csstz.templates.xcorr.XcorrModel`, ``mode="prior"``; ``"ls"`` for a basis file without a
  prior), on a grid of step 1.15e-3 / 2 in ln(1+z) (finer with ``dlnz``), LSF bins by morphology as in
  :mod:`csstz.templates.physics`. p(z) is proportional to L(z) (flat prior in z,
  :func:`csstz.templates.pdf.from_loglike`), Z its mode (:func:`csstz.templates.pdf.mode`), ZERR half its
  central 68.3% interval, floored at the grid step. Columns ``TARGETID, Z, ZERR, ZWARN, LOGL_MAX, NPIX,
  LSF_SIGMA_PIX``; ``METHOD = templates-xcorr-prior`` (or ``-ls``). ZWARN: LITTLE_COVERAGE, Z_FITLIMIT
  (maximum of log L at a grid end), BAD_MINFIT (no finite log L), MULTIMODAL.

For every basis ``ZWARN`` MULTIMODAL is set where more than :data:`MULTIMODAL_MASS` (0.2) of p(z) lies
farther than 0.02 (1 + Z) from Z (:func:`csstz.templates.pdf.mass_away_from_mode`). Header keywords
(:data:`HEADER_KEYS`): METHOD, TPLFILE (template file or basis name), BASIS (the ``--basis`` value),
NBASIS (number of templates), ZMIN, ZMAX, DLNZ (grid step in ln(1+z)), BANDS, LSF.

Speed: the normal equations ``A = M W M^T`` (K x K) and ``b = M W f`` of every
(galaxy, redshift) come from two matrix products over all grid points at once.
The exact non-negative solution of a K = 5 problem is found by enumerating the
31 supports: the NNLS optimum is the lowest chi2 among the supports whose
unconstrained solution is non-negative. That enumeration (a vectorised Cholesky
per support) runs only where it can matter: where the unconstrained chi2 (a
lower bound) is below ``U + PZ_DCHI2`` (30), ``U`` the exact chi2 at the unconstrained
minimum; elsewhere the curve holds the lower bound, which is then above
``chi2_min + 30``: it cannot change Z, ZWARN, the Delta chi2 = 1 region, and its weight in
p(z) is below exp(-15) of the peak per grid point.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from astropy.table import Table

from ..config import LSF_MODELS, ParallelConfig
from ..errors import CsstzError, FileFormatError, InputError
from ..instrument import Instrument, load_instrument, parse_instrument
from ..io.spectra import SpectraSet
from ..parallel import parallel_map
from ..schema import Z_RANGE, network_bands
from ..zwarn import ZWARN
from .basis import galaxy_lsf_sigma_pix, load_templates, lsf_sigma_aa, resolution_matrix, sersic_width_factor_table
from .nnls import chol_solve, nnls_enumerate, ridge
from .pdf import central_interval, from_chi2, from_loglike, mass_away_from_mode
from .pdf import mode as pdf_mode

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from rich.progress import Progress

    from .._types import ArrayLike, PathLike
    from .learned import TemplateBasis

#: Default grid step in ln(1+z): ~1/2 of a GV/GI pixel (6/5000 ~ 9.7/8300 ~ 1.2e-3 in ln(lambda)),
#: so that the parabolic refinement reaches ~1e-5 (1+z) on noiseless spectra (tests: < 1e-4).
DEFAULT_DLNZ = 5.0e-4
#: Fewest usable pixels for a fit (set ZWARN bit 4 below this).
MIN_VALID_PIX = 20
#: A second local minimum counts as ambiguous beyond this |dz|/(1+z) and below this Delta chi2.
SECOND_MIN_DZ = 0.01
SECOND_MIN_DCHI2 = 9.0
#: The chi2 curve is exact (NNLS) wherever it lies within this of the minimum; beyond, it holds a lower
#: bound, whose p(z) weight exp(-dchi2/2) < 3e-7 of the peak is negligible (sum over the grid < 1e-3).
PZ_DCHI2 = 30.0
# the bits of csstz.zwarn.ZWARN this method sets
ZWARN_AMBIGUOUS = ZWARN.SMALL_DELTA_CHI2
ZWARN_EDGE = ZWARN.Z_FITLIMIT
ZWARN_FEW_PIXELS = ZWARN.LITTLE_COVERAGE
#: Galaxies per block of the matrix products (memory ~ block x grid x 20 x 8 bytes).
GALAXY_BLOCK = 32


def check_flux_err(flux: ArrayLike, err: ArrayLike, n_pix: int) -> tuple[np.ndarray, np.ndarray]:
    """Flux and err as float64 (N, n_pix), checked: err > 0 where finite, flux finite where err is.

    Raises
    ------
    InputError
        Wrong shapes, ``err <= 0``, or non-finite flux where ``err`` is finite.
    """
    flux = np.asarray(flux, np.float64)
    err = np.asarray(err, np.float64)
    if flux.ndim != 2 or flux.shape[1] != n_pix:
        raise InputError("flux", f"must have shape (N, {n_pix})", value=flux.shape)
    if err.shape != flux.shape:
        raise InputError("err", f"shape {err.shape} differs from flux {flux.shape}")
    finite = np.isfinite(err)
    if np.any(finite & (err <= 0)):
        r, c = np.argwhere(finite & (err <= 0))[0]
        raise InputError("err", "must be > 0 (or inf/NaN for no data)", row=int(r), value=float(err[r, c]))
    if np.any(finite & ~np.isfinite(flux)):
        r, c = np.argwhere(finite & ~np.isfinite(flux))[0]
        raise InputError("flux", "must be finite where err is finite", row=int(r), value=float(flux[r, c]))
    return flux, err


# --- the model grid ----------------------------------------------------------------------------
class TemplateModel:
    """The template basis rendered on the pixel grids of some bands, and the fit against it.

    Parameters
    ----------
    wave_by_band : dict of str -> ndarray, shape (L_b,)
        Pixel-centre wavelengths of each band [A], strictly increasing.
    lsf_sigma_by_band : dict of str -> float
        Gaussian LSF sigma of each band [A], > 0.
    zmin, zmax : float
        Redshift range of the grid, 0 <= zmin < zmax.
    dlnz : float, optional
        Grid step in ln(1+z) (default :data:`DEFAULT_DLNZ`).
    template_path : str, optional
        Template file (default: the kcorrect basis).
    normal_equations : bool
        Also keep the products of template pairs that :meth:`fit` needs (False: :attr:`models` only, a fifth of
        the memory, for callers that form the normal equations at a few redshifts themselves, such as
        :class:`csstz.templates.locator.NNLSLocator`).

    Attributes
    ----------
    z : ndarray, shape (Nz,)
        The redshift grid (uniform in ln(1+z), both ends included).
    models : ndarray, shape (Nz, K, P)
        Template k at grid redshift i on the P concatenated pixels [template unit].
    """

    def __init__(
        self,
        wave_by_band: dict,
        lsf_sigma_by_band: dict,
        zmin: float = Z_RANGE[0],
        zmax: float = Z_RANGE[1],
        dlnz: float | None = None,
        template_path: str | None = None,
        normal_equations: bool = True,
    ) -> None:
        dlnz = DEFAULT_DLNZ if dlnz is None else dlnz
        for name, val, lo in (("zmin", zmin, 0.0), ("zmax", zmax, 0.0), ("dlnz", dlnz, 0.0)):
            if not (isinstance(val, (int, float)) and math.isfinite(val)) or val < lo or (name != "zmin" and val <= 0):
                raise InputError(name, "must be a finite number" + (" >= 0" if name == "zmin" else " > 0"), value=val)
        if zmax <= zmin:
            raise InputError("zmax", "must exceed zmin", value=zmax, allowed=f"> {zmin}")
        if dlnz > 0.01:
            raise InputError("dlnz", "too coarse for a redshift fit", value=dlnz, allowed="<= 0.01")
        if not wave_by_band:
            raise InputError("bands", "no band to fit")
        self.bands = tuple(wave_by_band)
        self.wave_by_band = {}
        self._fine, self._R = {}, {}
        for b in self.bands:
            w = np.asarray(wave_by_band[b], np.float64)
            if w.ndim != 1 or w.size < 2 or not np.all(np.isfinite(w)) or not np.all(np.diff(w) > 0):
                raise InputError(f"{b}.wave", "pixel wavelengths must be finite and strictly increasing")
            s = float(lsf_sigma_by_band[b])
            if not (math.isfinite(s) and s > 0):
                raise InputError(f"{b}.lsf_sigma_aa", "must be > 0", value=s)
            self.wave_by_band[b] = w
            self._fine[b], self._R[b] = resolution_matrix(w, s)
        self.template_wave_aa, self.template_flux = load_templates(template_path)
        n = int(math.ceil((math.log1p(zmax) - math.log1p(zmin)) / dlnz - 1e-9))
        self.lnz = np.linspace(math.log1p(zmin), math.log1p(zmax), n + 1)
        self.dlnz = float(self.lnz[1] - self.lnz[0])
        self.z = np.expm1(self.lnz)
        self.n_templates = self.template_flux.shape[0]
        self.n_pix = sum(w.size for w in self.wave_by_band.values())
        self.models = self.render(self.z)
        if not normal_equations:
            return
        K = self.n_templates
        self._pairs = [(k, m) for k in range(K) for m in range(k, K)]
        ki, mi = np.array(self._pairs).T
        # (Nz * n_pairs, P): products of template pairs, for A = W @ pairs.T
        self._pair_prod = (self.models[:, ki, :] * self.models[:, mi, :]).reshape(-1, self.n_pix)
        self._models_flat = self.models.reshape(-1, self.n_pix)

    def render(self, z: ArrayLike) -> np.ndarray:
        """The templates at redshifts ``z`` on the pixel grids.

        Observed f_lambda(lambda) = T(lambda / (1 + z)) / (1 + z), convolved with
        the LSF and averaged over each pixel.

        Parameters
        ----------
        z : array_like, shape (Nz,)

        Returns
        -------
        ndarray, shape (Nz, K, P)
        """
        z = np.atleast_1d(np.asarray(z, np.float64))
        K = self.template_flux.shape[0]
        out = np.empty((z.size, K, sum(w.size for w in self.wave_by_band.values())))
        lnw = np.log(self.template_wave_aa)
        col = 0
        for b in self.bands:
            fine, R = self._fine[b], self._R[b]
            P = R.shape[1]
            for s in range(0, z.size, 256):
                zz = z[s : s + 256]
                x = (np.log(fine)[None, :] - np.log1p(zz)[:, None]).ravel()
                rest = np.stack([np.interp(x, lnw, t, left=0.0, right=0.0) for t in self.template_flux], axis=1)
                rest = rest.reshape(zz.size, fine.size, K).transpose(0, 2, 1) / (1.0 + zz)[:, None, None]
                out[s : s + zz.size, :, col : col + P] = (R.T @ rest.reshape(-1, fine.size).T).T.reshape(zz.size, K, P)
            col += P
        return out

    # --- fitting ---------------------------------------------------------------------------
    def fit(self, flux: np.ndarray, err: np.ndarray, progress: Callable[[int], Any] | None = None) -> dict:
        """Fit spectra on the concatenated pixels of :attr:`bands`.

        Parameters
        ----------
        flux, err : ndarray, shape (N, P)
            Flux density and 1-sigma error [1e-17 erg/s/cm^2/A]; pixels with non-finite
            ``err`` are ignored.
        progress : callable, optional
            Called with the number of spectra done after each block.

        Returns
        -------
        dict of ndarray
            ``z, zerr, zwarn, chi2_min, delta_chi2, npix`` (N,), ``coeff`` (N, K) and ``pz`` (N, Nz)
            float32 (p(z) on :attr:`z`, density per unit z; NaN rows where the fit failed).

        Raises
        ------
        InputError
            Wrong shapes, ``err <= 0``, or non-finite flux where ``err`` is finite.
        """
        flux, err = check_flux_err(flux, err, self.n_pix)
        finite = np.isfinite(err)
        wgt = np.where(finite, 1.0 / np.where(finite, err, 1.0) ** 2, 0.0)
        f = np.where(finite, flux, 0.0)
        n = flux.shape[0]
        K = self.n_templates
        out = {
            "z": np.full(n, np.nan),
            "zerr": np.full(n, np.nan),
            "zwarn": np.zeros(n, np.int32),
            "chi2_min": np.full(n, np.nan),
            "delta_chi2": np.full(n, np.inf),
            "npix": finite.sum(axis=1).astype(np.int32),
            "coeff": np.full((n, K), np.nan),
            "pz": np.full((n, self.z.size), np.nan, np.float32),
        }
        for s in range(0, n, GALAXY_BLOCK):
            sl = slice(s, min(s + GALAXY_BLOCK, n))
            self._fit_block(f[sl], wgt[sl], out, sl)
            if progress is not None:
                progress(sl.stop - sl.start)
        return out

    def chi2_curve(self, flux: np.ndarray, err: np.ndarray) -> np.ndarray:
        """Exact NNLS chi2 at every grid redshift (no pruning; for tests and plots), shape (N, Nz)."""
        flux = np.atleast_2d(np.asarray(flux, np.float64))
        err = np.atleast_2d(np.asarray(err, np.float64))
        finite = np.isfinite(err) & (err > 0)
        wgt = np.where(finite, 1.0 / np.where(finite, err, 1.0) ** 2, 0.0)
        f = np.where(finite, flux, 0.0)
        A, b, fwf = self._normal_equations(f, wgt)
        nz = self.z.size
        chi2, _ = nnls_enumerate(A.reshape(-1, *A.shape[2:]), b.reshape(-1, b.shape[-1]), np.repeat(fwf, nz))
        return chi2.reshape(-1, nz)

    def _normal_equations(self, f: np.ndarray, wgt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A (G, Nz, K, K), b (G, Nz, K), f^T W f (G,) for a block of G spectra."""
        G, K, nz = f.shape[0], self.n_templates, self.z.size
        b = ((wgt * f) @ self._models_flat.T).reshape(G, nz, K)
        a_pairs = (wgt @ self._pair_prod.T).reshape(G, nz, len(self._pairs))
        A = np.empty((G, nz, K, K))
        for p, (k, m) in enumerate(self._pairs):
            A[:, :, k, m] = a_pairs[:, :, p]
            A[:, :, m, k] = a_pairs[:, :, p]
        fwf = np.einsum("gp,gp,gp->g", wgt, f, f)
        return A, b, fwf

    def _fit_block(self, f: np.ndarray, wgt: np.ndarray, out: dict[str, np.ndarray], sl: slice) -> None:
        G, K, nz = f.shape[0], self.n_templates, self.z.size
        npix = out["npix"][sl]
        A, b, fwf = self._normal_equations(f, wgt)
        # lower bound: unconstrained least squares at every grid point
        Af, bf = A.reshape(-1, K, K), b.reshape(-1, K)
        c_free = chol_solve(ridge(Af), bf)
        lower = np.repeat(fwf, nz) - np.einsum("mk,mk->m", bf, np.nan_to_num(c_free, nan=0.0))
        feasible = np.all(c_free >= 0, axis=1)  # NaN -> False
        chi2 = lower.reshape(G, nz).copy()
        coeff_at = np.where(feasible[:, None], c_free, np.nan).reshape(G, nz, K)
        # exact NNLS at each galaxy's unconstrained minimum -> upper bound U on the NNLS minimum
        i_low = np.argmin(chi2, axis=1)
        idx = np.arange(G) * nz + i_low
        u_chi2, _ = nnls_enumerate(Af[idx], bf[idx], fwf)
        need = (~feasible.reshape(G, nz)) & (chi2 < (u_chi2 + PZ_DCHI2 + 1e-6)[:, None])
        flat_need = np.flatnonzero(need.ravel())
        if flat_need.size:
            c2, cc = nnls_enumerate(Af[flat_need], bf[flat_need], np.repeat(fwf, nz)[flat_need])
            chi2.ravel()[flat_need] = c2
            coeff_at.reshape(-1, K)[flat_need] = cc
        ok = npix >= MIN_VALID_PIX
        if ok.any():
            out["pz"][sl][ok] = from_chi2(chi2[ok], self.z).astype(np.float32)
        for g in range(G):
            row = sl.start + g
            if npix[g] < MIN_VALID_PIX:
                out["zwarn"][row] |= int(ZWARN_FEW_PIXELS)
                continue
            self._summarise(chi2[g], coeff_at[g], out, row)

    def _summarise(self, c2: np.ndarray, coeff: np.ndarray, out: dict, row: int) -> None:
        """Best z (parabolic refinement), ZERR (Delta chi2 = 1), ZWARN, Delta chi2 of one curve."""
        nz, x, h = c2.size, self.lnz, self.dlnz
        i = int(np.argmin(c2))
        zwarn = 0
        if i == 0 or i == nz - 1:
            zwarn |= int(ZWARN_EDGE)
            x_best, c_best = x[i], c2[i]
        else:
            y0, y1, y2 = c2[i - 1], c2[i], c2[i + 1]
            den = y0 - 2.0 * y1 + y2
            off = 0.5 * (y0 - y2) / den if den > 0 else 0.0
            off = min(max(off, -0.5), 0.5)
            x_best, c_best = x[i] + off * h, y1 - 0.25 * (y0 - y2) * off
        z_best = math.expm1(x_best)
        # Delta chi2 = 1 interval, crossing found by linear interpolation on the grid
        level = c_best + 1.0
        lo = i
        while lo > 0 and c2[lo - 1] < level:
            lo -= 1
        hi = i
        while hi < nz - 1 and c2[hi + 1] < level:
            hi += 1
        x_lo = x[0] if lo == 0 else x[lo - 1] + h * (c2[lo - 1] - level) / (c2[lo - 1] - c2[lo])
        x_hi = x[-1] if hi == nz - 1 else x[hi] + h * (level - c2[hi]) / (c2[hi + 1] - c2[hi])
        sigma_lnz = max(0.5 * (x_hi - x_lo), h)
        # other local minima (edges count when lower than their neighbour)
        is_min = np.ones(nz, bool)
        is_min[1:] &= c2[1:] <= c2[:-1]
        is_min[:-1] &= c2[:-1] <= c2[1:]
        far = np.abs(self.z - z_best) / (1.0 + z_best) > SECOND_MIN_DZ
        others = c2[is_min & far]
        dchi2 = float(others.min() - c_best) if others.size else math.inf
        if dchi2 < SECOND_MIN_DCHI2:
            zwarn |= int(ZWARN_AMBIGUOUS)
        out["z"][row] = z_best
        out["zerr"][row] = (1.0 + z_best) * sigma_lnz
        out["zwarn"][row] |= zwarn
        out["chi2_min"][row] = c_best
        out["delta_chi2"][row] = dchi2
        out["coeff"][row] = coeff[i]


# --- public entry points -----------------------------------------------------------------------
def _instrument_for(spectra: SpectraSet, instrument: Instrument | PathLike | None) -> Instrument:
    if isinstance(instrument, Instrument):
        return instrument
    if instrument is not None:
        return load_instrument(instrument)
    text = spectra.attrs.get("instrument") if spectra.attrs else None
    return parse_instrument(text, origin="spectra file") if text else load_instrument()


@lru_cache(maxsize=2)
def _cached_model(
    bands: tuple[str, ...],
    waves: tuple[bytes, ...],
    sigmas: tuple[float, ...],
    zmin: float,
    zmax: float,
    dlnz: float | None,
    template_path: str | None = None,
) -> TemplateModel:
    return TemplateModel(
        {b: np.frombuffer(w) for b, w in zip(bands, waves)},
        dict(zip(bands, sigmas)),
        zmin=zmin,
        zmax=zmax,
        dlnz=dlnz,
        template_path=template_path,
    )


def _model_key(
    wave_by_band: dict,
    sigma_by_band: dict,
    zmin: float,
    zmax: float,
    dlnz: float | None,
    template_path: str | None = None,
) -> tuple:
    bands = tuple(wave_by_band)
    return (
        bands,
        tuple(np.asarray(wave_by_band[b], np.float64).tobytes() for b in bands),
        tuple(float(sigma_by_band[b]) for b in bands),
        float(zmin),
        float(zmax),
        None if dlnz is None else float(dlnz),
        template_path,
    )


def template_model_for(
    wave_by_band: dict,
    instrument: Instrument,
    zmin: float = Z_RANGE[0],
    zmax: float = Z_RANGE[1],
    dlnz: float | None = None,
) -> TemplateModel:
    """A (cached) :class:`TemplateModel` for these band grids and this instrument's LSF."""
    sigmas = {b: lsf_sigma_aa(instrument, b) for b in wave_by_band}
    return _cached_model(*_model_key(wave_by_band, sigmas, zmin, zmax, dlnz))


def _worker_fit(args: tuple) -> dict:
    # under the fork start method the parent's cached model is inherited; otherwise it is rendered
    # once per worker process (lru_cache)
    key, flux, err = args
    return _cached_model(*key).fit(flux, err)


#: Morphology-aware LSF: galaxies are grouped in bins of LSF sigma whose edges grow by this
#: factor from the PSF sigma; each bin is fitted with templates convolved at the bin's
#: geometric centre. The last bin takes everything broader.
LSF_BIN_RATIO = 1.3
LSF_MAX_BINS = 10


#: ``--basis`` values in words (error messages, help).
BASIS_ALLOWED = "kcorrect, learned:DATASET.h5[:K], or a basis FILE (.h5 from save_basis, kcorrect-layout .fits)"
#: Suffixes of a kcorrect-layout template FITS (fitted by NNLS like the default basis).
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")
#: ZWARN MULTIMODAL: set where the p(z) mass farther than 0.02 (1 + Z) from Z exceeds this
#: (:func:`csstz.templates.pdf.mass_away_from_mode`; the same threshold as the p(z) estimator's
#: ``multimodal_mass`` default, project choice).
MULTIMODAL_MASS = 0.2
#: Sub-grid template phases of the learned-basis fit: z step 1.15e-3 / 2 = 5.75e-4 in ln(1+z), about
#: :data:`DEFAULT_DLNZ` (csstz.templates.xcorr.DEFAULT_DLNLAM per phase).
XCORR_PHASES = (1, 2, 4, 8)
XCORR_DEFAULT_PHASES = 2


def resolve_basis(spec: str) -> tuple[str, TemplateBasis | None, str | None]:
    """What ``--basis spec`` fits with: ``(kind, basis, template_path)``.

    Parameters
    ----------
    spec : str
        ``"kcorrect"`` (the default NNLS fit); ``"learned:DATASET.h5[:K]"`` (a PCA basis with its
        coefficient prior, learned by :func:`csstz.templates.physics.learn_physics_basis` from that
        dataset's training split; K chosen on its validation split unless given; the test split is
        never read); a basis HDF5 written by :func:`csstz.templates.learned.save_basis`; or a
        kcorrect-layout template FITS.

    Returns
    -------
    kind : {"kcorrect", "fits", "basis"}
        "kcorrect" and "fits": the non-negative fit (:class:`TemplateModel`); "basis": the
        cross-correlation fit of :mod:`csstz.templates.xcorr`.
    basis : TemplateBasis or None
        The basis for kind "basis".
    template_path : str or None
        The FITS file for kind "fits".

    Raises
    ------
    InputError
        Field ``--basis``: unknown spec, missing file or dataset, unreadable basis, or a dataset
        without rest-frame SEDs (real-data sources); one line with the value.
    """
    from .learned import read_basis

    if not isinstance(spec, str) or not spec.strip():
        raise InputError("--basis", "unknown basis", value=spec, allowed=BASIS_ALLOWED)
    spec = spec.strip()
    if spec == "kcorrect":
        return "kcorrect", None, None
    if spec.startswith("learned:"):
        from pathlib import Path

        from .physics import learn_physics_basis

        rest, k = spec[len("learned:") :], None
        head, _, tail = rest.rpartition(":")
        if head and tail.isdigit():
            rest, k = head, int(tail)
        if not rest or not Path(rest).is_file():
            raise InputError(
                "--basis", "learned: needs an existing dataset file", value=spec, allowed="learned:DATASET.h5[:K]"
            )
        try:
            return "basis", learn_physics_basis(rest, n_components=k), None
        except (InputError, FileFormatError, OSError, KeyError) as exc:
            raise InputError(
                "--basis",
                f"cannot learn a basis from this dataset's training split ({' '.join(str(exc).split())})",
                value=spec,
            ) from None
    from pathlib import Path

    p = Path(spec)
    if not p.is_file():
        known = p.name.lower().endswith(FITS_SUFFIXES + (".h5", ".hdf5"))
        raise InputError(
            "--basis", "basis file not found" if known else "unknown basis", value=spec, allowed=BASIS_ALLOWED
        )
    if p.name.lower().endswith(FITS_SUFFIXES):
        try:
            load_templates(str(p))
        except (CsstzError, OSError, KeyError, ValueError, TypeError) as exc:
            raise InputError(
                "--basis", f"not a kcorrect-layout template FITS ({' '.join(str(exc).split())})", value=spec
            ) from None
        return "fits", None, str(p.resolve())
    try:
        return "basis", read_basis(p), None
    except (FileFormatError, OSError) as exc:
        raise InputError("--basis", f"not a template basis file ({' '.join(str(exc).split())})", value=spec) from None


def _multimodal(pz: np.ndarray, grid: np.ndarray, z: np.ndarray) -> np.ndarray:
    """ZWARN MULTIMODAL bits (N,) int32: p(z) mass beyond 0.02 (1 + z) of ``z`` above MULTIMODAL_MASS."""
    out = np.zeros(pz.shape[0], np.int32)
    ok = np.all(np.isfinite(pz), axis=1) & np.isfinite(z)
    if ok.any():
        away = mass_away_from_mode(pz[ok], grid, z_mode=z[ok])
        out[ok] = np.where(away > MULTIMODAL_MASS, np.int32(int(ZWARN.MULTIMODAL)), np.int32(0))
    return out


def _fit_basis(
    spectra: SpectraSet,
    basis: TemplateBasis,
    bands: Sequence[str],
    flux: np.ndarray,
    err: np.ndarray,
    zmin: float,
    zmax: float,
    dlnz: float | None,
    inst: Instrument,
    lsf: str,
    threads: int,
) -> tuple[Table, np.ndarray, np.ndarray, float, str]:
    """The learned-basis fit: log L(z) by FFT cross-correlation (marginal likelihood with the basis's
    coefficient prior, or plain least squares for a basis without one), p(z) proportional to L (flat
    prior in z), Z the p(z) mode, ZERR half its central 68.3% interval. Returns the table (without
    meta), the p(z) (N, J) float32, the grid, its ln(1+z) step and the method name."""
    from .xcorr import DEFAULT_DLNLAM, XcorrModel, loglike_curves, lsf_bins

    if dlnz is None:
        n_phase = XCORR_DEFAULT_PHASES
    else:
        fine = [p for p in XCORR_PHASES if DEFAULT_DLNLAM / p <= dlnz * (1 + 1e-9)]
        if not fine:
            raise InputError(
                "dlnz",
                "finer than the learned-basis fit can go",
                value=dlnz,
                allowed=f">= {DEFAULT_DLNLAM / XCORR_PHASES[-1]:.3g}",
            )
        n_phase = fine[0]
    n = flux.shape[0]
    if lsf == "morphology":
        cat = spectra.catalog
        for col in ("SHAPE_R", "SERSIC", "BA", "PA"):
            if col not in cat.colnames:
                raise InputError(col, "column missing from the catalogue (needed for lsf='morphology')")
        sig = galaxy_lsf_sigma_pix(inst, cat["SHAPE_R"], cat["SERSIC"], cat["BA"], cat["PA"])
        idx, centres = lsf_bins(np.asarray(sig, np.float64), inst.psf_sigma_pix)
        used = np.unique(idx)
        sigmas, idx = centres[used], np.searchsorted(used, idx)
    else:
        sigmas, idx = np.array([inst.psf_sigma_pix]), np.zeros(n, int)
    mode = "prior" if basis.has_prior else "ls"
    waves = {b: np.asarray(spectra.bands[b].wave_aa, np.float64) for b in bands}
    model = XcorrModel(basis, waves, lsf_sigma_pix=tuple(sigmas), zmin=zmin, zmax=zmax, n_phase=n_phase)
    cols = np.cumsum([0] + [w.size for w in waves.values()])
    fb = {b: flux[:, cols[i] : cols[i + 1]] for i, b in enumerate(bands)}
    eb = {b: err[:, cols[i] : cols[i + 1]] for i, b in enumerate(bands)}
    logl = loglike_curves(model, fb, eb, lsf_index=idx, mode=mode, threads=threads).astype(np.float64)
    grid = model.z.copy()
    npix = (np.isfinite(err) & (err > 0)).sum(axis=1).astype(np.int32)
    zwarn = np.where(npix < MIN_VALID_PIX, np.int32(int(ZWARN_FEW_PIXELS)), np.int32(0)).astype(np.int32)
    fitted = np.isfinite(logl).any(axis=1)
    zwarn |= np.where((npix >= MIN_VALID_PIX) & ~fitted, np.int32(int(ZWARN.BAD_MINFIT)), np.int32(0))
    ok = zwarn == 0
    z, zerr = np.full(n, np.nan), np.full(n, np.nan)
    pz = np.full((n, grid.size), np.nan, np.float32)
    logl_max = np.full(n, np.nan)
    if ok.any():
        p = from_loglike(logl[ok], grid)
        zm = pdf_mode(p, grid)
        lo, hi = central_interval(p, grid)
        i_max = np.argmax(np.where(np.isfinite(logl[ok]), logl[ok], -np.inf), axis=1)
        edge = (i_max == 0) | (i_max == grid.size - 1)
        step = float(model.lnz[1] - model.lnz[0])
        z[ok] = zm
        zerr[ok] = np.maximum(0.5 * (hi - lo), (1.0 + zm) * step)
        pz[ok] = p.astype(np.float32)
        logl_max[ok] = np.nanmax(logl[ok], axis=1)
        zwarn[np.flatnonzero(ok)[edge]] |= np.int32(int(ZWARN_EDGE))
    zwarn |= _multimodal(pz, grid, z)
    tab = Table()
    tab["TARGETID"] = np.asarray(spectra.catalog["TARGETID"], np.int64)
    tab["Z"] = z
    tab["ZERR"] = zerr
    tab["ZWARN"] = zwarn.astype(np.int32)
    tab["LOGL_MAX"] = logl_max
    tab["NPIX"] = npix
    tab["LSF_SIGMA_PIX"] = sigmas[idx].astype(np.float32)
    return tab, pz, grid, float(model.lnz[1] - model.lnz[0]), f"templates-xcorr-{mode}"


def fit_templates(
    spectra: SpectraSet,
    bands: tuple[str, ...] | None = None,
    zmin: float = Z_RANGE[0],
    zmax: float = Z_RANGE[1],
    dlnz: float | None = None,
    instrument: Instrument | PathLike | None = None,
    workers: int = ParallelConfig.workers,
    progress: bool = False,
    lsf: str = LSF_MODELS[0],
    scheduler: str | None = None,
    basis: str | TemplateBasis = "kcorrect",
) -> Table:
    """Template-fitting redshifts of every spectrum in ``spectra``.

    Parameters
    ----------
    spectra : SpectraSet
        Spectra with at least ``bands`` (flux/err (N, L_b) in 1e-17 erg/s/cm^2/A) and
        a catalogue with TARGETID (and SHAPE_R, SERSIC, BA, PA for ``lsf="morphology"``).
    bands : sequence of str, optional
        Bands to fit together (default: the instrument file's ``network.bands``, GV + GI).
    zmin, zmax : float
        Redshift range (default :data:`csstz.schema.Z_RANGE`, the paper's 0-1.6).
    dlnz : float, optional
        Grid step in ln(1+z) (default :data:`DEFAULT_DLNZ`).
    instrument : Instrument or path, optional
        For the LSF; default: the configuration stored in the spectra file, else the packaged one.
    workers : int
        Local processes (forked after the template grid is rendered); for the learned-basis fit, threads
        of its FFT correlations in this process.
    scheduler : str, optional
        Address of an existing Dask scheduler (:func:`csstz.parallel.parallel_map`; the non-negative fit
        only: the learned-basis fit runs in this process and ignores it, as it ignores ``progress``).
    progress : bool
        Show a rich progress bar.
    lsf : {"point", "morphology"}
        "point": every galaxy gets the point-source LSF (PSF sigma x dispersion).
        "morphology": the LSF is broadened by each galaxy's catalogue shape projected on the
        dispersion axis (:func:`galaxy_lsf_sigma_pix`), in bins of :data:`LSF_BIN_RATIO`
        (one template grid per bin: slower).
    basis : str or TemplateBasis
        ``"kcorrect"`` (default: the non-negative fit of the module docstring), a kcorrect-layout
        template FITS (the same fit with those templates), ``"learned:DATASET.h5[:K]"`` or a basis
        HDF5 (the learned-basis fit: see :func:`resolve_basis` and the module docstring), or a
        :class:`~csstz.templates.learned.TemplateBasis` (learned-basis fit; header BASIS = its name).
        Resolved before anything else is read.

    Returns
    -------
    astropy.table.Table
        Non-negative fit: ``TARGETID, Z, ZERR, ZWARN, CHI2_MIN, DELTA_CHI2, NPIX, COEFF, LSF_SIGMA_PIX``;
        learned-basis fit: ``TARGETID, Z, ZERR, ZWARN, LOGL_MAX, NPIX, LSF_SIGMA_PIX`` (see module
        docstring). ``meta``: PZ, PZ_GRID and the :data:`HEADER_KEYS`.

    Raises
    ------
    InputError
        A band or catalogue column missing, bad grid options, or bad flux/err values.
    """
    from .learned import TemplateBasis

    if isinstance(basis, TemplateBasis):
        kind, tbasis, template_path, label = "basis", basis, None, basis.name
    else:
        kind, tbasis, template_path = resolve_basis(basis)
        label = basis.strip()
    bands = network_bands() if bands is None else tuple(bands)
    if not bands:
        raise InputError("bands", "no band to fit")
    for b in bands:
        if b not in spectra.bands:
            raise InputError("bands", "band not in the spectra", value=b, allowed=", ".join(spectra.bands))
    if "TARGETID" not in spectra.catalog.colnames:
        raise InputError("TARGETID", "column missing from the catalogue")
    if not isinstance(workers, int) or workers < 1:
        raise InputError("workers", "must be a positive integer", value=workers)
    if lsf not in LSF_MODELS:
        raise InputError("lsf", "unknown line-spread model", value=lsf, allowed=", ".join(LSF_MODELS))
    inst = _instrument_for(spectra, instrument)
    waves = {b: np.asarray(spectra.bands[b].wave_aa, np.float64) for b in bands}
    flux = np.concatenate([np.asarray(spectra.bands[b].flux, np.float64) for b in bands], axis=1)
    err = np.concatenate([np.asarray(spectra.bands[b].err, np.float64) for b in bands], axis=1)
    n = flux.shape[0]
    if n != len(spectra.catalog):
        raise InputError("flux", f"{n} spectra but {len(spectra.catalog)} catalogue rows")
    if kind == "basis":
        flux, err = check_flux_err(flux, err, flux.shape[1])
        tab, pz, grid, step, method = _fit_basis(
            spectra, tbasis, bands, flux, err, zmin, zmax, dlnz, inst, lsf, threads=workers
        )
        tab.meta["PZ"] = pz
        tab.meta["PZ_GRID"] = grid
        tab.meta.update(
            {
                "METHOD": method,
                "TPLFILE": tbasis.name,
                "BASIS": label,
                "NBASIS": int(tbasis.n_templates),
                "ZMIN": float(zmin),
                "ZMAX": float(zmax),
                "DLNZ": step,
                "BANDS": ",".join(bands),
                "LSF": lsf,
            }
        )
        return tab
    psf_pix = inst.psf_sigma_pix
    if lsf == "point":
        bin_of = np.zeros(n, int)
        bin_sigma_pix = np.array([psf_pix])
        row_sigma = np.full(n, psf_pix)
    else:
        cat = spectra.catalog
        for col in ("SHAPE_R", "SERSIC", "BA", "PA"):
            if col not in cat.colnames:
                raise InputError(col, "column missing from the catalogue (needed for lsf='morphology')")
        row_sigma = galaxy_lsf_sigma_pix(inst, cat["SHAPE_R"], cat["SERSIC"], cat["BA"], cat["PA"])
        bin_of = np.clip(
            np.floor(np.log(row_sigma / psf_pix) / math.log(LSF_BIN_RATIO)).astype(int), 0, LSF_MAX_BINS - 1
        )
        bin_sigma_pix = psf_pix * LSF_BIN_RATIO ** (np.arange(LSF_MAX_BINS) + 0.5)
    res = None
    bar, advance = _progress_bar(n) if progress else (None, None)
    try:
        for k in np.unique(bin_of):
            rows = np.flatnonzero(bin_of == k)
            sigmas = {
                b: float(bin_sigma_pix[k] if lsf == "morphology" else psf_pix) * inst.band(b).dispersion_aa_per_pix
                for b in bands
            }
            key = _model_key(waves, sigmas, zmin, zmax, dlnz, template_path)
            part = _run_fit(key, flux[rows], err[rows], workers, advance, scheduler)
            if res is None:
                res = {name: np.empty((n,) + v.shape[1:], v.dtype) for name, v in part.items()}
            for name, v in part.items():
                res[name][rows] = v
    finally:
        if bar is not None:
            bar.stop()
    tab = Table()
    tab["TARGETID"] = np.asarray(spectra.catalog["TARGETID"], np.int64)
    tab["Z"] = res["z"]
    tab["ZERR"] = res["zerr"]
    grid = _cached_model(*key).z.copy()
    tab["ZWARN"] = (res["zwarn"] | _multimodal(res["pz"], grid, res["z"])).astype(np.int32)
    tab["CHI2_MIN"] = res["chi2_min"]
    tab["DELTA_CHI2"] = res["delta_chi2"]
    tab["NPIX"] = res["npix"]
    tab["COEFF"] = res["coeff"]
    tab["LSF_SIGMA_PIX"] = (bin_sigma_pix[bin_of] if lsf == "morphology" else row_sigma).astype(np.float32)
    tab.meta["PZ"] = res["pz"]
    tab.meta["PZ_GRID"] = grid
    from pathlib import Path

    tab.meta.update(
        {
            "METHOD": "templates",
            "TPLFILE": "kcorrect-default-v4" if template_path is None else Path(template_path).name,
            "BASIS": label,
            "NBASIS": int(_cached_model(*key).n_templates),
            "ZMIN": float(zmin),
            "ZMAX": float(zmax),
            "DLNZ": float(DEFAULT_DLNZ if dlnz is None else dlnz),
            "BANDS": ",".join(bands),
            "LSF": lsf,
        }
    )
    return tab


def _progress_bar(total: int) -> tuple[Progress, Callable[[int], None]]:
    from rich.progress import Progress

    bar = Progress(transient=False)
    bar.start()
    task = bar.add_task("template fit", total=total)
    return bar, (lambda k: bar.advance(task, k))


def _run_fit(
    key: tuple,
    flux: np.ndarray,
    err: np.ndarray,
    workers: int,
    advance: Callable[[int], Any] | None,
    scheduler: str | None = None,
) -> dict:
    """Fit with the model of ``key`` in-process, in ``workers`` processes or on a Dask ``scheduler``."""
    n = flux.shape[0]
    model = _cached_model(*key)  # validates the options and renders the grid once, here
    if (workers == 1 and scheduler is None) or n <= GALAXY_BLOCK:
        return model.fit(flux, err, progress=advance)
    chunk = max(GALAXY_BLOCK, int(math.ceil(n / (4 * workers) / GALAXY_BLOCK)) * GALAXY_BLOCK)
    jobs = [(key, flux[s : s + chunk], err[s : s + chunk]) for s in range(0, n, chunk)]
    parts: list = [None] * len(jobs)
    for i, part in parallel_map(_worker_fit, jobs, workers=workers, scheduler=scheduler, local="processes"):
        parts[i] = part
        if advance is not None:
            advance(jobs[i][1].shape[0])
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


#: FITS header keywords of a template-fit predictions file.
HEADER_KEYS = ("METHOD", "TPLFILE", "BASIS", "NBASIS", "ZMIN", "ZMAX", "DLNZ", "BANDS", "LSF")


def fit_templates_file(
    spectra_path: PathLike,
    out_path: PathLike,
    split: str | None = None,
    bands: tuple[str, ...] | None = None,
    zmin: float = Z_RANGE[0],
    zmax: float = Z_RANGE[1],
    dlnz: float | None = None,
    workers: int = ParallelConfig.workers,
    scheduler: str | None = None,
    progress: bool = True,
    lsf: str = LSF_MODELS[0],
    config: dict | None = None,
    basis: str = "kcorrect",
) -> Table:
    """``csstz fit-templates``: fit the spectra of a file (or of one split) and write the predictions FITS.

    Parameters
    ----------
    spectra_path, out_path : path-like
        Spectra HDF5 in; predictions FITS out (None: do not write).
    split : str, optional
        Only rows whose catalogue SPLIT equals this.
    config : dict, optional
        Stage configuration written into the header (``CONFIG``, YAML text).

    Other parameters are those of :func:`fit_templates`.

    Raises
    ------
    InputError, FileFormatError
    """
    from ..io.predictions import write_predictions
    from ..io.spectra import read_spectra, split_rows

    kind, tbasis, _ = resolve_basis(basis)  # a bad --basis fails before anything is read or written
    bands = network_bands() if bands is None else tuple(bands)
    rows = None if split is None else split_rows(spectra_path, split)
    spectra = read_spectra(spectra_path, bands=bands, rows=rows)
    tab = fit_templates(
        spectra,
        bands=bands,
        zmin=zmin,
        zmax=zmax,
        dlnz=dlnz,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        lsf=lsf,
        basis=tbasis if kind == "basis" else basis,
    )
    tab.meta["BASIS"] = str(basis).strip()
    header = {k: tab.meta[k] for k in HEADER_KEYS}
    if out_path is not None:
        write_predictions(out_path, tab, header=header, config=config)
    return tab


__all__ = [
    "fit_templates",
    "fit_templates_file",
    "resolve_basis",
    "check_flux_err",
    "BASIS_ALLOWED",
    "MULTIMODAL_MASS",
    "HEADER_KEYS",
    "TemplateModel",
    "template_model_for",
    "load_templates",
    "lsf_sigma_aa",
    "galaxy_lsf_sigma_pix",
    "sersic_width_factor_table",
    "LSF_BIN_RATIO",
    "LSF_MAX_BINS",
    "DEFAULT_DLNZ",
    "ZWARN_AMBIGUOUS",
    "ZWARN_EDGE",
    "ZWARN_FEW_PIXELS",
    "MIN_VALID_PIX",
]
