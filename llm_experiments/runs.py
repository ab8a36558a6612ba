"""One run = one folder. Layout (every file written atomically: temp file or folder + ``os.replace``)::

    RUN/
      config.json        the full TrainConfig (re-run with ``llm-hybrid train --config RUN/config.json``)
      run.json           environment, device, parameter counts, dtype policy, status
      metrics.jsonl      one JSON line per logged step (loss, lr per block, forwards, phase times, peaks, ...)
      evals.jsonl        one line per dev evaluation (step, accuracy, majority baseline)
      results.json       final: selected step, dev and eval accuracy, majority baselines, time, memory
      checkpoint/        written at every dev evaluation (``--resume`` continues from it; see runfolder):
        progress.json    phase, best step and score, byte length of each log
        state/           tensors + optimizer + counters of that step, and the ZO base's update log
                         (``--checkpoint-base replay``: the log stands for the base tensors)
        best/            (select=best_dev) the same for the best-dev step
      model/             the fine-tuned model:
        base/            save_pretrained of the base model *with the ZO-updated weights* + tokenizer
        adapter/         save_pretrained of the peft module (PEFT methods)
        merged/          (save_model=merged) LoRA/IA3 merged into the base, a plain HF model + tokenizer

``metrics.jsonl`` and ``evals.jsonl`` are appended one whole line per ``write`` and flushed; a resume truncates
them to the length the checkpoint recorded. ``results.json`` is written last: it marks the run finished.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from hybridtheory.io import atomic_folder, atomic_write_text  # noqa: F401 (re-exported for report/bench)
from hybridtheory.io import atomic_write_json as _atomic_write_json

from .config import TrainConfig, write_config
from .errors import UserError
from .runfolder import CHECKPOINT, JsonlLog, open_run_folder, read_checkpoint, write_checkpoint


# ---------------------------------------------------------------------- atomic writes (shared helpers)
def atomic_write_json(path: Path, data) -> None:
    _atomic_write_json(path, data, sort_keys=True, default=str)


class NullLog:
    """What ranks other than 0 write to: nothing (rank 0 alone writes the run folder)."""

    length = 0

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
            _sort_set_fields(model.peft_config.values())
            model.save_pretrained(tmp / "adapter")
            config = model.peft_config[model.active_adapter]
            base = model.get_base_model() if config.is_prompt_learning else model.unload()
            base.save_pretrained(tmp / "base")
            tokenizer.save_pretrained(tmp / "base")
            saved = "base+adapter"
    return saved


def _sort_set_fields(configs) -> None:
    """Set-valued peft config fields (LoRA's ``target_modules``, IA3's ``feedforward_modules``) as sorted lists.

    peft writes a set in iteration order, which follows the process's string-hash seed: two processes saving the
    same run would write different ``adapter_config.json`` bytes (seen as a resume-after-SIGKILL mismatch).
    """
    for config in configs:
        for name, value in vars(config).items():
            if isinstance(value, (set, frozenset)):
                setattr(config, name, sorted(value, key=str))


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
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_training(cfg: TrainConfig, resume: bool = False, splits=None, overwrite: bool = False) -> dict:
    """Load model and data, train, select on dev, evaluate once on the eval split, save. Returns results.

    The run folder follows :mod:`llm_experiments.runfolder` (rule, fingerprinted resume, checkpoints).
    A non-finite loss, gradient, ZO coefficient or parameter ends the run with status "diverged": the
    best finite state is evaluated and saved, ``results["status"] == "diverged"``.
    ``splits`` (with ``.train/.dev/.eval``) may be passed directly (tests); otherwise the task's data is
    loaded with the data helper's ``load_splits``.
    """
    from tqdm.auto import tqdm

    from .data import check_candidates, collate_candidates, encode_for_training, load_splits
    from .distributed import full_state_dict, init_world, shard_model
    from .evaluation import evaluate
    from .models import attach_peft, checkpoint_layers, input_device, load_model_and_tokenizer, split_parameters
    from .scoring import objective_loss_fn
    from .tasks import get_task, resolve_objective
    from .trainer import Diverged, LoopHooks, Trainer, train_loop

    cfg = cfg.validate().with_absolute_paths()
    folder = open_run_folder(cfg, resume, overwrite)   # refusals happen here, before anything is loaded
    run_dir = folder.path
    spec = get_task(cfg.task, cfg.winogrande_scoring)
    objective = resolve_objective(spec, cfg.objective)
    # torchrun / accelerate launch: one process per rank, each on its own device; rank 0 alone writes RUN/
    world = init_world(resolve_device(cfg.device), cfg.dist_timeout_s, need_group=cfg.fsdp)
    device, main = world.device, world.is_main
    world.barrier()  # every rank has applied the rule before rank 0 writes anything
    if cfg.device_map != "none" and world.distributed:
        raise UserError("device_map=auto splits one model over this node's GPUs; it cannot be combined with several "
                        "ranks (torchrun / accelerate launch): use one or the other")
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.dtype, cfg.trust_remote_code,
                                                device_map=None if cfg.device_map == "none" else cfg.device_map)
    if splits is None:
        splits = load_splits(spec, source=cfg.data, n_train=cfg.n_train, n_dev=cfg.n_dev, n_eval=cfg.n_eval,
                             seed=cfg.data_seed)
    # start-up check: every candidate of every example has >= 1 token and candidates differ (one line if not)
    for examples in (splits.train, splits.dev, splits.eval):
        check_candidates(spec, tokenizer, examples, cfg.max_length)
    if cfg.uses_peft:
        try:
            model = attach_peft(model, cfg.peft, seed=cfg.seed, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules,
                                num_virtual_tokens=cfg.num_virtual_tokens)
        except ValueError as exc:  # peft's message names the missing modules
            raise UserError(f"cannot attach {cfg.peft}: {str(exc).splitlines()[0]}") from None
    if cfg.device_map == "none":
        model.to(device)
    else:  # layers stay where accelerate placed them; inputs go to the first one
        device = input_device(model)
    if cfg.gradient_checkpointing:
        checkpoint_layers(model)
    split = split_parameters(model)
    if cfg.fsdp:  # the base becomes dim-0 shards over the ranks; the trainer perturbs and updates its shards
        split = shard_model(model, split, world)
    encoded = encode_for_training(splits.train, tokenizer, spec, cfg.max_length, objective)
    if not encoded:
        raise UserError(f"task {cfg.task}: no training examples after encoding")
    if cfg.batch_size > len(encoded):  # a step cannot draw more examples than there are: refuse, do not cap
        raise UserError(f"batch_size {cfg.batch_size} exceeds the {len(encoded)} training examples; pass "
                        f"--batch-size <= {len(encoded)}")
    # fewer examples than asked (a small data set): the run goes on, with one warning line and a note in run.json
    capped = {name: {"asked": asked, "got": len(got)} for name, asked, got in
              (("n_train", cfg.n_train, splits.train), ("n_dev", cfg.n_dev, splits.dev), ("n_eval", cfg.n_eval, splits.eval))
              if len(got) < asked}
    if capped and world.is_main:
        print("warning: the data has fewer examples than asked: " +
              ", ".join(f"{k} {v['got']} of {v['asked']}" for k, v in capped.items()), file=sys.stderr)
    pad_id = tokenizer.pad_token_id

    def collate(chunk):
        return collate_candidates(chunk, pad_id)

    def initial_base():
        """The base as the run started, read again from --model (a replay's and the displacement's start)."""
        fresh, _ = load_model_and_tokenizer(cfg.model, cfg.dtype, cfg.trust_remote_code)
        if cfg.uses_peft:  # the same wrapping, so the base tensors come in the trained model's order
            fresh = attach_peft(fresh, cfg.peft, seed=cfg.seed, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules,
                                num_virtual_tokens=cfg.num_virtual_tokens)
        return [p.detach() for p in split_parameters(fresh).tensors("base")]

    kept_policy = None
    if folder.mode == "resume" and (run_dir / "run.json").is_file():
        try:  # auto's decision at the run's start (run.json is written atomically before the first step)
            kept_policy = json.loads((run_dir / "run.json").read_text()).get("base_policy")
        except (OSError, ValueError):
            kept_policy = None
    trainer = Trainer(model, split, cfg, len(encoded), device, world, loss_fn=objective_loss_fn(objective),
                      initial_base=initial_base, kept_policy=kept_policy if isinstance(kept_policy, dict) else None)
    if folder.mode == "resume" and main:
        folder.recover()  # a checkpoint swap cut short is put back, temporaries go
    world.barrier()
    progress = read_checkpoint(run_dir) if folder.mode == "resume" else None
    if progress is not None:
        trainer.load_state(run_dir / CHECKPOINT / "state")  # every rank reads the state rank 0 wrote
        if trainer.replays_base and trainer.trajectory_start != 0:
            raise UserError(f"--checkpoint-base replay: the checkpoint in {str(run_dir)!r} has no update log before "
                            f"step {trainer.trajectory_start} (written by an older version); resume with "
                            "--checkpoint-base full")
    world.check_same(trainer.fingerprint(), "the starting parameters' checksum")
    # every check passed: from here on the folder is written (by rank 0)
    if main:
        folder.begin()
        write_config(cfg, run_dir / "config.json")
        if folder.changed:
            print(f"resume: fields changed that do not change the run: {', '.join(folder.changed)}",
                  file=sys.stderr)

    def run_eval(examples):
        model.eval()
        with trainer.precision.autocast(device):  # amp: evaluation computes as training does
            return evaluate(model, tokenizer, spec, examples, batch_size=cfg.eval_batch_size,
                            max_length=cfg.max_length)

    keep_best = cfg.select == "best_dev"
    best = dict(progress["best"]) if progress else {"accuracy": -1.0, "step": None}
    phase = progress["phase"] if progress else "training"
    offsets = progress["logs"] if progress else {}
    if main:
        evals = JsonlLog(run_dir / "evals.jsonl", truncate_to=offsets.get("evals.jsonl", 0))
        metrics = JsonlLog(run_dir / "metrics.jsonl", truncate_to=offsets.get("metrics.jsonl", 0))
    else:
        evals, metrics = NullLog(), NullLog()

    def checkpoint(tr, new_best: bool) -> None:
        tr.gather_shards()  # a sharded base: every rank sends its shards, rank 0 writes the full tensors
        if main:
            write_checkpoint(run_dir, tr, {"phase": phase, "step": tr.state.step, "best": best,
                                           "logs": {"metrics.jsonl": metrics.length, "evals.jsonl": evals.length}},
                             new_best=new_best, keep_best=keep_best)

    def dev_eval(tr) -> None:
        """Evaluate on dev (a finite state only), update the selection, write the checkpoint."""
        bad = tr.nonfinite_parameter()
        if bad is not None:
            raise Diverged(tr.state.step, f"non-finite {bad} parameter")
        new_best = False
        if splits.dev:
            start = time.perf_counter()
            result = run_eval(splits.dev)
            evals.write({"step": tr.state.step, "split": "dev", "eval_s": time.perf_counter() - start, **result})
            if keep_best and result["accuracy"] > best["accuracy"]:
                best.update(accuracy=result["accuracy"], step=tr.state.step)
                new_best = True
        checkpoint(tr, new_best)

    run_info = {"status": "running", "started": _now(),
                "environment": environment(device), "n_train": len(splits.train), "n_dev": len(splits.dev),
                "n_eval": len(splits.eval), "params": {"base": split.numel("base"), "adapter": split.numel("adapter")},
                "groups": {g.name: {"oracle": g.oracle, "lr": g.lr, "tensors": len(g.params)} for g in trainer.groups},
                "base_master": trainer.master_dtype, "base_policy": trainer.base_policy,
                "checkpoint_base": cfg.checkpoint_base if trainer.replay_group else "full",
                "displacement_start": cfg.displacement_start if trainer.reload_start else "memory",
                "dtype": cfg.dtype, "objective": objective,
                "fo_precision": trainer.precision.describe(),
                "scoring": spec.scoring, "world": {"size": world.size, "backend": world.backend, "fsdp": cfg.fsdp},
                "param_devices": sorted({str(p.device) for p in model.parameters()}), "data_capped": capped}
    if folder.mode == "resume":
        run_info["resumed_at_step"] = trainer.state.step
        run_info["resume_changed_fields"] = folder.changed
    if main:
        atomic_write_json(run_dir / "run.json", run_info)
    diverged = None
    try:
        if progress is None:
            dev_eval(trainer)  # step-0 (zero-shot) dev accuracy: the starting point of every curve
        if phase == "training":
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
            phase = "trained"
            dev_eval(trainer)
    except Diverged as exc:
        diverged = {"step": exc.step, "reason": exc.what}
        metrics.write({"step": exc.step, "diverged": exc.what})
    world.barrier()  # rank 0 has finished writing the checkpoint the others may read below
    if diverged is not None:  # back to the last finite checkpoint; its selection state decides
        saved = read_checkpoint(run_dir)
        if saved is None:
            raise UserError(f"run diverged at step {diverged['step']} ({diverged['reason']}) before its first "
                            "checkpoint")
        best = dict(saved["best"])
        trainer.load_state(run_dir / CHECKPOINT / "state")
    last_step, final_state = trainer.state.step, trainer.state
    use_best = keep_best and best["step"] is not None
    if use_best and best["step"] != last_step:
        trainer.load_state(run_dir / CHECKPOINT / "best")  # selection on dev only; eval split is used once, below
    selected_step = best["step"] if use_best else last_step
    dev_result = run_eval(splits.dev) if splits.dev else None
    eval_result = run_eval(splits.eval)
    peaks = dict(trainer.peak_mem_mb)  # CUDA: per-phase and whole-step peak allocated memory (MiB); CPU: empty
    results = {"task": cfg.task, "model": cfg.model, "method": cfg.method, "peft": cfg.peft if cfg.uses_peft else None,
               "seed": cfg.seed, "status": "diverged" if diverged else "done", "selected_step": selected_step,
               "steps": last_step, "dev": dev_result,
               "eval": eval_result, "train_time_s": final_state.elapsed_s, "forwards": final_state.forwards,
               "backwards": final_state.backwards, "memory": peaks}
    if diverged:
        results["diverged"] = diverged
    evals.close()
    metrics.close()
    if cfg.fsdp and cfg.save_model != "none":  # gather the sharded model; rank 0 saves it as an unsharded one
        state = full_state_dict(model)  # a collective: every rank takes part, rank 0 receives
        model = unsharded_copy(model, state, cfg) if main else None
    if not main:
        return results
    results["saved_model"] = save_model(model, tokenizer, cfg, run_dir / "model")
    run_info["status"] = results["status"]
    run_info["finished"] = _now()
    if diverged:
        run_info["diverged"] = diverged
    atomic_write_json(run_dir / "run.json", run_info)
    atomic_write_json(run_dir / "results.json", results)  # last: its presence marks the run finished
    return results
