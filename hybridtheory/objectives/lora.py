r"""LoRA regression (constants derived in this module): the base weight W is the ZO block, the adapter (A, B) the FO block.

Per sample :math:`i` (input :math:`u_i\in\mathbb R^q`, target :math:`v_i\in\mathbb R^p`):

.. math::
    f_i(W, A, B) = \tfrac12\|(W + AB^\top)u_i - v_i\|^2,\qquad
    x = \mathrm{vec}(W)\ (p\times q),\quad y = (\mathrm{vec}A, \mathrm{vec}B)\ (A: p\times r,\ B: q\times r),

``vec`` row-major. With the residual :math:`r_i = (W+AB^\top)u_i - v_i`:
:math:`\nabla_W = r_iu_i^\top`, :math:`\nabla_A = r_i(B^\top u_i)^\top`, :math:`\nabla_B = u_i(A^\top r_i)^\top`.

Hessian blocks (derived here; :math:`s_i = \|u_i\|`):

* :math:`\nabla^2_{WW} = u_iu_i^\top\otimes I` so :math:`L_x = s_i^2` **globally and exactly** (reached
  along :math:`\Delta W = e\,u_i^\top`);
* cross block :math:`H \mapsto (H u_iu_i^\top B,\ u_iu_i^\top H^\top A)`, norm
  :math:`\le s_i^2\sqrt{\|A\|_2^2+\|B\|_2^2} \le s_i^2\rho`;
* (A,B) block, unit direction: :math:`f'' = \|(\Delta A B^\top + A\Delta B^\top)u_i\|^2 + 2\langle r_i, \Delta A\Delta B^\top u_i\rangle`,
  so :math:`\|\nabla^2_{(A,B)}\| \le s_i^2(\|A\|_2^2+\|B\|_2^2) + s_i\|r_i\| \le s_i^2\rho^2 + s_i\sqrt{2\bar f}`.

These are **region constants** on :math:`\mathcal R = \{\|(A,B)\|_F \le \rho,\ \max_i f_i \le \bar f\}`
(there :math:`\|r_i\| \le \sqrt{2\bar f}`): :math:`L_x = s^2`, :math:`L_c = s^2\rho`,
:math:`L_0 = s^2\rho^2 + s\sqrt{2\bar f}` with :math:`L_1 = 0`, :math:`G_x = s\sqrt{2\bar f}`,
:math:`G_y = s\sqrt{2\bar f}\rho` (per component, then max over i). The Hessian bounds hold pointwise
in :math:`\mathcal R`; a first-order pair check needs the whole segment in :math:`\mathcal R`. When
``fbar`` is not given it is derived from the **convex** set
:math:`\mathcal C = \{\|W\|_F \le \omega,\ \|(A,B)\|_F \le \rho\}` via
:math:`\|r_i\| \le (\omega + \rho^2/2)s_i + \|v_i\|` (:math:`\|AB^\top\|_2 \le (\|A\|^2+\|B\|^2)/2`), so every
segment between points of :math:`\mathcal C` stays in the region.

**Not (L0, L1) globally** for any constants (constants derived in this module): :math:`\tfrac12(ab-1)^2` has zero gradient and
Hessian norm :math:`a^2+a^{-2}` at :math:`(a, 1/a)`; the same valley exists for any :math:`AB^\top = M^*`.

``F_lower`` is the exact :math:`F^*`: W is unconstrained, so :math:`F^* = \min_M \mathrm{mean}_i \tfrac12\|Mu_i - v_i\|^2`
(least squares).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem


class LoRARegression(FiniteSumProblem):
    """Per-sample low-rank-adapted linear regression (constants derived in this module).

    Args:
        n: samples; p, q: W is p x q; r: adapter rank.
        noise: target noise std (``v_i = W* u_i + noise * N(0, I)``, ``W* ~ N(0, I/q)``).
        rho: adapter-norm radius of the region.
        fbar: per-sample loss cap of the region; ``None`` derives it from ``omega`` (see module doc).
        omega: radius of the W ball used to derive ``fbar`` and by :meth:`sample_points`;
            default ``2 ||W*||_F + 1``.
        init_scale: ``A0 ~ init_scale * N(0, I/r)``.
        seed: instance seed (``np.random.default_rng(seed)``).

    Data: ``u_i ~ N(0, I/q)``. Initial point (the standard LoRA start): ``W0 = 0``, ``A0`` random as above,
    ``B0 = 0`` (so ``grad_A = 0`` at the start). ``rho`` must be at least ``||A0||_F``.
    """

    name = "lora"

    def __init__(self, n: int = 8, p: int = 4, q: int = 5, r: int = 2, noise: float = 0.1, rho: float = 2.0,
                 fbar: float | None = None, omega: float | None = None, init_scale: float = 0.5, seed: int = 0):
        rng = np.random.default_rng(seed)
        U = rng.normal(size=(n, q)) / math.sqrt(q)
        W_star = rng.normal(size=(p, q)) / math.sqrt(q)
        V = U @ W_star.T + noise * rng.normal(size=(n, p))
        A0 = init_scale * rng.normal(size=(p, r)) / math.sqrt(r)
        self.n, self.p, self.q, self.r = n, p, q, r
        self.dx, self.dy = p * q, (p + q) * r
        self.rho = float(rho)
        if np.linalg.norm(A0) > rho:
            raise ValueError(f"rho = {rho} is smaller than ||A0||_F = {np.linalg.norm(A0):.3g}")
        self.omega = float(2 * np.linalg.norm(W_star) + 1) if omega is None else float(omega)
        s = np.linalg.norm(U, axis=-1)
        if fbar is None:
            res_bound = (self.omega + rho**2 / 2) * s + np.linalg.norm(V, axis=-1)
            fbar_i = 0.5 * res_bound**2
            self.fbar = float(fbar_i.max())
            self.region = (f"{{||(A,B)||_F <= rho = {rho:g}, f_i <= fbar_i (max {self.fbar:.4g})}}, fbar_i derived "
                           f"from the convex set {{||W||_F <= omega = {self.omega:.4g}, ||(A,B)||_F <= rho}}; "
                           f"first-order pairs need the whole segment in the region")
        else:
            fbar_i = np.full(n, float(fbar))
            self.fbar = float(fbar)
            self.region = (f"{{||(A,B)||_F <= rho = {rho:g}, max_i f_i <= fbar = {fbar:g}}}; "
                           f"first-order pairs need the whole segment in the region")
        root = np.sqrt(2 * fbar_i)
        self.comp = {"L_x": s**2, "L_c": s**2 * rho, "L0": s**2 * rho**2 + s * root,
                     "G_x": s * root, "G_y": s * root * rho}
        M, *_ = np.linalg.lstsq(U, V, rcond=None)                  # U M = V, M = W^T
        self.F_star = float(0.5 * np.mean(np.sum((U @ M - V) ** 2, axis=-1)))
        self.params = dict(n=n, p=p, q=q, r=r, noise=noise, rho=rho, fbar=fbar, omega=self.omega,
                           init_scale=init_scale, seed=seed)
        self.inputs = torch.as_tensor(U, dtype=DTYPE)
        self.targets = torch.as_tensor(V, dtype=DTYPE)
        self.W_star = torch.as_tensor(W_star, dtype=DTYPE)
        self._y0 = torch.cat([torch.as_tensor(A0, dtype=DTYPE).reshape(-1), torch.zeros(q * r, dtype=DTYPE)])

    def constants(self) -> HGSConstants:
        comp = self.comp
        return HGSConstants(
            L_x=float(comp["L_x"].max()), L_c=float(comp["L_c"].max()), L0=float(comp["L0"].max()), L1=0.0,
            G_x=float(comp["G_x"].max()), G_y=float(comp["G_y"].max()), F_lower=self.F_star,
            region=self.region, form="hessian",
            source="this module's derivation (L_x global and exact; the rest region constants; F_lower = exact F*)")

    def initial_point(self, batch_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        bs = tuple(batch_shape)
        return torch.zeros(*bs, self.dx, dtype=DTYPE), self._y0.expand(*bs, self.dy).clone()

    # -- helpers ----------------------------------------------------------------------------------
    def split(self, x: torch.Tensor, y: torch.Tensor):
        """(W, A, B) views of the flat blocks: W (*, p, q), A (*, p, r), B (*, q, r)."""
        W = x.reshape(*x.shape[:-1], self.p, self.q)
        A = y[..., : self.p * self.r].reshape(*y.shape[:-1], self.p, self.r)
        B = y[..., self.p * self.r:].reshape(*y.shape[:-1], self.q, self.r)
        return W, A, B

    def to(self, device) -> LoRARegression:
        """Move the instance data to ``device`` (also done lazily on the first call with tensors there)."""
        for name in ("inputs", "targets", "W_star", "_y0"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _residual(self, j, x, y):
        if self.inputs.device != x.device:
            self.to(x.device)
        j = torch.as_tensor(j, device=x.device).long()
        W, A, B = self.split(x, y)
        u = self.inputs[j].unsqueeze(-1)                                     # (*J, q, 1)
        Btu = B.transpose(-1, -2) @ u                                        # (*, r, 1)
        res = (W @ u + A @ Btu).squeeze(-1) - self.targets[j]               # (*, p)
        return u.squeeze(-1), A, Btu.squeeze(-1), res

    # -- fast path --------------------------------------------------------------------------------
    def value(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * self._residual(j, x, y)[3].square().sum(-1)

    def grad(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, A, Btu, res = self._residual(j, x, y)
        gW = res.unsqueeze(-1) * u.unsqueeze(-2)                              # r u^T
        gA = res.unsqueeze(-1) * Btu.unsqueeze(-2)                            # r (B^T u)^T
        Atr = (A.transpose(-1, -2) @ res.unsqueeze(-1)).squeeze(-1)           # A^T r
        gB = u.unsqueeze(-1) * Atr.unsqueeze(-2)                              # u (A^T r)^T
        bs = gW.shape[:-2]
        gy = torch.cat([gA.expand(*bs, self.p, self.r).reshape(*bs, -1),
                        gB.expand(*bs, self.q, self.r).reshape(*bs, -1)], -1)
        return gW.reshape(*bs, -1), gy

    # -- region sampling and maximisers -------------------------------------------------------------
    def sample_points(self, batch: int, generator: torch.Generator):
        """Points of the convex set {||W||_F <= omega, ||(A,B)||_F <= rho} (radii R U^{1/4}: biased outward)."""
        def ball(d, R):
            v = torch.randn(batch, d, generator=generator, dtype=DTYPE)
            v = v / v.norm(dim=-1, keepdim=True)
            return v * R * torch.rand(batch, 1, generator=generator, dtype=DTYPE) ** 0.25
        return ball(self.dx, self.omega), ball(self.dy, self.rho)

    def in_region(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Whether (x, y) lies in {||(A,B)||_F <= rho, f_i <= fbar_i for all i} (batched)."""
        vals = self.component_values(x, y)
        cap = 0.5 * ((self.omega + self.rho**2 / 2) * self.inputs.norm(dim=-1) + self.targets.norm(dim=-1)) ** 2 \
            if self.params["fbar"] is None else torch.full((self.n,), self.fbar, dtype=DTYPE)
        return (y.norm(dim=-1) <= self.rho * (1 + 1e-12)) & (vals <= cap * (1 + 1e-12)).all(-1)

    def witness(self, constant: str) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``"L_x"``: ||H_WW|| = ||u_i||^2 at every point; returns (argmax i, initial point)."""
        if constant != "L_x":
            raise ValueError(f"no documented maximiser for {constant!r}; known: 'L_x'")
        x0, y0 = self.initial_point()
        return int(np.argmax(self.comp["L_x"])), x0, y0

    def witness_point(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The point of the region where component i attains L0, L_c, G_x and G_y at once (ratio 1):
        e = -v_i/||v_i||, A = (rho/sqrt 2) e e_1^T, B = (rho/sqrt 2) (u_i/||u_i||) e_1^T, W = omega e u_i^T/||u_i||.
        Then ||(A, B)||_F = rho, the residual is ((omega + rho^2/2)||u_i|| + ||v_i||) e (so f_i = fbar_i when fbar
        is derived), ||grad_W|| = s sqrt(2 fbar_i), ||grad_(A,B)|| = rho s sqrt(2 fbar_i), and the Hessian blocks
        reach s^2 rho^2 + s ||r_i|| and s^2 rho along the directions of the proof (module docstring)."""
        u, v = self.inputs[i], self.targets[i]
        e = -v / v.norm()
        uh = u / u.norm()
        e1 = torch.zeros(self.r, dtype=DTYPE)
        e1[0] = 1.0
        a = self.rho / math.sqrt(2)
        A, B, W = a * torch.outer(e, e1), a * torch.outer(uh, e1), self.omega * torch.outer(e, uh)
        return W.reshape(-1), torch.cat([A.reshape(-1), B.reshape(-1)])

    def witness_points(self):
        """:meth:`witness_point` for the argmax component of each region constant, and the L_x point."""
        pts = [self.witness("L_x")]
        for k in ("L_c", "L0", "G_x", "G_y"):
            i = int(np.argmax(self.comp[k]))
            pts.append((i, *self.witness_point(i)))
        return pts

    def witness_pair_x(self, h: float = 0.5):
        """A pair reaching (H1)'s L_x exactly: dW = h e u_i^T / ||u_i|| (e a unit vector), dy = 0."""
        i, x0, y0 = self.witness("L_x")
        u = self.inputs[i]
        e = torch.zeros(self.p, dtype=DTYPE)
        e[0] = 1.0
        dW = h * torch.outer(e, u / u.norm())
        return i, (x0, y0), (x0 + dW.reshape(-1), y0.clone())
