r"""Candidate scoring and accuracy, with the majority-class baseline beside every accuracy.

Score of candidate ``k`` of an example (``Candidates`` from :meth:`TaskSpec.render`):

.. math::  s_k = \frac{1}{|c_k|} \sum_{t \in c_k} \log p_\theta(x_t \mid x_{<t}),

the **mean** per-token log-probability of the continuation tokens ``c_k`` given everything before them
(MeZO / ZO-Bench convention, see DATA.md; ``reduction="sum"`` gives the total instead). The prediction
is ``argmax_k s_k`` (first index on ties). For ``label_words`` tasks the contexts are equal and the
continuations are the verbalizer words; for WinoGrande's ``partial`` scoring the continuations are the shared
text after the blank and the contexts differ, so mean and sum rank the options the same whenever the suffix
tokenises to the same length for both options (it does unless a merge crosses the blank).

All candidates of ``batch_size`` examples go through the model in **one** right-padded forward pass; right
padding leaves every real token at its unpadded position, so batched scores equal one-at-a-time scores up to
floating-point reduction order (tested). The scores come from the same function training uses
(:func:`llm_experiments.scoring.candidate_logprobs`): label-word examples cost one row (the shared context)
and only scored positions reach the vocabulary projection. ``fast=False`` is the reference path (one row per
candidate, full logits), kept for the agreement test and ``benchmarks/bench_eval.py``.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from .data import collate_candidates, encode_candidates
from .scoring import candidate_logprobs
from .errors import UserError
from .tasks import Candidates, TaskSpec

__all__ = ["score_candidates", "evaluate", "majority_baseline"]


def _model_device(model):
    for param in model.parameters():
        return param.device
    import torch

    return torch.device("cpu")


def _position_limit(model) -> int | None:
    """Longest real-token sequence the model accepts: its position table minus prompt/prefix virtual tokens."""
    config = getattr(model, "config", None)
    limit = None
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            limit = value
            break
    if limit is None:
        return None
    peft_configs = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)
    if isinstance(peft_configs, dict) and active in peft_configs:
        adapter = peft_configs[active]
        # Prompt tuning prepends virtual tokens; prefix tuning's cached prefix shifts the positions of
        # the real tokens by the same count (GPT-2, OPT). Either way they use up position slots.
        if getattr(adapter, "is_prompt_learning", False):
            limit -= int(getattr(adapter, "num_virtual_tokens", 0) or 0)
    return limit


class _EvalMode:
    """``model.eval()`` and ``torch.no_grad()`` inside; every submodule's train/eval flag restored on exit."""

    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self):
        import torch

        self.modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.no_grad.__exit__(*exc)
        for module, was_training in self.modes:
            module.training = was_training


def score_candidates(
    model,
    tokenizer,
    requests: Sequence[Candidates],
    batch_size: int = 8,
    max_length: int = 512,
    reduction: str = "mean",
    spec: TaskSpec | None = None,
    fast: bool = True,
) -> list[list[float]]:
    """Scores ``s_k`` (module docstring) of every candidate of every request.

    ``batch_size`` counts examples: each forward pass holds all candidates of ``batch_size`` examples. The
    model runs in eval mode under ``no_grad``; its previous per-module train/eval flags are restored.
    ``max_length`` is lowered to the model's position limit when that is smaller (prompt-tuning tokens
    counted); longer inputs lose tokens from the left of the context (``data.encode_pair``). ``spec`` names
    the task in the candidate check's error line. ``fast=False``: reference path (module docstring).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    limit = _position_limit(model)
    if limit is not None:
        max_length = min(max_length, limit)  # longer inputs would index past the position table
    device = _model_device(model)
    scores: list[list[float]] = []
    with _EvalMode(model):
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            encoded = [encode_candidates(request, tokenizer, max_length, spec) for request in chunk]
            batch = {k: v.to(device) for k, v in collate_candidates(encoded, pad_id, share_context=fast).items()}
            sums, counts = candidate_logprobs(model, batch, logits_where_scored=fast)
            flat = (sums.double() / counts.double() if reduction == "mean" else sums.double()).cpu().tolist()
            offset = 0
            for enc in encoded:
                scores.append(flat[offset : offset + len(enc.continuations)])
                offset += len(enc.continuations)
    return scores


def majority_baseline(labels: Sequence[int]) -> tuple[float, int | None]:
    """(accuracy of always predicting the most frequent gold label, that label); ties go to the smaller label."""
    if not labels:
        return float("nan"), None
    counts = Counter(labels)
    label = min(counts, key=lambda k: (-counts[k], k))
    return counts[label] / len(labels), label


def evaluate(
    model,
    tokenizer,
    spec: TaskSpec,
    examples: Sequence[dict],
    batch_size: int = 8,
    max_length: int = 512,
    reduction: str = "mean",
    return_predictions: bool = False,
    fast: bool = True,
) -> dict[str, Any]:
    """Accuracy of argmax candidate scoring on ``examples``, with the majority-class baseline.

    Returns ``accuracy``, ``majority_baseline`` and ``majority_label`` (from these examples' gold labels),
    ``n``, per-class ``gold_counts``, ``predicted_counts`` and ``correct_counts`` (keys are candidate indices
    as strings, e.g. "0"/"1" for the verbalizer order or WinoGrande's option1/option2), ``scoring`` and
    ``reduction``; with ``return_predictions`` also ``predictions`` and ``scores``.
    """
    requests = [spec.render(example) for example in examples]
    if any(request.label is None for request in requests):
        raise UserError(f"task {spec.name}: evaluation examples must be labelled")
    scores = score_candidates(model, tokenizer, requests, batch_size, max_length, reduction, spec=spec, fast=fast)
    predictions = [max(range(len(row)), key=lambda k: (row[k], -k)) for row in scores]
    gold = [request.label for request in requests]
    correct = [p == g for p, g in zip(predictions, gold)]
    baseline, majority_label = majority_baseline(gold)
    classes = range(max([spec.num_candidates] + [len(row) for row in scores]))
    result: dict[str, Any] = {
        "accuracy": sum(correct) / len(correct) if correct else float("nan"),
        "majority_baseline": baseline,
        "majority_label": majority_label,
        "n": len(requests),
        "gold_counts": {str(k): gold.count(k) for k in classes},
        "predicted_counts": {str(k): predictions.count(k) for k in classes},
        "correct_counts": {str(k): sum(1 for p, g in zip(predictions, gold) if g == k and p == g) for k in classes},
        "scoring": spec.scoring,
        "reduction": reduction,
    }
    if return_predictions:
        result["predictions"] = predictions
        result["scores"] = scores
    return result
