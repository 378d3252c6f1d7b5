"""ZWARN: one set of warning bits for every redshift method of csstz.

``ZWARN == 0`` means nothing to distrust. Bits 0-11 keep the meaning (and the
position) they have in Redrock (DESI's ``redrock.zwarning.ZWarningMask``), so a
csstz predictions file can be read with DESI habits; csstz sets only the ones
listed as "set by". Bits 16 and up are csstz's own. A bit marked "reserved" is
defined so that its position is never reused with another meaning.

=====  ====================  =====================================================================
bit    name                  meaning (set by)
=====  ====================  =====================================================================
0      SKY                   Redrock: the target is sky (reserved; never set by csstz)
1      LITTLE_COVERAGE       too little usable data: fewer than half of the input pixels valid
                             (networks) or fewer than ``MIN_VALID_PIX`` usable pixels (template
                             fit; Z and ZERR are then NaN)
2      SMALL_DELTA_CHI2      another local chi2 minimum more than 0.01 (1+z) away lies within
                             Delta chi2 < 9 of the best (template fit)
3      NEGATIVE_MODEL        Redrock: best model negative (reserved)
4      MANY_OUTLIERS         Redrock: many pixels far from the model (reserved)
5      Z_FITLIMIT            the redshift is at the limit of the fitted range: the chi2 minimum is
                             the first or last grid point (template fit), or the 1-sigma interval
                             reaches outside the training redshift range (networks)
6      NEGATIVE_EMISSION     Redrock: a line has negative flux (reserved)
7      UNPLUGGED             Redrock: fibre unplugged (reserved)
8      BAD_TARGET            Redrock: bad targeting data (reserved)
9      NODATA                Redrock: no data at all (reserved)
10     BAD_MINFIT            the method gave no usable fit: non-finite Z or ZERR (networks)
11     POORDATA              Redrock: poor data (reserved)
16     EPISTEMIC             the model, not the noise, dominates the uncertainty:
                             ZERR_EPISTEMIC > ZERR_ALEATORIC (BNN)
17     MULTIMODAL            p(z) has a second mode holding a significant part of the probability:
                             more than 0.2 of it lies farther than 0.02 (1+z) from Z
                             (``csstz.templates.pdf.mass_away_from_mode``; template fit, every basis;
                             p(z) estimator)
18     OUT_OF_DISTRIBUTION   the spectrum lies outside what the model was trained on: the network's
                             pooled features are far from the training split's (``OOD_DIST2``, the
                             squared Mahalanobis distance from their Gaussian density) and/or the
                             ensemble members disagree (their spread of mean ln(1+z)): the sum of
                             the two ranks in their in-family validation distributions
                             (``OOD_SCORE``, 0-2) above the run's threshold, its ``ood_quantile``
                             (0.96) on the in-family validation split (p(z) estimator)
=====  ====================  =====================================================================
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._types import ArrayLike


class ZWARN(enum.IntFlag):
    """Warning bits of the ``ZWARN`` column (see the module docstring for each bit)."""

    SKY = 1 << 0
    LITTLE_COVERAGE = 1 << 1
    SMALL_DELTA_CHI2 = 1 << 2
    NEGATIVE_MODEL = 1 << 3
    MANY_OUTLIERS = 1 << 4
    Z_FITLIMIT = 1 << 5
    NEGATIVE_EMISSION = 1 << 6
    UNPLUGGED = 1 << 7
    BAD_TARGET = 1 << 8
    NODATA = 1 << 9
    BAD_MINFIT = 1 << 10
    POORDATA = 1 << 11
    EPISTEMIC = 1 << 16
    MULTIMODAL = 1 << 17
    OUT_OF_DISTRIBUTION = 1 << 18


#: Bits csstz sets today (the others are reserved positions).
SET_BY_CSSTZ = (
    ZWARN.LITTLE_COVERAGE
    | ZWARN.SMALL_DELTA_CHI2
    | ZWARN.Z_FITLIMIT
    | ZWARN.BAD_MINFIT
    | ZWARN.EPISTEMIC
    | ZWARN.MULTIMODAL
    | ZWARN.OUT_OF_DISTRIBUTION
)


def names(value: int) -> list[str]:
    """Names of the bits set in one ZWARN value, lowest bit first (unknown bits as ``BIT<n>``)."""
    out = []
    for i in range(32):
        if int(value) >> i & 1:
            try:
                out.append(ZWARN(1 << i).name)
            except ValueError:
                out.append(f"BIT{i}")
    return out


def flag_where(mask: ArrayLike, bit: ZWARN) -> np.ndarray:
    """``bit`` where ``mask`` is true, else 0, as int32 (to OR into a ZWARN column)."""
    return np.where(np.asarray(mask, bool), np.int32(int(bit)), np.int32(0)).astype(np.int32)


__all__ = ["ZWARN", "SET_BY_CSSTZ", "names", "flag_where"]
