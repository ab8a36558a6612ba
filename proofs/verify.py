r"""Numeric verification of every lemma and of Theorem 1 on the HYB, ramp and quadratic families.

``python -m proofs.verify [--quick] [--json PATH]`` prints one table row per (statement, family):

    statement | family | configurations | largest measured/bound | largest lower-confidence ratio | pass

* *measured/bound* is the point estimate (a Monte Carlo mean where the statement is about an
  expectation, an exact number where it is deterministic);
* the *lower-confidence ratio* subtracts ``Z = 3`` standard errors from a Monte Carlo mean before
  dividing (for deterministic statements it equals the ratio). A row passes when it is <= 1 (+1e-9
  for rounding): "the measured side never exceeds the bound beyond Monte Carlo error".

The algorithm is always the project's core: :func:`hybridtheory.algorithm.hybrid_step` with
:class:`~hybridtheory.algorithm.ParamGroup`, :class:`~hybridtheory.algorithm.ZOSettings` and
:class:`~hybridtheory.algorithm.EpochSampler` batched over replicates (``batch_dims=1``), through
:mod:`hybridtheory.runner` (its seeds and settings) for whole runs. Bounds come from
:mod:`hybridtheory.bounds`, which ``tests/test_proofs_bounds_agree.py`` ties to :mod:`proofs.symbolic`.

Statements (``proofs/README.md`` lists where each is proved):

=====================  ==========================================================================
Prop. 1 (H1)           gradient-x Lipschitz bound on random pairs, every component
Prop. 1 (H2)+phi       y-gradient bound with the factor phi(L1|dy|) ((L0, L1) certificate)
Lemma 1(ii)            global (H2) with L_y = L0 + L1 G_y, no radius, no phi
(A3)                   |grad_x f_i| <= G_x, |grad_y f_i| <= G_y
Lemma 2(b) bias        |grad f_mu - grad_x f| <= beta_mu, grad f_mu = E grad f(x + mu v) sampled
Lemma 2(c) moment      E|g|^2 <= 2d|a|^2 + d^2L^2mu^2/2 (sphere) / Gaussian analogue, pointwise
Lemma 2(d) a.s.        |g| <= d(|a| + L_x mu) for every sphere draw
Lemma 3 descent        f(z+D) - f(z) - <grad f, D> <= (Lhat_x|Dx|^2 + Lhat_y|Dy|^2)/2
Lemma 4(a)             E|x_{t,i} - x_t|^2 <= 2 eta_x^2 (i^2 G_x^2 + i sigma^2), every i
Lemma 4(b)             |y_{t,i} - y_t| <= eta_y i G_y, every i and draw
Lemma 4(c) e^x         E|e^x_drift|^2 <= (2/3)(E_x - 3 beta^2) (the bias-free part of e^x)
Lemma 4(c) e^y         E|e^y|^2 <= E_y
Lemma 4(d) N           E|N|^2 <= sigma^2/n (quadratic family only: zero smoothing bias, so N is exact)
Theorem 1 (1)          E[F(z_{t+1})] - F(z_t) + (n/4)(eta_x|g_x|^2 + eta_y|g_y|^2) <= error terms of (1)
Theorem 1 (2)          (1/T) sum_t E[eta_x|grad_x F|^2 + eta_y|grad_y F|^2] <= W
(V) heterogeneity      (1/n) sum_i |grad_b f_i - grad_b F|^2 <= varsigma_b^2 (Theorem 2's assumption)
Theorem 2 (2)          (1/T) sum_t E[eta_x|grad_x F|^2 + eta_y|grad_y F|^2] <= W_2 (no gradient bound; q queries)
Prop. 5 (ramp)         ramp under Corollary 1's schedule: fraction of replicates at ||grad F|| <= eps before
                       epoch T_low, against the bound p of ``proofs/05-ramp.md``; and T_low/T_emp
Cor. 1 (ramp)          T_emp/T(eps), and the ergodic average of ||grad F||^2 over T(eps) epochs vs eps^2
=====================  ==========================================================================
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from hybridtheory import bounds
from hybridtheory.algorithm import EpochSampler, hybrid_step
from hybridtheory.io import atomic_write_text
from hybridtheory.assumptions import HGSConstants, phi
from hybridtheory.objectives import make
from hybridtheory.objectives.base import DTYPE, FiniteSumProblem
from hybridtheory.runner import RunConfig, initial_state, make_groups, run, step_seed, zo_settings

Z = 3.0          # standard errors subtracted for the lower-confidence ratio
ROUND = 1e-9     # rounding allowance for deterministic checks


@dataclass
class Check:
    """Accumulates (measured, standard error, bound) triples for one (statement, family) row."""

    statement: str
    family: str
    configs: set = field(default_factory=set)
    ratio: float = -math.inf
    ratio_lo: float = -math.inf
    where: str = ""

    def add(self, config: str, measured, bound, se=0.0) -> None:
        measured, bound, se = (np.broadcast_to(np.asarray(v, float), np.broadcast(measured, bound, se).shape)
                               for v in (measured, bound, se))
        if np.any(bound <= 0) or not np.all(np.isfinite(bound)):
            raise ValueError(f"{self.statement}/{self.family}: bound must be positive and finite")
        r, r_lo = measured / bound, (measured - Z * se) / bound
        self.configs.add(config)
        k = int(np.argmax(r_lo))
        if r_lo.flat[k] > self.ratio_lo:
            self.ratio_lo, self.where = float(r_lo.flat[k]), config
        self.ratio = max(self.ratio, float(r.max()))

    @property
    def passed(self) -> bool:
        return self.ratio_lo <= 1 + ROUND

    def row(self) -> dict:
        return {"statement": self.statement, "family": self.family, "configs": len(self.configs),
                "max_ratio": self.ratio, "max_ratio_lower_conf": self.ratio_lo, "passed": self.passed,
                "worst_config": self.where}


class Checks(dict):
    def get_check(self, statement: str, family: str) -> Check:
        key = (statement, family)
        if key not in self:
            self[key] = Check(statement, family)
        return self[key]


# -- families and grids -----------------------------------------------------------------------------
def families(quick: bool) -> dict[str, list[FiniteSumProblem]]:
    """The instances verified (n, d_x vary; the ramp uses eps = 0.25 so its constants are eps-free)."""
    if quick:
        return {"hyb": [make("hyb", n=4, dx=6, dy=4, seed=0)],
                "ramp": [make("ramp", eps=0.25, dx=6, n=2)],
                "quadratic": [make("quadratic", n=4, dx=6, dy=4, seed=0)]}
    return {"hyb": [make("hyb", n=n, dx=dx, dy=4, seed=s) for (n, dx, s) in ((4, 6, 0), (8, 20, 1), (2, 3, 2))],
            "ramp": [make("ramp", eps=0.25, dx=dx, n=n) for (n, dx) in ((2, 6), (4, 20))],
            "quadratic": [make("quadratic", n=n, dx=dx, dy=4, seed=s) for (n, dx, s) in ((4, 6, 0), (8, 20, 1))]}


def tag(p: FiniteSumProblem, **kw) -> str:
    extra = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items())
    return f"n={p.n},dx={p.dx}" + ("," + extra if extra else "")


def sample_points(p: FiniteSumProblem, batch: int, gen: torch.Generator):
    """Points where the constants are exercised: the family's own sampler, else N(0, 3^2) around z_0."""
    if hasattr(p, "sample_points"):
        return p.sample_points(batch, gen)
    x0, y0 = p.initial_point()
    x = 3 * torch.randn(batch, p.dx, generator=gen, dtype=DTYPE)
    y = 3 * torch.randn(batch, p.dy, generator=gen, dtype=DTYPE)
    x[: batch // 4] += x0          # a quarter of them on the ramp far from 0
    return x, y


def gap(p: FiniteSumProblem) -> float:
    """Certified Delta = F(z_0) - F_lower."""
    return p.initial_gap()


def y_certificate(p: FiniteSumProblem) -> HGSConstants:
    """The (L0, L1) certificate where a family has one with L1 > 0 (HYB), else its constants."""
    return p.constants_l0l1() if hasattr(p, "constants_l0l1") else p.constants()


# -- deterministic pair checks: Prop. 1, Lemma 1, (A3), Lemma 3 ------------------------------------------
def check_pairs(checks: Checks, fam: str, p: FiniteSumProblem, npts: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    c, cc = p.constants(), y_certificate(p)
    x, y = sample_points(p, npts, gen)
    # separations from 1e-4 to 3 (log-uniform); for the (L0, L1) check keep L1|dy| <= 1
    scale = torch.exp(torch.empty(npts, 1, dtype=DTYPE).uniform_(math.log(1e-4), math.log(3.0), generator=gen))
    dx_ = scale * torch.randn(npts, p.dx, generator=gen, dtype=DTYPE) / math.sqrt(p.dx)
    dy_ = scale * torch.randn(npts, p.dy, generator=gen, dtype=DTYPE) / math.sqrt(p.dy)
    if hasattr(p, "radius"):        # quadratic: stay in the certified ball for (A3)
        z = torch.cat([x + dx_, y + dy_], -1)
        keep = z.norm(dim=-1) <= p.radius
        x, y, dx_, dy_ = x[keep], y[keep], dx_[keep], dy_[keep]
    ndx, ndy = dx_.norm(dim=-1), dy_.norm(dim=-1)
    cfg = tag(p)
    for j in range(p.n):
        jj = torch.tensor(j)
        gx0, gy0 = p.grad(jj, x, y)
        gx1, gy1 = p.grad(jj, x + dx_, y + dy_)
        lhs_x, lhs_y = (gx1 - gx0).norm(dim=-1), (gy1 - gy0).norm(dim=-1)
        checks.get_check("Prop. 1 (H1)", fam).add(cfg, lhs_x.numpy(), (c.L_x * ndx + c.L_c * ndy).numpy() + 1e-300)
        ok = cc.L1 * ndy <= 1
        rhs2 = torch.tensor([phi(float(t)) for t in (cc.L1 * ndy[ok])], dtype=DTYPE) * (
            cc.L_c * ndx[ok] + (cc.L0 + cc.L1 * gy0[ok].norm(dim=-1)) * ndy[ok])
        checks.get_check("Prop. 1 (H2)+phi", fam).add(cfg + f",L1={cc.L1:.3g}", lhs_y[ok].numpy(), rhs2.numpy() + 1e-300)
        for cert in {c, cc}:
            checks.get_check("Lemma 1(ii) global L_y", fam).add(
                cfg + f",L1={cert.L1:.3g}", lhs_y.numpy(), (cert.L_c * ndx + cert.L_y * ndy).numpy() + 1e-300)
        checks.get_check("(A3) gradient bounds", fam).add(cfg, gx0.norm(dim=-1).numpy(), c.G_x)
        checks.get_check("(A3) gradient bounds", fam).add(cfg, gy0.norm(dim=-1).numpy(), c.G_y)
        f0, f1 = p.value(jj, x, y), p.value(jj, x + dx_, y + dy_)
        lin = (gx0 * dx_).sum(-1) + (gy0 * dy_).sum(-1)
        quad = 0.5 * (c.L_hat_x * ndx**2 + c.L_hat_y * ndy**2)
        # compare the remainder only where it is above rounding of f (|f| * 1e-13)
        big = quad > 1e-10 * (1 + f0.abs())
        checks.get_check("Lemma 3 block descent", fam).add(cfg, (f1 - f0 - lin)[big].numpy(), quad[big].numpy())


# -- Lemma 2 on family components -----------------------------------------------------------------
def check_estimator(checks: Checks, fam: str, p: FiniteSumProblem, R: int, npts: int, mus, seed: int) -> None:
    from hybridtheory.algorithm import ZOSettings, materialize_estimate, zo_coefficients
    gen = torch.Generator().manual_seed(seed)
    c = p.constants()
    xs, ys = sample_points(p, npts, gen)
    if hasattr(p, "radius"):
        xs, ys = xs / 2, ys / 2      # keep x +- mu u inside the ball
    d = p.dx
    for k in range(npts):
        j = torch.tensor(k % p.n)
        a = p.grad(j, xs[k], ys[k])[0]
        a2 = float(a.square().sum())
        for law in ("sphere", "gaussian"):
            for mu in mus:
                x = xs[k].expand(R, d).clone()
                y = ys[k].expand(R, p.dy)
                st = ZOSettings(mu=mu, law=law, batch_dims=1, dtype=DTYPE)
                recs = zo_coefficients([x], lambda: p.value(j, x, y), st, step_seed=seed * 1000 + k)
                g = materialize_estimate([x], recs)[0]
                cfg = tag(p, law=law, mu=mu)
                sq = g.square().sum(-1)
                s_pt = (2 * d * a2 + d**2 * c.L_x**2 * mu**2 / 2 if law == "sphere"
                        else 2 * (d + 2) * a2 + (c.L_x * mu) ** 2 * d * (d + 2) * (d + 4) / 2)
                checks.get_check("Lemma 2(c) second moment", fam).add(
                    cfg, float(sq.mean()), s_pt, float(sq.std()) / math.sqrt(R))
                # Lemma 2(b) is about grad f_mu - grad f with grad f_mu = E grad f(x + mu v) (v uniform in the
                # ball for the sphere law, Gaussian otherwise); sampling exact gradients at x + mu v has noise
                # O(L mu / sqrt(R)), far below the estimator's O(sqrt(d) |a| / sqrt(R)), so the check has teeth.
                v = torch.randn(R, d, generator=gen, dtype=DTYPE)
                if law == "sphere":
                    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(R, 1, generator=gen, dtype=DTYPE) ** (1 / d)
                gv = p.grad(j, xs[k] + mu * v, ys[k].expand(R, p.dy))[0]
                noise = math.sqrt(float(gv.var(0).sum()) / R)
                beta = bounds.beta_mu(c, d, mu, law)
                checks.get_check("Lemma 2(b) bias", fam).add(cfg, float((gv.mean(0) - a).norm()), beta, noise)
                if law == "sphere":
                    checks.get_check("Lemma 2(d) a.s. sphere", fam).add(
                        cfg, g.norm(dim=-1).numpy(), d * (math.sqrt(a2) + c.L_x * mu))


# -- one epoch from an anchor: Lemma 4 and Theorem 1 (1) ------------------------------------------
def one_epoch(p: FiniteSumProblem, x0, y0, cfg: RunConfig) -> dict:
    """One epoch of HZF-RR from (x0, y0) with cfg.replicates replicates (the runner's seeds and settings).

    Returns the per-step quantities of Lemma 4 and F(z_{t+1})."""
    R, n = cfg.replicates, p.n
    state = initial_state(p, cfg)
    state.x.copy_(x0.expand_as(state.x))
    state.y.copy_(y0.expand_as(state.y))
    xt, yt = state.x.clone(), state.y.clone()
    groups, zo = make_groups(cfg, state), zo_settings(cfg)
    order = EpochSampler(n, cfg.seed, (R,)).order(0)
    dx_sq, dy_norm = torch.zeros(n + 1, R, dtype=DTYPE), torch.zeros(n + 1, R, dtype=DTYPE)
    ex = torch.zeros(R, p.dx, dtype=DTYPE)
    ey = torch.zeros(R, p.dy, dtype=DTYPE)
    N = torch.zeros(R, p.dx, dtype=DTYPE)
    max_norm = torch.cat([xt, yt], -1).norm(dim=-1)
    with torch.no_grad():
        for i in range(n):
            j = order[:, i]
            gxi, gyi = p.grad(j, state.x, state.y)
            gx0, gy0 = p.grad(j, xt, yt)
            ex += gxi - gx0
            ey += gyi - gy0
            x_before = state.x.clone()
            hybrid_step(groups, p.oracle(j, state.x, state.y), zo, step_seed(cfg, 0, i, n), fo_point=cfg.fo_point)
            g = (x_before - state.x) / cfg.eta_x          # the ZO estimate used by this step
            N += g - gxi                                     # = xi_i + b_i; b_i = 0 on quadratics (central)
            dx_sq[i + 1] = (state.x - xt).square().sum(-1)
            dy_norm[i + 1] = (state.y - yt).norm(dim=-1)
            max_norm = torch.maximum(max_norm, torch.cat([state.x, state.y], -1).norm(dim=-1))
    return {"dx_sq": dx_sq, "dy": dy_norm, "ex_sq": (ex / n).square().sum(-1), "ey_sq": (ey / n).square().sum(-1),
            "N_sq": (N / n).square().sum(-1), "F1": p.full_value(state.x, state.y), "max_norm": max_norm}


def step_grid(p: FiniteSumProblem, quick: bool):
    cx, cy = bounds.step_caps(p.constants(), p.n)
    scales = (1.0, 0.1) if quick else (1.0, 0.3, 0.1)
    return [(s * cx, s * cy, s) for s in scales]


def anchors(p: FiniteSumProblem, k: int, gen: torch.Generator):
    x0, y0 = p.initial_point()
    out = [(x0, y0)]
    xs, ys = sample_points(p, k, gen)
    if hasattr(p, "radius"):
        xs, ys = xs / 2, ys / 2
    out += [(xs[i], ys[i]) for i in range(k)]
    return out


def check_epoch(checks: Checks, fam: str, p: FiniteSumProblem, R: int, mus, quick: bool, seed: int) -> None:
    c, n, d = p.constants(), p.n, p.dx
    gen = torch.Generator().manual_seed(seed)
    for a_idx, (x0, y0) in enumerate(anchors(p, 1 if quick else 2, gen)):
        gxs, gys = (float(v) for v in p.grad_norm_sq(x0, y0))
        F0 = float(p.full_value(x0, y0))
        for eta_x, eta_y, s in step_grid(p, quick):
            for law in ("sphere", "gaussian"):
                for mu in mus:
                    cfg = RunConfig(method="hybrid", eta_x=eta_x, eta_y=eta_y, mu=mu, law=law, epochs=1,
                                    replicates=R, seed=seed + 17 * a_idx)
                    out = one_epoch(p, x0, y0, cfg)
                    tg = tag(p, law=law, mu=mu, step=s, anchor=a_idx)
                    s2 = bounds.sigma_sq(c, d, mu, law)
                    i = torch.arange(1, n + 1, dtype=DTYPE)
                    m = out["dx_sq"][1:]
                    checks.get_check("Lemma 4(a) x drift", fam).add(
                        tg, m.mean(1).numpy(), (2 * eta_x**2 * (i**2 * c.G_x**2 + i * s2)).numpy(),
                        (m.std(1) / math.sqrt(R)).numpy())
                    checks.get_check("Lemma 4(b) y drift", fam).add(
                        tg, out["dy"][1:].max(1).values.numpy(), (eta_y * i * c.G_y).numpy())
                    Ex, Ey = bounds.drift_terms(c, n, d, eta_x, eta_y, mu, law)
                    beta = bounds.beta_mu(c, d, mu, law)
                    Ex_drift = (2 / 3) * (Ex - 3 * beta**2)
                    for key, bound, name in (("ex_sq", Ex_drift, "Lemma 4(c) e^x (drift part)"),
                                             ("ey_sq", Ey, "Lemma 4(c) e^y")):
                        v = out[key]
                        if bound > 0:
                            checks.get_check(name, fam).add(tg, float(v.mean()), bound, float(v.std()) / math.sqrt(R))
                    if fam == "quadratic" and law == "sphere":   # central differences are exact: N is the noise
                        v = out["N_sq"]
                        checks.get_check("Lemma 4(d) noise N", fam).add(tg, float(v.mean()), s2 / n,
                                                                      float(v.std()) / math.sqrt(R))
                    lhs = out["F1"] - F0 + (n / 4) * (eta_x * gxs + eta_y * gys)
                    err = bounds.one_epoch_rhs(c, n, d, eta_x, eta_y, mu, gxs, gys, law) \
                        + (n / 4) * (eta_x * gxs + eta_y * gys)
                    checks.get_check("Theorem 1 (1) one epoch", fam).add(
                        tg, float(lhs.mean()), err, float(lhs.std()) / math.sqrt(R))
                    if hasattr(p, "radius"):
                        checks.get_check("(A3) region: max norm(z)/R", fam).add(tg, float(out["max_norm"].max()), p.radius)


# -- Theorem 1 (2): whole runs through the runner ---------------------------------------------------
def check_theorem1(checks: Checks, fam: str, p: FiniteSumProblem, R: int, Ts, mus, quick: bool, seed: int) -> None:
    c, n, d = p.constants(), p.n, p.dx
    delta = gap(p)
    for eta_x, eta_y, s in step_grid(p, quick):
        for law in ("sphere", "gaussian"):
            for mu in mus:
                Tmax = max(Ts)
                cfg = RunConfig(method="hybrid", eta_x=eta_x, eta_y=eta_y, mu=mu, law=law, epochs=Tmax,
                                replicates=R, seed=seed)
                if hasattr(p, "radius"):
                    # run epoch by epoch to certify the run stayed in the ball where G_x, G_y hold
                    state, gsx, gsy, worst = None, [], [], 0.0
                    for e in range(Tmax):
                        tr = run(p, replace(cfg, epochs=e + 1), state=state)
                        state = tr.state
                        gsx.append(tr.grad_sq_x[0]), gsy.append(tr.grad_sq_y[0])
                        worst = max(worst, float(torch.cat([state.x, state.y], -1).norm(dim=-1).max()))
                    gsx, gsy = np.stack(gsx), np.stack(gsy)
                    checks.get_check("(A3) region: max norm(z)/R", fam).add(tag(p, law=law, mu=mu, step=s), worst, p.radius)
                else:
                    tr = run(p, cfg)
                    gsx, gsy = tr.grad_sq_x, tr.grad_sq_y
                for T in Ts:
                    avg = (eta_x * gsx[:T] + eta_y * gsy[:T]).mean(0)
                    W = bounds.theorem1_rhs(c, n, d, eta_x, eta_y, mu, T, delta, law)
                    checks.get_check("Theorem 1 (2) ergodic", fam).add(
                        tag(p, law=law, mu=mu, step=s, T=T), float(avg.mean()), W, float(avg.std()) / math.sqrt(R))


# -- Theorem 2 (2): heterogeneity instead of bounded gradients (proofs/07-theorem2.md) -------------------
def check_theorem2(checks: Checks, R: int, Ts, quick: bool, seed: int) -> None:
    from hybridtheory.objectives import make
    probs = [make("hetero", eps=0.3, varsigma=1.0, dx=3), make("hetero", eps=0.3, varsigma=0.0, dx=3),
             make("ramp", eps=0.3, dx=3, n=2)]
    if not quick:
        probs += [make("hetero", eps=0.5, varsigma=0.3, dx=8, n=4), make("ramp", eps=0.5, dx=6, n=4, beta=0.5)]
    gen = torch.Generator().manual_seed(seed)
    for p in probs:
        fam = p.name
        c = p.constants()
        # (V): the certified heterogeneity against its value at random points (exact for these families)
        x, y = sample_points(p, 200, gen)
        gx, gy = p.grad(torch.arange(p.n)[:, None], x.unsqueeze(0), y.unsqueeze(0))
        for blk, g, v in (("x", gx, c.varsigma_x_sq), ("y", gy, c.varsigma_y_sq)):
            if v:
                het = (g - g.mean(0)).square().sum(-1).mean(0)
                checks.get_check(f"(V) heterogeneity {blk}", fam).add(tag(p), float(het.max()), v)
        delta = gap(p)
        laws = ("sphere", "rademacher") if quick else ("sphere", "gaussian", "rademacher")
        for law in laws:
            for q in ((1,) if quick else (1, 3)):
                cx, cy = bounds.theorem2_caps(c, p.n, p.dx, q, law)
                for s in ((1.0,) if quick else (1.0, 0.3)):
                    cfg = RunConfig(method="hybrid", eta_x=s * cx, eta_y=s * cy, mu=0.05, law=law, epochs=max(Ts),
                                    replicates=R, seed=seed, queries=q)
                    tr = run(p, cfg)
                    for T in Ts:
                        avg = (s * cx * tr.grad_sq_x[:T] + s * cy * tr.grad_sq_y[:T]).mean(0)
                        W = bounds.theorem2_rhs(c, p.n, p.dx, s * cx, s * cy, 0.05, T, delta, c.varsigma_x_sq,
                                                c.varsigma_y_sq, q, law)
                        checks.get_check("Theorem 2 (2) ergodic", fam).add(
                            tag(p, law=law, q=q, step=s, T=T), float(avg.mean()), W, float(avg.std()) / math.sqrt(R))


# -- Proposition 5: the ramp under Corollary 1's schedule ------------------------------------------------
def ramp_lower_bound(eps: float, delta: float, eta_x: float, n: int, s2: float) -> tuple[int, float]:
    r"""(T_low, p) of ``proofs/05-ramp.md``: with probability >= 1 - p no iterate has x_1 <= 1 (hence
    ||grad F|| > sqrt(2) eps) during the first T_low epochs; T_low = floor(k*/n), k* = floor((X0 - 1)/(4 eps eta_x)),
    p = 4 eta_x^2 k* s2 / (X0 - 1)^2 with s2 >= E g_1^2."""
    X0 = math.sqrt((1 + delta / (2 * eps)) ** 2 - 1)
    k_star = math.floor((X0 - 1) / (4 * eps * eta_x))
    return k_star // n, 4 * eta_x**2 * k_star * s2 / (X0 - 1) ** 2


def check_ramp(checks: Checks, R: int, eps_grid, seed: int, log=print) -> None:
    for eps in eps_grid:
        p = make("ramp", eps=eps, dx=6, n=2)
        c = p.constants()
        sch = bounds.corollary1_schedule(c, p.n, p.dx, eps, gap(p))
        T_low, pfail = ramp_lower_bound(eps, gap(p), sch.eta_x, p.n, sch.sigma_sq)
        epochs = int(5 * T_low)
        cfg = RunConfig(method="hybrid", eta_x=sch.eta_x, eta_y=sch.eta_y, mu=sch.mu, epochs=epochs,
                        replicates=R, seed=seed, stop_eps=eps)
        tr = run(p, cfg, record_every=max(1, epochs // 50))
        hit = tr.stopped_at.astype(float)
        early = float(np.mean((hit >= 0) & (hit <= T_low)))
        tg = tag(p, eps=eps, T_low=T_low, T_bound=sch.T)
        # fraction of replicates at ||grad F|| <= eps by epoch T_low vs the proved failure probability p
        checks.get_check("Prop. 5 ramp: early hits", "ramp").add(tg, early, max(pfail, 1e-300),
                                                                  math.sqrt(max(early * (1 - early), 1 / R) / R))
        reached = hit[hit >= 0]
        T_emp = float(np.mean(reached)) if reached.size == R else float("inf")
        # the proved lower bound T_low never exceeds the measured hitting time
        checks.get_check("Prop. 5 ramp: T_low/T_emp", "ramp").add(tg, T_low, T_emp if math.isfinite(T_emp) else 1e300)
        checks.get_check("Cor. 1 ramp: T_emp/T_bound", "ramp").add(tg, T_emp, float(sch.T))
        log(f"  ramp eps={eps:g}: T_bound={sch.T} (binding {sch.binding}), T_low={T_low}, p={pfail:.3g}, "
            f"T_emp={T_emp:.0f} ({reached.size}/{R} reached), early hits={early:.3g}, "
            f"T_low/T_emp={T_low / T_emp:.3g}, T_emp/T_bound={T_emp / sch.T:.4g}")


def check_corollary1_ramp(checks: Checks, R: int, eps: float, seed: int, log=print) -> None:
    """Corollary 1's conclusion itself: run T(eps) epochs with its schedule, (1/T) sum_t ||grad F(z_t)||^2 <= eps^2."""
    p = make("ramp", eps=eps, dx=6, n=2)
    sch = bounds.corollary1_schedule(p.constants(), p.n, p.dx, eps, gap(p))
    cfg = RunConfig(method="hybrid", eta_x=sch.eta_x, eta_y=sch.eta_y, mu=sch.mu, epochs=sch.T, replicates=R, seed=seed)
    tr = run(p, cfg)
    avg = tr.grad_sq[: sch.T].mean(0)
    checks.get_check("Cor. 1 stationarity (ramp)", "ramp").add(
        tag(p, eps=eps, T=sch.T), float(avg.mean()), eps**2, float(avg.std()) / math.sqrt(R))
    log(f"  Corollary 1 on the ramp, eps={eps:g}: T={sch.T}, (1/T) sum ||grad F||^2 = {avg.mean():.4g} "
        f"(+- {avg.std() / math.sqrt(R):.2g}) vs eps^2 = {eps**2:.4g}")


# -- driver ---------------------------------------------------------------------------------------------
def verify(quick: bool = False, seed: int = 0, log=print) -> list[dict]:
    checks = Checks()
    R_mc = 4000 if quick else 20000
    R_epoch = 512 if quick else 4096
    R_run = 64 if quick else 128
    mus = (0.05,) if quick else (1e-3, 0.05, 0.5)
    mus_run = (0.05,) if quick else (1e-3, 0.5)
    Ts = (10, 50) if quick else (10, 100, 300)
    for fam, problems in families(quick).items():
        for k, p in enumerate(problems):
            t0 = time.time()
            check_pairs(checks, fam, p, 2000 if quick else 20000, seed + k)
            check_estimator(checks, fam, p, R_mc, 2 if quick else 4, mus, seed + k)
            check_epoch(checks, fam, p, R_epoch, mus, quick, seed + k)
            check_theorem1(checks, fam, p, R_run, Ts, mus_run, quick, seed + k)
            log(f"  {fam} {tag(p)}: {time.time() - t0:.1f}s")
    t0 = time.time()
    check_theorem2(checks, R_run, Ts, quick, seed)
    log(f"  Theorem 2: {time.time() - t0:.1f}s")
    if not quick:
        t0 = time.time()
        check_ramp(checks, 64, (0.45, 0.4, 0.35), seed, log)
        log(f"  ramp lower bound: {time.time() - t0:.1f}s")
        t0 = time.time()
        check_corollary1_ramp(checks, 16, 0.45, seed, log)
        log(f"  Corollary 1 on the ramp: {time.time() - t0:.1f}s")
    return [ch.row() for ch in checks.values()]


def table(rows: list[dict]) -> str:
    head = "| statement | family | configurations | largest measured/bound | largest lower-conf. ratio | pass |\n" \
           "|---|---|---:|---:|---:|:---:|\n"
    return head + "".join(
        f"| {r['statement']} | {r['family']} | {r['configs']} | {r['max_ratio']:.4g} | "
        f"{r['max_ratio_lower_conf']:.4g} | {'yes' if r['passed'] else '**NO**'} |\n" for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small grid (the test suite runs this)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows as JSON to this path")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    rows = verify(args.quick, args.seed, log=lambda s: print(s, file=sys.stderr))
    print(table(rows))
    print(f"{sum(r['passed'] for r in rows)}/{len(rows)} rows pass; Z = {Z:g} standard errors; "
          f"{time.time() - t0:.0f}s; {'quick' if args.quick else 'full'} grid; seed {args.seed}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"quick": args.quick, "seed": args.seed, "rows": rows}, indent=1))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
