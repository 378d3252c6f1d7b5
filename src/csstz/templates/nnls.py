"""Exact non-negative least squares for many small problems at once (numpy, vectorised over problems).

The template fit solves, at every (spectrum, redshift), ``min_{c >= 0} chi2(c)`` with
``chi2(c) = f.W.f - 2 b.c + c.A.c`` for K = 5 templates: hundreds of thousands of
5 x 5 problems. :func:`nnls_enumerate` solves them exactly by enumerating the
2^K - 1 supports with a batched Cholesky (:func:`chol_solve`), ~1.3 microseconds
per problem on one core (scipy.optimize.nnls: ~20 per call).
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np


def ridge(A: np.ndarray) -> np.ndarray:
    """A + 1e-12 mean(diag A) I: keeps Cholesky defined for (nearly) degenerate templates."""
    K = A.shape[-1]
    d = np.trace(A, axis1=-2, axis2=-1) / K
    return A + (1e-12 * d)[:, None, None] * np.eye(K)


def chol_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve many small SPD systems A x = b; A (M, s, s), b (M, s) -> x (M, s) (NaN where not SPD).

    Plain Cholesky written over the batch axis (numpy's per-matrix LAPACK calls are
    ~6x slower for s <= 5).
    """
    s = A.shape[-1]
    At = np.moveaxis(A, 0, -1)  # (s, s, M)
    bt = b.T
    L = [[None] * s for _ in range(s)]
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(s):
            d = At[j, j] - sum(L[j][k] ** 2 for k in range(j))
            L[j][j] = np.sqrt(np.where(d > 0, d, np.nan))
            for i in range(j + 1, s):
                L[i][j] = (At[i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
        y = [None] * s
        for i in range(s):
            y[i] = (bt[i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i]
        x = [None] * s
        for i in reversed(range(s)):
            x[i] = (y[i] - sum(L[k][i] * x[k] for k in range(i + 1, s))) / L[i][i]
    return np.stack(x, axis=1)


@lru_cache(maxsize=8)
def _supports(K: int) -> tuple:
    return tuple(list(S) for s in range(1, K + 1) for S in itertools.combinations(range(K), s))


def nnls_enumerate(A: np.ndarray, b: np.ndarray, fwf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact NNLS of many K-template problems by enumerating supports.

    For ``chi2(c) = fwf - 2 b.c + c.A.c`` with ``c >= 0``: the optimum is the
    unconstrained optimum on its own support, so it is the lowest chi2 among the
    supports whose restricted solution is non-negative (the empty support, c = 0,
    is always allowed).

    Parameters
    ----------
    A : (M, K, K), b : (M, K), fwf : (M,)

    Returns
    -------
    chi2 : (M,), coeff : (M, K)
    """
    M, K = b.shape
    best = np.asarray(fwf, np.float64).copy()
    coeff = np.zeros((M, K))
    A = ridge(A)
    for S in _supports(K):
        c = chol_solve(A[:, S][:, :, S], b[:, S])
        ok = np.all(c >= 0, axis=1)
        val = fwf - np.einsum("ms,ms->m", b[:, S], np.nan_to_num(c))
        better = ok & (val < best)
        if better.any():
            best[better] = val[better]
            coeff[better] = 0.0
            coeff[np.ix_(np.flatnonzero(better), S)] = c[better]
    return best, coeff


__all__ = ["nnls_enumerate", "chol_solve", "ridge"]
