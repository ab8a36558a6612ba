"""The batched fast path (runner + hybrid_step) matches the readable reference loop step by step."""
import itertools

import pytest
import torch

from hybridtheory.algorithm.reference import reference_run
from hybridtheory.assumptions import HGSConstants
from hybridtheory.objectives import make
from hybridtheory.objectives.base import DTYPE, FiniteSumProblem
from hybridtheory.runner import METHODS, RunConfig, run


class Coupled(FiniteSumProblem):
    """f_i = 1/2||x - a_i||^2 + sin(p.x) cos(q.y) + 1/2||y - b_i||^2: the blocks interact, so the
    FO-point variants (Jacobi, Gauss-Seidel, perturbed) give different iterates."""

    name = "coupled-test"

    def __init__(self, n=4, dx=3, dy=2):
        g = torch.Generator().manual_seed(0)
        self.n, self.dx, self.dy = n, dx, dy
        self.a = torch.randn(n, dx, generator=g, dtype=DTYPE)
        self.b = torch.randn(n, dy, generator=g, dtype=DTYPE)
        self.p = torch.randn(dx, generator=g, dtype=DTYPE)
        self.q = torch.randn(dy, generator=g, dtype=DTYPE)

    def value(self, j, x, y):
        return (0.5 * (x - self.a[j]).square().sum(-1) + torch.sin(x @ self.p) * torch.cos(y @ self.q)
                + 0.5 * (y - self.b[j]).square().sum(-1))

    def grad(self, j, x, y):
        sx, cy = torch.sin(x @ self.p), torch.cos(y @ self.q)
        cx, sy = torch.cos(x @ self.p), torch.sin(y @ self.q)
        gx = x - self.a[j] + (cx * cy).unsqueeze(-1) * self.p
        gy = y - self.b[j] - (sx * sy).unsqueeze(-1) * self.q
        return gx, gy

    def constants(self):
        return HGSConstants(1.0, 1.0, 1.0, 0.0, None, None, -1.0)

    def initial_point(self, batch_shape=()):
        return (torch.ones(tuple(batch_shape) + (self.dx,), dtype=DTYPE),
                torch.ones(tuple(batch_shape) + (self.dy,), dtype=DTYPE))


CASES = [dict(method=m) for m in METHODS] + [
    dict(method="hybrid", law="gaussian"),
    dict(method="hybrid", difference="forward"),
    dict(method="hybrid", queries=3),
    dict(method="hybrid", fo_point="gauss_seidel"),
    dict(method="hybrid", fo_point="perturbed"),
    dict(method="zo-rr", law="gaussian", difference="forward", queries=2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_fast_matches_reference(case):
    problem = Coupled()
    S = 3
    cfg = RunConfig(eta_x=[0.05, 0.02, 0.01], eta_y=0.3, mu=[0.1, 0.05, 0.2], epochs=6, replicates=S,
                    seed=11, **case)
    traj = run(problem, cfg)
    state = traj.state
    for s in range(S):
        hist = reference_run(problem, cfg, s)
        x_ref, y_ref = hist[-1]
        torch.testing.assert_close(state.x[s], x_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(state.y[s], y_ref, rtol=1e-10, atol=1e-12)
        # every epoch, not only the last: compare the recorded gradient norms
        for t, (xr, yr) in enumerate(hist):
            gx, gy = problem.grad_norm_sq(xr, yr)
            assert abs(float(gx + gy) - traj.grad_sq[t, s]) <= 1e-9 * (1 + traj.grad_sq[t, s])


def test_fo_point_variants_differ():
    """The variants are distinguishable on a coupled problem (so the test above can fail)."""
    problem = Coupled()
    ends = [run(problem, RunConfig(eta_x=0.05, eta_y=0.3, mu=0.1, epochs=3, replicates=1, seed=11,
                                   fo_point=fp)).state.y for fp in ("jacobi", "gauss_seidel", "perturbed")]
    for a, b in itertools.combinations(ends, 2):
        assert not torch.allclose(a, b, rtol=1e-8, atol=0)


def test_reference_actually_moves():
    """Guard against a vacuous match: the iterates change and differ across replicates."""
    problem = make("ramp", eps=0.3, dx=3, n=2)
    cfg = RunConfig(eta_x=0.05, eta_y=0.1, mu=0.05, epochs=3, replicates=2, seed=3)
    h0, h1 = reference_run(problem, cfg, 0), reference_run(problem, cfg, 1)
    assert not torch.equal(h0[0][0], h0[-1][0])
    assert not torch.equal(h0[-1][0], h1[-1][0])
