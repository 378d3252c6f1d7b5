"""Redshift-accuracy and calibration metrics (pure numpy; no torch, no matplotlib).

The point metrics are exactly those of arXiv:2407.13991 sec. 4
(``docs/design.md``, Metrics), with ``dz = z_pred - z_true``:

* ``sigma_nmad = 1.48 * median(| (dz - median(dz)) / (1 + z_true) |)``
* ``eta`` (outlier fraction) = fraction with ``|dz| / (1 + z_true) > 0.02``
* ``ebar`` (weighted mean uncertainty) = ``mean(zerr / (1 + z_true))``

The probabilistic metrics treat each prediction as a Gaussian ``N(z_pred, zerr)``:
PIT, CRPS, coverage of central intervals, the reliability curve (nominal level of
the central interval against the observed fraction of truths inside it) and the
miscalibration area between that curve and the diagonal.

Every function raises :class:`csstz.errors.InputError` naming the argument on
empty or mismatched-length input, NaN/inf, ``zerr <= 0`` or ``z_true <= -1``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..schema import Z_RANGE

if TYPE_CHECKING:
    from .._types import ArrayLike

#: Normalised median absolute deviation factor (arXiv:2407.13991 sec. 4).
NMAD_FACTOR = 1.48
#: Outlier threshold on |dz|/(1+z) (arXiv:2407.13991 sec. 4).
OUTLIER_THRESHOLD = 0.02
#: Nominal content of the +-1 sigma and +-2 sigma central Gaussian intervals.
LEVEL_68 = math.erf(1.0 / math.sqrt(2.0))  # 0.682689...
LEVEL_95 = math.erf(2.0 / math.sqrt(2.0))  # 0.954500...
#: Edges of the true-redshift bins of the report (the method's range, csstz.schema.Z_RANGE, in 0.2 steps).
Z_EDGES = tuple(round(Z_RANGE[0] + 0.2 * i, 1) for i in range(int(round((Z_RANGE[1] - Z_RANGE[0]) / 0.2)) + 1))
#: Edges of the GI-SNR bins of the report (SNR = median flux/err over valid pixels).
SNR_EDGES = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, math.inf)

_SQRT2 = math.sqrt(2.0)
_ERF = np.frompyfunc(math.erf, 1, 1)


def _as_1d(name: str, values: ArrayLike, n: int | None = None) -> np.ndarray:
    """Float64 1-D copy of ``values``; raise InputError on empty/mismatched/non-finite input."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(name, "must be an array of numbers") from None
    if arr.ndim != 1:
        raise InputError(name, f"must be one-dimensional (got shape {arr.shape})")
    if arr.size == 0:
        raise InputError(name, "is empty")
    if n is not None and arr.size != n:
        raise InputError(name, f"has length {arr.size}, expected {n} (lengths must match)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(name, "must be finite", row=int(bad[0]), value=float(arr[bad[0]]))
    return arr


def _pair(z_pred: ArrayLike, z_true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    zt = _as_1d("z_true", z_true)
    zp = _as_1d("z_pred", z_pred, zt.size)
    bad = np.flatnonzero(zt <= -1.0)
    if bad.size:
        raise InputError("z_true", "must be > -1", row=int(bad[0]), value=float(zt[bad[0]]), allowed="> -1")
    return zp, zt


def _zerr(zerr: ArrayLike, n: int) -> np.ndarray:
    ze = _as_1d("zerr", zerr, n)
    bad = np.flatnonzero(ze <= 0)
    if bad.size:
        raise InputError("zerr", "must be > 0", row=int(bad[0]), value=float(ze[bad[0]]), allowed="> 0")
    return ze


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (vectorised erf; scipy-free)."""
    return 0.5 * (1.0 + _ERF(np.asarray(x, float) / _SQRT2).astype(np.float64))


def _level(level: float) -> float:
    try:
        lev = float(level)
    except (TypeError, ValueError):
        raise InputError("level", "must be a number", value=level) from None
    if not (0.0 < lev < 1.0):
        raise InputError("level", "out of range", value=lev, allowed="0 < level < 1")
    return lev


# --- the paper's point metrics -----------------------------------------------------------------
def sigma_nmad(z_pred: ArrayLike, z_true: ArrayLike) -> float:
    """Normalised median absolute deviation of the redshift error.

    ``1.48 * median(| (dz - median(dz)) / (1 + z_true) |)``, ``dz = z_pred - z_true``
    (arXiv:2407.13991 sec. 4).

    Parameters
    ----------
    z_pred, z_true : array_like, shape (N,)
        Predicted and true redshifts (dimensionless).

    Raises
    ------
    InputError
        Empty, mismatched lengths, non-finite values or ``z_true <= -1``.
    """
    zp, zt = _pair(z_pred, z_true)
    dz = zp - zt
    return float(NMAD_FACTOR * np.median(np.abs((dz - np.median(dz)) / (1.0 + zt))))


def outlier_fraction(z_pred: ArrayLike, z_true: ArrayLike, threshold: float = OUTLIER_THRESHOLD) -> float:
    """Fraction of sources with ``|dz| / (1 + z_true) > threshold`` (eta; 0.02 in the paper).

    Raises
    ------
    InputError
        As :func:`sigma_nmad`, or a threshold that is not a positive number.
    """
    zp, zt = _pair(z_pred, z_true)
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise InputError("threshold", "must be a positive number", value=threshold)
    return float(np.mean(np.abs(zp - zt) / (1.0 + zt) > threshold))


def weighted_mean_uncertainty(zerr: ArrayLike, z_true: ArrayLike) -> float:
    """E_bar = ``mean(zerr / (1 + z_true))`` (arXiv:2407.13991 sec. 4).

    Parameters
    ----------
    zerr : array_like, shape (N,)
        Predicted 1-sigma uncertainty of each redshift, > 0.
    z_true : array_like, shape (N,)
    """
    zt = _as_1d("z_true", z_true)
    ze = _zerr(zerr, zt.size)
    if np.any(zt <= -1):
        raise InputError("z_true", "must be > -1", allowed="> -1")
    return float(np.mean(ze / (1.0 + zt)))


def bias(z_pred: ArrayLike, z_true: ArrayLike) -> float:
    """Median of ``dz / (1 + z_true)`` (robust systematic offset; positive = over-estimate)."""
    zp, zt = _pair(z_pred, z_true)
    return float(np.median((zp - zt) / (1.0 + zt)))


# --- probabilistic metrics ---------------------------------------------------------------------
def pit(z_pred: ArrayLike, zerr: ArrayLike, z_true: ArrayLike) -> np.ndarray:
    """Probability integral transform of the truth under ``N(z_pred, zerr)``.

    Returns
    -------
    ndarray, shape (N,)
        ``Phi((z_true - z_pred) / zerr)`` in [0, 1]; uniform when calibrated.
    """
    zp, zt = _pair(z_pred, z_true)
    ze = _zerr(zerr, zt.size)
    return _norm_cdf((zt - zp) / ze)


def crps_gaussian(z_pred: ArrayLike, zerr: ArrayLike, z_true: ArrayLike) -> float:
    """Mean continuous ranked probability score of Gaussian predictions (unit: redshift).

    Closed form (Gneiting & Raftery 2007), ``w = (z_true - z_pred) / zerr``:
    ``CRPS = zerr * (w (2 Phi(w) - 1) + 2 phi(w) - 1/sqrt(pi))``.
    """
    zp, zt = _pair(z_pred, z_true)
    ze = _zerr(zerr, zt.size)
    w = (zt - zp) / ze
    phi = np.exp(-0.5 * w * w) / math.sqrt(2.0 * math.pi)
    crps = ze * (w * (2.0 * _norm_cdf(w) - 1.0) + 2.0 * phi - 1.0 / math.sqrt(math.pi))
    return float(np.mean(crps))


def _abs_central(z_pred: ArrayLike, zerr: ArrayLike, z_true: ArrayLike) -> np.ndarray:
    """``|2 PIT - 1|``: the smallest central-interval level that contains each truth."""
    return np.abs(2.0 * pit(z_pred, zerr, z_true) - 1.0)


def coverage(z_pred: ArrayLike, zerr: ArrayLike, z_true: ArrayLike, level: float = LEVEL_68) -> float:
    """Observed fraction of truths inside the central Gaussian interval of nominal ``level``.

    The interval is ``z_pred +- k zerr`` with ``k = Phi^-1((1 + level) / 2)``
    (k = 1 for level 0.6827, k = 2 for 0.9545).
    """
    lev = _level(level)
    return float(np.mean(_abs_central(z_pred, zerr, z_true) <= lev))


def reliability_curve(
    z_pred: ArrayLike, zerr: ArrayLike, z_true: ArrayLike, levels: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reliability diagram data: nominal central-interval level against observed coverage.

    Parameters
    ----------
    levels : array_like, shape (M,), optional
        Nominal levels in (0, 1) (default 0.05, 0.10, ..., 0.95).

    Returns
    -------
    levels : ndarray, shape (M,)
    observed : ndarray, shape (M,)
        Fraction of truths inside each central interval.
    """
    lev = np.arange(1, 20) * 0.05 if levels is None else _as_1d("levels", levels)
    if np.any((lev <= 0) | (lev >= 1)):
        raise InputError("levels", "must lie strictly between 0 and 1")
    u = np.sort(_abs_central(z_pred, zerr, z_true))
    observed = np.searchsorted(u, lev, side="right") / u.size
    return lev.astype(np.float64), observed.astype(np.float64)


def miscalibration_area(z_pred: ArrayLike, zerr: ArrayLike, z_true: ArrayLike) -> float:
    """Area between the reliability curve and the diagonal, over levels 0-1 (0 = calibrated, max 0.5).

    Integrated with the trapezoid rule on 1001 evenly spaced levels.
    """
    u = np.sort(_abs_central(z_pred, zerr, z_true))
    lev = np.linspace(0.0, 1.0, 1001)
    observed = np.searchsorted(u, lev, side="right") / u.size
    gap = np.abs(observed - lev)
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(lev)))


# --- summaries ---------------------------------------------------------------------------------
def summary(z_pred: ArrayLike, z_true: ArrayLike, zerr: ArrayLike | None = None) -> dict:
    """All metrics of one set of predictions.

    Returns
    -------
    dict
        ``n, sigma_nmad, eta, ebar, bias, coverage_68, coverage_95, crps, miscal_area``;
        the uncertainty-based entries are None when ``zerr`` is None.
    """
    zp, zt = _pair(z_pred, z_true)
    out = {
        "n": int(zt.size),
        "sigma_nmad": sigma_nmad(zp, zt),
        "eta": outlier_fraction(zp, zt),
        "ebar": None,
        "bias": bias(zp, zt),
        "coverage_68": None,
        "coverage_95": None,
        "crps": None,
        "miscal_area": None,
    }
    if zerr is not None:
        ze = _zerr(zerr, zt.size)
        out.update(
            ebar=weighted_mean_uncertainty(ze, zt),
            coverage_68=coverage(zp, ze, zt, LEVEL_68),
            coverage_95=coverage(zp, ze, zt, LEVEL_95),
            crps=crps_gaussian(zp, ze, zt),
            miscal_area=miscalibration_area(zp, ze, zt),
        )
    return out


def binned(
    z_pred: ArrayLike, z_true: ArrayLike, zerr: ArrayLike | None = None, *, by: ArrayLike, edges: ArrayLike
) -> list[dict]:
    """:func:`summary` in bins of ``by`` (true z, GI SNR, ...).

    Parameters
    ----------
    by : array_like, shape (N,)
        The binning quantity (finite).
    edges : array_like, shape (B+1,)
        Strictly increasing bin edges; a bin is ``lo <= by < hi`` (the last edge
        may be ``inf``). Sources outside all bins are ignored.

    Returns
    -------
    list of dict, length B
        ``{"lo", "hi", "n", ...summary keys}``; an empty bin has ``n = 0`` and None metrics.
    """
    zp, zt = _pair(z_pred, z_true)
    ze = None if zerr is None else _zerr(zerr, zt.size)
    b = _as_1d("by", by, zt.size)
    try:
        e = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("edges", "must be numbers") from None
    if e.ndim != 1 or e.size < 2 or np.any(np.isnan(e)) or not np.all(np.diff(e) > 0):
        raise InputError("edges", "must be >= 2 strictly increasing numbers")
    rows = []
    for lo, hi in zip(e[:-1], e[1:]):
        sel = (b >= lo) & (b < hi)
        row = {"lo": float(lo), "hi": float(hi)}
        if sel.any():
            row.update(summary(zp[sel], zt[sel], None if ze is None else ze[sel]))
        else:
            row.update(
                {
                    "n": 0,
                    "sigma_nmad": None,
                    "eta": None,
                    "ebar": None,
                    "bias": None,
                    "coverage_68": None,
                    "coverage_95": None,
                    "crps": None,
                    "miscal_area": None,
                }
            )
        rows.append(row)
    return rows


# --- gridded p(z) and the Cramer-Rao bound ---------------------------------------------------------
#: Bins of the PIT histograms of the report.
PIT_BINS = 10


def pit_ks(pit_values: ArrayLike) -> float:
    """Kolmogorov-Smirnov distance between the PIT values and the uniform distribution on [0, 1].

    ``max_i max(i/n - u_(i), u_(i) - (i-1)/n)`` over the sorted values; 0 for perfectly calibrated
    p(z) in the limit of many objects (about 1.36/sqrt(n) at the 95% level by chance).
    """
    u = np.sort(_as_1d("pit", pit_values))
    if np.any((u < 0) | (u > 1)):
        raise InputError("pit", "values must lie in [0, 1]", value=float(u[(u < 0) | (u > 1)][0]))
    n = u.size
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - u), np.max(u - (i - 1) / n)))


def pit_histogram(pit_values: ArrayLike, bins: int = PIT_BINS) -> dict:
    """Histogram of PIT values on [0, 1]: ``{"edges": (bins+1,), "density": (bins,)}`` (density 1 = flat)."""
    u = _as_1d("pit", pit_values)
    counts, edges = np.histogram(np.clip(u, 0.0, 1.0), bins=int(bins), range=(0.0, 1.0))
    return {"edges": edges, "density": counts / (u.size / int(bins))}


def pz_summary(pit_values: ArrayLike, crps_values: ArrayLike, inside_68: ArrayLike, inside_95: ArrayLike) -> dict:
    """Metrics of gridded p(z) from per-object values (see :mod:`csstz.templates.pdf`).

    Parameters
    ----------
    pit_values : array (N,)
        CDF of each p(z) at its true z.
    crps_values : array (N,)
        CRPS of each p(z) [z units].
    inside_68, inside_95 : bool arrays (N,)
        Truth inside the central 68.3% / 95.4% interval of its p(z).

    Returns
    -------
    dict
        ``n, pit_ks, pit_hist {edges, density}, crps`` (mean), ``coverage_68, coverage_95``.
    """
    u = _as_1d("pit", pit_values)
    c = _as_1d("crps", crps_values, u.size)
    i68 = np.asarray(inside_68, bool)
    i95 = np.asarray(inside_95, bool)
    if i68.shape != u.shape or i95.shape != u.shape:
        raise InputError("inside_68", "length does not match the PIT values")
    return {
        "n": int(u.size),
        "pit_ks": pit_ks(u),
        "pit_hist": pit_histogram(u),
        "crps": float(np.mean(c)),
        "coverage_68": float(np.mean(i68)),
        "coverage_95": float(np.mean(i95)),
    }


def crb_summary(z_pred: ArrayLike, z_true: ArrayLike, zerr_crb: ArrayLike) -> dict:
    """How close a method is to the Cramer-Rao bound (docs/crb.md).

    Returns
    -------
    dict
        ``crb_median``: median of ZERR_CRB / (1 + z_true) (inf counts: spectra without redshift
        information; NaN rows, objects without a bound, are left out); ``nmad_over_crb``:
        sigma_NMAD / crb_median (None when the median is not a positive finite number).
    """
    zp, zt = _pair(z_pred, z_true)
    crb = np.asarray(zerr_crb, np.float64)
    if crb.shape != zt.shape:
        raise InputError("zerr_crb", f"has length {crb.size}, expected {zt.size} (lengths must match)")
    known = ~np.isnan(crb)  # NaN: no bound computed for that object; left out of the median
    if not known.any():
        return {"crb_median": None, "nmad_over_crb": None}
    med = float(np.median(crb[known] / (1.0 + zt[known])))
    ratio = sigma_nmad(zp, zt) / med if (math.isfinite(med) and med > 0) else None
    return {"crb_median": med, "nmad_over_crb": ratio}


__all__ = [
    "pit_ks",
    "pit_histogram",
    "pz_summary",
    "crb_summary",
    "PIT_BINS",
    "sigma_nmad",
    "outlier_fraction",
    "weighted_mean_uncertainty",
    "bias",
    "pit",
    "crps_gaussian",
    "coverage",
    "reliability_curve",
    "miscalibration_area",
    "summary",
    "binned",
    "LEVEL_68",
    "LEVEL_95",
    "Z_EDGES",
    "SNR_EDGES",
    "NMAD_FACTOR",
    "OUTLIER_THRESHOLD",
]
