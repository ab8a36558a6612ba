"""bounds: inputs that make the theorem inapplicable raise a clear BoundError naming the quantity."""
import math

import pytest

from hybridtheory import bounds
from hybridtheory.assumptions import HGSConstants
from hybridtheory.objectives import make

C = HGSConstants(L_x=1.0, L_c=0.5, L0=0.25, L1=0.5, G_x=2.0, G_y=1.0, F_lower=0.0)


def test_caps_violated_in_theorem_mode():
    cx, cy = bounds.step_caps(C, 4)
    assert cx == pytest.approx(1 / (8 * 4 * 1.5)) and cy == pytest.approx(1 / (4 * 4 * (0.25 + 0.5 + 0.5)))
    with pytest.raises(bounds.BoundError, match="eta_x .* cap"):
        bounds.theorem1_rhs(C, 4, 3, 2 * cx, cy, 0.1, 10, 1.0)
    with pytest.raises(bounds.BoundError, match="eta_y .* cap"):
        bounds.theorem1_rhs(C, 4, 3, cx, 2 * cy, 0.1, 10, 1.0)
    assert math.isfinite(bounds.theorem1_rhs(C, 4, 3, 2 * cx, cy, 0.1, 10, 1.0, enforce_caps=False))


@pytest.mark.parametrize("kw,name", [({"eps": 0.0}, "eps"), ({"eps": -1.0}, "eps"), ({"delta": -1.0}, "delta"),
                                     ({"rho": 0.0}, "rho"), ({"law": "cauchy"}, "law")])
def test_corollary1_bad_inputs(kw, name):
    args = {"eps": 0.1, "delta": 1.0, "rho": 1.0, "law": "sphere", **kw}
    with pytest.raises(bounds.BoundError, match=name):
        bounds.corollary1_schedule(C, 4, 3, **args)


def test_negative_or_nan_constants_are_rejected():
    with pytest.raises(ValueError, match="L_c"):
        HGSConstants(L_x=1.0, L_c=-0.1, L0=0.0, L1=0.0, G_x=1.0, G_y=1.0, F_lower=0.0)
    with pytest.raises(ValueError, match="G_x"):
        HGSConstants(L_x=1.0, L_c=0.0, L0=0.0, L1=0.0, G_x=float("nan"), G_y=1.0, F_lower=0.0)


def test_no_gradient_bound_means_no_theorem():
    c = HGSConstants(L_x=1.0, L_c=0.0, L0=1.0, L1=0.0, G_x=None, G_y=None, F_lower=0.0)
    with pytest.raises(bounds.BoundError, match="bounded gradients"):
        bounds.theorem1_rhs(c, 2, 2, 1e-3, 1e-3, 0.1, 10, 1.0)


def test_corollary1_schedule_meets_eps_squared_through_theorem1():
    """Plugging Corollary 1's schedule into Theorem 1 gives W / min(eta) <= eps^2."""
    for family, kw in [("ramp", {"eps": 0.2}), ("hyb", {}), ("quadratic", {})]:
        p = make(family, **kw)
        c = p.constants()
        for eps in (0.3, 0.1, 0.03):
            for rho in (0.3, 1.0, 3.0):
                for law in ("sphere", "gaussian"):
                    s = bounds.corollary1_schedule(c, p.n, p.dx, eps, p.initial_gap(), rho, law)
                    W = bounds.theorem1_rhs(c, p.n, p.dx, s.eta_x, s.eta_y, s.mu, s.T, p.initial_gap(), law)
                    assert W / min(s.eta_x, s.eta_y) <= eps**2 * (1 + 1e-9), (family, eps, rho, law)
