"""Prediction: columns and header, fixed-seed reproducibility, save/load round trip, ZWARN bits,
CNN-only mode, split selection, and the command line."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from csstz.cli import main  # noqa: E402
from csstz.io.predictions import read_predictions  # noqa: E402
from csstz.io.spectra import read_catalog, read_spectra, split_rows, write_spectra  # noqa: E402
from csstz.io.torch_dataset import SpectraDataset  # noqa: E402
from csstz.pipeline import predict_calibrated, train_and_calibrate  # noqa: E402
from csstz.predict import ZWARN_EPISTEMIC, ZWARN_LOW_VALID, ZWARN_Z_EDGE, predict_dataset, predict_file, zwarn_bits  # noqa: E402
from csstz.train.checkpoint import file_checksum, load_model, save_model  # noqa: E402
from csstz.train.config import TrainConfig  # noqa: E402
from synth_dataset import make_dataset  # noqa: E402

TINY = dict(
    widths=(4, 4, 8, 8, 8, 8, 16, 16),
    stem_channels=8,
    head_hidden=(16, 8),
    flow_hidden=8,
    batch_size=32,
    progress=False,
    calib_samples=10,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pred")
    data = base / "synthetic.h5"
    make_dataset(data, n=300, seed=3)
    train_and_calibrate(data, base / "run", TrainConfig(estimator="paper", epochs=1, bnn_epochs=1, **TINY))
    return base / "run", data


def test_columns_header_and_split(run, tmp_path):
    run_dir, data = run
    out = tmp_path / "pred.fits"
    tab = predict_calibrated(run_dir, data, out, samples=20, split="test", seed=0)
    cat = read_catalog(data)
    n_test = int(np.sum(cat["SPLIT"] == "test"))
    back = read_predictions(out)
    assert len(back) == len(tab) == n_test
    for col in ("TARGETID", "Z", "ZERR", "ZWARN", "ZERR_EPISTEMIC", "ZERR_ALEATORIC", "ZERR_UNCAL"):
        assert col in back.colnames
    assert np.array_equal(back["TARGETID"], cat["TARGETID"][cat["SPLIT"] == "test"])
    np.testing.assert_allclose(back["ZERR_UNCAL"], np.hypot(back["ZERR_EPISTEMIC"], back["ZERR_ALEATORIC"]), rtol=1e-12)
    assert np.all(back["ZERR_EPISTEMIC"] > 0)
    assert back.meta["MODELSUM"] == file_checksum(run_dir / "bnn.pt")
    assert back.meta["METHOD"] == "csstz-bnn-mnf"
    assert back.meta["CALMETH"] == "beta"
    np.testing.assert_allclose(back["ZERR"], back.meta["CALK68"] * back["ZERR_UNCAL"], rtol=1e-6)


def test_predict_applies_only_the_calibration_it_is_given(run):
    """predict_file alone is uncalibrated (ZERR = ZERR_UNCAL); the pipeline applies the run's calibration."""
    run_dir, data = run
    raw = predict_file(run_dir, data, None, samples=10, split="val", seed=1)
    cal = predict_calibrated(run_dir, data, None, samples=10, split="val", seed=1)
    np.testing.assert_array_equal(raw["ZERR"], raw["ZERR_UNCAL"])
    assert raw.meta["CALMETH"] == "none" and cal.meta["CALMETH"] == "beta"
    np.testing.assert_array_equal(raw["Z"], cal["Z"])
    np.testing.assert_allclose(cal["ZERR"], cal.meta["CALK68"] * raw["ZERR_UNCAL"], rtol=1e-6)


def test_fixed_seed_is_reproducible(run):
    run_dir, data = run
    a = predict_file(run_dir, data, None, samples=15, split="val", seed=7)
    b = predict_file(run_dir, data, None, samples=15, split="val", seed=7)
    c = predict_file(run_dir, data, None, samples=15, split="val", seed=8)
    assert np.array_equal(a["Z"], b["Z"]) and np.array_equal(a["ZERR"], b["ZERR"])
    assert not np.array_equal(a["Z"], c["Z"])


def test_save_load_predict_identical(run, tmp_path):
    run_dir, data = run
    bnn, payload = load_model(run_dir / "bnn.pt")
    save_model(tmp_path / "copy.pt", bnn, "bnn", payload["config"], payload["meta"])
    bnn2, _ = load_model(tmp_path / "copy.pt")
    ds = SpectraDataset(data, split_rows(data, "val"))
    r1 = predict_dataset(bnn, "bnn", ds, samples=12, seed=5)
    r2 = predict_dataset(bnn2, "bnn", ds, samples=12, seed=5)
    for key in r1:
        assert np.array_equal(r1[key], r2[key]), key


def test_cached_backbone_matches_full_passes_in_distribution(run):
    """The head on cached features gives the same mean as full per-pass evaluation (same model)."""
    run_dir, data = run
    bnn, _ = load_model(run_dir / "bnn.pt")
    ds = SpectraDataset(data, split_rows(data, "val")[:8])
    x, _ = ds.read(np.arange(len(ds)))
    torch.manual_seed(0)
    with torch.no_grad():
        full = torch.stack([bnn(torch.from_numpy(x))[0] for _ in range(300)]).numpy()
    cached = predict_dataset(bnn, "bnn", ds, samples=300, seed=1)
    tol = 5 * full.std(0) / np.sqrt(300) + 1e-6
    assert np.all(np.abs(full.mean(0) - cached["z"]) < tol)


def test_cnn_mode(run, tmp_path):
    run_dir, data = run
    tab = predict_file(run_dir, data, tmp_path / "cnn.fits", split="test", model="cnn")
    back = read_predictions(tmp_path / "cnn.fits")
    assert back.meta["METHOD"] == "csstz-cnn"
    np.testing.assert_allclose(back["ZERR"], back.meta["CNNNMAD"] * (1 + back["Z"]), rtol=1e-6)
    assert "ZERR_EPISTEMIC" not in tab.colnames


def test_masked_spectrum_is_flagged(run, tmp_path):
    run_dir, data = run
    sp = read_spectra(data, rows=slice(0, 10))
    for band in sp.bands.values():
        band.err[3] = np.inf
    write_spectra(tmp_path / "masked.h5", sp)
    tab = predict_file(run_dir, tmp_path / "masked.h5", None, samples=5)
    assert tab["ZWARN"][3] & ZWARN_LOW_VALID
    assert np.isfinite(tab["Z"][3])


def test_zwarn_rules():
    w = zwarn_bits(
        z=[0.5, 0.02, 0.5, 0.5],
        zerr=[0.01, 0.05, 0.01, 0.01],
        n_valid=[900, 900, 100, 900],
        n_pixels=926,
        z_range=(0.0, 1.5),
        epistemic=[0.001, 0.001, 0.001, 0.02],
        aleatoric=[0.01, 0.01, 0.01, 0.01],
    )
    assert list(w) == [0, ZWARN_Z_EDGE, ZWARN_LOW_VALID, ZWARN_EPISTEMIC]


def test_cli_predict_and_errors(run, tmp_path, capsys):
    run_dir, data = run
    out = tmp_path / "cli.fits"
    assert main(["predict", str(run_dir), str(data), "--out", str(out), "--samples", "5", "--split", "val"]) == 0
    assert out.is_file()
    assert main(["predict", str(tmp_path / "norun"), str(data), "--out", str(tmp_path / "x.fits")]) == 2
    assert "summary" in capsys.readouterr().err
    assert main(["predict", str(run_dir), str(data), "--out", str(tmp_path / "y.fits"), "--split", "nope"]) == 2
    assert not (tmp_path / "y.fits").exists()
    assert (
        main(
            [
                "predict",
                str(run_dir),
                str(data),
                "--out",
                str(tmp_path / "z.fits"),
                "--config",
                str(tmp_path / "missing.yaml"),
            ]
        )
        == 2
    )
    assert "missing.yaml" in capsys.readouterr().err


def test_foreign_model_file_is_one_line_naming_the_file(run, tmp_path, capsys):
    """A model file that is not a csstz file (here a text file, and a pickle of a live object) gives one
    line naming the file, not PyTorch's pages of advice."""
    import shutil

    run_dir, data = run
    for i, content in enumerate((b"not a model at all", None)):
        bad_run = tmp_path / f"bad{i}"
        shutil.copytree(run_dir, bad_run)
        if content is None:
            torch.save(torch.nn.Linear(2, 2), bad_run / "bnn.pt")  # a pickled module: refused by weights_only
        else:
            (bad_run / "bnn.pt").write_bytes(content)
        assert main(["predict", str(bad_run), str(data), "--out", str(tmp_path / "w.fits"), "--samples", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad_run / "bnn.pt") in err and "not a csstz model file" in err
        assert len(err) < 300


def test_zwarn_bits_follow_redrock_where_they_overlap():
    from csstz.zwarn import ZWARN, names

    assert int(ZWARN.SMALL_DELTA_CHI2) == 4 and int(ZWARN.Z_FITLIMIT) == 32 and int(ZWARN.BAD_TARGET) == 256
    assert int(ZWARN.LITTLE_COVERAGE) == 2 and int(ZWARN.BAD_MINFIT) == 1024
    assert names(ZWARN_Z_EDGE | ZWARN_EPISTEMIC) == ["Z_FITLIMIT", "EPISTEMIC"]
    assert {int(b) for b in ZWARN} == {1 << i for i in range(12)} | {1 << 16, 1 << 17, 1 << 18}
