"""Small synthetic spectra files with known redshifts (for the estimator tests).

Each galaxy: a continuum with a 4000 A break (rest frame) and Gaussian emission lines
([OII] 3727, Hbeta 4861, [OIII] 5007, Halpha 6563 A rest; rest-frame sigma 3 A) at
(1+z) times their rest wavelength, plus Gaussian noise of the stated err; a few pixels
per spectrum are masked (err = inf). Written with csstz.io.spectra.write_spectra.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from csstz.io.spectra import BandSpectra, SpectraSet, write_spectra

# band grids of the default instrument (src/csstz/instrument/data/csst.yaml)
GRIDS_AA = {"GU": (2460.0, 4200.0, 4.0), "GV": (3810.0, 6588.0, 6.0), "GI": (6110.0, 10571.0, 9.676)}
LINES_AA = (3727.0, 4861.0, 5007.0, 6563.0)  # rest-frame vacuum-ish wavelengths of the lines


def make_dataset(
    path, n=600, seed=0, zmin=0.05, zmax=1.0, err_level=0.3, n_wave_scale=1.0, split_fracs=(0.8, 0.1, 0.1)
):
    """Write a synthetic dataset file with SPLIT column; returns the catalogue."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(zmin, zmax, n)
    bands = {}
    for name, (lo, hi, step) in GRIDS_AA.items():
        step = step / n_wave_scale
        wave = np.arange(lo, hi + 1e-9, step)
        rest = wave[None, :] / (1 + z[:, None])
        flux = np.where(rest > 4000.0, 1.0, 0.4) * rng.uniform(0.5, 2.0, (n, 1))
        amp = rng.uniform(2.0, 5.0, (n, len(LINES_AA)))
        for k, line in enumerate(LINES_AA):
            flux = flux + amp[:, k : k + 1] * np.exp(-0.5 * ((rest - line) / 3.0) ** 2)
        err = np.full(flux.shape, err_level) * rng.uniform(0.8, 1.2, flux.shape)
        noisy = flux + err * rng.standard_normal(flux.shape)
        mask = rng.random(flux.shape) < 0.02
        err[mask] = np.inf
        bands[name] = BandSpectra(wave, noisy.astype(np.float32), err.astype(np.float32))
    split = rng.choice(np.array(["train", "val", "test"]), size=n, p=split_fracs)
    cat = Table(
        {
            "TARGETID": np.arange(1000, 1000 + n, dtype=np.int64),
            "Z": z,
            "SHAPE_R": np.full(n, 0.3),
            "SERSIC": np.ones(n),
            "BA": np.ones(n),
            "PA": np.zeros(n),
            "SNR_GU": np.ones(n),
            "SNR_GV": np.ones(n),
            "SNR_GI": np.ones(n),
            "SNR_TOTAL": np.ones(n),
            "SPLIT": split,
        }
    )
    write_spectra(path, SpectraSet(bands, cat, {"csstz_version": "test", "seed": seed}))
    return cat
