"""Runs that cannot be corrupted: the run-folder rule, the resume fingerprint, crash-consistent checkpoints
(fault injection at every named write point, plus real SIGKILLs of a subprocess) and the divergence guard.

Every resumed run is compared with the uninterrupted one file by file, timing fields aside: logs, results,
config, checkpoint tensors and the saved model byte for byte.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from hybridtheory.io import SimulatedCrash, set_fault_hook  # noqa: E402
from llm_experiments.cli import main  # noqa: E402
from llm_experiments.config import TrainConfig, trajectory_fields  # noqa: E402
from llm_experiments.runs import read_jsonl  # noqa: E402
from llm_experiments.testing import write_tiny_assets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"step_s", "time_s", "phase_s", "eval_s", "train_time_s", "elapsed_s", "started", "finished",
          "peak_mem_mb", "memory", "logs"}  # logs: byte lengths, which depend on the timing fields

# the fields --resume may change; every other TrainConfig field must match the saved config
NOT_TRAJECTORY = {"output_dir", "progress", "log_every", "track_displacement", "phase_detail", "save_model", "device",
                  "checkpoint_base", "displacement_start",
                  "trust_remote_code", "dist_timeout_s", "device_map", "gradient_checkpointing", "fsdp"}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield
    set_fault_hook(None)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return write_tiny_assets(tmp_path_factory.mktemp("assets"), n_train=64, n_validation=24)


def args_for(assets, out, **extra) -> list[str]:
    values = {"model": str(assets / "model"), "task": "sst2", "data": str(assets / "data"), "n_train": "48",
              "n_dev": "12", "n_eval": "16", "steps": "4", "batch_size": "8", "eval_every": "2",
              "lr_base": "1e-3", "lr_adapter": "5e-2", "fo_optimizer": "adam", "method": "hybrid",
              "output_dir": str(out)} | extra
    return ["train"] + [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def snapshot(run: Path) -> dict:
    """Everything a run leaves, timing fields aside (binary files byte for byte)."""
    out = {}
    for path in sorted(run.rglob("*")):
        if path.is_dir():
            continue
        name = str(path.relative_to(run))
        assert not path.name.startswith("."), f"stale temporary left: {name}"
        if name in ("run.json", "config.json"):
            continue  # run.json: environment and resume notes; config.json: compared below without output_dir
        if path.suffix == ".jsonl":
            out[name] = [_strip(json.loads(line)) for line in path.read_text().splitlines()]
        elif path.suffix == ".json":
            out[name] = _strip(json.loads(path.read_text()))
        else:
            out[name] = path.read_bytes()
    cfg = json.loads((run / "config.json").read_text())
    cfg.pop("output_dir")
    out["config.json"] = cfg
    return out


@pytest.fixture(scope="module")
def reference(assets, tmp_path_factory):
    """The uninterrupted run, and the write points it passes (in order)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    points = []
    set_fault_hook(points.append)
    try:
        assert main(args_for(assets, out)) == 0
    finally:
        set_fault_hook(None)
    return snapshot(out), points


# ---------------------------------------------------------------------------- fingerprint
def test_every_config_field_is_classified_and_resume_refuses_trajectory_changes(assets, tmp_path, capsys):
    assert set(trajectory_fields()) == {f.name for f in fields(TrainConfig)} - NOT_TRAJECTORY
    out = tmp_path / "run"
    crash_at("checkpoint:files", 2)
    with pytest.raises(SimulatedCrash):
        main(args_for(assets, out))
    set_fault_hook(None)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for change, named in [({"method": "fo-peft"}, "method"), ({"lr_adapter": "1e-2"}, "lr_adapter"),
                          ({"seed": "1", "steps": "8"}, "seed (0 -> 1), steps (4 -> 8)")]:
        capsys.readouterr()
        assert main(args_for(assets, out, **change) + ["--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "would change the run" in err[0] and named in err[0], err
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing written
    assert main(args_for(assets, out, log_every="3", save_model="none") + ["--resume"]) == 0
    assert "log_every, save_model" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["resume_changed_fields"] == ["log_every", "save_model"]


# ---------------------------------------------------------------------------- run-folder rule
def test_run_folder_rule(assets, tmp_path, capsys):
    out = tmp_path / "run"
    cases = [
        (args_for(assets, tmp_path / "typo") + ["--resume"], "no run in"),
        (args_for(assets, out) + ["--resume", "--overwrite"], "contradict"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "typo").exists() and not out.exists()
    crash_at("checkpoint:files", 2)
    with pytest.raises(SimulatedCrash):
        main(args_for(assets, out))
    set_fault_hook(None)
    assert main(args_for(assets, out)) == 2
    assert "holds an unfinished run; pass --resume" in capsys.readouterr().err
    assert main(args_for(assets, out) + ["--resume"]) == 0
    finished = (out / "results.json").read_bytes()
    for extra in ([], ["--resume"]):
        assert main(args_for(assets, out) + extra) == 2
        assert "holds a finished run; pass --overwrite" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == finished
    assert main(args_for(assets, out, steps="2") + ["--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(args_for(assets, foreign) + ["--overwrite"]) == 2
    assert "holds no run" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "mine"


def test_saved_config_reruns_from_another_directory(assets, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(assets)
    out = tmp_path / "run"
    assert main(args_for(assets, out, model="model", data="data", steps="2", save_model="none")) == 0
    saved = json.loads((out / "config.json").read_text())
    assert all(Path(saved[k]).is_absolute() for k in ("model", "data", "output_dir"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(out / "config.json"), "--output-dir", "again"]) == 0
    again = snapshot(tmp_path / "again")
    first = snapshot(out)
    assert again == first


# ---------------------------------------------------------------------------- crash consistency
def crash_at(point: str, nth: int) -> None:
    hits = {"n": 0}

    def hook(name):
        if name == point:
            hits["n"] += 1
            if hits["n"] == nth:
                raise SimulatedCrash(f"{point}@{nth}")
    set_fault_hook(hook)


def kill_points(points: list[str]) -> list[tuple[str, int]]:
    """CI: every named point at its last hit, and the first checkpoint before it exists (9 crashes).
    ``CRASH_POINTS=all``: every hit of every point (about 30 crashes, a few minutes)."""
    if os.environ.get("CRASH_POINTS") == "all":
        return [(name, k) for name in dict.fromkeys(points) for k in range(1, points.count(name) + 1)]
    return [("checkpoint:files", 1)] + [(name, points.count(name)) for name in dict.fromkeys(points)]


def test_resume_after_a_crash_at_every_write_point_equals_the_uninterrupted_run(assets, tmp_path, reference):
    expected, points = reference
    names = set(points)
    assert {"config.json:files", "run.json:files", "evals.jsonl:append", "metrics.jsonl:append",
            "checkpoint:files", "checkpoint:swap", "model:files", "results.json:files"} <= names, names
    tried = kill_points(points)
    for i, (point, nth) in enumerate(tried):
        out = tmp_path / f"crash{i}"
        crash_at(point, nth)
        with pytest.raises(SimulatedCrash):
            main(args_for(assets, out))
        set_fault_hook(None)
        resume = ["--resume"] if (out / "config.json").is_file() else []
        assert main(args_for(assets, out) + resume) == 0, (point, nth)
        assert snapshot(out) == expected, (point, nth)
    print(f"crash points tried: {len(tried)} over {len(names)} named write points")


def differing_files(got: dict, expected: dict) -> list[str]:
    """Names of the files that differ (pytest's own diff of two whole snapshots takes minutes)."""
    return sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))


def subprocess_env(**extra) -> dict:
    # one intra-op thread, as the in-process reference (conftest): a run the kill misses must match it bit for bit
    return dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


def test_a_run_in_another_process_with_another_hash_seed_writes_the_same_bytes(assets, tmp_path, reference):
    """Set-valued outputs must not follow the string-hash seed: peft writes LoRA's target modules in set order,
    which made a SIGKILL that missed (the subprocess finished) differ from the in-process reference."""
    expected, _ = reference
    here = list(set(["q_proj", "v_proj"]))
    other = None
    for seed in range(64):  # a hash seed under which the same set iterates in the other order
        probe = subprocess.run([sys.executable, "-c", "print(list(set(['q_proj', 'v_proj'])))"], capture_output=True,
                               text=True, env=dict(os.environ, PYTHONHASHSEED=str(seed)), timeout=60)
        if probe.stdout.strip() != str(here):
            other = seed
            break
    assert other is not None
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "llm_experiments", *args_for(assets, out)], cwd=ROOT, check=True,
                   env=subprocess_env(PYTHONHASHSEED=str(other)), stdout=subprocess.DEVNULL, timeout=300)
    assert differing_files(snapshot(out), expected) == []


def test_resume_after_sigkill_at_random_times_equals_the_uninterrupted_run(assets, tmp_path, reference):
    """Real kills: a subprocess trains; once it has written its first evaluation it is SIGKILLed after a
    random delay, then the run is resumed (or left, if the kill came after the run finished)."""
    expected, _ = reference
    rng = random.Random(int(os.environ.get("KILL_SEED", "0")))
    kills = int(os.environ.get("KILL_TRIES", "1"))  # more: KILL_TRIES=20 (about 12 s each here)
    mid_run = 0
    for i in range(kills):
        out = tmp_path / f"kill{i}"
        proc = subprocess.Popen([sys.executable, "-m", "llm_experiments", *args_for(assets, out)], cwd=ROOT,
                                env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (out / "evals.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))  # the whole tiny run takes about 0.5 s after its first evaluation
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        resume = ["--resume"] if (out / "config.json").is_file() and not (out / "results.json").is_file() else []
        if not (out / "results.json").is_file():
            mid_run += 1
            assert main(args_for(assets, out) + resume) == 0
        assert differing_files(snapshot(out), expected) == [], (i, resume)
    print(f"SIGKILLs: {kills}, of which {mid_run} before the run finished")


def test_stale_temporaries_and_a_cut_folder_swap_are_recovered(assets, tmp_path, reference):
    expected, _ = reference
    out = tmp_path / "run"
    crash_at("checkpoint:swap", 1)  # between the renames: no checkpoint/, the old one aside, a temp beside
    with pytest.raises(SimulatedCrash):
        main(args_for(assets, out))
    set_fault_hook(None)
    assert not (out / "checkpoint").exists()
    assert list(out.glob(".checkpoint.old.*")) and list(out.glob(".checkpoint.tmp.*"))
    assert main(args_for(assets, out) + ["--resume"]) == 0
    assert snapshot(out) == expected  # also asserts that no temporary is left


@pytest.mark.parametrize("damage", ["truncated params", "bad progress", "empty state"])
def test_damaged_checkpoint_is_one_line(assets, tmp_path, capsys, damage):
    out = tmp_path / "run"
    crash_at("checkpoint:files", 2)
    with pytest.raises(SimulatedCrash):
        main(args_for(assets, out))
    set_fault_hook(None)
    ck = out / "checkpoint"
    if damage == "truncated params":
        data = (ck / "state" / "params.safetensors").read_bytes()
        os.unlink(ck / "state" / "params.safetensors")
        (ck / "state" / "params.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "bad progress":
        os.unlink(ck / "progress.json")
        (ck / "progress.json").write_text("{not json")
    else:
        for p in (ck / "state").iterdir():
            p.unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(args_for(assets, out) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint" in err[0] and "unreadable" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------------------- divergence guard
def test_huge_step_run_ends_diverged_and_keeps_the_last_finite_best(assets, tmp_path, capsys):
    from safetensors.torch import load_file

    from llm_experiments.runs import load_run_model

    out = tmp_path / "run"
    rc = main(args_for(assets, out, fo_optimizer="sgd", lr_adapter="1e6", lr_base="1e4", steps="6"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "diverged at step" in err[0], err
    results = json.loads((out / "results.json").read_text())
    run_info = json.loads((out / "run.json").read_text())
    assert results["status"] == run_info["status"] == "diverged"
    assert results["steps"] < results["diverged"]["step"]
    evals = read_jsonl(out / "evals.jsonl")
    assert all(e["step"] < results["diverged"]["step"] for e in evals)
    best_step = max(evals, key=lambda e: e["accuracy"])["step"]  # first maximum: ties keep the earlier step
    assert results["selected_step"] == best_step
    best = load_file(str(out / "checkpoint" / "best" / "params.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in best.values())
    model, _, _ = load_run_model(out)
    saved = {n: p for n, p in model.named_parameters()}
    assert all(bool(torch.isfinite(p).all()) for p in saved.values())
    adapter = [p for n, p in saved.items() if "lora_" in n]
    assert len(adapter) == sum(k.startswith("adapter.") for k in best)
    assert all(torch.equal(p, best[f"adapter.{i}"]) for i, p in enumerate(adapter))


# ---------------------------------------------------------------------------- synthetic runner
def test_synthetic_runner_marks_diverged_replicates_instead_of_averaging_nan():
    import numpy as np

    from hybridtheory import bounds
    from hybridtheory.objectives import make
    from hybridtheory.runner import RunConfig, finite_mean, run

    problem = make("quadratic")
    cx, cy = bounds.step_caps(problem.constants(), problem.n)
    big = [1.0, 1e4, 1.0, 1e4]  # replicates 1 and 3 step far past the caps: the quadratic blows up to NaN
    traj = run(problem, RunConfig(eta_x=[cx * m for m in big], eta_y=[cy * m for m in big], mu=1e-3, epochs=30,
                                  replicates=4))
    assert traj.diverged.tolist() == [False, True, False, True]
    assert (traj.diverged_at[[1, 3]] > 0).all() and (traj.diverged_at[[0, 2]] == -1).all()
    last = traj.grad_sq[-1]
    assert not np.isfinite(last[[1, 3]]).all() and np.isfinite(last[[0, 2]]).all()
    assert finite_mean(last, traj.diverged) == pytest.approx(last[[0, 2]].mean())
    assert np.isnan(finite_mean(last[[1, 3]], traj.diverged[[1, 3]]))


# ---------------------------------------------------------------------------- long synthetic work resumes
def test_killed_epoch_complexity_resumes_from_its_finished_cells(tmp_path):
    from hybridtheory.io import CellCache
    from hybridtheory.measurement import epoch_complexity

    args = dict(family="ramp", eps_grid=[0.3, 0.27, 0.25], family_params={"dx": 2}, replicates=2, n_boot=20,
                max_epochs=30)
    straight = epoch_complexity(**args)
    crash_at("cell:written", 2)  # killed right after the second eps cell was stored
    with pytest.raises(SimulatedCrash), CellCache(tmp_path / "cells"):
        epoch_complexity(**args)
    set_fault_hook(None)
    with CellCache(tmp_path / "cells") as cells:
        resumed = epoch_complexity(**args)
    assert (cells.reused, cells.computed) == (2, 1)  # only the unfinished cell is computed again
    assert resumed.measured == straight.measured and resumed.details == straight.details


def test_figure_cells_are_reused_after_a_kill_and_removed_once_the_figure_is_stored(tmp_path):
    from hybridtheory.figures import Figure, load_or_compute
    from hybridtheory.io import cached_cell

    calls = []

    def compute(p):
        def cell(i):
            calls.append(i)
            return {"value": i * p["scale"]}
        return {"values": [cached_cell({"cell": i, **p}, lambda: cell(i))["value"] for i in range(3)]}

    fig = Figure("toy", compute, lambda res, out: None, lambda quick: {"scale": 2.0})
    crash_at("cell:written", 2)
    with pytest.raises(SimulatedCrash):
        load_or_compute(tmp_path, fig, {"scale": 2.0})
    set_fault_hook(None)
    res, computed = load_or_compute(tmp_path, fig, {"scale": 2.0})
    assert computed and res["data"]["values"] == [0.0, 2.0, 4.0]
    assert calls == [0, 1, 2]  # cells 0 and 1 were not computed again after the kill
    assert not list((tmp_path / ".cache").glob("*.cells"))


# ---------------------------------------------------------------------------- seed-replay checkpoints
def _results(run: Path) -> dict:
    """What a run computes (logs, results, saved model), timing aside: not how its checkpoints store it."""
    return _computed(snapshot(run))


def _computed(files: dict) -> dict:
    return {k: v for k, v in files.items() if not k.startswith("checkpoint/") and k != "config.json"}


@pytest.mark.parametrize("method,master", [("hybrid", "none"), ("zo-full", "float64"), ("zo-full", "compensated")])
def test_resume_from_a_replay_checkpoint_equals_the_uninterrupted_run(assets, tmp_path, method, master):
    """The checkpoint holds no base tensor; the resumed run rebuilds the base by replaying the logged updates
    from the model's weights (in place, through a master, and a bf16 base with its compensation buffers) and
    ends byte for byte as the uninterrupted run."""
    from safetensors.torch import load_file

    extra = {"method": method, "base_master": master, "checkpoint_base": "replay"}
    if master == "compensated":
        extra["dtype"] = "bfloat16"
    if method == "zo-full":
        extra |= {"zo_weight_decay": "0.1", "lr_schedule": "linear", "warmup_steps": "1"}  # decay and lr in the log
    straight = tmp_path / "straight"
    assert main(args_for(assets, straight, **extra)) == 0
    crash_at("checkpoint:files", 3)  # writing the step-4 checkpoint: the run resumes from step 2's
    out = tmp_path / "resumed"
    with pytest.raises(SimulatedCrash):
        main(args_for(assets, out, **extra))
    set_fault_hook(None)
    state = out / "checkpoint" / "state"
    assert json.loads((state / "state.json").read_text())["step"] == 2
    assert not [k for k in load_file(str(state / "params.safetensors")) if k.startswith("base.")]
    assert json.loads((state / "trajectory.json").read_text())["base"] == "replay"
    assert len(load_file(str(state / "trajectory.safetensors"))["seed"]) == 2
    model_bytes = (assets / "model" / "model.safetensors").stat().st_size
    assert sum(p.stat().st_size for p in state.iterdir()) < model_bytes / 4  # adapter + Adam moments + log
    assert sum(p.stat().st_size for p in state.glob("trajectory.*")) < 1024    # the log: bytes per step
    assert main(args_for(assets, out, **extra) + ["--resume"]) == 0
    assert snapshot(out) == snapshot(straight)
    assert json.loads((out / "run.json").read_text())["checkpoint_base"] == "replay"


def test_replay_and_full_checkpoints_give_the_same_run_and_a_resume_may_switch(assets, tmp_path, reference):
    """--checkpoint-base is how checkpoints store the base, not what the run computes: a full-checkpoint run
    resumed with replay (its checkpoints log the updates from step 0 too) equals the uninterrupted full run."""
    expected, _ = reference
    out = tmp_path / "switched"
    crash_at("checkpoint:files", 3)
    with pytest.raises(SimulatedCrash):
        main(args_for(assets, out))
    set_fault_hook(None)
    assert main(args_for(assets, out, checkpoint_base="replay") + ["--resume"]) == 0
    assert _results(out) == _computed(expected)
    assert json.loads((out / "checkpoint" / "state" / "trajectory.json").read_text())["base"] == "replay"


def test_displacement_without_a_resident_copy_equals_the_kept_copy(assets, tmp_path, reference):
    """The default re-reads the base's start from --model at each evaluation; the numbers equal a kept copy's."""
    expected, _ = reference
    out = tmp_path / "memory"
    assert main(args_for(assets, out, displacement_start="memory")) == 0
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "displacement" in r]
    assert rows and all(r["displacement"]["base"] > 0 for r in rows)
    assert _results(out) == _computed(expected)


def test_replaying_a_prefix_rebuilds_an_earlier_state_from_the_initial_weights(assets, tmp_path):
    """The best state under replay: the trainer has moved on, so it restarts from initial_base() and replays
    the log up to the best step."""
    from llm_experiments.errors import UserError
    from llm_experiments.models import attach_peft, load_model_and_tokenizer, split_parameters
    from llm_experiments.trainer import Trainer, split_micro_batches

    cfg = TrainConfig(model=str(assets / "model"), method="hybrid", checkpoint_base="replay", lr_base=1e-2,
                      zo_weight_decay=0.1, track_displacement=False).validate()

    def build():
        model, _ = load_model_and_tokenizer(cfg.model, "float32")
        return attach_peft(model, "lora", seed=cfg.seed)

    model = build()
    initial = [p.detach().clone() for p in split_parameters(model).tensors("base")]
    trainer = Trainer(model, split_parameters(model), cfg, 8, torch.device("cpu"), initial_base=lambda: initial)
    g = torch.Generator().manual_seed(0)
    batch = [{"input_ids": torch.randint(4, 100, (12,), generator=g), "labels": torch.randint(4, 100, (12,),
                                                                                            generator=g)}
             for _ in range(4)]

    def collate(chunk):
        return {"input_ids": torch.stack([e["input_ids"] for e in chunk]),
                "labels": torch.stack([e["labels"] for e in chunk])}

    for step in range(4):
        trainer.step(split_micro_batches(batch, 1, collate, torch.device("cpu")))
        if step == 1:
            trainer.save_state(tmp_path / "at2")
            at2 = [p.detach().clone() for p in trainer.replay_group.params]
    assert not torch.equal(trainer.replay_group.params[0], at2[0])
    trainer.load_state(tmp_path / "at2")
    assert all(torch.equal(p, q) for p, q in zip(trainer.replay_group.params, at2))
    assert trainer.state.step == 2 and len(trainer.trajectory["seed"]) == 2
    # a log written under another base policy (auto decides from free memory) is refused, not replayed wrongly
    meta = json.loads((tmp_path / "at2" / "trajectory.json").read_text())
    (tmp_path / "at2" / "trajectory.json").write_text(json.dumps(meta | {"base_policy": "compensated"}))
    with pytest.raises(UserError, match="base policy 'compensated'"):
        trainer.load_state(tmp_path / "at2")
