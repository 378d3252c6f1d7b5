"""The predictions file (FITS) written by ``csstz predict`` and ``csstz fit-templates``.

HDU ``REDSHIFTS`` (binary table), one row per input spectrum:
``TARGETID`` (int64), ``Z`` (float64), ``ZERR`` (float64, calibrated 1-sigma),
``ZWARN`` (int32, 0 = no problem; bits of :class:`csstz.zwarn.ZWARN`), and for the
BNN also ``ZERR_EPISTEMIC``, ``ZERR_ALEATORIC``. Any further columns are kept.
Header keywords: ``CSSTZVER`` (package version), ``METHOD``, ``MODELSUM``
(model file checksum, where a model was used), calibration parameters, ``CONFIG``
(the stage configuration as one line of JSON, which is also YAML). See ``docs/formats.md``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .. import __version__
from ..errors import FileFormatError, InputError
from ..schema import PRED_HDU as HDU_NAME
from ..schema import PRED_REQUIRED as REQUIRED
from .atomic import atomic_path


def write_predictions(path, table: Table, header: dict | None = None, config: dict | None = None) -> None:
    """Write predictions atomically.

    Parameters
    ----------
    table : astropy.table.Table
        Must hold TARGETID, Z, ZERR, ZWARN (one row per spectrum).
    header : dict, optional
        Extra FITS header keywords (8 characters at most, or HIERARCH).
    config : dict, optional
        The configuration that made the predictions, stored as keyword ``CONFIG`` (JSON).

    Raises
    ------
    InputError
        A required column is missing, or Z/ZERR has NaN where ZWARN is 0.
    """
    for col in REQUIRED:
        if col not in table.colnames:
            raise InputError(col, "required predictions column missing")
    zwarn = np.asarray(table["ZWARN"])
    for col in ("Z", "ZERR"):
        bad = ~np.isfinite(np.asarray(table[col], np.float64)) & (zwarn == 0)
        if bad.any():
            raise InputError(col, "non-finite value with ZWARN = 0 (flag it)", row=int(np.argmax(bad)))
    out = Table(table, copy=True)
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


def read_predictions(path) -> Table:
    """Read the REDSHIFTS table (header keywords in ``.meta``).

    Raises
    ------
    FileFormatError
        Missing file, not FITS, no REDSHIFTS HDU, or a required column missing.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "predictions file not found")
    try:
        with fits.open(p) as hdul:
            if HDU_NAME not in hdul:
                raise FileFormatError(str(p), f"no {HDU_NAME} HDU")
            tab = Table(hdul[HDU_NAME].data, copy=True)
            tab.meta.update({k: v for k, v in hdul[HDU_NAME].header.items()
                             if k not in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT",
                                          "GCOUNT", "TFIELDS") and not k.startswith(("TTYPE", "TFORM"))})
    except OSError as exc:
        raise FileFormatError(str(p), f"not a readable FITS file ({exc})") from None
    for col in REQUIRED:
        if col not in tab.colnames:
            raise FileFormatError(str(p), f"column {col} missing from {HDU_NAME}")
    return tab


__all__ = ["write_predictions", "read_predictions", "HDU_NAME", "REQUIRED"]
