"""Template-fitting baseline: recovers known redshifts, degrades gracefully with noise, rejects bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import Table
from scipy.optimize import nnls

from csstz.errors import InputError
from csstz.evaluate.metrics import coverage, sigma_nmad
from csstz.instrument import load_instrument
from csstz.io.spectra import BandSpectra, SpectraSet, write_spectra
from csstz.templates import fit as T
from csstz.templates.nnls import nnls_enumerate

BANDS = ("GV", "GI")
Z_TRUE = np.array([0.05, 0.137, 0.31, 0.52, 0.77, 0.93, 1.08, 1.26, 1.5])


@pytest.fixture(scope="module")
def inst():
    return load_instrument()


@pytest.fixture(scope="module")
def model(inst):
    waves = {b: inst.band(b).wave_aa for b in BANDS}
    return T.template_model_for(waves, inst)


def brute_force_spectrum(inst, z: float, coeff: np.ndarray) -> dict:
    """Independent rendering: template sum on a 0.25 A grid, Gaussian LSF by direct convolution,
    then the mean over each pixel's box. Returns band -> (L,) flux."""
    tw, tf = T.load_templates()
    out = {}
    for b in BANDS:
        band = inst.band(b)
        w, disp = band.wave_aa, band.dispersion_aa_per_pix
        sigma = inst.psf_sigma_pix * disp  # LSF sigma [A] = PSF sigma [px] x dispersion [A/px]
        fine = np.arange(w[0] - disp - 8 * sigma, w[-1] + disp + 8 * sigma, 0.25)
        sed = coeff @ np.array([np.interp(fine / (1 + z), tw, t) for t in tf]) / (1 + z)
        x = np.arange(-int(8 * sigma / 0.25), int(8 * sigma / 0.25) + 1) * 0.25
        g = np.exp(-0.5 * (x / sigma) ** 2)
        conv = np.convolve(sed, g / g.sum(), mode="same")
        edges = np.concatenate([w - 0.5 * disp, [w[-1] + 0.5 * disp]])
        idx = np.searchsorted(fine, edges)
        out[b] = np.array([conv[i:j].mean() for i, j in zip(idx[:-1], idx[1:])])
    return out


def make_set(fluxes: dict, errs: dict, inst, z=None) -> SpectraSet:
    n = next(iter(fluxes.values())).shape[0]
    bands = {
        b: BandSpectra(inst.band(b).wave_aa, fluxes[b].astype(np.float32), errs[b].astype(np.float32)) for b in fluxes
    }
    cat = Table({"TARGETID": np.arange(100, 100 + n, dtype=np.int64), "Z": np.zeros(n) if z is None else np.asarray(z)})
    return SpectraSet(bands, cat, {"instrument": inst.to_yaml()})


def random_coeffs(rng, n, k=5):
    c = rng.uniform(0, 1, (n, k)) * (rng.uniform(size=(n, k)) < 0.7)
    c[np.arange(n), rng.integers(0, k, n)] += 0.3  # at least one template on
    return c


def test_templates_loaded_from_kcorrect():
    wave, flux = T.load_templates()
    assert flux.shape[0] == 5 and flux.shape[1] == wave.size
    assert wave[0] < 1000 and wave[-1] > 20000  # covers 3810/2.6 .. 10571 A rest
    assert np.all(flux >= 0)


def test_render_matches_independent_convolution(inst, model):
    rng = np.random.default_rng(0)
    for z in (0.2, 1.1):
        c = rng.uniform(0.1, 1, 5)
        ref = brute_force_spectrum(inst, z, c)
        got = c @ model.render([z])[0]
        ref_all = np.concatenate([ref[b] for b in BANDS])
        # 0.25 A brute force vs the fine-grid LSF matrix: agree to < 1% of the spectrum's scale
        assert np.max(np.abs(got - ref_all)) < 0.01 * np.median(np.abs(ref_all))


def test_noiseless_own_templates_recovered(inst):
    """Random non-negative template mixtures at 9 redshifts in 0.05-1.5, rendered independently on the
    real GV/GI grids with the real LSF: fitted z within 1e-3 (1+z)."""
    rng = np.random.default_rng(1)
    coeffs = random_coeffs(rng, Z_TRUE.size)
    spectra = [brute_force_spectrum(inst, z, c) for z, c in zip(Z_TRUE, coeffs)]
    fluxes = {b: np.array([s[b] for s in spectra]) for b in BANDS}
    # tiny errors (1e-4 of the median flux) so that chi2 is well defined
    errs = {b: np.full_like(fluxes[b], 1e-4 * np.median(fluxes[b])) for b in BANDS}
    tab = T.fit_templates(make_set(fluxes, errs, inst, Z_TRUE), bands=BANDS)
    dz = np.abs(tab["Z"] - Z_TRUE) / (1 + Z_TRUE)
    assert np.all(dz < 1e-3), dz
    assert np.all(tab["ZWARN"] == 0)
    assert np.all(tab["ZERR"] > 0) and np.all(tab["NPIX"] == 926)
    assert list(tab["TARGETID"]) == list(range(100, 100 + Z_TRUE.size))


def test_grid_and_parabola_precision(model):
    """Exactly self-consistent noiseless models: the default grid gives ~1e-4 (1+z) or better."""
    rng = np.random.default_rng(2)
    z = rng.uniform(0.05, 1.5, 12)
    c = random_coeffs(rng, z.size)
    flux = np.einsum("nk,nkp->np", c, model.render(z))
    res = model.fit(flux, np.full_like(flux, 1e-3 * np.median(flux)))
    assert np.max(np.abs(res["z"] - z) / (1 + z)) < 1e-4
    assert model.dlnz == pytest.approx(T.DEFAULT_DLNZ, rel=1e-3)


def test_nnls_enumeration_is_exact():
    rng = np.random.default_rng(3)
    M, P, K = 200, 30, 5
    X = rng.standard_normal((M, P, K))
    y = rng.standard_normal((M, P))
    A = np.einsum("mpk,mpl->mkl", X, X)
    b = np.einsum("mpk,mp->mk", X, y)
    chi2, coeff = nnls_enumerate(A, b, np.einsum("mp,mp->m", y, y))
    for i in range(M):
        c_ref, r_ref = nnls(X[i], y[i])
        assert chi2[i] == pytest.approx(r_ref**2, rel=1e-8, abs=1e-10)
        np.testing.assert_allclose(coeff[i], c_ref, atol=1e-7)


def test_pruned_fit_equals_full_curve_minimum(model):
    """The pruning (exact NNLS only where it can matter) leaves the minimum unchanged."""
    rng = np.random.default_rng(4)
    z = rng.uniform(0.1, 1.4, 6)
    flux = np.einsum("nk,nkp->np", random_coeffs(rng, z.size), model.render(z))
    err = np.abs(flux).mean(axis=1, keepdims=True) / 2.0 * np.ones_like(flux)
    noisy = flux + err * rng.standard_normal(flux.shape)
    res = model.fit(noisy, err)
    full = model.chi2_curve(noisy, err)
    i = np.argmin(full, axis=1)
    np.testing.assert_allclose(np.log1p(res["z"]), model.lnz[i], atol=model.dlnz * 0.51)
    assert np.all(res["chi2_min"] <= full.min(axis=1) + 1e-6)


def test_noise_degrades_gracefully(model):
    """sigma_NMAD grows as the SNR drops; ZERR follows the scatter at moderate SNR."""
    rng = np.random.default_rng(5)
    n = 150
    z = rng.uniform(0.05, 1.5, n)
    flux = np.einsum("nk,nkp->np", random_coeffs(rng, n), model.render(z))
    nmad = []
    for snr in (20.0, 5.0, 1.5):
        err = np.abs(flux).mean(axis=1, keepdims=True) / snr * np.ones_like(flux)
        res = model.fit(flux + err * rng.standard_normal(flux.shape), err)
        assert np.all(np.isfinite(res["z"])) and np.all(res["zerr"] > 0)
        nmad.append(sigma_nmad(res["z"], z))
        if snr == 5.0:
            assert 0.45 < coverage(res["z"], res["zerr"], z) < 0.95
    assert nmad[0] < nmad[1] < nmad[2]
    assert nmad[0] < 1e-3 and nmad[2] < 0.05


def test_zwarn_bits(inst, model):
    rng = np.random.default_rng(6)
    P = model.n_pix
    flux = np.einsum("nk,nkp->np", random_coeffs(rng, 3), model.render([1.23, 1.30, 1.25]))
    err = np.full_like(flux, 1e-3 * np.median(flux))
    err[2, 10:] = np.inf  # only 10 usable pixels
    # z = 1.30 fitted on a grid 1.2-1.295: minimum at the edge; z = 1.23 inside it is fine
    m1 = T.TemplateModel(
        {b: inst.band(b).wave_aa for b in BANDS}, {b: T.lsf_sigma_aa(inst, b) for b in BANDS}, zmin=1.2, zmax=1.295
    )
    res = m1.fit(flux, err)
    assert res["zwarn"][0] == 0 and res["z"][0] == pytest.approx(1.23, abs=1e-3)
    assert res["zwarn"][1] & T.ZWARN_EDGE
    assert res["zwarn"][2] & T.ZWARN_FEW_PIXELS and math.isnan(res["z"][2])
    # pure noise: many comparable minima -> ambiguous
    noise = rng.standard_normal((4, P))
    res = model.fit(noise, np.ones((4, P)))
    assert np.all(res["zwarn"] & T.ZWARN_AMBIGUOUS)
    assert np.all(res["delta_chi2"] < T.SECOND_MIN_DCHI2)


def test_bad_input_raises(inst, model):
    P = model.n_pix
    ok = np.ones((2, P))
    with pytest.raises(InputError, match="err"):
        model.fit(ok, np.zeros((2, P)))
    bad = ok.copy()
    bad[1, 5] = np.nan
    with pytest.raises(InputError, match="flux"):
        model.fit(bad, ok)
    with pytest.raises(InputError, match="flux"):
        model.fit(np.ones((2, P - 1)), np.ones((2, P - 1)))
    waves = {b: inst.band(b).wave_aa for b in BANDS}
    sig = {b: 10.0 for b in BANDS}
    with pytest.raises(InputError, match="zmax"):
        T.TemplateModel(waves, sig, zmin=1.0, zmax=0.5)
    with pytest.raises(InputError, match="dlnz"):
        T.TemplateModel(waves, sig, dlnz=0.0)
    with pytest.raises(InputError, match="zmin"):
        T.TemplateModel(waves, sig, zmin=-0.5)
    fl = {b: np.ones((1, inst.band(b).n_pix)) for b in BANDS}
    sset = make_set(fl, fl, inst)
    with pytest.raises(InputError, match="bands"):
        T.fit_templates(sset, bands=("GU",))
    with pytest.raises(InputError, match="zmax"):
        T.fit_templates(sset, zmin=0.5, zmax=0.5)


def test_cli_fit_templates_roundtrip(tmp_path, inst, model):
    from csstz.cli import main
    from csstz.io.predictions import read_predictions

    rng = np.random.default_rng(7)
    z = np.array([0.2, 0.6, 1.0, 0.4])
    flux = np.einsum("nk,nkp->np", random_coeffs(rng, z.size), model.render(z))
    err = np.full_like(flux, 1e-3 * np.median(flux))
    n_gv = inst.band("GV").n_pix
    sset = make_set({"GV": flux[:, :n_gv], "GI": flux[:, n_gv:]}, {"GV": err[:, :n_gv], "GI": err[:, n_gv:]}, inst, z)
    sset.catalog["SPLIT"] = np.array(["train", "test", "test", "val"])
    path = tmp_path / "spec.h5"
    write_spectra(path, sset)
    out = tmp_path / "pred.fits"
    assert main(["fit-templates", str(path), "--out", str(out), "--split", "test"]) == 0
    tab = read_predictions(out)
    assert tab.meta["METHOD"] == "templates"
    assert list(tab["TARGETID"]) == [101, 102]
    np.testing.assert_allclose(tab["Z"], z[1:3], atol=1e-3 * 2)
    assert main(["fit-templates", str(path), "--out", str(tmp_path / "x.fits"), "--split", "nope"]) == 2
    assert main(["fit-templates", str(path), "--out", str(tmp_path / "x.fits"), "--bands", "GX"]) == 2
    assert not (tmp_path / "x.fits").exists()


def test_workers_give_same_answer(inst, model):
    rng = np.random.default_rng(8)
    n = 3 * T.GALAXY_BLOCK + 5
    z = rng.uniform(0.05, 1.5, n)
    flux = np.einsum("nk,nkp->np", random_coeffs(rng, n), model.render(z))
    err = np.abs(flux).mean(axis=1, keepdims=True) / 5.0 * np.ones_like(flux)
    flux = flux + err * rng.standard_normal(flux.shape)
    n_gv = inst.band("GV").n_pix
    sset = make_set({"GV": flux[:, :n_gv], "GI": flux[:, n_gv:]}, {"GV": err[:, :n_gv], "GI": err[:, n_gv:]}, inst)
    one = T.fit_templates(sset, workers=1)
    two = T.fit_templates(sset, workers=2)
    np.testing.assert_allclose(one["Z"], two["Z"], rtol=1e-6)
    np.testing.assert_array_equal(one["ZWARN"], two["ZWARN"])


def test_real_simulator_noiseless_recovers_z(inst):
    """A template-built SED through the real CSST simulator (noiseless): z within 1e-3 (1+z)."""
    api = pytest.importorskip("csstz.simulate.api")
    tw, tf = T.load_templates()
    wave = np.arange(2000.0, 11000.0, 1.0)
    z = np.array([0.1, 0.45, 0.8, 1.2])
    rng = np.random.default_rng(9)
    c = rng.uniform(0.2, 1.0, (z.size, 5))
    sed = np.stack(
        [(ci @ np.array([np.interp(wave / (1 + zi), tw, t) for t in tf])) / (1 + zi) for zi, ci in zip(z, c)]
    )
    sed *= 3.0 / sed[:, (wave > 6900) & (wave < 7100)].mean(axis=1, keepdims=True)  # ~3e-17 at 7000 A
    n = z.size
    bands, snr = api.simulate_arrays(
        wave,
        sed,
        np.arange(n),
        np.zeros(n),
        np.ones(n),
        np.ones(n),
        np.zeros(n),
        noiseless=True,
        bands=BANDS,
        instrument=inst,
    )
    sset = SpectraSet(bands, Table({"TARGETID": np.arange(n), "Z": z}), {})
    tab = T.fit_templates(sset, bands=BANDS, instrument=inst)
    assert np.all(np.abs(tab["Z"] - z) / (1 + z) < 1e-3), tab["Z"]
    assert np.all(tab["ZWARN"] == 0)


def test_galaxy_lsf_width(inst):
    n_grid, k = T.sersic_width_factor_table(inst.sersic_truncation_hlr)
    # exponential disc: projected IQR-equivalent sigma ~0.83 r_e; de Vaucouleurs more concentrated
    assert np.interp(1.0, n_grid, k) == pytest.approx(0.83, abs=0.02)
    assert np.interp(4.0, n_grid, k) < np.interp(1.0, n_grid, k)
    sig = T.galaxy_lsf_sigma_pix(inst, [0.0, 1.0, 1.0, 1.0], [1.0] * 4, [1.0, 1.0, 0.5, 0.5], [0.0, 0.0, 0.0, 90.0])
    assert sig[0] == pytest.approx(inst.psf_sigma_pix)  # point source
    gal = np.sqrt(sig**2 - inst.psf_sigma_pix**2)
    # a round galaxy and one elongated along the dispersion axis project the same; across: b/a times narrower
    assert gal[1] == pytest.approx(gal[2]) and gal[3] == pytest.approx(0.5 * gal[2])
    assert gal[1] == pytest.approx(np.interp(1.0, n_grid, k) / inst.pixel_scale_arcsec, rel=1e-6)
    with pytest.raises(InputError):
        T.galaxy_lsf_sigma_pix(inst, [1.0], [1.0], [0.0], [0.0])


def test_morphology_lsf_helps_large_aligned_galaxies(inst):
    """2" exponential discs aligned with the dispersion, real simulator, noiseless: the
    morphology-aware LSF halves the redshift error of the point-source LSF."""
    api = pytest.importorskip("csstz.simulate.api")
    tw, tf = T.load_templates()
    wave = np.arange(2000.0, 11000.0, 1.0)
    rng = np.random.default_rng(10)
    n = 16
    z = rng.uniform(0.1, 1.4, n)
    c = rng.uniform(0.2, 1.0, (n, 5))
    sed = np.stack(
        [(ci @ np.array([np.interp(wave / (1 + zi), tw, t) for t in tf])) / (1 + zi) for zi, ci in zip(z, c)]
    )
    sed *= 3.0 / sed[:, (wave > 6900) & (wave < 7100)].mean(axis=1, keepdims=True)
    shape = dict(SHAPE_R=np.full(n, 2.0), SERSIC=np.ones(n), BA=np.full(n, 0.5), PA=np.zeros(n))
    bands, _ = api.simulate_arrays(
        wave,
        sed,
        np.arange(n),
        shape["SHAPE_R"],
        shape["SERSIC"],
        shape["BA"],
        shape["PA"],
        noiseless=True,
        bands=BANDS,
        instrument=inst,
    )
    sset = SpectraSet(bands, Table({"TARGETID": np.arange(n), "Z": z, **shape}), {})
    point = T.fit_templates(sset, instrument=inst)
    morph = T.fit_templates(sset, instrument=inst, lsf="morphology")
    err_p = np.median(np.abs(point["Z"] - z) / (1 + z))
    err_m = np.median(np.abs(morph["Z"] - z) / (1 + z))
    assert err_m < 0.7 * err_p, (err_m, err_p)
    assert np.all(morph["LSF_SIGMA_PIX"] > 5 * inst.psf_sigma_pix)
    with pytest.raises(InputError, match="lsf"):
        T.fit_templates(sset, lsf="wide")


def test_pz_from_the_chi2_curve_is_calibrated(inst, model):
    """p(z) = exp(-(chi2 - chi2_min)/2) normalised per unit z: equal to the one from the exact (unpruned) curve,
    its mode at Z, and calibrated (PIT, coverage) for spectra made of the fitted templates plus their noise."""
    from csstz.templates import pdf

    rng = np.random.default_rng(9)
    n = 120
    z = rng.uniform(0.1, 1.4, n)
    flux = np.einsum("nk,nkp->np", random_coeffs(rng, n), model.render(z))
    err = np.abs(flux).mean(axis=1, keepdims=True) / 4.0 * np.ones_like(flux)
    noisy = flux + err * rng.standard_normal(flux.shape)
    res = model.fit(noisy, err)
    pz = res["pz"]
    assert pz.shape == (n, model.z.size) and pz.dtype == np.float32
    np.testing.assert_allclose(np.trapezoid(pz.astype(float), model.z, axis=1), 1.0, atol=1e-5)
    exact = pdf.from_chi2(model.chi2_curve(noisy[:8], err[:8]), model.z)
    np.testing.assert_allclose(pz[:8], exact, atol=1e-4 * exact.max())
    ok = res["zwarn"] == 0
    np.testing.assert_allclose(pdf.mode(pz[ok], model.z), res["z"][ok], atol=2 * model.dlnz * 2.6)
    u = pdf.pit(pz, model.z, z)
    lo, hi = pdf.central_interval(pz, model.z, pdf.LEVEL_68)
    cov68 = np.mean((lo <= z) & (z <= hi))
    assert 0.55 < cov68 < 0.8, cov68
    assert np.mean((u > 0.05) & (u < 0.95)) > 0.8
    # a failed fit has no p(z)
    err[0, 10:] = np.inf
    res = model.fit(noisy[:2], err[:2])
    assert np.isnan(res["pz"][0]).all() and np.isfinite(res["pz"][1]).all()


def test_fit_templates_file_writes_pz(tmp_path, inst, model):
    from csstz.io.predictions import read_predictions
    from csstz.zwarn import ZWARN

    rng = np.random.default_rng(10)
    z = np.array([0.3, 0.9, 0.6])
    flux = np.einsum("nk,nkp->np", random_coeffs(rng, z.size), model.render(z))
    err = np.full_like(flux, 0.05 * np.median(flux))
    err[2, 10:] = np.inf  # too few pixels: flagged, no p(z)
    n_gv = inst.band("GV").n_pix
    sset = make_set({"GV": flux[:, :n_gv], "GI": flux[:, n_gv:]}, {"GV": err[:, :n_gv], "GI": err[:, n_gv:]}, inst, z)
    path = tmp_path / "spec.h5"
    write_spectra(path, sset)
    out = tmp_path / "pred.fits"
    tab = T.fit_templates_file(path, out, progress=False)
    back = read_predictions(out)
    np.testing.assert_array_equal(back.meta["PZ_GRID"], model.z)
    np.testing.assert_array_equal(back.meta["PZ"], tab.meta["PZ"])
    assert back["ZWARN"][2] & ZWARN.LITTLE_COVERAGE and np.isnan(back.meta["PZ"][2]).all()
    assert np.all(back["ZWARN"][:2] == 0)
    np.testing.assert_allclose(back["ZERR"], tab["ZERR"])  # ZERR unchanged: Delta chi2 = 1
