"""Protocol fidelity (issue 7): objectives, exact candidate tokens, WinoGrande scoring modes, the start-up
candidate check, and the fast evaluation path against the reference path. Tiny random models, generated data."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_experiments.data import collate_candidates, encode_candidates, encode_for_training  # noqa: E402
from llm_experiments.errors import UserError  # noqa: E402
from llm_experiments.evaluation import evaluate, score_candidates  # noqa: E402
from llm_experiments.scoring import candidate_logprobs, classification_loss, lm_loss  # noqa: E402
from llm_experiments.tasks import TASKS, Candidates, get_task, resolve_objective  # noqa: E402
from llm_experiments.testing import generate_task_examples, tiny_model, tiny_tokenizer  # noqa: E402

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model("opt", tokenizer, seed=3)


def _token_logprobs(model, ids: list[int], scored_from: int) -> list[float]:
    """log p(ids[t] | ids[:t]) for t >= scored_from, from one unpadded forward in float64 (independent of the
    package's scoring code)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return [float(torch.log_softmax(logits[t - 1], -1)[ids[t]]) for t in range(scored_from, len(ids))]


def _hand_ids(tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """bos + ids(context) + ids(continuation); the tiny BPE tokenizer splits before a space or newline, so the
    two encodings concatenate to the joint one (checked in the tests that use it)."""
    ctx = tokenizer(context)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    assert tokenizer(context + continuation)["input_ids"] == ctx + cont
    return ctx + cont, len(ctx)


# ------------------------------------------------------------------------------------------ objectives
def test_published_objective_per_task():
    assert {name: spec.objective for name, spec in TASKS.items()} == {
        "sst2": "classification", "wsc": "classification", "rte": "classification", "boolq": "classification",
        "winogrande": "lm", "copa": "lm"}
    assert resolve_objective(TASKS["sst2"], "auto") == "classification"
    assert resolve_objective(TASKS["winogrande"], "classification") == "classification"
    with pytest.raises(UserError, match="unknown objective 'mse'"):
        resolve_objective(TASKS["sst2"], "mse")


@pytest.mark.parametrize("task", ["sst2", "winogrande"])
def test_classification_loss_is_the_cross_entropy_over_candidate_mean_loglikelihoods(task, model, tokenizer):
    spec = TASKS[task]
    rows = generate_task_examples(task, 5, seed=7)
    batch = collate_candidates(encode_for_training(rows, tokenizer, spec, 64, objective="classification"),
                               tokenizer.pad_token_id)
    loss = classification_loss(model, batch)
    hand = []
    for row in rows:
        cand = spec.render(row)
        means = []
        for context, continuation in zip(cand.contexts, cand.continuations):
            ids, start = _hand_ids(tokenizer, context, continuation)
            lp = _token_logprobs(model, ids, start)
            means.append(sum(lp) / len(lp))
        log_z = math.log(sum(math.exp(m) for m in means))
        hand.append(log_z - means[cand.label])  # -log softmax(means)[gold]
    assert float(loss) == pytest.approx(sum(hand) / len(hand), abs=1e-5)


def test_lm_loss_is_the_token_mean_nll_of_the_gold_continuation(model, tokenizer):
    spec = TASKS["winogrande"]
    rows = generate_task_examples("winogrande", 4, seed=8)
    encoded = encode_for_training(rows, tokenizer, spec, 64, objective="lm")
    loss = lm_loss(model, collate_candidates(encoded, tokenizer.pad_token_id))
    total, count = 0.0, 0
    labels_rows, id_rows = [], []
    for row in rows:
        cand = spec.render(row)
        ids, start = _hand_ids(tokenizer, cand.contexts[cand.label], cand.continuations[cand.label])
        lp = _token_logprobs(model, ids, start)
        total, count = total - sum(lp), count + len(lp)
        id_rows.append(ids)
        labels_rows.append([-100] * start + ids[start:])
    assert float(loss) == pytest.approx(total / count, abs=1e-5)
    # the same number as HF's causal-LM loss with the prompt masked (MeZO/ZO-Bench's non-cls training)
    width = max(map(len, id_rows))
    input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in id_rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in labels_rows])
    with torch.no_grad():
        hf = model(input_ids=input_ids, attention_mask=(labels != -100) | (input_ids != tokenizer.pad_token_id),
                   labels=labels).loss
    assert float(loss) == pytest.approx(float(hf), abs=1e-5)


def test_training_and_evaluation_share_the_scoring(model, tokenizer):
    spec = TASKS["wsc"]
    rows = generate_task_examples("wsc", 3, seed=1)
    encoded = encode_for_training(rows, tokenizer, spec, 64, objective="classification")
    with torch.no_grad():
        sums, counts = candidate_logprobs(model, collate_candidates(encoded, tokenizer.pad_token_id))
    scores = score_candidates(model, tokenizer, [spec.render(r) for r in rows], max_length=64)
    assert (sums / counts).tolist() == pytest.approx([s for row in scores for s in row], abs=1e-6)


# ------------------------------------------------------------------------------------------ WinoGrande
SENTENCE = {"sentence": "Kozis benfe Landun because _ was nirpur.", "option1": "Kozis", "option2": "Landun",
            "answer": "2"}


def test_winogrande_zo_bench_scoring_against_a_hand_computed_example(model, tokenizer):
    cand = get_task("winogrande").render(SENTENCE)  # default: ZO-Bench
    assert cand.contexts == ("Kozis benfe Landun because",) * 2
    assert cand.continuations == (" Kozis was nirpur.", " Landun was nirpur.")
    scores = score_candidates(model, tokenizer, [cand])[0]
    for k in range(2):
        ids, start = _hand_ids(tokenizer, "Kozis benfe Landun because", cand.continuations[k])
        lp = _token_logprobs(model, ids, start)
        assert len(lp) == 4  # " Kozis|Landun", " was", " nirpur", ".": the option is scored too
        assert scores[k] == pytest.approx(sum(lp) / len(lp), abs=1e-5)
    # trained the same way: the LM objective scores the gold option + suffix
    (enc,) = encode_for_training([SENTENCE], tokenizer, get_task("winogrande"), 64)
    assert tokenizer.decode(list(enc.continuations[0])) == " Landun was nirpur."


def test_winogrande_partial_scoring_against_a_hand_computed_example(model, tokenizer):
    spec = get_task("winogrande", winogrande_scoring="partial")
    cand = spec.render(SENTENCE)
    assert cand.contexts == ("Kozis benfe Landun because Kozis", "Kozis benfe Landun because Landun")
    assert cand.continuations == (" was nirpur.",) * 2
    scores = score_candidates(model, tokenizer, [cand])[0]
    for k in range(2):
        ids, start = _hand_ids(tokenizer, cand.contexts[k], " was nirpur.")
        lp = _token_logprobs(model, ids, start)
        assert scores[k] == pytest.approx(sum(lp) / len(lp), abs=1e-5)
    with pytest.raises(UserError, match="winogrande_scoring"):
        get_task("winogrande", winogrande_scoring="full")


# ------------------------------------------------------------------------------------------ exact tokens
@pytest.fixture(scope="module")
def prefix_space_tokenizer():
    """The tiny byte-level BPE with add_prefix_space=True: a lone string gets a leading space, as LLaMA's
    sentencepiece does, so "No" encoded on its own is " No"; the candidate must still be the bare "No"."""
    from tokenizers import pre_tokenizers

    tok = tiny_tokenizer()
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert tok("No", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("ĠNo")]
    return tok


@pytest.mark.parametrize("task,expected", [
    ("sst2", (["Ġterrible"], ["Ġgreat"])),
    ("wsc", (["No"], ["Yes"])),            # after the prompt's newline: the bare words, one token each
    ("rte", (["Yes"], ["No"])),
    ("boolq", (["ĠNo"], ["ĠYes"])),
])
def test_label_word_token_ids_on_a_prefix_space_bpe(task, expected, prefix_space_tokenizer):
    tok = prefix_space_tokenizer
    spec = TASKS[task]
    for row in generate_task_examples(task, 3, seed=0):
        enc = encode_candidates(spec.render(row), tok, 256, spec)
        assert [list(c) for c in enc.continuations] == [tok.convert_tokens_to_ids(t) for t in expected]
        if task in ("wsc", "rte"):
            assert all(ctx[-1] == tok.convert_tokens_to_ids("Ċ") for ctx in enc.contexts)  # newline stays in the prompt


@pytest.mark.parametrize("task", ["winogrande", "copa"])
def test_choice_token_ids_on_a_prefix_space_bpe(task, prefix_space_tokenizer):
    tok = prefix_space_tokenizer
    spec = TASKS[task]
    for row in generate_task_examples(task, 3, seed=0):
        cand = spec.render(row)
        enc = encode_candidates(cand, tok, 256, spec)
        for k in range(2):
            assert tok.decode(list(enc.continuations[k])) == cand.continuations[k]
            first = cand.continuations[k].split()[0]
            assert enc.continuations[k][0] == tok.convert_tokens_to_ids("Ġ" + first)


def test_label_word_check_names_the_task_and_the_word():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # a WordLevel vocabulary without the label words: both map to <unk>
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "It": 2, "was": 3}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", pad_token="<unk>")
    cand = TASKS["sst2"].render({"sentence": "It was", "label": 1})
    with pytest.raises(UserError) as err:
        encode_candidates(cand, tok, 64, TASKS["sst2"])
    message = str(err.value)
    assert "\n" not in message and "task sst2" in message and "' terrible'" in message and "' great'" in message

    class Empty:  # a tokenizer that drops a word entirely
        bos_token_id, eos_token_id = 1, 2

        def __call__(self, text, add_special_tokens=True):
            ids = [3 for word in text.split() if word != "Yes"]
            return {"input_ids": ([1] if add_special_tokens else []) + ids}

    cand = TASKS["wsc"].render(generate_task_examples("wsc", 1, seed=0)[0])
    with pytest.raises(UserError, match=r"^task wsc: label word 'Yes' encodes to no tokens"):
        encode_candidates(cand, Empty(), 64, TASKS["wsc"])


def test_run_training_refuses_bad_label_words_before_writing(tmp_path, tokenizer):
    from llm_experiments.config import TrainConfig
    from llm_experiments.data import Splits
    from llm_experiments.runs import run_training

    folder = tmp_path / "model"
    tiny_model("opt", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rows = generate_task_examples("winogrande", 12, seed=0)
    rows[5] = dict(rows[5], option2=rows[5]["option1"])  # identical candidates
    splits = Splits(train=rows[:8], dev=rows[8:10], eval=rows[10:])
    cfg = TrainConfig(model=str(folder), task="winogrande", method="fo-peft", steps=1, progress=False,
                      output_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match="^task winogrande: candidate .* encode to the same tokens"):
        run_training(cfg, splits=splits)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ fast evaluation
@pytest.mark.parametrize("task", ["sst2", "wsc", "winogrande"])
def test_fast_evaluation_agrees_with_the_reference_path(task, model, tokenizer):
    spec = TASKS[task]
    rows = generate_task_examples(task, 64, seed=5)
    fast = evaluate(model, tokenizer, spec, rows, batch_size=16, return_predictions=True)
    seen = []  # (input rows, logits shape) per forward
    handle = model.register_forward_hook(
        lambda module, args, kwargs, out: seen.append((kwargs["input_ids"].shape[0], tuple(out.logits.shape))),
        with_kwargs=True)
    try:
        ref = evaluate(model, tokenizer, spec, rows[:16], batch_size=16, return_predictions=True, fast=False)
        fast16 = evaluate(model, tokenizer, spec, rows[:16], batch_size=16, return_predictions=True)
    finally:
        handle.remove()
    assert fast16["predictions"] == fast["predictions"][:16] == ref["predictions"]
    for a, b in zip(fast16["scores"], ref["scores"]):
        assert a == pytest.approx(b, abs=1e-5)
    (ref_rows, ref_logits), (fast_rows, fast_logits) = seen
    scored = sum(len(c) for e in [encode_candidates(spec.render(r), tokenizer, 512, spec) for r in rows[:16]]
                 for c in e.continuations)
    assert ref_rows == 32 and ref_logits[0] == 32  # reference: a row per candidate, logits at every position
    assert fast_rows == (16 if spec.scoring == "label_words" else 32)  # one forward row per shared context
    assert fast_logits == (1, scored, ref_logits[2])  # logits only where scored
    # the whole evaluation agrees
    ref_all = evaluate(model, tokenizer, spec, rows, batch_size=16, return_predictions=True, fast=False)
    assert fast["accuracy"] == ref_all["accuracy"] and fast["predictions"] == ref_all["predictions"]
