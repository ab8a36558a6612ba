"""Precision of the first-order (FO) block: where its weights live and in what dtype its forwards compute.

A 16-bit model's FO block can be trained three ways (config ``fo_precision``, recorded in ``run.json``):

* ``amp``: the FO tensors are held in float32 (they are the master weights the optimizer updates) and every
  forward runs under ``torch.autocast`` in the model's 16-bit dtype, the fine-tuning baseline MeZO runs
  (``--fp16``: fp32 weights, fp16 mixed precision). For float16 the FO loss is scaled before the backward and
  the gradients unscaled after it (dynamic loss scale: halved and the pass redone while a gradient is not
  finite, doubled after ``GROWTH_INTERVAL`` clean passes), so small gradients do not flush to zero in float16.
* ``fp32``: the FO tensors are float32 and forwards compute in float32 (no autocast).
* ``native``: the FO tensors keep the model's dtype and are updated there. With bfloat16 and AdamW at lr 1e-5
  most updates round away (on the tiny OPT one step changed about 14% of the weights against 83% in float32).

``auto`` (default) is ``amp`` for a 16-bit model whose base weights are trained FO (``fo-full``) and ``native``
otherwise: PEFT adapters are already float32 (peft's ``autocast_adapter_dtype``), and a float32 model has
nothing to choose.

The ZO base block of a 16-bit model has its own policy (config ``base_master``, :func:`resolve_base_policy`), the
way its 16-bit weights keep ZO updates far below their rounding step (the core's write passes,
``hybridtheory.algorithm.rounding``):

* ``float32`` (``fp32``): a float32 master copy (4 bytes/param); the model is written as cast(master + s mu u),
  so the restore is exact and small updates accumulate in the master. ``float64``: the same in float64.
* ``compensated``: an int16 error-compensation buffer (2 bytes/param) holding each weight's rounding error in
  units of 2^-15 of its ULP; weight + buffer hold the value to about float32 precision, every pass reads and
  writes the pair, the model reads the weights (rounded to nearest); restore drift is the buffer's rounding.
* ``stochastic``: the passes round stochastically (counter-based bits, reproducible, shard-invariant); updates
  are kept in expectation; no memory; perturb/restore leaves zero-mean noise of about one ULP.
* ``none``: in place, rounded to nearest, as MeZO.
* ``auto``: ``none`` for a float32 (or float64) model or a base not trained by ZO; otherwise the first of
  float32 master, compensated, stochastic whose extra bytes fit in ``1 - HEADROOM`` of the free device memory
  (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` of /proc/meminfo), measured once the model is
  loaded; the headroom is for activations, the adapter's optimizer state and fragmentation. Unknown free
  memory keeps the master. The choice and the reason are logged and recorded in ``run.json``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .config import FO_PRECISIONS, MASTERS
from .errors import UserError

SIXTEEN_BIT = (torch.float16, torch.bfloat16)
INITIAL_LOSS_SCALE = 2.0 ** 16
GROWTH_INTERVAL = 2000
MAX_RETRIES = 24


def resolve_fo_precision(choice: str, dtype: torch.dtype, method: str) -> str:
    """``auto`` -> ``amp`` for 16-bit ``fo-full``, else ``native``; explicit choices pass through."""
    if choice not in FO_PRECISIONS:
        raise UserError(f"unknown fo_precision {choice!r}; choose one of: {', '.join(FO_PRECISIONS)}")
    if choice != "auto":
        return choice
    return "amp" if dtype in SIXTEEN_BIT and method == "fo-full" else "native"


@dataclass
class FOPrecision:
    """The resolved policy: ``mode``, the autocast dtype (``amp`` only) and the dynamic loss scale (float16)."""

    mode: str = "native"
    autocast_dtype: torch.dtype | None = None
    loss_scale: float = 1.0
    clean_passes: int = 0

    @classmethod
    def build(cls, choice: str, model_dtype: torch.dtype, method: str) -> "FOPrecision":
        mode = resolve_fo_precision(choice, model_dtype, method)
        if mode != "amp" or model_dtype not in SIXTEEN_BIT:
            return cls(mode)
        return cls(mode, model_dtype, INITIAL_LOSS_SCALE if model_dtype == torch.float16 else 1.0)

    def prepare(self, fo_params: list[torch.nn.Parameter]) -> None:
        """``amp`` / ``fp32``: hold the FO tensors in float32 (in place; tied tensors stay one tensor)."""
        if self.mode == "native":
            return
        for p in fo_params:
            if p.dtype in SIXTEEN_BIT:
                p.data = p.data.float()

    def autocast(self, device: torch.device):
        """Context of every forward: autocast to the 16-bit dtype under ``amp``, nothing otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    @property
    def scaled(self) -> bool:
        return self.autocast_dtype == torch.float16

    def unscale(self, grads: list[torch.Tensor]) -> bool:
        """Divide ``grads`` by the loss scale; ``False`` (and the scale halved) if one is not finite."""
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if not finite:
            self.loss_scale /= 2
            self.clean_passes = 0
            return False
        torch._foreach_div_(grads, self.loss_scale)
        self.clean_passes += 1
        if self.clean_passes >= GROWTH_INTERVAL:
            self.loss_scale *= 2
            self.clean_passes = 0
        return True

    def describe(self) -> dict:
        return {"mode": self.mode, "autocast": str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype
                else None, "loss_scale": self.loss_scale if self.scaled else None}


# ------------------------------------------------------------------ ZO base policy of 16-bit models
BASE_POLICIES = ("none", "float32", "float64", "compensated", "stochastic")
HEADROOM = 0.25  # of the free memory left for activations, optimizer state, fragmentation
EXTRA_BYTES_PER_PARAM = {"none": 0, "float32": 4, "float64": 8, "compensated": 2, "stochastic": 0}
_ALIASES = {"fp32": "float32"}


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory where the base lives: CUDA ``mem_get_info``; CPU ``MemAvailable`` (Linux); else None."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def resolve_base_policy(choice: str, dtype: torch.dtype, base_numel: int, zo_base: bool,
                        free_bytes: int | None = None) -> tuple[str, str]:
    """``(policy, reason)`` for the ZO base block: explicit choices pass through (``fp32`` is ``float32``);
    ``auto`` follows the rule of the module docstring with ``free_bytes`` (call with the free memory measured
    after the model is loaded; only consulted for a 16-bit ZO base)."""
    if choice not in MASTERS:
        raise UserError(f"unknown base_master {choice!r}; choose one of: {', '.join(MASTERS)}")
    if choice != "auto":
        policy = _ALIASES.get(choice, choice)
        return policy, f"base_master={choice} asked"
    if not zo_base:
        return "none", "the base is not trained by ZO"
    if dtype not in SIXTEEN_BIT:
        return "none", f"{str(dtype).replace('torch.', '')} model: ZO updates are stored at full precision"
    if free_bytes is None:
        return "float32", "free memory unknown: fp32 master"
    budget = (1 - HEADROOM) * free_bytes
    for policy in ("float32", "compensated"):
        need = EXTRA_BYTES_PER_PARAM[policy] * base_numel
        if need <= budget:
            return policy, (f"{policy} needs {_gb(need)} for {base_numel:,} base parameters; fits in "
                            f"{_gb(free_bytes)} free with {HEADROOM:.0%} headroom")
    return "stochastic", (f"neither an fp32 master ({_gb(4 * base_numel)}) nor a compensation buffer "
                          f"({_gb(2 * base_numel)}) fits in {_gb(free_bytes)} free with {HEADROOM:.0%} headroom")
