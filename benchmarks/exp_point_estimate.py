"""Which point estimate Z of the p(z) estimator: the scan that chose ``csstz predict --point kernel`` (0.9.0).

-> benchmarks/results/point_estimate.json (docs/estimator.md, "Which peak").

For a trained p(z) run, on a **selection sample** (a fresh build made by
``bench_standard_fresh.py --seed 4 --work SAMPLE --out SAMPLE/sample.json``: its ``embedded.h5`` and the kcorrect fit
``pred_templates.fits``) and on the run's own validation split (``--val-fit``: the kcorrect fit of that split,
``csstz fit-templates DATASET --split val --lsf morphology``), every row weighted to the test split's n(z)
(``csstz.population.nz.test_nz_weights``): the network's outputs are computed once, then every variant of the point
estimate is applied to the same outputs and compared with the fit on the same galaxies (eta and sigma_NMAD ratios):

* the network's own mode, the physics-located mode, the located and re-located mode (0.8.1, ``--point mode``);
* the p(z) multiplied by n_test(z) / n_train(z) (a label-shift correction to the test split's n(z));
* the kernel point estimate (``csstz.templates.pdf.kernel_mode``) for kernel widths and switch distances [grid
  steps], the switched Z as it is (``--point kernel``) or re-located by the physics within one step.

The test splits and the seed-3 sample that reports issue 8's bars are not read.

    python benchmarks/exp_point_estimate.py --run RUN --sample SAMPLE --val-fit VAL_FIT.fits
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_cross_population import matched
from bench_standard_fresh import _wnmad
from scipy.special import erf

from csstz import __version__
from csstz.evaluate.metrics import OUTLIER_THRESHOLD
from csstz.instrument import load_instrument
from csstz.io.run_dir import write_text
from csstz.io.spectra import read_catalog, read_spectra, split_rows
from csstz.population.nz import (
    CSST_Z_EDGES,
    TRAIN_UNIFORM_WEIGHT,
    Z_MAX,
    Z_MIN,
    csst_bin_probabilities,
    test_nz_weights,
)
from csstz.predict_pz import PzRun, member_probabilities, refine_on_physics
from csstz.templates import pdf

RESULTS = Path(__file__).parent / "results" / "point_estimate.json"
KERNELS = (10, 12, 14, 16, 20, 24)
SWITCHES = (3, 4, 5, 6)


def outputs(run: PzRun, spectra: Path, split: str | None) -> dict:
    """The network's members' probabilities, the physics locator and the relocation inputs of every row."""
    rows = split_rows(spectra, split)
    cat = read_catalog(spectra)[rows]
    inst = load_instrument()
    lsf = run.physics.lsf_index(cat, inst)
    lsf_loc = run.physics.lsf_index(cat, inst, run.physics.locator_lsf_scale)
    parts: dict = {k: [] for k in ("prob", "sc", "loc", "f", "w")}
    for s in range(0, rows.size, 512):
        sp = read_spectra(spectra, bands=run.bands, rows=rows[s : s + 512], with_catalog=False)
        flux = {b: sp.bands[b].flux for b in run.bands}
        err = {b: sp.bands[b].err for b in run.bands}
        prep = run.physics.model.prepare_spectra(flux, err)
        lg, sc, loc, _ = run.forward(flux, err, None if lsf is None else lsf[s : s + 512], prepared=prep)
        for k, v in zip(parts, (member_probabilities(lg, run.temperature).mean(axis=1), sc, loc, *prep)):
            parts[k].append(v)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out.update(tid=np.asarray(cat["TARGETID"]), split=np.asarray(cat["SPLIT"]), lsf_loc=lsf_loc)
    return out


def scan(run: PzRun, out: dict, spectra: Path, fit: Path) -> dict:
    g = run.physics.grid_z
    lnz = np.log1p(g)
    step = lnz[1] - lnz[0]
    lp = run.net.log_prior.numpy().astype(np.float64)
    ftab, fcat = matched(fit, spectra)
    if not np.array_equal(np.asarray(ftab["TARGETID"]), out["tid"]):
        raise SystemExit(f"exp_point_estimate: {fit} does not hold the rows of {spectra}")
    zt, zf = np.asarray(fcat["Z"], np.float64), np.asarray(ftab["Z"], np.float64)
    w = test_nz_weights(zt, out["split"])
    eta_fit = float(np.average(np.abs(zf - zt) / (1 + zt) > OUTLIER_THRESHOLD, weights=w))
    nmad_fit = _wnmad(zf, zt, w)

    def ratios(z: np.ndarray, switched: float | None = None) -> dict:
        eta = np.average(np.abs(z - zt) / (1 + zt) > OUTLIER_THRESHOLD, weights=w)
        r = {"eta_ratio": float(eta / eta_fit), "sigma_nmad_ratio": float(_wnmad(z, zt, w) / nmad_fit)}
        return r if switched is None else {**r, "switched": float(switched)}

    dens = pdf.normalise(out["prob"] / ((1 + g) * np.gradient(lnz))[None, :], g)
    z_mode = pdf.mode(dens, g)
    z_loc = refine_on_physics(z_mode, out["loc"], lp, g)
    z_rel = run.physics.relocate(z_loc, None, None, out["lsf_loc"], lp, prepared=(out["f"], out["w"]))
    res = {
        "n": int(zt.size),
        "effective_n": float(w.sum() ** 2 / (w**2).sum()),
        "eta_fit": eta_fit,
        "network_mode": ratios(z_mode),
        "physics_located": ratios(z_loc),
        "located_and_relocated_0.8.1": ratios(z_rel),
    }
    # label shift: p(z) n_test(z) / n_train(z), both the CSST histogram smoothed like the run's prior (0.02 in z)
    lo, hi = np.maximum(CSST_Z_EDGES[:-1], Z_MIN), CSST_Z_EDGES[1:]
    sig = 0.02

    def frac(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 0.5 * (erf((b - g[:, None]) / (np.sqrt(2) * sig)) - erf((a - g[:, None]) / (np.sqrt(2) * sig)))

    n_test = (frac(lo, hi) * csst_bin_probabilities() / (hi - lo)).sum(axis=1)
    n_unif = frac(np.array([Z_MIN]), np.array([Z_MAX]))[:, 0] / (Z_MAX - Z_MIN)
    ratio = n_test / np.maximum((1 - TRAIN_UNIFORM_WEIGHT) * n_test + TRAIN_UNIFORM_WEIGHT * n_unif, 1e-300)
    z_ls = pdf.mode(pdf.normalise(dens * ratio[None, :], g), g)
    same = np.abs(z_ls - z_mode) / (1 + z_mode) < 0.01  # the same peak: keep the located Z
    res["label_shift_to_test_nz"] = ratios(np.where(same, z_rel, z_ls), 1.0 - same.mean())
    kernel = {}
    for s in KERNELS:
        zk = pdf.kernel_mode(dens, g, s)
        zk1 = refine_on_physics(zk, out["loc"], lp, g, window=1)
        d = np.abs(np.log1p(zk) - np.log1p(z_mode)) / step
        for sw in SWITCHES:
            far = d > sw
            kernel[f"kernel {s} switch {sw}"] = ratios(np.where(far, zk, z_rel), far.mean())
            kernel[f"kernel {s} switch {sw} physics 1"] = ratios(np.where(far, zk1, z_rel), far.mean())
    res["kernel"] = kernel
    return res


def main(argv: list | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a p(z) run directory (the standard run's)")
    ap.add_argument("--sample", required=True, type=Path, help="selection sample: embedded.h5 + pred_templates.fits")
    ap.add_argument("--val-fit", required=True, type=Path, help="kcorrect fit of the run's validation split")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    run = PzRun(a.run)
    dataset = Path(json.loads((a.run / "summary.json").read_text())["dataset"])
    res = {"benchmark": "point_estimate", "csstz_version": __version__, "run": str(a.run)}
    for name, spectra, fit, split in (
        ("selection_sample", a.sample / "embedded.h5", a.sample / "pred_templates.fits", None),
        ("validation", dataset, a.val_fit, "val"),
    ):
        res[name] = {"spectra": str(spectra), **scan(run, outputs(run, spectra, split), spectra, fit)}
        r = res[name]
        print(f"{name}: 0.8.1 {r['located_and_relocated_0.8.1']}; kernel 16/5 {r['kernel']['kernel 16 switch 5']}")
    write_text(a.out, json.dumps(res, indent=1) + "\n")  # atomic
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
