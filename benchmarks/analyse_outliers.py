"""Where the default estimator's outliers come from -> benchmarks/results/outliers.json.

Two analyses of stored predictions (nothing is trained or predicted here):

* ``anatomy``: for a prediction file with its p(z) (``csstz predict``) and the dataset it came from, how far the
  outliers (|dz|/(1+z) > 0.02) lie from the truth in (1+Z)/(1+z_true), at what GI SNR and redshift, and how much
  of their p(z) sits within 0.02 (1+z) of the truth and of Z. Run it on the **validation** split.
* ``ood``: for the cross-population benchmark's predictions (``bench_cross_population.py`` leaves them in its
  work directory), each held-out outlier is split by cause. The network trained on the spectrum's own family
  predicts the same noisy flux: an outlier that it measures correctly is population-caused, one that it gets
  wrong too is a noise outlier. The OUT_OF_DISTRIBUTION flag's rate on each kind, and on held-out against
  training-family galaxies at the outliers' GI SNR, says what the flag can see (docs/estimator.md).

Rows without a finite Z (or p(z)) are left out and counted. Each row records the csstz version that wrote its
predictions (header ``CSSTZVER``).

    python benchmarks/analyse_outliers.py anatomy PRED.fits DATASET.h5 [PRED.fits DATASET.h5 ...] [--out JSON]
    python benchmarks/analyse_outliers.py ood --work CROSS_WORK_DIR [--out JSON]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from csstz import __version__
from csstz.io.run_dir import write_text
from csstz.zwarn import ZWARN

#: |dz|/(1+z) above which a redshift is an outlier (docs/metrics.md)
OUTLIER_DZ = 0.02
#: GI SNR below which most outliers sit (project choice for the "faint" rows of the ood analysis)
FAINT_SNR_GI = 3.0
RESULTS = Path(__file__).parent / "results" / "outliers.json"


def _matched(pred: Path, dataset: Path) -> tuple[Table, np.ndarray, np.ndarray]:
    """The prediction table, and the true z and GI SNR of its rows (matched by TARGETID)."""
    t = Table.read(pred, hdu=1)
    cat = Table.read(dataset, path="catalog")
    row = {int(k): i for i, k in enumerate(cat["TARGETID"])}
    ii = np.array([row[int(k)] for k in t["TARGETID"]])
    return t, np.asarray(cat["Z"][ii], float), np.asarray(cat["SNR_GI"][ii], float)


def _version(pred: Path) -> str | None:
    """The csstz version that wrote a predictions file (header CSSTZVER)."""
    with fits.open(pred) as h:
        return h[1].header.get("CSSTZVER") or h[0].header.get("CSSTZVER")


def _rate(flag: np.ndarray, sel: np.ndarray) -> float | None:
    """Fraction of ``sel`` that is flagged (None for an empty group)."""
    return float(flag[sel].mean()) if sel.any() else None


def _quartiles(x: np.ndarray) -> list | None:
    return np.percentile(x, [25, 50, 75]).round(3).tolist() if x.size else None


def anatomy(pred: Path, dataset: Path) -> dict:
    t, zt, snr = _matched(pred, dataset)
    z = np.asarray(t["Z"], float)
    ok = np.isfinite(z)
    z, zt, snr = z[ok], zt[ok], snr[ok]
    out = np.abs(z - zt) / (1 + zt) > OUTLIER_DZ
    ratio = (1 + z[out]) / (1 + zt[out])
    res = {
        "file": pred.name,
        "csstz_version": _version(pred),
        "n": int(z.size),
        "n_no_z": int((~ok).sum()),
        "eta": float(out.mean()),
        "n_outliers": int(out.sum()),
        "frac_within_3pct": float(np.mean(np.abs(ratio - 1) < 0.03)) if out.any() else None,
        "frac_within_5pct": float(np.mean(np.abs(ratio - 1) < 0.05)) if out.any() else None,
        "frac_beyond_10pct": float(np.mean(np.abs(ratio - 1) >= 0.10)) if out.any() else None,
        "snr_gi_quartiles": _quartiles(snr[out]),
        "z_true_quartiles": _quartiles(zt[out]),
    }
    with fits.open(pred) as h:
        if "PZ" in h:
            pz, g = h["PZ"].data.astype(float)[ok], h["PZ_GRID"].data.astype(float)
            p = pz * np.gradient(g)  # probability per grid cell
            p /= p.sum(1, keepdims=True)
            good = np.all(np.isfinite(p), axis=1)
            p, z, zt, out = p[good], z[good], zt[good], out[good]

            def mass(zc: np.ndarray) -> np.ndarray:
                return (p * (np.abs(g[None, :] - zc[:, None]) <= OUTLIER_DZ * (1 + zc[:, None]))).sum(1)

            at_truth, at_z = mass(zt), mass(z)
            res.update(
                {
                    "n_pz_not_finite": int((~good).sum()),
                    "pz_mass_at_truth_quartiles": _quartiles(at_truth[out]),
                    "pz_mass_at_z_quartiles": _quartiles(at_z[out]),
                    "frac_truth_mass_below_0p02": float(np.mean(at_truth[out] < 0.02)) if out.any() else None,
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
            p_cross = work / f"pred_pz_{a}_on_{b}_{split}.fits"
            cross, zt, snr = _matched(p_cross, work / f"{b}.h5")
            own, _, _ = _matched(work / f"pred_pz_{b}_on_{b}_{split}.fits", work / f"{b}.h5")
            # the training family's own spectra, where the flag's threshold was set
            home, _, snr_home = _matched(work / f"pred_pz_{a}_on_{a}_{split}.fits", work / f"{a}.h5")
            if not np.array_equal(np.asarray(cross["TARGETID"]), np.asarray(own["TARGETID"])):
                raise ValueError(
                    f"{work}: TARGETID of pred_pz_{a}_on_{b}_{split} and pred_pz_{b}_on_{b}_{split} differ"
                )
            zc, zo = np.asarray(cross["Z"], float), np.asarray(own["Z"], float)
            ok = np.isfinite(zc) & np.isfinite(zo)
            oc = ok & (np.abs(zc - zt) / (1 + zt) > OUTLIER_DZ)
            oo = ok & (np.abs(zo - zt) / (1 + zt) > OUTLIER_DZ)
            ood, mm = _flags(cross)
            own_ood, own_mm = _flags(own)
            home_ood, _ = _flags(home)
            pop, noise, correct = oc & ~oo, oc & oo, ok & ~oc
            rows.append(
                {
                    "trained": a,
                    "tested": b,
                    "split": split,
                    "csstz_version": _version(p_cross),
                    "n": int(ok.sum()),
                    "n_no_z": int((~ok).sum()),
                    "eta_cross": float(oc.sum() / ok.sum()),
                    "eta_in_family": float(oo.sum() / ok.sum()),
                    "n_outliers": int(oc.sum()),
                    "n_noise_outliers": int(noise.sum()),
                    "n_population_caused": int(pop.sum()),
                    "ood_rate_population_caused": _rate(ood, pop),
                    "ood_rate_noise_outliers": _rate(ood, noise),
                    "ood_rate_correct": _rate(ood, correct),
                    "ood_or_multimodal_rate_population_caused": _rate(ood | mm, pop),
                    "median_snr_gi_population_caused": float(np.median(snr[pop])) if pop.any() else None,
                    "median_snr_gi_flagged_correct": float(np.median(snr[ood & correct]))
                    if (ood & correct).any()
                    else None,
                    # can the flag tell the families apart where the outliers are?
                    "frac_outliers_below_faint_snr": _rate(snr < FAINT_SNR_GI, oc),
                    "ood_rate_held_out_below_faint_snr": _rate(ood, snr < FAINT_SNR_GI),
                    "ood_rate_training_family_below_faint_snr": _rate(home_ood, snr_home < FAINT_SNR_GI),
                    "in_family_rates": {"ood": float(own_ood.mean()), "multimodal": float(own_mm.mean())},
                }
            )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--out", type=Path, default=RESULTS, help="results JSON (default benchmarks/results/outliers.json)"
    )
    sub = ap.add_subparsers(dest="what", required=True)
    an = sub.add_parser("anatomy", parents=[common])
    an.add_argument("files", nargs="+", help="PRED.fits DATASET.h5 pairs")
    oo = sub.add_parser("ood", parents=[common])
    oo.add_argument("--work", required=True, type=Path)
    a = ap.parse_args(argv)
    res = json.loads(a.out.read_text()) if a.out.exists() else {}
    res.pop("csstz_version", None)  # each row carries the version that wrote its predictions
    res["analysed_with"] = __version__
    if a.what == "anatomy":
        if len(a.files) % 2:
            ap.error("anatomy takes PRED.fits DATASET.h5 pairs")
        res["anatomy"] = [anatomy(Path(p), Path(d)) for p, d in zip(a.files[::2], a.files[1::2])]
        print(json.dumps(res["anatomy"], indent=1))
    else:
        res["ood_causes"] = ood_causes(a.work)
        print(json.dumps(res["ood_causes"], indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
