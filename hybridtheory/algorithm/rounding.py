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
* **compensated** (Kahan-style error compensation): an int16 buffer :math:`q` beside each 16-bit weight
  :math:`w` holds the rounding error of :math:`w` in fixed point, in units of :math:`2^{-15}` of the weight's
  ULP, so the pair represents :math:`v = w + q\,\mathrm{ulp}(w)\,2^{-15}` (|q| <= 2^14 since the error is at
  most half an ULP). A pass computes :math:`y = m\,v + a\,u` in float32 and stores :math:`w \leftarrow
  \mathrm{round}(y)` (the model reads :math:`w`, rounded to nearest as without a buffer) and :math:`q
  \leftarrow \mathrm{round}((y - w) / (\mathrm{ulp}(w)\,2^{-15}))`: the value is kept to 15 bits below the
  weight's ULP (2^-22 relative for bf16, about float32's 2^-23), whatever the size of the residual. 2 bytes per
  parameter. (A bf16 buffer, the textbook Kahan pair, has its own exponent and only 8 bits: once the residual is
  large, updates under 2^-9 of it round away; measured on 1e-7 steps it kept as little as 15% of the sum.)
"""
from __future__ import annotations

import torch

from . import counter
from .counter import derive_seed

ROUNDINGS = ("nearest", "stochastic")
SIXTEEN_BIT = (torch.float16, torch.bfloat16)
COMPENSATION_DTYPE = torch.int16
_RESIDUAL_BITS = 15                                   # unit of the buffer: ulp(w) * 2^-15
_MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10}
# smallest unit: 2^-15 of fp16's subnormal spacing; for bf16 float32's smallest normal (a subnormal unit would be
# flushed to zero by GPU kernels; the weights it would serve, |w| < 2^-104, do not occur)
MIN_UNIT = {torch.bfloat16: 2.0 ** -126, torch.float16: 2.0 ** -39}
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


def _neighbour(x: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The next 16-bit value after ``x`` toward +inf where ``up``, toward -inf elsewhere (``torch.nextafter``
    from the bit patterns: sign and magnitude, so any device and dtype of 2 bytes)."""
    bits = x.view(torch.int16).to(torch.int32)
    neg, mag = bits < 0, bits & 0x7FFF
    zero = mag == 0
    mag = torch.where((up ^ neg) | zero, mag + 1, mag - 1)    # away from zero, or toward it
    neg = torch.where(zero, ~up, neg)
    return (mag - 32768 * neg.to(torch.int32)).to(torch.int16).view(x.dtype)


def stochastic_round(y: torch.Tensor, dtype: torch.dtype, v: torch.Tensor) -> torch.Tensor:
    """``y`` (float32/64) rounded to ``dtype``: the neighbour above with probability equal to the distance to
    the one below over their gap, using the uniforms ``v`` (shape of ``y``). Exact values, infinities and NaN
    round to nearest. Wider ``dtype`` than 16 bits: plain cast (the value was computed in that precision)."""
    if dtype not in SIXTEEN_BIT:
        return y.to(dtype)
    near = y.to(dtype)
    nf = near.to(y.dtype)
    other = _neighbour(near, nf < y)
    p = (y - nf) / (other.to(y.dtype) - nf)            # in [0, 1/2]; NaN (-> nearest) for non-finite y
    return torch.where(v < p, other, near)


def _residual_unit(w: torch.Tensor) -> torch.Tensor:
    """float32 ``ulp(w) * 2^-15`` of 16-bit weights ``w``, at least ``MIN_UNIT``: the power of two of ``w``'s
    binade (its float32 exponent bits, mantissa cleared) times ``2^-(mantissa bits + 15)``. The Triton kernel
    computes the same from the same bits."""
    if w.dtype not in _MANTISSA_BITS:
        raise ValueError(f"a compensation buffer goes with 16-bit weights, got {w.dtype}")
    binade = (w.float().view(torch.int32) & 0x7F800000).view(torch.float32)     # 2^floor(log2 |w|); 0 for 0
    return (binade * 2.0 ** -(_MANTISSA_BITS[w.dtype] + _RESIDUAL_BITS)).clamp_min_(MIN_UNIT[w.dtype])


def compensated_value(w: torch.Tensor, comp: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The value ``w + comp * ulp(w) * 2^-15`` a weight and its buffer hold (exact in float32)."""
    return (w.float() + comp.float() * _residual_unit(w)).to(dtype)


def store(dest: torch.Tensor, y: torch.Tensor, v: torch.Tensor | None = None,
          comp: torch.Tensor | None = None) -> None:
    """``dest <- y`` rounded: stochastically with uniforms ``v``, or compensated into ``comp``
    (``dest <- round(y)``, ``comp`` <- the error in units of ``ulp(dest) * 2^-15``), or to nearest."""
    if comp is not None:
        dest.copy_(y)
        residual = (y.float() - dest.float()) / _residual_unit(dest)
        comp.copy_(torch.nan_to_num(residual.round_(), 0.0, 0.0, 0.0).clamp_(-32767, 32767))
    elif v is not None:
        dest.copy_(stochastic_round(y, dest.dtype, v))
    else:
        dest.copy_(y)
