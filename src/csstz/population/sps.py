"""The SPS population: galaxies made by stellar-population synthesis with nebular emission.

A second galaxy population, physically independent of the kcorrect NMF basis of
:mod:`.embedded`: spectra come from bagpipes (Carnall et al. 2018, MNRAS 480,
4379; BC03 stellar models with MILES, Kroupa IMF, Cloudy nebular continuum and
lines, Inoue et al. 2014 IGM), with physical parameters drawn from published
scaling relations. bagpipes is an optional dependency (``pip install
'csstz[sps]'``, GPL-3); it is imported only inside the functions that make the
SED bank, so this module imports and its priors run without it.

How a galaxy is made
--------------------
1. **SED bank** (once per seed, cached on disk, :func:`ensure_bank`): K rest-frame
   models. Member k draws its parameters from ``galaxy_rng(seed, k,
   STREAM_SPS_BANK)`` (so a bank of K members is the prefix of any larger bank):
   an epoch z_k in [0, 1.7] (half uniform, half ~ z^2: more members where few pass
   the selection), a type (star-forming or quiescent, proposal 50/50),
   a stellar mass from a proposal that starts just below the selection limit at
   z_k (``LOGM_LO_NODES``; half a truncated exponential of scale 0.6 dex, half uniform
   up to 10^12.3), then,
   conditionally, sSFR, SFH,
   metallicity, dust and ionisation parameter (priors below). Each member
   records its importance weight w_k = phi_type(M_k, z_k) / q(M_k, type), so that
   weighted draws follow the stellar mass functions.
2. **A galaxy** (TARGETID t): its split and redshift come exactly as in the
   embedded source (``galaxy_rng(seed, t, STREAM_POPULATION)``, first draw
   :func:`.nz.sample_z_for_split`), so the same (seed, TARGETID) has the same z in
   both populations. Among bank members with |z_k - z| < ``DZ_WINDOW`` that pass
   ``15 < MAG_GI < mag_limit_gi`` at some mass within 0.5 dex of their own, one is
   picked with probability int phi(M_k + d, z) dd / q_k over the passing shifts d
   (the mass function restricted to the selection, so n(z) is never distorted;
   weights truncated at sqrt(n) x mean, Ionides 2008), and d is drawn from phi
   on that range: each member is an SED shape used over a continuum of masses,
   which makes an unlimited number of distinct galaxies. Its rest-frame L_lambda is moved to
   z with Planck18: f_lambda(lam) = L(lam/(1+z)) T_IGM / (4 pi d_L^2 (1+z)),
   averaged over each 2.5 A output pixel (flux conserving, so the unresolved
   lines keep their flux). Morphology: :mod:`.morphology` (Shen et al. 2003
   sizes, Sersic by rest u - r), as the embedded source.

Priors (every number with its source; ``docs/population.md`` has the table)
---------------------------------------------------------------------------
* Stellar mass functions: star-forming phi_SF = phi*_SF (M/M*)^alpha_SF
  exp(-M/M*), quiescent phi_Q = phi*_Q(z) (M/M*)^alpha_Q exp(-M/M*), with
  log M* = 10.66, alpha_Q = -0.35, alpha_SF = -1.47, phi*_Q(0) = 3.96e-3,
  phi*_SF = 0.79e-3 Mpc^-3 (the two components of the GAMA z < 0.06 double
  Schechter fit, Baldry et al. 2012, MNRAS 421, 621, read as the mass-quenched
  and star-forming populations with a common M* as in Peng et al. 2010, ApJ 721,
  193, whose star-forming phi* and M* barely evolve to z ~ 1). Evolution: only
  the quiescent normalisation, phi*_Q(z) = phi*_Q(0) (1+z)^-2.4, the ratio of the
  quiescent ((1+z)^-4.7) and star-forming ((1+z)^-2.3) mass-density growth of
  Muzzin et al. 2013 (ApJ 777, 18). Only the shapes and the ratio matter: the
  population is drawn conditionally at each z.
* Star-forming main sequence: log SFR = (0.84 - 0.026 t) log M - (6.51 - 0.11 t),
  t = age of the Universe [Gyr] (Speagle et al. 2014, ApJS 214, 15, eq. 28),
  scatter 0.2 dex (their true scatter). Quiescent: log sSFR = MS - U(1.0, 2.5) dex.
* SFH: delayed tau SFR(t) ~ t exp(-t/tau); age A (time since onset) ~
  U(0.3, 1) x A_max for star-formers and U(0.5, 1) x A_max for quiescent
  galaxies, A_max = age of the Universe at z_k + DZ_WINDOW minus 50 Myr (and,
  for star-formers, <= 0.9 x 2/sSFR, the most a delayed tau can reach); tau
  solved so that the analytic SFR(A)/M_formed equals the target sSFR times an
  assumed living fraction 0.65 (BC03/Kroupa return fraction ~0.35, e.g. Leitner
  & Kravtsov 2011). The recorded SFR (100 Myr average), living LOG_MSTAR and
  LOG_SSFR are bagpipes' own values for the model actually made.
  Optional burst (10 % of star-formers, project choice): 1-10 % of the mass,
  age log-uniform 10-300 Myr.
* Metallicity (stars and gas alike): the mass-metallicity relation of Zahid et
  al. 2014 (ApJ 791, 130): 12 + log(O/H) = 9.100 + log10(1 - exp(-(M/M0)^0.513)),
  log M0 = 9.138 + 2.64 log10(1+z); moved from their KK04 calibration to the
  solar scale of Asplund et al. 2009 (12 + log(O/H) = 8.69) with -0.3 dex (the
  typical KK04 offset of Kewley & Ellison 2008), scatter 0.1 dex; quiescent
  galaxies use the z = 0 relation. Clipped to the BC03 grid, 0.005-2.5 Z_sun.
* Dust: Calzetti et al. 2000 curve; nebular lines and stars younger than 10 Myr
  get eta = 1/f times the continuum A_V, f = E(B-V)_star / E(B-V)_gas = 0.44 at
  z = 0 (Calzetti et al. 2000) rising linearly to 0.76 at z >= 1.6 (Kashino et
  al. 2013, ApJL 777, L8: f = 0.69-0.83 at z ~ 1.6; Reddy et al. 2015 find the
  same trend at z ~ 2). Star-formers: A_Halpha = 0.91 + 0.77 X + 0.11 X^2 -
  0.09 X^3, X = log(M/1e10) (Garn & Best 2010, MNRAS 409, 421; no evolution
  to z ~ 1.5, Sobral et al. 2012), X clipped to [-1.5, 1] (their fitted mass
  range), scatter 0.28 mag; the continuum A_V = A_Halpha / (eta k(Halpha)/R_V)
  (A_Halpha / 1.87 at z = 0). Quiescent: A_V ~ U(0, 0.5) (project choice).
* Ionisation parameter: log U = -3.1 + 0.1 (log sSFR[yr^-1] + 9.5) + N(0, 0.2),
  clipped to [-4, -2] (project choice: local star-formers near log U ~ -3.2 to -3,
  and only a weak rise with sSFR: Kaasinen et al. 2018, MNRAS 477, 5568, find z ~ 1.5
  galaxies with U similar to local galaxies of the same SFR surface density). The
  [OII] EW is very sensitive to this: in bagpipes, log U -3.0 -> -2.5 halves it at
  fixed SFH; an earlier slope of 0.3 flattened the [OII] EW evolution to ~(1+z)^0.
* IGM: Inoue et al. 2014 (bagpipes' table), applied at the galaxy's z.

The cache
---------
``$CSSTZ_CACHE/sps/<key>/`` (default ``~/.cache/csstz/sps/<key>/``), key =
``seed<seed>-K<K>-v<PRIOR_VERSION>-bagpipes<version>``: ``lum.npy`` (K x W
float32 L_lambda [L_sun/A] at the member's mass; W = 2,560 rest wavelengths
850-11,000 A, d ln(lam) = 1e-3, i.e. 10.2 MB per 1,000 members), ``rest_wave_aa.npy``,
``params.npz`` (the members' parameters and derived quantities), ``igm.npy``,
``meta.json``; written into a temporary directory and renamed (atomic).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.integrate import trapezoid

from ..errors import FileFormatError, InputError, MissingDependencyError
from ..rng import STREAM_POPULATION, STREAM_SPS_BANK, galaxy_rng
from ..units import C_AA_PER_S, FLAM17
from .embedded import (
    AB_FNU_CGS,
    MAG_BRIGHT_GI,
    MAG_LIMIT_GI,
    SELECTION_BAND,
    PopulationChunk,
    sed_wave_aa,
    selection_instrument,
)
from .morphology import draw_morphology
from .nz import Z_MAX, sample_z_for_split, split_of

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

    from .._types import ArrayLike, PathLike
    from ..instrument import Band, Instrument

#: Version of the priors below; part of the cache key (bump when a prior changes).
PRIOR_VERSION = 6
#: Pinned bagpipes version (the optional extra ``csstz[sps]``).
BAGPIPES_VERSION = "1.3.6"
#: Default number of bank members (project choice; ~11 ms of bagpipes each, 10 MB per 1,000).
BANK_SIZE = 6000
#: Epochs of bank members: z_k ~ U(0, BANK_Z_MAX) (covers the CSST range 0-1.6 plus the window).
BANK_Z_MAX = 1.7
#: A galaxy at z uses bank members with |z_k - z| < DZ_WINDOW.
DZ_WINDOW = 0.1
#: Proposal of log10 stellar mass [Msun] of bank members: from M_lo(z) up to LOGM_PROPOSAL_MAX, where
#: M_lo(z) (piecewise linear through LOGM_LO_NODES) lies ~0.4 dex below the lightest star-formers
#: that pass MAG_GI < 21 (1st percentile measured on earlier banks: 8.7 at z = 0.22, 9.4 at 0.45,
#: 10.0 at 0.75, 10.5 at 1.05, 11.25 at 1.3, 11.5 at 1.5). Concentrating members near the selection
#: limit, where the mass function puts most selected galaxies, keeps many distinct members in play
#: at every z (the importance weights undo the proposal).
LOGM_LO_NODES = ((0.0, 7.0), (0.2, 8.2), (0.45, 9.0), (0.75, 9.6), (1.05, 10.2), (1.3, 10.85), (1.5, 11.1), (1.8, 11.3))
#: Epoch proposal: with probability BANK_Z_UNIFORM_SHARE uniform on [0, BANK_Z_MAX], else with density
#: ~ z^2 (more members at high z, where few pass the selection); a galaxy only uses members within
#: DZ_WINDOW of its z, so this density never enters its probabilities.
BANK_Z_UNIFORM_SHARE = 0.5
LOGM_PROPOSAL_SCALE_DEX, LOGM_PROPOSAL_MAX = 0.6, 12.3
#: Share of the exponential in the mass proposal; the rest is uniform on [M_lo(z), 12.3], so that
#: bright, rare galaxies (M_r < -21 at z < 0.2) are also represented by many members.
LOGM_PROPOSAL_EXP_SHARE = 0.5
#: Proposal probability of a quiescent member.
Q_PROPOSAL = 0.5
#: A bank member's SED shape is used at masses within this many dex of its own (project choice:
#: the mass-dependent priors then hold to within their scatter, and the selection, not the
#: accident of one member's mass, decides which mass a selected galaxy has).
MASS_SHIFT_MAX_DEX = 0.5
#: Rest-frame wavelength range stored in the bank [A] (observed 2380-10720 A at 0 < z < 1.7 + margin).
REST_MIN_AA, REST_MAX_AA = 850.0, 11000.0
#: Bank wavelength grid: log-uniform, d(ln lam) = 1e-3 (R = 1000 per pixel; bagpipes' R = 2000
#: model sampling rebinned by flux-conserving integration, unresolved lines keep their flux;
#: CSST's slitless resolution is R ~ 250).
REST_DLNLAM = 1e-3

# --- stellar mass functions (Baldry et al. 2012 components; Peng et al. 2010; Muzzin et al. 2013)
LOG_MSTAR_SCHECHTER = 10.66
ALPHA_Q, ALPHA_SF = -0.35, -1.47
PHI_STAR_Q0_MPC3, PHI_STAR_SF_MPC3 = 3.96e-3, 0.79e-3
#: phi*_Q(z) = phi*_Q(0) (1+z)**Q_EVOL_EXP (Muzzin+2013 mass-density growth, -4.7 + 2.3).
Q_EVOL_EXP = -2.4
# --- main sequence (Speagle et al. 2014 eq. 28), scatter 0.2 dex
MS_SLOPE0, MS_SLOPE_T, MS_ZP0, MS_ZP_T, MS_SCATTER_DEX = 0.84, 0.026, 6.51, 0.11, 0.2
#: Quiescent galaxies lie this far below the MS [dex] (uniform; project choice).
Q_OFFSET_MIN_DEX, Q_OFFSET_MAX_DEX = 1.0, 2.5
#: Living fraction assumed when solving tau (BC03 Kroupa return fraction ~0.35).
LIVE_FRAC_ASSUMED = 0.65
#: Burst: probability for star-formers, mass fraction range, age range [Gyr] (project choice).
BURST_PROB, BURST_FRAC_MIN, BURST_FRAC_MAX, BURST_AGE_MIN_GYR, BURST_AGE_MAX_GYR = 0.1, 0.01, 0.1, 0.01, 0.3
# --- mass-metallicity (Zahid et al. 2014), KK04 -> Asplund+2009 scale
MZR_Z0, MZR_GAMMA, MZR_LOGM0, MZR_LOGM0_Z = 9.100, 0.513, 9.138, 2.64
MZR_KK04_OFFSET_DEX, OH_SOLAR, MZR_SCATTER_DEX = -0.3, 8.69, 0.1
Z_SUN_MIN, Z_SUN_MAX = 0.005, 2.5
# --- dust (Calzetti et al. 2000; Garn & Best 2010)
#: Stellar-to-gas E(B-V) ratio f(z) = F_STAR_GAS_Z0 + (F_STAR_GAS_HIGHZ - F_STAR_GAS_Z0) min(z / 1.6, 1)
#: (Calzetti+2000 at z = 0; Kashino+2013 at z ~ 1.6); bagpipes' eta = 1 / f.
F_STAR_GAS_Z0, F_STAR_GAS_HIGHZ, F_STAR_GAS_Z_HIGH = 0.44, 0.76, 1.6
K_HALPHA_CALZETTI, RV_CALZETTI = 3.33, 4.05
GB10_COEFFS = (0.91, 0.77, 0.11, -0.09)
GB10_SCATTER_MAG = 0.28
AV_Q_MAX = 0.5
# --- ionisation parameter (project choice, see module doc)
LOGU_ZP, LOGU_SLOPE, LOGU_PIVOT, LOGU_SCATTER, LOGU_MIN, LOGU_MAX = -3.1, 0.1, -9.5, 0.2, -4.0, -2.0
#: Rest-frame continuum windows [A] for the equivalent widths (avoid [NII], [SII], [NeIII]).
HA_CONT_WINDOWS_AA = ((6400.0, 6520.0), (6610.0, 6700.0))
OII_CONT_WINDOWS_AA = ((3680.0, 3715.0), (3740.0, 3790.0))
HA_LINE, OII_LINES = "H  1  6562.80A", ("O  2  3726.03A", "O  2  3728.81A")
#: Redshift grid of the band-magnitude and IGM tables.
_Z_GRID_STEP = 0.005
_Z_GRID_MIN = 0.005
#: Solar luminosity [erg/s] as bagpipes uses it; the bank stores L_lambda in L_sun/A (erg/s/A
#: overflows float32 for massive galaxies).
LSUN_ERG_S = 3.826e33
#: One parsec [cm] (IAU 2015), for absolute magnitudes at 10 pc.
PC_CM = 3.0856775814913673e18


def _require_bagpipes() -> ModuleType:
    """Import bagpipes or raise a one-line :class:`MissingDependencyError`."""
    try:
        import contextlib
        import io
        import warnings

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            import bagpipes  # noqa: F401  (GPL-3 optional extra)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the sps population needs bagpipes=={BAGPIPES_VERSION}: pip install 'csstz[sps]' ({exc})"
        ) from None
    return bagpipes


def bagpipes_available() -> bool:
    """True when bagpipes can be imported."""
    import importlib.util

    return importlib.util.find_spec("bagpipes") is not None


def cache_root() -> Path:
    """Root of the SED caches: ``$CSSTZ_CACHE/sps`` or ``~/.cache/csstz/sps``."""
    base = os.environ.get("CSSTZ_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "csstz") / "sps"


# --- priors (pure numpy, no bagpipes) ---------------------------------------------------------------
@lru_cache(maxsize=1)
def _age_table() -> tuple[np.ndarray, np.ndarray]:
    from astropy.cosmology import Planck18

    zg = np.linspace(0.0, 3.0, 601)
    return zg, Planck18.age(zg).value  # Gyr


def age_of_universe_gyr(z: ArrayLike) -> np.ndarray:
    """Age of the Universe at z [Gyr] (Planck18)."""
    zg, ag = _age_table()
    return np.interp(z, zg, ag)


def main_sequence_log_sfr(log_mstar: ArrayLike, t_gyr: ArrayLike) -> np.ndarray:
    """log10 SFR [Msun/yr] on the star-forming main sequence (Speagle et al. 2014, eq. 28)."""
    return (MS_SLOPE0 - MS_SLOPE_T * t_gyr) * log_mstar - (MS_ZP0 - MS_ZP_T * t_gyr)


def smf_phi(log_mstar: ArrayLike, z: ArrayLike, quiescent: bool) -> np.ndarray:
    """Stellar mass function [Mpc^-3 dex^-1] of one type (see module doc)."""
    x = 10.0 ** (np.asarray(log_mstar, float) - LOG_MSTAR_SCHECHTER)
    q = np.asarray(quiescent, bool)
    alpha = np.where(q, ALPHA_Q, ALPHA_SF)
    phi_star = np.where(q, PHI_STAR_Q0_MPC3 * (1.0 + np.asarray(z, float)) ** Q_EVOL_EXP, PHI_STAR_SF_MPC3)
    return np.log(10.0) * phi_star * x ** (alpha + 1.0) * np.exp(-x)


def quiescent_fraction(log_mstar: ArrayLike, z: ArrayLike) -> np.ndarray:
    """Quiescent fraction of the mass functions at (M, z)."""
    q = smf_phi(log_mstar, z, True)
    return q / (q + smf_phi(log_mstar, z, False))


def mzr_z_solar(log_mstar: ArrayLike, z: ArrayLike) -> np.ndarray:
    """Metallicity Z/Z_sun of the mass-metallicity relation (Zahid et al. 2014, rescaled; module doc)."""
    logm0 = MZR_LOGM0 + MZR_LOGM0_Z * np.log10(1.0 + np.asarray(z, float))
    oh = MZR_Z0 + np.log10(1.0 - np.exp(-((10.0 ** (np.asarray(log_mstar, float) - logm0)) ** MZR_GAMMA)))
    return 10.0 ** (oh + MZR_KK04_OFFSET_DEX - OH_SOLAR)


def eta_birth_cloud(z: ArrayLike) -> np.ndarray:
    """bagpipes' eta = E(B-V)_gas / E(B-V)_star at redshift z (see F_STAR_GAS_*)."""
    f = F_STAR_GAS_Z0 + (F_STAR_GAS_HIGHZ - F_STAR_GAS_Z0) * np.minimum(np.asarray(z, float) / F_STAR_GAS_Z_HIGH, 1.0)
    return 1.0 / f


def a_halpha_star_forming(log_mstar: ArrayLike) -> np.ndarray:
    """Mean nebular A_Halpha [mag] of star-formers (Garn & Best 2010, within their mass range)."""
    x = np.clip(np.asarray(log_mstar, float) - 10.0, -1.5, 1.0)
    a0, a1, a2, a3 = GB10_COEFFS
    return a0 + a1 * x + a2 * x**2 + a3 * x**3


def av_star_forming(log_mstar: ArrayLike, z: ArrayLike = 0.0) -> np.ndarray:
    """Mean continuum A_V [mag] of star-formers from A_Halpha(M) (Garn & Best 2010)."""
    return a_halpha_star_forming(log_mstar) / (eta_birth_cloud(z) * K_HALPHA_CALZETTI / RV_CALZETTI)


def delayed_tau_ssfr_per_gyr(age_gyr: float, tau_gyr: float) -> float:
    """Instantaneous SFR / formed mass [1/Gyr] of a delayed-tau history at age A."""
    x = age_gyr / tau_gyr
    formed = tau_gyr**2 * -np.expm1(-x) - tau_gyr * age_gyr * np.exp(-x)
    return float(age_gyr * np.exp(-x) / formed) if formed > 0 else 0.0


def solve_tau_gyr(age_gyr: float, ssfr_formed_per_gyr: float) -> float:
    """tau [Gyr] such that a delayed-tau history of age A has the given SFR/M_formed.

    sSFR(tau) rises monotonically from 0 (tau -> 0) to 2/A (tau -> infinity);
    targets above 0.99 x 2/A give the largest tau searched (100 Gyr).
    """
    lo, hi = np.log(0.01), np.log(100.0)
    if ssfr_formed_per_gyr >= delayed_tau_ssfr_per_gyr(age_gyr, np.exp(hi)):
        return float(np.exp(hi))
    if ssfr_formed_per_gyr <= delayed_tau_ssfr_per_gyr(age_gyr, np.exp(lo)):
        return float(np.exp(lo))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if delayed_tau_ssfr_per_gyr(age_gyr, np.exp(mid)) < ssfr_formed_per_gyr:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def logm_proposal_floor(z: ArrayLike) -> np.ndarray:
    """Lower end M_lo(z) of the bank's mass proposal [log Msun] (see LOGM_LO_NODES)."""
    zn, mn = np.array(LOGM_LO_NODES).T
    return np.interp(z, zn, mn)


def rest_wave_grid_aa() -> tuple[np.ndarray, np.ndarray]:
    """Bank rest-frame grid: centres (W,) and edges (W+1,) [A], log-uniform (REST_DLNLAM)."""
    n = int(np.floor(np.log(REST_MAX_AA / REST_MIN_AA) / REST_DLNLAM))
    edges = REST_MIN_AA * np.exp(REST_DLNLAM * np.arange(n + 1))
    return np.sqrt(edges[1:] * edges[:-1]), edges


def rebin_flux_conserving(wave: np.ndarray, flux: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean flux density in each bin [edges[i], edges[i+1]] of a sampled spectrum (trapezoid integral)."""
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (flux[1:] + flux[:-1]) * np.diff(wave))])
    return np.diff(np.interp(edges, wave, cum)) / np.diff(edges)


def draw_bank_parameters(seed: int, k: int) -> dict:
    """Physical parameters of bank member k (regenerable from (seed, k); no bagpipes).

    Returns
    -------
    dict
        BANK_Z, QUIESCENT, LOG_MSTAR_TARGET, LOG_SSFR_TARGET, AGE [Gyr], TAU [Gyr],
        METALLICITY [Z_sun], AV [mag], LOG_U, BURST, BURST_FRAC, BURST_AGE [Gyr],
        WEIGHT (importance weight: phi_type(M, z) / proposal density).
    """
    rng = galaxy_rng(seed, k, STREAM_SPS_BANK)
    u_z = rng.random()
    z = float(BANK_Z_MAX * (rng.random() if u_z < BANK_Z_UNIFORM_SHARE else rng.random() ** (1.0 / 3.0)))
    quiescent = bool(rng.random() < Q_PROPOSAL)
    m_lo = logm_proposal_floor(z)
    span = LOGM_PROPOSAL_MAX - m_lo
    # mixture: half a truncated exponential above m_lo (inverse CDF), half uniform up to the maximum
    norm = -np.expm1(-span / LOGM_PROPOSAL_SCALE_DEX)
    if rng.random() < LOGM_PROPOSAL_EXP_SHARE:
        logm = float(m_lo - LOGM_PROPOSAL_SCALE_DEX * np.log1p(-norm * rng.random()))
    else:
        logm = float(m_lo + span * rng.random())
    t_univ = float(age_of_universe_gyr(z))
    a_max = float(age_of_universe_gyr(z + DZ_WINDOW)) - 0.05
    log_sfr_ms = float(main_sequence_log_sfr(logm, t_univ))
    if quiescent:
        log_ssfr = log_sfr_ms - logm - float(rng.uniform(Q_OFFSET_MIN_DEX, Q_OFFSET_MAX_DEX))
        age = a_max * float(rng.uniform(0.5, 1.0))
    else:
        log_ssfr = log_sfr_ms - logm + MS_SCATTER_DEX * float(rng.normal())
        ssfr_f = 10.0**log_ssfr * 1e9 * LIVE_FRAC_ASSUMED
        age = min(a_max, 0.9 * 2.0 / ssfr_f) * float(rng.uniform(0.3, 1.0))
    ssfr_formed_gyr = 10.0**log_ssfr * 1e9 * LIVE_FRAC_ASSUMED
    tau = solve_tau_gyr(age, ssfr_formed_gyr)
    z_met = float(mzr_z_solar(logm, 0.0 if quiescent else z)) * 10.0 ** (MZR_SCATTER_DEX * float(rng.normal()))
    z_met = float(np.clip(z_met, Z_SUN_MIN, Z_SUN_MAX))
    if quiescent:
        av = float(AV_Q_MAX * rng.random())
    else:
        a_ha = float(a_halpha_star_forming(logm)) + GB10_SCATTER_MAG * float(rng.normal())
        av = max(0.0, a_ha / (float(eta_birth_cloud(z)) * K_HALPHA_CALZETTI / RV_CALZETTI))
    logu = float(
        np.clip(LOGU_ZP + LOGU_SLOPE * (log_ssfr - LOGU_PIVOT) + LOGU_SCATTER * float(rng.normal()), LOGU_MIN, LOGU_MAX)
    )
    burst = (not quiescent) and bool(rng.random() < BURST_PROB)
    burst_frac = float(rng.uniform(BURST_FRAC_MIN, BURST_FRAC_MAX)) if burst else 0.0
    burst_age = float(np.exp(rng.uniform(np.log(BURST_AGE_MIN_GYR), np.log(BURST_AGE_MAX_GYR)))) if burst else 0.0
    q_m = (
        LOGM_PROPOSAL_EXP_SHARE * np.exp(-(logm - m_lo) / LOGM_PROPOSAL_SCALE_DEX) / (LOGM_PROPOSAL_SCALE_DEX * norm)
        + (1.0 - LOGM_PROPOSAL_EXP_SHARE) / span
    )
    proposal = (Q_PROPOSAL if quiescent else 1.0 - Q_PROPOSAL) * q_m
    weight = float(smf_phi(logm, z, quiescent)) / proposal
    return {
        "BANK_Z": z,
        "QUIESCENT": quiescent,
        "LOG_MSTAR_TARGET": logm,
        "LOG_SSFR_TARGET": log_ssfr,
        "AGE": age,
        "TAU": tau,
        "METALLICITY": z_met,
        "AV": av,
        "LOG_U": logu,
        "BURST": burst,
        "BURST_FRAC": burst_frac,
        "BURST_AGE": burst_age,
        "WEIGHT": weight,
    }


# --- the bank (bagpipes) ----------------------------------------------------------------------------
def _components(p: dict, burst: bool) -> dict:
    log_formed = p["LOG_MSTAR_TARGET"] - np.log10(LIVE_FRAC_ASSUMED)
    f_b = p["BURST_FRAC"] if burst else 0.0
    comp = {
        "redshift": 0.0,
        "delayed": {
            "age": p["AGE"],
            "tau": p["TAU"],
            "metallicity": p["METALLICITY"],
            "massformed": float(log_formed + np.log10(1.0 - f_b)),
        },
        "dust": {"type": "Calzetti", "Av": p["AV"], "eta": float(eta_birth_cloud(p["BANK_Z"]))},
        "nebular": {"logU": p["LOG_U"]},
    }
    if burst:
        comp["burst"] = {
            "age": p["BURST_AGE"],
            "metallicity": p["METALLICITY"],
            "massformed": float(log_formed + np.log10(f_b)),
        }
    return comp


def _median_windows(wave: np.ndarray, flux: np.ndarray, windows: Sequence[tuple[float, float]]) -> float:
    m = np.zeros(wave.shape, bool)
    for lo, hi in windows:
        m |= (wave >= lo) & (wave <= hi)
    return float(np.median(flux[m]))


def _sdss_response(band: str) -> tuple[np.ndarray, np.ndarray]:
    from .sdss_fit import kcorrect_dir

    path = os.path.join(kcorrect_dir(), "data", "responses", f"sdss_{band}0.dat")
    rows = []
    with open(path) as fh:
        for line in fh:
            parts = [s.strip() for s in line.strip().strip("|").split("|")]
            try:
                rows.append((float(parts[0]), float(parts[3])))  # lambda, pass (1.3 airmass)
            except (ValueError, IndexError):
                continue
    arr = np.array(rows)
    if arr.size == 0:
        raise FileFormatError(path, "no response rows")
    return arr[:, 0], arr[:, 1]


def _abmag_10pc(
    wave_aa: np.ndarray, lum_erg_s_aa: np.ndarray, band_wave: np.ndarray, band_pass: np.ndarray
) -> np.ndarray:
    """Rest-frame AB magnitude at 10 pc, photon-weighted, of L_lambda (..., W)."""
    tp = np.interp(wave_aa, band_wave, band_pass, left=0.0, right=0.0)
    f = np.asarray(lum_erg_s_aa, float) / (4.0 * np.pi * (10.0 * PC_CM) ** 2)
    num = trapezoid(f * tp * wave_aa, wave_aa, axis=-1)
    den = trapezoid(AB_FNU_CGS * C_AA_PER_S / wave_aa**2 * tp * wave_aa, wave_aa)
    return -2.5 * np.log10(np.maximum(num / den, 1e-300))


def _make_member(models: dict, p: dict, bp: ModuleType) -> tuple[np.ndarray, np.ndarray, dict]:
    """One bank member: (rest wave, L_lambda) and its derived quantities."""
    key = "burst" if p["BURST"] else "plain"
    comp = _components(p, p["BURST"])
    if key not in models:
        models[key] = bp.model_galaxy(comp, spec_wavs=np.array([REST_MIN_AA - 50.0, REST_MAX_AA + 50.0]))
    else:
        models[key].update(comp)
    mod = models[key]
    wave = mod.wavelengths
    # erg/s/A at redshift 0; bagpipes' nebular continuum leaves NaN in a few pixels just above
    # the Lyman edge (912-915 A): set to 0 (they lie below the GU band for z < 1.6)
    lum = np.nan_to_num(np.asarray(mod.spectrum_full, float), nan=0.0, posinf=0.0, neginf=0.0) / LSUN_ERG_S
    lines = mod.line_fluxes  # erg/s, attenuated (EW: lines in L_sun)
    ha_cont = _median_windows(wave, lum, HA_CONT_WINDOWS_AA)
    oii_cont = _median_windows(wave, lum, OII_CONT_WINDOWS_AA)
    derived = {
        "LOG_MSTAR": float(mod.sfh.stellar_mass),
        "SFR": float(mod.sfh.sfr),
        "EW_HA": float(lines[HA_LINE] / LSUN_ERG_S / ha_cont) if ha_cont > 0 else 0.0,
        "EW_OII": float(sum(lines[n] for n in OII_LINES) / LSUN_ERG_S / oii_cont) if oii_cont > 0 else 0.0,
    }
    centres, edges = rest_wave_grid_aa()
    return centres, rebin_flux_conserving(wave, lum, edges), derived


@dataclass
class SedBank:
    """A bank of rest-frame SPS models.

    Attributes
    ----------
    rest_wave_aa : ndarray (W,)
    lum : ndarray (K, W) float32
        L_lambda [L_sun/A] of each member at its own stellar mass.
    params : dict of str -> ndarray (K,)
        Drawn parameters and bagpipes-derived quantities (LOG_MSTAR, SFR, EW_HA, ...,
        ABSMAG_R, REST_UR).
    igm_z : ndarray (Nz,), igm : ndarray (Nz, W_igm) float32
        IGM transmission (Inoue et al. 2014) for the first W_igm rest wavelengths.
    path : Path
    """

    rest_wave_aa: np.ndarray
    lum: np.ndarray
    params: dict
    igm_z: np.ndarray
    igm: np.ndarray
    path: Path


def bank_key(seed: int, size: int) -> str:
    """Name of a bank's cache directory."""
    return f"seed{int(seed)}-K{int(size)}-v{PRIOR_VERSION}-bagpipes{BAGPIPES_VERSION}"


def ensure_bank(seed: int, size: int = BANK_SIZE, cache_dir: PathLike | None = None, progress: bool = False) -> Path:
    """Make (once) and return the cache directory of the bank (seed, size).

    Building costs ~0.1-0.2 s of bagpipes per member (K = 2000: a few minutes);
    later calls only check that ``meta.json`` exists.
    """
    if isinstance(size, bool) or int(size) < 1:
        raise InputError("bank_size", "must be a positive integer", value=size)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / bank_key(seed, size)
    if (final / "meta.json").is_file():
        return final
    bp = _require_bagpipes()
    import warnings

    t0 = time.perf_counter()
    models: dict = {}
    lum, rows, wave = None, [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(int(size)):
            p = draw_bank_parameters(seed, k)
            w, spec, derived = _make_member(models, p, bp)
            if lum is None:
                wave = w
                lum = np.empty((int(size), w.size), np.float32)
            lum[k] = spec
            p.update(derived)
            rows.append(p)
            if progress and (k + 1) % 200 == 0:
                print(f"sps bank: {k + 1}/{size} members, {time.perf_counter() - t0:.0f} s", flush=True)
        igm_model = bp.models.igm(wave)
    params = {c: np.array([r[c] for r in rows]) for c in rows[0]}
    ur, ar = _rest_ur(wave, np.asarray(lum, np.float64) * LSUN_ERG_S)
    params["REST_UR"], params["ABSMAG_R"] = ur, ar
    params["LOG_SSFR"] = np.log10(np.maximum(params["SFR"], 1e-30)) - params["LOG_MSTAR"]
    igm_z = np.arange(0.0, BANK_Z_MAX + DZ_WINDOW + _Z_GRID_STEP, _Z_GRID_STEP)
    n_igm = int(np.searchsorted(wave, 1216.0)) + 2
    igm = np.stack([igm_model.trans(max(zz, 1e-3))[:n_igm] for zz in igm_z]).astype(np.float32)
    build_s = time.perf_counter() - t0
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        np.save(tmp / "rest_wave_aa.npy", wave.astype(np.float64))
        np.save(tmp / "lum.npy", lum)
        np.savez(tmp / "params.npz", **params)
        np.save(tmp / "igm_z.npy", igm_z)
        np.save(tmp / "igm.npy", igm)
        meta = {
            "seed": int(seed),
            "size": int(size),
            "prior_version": PRIOR_VERSION,
            "bagpipes_version": BAGPIPES_VERSION,
            "build_seconds": round(build_s, 1),
            "units": "lum: L_lambda [L_sun/A, L_sun = 3.826e33 erg/s] at the member's stellar mass, rest frame",
            "bytes": int(lum.nbytes),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same bank first
            if not (final / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _rest_ur(wave: np.ndarray, lum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uw, up = _sdss_response("u")
    rw, rp = _sdss_response("r")
    mu = _abmag_10pc(wave, lum, uw, up)
    mr = _abmag_10pc(wave, lum, rw, rp)
    return mu - mr, mr


@lru_cache(maxsize=4)
def load_bank(path: PathLike) -> SedBank:
    """Read a bank directory written by :func:`ensure_bank`."""
    p = Path(path)
    try:
        meta = json.loads((p / "meta.json").read_text())
        wave = np.load(p / "rest_wave_aa.npy")
        lum = np.load(p / "lum.npy", mmap_mode="r")
        with np.load(p / "params.npz") as z:
            params = {k: z[k] for k in z.files}
        igm_z, igm = np.load(p / "igm_z.npy"), np.load(p / "igm.npy")
    except (OSError, ValueError, KeyError) as exc:
        raise FileFormatError(str(p), f"unreadable SPS bank ({exc}); delete it to rebuild") from None
    if lum.shape != (meta["size"], wave.size):
        raise FileFormatError(str(p / "lum.npy"), f"shape {lum.shape} does not match meta size {meta['size']}")
    return SedBank(wave, np.asarray(lum), params, igm_z, igm, p)


# --- the population ---------------------------------------------------------------------------------
class SpsPopulation:
    """SPS galaxies with nebular emission, drawn like :class:`.embedded.EmbeddedPopulation`.

    Parameters
    ----------
    instrument : csstz.instrument.Instrument, optional
        Gives the GV and GI throughputs for the selection magnitudes (default CSST).
    mag_limit_gi, mag_bright_gi : float
        Selection limits [AB mag] in GI.
    bank_size : int
        Members of the SED bank (made once per seed, cached; see :func:`ensure_bank`).
    cache_dir : path-like, optional
        Overrides ``$CSSTZ_CACHE/sps``.
    """

    def __init__(
        self,
        instrument: Instrument | None = None,
        mag_limit_gi: float = MAG_LIMIT_GI,
        mag_bright_gi: float = MAG_BRIGHT_GI,
        bank_size: int = BANK_SIZE,
        cache_dir: PathLike | None = None,
    ) -> None:
        from astropy import units as u
        from astropy.cosmology import Planck18

        instrument = selection_instrument(instrument, mag_limit_gi, mag_bright_gi)
        self.instrument = instrument
        self.mag_bands = tuple(dict.fromkeys(instrument.network_bands + (SELECTION_BAND,)))
        self.mag_limit_gi, self.mag_bright_gi = float(mag_limit_gi), float(mag_bright_gi)
        self.bank_size, self.cache_dir = int(bank_size), cache_dir
        self.z_grid = np.arange(_Z_GRID_MIN, Z_MAX + DZ_WINDOW + _Z_GRID_STEP, _Z_GRID_STEP)
        self.dl_cm_grid = Planck18.luminosity_distance(self.z_grid).to_value(u.cm)
        self.kpc_per_arcsec_grid = Planck18.kpc_proper_per_arcmin(self.z_grid).to_value(u.kpc / u.arcmin) / 60.0
        self.wave_aa = sed_wave_aa()
        self._edges = np.concatenate(
            [self.wave_aa - 0.5 * np.diff(self.wave_aa)[0], [self.wave_aa[-1] + 0.5 * np.diff(self.wave_aa)[0]]]
        )
        self._banks: dict = {}

    # -- bank and band tables --
    def bank(self, seed: int) -> tuple[SedBank, dict]:
        """The seed's bank (built on first use) and its band-magnitude tables."""
        seed = int(seed)
        if seed not in self._banks:
            bank = load_bank(ensure_bank(seed, self.bank_size, self.cache_dir))
            order = np.argsort(bank.params["BANK_Z"], kind="stable")
            tables = {b: self._band_table(bank, self.instrument.band(b)) for b in self.mag_bands}
            P = bank.params
            # 1 / proposal density of each member (WEIGHT = phi(M_target, z_k) / q)
            inv_q = P["WEIGHT"] / np.maximum(smf_phi(P["LOG_MSTAR_TARGET"], P["BANK_Z"], P["QUIESCENT"]), 1e-300)
            self._banks[seed] = (bank, {"order": order, "z_sorted": P["BANK_Z"][order], "inv_q": inv_q, **tables})
        return self._banks[seed]

    def _band_table(self, bank: SedBank, band: Band) -> np.ndarray:
        """AB magnitude of every member at every z of the grid, shape (K, Nz).

        Band average of f_lambda = L(lam/(1+z)) / (4 pi d_L^2 (1+z)), written on the rest grid:
        int f T lam dlam = int L(lam_r) T(lam_r (1+z)) lam_r (1+z) dlam_r / (4 pi d_L^2), i.e. one
        matrix product lum (K, W) @ R (W, Nz) with trapezoid weights (lines, one pixel wide, keep
        their flux).
        """
        lo, hi = band.tp_range_aa
        wave_tp = np.arange(lo, hi + 2.0, 2.0)
        norm = trapezoid(AB_FNU_CGS * C_AA_PER_S / wave_tp**2 * band.throughput(wave_tp) * wave_tp, wave_tp)
        wr = bank.rest_wave_aa
        dw = np.gradient(wr)
        resp = np.empty((wr.size, self.z_grid.size))
        for j, z in enumerate(self.z_grid):
            obs = wr * (1.0 + z)
            tp = np.where((obs >= lo) & (obs <= hi), band.throughput(np.clip(obs, lo, hi)), 0.0)
            resp[:, j] = tp * obs * dw / (4.0 * np.pi * self.dl_cm_grid[j] ** 2)
        num = (np.asarray(bank.lum, np.float64) * LSUN_ERG_S) @ resp
        return -2.5 * np.log10(np.maximum(num / norm, 1e-300))

    def _mag_at(self, table: np.ndarray, rows: ArrayLike, z: float) -> np.ndarray:
        x = (z - _Z_GRID_MIN) / _Z_GRID_STEP
        i = int(np.clip(np.floor(x), 0, self.z_grid.size - 2))
        t = x - i
        return table[rows, i] * (1.0 - t) + table[rows, i + 1] * t

    # -- one galaxy --
    def draw_one(self, seed: int, targetid: int, split: str) -> dict:
        """Catalogue entries of one galaxy (regenerable from seed and TARGETID)."""
        bank, tab = self.bank(seed)
        rng = galaxy_rng(seed, targetid, STREAM_POPULATION)
        z = sample_z_for_split(rng, split)
        lo, hi = np.searchsorted(tab["z_sorted"], [z - DZ_WINDOW, z + DZ_WINDOW])
        cand = tab["order"][lo:hi]
        P = bank.params
        m_gi = self._mag_at(tab[SELECTION_BAND], cand, z)
        # each member is an SED shape at mass M_k, usable at M_k + d for |d| <= MASS_SHIFT_MAX_DEX:
        # the d that pass the selection form [d_lo, d_hi]; the member's probability is
        # int phi(M_k + d, z) dd / q_k (q_k its proposal density), and d is then drawn from phi
        d_lo = np.maximum(-MASS_SHIFT_MAX_DEX, (m_gi - self.mag_limit_gi) / 2.5)
        d_hi = np.minimum(MASS_SHIFT_MAX_DEX, (m_gi - self.mag_bright_gi) / 2.5)
        ok = d_lo < d_hi
        fallback = not np.any(ok)
        if fallback:  # nothing can pass (not seen at the default limits): the brightest few, unshifted
            idx = int(rng.choice(cand[np.argsort(m_gi)[:10]]))
            dlog = 0.0
        else:
            pick, d_lo, d_hi = cand[ok], d_lo[ok], d_hi[ok]
            t = np.linspace(0.0, 1.0, 9)
            d = d_lo[:, None] + (d_hi - d_lo)[:, None] * t[None, :]
            phi = smf_phi(P["LOG_MSTAR"][pick][:, None] + d, z, P["QUIESCENT"][pick][:, None])
            w = trapezoid(phi, d, axis=1) * tab["inv_q"][pick]
            # truncated importance sampling (Ionides 2008): cap at sqrt(n) x mean
            w = np.minimum(w, np.sqrt(w.size) * w.mean())
            j = int(rng.choice(pick.size, p=w / w.sum()))
            idx = int(pick[j])
            dd = np.linspace(d_lo[j], d_hi[j], 33)
            pd = smf_phi(P["LOG_MSTAR"][idx] + dd, z, bool(P["QUIESCENT"][idx]))
            cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pd[1:] + pd[:-1]) * np.diff(dd))])
            dlog = float(np.interp(rng.random() * cdf[-1], cdf, dd))
        P = bank.params
        absmag_r = float(P["ABSMAG_R"][idx]) - 2.5 * dlog
        rest_ur = float(P["REST_UR"][idx])
        kpc_as = float(np.interp(z, self.z_grid, self.kpc_per_arcsec_grid))
        morph = draw_morphology(rng, absmag_r, rest_ur, z, kpc_as)
        sfr = float(P["SFR"][idx]) * 10.0**dlog
        return {
            "TARGETID": int(targetid),
            "Z": float(z),
            "SHAPE_R": morph["SHAPE_R"],
            "SERSIC": morph["SERSIC"],
            "BA": morph["BA"],
            "PA": morph["PA"],
            "SPLIT": split,
            **{f"MAG_{b}": float(self._mag_at(tab[b], [idx], z)[0]) - 2.5 * dlog for b in self.mag_bands},
            "ABSMAG_R": absmag_r,
            "REST_UR": rest_ur,
            "EARLY": bool(morph["EARLY"]),
            "SEL_FALLBACK": bool(fallback),
            "BANK_INDEX": idx,
            "BANK_Z": float(P["BANK_Z"][idx]),
            "LOG_MSTAR": float(P["LOG_MSTAR"][idx]) + dlog,
            "SFR": sfr,
            "LOG_SSFR": float(P["LOG_SSFR"][idx]),
            "METALLICITY": float(P["METALLICITY"][idx]),
            "AV": float(P["AV"][idx]),
            "LOG_U": float(P["LOG_U"][idx]),
            "AGE": float(P["AGE"][idx]),
            "TAU": float(P["TAU"][idx]),
            "QUIESCENT": bool(P["QUIESCENT"][idx]),
            "BURST": bool(P["BURST"][idx]),
            "EW_OII": float(P["EW_OII"][idx]),
            "EW_HA": float(P["EW_HA"][idx]),
            "LOG_MASS_SHIFT": dlog,
        }

    def sed_flam17(self, seed: int, bank_index: int, log_mass_shift: float, z: float) -> np.ndarray:
        """Observed f_lambda [1e-17 erg/s/cm^2/A] on :func:`sed_wave_aa`, pixel-averaged (flux conserving)."""
        bank, _ = self.bank(seed)
        wave = bank.rest_wave_aa
        lum = np.asarray(bank.lum[bank_index], np.float64) * (LSUN_ERG_S * 10.0**log_mass_shift)
        n_igm = bank.igm.shape[1]
        j = int(np.clip(np.searchsorted(bank.igm_z, z) - 1, 0, bank.igm_z.size - 2))
        t = (z - bank.igm_z[j]) / (bank.igm_z[j + 1] - bank.igm_z[j])
        lum[:n_igm] *= bank.igm[j] * (1.0 - t) + bank.igm[j + 1] * t
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (lum[1:] + lum[:-1]) * np.diff(wave))])
        edges = self._edges / (1.0 + z)
        c = np.interp(edges, wave, cum)
        rest_avg = np.diff(c) / np.diff(edges)
        dl = float(np.interp(z, self.z_grid, self.dl_cm_grid))
        return rest_avg / (4.0 * np.pi * dl**2 * (1.0 + z)) / FLAM17

    def draw(self, seed: int, targetids: ArrayLike) -> PopulationChunk:
        """Draw the galaxies with the given TARGETIDs (same contract as the embedded source)."""
        tids = np.asarray(targetids, np.int64)
        splits = split_of(seed, tids)
        rows = [self.draw_one(seed, int(t), str(s)) for t, s in zip(tids, splits)]
        cols = {key: np.array([r[key] for r in rows]) for key in (rows[0] if rows else [])}
        flux = np.empty((len(rows), self.wave_aa.size), np.float64)
        for i, r in enumerate(rows):
            flux[i] = self.sed_flam17(seed, r["BANK_INDEX"], r["LOG_MASS_SHIFT"], r["Z"])
        return PopulationChunk(cols, self.wave_aa, flux)

    def rest_frame_seds(self, seed: int, targetids: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Rest-frame SEDs of the given galaxies on the bank grid.

        Returns
        -------
        rest_wave_aa : ndarray (W,)
        lum_lsun_per_aa : ndarray (N, W) float32
            L_lambda [L_sun/A] (L_sun = 3.826e33 erg/s) at the galaxy's stellar mass.
        """
        bank, _ = self.bank(seed)
        tids = np.asarray(targetids, np.int64)
        splits = split_of(seed, tids)
        out = np.empty((tids.size, bank.rest_wave_aa.size), np.float32)
        for i, (t, s) in enumerate(zip(tids, splits)):
            r = self.draw_one(seed, int(t), str(s))
            out[i] = bank.lum[r["BANK_INDEX"]] * np.float32(10.0 ** r["LOG_MASS_SHIFT"])
        return bank.rest_wave_aa.copy(), out


@lru_cache(maxsize=4)
def get_sps_population(
    instrument_path: str | None = None, mag_limit_gi: float = MAG_LIMIT_GI, bank_size: int = BANK_SIZE
) -> SpsPopulation:
    """A cached :class:`SpsPopulation`."""
    from ..instrument import load_instrument

    return SpsPopulation(load_instrument(instrument_path), mag_limit_gi=mag_limit_gi, bank_size=bank_size)


def rest_frame_seds(seed: int, targetids: ArrayLike, bank_size: int = BANK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame SEDs (wave [A], L_lambda [L_sun/A] (N, W)) of SPS galaxies (default instrument)."""
    return get_sps_population(bank_size=bank_size).rest_frame_seds(seed, targetids)


def get_sps_description(mag_limit_gi: float = MAG_LIMIT_GI, bank_size: int = BANK_SIZE) -> dict:
    """The SPS population's choices, stored in every dataset's root attributes."""
    return {
        "source": "sps",
        "code": f"bagpipes {BAGPIPES_VERSION} (BC03 MILES + Cloudy nebular, Inoue+14 IGM)",
        "prior_version": PRIOR_VERSION,
        "bank_size": int(bank_size),
        "bank_z_max": BANK_Z_MAX,
        "dz_window": DZ_WINDOW,
        "cosmology": "Planck18 (distances, ages)",
        "selection": f"{MAG_BRIGHT_GI} < MAG_GI < {mag_limit_gi}, member drawn with SMF weights among "
        "those passing at the drawn z",
        "priors": "see csstz.population.sps (Baldry+12/Peng+10/Muzzin+13 SMFs, Speagle+14 MS, Zahid+14 MZR, "
        "Garn & Best 10 dust, Calzetti+00, delayed tau + 10% bursts)",
        "morphology": "csstz.population.morphology (Shen+2003 sizes, Sersic by rest u-r)",
        "split": "TARGETID mod 10 through a seeded permutation: 8 train, 1 val, 1 test",
    }


__all__ = [
    "SpsPopulation",
    "SedBank",
    "ensure_bank",
    "load_bank",
    "draw_bank_parameters",
    "rest_frame_seds",
    "get_sps_population",
    "get_sps_description",
    "bagpipes_available",
    "cache_root",
    "smf_phi",
    "quiescent_fraction",
    "main_sequence_log_sfr",
    "mzr_z_solar",
    "av_star_forming",
    "solve_tau_gyr",
    "BANK_SIZE",
    "PRIOR_VERSION",
    "BAGPIPES_VERSION",
]
