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
nothing to choose. ZO blocks are not touched here (their float32 master is the trainer's ``base_master``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .config import FO_PRECISIONS
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
