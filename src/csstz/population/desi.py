"""Real training sources: DESI-EDR / BOSS DR16 redshift catalogues matched to LS DR9 sweeps.

* DESI EDR (``zall-pix-fuji.fits``, HDU ZCATALOG) cuts, selection cut 1 of ``docs/design.md``:
  SV_PRIMARY, MASKBITS == 0, SPECTYPE == GALAXY, ZWARN == 0, FLUX_G/R/Z > 0,
  FLUX_IVAR_G/R/Z > 0, MORPHTYPE != PSF.
* BOSS DR16: ZWARN == 0 (``ZWARNING`` accepted as its SDSS name), CLASS (or
  SPECTYPE) == GALAXY where the column exists; positions RA/DEC, PLUG_RA/PLUG_DEC
  or TARGET_RA/TARGET_DEC; TARGETID, else SPECOBJID, else the row number.
* LS DR9 sweeps, eq. 2: SHAPE_R > 0, SHAPE_R_IVAR > 0 (the paper's
  "SHAPE_IVAR_R"; both names accepted), SHAPE_E1_IVAR > 0, SHAPE_E2_IVAR > 0,
  SERSIC_IVAR > 0.
* Matching: nearest sweep source within 1 arcsec (astropy ``match_to_catalog_sky``).
* Shape, eq. 3: |e| = hypot(e1, e2); b/a = (1 - |e|) / (1 + |e|);
  phi = 0.5 * arctan2(e2, e1) in degrees, in (-90, 90]. Convention: the
  dispersion axis is taken along the reference axis of the LS ellipticity
  (e1 > 0, e2 = 0 is a major axis along it), so PA = phi, counter-clockwise.
* SEDs: Redrock templates x COEFF (:mod:`.redrock`), or SPARCL
  (:func:`fetch_sparcl_models`, optional ``sparclclient`` extra, network only
  when called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import FileFormatError, InputError
from ..schema import SERSIC_RANGE

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from typing import Any

    from astropy.table import Table

    from .._types import ArrayLike, PathLike

DESI_REQUIRED = (
    "TARGETID",
    "TARGET_RA",
    "TARGET_DEC",
    "Z",
    "ZWARN",
    "SPECTYPE",
    "COEFF",
    "SV_PRIMARY",
    "MASKBITS",
    "MORPHTYPE",
    "FLUX_G",
    "FLUX_R",
    "FLUX_Z",
    "FLUX_IVAR_G",
    "FLUX_IVAR_R",
    "FLUX_IVAR_Z",
)
SWEEP_REQUIRED = (
    "RA",
    "DEC",
    "SHAPE_R",
    "SHAPE_E1",
    "SHAPE_E2",
    "SHAPE_E1_IVAR",
    "SHAPE_E2_IVAR",
    "SERSIC",
    "SERSIC_IVAR",
)
BOSS_COLUMNS = (
    "Z",
    "ZWARN",
    "ZWARNING",
    "RA",
    "DEC",
    "PLUG_RA",
    "PLUG_DEC",
    "TARGET_RA",
    "TARGET_DEC",
    "COEFF",
    "CLASS",
    "SPECTYPE",
    "TARGETID",
    "SPECOBJID",
)
#: Matching radius [arcsec] (paper sec. 2.2).
MATCH_RADIUS_ARCSEC = 1.0
#: Sersic range accepted by the simulator; LS DR9 caps n at 6 (paper sec. 2.2).
SERSIC_MIN, SERSIC_MAX = SERSIC_RANGE  # the simulator's valid range (csstz.schema)


def _read_table(
    path: PathLike, hdu_names: Sequence[str] = ("ZCATALOG",), wanted: Collection[str] | None = None
) -> Table:
    """The first matching binary table, with only the ``wanted`` columns that exist (memory-mapped read)."""
    from astropy.io import fits
    from astropy.table import Table

    try:
        with fits.open(path, memmap=True) as hdul:
            hdu = next((hdul[h] for h in hdu_names if h in hdul), None)
            if hdu is None:
                hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
            if hdu is None:
                raise FileFormatError(str(path), "no binary table HDU")
            names = hdu.columns.names
            keep = [c for c in names if wanted is None or c in wanted]
            return Table({c: np.array(hdu.data[c]) for c in keep})
    except OSError as exc:
        raise FileFormatError(str(path), f"not a readable FITS file ({exc})") from None


def _require(tab: Table, cols: Sequence[str], path: PathLike) -> None:
    missing = [c for c in cols if c not in tab.colnames]
    if missing:
        raise InputError(
            missing[0], f"required column missing ({len(missing)} missing: {', '.join(missing)})", path=str(path)
        )


def _strip(col: ArrayLike) -> np.ndarray:
    arr = np.asarray(col)
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "ascii")
    return np.char.upper(np.char.strip(arr.astype(str)))


def desi_cuts(tab: Table) -> np.ndarray:
    """Boolean mask of selection cut 1 (``docs/design.md``) over a DESI EDR redshift catalogue, shape (N,)."""
    keep = np.asarray(tab["SV_PRIMARY"]).astype(bool)
    keep &= np.asarray(tab["MASKBITS"]) == 0
    keep &= _strip(tab["SPECTYPE"]) == "GALAXY"
    keep &= np.asarray(tab["ZWARN"]) == 0
    for b in "GRZ":
        keep &= np.asarray(tab[f"FLUX_{b}"]) > 0
        keep &= np.asarray(tab[f"FLUX_IVAR_{b}"]) > 0
    keep &= _strip(tab["MORPHTYPE"]) != "PSF"
    return keep


def read_desi_zcat(path: PathLike) -> Table:
    """DESI EDR redshift catalogue rows passing eq. 1.

    Returns
    -------
    astropy.table.Table
        TARGETID, RA, DEC, Z, COEFF (N, ncoeff) of the selected rows.

    Raises
    ------
    InputError
        A required column is missing (named in the message).
    FileFormatError
        The file is not a readable FITS table.
    """
    from astropy.table import Table

    tab = _read_table(path, wanted=DESI_REQUIRED)
    _require(tab, DESI_REQUIRED, path)
    keep = desi_cuts(tab)
    sel = tab[keep]
    return Table(
        {
            "TARGETID": np.asarray(sel["TARGETID"], np.int64),
            "RA": np.asarray(sel["TARGET_RA"], float),
            "DEC": np.asarray(sel["TARGET_DEC"], float),
            "Z": np.asarray(sel["Z"], float),
            "COEFF": np.asarray(sel["COEFF"], float).reshape(len(sel), -1),
        }
    )


def read_boss_zcat(path: PathLike) -> Table:
    """BOSS DR16 catalogue rows with ZWARN == 0 (and CLASS == GALAXY where given).

    Returns the same columns as :func:`read_desi_zcat`.
    """
    from astropy.table import Table

    tab = _read_table(path, ("ZCATALOG", "SPECOBJ"), wanted=BOSS_COLUMNS)
    zw = "ZWARN" if "ZWARN" in tab.colnames else "ZWARNING"
    ra = next((c for c in ("RA", "PLUG_RA", "TARGET_RA") if c in tab.colnames), "RA")
    dec = {"RA": "DEC", "PLUG_RA": "PLUG_DEC", "TARGET_RA": "TARGET_DEC"}[ra]
    _require(tab, ("Z", zw, ra, dec, "COEFF"), path)
    keep = np.asarray(tab[zw]) == 0
    for cls in ("CLASS", "SPECTYPE"):
        if cls in tab.colnames:
            keep &= _strip(tab[cls]) == "GALAXY"
    if "TARGETID" in tab.colnames:
        tid = np.asarray(tab["TARGETID"], np.int64)
    elif "SPECOBJID" in tab.colnames:
        tid = np.array([int(x) for x in np.asarray(tab["SPECOBJID"]).astype(str)], dtype=np.int64)
    else:
        tid = np.arange(len(tab), dtype=np.int64)
    sel = tab[keep]
    return Table(
        {
            "TARGETID": tid[keep],
            "RA": np.asarray(sel[ra], float),
            "DEC": np.asarray(sel[dec], float),
            "Z": np.asarray(sel["Z"], float),
            "COEFF": np.asarray(sel["COEFF"], float).reshape(len(sel), -1),
        }
    )


def sweep_cuts(tab: Table) -> np.ndarray:
    """Boolean mask of selection cut 2 (``docs/design.md``) over an LS DR9 sweep table, shape (N,)."""
    ivar_r = "SHAPE_R_IVAR" if "SHAPE_R_IVAR" in tab.colnames else "SHAPE_IVAR_R"
    keep = np.asarray(tab["SHAPE_R"]) > 0
    keep &= np.asarray(tab[ivar_r]) > 0
    keep &= np.asarray(tab["SHAPE_E1_IVAR"]) > 0
    keep &= np.asarray(tab["SHAPE_E2_IVAR"]) > 0
    keep &= np.asarray(tab["SERSIC_IVAR"]) > 0
    return keep


def read_sweeps(paths: PathLike | Sequence[PathLike]) -> Table:
    """LS DR9 sweep rows passing eq. 2, from one or more files, concatenated.

    Returns
    -------
    astropy.table.Table
        RA, DEC, SHAPE_R [arcsec], SHAPE_E1, SHAPE_E2, SERSIC.
    """
    from astropy.table import Table, vstack

    parts = []
    for path in [paths] if isinstance(paths, str) else paths:
        tab = _read_table(path, ("SWEEP",), wanted=SWEEP_REQUIRED + ("SHAPE_R_IVAR", "SHAPE_IVAR_R"))
        _require(tab, SWEEP_REQUIRED, path)
        if "SHAPE_R_IVAR" not in tab.colnames and "SHAPE_IVAR_R" not in tab.colnames:
            raise InputError("SHAPE_R_IVAR", "required column missing", path=str(path))
        sel = tab[sweep_cuts(tab)]
        parts.append(
            Table({c: np.asarray(sel[c], float) for c in ("RA", "DEC", "SHAPE_R", "SHAPE_E1", "SHAPE_E2", "SERSIC")})
        )
    return vstack(parts) if parts else Table()


def ellipticity_to_shape(e1: ArrayLike, e2: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Method.md eq. 3: LS DR9 ellipticity -> axis ratio and position angle.

    Parameters
    ----------
    e1, e2 : array
        LS DR9 SHAPE_E1, SHAPE_E2.

    Returns
    -------
    ba : ndarray
        (1 - |e|) / (1 + |e|), |e| = hypot(e1, e2) (clipped to < 1).
    pa_deg : ndarray
        0.5 * arctan2(e2, e1) in degrees, in (-90, 90].
    """
    e1 = np.asarray(e1, float)
    e2 = np.asarray(e2, float)
    e = np.minimum(np.hypot(e1, e2), 0.999)
    ba = (1.0 - e) / (1.0 + e)
    pa = 0.5 * np.degrees(np.arctan2(e2, e1))
    return ba, pa


def match_sources(
    zcat: Table, sweeps: Table, radius_arcsec: float = MATCH_RADIUS_ARCSEC
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest sweep source of each redshift-catalogue source within ``radius_arcsec``.

    Returns
    -------
    iz, isw : ndarray of int
        Matched row indices into ``zcat`` and ``sweeps``.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    if len(zcat) == 0 or len(sweeps) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    c1 = SkyCoord(np.asarray(zcat["RA"]) * u.deg, np.asarray(zcat["DEC"]) * u.deg)
    c2 = SkyCoord(np.asarray(sweeps["RA"]) * u.deg, np.asarray(sweeps["DEC"]) * u.deg)
    idx, sep, _ = c1.match_to_catalog_sky(c2)
    ok = sep.to_value(u.arcsec) <= radius_arcsec
    return np.flatnonzero(ok), idx[ok]


def load_real_sources(
    source: str, zcat_path: PathLike, sweep_paths: PathLike | Sequence[PathLike], seed: int = 0
) -> dict:
    """Selected, matched real sources with morphology and splits, sorted by TARGETID.

    Parameters
    ----------
    source : {"desi", "boss"}
    zcat_path : str
    sweep_paths : list of str
    seed : int
        Root seed for the split assignment.

    Returns
    -------
    dict of str -> ndarray
        TARGETID, Z, COEFF (N, ncoeff), RA, DEC, SHAPE_R, SERSIC, BA, PA, SPLIT, SURVEY.

    Raises
    ------
    InputError
        Missing columns; no source survives the cuts and the match; duplicate TARGETIDs.
    """
    from .nz import split_weighted_by_csst

    zc = read_desi_zcat(zcat_path) if source == "desi" else read_boss_zcat(zcat_path)
    sw = read_sweeps(sweep_paths)
    iz, isw = match_sources(zc, sw)
    if iz.size == 0:
        raise InputError(
            "--zcat",
            f"no {source} source passes the cuts and matches a sweep source within {MATCH_RADIUS_ARCSEC} arcsec",
            path=str(zcat_path),
        )
    m = zc[iz]
    s = sw[isw]
    order = np.argsort(np.asarray(m["TARGETID"]), kind="stable")
    m, s = m[order], s[order]
    tid = np.asarray(m["TARGETID"], np.int64)
    if np.any(np.diff(tid) == 0):
        raise InputError("TARGETID", "duplicate TARGETIDs after the cuts", path=str(zcat_path))
    z = np.asarray(m["Z"], float)
    ba, pa = ellipticity_to_shape(s["SHAPE_E1"], s["SHAPE_E2"])
    return {
        "TARGETID": tid,
        "Z": z,
        "COEFF": np.asarray(m["COEFF"], float),
        "RA": np.asarray(m["RA"], float),
        "DEC": np.asarray(m["DEC"], float),
        "SHAPE_R": np.asarray(s["SHAPE_R"], float),
        "SERSIC": np.clip(np.asarray(s["SERSIC"], float), SERSIC_MIN, SERSIC_MAX),
        "BA": ba,
        "PA": pa,
        "SPLIT": split_weighted_by_csst(seed, tid, z),
        "SURVEY": np.full(len(tid), source.upper()),
    }


def fetch_sparcl_models(
    sparcl_ids: Sequence[str], client: Any = None
) -> list:  # pragma: no cover - network, only on user request
    """Download Redrock model spectra from SPARCL (needs the optional ``sparclclient`` extra).

    Parameters
    ----------
    sparcl_ids : list of str
        SPARCL record ids.

    Returns
    -------
    list of dict
        Records with ``wavelength`` [A] and ``model`` [1e-17 erg/s/cm^2/A].
    """
    try:
        from sparcl.client import SparclClient
    except ImportError:
        raise InputError(
            "sparclclient", "SPARCL access needs the optional extra: pip install 'csstz[sparcl]'"
        ) from None
    client = client or SparclClient()
    res = client.retrieve(uuid_list=list(sparcl_ids), include=["sparcl_id", "wavelength", "model", "redshift"])
    return list(res.records)


__all__ = [
    "desi_cuts",
    "sweep_cuts",
    "read_desi_zcat",
    "read_boss_zcat",
    "read_sweeps",
    "ellipticity_to_shape",
    "match_sources",
    "load_real_sources",
    "fetch_sparcl_models",
    "MATCH_RADIUS_ARCSEC",
]
