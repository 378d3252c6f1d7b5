"""The file contracts of csstz in one torch-free place.

Everything that two stages must agree on about names, rather than numbers,
lives here: the order of bands (taken from the instrument file, never typed
in code), the unit strings written into files, the names inside a run
directory, the splits and how their rows are selected, and the valid ranges
of the input catalogue. ``docs/formats.md`` describes the files these names
belong to.

This module imports neither torch nor h5py; the default instrument is read
lazily, only by the functions that need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from astropy.table import Table

    from ._types import ArrayLike
    from .instrument import Instrument

# --- bands -------------------------------------------------------------------------------------


def all_bands(instrument: Instrument | None = None) -> tuple[str, ...]:
    """Every band of the instrument file, in file order (the order of every output).

    Parameters
    ----------
    instrument : csstz.instrument.Instrument, optional
        Default: the packaged CSST description.
    """
    if instrument is None:
        from .instrument import default_instrument

        instrument = default_instrument()
    return instrument.band_names


def network_bands(instrument: Instrument | None = None) -> tuple[str, ...]:
    """The bands a redshift estimator reads by default (``network.bands`` of the instrument file)."""
    if instrument is None:
        from .instrument import default_instrument

        instrument = default_instrument()
    return tuple(instrument.network_bands)


def order_bands(names: Iterable[str], instrument: Instrument | None = None) -> list[str]:
    """``names`` in instrument order, then any band the instrument does not know, sorted."""
    names = list(names)
    known = [b for b in all_bands(instrument) if b in names]
    return known + sorted(b for b in names if b not in known)


def parse_bands(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"GV,GI"`` (or a sequence) -> ``("GV", "GI")``; empty entries dropped."""
    if isinstance(text, str):
        return tuple(b.strip() for b in text.split(",") if b.strip())
    return tuple(str(b).strip() for b in text if str(b).strip())


def snr_column(band: str) -> str:
    """Catalogue column holding the SNR of ``band``."""
    return f"SNR_{band}"


SNR_TOTAL = "SNR_TOTAL"
SNR_DEFINITION = (
    "SNR_<band> = median over the band's valid pixels of flux/err; "
    "SNR_TOTAL = the same over the valid pixels of all bands"
)

# --- units (strings written into files) ----------------------------------------------------------
UNIT_WAVE = "Angstrom"
UNIT_FLAM17 = "1e-17 erg/s/cm^2/Angstrom"
UNIT_IMAGE2D = "electron (sum of exposures, sky and dark subtracted)"

# --- spectra file (HDF5) --------------------------------------------------------------------------
CATALOG_PATH = "catalog"
BAND_DATASETS = ("wave", "flux", "err")
IMAGE2D = "image2d"
#: Rows per HDF5 chunk of the flux/err datasets.
H5_ROW_CHUNK = 256
#: Optional per-band dataset: the noiseless extracted spectrum (train/val rows of a build; NaN elsewhere).
FLUX_NOISELESS = "flux_noiseless"
#: Catalogue column: per-object Cramer-Rao bound on z [z units] (docs/crb.md).
ZERR_CRB = "ZERR_CRB"

# --- input catalogue (FITS) of `csstz simulate` ---------------------------------------------------
INPUT_HDUS = ("CATALOG", "WAVELENGTH", "FLUX")
MORPH_COLUMNS = ("TARGETID", "Z", "SHAPE_R", "SERSIC", "BA", "PA")
#: Sersic indices GalSim can render (GalSim's documented 0.3 <= n <= 6.2; LS DR9 fits lie inside).
SERSIC_RANGE = (0.3, 6.2)
#: The redshift range of the method (arXiv:2407.13991: 0 < z < 1.6).
Z_RANGE = (0.0, 1.6)

# --- splits -----------------------------------------------------------------------------------------
SPLIT_COLUMN = "SPLIT"
SPLITS = ("train", "val", "test")


def split_mask(catalog: Table, split: str | None, path: str | None = None) -> np.ndarray:
    """Boolean mask of the catalogue rows whose ``SPLIT`` equals ``split`` (all rows for None).

    Raises
    ------
    InputError
        ``split`` is given but the catalogue has no SPLIT column, or no row has it.
    """
    n = len(catalog)
    if split is None:
        return np.ones(n, bool)
    if SPLIT_COLUMN not in catalog.colnames:
        raise InputError(
            SPLIT_COLUMN,
            "catalogue has no SPLIT column (use a `csstz build` dataset)",
            path=None if path is None else str(path),
        )
    col = np.asarray(catalog[SPLIT_COLUMN])
    if col.dtype.kind == "S":
        col = np.char.decode(col, "ascii")
    mask = np.char.strip(col.astype(str)) == split
    if not mask.any():
        raise InputError(
            SPLIT_COLUMN,
            f"no rows with SPLIT == {split!r}",
            path=None if path is None else str(path),
            allowed=", ".join(SPLITS),
        )
    return mask


def select_split(catalog: Table, split: str | None, path: str | None = None) -> np.ndarray:
    """Sorted row indices of ``catalog`` in ``split`` (all rows for None); see :func:`split_mask`."""
    return np.flatnonzero(split_mask(catalog, split, path))


# --- run directory (written by `csstz train`) --------------------------------------------------
CNN_FILE = "cnn.pt"
BNN_FILE = "bnn.pt"
CALIBRATION_FILE = "calibration.json"
SUMMARY_FILE = "summary.json"
FINGERPRINT_FILE = "run_fingerprint.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
MODEL_KINDS = ("pz", "bnn", "cnn")
#: Estimators `csstz train` can train: the default p(z) network, or the paper's CNN + Bayesian head.
ESTIMATORS = ("pz", "paper")
#: The p(z) network's model file and its physics stage (learned basis + grid) in a run directory.
PZ_FILE = "pz.pt"
PZ_PHYSICS_FILE = "pz_physics.h5"
#: the non-negative locator's templates (optional: runs trained before 0.10.0, or with --pz-locator prior, lack it)
PZ_LOCATOR_FILE = "pz_locator.fits"
#: Version of the run-directory format (files and their keys), independent of the package version; a run
#: of another version is refused by predict with one line naming both.
RUN_FORMAT_VERSION = 4

# --- predictions file (FITS) ---------------------------------------------------------------------
PRED_HDU = "REDSHIFTS"
PRED_REQUIRED = ("TARGETID", "Z", "ZERR", "ZWARN")
#: Optional predictions HDUs: p(z) (N x K float32, density per unit z, trapezoid-normalised on the grid)
#: and its grid (K float64, strictly increasing); docs/formats.md.
PZ_HDU = "PZ"
PZ_GRID_HDU = "PZ_GRID"
#: Largest |trapezoid integral - 1| accepted for a PZ row (float32 storage rounds at ~1e-7).
NORM_TOL = 1e-3


def check_pz_grid(z_grid: ArrayLike, name: str = "PZ_GRID") -> np.ndarray:
    """The grid as float64 (K,), K >= 2, finite and strictly increasing; else InputError naming ``name``."""
    g = np.asarray(z_grid, np.float64)
    if g.ndim != 1 or g.size < 2:
        raise InputError(name, "must be a 1D grid of >= 2 redshifts", value=g.shape)
    bad = np.flatnonzero(~np.isfinite(g))
    if bad.size:
        raise InputError(name, "non-finite grid value", row=int(bad[0]), value=float(g[bad[0]]))
    step = np.flatnonzero(np.diff(g) <= 0)
    if step.size:
        raise InputError(
            name,
            "must be strictly increasing",
            row=int(step[0]) + 1,
            value=float(g[step[0] + 1]),
            allowed=f"> {g[step[0]]:.6g}",
        )
    return g


def check_pz_shape(shape: tuple, n_grid: int, n_rows: int | None = None) -> None:
    """InputError naming PZ unless ``shape`` is (``n_rows`` or any N, ``n_grid``)."""
    shape = tuple(shape)
    if len(shape) != 2 or shape[1] != n_grid or (n_rows is not None and shape[0] != n_rows):
        raise InputError(
            "PZ",
            "shape does not match (N predictions, K = len(PZ_GRID))",
            value=shape,
            allowed=f"({'N' if n_rows is None else n_rows}, {n_grid})",
        )


def check_pz(
    pz: ArrayLike,
    z_grid: ArrayLike,
    n_rows: int | None = None,
    allow_nan_rows: ArrayLike | None = None,
    tol: float = NORM_TOL,
    row_offset: int = 0,
) -> None:
    """Validate a gridded p(z) against the predictions contract; InputError on the first problem.

    Parameters
    ----------
    pz : array (N, K)
        Densities per unit z.
    z_grid : array (K,)
        Strictly increasing redshifts.
    n_rows : int, optional
        Required N (the predictions table's rows).
    allow_nan_rows : bool array (N,), optional
        Rows that may be entirely NaN (objects without a result, flagged with ZWARN != 0).
    tol : float
        Accepted |trapezoid integral - 1|.
    row_offset : int
        Index of ``pz``'s first row in the whole table (a block checked on its own): added to the row
        an error names.

    Raises
    ------
    InputError
        Field ``PZ_GRID`` (not 1D, non-finite, not increasing) or ``PZ`` (shape mismatch, non-finite,
        negative or non-normalised row), with the row and the bad value.
    """
    g = check_pz_grid(z_grid)
    p = np.asarray(pz)
    check_pz_shape(p.shape, g.size, n_rows)
    p = p.astype(np.float64)
    nan_row = np.isnan(p).all(axis=1)
    if allow_nan_rows is not None:
        nan_row &= np.asarray(allow_nan_rows, bool)
    else:
        nan_row[:] = False
    live = ~nan_row
    bad = np.flatnonzero(live & ~np.isfinite(p).all(axis=1))
    if bad.size:
        raise InputError(
            "PZ",
            "non-finite density (only rows with ZWARN != 0 may be all NaN)",
            row=row_offset + int(bad[0]),
            value=float(p[bad[0]][~np.isfinite(p[bad[0]])][0]),
        )
    neg = np.flatnonzero(live & (np.where(live[:, None], p, 0.0) < 0).any(axis=1))
    if neg.size:
        raise InputError(
            "PZ", "negative density", row=row_offset + int(neg[0]), value=float(p[neg[0]].min()), allowed=">= 0"
        )
    q = np.where(live[:, None], p, 0.0)
    area = (0.5 * (q[:, 1:] + q[:, :-1]) * np.diff(g)).sum(axis=1)
    off = np.flatnonzero(live & ~(np.abs(area - 1.0) <= tol))
    if off.size:
        raise InputError(
            "PZ",
            "row not normalised (trapezoid integral over PZ_GRID)",
            row=row_offset + int(off[0]),
            value=round(float(area[off[0]]), 6),
            allowed=f"1 +- {tol:g}",
        )


#: Central probabilities of the 1- and 2-sigma intervals written as Z_LO68/Z_HI68 and Z_LO95/Z_HI95.
P68 = 0.6826894921370859
P95 = 0.9544997361036416
INTERVALS = (("68", P68), ("95", P95))

# --- report ---------------------------------------------------------------------------------------
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"

__all__ = [
    name
    for name in dir()
    if name.isupper()
    or name
    in (
        "all_bands",
        "network_bands",
        "order_bands",
        "parse_bands",
        "snr_column",
        "split_mask",
        "select_split",
        "check_pz",
        "check_pz_grid",
        "check_pz_shape",
    )
]
