r"""Numerical checks of hybrid generalized smoothness (proofs/01-hgs.md, proofs/03-theorem1.md) and local-constant estimates.

Two tools:

1. **Certificate checks** for any :class:`~hybridtheory.objectives.base.FiniteSumProblem`:

   * :func:`check_pairs`: on a batch of point pairs :math:`(z, z')` and components :math:`j`, the worst
     ratio of left to right side of

     .. math::
        \text{(H1)}\quad \|\nabla_x f_j(z')-\nabla_x f_j(z)\| &\le L_x\|\Delta x\| + L_c\|\Delta y\| \\
        \text{(H2)}\quad \|\nabla_y f_j(z')-\nabla_y f_j(z)\| &\le \phi\,[L_c\|\Delta x\| + (L_0+L_1\|\nabla_y f_j(z)\|)\|\Delta y\|]

     with :math:`\phi = \phi(L_1\|\Delta y\|) = (e^t-1)/t` when ``constants().form == "hessian"``
     (Proposition 1) and :math:`\phi = 1` for ``"first_order"``; pairs with :math:`L_1\|\Delta y\| > 1` are
     outside Definition 1 and are skipped (counted). Both orientations of every pair are checked
     (each endpoint serves as the anchor :math:`z`). It also returns the gradient-bound ratios
     :math:`\|\nabla_x f_j\|/G_x`, :math:`\|\nabla_y f_j\|/G_y` (A3) at all endpoints.
   * :func:`check_hessian`: the pointwise Hessian-form ratios :math:`\|H_{xx}\|/L_x`, :math:`\|H_{xy}\|/L_c`,
     :math:`\|H_{yy}\|/(L_0+L_1\|\nabla_y f\|)` by autograd (for maximisers / tightness and small problems).
   * :func:`random_pairs`: pairs in the region where a problem's constants are certified (the
     problem's ``sample_points`` if it has one; the second point is a convex combination, so convex
     regions are respected).

   A certificate is *sound* on the sample if every ratio is :math:`\le 1` up to rounding.

2. **Empirical local constants** for objectives without a certificate (e.g. an LLM loss with two parameter
   blocks): :func:`estimate_local_constants` samples base points in a ball around :math:`z_0` and, at each,
   runs a few finite-difference power-iteration steps per block, returning the largest observed ratios
   :math:`\|\Delta\nabla_x\|/\|\Delta x\|` (:math:`\hat L_x`), cross ratios (:math:`\hat L_c`) and
   :math:`\|\Delta\nabla_y\|/\|\Delta y\|` (:math:`\hat L_y`), plus the largest gradient norms. These are
   *lower* estimates of the local suprema (a maximum over sampled pairs), not certificates.

3. **Pointwise block spectra** from exact Hessian-vector products (double backward), for losses too large
   for :func:`check_hessian`'s dense Hessians: :func:`block_power_iteration` (top eigenvalue of ``H_xx`` or
   ``H_yy``), :func:`cross_block_norm` (``||H_xy||``) and :func:`hutchinson_trace` (``tr H_xx``; over the
   top eigenvalue it is the effective rank of the block). Built on :func:`autograd_hvp_fn`.

Command line: ``python -m hybridtheory.hgs_check --report`` prints soundness (max observed ratio per
constant per family) and tightness (ratio at the documented maximisers) for every family built here.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .assumptions import HGSConstants
from .objectives.base import DTYPE, FiniteSumProblem
from .errors import OneLineParser, one_line_errors, positive_int

# -- 1. certificate checks -------------------------------------------------------------------------


def _phi_t(t: torch.Tensor) -> torch.Tensor:
    """phi(t) = (e^t - 1)/t with phi(0) = 1, elementwise and stable (expm1)."""
    safe = torch.where(t > 0, t, torch.ones_like(t))
    return torch.where(t > 0, torch.expm1(safe) / safe, torch.ones_like(t))


def _ratio(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """lhs / rhs with 0/0 = 0 and (>0)/0 = inf (a violation of a zero bound)."""
    out = lhs / torch.where(rhs > 0, rhs, torch.ones_like(rhs))
    return torch.where(rhs > 0, out, torch.where(lhs > 0, torch.full_like(lhs, math.inf), torch.zeros_like(lhs)))


@dataclass
class PairCheck:
    """Worst ratios found by :func:`check_pairs` (each <= 1 means the certificate held on the sample).

    ``argmax_h1`` / ``argmax_h2`` hold the worst pair as ``{"j", "x", "y", "x2", "y2"}`` (anchor first).
    ``gx`` / ``gy`` are ``nan`` when the problem certifies no gradient bound.
    """

    h1: float
    h2: float
    gx: float
    gy: float
    n_pairs: int
    n_outside_radius: int
    argmax_h1: dict = field(default_factory=dict, repr=False)
    argmax_h2: dict = field(default_factory=dict, repr=False)

    def worst(self) -> float:
        return max(v for v in (self.h1, self.h2, self.gx, self.gy) if not math.isnan(v))

    def sound(self, rtol: float = 1e-9) -> bool:
        return self.worst() <= 1 + rtol


def check_pairs(problem: FiniteSumProblem, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                x2: torch.Tensor, y2: torch.Tensor, constants: HGSConstants | None = None) -> PairCheck:
    """Worst (H1)/(H2) and gradient-bound ratios over the pairs ``((x, y), (x2, y2))`` for components ``j``.

    Shapes: ``x, x2: (N, dx)``, ``y, y2: (N, dy)``, ``j`` broadcastable to ``(N,)``.
    ``constants`` defaults to ``problem.constants()`` (pass another certificate to test it).
    """
    c = problem.constants() if constants is None else constants
    j = torch.as_tensor(j).expand(x.shape[0])
    gx1, gy1 = problem.grad(j, x, y)
    gx2, gy2 = problem.grad(j, x2, y2)
    dxn = (x2 - x).norm(dim=-1)
    dyn = (y2 - y).norm(dim=-1)
    inside = c.L1 * dyn <= 1.0
    lhs1 = (gx2 - gx1).norm(dim=-1)
    lhs2 = (gy2 - gy1).norm(dim=-1)
    rhs1 = c.L_x * dxn + c.L_c * dyn
    phi = _phi_t(c.L1 * dyn) if c.form == "hessian" else torch.ones_like(dyn)
    # both orientations: anchor z (gradient gy1) and anchor z' (gradient gy2)
    r1 = torch.where(inside, _ratio(lhs1, rhs1), torch.zeros_like(lhs1))
    r2 = torch.stack([_ratio(lhs2, phi * (c.L_c * dxn + (c.L0 + c.L1 * g.norm(dim=-1)) * dyn)) for g in (gy1, gy2)])
    r2 = torch.where(inside, r2, torch.zeros_like(r2))
    r2max, orient = r2.max(0)

    def pick(r: torch.Tensor, swap: torch.Tensor | None) -> tuple[float, dict]:
        if r.numel() == 0:
            return 0.0, {}
        k = int(torch.argmax(r))
        a, b = ((x, y), (x2, y2))
        if swap is not None and bool(swap[k]):
            a, b = b, a
        return float(r[k]), {"j": int(j[k]), "x": a[0][k].clone(), "y": a[1][k].clone(),
                             "x2": b[0][k].clone(), "y2": b[1][k].clone()}

    h1, arg1 = pick(r1, None)
    h2, arg2 = pick(r2max, orient.bool())

    def gratio(gs, G):
        if G is None:
            return math.nan
        norms = torch.cat([g.norm(dim=-1).reshape(-1) for g in gs])
        if norms.numel() == 0:
            return 0.0
        return float(_ratio(norms, torch.full_like(norms, G)).max())

    return PairCheck(h1=h1, h2=h2, gx=gratio((gx1, gx2), c.G_x), gy=gratio((gy1, gy2), c.G_y),
                     n_pairs=int(x.shape[0]), n_outside_radius=int((~inside).sum()),
                     argmax_h1=arg1, argmax_h2=arg2)


def random_pairs(problem: FiniteSumProblem, n_pairs: int, generator: torch.Generator,
                 scale: float = 2.0, t_min: float = 1e-3):
    """``(j, x, y, x2, y2)``: ``n_pairs`` pairs in the problem's certified region.

    First points come from ``problem.sample_points(n, generator)`` when the problem has it, else
    ``z0 + scale * N(0, I)`` around the initial point. The second point is ``z + t (w - z)`` with ``w``
    another sample and ``t`` log-uniform in ``[t_min, 1]`` (near and far pairs; convex combinations stay in
    a convex region). When ``L1 > 0`` the y displacement is shrunk to ``L1 ||dy|| <= U(0, 1]`` so every
    pair lies within Definition 1's radius.
    """
    def draw(n):
        if hasattr(problem, "sample_points"):
            return problem.sample_points(n, generator)
        x0, y0 = problem.initial_point((n,))
        return (x0 + scale * torch.randn(x0.shape, generator=generator, dtype=DTYPE),
                y0 + scale * torch.randn(y0.shape, generator=generator, dtype=DTYPE))

    x, y = draw(n_pairs)
    wx, wy = draw(n_pairs)
    t = torch.exp(math.log(t_min) * torch.rand(n_pairs, 1, generator=generator, dtype=DTYPE))
    dx, dy = t * (wx - x), t * (wy - y)
    L1 = problem.constants().L1
    if L1 > 0:
        u = torch.rand(n_pairs, 1, generator=generator, dtype=DTYPE)
        dyn = dy.norm(dim=-1, keepdim=True)
        dy = dy * torch.where(L1 * dyn > u, u / (L1 * dyn).clamp_min(1e-300), torch.ones_like(dyn))
    j = torch.randint(0, problem.n, (n_pairs,), generator=generator)
    return j, x, y, x + dx, y + dy


def check_hessian(problem: FiniteSumProblem, j: Sequence[int], x: torch.Tensor, y: torch.Tensor,
                  constants: HGSConstants | None = None) -> dict[str, float]:
    """Max pointwise Hessian-form ratios over points ``(j[k], x[k], y[k])`` (autograd; small problems).

    Returns ``{"L_x": max ||H_xx||/L_x, "L_c": max ||H_xy||/L_c, "L_y": max ||H_yy||/(L0 + L1||grad_y||)}``
    (a block of size zero gives 0; a zero constant with a nonzero block gives inf).
    """
    c = problem.constants() if constants is None else constants
    worst = {"L_x": 0.0, "L_c": 0.0, "L_y": 0.0}

    def norm2(m):
        return 0.0 if m.numel() == 0 else float(torch.linalg.matrix_norm(m, ord=2))

    def rat(a, b):
        return 0.0 if a == 0 else (math.inf if b == 0 else a / b)

    for k, jk in enumerate(j):
        Hxx, Hxy, Hyy = problem.hessian_blocks(int(jk), x[k], y[k])
        gy = problem.grad(torch.tensor(int(jk)), x[k], y[k])[1]
        worst["L_x"] = max(worst["L_x"], rat(norm2(Hxx), c.L_x))
        worst["L_c"] = max(worst["L_c"], rat(norm2(Hxy), c.L_c))
        worst["L_y"] = max(worst["L_y"], rat(norm2(Hyy), c.L0 + c.L1 * float(gy.norm())))
    return worst


CONSTANT_NAMES = ("L_x", "L_c", "L0", "L1", "G_x", "G_y", "varsigma_x_sq", "varsigma_y_sq")


def constant_ratios(problem: FiniteSumProblem, points: Sequence[tuple[int, torch.Tensor, torch.Tensor]],
                    constants: HGSConstants | None = None) -> dict[str, float]:
    """Per certified constant, the largest observed/certified ratio over unbatched points ``(j, x, y)``.

    Each constant is isolated from the others, so a ratio > 1/2 means that half the constant is violated
    at one of the points (the constant is within a factor 2 of tight), and a ratio near 1 that it is
    attained: ``L_x``: ||H_xx||/L_x; ``L_c``: ||H_xy||/L_c; ``L0``: (||H_yy|| - L1||grad_y f||)/L0; ``L1``:
    (||H_yy|| - L0)/(L1||grad_y f||); ``G_x``, ``G_y``: ||grad f||/G; ``varsigma_b_sq``: the heterogeneity
    (1/n) sum_i ||grad_b f_i - grad_b F||^2 at (x, y) over varsigma_b^2. Constants that are 0 or ``None``
    are left out (Hessian form; autograd, small problems only)."""
    c = problem.constants() if constants is None else constants
    worst = {k: -math.inf for k in CONSTANT_NAMES if getattr(c, k) not in (None, 0, 0.0)}

    def norm2(m):
        return 0.0 if m.numel() == 0 else float(torch.linalg.matrix_norm(m, ord=2))

    def upd(k, v):
        if k in worst:
            worst[k] = max(worst[k], v)

    for jk, x, y in points:
        Hxx, Hxy, Hyy = problem.hessian_blocks(int(jk), x, y)
        gx, gy = problem.grad(torch.tensor(int(jk)), x, y)
        hyy, ngy = norm2(Hyy), float(gy.norm())
        upd("L_x", norm2(Hxx) / c.L_x if c.L_x else 0.0)
        upd("L_c", norm2(Hxy) / c.L_c if c.L_c else 0.0)
        if c.L0:
            upd("L0", (hyy - c.L1 * ngy) / c.L0)
        if c.L1 and ngy > 0:
            upd("L1", (hyy - c.L0) / (c.L1 * ngy))
        if c.G_x:
            upd("G_x", float(gx.norm()) / c.G_x)
        if c.G_y:
            upd("G_y", ngy / c.G_y)
        if c.varsigma_x_sq or c.varsigma_y_sq:
            ax, ay = problem.grad(torch.arange(problem.n), x, y)
            if c.varsigma_x_sq:
                upd("varsigma_x_sq", float((ax - ax.mean(0)).square().sum(-1).mean()) / c.varsigma_x_sq)
            if c.varsigma_y_sq:
                upd("varsigma_y_sq", float((ay - ay.mean(0)).square().sum(-1).mean()) / c.varsigma_y_sq)
    return worst


# -- 2. empirical local constants -----------------------------------------------------------------

Block = list  # a parameter block: a list of tensors (a flat tensor is wrapped as [tensor])


@dataclass(frozen=True)
class LocalConstants:
    """Estimated local constants on a ball (maxima of observed ratios: lower estimates, not certificates)."""

    L_x: float
    L_c: float
    L_y: float
    G_x: float
    G_y: float
    n_points: int
    radius: float
    n_grad_calls: int


def _norm(block: Block) -> float:
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in block))


def _axpy(a: Block, alpha: float, b: Block) -> Block:
    return [ta + alpha * tb for ta, tb in zip(a, b)]


def _sub(a: Block, b: Block) -> Block:
    return [ta - tb for ta, tb in zip(a, b)]


def _randn_like(block: Block, generator: torch.Generator) -> Block:
    return [torch.randn(t.shape, generator=generator, dtype=t.dtype, device="cpu").to(t.device) for t in block]


def _scaled_to(block: Block, norm: float) -> Block:
    n = _norm(block)
    return [t * (norm / n) for t in block] if n > 0 else block


def problem_grad_fn(problem: FiniteSumProblem, j: int | None) -> Callable:
    """``grad_fn(x, y) -> (gx, gy)`` on flat tensors for component ``j`` of a problem (``None``: full F)."""
    if j is None:
        return problem.full_grad
    jt = torch.tensor(int(j))

    def grad_fn(x, y):
        return problem.grad(jt, x, y)
    return grad_fn


def autograd_grad_fn(loss_fn: Callable[[Block, Block], torch.Tensor]) -> Callable:
    """``grad_fn(x_list, y_list) -> (gx_list, gy_list)`` from a scalar loss ``loss_fn(x_list, y_list)``.

    The tensors are detached copies with ``requires_grad``; ``loss_fn`` must build the loss from them
    (for a model: e.g. ``torch.func.functional_call`` with the two blocks' tensors substituted).
    """
    def grad_fn(xs, ys):
        xs = [t.detach().requires_grad_(True) for t in xs]
        ys = [t.detach().requires_grad_(True) for t in ys]
        grads = torch.autograd.grad(loss_fn(xs, ys), xs + ys, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(xs + ys, grads)]
        return grads[: len(xs)], grads[len(xs):]
    return grad_fn


def _power_chain(g, xs: Block, ys: Block, gx: Block, gy: Block, gen: torch.Generator, h: float,
                 power_steps: int, move_x: bool) -> tuple[float, float]:
    """Finite-difference power iteration on the x block (``move_x``) or the y block.

    Returns (max own-block ratio ||d grad_own|| / h, max cross ratio ||d grad_other|| / h).
    """
    own_max = cross_max = 0.0
    d = _scaled_to(_randn_like(xs if move_x else ys, gen), h)
    for _ in range(power_steps):
        gx2, gy2 = g(_axpy(xs, 1.0, d), ys) if move_x else g(xs, _axpy(ys, 1.0, d))
        dgx, dgy = _sub(gx2, gx), _sub(gy2, gy)
        d_own, d_cross = (dgx, dgy) if move_x else (dgy, dgx)
        own_max, cross_max = max(own_max, _norm(d_own) / h), max(cross_max, _norm(d_cross) / h)
        if _norm(d_own) == 0:
            break
        d = _scaled_to(d_own, h)
    return own_max, cross_max


def estimate_local_constants(grad_fn: Callable, x0, y0, radius: float, n_points: int = 16,
                             pair_scale: float | None = None, power_steps: int = 3,
                             generator: torch.Generator | None = None, seed: int = 0,
                             component: int | None = None) -> LocalConstants:
    r"""Empirical local block constants on the ball :math:`\|z - z_0\| \le` ``radius``.

    Args:
        grad_fn: a :class:`FiniteSumProblem` (then ``component`` picks f_j; ``None`` uses the full F), or
            ``grad_fn(x, y) -> (gx, gy)``. If ``x0``/``y0`` are tensors it is called with tensors and
            must return tensors; if they are lists of tensors (e.g. two groups of model parameters) it is
            called with lists and must return lists of the same shapes (see :func:`autograd_grad_fn`,
            :func:`problem_grad_fn`). It must not modify its inputs.
        x0, y0: the centre (ZO block, FO block).
        radius: ball radius for the base points (joint norm over both blocks).
        n_points: base points (drawn as ``z0 + radius * U^(1/2) * v``, v a uniform unit direction).
        pair_scale: displacement norm of each finite difference (default ``radius / 10``, at most
            ``1e-2`` of the radius if radius is 0).
        power_steps: finite-difference power-iteration steps per block and base point: the next
            displacement follows the last gradient difference, which converges to the top singular
            direction of the block (symmetric blocks) or of :math:`H_{xy}H_{yx}` (the cross chain).
        generator / seed: randomness (an explicit generator; the global RNG is never used).

    Cost: at most ``n_points * (1 + 4 * power_steps)`` calls to ``grad_fn`` (the cross chain takes two per step).
    Returns a :class:`LocalConstants`: :math:`\hat L_x = \max\|\Delta\nabla_x\|/\|\Delta x\|` over x-only
    displacements, :math:`\hat L_c` = max of :math:`\|\Delta\nabla_y\|/\|\Delta x\|` and
    :math:`\|\Delta\nabla_x\|/\|\Delta y\|`, :math:`\hat L_y = \max\|\Delta\nabla_y\|/\|\Delta y\|` over y-only
    displacements, and the largest gradient norms seen.
    """
    if isinstance(grad_fn, FiniteSumProblem):
        grad_fn = problem_grad_fn(grad_fn, component)
    flat = isinstance(x0, torch.Tensor)
    xs0: Block = [x0] if flat else list(x0)
    ys0: Block = [y0] if flat else list(y0)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    h = pair_scale if pair_scale is not None else (radius / 10 if radius > 0 else 1e-2)
    calls = 0

    def g(xs, ys):
        nonlocal calls
        calls += 1
        gx, gy = grad_fn(xs[0], ys[0]) if flat else grad_fn(xs, ys)
        return ([gx], [gy]) if flat else (list(gx), list(gy))

    Lx = Lc = Ly = Gx = Gy = 0.0
    for _ in range(n_points):
        vx, vy = _randn_like(xs0, gen), _randn_like(ys0, gen)
        vn = math.sqrt(_norm(vx) ** 2 + _norm(vy) ** 2)
        r = radius * math.sqrt(float(torch.rand((), generator=gen, dtype=torch.float64)))
        xs = _axpy(xs0, r / vn, vx) if vn > 0 else xs0
        ys = _axpy(ys0, r / vn, vy) if vn > 0 else ys0
        gx, gy = g(xs, ys)
        Gx, Gy = max(Gx, _norm(gx)), max(Gy, _norm(gy))
        # block chains: power iteration on one block's displacement; the other block's gradient change
        # gives a cross-constant estimate for free (x first, then y: the generator draws stay in order)
        own, cross = _power_chain(g, xs, ys, gx, gy, gen, h, power_steps, move_x=True)
        Lx, Lc = max(Lx, own), max(Lc, cross)
        own, cross = _power_chain(g, xs, ys, gx, gy, gen, h, power_steps, move_x=False)
        Ly, Lc = max(Ly, own), max(Lc, cross)
        # cross chain: dx -> dgrad_y -> dy -> dgrad_x -> dx ...
        dxb = _scaled_to(_randn_like(xs, gen), h)
        for _ in range(power_steps):
            gy2 = g(_axpy(xs, 1.0, dxb), ys)[1]
            dgy = _sub(gy2, gy)
            Lc = max(Lc, _norm(dgy) / h)
            if _norm(dgy) == 0:
                break
            gx2 = g(xs, _axpy(ys, 1.0, _scaled_to(dgy, h)))[0]
            dgx = _sub(gx2, gx)
            Lc = max(Lc, _norm(dgx) / h)
            if _norm(dgx) == 0:
                break
            dxb = _scaled_to(dgx, h)
    return LocalConstants(L_x=Lx, L_c=Lc, L_y=Ly, G_x=Gx, G_y=Gy, n_points=n_points, radius=float(radius),
                          n_grad_calls=calls)


# -- 3. pointwise block spectra from Hessian-vector products -------------------------------------


def autograd_hvp_fn(loss_fn: Callable[[Block, Block], torch.Tensor]) -> Callable:
    """``hvp(xs, ys, vx, vy) -> (Hv_x, Hv_y)``: the exact Hessian-vector product of ``loss_fn(xs, ys)``.

    Double backward through the loss (no finite differences), on lists of tensors like
    :func:`autograd_grad_fn`. ``vx`` or ``vy`` may be ``None`` (a zero part of the vector).
    """
    def hvp(xs, ys, vx, vy):
        xs = [t.detach().requires_grad_(True) for t in xs]
        ys = [t.detach().requires_grad_(True) for t in ys]
        params = xs + ys
        vx = [torch.zeros_like(t) for t in xs] if vx is None else vx
        vy = [torch.zeros_like(t) for t in ys] if vy is None else vy
        grads = torch.autograd.grad(loss_fn(xs, ys), params, create_graph=True, allow_unused=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vx + vy) if g is not None and g.requires_grad)
        if not isinstance(dot, torch.Tensor):  # the loss is at most linear in these tensors: H = 0
            hv = [None] * len(params)
        else:
            hv = torch.autograd.grad(dot, params, allow_unused=True)
        hv = [torch.zeros_like(t) if h is None else h.detach() for t, h in zip(params, hv)]
        return hv[: len(xs)], hv[len(xs):]
    return hvp


@dataclass(frozen=True)
class SpectrumEstimate:
    """Power iteration's result: ``value`` (the dominant eigenvalue, signed Rayleigh quotient, or the top
    singular value for a cross block), ``norm`` (``||H v||`` at the unit iterate), ``rel_change`` (relative
    change of ``norm`` over the last iteration: a convergence indicator) and ``iterations`` (HVPs used)."""

    value: float
    norm: float
    rel_change: float
    iterations: int


def _dot(a: Block, b: Block) -> float:
    return sum(float((ta.double() * tb.double()).sum()) for ta, tb in zip(a, b))


def _rademacher_like(block: Block, generator: torch.Generator) -> Block:
    return [(torch.randint(0, 2, t.shape, generator=generator, device="cpu") * 2 - 1).to(t.device, t.dtype)
            for t in block]


def block_power_iteration(hvp: Callable, xs: Block, ys: Block, block: str, iters: int = 20,
                          generator: torch.Generator | None = None, rtol: float = 1e-6) -> SpectrumEstimate:
    """Dominant eigenvalue of the diagonal Hessian block ``H_xx`` (``block="x"``) or ``H_yy`` (``"y"``).

    Power iteration on exact HVPs at the point ``(xs, ys)``, starting from a Gaussian vector; stops after
    ``iters`` HVPs or when ``||H v||`` changes by less than ``rtol`` (relative). ``norm`` converges to the
    block's spectral norm (the largest |eigenvalue|), ``value`` to that eigenvalue with its sign.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    own = xs if block == "x" else ys
    if not own or sum(t.numel() for t in own) == 0:
        return SpectrumEstimate(0.0, 0.0, 0.0, 0)
    v = _scaled_to(_randn_like(own, gen), 1.0)
    norm = value = 0.0
    change, k = math.inf, 0
    for k in range(1, iters + 1):
        hx, hy = hvp(xs, ys, v, None) if block == "x" else hvp(xs, ys, None, v)
        hv = hx if block == "x" else hy
        new_norm, value = _norm(hv), _dot(v, hv)
        change = abs(new_norm - norm) / new_norm if new_norm > 0 else 0.0
        norm = new_norm
        if new_norm == 0 or change < rtol:
            break
        v = _scaled_to(hv, 1.0)
    return SpectrumEstimate(value=value, norm=norm, rel_change=change, iterations=k)


def cross_block_norm(hvp: Callable, xs: Block, ys: Block, iters: int = 20,
                     generator: torch.Generator | None = None, rtol: float = 1e-6) -> SpectrumEstimate:
    """Spectral norm of the cross block ``H_xy`` (the ``L_c`` of (H1)/(H2) at a point).

    Power iteration on ``H_yx H_xy``: a unit ``v_y`` gives ``w = H_xy v_y`` (the x part of ``H (0, v_y)``),
    then ``H_yx w`` (the y part of ``H (w, 0)``); ``value = norm = ||H_xy v_y||`` at the last unit iterate.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if not xs or not ys:
        return SpectrumEstimate(0.0, 0.0, 0.0, 0)
    v = _scaled_to(_randn_like(ys, gen), 1.0)
    sigma, change, k = 0.0, math.inf, 0
    for k in range(1, iters + 1):
        w = hvp(xs, ys, None, v)[0]
        new = _norm(w)
        change = abs(new - sigma) / new if new > 0 else 0.0
        sigma = new
        if new == 0 or change < rtol:
            break
        u = hvp(xs, ys, w, None)[1]
        if _norm(u) == 0:
            break
        v = _scaled_to(u, 1.0)
    return SpectrumEstimate(value=sigma, norm=sigma, rel_change=change, iterations=k)


def hutchinson_trace(hvp: Callable, xs: Block, ys: Block, block: str, samples: int = 16,
                     generator: torch.Generator | None = None) -> tuple[float, float]:
    """Hutchinson's estimate of ``tr H_xx`` (``block="x"``) or ``tr H_yy``: the mean of ``v^T H v`` over
    Rademacher ``v``. Returns ``(mean, standard error)`` (the standard error is 0 for one sample)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    own = xs if block == "x" else ys
    if not own:
        return 0.0, 0.0
    vals = []
    for _ in range(samples):
        v = _rademacher_like(own, gen)
        hx, hy = hvp(xs, ys, v, None) if block == "x" else hvp(xs, ys, None, v)
        vals.append(_dot(v, hx if block == "x" else hy))
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, 0.0
    var = sum((a - mean) ** 2 for a in vals) / (len(vals) - 1)
    return mean, math.sqrt(var / len(vals))


# -- report ----------------------------------------------------------------------------------------


def _family_instances():
    from .objectives.hyb import HYB
    from .objectives.lora import LoRARegression
    from .objectives.quadratic import CoupledQuadratic
    return {
        "quadratic": [CoupledQuadratic(seed=s) for s in range(3)],
        "hyb": [HYB(seed=s) for s in range(3)] + [HYB(seed=s, kappa=3.0, c_scale=3.0) for s in range(3)],
        "lora": [LoRARegression(seed=s) for s in range(3)],
    }


def report(n_pairs: int = 4000, n_hess: int = 40, seed: int = 0) -> list[dict]:
    """Soundness and tightness table for every family here (rows of dicts; see :func:`main`)."""
    from .objectives.catalogue import CATALOGUE, CatalogueProblem, local_smoothness_samples
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for fam, probs in _family_instances().items():
        for cert_name in (("constants", "constants_l0l1") if fam == "hyb" else ("constants",)):
            worst = {"H1": 0.0, "H2": 0.0, "G_x": 0.0, "G_y": 0.0, "hess L_x": 0.0, "hess L_c": 0.0,
                     "hess L_y": 0.0}
            for P in probs:
                c = getattr(P, cert_name)()
                pc = check_pairs(P, *random_pairs(P, n_pairs, gen), constants=c)
                jj, xh, yh, _, _ = random_pairs(P, n_hess, gen)
                hc = check_hessian(P, jj.tolist(), xh, yh, constants=c)
                for k, v in (("H1", pc.h1), ("H2", pc.h2), ("G_x", pc.gx), ("G_y", pc.gy),
                             ("hess L_x", hc["L_x"]), ("hess L_c", hc["L_c"]), ("hess L_y", hc["L_y"])):
                    worst[k] = max(worst[k], v)
            label = fam if cert_name == "constants" else f"{fam} ((L0,L1) certificate)"
            for k, v in worst.items():
                rows.append({"family": label, "what": k, "kind": "soundness", "value": v})
    # every other registered family, including ones registered from user modules
    # (objectives.register): pairs at scale 3; pl: G_x on the ball ||x|| <= radius
    from .objectives import families, make
    covered = set(_family_instances()) | {"catalogue"}
    for name in (f for f in families() if f not in covered):
        try:
            P = make(name)
        except Exception as err:  # a family owned elsewhere must not break this report
            rows.append({"family": name, "what": f"not built: {err}", "kind": "skipped", "value": math.nan})
            continue
        j, x, y, x2, y2 = random_pairs(P, n_pairs, gen, scale=3.0)
        if name == "pl":  # keep both points in the ball where G_x is certified (radial shrink keeps pairs valid)
            for xx in (x, x2):
                nrm = xx.norm(dim=-1, keepdim=True)
                xx.mul_(torch.where(nrm > P.radius, P.radius / nrm, torch.ones_like(nrm)))
        pc = check_pairs(P, j, x, y, x2, y2)
        for k, v in (("H1", pc.h1), ("H2", pc.h2), ("G_x", pc.gx), ("G_y", pc.gy)):
            rows.append({"family": name, "what": k, "kind": "soundness", "value": v})
    # tightness at documented maximisers
    for P in _family_instances()["hyb"][:3]:
        i, xw, yw = P.witness("L_c")
        rows.append({"family": "hyb", "what": "hess L_c at witness", "kind": "tightness",
                     "value": check_hessian(P, [i], xw[None], yw[None])["L_c"]})
        i, xw, yw = P.witness("L0_alt")
        rows.append({"family": "hyb", "what": "hess L0_alt at witness", "kind": "tightness",
                     "value": check_hessian(P, [i], xw[None], yw[None], constants=P.constants_alt())["L_y"]})
        # a short y-only pair through the L_c maximiser: (H1) ratio -> 1 as h -> 0
        i, xw, yw = P.witness("L_c")
        q, h = P.q[i] / P.q[i].norm(), 1e-4
        pc = check_pairs(P, torch.tensor([i]), xw[None], (yw - h * q)[None], xw[None], (yw + h * q)[None])
        rows.append({"family": "hyb", "what": "(H1) L_c pair at witness", "kind": "tightness", "value": pc.h1})
    for P in _family_instances()["lora"]:
        i, z, z2 = P.witness_pair_x()
        pc = check_pairs(P, torch.tensor([i]), z[0][None], z[1][None], z2[0][None], z2[1][None])
        rows.append({"family": "lora", "what": "(H1) L_x pair at witness", "kind": "tightness", "value": pc.h1})
    for P in _family_instances()["quadratic"]:
        for k in ("L_x", "L_c", "L0"):
            i, xw, yw = P.witness(k)
            key = {"L_x": "L_x", "L_c": "L_c", "L0": "L_y"}[k]
            rows.append({"family": "quadratic", "what": f"hess {k}", "kind": "tightness",
                         "value": check_hessian(P, [i], xw[None], yw[None])[key]})
    # catalogue: pointwise Hessian form, Prop. 1 on pairs, maximisers
    for name, cls in CATALOGUE.items():
        f = cls()
        for ci, cert in enumerate(f.certificates):
            s = local_smoothness_samples(name, 20000, seed, certificate=ci)
            rows.append({"family": f"catalogue {name} {cert.L0:.4g},{cert.L1:.4g}", "what": "hess/bound",
                         "kind": "soundness", "value": float(s["ratio"].max())})
            P = CatalogueProblem(name, certificate=ci)
            pc = check_pairs(P, *random_pairs(P, n_pairs, gen))
            rows.append({"family": f"catalogue {name} {cert.L0:.4g},{cert.L1:.4g}", "what": "H2 (Prop. 1, phi)",
                         "kind": "soundness", "value": pc.h2})
            m = f.maximiser(ci)
            if m is not None:
                val = float(f.hessian_norm(m) / cert.bound(f.grad_norm(m)))
                rows.append({"family": f"catalogue {name} {cert.L0:.4g},{cert.L1:.4g}", "what": "at maximiser",
                             "kind": "tightness", "value": val})
    return rows


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    ap = OneLineParser(prog="hybridtheory check",
                       description="The registered problem families and the soundness/tightness table of their "
                                   "certified HGS constants (the default).")
    ap.add_argument("--report", action="store_true", help="print the table (the default; kept for old scripts)")
    ap.add_argument("--list", action="store_true", help="only list the registered families")
    ap.add_argument("--pairs", type=positive_int, default=4000, help="random pairs per instance (>= 1)")
    ap.add_argument("--hess-points", type=positive_int, default=40, help="autograd Hessian points per instance (>= 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (a module that calls hybridtheory.objectives.register); repeatable")
    args = ap.parse_args(argv)
    from .objectives import families, import_family_modules
    import_family_modules(args.modules)
    print("registered families: " + ", ".join(families()))
    if args.list:
        return 0
    rows = report(n_pairs=args.pairs, n_hess=args.hess_points, seed=args.seed)
    print(f"{'family':45s} {'kind':10s} {'what':28s} {'max ratio':>14s}")
    for r in rows:
        print(f"{r['family']:45s} {r['kind']:10s} {r['what']:28s} {r['value']:14.10f}")
    bad = [r for r in rows if r["kind"] == "soundness" and not r["value"] <= 1 + 1e-9]
    print(f"\n{len(bad)} soundness violations (ratio > 1 + 1e-9)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
