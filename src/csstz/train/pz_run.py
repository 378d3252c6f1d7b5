"""``csstz train --model pz``: the physics stage and the p(z) network of one run directory.

Steps (docs/estimator.md):

1. the training split's rest-frame SEDs -> a PCA basis with its coefficient prior (K chosen on
   the validation split's SEDs) -> :class:`csstz.templates.physics.PhysicsCurves` on the
   instrument's network bands, saved as ``pz_physics.h5``;
2. the training split's redshifts -> a smoothed n(z) prior on the grid (a buffer of the network);
3. :func:`csstz.train.pz_stage.fit_network` on fresh noise draws of the noiseless training
   spectra (stored noisy flux for older datasets, with a warning), validation on the stored
   noisy validation spectra; best state kept;
4. the Gaussian density of the network's pooled features on ``FEATURE_DENSITY_ROWS`` training spectra
   (stored noisy flux), the OUT_OF_DISTRIBUTION statistic's reference, kept in the network's buffers;
   saved as ``pz.pt`` (state_dict + config + version).

Calibration (temperature and the out-of-distribution threshold) is a separate step
(:func:`csstz.calibrate.calibrate_pz_run`) run by :mod:`csstz.pipeline`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..config import PzConfig, TrainConfig
from ..models.pz import one_thread_beside_workers
from ..schema import CONFIG_FILE, PZ_FILE, PZ_LOCATOR_FILE, PZ_PHYSICS_FILE, RUN_FORMAT_VERSION, SUMMARY_FILE
from .pz_stage import Batch, fit_feature_density, fit_network, make_network, noiseless_warning

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .._types import PathLike
    from ..io.spectra import SpectraSet
    from ..templates.physics import PhysicsCurves

#: Spectra read from the file at once during training (memory flat in dataset size).
READ_BLOCK = 2048
#: Spectra per validation batch.
VAL_BATCH = 512
#: Training spectra whose pooled network features give the OUT_OF_DISTRIBUTION density (192 features per
#: spectrum at the default network; project choice).
FEATURE_DENSITY_ROWS = 4000


def _read(path: PathLike, bands: Sequence[str], rows: np.ndarray, noiseless: bool) -> SpectraSet:
    from ..io.spectra import read_spectra

    return read_spectra(path, bands=bands, rows=rows, with_noiseless=noiseless, with_catalog=False)


def has_noiseless(path: PathLike, bands: Sequence[str], rows: np.ndarray) -> bool:
    """True if the dataset stores noiseless spectra for (the first of) these rows."""
    try:
        sp = _read(path, bands, rows[:1], True)
    except TypeError:  # an io layer without noiseless support
        return False
    arr = getattr(sp.bands[bands[0]], "flux_noiseless", None)
    return arr is not None and bool(np.all(np.isfinite(arr)))


def _block_batches(
    path: PathLike,
    blk: np.ndarray,
    at: np.ndarray,
    bands: tuple,
    physics: PhysicsCurves,
    lsf_index: np.ndarray | None,
    z: np.ndarray,
    batch_size: int,
    seed_seq: list,
    noiseless: bool,
) -> list[Batch]:
    """The batches of one read block: rows ``blk`` (sorted; ``at`` their positions in the training arrays),
    shuffled and given fresh noise by a generator seeded with ``seed_seq`` alone (any process gives the same)."""
    rng = np.random.default_rng(seed_seq)
    sp = _read(path, bands, blk, noiseless)
    perm = rng.permutation(blk.size)
    out = []
    for b0 in range(0, blk.size - batch_size + 1, batch_size):
        sel = perm[b0 : b0 + batch_size]
        flux, err = {}, {}
        for b in bands:
            e = sp.bands[b].err[sel].astype(np.float64)
            if noiseless:
                sig = np.where(np.isfinite(e), e, 0.0)
                flux[b] = sp.bands[b].flux_noiseless[sel] + sig * rng.standard_normal(e.shape)
            else:
                flux[b] = sp.bands[b].flux[sel]
            err[b] = e
        idx = None if lsf_index is None else lsf_index[at[sel]]
        c, sc = physics.curves(flux, err, idx)
        out.append(Batch(c, sc, z[at[sel]]))
    return out


def train_batches(
    path: PathLike,
    rows: np.ndarray,
    bands: tuple,
    physics: PhysicsCurves,
    lsf_index: np.ndarray | None,
    z: np.ndarray,
    batch_size: int,
    seed: int,
    noiseless: bool,
    workers: int = 1,
) -> Iterator[Batch]:
    """Endless training batches: shuffled rows, a fresh noise draw per read (when ``noiseless``).

    ``lsf_index`` and ``z`` are indexed like ``rows``. ``workers`` > 1: that many forked processes compute
    the blocks' physics curves while the caller trains (:func:`csstz.parallel.forked_imap`, a few blocks
    ahead, so memory stays flat); the batches are the same for any number of workers.
    """
    from ..parallel import forked_imap

    rng = np.random.default_rng([int(seed), 20261202])
    pos = {int(r): i for i, r in enumerate(rows)}
    phys = physics.for_workers(workers)

    def tasks() -> Iterator[tuple]:
        epoch = 0
        while True:
            order = rng.permutation(rows)
            for i, s in enumerate(range(0, order.size, READ_BLOCK)):
                blk = np.sort(order[s : s + READ_BLOCK])
                yield blk, np.array([pos[int(r)] for r in blk]), [int(seed), 20261202, epoch, i]
            epoch += 1

    def block(task: tuple) -> list[Batch]:
        blk, at, seq = task
        return _block_batches(path, blk, at, bands, phys, lsf_index, z, batch_size, seq, noiseless)

    for batches in forked_imap(block, tasks(), workers):
        yield from batches


def fixed_batches(
    path: PathLike, rows: np.ndarray, bands: tuple, physics: PhysicsCurves, lsf_index: np.ndarray | None, z: np.ndarray
) -> list[Batch]:
    """Batches of the stored (noisy) spectra of ``rows``, in order (validation, calibration)."""
    out = []
    for s in range(0, rows.size, VAL_BATCH):
        sl = slice(s, s + VAL_BATCH)
        sp = _read(path, bands, rows[sl], False)
        idx = None if lsf_index is None else lsf_index[sl]
        c, sc = physics.curves({b: sp.bands[b].flux for b in bands}, {b: sp.bands[b].err for b in bands}, idx)
        out.append(Batch(c, sc, z[sl]))
    return out


def torch_device(accelerator: str) -> str:
    """The torch device of the p(z) network for ``--accelerator`` (one device; the physics curves stay on the CPU).

    Raises
    ------
    ConfigError
        ``gpu`` without a CUDA device.
    """
    import torch

    from ..errors import ConfigError

    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("accelerator", "no CUDA device is visible", value=accelerator)
        return "cuda"
    return "cpu"


def train_pz(dataset_path: PathLike, out_dir: PathLike, config: TrainConfig, pz: PzConfig) -> dict:
    """Train the default estimator into ``out_dir``; returns its summary (also ``summary.json``).

    Raises
    ------
    FileFormatError, InputError
        Unreadable dataset, missing splits (nothing is left on disk then).
    """
    import torch

    from ..config import to_yaml
    from ..instrument import load_instrument
    from ..io.run_dir import write_json, write_text
    from ..io.spectra import read_catalog, read_spectra
    from ..templates.physics import PhysicsCurves, learn_physics_basis
    from ..templates.xcorr import nz_log_prior
    from .checkpoint import save_model
    from .run import select_rows

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    cat = read_catalog(dataset_path)
    train_rows, val_rows = select_rows(dataset_path, config)
    inst = load_instrument(config.instrument)
    bands = tuple(config.bands)
    waves = {b: w.wave_aa for b, w in read_spectra(dataset_path, bands=bands, rows=train_rows[:1]).bands.items()}
    basis = learn_physics_basis(
        dataset_path,
        pz.n_components,
        seed=config.seed,
        n_mixture=pz.prior_mixture,
        line_ew_sd=pz.line_ew_sd,
        lines=pz.lines,
    )
    physics = PhysicsCurves(
        basis,
        waves,
        inst.psf_sigma_pix,
        pz.lsf,
        threads=pz.threads,
        coeff_curves=pz.coeff_curves,
        locator_lsf_scale=pz.locator_lsf_scale,
    )
    z_all = np.asarray(cat["Z"], np.float64)
    lsf_all = physics.lsf_index(cat, inst)
    lsf_tr = None if lsf_all is None else lsf_all[train_rows]
    lsf_va = None if lsf_all is None else lsf_all[val_rows]
    noiseless = has_noiseless(dataset_path, bands, train_rows)
    if not noiseless:
        noiseless_warning(dataset_path)
    log_prior = nz_log_prior(z_all[train_rows], physics.grid_z)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(
        out / CONFIG_FILE,
        to_yaml({"model": config.model, "optimiser": config.optimiser, "calibrate": config.calibrate, "pz": pz}),
    )
    physics.save(out / PZ_PHYSICS_FILE)
    if pz.locator == "nnls":  # the non-negative locator's basis (csstz.templates.locator), from the same SEDs' split
        from ..templates.locator import learn_locator_templates, write_locator_templates

        write_locator_templates(
            out / PZ_LOCATOR_FILE, learn_locator_templates(dataset_path, pz.locator_templates, seed=config.seed)
        )
    net = make_network(physics, pz, log_prior)
    val = fixed_batches(dataset_path, val_rows, bands, physics, lsf_va, z_all[val_rows])
    batches = train_batches(
        dataset_path,
        train_rows,
        bands,
        physics,
        lsf_tr,
        z_all[train_rows],
        pz.batch_size,
        config.seed,
        noiseless,
        workers=pz.workers,
    )
    device = torch_device(config.optimiser.accelerator)
    with one_thread_beside_workers(pz.workers if device == "cpu" else 1):
        fit = fit_network(net, batches, val, physics.grid_lnz, pz, device=device)
    net.to("cpu")
    # the OUT_OF_DISTRIBUTION density: pooled features of training spectra (stored noisy flux, like the data)
    dens_rows = np.sort(np.random.default_rng([config.seed, 7]).permutation(train_rows.size)[:FEATURE_DENSITY_ROWS])
    density = fit_feature_density(
        net,
        fixed_batches(
            dataset_path,
            train_rows[dens_rows],
            bands,
            physics,
            None if lsf_tr is None else lsf_tr[dens_rows],
            z_all[train_rows[dens_rows]],
        ),
    )
    net_cfg = {
        "n_grid": len(physics.grid_z),
        "n_curves": physics.n_curves,
        "n_scalars": physics.n_scalars,
        "members": pz.members,
        "hidden": pz.hidden,
        "stride": pz.stride,
        "kernel": pz.kernel,
        "dilations": list(pz.dilations),
        "bands": list(bands),
    }
    save_model(out / PZ_FILE, net, "pz", net_cfg, meta={"best_val_loss": fit["best_val_loss"]})
    summary = {
        "estimator": "pz",
        "run_format": RUN_FORMAT_VERSION,
        "csstz_version": __version__,
        "dataset": str(dataset_path),
        "bands": list(bands),
        "n_train": int(train_rows.size),
        "n_val": int(val_rows.size),
        "z_range": [float(z_all[train_rows].min()), float(z_all[train_rows].max())],
        "grid": {
            "n": len(physics.grid_z),
            "zmin": float(physics.grid_z[0]),
            "zmax": float(physics.grid_z[-1]),
            "dlnz": float(np.median(np.diff(physics.grid_lnz))),
        },
        "basis": {
            "name": basis.name,
            "n_components": basis.n_templates,
            "n_free_lines": int(basis.provenance.get("emission_lines", {}).get("n_templates", 0)),
            "emission_lines": basis.provenance.get("emission_lines"),
            "k_selection_val": basis.provenance.get("k_selection_val"),
        },
        "noise": "fresh draw from flux_noiseless + N(0, err) per read"
        if noiseless
        else "stored noisy flux (no flux_noiseless in the dataset)",
        "pz_config": pz.to_dict(),
        "fit": fit,
        "feature_density": density,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


__all__ = ["torch_device", "train_pz", "train_batches", "fixed_batches", "has_noiseless"]
