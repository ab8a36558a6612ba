"""Candidate scoring and evaluation against hand computations (offline, CPU, tiny models)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_experiments.data import collate_candidates, encode_for_training  # noqa: E402
from llm_experiments.evaluation import evaluate, majority_baseline, score_candidates  # noqa: E402
from llm_experiments.scoring import classification_loss  # noqa: E402
from llm_experiments.tasks import TASKS, Candidates  # noqa: E402
from llm_experiments.testing import TINY_ARCHITECTURES, generate_task_examples, tiny_model  # noqa: E402

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def models(tokenizer):
    return {arch: tiny_model(arch, tokenizer, seed=1) for arch in TINY_ARCHITECTURES}


def _hand_score(model, tokenizer, context: str, continuation: str) -> tuple[float, float]:
    """(sum, mean) log-prob of the continuation, from the model's logits on one unpadded sequence.

    Written independently of the package: the tiny tokenizer prepends <s>, " word" after a context without
    trailing space is its own token, so ids(context) + ids(continuation) is the joint encoding.
    """
    ctx = tokenizer(context)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total = 0.0
    for k, token in enumerate(cont):
        position = len(ctx) + k  # the token's index; its prediction comes from position - 1
        total += float(torch.log_softmax(logits[position - 1], dim=-1)[token])
    return total, total / len(cont)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_candidate_scores_match_a_hand_computation(arch, models, tokenizer):
    model = models[arch]
    request = Candidates(
        contexts=("Kozis benfe Landun because Kozis", "Kozis benfe Landun because Landun", "Zerfas It was"),
        continuations=(" was nirpur.", " was nirpur.", " great"),
        label=0,
    )
    means = score_candidates(model, tokenizer, [request], reduction="mean")[0]
    sums = score_candidates(model, tokenizer, [request], reduction="sum")[0]
    for k in range(3):
        hand_sum, hand_mean = _hand_score(model, tokenizer, request.contexts[k], request.continuations[k])
        assert sums[k] == pytest.approx(hand_sum, abs=1e-5)
        assert means[k] == pytest.approx(hand_mean, abs=1e-5)
    assert sums[2] == pytest.approx(means[2])  # one-token continuation
    assert sums[0] == pytest.approx(3 * means[0], abs=1e-5)  # " was nirpur." is three tokens


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
@pytest.mark.parametrize("task", ["sst2", "winogrande", "copa"])
def test_batched_scoring_equals_one_at_a_time(arch, task, models, tokenizer):
    model = models[arch]
    requests = [TASKS[task].render(row) for row in generate_task_examples(task, 9, seed=2)]
    batched = score_candidates(model, tokenizer, requests, batch_size=4)
    single = score_candidates(model, tokenizer, requests, batch_size=1)
    assert len(batched) == 9 and all(len(row) == 2 for row in batched)
    for b_row, s_row in zip(batched, single):
        assert b_row == pytest.approx(s_row, abs=1e-5)


def test_one_padded_forward_per_batch(models, tokenizer):
    model = models["opt"]
    calls = []
    handle = model.register_forward_hook(lambda module, args, kwargs_out: calls.append(1))
    try:
        requests = [TASKS["sst2"].render(row) for row in generate_task_examples("sst2", 10, seed=0)]
        score_candidates(model, tokenizer, requests, batch_size=4)
    finally:
        handle.remove()
    assert len(calls) == 3  # ceil(10 / 4) forwards, each holding all candidates of its examples


def test_evaluate_counts_and_majority_baseline(models, tokenizer):
    model = models["llama"]
    spec = TASKS["sst2"]
    rows = generate_task_examples("sst2", 23, seed=4)
    result = evaluate(model, tokenizer, spec, rows, batch_size=5, return_predictions=True)
    gold = [spec.label_index(r) for r in rows]
    n_pos = sum(gold)
    assert result["n"] == 23
    assert result["gold_counts"] == {"0": 23 - n_pos, "1": n_pos}
    assert result["majority_baseline"] == pytest.approx(max(n_pos, 23 - n_pos) / 23)
    predictions = result["predictions"]
    for row_scores, prediction in zip(result["scores"], predictions):
        assert row_scores[prediction] == max(row_scores)
    correct = sum(p == g for p, g in zip(predictions, gold))
    assert result["accuracy"] == pytest.approx(correct / 23)
    assert sum(result["correct_counts"].values()) == correct
    assert sum(result["predicted_counts"].values()) == 23
    assert result["scoring"] == "label_words" and result["reduction"] == "mean"


def test_majority_baseline_helper():
    assert majority_baseline([1, 1, 0]) == (pytest.approx(2 / 3), 1)
    assert majority_baseline([0, 1]) == (0.5, 0)  # ties go to the smaller label
    value, label = majority_baseline([])
    assert math.isnan(value) and label is None


def test_evaluate_restores_modes_and_leaves_no_gradients(tokenizer):
    model = tiny_model("opt", tokenizer, seed=0, dropout=0.1)
    model.train()
    model.model.decoder.layers[0].eval()  # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    rows = generate_task_examples("wsc", 6, seed=0)
    first = evaluate(model, tokenizer, TASKS["wsc"], rows, return_predictions=True)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    second = evaluate(model, tokenizer, TASKS["wsc"], rows, return_predictions=True)
    assert first["scores"] == second["scores"]  # dropout was off while scoring


@pytest.mark.parametrize("kind", ["lora", "ia3", "prefix", "prompt"])
def test_scoring_peft_models_batched_equals_single(kind, tokenizer):
    peft = pytest.importorskip("peft")
    configs = {
        "lora": lambda: peft.LoraConfig(task_type=peft.TaskType.CAUSAL_LM, r=4, lora_alpha=8),
        "ia3": lambda: peft.IA3Config(task_type=peft.TaskType.CAUSAL_LM),
        "prefix": lambda: peft.PrefixTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=3),
        "prompt": lambda: peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=3),
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # peft's adapter init uses the global RNG; keep the caller's state
        model = peft.get_peft_model(tiny_model("llama", tokenizer, seed=0), configs[kind]())
    requests = [TASKS["winogrande"].render(r) for r in generate_task_examples("winogrande", 6, seed=1)]
    batched = score_candidates(model, tokenizer, requests, batch_size=3)
    single = score_candidates(model, tokenizer, requests, batch_size=1)
    for b_row, s_row in zip(batched, single):
        assert b_row == pytest.approx(s_row, abs=1e-5)
        assert all(math.isfinite(s) and s < 0 for s in b_row)


def test_training_on_the_encoded_answers_raises_eval_accuracy(tokenizer):
    """End to end through encode_for_training -> loss -> evaluate: the scoring sees what training taught."""
    spec = TASKS["sst2"]
    model = tiny_model("opt", tokenizer, seed=0)
    train = generate_task_examples("sst2", 128, seed=10)
    test = generate_task_examples("sst2", 60, seed=11)
    before = evaluate(model, tokenizer, spec, test, batch_size=16)
    encoded = encode_for_training(train, tokenizer, spec, max_length=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(12):  # epochs of random reshuffling
        order = torch.randperm(len(encoded), generator=generator).tolist()
        for start in range(0, len(order), 16):
            batch = collate_candidates([encoded[i] for i in order[start : start + 16]], tokenizer.pad_token_id)
            loss = classification_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = evaluate(model, tokenizer, spec, test, batch_size=16)
    assert model.training  # evaluate restored train mode
    assert after["accuracy"] >= 0.9, (before, after)
    assert after["accuracy"] > after["majority_baseline"] + 0.2


@pytest.mark.parametrize("kind", [None, "prompt", "prefix"])
def test_inputs_longer_than_the_position_table_are_cut_from_the_left(kind, tokenizer):
    peft = pytest.importorskip("peft")
    model = tiny_model("gpt2", tokenizer, seed=0)  # learned positions: 256 slots, a hard limit
    if kind is not None:
        config_cls = peft.PromptTuningConfig if kind == "prompt" else peft.PrefixTuningConfig
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = peft.get_peft_model(model, config_cls(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=5))
    long_context = " ".join(["zorba"] * 400) + " It was"
    request = Candidates((long_context,) * 2, (" terrible", " great"), 0)
    scores = score_candidates(model, tokenizer, [request], max_length=10_000)[0]
    assert all(math.isfinite(s) for s in scores)
