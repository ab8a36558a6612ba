r"""Random directions for two-point zeroth-order estimators, drawn from explicit seeds.

A direction :math:`u` for a *block* (a list of tensors) is a pure function of an integer
``seed``: entry ``e`` of the flat tensor ``k`` of the block is a pure function of
(``seed``, ``k``, ``e``), computed by the counter-based generator of
:mod:`hybridtheory.algorithm.counter` (Philox4x32-10, no generator state). Nothing here touches the
global RNG; a direction is regenerated tensor by tensor at any time (perturb, restore, update,
gradient accumulation replay) without ever holding the whole direction in memory; and any slice of a
tensor (a shard) is drawn alone, equal to the same entries of the whole draw.

Three laws (``proofs/02-estimators.md``):

* ``"gaussian"``: :math:`u \sim N(0, I_d)`; the estimator is :math:`g = c\,u`.
* ``"rademacher"``: i.i.d. signs :math:`u_i \in \{-1, +1\}` (:math:`E\,uu^\top = I_d`,
  :math:`\|u\|^2 = d` exactly); the estimator is :math:`g = c\,u`. The cheapest law to draw.
* ``"sphere"``: :math:`u \sim \mathrm{Unif}(S^{d-1})`; the estimator is :math:`g = d\,c\,u`.
  The block is normalised *jointly* over all its tensors (one unit vector in
  :math:`\mathbb{R}^d`, :math:`d` = total number of entries per replicate).

*Batched replicates.* Synthetic sweeps keep many independent runs in one tensor whose leading
``batch_dims`` dimensions index the replicate. Replicate ``s`` gets row ``s`` of the draw of the
whole tensor, and sphere normalisation is done per replicate. The LLM side uses ``batch_dims = 0``.

*Shards.* A caller holding only part of each tensor (``offsets[k]``: where its local flat piece
starts in the full flat tensor ``k``) gets exactly its entries of the full direction. For the
sphere law the per-tensor sums of squares are local; ``reduce`` (e.g. an all-reduce sum over the
ranks) makes them global before the normaliser is taken, so every rank scales by the same number,
and ``dim`` (the entries of the whole block) is the sphere's factor :math:`d`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from . import counter, rounding
from .counter import derive_seed

LAWS = ("sphere", "gaussian", "rademacher")


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
            model see the same direction up to rounding); it is cast when applied. Gaussian draws
            are computed in float32 whatever this dtype (Box-Muller as the GPU kernel does).
        cache: a dict to keep the draws in (small synthetic blocks: saves the regenerations);
            ``None`` (default, models) regenerates every time and holds one tensor at a time.
        offsets: for shards, where each local tensor's flat entries start in the full flat tensor
            of the same index (None: the block holds whole tensors).
        reduce: for shards and the sphere law, a function summing a tensor of per-replicate sums of
            squares over all shards in place or returning the sum (e.g. ``dist.all_reduce``).
        dim: for shards and the sphere law, the number of entries of the whole block (the estimator's
            :math:`d`; None: the block holds whole tensors, so it is counted from them).
    """

    seed: int
    law: str = "gaussian"
    batch_dims: int = 0
    dtype: torch.dtype = torch.float32
    cache: dict | None = field(default=None, compare=False, repr=False)
    offsets: tuple[int, ...] | None = None
    reduce: Callable[[torch.Tensor], torch.Tensor | None] | None = field(default=None, compare=False, repr=False)
    dim: int | None = None

    def __post_init__(self) -> None:
        if self.law not in LAWS:
            raise ValueError(f"unknown direction law {self.law!r}; expected one of {LAWS}")

    def key(self, k: int) -> int:
        """Counter-generator key of tensor ``k`` of the block."""
        return counter.tensor_key(self.seed, k)

    def _raw(self, k: int, t: torch.Tensor) -> torch.Tensor:
        if self.cache is not None and k in self.cache:
            return self.cache[k]
        dtype = torch.float64 if t.dtype == torch.float64 else self.dtype
        start = 0 if self.offsets is None else int(self.offsets[k])
        r = counter.draw_slice(self.key(k), start, t.numel(), self.law, dtype, t.device).view(t.shape)
        if self.cache is not None:
            self.cache[k] = r
        return r

    def inverse_norm(self, block: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """Per-replicate 1/||raw draw|| for the sphere law (None for Gaussian and Rademacher).

        Costs one extra regeneration pass; only the per-replicate scalars are kept. With shards the
        local sums of squares go through ``reduce`` first.
        """
        if self.law != "sphere":
            return None
        sq = None
        for k, t in enumerate(block):
            if self._streamed(t):
                s = sum(u.square().sum() for _, u, _ in self._pieces(k, t, None))
            else:
                r = self._raw(k, t)
                s = r.square().flatten(self.batch_dims).sum(-1) if self.batch_dims else r.square().sum()
            sq = s if sq is None else sq + s
        if self.reduce is not None:
            reduced = self.reduce(sq)
            sq = sq if reduced is None else reduced
        return sq.rsqrt()

    def tensors(self, block: Sequence[torch.Tensor], inv_norm: torch.Tensor | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(param, u_k)`` pairs, one direction tensor alive at a time."""
        if self.law == "sphere" and inv_norm is None:
            inv_norm = self.inverse_norm(block)
        for k, t in enumerate(block):
            yield t, self._unit(k, t, inv_norm)

    def materialize(self, block: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The whole direction as a list of tensors (tests and small problems)."""
        return [u for _, u in self.tensors(block)]

    def scale(self, block: Sequence[torch.Tensor]) -> float:
        """Factor s with g = s * c * u: d for the sphere, 1 for the Gaussian and Rademacher laws."""
        if self.law != "sphere":
            return 1.0
        return float(self.dim if self.dim is not None else block_dim(block, self.batch_dims))

    def _streamed(self, t: torch.Tensor) -> bool:
        """Draw-and-apply piece by piece (models): no whole-tensor direction is ever held."""
        return self.batch_dims == 0 and self.cache is None and t.is_contiguous()

    def _pieces(self, k: int, t: torch.Tensor, inv_norm: torch.Tensor | None):
        """Yield ``(flat piece of t, u piece, slice)`` chunk by chunk (the draw scaled by ``inv_norm``)."""
        dtype = torch.float64 if t.dtype == torch.float64 else self.dtype
        start = 0 if self.offsets is None else int(self.offsets[k])
        flat, n, step = t.view(-1), t.numel(), _PIECE
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            u = counter.draw_slice(self.key(k), start + lo, hi - lo, self.law, dtype, t.device)
            if inv_norm is not None:
                u.mul_(inv_norm)
            yield flat[lo:hi], u, slice(lo, hi)

    def _kernel(self, t: torch.Tensor) -> bool:
        return self._streamed(t) and t.device.type != "cpu" and _kernels_usable(t)

    def _kernel_apply(self, k, t, alpha, inv_norm, keep, mirror, write_t) -> None:
        from . import kernels
        kernels.axpy(t, mirror, self.key(k), 0 if self.offsets is None else int(self.offsets[k]), self.law,
                     alpha, inv_norm, keep, write_t)

    @no_grad
    def add_to(self, block: Sequence[torch.Tensor],
               alpha: float | torch.Tensor | Sequence[float | torch.Tensor],
               inv_norm: torch.Tensor | None = None,
               scale_first: Sequence[float | torch.Tensor] | None = None,
               mirrors: Sequence[torch.Tensor] | None = None,
               rounding_seed: int | None = None,
               compensation: Sequence[torch.Tensor] | None = None) -> None:
        """In place: ``block[k] <- scale_first[k] * block[k] + alpha_k * u_k``.

        ``alpha`` is one scalar for the whole block or a list with one entry per tensor (per-block
        step sizes inside one perturbation group); each entry is a float or a tensor of the batch
        shape (per-replicate step sizes or coefficients). ``scale_first`` (one entry per tensor,
        default 1) multiplies the tensor in the same pass (weight decay). ``mirrors`` (e.g. a 16-bit
        model's weights when ``block`` is their fp32 master) receive the new values, cast, in the
        same pass.

        How a 16-bit ``block`` stores the new values (:mod:`.rounding`; default: to nearest):
        ``rounding_seed`` rounds stochastically with the bits of that seed (:func:`.rounding.rounding_seed`);
        ``compensation`` (one buffer per tensor) makes each pair ``(block[k], compensation[k])`` hold the value
        ``block[k] + compensation[k]``, which the pass reads and writes (``scale_first`` scales the pair).
        """
        alphas = list(alpha) if isinstance(alpha, (list, tuple)) else [alpha] * len(block)
        if len(alphas) != len(block):
            raise ValueError(f"got {len(alphas)} step factors for a block of {len(block)} tensors")
        scales = [1.0] * len(block) if scale_first is None else list(scale_first)
        if self.law == "sphere" and inv_norm is None:
            inv_norm = self.inverse_norm(block)
        if (rounding_seed is not None or compensation is not None) and mirrors is not None:
            raise ValueError("stochastic or compensated writes store into the block itself; mirrors go with a master")
        for k, (t, a, m) in enumerate(zip(block, alphas, scales)):
            mirror = None if mirrors is None else mirrors[k]
            if rounding_seed is not None or compensation is not None:
                self._write(k, t, a, m, inv_norm, rounding_seed, None if compensation is None else compensation[k])
            elif self._kernel(t):
                self._kernel_apply(k, t, a, inv_norm, m, mirror, True)
            elif self._streamed(t):
                mflat = None if mirror is None else mirror.view(-1)
                for x, u, sl in self._pieces(k, t, inv_norm):
                    self._axpy(x, u, a, m)
                    if mflat is not None:
                        mflat[sl].copy_(x)
            else:
                u = self._unit(k, t, inv_norm)
                self._axpy(t, u, a, m)
                if mirror is not None:
                    mirror.copy_(t)

    def _write(self, k: int, t: torch.Tensor, a, m, inv_norm, rseed: int | None, comp: torch.Tensor | None) -> None:
        """``t <- m (t + comp) + a u_k`` computed in the draw's precision and stored by :func:`.rounding.store`
        (stochastically with the bits of ``rseed``, or into the pair ``(t, comp)``): one Triton pass on CUDA
        (``kernels.store16``), else eager, piece by piece on the streamed path."""
        start = 0 if self.offsets is None else int(self.offsets[k])
        if self._kernel(t) and t.dtype in rounding.SIXTEEN_BIT and (comp is None or comp.is_contiguous()):
            from . import kernels
            kernels.store16(t, comp, self.key(k), start, self.law, a, inv_norm, m,
                            None if rseed is None else counter.tensor_key(rseed, k))
            return
        if self._streamed(t) and (comp is None or comp.is_contiguous()):
            cflat = None if comp is None else comp.view(-1)
            for x, u, sl in self._pieces(k, t, inv_norm):
                c = None if cflat is None else cflat[sl]
                v = None if rseed is None else rounding.uniforms(rseed, k, start + sl.start, x.numel(), t.device)
                rounding.store(x, self._shifted(x, u, a, m, c), v, c)
            return
        u = self._unit(k, t, inv_norm)
        if self.batch_dims:
            a = _batch_view(a, t, self.batch_dims) if isinstance(a, torch.Tensor) else a
            m = _batch_view(m, t, self.batch_dims) if isinstance(m, torch.Tensor) else m
        v = None if rseed is None else rounding.uniforms(rseed, k, start, t.numel(), t.device).view(t.shape)
        rounding.store(t, self._shifted(t, u, a, m, comp), v, comp)

    @staticmethod
    def _shifted(x: torch.Tensor, u: torch.Tensor, a, m, comp: torch.Tensor | None) -> torch.Tensor:
        """A new tensor ``m (x + comp) + a u`` in ``u``'s dtype (float32 or float64)."""
        y = x.to(u.dtype) if comp is None else rounding.compensated_value(x, comp, u.dtype)
        if isinstance(m, torch.Tensor) or m != 1.0:
            y = y * m
        return y + u * a

    @no_grad
    def write_shifted(self, block: Sequence[torch.Tensor], mirrors: Sequence[torch.Tensor],
                      alpha: float | torch.Tensor, inv_norm: torch.Tensor | None = None) -> None:
        """``mirrors[k] <- cast(block[k] + alpha u_k)``, ``block`` untouched: a 16-bit model perturbed from
        its fp32 master in one pass, rounded once, and restored exactly by the next write."""
        if self.law == "sphere" and inv_norm is None:
            inv_norm = self.inverse_norm(block)
        for k, (t, mirror) in enumerate(zip(block, mirrors)):
            if self._kernel(t):
                self._kernel_apply(k, t, alpha, inv_norm, 1.0, mirror, False)
            elif self._streamed(t):
                mflat = mirror.view(-1)
                for x, u, sl in self._pieces(k, t, inv_norm):
                    mflat[sl].copy_(x + u * alpha if isinstance(alpha, torch.Tensor) else x.add(u, alpha=alpha))
            else:
                u = self._unit(k, t, inv_norm)
                a = _batch_view(alpha, t, self.batch_dims) if isinstance(alpha, torch.Tensor) and self.batch_dims \
                    else alpha
                mirror.copy_(t + u * a if isinstance(a, torch.Tensor) else t.add(u, alpha=a))

    def _unit(self, k: int, t: torch.Tensor, inv_norm: torch.Tensor | None) -> torch.Tensor:
        key = ("unit", k)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        u = self._raw(k, t)
        if inv_norm is not None:
            u = u * (_batch_view(inv_norm, u, self.batch_dims) if self.batch_dims else inv_norm)
            if self.cache is not None:
                self.cache[key] = u
        return u

    def _axpy(self, t: torch.Tensor, u: torch.Tensor, a, m) -> None:
        """t <- m t + a u in place (m, a: floats or per-replicate tensors)."""
        if isinstance(m, torch.Tensor):
            t.mul_(_batch_view(m, t, self.batch_dims) if self.batch_dims else m.to(t.dtype))
        elif m != 1.0:
            t.mul_(m)
        if isinstance(a, torch.Tensor):
            a = _batch_view(a, t, self.batch_dims) if self.batch_dims else a
            if t.dtype == u.dtype:
                t.addcmul_(u, a)
            else:
                t.add_((u * a).to(t.dtype))  # scale in the draw's precision, then round
        elif t.dtype == u.dtype:
            t.add_(u, alpha=a)
        else:
            t.add_((u * a).to(t.dtype))


_PIECE = 1 << 18  # entries drawn and applied at a time on the streamed path


def _kernels_usable(t: torch.Tensor) -> bool:
    from . import kernels
    return kernels.usable(t)


class DirectionBank:
    """Raw draws of many upcoming directions of small blocks, made in one pass of the generator.

    The counter generator costs a fixed ~100 tensor operations per call, which dominates for the
    synthetic fast path's tiny blocks. Keys are tensors too, so the draws of many directions (many
    steps) are one call with a column of keys; :meth:`take` hands each direction its draws as a
    ``Direction.cache``. The draws are the same numbers a direction would make alone.
    """

    def __init__(self, law: str, dtype: torch.dtype = torch.float32) -> None:
        self.law, self.dtype = law, dtype
        self._store: dict[int, dict] = {}

    def __contains__(self, seed: int) -> bool:
        return seed in self._store

    def fill(self, seeds: Sequence[int], template: Sequence[torch.Tensor]) -> None:
        """Draw directions ``seeds`` for blocks shaped like ``template``."""
        seeds = [s for s in dict.fromkeys(seeds) if s not in self._store]
        if not seeds:
            return
        caches: list[dict] = [{} for _ in seeds]
        for k, t in enumerate(template):
            dtype = torch.float64 if t.dtype == torch.float64 else self.dtype
            keys = torch.tensor([counter.tensor_key(s, k) for s in seeds], dtype=torch.int64,
                                device=t.device).unsqueeze(1)
            rows = counter.draw_slice(keys, 0, t.numel(), self.law, dtype, t.device)
            for cache, row in zip(caches, rows):
                cache[k] = row.view(t.shape)
        self._store.update(zip(seeds, caches))

    def take(self, seed: int) -> dict | None:
        """The draws of direction ``seed`` (removed from the bank), or None if not drawn."""
        return self._store.pop(seed, None)

    def clear(self) -> None:
        self._store.clear()
