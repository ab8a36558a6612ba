r"""The (L0, L1) catalogue (constants: proofs/01-hgs.md §1.4): single-block functions with certified Hessian-form constants.

A catalogue function is :math:`f:\mathbb R^d\to\mathbb R` with closed-form value, gradient and Hessian
operator norm, and a list of certified pairs :math:`(L_0, L_1)` with

.. math:: \|\nabla^2 f(y)\| \le L_0 + L_1\|\nabla f(y)\| \quad\text{for all } y \qquad\text{(Hessian form, A.1)}.

Design (why a separate small class): these functions have one block, no components, and several
certificates each; what the checks and the figure need is *pointwise* (gradient norm, Hessian norm,
bound), which a :class:`FiniteSumProblem` does not expose. :class:`CatalogueFunction` is that small
interface; :class:`CatalogueProblem` wraps one function and one certificate as a ``FiniteSumProblem``
with ``n = 1``, ``dx = 0`` (THEORY B.2 special case (b)) so that the generic HGS checker
(:mod:`hybridtheory.hgs_check`) can test Proposition 1 on it.

Interface of a :class:`CatalogueFunction` (``y`` has shape ``(*B, d)``, torch float64):

* ``value(y)``, ``grad(y)``, ``hessian_norm(y)`` (closed form; shapes ``B``, ``(*B, d)``, ``B``);
* ``certificates``: a tuple of :class:`Certificate` (``L0``, ``L1``, ``tight``, ``note``); ``tight`` means
  THEORY calls the constant tight and :meth:`CatalogueFunction.maximiser` returns a point where
  ``hessian_norm / (L0 + L1 ||grad||) >= 0.9`` (an exact maximiser, or a point approaching a supremum);
* ``f_star`` (``inf f``, or ``None`` if unbounded below) and ``grad_bound`` (``sup ||grad f||`` or ``None``);
* ``sample(n, rng)``: the documented sampling law for the figure and the tests.

Catalogue (THEORY C.1): ``power`` (:math:`|y|^k`), ``y4``, ``norm4`` (:math:`\|y\|^4`), ``exp``, ``cosh``,
``logistic``, ``logreg``, ``lse``, ``softmax_ce``. See each class.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as Fnn

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem


@dataclass(frozen=True)
class Certificate:
    """A certified Hessian-form pair: ||hess f|| <= L0 + L1 ||grad f|| everywhere."""

    L0: float
    L1: float
    tight: bool = False
    note: str = ""

    def bound(self, grad_norm: torch.Tensor) -> torch.Tensor:
        return self.L0 + self.L1 * grad_norm


class CatalogueFunction:
    """Base class of the single-block catalogue functions (see the module docstring)."""

    name = "function"
    d: int = 1
    certificates: tuple[Certificate, ...] = ()
    f_star: float | None = None
    grad_bound: float | None = None

    def value(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hessian_norm(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad_norm(self, y: torch.Tensor) -> torch.Tensor:
        return self.grad(y).norm(dim=-1)

    def sample(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def maximiser(self, cert_index: int = 0) -> torch.Tensor | None:
        """A point where certificate ``cert_index`` is (nearly) attained, or None if it is not tight."""
        return None

    def initial_point(self) -> torch.Tensor:
        return torch.ones(self.d, dtype=DTYPE)

    def _t(self, v) -> torch.Tensor:
        return torch.as_tensor(np.asarray(v, dtype=float), dtype=DTYPE)


class Power(CatalogueFunction):
    r""":math:`|y|^k`, :math:`k > 2`, scalar: :math:`(k(k-2)^{k-2}/L_1^{k-2},\ L_1)` for any :math:`L_1 > 0`.

    :math:`f'' - L_1|f'| = k(k-1)|y|^{k-2} - L_1k|y|^{k-1}` is maximised at :math:`|y^*| = (k-2)/L_1`
    with value :math:`k(k-2)^{k-2}/L_1^{k-2}`: **tight** (equality at :math:`y^*`).
    Samples: :math:`y \sim U[-3(k-2)/L_1, 3(k-2)/L_1]`.
    """

    name = "power"

    def __init__(self, k: float = 4.0, L1: float = 1.0):
        if not (k > 2 and L1 > 0):
            raise ValueError(f"power needs k > 2 and L1 > 0, got k={k}, L1={L1}")
        self.k, self.L1 = float(k), float(L1)
        self.certificates = (Certificate(k * (k - 2) ** (k - 2) / L1 ** (k - 2), L1, tight=True,
                                         note="equality at |y| = (k-2)/L1 (THEORY C.1)"),)
        self.f_star = 0.0

    def value(self, y):
        return y[..., 0].abs() ** self.k

    def grad(self, y):
        return (self.k * y[..., 0].abs() ** (self.k - 1) * torch.sign(y[..., 0])).unsqueeze(-1)

    def hessian_norm(self, y):
        return self.k * (self.k - 1) * y[..., 0].abs() ** (self.k - 2)

    def sample(self, n, rng):
        s = 3 * (self.k - 2) / self.L1
        return self._t(rng.uniform(-s, s, size=(n, 1)))

    def maximiser(self, cert_index=0):
        return self._t([(self.k - 2) / self.L1])


class Quartic(Power):
    r""":math:`y^4`: :math:`(16/L_1^2, L_1)`, tight at :math:`y = 2/L_1` (THEORY C.1, the confirmed row)."""

    name = "y4"

    def __init__(self, L1: float = 1.0):
        super().__init__(k=4.0, L1=L1)


class Norm4(CatalogueFunction):
    r""":math:`\|y\|^4` on :math:`\mathbb R^d`: :math:`\nabla = 4\|y\|^2y`, :math:`\|\nabla^2\| = 12\|y\|^2`
    (:math:`\nabla^2 = 4\|y\|^2I + 8yy^\top`), so :math:`(16/L_1^2, L_1)`, tight at :math:`\|y\| = 2/L_1`.
    Samples: direction uniform, radius :math:`U[0, 6/L_1]`.
    """

    name = "norm4"

    def __init__(self, d: int = 3, L1: float = 1.0):
        self.d, self.L1 = int(d), float(L1)
        self.certificates = (Certificate(16 / L1**2, L1, tight=True, note="equality at ||y|| = 2/L1"),)
        self.f_star = 0.0

    def value(self, y):
        return y.square().sum(-1).square()

    def grad(self, y):
        return 4 * y.square().sum(-1, keepdim=True) * y

    def hessian_norm(self, y):
        return 12 * y.square().sum(-1)

    def sample(self, n, rng):
        v = rng.normal(size=(n, self.d))
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
        return self._t(v * rng.uniform(0, 6 / self.L1, size=(n, 1)))

    def maximiser(self, cert_index=0):
        v = np.zeros(self.d)
        v[0] = 2 / self.L1
        return self._t(v)


class Exp(CatalogueFunction):
    r""":math:`e^y`: :math:`(0, 1)` with **equality** :math:`f'' = f'` everywhere (also equality in Prop. 1(i)).
    Samples: :math:`U[-6, 4]`."""

    name = "exp"
    certificates = (Certificate(0.0, 1.0, tight=True, note="f'' = |f'| everywhere"),)
    f_star = 0.0  # infimum, not attained

    def value(self, y):
        return torch.exp(y[..., 0])

    def grad(self, y):
        return torch.exp(y)

    def hessian_norm(self, y):
        return torch.exp(y[..., 0])

    def sample(self, n, rng):
        return self._t(rng.uniform(-6, 4, size=(n, 1)))

    def maximiser(self, cert_index=0):
        return self._t([0.0])


class Cosh(CatalogueFunction):
    r""":math:`\cosh y`: :math:`(1, 1)` (:math:`\cosh \le 1 + |\sinh|`); tight at 0 (:math:`f''=1`, :math:`f'=0`),
    so no :math:`L_0 < 1` works, although it is the average of the (0, 1) functions :math:`e^{y}` and
    :math:`e^{-y}` (THEORY A.1: finite sums do not preserve (L0, L1)). Samples: :math:`U[-5, 5]`."""

    name = "cosh"
    certificates = (Certificate(1.0, 1.0, tight=True, note="equality at y = 0"),)
    f_star = 1.0

    def value(self, y):
        return torch.cosh(y[..., 0])

    def grad(self, y):
        return torch.sinh(y)

    def hessian_norm(self, y):
        return torch.cosh(y[..., 0])

    def sample(self, n, rng):
        return self._t(rng.uniform(-5, 5, size=(n, 1)))

    def maximiser(self, cert_index=0):
        return self._t([0.0])


class Logistic(CatalogueFunction):
    r""":math:`\ell(t) = \log(1+e^{-t})`: :math:`\ell' = -\sigma(-t)`, :math:`\ell'' = \sigma(t)\sigma(-t)`.

    Certificates: (0, 1) since :math:`\ell'' \le \sigma(-t) = |\ell'|` (ratio :math:`\sigma(t) \to 1` as
    :math:`t\to\infty`: a supremum; the maximiser returned is t = 20), and (1/4, 0), equality at 0.
    Samples: :math:`U[-12, 12]`.
    """

    name = "logistic"
    certificates = (Certificate(0.0, 1.0, tight=True, note="sup as t -> +inf (ratio sigma(t))"),
                    Certificate(0.25, 0.0, tight=True, note="equality at t = 0"))
    f_star = 0.0
    grad_bound = 1.0

    def value(self, y):
        return Fnn.softplus(-y[..., 0])

    def grad(self, y):
        return -torch.sigmoid(-y)

    def hessian_norm(self, y):
        return torch.sigmoid(y[..., 0]) * torch.sigmoid(-y[..., 0])

    def sample(self, n, rng):
        return self._t(rng.uniform(-12, 12, size=(n, 1)))

    def maximiser(self, cert_index=0):
        return self._t([20.0 if cert_index == 0 else 0.0])


class LogisticRegression(CatalogueFunction):
    r""":math:`w \mapsto \ell(b\,a^\top w)`, :math:`b = \pm1`: :math:`\nabla = b\ell'a`, :math:`\nabla^2 = \ell''aa^\top`.

    Certificates :math:`(0, \|a\|)` and :math:`(\|a\|^2/4, 0)` (THEORY C.1), tight as for the logistic
    (maximisers: :math:`b\,a^\top w = 20` and :math:`= 0`). ``a ~ N(0, I)`` from ``seed``.
    Samples: :math:`w = t\,b\,a/\|a\|^2 + \text{(orthogonal } N(0,I))`, :math:`t\sim U[-12,12]`.
    """

    name = "logreg"

    def __init__(self, d: int = 3, b: float = 1.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.d, self.b = int(d), float(np.sign(b) or 1.0)
        self.a = self._t(rng.normal(size=d))
        na = float(self.a.norm())
        self.certificates = (Certificate(0.0, na, tight=True, note="sup as b a^T w -> +inf"),
                             Certificate(na**2 / 4, 0.0, tight=True, note="equality at a^T w = 0"))
        self.f_star, self.grad_bound = 0.0, na

    def _t_of(self, y):
        return self.b * (y * self.a).sum(-1)

    def value(self, y):
        return Fnn.softplus(-self._t_of(y))

    def grad(self, y):
        return (-self.b * torch.sigmoid(-self._t_of(y))).unsqueeze(-1) * self.a

    def hessian_norm(self, y):
        t = self._t_of(y)
        return torch.sigmoid(t) * torch.sigmoid(-t) * self.a.square().sum()

    def sample(self, n, rng):
        t = rng.uniform(-12, 12, size=(n, 1))
        a = self.a.numpy()
        w = rng.normal(size=(n, self.d))
        w -= np.outer(w @ a, a) / (a @ a)
        return self._t(w + t * self.b * a / (a @ a))

    def maximiser(self, cert_index=0):
        t = 20.0 if cert_index == 0 else 0.0
        return t * self.b * self.a / self.a.square().sum()

    def initial_point(self):
        return torch.zeros(self.d, dtype=DTYPE)


def _softmax_parts(v: torch.Tensor):
    """(p, one_minus) with one_minus_i = sum_{j != i} p_j computed as a sum of positive terms.

    Why: 1 - p_i in floating point loses all digits when p_i -> 1, which is exactly where the
    softmax-CE ratio is extremal (THEORY C.1 warns of a spurious 1.618 from the naive path).
    """
    p = torch.softmax(v, dim=-1)
    k = v.shape[-1]
    off = 1.0 - torch.eye(k, dtype=v.dtype, device=v.device)
    one_minus = (p.unsqueeze(-2) * off).sum(-1)
    return p, one_minus


def _lse_hessian_norm(v: torch.Tensor) -> torch.Tensor:
    """lambda_max(diag p - p p^T), with the diagonal p_i (1 - p_i) formed from the stable 1 - p_i."""
    p, one_minus = _softmax_parts(v)
    H = -p.unsqueeze(-1) * p.unsqueeze(-2)
    H = H - torch.diag_embed(torch.diagonal(H, dim1=-2, dim2=-1)) + torch.diag_embed(p * one_minus)
    return torch.linalg.eigvalsh(H)[..., -1]


def _logit_samples(n, k, rng):
    """Logits s * N(0, I_k) with a log-uniform scale s in [0.1, 30] (from uniform to near one-hot)."""
    s = np.exp(rng.uniform(math.log(0.1), math.log(30.0), size=(n, 1)))
    return s * rng.normal(size=(n, k))


class LogSumExp(CatalogueFunction):
    r""":math:`\log\sum_i e^{v_i}`: :math:`\nabla = p = \mathrm{softmax}(v)`, :math:`\nabla^2 = \mathrm{diag}\,p - pp^\top`.

    Certificates: :math:`(1/2, 0)` (:math:`\lambda_{\max} = \max_{\|u\|=1}\mathrm{Var}_p(u) \le 1/2`), reached at
    :math:`p = (1/2, 1/2, 0, \dots)` (the maximiser ``(0, 0, -60, ...)`` approaches it for k > 2);
    and :math:`(0, \sqrt k/2)` (:math:`\|p\| \ge 1/\sqrt k`), tight only for k = 2 (at v = 0).
    Unbounded below (``f_star = None``). Samples: see ``_logit_samples``.
    """

    name = "lse"

    def __init__(self, k: int = 4):
        if k < 2:
            raise ValueError(f"lse needs k >= 2, got {k}")
        self.d = int(k)
        self.certificates = (Certificate(0.5, 0.0, tight=True, note="p = (1/2, 1/2, 0, ...)"),
                             Certificate(0.0, math.sqrt(k) / 2, tight=(k == 2), note="tight only for k = 2"))
        self.grad_bound = 1.0

    def value(self, y):
        return torch.logsumexp(y, dim=-1)

    def grad(self, y):
        return torch.softmax(y, dim=-1)

    def hessian_norm(self, y):
        return _lse_hessian_norm(y)

    def sample(self, n, rng):
        return self._t(_logit_samples(n, self.d, rng))

    def maximiser(self, cert_index=0):
        if not self.certificates[cert_index].tight:
            return None
        v = np.full(self.d, -60.0)
        v[:2] = 0.0
        return self._t(v)


class SoftmaxCE(CatalogueFunction):
    r"""Softmax cross-entropy in the logits, :math:`f(v) = \mathrm{LSE}(v) - v_c`: :math:`\nabla = p - e_c`.

    Certificates: :math:`(0, 2)` (THEORY C.1 proof: :math:`\mathrm{Var}_p(u) \le \sum_{i\ne c}p_i(u_i-u_c)^2
    \le 2(1-p_c) \le 2\|p-e_c\|`), **not tight**: the observed supremum of
    :math:`\|\nabla^2\|/(2\|\nabla\|)` is about :math:`\sqrt2/2` (p -> e_c with the residual mass on one class);
    and :math:`(1/2, 0)` as for LSE (tight at :math:`p = (1/2, 1/2, 0,\dots)`, which does not involve c).
    :math:`1 - p_c` is computed as :math:`\sum_{j\ne c}p_j` (see ``_softmax_parts``).
    """

    name = "softmax_ce"

    def __init__(self, k: int = 4, c: int = 0):
        if not (k >= 2 and 0 <= c < k):
            raise ValueError(f"softmax_ce needs k >= 2 and 0 <= c < k, got k={k}, c={c}")
        self.d, self.c = int(k), int(c)
        self.certificates = (Certificate(0.0, 2.0, tight=False, note="observed sup ratio ~ sqrt(2)/2"),
                             Certificate(0.5, 0.0, tight=True, note="p = (1/2, 1/2, 0, ...)"))
        self.f_star, self.grad_bound = 0.0, math.sqrt(2.0)

    def value(self, y):
        return torch.logsumexp(y, dim=-1) - y[..., self.c]

    def grad(self, y):
        p, one_minus = _softmax_parts(y)
        g = p.clone()
        g[..., self.c] = -one_minus[..., self.c]
        return g

    def hessian_norm(self, y):
        return _lse_hessian_norm(y)

    def sample(self, n, rng):
        return self._t(_logit_samples(n, self.d, rng))

    def maximiser(self, cert_index=0):
        if not self.certificates[cert_index].tight:
            return None
        v = np.full(self.d, -60.0)
        v[:2] = 0.0
        return self._t(v)


CATALOGUE: dict[str, type[CatalogueFunction]] = {
    cls.name: cls for cls in (Power, Quartic, Norm4, Exp, Cosh, Logistic, LogisticRegression, LogSumExp, SoftmaxCE)
}


def make_function(name: str, **params) -> CatalogueFunction:
    """Build the catalogue function ``name`` (keys of :data:`CATALOGUE`) with its keyword parameters."""
    if name not in CATALOGUE:
        raise ValueError(f"unknown catalogue function {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    return CATALOGUE[name](**params)


def local_smoothness_samples(family_name: str, n_points: int, seed: int, certificate: int = 0,
                             **params) -> dict[str, np.ndarray]:
    """Data for the figure "local smoothness vs gradient norm" (scatter), for one catalogue function.

    Draws ``n_points`` points from the function's documented law (``sample``) with
    ``np.random.default_rng(seed)`` and returns numpy arrays:

    * ``"grad_norm"``: ||grad f(y)||, shape (n_points,);
    * ``"hess_norm"``: ||hess f(y)|| (closed form), shape (n_points,);
    * ``"bound"``: L0 + L1 ||grad f(y)|| for certificate ``certificate`` (default: the first listed);
    * ``"ratio"``: hess_norm / bound (<= 1 by the certificate);
    * ``"points"``: the points, shape (n_points, d);
    * ``"L0"``, ``"L1"``: the certificate used (0-d arrays).

    ``params`` go to the function's constructor (e.g. ``k=6, L1=0.5`` for ``"power"``).
    """
    f = make_function(family_name, **params)
    cert = f.certificates[certificate]
    y = f.sample(int(n_points), np.random.default_rng(seed))
    gn = f.grad_norm(y)
    hn = f.hessian_norm(y)
    bound = cert.bound(gn)
    return {"grad_norm": gn.numpy(), "hess_norm": hn.numpy(), "bound": bound.numpy(),
            "ratio": (hn / bound).numpy(), "points": y.numpy(),
            "L0": np.asarray(cert.L0), "L1": np.asarray(cert.L1)}


class CatalogueProblem(FiniteSumProblem):
    """One catalogue function and one certificate as a ``FiniteSumProblem`` (n = 1, dx = 0, dy = d).

    Constants: L_x = L_c = G_x = 0, (L0, L1) from the certificate, G_y = ``grad_bound`` (None if
    unbounded), F_lower = ``f_star`` (``-inf`` for LSE, which is unbounded below), Hessian form.

    Args:
        function: a catalogue name (``CATALOGUE``).
        certificate: index into the function's certificates.
        **params: the function's constructor parameters.
    """

    name = "catalogue"
    n = 1
    dx = 0

    def __init__(self, function: str = "y4", certificate: int = 0, **params):
        self.function = make_function(function, **params)
        self.certificate_index = int(certificate)
        self.certificate = self.function.certificates[self.certificate_index]
        self.dy = self.function.d
        self.params = dict(function=function, certificate=certificate, **params)

    def _bshape(self, j, x, y):
        return torch.broadcast_shapes(torch.as_tensor(j).shape, x.shape[:-1], y.shape[:-1])

    def value(self, j, x, y):
        return self.function.value(y).expand(self._bshape(j, x, y))

    def grad(self, j, x, y):
        bs = self._bshape(j, x, y)
        return x.new_zeros(*bs, 0), self.function.grad(y).expand(*bs, self.dy)

    def constants(self) -> HGSConstants:
        f = self.function
        return HGSConstants(L_x=0.0, L_c=0.0, L0=self.certificate.L0, L1=self.certificate.L1, G_x=0.0,
                            G_y=f.grad_bound, F_lower=-math.inf if f.f_star is None else f.f_star,
                            region="global", form="hessian",
                            source=f"proofs/01-hgs.md §1.4 ({f.name}: {self.certificate.note})")

    def initial_point(self, batch_shape: Sequence[int] = ()):
        bs = tuple(batch_shape)
        return torch.zeros(*bs, 0, dtype=DTYPE), self.function.initial_point().expand(*bs, self.dy).clone()

    def sample_points(self, batch: int, generator: torch.Generator):
        """The function's documented law, seeded from the torch generator."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        y = self.function.sample(batch, np.random.default_rng(seed))
        return torch.zeros(batch, 0, dtype=DTYPE), y
