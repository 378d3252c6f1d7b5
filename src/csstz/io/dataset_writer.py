"""Chunked, resumable writing of a dataset in the spectra-file layout.

A build of N galaxies is cut into chunks of ``chunk`` rows. Each finished chunk
is written atomically as its own small HDF5 file in the directory
``OUT.partial/`` and recorded, with its SHA-256, in ``OUT.partial/manifest.json``
(replaced atomically after every chunk). The manifest also holds a fingerprint
of the build's arguments.

* Killed at any point, nothing recorded is lost: a chunk file is either
  complete and recorded, or it is not recorded and is computed again.
* On resume the fingerprint must match (else :class:`FileFormatError`: the
  partial build belongs to other arguments) and each recorded chunk must match
  its checksum; a chunk that does not (truncated, corrupt, missing) is dropped
  from the record with a warning and computed again; a manifest that cannot be
  read is a :class:`FileFormatError` and nothing is deleted.
* :meth:`ChunkedDatasetWriter.finalize` streams the chunks, in row order, into
  one spectra file (``csstz.io.spectra`` layout) written atomically to OUT, then
  removes ``OUT.partial/``. Memory use is one chunk at a time.

The same chunks give the same bytes: datasets are written without time stamps
and in a fixed order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import FileFormatError
from ..schema import CATALOG_PATH, FLUX_NOISELESS, order_bands
from .atomic import atomic_path
from .spectra import create_band_group, write_attrs

if TYPE_CHECKING:
    from .._types import PathLike

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the chunks of an N-row build."""
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


class ChunkedDatasetWriter:
    """Write a dataset chunk by chunk into ``OUT.partial/``, then assemble OUT.

    Parameters
    ----------
    out_path : path-like
        Final dataset file (HDF5).
    n_rows : int
        Total number of rows N.
    chunk : int
        Rows per chunk.
    fingerprint : dict
        JSON-serialisable description of the build's arguments; a partial build
        is resumed only under the same fingerprint.

    Raises
    ------
    FileFormatError
        An existing partial build is unreadable or belongs to another fingerprint.
    """

    def __init__(self, out_path: PathLike, n_rows: int, chunk: int, fingerprint: dict) -> None:
        self.out_path = Path(out_path)
        self.partial_dir = Path(str(self.out_path) + ".partial")
        self.bounds = chunk_bounds(int(n_rows), int(chunk))
        self.n_rows = int(n_rows)
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.done: dict[int, str] = {}
        self._open()

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.partial_dir / MANIFEST

    def chunk_path(self, k: int) -> Path:
        return self.partial_dir / f"chunk_{k:06d}.h5"

    def _open(self) -> None:
        if not self.partial_dir.exists():
            self.partial_dir.mkdir(parents=True)
            self._save_manifest()
            return
        if not self.partial_dir.is_dir():
            raise FileFormatError(str(self.partial_dir), "exists and is not a partial-build directory")
        try:
            man = json.loads(self.manifest_path.read_text())
            fp, done = man["fingerprint"], man["done"]
            if man.get("version") != MANIFEST_VERSION or not isinstance(done, dict):
                raise ValueError("unknown manifest version")
        except FileNotFoundError:
            raise FileFormatError(
                str(self.manifest_path), f"partial build has no manifest; remove {self.partial_dir} to start again"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise FileFormatError(
                str(self.manifest_path),
                f"corrupt partial-build manifest ({exc}); remove {self.partial_dir} to start again",
            ) from None
        if fp != self.fingerprint:
            diff = sorted(k for k in set(fp) | set(self.fingerprint) if fp.get(k) != self.fingerprint.get(k))
            raise FileFormatError(
                str(self.partial_dir),
                "partial build made with other arguments "
                f"(differs in {', '.join(diff)}); rerun with the same arguments or remove it",
            )
        bad = []
        for key, digest in done.items():
            k = int(key)
            path = self.chunk_path(k)
            if k >= len(self.bounds) or not path.is_file() or _sha256(path) != digest:
                bad.append(k)
            else:
                self.done[k] = digest
        if bad:
            warnings.warn(
                f"{self.partial_dir}: chunk(s) {bad} failed verification and will be computed again",
                RuntimeWarning,
                stacklevel=2,
            )
            self._save_manifest()

    def _save_manifest(self) -> None:
        man = {
            "version": MANIFEST_VERSION,
            "fingerprint": self.fingerprint,
            "done": {str(k): v for k, v in sorted(self.done.items())},
        }
        tmp = self.partial_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(man, indent=1, sort_keys=True))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.manifest_path)

    # -- chunks ---------------------------------------------------------------------------------
    def pending(self) -> list[int]:
        """Indices of the chunks still to compute, in order."""
        return [k for k in range(len(self.bounds)) if k not in self.done]

    def write_chunk(self, k: int, bands: dict, catalog: np.ndarray) -> None:
        """Store chunk ``k`` (atomic) and record it.

        Parameters
        ----------
        bands : dict of str -> BandSpectra
            Spectra of the chunk's rows (flux/err shape (n_k, L)).
        catalog : structured ndarray, shape (n_k,)
            The chunk's catalogue rows.

        Raises
        ------
        FileFormatError
            Row counts disagree with the chunk's range.
        """
        start, stop = self.bounds[k]
        n_k = stop - start
        if len(catalog) != n_k:
            raise FileFormatError(str(self.chunk_path(k)), f"chunk {k}: {len(catalog)} catalogue rows, expected {n_k}")
        with atomic_path(self.chunk_path(k)) as tmp:
            with h5py.File(tmp, "w") as h5:
                for name in sorted(bands):
                    b = bands[name]
                    if b.flux.shape != (n_k, len(b.wave_aa)) or b.err.shape != b.flux.shape:
                        raise FileFormatError(
                            str(self.chunk_path(k)),
                            f"band {name}: shape {b.flux.shape}, expected ({n_k}, {len(b.wave_aa)})",
                        )
                    create_band_group(
                        h5,
                        name,
                        b.wave_aa,
                        n_k,
                        b.flux,
                        b.err,
                        chunked=False,
                        flux_noiseless=getattr(b, "flux_noiseless", None),
                    )
                h5.create_dataset(CATALOG_PATH, data=catalog, track_times=False)
                h5.attrs["chunk"] = k
                h5.attrs["row_start"] = start
                h5.attrs["row_stop"] = stop
        self.done[k] = _sha256(self.chunk_path(k))
        self._save_manifest()

    # -- final file -----------------------------------------------------------------------------
    def finalize(self, attrs: dict) -> Path:
        """Assemble all chunks into OUT (atomic) and remove the partial directory.

        Parameters
        ----------
        attrs : dict
            Root attributes (str, numbers; dicts/lists are stored as JSON).

        Raises
        ------
        FileFormatError
            A chunk is missing, or chunks disagree in layout.
        """
        missing = self.pending()
        if missing:
            raise FileFormatError(str(self.partial_dir), f"chunks {missing[:10]} not built yet")
        first = self.chunk_path(0)
        with h5py.File(first, "r") as h5:
            names = order_bands(k for k in h5 if k != CATALOG_PATH)
            waves = {b: h5[b]["wave"][:] for b in names}
            noiseless = {b: FLUX_NOISELESS in h5[b] for b in names}
            cat_dtype = h5[CATALOG_PATH].dtype
        n = self.n_rows
        with atomic_path(self.out_path) as tmp:
            with h5py.File(tmp, "w") as out:
                dsets = {}
                for b in names:
                    g = create_band_group(out, b, waves[b], n, with_noiseless=noiseless[b])
                    dsets[b] = (g["flux"], g["err"], g[FLUX_NOISELESS] if noiseless[b] else None)
                cat = out.create_dataset(CATALOG_PATH, shape=(n,), dtype=cat_dtype, track_times=False)
                for k, (start, stop) in enumerate(self.bounds):
                    path = self.chunk_path(k)
                    if _sha256(path) != self.done[k]:
                        raise FileFormatError(str(path), "chunk changed since it was verified; rerun the build")
                    with h5py.File(path, "r") as h5:
                        if h5[CATALOG_PATH].dtype != cat_dtype:
                            raise FileFormatError(str(path), "catalogue columns differ from chunk 0")
                        cat[start:stop] = h5[CATALOG_PATH][:]
                        for b in names:
                            if not np.array_equal(h5[b]["wave"][:], waves[b]):
                                raise FileFormatError(str(path), f"band {b} wavelength grid differs from chunk 0")
                            dsets[b][0][start:stop] = h5[b]["flux"][:]
                            dsets[b][1][start:stop] = h5[b]["err"][:]
                            if (FLUX_NOISELESS in h5[b]) != noiseless[b]:
                                raise FileFormatError(
                                    str(path), f"band {b}: {FLUX_NOISELESS} present in one chunk and not in chunk 0"
                                )
                            if noiseless[b]:
                                dsets[b][2][start:stop] = h5[b][FLUX_NOISELESS][:]
                write_attrs(out, attrs)
        shutil.rmtree(self.partial_dir)
        return self.out_path


__all__ = ["ChunkedDatasetWriter", "chunk_bounds"]
