"""Step-size schedules as a per-step multiplier of each block's base step size.

The core's :class:`~hybridtheory.algorithm.step.ParamGroup` takes its ``lr`` per step, so a schedule is the
caller setting ``group.lr = base_lr * step_size_multiplier(...)`` before each step: one multiplier for every
block, no second update rule. ``linear`` is the linear warm-up then linear decay to 0 that MeZO's and
ZO-Bench's fine-tuning baselines use through Hugging Face's ``get_linear_schedule_with_warmup`` (the
multiplier of update ``t``, counted from 0, is ``t / warmup`` during warm-up, then
``(total - t) / (total - warmup)``); ``constant`` (their ZO default) is 1 throughout.
"""
from __future__ import annotations

SCHEDULES = ("constant", "linear")


def step_size_multiplier(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base step sizes for update ``step`` (0-based) of ``total_steps``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if step < 0 or total_steps < 1 or warmup_steps < 0:
        raise ValueError("step and warmup_steps must be >= 0 and total_steps >= 1")
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
