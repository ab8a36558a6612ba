"""Distributed runs on CPU: 2 gloo processes started by the test, on loopback, each launch bounded in time.

What is checked: the 2-rank data-parallel run equals the 1-process run on the full minibatch (float64 tiny OPT:
parameters to rounding, the same losses and the same selected step) for hybrid, zo-full and fo-peft, launched by
``torchrun``; the bytes each step communicates, per kind; a killed rank ends the run with one line; a run resumes
at world size 2 from the state rank 0 wrote and ends where the uninterrupted run ends. The pure helpers (the
split of a minibatch across ranks, the token weights) are checked in-process.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
yaml = pytest.importorskip("yaml")

from llm_experiments.cli import main  # noqa: E402
from llm_experiments.distributed import answer_tokens, local_chunks, rank_slice  # noqa: E402
from llm_experiments.runs import read_jsonl  # noqa: E402
from llm_experiments.testing import generate_task_examples, tiny_model, tiny_tokenizer, write_tiny_assets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 240  # one launch of 2 processes (imports included) on a loaded 2-core machine
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
       "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false"}
# rank 1 of the killed-rank test: the real CLI, killed (SIGKILL) just before its 4th step
KILLED_RANK = """
import os, signal, sys
from llm_experiments import trainer
step = trainer.Trainer.step
def dying_step(self, *args, **kwargs):
    if self.state.step == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *args, **kwargs)
trainer.Trainer.step = dying_step
from llm_experiments.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return write_tiny_assets(tmp_path_factory.mktemp("assets"), n_train=64, n_validation=24)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(assets, output_dir, **extra) -> dict:
    # 44 training examples, batch 6: the last batch of each epoch has 2 examples (uneven splits are exercised)
    return {"model": str(assets / "model"), "task": "sst2", "data": str(assets / "data"), "dtype": "float64",
            "device": "cpu",
            "n_train": 56, "n_dev": 12, "n_eval": 24, "steps": 8, "batch_size": 6, "eval_every": 2,
            "lr_base": 1e-3, "lr_adapter": 5e-2, "dist_timeout_s": 60, "save_model": "none",
            "output_dir": str(output_dir)} | extra


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def launch(args: list[str], nproc: int = 2, rank_programs: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Start ``nproc`` ranks of ``python -m llm_experiments ARGS`` the way torchrun does (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT); ``rank_programs`` replaces a rank's ``-m llm_experiments``
    by ``-c PROGRAM``. Every process is killed if the launch takes longer than ``LAUNCH_TIMEOUT_S``."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = os.environ | ENV | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        program = ["-c", rank_programs[rank]] if rank_programs and rank in rank_programs else ["-m", "llm_experiments"]
        procs.append(subprocess.Popen([sys.executable, *program, *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=LAUNCH_TIMEOUT_S)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def state_tensors(run_dir: Path, which: str = "checkpoint/state") -> dict:
    from safetensors.torch import load_file
    return load_file(str(run_dir / which / "params.safetensors"))


def assert_same_run(one: Path, two: Path, replayed: bool = False) -> None:
    """Two run folders hold the same trajectory: losses, evaluations, selected step, final and best tensors
    (``replayed``: ``two`` has seed-replay checkpoints, without base tensors)."""
    loss1 = [r["loss"] for r in read_jsonl(one / "metrics.jsonl") if "loss" in r]
    loss2 = [r["loss"] for r in read_jsonl(two / "metrics.jsonl") if "loss" in r]
    assert len(loss1) == len(loss2) > 0
    # float64 sums in another order differ by ~1e-16 relative; the ZO coefficient divides loss differences by
    # 2 mu = 2e-3, so over 8 steps the trajectories agree to ~1e-11 (measured), far inside these tolerances
    assert loss1 == pytest.approx(loss2, rel=1e-9, abs=1e-12)
    acc = [[r["accuracy"] for r in read_jsonl(d / "evals.jsonl")] for d in (one, two)]
    assert acc[0] == acc[1]
    res = [json.loads((d / "results.json").read_text()) for d in (one, two)]
    assert res[0]["selected_step"] == res[1]["selected_step"]
    assert res[0]["eval"]["accuracy"] == res[1]["eval"]["accuracy"]
    for which in ("checkpoint/state", "checkpoint/best"):
        assert (one / which).is_dir() == (two / which).is_dir()
        if not (one / which).is_dir():
            continue
        a, b = state_tensors(one, which), state_tensors(two, which)
        if replayed:
            assert not [k for k in b if k.startswith("base.")]
            a = {k: v for k, v in a.items() if not k.startswith("base.")}
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-8, atol=1e-10, msg=f"{which} {key}")


# ---------------------------------------------------------------------------- pure helpers
def test_rank_slices_partition_the_minibatch():
    for n in range(0, 13):
        for size in (1, 2, 3, 4):
            slices = [rank_slice(n, r, size) for r in range(size)]
            assert [i for s in slices for i in s] == list(range(n))
            assert max(len(s) for s in slices) - min(len(s) for s in slices) <= 1


def test_token_weights_sum_to_one_over_ranks_and_empty_slices_weigh_zero():
    batch = [{"labels": [-100] * k + [5] * (1 + k % 3)} for k in range(5)]
    total = sum(answer_tokens(e) for e in batch)
    for size in (1, 2, 3, 7):
        weights = []
        for rank in range(size):
            chunks, w = local_chunks(batch, micro_batches=2, rank=rank, size=size)
            assert len(chunks) == len(w) and all(chunks)
            expect = [sum(answer_tokens(e) for e in c) / total for c in chunks] if rank < len(batch) else [0.0]
            assert w == expect
            weights += w
        assert sum(weights) == pytest.approx(1.0, abs=1e-15)


# ---------------------------------------------------------------------------- 2 ranks == 1 process
METHODS = {"hybrid": {"fo_optimizer": "adam"}, "zo-full": {}, "fo-peft": {},
           "zo-sphere": {"method": "zo-full", "zo_law": "sphere"}}


@pytest.fixture(scope="module")
def grid_file(assets):
    base = run_config(assets, "unused")
    del base["output_dir"], base["model"]
    grid = {"base": base, "models": [{"model": str(assets / "model"), "name": "tiny"}], "tasks": ["sst2"],
            "seeds": [0], "methods": METHODS}
    return write_yaml(assets / "grid.yaml", grid)


@pytest.fixture(scope="module")
def one_process(assets, grid_file):
    """The grid's runs in this process: the reference every distributed run must reproduce."""
    root = assets / "one"
    assert main(["validate", str(grid_file), "--output-root", str(root)]) == 0
    return root / "tiny" / "sst2"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_ranks_data_parallel_and_sharded_equal_one_process_full_minibatch(grid_file, one_process, tmp_path):
    """One ``torchrun --nproc-per-node 2`` launch of the grid, every cell twice: data parallel, and with the base
    sharded by FSDP2 (``-fsdp`` cells: every rank perturbs and updates only its dim-0 shards, drawing u by global
    element index). Both equal the 1-process runs on the full minibatch: losses, evaluations, selected step and
    (gathered) states. The bytes each step sends, per kind; the sharded run's saved model (gathered on rank 0)
    holds the selected checkpoint's tensors."""
    grid = yaml.safe_load(grid_file.read_text())
    grid["methods"] |= {f"{label}-fsdp": {"method": label, **overrides, "fsdp": True}
                        for label, overrides in METHODS.items()}
    grid["methods"]["zo-sphere-fsdp"]["method"] = "zo-full"
    grid["methods"]["hybrid-fsdp"]["save_model"] = "separate"
    grid["methods"]["zo-sphere-fsdp"]["checkpoint_base"] = "replay"  # the sharded run logs its updates instead
    path = write_yaml(tmp_path / "grid.yaml", grid)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "llm_experiments", "validate",
           str(path), "--output-root", str(tmp_path / "two")]
    done = subprocess.run(cmd, cwd=ROOT, env=os.environ | ENV, text=True, capture_output=True,
                          timeout=LAUNCH_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    for method in METHODS:
        one = one_process / method / "seed0"
        assert all("comm_bytes" not in r for r in read_jsonl(one / "metrics.jsonl"))
        for sharded in (False, True):
            two = tmp_path / "two" / "tiny" / "sst2" / (f"{method}-fsdp" if sharded else method) / "seed0"
            assert_same_run(one, two, replayed=sharded and method == "zo-sphere")
            info = json.loads((two / "run.json").read_text())
            assert info["world"] == {"size": 2, "backend": "gloo", "fsdp": sharded}
            adapter_numel = info["params"]["adapter"]
            # bytes per step by kind (float64): ZO sends one scalar per forward, FO its gradients; a sharded
            # base adds the sphere's normaliser, one sum of squares per query reduced over the shards
            expected = {"hybrid": {"zo_loss": 2 * 8, "fo_loss": 8, "fo_grads": 8 * adapter_numel},
                        "zo-full": {"zo_loss": 2 * 8}, "zo-sphere": {"zo_loss": 2 * 8},
                        "fo-peft": {"fo_loss": 8, "fo_grads": 8 * adapter_numel}}[method]
            if sharded and method == "zo-sphere":
                expected = expected | {"zo_norm": 8}
            rows = [r for r in read_jsonl(two / "metrics.jsonl") if "loss" in r]
            assert all(r["comm_bytes"] == expected for r in rows), rows[0]["comm_bytes"]
    assert not any((tmp_path / "two").rglob("*.tmp*"))  # rank 0 alone wrote, atomically
    # the sharded run's replay checkpoint (its update log) resumes in one process: replayed there, unsharded,
    # the base equals the one-process run's (sphere: directions by global index, normaliser over the shards)
    from llm_experiments.config import TrainConfig
    from llm_experiments.models import load_model_and_tokenizer
    from llm_experiments.models import split_parameters as split_of
    from llm_experiments.trainer import Trainer

    run = tmp_path / "two" / "tiny" / "sst2" / "zo-sphere-fsdp" / "seed0"
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    plain, _ = load_model_and_tokenizer(cfg.model, cfg.dtype)
    replayer = Trainer(plain, split_of(plain), cfg, cfg.n_train, torch.device("cpu"))
    replayer.load_state(run / "checkpoint" / "state")
    expected_base = state_tensors(one_process / "zo-sphere" / "seed0")
    for i, p in enumerate(replayer.replay_group.params):
        torch.testing.assert_close(p.detach(), expected_base[f"base.{i}"], rtol=1e-8, atol=1e-10)
    from llm_experiments.models import split_parameters
    from llm_experiments.runs import load_run_model

    run = tmp_path / "two" / "tiny" / "sst2" / "hybrid-fsdp" / "seed0"
    model, _, _ = load_run_model(run)
    best = state_tensors(run, "checkpoint/best")
    saved = split_parameters(model)
    for i, p in enumerate(saved.tensors("base")):
        torch.testing.assert_close(p.detach(), best[f"base.{i}"], rtol=0, atol=0)
    for i, p in enumerate(saved.tensors("adapter")):
        torch.testing.assert_close(p.detach(), best[f"adapter.{i}"], rtol=0, atol=0)


# ---------------------------------------------------------------------------- failure and resume
def test_killed_rank_stops_the_run_with_one_line_and_it_resumes_at_world_size_two(assets, one_process, tmp_path):
    """The grid's hybrid run at world size 2 with seed-replay checkpoints: rank 1 killed before step 4, then
    resumed from step 2's state, every rank rebuilding the base by replaying the logged updates."""
    split = tmp_path / "split"
    config = write_yaml(tmp_path / "run.yaml", run_config(assets, split, method="hybrid", **METHODS["hybrid"],
                                                          checkpoint_base="replay"))
    first = launch(["train", "--config", str(config)], rank_programs={1: KILLED_RANK})
    assert first[1].returncode == -9                       # rank 1 was killed before its 4th step
    assert first[0].returncode == 1
    errors = [line for line in first[0].stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 0 of 2: collective"), first[0].stderr[-2000:]
    assert "Traceback" not in first[0].stderr
    assert json.loads((split / "checkpoint" / "state" / "state.json").read_text())["step"] == 2
    assert not [k for k in state_tensors(split) if k.startswith("base.")]  # the update log stands for the base
    assert not (split / "results.json").exists()
    # resumed through accelerate's launcher (on CPU its --multi_gpu mode is the one that starts N processes)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
           "-m", "llm_experiments", "train", "--config", str(config), "--resume"]
    second = subprocess.run(cmd, cwd=ROOT, env=os.environ | ENV, text=True, capture_output=True,
                            timeout=LAUNCH_TIMEOUT_S)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("eval accuracy") == 1        # the summary line comes from rank 0 only
    assert json.loads((split / "run.json").read_text())["world"] == {"size": 2, "backend": "gloo", "fsdp": False}
    assert_same_run(one_process / "hybrid" / "seed0", split, replayed=True)


# ---------------------------------------------------------------------------- one node: device_map and checkpointing
@pytest.mark.skipif(torch.cuda.is_available(), reason="compares with the CPU reference run")
def test_device_map_auto_and_gradient_checkpointing_reproduce_the_plain_run(assets, one_process, tmp_path):
    """The grid's hybrid run with ``--device-map auto`` (accelerate places the tiny model; on a CPU-only machine
    every layer lands on the CPU) and checkpointed FO blocks: the same trajectory."""
    config = write_yaml(tmp_path / "run.yaml", run_config(assets, tmp_path / "mapped", method="hybrid",
                                                          **METHODS["hybrid"]))
    assert main(["train", "--config", str(config), "--device", "auto", "--device-map", "auto",
                 "--gradient-checkpointing"]) == 0
    info = json.loads((tmp_path / "mapped" / "run.json").read_text())
    if not torch.cuda.is_available():
        assert info["param_devices"] == ["cpu"]
    assert_same_run(one_process / "hybrid" / "seed0", tmp_path / "mapped")


def test_checkpointed_blocks_recompute_in_the_fo_backward_only(assets):
    from llm_experiments.config import TrainConfig
    from llm_experiments.data import collate_candidates, encode_for_training
    from llm_experiments.models import attach_peft, checkpoint_layers, split_parameters
    from llm_experiments.scoring import classification_loss
    from llm_experiments.tasks import get_task
    from llm_experiments.trainer import ModelOracle, PhaseClock, Trainer

    tok = tiny_tokenizer()
    encoded = encode_for_training(generate_task_examples("sst2", 8, seed=0), tok, get_task("sst2"), 64)
    batch = collate_candidates(encoded, tok.pad_token_id)
    runs = {}
    for checkpointed in (False, True):
        model = attach_peft(tiny_model("opt", tok), "lora")
        calls = []
        blocks = model.base_model.model.model.decoder.layers
        for block in blocks:  # count the blocks' forward computations (a recompute runs forward again)
            block.forward = (lambda forward: lambda *a, **k: calls.append(1) or forward(*a, **k))(block.forward)
        if checkpointed:
            assert checkpoint_layers(model) == len(blocks)
        cfg = TrainConfig(model="tiny", method="hybrid", progress=False).validate()
        trainer = Trainer(model, split_parameters(model), cfg, n_train=8, device=torch.device("cpu"))
        oracle = ModelOracle(model, [batch], False, lambda: None, PhaseClock(torch.device("cpu")), classification_loss)
        adapter = trainer.groups[1].params
        oracle.loss()
        zo_calls = len(calls)
        loss, grads = oracle.loss_and_grad(adapter)
        runs[checkpointed] = (loss, grads, zo_calls, len(calls) - zo_calls)
    plain, ckpt = runs[False], runs[True]
    assert plain[2] == ckpt[2] == 2                      # no-grad forwards are plain calls
    assert plain[3] == 2 and ckpt[3] == 4                # the FO pass: each block again in the backward
    assert torch.equal(plain[0], ckpt[0])
    for a, b in zip(plain[1], ckpt[1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------- GPU (benchmarks/gpu_check.sh)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_gpu_fsdp_run_equals_the_plain_gpu_run(assets, tmp_path):
    """World size 1 on one GPU (nccl, a one-rank in-memory group): the FSDP2-wrapped base (one shard = the whole
    tensor, gathered by FSDP before every block) takes the same steps as the plain model; the saved model is
    gathered and written as an unsharded one."""
    common = dict(method="hybrid", device="cuda", **METHODS["hybrid"])
    for name, extra in (("plain", {}), ("fsdp", {"fsdp": True, "save_model": "separate"})):
        config = write_yaml(tmp_path / f"{name}.yaml", run_config(assets, tmp_path / name, **common, **extra))
        assert main(["train", "--config", str(config)]) == 0
    assert json.loads((tmp_path / "fsdp" / "run.json").read_text())["world"]["fsdp"] is True
    assert_same_run(tmp_path / "plain", tmp_path / "fsdp")
    assert (tmp_path / "fsdp" / "model" / "base" / "config.json").is_file()
