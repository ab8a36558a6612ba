r"""Counter-based random directions: every entry is a pure function of (key, element index).

A direction tensor ``k`` of a direction seeded ``seed`` has the 64-bit *key*
``derive_seed(seed, k)``; its flat entry ``e`` is computed from the key and ``e`` alone, with no
generator state. So any slice ``[start, start + numel)`` of the flat tensor is drawn on its own, equal
bit for bit to the same entries of the whole draw: a shard of a sharded parameter, an offloaded chunk,
or a GPU kernel's block draw exactly their entries.

The bits are Philox4x32-10 (Salmon et al., SC'11), the generator of cuRAND and of Triton's
``tl.randint4x``: the 128-bit counter ``(c, c >> 32, 0, 0)`` under the key ``(key & 0xffffffff,
key >> 32)`` gives four 32-bit words. The integer arithmetic is written with torch int64 ops, so CPU
and CUDA give the same words; :mod:`hybridtheory.algorithm.kernels` (optional, Triton) computes the
same words with ``tl.philox`` in registers.

Laws (entry ``e`` of the flat tensor):

* ``"gaussian"``: counter ``c = e // 4``; its four words become four uniforms in (0, 1) as Triton's
  ``uint_to_uniform_float`` does, and two Box-Muller pairs ``(r cos t, r sin t)``, as
  ``tl.randn4x``; entry ``e`` is output ``e % 4``. Box-Muller runs in float32 (Triton's precision),
  the result is cast to the requested dtype. Uniforms below ``1e-7`` are clamped (|u| <= 5.68).
* ``"rademacher"``: counter ``c = e // 128`` gives 128 bits; entry ``e`` is ``+1`` or ``-1`` from
  bit ``e % 32`` of word ``(e // 32) % 4`` (1 is +1). One Philox evaluation per 128 entries.
* ``"sphere"``: the Gaussian draw divided by the norm of the whole block (all its tensors). The norm
  comes from per-tensor sums of squares, which a caller holding only shards sums over its shards
  and all-reduces before normalising (see :meth:`Direction.inverse_norm`'s ``reduce``).
* ``"uniform"`` (not a direction law: the random bits of stochastic rounding,
  :mod:`hybridtheory.algorithm.rounding`): counter ``c = e // 4``, entry ``e`` is the top 24 bits of word
  ``e % 4`` times ``2**-24``, in [0, 1) and exact in float32.

Contract for sharded callers (the distributed trainer codes against this):

``draw_slice(key, start, numel, law, dtype, device)`` returns entries ``[start, start + numel)`` of
the flat draw with key ``key`` (``"sphere"`` is drawn as ``"gaussian"``: normalise with the block's
inverse norm), equal bit for bit to ``draw_slice(key, 0, total)[start:start + numel]`` on the same
device type, for any ``start``. :func:`tensor_key` gives the key of tensor ``k`` of a direction.
"""
from __future__ import annotations

import math
import os

import torch

PHILOX_ROUNDS = 10
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57       # Philox4x32 multipliers
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85           # Weyl key increments
_M32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
_UNIFORM_SCALE = 4.6566127342e-10                 # Triton's: largest s with (2**31 - 1) * s < 1 in float32
_TWO_PI = 6.283185307179586
_MIN_UNIFORM = 1.0e-7
ENTRIES_PER_COUNTER = {"gaussian": 4, "sphere": 4, "rademacher": 128, "uniform": 4}
# counters per chunk on CPU: the ~40 int64 temporaries of a chunk stay in cache
_CHUNK_COUNTERS = 1 << 14




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


def tensor_key(seed: int, k: int) -> int:
    """The 64-bit Philox key of tensor ``k`` of the direction seeded ``seed``."""
    return derive_seed(seed, k)


def philox4x32(c0: torch.Tensor, c1: torch.Tensor | int, key: int | torch.Tensor, rounds: int = PHILOX_ROUNDS,
               c2: torch.Tensor | int = 0, c3: torch.Tensor | int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32 of the counters ``(c0, c1, c2, c3)`` (int64 tensors or ints holding 32-bit values)
    under ``key`` (a Python int or an int64 tensor broadcastable against the counters, 64 bits).

    Returns the four words as int64 tensors in ``[0, 2**32)``. Products of two 32-bit values are
    exact modulo 2**64 in int64 (wrapping); their high and low halves are read with shifts and masks.
    """
    k0, k1 = key & _M32, (key >> 32) & _M32
    x0 = c0
    x1 = c1 if isinstance(c1, torch.Tensor) else torch.full_like(c0, c1)
    x2 = c2 if isinstance(c2, torch.Tensor) else torch.full_like(c0, c2)
    x3 = c3 if isinstance(c3, torch.Tensor) else torch.full_like(c0, c3)
    for _ in range(rounds):
        # x0, x2 hold exact 32-bit values here; x1, x3 may carry garbage above bit 31 (masked below)
        p0 = x0 * _ROUND_A
        p2 = x2 * _ROUND_B
        y0 = (p2 >> 32) ^ x1 ^ k0
        y2 = (p0 >> 32) ^ x3 ^ k1
        x1, x3 = p2, p0
        x0, x2 = y0 & _M32, y2 & _M32
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    return x0, x1 & _M32, x2, x3 & _M32


def _uniform(word: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` for 32-bit words: [0, 1) in float32 from 31 bits."""
    x = torch.where(word >= 1 << 31, word - (1 << 32), word)      # the int32 bit pattern
    x = torch.where(x < 0, -x - 1, x)
    return x.to(torch.float32) * _UNIFORM_SCALE


def _box_muller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u1 = _uniform(a).clamp_(min=_MIN_UNIFORM)
    th = _uniform(b) * _TWO_PI
    r = u1.log_().mul_(-2.0).sqrt_()
    return r * th.cos(), r * th.sin()


def _counters(first: int, count: int, device, key) -> tuple[torch.Tensor, torch.Tensor | int]:
    c = torch.arange(first, first + count, dtype=torch.int64, device=device)
    if first + count <= 1 << 32:
        return c, 0
    return c & _M32, c >> 32


def _block_gaussian(first: int, count: int, key, device) -> torch.Tensor:
    """Entries of counters ``[first, first + count)``: shape ``(..., 4 * count)`` (key batch first)."""
    c0, c1 = _counters(first, count, device, key)
    w0, w1, w2, w3 = philox4x32(c0, c1, key)
    n0, n1 = _box_muller(w0, w1)
    n2, n3 = _box_muller(w2, w3)
    return torch.stack((n0, n1, n2, n3), dim=-1).flatten(-2)


# ------------------------------------------------------------------ compiled Gaussian chunks (CPU, opt-in)
# Eager torch runs the ~130 operations of a Gaussian chunk one by one (about 8x torch.randn's time on CPU);
# torch.compile fuses them into one vectorised loop (faster than torch.randn). The integer words are the same;
# the float results may differ from eager in the last bits of log/cos/sin, so one process uses one path for
# every draw (shards and slices stay bit-equal): the switch is global, never chosen by size.
_COMPILED_COUNTERS = (1 << 8, 1 << 14)  # two static chunk sizes: small tensors do not pay for a big chunk
_compiled: dict[str, object] = {"on": os.environ.get("HYBRIDTHEORY_COMPILED_DRAWS", "0") == "1", "fn": None}


def compiled_draws(enabled: bool = True) -> None:
    """Draw Gaussian directions on CPU with a ``torch.compile``'d chunk (set once per process, before any
    draw; compiling takes about a minute once, then the inductor cache serves it). Also enabled by
    ``HYBRIDTHEORY_COMPILED_DRAWS=1``."""
    _compiled["on"] = bool(enabled)


def _gaussian_chunk(first: torch.Tensor, key: torch.Tensor, count: int) -> torch.Tensor:
    c0 = first + torch.arange(count, dtype=torch.int64)
    w0, w1, w2, w3 = philox4x32(c0, 0, key)
    n0, n1 = _box_muller(w0, w1)
    n2, n3 = _box_muller(w2, w3)
    return torch.stack((n0, n1, n2, n3), dim=-1).flatten(-2)


def _compiled_chunk():
    if _compiled["fn"] is None:
        _compiled["fn"] = torch.compile(_gaussian_chunk, dynamic=False, fullgraph=True)
    return _compiled["fn"]


def _draw_compiled(key: int, start: int, numel: int, out: torch.Tensor) -> torch.Tensor:
    fn, per = _compiled_chunk(), 4
    key_t = torch.tensor(key, dtype=torch.int64)
    first, last = start // per, (start + numel - 1) // per + 1
    small, big = _COMPILED_COUNTERS
    ch = small if last - first <= small else big
    pos = 0
    for c in range(first, last, ch):
        vals = fn(torch.tensor(c, dtype=torch.int64), key_t, ch)
        lo = max(start - c * per, 0)
        take = min(ch * per - lo, numel - pos)
        out[pos:pos + take].copy_(vals[lo:lo + take])
        pos += take
    return out


def _block_uniform(first: int, count: int, key, device) -> torch.Tensor:
    """Entries of counters ``[first, first + count)``: entry ``4 c + j`` from the top 24 bits of word ``j``."""
    c0, c1 = _counters(first, count, device, key)
    words = torch.stack(philox4x32(c0, c1, key), dim=-1)                       # (..., count, 4)
    return ((words >> 8).to(torch.float32) * 2.0 ** -24).flatten(-2)


_SIGN_TABLES: dict[torch.device, torch.Tensor] = {}
_BYTE_SHIFTS = (0, 8, 16, 24)


def _sign_table(device) -> torch.Tensor:
    """(256, 8) float32: row b holds +1/-1 for bits 0..7 of the byte b."""
    device = torch.device(device)
    table = _SIGN_TABLES.get(device)
    if table is None:
        bits = (torch.arange(256).reshape(256, 1) >> torch.arange(8)) & 1
        table = _SIGN_TABLES[device] = (bits * 2 - 1).to(torch.float32).to(device)
    return table


def _block_rademacher(first: int, count: int, key, device) -> torch.Tensor:
    """Entries of counters ``[first, first + count)``: entry ``128 c + 32 w + b`` is bit ``b`` of word ``w``."""
    c0, c1 = _counters(first, count, device, key)
    words = torch.stack(philox4x32(c0, c1, key), dim=-1)                       # (..., count, 4)
    shifts = torch.tensor(_BYTE_SHIFTS, device=device)
    octets = (words[..., None] >> shifts) & 0xFF                               # (..., count, 4, 4)
    return _sign_table(device)[octets].flatten(-4)                              # (..., 128 * count)


def draw_slice(key: int | torch.Tensor, start: int, numel: int, law: str = "gaussian",
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Entries ``[start, start + numel)`` of the flat draw with ``key`` (see the module docstring).

    ``key`` may be an int64 tensor of shape ``(B, 1)`` to draw ``B`` independent rows at once (the
    synthetic fast path's replicates or steps): the result then has shape ``(B, numel)``.
    ``out`` (1-D, contiguous, ``numel`` entries) receives the draw in place; large draws are made in
    chunks so the temporaries stay small.
    """
    law = "gaussian" if law == "sphere" else law
    block = {"gaussian": _block_gaussian, "rademacher": _block_rademacher, "uniform": _block_uniform}[law]
    per = ENTRIES_PER_COUNTER[law]
    device = torch.device(device)
    batch = key.shape[:-1] if isinstance(key, torch.Tensor) else ()
    if out is None:
        out = torch.empty(batch + (numel,), dtype=dtype, device=device)
    if numel == 0:
        return out
    if (_compiled["on"] and law == "gaussian" and not batch and device.type == "cpu"
            and (start + numel) // 4 + _COMPILED_COUNTERS[1] < 1 << 32):
        return _draw_compiled(int(key), start, numel, out)
    chunk = _CHUNK_COUNTERS if device.type == "cpu" else 1 << 24
    first, last = start // per, (start + numel - 1) // per + 1   # counters covering the slice
    pos = 0
    for c in range(first, last, chunk):
        n = min(chunk, last - c)
        vals = block(c, n, key, device)
        lo = max(start - c * per, 0)
        take = min(n * per - lo, numel - pos)
        out[..., pos:pos + take].copy_(vals[..., lo:lo + take])
        pos += take
    return out


def draw(key: int, shape: torch.Size | tuple[int, ...], law: str = "gaussian",
         dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The whole tensor of ``shape`` with ``key`` (flat entries in row-major order)."""
    return draw_slice(key, 0, math.prod(shape), law, dtype, device).reshape(shape)
