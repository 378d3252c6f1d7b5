"""The cross-population networks on fresh, larger samples -> benchmarks/results/cross_population_fresh.json.

``bench_cross_population.py`` trains the p(z) estimator on one family (embedded, sps) and tests it on the other
family's 800-galaxy test split: with ~60-80 outliers there, an outlier fraction or a flag's catch rate has a
standard error of 5-6 points, as large as the gaps that issue 8's bars ask about. This benchmark builds a fresh
sample of each family with another seed (``--n`` galaxies, default 8,000, every row predicted; the same
population settings as the training sets, new draws: no galaxy, noise draw or morphology of the training run),
predicts it with the networks that ``bench_cross_population.py --keep`` left in its work directory, and reports
for each trained → tested pair the metrics of ``csstz evaluate``, the flag rates, the ratios of the held-out
family's σ_NMAD and η to the in-family network's on the same spectra, with binomial standard errors, the η and
its ratio with every galaxy weighted to the test split's redshift distribution (``csstz.population.nz.test_nz_weights``:
the sample's train and val rows draw z from a broader mixture; paired bootstrap errors), the same η and ratio
among the galaxies each network does not flag (``no_ood``: without OUT_OF_DISTRIBUTION; ``zwarn0``: ZWARN = 0;
with the fraction kept: what a user who sets flagged objects aside sees), and the
split of the held-out outliers by cause (``analyse_outliers.ood_causes``). Nothing is trained and nothing here
chooses anything: it is a test set.

``--templates`` adds the template fits on the same fresh spectra (``csstz fit-templates --lsf morphology``, as the
demo runs it): the kcorrect basis, and the basis learned from each family's training set (``learned:`` the run
directory's dataset), with their test-n(z) eta, its ratio to the in-family p(z) network's on the same galaxies, and
for the learned basis the template fit's own cross-family ratio (basis of A on B over basis of B on B): how far a
method that has not seen family B's galaxies gets on them without a network.

Every step goes through the public command line and is skipped when its output exists.

    python benchmarks/bench_cross_fresh.py --runs CROSS_WORK_DIR --work FRESH_DIR [--n 8000] [--seed 1] [--templates]

The sps family needs the optional extra (``pip install 'csstz[sps]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
from analyse_outliers import ood_causes
from bench_cross_population import POPULATIONS, Runner, _metrics, matched

from csstz import __version__
from csstz.io.run_dir import write_text

RESULTS = Path(__file__).parent / "results" / "cross_population_fresh.json"
#: the two families whose networks are crossed (the mixed one holds both)
FAMILIES = ("embedded", "sps")


def _se(p: float | None, n: int) -> float | None:
    """Binomial standard error of a fraction p of n."""
    return None if p is None or n == 0 else math.sqrt(p * (1.0 - p) / n)


def _outliers(pred: Path, truth: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outlier indicators of a predictions file (ordered by TARGETID), the test-n(z) weights of its galaxies and
    their ZWARN."""
    from csstz.evaluate.metrics import OUTLIER_THRESHOLD
    from csstz.population.nz import test_nz_weights

    tab, cat = matched(pred, truth)
    zt = np.asarray(cat["Z"], np.float64)
    out = np.abs(np.asarray(tab["Z"], np.float64) - zt) / (1 + zt) > OUTLIER_THRESHOLD
    return out, test_nz_weights(zt, cat["SPLIT"]), np.asarray(tab["ZWARN"], np.int64)


def _kept(zwarn: np.ndarray, subset: str) -> np.ndarray:
    """The galaxies a user keeps: ``no_ood`` without OUT_OF_DISTRIBUTION, ``zwarn0`` with ZWARN = 0."""
    from csstz.zwarn import ZWARN

    if subset == "no_ood":
        return (zwarn & int(ZWARN.OUT_OF_DISTRIBUTION)) == 0
    return zwarn == 0


def _paired_ratio(
    o1: np.ndarray,
    o2: np.ndarray,
    w: np.ndarray,
    n_boot: int = 1000,
    k1: np.ndarray | None = None,
    k2: np.ndarray | None = None,
) -> tuple[float, float]:
    """Weighted eta of o1 over o2 on the same galaxies, and its paired bootstrap standard error.

    ``k1``, ``k2``: each network's kept galaxies (eta of o1 among k1 over eta of o2 among k2); default all."""
    k1 = np.ones(w.size, bool) if k1 is None else k1
    k2 = np.ones(w.size, bool) if k2 is None else k2
    w1, w2 = w * k1, w * k2
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(n_boot):
        s = rng.integers(0, w.size, w.size)
        boot.append(np.average(o1[s], weights=w1[s]) / np.average(o2[s], weights=w2[s]))
    return float(np.average(o1, weights=w1) / np.average(o2, weights=w2)), float(np.std(boot))


def _template_rows(run: Runner, a: argparse.Namespace, outl: dict) -> list[dict]:
    """The template fits on the fresh samples (kcorrect basis; the basis learned from each family's training set),
    with their test-n(z) eta and its ratios (paired bootstrap) to the in-family p(z) network's on the same galaxies
    and, for a learned basis of another family, to the fit with the tested family's own basis."""
    rows, own_fit = [], {}
    bases = [("templates-kcorrect", "-", "kcorrect")]
    bases += [("templates-learned", tr, f"learned:{a.runs / f'{tr}.h5'}") for tr in FAMILIES]
    for method, tr, basis in bases:
        for te in FAMILIES:
            truth = a.work / f"{te}.h5"
            pred = a.work / f"pred_{method}_{tr.strip('-') or 'fixed'}_on_{te}_all.fits"
            args = ["fit-templates", str(truth), "--lsf", "morphology", "--basis", basis, "--workers", str(a.workers)]
            run.step(f"fit {method} {tr}->{te}", pred, [*args, "--no-progress", "--out", str(pred)])
            r = {"method": method, "train": tr, "test": te, "split": "all", **_metrics(run, pred, truth, method)}
            o, w, _ = _outliers(pred, truth)
            r["eta_se"] = _se(r["eta"], r["n"])
            r["eta_test_nz"] = float(np.average(o, weights=w))
            r["eta_test_nz_over_pz_in_family"], r["eta_test_nz_over_pz_in_family_se"] = _paired_ratio(
                o, outl[(te, te)][0], w
            )
            if method == "templates-learned":
                own_fit[(tr, te)] = o
            rows.append(r)
    for r in rows:
        if r["method"] == "templates-learned" and r["train"] != r["test"]:
            o, w, _ = outl[(r["test"], r["test"])]
            ratio, se = _paired_ratio(own_fit[(r["train"], r["test"])], own_fit[(r["test"], r["test"])], w)
            r["eta_test_nz_over_in_family"], r["eta_test_nz_over_in_family_se"] = ratio, se
    return rows


def main(argv: list | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, type=Path, help="bench_cross_population.py work directory (run_pz_*)")
    ap.add_argument("--work", required=True, type=Path, help="directory for the fresh samples and predictions")
    ap.add_argument("--n", type=int, default=8000, help="galaxies per family")
    ap.add_argument("--seed", type=int, default=1, help="root seed of the fresh samples (the training sets used 0)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--templates", action="store_true", help="also the template fits (kcorrect, learned bases)")
    a = ap.parse_args(argv)
    if a.seed == 0:
        ap.error("--seed 0 would redraw the training sets' galaxies")
    a.work.mkdir(parents=True, exist_ok=True)
    run = Runner(a.work)
    t0 = time.perf_counter()
    for fam in FAMILIES:
        out = a.work / f"{fam}.h5"
        build = ["build", "--n", str(a.n), "--seed", str(a.seed), "--workers", str(a.workers), "--out", str(out)]
        run.step(f"build {fam}", out, [*build, "--no-progress", *POPULATIONS[fam]])
    rows, outl = [], {}
    for tr in FAMILIES:
        run_dir = a.runs / f"run_pz_{tr}"
        for te in FAMILIES:
            # split "all": analyse_outliers.ood_causes reads pred_pz_{trained}_on_{tested}_{split}.fits
            pred = a.work / f"pred_pz_{tr}_on_{te}_all.fits"
            truth = a.work / f"{te}.h5"
            run.step(f"predict pz {tr}->{te}", pred, ["predict", str(run_dir), str(truth), "--out", str(pred)])
            rows.append({"method": "pz", "train": tr, "test": te, "split": "all", **_metrics(run, pred, truth, "pz")})
            outl[(tr, te)] = _outliers(pred, truth)
    by = {(r["train"], r["test"]): r for r in rows}
    for r in rows:
        own = by[(r["test"], r["test"])]
        r["eta_se"] = _se(r["eta"], r["n"])
        r["outliers_ood_flagged_se"] = _se(r["outliers_ood_flagged"], r["n_outliers"])
        # the test split's n(z) (the CSST histogram; train and val rows draw from a broader mixture, so "all"
        # rows hold about three times the test split's share of z > 1 galaxies): each row weighted to it
        o, w, zw = outl[(r["train"], r["test"])]
        r["eta_test_nz"] = float(np.average(o, weights=w))
        # what a user who sets flagged objects aside sees: each network's eta among the galaxies it does not
        # flag (OUT_OF_DISTRIBUTION alone, or any ZWARN bit), and the fraction it keeps, on the test n(z)
        for subset in ("no_ood", "zwarn0"):
            k = _kept(zw, subset)
            r[f"kept_{subset}_test_nz"] = float(np.average(k, weights=w))
            r[f"eta_{subset}_test_nz"] = float(np.average(o[k], weights=w[k]))
        if r["train"] != r["test"]:
            r["sigma_nmad_over_in_family"] = r["sigma_nmad"] / own["sigma_nmad"]
            r["eta_over_in_family"] = r["eta"] / own["eta"]
            o_own, _, zw_own = outl[(r["test"], r["test"])]
            ratio, se = _paired_ratio(o, o_own, w)
            r["eta_test_nz_over_in_family"], r["eta_test_nz_over_in_family_se"] = ratio, se
            for subset in ("no_ood", "zwarn0"):
                ratio, se = _paired_ratio(o, o_own, w, k1=_kept(zw, subset), k2=_kept(zw_own, subset))
                r[f"eta_{subset}_test_nz_over_in_family"], r[f"eta_{subset}_test_nz_over_in_family_se"] = ratio, se
    if a.templates:
        rows += _template_rows(run, a, outl)
    # steps skipped because their output exists keep the time the earlier run of this sample recorded
    times, earlier = dict(run.times), []
    if a.out.is_file():
        prev = json.loads(a.out.read_text())
        if (prev.get("runs"), prev.get("seed"), prev.get("n_per_population")) == (str(a.runs), a.seed, a.n):
            for name, sec in prev.get("step_times_s", {}).items():
                if name not in times:
                    times[name] = sec
                    earlier.append(name)
    res = {
        "benchmark": "cross_population_fresh",
        "csstz_version": __version__,
        "runs": str(a.runs),
        "n_per_population": a.n,
        "seed": a.seed,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        # with the skipped steps at their earlier times: what the whole benchmark costs on this sample
        "wall_s": round(time.perf_counter() - t0 + sum(times[name] for name in earlier), 1),
        "step_times_s": times,
        "step_times_from_earlier_run": earlier,
        "rows": rows,
        "ood_causes": ood_causes(a.work, splits=("all",)),
    }
    write_text(a.out, json.dumps(res, indent=1) + "\n")  # atomic: a kill never leaves half a file
    for r in rows:
        extra = ""
        if r["method"] != "pz":
            extra = (
                f"  test n(z) eta {r['eta_test_nz']:.4f}, {r['eta_test_nz_over_pz_in_family']:.2f}x the in-family pz"
            )
            if "eta_test_nz_over_in_family" in r:
                extra += f", {r['eta_test_nz_over_in_family']:.2f}x its own basis' fit"
            head = f"{r['method']:>17s} {r['train']:>8s} -> {r['test']:<8s} n {r['n']}"
            print(f"{head}  sigma_NMAD {r['sigma_nmad']:.5f}{extra}")
            continue
        if r["train"] != r["test"]:
            extra = (
                f"  {r['sigma_nmad_over_in_family']:.2f}x sigma, {r['eta_over_in_family']:.2f}x eta of in family"
                f" (test n(z): {r['eta_test_nz_over_in_family']:.2f} +- {r['eta_test_nz_over_in_family_se']:.2f}x;"
                f" without OUT_OF_DISTRIBUTION {r['eta_no_ood_test_nz_over_in_family']:.2f}x,"
                f" ZWARN = 0 {r['eta_zwarn0_test_nz_over_in_family']:.2f}x)"
            )
        print(
            f"{r['train']:>8s} -> {r['test']:<8s} n {r['n']}  sigma_NMAD {r['sigma_nmad']:.5f}  "
            f"eta {r['eta']:.4f} +- {r['eta_se']:.4f}  OOD on outliers {r['outliers_ood_flagged']:.3f} "
            f"+- {r['outliers_ood_flagged_se']:.3f}  flagged {r['ood_flagged']:.4f}{extra}"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
