r"""The one candidate-scoring function, and the training objectives built on it.

:func:`candidate_logprobs` returns, for every candidate of a collated batch (``data.collate_candidates``), the
sum of its continuation tokens' log-probabilities and their count. Evaluation ranks candidates by the mean
(``evaluation.score_candidates``); training minimises

* ``classification``: cross-entropy over each example's candidate means
  :math:`s_k = \frac{1}{|c_k|}\sum_{t\in c_k}\log p_\theta(x_t\mid x_{<t})`, i.e.
  :math:`-\log \mathrm{softmax}(s)_{\text{gold}}` averaged over examples (MeZO ``--train_as_classification``);
* ``lm``: the token-mean negative log-likelihood of the gold continuation over the micro-batch,
  :math:`-\sum_{\text{ex}}\sum_{t\in c_\text{gold}}\log p / \sum_{\text{ex}}|c_\text{gold}|` (HF's causal-LM loss
  with the prompt masked, as MeZO/ZO-Bench train non-classification tasks).

Logits only where scored: a forward pre-hook on the output embedding hands it just the hidden states of the
scored positions, so the vocabulary projection runs on a few rows instead of every position (anything the
model applies after the head, e.g. logit soft-capping, is element-wise and still applies). Label-word examples
are one row per example (the shared context; ``collate_candidates``), so their candidates cost one forward.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["candidate_logprobs", "classification_loss", "lm_loss", "objective_loss_fn", "per_example_losses"]


@contextmanager
def _head_on_rows(model, rows: torch.Tensor, positions: torch.Tensor, width: int):
    """Inside: the model's output embedding sees only hidden states ``[rows, positions]`` (shape 1 x N x H).

    ``width`` is the token width of the batch; prompt tuning prepends virtual positions to the hidden states,
    so positions are counted from the right end."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("model has no output embedding (get_output_embeddings() is None); cannot score tokens")

    def pick(module, args):
        hidden = args[0]
        offset = hidden.shape[-2] - width
        at = hidden.device  # with a device map the head may sit on another device than the inputs
        return (hidden[rows.to(at), positions.to(at) + offset].unsqueeze(0),) + tuple(args[1:])

    handle = head.register_forward_pre_hook(pick)
    try:
        yield
    finally:
        handle.remove()


def candidate_logprobs(model, batch: dict, logits_where_scored: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums, counts)``: per flat candidate, the summed log-probability of its continuation tokens (at least
    float32, differentiable when grad is on) and the number of those tokens.

    ``logits_where_scored=False`` computes the full logits of every position and gathers afterwards (the
    reference path; same numbers up to reduction order).
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    rows, positions, tokens, owner = batch["score_row"], batch["score_pos"], batch["score_token"], batch["score_candidate"]
    width = input_ids.shape[1]
    if logits_where_scored:
        with _head_on_rows(model, rows, positions, width):
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        logits = logits.reshape(-1, logits.shape[-1])
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        # prompt tuning: the real tokens are the last `width`
        logits = logits[:, -width:, :][rows.to(logits.device), positions.to(logits.device)]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-softmax of 16-bit logits in fp32 (a float64 model keeps float64)
    tokens, owner = tokens.to(logits.device), owner.to(logits.device)
    token_logprobs = logits.log_softmax(dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)
    n_candidates = int(batch["num_candidates"].sum())
    sums = torch.zeros(n_candidates, dtype=token_logprobs.dtype, device=token_logprobs.device)
    sums = sums.index_add(0, owner, token_logprobs)
    counts = torch.zeros(n_candidates, dtype=token_logprobs.dtype, device=token_logprobs.device)
    counts = counts.index_add(0, owner, torch.ones_like(token_logprobs))
    return sums, counts


def classification_loss(model, batch: dict) -> torch.Tensor:
    """Cross-entropy over each example's candidate mean log-likelihoods, averaged over examples."""
    sums, counts = candidate_logprobs(model, batch)
    per_example = batch["num_candidates"]
    if bool((per_example != per_example[0]).any()):
        raise ValueError("classification loss needs the same number of candidates in every example of a batch")
    means = (sums / counts).view(len(per_example), int(per_example[0]))
    return torch.nn.functional.cross_entropy(means, batch["labels"].to(means.device))


def lm_loss(model, batch: dict) -> torch.Tensor:
    """Token-mean negative log-likelihood of each example's gold candidate (over the whole micro-batch)."""
    sums, counts = candidate_logprobs(model, batch)
    starts = torch.cumsum(batch["num_candidates"], 0) - batch["num_candidates"]
    gold = (starts + batch["labels"]).to(sums.device)
    return -sums[gold].sum() / counts[gold].sum()


def per_example_losses(model, batch: dict, objective: str) -> torch.Tensor:
    """Each example's loss, shape ``(B,)``: its cross-entropy over candidates (``classification``) or its gold
    continuation's mean NLL (``lm``; the batch loss averages over tokens instead, equal for equal lengths)."""
    sums, counts = candidate_logprobs(model, batch)
    per = batch["num_candidates"]
    labels = batch["labels"].to(sums.device)
    if objective == "classification":
        means = (sums / counts).view(len(per), int(per[0]))
        return torch.nn.functional.cross_entropy(means, labels, reduction="none")
    gold = (torch.cumsum(per, 0) - per).to(sums.device) + labels
    return -sums[gold] / counts[gold]


def objective_loss_fn(objective: str):
    """``(model, batch) -> loss`` of ``classification`` or ``lm``."""
    if objective == "classification":
        return classification_loss
    if objective == "lm":
        return lm_loss
    raise ValueError(f"unknown objective {objective!r}")
