"""Theorem 2 (heterogeneity instead of bounded gradients, ``proofs/07-theorem2.md``): the SymPy bookkeeping,
code = SymPy, Corollaries 3-4 deliver eps^2 and have the claimed exponents, and the ergodic bound holds on runs."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import sympy as sp
import torch

from hybridtheory import bounds
from hybridtheory.assumptions import HGSConstants
from hybridtheory.objectives import make
from hybridtheory.runner import RunConfig, ergodic_weighted_average, run
from proofs import symbolic as S

ARGS2 = (S.L_x, S.L_c, S.L0, S.n, S.d, S.q, S.eta_x, S.eta_y, S.mu, S.Delta, S.T, S.vx, S.vy)


def _fn(expr):
    return sp.lambdify(ARGS2, expr, modules="math")


_E2 = {law: _fn(S.theorem2_epoch_error(law, Ly=S.L0)) for law in S.LAWS2}
_W2 = {law: _fn(S.theorem2_rhs(law, Ly=S.L0)) for law in S.LAWS2}
_CAPS2 = {law: [_fn(c.subs(S.L_y, S.L0)) for c in S.theorem2_caps(law)] for law in S.LAWS2}
_COEF = {law: [sp.lambdify(ARGS2 + (S.Bx, S.By), c, modules="math")
               for c in S.theorem2_gradient_coefficients(law, Ly=S.L0, Bx_=S.Bx, By_=S.By)] for law in S.LAWS2}


def _random_point(rng: random.Random, law: str):
    c = HGSConstants(L_x=10 ** rng.uniform(-2, 2), L_c=rng.choice([0.0, 10 ** rng.uniform(-2, 2)]),
                     L0=10 ** rng.uniform(-2, 2), L1=0.0, G_x=None, G_y=None, F_lower=0.0)
    n, d, qq = rng.randint(1, 300), rng.randint(1, 3000), rng.randint(1, 8)
    cx, cy = bounds.theorem2_caps(c, n, d, qq, law)
    return c, n, d, qq, rng.uniform(1e-3, 1) * cx, rng.uniform(1e-3, 1) * cy


def test_coefficient_majorants_at_the_caps():
    """Step 3: at u = 1/16, w = 1/64, v = 1/8 both gradient coefficients are <= -1/5 and the drift
    system's determinant is >= 5/6 (so gamma = 6/5); the majorants increase in u, w, v (nonnegative
    coefficients except the constant), so the caps are the worst case."""
    cx, cy, det = S.theorem2_coefficient_majorants()
    at = S.THEOREM2_CAP_VALUES
    assert cx.subs(at) <= -S.DESCENT2 and cy.subs(at) <= -S.DESCENT2
    assert det.subs(at) >= 1 / S.GAMMA2
    # the code's constants are the proof's
    assert bounds.T2_DESCENT == 1 / S.DESCENT2 and bounds.T2_GAMMA == float(S.GAMMA2)
    assert (bounds.T2_CAP_X, bounds.T2_CAP_Q, bounds.T2_CAP_Y) == (S.CAP2_X, S.CAP2_Q, S.CAP2_Y)
    for e in (cx, cy):
        coeffs = sp.Poly(sp.expand(e), S.u_, S.w_, S.v_).terms()
        assert all(cf > 0 for mon, cf in coeffs if any(mon))
    # det decreases in u, w, v: its non-constant coefficients are <= 0
    assert all(cf < 0 for mon, cf in sp.Poly(sp.expand(det), S.u_, S.w_, S.v_).terms() if any(mon))


@pytest.mark.parametrize("law", S.LAWS2)
def test_exact_coefficients_below_majorant(law):
    """The exact coefficients (before the majorisation L_x, L_c <= Lhat_x, L_c, L_y <= Lhat_y) are
    <= -1/5 at random constants and steps under the caps, with the steps at the caps included, also with
    relaxed heterogeneity (B_x, B_y > 0 and the caps divided by 1 + B)."""
    rng = random.Random(1 + S.LAWS2.index(law))
    worst = -math.inf
    for k in range(400):
        c, n, d, qq, fx, fy = _random_point(rng, law)
        B_x, B_y = rng.choice([0.0, 10 ** rng.uniform(-2, 2)]), rng.choice([0.0, 10 ** rng.uniform(-2, 2)])
        cx, cy = bounds.theorem2_caps(c, n, d, qq, law, B_x, B_y)
        ex, ey = (cx, cy) if k % 4 == 0 else (rng.uniform(1e-3, 1) * cx, rng.uniform(1e-3, 1) * cy)
        a = (c.L_x, c.L_c, c.L0, n, d, qq, ex, ey, 1e-3, 1.0, 10, 0.0, 0.0, B_x, B_y)
        worst = max(worst, *(f(*a) for f in _COEF[law]))
    assert worst <= -float(S.DESCENT2)


@pytest.mark.parametrize("law", S.LAWS2)
def test_theorem2_code_agrees_with_sympy(law):
    rng = random.Random(10 + S.LAWS2.index(law))
    for _ in range(200):
        c, n, d, qq, ex, ey = _random_point(rng, law)
        mu, T, Dl, vxs, vys = 10 ** rng.uniform(-6, 0), rng.randint(1, 10**6), 10 ** rng.uniform(-2, 3), \
            rng.choice([0.0, 10 ** rng.uniform(-3, 3)]), rng.choice([0.0, 10 ** rng.uniform(-3, 3)])
        a = (c.L_x, c.L_c, c.L0, n, d, qq, ex, ey, mu, Dl, T, vxs, vys)
        caps = bounds.theorem2_caps(c, n, d, qq, law)
        assert all(math.isclose(x, f(*a), rel_tol=1e-12) for x, f in zip(caps, _CAPS2[law]))
        B = 10 ** rng.uniform(-2, 2)
        assert math.isclose(bounds.theorem2_caps(c, n, d, qq, law, B, 2 * B)[0] * (1 + B), caps[0], rel_tol=1e-12)
        assert math.isclose(bounds.theorem2_caps(c, n, d, qq, law, B, 2 * B)[1] * (1 + 2 * B), caps[1], rel_tol=1e-12)
        E2 = bounds.theorem2_epoch_error(c, n, d, ex, ey, mu, vxs, vys, qq, law)
        assert math.isclose(E2, _E2[law](*a), rel_tol=1e-9)
        W2 = bounds.theorem2_rhs(c, n, d, ex, ey, mu, T, Dl, vxs, vys, qq, law)
        assert math.isclose(W2, _W2[law](*a), rel_tol=1e-9)


@pytest.mark.parametrize("law", S.LAWS2)
def test_corollary3_delivers_eps_and_its_het_term(law):
    rng = random.Random(20 + S.LAWS2.index(law))
    for _ in range(150):
        c, n, d, qq, _, _ = _random_point(rng, law)
        eps, Dl, rho = 10 ** rng.uniform(-3, 0), 10 ** rng.uniform(-2, 3), 10 ** rng.uniform(-2, 2)
        vxs, vys = rng.choice([0.0, 10 ** rng.uniform(-3, 3)]), rng.choice([0.0, 10 ** rng.uniform(-3, 3)])
        s = bounds.corollary3_schedule(c, n, d, eps, Dl, vxs, vys, rho, qq, law)
        m = min(1.0, rho)
        W2 = bounds.theorem2_rhs(c, n, d, s.eta_x, s.eta_y, s.mu, s.T, Dl, vxs, vys, qq, law)
        assert W2 / (m * s.eta_x) <= eps**2 * (1 + 1e-9)
        kappa, r_mu, beta = bounds.zo_moments(d, s.mu, c.L_x, law)
        # each share of the proof is at most eps^2/5: the mu rule (bias + mu-noise at the extra cap) ...
        assert 25 * beta**2 / (4 * m) + 5 * r_mu / (64 * kappa * m) <= eps**2 / 5 * (1 + 1e-9)
        # ... the heterogeneity noise share and the start share
        assert 10 * c.L_hat_x * kappa * vxs * s.eta_x / (m * qq) <= eps**2 / 5 * (1 + 1e-9)
        assert 5 * Dl / (m * n * s.T * s.eta_x) <= eps**2 / 5 * (1 + 1e-9)
        het = 1250 * Dl * c.L_hat_x * kappa * vxs / (m**2 * n * qq * eps**4)
        assert math.isclose(s.T_terms["T_het"], het, rel_tol=1e-9, abs_tol=0.0 if vxs else 1e-300)
        assert max(s.T_terms.values()) * (1 - 1e-9) <= s.T <= max(s.T_terms.values()) * (1 + 1e-9) + 1


def test_corollary3_and_4_exponents():
    """eps^4 T -> 2500 Delta Lhat_x d varsigma^2/(m^2 n q) with heterogeneity (sphere); eps^2 T stays
    bounded with varsigma_x = varsigma_y = 0 (Corollary 4: O(d_x/eps^2), linear in d_x/q)."""
    c = HGSConstants(L_x=1.0, L_c=0.5, L0=2.0, L1=0.0, G_x=None, G_y=None, F_lower=0.0)
    n, d, qq = 4, 50, 2
    lead = 2500 * 1.0 * c.L_hat_x * d * 0.3 / (n * qq)
    e4 = [bounds.corollary3_schedule(c, n, d, e, 1.0, 0.3, 0.2, q=qq).T * e**4 for e in (1e-3, 1e-4)]
    assert abs(e4[-1] / lead - 1) < 1e-3 and abs(e4[0] / lead - 1) < 2e-2
    e2 = [bounds.corollary3_schedule(c, n, dd, e, 1.0, 0.0, 0.0, q=qq).T * e**2
          for dd in (50, 500) for e in (1e-2, 1e-4, 1e-6)]
    assert max(e2[:3]) / min(e2[:3]) < 1.01 and max(e2[3:]) / min(e2[3:]) < 1.01
    assert 9 < e2[3] / e2[0] < 11       # the cap q/(64 kappa Lhat_x) binds: T ~ d_x/q


def test_bad_inputs_name_the_quantity():
    c = HGSConstants(L_x=1.0, L_c=0.0, L0=1.0, L1=1.0, G_x=None, G_y=None, F_lower=0.0)
    with pytest.raises(bounds.BoundError, match="L_y"):
        bounds.theorem2_caps(c, 2, 3)
    c = HGSConstants(L_x=1.0, L_c=0.0, L0=1.0, L1=0.0, G_x=None, G_y=None, F_lower=0.0)
    with pytest.raises(bounds.BoundError, match="varsigma_x_sq"):
        bounds.theorem2_rhs(c, 2, 3, 1e-3, 1e-3, 1e-3, 10, 1.0, -1.0, 0.0)
    with pytest.raises(bounds.BoundError, match="q"):
        bounds.theorem2_caps(c, 2, 3, q=0)
    with pytest.raises(bounds.BoundError, match="cap"):
        bounds.theorem2_rhs(c, 2, 3, 1.0, 1e-3, 1e-3, 10, 1.0, 0.0, 0.0)


@pytest.mark.parametrize("family,params", [("hetero", {"varsigma": 1.0, "eps": 0.3}),
                                           ("hetero", {"varsigma": 0.0, "eps": 0.3}),
                                           ("ramp", {"eps": 0.3, "dx": 3})])
def test_theorem2_ergodic_bound_holds_on_runs(family, params):
    """Theorem 2 (2) on whole runs at the caps: the seed mean of the weighted ergodic average <= W_2,
    and the certified heterogeneity is exact (checked on random points)."""
    P = make(family, **params)
    c = P.constants()
    x, y = P.initial_point((64,))
    gen = torch.Generator().manual_seed(0)
    x = x + 2 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    y = y + 2 * torch.randn(y.shape, generator=gen, dtype=y.dtype)
    gx, gy = P.grad(torch.arange(P.n)[:, None], x.unsqueeze(0), y.unsqueeze(0))   # (n, 64, d)
    Fx, Fy = P.full_grad(x, y)
    het_x = (gx - Fx).square().sum(-1).mean(0)
    het_y = (gy - Fy).square().sum(-1).mean(0)
    assert np.allclose(het_x.numpy(), c.varsigma_x_sq) and np.allclose(het_y.numpy(), c.varsigma_y_sq)
    ex, ey = bounds.theorem2_caps(c, P.n, P.dx)
    mu, T = 1e-2, 150
    W2 = bounds.theorem2_rhs(c, P.n, P.dx, ex, ey, mu, T, P.initial_gap(), c.varsigma_x_sq, c.varsigma_y_sq)
    traj = run(P, RunConfig(method="hybrid", eta_x=ex, eta_y=ey, mu=mu, epochs=T, replicates=16, seed=3))
    measured = float(ergodic_weighted_average(traj, ex, ey, T).mean())
    assert 0 < measured <= W2
