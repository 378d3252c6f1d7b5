"""Galaxy morphology drawn like the paper's Fig. 2 (LS DR9 fits of DESI/BOSS galaxies).

Every function takes the galaxy's generator and returns plain floats, so that a
galaxy's shape is regenerable from (seed, TARGETID).

Choices (``docs/population.md``):

* Type: rest-frame SDSS u - r >= 2.22 is "early" (red), else "late" (blue);
  separator of Strateva et al. 2001 (AJ 122, 1861).
* Sersic index: LS DR9 fits mostly give the fixed profiles n = 1 (EXP/REX) and
  n = 4 (DEV), or a free SER fit capped at n = 6, so that n = 6 is common among
  luminous red galaxies (paper sec. 2.2). Early: 35 % n = 4, 35 % n = 6,
  30 % free n ~ N(3.5, 1.0) clipped to [2, 6]. Late: 55 % n = 1, 45 % free
  n = 10**N(0.05, 0.2) clipped to [0.3, 6.2]. Free indices are rounded to 0.05.
* Size: r-band half-light radius from the size-luminosity relations of Shen et
  al. 2003 (MNRAS 343, 978; eqs. 14 and 18, h = 0.7): early log10 R[kpc] =
  -0.4 * 0.65 * M - 5.06; late log10 R = -0.4 * 0.21 * M + 0.32 * log10(1 +
  10**(-0.4 (M + 20.52))) - 1.31; log-normal scatter sigma_lnR = 0.25 +
  0.23 / (1 + 10**(-0.8 (M + 20.52))) (their eq. 16). Redshift evolution
  R ~ (1+z)**-0.75 (late) and (1+z)**-1.48 (early) (van der Wel et al. 2014,
  ApJ 788, 28). Angle = R / D_A(z) (Planck18).
* Axis ratio: late = a thin oblate disc (intrinsic q0 = 0.2) seen at an
  isotropic inclination, b/a = sqrt(q0**2 + (1 - q0**2) cos**2 i); early =
  N(0.72, 0.15) clipped to [0.3, 1] (Padilla & Strauss 2008, MNRAS 388, 1321).
* PA: uniform in [-90, 90) degrees, counter-clockwise from the dispersion axis.
"""

from __future__ import annotations

import numpy as np

from ..schema import SERSIC_RANGE

#: u - r separator of early and late types (Strateva et al. 2001).
UR_SEPARATOR_MAG = 2.22
#: Shen et al. 2003 size-luminosity relation coefficients (r band, kpc, h = 0.7).
SHEN_EARLY_A, SHEN_EARLY_B = 0.65, -5.06
SHEN_LATE_ALPHA, SHEN_LATE_BETA, SHEN_LATE_GAMMA, SHEN_M0 = 0.21, 0.53, -1.31, -20.52
SHEN_SIGMA1_LN, SHEN_SIGMA2_LN = 0.48, 0.25
#: Size evolution exponents (van der Wel et al. 2014).
EVOL_LATE, EVOL_EARLY = -0.75, -1.48
#: Intrinsic thickness of discs.
DISC_Q0 = 0.2
#: Range of SHAPE_R kept [arcsec]: LS DR9 resolves ~0.03" at best; 15" bounds nearby giants.
SHAPE_R_MIN_ARCSEC, SHAPE_R_MAX_ARCSEC = 0.03, 15.0
SERSIC_MIN, SERSIC_MAX = SERSIC_RANGE  # the simulator's valid range (csstz.schema)
#: Grid of the free Sersic indices (see _quantise).
SERSIC_STEP = 0.05


def is_early(u_minus_r_mag: float) -> bool:
    """Early (red) type by rest-frame u - r (Strateva et al. 2001)."""
    return bool(u_minus_r_mag >= UR_SEPARATOR_MAG)


def draw_sersic(rng: np.random.Generator, early: bool) -> float:
    """Sersic index n of one galaxy (LS DR9-like mixture, see module doc)."""
    u = rng.random()
    if early:
        if u < 0.35:
            return 4.0
        if u < 0.70:
            return 6.0
        return _quantise(np.clip(rng.normal(3.5, 1.0), 2.0, 6.0))
    if u < 0.55:
        return 1.0
    return _quantise(np.clip(10.0 ** rng.normal(0.05, 0.2), SERSIC_MIN, SERSIC_MAX))


def _quantise(n: float) -> float:
    """Free Sersic indices on a 0.05 grid: the profile changes negligibly, and the simulator
    reuses its cached GalSim Sersic profile per distinct n (a new n costs ~10 ms of set-up)."""
    return float(np.clip(np.round(n / SERSIC_STEP) * SERSIC_STEP, SERSIC_MIN, SERSIC_MAX))


def half_light_radius_kpc(rng: np.random.Generator, absmag_r: float, early: bool, z: float) -> float:
    """Half-light radius [kpc] from Shen et al. 2003 with scatter and (1+z) evolution."""
    m = float(absmag_r)
    if early:
        log_r = -0.4 * SHEN_EARLY_A * m + SHEN_EARLY_B
        evol = EVOL_EARLY
    else:
        log_r = (
            -0.4 * SHEN_LATE_ALPHA * m
            + (SHEN_LATE_BETA - SHEN_LATE_ALPHA) * np.log10(1.0 + 10.0 ** (-0.4 * (m - SHEN_M0)))
            + SHEN_LATE_GAMMA
        )
        evol = EVOL_LATE
    sigma_ln = SHEN_SIGMA2_LN + (SHEN_SIGMA1_LN - SHEN_SIGMA2_LN) / (1.0 + 10.0 ** (-0.8 * (m - SHEN_M0)))
    ln_r = log_r * np.log(10.0) + sigma_ln * rng.normal()
    return float(np.exp(ln_r) * (1.0 + z) ** evol)


def draw_axis_ratio(rng: np.random.Generator, early: bool) -> float:
    """Projected axis ratio b/a in (0, 1]."""
    if early:
        return float(np.clip(rng.normal(0.72, 0.15), 0.3, 1.0))
    cos_i = rng.random()
    return float(np.sqrt(DISC_Q0**2 + (1.0 - DISC_Q0**2) * cos_i**2))


def draw_position_angle_deg(rng: np.random.Generator) -> float:
    """Position angle [deg], uniform in [-90, 90), from the dispersion axis, counter-clockwise."""
    return float(-90.0 + 180.0 * rng.random())


def draw_morphology(
    rng: np.random.Generator, absmag_r: float, u_minus_r_mag: float, z: float, kpc_per_arcsec: float
) -> dict:
    """SHAPE_R [arcsec], SERSIC, BA, PA [deg] of one galaxy.

    Parameters
    ----------
    absmag_r : float
        Rest-frame SDSS r absolute magnitude (AB, h = 0.7 / Planck18).
    u_minus_r_mag : float
        Rest-frame u - r colour [mag].
    z : float
        Redshift.
    kpc_per_arcsec : float
        Proper transverse scale at z [kpc/arcsec].
    """
    early = is_early(u_minus_r_mag)
    n = draw_sersic(rng, early)
    r_kpc = half_light_radius_kpc(rng, absmag_r, early, z)
    shape_r = float(np.clip(r_kpc / kpc_per_arcsec, SHAPE_R_MIN_ARCSEC, SHAPE_R_MAX_ARCSEC))
    ba = draw_axis_ratio(rng, early)
    pa = draw_position_angle_deg(rng)
    return {"SHAPE_R": shape_r, "SERSIC": n, "BA": ba, "PA": pa, "EARLY": early}


__all__ = [
    "draw_morphology",
    "draw_sersic",
    "half_light_radius_kpc",
    "draw_axis_ratio",
    "draw_position_angle_deg",
    "is_early",
    "UR_SEPARATOR_MAG",
]
