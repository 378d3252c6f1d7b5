"""The non-negative locator: the last step of a p(z) run's Z, a non-negative fit on native pixels.

The p(z) network chooses the peak; the physics posterior locates it on the grid (``refine_on_physics``); this
module re-locates it, within :data:`LOCATOR_HALF` grid steps, as the minimum of the chi-square of a
**non-negative** fit of a small basis learned from the training split's rest-frame SEDs by NMF
(:func:`learn_locator_templates`), rendered on each band's **native pixels** with the galaxy's line-spread
width at the run's ``locator_lsf_scale`` (:class:`NNLSLocator`), then refines by a parabola.

Why (docs/estimator.md, "A non-negative locator on native pixels (0.10.0)"): on the standard run's validation
split and on a 20,000-galaxy selection sample the physics basis's own relocation (a PCA basis with a Gaussian
coefficient prior, on the common ln(lambda) grid) leaves sigma_NMAD 2-3% above the 5-template kcorrect fit's;
a positive basis that spans only shapes the training SEDs have, fitted where the pixels are, locates the
peak 2-4% better than that fit. The same non-negative fit on the common grid does not (the resampling's
correlated pixels): it has to be the native pixels.

The chi-square at a handful of redshifts per spectrum comes from normal equations summed over the native
pixels (:func:`window_normal_equations`, compiled), solved exactly by :func:`csstz.templates.nnls.nnls_enumerate`.
The templates are rendered once per line-spread set, on the run's redshift grid, when first needed
(:class:`csstz.templates.fit.TemplateModel`, ~0.6 s each).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from ..errors import FileFormatError, InputError
from .basis import load_templates
from .nnls import _supports

if TYPE_CHECKING:
    from .._types import PathLike
    from .learned import TemplateBasis

#: NMF templates of the locator basis (the kcorrect basis's size; docs/estimator.md)
LOCATOR_TEMPLATES = 5
#: training-split SEDs the NMF learns from (as many as the physics basis's PCA)
LOCATOR_MAX_ROWS = 4000
#: grid steps either side of the located Z at which the non-negative chi-square is evaluated
LOCATOR_HALF = 2


def learn_locator_templates(
    dataset: PathLike, n_templates: int = LOCATOR_TEMPLATES, max_rows: int = LOCATOR_MAX_ROWS, seed: int = 0
) -> TemplateBasis:
    """A non-negative (NMF) basis of the training split's rest-frame SEDs.

    Parameters
    ----------
    dataset : path-like
        Dataset HDF5 of ``csstz build`` (the SEDs are regenerated from its catalogue,
        :func:`csstz.templates.physics.rest_seds_of_split`).
    n_templates : int
    max_rows, seed : int
        At most ``max_rows`` training rows, drawn with ``seed``.

    Returns
    -------
    TemplateBasis
        ``method="nmf"``: non-negative templates (K, W) on the rest wavelengths.
    """
    from .learned import learn_basis
    from .physics import rest_seds_of_split

    if not (isinstance(n_templates, (int, np.integer)) and 1 <= n_templates <= 12):
        raise InputError("locator_templates", "must be an integer 1..12", value=n_templates)
    wave, seds, info = rest_seds_of_split(dataset, "train", max_rows=max_rows, seed=seed)
    return learn_basis(wave, seds, int(n_templates), method="nmf", seed=seed, provenance=info)


def write_locator_templates(path: PathLike, basis: TemplateBasis) -> Path:
    """Write a non-negative basis as a template FITS (HDU ``FLUX``, columns ``wave`` (W,) and ``flux`` (K, W):
    the layout of :func:`csstz.templates.basis.load_templates`, so that ``csstz fit-templates --basis`` reads it
    too), atomically."""
    from astropy.io import fits

    from .. import __version__
    from ..io.atomic import atomic_path

    wave = np.asarray(basis.wave_aa, np.float64)
    t = np.asarray(basis.templates, np.float64)
    if t.ndim != 2 or t.shape[1] != wave.size or np.any(t < 0) or not np.all(np.isfinite(t)):
        raise InputError("templates", "the locator needs finite non-negative templates (K, W)", value=t.shape)
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="wave", format=f"{wave.size}D", unit="Angstrom", array=wave[None, :]),
            fits.Column(name="flux", format=f"{t.size}D", dim=f"({wave.size},{t.shape[0]})", array=t[None]),
        ],
        name="FLUX",
    )
    hdu.header["METHOD"] = ("nmf", "how the templates were learned")
    hdu.header["NTEMPL"] = (t.shape[0], "templates")
    hdu.header["CSSTZVER"] = (__version__, "csstz version that learned them")
    prov = getattr(basis, "provenance", {}) or {}
    for key, val in (("DATASET", prov.get("dataset")), ("NSEDS", prov.get("n"))):
        if val is not None:
            hdu.header[key] = str(val)[:68] if key == "DATASET" else int(val)
    # how well the NMF learned them (csstz.templates.learned.learn_basis records these)
    for key, name, comment in (
        ("NMFITER", "nmf_iterations", "NMF solver iterations run"),
        ("NMFCONV", "nmf_converged", "NMF tolerance reached before the cap"),
        ("RELRMS", "train_median_rel_rms", "median relative rms residual of the SEDs"),
    ):
        if prov.get(name) is not None:
            hdu.header[key] = (prov[name], comment)
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)
    return Path(path)


# fastmath reassociation lets the pixel sums vectorise (60 -> ~10 us per spectrum); the order of a sum is fixed
# by the compiled code, so results are reproducible run to run
@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def window_normal_equations(
    models: np.ndarray,
    flux: np.ndarray,
    err: np.ndarray,
    rows: np.ndarray,
    gi: np.ndarray,
    b_out: np.ndarray,
    a_out: np.ndarray,
    fwf_out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Normal equations of a K-template fit at a few grid redshifts per spectrum, on native pixels.

    models (Nz, K, P) templates at each grid redshift; flux, err (N, P) (a pixel counts where err is finite and
    positive and flux finite, with weight 1 / err^2); for each r, spectrum rows[r] at grid indices gi[r] (S,).
    Fills b_out (R, S, K) = sum_p w f T_k, a_out (R, S, K, K) = sum_p w T_k T_j and fwf_out (R,) = sum_p w f^2."""
    n_rows, n_s = gi.shape
    k_t, n_pix = models.shape[1], models.shape[2]
    scratch = np.empty((3, n_pix))  # per spectrum: weights, weighted flux; per template: weighted template
    w, wf, wt = scratch[0], scratch[1], scratch[2]
    for r in range(n_rows):
        n = rows[r]
        fwf = 0.0
        for p in range(n_pix):
            e = err[n, p]
            f = flux[n, p]
            if e > 0 and np.isfinite(e) and np.isfinite(f):
                w[p] = 1.0 / (e * e)
                wf[p] = w[p] * f
                fwf += wf[p] * f
            else:
                w[p] = 0.0
                wf[p] = 0.0
        fwf_out[r] = fwf
        for s in range(n_s):
            i = gi[r, s]
            for k in range(k_t):
                acc = 0.0
                for p in range(n_pix):
                    acc += wf[p] * models[i, k, p]
                b_out[r, s, k] = acc
                for p in range(n_pix):
                    wt[p] = w[p] * models[i, k, p]
                for j in range(k, k_t):
                    acc2 = 0.0
                    for p in range(n_pix):
                        acc2 += wt[p] * models[i, j, p]
                    a_out[r, s, k, j] = acc2
                    a_out[r, s, j, k] = acc2


@njit(cache=True, nogil=True, error_model="numpy")
def nnls_small(a: np.ndarray, b: np.ndarray, fwf: np.ndarray, supports: np.ndarray) -> np.ndarray:  # pragma: no cover
    """The exact non-negative least-squares chi2 of many small problems, (M,): compiled
    :func:`csstz.templates.nnls.nnls_enumerate` (the same supports, ridge and Cholesky; equal to round-off).

    a (M, K, K), b (M, K), fwf (M,); supports (2^K - 1, K) of 0/1 rows, the full support last. For each problem
    the lowest ``fwf - b_S . c_S`` over the supports S whose restricted solution c_S = A_SS^-1 b_S is
    non-negative (and ``fwf``, the empty support). The full support is tried first: where its solution is
    non-negative it is the optimum (``b A^-1 b`` bounds ``b_S A_SS^-1 b_S`` for every S), and the other supports
    are skipped."""
    m_all, k_t = b.shape
    for k in range(k_t):  # the early exit below is exact only if the row tried first is the full support
        if supports[supports.shape[0] - 1, k] == 0:
            raise ValueError("nnls_small: the last row of supports must be the full support")
    out = np.empty(m_all)
    idx = np.empty(k_t, np.int64)
    L = np.empty((k_t, k_t))
    y = np.empty(k_t)
    c = np.empty(k_t)
    for m in range(m_all):
        best = fwf[m]
        tr = 0.0
        for k in range(k_t):
            tr += a[m, k, k]
        eps = 1e-12 * tr / k_t
        n_q = supports.shape[0]
        for qq in range(n_q):
            q = n_q - 1 if qq == 0 else qq - 1  # the full support first
            s = 0
            for k in range(k_t):
                if supports[q, k]:
                    idx[s] = k
                    s += 1
            good = True
            for jj in range(s):  # Cholesky of A_SS + eps I
                d = a[m, idx[jj], idx[jj]] + eps
                for kk in range(jj):
                    d -= L[jj, kk] * L[jj, kk]
                if not d > 0:
                    good = False
                    break
                L[jj, jj] = np.sqrt(d)
                for ii in range(jj + 1, s):
                    v = a[m, idx[ii], idx[jj]]
                    for kk in range(jj):
                        v -= L[ii, kk] * L[jj, kk]
                    L[ii, jj] = v / L[jj, jj]
            if not good:
                continue
            for ii in range(s):
                v = b[m, idx[ii]]
                for kk in range(ii):
                    v -= L[ii, kk] * y[kk]
                y[ii] = v / L[ii, ii]
            val = fwf[m]
            for ii in range(s - 1, -1, -1):
                v = y[ii]
                for kk in range(ii + 1, s):
                    v -= L[kk, ii] * c[kk]
                c[ii] = v / L[ii, ii]
                if not c[ii] >= 0:  # negative, or not a number
                    good = False
            if not good:
                continue
            for ii in range(s):
                val -= b[m, idx[ii]] * c[ii]
            if val < best:
                best = val
            if qq == 0:
                break  # the unconstrained optimum is non-negative: nothing can be lower
        out[m] = best
    return out


class NNLSLocator:
    """The non-negative fit at a few redshifts per spectrum, and the re-location of Z by it.

    Parameters
    ----------
    template_path : path-like
        Template FITS (:func:`write_locator_templates`).
    wave_by_band : dict of str -> ndarray
        Native pixel-centre wavelengths [A] of the bands, in the order their pixels are concatenated.
    dispersion_aa_per_pix : dict of str -> float
        Each band's dispersion [A / pixel] (converts the line-spread sigmas from pixels).
    lsf_sigma_pix : sequence of float
        The line-spread sets [pixels]: ``lsf_index`` k of :meth:`relocate` means ``lsf_sigma_pix[k]`` (those of
        the physics stage, :attr:`csstz.templates.xcorr.XcorrModel.lsf_sigma_pix`).
    grid_z : ndarray
        The run's redshift grid (uniform in ln(1 + z)).

    Raises
    ------
    FileFormatError
        Missing or malformed template file.
    """

    def __init__(
        self,
        template_path: PathLike,
        wave_by_band: dict,
        dispersion_aa_per_pix: dict,
        lsf_sigma_pix: tuple,
        grid_z: np.ndarray,
    ) -> None:
        self.template_path = str(template_path)
        wave, flux = load_templates(self.template_path)  # FileFormatError naming the file
        if np.any(flux < 0):
            raise FileFormatError(self.template_path, "locator templates must be non-negative")
        self.n_templates = flux.shape[0]
        self.wave_by_band = {b: np.asarray(w, np.float64) for b, w in wave_by_band.items()}
        self.dispersion = {b: float(dispersion_aa_per_pix[b]) for b in self.wave_by_band}
        self.lsf_sigma_pix = tuple(float(s) for s in lsf_sigma_pix)
        self.grid_z = np.asarray(grid_z, np.float64)
        self.grid_lnz = np.log1p(self.grid_z)
        self.step = float(self.grid_lnz[1] - self.grid_lnz[0])
        self.n_pix = sum(w.size for w in self.wave_by_band.values())
        self._models: dict[int, np.ndarray] = {}
        self._supports = np.array(
            [[k in sup for k in range(self.n_templates)] for sup in _supports(self.n_templates)], np.uint8
        )

    def models(self, lsf_index: int) -> np.ndarray:
        """The templates at every grid redshift on the native pixels, (Nz, K, P), for one line-spread set."""
        if lsf_index not in self._models:
            from .fit import TemplateModel

            if not 0 <= lsf_index < len(self.lsf_sigma_pix):
                raise InputError("lsf_index", "no such line-spread set", value=lsf_index)
            sig = self.lsf_sigma_pix[lsf_index]
            tm = TemplateModel(
                self.wave_by_band,
                {b: sig * self.dispersion[b] for b in self.wave_by_band},
                zmin=float(self.grid_z[0]),
                zmax=float(self.grid_z[-1]),
                dlnz=self.step,
                template_path=self.template_path,
                normal_equations=False,
            )
            if tm.z.size != self.grid_z.size or not np.allclose(tm.z, self.grid_z, rtol=0, atol=1e-9):
                raise InputError("grid_z", "the locator's rendering grid does not reproduce the run's grid")
            self._models[lsf_index] = np.ascontiguousarray(tm.models)
        return self._models[lsf_index]

    def chi2(
        self, flux: np.ndarray, err: np.ndarray, lsf_index: np.ndarray | None, grid_index: np.ndarray
    ) -> np.ndarray:
        """The non-negative fit's chi-square at grid redshifts ``grid_index`` (N, S) of spectra (N, P), (N, S).

        Pixels with a non-finite or non-positive error are left out; NaN where no template fits (no valid pixel)."""
        flux = np.ascontiguousarray(flux, np.float64)
        err = np.ascontiguousarray(err, np.float64)
        gi = np.ascontiguousarray(np.atleast_2d(np.asarray(grid_index, np.int64)))
        n = flux.shape[0] if flux.ndim == 2 else -1
        if flux.ndim != 2 or err.shape != flux.shape or flux.shape[1] != self.n_pix or gi.shape[0] != n:
            raise InputError("flux", f"flux and err must be (N, {self.n_pix}) with one row of grid_index each")
        if gi.size and (gi.min() < 0 or gi.max() >= self.grid_z.size):
            raise InputError("grid_index", "outside the redshift grid", allowed=f"0 .. {self.grid_z.size - 1}")
        idx = np.zeros(n, np.int64) if lsf_index is None else np.asarray(lsf_index, np.int64).reshape(-1)
        if idx.size != n:
            raise InputError("lsf_index", f"one line-spread set per spectrum ({n})", value=idx.size)
        K, S = self.n_templates, gi.shape[1]
        out = np.full((n, S), np.nan)
        for k in np.unique(idx):
            rows = np.flatnonzero(idx == k)
            b = np.empty((rows.size, S, K))
            a = np.empty((rows.size, S, K, K))
            fwf = np.empty(rows.size)
            window_normal_equations(self.models(int(k)), flux, err, rows, gi[rows], b, a, fwf)
            c2 = nnls_small(a.reshape(-1, K, K), b.reshape(-1, K), np.repeat(fwf, S), self._supports)
            # no valid pixel: nothing was fitted
            out[rows] = np.where((fwf > 0)[:, None], c2.reshape(rows.size, S), np.nan)
        return out

    def relocate(
        self,
        z: np.ndarray,
        flux: np.ndarray,
        err: np.ndarray,
        lsf_index: np.ndarray | None,
        log_prior: np.ndarray,
        half: int = LOCATOR_HALF,
    ) -> np.ndarray:
        """Re-locate each ``z`` at the peak of exp(-chi2 / 2) n(z) within ``half`` grid steps of the grid point
        nearest it, refined by a parabola (:func:`csstz.templates.pdf.window_posterior_peak`), (N,).

        Non-finite ``z``, ``z`` off the grid and spectra without a finite chi-square keep their ``z``.

        Parameters
        ----------
        z : ndarray (N,)
        flux, err : ndarray (N, P)
            The bands' native pixels, concatenated in the order of ``wave_by_band``.
        lsf_index : ndarray of int (N,) or None (the first set for all)
        log_prior : ndarray (Nz,)
            log n(z) on :attr:`grid_z`, a density per unit ln(1 + z).
        half : int
        """
        from .pdf import window_posterior_peak

        z = np.asarray(z, np.float64).reshape(-1)
        g = self.grid_z
        ok = np.isfinite(z) & (z >= g[0]) & (z <= g[-1])
        if not ok.any():
            return z.copy()
        lnz = np.log1p(np.where(ok, z, g[0]))
        i0 = np.clip(np.rint((lnz - self.grid_lnz[0]) / self.step).astype(int), 0, g.size - 1)
        rows = np.flatnonzero(ok)
        idx = None if lsf_index is None else np.asarray(lsf_index, np.int64)[rows]
        f, e = np.asarray(flux)[rows], np.asarray(err)[rows]

        def loglike(gi: np.ndarray) -> np.ndarray:
            return -0.5 * self.chi2(f, e, idx, gi)

        out, found = window_posterior_peak(loglike, i0[rows], int(half), log_prior, g)
        res = z.copy()
        res[rows] = np.where(found & np.isfinite(out), out, z[rows])
        return res


__all__ = [
    "LOCATOR_HALF",
    "LOCATOR_MAX_ROWS",
    "LOCATOR_TEMPLATES",
    "NNLSLocator",
    "learn_locator_templates",
    "nnls_small",
    "window_normal_equations",
    "write_locator_templates",
]
