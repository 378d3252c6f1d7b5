"""Calibration of predicted Gaussian redshift uncertainties, fitted on the validation split.

A prediction is a Gaussian N(mu, sigma^2) in z; its probability integral transform at the
truth is PIT = Phi((z_true - mu) / sigma). Well calibrated predictions have uniform PIT.

Methods
-------
``beta`` (Kull et al. 2017, the ``betacal`` package; the paper's choice): a map
    B(p) = 1 / (1 + exp(-(c + a ln p - b ln(1 - p)))) of CDF values to calibrated ones.
    The three-parameter Beta family cannot follow a plain width error over the whole
    range (a model overconfident by 2x needs C(p) = Phi(Phi^-1(p) / 2), whose tails the
    family misses by ~4 points of 95% coverage), so csstz first applies the ``scale``
    factor s below and fits B on the rescaled CDF values p' = Phi(Phi^-1(p) / s):
    C(p) = B(p'). B then corrects what a width factor cannot (bias, skew, tail shape).
    B is fitted as a binary calibration problem: for each validation source
    i and each level p_k (``N_LEVELS`` uniform levels in (0, 1) plus as many quantiles of
    the validation PIT values, so that the tails are sampled) the score is p_k and
    the label is 1[PIT_i <= p_k]; P(label | score = p) is the CDF of the PIT, i.e. the
    calibration map. The calibrated CDF of a prediction is C(Phi((z - mu) / sigma)).
``scale``: one factor s multiplying every sigma, s = the 68.27% quantile of
    |z_true - mu| / sigma (so the 1-sigma interval covers 68.27% on validation; robust
    to outliers, unlike the RMS).
``none``: identity.

Calibrated 1-sigma ZERR: the half-width of the calibrated central 68.27% interval,
    ZERR = sigma * (Phi^-1(C^-1(0.84135)) - Phi^-1(C^-1(0.15865))) / 2,
which for these maps is a constant factor ``k68`` times sigma. Intervals at any level
come from :meth:`Calibration.interval`. No function here looks at a test split: the
caller passes validation arrays only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit, log_ndtr, ndtr, ndtri

from .config import CALIBRATIONS, CalibrateConfig
from .errors import FileFormatError, InputError
from .io.atomic import atomic_path
from .schema import CALIBRATION_FILE, P68, P95

if TYPE_CHECKING:
    from ._types import ArrayLike, PathLike

METHODS = CALIBRATIONS
N_LEVELS = 99


def pit_values(z_true: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """Probability integral transform Phi((z_true - mu) / sigma), shape of the inputs."""
    z_true, mu, sigma = (np.asarray(a, np.float64) for a in (z_true, mu, sigma))
    return ndtr((z_true - mu) / sigma)


def _check(z_true: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z_true, mu, sigma = (np.asarray(a, np.float64).ravel() for a in (z_true, mu, sigma))
    if not (z_true.shape == mu.shape == sigma.shape):
        raise InputError("sigma", "z_true, mu and sigma must have one length", value=(z_true.size, mu.size, sigma.size))
    ok = np.isfinite(z_true) & np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    if ok.sum() < 10:
        raise InputError(
            "sigma", "fewer than 10 finite predictions with sigma > 0 to calibrate on", value=int(ok.sum())
        )
    return z_true[ok], mu[ok], sigma[ok]


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map.

    Attributes
    ----------
    method : {"beta", "scale", "none"}
    params : dict
        beta: s, a, b, c (logit C = c + a ln p' - b ln(1-p'), p' = Phi(Phi^-1(p) / s)); scale: s.
    """

    method: str = "none"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError("calibration", "unknown method", value=self.method, allowed=", ".join(METHODS))

    # --- the map on CDF values -------------------------------------------------------------
    def cdf_of_t(self, t: ArrayLike) -> np.ndarray:
        """Calibrated CDF at mu + t * sigma (t in units of the predicted sigma).

        Works in t (not p) so that far tails stay representable: log Phi is evaluated with
        ``scipy.special.log_ndtr``.
        """
        t = np.asarray(t, np.float64)
        if self.method == "beta":
            u = t / self.params.get("s", 1.0)
            a, b, c = self.params["a"], self.params["b"], self.params["c"]
            return expit(c + a * log_ndtr(u) - b * log_ndtr(-u))
        if self.method == "scale":
            return ndtr(t / self.params["s"])
        return ndtr(t)

    def cdf_map(self, p: ArrayLike) -> np.ndarray:
        """Calibrated CDF value C(p) for predicted CDF values p in (0, 1)."""
        return self.cdf_of_t(ndtri(np.clip(np.asarray(p, np.float64), 1e-300, 1 - 1e-16)))

    def quantile_factor(self, q: ArrayLike) -> np.ndarray:
        """t such that the calibrated CDF reaches q at mu + t * sigma (bisection; C is monotone)."""
        q = np.asarray(q, np.float64)
        lo = np.full(q.shape, -1e3)
        hi = np.full(q.shape, 1e3)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            below = self.cdf_of_t(mid) < q
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def interval(self, mu: np.ndarray, sigma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated central interval of probability ``level``: (lo, hi), each shaped like mu."""
        if not 0 < level < 1:
            raise InputError("level", "interval level out of range", value=level, allowed="(0, 1)")
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        t_lo, t_hi = self.quantile_factor([(1 - level) / 2, (1 + level) / 2])
        return mu + t_lo * sigma, mu + t_hi * sigma

    @property
    def k68(self) -> float:
        """Calibrated 1-sigma half-width in units of sigma."""
        t_lo, t_hi = self.quantile_factor([(1 - P68) / 2, (1 + P68) / 2])
        return float((t_hi - t_lo) / 2)

    def zerr(self, sigma: ArrayLike) -> np.ndarray:
        """Calibrated 1-sigma ZERR (half-width of the calibrated 68.27% interval)."""
        return self.k68 * np.asarray(sigma, np.float64)

    # --- storage ---------------------------------------------------------------------------
    def header(self) -> dict:
        """FITS header keywords describing this calibration."""
        h = {"CALMETH": self.method, "CALK68": round(self.k68, 8)}
        for key, val in self.params.items():
            h[f"CAL{key.upper()}"[:8]] = float(val)
        if not all(np.isfinite(v) for k, v in h.items() if k != "CALMETH"):
            raise InputError("calibration", "non-finite calibration parameter", value=h)
        return h

    def to_dict(self) -> dict:
        return {"method": self.method, "params": {k: float(v) for k, v in self.params.items()}, "k68": self.k68}

    def save(self, path: PathLike) -> None:
        """Write as JSON, atomically."""
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: PathLike) -> "Calibration":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
            return cls(d["method"], dict(d.get("params", {})))
        except FileNotFoundError:
            raise FileFormatError(str(p), "calibration file not found") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise FileFormatError(str(p), f"not a calibration file ({exc})") from None


def fit_calibration(z_true: ArrayLike, mu: ArrayLike, sigma: ArrayLike, method: str = "beta") -> Calibration:
    """Fit a calibration on validation predictions.

    Parameters
    ----------
    z_true, mu, sigma : array_like, shape (N,)
        True redshift, predicted mean and (uncalibrated, total) 1-sigma width of the
        VALIDATION split. Non-finite rows are skipped.
    method : {"beta", "scale", "none"}

    Raises
    ------
    InputError
        Unknown method, unequal lengths, or fewer than 10 usable rows.
    """
    if method not in METHODS:
        raise InputError("calibration", "unknown method", value=method, allowed=", ".join(METHODS))
    if method == "none":
        return Calibration("none", {})
    z_true, mu, sigma = _check(z_true, mu, sigma)
    s = max(float(np.quantile(np.abs(z_true - mu) / sigma, P68)), 1e-6)
    if method == "scale":
        return Calibration("scale", {"s": s})
    from betacal import BetaCalibration  # imported lazily: sklearn is slow to import

    u = pit_values(z_true, mu, s * sigma)
    # levels: a uniform grid plus the quantiles of the observed PIT, so that the tails where
    # an over- or under-confident model puts its PIT values carry weight in the fit
    grid = (np.arange(N_LEVELS) + 1.0) / (N_LEVELS + 1.0)
    levels = np.clip(np.concatenate([grid, np.quantile(u, grid)]), 1e-12, 1 - 1e-12)
    score = np.broadcast_to(levels[None, :], (u.size, levels.size)).ravel()
    label = (u[:, None] <= levels[None, :]).ravel().astype(int)
    bc = BetaCalibration(parameters="abm").fit(score, label)
    a, b, _ = bc.calibrator_.map_
    c = float(bc.calibrator_.lr_.intercept_[0])
    if not np.all(np.isfinite([a, b, c])):  # degenerate fit (e.g. separable labels): width factor only
        a, b, c = 1.0, 1.0, 0.0
    return Calibration("beta", {"s": s, "a": float(a), "b": float(b), "c": c})


def interval_coverage(z_true: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Fraction of z_true inside [lo, hi]."""
    z_true, lo, hi = (np.asarray(a, np.float64) for a in (z_true, lo, hi))
    return float(np.mean((z_true >= lo) & (z_true <= hi)))


def calibrated_reliability(
    z_true: ArrayLike,
    mu: ArrayLike,
    sigma: ArrayLike,
    calibration: Calibration | None = None,
    levels: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Observed coverage of central intervals against their nominal level.

    Returns
    -------
    levels : ndarray, shape (K,)
        Nominal central-interval probabilities (default 0.05 .. 0.95 and 0.6827, 0.9545).
    observed : ndarray, shape (K,)
        Fraction of sources whose truth lies inside the interval.
    """
    cal = calibration or Calibration("none")
    if levels is None:
        levels = np.unique(np.concatenate([np.arange(0.05, 0.96, 0.05), [P68, P95]]))
    levels = np.asarray(levels, np.float64)
    obs = np.array([interval_coverage(z_true, *cal.interval(mu, sigma, lv)) for lv in levels])
    return levels, obs


def calibrate_run(run_dir: PathLike, val: dict, config: CalibrateConfig | None = None) -> tuple[Calibration, dict]:
    """Fit the calibration of a run on its validation predictions and save it beside the model.

    Parameters
    ----------
    run_dir : path-like
        Run directory; ``calibration.json`` is written there (atomically).
    val : dict of ndarray
        Raw BNN predictions on the validation split (:func:`csstz.predict.predict_validation`):
        ``z_true``, ``z``, ``zerr_epistemic``, ``zerr_aleatoric``.
    config : CalibrateConfig, optional

    Returns
    -------
    calibration : Calibration
    summary : dict
        Method, parameters and the validation coverage of the 68/95% intervals before and after.
    """
    cfg = config or CalibrateConfig()
    z_val, z = np.asarray(val["z_true"], np.float64), np.asarray(val["z"], np.float64)
    uncal = np.hypot(val["zerr_epistemic"], val["zerr_aleatoric"])
    cal = fit_calibration(z_val, z, uncal, cfg.calibration)
    cal.save(Path(run_dir) / CALIBRATION_FILE)
    summary = cal.to_dict() | {
        "val_coverage_68_before": interval_coverage(z_val, z - uncal, z + uncal),
        "val_coverage_95_before": interval_coverage(z_val, z - 2 * uncal, z + 2 * uncal),
        "val_coverage_68_after": interval_coverage(z_val, *cal.interval(z, uncal, P68)),
        "val_coverage_95_after": interval_coverage(z_val, *cal.interval(z, uncal, P95)),
    }
    return cal, summary


# --- the p(z) estimator: a temperature on p(z) and the flag thresholds ----------------------------------
#: Temperatures tried (log-spaced): p_T ~ p^(1/T); T > 1 broadens.
TEMPERATURES = np.exp(np.linspace(np.log(0.4), np.log(5.0), 61))


def fit_temperature(logits: np.ndarray, grid_z: np.ndarray, z_true: np.ndarray) -> tuple[float, list]:
    """The temperature minimising the mean negative log density of the true redshifts.

    Parameters
    ----------
    logits : ndarray, shape (N, M, K)
        Ensemble logits on the grid (validation spectra).
    grid_z : ndarray, shape (K,)
    z_true : ndarray, shape (N,)

    Returns
    -------
    temperature : float
    scan : list of (T, mean NLL)
    """
    from .predict_pz import member_probabilities

    lnz = np.log1p(grid_z)
    dz = (1.0 + grid_z) * np.gradient(lnz)
    scan = []
    for t in TEMPERATURES:
        dens = member_probabilities(logits, t).mean(axis=1) / dz
        at = np.array([np.interp(z, grid_z, d) for z, d in zip(z_true, dens)])
        scan.append((float(t), float(-np.mean(np.log(np.maximum(at, 1e-12))))))
    best = min(scan, key=lambda r: r[1])
    return best[0], scan


def calibrate_pz_run(
    run_dir: PathLike, dataset_path: PathLike, val_rows: np.ndarray, ood_quantile: float, multimodal_mass: float
) -> dict:
    """Fit the p(z) run's calibration on validation rows; write ``calibration.json``; return it.

    The temperature minimises the validation NLL (:func:`fit_temperature`); then a PIT map per
    GI-SNR bin (:func:`csstz.templates.pdf.fit_pit_map`) makes the validation PITs uniform; the
    OUT_OF_DISTRIBUTION statistic ranks each spectrum's feature distance and members' spread in their
    validation distributions (:func:`csstz.predict_pz.ood_reference`, :func:`csstz.predict_pz.ood_statistic`),
    and its threshold is the ``ood_quantile`` of the validation spectra's statistic (so ~1 - ood_quantile of
    in-family spectra are flagged);
    the MULTIMODAL threshold is ``multimodal_mass``. Coverage of the 68.3% / 95.4% intervals on
    validation at each step is recorded (the last two are in-sample).
    """
    from .instrument import load_instrument
    from .io.spectra import read_catalog, read_spectra
    from .predict_pz import PzRun, gi_snr, ood_reference, ood_statistic
    from .templates import pdf

    run = PzRun(run_dir)
    cat = read_catalog(dataset_path)[val_rows]
    lsf = run.physics.lsf_index(cat, load_instrument())
    sp = read_spectra(dataset_path, bands=run.bands, rows=val_rows)
    logits, scal, phys, dist = run.forward(
        {b: sp.bands[b].flux for b in run.bands}, {b: sp.bands[b].err for b in run.bands}, lsf
    )
    z_true = np.asarray(cat["Z"], np.float64)
    grid = run.physics.grid_z
    t, scan = fit_temperature(logits, grid, z_true)
    # the same summaries as prediction (csstz.predict_pz.PzRun.summarise_outputs), step by step
    tempered = run.summarise_outputs(logits, scal, phys, t, pit_map=None, feature_distance=dist)
    pit_map = pdf.fit_pit_map(pdf.pit(tempered["pz"], grid, z_true), gi_snr(scal))
    ood_ref = ood_reference(tempered)
    cov = {}
    for name, s in (
        ("before", run.summarise_outputs(logits, scal, phys, 1.0, pit_map=None)),
        ("temperature", tempered),
        ("temperature+pit_map", run.summarise_outputs(logits, scal, phys, t, pit_map=pit_map)),
    ):
        cov[name] = {
            "coverage_68": interval_coverage(z_true, s["lo68"], s["hi68"]),
            "coverage_95": interval_coverage(z_true, s["lo95"], s["hi95"]),
        }
    cal = {
        "method": "temperature+pit_map",
        "temperature": t,
        "nll_scan": scan,
        "pit_map": pit_map,
        "ood_statistic": "sum of the ranks, in the in-family validation distributions (ood_reference), of the "
        "squared Mahalanobis distance of the pooled network features from the training density (OOD_DIST2) "
        "and of the members' spread of mean ln(1+z)",
        "ood_reference": ood_ref,
        "ood_quantile": float(ood_quantile),
        "ood_threshold": float(np.nanquantile(ood_statistic(tempered, ood_ref), ood_quantile)),
        "multimodal_mass": float(multimodal_mass),
        "n_val": int(len(val_rows)),
        "val_coverage": cov,
    }
    with atomic_path(Path(run_dir) / CALIBRATION_FILE) as tmp:
        Path(tmp).write_text(json.dumps(cal, indent=1))
    return cal


def load_run_calibration(run_dir: PathLike) -> Calibration | None:
    """The calibration saved in a run directory, or None if it has none."""
    p = Path(run_dir) / CALIBRATION_FILE
    return Calibration.load(p) if p.is_file() else None


__all__ = [
    "calibrate_pz_run",
    "fit_temperature",
    "calibrate_run",
    "load_run_calibration",
    "Calibration",
    "fit_calibration",
    "pit_values",
    "interval_coverage",
    "calibrated_reliability",
    "METHODS",
    "P68",
    "P95",
    "CALIBRATION_FILE",
]
