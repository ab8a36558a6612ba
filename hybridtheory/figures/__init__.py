r"""The default figure set: each figure is a ``compute`` (cached JSON) and a ``plot`` (PNG + CSV).

``python -m hybridtheory.figures [--quick] [--only NAME ...] [--recompute] [--out figures]``
regenerates everything into ``figures/`` with one ``figures/manifest.json`` (git revision, seeds,
package versions, wall time per figure) and ``figures/epoch_complexity.json``. Computed results are
cached under ``<out>/.cache/`` keyed by the figure's parameters, so replotting does not recompute.

Figures (the measurements of the README's "Figures" section):

* ``convergence``: ||grad F||^2 vs epochs, hybrid vs FO-RR vs ZO-RR vs hybrid-SGD on HYB, LoRA
  regression and a coupled quadratic, at Theorem 1's step caps.
* ``epoch_complexity``: log T_emp vs log 1/eps under Corollary 1's schedule for the ramp and the PL
  contrast, fitted slopes with bootstrap CIs, T_bound(eps) beside them (M3); the long ramp sweep
  (``hybridtheory sweep``) is drawn too when its cached result exists.
* ``step_plane``: the (eta_x, eta_y) plane on HYB, final gradient norm per cell, with the caps.
* ``variance_slope``: variance of the one-epoch displacement vs eta, per method (M5).
* ``local_smoothness``: ||Hessian|| vs ||grad|| for the (L0, L1) catalogue, with L0 + L1 ||grad||.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import CellCache, atomic_path, atomic_write_text


def atomic_savefig(fig, path: Path, dpi: int = 130, bbox_inches: str | None = "tight") -> Path:
    """Save a matplotlib figure atomically, without timestamps in the metadata (byte-stable PNGs); returns ``path``."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches=bbox_inches, metadata={"Software": None})
    return path


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    return o


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    lines = [",".join(header)] + [",".join("" if v is None else (f"{v:.10g}" if isinstance(v, float) else str(v))
                                           for v in r) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class Figure:
    """A figure: ``compute(params) -> dict`` (cached as JSON) and ``plot(data, out_dir)``."""

    name: str
    compute: Callable[[dict], dict]
    plot: Callable[[dict, Path], None]
    params: Callable[[bool], dict]  # quick -> parameters (the cache key)


def cache_path(out: Path, fig: Figure, params: dict) -> Path:
    key = hashlib.sha256(json.dumps(_jsonable(params), sort_keys=True).encode()).hexdigest()[:12]
    return out / ".cache" / f"{fig.name}-{key}.json"


def load_or_compute(out: Path, fig: Figure, params: dict, recompute: bool = False) -> tuple[dict, bool]:
    """Cached result of ``fig.compute(params)``; returns (data, computed_now)."""
    path = cache_path(out, fig, params)
    if path.exists() and not recompute:
        return json.loads(path.read_text()), False
    t0 = time.perf_counter()
    cells = path.with_suffix(".cells")  # finished cells of a killed computation are reused, not recomputed
    with CellCache(cells):
        data = _jsonable(fig.compute(params))
    res = {"params": params, "data": data, "compute_seconds": round(time.perf_counter() - t0, 2)}
    write_json(path, res)
    shutil.rmtree(cells, ignore_errors=True)  # the whole result is stored now
    return res, True


def registry() -> dict[str, Figure]:
    from . import gallery  # heavy imports (matplotlib) only when figures are made
    return gallery.FIGURES
