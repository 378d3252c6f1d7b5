"""Type aliases used in annotations across csstz.

Modules import these under ``typing.TYPE_CHECKING`` only (every module uses ``from __future__ import
annotations``), so the aliases cost nothing at run time and pull in no optional dependency.
"""

from __future__ import annotations

import os
from typing import TypeAlias

from numpy.typing import ArrayLike

#: A file-system path: a string or anything with ``__fspath__`` (``pathlib.Path``).
PathLike: TypeAlias = str | os.PathLike[str]

__all__ = ["ArrayLike", "PathLike"]
