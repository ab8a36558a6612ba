"""The run-folder rule, the resume fingerprint, append-only logs and crash-consistent checkpoints.

**Rule** (checked before anything is loaded or written, so a refused command writes nothing):

==============================================  ==========================================================
folder                                          what ``llm-hybrid train`` does
==============================================  ==========================================================
missing or empty                                fresh run (``--resume``: error, nothing to resume)
finished run (``results.json``)                 refuse unless ``--overwrite`` (``validate`` skips it)
unfinished run (``config.json``, no results)    refuse unless ``--resume`` (or ``--overwrite``)
anything else (a file, other files, no access)  refuse
==============================================  ==========================================================

**Fingerprint**: ``--resume`` compares every trajectory field of the config (``trajectory=True`` in
:mod:`llm_experiments.config`: everything except output, logging, progress and device fields) with the saved
``config.json`` and refuses, naming the fields that differ; the other fields may change and are reported.

**Checkpoint** ``RUN/checkpoint/`` is one folder written atomically at every dev evaluation (step 0, every
``eval_every`` steps, the end)::

    checkpoint/progress.json   phase, selection state (best step and score), byte length of each log
    checkpoint/state/          the trainer's resumable state (``Trainer.write_state`` / ``load_state``)
    checkpoint/best/           the same for the best-dev step (hard links: no copy when it is unchanged)

Everything a resumed run needs is in that one folder, so a kill at any point resumes from a consistent
state: the logs are truncated to the lengths the checkpoint recorded (no duplicate rows), an interrupted
folder swap is undone and temporaries are removed (:func:`hybridtheory.io.recover_folder`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hybridtheory.io import (atomic_folder, fault_point, is_temporary, link_tree, recover_folder,
                             remove_stale_temporaries)

from .config import TrainConfig
from .errors import UserError

CHECKPOINT = "checkpoint"
LOGS = ("metrics.jsonl", "evals.jsonl")


@dataclass
class RunFolder:
    """The outcome of the rule for one ``train`` command."""

    path: Path
    mode: str                                          # "fresh", "resume" or "overwrite"
    changed: list[str] = field(default_factory=list)   # non-trajectory fields changed by a resume

    def begin(self) -> None:
        """Make the folder ready to write (called once model, data and config have all been accepted)."""
        if self.mode == "overwrite":
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if self.mode == "fresh":  # only temporaries of a run killed before its config was written
            for stale in self.path.iterdir():
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()

    def recover(self) -> None:
        """Undo what a crash cut short (resume only): put back a half-swapped folder, remove temporaries."""
        recover_folder(self.path / CHECKPOINT)
        recover_folder(self.path / "model")
        remove_stale_temporaries(self.path)


def _writable_ancestor(path: Path) -> Path:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return probe


def open_run_folder(cfg: TrainConfig, resume: bool, overwrite: bool) -> RunFolder:
    """Apply the run-folder rule to ``cfg.output_dir`` (absolute); raise one :class:`UserError` line."""
    path = Path(cfg.output_dir)
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one")
    if path.exists() and not path.is_dir():
        raise UserError(f"output dir {str(path)!r} is a file; expected a new folder or a run folder")
    ancestor = _writable_ancestor(path)
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"output dir {str(path)!r} cannot be created or written ({str(ancestor)!r} is not a "
                        "writable folder); choose another --output-dir")
    entries = [p for p in path.iterdir() if not is_temporary(p.name)] if path.is_dir() else []
    if not entries:
        if resume:
            raise UserError(f"--resume: no run in {str(path)!r} (missing or empty folder); check the path or "
                            "drop --resume to start a new run")
        return RunFolder(path, "fresh")
    if not (path / "config.json").is_file():
        raise UserError(f"output dir {str(path)!r} is not empty and holds no run (no config.json); choose a new "
                        "or empty folder")
    if overwrite:
        return RunFolder(path, "overwrite")
    if (path / "results.json").is_file():
        raise UserError(f"run folder {str(path)!r} holds a finished run; pass --overwrite to run it again or "
                        "choose another --output-dir")
    if not resume:
        raise UserError(f"run folder {str(path)!r} holds an unfinished run; pass --resume to continue it or "
                        "--overwrite to start again")
    saved = saved_config(path)
    trajectory, other = cfg.differences(saved)
    if trajectory:
        shown = ", ".join(f"{name} ({getattr(saved, name)!r} -> {getattr(cfg, name)!r})" for name in trajectory)
        raise UserError(f"--resume would change the run in {str(path)!r}: {shown}; resume with the saved config "
                        f"(--config {str(path / 'config.json')!r}) or use another --output-dir")
    return RunFolder(path, "resume", other)


def saved_config(path: Path) -> TrainConfig:
    from .config import load_mapping
    return TrainConfig.from_dict(load_mapping(path / "config.json"),
                                 f"saved config {str(path / 'config.json')!r}").with_absolute_paths()


# ---------------------------------------------------------------------- logs
class JsonlLog:
    """An append-only JSON-lines log; ``length`` is its size in bytes after the last whole line."""

    def __init__(self, path: Path, truncate_to: int = 0):
        self.path = Path(path)
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < truncate_to:
            raise UserError(f"log {str(self.path)!r} is shorter ({size} bytes) than its checkpoint says "
                            f"({truncate_to}); it was changed outside the run: re-run with --overwrite")
        self.handle = open(self.path, "ab")
        self.handle.truncate(truncate_to)  # drop rows written after the checkpoint (a resumed run rewrites them)
        self.length = truncate_to

    def write(self, row: dict) -> None:
        data = (json.dumps(row, default=float) + "\n").encode("utf-8")
        self.handle.write(data)
        self.handle.flush()
        self.length += len(data)
        fault_point(f"{self.path.name}:append")

    def close(self) -> None:
        self.handle.close()


# ---------------------------------------------------------------------- checkpoint
def read_checkpoint(run_dir: Path) -> dict | None:
    """``progress.json`` of the run's checkpoint (None if the run never reached one)."""
    folder = run_dir / CHECKPOINT
    if not folder.is_dir():
        return None
    try:
        progress = json.loads((folder / "progress.json").read_text(encoding="utf-8"))
        if not (isinstance(progress, dict) and {"phase", "best", "logs"} <= set(progress)):
            raise ValueError("missing keys")
    except (OSError, ValueError) as exc:
        raise UserError(f"checkpoint {str(folder)!r} is unreadable ({str(exc).splitlines()[0]}); delete it or "
                        "re-run with --overwrite") from None
    return progress


def write_checkpoint(run_dir: Path, trainer, progress: dict, new_best: bool, keep_best: bool) -> None:
    """Write trainer state, best state and ``progress`` as one atomic folder.

    ``new_best``: this step is the best so far (``best/`` = ``state/``); otherwise ``keep_best`` keeps the
    previous checkpoint's ``best/`` (hard-linked, not copied).
    """
    previous = run_dir / CHECKPOINT
    with atomic_folder(previous) as tmp:
        (tmp / "state").mkdir()
        trainer.write_state(tmp / "state")
        if new_best:
            link_tree(tmp / "state", tmp / "best")
        elif keep_best and (previous / "best").is_dir():
            link_tree(previous / "best", tmp / "best")
        (tmp / "progress.json").write_text(json.dumps(progress, indent=2, sort_keys=True) + "\n")
