"""The default p(z) estimator end to end on a real (small) embedded build: train, calibrate, predict."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from csstz.build import build_dataset  # noqa: E402
from csstz.calibrate import fit_temperature  # noqa: E402
from csstz.cli import main  # noqa: E402
from csstz.config import PzConfig, TrainConfig  # noqa: E402
from csstz.io.predictions import read_predictions  # noqa: E402
from csstz.io.spectra import read_catalog, read_spectra, split_rows  # noqa: E402
from csstz.pipeline import train_and_calibrate  # noqa: E402
from csstz.schema import PZ_FILE, RUN_FORMAT_VERSION  # noqa: E402

TINY_PZ = PzConfig(members=2, hidden=4, dilations=(1, 2), batch_size=64, max_samples=640, eval_every=320, threads=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("pzdata") / "d.h5"
    build_dataset(path, 400, seed=3, chunk=200, progress=False)
    return path


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("pzrun") / "run"
    summary = train_and_calibrate(dataset, out, TrainConfig(estimator="pz", seed=0), pz=TINY_PZ)
    return out, summary


def test_run_directory_contract(run, dataset):
    out, s = run
    assert s["estimator"] == "pz" and s["run_format"] == RUN_FORMAT_VERSION
    assert s["noise"].startswith("fresh draw")  # the build stores flux_noiseless for train/val
    for name in (PZ_FILE, "pz_physics.h5", "pz_locator.fits", "calibration.json", "summary.json", "config.yaml"):
        assert (out / name).is_file(), name
    payload = torch.load(out / PZ_FILE, weights_only=True)  # state_dict + config + version, no pickle
    assert payload["kind"] == "pz" and "csstz_version" in payload
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["method"] == "temperature+pit_map" and cal["temperature"] > 0
    assert np.isfinite(cal["ood_threshold"]) and cal["ood_quantile"] == TINY_PZ.ood_quantile
    m = cal["pit_map"]
    # 40 validation spectra: one SNR bin (fewer than 2 x PIT_MAP_MIN_N), holding all of them
    assert len(m["maps"]) == len(m["snr_edges"]) - 1 == 1 and sum(m["n"]) == split_rows(dataset, "val").size
    # the learning curve: validation point metrics at every evaluation, from the untrained physics posterior on
    hist = s["fit"]["history"]
    assert hist[0]["samples"] == 0 and len(hist) >= 2
    assert all(0.0 <= r["val_eta"] <= 1.0 and r["val_sigma_nmad"] > 0 for r in hist)
    assert set(cal["val_coverage"]) == {"before", "temperature", "temperature+pit_map"}


def test_predictions_carry_a_normalised_pz(run, dataset, tmp_path):
    out, _ = run
    pred = tmp_path / "pred.fits"
    assert main(["predict", str(out), str(dataset), "--split", "test", "--out", str(pred)]) == 0
    tab = read_predictions(pred)
    pz, grid = tab.meta["PZ"], tab.meta["PZ_GRID"]
    rows = split_rows(dataset, "test")
    assert pz.shape == (rows.size, grid.size) and np.all(np.diff(grid) > 0)
    np.testing.assert_allclose(np.trapezoid(pz, grid, axis=1), 1.0, rtol=1e-3)
    assert np.all(tab["Z_LO68"] <= tab["Z_HI68"]) and np.all(tab["ZERR"] > 0)
    assert np.all(tab["ZERR_EPISTEMIC"] >= 0) and np.all(tab["ZERR_ALEATORIC"] > 0)
    # bright spectra: the physics term alone already finds the redshift
    cat = read_catalog(dataset)[rows]
    bright = np.asarray(cat["SNR_GI"]) > 5
    dz = np.abs(np.asarray(tab["Z"]) - np.asarray(cat["Z"])) / (1 + np.asarray(cat["Z"]))
    assert bright.sum() >= 5 and np.mean(dz[bright] < 0.02) >= 0.8


def test_other_run_format_and_wrong_network_are_refused(run, dataset, tmp_path, capsys):
    out, _ = run
    old = tmp_path / "old_run"
    shutil.copytree(out, old)
    summary = json.loads((old / "summary.json").read_text())
    summary["run_format"] = RUN_FORMAT_VERSION - 1
    (old / "summary.json").write_text(json.dumps(summary))
    assert main(["predict", str(old), str(dataset), "--out", str(tmp_path / "p.fits")]) == 2
    err = capsys.readouterr().err.strip()
    assert "run format" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.fits").exists()
    assert main(["predict", str(out), str(dataset), "--model", "bnn", "--out", str(tmp_path / "q.fits")]) == 2
    assert "pz" in capsys.readouterr().err


def test_training_draws_fresh_noise(run, dataset):
    """Two reads of the same training rows differ (fresh noise); the stored noisy flux does not."""
    from csstz.templates.physics import PhysicsCurves
    from csstz.train.pz_run import train_batches

    out, _ = run
    phys = PhysicsCurves.load(out / "pz_physics.h5", threads=1)
    rows = split_rows(dataset, "train")[:64]
    z = np.asarray(read_catalog(dataset)["Z"])[rows]
    bands = phys.bands
    a = next(train_batches(dataset, rows, bands, phys, None, z, 64, seed=0, noiseless=True))
    b = next(train_batches(dataset, rows, bands, phys, None, z, 64, seed=1, noiseless=True))
    c = next(train_batches(dataset, rows, bands, phys, None, z, 64, seed=0, noiseless=False))
    d = next(train_batches(dataset, rows, bands, phys, None, z, 64, seed=1, noiseless=False))
    order_a, order_b = np.argsort(a.z), np.argsort(b.z)
    assert not np.allclose(a.curves[order_a], b.curves[order_b])
    np.testing.assert_allclose(c.curves[np.argsort(c.z)], d.curves[np.argsort(d.z)], atol=1e-5)
    # the noise level of a draw is the stored error: (draw - noiseless) / err ~ N(0, 1)
    sp = read_spectra(dataset, bands=bands, rows=rows, with_noiseless=True)
    e = sp.bands[bands[-1]].err
    ok = np.isfinite(e)
    pull = (sp.bands[bands[-1]].flux - sp.bands[bands[-1]].flux_noiseless)[ok] / e[ok]
    assert abs(np.std(pull) - 1.0) < 0.05


def test_physics_curve_peaks_at_the_true_redshift(run, dataset):
    from csstz.templates.physics import PhysicsCurves

    out, _ = run
    phys = PhysicsCurves.load(out / "pz_physics.h5", threads=1)
    rows = split_rows(dataset, "train")[:40]
    sp = read_spectra(dataset, bands=phys.bands, rows=rows, with_noiseless=True)
    curves, scal = phys.curves(
        {b: sp.bands[b].flux_noiseless for b in phys.bands}, {b: sp.bands[b].err for b in phys.bands}
    )
    z = np.asarray(sp.catalog["Z"])
    zpk = phys.grid_z[np.argmax(curves[:, 0], axis=1)]
    assert np.median(np.abs(zpk - z) / (1 + z)) < 0.003
    assert np.all(curves[:, 0] <= 0)
    # the default run feeds the coefficient curves (0.8.0): two likelihood curves + K unit-norm coefficients
    assert phys.coeff_curves and curves.shape[1:] == (2 + phys.basis.n_templates, phys.grid_z.size)
    assert np.all(np.abs(curves[:, 2:]) <= 1.0)
    # noiseless spectra: chi2/dof of the in-family basis far below the ~1 of a noisy spectrum (bright
    # galaxies keep some: the binned Gaussian LSF of the physics stage is not the simulator's exact one)
    assert np.median(scal[:, 2]) < 0.05


def test_coefficient_curves_carry_the_sed_shape_and_survive_save_load(run, dataset, tmp_path):
    """coeff_curves: K more curves, the best-fit SED's unit-norm coefficients, identical after a save/load."""
    from csstz.templates.physics import PhysicsCurves

    out, _ = run
    base = PhysicsCurves.load(out / "pz_physics.h5", threads=1)
    phys = PhysicsCurves(base.basis, base.wave_by_band, base.psf_sigma_pix, "point", threads=1, coeff_curves=True)
    phys2 = PhysicsCurves.load(phys.save(tmp_path / "p.h5"), threads=1)
    assert phys2.coeff_curves and phys2.n_curves == 2 + base.basis.n_templates
    rows = split_rows(dataset, "train")[:16]
    sp = read_spectra(dataset, bands=phys.bands, rows=rows, with_noiseless=True)
    flux = {b: sp.bands[b].flux_noiseless for b in phys.bands}
    err = {b: sp.bands[b].err for b in phys.bands}
    c1, _ = phys.curves(flux, err)
    c2, _ = phys2.curves(flux, err)
    np.testing.assert_array_equal(c1, c2)
    k = base.basis.n_templates
    assert c1.shape == (16, 2 + k, phys.grid_z.size)
    # unit norm where the fit is defined; the first two curves are those of the plain stage
    norm = np.sqrt(np.sum(c1[:, 2:].astype(np.float64) ** 2, axis=1))
    assert np.all(np.abs(norm - 1.0) < 1e-3)
    np.testing.assert_allclose(
        c1[:, :2],
        base.__class__(base.basis, base.wave_by_band, base.psf_sigma_pix, "point", threads=1).curves(flux, err)[0],
        atol=1e-5,
    )
    # the shape at the true redshift varies between galaxies (it is information, not a constant)
    z = np.asarray(sp.catalog["Z"])
    at = c1[np.arange(16), 2:, np.abs(phys.grid_z[None, :] - z[:, None]).argmin(axis=1)]
    assert np.std(at, axis=0).max() > 0.05


def test_fit_temperature_recovers_an_over_confidence_factor():
    rng = np.random.default_rng(0)
    grid = np.expm1(np.linspace(0, np.log(2.6), 400))
    mu = rng.uniform(0.3, 1.2, 300)
    sig = 0.01 * (1 + mu)
    z_true = mu + sig * rng.standard_normal(300)
    # logits twice too sharp (temperature 0.5 applied): the fit must find T ~ 2
    logits = (-0.5 * ((grid[None, :] - mu[:, None]) / sig[:, None]) ** 2 * 2.0)[:, None, :]
    t, scan = fit_temperature(logits, grid, z_true)
    assert 1.7 < t < 2.3 and len(scan) > 10


def test_refine_on_physics_moves_z_to_the_physics_peak_inside_the_window_only():
    from csstz.predict_pz import refine_on_physics

    grid = np.expm1(np.arange(0.0, np.log(2.6), 1.15e-3))
    lnz = np.log1p(grid)
    # physics: a sharp peak at z = 0.5003 and a higher one at z = 1.2; the network picked the first (z_mode 0.5020)
    ll = np.maximum(-0.5 * ((lnz - np.log1p(0.5003)) / 0.002) ** 2, 5.0 - 0.5 * ((lnz - np.log1p(1.2)) / 0.002) ** 2)[
        None, :
    ]
    z = refine_on_physics(np.array([0.5020]), ll, np.zeros(grid.size), grid, window=4)
    assert abs(z[0] - 0.5003) < 2e-4  # the physics locates the peak, the network's choice of peak stays
    far = refine_on_physics(np.array([0.5200]), ll, np.zeros(grid.size), grid, window=4)
    assert abs(far[0] - 0.5003) > 0.005  # outside the window: the physics peak is not reachable


def test_kernel_point_estimate_replaces_the_located_mode_only_where_the_smoothed_peak_is_elsewhere():
    """summarise(kernel_steps > 0): a spectrum whose tallest spike holds less probability than a broad peak
    0.05 away in ln(1 + z) gets the broad peak's centre (not located); one with a single peak keeps its located
    mode; p(z), intervals and the members' spreads do not change."""
    from csstz.predict_pz import PEAK_KERNEL_STEPS, summarise
    from csstz.templates import pdf

    grid = np.expm1(np.arange(0.0, np.log(2.6), 1.15e-3))
    lnz = np.log1p(grid)

    def cells(centre, sig):
        c = np.exp(-0.5 * ((lnz - centre) / sig) ** 2)
        return c / c.sum()

    two = 0.3 * cells(np.log1p(0.5), 0.0015) + 0.7 * cells(np.log1p(0.5) + 0.05, 0.01)
    one = cells(np.log1p(0.9), 0.004)
    prob = np.stack([np.stack([two, two]), np.stack([one, one])])  # (N = 2, M = 2, K)

    def locate(z):  # a recognisable physics location: 1e-4 above the mode
        return z + 1e-4

    plain = summarise(prob, grid, locate=locate)
    kern = summarise(prob, grid, locate=locate, kernel_steps=PEAK_KERNEL_STEPS)
    assert abs(np.log1p(plain["z"][0] - 1e-4) - np.log1p(0.5)) < 1.15e-3  # the mode: the spike, located
    # the broad peak (pulled by < 1 grid step towards the spike, whose smoothed tail reaches it), not located
    assert abs(np.log1p(kern["z"][0]) - (np.log1p(0.5) + 0.05)) < 1.15e-3
    np.testing.assert_allclose(kern["z"][0], pdf.kernel_mode(two / (1 + grid), grid, PEAK_KERNEL_STEPS)[0], atol=1e-12)
    # one peak: the located mode (of the density per unit z, which peaks s^2 below the centre in ln(1 + z))
    assert kern["z"][1] == plain["z"][1] and abs(kern["z"][1] - np.expm1(np.log1p(0.9) - 0.004**2) - 1e-4) < 1e-5
    for k in ("pz", "lo68", "hi68", "lo95", "hi95", "zerr", "zerr_epistemic", "zerr_aleatoric"):
        np.testing.assert_array_equal(kern[k], plain[k], err_msg=k)


def test_a_run_applies_its_point_estimate_to_network_outputs(run):
    """PzRun(point=...) reaches summarise: on logits with a tall spike and a broader, more probable peak 0.05 away in
    ln(1 + z), the "kernel" run's Z is the broad peak and the "mode" run's the spike; the p(z) are the same."""
    from csstz.predict_pz import PzRun

    out, _ = run
    kern, mode = PzRun(out, threads=1, point="kernel"), PzRun(out, threads=1, point="mode")
    lnz = kern.physics.grid_lnz
    spike, broad = lnz[300], lnz[300] + 0.05
    cells = (
        0.3 * np.exp(-0.5 * ((lnz - spike) / 0.0015) ** 2) / 0.0015
        + 0.7 * np.exp(-0.5 * ((lnz - broad) / 0.01) ** 2) / 0.01
    )
    logits = np.log(np.maximum(cells / cells.sum(), 1e-300))[None, None, :].repeat(kern.net.members, axis=1)
    flat = np.zeros((1, lnz.size))  # a flat physics likelihood: the located mode stays at the spike
    scal = np.zeros((1, kern.physics.n_scalars))
    a = kern.summarise_outputs(logits, scal, flat, temperature=1.0, pit_map=None)
    b = mode.summarise_outputs(logits, scal, flat, temperature=1.0, pit_map=None)
    step = lnz[1] - lnz[0]
    assert abs(np.log1p(a["z"][0]) - broad) < 2 * step and abs(np.log1p(b["z"][0]) - spike) < 5 * step
    np.testing.assert_array_equal(a["pz"], b["pz"])


def _default_and_option(out, dataset, tmp_path, option, value, same_cols):
    """Predict the test split with the defaults and with ``--option value``; check that the p(z) and ``same_cols``
    agree, and return both tables (default first)."""
    a, b = tmp_path / "default.fits", tmp_path / f"{value}.fits"
    assert main(["predict", str(out), str(dataset), "--split", "test", "--out", str(a)]) == 0
    assert main(["predict", str(out), str(dataset), "--split", "test", "--out", str(b), f"--{option}", value]) == 0
    ta, tb = read_predictions(a), read_predictions(b)
    np.testing.assert_array_equal(ta.meta["PZ"], tb.meta["PZ"])
    for col in ("TARGETID", *same_cols):
        np.testing.assert_array_equal(np.asarray(ta[col]), np.asarray(tb[col]), err_msg=col)
    return ta, tb


def test_predict_point_option_changes_z_only_and_is_named_in_the_header(run, dataset, tmp_path, capsys):
    from csstz.errors import InputError
    from csstz.predict_pz import PzRun

    out, _ = run
    same = ("ZERR", "Z_LO68", "Z_HI68", "Z_LO95", "Z_HI95", "OOD_SCORE", "CHI2_DOF")
    tk, tm = _default_and_option(out, dataset, tmp_path, "point", "mode", same)
    assert tk.meta["ZPOINT"] == "kernel" and tm.meta["ZPOINT"] == "mode"
    assert np.all(np.isfinite(np.asarray(tk["Z"])))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # refused by the command line, before anything is read or written
        main(["predict", str(out), str(dataset), "--out", str(tmp_path / "x.fits"), "--point", "median"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and "--point" in last and "median" in last and "kernel" in last
    assert not (tmp_path / "x.fits").exists()
    with pytest.raises(InputError, match="point"):  # and by the API
        PzRun(out, point="median")


def test_predict_locator_option_moves_z_within_the_window_only(run, dataset, tmp_path, capsys):
    """The non-negative locator (default where the run has pz_locator.fits) and 0.9's relocation give the same
    p(z), intervals and flags but MULTIMODAL (measured around Z); Z differs by at most the relocation windows; the
    header names the locator."""
    from csstz.errors import FileFormatError, InputError
    from csstz.predict_pz import PzRun
    from csstz.templates.locator import LOCATOR_HALF
    from csstz.templates.physics import RELOCATE_HALF
    from csstz.zwarn import ZWARN

    out, _ = run
    tn, tp = _default_and_option(out, dataset, tmp_path, "locator", "prior", ("ZERR", "Z_LO68", "Z_HI68", "OOD_SCORE"))
    # every flag but MULTIMODAL (P_SECOND is measured around Z) is the same
    keep = ~np.int64(ZWARN.MULTIMODAL)
    np.testing.assert_array_equal(np.asarray(tn["ZWARN"]) & keep, np.asarray(tp["ZWARN"]) & keep)
    assert tn.meta["ZLOCATOR"] == "nnls" and tp.meta["ZLOCATOR"] == "prior"
    dl = np.abs(np.log1p(np.asarray(tn["Z"])) - np.log1p(np.asarray(tp["Z"])))
    step = np.diff(np.log1p(PzRun(out).physics.grid_z))[0]
    half = max(LOCATOR_HALF, RELOCATE_HALF) + 0.5  # each moves Z at most this far from the same located mode
    assert np.all(dl <= 2 * half * step + 1e-12) and np.any(dl > 1e-6)  # moved, but only near the peak
    # a run without the file: "auto" falls back to 0.9's relocation, "nnls" is refused in one line
    old = tmp_path / "old_run"
    shutil.copytree(out, old)
    (old / "pz_locator.fits").unlink()
    assert PzRun(old).locator_name == "prior"
    capsys.readouterr()
    assert main(["predict", str(old), str(dataset), "--out", str(tmp_path / "x.fits"), "--locator", "nnls"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pz_locator.fits" in err[0] and not (tmp_path / "x.fits").exists()
    with pytest.raises(InputError, match="locator"):
        PzRun(out, locator="median")
    (old / "pz_locator.fits").write_bytes(b"truncated")
    with pytest.raises(FileFormatError, match="pz_locator.fits"):
        PzRun(old)


def _refine_full_grid(z_mode, loglike, log_prior, grid, window):
    """Reference: the windowed refinement as 0.6.0 wrote it, over the full grid (mask, exp, pdf.mode)."""
    from csstz.templates import pdf

    j = np.argmin(np.abs(grid[None, :] - z_mode[:, None]), axis=1)
    inside = np.abs(np.arange(grid.size)[None, :] - j[:, None]) <= window
    post = np.where(inside, loglike + log_prior[None, :], -np.inf)
    top = np.max(post, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        dens = np.exp(post - np.where(np.isfinite(top), top, 0.0)) / (1.0 + grid)
    z = pdf.mode(np.nan_to_num(dens), grid)
    return np.where(np.isfinite(top[:, 0]) & np.isfinite(z), z, z_mode)


def test_windowed_refinement_equals_the_full_grid_reference_at_the_edges_too():
    from csstz.predict_pz import refine_on_physics

    rng = np.random.default_rng(4)
    grid = np.expm1(np.arange(0.0, np.log(2.6), 1.15e-3))
    lnz = np.log1p(grid)
    n = 400
    centre = rng.uniform(0, grid[-1], n)
    ll = -0.5 * ((lnz[None, :] - np.log1p(centre)[:, None]) / rng.uniform(0.001, 0.01, n)[:, None]) ** 2
    ll += 0.3 * rng.normal(size=ll.shape)  # ragged curves: peaks at window edges, flat parts
    ll[:5, :40] = -np.inf  # no finite likelihood near the start for some
    lp = -0.5 * ((grid - 0.7) / 0.4) ** 2
    z_mode = np.concatenate([centre[:-6] + rng.normal(0, 0.004, n - 6), [0.0, -1.0, grid[1], grid[-1], 5.0, 0.01]])
    for window in (4, 1, 0):
        got = refine_on_physics(z_mode, ll, lp, grid, window=window)
        np.testing.assert_allclose(got, _refine_full_grid(z_mode, ll, lp, grid, window), rtol=0, atol=1e-12)
    # a mode that is not a number stays one
    assert np.isnan(refine_on_physics(np.array([np.nan, 0.5]), ll[:2], lp, grid)[0])


def test_ood_statistic_sums_the_ranks_of_distance_and_spread_in_the_validation_reference():
    """Each part is ranked in its own validation distribution (0 below it, 1 above it, its CDF between), so
    the score is 2 only when both parts exceed every validation value, and rises with either part."""
    from csstz.predict_pz import ood_reference, ood_statistic

    rng = np.random.default_rng(3)
    val = {"feature_distance": rng.chisquare(50, 5000), "spread_ln1pz": rng.lognormal(-6, 1, 5000)}
    ref = ood_reference(val)
    s_val = ood_statistic(val, ref)
    assert s_val.mean() == pytest.approx(1.0, abs=0.01)  # two uniform ranks
    # independent parts: the rank sum's upper 4% is set by either, not by one alone
    thr = np.quantile(s_val, 0.96)
    far_d = val["feature_distance"] > np.quantile(val["feature_distance"], 0.96)
    far_s = val["spread_ln1pz"] > np.quantile(val["spread_ln1pz"], 0.96)
    flagged = s_val > thr
    assert 0.2 < flagged[far_d].mean() < 0.8 and 0.2 < flagged[far_s].mean() < 0.8
    probe = {
        "feature_distance": np.array([0.0, 1e9, 1e9, 50.0, 60.0]),
        "spread_ln1pz": np.array([0.0, 1.0, 0.0, 1e-3, 1e-3]),
    }
    s = ood_statistic(probe, ref)
    assert s[0] == 0.0 and s[1] == 2.0 and s[2] == pytest.approx(1.0)
    assert s[4] > s[3]  # a larger distance at the same spread ranks higher
    # a spectrum without a finite part neither shapes the reference nor scores (BAD_MINFIT flags it instead)
    val_nan = {k: np.append(v, np.nan) for k, v in val.items()}
    assert ood_reference(val_nan) == ref
    assert np.isnan(ood_statistic({"feature_distance": np.array([np.nan]), "spread_ln1pz": np.array([0.1])}, ref))[0]
    # without a reference (calibrations before 0.8.1): the distance itself
    np.testing.assert_array_equal(ood_statistic(probe), probe["feature_distance"])


def test_accelerator_gpu_without_cuda_is_refused_in_one_line():
    from csstz.errors import ConfigError
    from csstz.train.pz_run import torch_device

    assert torch_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert torch_device("auto") == "cpu"
        with pytest.raises(ConfigError, match="accelerator"):
            torch_device("gpu")
    else:
        assert torch_device("gpu") == "cuda"


def test_prediction_applies_the_calibration_it_was_fitted_with(run, dataset, tmp_path, capsys):
    """Predicting the validation split reproduces the calibration's in-sample coverage and OOD flag rate exactly:
    calibration and prediction summarise the network outputs along one path."""
    out, _ = run
    cal = json.loads((out / "calibration.json").read_text())
    pred = tmp_path / "val.fits"
    assert main(["predict", str(out), str(dataset), "--split", "val", "--out", str(pred)]) == 0
    tab = read_predictions(pred)
    assert tab.meta["CALMETH"] == "temperature+pit_map"
    z = np.asarray(read_catalog(dataset)["Z"])[split_rows(dataset, "val")]
    inside = (z >= np.asarray(tab["Z_LO68"])) & (z <= np.asarray(tab["Z_HI68"]))
    assert np.mean(inside) == pytest.approx(cal["val_coverage"]["temperature+pit_map"]["coverage_68"], abs=1e-9)
    ood = (np.asarray(tab["ZWARN"]) & (1 << 18)) > 0
    stat = np.asarray(tab["OOD_SCORE"])
    assert np.all((stat >= 0) & (stat <= 2))  # two ranks in [0, 1]
    np.testing.assert_array_equal(ood, stat > cal["ood_threshold"])
    assert ood.mean() <= 1 - cal["ood_quantile"] + 1.0 / z.size
    ref = cal["ood_reference"]
    assert set(ref) == {"feature_distance", "spread_ln1pz"} and all(len(v) == 1001 for v in ref.values())
    # a calibration from before 0.8.1 (no ood_reference) flags on the feature distance alone
    old = tmp_path / "old_run"
    shutil.copytree(out, old)
    cal_old = {k: v for k, v in cal.items() if k != "ood_reference"}
    cal_old["ood_threshold"] = float(np.quantile(np.asarray(tab["OOD_DIST2"]), 0.9))
    (old / "calibration.json").write_text(json.dumps(cal_old))
    assert main(["predict", str(old), str(dataset), "--split", "val", "--out", str(tmp_path / "o.fits")]) == 0
    t_old = read_predictions(tmp_path / "o.fits")
    np.testing.assert_array_equal(np.asarray(t_old["OOD_SCORE"]), np.asarray(tab["OOD_DIST2"]))
    np.testing.assert_array_equal(
        (np.asarray(t_old["ZWARN"]) & (1 << 18)) > 0, np.asarray(tab["OOD_DIST2"]) > cal_old["ood_threshold"]
    )
    # a truncated reference in calibration.json: one line naming the file and the field
    trunc = tmp_path / "trunc_run"
    shutil.copytree(out, trunc)
    cal_t = json.loads(json.dumps(cal))
    cal_t["ood_reference"]["spread_ln1pz"] = cal_t["ood_reference"]["spread_ln1pz"][:10]
    (trunc / "calibration.json").write_text(json.dumps(cal_t))
    capsys.readouterr()
    assert main(["predict", str(trunc), str(dataset), "--split", "val", "--out", str(tmp_path / "t.fits")]) == 2
    err = capsys.readouterr().err.strip()
    assert "calibration.json" in err and "ood_reference.spread_ln1pz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t.fits").exists()
    # a corrupted map in calibration.json: one line naming the file
    bad = tmp_path / "bad_run"
    shutil.copytree(out, bad)
    cal["pit_map"]["maps"][0][-1] = 0.5
    (bad / "calibration.json").write_text(json.dumps(cal))
    assert main(["predict", str(bad), str(dataset), "--split", "val", "--out", str(tmp_path / "b.fits")]) == 2
    err = capsys.readouterr().err.strip()
    assert "calibration.json" in err and "pit_map" in err and len(err.splitlines()) == 1


def test_physics_worker_processes_give_the_same_batches(run, dataset):
    """workers=2 (forked processes computing the curves) yields exactly the batches of workers=1."""
    from itertools import islice

    from csstz.templates.physics import PhysicsCurves
    from csstz.train.pz_run import train_batches

    out, _ = run
    phys = PhysicsCurves.load(out / "pz_physics.h5", threads=1)
    rows = split_rows(dataset, "train")
    z = np.asarray(read_catalog(dataset)["Z"])[rows]
    one = list(islice(train_batches(dataset, rows, phys.bands, phys, None, z, 64, 0, True, workers=1), 7))
    two = list(islice(train_batches(dataset, rows, phys.bands, phys, None, z, 64, 0, True, workers=2), 7))
    assert len(one) == len(two) == 7  # 320 rows: 5 batches a block, so the 7 cross into the next epoch
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.z, b.z)
        np.testing.assert_array_equal(a.curves, b.curves)
        np.testing.assert_array_equal(a.scalars, b.scalars)
    assert not np.array_equal(one[0].curves, one[5].curves)


def test_prediction_is_the_same_with_worker_processes(run, dataset):
    from csstz.predict_pz import PzRun, predict_rows

    out, _ = run
    pz_run = PzRun(out, threads=1)
    rows = split_rows(dataset, "test")
    one, _ = predict_rows(pz_run, dataset, rows, block=16, workers=1)
    two, _ = predict_rows(pz_run, dataset, rows, block=16, workers=2)
    assert rows.size > 16  # several blocks
    np.testing.assert_array_equal(one["chi2_dof"], two["chi2_dof"])  # the physics: bit for bit
    np.testing.assert_array_equal(one["n_valid"], two["n_valid"])
    # the network runs on one torch thread beside the workers: its sums may round differently (~1e-9 relative),
    # and the members' probabilities are float32 (~1e-7): redshifts agree to 1e-7
    for k in ("z", "zerr", "lo95", "hi95", "zerr_epistemic", "p_second", "pz"):
        np.testing.assert_allclose(one[k], two[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_relocation_moves_only_z_and_only_within_its_window(run, dataset, tmp_path):
    """A run trained with the defaults re-locates Z (the non-negative locator); the same run without its locator
    file and with the scale set to 1 (no relocation at all) gives the same p(z) and intervals, and Z within the
    relocation window of it."""
    import json
    import shutil

    import h5py

    from csstz.predict_pz import PzRun, predict_rows
    from csstz.templates.locator import LOCATOR_HALF

    out, _ = run
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    (plain / "pz_locator.fits").unlink()
    with h5py.File(plain / "pz_physics.h5", "a") as f5:
        meta = json.loads(f5.attrs["physics"])
        assert meta["locator_lsf_scale"] == PzConfig().locator_lsf_scale != 1.0
        meta["locator_lsf_scale"] = 1.0
        f5.attrs["physics"] = json.dumps(meta)
    rows = split_rows(dataset, "test")
    rel, _ = predict_rows(PzRun(out, threads=1), dataset, rows, block=16, workers=2)
    base, _ = predict_rows(PzRun(plain, threads=1), dataset, rows, block=16, workers=1)
    for k in ("pz", "lo68", "hi68", "lo95", "hi95", "zerr_epistemic"):
        np.testing.assert_allclose(rel[k], base[k], rtol=1e-6, atol=1e-7, err_msg=k)
    grid_lnz = PzRun(out).physics.grid_lnz
    steps = np.abs(np.log1p(rel["z"]) - np.log1p(base["z"])) / (grid_lnz[1] - grid_lnz[0])
    assert not PzRun(plain).relocates and PzRun(out).relocates
    assert np.all(steps <= LOCATOR_HALF + 0.5 + 1e-9)
    assert np.mean(steps > 1e-3) > 0.3  # it does move Z
    # the in-process API re-locates the same way (its spectra stay float64: equal to ~1e-6)
    from csstz.instrument import load_instrument
    from csstz.io.spectra import read_catalog, read_spectra

    pz_run, inst = PzRun(out, threads=1), load_instrument()
    cat = read_catalog(dataset)[rows]
    sp = read_spectra(dataset, bands=pz_run.bands, rows=rows)
    arr = pz_run.predict_arrays(
        {b: sp.bands[b].flux for b in pz_run.bands},
        {b: sp.bands[b].err for b in pz_run.bands},
        pz_run.physics.lsf_index(cat, inst),
        locator_lsf_index=pz_run.locator_lsf_index(cat, inst),
    )
    np.testing.assert_allclose(arr["z"], rel["z"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(arr["n_valid"], rel["n_valid"])
