"""16-bit ZO base policies measured on a random-init OPT shape (CPU, no download), written to
benchmarks/results/precision_<shape>.json.

Policies (``--base-master``, llm_experiments/precision.py): ``fp32`` (bf16 model, float32 master; the model written
as cast(master + s mu u)), ``compensated`` (bf16 model + int16 error buffer), ``stochastic`` (bf16 model, stochastic
rounding in every write pass), ``none`` (bf16 in place, as MeZO), and the float32 model as the reference.
Per policy, all through the core's passes (``zo_coefficients`` + ``apply_zo_update``, as a training step):

* a 1e-7 update (``1e-7 u``, one update pass): ``update_1e-7_kept``, the stored change projected on the intended
  one, <d_stored, 1e-7 u> / ||1e-7 u||^2 (1 = all of it, in expectation for stochastic rounding); and the
  fraction of entries whose stored value changed. The stored value is the master where there is one, weight +
  buffer for ``compensated``, the weights otherwise;
* restore drift after one perturb/restore cycle (mu = 1e-3, step size 0): fraction of the model's weights
  changed, their max abs change, and the max abs change of the stored value;
* loss trajectory: zo-full for ``--steps`` steps on one fixed random-token batch, against the float32 model:
  the max abs loss gap over all steps; seconds per step;
* bytes per base parameter: the model's weights plus what the policy adds.

Usage: ``python benchmarks/bench_precision.py [--shape tiny] [--steps 200] [--batch-size 4 --seq-len 64]``
(``--compiled-draws`` draws Gaussians through torch.compile: faster at the 125m shape).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hybridtheory.algorithm import ZORecord, apply_zo_update, counter, zo_coefficients
from hybridtheory.algorithm.rounding import compensated_value
from hybridtheory.io import atomic_write_json
from llm_experiments.bench import SHAPES, build_model
from llm_experiments.config import TrainConfig
from llm_experiments.models import seeded_global_init, split_parameters
from llm_experiments.precision import EXTRA_BYTES_PER_PARAM
from llm_experiments.trainer import Trainer

# name -> (model dtype, --base-master)
POLICIES = {"fp32": ("bfloat16", "float32"), "compensated": ("bfloat16", "compensated"),
            "stochastic": ("bfloat16", "stochastic"), "none": ("bfloat16", "none"),
            "float32-model": ("float32", "none")}


def make_trainer(shape: str, dtype: str, master: str, steps: int, lr: float, seed_model: torch.nn.Module):
    model = build_model(shape, getattr(torch, dtype), torch.device("cpu"))
    model.load_state_dict({k: v.to(getattr(torch, dtype)) for k, v in seed_model.state_dict().items()})
    cfg = TrainConfig(model="bench", method="zo-full", dtype=dtype, base_master=master, mu=1e-3, lr_base=lr,
                      steps=steps, batch_size=4, track_displacement=False, progress=False,
                      zo_law="gaussian").validate()
    return model, Trainer(model, split_parameters(model), cfg, n_train=4, device=torch.device("cpu"))


def stored_value(params, compensation, i: int) -> torch.Tensor:
    """The value tensor ``i`` of a ZO group holds (float64): master, weight + buffer, or the weight."""
    if compensation is not None:
        return compensated_value(params[i], compensation[i], torch.float64)
    return params[i].double()


def snapshot(group) -> list[list[torch.Tensor]]:
    out = [[t.detach().clone() for t in group.params]]
    for extra in (group.mirrors, group.compensation):
        out.append(None if extra is None else [t.detach().clone() for t in extra])
    return out


def restore(group, snap) -> None:
    for saved, live in zip(snap, (group.params, group.mirrors, group.compensation)):
        if saved is not None:
            for s, t in zip(saved, live):
                t.copy_(s)


def passes(trainer, records_or_none, lrs):
    """One ZO cycle through the core with the trainer's policy: perturb (+mu, -2mu), then restore + update."""
    group = trainer.groups[0]
    store = dict(mirrors=group.mirrors, compensation=group.compensation)
    if records_or_none is None:
        records = zo_coefficients(group.params, lambda: torch.zeros(()), trainer.zo, 12345, defer_restore=True,
                                  **store)
    else:
        records = records_or_none
    apply_zo_update(group.params, records, lrs, rounding=trainer.zo.rounding, **store)


@torch.no_grad()
def measure_cycle(trainer) -> dict:
    group = trainer.groups[0]
    weights = group.mirrors if group.mirrors is not None else group.params
    snap = snapshot(group)
    total = sum(w.numel() for w in weights)
    row = {}
    # restore drift: one perturb/restore cycle with a zero step
    passes(trainer, None, [0.0] * len(group.params))
    changed = max_w = max_v = 0.0
    for i, w in enumerate(weights):
        before = (snap[1] if group.mirrors is not None else snap[0])[i]
        changed += int((w != before).sum())
        max_w = max(max_w, float((w.double() - before.double()).abs().max()))
    for i in range(len(group.params)):
        now = stored_value(group.params, group.compensation, i)
        max_v = max(max_v, float((now - stored_value(snap[0], snap[2], i)).abs().max()))
    row["restore_fraction_changed"] = changed / total
    row["restore_max_abs_change"] = max_w
    row["restore_stored_max_abs_change"] = max_v
    restore(group, snap)
    # a 1e-7 update: coefficient -1 and step size 1e-7 make the update +1e-7 u
    d = trainer.zo.direction(777, 0)
    passes(trainer, [ZORecord(d, torch.tensor(-1.0))], [1e-7] * len(group.params))
    dot = sq = 0.0
    entries = 0
    for i, (_, u) in enumerate(d.tensors(group.params)):
        delta = stored_value(group.params, group.compensation, i) - stored_value(snap[0], snap[2], i)
        step = 1e-7 * u.double()
        dot += float((delta * step).sum())
        sq += float(step.square().sum())
        entries += int((delta != 0).sum())
    row["update_1e-7_kept"] = dot / sq
    row["update_1e-7_entries_changed"] = entries / total
    restore(group, snap)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset of " + ",".join(POLICIES))
    ap.add_argument("--compiled-draws", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.compiled_draws:
        counter.compiled_draws()
    with seeded_global_init(0):
        seed_model = build_model(args.shape, torch.float32, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    vocab = SHAPES[args.shape]["vocab_size"]
    ids = torch.randint(4, vocab, (args.batch_size, args.seq_len), generator=gen)
    labels = ids.clone()
    labels[:, :args.seq_len // 2] = -100
    batch = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}]
    out = {"shape": args.shape, "steps": args.steps, "threads": args.threads, "lr_base": args.lr, "mu": 1e-3,
           "law": "gaussian", "batch": [args.batch_size, args.seq_len], "compiled_draws": args.compiled_draws,
           "date": time.strftime("%Y-%m-%d"), "load_average_at_start": _load(), "policies": {}}
    for name in args.policies.split(","):
        dtype, master = POLICIES[name]
        model, trainer = make_trainer(args.shape, dtype, master, max(args.steps, 1), args.lr, seed_model)
        width = 2 if dtype == "bfloat16" else 4
        row = {"model_dtype": dtype, "policy": trainer.base_policy["policy"],
               "bytes_per_param": width + EXTRA_BYTES_PER_PARAM[trainer.base_policy["policy"]]}
        start = time.perf_counter()
        row.update(measure_cycle(trainer))
        row["cycle_measure_s"] = time.perf_counter() - start
        start = time.perf_counter()
        losses = [trainer.step(batch)["loss"] for _ in range(args.steps)]
        row["seconds_per_step"] = (time.perf_counter() - start) / max(args.steps, 1)
        row["losses"] = losses
        out["policies"][name] = row
        print(name, {k: v for k, v in row.items() if k != "losses"}, flush=True)
        del model, trainer
    ref = out["policies"].get("float32-model", {}).get("losses")
    for row in out["policies"].values():
        if ref and row["losses"]:
            row["max_abs_loss_gap_vs_float32"] = max(abs(a - b) for a, b in zip(row["losses"], ref))
    out["load_average_at_end"] = _load()
    path = args.out or Path(f"benchmarks/results/precision_{args.shape}.json")
    atomic_write_json(path, out, indent=1)
    print("wrote", path, json.dumps({k: v.get("max_abs_loss_gap_vs_float32") for k, v in out["policies"].items()}))
    return 0


def _load() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
