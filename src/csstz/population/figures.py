"""The paper's Figs. 1-3 from any dataset file: redshift, morphology and SNR distributions.

matplotlib is imported lazily (Agg backend), so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io.figures import new_figure, save_png
from ..io.spectra import read_catalog
from ..schema import SNR_TOTAL, Z_RANGE
from .nz import CSST_Z_EDGES, csst_bin_probabilities

if TYPE_CHECKING:
    from astropy.table import Table

    from .._types import ArrayLike, PathLike


def _groups(cat: Table) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per split (or survey) plus the total."""
    out = []
    for col in ("SPLIT", "SURVEY"):
        if col in cat.colnames:
            for val in sorted(set(np.asarray(cat[col]).astype(str))):
                out.append((f"{col.lower()} {val}", np.asarray(cat[col]).astype(str) == val))
            break
    out.append(("total", np.ones(len(cat), bool)))
    return out


def plot_redshift(cat: Table, path: Path) -> Path:
    """Fig. 1: redshift distribution per split/source and in total, with the CSST n(z)."""
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    bins = np.linspace(Z_RANGE[0], Z_RANGE[1], 33)
    z = np.asarray(cat["Z"], float)
    for label, m in _groups(cat):
        ax.hist(z[m], bins=bins, histtype="step", density=True, lw=1.5 if label == "total" else 1, label=label)
    dens = csst_bin_probabilities() / np.diff(CSST_Z_EDGES)
    ax.stairs(dens, CSST_Z_EDGES, color="k", ls="--", label="CSST n(z) table")
    ax.set_xlabel("z")
    ax.set_ylabel("probability density")
    ax.legend(fontsize=8)
    ax.set_title(f"Redshift distribution (N = {len(cat)})")
    return save_png(fig, path)


def plot_morphology(cat: Table, path: Path) -> Path:
    """Fig. 2: r_eff [arcsec], Sersic n, b/a and position angle [deg]."""
    fig = new_figure(figsize=(8, 6))
    axes = fig.subplots(2, 2)
    specs = [
        ("SHAPE_R", r"$r_{\rm eff}$ [arcsec]", np.linspace(0, 4, 41)),
        ("SERSIC", "Sersic n", np.linspace(0, 6.5, 53)),
        ("BA", "b/a", np.linspace(0, 1, 41)),
        ("PA", r"$\phi$ [deg]", np.linspace(-90, 90, 37)),
    ]
    for ax, (col, label, bins) in zip(axes.ravel(), specs):
        ax.hist(np.asarray(cat[col], float), bins=bins, histtype="stepfilled", alpha=0.7)
        ax.set_xlabel(label)
        ax.set_ylabel("N")
    fig.suptitle(f"Morphology (N = {len(cat)})")
    return save_png(fig, path)


def snr_columns(cat: Table) -> list[str]:
    """The per-band SNR columns of a catalogue in file order, then SNR_TOTAL."""
    return [c for c in cat.colnames if c.startswith("SNR_") and c != SNR_TOTAL] + [SNR_TOTAL]


def snr_modes(cat: Table, bins: ArrayLike | None = None) -> dict:
    """Mode of each SNR distribution: centre of the fullest bin of a log-spaced histogram."""
    bins = np.logspace(-2, 2, 41) if bins is None else bins
    out = {}
    for col in snr_columns(cat):
        v = np.asarray(cat[col], float)
        h, e = np.histogram(v[v > 0], bins=bins)
        out[col] = float(np.sqrt(e[h.argmax()] * e[h.argmax() + 1]))
    return out


def plot_snr(cat: Table, path: Path) -> Path:
    """Fig. 3: SNR distributions in every band and in total (log axis)."""
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    bins = np.logspace(-2, 2, 41)
    modes = snr_modes(cat, bins)
    for col in snr_columns(cat):
        v = np.asarray(cat[col], float)
        frac_lt1 = float(np.mean(v < 1))
        ax.hist(
            np.clip(v, bins[0], bins[-1]),
            bins=bins,
            histtype="step",
            lw=1.5,
            label=f"{col[4:]}: mode {modes[col]:.2f}, {100 * frac_lt1:.0f}% < 1",
        )
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("SNR (median over valid pixels of flux/err)")
    ax.set_ylabel("N")
    ax.legend(fontsize=8)
    ax.set_title(f"SNR distributions (N = {len(cat)})")
    return save_png(fig, path)


def plot_dataset_figures(dataset_path: PathLike, out_dir: PathLike) -> list[Path]:
    """Draw Figs. 1-3 of the paper for a dataset (or spectra) file.

    Parameters
    ----------
    dataset_path : path-like
        HDF5 file with a ``/catalog`` holding Z, SHAPE_R, SERSIC, BA, PA and SNR_* columns.
    out_dir : path-like
        Directory for ``fig1_redshift.png``, ``fig2_morphology.png``, ``fig3_snr.png``.

    Returns
    -------
    list of Path

    Raises
    ------
    FileFormatError
        The file is missing or has no catalogue.
    """
    cat = read_catalog(dataset_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_redshift(cat, out / "fig1_redshift.png"),
        plot_morphology(cat, out / "fig2_morphology.png"),
        plot_snr(cat, out / "fig3_snr.png"),
    ]


__all__ = ["plot_dataset_figures", "plot_redshift", "plot_morphology", "plot_snr", "snr_modes"]
