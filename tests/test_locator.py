"""The non-negative locator (csstz.templates.locator): its compiled sums and solves, and that it finds z."""

import numpy as np
import pytest
from astropy.io import fits

from csstz.errors import FileFormatError, InputError
from csstz.templates.basis import load_templates
from csstz.templates.fit import TemplateModel
from csstz.templates.learned import TemplateBasis
from csstz.templates.locator import NNLSLocator, nnls_small, window_normal_equations, write_locator_templates
from csstz.templates.nnls import _supports, nnls_enumerate

#: band grids like the instrument's GV and GI (first order: 6.0 and 9.676 A per pixel)
WAVES = {"GV": np.arange(3810.0, 6200.0, 6.0), "GI": np.arange(6110.0, 10000.0, 9.676)}
DISPERSION = {"GV": 6.0, "GI": 9.676}
STEP = 1.15e-3


def _grid(z0=0.4, z1=1.0):
    lnz = np.arange(np.log1p(z0), np.log1p(z1) + 1e-12, STEP)
    return np.expm1(lnz)


def test_nnls_small_equals_the_enumeration_and_respects_positivity():
    rng = np.random.default_rng(0)
    M, K, P = 3000, 5, 40
    T = rng.random((M, K, P))
    T[::2, 1] = T[::2, 0] + 0.01 * rng.random((M // 2, P))  # nearly degenerate templates: the ridge matters
    w = rng.random((M, P))
    coef = np.where(np.arange(M)[:, None] % 4 == 1, rng.uniform(0.5, 1.0, (M, K)), rng.normal(0.2, 1.0, (M, K)))
    f = np.einsum("mk,mkp->mp", coef, T) + rng.normal(0, 0.03, (M, P))
    A = np.einsum("mp,mkp,mjp->mkj", w, T, T)
    b = np.einsum("mp,mp,mkp->mk", w, f, T)
    fwf = np.einsum("mp,mp,mp->m", w, f, f)
    sup = np.array([[k in s for k in range(K)] for s in _supports(K)], np.uint8)
    # two problems whose full support has no Cholesky factor (an indefinite A): the other supports must decide
    A[:2, 0, 0] = -1.0
    got = nnls_small(A, b, fwf, sup)
    ref, _ = nnls_enumerate(A, b, fwf)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    assert np.all(got <= fwf + 1e-9)  # c = 0 is always allowed
    # where the unconstrained optimum is non-negative, it is the answer (the early exit)
    c_free = np.linalg.solve(A[2:], b[2:, :, None])[..., 0]
    free_ok = np.all(c_free >= 0, axis=1)
    assert free_ok.sum() > 50
    ls_free = fwf[2:] - np.einsum("mk,mk->m", b[2:], c_free)
    np.testing.assert_allclose(got[2:][free_ok], ls_free[free_ok], rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    # a spectrum that needs a negative coefficient gets a worse chi2 than least squares
    assert np.mean(got[2:] > ls_free + 1e-6) > 0.2
    # the early exit is exact only with the full support tried first: another order is refused
    with pytest.raises(ValueError, match="full support"):
        nnls_small(A[:4], b[:4], fwf[:4], sup[::-1].copy())


def test_window_normal_equations_equal_the_direct_sums():
    rng = np.random.default_rng(1)
    Nz, K, P, N, S = 60, 4, 70, 25, 5
    models = rng.random((Nz, K, P))
    flux = rng.normal(size=(N, P))
    err = rng.uniform(0.5, 2.0, (N, P))
    err[rng.random((N, P)) < 0.1] = np.nan  # pixels left out: no error,
    err[3, :5] = 0.0  # a zero error,
    flux[4, 7] = np.inf  # or a flux that is not finite
    w = np.where(np.isfinite(err) & (err > 0) & np.isfinite(flux), 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0)
    f = np.where(w > 0, flux, 0.0)
    rows = np.array([3, 4, 0, 24, 10])
    gi = rng.integers(0, Nz - S, rows.size)[:, None] + np.arange(S)[None]
    b, a, fwf = np.empty((rows.size, S, K)), np.empty((rows.size, S, K, K)), np.empty(rows.size)
    window_normal_equations(models, flux, err, rows, gi, b, a, fwf)
    M = models[gi]
    np.testing.assert_allclose(b, np.einsum("rp,rskp->rsk", (w * f)[rows], M), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a, np.einsum("rp,rskp,rsjp->rskj", w[rows], M, M), rtol=1e-12)
    np.testing.assert_allclose(fwf, np.einsum("rp,rp,rp->r", w[rows], f[rows], f[rows]), rtol=1e-12)


@pytest.fixture(scope="module")
def kcorrect_locator():
    """A locator on the kcorrect templates (the package's default file), one line-spread set of 2.5 pixels."""
    from importlib import resources

    from csstz.templates.basis import TEMPLATE_PACKAGE, TEMPLATE_RELPATH

    path = str(resources.files(TEMPLATE_PACKAGE).joinpath(*TEMPLATE_RELPATH))
    return NNLSLocator(path, WAVES, DISPERSION, (2.5,), _grid())


def _spectra(locator, z_true, coeff, noise, rng):
    """Spectra of positive template mixtures at z_true (off the grid), rendered as the fit renders them."""
    tm = TemplateModel(
        WAVES, {b: 2.5 * d for b, d in DISPERSION.items()}, zmin=0.0, zmax=2.0,
        template_path=locator.template_path, normal_equations=False,
    )  # fmt: skip
    rows = [np.einsum("k,kp->p", c, tm.render(np.array([z]))[0]) for z, c in zip(z_true, coeff)]
    clean = np.array(rows)
    err = noise * np.median(clean, axis=1, keepdims=True) * np.ones_like(clean)
    return clean + err * rng.standard_normal(clean.shape), err


def test_the_locator_finds_the_redshift_of_a_template_spectrum(kcorrect_locator):
    loc = kcorrect_locator
    rng = np.random.default_rng(2)
    n = 12
    z_true = rng.uniform(0.5, 0.9, n)
    coeff = rng.uniform(0.0, 1.0, (n, loc.n_templates))
    flux, err = _spectra(loc, z_true, coeff, 1e-4, rng)
    flat = np.zeros(loc.grid_z.size)
    start = np.expm1(np.log1p(z_true) + rng.choice([-0.8, 0.8], n) * STEP)  # the best grid point stays inside
    got = loc.relocate(start, flux, err, np.zeros(n, int), flat)
    # the non-negative fit of the generating templates finds z far below a grid step (parabola refinement)
    assert np.max(np.abs(np.log1p(got) - np.log1p(z_true))) < 0.1 * STEP
    # its chi2 at the grid point nearest z is close to the number of pixels (the noise level), far from it not
    gi = np.rint((np.log1p(z_true) - loc.grid_lnz[0]) / STEP).astype(int)
    c2 = loc.chi2(flux, err, None, np.stack([gi, gi + 30], axis=1))
    assert np.all(c2[:, 1] > 10 * c2[:, 0])
    # only within its window: from 10 steps off it stays inside [start - 2 steps, start + 2 steps]
    far = np.expm1(np.log1p(z_true) + 10 * STEP)
    moved = np.log1p(loc.relocate(far, flux, err, None, flat)) - np.log1p(far)
    assert np.all(np.abs(moved) <= 2.5 * STEP)
    # a prior tilt moves a noisy peak towards higher prior, never away
    noisy, nerr = _spectra(loc, z_true, coeff, 0.3, rng)
    a = loc.relocate(z_true, noisy, nerr, None, flat)
    b = loc.relocate(z_true, noisy, nerr, None, 200.0 * np.log1p(loc.grid_z))
    assert np.all(b >= a - 1e-12) and np.any(b > a)


def test_the_locator_leaves_what_it_cannot_locate(kcorrect_locator):
    loc = kcorrect_locator
    rng = np.random.default_rng(5)
    flux, err = _spectra(loc, np.array([0.6, 0.7, 0.8]), rng.uniform(0, 1, (3, loc.n_templates)), 0.01, rng)
    err[1] = np.nan  # no valid pixel
    z = np.array([0.6, 0.7, np.nan])
    out = loc.relocate(z, flux, err, None, np.zeros(loc.grid_z.size))
    assert out[1] == 0.7 and np.isnan(out[2]) and abs(out[0] - 0.6) < 2 * STEP
    off = loc.relocate(np.array([0.1, 3.0, 0.6]), flux, err, None, np.zeros(loc.grid_z.size))
    assert off[0] == 0.1 and off[1] == 3.0  # off the grid: unchanged
    with pytest.raises(InputError, match="flux"):
        loc.chi2(flux[:, :10], err[:, :10], None, np.zeros((3, 2), int))
    with pytest.raises(InputError, match="grid_index"):
        loc.chi2(flux, err, None, np.full((3, 2), loc.grid_z.size))


def test_locator_templates_round_trip_and_bad_files(tmp_path):
    wave = np.linspace(1000.0, 12000.0, 500)
    t = np.stack([np.exp(-0.5 * ((wave - c) / 900.0) ** 2) + 0.1 for c in (3000.0, 6000.0, 9000.0)])
    prov = {"n": 3, "nmf_iterations": 800, "nmf_converged": False, "train_median_rel_rms": 0.004}
    basis = TemplateBasis(wave_aa=wave, templates=t, norm=t.mean(axis=1), name="nmf-test", provenance=prov)
    path = write_locator_templates(tmp_path / "loc.fits", basis)
    with fits.open(path) as hdul:  # how the NMF went travels with the templates
        hdr = hdul["FLUX"].header
        assert (hdr["NSEDS"], hdr["NMFITER"], hdr["NMFCONV"], hdr["RELRMS"]) == (3, 800, False, 0.004)
    w2, t2 = load_templates(str(path))
    np.testing.assert_allclose(w2, wave)
    sel = (wave > 1500.0) & (wave < 11000.0)
    np.testing.assert_allclose(t2, t / t[:, sel].mean(axis=1, keepdims=True), rtol=1e-12)
    neg = TemplateBasis(wave_aa=wave, templates=t - 0.5, norm=t.mean(axis=1))
    with pytest.raises(InputError, match="non-negative"):
        write_locator_templates(tmp_path / "neg.fits", neg)
    assert not (tmp_path / "neg.fits").exists()
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file")
    with pytest.raises(FileFormatError, match="bad.fits"):
        NNLSLocator(bad, WAVES, DISPERSION, (2.5,), _grid())
