r"""Monte Carlo checks of Lemma 2 (``proofs/02-estimators.md``) on the project's estimator code.

The estimator is the project's own (:func:`hybridtheory.algorithm.zo_coefficients` and
:func:`~hybridtheory.algorithm.materialize_estimate`), batched over R independent replicates with
``batch_dims=1``. The test function is nonconvex with a closed-form smoothed gradient:

.. math:: f(x) = \sum_k \alpha_k \sin(w_k^\top x + b_k) + \tfrac12 x^\top A x,

whose ball-smoothed gradient is :math:`\sum_k \alpha_k\cos(w_k^\top x+b_k)\,\chi_d(\mu\|w_k\|)\,w_k + Ax`
with :math:`\chi_d(s) = \mathbb E_{v\sim U(B^d)}\cos(s v_1) = \Gamma(d/2+1)(2/s)^{d/2}J_{d/2}(s)`, and
Gaussian-smoothed gradient the same with :math:`e^{-s^2/2}`. Its Hessian norm is at most
:math:`L = \|A\| + \sum_k|\alpha_k|\|w_k\|^2`.

Confidence margin: a Monte Carlo mean passes when it is within ``Z`` standard errors (Z = 5 per
coordinate for the means, one-sided Z = 4 for upper bounds); the seeds are fixed, so the test is
deterministic, and a wrong constant (e.g. d instead of d+2, or a missing factor 2) fails it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln, jv

from hybridtheory.algorithm import ZOSettings, apply_zo_update, materialize_estimate, zo_coefficients

R = 40_000          # replicates per Monte Carlo estimate of a mean (needs the precision: bias >= 10 se)
R_MOMENT = 10_000   # replicates for second moments (one-sided bounds with slack; keeps the suite fast)
Z_MEAN, Z_BOUND = 5.0, 4.0


class SinQuad:
    """f(x) = sum_k alpha_k sin(w_k.x + b_k) + x.A x / 2 on R^d (batched over leading dims)."""

    def __init__(self, d: int, K: int = 3, quad_only: bool = False, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.d = d
        self.alpha = torch.tensor(0.0 if quad_only else 1.0) * torch.tensor(rng.uniform(0.5, 1.5, K))
        self.W = torch.tensor(rng.normal(size=(K, d)) * 1.5 / math.sqrt(d))
        self.b = torch.tensor(rng.uniform(0, 2 * math.pi, K))
        M = rng.normal(size=(d, d)) / math.sqrt(d)
        self.A = torch.tensor((M + M.T) / 2)       # indefinite: f is nonconvex
        self.L = float(torch.linalg.matrix_norm(self.A, 2)
                       + (self.alpha.abs() * self.W.square().sum(1)).sum())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha * torch.sin(x @ self.W.T + self.b)).sum(-1) + 0.5 * ((x @ self.A) * x).sum(-1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha * torch.cos(x @ self.W.T + self.b)) @ self.W + x @ self.A

    def smoothed_grad(self, x: torch.Tensor, mu: float, law: str) -> torch.Tensor:
        s = (mu * self.W.norm(dim=1)).numpy()
        if law == "sphere":      # ball smoothing (the sphere estimator's mean)
            nu = self.d / 2
            chi = np.exp(gammaln(nu + 1) + nu * np.log(2 / s)) * jv(nu, s)
        else:
            chi = np.exp(-s**2 / 2)
        factor = self.alpha * torch.tensor(chi) * torch.cos(x @ self.W.T + self.b)
        return factor @ self.W + x @ self.A


def _estimate(f: SinQuad, x0: torch.Tensor, settings: ZOSettings, seed: int, reps: int = R
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``reps`` replicate estimates at the same point x0: returns (g of shape (reps, d), the block after the call)."""
    x = x0.expand(reps, f.d).clone()
    records = zo_coefficients([x], lambda: f(x), settings, step_seed=seed,
                              f0=f(x) if settings.difference == "forward" else None)
    return materialize_estimate([x], records)[0], x


def _point(d: int, seed: int = 1) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).normal(size=d))


CASES = [(law, diff, q) for law in ("sphere", "gaussian") for diff in ("central", "forward") for q in (1, 3)]


@pytest.mark.parametrize("law,difference,q", CASES)
@pytest.mark.parametrize("d", [1, 5])
def test_mean_is_smoothed_gradient(law, difference, q, d):
    """Lemma 2(a): E g = grad f_mu (ball smoothing for the sphere law, Gaussian smoothing otherwise)."""
    f, x0, mu = SinQuad(d), _point(d, seed=5), 1.0   # a point where the smoothing bias is large
    st = ZOSettings(mu=mu, law=law, difference=difference, queries=q, batch_dims=1, dtype=torch.float64)
    g, _ = _estimate(f, x0, st, seed=11 + d)
    target = f.smoothed_grad(x0, mu, law)
    se = g.std(0) / math.sqrt(R)
    # d = 1 sphere: u = +-1 and g is deterministic (se = 0); rounding then sets the scale
    z = ((g.mean(0) - target).abs() / (se + 1e-12 * (1 + target.abs()))).max().item()
    assert z < Z_MEAN, f"mean off by {z:.2f} standard errors"
    # the smoothing is not vacuous here: the bias is visible, so the test tells grad f_mu from grad f
    assert (target - f.grad(x0)).norm() > 10 * se.norm()


@pytest.mark.parametrize("law", ["sphere", "gaussian"])
@pytest.mark.parametrize("d", [1, 3, 10, 40])
def test_bias_bound(law, d):
    """Lemma 2(b): |grad f_mu - grad f| <= L mu d/(d+1) (sphere/ball), <= L mu E|u| <= L mu sqrt(d) (Gaussian)."""
    f = SinQuad(d, seed=d)
    for mu in (0.05, 0.3, 1.0, 3.0):
        for s in range(5):
            x = _point(d, seed=100 + s)
            bias = (f.smoothed_grad(x, mu, law) - f.grad(x)).norm().item()
            if law == "sphere":
                bound = f.L * mu * d / (d + 1)
            else:
                e_norm = math.sqrt(2) * math.exp(gammaln((d + 1) / 2) - gammaln(d / 2))
                assert e_norm <= math.sqrt(d)
                bound = f.L * mu * e_norm
            assert bias <= bound * (1 + 1e-12)


@pytest.mark.parametrize("law,difference,q", CASES)
@pytest.mark.parametrize("d", [2, 20])
def test_second_moment_bound(law, difference, q, d):
    """Lemma 2(c), nonconvex f: E|g|^2 <= sigma_pt^2 := 2d|a|^2 + d^2L^2mu^2/2 (sphere),
    2(d+2)|a|^2 + (L mu)^2 d(d+2)(d+4)/2 (Gaussian); with q queries E|g|^2 <= |Eg|^2 + (sigma_pt^2 - |Eg|^2)/q."""
    f, x0 = SinQuad(d, seed=3), _point(d, seed=4)
    a2 = f.grad(x0).square().sum().item()
    for mu in (0.1, 1.0):
        st = ZOSettings(mu=mu, law=law, difference=difference, queries=q, batch_dims=1, dtype=torch.float64)
        g, _ = _estimate(f, x0, st, seed=7 + d, reps=R_MOMENT)
        sq = g.square().sum(1)
        mean, se = sq.mean().item(), sq.std().item() / math.sqrt(R_MOMENT)
        if law == "sphere":
            s_pt = 2 * d * a2 + d**2 * f.L**2 * mu**2 / 2
        else:
            s_pt = 2 * (d + 2) * a2 + (f.L * mu) ** 2 * d * (d + 2) * (d + 4) / 2
        m2 = f.smoothed_grad(x0, mu, law).square().sum().item()
        bound = m2 + (s_pt - m2) / q
        assert mean - Z_BOUND * se <= bound, f"E|g|^2 = {mean:.4g} +- {se:.2g} > bound {bound:.4g}"


@pytest.mark.parametrize("law,exact", [("sphere", lambda d: d), ("gaussian", lambda d: d + 2)])
@pytest.mark.parametrize("q", [1, 4])
def test_second_moment_exact_on_quadratics(law, exact, q):
    """For quadratic f the central difference is exact: E|g|^2 = |a|^2 + (k_d - 1)|a|^2/q with k_d = d (sphere),
    d + 2 (Gaussian). The constant 2 in Lemma 2(c) is the price of nonconvexity/curvature only."""
    d = 6
    f, x0 = SinQuad(d, quad_only=True, seed=5), _point(d, seed=6)
    a2 = f.grad(x0).square().sum().item()
    st = ZOSettings(mu=0.5, law=law, difference="central", queries=q, batch_dims=1, dtype=torch.float64)
    g, _ = _estimate(f, x0, st, seed=21, reps=R_MOMENT)
    sq = g.square().sum(1)
    want = a2 + (exact(d) - 1) * a2 / q
    assert abs(sq.mean().item() - want) <= Z_MEAN * sq.std().item() / math.sqrt(R_MOMENT)
    assert ((g.mean(0) - f.grad(x0)).abs() / (g.std(0) / math.sqrt(R_MOMENT))).max() < Z_MEAN   # no bias


@pytest.mark.parametrize("d", [1, 4, 30])
def test_sphere_almost_sure_bound(d):
    """Lemma 2(d): |g| <= d sup_{[x-mu u, x+mu u]} |grad f| <= d(|grad f(x)| + L mu), for every draw."""
    f = SinQuad(d, seed=8)
    for mu in (0.01, 0.5, 2.0):
        x0 = _point(d, seed=9)
        st = ZOSettings(mu=mu, law="sphere", difference="central", batch_dims=1, dtype=torch.float64)
        g, _ = _estimate(f, x0, st, seed=31, reps=R_MOMENT)
        bound = d * (f.grad(x0).norm().item() + f.L * mu)
        assert g.norm(dim=1).max().item() <= bound * (1 + 1e-12)


@pytest.mark.parametrize("law", ["sphere", "gaussian"])
@pytest.mark.parametrize("difference", ["central", "forward"])
def test_perturb_restore_regenerates_the_same_direction(law, difference):
    """The block is restored after querying, the coefficient is the finite difference along the regenerated
    direction, and the in-place update equals -lr * g with g = materialize_estimate."""
    d, mu, lr = 7, 0.3, 0.05
    f, x0 = SinQuad(d, seed=12), _point(d, seed=13)
    x = x0.expand(64, d).clone()
    st = ZOSettings(mu=mu, law=law, difference=difference, queries=2, batch_dims=1, dtype=torch.float64)
    recs = zo_coefficients([x], lambda: f(x), st, step_seed=99, f0=f(x) if difference == "forward" else None)
    torch.testing.assert_close(x, x0.expand(64, d), rtol=0, atol=1e-14)       # restored
    for r in recs:
        u1 = r.direction.materialize([x])[0]
        u2 = r.direction.materialize([x])[0]
        assert torch.equal(u1, u2)                                          # bit-identical regeneration
        if law == "sphere":
            torch.testing.assert_close(u1.norm(dim=1), torch.ones(64, dtype=torch.float64))
        fd = ((f(x + mu * u1) - f(x - mu * u1)) / (2 * mu) if difference == "central"
              else (f(x + mu * u1) - f(x)) / mu)
        torch.testing.assert_close(r.coeff, fd, rtol=1e-9, atol=1e-12)
    # two queries of one step use different directions
    assert not torch.equal(recs[0].direction.materialize([x])[0], recs[1].direction.materialize([x])[0])
    g = materialize_estimate([x], recs)[0]
    before = x.clone()
    apply_zo_update([x], recs, [lr])
    torch.testing.assert_close(x, before - lr * g, rtol=0, atol=1e-13)


# -- Lemma 2R: Rademacher directions (proofs/02-estimators.md) -------------------------------------
@pytest.mark.parametrize("diff", ["central", "forward"])
@pytest.mark.parametrize("d", [1, 5])
def test_rademacher_bias_and_second_moment(diff, d):
    """Bias <= L mu d / 2 (Lemma 2R(a)) and E||g||^2 <= 2d||a||^2 + d^3 L^2 mu^2 / 2 (b), with the
    Monte Carlo margins of this file; for a quadratic and the central difference the mean is exactly
    the gradient and E||g||^2 = d ||a||^2 (so a constant d+2 or a missing factor would fail)."""
    f, x0, mu = SinQuad(d, seed=3), _point(d, seed=4), 0.4
    a = f.grad(x0)
    s = ZOSettings(mu=mu, law="rademacher", difference=diff, queries=1, batch_dims=1, dtype=torch.float64)
    g, _ = _estimate(f, x0, s, seed=11, reps=R_MOMENT)
    mean, se = g.mean(0), g.std(0) / math.sqrt(R_MOMENT)
    assert float((mean - a).norm()) <= f.L * mu * d / 2 + Z_MEAN * float(se.norm())
    sq = g.square().sum(1)
    bound = 2 * d * float(a.square().sum()) + d**3 * f.L**2 * mu**2 / 2
    assert float(sq.mean()) - Z_BOUND * float(sq.std() / math.sqrt(R_MOMENT)) <= bound
    if diff == "central":
        fq = SinQuad(d, quad_only=True, seed=3)
        aq = fq.grad(x0)
        gq, _ = _estimate(fq, x0, s, seed=12, reps=R_MOMENT)
        seq = gq.std(0) / math.sqrt(R_MOMENT)
        assert torch.all((gq.mean(0) - aq).abs() <= Z_MEAN * seq + 1e-12)
        sqq = gq.square().sum(1)
        target = d * float(aq.square().sum())
        assert abs(float(sqq.mean()) - target) <= Z_MEAN * float(sqq.std() / math.sqrt(R_MOMENT)) + 1e-9 * target
