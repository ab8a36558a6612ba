"""Training side of llm_experiments on tiny random models of real architectures (offline, CPU).

What is checked: the structural base/adapter split (tied weights once) for every PEFT kind; hybrid with
ZO step size 0 reproduces fo-peft exactly; ZO touches only the base and FO only the adapter; perturb/restore
regenerates the same direction and the restore drift per dtype (with and without the fp32 master); the ZO
coefficient equals the directional derivative; micro-batch accumulation equals replaying averaged records;
each example once per epoch; every method's training loss falls; resuming is exact; 16-bit ZO updates do not
round away with the master.
"""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from hybridtheory.algorithm import ZORecord, ZOSettings, apply_zo_update, zo_coefficients  # noqa: E402
from llm_experiments.config import TrainConfig  # noqa: E402
from llm_experiments.data import collate_candidates, encode_for_training  # noqa: E402
from llm_experiments.scoring import lm_loss  # noqa: E402
from llm_experiments.models import attach_peft, split_parameters  # noqa: E402
from llm_experiments.tasks import get_task  # noqa: E402
from llm_experiments.testing import generate_task_examples, tiny_model  # noqa: E402
from llm_experiments.trainer import LoopHooks, ModelOracle, PhaseClock, Trainer, train_loop  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoded(tok):
    # LM objective on the gold label word (one-token continuations: one row per example)
    return encode_for_training(generate_task_examples("sst2", 48, seed=0), tok, get_task("sst2"), 64, objective="lm")


def make(tok, arch="opt", method="hybrid", peft="lora", **overrides):
    """Model (+peft), split and trainer for a method, with test-sized defaults."""
    settings = dict(batch_size=8, steps=4, mu=1e-3, progress=False) | overrides
    cfg = TrainConfig(model="tiny", method=method, peft=peft, **settings).validate()
    model = tiny_model(arch, tok)
    if cfg.uses_peft:
        model = attach_peft(model, cfg.peft)
    return model, Trainer(model, split_parameters(model), cfg, n_train=48, device=CPU, loss_fn=lm_loss)


def run(trainer, encoded, tok):
    train_loop(trainer, encoded, lambda chunk: collate_candidates(chunk, tok.pad_token_id), LoopHooks())


def batch_of(encoded, tok, idx):
    return collate_candidates([encoded[i] for i in idx], tok.pad_token_id)


def clone_all(params):
    return [p.detach().clone() for p in params]


# ---------------------------------------------------------------------------- split
@pytest.mark.parametrize("arch", ["opt", "llama", "gpt2"])
@pytest.mark.parametrize("kind", ["lora", "ia3", "prefix", "prompt"])
def test_structural_split_matches_peft_trainable_set(tok, arch, kind):
    model = attach_peft(tiny_model(arch, tok), kind)
    split = split_parameters(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}  # peft's own marking after get_peft_model
    adapter = {id(p) for _, p in split.adapter}
    base = {id(p) for _, p in split.base}
    assert adapter == trainable and adapter
    assert not adapter & base
    assert len(base) + len(adapter) == len({p.untyped_storage().data_ptr() for p in model.parameters()})


def test_tied_weights_appear_once(tok):
    model = tiny_model("opt", tok)
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight  # OPT ties the head
    split = split_parameters(attach_peft(model, "lora"))
    embed = model.model.decoder.embed_tokens.weight
    assert sum(p is embed for _, p in split.base) == 1
    assert len(list(model.named_parameters(remove_duplicate=False))) > len(split.base) + len(split.adapter)


# ---------------------------------------------------------------------------- block roles
def _adapter_gap(tok, encoded, lr_base, master="none"):
    _, fo = make(tok, method="fo-peft", lr_adapter=1e-1)
    _, hy = make(tok, method="hybrid", lr_adapter=1e-1, lr_base=lr_base, base_master=master)
    run(fo, encoded, tok)
    run(hy, encoded, tok)
    fo_adapter = [g for g in fo.groups if g.name == "adapter"][0].params
    hy_adapter = [g for g in hy.groups if g.name == "adapter"][0].params
    return max(float((a - b).abs().max()) for a, b in zip(fo_adapter, hy_adapter))


def test_hybrid_with_zo_lr_zero_reproduces_fo_peft(tok, encoded):
    """Same seed, ZO step size 0: the FO block follows fo-peft. Bit-equality is out of reach because the
    in-place +mu u, -2 mu u, +mu u cycle is not exact in floating point (fused multiply-adds leave ~1e-19
    even on zero biases, measured), so the base differs by that drift; the gap must stay at rounding level
    and far below the effect of a real ZO step. With a float64 master of the fp32 base (restore drift below
    fp32 resolution) the FO block is bit-identical to fo-peft."""
    gap0 = _adapter_gap(tok, encoded, 0.0)
    gap0_master = _adapter_gap(tok, encoded, 0.0, master="float64")
    gap_zo = _adapter_gap(tok, encoded, 1e-3)
    assert gap0_master == 0.0  # measured: with the float64 master the FO block is bit-identical to fo-peft
    assert gap0 < 1e-7
    assert gap_zo > 1e3 * max(gap0, gap0_master, 1e-12)


def test_zo_moves_only_base_and_fo_only_adapter(tok, encoded):
    model, tr = make(tok, method="hybrid", lr_base=1e-3, lr_adapter=0.0)
    split = split_parameters(model)
    base0, adapter0 = clone_all(split.tensors("base")), clone_all(split.tensors("adapter"))
    run(tr, encoded, tok)
    assert all(torch.equal(a, b) for a, b in zip(adapter0, split.tensors("adapter")))  # FO lr 0: untouched
    assert all(not p.requires_grad and p.grad is None for p in split.tensors("base"))   # no autograd on the base
    moved = [not torch.equal(a, b) for a, b in zip(base0, split.tensors("base"))]
    assert all(moved)  # a Gaussian direction moves every base tensor

    model, tr = make(tok, method="hybrid", lr_base=0.0, lr_adapter=1e-1, base_master="float64")
    split = split_parameters(model)
    base0, adapter0 = clone_all(split.tensors("base")), clone_all(split.tensors("adapter"))
    run(tr, encoded, tok)
    # ZO lr 0: the base only carries the float64 master's restore drift (~1e-19, on zero-initialised biases)
    assert max(float((a - b).abs().max()) for a, b in zip(base0, split.tensors("base"))) < 1e-15
    assert any(not torch.equal(a, b) for a, b in zip(adapter0, split.tensors("adapter")))


# ---------------------------------------------------------------------------- ZO estimator on a model
def test_perturb_restore_regenerates_the_same_direction(tok):
    model, tr = make(tok, method="zo-full")
    block = tr.groups[0].params
    x0 = clone_all(block)
    d = tr.zo.direction(step_seed=123, query=0)
    u1, u2 = d.materialize(block), d.materialize(block)
    assert all(torch.equal(a, b) for a, b in zip(u1, u2))
    mu = 1e-2
    d.add_to(block, mu)
    for p, p0, u in zip(block, x0, u1):  # the applied perturbation is mu * (the regenerated u)
        torch.testing.assert_close((p - p0) / mu, u, atol=2e-4, rtol=0)
    d.add_to(block, -mu)
    drift = max(float((p - p0).abs().max()) for p, p0 in zip(block, x0))
    assert drift <= 4 * torch.finfo(torch.float32).eps * max(float(p0.abs().max()) for p0 in x0) + 1e-9


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_restore_drift_per_dtype_with_and_without_master(tok, dtype):
    """+mu u, -2 mu u, +mu u: measure the drift of the model's weights , with master 'none'
    (16-bit weights perturbed in place) and 'auto' (fp32 master for 16-bit models)."""
    zo = ZOSettings(mu=1e-3, law="gaussian")
    drift = {}
    for master in ("none", "auto"):
        model, tr = make(tok, method="zo-full", dtype=dtype, base_master=master)
        model.to(getattr(torch, dtype))
        tr = Trainer(model, split_parameters(model), tr.cfg, n_train=48, device=CPU, loss_fn=lm_loss)
        weights = split_parameters(model).tensors("base")
        x0 = clone_all(weights)
        d = zo.direction(7, 0)
        block = tr.groups[0].params
        for a in (zo.mu, -2 * zo.mu, zo.mu):
            d.add_to(block, a)
            tr.sync_master()
        changed = sum(int((w != w0).sum()) for w, w0 in zip(weights, x0)) / sum(w.numel() for w in weights)
        drift[master] = (changed, max(float((w.float() - w0.float()).abs().max()) for w, w0 in zip(weights, x0)))
    if dtype == "float32":
        assert drift["none"][1] < 1e-6        # fp32: a few ULPs
        assert drift["auto"] == drift["none"]  # auto = no master for fp32
    else:
        assert drift["none"][0] > 0.05        # 16-bit in place: a large fraction of weights changed (5-50%)
        # fp32 master: only entries that were exactly 0 (biases) may carry fp32-sized residue (~1e-19)
        # and entries far below the weights' scale: drift <= fp32 resolution of mu*u (~1e-10), vs ~1e-2 in place
        assert drift["auto"][1] < 1e-8 and drift["none"][1] > 1e-4


def loss64(model, batch):
    """The answer-token loss of a float64 model, in float64 (the scoring keeps float64 logits)."""
    loss = lm_loss(model, batch)
    assert loss.dtype == torch.float64
    return loss


def test_projected_gradient_matches_directional_derivative(tok, encoded):
    model, tr = make(tok, method="zo-full")
    model.double()
    block = split_parameters(model).tensors("base")
    oracle = ModelOracle(model, [batch_of(encoded, tok, range(8))], False, lambda: None, PhaseClock(CPU), loss64)
    # central difference: truncation O(mu^2 |u|^3) with |u|^2 ~ d = 3e4, rounding O(eps f / mu): mu = 1e-7
    zo = ZOSettings(mu=1e-7, law="gaussian", difference="central")
    (record,) = zo_coefficients(block, oracle.loss, zo, step_seed=11)
    u = record.direction.materialize(block)
    for p in block:
        p.requires_grad_(True)
    grads = torch.autograd.grad(loss64(model, batch_of(encoded, tok, range(8))), block)
    directional = sum(float((g * v).sum()) for g, v in zip(grads, u))
    assert math.isclose(float(record.coeff), directional, rel_tol=1e-6, abs_tol=1e-9)


def test_micro_batch_accumulation_equals_replaying_averaged_records(tok, encoded):
    model, tr = make(tok, method="zo-full")
    model.double()
    block = split_parameters(model).tensors("base")
    micro = [batch_of(encoded, tok, range(0, 4)), batch_of(encoded, tok, range(4, 8))]
    zo = ZOSettings(mu=1e-4, law="gaussian", difference="central", queries=2)
    clock = PhaseClock(CPU)
    joint = zo_coefficients(block, ModelOracle(model, micro, False, lambda: None, clock, loss64).loss, zo, step_seed=5)
    parts = [zo_coefficients(block, ModelOracle(model, [mb], False, lambda: None, clock, loss64).loss, zo, step_seed=5)
             for mb in micro]
    for k, rec in enumerate(joint):
        averaged = (parts[0][k].coeff + parts[1][k].coeff) / 2
        assert math.isclose(float(rec.coeff), float(averaged), rel_tol=1e-9, abs_tol=1e-12)
    # replaying the averaged records = the update the trainer's joint oracle makes
    x0 = clone_all(block)
    apply_zo_update(block, joint, [1e-3] * len(block))
    joint_update = [p - p0 for p, p0 in zip(block, x0)]
    for p, p0 in zip(block, x0):
        p.copy_(p0)
    for rec, a, b in zip(parts[0], parts[0], parts[1]):
        rec.coeff = (a.coeff + b.coeff) / 2
    apply_zo_update(block, parts[0], [1e-3] * len(block))
    for p, p0, du in zip(block, x0, joint_update):
        torch.testing.assert_close(p - p0, du, rtol=1e-7, atol=1e-13)  # ~1e-15 of float64 summation order


# ---------------------------------------------------------------------------- data order
@pytest.mark.parametrize("n,bs", [(10, 4), (48, 8)])
def test_every_example_once_per_epoch(tok, n, bs):
    _, tr = make(tok, method="fo-peft", batch_size=bs)
    tr.sampler = type(tr.sampler)(n=n, seed=3)
    epochs = []
    for _ in range(3):
        seen = []
        start_epoch = tr.state.epoch
        while tr.state.epoch == start_epoch:
            seen += tr.next_indices(bs)
        epochs.append(seen)
        assert sorted(seen) == list(range(n))
    assert epochs[0] != epochs[1]  # a fresh permutation each epoch


# ---------------------------------------------------------------------------- learning
CASES = [  # (arch, method, peft, overrides) -- step sizes found by a small sweep; each must cut the loss
    ("opt", "fo-full", "lora", dict(lr_base=1e-1)),
    ("opt", "fo-peft", "lora", dict(lr_adapter=3e-2, fo_optimizer="adam")),
    ("opt", "zo-full", "lora", dict(lr_base=1e-3, zo_queries=2)),
    ("llama", "zo-peft", "lora", dict(lr_adapter=3e-2)),
    ("llama", "hybrid", "lora", dict(lr_base=1e-3, lr_adapter=3e-2, fo_optimizer="adam")),
    ("llama", "hybrid", "prefix", dict(lr_base=1e-3, lr_adapter=1e-1, fo_optimizer="adam", zo_difference="forward")),
    ("gpt2", "fo-peft", "ia3", dict(lr_adapter=1e-1, fo_optimizer="adam")),
    ("opt", "fo-peft", "prompt", dict(lr_adapter=1e-1, fo_optimizer="adam", micro_batches=2)),
    ("opt", "hybrid", "lora", dict(lr_base=1e-4, lr_adapter=3e-2, fo_optimizer="adam", fo_point="gauss_seidel")),
    ("opt", "hybrid", "lora", dict(lr_base=1e-4, lr_adapter=3e-2, fo_optimizer="adam", fo_point="perturbed")),
    ("opt", "hybrid", "lora", dict(lr_base=1e-4, lr_adapter=3e-2, fo_optimizer="adam", zo_law="sphere",
                                   sampling="replacement", zo_queries=2)),
]


@pytest.mark.parametrize("arch,method,peft,overrides", CASES, ids=[f"{a}-{m}-{p}-{i}" for i, (a, m, p, _) in enumerate(CASES)])
def test_training_loss_falls(tok, encoded, arch, method, peft, overrides):
    model, tr = make(tok, arch=arch, method=method, peft=peft, **{"steps": 24, **overrides})
    full = batch_of(encoded, tok, range(len(encoded)))

    def full_loss():
        with torch.no_grad():
            model.eval()
            return float(lm_loss(model, full))

    before = full_loss()
    run(tr, encoded, tok)
    after = full_loss()
    assert after < before - 0.1, (before, after)


# ---------------------------------------------------------------------------- resumable state
def test_resume_is_exact(tok, encoded, tmp_path):
    _, straight = make(tok, method="hybrid", steps=4, lr_base=1e-3, lr_adapter=1e-2, fo_optimizer="adam")
    run(straight, encoded, tok)
    _, first = make(tok, method="hybrid", steps=2, lr_base=1e-3, lr_adapter=1e-2, fo_optimizer="adam")
    run(first, encoded, tok)
    first.save_state(tmp_path / "state")
    _, second = make(tok, method="hybrid", steps=4, lr_base=1e-3, lr_adapter=1e-2, fo_optimizer="adam")
    second.load_state(tmp_path / "state")
    assert second.state.step == 2
    run(second, encoded, tok)
    for g_a, g_b in zip(straight.groups, second.groups):
        assert all(torch.equal(a, b) for a, b in zip(g_a.params, g_b.params))
    assert straight.state == second.state or straight.state.step == second.state.step == 4


# ---------------------------------------------------------------------------- 16-bit updates
def test_tiny_zo_updates_accumulate_in_the_master_not_round_away(tok, encoded):
    """A MeZO-sized update (lr 1e-7) is below the bf16 ULP of most weights: in place it rounds away,
    in the fp32 master it is kept."""
    results = {}
    for master in ("none", "auto"):
        model, tr = make(tok, method="zo-full", dtype="bfloat16", base_master=master)
        model.to(torch.bfloat16)
        tr = Trainer(model, split_parameters(model), tr.cfg, n_train=48, device=CPU, loss_fn=lm_loss)
        block = tr.groups[0].params
        x0 = clone_all(block)
        zo = ZOSettings(mu=1e-3, law="gaussian")
        d = zo.direction(3, 0)
        apply_zo_update(block, [ZORecord(d, torch.tensor(1.0))], [1e-7] * len(block))
        changed = sum(int((p != p0).sum()) for p, p0 in zip(block, x0)) / sum(p.numel() for p in block)
        results[master] = changed
    assert results["none"] < 0.05   # almost every bf16 weight ignores the update
    assert results["auto"] > 0.95   # the fp32 master records it


# ---------------------------------------------------------------------------- per-phase memory accounting
def test_phase_clock_folds_peaks_across_resets(monkeypatch):
    """CUDA peak bookkeeping with a fake allocator: each phase's own peak, and the step peak including the
    work between phases (perturbations, ZO update), not the work before the step (evaluation)."""
    fake = {"peak": 0.0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: fake.update(peak=10 * 2**20))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: fake["peak"])
    clock = PhaseClock(torch.device("cuda"), detail=True)
    fake["peak"] = 900 * 2**20   # an evaluation before the step
    clock.start()
    with clock.phase("zo_forward"):
        fake["peak"] = 100 * 2**20
    fake["peak"] = 300 * 2**20   # perturbation pass between phases
    with clock.phase("fo_forward_backward"):
        fake["peak"] = 200 * 2**20
    _, peaks = clock.take()
    assert peaks == {"zo_forward": 100.0, "fo_forward_backward": 200.0, "step": 300.0}


def test_phase_clock_without_detail_never_synchronises(monkeypatch):
    """Default on CUDA: no synchronisation inside the step, no per-phase entries, the step's peak read at its end."""
    fake = {"peak": 0.0}

    def no_sync():
        raise AssertionError("synchronised inside a step")
    monkeypatch.setattr(torch.cuda, "synchronize", no_sync)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: fake.update(peak=10 * 2**20))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: fake["peak"])
    clock = PhaseClock(torch.device("cuda"))
    fake["peak"] = 900 * 2**20
    clock.start()
    with clock.phase("zo_forward"):
        fake["peak"] = 100 * 2**20
    fake["peak"] = 300 * 2**20
    assert clock.stop() >= 0
    times, peaks = clock.take()
    assert times == {} and peaks == {"step": 300.0}
