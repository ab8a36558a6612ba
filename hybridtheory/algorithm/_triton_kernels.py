"""Triton code of :mod:`hybridtheory.algorithm.kernels` (imported only through its loader).

Only Triton builtins are used (no ``tl.philox``/``tl.interleave``, which are library jit functions):
the code then runs the same under the interpreter whatever mode Triton's library was imported in,
and does not depend on the library's Philox entry points, which changed across Triton versions.
"""
import triton
import triton.language as tl


@triton.jit
def _words(key, ctr):
    """Philox4x32-10 of the counter (ctr, ctr >> 32, 0, 0) under the 64-bit key."""
    c = ctr.to(tl.uint64)
    k = tl.to_tensor(key).to(tl.uint64)
    c0 = (c & 0xFFFFFFFF).to(tl.uint32)
    c1 = (c >> 32).to(tl.uint32)
    c2 = c0 * 0
    c3 = c0 * 0
    k0 = (k & 0xFFFFFFFF).to(tl.uint32)
    k1 = (k >> 32).to(tl.uint32)
    for _ in tl.static_range(10):
        _c0, _c2 = c0, c2
        c0 = tl.umulhi(_c2, 0xCD9E8D57) ^ c1 ^ k0
        c2 = tl.umulhi(_c0, 0xD2511F53) ^ c3 ^ k1
        c1 = _c2 * 0xCD9E8D57
        c3 = _c0 * 0xD2511F53
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def _interleave(a, b):
    n: tl.constexpr = a.shape[0]
    return tl.reshape(tl.join(a, b), (2 * n,))


@triton.jit
def _uniform(w):
    x = w.to(tl.int32, bitcast=True)
    x = tl.where(x < 0, ~x, x)
    return x.to(tl.float32) * 4.6566127342e-10


@triton.jit
def _box_muller(a, b):
    u1 = tl.maximum(_uniform(a), 1.0e-7)
    th = _uniform(b) * 6.283185307179586
    r = tl.sqrt(tl.log(u1) * -2.0)
    return r * tl.cos(th), r * tl.sin(th)


@triton.jit
def entries(key, first_ctr, LAW: tl.constexpr, BLOCK: tl.constexpr):
    """BLOCK entries (float32) starting at the first entry of counter ``first_ctr``."""
    if LAW == 0:
        ctr = first_ctr + tl.arange(0, BLOCK // 4).to(tl.int64)
        w0, w1, w2, w3 = _words(key, ctr)
        n0, n1 = _box_muller(w0, w1)
        n2, n3 = _box_muller(w2, w3)
        # entry 4c + j is output j of counter c
        vals = _interleave(_interleave(n0, n2), _interleave(n1, n3))
    else:
        ctr = first_ctr + tl.arange(0, BLOCK // 128).to(tl.int64)
        w0, w1, w2, w3 = _words(key, ctr)
        shift = tl.arange(0, 32)[None, :].to(tl.uint32)
        b0 = (w0[:, None] >> shift) & 1
        b1 = (w1[:, None] >> shift) & 1
        b2 = (w2[:, None] >> shift) & 1
        b3 = (w3[:, None] >> shift) & 1
        # z[c, bit, a, m] is bit `bit` of word 2a + m; entry 128c + 32w + bit
        z = tl.join(tl.join(b0, b2), tl.join(b1, b3))
        bits = tl.reshape(tl.permute(z, (0, 2, 3, 1)), (BLOCK,))
        vals = bits.to(tl.float32) * 2.0 - 1.0
    return vals


@triton.jit
def draw_kernel(out_ptr, key, start, numel, LAW: tl.constexpr, PER: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    first_ctr = start // PER + pid * (BLOCK // PER)
    vals = entries(key, first_ctr, LAW, BLOCK)
    local = first_ctr * PER + tl.arange(0, BLOCK).to(tl.int64) - start
    tl.store(out_ptr + local, vals.to(out_ptr.dtype.element_ty), mask=(local >= 0) & (local < numel))


@triton.jit
def axpy_kernel(x_ptr, mirror_ptr, coef_ptr, key, start, numel, LAW: tl.constexpr, PER: tl.constexpr,
                BLOCK: tl.constexpr, WRITE_X: tl.constexpr, HAS_MIRROR: tl.constexpr, HAS_KEEP: tl.constexpr,
                WIDE: tl.constexpr):
    """y = keep * x + a * u for the entries [start, start + numel) of a tensor's flat direction, u in
    registers; y is stored into x (WRITE_X) and/or cast into the mirror (HAS_MIRROR). coef = (a, keep)."""
    pid = tl.program_id(0).to(tl.int64)
    first_ctr = start // PER + pid * (BLOCK // PER)
    u = entries(key, first_ctr, LAW, BLOCK)
    local = first_ctr * PER + tl.arange(0, BLOCK).to(tl.int64) - start
    mask = (local >= 0) & (local < numel)
    x = tl.load(x_ptr + local, mask=mask, other=0.0)
    if WIDE:
        x = x.to(tl.float64)
        a = tl.load(coef_ptr).to(tl.float64)
    else:
        x = x.to(tl.float32)
        a = tl.load(coef_ptr).to(tl.float32)
    if HAS_KEEP:
        x = x * tl.load(coef_ptr + 1).to(x.dtype)
    y = x + a * u.to(x.dtype)
    if WRITE_X:
        tl.store(x_ptr + local, y.to(x_ptr.dtype.element_ty), mask=mask)
    if HAS_MIRROR:
        tl.store(mirror_ptr + local, y.to(mirror_ptr.dtype.element_ty), mask=mask)
