"""Seed-replay checkpoints measured on a random-init OPT shape (CPU, no download), written to
benchmarks/results/replay_<shape>.json:

* replay cost: seconds per replayed step (``Trainer.load_state`` of a replay checkpoint: the logged ZO updates
  redone through the core's ``zo_update``, no forwards) against a training step of the same run;
* checkpoint bytes: the trainer state of a replay checkpoint (adapter, optimizer, counters, update log) against a
  full one (every base tensor), and the update log's bytes per step;
* a check that the replayed base equals the trained one bit for bit;
* the cost of ``--displacement-start reload``: reading the model again from a saved folder (``from_pretrained``)
  and the displacement computed from it, per evaluation.

Cases: zo-full and hybrid (forward difference, LoRA r8 + AdamW), an fp32 model (in place: the replay redoes
the perturbation passes) and a bf16 model with its fp32 master (the update passes only).
Usage: ``python benchmarks/bench_replay.py [--shape tiny] [--steps 20] [--batch-size 4] [--seq-len 64]``
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hybridtheory.algorithm import counter
from hybridtheory.io import atomic_write_json
from llm_experiments.bench import SHAPES, build_model
from llm_experiments.config import TrainConfig
from llm_experiments.models import attach_peft, seeded_global_init, split_parameters
from llm_experiments.trainer import Trainer

CASES = {
    "zo-full fp32": dict(method="zo-full", dtype="float32", base_master="none"),
    "zo-full bf16+master": dict(method="zo-full", dtype="bfloat16", base_master="auto"),
    "hybrid-forward fp32": dict(method="hybrid", dtype="float32", base_master="none", zo_difference="forward",
                                fo_optimizer="adamw"),
}


def _bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def make(shape: str, seed_state: dict, case: dict, steps: int, mode: str):
    dtype = getattr(torch, case["dtype"])
    model = build_model(shape, dtype, torch.device("cpu"))
    model.load_state_dict({k: v.to(dtype) for k, v in seed_state.items()})
    cfg = TrainConfig(model="bench", lr_base=1e-6, lr_adapter=1e-4, mu=1e-3, steps=steps, batch_size=4,
                      zo_weight_decay=0.01, track_displacement=False, progress=False, checkpoint_base=mode,
                      **case).validate()
    if cfg.uses_peft:
        model = attach_peft(model, cfg.peft, seed=cfg.seed)
    return Trainer(model, split_parameters(model), cfg, n_train=4, device=torch.device("cpu"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    counter.compiled_draws(True)  # as llm-hybrid bench: fused Gaussian chunks on CPU (compiled in the first step)
    with seeded_global_init(0):
        seed_state = build_model(args.shape, torch.float32, torch.device("cpu")).state_dict()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, SHAPES[args.shape]["vocab_size"], (args.batch_size, args.seq_len), generator=gen)
    labels = ids.clone()
    labels[:, : args.seq_len // 2] = -100
    batch = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}]
    out = {"shape": args.shape, "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
           "threads": args.threads, "compiled_draws": True, "law": "gaussian", "date": time.strftime("%Y-%m-%d"),
           "note": "CPU, shared machine under load: ratios within a case are side by side", "cases": {}}
    for name in args.cases.split(","):
        case = CASES[name]
        trainer = make(args.shape, seed_state, case, args.steps, "replay")
        times = [trainer.step(batch)["step_s"] for _ in range(args.steps)]
        trained = [p.detach().clone() for p in trainer.replay_group.params]
        with tempfile.TemporaryDirectory() as tmp:
            replay_dir, full_dir = Path(tmp) / "replay", Path(tmp) / "full"
            trainer.save_state(replay_dir)
            trainer.cfg.checkpoint_base = "full"
            trainer.save_state(full_dir)
            fresh = make(args.shape, seed_state, case, args.steps, "replay")
            start = time.perf_counter()
            fresh.load_state(replay_dir)
            replay_s = time.perf_counter() - start
            equal = all(torch.equal(a, b) for a, b in zip(fresh.replay_group.params, trained))
            row = {**case, "train_step_s_median": statistics.median(times[1:] or times),
                   "replay_s_per_step": replay_s / args.steps, "replayed_base_equals_trained": equal,
                   "base_params": sum(p.numel() for p in trainer.replay_group.params),
                   "checkpoint_bytes_full": _bytes(full_dir), "checkpoint_bytes_replay": _bytes(replay_dir),
                   "update_log_bytes": _bytes(replay_dir, "trajectory.*"),
                   "update_log_bytes_per_step": _bytes(replay_dir, "trajectory.safetensors") / args.steps}
        row["replay_over_train_step"] = row["replay_s_per_step"] / row["train_step_s_median"]
        out["cases"][name] = row
        print(name, {k: row[k] for k in ("train_step_s_median", "replay_s_per_step", "replay_over_train_step",
                                         "checkpoint_bytes_full", "checkpoint_bytes_replay",
                                         "update_log_bytes_per_step", "replayed_base_equals_trained")}, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoModelForCausalLM
        model = build_model(args.shape, torch.float32, torch.device("cpu"))
        model.load_state_dict(seed_state)
        model.save_pretrained(tmp)
        start = time.perf_counter()
        again = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
        out["reload_model_s"] = time.perf_counter() - start
        start = time.perf_counter()
        sq = sum(float((p.detach().double() - q.detach().double()).square().sum())
                 for p, q in zip(model.parameters(), again.parameters()))
        out["displacement_from_reload_s"] = time.perf_counter() - start + out["reload_model_s"]
        assert sq == 0.0
    print({k: out[k] for k in ("reload_model_s", "displacement_from_reload_s")})
    path = args.out or Path(__file__).resolve().parent / "results" / f"replay_{args.shape}.json"
    atomic_write_json(path, out, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
