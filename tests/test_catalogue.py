"""Property tests of the (L0, L1) catalogue (proofs/01-hgs.md §1.4).

Soundness of every certificate at generated points, closed forms against autograd, tightness at the
documented maximisers (only where THEORY calls a constant tight), the stable softmax-CE path,
self-bounding (A.1), non-preservation under sums, and the scatter-data function.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridtheory.hgs_check import check_pairs, random_pairs
from hybridtheory.objectives.base import DTYPE
from hybridtheory.objectives.catalogue import (CATALOGUE, CatalogueProblem, Exp, LogSumExp, Power, SoftmaxCE,
                                               local_smoothness_samples, make_function)

RTOL = 1e-9
seeds = st.integers(0, 2**31 - 1)

# hypothesis strategies for each function's constructor parameters
PARAMS = {
    "power": st.fixed_dictionaries({"k": st.floats(2.05, 8.0), "L1": st.floats(0.05, 10.0)}),
    "y4": st.fixed_dictionaries({"L1": st.floats(0.05, 10.0)}),
    "norm4": st.fixed_dictionaries({"d": st.integers(1, 5), "L1": st.floats(0.05, 10.0)}),
    "exp": st.just({}),
    "cosh": st.just({}),
    "logistic": st.just({}),
    "logreg": st.fixed_dictionaries({"d": st.integers(1, 5), "b": st.sampled_from([-1.0, 1.0]), "seed": seeds}),
    "lse": st.fixed_dictionaries({"k": st.integers(2, 6)}),
    "softmax_ce": st.integers(2, 6).flatmap(lambda k: st.fixed_dictionaries({"k": st.just(k),
                                                                               "c": st.integers(0, k - 1)})),
}


def test_every_catalogue_entry_has_a_strategy():
    assert set(PARAMS) == set(CATALOGUE)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
@settings(max_examples=30, deadline=None)
@given(data=st.data(), seed=seeds)
def test_certificates_hold_at_sampled_points(name, data, seed):
    f = make_function(name, **data.draw(PARAMS[name]))
    y = f.sample(400, np.random.default_rng(seed))
    gn, hn = f.grad_norm(y), f.hessian_norm(y)
    for cert in f.certificates:
        assert float((hn - cert.bound(gn)).max()) <= RTOL * float(cert.bound(gn).abs().max() + 1), cert
    if f.grad_bound is not None:
        assert float(gn.max()) <= f.grad_bound * (1 + RTOL)
    if f.f_star is not None:
        assert float(f.value(y).min()) >= f.f_star - 1e-12


@pytest.mark.parametrize("name", sorted(CATALOGUE))
@settings(max_examples=10, deadline=None)
@given(data=st.data(), seed=seeds)
def test_closed_forms_match_autograd(name, data, seed):
    f = make_function(name, **data.draw(PARAMS[name]))
    y = f.sample(6, np.random.default_rng(seed))
    yr = y.clone().requires_grad_()
    (g,) = torch.autograd.grad(f.value(yr).sum(), yr)
    scale = 1 + float(g.abs().max())
    assert torch.allclose(f.grad(y), g, atol=1e-12 * scale, rtol=0)
    for k in range(y.shape[0]):
        H = torch.autograd.functional.hessian(lambda v: f.value(v), y[k])
        hn = float(torch.linalg.matrix_norm(H.reshape(f.d, f.d), 2))
        assert float(f.hessian_norm(y[k])) == pytest.approx(hn, rel=1e-9, abs=1e-12 * (1 + hn))


@pytest.mark.parametrize("name", sorted(CATALOGUE))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_tight_certificates_are_reached_at_their_maximisers(name, data):
    f = make_function(name, **data.draw(PARAMS[name]))
    for i, cert in enumerate(f.certificates):
        m = f.maximiser(i)
        if not cert.tight:
            assert m is None
            continue
        ratio = float(f.hessian_norm(m) / cert.bound(f.grad_norm(m)))
        assert 0.9 <= ratio <= 1 + RTOL, (cert, ratio)


@settings(max_examples=50, deadline=None)
@given(k=st.floats(2.5, 8.0), L1=st.floats(0.05, 10.0))
def test_power_L0_cannot_be_lowered(k, L1):
    """|y|^k: 0.99 L0 fails at y* = (k-2)/L1 (THEORY C.1 'Tight: 0.99 L0 fails')."""
    f = Power(k=k, L1=L1)
    m = f.maximiser()
    L0 = f.certificates[0].L0
    assert float(f.hessian_norm(m)) > 0.99 * L0 + L1 * float(f.grad_norm(m))


def test_softmax_ce_stable_path_and_observed_sup_is_not_two():
    f = SoftmaxCE(k=3, c=0)
    # p -> e_c with the residual mass on one class: ratio -> sqrt(2)/2 of the certified (0, 2)
    ratios = []
    for m in (5.0, 15.0, 30.0, 40.0):
        v = torch.tensor([m, 0.0, -80.0], dtype=DTYPE)
        ratios.append(float(f.hessian_norm(v) / f.certificates[0].bound(f.grad_norm(v))))
    assert max(ratios) <= 1 / math.sqrt(2) + 1e-9
    assert ratios[-1] == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    # the naive 1 - p_c path loses every digit at m = 40 (p_c rounds to 1): the gradient norm collapses
    # by 1/sqrt(2) and the ratio to the (0, 2) bound is inflated by sqrt(2) (a spurious near-violation)
    v = torch.tensor([40.0, 0.0, -80.0], dtype=DTYPE)
    p = torch.softmax(v, -1)
    naive = p.clone()
    naive[0] = p[0] - 1.0
    assert float(naive.norm()) == pytest.approx(float(f.grad_norm(v)) / math.sqrt(2), rel=1e-6)
    assert float(f.hessian_norm(v) / (2 * naive.norm())) == pytest.approx(1.0, rel=1e-6)
    assert not f.certificates[0].tight


def test_exp_is_an_equality_and_cosh_needs_L0_one():
    e = Exp()
    y = torch.linspace(-5, 3, 50, dtype=DTYPE)[:, None]
    assert torch.allclose(e.hessian_norm(y), e.grad_norm(y), rtol=1e-15, atol=0)
    # sums do not preserve (L0, L1): e^y and e^-y are (0, 1), their average cosh is not (0, 1) at y = 0
    cosh = make_function("cosh")
    zero = torch.zeros(1, dtype=DTYPE)
    assert float(cosh.hessian_norm(zero)) == 1.0 and float(cosh.grad_norm(zero)) == 0.0


@pytest.mark.parametrize("name", ["y4", "exp", "cosh", "logistic", "norm4", "logreg", "softmax_ce"])
@settings(max_examples=30, deadline=None)
@given(seed=seeds)
def test_self_bounding(name, seed):
    """A.1: f >= f* and (L0, L1) give ||grad f||^2 <= 2 (L0 + 2 L1 ||grad f||) (f - f*)."""
    f = make_function(name)
    y = f.sample(300, np.random.default_rng(seed))
    gn, gap = f.grad_norm(y), f.value(y) - f.f_star
    for cert in f.certificates:
        rhs = 2 * (cert.L0 + 2 * cert.L1 * gn) * gap
        assert float((gn.square() - rhs).max()) <= 1e-9 * float(1 + rhs.abs().max())


@pytest.mark.parametrize("name", sorted(CATALOGUE))
@settings(max_examples=10, deadline=None)
@given(seed=seeds)
def test_proposition1_pairs_through_the_generic_checker(name, seed):
    """(H2) with the phi factor (Prop. 1 (i)) on random pairs within the radius, via CatalogueProblem."""
    f = make_function(name)
    for i in range(len(f.certificates)):
        P = CatalogueProblem(name, certificate=i)
        res = check_pairs(P, *random_pairs(P, 300, torch.Generator().manual_seed(seed)))
        assert res.sound(RTOL), (name, i, res)
        assert res.h1 == 0.0


def test_local_smoothness_samples_contract():
    d = local_smoothness_samples("y4", 500, seed=3)
    assert set(d) >= {"grad_norm", "hess_norm", "bound", "ratio", "points", "L0", "L1"}
    assert all(isinstance(v, np.ndarray) for v in d.values())
    assert d["grad_norm"].shape == d["hess_norm"].shape == d["bound"].shape == (500,)
    assert float(d["ratio"].max()) <= 1 + RTOL
    np.testing.assert_allclose(d["bound"], d["L0"] + d["L1"] * d["grad_norm"])
    again = local_smoothness_samples("y4", 500, seed=3)
    np.testing.assert_array_equal(d["points"], again["points"])                # pure function of the seed
    other = local_smoothness_samples("power", 50, seed=1, k=6.0, L1=0.5)
    assert float(other["L0"]) == pytest.approx(6 * 4**4 / 0.5**4)
    lse = local_smoothness_samples("lse", 200, seed=0, certificate=1)
    assert float(lse["L1"]) == pytest.approx(math.sqrt(4) / 2) and float(lse["ratio"].max()) <= 1 + RTOL
    assert LogSumExp(k=2).certificates[1].tight and not LogSumExp(k=3).certificates[1].tight
