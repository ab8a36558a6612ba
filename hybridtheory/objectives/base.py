r"""The finite-sum problem interface every synthetic family implements.

:math:`F(z) = \frac1n\sum_{i=1}^n f_i(z)`, :math:`z = (x, y)`, :math:`x\in\mathbb R^{d_x}` the ZO block,
:math:`y\in\mathbb R^{d_y}` the FO block (proofs/00-setting.md §0.1).

Everything is torch and *batched*: ``x`` has shape ``(*B, d_x)``, ``y`` has shape ``(*B, d_y)`` and a
component index ``j`` is a LongTensor broadcastable to ``B``; values come back with shape ``B``.
This lets a sweep run many seeds (and many step sizes) of the same problem in one tensor.

A new family is one new file: subclass :class:`FiniteSumProblem`, implement :meth:`value`,
:meth:`grad` and :meth:`constants`, and register it in ``objectives/__init__.py``
(see ``objectives/template.py``).
"""
from __future__ import annotations

import abc
from collections.abc import Sequence

import torch

from ..assumptions import HGSConstants

DTYPE = torch.float64


class FiniteSumProblem(abc.ABC):
    """Base class: a finite sum with certified hybrid-smoothness constants.

    Subclasses set ``n``, ``dx``, ``dy`` and ``name`` and implement :meth:`value`,
    :meth:`grad`, :meth:`constants` and :meth:`initial_point`.
    """

    name: str = "problem"
    n: int
    dx: int
    dy: int

    # -- per component -------------------------------------------------------------------------
    @abc.abstractmethod
    def value(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f_j(x, y), shape = broadcast of ``j`` and the batch shape of x, y."""

    @abc.abstractmethod
    def grad(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x f_j, grad_y f_j) at (x, y)."""

    @abc.abstractmethod
    def constants(self) -> HGSConstants:
        """Certified HGS constants and where they hold."""

    @abc.abstractmethod
    def initial_point(self, batch_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """The documented starting point z_0, repeated over ``batch_shape``."""

    # -- full sum (defaults evaluate all n components at once) ----------------------------------
    def _all(self, x: torch.Tensor, y: torch.Tensor):
        j = torch.arange(self.n, device=x.device)
        return j, x.unsqueeze(-2), y.unsqueeze(-2)

    def component_values(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """All f_i(x, y), shape ``(*B, n)``."""
        return self.value(*self._all(x, y))

    def full_value(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x, y), shape ``B``."""
        return self.component_values(x, y).mean(-1)

    def full_grad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x F, grad_y F)."""
        gx, gy = self.grad(*self._all(x, y))
        return gx.mean(-2), gy.mean(-2)

    def grad_norm_sq(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(||grad_x F||^2, ||grad_y F||^2), shape ``B`` each."""
        gx, gy = self.full_grad(x, y)
        return gx.square().sum(-1), gy.square().sum(-1)

    def initial_gap(self, x0: torch.Tensor | None = None, y0: torch.Tensor | None = None) -> float:
        """Certified Delta = F(z_0) - F_lower (an upper bound on F(z_0) - F*)."""
        if x0 is None:
            x0, y0 = self.initial_point()
        return float(self.full_value(x0, y0).max()) - self.constants().F_lower

    def witness_points(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Documented points ``(j, x, y)`` (unbatched) where certified constants are (nearly) attained.

        Used by :func:`hybridtheory.hgs_check.constant_ratios` (tests with teeth: half of every certified
        constant must be violated somewhere). Default: none (random points only)."""
        return []

    # -- autograd helpers for checkers (not used by the fast path) ------------------------------
    def hessian_blocks(self, j: int, x: torch.Tensor, y: torch.Tensor):
        """(H_xx, H_xy, H_yy) of f_j at one unbatched point, by autograd (for checks)."""
        def f(zz):
            return self.value(torch.tensor(j), zz[: self.dx], zz[self.dx:])
        z = torch.cat([x, y]).detach()
        H = torch.autograd.functional.hessian(f, z)
        return H[: self.dx, : self.dx], H[: self.dx, self.dx:], H[self.dx:, self.dx:]

    def oracle(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> "ProblemOracle":
        """The step oracle for sample(s) ``j`` acting on the live tensors ``x``, ``y``."""
        return ProblemOracle(self, j, x, y)

    def describe(self) -> dict:
        return {"name": self.name, "n": self.n, "dx": self.dx, "dy": self.dy,
                "constants": self.constants().to_dict()}


class ProblemOracle:
    """Adapter from a problem to :class:`hybridtheory.algorithm.step.Oracle`.

    Holds references to the live ``x``/``y`` tensors that the step perturbs and updates in place.
    """

    def __init__(self, problem: FiniteSumProblem, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        self.problem, self.j, self.x, self.y = problem, j, x, y

    def loss(self) -> torch.Tensor:
        return self.problem.value(self.j, self.x, self.y)

    def loss_and_grad(self, params):
        return self.problem.value(self.j, self.x, self.y), self.grad(params)

    def grad(self, params):
        gx, gy = self.problem.grad(self.j, self.x, self.y)
        out = []
        for p in params:
            if p is self.x:
                out.append(gx)
            elif p is self.y:
                out.append(gy)
            else:
                raise ValueError("oracle asked for the gradient of a tensor that is neither x nor y")
        return out
