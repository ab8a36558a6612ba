"""The one algorithm core: sampler, ZO estimator, hybrid step. Used by the synthetic runs and the LLMs."""
from .directions import LAWS, Direction, DirectionBank, block_dim, derive_seed
from .estimator import (DIFFERENCES, ZORecord, ZOSettings, apply_zo_update, materialize_estimate,
                        restore_pending, zo_coefficients, zo_forwards)
from .rounding import ROUNDINGS
from .sampler import EpochSampler
from .schedule import SCHEDULES, step_size_multiplier
from .step import FO_POINTS, ORACLES, Oracle, ParamGroup, StepInfo, hybrid_step, sgd_update, zo_update

__all__ = [
    "DIFFERENCES", "FO_POINTS", "LAWS", "ORACLES", "ROUNDINGS", "SCHEDULES", "step_size_multiplier", "Direction", "DirectionBank", "EpochSampler", "Oracle", "ParamGroup",
    "StepInfo", "ZORecord", "ZOSettings", "apply_zo_update", "block_dim", "derive_seed",
    "hybrid_step", "materialize_estimate", "restore_pending", "sgd_update", "zo_coefficients", "zo_forwards", "zo_update",
]
