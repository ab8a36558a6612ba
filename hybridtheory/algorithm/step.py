r"""One inner step of hybrid ZO/FO random reshuffling (HZF-RR, proofs/00-setting.md §0.2), for any blocks.

The parameters are split into groups, each with its own step size and oracle:

* ``oracle="zo"`` groups form one perturbation group: they are perturbed *jointly* along one
  random direction and updated with the two-point estimate;
* ``oracle="fo"`` groups get the exact (autograd or closed-form) gradient.

``hybrid`` is (x: zo, y: fo); FO-RR is (fo, fo); ZO-RR is (zo, zo); the with-replacement baseline
only changes the sampler. The same function runs the synthetic problems (tensors with a leading
replicate dimension, closed-form oracles) and the LLMs (model parameters, autograd oracles).

Where the FO gradient is taken (``fo_point``):

* ``"jacobi"`` (HZF-RR): at the unperturbed point :math:`(x_{t,i}, y_{t,i})`, before any update;
  its loss doubles as :math:`f(x)` for the forward difference.
* ``"gauss_seidel"`` (V2): at :math:`(x_{t,i+1}, y_{t,i})`, after the ZO update.
* ``"perturbed"`` (V1): at :math:`(x_{t,i}+\mu u, y_{t,i})`, sharing the ``+mu`` forward.

The FO update is plain SGD by default (the theory's); pass ``fo_update`` to use e.g. a
``torch.optim.Adam`` on the FO group (LLM option).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .directions import no_grad
from .estimator import ZORecord, ZOSettings, apply_zo_update, zo_coefficients, zo_forwards

FO_POINTS = ("jacobi", "gauss_seidel", "perturbed")
ORACLES = ("zo", "fo")


@dataclass
class ParamGroup:
    """A block of parameters with its step size and oracle kind.

    ``lr`` is a float or a tensor of the replicate batch shape (sweeps over step sizes). The caller may
    change ``lr`` between steps (schedules). ``weight_decay`` adds ``wd * p`` to the block's gradient
    (estimate), ``p <- p - lr (g + wd p)``, on the tensors where ``decay_mask`` is true (default: all);
    MeZO's ZO weight decay, and coupled L2 for the default SGD update of an FO block. A custom
    ``fo_update`` (e.g. AdamW) handles its own decay and ignores these fields. ``mirrors`` (ZO groups
    only): tensors the loss reads in place of ``params``, kept equal to ``cast(params)`` and perturbed as
    ``cast(params + s mu u)`` in one pass each (a 16-bit model whose fp32 master is ``params``).
    ``compensation`` (ZO groups only, no mirrors): one 16-bit error-compensation buffer per tensor, the pair
    ``params[k] + compensation[k]`` being the value every write pass reads and writes (:mod:`.rounding`).
    """

    name: str
    params: list[torch.Tensor]
    lr: float | torch.Tensor
    oracle: str = "fo"
    weight_decay: float = 0.0
    decay_mask: list[bool] | None = None
    mirrors: list[torch.Tensor] | None = None
    compensation: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.oracle not in ORACLES:
            raise ValueError(f"group {self.name!r}: unknown oracle {self.oracle!r}; expected {ORACLES}")
        lr = self.lr
        bad = bool((lr < 0).any()) if isinstance(lr, torch.Tensor) else not lr >= 0
        if bad:
            raise ValueError(f"group {self.name!r}: step size must be >= 0, got {lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"group {self.name!r}: weight decay must be >= 0, got {self.weight_decay}")
        if self.mirrors is not None and (self.oracle != "zo" or len(self.mirrors) != len(self.params)):
            raise ValueError(f"group {self.name!r}: mirrors need a ZO group and one mirror per tensor")
        if self.compensation is not None and (self.oracle != "zo" or self.mirrors is not None
                                              or len(self.compensation) != len(self.params)):
            raise ValueError(f"group {self.name!r}: compensation buffers need a ZO group without mirrors and one "
                             "buffer per tensor")
        if self.decay_mask is not None and len(self.decay_mask) != len(self.params):
            raise ValueError(f"group {self.name!r}: decay_mask has {len(self.decay_mask)} entries for "
                             f"{len(self.params)} tensors")

    def decays(self) -> list[float | torch.Tensor]:
        """``lr * wd`` per tensor (0 where the mask excludes it)."""
        mask = self.decay_mask if self.decay_mask is not None else [True] * len(self.params)
        return [self.lr * self.weight_decay if m else 0.0 for m in mask]


class Oracle(Protocol):
    """What one step needs from the objective, for the current sample or minibatch.

    ``loss()`` evaluates at the current parameters with no autograd graph (ZO forwards; must be
    deterministic, e.g. dropout off). ``loss_and_grad(params)`` evaluates and returns the gradient
    with respect to ``params`` (the FO pass). An oracle whose loss costs extra work on top of the
    gradient (closed-form problems) may also offer ``grad(params)``; the step then uses it when it
    does not need the loss (central differences), and ``StepInfo.loss`` is None.
    """

    def loss(self) -> torch.Tensor: ...

    def loss_and_grad(self, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


@dataclass
class StepInfo:
    """What a step did: for logs and diagnostics."""

    loss: torch.Tensor | None          # loss at the unperturbed point when it was computed
    records: list[ZORecord]            # ZO queries (empty without a ZO group)
    forwards: int                      # forward passes (ZO forwards + FO forward)
    backwards: int                     # backward passes


FOUpdate = Callable[[list[torch.Tensor], list[torch.Tensor], list[float | torch.Tensor]], None]


@no_grad
def sgd_update(params: list[torch.Tensor], grads: list[torch.Tensor], lrs: list[float | torch.Tensor],
               batch_dims: int = 0, decays: list[float | torch.Tensor] | None = None) -> None:
    """In place: p <- p - lr * g, with per-replicate lr allowed; ``decays`` (``lr * wd`` per tensor) first
    scales p by ``1 - lr * wd`` (coupled weight decay, p <- p - lr (g + wd p))."""
    for i, (p, g, lr) in enumerate(zip(params, grads, lrs)):
        a = 0.0 if decays is None else decays[i]
        if isinstance(a, torch.Tensor):
            p.mul_((1 - a).reshape(a.shape + (1,) * (p.dim() - batch_dims)) if batch_dims else 1 - a)
        elif a != 0.0:
            p.mul_(1 - a)
        if isinstance(lr, torch.Tensor) and batch_dims:
            lr = lr.reshape(lr.shape + (1,) * (p.dim() - batch_dims))
            p.sub_((g * lr).to(p.dtype))
        elif isinstance(lr, torch.Tensor):
            p.sub_((g * lr).to(p.dtype))
        else:
            p.sub_(g.to(p.dtype), alpha=lr)


def _flatten(groups: Sequence[ParamGroup], oracle: str) -> tuple[list[torch.Tensor], list, list | None]:
    """Tensors, step sizes and decays (None when no group of this oracle decays) of one oracle's groups."""
    params, lrs, decays = [], [], []
    for g in groups:
        if g.oracle == oracle:
            params.extend(g.params)
            lrs.extend([g.lr] * len(g.params))
            decays.extend(g.decays())
    any_decay = any(g.weight_decay > 0 for g in groups if g.oracle == oracle)
    return params, lrs, (decays if any_decay else None)


def _zo_block(groups: Sequence[ParamGroup]):
    """The perturbation group: tensors, step sizes, decays, mirrors and compensation buffers (None: no group
    has them)."""
    zo_params, zo_lrs, zo_decays = _flatten(groups, "zo")
    zo_groups = [g for g in groups if g.oracle == "zo"]
    zo_mirrors = None
    if any(g.mirrors is not None for g in zo_groups):
        if not all(g.mirrors is not None for g in zo_groups):
            raise ValueError("either every ZO group has mirrors or none has")
        zo_mirrors = [m for g in zo_groups for m in g.mirrors]
    zo_comp = None
    if any(g.compensation is not None for g in zo_groups):
        if not all(g.compensation is not None for g in zo_groups):
            raise ValueError("either every ZO group has compensation buffers or none has")
        zo_comp = [c for g in zo_groups for c in g.compensation]
    return zo_params, zo_lrs, zo_decays, zo_mirrors, zo_comp


def zo_update(groups: Sequence[ParamGroup], zo: ZOSettings, step_seed: int,
              loss: Callable[[], torch.Tensor] | None = None, *, f0: torch.Tensor | None = None,
              plus_loss: Callable[[], torch.Tensor] | None = None,
              coefficients: Sequence[torch.Tensor] | None = None, write_mirrors: bool = True) -> list[ZORecord]:
    """The ZO part of one step on the ZO groups of ``groups``, in place; returns its records.

    Training passes ``loss`` (the coefficients are measured); a replay passes the ``coefficients`` a past
    run recorded (with the groups' ``lr`` set to the step sizes that step used): the same perturbation and
    update passes run, without forwards, so the block (and its compensation buffers) end bit for bit where
    training left them (seed-replay checkpoints). ``write_mirrors=False`` skips writing the mirrors in the
    update pass (a replay of many steps writes them once at the end; the block itself is the same either way).
    """
    zo_params, zo_lrs, zo_decays, zo_mirrors, zo_comp = _zo_block(groups)
    # the last restore is fused with the update (one pass over the parameters fewer)
    records = zo_coefficients(zo_params, loss, zo, step_seed, f0=f0, plus_loss=plus_loss, defer_restore=True,
                              mirrors=zo_mirrors, compensation=zo_comp, coefficients=coefficients)
    apply_zo_update(zo_params, records, zo_lrs, zo_decays, mirrors=zo_mirrors if write_mirrors else None,
                    compensation=zo_comp, rounding=zo.rounding)
    return records


def hybrid_step(groups: Sequence[ParamGroup], oracle: Oracle, zo: ZOSettings, step_seed: int,
                fo_point: str = "jacobi", fo_update: FOUpdate | None = None) -> StepInfo:
    """Run one inner step in place on ``groups`` and return what it did.

    Args:
        groups: parameter groups (see :class:`ParamGroup`).
        oracle: loss / gradient of the current sample or minibatch.
        zo: estimator settings for the ZO perturbation group.
        step_seed: seed of this step's directions (derive it from the run seed and counters).
        fo_point: where the FO gradient is taken, one of ``FO_POINTS``.
        fo_update: FO update rule ``(params, grads, lrs)``; SGD if None.
    """
    if fo_point not in FO_POINTS:
        raise ValueError(f"unknown fo_point {fo_point!r}; expected one of {FO_POINTS}")
    zo_params = _zo_block(groups)[0]
    fo_params, fo_lrs, fo_decays = _flatten(groups, "fo")
    if fo_update is None:
        def fo_update(p, g, lr):
            sgd_update(p, g, lr, zo.batch_dims, fo_decays)

    def fo_pass(need_loss: bool):
        if not need_loss and hasattr(oracle, "grad"):
            return None, oracle.grad(fo_params)
        return oracle.loss_and_grad(fo_params)

    f0, fo_grads, forwards, backwards = None, None, 0, 0
    if fo_params and (fo_point == "jacobi" or not zo_params):
        # FO pass at the unperturbed point; its loss is f(x) for the forward difference
        f0, fo_grads = fo_pass(need_loss=bool(zo_params) and zo.difference == "forward")
        forwards, backwards = 1, 1

    records: list[ZORecord] = []
    if zo_params:
        plus_loss, holder = None, {}
        if fo_params and fo_point == "perturbed":
            def fo_pass_at_plus():  # the FO pass at x + mu u doubles as the ZO "+" forward
                holder["loss"], holder["grads"] = oracle.loss_and_grad(fo_params)
                return holder["loss"]
            plus_loss = fo_pass_at_plus
            backwards += 1
        had_f0 = f0 is not None
        # Jacobi and perturbed: the FO gradient is taken before the ZO update (simultaneous step)
        records = zo_update(groups, zo, step_seed, oracle.loss, f0=f0, plus_loss=plus_loss)
        forwards += zo_forwards(zo, had_f0)
        if plus_loss is not None:
            fo_grads = holder["grads"]
        if fo_params and fo_point == "gauss_seidel":
            f0, fo_grads = fo_pass(need_loss=False)          # at the updated x
            forwards, backwards = forwards + 1, backwards + 1

    if fo_params:
        fo_update(fo_params, fo_grads, fo_lrs)
    return StepInfo(loss=f0, records=records, forwards=forwards, backwards=backwards)
