"""Tests of the HGS checker (hybridtheory.hgs_check): it finds violations, applies phi and the radius,
reports the worst pair, demonstrates THEORY B.2's linear-coupling pitfall, and the local-constant
estimator recovers known block norms (from below) on flat tensors and on lists of tensors.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridtheory.assumptions import HGSConstants
from hybridtheory.hgs_check import (autograd_grad_fn, check_hessian, check_pairs, estimate_local_constants, main,
                                    problem_grad_fn, random_pairs)
from hybridtheory.objectives.base import DTYPE, FiniteSumProblem
from hybridtheory.objectives.catalogue import CatalogueProblem
from hybridtheory.objectives.hyb import HYB
from hybridtheory.objectives.quadratic import CoupledQuadratic


class LinearCouplingQuartic(FiniteSumProblem):
    """THEORY B.2's pitfall: f = 1/2|x|^2 + x^T C y + 1/4|y|^4 (n = 1, dx = dy = d).

    Claimed (naively) from its parts: L_x = 1, L_c = ||C||, y block 1/4|y|^4 in (4/L1^2, L1)
    (max of 3r^2 - L1 r^3 is 4/L1^2 at r = 2/L1). The coupling makes grad_y = C^T x + |y|^2 y vanish at
    x = -C^{-T}|y|^2 y while ||H_yy|| = 3|y|^2, so (H2) fails.
    """

    n = 1

    def __init__(self, C: torch.Tensor, L1: float = 1.0):
        self.C, self.L1 = C, L1
        self.dx = self.dy = C.shape[0]

    def value(self, j, x, y):
        return 0.5 * x.square().sum(-1) + (x * (y @ self.C.T)).sum(-1) + 0.25 * y.square().sum(-1).square()

    def grad(self, j, x, y):
        return x + y @ self.C.T, x @ self.C + y.square().sum(-1, keepdim=True) * y

    def constants(self):
        return HGSConstants(L_x=1.0, L_c=float(torch.linalg.matrix_norm(self.C, 2)), L0=4 / self.L1**2, L1=self.L1,
                            G_x=None, G_y=None, F_lower=-math.inf, form="hessian", source="THEORY B.2 pitfall")

    def initial_point(self, batch_shape=()):
        return torch.zeros(*batch_shape, self.dx, dtype=DTYPE), torch.zeros(*batch_shape, self.dy, dtype=DTYPE)


def test_linear_coupling_pitfall_breaks_H2():
    C = torch.tensor([[1.0, 0.3], [0.0, 2.0]], dtype=DTYPE)
    P = LinearCouplingQuartic(C)
    ratios = []
    for r in (2.0, 10.0, 100.0):
        y = torch.tensor([r, 0.0], dtype=DTYPE)
        x = -torch.linalg.solve(C.T, y.square().sum() * y)                  # grad_y f = 0 here
        assert float(P.grad(0, x, y)[1].norm()) < 1e-9 * r**3
        h = 1e-3
        res = check_pairs(P, torch.tensor([0]), x[None], y[None], x[None], (y + torch.tensor([h, 0.0]))[None])
        ratios.append(res.h2)
        assert check_hessian(P, [0], x[None], y[None])["L_y"] > 1
    # (H2) fails, and the ratio grows like 3 r^2 / L0 = 3, 75, 7500 (THEORY D.9: ||H_yy|| = 3 r^2)
    assert ratios[0] > 1 and ratios[1] > 50 and ratios[2] > 5000
    # without the coupling the same quartic block passes on the same kind of pairs
    P0 = LinearCouplingQuartic(torch.zeros(2, 2, dtype=DTYPE))
    res = check_pairs(P0, *random_pairs(P0, 2000, torch.Generator().manual_seed(0), scale=3.0))
    assert res.sound(1e-9), res


def test_checker_finds_a_shrunk_constant_and_reports_the_pair():
    P = HYB(seed=0)
    c = P.constants()
    i, x, y = P.witness("L_c")
    q = P.q[i] / P.q[i].norm()
    pair = (torch.tensor([i]), x[None], (y - 1e-4 * q)[None], x[None], (y + 1e-4 * q)[None])
    assert check_pairs(P, *pair).sound(1e-9)
    bad = check_pairs(P, *pair, constants=dataclasses.replace(c, L_c=0.8 * c.L_c))
    assert bad.h1 > 1.2 and not bad.sound()
    a = bad.argmax_h1
    again = check_pairs(P, torch.tensor([a["j"]]), a["x"][None], a["y"][None], a["x2"][None], a["y2"][None],
                        constants=dataclasses.replace(c, L_c=0.8 * c.L_c))
    assert again.h1 == pytest.approx(bad.h1, rel=1e-12)
    # gradient bounds are checked too
    assert check_pairs(P, *pair, constants=dataclasses.replace(c, G_y=1e-3)).gy > 1


@settings(max_examples=50, deadline=None)
@given(y=st.floats(-5.0, 3.0), t=st.floats(1e-3, 1.0))
def test_phi_factor_is_needed_and_exact_for_exp(y, t):
    """e^y with (0, 1): Prop. 1 (i) holds with equality, so the first-order form without phi fails by phi(t)."""
    P = CatalogueProblem("exp")
    z = torch.zeros(1, 0, dtype=DTYPE)
    pair = (torch.tensor([0]), z, torch.tensor([[y]], dtype=DTYPE), z, torch.tensor([[y + t]], dtype=DTYPE))
    with_phi = check_pairs(P, *pair)
    assert with_phi.h2 <= 1 + 1e-9
    assert with_phi.h2 >= 1 - 1e-6                                            # equality (up to cancellation)
    no_phi = check_pairs(P, *pair, constants=dataclasses.replace(P.constants(), form="first_order"))
    assert no_phi.h2 == pytest.approx(math.expm1(t) / t, rel=1e-6)


def test_radius_is_respected():
    P = CatalogueProblem("y4", L1=1.0)
    z = torch.zeros(3, 0, dtype=DTYPE)
    y = torch.tensor([[0.0], [1.0], [2.0]], dtype=DTYPE)
    res = check_pairs(P, torch.tensor([0]), z, y, z, y + torch.tensor([[0.5], [3.0], [1.0]], dtype=DTYPE))
    assert res.n_outside_radius == 1 and res.n_pairs == 3
    assert res.sound(1e-9)


def test_random_pairs_stay_within_radius():
    P = CatalogueProblem("y4", L1=2.0)
    _, x, y, x2, y2 = random_pairs(P, 500, torch.Generator().manual_seed(1))
    assert float((2.0 * (y2 - y).norm(dim=-1)).max()) <= 1.0 + 1e-12


# -- local constants ------------------------------------------------------------------------------

def _block_norms(P: CoupledQuadratic, j: int):
    H = P.H[j]
    n2 = lambda m: float(torch.linalg.matrix_norm(m, 2))  # noqa: E731
    return n2(H[: P.dx, : P.dx]), n2(H[: P.dx, P.dx:]), n2(H[P.dx:, P.dx:])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_local_constants_recover_quadratic_blocks(seed):
    P = CoupledQuadratic(n=2, dx=5, dy=4, seed=seed)
    Lx, Lc, Ly = _block_norms(P, 1)
    x0, y0 = P.initial_point()
    est = estimate_local_constants(problem_grad_fn(P, 1), x0, y0, radius=1.0, n_points=4, power_steps=8, seed=seed)
    # ratios of gradient differences can never exceed the true block norms (up to rounding) ...
    assert est.L_x <= Lx * (1 + 1e-9) and est.L_y <= Ly * (1 + 1e-9) and est.L_c <= Lc * (1 + 1e-9)
    # ... and the finite-difference power iteration gets close to them
    assert est.L_x >= 0.9 * Lx and est.L_y >= 0.9 * Ly and est.L_c >= 0.9 * Lc
    assert est.n_grad_calls == 4 * (1 + 4 * 8)                                # base + 8 (x) + 8 (y) + 2*8 (cross)


def test_local_constants_on_lists_match_flat_and_stay_below_certificates():
    P = HYB(seed=2)
    c = P.constants()
    x0, y0 = P.initial_point()
    flat = estimate_local_constants(problem_grad_fn(P, 0), x0, y0, radius=2.0, n_points=6, seed=5)
    assert flat.L_x <= c.L_x and flat.L_c <= c.L_c and flat.L_y <= c.L_y
    assert flat.G_x <= c.G_x and flat.G_y <= c.G_y
    assert flat.L_x > 0 and flat.L_y > 0

    # the same function seen through two-tensor blocks and an autograd loss (the LLM-side usage)
    def loss(xs, ys):
        return P.value(torch.tensor(0), torch.cat([xs[0], xs[1]]), torch.cat([ys[0].reshape(-1), ys[1]]))

    xs = [x0[:2].clone(), x0[2:].clone()]
    ys = [y0[:2].reshape(1, 2).clone(), y0[2:].clone()]
    listed = estimate_local_constants(autograd_grad_fn(loss), xs, ys, radius=2.0, n_points=6, seed=5)
    assert listed.L_x <= c.L_x and listed.L_c <= c.L_c and listed.L_y <= c.L_y
    assert listed.L_x > 0.3 * flat.L_x and listed.L_y > 0.3 * flat.L_y
    assert torch.equal(xs[0], x0[:2])                                          # inputs untouched


def test_local_constants_accept_a_problem_for_the_full_sum():
    P = CoupledQuadratic(n=3, dx=4, dy=3, seed=7)
    Hbar = P.H.mean(0)
    n2 = lambda m: float(torch.linalg.matrix_norm(m, 2))  # noqa: E731
    x0, y0 = P.initial_point()
    est = estimate_local_constants(P, x0, y0, radius=0.5, n_points=3, power_steps=10, seed=1)
    assert 0.9 * n2(Hbar[:4, :4]) <= est.L_x <= n2(Hbar[:4, :4]) * (1 + 1e-9)
    assert 0.9 * n2(Hbar[4:, 4:]) <= est.L_y <= n2(Hbar[4:, 4:]) * (1 + 1e-9)
    comp = estimate_local_constants(P, x0, y0, radius=0.5, n_points=3, power_steps=10, seed=1, component=2)
    assert comp.L_x <= n2(P.H[2][:4, :4]) * (1 + 1e-9) and comp.L_x >= 0.9 * n2(P.H[2][:4, :4])


def test_report_entry_point_runs(capsys):
    assert main(["--report", "--pairs", "200", "--hess-points", "3"]) == 0
    out = capsys.readouterr().out
    assert "0 soundness violations" in out and "tightness" in out
