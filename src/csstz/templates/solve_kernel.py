"""Compiled batched K x K solves of the FFT template likelihood (torch-free, numba).

:meth:`csstz.templates.xcorr.XcorrModel.loglike` has, for every spectrum and every redshift shift, the
normal equations ``M a = b`` of a K-template basis (M symmetric K x K, stored as its upper-triangle pairs)
and needs, at every shift:

* the least-squares log-likelihood ``-(f.W.f - b.a_ls) / 2`` (``a_ls = M^-1 b``, a relative ridge of 1e-10
  on the diagonal), or for ``mode="ls"`` the same from the forward substitution alone
  (``f.W.f - |L^-1 b|^2`` with ``M + eps I = L L^T``);
* the marginal likelihood under the basis's amplitude-scaled Gaussian (mixture) coefficient prior: for each
  prior component a fixed-point iteration on the amplitude ``A = norm . a`` (``PRIOR_ITERATIONS`` solves of
  ``(M + P / A^2) a = b + P mu / A``, starting from the least-squares amplitude, floored at
  ``floor_rel`` of the spectrum's largest amplitude over shifts), then
  ``-(f.W.f + mu.P.mu - g.a) / 2`` with the Occam terms ``-(log det H - log det P) / 2 - K log A``,
  summed over components by log-sum-exp; the coefficients returned are the best component's;
* with ``n_free > 0`` trailing templates of zero prior mean and a prior independent of the others (the free
  emission lines of :func:`csstz.templates.learned.add_emission_lines`), also the *nested* marginal
  likelihood of the model without them, from the same factorisation (Schur complement): with ``y = L^-1 g``,
  ``log L_nested = log L - sum_free (y_j^2 / 2 - log L_jj + log(P_jj / A^2) / 2)`` at the same amplitude
  (``L_jj`` the Cholesky pivot of ``H = M + P / A^2`` with the free templates last).

A Cholesky pivot d <= 0 (not positive definite) zeroes that solve's coefficients and makes its log
determinant NaN, so that shift's prior log-likelihood is -inf. These are the numbers of the vectorised
NumPy formulation that preceded this module (to round-off), but the loops are fused: every step runs over
a block of ``BLOCK_S`` shifts held in the L1 cache (the innermost loops vectorise), with no array
temporaries, and the loops release the GIL, so the threads of
:func:`csstz.templates.xcorr.loglike_curves` run in parallel. Speed: benchmarks/README.md.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Fixed-point iterations of the amplitude in the prior solve (project choice, unchanged from 0.3.0).
PRIOR_ITERATIONS = 3
#: Shifts per fused block: (K, K, BLOCK_S) float64 factors stay in the L1 cache for K <= 8.
BLOCK_S = 64


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _chol(
    H: np.ndarray, L: np.ndarray, ok: np.ndarray, t: np.ndarray, K: int, B: int, guard: bool = True
) -> None:  # pragma: no cover - compiled
    """Cholesky factors L (K, K, B) of B matrices H (lower triangle read; L's diagonal holds the
    reciprocal pivots 1 / L_jj); ok[s] = 0 where not SPD (``guard=False``: a bad pivot gives NaN, which
    propagates, as in an unguarded factorisation).
    Every innermost loop runs over the B systems (it vectorises); t (B,) is scratch."""
    for s in range(B):
        ok[s] = 1.0
    for j in range(K):
        for s in range(B):
            t[s] = H[j, j, s]
        for k in range(j):
            for s in range(B):
                t[s] -= L[j, k, s] * L[j, k, s]
        for s in range(B):
            good = t[s] > 0.0
            ok[s] = ok[s] if good else 0.0
            L[j, j, s] = 1.0 / math.sqrt(t[s] if (good or not guard) else 1.0)  # the diagonal holds 1 / L_jj
        for i in range(j + 1, K):
            for s in range(B):
                t[s] = H[i, j, s]
            for k in range(j):
                for s in range(B):
                    t[s] -= L[i, k, s] * L[j, k, s]
            for s in range(B):
                L[i, j, s] = t[s] * L[j, j, s]


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _forward(L: np.ndarray, g: np.ndarray, y: np.ndarray, K: int, B: int) -> None:  # pragma: no cover - compiled
    """y = L^-1 g over B systems."""
    for i in range(K):
        for s in range(B):
            y[i, s] = g[i, s]
        for k in range(i):
            for s in range(B):
                y[i, s] -= L[i, k, s] * y[k, s]
        for s in range(B):
            y[i, s] *= L[i, i, s]


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _backward(
    L: np.ndarray, y: np.ndarray, x: np.ndarray, ok: np.ndarray, K: int, B: int
) -> None:  # pragma: no cover - compiled
    """x = L^-T y over B systems; x = 0 where ok is 0 or x is not finite."""
    for i in range(K - 1, -1, -1):
        for s in range(B):
            x[i, s] = y[i, s]
        for k in range(i + 1, K):
            for s in range(B):
                x[i, s] -= L[k, i, s] * x[k, s]
        for s in range(B):
            x[i, s] *= L[i, i, s]
    for s in range(B):
        fin = ok[s] > 0.0
        for i in range(K):
            fin = fin and math.isfinite(x[i, s])
        if not fin:
            ok[s] = 0.0
            for i in range(K):
                x[i, s] = 0.0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _load(
    mm: np.ndarray,
    bb: np.ndarray,
    pj: np.ndarray,
    pk: np.ndarray,
    n: int,
    s0: int,
    B: int,
    A: np.ndarray,
    b: np.ndarray,
) -> None:  # pragma: no cover - compiled
    for p in range(pj.size):
        j, k = pj[p], pk[p]
        for s in range(B):
            v = mm[p, n, s0 + s]
            A[j, k, s] = v
            A[k, j, s] = v
    for j in range(b.shape[0]):
        for s in range(B):
            b[j, s] = bb[j, n, s0 + s]


@njit(cache=True, nogil=True, error_model="numpy")
def solve_ls_forward(
    bb: np.ndarray, mm: np.ndarray, fwf: np.ndarray, pj: np.ndarray, pk: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``mode="ls"``: out[n, s] = -(f.W.f - |L^-1 b|^2) / 2, ``M + eps I = L L^T``, eps = 1e-10 mean(diag M)
    (NaN terms of L^-1 b count as 0).

    bb (K, N, S), mm (npair, N, S) with pair p = (pj[p], pk[p]), fwf (N,), out (N, S).
    """
    K, N, S = bb.shape
    A = np.empty((K, K, BLOCK_S))
    L = np.empty((K, K, BLOCK_S))
    b = np.empty((K, BLOCK_S))
    y = np.empty((K, BLOCK_S))
    t = np.empty(BLOCK_S)
    ok = np.empty(BLOCK_S)
    for n in range(N):
        for s0 in range(0, S, BLOCK_S):
            B = min(BLOCK_S, S - s0)
            _load(mm, bb, pj, pk, n, s0, B, A, b)
            for s in range(B):
                tr = 0.0
                for k in range(K):
                    tr += A[k, k, s]
                eps = 1e-10 * tr / K + 1e-300
                for k in range(K):
                    A[k, k, s] += eps
            # NaN pivots propagate as in the unguarded factorisation: NaN terms count as 0
            _chol(A, L, ok, t, K, B, False)
            _forward(L, b, y, K, B)
            for s in range(B):
                q = 0.0
                for k in range(K):
                    v = y[k, s]
                    q += v * v if math.isfinite(v) else 0.0
                out[n, s0 + s] = -0.5 * (fwf[n] - q)


@njit(cache=True, nogil=True, error_model="numpy")
def solve_ls(
    bb: np.ndarray, mm: np.ndarray, fwf: np.ndarray, pj: np.ndarray, pk: np.ndarray, ll: np.ndarray, coef: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Least squares with its coefficients: ll[n, s] = -(f.W.f - b.a) / 2 and coef[:, n, s] = a, with
    ``(M + ridge) a = b`` (relative ridge 1e-10 on the diagonal)."""
    K, N, S = bb.shape
    A = np.empty((K, K, BLOCK_S))
    L = np.empty((K, K, BLOCK_S))
    b = np.empty((K, BLOCK_S))
    y = np.empty((K, BLOCK_S))
    x = np.empty((K, BLOCK_S))
    ok = np.empty(BLOCK_S)
    t = np.empty(BLOCK_S)
    for n in range(N):
        for s0 in range(0, S, BLOCK_S):
            B = min(BLOCK_S, S - s0)
            _load(mm, bb, pj, pk, n, s0, B, A, b)
            for k in range(K):
                for s in range(B):
                    A[k, k, s] += 1e-10 * A[k, k, s] + 1e-300
            _chol(A, L, ok, t, K, B)
            _forward(L, b, y, K, B)
            _backward(L, y, x, ok, K, B)
            for s in range(B):
                q = 0.0
                for k in range(K):
                    q += b[k, s] * x[k, s]
                    coef[k, n, s0 + s] = x[k, s]
                ll[n, s0 + s] = -0.5 * (fwf[n] - q)


@njit(cache=True, nogil=True, error_model="numpy")
def solve_prior(
    bb: np.ndarray,
    mm: np.ndarray,
    fwf: np.ndarray,
    pj: np.ndarray,
    pk: np.ndarray,
    norm: np.ndarray,
    logw: np.ndarray,
    mu: np.ndarray,
    prec: np.ndarray,
    logdet_prec: np.ndarray,
    floor_rel: float,
    occam: bool,
    ll_prior: np.ndarray,
    ll_ls: np.ndarray,
    coef: np.ndarray,
    n_free: int,
    ll_nested: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Prior marginal log-likelihood (``ll_prior``, (N, S)), least-squares log-likelihood (``ll_ls``,
    (N, S)), the best prior component's coefficients (``coef``, (K, N, S)) and, for ``n_free > 0``, the
    nested likelihood without the last ``n_free`` templates (``ll_nested``, (N, S); not written for
    ``n_free = 0``); module docstring.

    logw (G,), mu (G, K), prec (G, K, K), logdet_prec (G,): the prior components.
    """
    K, N, S = bb.shape
    G = logw.size
    A = np.empty((K, K, BLOCK_S))
    H = np.empty((K, K, BLOCK_S))
    L = np.empty((K, K, BLOCK_S))
    b = np.empty((K, BLOCK_S))
    g = np.empty((K, BLOCK_S))
    y = np.empty((K, BLOCK_S))
    x = np.empty((K, BLOCK_S))
    ok = np.empty(BLOCK_S)
    t = np.empty(BLOCK_S)
    amp = np.empty(BLOCK_S)
    amp_use = np.empty(BLOCK_S)
    tot = np.empty(BLOCK_S)
    best = np.empty(BLOCK_S)
    tot_n = np.empty(BLOCK_S)
    amp0 = np.empty(S)
    pmu = np.empty((G, K))
    mupmu = np.empty(G)
    for c in range(G):
        m2 = 0.0
        for j in range(K):
            v = 0.0
            for k in range(K):
                v += prec[c, j, k] * mu[c, k]
            pmu[c, j] = v
            m2 += mu[c, j] * v
        mupmu[c] = m2
    for n in range(N):
        fw = fwf[n]
        # pass 1: least squares at every shift (its amplitude starts the prior iteration)
        amp_max = 0.0
        for s0 in range(0, S, BLOCK_S):
            B = min(BLOCK_S, S - s0)
            _load(mm, bb, pj, pk, n, s0, B, A, b)
            for j in range(K):
                for k in range(j):
                    for s in range(B):
                        H[j, k, s] = A[j, k, s]
                for s in range(B):
                    H[j, j, s] = A[j, j, s] + (1e-10 * A[j, j, s] + 1e-300)
            _chol(H, L, ok, t, K, B)
            _forward(L, b, y, K, B)
            _backward(L, y, x, ok, K, B)
            for s in range(B):
                q = 0.0
                a0 = 0.0
                for k in range(K):
                    q += b[k, s] * x[k, s]
                    a0 += norm[k] * x[k, s]
                ll_ls[n, s0 + s] = -0.5 * (fw - q)
                amp0[s0 + s] = a0
                amp_max = max(amp_max, abs(a0))
        floor = max(floor_rel * amp_max, 1e-30)
        # pass 2: the prior components
        for s0 in range(0, S, BLOCK_S):
            B = min(BLOCK_S, S - s0)
            _load(mm, bb, pj, pk, n, s0, B, A, b)
            for s in range(B):
                tot[s] = -np.inf
                best[s] = -np.inf
                tot_n[s] = -np.inf
            for c in range(G):
                for s in range(B):
                    amp[s] = amp0[s0 + s]
                for _ in range(PRIOR_ITERATIONS):
                    for s in range(B):
                        amp_use[s] = max(amp[s], floor)
                    for s in range(B):
                        amp_use[s] = 1.0 / amp_use[s]  # now 1 / A
                    for j in range(K):
                        for k in range(j + 1):
                            pjk = prec[c, j, k]
                            for s in range(B):
                                H[j, k, s] = A[j, k, s] + pjk * amp_use[s] * amp_use[s]
                        pm = pmu[c, j]
                        for s in range(B):
                            g[j, s] = b[j, s] + pm * amp_use[s]
                    _chol(H, L, ok, t, K, B)
                    _forward(L, g, y, K, B)
                    _backward(L, y, x, ok, K, B)
                    for s in range(B):
                        amp[s] = 0.0
                    for k in range(K):
                        nk = norm[k]
                        for s in range(B):
                            amp[s] += nk * x[k, s]
                for s in range(B):
                    q = 0.0
                    for k in range(K):
                        q += g[k, s] * x[k, s]
                    ll = -0.5 * (fw + mupmu[c] - q)
                    if occam:
                        # log det H = 2 sum log L_jj = -2 log prod (1 / L_jj): one log (pivots ~ 1e-10 .. 1e10)
                        det_l = 1.0
                        for j in range(K):
                            det_l *= L[j, j, s]
                        ll = ll + math.log(det_l) + 0.5 * logdet_prec[c] + K * math.log(amp_use[s])
                    if n_free > 0:
                        # the nested model without the free trailing templates (module docstring)
                        lln = ll
                        for j in range(K - n_free, K):
                            lln -= 0.5 * y[j, s] * y[j, s]
                            if occam:
                                lln -= (
                                    math.log(L[j, j, s]) + 0.5 * math.log(prec[c, j, j]) + math.log(amp_use[s])
                                )  # L: 1 / L_jj
                        if not (ok[s] > 0.0 and math.isfinite(lln)):
                            lln = -np.inf
                        lln += logw[c]
                        if tot_n[s] == -np.inf:
                            tot_n[s] = lln
                        elif lln > -np.inf:
                            hi = max(tot_n[s], lln)
                            tot_n[s] = hi + math.log(math.exp(tot_n[s] - hi) + math.exp(lln - hi))
                    if not (ok[s] > 0.0 and math.isfinite(ll)):
                        ll = -np.inf
                    ll += logw[c]
                    if c == 0 or ll > best[s]:
                        best[s] = ll
                        for k in range(K):
                            coef[k, n, s0 + s] = x[k, s]
                    if tot[s] == -np.inf:
                        tot[s] = ll
                    elif ll > -np.inf:
                        hi = max(tot[s], ll)
                        tot[s] = hi + math.log(math.exp(tot[s] - hi) + math.exp(ll - hi))
            for s in range(B):
                ll_prior[n, s0 + s] = tot[s]
            if n_free > 0:
                for s in range(B):
                    ll_nested[n, s0 + s] = tot_n[s]


@njit(cache=True, nogil=True, error_model="numpy")
def resample_band(
    flux: np.ndarray,
    err: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    overlap: np.ndarray,
    min_cover: float,
    wsum: np.ndarray,
    fsum: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add one band's flux-conserving resampling to the inverse-variance sums on the common grid.

    flux, err (N, P): the band's native pixels (err not finite or <= 0, or flux not finite: no data);
    indptr, indices, overlap: the CSR arrays of the (P, L) overlap matrix
    (:func:`csstz.templates.xcorr.resampling_matrix`); wsum, fsum (N, L) accumulate ``w`` and ``w f`` of
    this band's common-grid estimate ``f = sum_i O_ij f_i / c_j``, ``var = sum_i O_ij^2 s_i^2 / c_j^2``,
    ``c_j = sum_i O_ij`` over the pixels with data, used where ``c_j >= min_cover``. The sums run over the
    native pixels in order, as the sparse products of 0.6.0 did.
    """
    N, P = flux.shape
    L = wsum.shape[1]
    cover = np.empty(L)
    num = np.empty(L)
    vnum = np.empty(L)
    for n in range(N):
        for j in range(L):
            cover[j] = 0.0
            num[j] = 0.0
            vnum[j] = 0.0
        for i in range(P):
            e = err[n, i]
            f = flux[n, i]
            if not (math.isfinite(e) and e > 0.0 and math.isfinite(f)):
                continue
            v = e * e
            for t in range(indptr[i], indptr[i + 1]):
                j = indices[t]
                o = overlap[t]
                cover[j] += o
                num[j] += o * f
                vnum[j] += o * o * v
        for j in range(L):
            c = cover[j]
            if c >= min_cover:
                vb = vnum[j] / (c * c)
                if vb > 0.0:
                    wb = 1.0 / vb
                    wsum[n, j] += wb
                    fsum[n, j] += wb * (num[j] / c)


def warm_up(n_templates: int = 5) -> None:
    """Compile (or load from numba's cache) the kernels for ``n_templates`` templates now, e.g. in a parent
    process before it forks workers, so that they do not each compile them (~5 s once per machine)."""
    K, N, S = int(n_templates), 1, 2
    pj = np.array([j for j in range(K) for k in range(j, K)])
    pk = np.array([k for j in range(K) for k in range(j, K)])
    bb, mm, fwf = np.ones((K, N, S)), np.zeros((pj.size, N, S)), np.ones(N)
    mm[pj == pk] = 1.0
    ll, ll2, coef = np.empty((N, S)), np.empty((N, S)), np.empty((K, N, S))
    solve_ls_forward(bb, mm, fwf, pj, pk, ll)
    solve_ls(bb, mm, fwf, pj, pk, ll, coef)
    solve_prior(bb, mm, fwf, pj, pk, np.ones(K), np.zeros(1), np.ones((1, K)), np.eye(K)[None], np.zeros(1), 0.01,
                True, ll, ll2, coef, 0, ll)  # fmt: skip
    one = np.ones((N, 2))
    resample_band(one, one, np.array([0, 1, 2]), np.array([0, 1]), np.ones(2), 0.5, np.zeros((N, 2)), np.zeros((N, 2)))


__all__ = ["resample_band", "solve_prior", "solve_ls", "solve_ls_forward", "warm_up", "PRIOR_ITERATIONS", "BLOCK_S"]
