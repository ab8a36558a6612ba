"""Measurements against the theory: epoch-complexity slopes, bound ratios, Theorem 1, the mechanism.

Small, fast instances; the full sweeps are the figures (``python -m hybridtheory.figures``).
"""
import math

import pytest

from hybridtheory import bounds
from hybridtheory.measurement import (displacement_variance, epoch_complexity, ergodic_bound_check,
                                      loglog_slope, scaling)
from hybridtheory.objectives import make


def test_loglog_slope_recovers_a_power_law():
    xs = [1, 2, 4, 8]
    assert abs(loglog_slope(xs, [3 * x**4 for x in xs]) - 4) < 1e-12


def test_ramp_under_corollary1_schedule_stays_below_T_bound():
    """Corollary 1 exactly: every seed reaches ||grad F|| <= eps, and within T_bound epochs."""
    m = epoch_complexity("ramp", [0.4, 0.3], {"dx": 2, "delta": 0.25}, replicates=4, seed=1, n_boot=200)
    assert m.details["all_reached"]
    assert m.details["ratio_max"] <= 1.0
    assert abs(m.bound - 4.0) < 0.05  # the bound's own slope: eps^-4 (noise term T_c binds)
    assert all(r["binding_term"] == "T_c" for r in m.details["rows"])


def test_ramp_slope_is_near_4():
    m = epoch_complexity("ramp", [0.3, 0.2, 0.14, 0.1], {"dx": 2, "delta": 0.25}, replicates=8,
                         step_scale=40.0, n_boot=500)
    lo, hi = m.details["slope_ci95"]
    assert 3.5 <= m.measured <= 4.5, m.details["rows"]
    assert 3.3 <= lo <= m.measured <= hi <= 4.7
    assert m.details["all_reached"] and m.details["ratio_max"] <= 1.0


def test_pl_slope_is_near_2():
    """PL: eps^-2 log(1/eps) (measured about 2.36, proofs/05-ramp.md): clearly below the ramp's 4."""
    m = epoch_complexity("pl", [0.3, 0.2, 0.14, 0.1], {"dx": 2, "delta": 1.0}, replicates=8,
                         step_scale=100.0, n_boot=500)
    assert 1.8 <= m.measured <= 2.9, m.details["rows"]
    assert m.details["all_reached"] and m.details["ratio_max"] <= 1.0


@pytest.mark.parametrize("family,kw", [("hyb", {}), ("ramp", {"eps": 0.3, "dx": 4})])
def test_theorem1_ergodic_bound_holds(family, kw):
    problem = make(family, **kw)
    cx, cy = bounds.step_caps(problem.constants(), problem.n)
    m = ergodic_bound_check(problem, cx, cy, mu=1e-2, T=40, replicates=32, seed=3)
    measured, W = m
    assert measured + 3 * m.details["stderr"] <= W
    assert measured > 0


@pytest.mark.parametrize("method,slope", [("hybrid", 2.0), ("zo-rr", 2.0), ("hybrid-sgd", 2.0), ("fo-rr", 4.0)])
def test_displacement_variance_slopes(method, slope):
    problem = make("hyb")
    m = displacement_variance(problem, method, [1e-4, 1e-3, 1e-2], replicates=1500, seed=0)
    assert abs(m.measured - slope) < 0.2, m.details


def test_epochs_scale_linearly_in_dx_and_inversely_in_n():
    mdx = scaling("ramp", "dx", [2, 4, 8], eps=0.2, family_params={"delta": 0.25}, replicates=6, step_scale=40.0)
    assert abs(mdx.bound - 1.0) < 0.1 and abs(mdx.measured - 1.0) < 0.3, mdx.details
    mn = scaling("ramp", "n", [2, 4, 8], eps=0.2, family_params={"delta": 0.25, "dx": 2}, replicates=6,
                 step_scale=40.0)
    assert abs(mn.bound + 1.0) < 0.1 and abs(mn.measured + 1.0) < 0.3, mn.details


def test_epoch_complexity_refuses_steps_past_the_caps():
    with pytest.raises(bounds.BoundError, match="caps"):
        epoch_complexity("ramp", [0.3], {"dx": 2}, replicates=1, step_scale=1e6)


def test_measurement_unpacks_as_pair():
    problem = make("ramp", eps=0.3, dx=2)
    cx, cy = bounds.step_caps(problem.constants(), problem.n)
    measured, bound = ergodic_bound_check(problem, cx / 2, cy / 2, 1e-2, 5, replicates=2)
    assert math.isfinite(measured) and math.isfinite(bound)
