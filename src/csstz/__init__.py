"""csstz: redshifts from CSST slitless spectra (arXiv:2407.13991, as a package)."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("csstz")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
