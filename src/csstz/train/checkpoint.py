"""Model files: a state_dict, the config and the csstz version; nothing pickled.

A model file is a ``torch.save`` of a plain dict::

    {"kind": "cnn" | "bnn", "state_dict": {name: Tensor}, "config": {...}, "meta": {...},
     "csstz_version": str}

with only tensors, str, int, float, bool, None, lists and dicts inside, so that
``torch.load(path, weights_only=True)`` reads it. It is written atomically.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import __version__
from ..errors import FileFormatError
from ..io.atomic import atomic_path
from ..models.factory import build_bnn, build_cnn, build_pz
from ..schema import BNN_FILE, CNN_FILE

if TYPE_CHECKING:
    from .._types import PathLike


def save_model(path: PathLike, model: torch.nn.Module, kind: str, config: dict, meta: dict | None = None) -> Path:
    """Write ``model``'s state_dict with its config atomically to ``path``."""
    payload = {
        "kind": kind,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": dict(config),
        "meta": dict(meta or {}),
        "csstz_version": __version__,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_payload(path: PathLike) -> dict:
    """Read a model file with ``weights_only=True``.

    Raises
    ------
    FileFormatError
        Missing, unreadable, or not a csstz model file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "model file not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types, with pages of text, for foreign or corrupt files
        raise FileFormatError(str(p), f"not a csstz model file (torch.load failed: {type(exc).__name__})") from None
    if not isinstance(payload, dict) or not {"kind", "state_dict", "config"} <= set(payload):
        raise FileFormatError(str(p), "not a csstz model file (keys kind, state_dict, config missing)")
    return payload


def load_model(path: PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network of a model file (eval mode) and return it with the payload."""
    payload = load_payload(path)
    cfg = payload["config"]
    builders = {"cnn": build_cnn, "bnn": build_bnn, "pz": build_pz}
    if payload["kind"] not in builders:
        raise FileFormatError(str(path), f"unknown model kind {payload['kind']!r} (expected cnn, bnn or pz)")
    model = builders[payload["kind"]](cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise FileFormatError(str(path), f"weights do not match the stored config ({exc})") from None
    model.eval()
    return model, payload


def file_checksum(path: PathLike) -> str:
    """First 16 hex digits of the file's sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


__all__ = ["save_model", "load_payload", "load_model", "file_checksum", "CNN_FILE", "BNN_FILE"]
