r"""PL contrast: a strongly convex ZO block with the ramp's heterogeneity (proofs/05-ramp.md).

.. math:: f_i(x, y) = \tfrac12\|x\|^2 + s_i\,\beta\,x_2 + \ell(s_i c_y y), \qquad s_i = \pm 1,

so :math:`F(x, y) = \frac12\|x\|^2 + \frac12(\ell(c_y y) + \ell(-c_y y))` satisfies the PL inequality in
``x``. Under the eps^2 step rule the epoch count grows like :math:`\varepsilon^{-2}\log(1/\varepsilon)`:
Theorem 1 (which assumes no PL) is loose here, and the measured slope shows by how much.

Constants: :math:`L_x = 1`, :math:`L_c = 0`, :math:`(L_0, L_1) = (c_y^2/4, 0)`, :math:`G_y = c_y`,
:math:`F^* = \log 2`. Gradients are *not* globally bounded in ``x``: :math:`G_x = R + \beta` holds on
the ball :math:`\|x\| \le R`, with :math:`R` = ``radius`` (default :math:`2\sqrt{2\Delta}`, twice the start's
norm). The theorem's conclusion is therefore conditional on the run staying in the ball, which the
measurement code checks and reports.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as Fnn

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem


class PLQuadratic(FiniteSumProblem):
    """PL contrast (C.2/C.5). Args as :class:`~hybridtheory.objectives.ramp.Ramp`, plus ``radius``."""

    name = "pl"

    def __init__(self, dx: int = 10, n: int = 2, beta: float = 1.0, c_y: float = 1.0, delta: float = 1.0,
                 radius: float | None = None):
        if dx < 2 or n < 2 or n % 2:
            raise ValueError(f"pl needs dx >= 2 and an even n >= 2, got dx={dx}, n={n}")
        if not (beta >= 0 and c_y > 0 and delta > 0):
            raise ValueError("pl needs beta >= 0, c_y > 0, delta > 0")
        self.dx, self.n, self.beta, self.c_y, self.delta0 = dx, n, beta, c_y, delta
        self.radius = 2 * math.sqrt(2 * delta) if radius is None else radius
        self.dy = 1
        self._signs = torch.where(torch.arange(n) < n // 2, 1.0, -1.0).to(DTYPE)

    def _sign(self, j):
        if self._signs.device != j.device:
            self._signs = self._signs.to(j.device)
        return self._signs[j]

    def value(self, j, x, y):
        s = self._sign(j)
        return 0.5 * x.square().sum(-1) + (self.beta * s) * x[..., 1] + Fnn.softplus((-self.c_y * s) * y[..., 0])

    def grad(self, j, x, y):
        s = self._sign(j)
        shift = torch.zeros(s.shape + (self.dx,), dtype=x.dtype, device=x.device)
        shift[..., 1] = self.beta * s
        gx = x + shift
        sc = self.c_y * s
        gy = (-sc * torch.sigmoid(-sc * y[..., 0])).unsqueeze(-1)
        return gx, gy.expand(gx.shape[:-1] + (1,))

    def constants(self) -> HGSConstants:
        return HGSConstants(L_x=1.0, L_c=0.0, L0=self.c_y**2 / 4, L1=0.0, G_x=self.radius + self.beta,
                            G_y=self.c_y, F_lower=math.log(2),
                            region=f"ball ||x|| <= {self.radius:.4g} (G_x is a ball constant)",
                            source="proofs/05-ramp.md",
                            # as for the ramp: +-beta e_2 in x; logistic gradients +-c_y/2 around their mean
                            varsigma_x_sq=self.beta**2, varsigma_y_sq=self.c_y**2 / 4)

    def initial_point(self, batch_shape=()):
        x = torch.zeros(tuple(batch_shape) + (self.dx,), dtype=DTYPE)
        x[..., 0] = math.sqrt(2 * self.delta0)
        return x, torch.zeros(tuple(batch_shape) + (1,), dtype=DTYPE)

    def witness_points(self):
        """x = R s_j e_2 (on the ball, aligned with the shift): ||grad_x f_j|| = R + beta (G_x); y = 0:
        l'' = 1/4 (L0); y = +-1e4: |l'| -> c_y (G_y); the Hessian in x is I everywhere (L_x)."""
        pts = []
        for j in range(self.n):
            x = torch.zeros(self.dx, dtype=DTYPE)
            x[1] = self.radius * float(self._signs[j])
            pts += [(j, x, torch.zeros(1, dtype=DTYPE))] + [(j, x, torch.full((1,), s * 1e4, dtype=DTYPE))
                                                           for s in (1.0, -1.0)]
        return pts
