r"""Experiments shaped like PEPit's examples: plain functions that return (measured, bound).

Each function takes the paper's symbols, runs the batched fast path
(:func:`hybridtheory.runner.run`) and returns a :class:`Measurement` that unpacks as
``measured, bound = m`` and carries the details (per-seed numbers, configuration) in ``m.details``.

* :func:`ergodic_bound_check` (M1): Theorem 1 (2), seed mean of the weighted ergodic average vs W.
* :func:`epoch_complexity` (M3): epochs to ``||grad F|| <= eps`` over an eps grid under Corollary 1's
  schedule, the log-log slope with a bootstrap CI, and the ratio to T_bound(eps).
* :func:`scaling` (M4): epochs to eps against d_x or n (predicted slopes +1 and -1 in epochs).
* :func:`displacement_variance` (M5): variance of the one-epoch displacement against eta
  (predicted slopes: 2 for ZO-RR / hybrid / SGD, whose displacement noise is of order eta; 4 for FO-RR,
  whose reshuffling noise is of order eta^2).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import bounds
from ..io import cached_cell
from ..objectives import family_class, make
from ..objectives.base import FiniteSumProblem
from ..runner import RunConfig, RunState, ergodic_weighted_average, epochs_to_eps, run


@dataclass
class Measurement:
    """(measured, bound) plus details; iterates as the pair."""

    measured: float
    bound: float
    details: dict = field(default_factory=dict)

    def __iter__(self):
        yield self.measured
        yield self.bound

    @property
    def ratio(self) -> float:
        return self.measured / self.bound if self.bound else math.inf


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (nan with fewer than two points)."""
    if len(x) < 2:
        return math.nan
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def bootstrap_slope_ci(x: Sequence[float], samples: Sequence[np.ndarray], n_boot: int = 2000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the log-log slope of mean(samples[k]) against x[k], resampling each
    grid point's seeds with replacement (``np.random.default_rng(seed)``)."""
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    slopes = np.empty(n_boot)
    for b in range(n_boot):
        means = [np.mean(s[rng.integers(0, len(s), len(s))]) for s in samples]
        slopes[b] = loglog_slope(x, means)
    lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# -- M1 -------------------------------------------------------------------------------------------
def ergodic_bound_check(problem: FiniteSumProblem, eta_x: float, eta_y: float, mu: float, T: int,
                        replicates: int = 64, law: str = "sphere", seed: int = 0) -> Measurement:
    r"""Theorem 1 (2): :math:`\frac1T\sum_{t<T}\mathbb E[\eta_x\|\nabla_xF(z_t)\|^2+\eta_y\|\nabla_yF(z_t)\|^2] \le W`.

    Measured: the seed mean of the weighted ergodic average (with its standard error in
    ``details["stderr"]``). Bound: W from :func:`hybridtheory.bounds.theorem1_rhs` (caps enforced).
    """
    c = problem.constants()
    x0, y0 = problem.initial_point()
    delta = problem.initial_gap(x0, y0)
    W = bounds.theorem1_rhs(c, problem.n, problem.dx, eta_x, eta_y, mu, T, delta, law)
    cfg = RunConfig(method="hybrid", eta_x=eta_x, eta_y=eta_y, mu=mu, law=law, epochs=T,
                    replicates=replicates, seed=seed)
    traj = run(problem, cfg)
    per_seed = ergodic_weighted_average(traj, eta_x, eta_y, T)
    return Measurement(float(per_seed.mean()), W, {
        "stderr": float(per_seed.std(ddof=1) / math.sqrt(replicates)) if replicates > 1 else math.nan,
        "per_seed": per_seed, "delta": delta, "config": cfg.to_dict(), "problem": problem.describe()})


# -- M3 -------------------------------------------------------------------------------------------
def epoch_complexity(family: str, eps_grid: Sequence[float], family_params: dict | None = None,
                     replicates: int = 8, seed: int = 0, step_scale: float = 1.0, rho: float = 1.0,
                     law: str = "sphere", max_epochs: int | None = None, n_boot: int = 2000,
                     progress: bool = False, schedule: str = "corollary1", q: int = 1) -> Measurement:
    r"""Epochs to :math:`\|\nabla F(z_t)\|\le\varepsilon` under Corollary 1's schedule, over an eps grid.

    For each eps: build ``make(family, eps=eps, **family_params)`` (families without an eps
    parameter ignore it), take Corollary 1's (mu, eta_x, eta_y = rho eta_x) with both step sizes
    multiplied by ``step_scale``, run ``replicates`` seeds and record T_emp, the first epoch with
    :math:`\|\nabla F(z_t)\|\le\varepsilon` (capped at ``max_epochs``, default T_bound).

    ``step_scale = 1`` is the theorem check: Corollary 1 guarantees
    :math:`\min_t\mathbb E\|\nabla F(z_t)\|^2\le\varepsilon^2` within T_bound epochs, so T_emp/T_bound
    <= 1 is expected. ``step_scale > 1`` (larger steps, still under the caps) measures the *shape*
    of T(eps) faster; its ratios are reported but are not a check of the corollary.

    ``schedule="corollary3"`` uses Theorem 2's schedule instead (heterogeneity, no gradient bound;
    ``proofs/07-theorem2.md``) with the family's certified ``varsigma_x_sq``, ``varsigma_y_sq`` and ``q``
    queries per step, and checks Theorem 2's caps.

    Returns measured = fitted slope of log mean T_emp vs log(1/eps), bound = fitted slope of
    T_bound (4 in the noise-dominated regime); ``details`` has the per-eps table, the bootstrap CI,
    the largest T_emp/T_bound ratio and whether every seed reached eps.
    """
    family_params = dict(family_params or {})
    takes_eps = "eps" in inspect.signature(family_class(family)).parameters
    rows, samples = [], []
    def cell(eps: float) -> dict:
        problem = make(family, **({"eps": eps} if takes_eps else {}), **family_params)
        c = problem.constants()
        delta = problem.initial_gap()
        if schedule == "corollary1":
            sched = bounds.corollary1_schedule(c, problem.n, problem.dx, eps, delta, rho, law)
            cap_x, cap_y = bounds.step_caps(c, problem.n)
        elif schedule == "corollary3":
            if not c.bounded_heterogeneity:
                raise bounds.BoundError(f"family {family!r} certifies no heterogeneity bound (varsigma_x_sq, "
                                        "varsigma_y_sq): Corollary 3 does not apply")
            sched = bounds.corollary3_schedule(c, problem.n, problem.dx, eps, delta, c.varsigma_x_sq,
                                               c.varsigma_y_sq, rho, q, law)
            cap_x, cap_y = bounds.theorem2_caps(c, problem.n, problem.dx, q, law)
        else:
            raise ValueError(f"schedule must be 'corollary1' or 'corollary3', got {schedule!r}")
        eta_x, eta_y = step_scale * sched.eta_x, step_scale * sched.eta_y
        if eta_x > cap_x * (1 + 1e-12) or eta_y > cap_y * (1 + 1e-12):
            raise bounds.BoundError(f"step_scale={step_scale} pushes eta past the theorem's caps at eps={eps}")
        cap = int(max_epochs if max_epochs is not None else sched.T)
        cfg = RunConfig(method="hybrid", eta_x=eta_x, eta_y=eta_y, mu=sched.mu, law=law, epochs=cap,
                        replicates=replicates, seed=seed, stop_eps=eps, queries=q)
        traj = run(problem, cfg, record_every=max(1, cap), progress=progress, desc=f"{family} eps={eps:g}")
        t_emp = epochs_to_eps(traj)
        reached = ~np.isnan(t_emp)
        t_emp_filled = np.where(reached, t_emp, cap)  # a seed that never got there counts as the cap
        row = {"eps": eps, "T_emp_mean": float(np.mean(t_emp_filled)),
               "T_emp_min": float(np.min(t_emp_filled)), "T_emp_max": float(np.max(t_emp_filled)),
               "T_bound": sched.T, "ratio_max": float(np.max(t_emp_filled) / sched.T),
               "all_reached": bool(reached.all()), "binding_term": sched.binding,
               "eta_x": eta_x, "eta_y": eta_y, "mu": sched.mu, "cap": cap,
               "T_terms": sched.T_terms}
        return {"sample": np.maximum(t_emp_filled, 1.0).tolist(), "row": row}

    for eps in eps_grid:  # one cell per eps: a killed sweep resumes from its finished cells (hybridtheory.io)
        key = {"measure": "epoch_complexity", "family": family, "family_params": family_params, "eps": eps,
               "replicates": replicates, "seed": seed, "step_scale": step_scale, "rho": rho, "law": law,
               "max_epochs": max_epochs, "schedule": schedule, "q": q}
        done = cached_cell(key, lambda: cell(eps))
        samples.append(np.asarray(done["sample"], dtype=float))
        rows.append(done["row"])
    inv_eps = [1 / r["eps"] for r in rows]
    slope = loglog_slope(inv_eps, [r["T_emp_mean"] for r in rows])
    bound_slope = loglog_slope(inv_eps, [r["T_bound"] for r in rows])
    ci = bootstrap_slope_ci(inv_eps, samples, n_boot=n_boot, seed=seed)
    return Measurement(slope, bound_slope, {
        "family": family, "family_params": family_params, "rows": rows, "slope_ci95": ci,
        "ratio_max": max(r["ratio_max"] for r in rows), "all_reached": all(r["all_reached"] for r in rows),
        "step_scale": step_scale, "theorem_check": step_scale == 1.0, "replicates": replicates,
        "seed": seed, "law": law, "rho": rho, "schedule": schedule, "q": q})


# -- M4 -------------------------------------------------------------------------------------------
def scaling(family: str, parameter: str, values: Sequence[int], eps: float, family_params: dict | None = None,
            replicates: int = 8, seed: int = 0, step_scale: float = 1.0, law: str = "sphere") -> Measurement:
    r"""Epochs to eps against ``parameter`` (``"dx"`` or ``"n"``) under Corollary 1's schedule.

    In the noise-dominated regime T_c = 400 Delta Lhat_x sigma^2 / (m^2 n eps^4) with
    sigma^2 ~ 2 d_x G_x^2, so epochs grow like d_x and shrink like 1/n. Returns measured = log-log
    slope of mean T_emp against the parameter, bound = the same slope of T_bound.
    """
    if parameter not in ("dx", "n"):
        raise ValueError(f"parameter must be 'dx' or 'n', got {parameter!r}")
    base = dict(family_params or {})
    rows = []
    for v in values:
        m = epoch_complexity(family, [eps], {**base, parameter: v}, replicates=replicates, seed=seed,
                             step_scale=step_scale, law=law, n_boot=1)
        r = m.details["rows"][0]
        rows.append({parameter: v, "T_emp_mean": r["T_emp_mean"], "T_bound": r["T_bound"],
                     "ratio_max": r["ratio_max"], "all_reached": r["all_reached"]})
    slope = loglog_slope(values, [r["T_emp_mean"] for r in rows])
    bslope = loglog_slope(values, [r["T_bound"] for r in rows])
    return Measurement(slope, bslope, {"rows": rows, "parameter": parameter, "eps": eps, "family": family})


# -- M5 -------------------------------------------------------------------------------------------
def displacement_variance(problem: FiniteSumProblem, method: str, etas: Sequence[float], mu_ratio: float = 0.1,
                          replicates: int = 2000, seed: int = 0, anchor: tuple | None = None) -> Measurement:
    r"""Variance of the one-epoch displacement :math:`z_{t+1}-z_t` from a fixed anchor, against eta.

    Total variance (trace of the covariance over replicates) for each eta (eta_x = eta_y = eta,
    mu = mu_ratio * eta so the smoothing bias stays below the noise). Returns measured = log-log
    slope; bound = the slope the mechanism predicts (2 for methods with fresh ZO or sampling noise,
    4 for FO-RR, whose epoch sum of gradients is exact and only the within-epoch drift varies).
    """
    predicted = {"fo-rr": 4.0, "hybrid": 2.0, "zo-rr": 2.0, "hybrid-sgd": 2.0}[method]
    if anchor is None:
        anchor = problem.initial_point()
    x0, y0 = anchor
    variances = []
    for eta in etas:
        cfg = RunConfig(method=method, eta_x=eta, eta_y=eta, mu=mu_ratio * eta, epochs=1,
                        replicates=replicates, seed=seed)
        state = RunState(x0.expand(replicates, -1).clone(), y0.expand(replicates, -1).clone(),
                         stopped_at=torch.full((replicates,), -1, dtype=torch.long))
        traj = run(problem, cfg, state=state)
        disp = torch.cat([traj.state.x - x0, traj.state.y - y0], dim=-1)
        variances.append(float(disp.var(dim=0, unbiased=True).sum()))
    return Measurement(loglog_slope(etas, variances), predicted,
                       {"etas": list(etas), "variance": variances, "method": method})
