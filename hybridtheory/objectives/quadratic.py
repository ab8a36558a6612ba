r"""Coupled quadratics (constants derived in this module): the zero-bias, L1 = 0 test family.

.. math::
    f_i(z) = \tfrac12 z^\top H_i z + c_i^\top z,\qquad
    H_i = \begin{pmatrix} A_i & C_i \\ C_i^\top & B_i \end{pmatrix},\quad z = (x, y).

Constants (Hessian form, exact and global): :math:`L_x = \max_i\|A_i\|_2`, :math:`L_c = \max_i\|C_i\|_2`,
:math:`L_0 = \max_i\|B_i\|_2`, :math:`L_1 = 0`. A central difference in x is exact on a quadratic,
so the ZO estimator has zero smoothing bias.

Gradients are unbounded globally, so (A3) is certified **on the ball** :math:`\|z\| \le R` only:
:math:`\|\nabla_x f_i(z)\| = \|[A_i\ C_i] z + c_{i,x}\| \le \|[A_i\ C_i]\|_2 R + \|c_{i,x}\|` and the same
with :math:`[C_i^\top\ B_i]` for y (sharper than THEORY's :math:`\|H_i\|R + \|c_i\|`, and implied by it).
The region string says so; a theorem run on this family is conditional on staying in the ball.

Instances are positive definite by construction: :math:`H_i = Q_i \mathrm{diag}(\lambda_i) Q_i^\top` with
:math:`Q_i` Haar-orthogonal and :math:`\lambda_i \sim U[\mu, L]`, :math:`\mu > 0`. Then
:math:`\bar H = \mathrm{mean}_i H_i \succeq \mu I` and :math:`F^* = -\tfrac12\bar c^\top\bar H^{-1}\bar c`
exactly (``F_lower`` is this value, not just a bound).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem


def _haar_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """Haar-distributed orthogonal matrix (QR of a Gaussian with the sign fix)."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


class CoupledQuadratic(FiniteSumProblem):
    """Per-component PD quadratics with random block coupling (constants derived in this module).

    Args:
        n, dx, dy: components and block sizes.
        mu, L: eigenvalue range of every H_i (``0 < mu <= L``).
        c_scale: linear terms ``c_i ~ c_scale * N(0, I)``.
        radius: R, the ball ``||z|| <= R`` on which G_x, G_y are certified.
        seed: instance seed (``np.random.default_rng(seed)``).

    Initial point: every coordinate equal to ``R / (2 sqrt(dx + dy))``, so ``||z0|| = R/2``,
    well inside the certified ball.
    """

    name = "quadratic"

    def __init__(self, n: int = 4, dx: int = 6, dy: int = 4, mu: float = 0.1, L: float = 2.0,
                 c_scale: float = 1.0, radius: float = 10.0, seed: int = 0):
        if not 0 < mu <= L:
            raise ValueError(f"need 0 < mu <= L, got mu={mu}, L={L}")
        if radius <= 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        rng = np.random.default_rng(seed)
        d = dx + dy
        H = np.empty((n, d, d))
        for i in range(n):
            Q = _haar_orthogonal(rng, d)
            H[i] = (Q * rng.uniform(mu, L, size=d)) @ Q.T
            H[i] = 0.5 * (H[i] + H[i].T)
        c = c_scale * rng.normal(size=(n, d))
        self.n, self.dx, self.dy, self.radius = n, dx, dy, float(radius)
        self.params = dict(n=n, dx=dx, dy=dy, mu=mu, L=L, c_scale=c_scale, radius=radius, seed=seed)
        self.H = torch.as_tensor(H, dtype=DTYPE)
        self.c = torch.as_tensor(c, dtype=DTYPE)
        # exact F*: minimise the averaged PD quadratic
        Hbar, cbar = H.mean(0), c.mean(0)
        self.z_star = -np.linalg.solve(Hbar, cbar)
        self.F_star = float(0.5 * cbar @ self.z_star)
        spec = lambda m: np.linalg.norm(m, ord=2, axis=(-2, -1))  # noqa: E731
        self.comp = {
            "L_x": spec(H[:, :dx, :dx]), "L_c": spec(H[:, :dx, dx:]), "L0": spec(H[:, dx:, dx:]),
            "G_x": spec(H[:, :dx, :]) * radius + np.linalg.norm(c[:, :dx], axis=-1),
            "G_y": spec(H[:, dx:, :]) * radius + np.linalg.norm(c[:, dx:], axis=-1),
        }

    def constants(self) -> HGSConstants:
        comp = self.comp
        return HGSConstants(
            L_x=float(comp["L_x"].max()), L_c=float(comp["L_c"].max()), L0=float(comp["L0"].max()), L1=0.0,
            G_x=float(comp["G_x"].max()), G_y=float(comp["G_y"].max()), F_lower=self.F_star,
            region=f"L_x, L_c, L0 global; G_x, G_y on the ball ||z|| <= R = {self.radius:g}",
            form="hessian", source="this module's derivation (exact block norms; F_lower = exact F*)")

    def initial_point(self, batch_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.radius / (2 * math.sqrt(self.dx + self.dy))
        bs = tuple(batch_shape)
        return (torch.full((*bs, self.dx), v, dtype=DTYPE), torch.full((*bs, self.dy), v, dtype=DTYPE))

    def to(self, device) -> CoupledQuadratic:
        """Move the instance data to ``device`` (also done lazily on the first call with tensors there)."""
        self.H, self.c = self.H.to(device), self.c.to(device)
        return self

    # -- fast path --------------------------------------------------------------------------------
    def _hz(self, j, x, y):
        if self.H.device != x.device:
            self.to(x.device)
        j = torch.as_tensor(j, device=x.device).long()
        bs = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        z = torch.cat([x.expand(*bs, self.dx), y.expand(*bs, self.dy)], -1)
        Hz = (self.H[j] @ z.unsqueeze(-1)).squeeze(-1)
        return j, z, Hz

    def value(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        j, z, Hz = self._hz(j, x, y)
        return (0.5 * Hz * z).sum(-1) + (self.c[j] * z).sum(-1)

    def grad(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        j, z, Hz = self._hz(j, x, y)
        g = Hz + self.c[j]
        return g[..., : self.dx], g[..., self.dx:]

    def sample_points(self, batch: int, generator: torch.Generator, radius: float | None = None):
        """Points in the certified ball ``||z|| <= R`` (direction uniform, radius R U^{1/4}: biased outward)."""
        R = self.radius if radius is None else radius
        z = torch.randn(batch, self.dx + self.dy, generator=generator, dtype=DTYPE)
        z = z / z.norm(dim=-1, keepdim=True)
        z = z * R * torch.rand(batch, 1, generator=generator, dtype=DTYPE) ** 0.25
        return z[:, : self.dx], z[:, self.dx:]

    def witness_points(self):
        """The Hessian maximisers (any point) and, for G_x / G_y, z = +-R v on the ball's boundary with v the top
        right singular vector of [A_i C_i] / [C_i^T B_i] (i the argmax), the sign making the linear term help."""
        pts = [self.witness(k) for k in ("L_x", "L_c", "L0")]
        for key, rows in (("G_x", slice(0, self.dx)), ("G_y", slice(self.dx, self.dx + self.dy))):
            i = int(np.argmax(self.comp[key]))
            M = self.H[i][rows]
            v = torch.linalg.svd(M)[2][0]
            for sgn in (1.0, -1.0):
                z = sgn * self.radius * v
                pts.append((i, z[: self.dx].clone(), z[self.dx:].clone()))
        return pts

    def witness(self, constant: str) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Any point works for L_x, L_c, L0 (the Hessian is constant); returns (argmax i, 0, 0)."""
        if constant not in ("L_x", "L_c", "L0"):
            raise ValueError(f"no documented maximiser for {constant!r}")
        i = int(np.argmax(self.comp[constant]))
        return i, torch.zeros(self.dx, dtype=DTYPE), torch.zeros(self.dy, dtype=DTYPE)
