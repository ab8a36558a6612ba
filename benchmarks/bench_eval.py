"""Evaluation time, new path / reference path, measured side by side in one run.

The new path (``evaluate(..., fast=True)``, the default) reads label words off **one** forward of the shared
context and projects to the vocabulary only at scored positions; the reference path (``fast=False``) is the
previous evaluation: one row per candidate, logits at every position. Both score the same examples with the
same model, alternating repeats so load on a shared machine hits both alike; the result JSON records the
median times, their ratio and whether the two paths gave the same predictions.

Data is SST-2-shaped: generated sentences (made-up words, no real text) padded with filler words to about the
length of SST-2 validation sentences (``--words``), two label words. The model is a randomly initialised OPT of
the chosen shape (``llm_experiments.bench.build_model``, no download).

Usage: ``python benchmarks/bench_eval.py [--shape opt-125m] [--examples 64] [--batch-size 16] [--repeats 3]
[--out benchmarks/results/eval_cpu_opt-125m.json]``
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hybridtheory.io import atomic_write_json
from llm_experiments.bench import SHAPES, build_model
from llm_experiments.evaluation import evaluate
from llm_experiments.models import seeded_global_init
from llm_experiments.tasks import get_task
from llm_experiments.testing import generate_task_examples, made_up_words, tiny_tokenizer


def sst2_shaped(n: int, words: int, seed: int) -> list[dict]:
    """Generated SST-2 rows whose sentences are padded with made-up filler words to ``words`` words."""
    rows = generate_task_examples("sst2", n, seed=seed)
    filler = made_up_words(40, seed=seed + 99)
    rng = np.random.default_rng(seed)
    for row in rows:
        have = row["sentence"].split()
        extra = [filler[i] for i in rng.integers(len(filler), size=max(words - len(have), 0))]
        row["sentence"] = " ".join(extra[: len(extra) // 2] + have[:-1] + extra[len(extra) // 2:]) + " ."
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="opt-125m", choices=[s for s in SHAPES if s != "llama-7b"])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--words", type=int, default=20, help="words per sentence (SST-2 validation: ~19 on average)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    ns = parser.parse_args(argv)
    torch.set_num_threads(ns.threads)
    device = torch.device(ns.device)
    tokenizer = tiny_tokenizer()  # ids < 1024 are valid in every shape's vocabulary
    with seeded_global_init(0):
        model = build_model(ns.shape, torch.float32, device).eval()
    spec = get_task("sst2")
    rows = sst2_shaped(ns.examples, ns.words, seed=0)
    tokens = [len(tokenizer(spec.render(r).contexts[0])["input_ids"]) for r in rows]

    def timed(fast: bool) -> tuple[float, dict]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = evaluate(model, tokenizer, spec, rows, batch_size=ns.batch_size, return_predictions=True, fast=fast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    timed(True), timed(False)  # warm-up
    times = {"new": [], "reference": []}
    results = {}
    for _ in range(ns.repeats):
        for name, fast in (("new", True), ("reference", False)):
            seconds, results[name] = timed(fast)
            times[name].append(seconds)
    median = {k: statistics.median(v) for k, v in times.items()}
    max_gap = max(abs(a - b) for ra, rb in zip(results["new"]["scores"], results["reference"]["scores"])
                  for a, b in zip(ra, rb))
    out = {
        "what": "evaluation time of evaluate(fast=True) / evaluate(fast=False) on SST-2-shaped generated data",
        "command": "python benchmarks/bench_eval.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "shape": ns.shape, "architecture": {"class": "OPTForCausalLM", **SHAPES[ns.shape]}, "init": "random",
        "examples": ns.examples, "batch_size": ns.batch_size, "context_tokens_mean": float(np.mean(tokens)),
        "repeats": ns.repeats, "seconds": times, "median_s": median,
        "ratio_new_over_reference": median["new"] / median["reference"], "goal": "<= 0.5",
        "same_predictions": results["new"]["predictions"] == results["reference"]["predictions"],
        "max_score_gap": max_gap, "accuracy": {k: r["accuracy"] for k, r in results.items()},
        "device": str(device) if device.type != "cpu" else
        f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {ns.threads} torch threads, shared)",
        "torch": torch.__version__,
    }
    path = Path(ns.out or f"benchmarks/results/eval_{device.type}_{ns.shape}.json")
    atomic_write_json(path, out, indent=2)
    print(f"new {median['new']:.2f} s, reference {median['reference']:.2f} s, ratio {out['ratio_new_over_reference']:.3f} "
          f"(same predictions: {out['same_predictions']}); wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
