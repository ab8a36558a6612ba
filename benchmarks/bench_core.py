"""Speed of the synthetic fast path, measured in one run, written to benchmarks/results/core_cpu.json.

* inner steps per second: batched fast path (S replicates per step) vs the reference loop
  (one replicate, plain per-step arithmetic), same problem and method;
* wall time of ``python -m hybridtheory.figures --quick`` and of the full default set (fresh output
  folders, ``--recompute``);
* with ``--sweep``: wall time of the ramp epoch-complexity sweep down to eps = 0.05 (8 seeds).

Usage: ``python benchmarks/bench_core.py [--sweep] [--out benchmarks/results/core_cpu.json]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hybridtheory.algorithm.reference import reference_run
from hybridtheory.figures import write_json
from hybridtheory.objectives import make
from hybridtheory.runner import RunConfig, run


def steps_per_second(problem_name: str, replicates: int, epochs: int) -> dict:
    problem = make(problem_name)
    cfg = RunConfig(method="hybrid", eta_x=1e-3, eta_y=1e-3, mu=1e-3, epochs=epochs, replicates=replicates)
    run(problem, RunConfig(epochs=2, replicates=replicates))  # warm-up
    t0 = time.perf_counter()
    run(problem, cfg)
    fast = time.perf_counter() - t0
    ref_cfg = RunConfig(method="hybrid", eta_x=1e-3, eta_y=1e-3, mu=1e-3, epochs=max(1, epochs // 10), replicates=1)
    t0 = time.perf_counter()
    reference_run(problem, ref_cfg, 0)
    ref = time.perf_counter() - t0
    steps_fast = epochs * problem.n
    steps_ref = ref_cfg.epochs * problem.n
    return {"problem": problem_name, "replicates": replicates, "fast_steps_per_s": steps_fast / fast,
            "fast_replicate_steps_per_s": steps_fast * replicates / fast,
            "reference_steps_per_s": steps_ref / ref,
            "speedup_replicate_steps": (steps_fast * replicates / fast) / (steps_ref / ref)}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sweep", action="store_true", help="also time the ramp sweep to eps=0.05 (~10 min)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/core_cpu.json"))
    ap.add_argument("--sweep-out", type=Path, default=None,
                    help="folder for the sweep's figures/ramp_sweep.json (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = {"device": f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, no GPU",
           "torch": torch.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d"), "throughput": []}
    for name, S in [("ramp", 1), ("ramp", 8), ("ramp", 256), ("hyb", 8), ("lora", 8)]:
        res["throughput"].append(steps_per_second(name, S, 300))
        print(res["throughput"][-1])
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        res["figures_quick_seconds"] = timed([py, "-m", "hybridtheory.figures", "--quick", "--recompute", "--out", d + "/q"])
        res["figures_full_seconds"] = timed([py, "-m", "hybridtheory.figures", "--recompute", "--out", d + "/f"])
        print("figures quick", res["figures_quick_seconds"], "full", res["figures_full_seconds"])
        if args.sweep:
            sweep_out = args.sweep_out or Path(d) / "s"
            res["ramp_sweep_seconds"] = timed([py, "-m", "hybridtheory.figures", "--sweep", "--recompute",
                                               "--only", "epoch_complexity", "--out", str(sweep_out)])
            res["ramp_sweep"] = json.loads((sweep_out / "ramp_sweep.json").read_text())["data"]
            print("ramp sweep", res["ramp_sweep_seconds"])
    res["targets"] = {"figures_full_under_s": 120, "ramp_sweep_under_s": 600}
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
