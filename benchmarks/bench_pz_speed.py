"""Speed of the default p(z) estimator: prediction end to end, its parts, and the training rate.

Prediction (``csstz.predict_pz.predict_rows``, what ``csstz predict`` runs): HDF5 read + physics curves
(in-process, ``csstz predict``'s default since 0.8.0, and in ``--workers`` forked processes for comparison) +
the network's members + mixture, physics-located (and re-located) Z, PIT map and intervals, on up to ``--n``
rows of one split of a dataset, with a trained run; end to end, the best of three runs each way (all recorded).
Parts, on the same spectra: the physics curves alone, the network forward alone, the summaries alone, the
relocation alone (the non-negative locator's since 0.10.0; its one-time rendering of the templates per line-spread
set is timed apart, before the end-to-end runs). Training: the run's own ``summary.json`` (samples/s overall, and
of the network steps alone).
The machine should be otherwise idle; the load average is recorded.

    python benchmarks/bench_pz_speed.py --run RUN_DIR --data DATASET.h5 [--n 8000] [--split train] [--threads 2]

Results: ``benchmarks/results/pz_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
from timing import best_of

from csstz.io.run_dir import write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument(
        "--split",
        default="train",
        help="rows to predict (speed only; the train split is the largest: 8,000 rows "
        "keep the pipeline's start-up small)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="physics processes of the forked end-to-end comparison")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import time

    from csstz.instrument import load_instrument
    from csstz.io.spectra import read_catalog, read_spectra, split_rows
    from csstz.predict_pz import PzRun, predict_rows

    run = PzRun(args.run, threads=args.threads)
    rows = split_rows(args.data, args.split)[: args.n]
    cat = read_catalog(args.data)[rows]
    lsf_loc = run.locator_lsf_index(cat, load_instrument())  # None where the run does not re-locate
    # the non-negative locator renders its templates once per line-spread set when first needed: timed apart, as
    # the run's loading is (a run predicting many files pays it once)
    t_render = None
    if run.locator is not None:
        t0 = time.perf_counter()
        for k in np.unique(lsf_loc):
            run.locator.models(int(k))
        t_render = time.perf_counter() - t0
    # end to end: best of three, in-process and with `--workers` physics processes, interleaved (run-to-run
    # spread on the 2-core machine is ~10%; all runs are recorded)
    t_runs: dict[int, list[float]] = {1: [], args.workers: []}
    for _ in range(3):
        for w in t_runs:
            t_runs[w].append(best_of(lambda w=w: predict_rows(run, args.data, rows, workers=w), reps=1))
    t_end, t_end1 = min(t_runs[args.workers]), min(t_runs[1])
    t_all = t_runs[args.workers]
    lsf = run.physics.lsf_index(cat, load_instrument())
    sp = read_spectra(args.data, bands=run.bands, rows=rows)
    flux = {b: sp.bands[b].flux for b in run.bands}
    err = {b: sp.bands[b].err for b in run.bands}
    curves, scal, loc = run.physics.curves(flux, err, lsf, with_locator=True)
    t_phys = best_of(lambda: run.physics.curves(flux, err, lsf, with_locator=True))  # `threads` threads, one process
    ct, st = torch.from_numpy(curves), torch.from_numpy(scal)

    def net() -> None:
        with torch.no_grad():
            for s in range(0, rows.size, 1024):
                run.net(ct[s : s + 1024], st[s : s + 1024])

    t_net = best_of(net)
    lg, dist = run.network(curves, scal)
    t_sum = best_of(lambda: run.summarise_outputs(lg, scal, loc, feature_distance=dist))
    t_rel = None
    if run.relocates:
        z0 = run.summarise_outputs(lg, scal, loc)["z"]
        log_prior = run.net.log_prior.numpy().astype("float64")
        if run.locator is not None:  # the non-negative locator on the native pixels (0.10.0)
            fn, en = run.native(flux, err)
            t_rel = best_of(lambda: run.locator.relocate(z0, fn, en, lsf_loc, log_prior))
        else:
            prep = run.physics.model.prepare_spectra(flux, err)
            t_rel = best_of(lambda: run.physics.relocate(z0, None, None, lsf_loc, log_prior, prepared=prep))
    summary = json.loads((Path(args.run) / "summary.json").read_text())
    fit = summary["fit"]
    result = {
        "benchmark": "pz_speed",
        "run": str(args.run),
        "dataset": str(args.data),
        "split": args.split,
        "n_spectra": int(rows.size),
        "threads": args.threads,
        "workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_1min": os.getloadavg()[0],
        # the package default (in-process since 0.8.0)
        "predict_end_to_end_spectra_per_s": round(rows.size / t_end1, 1),
        "predict_end_to_end_all_runs_spectra_per_s": [round(rows.size / t, 1) for t in t_runs[1]],
        "predict_end_to_end_forked_spectra_per_s": round(rows.size / t_end, 1),
        "predict_end_to_end_forked_all_runs_spectra_per_s": [round(rows.size / t, 1) for t in t_all],
        "physics_curves_spectra_per_s": round(rows.size / t_phys, 1),
        "network_forward_spectra_per_s": round(rows.size / t_net, 1),
        "summaries_spectra_per_s": round(rows.size / t_sum, 1),
        "locator": run.locator_name,
        "relocation_spectra_per_s": None if t_rel is None else round(rows.size / t_rel, 1),
        "locator_render_s": None if t_render is None else round(t_render, 2),
        "train_samples_per_s": fit["samples_per_s"],
        "train_network_steps_samples_per_s": fit["network_samples_per_s"],
        "network": summary["pz_config"],
        "targets": {"predict_spectra_per_s": 2000, "train_samples_per_s": 1500},
    }
    out = Path(__file__).parent / "results" / "pz_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "network"}, indent=1))


if __name__ == "__main__":
    main()
