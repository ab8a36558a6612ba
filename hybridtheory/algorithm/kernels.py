r"""Optional Triton kernels of the counter-based directions (:mod:`hybridtheory.algorithm.counter`).

The kernels compute the same Philox words as the torch implementation, in registers, one Philox
evaluation per 4 Gaussian entries or per 128 Rademacher entries, and turn them into the same laws
(same entry order). They are used on CUDA tensors when Triton is installed (the ``gpu`` extra) and
are otherwise never imported: CPU runs and the default install need no Triton. With
``TRITON_INTERPRET=1`` they also run on CPU tensors (slowly), which is how the tests check that the
kernel and the torch implementation agree: integer words bit for bit, the Gaussian to float32
rounding of ``log``/``cos``/``sin``.

The Triton code is loaded on first use (:func:`kernels`), so the interpreter setting is read then.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import torch

from .counter import ENTRIES_PER_COUNTER

AVAILABLE = importlib.util.find_spec("triton") is not None
LAW_CODES = {"gaussian": 0, "sphere": 0, "rademacher": 1, "uniform": 2}
BLOCK = 1024  # entries per program: 256 Gaussian counters or 8 Rademacher counters


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def usable(t: torch.Tensor) -> bool:
    """Whether the kernels can run on ``t``'s device here."""
    return AVAILABLE and (t.device.type == "cuda" or (interpreting() and t.device.type == "cpu"))


def kernels():
    """The Triton module, loaded once per interpreter setting (``TRITON_INTERPRET`` is read at load)."""
    mode = interpreting()
    mod = _LOADED.get(mode)
    if mod is None:
        name = f"{__package__}._triton_kernels_{'interpreted' if mode else 'compiled'}"
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__),
                                                                          "_triton_kernels.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        _LOADED[mode] = mod
    return mod


_LOADED: dict[bool, ModuleType] = {}


def _grid(start: int, numel: int, per: int) -> tuple[int]:
    span = start % per + numel                      # from the first covering counter's first entry
    return ((span + BLOCK - 1) // BLOCK,)


def draw_slice(key: int, start: int, numel: int, law: str = "gaussian", dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cuda", out: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel twin of :func:`hybridtheory.algorithm.counter.draw_slice` (one key)."""
    if out is None:
        out = torch.empty(numel, dtype=dtype, device=device)
    if numel:
        per = ENTRIES_PER_COUNTER[law]
        kernels().draw_kernel[_grid(start, numel, per)](out, key, start, numel, LAW=LAW_CODES[law], PER=per, BLOCK=BLOCK)
    return out


def _coefficients(alpha, inv_norm, keep, device, dtype) -> tuple[torch.Tensor, bool]:
    """The kernels' coefficient pair ``(alpha * inv_norm, keep)`` as one device tensor (scalars may be device
    tensors: no host sync), and whether ``keep`` differs from 1."""
    a = alpha if isinstance(alpha, torch.Tensor) else torch.tensor(alpha, dtype=torch.float64)
    a = a.to(device, torch.float64)
    if inv_norm is not None:
        a = a * inv_norm.to(torch.float64)
    has_keep = not (isinstance(keep, float | int) and keep == 1.0)
    k = keep if isinstance(keep, torch.Tensor) else torch.tensor(float(keep), dtype=torch.float64)
    return torch.stack((a.reshape(()), k.to(device, torch.float64).reshape(()))).to(dtype), has_keep


def axpy(x: torch.Tensor, mirror: torch.Tensor | None, key: int, start: int, law: str,
         alpha: float | torch.Tensor, inv_norm: torch.Tensor | None = None, keep: float | torch.Tensor = 1.0,
         write_x: bool = True) -> None:
    """One pass over ``x`` (contiguous): ``y = keep * x + alpha * inv_norm * u`` with ``u`` the entries
    ``[start, start + x.numel())`` of the flat direction ``key``; ``y`` goes to ``x`` (``write_x``) and,
    cast, to ``mirror``. Scalars may be device tensors (no host sync)."""
    if not x.numel():
        return
    wide = x.dtype == torch.float64
    coef, has_keep = _coefficients(alpha, inv_norm, keep, x.device, torch.float64 if wide else torch.float32)
    per = ENTRIES_PER_COUNTER[law]
    kernels().axpy_kernel[_grid(start, x.numel(), per)](
        x, x if mirror is None else mirror, coef, key, start, x.numel(), LAW=LAW_CODES[law], PER=per, BLOCK=BLOCK,
        WRITE_X=write_x, HAS_MIRROR=mirror is not None, HAS_KEEP=has_keep, WIDE=wide)


def store16(x: torch.Tensor, comp: torch.Tensor | None, key: int, start: int, law: str,
            alpha: float | torch.Tensor, inv_norm: torch.Tensor | None = None, keep: float | torch.Tensor = 1.0,
            rkey: int | None = None) -> None:
    """Kernel twin of the eager 16-bit stores (:func:`hybridtheory.algorithm.rounding.store`): one pass over the
    16-bit ``x`` (contiguous), ``y = keep * value + alpha * inv_norm * u``, stored rounded stochastically with
    the uniform bits of key ``rkey`` (entries ``[start, start + numel)``, as the eager draw), or to nearest with
    the error into the int16 ``comp`` (``value = x + comp * unit(x)``)."""
    from .rounding import MIN_UNIT, _MANTISSA_BITS
    if not x.numel():
        return
    coef, has_keep = _coefficients(alpha, inv_norm, keep, x.device, torch.float32)
    per = ENTRIES_PER_COUNTER[law]
    bits = x.view(torch.int16)
    kernels().store16_kernel[_grid(start, x.numel(), per)](
        bits, bits if comp is None else comp, coef, key, 0 if rkey is None else rkey, start, x.numel(),
        MIN_UNIT[x.dtype], LAW=LAW_CODES[law], PER=per, BLOCK=BLOCK, HAS_KEEP=has_keep, STOCHASTIC=rkey is not None,
        COMPENSATED=comp is not None, BF16=x.dtype == torch.bfloat16, MANTISSA=_MANTISSA_BITS[x.dtype])
