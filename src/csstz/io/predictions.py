"""The predictions file (FITS) written by ``csstz predict`` and ``csstz fit-templates``.

HDU ``REDSHIFTS`` (binary table), one row per input spectrum:
``TARGETID`` (int64), ``Z`` (float64), ``ZERR`` (float64, calibrated 1-sigma),
``ZWARN`` (int32, 0 = no problem; bits of :class:`csstz.zwarn.ZWARN`), and for the
BNN also ``ZERR_EPISTEMIC``, ``ZERR_ALEATORIC``. Any further columns are kept.
Header keywords: ``CSSTZVER`` (package version), ``METHOD``, ``MODELSUM``
(model file checksum, where a model was used), calibration parameters, ``CONFIG``
(the stage configuration as one line of JSON, which is also YAML). See ``docs/formats.md``.

Optional HDUs ``PZ`` (N x K float32 image: p(z) of each row, a density per unit z, linear
between grid points and trapezoid-normalised on the grid) and ``PZ_GRID`` (K float64,
strictly increasing z), one to one with a qp "interp" ensemble. In memory a predictions
table carries them as ``table.meta["PZ"]`` and ``table.meta["PZ_GRID"]`` (numpy arrays, row i
of PZ for row i of the table): :func:`read_predictions` puts them there and
:func:`write_predictions` takes them from there (or from its ``pz``/``pz_grid`` arguments).
Select rows of such a table with :func:`select_rows`, which keeps PZ aligned.

The PZ image is streamed to the file in blocks (``astropy.io.fits.StreamingHDU``), checked block by
block, so writing it needs memory for one block only; :class:`PzSpool` holds the p(z) of a long
prediction on disk until then, so that ``csstz predict``'s memory does not grow with the number of
spectra by the 3.3 kB of p(z) each one carries.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .. import __version__
from ..errors import FileFormatError, InputError
from ..schema import PRED_HDU as HDU_NAME
from ..schema import PRED_REQUIRED as REQUIRED
from ..schema import PZ_GRID_HDU, PZ_HDU, check_pz, check_pz_grid, check_pz_shape
from .atomic import atomic_path

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .._types import PathLike

#: Rows of PZ checked and streamed to the file at a time (3.3 MB at K = 832).
PZ_WRITE_BLOCK = 1024


class PzSpool:
    """p(z) rows appended block by block to a temporary file, for :func:`write_predictions` to stream.

    The rows are kept as big-endian float32 (the FITS layout) in an unnamed-to-the-user temporary file in
    ``directory`` (default: the system's), removed on :meth:`close` or at the end of a ``with`` block.
    Plain file writes, not a memory map: the pages go to the OS cache, not to the process's resident memory.

    Parameters
    ----------
    n_grid : int
        K, the p(z) grid length; every block must have K columns.
    directory : path-like, optional
    """

    def __init__(self, n_grid: int, directory: PathLike | None = None) -> None:
        self.n_grid = int(n_grid)
        fd, name = tempfile.mkstemp(prefix=".csstz-pz-", suffix=".f4", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "w+b")
        self.n_rows = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_grid)

    def append(self, block: np.ndarray) -> None:
        """Append rows (n, K); InputError naming PZ if the width is not K."""
        b = np.asarray(block)
        if b.ndim != 2 or b.shape[1] != self.n_grid:
            raise InputError("PZ", "spooled block has the wrong shape", value=b.shape, allowed=f"(n, {self.n_grid})")
        self._file.write(np.ascontiguousarray(b, ">f4").tobytes())
        self.n_rows += b.shape[0]

    def blocks(self, rows: int = PZ_WRITE_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows x K big-endian float32) in order, ``rows`` at a time."""
        self._file.flush()
        self._file.seek(0)
        for start in range(0, self.n_rows, rows):
            n = min(rows, self.n_rows - start)
            yield start, np.fromfile(self._file, dtype=">f4", count=n * self.n_grid).reshape(n, self.n_grid)

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> PzSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pz_blocks(pz: np.ndarray | PzSpool, rows: int = PZ_WRITE_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
    if isinstance(pz, PzSpool):
        yield from pz.blocks(rows)
        return
    for start in range(0, pz.shape[0], rows):
        yield start, pz[start : start + rows]


def _stream_pz(path: Path, pz: np.ndarray | PzSpool, grid: np.ndarray, zwarn: np.ndarray) -> None:
    """Append the PZ image (checked and written block by block) and PZ_GRID to the FITS file ``path``."""
    n, k = pz.shape
    head = fits.ImageHDU(np.zeros((1, 1), np.float32), name=PZ_HDU).header
    head["NAXIS1"], head["NAXIS2"] = k, n
    head["BUNIT"] = ("1/z", "density per unit z, trapezoid-normalised")
    with fits.StreamingHDU(str(path), head) as stream:
        for start, block in _pz_blocks(pz):
            check_pz(block, grid, allow_nan_rows=zwarn[start : start + block.shape[0]] != 0, row_offset=start)
            stream.write(np.ascontiguousarray(block, ">f4"))
    grid_hdu = fits.ImageHDU(np.asarray(grid, np.float64), name=PZ_GRID_HDU)
    grid_hdu.header["BUNIT"] = ("z", "redshift grid of PZ")
    with fits.open(path, mode="append") as hdul:
        hdul.append(grid_hdu)


def write_predictions(
    path: PathLike,
    table: Table,
    header: dict | None = None,
    config: dict | None = None,
    pz: np.ndarray | PzSpool | None = None,
    pz_grid: np.ndarray | None = None,
) -> None:
    """Write predictions atomically (the PZ image streamed in blocks of :data:`PZ_WRITE_BLOCK` rows).

    Parameters
    ----------
    table : astropy.table.Table
        Must hold TARGETID, Z, ZERR, ZWARN (one row per spectrum).
    header : dict, optional
        Extra FITS header keywords (8 characters at most, or HIERARCH).
    config : dict, optional
        The configuration that made the predictions, stored as keyword ``CONFIG`` (JSON).
    pz, pz_grid : array (N, K) or :class:`PzSpool`, and (K,), optional
        p(z) per row and its z grid (HDUs PZ, PZ_GRID); default ``table.meta["PZ"]``,
        ``table.meta["PZ_GRID"]`` where present. Rows may be all NaN only where ZWARN != 0.

    Raises
    ------
    InputError
        A required column is missing, Z/ZERR has NaN where ZWARN is 0, only one of PZ/PZ_GRID is
        given, or PZ/PZ_GRID break the contract (field PZ or PZ_GRID, the row and the bad value).
    """
    for col in REQUIRED:
        if col not in table.colnames:
            raise InputError(col, "required predictions column missing")
    zwarn = np.asarray(table["ZWARN"])
    for col in ("Z", "ZERR"):
        bad = ~np.isfinite(np.asarray(table[col], np.float64)) & (zwarn == 0)
        if bad.any():
            raise InputError(col, "non-finite value with ZWARN = 0 (flag it)", row=int(np.argmax(bad)))
    if pz is None:
        pz = table.meta.get(PZ_HDU)
    if pz_grid is None:
        pz_grid = table.meta.get(PZ_GRID_HDU)
    if (pz is None) != (pz_grid is None):
        raise InputError(PZ_HDU if pz is None else PZ_GRID_HDU, "PZ and PZ_GRID go together; only one given")
    if pz is not None:
        grid = check_pz_grid(pz_grid)
        if not isinstance(pz, PzSpool):
            pz = np.asarray(pz)
        check_pz_shape(pz.shape, grid.size, len(table))  # the rows themselves are checked as they are written
    out = Table(table, copy=True)
    out.meta = {k: v for k, v in table.meta.items() if k not in (PZ_HDU, PZ_GRID_HDU)}
    out["TARGETID"] = np.asarray(out["TARGETID"], np.int64)
    out["ZWARN"] = np.asarray(out["ZWARN"], np.int32)
    hdu = fits.BinTableHDU(out, name=HDU_NAME)
    hdu.header["CSSTZVER"] = (__version__, "csstz version")
    for key, val in (header or {}).items():
        hdu.header[key] = val
    if config is not None:
        hdu.header["CONFIG"] = json.dumps(config, sort_keys=True, default=str)
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)
        if pz is not None:
            _stream_pz(tmp, pz, grid, zwarn)


def read_predictions(path: PathLike) -> Table:
    """Read the REDSHIFTS table (header keywords in ``.meta``; PZ and PZ_GRID, where present, too).

    Raises
    ------
    FileFormatError
        Missing file, not FITS, no REDSHIFTS HDU, a required column missing, only one of PZ and
        PZ_GRID, or a PZ that breaks the contract.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "predictions file not found")
    try:
        with fits.open(p) as hdul:
            if HDU_NAME not in hdul:
                raise FileFormatError(str(p), f"no {HDU_NAME} HDU")
            tab = Table(hdul[HDU_NAME].data, copy=True)
            tab.meta.update(
                {
                    k: v
                    for k, v in hdul[HDU_NAME].header.items()
                    if k not in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS")
                    and not k.startswith(("TTYPE", "TFORM"))
                }
            )
            has = [h in hdul for h in (PZ_HDU, PZ_GRID_HDU)]
            if any(has) and not all(has):
                raise FileFormatError(
                    str(p), f"HDU {PZ_GRID_HDU if has[0] else PZ_HDU} missing (PZ and PZ_GRID go together)"
                )
            if all(has):
                tab.meta[PZ_HDU] = np.array(hdul[PZ_HDU].data, np.float32)
                tab.meta[PZ_GRID_HDU] = np.array(hdul[PZ_GRID_HDU].data, np.float64)
    except OSError as exc:
        raise FileFormatError(str(p), f"not a readable FITS file ({exc})") from None
    for col in REQUIRED:
        if col not in tab.colnames:
            raise FileFormatError(str(p), f"column {col} missing from {HDU_NAME}")
    if PZ_HDU in tab.meta:
        try:
            check_pz(
                tab.meta[PZ_HDU], tab.meta[PZ_GRID_HDU], n_rows=len(tab), allow_nan_rows=np.asarray(tab["ZWARN"]) != 0
            )
        except InputError as exc:
            raise FileFormatError(str(p), str(exc)) from None
    return tab


def select_rows(table: Table, rows: np.ndarray | slice) -> Table:
    """``table[rows]`` with its in-memory PZ (``meta["PZ"]``) cut to the same rows."""
    out = table[rows]
    out.meta = dict(table.meta)
    if PZ_HDU in table.meta:
        out.meta[PZ_HDU] = np.asarray(table.meta[PZ_HDU])[rows]
    return out


__all__ = [
    "write_predictions",
    "read_predictions",
    "select_rows",
    "PzSpool",
    "PZ_WRITE_BLOCK",
    "HDU_NAME",
    "REQUIRED",
    "PZ_HDU",
    "PZ_GRID_HDU",
]
