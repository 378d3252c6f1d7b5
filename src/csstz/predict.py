"""Redshifts with uncertainties from a trained run: backbone once, head N times.

For each spectrum the frozen backbone runs once; the Bayesian head then runs ``samples``
times (default 200) on the cached features (each pass one weight-noise draw):

* ``Z`` = mean of the ``samples`` predicted means;
* ``ZERR_EPISTEMIC`` = standard deviation of the means;
* ``ZERR_ALEATORIC`` = root mean square of the predicted widths;
* ``ZERR_UNCAL`` = the two in quadrature (before calibration);
* ``ZERR`` = calibrated 1-sigma: half-width of the calibrated 68.27% central interval
  (``csstz.calibrate``; the calibration fitted on the validation split by ``train``).

``model="cnn"`` uses the CNN alone: Z = its output, and ``ZERR = ZERR_UNCAL =``
sigma_NMAD of the CNN on the validation split times (1 + Z) (no per-object error).

ZWARN bits (:class:`csstz.zwarn.ZWARN`, 0 = nothing to distrust):

* ``LITTLE_COVERAGE``: fewer than ``MIN_VALID_FRAC`` (50%) of the input pixels are valid;
* ``Z_FITLIMIT``: the 1-sigma interval [Z - ZERR, Z + ZERR] reaches outside the redshift
  range of the training split (extrapolation, or piled up at the edge);
* ``EPISTEMIC``: ZERR_EPISTEMIC > ZERR_ALEATORIC (the model, not the noise, is unsure;
  BNN only);
* ``BAD_MINFIT``: non-finite output (Z/ZERR are then NaN).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from .calibrate import CALIBRATION_FILE, P68, P95, Calibration
from .errors import FileFormatError, InputError
from .io.predictions import write_predictions
from .io.torch_dataset import SpectraDataset, split_rows
from .train.checkpoint import BNN_FILE, CNN_FILE, file_checksum, load_model

from .zwarn import ZWARN, flag_where

# names of the bits as this module uses them
ZWARN_LOW_VALID = ZWARN.LITTLE_COVERAGE
ZWARN_Z_EDGE = ZWARN.Z_FITLIMIT
ZWARN_EPISTEMIC = ZWARN.EPISTEMIC
ZWARN_BAD_OUTPUT = ZWARN.BAD_MINFIT
MIN_VALID_FRAC = 0.5
#: Rows (passes x spectra) of one head evaluation kept in memory at once.
HEAD_ROWS = 65536


@torch.no_grad()
def bnn_moments(bnn, feats: torch.Tensor, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head ``samples`` times on cached features.

    The passes run in groups of ``HEAD_ROWS // B`` (each pass one weight draw shared by
    the B spectra, see ``csstz.models.bayesian``); sums of mu, mu^2 and sigma^2 are kept
    in float64.

    Parameters
    ----------
    bnn : csstz.models.heads.BNN (eval mode)
    feats : Tensor, shape (B, F)
    samples : int

    Returns
    -------
    z, zerr_epistemic, zerr_aleatoric : ndarray, shape (B,)
    """
    n = feats.shape[0]
    s1 = torch.zeros(n, dtype=torch.float64)
    s2 = torch.zeros(n, dtype=torch.float64)
    v = torch.zeros(n, dtype=torch.float64)
    group = max(1, HEAD_ROWS // max(n, 1))
    done = 0
    while done < samples:
        k = min(group, samples - done)
        mu, sigma = bnn.head_forward(feats[None], n_samples=k)                     # (k, B)
        mu = mu.double()
        s1 += mu.sum(0)
        s2 += (mu * mu).sum(0)
        v += (sigma.double() ** 2).sum(0)
        done += k
    z = s1 / samples
    epi = torch.sqrt(torch.clamp(s2 / samples - z * z, min=0.0))
    return z.numpy(), epi.numpy(), torch.sqrt(v / samples).numpy()


@torch.no_grad()
def predict_dataset(model, kind: str, ds: SpectraDataset, samples: int = 200, batch_size: int = 1024,
                    seed: int = 0) -> dict:
    """Raw (uncalibrated) predictions for every item of a dataset, streamed in batches.

    Returns
    -------
    dict of ndarray, shape (N,)
        ``z``, ``zerr_epistemic``, ``zerr_aleatoric`` (NaN for the CNN), ``n_valid``.
    """
    if samples < 1 or batch_size < 1:
        raise InputError("samples", "samples and batch_size must be >= 1", value=(samples, batch_size))
    torch.manual_seed(int(seed))
    model.eval()
    # BatchNorm folded into the convolutions (prediction only; same output to ~1e-6)
    cnn = model.fused_copy() if kind == "cnn" else model.backbone.cnn.fused_copy()
    parts = {"z": [], "zerr_epistemic": [], "zerr_aleatoric": [], "n_valid": []}
    for start in range(0, len(ds), batch_size):
        idx = np.arange(start, min(start + batch_size, len(ds)))
        x, nv = ds.read(idx)
        xt = torch.from_numpy(x)
        if kind == "cnn":
            z = cnn(xt).double().numpy()
            epi = ale = np.full(z.shape, np.nan)
        else:
            z, epi, ale = bnn_moments(model, cnn.features(xt), samples)
        for key, val in zip(parts, (z, epi, ale, nv)):
            parts[key].append(val)
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}


def zwarn_bits(z, zerr, n_valid, n_pixels, z_range, epistemic=None, aleatoric=None) -> np.ndarray:
    """ZWARN (int32) from the module docstring's rules."""
    z, zerr = np.asarray(z, np.float64), np.asarray(zerr, np.float64)
    w = np.zeros(z.shape, np.int32)
    w |= flag_where(np.asarray(n_valid) < MIN_VALID_FRAC * n_pixels, ZWARN_LOW_VALID)
    with np.errstate(invalid="ignore"):
        edge = (z - zerr < z_range[0]) | (z + zerr > z_range[1])
    w |= flag_where(edge, ZWARN_Z_EDGE)
    if epistemic is not None:
        with np.errstate(invalid="ignore"):
            w |= flag_where(np.asarray(epistemic) > np.asarray(aleatoric), ZWARN_EPISTEMIC)
    bad = ~(np.isfinite(z) & np.isfinite(zerr))
    w |= flag_where(bad, ZWARN_BAD_OUTPUT)
    return w


def _run_meta(run_dir: Path) -> dict:
    p = run_dir / "summary.json"
    if not p.is_file():
        raise FileFormatError(str(p), "run summary missing (is this a `csstz train` run directory?)")
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise FileFormatError(str(p), f"unreadable run summary ({exc})") from None


def predict_file(run_dir, spectra_path, out_path, samples: int = 200, split: str | None = None, seed: int = 0,
                 model: str = "bnn", batch_size: int = 1024) -> Table:
    """Predict redshifts for a spectra file and write the predictions FITS.

    Parameters
    ----------
    run_dir : path-like
        Directory written by ``csstz train`` (cnn.pt, bnn.pt, calibration.json, summary.json).
    spectra_path : path-like
        Spectra HDF5 (needs the bands the model was trained on).
    out_path : path-like or None
        Output FITS (None: do not write).
    samples : int
        Head passes per spectrum (BNN).
    split : str, optional
        Only rows whose catalogue SPLIT equals this.
    seed : int
        Seed of the head's noise (same seed, same output).
    model : {"bnn", "cnn"}
    batch_size : int
        Spectra per backbone batch.

    Returns
    -------
    astropy.table.Table
        TARGETID, Z, ZERR, ZWARN, ZERR_UNCAL (+ ZERR_EPISTEMIC, ZERR_ALEATORIC for the BNN).

    Raises
    ------
    InputError, FileFormatError
    """
    if model not in ("bnn", "cnn"):
        raise InputError("model", "unknown model", value=model, allowed="bnn, cnn")
    run_dir = Path(run_dir)
    meta = _run_meta(run_dir)
    model_path = run_dir / (BNN_FILE if model == "bnn" else CNN_FILE)
    net, payload = load_model(model_path)
    cfg = payload["config"]
    rows = split_rows(spectra_path, split)
    ds = SpectraDataset(spectra_path, rows, bands=tuple(cfg["bands"]), augment=False)
    raw = predict_dataset(net, model, ds, samples=samples, batch_size=batch_size, seed=seed)
    z = raw["z"]
    tab = Table()
    tab["TARGETID"] = ds.targetid
    tab["Z"] = z
    header = {"METHOD": f"csstz-{model}" + (f"-{cfg['head']}" if model == "bnn" else ""),
              "MODELSUM": file_checksum(model_path), "SEED": int(seed)}
    if model == "bnn":
        uncal = np.hypot(raw["zerr_epistemic"], raw["zerr_aleatoric"])
        cal_path = run_dir / CALIBRATION_FILE
        cal = Calibration.load(cal_path) if cal_path.is_file() else Calibration("none")
        zerr = cal.zerr(uncal)
        tab["ZERR"] = zerr
        tab["ZERR_EPISTEMIC"] = raw["zerr_epistemic"]
        tab["ZERR_ALEATORIC"] = raw["zerr_aleatoric"]
        tab["ZERR_UNCAL"] = uncal
        # the calibrated central intervals themselves (a Beta map may be asymmetric about Z)
        for name, level in (("68", P68), ("95", P95)):
            lo, hi = cal.interval(z, uncal, level)
            tab[f"Z_LO{name}"], tab[f"Z_HI{name}"] = lo, hi
        header.update(cal.header())
        header["NSAMPLE"] = int(samples)
        warn = zwarn_bits(z, zerr, raw["n_valid"], ds.length, meta["z_range"],
                          raw["zerr_epistemic"], raw["zerr_aleatoric"])
    else:
        snmad = float(meta["cnn"]["val_sigma_nmad"])
        zerr = snmad * (1.0 + z)
        tab["ZERR"] = zerr
        tab["ZERR_UNCAL"] = zerr
        header.update({"CALMETH": "cnn-val-nmad", "CNNNMAD": snmad})
        warn = zwarn_bits(z, zerr, raw["n_valid"], ds.length, meta["z_range"])
    bad = (warn & int(ZWARN_BAD_OUTPUT)) > 0
    for col in ("Z", "ZERR"):
        tab[col][bad] = np.nan
    tab["ZWARN"] = warn
    if out_path is not None:
        write_predictions(out_path, tab, header)
    tab.meta.update(header)
    return tab


def predict_from_args(a) -> Table:
    """``csstz predict`` entry point."""
    return predict_file(a.run_dir, a.spectra, a.out, samples=a.samples, split=a.split, seed=a.seed,
                        model=getattr(a, "model", "bnn"), batch_size=a.batch_size)


__all__ = ["predict_file", "predict_from_args", "predict_dataset", "bnn_moments", "zwarn_bits",
           "ZWARN_LOW_VALID", "ZWARN_Z_EDGE", "ZWARN_EPISTEMIC", "ZWARN_BAD_OUTPUT", "MIN_VALID_FRAC"]
