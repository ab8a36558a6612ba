r"""Probe a language model's loss for the theory's constants, at step 0 and at checkpoints of a run.

The theory (``hybridtheory.assumptions``, ``hybridtheory.bounds``) assumes a loss that is smooth in the base
weights ``x`` (the ZO block) and generalized-smooth in the adapter ``y`` (the FO block). This module measures
the corresponding quantities on a causal LM with a PEFT module, on a fixed *probe set* of ``n`` training
examples, :math:`F(x, y) = \frac1n\sum_i f_i(x, y)` with :math:`f_i` example ``i``'s loss under the run's
training objective (``scoring.per_example_losses``: cross-entropy over its candidates for ``classification``,
the mean negative log-likelihood of its gold answer tokens for ``lm``):

* per block: the dominant eigenvalue of ``H_xx`` (base) and ``H_yy`` (adapter) and the spectral norm of the
  cross block ``H_xy``, by power iteration on exact Hessian-vector products
  (:func:`hybridtheory.hgs_check.block_power_iteration`, :func:`~hybridtheory.hgs_check.cross_block_norm`);
* the effective rank of the base block, :math:`\operatorname{tr} H_{xx} / |\lambda_{\max}(H_{xx})|`
  (Hutchinson's trace estimate; the "local effective rank" of Malladi et al., 2023, MeZO), and the same ratio
  for the adapter;
* gradient norms per block, the largest per-example gradient norm (a sample estimate of ``G_x``, ``G_y``) and
  the heterogeneity :math:`\varsigma^2 = \frac1n\sum_i\|\nabla f_i - \nabla F\|^2` per block;
* local constants on a small ball around the point by :func:`hybridtheory.hgs_check.estimate_local_constants`
  (the toolkit's one local estimator, fed lists of tensors): ``L_x``, ``L_c``, ``L_y`` and ``G_x``, ``G_y``.
  Across checkpoints, the adapter's local ``L_y`` against ``||grad_y F||`` gives the (L0, L1) relation and a
  fitted line (:func:`fit_l0_l1`).

Everything is measured in float64 on a copy of the model (finite differences in fp32 would be noise). All
estimates are *local and empirical*: lower estimates of suprema, not certificates. :func:`theory_settings`
turns them into Theorem 1's step caps and Corollary 1's ``mu`` through :mod:`hybridtheory.bounds`.

Command line: ``llm-hybrid probe --config RUN.yaml --checkpoints 0 50 100 --output-dir DIR`` trains the run's
method with the same core (:class:`llm_experiments.trainer.Trainer`) and probes at the listed steps, writing
``DIR/probe.json``, ``DIR/probe_constants.png`` and ``DIR/probe_l0l1.png``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hybridtheory.hgs_check import (autograd_grad_fn, autograd_hvp_fn, block_power_iteration, cross_block_norm,
                                    estimate_local_constants, hutchinson_trace)

from .errors import UserError
from .models import ParamSplit

IGNORE_INDEX = -100


@dataclass
class ProbeSettings:
    """How much work one probe point does (defaults: a few seconds on a ~1M-parameter model on CPU)."""

    examples: int = 32          # probe-set size n (the first n training examples, fixed for the whole run)
    batch_size: int = 16        # examples per forward in the probe
    power_iters: int = 20       # HVPs per power iteration (stops early at rtol 1e-6)
    hutchinson: int = 16        # Rademacher vectors for each trace estimate
    local_radius: float = 1e-2  # ball radius of the local estimator (joint parameter norm)
    local_points: int = 2       # base points on the ball
    local_power_steps: int = 3  # finite-difference power steps per block and point
    dtype: str = "float64"      # the probe's arithmetic (a float64 copy of the model by default)
    seed: int = 0

    def validate(self) -> "ProbeSettings":
        for name in ("examples", "batch_size", "power_iters", "hutchinson", "local_points", "local_power_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"invalid probe setting {name} {getattr(self, name)!r}: must be an integer >= 1")
        if not (math.isfinite(self.local_radius) and self.local_radius > 0):
            raise UserError(f"invalid probe setting local_radius {self.local_radius!r}: must be a number > 0")
        if self.dtype not in ("float64", "float32"):
            raise UserError(f"invalid probe dtype {self.dtype!r}; choose one of: float64, float32")
        return self


def add_probe_arguments(parser) -> None:
    """The probe's own flags (``llm-hybrid probe``); the run's flags are the ``train`` flags."""
    d = ProbeSettings()
    parser.add_argument("--probe-examples", type=int, default=d.examples, help="probe-set size (first training examples)")
    parser.add_argument("--probe-batch-size", type=int, default=d.batch_size, help="examples per probe forward")
    parser.add_argument("--power-iters", type=int, default=d.power_iters, help="HVPs per power iteration")
    parser.add_argument("--hutchinson", type=int, default=d.hutchinson, help="Rademacher vectors per trace estimate")
    parser.add_argument("--local-radius", type=float, default=d.local_radius, help="ball radius of the local estimator")
    parser.add_argument("--local-points", type=int, default=d.local_points, help="points on the ball")
    parser.add_argument("--local-power-steps", type=int, default=d.local_power_steps,
                        help="finite-difference power steps per block and point")
    parser.add_argument("--probe-dtype", default=d.dtype, help="float64 (default) or float32")
    parser.add_argument("--probe-seed", type=int, default=d.seed, help="seed of the probe's random vectors")
    parser.add_argument("--eps", type=float, default=0.1, help="target eps of Corollary 1's schedule")


def settings_from_namespace(ns) -> ProbeSettings:
    return ProbeSettings(examples=ns.probe_examples, batch_size=ns.probe_batch_size, power_iters=ns.power_iters,
                         hutchinson=ns.hutchinson, local_radius=ns.local_radius, local_points=ns.local_points,
                         local_power_steps=ns.local_power_steps, dtype=ns.probe_dtype, seed=ns.probe_seed).validate()


def answer_nll_per_example(model, batch: dict) -> torch.Tensor:
    """Per-example mean negative log-likelihood of the answer tokens (``labels != -100``), shape ``(B,)``.

    The same shifted cross-entropy as the HF loss, averaged per example instead of over all tokens of the
    batch (they agree for one-token answers). Prompt tuning's virtual-token positions are dropped.
    """
    input_ids, labels = batch["input_ids"], batch["labels"]
    logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"], use_cache=False).logits
    logits = logits[:, -input_ids.shape[1]:, :]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:],
                                            ignore_index=IGNORE_INDEX, reduction="none")
    mask = (labels[:, 1:] != IGNORE_INDEX).to(nll.dtype)
    return (nll * mask).sum(1) / mask.sum(1).clamp_min(1)


class _LossModule(torch.nn.Module):
    """``forward(batch) = loss_fn(model, batch)``, so ``torch.func.functional_call`` can substitute tensors."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


class BlockLoss:
    """The probe-set loss as a function of the two blocks' tensors: ``value(xs, ys) = F(x, y)``.

    ``batches`` are collated batches (on the model's device); ``loss_fn(model, batch)`` returns per-example
    losses ``(B,)`` (default :func:`answer_nll_per_example`). Tensors are substituted with
    ``torch.func.functional_call`` (tied weights follow their one parameter), so the model is never modified.
    """

    def __init__(self, model, split: ParamSplit, batches: Sequence[dict],
                 loss_fn: Callable[[object, dict], torch.Tensor] | None = None):
        self.module = _LossModule(model, loss_fn or answer_nll_per_example)
        self.module.eval()
        self.x_names = [f"model.{name}" for name, _ in split.base]
        self.y_names = [f"model.{name}" for name, _ in split.adapter]
        self.x0 = [p.detach() for p in split.tensors("base")]
        self.y0 = [p.detach() for p in split.tensors("adapter")]
        self.batches = list(batches)
        # examples: task batches (data.collate_candidates) carry one label per example, token batches one row
        self.n = sum(int(b["labels"].shape[0] if "labels" in b else b["input_ids"].shape[0]) for b in self.batches)
        if self.n == 0:
            raise ValueError("the probe set is empty")

    def per_example(self, xs, ys, batch) -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        params = dict(zip(self.x_names + self.y_names, list(xs) + list(ys)))
        # the math attention kernel: the fused CPU/flash kernels have no double backward (needed for HVPs)
        with sdpa_kernel([SDPBackend.MATH]):
            return torch.func.functional_call(self.module, params, (batch,), strict=False)

    def value(self, xs, ys) -> torch.Tensor:
        return sum(self.per_example(xs, ys, b).sum() for b in self.batches) / self.n

    def example_gradient_stats(self, xs, ys) -> dict:
        """Full gradient, heterogeneity and largest per-example gradient norm, per block (one backward per
        example, each from its batch's one forward)."""
        xs = [t.detach().requires_grad_(True) for t in xs]
        ys = [t.detach().requires_grad_(True) for t in ys]
        params = xs + ys
        total = [torch.zeros_like(t, dtype=torch.float64) for t in params]
        sq = {"base": 0.0, "adapter": 0.0}
        top = {"base": 0.0, "adapter": 0.0}
        loss_sum = 0.0
        for batch in self.batches:
            losses = self.per_example(xs, ys, batch)
            for i in range(losses.shape[0]):
                grads = torch.autograd.grad(losses[i], params, retain_graph=i + 1 < losses.shape[0],
                                            allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else g.detach() for t, g in zip(params, grads)]
                for acc, g in zip(total, grads):
                    acc += g.double()
                for name, part in (("base", grads[:len(xs)]), ("adapter", grads[len(xs):])):
                    nsq = sum(float(g.double().square().sum()) for g in part)
                    sq[name] += nsq
                    top[name] = max(top[name], math.sqrt(nsq))
            loss_sum += float(losses.detach().sum())
        mean = [t / self.n for t in total]
        out = {"loss": loss_sum / self.n, "grad_norm": {}, "heterogeneity": {}, "max_example_grad": top}
        for name, part in (("base", mean[:len(xs)]), ("adapter", mean[len(xs):])):
            gsq = sum(float(t.square().sum()) for t in part)
            out["grad_norm"][name] = math.sqrt(gsq)
            # (1/n) sum_i ||g_i - g||^2 = (1/n) sum_i ||g_i||^2 - ||g||^2 (clamped: rounding may go below 0)
            out["heterogeneity"][name] = max(sq[name] / self.n - gsq, 0.0)
        return out


def _spectrum_dict(s) -> dict:
    return {"value": s.value, "norm": s.norm, "rel_change": s.rel_change, "iterations": s.iterations}


def probe_point(block_loss: BlockLoss, settings: ProbeSettings, xs=None, ys=None) -> dict:
    """Every constant of the module docstring at ``(xs, ys)`` (default: the model's current tensors).

    Returns a JSON-ready dict: ``loss``, ``grad_norm``, ``max_example_grad``, ``heterogeneity`` (per block),
    ``hessian`` (``base``/``adapter``: dominant eigenvalue ``value`` and spectral norm ``norm``; ``cross``:
    ``||H_xy||``), ``trace`` (per block: Hutchinson mean and standard error), ``effective_rank`` (per block:
    trace / spectral norm), ``local`` (:class:`~hybridtheory.hgs_check.LocalConstants` on the ball),
    ``dims`` and ``seconds``.
    """
    start = time.perf_counter()
    xs = block_loss.x0 if xs is None else xs
    ys = block_loss.y0 if ys is None else ys
    gen = torch.Generator().manual_seed(settings.seed)
    hvp = autograd_hvp_fn(block_loss.value)
    out = block_loss.example_gradient_stats(xs, ys)
    base = block_power_iteration(hvp, xs, ys, "x", settings.power_iters, gen)
    adapter = block_power_iteration(hvp, xs, ys, "y", settings.power_iters, gen)
    cross = cross_block_norm(hvp, xs, ys, settings.power_iters, gen)
    out["hessian"] = {"base": _spectrum_dict(base), "adapter": _spectrum_dict(adapter), "cross": _spectrum_dict(cross)}
    out["trace"], out["effective_rank"] = {}, {}
    for name, block, spec in (("base", "x", base), ("adapter", "y", adapter)):
        mean, se = hutchinson_trace(hvp, xs, ys, block, settings.hutchinson, gen)
        out["trace"][name] = {"mean": mean, "stderr": se}
        out["effective_rank"][name] = mean / spec.norm if spec.norm > 0 else math.nan
    local = estimate_local_constants(autograd_grad_fn(block_loss.value), xs, ys, radius=settings.local_radius,
                                     n_points=settings.local_points, power_steps=settings.local_power_steps,
                                     generator=gen)
    out["local"] = asdict(local)
    out["dims"] = {"base": sum(t.numel() for t in xs), "adapter": sum(t.numel() for t in ys), "examples": block_loss.n}
    out["seconds"] = time.perf_counter() - start
    return out


def fit_l0_l1(grad_norms: Sequence[float], local_constants: Sequence[float]) -> dict:
    r"""The (L0, L1) relation from points ``(||grad_y||, local L_y)``.

    ``L1`` is the least-squares slope (clamped at 0: a falling trend certifies nothing about growth), ``L0_ls``
    the least-squares intercept at that slope, and ``L0`` the smallest intercept at that slope whose line lies
    on or above every point (``L0 + L1 g >= L``), the form Definition 1 needs. With fewer than two distinct
    gradient norms the slope is 0.
    """
    g = [float(v) for v in grad_norms]
    L = [float(v) for v in local_constants]
    if not g:
        raise ValueError("fit_l0_l1 needs at least one point")
    mg, mL = sum(g) / len(g), sum(L) / len(L)
    sxx = sum((a - mg) ** 2 for a in g)
    slope = sum((a - mg) * (b - mL) for a, b in zip(g, L)) / sxx if sxx > 0 else 0.0
    slope = max(slope, 0.0)
    return {"L1": slope, "L0_ls": mL - slope * mg, "L0": max(b - slope * a for a, b in zip(g, L)),
            "points": len(g), "raw_slope": (sum((a - mg) * (b - mL) for a, b in zip(g, L)) / sxx if sxx > 0 else 0.0)}


def probe_constants(points: Sequence[dict], fit: dict):
    """HGSConstants from probe points (max over checkpoints of each block's spectral norm, per-example gradient
    norms as G_x, G_y, the fitted (L0, L1); F_lower = 0 for a negative log-likelihood). Empirical, not certified."""
    from hybridtheory.assumptions import HGSConstants

    return HGSConstants(
        L_x=max(p["hessian"]["base"]["norm"] for p in points),
        L_c=max(p["hessian"]["cross"]["norm"] for p in points),
        L0=max(fit["L0"], 0.0), L1=fit["L1"],
        G_x=max(p["max_example_grad"]["base"] for p in points),
        G_y=max(p["max_example_grad"]["adapter"] for p in points),
        F_lower=0.0, region="probe: max over checkpoints of local estimates (lower estimates, not certified)",
        form="hessian", source="llm_experiments.probe")


def theory_settings(points: Sequence[dict], fit: dict, n_components: int, eps: float = 0.1,
                    law: str = "gaussian") -> dict:
    """Step sizes and ``mu`` from the probe's constants through :mod:`hybridtheory.bounds`.

    * Theorem 1's caps (``eta_x_cap``, ``eta_y_cap``) and Corollary 1's schedule (bounded gradients; sphere or
      Gaussian law; a Rademacher run is read with the Gaussian expressions);
    * Theorem 2's caps and Corollary 3's schedule (heterogeneity instead of bounded gradients, with the
      measured ``varsigma^2`` per block, max over checkpoints), under the run's own law.

    Each schedule is evaluated twice: with the full base dimension ``d_x`` and with the measured effective
    rank in its place (the effective-dimension reading of Lemma 2). ``n_components`` is the number of minibatch
    steps per epoch (each minibatch loss is one component of the theory's finite sum). ``delta`` is the step-0
    probe loss (F_lower = 0).
    """
    from hybridtheory import bounds

    c = probe_constants(points, fit)
    eta_x, eta_y = bounds.step_caps(c, n_components)
    out = {"constants": c.to_dict(), "n_components": n_components, "eps": eps, "law": law,
           "eta_x_cap": eta_x, "eta_y_cap": eta_y, "corollary1": {}, "theorem2": {}}
    delta = max(points[0]["loss"], 1e-12)
    ranks = [p["effective_rank"]["base"] for p in points if math.isfinite(p["effective_rank"]["base"])]
    dims = {"d_x": points[0]["dims"]["base"], "effective_rank": max(1, round(max(ranks))) if ranks else 1}
    law1 = "sphere" if law == "sphere" else "gaussian"
    vx = max(p["heterogeneity"]["base"] for p in points)
    vy = max(p["heterogeneity"]["adapter"] for p in points)
    for key, dx in dims.items():
        try:
            s = bounds.corollary1_schedule(c, n_components, int(dx), eps=eps, delta=delta, law=law1)
            out["corollary1"][key] = {"dx": int(dx), "law": law1, "mu": s.mu, "eta_x": s.eta_x, "eta_y": s.eta_y,
                                      "T": s.T, "binding": s.binding}
        except bounds.BoundError as exc:
            out["corollary1"][key] = {"dx": int(dx), "error": str(exc)}
        if hasattr(bounds, "corollary3_schedule"):
            try:
                cx, cy = bounds.theorem2_caps(c, n_components, int(dx), law=law)
                s2 = bounds.corollary3_schedule(c, n_components, int(dx), eps=eps, delta=delta, varsigma_x_sq=vx,
                                                varsigma_y_sq=vy, law=law)
                out["theorem2"][key] = {"dx": int(dx), "law": law, "eta_x_cap": cx, "eta_y_cap": cy, "mu": s2.mu,
                                        "eta_x": s2.eta_x, "eta_y": s2.eta_y, "T": s2.T, "binding": s2.binding,
                                        "varsigma_x_sq": vx, "varsigma_y_sq": vy}
            except bounds.BoundError as exc:
                out["theorem2"][key] = {"dx": int(dx), "error": str(exc)}
    return out


# ---------------------------------------------------------------------- a run with probes at checkpoints
def _float_copy(model, dtype: torch.dtype):
    clone = copy.deepcopy(model)
    clone.to(dtype)
    clone.eval()
    return clone


def probe_model_now(model, probe_batches_cpu: Sequence[dict], settings: ProbeSettings, device, loss_fn=None) -> dict:
    """Probe a float copy of ``model`` (the training model is not touched) on the probe batches."""
    from .models import split_parameters

    dtype = torch.float64 if settings.dtype == "float64" else torch.float32
    clone = _float_copy(model, dtype)
    batches = [{k: v.to(device) for k, v in b.items()} for b in probe_batches_cpu]
    return probe_point(BlockLoss(clone, split_parameters(clone), batches, loss_fn=loss_fn), settings)


def run_probe(cfg, checkpoints: Sequence[int], settings: ProbeSettings, out_dir: str | Path, splits=None,
              eps: float = 0.1, figures: bool = True, spec=None) -> dict:
    """Train ``cfg``'s method for ``max(checkpoints)`` steps and probe at each checkpoint (0 = before training).

    The probe set is the first ``settings.examples`` training examples; ``cfg.steps`` is replaced by the last
    checkpoint. Writes ``out_dir/probe.json`` (atomically) and, with ``figures``, the two figures. ``splits``
    and ``spec`` (a :class:`~llm_experiments.tasks.TaskSpec`) may be given directly (generated tasks);
    otherwise they come from ``cfg.task`` and ``cfg.data``.
    """
    from hybridtheory.io import atomic_write_json

    from .data import collate_candidates, encode_for_training, load_splits
    from .models import attach_peft, load_model_and_tokenizer, split_parameters
    from .runs import environment, resolve_device
    from .scoring import objective_loss_fn, per_example_losses
    from .tasks import get_task, resolve_objective
    from .trainer import Trainer, split_micro_batches

    settings.validate()
    checkpoints = sorted({int(c) for c in checkpoints})
    if not checkpoints or checkpoints[0] < 0:
        raise UserError("checkpoints must be a non-empty list of steps >= 0 (e.g. --checkpoints 0 50 100)")
    if not cfg.uses_peft:
        raise UserError(f"the probe needs a PEFT module (the adapter block y); method {cfg.method} has none: "
                        "use hybrid, fo-peft or zo-peft")
    cfg = dataclasses.replace(cfg, steps=max(checkpoints[-1], 1)).validate()
    spec = spec or get_task(cfg.task, cfg.winogrande_scoring)
    objective = resolve_objective(spec, cfg.objective)  # the probe measures the loss the run trains on
    device = resolve_device(cfg.device)
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.dtype, cfg.trust_remote_code)
    if splits is None:
        splits = load_splits(spec, source=cfg.data, n_train=cfg.n_train, n_dev=cfg.n_dev, n_eval=cfg.n_eval,
                             seed=cfg.data_seed)
    model = attach_peft(model, cfg.peft, seed=cfg.seed, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                        lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules,
                        num_virtual_tokens=cfg.num_virtual_tokens)
    model.to(device)
    encoded = encode_for_training(splits.train, tokenizer, spec, cfg.max_length, objective)
    if len(encoded) < 2:
        raise UserError(f"task {cfg.task}: the probe needs at least 2 training examples, got {len(encoded)}")
    pad = tokenizer.pad_token_id
    probe_set = encoded[:settings.examples]
    probe_batches = [collate_candidates(probe_set[i:i + settings.batch_size], pad)
                     for i in range(0, len(probe_set), settings.batch_size)]
    trainer = Trainer(model, split_parameters(model), cfg, len(encoded), device,
                      loss_fn=objective_loss_fn(objective))
    points, losses = [], []
    for target in checkpoints:
        while trainer.state.step < target:
            batch = [encoded[i] for i in trainer.next_indices(cfg.batch_size)]
            micro = split_micro_batches(batch, min(cfg.micro_batches, len(batch)),
                                        lambda c: collate_candidates(c, pad), device)
            trainer.state.examples_seen += len(batch)
            losses.append(trainer.step(micro)["loss"])
        point = probe_model_now(model, probe_batches, settings, device,
                                loss_fn=lambda m, b: per_example_losses(m, b, objective))
        point["step"] = trainer.state.step
        point["displacement"] = trainer.displacement() if cfg.track_displacement else {}
        points.append(point)
    fit = fit_l0_l1([p["grad_norm"]["adapter"] for p in points], [p["local"]["L_y"] for p in points])
    n_components = max(1, math.ceil(len(encoded) / cfg.batch_size))
    result = {"config": cfg.to_dict(), "settings": asdict(settings), "checkpoints": points, "train_loss": losses,
              "l0_l1_fit": fit, "theory": theory_settings(points, fit, n_components, eps=eps, law=cfg.zo_law),
              "environment": environment(device)}
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "probe.json", result, sort_keys=True, default=float)
    if figures:
        plot_probe(result, out_dir)
    return result


# ---------------------------------------------------------------------- figures
def plot_probe(result: dict, out_dir: str | Path, catalogue: Sequence[str] = ("power", "exp", "logistic")) -> list[Path]:
    """``probe_constants.png`` (per-block constants over training) and ``probe_l0l1.png`` (the adapter's local
    L_y against ||grad_y|| with the fitted line, beside catalogue families' Hessian norms against their
    gradient norms). Written atomically; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hybridtheory.figures import atomic_savefig
    from hybridtheory.objectives.catalogue import local_smoothness_samples

    out_dir = Path(out_dir)
    pts = result["checkpoints"]
    steps = [p["step"] for p in pts]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    for label, key in (("|lambda_max(H_xx)| base", ("hessian", "base", "norm")),
                       ("|lambda_max(H_yy)| adapter", ("hessian", "adapter", "norm")),
                       ("||H_xy|| cross", ("hessian", "cross", "norm"))):
        ax.plot(steps, [p[key[0]][key[1]][key[2]] for p in pts], "o-", label=label)
    ax.set(yscale="log", xlabel="step", title="Hessian blocks (power iteration on HVPs)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name in ("base", "adapter"):
        ax.plot(steps, [p["grad_norm"][name] for p in pts], "o-", label=f"||grad F|| {name}")
        ax.plot(steps, [math.sqrt(p["heterogeneity"][name]) for p in pts], "s--", label=f"varsigma {name}")
    ax.set(yscale="log", xlabel="step", title="gradients and heterogeneity")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(steps, [p["effective_rank"]["base"] for p in pts], "o-", label="base: tr H / |lambda_max|")
    ax.plot(steps, [p["effective_rank"]["adapter"] for p in pts], "s-", label="adapter")
    ax.set(xlabel="step", title=f"effective rank (d_x = {pts[0]['dims']['base']:,})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = []
    paths.append(atomic_savefig(fig, out_dir / "probe_constants.png", dpi=110, bbox_inches=None))
    plt.close(fig)

    fit = result["l0_l1_fit"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    g = np.array([p["grad_norm"]["adapter"] for p in pts])
    L = np.array([p["local"]["L_y"] for p in pts])
    ax.scatter(g, L, c=steps, cmap="viridis", zorder=3, label="local L_y at checkpoints (colour: step)")
    gg = np.linspace(0, max(g.max(), 1e-12) * 1.1, 50)
    ax.plot(gg, fit["L0"] + fit["L1"] * gg, "r-", label=f"L0 + L1 g: L0={fit['L0']:.3g}, L1={fit['L1']:.3g}")
    ax.set(xlabel="||grad_y F||", ylabel="local L_y", title="LM adapter block: (L0, L1)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name in catalogue:
        s = local_smoothness_samples(name, 400, seed=0)
        ax.scatter(s["grad_norm"], s["hess_norm"], s=4, alpha=0.5,
                   label=f"{name} (L0={float(s['L0']):.3g}, L1={float(s['L1']):.3g})")
    ax.scatter(g, L, c="k", marker="*", s=60, label="LM adapter (this probe)")
    ax.set(xscale="log", yscale="log", xlabel="||grad||", ylabel="||Hessian|| / local L",
           title="beside the synthetic (L0, L1) catalogue")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(atomic_savefig(fig, out_dir / "probe_l0l1.png", dpi=110, bbox_inches=None))
    plt.close(fig)
    return paths
