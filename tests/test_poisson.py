"""The simulator's table-based exact Poisson sampler against the Poisson distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from csstz.simulate.poisson import LAMBDA_MAX_E, poisson


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.49, 3.0, 23.4, 57.9, 99.9, 140.0])
def test_draws_follow_the_poisson_pmf(lam):
    """Mean, variance and a chi-square goodness of fit over 4e5 draws, below and above the table range."""
    x = poisson(np.full(400_000, lam), np.random.default_rng(int(lam * 10) + 1))
    assert x.dtype == np.int64 and x.min() >= 0
    if lam == 0.0:
        assert not x.any()
        return
    assert x.mean() == pytest.approx(lam, abs=5 * np.sqrt(lam / x.size))
    assert x.var() == pytest.approx(lam, rel=5 * np.sqrt(2.0 / x.size) + 5 * np.sqrt(1.0 / (lam * x.size)))
    ks = np.arange(int(lam + 10 * np.sqrt(lam) + 10))
    obs = np.bincount(x, minlength=ks.size)[: ks.size]
    exp = stats.poisson.pmf(ks, lam) * x.size
    ok = exp > 5
    if ok.sum() > 1:
        chi2 = ((obs[ok] - exp[ok]) ** 2 / exp[ok]).sum()
        assert stats.chi2.sf(chi2, ok.sum() - 1) > 1e-4


def test_mixed_means_shape_and_determinism():
    """Any shape; per-element means; the same generator state gives the same draws."""
    rng = np.random.default_rng(0)
    lam = rng.uniform(0, 2 * LAMBDA_MAX_E, (40, 300))
    a = poisson(lam, np.random.default_rng(9))
    b = poisson(lam, np.random.default_rng(9))
    assert a.shape == lam.shape and np.array_equal(a, b)
    # the sum over elements of independent Poisson draws is Poisson with the summed mean
    assert a.sum() == pytest.approx(lam.sum(), abs=5 * np.sqrt(lam.sum()))
    # elements far apart in mean do not swap draws: each stays within 8 sigma of its own mean
    assert np.all(np.abs(a - lam) < 8 * np.sqrt(lam) + 8)
