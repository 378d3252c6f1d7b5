"""`csstz build`: layout, determinism across workers, kill-and-resume, bad inputs, real-data path, figures."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from csstz.build import build_dataset, build_from_config
from csstz.cli import main
from csstz.config import BuildConfig, ParallelConfig
from csstz.errors import FileFormatError, InputError
from csstz.io.spectra import read_attrs, read_catalog, read_spectra


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted in-process build: 30 galaxies in chunks of 5."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    build_from_config(out, BuildConfig(n=30, seed=11, chunk=5, progress=False))
    return out


def test_layout_and_contract(reference):
    s = read_spectra(reference)
    assert set(s.bands) == {"GU", "GV", "GI"}
    for b in s.bands.values():
        assert b.flux.shape == (30, len(b.wave_aa)) and b.flux.dtype == np.float32
    cat = read_catalog(reference)
    for col in (
        "TARGETID",
        "Z",
        "SHAPE_R",
        "SERSIC",
        "BA",
        "PA",
        "SNR_GU",
        "SNR_GV",
        "SNR_GI",
        "SNR_TOTAL",
        "SPLIT",
        "SDSS_INDEX",
        "MAG_GI",
    ):
        assert col in cat.colnames
    np.testing.assert_array_equal(cat["TARGETID"], np.arange(30))
    assert [int(np.sum(cat["SPLIT"] == k)) for k in ("train", "val", "test")] == [24, 3, 3]
    attrs = read_attrs(reference)
    assert attrs["seed"] == 11 and "bands" in attrs["instrument"] and attrs["csstz_version"]
    assert json.loads(attrs["population"])["source"] == "embedded"
    stored = yaml.safe_load(attrs["config"])  # the configuration that made it, readable with --config
    assert stored["build"]["n"] == 30 and stored["population"]["source"] == "embedded"
    assert not Path(str(reference) + ".partial").exists()


def test_crb_and_noiseless_spectra(reference, tmp_path):
    """ZERR_CRB for every row; flux_noiseless for train/val rows (NaN for test), the noisy flux scattering
    around it with the quoted errors; a file without flux_noiseless still reads."""
    from csstz.io.spectra import write_spectra

    s = read_spectra(reference, with_noiseless=True)
    cat = s.catalog
    crb = np.asarray(cat["ZERR_CRB"]) / (1 + np.asarray(cat["Z"]))
    assert np.all(crb > 0) and np.all(np.isfinite(crb)) and 1e-4 < np.median(crb) < 0.02, crb
    test = np.asarray(cat["SPLIT"]) == "test"
    for name, b in s.bands.items():
        assert b.flux_noiseless.shape == b.flux.shape and b.flux_noiseless.dtype == np.float32
        assert np.isnan(b.flux_noiseless[test]).all() and np.isfinite(b.flux_noiseless[~test]).all()
        ok = np.isfinite(b.err[~test]) & (b.err[~test] > 0)
        pull = ((b.flux[~test] - b.flux_noiseless[~test]) / b.err[~test])[ok]
        assert abs(np.mean(pull)) < 0.05 and 0.9 < np.std(pull) < 1.1, (name, np.mean(pull), np.std(pull))
    with h5py.File(reference) as h5:
        assert h5["GV/flux_noiseless"].attrs["unit"] == h5["GV/flux"].attrs["unit"]
    assert read_spectra(reference).bands["GV"].flux_noiseless is None  # only on request
    old = tmp_path / "old.h5"  # a file written before flux_noiseless existed
    plain = read_spectra(reference)
    write_spectra(old, plain)
    with h5py.File(old) as h5:
        assert "flux_noiseless" not in h5["GV"]
    again = read_spectra(old, with_noiseless=True)
    assert again.bands["GV"].flux_noiseless is None
    np.testing.assert_array_equal(again.bands["GV"].flux, plain.bands["GV"].flux)


def test_rows_equal_a_direct_draw(reference):
    """Row i of the file is galaxy TARGETID=i regenerated alone."""
    from csstz.population.embedded import get_population

    cat = read_catalog(reference)
    g = get_population().draw_one(11, 17, str(cat["SPLIT"][17]))
    assert cat["Z"][17] == g["Z"] and cat["SDSS_INDEX"][17] == g["SDSS_INDEX"]


def test_one_and_two_workers_give_identical_bytes(reference, tmp_path):
    out = tmp_path / "w2.h5"
    build_from_config(out, BuildConfig(n=30, seed=11, chunk=5, progress=False), parallel=ParallelConfig(workers=2))
    assert sha(out) == sha(reference)


def test_killed_build_resumes_to_identical_bytes(reference, tmp_path):
    out = tmp_path / "k.h5"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from csstz.cli import main; sys.exit(main(sys.argv[1:]))",
        "build",
        "--n",
        "30",
        "--out",
        str(out),
        "--seed",
        "11",
        "--chunk",
        "5",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env)
    manifest = Path(str(out) + ".partial") / "manifest.json"
    t0 = time.time()
    n_done = 0
    while time.time() - t0 < 120 and proc.poll() is None:
        try:
            n_done = len(json.loads(manifest.read_text())["done"])
        except (FileNotFoundError, ValueError, KeyError):
            n_done = 0
        if n_done >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= n_done < 6 and not out.exists(), "the build was not killed in the middle"
    assert subprocess.run(cmd, env=env).returncode == 0
    assert sha(out) == sha(reference)
    assert not Path(str(out) + ".partial").exists()


def test_truncated_chunk_is_rebuilt(reference, tmp_path):
    out = tmp_path / "t.h5"
    with pytest.raises(KeyboardInterrupt):
        _build_then_interrupt(out, after_chunks=3)
    chunk = Path(str(out) + ".partial") / "chunk_000001.h5"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=r"chunk\(s\) \[1\]"):
        build_from_config(out, BuildConfig(n=30, seed=11, chunk=5, progress=False))
    assert sha(out) == sha(reference)


def test_corrupt_manifest_is_a_clear_error_and_keeps_the_partial(tmp_path):
    out = tmp_path / "c.h5"
    with pytest.raises(KeyboardInterrupt):
        _build_then_interrupt(out, after_chunks=2)
    part = Path(str(out) + ".partial")
    (part / "manifest.json").write_text("{ not json")
    files_before = sorted(p.name for p in part.iterdir())
    with pytest.raises(FileFormatError, match="corrupt partial-build manifest"):
        build_dataset(out, 30, seed=11, chunk=5, progress=False)
    assert sorted(p.name for p in part.iterdir()) == files_before and not out.exists()


def test_partial_from_other_arguments_is_refused(tmp_path):
    out = tmp_path / "o.h5"
    with pytest.raises(KeyboardInterrupt):
        _build_then_interrupt(out, after_chunks=1)
    with pytest.raises(FileFormatError, match="seed"):
        build_dataset(out, 30, seed=12, chunk=5, progress=False)
    # a partial build of the layout before ZERR_CRB / flux_noiseless (no "layout" in its fingerprint)
    man_path = Path(str(out) + ".partial") / "manifest.json"
    man = json.loads(man_path.read_text())
    del man["fingerprint"]["layout"]
    man_path.write_text(json.dumps(man))
    with pytest.raises(FileFormatError, match="differs in layout"):
        build_dataset(out, 30, seed=11, chunk=5, progress=False)


def _build_then_interrupt(out, after_chunks):
    """Run a build in-process and stop it (KeyboardInterrupt) after some chunks are recorded."""
    from csstz.io import dataset_writer

    orig = dataset_writer.ChunkedDatasetWriter.write_chunk
    count = {"n": 0}

    def counting(self, k, bands, cat):
        orig(self, k, bands, cat)
        count["n"] += 1
        if count["n"] >= after_chunks:
            raise KeyboardInterrupt

    dataset_writer.ChunkedDatasetWriter.write_chunk = counting
    try:
        build_dataset(out, 30, seed=11, chunk=5, progress=False)
    finally:
        dataset_writer.ChunkedDatasetWriter.write_chunk = orig


@pytest.mark.parametrize("n", [0, -5])
def test_nonpositive_n(tmp_path, n, capsys):
    out = tmp_path / "x.h5"
    out.write_bytes(b"an earlier result")
    with pytest.raises(InputError, match="--n"):
        build_dataset(out, n)
    with pytest.raises(SystemExit) as exc:
        main(["build", "--n", str(n), "--out", str(out)])
    assert exc.value.code == 2 and "positive" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier result"  # nothing lost
    assert not Path(str(out) + ".partial").exists()


def test_desi_source_needs_its_files(tmp_path, capsys):
    rc = main(["build", "--n", "3", "--out", str(tmp_path / "d.h5"), "--source", "desi"])
    assert rc == 2 and "--zcat" in capsys.readouterr().err


def test_desi_build_end_to_end(tmp_path):
    from test_desi import write_desi_zcat, write_sweep, write_templates

    zp, sp, tp = tmp_path / "zall.fits", tmp_path / "sweep.fits", tmp_path / "rr.fits"
    rows = [dict() for _ in range(12)] + [dict(ZWARN=4)]
    write_desi_zcat(zp, rows)
    n = len(rows)
    write_sweep(sp, 10.0 + 0.01 * np.arange(n), np.full(n, -5.0))
    write_templates(tp)
    out = tmp_path / "desi.h5"
    rc = main(
        [
            "build",
            "--n",
            "12",
            "--out",
            str(out),
            "--source",
            "desi",
            "--zcat",
            str(zp),
            "--sweep",
            str(sp),
            "--templates",
            str(tp),
            "--chunk",
            "5",
            "--no-progress",
        ]
    )
    assert rc == 0
    cat = read_catalog(out)
    np.testing.assert_array_equal(cat["TARGETID"], np.arange(1000, 1012))
    assert set(cat["SURVEY"]) == {"DESI"} and np.all(np.isfinite(cat["SNR_GI"]))
    with h5py.File(out) as h5:
        assert h5["GI/flux"].shape == (12, len(h5["GI/wave"]))
    rc = main(
        [
            "build",
            "--n",
            "13",
            "--out",
            str(tmp_path / "d2.h5"),
            "--source",
            "desi",
            "--zcat",
            str(zp),
            "--sweep",
            str(sp),
            "--templates",
            str(tp),
        ]
    )
    assert rc == 2


def test_figures(reference, tmp_path):
    from csstz.population.figures import plot_dataset_figures

    paths = plot_dataset_figures(reference, tmp_path / "figs")
    assert [p.name for p in paths] == ["fig1_redshift.png", "fig2_morphology.png", "fig3_snr.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_existing_scheduler_gives_identical_bytes(reference, tmp_path):
    """--scheduler ADDRESS: an existing (here local) Dask cluster, same bytes as in-process."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "s.h5"
        assert (
            main(
                [
                    "build",
                    "--n",
                    "30",
                    "--out",
                    str(out),
                    "--seed",
                    "11",
                    "--chunk",
                    "5",
                    "--no-progress",
                    "--scheduler",
                    cluster.scheduler_address,
                ]
            )
            == 0
        )
    assert sha(out) == sha(reference)
