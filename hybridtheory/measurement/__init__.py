"""Measurements (see the README): each returns (measured, bound) with details."""
from .experiments import (Measurement, bootstrap_slope_ci, displacement_variance, epoch_complexity,
                          ergodic_bound_check, loglog_slope, scaling)

__all__ = ["Measurement", "bootstrap_slope_ci", "displacement_variance", "epoch_complexity",
           "ergodic_bound_check", "loglog_slope", "scaling"]
