r"""TEMPLATE: copy this file to add a synthetic family (not registered; ``tests/test_objectives.py`` checks that it stays valid).

Steps:

1. Copy to ``hybridtheory/objectives/<yourfamily>.py`` and rename :class:`MyFamily`.
2. State the function and **derive** every constant in the module docstring (the math, the
   inequality used at each step, and where it comes from: a ``proofs/`` file or a derivation in the docstring).
   Say where the constants hold (``region``) and whether they are Hessian-form or first-order.
3. Implement the four abstract methods below, batched and in float64.
4. Register it: one line in ``_REGISTRY`` of ``hybridtheory/objectives/__init__.py``:
   ``"myfamily": "myfamily:MyFamily"``.
5. Test it (copy a block of ``tests/test_objectives.py``): gradient against autograd, soundness of
   every constant on random pairs (:func:`hybridtheory.hgs_check.check_pairs` with
   :func:`~hybridtheory.hgs_check.random_pairs`), and tightness at a documented maximiser for every
   constant you call tight. ``python -m hybridtheory.hgs_check --report`` shows the families it knows.

The example below is a real, valid family (so the template stays runnable):

.. math::
    f_i(x, y) = \tfrac12 a_i\|x\|^2 + b_i\,\sin(x_1)\,y_1 + \tfrac12\|y\|^2,\qquad a_i \in [1, 2],\ |b_i| \le 1.

Its Hessian blocks are :math:`H_{xx} = a_iI - b_i\sin(x_1)y_1 e_1e_1^\top` (unbounded in y!), so this
example certifies :math:`L_x` only on the slab :math:`|y_1| \le Y`: :math:`L_x = \max a_i + \max|b_i|\,Y`,
:math:`L_c = \max|b_i|` (:math:`H_{xy} = b_i\cos(x_1)e_1e_1^\top`), :math:`(L_0, L_1) = (1, 0)`;
no global gradient bound (``G_x = G_y = None``); and :math:`f_i \ge -|b_i||y_1| + y_1^2/2 \ge -b_i^2/2`,
so ``F_lower = -max b_i^2 / 2``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem


class MyFamily(FiniteSumProblem):
    """One-line summary (a proofs/ file or the docstring's derivation).

    Args:
        n, dx, dy: components and block sizes (state every parameter and its admissible range).
        Y: the slab |y_1| <= Y on which L_x is certified.
        seed: instance seed. Use ``np.random.default_rng(seed)`` or a ``torch.Generator``;
            never the global RNG (do not seed the global torch or numpy generators).

    Initial point: document it (here x0 = 1, y0 = 0).
    """

    name = "myfamily"  # the registry key

    def __init__(self, n: int = 4, dx: int = 3, dy: int = 2, Y: float = 1.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n, self.dx, self.dy, self.Y = n, dx, dy, float(Y)
        # store per-component data as float64 tensors indexed by the component j
        self.a = torch.as_tensor(rng.uniform(1.0, 2.0, size=n), dtype=DTYPE)
        self.b = torch.as_tensor(rng.uniform(-1.0, 1.0, size=n), dtype=DTYPE)

    # Shapes: x (*B, dx), y (*B, dy), j a LongTensor broadcastable to B; return shape B (value) or
    # (*B, dx), (*B, dy) (grad). Index per-component data with j and let torch broadcasting do the rest:
    # this is the fast path that sweeps run over many replicates at once.
    def value(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        j = torch.as_tensor(j, device=x.device)
        a, b = self.a[j], self.b[j]
        return 0.5 * a * x.square().sum(-1) + b * torch.sin(x[..., 0]) * y[..., 0] + 0.5 * y.square().sum(-1)

    def grad(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        j = torch.as_tensor(j, device=x.device)
        a, b = self.a[j].unsqueeze(-1), self.b[j]
        gx = a * x
        gx = gx + torch.nn.functional.pad((b * torch.cos(x[..., 0]) * y[..., 0]).unsqueeze(-1), (0, self.dx - 1))
        gy = y + torch.nn.functional.pad((b * torch.sin(x[..., 0])).unsqueeze(-1), (0, self.dy - 1))
        return gx, gy

    def constants(self) -> HGSConstants:
        bmax = float(self.b.abs().max())
        return HGSConstants(L_x=float(self.a.max()) + bmax * self.Y, L_c=bmax, L0=1.0, L1=0.0,
                            G_x=None, G_y=None, F_lower=-bmax**2 / 2,
                            region=f"L_x on the slab |y_1| <= Y = {self.Y:g}; L_c, L0 global",
                            form="hessian", source="objectives/template.py docstring")

    def initial_point(self, batch_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        bs = tuple(batch_shape)
        return torch.ones(*bs, self.dx, dtype=DTYPE), torch.zeros(*bs, self.dy, dtype=DTYPE)

    # Optional, used by hgs_check.random_pairs: points where the constants are certified. Return a
    # *convex* region's points so that segments between them stay inside.
    def sample_points(self, batch: int, generator: torch.Generator):
        x = 3.0 * torch.randn(batch, self.dx, generator=generator, dtype=DTYPE)
        y = torch.randn(batch, self.dy, generator=generator, dtype=DTYPE)
        y[:, 0] = self.Y * (2 * torch.rand(batch, generator=generator, dtype=DTYPE) - 1)
        return x, y
