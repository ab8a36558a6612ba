"""``llm-hybrid bench``: step time and peak memory of every method, on the real training step.

Each case builds a randomly initialised model of a given architecture shape (no download), attaches the
method's PEFT module, and times ``Trainer.step`` (the same code path as training) on a fixed random-token
minibatch. Every case runs in its own subprocess so that peak memory is per case: on CUDA
``torch.cuda.max_memory_allocated`` (whole step, and per phase from the trainer's phase clock); on CPU the
process's peak resident set size (``ru_maxrss``, which includes the Python/torch baseline, reported
separately as ``rss_after_load_mb``).

Targets checked (issue 4, on GPU, OPT-1.3B shape): hybrid peak memory <= 1.1 x fo-peft (LoRA), hybrid
step time in forward-difference mode <= 1.5 x fo-peft. Ratios to fo-full (AdamW) are reported too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import UserError

# OPT shapes (sizes of the public configs); "tiny" is for smoke tests.
SHAPES = {
    "tiny": dict(vocab_size=1024, hidden_size=64, word_embed_proj_dim=64, ffn_dim=256, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=512),
    "opt-125m": dict(vocab_size=50272, hidden_size=768, word_embed_proj_dim=768, ffn_dim=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=2048),
    "opt-1.3b": dict(vocab_size=50272, hidden_size=2048, word_embed_proj_dim=2048, ffn_dim=8192, num_hidden_layers=24,
                     num_attention_heads=32, max_position_embeddings=2048),
    # LLaMA-7B (public config sizes); built with LlamaConfig, initialised on the bench device
    "llama-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048),
}
LLAMA_SHAPES = {"llama-7b"}


def build_model(shape: str, dtype, device):
    """A randomly initialised model of ``shape`` (no download), on ``device``, in ``dtype``. On CUDA the
    init runs on the device (a 7B CPU init would take minutes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    if shape in LLAMA_SHAPES:
        config, cls = LlamaConfig(**SHAPES[shape], attention_dropout=0.0), LlamaForCausalLM
    else:
        config = OPTConfig(**SHAPES[shape], dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
        cls = OPTForCausalLM
    with torch.device(device):
        return cls(config).to(dtype)

# name -> TrainConfig overrides. LoRA r=8 on q,v (peft's OPT default) for every PEFT case; the FO adapter
# optimizer is AdamW in both fo-peft and hybrid so the comparison isolates what ZO on the base adds.
CASES = {
    "fo-full-adamw": dict(method="fo-full", fo_optimizer="adamw"),
    "fo-full-sgd": dict(method="fo-full", fo_optimizer="sgd"),
    "fo-peft": dict(method="fo-peft", peft="lora", fo_optimizer="adamw"),
    "zo-full": dict(method="zo-full", zo_difference="central"),
    "zo-peft": dict(method="zo-peft", peft="lora", zo_difference="central"),
    "hybrid-central": dict(method="hybrid", peft="lora", fo_optimizer="adamw", zo_difference="central"),
    "hybrid-forward": dict(method="hybrid", peft="lora", fo_optimizer="adamw", zo_difference="forward"),
    # the cheapest law (one random bit per entry): how much of the ZO overhead is drawing Gaussians
    "hybrid-forward-rademacher": dict(method="hybrid", peft="lora", fo_optimizer="adamw", zo_difference="forward",
                                      zo_law="rademacher"),
    # 16-bit dtypes only (for fp32 it equals hybrid-forward): no fp32 master, bounded drift instead
    "hybrid-forward-nomaster": dict(method="hybrid", peft="lora", fo_optimizer="adamw", zo_difference="forward",
                                    base_master="none"),
    # 16-bit dtypes only: the memory-light base policies (llm_experiments/precision.py)
    "hybrid-forward-compensated": dict(method="hybrid", peft="lora", fo_optimizer="adamw", zo_difference="forward",
                                       base_master="compensated"),
    "hybrid-forward-stochastic": dict(method="hybrid", peft="lora", fo_optimizer="adamw", zo_difference="forward",
                                      base_master="stochastic"),
    # the reference ZO loop as MeZO's trainer writes it (timed here, not the core): see mezo_step
    "mezo-loop": dict(method="zo-full", zo_difference="central", base_master="none"),
}


def mezo_step(model, params, batch, seed: int, mu: float, lr: float) -> float:
    """One MeZO-style step, written as MeZO's trainer does it: a seeded generator and ``normal_`` per
    parameter, regenerated four times (+mu, -2mu, +mu, update), model weights perturbed in place."""
    import torch

    def loss() -> float:
        with torch.no_grad():
            return float(model(**batch[0], use_cache=False).loss)

    def walk(scale: float) -> None:
        gen = torch.Generator(device=params[0].device).manual_seed(seed)
        for p in params:
            z = torch.empty_like(p).normal_(generator=gen)
            p.data.add_(z, alpha=scale)

    walk(mu)
    f_plus = loss()
    walk(-2 * mu)
    f_minus = loss()
    walk(mu)
    grad = (f_plus - f_minus) / (2 * mu)
    walk(-lr * grad)
    return f_plus


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="tiny", help=f"architecture shape: {', '.join(SHAPES)}")
    parser.add_argument("--cases", default=None, help="comma-separated subset of: " + ", ".join(CASES)
                        + " (default: all; the nomaster, compensated and stochastic cases only for 16-bit dtypes)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/llm_<device>_<shape>_<dtype>.json)")
    parser.add_argument("--drift", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure perturb/restore drift per dtype (CPU, this shape)")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)      # internal: one case, in this process
    parser.add_argument("--single-out", default=None, help=argparse.SUPPRESS)


def _rss_mb() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(name: str, shape: str, batch_size: int, seq_len: int, dtype: str, steps: int, warmup: int,
             device_name: str) -> dict:
    """Time one case in this process; returns its measurements."""
    import torch

    from .config import TrainConfig
    from .models import attach_peft, split_parameters, torch_dtype
    from .runs import resolve_device
    from .trainer import Trainer

    device = resolve_device(device_name)
    if device.type == "cpu":
        from hybridtheory.algorithm import counter
        counter.compiled_draws(True)  # fused Gaussian chunks on CPU (compiled once, during the warm-up steps)
    overrides = CASES[name]
    cfg = TrainConfig(model="bench", dtype=dtype, batch_size=batch_size, steps=steps + warmup, lr_base=1e-7,
                      lr_adapter=1e-4, mu=1e-3, track_displacement=False, progress=False, **overrides).validate()
    # random init: weights do not matter for time/memory
    model = build_model(shape, torch_dtype(dtype), device if device.type == "cuda" else torch.device("cpu"))
    if cfg.uses_peft:
        model = attach_peft(model, cfg.peft, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha)
    model.to(device).eval()
    split = split_parameters(model)
    trainer = Trainer(model, split, cfg, n_train=batch_size, device=device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, SHAPES[shape]["vocab_size"], (batch_size, seq_len), generator=gen)
    labels = ids.clone()
    labels[:, : seq_len // 2] = -100  # loss on the second half only, like answer-token masking
    batch = [{"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}]
    rss_load = _rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base_alloc = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for i in range(warmup + steps):
        if device.type == "cuda" and i == warmup:
            torch.cuda.reset_peak_memory_stats()
        if name == "mezo-loop":
            start = time.perf_counter()
            f = mezo_step(model, trainer.groups[0].params, batch, seed=i, mu=cfg.mu, lr=cfg.lr_base)
            if device.type == "cuda":
                torch.cuda.synchronize()
            rows.append({"step_s": time.perf_counter() - start, "phase_s": {}, "forwards": 2, "backwards": 0,
                         "loss": f, "peak_mem_mb": {"step": torch.cuda.max_memory_allocated() / 2**20}
                         if device.type == "cuda" else {}})
            continue
        rows.append(trainer.step(batch))
    timed = rows[warmup:]
    out = {
        "case": name, **overrides, "step_s_median": statistics.median(r["step_s"] for r in timed),
        "step_s_mean": statistics.fmean(r["step_s"] for r in timed),
        "phase_s_mean": {k: statistics.fmean(r["phase_s"].get(k, 0.0) for r in timed)
                         for k in sorted({k for r in timed for k in r["phase_s"]})},
        "forwards_per_step": timed[-1]["forwards"], "backwards_per_step": timed[-1]["backwards"],
        "params": {"base": split.numel("base"), "adapter": split.numel("adapter")},
        "base_master": trainer.master_dtype, "loss_last": timed[-1]["loss"],
        "rss_after_load_mb": rss_load, "peak_rss_mb": _rss_mb(),
    }
    if device.type == "cuda":
        out["memory_allocated_before_mb"] = base_alloc
        out["peak_mem_mb"] = max(r["peak_mem_mb"]["step"] for r in timed)  # whole-step peak (PhaseClock)
        out["phase_peak_mem_mb"] = {k: max(r.get("peak_mem_mb", {}).get(k, 0.0) for r in timed)
                                    for k in sorted({k for r in timed for k in r.get("peak_mem_mb", {})})}
    return out


def measure_restore_drift(shape: str, dtypes=("float32", "bfloat16", "float16"), mu: float = 1e-3) -> dict:
    """Drift of the model's base weights after one perturb/restore cycle, per dtype: in place (master none:
    +mu u, -2 mu u, +mu u) and through the trainer's fp32 master (auto: the model written as cast(master +- mu u),
    then cast(master)).

    Returns, per dtype and master mode: the fraction of weights that changed and the max absolute change.
    """
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from hybridtheory.algorithm import ZOSettings

    from .config import TrainConfig
    from .models import split_parameters, torch_dtype
    from .trainer import Trainer

    config = OPTConfig(**SHAPES[shape])
    reference = OPTForCausalLM(config)
    out = {}
    zo = ZOSettings(mu=mu, law="gaussian")
    for dtype in dtypes:
        for master in ("none", "auto"):
            model = OPTForCausalLM(config)
            model.load_state_dict(reference.state_dict())
            model.to(torch_dtype(dtype))
            cfg = TrainConfig(model="bench", method="zo-full", dtype=dtype, base_master=master, mu=mu,
                              track_displacement=False).validate()
            trainer = Trainer(model, split_parameters(model), cfg, n_train=1, device=torch.device("cpu"))
            weights = split_parameters(model).tensors("base")
            before = [w.detach().clone() for w in weights]
            direction = zo.direction(step_seed=1, query=0)
            group = trainer.groups[0]
            if group.mirrors is not None:  # the trainer's path: model = cast(master + s mu u), master untouched
                for offset in (mu, -mu):
                    direction.write_shifted(group.params, group.mirrors, offset)
                for weight, master in zip(group.mirrors, group.params):
                    weight.copy_(master)
            else:
                for alpha in (mu, -2 * mu, mu):
                    direction.add_to(group.params, alpha)
            changed = sum(int((w != b).sum()) for w, b in zip(weights, before))
            total = sum(w.numel() for w in weights)
            out[f"{dtype}/master={trainer.master_dtype}"] = {
                "fraction_changed": changed / total,
                "max_abs_change": max(float((w.float() - b.float()).abs().max()) for w, b in zip(weights, before)),
            }
            del model, trainer
    return out


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


SIXTEEN_BIT_CASES = ("hybrid-forward-nomaster", "hybrid-forward-compensated", "hybrid-forward-stochastic")


def run_bench_command(ns) -> int:
    if ns.shape not in SHAPES:
        raise UserError(f"unknown shape {ns.shape!r}; choose one of: {', '.join(SHAPES)}")
    if ns.cases is None:
        cases = [c for c in CASES if c not in SIXTEEN_BIT_CASES or ns.dtype != "float32"]
    else:
        cases = [c for c in ns.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise UserError(f"unknown bench case(s) {', '.join(unknown)}; choose from: {', '.join(CASES)}")
    if ns.dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"unknown dtype {ns.dtype!r}; choose one of: float32, bfloat16, float16")
    if ns.threads:
        import torch
        torch.set_num_threads(ns.threads)
    if ns.single:  # child process: one case, JSON to a file
        result = run_case(ns.single, ns.shape, ns.batch_size, ns.seq_len, ns.dtype, ns.steps, ns.warmup, ns.device)
        Path(ns.single_out).write_text(json.dumps(result))
        return 0

    import torch

    from .runs import atomic_write_json, device_name, environment, resolve_device

    device = resolve_device(ns.device)
    results = {}
    for name in cases:
        with tempfile.TemporaryDirectory() as tmp:
            out_file = Path(tmp) / "case.json"
            cmd = [sys.executable, "-m", "llm_experiments", "bench", "--single", name, "--single-out", str(out_file),
                   "--shape", ns.shape, "--batch-size", str(ns.batch_size), "--seq-len", str(ns.seq_len),
                   "--dtype", ns.dtype, "--steps", str(ns.steps), "--warmup", str(ns.warmup),
                   "--device", device.type, "--threads", str(ns.threads)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            if proc.returncode != 0 or not out_file.exists():
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                results[name] = {"case": name, "error": tail}
                print(f"{name}: failed: {tail}", file=sys.stderr)
                continue
            results[name] = json.loads(out_file.read_text())
            results[name]["wall_s"] = time.perf_counter() - start
        r = results[name]
        mem = f", peak {r['peak_mem_mb']:.0f} MiB" if "peak_mem_mb" in r else f", peak RSS {r['peak_rss_mb']:.0f} MiB"
        print(f"{name:16s} step {r['step_s_median'] * 1e3:9.1f} ms (median of {ns.steps}){mem}, "
              f"{r['forwards_per_step']} fwd + {r['backwards_per_step']} bwd")

    def get(case, key):
        return results.get(case, {}).get(key)

    mem_key = "peak_mem_mb" if device.type == "cuda" else "peak_rss_mb"
    ratios = {
        "hybrid_forward_time_over_fo_peft": _ratio(get("hybrid-forward", "step_s_median"), get("fo-peft", "step_s_median")),
        "hybrid_forward_rademacher_time_over_fo_peft": _ratio(get("hybrid-forward-rademacher", "step_s_median"),
                                                              get("fo-peft", "step_s_median")),
        "hybrid_central_time_over_fo_peft": _ratio(get("hybrid-central", "step_s_median"), get("fo-peft", "step_s_median")),
        "hybrid_forward_mem_over_fo_peft": _ratio(get("hybrid-forward", mem_key), get("fo-peft", mem_key)),
        "hybrid_central_mem_over_fo_peft": _ratio(get("hybrid-central", mem_key), get("fo-peft", mem_key)),
        "hybrid_forward_nomaster_mem_over_fo_peft": _ratio(get("hybrid-forward-nomaster", mem_key), get("fo-peft", mem_key)),
        "hybrid_forward_nomaster_time_over_fo_peft": _ratio(get("hybrid-forward-nomaster", "step_s_median"),
                                                            get("fo-peft", "step_s_median")),
        **{f"hybrid_forward_{policy}_{what}_over_fo_peft": _ratio(get(f"hybrid-forward-{policy}", key), get("fo-peft", key))
           for policy in ("compensated", "stochastic") for what, key in (("mem", mem_key), ("time", "step_s_median"))},
        "hybrid_forward_mem_over_fo_full_adamw": _ratio(get("hybrid-forward", mem_key), get("fo-full-adamw", mem_key)),
        "zo_full_mem_over_fo_full_adamw": _ratio(get("zo-full", mem_key), get("fo-full-adamw", mem_key)),
        "zo_full_time_over_mezo_loop": _ratio(get("zo-full", "step_s_median"), get("mezo-loop", "step_s_median")),
        "zo_full_mem_over_mezo_loop": _ratio(get("zo-full", mem_key), get("mezo-loop", mem_key)),
    }
    drift = measure_restore_drift(ns.shape) if ns.drift and ns.shape not in LLAMA_SHAPES else None
    report = {
        "restore_drift_after_perturb_restore": drift,
        "device": device_name(device), "device_type": device.type, "environment": environment(device),
        "shape": ns.shape, "architecture": {"class": "LlamaForCausalLM" if ns.shape in LLAMA_SHAPES
                                                             else "OPTForCausalLM", **SHAPES[ns.shape]}, "init": "random (no download)",
        "batch_size": ns.batch_size, "seq_len": ns.seq_len, "dtype": ns.dtype, "steps": ns.steps, "warmup": ns.warmup,
        "threads": ns.threads or torch.get_num_threads(), "memory_metric": mem_key,
        "memory_note": ("torch.cuda.max_memory_allocated, whole step, max over the timed steps" if device.type == "cuda" else
                        "process peak RSS (ru_maxrss) incl. the Python/torch baseline; compare differences"),
        "cases": results, "ratios": ratios,
        "targets": {"hybrid_mem_le_1.1x_fo_peft": None if ratios["hybrid_forward_mem_over_fo_peft"] is None
                    else ratios["hybrid_forward_mem_over_fo_peft"] <= 1.1,
                    "hybrid_forward_time_le_1.5x_fo_peft": None if ratios["hybrid_forward_time_over_fo_peft"] is None
                    else ratios["hybrid_forward_time_over_fo_peft"] <= 1.5,
                    # issue 9: hybrid-forward <= 1.6x fo-peft (GPU and CPU); zo-full <= 0.7x the MeZO-style loop
                    # on GPU, faster than it on CPU
                    "hybrid_forward_time_le_1.6x_fo_peft": None if ratios["hybrid_forward_time_over_fo_peft"] is None
                    else ratios["hybrid_forward_time_over_fo_peft"] <= 1.6,
                    "zo_full_time_le_0.7x_mezo_loop": None if ratios["zo_full_time_over_mezo_loop"] is None
                    else ratios["zo_full_time_over_mezo_loop"] <= 0.7,
                    "zo_full_faster_than_mezo_loop": None if ratios["zo_full_time_over_mezo_loop"] is None
                    else ratios["zo_full_time_over_mezo_loop"] < 1.0,
                    "note": "targets are stated for GPU at the OPT-1.3B shape" if device.type != "cuda" or
                    ns.shape != "opt-1.3b" else "GPU, OPT-1.3B shape"},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(ns.out or f"benchmarks/results/llm_{device.type}_{ns.shape}_{ns.dtype}.json")
    atomic_write_json(out, report)
    for key, value in ratios.items():
        if value is not None:
            print(f"{key}: {value:.3f}")
    print(f"wrote {out}")
    return 0
