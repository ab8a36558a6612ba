r"""Hybrid generalized smoothness (HGS): the constants a problem certifies, and where.

Definition (proofs/01-hgs.md §1.1, first-order form, per component). ``f`` is in
HGS(L_x, L_c, L0, L1) if for all z = (x, y), z' = (x', y') with ``L1 ||y'-y|| <= 1``:

.. math::
    \|\nabla_x f(z') - \nabla_x f(z)\| &\le L_x \|x'-x\| + L_c \|y'-y\|      \quad (H1) \\
    \|\nabla_y f(z') - \nabla_y f(z)\| &\le L_c \|x'-x\| + (L_0 + L_1\|\nabla_y f(z)\|)\|y'-y\| \quad (H2)

Most families certify the *Hessian form* (``||H_xx|| <= L_x``, ``||H_xy|| <= L_c``,
``||H_yy|| <= L0 + L1 ||grad_y f||``), which implies (H1) exactly and (H2) with the factor
``phi(L1 ||dy||) = (e^t - 1)/t`` on the right side (Proposition 1, ``proofs/``). The ``form`` field
says which one a problem certifies, and checkers apply ``phi`` accordingly.

Bounded gradients (A3): ``||grad_x f_i|| <= G_x`` and ``||grad_y f_i|| <= G_y``; under (A3) the
y-block is globally ``L_y = L0 + L1 G_y`` smooth (Lemma 1), which is the constant the theorem uses.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

FORMS = ("hessian", "first_order")


def phi(t: float) -> float:
    """(e^t - 1)/t with phi(0) = 1: the Proposition 1 factor between Hessian and first-order forms."""
    return 1.0 if t == 0 else math.expm1(t) / t


@dataclass(frozen=True)
class HGSConstants:
    """Certified constants of a finite sum's components (class constants: max over i).

    Attributes:
        L_x: Lipschitz constant of grad_x in x (ZO block).
        L_c: coupling constant (cross block).
        L0, L1: (L0, L1) constants of the FO block; ``L1 = 0`` is plain block smoothness.
        G_x, G_y: bounds on the component block gradients (``None``: no global bound).
        F_lower: a certified lower bound on F* (used for Delta = F(z0) - F_lower).
        region: where the constants hold (``"global"`` or a description of a region).
        form: ``"hessian"`` or ``"first_order"`` (see module docstring).
        source: where the constants come from (a proofs/ file or the module's derivation).
        varsigma_x_sq, varsigma_y_sq: bounds on the gradient heterogeneity per block,
            ``(1/n) sum_i ||grad_b f_i(z) - grad_b F(z)||^2 <= varsigma_b^2`` for all z (Theorem 2,
            ``proofs/07-theorem2.md``); ``None``: not certified.
    """

    L_x: float
    L_c: float
    L0: float
    L1: float
    G_x: float | None
    G_y: float | None
    F_lower: float
    region: str = "global"
    form: str = "hessian"
    source: str = ""
    varsigma_x_sq: float | None = None
    varsigma_y_sq: float | None = None

    def __post_init__(self) -> None:
        for name in ("L_x", "L_c", "L0", "L1", "G_x", "G_y", "varsigma_x_sq", "varsigma_y_sq"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"HGS constant {name} must be finite and >= 0, got {v}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")

    @property
    def L_y(self) -> float:
        """Global y-block smoothness under (A3): L0 + L1 * G_y (Lemma 1)."""
        if self.L1 == 0:
            return self.L0
        if self.G_y is None:
            raise ValueError("L_y = L0 + L1*G_y needs a gradient bound G_y, which this problem lacks")
        return self.L0 + self.L1 * self.G_y

    @property
    def L_hat_x(self) -> float:
        return self.L_x + self.L_c

    @property
    def L_hat_y(self) -> float:
        return self.L_y + self.L_c

    @property
    def bounded_gradients(self) -> bool:
        return self.G_x is not None and self.G_y is not None

    @property
    def bounded_heterogeneity(self) -> bool:
        return self.varsigma_x_sq is not None and self.varsigma_y_sq is not None

    def to_dict(self) -> dict:
        return asdict(self)
