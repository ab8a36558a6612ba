"""Results table (Markdown + CSV) and plots from run folders; reads only the files a run wrote.

* ``results.csv``: one row per run (model, task, method, PEFT kind, seed, step sizes, selected step, dev and
  eval accuracy, majority baselines, train time, forwards, peak memory).
* ``results.md``: mean +- sample std of eval accuracy over seeds per (model, task, method), with the
  majority-class baseline beside it, then the per-run table.
* ``plots/<model>__<task>.png``: training loss and dev accuracy vs steps, wall time and forward passes (the
  cost axis: methods spend different passes per step), one colour per method (each seed a line), with the dev
  split's own majority line, plus ``.csv`` of the plotted points.

The table puts accuracy beside its cost: steps, forward and backward passes, train time; each split's
accuracy beside that split's majority baseline.

Accuracy is always the one measured on the eval split at the step selected on dev.
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from .errors import UserError
from .runs import atomic_write_text, read_jsonl

COLUMNS = ["model", "task", "method", "peft", "seed", "lr_base", "lr_adapter", "mu", "zo_difference", "fo_optimizer",
           "steps", "selected_step", "dev_accuracy", "dev_majority", "eval_accuracy", "eval_majority", "eval_n",
           "train_time_s", "backwards",
           "forwards", "peak_mem_mb", "run_dir"]


def find_runs(paths: list[Path]) -> list[Path]:
    """Folders holding ``results.json`` under (or at) the given paths."""
    found = []
    for path in paths:
        if not path.exists():
            raise UserError(f"run folder {str(path)!r} does not exist")
        if (path / "results.json").is_file():
            found.append(path)
        else:
            found.extend(sorted(p.parent for p in path.rglob("results.json")))
    if not found:
        raise UserError(f"no finished runs (results.json) under {', '.join(map(str, paths))}")
    return sorted(set(found))


def _label(row: dict) -> str:
    return row["method"] + (f" ({row['peft']})" if row["peft"] else "")


def collect(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run in run_dirs:
        cfg = json.loads((run / "config.json").read_text())
        res = json.loads((run / "results.json").read_text())
        dev, ev = res.get("dev") or {}, res.get("eval") or {}
        rows.append({
            "model": cfg["model"], "task": cfg["task"], "method": cfg["method"], "peft": res.get("peft") or "",
            "seed": cfg["seed"], "lr_base": cfg["lr_base"], "lr_adapter": cfg["lr_adapter"], "mu": cfg["mu"],
            "zo_difference": cfg["zo_difference"], "fo_optimizer": cfg["fo_optimizer"], "steps": res.get("steps"),
            "selected_step": res.get("selected_step"), "dev_accuracy": dev.get("accuracy"),
            "dev_majority": dev.get("majority_baseline"), "backwards": res.get("backwards"),
            "eval_accuracy": ev.get("accuracy"), "eval_majority": ev.get("majority_baseline"), "eval_n": ev.get("n"),
            "train_time_s": res.get("train_time_s"), "forwards": res.get("forwards"),
            "peak_mem_mb": (res.get("memory") or {}).get("step"), "run_dir": str(run),
        })
    return rows


def _fmt(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def tables(rows: list[dict]) -> tuple[str, str]:
    """(markdown, csv) text."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    groups = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["task"], _label(row))].append(row)
    lines = ["| model | task | method | seeds | eval accuracy (mean ± std) | eval majority | dev accuracy | "
             "dev majority | steps | forward passes | backward passes | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, task, label), group in sorted(groups.items()):
        acc = [r["eval_accuracy"] for r in group if r["eval_accuracy"] is not None]
        dev = [r["dev_accuracy"] for r in group if r["dev_accuracy"] is not None]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        mean = lambda key: statistics.fmean(r[key] or 0 for r in group)  # noqa: E731
        lines.append(f"| {model} | {task} | {label} | {len(group)} | "
                     f"{statistics.fmean(acc):.4f} ± {std:.4f} | {_fmt(group[0]['eval_majority'])} | "
                     f"{_fmt(statistics.fmean(dev)) if dev else '-'} | {_fmt(group[0]['dev_majority'])} | "
                     f"{mean('steps'):.0f} | {mean('forwards'):.0f} | {mean('backwards'):.0f} | "
                     f"{mean('train_time_s'):.1f} |")
    lines += ["", "Per run:", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n", buf.getvalue()


def plot(rows: list[dict], out: Path) -> list[Path]:
    """Loss and dev accuracy vs steps and wall time per (model, task); returns the PNG paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybridtheory.figures import atomic_savefig

    out.mkdir(parents=True, exist_ok=True)
    by_cell = defaultdict(list)
    for row in rows:
        by_cell[(row["model"], row["task"])].append(row)
    written = []
    for (model, task), group in sorted(by_cell.items()):
        fig, axes = plt.subplots(2, 3, figsize=(16, 7))
        labels = sorted({_label(r) for r in group})
        colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
        points = ["label,seed,kind,step,time_s,forwards,value"]
        for row in group:
            run = Path(row["run_dir"])
            metrics = [m for m in read_jsonl(run / "metrics.jsonl") if "loss" in m]
            evals = [e for e in read_jsonl(run / "evals.jsonl") if e.get("split") == "dev"]
            time_at = {m["step"]: m["time_s"] for m in metrics}
            time_at[0] = 0.0
            # forward passes so far (the cost axis of equal-budget comparisons); a run's passes per step are
            # constant, and log_every may skip steps, so it is steps x passes per step
            per_step = metrics[-1].get("forwards", 0) if metrics else 0
            fwd_at = {s: s * per_step for s in set(time_at) | {e["step"] for e in evals}}
            colour, lab = colours[_label(row)], _label(row)
            legend = lab if row["seed"] == min(r["seed"] for r in group if _label(r) == lab) else None
            steps, times, losses = [m["step"] for m in metrics], [m["time_s"] for m in metrics], [m["loss"] for m in metrics]
            axes[0, 0].plot(steps, losses, color=colour, alpha=0.7, lw=1, label=legend)
            axes[0, 1].plot(times, losses, color=colour, alpha=0.7, lw=1, label=legend)
            axes[0, 2].plot([fwd_at[s] for s in steps], losses, color=colour, alpha=0.7, lw=1, label=legend)
            e_steps = [e["step"] for e in evals]
            e_acc = [e["accuracy"] for e in evals]
            e_time = [time_at.get(s, float("nan")) for s in e_steps]
            axes[1, 0].plot(e_steps, e_acc, "o-", color=colour, alpha=0.7, ms=3, label=legend)
            axes[1, 1].plot(e_time, e_acc, "o-", color=colour, alpha=0.7, ms=3, label=legend)
            e_fwd = [fwd_at.get(s, float("nan")) for s in e_steps]
            axes[1, 2].plot(e_fwd, e_acc, "o-", color=colour, alpha=0.7, ms=3, label=legend)
            points += [f"{lab},{row['seed']},loss,{s},{t},{fwd_at[s]},{v}" for s, t, v in zip(steps, times, losses)]
            points += [f"{lab},{row['seed']},dev_accuracy,{s},{t},{f},{v}"
                       for s, t, f, v in zip(e_steps, e_time, e_fwd, e_acc)]
        majority = group[0]["dev_majority"]  # these panels show dev accuracy: the dev split's own majority
        for ax in axes[1]:
            if majority is not None:
                ax.axhline(majority, color="grey", ls=":", lw=1, label="majority (dev)")
        for ax, (x, y) in zip(axes.flat, [("step", "training loss"), ("wall time (s)", "training loss"),
                                          ("forward passes", "training loss"), ("step", "dev accuracy"),
                                          ("wall time (s)", "dev accuracy"), ("forward passes", "dev accuracy")]):
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=8)
        axes[1, 0].legend(fontsize=8)
        fig.suptitle(f"{model} / {task}")
        fig.tight_layout()
        stem = f"{Path(model).name}__{task}"
        path = out / f"{stem}.png"
        atomic_savefig(fig, path, dpi=110, bbox_inches=None)
        plt.close(fig)
        atomic_write_text(out / f"{stem}.csv", "\n".join(points) + "\n")
        written.append(path)
    return written


def write_report(paths: list[Path], out: Path, plots: bool = True) -> str:
    """Write results.md, results.csv (and plots/) under ``out``; return the Markdown."""
    rows = collect(find_runs(paths))
    markdown, csv_text = tables(rows)
    atomic_write_text(out / "results.md", markdown)
    atomic_write_text(out / "results.csv", csv_text)
    if plots:
        plot(rows, out / "plots")
    return markdown
