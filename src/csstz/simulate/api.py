"""Simulate CSST slitless spectra: the library API behind ``csstz simulate``.

``simulate_source`` does one galaxy (render, disperse, noise, extract per
band); ``simulate_arrays`` validates and loops over many; ``simulate_file``
reads a FITS catalogue (HDUs CATALOG, WAVELENGTH, FLUX), runs on local
workers or a Dask cluster, and writes the spectra HDF5 file atomically.

Randomness: the noise of band B of galaxy T comes from
``galaxy_rng(seed, T, stream)`` with a stream fixed per band, so results do
not depend on the order, chunking, number of workers or the other bands
simulated, and any single galaxy can be regenerated alone.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .. import __version__
from ..config import ParallelConfig, SimulateConfig
from ..errors import FileFormatError, InputError
from ..instrument import Instrument, load_instrument
from ..io.spectra import BandSpectra, SpectraSet, write_spectra
from ..parallel import parallel_list
from ..rng import STREAM_NOISE, galaxy_rng
from ..schema import (
    INPUT_HDUS,
    MORPH_COLUMNS,
    SERSIC_RANGE,
    SNR_DEFINITION,
    SNR_TOTAL,
    UNIT_FLAM17,
    UNIT_WAVE,
    ZERR_CRB,
    all_bands,
    snr_column,
)
from .crb import CRB_BANDS, calibrated_extract, extraction_lsf, zerr_crb_arrays
from .disperse import deposit_counts, disperse, photon_density_e_per_aa
from .extract import optimal_extract, snr_median
from .noise import add_noise, background_variance_e2
from .render import Stamp, render_stamp

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .._types import ArrayLike, PathLike
    from ..instrument import Band


@dataclass
class SourceResult:
    """One galaxy in one band: calibrated spectrum and optionally its 2D image."""

    flux: np.ndarray  # (L,) 1e-17 erg/s/cm^2/A
    err: np.ndarray  # (L,)
    image2d: np.ndarray | None  # (ny, nx) electrons, sky/dark subtracted
    flux_noiseless: np.ndarray | None = None  # (L,) noiseless extracted spectrum (want_noiseless)
    lsf: np.ndarray | None = None  # (2h+1,) this band's extraction LSF (crb.extraction_lsf)


def band_stream(band_name: str) -> int:
    """Noise stream id of a band (stable across runs and band selections)."""
    return STREAM_NOISE * 65536 + (zlib.crc32(band_name.encode()) & 0xFFFF)


def _crop_2d(img: np.ndarray, pad: int, n_pix: int, half_out: int) -> np.ndarray:
    """Embed a (2h+1, n+2 pad) image in a fixed (2 half_out+1, n + 2 half_out) canvas."""
    ny = img.shape[0]
    hy = ny // 2
    out = np.zeros((2 * half_out + 1, n_pix + 2 * half_out), dtype=np.float32)
    r0, r1 = max(hy - half_out, 0), min(hy + half_out + 1, ny)
    c0, c1 = max(pad - half_out, 0), min(pad + n_pix + half_out, img.shape[1])
    out_r0 = half_out - (hy - r0)
    out_c0 = half_out - (pad - c0)
    out[out_r0 : out_r0 + (r1 - r0), out_c0 : out_c0 + (c1 - c0)] = img[r0:r1, c0:c1]
    return out


def simulate_source(
    wave_aa: np.ndarray,
    flam17: np.ndarray,
    shape_r_arcsec: float,
    sersic: float,
    ba: float,
    pa_deg: float,
    instrument: Instrument,
    bands: tuple[str, ...] | None = None,
    targetid: int = 0,
    seed: int = SimulateConfig.seed,
    noiseless: bool = False,
    save_2d: bool = False,
    noise_mode: str = "summed",
    stamp: Stamp | None = None,
    want_noiseless: bool = False,
) -> dict[str, SourceResult]:
    """Simulate one galaxy in several bands (inputs assumed valid; see :func:`simulate_arrays`).

    Parameters
    ----------
    wave_aa : ndarray, shape (L,)
        Observed-frame wavelength [A], strictly increasing.
    flam17 : ndarray, shape (L,)
        Observed flux density [1e-17 erg/s/cm^2/A].
    shape_r_arcsec : float
        Half-light radius [arcsec]; 0 for a point source.
    sersic, ba, pa_deg : float
        Sersic index, axis ratio, major-axis angle from the dispersion axis [deg].
    bands : sequence of str, optional
        Default: every band of the instrument file.
    targetid, seed : int
        Identify the noise streams.
    noiseless : bool
        Return expected counts (errors are still the expected 1-sigma errors).
    want_noiseless : bool
        Also return the noiseless extracted spectrum (``SourceResult.flux_noiseless``;
        ``crb.calibrated_extract`` of the expected image, equal to a ``noiseless=True`` run).

    Returns
    -------
    dict
        Band name -> :class:`SourceResult` (``lsf``: the band's extraction LSF, ``crb.extraction_lsf``).
    """
    bands = all_bands(instrument) if bands is None else tuple(bands)
    if stamp is None:
        stamp = render_stamp(shape_r_arcsec, sersic, ba, pa_deg, instrument)
    dens = photon_density_e_per_aa(wave_aa, flam17, instrument)
    rows = extraction_rows(stamp, instrument)
    prof_y = stamp.profile_y[rows]
    lsf = effective_lsf(stamp, rows)
    pad = stamp.half + 2
    out = {}
    for name in bands:
        band = instrument.band(name)
        dep = deposit_counts(wave_aa, dens, band, pad, instrument.oversample_x)
        expected = disperse(stamp, dep) if save_2d else None
        cols = slice(pad, pad + band.n_pix)
        img = expected[rows, cols] if save_2d else disperse(stamp, dep, rows)[:, cols]
        var_bkg = background_variance_e2(band, instrument)
        sens = effective_sensitivity(band, instrument, pad, lsf)[cols]
        # the noiseless spectrum is extracted before the noise is added (add_noise may work in place)
        flux0 = calibrated_extract(img, prof_y, var_bkg, sens)[0] if want_noiseless and not noiseless else None
        if not noiseless:
            img = add_noise(img, band, instrument, galaxy_rng(seed, targetid, band_stream(name)), noise_mode)
        f_e, err_e = optimal_extract(img, prof_y, var_bkg)
        band_lsf = extraction_lsf(stamp.image[rows], prof_y, var_bkg, float(np.median(f_e)))
        good = sens > 0
        safe = np.where(good, sens, 1.0)
        flux = np.where(good, f_e / safe, 0.0)
        err = np.where(good, err_e / safe, np.inf)
        img2d = None
        if save_2d:
            full = expected
            if not noiseless:  # pixels outside the extraction window: their own stream, so spectra do not change
                full = add_noise(
                    expected, band, instrument, galaxy_rng(seed, targetid, band_stream(name) + 1), noise_mode
                )
                full[rows, cols] = img
            img2d = _crop_2d(full, pad, band.n_pix, instrument.image2d_half_height_pix)
        flux = flux.astype(np.float32)
        out[name] = SourceResult(
            flux,
            err.astype(np.float32),
            img2d,
            (flux.copy() if noiseless else flux0) if want_noiseless else None,
            band_lsf,
        )
    return out


def extraction_rows(stamp: Stamp, instrument: Instrument) -> slice:
    """Rows used for noise and extraction: where the profile is >= 1% of its peak.

    Rows fainter than that carry < 1e-4 of the Horne weight each; they are
    capped at ``image2d_half_height_pix`` around the trace (the saved 2D
    canvas). Their light still counts: the profile is normalised to the total
    flux, so extraction stays unbiased.
    """
    prof = stamp.profile_y
    c = stamp.half
    strong = np.nonzero(prof >= 0.01 * prof.max())[0]
    half = int(max(c - strong[0], strong[-1] - c))
    half = min(half, instrument.image2d_half_height_pix, c)
    return slice(c - half, c + half + 1)


def effective_lsf(stamp: Stamp, rows: slice) -> np.ndarray:
    """Line-spread function of the extraction (in pixels), shape (2h+1,), sums to 1.

    Horne weights are proportional to the profile P_y where the sky
    dominates, so a spectrum feature is spread along x by
    L(x) = sum_y P_y P(x, y) / sum_y P_y^2 (the galaxy's own extent plus PSF).
    """
    img = stamp.image[rows]
    p = img.sum(axis=1)
    return (p[:, None] * img).sum(axis=0) / float((p * p).sum())


def effective_sensitivity(band: Band, instrument: Instrument, pad: int, lsf: np.ndarray) -> np.ndarray:
    """Counts per unit f_lambda [e- per 1e-17 erg/s/cm^2/A] in each image column, LSF-smoothed.

    The extracted counts of a smooth spectrum are f_lambda times the
    throughput-weighted sensitivity smoothed by the LSF; dividing by this
    (rather than by the sensitivity at the pixel centre) keeps the flux
    calibration exact for smooth spectra also where the throughput changes
    fast (band edges) and for extended galaxies.
    """
    cols = np.arange(band.n_pix + 2 * pad)
    wave = band.wave_min_aa + (cols - pad) * band.dispersion_aa_per_pix
    sens = instrument.flam17_to_counts_per_pix_at(band, wave)
    return np.convolve(sens, lsf, mode="same")


def _check_column(
    field: str,
    values: np.ndarray,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    allowed: str | None = None,
) -> np.ndarray:
    vals = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(vals)
    if lo is not None:
        bad |= (vals <= lo) if lo_open else (vals < lo)
    if hi is not None:
        bad |= vals > hi
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(field, "invalid value", row=row, value=float(vals[row]), allowed=allowed)
    return vals


def validate_inputs(
    wave_aa: ArrayLike,
    flux_flam17: ArrayLike,
    targetid: ArrayLike,
    shape_r_arcsec: ArrayLike,
    sersic: ArrayLike,
    ba: ArrayLike,
    pa_deg: ArrayLike,
    instrument: Instrument,
    bands: Sequence[str],
) -> tuple:
    """Check shapes and ranges; raise :class:`InputError` naming the column and row.

    Returns the inputs as float64/int64 arrays.
    """
    wave = np.asarray(wave_aa, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2:
        raise InputError("WAVELENGTH", "must be a 1D array of >= 2 wavelengths", value=wave.shape)
    if not np.all(np.isfinite(wave)):
        raise InputError("WAVELENGTH", "non-finite wavelength", row=int(np.argmax(~np.isfinite(wave))))
    steps = np.diff(wave)
    if np.any(steps <= 0):
        raise InputError(
            "WAVELENGTH",
            "wavelengths must be strictly increasing",
            row=int(np.argmax(steps <= 0)) + 1,
            value=float(wave[int(np.argmax(steps <= 0)) + 1]),
        )
    need_lo = min(instrument.band(b).wave_min_aa for b in bands)
    need_hi = max(instrument.band(b).wave_max_aa for b in bands)
    if wave[0] > need_lo or wave[-1] < need_hi:
        raise InputError(
            "WAVELENGTH",
            f"must cover {need_lo:.0f}-{need_hi:.0f} A for bands {','.join(bands)}",
            value=f"{wave[0]:.0f}-{wave[-1]:.0f} A",
        )
    tid = np.asarray(targetid)
    n = tid.shape[0] if tid.ndim == 1 else -1
    if tid.ndim != 1 or not np.issubdtype(tid.dtype, np.integer):
        raise InputError("TARGETID", "must be a 1D integer column", value=str(tid.dtype))
    uniq, first, counts = np.unique(tid, return_index=True, return_counts=True)
    if np.any(counts > 1):
        dup = uniq[counts > 1][0]
        rows = np.nonzero(tid == dup)[0]
        raise InputError("TARGETID", "duplicate TARGETID", row=int(rows[1]), value=int(dup), allowed="unique ids")
    flux = np.asarray(flux_flam17, dtype=np.float64)
    if flux.shape != (n, wave.size):
        raise InputError(
            "FLUX",
            "shape does not match (N catalogue rows, N wavelengths)",
            value=flux.shape,
            allowed=f"({n}, {wave.size})",
        )
    finite = np.isfinite(flux)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(
            "FLUX", f"non-finite flux at wavelength index {int(col)}", row=int(row), value=float(flux[row, col])
        )
    cols = {}
    for field, vals, kw in (
        ("SHAPE_R", shape_r_arcsec, dict(lo=0.0, allowed=">= 0 arcsec (0 = point source)")),
        (
            "SERSIC",
            sersic,
            dict(lo=SERSIC_RANGE[0], hi=SERSIC_RANGE[1], allowed=f"{SERSIC_RANGE[0]} to {SERSIC_RANGE[1]}"),
        ),
        ("BA", ba, dict(lo=0.0, hi=1.0, lo_open=True, allowed="(0, 1]")),
        ("PA", pa_deg, dict(allowed="finite degrees")),
    ):
        arr = np.asarray(vals, dtype=np.float64)
        if arr.shape != (n,):
            raise InputError(field, "length does not match TARGETID", value=arr.shape, allowed=f"({n},)")
        cols[field] = _check_column(field, arr, **kw)
    return wave, flux, tid.astype(np.int64), cols["SHAPE_R"], cols["SERSIC"], cols["BA"], cols["PA"]


def simulate_arrays(
    wave_aa: ArrayLike,
    flux_flam17: ArrayLike,
    targetid: ArrayLike,
    shape_r_arcsec: ArrayLike,
    sersic: ArrayLike,
    ba: ArrayLike,
    pa_deg: ArrayLike,
    seed: int = SimulateConfig.seed,
    noiseless: bool = False,
    save_2d: bool = False,
    instrument: Instrument | None = None,
    bands: tuple[str, ...] | None = None,
    noise_mode: str = "summed",
    z: ArrayLike | None = None,
    want_noiseless: bool | ArrayLike = False,
    crb_bands: Sequence[str] = CRB_BANDS,
) -> tuple[dict[str, BandSpectra], dict[str, np.ndarray]]:
    """Simulate N galaxies sharing one wavelength grid.

    Parameters
    ----------
    wave_aa : array, shape (L,)
        Observed wavelength [A], strictly increasing, covering the bands.
    flux_flam17 : array, shape (N, L)
        Observed flux density [1e-17 erg/s/cm^2/A].
    targetid : int array, shape (N,)
        Unique ids; they select the noise streams.
    shape_r_arcsec, sersic, ba, pa_deg : arrays, shape (N,)
        Half-light radius [arcsec] (0 = point source), Sersic n in [0.3, 6.2],
        b/a in (0, 1], major-axis angle from the dispersion axis [deg, CCW].
    seed : int
        Root seed.
    noiseless, save_2d : bool
    instrument : Instrument, optional
        Default: the packaged CSST description.
    bands : sequence of str, optional
        Default: every band of the instrument file.
    z : array, shape (N,), optional
        True redshifts: adds the per-object Cramer-Rao bound ``ZERR_CRB`` [z units, not divided
        by 1 + z] over ``crb_bands`` (those simulated) to the returned columns (docs/crb.md).
    want_noiseless : bool or bool array, shape (N,)
        Also return the noiseless extracted spectra (``BandSpectra.flux_noiseless``, same grid
        and unit as flux); an array selects the rows (the others are NaN).
    crb_bands : sequence of str
        Bands of the bound (default GV + GI, ``crb.CRB_BANDS``).

    Returns
    -------
    spectra : dict
        Band name -> :class:`~csstz.io.spectra.BandSpectra`.
    snr : dict
        "SNR_<band>" and "SNR_TOTAL" -> ndarray (N,) (see :mod:`csstz.simulate.extract`);
        with ``z`` also "ZERR_CRB" -> ndarray (N,) (inf: no redshift information).

    Raises
    ------
    InputError
        Bad shapes or values; the message names the column and the row.
    """
    inst = instrument if instrument is not None else load_instrument()
    bands = all_bands(inst) if bands is None else tuple(bands)
    for b in bands:
        inst.band(b)
    wave, flux, tid, hlr, n_s, q, pa = validate_inputs(
        wave_aa, flux_flam17, targetid, shape_r_arcsec, sersic, ba, pa_deg, inst, bands
    )
    n = tid.size
    want0 = np.asarray(want_noiseless, bool)
    if want0.ndim and want0.shape != (n,):
        raise InputError("want_noiseless", "one flag per galaxy (or one bool)", value=want0.shape, allowed=f"({n},)")
    want0 = np.broadcast_to(want0, (n,))
    zz = None
    if z is not None:
        zz = np.asarray(z, np.float64).reshape(-1)
        if zz.shape != (n,):
            raise InputError("Z", "length does not match TARGETID", value=zz.shape, allowed=f"({n},)")
        _check_column("Z", zz, lo=-1.0, lo_open=True, allowed="> -1")
    res = {
        b: dict(
            flux=np.empty((n, inst.band(b).n_pix), np.float32),
            flux_noiseless=np.full((n, inst.band(b).n_pix), np.nan, np.float32) if want0.any() else None,
            err=np.empty((n, inst.band(b).n_pix), np.float32),
            image2d=(
                np.empty(
                    (n, 2 * inst.image2d_half_height_pix + 1, inst.band(b).n_pix + 2 * inst.image2d_half_height_pix),
                    np.float32,
                )
                if save_2d
                else None
            ),
        )
        for b in bands
    }
    lsfs = []
    for i in range(n):
        one = simulate_source(
            wave,
            flux[i],
            hlr[i],
            n_s[i],
            q[i],
            pa[i],
            inst,
            bands=bands,
            targetid=int(tid[i]),
            seed=seed,
            noiseless=noiseless,
            save_2d=save_2d,
            noise_mode=noise_mode,
            want_noiseless=bool(want0[i]),
        )
        lsfs.append({b: one[b].lsf for b in bands})
        for b in bands:
            res[b]["flux"][i] = one[b].flux
            res[b]["err"][i] = one[b].err
            if save_2d:
                res[b]["image2d"][i] = one[b].image2d
            if want0[i]:
                res[b]["flux_noiseless"][i] = one[b].flux_noiseless
    spectra = {
        b: BandSpectra(inst.band(b).wave_aa.copy(), r["flux"], r["err"], r["image2d"], r["flux_noiseless"])
        for b, r in res.items()
    }
    snr = {snr_column(b): snr_median(spectra[b].flux, spectra[b].err) for b in bands}
    snr[SNR_TOTAL] = snr_median(
        np.concatenate([spectra[b].flux for b in bands], axis=1),
        np.concatenate([spectra[b].err for b in bands], axis=1),
    )
    cb = tuple(b for b in crb_bands if b in bands)
    if zz is not None and cb:
        snr[ZERR_CRB] = zerr_crb_arrays(wave, flux, zz, {b: spectra[b].err for b in cb}, inst, lsf_pix=lsfs, bands=cb)
    return spectra, snr


# ------------------------------------------------------------------------------------------------
# Catalogue files and parallel execution
# ------------------------------------------------------------------------------------------------
def read_input_catalog(path: PathLike) -> tuple[Table, np.ndarray, np.ndarray]:
    """Read a ``simulate`` input FITS file: (CATALOG table, WAVELENGTH (L,), FLUX (N, L)).

    Raises
    ------
    FileFormatError
        Missing file, not FITS, or a missing HDU.
    InputError
        A required column is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "catalogue file not found")
    try:
        with fits.open(p, memmap=False) as hdul:
            for hdu in INPUT_HDUS:
                if hdu not in hdul:
                    raise FileFormatError(str(p), f"HDU {hdu} missing (need CATALOG, WAVELENGTH, FLUX)")
            cat = Table(hdul["CATALOG"].data, copy=True)
            wave = np.array(hdul["WAVELENGTH"].data, dtype=np.float64)
            flux = np.array(hdul["FLUX"].data, dtype=np.float64)
    except OSError as exc:
        raise FileFormatError(str(p), f"not a readable FITS file ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise FileFormatError(str(p), f"corrupt FITS content ({exc})") from None
    for col in MORPH_COLUMNS:
        if col not in cat.colnames:
            raise InputError(col, "required column missing from HDU CATALOG", path=str(p))
    return cat, wave, flux


def write_input_catalog(path: PathLike, catalog: Table, wave_aa: np.ndarray, flux_flam17: np.ndarray) -> None:
    """Write a ``simulate`` input FITS file atomically (the inverse of :func:`read_input_catalog`)."""
    from ..io.atomic import atomic_path

    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU(catalog, name="CATALOG"),
            fits.ImageHDU(np.asarray(wave_aa, np.float64), name="WAVELENGTH"),
            fits.ImageHDU(np.asarray(flux_flam17, np.float32), name="FLUX"),
        ]
    )
    hdus["WAVELENGTH"].header["BUNIT"] = UNIT_WAVE
    hdus["FLUX"].header["BUNIT"] = UNIT_FLAM17
    with atomic_path(path) as tmp:
        hdus.writeto(tmp)


def _chunk_job(args: tuple) -> tuple[dict[str, BandSpectra], dict[str, np.ndarray]]:
    (wave, flux, tid, hlr, n_s, q, pa, seed, noiseless, save_2d, inst_text, bands, z) = args
    from ..instrument import parse_instrument

    inst = parse_instrument(inst_text)
    return simulate_arrays(
        wave,
        flux,
        tid,
        hlr,
        n_s,
        q,
        pa,
        seed=seed,
        noiseless=noiseless,
        save_2d=save_2d,
        instrument=inst,
        bands=bands,
        z=z,
    )


def simulate_file(
    catalog_path: PathLike,
    out_path: PathLike,
    seed: int = SimulateConfig.seed,
    noiseless: bool = False,
    save_2d: bool = False,
    workers: int = ParallelConfig.workers,
    scheduler: str | None = None,
    instrument_path: PathLike | None = None,
    bands: tuple[str, ...] | None = None,
    chunk: int = SimulateConfig.chunk,
    config_yaml: str | None = None,
) -> Path:
    """``csstz simulate``: read a FITS catalogue, simulate, write the spectra HDF5 atomically.

    Raises
    ------
    FileFormatError, InputError
        Bad files or values (nothing is written).
    """
    inst = load_instrument(instrument_path)
    bands = all_bands(inst) if bands is None else tuple(bands)
    for b in bands:
        inst.band(b)
    cat, wave, flux = read_input_catalog(catalog_path)
    cols = [np.asarray(cat[c]) for c in ("TARGETID", "SHAPE_R", "SERSIC", "BA", "PA")]
    # validate everything up front so that a bad row fails before any work
    wave, flux, tid, hlr, n_s, q, pa = validate_inputs(wave, flux, *cols, inst, bands)
    z = _check_column("Z", np.asarray(cat["Z"], float), lo=-0.01, allowed=">= -0.01")
    jobs = [
        (
            wave,
            flux[i : i + chunk],
            tid[i : i + chunk],
            hlr[i : i + chunk],
            n_s[i : i + chunk],
            q[i : i + chunk],
            pa[i : i + chunk],
            seed,
            noiseless,
            save_2d,
            inst.to_yaml(),
            bands,
            z[i : i + chunk],
        )
        for i in range(0, len(tid), chunk)
    ]
    parts = parallel_list(_chunk_job, jobs, workers=workers, scheduler=scheduler)

    def joined(get: Callable[[Any], np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([get(p) for p in parts]) if parts else np.empty(empty_shape, np.float32)

    spectra = {}
    for b in bands:
        n_pix = inst.band(b).n_pix
        spectra[b] = BandSpectra(
            inst.band(b).wave_aa.copy(),
            joined(lambda p: p[0][b].flux, (0, n_pix)),
            joined(lambda p: p[0][b].err, (0, n_pix)),
            joined(lambda p: p[0][b].image2d, (0, 1, n_pix)) if save_2d else None,
        )
    out_cat = Table(cat, copy=False)
    for key in [snr_column(b) for b in bands] + [SNR_TOTAL] + ([ZERR_CRB] if parts and ZERR_CRB in parts[0][1] else []):
        out_cat[key] = joined(lambda p: p[1][key], (0,))
    attrs = dict(
        csstz_version=__version__,
        seed=int(seed),
        noiseless=bool(noiseless),
        instrument=inst.to_yaml(),
        bands=",".join(bands),
        source_catalog=str(catalog_path),
        snr_definition=SNR_DEFINITION,
    )
    if config_yaml is not None:
        attrs["config"] = config_yaml
    write_spectra(out_path, SpectraSet(spectra, out_cat, attrs))
    return Path(out_path)


__all__ = [
    "simulate_source",
    "simulate_arrays",
    "simulate_file",
    "validate_inputs",
    "read_input_catalog",
    "write_input_catalog",
    "band_stream",
    "SourceResult",
]
