"""Unit tests of the algorithm core: sampler, directions, per-block steps, resumability."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridtheory.algorithm import (Direction, DirectionBank, EpochSampler, ParamGroup, ZOSettings, apply_zo_update,
                                    hybrid_step, restore_pending, zo_coefficients)
from hybridtheory.objectives import make
from hybridtheory.runner import RunConfig, RunState, run


@given(n=st.integers(1, 40), seed=st.integers(0, 2**40), epoch=st.integers(0, 10**6), S=st.integers(1, 5))
@settings(max_examples=60)
def test_reshuffling_visits_every_index_once_per_epoch(n, seed, epoch, S):
    order = EpochSampler(n, seed, (S,)).order(epoch)
    assert order.shape == (S, n)
    for row in order:
        assert sorted(row.tolist()) == list(range(n))
    single = EpochSampler(n, seed).order(epoch)
    assert sorted(single.tolist()) == list(range(n))


def test_sampler_is_a_pure_function_of_seed_and_epoch():
    a, b = EpochSampler(50, 7, (3,)), EpochSampler(50, 7, (3,))
    assert torch.equal(a.order(5), b.order(5))
    assert not torch.equal(a.order(5), a.order(6))
    assert not torch.equal(a.order(5)[0], a.order(5)[1])  # replicates independent


def test_with_replacement_repeats_indices():
    order = EpochSampler(20, 1, (200,), replacement=True).order(0)
    repeats = sum(len(set(r.tolist())) < 20 for r in order)
    assert repeats > 190  # P(no repeat) = 20!/20^20 ~ 2e-8 per row


@pytest.mark.parametrize("law", ["sphere", "gaussian", "rademacher"])
def test_direction_regenerates_identically_and_sphere_is_unit(law):
    block = [torch.zeros(4, 3, 2), torch.zeros(4, 5)]
    d = Direction(123, law, batch_dims=1)
    u1, u2 = d.materialize(block), Direction(123, law, batch_dims=1).materialize(block)
    for a, b in zip(u1, u2):
        assert torch.equal(a, b)
    if law == "sphere":
        norms = (u1[0].flatten(1).square().sum(1) + u1[1].square().sum(1)).sqrt()
        torch.testing.assert_close(norms, torch.ones(4))
    if law == "rademacher":
        assert all(set(u.unique().tolist()) == {-1.0, 1.0} for u in u1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_perturb_restore_returns_to_start(dtype):
    g = torch.Generator().manual_seed(0)
    block = [torch.randn(7, 3, generator=g, dtype=dtype), torch.randn(11, generator=g, dtype=dtype)]
    start = [t.clone() for t in block]
    settings_ = ZOSettings(mu=1e-3, law="gaussian", dtype=dtype)
    zo_coefficients(block, lambda: sum(t.square().sum() for t in block), settings_, step_seed=9)
    tol = 1e-15 if dtype == torch.float64 else 1e-6
    for a, b in zip(block, start):
        assert (a - b).abs().max() <= tol


def test_per_block_step_sizes_touch_only_their_block():
    problem = make("ramp", eps=0.3, dx=3)
    x, y = problem.initial_point((2,))
    j = torch.tensor([0, 1])
    zo = ZOSettings(mu=0.01, batch_dims=1, dtype=torch.float64)
    for lr_x, lr_y in [(0.0, 0.1), (0.1, 0.0)]:
        xs, ys = x.clone(), y.clone()
        hybrid_step([ParamGroup("x", [xs], lr_x, "zo"), ParamGroup("y", [ys], lr_y, "fo")],
                    problem.oracle(j, xs, ys), zo, step_seed=5)
        moved_x = float((xs - x).abs().max())
        # perturb/restore in float64 leaves at most last-bit drift when the ZO step size is 0
        assert (moved_x <= 1e-15) if lr_x == 0 else (moved_x > 1e-6)
        assert torch.equal(ys, y) == (lr_y == 0.0)


def test_forward_counts():
    problem = make("ramp", eps=0.3, dx=3)
    x, y = problem.initial_point((1,))
    j = torch.tensor([0])
    groups = [ParamGroup("x", [x], 0.1, "zo"), ParamGroup("y", [y], 0.1, "fo")]
    for diff, q, fo_point, fwd in [("central", 1, "jacobi", 3), ("forward", 1, "jacobi", 2),
                                   ("central", 3, "jacobi", 7), ("forward", 2, "gauss_seidel", 4),
                                   ("central", 1, "perturbed", 2)]:
        zo = ZOSettings(mu=0.01, difference=diff, queries=q, batch_dims=1, dtype=torch.float64)
        info = hybrid_step(groups, problem.oracle(j, x, y), zo, 1, fo_point=fo_point)
        assert info.forwards == fwd, (diff, q, fo_point)


def test_replay_of_records_equals_direct_update():
    """ZO gradient accumulation: replaying (seed, coeff) records reproduces the update."""
    g = torch.Generator().manual_seed(1)
    block = [torch.randn(5, generator=g, dtype=torch.float64)]
    target = torch.randn(5, generator=g, dtype=torch.float64)
    zo = ZOSettings(mu=1e-4, law="sphere", queries=2, dtype=torch.float64)
    recs = zo_coefficients(block, lambda: 0.5 * (block[0] - target).square().sum(), zo, 3)
    a = [block[0].clone()]
    apply_zo_update(a, recs, [0.1])
    u = [r.direction.materialize(block)[0] for r in recs]
    expected = block[0] - 0.1 * 5 / 2 * sum(r.coeff * uk for r, uk in zip(recs, u))
    torch.testing.assert_close(a[0], expected, rtol=1e-12, atol=1e-12)


def test_resume_equals_uninterrupted():
    problem = make("ramp", eps=0.3, dx=3, n=4)
    cfg = RunConfig(eta_x=0.01, eta_y=0.1, mu=0.05, epochs=7, replicates=3, seed=2)
    full = run(problem, cfg)
    first = run(problem, RunConfig(**{**cfg.__dict__, "epochs": 3}))
    resumed = run(problem, cfg, state=RunState.from_state_dict(first.state.state_dict()))
    assert torch.equal(full.state.x, resumed.state.x) and torch.equal(full.state.y, resumed.state.y)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="direction law"):
        ZOSettings(law="cauchy")
    with pytest.raises(ValueError, match="mu must be > 0"):
        ZOSettings(mu=0.0)
    with pytest.raises(ValueError, match="queries"):
        ZOSettings(queries=0)
    with pytest.raises(ValueError, match="step size"):
        ParamGroup("x", [], -1.0, "zo")
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig(method="adam")


@pytest.mark.parametrize("difference", ["central", "forward"])
def test_deferred_restore_fused_with_update_matches_separate_passes(difference):
    g = torch.Generator().manual_seed(4)
    start = [torch.randn(6, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)]
    target = torch.randn(6, generator=g, dtype=torch.float64)

    def run_once(defer, lrs):
        block = [t.clone() for t in start]
        f = lambda: (block[0] - target).square().sum() + block[1].sum()  # noqa: E731
        zo = ZOSettings(mu=1e-3, law="gaussian", difference=difference, queries=2, dtype=torch.float64)
        recs = zo_coefficients(block, f, zo, 8, f0=f(), defer_restore=defer)
        if defer:
            assert recs[-1].pending is not None and recs[0].pending is None
        apply_zo_update(block, recs, lrs)
        return block

    for lrs in ([0.1, 0.05], [0.0, 0.0]):
        a, b = run_once(True, lrs), run_once(False, lrs)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-15)
    for x, y in zip(run_once(True, [0.0, 0.0]), start):  # step size 0: back to the start up to rounding
        assert (x - y).abs().max() <= 1e-15


def test_restore_pending_undoes_a_deferred_perturbation():
    block = [torch.ones(5, dtype=torch.float64)]
    zo = ZOSettings(mu=0.1, law="sphere", dtype=torch.float64)
    recs = zo_coefficients(block, lambda: block[0].sum(), zo, 1, defer_restore=True)
    assert (block[0] - 1).abs().max() > 1e-3   # still perturbed
    restore_pending(block, recs)
    assert (block[0] - 1).abs().max() <= 1e-15


def test_runs_never_touch_the_global_rng():
    """Directions and orders come from their own generators: the global torch and numpy streams are untouched."""
    import numpy as np
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    problem = make("hyb")
    run(problem, RunConfig(method="hybrid", eta_x=1e-3, eta_y=1e-3, mu=1e-2, epochs=3, replicates=2, law="gaussian"))
    run(problem, RunConfig(method="hybrid-sgd", eta_x=1e-3, eta_y=1e-3, mu=1e-2, epochs=3, replicates=2))
    assert torch.equal(torch_state, torch.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])


def test_rademacher_moments():
    """Mean 0 and covariance I within Monte Carlo margins (4,000 draws of a 6-vector)."""
    bank = DirectionBank("rademacher")  # the same draws as Direction(s, "rademacher"), made in one pass
    bank.fill(range(4000), [torch.zeros(6)])
    draws = torch.stack([bank.take(s)[0] for s in range(4000)])
    assert draws.mean(0).abs().max() < 4 / 4000 ** 0.5
    cov = draws.T @ draws / 4000
    assert (cov - torch.eye(6)).abs().max() < 4 / 4000 ** 0.5


@pytest.mark.parametrize("difference", ["central", "forward"])
@pytest.mark.parametrize("law", ["gaussian", "sphere"])
def test_zo_weight_decay_is_mezo_update(difference, law):
    """theta <- theta - lr (g + wd theta) on masked tensors, as MeZO writes it (at the restored point)."""
    g = torch.Generator().manual_seed(3)
    block = [torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)]
    start = [t.clone() for t in block]
    loss = lambda: sum((t.sin() * (i + 1)).sum() for i, t in enumerate(block))  # noqa: E731
    group = ParamGroup("x", block, lr=0.05, oracle="zo", weight_decay=0.3, decay_mask=[True, False])
    zo = ZOSettings(mu=1e-3, law=law, difference=difference, dtype=torch.float64)

    class Oracle:
        def loss(self):
            return loss()

    info = hybrid_step([group], Oracle(), zo, step_seed=11)
    (record,) = info.records
    u = record.direction.materialize(start)
    s = record.direction.scale(start)
    expected = [start[0] - 0.05 * (s * record.coeff * u[0] + 0.3 * start[0]), start[1] - 0.05 * s * record.coeff * u[1]]
    for a, b in zip(block, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_fo_weight_decay_in_default_sgd():
    p = [torch.tensor([1.0, -2.0], dtype=torch.float64)]

    class Oracle:
        def loss_and_grad(self, params):
            return torch.tensor(0.0), [torch.tensor([0.5, 0.5], dtype=torch.float64)]

        def loss(self):
            return torch.tensor(0.0)

    hybrid_step([ParamGroup("y", p, lr=0.1, oracle="fo", weight_decay=0.2)], Oracle(), ZOSettings(), step_seed=0)
    torch.testing.assert_close(p[0], torch.tensor([1.0, -2.0], dtype=torch.float64) - 0.1 * (
        torch.tensor([0.5, 0.5], dtype=torch.float64) + 0.2 * torch.tensor([1.0, -2.0], dtype=torch.float64)))
