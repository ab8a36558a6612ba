"""The offline bridge benchmark (llm_experiments.offline_bench): the generated world and tasks, and the
quick mode end to end (pretraining cached in a temporary folder, every method, the probe, table and figures)."""
from __future__ import annotations

import json
import math

from llm_experiments.offline_bench import (PretrainConfig, build_world, main, mean_ci, pretraining_lines,
                                           task_splits, to_target, word_tokenizer)


def test_world_language_and_tasks_are_deterministic_and_keep_new_entities_out_of_pretraining():
    w = build_world(n_new=16)
    assert w == build_world(n_new=16)
    lines = pretraining_lines(w, 300, seed=0)
    assert lines == pretraining_lines(w, 300, seed=0)
    words = set(" ".join(lines).split())
    assert not words & set(w.new)                       # the facts task asks about unseen entities
    assert set(w.known) <= words and {"good", "bad"} <= words
    tok = word_tokenizer(w)
    ids = tok("zzz " + w.new[0] + " lives in")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id == ids[1] and len(ids) == 5  # one token per word
    facts = task_splits("facts", w)
    assert [r["name"] for r in facts.train] == list(w.new) and facts.eval == facts.train
    assert all(w.cities[r["label"]] == w.home[r["name"]] for r in facts.train)


def test_summary_helpers():
    m, h = mean_ci([0.5, 0.7, 0.9])
    assert math.isclose(m, 0.7) and math.isclose(h, 4.303 * 0.2 / math.sqrt(3))
    curve = [{"dev": 0.5, "step": 0, "passes": 0}, {"dev": 0.95, "step": 10, "passes": 40}]
    assert to_target(curve, 0.9)["passes"] == 40 and to_target(curve, 0.99) is None


def test_quick_benchmark_end_to_end(tmp_path):
    out = tmp_path / "bridge"
    assert main(["--quick", "--out", str(out), "--workers", "1", "--cache-root", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "results.json").read_text())
    labels = {(r["task"], r["label"]) for r in res["summary"]}
    for task in ("facts",):  # the quick mode runs the new-knowledge task only (CI time)
        for m in ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid", "hybrid lr_base=0"):
            assert (task, m) in labels
    assert {("facts", "fo-peft r1"), ("facts", "hybrid-sgd (theory)"), ("facts", "hybrid-sgd (tuned)")} <= labels
    for r in res["summary"]:
        assert 0.0 <= r["eval_acc"] <= 1.0 and r["passes_total"] > 0
    # the ZO block moved in hybrid and stayed put at lr_base = 0; fo-peft has no base block at all
    disp = {(r["task"], r["label"]): (r["disp_base"], r["disp_adapter"]) for r in res["summary"]}
    assert disp[("facts", "hybrid")][0] > 0 and disp[("facts", "hybrid lr_base=0")][0] < 1e-5
    assert disp[("facts", "fo-peft")][0] == 0 and disp[("facts", "fo-peft")][1] > 0
    assert res["theory_vs_tuned"]["facts"]["eta_x_theory"] > 0
    for name in ("table.md", "table.csv", "manifest.json", "bridge_curves.png", "bridge_ablations.png",
                 "probe_constants.png", "probe_l0l1.png"):
        assert (out / name).stat().st_size > 0
    assert "| facts | hybrid |" in (out / "table.md").read_text()
    assert (tmp_path / "cache").is_dir() and json.loads((out / "manifest.json").read_text())["cells_computed"] > 0
