"""Single-process cost per galaxy of each simulator stage (CPU ms per galaxy, all bands together).

Draws ``--n`` galaxies of the embedded population (as ``csstz build`` does, via
``csstz.build.make_chunk``) and times each stage of
``csstz.simulate.api.simulate_source`` by wrapping the stage functions it calls.
Run it with one thread (``OMP_NUM_THREADS=1``); times are the process's CPU time
(``time.process_time``), so that other jobs on a shared machine inflate them less
than wall time. The script repeats the whole chunk ``--repeat`` times and reports
the median of each stage.

    OMP_NUM_THREADS=1 python benchmarks/profile_simulate.py [--n 300] [--repeat 5] [--json out.json]

A/B on a shared machine: ``--revs REV [REV ...]`` extracts each git revision's ``src/``
to a temporary directory and runs the profile of every revision in turn, once per repeat
(interleaved, so that load from other jobs hits all revisions alike), then prints the
median of each stage per revision.

    OMP_NUM_THREADS=1 python benchmarks/profile_simulate.py --revs bac3447 HEAD --repeat 5
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np

STAGES = {  # name in csstz.simulate.api -> label
    "render_stamp": "render (GalSim)",
    "deposit_counts": "deposit counts",
    "disperse": "disperse (FFT)",
    "add_noise": "noise",
    "optimal_extract": "extract (Horne)",
    "effective_sensitivity": "calibration",
    "galaxy_rng": "rng set-up",
}


def profile(n: int = 300, repeat: int = 5, start: int = 1000) -> dict:
    """Median over ``repeat`` runs of the ms per galaxy of each stage, of the simulator and of the chunk."""
    from csstz import build
    from csstz.instrument import load_instrument
    from csstz.population.embedded import MAG_LIMIT_GI
    from csstz.simulate import api

    inst = load_instrument()
    job = dict(
        k=0, seed=0, source="embedded", instrument_yaml=inst.to_yaml(), start=0, stop=300, mag_limit_gi=MAG_LIMIT_GI
    )
    build.make_chunk(job)  # warm caches (population tables, GalSim per-n tables): a long-lived worker has them
    acc: dict = defaultdict(float)
    originals = {name: getattr(api, name) for name in STAGES}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name] += time.process_time() - t0

        return timed

    orig_sim = api.simulate_arrays

    def timed_sim(*args, **kwargs):
        t0 = time.process_time()
        try:
            return orig_sim(*args, **kwargs)
        finally:
            acc["simulate_arrays"] += time.process_time() - t0

    runs = []
    try:
        for name, fn in originals.items():
            setattr(api, name, wrap(name, fn))
        api.simulate_arrays = timed_sim
        for r in range(repeat):
            acc.clear()
            job.update(start=start + r * n, stop=start + (r + 1) * n)
            t0 = time.process_time()
            build.make_chunk(job)
            total = time.process_time() - t0
            row = {STAGES[k]: 1e3 * acc[k] / n for k in STAGES}
            sim = 1e3 * acc["simulate_arrays"] / n
            row["simulator, other"] = sim - sum(row.values())
            row["simulator total"] = sim
            row["population + packing"] = 1e3 * total / n - sim
            row["chunk total"] = 1e3 * total / n
            runs.append(row)
    finally:
        for name, fn in originals.items():
            setattr(api, name, fn)
        api.simulate_arrays = orig_sim
    return {k: round(float(np.median([r[k] for r in runs])), 3) for k in runs[0]}


def compare_revisions(revs: list[str], n: int, repeat: int) -> dict:
    """Median ms per galaxy of each stage for each git revision, runs interleaved (see module docstring)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    runs: dict = {r: [] for r in revs}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for r in revs:
            d = Path(tmp) / f"rev{len(dirs)}"
            d.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(root), "archive", r, "src"], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
            dirs[r] = d
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); import profile_simulate as p; "
            "print('RESULT' + json.dumps(p.profile(int(sys.argv[2]), 1, int(sys.argv[3]))))"
        )
        for i in range(repeat):
            for r in revs:
                env = dict(os.environ, PYTHONPATH=str(dirs[r] / "src"), OMP_NUM_THREADS="1")
                out = subprocess.run(
                    [sys.executable, "-c", code, str(Path(__file__).parent), str(n), str(1000 + i * n)],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs[r].append(json.loads(out.split("RESULT", 1)[1]))
    return {r: {k: round(float(np.median([x[k] for x in rows])), 3) for k in rows[0]} for r, rows in runs.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--revs", nargs="+", default=None, help="git revisions to compare (interleaved runs)")
    a = p.parse_args(argv)
    if a.revs:
        res = compare_revisions(a.revs, a.n, a.repeat)
        keys = list(next(iter(res.values())))
        width = max(map(len, keys))
        print(f"{'ms per galaxy':<{width}}  " + "  ".join(f"{r[:10]:>10}" for r in a.revs))
        for k in keys:
            print(f"{k:<{width}}  " + "  ".join(f"{res[r][k]:10.3f}" for r in a.revs))
        if a.json:
            with open(a.json, "w") as fh:
                json.dump({"n": a.n, "repeat": a.repeat, "ms_per_galaxy": res}, fh, indent=1)
        return 0
    res = profile(a.n, a.repeat)
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:7.3f} ms/galaxy")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"n": a.n, "repeat": a.repeat, "ms_per_galaxy": res}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
