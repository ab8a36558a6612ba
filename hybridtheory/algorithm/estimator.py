r"""The two-point zeroth-order estimator, done in place on a block of tensors.

For a block :math:`x` (any list of tensors), a loss oracle :math:`f` and a direction :math:`u`
(:class:`~hybridtheory.algorithm.directions.Direction`), one query gives the scalar

.. math::
    c = \frac{f(x+\mu u) - f(x-\mu u)}{2\mu} \quad\text{(central)}, \qquad
    c = \frac{f(x+\mu u) - f(x)}{\mu} \quad\text{(forward)},

and :math:`q` queries give :math:`g = \frac{s}{q}\sum_k c_k u_k` with :math:`s = d` (sphere) or
:math:`s = 1` (Gaussian, Rademacher) (``proofs/02-estimators.md``). The block is perturbed in place and restored
(``+mu``, ``-2mu``, ``+mu``), and the direction is regenerated from its seed each time, so no
copy of the block and no stored direction is ever needed: a ZO step costs forwards only.

The estimate is kept as ``(direction, c)`` records. Applying it is a replay of the records, which
also gives ZO gradient accumulation over micro-batches for free (average the ``c`` of the same
seeds, then replay once).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .directions import LAWS, Direction, DirectionBank, derive_seed, no_grad
from .rounding import PASS_MINUS, PASS_PLUS, PASS_RESTORE, PASS_UPDATE, ROUNDINGS, rounding_seed

DIFFERENCES = ("central", "forward")


@dataclass(frozen=True)
class ZOSettings:
    """Options of the two-point estimator.

    Args:
        mu: smoothing radius (float, or a tensor of the batch shape: one per replicate).
        law: direction law, ``"sphere"``, ``"gaussian"`` (MeZO) or ``"rademacher"``.
        difference: ``"central"`` (two extra forwards per query) or ``"forward"`` (one, reusing
            the loss at the unperturbed point when the caller already has it).
        queries: q >= 1 directions averaged per step.
        batch_dims: leading replicate dimensions of the block's tensors (0 for a model).
        dtype: dtype of the direction draws (cast when applied).
        cache: keep each step's draws in memory instead of regenerating them (small blocks only:
            the synthetic fast path; never for models).
        bank: a :class:`DirectionBank` holding draws made ahead (with ``cache``; the synthetic fast
            path fills it for many steps at once).
        offsets, reduce, dim: for a block of shards (see :class:`Direction`): where each local tensor
            starts in its full flat tensor, the cross-shard sum for the sphere normaliser, and the
            entries of the whole block (the sphere's d).
        rounding: how the write passes store into 16-bit tensors of the block (:mod:`.rounding`):
            ``"nearest"`` or ``"stochastic"`` (bits from the counter generator, a stream per direction and
            pass: reproducible from the step seed, the same on any sharding).
    """

    mu: float | torch.Tensor = 1e-3
    law: str = "sphere"
    difference: str = "central"
    queries: int = 1
    batch_dims: int = 0
    dtype: torch.dtype = torch.float32
    cache: bool = False
    bank: DirectionBank | None = field(default=None, compare=False, repr=False)
    offsets: tuple[int, ...] | None = None
    reduce: Callable[[torch.Tensor], torch.Tensor | None] | None = field(default=None, compare=False, repr=False)
    dim: int | None = None
    rounding: str = "nearest"

    def __post_init__(self) -> None:
        if self.law not in LAWS:
            raise ValueError(f"unknown direction law {self.law!r}; expected one of {LAWS}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r}; expected one of {ROUNDINGS}")
        if self.difference not in DIFFERENCES:
            raise ValueError(f"unknown difference {self.difference!r}; expected one of {DIFFERENCES}")
        if int(self.queries) != self.queries or self.queries < 1:
            raise ValueError(f"queries must be an integer >= 1, got {self.queries}")
        mu = self.mu
        if isinstance(mu, torch.Tensor):
            if not bool((mu > 0).all()):
                raise ValueError("mu must be > 0 in every replicate")
        elif not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")

    def direction(self, step_seed: int, query: int) -> Direction:
        """The direction of query ``query`` of the step seeded ``step_seed``."""
        seed = derive_seed(step_seed, query)
        cache = None
        if self.cache:
            cache = self.bank.take(seed) if self.bank is not None else None
            cache = {} if cache is None else cache
        return Direction(seed, self.law, self.batch_dims, self.dtype, cache=cache, offsets=self.offsets,
                         reduce=self.reduce, dim=self.dim)


def _rounding(rounding: str, direction: Direction, pass_no: int) -> int | None:
    """The rounding seed of a write pass (None: round to nearest)."""
    return rounding_seed(direction.seed, pass_no) if rounding == "stochastic" else None


@dataclass
class ZORecord:
    """One query's outcome: enough to replay the update without storing the direction."""

    direction: Direction
    coeff: torch.Tensor  # projected directional derivative c, batch shape
    inv_norm: torch.Tensor | None = field(default=None, repr=False)  # sphere normaliser, batch shape
    # offset o still applied to the block along this direction (block = x + o u): the restore was
    # deferred so that apply_zo_update can do "restore + update" in one pass over the parameters
    pending: float | torch.Tensor | None = None


@no_grad
def zo_coefficients(block: Sequence[torch.Tensor], loss: Callable[[], torch.Tensor],
                    settings: ZOSettings, step_seed: int, f0: torch.Tensor | None = None,
                    plus_loss: Callable[[], torch.Tensor] | None = None,
                    defer_restore: bool = False,
                    mirrors: Sequence[torch.Tensor] | None = None,
                    compensation: Sequence[torch.Tensor] | None = None,
                    coefficients: Sequence[torch.Tensor] | None = None) -> list[ZORecord]:
    """Query the loss around the current block and return one record per direction.

    Args:
        block: tensors perturbed in place (restored before returning, up to rounding).
        loss: evaluates the loss at the *current* tensors (forward only, deterministic).
        settings: estimator options.
        step_seed: seed of this step; query k uses ``derive_seed(step_seed, k)``.
        f0: loss at the unperturbed point, required for ``difference="forward"`` (the hybrid step
            passes the FO pass's loss so the forward difference costs one extra forward).
        plus_loss: optional replacement of ``loss`` for the first ``+mu`` evaluation (used by the
            "FO gradient at the perturbed point" variant to take the FO pass there).
        defer_restore: leave the last query's perturbation in place (recorded as ``pending``) for
            :func:`apply_zo_update` to undo in the same pass as the update: one regeneration of the
            direction fewer per step. The block is *not* restored on return; call
            :func:`apply_zo_update` (or :func:`restore_pending`) next.
        mirrors: tensors the loss reads instead of ``block`` (a 16-bit model whose fp32 master is
            ``block``): each perturbation writes ``mirrors <- cast(block + s mu u)`` in one pass and the
            block itself is never perturbed, so nothing needs restoring but the mirrors (done by
            :func:`apply_zo_update` in its pass, or here by a copy when ``defer_restore`` is off).
        compensation: one 16-bit error-compensation buffer per block tensor (:mod:`.rounding`): every pass
            reads and writes the pair (block, buffer), so the restore is exact up to the buffer's rounding.
        coefficients: replay (seed-replay checkpoints): the coefficients a past run of this step measured,
            one per query. No loss is evaluated (``loss`` may be None), but the block goes through the same
            perturbation passes as when they were measured: in place, the rounding of ``x + mu u - 2 mu u ...``
            (and the stochastic rounding or the compensation buffers) is part of the trajectory, so redoing the
            passes is what makes the replay bit for bit. With ``mirrors`` the block is never perturbed, so the
            replay skips the mirrors' passes.
    """
    replaying = coefficients is not None
    if replaying and len(coefficients) != settings.queries:
        raise ValueError(f"replay: got {len(coefficients)} coefficients for {settings.queries} queries")
    if settings.difference == "forward" and f0 is None and not replaying:
        f0 = loss()
    mu = settings.mu
    records = []
    if mirrors is not None:
        if compensation is not None or settings.rounding != "nearest":
            raise ValueError("mirrors (a master copy) exclude stochastic rounding and compensation buffers")
        return _mirrored_coefficients(block, mirrors, loss, settings, step_seed, f0, plus_loss, defer_restore,
                                      coefficients)

    def evaluate(k: int):
        if replaying:
            return None
        return plus_loss() if (k == 0 and plus_loss is not None) else loss()

    for k in range(settings.queries):
        d = settings.direction(step_seed, k)
        inv = d.inverse_norm(block)
        defer = defer_restore and k == settings.queries - 1

        def shift(alpha, pass_no):
            d.add_to(block, alpha, inv, rounding_seed=_rounding(settings.rounding, d, pass_no),
                     compensation=compensation)

        shift(mu, PASS_PLUS)                                      # x + mu u
        f_plus = evaluate(k)
        if settings.difference == "central":
            shift(-2 * mu, PASS_MINUS)                            # x - mu u
            f_minus = None if replaying else loss()
            if not defer:
                shift(mu, PASS_RESTORE)                           # back to x
            c = coefficients[k] if replaying else (f_plus - f_minus) / (2 * mu)
            pending = -mu if defer else None
        else:
            if not defer:
                shift(-mu, PASS_RESTORE)                          # back to x
            c = coefficients[k] if replaying else (f_plus - f0) / mu
            pending = mu if defer else None
        records.append(ZORecord(d, c.detach(), inv, pending))
    return records


def _mirrored_coefficients(block, mirrors, loss, settings, step_seed, f0, plus_loss, defer_restore,
                           coefficients=None):
    mu = settings.mu
    records = []
    for k in range(settings.queries):
        d = settings.direction(step_seed, k)
        inv = d.inverse_norm(block)
        if coefficients is not None:  # replay: the master never moved in these passes
            records.append(ZORecord(d, coefficients[k].detach(), inv))
            continue
        d.write_shifted(block, mirrors, mu, inv)                      # model at x + mu u
        f_plus = plus_loss() if (k == 0 and plus_loss is not None) else loss()
        if settings.difference == "central":
            d.write_shifted(block, mirrors, -mu, inv)                 # model at x - mu u
            f_minus = loss()
            c = (f_plus - f_minus) / (2 * mu)
        else:
            c = (f_plus - f0) / mu
        records.append(ZORecord(d, c.detach(), inv))
    if not defer_restore:
        _copy_into(mirrors, block)
    return records


def _copy_into(mirrors: Sequence[torch.Tensor], block: Sequence[torch.Tensor]) -> None:
    for m, t in zip(mirrors, block):
        m.copy_(t)


def zo_forwards(settings: ZOSettings, have_f0: bool) -> int:
    """Forward passes :func:`zo_coefficients` makes (for accounting and logs)."""
    per_query = 2 if settings.difference == "central" else 1
    return settings.queries * per_query + (0 if settings.difference == "central" or have_f0 else 1)


@no_grad
def apply_zo_update(block: Sequence[torch.Tensor], records: Sequence[ZORecord],
                    lrs: Sequence[float | torch.Tensor],
                    decays: Sequence[float | torch.Tensor] | None = None,
                    mirrors: Sequence[torch.Tensor] | None = None,
                    compensation: Sequence[torch.Tensor] | None = None, rounding: str = "nearest") -> None:
    r"""In place: ``block[k] <- block[k] - lrs[k] * (g_k + wd_k block[k])`` with
    :math:`g = \frac{s}{q}\sum_r c_r u_r`.

    ``lrs`` has one step size per tensor (float or per-replicate tensor), so one perturbation
    group may hold several blocks with their own step sizes (ZO-RR on (x, y)). ``decays`` holds
    ``lr_k * wd_k`` per tensor (0 where a tensor is not decayed; None: no decay): MeZO's ZO weight
    decay, taken at the restored point, :math:`x \leftarrow (1 - \eta\,wd)\,x - \eta\,g`.
    ``mirrors`` (see :func:`zo_coefficients`) receive ``cast(block)`` in the pass of the last record.
    ``compensation`` and ``rounding`` (see :func:`zo_coefficients` and :class:`ZOSettings`): how each pass
    stores into a 16-bit block.
    """
    if not records:
        if mirrors is not None:
            _copy_into(mirrors, block)
        return
    q = len(records)
    scale = records[0].direction.scale(block)
    # the record still holding its perturbation goes first: the decay is applied in its pass, where the
    # pending offset is scaled along with the weights and removed exactly
    ordered = sorted(records, key=lambda r: r.pending is None)
    for i, r in enumerate(ordered):
        # step factors in float64: the fused "restore + update" must undo mu exactly (a float32 mu
        # would leave a restore error of ~1e-11 relative even with a step size of 0)
        coeff = r.coeff if r.coeff.device.type == "mps" else r.coeff.to(torch.float64)
        factor = -(scale / q) * coeff
        pending = 0.0 if r.pending is None else r.pending
        store = dict(mirrors=mirrors if i == len(ordered) - 1 else None, compensation=compensation,
                     rounding_seed=_rounding(rounding, r.direction, PASS_UPDATE))
        if i == 0 and decays is not None:
            keep = [1 - a for a in decays]
            # (1 - a) (x + o u) - (1 - a) o u - lr g = (1 - a) x - lr g
            r.direction.add_to(block, [lr * factor - k * pending for lr, k in zip(lrs, keep)], r.inv_norm,
                               scale_first=keep, **store)
        elif r.pending is None:
            r.direction.add_to(block, [lr * factor for lr in lrs], r.inv_norm, **store)
        else:  # restore (remove the pending offset) and update in one pass
            r.direction.add_to(block, [lr * factor - r.pending for lr in lrs], r.inv_norm, **store)
        r.pending = None


@no_grad
def restore_pending(block: Sequence[torch.Tensor], records: Sequence[ZORecord],
                    mirrors: Sequence[torch.Tensor] | None = None,
                    compensation: Sequence[torch.Tensor] | None = None, rounding: str = "nearest") -> None:
    """Undo a deferred restore without updating (e.g. to abandon a step)."""
    if mirrors is not None:
        _copy_into(mirrors, block)
    for r in records:
        if r.pending is not None:
            r.direction.add_to(block, -r.pending, r.inv_norm, compensation=compensation,
                               rounding_seed=_rounding(rounding, r.direction, PASS_RESTORE))
            r.pending = None


def materialize_estimate(block: Sequence[torch.Tensor], records: Sequence[ZORecord]) -> list[torch.Tensor]:
    """The estimate g as tensors (tests, diagnostics): sum_r (s/q) c_r u_r."""
    out = [torch.zeros_like(t, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
           for t in block]
    q = len(records)
    for r in records:
        scale = r.direction.scale(block)
        for o, (_, u) in zip(out, r.direction.tensors(block, r.inv_norm)):
            c = r.coeff
            if isinstance(c, torch.Tensor) and r.direction.batch_dims:
                c = c.reshape(c.shape + (1,) * (u.dim() - r.direction.batch_dims))
            o.add_(u * c * (scale / q))
    return out
