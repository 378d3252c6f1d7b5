"""Redshifts and p(z) from a ``csstz train --model pz`` run (docs/estimator.md).

For each spectrum: the physics curves (:class:`csstz.templates.physics.PhysicsCurves`, saved
in the run) -> every ensemble member's logits (:class:`csstz.models.pz.PzNet`) -> each member's
probability per grid cell, sharpened or broadened by the calibration temperature T fitted on
the validation split (``p_m^(1/T)``, renormalised) -> the members' mixture:

* ``PZ`` / ``PZ_GRID``: the mixture as a density per unit z, trapezoid-normalised on the grid;
* ``Z``: the network chooses the peak (the mixture's mode), the physics posterior (the locator plus
  log n(z), at full grid resolution) locates it within ``PEAK_WINDOW`` grid steps, refined below the
  grid step by a parabola in ln p (:func:`refine_on_physics`), and re-locates it within 2 grid steps at the
  galaxy's narrower line-spread core (:meth:`csstz.templates.physics.PhysicsCurves.relocate`). With the
  default point estimate ``"kernel"`` (since 0.9.0), where the mixture smoothed by a Gaussian of
  ``PEAK_KERNEL_STEPS`` grid steps peaks more than ``PEAK_SWITCH_STEPS`` steps from its mode, ``Z`` is that
  smoothed peak instead (:func:`csstz.templates.pdf.kernel_mode`: the peak holding the most probability
  within about the outlier threshold, rather than the tallest);
* ``ZERR``: half the width of its central 68.27% interval (``Z_LO68``/``Z_HI68``, ``Z_LO95``/
  ``Z_HI95`` the intervals themselves);
* ``ZERR_EPISTEMIC``: the spread of the members' mean redshifts; ``ZERR_ALEATORIC``: the rms of
  the members' own p(z) widths (law of total variance: their squares add up to the mixture's
  variance);
* ``P_SECOND``: the probability farther than 0.02 (1 + Z) from the mode;
* ``CHI2_DOF``: the learned basis' best least-squares chi2 per degree of freedom.

Calibration (fitted on the validation split, ``calibration.json``): the temperature, then a PIT map
per GI-SNR bin (:func:`csstz.templates.pdf.apply_pit_map`) that reshapes the mixture so that its
central intervals cover what they claim.

ZWARN (:class:`csstz.zwarn.ZWARN`): LITTLE_COVERAGE (< half the pixels valid), Z_FITLIMIT (the
68% interval leaves the training redshift range), BAD_MINFIT (non-finite output), MULTIMODAL
(``P_SECOND`` above the run's threshold), OUT_OF_DISTRIBUTION (``OOD_SCORE`` above the run's threshold,
the ``ood_quantile`` of the in-family validation values: :func:`ood_statistic`, the ranks in the validation
distributions of the squared Mahalanobis distance of the network's pooled features from the training
split's Gaussian density, Lee et al. 2018, and of the ensemble members' spread, summed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.table import Table

from . import __version__
from .config import LOCATORS, POINT_ESTIMATES, PredictConfig
from .errors import FileFormatError, InputError
from .schema import CALIBRATION_FILE, P68, P95, PZ_FILE, PZ_LOCATOR_FILE, PZ_PHYSICS_FILE, RUN_FORMAT_VERSION
from .zwarn import ZWARN, flag_where

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._types import ArrayLike, PathLike
    from .instrument import Instrument
    from .io.predictions import PzSpool

#: Below this fraction of valid input pixels LITTLE_COVERAGE is set.
MIN_VALID_FRAC = 0.5
#: Spectra per block of :func:`predict_rows` (measured on 4,000 spectra, 2 physics processes: blocks of
#: 1024 / 512 / 256 gave 1,090 / 1,259 / 1,268 spectra/s; smaller blocks keep both cores busy).
PREDICT_BLOCK = 512
#: Half-width [grid steps of 1.15e-3 in ln(1+z)] of the window around the network's mode in which the physics
#: posterior locates Z (project choice, standard run's validation split, 100k-sample network: windows of
#: 2 / 4 / 8 steps gave eta 5.40 / 5.25 / 5.20% and sigma_NMAD 0.00249 / 0.00248 / 0.00248, the network's
#: own mode 5.45% and 0.00262).
PEAK_WINDOW = 4
#: Width [grid steps of 1.15e-3 in ln(1+z): 0.0184, about the outlier threshold |dz|/(1+z) = 0.02] of the
#: Gaussian that smooths the mixture for the "kernel" point estimate, and the distance [grid steps] from the
#: mixture's mode beyond which its smoothed peak replaces the located mode (project choice, 0.9.0, on a
#: 20,000-galaxy selection sample (root seed 4) and the standard run's validation split, both weighted to the
#: test split's n(z): the smallest eta whose sigma_NMAD costs at most 1% on the sample (eta 0.80x -> 0.70x the
#: kcorrect fit's there, 0.82x -> 0.70x on validation; sigma_NMAD +0.8% and +2.1%); docs/estimator.md).
PEAK_KERNEL_STEPS = 16.0
PEAK_SWITCH_STEPS = 5.0
#: The two parts of the OUT_OF_DISTRIBUTION statistic (:func:`ood_statistic`): the feature distance and the
#: members' spread in ln(1 + z) (project choice, 0.8.1, on the cross-population runs' validation splits: held-out
#: outliers caught at a 4% in-family rate 68% / 60% against 37% / 48% for the distance alone, docs/estimator.md).
OOD_PARTS = ("feature_distance", "spread_ln1pz")
#: Quantile knots of each part's in-family validation distribution kept in ``calibration.json``.
OOD_RANK_KNOTS = 1001
#: Their levels, equally spaced from 0 to 1: a part's rank is its value's level, linear between knots.
OOD_RANK_LEVELS = np.linspace(0.0, 1.0, OOD_RANK_KNOTS)


def check_run_format(run_dir: PathLike, summary: dict) -> None:
    """Refuse a run directory of another run-format version with one line naming both."""
    got = summary.get("run_format")
    if got != RUN_FORMAT_VERSION:
        raise FileFormatError(
            str(Path(run_dir)),
            f"run format {got} is not the format {RUN_FORMAT_VERSION} this "
            f"csstz {__version__} reads (retrain with this version)",
        )


def summarise(
    cell_prob: np.ndarray,
    grid_z: np.ndarray,
    pit_map: dict | None = None,
    snr: np.ndarray | None = None,
    locate: Callable[[np.ndarray], np.ndarray] | None = None,
    kernel_steps: float = 0.0,
    switch_steps: float = PEAK_SWITCH_STEPS,
) -> dict:
    """Point estimates and intervals of p(z) given as probabilities per grid cell.

    Parameters
    ----------
    cell_prob : ndarray, shape (N, M, K)
        Per member, probability of each grid point (rows sum to 1 over K).
    grid_z : ndarray, shape (K,)
        Increasing redshift grid, uniform in ln(1 + z).
    pit_map, snr : dict, ndarray (N,), optional
        A validation PIT map (:func:`csstz.templates.pdf.fit_pit_map`) and each spectrum's GI SNR:
        the mixture is recalibrated by it (``pz``, intervals, ``p_second``); ``z`` stays the mode of
        the mixture before the map, and the epistemic / aleatoric parts are the members'.
    locate : callable, optional
        Maps the mixture's mode (N,) to ``z`` (e.g. :func:`refine_on_physics` with the physics curve).
    kernel_steps, switch_steps : float
        ``kernel_steps > 0``: where the mixture smoothed by a Gaussian of ``kernel_steps`` grid steps
        (:func:`csstz.templates.pdf.kernel_mode`) peaks more than ``switch_steps`` grid steps (in ln(1 + z))
        from the mixture's mode, ``z`` is that smoothed peak (not located); elsewhere the located mode.

    Returns
    -------
    dict of ndarray
        ``pz`` (N, K) density per unit z (trapezoid-normalised), ``z``, ``zerr``, ``lo68``, ``hi68``,
        ``lo95``, ``hi95``, ``zerr_epistemic``, ``spread_ln1pz`` (the members' spread of their mean
        ln(1 + z)), ``zerr_aleatoric``, ``p_second``.
    """
    from .templates import pdf

    grid_z = np.asarray(grid_z, np.float64)
    cell_prob = np.asarray(cell_prob, np.float64)
    ln1pz = np.log1p(grid_z)
    mean_m = cell_prob @ grid_z  # (N, M)
    var_m = cell_prob @ (grid_z * grid_z) - mean_m**2
    # the members' spread in ln(1 + z): does not depend on where Z is located, so calibration and prediction agree
    spread_ln = (cell_prob @ ln1pz).std(axis=1)
    # density per unit z: cell probability / dz of the cell (uniform in ln(1+z): dz = (1+z) dlnz)
    dens = pdf.normalise(cell_prob.mean(axis=1) / ((1.0 + grid_z) * np.gradient(ln1pz))[None, :], grid_z)
    z_mode = pdf.mode(dens, grid_z)
    z = z_mode if locate is None else np.asarray(locate(z_mode), np.float64)
    if kernel_steps > 0:
        z_kernel = pdf.kernel_mode(dens, grid_z, kernel_steps)
        with np.errstate(invalid="ignore"):
            far = np.abs(np.log1p(z_kernel) - np.log1p(z_mode)) > switch_steps * (ln1pz[1] - ln1pz[0])
        z = np.where(far, z_kernel, z)  # NaN compares False: such rows keep z
    if pit_map is not None:
        if snr is None:
            raise InputError("snr", "a PIT map needs each spectrum's GI SNR", value=None)
        dens = pdf.apply_pit_map(dens, grid_z, snr, pit_map)
    (lo68, hi68, lo95, hi95), p_second = pdf.summaries(
        dens, grid_z, (0.5 - P68 / 2, 0.5 + P68 / 2, 0.5 - P95 / 2, 0.5 + P95 / 2), z
    )
    return {
        "pz": dens.astype(np.float32),
        "z": z,
        "zerr": 0.5 * (hi68 - lo68),
        "lo68": lo68,
        "hi68": hi68,
        "lo95": lo95,
        "hi95": hi95,
        "zerr_epistemic": mean_m.std(axis=1),
        "spread_ln1pz": spread_ln,
        "zerr_aleatoric": np.sqrt(np.maximum(var_m, 0.0).mean(axis=1)),
        "p_second": p_second,
    }


def refine_on_physics(
    z_mode: np.ndarray, loglike: np.ndarray, log_prior: np.ndarray, grid_z: np.ndarray, window: int = PEAK_WINDOW
) -> np.ndarray:
    """The peak of the physics posterior within ``window`` grid steps of each network mode, (N,).

    The network chooses the peak (that is where it removes outliers); the physics log-likelihood plus
    log n(z), at full grid resolution, locates it (parabola-refined, :func:`csstz.templates.pdf.mode`).

    Parameters
    ----------
    z_mode : ndarray (N,)
    loglike : ndarray (N, K)
        The physics locator (:meth:`csstz.templates.physics.PhysicsCurves.curves` with ``with_locator``: log
        marginal likelihood minus its maximum).
    log_prior : ndarray (K,)
    grid_z : ndarray (K,)
    window : int
        Half-width in grid steps around the grid point nearest each network mode.

    Returns
    -------
    ndarray, shape (N,)
        The refined redshifts; the network's mode where the window holds no finite likelihood.
    """
    from .templates import pdf

    g = np.asarray(grid_z, np.float64)
    zm = np.asarray(z_mode, np.float64).reshape(-1)
    j = np.clip(np.searchsorted(g, np.nan_to_num(zm, nan=g[0])), 1, g.size - 1)
    j = np.where(np.abs(g[j - 1] - zm) <= np.abs(g[j] - zm), j - 1, j)  # nearest grid point
    ll = np.asarray(loglike)
    rows = np.arange(zm.size)[:, None]
    z, found = pdf.window_posterior_peak(lambda k: ll[rows, k].astype(np.float64), j, int(window), log_prior, g)
    return np.where(found & np.isfinite(z) & np.isfinite(zm), z, zm)


def valid_pixels(err: dict, bands: tuple) -> tuple[np.ndarray, int]:
    """Valid (finite, positive error) input pixels of each spectrum over ``bands``, (N,), and the pixel count."""
    valid = sum(np.sum(np.isfinite(err[b]) & (np.asarray(err[b]) > 0), axis=1) for b in bands)
    return valid, sum(np.asarray(err[b]).shape[1] for b in bands)


def gi_snr(scalars: np.ndarray) -> np.ndarray:
    """The GI-band (second network band) median SNR of each spectrum from the physics scalars.

    Parameters
    ----------
    scalars : ndarray, shape (N, S)
        :meth:`csstz.templates.physics.PhysicsCurves.curves` scalars (column 1: ln(1 + SNR) of the second band).

    Returns
    -------
    ndarray, shape (N,)
    """
    return np.expm1(np.asarray(scalars, np.float64)[:, 1])


def ood_reference(res: dict) -> dict:
    """The in-family reference distributions of the OUT_OF_DISTRIBUTION statistic's two parts.

    Parameters
    ----------
    res : dict
        :meth:`PzRun.summarise_outputs` of the in-family validation spectra (``feature_distance``,
        ``spread_ln1pz``).

    Returns
    -------
    dict
        ``{part: knots}`` for each of :data:`OOD_PARTS`: the part's quantiles at :data:`OOD_RANK_LEVELS`
        (its empirical CDF, kept in ``calibration.json``).
    """
    # a spectrum without a finite part (no valid pixels: BAD_MINFIT) does not shape the in-family distribution
    return {k: np.nanquantile(np.asarray(res[k], np.float64), OOD_RANK_LEVELS).tolist() for k in OOD_PARTS}


def check_ood_reference(reference: dict) -> None:
    """Validate an :func:`ood_reference` dict (as read from ``calibration.json``).

    Raises
    ------
    InputError
        A part missing, or not :data:`OOD_RANK_KNOTS` finite non-decreasing knots (the field names the part).
    """
    for k in OOD_PARTS:
        knots = np.asarray(reference.get(k, []), np.float64)
        if knots.shape != (OOD_RANK_KNOTS,) or not np.all(np.isfinite(knots)) or np.any(np.diff(knots) < 0):
            raise InputError(
                f"ood_reference.{k}",
                f"must be {OOD_RANK_KNOTS} finite non-decreasing knots",
                value=f"{knots.size} values",
            )


def ood_statistic(res: dict, reference: dict | None = None) -> np.ndarray:
    """The OUT_OF_DISTRIBUTION statistic of each spectrum, (N,).

    With ``reference`` (:func:`ood_reference`, the run's in-family validation distributions): the sum of the
    spectrum's two ranks, from 0 to 2, in those distributions (their empirical CDFs, linear between
    knots): the squared Mahalanobis distance of the network's pooled features from the training split's
    feature density (:meth:`csstz.models.pz.PzNet.feature_distance`; Lee et al. 2018) and the ensemble
    members' disagreement, the spread of their mean ln(1 + z) (Lakshminarayanan et al. 2017). Both measure
    what the networks do not know; a spectrum unlike the training set raises either (docs/estimator.md).
    Without it (calibrations before 0.8.1): the feature distance alone.

    Parameters
    ----------
    res : dict
        :meth:`PzRun.summarise_outputs` output (``feature_distance``, ``spread_ln1pz``).
    reference : dict, optional

    Returns
    -------
    ndarray, shape (N,)
        NaN where a part is not finite (never above a threshold: such spectra are flagged BAD_MINFIT instead).
    """
    dist = np.asarray(res["feature_distance"], np.float64)
    if reference is None:
        return dist
    check_ood_reference(reference)
    total = np.zeros_like(dist)
    for k in OOD_PARTS:
        total += np.interp(np.asarray(res[k], np.float64), np.asarray(reference[k], np.float64), OOD_RANK_LEVELS)
    return total


def member_probabilities(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """Per-member cell probabilities with the calibration temperature, (N, M, K) float64.

    The softmax runs in float32, the network's own precision (5x faster than in float64; probabilities agree to
    ~3e-7 of the peak, and the p(z) are written as float32)."""
    import torch

    lg = torch.as_tensor(np.asarray(logits), dtype=torch.float32) / float(temperature)
    return torch.softmax(lg, dim=-1).numpy().astype(np.float64)


class PzRun:
    """A trained p(z) run directory: physics stage, network, calibration.

    Raises
    ------
    FileFormatError
        Not a p(z) run, another run-format version, or unreadable files.
    """

    def __init__(
        self, run_dir: PathLike, threads: int = 2, point: str = POINT_ESTIMATES[0], locator: str = "auto"
    ) -> None:
        from .io.run_dir import read_summary
        from .templates.physics import PhysicsCurves
        from .train.checkpoint import file_checksum, load_model

        if point not in POINT_ESTIMATES:
            raise InputError("point", "unknown point estimate", value=point, allowed=", ".join(POINT_ESTIMATES))
        if locator not in ("auto", *LOCATORS):
            raise InputError("locator", "unknown locator", value=locator, allowed=", ".join(("auto", *LOCATORS)))
        self.point = point
        self.run_dir = Path(run_dir)
        self.summary = read_summary(self.run_dir)
        if self.summary.get("estimator") != "pz":
            raise FileFormatError(
                str(self.run_dir),
                f"not a p(z) run (estimator {self.summary.get('estimator', 'paper')!r}); use --model bnn or cnn",
            )
        check_run_format(self.run_dir, self.summary)
        self.net, payload = load_model(self.run_dir / PZ_FILE)
        self.bands = tuple(payload["config"]["bands"])
        self.physics = PhysicsCurves.load(self.run_dir / PZ_PHYSICS_FILE, threads=threads)
        if tuple(self.physics.bands) != self.bands or len(self.physics.grid_z) != payload["config"]["n_grid"]:
            raise FileFormatError(
                str(self.run_dir / PZ_PHYSICS_FILE),
                f"physics stage does not match the network (bands {self.physics.bands} vs {self.bands})",
            )
        self.checksum = file_checksum(self.run_dir / PZ_FILE)
        loc_path = self.run_dir / PZ_LOCATOR_FILE
        if locator == "auto":
            locator = "nnls" if loc_path.is_file() else "prior"
        if locator == "nnls" and not loc_path.is_file():
            raise InputError(
                "locator", f"the run has no {PZ_LOCATOR_FILE} (trained before 0.10.0 or with --pz-locator prior)",
                value=locator, path=str(self.run_dir),
            )  # fmt: skip
        self.locator_name = locator
        self.locator = None
        if locator == "nnls":
            from .instrument import load_instrument
            from .templates.locator import NNLSLocator

            inst = load_instrument()
            self.locator = NNLSLocator(
                loc_path,
                self.physics.wave_by_band,
                {b: inst.band(b).dispersion_aa_per_pix for b in self.bands},
                self.physics.model.lsf_sigma_pix,
                self.physics.grid_z,
            )
        cal_path = self.run_dir / CALIBRATION_FILE
        self.calibration = json.loads(cal_path.read_text()) if cal_path.is_file() else {}
        from .errors import CsstzError
        from .templates.pdf import check_pit_map

        for key, check in (("pit_map", check_pit_map), ("ood_reference", check_ood_reference)):
            if key in self.calibration:
                try:
                    check(self.calibration[key])
                except CsstzError as exc:
                    raise FileFormatError(str(cal_path), f"bad {key} ({exc})") from None

    @property
    def relocates(self) -> bool:
        """Whether Z gets a last re-location (the non-negative locator, or the physics basis's at its narrower
        line-spread widths)."""
        return self.locator is not None or self.physics.relocates

    def locator_lsf_index(self, catalog: Table, instrument: Instrument) -> np.ndarray | None:
        """The line-spread sets of the last re-location (the run's ``locator_lsf_scale``; all set 0 for a run with
        ``lsf="point"``), or None where the run does not re-locate."""
        if not self.relocates:
            return None
        idx = self.physics.lsf_index(catalog, instrument, self.physics.locator_lsf_scale)
        return np.zeros(len(catalog), np.int64) if idx is None else idx

    def native(self, flux: dict, err: dict, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
        """The run's bands' native pixels concatenated, (N, P) flux and err in ``dtype`` (what the non-negative
        locator reads; :func:`predict_rows` sends them across processes in float32, the precision they are stored
        in)."""
        return (
            np.concatenate([np.asarray(flux[b], dtype) for b in self.bands], axis=1),
            np.concatenate([np.asarray(err[b], dtype) for b in self.bands], axis=1),
        )

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))

    def logits(self, flux: dict, err: dict, lsf_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Network logits (N, M, K) and the physics scalars (N, S) of spectra."""
        out, scal, _, _ = self.forward(flux, err, lsf_index)
        return out, scal

    def forward(
        self,
        flux: dict,
        err: dict,
        lsf_index: np.ndarray | None = None,
        prepared: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Network logits (N, M, K), the physics scalars (N, S), the physics locator log-likelihood (N, K) and the
        feature distance (N,). ``prepared``: the spectra already on the physics' common grid."""
        curves, scal, locator = self.physics.curves(flux, err, lsf_index, with_locator=True, prepared=prepared)
        lg, dist = self.network(curves, scal)
        return lg, scal, locator, dist

    def network(self, curves: np.ndarray, scalars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The members' logits (N, M, K) of physics curves and scalars, and the squared Mahalanobis distance
        (N,) of the pooled features from the training density."""
        import torch

        with torch.no_grad():
            lg, feats = self.net.forward_features(torch.from_numpy(curves), torch.from_numpy(scalars))
            return lg.numpy(), self.net.feature_distance(feats).numpy()

    def summarise_outputs(
        self,
        logits: np.ndarray,
        scalars: np.ndarray,
        loglike: np.ndarray,
        temperature: float | None = None,
        pit_map: dict | None | bool = True,
        feature_distance: np.ndarray | None = None,
        relocate: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    ) -> dict:
        """:func:`summarise` of network outputs, as prediction does it (the one path, shared with calibration).

        Parameters
        ----------
        logits, scalars, loglike, feature_distance : ndarray
            :meth:`forward`'s outputs (``feature_distance`` is passed through as ``res["feature_distance"]``).
        temperature : float, optional
            Default: the run's calibration temperature.
        pit_map : dict, None or True
            True: the run's calibrated PIT map (if any); None: no map; a dict: that map.
        relocate : (a, b, lsf_index), optional
            The spectra and their LSF sets at the locator's widths (:meth:`locator_lsf_index`): ``z`` is then
            re-located. With the non-negative locator (``locator_name`` "nnls") ``a, b`` are the native pixels'
            flux and err (:meth:`native`) and :meth:`csstz.templates.locator.NNLSLocator.relocate` re-locates;
            with "prior" they are the spectra on the physics' common grid
            (:meth:`csstz.templates.xcorr.XcorrModel.prepare_spectra`) and
            :meth:`csstz.templates.physics.PhysicsCurves.relocate` does (nothing to do for a run whose
            ``locator_lsf_scale`` is 1). Without it ``z`` is where :func:`refine_on_physics` puts it
            (calibration, which reads the p(z) only). The run's ``point`` estimate "kernel" then replaces
            ``z`` where the smoothed mixture peaks elsewhere (:func:`summarise`).

        Returns
        -------
        dict
            :func:`summarise`'s arrays, with ``z`` located by :func:`refine_on_physics` (and re-located).
        """
        t = self.temperature if temperature is None else float(temperature)
        prob = member_probabilities(logits, t)
        grid = self.physics.grid_z
        pmap = self.calibration.get("pit_map") if pit_map is True else pit_map
        log_prior = self.net.log_prior.numpy().astype(np.float64)

        def locate(z: np.ndarray) -> np.ndarray:
            z = refine_on_physics(z, loglike, log_prior, grid)
            if relocate is None or not self.relocates:
                return z
            a, b, idx = relocate
            if self.locator is not None:
                return self.locator.relocate(z, a, b, idx, log_prior)
            return self.physics.relocate(z, None, None, idx, log_prior, prepared=(a, b))

        kernel = PEAK_KERNEL_STEPS if self.point == "kernel" else 0.0
        res = summarise(prob, grid, pmap, gi_snr(scalars), locate=locate, kernel_steps=kernel)
        if feature_distance is not None:
            res["feature_distance"] = np.asarray(feature_distance, np.float64)
        return res

    def predict_arrays(
        self,
        flux: dict,
        err: dict,
        lsf_index: np.ndarray | None = None,
        temperature: float | None = None,
        locator_lsf_index: np.ndarray | None = None,
    ) -> dict:
        """:func:`summarise` of spectra plus ``chi2_dof`` and ``n_valid``/``n_pixels``.

        ``temperature`` given: that temperature and no PIT map (the calibration's own scans).
        ``locator_lsf_index``: the LSF sets of :meth:`locator_lsf_index` (what :func:`predict_rows` passes); None:
        ``z`` is not re-located.
        """
        prep = self.physics.model.prepare_spectra(flux, err)  # once, for the curves and the relocation
        lg, scal, phys, dist = self.forward(flux, err, lsf_index, prepared=prep)
        rel = None
        if locator_lsf_index is not None and self.relocates:
            rel = (*(self.native(flux, err) if self.locator is not None else prep), locator_lsf_index)
        return self.predicted(lg, scal, phys, dist, temperature, rel, *valid_pixels(err, self.bands))

    def predicted(
        self,
        logits: np.ndarray,
        scalars: np.ndarray,
        loglike: np.ndarray,
        feature_distance: np.ndarray,
        temperature: float | None,
        relocate: tuple | None,
        n_valid: np.ndarray,
        n_pixels: int,
    ) -> dict:
        """What prediction writes of one block: :meth:`summarise_outputs` (the run's calibration, or
        ``temperature`` and no PIT map) plus ``chi2_dof``, ``n_valid`` and ``n_pixels``."""
        out = self.summarise_outputs(
            logits,
            scalars,
            loglike,
            temperature,
            pit_map=True if temperature is None else None,
            feature_distance=feature_distance,
            relocate=relocate,
        )
        out["chi2_dof"] = scalars[:, 2].astype(np.float64)
        out["ood_score"] = ood_statistic(out, self.calibration.get("ood_reference"))
        out["n_valid"], out["n_pixels"] = n_valid, n_pixels
        return out

    def zwarn(self, res: dict) -> np.ndarray:
        z_lo, z_hi = self.summary["z_range"]
        w = flag_where(res["n_valid"] < MIN_VALID_FRAC * res["n_pixels"], ZWARN.LITTLE_COVERAGE)
        with np.errstate(invalid="ignore"):
            w |= flag_where((res["lo68"] < z_lo) | (res["hi68"] > z_hi), ZWARN.Z_FITLIMIT)
            w |= flag_where(res["p_second"] > float(self.calibration.get("multimodal_mass", 1.0)), ZWARN.MULTIMODAL)
            w |= flag_where(
                res["ood_score"] > float(self.calibration.get("ood_threshold", np.inf)), ZWARN.OUT_OF_DISTRIBUTION
            )
        w |= flag_where(~(np.isfinite(res["z"]) & np.isfinite(res["zerr"])), ZWARN.BAD_MINFIT)
        return w


def predict_rows(
    run: PzRun,
    spectra_path: PathLike,
    rows: np.ndarray,
    block: int = PREDICT_BLOCK,
    temperature: float | None = None,
    workers: int = 1,
    spool: PzSpool | None = None,
) -> tuple[dict, Table]:
    """Predict rows of a spectra file in blocks; returns the concatenated arrays and the catalogue rows.

    ``spool`` given: each block's p(z) is appended to it (:class:`csstz.io.predictions.PzSpool`, on disk)
    instead of being kept, and the result has no ``pz``: memory then grows by the per-spectrum scalars only.

    ``workers`` > 1: forked processes read the blocks and compute their physics curves
    (:func:`csstz.parallel.forked_imap`) while this process runs the network (on one torch thread) and the
    summaries; the physics is the same bit for bit for any number of workers, the network's output to rounding.
    """
    from .instrument import load_instrument
    from .io.spectra import band_names, read_catalog, read_spectra
    from .models.pz import one_thread_beside_workers
    from .parallel import forked_imap

    cat = read_catalog(spectra_path)[rows]
    missing = [b for b in run.bands if b not in band_names(spectra_path)]
    if missing:
        raise InputError("bands", "spectra file lacks a band of the run", value=missing[0], path=str(spectra_path))
    inst = load_instrument()
    lsf = run.physics.lsf_index(cat, inst)
    relocates = run.relocates
    lsf_loc = run.locator_lsf_index(cat, inst)
    nnls = run.locator is not None
    phys = run.physics.for_workers(workers)

    def curves(s: int) -> tuple:
        sp = read_spectra(spectra_path, bands=run.bands, rows=rows[s : s + block], with_catalog=False)
        flux = {b: sp.bands[b].flux for b in run.bands}
        err = {b: sp.bands[b].err for b in run.bands}
        prep = phys.model.prepare_spectra(flux, err)  # once, for the curves and the relocation
        c, sc, loc = phys.curves(
            flux, err, None if lsf is None else lsf[s : s + block], with_locator=True, prepared=prep
        )
        # float32 halves what crosses the process boundary; the weights go relative to each row's largest, so
        # that no flux unit can under- or overflow float32
        fw = None
        if relocates and nnls:  # the native pixels (float32, as read) for the non-negative locator
            fw = run.native(flux, err, np.float32)
        elif relocates:
            top = np.max(prep[1], axis=1, keepdims=True)
            top = np.where(top > 0, top, 1.0)
            fw = (prep[0].astype(np.float32), (prep[1] / top).astype(np.float32), top)
        return c, sc, loc, *valid_pixels(err, run.bands), fw

    parts = []
    with one_thread_beside_workers(workers):
        for s, (c, sc, loc, valid, n_pix, fw) in zip(
            range(0, rows.size, block), forked_imap(curves, range(0, rows.size, block), workers)
        ):
            lg, dist = run.network(c, sc)
            rel = None
            idx = None if lsf_loc is None else lsf_loc[s : s + block]
            if fw is not None and nnls:  # native flux, err: the locator reads them in float64 itself
                rel = (*fw, idx)
            elif fw is not None:
                f32, w_rel, top = fw
                rel = (f32, w_rel.astype(np.float64) * top, idx)
            out = run.predicted(lg, sc, loc, dist, temperature, rel, valid, n_pix)
            if spool is not None:
                spool.append(out.pop("pz"))
            parts.append(out)
    res = {k: np.concatenate([p[k] for p in parts]) if np.ndim(parts[0][k]) else parts[0][k] for k in parts[0]}
    return res, cat


def predict_pz_file(
    run_dir: PathLike, spectra_path: PathLike, out_path: PathLike, config: PredictConfig | None = None
) -> Table:
    """``csstz predict`` for a p(z) run: the REDSHIFTS table plus PZ / PZ_GRID, written atomically."""
    from .io.predictions import PzSpool, write_predictions
    from .io.spectra import split_rows

    cfg = config or PredictConfig()
    run = PzRun(run_dir, point=cfg.point, locator=cfg.locator)
    rows = split_rows(spectra_path, cfg.split)
    spool_dir = None if out_path is None else Path(out_path).parent
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    with PzSpool(run.physics.grid_z.size, spool_dir) as spool:
        res, cat = predict_rows(run, spectra_path, rows, workers=cfg.workers, spool=spool)
        tab = _redshift_table(run, res, cat)
        if out_path is not None:
            write_predictions(out_path, tab, tab.meta, pz=spool, pz_grid=run.physics.grid_z)
    return tab


def _redshift_table(run: PzRun, res: dict, cat: Table) -> Table:
    """The REDSHIFTS table (columns and header keywords in ``meta``) of :func:`predict_rows`' arrays."""
    tab = Table()
    tab["TARGETID"] = np.asarray(cat["TARGETID"], np.int64)
    for col, key in (
        ("Z", "z"),
        ("ZERR", "zerr"),
        ("ZERR_EPISTEMIC", "zerr_epistemic"),
        ("ZERR_ALEATORIC", "zerr_aleatoric"),
        ("Z_LO68", "lo68"),
        ("Z_HI68", "hi68"),
        ("Z_LO95", "lo95"),
        ("Z_HI95", "hi95"),
        ("P_SECOND", "p_second"),
        ("CHI2_DOF", "chi2_dof"),
        ("OOD_DIST2", "feature_distance"),
        ("OOD_SCORE", "ood_score"),
    ):
        tab[col] = np.asarray(res[key], np.float64)
    tab["ZWARN"] = run.zwarn(res)
    header = {
        "METHOD": "csstz-pz",
        "MODELSUM": run.checksum,
        "CALMETH": "temperature+pit_map" if "pit_map" in run.calibration else "temperature",
        "CALTEMP": run.temperature,
        "RUNFMT": RUN_FORMAT_VERSION,
        "ZPOINT": run.point,
        "ZLOCATOR": run.locator_name,
    }
    tab.meta.update(header)
    return tab


__all__ = [
    "POINT_ESTIMATES",
    "refine_on_physics",
    "valid_pixels",
    "gi_snr",
    "ood_statistic",
    "ood_reference",
    "check_ood_reference",
    "PzRun",
    "predict_pz_file",
    "predict_rows",
    "summarise",
    "member_probabilities",
    "check_run_format",
]
