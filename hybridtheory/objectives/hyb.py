r"""HYB: a bounded-gradient hybrid family with every constant in closed form (proofs/01-hgs.md §1.4).

Per component :math:`i`, with the pseudo-Huber :math:`\rho_\delta(t) = \delta^2(\sqrt{1+t^2/\delta^2}-1)`
and the logistic loss :math:`\ell(t) = \log(1+e^{-t})`:

.. math::
    f_i(x, y) = \sum_{k=1}^K \rho_\delta(a_{ik}^\top x - b_{ik}) + \ell(c_i^\top y - e_i)
                + \kappa_i \sin(p_i^\top x)\cos(q_i^\top y).

Facts used (all elementary): :math:`|\rho_\delta'| \le \delta`, :math:`0 < \rho_\delta'' \le 1`,
:math:`|\ell'| \le 1`, :math:`0 < \ell'' = \sigma(t)\sigma(-t) \le \min(1/4, |\ell'|)`.

Blocks of the Hessian (:math:`s_x = \sin(p^\top x)`, :math:`c_x = \cos(p^\top x)`, same for y):

* :math:`H_{xx} = A^\top \mathrm{diag}(\rho'') A - \kappa s_x c_y\, p p^\top`
  so :math:`\|H_{xx}\| \le \lambda_{\max}(A^\top A) + |\kappa|\|p\|^2 =: L_x`;
* :math:`H_{xy} = -\kappa c_x s_y\, p q^\top` so :math:`\|H_{xy}\| \le |\kappa|\|p\|\|q\| =: L_c`,
  attained at :math:`x = 0`, :math:`q^\top y = \pi/2` (the documented maximiser, :meth:`HYB.witness`);
* :math:`H_{yy} = \ell''\, c c^\top - \kappa s_x c_y\, q q^\top`.

Two certificates for the y block (Hessian form, proofs/01-hgs.md §1.4):

* (L0, L1) = :math:`(|\kappa|\|q\|(\|c\| + \|q\|),\ \|c\|)`: from
  :math:`\ell''\|c\|^2 \le |\ell'|\|c\|^2 \le \|c\|(\|\nabla_y f\| + |\kappa|\|q\|)`;
* L1 = 0 alternative: :math:`L_0^{alt} = \max_{t\in[0,1/4],\,u\in[-|\kappa|,|\kappa|]}\|t\,cc^\top + u\,qq^\top\|
  = \lambda_{\max}(cc^\top/4 + |\kappa| qq^\top)` (convex in (t, u), max at the PSD vertex),
  computed exactly from the 2x2 Gram matrix of (c, q). This *sharpens* THEORY's :math:`\|c\|^2/4 + |\kappa|\|q\|^2` (it equals
  it when :math:`q \parallel c`, and is never larger), and it is attained whenever c and q are
  linearly independent and p != 0 (take :math:`c^\top y = e`, :math:`q^\top y = 0`,
  :math:`\sin(p^\top x) = -\mathrm{sign}(\kappa)`), so it is then the exact supremum of :math:`\|H_{yy}\|`.

Gradient bounds (A3): :math:`G_x = \delta\min(\sum_k\|a_{ik}\|, \sqrt K\|A_i\|_2) + |\kappa|\|p\|`,
:math:`G_y = \|c\| + |\kappa|\|q\|`. Class constants are maxima over i.

Which certificate :meth:`HYB.constants` returns: the one with the smaller theorem constant
:math:`L_y = L_0 + L_1 G_y` (Lemma 1). With the class-level :math:`G_y` the L1 = 0 alternative
always wins (for the maximising i, :math:`L_0 + L_1G_y \ge \|c\|^2 + |\kappa|\|q\|^2 \ge L_0^{alt}`),
which is THEORY B.6(ii)'s caveat made concrete; the comparison is still computed, not assumed.
:meth:`HYB.constants_l0l1` and :meth:`HYB.constants_alt` expose both.

Lower bound: :math:`\rho_\delta, \ell \ge 0` so :math:`F \ge -\mathrm{mean}_i|\kappa_i|`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..assumptions import HGSConstants
from .base import DTYPE, FiniteSumProblem


def _gather(t: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    return t[j.long()]


class HYB(FiniteSumProblem):
    """The HYB family (proofs/01-hgs.md §1.4): pseudo-Huber in x + logistic in y + bounded trig coupling.

    Args:
        n, dx, dy: number of components and block sizes.
        K: pseudo-Huber terms per component.
        delta: pseudo-Huber width (bounds ``|rho'|``).
        kappa: coupling amplitude scale; ``kappa_i = kappa * s_i * U[0.5, 1]`` with a random sign.
        c_scale: scale of the logistic direction ``c_i``.
        seed: instance seed (``np.random.default_rng(seed)``).

    Random instance: ``a_ik ~ N(0, I/dx)``, ``b_ik ~ N(0, 1)``, ``c_i ~ c_scale N(0, I/dy)``,
    ``e_i ~ N(0, 1)``, ``p_i ~ N(0, I/dx)``, ``q_i ~ N(0, I/dy)``.
    Initial point: ``x0 = 3 u / ||u||``, ``y0 = 3 v / ||v||`` with ``u, v ~ N(0, I)`` drawn after the
    instance from the same generator (so it is a pure function of ``seed``).
    Use :meth:`from_arrays` to build a specific instance.
    """

    name = "hyb"

    def __init__(self, n: int = 4, dx: int = 6, dy: int = 4, K: int = 3, delta: float = 1.0,
                 kappa: float = 1.0, c_scale: float = 1.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(n, K, dx)) / math.sqrt(dx)
        b = rng.normal(size=(n, K))
        c = c_scale * rng.normal(size=(n, dy)) / math.sqrt(dy)
        e = rng.normal(size=n)
        kap = kappa * rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.5, 1.0, size=n)
        p = rng.normal(size=(n, dx)) / math.sqrt(dx)
        q = rng.normal(size=(n, dy)) / math.sqrt(dy)
        u, v = rng.normal(size=dx), rng.normal(size=dy)
        x0 = 3.0 * u / np.linalg.norm(u)
        y0 = 3.0 * v / np.linalg.norm(v)
        self._setup(a, b, c, e, kap, p, q, delta, x0, y0)
        self.params = dict(n=n, dx=dx, dy=dy, K=K, delta=delta, kappa=kappa, c_scale=c_scale, seed=seed)

    @classmethod
    def from_arrays(cls, a, b, c, e, kappa, p, q, delta: float = 1.0, x0=None, y0=None) -> HYB:
        """A specific instance: ``a (n,K,dx)``, ``b (n,K)``, ``c (n,dy)``, ``e (n,)``, ``kappa (n,)``,
        ``p (n,dx)``, ``q (n,dy)``; initial point zero unless given."""
        obj = cls.__new__(cls)
        a = np.asarray(a, dtype=float)
        c = np.asarray(c, dtype=float)
        x0 = np.zeros(a.shape[-1]) if x0 is None else np.asarray(x0, dtype=float)
        y0 = np.zeros(c.shape[-1]) if y0 is None else np.asarray(y0, dtype=float)
        obj._setup(a, np.asarray(b, float), c, np.asarray(e, float), np.asarray(kappa, float),
                   np.asarray(p, float), np.asarray(q, float), float(delta), x0, y0)
        obj.params = dict(n=obj.n, dx=obj.dx, dy=obj.dy, K=a.shape[1], delta=float(delta), from_arrays=True)
        return obj

    def _setup(self, a, b, c, e, kap, p, q, delta, x0, y0) -> None:
        self.n, self.K, self.dx = a.shape
        self.dy = c.shape[1]
        if delta <= 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        self.delta = float(delta)
        t = lambda arr: torch.as_tensor(np.asarray(arr), dtype=DTYPE)  # noqa: E731
        self.a, self.b, self.c, self.e = t(a), t(b), t(c), t(e)
        self.kappa, self.p, self.q = t(kap), t(p), t(q)
        self._x0, self._y0 = t(x0), t(y0)
        self._component_constants()

    # -- closed-form per-component constants -----------------------------------------------------
    def _component_constants(self) -> None:
        a, c, p, q = (x.numpy() for x in (self.a, self.c, self.p, self.q))
        kap = np.abs(self.kappa.numpy())
        nc, nq, npn = (np.linalg.norm(v, axis=-1) for v in (c, q, p))
        spec_a = np.linalg.norm(a, ord=2, axis=(-2, -1))  # ||A_i||_2, A_i = rows a_ik
        self.comp = {
            "L_x": spec_a**2 + kap * npn**2,
            "L_c": kap * npn * nq,
            "G_x": self.delta * np.minimum(np.linalg.norm(a, axis=-1).sum(-1), math.sqrt(self.K) * spec_a)
            + kap * npn,
            "G_y": nc + kap * nq,
            "L0": kap * nq * (nc + nq),
            "L1": nc,
            "L0_alt": np.array([self._alt_l0(c[i], q[i], kap[i]) for i in range(self.n)]),
        }

    @staticmethod
    def _alt_l0(c: np.ndarray, q: np.ndarray, kap: float) -> float:
        """max over t in [0, 1/4], |u| <= kap of ||t cc^T + u qq^T||_2 = lambda_max(cc^T/4 + kap qq^T).

        Convex in (t, u), so the max is at a vertex; the PSD vertex (1/4, +kap) dominates the others
        (an indefinite t cc^T - kap qq^T has norm <= max(t|c|^2, kap|q|^2)). Its nonzero eigenvalues are
        those of the 2x2 matrix diag(1/4, kap) G, G the Gram matrix of (c, q).
        """
        m = np.array([[0.25 * (c @ c), 0.25 * (c @ q)], [kap * (c @ q), kap * (q @ q)]])
        return float(np.max(np.linalg.eigvals(m).real))

    def _base_kwargs(self) -> dict:
        comp = self.comp
        return dict(L_x=float(comp["L_x"].max()), L_c=float(comp["L_c"].max()),
                    G_x=float(comp["G_x"].max()), G_y=float(comp["G_y"].max()),
                    F_lower=-float(np.abs(self.kappa.numpy()).mean()), region="global", form="hessian")

    def constants_l0l1(self) -> HGSConstants:
        """The (L0, L1) certificate: (max |k||q|(|c|+|q|), max |c|) (proofs/01-hgs.md §1.4)."""
        return HGSConstants(L0=float(self.comp["L0"].max()), L1=float(self.comp["L1"].max()),
                            source="proofs/01-hgs.md §1.4, (L0,L1) certificate", **self._base_kwargs())

    def constants_alt(self) -> HGSConstants:
        """The L1 = 0 certificate: exact vertex maximum of ||l'' cc^T - k s c qq^T|| (<= |c|^2/4 + |k||q|^2)."""
        return HGSConstants(L0=float(self.comp["L0_alt"].max()), L1=0.0,
                            source="proofs/01-hgs.md §1.4, L1 = 0 alternative (sharpened: exact vertex max)",
                            **self._base_kwargs())

    def constants(self) -> HGSConstants:
        """The certificate with the smaller L_y = L0 + L1 G_y (in practice always the L1 = 0 one)."""
        a, b = self.constants_l0l1(), self.constants_alt()
        return a if a.L_y < b.L_y else b

    def initial_point(self, batch_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        bs = tuple(batch_shape)
        return self._x0.expand(*bs, self.dx).clone(), self._y0.expand(*bs, self.dy).clone()

    def to(self, device) -> HYB:
        """Move the instance data to ``device`` (also done lazily on the first call with tensors there)."""
        for name in ("a", "b", "c", "e", "kappa", "p", "q", "_x0", "_y0"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    # -- fast path: closed form, vectorised over the batch shape and over j ----------------------
    def _parts(self, j, x, y):
        if self.a.device != x.device:
            self.to(x.device)
        j = torch.as_tensor(j, device=x.device)
        a, b = _gather(self.a, j), _gather(self.b, j)                         # (*J,K,dx), (*J,K)
        r = (a @ x.unsqueeze(-1)).squeeze(-1) - b                               # (*B,K)
        sc = (_gather(self.c, j) * y).sum(-1) - _gather(self.e, j)              # c^T y - e
        px = (_gather(self.p, j) * x).sum(-1)
        qy = (_gather(self.q, j) * y).sum(-1)
        return j, a, r, sc, px, qy

    def value(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        j, _, r, sc, px, qy = self._parts(j, x, y)
        d2 = self.delta**2
        # rho = t^2 / (sqrt(1 + t^2/d^2) + 1): the stable form of d^2 (sqrt(1+t^2/d^2) - 1)
        huber = (r.square() / (torch.sqrt(1 + r.square() / d2) + 1)).sum(-1)
        return huber + torch.nn.functional.softplus(-sc) + _gather(self.kappa, j) * torch.sin(px) * torch.cos(qy)

    def grad(self, j: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        j, a, r, sc, px, qy = self._parts(j, x, y)
        kap = _gather(self.kappa, j)
        drho = r / torch.sqrt(1 + r.square() / self.delta**2)                   # (*B,K)
        gx = (drho.unsqueeze(-1) * a).sum(-2) \
            + (kap * torch.cos(px) * torch.cos(qy)).unsqueeze(-1) * _gather(self.p, j)
        dl = -torch.sigmoid(-sc)                                                # l'(t) = -sigma(-t)
        gy = dl.unsqueeze(-1) * _gather(self.c, j) \
            - (kap * torch.sin(px) * torch.sin(qy)).unsqueeze(-1) * _gather(self.q, j)
        return gx, gy

    # -- documented maximisers -------------------------------------------------------------------
    def witness(self, constant: str) -> tuple[int, torch.Tensor, torch.Tensor]:
        """A point (j, x, y) where a Hessian block reaches its certified bound.

        ``"L_c"``: i = argmax |k_i||p_i||q_i|, x = 0 (cos = 1), y = (pi/2) q/||q||^2 (sin = 1), so
        ||H_xy|| = |k||p||q| exactly. ``"L0_alt"``: i = argmax L0_alt_i; for linearly independent
        (c, q) solve c^T y = e, q^T y = 0 and set p^T x = -sign(k) pi/2, so H_yy = cc^T/4 + |k| qq^T
        exactly (the y solve is least squares on the two constraints; exact when c, q are independent).
        """
        if constant == "L_c":
            i = int(np.argmax(self.comp["L_c"]))
            q = self.q[i]
            return i, torch.zeros(self.dx, dtype=DTYPE), (math.pi / 2) * q / q.dot(q)
        if constant == "L0_alt":
            i = int(np.argmax(self.comp["L0_alt"]))
            c, q, p = self.c[i].numpy(), self.q[i].numpy(), self.p[i].numpy()
            kap = float(self.kappa[i])
            # H_yy = l'' cc^T - k sin(p^T x) cos(q^T y) qq^T; want l'' = 1/4 (c^T y = e), cos(q^T y) = 1
            # (q^T y = 0) and -k sin(p^T x) = |k| (p^T x = -sign(k) pi/2)
            x = (-math.copysign(math.pi / 2, kap) / (p @ p)) * p
            y, *_ = np.linalg.lstsq(np.stack([c, q]), np.array([float(self.e[i]), 0.0]), rcond=None)
            return i, torch.as_tensor(x, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)
        raise ValueError(f"no documented maximiser for {constant!r}; known: 'L_c', 'L0_alt'")

    def witness_points(self):
        """The documented maximisers (L_c; L0 of the L1 = 0 certificate), an L_x point per component, and far points
        x = 1e3 sign(A_i^T w) directions with cos(q^T y) = +-1: there every pseudo-Huber derivative is +-delta
        (G_x), and y far along -c (|l'| -> 1, G_y)."""
        pts = [self.witness("L_c"), self.witness("L0_alt")]
        for i in range(self.n):
            # L_x: every pseudo-Huber residual 0 (rho'' = 1) and -kappa sin(p^T x) cos(q^T y) = |kappa| with y = 0,
            # moving inside the null space of A_i; then H_xx = A^T A + |kappa| p p^T, at least half of L_x
            A, p = self.a[i], self.p[i]
            x0 = torch.linalg.lstsq(A, self.b[i].unsqueeze(-1)).solution.squeeze(-1)
            w = p - torch.linalg.pinv(A) @ (A @ p)
            if float(w.norm()) > 1e-9 * float(p.norm()):
                target = -math.copysign(math.pi / 2, float(self.kappa[i]))
                pts.append((i, x0 + ((target - p.dot(x0)) / p.dot(w)) * w, torch.zeros(self.dy, dtype=DTYPE)))
            A = self.a[i]                                    # (K, dx)
            v = torch.linalg.svd(A)[2][0]                    # top right singular vector: aligned signs
            c, q = self.c[i], self.q[i]
            for sx in (1.0, -1.0):
                x = sx * 1e3 * v
                for t in (0.0, math.pi):                      # cos(q^T y) = +-1 with y along q
                    yq = (t / q.dot(q)) * q
                    pts.append((i, x.clone(), yq - 1e3 * c / c.norm()))
                    pts.append((i, x.clone(), yq))
        return pts

    def sample_points(self, batch: int, generator: torch.Generator, scale: float = 4.0):
        """Points where the (global) constants are exercised: N(0, scale^2 I) in both blocks."""
        x = scale * torch.randn(batch, self.dx, generator=generator, dtype=DTYPE)
        y = scale * torch.randn(batch, self.dy, generator=generator, dtype=DTYPE)
        return x, y
