"""``python -m hybridtheory.figures``: regenerate the default figures (see the package docstring)."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path

from ..errors import OneLineParser, one_line_errors, output_folder
from . import load_or_compute, registry, write_json


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        # "dirty" = tracked source changed; the figure outputs themselves do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(top,exclude)figures", ":(top,exclude)benchmarks/results"],
                               capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("hybridtheory", "numpy", "scipy", "torch", "sympy", "matplotlib"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    figs = registry()
    ap = OneLineParser(prog="hybridtheory figures", description=__doc__)
    ap.add_argument("--out", type=output_folder, default=Path("figures"), help="output folder (default: figures)")
    ap.add_argument("--quick", action="store_true", help="small, fast settings (CI)")
    ap.add_argument("--only", nargs="+", choices=sorted(figs), help="only these figures")
    ap.add_argument("--recompute", action="store_true", help="ignore cached results")
    ap.add_argument("--sweep", action="store_true",
                    help="also run the long ramp sweep down to eps=0.05 (about 10 minutes on 2 cores)")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)  # tiny tensors: threading only adds overhead on the fast path

    names = args.only or list(figs)
    manifest = {"git_revision": _git_revision(), "quick": args.quick, "versions": _versions(),
                "command": " ".join(["python -m hybridtheory.figures"] + (argv if argv is not None else sys.argv[1:])),
                "figures": {}}
    if args.sweep:
        from .sweep import run_sweep
        t0 = time.perf_counter()
        res, computed = run_sweep(args.out, args.quick, args.recompute)
        manifest["figures"]["ramp_sweep"] = {"seconds": round(time.perf_counter() - t0, 2), "computed": computed,
                                             "params": res["params"]}
        d = res["data"]
        print(f"ramp sweep: slope {d['slope']:.3f} CI95 {d['slope_ci95']} (T_bound slope {d['bound_slope']:.3f})")
    for name in names:
        fig = figs[name]
        t0 = time.perf_counter()
        res, computed = load_or_compute(args.out, fig, fig.params(args.quick), args.recompute)
        t1 = time.perf_counter()
        fig.plot(res, args.out)
        t2 = time.perf_counter()
        manifest["figures"][name] = {"png": f"{name}.png", "csv": f"{name}.csv", "computed": computed,
                                     # the wall time of the computation, also when this call used the cache
                                     "compute_seconds": res.get("compute_seconds", round(t1 - t0, 2)),
                                     "plot_seconds": round(t2 - t1, 2), "params": res["params"]}
        print(f"{name}: {'computed' if computed else 'cached'} in {t1 - t0:.1f}s, plotted in {t2 - t1:.1f}s")
    write_json(args.out / "manifest.json", manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
