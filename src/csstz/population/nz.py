"""Redshift distributions of the built data sets.

The test split follows the expected redshift distribution of the CSST slitless
survey: binned fractions from a COSMOS-based CSST spectroscopic mock (16,599
galaxies in 1.7 deg^2, used in CSST BAO forecasts; Gong et al. 2019 and
``docs/design.md``, Population). It is sampled as a histogram, uniform within a
bin, as the paper did; the table is bimodal, so no smooth fit is used.

Train and validation use a broader distribution over the same range (a mixture
of the CSST histogram and a uniform distribution on 0-1.6), so that the network
also sees enough galaxies in the sparse 1.0-1.6 tail; the test split, which gives
the final numbers, keeps the CSST shape exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .._types import ArrayLike

#: CSST slitless n(z) bin edges (``docs/design.md``, Population).
CSST_Z_EDGES = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6])
#: Fraction of galaxies per bin (same source; sums to 0.9995 as published, renormalised here).
CSST_Z_FRACTIONS = np.array([0.0775, 0.2634, 0.1968, 0.2475, 0.1719, 0.0345, 0.0066, 0.0013])
#: Weight of the uniform component in the train/val redshift distribution (project choice).
TRAIN_UNIFORM_WEIGHT = 0.3
#: Lowest redshift drawn: galaxies closer than this are not slitless-survey targets (project choice).
Z_MIN = 0.01
Z_MAX = float(CSST_Z_EDGES[-1])


def csst_bin_probabilities() -> np.ndarray:
    """CSST n(z) bin probabilities (normalised to 1), shape (8,)."""
    return CSST_Z_FRACTIONS / CSST_Z_FRACTIONS.sum()


def sample_csst_z(rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
    """Draw redshifts from the CSST histogram, uniform within a bin.

    The first bin starts at :data:`Z_MIN` instead of 0.
    """
    p = csst_bin_probabilities()
    k = rng.choice(len(p), size=size, p=p)
    lo = np.maximum(CSST_Z_EDGES[k], Z_MIN)
    hi = CSST_Z_EDGES[k + 1]
    return lo + (hi - lo) * rng.random(size=size)


def sample_train_z(rng: np.random.Generator) -> float:
    """One train/val redshift: CSST histogram with probability 0.7, else uniform on [Z_MIN, 1.6]."""
    if rng.random() < TRAIN_UNIFORM_WEIGHT:
        return float(Z_MIN + (Z_MAX - Z_MIN) * rng.random())
    return float(sample_csst_z(rng))


def test_nz_weights(z: ArrayLike, split: ArrayLike) -> np.ndarray:
    """Weights that give galaxies of any split the test split's redshift distribution.

    A test-split galaxy weighs 1; a train or val one p_test(z) / p_train(z), where p_test is the CSST histogram
    (uniform within a bin) and p_train the mixture of :func:`sample_train_z`. Everything else about a galaxy is
    drawn the same way given its z, so a weighted average over a whole built sample estimates what its test split
    alone would give, with ten times the galaxies.

    Parameters
    ----------
    z : array_like, shape (N,)
        True redshifts, within [Z_MIN, Z_MAX].
    split : array_like of str, shape (N,)
        "train", "val" or "test" (the catalogue's SPLIT column, bytes or str; padding is ignored).
    """
    z = np.asarray(z, np.float64)
    split = np.char.strip(np.asarray(split).astype(str))
    lo = np.maximum(CSST_Z_EDGES[:-1], Z_MIN)
    dens = csst_bin_probabilities() / (CSST_Z_EDGES[1:] - lo)
    p_test = dens[np.clip(np.searchsorted(CSST_Z_EDGES, z, side="right") - 1, 0, dens.size - 1)]
    p_train = (1.0 - TRAIN_UNIFORM_WEIGHT) * p_test + TRAIN_UNIFORM_WEIGHT / (Z_MAX - Z_MIN)
    return np.where(split == "test", 1.0, p_test / p_train)


def sample_z_for_split(rng: np.random.Generator, split: str) -> float:
    """The redshift of one galaxy of the given split ("train", "val", "test")."""
    if split == "test":
        return float(sample_csst_z(rng))
    return sample_train_z(rng)


def chi2_against_csst(z: np.ndarray) -> tuple[float, float, int]:
    """Pearson chi-square of a redshift sample against the CSST table.

    Bins with an expected count below 5 are merged into their lower neighbour
    (the usual validity condition of the test).

    Returns
    -------
    chi2, p_value, dof
    """
    from scipy import stats

    z = np.asarray(z, np.float64)
    obs = np.histogram(z, bins=CSST_Z_EDGES)[0].astype(float)
    exp = csst_bin_probabilities() * len(z)
    o_m, e_m = [obs[0]], [exp[0]]
    for o, e in zip(obs[1:], exp[1:]):
        if e < 5 or e_m[-1] < 5:
            o_m[-1] += o
            e_m[-1] += e
        else:
            o_m.append(o)
            e_m.append(e)
    # a trailing small bin: merge backwards
    while len(e_m) > 1 and e_m[-1] < 5:
        o_m[-2] += o_m.pop()
        e_m[-2] += e_m.pop()
    o_m, e_m = np.array(o_m), np.array(e_m)
    chi2 = float(np.sum((o_m - e_m) ** 2 / e_m))
    dof = len(o_m) - 1
    return chi2, float(stats.chi2.sf(chi2, dof)), dof


__all__ = [
    "CSST_Z_EDGES",
    "CSST_Z_FRACTIONS",
    "csst_bin_probabilities",
    "sample_csst_z",
    "sample_train_z",
    "sample_z_for_split",
    "chi2_against_csst",
    "Z_MIN",
    "Z_MAX",
    "split_of",
    "SPLITS",
    "split_weighted_by_csst",
]


#: The splits and their shares (paper sec. 3.2: train : val : test = 8 : 1 : 1).
SPLITS = ("train", "val", "test")


def split_of(seed: int, targetids: ArrayLike) -> np.ndarray:
    """Split of each TARGETID: exactly 8:1:1 in every run of 10 consecutive ids.

    A seeded permutation of the residues 0-9 (``run_rng(seed, STREAM_SPLIT)``)
    maps ``TARGETID mod 10`` to train (8 residues), val (1) and test (1); the
    split depends only on (seed, TARGETID), never on chunking.

    Returns
    -------
    ndarray of str, shape (N,)
    """
    from ..rng import STREAM_SPLIT, run_rng

    perm = run_rng(seed, STREAM_SPLIT).permutation(10)
    lookup = np.empty(10, dtype="<U5")
    lookup[perm[:8]] = "train"
    lookup[perm[8]] = "val"
    lookup[perm[9]] = "test"
    return lookup[np.mod(np.asarray(targetids, np.int64), 10)]


def split_weighted_by_csst(seed: int, targetids: ArrayLike, z: ArrayLike, test_fraction: float = 0.1) -> np.ndarray:
    """Splits of real sources: the test split drawn to follow the CSST n(z).

    Each source enters the test split with probability q_b = min(1, lam * w_b) in
    its CSST bin b, w_b = p_CSST,b / p_data,b, lam set (bisection) so that the
    expected test fraction is ``test_fraction``; the others are val with
    probability 1/9, else train (8:1:1 overall). The uniforms come from
    ``galaxy_rng(seed, TARGETID, STREAM_SPLIT)``. Where the data have too few
    sources in a bin the test n(z) falls short there (q_b = 1).

    Returns
    -------
    ndarray of str, shape (N,)
    """
    from ..rng import STREAM_SPLIT, galaxy_rng

    z = np.asarray(z, float)
    tids = np.asarray(targetids, np.int64)
    nbin = len(CSST_Z_FRACTIONS)
    raw_bin = np.digitize(z, CSST_Z_EDGES) - 1
    inside = (raw_bin >= 0) & (raw_bin < nbin)  # outside the CSST table: never test (weight 0)
    b = np.clip(raw_bin, 0, nbin - 1)
    p_data = np.bincount(b[inside], minlength=nbin) / max(len(z), 1)
    w = np.where(p_data > 0, csst_bin_probabilities() / np.where(p_data > 0, p_data, 1.0), 0.0)
    lo, hi = 0.0, 1.0 / max(w[w > 0].min(), 1e-12) if np.any(w > 0) else 1.0
    for _ in range(100):
        lam = 0.5 * (lo + hi)
        frac = float(np.sum(p_data * np.minimum(1.0, lam * w)))
        lo, hi = (lam, hi) if frac < test_fraction else (lo, lam)
    q = np.where(inside, np.minimum(1.0, lam * w)[b], 0.0)
    out = np.empty(len(z), dtype="<U5")
    for i, t in enumerate(tids):
        u1, u2 = galaxy_rng(seed, int(t), STREAM_SPLIT).random(2)
        out[i] = "test" if u1 < q[i] else ("val" if u2 < 1.0 / 9.0 else "train")
    return out
