"""The end-to-end chain: build -> figures -> train -> predict -> templates -> report."""

from __future__ import annotations

import json
import re

import pytest

from csstz.demo import DemoPlan, run_demo

# every figure the report must carry: the paper's Figs. 1-5 (dataset, simulator) and 7-12 (evaluation)
PAPER_FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig7", "fig8", "fig9", "fig10", "fig11", "fig12")
METRICS = ("n", "sigma_nmad", "eta", "ebar", "coverage_68", "coverage_95", "by_z", "by_snr_gi")


def _check_report(out):
    report = out / "report" / "report.html"
    html = report.read_text()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    for fig in PAPER_FIGURES:
        assert re.search(rf"fig0?{fig[3:]}[_.]", " ".join(metrics["figures"])), (fig, metrics["figures"])
    assert html.count("data:image/png;base64,") >= len(PAPER_FIGURES)
    assert "http://" not in html and "https://" not in html.replace("https://arxiv.org", "")  # opens offline
    assert set(metrics["methods"]) == {"p(z)", "CNN", "BNN", "templates"}
    for label, entry in metrics["methods"].items():
        for key in METRICS:
            assert key in entry, (label, key)
        assert entry["n"] > 0
    return metrics


def test_tiny_chain_end_to_end(tmp_path):
    """A tiny plan (300 galaxies, 1 epoch each) runs every stage and writes a complete report."""
    plan = DemoPlan(
        "tiny",
        n_galaxies=300,
        train=dict(
            epochs=1,
            bnn_epochs=1,
            batch_size=32,
            calib_samples=10,
            progress=False,
            widths=(8, 8, 8, 8, 16, 16, 16, 16),
            stem_channels=8,
            head_hidden=(32, 16),
        ),
        samples=20,
        pz=dict(members=2, hidden=4, dilations=(1, 2), batch_size=64, max_samples=640, eval_every=320, threads=1),
    )
    result = run_demo(tmp_path / "demo", seed=1, workers=1, plan=plan)
    metrics = _check_report(tmp_path / "demo")
    assert result["headline"]["BNN"]["n"] == metrics["methods"]["BNN"]["n"]
    assert result["headline"]["p(z)"]["n"] == metrics["methods"]["BNN"]["n"]
    assert "pz" in metrics["methods"]["p(z)"]  # PIT / CRPS of the p(z) (csstz.evaluate)
    assert (tmp_path / "demo" / "pred_templates.fits").is_file()


@pytest.mark.slow
def test_demo_quick_command(tmp_path):
    """`csstz demo --quick` as a user runs it; the CNN must beat the naive median-z guess clearly."""
    from csstz.cli import main

    out = tmp_path / "quick"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    metrics = _check_report(out)
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["train_summary"]["cnn"]["best_val_loss"] < 0.5 * summary["train_summary"]["naive_val_loss"]
    assert metrics["methods"]["CNN"]["sigma_nmad"] < summary["train_summary"]["naive_val_sigma_nmad"]
