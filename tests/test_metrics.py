"""Metrics reproduce hand-computed values and reject bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csstz.errors import InputError
from csstz.evaluate import metrics as m

# A four-source example worked by hand:
#   z_true = [0, 0, 1, 1], z_pred = [0.01, -0.02, 1.05, 1.0]
#   dz = [0.01, -0.02, 0.05, 0.0], median(dz) = (0 + 0.01)/2 = 0.005
#   (dz - 0.005)/(1+z) = [0.005, -0.025, 0.0225, -0.0025]
#   |.| sorted = [0.0025, 0.005, 0.0225, 0.025] -> median 0.01375 -> sigma_NMAD = 1.48*0.01375 = 0.02035
#   |dz|/(1+z) = [0.01, 0.02, 0.025, 0] -> only 0.025 > 0.02 (0.02 is not > 0.02) -> eta = 1/4
#   bias = median(dz/(1+z)) = median([0.01, -0.02, 0.025, 0]) = (0 + 0.01)/2 = 0.005
#   zerr = [0.02, 0.008, 0.04, 0.02] -> zerr/(1+z) = [0.02, 0.008, 0.02, 0.01] -> E_bar = 0.058/4 = 0.0145
#   |z_true - z_pred|/zerr = [0.5, 2.5, 1.25, 0] -> inside 1 sigma: 2/4, inside 2 sigma: 3/4
ZT = np.array([0.0, 0.0, 1.0, 1.0])
ZP = np.array([0.01, -0.02, 1.05, 1.0])
ZE = np.array([0.02, 0.008, 0.04, 0.02])


def test_sigma_nmad_hand_value():
    assert m.sigma_nmad(ZP, ZT) == pytest.approx(0.02035, rel=1e-12)


def test_sigma_nmad_subtracts_median_before_dividing():
    # a constant offset of 0.1 at z_true = 0: dz - median(dz) = 0 everywhere -> 0
    zt = np.zeros(5)
    assert m.sigma_nmad(zt + 0.1, zt) == pytest.approx(0.0, abs=1e-15)
    # dz = [0, 0.02] at z = 1: median 0.01, |dev|/(2) = [0.005, 0.005] -> 1.48*0.005 = 0.0074
    assert m.sigma_nmad([1.0, 1.02], [1.0, 1.0]) == pytest.approx(0.0074, rel=1e-12)


def test_outlier_fraction_hand_value_and_threshold():
    assert m.outlier_fraction(ZP, ZT) == 0.25
    # threshold 0.005: 0.01, 0.02, 0.025 exceed it -> 3/4
    assert m.outlier_fraction(ZP, ZT, threshold=0.005) == 0.75


def test_ebar_bias_hand_values():
    assert m.weighted_mean_uncertainty(ZE, ZT) == pytest.approx(0.0145, rel=1e-12)
    assert m.bias(ZP, ZT) == pytest.approx(0.005, rel=1e-12)


def test_pit_and_coverage_hand_values():
    # PIT = Phi([-0.5, 2.5, -1.25, 0]) from normal tables
    np.testing.assert_allclose(m.pit(ZP, ZE, ZT), [0.308538, 0.993790, 0.105650, 0.5], atol=2e-6)
    assert m.coverage(ZP, ZE, ZT, m.LEVEL_68) == 0.5
    assert m.coverage(ZP, ZE, ZT, m.LEVEL_95) == 0.75
    assert m.LEVEL_68 == pytest.approx(0.682689, abs=1e-6)
    assert m.LEVEL_95 == pytest.approx(0.954500, abs=1e-6)


def test_crps_gaussian_hand_values():
    # w = 0, sigma = 1: 2 phi(0) - 1/sqrt(pi) = 0.797885 - 0.564190 = 0.233695
    assert m.crps_gaussian([0.0], [1.0], [0.0]) == pytest.approx(0.233695, abs=1e-6)
    # w = 1, sigma = 2: 2 * (1*(2*0.841345 - 1) + 2*0.241971 - 0.564190) = 2 * 0.602440
    assert m.crps_gaussian([0.0], [2.0], [2.0]) == pytest.approx(1.204880, abs=1e-5)


def test_reliability_and_miscalibration():
    # smallest containing level |2 PIT - 1| = erf(|w|/sqrt 2) = [0.383, 0.988, 0.789, 0]
    lev, obs = m.reliability_curve(ZP, ZE, ZT, levels=[0.1, 0.5, 0.9])
    np.testing.assert_array_equal(lev, [0.1, 0.5, 0.9])
    np.testing.assert_array_equal(obs, [0.25, 0.5, 0.75])
    # every truth at the centre: observed = 1 at all levels -> area = int_0^1 (1 - p) dp = 0.5
    assert m.miscalibration_area([0.0] * 3, [1.0] * 3, [0.0] * 3) == pytest.approx(0.5, abs=1e-9)
    # truths drawn from the predicted Gaussians: calibrated -> small area, coverage near nominal
    rng = np.random.default_rng(1)
    zt = rng.uniform(0, 1.5, 20000)
    ze = rng.uniform(0.001, 0.01, zt.size)
    zp = zt + ze * rng.standard_normal(zt.size)
    assert m.miscalibration_area(zp, ze, zt) < 0.01
    assert m.coverage(zp, ze, zt, m.LEVEL_68) == pytest.approx(m.LEVEL_68, abs=0.01)
    # errors twice too large: over-coverage, area clearly > 0
    assert m.coverage(zp, 2 * ze, zt, m.LEVEL_68) == pytest.approx(math.erf(2 / math.sqrt(2)), abs=0.01)
    assert m.miscalibration_area(zp, 2 * ze, zt) > 0.1


def test_summary_keys_and_values():
    s = m.summary(ZP, ZT, ZE)
    assert set(s) == {"n", "sigma_nmad", "eta", "ebar", "bias", "coverage_68", "coverage_95", "crps", "miscal_area"}
    assert s["n"] == 4 and s["eta"] == 0.25 and s["ebar"] == pytest.approx(0.0145)
    s2 = m.summary(ZP, ZT)
    assert s2["ebar"] is None and s2["coverage_68"] is None and s2["sigma_nmad"] == pytest.approx(0.02035)


def test_binned_by_true_z_with_empty_bin():
    rows = m.binned(ZP, ZT, ZE, by=ZT, edges=[0.0, 0.5, 0.8, math.inf])
    assert [r["n"] for r in rows] == [2, 0, 2]
    # bin 1: dz = [0.01, -0.02] at z=0: median -0.005, |dev| = [0.015, 0.015] -> 1.48*0.015
    assert rows[0]["sigma_nmad"] == pytest.approx(1.48 * 0.015)
    assert rows[0]["eta"] == 0.0
    assert rows[1]["sigma_nmad"] is None
    # bin 3: |dz|/2 = [0.025, 0] -> eta = 1/2
    assert rows[2]["eta"] == 0.5 and rows[2]["hi"] == math.inf


@pytest.mark.parametrize(
    "func,args",
    [
        (m.sigma_nmad, ([], [])),
        (m.sigma_nmad, ([0.1, 0.2], [0.1])),
        (m.outlier_fraction, ([0.1, np.nan], [0.1, 0.2])),
        (m.outlier_fraction, ([0.1, 0.2], [0.1, np.inf])),
        (m.weighted_mean_uncertainty, ([0.01, 0.0], [0.1, 0.2])),
        (m.weighted_mean_uncertainty, ([0.01, -1.0], [0.1, 0.2])),
        (m.weighted_mean_uncertainty, ([0.01], [0.1, 0.2])),
        (m.bias, ([[0.1, 0.2]], [[0.1, 0.2]])),
        (m.pit, ([0.1], [0.0], [0.1])),
        (m.crps_gaussian, ([0.1, 0.2], [0.1], [0.1, 0.2])),
        (m.coverage, ([0.1], [np.nan], [0.1])),
        (m.miscalibration_area, ([], [], [])),
        (m.summary, ([0.1, 0.2], [0.1, 0.2, 0.3])),
        (m.sigma_nmad, ([0.1], [-1.0])),
    ],
)
def test_bad_input_raises_input_error(func, args):
    with pytest.raises(InputError):
        func(*args)


def test_bad_options_raise():
    with pytest.raises(InputError, match="level"):
        m.coverage(ZP, ZE, ZT, level=1.0)
    with pytest.raises(InputError, match="threshold"):
        m.outlier_fraction(ZP, ZT, threshold=-0.1)
    with pytest.raises(InputError, match="edges"):
        m.binned(ZP, ZT, by=ZT, edges=[1.0, 0.0])
    with pytest.raises(InputError, match="by"):
        m.binned(ZP, ZT, by=ZT[:2], edges=[0.0, 1.0])
    with pytest.raises(InputError, match="zerr"):
        m.summary(ZP, ZT, zerr=[0.1, 0.1, 0.1, 0.0])


def test_metrics_module_has_no_torch_or_matplotlib():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(m))
    names = {
        a.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for a in getattr(node, "names", [])
    }
    mods = {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not ({"torch", "matplotlib"} & (names | mods))
