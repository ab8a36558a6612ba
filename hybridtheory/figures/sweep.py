"""The long ramp epoch-complexity sweep (down to eps = 0.05), separate from the 2-minute default set.

Corollary 1's exact schedule would need ~1e9 epochs at eps = 0.05 (d_x = 4), so the sweep multiplies both step
sizes by ``step_scale`` (still inside Theorem 1's caps; the same eta proportional to eps^2 rule, as
an "eta_x = 0.05 eps^2" run). It measures the *shape* of T(eps); its T_emp/T_bound
ratios are printed but are not a check of Corollary 1 (the default figure's exact-schedule runs are).
Its cached result is drawn on ``epoch_complexity.png`` when present.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..io import CellCache
from ..measurement import epoch_complexity
from . import Figure, _jsonable, write_json


def _params(quick: bool) -> dict:
    return {"family": "ramp", "family_params": {"dx": 4, "delta": 1.0},
            "eps_grid": [0.3, 0.2, 0.14, 0.1, 0.07, 0.05] if not quick else [0.3, 0.2, 0.14],
            "replicates": 8, "seed": 0, "step_scale": 60.0, "law": "sphere"}


def _compute(p: dict) -> dict:
    m = epoch_complexity(p["family"], p["eps_grid"], p["family_params"], replicates=p["replicates"], seed=p["seed"],
                         step_scale=p["step_scale"], law=p["law"], progress=True)
    return {"slope": m.measured, "bound_slope": m.bound, **m.details}


def _plot(res: dict, out) -> None:  # drawn by the epoch_complexity figure
    pass


SWEEP = Figure("ramp_sweep", _compute, _plot, _params)


def sweep_path(out: Path) -> Path:
    """Committed result file (not in .cache/): a fresh clone draws the sweep without re-running it."""
    return out / "ramp_sweep.json"


def load_sweep(out: Path, quick: bool = False) -> dict | None:
    """The stored sweep if it exists and was made with the current parameters."""
    path = sweep_path(out)
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    return res if res.get("params") == _jsonable(_params(quick)) else None


def run_sweep(out: Path, quick: bool = False, recompute: bool = False) -> tuple[dict, bool]:
    res = None if recompute else load_sweep(out, quick)
    if res is not None:
        return res, False
    params = _jsonable(_params(quick))
    cells = out / ".cache" / "ramp_sweep.cells"  # a killed sweep resumes from its finished eps cells
    with CellCache(cells):
        res = {"params": params, "data": _jsonable(_compute(params))}
    write_json(sweep_path(out), res)
    shutil.rmtree(cells, ignore_errors=True)
    return res, True
