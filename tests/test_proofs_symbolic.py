"""SymPy checks of the algebra in proofs/ (Theorem 1's assembly, drift sums, Corollaries 1-2, families).

Each test re-does one algebraic step of a proof symbolically; a wrong constant in a proof or in
``proofs/symbolic.py`` makes the corresponding identity fail.
"""
from __future__ import annotations

import sympy as sp

from proofs import symbolic as S

E = sp.E


def _zero(expr) -> bool:
    return sp.simplify(sp.expand(expr)) == 0


# -- Lemma 2 ------------------------------------------------------------------------------------------
def test_lemma2_second_moment_algebra():
    """(a + r/(2mu))^2 <= 2a^2 + 2(r/(2mu))^2 with |r| <= L mu^2 |u|^2 gives the sigma^2 constants."""
    a, u2 = sp.symbols("a u2", positive=True)
    mu, L, d = S.mu, S.L_x, S.d
    r = L * mu**2                                   # |r_+ - r_-| <= 2 * (L mu^2 / 2)
    # sphere: g = d (<a,u> + r/(2mu)) u, |u| = 1, E<a,u>^2 = |a|^2/d
    sphere = d**2 * (2 * a**2 / d + 2 * (r / (2 * mu)) ** 2)
    assert _zero(sphere - S.sigma_sq_pointwise(a**2, "sphere"))
    # Gaussian: |r| <= L mu^2 |u|^2; E<a,u>^2|u|^2 = (d+2)|a|^2, E|u|^6 = d(d+2)(d+4)
    gauss = 2 * (d + 2) * a**2 + 2 * (L * mu**2 / (2 * mu)) ** 2 * d * (d + 2) * (d + 4)
    assert _zero(gauss - S.sigma_sq_pointwise(a**2, "gaussian"))
    # the forward difference has remainder r_+ alone, |r_+| <= L mu^2/2, and 2 (r_+/mu)^2 gives the same
    fwd = d**2 * (2 * a**2 / d + 2 * (L * mu**2 / 2 / mu) ** 2)
    assert _zero(fwd - S.sigma_sq_pointwise(a**2, "sphere"))


def test_gaussian_moments():
    """E|u|^6 = d(d+2)(d+4) and E<a,u>^2|u|^2 = (d+2)|a|^2 for u ~ N(0, I_d) (Lemma 2(c), Gaussian)."""
    x, dd = sp.symbols("x dd", positive=True)
    # |u|^2 ~ chi^2_d with density x^(d/2-1) e^(-x/2) / (2^(d/2) Gamma(d/2))
    dens = x ** (dd / 2 - 1) * sp.exp(-x / 2) / (2 ** (dd / 2) * sp.gamma(dd / 2))
    third = sp.integrate(x**3 * dens, (x, 0, sp.oo), conds="none")
    assert _zero(sp.gammasimp(third) - dd * (dd + 2) * (dd + 4))
    # E[u1^2 |u|^2] = E u1^4 + (d-1) E u1^2 * E u2^2 = 3 + (d - 1) = d + 2 (rotate a to e1)
    z = sp.Symbol("z", real=True)
    normal = sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi)
    m2 = sp.integrate(z**2 * normal, (z, -sp.oo, sp.oo))
    m4 = sp.integrate(z**4 * normal, (z, -sp.oo, sp.oo))
    assert m2 == 1 and m4 == 3
    assert _zero(m4 + (dd - 1) * m2 * m2 - (dd + 2))


def test_sphere_bias_constant():
    """E|v| for v uniform in the unit ball of R^d is d/(d+1) (Lemma 2(b))."""
    r, dd = sp.symbols("r dd", positive=True)
    # radial density of |v|: d r^(d-1) on [0, 1]
    assert sp.simplify(sp.integrate(r * dd * r ** (dd - 1), (r, 0, 1)) - dd / (dd + 1)) == 0


# -- Lemma 4 (drift) --------------------------------------------------------------------------------
def test_drift_sums_and_constants():
    """Sum_{i<n} i^2 <= n^3/3, Sum_{i<n} i <= n^2/2, and the per-step drift bounds average to E_x, E_y."""
    i = sp.Symbol("i", integer=True, nonnegative=True)
    n = S.n
    s2sum = sp.summation(i**2, (i, 0, n - 1))
    s1sum = sp.summation(i, (i, 0, n - 1))
    assert _zero(n**3 / 3 - s2sum - (n**2 / 2 - n / 6))          # = n(3n - 1)/6 >= 0 for n >= 1
    assert _zero(n**2 / 2 - s1sum - n / 2)
    s2, b = S.sigma_sq("sphere"), S.beta_mu("sphere")
    Lx, Lc, Ly, Gx, Gy, ex, ey = S.L_x, S.L_c, S.L_y, S.G_x, S.G_y, S.eta_x, S.eta_y
    # E|x_{t,i}-x_t|^2 <= 2 ex^2 (i^2 Gx^2 + i s2), |y_{t,i}-y_t| <= ey i Gy
    x_sum = 2 * ex**2 * (Gx**2 * sp.Symbol("S2") + s2 * sp.Symbol("S1"))
    y_sum = ey**2 * Gy**2 * sp.Symbol("S2")
    Ex_exact = 3 / n * (Lx**2 * x_sum + Lc**2 * y_sum + n * b**2)
    Ey_exact = 2 / n * (Lc**2 * x_sum + Ly**2 * y_sum)
    Ex, Ey = S.drift_terms("sphere")
    sub_bound = {sp.Symbol("S2"): n**3 / 3, sp.Symbol("S1"): n**2 / 2}
    assert _zero(Ex_exact.subs(sub_bound) - Ex)
    assert _zero(Ey_exact.subs(sub_bound) - Ey)
    # bias-free part of e^x (used by proofs.verify): (2/n) sum [...] = (2/3)(E_x - 3 beta^2)
    Ex_drift = 2 / n * (Lx**2 * x_sum + Lc**2 * y_sum)
    assert _zero(Ex_drift.subs(sub_bound) - sp.Rational(2, 3) * (Ex - 3 * b**2))


# -- Theorem 1 assembly -----------------------------------------------------------------------------
def test_assembly_step_caps_give_quarter_and_three_quarters():
    """With a = eta n Lhat, the x-coefficients are eta n(-1/2 + 2a) and eta n(1/2 + 2a); the cap a <= 1/8 makes
    them <= -(n/4) eta and <= (3n/4) eta. For y: eta n(-1/2 + a), eta n(1/2 + a) with a <= 1/4."""
    g, e, N2 = sp.symbols("g e N2", nonnegative=True)       # |grad F|^2, |e|^2, E|N|^2
    eta, n, Lh, s = sp.symbols("eta n Lhat s", positive=True)
    # x block: linear part (Young) + (Lhat/2) * eta^2 n^2 (4 g + 4 e + 2 N2)
    x_part = -eta * n * g + eta * n * (g / 2 + e / 2) + Lh / 2 * eta**2 * n**2 * (4 * g + 4 * e + 2 * N2)
    target_x = -(n / 4) * eta * g + (3 * n / 4) * eta * e + Lh * eta**2 * n**2 * N2
    a = eta * n * Lh
    assert _zero((x_part - target_x) - eta * n * (2 * a - sp.Rational(1, 4)) * (g + e))
    # at a = s/8, s in [0, 1]: the excess is eta n (s - 1)/4 (g + e) <= 0
    excess_x = sp.expand(eta * n * (2 * a - sp.Rational(1, 4))).subs(Lh, s / (8 * eta * n))
    assert _zero(excess_x - eta * n * (s - 1) / 4)
    # y block: linear part + (Lhat/2) * 2 eta^2 n^2 (g + e)
    y_part = -eta * n * g + eta * n * (g / 2 + e / 2) + Lh / 2 * 2 * eta**2 * n**2 * (g + e)
    target_y = -(n / 4) * eta * g + (3 * n / 4) * eta * e
    assert _zero((y_part - target_y) - eta * n * (a - sp.Rational(1, 4)) * (g + e))
    excess_y = sp.expand(eta * n * (a - sp.Rational(1, 4))).subs(Lh, s / (4 * eta * n))
    assert _zero(excess_y - eta * n * (s - 1) / 4)
    # tied to the statement: the caps of proofs/symbolic.py (which bounds.step_caps must equal) give
    # a = eta n Lhat <= 1/8 (x) and <= 1/4 (y), where the excess coefficients above are <= 0
    a_x_cap = sp.simplify(S.step_caps()[0] * S.n * S.Lhat_x)
    a_y_cap = sp.simplify(S.step_caps()[1] * S.n * S.Lhat_y)
    assert a_x_cap.is_number and 2 * a_x_cap - sp.Rational(1, 4) <= 0
    assert a_y_cap.is_number and a_y_cap - sp.Rational(1, 4) <= 0
    # E|N|^2 <= sigma^2/n turns Lhat eta^2 n^2 N2 into Lhat eta^2 n sigma^2, the last term of (1)
    assert _zero((Lh * eta**2 * n**2 * N2).subs(N2, sp.Symbol("s2") / n) - Lh * eta**2 * n * sp.Symbol("s2"))


def test_one_epoch_inequality_telescopes_to_W():
    """Summing (1) over t < T and dividing by nT/4 gives W of (2), for both laws."""
    for law in ("sphere", "gaussian"):
        rhs1 = S.one_epoch_rhs(law)
        per_epoch_error = rhs1 + (S.n / 4) * (S.eta_x * S.gx_sq + S.eta_y * S.gy_sq)
        W = 4 / (S.n * S.T) * (S.Delta + S.T * per_epoch_error)
        assert _zero(W - S.theorem1_rhs(law))


def test_block_descent_young():
    """(1/2)(Lx a^2 + 2 Lc a b + Ly b^2) <= (1/2)(Lhat_x a^2 + Lhat_y b^2): the gap is Lc (a - b)^2 / 2."""
    a, b = sp.symbols("a b", nonnegative=True)
    gap = (S.Lhat_x * a**2 + S.Lhat_y * b**2 - (S.L_x * a**2 + 2 * S.L_c * a * b + S.L_y * b**2)) / 2
    assert _zero(gap - S.L_c * (a - b) ** 2 / 2)


# -- Corollary 1 ------------------------------------------------------------------------------------
def test_corollary1_shares_sum_to_stationarity_bound():
    for law in ("sphere", "gaussian"):
        total, shares = S.stationarity_bound_shares(law)
        assert _zero(total - sum(shares.values()))


def test_corollary1_each_choice_meets_its_share():
    """Each of mu, eta_x, T makes its term of W/(m eta_x) at most eps^2/5 (equal at the limit)."""
    s2 = sp.Symbol("sigma2", positive=True)
    K1, K2 = S.k_constants()
    m, eps, n = S.m, S.eps, S.n
    cand = S.corollary1_step_candidates(s2=s2)
    share = eps**2 / 5
    assert _zero((4 * S.Lhat_x * S.eta_x * s2 / m).subs(S.eta_x, cand["T_c"]) - share)
    assert _zero((S.eta_x**2 * n**2 * K1 / m).subs(S.eta_x, cand["T_d"]) - share)
    assert _zero((S.eta_x**2 * n * s2 * K2 / m).subs(S.eta_x, cand["T_e"]) - share)
    T_choice = 20 * S.Delta / (m * n * S.eta_x * eps**2)
    assert _zero((4 * S.Delta / (m * n * S.T * S.eta_x)).subs(S.T, T_choice) - share)
    # the three step terms increase with eta_x, so the min of the candidates satisfies all of them
    for expr in (4 * S.Lhat_x * S.eta_x * s2 / m, S.eta_x**2 * n**2 * K1 / m, S.eta_x**2 * n * s2 * K2 / m):
        assert sp.diff(expr, S.eta_x).is_nonnegative
    # bias: 9 beta^2/m at the first mu rule is eps^2/5 (sphere and Gaussian)
    mu_s = eps * sp.sqrt(m / 45) / S.L_x
    mu_g = eps * sp.sqrt(m / 45) / (S.L_x * sp.sqrt(S.d))
    assert _zero(9 * S.beta_mu("sphere", mu_s) ** 2 / m - share)
    assert _zero(9 * S.beta_mu("gaussian", mu_g) ** 2 / m - share)
    # the second mu rule caps sigma^2 at 3 d Gx^2 (sphere) and 3 (d+2) Gx^2 (Gaussian)
    mu2_s = sp.sqrt(2 / S.d) * S.G_x / S.L_x
    mu2_g = sp.sqrt(2 / (S.d * (S.d + 4))) * S.G_x / S.L_x
    assert _zero(S.sigma_sq("sphere", mu2_s) - 3 * S.d * S.G_x**2)
    assert _zero(S.sigma_sq("gaussian", mu2_g) - 3 * (S.d + 2) * S.G_x**2)
    # and the step caps: eta_y = rho eta_x <= 1/(4 n Lhat_y) iff eta_x <= cand T_b
    assert _zero(S.rho * cand["T_b"] - S.step_caps()[1])


def test_corollary1_T_terms_closed_form():
    s2 = sp.Symbol("sigma2", positive=True)
    derived = S.corollary1_T_terms(s2=s2)
    stated = S.corollary1_T_terms_closed_form(s2=s2)
    for key in derived:
        assert _zero(sp.radsimp(derived[key] - stated[key])), key


def test_T_eps_growth_exponent_is_exactly_four():
    """eps^4 T_c -> 800 Delta Lhat_x d G_x^2 /(m^2 n) > 0, eps^4 T_other -> 0: the exponent is exactly 4.

    Uses Corollary 1's mu(eps) = eps sqrt(m/45)/L_x (the binding mu rule as eps -> 0), so sigma^2(eps) is
    the true function of eps the schedule uses. Without the ZO block (sigma = 0) the exponent is 3."""
    eps, m = S.eps, S.m
    mu_eps = eps * sp.sqrt(m / 45) / S.L_x
    s2 = S.sigma_sq("sphere", mu_eps)
    terms = S.corollary1_T_terms_closed_form(s2=s2)
    lim_c = sp.limit(eps**4 * terms["T_c"], eps, 0)
    assert _zero(lim_c - 800 * S.Delta * S.Lhat_x * S.d * S.G_x**2 / (m**2 * S.n))
    for key in ("T_a", "T_b", "T_d", "T_e"):
        assert sp.limit(eps**4 * terms[key], eps, 0) == 0, key
    assert sp.limit(sp.log(terms["T_c"]) / sp.log(1 / eps), eps, 0) == 4
    # pure FO-RR: T_c and T_e vanish with sigma; the remaining max grows like eps^-3
    for key in ("T_a", "T_b"):
        assert sp.limit(sp.log(terms[key]) / sp.log(1 / eps), eps, 0) == 2
    assert sp.limit(sp.log(terms["T_d"]) / sp.log(1 / eps), eps, 0) == 3


# -- Corollary 2 ------------------------------------------------------------------------------------
def test_corollary2_algebra():
    T, m, n = S.T, S.m, S.n
    eta_T = S.eta0 / (n * sp.sqrt(T))
    mu_T = S.mu0 * T ** sp.Rational(-1, 4)
    for law in ("sphere", "gaussian"):
        W = S.theorem1_rhs(law, eta_T, S.rho * eta_T, mu_T, T)
        assert _zero(W / (m * eta_T) - S.corollary2_bound(law)), law
    # caps: eta0/(n sqrt T) <= 1/(8 n Lhat_x)  iff  T >= (8 Lhat_x eta0)^2
    cx, cy = S.step_caps()
    assert _zero(sp.solve(sp.Eq(eta_T, cx), T)[0] - (8 * S.Lhat_x * S.eta0) ** 2)
    assert _zero(sp.solve(sp.Eq(S.rho * eta_T, cy), T)[0] - (4 * S.rho * S.Lhat_y * S.eta0) ** 2)
    # eta0 = sqrt(n Delta/(Lhat sigma^2)) minimises 4 Delta/eta0 + 4 Lhat eta0 sigma^2/n, value 8 sqrt(...)
    s2 = sp.Symbol("sigma2", positive=True)
    lead = 4 * S.Delta / S.eta0 + 4 * S.Lhat_x * S.eta0 * s2 / n
    best = sp.sqrt(n * S.Delta / (S.Lhat_x * s2))
    assert _zero(sp.diff(lead, S.eta0).subs(S.eta0, best))
    assert _zero(sp.radsimp(lead.subs(S.eta0, best) - 8 * sp.sqrt(S.Delta * S.Lhat_x * s2 / n)))
    # with 9 Lx^2 mu0^2 <= sqrt(Delta Lhat s2/n): leading term 9 sqrt(.)/(m sqrt T) = eps^2 at T = 81 (.)/(m^2 eps^4)
    T81 = 81 * S.Delta * S.Lhat_x * s2 / (m**2 * n * S.eps**4)
    lead_T = 9 * sp.sqrt(S.Delta * S.Lhat_x * s2 / n) / (m * sp.sqrt(T81))
    assert _zero(sp.simplify(lead_T - S.eps**2))


# -- Proposition 1 and family constants -------------------------------------------------------------
def test_proposition1_exp_is_equality():
    """f = e^y is (0, 1): phi(L1 r)(L0 + L1|f'(x)|) r = e^(x+r) - e^x, so (i) is an equality."""
    x, r = sp.symbols("x r", positive=True)
    phi = (sp.exp(r) - 1) / r
    assert _zero(phi * (0 + 1 * sp.exp(x)) * r - (sp.exp(x + r) - sp.exp(x)))
    # (ii): f(x) + f'(x) r + (L0 + L1|f'|)(e^(L1 r) - 1 - L1 r)/L1^2 equals e^(x+r)
    assert _zero(sp.exp(x) + sp.exp(x) * r + sp.exp(x) * (sp.exp(r) - 1 - r) - sp.exp(x + r))


def test_proposition1_factor_values():
    """phi(1) = e - 1 and (e^r - 1 - r)/r^2 = e - 2 at r = 1; both are power series with positive
    coefficients, hence increasing on [0, 1] (so these are their maxima there)."""
    r = sp.Symbol("r", positive=True)
    phi = (sp.exp(r) - 1) / r
    psi = (sp.exp(r) - 1 - r) / r**2
    assert _zero(phi.subs(r, 1) - (E - 1))
    assert _zero(psi.subs(r, 1) - (E - 2))
    for f in (phi, psi):
        coeffs = sp.Poly(sp.series(f, r, 0, 8).removeO(), r).all_coeffs()
        assert all(c > 0 for c in coeffs)
    assert sp.limit(phi, r, 0) == 1


def test_power_family_constants():
    """|y|^k, k > 2: max_y (f'' - L1 f') = k(k-2)^(k-2)/L1^(k-2) at y* = (k-2)/L1; y^4 gives 16/L1^2."""
    y, L1 = S.y, S.L1
    for k in (3, 4, 5, 6, sp.Rational(7, 2)):
        ex = S.power_family_excess(k).subs(L1, sp.Symbol("l", positive=True))
        l = sp.Symbol("l", positive=True)
        crit = [c for c in sp.solve(sp.diff(ex, y), y) if c.is_positive]
        assert len(crit) == 1 and _zero(crit[0] - (k - 2) / l)
        assert _zero(ex.subs(y, crit[0]) - S.power_family_L0(k).subs(L1, l))
        assert sp.diff(ex, y, 2).subs(y, crit[0]).is_negative      # a maximum
    # general k: the stationary point and the value
    j = sp.Symbol("j", positive=True)                 # k = 2 + j > 2
    k = 2 + j
    ex = S.power_family_excess(k)
    ystar = j / L1
    assert _zero(sp.simplify(sp.diff(ex, y).subs(y, ystar)))
    gap = sp.expand_power_base(ex.subs(y, ystar) - S.power_family_L0(k), force=True)
    assert _zero(sp.simplify(sp.powsimp(sp.expand(gap), force=True)))
    assert _zero(S.power_family_L0(4) - 16 / L1**2)


def test_hyb_derivative_bounds():
    """Pseudo-Huber: |rho'| < delta (sup delta), 0 < rho'' <= 1 (max at 0). Logistic: l'' <= |l'|, l'' <= 1/4."""
    t = S.t
    delta = sp.Symbol("delta", positive=True)
    rho = S.pseudo_huber(delta)
    d1, d2 = sp.diff(rho, t), sp.simplify(sp.diff(rho, t, 2))
    assert sp.limit(d1, t, sp.oo) == delta and sp.limit(d1, t, -sp.oo) == -delta
    assert _zero(d1**2 - delta**2 * t**2 / (delta**2 + t**2))              # < delta^2
    assert _zero(d2 - (1 + t**2 / delta**2) ** sp.Rational(-3, 2))           # in (0, 1]
    ell = S.logistic_loss()
    l1, l2 = sp.diff(ell, t), sp.diff(ell, t, 2)
    sig = 1 / (1 + sp.exp(-t))
    assert _zero(sp.simplify(l1 + (1 - sig)))                                # l' = -sigma(-t)
    assert _zero(sp.simplify(l2 - sig * (1 - sig)))                          # l'' = sigma(t) sigma(-t)
    # l''/|l'| = sigma(t) < 1 and sigma(1-sigma) <= 1/4 with equality at t = 0
    assert _zero(sp.simplify(l2 / (-l1) - sig))
    assert _zero(sp.simplify(l2.subs(t, 0) - sp.Rational(1, 4)))
    p = sp.Symbol("p", positive=True)
    assert sp.solve(sp.diff(p * (1 - p), p), p) == [sp.Rational(1, 2)]


def test_ramp_derivatives():
    """Ramp h_eps: |h'| < 2 eps, h'' <= 2 eps (so L_x = 1 for eps <= 1/2), and |h'| <= eps iff t^2 <= 1/3."""
    t, e = S.t, S.eps
    h = S.ramp_h(e)
    h1, h2 = sp.diff(h, t), sp.simplify(sp.diff(h, t, 2))
    assert sp.limit(h1, t, sp.oo) == 2 * e
    assert _zero(h2 - 2 * e * (1 + t**2) ** sp.Rational(-3, 2))
    assert _zero(sp.simplify((h1**2 - e**2).subs(t, 1 / sp.sqrt(3))))
    assert _zero(sp.simplify(h1**2 - 4 * e**2 * t**2 / (1 + t**2)))


def test_corollary2_epoch_count():
    """A/sqrt(T) + B/T = eps^2 at T = (A + sqrt(A^2 + 4B eps^2))^2/(4 eps^4), which is <= A^2/eps^4 + 2B/eps^2."""
    A, B, e = sp.symbols("A B e", positive=True)
    root = sp.sqrt(A**2 + 4 * B * e**2)
    T_exact = (A + root) ** 2 / (4 * e**4)
    assert _zero(sp.simplify(sp.radsimp(A / sp.sqrt(T_exact) + B / T_exact - e**2)))
    # the gap (A^2/e^4 + 2B/e^2) - T_exact equals (A - root)^2 / (4 e^4) >= 0
    gap = A**2 / e**4 + 2 * B / e**2 - T_exact
    assert _zero(sp.expand(gap - (A - root) ** 2 / (4 * e**4)))
    # and A/sqrt(T) + B/T decreases in T
    Tsym = sp.Symbol("T", positive=True)
    assert sp.diff(A / sp.sqrt(Tsym) + B / Tsym, Tsym).is_negative
