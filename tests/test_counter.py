"""Counter-based directions: Philox known answers, shard = slice of the whole draw, law moments,
the torch implementation against the Triton kernel (interpreter on CPU, or CUDA)."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from hybridtheory.algorithm import (Direction, DirectionBank, ZOSettings, apply_zo_update, counter, derive_seed,
                                    zo_coefficients)
from hybridtheory.algorithm.counter import draw_slice, philox4x32

HAVE_TRITON = importlib.util.find_spec("triton") is not None


def _words(c0, c1, c2, c3, key):
    out = philox4x32(torch.tensor([c0]), torch.tensor([c1]), key, c2=torch.tensor([c2]), c3=torch.tensor([c3]))
    return [int(w) for w in out]


@pytest.mark.parametrize("ctr, key, expected", [
    # Random123's known-answer vectors for philox4x32-10 (kat_vectors)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(ctr, key, expected):
    assert _words(*ctr, key[0] | key[1] << 32) == list(expected)


@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_any_split_into_shards_equals_the_full_draw(law):
    total = 1000
    full = draw_slice(12345, 0, total, law)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        cuts = sorted(torch.randint(0, total + 1, (int(torch.randint(1, 6, (1,), generator=gen)),),
                                    generator=gen).tolist())
        bounds = [0, *cuts, total]
        pieces = [draw_slice(12345, a, b - a, law) for a, b in zip(bounds[:-1], bounds[1:])]
        assert torch.equal(torch.cat(pieces), full)
    # chunked draws (several chunks) equal the unchunked bits
    big = counter._CHUNK_COUNTERS * counter.ENTRIES_PER_COUNTER[law] * 2 + 77
    whole = draw_slice(7, 0, big, law)
    assert torch.equal(draw_slice(7, 3, big - 3, law), whole[3:])
    # a key column draws independent rows, each equal to its own draw
    keys = torch.tensor([[3], [9]])
    rows = draw_slice(keys, 5, 300, law)
    assert torch.equal(rows[1], draw_slice(9, 5, 300, law)) and not torch.equal(rows[0], rows[1])


@pytest.mark.parametrize("law", ["gaussian", "rademacher", "sphere"])
def test_sharded_block_equals_whole_block(law):
    """A block cut into two shards per tensor (offsets) and a summed sphere normaliser gives the
    same direction entries, and the same zo step, as the whole block."""
    shapes = [(7, 5), (130,), (3, 3, 3)]
    whole = [torch.zeros(s) for s in shapes]
    d = Direction(99, law)
    full = [u.flatten() for u in d.materialize(whole)]
    cuts = [11, 64, 1]
    shards = [[torch.zeros(c), torch.zeros(math.prod(s) - c)] for s, c in zip(shapes, cuts)]
    local = [[sh[i] for sh in shards] for i in (0, 1)]
    offsets = [tuple(0 for _ in cuts), tuple(cuts)]
    if law == "sphere":
        # each shard's local sums of squares, summed over the shards by `reduce` (an all-reduce)
        local_sq = [Direction(99, "gaussian", offsets=offsets[i]).materialize(local[i]) for i in (0, 1)]
        total = sum(u.square().sum() for part in local_sq for u in part)
        got = [Direction(99, law, offsets=offsets[i], reduce=lambda s: total).materialize(local[i])
               for i in (0, 1)]
    else:
        got = [Direction(99, law, offsets=offsets[i]).materialize(local[i]) for i in (0, 1)]
    for k in range(len(shapes)):
        torch.testing.assert_close(torch.cat([got[0][k], got[1][k]]), full[k], rtol=1e-6, atol=0)
        if law != "sphere":
            assert torch.equal(torch.cat([got[0][k], got[1][k]]), full[k])


def test_bank_draws_are_the_directions_own():
    template = [torch.zeros(4, 6, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)]
    for law in ("gaussian", "rademacher", "sphere"):
        bank = DirectionBank(law)
        zo = ZOSettings(law=law, batch_dims=1, cache=True, bank=bank)
        for seed in (5, 6, 7):
            q = derive_seed(seed, 0)
            bank.fill([q], template)
            got = zo.direction(seed, 0).materialize(template)
            want = Direction(q, law, batch_dims=1).materialize(template)
            for a, b in zip(got, want):
                assert torch.equal(a, b)
            assert q not in bank


def _moments(x: torch.Tensor):
    n, d = x.shape
    mean = x.mean(0)
    cov = x.T @ x / n
    return mean, cov


@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_law_moments(law):
    """Mean 0 and E uu^T = I within Monte Carlo margins (5 sigma), across counter boundaries:
    rows of 10 entries starting at 123 straddle Gaussian (4) and Rademacher (128) counters."""
    n, d = 40_000, 10
    keys = torch.arange(n, dtype=torch.int64).mul(2654435761).add(17).unsqueeze(1)
    x = draw_slice(keys, 123, d, law, torch.float64)
    mean, cov = _moments(x)
    assert mean.abs().max() < 5 / math.sqrt(n)
    off = cov - torch.diag(torch.diagonal(cov))
    assert off.abs().max() < 5 / math.sqrt(n)  # Var(u_i u_j) = 1
    if law == "rademacher":
        assert torch.equal(x.abs(), torch.ones_like(x))
    else:
        assert (torch.diagonal(cov) - 1).abs().max() < 5 * math.sqrt(2 / n)  # Var(u_i^2) = 2
        fourth = x.pow(4).mean()
        assert abs(float(fourth) - 3) < 5 * math.sqrt(96 / (n * d))  # Var(u^4) = 105 - 9
    # one long row: mean and variance along the counter stream of a single key
    row = draw_slice(2024, 0, 200_000, law, torch.float64)
    assert abs(float(row.mean())) < 5 / math.sqrt(row.numel())
    assert abs(float(row.square().mean()) - 1) < 5 * math.sqrt(2 / row.numel())


def test_sphere_moments():
    n, d = 20_000, 6
    template = [torch.zeros(n, 4, dtype=torch.float64), torch.zeros(n, 2, dtype=torch.float64)]
    u = torch.cat(Direction(31, "sphere", batch_dims=1).materialize(template), dim=1)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(n, dtype=torch.float64), rtol=1e-12, atol=0)
    mean, cov = _moments(u)
    assert mean.abs().max() < 5 / math.sqrt(n * d)
    # E uu^T = I/d; Var(u_i^2) = 2 (d - 1) / (d^2 (d + 2)) and Var(u_i u_j) = 1 / (d (d + 2))
    assert (torch.diagonal(cov) - 1 / d).abs().max() < 5 * math.sqrt(2 * (d - 1) / (d * d * (d + 2)) / n)
    off = cov - torch.diag(torch.diagonal(cov))
    assert off.abs().max() < 5 * math.sqrt(1 / (d * (d + 2)) / n)


def test_draws_depend_on_dtype_only_by_rounding():
    a = draw_slice(5, 0, 500, "gaussian", torch.float64)
    b = draw_slice(5, 0, 500, "gaussian", torch.float32)
    assert torch.equal(a, b.double())
    c = draw_slice(5, 0, 500, "gaussian", torch.bfloat16)
    assert torch.equal(c, b.to(torch.bfloat16))


def test_zo_step_with_shards_equals_whole():
    """The estimator and update run on a block of shards (offsets) give the whole block's result."""
    torch.manual_seed(0)
    w = [torch.randn(6, 4, dtype=torch.float64), torch.randn(9, dtype=torch.float64)]
    target = [torch.randn_like(t) for t in w]

    def loss_of(ts, tg):
        return lambda: sum(((a - b) ** 2).sum() for a, b in zip(ts, tg))

    for law in ("gaussian", "rademacher", "sphere"):
        whole = [t.clone() for t in w]
        zo = ZOSettings(mu=1e-3, law=law)
        rec = zo_coefficients(whole, loss_of(whole, target), zo, 77, defer_restore=True)
        apply_zo_update(whole, rec, [0.1, 0.1])
        # two "ranks", each holding a slice of every tensor; the loss needs the full tensors, so the
        # ranks are stepped in lockstep on views of one shared copy
        shared = [t.clone() for t in w]
        flat = [t.view(-1) for t in shared]
        cuts = [10, 4]
        locals_ = [[f[:c] for f, c in zip(flat, cuts)], [f[c:] for f, c in zip(flat, cuts)]]
        offs = [(0, 0), tuple(cuts)]
        dirs = []
        for r in (0, 1):
            z = ZOSettings(mu=1e-3, law=law, offsets=offs[r])
            dirs.append(z.direction(77, 0))
        inv = None
        if law == "sphere":  # the ranks' local sums of squares, summed as an all-reduce would
            local_sq = [sum(u.square().sum() for u in Direction(dirs[r].seed, "gaussian", offsets=offs[r])
                            .materialize(locals_[r])) for r in (0, 1)]
            inv = (local_sq[0] + local_sq[1]).rsqrt()
        f = loss_of(shared, target)
        for r in (0, 1):
            dirs[r].add_to(locals_[r], 1e-3, inv)
        fp = f()
        for r in (0, 1):
            dirs[r].add_to(locals_[r], -2e-3, inv)
        fm = f()
        c = (fp - fm) / 2e-3
        torch.testing.assert_close(c, rec[0].coeff, rtol=1e-9, atol=1e-12)
        scale = float(sum(t.numel() for t in w)) if law == "sphere" else 1.0
        for r in (0, 1):
            dirs[r].add_to(locals_[r], [1e-3 - 0.1 * scale * c.double()] * 2, inv)
        for a, b in zip(shared, whole):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _triton_device():
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (the gpu extra)")
@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_kernel_equals_torch_implementation(law, monkeypatch):
    """The Triton kernel and the torch implementation: same bits for Rademacher (all 128 bits of every
    Philox evaluation are used, so the integer words agree), Gaussian to float32 rounding of log/cos/sin
    (8 ulps at |u| <= 6). On CPU under TRITON_INTERPRET=1, small tensors."""
    from hybridtheory.algorithm import kernels
    device = _triton_device()
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    for key, start, numel in [(987654321987, 0, 1000), (5, 333, 2500), (2**62 + 3, 5, 3), (11, 4095, 130)]:
        got = kernels.draw_slice(key, start, numel, law, device=device).cpu()
        want = draw_slice(key, start, numel, law)
        if law == "rademacher":
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=4e-6)
            assert (got != want).float().mean() < 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_cuda_torch_draw_equals_cpu(law):
    got = draw_slice(424242, 17, 100_003, law, device="cuda").cpu()
    want = draw_slice(424242, 17, 100_003, law)
    if law == "rademacher":
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=4e-6)
