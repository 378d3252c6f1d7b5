"""The spectra file (HDF5) written by ``csstz simulate`` and ``csstz build``.

Layout (``docs/formats.md``; names in :mod:`csstz.schema`)::

    /<band>                one group per band of the instrument file (GU, GV, GI)
        wave   (L,)        float64, Angstrom (pixel centres)
        flux   (N, L)      float32, 1e-17 erg/s/cm^2/A
        err    (N, L)      float32, same unit; inf where a pixel has no data
        image2d (N, ny, nx) float32, electrons summed over exposures,
                            sky and dark subtracted (only with --save-2d)
        flux_noiseless (N, L) float32, noiseless extracted spectrum, same unit as
                            flux (build: train/val rows; NaN for test rows); optional
    /catalog               astropy table: TARGETID, Z, SHAPE_R, SERSIC, BA, PA,
                            SNR_GU, SNR_GV, SNR_GI, SNR_TOTAL (+ SPLIT from build)
    root attributes        csstz_version, seed, instrument (YAML text), ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from astropy.table import Table

from ..errors import FileFormatError
from ..schema import (
    BAND_DATASETS,
    CATALOG_PATH,
    FLUX_NOISELESS,
    H5_ROW_CHUNK,
    IMAGE2D,
    UNIT_FLAM17,
    UNIT_IMAGE2D,
    UNIT_WAVE,
    order_bands,
    select_split,
)
from .atomic import atomic_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._types import PathLike


@dataclass
class BandSpectra:
    """Spectra of N sources in one band.

    Attributes
    ----------
    wave_aa : ndarray, shape (L,)
    flux : ndarray, shape (N, L), 1e-17 erg/s/cm^2/A
    err : ndarray, shape (N, L), same unit, inf where no data
    image2d : ndarray, shape (N, ny, nx), electrons, or None
    flux_noiseless : ndarray, shape (N, L), 1e-17 erg/s/cm^2/A, or None
        Noiseless extracted spectrum (NaN in rows without it).
    """

    wave_aa: np.ndarray
    flux: np.ndarray
    err: np.ndarray
    image2d: np.ndarray | None = None
    flux_noiseless: np.ndarray | None = None


@dataclass
class SpectraSet:
    """Spectra in several bands plus the source catalogue and file attributes."""

    bands: dict[str, BandSpectra]
    catalog: Table | None
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        if self.catalog is None:
            return next(iter(self.bands.values())).flux.shape[0] if self.bands else 0
        return len(self.catalog)


def _catalog_for_hdf5(catalog: Table) -> Table:
    """Copy with unicode columns as bytes (HDF5 has no numpy 'U' type)."""
    out = Table(catalog, copy=True)
    out.meta = {}
    for name in out.colnames:
        if out[name].dtype.kind == "U":
            out[name] = np.char.encode(np.asarray(out[name]), "ascii")
    return out


def decode_catalog(tab: Table) -> Table:
    """Turn bytes columns (as stored in HDF5) back into str columns."""
    for name in tab.colnames:
        if tab[name].dtype.kind == "S":
            tab[name] = np.char.decode(np.asarray(tab[name]), "ascii")
    return tab


def create_band_group(
    h5: h5py.Group,
    name: str,
    wave_aa: np.ndarray,
    n_rows: int,
    flux: np.ndarray | None = None,
    err: np.ndarray | None = None,
    image2d: np.ndarray | None = None,
    chunked: bool = True,
    flux_noiseless: np.ndarray | None = None,
    with_noiseless: bool = False,
) -> h5py.Group:
    """Write one band group of the spectra layout: the only place that lays it out.

    Parameters
    ----------
    h5 : h5py.Group
        Parent (file root).
    name : str
        Band name (group name).
    wave_aa : ndarray, shape (L,)
        Pixel-centre wavelengths [A].
    n_rows : int
        Number of spectra N.
    flux, err : ndarray, shape (N, L), optional
        1e-17 erg/s/cm^2/A. Without them empty (N, L) float32 datasets are created, to be
        filled by the caller (streamed writes).
    image2d : ndarray, shape (N, ny, nx), optional
        Electrons (``--save-2d``).
    chunked : bool
        Row-chunk the flux/err datasets (:data:`csstz.schema.H5_ROW_CHUNK` rows).
    flux_noiseless : ndarray, shape (N, L), optional
        Noiseless extracted spectra [1e-17 erg/s/cm^2/A] (NaN where absent).
    with_noiseless : bool
        Create an empty (N, L) ``flux_noiseless`` dataset (fill value NaN) when
        ``flux_noiseless`` is not given (streamed writes).

    Returns
    -------
    h5py.Group
        The new group (datasets ``wave``, ``flux``, ``err`` and optionally ``flux_noiseless``, ``image2d``).
    """
    wave = np.asarray(wave_aa, np.float64)
    n = int(n_rows)
    g = h5.create_group(name)
    g.create_dataset("wave", data=wave, track_times=False)
    chunks = (min(n, H5_ROW_CHUNK), wave.size) if (chunked and n) else None
    for key, data in (("flux", flux), ("err", err)):
        if data is None:
            g.create_dataset(key, shape=(n, wave.size), dtype=np.float32, chunks=chunks, track_times=False)
        else:
            g.create_dataset(key, data=np.asarray(data, np.float32), chunks=chunks, track_times=False)
    g["wave"].attrs["unit"] = UNIT_WAVE
    g["flux"].attrs["unit"] = UNIT_FLAM17
    g["err"].attrs["unit"] = UNIT_FLAM17
    if flux_noiseless is not None or with_noiseless:
        if flux_noiseless is None:
            g.create_dataset(
                FLUX_NOISELESS,
                shape=(n, wave.size),
                dtype=np.float32,
                chunks=chunks,
                fillvalue=np.float32(np.nan),
                track_times=False,
            )
        else:
            f0 = np.asarray(flux_noiseless, np.float32)
            if f0.shape != (n, wave.size):
                raise FileFormatError(
                    f"/{name}/{FLUX_NOISELESS}", f"shape {f0.shape} does not match ({n}, {wave.size})"
                )
            g.create_dataset(FLUX_NOISELESS, data=f0, chunks=chunks, track_times=False)
        g[FLUX_NOISELESS].attrs["unit"] = UNIT_FLAM17
    if image2d is not None:
        img = np.asarray(image2d, np.float32)
        g.create_dataset(IMAGE2D, data=img, chunks=(1,) + img.shape[1:] if (chunked and n) else None, track_times=False)
        g[IMAGE2D].attrs["unit"] = UNIT_IMAGE2D
    return g


def write_attrs(h5: h5py.File, attrs: dict) -> None:
    """Root attributes: dicts, lists and tuples as JSON text, in sorted key order."""
    for key in sorted(attrs):
        val = attrs[key]
        h5.attrs[key] = json.dumps(val, sort_keys=True) if isinstance(val, (dict, list, tuple)) else val


def write_spectra(path: PathLike, spectra: SpectraSet) -> None:
    """Write a :class:`SpectraSet` atomically to ``path`` (HDF5).

    Raises
    ------
    FileFormatError
        Array shapes disagree with the catalogue length.
    """
    n = len(spectra.catalog)
    for name, b in spectra.bands.items():
        if b.flux.shape != b.err.shape or b.flux.shape != (n, len(b.wave_aa)):
            raise FileFormatError(
                str(path), f"band {name}: flux/err shape {b.flux.shape} does not match ({n}, {len(b.wave_aa)})"
            )
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name in order_bands(spectra.bands):
                b = spectra.bands[name]
                create_band_group(h5, name, b.wave_aa, n, b.flux, b.err, b.image2d, flux_noiseless=b.flux_noiseless)
            _catalog_for_hdf5(spectra.catalog).write(h5, path=CATALOG_PATH)
            write_attrs(h5, spectra.attrs)


def band_names(path: PathLike) -> list[str]:
    """Band groups present in a spectra file, in instrument order (unknown bands last, sorted)."""
    with open_spectra(path) as h5:
        present = [k for k in h5 if k != CATALOG_PATH and isinstance(h5[k], h5py.Group) and "flux" in h5[k]]
    return order_bands(present)


def open_spectra(path: PathLike) -> h5py.File:
    """Open a spectra file read-only with a clear error if it is missing or corrupt."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "spectra file not found")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise FileFormatError(str(p), f"not a readable HDF5 file ({exc})") from None


def read_catalog(path: PathLike) -> Table:
    """The ``/catalog`` table of a spectra file (str columns decoded)."""
    with open_spectra(path) as h5:
        if CATALOG_PATH not in h5:
            raise FileFormatError(str(path), "no /catalog table")
    return decode_catalog(Table.read(str(path), path=CATALOG_PATH))


def read_attrs(path: PathLike) -> dict:
    with open_spectra(path) as h5:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}


#: A sorted row selection is read as its bounding slice when that is at most this many times longer
#: (an HDF5 point selection costs ~20 us per row; a slice of 2 kB rows ~0.5 us per row; measured here).
SPAN_READ_RATIO = 16
#: The bounding slice is read this many rows at a time, so that a spread selection (a shuffled training block)
#: holds one piece in memory, not up to SPAN_READ_RATIO times its own size.
READ_PIECE_ROWS = 1024


def read_rows(ds: h5py.Dataset, sel: np.ndarray | slice) -> np.ndarray:
    """Rows ``sel`` (a slice, or sorted indices) of an HDF5 dataset, read as slices where that is cheap.

    A sorted selection whose bounding slice is at most ``SPAN_READ_RATIO`` times longer is read in
    contiguous pieces of ``READ_PIECE_ROWS`` rows (pieces holding none of the rows are skipped); a sparser one
    as an HDF5 point selection.
    """
    if isinstance(sel, slice):
        return ds[sel]
    idx = np.asarray(sel)
    if idx.size and idx.ndim == 1 and np.all(np.diff(idx) > 0):
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo == idx.size:
            return ds[lo:hi]
        if hi - lo <= SPAN_READ_RATIO * idx.size:
            out = np.empty((idx.size, *ds.shape[1:]), ds.dtype)
            for a in range(lo, hi, READ_PIECE_ROWS):
                b = min(a + READ_PIECE_ROWS, hi)
                i0, i1 = np.searchsorted(idx, [a, b])
                if i1 > i0:
                    out[i0:i1] = ds[a:b][idx[i0:i1] - a]
            return out
    return ds[idx]


def read_spectra(
    path: PathLike,
    bands: Sequence[str] | None = None,
    rows: np.ndarray | slice | None = None,
    with_image2d: bool = False,
    with_noiseless: bool = False,
    with_catalog: bool = True,
) -> SpectraSet:
    """Read a spectra file (or a subset of rows) into memory.

    Parameters
    ----------
    bands : sequence of str, optional
        Bands to read (default: all present).
    rows : slice or sorted int array, optional
        Rows to read (default: all).
    with_image2d : bool
        Also read the 2D images where present.
    with_noiseless : bool
        Also read ``flux_noiseless`` where present (``BandSpectra.flux_noiseless``; None for
        files written without it).
    with_catalog : bool
        Read the catalogue rows too (False: ``catalog`` is None; block readers that hold it already).

    Raises
    ------
    FileFormatError
        The file is missing, not HDF5, or lacks a requested band or dataset.
    """
    sel = slice(None) if rows is None else rows
    out = {}
    with open_spectra(path) as h5:
        names = (
            list(bands)
            if bands is not None
            else order_bands(k for k in h5 if k != CATALOG_PATH and isinstance(h5[k], h5py.Group) and "flux" in h5[k])
        )
        for name in names:
            if name not in h5:
                raise FileFormatError(str(path), f"band group /{name} missing")
            g = h5[name]
            for key in BAND_DATASETS:
                if key not in g:
                    raise FileFormatError(str(path), f"dataset /{name}/{key} missing")
            img = read_rows(g[IMAGE2D], sel) if (with_image2d and IMAGE2D in g) else None
            f0 = read_rows(g[FLUX_NOISELESS], sel) if (with_noiseless and FLUX_NOISELESS in g) else None
            out[name] = BandSpectra(g["wave"][:], read_rows(g["flux"], sel), read_rows(g["err"], sel), img, f0)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
    cat = read_catalog(path) if with_catalog else None
    if rows is not None and cat is not None:
        cat = cat[rows]
    return SpectraSet(out, cat, attrs)


def split_rows(path: PathLike, split: str | None) -> np.ndarray:
    """Sorted row indices of a spectra file whose catalogue ``SPLIT`` equals ``split`` (None: all rows).

    Raises
    ------
    InputError
        ``split`` is given but the catalogue has no SPLIT column, or no row has it.
    """
    return select_split(read_catalog(path), split, path=str(path))


__all__ = [
    "split_rows",
    "create_band_group",
    "write_attrs",
    "BandSpectra",
    "SpectraSet",
    "write_spectra",
    "read_spectra",
    "read_rows",
    "read_catalog",
    "read_attrs",
    "open_spectra",
    "band_names",
    "decode_catalog",
    "CATALOG_PATH",
]
