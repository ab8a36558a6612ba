r"""The training loop: hybrid ZO/FO (and its baselines) on a Hugging Face causal LM, on the core's step.

Nothing here re-implements the update rule. Each step builds ``hybridtheory.algorithm.ParamGroup`` s and an
:class:`ModelOracle` for the minibatch and calls :func:`hybridtheory.algorithm.hybrid_step`:

===========  =====================  =====================
method       base weights           PEFT module
===========  =====================  =====================
hybrid       ZO, ``lr_base``        FO, ``lr_adapter``
fo-full      FO, ``lr_base``        (none)
fo-peft      frozen                 FO, ``lr_adapter``
zo-full      ZO, ``lr_base``        (none)  -- MeZO
zo-peft      frozen                 ZO, ``lr_adapter``
===========  =====================  =====================

*Directions.* Step ``t`` uses seed ``derive_seed(run_seed, t)``; the core regenerates each direction tensor
piece by piece from its counter-based generator (never the global RNG) for perturb, restore and update.

*Oracle.* ``loss()`` is an eval-mode (no dropout), no-grad forward on the step's minibatch; ``loss_and_grad``
is the FO forward/backward on the *same* minibatch, with dropout only if ``fo_dropout`` (default off, so the
FO loss is the same deterministic function the ZO forwards see, and the forward difference can reuse it).

*Micro-batches.* The minibatch is split into ``micro_batches`` sequential forwards. The oracle's loss is the
mean of the micro-batch losses, so the ZO coefficient :math:`c=(\bar f(x+\mu u)-\bar f(x-\mu u))/2\mu` equals
the average of the per-micro-batch coefficients of the same direction: this *is* ZO gradient accumulation
by replaying one (seed, averaged c) record, done without re-perturbing per micro-batch (tests check the two
agree). FO gradients are summed over micro-batches.

*dtype policy* (README "dtype policy"): for a 16-bit model the ZO base weights get an fp32 master copy
(``base_master="auto"``). The core never perturbs the master: each perturbation pass writes the model's 16-bit
weights as cast(master + s mu u) (rounded once), and the update pass updates the master and writes
cast(master), so (a) restore is exact (the next write starts from the untouched master), not bf16 drift
(~1e-2), and (b) ZO updates far below the bf16 ULP accumulate in the master instead of
rounding away. ``base_master="float64"`` on an fp32 model makes restore exact to fp32 in practice.
Memory-light alternatives (``compensated``: an int16 error buffer, ``stochastic``: stochastic rounding) and
``auto``'s choice among them from the free memory are in :mod:`.precision`; the decision is ``base_policy``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hybridtheory.algorithm import (EpochSampler, ParamGroup, ZOSettings, derive_seed, hybrid_step, sgd_update,
                                    step_size_multiplier, zo_forwards, zo_update)
from hybridtheory.algorithm.rounding import COMPENSATION_DTYPE
from hybridtheory.io import atomic_folder

from .config import TrainConfig
from .distributed import ReducedOracle, World, gather_full, is_sharded, local_chunks, local_rows, local_shard
from .errors import UserError
from .models import ParamSplit, no_decay_parameter_ids, torch_dtype
from .precision import MAX_RETRIES, FOPrecision, free_memory_bytes, resolve_base_policy

# Which block gets which oracle, per method: (base oracle or None if frozen, adapter oracle or None).
METHOD_ORACLES = {
    "hybrid": ("zo", "fo"), "fo-full": ("fo", None), "fo-peft": (None, "fo"),
    "zo-full": ("zo", None), "zo-peft": (None, "zo"),
}
MASTER_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def passes_per_step(cfg: TrainConfig) -> tuple[int, int]:
    """(forward, backward) passes over the minibatch per step of ``cfg``'s method, as ``hybrid_step`` counts
    them (``StepInfo``): a grid cell's budget is these times its steps."""
    base_oracle, adapter_oracle = METHOD_ORACLES[cfg.method]
    has_fo = "fo" in (base_oracle, adapter_oracle)
    has_zo = "zo" in (base_oracle, adapter_oracle)
    settings = ZOSettings(mu=cfg.mu, law=cfg.zo_law, difference=cfg.zo_difference, queries=cfg.zo_queries)
    if not has_zo:
        return 1, 1
    if not has_fo:
        return zo_forwards(settings, have_f0=False), 0
    if cfg.fo_point == "jacobi":        # FO pass at x first; its loss is the forward difference's f(x)
        return 1 + zo_forwards(settings, have_f0=True), 1
    if cfg.fo_point == "perturbed":     # the FO pass at x + mu u is the first ZO forward
        return zo_forwards(settings, have_f0=False), 1
    return zo_forwards(settings, have_f0=False) + 1, 1   # gauss_seidel: FO pass after the ZO update


class PhaseClock:
    """Step time, the whole step's peak memory (CUDA), and optionally the same per phase of a step.

    The step is timed with CUDA events on GPU (one wait, at the end of the step) and with the wall clock on CPU.
    Per-phase detail is free on CPU and always on there. On CUDA it is opt-in (``detail``): each phase boundary
    then synchronises the GPU (so the phase times are the GPU's) and resets the one peak counter, folding the
    peak of the interval that just ended into the step's peak (``peaks["step"]``). Without detail there is no
    synchronisation inside the step, and the step's peak is read once at its end.
    """

    def __init__(self, device: torch.device, detail: bool = False):
        self.cuda = device.type == "cuda"
        self.detail = detail or not self.cuda
        self.times: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self._events = None
        self._wall = 0.0

    def _fold(self) -> float:
        peak = torch.cuda.max_memory_allocated() / 2**20
        self.peaks["step"] = max(self.peaks.get("step", 0.0), peak)
        return peak

    @contextmanager
    def phase(self, name: str):
        if not self.detail:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
            self._fold()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                self.peaks[name] = max(self.peaks.get(name, 0.0), self._fold())
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def start(self) -> None:
        """Begin a step: forget peaks of whatever ran between steps (evaluation, logging)."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()  # allocator statistics live on the host: no sync needed
            if torch.cuda.is_available():
                self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                self._events[0].record()
        self._wall = time.perf_counter()

    def stop(self) -> float:
        """End a step: its duration in seconds (CUDA events on GPU: waits for the step's kernels)."""
        if self.cuda and self._events is not None:
            begin, end = self._events
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3
        return time.perf_counter() - self._wall

    def take(self) -> tuple[dict, dict]:
        if self.cuda:
            self._fold()
            torch.cuda.reset_peak_memory_stats()  # the next step starts a fresh interval
        times, peaks = self.times, self.peaks
        self.times, self.peaks = {}, {}
        return times, peaks


def _wide(loss: torch.Tensor) -> torch.Tensor:
    """Losses in at least fp32 (a 16-bit loss would swamp the ZO difference f(x+mu u) - f(x-mu u))."""
    return loss.float() if loss.dtype in (torch.float16, torch.bfloat16) else loss


class ModelOracle:
    """The core's ``Oracle`` for one minibatch (a list of collated micro-batches on the model's device)."""

    def __init__(self, model, micro_batches: list[dict], fo_dropout: bool, before_forward, clock: PhaseClock,
                 loss_fn=None, weights: list[float] | None = None, precision: FOPrecision | None = None):
        self.model, self.micro, self.fo_dropout = model, micro_batches, fo_dropout
        # FO precision policy (precision.py): autocast of every forward, loss scaling of the FO backward
        self.precision = precision or FOPrecision()
        self.autocast = lambda: self.precision.autocast(micro_batches[0]["input_ids"].device)
        # loss = sum of weight * micro-batch loss; None: the mean over micro-batches (a rank of a distributed
        # run passes its micro-batches' shares of the minibatch's answer tokens, see distributed.py)
        self.weights = weights
        self.before_forward, self.clock = before_forward, clock
        # default: the model's own loss (HF shifts labels and averages over answer tokens; it upcasts to fp32)
        self.loss_fn = loss_fn or (lambda m, batch: _wide(m(**batch, use_cache=False).loss))
        self.losses: list[torch.Tensor] = []  # every loss evaluated this step, in order (for the logged loss)

    def loss(self) -> torch.Tensor:
        self.before_forward()  # a hook run before every forward (the core keeps 16-bit weights in sync)
        with self.clock.phase("zo_forward"), torch.no_grad(), self.autocast():
            self.model.train(False)  # deterministic: no dropout in ZO forwards
            if self.weights is None:
                total = sum(self.loss_fn(self.model, mb) for mb in self.micro) / len(self.micro)
            else:
                total = sum(w * self.loss_fn(self.model, mb) for w, mb in zip(self.weights, self.micro))
        self.losses.append(total)
        return total

    def loss_and_grad(self, params):
        self.before_forward()
        with self.clock.phase("fo_forward_backward"), torch.enable_grad():
            self.model.train(self.fo_dropout)  # explicit dropout policy of the FO pass
            weights = self.weights or [None] * len(self.micro)
            for _ in range(MAX_RETRIES + 1):  # float16 amp: redo the pass at a halved loss scale on overflow
                total = 0.0
                for p in params:
                    p.grad = None
                scale = self.precision.loss_scale if self.precision.scaled else 1.0
                for mb, w in zip(self.micro, weights):  # backward(inputs=...) accumulates micro-batch grads in .grad
                    with self.autocast():
                        loss = self.loss_fn(self.model, mb)
                    loss = loss / len(self.micro) if w is None else loss * w
                    (loss * scale if scale != 1.0 else loss).backward(inputs=list(params))
                    total = total + loss.detach()
                grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
                if not self.precision.scaled or self.precision.unscale(grads):
                    break
            for p in params:  # the caller owns the gradients now; .grad stays empty between steps
                p.grad = None
            self.model.train(False)
        self.losses.append(total)
        return total, grads


@dataclass
class TrainState:
    """Counters of the loop; with the group tensors and the optimizer state, enough to resume exactly."""

    step: int = 0
    epoch: int = 0
    position: int = 0          # index into the current epoch's order
    examples_seen: int = 0
    forwards: int = 0
    backwards: int = 0
    elapsed_s: float = 0.0


class Trainer:
    """Holds the model, the parameter groups, the FO optimizer, the sampler and the :class:`TrainState`."""

    def __init__(self, model, split: ParamSplit, cfg: TrainConfig, n_train: int, device: torch.device,
                 world: World | None = None, loss_fn=None, initial_base=None,
                 kept_policy: dict | None = None):
        # loss_fn(model, micro_batch) -> loss: the task objective (llm_experiments.scoring); None: the model's
        # own causal-LM loss on ``labels`` (benchmarks on synthetic token batches)
        # kept_policy: the base_policy a resumed run recorded in its run.json; ``auto`` keeps it instead of deciding
        # again from this machine's free memory (another choice would continue the run under another arithmetic)
        # initial_base() -> the base tensors as the run started (full, unsharded, CPU, in ``split`` order), read
        # again from where the model came from: the start of the displacement and of a replay (runs.py passes
        # it; without it the displacement keeps a CPU copy and a replay needs the base still at its start)
        self.model, self.cfg, self.device, self.loss_fn = model, cfg, device, loss_fn
        self.initial_base = initial_base
        self.world = world or World(device=device)  # one process: collectives are no-ops
        self.state = TrainState()
        self.clock = PhaseClock(device, detail=cfg.phase_detail)
        self.peak_mem_mb: dict[str, float] = {}  # CUDA only: max over steps, per phase and "step"
        self.sampler = EpochSampler(n=n_train, seed=cfg.seed, replacement=cfg.sampling == "replacement")
        base_oracle, adapter_oracle = METHOD_ORACLES[cfg.method]
        if cfg.uses_peft and not split.adapter:
            raise ValueError("method needs a PEFT module but the model has no adapter parameters")
        for p in model.parameters():  # autograd only where FO needs it; ZO and frozen blocks have no graph
            p.requires_grad_(False)
        # MeZO's ZO weight decay skips biases and normalisation weights (decided on the model's own tensors,
        # before a master copy stands in for them)
        exempt = no_decay_parameter_ids(model)
        decay_masks = {name: [id(p) not in exempt for p in split.tensors(name)] for name in ("base", "adapter")}
        # sharded base (FSDP2): the groups hold this rank's local shards; ``shard_of[(group, i)]`` is the DTensor
        # whose shard tensor i of the group is, ``starts`` where each shard begins in its full flat tensor
        base = split.tensors("base")
        sharded = [is_sharded(p) for p in base]
        self.shard_of: dict[tuple[str, int], object] = {}
        starts: dict[int, int] = {}
        if any(sharded):
            dtensors, base = base, []
            for i, p in enumerate(dtensors):
                local, start = local_shard(p)
                base.append(local)
                self.shard_of[("base", i)] = p
                starts[i] = start
        # ZO base policy (precision.py): fp32/fp64 master, compensation buffer, stochastic rounding or in place
        policy, reason = self._base_policy(cfg, base, base_oracle == "zo", kept_policy)
        self.master_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        compensation = None
        if base_oracle == "zo" and policy in MASTER_DTYPES:
            masters = [p.detach().to(MASTER_DTYPES[policy]).clone() for p in base]
            self.master_pairs = list(zip(base, masters))
            base = masters
        elif base_oracle == "zo" and policy == "compensated":
            compensation = [torch.zeros_like(p, dtype=COMPENSATION_DTYPE) for p in base]
        self.master_dtype = policy if self.master_pairs else "none"
        self.base_policy = {"policy": policy, "reason": reason, "asked": cfg.base_master}
        self.groups: list[ParamGroup] = []

        def group(name, params, lr, oracle, mirrors=None, compensation=None):
            # ZO blocks take MeZO's weight decay in the core; FO decay belongs to the FO optimizer (--weight-decay)
            wd = cfg.zo_weight_decay if oracle == "zo" else 0.0
            return ParamGroup(name, params, lr, oracle, weight_decay=wd, decay_mask=decay_masks[name], mirrors=mirrors,
                              compensation=compensation)

        if base_oracle is not None:
            # with a master, the core writes the model's 16-bit weights as cast(master + s mu u) in each
            # perturbation pass and cast(master) in the update pass: no separate casts before forwards
            mirrors = [w for w, _ in self.master_pairs] if self.master_pairs else None
            self.groups.append(group("base", base, cfg.lr_base, base_oracle, mirrors=mirrors, compensation=compensation))
        if adapter_oracle is not None:
            self.groups.append(group("adapter", split.tensors("adapter"), cfg.lr_adapter, adapter_oracle))
        self.base_lrs = {g.name: g.lr for g in self.groups}  # the schedule multiplies these each step
        self.fo_grad_norm: float | None = None  # FO gradient norm of the last step, before clipping
        fo_params = [p for g in self.groups if g.oracle == "fo" for p in g.params]
        # FO precision (precision.py): amp / fp32 hold the FO tensors in float32 before the optimizer sees them
        self.precision = FOPrecision.build(cfg.fo_precision, torch_dtype(cfg.dtype), cfg.method)
        self.precision.prepare(fo_params)
        for p in fo_params:
            p.requires_grad_(True)
        zo_sharded = {}
        if starts and base_oracle == "zo":  # each rank draws its shards' entries of the direction (counter-based)
            zo_block = [p for g in self.groups if g.oracle == "zo" for p in g.params]
            offsets = [starts[i] for i in range(len(base))] + [0] * (len(zo_block) - len(base))
            dim = sum(self.shard_of[("base", i)].numel() for i in range(len(base))) + sum(
                t.numel() for t in zo_block[len(base):])
            zo_sharded = {"offsets": tuple(offsets), "reduce": lambda sq: self.world.sum_scalar(sq, "zo_norm"),
                          "dim": dim}
        rounding = "stochastic" if base_oracle == "zo" and policy == "stochastic" else "nearest"
        self.zo = ZOSettings(mu=cfg.mu, law=cfg.zo_law, difference=cfg.zo_difference, queries=cfg.zo_queries,
                             rounding=rounding, **zo_sharded)
        self.optimizer = None
        if fo_params and cfg.fo_optimizer != "sgd":
            kind = torch.optim.Adam if cfg.fo_optimizer == "adam" else torch.optim.AdamW
            self.optimizer = kind([{"params": g.params, "lr": g.lr} for g in self.groups if g.oracle == "fo"],
                                  weight_decay=cfg.weight_decay)
        # start of each block, on CPU, for the displacement ||block - block_start|| in the logs; the base's is
        # read again from initial_base() at each evaluation when there is one (no resident copy of the model)
        self.start = ({g.name: [p.detach().to("cpu", copy=True) for p in g.params] for g in self.groups
                       if not (g.name == "base" and self.reload_start)}
                      if cfg.track_displacement else {})
        # seed-replay checkpoints: the ZO base's update log (per step: seed, coefficient per query, step size),
        # recorded whatever --checkpoint-base says (a few bytes a step), so a resume may switch between full and
        # replay. ``trajectory_start``: the step the log begins at (0 unless resumed from a checkpoint that had
        # no log). ``base_moved``: the base is no longer the initial one (a replay then starts from initial_base)
        base_group = next((g for g in self.groups if g.name == "base"), None)
        self.replay_group = base_group if base_group is not None and base_group.oracle == "zo" else None
        self.trajectory: dict[str, list] = {"seed": [], "coeff": [], "lr": []}
        self.trajectory_start = 0
        self.base_moved = False
        # float64 sum of the starting base: a replay checks it starts from the same weights (one pass, replay only)
        self.start_checksum = self.block_checksum("base") if self.replays_base else None

    @property
    def reload_start(self) -> bool:
        """The displacement's base start comes from initial_base() (no resident copy)."""
        return self.initial_base is not None and self.cfg.displacement_start == "reload"

    @property
    def replays_base(self) -> bool:
        """Checkpoints hold the base's update log instead of its tensors (--checkpoint-base replay)."""
        return self.replay_group is not None and self.cfg.checkpoint_base == "replay"

    # -------------------------------------------------------------- dtype policy
    def _base_policy(self, cfg: TrainConfig, base: list[torch.Tensor], zo_base: bool,
                     kept: dict | None = None) -> tuple[str, str]:
        """Resolve ``base_master`` (precision.resolve_base_policy). ``auto`` on a 16-bit ZO base reads the free
        memory of the base's device; ranks take the most frugal of their choices (they must all store alike).
        A resumed run's ``auto`` keeps the policy its start chose (``kept``), whatever the memory is now."""
        if cfg.base_master == "auto" and kept and kept.get("asked") == "auto" and kept.get("policy"):
            policy = kept["policy"]
            reason = f"kept from the run being resumed (its start chose it: {kept.get('reason', 'no reason recorded')})"
            if policy != "none" and self.world.is_main:
                print(f"base policy: {policy} ({reason})", file=sys.stderr)
            return policy, reason
        dtype = base[0].dtype if base else torch.float32
        numel = sum(p.numel() for p in base)
        free = None
        if cfg.base_master == "auto" and zo_base and dtype in (torch.float16, torch.bfloat16):
            free = free_memory_bytes(base[0].device)
        policy, reason = resolve_base_policy(cfg.base_master, dtype, numel, zo_base, free)
        if cfg.base_master == "auto" and self.world.distributed and zo_base:
            order = ("none", "float32", "compensated", "stochastic")
            votes = [float(self.world.sum_scalar(torch.tensor(float(policy == p), dtype=torch.float64,
                                                              device=base[0].device), "check")) for p in order]
            agreed = order[max(i for i, v in enumerate(votes) if v > 0)]
            if agreed != policy:
                policy, reason = agreed, f"another rank chose {agreed} (this rank: {policy}, {reason})"
        if cfg.base_master == "auto" and policy != "none" and self.world.is_main:
            # a 16-bit ZO base: the choice depends on this machine's free memory, so say why (one line)
            print(f"base policy: {policy} ({reason})", file=sys.stderr)
        return policy, reason

    @torch.no_grad()
    def sync_master(self) -> None:
        """Model weights <- cast(master). A no-op for fp32 models without a master."""
        for weight, master in self.master_pairs:
            weight.copy_(master)

    @torch.no_grad()
    def fingerprint(self) -> float:
        """A float64 checksum of every trained tensor (ranks compare it before the first step)."""
        return self.block_checksum(*(g.name for g in self.groups))

    @torch.no_grad()
    def block_checksum(self, *names: str) -> float:
        """A float64 checksum of the tensors of the named groups (all ranks call it: shards are summed)."""
        whole = sharded = 0.0
        for g in self.groups:
            if g.name not in names:
                continue
            for i, p in enumerate(g.params):
                value = float(p.detach().to(torch.float64).sum())
                if (g.name, i) in self.shard_of:
                    sharded += value
                else:
                    whole += value
        if self.shard_of:
            sharded = float(self.world.sum_scalar(torch.tensor(sharded, dtype=torch.float64), "check"))
        return whole + sharded

    # -------------------------------------------------------------- data order
    def next_indices(self, batch_size: int) -> list[int]:
        """The next minibatch of the epoch order; the last batch of an epoch may be smaller (each example
        is used exactly once per epoch under reshuffling)."""
        order = self.sampler.order(self.state.epoch)
        indices = order[self.state.position:self.state.position + batch_size].tolist()
        self.state.position += len(indices)
        if self.state.position >= self.sampler.n:
            self.state.epoch, self.state.position = self.state.epoch + 1, 0
        return indices

    # -------------------------------------------------------------- one step
    def fo_update(self, params, grads, lrs) -> None:
        """SGD (the theory's update, from the core) or one step of the inner Adam/AdamW, after clipping the FO
        gradient to ``max_grad_norm`` (all FO tensors together, as ``torch.nn.utils.clip_grad_norm_``)."""
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            raise Diverged(self.state.step + 1, "non-finite FO gradient")
        with self.clock.phase("fo_update"):
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.fo_grad_norm = float(norm)
            if self.cfg.max_grad_norm > 0:
                clip = min(1.0, self.cfg.max_grad_norm / (self.fo_grad_norm + 1e-6))
                if clip < 1.0:
                    torch._foreach_mul_(grads, clip)
            if self.optimizer is None:
                sgd_update(params, grads, lrs)
                return
            for p, g in zip(params, grads):
                p.grad = g
            self.optimizer.step()
            for p in params:
                p.grad = None

    def schedule(self) -> float:
        """Set every block's step size for the coming step: base lr x the schedule's multiplier (the core and
        the inner Adam/AdamW both read it); returns the multiplier."""
        cfg = self.cfg
        multiplier = step_size_multiplier(cfg.lr_schedule, self.state.step, cfg.steps, cfg.warmup_steps)
        for g in self.groups:
            g.lr = self.base_lrs[g.name] * multiplier
        if self.optimizer is not None:
            for param_group, g in zip(self.optimizer.param_groups, [g for g in self.groups if g.oracle == "fo"]):
                param_group["lr"] = g.lr
        return multiplier

    def step(self, micro_batches: list[dict], weights: list[float] | None = None) -> dict:
        """One hybrid step on a minibatch (this rank's micro-batches and their loss weights, see
        :mod:`.distributed`); returns the metrics of this step."""
        self.world.take_bytes()  # count this step's traffic only
        multiplier = self.schedule()
        self.fo_grad_norm = None
        oracle = ModelOracle(self.model, micro_batches, self.cfg.fo_dropout, lambda: None, self.clock,
                             loss_fn=self.loss_fn and (lambda m, batch: _wide(self.loss_fn(m, batch))),
                             weights=weights, precision=self.precision)
        if self.world.distributed:
            oracle = ReducedOracle(oracle, self.world)
        self.clock.start()
        step_seed = derive_seed(self.cfg.seed, self.state.step)
        info = hybrid_step(self.groups, oracle, self.zo, step_seed, fo_point=self.cfg.fo_point,
                           fo_update=self.fo_update)
        self.base_moved = True
        step_s = self.clock.stop()
        times, peaks = self.clock.take()
        if info.loss is not None:              # the FO pass's loss (at x; at the updated x for gauss_seidel)
            loss = info.loss
        elif self.zo.difference == "central":  # first two evaluations: (f(x+mu u) + f(x-mu u))/2 = f(x) + O(mu^2)
            loss = (oracle.losses[0] + oracle.losses[1]) / 2
        else:                                  # forward difference: the first evaluation is f(x)
            loss = oracle.losses[0]
        if not math.isfinite(float(loss)):
            raise Diverged(self.state.step + 1, f"non-finite loss ({float(loss)})")
        if not all(bool(torch.isfinite(torch.as_tensor(r.coeff)).all()) for r in info.records):
            raise Diverged(self.state.step + 1, "non-finite ZO coefficient")
        if self.replay_group is not None:  # what zo_update needs to redo this step's base update bit for bit
            self.trajectory["seed"].append(step_seed)
            self.trajectory["coeff"].append([float(r.coeff) for r in info.records])
            self.trajectory["lr"].append(float(self.replay_group.lr))
        self.state.step += 1
        self.state.forwards += info.forwards
        self.state.backwards += info.backwards
        self.state.elapsed_s += step_s
        if self.clock.detail:
            times["other"] = max(step_s - sum(times.values()), 0.0)  # perturb/restore passes, ZO update, syncs
        metrics = {
            "step": self.state.step, "epoch": self.state.epoch, "loss": float(loss),
            "lr": {g.name: float(g.lr) for g in self.groups}, "oracle": {g.name: g.oracle for g in self.groups},
            "forwards": info.forwards, "backwards": info.backwards, "step_s": step_s,
            "time_s": self.state.elapsed_s, "phase_s": times, "examples_seen": self.state.examples_seen,
            "lr_multiplier": multiplier,
        }
        if self.precision.scaled:
            metrics["loss_scale"] = self.precision.loss_scale
        zo_decay = {g.name: float(g.lr) * g.weight_decay for g in self.groups if g.oracle == "zo" and g.weight_decay}
        if zo_decay:  # the factor lr * wd this step's ZO update shrank the decayed tensors by
            metrics["zo_decay"] = zo_decay
        if self.fo_grad_norm is not None:  # the FO gradient's L2 norm before clipping, and whether it was clipped
            metrics["fo_grad_norm"] = self.fo_grad_norm
            metrics["fo_clipped"] = bool(0 < self.cfg.max_grad_norm < self.fo_grad_norm + 1e-6)
        if self.world.distributed:
            metrics["comm_bytes"] = self.world.take_bytes()
        if peaks:
            metrics["peak_mem_mb"] = peaks
            for name, value in peaks.items():  # run-level peaks per phase (results.json)
                self.peak_mem_mb[name] = max(self.peak_mem_mb.get(name, 0.0), value)
        return metrics

    @torch.no_grad()
    def displacement(self) -> dict:
        """||block - block_start||_2 per block (computed on CPU, tensor by tensor). The base's start is read
        again from initial_base() when the trainer has one (the same numbers as a kept copy)."""
        out = {}
        if not self.cfg.track_displacement:
            return out
        for g in self.groups:
            if g.name in self.start:
                starts = self.start[g.name]
            elif g.name == "base" and self.reload_start:
                starts = self.initial_tensors()
            else:
                continue
            sq = sum(float((p.detach().to("cpu", torch.float64) - p0.to(torch.float64)).square().sum())
                     for p, p0 in zip(g.params, starts))
            if any(key[0] == g.name for key in self.shard_of):  # shards: add up the ranks' pieces
                sq = float(self.world.sum_scalar(torch.tensor(sq, dtype=torch.float64), "displacement"))
            out[g.name] = math.sqrt(sq)
        return out

    # -------------------------------------------------------------- the base as the run started
    def initial_tensors(self) -> list[torch.Tensor]:
        """The base group's tensors as the run started, on CPU (this rank's rows of a sharded base)."""
        if self.initial_base is None:
            raise RuntimeError("the trainer has no initial_base() to read the starting weights from")
        group = next(g for g in self.groups if g.name == "base")
        full = self.initial_base()
        if len(full) != len(group.params):
            raise UserError(f"the model at {self.cfg.model!r} now has {len(full)} base tensors, the run "
                            f"{len(group.params)}: its weights changed since the run started")
        out = []
        for i, (p, p0) in enumerate(zip(group.params, full)):
            like = self.shard_of.get(("base", i))
            if like is not None:
                p0 = local_rows(p0, like)
            if p0.shape != p.shape:
                raise UserError(f"the model at {self.cfg.model!r} has base tensor {i} of shape {tuple(p0.shape)}, "
                                f"the run {tuple(p.shape)}: its weights changed since the run started")
            out.append(p0)
        return out

    @torch.no_grad()
    def replay(self, seeds: list[int], coeffs: list[list[float]], lrs: list[float],
               start_checksum: float | None = None) -> None:
        """Rebuild the ZO base from its start by redoing the logged updates through the core's
        :func:`~hybridtheory.algorithm.zo_update` (the training step's own ZO code: the same perturbation and
        update passes, no forwards), then write the model's weights from the master once."""
        group = self.replay_group
        if self.base_moved:  # e.g. back to the best step after training: start again from the initial weights
            for p, p0 in zip(group.params, self.initial_tensors()):
                p.copy_(p0)
            for buffer in group.compensation or []:  # the compensated policy's buffers start at 0 too
                buffer.zero_()
        checksum = self.block_checksum("base")
        if start_checksum is not None and not math.isclose(checksum, start_checksum, rel_tol=1e-9, abs_tol=1e-9):
            raise UserError(f"the base weights of {self.cfg.model!r} differ from the ones the run started from "
                            f"(checksum {checksum!r}, expected {start_checksum!r}): a replay checkpoint needs "
                            "the same starting weights")
        if self.start_checksum is None:
            self.start_checksum = checksum
        device = group.params[0].device
        kept_lr = group.lr
        try:
            for seed, coeff, lr in zip(seeds, coeffs, lrs):
                group.lr = lr
                zo_update([group], self.zo, int(seed), write_mirrors=False,
                          coefficients=[torch.tensor(c, dtype=torch.float64, device=device) for c in coeff])
        finally:
            group.lr = kept_lr
        self.base_moved = bool(seeds)
        self.sync_master()

    # -------------------------------------------------------------- resumable state
    def save_state(self, folder: str | Path) -> None:
        """Group tensors (safetensors), optimizer state and counters into ``folder`` (written atomically)."""
        with atomic_folder(Path(folder)) as tmp:
            self.write_state(tmp)

    def gather_shards(self) -> None:
        """Sharded base: gather the full tensors from every rank's shards for the next :meth:`write_state`
        (rank 0 keeps them, on CPU). A collective: every rank calls it before rank 0 writes a checkpoint;
        nothing to do without shards."""
        self._gathered = {}
        for (name, i), like in self.shard_of.items():
            group = next((g for g in self.groups if g.name == name), None)
            if group is None or (group is self.replay_group and self.replays_base):
                continue  # a frozen sharded base is not part of the trainer's state; a replayed one is its log
            for key, local in self._saved_tensors(group, i):
                if local.dtype == torch.int16:  # a compensation buffer: gloo and NCCL have no int16, move its bits
                    full = gather_full(local.detach().view(torch.float16), like).view(torch.int16)
                else:
                    full = gather_full(local.detach(), like)
                if self.world.is_main:
                    self._gathered[key] = full.to("cpu").contiguous().clone()

    @staticmethod
    def _saved_tensors(group: ParamGroup, i: int) -> list[tuple[str, torch.Tensor]]:
        """What a checkpoint holds of tensor ``i`` of ``group``: the tensor, and its compensation buffer if any."""
        out = [(f"{group.name}.{i}", group.params[i])]
        if group.compensation is not None:
            out.append((f"{group.name}.comp.{i}", group.compensation[i]))
        return out

    def write_state(self, folder: Path) -> None:
        """Write the resumable state into the existing folder ``folder`` (the caller makes it atomic).

        With :meth:`load_state`, the pluggable pair that defines what a checkpoint's trainer part is. A sharded
        base is written in full (gathered by :meth:`gather_shards`), so a checkpoint is the same as an unsharded
        run's and resumes at any world size.
        """
        from safetensors.torch import save_file

        stored = [g for g in self.groups if not (g is self.replay_group and self.replays_base)]
        gathered = getattr(self, "_gathered", {})
        if len(gathered) != sum(len(self._saved_tensors(g, i)) for name, i in self.shard_of
                                for g in stored if g.name == name):
            raise RuntimeError("a sharded base needs gather_shards() on every rank before write_state()")
        tensors = {key: gathered.get(key, t.detach()).to("cpu").contiguous().clone()
                   for g in stored for i in range(len(g.params)) for key, t in self._saved_tensors(g, i)}
        self._gathered = {}
        save_file(tensors, str(folder / "params.safetensors"))
        if self.replay_group is not None:  # the base's update log (always: a resume may switch full <-> replay)
            trajectory = self.trajectory
            q = self.zo.queries
            save_file({"seed": torch.tensor(trajectory["seed"], dtype=torch.int64),
                       "coeff": torch.tensor(trajectory["coeff"], dtype=torch.float64).reshape(-1, q),
                       "lr": torch.tensor(trajectory["lr"], dtype=torch.float64)},
                      str(folder / "trajectory.safetensors"))
            # (a JSON file, not safetensors metadata: that is written in no fixed key order)
            (folder / "trajectory.json").write_text(json.dumps(
                {"base": "replay" if self.replays_base else "full", "trajectory_start": self.trajectory_start,
                 "start_checksum": self.start_checksum, "base_policy": self.base_policy["policy"]},
                indent=2, sort_keys=True))
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "state.json").write_text(json.dumps(asdict(self.state), indent=2))

    @torch.no_grad()
    def load_state(self, folder: str | Path) -> None:
        """Restore what :meth:`write_state` wrote; a missing, truncated or foreign file is one UserError line."""
        from safetensors.torch import load_file

        folder = Path(folder)
        where = f"checkpoint {str(folder)!r}"
        log = None
        try:
            tensors = load_file(str(folder / "params.safetensors"))
            state = TrainState(**json.loads((folder / "state.json").read_text(encoding="utf-8")))
            optimizer = (torch.load(folder / "optimizer.pt", weights_only=True)
                         if self.optimizer is not None else None)
            if self.replay_group is not None and (folder / "trajectory.safetensors").is_file():
                log = load_file(str(folder / "trajectory.safetensors"))
                meta = json.loads((folder / "trajectory.json").read_text(encoding="utf-8"))
                start = int(meta["trajectory_start"])
                if not (len(log["seed"]) == len(log["coeff"]) == len(log["lr"]) == state.step - start):
                    raise ValueError(f"its update log has {len(log['seed'])} steps for steps {start} to {state.step}")
                log = {"seed": log["seed"].tolist(), "coeff": log["coeff"].tolist(), "lr": log["lr"].tolist(),
                       "start": start, "checksum": meta["start_checksum"], "policy": meta.get("base_policy")}
            replayed = self.replay_group is not None and "base.0" not in tensors
            if replayed and (log is None or log["start"] != 0):
                raise ValueError("it holds neither the base tensors nor their update log from step 0")
            for g in self.groups:
                if replayed and g is self.replay_group:
                    continue
                for i in range(len(g.params)):
                    for key, p in self._saved_tensors(g, i):
                        if key not in tensors and ".comp." in key:
                            p.zero_()  # a checkpoint of another base policy: the weights alone hold the value
                            continue
                        saved = tensors[key]
                        like = self.shard_of.get((g.name, i))
                        if like is not None:  # a sharded base: this rank's rows of the full tensor
                            if saved.shape != like.shape:
                                raise ValueError(f"tensor {key} has shape {tuple(saved.shape)}, "
                                                 f"the model {tuple(like.shape)}")
                            saved = local_rows(saved, like)
                        if saved.shape != p.shape:
                            raise ValueError(f"tensor {key} has shape {tuple(saved.shape)}, "
                                             f"the model {tuple(p.shape)}")
                        p.copy_(saved)
            if optimizer is not None:
                self.optimizer.load_state_dict(optimizer)
        except Exception as exc:  # any unreadable part: one line naming the folder and the cause
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{where} is unreadable ({type(exc).__name__}: {first}); delete it or re-run "
                            "with --overwrite") from None
        self.state = state
        if self.replay_group is not None:
            if log is None:  # a checkpoint from before update logs: the log starts here
                self.trajectory, self.trajectory_start = {"seed": [], "coeff": [], "lr": []}, state.step
            else:
                self.trajectory = {k: log[k] for k in ("seed", "coeff", "lr")}
                self.trajectory_start = log["start"]
            if replayed and log["policy"] not in (None, self.base_policy["policy"]):
                # the update passes depend on the policy (master, buffer, rounding): replay the run's own
                raise UserError(f"{where} was written with base policy {log['policy']!r}, this process resolved "
                                f"{self.base_policy['policy']!r} ({self.base_policy['reason']}); a replay needs the "
                                "run's own policy (start runs meant to move between machines with an explicit "
                                "--base-master)")
            if replayed:
                self.replay(self.trajectory["seed"], self.trajectory["coeff"], self.trajectory["lr"], log["checksum"])
            else:
                self.base_moved = True
        self.sync_master()

    # -------------------------------------------------------------- divergence guard
    @torch.no_grad()
    def nonfinite_parameter(self) -> str | None:
        """Name of the first block holding a NaN/inf parameter, or None (one pass over the trained tensors)."""
        for g in self.groups:
            bad = not all(bool(torch.isfinite(p).all()) for p in g.params)
            if any(name == g.name for name, _ in self.shard_of):  # shards: every rank must reach the same answer
                bad = float(self.world.sum_scalar(torch.tensor(float(bad)), "check")) > 0
            if bad:
                return g.name
        return None


class Diverged(Exception):
    """A non-finite loss, gradient, ZO coefficient or parameter: the run stops at once (nothing saved)."""

    def __init__(self, step: int, what: str):
        super().__init__(f"{what} at step {step}")
        self.step, self.what = step, what


def split_micro_batches(examples: list[dict], micro_batches: int, collate, device) -> list[dict]:
    """Cut a minibatch of encoded examples into ``micro_batches`` collated chunks on ``device``."""
    size = math.ceil(len(examples) / micro_batches)
    chunks = [examples[i:i + size] for i in range(0, len(examples), size)]
    return [{k: v.to(device) for k, v in collate(chunk).items()} for chunk in chunks]


@dataclass
class LoopHooks:
    """What the loop calls out to: logging a metrics line, evaluating, and the progress bar."""

    log: callable = lambda metrics: None
    evaluate: callable | None = None      # (trainer) -> None; called every eval_every steps
    progress: object | None = None
    extra: dict = field(default_factory=dict)


def train_loop(trainer: Trainer, train_examples: list[dict], collate, hooks: LoopHooks) -> None:
    """Run steps until ``cfg.steps``: sample, step, log, evaluate. Resumes from ``trainer.state``."""
    cfg = trainer.cfg
    while trainer.state.step < cfg.steps:
        indices = trainer.next_indices(cfg.batch_size)
        batch = [train_examples[i] for i in indices]
        world, weights = trainer.world, None
        if world.distributed:  # this rank's slice of the shared minibatch, weighted by its answer tokens
            chunks, weights = local_chunks(batch, cfg.micro_batches, world.rank, world.size)
            micro = [{k: v.to(trainer.device) for k, v in collate(chunk).items()} for chunk in chunks]
        else:
            micro = split_micro_batches(batch, min(cfg.micro_batches, len(batch)), collate, trainer.device)
        trainer.state.examples_seen += len(batch)
        metrics = trainer.step(micro, weights)
        if hooks.progress is not None:
            hooks.progress.update(1)
            hooks.progress.set_postfix(loss=f"{metrics['loss']:.4f}")
        at_eval = cfg.eval_every and trainer.state.step % cfg.eval_every == 0 and trainer.state.step < cfg.steps
        if at_eval and cfg.track_displacement:
            metrics["displacement"] = trainer.displacement()
        if trainer.state.step % cfg.log_every == 0 or at_eval or trainer.state.step == cfg.steps:
            hooks.log(metrics)
        if at_eval and hooks.evaluate is not None:
            hooks.evaluate(trainer)
