"""One run = one folder. Layout (every file written atomically: temp file or folder + ``os.replace``)::

    RUN/
      config.json        the full TrainConfig (re-run with ``llm-hybrid train --config RUN/config.json``)
      run.json           environment, device, parameter counts, dtype policy, status
      metrics.jsonl      one JSON line per logged step (loss, lr per block, forwards, phase times, peaks, ...)
      evals.jsonl        one line per dev evaluation (step, accuracy, majority baseline)
      results.json       final: selected step, dev and eval accuracy, majority baselines, time, memory
      best_state/        (select=best_dev) tensors + optimizer + counters of the best-dev step
      last_state/        the same at the last evaluation / end (``--resume`` continues from it)
      model/             the fine-tuned model:
        base/            save_pretrained of the base model *with the ZO-updated weights* + tokenizer
        adapter/         save_pretrained of the peft module (PEFT methods)
        merged/          (save_model=merged) LoRA/IA3 merged into the base, a plain HF model + tokenizer

``metrics.jsonl`` and ``evals.jsonl`` are appended one whole line per ``write`` and flushed; a crash leaves
at most one partial last line, which :func:`read_jsonl` skips.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from hybridtheory.io import atomic_folder, atomic_write_text
from hybridtheory.io import atomic_write_json as _atomic_write_json

from .config import TrainConfig, write_config
from .errors import UserError


# ---------------------------------------------------------------------- atomic writes (shared helpers)
def atomic_write_json(path: Path, data) -> None:
    _atomic_write_json(path, data, sort_keys=True, default=str)


class JsonlWriter:
    def __init__(self, path: Path, truncate_after_step: int | None = None):
        path = Path(path)
        if truncate_after_step is not None and path.exists():  # resume: drop lines past the checkpoint
            kept = [r for r in read_jsonl(path) if r.get("step", 0) <= truncate_after_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.handle.write(json.dumps(row, default=float) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class NullWriter:
    """What ranks other than 0 write to: nothing (rank 0 alone writes the run folder)."""

    def write(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a partial last line after a crash
    return rows


# ---------------------------------------------------------------------- environment
def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but torch sees no CUDA device; use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    import peft
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "python": platform.python_version(), "device": device_name(device), "platform": platform.platform()}


# ---------------------------------------------------------------------- model saving and reloading
def save_model(model, tokenizer, cfg: TrainConfig, folder: Path) -> str:
    """Save the fine-tuned model under ``folder`` (see module docstring); returns what was saved.

    Must be the last use of ``model``: for LoRA/IA3 the peft wrapper is unloaded to reach the base.
    """
    if cfg.save_model == "none":
        return "none"
    with atomic_folder(folder) as tmp:
        if not cfg.uses_peft:
            model.save_pretrained(tmp / "base")
            tokenizer.save_pretrained(tmp / "base")
            saved = "base"
        elif cfg.save_model == "merged":
            merged = model.merge_and_unload()
            merged.save_pretrained(tmp / "merged")
            tokenizer.save_pretrained(tmp / "merged")
            saved = "merged"
        else:
            model.save_pretrained(tmp / "adapter")
            config = model.peft_config[model.active_adapter]
            base = model.get_base_model() if config.is_prompt_learning else model.unload()
            base.save_pretrained(tmp / "base")
            tokenizer.save_pretrained(tmp / "base")
            saved = "base+adapter"
    return saved


def load_run_model(run_dir: str | Path, dtype: str | None = None):
    """Reload ``(model, tokenizer, cfg)`` from a run folder's ``model/``."""
    from peft import PeftModel

    from .models import load_model_and_tokenizer

    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    dtype = dtype or cfg.dtype
    folder = run_dir / "model"
    if (folder / "merged").is_dir():
        model, tokenizer = load_model_and_tokenizer(str(folder / "merged"), dtype)
        return model, tokenizer, cfg
    if not (folder / "base").is_dir():
        raise UserError(f"run folder {str(run_dir)!r} has no saved model (model/base or model/merged)")
    model, tokenizer = load_model_and_tokenizer(str(folder / "base"), dtype)
    if (folder / "adapter").is_dir():
        model = PeftModel.from_pretrained(model, str(folder / "adapter"))
    model.eval()
    return model, tokenizer, cfg


def unsharded_copy(model, state: dict, cfg: TrainConfig):
    """A plain (unsharded, CPU) copy of a sharded model holding ``state`` (its full state dict), for saving."""
    from .models import attach_peft, load_model_and_tokenizer

    plain, _ = load_model_and_tokenizer(cfg.model, cfg.dtype, cfg.trust_remote_code)
    if cfg.uses_peft:
        plain = attach_peft(plain, cfg.peft, seed=cfg.seed, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                            lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules,
                            num_virtual_tokens=cfg.num_virtual_tokens)
    plain.load_state_dict(state)
    return plain


# ---------------------------------------------------------------------- one run
def run_training(cfg: TrainConfig, resume: bool = False, splits=None) -> dict:
    """Load model and data, train, select on dev, evaluate once on the eval split, save. Returns results.

    ``splits`` (with ``.train/.dev/.eval``) may be passed directly (tests); otherwise the task's data is
    loaded with the data helper's ``load_splits``.
    """
    from tqdm.auto import tqdm

    from .data import collate as collate_batch
    from .distributed import full_state_dict, init_world, shard_model
    from .data import encode_for_training, load_splits
    from .evaluation import evaluate
    from .models import attach_peft, checkpoint_layers, input_device, load_model_and_tokenizer, split_parameters
    from .tasks import get_task
    from .trainer import LoopHooks, Trainer, train_loop

    cfg.validate()
    spec = get_task(cfg.task)
    # torchrun / accelerate launch: one process per rank, each on its own device; rank 0 alone writes RUN/
    world = init_world(resolve_device(cfg.device), cfg.dist_timeout_s, need_group=cfg.fsdp)
    device, main = world.device, world.is_main
    run_dir = Path(cfg.output_dir)
    if not resume and (run_dir / "results.json").exists():
        raise UserError(f"run folder {str(run_dir)!r} already holds a finished run; choose another --output-dir")
    if cfg.device_map != "none" and world.distributed:
        raise UserError("device_map=auto splits one model over this node's GPUs; it cannot be combined with several "
                        "ranks (torchrun / accelerate launch): use one or the other")
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.dtype, cfg.trust_remote_code,
                                                device_map=None if cfg.device_map == "none" else cfg.device_map)
    if splits is None:
        splits = load_splits(spec, source=cfg.data, n_train=cfg.n_train, n_dev=cfg.n_dev, n_eval=cfg.n_eval,
                             seed=cfg.data_seed)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)  # only once model and data loaded: bad input leaves no folder
        write_config(cfg, run_dir / "config.json")
    if cfg.uses_peft:
        model = attach_peft(model, cfg.peft, seed=cfg.seed, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                            lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules,
                            num_virtual_tokens=cfg.num_virtual_tokens)
    if cfg.device_map == "none":
        model.to(device)
    else:  # layers stay where accelerate placed them; inputs go to the first one
        device = input_device(model)
    if cfg.gradient_checkpointing:
        checkpoint_layers(model)
    split = split_parameters(model)
    if cfg.fsdp:  # the base becomes dim-0 shards over the ranks; the trainer perturbs and updates its shards
        split = shard_model(model, split, world)
    encoded = encode_for_training(splits.train, tokenizer, spec, cfg.max_length)
    if not encoded:
        raise UserError(f"task {cfg.task}: no training examples after encoding")
    pad_id = tokenizer.pad_token_id

    def collate(chunk):
        return collate_batch(chunk, pad_id)

    trainer = Trainer(model, split, cfg, len(encoded), device, world)
    if resume and (run_dir / "last_state").is_dir():
        trainer.load_state(run_dir / "last_state")  # every rank reads the state rank 0 wrote
    world.check_same(trainer.fingerprint(), "the starting parameters' checksum")

    def run_eval(examples):
        model.eval()
        return evaluate(model, tokenizer, spec, examples, batch_size=cfg.eval_batch_size)

    best = {"accuracy": -1.0, "step": None}
    if resume and (run_dir / "results_partial.json").exists():
        best = json.loads((run_dir / "results_partial.json").read_text())
    if main:
        evals = JsonlWriter(run_dir / "evals.jsonl", truncate_after_step=trainer.state.step if resume else None)
        metrics = JsonlWriter(run_dir / "metrics.jsonl", truncate_after_step=trainer.state.step if resume else None)
    else:
        evals, metrics = NullWriter(), NullWriter()

    def dev_eval(tr) -> None:
        if not splits.dev:
            return
        start = time.perf_counter()
        result = run_eval(splits.dev)
        row = {"step": tr.state.step, "split": "dev", "eval_s": time.perf_counter() - start, **result}
        evals.write(row)
        if cfg.select == "best_dev" and result["accuracy"] > best["accuracy"]:
            best.update(accuracy=result["accuracy"], step=tr.state.step)
            tr.save_state(run_dir / "best_state")  # rank 0 writes (gathering the shards of a sharded base)
        if tr.state.step > 0:
            tr.save_state(run_dir / "last_state")
            if main:
                atomic_write_json(run_dir / "results_partial.json", best)

    run_info = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "environment": environment(device), "n_train": len(splits.train), "n_dev": len(splits.dev),
                "n_eval": len(splits.eval), "params": {"base": split.numel("base"), "adapter": split.numel("adapter")},
                "groups": {g.name: {"oracle": g.oracle, "lr": g.lr, "tensors": len(g.params)} for g in trainer.groups},
                "base_master": trainer.master_dtype, "dtype": cfg.dtype,
                "world": {"size": world.size, "backend": world.backend, "fsdp": cfg.fsdp},
                "param_devices": sorted({str(p.device) for p in model.parameters()})}
    if main:
        atomic_write_json(run_dir / "run.json", run_info)
    if trainer.state.step == 0:
        dev_eval(trainer)  # step-0 (zero-shot) dev accuracy: the starting point of every curve
    # progress=False forces bars off; otherwise tqdm's defaults apply (TQDM_DISABLE=1 turns them off)
    bar = tqdm(total=cfg.steps, initial=trainer.state.step, desc=f"{cfg.method} {cfg.task}",
               **({} if cfg.progress and main else {"disable": True}))
    try:
        train_loop(trainer, encoded, collate, LoopHooks(log=metrics.write, evaluate=dev_eval, progress=bar))
    finally:
        bar.close()
    end_row = {"step": trainer.state.step, "final": True, "time_s": trainer.state.elapsed_s}
    if cfg.track_displacement:
        end_row["displacement"] = trainer.displacement()
    metrics.write(end_row)
    dev_eval(trainer)
    last_step, final_state = trainer.state.step, trainer.state
    if cfg.select == "best_dev" and best["step"] is not None and best["step"] != last_step:
        world.barrier()  # rank 0 has finished writing best_state
        trainer.load_state(run_dir / "best_state")  # selection on dev only; eval split is used once, below
    selected_step = best["step"] if cfg.select == "best_dev" and best["step"] is not None else last_step
    dev_result = run_eval(splits.dev) if splits.dev else None
    eval_result = run_eval(splits.eval)
    peaks = dict(trainer.peak_mem_mb)  # CUDA: per-phase and whole-step peak allocated memory (MiB); CPU: empty
    results = {"task": cfg.task, "model": cfg.model, "method": cfg.method, "peft": cfg.peft if cfg.uses_peft else None,
               "seed": cfg.seed, "selected_step": selected_step, "steps": last_step, "dev": dev_result,
               "eval": eval_result, "train_time_s": final_state.elapsed_s, "forwards": final_state.forwards,
               "backwards": final_state.backwards, "memory": peaks}
    evals.close()
    metrics.close()
    if cfg.fsdp and cfg.save_model != "none":  # gather the sharded model; rank 0 saves it as an unsharded one
        state = full_state_dict(model)  # a collective: every rank takes part, rank 0 receives
        model = unsharded_copy(model, state, cfg) if main else None
    if not main:
        return results
    results["saved_model"] = save_model(model, tokenizer, cfg, run_dir / "model")
    atomic_write_json(run_dir / "results.json", results)
    run_info["status"] = "done"
    run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(run_dir / "run.json", run_info)
    return results
