"""The learned rest-frame template basis (csstz.templates.learned): physics and file contracts."""

from __future__ import annotations

import logging
import warnings

import h5py
import numpy as np
import pytest
from astropy.table import Table

from csstz.errors import FileFormatError, InputError
from csstz.io.spectra import SpectraSet, write_spectra
from csstz.population.sdss_fit import read_templates
from csstz.templates.learned import (
    EMISSION_LINE_GROUPS,
    add_emission_lines,
    build_learned_basis,
    embedded_rest_seds,
    learn_basis,
    line_templates,
    load_basis,
    read_basis,
    reconstruction_rel_rms,
    rest_grid_aa,
    save_basis,
)


def _coeffs(n, rng):
    """Coefficients like the embedded population's: a few parents, log-normal scatter (0.15)."""
    parents = np.array(
        [[1.0, 0.1, 0.0, 0.05, 0.0], [0.1, 1.0, 0.3, 0.0, 0.1], [0.0, 0.2, 1.0, 0.5, 0.3], [0.3, 0.0, 0.1, 1.0, 0.8]]
    )
    return parents[rng.integers(0, len(parents), n)] * np.exp(0.15 * rng.normal(size=(n, 5)))


def _seds(n, seed=0):
    tw, tf = read_templates()
    wave = rest_grid_aa()
    T = np.stack([np.interp(wave, tw, t) for t in tf])
    return wave, _coeffs(n, np.random.default_rng(seed)) @ T


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A real catalogue file (no spectra needed) with SPLIT and COEFF columns."""
    rng = np.random.default_rng(3)
    n = 400
    cat = Table(
        {
            "TARGETID": np.arange(n, dtype=np.int64),
            "Z": rng.uniform(0.1, 1.5, n),
            "SPLIT": np.array(["train"] * 300 + ["val"] * 60 + ["test"] * 40),
            "COEFF": _coeffs(n, rng).astype(np.float32) * 1e-7,
        }
    )
    path = tmp_path_factory.mktemp("ds") / "tiny.h5"
    write_spectra(path, SpectraSet({}, cat))
    return path


def test_pca_basis_reconstructs_training_seds():
    wave, s = _seds(300)
    res = {
        k: float(np.median(reconstruction_rel_rms(learn_basis(wave, s, k).templates, s / s.mean(1)[:, None])))
        for k in (2, 3, 5)
    }
    # the SEDs span a 5-dimensional space (5 kcorrect templates): K = 5 (mean + 4 components) is exact
    assert res[5] < 1e-8
    assert res[2] > res[3] > res[5]
    b = learn_basis(wave, s, 5)
    assert b.prior_mean.shape == (1, 5) and b.prior_cov.shape == (1, 5, 5)
    # the normalised SEDs have unit mean, so the prior mean has unit amplitude
    assert abs(float(b.norm @ b.prior_mean[0]) - 1.0) < 1e-8


def test_nmf_basis_is_non_negative():
    pytest.importorskip("sklearn")
    wave, s = _seds(80)
    b = learn_basis(wave, s, 5, method="nmf")
    assert np.all(b.templates >= 0)
    assert np.median(reconstruction_rel_rms(b.templates, s / s.mean(1)[:, None])) < 0.02


def test_nmf_stopped_at_its_iteration_cap_is_recorded_not_warned(monkeypatch, caplog):
    import csstz.templates.learned as learned

    pytest.importorskip("sklearn")
    wave, s = _seds(80)
    full = learn_basis(wave, s, 5, method="nmf")
    # scikit-learn stops at the cap exactly when its tolerance was not reached
    assert full.provenance["nmf_converged"] is (full.provenance["nmf_iterations"] < learned.NMF_MAX_ITER)
    monkeypatch.setattr(learned, "NMF_MAX_ITER", 2)  # two iterations cannot reach the tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning would fail here
        with caplog.at_level(logging.INFO, logger="csstz.templates.learned"):
            capped = learn_basis(wave, s, 5, method="nmf")
    assert capped.provenance["nmf_iterations"] == 2 and capped.provenance["nmf_converged"] is False
    assert "tolerance not reached in 2 iterations" in caplog.text
    assert np.all(capped.templates >= 0)


def test_basis_file_round_trip(tmp_path):
    wave, s = _seds(200)
    b = learn_basis(wave, s, 4, n_mixture=3, provenance={"dataset": "synthetic"})
    path = tmp_path / "basis.h5"
    save_basis(b, path)
    r = read_basis(path)
    for key in ("wave_aa", "templates", "norm", "prior_mean", "prior_cov", "prior_weight"):
        np.testing.assert_array_equal(getattr(r, key), getattr(b, key))
    assert r.name == b.name and r.provenance["dataset"] == "synthetic" and r.provenance["prior_mixture"] == 3
    assert load_basis(str(path)).n_templates == 4
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves nothing behind


def test_line_templates_have_unit_flux_and_compact_support():
    wave = rest_grid_aa()
    L = line_templates(wave, ("OII", "OIII", "HaNII"))
    step = np.gradient(wave)
    np.testing.assert_allclose(np.sum(L * step, axis=1), 1.0, rtol=1e-12)
    for row, group in zip(L, ("OII", "OIII", "HaNII")):
        lines = EMISSION_LINE_GROUPS[group]
        strongest = max(lines, key=lambda x: x[1])[0]
        assert abs(wave[np.argmax(row)] - strongest) < 2 * np.interp(strongest, wave, step)
        far = np.min(np.abs(wave[:, None] - np.array([c for c, _ in lines])[None, :]), axis=1) > 60.0
        assert np.all(row[far] == 0.0) and np.all(row >= 0.0)
    # [OIII] 4960 carries 1/2.98 of 5008's flux
    o3 = L[1]
    near = lambda c: np.abs(wave - c) < 15.0  # noqa: E731
    assert abs(np.sum((o3 * step)[near(4960.30)]) / np.sum((o3 * step)[near(5008.24)]) - 1 / 2.98) < 0.01
    with pytest.raises(InputError, match="lines"):
        line_templates(wave, ("Lya",))
    with pytest.raises(InputError, match="outside"):
        line_templates(wave[wave < 3000.0], ("HaNII",))


def test_emission_lines_extend_the_basis_without_touching_its_prior(tmp_path):
    wave, s = _seds(200)
    b = learn_basis(wave, s, 4, n_mixture=2)
    a = add_emission_lines(b, 10.0, ("OII", "HaNII"))
    assert a.n_templates == 6 and a.prior_mean.shape == (2, 6) and a.prior_cov.shape == (2, 6, 6)
    np.testing.assert_array_equal(a.templates[:4], b.templates)
    np.testing.assert_array_equal(a.prior_cov[:, :4, :4], b.prior_cov)
    np.testing.assert_array_equal(a.prior_mean[:, :4], b.prior_mean)
    # lines: zero mean, independent, sigma 10 A; not part of the amplitude
    assert np.all(a.prior_mean[:, 4:] == 0) and np.all(a.prior_cov[:, 4:, :4] == 0)
    np.testing.assert_array_equal(a.prior_cov[:, [4, 5], [4, 5]], 100.0)
    np.testing.assert_array_equal(a.norm, np.r_[b.norm, 0.0, 0.0])
    assert a.provenance["emission_lines"]["groups"] == ["OII", "HaNII"]
    assert a.provenance["emission_lines"]["n_templates"] == 2
    # lines added in two steps all stay free
    twice = add_emission_lines(add_emission_lines(b, 10.0, ("OII",)), 5.0, ("OIII",))
    assert twice.provenance["emission_lines"]["n_templates"] == 2 and twice.n_templates == 6
    np.testing.assert_array_equal(twice.prior_cov[0, [4, 5], [4, 5]], [100.0, 25.0])
    path = tmp_path / "lines.h5"
    save_basis(a, path)
    r = read_basis(path)
    np.testing.assert_array_equal(r.templates, a.templates)
    np.testing.assert_array_equal(r.norm, a.norm)
    np.testing.assert_array_equal(r.prior_cov, a.prior_cov)
    with pytest.raises(InputError, match="line_ew_sd"):
        add_emission_lines(b, 0.0)
    with pytest.raises(InputError, match="coefficient prior"):
        add_emission_lines(load_basis("kcorrect"), 10.0)


def test_bad_basis_files_give_one_line_error_naming_the_file(tmp_path):
    text = tmp_path / "not_hdf5.h5"
    text.write_text("hello")
    nofmt = tmp_path / "no_format.h5"
    with h5py.File(nofmt, "w") as h5:
        h5["x"] = np.zeros(3)
    badshape = tmp_path / "bad_shape.h5"
    wave, s = _seds(50)
    save_basis(learn_basis(wave, s, 3), badshape)
    with h5py.File(badshape, "a") as h5:
        del h5["templates"]
        h5["templates"] = np.zeros((3, 7))
    for path in (text, nofmt, badshape, tmp_path / "missing.h5"):
        with pytest.raises(FileFormatError) as exc:
            load_basis(str(path))
        msg = str(exc.value)
        assert str(path) in msg and "\n" not in msg


def test_load_basis_kcorrect_and_unknown():
    b = load_basis("kcorrect")
    assert b.n_templates == 5 and not b.has_prior
    with pytest.raises(InputError):
        load_basis("no-such-basis")


def test_basis_from_training_split_only(dataset):
    wave, s, info = embedded_rest_seds(dataset, "train")
    assert s.shape[0] == 300 and info["split"] == "train"
    np.testing.assert_allclose(s.mean(axis=1), 1.0)
    with pytest.raises(InputError, match="test split"):
        embedded_rest_seds(dataset, "test")
    b, table = build_learned_basis(dataset)
    # K is the smallest candidate whose median validation residual is below the tolerance
    ok = [r["k"] for r in table if r["val_median_rel_rms"] < 1e-3]
    assert b.n_templates == min(ok)
    assert all(r["val_median_rel_rms"] < 1e-8 for r in table if r["k"] >= 5)  # a 5-template family
    assert b.provenance["split"] == "train" and b.provenance["n_sed"] == 300
    b3 = load_basis(f"learned:{dataset}:3")
    assert b3.n_templates == 3
