"""16-bit base policies measured on a random-init OPT shape (CPU, no download), written to
benchmarks/results/precision_<shape>.json:

* fraction of a 1e-7 ZO update kept: one update of size 1e-7 u applied by the core, per policy; "kept" counts
  the entries of the stored base (the master where there is one) that changed;
* restore drift: entries of the model's weights changed after one perturb (+mu, -mu) / restore cycle, mu = 1e-3;
* loss trajectory: zo-full for ``--steps`` steps on one fixed random-token batch, per policy, against float32.

Policies: ``fp32`` (bf16 model, float32 master; the model written as cast(master + s mu u)), ``none`` (bf16 model
perturbed and updated in place, as MeZO). Usage: ``python benchmarks/bench_precision.py [--shape tiny] [--steps 200]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hybridtheory.algorithm import Direction
from hybridtheory.io import atomic_write_json
from llm_experiments.bench import SHAPES, build_model
from llm_experiments.config import TrainConfig
from llm_experiments.models import seeded_global_init, split_parameters
from llm_experiments.trainer import Trainer

POLICIES = {"fp32": ("bfloat16", "float32"), "none": ("bfloat16", "none"), "float32-model": ("float32", "none")}


def make_trainer(shape: str, dtype: str, master: str, steps: int, lr: float, seed_model: torch.nn.Module):
    model = build_model(shape, getattr(torch, dtype), torch.device("cpu"))
    model.load_state_dict({k: v.to(getattr(torch, dtype)) for k, v in seed_model.state_dict().items()})
    cfg = TrainConfig(model="bench", method="zo-full", dtype=dtype, base_master=master, mu=1e-3, lr_base=lr,
                      steps=steps, batch_size=4, track_displacement=False, progress=False,
                      zo_law="gaussian").validate()
    return model, Trainer(model, split_parameters(model), cfg, n_train=4, device=torch.device("cpu"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with seeded_global_init(0):
        seed_model = build_model(args.shape, torch.float32, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    vocab = SHAPES[args.shape]["vocab_size"]
    ids = torch.randint(4, vocab, (4, 64), generator=gen)
    labels = ids.clone()
    labels[:, :32] = -100
    batch = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}]
    out = {"shape": args.shape, "steps": args.steps, "threads": args.threads, "lr_base": args.lr, "mu": 1e-3, "law": "gaussian",
           "date": time.strftime("%Y-%m-%d"), "policies": {}}
    for name, (dtype, master) in POLICIES.items():
        model, trainer = make_trainer(args.shape, dtype, master, args.steps, args.lr, seed_model)
        group = trainer.groups[0]
        stored = group.params                                  # the master, or the model's weights
        weights = group.mirrors if group.mirrors is not None else group.params
        row = {"model_dtype": dtype, "master": trainer.master_dtype}
        # restore drift of one perturb/restore cycle (what the trainer does, through the core)
        before = [w.detach().clone() for w in weights]
        d = Direction(12345, "gaussian")
        if group.mirrors is not None:
            for off in (1e-3, -1e-3):
                d.write_shifted(stored, weights, off)
            d.add_to(stored, 0.0, mirrors=weights)             # the update pass with a zero step
        else:
            for a in (1e-3, -2e-3, 1e-3):
                d.add_to(stored, a)
        total = sum(w.numel() for w in weights)
        row["restore_fraction_changed"] = sum(int((w != b).sum()) for w, b in zip(weights, before)) / total
        row["restore_max_abs_change"] = max(float((w.double() - b.double()).abs().max()) for w, b in zip(weights, before))
        # fraction of a 1e-7 update kept by the stored base
        s0 = [t.detach().clone() for t in stored]
        d.add_to(stored, 1e-7, mirrors=group.mirrors)
        row["update_1e-7_fraction_kept"] = sum(int((t != b).sum()) for t, b in zip(stored, s0)) / total
        for t, b in zip(stored, s0):
            t.copy_(b)
        if group.mirrors is not None:
            for w, t in zip(weights, stored):
                w.copy_(t)
        # loss trajectory
        start = time.perf_counter()
        losses = [trainer.step(batch)["loss"] for _ in range(args.steps)]
        row["loss_first"], row["loss_last"] = losses[0], losses[-1]
        row["losses_every_20"] = losses[::20]
        row["seconds"] = time.perf_counter() - start
        out["policies"][name] = row
        print(name, {k: v for k, v in row.items() if k != "losses_every_20"}, flush=True)
    ref = out["policies"]["float32-model"]["losses_every_20"]
    for name, row in out["policies"].items():
        row["max_abs_loss_gap_vs_float32"] = max(abs(a - b) for a, b in zip(row["losses_every_20"], ref))
    path = args.out or Path(f"benchmarks/results/precision_{args.shape}.json")
    atomic_write_json(path, out, indent=1)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
