"""Training speed and memory of the csstz CNN on this machine (CPU), written to JSON.

Measures (fp32 unless said, torch threads = --threads):
1. optimiser steps on in-memory batches: samples/s for several widths and batch sizes,
   and bf16 autocast at the default width;
2. one Lightning epoch streamed from an HDF5 file (the real training path, augmentation on);
3. peak resident memory of a training process on datasets of two sizes (flat in size);
4. the projected time of the paper's recipe (600k spectra x 50 realisations x 100 epochs):
   on this CPU from the measured rate at the authors' widths, and on one GPU as an
   ESTIMATE from the network's FLOPs and an assumed sustained GPU throughput (no GPU was
   measured unless ``--gpu-rate`` is given from a real measurement).

Usage: python benchmarks/bench_train.py [--threads 2] [--out benchmarks/results/train.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from csstz.io.run_dir import write_text  # noqa: E402
from csstz.models.resnet1d import AUTHORS_WIDTHS, ResNet1d  # noqa: E402
from csstz.train.config import CPU_WIDTHS, TrainConfig  # noqa: E402
from synth_dataset import make_dataset  # noqa: E402

L_PIX = 926  # GV 464 + GI 462 pixels (default instrument)
PAPER_SAMPLES = 600_000 * 50 * 100  # the paper's sec. 3.2 (docs/design.md, Training)


def step_rate(widths, batch, steps=4, bf16=False) -> float:
    net = ResNet1d(widths=widths)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, z = torch.randn(batch, 2, L_PIX), torch.rand(batch)
    t0 = None
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (net(x).float() - z).abs().mean()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def forward_macs(widths) -> float:
    """Multiply-accumulates of one forward pass of one spectrum."""
    net = ResNet1d(widths=widths).eval()
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv1d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += out.numel() * mod.in_features

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.randn(1, 2, L_PIX))
    for h in hs:
        h.remove()
    return float(total[0])


CHILD = """
import resource, sys, time, json
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads({threads})
from csstz.train.cnn_stage import CNNModule, fit_stage, make_loaders
from csstz.train.config import TrainConfig
from csstz.io.spectra import split_rows
cfg = TrainConfig(progress=False).to_dict() | {{"z_init": 0.5}}
tr, va = split_rows({path!r}, "train"), split_rows({path!r}, "val")
tdl, vdl = make_loaders({path!r}, tr, va, cfg)
t = time.perf_counter()
_, hist, wall = fit_stage(CNNModule(cfg), tdl, vdl, cfg, {ck!r}, 1, "bench")
print(json.dumps({{"n_train": int(tr.size), "n_val": int(va.size), "wall_s": wall,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def epoch_run(path, threads, tmp) -> dict:
    code = CHILD.format(
        tests=str(ROOT / "tests"), threads=threads, path=str(path), ck=str(Path(tmp) / f"ck{path.stem}")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["train_samples_per_s_incl_val"] = (res["n_train"] + res["n_val"]) / res["wall_s"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    ap.add_argument(
        "--gpu-tflops",
        type=float,
        default=200.0,
        help="ASSUMED sustained bf16 throughput of one GPU for the estimate (H100: ~990 dense peak)",
    )
    ap.add_argument("--gpu-rate", type=float, default=None, help="a MEASURED GPU samples/s, if one exists")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = {
        "machine": platform.processor() or platform.machine(),
        "threads": a.threads,
        "torch": torch.__version__,
        "input_pixels": L_PIX,
        "steps": [],
        "note": "2-core machine shared with other jobs: rates are noisy (+-30%)",
    }
    step_rate(CPU_WIDTHS, 32, steps=2)  # warm-up (thread pool, allocator), discarded
    for widths, batches in (
        (CPU_WIDTHS, (32, 64, 128, 256)),
        ((8, 8, 16, 16, 32, 32, 64, 64), (64,)),
        ((32, 32, 64, 64, 128, 128, 256, 256), (64,)),
        (AUTHORS_WIDTHS, (64,)),
    ):
        n_par = sum(p.numel() for p in ResNet1d(widths=widths).parameters())
        for b in batches:
            res["steps"].append(
                {
                    "widths": list(widths),
                    "params": n_par,
                    "batch": b,
                    "dtype": "fp32",
                    "samples_per_s": step_rate(widths, b),
                }
            )
    res["steps"].append(
        {
            "widths": list(CPU_WIDTHS),
            "batch": 64,
            "dtype": "bf16-autocast",
            "samples_per_s": step_rate(CPU_WIDTHS, 64, bf16=True),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for n in (2000, 8000):
            p = Path(tmp) / f"bench{n}.h5"
            make_dataset(p, n=n, seed=n)
            runs.append(epoch_run(p, a.threads, tmp) | {"n_file": n})
        res["lightning_epoch"] = runs
    default = TrainConfig()
    res["default"] = {"widths": list(default.widths), "batch_size": default.batch_size, "lr": default.lr}
    rate_auth = next(s["samples_per_s"] for s in res["steps"] if s["widths"] == list(AUTHORS_WIDTHS))
    rate_def = next(
        s["samples_per_s"]
        for s in res["steps"]
        if s["widths"] == list(CPU_WIDTHS) and s["batch"] == 64 and s["dtype"] == "fp32"
    )
    macs = forward_macs(AUTHORS_WIDTHS)
    gpu_rate_est = a.gpu_tflops * 1e12 / (3 * 2 * macs)  # training ~ 3x forward FLOPs, 2 FLOP per MAC
    res["paper_recipe"] = {
        "samples": PAPER_SAMPLES,
        "cpu_authors_widths_days": PAPER_SAMPLES / rate_auth / 86400,
        "cpu_default_widths_days": PAPER_SAMPLES / rate_def / 86400,
        "authors_forward_macs_per_spectrum": macs,
        "gpu_estimate": {
            "assumed_sustained_tflops": a.gpu_tflops,
            "samples_per_s": gpu_rate_est,
            "hours": PAPER_SAMPLES / gpu_rate_est / 3600,
            "note": "ESTIMATE from FLOPs, not a measurement (no GPU was lent to this task)",
        },
    }
    if a.gpu_rate:
        res["paper_recipe"]["gpu_measured"] = {"samples_per_s": a.gpu_rate, "hours": PAPER_SAMPLES / a.gpu_rate / 3600}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
