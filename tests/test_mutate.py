"""The mutation check (``python -m proofs.mutate``): its committed table is current, and one mutation runs here.

The full run (every certified constant halved, every bound coefficient moved in the unsafe direction, in a
fresh copy of the tree) takes tens of minutes, so it stays out of the default suite; this file checks that the
table in ``proofs/README.md`` lists exactly the current mutations, all caught, that every mutation still
applies to the source, and runs the issue's example (LoRA regression's L0 halved) end to end.
"""
from __future__ import annotations

import re
from pathlib import Path

from proofs import mutate

README = Path(mutate.__file__).resolve().parent / "README.md"


def test_table_lists_every_mutation_and_all_are_caught():
    text = README.read_text()
    body = text.split(mutate.START, 1)[1].split(mutate.END, 1)[0]
    ids = re.findall(r"^\| `([^`]+)` \|", body, re.M)
    assert ids == [m.id for m in mutate.MUTATIONS]
    assert "**missed**" not in body
    assert f"{len(ids)}/{len(ids)} mutations caught." in body


def test_every_mutation_applies_to_the_current_source():
    assert mutate.check_applicable() == []


def test_issue_example_is_caught_end_to_end():
    mut = {m.id: m for m in mutate.MUTATIONS}["lora-L0"]
    r = mutate.run_one(mut, tests=("tests/test_constants_teeth.py::test_half_of_every_constant_is_violated[lora seed 0]",))
    assert r["caught_by"] and "test_constants_teeth" in r["caught_by"]
