"""Single source of truth: ``hybridtheory.bounds`` computes exactly the expressions proved in proofs/.

The SymPy expressions of :mod:`proofs.symbolic` are lambdified and compared with the float code at
random parameter points (hypothesis); agreement is required to rounding (relative 1e-9).
"""
from __future__ import annotations

import math

import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridtheory import bounds
from hybridtheory.assumptions import HGSConstants
from proofs import symbolic as S

REL = 1e-9
ARGS = (S.L_x, S.L_c, S.L0, S.L1, S.G_x, S.G_y, S.n, S.d, S.eta_x, S.eta_y, S.mu, S.Delta, S.T, S.rho,
        S.m, S.eps, S.eta0, S.mu0, S.gx_sq, S.gy_sq)


def _fn(expr):
    return sp.lambdify(ARGS, expr, modules="math")


_F = {}
for _law in S.LAWS:
    Ex, Ey = S.drift_terms(_law)
    _F[_law] = {
        "sigma_sq": _fn(S.sigma_sq(_law)),
        "beta_mu": _fn(S.beta_mu(_law)),
        "Ex": _fn(Ex),
        "Ey": _fn(Ey),
        "W": _fn(S.theorem1_rhs(_law)),
        "one_epoch": _fn(S.one_epoch_rhs(_law)),
        "cor2": _fn(S.corollary2_bound(_law)),
        "mu1": _fn(S.corollary1_mu(_law)),
    }
_CAPS = [_fn(c) for c in S.step_caps()]
_K = [_fn(k) for k in S.k_constants()]
_SIG = sp.Symbol("sigma2", positive=True)
_CAND = {k: sp.lambdify(ARGS + (_SIG,), v, modules="math") for k, v in S.corollary1_step_candidates(s2=_SIG).items()}
_TTERMS = {k: sp.lambdify(ARGS + (_SIG,), v, modules="math")
           for k, v in S.corollary1_T_terms_closed_form(s2=_SIG).items()}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-300)


pos = st.floats(1e-2, 1e2)
constants = st.builds(
    lambda Lx, Lc, L0, L1, Gx, Gy, lc0, l10: HGSConstants(
        L_x=Lx, L_c=0.0 if lc0 else Lc, L0=L0, L1=0.0 if l10 else L1, G_x=Gx, G_y=Gy, F_lower=0.0),
    pos, pos, pos, pos, pos, pos, st.booleans(), st.booleans())
point = st.fixed_dictionaries({
    "c": constants, "n": st.integers(1, 500), "d": st.integers(1, 5000), "law": st.sampled_from(S.LAWS),
    "fx": st.floats(1e-3, 1.0), "fy": st.floats(1e-3, 1.0), "mu": st.floats(1e-6, 1.0),
    "T": st.integers(1, 10**6), "Delta": st.floats(1e-2, 1e3), "rho": st.floats(1e-2, 1e2),
    "eps": st.floats(1e-3, 1.0), "gx": st.floats(0.0, 1e3), "gy": st.floats(0.0, 1e3),
    "eta0": st.floats(1e-3, 10.0), "mu0": st.floats(1e-4, 1.0),
})


def _args(p, eta_x, eta_y, T=None):
    c = p["c"]
    return (c.L_x, c.L_c, c.L0, c.L1, c.G_x, c.G_y, p["n"], p["d"], eta_x, eta_y, p["mu"], p["Delta"],
            p["T"] if T is None else T, p["rho"], min(1.0, p["rho"]), p["eps"], p["eta0"], p["mu0"], p["gx"], p["gy"])


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(point)
def test_theorem1_pieces_agree(p):
    c, n, d, law = p["c"], p["n"], p["d"], p["law"]
    cx, cy = bounds.step_caps(c, n)
    a0 = _args(p, 1.0, 1.0)
    assert _close(cx, _CAPS[0](*a0)) and _close(cy, _CAPS[1](*a0))
    eta_x, eta_y = p["fx"] * cx, p["fy"] * cy
    a = _args(p, eta_x, eta_y)
    f = _F[law]
    assert _close(bounds.sigma_sq(c, d, p["mu"], law), f["sigma_sq"](*a))
    assert _close(bounds.beta_mu(c, d, p["mu"], law), f["beta_mu"](*a))
    Ex, Ey = bounds.drift_terms(c, n, d, eta_x, eta_y, p["mu"], law)
    assert _close(Ex, f["Ex"](*a)) and _close(Ey, f["Ey"](*a))
    W = bounds.theorem1_rhs(c, n, d, eta_x, eta_y, p["mu"], p["T"], p["Delta"], law)
    assert _close(W, f["W"](*a))
    one = bounds.one_epoch_rhs(c, n, d, eta_x, eta_y, p["mu"], p["gx"], p["gy"], law)
    # (1) is a difference of terms of both signs: compare to rounding of its largest term
    scale = max(abs(one), (n / 4) * (eta_x * p["gx"] + eta_y * p["gy"]), 1e-300)
    assert abs(one - f["one_epoch"](*a)) <= 1e-12 * scale


@SETTINGS
@given(point)
def test_corollary1_schedule_agrees(p):
    c, n, d, law, rho, eps, Delta = p["c"], p["n"], p["d"], p["law"], p["rho"], p["eps"], p["Delta"]
    sch = bounds.corollary1_schedule(c, n, d, eps, Delta, rho, law)
    a = _args(p, 1.0, 1.0)
    mu = _F[law]["mu1"](*a)
    assert _close(sch.mu, mu)
    a_mu = a[:10] + (mu,) + a[11:]
    s2 = _F[law]["sigma_sq"](*a_mu)
    assert _close(sch.sigma_sq, s2)
    cands = {k: fn(*a_mu, s2) for k, fn in _CAND.items()}
    assert _close(sch.eta_x, min(cands.values()))
    assert _close(sch.eta_y, rho * min(cands.values()))
    terms = {k: fn(*a_mu, s2) for k, fn in _TTERMS.items()}
    for k, v in terms.items():
        if sch.T_terms[k] == 0.0:      # the code reports 0 for an absent constraint (K1 = 0 or K2 sigma^2 = 0)
            assert v == 0.0, k
        else:
            assert _close(sch.T_terms[k], v), k
    top = max(terms.values())
    assert top * (1 - REL) <= sch.T <= top * (1 + REL) + 1
    # and the schedule really meets Corollary 1's conclusion: W/(m eta_x) <= eps^2
    W = bounds.theorem1_rhs(c, n, d, sch.eta_x, sch.eta_y, sch.mu, sch.T, Delta, law)
    assert W / (min(1.0, rho) * sch.eta_x) <= eps**2 * (1 + 1e-9)


@SETTINGS
@given(point)
def test_corollary2_agrees(p):
    c, n, d, law, rho = p["c"], p["n"], p["d"], p["law"], p["rho"]
    T0 = max((8 * c.L_hat_x * p["eta0"]) ** 2, (4 * rho * c.L_hat_y * p["eta0"]) ** 2)
    T = max(p["T"], math.ceil(T0))
    got = bounds.corollary2_bound(c, n, d, p["eta0"], rho, p["mu0"], T, p["Delta"], law)
    assert _close(got, _F[law]["cor2"](*_args(p, 1.0, 1.0, T=T)))
    # it is W/(m eta_x) at eta_x = eta0/(n sqrt T), mu = mu0 T^(-1/4): the Theorem 1 route gives the same number
    eta_x = p["eta0"] / (n * math.sqrt(T))
    W = bounds.theorem1_rhs(c, n, d, eta_x, rho * eta_x, p["mu0"] * T**-0.25, T, p["Delta"], law)
    assert _close(got, W / (min(1.0, rho) * eta_x))


def test_caps_are_enforced():
    c = HGSConstants(L_x=1.0, L_c=0.5, L0=1.0, L1=0.5, G_x=1.0, G_y=1.0, F_lower=0.0)
    cx, cy = bounds.step_caps(c, 4)
    with pytest.raises(bounds.BoundError):
        bounds.theorem1_rhs(c, 4, 3, 1.01 * cx, cy, 0.1, 10, 1.0)
    with pytest.raises(bounds.BoundError):
        bounds.theorem1_rhs(c, 4, 3, cx, 1.01 * cy, 0.1, 10, 1.0)
    no_G = HGSConstants(L_x=1.0, L_c=0.0, L0=1.0, L1=0.0, G_x=None, G_y=1.0, F_lower=0.0)
    with pytest.raises(bounds.BoundError):
        bounds.theorem1_rhs(no_G, 4, 3, cx, cy, 0.1, 10, 1.0)


_C2T = {law: [_fn(e) for e in S.corollary2_tuned(law)] for law in S.LAWS}


@SETTINGS
@given(point, st.booleans())
def test_corollary2_schedule_agrees_and_delivers(p, default_mu):
    c, n, d, law, rho, eps, Delta = p["c"], p["n"], p["d"], p["law"], p["rho"], p["eps"], p["Delta"]
    f = _C2T[law]
    mu0_max = f[4](*_args(p, 1.0, 1.0))
    assert _close(bounds.corollary2_mu0_max(c, n, d, Delta, law), mu0_max)
    mu0 = None if default_mu else 0.5 * mu0_max
    sch = bounds.corollary2_schedule(c, n, d, eps, Delta, rho, mu0, law)
    q = dict(p, mu0=sch.mu0)
    a = _args(q, 1.0, 1.0)
    assert _close(sch.eta0, f[0](*a))
    A, B, T_req = f[1](*a), f[2](*a), f[3](*a)
    assert _close(sch.leading, A**2 / eps**4)
    assert _close(T_req, A**2 / eps**4 + 2 * B / eps**2)  # proofs/04-corollaries.md: T >= A^2/eps^4 + 2B/eps^2
    assert sch.T >= T_req * (1 - REL) and sch.T >= sch.T0 * (1 - REL)
    # the conclusion of Corollary 2 at the returned horizon
    assert bounds.corollary2_bound(c, n, d, sch.eta0, rho, sch.mu0, sch.T, Delta, law) <= eps**2 * (1 + 1e-9)


def test_corollary2_rejects_a_too_large_mu0():
    c = HGSConstants(L_x=1.0, L_c=0.5, L0=1.0, L1=0.5, G_x=1.0, G_y=1.0, F_lower=0.0)
    mu_max = bounds.corollary2_mu0_max(c, 4, 10, 1.0)
    with pytest.raises(bounds.BoundError):
        bounds.corollary2_schedule(c, 4, 10, 0.1, 1.0, mu0=100 * mu_max)
