"""Redshifts with uncertainties from a trained run: backbone once, head N times.

For each spectrum the frozen backbone runs once; the Bayesian head then runs ``samples``
times (default 200) on the cached features (each pass one weight-noise draw):

* ``Z`` = mean of the ``samples`` predicted means;
* ``ZERR_EPISTEMIC`` = standard deviation of the means;
* ``ZERR_ALEATORIC`` = root mean square of the predicted widths;
* ``ZERR_UNCAL`` = the two in quadrature (before calibration);
* ``ZERR`` = calibrated 1-sigma: half-width of the calibrated 68.27% central interval, when a
  calibration is passed in (``csstz.calibrate``; :mod:`csstz.pipeline` passes the one fitted
  on the validation split); without one, ``ZERR = ZERR_UNCAL``.

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

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from astropy.table import Table
from scipy.special import ndtri

from .config import PredictConfig
from .errors import InputError
from .io.predictions import write_predictions
from .io.run_dir import read_summary
from .io.spectra import split_rows
from .io.torch_dataset import SpectraDataset
from .schema import BNN_FILE, CNN_FILE, INTERVALS, MODEL_KINDS
from .train.checkpoint import file_checksum, load_model
from .zwarn import ZWARN, flag_where

if TYPE_CHECKING:
    from ._types import ArrayLike, PathLike
    from .models.heads import BNN
    from .models.resnet1d import ResNet1d

# names of the bits as this module uses them
ZWARN_LOW_VALID = ZWARN.LITTLE_COVERAGE
ZWARN_Z_EDGE = ZWARN.Z_FITLIMIT
ZWARN_EPISTEMIC = ZWARN.EPISTEMIC
ZWARN_BAD_OUTPUT = ZWARN.BAD_MINFIT
MIN_VALID_FRAC = 0.5
#: Rows (passes x spectra) of one head evaluation kept in memory at once.
HEAD_ROWS = 65536


@torch.no_grad()
def bnn_moments(bnn: BNN, feats: torch.Tensor, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        mu, sigma = bnn.head_forward(feats[None], n_samples=k)  # (k, B)
        mu = mu.double()
        s1 += mu.sum(0)
        s2 += (mu * mu).sum(0)
        v += (sigma.double() ** 2).sum(0)
        done += k
    z = s1 / samples
    epi = torch.sqrt(torch.clamp(s2 / samples - z * z, min=0.0))
    return z.numpy(), epi.numpy(), torch.sqrt(v / samples).numpy()


@torch.no_grad()
def predict_dataset(
    model: ResNet1d | BNN,
    kind: str,
    ds: SpectraDataset,
    samples: int = PredictConfig.samples,
    batch_size: int = PredictConfig.batch_size,
    seed: int = PredictConfig.seed,
) -> dict:
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


def zwarn_bits(
    z: ArrayLike,
    zerr: ArrayLike,
    n_valid: ArrayLike,
    n_pixels: int,
    z_range: tuple[float, float],
    epistemic: ArrayLike | None = None,
    aleatoric: ArrayLike | None = None,
) -> np.ndarray:
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


def predict_validation(
    run_dir: PathLike,
    dataset_path: PathLike,
    rows: np.ndarray,
    model: str,
    samples: int = PredictConfig.samples,
    seed: int = PredictConfig.seed,
    batch_size: int = 512,
) -> dict:
    """Raw predictions of a run's network on given (validation) rows: the input of the calibration fit.

    Returns
    -------
    dict of ndarray, shape (M,)
        As :func:`predict_dataset`, plus ``z_true`` (the catalogue Z).
    """
    if model not in MODEL_KINDS:
        raise InputError("model", "unknown model", value=model, allowed=", ".join(MODEL_KINDS))
    net, payload = load_model(Path(run_dir) / (BNN_FILE if model == "bnn" else CNN_FILE))
    ds = SpectraDataset(dataset_path, rows, bands=tuple(payload["config"]["bands"]), augment=False)
    raw = predict_dataset(net, model, ds, samples=samples, batch_size=batch_size, seed=seed)
    raw["z_true"] = ds.z.astype(np.float64)
    return raw


def _gaussian_interval(z: np.ndarray, sigma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    half = ndtri(0.5 + level / 2) * sigma
    return z - half, z + half


def predict_file(
    run_dir: PathLike,
    spectra_path: PathLike,
    out_path: PathLike,
    config: PredictConfig | None = None,
    calibration: Any = None,
    **overrides: Any,
) -> Table:
    """Predict redshifts for a spectra file and (optionally) write the predictions FITS.

    Parameters
    ----------
    run_dir : path-like
        Directory written by ``csstz train`` (cnn.pt, bnn.pt, summary.json).
    spectra_path : path-like
        Spectra HDF5 (needs the bands the model was trained on).
    out_path : path-like or None
        Output FITS (None: do not write).
    config : PredictConfig, optional
        samples, seed, batch size, model ("bnn" or "cnn") and split; ``overrides`` replace
        single fields (``samples=20``).
    calibration : csstz.calibrate.Calibration, optional
        Applied to the BNN's uncertainties (anything with ``zerr``, ``interval`` and
        ``header``); None: uncalibrated (ZERR = ZERR_UNCAL).

    Returns
    -------
    astropy.table.Table
        TARGETID, Z, ZERR, ZWARN, ZERR_UNCAL (+ ZERR_EPISTEMIC, ZERR_ALEATORIC, Z_LO68, Z_HI68,
        Z_LO95, Z_HI95 for the BNN).

    Raises
    ------
    InputError, FileFormatError
    """
    cfg = (config or PredictConfig()).replace(**overrides) if overrides else (config or PredictConfig())
    model, samples, seed = cfg.model or "bnn", cfg.samples, cfg.seed
    run_dir = Path(run_dir)
    meta = read_summary(run_dir)
    model_path = run_dir / (BNN_FILE if model == "bnn" else CNN_FILE)
    net, payload = load_model(model_path)
    mcfg = payload["config"]
    rows = split_rows(spectra_path, cfg.split)
    ds = SpectraDataset(spectra_path, rows, bands=tuple(mcfg["bands"]), augment=False)
    raw = predict_dataset(net, model, ds, samples=samples, batch_size=cfg.batch_size, seed=seed)
    z = raw["z"]
    tab = Table()
    tab["TARGETID"] = ds.targetid
    tab["Z"] = z
    header = {
        "METHOD": f"csstz-{model}" + (f"-{mcfg['head']}" if model == "bnn" else ""),
        "MODELSUM": file_checksum(model_path),
        "SEED": int(seed),
    }
    if model == "bnn":
        uncal = np.hypot(raw["zerr_epistemic"], raw["zerr_aleatoric"])
        zerr = uncal if calibration is None else calibration.zerr(uncal)
        tab["ZERR"] = zerr
        tab["ZERR_EPISTEMIC"] = raw["zerr_epistemic"]
        tab["ZERR_ALEATORIC"] = raw["zerr_aleatoric"]
        tab["ZERR_UNCAL"] = uncal
        # the calibrated central intervals themselves (a Beta map may be asymmetric about Z)
        for name, level in INTERVALS:
            lo, hi = (
                _gaussian_interval(z, uncal, level) if calibration is None else calibration.interval(z, uncal, level)
            )
            tab[f"Z_LO{name}"], tab[f"Z_HI{name}"] = lo, hi
        header.update({"CALMETH": "none", "CALK68": 1.0} if calibration is None else calibration.header())
        header["NSAMPLE"] = int(samples)
        warn = zwarn_bits(
            z, zerr, raw["n_valid"], ds.length, meta["z_range"], raw["zerr_epistemic"], raw["zerr_aleatoric"]
        )
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
        write_predictions(out_path, tab, header, config={"predict": cfg.to_dict()})
    tab.meta.update(header)
    return tab


__all__ = [
    "predict_file",
    "predict_validation",
    "predict_dataset",
    "bnn_moments",
    "zwarn_bits",
    "ZWARN_LOW_VALID",
    "ZWARN_Z_EDGE",
    "ZWARN_EPISTEMIC",
    "ZWARN_BAD_OUTPUT",
    "MIN_VALID_FRAC",
]
