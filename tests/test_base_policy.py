"""16-bit ZO base policies (issue 9, item 3): stochastic rounding and the compensation buffer in the core's write
passes, and ``--base-master auto`` choosing among master, compensated and stochastic from the free memory.

What is checked: stochastic rounding is unbiased (Monte Carlo mean of many roundings of x + d is x + d) and keeps
a 1e-7 update in expectation; its bits are a pure function of (seed, pass, tensor, entry), equal for any shard
split, distinct per pass and from the direction's stream; the compensated pair's perturb/restore drift stays
within the buffer's rounding bound (the bf16 weights almost never move) and it keeps a 1e-7 update; auto's
decision on faked sizes and free memory, its log line and run.json; every policy trains a tiny bf16 model to a
finite loss and resumes exactly from a checkpoint.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hybridtheory.algorithm import Direction, ZORecord, ZOSettings, apply_zo_update, zo_coefficients  # noqa: E402
from hybridtheory.algorithm import counter  # noqa: E402
from hybridtheory.algorithm.rounding import (COMPENSATION_DTYPE, compensated_value, rounding_seed,  # noqa: E402
                                             stochastic_round, store, uniforms)

BF16 = torch.bfloat16


def weights(n: int, seed: int = 0, dtype=BF16) -> torch.Tensor:
    """Weights of a typical scale (~0.02), 16-bit."""
    return (torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.02).to(dtype)


# ---------------------------------------------------------------------------- stochastic rounding
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_is_unbiased(dtype):
    """Mean of M roundings of y = x + d (d far below the ULP) is y within 5 Monte Carlo sigmas, per entry,
    while rounding to nearest loses d entirely."""
    n, m = 64, 4096
    x = weights(n, 1, dtype).float()
    d = torch.linspace(-3e-5, 3e-5, n)                      # from 0.01 to ~0.5 ULP of a 0.02 weight
    y = x + d
    v = uniforms(rounding_seed(11, 0), 0, 0, n * m, "cpu").view(m, n)
    r = stochastic_round(y.expand(m, n), dtype, v).float()
    near = y.to(dtype)
    gap = (torch.nextafter(near, torch.full_like(near, math.inf)).float() - near.float()).abs()
    # each rounding is a neighbour of y, and at most two values occur per entry
    assert bool(((r - y).abs() <= gap).all())
    assert bool(((r == r.min(0).values) | (r == r.max(0).values)).all())
    sigma = gap / 2 / math.sqrt(m)                          # std of a Bernoulli(p) step is <= gap / 2
    err = (r.mean(0) - y).abs()
    assert bool((err <= 5 * sigma + 1e-9).all()), float((err / sigma).max())
    assert float((near.float() - y).abs().mean()) > 10 * float(err.mean())   # nearest is biased here


def test_exact_and_nonfinite_values_round_to_nearest():
    y = torch.tensor([0.5, -2.0, 0.0, math.inf, -math.inf, math.nan, 1e39])
    r = stochastic_round(y, BF16, torch.zeros_like(y))      # v = 0 would take any neighbour with p > 0
    assert torch.equal(r[:5].float(), y[:5]) and bool(r[5].isnan()) and bool(r[6].isinf())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_neighbour_from_bits_equals_nextafter(dtype):
    """The bit-pattern neighbour (any device) equals torch.nextafter, signed zeros and extremes included."""
    from hybridtheory.algorithm.rounding import _neighbour
    x = torch.cat([weights(4000, 8).float(), torch.randn(500) * 1e3,
                   torch.tensor([0.0, -0.0, 1.0, -1.0, -2.0, 65504.0, 1e-7, -1e-7])]).to(dtype)
    up = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    ref = torch.nextafter(x, torch.where(up, math.inf, -math.inf).to(dtype))
    assert torch.equal(_neighbour(x, up).float(), ref.float())


def test_stochastic_update_is_kept_in_expectation_by_the_core():
    """A 1e-7 update through the core's add_to: rounded to nearest almost nothing moves; stochastically the
    stored change projected on the intended one is ~1 (Monte Carlo margin over 200k entries)."""
    n = 1 << 18
    x0 = weights(n, 2)
    d = Direction(5, "gaussian")
    u = d.materialize([x0.float()])[0]
    kept = {}
    for name, seed in (("nearest", None), ("stochastic", rounding_seed(5, 3))):
        x = x0.clone()
        d.add_to([x], 1e-7, rounding_seed=seed)
        delta = x.double() - x0.double()
        kept[name] = float((delta * 1e-7 * u.double()).sum() / (1e-7 * u.double()).square().sum())
    assert kept["nearest"] < 0.05
    assert abs(kept["stochastic"] - 1) < 0.1, kept


def test_rounding_bits_are_counter_based_shardable_and_distinct():
    n = 5000
    whole = uniforms(rounding_seed(3, 1), 2, 0, n, "cpu")
    assert torch.equal(whole, uniforms(rounding_seed(3, 1), 2, 0, n, "cpu"))           # same seed, same bits
    assert torch.equal(torch.cat([uniforms(rounding_seed(3, 1), 2, s, e - s, "cpu")
                                  for s, e in ((0, 7), (7, 2049), (2049, n))]), whole)
    assert bool((whole >= 0).all() and (whole < 1).all()) and abs(float(whole.mean()) - 0.5) < 0.02
    # other passes, other tensors and the direction itself use other streams
    assert not torch.equal(whole, uniforms(rounding_seed(3, 2), 2, 0, n, "cpu"))
    assert not torch.equal(whole, uniforms(rounding_seed(3, 1), 3, 0, n, "cpu"))
    gauss = counter.draw_slice(counter.tensor_key(3, 2), 0, n)
    assert abs(float(torch.corrcoef(torch.stack([whole, gauss]))[0, 1])) < 0.1
    assert len({rounding_seed(3, p) for p in range(4)} | {counter.tensor_key(3, k) for k in range(4)}) == 8


@pytest.mark.parametrize("policy", ["stochastic", "compensated"])
def test_sharded_writes_equal_the_whole(policy):
    """Two ZO cycles (perturb, perturb, restore + update) on shards of two tensors, each shard drawing its own
    entries (offsets), give bit for bit the whole tensors' result."""
    full = [weights(3001, 3), weights(64 * 33, 4)]
    cuts = [(0, 1000, 2222, 3001), (0, 64 * 7, 64 * 33)]
    zo_whole = ZOSettings(mu=1e-3, law="gaussian", rounding="stochastic" if policy == "stochastic" else "nearest")

    def cycle(block, comp, zo):
        for step in range(2):
            recs = zo_coefficients(block, lambda: torch.tensor(float(step)), zo, 40 + step, defer_restore=True,
                                   compensation=comp)
            for r in recs:
                r.coeff = torch.tensor(0.7)
            apply_zo_update(block, recs, [1e-4] * len(block), compensation=comp, rounding=zo.rounding)

    whole = [t.clone() for t in full]
    whole_comp = [torch.zeros_like(t, dtype=COMPENSATION_DTYPE) for t in full] if policy == "compensated" else None
    cycle(whole, whole_comp, zo_whole)
    pieces = [[full[k][a:b].clone() for a, b in zip(c, c[1:])] for k, c in enumerate(cuts)]
    comps = [[torch.zeros_like(p, dtype=COMPENSATION_DTYPE) for p in ps] for ps in pieces]
    for j in range(3):  # shard j of each tensor (tensor 1 has two shards: its third is empty)
        block = [pieces[k][j] for k in range(2) if j < len(pieces[k])]
        comp = [comps[k][j] for k in range(2) if j < len(pieces[k])] if policy == "compensated" else None
        offsets = tuple(cuts[k][j] for k in range(2) if j < len(pieces[k]))
        zo = ZOSettings(mu=1e-3, law="gaussian", rounding=zo_whole.rounding, offsets=offsets)
        cycle(block, comp, zo)
    for k in range(2):
        assert torch.equal(torch.cat(pieces[k]), whole[k])
        if policy == "compensated":
            assert torch.equal(torch.cat(comps[k]), whole_comp[k])
    assert not torch.equal(whole[0], full[0])


# ---------------------------------------------------------------------------- compensation buffer
def test_compensated_restore_drift_is_within_the_buffer_rounding():
    """One perturb (+mu, -2mu) / restore cycle with step 0: each pass rounds the pair's value to 2^-15 of the
    weight's ULP (<= 2^-23 of the value for bf16), so it moves by at most that per pass and the bf16 weights do
    not move; in place, about half of them do."""
    n, mu = 1 << 16, 1e-3
    x0 = weights(n, 5)
    d = Direction(9, "gaussian")
    u = d.materialize([x0.float()])[0].double()
    x, c = x0.clone(), torch.zeros_like(x0, dtype=COMPENSATION_DTYPE)
    for a in (mu, -2 * mu, mu):
        d.add_to([x], a, compensation=[c])
    drift = (compensated_value(x, c, torch.float64) - x0.double()).abs()
    # per pass: 2^-23 of the value (buffer rounding) + 2^-24 (float32 sum), the value at most |x0| + 2 mu |u|
    bound = 3 * (2.0 ** -23 + 2.0 ** -24) * (x0.double().abs() + 2 * mu * u.abs()) + 1e-30
    assert bool((drift <= bound).all()), float((drift / bound).max())
    assert float((x != x0).double().mean()) < 1e-3
    inplace = x0.clone()
    for a in (mu, -2 * mu, mu):
        d.add_to([inplace], a)
    assert float((inplace != x0).double().mean()) > 0.3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_compensated_pair_accumulates_updates_the_weights_alone_lose(dtype):
    """1000 updates of 2e-7 (far below half a 16-bit ULP of ~0.02 weights): in place nothing moves, the pair
    holds their sum to a few percent (the float32 master's own rounding is of the same order here), and the
    sum is carried into the weights."""
    x0 = weights(4096, 6, dtype)
    x, c = x0.clone(), torch.zeros_like(x0, dtype=COMPENSATION_DTYPE)
    inplace = x0.clone()
    for _ in range(1000):
        store(x, compensated_value(x, c) + 2e-7, comp=c)
        store(inplace, inplace.float() + 2e-7)
    total = (compensated_value(x, c, torch.float64) - x0.double()) / 2e-4
    assert float((total - 1).abs().max()) < 0.05, (float(total.min()), float(total.max()))
    assert float((x != x0).double().mean()) > 0.9
    assert float(((inplace.double() - x0.double()) / 2e-4).mean()) < 0.05


def test_compensation_needs_16_bit_weights():
    with pytest.raises(ValueError, match="16-bit"):
        store(torch.zeros(3), torch.ones(3), comp=torch.zeros(3, dtype=COMPENSATION_DTYPE))


# ---------------------------------------------------------------------------- auto and the trainer
pytest.importorskip("transformers")
pytest.importorskip("peft")

from llm_experiments import trainer as trainer_module  # noqa: E402
from llm_experiments.cli import main as llm_main  # noqa: E402
from llm_experiments.config import TrainConfig  # noqa: E402
from llm_experiments.data import collate_candidates, encode_for_training  # noqa: E402
from llm_experiments.errors import UserError  # noqa: E402
from llm_experiments.models import split_parameters  # noqa: E402
from llm_experiments.precision import resolve_base_policy  # noqa: E402
from llm_experiments.scoring import lm_loss  # noqa: E402
from llm_experiments.tasks import get_task  # noqa: E402
from llm_experiments.testing import generate_task_examples, tiny_model, write_tiny_assets  # noqa: E402
from llm_experiments.trainer import LoopHooks, Trainer, train_loop  # noqa: E402

GB = 10 ** 9


def test_auto_rule_on_faked_sizes():
    n = 1_300_000_000                                  # OPT-1.3B: master 5.2 GB, buffer 2.6 GB
    assert resolve_base_policy("auto", BF16, n, True, 40 * GB)[0] == "float32"
    assert resolve_base_policy("auto", BF16, n, True, 6 * GB)[0] == "compensated"    # 5.2 > 0.75 * 6
    assert resolve_base_policy("auto", BF16, n, True, 3 * GB)[0] == "stochastic"     # 2.6 > 0.75 * 3
    assert resolve_base_policy("auto", BF16, n, True, None)[0] == "float32"
    assert resolve_base_policy("auto", torch.float32, n, True, 1)[0] == "none"
    assert resolve_base_policy("auto", BF16, n, False, 1)[0] == "none"
    assert resolve_base_policy("fp32", BF16, n, True, 1) == ("float32", "base_master=fp32 asked")
    with pytest.raises(UserError, match="base_master=stochastic"):
        TrainConfig(model="m", base_master="stochastic").validate()                  # a float32 model


@pytest.fixture(scope="module")
def encoded(tok):
    return encode_for_training(generate_task_examples("sst2", 16, seed=0), tok, get_task("sst2"), 64, objective="lm")


def make(tok, policy, steps=4, **overrides):
    cfg = TrainConfig(model="tiny", method="zo-full", dtype="bfloat16", base_master=policy, batch_size=8,
                      steps=steps, mu=1e-3, lr_base=1e-2, progress=False, **overrides).validate()
    model = tiny_model("opt", tok).to(BF16)
    return Trainer(model, split_parameters(model), cfg, n_train=16, device=torch.device("cpu"), loss_fn=lm_loss)


@pytest.mark.parametrize("free_per_param,expected", [(6, "float32"), (4, "compensated"), (2, "stochastic")])
def test_auto_in_the_trainer_follows_free_memory_and_logs_why(tok, monkeypatch, capsys, free_per_param, expected):
    """Free memory faked at 6, 4 and 2 bytes per base parameter: 75% of it holds the 4-byte master, only the
    2-byte buffer, nothing."""
    n = sum(p.numel() for p in split_parameters(tiny_model("opt", tok)).tensors("base"))
    monkeypatch.setattr(trainer_module, "free_memory_bytes", lambda device: free_per_param * n)
    tr = make(tok, "auto")
    g = tr.groups[0]
    assert tr.base_policy["policy"] == expected and tr.base_policy["asked"] == "auto"
    assert (g.mirrors is not None) == (expected == "float32")
    assert (g.compensation is not None) == (expected == "compensated")
    assert tr.zo.rounding == ("stochastic" if expected == "stochastic" else "nearest")
    err = capsys.readouterr().err
    assert err.count("base policy:") == 1 and f"base policy: {expected} (" in err


@pytest.mark.parametrize("policy", ["stochastic", "compensated"])
def test_policy_trains_finite_and_resumes_exactly(tok, encoded, tmp_path, policy):
    collate = lambda chunk: collate_candidates(chunk, tok.pad_token_id)  # noqa: E731
    straight = make(tok, policy)
    w0 = [p.detach().clone() for p in straight.groups[0].params]
    losses = []
    train_loop(straight, encoded, collate, LoopHooks(log=lambda m: losses.append(m["loss"])))
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(p, p0) for p, p0 in zip(straight.groups[0].params, w0))
    first = make(tok, policy, steps=2)
    train_loop(first, encoded, collate, LoopHooks())
    first.save_state(tmp_path / "state")
    second = make(tok, policy)
    second.load_state(tmp_path / "state")
    train_loop(second, encoded, collate, LoopHooks())
    assert all(torch.equal(a, b) for a, b in zip(straight.groups[0].params, second.groups[0].params))
    if policy == "compensated":
        assert all(torch.equal(a, b) for a, b in zip(straight.groups[0].compensation, second.groups[0].compensation))
        assert any(bool(c.any()) for c in straight.groups[0].compensation)
        assert all(c.dtype == COMPENSATION_DTYPE for c in straight.groups[0].compensation)


def test_run_json_records_the_decision(tok, tmp_path, monkeypatch):
    n = sum(p.numel() for p in split_parameters(tiny_model("opt", tok)).tensors("base"))
    monkeypatch.setattr(trainer_module, "free_memory_bytes", lambda device: 4 * n)
    root = write_tiny_assets(tmp_path / "assets", 16, 8)
    args = {"model": root / "model", "task": "sst2", "data": root / "data", "n_train": 8, "n_dev": 4, "n_eval": 4,
            "steps": 2, "batch_size": 4, "save_model": "none", "method": "zo-full", "dtype": "bfloat16",
            "output_dir": tmp_path / "run"}
    assert llm_main(["train", "--no-progress"] + [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]) == 0
    info = json.loads((Path(tmp_path) / "run" / "run.json").read_text())
    assert info["base_policy"]["policy"] == "compensated" and "fits in" in info["base_policy"]["reason"]


def test_resumed_auto_keeps_the_policy_its_start_chose(tok, tmp_path, monkeypatch, capsys):
    """More free memory at the resume (auto alone would now pick the fp32 master) must not change the arithmetic
    of a run that started under compensated: the resume keeps it, says so, and ends as the uninterrupted run."""
    from hybridtheory.io import SimulatedCrash, set_fault_hook

    n = sum(p.numel() for p in split_parameters(tiny_model("opt", tok)).tensors("base"))
    free = {"bytes": 4 * n}
    monkeypatch.setattr(trainer_module, "free_memory_bytes", lambda device: free["bytes"])
    root = write_tiny_assets(tmp_path / "assets", 16, 8)

    def args(out):
        values = {"model": root / "model", "task": "sst2", "data": root / "data", "n_train": 8, "n_dev": 4,
                  "n_eval": 4, "steps": 4, "eval_every": 2, "batch_size": 4, "save_model": "none",
                  "method": "zo-full", "dtype": "bfloat16", "lr_base": 1e-3, "output_dir": out}
        return ["train", "--no-progress"] + [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]

    assert llm_main(args(tmp_path / "straight")) == 0
    appended = []

    def crash_after_the_step_2_checkpoint(point):
        appended.append(point)
        if point == "metrics.jsonl:append" and appended.count(point) == 3:
            raise SimulatedCrash(point)

    set_fault_hook(crash_after_the_step_2_checkpoint)
    try:
        with pytest.raises(SimulatedCrash):
            llm_main(args(tmp_path / "cut"))
    finally:
        set_fault_hook(None)
    free["bytes"] = 10 ** 12
    capsys.readouterr()
    assert llm_main(args(tmp_path / "cut") + ["--resume"]) == 0
    info = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert info["resumed_at_step"] == 2 and info["base_policy"]["policy"] == "compensated"
    assert "kept from the run being resumed" in info["base_policy"]["reason"]
    assert "base policy: compensated (kept from the run being resumed" in capsys.readouterr().err

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert len(losses("straight")) == 4 and losses("cut") == losses("straight")
    assert (tmp_path / "cut" / "checkpoint" / "state").is_dir()
    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    b = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert (a["eval"], a["dev"], a["selected_step"]) == (b["eval"], b["dev"], b["selected_step"])


# ---------------------------------------------------------------------------- the Triton kernel of the stores
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (the gpu extra)")
@pytest.mark.parametrize("law", ["rademacher", "gaussian"])
def test_store_kernel_equals_eager(law, monkeypatch):
    """kernels.store16 (one pass: u and the rounding bits in registers, 16-bit weights as bit patterns) against
    the eager core path, for both policies and both 16-bit dtypes, with a shard offset, decay and a coefficient.
    Rademacher u is the same bits on both paths, so the stores agree bit for bit; Gaussian u differs by float32
    ulps of log/cos/sin, so a rare entry may round the other way. Under TRITON_INTERPRET=1 on CPU, or on CUDA."""
    from hybridtheory.algorithm import kernels
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    n, start = 1500, 300
    for dtype in (torch.bfloat16, torch.float16):
        for policy in ("stochastic", "compensated"):
            x0 = weights(n, 9, dtype)
            d = Direction(31, law, offsets=(start,))
            rseed = rounding_seed(31, 3) if policy == "stochastic" else None
            results = []
            for path, where in (("eager", "cpu"), ("kernel", device)):
                x = x0.clone().to(where)
                c = (torch.arange(n, dtype=torch.int32) * 37 % 20001 - 10000).to(COMPENSATION_DTYPE).to(where) \
                    if policy == "compensated" else None
                for alpha in (1e-3, -2e-3, 3e-5):      # a perturbation pass, its mirror, a restore + update
                    if path == "eager":
                        d.add_to([x], alpha, scale_first=[0.999], rounding_seed=rseed,
                                 compensation=None if c is None else [c])
                    else:
                        kernels.store16(x, c, d.key(0), start, law, alpha, keep=0.999,
                                        rkey=None if rseed is None else counter.tensor_key(rseed, 0))
                results.append((x.cpu(), None if c is None else c.cpu()))
            (xe, ce), (xk, ck) = results
            mismatch = float((xe != xk).double().mean())
            if law == "rademacher" and device == "cpu":
                assert mismatch == 0, (dtype, policy)
                assert ce is None or torch.equal(ce, ck)
            else:
                assert mismatch < 0.01, (dtype, policy, mismatch)
            assert not torch.equal(xk, x0)


def test_ranks_agree_on_the_most_frugal_choice(tok, monkeypatch):
    """auto in a distributed run: this rank's memory fits the master, another rank's only stochastic rounding:
    every rank stores alike, so this one takes stochastic too (a fake two-rank world: the vote's sums)."""
    from llm_experiments.distributed import World

    class OtherRankStochastic(World):
        def sum_scalar(self, value, kind):
            self.votes = getattr(self, "votes", 0) + 1
            return value + (1.0 if self.votes == 4 else 0.0)        # the 4th vote is "stochastic"

    monkeypatch.setattr(trainer_module, "free_memory_bytes", lambda device: 10 ** 12)
    cfg = TrainConfig(model="tiny", method="zo-full", dtype="bfloat16", batch_size=8, steps=1, progress=False).validate()
    model = tiny_model("opt", tok).to(BF16)
    tr = Trainer(model, split_parameters(model), cfg, n_train=16, device=torch.device("cpu"), loss_fn=lm_loss,
                 world=OtherRankStochastic(size=2))
    assert tr.base_policy["policy"] == "stochastic" and "another rank" in tr.base_policy["reason"]
    assert tr.zo.rounding == "stochastic" and tr.groups[0].mirrors is None
