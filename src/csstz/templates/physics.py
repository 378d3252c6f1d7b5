"""Physics curves for the p(z) network: template log-likelihoods on one redshift grid (torch-free).

For each spectrum the default estimator (docs/estimator.md) reads, on the ln(1+z) grid of
:class:`csstz.templates.xcorr.XcorrModel`:

* curve 0: the log marginal likelihood of a template basis learned from the training
  split's rest-frame SEDs, with its Gaussian coefficient prior (``mode="prior"``);
* curve 1: the plain least-squares log-likelihood of the same basis (``mode="ls"``),
  ``tanh``-compressed (its shape, not its scale, is what the network needs);

* with ``coeff_curves=True`` (the default estimator's since 0.8.0, ``PzConfig.coeff_curves``; a bare
  ``PhysicsCurves`` and runs saved without the setting have two curves), curves 2 .. 2+K-1: the shape of the
  best-fitting SED at each redshift, the prior-regularised basis coefficients divided by their norm (in
  [-1, 1]), so the network can learn which SEDs are plausible at which redshift beyond the Gaussian
  coefficient prior;

and three scalars: ln(1 + SNR) of the two bands with most signal, and the best
least-squares chi2 per degree of freedom (also the out-of-distribution statistic:
a spectrum the learned basis cannot fit is unlike the training population).

Both curves come from FFT cross-correlations (all redshifts at once), cheap enough to be
recomputed for every fresh noise draw during training. The stage is saved beside the
network (``pz_physics.h5``: the basis file plus the grid settings) so prediction rebuilds
exactly the same curves.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import FileFormatError, InputError
from ..io.atomic import atomic_path
from ..simulate.extract import snr_median
from .learned import DEFAULT_LINE_GROUPS, TemplateBasis, read_basis, save_basis
from .pdf import window_posterior_peak
from .solve_kernel import warm_up
from .xcorr import LSF_MAX_BINS, XcorrModel, loglike_curves, lsf_bins

if TYPE_CHECKING:
    from collections.abc import Sequence

    from astropy.table import Table

    from .._types import PathLike
    from ..instrument import Instrument

#: Scale of the compressed least-squares curve, in units of ln L (project choice: ~ the depth of a
#: well-constrained minimum at SNR ~ 1 per pixel).
LS_CURVE_SCALE = 20.0
#: Number of scalars per spectrum (see :meth:`PhysicsCurves.curves`).
N_SCALARS = 3
#: Grid steps on either side of the located peak at which :meth:`PhysicsCurves.relocate` evaluates the
#: likelihood (measured on training spectra: 2 locates slightly better than 1, docs/estimator.md).
RELOCATE_HALF = 2


def rest_seds_of_split(
    dataset: PathLike, split: str, max_rows: int | None = None, seed: int = 0, wave_aa: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Noiseless rest-frame SEDs of one split of a ``csstz build`` dataset, any synthetic source.

    Embedded rows: the catalogue's COEFF times kcorrect's templates (the population's recipe);
    SPS rows: the bank member ``BANK_INDEX`` of the dataset's seed (from the SED cache,
    :mod:`csstz.population.sps`), rebinned flux-conserving. Normalisation is left to the caller.

    Parameters
    ----------
    dataset : path
    split : {"train", "val"}
        The test split is refused (no choice may look at it).
    max_rows : int, optional
        A seeded random subset of at most this many rows.
    wave_aa : ndarray, optional
        Rest grid [A] (default :func:`csstz.templates.learned.rest_grid_aa`).

    Returns
    -------
    wave_aa : (W,), seds : (N, W) float64, info : dict

    Raises
    ------
    InputError
        Test split, no rows, or rows whose SED cannot be rebuilt (real-data sources).
    """
    from ..io.spectra import read_attrs, read_catalog
    from ..population.sdss_fit import read_templates
    from .learned import rest_grid_aa

    if split not in ("train", "val"):
        raise InputError(
            "split", "rest-frame SEDs come from the train or val split only", value=split, allowed="train, val"
        )
    wave = rest_grid_aa() if wave_aa is None else np.asarray(wave_aa, np.float64)
    cat = read_catalog(dataset)
    rows = np.flatnonzero(np.char.strip(np.asarray(cat["SPLIT"]).astype(str)) == split)
    if rows.size == 0:
        raise InputError("SPLIT", "no row in this split", value=split, path=str(dataset))
    if max_rows is not None and rows.size > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    out = np.full((rows.size, wave.size), np.nan)
    if "COEFF" in cat.colnames:
        coeff = np.asarray(cat["COEFF"], np.float64)[rows]
        emb = np.all(np.isfinite(coeff), axis=1)
        if emb.any():
            tw, tf = read_templates()
            T = np.stack([np.interp(wave, tw, t) for t in tf])
            out[emb] = coeff[emb] @ T
    if "BANK_INDEX" in cat.colnames:
        bidx = np.asarray(cat["BANK_INDEX"], np.int64)[rows]
        sps = bidx >= 0
        if sps.any():
            from ..population.sps import ensure_bank, load_bank, rebin_flux_conserving

            attrs = read_attrs(dataset)
            pop = json.loads(attrs["population"]) if isinstance(attrs.get("population"), str) else attrs["population"]
            bank_size = int((pop.get("sps") or pop)["bank_size"])
            bank = load_bank(ensure_bank(int(attrs["seed"]), bank_size))
            edges = np.concatenate(
                [
                    [wave[0] - 0.5 * (wave[1] - wave[0])],
                    0.5 * (wave[1:] + wave[:-1]),
                    [wave[-1] + 0.5 * (wave[-1] - wave[-2])],
                ]
            )
            bw = np.asarray(bank.rest_wave_aa, np.float64)
            for i in np.flatnonzero(sps):
                out[i] = rebin_flux_conserving(bw, np.asarray(bank.lum[bidx[i]], np.float64), edges)
    bad = ~np.all(np.isfinite(out), axis=1)
    if bad.any():
        raise InputError(
            "COEFF/BANK_INDEX",
            "no rest-frame SED for this row (a real-data source?)",
            row=int(rows[np.flatnonzero(bad)[0]]),
            path=str(dataset),
        )
    return wave, out, {"dataset": str(dataset), "split": split, "n": int(rows.size)}


def learn_physics_basis(
    dataset: PathLike,
    n_components: int | None = None,
    max_rows: int = 4000,
    seed: int = 0,
    n_mixture: int = 1,
    line_ew_sd: float = 0.0,
    lines: Sequence[str] = DEFAULT_LINE_GROUPS,
) -> TemplateBasis:
    """A PCA basis with its coefficient prior (a Gaussian, or a mixture of ``n_mixture``) from the training
    split; K chosen on validation SEDs; ``line_ew_sd > 0`` adds free emission-line templates with that prior
    sigma [A] (:func:`csstz.templates.learned.add_emission_lines`; this function's default is none, ``csstz
    train``'s is 10 A, :class:`csstz.config.PzConfig`)."""
    from .learned import add_emission_lines, choose_n_components, learn_basis

    wave, s_train, info = rest_seds_of_split(dataset, "train", max_rows=max_rows, seed=seed)
    table = []
    if n_components is None:
        _, s_val, _ = rest_seds_of_split(dataset, "val", max_rows=max_rows // 4, seed=seed, wave_aa=wave)
        n_components, table = choose_n_components(wave, s_train, s_val)
    basis = learn_basis(wave, s_train, int(n_components), seed=seed, provenance=info, n_mixture=n_mixture)
    if table:
        basis.provenance["k_selection_val"] = table
    if line_ew_sd > 0:
        basis = add_emission_lines(basis, line_ew_sd, lines)
    return basis


class PhysicsCurves:
    """The physics stage of the p(z) estimator.

    Parameters
    ----------
    basis : TemplateBasis
        Learned basis with a coefficient prior (:func:`csstz.templates.learned.learn_basis`).
    wave_by_band : dict of str -> ndarray
        Pixel-centre wavelengths [A] of the bands read (order kept).
    psf_sigma_pix : float
        Instrument PSF sigma [pixels]: the narrowest line-spread function.
    lsf : {"point", "morphology"}
        One LSF for all, or LSF bins by each galaxy's catalogue morphology.
    zmin, zmax : float
        Redshift range of the grid.
    threads : int
        Threads of the FFTs.
    coeff_curves : bool
        Add the K normalised coefficient curves (module docstring).
    locator_lsf_scale : float
        Scale of the galaxy part of the line-spread width with which :meth:`relocate` re-locates the peak
        (``lsf="morphology"``; 1 = the curves' own widths, no relocation). See :meth:`lsf_index`.
    """

    n_scalars = N_SCALARS

    def __init__(
        self,
        basis: TemplateBasis,
        wave_by_band: dict,
        psf_sigma_pix: float,
        lsf: str = "morphology",
        zmin: float = 0.0,
        zmax: float = 1.6,
        threads: int = 2,
        coeff_curves: bool = False,
        locator_lsf_scale: float = 1.0,
    ) -> None:
        try:
            scale = float(locator_lsf_scale)
        except (TypeError, ValueError):
            scale = math.nan
        if not 0.0 <= scale <= 2.0:
            raise InputError("locator_lsf_scale", "must be a number in [0, 2]", value=locator_lsf_scale)
        self.locator_lsf_scale = scale
        if lsf not in ("point", "morphology"):
            raise InputError("lsf", "unknown line-spread model", value=lsf, allowed="point, morphology")
        if not basis.has_prior:
            raise InputError("basis", "the physics curves need a basis with a coefficient prior", value=basis.name)
        self.basis, self.lsf, self.threads = basis, lsf, int(threads)
        self.coeff_curves = bool(coeff_curves)
        self.n_curves = 2 + (basis.n_templates if self.coeff_curves else 0)
        self.bands = tuple(wave_by_band)
        self.wave_by_band = {b: np.asarray(w, np.float64) for b, w in wave_by_band.items()}
        self.psf_sigma_pix = float(psf_sigma_pix)
        self.zmin, self.zmax = float(zmin), float(zmax)
        sig = (
            lsf_bins(np.array([psf_sigma_pix]), psf_sigma_pix)[1] if lsf == "morphology" else np.array([psf_sigma_pix])
        )
        self.model = XcorrModel(basis, self.wave_by_band, lsf_sigma_pix=tuple(sig), zmin=zmin, zmax=zmax)
        self.grid_z = self.model.z.copy()
        self.grid_lnz = self.model.lnz.copy()

    def for_workers(self, workers: int) -> "PhysicsCurves":
        """This stage for ``workers`` forked processes: itself for one, else a copy whose FFTs use one thread
        (the processes are the parallelism; the copy shares the model arrays)."""
        if workers <= 1:
            return self
        warm_up(self.basis.n_templates)  # compiled once here, not in every worker
        out = copy.copy(self)
        out.threads = 1
        return out

    # --- inputs ----------------------------------------------------------------------------------------
    def lsf_index(self, catalog: Table, instrument: Instrument, width_scale: float = 1.0) -> np.ndarray | None:
        """LSF template set of each catalogue row (None: all the point-source set).

        ``width_scale`` scales the galaxy's part of the width, ``sigma^2 = sigma_PSF^2 + (width_scale
        sigma_gal)^2`` (:func:`csstz.templates.basis.galaxy_lsf_sigma_pix`); :meth:`relocate` takes the sets
        of ``width_scale = locator_lsf_scale``.
        """
        if self.lsf == "point":
            return None
        from .basis import galaxy_lsf_sigma_pix

        sig = galaxy_lsf_sigma_pix(
            instrument,
            np.asarray(catalog["SHAPE_R"]),
            np.asarray(catalog["SERSIC"]),
            np.asarray(catalog["BA"]),
            np.asarray(catalog["PA"]),
        )
        if width_scale != 1.0:
            psf2 = self.psf_sigma_pix**2
            sig = np.sqrt(psf2 + float(width_scale) ** 2 * np.maximum(sig**2 - psf2, 0.0))
        return np.minimum(lsf_bins(sig, self.psf_sigma_pix)[0], LSF_MAX_BINS - 1)

    @property
    def relocates(self) -> bool:
        """Whether :meth:`relocate` changes anything (a morphology LSF and a locator scale other than 1)."""
        return self.lsf == "morphology" and self.locator_lsf_scale != 1.0

    def relocate(
        self,
        z: np.ndarray,
        flux_by_band: dict | None,
        err_by_band: dict | None,
        lsf_index: np.ndarray | None,
        log_prior: np.ndarray,
        prepared: tuple[np.ndarray, np.ndarray] | None = None,
        half: int = RELOCATE_HALF,
    ) -> np.ndarray:
        """Re-locate located peaks with the locator's line-spread widths, (N,).

        At the grid point nearest each ``z`` and ``half`` grid steps on either side, the locator likelihood
        (the equal-weight mixture of the marginal likelihoods with and without the free lines, as
        :meth:`curves`' locator) is evaluated with the LSF template sets ``lsf_index`` (from :meth:`lsf_index`
        with ``width_scale=locator_lsf_scale``) by direct sums
        (:meth:`csstz.templates.xcorr.XcorrModel.local_loglike`), ``log_prior`` added, and the peak refined by
        the parabola through the best point and its neighbours (the grid point where that best point is at
        the window's edge; at the grid's ends the window is cut, not moved). Non-finite ``z`` and ``z`` off the grid
        are returned unchanged.

        Why: with its width taken as the Gaussian of equal interquartile range, the extended galaxies' LSF
        (a projected Sersic profile: a narrow core and broad wings) fits the spectra best in chi2, but the
        redshift is located more precisely with a narrower core (docs/estimator.md, "Relocating the peak").

        Parameters
        ----------
        z : ndarray (N,)
        flux_by_band, err_by_band : dict of str -> ndarray (N, L_band), or None with ``prepared``
        lsf_index : ndarray of int (N,) or None (the point-source set)
        log_prior : ndarray (K,)
            log n(z) on :attr:`grid_z`.
        prepared : (f, w), optional
            :meth:`csstz.templates.xcorr.XcorrModel.prepare_spectra` of the spectra (saves resampling them).
        half : int
        """
        z = np.asarray(z, np.float64).reshape(-1)
        f, w = prepared if prepared is not None else self.model.prepare_spectra(flux_by_band, err_by_band)
        g = self.grid_z
        n, S = z.size, 2 * int(half) + 1
        if g.size < S:
            return z.copy()
        ok = np.isfinite(z) & (z >= g[0]) & (z <= g[-1])  # off the grid: nothing to re-locate
        lnz = np.log1p(np.where(ok, z, g[0]))
        step = self.grid_lnz[1] - self.grid_lnz[0]
        i0 = np.clip(np.rint((lnz - self.grid_lnz[0]) / step).astype(int), 0, g.size - 1)
        idx = np.zeros(n, int) if lsf_index is None else np.asarray(lsf_index, int)

        def locator(gi: np.ndarray) -> np.ndarray:
            ll_loc = np.full((n, S), -np.inf)
            for k in np.unique(idx[ok]):
                rows = np.flatnonzero(ok & (idx == k))
                ll, ll_n = self.model.local_loglike(f[rows], w[rows], int(k), gi[rows])
                with np.errstate(invalid="ignore"):
                    ll_loc[rows] = np.logaddexp(ll, ll_n) if self.model.n_free else ll
            return ll_loc

        out, found = window_posterior_peak(locator, i0, half, log_prior, g)
        return np.where(ok & found, out, z)

    def curves(
        self,
        flux_by_band: dict,
        err_by_band: dict,
        lsf_index: np.ndarray | None = None,
        with_locator: bool = False,
        prepared: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Curves and scalars of N spectra (and, ``with_locator``, the curve that locates the peak).

        Parameters
        ----------
        flux_by_band, err_by_band : dict of str -> ndarray, shape (N, L_band)
            1e-17 erg/s/cm^2/A; err not finite = no data.
        lsf_index : ndarray of int, shape (N,), optional
        with_locator : bool
            Also return the locator (N, K) float32: the log of the equal-weight mixture of the marginal
            likelihoods with and without the basis's free emission lines, minus its maximum (curve 0 for a
            basis without them). Where the training family's line ratios fit, the model without free lines
            is the sharper and dominates; where they do not, the model with them does
            (docs/estimator.md).
        prepared : (f, w), optional
            The spectra on the common grid (:meth:`csstz.templates.xcorr.XcorrModel.prepare_spectra`), when the
            caller has them (prediction resamples once for the curves and :meth:`relocate`).

        Returns
        -------
        curves : ndarray, shape (N, 2, K), float32
            Curve 0: log marginal likelihood minus its maximum (<= 0); curve 1:
            tanh((ln L_ls - max) / LS_CURVE_SCALE).
        scalars : ndarray, shape (N, 3), float32
            ln(1 + SNR) of the first two bands, and the least-squares chi2 per degree of freedom.
        locator : ndarray, shape (N, K), float32
            Only ``with_locator``: see above.
        """
        nested = with_locator and self.model.n_free > 0
        res = loglike_curves(
            self.model,
            flux_by_band,
            err_by_band,
            lsf_index,
            mode="prior+ls+nested" if nested else "prior+ls",
            threads=self.threads,
            with_coeff=self.coeff_curves,
            prepared=prepared,
        )
        both, coef = res if self.coeff_curves else (res, None)
        llp, lls = both[:, 0], both[:, 1]
        n = llp.shape[0]
        out = np.empty((n, self.n_curves, llp.shape[1]), np.float32)
        with np.errstate(invalid="ignore"):
            out[:, 0] = llp - np.max(llp, axis=1, keepdims=True)
            top = np.max(lls, axis=1, keepdims=True)
            out[:, 1] = np.tanh((lls - top) / LS_CURVE_SCALE)
            if self.coeff_curves:
                # float32 throughout, written in place: at the training batch size the float64 copies cost
                # as much as a third of the curves' time (docs/estimator.md, E7)
                cf = np.moveaxis(coef, 2, 1)  # (N, K, J) view
                norm = np.sqrt(np.einsum("nkj,nkj->nj", cf, cf))[:, None, :]
                np.divide(cf, np.where(norm > 0, norm, np.float32(1.0)), out=out[:, 2:])
        np.nan_to_num(out, copy=False, nan=-1e4, neginf=-1e4, posinf=0.0)
        np.maximum(out[:, 0], -1e4, out=out[:, 0])
        np.clip(out[:, 2:], -1.0, 1.0, out=out[:, 2:])
        scal = np.zeros((n, N_SCALARS), np.float32)
        for j, b in enumerate(self.bands[:2]):
            snr = snr_median(np.asarray(flux_by_band[b], np.float64), np.asarray(err_by_band[b], np.float64))
            scal[:, j] = np.log1p(np.maximum(np.nan_to_num(snr), 0.0))
        scal[:, 2] = np.clip(self.chi2_dof(top[:, 0], err_by_band), 0.0, 50.0)
        if not with_locator:
            return out, scal
        if not nested:
            return out, scal, out[:, 0].copy()
        with np.errstate(invalid="ignore"):
            mix = np.logaddexp(llp.astype(np.float64), both[:, 2].astype(np.float64))
            loc = mix - np.max(mix, axis=1, keepdims=True)
        loc = np.maximum(np.nan_to_num(loc, nan=-1e4, neginf=-1e4, posinf=0.0), -1e4)
        return out, scal, loc.astype(np.float32)

    def chi2_dof(self, best_loglike_ls: np.ndarray, err_by_band: dict) -> np.ndarray:
        """Best least-squares chi2 per degree of freedom, shape (N,)."""
        n_valid = sum(
            np.sum(np.isfinite(np.asarray(err_by_band[b])) & (np.asarray(err_by_band[b]) > 0), axis=1)
            for b in self.bands
        )
        dof = np.maximum(n_valid - self.basis.n_templates, 1)
        return -2.0 * np.asarray(best_loglike_ls, np.float64) / dof

    # --- file --------------------------------------------------------------------------------------------
    def save(self, path: PathLike) -> Path:
        """Write the basis and the grid settings to one HDF5 file (atomically)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            save_basis(self.basis, tmp)
            with h5py.File(tmp, "a") as h5:
                h5.attrs["physics"] = json.dumps(
                    {
                        "lsf": self.lsf,
                        "zmin": self.zmin,
                        "zmax": self.zmax,
                        "psf_sigma_pix": self.psf_sigma_pix,
                        "bands": list(self.bands),
                        "coeff_curves": self.coeff_curves,
                        "locator_lsf_scale": self.locator_lsf_scale,
                    }
                )
                g = h5.create_group("physics_waves")
                for b, w in self.wave_by_band.items():
                    g.create_dataset(b, data=w)
        return path

    @classmethod
    def load(cls, path: PathLike, threads: int = 2) -> "PhysicsCurves":
        """Read a file written by :meth:`save`.

        Raises
        ------
        FileFormatError
            Missing or unreadable file, or no physics settings in it.
        """
        path = Path(path)
        basis = read_basis(path)
        try:
            with h5py.File(path, "r") as h5:
                meta = json.loads(h5.attrs["physics"])
                waves = {b: h5["physics_waves"][b][()] for b in meta["bands"]}
        except (OSError, KeyError, ValueError) as exc:
            raise FileFormatError(str(path), f"no physics settings in this basis file ({exc})") from None
        return cls(
            basis,
            waves,
            meta["psf_sigma_pix"],
            meta["lsf"],
            meta["zmin"],
            meta["zmax"],
            threads=threads,
            coeff_curves=bool(meta.get("coeff_curves", False)),
            locator_lsf_scale=float(meta.get("locator_lsf_scale", 1.0)),  # files before 0.7.0: no relocation
        )


__all__ = ["PhysicsCurves", "rest_seds_of_split", "learn_physics_basis", "LS_CURVE_SCALE", "N_SCALARS", "RELOCATE_HALF"]
