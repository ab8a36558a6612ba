"""Step-size schedules, FO gradient clipping and MeZO's ZO weight decay in the LLM loop (tiny models)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from hybridtheory.algorithm import materialize_estimate, step_size_multiplier  # noqa: E402
from llm_experiments import trainer as trainer_module  # noqa: E402
from llm_experiments.config import TrainConfig  # noqa: E402
from llm_experiments.data import collate_candidates, encode_for_training  # noqa: E402
from llm_experiments.errors import UserError  # noqa: E402
from llm_experiments.models import attach_peft, no_decay_parameter_ids, split_parameters  # noqa: E402
from llm_experiments.scoring import classification_loss  # noqa: E402
from llm_experiments.tasks import get_task  # noqa: E402
from llm_experiments.testing import generate_task_examples, tiny_model  # noqa: E402
from llm_experiments.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.llm
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batch(tok):
    encoded = encode_for_training(generate_task_examples("sst2", 8, seed=0), tok, get_task("sst2"), 64)
    return collate_candidates(encoded, tok.pad_token_id)


def make(tok, method, arch="opt", **overrides):
    cfg = TrainConfig(model="tiny", method=method, peft="lora", batch_size=8, progress=False, **overrides).validate()
    model = tiny_model(arch, tok)
    if cfg.uses_peft:
        model = attach_peft(model, "lora")
    return model, Trainer(model, split_parameters(model), cfg, n_train=8, device=CPU, loss_fn=classification_loss)


# ---------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("total,warmup", [(10, 0), (10, 3), (7, 7), (5, 2)])
def test_linear_schedule_matches_transformers(total, warmup):
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    for t in range(total):
        assert step_size_multiplier("linear", t, total, warmup) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert all(step_size_multiplier("constant", t, total, warmup) == 1.0 for t in range(total))
    with pytest.raises(ValueError, match="unknown schedule"):
        step_size_multiplier("cosine", 0, total)


def test_every_block_follows_the_schedule_and_it_is_logged(tok, batch):
    _, tr = make(tok, "hybrid", lr_base=1e-4, lr_adapter=1e-2, fo_optimizer="adam", lr_schedule="linear",
                 warmup_steps=2, steps=6)
    for t in range(6):
        metrics = tr.step([batch])
        expected = step_size_multiplier("linear", t, 6, 2)
        assert metrics["lr_multiplier"] == pytest.approx(expected)
        assert metrics["lr"] == pytest.approx({"base": 1e-4 * expected, "adapter": 1e-2 * expected})
        assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * expected)  # Adam reads it too


def test_warmup_start_leaves_every_block_unchanged(tok, batch):
    model, tr = make(tok, "hybrid", lr_base=1e-3, lr_adapter=1e-1, lr_schedule="linear", warmup_steps=3, steps=6)
    before = [p.detach().clone() for g in tr.groups for p in g.params]
    tr.step([batch])  # multiplier 0 at update 0 of a warm-up (HF's convention)
    after = [p.detach() for g in tr.groups for p in g.params]
    assert max(float((a - b).abs().max()) for a, b in zip(before, after)) < 1e-6  # only restore rounding
    tr.step([batch])
    assert any(not torch.allclose(a, b) for a, b in zip(before, [p.detach() for g in tr.groups for p in g.params]))


def test_schedule_and_clipping_flags_are_checked():
    with pytest.raises(UserError, match="warmup_steps"):
        TrainConfig(model="m", warmup_steps=-1).validate()
    with pytest.raises(UserError, match="max_grad_norm"):
        TrainConfig(model="m", max_grad_norm=-1.0).validate()
    with pytest.raises(UserError, match="lr_schedule"):
        TrainConfig(model="m", lr_schedule="cosine").validate()


# ---------------------------------------------------------------------------- clipping
def test_fo_gradient_clipping_scales_the_sgd_step_to_the_max_norm(tok, batch):
    model, tr = make(tok, "fo-peft", lr_adapter=0.5, max_grad_norm=1e-3)
    adapter = tr.groups[0].params
    start = [p.detach().clone() for p in adapter]
    grads = torch.autograd.grad(classification_loss(model, batch), adapter)
    norm = float(torch.sqrt(sum(g.double().square().sum() for g in grads)))
    assert norm > 1e-3  # the clip binds
    metrics = tr.step([batch])
    assert metrics["fo_grad_norm"] == pytest.approx(norm, rel=1e-5) and metrics["fo_clipped"]
    scale = 1e-3 / (norm + 1e-6)
    for p, p0, g in zip(adapter, start, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * scale * g, rtol=1e-5, atol=1e-8)
    # a loose bound changes nothing and says so
    model, loose = make(tok, "fo-peft", lr_adapter=0.5, max_grad_norm=1e6)
    m = loose.step([batch])
    assert not m["fo_clipped"] and m["fo_grad_norm"] == pytest.approx(norm, rel=1e-5)


# ---------------------------------------------------------------------------- ZO weight decay
@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_decay_exclusions_are_mezos_biases_and_norm_weights(arch, tok):
    model = tiny_model(arch, tok)
    exempt = no_decay_parameter_ids(model)
    by_name = {id(p) for n, p in model.named_parameters() if "bias" in n or "norm" in n}  # MeZO's name rule
    assert exempt == by_name and exempt
    assert any("weight" in n for n, p in model.named_parameters() if id(p) in exempt)  # norm weights included


def test_zo_weight_decay_equals_a_hand_written_mezo_update(tok, batch, monkeypatch):
    lr, wd = 1e-3, 0.1
    model, tr = make(tok, "zo-full", lr_base=lr, zo_weight_decay=wd, base_master="float64")
    base = tr.groups[0].params  # the float64 master of the fp32 model
    start = [p.detach().clone() for p in base]
    captured = {}
    real_step = trainer_module.hybrid_step

    def spy(*args, **kwargs):
        captured["info"] = real_step(*args, **kwargs)
        return captured["info"]

    monkeypatch.setattr(trainer_module, "hybrid_step", spy)
    metrics = tr.step([batch])
    records = captured["info"].records
    g = materialize_estimate(start, records)  # c * u: the estimate at this step's direction
    exempt = no_decay_parameter_ids(model)
    names = {id(p): n for n, p in model.named_parameters()}
    model_tensors = split_parameters(model).tensors("base")
    decayed = 0
    for p, p0, gk, w in zip(base, start, g, model_tensors):
        keep = id(w) not in exempt
        # MeZO: theta <- theta - lr (c u + wd theta), skipping biases and norm weights
        hand = p0 - lr * (gk.to(p0.dtype) + (wd * p0 if keep else 0.0))
        torch.testing.assert_close(p.detach(), hand, rtol=1e-9, atol=1e-12, msg=names[id(w)])
        decayed += keep
    assert 0 < decayed < len(base)
    assert metrics["zo_decay"] == {"base": pytest.approx(lr * wd)}


# ---------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("method,overrides", [
    ("hybrid", dict(zo_difference="forward")), ("hybrid", dict(zo_difference="central")),
    ("hybrid", dict(fo_point="gauss_seidel", zo_difference="forward")), ("hybrid", dict(fo_point="perturbed")),
    ("fo-full", {}), ("fo-peft", {}), ("zo-full", dict(zo_queries=2)), ("zo-peft", dict(zo_difference="forward")),
])
def test_stated_budget_per_step_is_what_a_step_spends(tok, batch, method, overrides):
    from llm_experiments.trainer import passes_per_step

    _, tr = make(tok, method, **overrides)
    metrics = tr.step([batch])
    assert passes_per_step(tr.cfg) == (metrics["forwards"], metrics["backwards"])
