"""Calibration on synthetic predictions with known miscalibration (fitted on one half, checked on the other)."""

import numpy as np
import pytest

from csstz.calibrate import (
    P68,
    P95,
    Calibration,
    calibrated_reliability,
    fit_calibration,
    interval_coverage,
    pit_values,
)
from csstz.errors import FileFormatError, InputError


def _synthetic(n, sigma_factor, seed, bias_sigma=0.0):
    """Truth drawn from N(mu + bias, (factor * sigma)^2) while the prediction claims sigma."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.1, 1.2, n)
    sigma = rng.uniform(0.001, 0.01, n) * (1 + mu)
    z_true = mu + sigma * (bias_sigma + sigma_factor * rng.standard_normal(n))
    return z_true, mu, sigma


@pytest.mark.parametrize("method", ["beta", "scale"])
@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_calibration_restores_coverage(method, factor):
    zt, mu, sig = _synthetic(4000, factor, seed=1)  # "validation"
    cal = fit_calibration(zt, mu, sig, method)
    zt2, mu2, sig2 = _synthetic(20000, factor, seed=2)  # independent "test"
    before68 = interval_coverage(zt2, mu2 - sig2, mu2 + sig2)
    assert abs(before68 - P68) > 0.2  # it really was miscalibrated
    for level in (P68, P95):
        cov = interval_coverage(zt2, *cal.interval(mu2, sig2, level))
        assert abs(cov - level) < 0.02, (method, factor, level, cov)
    # the calibrated 1-sigma ZERR is the half-width of the 68.27% interval: ~ factor * sigma
    assert cal.k68 == pytest.approx(factor, rel=0.05)
    zerr = cal.zerr(sig2)
    assert interval_coverage(zt2, mu2 - zerr, mu2 + zerr) == pytest.approx(P68, abs=0.02)


def test_beta_handles_bias():
    zt, mu, sig = _synthetic(4000, 1.5, seed=3, bias_sigma=0.5)
    cal = fit_calibration(zt, mu, sig, "beta")
    zt2, mu2, sig2 = _synthetic(20000, 1.5, seed=4, bias_sigma=0.5)
    lv, obs = calibrated_reliability(zt2, mu2, sig2, cal)
    assert np.max(np.abs(obs - lv)) < 0.03
    lv0, obs0 = calibrated_reliability(zt2, mu2, sig2)
    assert np.max(np.abs(obs0 - lv0)) > 0.15


def test_well_calibrated_is_left_alone():
    zt, mu, sig = _synthetic(4000, 1.0, seed=5)
    for method in ("beta", "scale"):
        assert fit_calibration(zt, mu, sig, method).k68 == pytest.approx(1.0, abs=0.05)
    assert fit_calibration(zt, mu, sig, "none").k68 == pytest.approx(1.0, abs=1e-6)


def test_pit_uniform_for_true_gaussian():
    zt, mu, sig = _synthetic(20000, 1.0, seed=6)
    u = pit_values(zt, mu, sig)
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert np.all(np.abs(hist / u.size - 0.1) < 0.01)


def test_save_load_round_trip(tmp_path):
    zt, mu, sig = _synthetic(2000, 2.0, seed=7)
    cal = fit_calibration(zt, mu, sig, "beta")
    cal.save(tmp_path / "calibration.json")
    back = Calibration.load(tmp_path / "calibration.json")
    assert back == cal
    assert back.k68 == cal.k68
    assert set(cal.header()) >= {"CALMETH", "CALK68", "CALA", "CALB", "CALC"}


def test_bad_input():
    with pytest.raises(InputError, match="calibration"):
        fit_calibration([0.1] * 20, [0.1] * 20, [0.01] * 20, "isotonic")
    with pytest.raises(InputError, match="sigma"):
        fit_calibration([0.1] * 20, [0.1] * 20, [0.01] * 19, "beta")
    with pytest.raises(InputError, match="sigma"):
        fit_calibration([0.1] * 20, [0.1] * 20, [0.0] * 20, "scale")
    with pytest.raises(FileFormatError):
        Calibration.load("/nonexistent/calibration.json")
