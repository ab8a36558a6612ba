"""The llm-hybrid CLI end to end, offline: config round trip, one-line errors, train -> run folder -> report,
reload of the saved model to the same accuracy, and a small validate grid."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
yaml = pytest.importorskip("yaml")

from llm_experiments.cli import main  # noqa: E402
from llm_experiments.config import TrainConfig, parse_train_args  # noqa: E402
from llm_experiments.data import load_splits  # noqa: E402
from llm_experiments.evaluation import evaluate  # noqa: E402
from llm_experiments.runs import load_run_model, read_jsonl  # noqa: E402
from llm_experiments.tasks import get_task  # noqa: E402
from llm_experiments.testing import write_jsonl, write_tiny_assets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny OPT saved like a Hub checkpoint, and an SST-2-format data folder (generated text)."""
    root = write_tiny_assets(tmp_path_factory.mktemp("assets"), n_train=96, n_validation=40)
    write_jsonl(root / "bad" / "train.jsonl", [{"text": "no sentence field", "label": 1}] * 8)
    return root


def base_args(assets, tmp_path, **extra) -> list[str]:
    args = {"model": str(assets / "model"), "task": "sst2", "data": str(assets / "data"), "n_train": "64",
            "n_dev": "16", "n_eval": "40", "steps": "6", "batch_size": "8", "eval_every": "3",
            "lr_base": "1e-3", "lr_adapter": "5e-2", "output_dir": str(tmp_path / "run")} | extra
    out = ["train"]
    for key, value in args.items():
        out.append(f"--{key.replace('_', '-')}={value}")  # '=' form: argparse reads "-1e-3" as a flag otherwise
    return out


# ---------------------------------------------------------------------------- config round trip
def test_config_round_trips_through_flags_and_files(tmp_path):
    cfg = TrainConfig(model="some/model", method="zo-peft", peft="prefix", lr_base=3e-7, lr_adapter=2e-2, mu=1e-2,
                      zo_difference="forward", fo_dropout=False, lora_target_modules=["q_proj", "v_proj"],
                      steps=77, track_displacement=False, data=None).validate()
    assert parse_train_args(cfg.to_cli_args()) == cfg
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert parse_train_args(["--config", str(tmp_path / "c.json")]) == cfg
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()) + "lr_base: 1e-7\n")  # YAML reads 1e-7 as text
    from_yaml = parse_train_args(["--config", str(tmp_path / "c.yaml"), "--steps", "5"])
    assert from_yaml.lr_base == 1e-7 and from_yaml.steps == 5 and from_yaml.peft == "prefix"


# ---------------------------------------------------------------------------- one-line errors
ERROR_CASES = {
    "unknown task": (dict(task="nope"), "unknown task"),
    "unknown method": (dict(method="sgd-magic"), "unknown method"),
    "unknown peft": (dict(peft="adapterx"), "unknown peft"),
    "missing model path": (dict(model="./no/such/model"), "does not exist"),
    "hub id offline": (dict(model="facebook/opt-125m"), "--model DIR"),
    "negative lr": (dict(lr_base="-1e-3"), "invalid lr_base"),
    "nan lr": (dict(lr_adapter="nan"), "invalid lr_adapter"),
    "zero mu": (dict(mu="0"), "invalid mu"),
    "missing fields": (dict(data="BAD"), "missing field"),
    "not a number": (dict(steps="many"), "steps expects int"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_gives_one_line_and_exit_2(assets, tmp_path, capsys, case):
    extra, expected = ERROR_CASES[case]
    if extra.get("data") == "BAD":
        extra = dict(data=str(assets / "bad"))
    rc = main(base_args(assets, tmp_path, **extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_unknown_flag_and_missing_config_are_one_line(capsys, tmp_path):
    assert main(["train", "--bogus-flag", "1"]) == 2
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_module_entry_point_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "llm_experiments", "train", "--model", "x", "--method", "bogus"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "unknown method" in proc.stderr


# ---------------------------------------------------------------------------- train -> folder -> reload -> report
@pytest.mark.parametrize("save_mode", ["separate", "merged"])
def test_train_writes_run_folder_and_saved_model_reloads_to_same_accuracy(assets, tmp_path, capsys, save_mode):
    rc = main(base_args(assets, tmp_path, method="hybrid", save_model=save_mode, zo_difference="forward"))
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "run"
    for name in ("config.json", "run.json", "metrics.jsonl", "evals.jsonl", "results.json"):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert cfg.method == "hybrid" and cfg.save_model == save_mode
    steps = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(r["forwards"] == 2 and r["backwards"] == 1 for r in steps)  # forward difference: 1 extra forward
    assert set(steps[0]["lr"]) == {"base", "adapter"} and "zo_forward" in steps[0]["phase_s"]
    assert any("displacement" in r for r in read_jsonl(run / "metrics.jsonl"))
    evals = read_jsonl(run / "evals.jsonl")
    assert [e["step"] for e in evals] == [0, 3, 6] and all("majority_baseline" in e for e in evals)
    assert results["eval"]["n"] == 40 and 0.0 <= results["eval"]["majority_baseline"] <= 1.0
    assert results["selected_step"] in (0, 3, 6)

    model, tokenizer, _ = load_run_model(run)
    splits = load_splits(get_task("sst2"), source=str(assets / "data"), n_train=64, n_dev=16, n_eval=40, seed=0)
    again = evaluate(model, tokenizer, get_task("sst2"), splits.eval, batch_size=16)
    assert again["accuracy"] == results["eval"]["accuracy"]
    assert math.isclose(again["majority_baseline"], results["eval"]["majority_baseline"])

    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "results.md").read_text().count("hybrid (lora)") >= 1
    assert list((tmp_path / "report" / "plots").glob("*.png"))


def test_validate_runs_a_small_grid_and_skips_finished_cells(assets, tmp_path, capsys):
    grid = {
        "output_root": str(tmp_path / "grid"),
        "base": {"data": str(assets / "data"), "n_train": 32, "n_dev": 8, "n_eval": 16, "steps": 3,
                 "batch_size": 8, "save_model": "none", "progress": False},
        "models": [{"model": str(assets / "model"), "name": "tiny-opt"}],
        "tasks": ["sst2"],
        "methods": {"hybrid": {"lr_base": 1e-3, "lr_adapter": 1e-2}, "zo-full": {"lr_base": 1e-3}},
        "seeds": [0],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    assert main(["validate", str(path)]) == 0
    assert sorted(p.parent.parent.name for p in (tmp_path / "grid").rglob("results.json")) == ["hybrid", "zo-full"]
    assert (tmp_path / "grid" / "results.md").is_file()
    capsys.readouterr()
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.count("done already") == 2


def test_shipped_paper_grid_expands():
    from llm_experiments.config import GridConfig

    grid = GridConfig.from_file(ROOT / "configs" / "paper_grid.yaml")
    cells = grid.expand()
    models = {c.model for c in cells}
    assert {"facebook/opt-1.3b", "lmsys/vicuna-7b-v1.5"} <= models and len(models) == 3
    assert {c.task for c in cells} == {"sst2", "wsc", "winogrande"}
    assert {c.method for c in cells} == {"hybrid", "fo-full", "fo-peft", "zo-full", "zo-peft"}
    assert len({c.output_dir for c in cells}) == len(cells)
