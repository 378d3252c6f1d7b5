"""The standard run's p(z) network against the template fit on a fresh, ten times larger sample.

-> benchmarks/results/standard_fresh.json (README, docs/estimator.md).

Issue 8's first bar compares the default estimator with the kcorrect template fit on the standard run's test
split: 2,000 galaxies, about 70-110 outliers per method, so the ratio of the two outlier fractions carries a
standard error of about 0.1, as large as its margin (0.64x measured against the 0.7x asked; 0.83x on
validation). This benchmark builds a fresh sample of the same population (``--n`` galaxies, default 20,000,
root seed ``--seed`` 3: no galaxy, noise draw or morphology of the standard run's seed 0 nor of the
cross-population fresh samples' seeds 1-2), predicts every row with the p(z) network that
``bench_accuracy.py --no-paper --out-dir DIR`` left in ``DIR/run_pz``, fits every row with the kcorrect
templates as the demo fits its test split (``--lsf morphology``), and reports both with ``csstz evaluate``'s
metrics, the per-GI-SNR sigma_NMAD over the Cramer-Rao bound, and the eta and sigma_NMAD ratios with paired
bootstrap standard errors (the same galaxies for both methods). Nothing is trained or chosen here: it is a
test set.

    python benchmarks/bench_standard_fresh.py --run DIR/run_pz --work FRESH_DIR [--n 20000] [--seed 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from bench_cross_population import Runner, _metrics, matched

from csstz import __version__
from csstz.evaluate.metrics import NMAD_FACTOR, OUTLIER_THRESHOLD
from csstz.io.run_dir import write_text
from csstz.population.nz import test_nz_weights

RESULTS = Path(__file__).parent / "results" / "standard_fresh.json"
#: root seeds already used: the standard run and the cross-population training sets (0), the
#: cross-population fresh test samples (1) and the selection samples of exp_cross_gap.py (2). Seed 4 is the
#: selection sample of exp_point_estimate.py (built with this script, ``--seed 4 --out`` elsewhere): it chose
#: 0.9.0's point estimate, so the bars are read from seed 3, not from it
USED_SEEDS = (0, 1, 2)
#: selection samples: built by this script only with ``--out`` elsewhere, never into the results of record
SELECTION_SEEDS = (4,)
#: paired bootstrap resamples for the ratios' standard errors
N_BOOT = 2000


def _z_of(pred: Path, truth: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(TARGETID, Z predicted, z true, SPLIT) of a predictions file, ordered by TARGETID."""
    tab, cat = matched(pred, truth)
    return (
        np.asarray(tab["TARGETID"], np.int64),
        np.asarray(tab["Z"], np.float64),
        np.asarray(cat["Z"], np.float64),
        np.asarray(cat["SPLIT"]),
    )


def _wmedian(x: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(x)
    c = np.cumsum(w[o])
    return float(x[o][np.searchsorted(c, 0.5 * c[-1])])


def _wnmad(zp: np.ndarray, zt: np.ndarray, w: np.ndarray) -> float:
    """sigma_NMAD (csstz.evaluate.metrics.sigma_nmad) with weighted medians."""
    dz = zp - zt
    return NMAD_FACTOR * _wmedian(np.abs((dz - _wmedian(dz, w)) / (1 + zt)), w)


def paired_ratios(pz: Path, fit: Path, truth: Path, seed: int = 0) -> dict:
    """eta and sigma_NMAD of p(z) and of the fit on the same galaxies, and their ratios with paired bootstrap
    standard errors: on the fresh sample's test rows alone (the standard test split's distribution, 10% of
    the galaxies) and on every row weighted to the test split's redshift distribution."""
    t1, z1, zt, split = _z_of(pz, truth)
    t2, z2, _, _ = _z_of(fit, truth)
    if not np.array_equal(t1, t2):
        raise SystemExit(f"bench_standard_fresh: {pz} and {fit} hold different galaxies")
    o1 = np.abs(z1 - zt) / (1 + zt) > OUTLIER_THRESHOLD
    o2 = np.abs(z2 - zt) / (1 + zt) > OUTLIER_THRESHOLD
    w_all = test_nz_weights(zt, split)  # csstz.population.nz: the test split's n(z) for every row
    out = {}
    for name, w in (("test_rows", (split == "test").astype(float)), ("all_rows_test_nz_weighted", w_all)):
        m = w > 0
        a, b, t, ww, oa, ob = z1[m], z2[m], zt[m], w[m], o1[m], o2[m]

        def stats(s, a=a, b=b, t=t, ww=ww, oa=oa, ob=ob):
            e1, e2 = np.average(oa[s], weights=ww[s]), np.average(ob[s], weights=ww[s])
            return e1, e2, _wnmad(a[s], t[s], ww[s]), _wnmad(b[s], t[s], ww[s])

        e1, e2, n1, n2 = stats(np.arange(t.size))
        rng = np.random.default_rng(seed)
        boot = np.array([stats(rng.integers(0, t.size, t.size)) for _ in range(N_BOOT)])
        r_eta, r_nmad = boot[:, 0] / boot[:, 1], boot[:, 2] / boot[:, 3]
        out[name] = {
            "n": int(t.size),
            "effective_n": float(ww.sum() ** 2 / (ww**2).sum()),
            "eta_pz": float(e1),
            "eta_templates": float(e2),
            "sigma_nmad_pz": float(n1),
            "sigma_nmad_templates": float(n2),
            "eta_ratio": float(e1 / e2),
            "eta_ratio_se": float(np.std(r_eta)),
            "eta_ratio_p_above_0.7": float(np.mean(r_eta > 0.7)),
            "sigma_nmad_ratio": float(n1 / n2),
            "sigma_nmad_ratio_se": float(np.std(r_nmad)),
            "sigma_nmad_ratio_p_above_1": float(np.mean(r_nmad > 1.0)),
        }
    out["all_rows_unweighted_eta_ratio"] = float(o1.mean() / o2.mean())
    return out


def main(argv: list | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="the standard run's p(z) run directory")
    ap.add_argument("--work", required=True, type=Path, help="directory for the fresh sample and predictions")
    ap.add_argument("--n", type=int, default=20000, help="galaxies")
    ap.add_argument("--seed", type=int, default=3, help=f"root seed of the fresh sample (not {USED_SEEDS})")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if a.seed in USED_SEEDS:
        ap.error(f"--seed {a.seed} would redraw galaxies of another run (seeds {USED_SEEDS} are taken)")
    if a.seed in SELECTION_SEEDS and a.out.resolve() == RESULTS.resolve():
        ap.error(f"--seed {a.seed} is a selection sample (it chose the point estimate); write it with --out elsewhere")
    a.work.mkdir(parents=True, exist_ok=True)
    run = Runner(a.work)
    t0 = time.perf_counter()
    truth = a.work / "embedded.h5"
    build = ["build", "--n", str(a.n), "--seed", str(a.seed), "--workers", str(a.workers), "--out", str(truth)]
    run.step("build", truth, [*build, "--no-progress", "--source", "embedded"])
    pz, fit = a.work / "pred_pz.fits", a.work / "pred_templates.fits"
    run.step("predict pz", pz, ["predict", str(a.run), str(truth), "--out", str(pz)])
    fit_args = ["fit-templates", str(truth), "--out", str(fit), "--lsf", "morphology", "--workers", str(a.workers)]
    run.step("fit templates", fit, [*fit_args, "--no-progress"])
    rows = {"p(z)": _metrics(run, pz, truth, "pz"), "templates": _metrics(run, fit, truth, "templates")}
    res = {
        "benchmark": "standard_fresh",
        "csstz_version": __version__,
        "run": str(a.run),
        "n": a.n,
        "seed": a.seed,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "wall_s": round(time.perf_counter() - t0, 1),
        "step_times_s": run.times,
        "methods": rows,
        "paired": paired_ratios(pz, fit, truth),
    }
    write_text(a.out, json.dumps(res, indent=1) + "\n")  # atomic: a kill never leaves half a file
    for k, m in rows.items():
        print(f"{k:>10s}: n {m['n']}  sigma_NMAD {m['sigma_nmad']:.5f}  eta {m['eta']:.4f}")
    for name in ("test_rows", "all_rows_test_nz_weighted"):
        p = res["paired"][name]
        print(
            f"{name}: n {p['n']} (effective {p['effective_n']:.0f})  eta {p['eta_pz']:.4f} vs {p['eta_templates']:.4f}"
            f" -> ratio {p['eta_ratio']:.3f} +- {p['eta_ratio_se']:.3f} (P > 0.7: {p['eta_ratio_p_above_0.7']:.3f});"
            f"  sigma_NMAD {p['sigma_nmad_pz']:.5f} vs {p['sigma_nmad_templates']:.5f} -> ratio "
            f"{p['sigma_nmad_ratio']:.3f} +- {p['sigma_nmad_ratio_se']:.3f}"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
