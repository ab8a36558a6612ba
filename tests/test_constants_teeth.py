"""Tests with teeth: half of every certified constant of every family is violated at a witnessed or
generated point, and every constant claimed tight is attained within 0.9 (``hgs_check.constant_ratios``).

A ratio r = observed/certified for one constant in isolation: r > 1/2 means the constant halved is wrong at
that point, so a halved constant anywhere in the code fails this file (``python -m proofs.mutate`` checks it).
Constants known to be loose by more than 2 are listed in LOOSE with the measured ratio and the reason.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridtheory.hgs_check import constant_ratios
from hybridtheory.objectives import make
from hybridtheory.objectives.catalogue import CATALOGUE, make_function
from hybridtheory.objectives.hyb import HYB
from hybridtheory.objectives.lora import LoRARegression
from hybridtheory.objectives.quadratic import CoupledQuadratic

DTYPE = torch.float64


def _ball(P, k: int, gen: torch.Generator):
    """k random points (j, x, y): the family's sampler if it has one, else N(0, 9 I)."""
    if hasattr(P, "sample_points"):
        xs, ys = P.sample_points(k, gen)
    else:
        xs = 3 * torch.randn(k, P.dx, generator=gen, dtype=DTYPE)
        ys = 3 * torch.randn(k, P.dy, generator=gen, dtype=DTYPE)
        if P.name == "pl":       # G_x holds on the ball ||x|| <= radius only
            nrm = xs.norm(dim=-1, keepdim=True)
            xs = xs * torch.clamp(P.radius / nrm, max=1.0)
    return [(m % P.n, xs[m], ys[m]) for m in range(k)]


# (label, problem, which certificate, constants claimed tight)
CASES = [
    ("ramp eps=1/2", lambda: make("ramp", eps=0.5, dx=3), "constants",
     {"L_x", "L0", "G_x", "G_y", "varsigma_x_sq", "varsigma_y_sq"}),
    ("hetero eps=1/2", lambda: make("hetero", eps=0.5, varsigma=0.7, dx=3), "constants",
     {"L_x", "L0", "G_x", "G_y", "varsigma_x_sq"}),
    ("pl", lambda: make("pl", dx=3, radius=1.5), "constants", {"L_x", "L0", "G_x", "G_y", "varsigma_x_sq"}),
    ("quadratic", lambda: CoupledQuadratic(seed=0), "constants", {"L_x", "L_c", "L0"}),
    ("lora seed 0", lambda: LoRARegression(seed=0), "constants", {"L_x", "L_c", "L0", "G_x", "G_y"}),
    ("lora seed 1", lambda: LoRARegression(seed=1, n=5, r=1), "constants", {"L_x", "L_c", "L0", "G_x", "G_y"}),
    ("hyb seed 0", lambda: HYB(seed=0), "constants", {"L_c", "L0"}),
    ("hyb seed 1", lambda: HYB(seed=1, kappa=3.0, c_scale=3.0), "constants", {"L_c", "L0"}),
    ("hyb seed 0 (L0,L1)", lambda: HYB(seed=0), "constants_l0l1", {"L_c"}),
]
# measured on these instances; the (L0, L1) certificate bounds l'' by |l'| (tight only as |l'| -> 0) and adds the
# coupling's two worst cases, so each of L0, L1 alone is loose by more than 2 there (its L1 = 0 twin is tight)
LOOSE = {("hyb seed 0 (L0,L1)", "L0"): 0.43, ("hyb seed 0 (L0,L1)", "L1"): 0.0}


@pytest.mark.parametrize("label,build,cert,tight", CASES, ids=[c[0] for c in CASES])
def test_half_of_every_constant_is_violated(label, build, cert, tight):
    P = build()
    c = getattr(P, cert)()
    ratios = constant_ratios(P, P.witness_points() + _ball(P, 40, torch.Generator().manual_seed(0)), c)
    assert ratios, label
    for k, r in ratios.items():
        assert r <= 1 + 1e-9, (label, k, r)                 # soundness at these points
        if (label, k) in LOOSE:
            assert r <= 0.5, (label, k, r)                  # still loose: update LOOSE if it got tighter
            continue
        assert r > 0.5, (label, k, r)
        if k in tight:
            assert r >= 0.9, (label, k, r)
    assert tight <= set(ratios), (label, tight - set(ratios))


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_catalogue_certificates_have_teeth(name):
    """Every (L0, L1) of the catalogue: (||H|| - L1||g||)/L0 and (||H|| - L0)/(L1||g||) exceed 1/2 somewhere
    (sampled points and the documented maximiser); tight certificates reach 0.9 for L0."""
    f = make_function(name)
    y = f.sample(3000, np.random.default_rng(0))
    for ci, cert in enumerate(f.certificates):
        pts = y
        m = f.maximiser(ci)
        if m is not None:
            pts = torch.cat([y, m.reshape(1, -1).to(y.dtype)])
        g, h = f.grad_norm(pts).double(), f.hessian_norm(pts).double()
        assert float((h / cert.bound(g)).max()) <= 1 + 1e-9
        if cert.L0 > 0:
            r0 = float(((h - cert.L1 * g) / cert.L0).max())
            assert r0 > (0.9 if cert.tight else 0.5), (name, ci, "L0", r0)
        if cert.L1 > 0:
            r1 = float(((h - cert.L0) / (cert.L1 * g.clamp_min(1e-300))).max())
            assert r1 > 0.5, (name, ci, "L1", r1)
