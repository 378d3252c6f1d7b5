"""The evaluation report: ``metrics.json``, the paper's figures as PNG, and a self-contained ``report.html``.

:func:`write_report` compares any number of methods (CNN, BNN, template fit)
against one truth table; :func:`evaluate_predictions` does it for one
predictions file (``csstz evaluate``).

``metrics.json`` layout::

    {"csstz_version": ..., "primary": LABEL,            # the first method given
     "n", "sigma_nmad", "eta", "ebar", "coverage_68", "coverage_95", ...   # the primary method's numbers
     "by_z": [...], "by_snr_gi": [...],                  # the primary method's bins
     "methods": {LABEL: ENTRY, ...},                     # one entry per method
     "paper": {...}, "notes": {...}, "figures": [...]}

    ENTRY = {"n": sources with a finite prediction (used in all metrics),
             "n_total", "n_failed" (non-finite Z/ZERR), "zwarn_fraction",
             "sigma_nmad", "eta", "ebar", "bias", "coverage_68", "coverage_95", "crps", "miscal_area",
             "zwarn0": the same metrics for ZWARN == 0 only,
             "uncalibrated": the uncertainty metrics with ZERR_UNCAL (where present),
             "ebar_epistemic", "ebar_aleatoric" (where present),
             "by_z": bins of true z (metrics.Z_EDGES: 0, 0.2, ... to the top of schema.Z_RANGE),
             "by_snr_gi": bins of SNR_GI (edges 0, 0.5, 1, 2, 3, 5, 10, inf),
                     each a list of {"lo", "hi", "n", metrics...},
             "reliability": {"levels", "observed", "observed_uncal"}, "header": predictions header,
             "crb_median", "nmad_over_crb": median ZERR_CRB/(1+z) of the truth and sigma_NMAD over it
                     (also in every by_snr_gi bin; null when the truth has no ZERR_CRB),
             "pz": (predictions with PZ / PZ_GRID only) {"n", "pit_ks", "pit_hist": {"edges", "density"},
                     "crps", "coverage_68", "coverage_95" (of the p(z) central intervals),
                     "mass_away_median", "by_snr_gi": [{"lo", "hi", the same}]}, "pz_examples": row
                     TARGETIDs of the example p(z) shown (clean, multimodal, flagged)}

Definitions: :mod:`csstz.evaluate.metrics` (sigma_NMAD, eta, E_bar exactly as
arXiv:2407.13991). Infinite bin edges are written as the string "inf"; metrics
of empty bins are null.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.table import Table

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_path
from . import metrics
from .plots import (
    MethodArrays,
    fig7_zpred_vs_ztrue,
    fig8_z_distributions,
    fig9_metrics_vs_z,
    fig9b_metrics_vs_snr,
    fig10_reliability,
    fig11_errorbars,
    fig12_uncertainty,
    fig_pit_histogram,
    fig_pit_pz,
    fig_pz_examples,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from .._types import PathLike

#: The paper's headline numbers (arXiv:2407.13991 sec. 4 and abstract), shown beside ours.
PAPER = {
    "CNN": {"sigma_nmad": 0.00047, "eta": 0.00954, "ebar": None},
    "BNN": {"sigma_nmad": 0.00063, "eta": 0.0092, "ebar": 0.00228},
    "templates": {"note": "traditional template fitting: accuracy about 1% (no exact figure given)"},
}

#: (file name, caption) of each figure, in report order.
FIGURES = (
    (
        "fig07_zpred_ztrue.png",
        "Fig. 7 - predicted vs true redshift, coloured by log10 GI SNR; dashed: |dz| = 0.02(1+z).",
    ),
    ("fig08_z_distribution.png", "Fig. 8 - distribution of true and predicted redshifts."),
    ("fig09_metrics_vs_z.png", "Fig. 9 - sigma_NMAD and outlier fraction in bins of true redshift."),
    ("fig09b_metrics_vs_snr.png", "sigma_NMAD and outlier fraction in bins of GI SNR."),
    (
        "fig10_reliability.png",
        "Fig. 10 - reliability diagram: nominal central-interval level vs observed "
        "coverage, after (solid) and before (dashed) calibration.",
    ),
    ("fig11_errorbars.png", "Fig. 11 - predicted vs true redshift with 1-sigma error bars."),
    ("fig12_uncertainty.png", "Fig. 12 - E_bar in bins of true z; uncertainty vs GI SNR."),
    ("fig_pit.png", "PIT histograms (flat when calibrated)."),
)
#: Figures added when a method carries p(z) (predictions HDUs PZ / PZ_GRID).
PZ_FIGURES = (
    ("fig_pit_pz.png", "PIT histograms of the p(z) (CDF of each p(z) at the true z; flat when calibrated)."),
    (
        "fig_pz_examples.png",
        "Example p(z): a clean object (ZWARN = 0, little mass away from the mode; the "
        "median GI SNR among those), the most multimodal one, and a flagged one "
        "(ZWARN != 0). Dashed: true z; dotted: Z.",
    ),
)
#: Rows of p(z) processed at a time (memory: rows x grid x 8 bytes per array).
PZ_BLOCK = 2000
#: An object counts as clean for the example figure when its p(z) mass away from the mode is below this.
CLEAN_MASS_AWAY = 0.05
_PLOTTERS = (
    fig7_zpred_vs_ztrue,
    fig8_z_distributions,
    fig9_metrics_vs_z,
    fig9b_metrics_vs_snr,
    fig10_reliability,
    fig11_errorbars,
    fig12_uncertainty,
    fig_pit_histogram,
)


# --- matching and metrics ----------------------------------------------------------------------
def _column(tab: Table, name: str) -> np.ndarray | None:
    return np.asarray(tab[name], np.float64) if name in tab.colnames else None


def match_truth(pred: Table, truth: Table, label: str = "predictions") -> tuple[Table, np.ndarray]:
    """Rows of ``truth`` matching each prediction on TARGETID.

    Returns
    -------
    pred : Table
        The predictions (unchanged order).
    index : ndarray of int, shape (N,)
        Row of ``truth`` for each prediction.

    Raises
    ------
    InputError
        A missing column, a duplicated TARGETID, or a prediction without truth.
    """
    for tab, what, cols in ((pred, label, ("TARGETID", "Z")), (truth, "truth", ("TARGETID", "Z"))):
        for c in cols:
            if c not in tab.colnames:
                raise InputError(c, f"column missing from the {what} table")
    if len(pred) == 0:
        raise InputError("TARGETID", f"the {label} table is empty")
    t_ids = np.asarray(truth["TARGETID"], np.int64)
    order = np.argsort(t_ids, kind="stable")
    sorted_ids = t_ids[order]
    if np.any(sorted_ids[1:] == sorted_ids[:-1]):
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0]
        raise InputError("TARGETID", "duplicated in the truth table", value=int(dup))
    p_ids = np.asarray(pred["TARGETID"], np.int64)
    if np.unique(p_ids).size != p_ids.size:
        raise InputError("TARGETID", f"duplicated in the {label} table")
    pos = np.clip(np.searchsorted(sorted_ids, p_ids), 0, max(sorted_ids.size - 1, 0))
    found = sorted_ids.size > 0
    ok = (sorted_ids[pos] == p_ids) if found else np.zeros(p_ids.size, bool)
    if not np.all(ok):
        miss = np.flatnonzero(~ok)
        raise InputError(
            "TARGETID", f"{miss.size} {label} rows have no truth row", row=int(miss[0]), value=int(p_ids[miss[0]])
        )
    return pred, order[pos]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    return obj


def _pz_arrays(pred: Table, good: np.ndarray, z_true: np.ndarray, label: str) -> dict | None:
    """Per-object p(z) quantities of the ``good`` rows (NaN where a row has no p(z)), or None without PZ."""
    from ..templates import pdf

    if "PZ" not in pred.meta:
        return None
    pz_all, grid = np.asarray(pred.meta["PZ"]), np.asarray(pred.meta.get("PZ_GRID"), np.float64)
    if pz_all.ndim != 2 or pz_all.shape[0] != len(pred) or grid.ndim != 1 or pz_all.shape[1] != grid.size:
        raise InputError(
            "PZ",
            f"shape does not match the {label} table and its PZ_GRID",
            value=pz_all.shape,
            allowed=f"({len(pred)}, {grid.size})",
        )
    pz = pz_all[good]
    n = pz.shape[0]
    out = {k: np.full(n, np.nan) for k in ("pit", "crps", "lo68", "hi68", "lo95", "hi95", "mass_away")}
    has = np.isfinite(pz).all(axis=1)
    rows = np.flatnonzero(has)
    for s in range(0, rows.size, PZ_BLOCK):
        r = rows[s : s + PZ_BLOCK]
        p = pdf.normalise(pz[r], grid)
        out["pit"][r] = pdf.pit(p, grid, z_true[r])
        out["crps"][r] = pdf.crps(p, grid, z_true[r])
        out["lo68"][r], out["hi68"][r] = pdf.central_interval(p, grid, pdf.LEVEL_68)
        out["lo95"][r], out["hi95"][r] = pdf.central_interval(p, grid, pdf.LEVEL_95)
        out["mass_away"][r] = pdf.mass_away_from_mode(p, grid)
    out.update(pz=pz, grid=grid, has=has)
    return out


def _pz_entry(q: dict, z_true: np.ndarray, snr: np.ndarray | None) -> dict:
    """The ``pz`` entry of metrics.json from :func:`_pz_arrays`: overall and per GI-SNR bin."""
    inside68 = (q["lo68"] <= z_true) & (z_true <= q["hi68"])
    inside95 = (q["lo95"] <= z_true) & (z_true <= q["hi95"])

    def summary(sel: np.ndarray) -> dict:
        sel = sel & q["has"]
        if not sel.any():
            return {
                "n": 0,
                "pit_ks": None,
                "pit_hist": None,
                "crps": None,
                "coverage_68": None,
                "coverage_95": None,
                "mass_away_median": None,
            }
        out = metrics.pz_summary(q["pit"][sel], q["crps"][sel], inside68[sel], inside95[sel])
        out["mass_away_median"] = float(np.median(q["mass_away"][sel]))
        return out

    entry = summary(np.ones(z_true.size, bool))
    entry["by_snr_gi"] = []
    if snr is not None:
        for lo, hi in zip(metrics.SNR_EDGES[:-1], metrics.SNR_EDGES[1:]):
            entry["by_snr_gi"].append({"lo": float(lo), "hi": float(hi), **summary((snr >= lo) & (snr < hi))})
    return entry


def pz_examples(arrays: MethodArrays) -> dict:
    """Rows (into the method's arrays) of the example p(z): clean, multimodal and flagged (None where absent).

    Chosen from the predictions only, never from the truth: *clean* is ZWARN = 0 with less than
    :data:`CLEAN_MASS_AWAY` of the p(z) away from its mode, at the median GI SNR of those; *multimodal*
    the largest mass away from the mode; *flagged* ZWARN != 0 at the median GI SNR of the flagged.
    """
    if arrays.pz is None:
        return {}
    has = np.isfinite(arrays.mass_away)
    zw = arrays.zwarn if arrays.zwarn is not None else np.zeros(has.size, np.int64)
    snr = arrays.snr_gi if arrays.snr_gi is not None else np.arange(has.size, dtype=float)

    def at_median(sel: np.ndarray) -> int | None:
        rows = np.flatnonzero(sel)
        if rows.size == 0:
            return None
        order = rows[np.argsort(snr[rows], kind="stable")]
        return int(order[(order.size - 1) // 2])

    multi = np.flatnonzero(has)
    return {
        "clean": at_median(has & (zw == 0) & (arrays.mass_away < CLEAN_MASS_AWAY)),
        "multimodal": int(multi[np.argmax(arrays.mass_away[multi])]) if multi.size else None,
        "flagged": at_median(has & (zw != 0)),
    }


def _crb_rows(
    entry: dict, z_pred: np.ndarray, z_true: np.ndarray, crb: np.ndarray | None, snr: np.ndarray | None
) -> None:
    """Add crb_median / nmad_over_crb overall and to each by_snr_gi bin (None without ZERR_CRB)."""
    none = {"crb_median": None, "nmad_over_crb": None}
    entry.update(none if crb is None else metrics.crb_summary(z_pred, z_true, crb))
    for row in entry["by_snr_gi"]:
        sel = None if (crb is None or snr is None) else (snr >= row["lo"]) & (snr < row["hi"])
        row.update(none if sel is None or not sel.any() else metrics.crb_summary(z_pred[sel], z_true[sel], crb[sel]))


def method_entry(pred: Table, truth: Table, label: str) -> tuple[dict, MethodArrays]:
    """Metrics of one predictions table against the truth, and its arrays for the figures."""
    pred, idx = match_truth(pred, truth, label)
    z_true = np.asarray(truth["Z"], np.float64)[idx]
    snr = _column(truth, "SNR_GI")
    snr = None if snr is None else snr[idx]
    z = np.asarray(pred["Z"], np.float64)
    zerr, zerr_uncal = _column(pred, "ZERR"), _column(pred, "ZERR_UNCAL")
    zwarn = np.asarray(pred["ZWARN"], np.int64) if "ZWARN" in pred.colnames else np.zeros(len(pred), np.int64)
    good = np.isfinite(z) & np.isfinite(z_true)
    has_err = zerr is not None and np.any(np.isfinite(zerr) & (zerr > 0))
    if has_err:
        good &= np.isfinite(zerr) & (zerr > 0)
    if zerr_uncal is not None:
        good &= np.isfinite(zerr_uncal) & (zerr_uncal > 0)
    if snr is not None:  # a source without a finite SNR stays in the metrics, outside every SNR bin
        snr = np.where(np.isfinite(snr), snr, -1.0)
    if not good.any():
        raise InputError("Z", f"no finite prediction in {label}")
    if zerr_uncal is not None and zerr is not None and np.allclose(zerr_uncal[good], zerr[good], equal_nan=True):
        zerr_uncal = None  # no calibration step (e.g. the CNN): nothing "before" to show
    sel = lambda a: None if a is None else a[good]  # noqa: E731
    q = _pz_arrays(pred, good, z_true[good], label)
    arrays = MethodArrays(
        label,
        z_true[good],
        z[good],
        sel(zerr) if has_err else None,
        sel(zerr_uncal),
        sel(snr),
        pz=None if q is None else q["pz"],
        pz_grid=None if q is None else q["grid"],
        pit_pz=None if q is None else q["pit"],
        mass_away=None if q is None else q["mass_away"],
        zwarn=zwarn[good],
    )
    entry = {
        "label": label,
        "n_total": len(pred),
        "n_failed": int((~good).sum()),
        "zwarn_fraction": float(np.mean(zwarn != 0)),
    }
    entry.update(metrics.summary(arrays.z_pred, arrays.z_true, arrays.zerr))
    # the paper's eta leaves nothing out: a failed (non-finite) prediction counts as an outlier here
    entry["eta_incl_failed"] = float((entry["eta"] * entry["n"] + entry["n_failed"]) / max(len(pred), 1))
    lo68, hi68, lo95, hi95 = (_column(pred, c) for c in ("Z_LO68", "Z_HI68", "Z_LO95", "Z_HI95"))
    if lo68 is not None and hi68 is not None and lo95 is not None and hi95 is not None:
        # coverage of the calibrated intervals as written by predict (exact for asymmetric calibrations);
        # the Gaussian Z +- k ZERR values stay under *_gauss
        zt = z_true[good]
        entry["coverage_68_gauss"], entry["coverage_95_gauss"] = entry["coverage_68"], entry["coverage_95"]
        entry["coverage_68"] = float(np.mean((lo68[good] <= zt) & (zt <= hi68[good])))
        entry["coverage_95"] = float(np.mean((lo95[good] <= zt) & (zt <= hi95[good])))
    ok0 = zwarn[good] == 0
    entry["zwarn0"] = (
        metrics.summary(arrays.z_pred[ok0], arrays.z_true[ok0], None if arrays.zerr is None else arrays.zerr[ok0])
        if ok0.any()
        else {"n": 0}
    )
    if arrays.zerr_uncal is not None:
        s = metrics.summary(arrays.z_pred, arrays.z_true, arrays.zerr_uncal)
        entry["uncalibrated"] = {k: s[k] for k in ("ebar", "coverage_68", "coverage_95", "crps", "miscal_area")}
    for part in ("EPISTEMIC", "ALEATORIC"):
        col = _column(pred, f"ZERR_{part}")
        if col is not None and np.all(np.isfinite(col[good])):
            entry[f"ebar_{part.lower()}"] = float(np.mean(col[good] / (1 + arrays.z_true)))
    entry["by_z"] = metrics.binned(arrays.z_pred, arrays.z_true, arrays.zerr, by=arrays.z_true, edges=metrics.Z_EDGES)
    entry["by_snr_gi"] = (
        metrics.binned(arrays.z_pred, arrays.z_true, arrays.zerr, by=arrays.snr_gi, edges=metrics.SNR_EDGES)
        if arrays.snr_gi is not None
        else []
    )
    crb = _column(truth, "ZERR_CRB")
    _crb_rows(entry, arrays.z_pred, arrays.z_true, None if crb is None else crb[idx][good], arrays.snr_gi)
    if q is not None:
        entry["pz"] = _pz_entry(q, arrays.z_true, arrays.snr_gi)
        tids = np.asarray(pred["TARGETID"], np.int64)[good]
        entry["pz_examples"] = {k: (None if i is None else int(tids[i])) for k, i in pz_examples(arrays).items()}
    if arrays.zerr is not None:
        lev, obs = metrics.reliability_curve(arrays.z_pred, arrays.zerr, arrays.z_true)
        rel = {"levels": lev, "observed": obs}
        if arrays.zerr_uncal is not None:
            rel["observed_uncal"] = metrics.reliability_curve(arrays.z_pred, arrays.zerr_uncal, arrays.z_true)[1]
        entry["reliability"] = rel
    entry["header"] = {k: v for k, v in pred.meta.items() if isinstance(v, (str, int, float, bool))}
    return entry, arrays


# --- HTML --------------------------------------------------------------------------------------
def _fmt(v: float | int | None, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{100 * v:.2f}%" if pct else f"{v:.5f}"


_ROWS = (
    ("n", "sources (finite predictions)", False),
    ("n_failed", "failed (non-finite)", False),
    ("sigma_nmad", "&sigma;<sub>NMAD</sub>", False),
    ("eta", "outlier fraction &eta;", True),
    ("ebar", "&Ecirc; (mean ZERR/(1+z))", False),
    ("bias", "bias (median dz/(1+z))", False),
    ("coverage_68", "coverage of 68.3% interval", True),
    ("coverage_95", "coverage of 95.4% interval", True),
    ("crps", "CRPS", False),
    ("miscal_area", "miscalibration area", False),
    ("zwarn_fraction", "ZWARN &ne; 0", True),
)


def _headline_table(entries: dict) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in entries)
    rows = []
    for key, name, pct in _ROWS:
        cells = "".join(f"<td>{_fmt(e.get(key), pct)}</td>" for e in entries.values())
        rows.append(f"<tr><th>{name}</th>{cells}</tr>")
    cells = "".join(
        f"<td>{_fmt(e['zwarn0'].get('sigma_nmad'))} / {_fmt(e['zwarn0'].get('eta'), True)} "
        f"(n={e['zwarn0'].get('n', 0)})</td>"
        for e in entries.values()
    )
    rows.append(f"<tr><th>ZWARN = 0 only: &sigma;<sub>NMAD</sub> / &eta;</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _edge(v: float, snr: bool) -> str:
    if not math.isfinite(v):
        return "&infin;"
    return f"{v:g}" if snr else f"{v:.1f}"


def _bins_table(entries: dict, key: str, what: str) -> str:
    parts = []
    snr = key == "by_snr_gi"
    for label, e in entries.items():
        if not e.get(key):
            continue
        rows = "".join(
            f"<tr><td>{_edge(r['lo'], snr)} - {_edge(r['hi'], snr)}</td><td>{r['n']}</td>"
            f"<td>{_fmt(r['sigma_nmad'])}</td><td>{_fmt(r['eta'], True)}</td>"
            f"<td>{_fmt(r['ebar'])}</td><td>{_fmt(r['coverage_68'], True)}</td></tr>"
            for r in e[key]
        )
        parts.append(
            f"<h3>{html.escape(label)}: in bins of {what}</h3><table><tr><th>{what}</th><th>n</th>"
            f"<th>&sigma;<sub>NMAD</sub></th><th>&eta;</th><th>&Ecirc;</th><th>cov. 68%</th></tr>"
            f"{rows}</table>"
        )
    return "".join(parts)


def _pz_crb_table(entries: dict) -> str:
    """Per method and GI-SNR bin: sigma_NMAD against the Cramer-Rao bound, and the p(z) calibration."""
    parts = []
    for label, e in entries.items():
        if not e.get("by_snr_gi") or (e.get("crb_median") is None and "pz" not in e):
            continue
        pzb = {(r["lo"], r["hi"]): r for r in e.get("pz", {}).get("by_snr_gi", [])}
        rows = []
        for r in e["by_snr_gi"]:
            p = pzb.get((r["lo"], r["hi"]), {})
            rows.append(
                f"<tr><td>{_edge(r['lo'], True)} - {_edge(r['hi'], True)}</td><td>{r['n']}</td>"
                f"<td>{_fmt(r['sigma_nmad'])}</td><td>{_fmt(r.get('crb_median'))}</td>"
                f"<td>{_fmt_ratio(r.get('nmad_over_crb'))}</td><td>{_fmt(p.get('pit_ks'))}</td>"
                f"<td>{_fmt(p.get('crps'))}</td><td>{_fmt(p.get('coverage_68'), True)}</td>"
                f"<td>{_fmt(p.get('coverage_95'), True)}</td></tr>"
            )
        p = e.get("pz", {})
        rows.append(
            f"<tr><th>all</th><td>{e['n']}</td><td>{_fmt(e['sigma_nmad'])}</td>"
            f"<td>{_fmt(e.get('crb_median'))}</td><td>{_fmt_ratio(e.get('nmad_over_crb'))}</td>"
            f"<td>{_fmt(p.get('pit_ks'))}</td><td>{_fmt(p.get('crps'))}</td>"
            f"<td>{_fmt(p.get('coverage_68'), True)}</td><td>{_fmt(p.get('coverage_95'), True)}</td></tr>"
        )
        parts.append(
            f"<h3>{html.escape(label)}: accuracy against the Cramer-Rao bound, and p(z) calibration, "
            f"in bins of GI SNR</h3><table><tr><th>GI SNR</th><th>n</th><th>&sigma;<sub>NMAD</sub></th>"
            f"<th>median ZERR_CRB/(1+z)</th><th>&sigma;<sub>NMAD</sub> / bound</th><th>PIT KS</th>"
            f"<th>CRPS</th><th>p(z) cov. 68.3%</th><th>p(z) cov. 95.4%</th></tr>{''.join(rows)}</table>"
        )
    if not parts:
        return ""
    return (
        "<h2>How close to the limit; p(z) calibration</h2><p class='note'>Bound: the per-object Cramer-Rao "
        "bound on z (ZERR_CRB of the truth file, docs/crb.md), median of ZERR_CRB/(1+z) per bin; '-' where the "
        "truth has no ZERR_CRB. PIT, CRPS and coverage from each method's p(z) (predictions HDU PZ); '-' "
        "without it.</p>" + "".join(parts)
    )


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


def _img_tag(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


_CSS = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
    "th{background:#f0f0f0}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:90%;color:#444}"
    ".note{color:#555;font-size:90%}"
)


def _html(entries: dict, figures: list[tuple[Path, str]], notes: dict | None) -> str:
    paper_rows = "".join(
        f"<tr><th>{k}</th><td>{_fmt(v.get('sigma_nmad'))}</td><td>{_fmt(v.get('eta'), True)}</td>"
        f"<td>{_fmt(v.get('ebar'))}</td><td>{html.escape(v.get('note', ''))}</td></tr>"
        for k, v in PAPER.items()
    )
    note_html = ""
    if notes:
        note_html = (
            "<h2>Run</h2><table>"
            + "".join(
                f"<tr><th>{html.escape(str(k))}</th><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                for k, v in notes.items()
            )
            + "</table>"
        )
    figs = "".join(_img_tag(p, c) for p, c in figures)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>csstz report</title>"
        f"<style>{_CSS}</style></head><body><h1>csstz redshift report</h1>"
        f"<p class='note'>csstz {html.escape(__version__)}, {stamp}. Metrics as in arXiv:2407.13991: "
        f"dz = z<sub>pred</sub> - z<sub>true</sub>; &sigma;<sub>NMAD</sub> = 1.48 median(|(dz - median dz)/"
        f"(1+z)|); &eta; = fraction with |dz|/(1+z) &gt; 0.02; &Ecirc; = mean(ZERR/(1+z)). Coverage: "
        f"fraction of true z inside z &plusmn; ZERR (68.3%) and &plusmn; 2 ZERR (95.4%).</p>"
        f"{note_html}<h2>Headline</h2>{_headline_table(entries)}{_pz_crb_table(entries)}"
        f"<h2>The paper's numbers (arXiv:2407.13991)</h2><table><tr><th>method</th><th>&sigma;<sub>NMAD</sub>"
        f"</th><th>&eta;</th><th>&Ecirc;</th><th></th></tr>{paper_rows}</table>"
        f"<h2>Figures</h2>{figs}"
        f"<h2>Binned metrics</h2>{_bins_table(entries, 'by_z', 'true z')}"
        f"{_bins_table(entries, 'by_snr_gi', 'GI SNR')}</body></html>"
    )


# --- public API --------------------------------------------------------------------------------
def write_report(
    out_dir: PathLike, methods: dict, truth: Table, extra_figures: Sequence[PathLike] = (), notes: dict | None = None
) -> dict:
    """Compare several methods against one truth table; write metrics.json, PNG figures and report.html.

    Parameters
    ----------
    out_dir : path
        Report directory (created).
    methods : dict of str -> astropy.table.Table
        Label -> predictions (TARGETID, Z, ZWARN, optional ZERR, ZERR_UNCAL, ZERR_EPISTEMIC,
        ZERR_ALEATORIC). The first one is the "primary" method of the top-level keys.
    truth : astropy.table.Table
        TARGETID, Z and (for the SNR bins and Figs. 7, 12) SNR_GI.
    extra_figures : sequence of path
        Further PNGs (e.g. the paper's Figs. 1-5) embedded after the evaluation figures.
    notes : dict, optional
        Key/value lines describing the run (dataset size, epochs, wall time, ...), shown and stored.

    Returns
    -------
    dict
        The content of metrics.json.

    Raises
    ------
    InputError
        No method, a missing column, unmatched TARGETIDs, or no finite prediction.
    """
    if not methods:
        raise InputError("methods", "no predictions to evaluate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries, arrays = {}, []
    for label, tab in methods.items():
        entry, arr = method_entry(tab, truth, str(label))
        entries[str(label)] = entry
        arrays.append(arr)
    figures = []
    for (name, caption), plot in zip(FIGURES, _PLOTTERS):
        figures.append((plot(arrays, out / name), caption))
    if any(a.pz is not None for a in arrays):
        (pit_name, pit_cap), (ex_name, ex_cap) = PZ_FIGURES
        figures.append((fig_pit_pz(arrays, out / pit_name), pit_cap))
        figures.append((fig_pz_examples(arrays, {a.label: pz_examples(a) for a in arrays}, out / ex_name), ex_cap))
    for p in extra_figures:
        p = Path(p)
        if not p.is_file():
            raise InputError("extra_figures", "figure file not found", value=str(p))
        figures.append((p, p.stem.replace("_", " ")))
    primary = next(iter(entries))
    headline = {
        k: entries[primary][k]
        for k in (
            "n",
            "sigma_nmad",
            "eta",
            "ebar",
            "bias",
            "coverage_68",
            "coverage_95",
            "crps",
            "miscal_area",
            "by_z",
            "by_snr_gi",
        )
    }
    result = {
        "csstz_version": __version__,
        "primary": primary,
        **headline,
        "methods": entries,
        "paper": PAPER,
        "notes": notes or {},
        "figures": [Path(p).name for p, _ in figures],
    }
    result = _jsonable(result)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(_html(entries, figures, notes), encoding="utf-8")
    return result


def evaluate_predictions(
    pred_path: PathLike, truth_path: PathLike, out_dir: PathLike, label: str | None = None
) -> dict:
    """``csstz evaluate``: one predictions file against the catalogue of a spectra file.

    Parameters
    ----------
    pred_path : path
        Predictions FITS (HDU REDSHIFTS).
    truth_path : path
        Spectra/dataset HDF5 whose ``/catalog`` holds TARGETID, Z, SNR_GI.
    out_dir : path
    label : str, optional
        Method name (default: the METHOD header keyword, else the file stem).
    """
    from ..io.predictions import read_predictions
    from ..io.spectra import read_catalog

    pred = read_predictions(pred_path)
    truth = read_catalog(truth_path)
    label = label or str(pred.meta.get("METHOD") or Path(pred_path).stem)
    return write_report(out_dir, {label: pred}, truth, notes={"predictions": str(pred_path), "truth": str(truth_path)})


__all__ = [
    "write_report",
    "evaluate_predictions",
    "method_entry",
    "match_truth",
    "pz_examples",
    "FIGURES",
    "PZ_FIGURES",
    "PAPER",
]
