"""The embedded population: real SDSS galaxies (kcorrect NMF fits) moved over 0 < z < 1.6.

Each drawn galaxy is made from one of the 10,000 real SDSS galaxies shipped
with kcorrect (recorded in ``SDSS_INDEX``):

1. its split comes from its TARGETID (:func:`csstz.population.nz.split_of`);
2. its redshift is drawn from the split's distribution (:mod:`.nz`);
3. a real galaxy is chosen uniformly among those that pass the selection
   (``MAG_BRIGHT_GI < MAG_GI < mag_limit_gi``, AB, band-averaged over the CSST GI
   throughput) at that redshift, so the selection never distorts n(z);
4. its NMF coefficients are perturbed (log-normal, ``COEFF_SCATTER_LN`` per
   component; a redraw keeps the selection), which makes an unlimited number of
   distinct galaxies near the real ones;
5. its SED is moved with its luminosity: intrinsic coefficients
   c * (d_L(z_sdss) / 10 pc)**2 are divided by (d_L(z) / 10 pc)**2 (Planck18),
   and the observed f_lambda(lam) = sum_k c_k T_k(lam / (1+z)) / (1+z)
   (kcorrect's convention, templates T_k in erg/s/cm^2/A at 10 pc);
6. its morphology comes from :mod:`.morphology`.

All draws use ``galaxy_rng(seed, TARGETID, STREAM_POPULATION)``: a galaxy is
regenerable from (seed, TARGETID) alone, in any chunk, on any worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy.integrate import trapezoid

from ..errors import InputError
from ..rng import STREAM_POPULATION, galaxy_rng
from ..units import C_AA_PER_S, FLAM17
from .morphology import draw_morphology
from .nz import Z_MAX, sample_z_for_split, split_of
from .sdss_fit import load_coefficients, read_templates, rest_frame_projections

if TYPE_CHECKING:
    from .._types import ArrayLike
    from ..instrument import Band, Instrument

#: Faint selection limit in the CSST GI band [AB mag], tuned so that the simulated
#: SNR distribution resembles the paper's Fig. 3 (docs/population.md).
MAG_LIMIT_GI = 21.0
#: The band of the magnitude selection (``MAG_LIMIT_GI``).
SELECTION_BAND = "GI"
#: Bright limit [AB mag]: brighter galaxies are not slitless-survey targets (near saturation).
MAG_BRIGHT_GI = 15.0
#: Log-normal scatter of each NMF coefficient of a drawn galaxy about its real parent (project choice).
COEFF_SCATTER_LN = 0.15
#: Observed-frame SED grid handed to the simulator [A]: covers GU+GV+GI (2400-10600 A) with margin.
SED_WAVE_MIN_AA, SED_WAVE_MAX_AA, SED_WAVE_STEP_AA = 2380.0, 10720.0, 2.5
#: AB zero point as f_nu [erg/s/cm^2/Hz] (3631 Jy; Oke & Gunn 1983).
AB_FNU_CGS = 3631e-23
#: Redshift grid for the band-flux tables.
_Z_GRID_STEP = 0.002


def sed_wave_aa() -> np.ndarray:
    """Observed-frame wavelength grid of the population's SEDs [A], shape (L,)."""
    n = int(round((SED_WAVE_MAX_AA - SED_WAVE_MIN_AA) / SED_WAVE_STEP_AA)) + 1
    return SED_WAVE_MIN_AA + SED_WAVE_STEP_AA * np.arange(n, dtype=np.float64)


def selection_instrument(
    instrument: Instrument | None, mag_limit_gi: float, mag_bright_gi: float = MAG_BRIGHT_GI
) -> Instrument:
    """Check a synthetic population's GI selection limits; the instrument (default: packaged CSST).

    Raises
    ------
    InputError
        ``mag_limit_gi`` not finite or not fainter than ``mag_bright_gi``.
    """
    if not np.isfinite(mag_limit_gi) or not mag_bright_gi < mag_limit_gi:
        raise InputError(
            "mag_limit_gi",
            "must be finite and fainter than the bright limit",
            value=mag_limit_gi,
            allowed=f"> {mag_bright_gi}",
        )
    if instrument is None:
        from ..instrument import load_instrument

        instrument = load_instrument()
    return instrument


@dataclass
class PopulationChunk:
    """Galaxies drawn for a list of TARGETIDs.

    Attributes
    ----------
    columns : dict of str -> ndarray
        Catalogue columns, each of length N (COEFF has shape (N, 5)).
    wave_aa : ndarray, shape (L,)
        Observed-frame wavelength [A].
    flux_flam17 : ndarray, shape (N, L)
        Observed-frame f_lambda [1e-17 erg/s/cm^2/A].
    """

    columns: dict
    wave_aa: np.ndarray
    flux_flam17: np.ndarray


class EmbeddedPopulation:
    """The default real-galaxy population (no network, no fitting at run time).

    Parameters
    ----------
    instrument : csstz.instrument.Instrument, optional
        Gives the GV and GI throughputs for the selection magnitudes (default CSST).
    mag_limit_gi : float
        Faint limit [AB mag] in GI.
    mag_bright_gi : float
        Bright limit [AB mag] in GI.
    """

    def __init__(
        self,
        instrument: Instrument | None = None,
        mag_limit_gi: float = MAG_LIMIT_GI,
        mag_bright_gi: float = MAG_BRIGHT_GI,
    ) -> None:
        from astropy import units as u
        from astropy.cosmology import Planck18

        instrument = selection_instrument(instrument, mag_limit_gi, mag_bright_gi)
        self.mag_limit_gi = float(mag_limit_gi)
        self.mag_bright_gi = float(mag_bright_gi)
        tab = load_coefficients()
        self.sdss_index = np.asarray(tab["SDSS_INDEX"], np.int64)
        self.sdss_z = np.asarray(tab["Z"], np.float64)
        coeff = np.asarray(tab["COEFF"], np.float64)
        # (d_L / 10 pc)**2 = 10**(0.4 distmod): kcorrect's "dfactor" (Planck18).
        dfac0 = 10.0 ** (0.4 * Planck18.distmod(self.sdss_z).to_value(u.mag))
        self.coeff_int = coeff * dfac0[:, None]  # intrinsic (at 10 pc), (Ngal, 5)
        self.rest_wave_aa, self.rest_flux = read_templates()  # (W,), (5, W) erg/s/cm^2/A at 10 pc
        # rest-frame SDSS u, r projections (maggies at 10 pc per unit intrinsic coefficient)
        proj = rest_frame_projections()
        self.proj_u, self.proj_r = proj["sdss_u0"], proj["sdss_r0"]
        # band-flux tables on a z grid: maggies per unit observed coefficient
        self.z_grid = np.arange(0.0, Z_MAX + 0.02 + 1e-9, _Z_GRID_STEP)
        zg = np.maximum(self.z_grid, 1e-4)
        self.dfac_grid = 10.0 ** (0.4 * Planck18.distmod(zg).to_value(u.mag))
        self.kpc_per_arcsec_grid = Planck18.kpc_proper_per_arcmin(zg).to_value(u.kpc / u.arcmin) / 60.0
        # magnitudes in the bands the networks read, and in the selection band
        self.mag_bands = tuple(dict.fromkeys(instrument.network_bands + (SELECTION_BAND,)))
        self.band_tables = {b: self._band_table(instrument.band(b)) for b in self.mag_bands}
        self.wave_aa = sed_wave_aa()

    def _band_table(self, band: Band) -> np.ndarray:
        """AB maggies of each template (unit observed coefficient) vs z, shape (Nz, 5)."""
        lo, hi = band.tp_range_aa
        wave = np.arange(lo, hi + 5.0, 5.0)
        tp = band.throughput(wave)
        # photon-weighted band average of f_nu: int f_lam T lam dlam / int f_lam^AB T lam dlam
        norm = trapezoid(AB_FNU_CGS * C_AA_PER_S / wave**2 * tp * wave, wave)
        opz = 1.0 + self.z_grid[:, None]
        rest = wave[None, :] / opz  # (Nz, W)
        out = np.empty((len(self.z_grid), self.rest_flux.shape[0]))
        for k in range(self.rest_flux.shape[0]):
            f = np.interp(rest, self.rest_wave_aa, self.rest_flux[k]) / opz
            out[:, k] = trapezoid(f * (tp * wave)[None, :], wave, axis=1) / norm
        return out

    def _interp_z(self, table: np.ndarray, z: float) -> np.ndarray:
        x = z / _Z_GRID_STEP
        i = min(int(x), len(self.z_grid) - 2)
        t = x - i
        return table[i] * (1.0 - t) + table[i + 1] * t

    def band_mag(self, band: str, coeff_int: np.ndarray, z: float) -> np.ndarray:
        """AB magnitude in a CSST band of galaxies with intrinsic coefficients at redshift z.

        Parameters
        ----------
        coeff_int : ndarray, shape (..., 5)
            Intrinsic (10 pc) coefficients.
        """
        g = self._interp_z(self.band_tables[band], z) / float(np.interp(z, self.z_grid, self.dfac_grid))
        m = np.asarray(coeff_int, np.float64) @ g
        return -2.5 * np.log10(np.maximum(m, 1e-300))

    def sed_flam17(self, coeff_obs: np.ndarray, z: float, wave_aa: np.ndarray | None = None) -> np.ndarray:
        """Observed f_lambda [1e-17 erg/s/cm^2/A] of one galaxy, shape (L,)."""
        wave = self.wave_aa if wave_aa is None else wave_aa
        rest = wave / (1.0 + z)
        f = np.zeros_like(wave)
        for k, c in enumerate(coeff_obs):
            if c != 0.0:
                f += c * np.interp(rest, self.rest_wave_aa, self.rest_flux[k])
        return f / (1.0 + z) / FLAM17

    def draw_one(self, seed: int, targetid: int, split: str) -> dict:
        """Catalogue entries of one galaxy (regenerable from seed and TARGETID)."""
        rng = galaxy_rng(seed, targetid, STREAM_POPULATION)
        z = sample_z_for_split(rng, split)
        mag_all = self.band_mag(SELECTION_BAND, self.coeff_int, z)
        ok = np.flatnonzero((mag_all < self.mag_limit_gi) & (mag_all > self.mag_bright_gi))
        fallback = ok.size == 0
        if fallback:  # nothing passes (only far above z ~ 1.5 for deep limits): the brightest few
            ok = np.argsort(mag_all)[:10]
        idx = int(rng.choice(ok))
        c_int = self.coeff_int[idx]
        for _ in range(10):
            trial = c_int * np.exp(COEFF_SCATTER_LN * rng.normal(size=c_int.shape))
            m = float(self.band_mag(SELECTION_BAND, trial, z))
            if fallback or self.mag_bright_gi < m < self.mag_limit_gi:
                c_int = trial
                break
        dfac = float(np.interp(z, self.z_grid, self.dfac_grid))
        absmag_r = -2.5 * np.log10(max(float(c_int @ self.proj_r), 1e-300))
        rest_ur = -2.5 * np.log10(max(float(c_int @ self.proj_u), 1e-300)) - absmag_r
        kpc_as = float(np.interp(z, self.z_grid, self.kpc_per_arcsec_grid))
        morph = draw_morphology(rng, absmag_r, rest_ur, z, kpc_as)
        return {
            "TARGETID": int(targetid),
            "Z": float(z),
            "SHAPE_R": morph["SHAPE_R"],
            "SERSIC": morph["SERSIC"],
            "BA": morph["BA"],
            "PA": morph["PA"],
            "SPLIT": split,
            "SDSS_INDEX": int(self.sdss_index[idx]),
            "SDSS_Z": float(self.sdss_z[idx]),
            **{f"MAG_{b}": float(self.band_mag(b, c_int, z)) for b in self.mag_bands},
            "ABSMAG_R": float(absmag_r),
            "REST_UR": float(rest_ur),
            "EARLY": bool(morph["EARLY"]),
            "SEL_FALLBACK": bool(fallback),
            "COEFF": (c_int / dfac).astype(np.float64),
        }

    def rest_frame_seds(self, seed: int, targetids: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Rest-frame SEDs of the given galaxies (torch-free; for learned template bases).

        Returns
        -------
        rest_wave_aa : ndarray (W,)
            kcorrect's template wavelengths [A].
        lum_lsun_per_aa : ndarray (N, W) float32
            L_lambda [L_sun/A] (L_sun = 3.826e33 erg/s): intrinsic coefficients (10 pc) times the
            templates (erg/s/cm^2/A at 10 pc) times 4 pi (10 pc)^2.
        """
        tids = np.asarray(targetids, np.int64)
        splits = split_of(seed, tids)
        out = np.empty((tids.size, self.rest_wave_aa.size), np.float32)
        area_10pc_cm2 = 4.0 * np.pi * (10.0 * 3.0856775814913673e18) ** 2  # 10 pc (IAU 2015 parsec)
        for i, (t, s) in enumerate(zip(tids, splits)):
            r = self.draw_one(seed, int(t), str(s))
            c_int = r["COEFF"] * float(np.interp(r["Z"], self.z_grid, self.dfac_grid))
            out[i] = c_int @ self.rest_flux * (area_10pc_cm2 / 3.826e33)
        return self.rest_wave_aa.copy(), out

    def draw(self, seed: int, targetids: ArrayLike) -> PopulationChunk:
        """Draw the galaxies with the given TARGETIDs.

        Parameters
        ----------
        seed : int
            Root seed of the build.
        targetids : array of int64, shape (N,)

        Returns
        -------
        PopulationChunk
        """
        tids = np.asarray(targetids, np.int64)
        splits = split_of(seed, tids)
        rows = [self.draw_one(seed, int(t), str(s)) for t, s in zip(tids, splits)]
        cols = {}
        for key in rows[0] if rows else []:
            cols[key] = np.array([r[key] for r in rows])
        if rows:
            cols["COEFF"] = np.stack([r["COEFF"] for r in rows]).astype(np.float32)
        flux = np.empty((len(rows), len(self.wave_aa)), np.float64)
        for i, r in enumerate(rows):
            flux[i] = self.sed_flam17(r["COEFF"], r["Z"])
        return PopulationChunk(cols, self.wave_aa, flux)


@lru_cache(maxsize=4)
def get_population(instrument_path: str | None = None, mag_limit_gi: float = MAG_LIMIT_GI) -> EmbeddedPopulation:
    """A cached :class:`EmbeddedPopulation` (building one takes about a second)."""
    from ..instrument import load_instrument

    return EmbeddedPopulation(load_instrument(instrument_path), mag_limit_gi=mag_limit_gi)


__all__ = [
    "EmbeddedPopulation",
    "PopulationChunk",
    "get_population",
    "sed_wave_aa",
    "MAG_LIMIT_GI",
    "MAG_BRIGHT_GI",
    "COEFF_SCATTER_LN",
]


def get_population_description(mag_limit_gi: float = MAG_LIMIT_GI) -> dict:
    """The embedded population's choices, stored in every dataset's root attributes."""
    from importlib.metadata import version

    from .nz import CSST_Z_FRACTIONS, TRAIN_UNIFORM_WEIGHT

    return {
        "source": "embedded",
        "galaxies": "10,000 real SDSS galaxies of kcorrect/data/test/gst_tests_small.fits, NMF coefficients "
        "fitted with kcorrect (population/data/sdss_nmf_coeffs.ecsv); SDSS_INDEX = parent row",
        "kcorrect_version": version("kcorrect"),
        "templates": "kcorrect-default-v4.fits (5 NMF templates with emission lines)",
        "cosmology": "Planck18",
        "z_test": "CSST n(z) histogram (docs/design.md), uniform within bins, z >= 0.01",
        "z_train_val": f"{1 - TRAIN_UNIFORM_WEIGHT:.1f} CSST histogram + {TRAIN_UNIFORM_WEIGHT:.1f} uniform 0.01-1.6",
        "csst_fractions": list(map(float, CSST_Z_FRACTIONS)),
        "selection": f"{MAG_BRIGHT_GI} < MAG_GI < {mag_limit_gi} (AB, CSST GI band average), parent drawn "
        "uniformly among real galaxies passing at the drawn z",
        "coeff_scatter_ln": COEFF_SCATTER_LN,
        "morphology": "see csstz.population.morphology (Shen+2003 sizes, LS DR9-like Sersic mix, PA uniform)",
        "split": "TARGETID mod 10 through a seeded permutation: 8 train, 1 val, 1 test",
    }
