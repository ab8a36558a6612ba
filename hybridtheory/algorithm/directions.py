r"""Random directions for two-point zeroth-order estimators, drawn from explicit seeds.

A direction :math:`u` for a *block* (a list of tensors) is a pure function of an integer
``seed``: tensor ``k`` of the block is filled by a ``torch.Generator`` seeded with
``derive_seed(seed, k)``. Nothing here touches the global RNG, and a direction can be
regenerated tensor by tensor at any time (perturb, restore, update, gradient accumulation
replay) without ever holding the whole direction in memory, which is what the LLM side needs.

Three laws (``proofs/02-estimators.md``):

* ``"gaussian"``: :math:`u \sim N(0, I_d)`; the estimator is :math:`g = c\,u`.
* ``"rademacher"``: i.i.d. signs :math:`u_i \in \{-1, +1\}` (:math:`E\,uu^\top = I_d`,
  :math:`\|u\|^2 = d` exactly); the estimator is :math:`g = c\,u`. The cheapest law to draw.
* ``"sphere"``: :math:`u \sim \mathrm{Unif}(S^{d-1})`; the estimator is :math:`g = d\,c\,u`.
  The block is normalised *jointly* over all its tensors (one unit vector in
  :math:`\mathbb{R}^d`, :math:`d` = total number of entries per replicate).

*Batched replicates.* Synthetic sweeps keep many independent runs in one tensor whose leading
``batch_dims`` dimensions index the replicate. Each replicate gets its own row of the draw, and
sphere normalisation is done per replicate. The LLM side uses ``batch_dims = 0``.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

LAWS = ("sphere", "gaussian", "rademacher")
_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*parts: int) -> int:
    """Deterministic, well-mixed 63-bit seed from a tuple of non-negative integers.

    Used everywhere a stream must be reproducible from (run seed, epoch, step, query, tensor)
    without carrying generator state: resuming a run only needs the counters.
    """
    z = 0x5EED
    for p in parts:
        if p < 0:
            raise ValueError(f"seed parts must be non-negative, got {p}")
        z = _splitmix64(z ^ (int(p) & _MASK64))
    return z & ((1 << 63) - 1)


def no_grad(fn):
    """Run ``fn`` without autograd; cheaper than ``torch.no_grad()`` when grad mode is already off
    (the synthetic fast path calls these functions millions of times)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.is_grad_enabled():
            with torch.no_grad():
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    return wrapper


_GENERATORS: dict[torch.device, torch.Generator] = {}


def generator_for(device: torch.device | str, seed: int) -> torch.Generator:
    """A per-device generator (cached, re-seeded on every call): never the global RNG."""
    device = torch.device(device)
    gen = _GENERATORS.get(device)
    if gen is None:
        gen = torch.Generator(device=device)
        _GENERATORS[device] = gen
    gen.manual_seed(seed)
    return gen


def block_dim(block: Sequence[torch.Tensor], batch_dims: int = 0) -> int:
    """Number of entries of one replicate of the block (the ``d`` of the estimator)."""
    return sum(int(t[(0,) * batch_dims].numel()) if batch_dims else t.numel() for t in block)


def _batch_view(v: torch.Tensor, t: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """Reshape a per-replicate quantity (shape = batch shape) to broadcast against ``t``."""
    return v.reshape(v.shape + (1,) * (t.dim() - batch_dims))


@dataclass(frozen=True)
class Direction:
    """A seeded random direction for a block, regenerated on demand.

    Args:
        seed: the direction's seed (derive it from the run seed and step counters).
        law: ``"sphere"``, ``"gaussian"`` or ``"rademacher"``.
        batch_dims: number of leading replicate dimensions of every tensor of the block.
        dtype: dtype the draw is made in (float32 by default, so a bf16 model and an fp32
            model see the same direction up to rounding); it is cast when applied.
        cache: a dict to keep the draws in (small synthetic blocks: saves the regenerations);
            ``None`` (default, models) regenerates every time and holds one tensor at a time.
    """

    seed: int
    law: str = "gaussian"
    batch_dims: int = 0
    dtype: torch.dtype = torch.float32
    cache: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.law not in LAWS:
            raise ValueError(f"unknown direction law {self.law!r}; expected one of {LAWS}")

    def _raw(self, k: int, t: torch.Tensor) -> torch.Tensor:
        if self.cache is not None and k in self.cache:
            return self.cache[k]
        gen = generator_for(t.device, derive_seed(self.seed, k))
        dtype = torch.float64 if t.dtype == torch.float64 else self.dtype
        if self.law == "rademacher":
            r = torch.randint(0, 2, t.shape, generator=gen, device=t.device).to(dtype).mul_(2).sub_(1)
        else:
            r = torch.randn(t.shape, generator=gen, device=t.device, dtype=dtype)
        if self.cache is not None:
            self.cache[k] = r
        return r

    def inverse_norm(self, block: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """Per-replicate 1/||raw draw|| for the sphere law (None for Gaussian and Rademacher).

        Costs one extra regeneration pass; only the per-replicate scalars are kept.
        """
        if self.law != "sphere":
            return None
        sq = None
        for k, t in enumerate(block):
            r = self._raw(k, t)
            s = r.square().flatten(self.batch_dims).sum(-1) if self.batch_dims else r.square().sum()
            sq = s if sq is None else sq + s
        return sq.rsqrt()

    def tensors(self, block: Sequence[torch.Tensor], inv_norm: torch.Tensor | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(param, u_k)`` pairs, one direction tensor alive at a time."""
        if self.law == "sphere" and inv_norm is None:
            inv_norm = self.inverse_norm(block)
        for k, t in enumerate(block):
            key = ("unit", k)
            if self.cache is not None and key in self.cache:
                yield t, self.cache[key]
                continue
            u = self._raw(k, t)
            if inv_norm is not None:
                u = u * (_batch_view(inv_norm, u, self.batch_dims) if self.batch_dims else inv_norm)
                if self.cache is not None:
                    self.cache[key] = u
            yield t, u

    def materialize(self, block: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The whole direction as a list of tensors (tests and small problems)."""
        return [u for _, u in self.tensors(block)]

    def scale(self, block: Sequence[torch.Tensor]) -> float:
        """Factor s with g = s * c * u: d for the sphere, 1 for the Gaussian and Rademacher laws."""
        return float(block_dim(block, self.batch_dims)) if self.law == "sphere" else 1.0

    @no_grad
    def add_to(self, block: Sequence[torch.Tensor],
               alpha: float | torch.Tensor | Sequence[float | torch.Tensor],
               inv_norm: torch.Tensor | None = None,
               scale_first: Sequence[float | torch.Tensor] | None = None) -> None:
        """In place: ``block[k] <- scale_first[k] * block[k] + alpha_k * u_k``.

        ``alpha`` is one scalar for the whole block or a list with one entry per tensor (per-block
        step sizes inside one perturbation group); each entry is a float or a tensor of the batch
        shape (per-replicate step sizes or coefficients). ``scale_first`` (one entry per tensor,
        default 1) multiplies the tensor in the same pass (weight decay).
        """
        alphas = list(alpha) if isinstance(alpha, (list, tuple)) else [alpha] * len(block)
        if len(alphas) != len(block):
            raise ValueError(f"got {len(alphas)} step factors for a block of {len(block)} tensors")
        scales = [1.0] * len(block) if scale_first is None else list(scale_first)
        for (t, u), a, m in zip(self.tensors(block, inv_norm), alphas, scales):
            if isinstance(m, torch.Tensor):
                t.mul_(_batch_view(m, t, self.batch_dims) if self.batch_dims else m.to(t.dtype))
            elif m != 1.0:
                t.mul_(m)
            if isinstance(a, torch.Tensor):
                a = _batch_view(a, t, self.batch_dims) if self.batch_dims else a
                if t.dtype == u.dtype:
                    t.addcmul_(u, a)
                else:
                    t.add_((u * a).to(t.dtype))  # scale in the draw's precision, then round once
            elif t.dtype == u.dtype:
                t.add_(u, alpha=a)
            else:
                t.add_((u * a).to(t.dtype))
