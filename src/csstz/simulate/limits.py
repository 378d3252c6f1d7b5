"""Point-source limiting magnitudes of the slitless bands.

Definition ("wide-band-equivalent", Gong et al. 2019 as quoted in
arXiv:2407.13991): the AB magnitude of a flat-f_nu point source whose
first-order counts, summed over the whole band (every pixel of the band's
extraction grid, in an aperture ``aperture_rows`` pixels tall across the
trace), reach ``nsigma`` times their noise::

    S / sqrt(S + N_pix * (B + n_exp * RN^2)) = nsigma,
    B = (sky + dark) * t_total per pixel, N_pix = n_pix(band) * aperture_rows.

S for magnitude m follows from the band's count rate of an AB = 23 source,
integrated over the tabulated throughput.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import trapezoid

from ..errors import InputError
from ..instrument import Band, Instrument
from ..units import C_AA_PER_S, H_ERG_S, abmag_to_flam17

REFERENCE_MAG_AB = 23.0


def count_rate_e_per_s(band: Band, instrument: Instrument, mag_ab: float = REFERENCE_MAG_AB) -> float:
    """Electrons per second over the whole band from a flat-f_nu source of ``mag_ab``.

    Integral of f_lambda T(lambda) A lambda / (h c) over the throughput table,
    on a 1 A grid.
    """
    lo, hi = band.tp_range_aa
    wave = np.arange(lo, hi + 1.0, 1.0)
    flam = abmag_to_flam17(mag_ab, wave) * 1e-17  # erg/s/cm^2/A
    return float(trapezoid(flam * band.throughput(wave) * instrument.area_cm2 * wave / (H_ERG_S * C_AA_PER_S), wave))


def limiting_magnitude(
    band: Band,
    instrument: Instrument,
    nsigma: float = 5.0,
    aperture_rows: int = 6,
    n_exposures: int | None = None,
    exptime_s: float | None = None,
) -> float:
    """The ``nsigma`` point-source limiting AB magnitude of a band (see module docstring).

    Parameters
    ----------
    band : Band
    instrument : Instrument
    nsigma : float
        Detection threshold in sigma (default 5).
    aperture_rows : int
        Height of the extraction aperture across the trace [pixels].
    n_exposures, exptime_s : optional
        Override the instrument's exposure setup (number; seconds each).

    Raises
    ------
    InputError
        Non-positive nsigma, aperture_rows, n_exposures or exptime_s.
    """
    n_exp = instrument.n_exposures if n_exposures is None else int(n_exposures)
    t_exp = instrument.exptime_s if exptime_s is None else float(exptime_s)
    for name, val in (
        ("nsigma", nsigma),
        ("aperture_rows", aperture_rows),
        ("n_exposures", n_exp),
        ("exptime_s", t_exp),
    ):
        if not (val > 0 and math.isfinite(val)):
            raise InputError(name, "must be positive", value=val)
    t_total = n_exp * t_exp
    var_pix = (band.sky_e_per_s_per_pix + instrument.dark_e_per_s) * t_total + n_exp * instrument.read_noise_e**2
    n_pix = band.n_pix * int(aperture_rows)
    k2 = nsigma**2
    signal_e = 0.5 * (k2 + math.sqrt(k2 * k2 + 4.0 * k2 * n_pix * var_pix))
    rate_ref = count_rate_e_per_s(band, instrument)
    return REFERENCE_MAG_AB - 2.5 * math.log10(signal_e / t_total / rate_ref)


__all__ = ["limiting_magnitude", "count_rate_e_per_s", "REFERENCE_MAG_AB"]
