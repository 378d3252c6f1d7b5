"""``fit-templates --basis``: the default is today's fit, a learned basis from a real build recovers redshifts,
basis files round-trip, bad specifications fail in one line with nothing written; ZWARN MULTIMODAL."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.table import Table

from csstz.build import build_dataset
from csstz.cli import main
from csstz.errors import InputError
from csstz.instrument import load_instrument
from csstz.io.predictions import read_predictions
from csstz.io.spectra import (
    BandSpectra,
    SpectraSet,
    read_catalog,
    read_spectra,
    split_rows,
    write_spectra,
)
from csstz.templates import fit as T
from csstz.templates.learned import save_basis
from csstz.templates.pdf import mass_away_from_mode
from csstz.templates.physics import learn_physics_basis
from csstz.zwarn import SET_BY_CSSTZ, ZWARN

BANDS = ("GV", "GI")


@pytest.fixture(scope="module")
def inst():
    return load_instrument()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small real embedded build (GalSim rendering, real noise): 240 train, 30 val, 30 test rows."""
    path = tmp_path_factory.mktemp("basis") / "ds300.h5"
    build_dataset(path, n=300, workers=1, progress=False)
    return path


@pytest.fixture(scope="module")
def basis(dataset):
    return learn_physics_basis(dataset)


def _synthetic_set(inst, n=6, seed=3, signal=True) -> SpectraSet:
    model = T.template_model_for({b: inst.band(b).wave_aa for b in BANDS}, inst)
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 1.4, n)
    c = rng.uniform(0.1, 1.0, (n, model.n_templates))
    flux = np.einsum("nk,nkp->np", c, model.render(z)) * (1.0 if signal else 0.0)
    err = np.full_like(flux, 0.05 * np.median(np.abs(np.einsum("nk,nkp->np", c, model.render(z)))))
    flux = flux + err * rng.standard_normal(flux.shape)
    n_gv = inst.band("GV").n_pix
    bands = {
        b: BandSpectra(inst.band(b).wave_aa, f.astype(np.float32), e.astype(np.float32))
        for b, f, e in (("GV", flux[:, :n_gv], err[:, :n_gv]), ("GI", flux[:, n_gv:], err[:, n_gv:]))
    }
    cat = Table(
        {"TARGETID": np.arange(n, dtype=np.int64), "Z": z, "SPLIT": np.array(["train"] * (n - 2) + ["val", "test"])}
    )
    return SpectraSet(bands, cat, {"instrument": inst.to_yaml()}), model, flux, err


# --- default unchanged ---------------------------------------------------------------------------------------
def test_default_basis_is_the_nnls_fit_unchanged(inst):
    sset, model, flux, err = _synthetic_set(inst)
    ref = model.fit(flux.astype(np.float32).astype(np.float64), err.astype(np.float32).astype(np.float64))
    for tab in (T.fit_templates(sset), T.fit_templates(sset, basis="kcorrect")):
        np.testing.assert_array_equal(tab["Z"], ref["z"])
        np.testing.assert_array_equal(tab["ZERR"], ref["zerr"])
        np.testing.assert_array_equal(tab["CHI2_MIN"], ref["chi2_min"])
        np.testing.assert_array_equal(tab["COEFF"], ref["coeff"])
        np.testing.assert_array_equal(tab.meta["PZ"], ref["pz"])
        # the only change to ZWARN is the new MULTIMODAL bit
        np.testing.assert_array_equal(tab["ZWARN"] & ~np.int32(ZWARN.MULTIMODAL), ref["zwarn"])
        assert tab.meta["METHOD"] == "templates" and tab.meta["TPLFILE"] == "kcorrect-default-v4"
        assert tab.meta["BASIS"] == "kcorrect" and tab.meta["NBASIS"] == 5


def test_kcorrect_fits_file_equals_default(inst, tmp_path):
    """FILE as a kcorrect-layout FITS: the same non-negative fit with those templates."""
    from importlib import resources

    from csstz.templates.basis import TEMPLATE_PACKAGE, TEMPLATE_RELPATH

    src = resources.files(TEMPLATE_PACKAGE).joinpath(*TEMPLATE_RELPATH)
    fits_copy = tmp_path / "my_templates.fits"
    shutil.copy(src, fits_copy)
    sset, *_ = _synthetic_set(inst, n=4)
    ref = T.fit_templates(sset)
    tab = T.fit_templates(sset, basis=str(fits_copy))
    np.testing.assert_array_equal(tab["Z"], ref["Z"])
    np.testing.assert_array_equal(tab.meta["PZ"], ref.meta["PZ"])
    assert tab.meta["METHOD"] == "templates" and tab.meta["TPLFILE"] == "my_templates.fits"
    assert tab.meta["BASIS"] == str(fits_copy)


# --- learned basis on a real build -----------------------------------------------------------------------------
def test_learned_basis_recovers_bright_test_redshifts(dataset, tmp_path):
    out = tmp_path / "pred.fits"
    rc = main(
        [
            "fit-templates",
            str(dataset),
            "--out",
            str(out),
            "--split",
            "test",
            "--basis",
            f"learned:{dataset}",
            "--lsf",
            "morphology",
            "--no-progress",
        ]
    )
    assert rc == 0
    tab = read_predictions(out)
    assert tab.meta["METHOD"] == "templates-xcorr-prior" and tab.meta["BASIS"] == f"learned:{dataset}"
    assert tab.meta["TPLFILE"].startswith("learned-") and tab.meta["NBASIS"] >= 2
    cat = read_catalog(dataset)[split_rows(dataset, "test")]
    assert list(tab["TARGETID"]) == list(cat["TARGETID"])
    zt = np.asarray(cat["Z"], np.float64)
    dz = np.abs(np.asarray(tab["Z"]) - zt) / (1 + zt)
    bright = np.asarray(cat["SNR_TOTAL"]) > np.median(cat["SNR_TOTAL"])
    assert bright.sum() >= 10
    # measured on this build (seed 0): 14 of 15 bright spectra within 0.005, one outlier at 0.039
    assert np.mean(dz[bright] < 0.02) >= 0.8
    assert np.median(dz[bright]) < 0.003
    pz, grid = tab.meta["PZ"], tab.meta["PZ_GRID"]
    area = np.trapezoid(pz, grid, axis=1)
    np.testing.assert_allclose(area, 1.0, atol=1e-3)
    # ZERR is half the central 68% interval: a few of the bright truths fall inside Z +- 3 ZERR at least
    assert np.mean(dz[bright] * (1 + zt[bright]) < 3 * np.asarray(tab["ZERR"])[bright]) >= 0.6


def test_learned_basis_uses_the_training_split_only(dataset, basis):
    n_train = int(np.sum(np.char.strip(np.asarray(read_catalog(dataset)["SPLIT"]).astype(str)) == "train"))
    assert basis.provenance["split"] == "train" and basis.provenance["n"] == n_train
    # a PCA basis has signed components: the reason the NNLS fit is not used for it
    assert np.any(basis.templates < 0) and basis.has_prior


def test_basis_file_round_trip(dataset, basis, tmp_path):
    path = tmp_path / "basis.h5"
    save_basis(basis, path)
    rows = split_rows(dataset, "test")
    sset = read_spectra(dataset, bands=BANDS, rows=rows)
    a = T.fit_templates(sset, basis=str(path), lsf="morphology")
    b = T.fit_templates(sset, basis=basis, lsf="morphology")
    c = T.fit_templates(sset, basis=f"learned:{dataset}", lsf="morphology")  # learning is deterministic
    for other in (b, c):
        np.testing.assert_array_equal(a["Z"], other["Z"])
        np.testing.assert_array_equal(a.meta["PZ"], other.meta["PZ"])
    assert a.meta["BASIS"] == str(path) and b.meta["BASIS"] == basis.name
    out = tmp_path / "pred.fits"
    T.fit_templates_file(dataset, out, split="test", basis=str(path), lsf="morphology", progress=False)
    back = read_predictions(out)
    np.testing.assert_array_equal(back["Z"], a["Z"])
    np.testing.assert_array_equal(back.meta["PZ_GRID"], a.meta["PZ_GRID"])
    assert back.meta["BASIS"] == str(path) and back.meta["METHOD"] == "templates-xcorr-prior"


# --- ZWARN MULTIMODAL ------------------------------------------------------------------------------------------
def test_multimodal_bit_follows_the_mass_away_from_z(inst, dataset, basis):
    assert ZWARN.MULTIMODAL & SET_BY_CSSTZ
    noise, *_ = _synthetic_set(inst, n=8, seed=5, signal=False)  # pure noise: broad p(z)
    signal, *_ = _synthetic_set(inst, n=8, seed=5)
    sset = read_spectra(dataset, bands=BANDS, rows=split_rows(dataset, "test"))
    tabs = [T.fit_templates(noise), T.fit_templates(signal), T.fit_templates(sset, basis=basis)]
    for tab in tabs:
        ok = np.isfinite(tab["Z"])
        away = mass_away_from_mode(tab.meta["PZ"][ok], tab.meta["PZ_GRID"], z_mode=tab["Z"][ok])
        flagged = (np.asarray(tab["ZWARN"])[ok] & ZWARN.MULTIMODAL) != 0
        np.testing.assert_array_equal(flagged, away > T.MULTIMODAL_MASS)
    assert np.all(tabs[0]["ZWARN"] & ZWARN.MULTIMODAL)  # noise: p(z) spread over the grid
    assert not np.any(tabs[1]["ZWARN"] & ZWARN.MULTIMODAL)  # SNR ~ 20 per pixel: one narrow peak


# --- bad input ---------------------------------------------------------------------------------------------------
def test_bad_basis_specs_fail_in_one_line_and_write_nothing(inst, dataset, tmp_path, capsys):
    sset, *_ = _synthetic_set(inst, n=6)
    spectra = tmp_path / "spec.h5"  # spectra without COEFF / BANK_INDEX: no rest-frame provenance
    write_spectra(spectra, sset)
    junk = tmp_path / "junk.h5"
    shutil.copy(spectra, junk)
    out = tmp_path / "pred.fits"
    for spec, words in (
        ("nope", "unknown basis"),
        (str(tmp_path / "missing.h5"), "not found"),
        (str(tmp_path / "missing.fits"), "not found"),
        (f"learned:{tmp_path}/missing.h5", "dataset"),
        ("learned:", "dataset"),
        (f"learned:{spectra}", "rest-frame"),
        (str(junk), "not a template basis"),
        (str(spectra.with_suffix(".fits")), "not found"),
    ):
        rc = main(
            ["fit-templates", str(dataset), "--out", str(out), "--split", "test", "--basis", spec, "--no-progress"]
        )
        err = capsys.readouterr().err
        assert rc == 2, spec
        assert len(err.strip().splitlines()) == 1 and "--basis" in err and repr(spec) in err and words in err, err
        assert not out.exists()
    with pytest.raises(InputError, match="--basis"):
        T.fit_templates(sset, basis="")
    with pytest.raises(InputError, match="--basis"):
        T.resolve_basis(None)
