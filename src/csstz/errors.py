"""Exception classes of csstz.

Every error raised for bad user input names the field (column, file, option),
and where it helps the row, the offending value and the allowed range, so that
the command line can print it as one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


class CsstzError(Exception):
    """Base class of all csstz errors."""


class InputError(CsstzError, ValueError):
    """A user-supplied value is invalid.

    Parameters
    ----------
    field : str
        Name of the column, option or parameter that is wrong.
    message : str
        What is wrong.
    row : int, optional
        Zero-based row index in a table, if the value comes from one.
    value : object, optional
        The offending value.
    allowed : str, optional
        The allowed range or set, in words.
    path : str, optional
        The file the value came from.
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        row: int | None = None,
        value: Any = None,
        allowed: str | None = None,
        path: str | None = None,
    ) -> None:
        self.field = field
        self.row = row
        self.value = value
        self.allowed = allowed
        self.path = path
        parts = []
        if path:
            parts.append(f"{path}:")
        where = f"column {field}" if row is not None else f"{field}"
        if row is not None:
            where += f", row {row}"
        parts.append(f"{where}: {message}")
        if value is not None:
            parts.append(f"(got {value!r}")
            parts[-1] += f"; allowed {allowed})" if allowed else ")"
        elif allowed:
            parts.append(f"(allowed {allowed})")
        super().__init__(" ".join(parts))


class FileFormatError(CsstzError, ValueError):
    """A file is missing, unreadable, corrupt or not in the expected layout."""

    def __init__(self, path: str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class ConfigError(InputError):
    """An instrument or stage configuration value is invalid."""


class MissingDependencyError(CsstzError, ImportError):
    """An optional dependency is not installed (the message names the extra to install)."""
