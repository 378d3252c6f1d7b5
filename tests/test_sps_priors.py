"""SPS priors (pure numpy) and the missing-bagpipes error: these run without the optional extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from csstz.errors import MissingDependencyError
from csstz.population import sps


def test_package_imports_without_bagpipes_and_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "bagpipes", None)  # import bagpipes -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'csstz\[sps\]'") as exc:
        sps.ensure_bank(0, 5, cache_dir=tmp_path)
    assert "\n" not in str(exc.value)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_main_sequence_speagle14():
    # eq. 28 at t = 13.8 Gyr, log M = 10: log SFR = 0.4812 * 10 - 4.992 = -0.18
    assert sps.main_sequence_log_sfr(10.0, 13.8) == pytest.approx(-0.180, abs=1e-3)
    # sSFR at fixed mass rises by ~0.9 dex from z = 0 (13.8 Gyr) to z = 1 (5.9 Gyr)
    rise = sps.main_sequence_log_sfr(10.0, 5.9) - sps.main_sequence_log_sfr(10.0, 13.8)
    assert 0.8 < rise < 1.2


def test_quiescent_fraction_rises_with_mass_and_falls_with_z():
    fq = sps.quiescent_fraction(np.array([9.0, 10.0, 11.0]), 0.1)
    assert np.all(np.diff(fq) > 0)
    assert sps.quiescent_fraction(10.8, 1.0) < sps.quiescent_fraction(10.8, 0.1)


def test_mzr_and_dust_increase_with_mass():
    z = sps.mzr_z_solar(np.array([9.0, 10.0, 11.0]), 0.0)
    assert np.all(np.diff(z) > 0) and 0.3 < z[0] < 1.0 < z[2] < 2.5
    assert sps.mzr_z_solar(10.0, 1.0) < sps.mzr_z_solar(10.0, 0.0)  # Zahid+14 evolution
    av = sps.av_star_forming(np.array([9.0, 10.0, 11.0]))
    assert np.all(np.diff(av) > 0) and av[1] == pytest.approx(0.91 / 1.87, rel=0.01)
    assert sps.eta_birth_cloud(0.0) == pytest.approx(1 / 0.44) and sps.eta_birth_cloud(2.0) == pytest.approx(1 / 0.76)
    assert sps.av_star_forming(10.0, 1.6) > sps.av_star_forming(10.0, 0.0)  # same A_Halpha, less extra on lines


def test_tau_solution_reproduces_the_target():
    for age, target in ((3.0, 0.3), (8.0, 0.05), (5.0, 1e-3)):
        tau = sps.solve_tau_gyr(age, target)
        assert sps.delayed_tau_ssfr_per_gyr(age, tau) == pytest.approx(target, rel=1e-3)


def test_bank_parameters_are_deterministic_and_physical():
    a, b = sps.draw_bank_parameters(7, 12), sps.draw_bank_parameters(7, 12)
    assert a == b and a != sps.draw_bank_parameters(7, 13)
    rows = [sps.draw_bank_parameters(0, k) for k in range(300)]
    for r in rows:
        assert 0 <= r["BANK_Z"] <= sps.BANK_Z_MAX
        assert r["AGE"] <= sps.age_of_universe_gyr(r["BANK_Z"] + sps.DZ_WINDOW)
        assert sps.Z_SUN_MIN <= r["METALLICITY"] <= sps.Z_SUN_MAX and r["AV"] >= 0
        assert sps.LOGU_MIN <= r["LOG_U"] <= sps.LOGU_MAX and r["WEIGHT"] >= 0
    q = np.array([r["QUIESCENT"] for r in rows])
    ssfr = np.array([r["LOG_SSFR_TARGET"] for r in rows])
    assert np.median(ssfr[q]) < np.median(ssfr[~q]) - 1.0


def test_embedded_rest_frame_seds_match_the_observed_sed():
    """Rest L_lambda (for learned template bases) put back at z gives the population's observed SED."""
    from astropy import units as u
    from astropy.cosmology import Planck18

    from csstz.population.embedded import get_population
    from csstz.units import FLAM17

    pop = get_population()
    wave_r, lum = pop.rest_frame_seds(0, [4, 9])
    chunk = pop.draw(0, [4, 9])
    for j in range(2):
        z = chunk.columns["Z"][j]
        dl_cm = Planck18.luminosity_distance(z).to_value(u.cm)
        f = (
            np.interp(chunk.wave_aa / (1 + z), wave_r, lum[j].astype(float))
            * 3.826e33
            / (4 * np.pi * dl_cm**2 * (1 + z))
            / FLAM17
        )
        np.testing.assert_allclose(f, chunk.flux_flam17[j], rtol=2e-3, atol=1e-6 * chunk.flux_flam17[j].max())
