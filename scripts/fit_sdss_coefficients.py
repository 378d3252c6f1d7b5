"""Precompute kcorrect NMF coefficients for the 10,000 real SDSS galaxies shipped with kcorrect.

Input : ``kcorrect/data/test/gst_tests_small.fits`` (SDSS MODELFLUX, MODELFLUX_IVAR,
        EXTINCTION in nanomaggies / mag, spectroscopic Z).
Basis : ``kcorrect/data/templates/kcorrect-default-v4.fits`` (5 NMF templates).
Fitter: ``kcorrect.kcorrect.KcorrectSDSS`` (a ``kcorrect.kcorrect.Kcorrect`` with the
        sdss_u0..z0 responses and the SDSS->AB offsets), non-negative least squares.
Output: ``src/csstz/population/data/sdss_nmf_coeffs.ecsv``.

Run once: ``python scripts/fit_sdss_coefficients.py`` (about 30 s).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from astropy.table import Table

from csstz.population.sdss_fit import ERR_FLOOR_MAG, fit_chi2, load_sdss_photometry, make_fitter, template_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "src/csstz/population/data/sdss_nmf_coeffs.ecsv")
    )
    a = p.parse_args(argv)
    import kcorrect

    phot = load_sdss_photometry()
    kc = make_fitter(zmax=float(phot["Z"].max()) + 0.01)
    coeffs = kc.fit_coeffs(redshift=phot["Z"], maggies=phot["MAGGIES"], ivar=phot["IVAR"])
    model = kc.reconstruct(redshift=phot["Z"], coeffs=coeffs)
    chi2 = fit_chi2(phot["MAGGIES_AB"], phot["IVAR_AB"], model)
    tab = Table()
    tab["SDSS_INDEX"] = np.arange(len(coeffs), dtype=np.int32)
    tab["RA"] = np.round(phot["RA"], 6)
    tab["DEC"] = np.round(phot["DEC"], 6)
    tab["Z"] = phot["Z"].astype(np.float32)
    tab["COEFF"] = coeffs.astype(np.float32)
    tab["CHI2"] = chi2.astype(np.float32)
    tab["NBAND"] = phot["NBAND"].astype(np.int16)
    ok = chi2 <= phot["NBAND"]
    tab.meta["comments"] = [
        "kcorrect NMF coefficients of the 10,000 real SDSS galaxies of kcorrect/data/test/gst_tests_small.fits",
        f"made by scripts/fit_sdss_coefficients.py on {datetime.date.today().isoformat()} "
        f"with kcorrect {kcorrect.__version__}",
        "basis: kcorrect/data/templates/kcorrect-default-v4.fits (5 templates, flux at 10 pc per unit coefficient)",
        "fitter: kcorrect.kcorrect.KcorrectSDSS (sdss_u0..z0, SDSS->AB offsets, Planck18), NNLS",
        "input: MODELFLUX [nanomaggies] corrected for EXTINCTION [mag], MODELFLUX_IVAR with an error floor of "
        f"{list(ERR_FLOOR_MAG)} mag added in quadrature (photometric calibration)",
        "COEFF: such that AB maggies(z) = A(z) . COEFF, i.e. observed f_lambda(lam) = sum_k COEFF_k T_k(lam/(1+z)) "
        "/ (1+z) with T_k in erg/s/cm^2/A at 10 pc",
        "CHI2: sum over the NBAND valid bands of (model - data)^2 * ivar (with the floor)",
        f"fraction with CHI2 <= NBAND: {ok.mean():.4f}",
    ]
    import kcorrect.response
    import kcorrect.template

    tmpl = kcorrect.template.Template(filename=template_path(), interpolate=False)
    rd = kcorrect.response.ResponseDict()
    for b in ("sdss_u0", "sdss_r0"):
        rd.load_response(b)
        tab.meta[f"PROJ_{b.upper()}"] = [
            float(rd[b].project(wave=tmpl.restframe_wave, flux=tmpl.restframe_flux[k])) for k in range(tmpl.nsed)
        ]
    tab.meta["comments"].append(
        "PROJ_SDSS_U0/R0: rest-frame sdss_u0/r0 AB maggies at 10 pc of each template per "
        "unit coefficient (kcorrect.response.Response.project)"
    )
    tab.write(a.out, format="ascii.ecsv", overwrite=True, formats={"COEFF": "%.6g", "CHI2": "%.4g", "Z": "%.6g"})
    print(
        f"wrote {a.out}: {len(tab)} galaxies, fraction chi2<=nband {ok.mean():.4f}, median chi2 {np.median(chi2):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
