"""The compiled batched solves of the template likelihood against LAPACK (numpy.linalg), system by system."""

from __future__ import annotations

import numpy as np
import pytest

from csstz.templates.solve_kernel import BLOCK_S, PRIOR_ITERATIONS, solve_ls, solve_ls_forward, solve_prior

K = 5


def _pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    pj = np.array([j for j in range(k) for _ in range(j, k)])
    pk = np.array([i for j in range(k) for i in range(j, k)])
    return pj, pk


def _systems(rng: np.random.Generator, n: int, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random SPD normal equations M (n, s, K, K), b (n, s, K) and f.W.f (n,) with a positive chi2."""
    X = rng.normal(size=(n, s, 3 * K, K)) * rng.uniform(0.1, 10.0, size=(n, s, 1, K))
    M = np.einsum("nspj,nspk->nsjk", X, X)
    y = rng.normal(size=(n, s, 3 * K))
    b = np.einsum("nspj,nsp->nsj", X, y)
    fwf = np.max(np.einsum("nsp,nsp->ns", y, y), axis=1) * 1.5
    return M, b, fwf, X


def _packed(M: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pj, pk = _pairs(K)
    mm = np.ascontiguousarray(np.moveaxis(M[..., pj, pk], -1, 0))  # (npair, n, s)
    bb = np.ascontiguousarray(np.moveaxis(b, -1, 0))  # (K, n, s)
    return bb, mm


def _prior(rng: np.random.Generator, g: int) -> tuple[np.ndarray, ...]:
    mu = rng.normal(size=(g, K)) + 2.0
    prec = np.empty((g, K, K))
    for c in range(g):
        A = rng.normal(size=(K, K))
        prec[c] = A @ A.T + K * np.eye(K)
    logw = np.log(rng.dirichlet(np.ones(g)))
    logdet = np.array([np.linalg.slogdet(p)[1] for p in prec])
    return logw, mu, prec, logdet


@pytest.mark.parametrize("s", [7, BLOCK_S, BLOCK_S + 13])  # partial, exact and two blocks
def test_least_squares_equals_lapack(s):
    rng = np.random.default_rng(1)
    M, b, fwf, _ = _systems(rng, 3, s)
    bb, mm = _packed(M, b)
    pj, pk = _pairs(K)
    ll, coef = np.empty((3, s)), np.empty((K, 3, s))
    solve_ls(bb, mm, fwf, pj, pk, ll, coef)
    diag = np.diagonal(M, axis1=-2, axis2=-1)
    a = np.linalg.solve(M + np.eye(K) * (1e-10 * diag[..., None] + 1e-300), b[..., None])[..., 0]
    np.testing.assert_allclose(np.moveaxis(coef, 0, -1), a, rtol=1e-7, atol=1e-10)
    # chi2 = f.W.f - b.a cancels: compare on the scale of f.W.f
    scale = fwf[:, None] * 1e-12
    np.testing.assert_allclose(ll, -0.5 * (fwf[:, None] - np.sum(a * b, axis=-1)), rtol=0, atol=scale.max())
    fwd = np.empty((3, s))
    solve_ls_forward(bb, mm, fwf, pj, pk, fwd)
    eps = 1e-10 * diag.mean(axis=-1)[..., None, None] + 1e-300
    a_eps = np.linalg.solve(M + eps * np.eye(K), b[..., None])[..., 0]
    np.testing.assert_allclose(fwd, -0.5 * (fwf[:, None] - np.sum(a_eps * b, axis=-1)), rtol=0, atol=scale.max())


@pytest.mark.parametrize("g", [1, 3])
def test_prior_marginal_likelihood_equals_its_formula(g):
    """Each shift: the amplitude fixed point, log L = -(fWf + mu.P.mu - g.a)/2 - (log|H| - log|P|)/2 - K log A
    (H = M + P/A^2, g = b + P mu / A), log-sum-exp over the components; coefficients of the best one."""
    rng = np.random.default_rng(2)
    n, s = 2, 40
    M, b, fwf, _ = _systems(rng, n, s)
    bb, mm = _packed(M, b)
    pj, pk = _pairs(K)
    norm = rng.uniform(0.5, 1.5, K)
    logw, mu, prec, logdet_prec = _prior(rng, g)
    floor_rel = 0.01
    ll_p, ll_ls, coef = np.empty((n, s)), np.empty((n, s)), np.empty((K, n, s))
    solve_prior(bb, mm, fwf, pj, pk, norm, logw, mu, prec, logdet_prec, floor_rel, True, ll_p, ll_ls, coef, 0, ll_p)

    Mr = M + np.eye(K) * (1e-10 * np.diagonal(M, axis1=-2, axis2=-1)[..., None] + 1e-300)
    a_ls = np.linalg.solve(Mr, b[..., None])[..., 0]
    np.testing.assert_allclose(ll_ls, -0.5 * (fwf[:, None] - np.sum(a_ls * b, -1)), rtol=0, atol=1e-12 * fwf.max())
    amp0 = a_ls @ norm
    floor = np.maximum(floor_rel * np.max(np.abs(amp0), axis=1, keepdims=True), 1e-30)
    per_comp, coefs = [], []
    for c in range(g):
        amp = amp0
        for _ in range(PRIOR_ITERATIONS):
            A = np.maximum(amp, floor)
            H = M + prec[c] / A[..., None, None] ** 2
            gv = b + (prec[c] @ mu[c]) / A[..., None]
            a = np.linalg.solve(H, gv[..., None])[..., 0]
            amp = a @ norm
        ll = -0.5 * (fwf[:, None] + mu[c] @ prec[c] @ mu[c] - np.sum(gv * a, -1))
        ll += -0.5 * np.linalg.slogdet(H)[1] + 0.5 * logdet_prec[c] - K * np.log(A) + logw[c]
        per_comp.append(ll)
        coefs.append(a)
    per_comp = np.array(per_comp)
    np.testing.assert_allclose(ll_p, np.logaddexp.reduce(per_comp, axis=0), rtol=0, atol=1e-11 * fwf.max())
    best = np.argmax(per_comp, axis=0)
    want = np.take_along_axis(np.array(coefs), best[None, ..., None], axis=0)[0]
    np.testing.assert_allclose(np.moveaxis(coef, 0, -1), want, rtol=1e-6, atol=1e-9)


def test_a_system_that_is_not_positive_definite_gives_minus_infinity_and_zero_coefficients():
    rng = np.random.default_rng(3)
    n, s = 1, 10
    M, b, fwf, _ = _systems(rng, n, s)
    M[0, 4] = -1e30 * np.eye(K)  # shift 4: negative definite, also with the prior added
    bb, mm = _packed(M, b)
    pj, pk = _pairs(K)
    logw, mu, prec, logdet_prec = _prior(rng, 1)
    ll_p, ll_ls, coef = np.empty((n, s)), np.empty((n, s)), np.empty((K, n, s))
    solve_prior(bb, mm, fwf, pj, pk, np.ones(K), logw, mu, prec, logdet_prec, 0.01, True, ll_p, ll_ls, coef, 0, ll_p)
    assert ll_p[0, 4] == -np.inf
    assert np.isfinite(np.delete(ll_p[0], 4)).all()
    ls_coef = np.empty((K, n, s))
    ll2 = np.empty((n, s))
    solve_ls(bb, mm, fwf, pj, pk, ll2, ls_coef)
    assert np.all(ls_coef[:, 0, 4] == 0.0) and ll2[0, 4] == -0.5 * fwf[0]


@pytest.mark.parametrize("g", [1, 3])
@pytest.mark.parametrize("occam", [True, False])
def test_nested_likelihood_without_the_free_template_equals_the_smaller_models(g, occam):
    """n_free = 1: the last template has zero prior mean, an independent prior and no amplitude share; the
    nested curve is the marginal likelihood of the first K - 1 templates at the full model's amplitude."""
    rng = np.random.default_rng(5)
    n, s, k0 = 2, 40, K - 1
    M, b, fwf, _ = _systems(rng, n, s)
    bb, mm = _packed(M, b)
    pj, pk = _pairs(K)
    norm = np.r_[rng.uniform(0.5, 1.5, k0), 0.0]
    logw, mu, prec, _ = _prior(rng, g)
    mu[:, k0] = 0.0
    prec[:, k0, :k0] = prec[:, :k0, k0] = 0.0
    logdet_prec = np.array([np.linalg.slogdet(p)[1] for p in prec])
    ll_p, ll_ls, coef, ll_n = np.empty((n, s)), np.empty((n, s)), np.empty((K, n, s)), np.empty((n, s))
    solve_prior(bb, mm, fwf, pj, pk, norm, logw, mu, prec, logdet_prec, 0.01, occam, ll_p, ll_ls, coef, 1, ll_n)

    Mr = M + np.eye(K) * (1e-10 * np.diagonal(M, axis1=-2, axis2=-1)[..., None] + 1e-300)
    amp0 = np.linalg.solve(Mr, b[..., None])[..., 0] @ norm
    floor = np.maximum(0.01 * np.max(np.abs(amp0), axis=1, keepdims=True), 1e-30)
    nested = []
    for c in range(g):
        amp = amp0
        for _ in range(PRIOR_ITERATIONS):  # the full model's amplitude fixed point
            A = np.maximum(amp, floor)
            H = M + prec[c] / A[..., None, None] ** 2
            a = np.linalg.solve(H, (b + (prec[c] @ mu[c]) / A[..., None])[..., None])[..., 0]
            amp = a @ norm
        p0, m0 = prec[c, :k0, :k0], mu[c, :k0]
        H0 = M[..., :k0, :k0] + p0 / A[..., None, None] ** 2
        g0 = b[..., :k0] + (p0 @ m0) / A[..., None]
        a0 = np.linalg.solve(H0, g0[..., None])[..., 0]
        ll = -0.5 * (fwf[:, None] + m0 @ p0 @ m0 - np.sum(g0 * a0, -1))
        if occam:
            ll += -0.5 * np.linalg.slogdet(H0)[1] + 0.5 * np.linalg.slogdet(p0)[1] - k0 * np.log(A)
        nested.append(ll + logw[c])
    np.testing.assert_allclose(ll_n, np.logaddexp.reduce(np.array(nested), axis=0), rtol=0, atol=1e-9 * fwf.max())
    assert np.max(np.abs(ll_n - ll_p)) > 1.0  # the free template matters in these systems
