"""The contracts layer: torch-free stages, one-way imports, configs from YAML, the CLI generated from the
configs, and a band added to a copy of the instrument file flowing through simulate -> build -> training
config without code changes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import csstz
from csstz.config import BuildConfig, ModelConfig, OptimiserConfig, PredictConfig, TrainConfig, read_config_file
from csstz.errors import ConfigError

SRC = Path(csstz.__file__).parent

TORCH_FREE = [
    "csstz",
    "csstz.instrument",
    "csstz.population.embedded",
    "csstz.population.desi",
    "csstz.population.nz",
    "csstz.simulate.api",
    "csstz.simulate.figures",
    "csstz.templates",
    "csstz.templates.fit",
    "csstz.templates.basis",
    "csstz.templates.nnls",
    "csstz.templates.pdf",
    "csstz.io.predictions",
    "csstz.config",
    "csstz.schema",
    "csstz.zwarn",
    "csstz.parallel",
    "csstz.evaluate.metrics",
    "csstz.io.spectra",
    "csstz.io.run_dir",
    "csstz.build",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_never_imports_torch(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{module} imports {res.stdout.strip()} {res.stderr[-500:]}"


def test_lazy_public_api():
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, csstz; f = csstz.simulate_file; c = csstz.TrainConfig; "
            "z = csstz.ZWARN; print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr[-500:]
    # every released version has its CHANGELOG section
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    assert f"\n## {csstz.__version__}\n" in changelog
    with pytest.raises(AttributeError):
        csstz.no_such_name  # noqa: B018


# --- imports run one way only ------------------------------------------------------------------
RANK = {
    "instrument": 0,
    "population": 1,
    "simulate": 2,
    "io": 3,
    "build": 3.5,
    "templates": 4,
    "models": 5,
    "train": 6,
    "predict": 7,
    "predict_pz": 7,
    "calibrate": 8,
    "evaluate": 9,
    "pipeline": 10,
    "demo": 10,
    "cli": 11,
}
LEAVES = {"errors", "units", "rng", "schema", "config", "parallel", "zwarn", "__init__"}
#: Generic helpers that know no file layout and import only leaves: atomic rename, an Agg figure factory,
#: and the metric definitions (sigma_NMAD, eta, ...) that training's learning curve shares with the report.
LEAF_MODULES = {("io", "atomic"), ("io", "figures"), ("evaluate", "metrics")}
#: Known exceptions, to be removed, never added to: the `simulate` command writes its spectra file
#: through io (BandSpectra is the io container), and the dataset figures read a catalogue.
KNOWN_BACKWARD = {"simulate/api imports io.spectra", "population/figures imports io.spectra"}


def _stage(parts: list[str]) -> str | None:
    return parts[0].removesuffix(".py") if parts else None


def test_no_import_runs_against_the_data_flow():
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("").parts
        here = rel[0]
        if here in LEAVES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(rel[:-1])[: len(rel) - node.level]
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module else [base + [a.name] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("csstz."):
                names = [node.module.split(".")[1:]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1:] for a in node.names if a.name.startswith("csstz.")]
            else:
                continue
            for t in names:
                other = _stage(t)
                if (
                    other is None
                    or other in LEAVES
                    or other == here
                    or other not in RANK
                    or tuple(t[:2]) in LEAF_MODULES
                ):
                    continue
                if RANK[other] > RANK[here]:
                    bad.append(f"{'/'.join(rel)} imports {'.'.join(t)}")
    assert set(bad) <= KNOWN_BACKWARD, sorted(set(bad) - KNOWN_BACKWARD)


def test_leaf_modules_import_only_leaves():
    """A module any stage may import must not pull a stage in behind it."""
    for parts in LEAF_MODULES:
        tree = ast.parse((SRC.joinpath(*parts[:-1]) / f"{parts[-1]}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                first = (node.module or "").split(".")[0]
                sibling_leaf = node.level == 1 and (*parts[:-1], first) in LEAF_MODULES
                assert sibling_leaf or (node.level == 2 and first not in RANK), (parts, node.module, node.level)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert not (mod or "").startswith("csstz"), (parts, mod)


# --- configs -------------------------------------------------------------------------------------
def test_train_config_is_model_optimiser_calibrate():
    cfg = TrainConfig(epochs=3, head="flipout", calibration="scale")
    assert cfg.bnn_epochs == 3  # default: the CNN's epochs
    assert cfg.model.head == "flipout" and cfg.optimiser.epochs == 3 and cfg.calibrate.calibration == "scale"
    assert TrainConfig.from_parts(cfg.model, cfg.optimiser, cfg.calibrate) == cfg
    assert TrainConfig().bands == csstz.load_instrument().network_bands == ("GV", "GI")
    # an old (0.1.0) flat model-file config still loads, unknown keys ignored
    old = dict(TrainConfig().to_dict(), bnn_epochs=30, some_old_key=1)
    assert TrainConfig.from_dict(old).bnn_epochs == 30
    with pytest.raises(ConfigError, match="samples"):
        PredictConfig(samples=0)


def test_yaml_config_file_and_errors(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("optimiser: {epochs: 3}\nmodel: {head: mcdropout, widths: [4, 4]}\n")
    data = read_config_file(good)
    assert ModelConfig.from_dict(data["model"]).widths == (4, 4)
    assert OptimiserConfig.from_dict(data["optimiser"]).epochs == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimiser: {epoch: 3}\n")
    with pytest.raises(ConfigError, match="optimiser.epoch"):
        read_config_file(bad)
    bad.write_text("optimizer: {epochs: 3}\n")
    with pytest.raises(ConfigError, match="optimizer"):
        read_config_file(bad)


def test_cli_options_come_from_the_configs(tmp_path, capsys):
    from csstz.cli import build_parser, stage_configs

    parser = build_parser()
    args = parser.parse_args(["train", "d.h5", "--out", "r", "--epochs", "4"])
    c = stage_configs(args, ModelConfig, OptimiserConfig)
    assert c["optimiser"].epochs == 4 and c["optimiser"].bnn_epochs == 4 and c["model"].head == "mnf"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optimiser: {epochs: 7, lr: 0.01}\n")
    args = parser.parse_args(["train", "d.h5", "--out", "r", "--epochs", "4", "--config", str(cfg)])
    o = stage_configs(args, OptimiserConfig)["optimiser"]
    assert o.epochs == 4 and o.lr == 0.01  # the command line wins over the file, the file over the default
    for cmd in ("simulate", "build", "train", "predict", "fit-templates", "evaluate"):
        with pytest.raises(SystemExit):
            parser.parse_args([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert text.count("(default: 30)") <= 1
        for chunk in text.split(" --")[1:]:
            assert chunk.count("(default") <= 1, (cmd, chunk)
    assert "(default: 200)" in _help(parser, "predict") and "(default: 1.6)" in _help(parser, "fit-templates")
    assert "(default: 2000)" in _help(parser, "build")


def _help(parser, cmd: str) -> str:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return " ".join(sub.choices[cmd].format_help().split())


# --- a new band flows through without code changes ---------------------------------------------------
GZ_BAND = """
  GZ:
    wave_min_aa: 9000.0
    wave_max_aa: 10400.0
    dispersion_aa_per_pix: 12.0
    sky_e_per_s_per_pix: 0.3
    throughput: |
      8900.0 0.0
      9000.0 0.3
      10400.0 0.3
      10500.0 0.0
"""


def test_a_band_added_to_a_copy_of_the_instrument_file(tmp_path):
    from importlib import resources

    from csstz.build import build_dataset
    from csstz.instrument import load_instrument
    from csstz.io.spectra import read_attrs, read_catalog, read_spectra

    text = resources.files("csstz.instrument").joinpath("data", "csst.yaml").read_text()
    text = text.replace("  bands: [GV, GI]", "  bands: [GV, GI, GZ]") + GZ_BAND
    path = tmp_path / "csst_gz.yaml"
    path.write_text(text)
    inst = load_instrument(path)
    assert inst.band_names == ("GU", "GV", "GI", "GZ") and inst.network_bands == ("GV", "GI", "GZ")

    out = tmp_path / "gz.h5"
    build_dataset(out, 4, seed=1, workers=1, instrument_path=str(path), chunk=4, progress=False)
    sp = read_spectra(out)
    assert list(sp.bands) == ["GU", "GV", "GI", "GZ"]
    assert sp.bands["GZ"].flux.shape == (4, inst.band("GZ").n_pix)
    assert np.isfinite(sp.bands["GZ"].flux).all()
    cat = read_catalog(out)
    assert {"SNR_GZ", "MAG_GZ"} <= set(cat.colnames) and np.all(cat["SNR_GZ"] > 0)
    assert "GZ:" in read_attrs(out)["instrument"]

    cfg = TrainConfig(bands=inst.network_bands, instrument=str(path))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="bands"):
        TrainConfig(bands=("GV", "GZ"))  # the packaged instrument has no GZ


def test_network_input_reads_the_added_band(tmp_path):
    pytest.importorskip("torch")
    from csstz.io.torch_dataset import SpectraDataset
    from synth_dataset import make_dataset

    path = tmp_path / "d.h5"
    make_dataset(path, n=10, seed=0)
    ds = SpectraDataset(path, np.arange(10))
    assert ds.bands == ("GV", "GI")
    assert BuildConfig(n=3).chunk == BuildConfig.chunk


def test_redshift_range_defined_once():
    """The published CSST n(z) table ends where the method's range does (csstz.schema.Z_RANGE)."""
    from csstz.evaluate.metrics import Z_EDGES
    from csstz.population.nz import CSST_Z_EDGES, Z_MAX
    from csstz.schema import Z_RANGE

    assert Z_MAX == Z_RANGE[1] == CSST_Z_EDGES[-1] == Z_EDGES[-1] and Z_EDGES[0] == Z_RANGE[0]


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("kw", [dict(workers=1), dict(workers=2, local="processes")])
def test_parallel_map_engines_agree(kw):
    from csstz.parallel import parallel_list, parallel_map

    items = list(range(11))
    assert parallel_list(_square, items, **kw) == [i * i for i in items]
    assert sorted(i for i, _ in parallel_map(_square, items, in_flight=1, **kw)) == items
    with pytest.raises(ValueError, match="workers"):
        list(parallel_map(_square, items, workers=0))
    with pytest.raises(ValueError, match="local"):
        list(parallel_map(_square, items, workers=2, local="threads"))


def _worker_env(_: int) -> tuple:
    import os

    return tuple(os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"))


def test_dask_workers_get_the_worker_environment_and_the_caller_keeps_its_own(monkeypatch):
    """A real local Dask cluster: its workers run with WORKER_ENV even where the caller set other values, and
    the caller's environment is the same after it (distributed's nanny writes into the caller's os.environ)."""
    import os

    from csstz.parallel import WORKER_ENV, parallel_list

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = dict(os.environ)
    got = parallel_list(_worker_env, [0, 1], workers=2)
    want = (WORKER_ENV["OMP_NUM_THREADS"], WORKER_ENV["MKL_NUM_THREADS"], WORKER_ENV["MALLOC_TRIM_THRESHOLD_"])
    assert got == [want, want]
    assert dict(os.environ) == before


def test_forked_imap_is_ordered_lazy_and_runs_closures_in_other_processes():
    import itertools
    import os

    from csstz.parallel import forked_imap

    big = np.arange(1000.0)  # a closure over read-only state: inherited by fork, never pickled
    parent = os.getpid()

    def task(i):
        return i, float(big[i % 1000]) * 2, os.getpid()

    endless = itertools.count()  # only what is taken is ever computed
    out = list(itertools.islice(forked_imap(task, endless, workers=2), 25))
    assert [o[0] for o in out] == list(range(25)) and [o[1] for o in out] == [2.0 * i for i in range(25)]
    assert all(o[2] != parent for o in out)
    assert next(endless) < 25 + 2 + 2  # at most workers + 1 ahead (+ the one taken to refill)
    inproc = list(forked_imap(task, range(5), workers=1))
    assert [o[2] for o in inproc] == [parent] * 5
    with pytest.raises(ValueError, match="workers"):
        list(forked_imap(task, range(3), workers=0))
