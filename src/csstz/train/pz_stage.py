"""Training of the p(z) network (``csstz train --model pz``).

Each training step:

1. takes a batch of training rows (blocks of rows read from the HDF5 file in a
   shuffled order, so memory is flat in dataset size);
2. draws a fresh noise realisation at the true level from the stored noiseless
   spectrum and its errors (``flux_noiseless + N(0, err)``), so no sample is seen
   twice and training noise equals test noise; datasets without noiseless arrays
   train on the stored noisy flux with no extra noise (a warning says so);
3. turns the spectra into physics curves on the redshift grid
   (:class:`csstz.templates.physics.PhysicsCurves`, torch-free);
4. updates every ensemble member of :class:`csstz.models.pz.PzNet` with the
   cross-entropy against a narrow target around the true redshift.

Validation always reads the stored noisy flux of the validation split; the
checkpoint with the lowest validation loss is kept (early stopping after
``patience`` evaluations without improvement, counted only after the schedule's
midpoint). The test split is never read.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError
from ..models.pz import PzNet, ensemble_loss, soft_target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from .._types import PathLike
    from ..config import PzConfig
    from ..templates.physics import PhysicsCurves

log = logging.getLogger(__name__)

#: Ridge of the feature covariance, relative to its mean variance (project choice: keeps the precision finite
#: where channels are constant; 1e-6 changes no distance that matters).
FEATURE_RIDGE = 1e-6


@dataclass
class Batch:
    """Network input for B spectra.

    Attributes
    ----------
    curves : ndarray, shape (B, C, K), float32
    scalars : ndarray, shape (B, S), float32
    z : ndarray, shape (B,)
        True redshift (NaN where unknown).
    """

    curves: np.ndarray
    scalars: np.ndarray
    z: np.ndarray


def _tensors(batch: Batch, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(batch.curves).to(device),
        torch.from_numpy(batch.scalars).to(device),
        torch.from_numpy(np.asarray(batch.z, np.float32)).to(device),
    )


def make_network(physics: PhysicsCurves, cfg: PzConfig, log_prior: np.ndarray | None) -> PzNet:
    """The :class:`PzNet` of a config on a physics stage's grid."""
    return PzNet(
        len(physics.grid_z),
        physics.n_curves,
        physics.n_scalars,
        members=cfg.members,
        hidden=cfg.hidden,
        stride=cfg.stride,
        kernel=cfg.kernel,
        dilations=tuple(cfg.dilations),
        log_prior=None if log_prior is None else torch.as_tensor(log_prior, dtype=torch.float32),
    )


@torch.no_grad()
def evaluate(net: PzNet, batches: list[Batch], grid_lnz: torch.Tensor, width: float, device: str) -> dict:
    """Mean cross-entropy, and sigma_NMAD and eta of the mixture's grid mode, over (validation) batches.

    The point metrics use the grid maximum without refinement and no calibration: they trace the
    learning curve, the final numbers come from ``csstz predict``.
    """
    from ..evaluate.metrics import outlier_fraction, sigma_nmad

    net.eval()
    tot, n, zp, zt = 0.0, 0, [], []
    for b in batches:
        c, s, z = _tensors(b, device)
        lg = net(c, s)
        tot += float(ensemble_loss(lg, soft_target(z, grid_lnz, width))) * len(z)
        n += len(z)
        zp.append(torch.expm1(grid_lnz[torch.softmax(lg, dim=-1).mean(dim=1).argmax(dim=-1)]).cpu().numpy())
        zt.append(z.cpu().numpy())
    net.train()
    out = {"loss": tot / max(n, 1), "sigma_nmad": None, "eta": None}
    zp_a, zt_a = np.concatenate(zp) if zp else np.zeros(0), np.concatenate(zt) if zt else np.zeros(0)
    ok = np.isfinite(zt_a)
    if ok.sum():
        out.update(sigma_nmad=float(sigma_nmad(zp_a[ok], zt_a[ok])), eta=float(outlier_fraction(zp_a[ok], zt_a[ok])))
    return out


def fit_network(
    net: PzNet,
    train_batches: Iterator[Batch],
    val_batches: list[Batch],
    grid_lnz: np.ndarray,
    cfg: PzConfig,
    device: str = "cpu",
    progress: Callable[[int], Any] | None = None,
) -> dict:
    """Optimise ``net`` on an iterator of training batches; keep the best validation state.

    Parameters
    ----------
    net : PzNet
    train_batches : iterator of Batch
        Endless (fresh noise every time); consumed until ``cfg.max_samples`` samples.
    val_batches : list of Batch
        Fixed validation batches.
    grid_lnz : ndarray, shape (K,)
        ln(1 + z) of the grid.
    cfg : csstz.config.PzConfig
        ``lr``, ``max_samples``, ``eval_every``, ``patience``, ``target_width`` (grid steps).

    Returns
    -------
    dict
        ``history`` (samples seen, train loss, val loss, elapsed s), ``best_val_loss``,
        ``samples_seen``, ``samples_per_s``.
    """
    if cfg.max_samples < 1 or cfg.eval_every < 1:
        raise ConfigError("max_samples", "must be >= 1", value=cfg.max_samples)
    net.to(device).train()
    grid_t = torch.as_tensor(grid_lnz, dtype=torch.float32, device=device)
    width = float(cfg.target_width) * float(np.median(np.diff(grid_lnz)))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(2, cfg.max_samples // cfg.batch_size + 2), pct_start=0.1
    )
    ev0 = evaluate(net, val_batches, grid_t, width, device)
    best = {"loss": ev0["loss"], "state": None, "samples": 0}
    history = [
        {
            "samples": 0,
            "train_loss": None,
            "val_loss": best["loss"],
            "val_sigma_nmad": ev0["sigma_nmad"],
            "val_eta": ev0["eta"],
            "elapsed_s": 0.0,
        }
    ]
    seen, since_eval, bad_evals, run_loss, run_n = 0, 0, 0, 0.0, 0
    t0 = time.perf_counter()
    t_train = 0.0
    for batch in train_batches:
        ts = time.perf_counter()
        c, s, z = _tensors(batch, device)
        loss = ensemble_loss(net(c, s), soft_target(z, grid_t, width))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        if sched.last_epoch + 1 < sched.total_steps:
            sched.step()
        t_train += time.perf_counter() - ts
        n = len(z)
        seen += n
        since_eval += n
        run_loss += float(loss.detach()) * n
        run_n += n
        if progress is not None:
            progress(n)
        if since_eval >= cfg.eval_every or seen >= cfg.max_samples:
            ev = evaluate(net, val_batches, grid_t, width, device)
            vl = ev["loss"]
            history.append(
                {
                    "samples": seen,
                    "train_loss": run_loss / run_n,
                    "val_loss": vl,
                    "val_sigma_nmad": ev["sigma_nmad"],
                    "val_eta": ev["eta"],
                    "elapsed_s": round(time.perf_counter() - t0, 2),
                }
            )
            log.info("pz: %d samples, train %.4f, val %.4f, eta %s", seen, run_loss / run_n, vl, ev["eta"])
            since_eval, run_loss, run_n = 0, 0.0, 0
            if vl < best["loss"] - 1e-4:
                best = {
                    "loss": vl,
                    "state": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                    "samples": seen,
                }
                bad_evals = 0
            elif seen > cfg.max_samples // 2:
                # patience counts only after the one-cycle schedule's midpoint (learning rate below ~60% of its
                # peak): before that the validation loss plateaus by design (a 2M-sample schedule evaluated every
                # 50k stopped at 853k samples, its learning rate still at ~0.7 of the peak)
                bad_evals += 1
            if bad_evals >= cfg.patience or seen >= cfg.max_samples:
                break
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    elapsed = time.perf_counter() - t0
    return {
        "history": history,
        "best_val_loss": best["loss"],
        "best_samples": best["samples"],
        "samples_seen": seen,
        "elapsed_s": round(elapsed, 2),
        "samples_per_s": round(seen / max(elapsed, 1e-9), 1),
        "network_samples_per_s": round(seen / max(t_train, 1e-9), 1),
    }


def noiseless_warning(path: PathLike) -> None:
    """Say once that a dataset without noiseless spectra trains on its stored noise."""
    warnings.warn(
        f"{path}: no flux_noiseless arrays (an older dataset); training on the stored noisy flux with no extra noise",
        stacklevel=2,
    )


def fit_feature_density(net: PzNet, batches: list[Batch]) -> dict:
    """Fit the Gaussian density of the pooled network features (:meth:`PzNet.forward_features`) of fixed
    batches of training spectra and store it in ``net``; returns its summary.

    The covariance gets a ridge of ``FEATURE_RIDGE`` times its mean variance (features of dead channels are
    constant) before it is inverted; with fewer than twice as many spectra as features only its diagonal is kept.
    """
    net.eval()
    with torch.no_grad():
        feats = torch.cat(
            [net.forward_features(torch.from_numpy(b.curves), torch.from_numpy(b.scalars))[1] for b in batches]
        ).to(torch.float64)
    n, nf = feats.shape
    if n < 2:
        raise ConfigError("feature density", "needs at least 2 training spectra", value=n)
    mean = feats.mean(0)
    cov = torch.cov(feats.T).reshape(nf, nf)
    full = n >= 2 * nf  # too few spectra for a full covariance: its diagonal only
    if not full:
        cov = torch.diag(torch.diagonal(cov))
    cov = cov + FEATURE_RIDGE * torch.trace(cov) / nf * torch.eye(nf, dtype=torch.float64) + 1e-300
    net.set_feature_density(mean, torch.linalg.inv(cov))
    d2 = net.feature_distance(feats)
    return {
        "n_spectra": int(n),
        "n_features": int(nf),
        "covariance": "full" if full else "diagonal",
        "train_median_distance2": float(d2.median()),
    }


__all__ = ["Batch", "make_network", "fit_network", "fit_feature_density", "evaluate", "noiseless_warning"]
