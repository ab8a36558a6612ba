"""Triton code of :mod:`hybridtheory.algorithm.kernels` (imported only through its loader).

Only Triton builtins are used (no ``tl.philox``/``tl.interleave``, which are library jit functions):
the code then runs the same under the interpreter whatever mode Triton's library was imported in,
and does not depend on the library's Philox entry points, which changed across Triton versions.
Nor ``tl.to_tensor`` (not exported by Triton 3.6, the GPU machines' version): the keys are kernel
arguments kept out of Triton's integer specialisation (``do_not_specialize``), so they are always tensors.
"""
import triton
import triton.language as tl


@triton.jit
def _words(key, ctr):
    """Philox4x32-10 of the counter (ctr, ctr >> 32, 0, 0) under the 64-bit key."""
    c = ctr.to(tl.uint64)
    k = key.to(tl.uint64)  # a kernel argument (never specialised: see do_not_specialize below)
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
    elif LAW == 2:  # uniform in [0, 1): the top 24 bits of word j (stochastic rounding's bits)
        ctr = first_ctr + tl.arange(0, BLOCK // 4).to(tl.int64)
        w0, w1, w2, w3 = _words(key, ctr)
        f0 = (w0 >> 8).to(tl.float32) * 5.9604644775390625e-08
        f1 = (w1 >> 8).to(tl.float32) * 5.9604644775390625e-08
        f2 = (w2 >> 8).to(tl.float32) * 5.9604644775390625e-08
        f3 = (w3 >> 8).to(tl.float32) * 5.9604644775390625e-08
        vals = _interleave(_interleave(f0, f2), _interleave(f1, f3))
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


@triton.jit(do_not_specialize=["key"])
def draw_kernel(out_ptr, key, start, numel, LAW: tl.constexpr, PER: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    first_ctr = start // PER + pid * (BLOCK // PER)
    vals = entries(key, first_ctr, LAW, BLOCK)
    local = first_ctr * PER + tl.arange(0, BLOCK).to(tl.int64) - start
    tl.store(out_ptr + local, vals.to(out_ptr.dtype.element_ty), mask=(local >= 0) & (local < numel))


@triton.jit(do_not_specialize=["key"])
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


# ---------------------------------------------------------------- 16-bit stores (hybridtheory.algorithm.rounding)
# The 16-bit weights are read and written as int16 bit patterns: bfloat16 is converted by hand (round to nearest
# even), so the kernel does not depend on how a Triton version or its interpreter casts to bfloat16.
@triton.jit
def _to_f32(bits, BF16: tl.constexpr):
    if BF16:
        return (bits.to(tl.int32) << 16).to(tl.float32, bitcast=True)
    else:
        return bits.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _nearest_bits(y, BF16: tl.constexpr):
    if BF16:
        b = y.to(tl.uint32, bitcast=True)
        b = b + 0x7FFF + ((b >> 16) & 1)
        return (b >> 16).to(tl.int32).to(tl.int16)
    else:
        return y.to(tl.float16).to(tl.int16, bitcast=True)


@triton.jit
def _neighbour_bits(bits, up):
    """The next 16-bit value toward +inf where ``up``, toward -inf elsewhere (sign and magnitude)."""
    b = bits.to(tl.int32)
    neg = b < 0
    mag = b & 0x7FFF
    zero = mag == 0
    mag = tl.where((up != neg) | zero, mag + 1, mag - 1)
    neg = tl.where(zero, up == 0, neg)
    return (mag - 32768 * neg.to(tl.int32)).to(tl.int16)


@triton.jit
def _residual_unit(w, MANTISSA: tl.constexpr, min_unit):
    binade = (w.to(tl.uint32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True)
    return tl.maximum(binade * (2.0 ** -(MANTISSA + 15)), min_unit)


@triton.jit(do_not_specialize=["key", "rkey"])
def store16_kernel(x_ptr, comp_ptr, coef_ptr, key, rkey, start, numel, min_unit, LAW: tl.constexpr,
                   PER: tl.constexpr, BLOCK: tl.constexpr, HAS_KEEP: tl.constexpr, STOCHASTIC: tl.constexpr,
                   COMPENSATED: tl.constexpr, BF16: tl.constexpr, MANTISSA: tl.constexpr):
    """x <- keep * v + a * u for 16-bit x (int16 bit patterns), v = x or x + comp * unit(x); stored rounded
    stochastically (uniform bits of ``rkey``) or to nearest with the error into ``comp`` (int16)."""
    pid = tl.program_id(0).to(tl.int64)
    first_ctr = start // PER + pid * (BLOCK // PER)
    u = entries(key, first_ctr, LAW, BLOCK)
    local = first_ctr * PER + tl.arange(0, BLOCK).to(tl.int64) - start
    mask = (local >= 0) & (local < numel)
    w = _to_f32(tl.load(x_ptr + local, mask=mask, other=0), BF16)
    if COMPENSATED:
        c = tl.load(comp_ptr + local, mask=mask, other=0).to(tl.float32)
        w = w + c * _residual_unit(w, MANTISSA, min_unit)
    a = tl.load(coef_ptr).to(tl.float32)
    if HAS_KEEP:
        w = w * tl.load(coef_ptr + 1).to(tl.float32)
    y = w + a * u
    near = _nearest_bits(y, BF16)
    nf = _to_f32(near, BF16)
    if STOCHASTIC:
        v = entries(rkey, first_ctr * PER // 4, 2, BLOCK)
        other = _neighbour_bits(near, nf < y)
        p = (y - nf) / (_to_f32(other, BF16) - nf)
        near = tl.where(v < p, other, near)
    tl.store(x_ptr + local, near, mask=mask)
    if COMPENSATED:
        r = (y - nf) / _residual_unit(nf, MANTISSA, min_unit)
        r = tl.where(r == r, r, 0.0)                                      # NaN -> 0
        r = tl.minimum(tl.maximum(r, -32767.0), 32767.0)
        q = (r + 12582912.0) - 12582912.0                                 # round half to even (|r| < 2^22)
        tl.store(comp_ptr + local, q.to(tl.int16), mask=mask)
