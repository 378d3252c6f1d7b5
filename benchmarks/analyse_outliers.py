"""Where the default estimator's outliers come from -> benchmarks/results/outliers.json.

Two analyses of stored predictions (nothing is trained or predicted here):

* ``anatomy``: for a prediction file with its p(z) (``csstz predict``) and the dataset it came from, how far the
  outliers (|dz|/(1+z) > 0.02) lie from the truth in (1+Z)/(1+z_true), at what GI SNR and redshift, and how much
  of their p(z) sits within 0.02 (1+z) of the truth and of Z. Run it on the **validation** split.
* ``ood``: for the cross-population benchmark's predictions (``bench_cross_population.py --keep`` leaves them in
  its work directory), each held-out outlier is split by cause. The network trained on the spectrum's own family
  predicts the same noisy flux: an outlier that it measures correctly is population-caused, one that it gets
  wrong too is a noise outlier. The OUT_OF_DISTRIBUTION flag's rate on each kind says whether the flag can
  tell them apart (docs/estimator.md).

    python benchmarks/analyse_outliers.py anatomy PRED.fits DATASET.h5 [PRED.fits DATASET.h5 ...]
    python benchmarks/analyse_outliers.py ood --work CROSS_WORK_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from csstz import __version__
from csstz.zwarn import ZWARN

#: |dz|/(1+z) above which a redshift is an outlier (docs/metrics.md)
OUTLIER_DZ = 0.02
RESULTS = Path(__file__).parent / "results" / "outliers.json"


def _matched(pred: Path, dataset: Path) -> tuple[Table, np.ndarray, np.ndarray]:
    """The prediction table, and the true z and GI SNR of its rows (matched by TARGETID)."""
    t = Table.read(pred, hdu=1)
    cat = Table.read(dataset, path="catalog")
    row = {int(k): i for i, k in enumerate(cat["TARGETID"])}
    ii = np.array([row[int(k)] for k in t["TARGETID"]])
    return t, np.asarray(cat["Z"][ii], float), np.asarray(cat["SNR_GI"][ii], float)


def anatomy(pred: Path, dataset: Path) -> dict:
    t, zt, snr = _matched(pred, dataset)
    z = np.asarray(t["Z"], float)
    out = np.abs(z - zt) / (1 + zt) > OUTLIER_DZ
    ratio = (1 + z[out]) / (1 + zt[out])
    res = {
        "file": pred.name,
        "n": int(z.size),
        "eta": float(out.mean()),
        "n_outliers": int(out.sum()),
        "frac_within_3pct": float(np.mean(np.abs(ratio - 1) < 0.03)),
        "frac_within_5pct": float(np.mean(np.abs(ratio - 1) < 0.05)),
        "frac_beyond_10pct": float(np.mean(np.abs(ratio - 1) >= 0.10)),
        "snr_gi_quartiles": np.percentile(snr[out], [25, 50, 75]).round(3).tolist(),
        "z_true_quartiles": np.percentile(zt[out], [25, 50, 75]).round(3).tolist(),
    }
    with fits.open(pred) as h:
        if "PZ" in h:
            pz, g = h["PZ"].data.astype(float), h["PZ_GRID"].data.astype(float)
            p = pz * np.gradient(g)
            p /= p.sum(1, keepdims=True)

            def mass(zc: np.ndarray) -> np.ndarray:
                return (p * (np.abs(g[None, :] - zc[:, None]) <= OUTLIER_DZ * (1 + zc[:, None]))).sum(1)

            at_truth, at_z = mass(zt), mass(z)
            res.update(
                {
                    "pz_mass_at_truth_quartiles": np.percentile(at_truth[out], [25, 50, 75]).round(3).tolist(),
                    "pz_mass_at_z_quartiles": np.percentile(at_z[out], [25, 50, 75]).round(3).tolist(),
                    "frac_truth_mass_below_0p02": float(np.mean(at_truth[out] < 0.02)),
                    "eta_expected_from_pz": float(np.mean(1 - at_z)),
                }
            )
    return res


def _flags(t: Table) -> tuple[np.ndarray, np.ndarray]:
    zw = np.asarray(t["ZWARN"])
    return (zw & int(ZWARN.OUT_OF_DISTRIBUTION)) > 0, (zw & int(ZWARN.MULTIMODAL)) > 0


def ood_causes(work: Path, pairs=(("embedded", "sps"), ("sps", "embedded")), splits=("val", "test")) -> list:
    rows = []
    for a, b in pairs:
        for split in splits:
            cross, zt, snr = _matched(work / f"pred_pz_{a}_on_{b}_{split}.fits", work / f"{b}.h5")
            own, zt2, _ = _matched(work / f"pred_pz_{b}_on_{b}_{split}.fits", work / f"{b}.h5")
            if not np.array_equal(np.asarray(cross["TARGETID"]), np.asarray(own["TARGETID"])):
                raise ValueError(
                    f"{work}: TARGETID of pred_pz_{a}_on_{b}_{split} and pred_pz_{b}_on_{b}_{split} differ"
                )
            oc = np.abs(np.asarray(cross["Z"], float) - zt) / (1 + zt) > OUTLIER_DZ
            oo = np.abs(np.asarray(own["Z"], float) - zt2) / (1 + zt2) > OUTLIER_DZ
            ood, mm = _flags(cross)
            own_ood, own_mm = _flags(own)
            pop, noise = oc & ~oo, oc & oo
            rows.append(
                {
                    "trained": a,
                    "tested": b,
                    "split": split,
                    "n": int(oc.size),
                    "eta_cross": float(oc.mean()),
                    "eta_in_family": float(oo.mean()),
                    "n_outliers": int(oc.sum()),
                    "n_noise_outliers": int(noise.sum()),
                    "n_population_caused": int(pop.sum()),
                    "ood_rate_population_caused": float(ood[pop].mean()),
                    "ood_rate_noise_outliers": float(ood[noise].mean()),
                    "ood_rate_correct": float(ood[~oc].mean()),
                    "ood_or_multimodal_rate_population_caused": float((ood | mm)[pop].mean()),
                    "median_snr_gi_population_caused": float(np.median(snr[pop])),
                    "median_snr_gi_flagged_correct": float(np.median(snr[ood & ~oc])),
                    "in_family_rates": {"ood": float(own_ood.mean()), "multimodal": float(own_mm.mean())},
                }
            )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    an = sub.add_parser("anatomy")
    an.add_argument("files", nargs="+", help="PRED.fits DATASET.h5 pairs")
    oo = sub.add_parser("ood")
    oo.add_argument("--work", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    res = json.loads(a.out.read_text()) if a.out.exists() else {}
    res["csstz_version"] = __version__
    if a.what == "anatomy":
        if len(a.files) % 2:
            ap.error("anatomy takes PRED.fits DATASET.h5 pairs")
        res["anatomy"] = [anatomy(Path(p), Path(d)) for p, d in zip(a.files[::2], a.files[1::2])]
        print(json.dumps(res["anatomy"], indent=1))
    else:
        res["ood_causes"] = ood_causes(a.work)
        print(json.dumps(res["ood_causes"], indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
