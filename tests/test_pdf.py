"""Gridded p(z) helpers (csstz.templates.pdf): checked against closed forms of Gaussians and mixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from csstz.errors import InputError
from csstz.templates import pdf

GRID = np.expm1(np.arange(0.0, np.log1p(1.6), 5e-4))  # uniform in ln(1+z): a non-uniform z grid


def gauss(mu, sig, grid=GRID):
    return np.exp(-0.5 * ((grid[None, :] - np.atleast_1d(mu)[:, None]) / np.atleast_1d(sig)[:, None]) ** 2)


def test_normalise_cdf_quantiles_and_intervals_of_gaussians():
    mu, sig = np.array([0.3, 0.8, 1.2]), np.array([0.01, 0.03, 0.002])
    p = pdf.normalise(gauss(mu, sig), GRID)
    np.testing.assert_allclose(np.trapezoid(p, GRID, axis=1), 1.0, rtol=1e-12)
    c = pdf.cdf(p, GRID)
    assert np.all(np.diff(c, axis=1) >= 0) and np.allclose(c[:, -1], 1) and np.all(c[:, 0] == 0)
    lo, hi = pdf.central_interval(p, GRID, pdf.LEVEL_68)
    assert np.all(np.abs(lo - (mu - sig)) < 0.03 * sig) and np.all(np.abs(hi - (mu + sig)) < 0.03 * sig), (lo, hi)
    lo, hi = pdf.central_interval(p, GRID, pdf.LEVEL_95)
    # linear interpolation between samples adds ~h^2/6 of variance: 2.3% in width for sigma = 2 grid steps
    np.testing.assert_allclose(hi - lo, 4 * sig, rtol=0.03)
    np.testing.assert_allclose(pdf.quantile(p, GRID, 0.5), mu, atol=1e-5)


def test_mode_parabolic_refinement_is_below_the_grid_step():
    mu = np.array([0.30013, 0.70041, 1.10029])
    p = gauss(mu, np.full(3, 0.004))
    step = np.diff(GRID).max()
    raw = pdf.mode(p, GRID, refine=False)
    fine = pdf.mode(p, GRID)
    assert np.abs(raw - mu).max() > 0.05 * step  # the grid alone is off by a fraction of a step
    np.testing.assert_allclose(fine, mu, atol=1e-7)  # log of a Gaussian is a parabola: exact
    # an edge maximum stays at the grid point
    edge = pdf.normalise(np.exp(-GRID[None, :] / 0.05), GRID)
    assert pdf.mode(edge, GRID)[0] == GRID[0]


def _ln_gauss(centre_ln, sig_ln, grid=GRID):
    """Cell probabilities (per unit ln(1 + z)) of a Gaussian in ln(1 + z), normalised to sum 1."""
    c = np.exp(-0.5 * ((np.log1p(grid) - centre_ln) / sig_ln) ** 2)
    return c / c.sum()


def test_kernel_mode_finds_a_peak_centre_and_prefers_the_peak_holding_more_probability():
    lnz = np.log1p(GRID)
    step = lnz[1] - lnz[0]
    # one peak, Gaussian in ln(1 + z): the kernel mode is its centre (exact: Gaussian * Gaussian, parabola in ln)
    m = np.log1p(np.array([0.30013, 0.90041]))
    one = np.stack([_ln_gauss(c, 0.004) for c in m]) / (1 + GRID)
    np.testing.assert_allclose(pdf.kernel_mode(one, GRID, 16), np.expm1(m), atol=1e-7)
    # a tall narrow spike holding 30% of the probability beside a broad peak holding 70%, 0.05 away in ln(1 + z)
    spike_ln, broad_ln = np.log1p(0.5), np.log1p(0.5) + 0.05
    dens = pdf.normalise((0.3 * _ln_gauss(spike_ln, 0.0008) + 0.7 * _ln_gauss(broad_ln, 0.01)) / (1 + GRID), GRID)
    assert abs(np.log1p(pdf.mode(dens, GRID)[0]) - spike_ln) < step  # the tallest point: the spike
    wide = pdf.kernel_mode(dens, GRID, 16)[0]  # kernel of 16 steps = 0.008 in ln(1 + z)
    assert abs(np.log1p(wide) - broad_ln) < 0.5 * step  # the peak with more probability
    narrow = pdf.kernel_mode(dens, GRID, 0.5)[0]  # a kernel narrower than the spike keeps the spike
    assert abs(np.log1p(narrow) - spike_ln) < step


def test_kernel_mode_equals_a_direct_convolution_up_to_the_grid_ends_and_refuses_bad_input():
    """The FFT is zero-padded: no probability wraps around from one end of the grid to the other."""
    rng = np.random.default_rng(7)
    lnz = np.log1p(GRID)
    centres = np.concatenate([[lnz[3], lnz[-4]], rng.uniform(lnz[0], lnz[-1], 6)])
    cell = np.stack([0.5 * _ln_gauss(c, 0.003) + 0.5 * _ln_gauss(c + 0.04, 0.02) for c in centres])
    dens = cell / (1 + GRID)
    s = 12.0
    h = int(math.ceil(4 * s))
    ker = np.exp(-0.5 * (np.arange(-h, h + 1) / s) ** 2)
    direct = np.stack([np.convolve(c, ker / ker.sum(), mode="same") for c in cell])
    np.testing.assert_allclose(pdf.kernel_mode(dens, GRID, s), np.expm1(pdf.mode(direct, lnz)), rtol=0, atol=1e-9)
    # narrow spikes of 0.3 at both ends and of 0.4 in the middle: smoothed without padding, each end's spike would
    # gain the other's (7 steps apart around the circle) and win; zero-padded, the middle one holds the most
    ends = np.zeros(GRID.size)
    ends[[3, GRID.size - 4, GRID.size // 2]] = 0.3, 0.3, 0.4
    k_mid = pdf.kernel_mode((ends / (1 + GRID))[None, :], GRID, s)[0]
    assert abs(np.log1p(k_mid) - lnz[GRID.size // 2]) < 1e-9
    # a row that is not finite everywhere gives NaN, the others are unaffected
    bad = dens.copy()
    bad[1, 10] = np.nan
    got = pdf.kernel_mode(bad, GRID, s)
    assert np.isnan(got[1]) and np.all(np.isfinite(np.delete(got, 1)))
    for sigma in (0.0, -1.0, np.nan):
        with pytest.raises(InputError, match="sigma_steps"):
            pdf.kernel_mode(dens, GRID, sigma)


def test_pit_is_uniform_for_calibrated_densities_and_piles_up_when_too_narrow():
    rng = np.random.default_rng(1)
    n = 3000
    mu = rng.uniform(0.2, 1.3, n)
    sig = rng.uniform(0.005, 0.03, n)
    zt = mu + sig * rng.standard_normal(n)
    u = pdf.pit(gauss(mu, sig), GRID, zt)
    np.testing.assert_allclose(u, norm.cdf((zt - mu) / sig), atol=2e-3)
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / n
    assert np.all(np.abs(hist - 0.1) < 0.025), hist
    narrow = pdf.pit(gauss(mu, sig / 3), GRID, zt)  # over-confident: PIT piles up at 0 and 1
    assert np.mean((narrow < 0.1) | (narrow > 0.9)) > 0.5
    assert pdf.pit(gauss([0.5], [0.01]), GRID, [5.0])[0] == 1.0 and pdf.pit(gauss([0.5], [0.01]), GRID, [-0.5])[0] == 0


def test_crps_matches_the_gaussian_closed_form_and_a_point_mass_limit():
    mu, sig = np.array([0.5, 0.5, 0.9]), np.array([0.02, 0.02, 0.05])
    zt = np.array([0.5, 0.56, 0.8])
    w = (zt - mu) / sig
    exact = sig * (w * (2 * norm.cdf(w) - 1) + 2 * norm.pdf(w) - 1 / math.sqrt(math.pi))
    np.testing.assert_allclose(pdf.crps(gauss(mu, sig), GRID, zt), exact, rtol=2e-3)
    # a very narrow p(z): CRPS -> |z_pred - z_true|, also for a truth outside the grid
    got = pdf.crps(gauss([0.4, 1.5], [1e-4, 1e-4]), GRID, [0.7, 2.0])
    np.testing.assert_allclose(got, [0.3, 0.5], atol=1e-3)  # the spike spans ~one grid step (~1e-3)


def test_mass_away_from_mode_measures_multimodality():
    one = gauss([0.6], [0.004])
    two = gauss([0.6], [0.004]) + 0.5 * gauss([0.9], [0.004])  # a second peak with 1/3 of the mass
    assert pdf.mass_away_from_mode(one, GRID)[0] < 1e-6
    assert pdf.mass_away_from_mode(two, GRID)[0] == pytest.approx(1 / 3, abs=2e-3)
    wide = gauss([0.6], [0.1])  # one broad peak: much of it outside +-0.02 (1+z) as well
    assert pdf.mass_away_from_mode(wide, GRID)[0] > 0.5


def test_from_chi2_and_bad_input():
    chi2 = 100 + ((GRID - 0.7) / 0.01) ** 2  # Delta chi2 = 1 at +-0.01: a Gaussian of sigma 0.01
    p = pdf.from_chi2(chi2[None], GRID)
    lo, hi = pdf.central_interval(p, GRID)
    assert hi[0] - lo[0] == pytest.approx(0.02, rel=0.01)
    assert np.isnan(pdf.from_chi2(np.full((1, GRID.size), np.nan), GRID)).all()
    with pytest.raises(InputError, match="PZ_GRID.*increasing"):
        pdf.check_pz(p, GRID[::-1])
    with pytest.raises(InputError, match="PZ: shape"):
        pdf.check_pz(p[:, :-1], GRID)
    with pytest.raises(InputError, match="PZ: shape"):
        pdf.check_pz(p, GRID, n_rows=2)
    with pytest.raises(InputError, match=r"PZ, row 0: negative density"):
        pdf.check_pz(np.where(np.arange(GRID.size) == 5, -1.0, p), GRID)
    with pytest.raises(InputError, match=r"PZ, row 0: row not normalised.*got 2\.0"):
        pdf.check_pz(2 * p, GRID)
    nan = np.vstack([p, np.full(GRID.size, np.nan)])
    with pytest.raises(InputError, match="non-finite"):
        pdf.check_pz(nan, GRID)
    pdf.check_pz(nan, GRID, allow_nan_rows=[False, True])  # a flagged object without a result
    with pytest.raises(InputError, match="no probability"):
        pdf.normalise(np.zeros((1, GRID.size)), GRID)


def _gauss_pz(grid, mu, sig):
    return pdf.normalise(np.exp(-0.5 * ((grid[None, :] - mu[:, None]) / sig[:, None]) ** 2), grid)


def test_pit_map_fixes_too_narrow_pz_per_snr_bin():
    """Truths scattered 1.4x wider than the p(z) at low SNR and 0.7x at high SNR: the map fitted on one
    set makes the central intervals of an independent set cover what they claim, bin by bin."""
    grid = np.linspace(0.0, 2.0, 801)
    rng = np.random.default_rng(3)

    def draw(n):
        snr = rng.uniform(1.0, 20.0, n)
        sig = np.full(n, 0.02)
        mu = rng.uniform(0.5, 1.5, n)
        wide = np.where(snr < 5.0, 1.4, 0.7)
        return _gauss_pz(grid, mu, sig), mu + wide * sig * rng.normal(size=n), snr

    pz_cal, zt_cal, snr_cal = draw(3000)
    m = pdf.fit_pit_map(pdf.pit(pz_cal, grid, zt_cal), snr_cal)
    assert len(m["maps"]) == len(m["snr_edges"]) - 1 >= 3 and min(m["n"]) >= pdf.PIT_MAP_MIN_N
    pz, zt, snr = draw(3000)
    low = snr < 5.0

    def cover(p, level):
        lo, hi = pdf.central_interval(p, grid, level)
        return (zt >= lo) & (zt <= hi)

    before = cover(pz, pdf.LEVEL_68)
    assert before[low].mean() < 0.56 and before[~low].mean() > 0.8  # 52% and 85% inside
    after = pdf.apply_pit_map(pz, grid, snr, m)
    np.testing.assert_allclose(np.trapezoid(after, grid, axis=1), 1.0, rtol=1e-6)
    for lev in (pdf.LEVEL_68, pdf.LEVEL_95):
        c = cover(after, lev)
        assert abs(c[low].mean() - lev) < 0.04 and abs(c[~low].mean() - lev) < 0.04, (lev, c[low].mean())


def test_pit_map_merges_small_bins_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    u = rng.uniform(size=400)
    snr = np.where(rng.uniform(size=400) < 0.9, 1.5, 30.0)  # ~40 objects above SNR 10: too few for a bin
    m = pdf.fit_pit_map(u, snr)
    assert sum(m["n"]) == 400 and min(m["n"]) >= pdf.PIT_MAP_MIN_N
    assert np.all(np.diff(np.asarray(m["maps"]), axis=1) > 0)  # strictly increasing (identity pseudo-count)
    # the last bin too small: it joins its lower neighbour while >= 2 bins remain
    snr2 = np.repeat([1.0, 2.5, 4.0, 7.0, 20.0], [100, 100, 500, 500, 100])
    m2 = pdf.fit_pit_map(rng.uniform(size=snr2.size), snr2)
    assert sum(m2["n"]) == snr2.size and min(m2["n"]) >= pdf.PIT_MAP_MIN_N and len(m2["n"]) >= 2
    assert m2["snr_edges"][-1] is None  # the open last edge, JSON-safe
    # objects below the first edge belong to the first bin, also when counting for the merge
    m3 = pdf.fit_pit_map(rng.uniform(size=500), np.repeat([-0.5, 1.0, 7.0], [200, 100, 200]))
    assert m3["n"] == [300, 200]
    with pytest.raises(InputError, match="pit_values"):
        pdf.fit_pit_map([0.2, 1.5], [1.0, 2.0])
    with pytest.raises(InputError, match="pseudo_n"):
        pdf.fit_pit_map(u, snr, pseudo_n=0.0)
    bad = dict(m, maps=[list(reversed(row)) for row in m["maps"]])
    with pytest.raises(InputError, match="pit_map"):
        pdf.check_pit_map(bad)
    with pytest.raises(InputError, match="pit_map"):
        pdf.apply_pit_map(np.ones((1, 5)), np.linspace(0, 1, 5), [1.0], {"maps": []})


def test_summaries_equal_the_separate_quantiles_and_mass_away():
    """pdf.summaries (one normalisation, one CDF) gives what quantiles and mass_away_from_mode give."""
    rng = np.random.default_rng(9)
    grid = np.expm1(np.arange(0.0, np.log(2.6), 1.15e-3))
    mu = rng.uniform(0.1, 1.2, 50)
    pz = np.exp(-0.5 * ((grid[None, :] - mu[:, None]) / 0.01) ** 2) + 0.3 * np.exp(
        -0.5 * ((grid[None, :] - mu[:, None] - 0.2) / 0.02) ** 2
    )
    qs = (0.16, 0.84, 0.023, 0.977)
    zm = mu + 0.001
    q, away = pdf.summaries(pz, grid, qs, zm)
    np.testing.assert_array_equal(q, pdf.quantiles(pz, grid, qs))
    np.testing.assert_array_equal(away, pdf.mass_away_from_mode(pz, grid, z_mode=zm))
    assert np.all(away > 0.1)  # the second peak is counted
    with pytest.raises(InputError, match="q"):
        pdf.summaries(pz, grid, (1.5,), zm)
