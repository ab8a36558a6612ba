"""Offline fixtures for tests and benchmarks: a tokenizer, tiny real-architecture models, generated task data.

Nothing here touches the Hub or copies text from a real data set. The made-up vocabulary below is generated
from syllables, and each task's examples follow the real data set's *field format* (names, types, label
encoding) with a simple learnable rule, so the training and evaluation code paths are exercised end to end:

* ``sst2``: ``sentence`` / ``label`` (0/1). The label is the polarity of the one cue word in the sentence.
* ``wsc``: ``text``, ``span1_index``, ``span2_index``, ``span1_text``, ``span2_text``, ``label`` (0/1), like
  SuperGLUE ``wsc.fixed``: span indices are word indices into ``text.split(" ")``. span1 is the sentence's
  subject; the pronoun (span2) refers to the subject iff the cue adjective is from the "subject" set.
* ``winogrande``: ``sentence`` (one ``_`` blank), ``option1``, ``option2``, ``answer`` ("1"/"2"). The blank is
  the subject (option1) iff the cue adjective is from the "subject" set.
* ``rte``: ``premise``, ``hypothesis``, ``label`` (0 = entailment, 1 = not_entailment, SuperGLUE encoding).
* ``boolq``: ``question``, ``passage``, ``label`` (0 = False, 1 = True).
* ``copa``: ``premise``, ``choice1``, ``choice2``, ``question`` ("cause"/"effect"), ``label`` (0/1). Each
  premise cue word has one paired consequence word, which appears only in the correct choice.

Every rule is visible to a bag-of-words classifier (a test checks this), so a tiny LM can learn it quickly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hybridtheory.io import atomic_write_text

__all__ = [
    "TINY_ARCHITECTURES",
    "GENERATED_TASKS",
    "made_up_words",
    "tiny_tokenizer",
    "tiny_model",
    "generate_task_examples",
    "write_jsonl",
    "save_tiny_checkpoint",
    "write_task_data",
    "write_tiny_assets",
]

TINY_ARCHITECTURES = ("opt", "llama", "gpt2")
GENERATED_TASKS = ("sst2", "wsc", "winogrande", "rte", "boolq", "copa")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "n", "r", "s", "l")


def made_up_words(n: int, seed: int) -> list[str]:
    """``n`` distinct lowercase pseudo-words of two syllables, drawn from ``seed`` (no real-text source)."""
    rng = np.random.default_rng([seed, 7331])
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        word = "".join(
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(2)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


# One fixed lexicon, split into disjoint roles. Fixed seed: the tokenizer and every generated task share it.
_LEXICON = made_up_words(120, seed=0)
_NAMES = [w.capitalize() for w in _LEXICON[0:12]]
_FILLER = _LEXICON[12:40]
_POSITIVE = _LEXICON[40:46]
_NEGATIVE = _LEXICON[46:52]
_SUBJECT_ADJ = _LEXICON[52:56]  # "the pronoun / blank is the subject"
_OBJECT_ADJ = _LEXICON[56:60]  # "the pronoun / blank is the object"
_VERBS = _LEXICON[60:68]
_NEGATION = _LEXICON[68]
_CAUSE_CUES = _LEXICON[70:76]
_CONSEQUENCES = _LEXICON[76:82]  # _CONSEQUENCES[i] pairs with _CAUSE_CUES[i]
_DISTRACTORS = _LEXICON[82:88]
_YES_CUE = _LEXICON[88:91]
_NO_CUE = _LEXICON[91:94]
_PRONOUNS = ("he", "she", "they")

# English words the task templates in tasks.py use, so the tokenizer has whole tokens for them.
_TEMPLATE_WORDS = (
    "It was terrible great In the previous sentence does pronoun refer to Yes or No Does this mean that is true "
    "Question Answer because so what was the cause effect of this"
)


def tiny_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained by code on the made-up lexicon and the template words.

    Byte-level, so it encodes any text without unknown tokens; wrapped in ``PreTrainedTokenizerFast`` with
    ``<pad>`` (id 0), ``<s>`` (bos), ``</s>`` (eos) and ``<unk>``. It round-trips through ``save_pretrained``
    and ``AutoTokenizer.from_pretrained``. Training is deterministic given the fixed corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = list(_LEXICON) + list(_NAMES) + list(_PRONOUNS) + _TEMPLATE_WORDS.split()
    # Each word with and without a leading space, repeated so every one becomes a merge.
    corpus = [" ".join(words)] * 4 + [" " + w for w in words] * 2 + ["\n".join(words), ". , ? ! \" _ '"]
    backend.train_from_iterator(corpus, trainer=trainer)
    bos_id = backend.token_to_id("<s>")
    # Prepend <s> like OPT/LLaMA tokenizers do, so "context starts with bos" paths are exercised.
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def tiny_model(arch: str, tokenizer, seed: int = 0, **config_overrides: Any):
    """A randomly initialised causal LM of a real architecture, built from a config (no download).

    ``arch`` is one of :data:`TINY_ARCHITECTURES`: "opt" (``OPTForCausalLM``; ties ``lm_head`` to the input
    embedding), "llama" (``LlamaForCausalLM``; grouped-query attention, untied head) and "gpt2"
    (``GPT2LMHeadModel``; ``Conv1D`` projections, tied head). Sizes: 2 layers, width 32, 4 heads, fp32,
    dropout 0 unless overridden through ``config_overrides`` (keys of the architecture's config class).

    Initialisation is a pure function of ``seed``: the weights are drawn inside ``torch.random.fork_rng``
    after seeding the forked generator, so the caller's global RNG state is the same afterwards.
    """
    import torch
    import transformers

    from .models import seeded_global_init

    vocab = len(tokenizer)
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if arch == "opt":
        config = transformers.OPTConfig(
            vocab_size=vocab, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
            activation_dropout=0.0, layerdrop=0.0, **ids,
        )
        model_cls = transformers.OPTForCausalLM
    elif arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, attention_dropout=0.0, tie_word_embeddings=False,
            **ids,
        )
        model_cls = transformers.LlamaForCausalLM
    elif arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, **ids,
        )
        model_cls = transformers.GPT2LMHeadModel
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHITECTURES)}")
    for key, value in config_overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"{type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    with seeded_global_init(seed):  # transformers' init draws from the global RNG: fork it, seeded
        model = model_cls(config).to(torch.float32)
    model.eval()
    return model


def _sentence(words: list[str]) -> str:
    return " ".join(words)


def _sst2(rng: np.random.Generator, i: int) -> dict:
    label = int(rng.integers(2))
    cue = rng.choice(_POSITIVE if label else _NEGATIVE)
    filler = list(rng.choice(_FILLER, size=int(rng.integers(3, 7)), replace=True))
    filler.insert(int(rng.integers(len(filler) + 1)), cue)
    text = _sentence(filler)
    return {"sentence": text[0].upper() + text[1:] + " .", "label": label, "idx": i}


def _subject_object(rng: np.random.Generator) -> tuple[str, str, str]:
    subject, obj = rng.choice(_NAMES, size=2, replace=False)
    return str(subject), str(obj), str(rng.choice(_VERBS))


def _wsc(rng: np.random.Generator, i: int) -> dict:
    label = int(rng.integers(2))
    subject, obj, verb = _subject_object(rng)
    pronoun = str(rng.choice(_PRONOUNS))
    adjective = str(rng.choice(_SUBJECT_ADJ if label else _OBJECT_ADJ))
    words = [subject, verb, obj, "because", pronoun, "was", adjective + "."]
    return {
        "text": " ".join(words),
        "span1_index": 0,
        "span2_index": 4,
        "span1_text": subject,
        "span2_text": pronoun,
        "label": label,
        "idx": i,
    }


def _winogrande(rng: np.random.Generator, i: int) -> dict:
    answer = int(rng.integers(1, 3))
    subject, obj, verb = _subject_object(rng)
    adjective = str(rng.choice(_SUBJECT_ADJ if answer == 1 else _OBJECT_ADJ))
    sentence = f"{subject} {verb} {obj} because _ was {adjective}."
    return {"sentence": sentence, "option1": subject, "option2": obj, "answer": str(answer)}


def _rte(rng: np.random.Generator, i: int) -> dict:
    label = int(rng.integers(2))  # 0 entailment, 1 not_entailment
    subject, obj, verb = _subject_object(rng)
    extra = list(rng.choice(_FILLER, size=2))
    premise = f"{subject} {verb} {obj} {extra[0]} {extra[1]}."
    hypothesis = f"{subject} {_NEGATION} {verb} {obj}." if label else f"{subject} {verb} {obj}."
    return {"premise": premise, "hypothesis": hypothesis, "label": label, "idx": i}


def _boolq(rng: np.random.Generator, i: int) -> dict:
    label = int(rng.integers(2))
    subject, obj, verb = _subject_object(rng)
    cue = str(rng.choice(_YES_CUE if label else _NO_CUE))
    filler = " ".join(rng.choice(_FILLER, size=4))
    passage = f"{subject} {verb} {obj} {cue}. {filler.capitalize()}."
    question = f"does {subject.lower()} {verb} {obj.lower()}"
    return {"question": question, "passage": passage, "label": label, "idx": i}


def _copa(rng: np.random.Generator, i: int) -> dict:
    label = int(rng.integers(2))
    pair = int(rng.integers(len(_CAUSE_CUES)))
    subject = str(rng.choice(_NAMES))
    question = str(rng.choice(["cause", "effect"]))
    right = f"{subject} {_CONSEQUENCES[pair]} {rng.choice(_FILLER)}."
    wrong = f"{subject} {rng.choice(_DISTRACTORS)} {rng.choice(_FILLER)}."
    premise = f"{subject} {_CAUSE_CUES[pair]} {rng.choice(_FILLER)}."
    choices = (wrong, right) if label else (right, wrong)
    return {"premise": premise, "choice1": choices[0], "choice2": choices[1], "question": question, "label": label, "idx": i}


_GENERATORS = {"sst2": _sst2, "wsc": _wsc, "winogrande": _winogrande, "rte": _rte, "boolq": _boolq, "copa": _copa}


def generate_task_examples(task_name: str, n: int, seed: int) -> list[dict]:
    """``n`` generated examples of ``task_name`` in that data set's field format; a pure function of ``seed``.

    See the module docstring for each task's fields and learnable rule. No text comes from a real data set.
    """
    if task_name not in _GENERATORS:
        raise ValueError(f"no generator for task {task_name!r}; choose one of {', '.join(GENERATED_TASKS)}")
    rng = np.random.default_rng([seed, GENERATED_TASKS.index(task_name)])
    return [_GENERATORS[task_name](rng, i) for i in range(n)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as JSON lines to ``path`` atomically (``hybridtheory.io``)."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return Path(path)


def save_tiny_checkpoint(folder: str | os.PathLike, arch: str = "opt") -> Path:
    """A tiny random ``arch`` model and the tiny tokenizer saved together in ``folder``, like a Hub checkpoint."""
    tok = tiny_tokenizer()
    model = tiny_model(arch, tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def write_task_data(folder: str | os.PathLike, task_name: str, n_train: int, n_validation: int) -> Path:
    """``train.jsonl`` (seed 0) and ``validation.jsonl`` (seed 1) of generated ``task_name`` examples in ``folder``."""
    write_jsonl(Path(folder) / "train.jsonl", generate_task_examples(task_name, n_train, seed=0))
    write_jsonl(Path(folder) / "validation.jsonl", generate_task_examples(task_name, n_validation, seed=1))
    return Path(folder)


def write_tiny_assets(root: str | os.PathLike, n_train: int, n_validation: int, task_name: str = "sst2") -> Path:
    """The assets of the CLI tests: a tiny OPT checkpoint in ``root/model`` and generated data in ``root/data``."""
    save_tiny_checkpoint(Path(root) / "model")
    write_task_data(Path(root) / "data", task_name, n_train, n_validation)
    return Path(root)
