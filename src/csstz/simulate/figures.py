"""The paper's Fig. 4 (2D first-order images) and Fig. 5 (extracted 1D spectra) for one source.

matplotlib is imported inside the functions (Agg canvas, no pyplot), so that importing
the simulator never pulls a plotting stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..instrument import Instrument, load_instrument
from ..io.figures import new_figure, save_png
from .api import read_input_catalog, simulate_source, validate_inputs

if TYPE_CHECKING:
    from .._types import ArrayLike, PathLike


def plot_2d_images(images: dict, instrument: Instrument, path: PathLike, title: str = "") -> Path:
    """Fig. 4: the first-order 2D image of each band.

    Parameters
    ----------
    images : dict
        Band name -> ndarray (ny, nx) electrons (sky-subtracted), as saved with --save-2d.
    """
    fig = new_figure(figsize=(10, 1.3 * len(images) + 0.8))
    axes = fig.subplots(len(images), 1, squeeze=False)
    for ax, (name, img) in zip(axes[:, 0], images.items()):
        band = instrument.band(name)
        half = (img.shape[1] - band.n_pix) // 2
        x0 = band.wave_min_aa - (half + 0.5) * band.dispersion_aa_per_pix
        x1 = x0 + img.shape[1] * band.dispersion_aa_per_pix
        lim = np.percentile(img, [1, 99.5])
        ax.imshow(
            img,
            origin="lower",
            aspect="auto",
            cmap="gray",
            vmin=lim[0],
            vmax=lim[1],
            extent=(x0, x1, -img.shape[0] / 2, img.shape[0] / 2),
        )
        ax.set_ylabel(f"{name}\npixel")
    axes[-1, 0].set_xlabel("wavelength of the trace centre [A]")
    fig.suptitle(title or "CSST first-order 2D spectra (4 x 150 s, sky subtracted)")
    return save_png(fig, path)


def plot_1d_spectra(spectra: dict, wave_aa: np.ndarray, flam17: np.ndarray, path: PathLike, title: str = "") -> Path:
    """Fig. 5: extracted 1D spectra with errors, the input SED over them.

    Parameters
    ----------
    spectra : dict
        Band name -> (wave_aa (L,), flux (L,), err (L,)) in 1e-17 erg/s/cm^2/A.
    wave_aa, flam17 : ndarray
        The input SED.
    """
    fig = new_figure(figsize=(10, 4))
    ax = fig.subplots()
    colors = {"GU": "tab:purple", "GV": "tab:green", "GI": "tab:red"}
    lo, hi = np.inf, -np.inf
    for name, (w, f, e) in spectra.items():
        ok = np.isfinite(e)
        ax.fill_between(w[ok], (f - e)[ok], (f + e)[ok], color=colors.get(name, "gray"), alpha=0.25, lw=0)
        ax.plot(w[ok], f[ok], color=colors.get(name, "gray"), lw=0.7, label=name)
        lo, hi = min(lo, w[0]), max(hi, w[-1])
    sel = (wave_aa >= lo) & (wave_aa <= hi)
    ax.plot(wave_aa[sel], flam17[sel], color="k", lw=1.0, label="input SED")
    ref = flam17[sel]
    ax.set_ylim(-0.5 * np.nanmax(ref), 2.5 * np.nanmax(ref))
    ax.set_xlabel("observed wavelength [A]")
    ax.set_ylabel("f_lambda [1e-17 erg/s/cm^2/A]")
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    ax.set_title(title or "Extracted CSST slitless spectra")
    return save_png(fig, path)


def plot_source(
    wave_aa: ArrayLike,
    flam17: ArrayLike,
    shape_r_arcsec: float,
    sersic: float,
    ba: float,
    pa_deg: float,
    out_dir: PathLike,
    targetid: int = 0,
    seed: int = 0,
    z: float | None = None,
    instrument: Instrument | None = None,
) -> list[Path]:
    """Simulate one source with noise and draw Fig. 4 and Fig. 5 for it.

    Returns
    -------
    list of Path
        ``fig4_<targetid>.png`` and ``fig5_<targetid>.png`` in ``out_dir``.
    """
    inst = instrument if instrument is not None else load_instrument()
    bands = tuple(inst.bands)
    wave, flux, tid, hlr, n_s, q, pa = validate_inputs(
        wave_aa, np.atleast_2d(flam17), np.array([targetid]), [shape_r_arcsec], [sersic], [ba], [pa_deg], inst, bands
    )
    res = simulate_source(
        wave, flux[0], hlr[0], n_s[0], q[0], pa[0], inst, bands=bands, targetid=int(tid[0]), seed=seed, save_2d=True
    )
    label = (
        f"TARGETID {targetid}"
        + (f", z = {z:.3f}" if z is not None else "")
        + f', r_e = {hlr[0]:.2f}", n = {n_s[0]:.1f}, b/a = {q[0]:.2f}, PA = {pa[0]:.0f} deg'
    )
    out = Path(out_dir)
    p4 = plot_2d_images({b: r.image2d for b, r in res.items()}, inst, out / f"fig4_{targetid}.png", label)
    p5 = plot_1d_spectra(
        {b: (inst.band(b).wave_aa, r.flux, r.err) for b, r in res.items()},
        wave,
        flux[0],
        out / f"fig5_{targetid}.png",
        label,
    )
    return [p4, p5]


def plot_source_from_catalog(
    catalog_path: PathLike, targetid: int, out_dir: PathLike, seed: int = 0, instrument_path: PathLike | None = None
) -> list[Path]:
    """``csstz plot-spectrum``: Fig. 4 and 5 for the row of ``targetid`` in a simulate-input catalogue.

    Raises
    ------
    InputError
        ``targetid`` is not in the catalogue.
    """
    cat, wave, flux = read_input_catalog(catalog_path)
    rows = np.nonzero(np.asarray(cat["TARGETID"]) == int(targetid))[0]
    if rows.size == 0:
        raise InputError("TARGETID", "not found in the catalogue", value=int(targetid), path=str(catalog_path))
    i = int(rows[0])
    return plot_source(
        wave,
        flux[i],
        float(cat["SHAPE_R"][i]),
        float(cat["SERSIC"][i]),
        float(cat["BA"][i]),
        float(cat["PA"][i]),
        out_dir,
        targetid=int(targetid),
        seed=seed,
        z=float(cat["Z"][i]),
        instrument=load_instrument(instrument_path),
    )


__all__ = ["plot_2d_images", "plot_1d_spectra", "plot_source", "plot_source_from_catalog"]
