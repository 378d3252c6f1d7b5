"""The SPS population (bagpipes): determinism, selection, emission-line physics, cache, build.

Run with `make test-sps` (installs the optional extra csstz[sps]); skipped without bagpipes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.sps
pytest.importorskip("bagpipes", reason="optional extra csstz[sps] (bagpipes) not installed")

from csstz.population import sps  # noqa: E402

BANK_K = 800
SEED = 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache root (CSSTZ_CACHE) holding one small bank."""
    root = tmp_path_factory.mktemp("csstz_cache")
    old = os.environ.get("CSSTZ_CACHE")
    os.environ["CSSTZ_CACHE"] = str(root)
    sps.ensure_bank(SEED, BANK_K)
    yield root
    if old is None:
        os.environ.pop("CSSTZ_CACHE", None)
    else:
        os.environ["CSSTZ_CACHE"] = old


@pytest.fixture(scope="module")
def pop(cache):
    return sps.SpsPopulation(bank_size=BANK_K)


@pytest.fixture(scope="module")
def chunk(pop):
    return pop.draw(SEED, np.arange(400))


def test_cache_layout_and_reuse(cache, monkeypatch):
    path = cache / "sps" / sps.bank_key(SEED, BANK_K)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["size"] == BANK_K and meta["bagpipes_version"] == sps.BAGPIPES_VERSION
    lum = np.load(path / "lum.npy", mmap_mode="r")
    assert lum.dtype == np.float32 and lum.shape[0] == BANK_K and np.isfinite(lum).all()

    def no_bagpipes():  # a cache hit must not need bagpipes at all
        raise AssertionError("bank rebuilt instead of reused")

    monkeypatch.setattr(sps, "_require_bagpipes", no_bagpipes)
    assert sps.ensure_bank(SEED, BANK_K) == path


def test_bank_prefix_is_independent_of_size(cache):
    """Member k depends on (seed, k) only: a 50-member bank is the prefix of the 800-member one."""
    small = sps.load_bank(sps.ensure_bank(SEED, 50))
    big = sps.load_bank(sps.ensure_bank(SEED, BANK_K))
    np.testing.assert_array_equal(small.lum, big.lum[:50])
    np.testing.assert_array_equal(small.params["LOG_MSTAR"], big.params["LOG_MSTAR"][:50])


def test_deterministic_per_seed_and_targetid(pop, chunk, cache):
    again = sps.SpsPopulation(bank_size=BANK_K).draw(SEED, [17, 5, 311])
    for j, t in enumerate([17, 5, 311]):
        for col in ("Z", "BANK_INDEX", "LOG_MSTAR", "SHAPE_R", "MAG_GI"):
            assert again.columns[col][j] == chunk.columns[col][t]
        np.testing.assert_array_equal(again.flux_flam17[j], chunk.flux_flam17[t])


def test_redshifts_identical_to_embedded_source(chunk):
    from csstz.population.embedded import get_population

    emb = get_population().draw(SEED, np.arange(40))
    np.testing.assert_array_equal(emb.columns["Z"], chunk.columns["Z"][:40])
    np.testing.assert_array_equal(emb.columns["SPLIT"], chunk.columns["SPLIT"][:40])


def test_selection_magnitudes(chunk):
    c = chunk.columns
    ok = ~c["SEL_FALLBACK"]
    assert ok.mean() > 0.9
    assert np.all((c["MAG_GI"][ok] > 15.0) & (c["MAG_GI"][ok] < 21.0))
    # MAG_GI (from the band tables) equals the band average of the SED handed to the simulator
    from scipy.integrate import trapezoid

    from csstz.instrument import load_instrument
    from csstz.population.embedded import AB_FNU_CGS
    from csstz.units import C_AA_PER_S, FLAM17

    w = chunk.wave_aa
    tp = load_instrument().band("GI").throughput(w)
    num = trapezoid(chunk.flux_flam17 * FLAM17 * tp * w, w, axis=1)
    den = trapezoid(AB_FNU_CGS * C_AA_PER_S / w**2 * tp * w, w)
    np.testing.assert_allclose(-2.5 * np.log10(num / den), c["MAG_GI"], atol=0.05)


def test_halpha_at_the_observed_wavelength(chunk):
    """Star-formers with strong H-alpha show its flux at 6563 (1+z) A, as much as EW_HA says."""
    c = chunk.columns
    w = chunk.wave_aa
    sel = np.flatnonzero(~c["QUIESCENT"] & (c["EW_HA"] > 30) & (6563 * (1 + c["Z"]) < w[-1] - 200))
    assert sel.size >= 10
    ratios = []
    for i in sel:
        lam = 6562.8 * (1 + c["Z"][i])
        f = chunk.flux_flam17[i]
        line = np.abs(w - lam) < 8 * (1 + c["Z"][i])
        side = (np.abs(w - lam) > 40 * (1 + c["Z"][i])) & (np.abs(w - lam) < 120 * (1 + c["Z"][i]))
        cont = np.median(f[side])
        excess = np.sum(f[line] - cont) * (w[1] - w[0])
        assert np.argmax(f[line]) == np.argmin(np.abs(w[line] - lam)) or np.max(f[line]) > 1.5 * cont
        ratios.append(excess / (cont * (1 + c["Z"][i])) / c["EW_HA"][i])  # observed EW = (1+z) rest EW
    assert 0.7 < np.median(ratios) < 1.3


def test_line_strengths_grow_with_redshift(cache):
    """At fixed mass the main sequence rises with z (Speagle+14), and so do the line EWs
    (H-alpha roughly as (1+z)^1.8, Fumagalli+12): fit log EW = a + g log(1+z) + b (log M - 10)
    over the bank's star-formers."""
    P = sps.load_bank(sps.ensure_bank(SEED, BANK_K)).params
    sf = ~P["QUIESCENT"] & (P["EW_HA"] > 0) & (P["EW_OII"] > 0)
    X = np.column_stack([np.ones(sf.sum()), np.log10(1 + P["BANK_Z"][sf]), P["LOG_MSTAR"][sf] - 10])
    g = {
        c: np.linalg.lstsq(X, y, rcond=None)[0][1]
        for c, y in (("HA", np.log10(P["EW_HA"][sf])), ("OII", np.log10(P["EW_OII"][sf])), ("SSFR", P["LOG_SSFR"][sf]))
    }
    assert g["SSFR"] > 1.5  # Speagle+14: ~0.9 dex from z = 0 to 1 at fixed mass
    assert g["HA"] > 1.0
    assert g["OII"] > 0.3


def test_quiescent_are_redder(chunk):
    c = chunk.columns
    q, s = c["QUIESCENT"], ~c["QUIESCENT"]
    assert q.sum() >= 10 and s.sum() >= 10
    assert np.median(c["REST_UR"][q]) > np.median(c["REST_UR"][s]) + 0.5
    assert np.median(c["REST_UR"][q]) > 2.0
    assert np.median(c["EW_HA"][q]) < min(10.0, 0.2 * np.median(c["EW_HA"][s]))


def test_rest_frame_seds(pop, chunk):
    wave, lum = pop.rest_frame_seds(SEED, [3, 4, 5])
    bank, _ = pop.bank(SEED)
    for j, t in enumerate([3, 4, 5]):
        i = chunk.columns["BANK_INDEX"][t]
        np.testing.assert_allclose(lum[j], bank.lum[i] * 10 ** chunk.columns["LOG_MASS_SHIFT"][t], rtol=1e-5)
    assert wave[0] <= 900 and wave[-1] >= 10700


def test_build_end_to_end(cache, tmp_path):
    from csstz.build import build_dataset
    from csstz.io.spectra import read_attrs, read_catalog

    out = build_dataset(tmp_path / "sps.h5", 12, seed=SEED, chunk=6, progress=False, source="sps", bank_size=BANK_K)
    cat = read_catalog(out)
    for col in ("SOURCE", "EW_HA", "EW_OII", "LOG_MSTAR", "QUIESCENT", "MAG_GI", "SNR_GI"):
        assert col in cat.colnames
    assert set(
        np.char.decode(np.asarray(cat["SOURCE"], "S8")) if cat["SOURCE"].dtype.kind == "S" else cat["SOURCE"]
    ) == {"sps"}
    assert json.loads(read_attrs(out)["population"])["source"] == "sps"
    # SPS ids are offset so that they never collide with the embedded population's 0 .. N-1
    from csstz.build import SPS_TARGETID_OFFSET

    np.testing.assert_array_equal(cat["TARGETID"], SPS_TARGETID_OFFSET + np.arange(12))


def test_mixed_build(cache, tmp_path):
    """--source embedded,sps --mix f: each row from one source, ids disjoint, the other's columns filled."""
    from csstz.build import SPS_TARGETID_OFFSET, build_dataset
    from csstz.io.spectra import read_catalog, read_spectra

    out = build_dataset(
        tmp_path / "mix.h5", 40, seed=SEED, chunk=15, progress=False, source="embedded,sps", mix=0.5, bank_size=BANK_K
    )
    cat = read_catalog(out)
    src = np.char.decode(np.asarray(cat["SOURCE"], "S8")) if cat["SOURCE"].dtype.kind == "S" else cat["SOURCE"]
    is_sps = np.asarray(src) == "sps"
    assert 0 < is_sps.sum() < 40  # P(all one source) = 2**-39
    np.testing.assert_array_equal(cat["TARGETID"], np.where(is_sps, SPS_TARGETID_OFFSET, 0) + np.arange(40))
    assert np.all(np.isnan(np.asarray(cat["COEFF"])[is_sps])) and np.all(np.asarray(cat["BANK_INDEX"])[~is_sps] == -1)
    assert np.all(np.isfinite(np.asarray(cat["COEFF"])[~is_sps])) and np.all(np.asarray(cat["BANK_INDEX"])[is_sps] >= 0)
    # the same galaxy, drawn alone, is bit-identical to its row in the mixed file
    alone = read_spectra(
        build_dataset(tmp_path / "sps_only.h5", 40, seed=SEED, chunk=15, progress=False, source="sps", bank_size=BANK_K)
    )
    mixed = read_spectra(out)
    i = int(np.flatnonzero(is_sps)[0])
    for b in mixed.bands:
        np.testing.assert_array_equal(mixed.bands[b].flux[i], alone.bands[b].flux[i])


def test_realism_checks_run_and_lines_evolve(cache, tmp_path):
    from csstz.population.sps_realism import realism_checks

    r = realism_checks(SEED, tmp_path, bank_size=BANK_K, n_draw=200)
    assert (tmp_path / "sps_colour_vs_sdss.png").stat().st_size > 0
    assert (tmp_path / "sps_ew_vs_z.png").stat().st_size > 0
    assert r["colour_bins"] and r["ew_fixed_mass"]["gamma_ha_fit"] > 1.0
    # bright galaxies are red in both SDSS and the SPS bank
    bright = r["colour_bins"][0]
    assert bright["median_ur_sdss"] > 2.2 and bright["median_ur_sps"] > 2.2
