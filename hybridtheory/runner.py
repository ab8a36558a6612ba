r"""Batched runs of the core algorithm on synthetic problems (fast path).

Many independent replicates (seeds, and optionally different step sizes / mu per replicate) live in
one tensor of shape ``(S, d)``; each inner step is one call of
:func:`hybridtheory.algorithm.hybrid_step` on the whole batch, with each replicate drawing its own
permutation row and its own direction row. Nothing here re-implements the update.

Methods (same core, different oracles or sampler):

============== =========== =========== ================
method          x block     y block     sampling
============== =========== =========== ================
``hybrid``      ZO          FO          reshuffling
``fo-rr``       FO          FO          reshuffling
``zo-rr``       ZO          ZO          reshuffling (one joint direction over (x, y))
``hybrid-sgd``  ZO          FO          with replacement
============== =========== =========== ================

The loop state (:class:`RunState`: parameters, epoch, position, seed, and the config) is all that
is needed to resume: the sampler and the directions are pure functions of (seed, counters).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .algorithm import (DIFFERENCES, FO_POINTS, LAWS, DirectionBank, EpochSampler, ParamGroup, ZOSettings,
                        derive_seed, hybrid_step)
from .objectives.base import DTYPE, FiniteSumProblem

METHODS: dict[str, tuple[str, str, bool]] = {
    # name: (x oracle, y oracle, with replacement)
    "hybrid": ("zo", "fo", False),
    "fo-rr": ("fo", "fo", False),
    "zo-rr": ("zo", "zo", False),
    "hybrid-sgd": ("zo", "fo", True),
}
_DIRECTION_STREAM = 2  # keeps direction seeds disjoint from the sampler's


@dataclass(frozen=True)
class RunConfig:
    """One batched run. Scalars apply to every replicate; a sequence gives one value per replicate.

    Args:
        method: one of ``METHODS``.
        eta_x, eta_y: step sizes of the x and y blocks.
        mu: ZO smoothing radius.
        law: ``"sphere"`` or ``"gaussian"``.
        difference: ``"central"`` or ``"forward"``.
        queries: ZO directions per step.
        fo_point: ``"jacobi"`` (HZF-RR), ``"gauss_seidel"`` or ``"perturbed"``.
        epochs: maximum number of epochs.
        replicates: S, the number of independent runs in the batch.
        seed: run seed (replicate s uses row s of every draw).
        stop_eps: stop a replicate at the first epoch with ||grad F(z_t)|| <= stop_eps (None: never).
    """

    method: str = "hybrid"
    eta_x: float | Sequence[float] = 1e-3
    eta_y: float | Sequence[float] = 1e-3
    mu: float | Sequence[float] = 1e-2
    law: str = "sphere"
    difference: str = "central"
    queries: int = 1
    fo_point: str = "jacobi"
    epochs: int = 100
    replicates: int = 1
    seed: int = 0
    stop_eps: float | Sequence[float] | None = None

    def __post_init__(self) -> None:
        """Refuse a bad value with one line naming the field and the expected form (ValueError)."""
        choices = {"method": tuple(METHODS), "law": LAWS, "difference": DIFFERENCES, "fo_point": FO_POINTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {allowed}")
        for name, low in (("epochs", 1), ("replicates", 1), ("queries", 1), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        for name, positive in (("eta_x", False), ("eta_y", False), ("mu", True), ("stop_eps", True)):
            v = getattr(self, name)
            if v is None and name == "stop_eps":
                continue
            many = isinstance(v, (list, tuple, np.ndarray))
            if many and len(v) != self.replicates:
                raise ValueError(f"{name} has {len(v)} values for {self.replicates} replicates")
            try:
                values = np.asarray(v if many else [v], dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number or one number per replicate, got {v!r}") from None
            if not (np.isfinite(values).all() and ((values > 0).all() if positive else (values >= 0).all())):
                raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v!r}")

    def per_replicate(self, name: str) -> torch.Tensor | float:
        v = getattr(self, name)
        if isinstance(v, (list, tuple, np.ndarray)):
            return torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=DTYPE)
        return float(v)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(map(float, v)) if isinstance(v, (tuple, np.ndarray)) else v) for k, v in d.items()}


@dataclass
class RunState:
    """Everything needed to continue a run: parameters and counters (the RNG streams are derived)."""

    x: torch.Tensor
    y: torch.Tensor
    epoch: int = 0
    position: int = 0
    stopped_at: torch.Tensor | None = None   # epoch at which each replicate met stop_eps (-1: not yet)
    diverged_at: torch.Tensor | None = None  # first recorded epoch with a non-finite iterate (-1: never)

    def state_dict(self) -> dict:
        return {"x": self.x.clone(), "y": self.y.clone(), "epoch": self.epoch, "position": self.position,
                "stopped_at": None if self.stopped_at is None else self.stopped_at.clone(),
                "diverged_at": None if self.diverged_at is None else self.diverged_at.clone()}

    @classmethod
    def from_state_dict(cls, d: dict) -> "RunState":
        return cls(d["x"].clone(), d["y"].clone(), int(d["epoch"]), int(d["position"]),
                   None if d.get("stopped_at") is None else d["stopped_at"].clone(),
                   None if d.get("diverged_at") is None else d["diverged_at"].clone())


@dataclass
class Trajectory:
    """Per-epoch records of a batched run (numpy arrays of shape (epochs_recorded, S))."""

    epochs: np.ndarray
    grad_sq_x: np.ndarray
    grad_sq_y: np.ndarray
    value: np.ndarray
    stopped_at: np.ndarray            # (S,) first epoch with ||grad F|| <= stop_eps, -1 if never
    config: dict = field(default_factory=dict)
    state: RunState | None = None
    diverged_at: np.ndarray | None = None  # (S,) first recorded epoch with a non-finite iterate, -1 if never

    @property
    def grad_sq(self) -> np.ndarray:
        return self.grad_sq_x + self.grad_sq_y

    @property
    def diverged(self) -> np.ndarray:
        """(S,) mask of replicates whose iterate became non-finite (NaN/inf): leave them out of averages."""
        if self.diverged_at is None:
            return np.zeros(self.stopped_at.shape, dtype=bool)
        return self.diverged_at >= 0


def finite_mean(values: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """Mean over the last (replicate) axis of the replicates that did not diverge (NaN where all did)."""
    keep = np.broadcast_to(~np.asarray(diverged, bool), values.shape)
    count = keep.sum(-1)
    total = np.where(keep, values, 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def initial_state(problem: FiniteSumProblem, cfg: RunConfig) -> RunState:
    x, y = problem.initial_point((cfg.replicates,))
    return RunState(x.clone(), y.clone(), stopped_at=torch.full((cfg.replicates,), -1, dtype=torch.long),
                    diverged_at=torch.full((cfg.replicates,), -1, dtype=torch.long))


def step_seed(cfg: RunConfig, epoch: int, position: int, n: int) -> int:
    """Seed of the directions of inner step (epoch, position)."""
    return derive_seed(cfg.seed, _DIRECTION_STREAM, epoch * n + position)


def make_groups(cfg: RunConfig, state: RunState) -> list[ParamGroup]:
    xo, yo, _ = METHODS[cfg.method]
    return [ParamGroup("x", [state.x], cfg.per_replicate("eta_x"), xo),
            ParamGroup("y", [state.y], cfg.per_replicate("eta_y"), yo)]


def zo_settings(cfg: RunConfig) -> ZOSettings:
    return ZOSettings(mu=cfg.per_replicate("mu"), law=cfg.law, difference=cfg.difference,
                      queries=cfg.queries, batch_dims=1, dtype=DTYPE, cache=True,
                      bank=DirectionBank(cfg.law, DTYPE))


_BANK_ENTRIES = 1 << 15  # direction entries drawn per bank fill


def _fill_bank(zo: ZOSettings, cfg: RunConfig, template: list[torch.Tensor], epoch: int, position: int,
               n: int) -> None:
    """Draw the directions of the next few steps in one pass (see DirectionBank)."""
    per_step = cfg.queries * sum(t.numel() for t in template)
    steps = max(1, min(256, _BANK_ENTRIES // max(per_step, 1)))
    first = epoch * n + position
    last = min(first + steps, cfg.epochs * n)
    seeds = [derive_seed(step_seed(cfg, s // n, s % n, n), k) for s in range(first, last)
             for k in range(cfg.queries)]
    zo.bank.fill(seeds, template)


def run(problem: FiniteSumProblem, cfg: RunConfig, state: RunState | None = None, record_every: int = 1,
        progress: bool = False, desc: str | None = None) -> Trajectory:
    """Run ``cfg.epochs`` epochs (or until every replicate met ``stop_eps``) and record per epoch.

    Returns a :class:`Trajectory` whose ``state`` can be passed back to continue the run.
    """
    state = initial_state(problem, cfg) if state is None else state
    n = problem.n
    sampler = EpochSampler(n, cfg.seed, (cfg.replicates,), replacement=METHODS[cfg.method][2])
    groups = make_groups(cfg, state)
    zo = zo_settings(cfg)
    zo_template = [p for g in groups if g.oracle == "zo" for p in g.params]
    stop = cfg.per_replicate("stop_eps") if cfg.stop_eps is not None else None
    rec_e, rec_gx, rec_gy, rec_v = [], [], [], []

    if state.diverged_at is None:
        state.diverged_at = torch.full((cfg.replicates,), -1, dtype=torch.long)
    diverged_at = state.diverged_at

    def record(epoch: int) -> bool:
        gx, gy = problem.grad_norm_sq(state.x, state.y)
        value = problem.full_value(state.x, state.y)
        finite = (torch.isfinite(state.x).reshape(cfg.replicates, -1).all(1)
                  & torch.isfinite(state.y).reshape(cfg.replicates, -1).all(1)
                  & torch.isfinite(gx) & torch.isfinite(gy))
        diverged_at[(diverged_at < 0) & ~finite] = epoch
        if epoch % record_every == 0 or epoch == cfg.epochs:
            rec_e.append(epoch)
            rec_gx.append(gx.numpy().copy())
            rec_gy.append(gy.numpy().copy())
            rec_v.append(value.numpy().copy())
        if stop is None:
            return False
        newly = (state.stopped_at < 0) & ((gx + gy).sqrt() <= stop)
        state.stopped_at[newly] = epoch
        # a diverged replicate never meets the rule: it does not keep the batch running
        return bool(((state.stopped_at >= 0) | (diverged_at >= 0)).all())

    bar = None
    if progress:
        from tqdm.auto import tqdm
        # with a stopping rule the run usually ends long before cfg.epochs: count epochs, no misleading ETA
        bar = tqdm(total=None if cfg.stop_eps is not None else cfg.epochs, initial=state.epoch,
                   desc=desc or f"{problem.name}/{cfg.method}", leave=False, mininterval=1.0, unit="epoch")
    done = record(state.epoch) if state.position == 0 else False
    with torch.no_grad():  # closed-form oracles: no autograd anywhere in the loop
        while state.epoch < cfg.epochs and not done:
            order = sampler.order(state.epoch)
            for i in range(state.position, n):
                j = order[:, i]
                seed = step_seed(cfg, state.epoch, i, n)
                if zo_template and derive_seed(seed, 0) not in zo.bank:
                    _fill_bank(zo, cfg, zo_template, state.epoch, i, n)
                hybrid_step(groups, problem.oracle(j, state.x, state.y), zo, seed, fo_point=cfg.fo_point)
                state.position = i + 1
            state.epoch, state.position = state.epoch + 1, 0
            done = record(state.epoch)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return Trajectory(np.asarray(rec_e), np.stack(rec_gx), np.stack(rec_gy), np.stack(rec_v),
                      state.stopped_at.numpy().copy(), cfg.to_dict(), state, diverged_at.numpy().copy())


def ergodic_weighted_average(traj: Trajectory, eta_x, eta_y, T: int) -> np.ndarray:
    """(1/T) sum_{t<T} [eta_x ||grad_x F(z_t)||^2 + eta_y ||grad_y F(z_t)||^2] per replicate (M1)."""
    if not np.array_equal(traj.epochs[: T + 1], np.arange(T + 1)):
        raise ValueError("ergodic average needs every epoch recorded (record_every=1)")
    w = np.asarray(eta_x) * traj.grad_sq_x[:T] + np.asarray(eta_y) * traj.grad_sq_y[:T]
    return w.mean(0)


def epochs_to_eps(traj: Trajectory) -> np.ndarray:
    """Per replicate: first epoch with ||grad F|| <= stop_eps (nan if not reached)."""
    s = traj.stopped_at.astype(float)
    s[s < 0] = math.nan
    return s
