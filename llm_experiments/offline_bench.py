r"""An offline accuracy benchmark for "when does the ZO block help": a small LLaMA pretrained by the project on a
generated language, fine-tuned by every method on generated tasks of two kinds.

Nothing is downloaded and no real text is used. The pieces:

* **The world** (:func:`build_world`): made-up words in fixed roles: entities whose home city is a fact of the
  pretraining language (``known``), entities that never occur in pretraining (``new``), cities, positive and
  negative cue words, filler words with a fixed bigram structure, and a few English function words.
* **The language and the model** (:func:`pretrain`): a word-level tokenizer (one token per word) and a
  ``LlamaForCausalLM`` (about 0.33M parameters by default) pretrained with AdamW on generated lines that mix
  facts ("``e`` lives in ``c`` ." / "the home of ``e`` is ``c`` ."), reviews ("... ``cue`` ... . it was
  good|bad .") and filler sentences. The result is a pure function of :class:`PretrainConfig`, cached in
  ``$XDG_CACHE_HOME/hybridtheory/`` (``~/.cache`` by default) under a hash of the config, and rebuilt when
  missing.
* **Two downstream tasks** (:func:`task_spec`, :func:`task_splits`), both scored as label-word classification
  by :mod:`llm_experiments.evaluation`:

  - ``sentiment`` (*nearly known*): "review : ... answer :" -> " good" / " bad", a new template and new
    label position for the polarity the model learned in pretraining; PEFT should suffice.
  - ``facts`` (*new knowledge*): "``e`` lives in" -> one of the cities, for entities the pretrained model has
    never seen. It is a memorisation task: train, dev and eval ask the same facts (there are no held-out facts
    by construction), so accuracy is the fraction of injected facts recalled.

* **Cells** (:func:`run_cell`): one method x task x seed x step sizes, trained with the project's
  :class:`~llm_experiments.trainer.Trainer` (the one core), dev accuracy every ``eval_every`` steps with the
  forward/backward passes and wall time so far, the eval accuracy at the end (last state, no selection), and
  the displacement of each block.
* **The benchmark** (:func:`run_benchmark`): step sizes tuned per method and task on a small grid with the dev
  split only (one tuning seed, not one of the reported seeds), then >= 5 seeds per method x task, the
  ablations (hybrid with ``lr_base = 0``; LoRA rank 1/4/16 for fo-peft and hybrid; accuracy at an equal
  forward+backward pass budget from the dev curves), the probe of :mod:`llm_experiments.probe` on the
  pretrained model, and hybrid with plain SGD at Theorem 1's caps and Corollary 1's ``mu`` computed from the
  probe's constants, beside hybrid-SGD with tuned step sizes.

``python -m llm_experiments.offline_bench --out figures/bridge`` (``make bridge``) writes ``results.json``,
``table.md``/``table.csv``, the figures and ``manifest.json``; every cell's result is cached in
``OUT/.cache/`` under a hash of its settings, so a rerun only replots. ``--quick`` is the CI-sized version.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import UserError

BENCH_VERSION = 2  # bump when a cell's meaning changes (invalidates the cell cache)
FUNCTION_WORDS = ("lives", "in", "the", "home", "of", "is", ".", "it", "was", "good", "bad", "review", ":",
                  "answer", "and")


# ---------------------------------------------------------------------- the generated world and language
@dataclass(frozen=True)
class World:
    known: tuple[str, ...]
    new: tuple[str, ...]
    cities: tuple[str, ...]
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    filler: tuple[str, ...]
    home: dict          # entity -> city, for known and new entities
    successors: dict    # filler word -> its 3 allowed next filler words (the bigram structure)

    @property
    def vocabulary(self) -> list[str]:
        return (list(FUNCTION_WORDS) + list(self.known) + list(self.new) + list(self.cities) + list(self.positive)
                + list(self.negative) + list(self.filler))


def build_world(n_known: int = 24, n_new: int = 32, n_cities: int = 8, n_cues: int = 6, n_filler: int = 24,
                seed: int = 0) -> World:
    """The fixed world of made-up words (a pure function of the arguments)."""
    from .testing import made_up_words

    n = n_known + n_new + n_cities + 2 * n_cues + n_filler
    words = made_up_words(n, seed=1000 + seed)
    cut = np.cumsum([0, n_known, n_new, n_cities, n_cues, n_cues, n_filler])
    known, new, cities, pos, neg, filler = (tuple(words[a:b]) for a, b in zip(cut[:-1], cut[1:]))
    rng = np.random.default_rng([seed, 1])
    home = {e: cities[int(rng.integers(n_cities))] for e in known + new}
    successors = {w: tuple(str(s) for s in rng.choice(filler, size=3, replace=False)) for w in filler}
    return World(known, new, cities, pos, neg, filler, home, successors)


def word_tokenizer(world: World):
    """A word-level tokenizer (whitespace split, one token per word, ``<s>`` prepended) for the world's words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + world.vocabulary)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=256)


def _filler_run(world: World, rng, length: int) -> list[str]:
    word = str(rng.choice(world.filler))
    out = [word]
    for _ in range(length - 1):
        word = world.successors[word][int(rng.integers(3))]
        out.append(word)
    return out


def _review(world: World, rng) -> tuple[str, int]:
    label = int(rng.integers(2))
    cue = str(rng.choice(world.positive if label else world.negative))
    words = _filler_run(world, rng, int(rng.integers(2, 5)))
    words.insert(int(rng.integers(len(words) + 1)), cue)
    return " ".join(words), label


def pretraining_lines(world: World, n_lines: int, seed: int) -> list[str]:
    """Generated pretraining text: each line holds 3 sentences (facts about known entities, reviews with their
    polarity word, filler). New entities never occur."""
    rng = np.random.default_rng([seed, 2])
    lines = []
    for _ in range(n_lines):
        sentences = []
        for _ in range(3):
            kind = rng.random()
            if kind < 0.35:
                e = str(rng.choice(world.known))
                sentences.append(f"{e} lives in {world.home[e]} ." if rng.random() < 0.5
                                 else f"the home of {e} is {world.home[e]} .")
            elif kind < 0.7:
                text, label = _review(world, rng)
                sentences.append(f"{text} . it was {'good' if label else 'bad'} .")
            else:
                sentences.append(" ".join(_filler_run(world, rng, int(rng.integers(3, 7)))) + " .")
        lines.append(" ".join(sentences))
    return lines


@dataclass(frozen=True)
class PretrainConfig:
    """The pretrained model is a pure function of these fields (they name its cache folder)."""

    hidden_size: int = 96
    layers: int = 3
    intermediate_size: int = 256
    heads: int = 4
    kv_heads: int = 2
    lines: int = 3000
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    world_seed: int = 0
    n_new: int = 64             # entities absent from pretraining (the facts task); part of the vocabulary

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybridtheory"


def pretrain(cfg: PretrainConfig, cache_root: str | Path | None = None, log=print) -> Path:
    """The pretrained model folder (``save_pretrained`` model + tokenizer + ``pretrain.json``), built if missing.

    Deterministic: the init is seeded (:func:`~llm_experiments.models.seeded_global_init`), the data order
    comes from ``numpy`` with ``cfg.seed``, and the loop runs on CPU with one thread; the folder is written
    atomically.
    """
    import torch
    import transformers

    from hybridtheory.io import atomic_folder, atomic_write_json

    from .data import collate
    from .models import seeded_global_init

    folder = Path(cache_root or default_cache_root()) / f"bridge-lm-{cfg.key()}"
    if (folder / "pretrain.json").is_file():
        return folder
    start = time.perf_counter()
    world = build_world(n_new=cfg.n_new, seed=cfg.world_seed)
    tok = word_tokenizer(world)
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=128, tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with seeded_global_init(cfg.seed):
        model = transformers.LlamaForCausalLM(config).to(torch.float32)
    lines = pretraining_lines(world, cfg.lines, cfg.seed)
    encoded = []
    for line in lines:
        ids = tok(line)["input_ids"]
        encoded.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids})
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 3])
    order, pos, losses = rng.permutation(len(encoded)), 0, []
    model.train()
    with seeded_global_init(cfg.seed):  # dropout is 0; this only pins anything else that might draw
        for step in range(cfg.steps):
            if pos + cfg.batch_size > len(order):
                order, pos = rng.permutation(len(encoded)), 0
            batch = collate([encoded[i] for i in order[pos:pos + cfg.batch_size]], tok.pad_token_id)
            pos += cfg.batch_size
            lr = cfg.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / cfg.steps))  # warm-up, linear decay
            for group in opt.param_groups:
                group["lr"] = lr
            loss = model(**batch, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if log and (step + 1) % max(1, cfg.steps // 5) == 0:
                log(f"pretrain step {step + 1}/{cfg.steps}: loss {statistics.fmean(losses[-20:]):.3f}")
    model.eval()
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / "pretrain.json", {"config": asdict(cfg), "loss_first": losses[:5],
                                                  "loss_last20": statistics.fmean(losses[-20:]),
                                                  "params": sum(p.numel() for p in model.parameters()),
                                                  "seconds": time.perf_counter() - start})
    return folder


# ---------------------------------------------------------------------- downstream tasks
TASK_KINDS = {"sentiment": "nearly known (label words; PEFT should suffice)",
              "facts": "new knowledge (facts about entities absent from pretraining)"}


def task_spec(name: str, world: World):
    """The :class:`~llm_experiments.tasks.TaskSpec` of a generated task (not in the Hub task table)."""
    from .tasks import TaskSpec

    if name == "sentiment":
        return TaskSpec(name="bridge-sentiment", hf_id="generated", hf_config=None, train_split="train",
                        eval_split="validation", fields=("text",), label_field="label", label_values=("0", "1"),
                        scoring="label_words", verbalizer=(" bad", " good"),
                        render_fn=lambda ex, v: ((f"review : {ex['text']} . answer :",) * len(v), tuple(v)),
                        text_fields=("text",), notes="generated: polarity of the cue word, new template")
    if name == "facts":
        return TaskSpec(name="bridge-facts", hf_id="generated", hf_config=None, train_split="train",
                        eval_split="validation", fields=("name",), label_field="label",
                        label_values=tuple(str(i) for i in range(len(world.cities))), scoring="label_words",
                        verbalizer=tuple(" " + c for c in world.cities),
                        render_fn=lambda ex, v: ((f"{ex['name']} lives in",) * len(v), tuple(v)),
                        text_fields=("name",), notes="generated: home cities of entities absent from pretraining")
    raise UserError(f"unknown bridge task {name!r}; choose one of: {', '.join(TASK_KINDS)}")


def task_splits(name: str, world: World, n_train: int = 64, n_dev: int = 64, n_eval: int = 200, seed: int = 0):
    """Train/dev/eval examples (raw dicts) of a generated task; the facts task uses every new entity in each."""
    from .data import Splits

    if name == "sentiment":
        rng = np.random.default_rng([seed, 4])

        def draw(n):
            out = []
            for _ in range(n):
                text, label = _review(world, rng)
                out.append({"text": text, "label": label})
            return out
        return Splits(train=draw(n_train), dev=draw(n_dev), eval=draw(n_eval))
    if name == "facts":
        rows = [{"name": e, "label": world.cities.index(world.home[e])} for e in world.new]
        return Splits(train=list(rows), dev=list(rows), eval=list(rows))
    raise UserError(f"unknown bridge task {name!r}; choose one of: {', '.join(TASK_KINDS)}")


# ---------------------------------------------------------------------- one cell
@dataclass(frozen=True)
class Cell:
    """One run: a method with its step sizes on one task and seed. ``label`` names the configuration."""

    task: str
    method: str
    seed: int
    label: str
    lr_base: float = 0.0
    lr_adapter: float = 0.0
    fo_optimizer: str = "adam"
    lora_r: int = 4
    mu: float = 1e-3
    steps: int = 150
    batch_size: int = 16
    eval_every: int = 15
    purpose: str = "main"   # main, tune or theory
    zo_law: str = "rademacher"  # one Philox draw per 128 entries: ~6x cheaper on CPU than Gaussian, same E[uu^T] = I

    def key(self, model_key: str) -> str:
        cell = asdict(self)
        if self.method in ("fo-full", "fo-peft"):  # no ZO block: the law cannot matter (equal runs share a key)
            cell.pop("zo_law")
        text = json.dumps({"cell": cell, "model": model_key, "v": BENCH_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_cell(cell: Cell, model_dir: str, world_seed: int = 0, n_new: int = 64) -> dict:
    """Train one cell with the project's Trainer; return its dev curve, eval accuracy, passes, time and
    displacement. The loop stops at the first non-finite loss (``diverged``), evaluating the state it has."""
    import torch

    from .config import TrainConfig
    from .data import collate_candidates, encode_for_training
    from .evaluation import evaluate
    from .models import attach_peft, load_model_and_tokenizer, split_parameters
    from .scoring import objective_loss_fn
    from .tasks import resolve_objective
    from .trainer import Diverged, Trainer, split_micro_batches

    torch.set_num_threads(1)
    world = build_world(n_new=n_new, seed=world_seed)
    spec = task_spec(cell.task, world)
    splits = task_splits(cell.task, world)
    cfg = TrainConfig(model=model_dir, task=cell.task, method=cell.method, peft="lora", lora_r=cell.lora_r,
                      lora_alpha=2 * cell.lora_r, lr_base=cell.lr_base, lr_adapter=cell.lr_adapter,
                      fo_optimizer=cell.fo_optimizer, mu=cell.mu, zo_law=cell.zo_law, batch_size=cell.batch_size,
                      steps=cell.steps,
                      seed=cell.seed, eval_every=cell.eval_every, progress=False, device="cpu",
                      output_dir="unused")
    model, tok = load_model_and_tokenizer(model_dir, "float32")
    if cfg.uses_peft:
        model = attach_peft(model, "lora", seed=cell.seed, lora_r=cell.lora_r, lora_alpha=2 * cell.lora_r)
    split = split_parameters(model)
    objective = resolve_objective(spec, "auto")  # the task's published objective, as a run would train
    encoded = encode_for_training(splits.train, tok, spec, 64, objective)
    trainer = Trainer(model, split, cfg, len(encoded), torch.device("cpu"), loss_fn=objective_loss_fn(objective))
    pad = tok.pad_token_id

    def dev_point():
        acc = evaluate(model, tok, spec, splits.dev, batch_size=64)["accuracy"]
        return {"step": trainer.state.step, "passes": trainer.state.forwards + trainer.state.backwards,
                "forwards": trainer.state.forwards, "backwards": trainer.state.backwards,
                "time_s": trainer.state.elapsed_s, "dev": acc}

    curve, diverged, loss = [dev_point()], False, math.nan
    while trainer.state.step < cell.steps:
        batch = [encoded[i] for i in trainer.next_indices(cell.batch_size)]
        trainer.state.examples_seen += len(batch)
        try:
            loss = trainer.step(split_micro_batches(batch, 1, lambda c: collate_candidates(c, pad),
                                                    torch.device("cpu")))["loss"]
        except Diverged:
            diverged = True  # the trainer stopped before applying a non-finite update
            break
        if trainer.state.step % cell.eval_every == 0 or trainer.state.step == cell.steps:
            curve.append(dev_point())
    if curve[-1]["step"] != trainer.state.step:
        curve.append(dev_point())
    # the facts task's eval split is its dev split (the same facts): reuse the last dev evaluation
    final = ({"accuracy": curve[-1]["dev"], "majority_baseline": evaluate_majority(spec, splits.eval)}
             if splits.eval == splits.dev else evaluate(model, tok, spec, splits.eval, batch_size=64))
    return {"cell": asdict(cell), "curve": curve, "eval_accuracy": final["accuracy"],
            "majority_baseline": final["majority_baseline"], "dev_final": curve[-1]["dev"],
            "zero_shot_dev": curve[0]["dev"], "steps": trainer.state.step,
            "forwards": trainer.state.forwards, "backwards": trainer.state.backwards,
            "time_s": trainer.state.elapsed_s, "displacement": trainer.displacement(), "diverged": diverged,
            "last_loss": loss, "params": {"base": split.numel("base"), "adapter": split.numel("adapter")}}


def evaluate_majority(spec, examples) -> float:
    from .evaluation import majority_baseline
    return majority_baseline([spec.render(ex).label for ex in examples])[0]


def _run_cell_job(args) -> dict:
    cell, model_dir, world_seed, n_new = args
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return run_cell(cell, model_dir, world_seed, n_new)


# ---------------------------------------------------------------------- the benchmark plan
@dataclass
class BenchConfig:
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    tasks: tuple[str, ...] = ("sentiment", "facts")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tune_seed: int = 100
    steps: int = 80
    eval_every: int = 20
    batch_size: int = 16
    targets: dict = field(default_factory=lambda: {"sentiment": 0.95, "facts": 0.9})
    grids: dict = field(default_factory=lambda: {
        "fo-full": [3e-4, 1e-3, 3e-3],          # Adam, base
        "fo-peft": [3e-3, 1e-2, 3e-2],          # Adam, LoRA
        "zo-full": [1e-5, 1e-4, 1e-3],          # ZO-SGD, base
        "zo-peft": [1e-3, 1e-2, 1e-1],          # ZO-SGD, LoRA
        "hybrid": [1e-5, 1e-4, 1e-3],           # ZO-SGD base; LoRA at fo-peft's tuned Adam step
        "hybrid-sgd": [0.1, 0.3, 1.0],          # plain-SGD LoRA (the theory's update), base at hybrid's tuned
    })
    ranks: tuple[int, ...] = (1, 16)            # besides the default rank 4 (on the ablation tasks)
    ablation_seeds: int = 3                     # seeds of the rank, hybrid-SGD and theory rows (the first ones)
    ablation_tasks: tuple[str, ...] = ("facts",)  # ranks, hybrid-SGD and the theory's settings run here
    probe_checkpoints: tuple[int, ...] = (0, 40, 80)
    probe_task: str = "facts"
    quick: bool = False


def quick_config() -> BenchConfig:
    """CI size: a small model, one seed, short runs, one-point grids; every code path still runs."""
    return BenchConfig(
        pretrain=PretrainConfig(hidden_size=32, layers=1, intermediate_size=64, lines=300, steps=30, batch_size=16,
                                n_new=16),
        tasks=("facts",), seeds=(0,), steps=4, eval_every=2, batch_size=8,
        grids={"fo-full": [1e-3], "fo-peft": [1e-2], "zo-full": [1e-5], "zo-peft": [1e-3], "hybrid": [1e-5],
               "hybrid-sgd": [0.1]},
        ranks=(1,), probe_checkpoints=(0, 2), quick=True)


def _t95(n: int) -> float:
    """Two-sided 95% Student-t quantile for n samples (n - 1 degrees of freedom)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
    return table.get(n - 1, 1.96 if n > 30 else 2.1)


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval (0 for one value)."""
    vals = [float(v) for v in values]
    if len(vals) < 2:
        return (vals[0] if vals else math.nan), 0.0
    return statistics.fmean(vals), _t95(len(vals)) * statistics.stdev(vals) / math.sqrt(len(vals))


def to_target(curve: Sequence[dict], target: float) -> dict | None:
    """The first dev point with accuracy >= target (its step, passes and time), or None."""
    for p in curve:
        if p["dev"] >= target:
            return p
    return None


def at_passes(curve: Sequence[dict], budget: float) -> float:
    """Dev accuracy of the last evaluation within a pass budget (equal-pass comparisons)."""
    within = [p for p in curve if p["passes"] <= budget]
    return within[-1]["dev"] if within else math.nan


class _Runner:
    """Runs cells (cached by key, optionally in worker processes) and remembers their results."""

    def __init__(self, model_dir: Path, pre: PretrainConfig, cache: Path, workers: int, recompute: bool, log=print):
        self.model_dir, self.model_key, self.cache = str(model_dir), pre.key(), cache
        self.workers, self.recompute, self.world = workers, recompute, (pre.world_seed, pre.n_new)
        self.log = log
        self.computed = 0
        self.compute_s = 0.0
        self.pool = None  # one pool of worker processes for the whole benchmark (start-up is seconds each)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def run(self, cells: Sequence[Cell]) -> list[dict]:
        from hybridtheory.io import atomic_write_json

        self.cache.mkdir(parents=True, exist_ok=True)
        results: dict[int, dict] = {}
        todo = []
        for i, c in enumerate(cells):
            path = self.cache / f"{c.key(self.model_key)}.json"
            if path.is_file() and not self.recompute:
                results[i] = json.loads(path.read_text())
            else:
                todo.append(i)
        start = time.perf_counter()

        def done(i: int, out: dict) -> None:  # cached as soon as it finishes: an interrupted run resumes
            atomic_write_json(self.cache / f"{cells[i].key(self.model_key)}.json", out, default=float)
            results[i] = out
            finished = len([j for j in todo if j in results])
            if finished % 10 == 0 or finished == len(todo):
                self.log(f"  {finished}/{len(todo)} cells ({time.perf_counter() - start:.0f} s)")

        jobs = {i: (cells[i], self.model_dir, *self.world) for i in todo}
        if self.workers > 1 and len(jobs) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            if self.pool is None:
                self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            futures = {self.pool.submit(_run_cell_job, job): i for i, job in jobs.items()}
            for future in as_completed(futures):
                done(futures[future], future.result())
        else:
            for i, job in jobs.items():
                done(i, _run_cell_job(job))
        self.computed += len(todo)
        self.compute_s += time.perf_counter() - start
        if len(todo) < len(cells):
            self.log(f"  {len(cells) - len(todo)} cells from the cache")
        return [results[i] for i in range(len(cells))]


def _method_fields(method: str, lr: float, tuned: dict, task: str) -> dict:
    """Step-size fields of a cell for a grid value ``lr`` of ``method``."""
    if method == "fo-full":
        return {"method": "fo-full", "lr_base": lr, "fo_optimizer": "adam"}
    if method == "fo-peft":
        return {"method": "fo-peft", "lr_adapter": lr, "fo_optimizer": "adam"}
    if method == "zo-full":
        return {"method": "zo-full", "lr_base": lr, "fo_optimizer": "sgd"}
    if method == "zo-peft":
        return {"method": "zo-peft", "lr_adapter": lr, "fo_optimizer": "sgd"}
    if method == "hybrid":
        return {"method": "hybrid", "lr_base": lr, "lr_adapter": tuned[(task, "fo-peft")], "fo_optimizer": "adam"}
    if method == "hybrid-sgd":
        return {"method": "hybrid", "lr_base": tuned[(task, "hybrid")], "lr_adapter": lr, "fo_optimizer": "sgd"}
    raise ValueError(method)


def run_benchmark(out_dir: str | Path, cfg: BenchConfig, workers: int = 1, recompute: bool = False,
                  cache_root: str | Path | None = None, log=print) -> dict:
    """Pretrain (cached), tune, run every cell, probe, write results/table/figures/manifest into ``out_dir``."""
    from hybridtheory.io import atomic_write_json, atomic_write_text

    from .probe import ProbeSettings, run_probe

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    stages: dict[str, float] = {}
    log(f"pretraining (cached in {cache_root or default_cache_root()}) ...")
    model_dir = pretrain(cfg.pretrain, cache_root, log=log)
    stages["pretrain_s"] = time.perf_counter() - t0
    pre_info = json.loads((model_dir / "pretrain.json").read_text())
    runner = _Runner(model_dir, cfg.pretrain, out_dir / ".cache", workers, recompute, log)
    try:
        return _run_all(out_dir, cfg, runner, model_dir, pre_info, stages, t0, workers, recompute, log)
    finally:
        runner.close()


def _run_all(out_dir: Path, cfg: BenchConfig, runner: _Runner, model_dir: Path, pre_info: dict, stages: dict,
             t0: float, workers: int, recompute: bool, log) -> dict:
    from hybridtheory.io import atomic_write_json, atomic_write_text

    from .probe import ProbeSettings, run_probe

    common = {"steps": cfg.steps, "eval_every": cfg.eval_every, "batch_size": cfg.batch_size}

    # 1. tuning on dev (one tuning seed): fo-peft first (hybrid reuses its LoRA step), hybrid before hybrid-sgd
    t = time.perf_counter()
    tuned: dict = {}
    tuning_rows = []
    for phase in (("fo-full", "fo-peft", "zo-full", "zo-peft"), ("hybrid",), ("hybrid-sgd",)):
        plan = [(task, m, lr) for task in cfg.tasks for m in phase for lr in cfg.grids[m]
                if m != "hybrid-sgd" or task in cfg.ablation_tasks]
        cells = [Cell(task=task, seed=cfg.tune_seed, label=f"tune {m}", purpose="tune", **common,
                      **_method_fields(m, lr, tuned, task)) for task, m, lr in plan]
        log(f"tuning {', '.join(phase)}: {len(cells)} cells")
        by: dict = {}
        for (task, m, lr), r in zip(plan, runner.run(cells)):
            by.setdefault((task, m), []).append((lr, r))
        for (task, m), rows in by.items():
            # best final dev accuracy (a diverged run counts as -1); ties: the best mean dev accuracy along the
            # curve (faster learning), then the smaller step
            best = max(rows, key=lambda lr_r: (lr_r[1]["dev_final"] if not lr_r[1]["diverged"] else -1.0,
                                               statistics.fmean(p["dev"] for p in lr_r[1]["curve"]), -lr_r[0]))
            tuned[(task, m)] = best[0]
            tuning_rows += [{"task": task, "method": m, "lr": lr, "dev_final": r["dev_final"],
                             "dev_mean": statistics.fmean(p["dev"] for p in r["curve"]),
                             "diverged": r["diverged"], "chosen": lr == best[0]} for lr, r in rows]
    stages["tune_s"] = time.perf_counter() - t

    # 2. main cells, ablations
    t = time.perf_counter()
    configs: list[tuple[str, dict]] = []
    for m in ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid"):
        configs.append((m, {"m": m}))
    configs.append(("hybrid lr_base=0", {"m": "hybrid", "lr_base": 0.0}))
    ablations: list[tuple[str, dict]] = []
    for r in cfg.ranks:
        ablations.append((f"fo-peft r{r}", {"m": "fo-peft", "lora_r": r}))
        ablations.append((f"hybrid r{r}", {"m": "hybrid", "lora_r": r}))
    ablations.append(("hybrid-sgd (tuned)", {"m": "hybrid-sgd"}))
    main_cells = []
    for task in cfg.tasks:
        for label, spec in configs + (ablations if task in cfg.ablation_tasks else []):
            fields_ = _method_fields(spec["m"], tuned[(task, spec["m"])], tuned, task)
            if "lr_base" in spec:
                fields_["lr_base"] = spec["lr_base"]
            seeds = cfg.seeds if (label, spec) in configs else cfg.seeds[:cfg.ablation_seeds]
            for seed in seeds:
                main_cells.append(Cell(task=task, seed=seed, label=label, lora_r=spec.get("lora_r", 4), **common,
                                       **fields_))
    log(f"main and ablation cells: {len(main_cells)}")
    main = runner.run(main_cells)
    stages["main_s"] = time.perf_counter() - t

    # 3. probe on the pretrained model along a hybrid run (tuned), then the theory's settings
    t = time.perf_counter()
    from .config import TrainConfig
    world = build_world(n_new=cfg.pretrain.n_new, seed=cfg.pretrain.world_seed)
    ptask = cfg.probe_task
    probe_cfg = TrainConfig(model=str(model_dir), task=ptask, method="hybrid", peft="lora", lora_r=4, lora_alpha=8,
                            lr_base=tuned[(ptask, "hybrid")], lr_adapter=tuned[(ptask, "fo-peft")],
                            fo_optimizer="adam", batch_size=cfg.batch_size, steps=max(cfg.probe_checkpoints),
                            seed=0, progress=False, device="cpu", output_dir=str(out_dir))
    settings = ProbeSettings(examples=16 if cfg.quick else 32, batch_size=16 if cfg.quick else 32,
                             power_iters=4 if cfg.quick else 10, hutchinson=2 if cfg.quick else 6,
                             local_points=1, local_power_steps=1 if cfg.quick else 2)
    probe_path = out_dir / ".cache" / f"probe-{hashlib.sha256(json.dumps([probe_cfg.to_dict(), asdict(settings), list(cfg.probe_checkpoints), cfg.pretrain.key(), BENCH_VERSION], sort_keys=True, default=str).encode()).hexdigest()[:16]}.json"
    if probe_path.is_file() and not recompute:
        probe = json.loads(probe_path.read_text())
        from .probe import plot_probe
        plot_probe(probe, out_dir)
    else:
        log("probing the pretrained model along a hybrid run ...")
        import torch
        torch.set_num_threads(1)
        n_comp = math.ceil(len(task_splits(ptask, world).train) / cfg.batch_size)
        probe = run_probe(probe_cfg, cfg.probe_checkpoints, settings, out_dir, splits=task_splits(ptask, world),
                          spec=task_spec(ptask, world))
        probe["n_components"] = n_comp
        atomic_write_json(probe_path, probe, default=float)
    stages["probe_s"] = time.perf_counter() - t
    th = probe["theory"]
    t = time.perf_counter()
    mu_theory = th["corollary1"].get("d_x", {}).get("mu", 1e-3)
    theory_cells = [Cell(task=task, method="hybrid", seed=seed, label="hybrid-sgd (theory)", purpose="theory",
                         lr_base=th["eta_x_cap"], lr_adapter=th["eta_y_cap"], fo_optimizer="sgd", mu=mu_theory,
                         **common) for task in cfg.ablation_tasks for seed in cfg.seeds[:cfg.ablation_seeds]]
    log(f"theory-guided cells: {len(theory_cells)}")
    theory = runner.run(theory_cells)
    stages["theory_s"] = time.perf_counter() - t

    # 4. summary, table, figures
    summary = summarise(main + theory, cfg)
    comparison = {task: {"eta_x_theory": th["eta_x_cap"], "eta_y_theory": th["eta_y_cap"], "mu_theory": mu_theory,
                         "eta_x_tuned": tuned[(task, "hybrid")], "eta_y_tuned_sgd": tuned[(task, "hybrid-sgd")],
                         "ratio_x": th["eta_x_cap"] / tuned[(task, "hybrid")] if tuned[(task, "hybrid")] else math.nan,
                         "ratio_y": th["eta_y_cap"] / tuned[(task, "hybrid-sgd")]}
                  for task in cfg.ablation_tasks}
    result = {"config": _jsonable(asdict(cfg)), "pretrain": pre_info, "model_dir": str(model_dir),
              "tuned": {f"{k[0]}/{k[1]}": v for k, v in tuned.items()}, "tuning": tuning_rows,
              "summary": summary, "theory_vs_tuned": comparison, "probe": _probe_summary(probe),
              "cells": main + theory}
    atomic_write_json(out_dir / "results.json", result, default=float)
    md, csv_text = format_table(summary, cfg, comparison, probe)
    atomic_write_text(out_dir / "table.md", md)
    atomic_write_text(out_dir / "table.csv", csv_text)
    figs = plot_bench(result, cfg, out_dir)
    stages["total_s"] = time.perf_counter() - t0
    manifest = _manifest(cfg, stages, runner, figs + [out_dir / "probe_constants.png", out_dir / "probe_l0l1.png"],
                         workers)
    # the compute record of the run that last computed cells survives replots from the cache
    old = out_dir / "manifest.json"
    previous = json.loads(old.read_text()) if old.is_file() else {}
    if runner.computed:
        manifest["last_compute"] = {k: manifest[k] for k in ("revision", "stages_s", "cells_computed", "workers",
                                                             "load_average_at_end", "cpu_count")}
        manifest["last_compute"]["pretrain_s_when_built"] = pre_info.get("seconds")
    elif "last_compute" in previous or previous.get("cells_computed"):
        manifest["last_compute"] = previous.get("last_compute") or {
            k: previous.get(k) for k in ("revision", "stages_s", "cells_computed", "workers", "load_average_at_end",
                                         "cpu_count")} | {"pretrain_s_when_built": pre_info.get("seconds")}
    atomic_write_json(out_dir / "manifest.json", manifest, default=str)
    log(md)
    log(f"wrote {out_dir} in {stages['total_s']:.0f} s ({runner.computed} cells computed)")
    return result


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _probe_summary(probe: dict) -> dict:
    pts = probe["checkpoints"]
    return {"steps": [p["step"] for p in pts],
            "base_top": [p["hessian"]["base"]["norm"] for p in pts],
            "adapter_top": [p["hessian"]["adapter"]["norm"] for p in pts],
            "cross": [p["hessian"]["cross"]["norm"] for p in pts],
            "effective_rank_base": [p["effective_rank"]["base"] for p in pts],
            "d_x": pts[0]["dims"]["base"], "d_y": pts[0]["dims"]["adapter"],
            "heterogeneity_base": [p["heterogeneity"]["base"] for p in pts],
            "heterogeneity_adapter": [p["heterogeneity"]["adapter"] for p in pts],
            "grad_base": [p["grad_norm"]["base"] for p in pts],
            "grad_adapter": [p["grad_norm"]["adapter"] for p in pts],
            "local_L_y": [p["local"]["L_y"] for p in pts],
            "l0_l1_fit": probe["l0_l1_fit"], "theory": probe["theory"]}


def summarise(cells: Sequence[dict], cfg: BenchConfig) -> list[dict]:
    """One row per (task, configuration label): accuracy with CI, passes/steps/time to target, displacement."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["cell"]["task"], c["cell"]["label"]), []).append(c)
    # equal-pass budget per task: the smallest total passes among the five methods at their tuned settings
    budget = {}
    for task in cfg.tasks:
        totals = [c["forwards"] + c["backwards"] for (t, lab), cs in groups.items() if t == task
                  and lab in ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid") for c in cs]
        budget[task] = min(totals) if totals else math.nan
    rows = []
    for (task, label), cs in groups.items():
        target = cfg.targets.get(task, 1.0)
        hits = [to_target(c["curve"], target) for c in cs]
        reached = [h for h in hits if h is not None]
        acc, ci = mean_ci([c["eval_accuracy"] for c in cs])
        eq, eq_ci = mean_ci([at_passes(c["curve"], budget[task]) for c in cs])
        rows.append({
            "task": task, "label": label, "method": cs[0]["cell"]["method"], "seeds": len(cs),
            "lr_base": cs[0]["cell"]["lr_base"], "lr_adapter": cs[0]["cell"]["lr_adapter"],
            "lora_r": cs[0]["cell"]["lora_r"], "fo_optimizer": cs[0]["cell"]["fo_optimizer"],
            "eval_acc": acc, "eval_ci95": ci, "zero_shot_dev": statistics.fmean(c["zero_shot_dev"] for c in cs),
            "majority": cs[0]["majority_baseline"], "target": target, "reached": len(reached),
            "steps_to_target": statistics.median(h["step"] for h in reached) if reached else None,
            "passes_to_target": statistics.median(h["passes"] for h in reached) if reached else None,
            "time_to_target_s": statistics.median(h["time_s"] for h in reached) if reached else None,
            "passes_total": statistics.fmean(c["forwards"] + c["backwards"] for c in cs),
            "time_total_s": statistics.fmean(c["time_s"] for c in cs),
            "equal_pass_budget": budget[task], "dev_at_budget": eq, "dev_at_budget_ci95": eq_ci,
            "disp_base": statistics.fmean(c["displacement"].get("base", 0.0) for c in cs),
            "disp_adapter": statistics.fmean(c["displacement"].get("adapter", 0.0) for c in cs),
            "diverged": sum(bool(c["diverged"]) for c in cs),
        })
    order = {lab: i for i, lab in enumerate(["fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid", "hybrid lr_base=0"])}
    rows.sort(key=lambda r: (cfg.tasks.index(r["task"]), order.get(r["label"], 99), r["label"]))
    return rows


def _fmt(v, spec=".3g"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_table(summary: Sequence[dict], cfg: BenchConfig, comparison: dict, probe: dict) -> tuple[str, str]:
    """Markdown and CSV of the summary rows, and the theory-vs-tuned step sizes."""
    head = ("| task | configuration | lr base / adapter | eval acc (95% CI) | zero-shot dev | passes to target "
            "(steps, s) | reached | dev acc at equal passes | displacement base / adapter |")
    lines = [f"Seeds per row: {len(cfg.seeds)} (rank, hybrid-SGD and theory rows: "
             f"{min(cfg.ablation_seeds, len(cfg.seeds))}); {cfg.steps} steps of batch {cfg.batch_size}. Targets (dev accuracy): "
             + ", ".join(f"{t} {cfg.targets.get(t)}" for t in cfg.tasks) + ". Passes = forwards + backwards.", "",
             head, "|" + "---|" * 9]
    csv_rows = ["task,label,method,lr_base,lr_adapter,lora_r,fo_optimizer,seeds,eval_acc,eval_ci95,zero_shot_dev,"
                "majority,target,reached,steps_to_target,passes_to_target,time_to_target_s,passes_total,time_total_s,"
                "equal_pass_budget,dev_at_budget,disp_base,disp_adapter,diverged"]
    for r in summary:
        ttt = (f"{_fmt(r['passes_to_target'], '.0f')} ({_fmt(r['steps_to_target'], '.0f')}, "
               f"{_fmt(r['time_to_target_s'], '.1f')})") if r["reached"] else "not reached"
        lines.append(f"| {r['task']} | {r['label']} | {_fmt(r['lr_base'])} / {_fmt(r['lr_adapter'])} | "
                     f"{r['eval_acc']:.3f} ± {r['eval_ci95']:.3f} | {r['zero_shot_dev']:.3f} | {ttt} | "
                     f"{r['reached']}/{r['seeds']} | {_fmt(r['dev_at_budget'], '.3f')} (budget "
                     f"{_fmt(r['equal_pass_budget'], '.0f')}) | {_fmt(r['disp_base'])} / {_fmt(r['disp_adapter'])} |")
        csv_rows.append(",".join(str(r[k]) for k in csv_rows[0].split(",")))
    lines += ["", "Theory-guided step sizes (Theorem 1's caps from the probe's constants; plain SGD on both blocks) "
              "against the tuned hybrid-SGD step sizes:", "",
              "| task | eta_x theory | eta_x tuned | ratio | eta_y theory | eta_y tuned | ratio | mu theory |",
              "|---|---|---|---|---|---|---|---|"]
    for task, c in comparison.items():
        lines.append(f"| {task} | {c['eta_x_theory']:.3g} | {c['eta_x_tuned']:.3g} | {_fmt(c['ratio_x'])} | "
                     f"{c['eta_y_theory']:.3g} | {c['eta_y_tuned_sgd']:.3g} | {_fmt(c['ratio_y'])} | "
                     f"{c['mu_theory']:.3g} |")
    ps = _probe_summary(probe) if "checkpoints" in probe else probe
    fit = ps["l0_l1_fit"]
    lines += ["", f"Probe ({cfg.probe_task}, hybrid run, steps {ps['steps']}): |lambda_max| base "
              + ", ".join(f"{v:.3g}" for v in ps["base_top"]) + "; adapter " + ", ".join(f"{v:.3g}" for v in ps["adapter_top"])
              + "; ||H_xy|| " + ", ".join(f"{v:.3g}" for v in ps["cross"]) + f"; effective rank of the base block "
              + ", ".join(f"{v:.3g}" for v in ps["effective_rank_base"]) + f" (d_x = {ps['d_x']:,}); "
              f"(L0, L1) fit L0 = {fit['L0']:.3g}, L1 = {fit['L1']:.3g} over {fit['points']} points."]
    return "\n".join(lines) + "\n", "\n".join(csv_rows) + "\n"


# ---------------------------------------------------------------------- figures
def plot_bench(result: dict, cfg: BenchConfig, out_dir: Path) -> list[Path]:
    """``bridge_curves.png`` (dev accuracy against passes, mean over seeds, per task) and ``bridge_ablations.png``
    (eval accuracy with 95% CI of every configuration, per task)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybridtheory.figures import atomic_savefig

    cells = result["cells"]
    paths = []
    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(6 * len(cfg.tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], cfg.tasks):
        for label in ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid", "hybrid lr_base=0", "hybrid-sgd (tuned)",
                      "hybrid-sgd (theory)"):
            cs = [c for c in cells if c["cell"]["task"] == task and c["cell"]["label"] == label]
            if not cs:
                continue
            n = min(len(c["curve"]) for c in cs)
            passes = [statistics.fmean(c["curve"][i]["passes"] for c in cs) for i in range(n)]
            dev = [statistics.fmean(c["curve"][i]["dev"] for c in cs) for i in range(n)]
            ax.plot(passes, dev, "o-" if label.startswith("hybrid") else "s--", ms=3, label=label)
        ax.axhline(cfg.targets.get(task, 1.0), color="grey", lw=0.8, ls=":")
        ax.set(xlabel="forward + backward passes", ylabel="dev accuracy (mean over seeds)",
               title=f"{task}: {TASK_KINDS[task]}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(atomic_savefig(fig, out_dir / "bridge_curves.png", dpi=110, bbox_inches=None))
    plt.close(fig)

    rows = result["summary"]
    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(6 * len(cfg.tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], cfg.tasks):
        rs = [r for r in rows if r["task"] == task]
        ax.barh(range(len(rs)), [r["eval_acc"] for r in rs], xerr=[r["eval_ci95"] for r in rs],
                color=["C1" if r["label"].startswith("hybrid") else "C0" for r in rs])
        ax.set_yticks(range(len(rs)), [r["label"] for r in rs], fontsize=8)
        ax.axvline(rs[0]["majority"], color="grey", ls=":", lw=0.8, label="majority class")
        ax.set(xlabel="eval accuracy (mean and 95% CI over seeds; seeds per row in table.md)", xlim=(0, 1),
               title=f"{task} ({TASK_KINDS[task].split(' (')[0]})")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(atomic_savefig(fig, out_dir / "bridge_ablations.png", dpi=110, bbox_inches=None))
    plt.close(fig)
    return paths


def _manifest(cfg: BenchConfig, stages: dict, runner: _Runner, figures: Sequence[Path], workers: int) -> dict:
    import platform
    import subprocess

    import torch
    import transformers

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "unknown", None
    try:
        import peft
        peft_version = peft.__version__
    except ImportError:
        peft_version = None
    return {"revision": rev, "dirty": dirty, "config": _jsonable(asdict(cfg)), "stages_s": stages,
            "cells_computed": runner.computed, "cells_compute_s": runner.compute_s, "workers": workers,
            "load_average_at_end": os.getloadavg(), "cpu_count": os.cpu_count(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "peft": peft_version},
            "figures": [p.name for p in figures]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llm_experiments.offline_bench",
                                 description="Offline bridge benchmark: pretrain a small LLaMA on a generated "
                                             "language, fine-tune by every method, probe, write figures/bridge.")
    ap.add_argument("--out", default="figures/bridge", help="output folder (default: figures/bridge)")
    ap.add_argument("--quick", action="store_true", help="CI size (small model, 2 seeds, short runs)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes for the cells (1 thread each)")
    ap.add_argument("--recompute", action="store_true", help="ignore cached cells")
    ap.add_argument("--cache-root", default=None, help="where the pretrained model is cached "
                                                       "(default: $XDG_CACHE_HOME/hybridtheory or ~/.cache/hybridtheory)")
    args = ap.parse_args(argv)
    try:
        if args.workers < 1:
            raise UserError(f"--workers must be >= 1, got {args.workers}")
        import torch
        torch.set_num_threads(1)
        import transformers
        transformers.utils.logging.set_verbosity_error()
        run_benchmark(args.out, quick_config() if args.quick else BenchConfig(), workers=args.workers,
                      recompute=args.recompute, cache_root=args.cache_root)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
