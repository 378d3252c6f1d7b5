"""DESI-EDR / LS DR9 / BOSS readers: cuts of eq. 1-2, matching, eq. 3, Redrock SEDs, on small synthetic FITS files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from csstz.errors import FileFormatError, InputError
from csstz.population import desi
from csstz.population.redrock import read_redrock_templates, redrock_sed_flam17

# one row per cut of eq. 1 that it violates; rows 0 and 1 pass
DESI_ROWS = [
    dict(),  # 0 passes
    dict(MORPHTYPE="SER"),  # 1 passes
    dict(SV_PRIMARY=False),  # 2
    dict(MASKBITS=2),  # 3
    dict(SPECTYPE="QSO"),  # 4
    dict(ZWARN=4),  # 5
    dict(FLUX_G=0.0),  # 6
    dict(FLUX_R=-1.0),  # 7
    dict(FLUX_Z=0.0),  # 8
    dict(FLUX_IVAR_G=0.0),  # 9
    dict(FLUX_IVAR_R=0.0),  # 10
    dict(FLUX_IVAR_Z=-1.0),  # 11
    dict(MORPHTYPE="PSF"),  # 12
]


def write_desi_zcat(path, rows=DESI_ROWS, drop=()):
    n = len(rows)
    base = dict(
        SV_PRIMARY=True,
        MASKBITS=0,
        SPECTYPE="GALAXY",
        ZWARN=0,
        FLUX_G=1.0,
        FLUX_R=2.0,
        FLUX_Z=3.0,
        FLUX_IVAR_G=10.0,
        FLUX_IVAR_R=10.0,
        FLUX_IVAR_Z=10.0,
        MORPHTYPE="EXP",
    )
    vals = {k: [r.get(k, v) for r in rows] for k, v in base.items()}
    coeff = np.zeros((n, 10))
    coeff[:, 0] = 1.0
    coeff[:, 1] = 0.1
    cols = [
        fits.Column("TARGETID", "K", array=np.arange(1000, 1000 + n, dtype=np.int64)),
        fits.Column("TARGET_RA", "D", array=10.0 + 0.01 * np.arange(n)),
        fits.Column("TARGET_DEC", "D", array=np.full(n, -5.0)),
        fits.Column("Z", "D", array=np.linspace(0.2, 0.9, n)),
        fits.Column("ZWARN", "K", array=np.array(vals["ZWARN"], np.int64)),
        fits.Column("SPECTYPE", "6A", array=np.array(vals["SPECTYPE"])),
        fits.Column("COEFF", "10D", array=coeff),
        fits.Column("SV_PRIMARY", "L", array=np.array(vals["SV_PRIMARY"])),
        fits.Column("MASKBITS", "I", array=np.array(vals["MASKBITS"], np.int16)),
        fits.Column("MORPHTYPE", "4A", array=np.array(vals["MORPHTYPE"])),
    ]
    for b in "GRZ":
        cols.append(fits.Column(f"FLUX_{b}", "E", array=np.array(vals[f"FLUX_{b}"], np.float32)))
    for b in "GRZ":
        cols.append(fits.Column(f"FLUX_IVAR_{b}", "E", array=np.array(vals[f"FLUX_IVAR_{b}"], np.float32)))
    cols = [c for c in cols if c.name not in drop]
    hdu = fits.BinTableHDU.from_columns(cols, name="ZCATALOG")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


SWEEP_ROWS = [
    dict(),  # passes
    dict(SHAPE_R=0.0),
    dict(SHAPE_R_IVAR=0.0),
    dict(SHAPE_E1_IVAR=0.0),
    dict(SHAPE_E2_IVAR=0.0),
    dict(SERSIC_IVAR=0.0),
    dict(),  # passes
]


def write_sweep(path, ra, dec, rows=None, e1=None, e2=None):
    n = len(ra)
    rows = rows or [dict()] * n
    base = dict(SHAPE_R=0.8, SHAPE_R_IVAR=5.0, SHAPE_E1_IVAR=5.0, SHAPE_E2_IVAR=5.0, SERSIC=2.5, SERSIC_IVAR=3.0)
    cols = [
        fits.Column("RA", "D", array=np.asarray(ra, float)),
        fits.Column("DEC", "D", array=np.asarray(dec, float)),
        fits.Column("TYPE", "3A", array=np.array(["SER"] * n)),
        fits.Column("SHAPE_E1", "E", array=np.asarray(e1 if e1 is not None else np.full(n, 0.1), np.float32)),
        fits.Column("SHAPE_E2", "E", array=np.asarray(e2 if e2 is not None else np.full(n, 0.05), np.float32)),
    ]
    for k, v in base.items():
        cols.append(fits.Column(k, "E", array=np.array([r.get(k, v) for r in rows], np.float32)))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="SWEEP")]).writeto(path, overwrite=True)


def write_templates(path):
    """A small Redrock-format template: 2 basis vectors, flat continuum + one line at 5000 A (rest)."""
    wave = 1000.0 + 0.5 * np.arange(20001)
    b0 = np.ones_like(wave)
    b1 = np.exp(-0.5 * ((wave - 5000.0) / 2.0) ** 2)
    hdu = fits.PrimaryHDU(np.stack([b0, b1]))
    hdu.header["CRVAL1"] = 1000.0
    hdu.header["CDELT1"] = 0.5
    hdu.header["EXTNAME"] = "BASIS_VECTORS"
    hdu.header["RRTYPE"] = "GALAXY"
    fits.HDUList([hdu]).writeto(path, overwrite=True)


def test_desi_cuts_select_exactly_the_right_rows(tmp_path):
    p = tmp_path / "zall.fits"
    write_desi_zcat(p)
    tab = desi.read_desi_zcat(p)
    assert list(tab["TARGETID"]) == [1000, 1001]
    assert tab["COEFF"].shape == (2, 10)


def test_desi_missing_column_is_named(tmp_path):
    p = tmp_path / "zall.fits"
    write_desi_zcat(p, drop=("MASKBITS",))
    with pytest.raises(InputError, match="MASKBITS"):
        desi.read_desi_zcat(p)


def test_not_fits_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.fits"
    p.write_text("not fits")
    with pytest.raises(FileFormatError):
        desi.read_desi_zcat(p)


def test_sweep_cuts_select_exactly_the_right_rows(tmp_path):
    p = tmp_path / "sweep.fits"
    n = len(SWEEP_ROWS)
    write_sweep(p, np.arange(n), np.zeros(n), SWEEP_ROWS)
    tab = desi.read_sweeps([str(p)])
    np.testing.assert_array_equal(tab["RA"], [0.0, 6.0])


@pytest.mark.parametrize(
    "e1,e2,pa",
    [(0.2, 0.0, 0.0), (0.0, 0.2, 45.0), (-0.2, 0.0, 90.0), (0.0, -0.2, -45.0), (-0.1, 0.1, 67.5), (-0.1, -0.1, -67.5)],
)
def test_shape_conversion_quadrants(e1, e2, pa):
    ba, phi = desi.ellipticity_to_shape(np.array([e1]), np.array([e2]))
    assert phi[0] == pytest.approx(pa)
    e = np.hypot(e1, e2)
    assert ba[0] == pytest.approx((1 - e) / (1 + e))


def test_matching_within_one_arcsec(tmp_path):
    from astropy.table import Table

    zc = Table({"RA": [10.0, 20.0, 30.0], "DEC": [0.0, 0.0, 0.0]})
    sw = Table({"RA": [30.0, 10.0 + 0.5 / 3600, 20.0 + 2.0 / 3600], "DEC": [0.0, 0.0, 0.0]})
    iz, isw = desi.match_sources(zc, sw)
    assert list(iz) == [0, 2] and list(isw) == [1, 0]


def test_redrock_sed_flux_and_line_position(tmp_path):
    p = tmp_path / "rr.fits"
    write_templates(p)
    wave_r, basis = read_redrock_templates(str(p))
    assert basis.shape == (2, 20001) and wave_r[0] == 1000.0
    z = 0.5
    wave, f = redrock_sed_flam17(str(p), [z], [[2.0, 3.0, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert wave[np.argmax(f[0])] == pytest.approx(7500.0, abs=2.5)
    # continuum level 2, line flux conserved: 3 * sqrt(2 pi) * 2 A rest -> * (1+z) observed
    cont = np.median(f[0])
    assert cont == pytest.approx(2.0, rel=1e-6)
    line = np.sum((f[0] - cont) * np.gradient(wave))
    assert line == pytest.approx(3.0 * np.sqrt(2 * np.pi) * 2.0 * (1 + z), rel=0.01)
    with pytest.raises(InputError, match="COEFF"):
        redrock_sed_flam17(str(p), [z], [[1.0]])


def test_redrock_galaxy_template_layout_readable(tmp_path):
    """A file in the layout of Redrock's rrtemplate-galaxy.fits (5 basis vectors, linear grid from
    1166.6667 A in the primary HDU); a real one is also read when CSSTZ_REDROCK_TEMPLATES names it."""
    import os

    n_wave = 1000
    hdu = fits.PrimaryHDU(np.random.default_rng(0).random((5, n_wave)))
    hdu.header.update({"CRVAL1": 1166.6667, "CDELT1": 0.3333, "EXTNAME": "BASIS_VECTORS", "RRTYPE": "GALAXY"})
    path = tmp_path / "rrtemplate-galaxy.fits"
    fits.HDUList([hdu]).writeto(path)
    wave, basis = read_redrock_templates(str(path))
    assert basis.shape == (5, n_wave) and wave[0] == pytest.approx(1166.6667, abs=1e-3)
    assert wave[1] - wave[0] == pytest.approx(0.3333, abs=1e-6)
    real = os.environ.get("CSSTZ_REDROCK_TEMPLATES")
    if real:
        wave, basis = read_redrock_templates(real)
        assert basis.shape[0] == 5 and wave[0] == pytest.approx(1166.6667, abs=1e-3)


def test_load_real_sources_end_to_end(tmp_path):
    zp, sp = tmp_path / "zall.fits", tmp_path / "sweep.fits"
    write_desi_zcat(zp)
    # sweep sources at the positions of DESI rows 0, 1, 2 (0.3" off); row 1's shape fails eq. 2
    ra = 10.0 + 0.01 * np.arange(3) + 0.3 / 3600
    write_sweep(
        sp, ra, np.full(3, -5.0), [dict(), dict(SERSIC_IVAR=0.0), dict()], e1=[-0.2, 0.1, 0.1], e2=[0.0, 0.0, 0.0]
    )
    src = desi.load_real_sources("desi", str(zp), [str(sp)], seed=0)
    assert list(src["TARGETID"]) == [1000]  # 1001 fails the sweep cut, 1002 fails eq. 1
    assert src["PA"][0] == pytest.approx(90.0) and src["BA"][0] == pytest.approx(0.8 / 1.2)
    assert src["SHAPE_R"][0] == pytest.approx(0.8)


def test_boss_reader_uses_zwarning(tmp_path):
    p = tmp_path / "specobj.fits"
    n = 4
    cols = [
        fits.Column("PLUG_RA", "D", array=np.arange(n, dtype=float)),
        fits.Column("PLUG_DEC", "D", array=np.zeros(n)),
        fits.Column("Z", "E", array=np.full(n, 0.5, np.float32)),
        fits.Column("ZWARNING", "J", array=np.array([0, 4, 0, 0], np.int32)),
        fits.Column("CLASS", "6A", array=np.array(["GALAXY", "GALAXY", "STAR", "GALAXY"])),
        fits.Column("COEFF", "5D", array=np.ones((n, 5))),
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(p)
    tab = desi.read_boss_zcat(p)
    assert list(tab["TARGETID"]) == [0, 3]
