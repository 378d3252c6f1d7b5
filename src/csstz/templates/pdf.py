"""Gridded redshift probability densities p(z): the one home of the p(z) helpers (torch-free).

Convention (``docs/formats.md``, predictions HDUs ``PZ`` / ``PZ_GRID``): a p(z) is a density
per unit z sampled at the points of an increasing grid ``z_grid`` (K,), linear between them
and zero outside, normalised so that its trapezoid integral over the grid is 1. This is
one to one with a qp "interp" ensemble (the LSST DESC RAIL convention). Rows are objects:
``pz`` has shape (N, K).

Helpers:

* :func:`normalise` - trapezoid normalisation (and checks);
* :func:`from_chi2`, :func:`from_loglike` - p(z) proportional to exp(-(chi2 - chi2_min)/2) or L(z);
* :func:`cdf` - the cumulative distribution at the grid points (exact for the piecewise-linear density);
* :func:`quantile`, :func:`central_interval` - inverse CDF and the central interval at a level;
* :func:`mode` - the grid maximum refined by a parabola through log p at it and its neighbours;
* :func:`kernel_mode` - the mode of the p(z) smoothed by a Gaussian in ln(1 + z): the redshift that minimises
  the expected Gaussian-kernel loss, which favours the peak holding the most probability over the tallest one;
* :func:`pit` - CDF at the true redshift (probability integral transform);
* :func:`crps` - continuous ranked probability score of the gridded p(z) at the true redshift;
* :func:`mass_away_from_mode` - probability farther than ``|dz|/(1 + z_mode) = 0.02`` from the mode
  (a multimodality measure: 0 for a single narrow peak);
* :func:`fit_pit_map`, :func:`apply_pit_map` - recalibration of p(z) by the PIT distribution of a
  calibration set, per signal-to-noise bin (Bordoloi, Lilly & Amara 2010, MNRAS 406, 881);
* :func:`check_pz` - the validation of a predictions file's PZ / PZ_GRID (defined in :mod:`csstz.schema`,
  the file contracts, so that ``io`` can use it too).

Every function raises :class:`csstz.errors.InputError` with a one-line message naming the
argument (``PZ`` / ``PZ_GRID`` in :func:`check_pz`) and the bad value.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..schema import NORM_TOL, check_pz
from ..schema import check_pz_grid as check_grid

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._types import ArrayLike

#: Levels of the central intervals of the report (Gaussian +-1 and +-2 sigma contents).
LEVEL_68 = math.erf(1.0 / math.sqrt(2.0))
LEVEL_95 = math.erf(2.0 / math.sqrt(2.0))
#: Half-width in |dz|/(1 + z_mode) of the window around the mode of :func:`mass_away_from_mode`:
#: the outlier threshold of arXiv:2407.13991 (docs/design.md, Metrics).
MODE_WINDOW_DZ = 0.02
#: Signal-to-noise edges of the PIT maps (merged where a bin holds fewer than PIT_MAP_MIN_N objects; the last
#: edge is open). Project choice: the report's GI-SNR bins above 1 (docs/design.md), where the p(z) change shape.
PIT_MAP_SNR_EDGES = (0.0, 2.0, 3.0, 5.0, 10.0, math.inf)
#: Fewest calibration objects of one PIT map (project choice: the CDF of n PIT values is known to ~0.5/sqrt(n)).
PIT_MAP_MIN_N = 150
#: Knots of a PIT map on [0, 1] (cosine-spaced: 0.0015 apart at the ends, where the 95% intervals end,
#: 0.04 in the middle).
PIT_MAP_KNOTS = 41
#: Pseudo-count of the identity map mixed into each empirical PIT CDF (project choice: keeps the map
#: strictly increasing and damps noise of small bins).
PIT_MAP_PSEUDO_N = 20.0


def _rows(pz: ArrayLike, k: int, name: str = "PZ") -> np.ndarray:
    p = np.asarray(pz, np.float64)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != k:
        raise InputError(
            name, "shape does not match (N objects, K grid points)", value=np.shape(pz), allowed=f"(N, {k})"
        )
    return p


def _trapz_rows(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    # sum_k (p_k + p_k+1) dg_k / 2 as two matrix-vector products (no (N, K) temporaries)
    dg = 0.5 * np.diff(g)
    return p[:, :-1] @ dg + p[:, 1:] @ dg


def normalise(pz: ArrayLike, z_grid: ArrayLike) -> np.ndarray:
    """Rows divided by their trapezoid integral over ``z_grid``: (N, K) float64.

    Raises
    ------
    InputError
        Bad grid or shape, negative or non-finite values, or a row whose integral is not positive.
    """
    g = check_grid(z_grid, "z_grid")
    p = _rows(pz, g.size, "pz")
    if not (np.isfinite(p).all() and p.min(initial=0.0) >= 0):  # the cheap test first; locate only when bad
        r, c = np.argwhere(~np.isfinite(p) | (p < 0))[0]
        raise InputError("pz", "densities must be finite and >= 0", row=int(r), value=float(p[r, c]))
    area = _trapz_rows(p, g)
    zero = np.flatnonzero(~(area > 0))
    if zero.size:
        raise InputError("pz", "row has no probability on the grid", row=int(zero[0]), value=float(area[zero[0]]))
    return p / area[:, None]


def from_loglike(logl: ArrayLike, z_grid: ArrayLike) -> np.ndarray:
    """p(z) proportional to exp(logl) (a flat prior in z), trapezoid-normalised: (N, K) float64.

    Non-finite log-likelihoods count as zero probability; a row without any finite value is
    NaN throughout (no result).
    """
    g = check_grid(z_grid, "z_grid")
    ll = _rows(logl, g.size, "logl")
    ll = np.where(np.isfinite(ll), ll, -np.inf)
    top = ll.max(axis=1)
    ok = np.isfinite(top)
    p = np.exp(ll - np.where(ok, top, 0.0)[:, None])
    p[~ok] = np.nan
    area = _trapz_rows(np.where(ok[:, None], p, 0.0), g)
    return p / np.where(ok, area, 1.0)[:, None]


def from_chi2(chi2: ArrayLike, z_grid: ArrayLike) -> np.ndarray:
    """p(z) proportional to exp(-(chi2 - chi2_min) / 2), trapezoid-normalised: (N, K) float64."""
    return from_loglike(-0.5 * np.asarray(chi2, np.float64), z_grid)


def cdf(pz: ArrayLike, z_grid: ArrayLike) -> np.ndarray:
    """Cumulative distribution at the grid points, (N, K): 0 at the first point, 1 at the last.

    ``pz`` should be normalised (:func:`normalise`); the result is divided by its last value anyway.
    """
    g = check_grid(z_grid, "z_grid")
    p = _rows(pz, g.size, "pz")
    c = np.zeros_like(p)
    c[:, 1:] = np.cumsum(0.5 * (p[:, 1:] + p[:, :-1]) * np.diff(g), axis=1)
    return c / np.where(c[:, -1:] > 0, c[:, -1:], 1.0)


def _cdf_at(c: np.ndarray, p: np.ndarray, g: np.ndarray, z: ArrayLike) -> np.ndarray:
    """CDF of each row at its own z (N,), exact for a density linear between grid points."""
    z = np.asarray(z, np.float64).reshape(-1)
    j = np.clip(np.searchsorted(g, z, side="right") - 1, 0, g.size - 2)
    rows = np.arange(c.shape[0])
    h = g[j + 1] - g[j]
    t = np.clip((z - g[j]) / h, 0.0, 1.0)
    pa, pb = p[rows, j], p[rows, j + 1]
    area = h * (pa * t + 0.5 * (pb - pa) * t * t)
    out = c[rows, j] + area
    out = np.where(z <= g[0], 0.0, np.where(z >= g[-1], 1.0, out))
    return np.clip(out, 0.0, 1.0)


def pit(pz: ArrayLike, z_grid: ArrayLike, z_true: ArrayLike) -> np.ndarray:
    """Probability integral transform: each p(z)'s CDF at its true redshift, (N,) in [0, 1].

    Uniform on [0, 1] when the p(z) are calibrated; 0 (1) for a truth below (above) the grid.
    """
    g = check_grid(z_grid, "z_grid")
    p = normalise(pz, g)
    zt = np.asarray(z_true, np.float64).reshape(-1)
    if zt.size != p.shape[0]:
        raise InputError("z_true", "length does not match the p(z) rows", value=zt.size, allowed=str(p.shape[0]))
    return _cdf_at(cdf(p, g), p, g, zt)


def quantile(pz: ArrayLike, z_grid: ArrayLike, q: float | ArrayLike) -> np.ndarray:
    """Redshift at which each row's CDF reaches ``q`` (N,).

    Exact for the piecewise-linear density (the inverse of the CDF that :func:`pit` uses), so the
    central intervals and the PIT agree: a truth lies inside the central interval of level a exactly
    when its PIT lies within (1 -+ a)/2.
    """
    return quantiles(pz, z_grid, (float(q),))[0]


def quantiles(pz: ArrayLike, z_grid: ArrayLike, qs: Sequence[float]) -> np.ndarray:
    """:func:`quantile` at several levels from one normalisation and one CDF: shape (len(qs), N)."""
    g = check_grid(z_grid, "z_grid")
    _check_levels(qs)
    p = normalise(pz, g)
    return _quantiles(p, cdf(p, g), g, qs)


def _check_levels(qs: Sequence[float]) -> None:
    for q in qs:
        if not 0.0 <= float(q) <= 1.0:
            raise InputError("q", "must lie in [0, 1]", value=q)


def _quantiles(p: np.ndarray, c: np.ndarray, g: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """:func:`quantiles` of normalised rows ``p`` with their CDF ``c`` (no checks)."""
    rows = np.arange(c.shape[0])
    out = np.empty((len(qs), c.shape[0]))
    for i, q in enumerate(qs):
        qq = float(q)
        j = np.clip((c <= qq).sum(axis=1) - 1, 0, g.size - 2)  # last point with CDF <= q
        h = g[j + 1] - g[j]
        pa, pb = p[rows, j] * h, p[rows, j + 1] * h  # CDF(t) = c_j + pa t + (pb - pa) t^2 / 2, t in [0, 1]
        rest = qq - c[rows, j]
        a2 = 0.5 * (pb - pa)
        with np.errstate(divide="ignore", invalid="ignore"):
            disc = np.sqrt(np.maximum(pa * pa + 4.0 * a2 * rest, 0.0))
            t = np.where(np.abs(a2) > 1e-12 * np.maximum(pa, 1e-300), 2.0 * rest / (pa + disc), rest / pa)
        t = np.where(np.isfinite(t), np.clip(t, 0.0, 1.0), 0.0)
        out[i] = g[j] + t * h
    return out


def central_interval(pz: ArrayLike, z_grid: ArrayLike, level: float = LEVEL_68) -> tuple[np.ndarray, np.ndarray]:
    """Central interval holding ``level`` of each p(z): (lo, hi), each (N,)."""
    lev = float(level)
    if not 0.0 < lev < 1.0:
        raise InputError("level", "must lie strictly between 0 and 1", value=level)
    lo, hi = quantiles(pz, z_grid, (0.5 - 0.5 * lev, 0.5 + 0.5 * lev))
    return lo, hi


def mode(pz: ArrayLike, z_grid: ArrayLike, refine: bool = True) -> np.ndarray:
    """The most probable redshift of each row (N,).

    The grid maximum, refined (``refine``) by the vertex of the parabola through log p at it and its
    two neighbours (exact for a Gaussian peak on any grid spacing); the grid point where the maximum is
    at an edge, a neighbour has zero density, or the parabola does not open downwards.
    """
    g = check_grid(z_grid, "z_grid")
    p = _rows(pz, g.size, "pz")
    i = np.argmax(np.where(np.isfinite(p), p, -np.inf), axis=1)
    z0 = g[i]
    if not refine or g.size < 3:
        return z0
    rows = np.arange(p.shape[0])
    ic = np.clip(i, 1, g.size - 2)
    with np.errstate(divide="ignore"):
        y0, y1, y2 = (np.log(p[rows, ic + d]) for d in (-1, 0, 1))
    vertex, ok = parabola_vertex(g[ic - 1], g[ic], g[ic + 1], y0, y1, y2)
    return np.where((i == ic) & ok, vertex, z0)


def kernel_mode(pz: ArrayLike, z_grid: ArrayLike, sigma_steps: float) -> np.ndarray:
    """The peak of each row's p(z) smoothed by a Gaussian of ``sigma_steps`` grid steps, (N,).

    On a grid uniform in ln(1 + z) the density per unit ln(1 + z), p(z) (1 + z), is convolved with a Gaussian
    (zero outside the grid) and its maximum refined by a parabola in ln(1 + z) (:func:`mode`). That is the
    Bayes point estimate for the loss 1 - exp(-(ln(1 + Z) - ln(1 + z))^2 / (2 s^2)), s = ``sigma_steps``
    steps: for one peak that is Gaussian in ln(1 + z) it is the peak's centre exactly, and where a tall narrow
    spike and a broader peak compete it chooses the one that holds more probability within about s. Rows
    that are not finite everywhere give NaN.

    Parameters
    ----------
    pz : array_like (N, K)
        Densities per unit z.
    z_grid : array_like (K,)
        Increasing grid, uniform in ln(1 + z).
    sigma_steps : float
        Kernel width [grid steps], > 0.
    """
    from scipy import fft

    g = check_grid(z_grid, "z_grid")
    p = _rows(pz, g.size, "pz")
    s = float(sigma_steps)
    if not (math.isfinite(s) and s > 0):
        raise InputError("sigma_steps", "must be a finite number > 0", value=sigma_steps)
    half = int(math.ceil(4.0 * s))
    n = fft.next_fast_len(g.size + 2 * half + 1, real=True)  # zero padding: no wrap-around
    k = np.zeros(n)
    offs = np.arange(-half, half + 1)
    k[offs % n] = np.exp(-0.5 * (offs / s) ** 2)
    k /= k.sum()
    finite = np.all(np.isfinite(p), axis=1)
    cell = np.where(finite[:, None], p, 0.0) * (1.0 + g)[None, :]
    smooth = fft.irfft(fft.rfft(cell, n=n, axis=1) * fft.rfft(k)[None, :], n=n, axis=1)[:, : g.size]
    out = np.expm1(mode(np.maximum(smooth, 0.0), np.log1p(g)))
    return np.where(finite, out, np.nan)


def parabola_vertex(
    x0: np.ndarray, x1: np.ndarray, x2: np.ndarray, y0: np.ndarray, y1: np.ndarray, y2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vertex of the parabola through (x0, y0), (x1, y1), (x2, y2) (x increasing), and where it is a maximum
    that lies within [x0, x2] (finite, second divided difference < 0): arrays (N,) each."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
        curv = (d12 - d01) / (x2 - x0)  # second divided difference: < 0 for a maximum
        num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        vertex = x1 - 0.5 * num / den
    return vertex, np.isfinite(vertex) & (curv < 0) & (vertex >= x0) & (vertex <= x2)


def window_peak(log_dens: np.ndarray, grid_index: np.ndarray, z_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The peak of log densities given in a window of consecutive grid points per row.

    Parameters
    ----------
    log_dens : ndarray (N, S)
        Log density per unit z at the window's points; -inf where there is none (off the grid, no data).
    grid_index : ndarray of int (N, S)
        The points' indices into ``z_grid``, consecutive along each row (clipped copies at the grid's ends
        must carry -inf).
    z_grid : ndarray (K,)

    Returns
    -------
    z : ndarray (N,)
        The best point, refined by the parabola through it and its two neighbours when both lie in the
        window and the parabola has a maximum between them (:func:`parabola_vertex`); the best point itself
        otherwise.
    found : ndarray of bool (N,)
        Whether the window holds a finite value.
    """
    n, S = log_dens.shape
    r = np.arange(n)
    j = np.argmax(log_dens, axis=1)
    best = z_grid[grid_index[r, j]]
    found = np.isfinite(log_dens[r, j])
    if S < 3:
        return best, found
    jc = np.clip(j, 1, S - 2)
    x0, x1, x2 = (z_grid[grid_index[r, jc + d]] for d in (-1, 0, 1))
    vertex, ok = parabola_vertex(x0, x1, x2, *(log_dens[r, jc + d] for d in (-1, 0, 1)))
    return np.where((j == jc) & ok & (x0 < x1) & (x1 < x2), vertex, best), found


def window_posterior_peak(
    loglike: Callable[[np.ndarray], np.ndarray],
    centre: np.ndarray,
    half: int,
    log_prior: np.ndarray,
    z_grid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The peak of ``loglike + log_prior`` (as a density per unit z) within ``half`` grid steps of each row's
    grid index ``centre``: :func:`window_peak` of that window, which is cut at the grid's ends, never slid.

    Parameters
    ----------
    loglike : callable (grid_index (N, S) -> ndarray (N, S))
        The log-likelihood at the window's grid points (-inf or NaN where there is none).
    centre : ndarray of int (N,)
        Each row's window centre, within the grid.
    half : int
    log_prior : ndarray (K,)
        log n(z) on ``z_grid``, a density per unit ln(1+z) like the grid's cells.
    z_grid : ndarray (K,)

    Returns
    -------
    z, found : ndarray (N,), ndarray of bool (N,)
        As :func:`window_peak`.
    """
    g = np.asarray(z_grid, np.float64)
    raw = np.asarray(centre)[:, None] + np.arange(-int(half), int(half) + 1)[None, :]
    k = np.clip(raw, 0, g.size - 1)
    with np.errstate(invalid="ignore"):
        post = loglike(k) + np.asarray(log_prior, np.float64)[k] - np.log1p(g[k])  # density per unit z
    post = np.where(np.isfinite(post) & (raw >= 0) & (raw < g.size), post, -np.inf)
    return window_peak(post, k, g)


def mass_away_from_mode(
    pz: ArrayLike, z_grid: ArrayLike, window_dz: float = MODE_WINDOW_DZ, z_mode: ArrayLike | None = None
) -> np.ndarray:
    """Probability farther than ``window_dz (1 + z_mode)`` from the mode, (N,) in [0, 1].

    A multimodality measure: near 0 for one peak narrower than the window, large when a second
    peak (line confusion) holds probability. ``z_mode`` defaults to :func:`mode`.
    """
    g = check_grid(z_grid, "z_grid")
    p = normalise(pz, g)
    zm = mode(p, g) if z_mode is None else np.asarray(z_mode, np.float64).reshape(-1)
    return _mass_away(p, cdf(p, g), g, zm, window_dz)


def _mass_away(p: np.ndarray, c: np.ndarray, g: np.ndarray, zm: np.ndarray, window_dz: float) -> np.ndarray:
    """:func:`mass_away_from_mode` of normalised rows ``p`` with their CDF ``c`` (no checks)."""
    w = float(window_dz) * (1.0 + zm)
    inside = _cdf_at(c, p, g, zm + w) - _cdf_at(c, p, g, zm - w)
    return np.clip(1.0 - inside, 0.0, 1.0)


def summaries(
    pz: ArrayLike, z_grid: ArrayLike, qs: Sequence[float], z_mode: ArrayLike, window_dz: float = MODE_WINDOW_DZ
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantiles` at ``qs`` and :func:`mass_away_from_mode` around ``z_mode`` from one normalisation
    and one CDF (what a prediction needs of each p(z)): arrays (len(qs), N) and (N,)."""
    g = check_grid(z_grid, "z_grid")
    _check_levels(qs)
    p = normalise(pz, g)
    c = cdf(p, g)
    return _quantiles(p, c, g, qs), _mass_away(p, c, g, np.asarray(z_mode, np.float64).reshape(-1), window_dz)


def crps(pz: ArrayLike, z_grid: ArrayLike, z_true: ArrayLike) -> np.ndarray:
    """Continuous ranked probability score of each gridded p(z) at its true redshift, (N,) [z units].

    ``CRPS = integral (F(z) - H(z - z_true))^2 dz`` with F the CDF (0 below, 1 above the grid) and H
    the step function; F is taken linear between grid points (error O(h^2) in the grid step h), and
    a truth outside the grid adds its distance to the grid.
    """
    g = check_grid(z_grid, "z_grid")
    p = normalise(pz, g)
    zt = np.asarray(z_true, np.float64).reshape(-1)
    if zt.size != p.shape[0]:
        raise InputError("z_true", "length does not match the p(z) rows", value=zt.size, allowed=str(p.shape[0]))
    c = cdf(p, g)
    fa, fb = c[:, :-1], c[:, 1:]
    h = np.diff(g)[None, :]
    below = h * (fa * fa + fa * fb + fb * fb) / 3.0  # integral of F^2 over each interval
    ga, gb = 1.0 - fa, 1.0 - fb
    above = h * (ga * ga + ga * gb + gb * gb) / 3.0  # integral of (1 - F)^2
    n = p.shape[0]
    rows = np.arange(n)
    zc = np.clip(zt, g[0], g[-1])
    j = np.clip(np.searchsorted(g, zc, side="right") - 1, 0, g.size - 2)
    cum_below = np.concatenate([np.zeros((n, 1)), np.cumsum(below, axis=1)], axis=1)
    cum_above = np.concatenate([np.zeros((n, 1)), np.cumsum(above, axis=1)], axis=1)
    # the interval holding the truth, split at it (F linear inside)
    t = (zc - g[j]) / (g[j + 1] - g[j])
    fj, fj1 = c[rows, j], c[rows, j + 1]
    ft = fj + t * (fj1 - fj)
    left = (zc - g[j]) * (fj * fj + fj * ft + ft * ft) / 3.0
    right = (g[j + 1] - zc) * ((1 - ft) ** 2 + (1 - ft) * (1 - fj1) + (1 - fj1) ** 2) / 3.0
    total = cum_below[rows, j] + left + right + (cum_above[:, -1] - cum_above[rows, j + 1])
    return total + np.maximum(g[0] - zt, 0.0) + np.maximum(zt - g[-1], 0.0)


def _merge_bins(snr: np.ndarray, edges: tuple, min_n: int) -> list[float]:
    """Edges with every bin holding >= ``min_n`` of ``snr`` (a short bin joins its upper neighbour; the last one
    joins its lower neighbour)."""
    e = [float(x) for x in edges]
    while len(e) > 2:
        counts = np.histogram(np.clip(snr, e[0], None), bins=e)[0]
        short = np.flatnonzero(counts < min_n)
        if short.size == 0:
            break
        i = int(short[0])
        del e[i + 1 if i + 1 < len(e) - 1 else i]
    return e


def fit_pit_map(
    pit_values: ArrayLike,
    snr: ArrayLike,
    edges: tuple = PIT_MAP_SNR_EDGES,
    min_n: int = PIT_MAP_MIN_N,
    knots: int = PIT_MAP_KNOTS,
    pseudo_n: float = PIT_MAP_PSEUDO_N,
) -> dict:
    """Monotone maps G_b of the CDF, one per signal-to-noise bin, that make calibration PITs uniform.

    For the calibration objects of bin b, G_b is the empirical CDF of their PIT values (mixed with the
    identity by ``pseudo_n`` pseudo-objects), tabulated at ``knots`` cosine-spaced points of [0, 1]. A p(z)
    whose CDF is F becomes the p(z) whose CDF is G_b(F) (:func:`apply_pit_map`): PIT-based
    recalibration (Bordoloi, Lilly & Amara 2010). Fit it on validation objects only.

    Parameters
    ----------
    pit_values : array (N,)
        PIT of each calibration object (:func:`pit`).
    snr : array (N,)
        The signal-to-noise ratio that chooses the bin (the same quantity at prediction time).
    edges : tuple of float
        Initial bin edges (merged until every bin holds ``min_n`` objects; one bin if N < 2 min_n).

    Returns
    -------
    dict
        ``{"snr_edges": [...], "knots": [...], "maps": [[...] per bin], "n": [...]}`` (JSON-ready).
    """
    u = np.asarray(pit_values, np.float64).reshape(-1)
    s = np.asarray(snr, np.float64).reshape(-1)
    if u.size != s.size:
        raise InputError("snr", "length does not match the PIT values", value=s.size, allowed=str(u.size))
    ok = np.isfinite(u) & np.isfinite(s)
    if not np.all((u[ok] >= 0.0) & (u[ok] <= 1.0)):
        raise InputError("pit_values", "must lie in [0, 1]", value=float(u[ok][(u[ok] < 0) | (u[ok] > 1)][0]))
    if ok.sum() < 2:
        raise InputError("pit_values", "need at least 2 finite calibration objects", value=int(ok.sum()))
    if not pseudo_n > 0:
        raise InputError("pseudo_n", "must be > 0 (keeps every map strictly increasing)", value=pseudo_n)
    u, s = u[ok], s[ok]
    e = _merge_bins(s, edges, min_n) if u.size >= 2 * min_n else [float(edges[0]), float(edges[-1])]
    x = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, int(knots)))
    x[0], x[-1] = 0.0, 1.0
    maps, counts = [], []
    for lo, hi in zip(e[:-1], e[1:]):
        sel = (s >= lo) & (s < hi) if hi < e[-1] else s >= lo
        if lo == e[0]:
            sel |= s < lo
        ub = np.sort(u[sel])
        ecdf = np.searchsorted(ub, x, side="right") / max(ub.size, 1)
        g = (ub.size * ecdf + pseudo_n * x) / (ub.size + pseudo_n)
        g[0], g[-1] = 0.0, 1.0
        maps.append([float(v) for v in g])
        counts.append(int(ub.size))
    # JSON has no infinity: an open last edge is written as null
    edges_out = [None if not math.isfinite(v) else v for v in e]
    return {"snr_edges": edges_out, "knots": [float(v) for v in x], "maps": maps, "n": counts}


def check_pit_map(pit_map: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a :func:`fit_pit_map` dict; return its edges (B+1,), knots (X,) and maps (B, X).

    Raises
    ------
    InputError
        Missing keys, shapes that disagree, edges or knots not increasing, or maps not increasing from 0 to 1.
    """
    try:
        e = np.array([np.inf if v is None else v for v in pit_map["snr_edges"]], np.float64)
        x = np.asarray(pit_map["knots"], np.float64)
        maps = np.asarray(pit_map["maps"], np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("pit_map", f"not a PIT map ({exc})", value=type(pit_map).__name__) from None
    if maps.ndim != 2 or maps.shape != (e.size - 1, x.size) or x.size < 2:
        raise InputError("pit_map", "one map per SNR bin, one value per knot", value=maps.shape)
    if np.any(np.diff(e) <= 0) or np.any(np.diff(x) <= 0) or x[0] != 0.0 or x[-1] != 1.0:
        raise InputError("pit_map", "edges and knots must increase, knots from 0 to 1", value=float(x[0]))
    if np.any(np.diff(maps, axis=1) < 0) or np.any(maps[:, 0] != 0.0) or np.any(maps[:, -1] != 1.0):
        raise InputError("pit_map", "maps must increase from 0 to 1", value=float(maps[:, -1].min()))
    return e, x, maps


def apply_pit_map(pz: ArrayLike, z_grid: ArrayLike, snr: ArrayLike, pit_map: dict) -> np.ndarray:
    """Recalibrated p(z): density times the slope of the bin's map at the CDF, renormalised.

    Parameters
    ----------
    pz : array (N, K)
    z_grid : array (K,)
    snr : array (N,)
        Chooses each row's map (below the first edge or NaN: the first bin).
    pit_map : dict
        From :func:`fit_pit_map` (checked by :func:`check_pit_map`).

    Returns
    -------
    ndarray, shape (N, K)

    The p(z) keeps its support and the order of its quantiles; where the map is steeper than 1 the
    density grows (a calibration set with too many PITs there). A map cannot create probability
    where the p(z) has none: p(z) far too narrow need a temperature first.
    """
    g = check_grid(z_grid, "z_grid")
    p = normalise(pz, g)
    s = np.asarray(snr, np.float64).reshape(-1)
    if s.size != p.shape[0]:
        raise InputError("snr", "length does not match the p(z) rows", value=s.size, allowed=str(p.shape[0]))
    e, x, maps = check_pit_map(pit_map)
    slopes = np.diff(maps, axis=1) / np.diff(x)  # (B, knots - 1)
    b = np.clip(np.searchsorted(e, np.nan_to_num(s, nan=e[0]), side="right") - 1, 0, e.size - 2)
    c = cdf(p, g)
    j = np.clip(np.searchsorted(x, c, side="right") - 1, 0, x.size - 2)
    return normalise(p * slopes[b[:, None], j], g)


__all__ = [
    "kernel_mode",
    "fit_pit_map",
    "apply_pit_map",
    "check_pit_map",
    "PIT_MAP_SNR_EDGES",
    "check_grid",
    "check_pz",
    "normalise",
    "quantiles",
    "summaries",
    "parabola_vertex",
    "window_peak",
    "window_posterior_peak",
    "from_loglike",
    "from_chi2",
    "cdf",
    "pit",
    "quantile",
    "central_interval",
    "mode",
    "mass_away_from_mode",
    "crps",
    "LEVEL_68",
    "LEVEL_95",
    "MODE_WINDOW_DZ",
    "NORM_TOL",
]
