"""Network input from a spectra file: the only torch module of ``csstz.io``.

Input representation (docs/design.md: GV and GI, flux and error as two channels)
-------------------------------------------------------------------------------------
The chosen bands (default GV, GI) are concatenated, in the order given, into one
fixed-length sequence of ``L = sum(L_band)`` pixels (464 + 462 = 926 for the default
instrument). Each spectrum becomes an array ``x`` of shape ``(2, L)``:

* a pixel is *valid* where its ``err`` is finite and > 0 and its ``flux`` is finite;
* ``scale`` = the median ``err`` over the spectrum's valid pixels (a robust per-spectrum
  noise level, 1e-17 erg/s/cm^2/A); it does not depend on the flux, so the Gaussian
  augmentation below leaves it unchanged, and the flux channel carries the SNR;
* channel 0 = ``flux / scale`` (dimensionless, ~ per-pixel SNR), clipped to
  ``[-CLIP, CLIP]``; channel 1 = ``err / scale`` (~1 on typical pixels);
* a masked (invalid) pixel gets flux channel 0 and error channel ``ERR_SENTINEL`` = -1,
  a value no valid pixel can take (valid errors are > 0);
* a spectrum without any valid pixel becomes all flux 0 / err sentinel (flagged later
  by ``predict`` through its count of valid pixels).

Augmentation (docs/design.md): a training spectrum is replaced, every time it is
seen, by ``flux + N(0, err)`` on its valid pixels (in the normalised units, which is the
same because the scale is fixed). The draw comes from torch's global generator, which
Lightning seeds per worker, so a run is reproducible from its seed and the copies are
never stored.

Streaming: :class:`SpectraDataset` keeps only row indices; the HDF5 file is opened
lazily in each process (DataLoader worker) on first access, and a batch is read with
one sorted fancy-indexed read per band, so memory is flat in the dataset size.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from ..errors import FileFormatError, InputError
from ..schema import network_bands
from .spectra import open_spectra, read_catalog

if TYPE_CHECKING:
    from .._types import ArrayLike, PathLike

#: Error-channel value of masked pixels (valid normalised errors are > 0).
ERR_SENTINEL = -1.0
#: Clip of the normalised flux channel (|flux/err_median| above this carries no extra z information).
CLIP = 1.0e3


def normalise(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn concatenated flux/err rows into network input.

    Parameters
    ----------
    flux, err : ndarray, shape (N, L)
        Concatenated band spectra, 1e-17 erg/s/cm^2/A; err not finite (or <= 0) = no data.

    Returns
    -------
    x : ndarray, shape (N, 2, L), float32
        Channel 0 normalised flux, channel 1 normalised error (``ERR_SENTINEL`` where masked).
    n_valid : ndarray, shape (N,), int32
        Number of valid pixels per spectrum.
    """
    flux = np.asarray(flux, np.float64)
    err = np.asarray(err, np.float64)
    if flux.shape != err.shape or flux.ndim != 2:
        raise InputError("flux", f"flux {flux.shape} and err {err.shape} must be equal 2-d shapes")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(err) & (err > 0) & np.isfinite(flux)
    n_valid = valid.sum(axis=1).astype(np.int32)
    scale = np.ones(flux.shape[0])
    some = n_valid > 0
    if some.any():
        scale[some] = np.nanmedian(np.where(valid[some], err[some], np.nan), axis=1)
    scale = scale[:, None]
    x = np.empty((flux.shape[0], 2, flux.shape[1]), np.float32)
    x[:, 0] = np.where(valid, np.clip(flux / scale, -CLIP, CLIP), 0.0)
    x[:, 1] = np.where(valid, err / scale, ERR_SENTINEL)
    return x, n_valid


def augment(x: torch.Tensor) -> torch.Tensor:
    """One Gaussian realisation: flux + N(0, err) on valid pixels (new tensor).

    Parameters
    ----------
    x : Tensor, shape (B, 2, L)
        Normalised input from :func:`normalise`.
    """
    err = x[:, 1]
    sigma = torch.where(err > 0, err, torch.zeros_like(err))
    out = x.clone()
    out[:, 0] = x[:, 0] + sigma * torch.randn_like(sigma)
    return out


class SpectraDataset(torch.utils.data.Dataset):
    """Rows of a spectra file as network input, streamed from HDF5.

    Parameters
    ----------
    path : path-like
        Spectra/dataset HDF5 file.
    rows : ndarray of int, shape (M,)
        Row indices of the file that make up this dataset.
    bands : sequence of str, optional
        Bands concatenated into the input (default: the instrument file's ``network.bands``).
    augment : bool
        Draw a fresh Gaussian realisation each time an item is fetched.

    Items are ``(x, z)``: x (2, L) float32 and z () float32 (the catalogue Z; NaN where
    the file has no Z column). :meth:`__getitems__` fetches a batch with one read per band.
    """

    def __init__(
        self, path: PathLike, rows: np.ndarray, bands: tuple[str, ...] | None = None, augment: bool = False
    ) -> None:
        self.path = str(path)
        self.rows = np.asarray(rows, np.int64)
        self.bands = tuple(bands) if bands is not None else network_bands()
        self.augment = bool(augment)
        with open_spectra(self.path) as h5:
            lengths = []
            for b in self.bands:
                if b not in h5 or "flux" not in h5[b] or "err" not in h5[b]:
                    raise FileFormatError(self.path, f"band /{b} (flux, err) missing; bands requested {self.bands}")
                lengths.append(h5[b]["flux"].shape[1])
                n_file = h5[b]["flux"].shape[0]
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n_file):
            raise InputError("rows", "row index outside the file", allowed=f"0..{n_file - 1}")
        self.length = int(sum(lengths))
        cat = read_catalog(self.path)
        self.z = (
            np.asarray(cat["Z"], np.float32)[self.rows]
            if "Z" in cat.colnames
            else np.full(self.rows.size, np.nan, np.float32)
        )
        self.targetid = np.asarray(cat["TARGETID"], np.int64)[self.rows]
        self._h5 = None
        self._pid = None

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getstate__(self) -> dict:  # an open h5py handle cannot cross a process boundary
        state = dict(self.__dict__)
        state["_h5"] = None
        state["_pid"] = None
        return state

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_spectra(self.path)
            self._pid = os.getpid()
        return self._h5

    def read(self, idx: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Normalised input and valid-pixel counts of dataset items ``idx`` (no augmentation).

        Returns
        -------
        x : ndarray, shape (len(idx), 2, L), float32
        n_valid : ndarray, shape (len(idx),), int32
        """
        idx = np.asarray(idx, np.int64)
        file_rows = self.rows[idx]
        order = np.argsort(file_rows, kind="stable")
        sorted_rows = file_rows[order]
        uniq, inverse = np.unique(sorted_rows, return_inverse=True)
        h5 = self._file()
        flux, err = [], []
        for b in self.bands:
            g = h5[b]
            if uniq.size and uniq[-1] - uniq[0] + 1 == uniq.size:  # contiguous: plain slice
                sl = slice(int(uniq[0]), int(uniq[-1]) + 1)
                flux.append(g["flux"][sl])
                err.append(g["err"][sl])
            else:
                flux.append(g["flux"][uniq])
                err.append(g["err"][uniq])
        x, nv = normalise(np.concatenate(flux, axis=1), np.concatenate(err, axis=1))
        x, nv = x[inverse], nv[inverse]
        out_x = np.empty_like(x)
        out_n = np.empty_like(nv)
        out_x[order] = x
        out_n[order] = nv
        return out_x, out_n

    def __getitems__(self, idx: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.read(idx)
        xt = torch.from_numpy(x)
        if self.augment:
            xt = augment(xt)
        return xt, torch.from_numpy(self.z[np.asarray(idx, np.int64)])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, z = self.__getitems__([int(i)])
        return x[0], z[0]


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate for DataLoader: ``__getitems__`` already returns stacked tensors."""
    return batch


__all__ = ["normalise", "augment", "SpectraDataset", "collate_batch", "ERR_SENTINEL", "CLIP"]
