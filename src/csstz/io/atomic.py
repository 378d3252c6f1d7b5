"""Atomic writes: write to a temporary sibling, rename over the target at the end.

A failure (bad input found half-way, a kill, a full disk) leaves any existing
file untouched and no partial output behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final destination. Its parent directory is created if needed.
    suffix : str, optional
        Suffix of the temporary name (defaults to the target's, so that
        format-sniffing writers such as astropy's still recognise it).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.tmp-", suffix=suffix if suffix is not None else final.suffix, dir=final.parent
    )
    os.close(fd)
    os.unlink(tmp)  # writers create it themselves (h5py, astropy refuse to overwrite otherwise)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
