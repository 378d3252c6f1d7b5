"""Physics and contracts of the slitless simulator (real GalSim rendering throughout)."""

from __future__ import annotations

import numpy as np
import pytest

from csstz.errors import InputError
from csstz.instrument import load_instrument
from csstz.simulate.api import simulate_arrays, simulate_source
from csstz.simulate.limits import count_rate_e_per_s, limiting_magnitude
from csstz.units import abmag_to_flam17

INST = load_instrument()
WAVE = np.arange(2300.0, 10800.0, 1.0)
BANDS = ("GU", "GV", "GI")


def flat_fnu(mag=21.0):
    return abmag_to_flam17(mag, WAVE)


def line_sed(center_aa, flux_line=400.0, sigma_aa=1.0, cont=0.05, wave=None):
    """Weak continuum + narrow Gaussian emission line of total flux ``flux_line`` [1e-17 erg/s/cm^2]."""
    w = WAVE if wave is None else wave
    return cont + flux_line * np.exp(-0.5 * ((w - center_aa) / sigma_aa) ** 2) / (np.sqrt(2 * np.pi) * sigma_aa)


def one(flam, hlr=0.0, n=1.0, ba=1.0, pa=0.0, noiseless=True, tid=0, seed=0, bands=BANDS, wave=None, **kw):
    w = WAVE if wave is None else wave
    spec, snr = simulate_arrays(
        w,
        np.atleast_2d(flam),
        np.array([tid]),
        [hlr],
        [n],
        [ba],
        [pa],
        seed=seed,
        noiseless=noiseless,
        bands=bands,
        **kw,
    )
    return spec, snr


# -- count rates and flux conservation ---------------------------------------------------------
@pytest.mark.parametrize("band,expected", [("GU", 9.2), ("GV", 19.5), ("GI", 17.5)])
def test_ab23_point_source_count_rate(band, expected):
    """Check figure of the instrument file ([TP] in csst.yaml): AB = 23 flat f_nu -> 9.2 / 19.5 / 17.5 e-/s.

    Within 3% (2D image).
    """
    spec, _ = one(flat_fnu(23.0), bands=(band,), save_2d=True)
    rate = spec[band].image2d[0].sum() / INST.total_exptime_s
    assert rate == pytest.approx(expected, rel=0.03)
    # and the 2D image conserves the throughput integral to 1% (flux outside the image is < 1%)
    assert rate == pytest.approx(count_rate_e_per_s(INST.band(band), INST), rel=0.01)


@pytest.mark.parametrize("hlr,n,ba,pa", [(0.0, 1.0, 1.0, 0.0), (0.4, 1.0, 0.6, 30.0), (0.6, 4.0, 0.7, 60.0)])
def test_noiseless_extraction_recovers_smooth_sed(hlr, n, ba, pa):
    """Noiseless extraction returns f_lambda within 2% where T > half its peak (point and extended)."""
    sed = flat_fnu(21.0) * (WAVE / 6000.0) ** 0.7  # smooth, sloped
    spec, _ = one(sed, hlr, n, ba, pa)
    for b in BANDS:
        band = INST.band(b)
        good = band.throughput(band.wave_aa) > 0.5 * band.peak_throughput
        ref = np.interp(band.wave_aa, WAVE, sed)
        ratio = spec[b].flux[0][good] / ref[good]
        assert np.max(np.abs(ratio - 1)) < 0.02, (b, np.max(np.abs(ratio - 1)))


# -- noise --------------------------------------------------------------------------------------
def test_quoted_errors_match_scatter_over_realisations():
    """Per-pixel errors within 10% of the scatter over 240 independent realisations."""
    n_real = 240
    sed = flat_fnu(20.5)
    flux = np.tile(sed, (n_real, 1))
    spec, _ = simulate_arrays(
        WAVE,
        flux,
        np.arange(n_real),
        np.full(n_real, 0.3),
        np.full(n_real, 1.5),
        np.full(n_real, 0.7),
        np.full(n_real, 20.0),
        seed=7,
        bands=("GV", "GI"),
    )
    for b in ("GV", "GI"):
        band = INST.band(b)
        good = band.throughput(band.wave_aa) > 0.3 * band.peak_throughput
        scatter = spec[b].flux[:, good].std(axis=0, ddof=1)
        quoted = np.median(spec[b].err[:, good], axis=0)
        ratio = quoted / scatter
        # each pixel: the std of 240 draws is known to ~4.6%; the median over pixels to much better
        assert abs(np.median(ratio) - 1) < 0.05, (b, np.median(ratio))
        assert np.mean(np.abs(ratio - 1) < 0.10) > 0.9, (b, np.mean(np.abs(ratio - 1) < 0.10))
        # and the mean of the realisations is the truth (no bias from the noise-dependent weights)
        ref = np.interp(band.wave_aa[good], WAVE, sed)
        assert np.median(spec[b].flux[:, good].mean(axis=0) / ref) == pytest.approx(1.0, abs=0.02)


def test_exposure_modes_agree():
    """Drawing the 4 exposures one by one and the exact summed draw give the same mean and variance."""
    band = INST.band("GI")
    from csstz.simulate.noise import add_noise, background_variance_e2

    expected = np.full((50, 400), 30.0)
    rng = np.random.default_rng(3)
    a = add_noise(expected, band, INST, rng, "summed")
    b = add_noise(expected, band, INST, rng, "each")
    var_expected = 30.0 + background_variance_e2(band, INST)
    for img in (a, b):
        assert img.mean() == pytest.approx(30.0, abs=0.5)
        assert img.var() == pytest.approx(var_expected, rel=0.03)


def test_gaussian_above_threshold_keeps_noise_statistics():
    """The summed mode's Gaussian above GAUSS_ABOVE_E: exact below, same mean/variance and ~same CDF above."""
    from scipy import stats

    from csstz.simulate.noise import GAUSS_ABOVE_E, add_noise, background_e, background_variance_e2

    # GU: sky + dark (23 e-) + a faint source stays below the threshold -> bit-identical to the exact draw
    gu = INST.band("GU")
    low = np.full((33, 460), 20.0)
    assert low.max() + background_e(gu, INST) < GAUSS_ABOVE_E
    a = add_noise(low, gu, INST, np.random.default_rng(5))
    b = add_noise(low, gu, INST, np.random.default_rng(5), gauss_above_e=None)
    assert np.array_equal(a, b)
    # GV: 140 e- of sky + dark + 10 e- of source, above the threshold: compare with the exact Poisson draw
    gv = INST.band("GV")
    expected = np.full((400, 500), 10.0)
    fast = add_noise(expected, gv, INST, np.random.default_rng(6)).ravel()
    exact = add_noise(expected, gv, INST, np.random.default_rng(7), gauss_above_e=None).ravel()
    var = 10.0 + background_variance_e2(gv, INST)
    for x in (fast, exact):
        assert x.mean() == pytest.approx(10.0, abs=4 * np.sqrt(var / x.size))
        assert x.var() == pytest.approx(var, rel=4 * np.sqrt(2 / x.size))
    # the two CDFs differ by 0.0025 at most (module docstring); a 2-sample KS of 2e5 draws sees < 0.01
    assert stats.ks_2samp(fast, exact).statistic < 0.01


# -- wavelength solution and resolution -----------------------------------------------------------
def _line_centroid_pix(flux, center_guess, half=12):
    i0 = int(round(center_guess))
    sl = slice(i0 - half, i0 + half + 1)
    y = flux[sl] - np.median(flux)
    x = np.arange(sl.start, sl.stop)
    return float((x * y).sum() / y.sum())


@pytest.mark.parametrize("frac", [0.0, 0.25, 0.5, 0.73])
def test_line_lands_at_subpixel_position(frac):
    """A narrow line at pixel i + frac is extracted at i + frac (to << 0.5 px) in every band."""
    fine = np.arange(2300.0, 10800.0, 0.25)
    for b, i in (("GU", 200), ("GV", 230), ("GI", 150)):
        band = INST.band(b)
        lam = band.wave_aa[i] + frac * band.dispersion_aa_per_pix
        spec, _ = one(line_sed(lam, wave=fine), wave=fine, bands=(b,))
        c = _line_centroid_pix(spec[b].flux[0].astype(float), i + frac)
        assert abs(c - (i + frac)) < 0.1, (b, frac, c)


def _fwhm_aa(flux, wave):
    y = flux - np.median(flux)
    k = int(np.argmax(y))
    half = y[k] / 2
    lo = k
    while y[lo] > half:
        lo -= 1
    hi = k
    while y[hi] > half:
        hi += 1
    # linear interpolation at both crossings
    xl = lo + (half - y[lo]) / (y[lo + 1] - y[lo])
    xh = hi - 1 + (half - y[hi - 1]) / (y[hi] - y[hi - 1])
    return (xh - xl) * (wave[1] - wave[0])


@pytest.mark.parametrize("band_name", BANDS)
def test_point_source_resolution_at_band_centre(band_name):
    band = INST.band(band_name)
    lam = 0.5 * (band.wave_min_aa + band.wave_max_aa)
    fine = np.arange(2300.0, 10800.0, 0.25)
    spec, _ = one(line_sed(lam, sigma_aa=0.5, wave=fine), wave=fine, bands=(band_name,))
    r = lam / _fwhm_aa(spec[band_name].flux[0].astype(float), band.wave_aa)
    assert r >= 200, r


def test_elongated_galaxy_along_dispersion_broadens_lines():
    """An elongated galaxy aligned with the dispersion: broader line than the same galaxy turned 90 deg."""
    band = INST.band("GV")
    lam = 5200.0
    fine = np.arange(2300.0, 10800.0, 0.25)
    sed = line_sed(lam, wave=fine)
    w = {}
    for pa in (0.0, 90.0):
        spec, _ = one(sed, 0.6, 1.0, 0.3, pa, wave=fine, bands=("GV",))
        w[pa] = _fwhm_aa(spec["GV"].flux[0].astype(float), band.wave_aa)
    point, _ = one(sed, wave=fine, bands=("GV",))
    w_point = _fwhm_aa(point["GV"].flux[0].astype(float), band.wave_aa)
    assert w[0.0] > 2.0 * w[90.0], w
    assert w[90.0] > w_point  # even across the dispersion the galaxy's minor axis adds a little


# -- randomness -----------------------------------------------------------------------------------
def test_seed_reproducibility_independence_and_single_regeneration():
    n = 6
    flux = np.tile(flat_fnu(21.5), (n, 1))
    args = (WAVE, flux, np.arange(100, 100 + n), np.full(n, 0.2), np.full(n, 1.0), np.full(n, 0.8), np.zeros(n))
    a, snr_a = simulate_arrays(*args, seed=11, bands=("GV", "GI"))
    b, snr_b = simulate_arrays(*args, seed=11, bands=("GV", "GI"))
    c, _ = simulate_arrays(*args, seed=12, bands=("GV", "GI"))
    truth, _ = simulate_arrays(*args, noiseless=True, bands=("GV", "GI"))
    for band in ("GV", "GI"):
        assert np.array_equal(a[band].flux, b[band].flux)
        assert np.array_equal(a[band].err, b[band].err)
        assert not np.array_equal(a[band].flux, c[band].flux)
        # identical inputs, different TARGETIDs: independent noise (correlation ~ 0 +- 0.05 over ~460 pixels)
        resid = (a[band].flux - truth[band].flux) / a[band].err  # in sigma: edge pixels do not dominate
        corr = np.corrcoef(resid[0], resid[1])[0, 1]
        assert abs(corr) < 0.2, corr
    # any single source alone, and with other bands requested, reproduces its row
    alone, _ = simulate_arrays(WAVE, flux[3:4], np.array([103]), [0.2], [1.0], [0.8], [0.0], seed=11, bands=("GI",))
    assert np.array_equal(alone["GI"].flux[0], a["GI"].flux[3])


def test_save_2d_does_not_change_spectra_and_has_fixed_shape():
    res = simulate_source(WAVE, flat_fnu(21.0), 0.3, 1.0, 0.8, 10.0, INST, bands=("GV",), targetid=5, seed=1)
    res2 = simulate_source(
        WAVE, flat_fnu(21.0), 0.3, 1.0, 0.8, 10.0, INST, bands=("GV",), targetid=5, seed=1, save_2d=True
    )
    assert np.array_equal(res["GV"].flux, res2["GV"].flux)
    h = INST.image2d_half_height_pix
    assert res2["GV"].image2d.shape == (2 * h + 1, INST.band("GV").n_pix + 2 * h)


# -- input validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,kwargs",
    [
        ("SHAPE_R", dict(hlr=-0.1)),
        ("BA", dict(ba=0.0)),
        ("BA", dict(ba=1.2)),
        ("SERSIC", dict(n=7.0)),
        ("SERSIC", dict(n=0.1)),
        ("PA", dict(pa=np.nan)),
    ],
)
def test_bad_morphology_names_field_and_row(field, kwargs):
    base = dict(hlr=0.2, n=1.0, ba=0.5, pa=0.0)
    base.update(kwargs)
    flux = np.tile(flat_fnu(), (2, 1))
    with pytest.raises(InputError) as exc:
        simulate_arrays(
            WAVE, flux, np.array([1, 2]), [0.2, base["hlr"]], [1.0, base["n"]], [0.5, base["ba"]], [0.0, base["pa"]]
        )
    assert field in str(exc.value) and "row 1" in str(exc.value)


def test_bad_flux_wave_and_ids():
    flux = np.tile(flat_fnu(), (2, 1))
    ok = ([0.1, 0.1], [1.0, 1.0], [0.5, 0.5], [0.0, 0.0])
    bad = flux.copy()
    bad[1, 500] = np.inf
    with pytest.raises(InputError, match="FLUX.*row 1"):
        simulate_arrays(WAVE, bad, np.array([1, 2]), *ok)
    with pytest.raises(InputError, match="FLUX"):
        simulate_arrays(WAVE, flux[:, :-1], np.array([1, 2]), *ok)
    with pytest.raises(InputError, match="strictly increasing"):
        simulate_arrays(WAVE[::-1], flux, np.array([1, 2]), *ok)
    with pytest.raises(InputError, match="duplicate"):
        simulate_arrays(WAVE, flux, np.array([3, 3]), *ok)
    with pytest.raises(InputError, match="must cover"):
        simulate_arrays(WAVE[WAVE > 3000], flux[:, WAVE > 3000], np.array([1, 2]), *ok)


# -- limiting magnitudes --------------------------------------------------------------------------
def test_limiting_magnitudes_match_published_definition():
    """Single 150 s exposure, 5-px aperture ~ 23.2/23.4/23.2 (Gong+19); 4 x 150 s ~ 24.0/24.4/24.2."""
    pub = {"GU": 23.2, "GV": 23.4, "GI": 23.2}
    deep = {"GU": 24.0, "GV": 24.4, "GI": 24.2}
    for b in BANDS:
        band = INST.band(b)
        assert limiting_magnitude(band, INST, aperture_rows=5, n_exposures=1) == pytest.approx(pub[b], abs=0.2)
        assert limiting_magnitude(band, INST, aperture_rows=5) == pytest.approx(deep[b], abs=0.25)
        # deeper with more exposure time: 4x time -> ~0.75 mag in the background limit
        gain = limiting_magnitude(band, INST, aperture_rows=5) - limiting_magnitude(
            band, INST, aperture_rows=5, n_exposures=1
        )
        assert 0.6 < gain < 0.8
    with pytest.raises(InputError, match="exptime_s"):
        limiting_magnitude(INST.band("GV"), INST, exptime_s=0)


def test_shape_r_is_the_major_axis_half_light_radius():
    """SHAPE_R (LS DR9 convention) is the semi-major axis of the half-light ellipse: half the light
    falls inside the ellipse (a, b) = (SHAPE_R, BA * SHAPE_R), whatever BA."""
    from importlib import resources

    from csstz.instrument import parse_instrument
    from csstz.simulate.render import render_stamp

    text = resources.files("csstz.instrument").joinpath("data", "csst.yaml").read_text()
    sharp = parse_instrument(text.replace("fwhm_arcsec: 0.3", "fwhm_arcsec: 0.02"))  # ~no PSF
    hlr, scale = 0.8, sharp.pixel_scale_arcsec
    for ba in (1.0, 0.6, 0.3):
        st = render_stamp(hlr, 1.0, ba, 0.0, sharp)
        y, x = np.mgrid[-st.half : st.half + 1, -st.half : st.half + 1]
        a = hlr / scale
        inside = (x / a) ** 2 + (y / (ba * a)) ** 2 <= 1.0
        assert st.image[inside].sum() / st.image.sum() == pytest.approx(0.5, abs=0.03), ba


# -- ZERR_CRB and flux_noiseless -------------------------------------------------------------------
def test_noiseless_spectrum_and_crb_from_simulate_arrays():
    """flux_noiseless equals a noiseless run bit for bit; ZERR_CRB matches finite differences through the simulator."""
    from csstz.simulate.crb import zerr_crb_simulator

    z = np.array([0.4, 0.9, 0.4])
    # lines of a few hundred A equivalent width (a line far brighter than its continuum changes the Horne
    # weights column by column, which the fast bound does not follow: docs/crb.md)
    flux = np.stack(
        [
            line_sed(6563.0 * (1 + z[0]), 60.0, 3.0, cont=0.3),
            line_sed(5007.0 * (1 + z[1]), 60.0, 3.0, cont=0.3),
            flat_fnu(21.0),
        ]
    )
    args = (WAVE, flux, np.array([7, 8, 9]), [0.0, 0.4, 0.5], [1.0, 2.5, 1.0], [1.0, 0.7, 0.9], [0.0, 30.0, 0.0])
    noisy, cols = simulate_arrays(*args, seed=4, z=z, want_noiseless=np.array([True, True, False]))
    clean, _ = simulate_arrays(*args, seed=4, noiseless=True)
    plain, cols0 = simulate_arrays(*args, seed=4)
    assert "ZERR_CRB" not in cols0 and plain["GV"].flux_noiseless is None
    for b in BANDS:
        assert np.array_equal(noisy[b].flux, plain[b].flux)  # the noisy spectra do not change
        assert np.array_equal(noisy[b].flux_noiseless[:2], clean[b].flux[:2])
        assert np.isnan(noisy[b].flux_noiseless[2]).all()
    zc = cols["ZERR_CRB"]
    assert np.isfinite(zc[:2]).all() and (zc[:2] > 0).all()
    assert zc[2] == np.inf  # flat f_nu: a power law in f_lambda, whose stretch is an amplitude change
    for i in range(2):
        ref = zerr_crb_simulator(
            WAVE,
            flux[i],
            z[i],
            args[3][i],
            args[4][i],
            args[5][i],
            args[6][i],
            INST,
            err={b: noisy[b].err[i] for b in ("GV", "GI")},
        )
        assert zc[i] == pytest.approx(ref, rel=0.03)
    # only 1 + z enters (dm/dz = dm/dln s / (1 + z)): at fixed spectra ZERR_CRB / (1 + z) stays
    _, cols2 = simulate_arrays(*args, seed=4, z=2 * z + 1)
    np.testing.assert_allclose(cols2["ZERR_CRB"][:2] / (2 + 2 * z[:2]), zc[:2] / (1 + z[:2]), rtol=1e-9)
    with pytest.raises(InputError, match="Z"):
        simulate_arrays(*args, z=z[:2])


def test_snr_median_is_the_median_over_each_rows_valid_pixels():
    from csstz.simulate.extract import snr_median

    rng = np.random.default_rng(0)
    flux = rng.normal(1.0, 1.0, (300, 37))
    err = rng.uniform(0.5, 2.0, (300, 37))
    err[rng.random(err.shape) < 0.3] = np.inf  # masked pixels
    err[5] = np.inf  # no valid pixel
    flux[7, 3] = np.nan
    err[9, :36] = np.nan  # one valid pixel
    err[9, 36] = 1.0
    err[11, 10] = 0.0
    valid = np.isfinite(err) & (err > 0) & np.isfinite(flux)
    expected = np.array([np.median(f[v] / e[v]) if v.any() else np.nan for f, e, v in zip(flux, err, valid)])
    got = snr_median(flux, err)
    np.testing.assert_array_equal(got, expected)  # NaN where expected is NaN
    assert np.isnan(snr_median(np.zeros((3, 0)), np.ones((3, 0)))).all()
    assert np.isnan(got[5]) and got[9] == flux[9, 36]
