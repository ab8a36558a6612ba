"""The quick grid of ``python -m proofs.verify``: every lemma and Theorem 1 on HYB, ramp and quadratic.

A row fails when the measured side exceeds its bound by more than Z = 3 Monte Carlo standard errors
(deterministic rows: by more than rounding). The full grid is a command (``python -m proofs.verify``),
its table is in proofs/README.md.
"""
from __future__ import annotations

import pytest

from proofs import verify

STATEMENTS = {
    "Prop. 1 (H1)", "Prop. 1 (H2)+phi", "Lemma 1(ii) global L_y", "(A3) gradient bounds", "Lemma 3 block descent",
    "Lemma 2(b) bias", "Lemma 2(c) second moment", "Lemma 2(d) a.s. sphere", "Lemma 4(a) x drift",
    "Lemma 4(b) y drift", "Lemma 4(c) e^x (drift part)", "Lemma 4(c) e^y", "Theorem 1 (1) one epoch",
    "Theorem 1 (2) ergodic",
}


@pytest.fixture(scope="module")
def rows():
    return verify.verify(quick=True, log=lambda s: None)


def test_every_statement_on_every_family(rows):
    seen = {(r["statement"], r["family"]) for r in rows}
    for fam in ("hyb", "ramp", "quadratic"):
        missing = {s for s in STATEMENTS if (s, fam) not in seen}
        assert not missing, f"{fam}: {missing}"
    assert ("Lemma 4(d) noise N", "quadratic") in seen


def test_no_bound_is_exceeded(rows):
    bad = [r for r in rows if not r["passed"]]
    assert not bad, bad


def test_checks_are_not_vacuous(rows):
    """Deterministic constants are nearly attained somewhere (a wrong, too-large constant would show here)."""
    best = {}
    for r in rows:
        best[r["statement"]] = max(best.get(r["statement"], 0.0), r["max_ratio"])
    for s in ("Prop. 1 (H1)", "Prop. 1 (H2)+phi", "(A3) gradient bounds", "Lemma 3 block descent",
              "Lemma 2(d) a.s. sphere"):
        assert best[s] > 0.5, (s, best[s])
    assert best["Lemma 2(c) second moment"] > 0.3
    assert best["Theorem 1 (2) ergodic"] > 0.005


def test_check_detects_a_violation():
    ch = verify.Check("x", "y")
    ch.add("c", measured=[1.0, 2.0], bound=1.5, se=0.1)
    assert not ch.passed and abs(ch.ratio - 2 / 1.5) < 1e-12
    ok = verify.Check("x", "y")
    ok.add("c", measured=1.6, bound=1.5, se=0.1)     # within 3 standard errors
    assert ok.passed
