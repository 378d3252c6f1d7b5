"""Benchmark `csstz build`: galaxies/s on 2 workers and peak memory (whole process tree) vs N.

Usage: python benchmarks/bench_build.py [--n 500 1500] [--workers 2] [--chunk 250] [--out benchmarks/results/build.json]

The issue's target (>= 300 galaxies/s for the whole build on 2 cores at N = 20,000), on a quiet machine:

    OMP_NUM_THREADS=1 python benchmarks/bench_build.py --n 2000 20000 --workers 2 --chunk 500

(~2 minutes; the N = 20,000 file is ~220 MB in a temporary directory). ``galaxies_per_s`` of the
N = 20,000 run includes start-up (imports, Dask cluster, population tables); ``marginal_galaxies_per_s``
is the slope between the two N. ``single_core_stage_costs`` is benchmarks/profile_simulate.py: the CPU
ms per galaxy of each simulator stage in one warm process.

Memory is the peak over time of the summed RSS of the build process and all its
descendants (Dask nanny + workers), sampled every 0.1 s with psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from timing import run_peak_rss

from csstz.io.run_dir import write_text


def run_one(n: int, workers: int, chunk: int, tmp: Path, source: str = "embedded") -> dict:
    out = tmp / f"bench_{source.replace(',', '_')}_{n}_{workers}.h5"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from csstz.cli import main; sys.exit(main(sys.argv[1:]))",
        "build",
        "--n",
        str(n),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--chunk",
        str(chunk),
        "--no-progress",
        "--source",
        source,
    ]
    wall, peak = run_peak_rss(cmd, dict(os.environ, OMP_NUM_THREADS="1"))
    size = out.stat().st_size
    out.unlink()
    return {
        "source": source,
        "n": n,
        "workers": workers,
        "chunk": chunk,
        "wall_s": round(wall, 2),
        "galaxies_per_s": round(n / wall, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "file_mib": round(size / 2**20, 2),
    }


def stage_costs(n: int = 300, repeat: int = 3) -> dict:
    """Single-core CPU ms per galaxy of each stage of a build chunk (benchmarks/profile_simulate.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from profile_simulate import profile

    return {"n": n, "repeat": repeat, "ms_per_galaxy": profile(n, repeat)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, nargs="+", default=[500, 1500])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=250)
    p.add_argument("--source", nargs="+", default=["embedded"], help="sources to time (sps needs its SED cache)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "build.json"))
    a = p.parse_args(argv)
    runs = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.source:
            for n in a.n:
                runs.append(run_one(n, a.workers, a.chunk, Path(tmp), source))
                print(json.dumps(runs[-1]))
    costs = stage_costs()
    print(json.dumps(costs))
    # throughput net of start-up: slope between the smallest and largest N of each source
    marginal = {}
    for source in a.source:
        rs = [r for r in runs if r["source"] == source]
        dn, dt = rs[-1]["n"] - rs[0]["n"], rs[-1]["wall_s"] - rs[0]["wall_s"]
        marginal[source] = round(dn / dt, 1) if len(rs) >= 2 and dt > 0 else None
    res = {
        "benchmark": "csstz build (GU+GV+GI, with ZERR_CRB and flux_noiseless for train/val)",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "runs": runs,
        "marginal_galaxies_per_s": marginal,
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "target_galaxies_per_s": 300,
        "single_core_stage_costs": costs,
        "note": "machine shared with other jobs while measuring; wall time includes start-up "
        "(imports, Dask cluster, population tables)",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(res, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
