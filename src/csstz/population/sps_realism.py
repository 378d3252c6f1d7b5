"""Realism checks of the SPS population against real galaxies and published line strengths.

* Colours: rest-frame SDSS u - r against M_r of the SPS bank members at z_k < 0.2
  (weighted by their mass-function weights) and of the 10,000 real SDSS galaxies of
  kcorrect at 0.05 < z < 0.15 (rest colours from their kcorrect NMF fits), compared
  in bins of M_r (matched redshift and absolute magnitude): median u - r and red
  fraction (u - r >= 2.22, Strateva et al. 2001).
* Lines: median rest-frame EW(H-alpha) and EW([OII]) of star-forming bank members at
  fixed mass (10.8 < log M < 11.2, present at every z of the bank) against z, and the
  index gamma of EW ~ (1+z)^gamma from a fit over all star-formers with a mass term;
  published: gamma ~ 1.8 for H-alpha (Fumagalli et al. 2012, ApJ 757, L22; 3D-HST,
  10 < log M < 10.5) and 2.72 +- 0.19 for [OII] (Khostovan et al. 2016, HiZELS
  emitters, 9.5 < log M < 10); plus the medians of the magnitude-selected sample.

``realism_checks(seed, out_dir)`` -> dict of numbers and two PNGs. No bagpipes needed once the bank is cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .._types import PathLike

#: Published H-alpha EW evolution index at 10 < log M < 10.5 (Fumagalli et al. 2012).
FUMAGALLI12_GAMMA = 1.8
#: Published [OII] EW evolution index of HiZELS [OII] emitters at 9.5 < log M < 10 (Khostovan et al. 2016,
#: MNRAS 463, 2363: (1+z)^(2.72 +- 0.19) to z ~ 3).
KHOSTOVAN16_GAMMA_OII = 2.72
#: Mass bin [log Msun] of the fixed-mass EW medians (populated at every z of the bank).
FIXED_MASS_BIN = (10.8, 11.2)
UR_RED = 2.22
MR_BINS = (-23.0, -22.0, -21.0, -20.0, -19.0, -18.0)


def _sdss_colours() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from astropy import units as u
    from astropy.cosmology import Planck18

    from .sdss_fit import load_coefficients, rest_frame_projections

    tab = load_coefficients()
    z = np.asarray(tab["Z"], float)
    coeff = np.asarray(tab["COEFF"], float) * (10.0 ** (0.4 * Planck18.distmod(z).to_value(u.mag)))[:, None]
    proj = rest_frame_projections()
    fr = np.maximum(coeff @ proj["sdss_r0"], 1e-300)
    fu = np.maximum(coeff @ proj["sdss_u0"], 1e-300)
    mr = -2.5 * np.log10(fr)
    return z, mr, -2.5 * np.log10(fu) - mr


def _wmedian(x: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(x)
    c = np.cumsum(w[o])
    return float(x[o][np.searchsorted(c, 0.5 * c[-1])])


def realism_checks(
    seed: int = 0, out_dir: PathLike | None = None, bank_size: int | None = None, n_draw: int = 3000
) -> dict:
    """Numbers (and, with ``out_dir``, figures) comparing the SPS population with real galaxies."""
    from . import sps

    bank_size = bank_size or sps.BANK_SIZE
    P = sps.load_bank(sps.ensure_bank(seed, bank_size)).params
    out: dict = {"seed": seed, "bank_size": bank_size}
    # colours at matched z and M_r
    zs, mr_s, ur_s = _sdss_colours()
    ms = (zs > 0.05) & (zs < 0.15)
    mb = P["BANK_Z"] < 0.2
    rows = []
    for lo, hi in zip(MR_BINS[:-1], MR_BINS[1:]):
        a = ms & (mr_s >= lo) & (mr_s < hi)
        b = mb & (P["ABSMAG_R"] >= lo) & (P["ABSMAG_R"] < hi)
        if a.sum() < 5 or b.sum() < 5:
            continue
        w = P["WEIGHT"][b]
        rows.append(
            {
                "mr": [lo, hi],
                "n_sdss": int(a.sum()),
                "n_sps": int(b.sum()),
                "median_ur_sdss": round(float(np.median(ur_s[a])), 2),
                "median_ur_sps": round(_wmedian(P["REST_UR"][b], w), 2),
                "red_frac_sdss": round(float(np.mean(ur_s[a] >= UR_RED)), 2),
                "red_frac_sps": round(float(np.sum(w * (P["REST_UR"][b] >= UR_RED)) / w.sum()), 2),
            }
        )
    out["colour_bins"] = rows
    # EW evolution at fixed mass (star-formers of the bank): a mass bin present at every z of
    # the bank (the proposal concentrates members above the selection limit), and a fit
    # log EW = a + gamma log10(1+z) + b (log M - 10) over all star-formers
    sf_all = ~P["QUIESCENT"] & (P["EW_HA"] > 0) & (P["EW_OII"] > 0)
    sf = sf_all & (P["LOG_MSTAR"] > FIXED_MASS_BIN[0]) & (P["LOG_MSTAR"] < FIXED_MASS_BIN[1])
    zb = np.array([0.0, 0.3, 0.6, 0.9, 1.2, 1.7])
    ew = {"mass_bin": list(FIXED_MASS_BIN), "z_mid": [], "ew_ha": [], "ew_oii": [], "n": []}
    for lo, hi in zip(zb[:-1], zb[1:]):
        m = sf & (P["BANK_Z"] >= lo) & (P["BANK_Z"] < hi)
        if m.sum() < 5:
            continue
        ew["z_mid"].append(round(float(np.median(P["BANK_Z"][m])), 3))
        ew["ew_ha"].append(round(float(np.median(P["EW_HA"][m])), 1))
        ew["ew_oii"].append(round(float(np.median(P["EW_OII"][m])), 1))
        ew["n"].append(int(m.sum()))
    lz = np.log10(1.0 + np.array(ew["z_mid"]))
    ew["gamma_ha_bin"] = round(float(np.polyfit(lz, np.log10(ew["ew_ha"]), 1)[0]), 2)
    ew["gamma_oii_bin"] = round(float(np.polyfit(lz, np.log10(ew["ew_oii"]), 1)[0]), 2)
    X = np.column_stack([np.ones(sf_all.sum()), np.log10(1.0 + P["BANK_Z"][sf_all]), P["LOG_MSTAR"][sf_all] - 10.0])
    for key, col in (("gamma_ha_fit", "EW_HA"), ("gamma_oii_fit", "EW_OII")):
        ew[key] = round(float(np.linalg.lstsq(X, np.log10(P[col][sf_all]), rcond=None)[0][1]), 2)
    ew["gamma_ha_fumagalli12"] = FUMAGALLI12_GAMMA
    ew["gamma_oii_khostovan16"] = KHOSTOVAN16_GAMMA_OII
    out["ew_fixed_mass"] = ew
    # the magnitude-selected sample
    pop = sps.get_sps_population(bank_size=bank_size)
    c = pop.draw(seed, np.arange(n_draw)).columns
    sel = {
        "z_bins": zb.tolist(),
        "n": [],
        "quiescent_frac": [],
        "median_log_mstar": [],
        "median_ew_ha": [],
        "median_ew_oii": [],
        "median_ur": [],
    }
    for lo, hi in zip(zb[:-1], zb[1:]):
        m = (c["Z"] >= lo) & (c["Z"] < hi)
        sel["n"].append(int(m.sum()))
        for key, col in (
            ("quiescent_frac", "QUIESCENT"),
            ("median_log_mstar", "LOG_MSTAR"),
            ("median_ew_ha", "EW_HA"),
            ("median_ew_oii", "EW_OII"),
            ("median_ur", "REST_UR"),
        ):
            v = c[col][m].astype(float)
            sel[key].append(
                round(float(np.mean(v) if key == "quiescent_frac" else np.median(v)), 2) if m.any() else None
            )
    sel["early_frac"] = round(float(np.mean(c["EARLY"])), 3)
    sel["fallback_frac"] = round(float(np.mean(c["SEL_FALLBACK"])), 4)
    out["selected_sample"] = sel
    if out_dir is not None:
        _figures(Path(out_dir), zs[ms], mr_s[ms], ur_s[ms], P, mb, ew, c)
    return out


def _figures(
    out_dir: Path, zs: np.ndarray, mr_s: np.ndarray, ur_s: np.ndarray, P: dict, mb: np.ndarray, ew: dict, c: dict
) -> None:
    from ..io.figures import new_figure, save_png

    fig = new_figure(figsize=(9.0, 4.0))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    ax1.scatter(mr_s, ur_s, s=2, alpha=0.3, color="k")
    ax1.set_title("SDSS (kcorrect sample), 0.05 < z < 0.15")
    w = P["WEIGHT"][mb]
    ax2.scatter(
        P["ABSMAG_R"][mb],
        P["REST_UR"][mb],
        s=4 + 40 * w / w.max(),
        alpha=0.4,
        c=np.where(P["QUIESCENT"][mb], "tab:red", "tab:blue"),
    )
    ax2.set_title("SPS bank, z < 0.2 (size ~ SMF weight)")
    for ax in (ax1, ax2):
        ax.axhline(UR_RED, ls="--", color="gray")
        ax.set_xlim(-16, -24)
        ax.set_xlabel("M_r [AB]")
    ax1.set_ylim(0.3, 3.5)
    ax1.set_ylabel("rest u - r [mag]")
    save_png(fig, out_dir / "sps_colour_vs_sdss.png")
    fig = new_figure(figsize=(9.0, 4.0))
    ax1, ax2 = fig.subplots(1, 2)
    sf = ~P["QUIESCENT"] & (P["LOG_MSTAR"] > FIXED_MASS_BIN[0]) & (P["LOG_MSTAR"] < FIXED_MASS_BIN[1])
    lab = f"bank, {FIXED_MASS_BIN[0]} < log M < {FIXED_MASS_BIN[1]}"
    ax1.scatter(P["BANK_Z"][sf], P["EW_HA"][sf], s=3, alpha=0.3, color="tab:blue", label=lab)
    zz = np.linspace(0.0, 1.7, 50)
    ax1.plot(ew["z_mid"], ew["ew_ha"], "o-", color="k", label=f"median (fit gamma = {ew['gamma_ha_fit']})")
    ax1.plot(
        zz,
        ew["ew_ha"][0] * ((1 + zz) / (1 + ew["z_mid"][0])) ** FUMAGALLI12_GAMMA,
        "--",
        color="tab:red",
        label="(1+z)^1.8 (Fumagalli+12 slope)",
    )
    ax1.set_yscale("log")
    ax1.set_xlabel("z")
    ax1.set_ylabel("rest EW(H-alpha) [A]")
    ax1.legend(fontsize=7)
    sel = ~c["QUIESCENT"]
    ax2.scatter(
        c["Z"][sel],
        np.maximum(c["EW_OII"][sel], 0.1),
        s=3,
        alpha=0.3,
        color="tab:green",
        label="selected star-formers (MAG_GI < 21)",
    )
    ax2.plot(
        ew["z_mid"], ew["ew_oii"], "o-", color="k", label=f"bank median, {lab[6:]} (fit gamma = {ew['gamma_oii_fit']})"
    )
    ax2.plot(
        zz,
        ew["ew_oii"][0] * ((1 + zz) / (1 + ew["z_mid"][0])) ** KHOSTOVAN16_GAMMA_OII,
        "--",
        color="tab:red",
        label="(1+z)^2.72 (Khostovan+16 slope)",
    )
    ax2.set_yscale("log")
    ax2.set_xlabel("z")
    ax2.set_ylabel("rest EW([OII] 3727) [A]")
    ax2.legend(fontsize=7)
    save_png(fig, out_dir / "sps_ew_vs_z.png")


__all__ = ["realism_checks"]
