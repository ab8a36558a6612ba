r"""Heterogeneous ramp: the ramp with a tunable heterogeneity :math:`\varsigma` (including 0), for Theorem 2.

For ``n`` even, signs :math:`s_i = +1` for :math:`i < n/2` and :math:`-1` otherwise,

.. math::
    f_i(x, y) = h_\varepsilon(x_1) + s_i\,\varsigma\,x_2 + \bar\ell(y),\qquad
    h_\varepsilon(t) = 2\varepsilon(\sqrt{1+t^2} - 1),\qquad \bar\ell(y) = \tfrac12[\ell(c_yy) + \ell(-c_yy)],

:math:`\ell(t) = \log(1+e^{-t})`, :math:`x\in\mathbb R^{d_x}` (:math:`d_x\ge2`), :math:`y\in\mathbb R`.

* Heterogeneity: :math:`\nabla_xf_i - \nabla_xF = s_i\varsigma e_2` and :math:`\nabla_yf_i = \nabla_yF`, so
  :math:`\frac1n\sum_i\|\nabla_xf_i - \nabla_xF\|^2 = \varsigma^2` exactly at every point and :math:`\varsigma_y = 0`.
  With :math:`\varsigma = 0` all components coincide (interpolation in the strong sense of Corollary 4).
* Constants (Hessian form, global, every :math:`\varepsilon\le\frac12`): :math:`L_x = 1` (:math:`h''_\varepsilon\le2\varepsilon`),
  :math:`L_c = 0`, :math:`(L_0, L_1) = (c_y^2/4, 0)` (:math:`\bar\ell'' = \frac{c_y^2}2[\ell''(c_yy) + \ell''(-c_yy)]`
  and :math:`\ell''(t) + \ell''(-t) = 2\sigma(t)\sigma(-t)\le\frac12`), :math:`G_x = \sqrt{4\varepsilon^2 + \varsigma^2}`
  (:math:`|h'_\varepsilon| < 2\varepsilon`), :math:`G_y = c_y/2` (:math:`|\bar\ell'| = \frac{c_y}2|\sigma(c_yy) - \sigma(-c_yy)| < \frac{c_y}2`),
  :math:`F^* = \log2` at :math:`x_1 = 0, y = 0` (:math:`\bar\ell\ge\ell(0)` by convexity and symmetry).
* Start: :math:`h_\varepsilon(x_1) = \Delta`, other coordinates 0, so :math:`F(z_0) - F^* = \Delta` exactly.

Prediction (Corollaries 3-4, ``proofs/07-theorem2.md``): under Corollary 3's schedule the epochs to
:math:`\|\nabla F\|\le\varepsilon` grow like :math:`\varepsilon^{-4}` while the heterogeneity term binds
(:math:`\varepsilon\lesssim0.88\,\varsigma` for :math:`d_x = 2`, q = 1) and like :math:`\varepsilon^{-2}` once the step cap binds
(always at :math:`\varsigma = 0`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as Fnn

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem
from .ramp import check_ramp_args, ramp_initial_point, ramp_signs, ramp_x_grad, ramp_x_value


class HeterogeneousRamp(FiniteSumProblem):
    """Ramp with tunable x-heterogeneity ``varsigma`` and a shared FO block (Theorem 2's family).

    Args:
        eps: ramp parameter (the target accuracy of the sweep), 0 < eps <= 1/2.
        varsigma: heterogeneity of the x_2 terms (>= 0; 0 makes all components equal).
        dx: ZO dimension (>= 2).
        n: number of components (even).
        c_y: scale of the (shared) logistic FO block.
        delta: initial gap F(z_0) - F*.
    """

    name = "hetero"

    def __init__(self, eps: float = 0.1, varsigma: float = 1.0, dx: int = 2, n: int = 2, c_y: float = 1.0,
                 delta: float = 1.0):
        check_ramp_args("hetero", eps, dx, n, "varsigma", varsigma, c_y, delta)
        self.eps, self.varsigma, self.dx, self.n, self.c_y, self.delta0 = eps, varsigma, dx, n, c_y, delta
        self.dy = 1
        self._bs = varsigma * ramp_signs(n)

    def _b(self, j: torch.Tensor) -> torch.Tensor:
        if self._bs.device != j.device:
            self._bs = self._bs.to(j.device)
        return self._bs[j]

    def value(self, j, x, y):
        cy = self.c_y * y[..., 0]
        return ramp_x_value(self.eps, x, self._b(j)) + 0.5 * (Fnn.softplus(-cy) + Fnn.softplus(cy))

    def grad(self, j, x, y):
        gx = ramp_x_grad(self.eps, x, self._b(j))
        cy = self.c_y * y[..., 0]
        gy = (0.5 * self.c_y * (torch.sigmoid(cy) - torch.sigmoid(-cy))).unsqueeze(-1)
        return gx, gy.expand(gx.shape[:-1] + (1,))

    def constants(self) -> HGSConstants:
        return HGSConstants(L_x=1.0, L_c=0.0, L0=self.c_y**2 / 4, L1=0.0,
                            G_x=math.sqrt(4 * self.eps**2 + self.varsigma**2), G_y=self.c_y / 2,
                            F_lower=math.log(2), region="global (class constants for every eps <= 1/2)",
                            source="hybridtheory/objectives/hetero.py; proofs/07-theorem2.md",
                            varsigma_x_sq=self.varsigma**2, varsigma_y_sq=0.0)

    def initial_point(self, batch_shape=()):
        return ramp_initial_point(self.eps, self.delta0, self.dx, 1, batch_shape)

    def witness_points(self):
        """x_1 = 0, y = 0: h'' = 2 eps (L_x = 1 at eps = 1/2) and lbar'' = c_y^2/4 (L0); x_1 = y = 1e4:
        |h'| -> 2 eps, |lbar'| -> c_y/2 (G_x, G_y); every component."""
        pts = []
        for j in range(self.n):
            pts.append((j, torch.zeros(self.dx, dtype=DTYPE), torch.zeros(1, dtype=DTYPE)))
            xf = torch.zeros(self.dx, dtype=DTYPE)
            xf[0] = 1e4
            pts.append((j, xf, torch.full((1,), 1e4, dtype=DTYPE)))
        return pts
