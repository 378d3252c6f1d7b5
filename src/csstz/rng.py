"""Random streams: one root seed -> independent per-galaxy generators.

Every random draw in csstz that belongs to one galaxy comes from a generator
built from ``(root_seed, stream, targetid)``, so that any single galaxy can be
regenerated alone, in any order, on any worker, from the root seed and its
TARGETID, and two galaxies never share noise.
"""

from __future__ import annotations

import numpy as np

#: Stream identifiers: a different purpose never reuses another's numbers.
STREAM_NOISE = 1
STREAM_POPULATION = 2
STREAM_SPLIT = 3
STREAM_AUGMENT = 4
STREAM_SPS_BANK = 5


def galaxy_rng(root_seed: int, targetid: int, stream: int = STREAM_NOISE) -> np.random.Generator:
    """Generator for one galaxy and one purpose.

    Parameters
    ----------
    root_seed : int
        The run's seed (``--seed``), >= 0.
    targetid : int
        The galaxy's TARGETID (int64; negative ids are allowed).
    stream : int
        Purpose of the draws (``STREAM_*`` constants).
    """
    tid = int(targetid)
    # SeedSequence takes non-negative words: split the signed 64-bit id.
    tid_u = tid & 0xFFFFFFFFFFFFFFFF
    words = [int(root_seed) & 0xFFFFFFFF, int(root_seed) >> 32, int(stream), tid_u & 0xFFFFFFFF, tid_u >> 32]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def run_rng(root_seed: int, stream: int) -> np.random.Generator:
    """Generator for run-level draws that do not belong to one galaxy."""
    words = [int(root_seed) & 0xFFFFFFFF, int(root_seed) >> 32, int(stream), 0xC557]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))
