"""``llm-hybrid`` / ``python -m llm_experiments``: train, validate, report, bench.

* ``train``    one run; flags mirror :class:`~llm_experiments.config.TrainConfig` (``--config FILE`` first,
               flags override it). Writes a run folder (see :mod:`llm_experiments.runs`).
* ``validate`` a grid of models x tasks x methods x seeds from a grid file (``configs/paper_grid.yaml``);
               finished cells are skipped, so re-running continues an interrupted grid.
* ``report``   results table (Markdown + CSV) and plots from run folders.
* ``bench``    step time and peak memory of every method on a randomly initialised architecture.
* ``probe``    the theory's constants (Hessian blocks, (L0, L1), heterogeneity, effective rank) at checkpoints.

Bad input prints one ``error: ...`` line on stderr and exits with status 2; a run that diverges (non-finite
loss, gradient, ZO coefficient or parameter) prints one line and exits with status 3.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hybridtheory.errors import output_folder

from .errors import RankFailure, UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line (no usage dump)."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def _quiet_hf() -> None:
    import os
    import warnings
    # a library's own deprecation notice (peft asks transformers about gradient checkpointing) is not for users
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        import huggingface_hub
        huggingface_hub.utils.logging.set_verbosity_error()  # no multi-line retry chatter on a bad Hub id
    except (ImportError, AttributeError):
        pass


def build_parser() -> argparse.ArgumentParser:
    from .config import add_config_arguments

    parser = _Parser(prog="llm-hybrid", description="Hybrid ZO/FO fine-tuning of Hugging Face causal LMs.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="one training run")
    train.add_argument("--config", default=None, help="JSON or YAML file with TrainConfig fields")
    train.add_argument("--resume", action="store_true",
                       help="continue the unfinished run in --output-dir from its checkpoint (the config must "
                            "match the saved one in every field that changes the run)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in --output-dir (finished or not) with a fresh run")
    train.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    add_config_arguments(train)

    validate = sub.add_parser("validate", help="grid of runs from a grid file")
    validate.add_argument("grid", help="grid file (YAML/JSON), e.g. configs/paper_grid.yaml")
    validate.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    validate.add_argument("--only", default=None, help="run only cells whose output folder contains this text")
    validate.add_argument("--output-root", default=None, help="override the grid's output_root")
    validate.add_argument("--keep-going", action="store_true", help="continue after a failed cell")

    report = sub.add_parser("report", help="table + plots from run folders")
    report.add_argument("runs", nargs="+", help="run folders or folders containing them")
    report.add_argument("--out", default=None, type=output_folder, help="output folder (default: the first argument)")
    report.add_argument("--no-plots", action="store_true", help="tables only")

    demo = sub.add_parser("demo-assets", help="write a tiny random OPT + tokenizer and generated task data (offline)")
    demo.add_argument("folder", type=output_folder, help="output folder (model/ and one data folder per task)")
    demo.add_argument("--arch", default="opt", choices=("opt", "llama", "gpt2"), help="tiny architecture (default opt)")

    probe = sub.add_parser("probe", help="the theory's constants of a model's loss at checkpoints of a run")
    probe.add_argument("--config", default=None, help="JSON or YAML file with TrainConfig fields")
    probe.add_argument("--checkpoints", type=int, nargs="+", default=[0],
                       help="steps at which to probe (0 = before training); the run stops at the last")
    from .probe import add_probe_arguments
    add_probe_arguments(probe)
    add_config_arguments(probe)

    bench = sub.add_parser("bench", help="step time and peak memory of every method")
    from .bench import add_bench_arguments
    add_bench_arguments(bench)
    return parser


def _cmd_train(ns) -> int:
    from .config import config_from_namespace
    from .runs import run_training

    cfg = config_from_namespace(ns)
    if ns.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        return 0
    results = run_training(cfg, resume=ns.resume, overwrite=ns.overwrite)
    from .distributed import is_main_process
    if not is_main_process():  # one summary line per run, not per rank
        return 0
    if results["status"] == "diverged":
        d = results["diverged"]
        print(f"error: run diverged at step {d['step']} ({d['reason']}); saved the best finite state (step "
              f"{results['selected_step']}) in {cfg.output_dir}", file=sys.stderr)
        return 3
    ev = results["eval"]
    print(f"{cfg.method} {cfg.task}: eval accuracy {ev['accuracy']:.4f} (majority {ev['majority_baseline']:.4f}, "
          f"n={ev['n']}), selected step {results['selected_step']}; run folder {cfg.output_dir}")
    return 0


def _cmd_probe(ns) -> int:
    from .config import config_from_namespace
    from .probe import run_probe, settings_from_namespace

    cfg = config_from_namespace(ns)
    result = run_probe(cfg, ns.checkpoints, settings_from_namespace(ns), cfg.output_dir, eps=ns.eps)
    fit, th = result["l0_l1_fit"], result["theory"]
    for p in result["checkpoints"]:
        print(f"step {p['step']:>5}: |lambda|max base {p['hessian']['base']['norm']:.4g}, adapter "
              f"{p['hessian']['adapter']['norm']:.4g}, ||H_xy|| {p['hessian']['cross']['norm']:.4g}, "
              f"eff. rank base {p['effective_rank']['base']:.4g}, ||grad_y|| {p['grad_norm']['adapter']:.4g}")
    print(f"(L0, L1) fit: L0 = {fit['L0']:.4g}, L1 = {fit['L1']:.4g}; Theorem 1 caps eta_x <= {th['eta_x_cap']:.3g}, "
          f"eta_y <= {th['eta_y_cap']:.3g}; written to {cfg.output_dir}/probe.json")
    return 0


def _cmd_validate(ns) -> int:
    from .config import GridConfig
    from .report import write_report
    from .runs import run_training

    grid = GridConfig.from_file(ns.grid)
    if ns.output_root:
        grid.output_root = ns.output_root
    cells = [c for c in grid.expand() if ns.only is None or ns.only in c.output_dir]
    if ns.dry_run:
        from .trainer import passes_per_step

        for c in cells:  # each cell's budget: steps, and forward / backward passes (per step and in total)
            fwd, bwd = passes_per_step(c)
            print(f"{c.output_dir}\t{c.model}\t{c.task}\t{c.method}\tlr_base={c.lr_base} lr_adapter={c.lr_adapter}"
                  f"\tsteps={c.steps} batch={c.batch_size} forwards={fwd}x{c.steps}={fwd * c.steps} "
                  f"backwards={bwd}x{c.steps}={bwd * c.steps}")
        print(f"{len(cells)} runs")
        return 0
    from .distributed import is_main_process
    say = print if is_main_process() else (lambda *a, **k: None)  # a launched grid: rank 0 reports
    failures = 0
    for i, cfg in enumerate(cells, 1):
        if (Path(cfg.output_dir) / "results.json").exists():
            say(f"[{i}/{len(cells)}] done already: {cfg.output_dir}")
            continue
        say(f"[{i}/{len(cells)}] {cfg.output_dir}")
        try:
            results = run_training(cfg, resume=(Path(cfg.output_dir) / "config.json").is_file())
            if results["status"] == "diverged":
                raise UserError(f"diverged at step {results['diverged']['step']} ({results['diverged']['reason']})")
        except UserError as exc:
            failures += 1
            print(f"error: {cfg.output_dir}: {exc}", file=sys.stderr)
            if not ns.keep_going:
                return 2
    if not is_main_process():
        return 1 if failures else 0
    write_report([Path(grid.output_root)], Path(grid.output_root), plots=True)
    print(f"report written to {grid.output_root}/results.md")
    return 1 if failures else 0


def _cmd_report(ns) -> int:
    from .report import write_report

    out = Path(ns.out or ns.runs[0])
    table = write_report([Path(r) for r in ns.runs], out, plots=not ns.no_plots)
    print(table)
    return 0


def _cmd_demo_assets(ns) -> int:
    from .testing import GENERATED_TASKS, save_tiny_checkpoint, write_task_data

    folder = Path(ns.folder)
    try:
        save_tiny_checkpoint(folder / "model", ns.arch)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for task in GENERATED_TASKS:
        write_task_data(folder / task, task, 600, 200)
    print(f"wrote {folder}/model and generated data for {', '.join(GENERATED_TASKS)} (made-up words, no real text)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        ns = parser.parse_args(argv)
        if ns.command is None:
            raise UserError("no command given; choose one of train, validate, report, demo-assets, bench, probe "
                            "(see llm-hybrid --help)")
        _quiet_hf()
        if ns.command == "train":
            return _cmd_train(ns)
        if ns.command == "validate":
            return _cmd_validate(ns)
        if ns.command == "report":
            return _cmd_report(ns)
        if ns.command == "probe":
            return _cmd_probe(ns)
        if ns.command == "demo-assets":
            return _cmd_demo_assets(ns)
        from .bench import run_bench_command
        return run_bench_command(ns)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RankFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _leave_broken_rank(1)
    except OSError as exc:  # a folder that cannot be written, a disk that is full: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:  # a launched run: leave the process group cleanly
            from .distributed import shutdown
            shutdown()


def _leave_broken_rank(code: int) -> int:
    """Exit status of a launched rank whose peer failed, returned only outside a launched run.

    Its process group cannot be torn down: destroying a gloo group whose peer is gone, or the interpreter's own
    exit, can end in ``terminate called without an active exception`` (SIGABRT, exit -6, seen in CI) after the
    one-line error was printed. The run folder is consistent at any instant (atomic writes), so a launched rank
    leaves at once with the status it promised, skipping the teardown.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


app = main  # alias for entry-point styles that expect `app`
