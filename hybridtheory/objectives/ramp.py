r"""Ramp family: the family on which the eps^-4 epoch count of Corollary 1 is tight (proofs/05-ramp.md).

For ``n`` even, signs :math:`s_i = +1` for :math:`i < n/2` and :math:`-1` otherwise,

.. math::
    f_i(x, y) = h_\varepsilon(x_1) + s_i\,\beta\,x_2 + \ell(s_i c_y y), \qquad
    h_\varepsilon(t) = 2\varepsilon\,(\sqrt{1+t^2} - 1), \qquad \ell(t) = \log(1 + e^{-t}),

with :math:`x\in\mathbb R^{d_x}` (:math:`d_x\ge 2`) and :math:`y\in\mathbb R`.

* :math:`|h'_\varepsilon| < 2\varepsilon` everywhere and :math:`\|\nabla F\| \le \varepsilon` needs
  :math:`x_1^2 \le 1/3`: far from 0 the iterate walks down a ramp of slope :math:`\approx 2\varepsilon`.
* The :math:`\pm\beta x_2` terms cancel in :math:`F` but leave a ZO variance of order
  :math:`d_x\beta^2` at *every* point (data heterogeneity that reshuffling cannot remove from the
  ZO noise, B.6).
* Class constants, valid for all :math:`\varepsilon \le 1/2` (independent of :math:`\varepsilon`, so
  Corollary 1's :math:`T(\varepsilon)` scales exactly as :math:`\varepsilon^{-4}`):
  :math:`L_x = 1` (:math:`h'' \le 2\varepsilon`), :math:`L_c = 0`, :math:`(L_0, L_1) = (c_y^2/4, 0)`
  (:math:`\ell'' \le 1/4`), :math:`G_x = \sqrt{1+\beta^2}`, :math:`G_y = c_y`,
  :math:`F^* = \log 2` (attained at :math:`x_1 = 0, y = 0`).
* Heterogeneity (Theorem 2): :math:`\varsigma_x^2 = \beta^2` and :math:`\varsigma_y^2 = c_y^2/4`, both exact
  at every point (:math:`\nabla_y f_i - \nabla_y F = \pm\frac{c_y}2(\sigma(c_yy) + \sigma(-c_yy)) = \pm\frac{c_y}2`).
* Start: :math:`x_1` solves :math:`h_\varepsilon(x_1) = \Delta`, all other coordinates 0, so
  :math:`F(z_0) - F^* = \Delta` exactly.

Prediction under :math:`\eta_x \propto \varepsilon^2`: epochs to :math:`\|\nabla F\| \le \varepsilon` grow as
:math:`\Delta/(4 n \eta_x \varepsilon^2) \propto \varepsilon^{-4}` (C.5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as Fnn

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem


def check_ramp_args(name: str, eps: float, dx: int, n: int, b_name: str, b: float, c_y: float, delta: float) -> None:
    """The argument checks the ramp and its heterogeneous variant share; ``b`` is the x_2 coefficient ``b_name``."""
    if not 0 < eps <= 0.5:
        raise ValueError(f"{name} eps must be in (0, 1/2] (the class constants need it), got {eps}")
    if dx < 2:
        raise ValueError(f"{name} needs dx >= 2, got {dx}")
    if n < 2 or n % 2:
        raise ValueError(f"{name} needs an even n >= 2, got {n}")
    if not (b >= 0 and c_y > 0 and delta > 0):
        raise ValueError(f"{name} needs {b_name} >= 0, c_y > 0, delta > 0")


def ramp_signs(n: int) -> torch.Tensor:
    """s_i = +1 for i < n/2 and -1 otherwise."""
    return torch.where(torch.arange(n) < n // 2, 1.0, -1.0).to(DTYPE)


def ramp_x_value(eps: float, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The x part h_eps(x_1) + b x_2, b = the component's x_2 coefficient."""
    t = x[..., 0]
    return (2 * eps) * (torch.sqrt(1 + t * t) - 1) + b * x[..., 1]


def ramp_x_grad(eps: float, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """grad_x of :func:`ramp_x_value`: (h'_eps(x_1), b, 0, ..., 0), broadcast over the batch."""
    t = x[..., 0]
    g1, g2 = torch.broadcast_tensors((2 * eps) * t * torch.rsqrt(1 + t * t), b)
    parts = [g1.unsqueeze(-1), g2.unsqueeze(-1)]
    if x.shape[-1] > 2:
        parts.append(g1.new_zeros(g1.shape + (x.shape[-1] - 2,)))
    return torch.cat(parts, -1)


def ramp_initial_point(eps: float, delta: float, dx: int, dy: int, batch_shape=()):
    """x_1 solving h_eps(x_1) = delta, every other coordinate 0."""
    r = 1 + delta / (2 * eps)
    x = torch.zeros(tuple(batch_shape) + (dx,), dtype=DTYPE)
    x[..., 0] = math.sqrt(r * r - 1)
    return x, torch.zeros(tuple(batch_shape) + (dy,), dtype=DTYPE)


class Ramp(FiniteSumProblem):
    """Ramp family (C.5).

    Args:
        eps: ramp parameter epsilon (the target accuracy of the epoch-complexity sweep), 0 < eps <= 1/2.
        dx: ZO dimension (>= 2).
        n: number of components (even).
        beta: heterogeneity of the x_2 terms.
        c_y: scale of the logistic FO block.
        delta: initial gap F(z_0) - F*.
    """

    name = "ramp"

    def __init__(self, eps: float = 0.1, dx: int = 10, n: int = 2, beta: float = 1.0, c_y: float = 1.0,
                 delta: float = 1.0):
        check_ramp_args("ramp", eps, dx, n, "beta", beta, c_y, delta)
        self.eps, self.dx, self.n, self.beta, self.c_y, self.delta0 = eps, dx, n, beta, c_y, delta
        self.dy = 1
        signs = ramp_signs(n)
        self._bs, self._cs = beta * signs, -c_y * signs

    def _tables(self, j: torch.Tensor):
        """Per-component coefficients (beta s_j, -c_y s_j), looked up by index (fast path)."""
        if self._bs.device != j.device:
            self._bs, self._cs = self._bs.to(j.device), self._cs.to(j.device)
        return self._bs[j], self._cs[j]

    def value(self, j, x, y):
        bs, cs = self._tables(j)
        return ramp_x_value(self.eps, x, bs) + Fnn.softplus(cs * y[..., 0])

    def grad(self, j, x, y):
        bs, cs = self._tables(j)
        gx = ramp_x_grad(self.eps, x, bs)
        # d/dy log(1+exp(cs y)) = cs sigmoid(cs y), with cs = -c_y s_j
        gy = (cs * torch.sigmoid(cs * y[..., 0])).unsqueeze(-1)
        return gx, gy.expand(gx.shape[:-1] + (1,))

    def constants(self) -> HGSConstants:
        return HGSConstants(L_x=1.0, L_c=0.0, L0=self.c_y**2 / 4, L1=0.0,
                            G_x=math.sqrt(1 + self.beta**2), G_y=self.c_y, F_lower=math.log(2),
                            region="global (class constants for every eps <= 1/2)",
                            source="proofs/05-ramp.md",
                            # x: the +-beta x_2 terms deviate by exactly beta; y: the two logistic
                            # gradients deviate from their mean by exactly c_y/2 (proofs/07-theorem2.md)
                            varsigma_x_sq=self.beta**2, varsigma_y_sq=self.c_y**2 / 4)

    def initial_point(self, batch_shape=()):
        return ramp_initial_point(self.eps, self.delta0, self.dx, 1, batch_shape)

    def witness_points(self):
        """x_1 = 0, y = 0: h'' = 2 eps (L_x = 1 at eps = 1/2) and l'' = 1/4 (L0); x_1 = y = +-1e4: |h'| -> 2 eps,
        |l'| -> c_y (G_x at eps = 1/2, G_y); every component."""
        pts = []
        for j in range(self.n):
            x = torch.zeros(self.dx, dtype=DTYPE)
            pts.append((j, x, torch.zeros(1, dtype=DTYPE)))
            for s in (1.0, -1.0):
                xf = x.clone()
                xf[0] = 1e4
                pts.append((j, xf, torch.full((1,), s * 1e4, dtype=DTYPE)))
        return pts
