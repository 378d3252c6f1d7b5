"""Exact Poisson draws for many pixels of moderate expectation, faster than numpy's sampler.

numpy's ``Generator.poisson`` costs ~30-40 ns per draw whatever the mean
(multiplication method below 10, PTRS above). Here the mean lambda of a pixel
is split into a base on a grid of step ``DELTA_E`` (0.5 e-) and a remainder
r < DELTA_E; by the additivity of independent Poisson variables

    Poisson(lambda) = Poisson(m * DELTA_E) + Poisson(r),     m = floor(lambda / DELTA_E),

with the first term drawn from a precomputed Walker alias table of the
Poisson(m * DELTA_E) distribution (one uniform variate and two table look-ups)
and the second by inversion of its CDF (another uniform; it is 0 with
probability exp(-r) > 0.6 and rarely above 1). The tables hold the pmf out to
``TABLE_LEN`` - 1 counts, where the tail beyond is < 1e-30 for every mean below
``LAMBDA_MAX_E``; the pmf is renormalised over the table, so the draws follow
the Poisson distribution to double precision. Means >= ``LAMBDA_MAX_E`` go to
numpy's sampler. tests/test_simulate.py checks the draws against the Poisson
pmf with a chi-square test.
"""

from __future__ import annotations

import math

import numpy as np

#: grid step of the table means [e-]
DELTA_E = 0.5
#: largest mean drawn from the tables [e-] (the noise module's Gaussian threshold is 100 e-)
LAMBDA_MAX_E = 100.0
#: entries per table: counts 0 .. TABLE_LEN - 1; P(X >= 256 | lambda = 100) ~ 1e-40
TABLE_LEN = 256

_TABLES: dict = {}


def _alias_table(pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table (probability of keeping column j, alias of column j) of a pmf."""
    k = pmf.size
    prob = pmf * k
    alias = np.arange(k, dtype=np.intp)
    small = [j for j in range(k) if prob[j] < 1.0]
    large = [j for j in range(k) if prob[j] >= 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        alias[s] = g
        prob[g] = (prob[g] + prob[s]) - 1.0
        (small if prob[g] < 1.0 else large).append(g)
    for j in small + large:  # numerical leftovers: keep with certainty
        prob[j] = 1.0
    return prob, alias


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Alias tables of Poisson(m * DELTA_E), m = 0 .. LAMBDA_MAX_E / DELTA_E, flattened (built once)."""
    if "flat" not in _TABLES:
        from scipy.special import gammaln

        n_bins = int(round(LAMBDA_MAX_E / DELTA_E)) + 1
        counts = np.arange(TABLE_LEN)
        prob = np.empty((n_bins, TABLE_LEN))
        alias = np.empty((n_bins, TABLE_LEN), dtype=np.intp)
        for m in range(n_bins):
            lam = m * DELTA_E
            if lam == 0.0:
                pmf = (counts == 0).astype(np.float64)
            else:
                pmf = np.exp(counts * math.log(lam) - lam - gammaln(counts + 1))
                pmf /= pmf.sum()
            prob[m], alias[m] = _alias_table(pmf)
        _TABLES["flat"] = (prob.ravel(), alias.ravel())
    return _TABLES["flat"]


def poisson(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Independent Poisson draws of the given means (>= 0), any shape; int64, exact (module docstring).

    The draws use exactly two uniform variates per element of ``lam`` below ``LAMBDA_MAX_E`` (plus a few for
    the rare remainders above 1) and numpy's sampler for the others, so a given ``rng`` state and ``lam``
    always give the same draws.
    """
    lam = np.asarray(lam, dtype=np.float64)
    flat_lam = lam.ravel()
    out = np.empty(flat_lam.size, dtype=np.int64)
    small = flat_lam < LAMBDA_MAX_E
    all_small = bool(small.all())
    x = flat_lam if all_small else flat_lam[small]
    if x.size:
        prob, alias = _tables()
        m = (x * (1.0 / DELTA_E)).astype(np.intp)
        r = x - m * DELTA_E  # remainder in [0, DELTA_E)
        u = rng.random(x.size)
        u *= TABLE_LEN
        col = u.astype(np.intp)
        u -= col  # uniform fraction within the column
        m *= TABLE_LEN
        m += col  # flat table index
        base = np.where(u < prob[m], col, alias[m])
        # Poisson(r) by inversion: 0 if v < exp(-r), else walk the CDF (only a few elements)
        v = rng.random(x.size)
        p = np.exp(-r)
        extra = np.nonzero(v >= p)[0]
        if extra.size:
            vv, rr, pp = v[extra], r[extra], p[extra]
            cdf = pp.copy()
            k = np.zeros(extra.size, dtype=np.int64)
            active = np.ones(extra.size, dtype=bool)
            while active.any():
                k += active
                pp = pp * rr / np.maximum(k, 1)
                cdf += pp
                active &= vv >= cdf
                if not np.any(pp[active] > 0):  # CDF reached 1 to rounding: stop (probability ~1e-16)
                    break
            base[extra] += k
        if all_small:
            out[:] = base
        else:
            out[small] = base
    if not all_small:
        out[~small] = rng.poisson(flat_lam[~small])
    return out.reshape(lam.shape)


__all__ = ["poisson", "DELTA_E", "LAMBDA_MAX_E", "TABLE_LEN"]
