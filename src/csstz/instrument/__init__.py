"""The CSST slitless instrument: bands, throughput, dispersion, PSF, noise.

The numbers live in a YAML data file (``data/csst.yaml`` by default), each with
its source; :func:`load_instrument` validates them and returns frozen
dataclasses. Another file with the same keys works without code changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from ..errors import ConfigError, FileFormatError
from ..units import C_AA_PER_S, FLAM17, H_ERG_S

if TYPE_CHECKING:
    from .._types import ArrayLike

DEFAULT_INSTRUMENT = "csst.yaml"
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class Band:
    """One slitless band, first order.

    Attributes
    ----------
    name : str
    wave_min_aa, wave_max_aa : float
        Range of the extraction grid [A].
    dispersion_aa_per_pix : float
        Linear first-order dispersion [A/pixel].
    sky_e_per_s_per_pix : float
        Sky (zodiacal + earthshine) [e-/s/pixel].
    tp_wave_aa, tp_value : tuple of float
        Tabulated first-order total throughput (dimensionless) against
        wavelength [A]; linear interpolation in between, 0 outside.
    """

    name: str
    wave_min_aa: float
    wave_max_aa: float
    dispersion_aa_per_pix: float
    sky_e_per_s_per_pix: float
    tp_wave_aa: tuple = field(repr=False)
    tp_value: tuple = field(repr=False)

    @property
    def n_pix(self) -> int:
        """Number of pixels of the extraction grid."""
        return int(math.floor((self.wave_max_aa - self.wave_min_aa) / self.dispersion_aa_per_pix + 1e-9)) + 1

    @cached_property
    def wave_aa(self) -> np.ndarray:
        """Pixel-centre wavelengths of the extraction grid [A], shape (n_pix,)."""
        return self.wave_min_aa + self.dispersion_aa_per_pix * np.arange(self.n_pix, dtype=np.float64)

    def throughput(self, wave_aa: ArrayLike) -> np.ndarray:
        """First-order total throughput at ``wave_aa`` [A] (0 outside the table)."""
        return np.interp(np.asarray(wave_aa, float), self.tp_wave_aa, self.tp_value, left=0.0, right=0.0)

    @cached_property
    def peak_throughput(self) -> float:
        return float(np.max(self.tp_value))

    @property
    def tp_range_aa(self) -> tuple[float, float]:
        """Wavelength range where the tabulated throughput is non-zero [A]."""
        w = np.asarray(self.tp_wave_aa)
        nz = np.nonzero(np.asarray(self.tp_value) > 0)[0]
        return float(w[max(nz[0] - 1, 0)]), float(w[min(nz[-1] + 1, len(w) - 1)])


@dataclass(frozen=True)
class Instrument:
    """The whole instrument description (see ``data/csst.yaml`` for sources)."""

    name: str
    area_cm2: float
    pixel_scale_arcsec: float
    read_noise_e: float
    dark_e_per_s: float
    gain_e_per_adu: float
    saturation_e: float
    n_exposures: int
    exptime_s: float
    psf_fwhm_arcsec: float
    oversample_x: int
    sersic_truncation_hlr: float
    sersic_n_step: float
    stamp_min_half_pix: int
    stamp_max_half_pix: int
    image2d_half_height_pix: int
    bands: dict = field(repr=False)
    network_bands: tuple = ()
    source_text: str = field(repr=False, default="")

    @property
    def band_names(self) -> tuple[str, ...]:
        """All bands of the instrument file, in file order (the order of every output)."""
        return tuple(self.bands)

    @property
    def total_exptime_s(self) -> float:
        return self.n_exposures * self.exptime_s

    @property
    def psf_sigma_pix(self) -> float:
        return self.psf_fwhm_arcsec * FWHM_TO_SIGMA / self.pixel_scale_arcsec

    def band(self, name: str) -> Band:
        try:
            return self.bands[name]
        except KeyError:
            raise ConfigError("band", "unknown band", value=name, allowed=", ".join(self.bands)) from None

    def flam17_to_counts_per_pix(self, band: Band) -> np.ndarray:
        """Electrons per pixel (all exposures) per unit f_lambda, on the band grid.

        counts = f_lambda * T * A * t_total * dispersion * lambda / (h c), with
        f_lambda in 1e-17 erg/s/cm^2/A. Shape (n_pix,).
        """
        return self.flam17_to_counts_per_pix_at(band, band.wave_aa)

    def flam17_to_counts_per_pix_at(self, band: Band, wave_aa: ArrayLike) -> np.ndarray:
        """As :meth:`flam17_to_counts_per_pix`, at arbitrary wavelengths ``wave_aa`` [A]."""
        w = np.asarray(wave_aa, dtype=np.float64)
        return (
            FLAM17
            * band.throughput(w)
            * self.area_cm2
            * self.total_exptime_s
            * band.dispersion_aa_per_pix
            * w
            / (H_ERG_S * C_AA_PER_S)
        )

    def to_yaml(self) -> str:
        """The configuration text this instrument was read from (stored in outputs)."""
        return self.source_text


def _get(
    d: dict,
    key: str,
    path: str,
    kind: type = float,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float | int:
    if not isinstance(d, dict) or key not in d:
        raise ConfigError(path + "." + key if path else key, "missing from the instrument file")
    raw = d[key]
    try:
        val = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}.{key}", "not a number", value=raw) from None
    if kind is float and not math.isfinite(val):
        raise ConfigError(f"{path}.{key}", "must be finite", value=raw)
    if lo is not None and (val < lo or (lo_open and val == lo)):
        raise ConfigError(
            f"{path}.{key}",
            "out of range",
            value=raw,
            allowed=f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else ""),
        )
    if hi is not None and val > hi:
        raise ConfigError(f"{path}.{key}", "out of range", value=raw, allowed=f"<= {hi}")
    return val


def _parse_throughput(text: str, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        arr = np.array(
            [
                [float(x) for x in line.split()]
                for line in str(text).strip().splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
        )
    except ValueError:
        raise ConfigError(where, "throughput lines must be 'wavelength_A value'") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 2:
        raise ConfigError(where, "throughput needs >= 2 lines of 'wavelength_A value'")
    w, t = arr[:, 0], arr[:, 1]
    if not np.all(np.diff(w) > 0):
        raise ConfigError(where, "throughput wavelengths must be strictly increasing")
    if np.any(t < 0) or np.any(t > 1) or not np.all(np.isfinite(t)):
        raise ConfigError(where, "throughput values must lie in [0, 1]")
    return tuple(w.tolist()), tuple(t.tolist())


def parse_instrument(text: str, origin: str = "<string>") -> Instrument:
    """Build an :class:`Instrument` from YAML text; raise ConfigError naming the key."""
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FileFormatError(origin, f"not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(cfg, dict):
        raise FileFormatError(origin, "instrument file must be a YAML mapping")
    tel, det, obs = cfg.get("telescope", {}), cfg.get("detector", {}), cfg.get("observation", {})
    psf, ren = cfg.get("psf", {}), cfg.get("rendering", {})
    bands_cfg = cfg.get("bands")
    if not isinstance(bands_cfg, dict) or not bands_cfg:
        raise ConfigError("bands", "missing from the instrument file")
    bands = {}
    for name, b in bands_cfg.items():
        where = f"bands.{name}"
        tw, tv = _parse_throughput(b.get("throughput", "") if isinstance(b, dict) else "", where + ".throughput")
        band = Band(
            name=str(name),
            wave_min_aa=_get(b, "wave_min_aa", where, lo=0, lo_open=True),
            wave_max_aa=_get(b, "wave_max_aa", where, lo=0, lo_open=True),
            dispersion_aa_per_pix=_get(b, "dispersion_aa_per_pix", where, lo=0, lo_open=True),
            sky_e_per_s_per_pix=_get(b, "sky_e_per_s_per_pix", where, lo=0),
            tp_wave_aa=tw,
            tp_value=tv,
        )
        if band.wave_max_aa <= band.wave_min_aa:
            raise ConfigError(where + ".wave_max_aa", "must exceed wave_min_aa", value=band.wave_max_aa)
        bands[str(name)] = band
    net = cfg.get("network", {}) or {}
    if not isinstance(net, dict):
        raise ConfigError("network", "must be a mapping with key 'bands'")
    # files written before the key existed: every band
    network_bands = tuple(str(b) for b in net.get("bands", list(bands)))
    for b in network_bands:
        if b not in bands:
            raise ConfigError("network.bands", "unknown band", value=b, allowed=", ".join(bands))
    if not network_bands:
        raise ConfigError("network.bands", "needs at least one band")
    inst = Instrument(
        name=str(cfg.get("name", origin)),
        area_cm2=_get(tel, "area_cm2", "telescope", lo=0, lo_open=True),
        pixel_scale_arcsec=_get(det, "pixel_scale_arcsec", "detector", lo=0, lo_open=True),
        read_noise_e=_get(det, "read_noise_e", "detector", lo=0),
        dark_e_per_s=_get(det, "dark_e_per_s", "detector", lo=0),
        gain_e_per_adu=_get(det, "gain_e_per_adu", "detector", lo=0, lo_open=True),
        saturation_e=_get(det, "saturation_e", "detector", lo=0, lo_open=True),
        n_exposures=_get(obs, "n_exposures", "observation", kind=int, lo=1),
        exptime_s=_get(obs, "exptime_s", "observation", lo=0, lo_open=True),
        psf_fwhm_arcsec=_get(psf, "fwhm_arcsec", "psf", lo=0, lo_open=True),
        oversample_x=_get(ren, "oversample_x", "rendering", kind=int, lo=1, hi=32),
        sersic_truncation_hlr=_get(ren, "sersic_truncation_hlr", "rendering", lo=1),
        sersic_n_step=_get(ren, "sersic_n_step", "rendering", lo=0, lo_open=True),
        stamp_min_half_pix=_get(ren, "stamp_min_half_pix", "rendering", kind=int, lo=2),
        stamp_max_half_pix=_get(ren, "stamp_max_half_pix", "rendering", kind=int, lo=2),
        image2d_half_height_pix=_get(ren, "image2d_half_height_pix", "rendering", kind=int, lo=1),
        bands=bands,
        network_bands=network_bands,
        source_text=text,
    )
    if inst.stamp_max_half_pix < inst.stamp_min_half_pix:
        raise ConfigError(
            "rendering.stamp_max_half_pix", "must be >= stamp_min_half_pix", value=inst.stamp_max_half_pix
        )
    return inst


@lru_cache(maxsize=1)
def default_instrument() -> Instrument:
    """The packaged CSST description (parsed once per process)."""
    return load_instrument(None)


def load_instrument(path: str | Path | None = None) -> Instrument:
    """Read an instrument description (default: the packaged CSST file).

    Raises
    ------
    FileFormatError
        The file is missing or not YAML.
    ConfigError
        A key is missing or out of range (the message names it).
    """
    if path is None:
        text = resources.files("csstz.instrument").joinpath("data", DEFAULT_INSTRUMENT).read_text()
        return parse_instrument(text, origin=DEFAULT_INSTRUMENT)
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "instrument file not found")
    return parse_instrument(p.read_text(), origin=str(p))


__all__ = ["Band", "Instrument", "default_instrument", "load_instrument", "parse_instrument", "FWHM_TO_SIGMA"]
