"""Property tests of the synthetic families quadratic (C.2), HYB (C.3) and LoRA regression (C.4).

Soundness: every certified constant holds on generated instances and point pairs (worst ratio
<= 1 + 1e-9). Tightness: the documented maximisers reach the constants THEORY calls tight.
Consistency: closed-form gradients match autograd; full sums are means of components; batching.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridtheory.hgs_check import check_hessian, check_pairs, random_pairs
from hybridtheory.objectives import FAMILIES, make
from hybridtheory.objectives.hyb import HYB
from hybridtheory.objectives.lora import LoRARegression
from hybridtheory.objectives.quadratic import CoupledQuadratic

RTOL = 1e-9
seeds = st.integers(0, 2**31 - 1)


def quadratic(seed, n=3, dx=4, dy=3):
    return CoupledQuadratic(n=n, dx=dx, dy=dy, seed=seed)


def hyb(seed, n=3, dx=5, dy=3, kappa=1.0, c_scale=1.0):
    return HYB(n=n, dx=dx, dy=dy, kappa=kappa, c_scale=c_scale, seed=seed)


def lora(seed, n=4, p=3, q=4, r=2):
    return LoRARegression(n=n, p=p, q=q, r=r, seed=seed)


BUILDERS = {"quadratic": quadratic, "hyb": hyb, "lora": lora}


def test_registry_builds_every_family():
    for name in ("quadratic", "hyb", "lora", "catalogue", "ramp", "pl"):
        assert name in FAMILIES
    for name in ("quadratic", "hyb", "lora", "catalogue"):
        P = make(name)
        x, y = P.initial_point((2,))
        assert P.full_value(x, y).shape == (2,)
        assert math.isfinite(P.initial_gap()) and P.initial_gap() >= 0


# -- consistency -------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", list(BUILDERS))
@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_grad_matches_autograd(family, seed):
    P = BUILDERS[family](seed)
    g = torch.Generator().manual_seed(seed)
    x, y = random_pairs(P, 8, g)[1:3]
    j = torch.arange(8) % P.n
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ax, ay = torch.autograd.grad(P.value(j, xr, yr).sum(), (xr, yr))
    gx, gy = P.grad(j, x, y)
    scale = 1 + max(float(ax.abs().max()), float(ay.abs().max()))
    assert torch.allclose(gx, ax, atol=1e-12 * scale, rtol=0)
    assert torch.allclose(gy, ay, atol=1e-12 * scale, rtol=0)


@pytest.mark.parametrize("family", list(BUILDERS))
@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_full_sum_is_mean_of_components_and_batching_broadcasts(family, seed):
    P = BUILDERS[family](seed)
    g = torch.Generator().manual_seed(seed)
    x, y = random_pairs(P, 5, g)[1:3]
    Fx, Fy = P.full_grad(x, y)
    comps = [P.grad(torch.tensor(i), x, y) for i in range(P.n)]
    assert torch.allclose(Fx, torch.stack([c[0] for c in comps]).mean(0), atol=1e-13, rtol=1e-12)
    assert torch.allclose(Fy, torch.stack([c[1] for c in comps]).mean(0), atol=1e-13, rtol=1e-12)
    vals = torch.stack([P.value(torch.tensor(i), x, y) for i in range(P.n)], -1)
    assert torch.allclose(P.full_value(x, y), vals.mean(-1), atol=1e-13, rtol=1e-12)
    # a (2, 5) grid of replicates with one j per row broadcasts like the loop
    j = torch.tensor([[0], [P.n - 1]])
    xb, yb = x.expand(2, 5, P.dx), y.expand(2, 5, P.dy)
    vb = P.value(j, xb, yb)
    assert vb.shape == (2, 5)
    assert torch.allclose(vb[1], P.value(torch.tensor(P.n - 1), x, y), atol=0, rtol=1e-14)


# -- soundness of the certified constants -------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 4), dx=st.integers(1, 6), dy=st.integers(1, 5))
def test_quadratic_constants_sound(seed, n, dx, dy):
    P = quadratic(seed, n, dx, dy)
    res = check_pairs(P, *random_pairs(P, 300, torch.Generator().manual_seed(seed)))
    assert res.sound(RTOL), res
    assert res.n_outside_radius == 0                                           # L1 = 0: no radius
    x0, y0 = P.initial_point()
    assert float(torch.cat([x0, y0]).norm()) <= P.radius                       # z0 is in the certified ball


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 4), dx=st.integers(1, 6), dy=st.integers(1, 5),
       kappa=st.floats(0.0, 4.0), c_scale=st.floats(0.1, 4.0))
def test_hyb_both_certificates_sound(seed, n, dx, dy, kappa, c_scale):
    P = hyb(seed, n, dx, dy, kappa, c_scale)
    gen = torch.Generator().manual_seed(seed)
    for c in (P.constants_l0l1(), P.constants_alt()):
        res = check_pairs(P, *random_pairs(P, 300, gen), constants=c)
        assert res.sound(RTOL), (c, res)


@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_hyb_hessian_form_sound(seed):
    P = hyb(seed, kappa=2.0)
    j, x, y, _, _ = random_pairs(P, 8, torch.Generator().manual_seed(seed))
    for c in (P.constants_l0l1(), P.constants_alt()):
        worst = check_hessian(P, j.tolist(), x, y, constants=c)
        assert max(worst.values()) <= 1 + RTOL, worst


@settings(max_examples=40, deadline=None)
@given(seed=seeds, r=st.integers(1, 3), rho=st.floats(1.0, 4.0))
def test_lora_region_constants_sound(seed, r, rho):
    P = LoRARegression(n=4, p=3, q=4, r=r, rho=rho, init_scale=0.1, seed=seed)
    j, x, y, x2, y2 = random_pairs(P, 300, torch.Generator().manual_seed(seed))
    assert bool(P.in_region(x, y).all()) and bool(P.in_region(x2, y2).all())
    res = check_pairs(P, j, x, y, x2, y2)
    assert res.sound(RTOL), res
    worst = check_hessian(P, j[:4].tolist(), x[:4], y[:4])
    assert max(worst.values()) <= 1 + RTOL, worst


@pytest.mark.parametrize("family", list(BUILDERS))
@settings(max_examples=20, deadline=None)
@given(seed=seeds)
def test_lower_bound_on_F_star(family, seed):
    P = BUILDERS[family](seed)
    x, y = random_pairs(P, 200, torch.Generator().manual_seed(seed))[1:3]
    assert float(P.full_value(x, y).min()) >= P.constants().F_lower - 1e-12


def test_quadratic_and_lora_lower_bounds_are_exact():
    P = quadratic(3)
    zs = torch.as_tensor(P.z_star)
    gx, gy = P.full_grad(zs[: P.dx], zs[P.dx:])
    assert float(torch.cat([gx, gy]).norm()) < 1e-10
    assert abs(float(P.full_value(zs[: P.dx], zs[P.dx:])) - P.constants().F_lower) < 1e-12
    L = lora(3)
    U, V = L.inputs.numpy(), L.targets.numpy()
    M = np.linalg.lstsq(U, V, rcond=None)[0]
    x = torch.as_tensor(M.T.reshape(-1))                                       # W = least-squares fit, adapter 0
    assert abs(float(L.full_value(x, torch.zeros(L.dy, dtype=x.dtype))) - L.constants().F_lower) < 1e-12


# -- tightness -------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=seeds, kappa=st.floats(0.2, 3.0))
def test_hyb_Lc_and_alt_L0_reached_at_witness(seed, kappa):
    P = hyb(seed, kappa=kappa)
    i, x, y = P.witness("L_c")
    assert check_hessian(P, [i], x[None], y[None])["L_c"] >= 0.9
    # and by a first-order pair: a short y-only move through the maximiser
    q = P.q[i] / P.q[i].norm()
    res = check_pairs(P, torch.tensor([i]), x[None], (y - 1e-4 * q)[None], x[None], (y + 1e-4 * q)[None])
    assert res.h1 >= 0.9
    i, x, y = P.witness("L0_alt")
    assert check_hessian(P, [i], x[None], y[None], constants=P.constants_alt())["L_y"] >= 0.9


@settings(max_examples=30, deadline=None)
@given(seed=seeds, kappa=st.floats(0.0, 4.0), c_scale=st.floats(0.1, 4.0))
def test_hyb_constants_choice_and_sharpened_alt(seed, kappa, c_scale):
    P = hyb(seed, kappa=kappa, c_scale=c_scale)
    a, b = P.constants_l0l1(), P.constants_alt()
    assert P.constants().L_y == min(a.L_y, b.L_y)
    # sharpened alternative never exceeds THEORY's |c|^2/4 + |k||q|^2
    theory = (P.c.norm(dim=-1) ** 2 / 4 + P.kappa.abs() * P.q.norm(dim=-1) ** 2).max()
    assert b.L0 <= float(theory) * (1 + 1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, h=st.floats(1e-3, 10.0))
def test_lora_Lx_is_exact(seed, h):
    P = lora(seed)
    i, z, z2 = P.witness_pair_x(h)
    res = check_pairs(P, torch.tensor([i]), z[0][None], z[1][None], z2[0][None], z2[1][None])
    assert 0.999999 <= res.h1 <= 1 + RTOL


def test_quadratic_block_constants_are_attained():
    P = quadratic(0)
    for name, key in (("L_x", "L_x"), ("L_c", "L_c"), ("L0", "L_y")):
        i, x, y = P.witness(name)
        assert check_hessian(P, [i], x[None], y[None])[key] == pytest.approx(1.0, abs=1e-12)


# -- what is *not* certified -------------------------------------------------------------------------

def test_lora_is_not_L0L1_globally():
    """A zero-gradient valley (A B^T u = v, factors scaled by t, 1/t) with ||H_yy|| ~ t^2 (THEORY C.4)."""
    P = LoRARegression(n=1, p=3, q=4, r=1, seed=0)
    u, v = P.inputs[0], P.targets[0]
    norms = []
    for t in (10.0, 100.0, 1000.0):
        A, B = t * v[:, None], (u / (t * u.dot(u)))[:, None]
        y = torch.cat([A.reshape(-1), B.reshape(-1)])
        x = torch.zeros(P.dx, dtype=y.dtype)
        gx, gy = P.grad(torch.tensor(0), x, y)
        assert float(gy.norm()) < 1e-9                                          # grad_y = 0 ...
        _, _, Hyy = P.hessian_blocks(0, x, y)
        norms.append(float(torch.linalg.matrix_norm(Hyy, 2)))
    assert norms[1] > 50 * norms[0] and norms[2] > 50 * norms[1]              # ... while ||H_yy|| ~ t^2


@settings(max_examples=20, deadline=None)
@given(seed=seeds, Y=st.floats(0.1, 3.0))
def test_contributor_template_is_a_valid_family(seed, Y):
    from hybridtheory.objectives.template import MyFamily
    P = MyFamily(Y=Y, seed=seed)
    j, x, y, x2, y2 = random_pairs(P, 200, torch.Generator().manual_seed(seed))
    assert check_pairs(P, j, x, y, x2, y2).sound(RTOL)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ax, ay = torch.autograd.grad(P.value(j, xr, yr).sum(), (xr, yr))
    gx, gy = P.grad(j, x, y)
    assert torch.allclose(gx, ax, atol=1e-12) and torch.allclose(gy, ay, atol=1e-12)
    assert float(P.full_value(x, y).min()) >= P.constants().F_lower


def test_hyb_from_arrays_alt_L0_equals_theory_form_when_q_parallel_c():
    """With q || c the sharpened L1 = 0 constant equals THEORY C.3's |c|^2/4 + |k||q|^2."""
    c = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    q = 0.7 * c
    P = HYB.from_arrays(a=[[[1.0, 0.0], [0.0, 1.0]]], b=[[0.0, 0.0]], c=c, e=[0.3], kappa=[-1.5],
                        p=[[0.4, 0.2]], q=q)
    expected = float(c.square().sum() / 4 + 1.5 * q.square().sum())
    assert P.constants_alt().L0 == pytest.approx(expected, rel=1e-12)
    res = check_pairs(P, *random_pairs(P, 300, torch.Generator().manual_seed(0)))
    assert res.sound(RTOL)
