"""The paper's evaluation figures (arXiv:2407.13991 Figs. 7-12) for one or several methods.

matplotlib is imported inside the functions and used through its object API
(``matplotlib.figure.Figure`` with the Agg canvas), so nothing here touches
pyplot's global state or needs a display. Each function writes one PNG
atomically and returns its path.

Every figure takes a list of :class:`MethodArrays`, one per method (CNN, BNN,
template fit, ...), each already matched to its truth, and draws them side by
side or overlaid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io.figures import save_png
from ..schema import Z_RANGE
from . import metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.figure import Figure

    from .._types import ArrayLike, PathLike

#: Line colours per method, in order (colour-blind-safe Okabe-Ito palette).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
DPI = 110
#: Most points drawn with error bars in Fig. 11 (a random subset keeps the PNG readable).
MAX_ERRORBAR_POINTS = 1500


@dataclass(frozen=True)
class MethodArrays:
    """Predictions of one method matched to their truth (all arrays shape (N,), finite).

    Attributes
    ----------
    label : str
    z_true, z_pred : ndarray
    zerr : ndarray or None
        Calibrated 1-sigma uncertainty (> 0).
    zerr_uncal : ndarray or None
        Uncertainty before calibration (BNN ``ZERR_UNCAL``), for Fig. 10.
    snr_gi : ndarray or None
        GI per-spectrum SNR (median flux/err over valid pixels).
    pz : ndarray (N, K) or None
        Gridded p(z) (predictions HDU PZ; NaN rows for objects without one), on ``pz_grid`` (K,).
    pit_pz : ndarray or None
        PIT of each true z under its p(z) (NaN without p(z)).
    mass_away : ndarray or None
        p(z) mass beyond 0.02 (1 + z_mode) of the mode (:func:`csstz.templates.pdf.mass_away_from_mode`).
    zwarn : ndarray or None
        ZWARN of each row.
    """

    label: str
    z_true: np.ndarray
    z_pred: np.ndarray
    zerr: np.ndarray | None = None
    zerr_uncal: np.ndarray | None = None
    snr_gi: np.ndarray | None = None
    pz: np.ndarray | None = None
    pz_grid: np.ndarray | None = None
    pit_pz: np.ndarray | None = None
    mass_away: np.ndarray | None = None
    zwarn: np.ndarray | None = None


def _figure(nrows: int = 1, ncols: int = 1, width: float = 5.0, height: float = 4.2) -> tuple[Figure, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: PathLike) -> Path:
    return save_png(fig, path, dpi=DPI)


def _log_snr(snr: np.ndarray) -> np.ndarray:
    return np.log10(np.clip(snr, 1e-2, None))


def _zrange(methods: Sequence[MethodArrays]) -> tuple[float, float]:
    hi = max(float(np.max(m.z_true)) for m in methods)
    return Z_RANGE[0], max(Z_RANGE[1], hi * 1.02)


def fig7_zpred_vs_ztrue(methods: list[MethodArrays], path: PathLike) -> Path:
    """Fig. 7: predicted against true redshift, coloured by log10 GI SNR, one panel per method.

    The dashed lines mark the outlier limits ``|dz| = 0.02 (1 + z)``.
    """
    fig, axes = _figure(1, len(methods), 4.6, 4.4)
    lo, hi = _zrange(methods)
    grid = np.linspace(lo, hi, 2)
    for ax, m in zip(axes[0], methods):
        if m.snr_gi is not None:
            sc = ax.scatter(
                m.z_true, m.z_pred, c=_log_snr(m.snr_gi), s=3, cmap="viridis", alpha=0.7, lw=0, vmin=-1.0, vmax=1.5
            )
            fig.colorbar(sc, ax=ax, label="log10 SNR (GI)")
        else:
            ax.scatter(m.z_true, m.z_pred, s=3, color=COLOURS[0], alpha=0.7, lw=0)
        ax.plot(grid, grid, "k-", lw=0.8)
        for s in (-1, 1):
            ax.plot(grid, grid + s * 0.02 * (1 + grid), "k--", lw=0.6)
        ax.set(
            xlim=(lo, hi),
            ylim=(lo, hi),
            xlabel="true z",
            ylabel="predicted z",
            title=f"{m.label}: $\\sigma_{{NMAD}}$={metrics.sigma_nmad(m.z_pred, m.z_true):.5f}, "
            f"$\\eta$={100 * metrics.outlier_fraction(m.z_pred, m.z_true):.2f}%",
        )
        ax.title.set_fontsize(9)
    return _save(fig, path)


def fig8_z_distributions(methods: list[MethodArrays], path: PathLike) -> Path:
    """Fig. 8: distributions of the true redshift and of each method's prediction."""
    fig, axes = _figure(1, 1, 6.0, 4.2)
    ax = axes[0, 0]
    lo, hi = _zrange(methods)
    bins = np.linspace(lo, hi, 41)
    ax.hist(methods[0].z_true, bins=bins, histtype="stepfilled", color="0.8", label="true z")
    for i, m in enumerate(methods):
        ax.hist(
            np.clip(m.z_pred, lo, hi),
            bins=bins,
            histtype="step",
            lw=1.5,
            color=COLOURS[i % len(COLOURS)],
            label=f"predicted ({m.label})",
        )
    ax.set(xlabel="z", ylabel="number of sources")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _binned_curve(m: MethodArrays, by: np.ndarray, edges: ArrayLike) -> tuple[np.ndarray, list[dict]]:
    rows = metrics.binned(m.z_pred, m.z_true, m.zerr, by=by, edges=edges)
    e = np.asarray(edges, float)
    finite_hi = np.where(np.isfinite(e[1:]), e[1:], e[:-1] * 2 if e[-2] > 0 else e[:-1] + 1)
    centres = 0.5 * (e[:-1] + finite_hi)
    return centres, rows


def _metric_panels(
    methods: Sequence[MethodArrays], path: PathLike, by_attr: str, edges: ArrayLike, xlabel: str, logx: bool
) -> Path:
    fig, axes = _figure(1, 2, 5.0, 4.0)
    for i, m in enumerate(methods):
        by = m.z_true if by_attr == "z_true" else getattr(m, by_attr)
        if by is None:
            continue
        x, rows = _binned_curve(m, by, edges)
        keep = np.array([r["n"] >= 5 for r in rows])
        if not keep.any():
            continue
        nmad = np.array([r["sigma_nmad"] if r["n"] else np.nan for r in rows], float)
        eta = np.array([100 * r["eta"] if r["n"] else np.nan for r in rows], float)
        kw = dict(marker="o", ms=4, color=COLOURS[i % len(COLOURS)], label=m.label)
        axes[0, 0].plot(x[keep], nmad[keep], **kw)
        axes[0, 1].plot(x[keep], eta[keep], **kw)
    axes[0, 0].set(xlabel=xlabel, ylabel="$\\sigma_{NMAD}$", yscale="log")
    axes[0, 1].set(xlabel=xlabel, ylabel="outlier fraction $\\eta$ [%]")
    for ax in axes[0]:
        if logx:
            ax.set_xscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data (no SNR_GI column?)", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def fig9_metrics_vs_z(methods: list[MethodArrays], path: PathLike, edges: ArrayLike = metrics.Z_EDGES) -> Path:
    """Fig. 9: sigma_NMAD and eta in bins of true z (bins with >= 5 sources drawn)."""
    return _metric_panels(methods, path, "z_true", edges, "true z", False)


def fig9b_metrics_vs_snr(methods: list[MethodArrays], path: PathLike, edges: ArrayLike = metrics.SNR_EDGES) -> Path:
    """sigma_NMAD and eta in bins of GI SNR (not in the paper; shows how accuracy falls with SNR)."""
    return _metric_panels(methods, path, "snr_gi", edges, "SNR (GI)", True)


def fig10_reliability(methods: list[MethodArrays], path: PathLike) -> Path:
    """Fig. 10: reliability diagram, nominal central-interval level vs observed coverage.

    Solid: calibrated ``ZERR``; dashed: ``ZERR_UNCAL`` (before calibration) where present.
    """
    fig, axes = _figure(1, 1, 5.2, 5.0)
    ax = axes[0, 0]
    levels = np.linspace(0.02, 0.98, 49)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
    for i, m in enumerate(methods):
        c = COLOURS[i % len(COLOURS)]
        if m.zerr is not None:
            _, obs = metrics.reliability_curve(m.z_pred, m.zerr, m.z_true, levels)
            area = metrics.miscalibration_area(m.z_pred, m.zerr, m.z_true)
            ax.plot(levels, obs, "-", color=c, label=f"{m.label} (area {area:.3f})")
        if m.zerr_uncal is not None:
            _, obs = metrics.reliability_curve(m.z_pred, m.zerr_uncal, m.z_true, levels)
            area = metrics.miscalibration_area(m.z_pred, m.zerr_uncal, m.z_true)
            ax.plot(levels, obs, "--", color=c, label=f"{m.label} before calibration (area {area:.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="nominal level of the central interval",
        ylabel="observed fraction inside",
        aspect="equal",
    )
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def fig11_errorbars(methods: list[MethodArrays], path: PathLike, seed: int = 0) -> Path:
    """Fig. 11: predicted vs true z with 1-sigma error bars, one panel per method with ZERR.

    At most :data:`MAX_ERRORBAR_POINTS` random sources per panel.
    """
    with_err = [m for m in methods if m.zerr is not None] or methods[:1]
    fig, axes = _figure(1, len(with_err), 4.6, 4.4)
    lo, hi = _zrange(methods)
    rng = np.random.default_rng(seed)
    for i, (ax, m) in enumerate(zip(axes[0], with_err)):
        idx = np.arange(m.z_true.size)
        if idx.size > MAX_ERRORBAR_POINTS:
            idx = np.sort(rng.choice(idx, MAX_ERRORBAR_POINTS, replace=False))
        yerr = None if m.zerr is None else m.zerr[idx]
        ax.errorbar(
            m.z_true[idx],
            m.z_pred[idx],
            yerr=yerr,
            fmt="o",
            ms=1.5,
            lw=0.5,
            alpha=0.6,
            color=COLOURS[methods.index(m) % len(COLOURS)],
        )
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="true z", ylabel="predicted z", title=m.label)
    return _save(fig, path)


def fig12_uncertainty(methods: list[MethodArrays], path: PathLike, edges: ArrayLike = metrics.Z_EDGES) -> Path:
    """Fig. 12: E_bar in bins of true z (left); ZERR/(1+z) against GI SNR (right)."""
    fig, axes = _figure(1, 2, 5.0, 4.0)
    rng = np.random.default_rng(0)
    for i, m in enumerate(methods):
        if m.zerr is None:
            continue
        c = COLOURS[i % len(COLOURS)]
        x, rows = _binned_curve(m, m.z_true, edges)
        keep = np.array([r["n"] >= 5 for r in rows])
        eb = np.array([r["ebar"] if r["n"] else np.nan for r in rows], float)
        if keep.any():
            axes[0, 0].plot(x[keep], eb[keep], "o-", ms=4, color=c, label=m.label)
        if m.snr_gi is not None:
            idx = np.arange(m.z_true.size)
            if idx.size > 5000:
                idx = rng.choice(idx, 5000, replace=False)
            axes[0, 1].scatter(
                np.clip(m.snr_gi[idx], 1e-2, None),
                (m.zerr / (1 + m.z_true))[idx],
                s=2,
                alpha=0.4,
                color=c,
                lw=0,
                label=m.label,
            )
    axes[0, 0].set(xlabel="true z", ylabel="$\\bar{E}$ = mean ZERR/(1+z)", yscale="log")
    axes[0, 1].set(xlabel="SNR (GI)", ylabel="ZERR/(1+z)", xscale="log", yscale="log")
    for ax, scale in zip(axes[0], (1, 4)):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, markerscale=scale)
    return _save(fig, path)


def fig_pit_histogram(methods: list[MethodArrays], path: PathLike) -> Path:
    """PIT histograms (flat when the Gaussian uncertainties are calibrated)."""
    with_err = [m for m in methods if m.zerr is not None]
    fig, axes = _figure(1, max(len(with_err), 1), 4.0, 3.4)
    bins = np.linspace(0, 1, 21)
    for ax, m in zip(axes[0], with_err):
        c = COLOURS[methods.index(m) % len(COLOURS)]
        ax.hist(
            metrics.pit(m.z_pred, m.zerr, m.z_true), bins=bins, density=True, color=c, alpha=0.7, label="calibrated"
        )
        if m.zerr_uncal is not None:
            ax.hist(
                metrics.pit(m.z_pred, m.zerr_uncal, m.z_true),
                bins=bins,
                density=True,
                histtype="step",
                color="k",
                label="before calibration",
            )
            ax.legend(fontsize=7)
        ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.set(xlabel="PIT", ylabel="density", title=m.label)
    if not with_err:
        axes[0, 0].text(0.5, 0.5, "no uncertainties", ha="center", va="center")
    return _save(fig, path)


def fig_pit_pz(methods: list[MethodArrays], path: PathLike) -> Path:
    """PIT histograms of the p(z) (CDF of each p(z) at its true z; flat when calibrated), one panel per method."""
    with_pz = [m for m in methods if m.pit_pz is not None]
    fig, axes = _figure(1, max(len(with_pz), 1), 4.0, 3.4)
    bins = np.linspace(0, 1, metrics.PIT_BINS + 1)
    for ax, m in zip(axes[0], with_pz):
        u = m.pit_pz[np.isfinite(m.pit_pz)]
        c = COLOURS[methods.index(m) % len(COLOURS)]
        ax.hist(u, bins=bins, density=True, color=c, alpha=0.7)
        ax.axhline(1.0, color="k", ls=":", lw=1)
        ks = metrics.pit_ks(u) if u.size else float("nan")
        ax.set(xlabel="PIT of p(z)", ylabel="density", title=f"{m.label} (KS {ks:.3f})")
    if not with_pz:
        axes[0, 0].text(0.5, 0.5, "no p(z)", ha="center", va="center")
    return _save(fig, path)


def fig_pz_examples(methods: list[MethodArrays], examples: dict, path: PathLike) -> Path:
    """Example p(z): one row per method with p(z), one panel per kind (clean, multimodal, flagged).

    Parameters
    ----------
    examples : dict
        Method label -> {kind: row index into that method's arrays, or None}.
    """
    with_pz = [m for m in methods if m.pz is not None]
    kinds = ("clean", "multimodal", "flagged")
    fig, axes = _figure(max(len(with_pz), 1), len(kinds), 4.0, 3.0)
    for r, m in enumerate(with_pz):
        for ax, kind in zip(axes[r], kinds):
            i = examples.get(m.label, {}).get(kind)
            if i is None:
                ax.text(0.5, 0.5, f"no {kind} object", ha="center", va="center", transform=ax.transAxes)
                ax.set(title=f"{m.label}: {kind}")
                continue
            p = m.pz[i].astype(np.float64)
            c = COLOURS[methods.index(m) % len(COLOURS)]
            ax.plot(m.pz_grid, p, color=c, lw=1)
            ax.axvline(m.z_true[i], color="k", ls="--", lw=1, label="true z")
            ax.axvline(m.z_pred[i], color=c, ls=":", lw=1, label="Z")
            # zoom on where the probability is, keeping both the truth and the prediction in view
            on = m.pz_grid[p > 1e-3 * np.nanmax(p)]
            lo = min(on.min(), m.z_true[i], m.z_pred[i]) if on.size else m.pz_grid[0]
            hi = max(on.max(), m.z_true[i], m.z_pred[i]) if on.size else m.pz_grid[-1]
            pad = max(0.05 * (hi - lo), 0.01)
            ax.set_xlim(lo - pad, hi + pad)
            extra = f", ZWARN {int(m.zwarn[i])}" if m.zwarn is not None else ""
            away = f", off-mode mass {m.mass_away[i]:.2f}" if m.mass_away is not None else ""
            ax.set(xlabel="z", ylabel="p(z)", title=f"{m.label}: {kind}{extra}{away}")
            ax.title.set_fontsize(8)
            ax.legend(fontsize=7)
    if not with_pz:
        axes[0, 0].text(0.5, 0.5, "no p(z)", ha="center", va="center")
    return _save(fig, path)


__all__ = [
    "fig_pit_pz",
    "fig_pz_examples",
    "MethodArrays",
    "fig7_zpred_vs_ztrue",
    "fig8_z_distributions",
    "fig9_metrics_vs_z",
    "fig9b_metrics_vs_snr",
    "fig10_reliability",
    "fig11_errorbars",
    "fig12_uncertainty",
    "fig_pit_histogram",
]
