"""A rest-frame template basis learned from the training split, with a Gaussian prior on its coefficients.

The embedded population makes every galaxy as ``f_lambda = sum_k COEFF_k T_k(lambda/(1+z))/(1+z)``
with the five kcorrect NMF templates ``T_k`` (:mod:`csstz.population.embedded`). The noiseless
rest-frame SED of each *training* galaxy is therefore rebuilt exactly from its catalogue ``COEFF``
(:func:`embedded_rest_seds`); nothing of the validation or test split enters the basis or its prior.

:func:`learn_basis` normalises those SEDs to unit mean flux over the basis grid, takes their
principal components (PCA: mean SED + K-1 components, ``method="pca"``) or a non-negative
factorisation (``method="nmf"``, scikit-learn), and fits a Gaussian (or a Gaussian mixture) to the
least-squares coefficients of the normalised SEDs: the *prior* ``sum_g w_g N(mu_g, C_g)`` used by
:mod:`csstz.templates.xcorr` for the shape of a galaxy whose amplitude is free. :func:`choose_n_components`
picks K on held-out (validation) SEDs.

Basis file (HDF5, :func:`save_basis` / :func:`read_basis`)::

    /wave_aa     (W,)     float64  rest-frame wavelength [Angstrom], increasing
    /templates   (K, W)   float64  rest-frame f_lambda, arbitrary unit (shapes only)
    /norm        (K,)     float64  mean of each template over wave_aa: amplitude A = norm . a
    /prior_weight (G,)       float64  mixture weights of the coefficient prior               [optional]
    /prior_mean   (G, K)     float64  component means of the coefficients of a unit-amplitude SED
    /prior_cov    (G, K, K)  float64  component covariances (G = 1: a single Gaussian)
    attrs: format = "csstz-template-basis", format_version, name, method, provenance (JSON)

:func:`load_basis` accepts ``"kcorrect"`` (the packaged kcorrect NMF basis, no prior),
``"learned:<dataset.h5>"`` (learn from that dataset's training split now) or a basis file path
(HDF5 as above, or a kcorrect-layout FITS template file).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import FileFormatError, InputError
from ..io.atomic import atomic_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._types import ArrayLike, PathLike

log = logging.getLogger(__name__)

#: Iteration cap of the NMF solver (project choice: ~20 s for the locator's 4,000 SEDs on 2 cores).
NMF_MAX_ITER = 800
#: File format tag and version of a basis file (the file carries its own version, not the package's).
BASIS_FORMAT = "csstz-template-basis"
BASIS_FORMAT_VERSION = 1
#: Rest-frame range of a learned basis [A]: covers GV+GI (3810-10571 A observed) for 0 <= z <= 1.6
#: (3810 / 2.6 = 1465 A) with margin.
REST_WAVE_MIN_AA, REST_WAVE_MAX_AA = 1300.0, 11000.0
#: Default candidates for the number of components and the validation criterion: the smallest K whose
#: median relative rms reconstruction residual of validation SEDs is below this (project choice).
K_CANDIDATES = (2, 3, 4, 5, 6, 8)
K_TOL_REL_RMS = 1e-3
#: Emission-line groups that :func:`add_emission_lines` can add to a basis: (vacuum wavelength [A], relative
#: flux) of each line of the group. Wavelengths: SDSS vacuum line list. Ratios: [OIII] 5008/4960 = 2.98 and
#: [NII] 6585/6550 = 2.94 (Storey & Zeippen 2000, MNRAS 312, 813); [OII] 3729/3727 = 1 and [NII] 6585/H-alpha
#: = 0.3 (project choices, typical of star-forming galaxies; the doublets are unresolved at R ~ 200).
EMISSION_LINE_GROUPS: dict[str, tuple[tuple[float, float], ...]] = {
    "OII": ((3727.09, 1.0), (3729.88, 1.0)),
    "OIII": ((5008.24, 1.0), (4960.30, 1.0 / 2.98)),
    "HaNII": ((6564.61, 1.0), (6585.27, 0.3), (6549.86, 0.3 / 2.94)),
}
#: Groups added by default: [OII], whose strength relative to the continuum differs most between the
#: embedded and the SPS families; freeing [OIII] or H-alpha as well cost in-family accuracy and gained nothing
#: across families (docs/estimator.md).
DEFAULT_LINE_GROUPS = ("OII",)
#: Intrinsic Gaussian sigma of a line [A] (~100 km/s at H-alpha; project choice: any value well below the
#: CSST line-spread sigma of ~10 A gives the same observed profile).
LINE_SIGMA_AA = 2.0
#: A line template is set to exactly 0 where below this fraction of its peak (compact support).
LINE_TRUNCATE_REL = 1e-6


@dataclass
class TemplateBasis:
    """A rest-frame template basis and an optional Gaussian prior on its normalised coefficients.

    Attributes
    ----------
    wave_aa : ndarray, shape (W,)
        Rest-frame wavelength [A], increasing.
    templates : ndarray, shape (K, W)
        Rest-frame f_lambda of each template (arbitrary unit).
    norm : ndarray, shape (K,)
        A model ``sum_k a_k T_k`` has amplitude ``norm . a``: the mean of each template over ``wave_aa``,
        0 for free emission-line templates (:func:`add_emission_lines`).
    prior_mean, prior_cov : ndarray (G, K), (G, K, K) or None
        Gaussian-mixture prior on the coefficients of a unit-amplitude SED (G = 1: one Gaussian).
    prior_weight : ndarray (G,) or None
        Mixture weights (sum 1).
    name : str
        ``kcorrect``, ``learned-pca-K5``, ...
    provenance : dict
        Where the basis came from (dataset, split, number of SEDs, method, K, seed, ...).
    """

    wave_aa: np.ndarray
    templates: np.ndarray
    norm: np.ndarray
    prior_mean: np.ndarray | None = None
    prior_cov: np.ndarray | None = None
    prior_weight: np.ndarray | None = None
    name: str = "basis"
    provenance: dict = field(default_factory=dict)

    @property
    def n_templates(self) -> int:
        return int(self.templates.shape[0])

    @property
    def has_prior(self) -> bool:
        return self.prior_mean is not None and self.prior_cov is not None

    def __post_init__(self) -> None:
        if self.prior_mean is not None:
            self.prior_mean = np.atleast_2d(np.asarray(self.prior_mean, np.float64))
            cov = np.asarray(self.prior_cov, np.float64)
            self.prior_cov = cov[None] if cov.ndim == 2 else cov
            G = self.prior_mean.shape[0]
            self.prior_weight = (
                np.full(G, 1.0 / G) if self.prior_weight is None else np.asarray(self.prior_weight, np.float64).ravel()
            )


# --- rest-frame SEDs of the training split -------------------------------------------------------
def rest_grid_aa(wmin_aa: float = REST_WAVE_MIN_AA, wmax_aa: float = REST_WAVE_MAX_AA) -> np.ndarray:
    """The kcorrect templates' own (log-uniform, dln(lambda) = 8.6e-4) wavelength grid within [wmin, wmax] [A]."""
    from ..population.sdss_fit import read_templates

    w, _ = read_templates()
    return w[(w >= wmin_aa) & (w <= wmax_aa)].copy()


def normalise_seds(seds: np.ndarray) -> np.ndarray:
    """SEDs divided by their mean over the grid (unit amplitude); rows with mean <= 0 are refused."""
    s = np.asarray(seds, np.float64)
    m = s.mean(axis=1)
    if np.any(~np.isfinite(m)) or np.any(m <= 0):
        r = int(np.flatnonzero(~(m > 0))[0])
        raise InputError("seds", "an SED has non-positive or non-finite mean flux", row=r, value=float(m[r]))
    return s / m[:, None]


def embedded_rest_seds(
    dataset: PathLike,
    split: str = "train",
    wave_aa: np.ndarray | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Normalised noiseless rest-frame SEDs of one split of an embedded-population dataset.

    ``SED = sum_k COEFF_k T_k(lambda)`` with the kcorrect templates (the population's own recipe,
    :mod:`csstz.population.embedded`); the redshift and distance factors drop out of a normalised SED.

    Parameters
    ----------
    dataset : path
        Spectra/dataset file from ``csstz build`` (catalogue columns SPLIT and COEFF).
    split : {"train", "val"}
        The test split is refused: no choice may look at it.
    wave_aa : ndarray, optional
        Rest grid (default :func:`rest_grid_aa`).
    max_rows : int, optional
        Keep at most this many rows (a seeded random subset).

    Returns
    -------
    wave_aa : (W,), seds : (N, W) normalised, info : dict (dataset, split, n_sed, recipe)

    Raises
    ------
    InputError
        ``split == "test"``, or the catalogue lacks SPLIT / COEFF, or no row is in the split.
    """
    from ..io.spectra import read_catalog
    from ..population.sdss_fit import read_templates

    if split == "test":
        raise InputError("split", "the test split may not be used to learn a basis", value=split, allowed="train, val")
    cat = read_catalog(dataset)
    for col in ("SPLIT", "COEFF"):
        if col not in cat.colnames:
            raise InputError(
                col, "column missing from the catalogue (needs an embedded-population build)", path=str(dataset)
            )
    rows = np.flatnonzero(np.asarray(cat["SPLIT"]) == split)
    if rows.size == 0:
        raise InputError("SPLIT", "no row in this split", value=split, path=str(dataset))
    if max_rows is not None and rows.size > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    coeff = np.asarray(cat["COEFF"], np.float64)[rows]
    if coeff.ndim != 2 or not np.all(np.isfinite(coeff)) or np.any(coeff < 0):
        raise InputError("COEFF", "must be finite, non-negative, one vector per row", path=str(dataset))
    tw, tf = read_templates()
    wave = rest_grid_aa() if wave_aa is None else np.asarray(wave_aa, np.float64)
    T = np.stack([np.interp(wave, tw, t) for t in tf])  # (5, W) erg/s/cm^2/A at 10 pc
    seds = coeff @ T
    keep = seds.mean(axis=1) > 0
    info = {
        "dataset": str(Path(dataset).resolve()),
        "split": split,
        "n_sed": int(keep.sum()),
        "sed_recipe": "COEFF x kcorrect-default-v4 templates (population.embedded)",
    }
    return wave, normalise_seds(seds[keep]), info


# --- learning --------------------------------------------------------------------------------------
def _pca(seds: np.ndarray, k: int) -> np.ndarray:
    """Mean SED + the first k-1 principal components (unit-norm rows), shape (k, W)."""
    mean = seds.mean(axis=0)
    x = seds - mean
    if x.shape[0] <= x.shape[1]:  # few SEDs: thin SVD of the (N x W) data
        comps = np.linalg.svd(x, full_matrices=False)[2][: k - 1]
    else:  # many SEDs: eigen-decomposition of the (W x W) scatter matrix
        evals, evecs = np.linalg.eigh(x.T @ x)
        comps = evecs[:, np.argsort(evals)[::-1][: k - 1]].T
    # a deterministic sign: the largest-|.| entry of each component is positive
    sgn = np.sign(comps[np.arange(comps.shape[0]), np.argmax(np.abs(comps), axis=1)])
    return np.vstack([mean[None, :], comps * sgn[:, None]])


def _nmf(seds: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, int, bool]:
    """NMF components (k, W), the iterations run, and whether scikit-learn's tolerance was reached.

    The coordinate-descent solver often stops at :data:`NMF_MAX_ITER` before its (strict) tolerance on SED sets of
    thousands; the basis is deterministic either way and its reconstruction quality is recorded in the provenance
    (``train_median_rel_rms``), so scikit-learn's ConvergenceWarning becomes a log line and a provenance field
    (``nmf_converged``) instead of a warning on every ``csstz train``.
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    model = NMF(n_components=k, init="nndsvda", max_iter=NMF_MAX_ITER, random_state=seed, tol=1e-6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(np.clip(seds, 0.0, None))
    for w in caught:  # anything but the convergence notice goes on as it came
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.info("NMF basis: tolerance not reached in %d iterations (the basis is used as learned)", model.n_iter_)
    return model.components_, int(model.n_iter_), converged


def project(templates: np.ndarray, seds: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of each SED on the templates, shape (N, K)."""
    T = np.asarray(templates, np.float64)
    coef, *_ = np.linalg.lstsq(T.T, np.asarray(seds, np.float64).T, rcond=None)
    return coef.T


def reconstruction_rel_rms(templates: np.ndarray, seds: np.ndarray) -> np.ndarray:
    """Per-SED rms of (SED - best fit) relative to the SED's rms, shape (N,)."""
    c = project(templates, seds)
    res = seds - c @ templates
    return np.sqrt((res**2).mean(axis=1) / (seds**2).mean(axis=1))


def fit_coefficient_prior(
    coef: np.ndarray, n_mixture: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian (n_mixture = 1) or Gaussian-mixture prior of normalised-SED coefficients (N, K).

    Returns
    -------
    weight (G,), mean (G, K), cov (G, K, K)
    """
    coef = np.asarray(coef, np.float64)
    if n_mixture == 1:
        return np.ones(1), coef.mean(axis=0)[None], np.atleast_2d(np.cov(coef, rowvar=False))[None]
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(
        n_mixture,
        covariance_type="full",
        reg_covar=1e-6 * float(np.var(coef)),
        random_state=seed,
        n_init=1,
        max_iter=300,
    ).fit(coef)
    return gm.weights_, gm.means_, gm.covariances_


def learn_basis(
    wave_aa: ArrayLike,
    seds: ArrayLike,
    n_components: int,
    method: str = "pca",
    seed: int = 0,
    provenance: dict | None = None,
    n_mixture: int = 1,
) -> TemplateBasis:
    """Learn a K-template basis and the Gaussian prior of the normalised SEDs' coefficients.

    Parameters
    ----------
    wave_aa : ndarray, shape (W,)
        Rest wavelength [A], increasing.
    seds : ndarray, shape (N, W)
        Rest-frame SEDs (normalised here to unit mean).
    n_components : int
        K >= 1 (PCA: the mean SED counts as the first template).
    method : {"pca", "nmf"}
    seed : int
        For NMF's initialisation.
    provenance : dict, optional
        Stored in the basis (where the SEDs came from).

    Returns
    -------
    TemplateBasis
        With ``prior_mean``/``prior_cov``: mean and covariance of the coefficients of the normalised SEDs.
    """
    wave = np.asarray(wave_aa, np.float64)
    if wave.ndim != 1 or wave.size < 10 or not np.all(np.diff(wave) > 0):
        raise InputError("wave_aa", "must be an increasing 1-d grid of >= 10 points")
    s = normalise_seds(seds)
    if s.shape[1] != wave.size:
        raise InputError("seds", f"must have shape (N, {wave.size})", value=s.shape)
    if not (isinstance(n_components, (int, np.integer)) and 1 <= n_components <= min(s.shape)):
        raise InputError("n_components", "must be an integer between 1 and min(N, W)", value=n_components)
    nmf_info: dict = {}
    if method == "pca":
        T = _pca(s, int(n_components))
    elif method == "nmf":
        T, n_iter, converged = _nmf(s, int(n_components), seed)
        nmf_info = {"nmf_iterations": n_iter, "nmf_converged": converged}
    else:
        raise InputError("method", "unknown basis method", value=method, allowed="pca, nmf")
    coef = project(T, s)
    wgt, mu, cov = fit_coefficient_prior(coef, n_mixture, seed)
    rel = reconstruction_rel_rms(T, s)
    prov = dict(provenance or {})
    prov.update(
        {
            "method": method,
            "n_components": int(n_components),
            "n_sed": int(s.shape[0]),
            "seed": int(seed),
            "train_median_rel_rms": float(np.median(rel)),
            "train_p99_rel_rms": float(np.quantile(rel, 0.99)),
            "normalisation": "unit mean f_lambda over wave_aa",
            "prior_mixture": int(n_mixture),
            **nmf_info,
        }
    )
    return TemplateBasis(
        wave,
        T,
        T.mean(axis=1),
        mu,
        cov,
        wgt,
        name=f"learned-{method}-K{int(n_components)}-G{int(n_mixture)}",
        provenance=prov,
    )


def choose_n_components(
    wave_aa: ArrayLike,
    seds_train: ArrayLike,
    seds_val: ArrayLike,
    candidates: Sequence[int] = K_CANDIDATES,
    method: str = "pca",
    tol: float = K_TOL_REL_RMS,
) -> tuple[int, list[dict]]:
    """Smallest K whose median relative reconstruction rms on the *validation* SEDs is below ``tol``.

    Returns
    -------
    k : int
        The chosen K (the largest candidate if none reaches ``tol``).
    table : list of dict
        ``{"k", "val_median_rel_rms", "val_p99_rel_rms"}`` per candidate.
    """
    table, chosen = [], None
    sv = normalise_seds(seds_val)
    st = normalise_seds(seds_train)
    # PCA components are nested: one decomposition at the largest K serves every candidate
    full = _pca(st, int(max(candidates))) if method == "pca" else None
    for k in candidates:
        T = full[: int(k)] if full is not None else learn_basis(wave_aa, seds_train, int(k), method=method).templates
        rel = reconstruction_rel_rms(T, sv)
        table.append(
            {"k": int(k), "val_median_rel_rms": float(np.median(rel)), "val_p99_rel_rms": float(np.quantile(rel, 0.99))}
        )
        if chosen is None and np.median(rel) < tol:
            chosen = int(k)
    return (chosen if chosen is not None else int(candidates[-1])), table


def build_learned_basis(
    dataset: PathLike,
    n_components: int | None = None,
    method: str = "pca",
    max_rows: int | None = None,
    n_mixture: int = 1,
) -> tuple[TemplateBasis, list[dict]]:
    """Learn a basis from ``dataset``'s training split; K chosen on its validation split when not given."""
    wave, s_train, info = embedded_rest_seds(dataset, "train", max_rows=max_rows)
    table = []
    if n_components is None:
        _, s_val, _ = embedded_rest_seds(dataset, "val", wave_aa=wave, max_rows=max_rows)
        n_components, table = choose_n_components(wave, s_train, s_val, method=method)
    basis = learn_basis(wave, s_train, int(n_components), method=method, provenance=info, n_mixture=n_mixture)
    if table:
        basis.provenance["k_selection_val"] = table
    return basis, table


# --- file round trip ---------------------------------------------------------------------------------
def save_basis(basis: TemplateBasis, path: PathLike) -> None:
    """Write a basis file (HDF5, atomically; layout in the module docstring)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("wave_aa", data=np.asarray(basis.wave_aa, np.float64))
            h5["wave_aa"].attrs["unit"] = "Angstrom (rest frame)"
            h5.create_dataset("templates", data=np.asarray(basis.templates, np.float64))
            h5.create_dataset("norm", data=np.asarray(basis.norm, np.float64))
            if basis.has_prior:
                h5.create_dataset("prior_weight", data=np.asarray(basis.prior_weight, np.float64))
                h5.create_dataset("prior_mean", data=np.asarray(basis.prior_mean, np.float64))
                h5.create_dataset("prior_cov", data=np.asarray(basis.prior_cov, np.float64))
            h5.attrs["format"] = BASIS_FORMAT
            h5.attrs["format_version"] = BASIS_FORMAT_VERSION
            h5.attrs["name"] = basis.name
            h5.attrs["method"] = str(basis.provenance.get("method", ""))
            h5.attrs["provenance"] = json.dumps(basis.provenance)


def read_basis(path: PathLike) -> TemplateBasis:
    """Read a basis file written by :func:`save_basis`.

    Raises
    ------
    FileFormatError
        Missing/unreadable file, another format or version, or inconsistent arrays (one line naming the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "template basis file not found")
    try:
        with h5py.File(p, "r") as h5:
            fmt = h5.attrs.get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            if fmt != BASIS_FORMAT:
                raise FileFormatError(
                    str(p), f"not a template basis file (attribute format={fmt!r}, expected {BASIS_FORMAT!r})"
                )
            ver = int(h5.attrs.get("format_version", -1))
            if ver != BASIS_FORMAT_VERSION:
                raise FileFormatError(str(p), f"basis format_version {ver}, this csstz reads {BASIS_FORMAT_VERSION}")
            for key in ("wave_aa", "templates", "norm"):
                if key not in h5:
                    raise FileFormatError(str(p), f"dataset /{key} missing")
            wave = h5["wave_aa"][:]
            T = h5["templates"][:]
            norm = h5["norm"][:]
            mu = h5["prior_mean"][:] if "prior_mean" in h5 else None
            cov = h5["prior_cov"][:] if "prior_cov" in h5 else None
            wgt = h5["prior_weight"][:] if "prior_weight" in h5 else None
            name = h5.attrs.get("name", "basis")
            prov = json.loads(h5.attrs.get("provenance", "{}"))
    except OSError as exc:
        raise FileFormatError(str(p), f"not a readable HDF5 basis file ({exc})") from None
    name = name.decode() if isinstance(name, bytes) else str(name)
    T = np.atleast_2d(T)
    K = T.shape[0]
    if wave.ndim != 1 or T.shape[1] != wave.size or not np.all(np.diff(wave) > 0):
        raise FileFormatError(str(p), f"/templates shape {T.shape} does not match increasing /wave_aa ({wave.size},)")
    if not (np.all(np.isfinite(T)) and np.all(np.isfinite(wave))):
        raise FileFormatError(str(p), "/templates or /wave_aa has non-finite values")
    if norm.shape != (K,):
        raise FileFormatError(str(p), f"/norm shape {norm.shape}, expected ({K},)")
    if mu is not None and mu.ndim == 1:
        mu, cov = mu[None], (cov[None] if cov is not None and cov.ndim == 2 else cov)
    G = 0 if mu is None else mu.shape[0]
    if (mu is None) != (cov is None) or (
        mu is not None and (mu.shape != (G, K) or cov.shape != (G, K, K) or (wgt is not None and wgt.shape != (G,)))
    ):
        raise FileFormatError(
            str(p),
            f"/prior_mean, /prior_cov (, /prior_weight) must exist together with shapes (G, {K}), (G, {K}, {K}), (G,)",
        )
    if mu is not None and not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
        raise FileFormatError(str(p), "the coefficient prior has non-finite values")
    return TemplateBasis(wave, T, norm, mu, cov, wgt, name=name, provenance=prov)


def line_templates(
    wave_aa: ArrayLike, groups: Sequence[str] = DEFAULT_LINE_GROUPS, sigma_aa: float = LINE_SIGMA_AA
) -> np.ndarray:
    """One template per emission-line group on ``wave_aa``: Gaussians of unit total flux (integral over
    wavelength = 1 [A x template unit]), exactly 0 outside the lines (compact support), shape (L, W).

    The Gaussian sigma is ``sigma_aa`` widened by the grid step (a line narrower than a pixel keeps its flux).
    """
    w = np.asarray(wave_aa, np.float64)
    unknown = [g for g in groups if g not in EMISSION_LINE_GROUPS]
    if unknown:
        raise InputError(
            "lines", "unknown emission-line group", value=unknown[0], allowed=", ".join(EMISSION_LINE_GROUPS)
        )
    if not (np.isfinite(sigma_aa) and sigma_aa > 0):
        raise InputError("line_sigma_aa", "must be > 0", value=sigma_aa)
    step = np.gradient(w)
    out = np.zeros((len(groups), w.size))
    for i, g in enumerate(groups):
        lines = EMISSION_LINE_GROUPS[g]
        for centre, rel in lines:
            s = np.sqrt(sigma_aa**2 + (step / 2.355) ** 2)
            out[i] += rel * np.exp(-0.5 * ((w - centre) / s) ** 2) / (np.sqrt(2.0 * np.pi) * s)
        if not out[i].max() > 0:
            raise InputError("lines", "emission-line group outside the basis' wavelength grid", value=g)
        out[i] = np.where(out[i] > LINE_TRUNCATE_REL * out[i].max(), out[i], 0.0)
        out[i] /= np.sum(out[i] * step)  # unit total flux on this grid
    return out


def add_emission_lines(
    basis: TemplateBasis, ew_sd_aa: float, groups: Sequence[str] = DEFAULT_LINE_GROUPS
) -> TemplateBasis:
    """The basis plus one free emission-line template per group, each with a zero-mean Gaussian prior.

    A learned basis holds only the line ratios of its training SEDs; a galaxy family with other ratios (the
    SPS population's [OII]/[OIII]/H-alpha) is then fitted at a wrong redshift. The added templates let each
    line group's flux move away from the basis' ratios. Their coefficient is the line flux in units of the
    SED's mean flux density times 1 A (an equivalent width in A relative to the mean continuum), with prior
    ``N(0, (A ew_sd_aa)^2)`` in every mixture component (independent of the other coefficients), and they do
    not count toward the amplitude ``A = norm . a`` (their ``norm`` is 0), so the amplitude stays the
    continuum's.

    Parameters
    ----------
    basis : TemplateBasis
        With a coefficient prior.
    ew_sd_aa : float
        Prior sigma of each group's extra flux, as an equivalent width [A] relative to the mean flux (> 0).
    groups : sequence of str
        Keys of :data:`EMISSION_LINE_GROUPS`.
    """
    if not basis.has_prior:
        raise InputError("basis", "emission lines need a basis with a coefficient prior", value=basis.name)
    if not (np.isfinite(ew_sd_aa) and ew_sd_aa > 0):
        raise InputError("line_ew_sd", "must be > 0 [A]", value=ew_sd_aa)
    groups = tuple(groups)
    L = line_templates(basis.wave_aa, groups)
    K0, n_l = basis.n_templates, len(groups)
    K = K0 + n_l
    G = basis.prior_mean.shape[0]
    mu = np.zeros((G, K))
    mu[:, :K0] = basis.prior_mean
    cov = np.zeros((G, K, K))
    cov[:, :K0, :K0] = basis.prior_cov
    cov[:, np.arange(K0, K), np.arange(K0, K)] = float(ew_sd_aa) ** 2
    prov = dict(basis.provenance)
    before = prov.get("emission_lines", {})  # lines added earlier stay free: the record accumulates
    prov["emission_lines"] = {
        "groups": list(before.get("groups", [])) + list(groups),
        "ew_sd_aa": list(before.get("ew_sd_aa", [])) + [float(ew_sd_aa)] * n_l,
        "sigma_aa": LINE_SIGMA_AA,
        "n_templates": int(before.get("n_templates", 0)) + n_l,
    }
    return TemplateBasis(
        basis.wave_aa,
        np.vstack([basis.templates, L]),
        np.concatenate([basis.norm, np.zeros(n_l)]),
        mu,
        cov,
        basis.prior_weight,
        name=f"{basis.name}-L{n_l}",
        provenance=prov,
    )


def kcorrect_basis() -> TemplateBasis:
    """The kcorrect NMF basis (5 templates, unit mean over 1500-11000 A rest; no prior)."""
    from .basis import load_templates

    w, f = load_templates()
    sel = (w >= REST_WAVE_MIN_AA) & (w <= REST_WAVE_MAX_AA)
    w, f = w[sel], f[:, sel]
    return TemplateBasis(
        w, f, f.mean(axis=1), name="kcorrect", provenance={"method": "kcorrect-default-v4 (Blanton & Roweis 2007)"}
    )


def load_basis(spec: str) -> TemplateBasis:
    """``"kcorrect"``, ``"learned:<dataset.h5>[:K]"`` or a basis file (HDF5 basis, or kcorrect-layout FITS).

    Raises
    ------
    FileFormatError
        A bad or missing basis file (one line naming it).
    InputError
        An unknown ``spec``.
    """
    spec = str(spec)
    if spec == "kcorrect":
        return kcorrect_basis()
    if spec.startswith("learned:"):
        rest = spec[len("learned:") :]
        k = None
        head, _, tail = rest.rpartition(":")
        if head and tail.isdigit():
            rest, k = head, int(tail)
        if not rest:
            raise InputError(
                "--basis",
                "learned: needs a dataset file",
                value=spec,
                allowed="kcorrect, learned:<dataset.h5>[:K], FILE",
            )
        return build_learned_basis(rest, n_components=k)[0]
    p = Path(spec)
    if p.suffix.lower() in (".fits", ".fit", ".fits.gz"):
        from .basis import load_templates

        if not p.is_file():
            raise FileFormatError(str(p), "template basis file not found")
        w, f = load_templates(str(p))
        return TemplateBasis(w, f, f.mean(axis=1), name=p.stem, provenance={"file": str(p.resolve())})
    if not p.exists() and "." not in p.name:
        raise InputError("--basis", "unknown basis", value=spec, allowed="kcorrect, learned:<dataset.h5>[:K], FILE")
    return read_basis(p)


__all__ = [
    "TemplateBasis",
    "rest_grid_aa",
    "normalise_seds",
    "embedded_rest_seds",
    "learn_basis",
    "project",
    "reconstruction_rel_rms",
    "fit_coefficient_prior",
    "choose_n_components",
    "build_learned_basis",
    "save_basis",
    "read_basis",
    "kcorrect_basis",
    "load_basis",
    "BASIS_FORMAT",
    "BASIS_FORMAT_VERSION",
    "K_CANDIDATES",
    "K_TOL_REL_RMS",
]
