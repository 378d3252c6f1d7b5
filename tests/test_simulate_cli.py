"""`csstz simulate` / `csstz plot-spectrum`: files, errors, atomic writes, the Dask path."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from csstz.cli import main
from csstz.io.spectra import read_spectra
from csstz.simulate.api import write_input_catalog
from csstz.units import abmag_to_flam17

WAVE = np.arange(2400.0, 10700.0, 2.0)


def make_catalog(n=4, seed=0):
    rng = np.random.default_rng(seed)
    cat = Table()
    cat["TARGETID"] = np.arange(1000, 1000 + n, dtype=np.int64)
    cat["Z"] = rng.uniform(0.1, 1.0, n)
    cat["SHAPE_R"] = np.where(np.arange(n) == 0, 0.0, rng.uniform(0.1, 0.8, n))
    cat["SERSIC"] = rng.uniform(0.5, 6.0, n)
    cat["BA"] = rng.uniform(0.3, 1.0, n)
    cat["PA"] = rng.uniform(-90, 90, n)
    flux = np.array(
        [
            abmag_to_flam17(rng.uniform(20, 21.5), WAVE) * (1 + 3 * np.exp(-0.5 * ((WAVE - 6563 * (1 + z)) / 3) ** 2))
            for z in cat["Z"]
        ]
    )
    return cat, flux


@pytest.fixture
def catalog_file(tmp_path):
    cat, flux = make_catalog()
    path = tmp_path / "cat.fits"
    write_input_catalog(path, cat, WAVE, flux)
    return path


def test_simulate_round_trip(catalog_file, tmp_path):
    out = tmp_path / "spec.h5"
    assert main(["simulate", str(catalog_file), "--out", str(out), "--seed", "3", "--save-2d"]) == 0
    s = read_spectra(out, with_image2d=True)
    assert set(s.bands) == {"GU", "GV", "GI"}
    for name, b in s.bands.items():
        assert b.flux.shape == (4, b.wave_aa.size) and b.flux.dtype == np.float32
        assert b.image2d.shape[0] == 4
    for col in ("TARGETID", "Z", "SHAPE_R", "SERSIC", "BA", "PA", "SNR_GU", "SNR_GV", "SNR_GI", "SNR_TOTAL"):
        assert col in s.catalog.colnames
    assert list(s.catalog["TARGETID"]) == [1000, 1001, 1002, 1003]
    # the per-object Cramer-Rao bound (the catalogue always has Z) over GV + GI: finite where H-alpha falls
    # in them, inf where they see only the flat f_nu continuum (a power law: no redshift information)
    z = np.asarray(s.catalog["Z"])
    crb = np.asarray(s.catalog["ZERR_CRB"]) / (1 + z)
    seen = (6563 * (1 + z) > s.bands["GV"].wave_aa[0] + 30) & (6563 * (1 + z) < s.bands["GI"].wave_aa[-1] - 30)
    assert seen.sum() >= 2 and np.all((crb[seen] > 0) & (crb[seen] < 0.01)) and np.all(crb[~seen] == np.inf), crb
    assert s.attrs["seed"] == 3 and "area_cm2" in s.attrs["instrument"]
    # readable with plain astropy, as the contract says
    tab = Table.read(out, path="catalog")
    assert len(tab) == 4
    # the paper's Figs. 1-3 from any spectra file
    figs = tmp_path / "figs"
    assert main(["plot-dataset", str(out), "--out", str(figs)]) == 0
    assert sorted(p.name for p in figs.iterdir()) == ["fig1_redshift.png", "fig2_morphology.png", "fig3_snr.png"]


def test_noiseless_flag(catalog_file, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main(["simulate", str(catalog_file), "--out", str(a), "--noiseless", "--seed", "1"]) == 0
    assert main(["simulate", str(catalog_file), "--out", str(b), "--noiseless", "--seed", "2"]) == 0
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert np.array_equal(fa["GI/flux"][:], fb["GI/flux"][:])  # no noise: the seed does not matter


def _bad_catalog(tmp_path, what):
    cat, flux = make_catalog()
    if what == "nan_flux":
        flux[2, 100] = np.nan
    elif what == "neg_radius":
        cat["SHAPE_R"][1] = -0.5
    elif what == "ba":
        cat["BA"][3] = 1.5
    elif what == "sersic":
        cat["SERSIC"][2] = 8.0
    elif what == "dup":
        cat["TARGETID"][3] = cat["TARGETID"][0]
    elif what == "missing":
        cat.remove_column("SERSIC")
    path = tmp_path / f"{what}.fits"
    wave = WAVE
    if what == "unsorted":
        wave = WAVE.copy()
        wave[10], wave[11] = wave[11], wave[10]
    if what == "shape":
        flux = flux[:, :-5]
    write_input_catalog(path, cat, wave, flux)
    return path


@pytest.mark.parametrize(
    "what,needle",
    [
        ("nan_flux", "FLUX, row 2"),
        ("neg_radius", "SHAPE_R, row 1"),
        ("ba", "BA, row 3"),
        ("sersic", "SERSIC, row 2"),
        ("dup", "TARGETID, row 3"),
        ("missing", "SERSIC"),
        ("unsorted", "WAVELENGTH"),
        ("shape", "FLUX"),
    ],
)
def test_bad_input_one_line_and_no_output(tmp_path, what, needle, capsys):
    path = _bad_catalog(tmp_path, what)
    out = tmp_path / "out.h5"
    out.write_bytes(b"previous result")  # an existing file must survive a failed run
    rc = main(["simulate", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and needle in err, err
    assert out.read_bytes() == b"previous result"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_corrupt_catalog_file(tmp_path, capsys):
    path = tmp_path / "broken.fits"
    path.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    out = tmp_path / "out.h5"
    assert main(["simulate", str(path), "--out", str(out)]) != 0
    assert "broken.fits" in capsys.readouterr().err
    assert not out.exists()


def test_console_script_exit_status(tmp_path):
    path = _bad_catalog(tmp_path, "ba")
    proc = subprocess.run(
        [sys.executable, "-m", "csstz.cli", "simulate", str(path), "--out", str(tmp_path / "o.h5")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "BA" in proc.stderr


def test_dask_workers_give_identical_results(catalog_file, tmp_path):
    """A real local Dask cluster of 2 workers writes the same arrays as the in-process path."""
    a, b = tmp_path / "w1.h5", tmp_path / "w2.h5"
    from csstz.simulate.api import simulate_file

    simulate_file(catalog_file, a, seed=5, workers=1, chunk=2)
    simulate_file(catalog_file, b, seed=5, workers=2, chunk=2)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for band in ("GU", "GV", "GI"):
            assert np.array_equal(fa[f"{band}/flux"][:], fb[f"{band}/flux"][:])
            assert np.array_equal(fa[f"{band}/err"][:], fb[f"{band}/err"][:])


def test_plot_spectrum_command(catalog_file, tmp_path):
    out = tmp_path / "figs"
    assert main(["plot-spectrum", str(catalog_file), "--targetid", "1002", "--out", str(out)]) == 0
    for name in ("fig4_1002.png", "fig5_1002.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main(["plot-spectrum", str(catalog_file), "--targetid", "5", "--out", str(out)]) == 2


def test_other_instrument_file_works_without_code_changes(catalog_file, tmp_path):
    """A different PSF, dispersion and exposure time: counts scale, grids follow the file."""
    from importlib import resources

    text = resources.files("csstz.instrument").joinpath("data", "csst.yaml").read_text()
    text = text.replace("exptime_s: 150.0", "exptime_s: 300.0").replace("fwhm_arcsec: 0.3", "fwhm_arcsec: 0.2")
    text = text.replace("dispersion_aa_per_pix: 9.676", "dispersion_aa_per_pix: 8.0")
    alt = tmp_path / "alt.yaml"
    alt.write_text(text)
    a, b = tmp_path / "def.h5", tmp_path / "alt.h5"
    assert main(["simulate", str(catalog_file), "--out", str(a), "--noiseless", "--bands", "GI"]) == 0
    assert (
        main(["simulate", str(catalog_file), "--out", str(b), "--noiseless", "--bands", "GI", "--instrument", str(alt)])
        == 0
    )
    sa, sb = read_spectra(a), read_spectra(b)
    assert sb.bands["GI"].wave_aa[1] - sb.bands["GI"].wave_aa[0] == pytest.approx(8.0)
    assert sb.bands["GI"].wave_aa.size > sa.bands["GI"].wave_aa.size
    # twice the exposure: errors shrink by ~sqrt(2) (background-limited)
    ratio = np.median(sa.bands["GI"].err[0][100:300]) / np.median(sb.bands["GI"].err[0][100:300])
    assert ratio == pytest.approx(np.sqrt(2) * np.sqrt(9.676 / 8.0), rel=0.1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("area_cm2: 31415.93", "area_cm2: -1"))
    with pytest.raises(Exception, match="telescope.area_cm2"):
        from csstz.instrument import load_instrument

        load_instrument(bad)


def test_fits_input_columns_have_expected_hdus(catalog_file):
    with fits.open(catalog_file) as hdul:
        assert [h.name for h in hdul[1:]] == ["CATALOG", "WAVELENGTH", "FLUX"]


def test_existing_scheduler_address(catalog_file, tmp_path):
    """--scheduler sends the chunks to an already running Dask cluster; same arrays as in-process."""
    from distributed import LocalCluster

    a, b = tmp_path / "local.h5", tmp_path / "remote.h5"
    assert main(["simulate", str(catalog_file), "--out", str(a), "--seed", "9"]) == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert (
            main(
                [
                    "simulate",
                    str(catalog_file),
                    "--out",
                    str(b),
                    "--seed",
                    "9",
                    "--scheduler",
                    cluster.scheduler_address,
                ]
            )
            == 0
        )
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert np.array_equal(fa["GV/flux"][:], fb["GV/flux"][:])
