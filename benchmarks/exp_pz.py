"""p(z) experiment on the VALIDATION split: NNLS template fit vs FFT cross-correlation with a learned basis.

Rows, one change at a time (docs/estimator.md, results -> benchmarks/results/pz_experiments.json):

(a) ``csstz fit-templates --split val --lsf morphology`` (kcorrect basis, NNLS; coverage from Z +- ZERR as a Gaussian);
(b) xcorr, learned PCA basis (K chosen on validation SEDs), plain least squares, p(z) = exp(-chi2/2);
(c) + the Gaussian coefficient prior (marginal likelihood);
(c') the prior as a Gaussian mixture (G components) instead of one Gaussian;
(d) + the training split's n(z) as a redshift prior;
(e) + a temperature on the log-likelihood, fitted on validation (minimum mean -log p(z_true)); its numbers are
    therefore in-sample: the test split gives the final ones.

Metrics per GI-SNR bin (1-2, 2-3, 3-5, 5-10, >10, and all): sigma_NMAD, eta (|dz|/(1+z) > 0.02), coverage of
the central 68.3% / 95.4% p(z) intervals (from the PIT), mean P_SECOND. The test split is never read.

Run (~5 min on 2 cores after the dataset exists)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/exp_pz.py --data DATASET.h5 [--work benchmarks/_work/exp_pz]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from csstz.evaluate.metrics import outlier_fraction, sigma_nmad
from csstz.instrument import load_instrument
from csstz.io.run_dir import write_text
from csstz.io.spectra import read_catalog, read_spectra
from csstz.templates.basis import galaxy_lsf_sigma_pix
from csstz.templates.learned import (
    TemplateBasis,
    choose_n_components,
    embedded_rest_seds,
    fit_coefficient_prior,
    learn_basis,
    project,
    save_basis,
)
from csstz.templates.xcorr import XcorrModel, archetype_loglike, loglike_curves, lsf_bins, nz_log_prior, pit, posterior

SNR_EDGES = [1.0, 2.0, 3.0, 5.0, 10.0, np.inf]
BANDS = ("GV", "GI")


def metrics(z, zt, snr, cov68=None, cov95=None, p_second=None):
    rows = []
    for lo, hi in [(None, None)] + list(zip(SNR_EDGES[:-1], SNR_EDGES[1:])):
        sel = np.ones(zt.size, bool) if lo is None else (snr >= lo) & (snr < hi)
        r = {"snr_bin": "all" if lo is None else f"{lo:g}-{hi:g}", "n": int(sel.sum())}
        if sel.sum():
            r.update(sigma_nmad=float(sigma_nmad(z[sel], zt[sel])), eta=float(outlier_fraction(z[sel], zt[sel])))
            if cov68 is not None:
                r.update(cov68=float(np.mean(cov68[sel])), cov95=float(np.mean(cov95[sel])))
            if p_second is not None:
                r["mean_p_second"] = float(np.mean(p_second[sel]))
        rows.append(r)
    return rows


def pz_row(name, model, logl, zt, snr, temperature=1.0, log_prior=None):
    po = posterior(model.lnz, logl, temperature=temperature, log_prior_z=log_prior)
    u = pit(po["z_grid"], po["cdf"], zt)
    c68 = np.abs(u - 0.5) < 0.6827 / 2
    c95 = np.abs(u - 0.5) < 0.9545 / 2
    return {"row": name, "temperature": temperature, "bins": metrics(po["z"], zt, snr, c68, c95, po["p_second"])}, po


def nll(model, logl, zt, temperature, log_prior):
    po = posterior(model.lnz, logl, temperature=temperature, log_prior_z=log_prior)
    dens = np.array([np.interp(t, po["z_grid"], p) for t, p in zip(zt, po["pz"])])
    return float(-np.mean(np.log(np.maximum(dens, 1e-30))))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", default=str(Path(__file__).parent / "_work" / "exp_pz"))
    ap.add_argument("--mixture", type=int, default=8, help="components of the mixture prior (row c')")
    ap.add_argument("--n-phase", type=int, default=1)
    ap.add_argument("--prototypes", type=int, default=1000, help="training SEDs of the archetype row (f)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pz_experiments.json"))
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = {"dataset": str(Path(a.data).resolve()), "split": "val", "rows": [], "notes": []}
    cat = read_catalog(a.data)
    split = np.asarray(cat["SPLIT"])
    # ---- (a) the NNLS template fit --------------------------------------------------------------------
    tpl = work / (Path(a.data).stem + "_val_tpl.fits")
    if not tpl.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "csstz.cli",
                "fit-templates",
                a.data,
                "--split",
                "val",
                "--lsf",
                "morphology",
                "--workers",
                "2",
                "--no-progress",
                "--out",
                str(tpl),
            ],
            check=True,
        )
    from astropy.table import Table

    tp = Table.read(tpl)
    rows = np.flatnonzero(split == "val")
    sp = read_spectra(a.data, bands=BANDS, rows=rows)
    c = sp.catalog
    if not np.array_equal(np.asarray(tp["TARGETID"]), np.asarray(c["TARGETID"])):
        raise SystemExit(f"{tpl}: TARGETIDs differ from the val split of {a.data}")
    zt = np.asarray(c["Z"], np.float64)
    snr = np.asarray(c["SNR_GI"], np.float64)
    ztp, zerr = np.asarray(tp["Z"], np.float64), np.asarray(tp["ZERR"], np.float64)
    g = np.abs(ztp - zt) / np.maximum(zerr, 1e-12)
    log["rows"].append(
        {
            "row": "(a) template fit: kcorrect NNLS, morphology LSF (Gaussian Z +- ZERR)",
            "bins": metrics(ztp, zt, snr, g < 1.0, g < 2.0),
        }
    )
    # ---- the learned basis (train split only; K on validation SEDs) -------------------------------------
    bfile = work / "learned_basis.h5"
    wave, s_tr, info = embedded_rest_seds(a.data, "train")
    _, s_va, _ = embedded_rest_seds(a.data, "val", wave_aa=wave)
    k, ktab = choose_n_components(wave, s_tr[:6000], s_va)
    basis = learn_basis(wave, s_tr, k, provenance=dict(info, k_selection_val=ktab))
    save_basis(basis, bfile)
    coef = project(basis.templates, s_tr)
    wg, mu, cov = fit_coefficient_prior(coef, a.mixture)
    gmm = TemplateBasis(
        basis.wave_aa,
        basis.templates,
        basis.norm,
        mu,
        cov,
        wg,
        name=f"{basis.name[:-3]}-G{a.mixture}",
        provenance=dict(basis.provenance, prior_mixture=a.mixture),
    )
    save_basis(gmm, work / f"learned_basis_G{a.mixture}.h5")
    log["basis"] = {"file": str(bfile), "K": k, "k_selection_val": ktab, "mixture_G": a.mixture}
    # ---- spectra and LSF bins (as fit-templates --lsf morphology) ---------------------------------------
    inst = load_instrument()
    sig = galaxy_lsf_sigma_pix(inst, c["SHAPE_R"], c["SERSIC"], c["BA"], c["PA"])
    idx, cent = lsf_bins(sig, inst.psf_sigma_pix)
    used = np.unique(idx)
    idx = np.searchsorted(used, idx)
    waves = {b: sp.bands[b].wave_aa for b in BANDS}
    flux = {b: sp.bands[b].flux for b in BANDS}
    err = {b: sp.bands[b].err for b in BANDS}
    curves = {}
    for tag, bas, mode in (("ls", basis, "ls"), ("prior", basis, "prior"), ("gmm", gmm, "prior")):
        m = XcorrModel(bas, waves, lsf_sigma_pix=cent[used], n_phase=a.n_phase)
        t = time.time()
        curves[tag] = loglike_curves(m, flux, err, lsf_index=idx, mode=mode)
        log["notes"].append(f"{tag}: {len(zt) / (time.time() - t):.0f} spectra/s (LSF bins: {len(used)})")
    model = m
    lp_nz = nz_log_prior(np.asarray(cat["Z"])[split == "train"], model.z)
    r, _ = pz_row(f"(b) xcorr, learned PCA K={k}, least squares", model, curves["ls"], zt, snr)
    log["rows"].append(r)
    r, _ = pz_row("(c) + Gaussian coefficient prior (marginal likelihood)", model, curves["prior"], zt, snr)
    log["rows"].append(r)
    r, _ = pz_row(f"(c') prior as a {a.mixture}-component Gaussian mixture", model, curves["gmm"], zt, snr)
    log["rows"].append(r)
    best = "gmm"
    r, _ = pz_row("(d) (c') + training n(z) prior", model, curves[best], zt, snr, log_prior=lp_nz)
    log["rows"].append(r)
    temps = np.exp(np.linspace(np.log(0.5), np.log(8.0), 25))
    scores = [nll(model, curves[best], zt, T, lp_nz) for T in temps]
    T = float(temps[int(np.argmin(scores))])
    r, po = pz_row(
        f"(e) (d) + temperature T={T:.2f} (fitted on val: in-sample)",
        model,
        curves[best],
        zt,
        snr,
        temperature=T,
        log_prior=lp_nz,
    )
    log["rows"].append(r)
    log["temperature_scan"] = {"T": temps.tolist(), "mean_nll": scores}
    # ---- (f) archetypes: a kernel-density prior over P training SEDs; (g) their peak, refined by (c') -----
    _, s_p, _ = embedded_rest_seds(a.data, "train", wave_aa=basis.wave_aa, max_rows=a.prototypes, seed=1)
    proto = project(basis.templates, s_p)
    f_c, w_c = model.prepare_spectra(flux, err)
    t = time.time()
    ll_arch = np.empty_like(curves["ls"], dtype=np.float64)
    for k_ in np.unique(idx):
        r_ = np.flatnonzero(idx == k_)
        ll_arch[r_] = archetype_loglike(model, f_c[r_], w_c[r_], proto, lsf_index=int(k_))
    log["notes"].append(f"archetypes (P={a.prototypes}): {len(zt) / (time.time() - t):.0f} spectra/s")
    r, po_a = pz_row(f"(f) archetypes: {a.prototypes} training SEDs, amplitude marginalised", model, ll_arch, zt, snr)
    log["rows"].append(r)
    win = np.abs(model.z[None, :] - po_a["z"][:, None]) / (1 + po_a["z"][:, None]) < 0.01
    r, _ = pz_row("(g) (f)'s peak (+-0.01(1+z)), shape from (c')", model, np.where(win, curves[best], -np.inf), zt, snr)
    log["rows"].append(r)
    log["run_time_s"] = time.time() - t0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(log, indent=2) + "\n")
    print(table(log))
    return log


def table(log) -> str:
    out = ["| row | GI SNR | n | sigma_NMAD | eta | cov68 | cov95 |", "|---|---|---|---|---|---|---|"]
    for r in log["rows"]:
        for b in r["bins"]:
            f = lambda k, fmt: fmt.format(b[k]) if b.get(k) is not None else "-"  # noqa: E731
            out.append(
                f"| {r['row'] if b['snr_bin'] == 'all' else ''} | {b['snr_bin']} | {b['n']} | "
                f"{f('sigma_nmad', '{:.4f}')} | {f('eta', '{:.3f}')} | {f('cov68', '{:.3f}')} | "
                f"{f('cov95', '{:.3f}')} |"
            )
    return "\n".join(out)


if __name__ == "__main__":
    main()
