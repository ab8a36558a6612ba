r"""Which sample each inner step uses: random reshuffling, or with replacement as a baseline.

Epoch ``t``'s order is a pure function of ``(seed, t)`` (its own ``torch.Generator`` seeded by
:func:`derive_seed`), so the sampler's whole state is the pair (epoch, position): a resumed run
sees exactly the orders an uninterrupted run would have seen.

* ``replacement=False`` (HZF-RR, proofs/00-setting.md §0.2): every index in ``0..n-1`` exactly once per epoch,
  a fresh uniformly random permutation each epoch, independent across replicates.
* ``replacement=True``: ``n`` i.i.d. uniform indices per epoch (plain SGD).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .directions import derive_seed

_SAMPLER_STREAM = 1  # keeps sampler seeds disjoint from direction seeds derived from the same run seed


@dataclass(frozen=True)
class EpochSampler:
    """Per-epoch sample orders.

    Args:
        n: number of components of the finite sum (or examples of the data set).
        seed: run seed.
        batch_shape: replicate shape; each replicate gets its own independent order.
        replacement: with-replacement sampling instead of reshuffling.
    """

    n: int
    seed: int
    batch_shape: tuple[int, ...] = ()
    replacement: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    def order(self, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """LongTensor of shape ``batch_shape + (n,)``: the indices used in epoch ``epoch``."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(derive_seed(self.seed, _SAMPLER_STREAM, epoch))
        shape = tuple(self.batch_shape) + (self.n,)
        if self.replacement:
            idx = torch.randint(self.n, shape, generator=gen)
        elif not self.batch_shape:
            idx = torch.randperm(self.n, generator=gen)
        else:
            # argsort of i.i.d. uniforms is a uniform permutation, independently per row
            idx = torch.argsort(torch.rand(shape, generator=gen, dtype=torch.float64), dim=-1)
        return idx.to(device)
