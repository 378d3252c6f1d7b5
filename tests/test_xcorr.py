"""FFT cross-correlation chi2(z) and p(z) (csstz.templates.xcorr): physics and contracts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csstz.errors import InputError
from csstz.instrument import load_instrument
from csstz.population.sdss_fit import read_templates
from csstz.templates.fit import TemplateModel
from csstz.templates.learned import TemplateBasis, kcorrect_basis, learn_basis, rest_grid_aa
from csstz.templates.xcorr import XcorrModel, common_grid, loglike_curves, pit, posterior, resample, resampling_matrix

BANDS = ("GV", "GI")


@pytest.fixture(scope="module")
def inst():
    return load_instrument()


@pytest.fixture(scope="module")
def waves(inst):
    return {b: inst.band(b).wave_aa for b in BANDS}


def _split(x, waves):
    n0 = waves["GV"].size
    return {"GV": x[:, :n0], "GI": x[:, n0:]}


def _line_basis():
    """Flat continuum + one narrow emission line at 5007 A rest (sigma 1 A)."""
    w = np.exp(np.arange(np.log(1300.0), np.log(11000.0), 1e-4))
    line = np.exp(-0.5 * ((w - 5007.0) / 1.0) ** 2)
    T = np.stack([np.ones_like(w), line])
    return TemplateBasis(w, T, T.mean(axis=1), name="line")


def test_resampling_conserves_flux(waves):
    grid = common_grid(waves)
    assert abs(float(grid[1] - grid[0]) - 1.15e-3) < 1e-12
    mats = {b: resampling_matrix(w, grid) for b, w in waves.items()}
    flat = {b: np.full((1, w.size), 3.0) for b, w in waves.items()}
    err = {b: np.full((1, w.size), 0.5) for b, w in waves.items()}
    f, w = resample(flat, err, mats)
    assert np.allclose(f[w > 0], 3.0)
    # a linear ramp in ln(lambda): the overlap-weighted mean preserves it to second order
    lw = {b: np.log(x)[None, :] for b, x in waves.items()}
    f2, w2 = resample(lw, err, mats)
    inner = (w2[0] > 0) & (np.arange(grid.size) > 2) & (np.arange(grid.size) < grid.size - 3)
    assert np.max(np.abs(f2[0, inner] - grid[inner])) < 2e-4
    # masked pixels (err = inf) never carry weight; weights are 0 where no band covers the grid
    err_m = {b: e.copy() for b, e in err.items()}
    err_m["GV"][:, :100] = np.inf
    _, w3 = resample(flat, err_m, mats)
    gv_lo = np.log(waves["GV"][0])
    assert np.all(w3[0, grid < np.log(waves["GV"][95])] == 0)
    assert np.all(w3[0, (grid > gv_lo + 0.2) & (grid < np.log(waves["GI"][-2]))] > 0)


@pytest.mark.parametrize("z_true", [0.12, 0.47, 0.83, 1.05])
def test_line_at_known_z_is_recovered_within_a_fraction_of_the_grid_step(waves, inst, z_true):
    m = XcorrModel(_line_basis(), waves, lsf_sigma_pix=(inst.psf_sigma_pix,), dtype=np.float64)
    sig_ln = inst.psf_sigma_pix * m.pix_ln
    flux = {}
    for b, w in waves.items():
        x = (np.log(w) - math.log(5007.0 * (1 + z_true))) / sig_ln
        flux[b] = (1.0 + 20.0 * np.exp(-0.5 * x**2))[None, :]
    err = {b: np.full((1, w.size), 0.05) for b, w in waves.items()}
    ll = loglike_curves(m, flux, err, threads=1)
    po = posterior(m.lnz, ll)
    dlnz = math.log1p(po["z"][0]) - math.log1p(z_true)
    assert abs(dlnz) < 0.15 * m.h
    assert po["p_second"][0] < 1e-6


def test_fft_chi2_equals_brute_force(waves, inst):
    tw, tf = read_templates()
    wave = rest_grid_aa()
    b = TemplateBasis(wave, np.stack([np.interp(wave, tw, t) for t in tf]), np.ones(5), name="kc")
    m = XcorrModel(b, waves, lsf_sigma_pix=(2.3,), dtype=np.float64, zmax=1.2)
    rng = np.random.default_rng(5)
    n = 3
    flux = {k: rng.normal(1.0, 1.0, (n, w.size)) for k, w in waves.items()}
    err = {k: rng.uniform(0.5, 2.0, (n, w.size)) for k, w in waves.items()}
    err["GI"][:, 40:60] = np.inf  # masked pixels
    f, w = m.prepare_spectra(flux, err)
    ll, coef = m.loglike(f, w, mode="ls", with_coeff=True)
    Trest = m.rest_templates()  # (K, n_rest), phase 0
    for shift in (0, 137, 400, m.n_shift - 1):
        lnz = m.lnz_max - shift * m.h
        j = int(np.argmin(np.abs(m.lnz - lnz)))
        assert abs(m.lnz[j] - lnz) < 1e-12
        X = Trest[:, shift : shift + m.L].T  # model of the grid pixels at this shift
        for i in range(n):
            sw = np.sqrt(w[i])
            a, *_ = np.linalg.lstsq(X * sw[:, None], f[i] * sw, rcond=None)
            chi2 = float(np.sum(w[i] * (f[i] - X @ a) ** 2))
            assert abs(-2.0 * ll[i, j] - chi2) <= 1e-6 * chi2
            np.testing.assert_allclose(coef[i, j], a, rtol=1e-5, atol=1e-8 * np.abs(a).max())
    # float32 FFTs agree only to ~1e-2 relative on raw (unnormalised) templates: float64 is the default
    assert m.dtype == np.float64 and XcorrModel(b, waves, zmax=1.2).dtype == np.float64


def test_pz_is_a_normalised_density_with_consistent_summaries(waves, inst):
    m = XcorrModel(kcorrect_basis(), waves, lsf_sigma_pix=(inst.psf_sigma_pix,))
    tm = TemplateModel(waves, {k: inst.psf_sigma_pix * inst.band(k).dispersion_aa_per_pix for k in BANDS}, dlnz=0.01)
    z = np.array([0.3, 0.9])
    clean = np.einsum("k,zkp->zp", [1.0, 0.5, 0.2, 0.3, 0.8], tm.render(z))
    rng = np.random.default_rng(1)
    err = np.full_like(clean, 0.3 * clean.mean())
    noisy = clean + err * rng.normal(size=clean.shape)
    ll = loglike_curves(m, _split(noisy, waves), _split(err, waves), threads=1)
    po = posterior(m.lnz, ll)
    area = np.sum(0.5 * (po["pz"][:, 1:] + po["pz"][:, :-1]) * np.diff(po["z_grid"]), axis=1)
    np.testing.assert_allclose(area, 1.0, rtol=1e-5)
    assert np.all(po["pz"] >= 0)
    assert np.all(po["z_lo95"] <= po["z_lo68"]) and np.all(po["z_lo68"] <= po["z"] + 1e-9)
    assert np.all(po["z"] <= po["z_hi68"] + 1e-9) and np.all(po["zerr"] > 0)
    u = pit(po["z_grid"], po["cdf"], z)
    assert np.all((u >= 0) & (u <= 1))
    # a temperature > 1 broadens the p(z); the n(z) prior enters as a density
    hot = posterior(m.lnz, ll, temperature=4.0)
    assert np.all(hot["zerr"] > po["zerr"])
    with pytest.raises(InputError):
        posterior(m.lnz, ll, temperature=0.0)


def test_coefficient_prior_improves_low_snr_redshifts(waves, inst):
    """SEDs from a narrow family: at low SNR the prior-marginal likelihood beats free least squares."""
    tm = TemplateModel(waves, {k: inst.psf_sigma_pix * inst.band(k).dispersion_aa_per_pix for k in BANDS}, dlnz=0.01)
    wave = rest_grid_aa()
    T = np.stack([np.interp(wave, tm.template_wave_aa, t) for t in tm.template_flux])  # the templates tm renders
    rng = np.random.default_rng(11)
    parent = np.array([0.1, 1.0, 0.3, 0.05, 0.4])

    def draw(n):
        return parent * np.exp(0.15 * rng.normal(size=(n, 5)))

    basis = learn_basis(wave, draw(2000) @ T, 5)
    m = XcorrModel(basis, waves, lsf_sigma_pix=(inst.psf_sigma_pix,))
    n = 160
    z = rng.uniform(0.1, 1.4, n)
    c = draw(n)
    models = tm.render(z)  # (n, 5, P), exact pixel models
    clean = np.einsum("nk,nkp->np", c, models)
    err = np.full_like(clean, 1.0) * (np.abs(clean).mean(axis=1, keepdims=True) / 1.0)  # SNR/pixel ~ 1
    noisy = clean + err * rng.normal(size=clean.shape)
    out = {}
    for mode in ("ls", "prior"):
        ll = loglike_curves(m, _split(noisy, waves), _split(err, waves), mode=mode, threads=1)
        po = posterior(m.lnz, ll)
        dz = np.abs(po["z"] - z) / (1 + z)
        out[mode] = (float(np.mean(dz > 0.02)), float(np.median(dz)))
    assert out["prior"][0] < out["ls"][0] - 0.05, out


def test_bad_inputs(waves):
    b = kcorrect_basis()
    with pytest.raises(InputError):
        XcorrModel(b, waves, zmin=1.0, zmax=0.5)
    with pytest.raises(InputError):
        XcorrModel(b, waves, n_phase=3)
    m = XcorrModel(b, waves)
    with pytest.raises(InputError, match="no coefficient prior"):
        m.loglike(np.zeros((1, m.L)), np.ones((1, m.L)), mode="prior")
    with pytest.raises(InputError):
        m.prepare_spectra({"GV": np.zeros((1, 5))}, {"GV": np.ones((1, 5))})


def test_a_band_outside_the_basis_rest_range_is_refused(inst, waves):
    """GU (from 2460 A) at z = 1.6 reaches 946 A rest, below the basis' 1300 A: there the templates are zero,
    so the band would be fitted by a zero model at high z. Refused, naming the band and the largest usable
    zmax; within that zmax, and without GU, the model is built."""
    b = kcorrect_basis()
    gu = {"GU": inst.band("GU").wave_aa, **waves}
    with pytest.raises(InputError, match=r"band GU starts at 2460 A.*zmax <= 0\.88") as err:
        XcorrModel(b, gu, zmax=1.6)
    # the suggested bounds are usable as given, also with template phases (whose grid reaches further past zmax)
    assert XcorrModel(b, gu, zmax=float(str(err.value).split("zmax <= ")[1][:4])).z[-1] <= 0.89
    with pytest.raises(InputError, match="band GU") as err:
        XcorrModel(b, gu, zmax=1.6, n_phase=4)
    assert XcorrModel(b, gu, zmax=float(str(err.value).split("zmax <= ")[1][:4]), n_phase=4).z[-1] <= 0.89
    assert XcorrModel(b, waves, zmax=1.6).z[-1] >= 1.6 - 1e-9
    # the red end: a basis cut at 9000 A rest cannot fit GI (to 10571 A) at z = 0
    cut = b.wave_aa <= 9000.0
    short = TemplateBasis(b.wave_aa[cut], b.templates[:, cut], b.templates[:, cut].mean(axis=1), name="short")
    with pytest.raises(InputError, match=r"band GI ends at .*beyond the short basis' 899[89] A") as err:
        XcorrModel(short, waves)
    XcorrModel(short, waves, zmin=float(str(err.value).split("zmin >= ")[1][:4]))


def test_fit_xcorr_on_a_spectra_set(tmp_path, waves, inst):
    """End to end through a real spectra file: Z, ZERR, intervals, a normalised PZ per row."""
    from astropy.table import Table

    from csstz.io.spectra import BandSpectra, SpectraSet, read_spectra, write_spectra
    from csstz.templates.xcorr import fit_xcorr

    tm = TemplateModel(waves, {k: inst.psf_sigma_pix * inst.band(k).dispersion_aa_per_pix for k in BANDS}, dlnz=0.01)
    rng = np.random.default_rng(2)
    z = np.array([0.2, 0.6, 1.0, 1.3])
    clean = np.einsum("nk,nkp->np", np.tile([1.0, 0.5, 0.2, 0.3, 0.8], (4, 1)), tm.render(z))
    err = np.full_like(clean, 0.02 * clean.mean())
    noisy = clean + err * rng.normal(size=clean.shape)
    cat = Table(
        {
            "TARGETID": np.arange(4, dtype=np.int64),
            "Z": z,
            "SHAPE_R": [0.0, 0.3, 0.5, 0.2],
            "SERSIC": [1.0, 1.0, 4.0, 2.0],
            "BA": [1.0, 0.5, 0.8, 0.6],
            "PA": [0.0, 30.0, 60.0, 90.0],
        }
    )
    bands = {
        b: BandSpectra(waves[b], x.astype(np.float32), e.astype(np.float32))
        for (b, x), e in zip(_split(noisy, waves).items(), _split(err, waves).values())
    }
    path = tmp_path / "spec.h5"
    write_spectra(path, SpectraSet(bands, cat))
    sp = read_spectra(path, bands=BANDS)
    for lsf in ("point", "morphology"):
        tab, pz, zg = fit_xcorr(sp, kcorrect_basis(), lsf=lsf, mode="ls", threads=1)
        assert list(tab["TARGETID"]) == [0, 1, 2, 3] and pz.shape == (4, zg.size)
        np.testing.assert_allclose(np.trapezoid(pz, zg, axis=1), 1.0, rtol=1e-4)
        assert np.all(np.abs(tab["Z"] - z) / (1 + z) < 0.003), (lsf, tab["Z"])
        assert np.all(tab["Z_LO95"] <= tab["Z_LO68"]) and np.all(tab["Z_HI68"] <= tab["Z_HI95"])
    assert tab["LSF_SIGMA_PIX"][0] < tab["LSF_SIGMA_PIX"][2]  # the larger galaxy gets the broader LSF
    with pytest.raises(InputError):
        fit_xcorr(sp, kcorrect_basis(), bands=("GU",))


def test_prior_and_ls_in_one_pass_match_the_separate_likelihoods(waves, inst):
    """mode="prior+ls" shares the FFTs and the first solve: both curves equal the separate calls."""
    wave = rest_grid_aa()
    tw, tf = read_templates()
    T = np.stack([np.interp(wave, tw, t) for t in tf])
    rng = np.random.default_rng(5)
    basis = learn_basis(wave, rng.uniform(0.05, 1.0, (500, T.shape[0])) @ T, 4)
    m = XcorrModel(basis, waves, lsf_sigma_pix=(inst.psf_sigma_pix,))
    n0, n1 = waves["GV"].size, waves["GI"].size
    err = {"GV": np.full((24, n0), 0.5), "GI": np.full((24, n1), 0.5)}
    flux = {b: 1.0 + err[b] * rng.normal(size=err[b].shape) for b in BANDS}
    both = loglike_curves(m, flux, err, mode="prior+ls", threads=1)
    prior = loglike_curves(m, flux, err, mode="prior", threads=1)
    ls = loglike_curves(m, flux, err, mode="ls", threads=1)
    assert both.shape == (24, 2, prior.shape[1])
    np.testing.assert_allclose(both[:, 0], prior, rtol=1e-6, atol=1e-3)
    # the ls curve of the ridge-regularised solve equals the forward-substitution one up to rounding
    np.testing.assert_allclose(both[:, 1], ls, rtol=1e-5, atol=1e-2)
    assert np.ptp(both[:, 1], axis=1).min() > 1.0  # real curves, not constants
    with pytest.raises(InputError, match="mode"):
        loglike_curves(m, flux, err, mode="both", threads=1)


def _family(rng, n):
    """Coefficients of one SED family (the prior test's): a parent with log-normal scatter."""
    return np.array([0.1, 1.0, 0.3, 0.05, 0.4]) * np.exp(0.15 * rng.normal(size=(n, 5)))


def _family_basis_and_renderer(seed, waves, inst):
    """A basis learned from 500 SEDs of :func:`_family` (kcorrect templates), an exact-pixel renderer of those
    templates, and the random generator that drew them. The renderer scales each template to unit mean flux over
    1500-11000 A (:func:`csstz.templates.basis.load_templates`); the basis is learned from SEDs of the same
    scaled templates, so ``_family(rng, n)`` rendered by it are SEDs of the family the basis learned."""
    wave = rest_grid_aa()
    tw, tf = read_templates()
    tf = tf / tf[:, (tw > 1500.0) & (tw < 11000.0)].mean(axis=1, keepdims=True)
    T = np.stack([np.interp(wave, tw, t) for t in tf])
    rng = np.random.default_rng(seed)
    base = learn_basis(wave, _family(rng, 500) @ T, 5)
    tm = TemplateModel(waves, {k: inst.psf_sigma_pix * inst.band(k).dispersion_aa_per_pix for k in BANDS}, dlnz=0.01)
    return base, tm, rng


def test_a_line_outside_the_bands_leaves_the_likelihood_unchanged(waves, inst):
    """Where H-alpha is redshifted beyond GI, the basis with a free H-alpha template gives the base curves: the
    least-squares curve at every such redshift, the marginal likelihood near its peak. (Far from the peak the
    marginal likelihood can differ by ~0.2: its amplitude floor is 1% of the largest least-squares amplitude over
    all redshifts, and the free line changes that amplitude where the line is observed.)"""
    from csstz.templates.learned import add_emission_lines

    base, tm, rng = _family_basis_and_renderer(7, waves, inst)
    lines = add_emission_lines(base, 10.0, ("HaNII",))
    clean = np.einsum("nk,nkp->np", _family(rng, 6), tm.render(np.array([0.2, 0.3, 0.5, 0.7, 0.9, 1.2])))
    err = np.full_like(clean, 0.5) * np.abs(clean).mean(axis=1, keepdims=True)
    noisy = clean + err * rng.normal(size=clean.shape)
    curves = {}
    for name, b in (("base", base), ("lines", lines)):
        m = XcorrModel(b, waves, lsf_sigma_pix=(inst.psf_sigma_pix,))
        curves[name] = loglike_curves(m, _split(noisy, waves), _split(err, waves), mode="prior+ls", threads=1)
    beyond = (6564.61 - 80.0) * (1.0 + m.z) > np.exp(m.grid_ln[-1])  # the line and its LSF wings are off GI
    inside = 6564.61 * (1.0 + m.z) < np.exp(m.grid_ln[-1]) - 200.0
    assert beyond.sum() > 200 and inside.sum() > 200
    np.testing.assert_allclose(curves["lines"][:, 1, beyond], curves["base"][:, 1, beyond], rtol=1e-6, atol=1e-3)
    near = beyond[None, :] & (curves["base"][:, 0] > curves["base"][:, 0].max(axis=1, keepdims=True) - 30.0)
    assert near.sum() > 50
    np.testing.assert_allclose(curves["lines"][:, 0][near], curves["base"][:, 0][near], rtol=1e-6, atol=1e-3)
    # where the line is observed, the extra template can only lower the least-squares chi2
    assert np.all(curves["lines"][:, 1, inside] >= curves["base"][:, 1, inside] - 1e-3)
    assert np.max(curves["lines"][:, 1, inside] - curves["base"][:, 1, inside]) > 1.0


def test_a_free_oii_template_recovers_galaxies_with_stronger_oii_than_the_basis(tmp_path, waves, inst):
    """Galaxies whose [OII] exceeds the training family's by an equivalent width of 40 A: the learned basis
    places them at wrong redshifts, the basis with a free [OII] template (prior sigma 20 A) does not."""
    from astropy.io import fits

    from csstz.templates.learned import add_emission_lines, line_templates

    wave = rest_grid_aa()
    tw, tf = read_templates()
    T = np.stack([np.interp(wave, tw, t) for t in tf])
    oii = line_templates(wave, ("OII",))[0]
    # a kcorrect-layout template file with the five templates and the [OII] line, for exact pixel models
    path = tmp_path / "with_oii.fits"
    allt = np.vstack([T, oii[None]])
    cols = [
        fits.Column(name="wave", format=f"{wave.size}D", array=wave[None]),
        fits.Column(name="flux", format=f"{allt.size}D", array=allt.reshape(1, -1)),
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="FLUX")]).writeto(path)
    tm = TemplateModel(
        waves, {k: inst.psf_sigma_pix * inst.band(k).dispersion_aa_per_pix for k in BANDS}, template_path=str(path)
    )
    scale = allt[:, (wave > 1500) & (wave < 11000)].mean(axis=1)  # the file reader's unit-mean normalisation
    rng = np.random.default_rng(3)
    base = learn_basis(wave, _family(rng, 800) @ T, 5)
    n = 120
    z = rng.uniform(0.15, 1.3, n)
    c = _family(rng, n)
    mean_flux = (c @ T).mean(axis=1)  # the SED's mean flux density over the rest grid
    coef = np.column_stack([c, 40.0 * mean_flux]) * scale[None, :]  # 40 A more [OII] than the family
    clean = np.einsum("nk,nkp->np", coef, tm.render(z))
    err = np.full_like(clean, 1.0) * np.abs(clean).mean(axis=1, keepdims=True)  # SNR ~ 1 per pixel
    noisy = clean + err * rng.normal(size=clean.shape)
    eta = {}
    for name, b in (("base", base), ("lines", add_emission_lines(base, 20.0, ("OII",)))):
        m = XcorrModel(b, waves, lsf_sigma_pix=(inst.psf_sigma_pix,))
        po = posterior(m.lnz, loglike_curves(m, _split(noisy, waves), _split(err, waves), mode="prior", threads=1))
        eta[name] = float(np.mean(np.abs(po["z"] - z) / (1 + z) > 0.02))
    assert eta["lines"] < eta["base"] - 0.1, eta


def test_nested_likelihood_without_the_free_lines_equals_the_base_basis_near_the_peak(waves, inst):
    """``prior+ls+nested``: the third curve (the model without its free [OII] template, from the same
    factorisation) is the base basis' own marginal likelihood where it matters, near its peak."""
    from csstz.templates.learned import add_emission_lines

    base, tm, rng = _family_basis_and_renderer(4, waves, inst)
    lines = add_emission_lines(base, 10.0, ("OII",))
    z = rng.uniform(0.1, 1.3, 12)
    clean = np.einsum("nk,nkp->np", _family(rng, z.size), tm.render(z))
    err = np.full_like(clean, 0.7) * np.abs(clean).mean(axis=1, keepdims=True)
    noisy = _split(clean + err * rng.normal(size=clean.shape), waves)
    err = _split(err, waves)
    m_lines = XcorrModel(lines, waves, lsf_sigma_pix=(inst.psf_sigma_pix,))
    m_base = XcorrModel(base, waves, lsf_sigma_pix=(inst.psf_sigma_pix,))
    assert (m_lines.n_free, m_base.n_free) == (1, 0)
    three = loglike_curves(m_lines, noisy, err, mode="prior+ls+nested", threads=1)
    ref = loglike_curves(m_base, noisy, err, mode="prior", threads=1)
    assert three.shape == (z.size, 3, ref.shape[1])
    np.testing.assert_array_equal(three[:, 0], loglike_curves(m_lines, noisy, err, mode="prior", threads=1))
    near = ref > ref.max(axis=1, keepdims=True) - 10.0
    diff = np.abs(three[:, 2] - ref)[near]
    assert np.median(diff) < 0.005 and np.quantile(diff, 0.9) < 0.02, (np.median(diff), np.quantile(diff, 0.9))
    # the free line changes the likelihood (the nested curve is not a copy of the full one) ...
    assert np.max(np.abs(three[:, 2] - three[:, 0])[near]) > 0.1
    # ... and without free lines the nested curve is the curve itself
    both = loglike_curves(m_base, noisy, err, mode="prior+ls+nested", threads=1)
    np.testing.assert_array_equal(both[:, 2], both[:, 0])


def test_local_likelihood_equals_the_fft_curves(waves, inst):
    """``local_loglike`` (direct sums at chosen redshifts) gives the FFT's marginal likelihood with and without
    the free [OII] template at every redshift, for two LSF sets, except where the FFT declares the line absent."""
    from csstz.templates.learned import add_emission_lines

    base, tm, rng = _family_basis_and_renderer(11, waves, inst)
    lines = add_emission_lines(base, 10.0, ("OII",))
    z = rng.uniform(0.1, 1.3, 5)
    clean = np.einsum("nk,nkp->np", _family(rng, z.size), tm.render(z))
    err = np.full_like(clean, 0.7) * np.abs(clean).mean(axis=1, keepdims=True)
    noisy, err = _split(clean + err * rng.normal(size=clean.shape), waves), _split(err, waves)
    m = XcorrModel(lines, waves, lsf_sigma_pix=(inst.psf_sigma_pix, 2.5 * inst.psf_sigma_pix))
    f, w = m.prepare_spectra(noisy, err)
    every = np.tile(np.arange(m.z.size), (f.shape[0], 1))
    for k in (0, 1):
        ll, _ = m.loglike(f, w, k, mode="prior+ls+nested")
        b, _, _ = m.normal_equations(f, w, k)
        present = b[..., -1] != 0  # the FFT zeroes the line's equations where it is (nearly) off the bands
        assert present.mean() > 0.5
        loc, loc_n = m.local_loglike(f, w, k, every)
        np.testing.assert_allclose(loc[present], ll[:, 0][present], rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(loc_n[present], ll[:, 2][present], rtol=1e-9, atol=1e-6)
        # a few redshifts per spectrum, in any order: the same numbers, up to the amplitude floor (1% of the
        # largest least-squares amplitude over the redshifts given, which ill-conditioned far shifts can raise)
        pick = np.stack([np.argmax(ll[:, 0], axis=1) + d for d in (2, -1, 0)], axis=1).clip(0, m.z.size - 1)
        few, _ = m.local_loglike(f, w, k, pick)
        np.testing.assert_allclose(few, np.take_along_axis(ll[:, 0], pick, axis=1), rtol=0, atol=0.01)
    with pytest.raises(InputError, match="grid_index"):
        m.local_loglike(f, w, 0, every + 1)


def test_compiled_resampling_equals_the_sparse_overlap_formula(waves):
    """The numba resampling gives the flux-conserving overlap means and inverse-variance weights of the sparse
    products (reference implementation here), bit for bit, with masked pixels and a masked band."""
    from scipy import sparse

    grid = common_grid(waves)
    mats = {b: resampling_matrix(w, grid) for b, w in waves.items()}
    rng = np.random.default_rng(2)
    flux = {b: rng.normal(2.0, 1.0, (4, w.size)) for b, w in waves.items()}
    err = {b: rng.uniform(0.2, 2.0, (4, w.size)) for b, w in waves.items()}
    err["GV"][0, 50:90] = np.inf
    err["GI"][1] = np.nan
    flux["GI"][2, 10] = np.nan
    wsum = fsum = 0.0
    for b, op in mats.items():
        ok = np.isfinite(err[b]) & (err[b] > 0) & np.isfinite(flux[b])
        OT, O2T = op.T.tocsr(), sparse.csr_matrix(op.multiply(op)).T.tocsr()
        cover = (OT @ ok.T.astype(float)).T
        num = (OT @ np.where(ok, flux[b], 0.0).T).T
        vnum = (O2T @ (np.where(ok, err[b], 0.0) ** 2).T).T
        use = cover >= 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            vb = np.where(use, vnum / np.where(use, cover, 1.0) ** 2, np.inf)
            wb = np.where(use & (vb > 0), 1.0 / vb, 0.0)
            fb = np.where(use, num / np.where(use, cover, 1.0), 0.0)
        wsum, fsum = wsum + wb, fsum + wb * fb
    with np.errstate(divide="ignore", invalid="ignore"):
        f_ref = np.where(wsum > 0, fsum / np.where(wsum > 0, wsum, 1.0), 0.0)
    f, w = resample(flux, err, mats)
    np.testing.assert_array_equal(w, wsum)
    np.testing.assert_array_equal(f, f_ref)
    assert (w[1] > 0).sum() < (w[3] > 0).sum()  # the masked band carries no weight
    # bands of different row counts, or err unlike flux, are refused in one line (not read out of bounds)
    with pytest.raises(InputError, match="GI.flux"):
        resample(flux, {**err, "GI": err["GI"][:2]}, mats)
    with pytest.raises(InputError, match="GI.flux"):
        resample(
            {**flux, "GI": np.ones((2000, waves["GI"].size))}, {**err, "GI": np.ones((2000, waves["GI"].size))}, mats
        )


def test_relocation_finds_the_redshift_of_noiseless_spectra_from_an_offset_start(tmp_path, waves, inst):
    """PhysicsCurves.relocate: from a start 0.9 grid steps off, the locator likelihood at the LSF set the
    spectra were rendered with puts noiseless galaxies back at their redshift; the setting survives save/load,
    and a file without it (before 0.7.0) loads as 1, which relocates nothing."""
    import json

    import h5py

    from csstz.templates.learned import add_emission_lines
    from csstz.templates.physics import PhysicsCurves
    from csstz.templates.xcorr import lsf_bins, nz_log_prior

    base, _, rng = _family_basis_and_renderer(21, waves, inst)
    basis = add_emission_lines(base, 10.0, ("OII",))
    ph = PhysicsCurves(basis, waves, inst.psf_sigma_pix, "morphology", threads=1, locator_lsf_scale=0.5)
    assert ph.relocates
    k = 2
    centre = lsf_bins(np.array([inst.psf_sigma_pix]), inst.psf_sigma_pix)[1][k]
    tm = TemplateModel(waves, {b: centre * inst.band(b).dispersion_aa_per_pix for b in BANDS}, dlnz=0.01)
    z = rng.uniform(0.15, 1.3, 16)
    clean = np.einsum("nk,nkp->np", _family(rng, z.size), tm.render(z))  # SEDs of the family
    err = np.full_like(clean, 0.05) * np.abs(clean).mean(axis=1, keepdims=True)
    flux, err = _split(clean, waves), _split(err, waves)
    h = float(ph.grid_lnz[1] - ph.grid_lnz[0])
    flat = np.zeros(ph.grid_z.size)
    start = np.expm1(np.log1p(z) + 0.9 * h * rng.choice([-1.0, 1.0], z.size))
    got = ph.relocate(start, flux, err, np.full(z.size, k), flat)
    off = np.abs(np.log1p(got) - np.log1p(z)) / h
    assert np.max(off) < 0.1, off  # back at the truth (the start was 0.9 steps off)
    # a start whose window cannot reach the peak moves to the window's edge, not beyond
    far = np.expm1(np.log1p(z) + 6 * h)
    edge = np.abs(np.log1p(ph.relocate(far, flux, err, np.full(z.size, k), flat)) - np.log1p(z)) / h
    assert np.all((edge > 3.5) & (edge < 4.5))
    # at the grid's ends the window is cut, not slid inwards: a start on the first or last grid point moves at
    # most RELOCATE_HALF steps; starts off the grid stay where they are
    from csstz.templates.physics import RELOCATE_HALF

    ends = np.array([ph.grid_z[0], ph.grid_z[-1], ph.grid_z[-1] + 0.1, -0.5])
    moved = ph.relocate(ends, {b: v[:4] for b, v in flux.items()}, {b: v[:4] for b, v in err.items()}, None, flat)
    assert np.all(np.abs(np.log1p(moved[:2]) - np.log1p(ends[:2])) <= RELOCATE_HALF * h * (1 + 1e-9))
    np.testing.assert_array_equal(moved[2:], ends[2:])
    # non-finite starts stay; the prepared arrays give the same answer
    start[0] = np.nan
    again = ph.relocate(start, None, None, np.full(z.size, k), flat, prepared=ph.model.prepare_spectra(flux, err))
    assert np.isnan(again[0]) and np.allclose(again[1:], got[1:], rtol=0, atol=1e-12)
    # a prior term moves the peak the right way
    tilted = ph.relocate(got, flux, err, np.full(z.size, k), 1e3 * np.log1p(ph.grid_z))
    assert np.all(tilted >= got - 1e-12) and np.any(tilted > got + 1e-5)
    # save / load, and an older file without the setting
    path = ph.save(tmp_path / "phys.h5")
    assert PhysicsCurves.load(path).locator_lsf_scale == 0.5
    with h5py.File(path, "a") as f5:
        meta = json.loads(f5.attrs["physics"])
        del meta["locator_lsf_scale"]
        f5.attrs["physics"] = json.dumps(meta)
    old = PhysicsCurves.load(path)
    assert old.locator_lsf_scale == 1.0 and not old.relocates
    with pytest.raises(InputError, match="locator_lsf_scale"):
        PhysicsCurves(basis, waves, inst.psf_sigma_pix, locator_lsf_scale=-1.0)
    assert nz_log_prior(z, ph.grid_z).shape == ph.grid_z.shape
