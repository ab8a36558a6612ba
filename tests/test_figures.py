"""The figures command: every default figure writes its PNG and CSV, the manifest and the
epoch-complexity summary; a second call uses the cache; writes are atomic."""
import json

import pytest

from hybridtheory.figures import atomic_write_text, registry
from hybridtheory.figures.__main__ import main


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    assert main(["--quick", "--out", str(out)]) == 0
    return out


def test_every_figure_has_png_and_csv(quick_out):
    for name in registry():
        png, csv = quick_out / f"{name}.png", quick_out / f"{name}.csv"
        assert png.stat().st_size > 5000, name
        lines = csv.read_text().splitlines()
        assert len(lines) > 2 and "," in lines[0], name


def test_manifest_and_epoch_summary(quick_out):
    man = json.loads((quick_out / "manifest.json").read_text())
    assert man["quick"] is True and set(man["figures"]) == set(registry())
    assert man["versions"]["torch"]
    for f in man["figures"].values():
        assert f["compute_seconds"] >= 0 and "params" in f
    summary = json.loads((quick_out / "epoch_complexity.json").read_text())
    for fam, s in summary.items():
        lo, hi = s["slope_ci95"]
        assert lo <= s["slope"] <= hi, fam
        assert s["largest_empirical_over_bound"] <= 1.0, fam



def test_heterogeneity_summary(quick_out):
    """Corollary 3's exact schedule on the heterogeneous ramp: a theorem check (every T_emp/T_bound <= 1,
    every seed reaches eps) and the slope falls by more than 1 from varsigma = 1 to varsigma = 0."""
    summary = json.loads((quick_out / "heterogeneity.json").read_text())
    for key, s in summary.items():
        assert s["all_seeds_reached_eps"] and s["largest_empirical_over_bound"] <= 1.0, key
    assert summary["1"]["slope"] > summary["0"]["slope"] + 1.2
    assert set(summary["1"]["binding_terms"]) == {"T_het"} and set(summary["0"]["binding_terms"]) == {"T_cap"}


def test_blockwise_summary(quick_out):
    """Corollary 5 on HYB and LoRA regression: the measured block-wise ergodic averages stay under W/eta_b."""
    summary = json.loads((quick_out / "blockwise.json").read_text())
    assert set(summary) == {"hyb", "lora"}
    for name, s in summary.items():
        assert 0 < s["largest_measured_over_corollary5_bound"] <= 1.0, name


def test_second_call_uses_the_cache(quick_out):
    assert main(["--quick", "--out", str(quick_out), "--only", "variance_slope"]) == 0
    man = json.loads((quick_out / "manifest.json").read_text())
    assert man["figures"]["variance_slope"]["computed"] is False


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("crash while producing the text")

    with pytest.raises(RuntimeError):
        atomic_write_text(target, str(Boom()))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
