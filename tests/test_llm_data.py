"""Task specs, generated fixtures, local/Hub loading, sampling protocol and prompt encoding (offline, CPU)."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from hypothesis import given, settings, strategies as st  # noqa: E402

from llm_experiments.data import (  # noqa: E402
    collate_candidates,
    encode_for_training,
    encode_pair,
    load_splits,
    sample_indices,
)
from llm_experiments.errors import UserError  # noqa: E402
from llm_experiments.tasks import TASKS, get_task  # noqa: E402
from llm_experiments.testing import (  # noqa: E402
    GENERATED_TASKS,
    TINY_ARCHITECTURES,
    generate_task_examples,
    tiny_model,
    write_jsonl,
)

pytestmark = pytest.mark.llm

# Field formats of the real data sets (DATA.md; SuperGLUE for RTE/BoolQ/COPA).
REAL_FIELD_TYPES = {
    "sst2": {"sentence": str, "label": int},
    "wsc": {"text": str, "span1_index": int, "span2_index": int, "span1_text": str, "span2_text": str, "label": int},
    "winogrande": {"sentence": str, "option1": str, "option2": str, "answer": str},
    "rte": {"premise": str, "hypothesis": str, "label": int},
    "boolq": {"question": str, "passage": str, "label": int},
    "copa": {"premise": str, "choice1": str, "choice2": str, "question": str, "label": int},
}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("task", GENERATED_TASKS)
def test_generated_examples_have_the_real_field_format(task):
    rows = generate_task_examples(task, 50, seed=3)
    assert rows == generate_task_examples(task, 50, seed=3)  # a pure function of the seed
    assert rows != generate_task_examples(task, 50, seed=4)
    for row in rows:
        for field, kind in REAL_FIELD_TYPES[task].items():
            assert isinstance(row[field], kind), (task, field, row)
        assert set(TASKS[task].required_fields) <= set(row)
    if task == "wsc":
        for row in rows:
            words = row["text"].split(" ")
            assert words[row["span1_index"]] == row["span1_text"]
            assert words[row["span2_index"]] == row["span2_text"]
    if task == "winogrande":
        assert all(row["sentence"].count("_") == 1 and row["answer"] in ("1", "2") for row in rows)
    labels = [TASKS[task].label_index(row) for row in rows]
    assert set(labels) == {0, 1}  # both classes occur


def _bag_of_words(spec, rows):
    """Features ``field:word`` over the spec's text fields (so COPA's choice1 and choice2 words differ)."""
    docs = [
        [f"{field}:{w}" for field in spec.text_fields for w in re.findall(r"[A-Za-z_]+", str(row[field]).lower())]
        for row in rows
    ]
    return docs


def _logistic_fit_accuracy(train_docs, train_y, test_docs, test_y, steps=300, lr=0.5):
    vocab = {w: i for i, w in enumerate(sorted({w for d in train_docs for w in d}))}

    def featurise(docs):
        x = np.zeros((len(docs), len(vocab) + 1))
        x[:, -1] = 1.0
        for r, doc in enumerate(docs):
            for w in doc:
                if w in vocab:
                    x[r, vocab[w]] = 1.0
        return x

    x, y = featurise(train_docs), np.asarray(train_y, float)
    w = np.zeros(x.shape[1])
    for _ in range(steps):  # full-batch gradient descent on the logistic loss
        p = 1.0 / (1.0 + np.exp(-x @ w))
        w -= lr * x.T @ (p - y) / len(y)
    predictions = (featurise(test_docs) @ w > 0).astype(int)
    return float(np.mean(predictions == np.asarray(test_y)))


@pytest.mark.parametrize("task", GENERATED_TASKS)
def test_generated_data_is_learnable_by_a_bag_of_words_logistic_fit(task):
    spec = TASKS[task]
    train = generate_task_examples(task, 300, seed=0)
    test = generate_task_examples(task, 200, seed=1)
    accuracy = _logistic_fit_accuracy(
        _bag_of_words(spec, train), [spec.label_index(r) for r in train],
        _bag_of_words(spec, test), [spec.label_index(r) for r in test],
    )
    assert accuracy >= 0.95, (task, accuracy)


def test_tiny_tokenizer_round_trips_and_has_special_tokens(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = 'Zerfas was happy.\nIn the previous sentence, does the pronoun "he" refer to Kozis? Yes or No?\nYes'
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    for name in ("pad", "bos", "eos", "unk"):
        assert getattr(reloaded, f"{name}_token_id") == getattr(tokenizer, f"{name}_token_id") is not None
    # Template and verbalizer words are whole tokens.
    for word in (" great", " terrible", "Yes", "No", " It", " was"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_tiny_model_is_seeded_and_leaves_the_global_rng_alone(arch, tokenizer):
    import torch

    state = torch.random.get_rng_state()
    first = tiny_model(arch, tokenizer, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = tiny_model(arch, tokenizer, seed=5)
    other = tiny_model(arch, tokenizer, seed=6)
    pairs = list(zip(first.state_dict().values(), second.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))
    assert first.config.vocab_size == len(tokenizer)
    assert next(first.parameters()).dtype == torch.float32


# ------------------------------------------------------------------------------------------ templates


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_spec_renders_its_template(task):
    spec = TASKS[task]
    for row in generate_task_examples(task, 10, seed=0):
        cand = spec.render(row)
        assert len(cand.contexts) == len(cand.continuations) == spec.num_candidates
        assert cand.label == spec.label_index(row) in range(spec.num_candidates)
        assert all(c.strip() for c in cand.contexts) and all(c.strip() for c in cand.continuations)
        if spec.scoring == "label_words":
            assert len(set(cand.contexts)) == 1 and cand.continuations == spec.verbalizer
        elif spec.scoring == "option_suffix":
            assert len(set(cand.contexts)) == 1  # shared prefix
            for option, continuation in zip((row["option1"], row["option2"]), cand.continuations):
                assert cand.contexts[0] + continuation == row["sentence"].replace("_", option)
                assert continuation.startswith(" " + option)
        elif spec.scoring == "partial":
            assert len(set(cand.continuations)) == 1  # shared suffix
            blank = row["sentence"].index("_")
            for option, context in zip((row["option1"], row["option2"]), cand.contexts):
                assert context == row["sentence"][:blank] + option
            assert cand.contexts[0] + cand.continuations[0] == row["sentence"].replace("_", row["option1"])
        else:
            assert len(set(cand.contexts)) == 1 and len(set(cand.continuations)) == 2
    first = generate_task_examples(task, 1, seed=0)[0]
    context = spec.render(first).contexts[0]
    expected_piece = {
        "sst2": first.get("sentence", "") + " It was",
        "wsc": f'does the pronoun "{first.get("span2_text", "").lower()}" refer to {first.get("span1_text")}?',
        "rte": "Does this mean that",
        "boolq": "Question:",
        "copa": " because" if first.get("question") == "cause" else " so",
        "winogrande": first.get("sentence", "_").split("_")[0].strip(),
    }[task]
    assert expected_piece in context


def test_task_lookup_and_unknown_task():
    assert get_task("SST-2") is TASKS["sst2"]
    assert get_task("wsc.fixed") is TASKS["wsc"]
    assert TASKS["wsc"].hf_config == "wsc.fixed" and TASKS["sst2"].hf_id == "nyu-mll/glue"
    with pytest.raises(UserError, match="unknown task 'mnli'.*sst2"):
        get_task("mnli")


def test_label_values_strings_and_bad_labels():
    spec = TASKS["winogrande"]
    assert spec.label_index({"answer": "2"}) == 1 and spec.label_index({"answer": 1}) == 0
    assert TASKS["sst2"].label_index({"label": -1}) is None
    with pytest.raises(UserError, match="has value '3'"):
        spec.label_index({"answer": "3"})


# ------------------------------------------------------------------------------------------ loading


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


WRITERS = {"jsonl": write_jsonl, "csv": _write_csv, "parquet": _write_parquet}


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("task", ["sst2", "wsc", "winogrande"])
def test_local_files_load_the_same_splits_in_every_format(task, fmt, tmp_path):
    spec = TASKS[task]
    train_rows, eval_rows = generate_task_examples(task, 120, 0), generate_task_examples(task, 40, 1)
    WRITERS[fmt](tmp_path / f"train.{fmt}", train_rows)
    WRITERS[fmt](tmp_path / f"validation.{fmt}", eval_rows)
    splits = load_splits(spec, tmp_path, n_train=50, n_dev=20, n_eval=30, seed=2)
    assert (len(splits.train), len(splits.dev), len(splits.eval)) == (50, 20, 30)
    # Same rows as the source, whatever the format (CSV values are strings; render() normalises labels).
    for name, pool in (("train", train_rows), ("dev", train_rows), ("eval", eval_rows)):
        got = [spec.render(r) for r in getattr(splits, name)]
        want = [spec.render(pool[i]) for i in splits.indices[name]]
        assert got == want
    reference = load_splits(spec, tmp_path / f"train.{fmt}", eval_source=tmp_path / f"validation.{fmt}",
                            n_train=50, n_dev=20, n_eval=30, seed=2)
    assert reference.indices == splits.indices


def test_missing_field_gives_a_user_error_naming_it(tmp_path):
    rows = [{"text": "a b", "label": 1} for _ in range(10)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(UserError, match=r"missing field\(s\) sentence required by task sst2"):
        load_splits(TASKS["sst2"], tmp_path / "train.jsonl", n_train=5, n_dev=2, n_eval=2)
    rows = generate_task_examples("winogrande", 10, 0)
    for row in rows[5:]:
        del row["option2"]
    write_jsonl(tmp_path / "wino.jsonl", rows)
    with pytest.raises(UserError, match="option2"):
        load_splits(TASKS["winogrande"], tmp_path / "wino.jsonl", n_train=5, n_dev=2, n_eval=2)


def test_bad_local_inputs_give_user_errors(tmp_path):
    with pytest.raises(UserError, match="data source not found"):
        load_splits(TASKS["sst2"], tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="no train file"):
        load_splits(TASKS["sst2"], tmp_path)
    (tmp_path / "train.jsonl").write_text('{"sentence": "a", "label": 0}\nnot json\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        load_splits(TASKS["sst2"], tmp_path)
    write_jsonl(tmp_path / "train.jsonl", generate_task_examples("sst2", 20, 0))
    with pytest.raises(UserError, match="n_train must be a non-negative integer"):
        load_splits(TASKS["sst2"], tmp_path, n_train=-1)
    with pytest.raises(UserError, match="seed must be a non-negative integer"):
        load_splits(TASKS["sst2"], tmp_path, seed=-3)
    write_jsonl(tmp_path / "validation.jsonl", [{"sentence": "x", "label": -1}] * 3)
    with pytest.raises(UserError, match="no labelled examples"):
        load_splits(TASKS["sst2"], tmp_path)


def test_offline_hub_id_gives_a_user_error_with_the_local_files_hint(monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # The flag is read at import time by datasets, so set the already-imported constants too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as info:
        load_splits(TASKS["sst2"], n_train=10, n_dev=5, n_eval=5)
    message = str(info.value)
    assert "nyu-mll/glue" in message and "local files" in message and "train.jsonl" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="some-user/some-data"):
        load_splits(TASKS["sst2"], "some-user/some-data")


# ------------------------------------------------------------------------------------------ sampling


def test_sampling_is_deterministic_and_held_out_sets_never_overlap_train(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", generate_task_examples("sst2", 300, 0))
    write_jsonl(tmp_path / "validation.jsonl", generate_task_examples("sst2", 80, 1))
    spec = TASKS["sst2"]
    a = load_splits(spec, tmp_path, n_train=100, n_dev=50, n_eval=60, seed=1)
    b = load_splits(spec, tmp_path, n_train=100, n_dev=50, n_eval=60, seed=1)
    c = load_splits(spec, tmp_path, n_train=100, n_dev=50, n_eval=60, seed=2)
    assert a.indices == b.indices and a.train == b.train
    assert a.indices["train"] != c.indices["train"]
    assert a.indices["eval"] == c.indices["eval"]  # eval depends on eval_seed only
    assert not set(a.indices["train"]) & set(a.indices["dev"])
    assert a.pools == {"train": "train", "dev": "train", "eval": "eval"}
    # One file: eval is carved from it and never overlaps train or dev.
    carved = load_splits(spec, tmp_path / "train.jsonl", n_train=1000, n_dev=500, n_eval=1000, seed=0)
    train, dev, held = (set(carved.indices[k]) for k in ("train", "dev", "eval"))
    assert not (train & dev or train & held or dev & held)
    assert len(held) == 300 // 5 and len(dev) == 240 // 5 and len(train) == 240 - 48
    assert carved.info["eval_carved_from_train"]


def test_small_pool_rule_on_a_wsc_sized_train_set(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", generate_task_examples("wsc", 554, 0))
    write_jsonl(tmp_path / "validation.jsonl", generate_task_examples("wsc", 104, 1))
    default = load_splits(TASKS["wsc"], tmp_path)  # MeZO's 1000 / 500 / 1000 request
    assert default.info["sizes"] == {"train": 444, "dev": 110, "eval": 104} and default.info["dev_shrunk"]
    capped = load_splits(TASKS["wsc"], tmp_path, n_dev=100)
    assert capped.info["sizes"] == {"train": 454, "dev": 100, "eval": 104} and not capped.info["dev_shrunk"]


@settings(max_examples=200, deadline=None)
@given(
    pool=st.integers(1, 400),
    n_first=st.integers(0, 500),
    n_second=st.integers(0, 500),
    seed=st.integers(0, 2**31),
)
def test_sample_indices_rule(pool, n_first, n_second, seed):
    first, second, info = sample_indices(pool, n_first, n_second, seed)
    assert not set(first) & set(second)
    assert set(first) | set(second) <= set(range(pool))
    assert len(set(first)) == len(first) and len(set(second)) == len(second)
    if n_first + n_second <= pool:
        assert (len(first), len(second)) == (n_first, n_second) and not info["held_out_shrunk"]
    else:
        assert len(second) == min(n_second, pool // 5)
        assert len(first) == min(n_first, pool - len(second))
    assert (first, second) == sample_indices(pool, n_first, n_second, seed)[:2]


# ------------------------------------------------------------------------------------------ encoding


@pytest.mark.parametrize("task", list(TASKS))
def test_encode_for_training_keeps_the_exact_candidate_tokens(task, tokenizer):
    spec = TASKS[task]
    rows = generate_task_examples(task, 8, seed=0)
    for objective in ("classification", "lm"):
        for row, enc in zip(rows, encode_for_training(rows, tokenizer, spec, max_length=128, objective=objective)):
            cand = spec.render(row)
            kept = range(len(cand.contexts)) if objective == "classification" else [cand.label]
            assert enc.label == (cand.label if objective == "classification" else 0)
            for k, ctx, cont in zip(kept, enc.contexts, enc.continuations):
                assert ctx[0] == tokenizer.bos_token_id and cont
                # exact tokens: the continuation decodes to the candidate text, nothing moved across the boundary
                assert tokenizer.decode(list(cont)) == cand.continuations[k]
                assert tokenizer.decode(list(ctx), skip_special_tokens=True) == cand.contexts[k]


def test_long_contexts_are_truncated_from_the_left(tokenizer):
    context = " ".join(["zorba"] * 60) + " It was"
    ids, n = encode_pair(tokenizer, context, " great", max_length=16)
    assert len(ids) == 16 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[-n:]) == " great"
    full, n_full = encode_pair(tokenizer, context, " great", max_length=1000)
    assert ids[1:] == full[len(full) - 15 :] and n == n_full  # the *end* of the context is kept


def test_collate_right_pads_and_indexes_the_scored_tokens(tokenizer):
    import torch

    rows = generate_task_examples("winogrande", 3, 0)  # multi-token candidates: one row per candidate
    encoded = encode_for_training(rows, tokenizer, TASKS["winogrande"], 64, objective="classification")
    batch = collate_candidates(encoded, tokenizer.pad_token_id)
    sequences = [c + t for e in encoded for c, t in zip(e.contexts, e.continuations)]
    width = max(len(q) for q in sequences)
    assert batch["input_ids"].shape == (6, width) and batch["input_ids"].dtype == torch.long
    for row, seq in enumerate(sequences):
        n = len(seq)
        assert batch["input_ids"][row, :n].tolist() == list(seq)
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        picked = batch["score_row"] == row
        assert batch["score_token"][picked].tolist() == list(encoded[row // 2].continuations[row % 2])
        assert (batch["input_ids"][row, batch["score_pos"][picked] + 1] == batch["score_token"][picked]).all()
    assert batch["labels"].tolist() == [e.label for e in encoded] and batch["num_candidates"].tolist() == [2] * 3
    # label words share the context: one row per example, both candidates read at its last position
    sst = encode_for_training(generate_task_examples("sst2", 3, 0), tokenizer, TASKS["sst2"], 64)
    shared = collate_candidates(sst, tokenizer.pad_token_id)
    assert shared["input_ids"].shape[0] == 3 and shared["score_row"].tolist() == [0, 0, 1, 1, 2, 2]
    assert shared["score_pos"].tolist() == [len(e.contexts[0]) - 1 for e in sst for _ in range(2)]
    assert collate_candidates(sst, tokenizer.pad_token_id, share_context=False)["input_ids"].shape[0] == 6


def test_json_list_files_are_read(tmp_path):
    rows = generate_task_examples("copa", 30, 0)
    (tmp_path / "copa.json").write_text(json.dumps(rows))
    splits = load_splits(TASKS["copa"], tmp_path / "copa.json", n_train=10, n_dev=5, n_eval=5)
    assert len(splits.train) == 10 and splits.train[0] in rows


def test_a_data_root_with_one_folder_per_task(tmp_path):
    for task in ("sst2", "winogrande"):
        write_jsonl(tmp_path / task / "train.jsonl", generate_task_examples(task, 40, 0))
        write_jsonl(tmp_path / task / "validation.jsonl", generate_task_examples(task, 10, 1))
    for task in ("sst2", "winogrande"):
        splits = load_splits(TASKS[task], tmp_path, n_train=20, n_dev=5, n_eval=10)
        assert splits.info["source"]["train_files"] == [str(tmp_path / task / "train.jsonl")]
        assert splits.eval == generate_task_examples(task, 10, 1)


def test_the_hub_path_uses_the_specs_id_config_and_splits(monkeypatch):
    """The Hub branch, offline: ``datasets.load_dataset`` is replaced by an in-memory DatasetDict."""
    datasets = pytest.importorskip("datasets")
    calls = []
    train_rows = generate_task_examples("winogrande", 60, 0)
    eval_rows = generate_task_examples("winogrande", 30, 1)

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return datasets.DatasetDict(
            {"train": datasets.Dataset.from_list(train_rows), "validation": datasets.Dataset.from_list(eval_rows),
             "test": datasets.Dataset.from_list([dict(r, answer="") for r in eval_rows])}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    splits = load_splits(TASKS["winogrande"], n_train=20, n_dev=10, n_eval=25, seed=0)
    assert calls == [("allenai/winogrande", "winogrande_m")]
    assert splits.pools["eval"] == "eval" and len(splits.eval) == 25
    assert all(row in eval_rows for row in splits.eval) and all(row in train_rows for row in splits.train)
    load_splits(TASKS["winogrande"], hub_config="winogrande_xl", n_train=5, n_dev=5, n_eval=5)
    assert calls[-1] == ("allenai/winogrande", "winogrande_xl")
