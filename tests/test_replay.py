"""Seed replay in the core: ``zo_update`` given a step's seed and recorded coefficients redoes the training
step's ZO update bit for bit (in place, where the perturb/restore rounding is part of the trajectory, and with
a master whose mirrors are a 16-bit model)."""
from __future__ import annotations

import pytest
import torch

from hybridtheory.algorithm import ParamGroup, ZOSettings, apply_zo_update, derive_seed, hybrid_step, zo_update
from hybridtheory.algorithm.estimator import ZORecord
from hybridtheory.algorithm.rounding import COMPENSATION_DTYPE


class Quadratic:
    """f(x, y) = 0.5 ||A x - b||^2 + 0.5 ||y - c||^2 + <x0, y0> on a block of tensors (x: ZO, y: FO)."""

    def __init__(self, xs, ys, mirrors=None):
        g = torch.Generator().manual_seed(7)
        self.xs, self.ys, self.read = xs, ys, mirrors or xs
        self.targets = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in xs + ys]

    def loss(self):
        parts = [t.double() for t in self.read + self.ys]
        value = sum(0.5 * (p - c).square().sum() for p, c in zip(parts, self.targets))
        return (value + (parts[0].flatten()[:4] * parts[len(self.read)].flatten()[:4]).sum()).float()

    def loss_and_grad(self, params):
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in params]
            xs = [t.double() for t in self.read]
            value = sum(0.5 * (p - c).square().sum() for p, c in zip(xs + [q.double() for q in leaves], self.targets))
            value = value + (xs[0].flatten()[:4] * leaves[0].double().flatten()[:4]).sum()
            grads = torch.autograd.grad(value, leaves)
        return value.detach().float(), [g.to(p.dtype) for g, p in zip(grads, params)]


def _blocks(policy):
    g = torch.Generator().manual_seed(3)
    shapes = [(37, 11), (300,), (5, 7, 3)]
    xs = [torch.randn(s, generator=g) for s in shapes]
    if policy == "master":  # a bfloat16 model whose fp32 master is the ZO block
        mirrors = [x.to(torch.bfloat16) for x in xs]
        xs = [m.float() for m in mirrors]
        return xs, mirrors
    if policy in ("compensated", "stochastic"):  # a bfloat16 block updated in place, memory-light policies
        return [x.to(torch.bfloat16) for x in xs], None
    return xs, None


@pytest.mark.parametrize("master", ["in-place", "master", "compensated", "stochastic"])
@pytest.mark.parametrize("law,difference,queries", [("gaussian", "central", 1), ("sphere", "forward", 2),
                                                    ("rademacher", "central", 2)])
def test_replaying_recorded_coefficients_equals_training_bit_for_bit(master, law, difference, queries):
    xs, mirrors = _blocks(master)
    start = [x.clone() for x in xs]
    ys = [torch.zeros(6, 4)]
    zo = ZOSettings(mu=1e-3, law=law, difference=difference, queries=queries,
                    rounding="stochastic" if master == "stochastic" else "nearest")
    mask = [True, False, True]

    def buffers():
        return [torch.zeros_like(x, dtype=COMPENSATION_DTYPE) for x in xs] if master == "compensated" else None

    def groups(block, mirror, lr, comp):
        return [ParamGroup("x", block, lr, "zo", weight_decay=0.05, decay_mask=mask, mirrors=mirror,
                           compensation=comp), ParamGroup("y", ys, 0.1, "fo")]

    problem = Quadratic(xs, ys, mirrors)
    log = []
    comp = buffers()
    for t in range(6):
        lr = 0.02 * (1 - t / 8)  # a schedule: the step size the replay must take from the log
        seed = derive_seed(11, t)
        info = hybrid_step(groups(xs, mirrors, lr, comp), problem, zo, seed)
        log.append((seed, [r.coeff.clone() for r in info.records], lr))

    block = [s.clone() for s in start]
    replay_mirrors = None if mirrors is None else [s.to(torch.bfloat16) for s in start]
    replay_comp = buffers()
    for seed, coeffs, lr in log:
        zo_update(groups(block, replay_mirrors, lr, replay_comp)[:1], zo, seed,
                  coefficients=[c.double() for c in coeffs], write_mirrors=False)
    assert all(torch.equal(a, b) for a, b in zip(block, xs))
    if comp is not None:
        assert all(torch.equal(a, b) for a, b in zip(replay_comp, comp)) and any(bool(c.any()) for c in comp)
    if mirrors is not None:
        for m, b in zip(replay_mirrors, block):
            m.copy_(b)
        assert all(torch.equal(a, b) for a, b in zip(replay_mirrors, mirrors))
    assert not all(torch.equal(a, b) for a, b in zip(block, start))  # the updates were not all lost


def test_in_place_replay_needs_the_perturbation_passes():
    """Without a master, x + mu u - 2 mu u + ... is not x in floating point: an update-only replay drifts."""
    xs, _ = _blocks("in-place")
    start = [x.clone() for x in xs]
    zo = ZOSettings(mu=1e-3, law="gaussian", difference="central")
    problem = Quadratic(xs, [torch.zeros(6, 4)])
    log = []
    for t in range(3):
        records = zo_update([ParamGroup("x", xs, 0.01, "zo")], zo, derive_seed(5, t), problem.loss)
        log.append((derive_seed(5, t), records[0].coeff.clone()))
    exact, update_only = [s.clone() for s in start], [s.clone() for s in start]
    for seed, c in log:
        zo_update([ParamGroup("x", exact, 0.01, "zo")], zo, seed, coefficients=[c])
        apply_zo_update(update_only, [ZORecord(zo.direction(seed, 0), c)], [0.01] * len(xs))
    assert all(torch.equal(a, b) for a, b in zip(exact, xs))
    assert not all(torch.equal(a, b) for a, b in zip(update_only, xs))


def test_replay_refuses_a_wrong_number_of_coefficients():
    xs, _ = _blocks("in-place")
    with pytest.raises(ValueError, match="2 coefficients for 1 queries"):
        zo_update([ParamGroup("x", xs, 0.01, "zo")], ZOSettings(), 3,
                  coefficients=[torch.tensor(1.0), torch.tensor(2.0)])
