r"""Slow, readable twin of the fast path: HZF-RR written as proofs/00-setting.md §0.2 reads.

One replicate at a time, one sample at a time, out-of-place arithmetic, no in-place perturbation.
It consumes the *same random streams* as the fast path (the sampler's permutation row and the
direction row of this replicate), so the two must agree step by step up to rounding; the test
``tests/test_reference.py`` checks exactly that. Keep this file boring: it is the specification.
"""
from __future__ import annotations

import torch

from ..objectives.base import FiniteSumProblem
from .sampler import EpochSampler


def reference_run(problem: FiniteSumProblem, cfg, replicate: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Iterates (x_t, y_t) at the start of every epoch t = 0..cfg.epochs for one replicate.

    ``cfg`` is a :class:`hybridtheory.runner.RunConfig`; only its random streams are shared with the
    fast path (via :func:`hybridtheory.runner.step_seed` and :class:`EpochSampler`).
    """
    from ..runner import METHODS, step_seed, zo_settings  # the config's stream definitions

    x_oracle, y_oracle, replacement = METHODS[cfg.method]
    S, s = cfg.replicates, replicate
    x0, y0 = problem.initial_point((S,))
    x, y = x0[s].clone(), y0[s].clone()

    def pick(v):
        return float(v[s]) if isinstance(v, torch.Tensor) else float(v)

    eta_x, eta_y, mu = pick(cfg.per_replicate("eta_x")), pick(cfg.per_replicate("eta_y")), pick(cfg.per_replicate("mu"))
    zo = zo_settings(cfg)
    sampler = EpochSampler(problem.n, cfg.seed, (S,), replacement=replacement)
    zo_dims = (problem.dx if x_oracle == "zo" else 0) + (problem.dy if y_oracle == "zo" else 0)

    def f(j, xx, yy):
        return float(problem.value(torch.tensor(j), xx, yy))

    def grads(j, xx, yy):
        gx, gy = problem.grad(torch.tensor(j), xx, yy)
        return gx.clone(), gy.clone()

    def direction(seed, k):
        """Row s of the fast path's direction draw, split into its x part and y part."""
        template = []
        if x_oracle == "zo":
            template.append(torch.zeros(S, problem.dx, dtype=x.dtype))
        if y_oracle == "zo":
            template.append(torch.zeros(S, problem.dy, dtype=y.dtype))
        rows = [u[s] for u in zo.direction(seed, k).materialize(template)]
        ux = rows.pop(0) if x_oracle == "zo" else torch.zeros_like(x)
        uy = rows.pop(0) if y_oracle == "zo" else torch.zeros_like(y)
        return ux, uy

    scale = float(zo_dims) if cfg.law == "sphere" else 1.0
    history = [(x.clone(), y.clone())]
    for t in range(cfg.epochs):
        order = sampler.order(t)[s]                          # pi_t (or i.i.d. draws for SGD)
        for i in range(problem.n):
            j = int(order[i])
            seed = step_seed(cfg, t, i, problem.n)
            # FO gradient where the variant asks for it (Jacobi: the unperturbed point)
            gx_fo, gy_fo = grads(j, x, y)
            # ZO estimate over the ZO blocks, jointly
            gx_zo, gy_zo = torch.zeros_like(x), torch.zeros_like(y)
            if zo_dims:
                for k in range(cfg.queries):
                    ux, uy = direction(seed, k)
                    f_plus = f(j, x + mu * ux, y + mu * uy)
                    if cfg.difference == "central":
                        f_minus = f(j, x - mu * ux, y - mu * uy)
                        c = (f_plus - f_minus) / (2 * mu)
                    else:
                        c = (f_plus - f(j, x, y)) / mu
                    if k == 0 and cfg.fo_point == "perturbed":
                        gx_fo, gy_fo = grads(j, x + mu * ux, y + mu * uy)
                    gx_zo = gx_zo + scale * c * ux / cfg.queries
                    gy_zo = gy_zo + scale * c * uy / cfg.queries
            g_x = gx_zo if x_oracle == "zo" else gx_fo
            g_y = gy_zo if y_oracle == "zo" else gy_fo
            x_new = x - eta_x * g_x
            if cfg.fo_point == "gauss_seidel" and zo_dims:
                # FO block's gradient at the updated ZO block
                gx_fo, gy_fo = grads(j, x_new, y)
                g_y = gy_zo if y_oracle == "zo" else gy_fo
            y = y - eta_y * g_y
            x = x_new
        history.append((x.clone(), y.clone()))
    return history
