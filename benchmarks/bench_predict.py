"""Prediction speed: backbone once + head N times on cached features, against N full passes.

Writes ``benchmarks/results/predict.json``: spectra/s of ``csstz.predict.predict_dataset``
(HDF5 read + normalisation + backbone + ``--samples`` head passes) for each head kind at
the default widths, the same with N full passes (backbone + head each time) on a subset,
and the head-only (200 passes on cached features of 1024 spectra) and backbone-only rates.
Weights are untrained (speed does not depend on their values).

Usage: python benchmarks/bench_predict.py [--threads 2] [--samples 200] [--n 4000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from csstz.io.run_dir import write_text  # noqa: E402
from csstz.io.torch_dataset import SpectraDataset  # noqa: E402
from csstz.models.factory import build_bnn  # noqa: E402
from csstz.predict import bnn_moments, predict_dataset  # noqa: E402
from csstz.train.config import TrainConfig  # noqa: E402
from synth_dataset import make_dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--n-full", type=int, default=64, help="spectra for the full-pass comparison")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = {
        "threads": a.threads,
        "samples": a.samples,
        "n_spectra": a.n,
        "heads": {},
        "note": "2-core machine shared with other jobs: rates are noisy (+-30%)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        make_dataset(path, n=a.n, seed=5)
        ds = SpectraDataset(path, np.arange(a.n))
        for kind in ("mnf", "flipout", "mcdropout"):
            cfg = TrainConfig(head=kind).to_dict() | {"z_init": 0.5}
            bnn = build_bnn(cfg).eval()
            predict_dataset(bnn, "bnn", SpectraDataset(path, np.arange(64)), samples=a.samples)  # warm-up
            t0 = time.perf_counter()
            predict_dataset(bnn, "bnn", ds, samples=a.samples, batch_size=1024)
            cached = a.n / (time.perf_counter() - t0)
            x, _ = ds.read(np.arange(min(1024, a.n)))
            xt = torch.from_numpy(x)
            with torch.no_grad():
                t0 = time.perf_counter()
                feats = bnn.backbone.cnn.fused_copy().features(xt)  # as in predict (BN folded)
                backbone_only = xt.shape[0] / (time.perf_counter() - t0)
                t0 = time.perf_counter()
                bnn_moments(bnn, feats, a.samples)
                head_only = xt.shape[0] / (time.perf_counter() - t0)
                xt = xt[: a.n_full]
                t0 = time.perf_counter()
                for _ in range(a.samples):
                    bnn(xt)
                full = a.n_full / (time.perf_counter() - t0)
            res["heads"][kind] = {
                "cached_backbone_spectra_per_s": cached,
                "full_passes_spectra_per_s": full,
                "head_only_spectra_per_s": head_only,
                "backbone_only_spectra_per_s": backbone_only,
                "speedup": cached / full,
            }
    res["target_spectra_per_s"] = 2000
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
