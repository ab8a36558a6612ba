r"""Task data: loading (Hub id or local files), MeZO-style sampling, prompt encoding and collation.

Sampling protocol (DATA.md, "Sampling"): from the task's train pool draw ``n_train`` training and ``n_dev``
development examples, disjoint, with a generator seeded by ``seed``; from the eval pool draw ``n_eval``
evaluation examples with a generator seeded by ``eval_seed`` (so every training seed and every method of a
grid is scored on the same evaluation examples). Model selection uses dev only, never eval.

Small pools (WSC has 554 training examples; MeZO's DEV=500 left it 54 to train on; see DATA.md): when
``n_train + n_dev`` exceeds the pool, dev shrinks to at most a fifth of the pool, ``min(n_dev, N // 5)``, and
train takes what is left up to ``n_train``. The same one-fifth rule carves an eval set off a single local file
that has no separate eval file (eval is carved first, then train/dev come from the rest).

Encoding: context and continuation are tokenised so that their concatenation is what the model sees (exact
tokens: nothing moves between them); the loss (training) and the score (evaluation) cover the continuation
tokens only, through the one scoring function of :mod:`llm_experiments.scoring`. Long inputs lose tokens from the
*left of the context* (the start of the prompt), never from the answer.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import UserError
from .tasks import Candidates, TaskSpec

__all__ = [
    "Splits",
    "load_splits",
    "read_rows",
    "sample_indices",
    "encode_pair",
    "encode_candidates",
    "EncodedCandidates",
    "check_candidates",
    "encode_for_training",
    "collate",
    "collate_candidates",
    "LOCAL_EXTENSIONS",
    "EVAL_SPLIT_NAMES",
]

LOCAL_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
# File stems accepted for the eval pool in a local folder, in order of preference.
EVAL_SPLIT_NAMES = ("validation", "eval", "dev", "test")
IGNORE_INDEX = -100  # label value that HF causal-LM losses skip


@dataclass
class Splits:
    """Sampled examples (raw field dicts) plus where they came from.

    ``indices[name]`` are row indices into the pool each split was drawn from (``pools[name]`` names it), so
    disjointness can be checked and runs can be audited.
    """

    train: list[dict]
    dev: list[dict]
    eval: list[dict]
    indices: dict[str, list[int]] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- reading


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}: line {line_no} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {line_no} is not a JSON object")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl(path)  # a .json file holding JSON lines
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UserError(f"{path}: expected a JSON list of objects (or JSON lines)")
    return data


def _read_csv(path: Path) -> list[dict]:
    # Values stay strings; labels are compared as strings (TaskSpec.label_index), so "1" and 1 agree.
    with open(path, encoding="utf-8", newline="") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow ships with datasets
        raise UserError("reading .parquet files needs pyarrow (pip install pyarrow)") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user input problem
        raise UserError(f"{path}: not a readable parquet file ({type(err).__name__})") from None


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def read_rows(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Rows of one or more local JSONL / JSON / CSV / parquet files, concatenated in the given order."""
    rows: list[dict] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise UserError(f"data file not found: {path}")
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise UserError(f"{path}: unsupported data file type; use one of {', '.join(LOCAL_EXTENSIONS)}")
        try:
            rows.extend(reader(path))
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    return rows


def _split_files(folder: Path, split: str) -> list[Path]:
    """Files in ``folder`` named ``<split>.<ext>`` or ``<split>-*.<ext>`` (the Hub's parquet export style)."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in LOCAL_EXTENSIONS:
            stem = path.name[: -len(path.suffix)]
            if stem == split or stem.startswith(split + "-"):
                found.append(path)
    return found


def _local_pools(spec: TaskSpec, source: Path, eval_source: Path | None) -> tuple[list[dict], list[dict] | None, dict]:
    """(train pool, eval pool or None, description). ``None`` eval pool: carve eval from the train pool."""
    if source.is_dir() and not _split_files(source, "train") and (source / spec.name).is_dir():
        source = source / spec.name  # a data root holding one folder per task (e.g. for a validation grid)
    if source.is_dir():
        train_files = _split_files(source, spec.train_split) or _split_files(source, "train")
        if not train_files:
            raise UserError(
                f"{source}: no train file; expected train.jsonl, train.csv or train.parquet "
                f"(or train-*.parquet) with fields {', '.join(spec.required_fields)}"
            )
        eval_files: list[Path] = []
        if eval_source is None:
            for name in (spec.eval_split,) + EVAL_SPLIT_NAMES:
                eval_files = _split_files(source, name)
                if eval_files:
                    break
    else:
        train_files = [source]
        eval_files = []
    if eval_source is not None:
        eval_files = _split_files(eval_source, spec.eval_split) if eval_source.is_dir() else [eval_source]
        if not eval_files:
            raise UserError(f"{eval_source}: no {spec.eval_split} file found")
    train_pool = read_rows(train_files)
    eval_pool = read_rows(eval_files) if eval_files else None
    described = {
        "train_files": [str(p) for p in train_files],
        "eval_files": [str(p) for p in eval_files] if eval_files else "carved from the train files",
    }
    return train_pool, eval_pool, described


def _hub_pools(spec: TaskSpec, hub_id: str, hub_config: str | None) -> tuple[list[dict], list[dict], dict]:
    try:
        import datasets
    except ImportError:
        raise UserError("loading Hub data sets needs the 'datasets' package (pip install 'hybridtheory[llm]')") from None
    name = hub_id + (f" ({hub_config})" if hub_config else "")
    try:
        loaded = datasets.load_dataset(hub_id, hub_config)
        train_pool = loaded[spec.train_split].to_list()
        eval_pool = loaded[spec.eval_split].to_list()
    except KeyError as err:
        raise UserError(f"Hub data set {name} has no split {err.args[0]!r}") from None
    except Exception as err:  # noqa: BLE001 - every failure here is reported as one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ""
        if isinstance(err, (ConnectionError, OSError, TimeoutError)):
            hint = (
                f" No network (or HF_HUB_OFFLINE=1)? Use local files instead: pass --data PATH, a folder holding "
                f"train.jsonl and validation.jsonl (or .csv/.parquet), or one such file, with fields "
                f"{', '.join(spec.required_fields)} (see llm_experiments/DATA.md)."
            )
        raise UserError(f"could not load Hub data set {name}: {reason}.{hint}") from None
    return train_pool, eval_pool, {"hub_id": hub_id, "hub_config": hub_config}


def _looks_like_path(text: str) -> bool:
    """A string that can only be a local path (a Hub id is ``name`` or ``owner/name``)."""
    return (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or text.count("/") > 1
        or Path(text).suffix.lower() in LOCAL_EXTENSIONS
    )


def _check_fields(spec: TaskSpec, rows: list[dict], where: str) -> None:
    """``UserError`` naming every required field that some row lacks."""
    missing: set[str] = set()
    for row in rows:
        missing.update(f for f in spec.required_fields if f not in row)
    if missing:
        present = sorted(rows[0]) if rows else []
        raise UserError(
            f"{where} is missing field(s) {', '.join(sorted(missing))} required by task {spec.name} "
            f"(it has: {', '.join(present) or 'no rows'})"
        )


def _labelled(spec: TaskSpec, rows: list[dict], where: str) -> tuple[list[dict], list[int]]:
    """Rows with a gold label and their positions in ``rows`` (unlabelled rows, label -1, are dropped)."""
    kept, positions = [], []
    for i, row in enumerate(rows):
        if spec.label_index(row) is not None:
            kept.append(row)
            positions.append(i)
    if rows and not kept:
        raise UserError(f"{where} has no labelled examples (labels are missing or -1); use a labelled split")
    return kept, positions


# -------------------------------------------------------------------------------------------- sampling


def _check_size(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
        raise UserError(f"{name} must be a non-negative integer (or None for all), got {value!r}")


def sample_indices(pool_size: int, n_first: int | None, n_second: int | None, seed: int) -> tuple[list[int], list[int], dict]:
    """Two disjoint index samples from ``range(pool_size)``: ``(first, second)``, each sorted.

    ``first`` is the main sample (train, or eval when carving), ``second`` the held-out part (dev, or the
    train pool left over). ``None`` means "as many as possible". When both requests fit, they are honoured
    exactly. Otherwise the held-out part shrinks to ``min(n_second, pool_size // 5)`` and the main sample takes
    what remains, up to ``n_first``. The draw is one permutation from ``np.random.default_rng(seed)``: the main
    sample is its head, the held-out part the next slice.
    """
    if n_first is None and n_second is None:
        raise ValueError("at most one of the two sizes may be None")
    if n_second is None:
        n_second = max(pool_size - n_first, 0)
    want_first = pool_size if n_first is None else n_first
    if want_first + n_second <= pool_size:
        take_first, take_second, shrunk = want_first, n_second, False
    else:
        take_second = min(n_second, pool_size // 5)
        take_first = min(want_first, pool_size - take_second)
        shrunk = take_second < n_second
    perm = np.random.default_rng(seed).permutation(pool_size)
    first = sorted(int(i) for i in perm[:take_first])
    second = sorted(int(i) for i in perm[take_first : take_first + take_second])
    return first, second, {"held_out_shrunk": shrunk}


def load_splits(
    spec: TaskSpec,
    source: str | os.PathLike | None = None,
    *,
    n_train: int | None = 1000,
    n_dev: int = 500,
    n_eval: int | None = 1000,
    seed: int = 0,
    eval_seed: int = 0,
    eval_source: str | os.PathLike | None = None,
    hub_config: str | None = None,
) -> Splits:
    """Load a task's pools and sample train / dev / eval (module docstring; DATA.md "Sampling").

    Args:
        spec: the task.
        source: ``None`` (the spec's Hub data set), a Hub id, or a local folder / file (JSONL, JSON, CSV,
            parquet) whose rows have the spec's fields. A folder holds ``train.<ext>`` and optionally
            ``validation|eval|dev|test.<ext>``; without an eval file, eval is carved from the train rows.
            A folder without a train file but with a sub-folder named after the task uses that sub-folder
            (one data root for a whole grid: ``ROOT/sst2/``, ``ROOT/wsc/``, ...).
        n_train, n_dev, n_eval: requested sizes (``None`` for train/eval: the whole pool).
        seed: sampling seed of train and dev.
        eval_seed: sampling seed of eval (kept apart so training seeds share one eval sample).
        eval_source: a separate local eval file or folder (overrides any eval file next to ``source``).
        hub_config: overrides the spec's Hub config (e.g. ``winogrande_xl``).

    Raises:
        UserError: missing files or fields, bad label values, bad sizes, or a Hub data set that cannot be
            loaded (with how to use local files instead).
    """
    for name, value in (("n_train", n_train), ("n_dev", n_dev), ("n_eval", n_eval)):
        _check_size(name, value)
    for name, value in (("n_dev", n_dev), ("seed", seed), ("eval_seed", eval_seed)):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{name} must be a non-negative integer, got {value!r}")
    source_path: Path | None = None
    if source is not None:
        text = str(source)
        candidate = Path(text).expanduser()
        if candidate.exists():
            source_path = candidate
        elif _looks_like_path(text) or eval_source is not None:
            raise UserError(f"data source not found: {text}")
    eval_path = None
    if eval_source is not None:
        eval_path = Path(eval_source).expanduser()
        if not eval_path.exists():
            raise UserError(f"eval data source not found: {eval_source}")

    if source_path is not None:
        train_rows, eval_rows, described = _local_pools(spec, source_path, eval_path)
    else:
        hub_id = spec.hf_id if source is None else str(source)
        config = hub_config if hub_config is not None else (spec.hf_config if source is None or str(source) == spec.hf_id else None)
        train_rows, eval_rows, described = _hub_pools(spec, hub_id, config)

    _check_fields(spec, train_rows, f"train data ({described.get('train_files', described.get('hub_id'))})")
    train_pool, train_pos = _labelled(spec, train_rows, "the train data")
    if not train_pool:
        raise UserError("the train data is empty")
    info: dict[str, Any] = {"task": spec.name, "source": described, "seed": seed, "eval_seed": eval_seed}

    if eval_rows is not None:
        _check_fields(spec, eval_rows, f"eval data ({described.get('eval_files', described.get('hub_id'))})")
        eval_pool, eval_pos = _labelled(spec, eval_rows, "the eval data")
        n_eval_take = len(eval_pool) if n_eval is None else min(n_eval, len(eval_pool))
        perm = np.random.default_rng([eval_seed, 1]).permutation(len(eval_pool))
        eval_idx = sorted(int(i) for i in perm[:n_eval_take])
        train_dev_pool, train_dev_pos = train_pool, train_pos
        eval_positions = [eval_pos[i] for i in eval_idx]
        eval_examples = [eval_pool[i] for i in eval_idx]
        pools = {"train": "train", "dev": "train", "eval": "eval"}
    else:
        # One file: eval first (held out at most a fifth when the file is small), train/dev from the rest.
        n_carve = n_eval if n_eval is not None else len(train_pool) // 5
        rest_idx, eval_idx, carve = sample_indices(len(train_pool), None, n_carve, [eval_seed, 1])
        eval_positions = [train_pos[i] for i in eval_idx]
        eval_examples = [train_pool[i] for i in eval_idx]
        train_dev_pool = [train_pool[i] for i in rest_idx]
        train_dev_pos = [train_pos[i] for i in rest_idx]
        pools = {"train": "train", "dev": "train", "eval": "train"}
        info["eval_carved_from_train"] = True
        info["eval_shrunk"] = carve["held_out_shrunk"]

    train_idx, dev_idx, drawn = sample_indices(len(train_dev_pool), n_train, n_dev, [seed, 0])
    info.update(
        requested={"train": n_train, "dev": n_dev, "eval": n_eval},
        sizes={"train": len(train_idx), "dev": len(dev_idx), "eval": len(eval_examples)},
        pool_sizes={"train": len(train_pool), "eval": len(eval_pool) if eval_rows is not None else None},
        dev_shrunk=drawn["held_out_shrunk"],
        dev_rule="dev = min(n_dev, N // 5) when n_train + n_dev exceeds the train pool N",
    )
    return Splits(
        train=[train_dev_pool[i] for i in train_idx],
        dev=[train_dev_pool[i] for i in dev_idx],
        eval=eval_examples,
        indices={
            "train": [train_dev_pos[i] for i in train_idx],
            "dev": [train_dev_pos[i] for i in dev_idx],
            "eval": eval_positions,
        },
        pools=pools,
        info=info,
    )


# -------------------------------------------------------------------------------------------- encoding

def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's default encoding starts with its bos token (OPT, LLaMA: yes; GPT-2: no)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos


def encode_pair(tokenizer, context: str, continuation: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of ``context + continuation`` and the number of trailing continuation tokens.

    Exact tokens: the text is split where the task template splits it, nothing moves between context and
    continuation. Continuation tokens are those of the joint encoding after the context's own tokens when the
    joint encoding starts with them (no merge across the boundary; this keeps tokenizers that add a prefix
    space to a lone string, e.g. LLaMA's, from scoring a space that is not there); otherwise the continuation is
    encoded on its own. A bos token is prepended when the tokenizer does so by default; no eos is appended.
    When the result is longer than ``max_length``, tokens are dropped from the left of the context (the bos
    stays); the continuation is cut from the right only if it alone would not fit beside one context token.
    Raises ``ValueError`` when the continuation encodes to no tokens (:func:`encode_candidates` turns it into
    a one-line ``UserError`` naming the task and the word).
    """
    if max_length < 2:
        raise ValueError("max_length must be at least 2")
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
        cont = whole[len(ctx) :]
    else:
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"] if continuation else []
    if not cont:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens")
    prefix = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    if not prefix and not ctx:
        # The first scored token needs a position before it.
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        prefix = [start]
    room = max_length - len(prefix)
    if len(cont) > room - 1:
        cont = cont[: max(room - 1, 1)]
    if len(ctx) + len(cont) > room:
        ctx = ctx[len(ctx) + len(cont) - room :]
    if not prefix and not ctx:
        ctx = [tokenizer.eos_token_id]
        cont = cont[: max_length - 1]
    return prefix + ctx + cont, len(cont)


@dataclass(frozen=True)
class EncodedCandidates:
    """Token ids of one example's candidates: candidate ``k`` is ``contexts[k] + continuations[k]``, and the
    score covers ``continuations[k]`` only. ``label`` is the gold index (``None`` if unlabelled).
    ``loss_units`` is what the example counts in its micro-batch's loss mean: 1 for ``classification`` (a mean
    over examples), its gold tokens for ``lm`` (a mean over tokens); data-parallel ranks weight their
    micro-batch losses by it (``distributed.local_chunks``)."""

    contexts: tuple[tuple[int, ...], ...]
    continuations: tuple[tuple[int, ...], ...]
    label: int | None
    loss_units: int = 1

    @property
    def shares_context(self) -> bool:
        return all(c == self.contexts[0] for c in self.contexts)


def _candidate_name(spec: TaskSpec | None, candidates: Candidates, k: int) -> str:
    if spec is not None and spec.scoring == "label_words" and k < len(spec.verbalizer):
        return f"label word {spec.verbalizer[k]!r}"
    return f"candidate {candidates.continuations[k]!r} (after {candidates.contexts[k][-40:]!r})"


def encode_candidates(candidates: Candidates, tokenizer, max_length: int, spec: TaskSpec | None = None
                      ) -> EncodedCandidates:
    """:func:`encode_pair` of every candidate, checked: each continuation has at least one token and no two
    candidates are the same token sequence. Either failure is one ``UserError`` line naming the task and word
    (e.g. a WordLevel vocabulary reloaded under a tokenizer class that ignores it maps every label word to
    nothing or to ``<unk>``)."""
    task = spec.name if spec is not None else "?"
    contexts, continuations = [], []
    for k, (context, continuation) in enumerate(zip(candidates.contexts, candidates.continuations)):
        try:
            ids, n = encode_pair(tokenizer, context, continuation, max_length)
        except ValueError:
            raise UserError(
                f"task {task}: {_candidate_name(spec, candidates, k)} encodes to no tokens with this tokenizer; "
                "every candidate needs at least one token (check the tokenizer's vocabulary)") from None
        contexts.append(tuple(ids[: len(ids) - n]))
        continuations.append(tuple(ids[len(ids) - n :]))
    seen: dict[tuple, int] = {}
    for k, pair in enumerate(zip(contexts, continuations)):
        if pair in seen:
            j = seen[pair]
            raise UserError(
                f"task {task}: {_candidate_name(spec, candidates, j)} and {_candidate_name(spec, candidates, k)} "
                f"encode to the same tokens {list(pair[1])}; candidates must differ (check the tokenizer's "
                "vocabulary)")
        seen[pair] = k
    return EncodedCandidates(tuple(contexts), tuple(continuations), candidates.label)


def check_candidates(spec: TaskSpec, tokenizer, examples: Sequence[dict], max_length: int) -> int:
    """Start-up check: encode every example's candidates (:func:`encode_candidates`); returns how many.

    Raises the first ``UserError`` (a label word with no tokens, two candidates with equal tokens)."""
    for example in examples:
        encode_candidates(spec.render(example), tokenizer, max_length, spec)
    return len(examples)


def encode_for_training(examples: Sequence[dict], tokenizer, spec: TaskSpec, max_length: int = 256,
                        objective: str | None = None) -> list[EncodedCandidates]:
    """Training encodings of labelled examples for ``objective`` (default: the task's published one).

    ``classification`` keeps every candidate (the loss is cross-entropy over their scores); ``lm`` keeps only
    the gold candidate, as a one-candidate example with label 0 (the loss is its continuation's token-mean
    negative log-likelihood: ZO-Bench's WinoGrande, MeZO's non-classification training).
    """
    objective = objective or spec.objective
    encoded = []
    for example in examples:
        candidates = spec.render(example)
        if candidates.label is None:
            raise UserError(f"task {spec.name}: a training example has no label")
        enc = encode_candidates(candidates, tokenizer, max_length, spec)
        if objective == "lm":
            k = enc.label
            enc = EncodedCandidates((enc.contexts[k],), (enc.continuations[k],), 0, len(enc.continuations[k]))
        encoded.append(enc)
    return encoded


def collate_candidates(batch: Sequence[EncodedCandidates], pad_id: int, share_context: bool = True) -> dict:
    """One right-padded batch of token rows plus the index tensors that say which logits score what.

    Rows: an example whose candidates share the context and have one-token continuations (label words) gets
    **one** row, its context, and every candidate is read off the last context position; otherwise (or with
    ``share_context=False``) each candidate is its own row, context + continuation. Returned tensors:
    ``input_ids``, ``attention_mask`` (rows x width); per scored token ``score_row``, ``score_pos`` (the
    position whose logits predict it), ``score_token``, ``score_candidate`` (flat candidate index); per
    example ``labels`` (gold index, -100 if unlabelled) and ``num_candidates``.
    """
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    if pad_id is None:
        raise ValueError("pad_id is None: give the tokenizer a pad token (e.g. tokenizer.pad_token = tokenizer.eos_token)")
    rows: list[tuple[int, ...]] = []
    score_row, score_pos, score_token, score_candidate = [], [], [], []
    candidate = 0
    for enc in batch:
        single = share_context and enc.shares_context and all(len(c) == 1 for c in enc.continuations)
        if single:
            rows.append(enc.contexts[0])
            for cont in enc.continuations:
                score_row.append(len(rows) - 1)
                score_pos.append(len(enc.contexts[0]) - 1)
                score_token.append(cont[0])
                score_candidate.append(candidate)
                candidate += 1
            continue
        for ctx, cont in zip(enc.contexts, enc.continuations):
            rows.append(ctx + cont)
            for j, token in enumerate(cont):
                score_row.append(len(rows) - 1)
                score_pos.append(len(ctx) - 1 + j)
                score_token.append(token)
                score_candidate.append(candidate)
            candidate += 1
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, : len(r)] = 1
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return {
        "input_ids": input_ids, "attention_mask": attention_mask,
        "score_row": as_long(score_row), "score_pos": as_long(score_pos), "score_token": as_long(score_token),
        "score_candidate": as_long(score_candidate),
        "labels": as_long([-100 if enc.label is None else enc.label for enc in batch]),
        "num_candidates": as_long([len(enc.continuations) for enc in batch]),
    }


def collate(batch: Sequence[dict], pad_id: int) -> dict:
    """Right-pad a list of encodings into LongTensors ``input_ids`` (``pad_id``), ``attention_mask`` (0) and,
    when present, ``labels`` (-100). Right padding keeps every real token at its unpadded position."""
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    if pad_id is None:
        raise ValueError("pad_id is None: give the tokenizer a pad token (e.g. tokenizer.pad_token = tokenizer.eos_token)")
    width = max(len(item["input_ids"]) for item in batch)
    out = {
        "input_ids": torch.full((len(batch), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(batch), width), dtype=torch.long),
    }
    has_labels = all("labels" in item for item in batch)
    if has_labels:
        out["labels"] = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        out["input_ids"][row, :n] = torch.tensor(item["input_ids"], dtype=torch.long)
        out["attention_mask"][row, :n] = torch.tensor(item.get("attention_mask", [1] * n), dtype=torch.long)
        if has_labels:
            out["labels"][row, :n] = torch.tensor(item["labels"], dtype=torch.long)
    return out
