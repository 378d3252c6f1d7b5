"""Evaluation report: metrics.json contents, figures, a self-contained HTML page, the CLI."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from astropy.table import Table

from csstz.errors import InputError
from csstz.evaluate import metrics
from csstz.evaluate.report import FIGURES, evaluate_predictions, write_report
from csstz.io.predictions import write_predictions
from csstz.io.spectra import BandSpectra, SpectraSet, write_spectra

N = 400
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_data(seed: int = 0):
    """Truth (TARGETID, Z, SNR_GI) and three synthetic methods with known properties."""
    rng = np.random.default_rng(seed)
    tid = np.arange(1000, 1000 + N, dtype=np.int64)
    z = rng.uniform(0.01, 1.6, N)
    snr = np.exp(rng.normal(0.7, 0.8, N))
    truth = Table({"TARGETID": tid, "Z": z, "SNR_GI": snr})
    sig = 0.002 * (1 + z) / np.sqrt(snr)
    cnn_z = z + sig * rng.standard_normal(N)
    cnn_z[:8] += 0.2  # 2% catastrophic outliers
    cnn = Table(
        {
            "TARGETID": tid,
            "Z": cnn_z,
            "ZERR": np.full(N, 0.01),
            "ZERR_UNCAL": np.full(N, 0.01),
            "ZWARN": np.zeros(N, np.int32),
        }
    )
    bnn_z = z + sig * rng.standard_normal(N)
    bnn = Table(
        {
            "TARGETID": tid[::-1],
            "Z": bnn_z[::-1],
            "ZERR": sig[::-1],
            "ZERR_UNCAL": 0.5 * sig[::-1],
            "ZERR_EPISTEMIC": 0.3 * sig[::-1],
            "ZERR_ALEATORIC": 0.9 * sig[::-1],
            "ZWARN": np.zeros(N, np.int32),
        }
    )
    tz = z + 3 * sig * rng.standard_normal(N)
    zwarn = np.zeros(N, np.int32)
    zwarn[10:30] = 1
    tz[5] = np.nan
    zwarn[5] = 4
    tpl = Table({"TARGETID": tid, "Z": tz, "ZERR": 3 * sig, "ZWARN": zwarn})
    tpl["ZERR"][5] = np.nan
    return truth, {"CNN": cnn, "BNN": bnn, "templates": tpl}


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def report(tmp_path_factory, data):
    truth, methods = data
    out = tmp_path_factory.mktemp("report")
    extra = out.parent / "fig1_extra.png"
    extra.write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
    )
    res = write_report(out, methods, truth, extra_figures=[extra], notes={"dataset": "synthetic", "n": N})
    return out, res


def test_metrics_json_per_method_and_headline(report, data):
    out, res = report
    truth, methods = data
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["primary"] == "CNN"
    assert set(on_disk["methods"]) == {"CNN", "BNN", "templates"}
    for key in ("n", "sigma_nmad", "eta", "ebar", "coverage_68", "coverage_95", "by_z", "by_snr_gi"):
        assert key in on_disk
    # numbers equal the metric functions on the matched arrays
    cnn = on_disk["methods"]["CNN"]
    assert cnn["sigma_nmad"] == pytest.approx(metrics.sigma_nmad(methods["CNN"]["Z"], truth["Z"]))
    assert cnn["eta"] == pytest.approx(0.02)
    assert on_disk["sigma_nmad"] == cnn["sigma_nmad"]
    assert "uncalibrated" not in cnn  # ZERR_UNCAL == ZERR: no calibration step to show
    bnn = on_disk["methods"]["BNN"]  # rows reversed: matching on TARGETID must undo that
    zb = np.asarray(methods["BNN"]["Z"])[::-1]
    assert bnn["sigma_nmad"] == pytest.approx(metrics.sigma_nmad(zb, truth["Z"]))
    assert bnn["coverage_68"] == pytest.approx(
        metrics.coverage(zb, np.asarray(methods["BNN"]["ZERR"])[::-1], truth["Z"])
    )
    assert bnn["uncalibrated"]["coverage_68"] < bnn["coverage_68"]
    assert bnn["ebar_epistemic"] < bnn["ebar_aleatoric"]
    assert len(bnn["reliability"]["observed_uncal"]) == len(bnn["reliability"]["levels"])
    # failed row excluded and counted; ZWARN != 0 rows kept, and ZWARN == 0 metrics reported separately
    tpl = on_disk["methods"]["templates"]
    assert tpl["n"] == N - 1 and tpl["n_failed"] == 1
    assert tpl["zwarn0"]["n"] == N - 21
    assert tpl["zwarn_fraction"] == pytest.approx(21 / N)
    # bins: z edges 0..1.6 step 0.2, SNR edges ending in "inf"
    assert [b["lo"] for b in cnn["by_z"]] == pytest.approx(list(metrics.Z_EDGES[:-1]))
    assert sum(b["n"] for b in cnn["by_z"]) == N
    assert cnn["by_snr_gi"][-1]["hi"] == "inf"
    assert sum(b["n"] for b in cnn["by_snr_gi"]) == N
    assert on_disk["notes"]["dataset"] == "synthetic"


def test_figures_written_and_embedded(report):
    out, res = report
    page = (out / "report.html").read_text()
    for name, _ in FIGURES:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == len(FIGURES) + 1  # + the extra figure
    for b64 in imgs:
        assert base64.b64decode(b64)[:8] == PNG_MAGIC
    # self-contained: no external resources
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//|file:)', page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for label in ("CNN", "BNN", "templates"):
        assert f"<th>{label}</th>" in page
    assert "0.00047" in page  # the paper's CNN number beside ours


def test_bad_inputs(data, tmp_path):
    truth, methods = data
    with pytest.raises(InputError, match="TARGETID"):
        write_report(tmp_path, {"x": Table({"TARGETID": [1], "Z": [0.1], "ZWARN": [0]})}, truth)
    dup = Table(truth, copy=True)
    dup["TARGETID"][1] = dup["TARGETID"][0]
    with pytest.raises(InputError, match="duplicated"):
        write_report(tmp_path, {"CNN": methods["CNN"]}, dup)
    with pytest.raises(InputError, match="Z"):
        write_report(tmp_path, {"CNN": methods["CNN"]}, Table({"TARGETID": truth["TARGETID"]}))
    with pytest.raises(InputError, match="methods"):
        write_report(tmp_path, {}, truth)
    assert not (tmp_path / "metrics.json").exists()


def _spectra_file(path, truth: Table):
    n = len(truth)
    cat = Table(truth, copy=True)
    for col in ("SHAPE_R", "SERSIC", "BA", "PA", "SNR_GU", "SNR_GV", "SNR_TOTAL"):
        cat[col] = np.ones(n)
    wave = np.linspace(6110.0, 10571.0, 8)
    bands = {"GI": BandSpectra(wave, np.ones((n, 8), np.float32), np.ones((n, 8), np.float32))}
    write_spectra(path, SpectraSet(bands, cat, {"seed": 0}))


def test_evaluate_cli_roundtrip(data, tmp_path):
    from csstz.cli import main

    truth, methods = data
    spec = tmp_path / "truth.h5"
    _spectra_file(spec, truth)
    pred = tmp_path / "bnn.fits"
    write_predictions(pred, methods["BNN"], header={"METHOD": "bnn"})
    out = tmp_path / "rep"
    assert main(["evaluate", str(pred), "--truth", str(spec), "--out", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["primary"] == "bnn" and res["n"] == N
    assert (out / "report.html").stat().st_size > 10000
    res2 = evaluate_predictions(pred, spec, tmp_path / "rep2", label="BNN")
    assert res2["sigma_nmad"] == pytest.approx(res["sigma_nmad"])
    # a prediction file whose ids are not in the truth: one-line error, exit 2
    bad = Table(methods["CNN"], copy=True)
    bad["TARGETID"] += 10**6
    write_predictions(tmp_path / "bad.fits", bad)
    assert main(["evaluate", str(tmp_path / "bad.fits"), "--truth", str(spec), "--out", str(tmp_path / "r3")]) == 2
    assert main(["evaluate", str(tmp_path / "missing.fits"), "--truth", str(spec), "--out", str(tmp_path / "r4")]) == 2


@pytest.mark.slow
def test_report_opens_in_headless_chromium(report, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed")
    out, _ = report
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-extensions",
            "--no-first-run",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            (out / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 5000


def test_method_without_uncertainties_or_snr(data, tmp_path):
    truth, methods = data
    bare = Table({"TARGETID": methods["CNN"]["TARGETID"], "Z": methods["CNN"]["Z"]})
    res = write_report(tmp_path, {"bare": bare}, Table({"TARGETID": truth["TARGETID"], "Z": truth["Z"]}))
    assert res["ebar"] is None and res["coverage_68"] is None and res["by_snr_gi"] == []
    assert res["sigma_nmad"] == pytest.approx(metrics.sigma_nmad(bare["Z"], truth["Z"]))
    for name, _ in FIGURES:
        assert (tmp_path / name).is_file()


def test_html_is_well_formed(report):
    from html.parser import HTMLParser

    out, _ = report
    void = {"meta", "img", "br", "hr", "link", "input"}

    class Check(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack = []

        def handle_starttag(self, tag, attrs):
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()

    parser = Check()
    parser.feed((out / "report.html").read_text())
    assert parser.stack == []


# --- p(z) metrics, example p(z) and the Cramer-Rao ratio ----------------------------------------------
PZ_GRID = np.expm1(np.arange(0.0, np.log1p(1.7), 1e-3))


def make_pz_data(seed: int = 3):
    """Truth with ZERR_CRB = half the true scatter; a calibrated p(z) method, an over-confident one
    (widths / 3), one bimodal object and four flagged ones."""
    from csstz.templates import pdf

    rng = np.random.default_rng(seed)
    tid = np.arange(5000, 5000 + N, dtype=np.int64)
    z = rng.uniform(0.05, 1.5, N)
    snr = np.exp(rng.normal(1.5, 1.0, N))
    sig = 0.004 * (1 + z) / np.sqrt(np.clip(snr, 0.5, None))
    truth = Table({"TARGETID": tid, "Z": z, "SNR_GI": snr, "ZERR_CRB": 0.5 * sig})
    zp = z + sig * rng.standard_normal(N)

    def method(width):
        pz = np.exp(-0.5 * ((PZ_GRID[None] - zp[:, None]) / (width * sig)[:, None]) ** 2)
        pz[7] += 0.8 * np.exp(-0.5 * ((PZ_GRID - zp[7] - 0.3) / (width * sig[7])) ** 2)  # line confusion
        zwarn = np.zeros(N, np.int32)
        zwarn[[20, 21, 22, 23]] = 4
        tab = Table({"TARGETID": tid, "Z": zp, "ZERR": width * sig, "ZWARN": zwarn})
        tab.meta["PZ"] = pdf.normalise(pz, PZ_GRID).astype(np.float32)
        tab.meta["PZ_GRID"] = PZ_GRID
        return tab

    return truth, {"calibrated": method(1.0), "overconfident": method(1 / 3)}


def test_pz_metrics_crb_ratio_and_examples(tmp_path):
    from csstz.templates import pdf

    truth, methods = make_pz_data()
    res = write_report(tmp_path, methods, truth)
    cal, over = res["methods"]["calibrated"], res["methods"]["overconfident"]
    # calibrated p(z): flat PIT, coverage at the nominal levels; over-confident: neither
    assert cal["pz"]["n"] == N and cal["pz"]["pit_ks"] < 0.08, cal["pz"]["pit_ks"]
    assert abs(cal["pz"]["coverage_68"] - 0.683) < 0.06 and abs(cal["pz"]["coverage_95"] - 0.954) < 0.04
    assert over["pz"]["coverage_68"] < 0.4 and over["pz"]["pit_ks"] > 0.2
    ends = lambda e: e["pz"]["pit_hist"]["density"][0] + e["pz"]["pit_hist"]["density"][-1]  # noqa: E731
    assert ends(over) > 2 * ends(cal) and ends(over) > 4  # over-confident: PIT piles up at 0 and 1
    assert len(cal["pz"]["pit_hist"]["edges"]) == metrics.PIT_BINS + 1
    # CRPS equals the per-object mean of the p(z) CRPS; a wider-than-needed p(z) is not rewarded
    zt = np.asarray(truth["Z"])
    assert cal["pz"]["crps"] == pytest.approx(np.mean(pdf.crps(methods["calibrated"].meta["PZ"], PZ_GRID, zt)))
    assert sum(b["n"] for b in cal["pz"]["by_snr_gi"]) == N
    # the Cramer-Rao ratio: the scatter is twice the bound in every well-populated SNR bin
    snr = np.asarray(truth["SNR_GI"])
    for row in cal["by_snr_gi"]:
        if row["n"] < 40:
            continue
        sel = (snr >= row["lo"]) & (snr < float(row["hi"]))
        med = np.median(np.asarray(truth["ZERR_CRB"])[sel] / (1 + zt[sel]))
        assert row["crb_median"] == pytest.approx(med)
        assert row["nmad_over_crb"] == pytest.approx(row["sigma_nmad"] / med)
        assert 1.5 < row["nmad_over_crb"] < 2.6, row
    assert 1.5 < cal["nmad_over_crb"] < 2.6
    # examples: the bimodal object is the multimodal one, the flagged one has ZWARN != 0, the clean one not
    ex = cal["pz_examples"]
    assert ex["multimodal"] == 5007 and ex["flagged"] in (5020, 5021, 5022, 5023)
    assert ex["clean"] not in (5007, 5020, 5021, 5022, 5023)
    page = (tmp_path / "report.html").read_text()
    assert "&sigma;<sub>NMAD</sub> / bound" in page and "p(z) cov. 68.3%" in page
    for name in ("fig_pit_pz.png", "fig_pz_examples.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC and name in res["figures"]
    imgs = re.findall(r'src="data:image/png;base64,', page)
    assert len(imgs) == len(FIGURES) + 2


def test_crb_and_pz_absent_are_null(report):
    out, res = report
    for e in res["methods"].values():
        assert e["crb_median"] is None and e["nmad_over_crb"] is None and "pz" not in e
        assert all(r["crb_median"] is None and r["nmad_over_crb"] is None for r in e["by_snr_gi"])
    assert "fig_pit_pz.png" not in res["figures"] and not (out / "fig_pz_examples.png").exists()


def test_evaluate_cli_reads_pz_and_crb(tmp_path):
    from csstz.cli import main

    truth, methods = make_pz_data()
    spec = tmp_path / "truth.h5"
    _spectra_file(spec, truth)
    pred = tmp_path / "pz.fits"
    write_predictions(pred, methods["calibrated"], header={"METHOD": "pzfit"})
    assert main(["evaluate", str(pred), "--truth", str(spec), "--out", str(tmp_path / "rep")]) == 0
    res = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    e = res["methods"]["pzfit"]
    assert e["pz"]["n"] == N and e["crb_median"] > 0 and 1.5 < e["nmad_over_crb"] < 2.6
    # a PZ that does not match its table is refused with one line
    bad = Table(methods["calibrated"], copy=True)
    bad.meta["PZ"] = bad.meta["PZ"][:-1]
    with pytest.raises(InputError, match="PZ"):
        write_report(tmp_path / "bad", {"x": bad}, truth)
