"""The run directory written by ``csstz train`` (names in :mod:`csstz.schema`; ``docs/formats.md``).

::

    RUN_DIR/cnn.pt                CNN model file (state_dict + config + version + meta)
    RUN_DIR/bnn.pt                frozen backbone + Bayesian head model file
    RUN_DIR/calibration.json      calibration fitted on the validation split
    RUN_DIR/summary.json          config, losses per epoch, validation scores, calibration, wall times
    RUN_DIR/config.yaml           the stage configuration of the run (readable with --config)
    RUN_DIR/run_fingerprint.json  dataset digest + config (a run is resumed only with the same)
    RUN_DIR/checkpoints/{cnn,bnn}/{best,last}.ckpt   Lightning checkpoints (resume)
    RUN_DIR/logs/                 CSV logs

Torch-free: JSON and YAML only; every write is atomic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import FileFormatError
from ..schema import SUMMARY_FILE
from .atomic import atomic_path


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=str))


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def read_summary(run_dir: str | Path) -> dict:
    """``summary.json`` of a run directory.

    Raises
    ------
    FileFormatError
        Missing or unreadable (not a ``csstz train`` run directory).
    """
    p = Path(run_dir) / SUMMARY_FILE
    if not p.is_file():
        raise FileFormatError(str(p), "run summary missing (is this a `csstz train` run directory?)")
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise FileFormatError(str(p), f"unreadable run summary ({exc})") from None


def update_summary(run_dir: str | Path, updates: dict) -> dict:
    """Merge ``updates`` into ``summary.json`` (dicts merged one level deep); return the result."""
    summary = read_summary(run_dir)
    for key, val in updates.items():
        if isinstance(val, dict) and isinstance(summary.get(key), dict):
            summary[key] = {**summary[key], **val}
        else:
            summary[key] = val
    write_json(Path(run_dir) / SUMMARY_FILE, summary)
    return summary


__all__ = ["read_summary", "update_summary", "write_json", "write_text"]
