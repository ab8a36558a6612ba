r"""Several processes, one run: data parallel for every method on ``torch.distributed``.

*The world.* :class:`World` holds rank, size, local rank, device and backend. :func:`init_world` builds it from
the variables every launcher sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``:
``torchrun``, ``accelerate launch``, SLURM scripts that export them). Without them the world has one process and
every collective returns its input unchanged (no process group, nothing sent). gloo on CPU, nccl on CUDA; every
collective has the timeout ``dist_timeout_s`` of the run config, and any failure of one (a peer crashed, was
killed, or stopped answering) raises :class:`~llm_experiments.errors.RankFailure`: one line, exit status 1.

*The data split.* Every rank draws the same minibatch (the sampler's permutation is a pure function of the run
seed and epoch) and keeps the contiguous slice :func:`rank_slice` gives it: a pure function of (minibatch, rank,
world size). The model's loss on a micro-batch is the mean over its answer tokens; the rank's loss is the sum of
its micro-batch losses weighted by *their share of the answer tokens of the whole minibatch*
(:func:`token_weights`), so the sum over ranks is the full minibatch's token mean, its gradient the full
minibatch's gradient, and the 2-rank step equals the 1-process step on the full minibatch (tests). A rank whose
slice is empty (a last batch smaller than the world) evaluates the first example with weight 0: every rank
takes part in every collective.

*What travels* (:class:`ReducedOracle` wraps the trainer's oracle):

* ``zo_loss``: each ZO forward's loss, one scalar per rank, gathered and summed in rank order, so every rank
  computes the same coefficient :math:`c` bit for bit and applies the identical ZO update (replicas stay equal
  without ever sending a base weight);
* ``fo_loss`` and ``fo_grads``: the FO pass's loss (gathered like ``zo_loss``) and its gradients, flattened into
  buckets of at most ``BUCKET_BYTES`` per dtype and all-reduced (sum).

Bytes are counted per kind as the payload each rank contributes (a ring all-reduce moves about
:math:`2(N-1)/N` times that over the wire) and logged per step in ``metrics.jsonl`` (``comm_bytes``).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch

from .errors import RankFailure, UserError

BUCKET_BYTES = 64 * 2**20     # flattened FO gradients are all-reduced in buckets of at most this many bytes
IGNORE_INDEX = -100           # labels that do not count in the loss (prompt tokens, padding)
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class World:
    """The processes of one run. ``size == 1``: every collective is a no-op."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    timeout_s: float = 600.0
    sent: dict = field(default_factory=dict)   # bytes contributed per kind since the last take_bytes()

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # ------------------------------------------------------------------ collectives
    def _count(self, kind: str, nbytes: int) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + int(nbytes)

    def _guard(self, what: str, fn):
        """Run a collective; turn any failure into one line naming this rank and what to look at."""
        try:
            return fn()
        except RankFailure:
            raise
        except Exception as exc:  # gloo/nccl raise RuntimeError / DistBackendError subclasses
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            first = first.split("] ", 1)[-1].split(". ")[0][:160]  # gloo: "[file:line] Read error ...: reset by peer"
            raise RankFailure(
                f"rank {self.rank} of {self.size}: collective {what} failed ({first}); another rank failed, "
                f"was killed or did not answer within dist_timeout_s={self.timeout_s:g} s: see its log") from None

    def sum_scalar(self, value: torch.Tensor, kind: str) -> torch.Tensor:
        """Sum of a scalar over ranks, added in rank order on every rank (identical bits everywhere)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        local = value.detach().reshape(1)
        parts = [torch.empty_like(local) for _ in range(self.size)]
        self._guard(f"all_gather({kind})", lambda: dist.all_gather(parts, local))
        self._count(kind, local.numel() * local.element_size())
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total.reshape(value.shape)

    def all_reduce_tensors(self, tensors: list[torch.Tensor], kind: str) -> list[torch.Tensor]:
        """Sum of each tensor over ranks (new tensors), flattened into buckets per dtype and device."""
        if not self.distributed or not tensors:
            return tensors
        import torch.distributed as dist

        out: list[torch.Tensor | None] = [None] * len(tensors)
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault((t.dtype, t.device), []).append(i)
        for indices in groups.values():
            bucket: list[int] = []
            size = 0
            for i in indices + [None]:
                full = i is None or (bucket and size + tensors[i].numel() * tensors[i].element_size() > BUCKET_BYTES)
                if full and bucket:
                    flat = torch.cat([tensors[j].reshape(-1) for j in bucket])
                    self._guard(f"all_reduce({kind})", lambda: dist.all_reduce(flat))
                    self._count(kind, flat.numel() * flat.element_size())
                    offset = 0
                    for j in bucket:
                        n = tensors[j].numel()
                        out[j] = flat[offset:offset + n].view_as(tensors[j])
                        offset += n
                    bucket, size = [], 0
                if i is not None:
                    bucket.append(i)
                    size += tensors[i].numel() * tensors[i].element_size()
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist
            self._guard("barrier", lambda: dist.barrier())

    def check_same(self, value: float, what: str) -> None:
        """Stop with one line if ``value`` differs between ranks (replicas must start equal)."""
        if not self.distributed:
            return
        local = torch.tensor([float(value)], dtype=torch.float64)
        import torch.distributed as dist
        parts = [torch.empty_like(local) for _ in range(self.size)]
        self._guard(f"all_gather({what})", lambda: dist.all_gather(parts, local))
        values = [float(p) for p in parts]
        # a tolerance: the float64 sums may round differently on different hardware of a multi-node run
        if any(abs(v - values[0]) > 1e-6 * max(abs(values[0]), 1.0) for v in values):
            raise RankFailure(f"rank {self.rank} of {self.size}: {what} differs between ranks ({values}); every "
                              "rank must load the same model, data and config")

    def take_bytes(self) -> dict:
        """Bytes contributed per kind since the last call (the step's communication)."""
        sent, self.sent = self.sent, {}
        return sent


def shutdown() -> None:
    """Destroy the default process group if one exists (end of a CLI command, or after a failed rank)."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # a broken group cannot always be destroyed cleanly; the process is exiting anyway
        pass


def is_main_process() -> bool:
    """Rank 0 of a launched run, or a process that was not launched as a rank."""
    return os.environ.get("RANK", "0") == "0"


def launched_world_size() -> int:
    """``WORLD_SIZE`` from the launcher's environment (1 when not launched by one)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_world(device: torch.device, timeout_s: float = 600.0, need_group: bool = False) -> World:
    """The :class:`World` of this process, from the launcher's environment (one process without it).

    ``device`` is the run's resolved device: with CUDA, rank r uses ``cuda:LOCAL_RANK`` and nccl; on CPU,
    gloo. Initialises the default process group once (a second call reuses it). ``need_group``: a single
    process still gets a (one-rank, in-memory) process group, which FSDP2 needs.
    """
    size = launched_world_size()
    if size <= 1:
        import torch.distributed as dist
        if need_group and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                                    world_size=1, timeout=datetime.timedelta(seconds=timeout_s))
        return World(device=device, timeout_s=timeout_s)
    missing = [v for v in LAUNCH_VARIABLES if v not in os.environ]
    if missing:
        raise UserError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: launch with torchrun or accelerate "
                        "launch (they set RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA devices: "
                            "start at most that many processes per node")
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    world = World(rank=rank, size=size, local_rank=local_rank, device=device, backend=backend, timeout_s=timeout_s)
    import torch.distributed as dist
    if not dist.is_initialized():
        world._guard("init_process_group", lambda: dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=size,
            **({"device_id": device} if backend == "nccl" else {})))
    return world


# ---------------------------------------------------------------------- the data split
def rank_slice(n: int, rank: int, size: int) -> range:
    """Positions of a minibatch of ``n`` examples that rank ``rank`` of ``size`` takes: contiguous and balanced
    (the first ``n % size`` ranks take one more)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def answer_tokens(example) -> int:
    """Units of an encoded example in its micro-batch's loss mean: a task encoding's ``loss_units``
    (``data.EncodedCandidates``: gold tokens for ``lm``, 1 for ``classification``), else the tokens that count in
    the causal-LM loss (labels after the one-token shift)."""
    units = getattr(example, "loss_units", None)
    if units is not None:
        return units
    labels = example.get("labels")
    if labels is None:
        return 0
    return sum(1 for t in list(labels)[1:] if t != IGNORE_INDEX)


def token_weights(chunks: list[list[dict]], total_tokens: int) -> list[float]:
    """Weight of each micro-batch's token-mean loss: its share of the minibatch's answer tokens."""
    if total_tokens <= 0:
        raise ValueError("the minibatch has no answer tokens (all labels ignored)")
    return [sum(answer_tokens(e) for e in chunk) / total_tokens for chunk in chunks]


def local_chunks(batch: list[dict], micro_batches: int, rank: int, size: int) -> tuple[list[list[dict]], list[float]]:
    """This rank's micro-batches of the minibatch ``batch`` and the weight of each one's loss (see module doc).

    The rank's slice is cut into at most ``micro_batches`` chunks; an empty slice becomes the minibatch's first
    example with weight 0 (so the rank still runs every forward and collective).
    """
    total = sum(answer_tokens(e) for e in batch)
    mine = [batch[i] for i in rank_slice(len(batch), rank, size)]
    if not mine:
        return [[batch[0]]], [0.0]
    size_mb = -(-len(mine) // min(micro_batches, len(mine)))
    chunks = [mine[i:i + size_mb] for i in range(0, len(mine), size_mb)]
    return chunks, token_weights(chunks, total)


# ---------------------------------------------------------------------- the oracle seen by the core
class ReducedOracle:
    """The core's oracle for a rank: losses summed over ranks, FO gradients all-reduced.

    The wrapped oracle computes this rank's weighted share; this wrapper makes every rank see the full
    minibatch's loss and gradient. ``losses`` lists the reduced losses, as ``ModelOracle.losses`` does.
    """

    def __init__(self, oracle, world: World):
        self.oracle, self.world = oracle, world
        self.losses: list[torch.Tensor] = []

    def loss(self) -> torch.Tensor:
        total = self.world.sum_scalar(self.oracle.loss(), "zo_loss")
        self.losses.append(total)
        return total

    def loss_and_grad(self, params):
        loss, grads = self.oracle.loss_and_grad(params)
        grads = self.world.all_reduce_tensors(list(grads), "fo_grads")
        total = self.world.sum_scalar(loss, "fo_loss")
        self.losses.append(total)
        return total, grads


# ---------------------------------------------------------------------- sharded base (FSDP2)
def shard_model(model, split, world: World):
    """Shard the base weights over the ranks with FSDP2 (``fully_shard`` on every transformer block, then on the
    whole model, over a 1-D mesh of all ranks); the adapter stays whole on every rank (``ignored_params``: it is
    small and trained like in data parallel). Returns the :class:`~llm_experiments.models.ParamSplit` of the
    sharded model (base tensors are now DTensors sharded on dim 0).

    Every forward all-gathers each block's weights from the shards and frees them after the block
    (``reshard_after_forward=True``, also for the root, so no forward ever sees a stale gathered copy after a
    shard changed in place).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers.modeling_layers import GradientCheckpointingLayer

    from .models import ParamSplit

    mesh = init_device_mesh(world.device.type, (world.size,))
    adapter = set(split.tensors("adapter"))
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True, ignored_params=adapter)
    fully_shard(model, mesh=mesh, reshard_after_forward=True, ignored_params=adapter)
    params = dict(model.named_parameters())
    return ParamSplit(base=[(n, params[n]) for n, _ in split.base], adapter=[(n, params[n]) for n, _ in split.adapter])


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def local_shard(p) -> tuple[torch.Tensor, int]:
    """This rank's piece of a dim-0-sharded DTensor (a view: changing it changes what every forward gathers) and
    where it starts in the full tensor's flat entries."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if tuple(p.placements) != (Shard(0),):
        raise ValueError(f"expected a DTensor sharded on dim 0, got placements {p.placements}")
    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    row = offset[0] if len(offset) else 0
    row_numel = 1
    for n in p.shape[1:]:
        row_numel *= int(n)
    return p.to_local(), int(row) * row_numel


def gather_full(local: torch.Tensor, like) -> torch.Tensor:
    """The full tensor whose dim-0 shards are the ranks' ``local`` tensors, laid out like DTensor ``like``
    (``local`` may be a master copy in another dtype). A collective: every rank calls it."""
    from torch.distributed.tensor import DTensor
    return DTensor.from_local(local, like.device_mesh, like.placements, shape=like.shape,
                              stride=like.stride()).full_tensor()


def local_rows(full: torch.Tensor, like) -> torch.Tensor:
    """This rank's rows of a full tensor, for DTensor ``like`` (sharded on dim 0)."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(like.shape, like.device_mesh, like.placements)
    start = offset[0] if len(offset) else 0
    return full[start:start + shape[0]] if full.dim() else full


def full_state_dict(model) -> dict:
    """Every tensor of a sharded model in full, on CPU, on rank 0 (empty elsewhere). A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
