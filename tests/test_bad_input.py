"""Every bad input gives one line naming the problem and the expected form, exit status 2, and writes nothing.

One table across the ``hybridtheory`` CLI, the ``llm-hybrid`` CLI and the public Python API (for the API: a
``ValueError``/``UserError`` with a one-line message). CLI cases run in a fresh working directory; the
working directory and the shared assets are compared before and after each case.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
yaml = pytest.importorskip("yaml")

from hybridtheory import bounds  # noqa: E402
from hybridtheory.cli import main as ht_main  # noqa: E402
from hybridtheory.objectives import make  # noqa: E402
from hybridtheory.runner import RunConfig  # noqa: E402
from llm_experiments.cli import main as llm_main  # noqa: E402
from llm_experiments.config import GridConfig, TrainConfig  # noqa: E402
from llm_experiments.errors import UserError  # noqa: E402
from llm_experiments.testing import write_jsonl, write_tiny_assets  # noqa: E402


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = write_tiny_assets(tmp_path_factory.mktemp("bad_input_assets"), n_train=48, n_validation=16)
    (root / "nonutf").mkdir()
    (root / "nonutf" / "train.jsonl").write_bytes(b'{"sentence": "caf\xe9", "label": 1}\n' * 8)
    (root / "nonutf" / "validation.jsonl").write_bytes(b'{"sentence": "caf\xe9", "label": 1}\n' * 8)
    write_jsonl(root / "nofields" / "train.jsonl", [{"text": "no sentence field", "label": 1}] * 8)
    (root / "FILE").write_text("a file, not a folder")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("steps: [1, 2\n")
    (root / "unknown.yaml").write_text("stepz: 3\n")
    grid = {"output_root": str(root / "grid"), "models": [str(root / "model")], "tasks": ["sst2"],
            "methods": {"hybrid": {}}, "seeds": [0]}
    for name, change in {"seeds3": {"seeds": 3}, "gridkey": {"extra": 1}, "nomodels": {"models": []},
                         "methodlist": {"methods": ["hybrid"]}, "gridmethod": {"methods": {"magic": {}}}}.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(grid | change))
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("mine")
    finished = root / "finished"
    assert llm_main(train(root, finished)) == 0
    return root


def train(root: Path, out, **extra) -> list[str]:
    values = {"model": str(root / "model"), "task": "sst2", "data": str(root / "data"), "n_train": "32",
              "n_dev": "8", "n_eval": "8", "steps": "2", "batch_size": "4", "save_model": "none",
              "progress": None, "output_dir": str(out)} | extra
    args = ["train"]
    for key, value in values.items():
        flag = f"--{key.replace('_', '-')}"
        args += [flag] if value is None else [f"{flag}={value}"]
    return args


# (id, program, arguments (A = assets folder), words the line must contain)
HT = "hybridtheory"
LLM = "llm-hybrid"
CLI_CASES = [
    ("ht no command", HT, [], "no command"),
    ("ht unknown command", HT, ["bogus"], "invalid choice"),
    ("ht schedule no eps", HT, ["schedule", "hyb"], "--eps"),
    ("ht schedule eps text", HT, ["schedule", "hyb", "--eps", "abc"], "finite number > 0"),
    ("ht schedule eps 0", HT, ["schedule", "hyb", "--eps", "0"], "finite number > 0"),
    ("ht schedule eps -1", HT, ["schedule", "hyb", "--eps=-1"], "finite number > 0"),
    ("ht schedule eps nan", HT, ["schedule", "hyb", "--eps", "nan"], "finite number > 0"),
    ("ht schedule eps inf", HT, ["schedule", "hyb", "--eps", "inf"], "finite number > 0"),
    ("ht schedule unknown family", HT, ["schedule", "nofam", "--eps", "0.1"], "unknown problem family"),
    ("ht param n=0", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "n=0"], "n must be an integer >= 1"),
    ("ht param dx=-2", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "dx=-2"], "dx must be an integer >= 1"),
    ("ht param without =", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "dx"], "key=value"),
    ("ht param empty key", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "=3"], "key=value"),
    ("ht param n=2.5", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "n=2.5"], "n must be an integer"),
    ("ht param n=abc", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "n=abc"], "n must be an integer"),
    ("ht param unknown", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "bogus=1"], "no parameter 'bogus'"),
    ("ht param delta nan", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "delta=nan"], "finite number"),
    ("ht param delta -1", HT, ["schedule", "hyb", "--eps", "0.1", "--param", "delta=-1"], "delta must be > 0"),
    ("ht ramp eps 0", HT, ["schedule", "ramp", "--eps", "0.1", "--param", "eps=0"], "ramp eps must be in"),
    ("ht catalogue function", HT, ["schedule", "catalogue", "--eps", "0.1", "--param", "function=zz"],
     "unknown catalogue function"),
    ("ht rho 0", HT, ["schedule", "hyb", "--eps", "0.1", "--rho", "0"], "finite number > 0"),
    ("ht rho -1", HT, ["schedule", "hyb", "--eps", "0.1", "--rho=-1"], "finite number > 0"),
    ("ht law", HT, ["schedule", "hyb", "--eps", "0.1", "--law", "cauchy"], "invalid choice"),
    ("ht import", HT, ["schedule", "hyb", "--eps", "0.1", "--import", "no_such_module_x"], "cannot import"),
    ("ht figures out file", HT, ["figures", "--out", "A/FILE"], "is a file"),
    ("ht figures out under file", HT, ["figures", "--out", "A/FILE/sub"], "is a file"),
    ("ht figures only", HT, ["figures", "--only", "nope"], "invalid choice"),
    ("ht figures flag", HT, ["figures", "--bogus"], "unrecognized arguments"),
    ("ht sweep out file", HT, ["sweep", "--out", "A/FILE"], "is a file"),
    ("ht check pairs 0", HT, ["check", "--report", "--pairs", "0"], "integer >= 1"),
    ("ht check pairs -5", HT, ["check", "--report", "--pairs=-5"], "integer >= 1"),
    ("ht check hess text", HT, ["check", "--hess-points", "x"], "integer >= 1"),
    ("ht check import", HT, ["check", "--import", "no_such_module_x"], "cannot import"),
    ("llm no command", LLM, [], "no command"),
    ("llm unknown command", LLM, ["bogus"], "invalid choice"),
    ("llm unknown flag", LLM, ["train", "--bogus-flag", "1"], "unrecognized arguments"),
    ("llm output dir is a file", LLM, "train:output_dir=A/FILE", "is a file"),
    ("llm output dir under a file", LLM, "train:output_dir=A/FILE/sub", "cannot be created"),
    ("llm output dir foreign", LLM, "train:output_dir=A/foreign", "holds no run"),
    ("llm finished run", LLM, "train:output_dir=A/finished", "finished run; pass --overwrite"),
    ("llm resume finished run", LLM, "train:output_dir=A/finished +--resume", "finished run"),
    ("llm resume missing folder", LLM, "train:output_dir=typo +--resume", "no run in"),
    ("llm resume and overwrite", LLM, "train:output_dir=new +--resume +--overwrite", "contradict"),
    ("llm non-utf8 data", LLM, "train:data=A/nonutf,n_dev=0,n_eval=2,batch_size=1", "not UTF-8"),
    ("llm data without fields", LLM, "train:data=A/nofields", "missing field"),
    ("llm data missing", LLM, "train:data=A/nothing", "not found"),
    ("llm model missing", LLM, "train:model=A/nothing", "does not exist"),
    ("llm hub id offline", LLM, "train:model=facebook/opt-125m", "--model DIR"),
    ("llm max length 1", LLM, "train:max_length=1", "max_length"),
    ("llm batch too large", LLM, "train:batch_size=100000000", "exceeds the"),
    ("llm micro batches", LLM, "train:micro_batches=5", "micro_batches"),
    ("llm lora targets", LLM, "train:lora_target_modules=nope", "cannot attach"),
    ("llm steps 0", LLM, "train:steps=0", "invalid steps"),
    ("llm steps 2.5", LLM, "train:steps=2.5", "steps expects int"),
    ("llm steps text", LLM, "train:steps=many", "steps expects int"),
    ("llm lr inf", LLM, "train:lr_base=inf", "invalid lr_base"),
    ("llm lr nan", LLM, "train:lr_adapter=nan", "invalid lr_adapter"),
    ("llm lr negative", LLM, "train:lr_base=-1e-3", "invalid lr_base"),
    ("llm mu 0", LLM, "train:mu=0", "invalid mu"),
    ("llm seed -1", LLM, "train:seed=-1", "invalid seed"),
    ("llm eval every -1", LLM, "train:eval_every=-1", "invalid eval_every"),
    ("llm lora dropout", LLM, "train:lora_dropout=1.5", "lora_dropout"),
    ("llm zo queries 0", LLM, "train:zo_queries=0", "invalid zo_queries"),
    ("llm unknown task", LLM, "train:task=nope", "unknown task"),
    ("llm unknown method", LLM, "train:method=magic", "unknown method"),
    ("llm unknown peft", LLM, "train:peft=adapterx", "unknown peft"),
    ("llm unknown dtype", LLM, "train:dtype=float8", "unknown dtype"),
    ("llm unknown device", LLM, "train:device=tpu", "unknown device"),
    ("llm unknown select", LLM, "train:select=worst", "unknown select"),
    ("llm merged prefix", LLM, "train:peft=prefix,save_model=merged", "mergeable adapter"),
    ("llm forward with dropout", LLM, "train:zo_difference=forward,fo_dropout=", "deterministic"),
    ("llm config missing", LLM, ["train", "--config", "A/none.yaml"], "does not exist"),
    ("llm config broken", LLM, ["train", "--config", "A/broken.yaml"], "cannot parse"),
    ("llm config list", LLM, ["train", "--config", "A/list.yaml"], "mapping"),
    ("llm config unknown field", LLM, ["train", "--config", "A/unknown.yaml"], "unknown field"),
    ("llm grid missing", LLM, ["validate", "A/none.yaml"], "does not exist"),
    ("llm grid seeds 3", LLM, ["validate", "A/seeds3.yaml"], "seeds must be a list"),
    ("llm grid unknown key", LLM, ["validate", "A/gridkey.yaml"], "unknown key"),
    ("llm grid no models", LLM, ["validate", "A/nomodels.yaml"], "non-empty"),
    ("llm grid methods list", LLM, ["validate", "A/methodlist.yaml"], "methods must be"),
    ("llm grid unknown method", LLM, ["validate", "A/gridmethod.yaml"], "unknown method"),
    ("llm report out file", LLM, ["report", "A/finished", "--out", "A/FILE"], "is a file"),
    ("llm report nothing", LLM, ["report", "A/nothing"], "does not exist"),
    ("llm demo assets file", LLM, ["demo-assets", "A/FILE"], "is a file"),
    ("llm demo assets arch", LLM, ["demo-assets", "x", "--arch", "nope"], "invalid choice"),
    ("llm bench shape", LLM, ["bench", "--shape", "nope"], "nope"),
]

API_CASES = [
    ("api eta_y inf", lambda: RunConfig(eta_y=float("inf")), "eta_y must be finite"),
    ("api eta_x nan", lambda: RunConfig(eta_x=float("nan")), "eta_x must be finite"),
    ("api eta_x negative", lambda: RunConfig(eta_x=-1e-3), "eta_x must be finite and >= 0"),
    ("api eta list length", lambda: RunConfig(eta_x=[1e-3, 1e-3], replicates=3), "2 values for 3"),
    ("api eta list nan", lambda: RunConfig(eta_x=[1e-3, math.nan], replicates=2), "eta_x must be finite"),
    ("api mu 0", lambda: RunConfig(mu=0.0), "mu must be finite and > 0"),
    ("api epochs 2.5", lambda: RunConfig(epochs=2.5), "epochs must be an integer"),
    ("api epochs 0", lambda: RunConfig(epochs=0), "epochs must be an integer >= 1"),
    ("api replicates bool", lambda: RunConfig(replicates=True), "replicates must be an integer"),
    ("api queries 0", lambda: RunConfig(queries=0), "queries must be an integer >= 1"),
    ("api law", lambda: RunConfig(law="cauchy"), "unknown law"),
    ("api method", lambda: RunConfig(method="magic"), "unknown method"),
    ("api fo_point", lambda: RunConfig(fo_point="mid"), "unknown fo_point"),
    ("api stop_eps 0", lambda: RunConfig(stop_eps=0.0), "stop_eps must be finite and > 0"),
    ("api make n=0", lambda: make("hyb", n=0), "n must be an integer >= 1"),
    ("api make dx=-2", lambda: make("hyb", dx=-2), "dx must be an integer >= 1"),
    ("api make unknown family", lambda: make("nope"), "unknown problem family"),
    ("api make unknown param", lambda: make("quadratic", bogus=1), "no parameter 'bogus'"),
    ("api make bool", lambda: make("hyb", n=True), "n must be an integer"),
    ("api step_caps n=0", lambda: bounds.step_caps(make("hyb").constants(), 0), "n must be an integer >= 1"),
    ("api step_caps n=2.5", lambda: bounds.step_caps(make("hyb").constants(), 2.5), "n must be an integer"),
    ("api schedule eps 0", lambda: bounds.corollary1_schedule(make("hyb").constants(), 4, 6, 0.0, 1.0),
     "eps must be > 0"),
    ("api train config lr", lambda: TrainConfig(model="m", lr_base=-1.0).validate(), "invalid lr_base"),
    ("api train config steps", lambda: TrainConfig(model="m", steps=0).validate(), "invalid steps"),
    ("api train config no model", lambda: TrainConfig().validate(), "no model given"),
    ("api train config field type", lambda: TrainConfig.from_dict({"steps": "x"}), "steps expects int"),
    ("api grid seeds", lambda: GridConfig(models=["m"], tasks=["sst2"], methods={"hybrid": {}}, seeds=3).expand(),
     "seeds must be a list"),
]


def _expand(args, root: Path) -> list[str]:
    if isinstance(args, str):  # "train:key=value,...  +--flag": a train command on the tiny assets
        spec, *flags = args.split(" +")
        extra = {}
        for item in spec.split(":", 1)[1].split(","):
            key, value = item.split("=", 1)
            extra[key] = (value.replace("A/", f"{root}/") if value else None)
        extra.setdefault("output_dir", "out")
        return train(root, extra.pop("output_dir"), **extra) + flags
    return [a.replace("A/", f"{root}/") for a in args]


def _tree(*folders: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for folder in folders for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case, assets, tmp_path, monkeypatch, capsys):
    _, program, args, expected = case
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.chdir(tmp_path)
    argv = _expand(args, assets)
    before = _tree(tmp_path, assets)
    capsys.readouterr()
    rc = (ht_main if program == HT else llm_main)(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert "Traceback" not in err and out == ""
    assert _tree(tmp_path, assets) == before, "bad input left files behind"


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_one_clear_line(case):
    _, call, expected = case
    with pytest.raises((ValueError, UserError)) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and expected in message, message


def test_table_size():
    """The issue asks for at least 60 cases across both CLIs and the API."""
    assert len(CLI_CASES) + len(API_CASES) >= 60
    assert {c[1] for c in CLI_CASES} == {HT, LLM}


def test_small_data_is_a_warning_not_a_silent_cap(assets, tmp_path, capsys):
    assert llm_main(train(assets, tmp_path / "run", n_eval="1000", n_train="1000")) == 0
    err = capsys.readouterr().err
    assert "warning: the data has fewer examples than asked" in err and "n_eval 16 of 1000" in err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["data_capped"]["n_eval"] == {"asked": 1000, "got": 16}


def test_help_lists_the_choices_and_check_prints_the_table_without_flags(capsys, monkeypatch):
    from hybridtheory import hgs_check

    for argv, words in ((["schedule", "--help"], ["ramp", "hyb", "catalogue", "sphere"]),
                        (["figures", "--help"], ["convergence", "step_plane"])):
        with pytest.raises(SystemExit):
            ht_main(argv)
        out = capsys.readouterr().out
        assert all(w in out for w in words), (argv, out)
    with pytest.raises(SystemExit):
        llm_main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(w in out for w in ["sst2", "winogrande", "fo-peft", "zo-full", "lora", "prefix", "ia3"])
    rows = [{"family": "toy", "kind": "soundness", "what": "H1", "value": 0.5}]
    monkeypatch.setattr(hgs_check, "report", lambda **kw: rows)
    assert ht_main(["check"]) == 0  # no flags: the table, not the help
    out = capsys.readouterr().out
    assert "max ratio" in out and "toy" in out and "0 soundness violations" in out
