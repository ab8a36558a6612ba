r"""How a write pass stores a value into a 16-bit tensor: nearest, stochastic, or with a compensation buffer.

The ZO write passes (perturb, restore, update) compute the new value :math:`y = m\,x + a\,u` in float32 and
store it into the tensor. Rounded to nearest, a 16-bit weight loses any change below half its ULP (a MeZO-scale
update of ~1e-7 on a bf16 weight of ~0.02, whose ULP is 1.2e-4, is lost). Two memory-light alternatives:

* **stochastic** rounding: store the upper neighbour with probability :math:`p = (y - \lfloor y\rfloor) /
  (\lceil y\rceil - \lfloor y\rfloor)`, else the lower one, so :math:`E[\text{stored}] = y` (to float32
  arithmetic). The uniform bits come from the counter generator (:mod:`.counter`, law ``"uniform"``) under a
  key of their own, :func:`rounding_seed`, derived from the direction's seed and the pass number: a stream
  distinct from the direction's, a pure function of (run seed, step, query, pass, tensor, entry), so any shard
  draws its own entries and a replay reproduces the bits. No extra memory.
* **compensated** (Kahan-style): a bf16 buffer :math:`c` beside each 16-bit weight :math:`w` holds what the
  weight could not, the pair representing :math:`w + c`. A pass computes :math:`y = m\,(w + c) + a\,u` in
  float32 and stores :math:`w \leftarrow \mathrm{round}(y)`, :math:`c \leftarrow \mathrm{round}(y - w)`; the
  model reads :math:`w`. The buffer has its own exponent, so the pair carries about 8 more significant bits
  than :math:`w` alone, and much more while :math:`c` is small (a 1e-7 change is stored in :math:`c` almost
  exactly). 2 bytes per parameter (bf16 also beside fp16 weights: the fp16 range would flush the residuals of
  small weights to subnormals).
"""
from __future__ import annotations

import torch

from . import counter
from .counter import derive_seed

ROUNDINGS = ("nearest", "stochastic")
SIXTEEN_BIT = (torch.float16, torch.bfloat16)
COMPENSATION_DTYPE = torch.bfloat16
_ROUNDING_STREAM = 0x52_4F_55_4E_44  # "ROUND": keeps the rounding keys apart from the direction's tensor keys

# pass numbers of the write passes of one direction (each gets its own rounding bits)
PASS_PLUS, PASS_MINUS, PASS_RESTORE, PASS_UPDATE = 0, 1, 2, 3


def rounding_seed(direction_seed: int, pass_no: int) -> int:
    """Seed of the stochastic-rounding bits of write pass ``pass_no`` along the direction ``direction_seed``
    (tensor ``k`` then uses ``counter.tensor_key(rounding_seed, k)``, as a direction does)."""
    return derive_seed(direction_seed, _ROUNDING_STREAM, pass_no)


def uniforms(seed: int, k: int, start: int, numel: int, device) -> torch.Tensor:
    """Entries ``[start, start + numel)`` of tensor ``k``'s rounding bits: float32 uniforms in [0, 1)."""
    return counter.draw_slice(counter.tensor_key(seed, k), start, numel, "uniform", torch.float32, device)


def stochastic_round(y: torch.Tensor, dtype: torch.dtype, v: torch.Tensor) -> torch.Tensor:
    """``y`` (float32/64) rounded to ``dtype``: the neighbour above with probability equal to the distance to
    the one below over their gap, using the uniforms ``v`` (shape of ``y``). Exact values, infinities and NaN
    round to nearest. Wider ``dtype`` than 16 bits: plain cast (the value was computed in that precision)."""
    if dtype not in SIXTEEN_BIT:
        return y.to(dtype)
    near = y.to(dtype)
    nf = near.to(y.dtype)
    toward = torch.where(nf < y, torch.inf, -torch.inf).to(dtype)
    other = torch.nextafter(near, toward)
    p = (y - nf) / (other.to(y.dtype) - nf)            # in [0, 1/2]; NaN (-> nearest) for non-finite y
    return torch.where(v < p, other, near)


def store(dest: torch.Tensor, y: torch.Tensor, v: torch.Tensor | None = None,
          comp: torch.Tensor | None = None) -> None:
    """``dest <- y`` rounded: stochastically with uniforms ``v``, or compensated into ``comp``
    (``dest <- round(y)``, ``comp <- round(y - dest)``), or to nearest."""
    if comp is not None:
        dest.copy_(y)
        comp.copy_(y - dest.to(y.dtype))
    elif v is not None:
        dest.copy_(stochastic_round(y, dest.dtype, v))
    else:
        dest.copy_(y)
