r"""The proved expressions as SymPy objects: the single source of truth for ``hybridtheory.bounds``.

Every bound stated in ``proofs/*.md`` is built here once, from the same symbols, and
``tests/test_proofs_symbolic.py`` checks that

* the algebra the proofs rely on holds identically (the assembly step of Theorem 1, the drift sums,
  the five shares of Corollary 1, the exponent of :math:`T(\varepsilon)`, Corollary 2's algebra), and
* ``hybridtheory.bounds`` (plain floats, for speed) evaluates to the same numbers as these
  expressions at many random parameter points.

Notation (``proofs/00-setting.md``): :math:`L_y = L_0 + L_1 G_y`, :math:`\hat L_x = L_x + L_c`,
:math:`\hat L_y = L_y + L_c`, :math:`m = \min(1, \rho)`, :math:`\rho = \eta_y/\eta_x`, :math:`d = d_x`.
"""
from __future__ import annotations

import sympy as sp

# -- symbols -------------------------------------------------------------------------------------
L_x, L_c, L0, L1, G_x, G_y = sp.symbols("L_x L_c L_0 L_1 G_x G_y", nonnegative=True)
n, d, T = sp.symbols("n d T", positive=True, integer=True)
eta_x, eta_y, mu, Delta, rho, eps = sp.symbols("eta_x eta_y mu Delta rho epsilon", positive=True)
m = sp.Symbol("m", positive=True)          # m = min(1, rho); kept as a symbol where the proof does
eta0, mu0 = sp.symbols("eta_0 mu_0", positive=True)

L_y = L0 + L1 * G_y
Lhat_x = L_x + L_c
Lhat_y = L_y + L_c

LAWS = ("sphere", "gaussian")


def _law(law: str) -> str:
    if law not in LAWS:
        raise ValueError(f"law must be one of {LAWS}, got {law!r}")
    return law


# -- Lemma 2 (estimator) -------------------------------------------------------------------------
def sigma_sq(law: str = "sphere", mu_=mu):
    r"""Bound on :math:`\mathbb E\|g_x\|^2` (Lemma 2(c), ``proofs/02-estimators.md``)."""
    if _law(law) == "sphere":
        return 2 * d * G_x**2 + d**2 * L_x**2 * mu_**2 / 2
    return 2 * (d + 2) * G_x**2 + mu_**2 * L_x**2 / 2 * d * (d + 2) * (d + 4)


def sigma_sq_pointwise(grad_sq, law: str = "sphere", mu_=mu):
    r"""Lemma 2(c) before (A3): :math:`\mathbb E\|g\|^2 \le 2d\|a\|^2 + d^2L^2\mu^2/2` (sphere),
    :math:`2(d+2)\|a\|^2 + \tfrac{L^2\mu^2}2 d(d+2)(d+4)` (Gaussian), with :math:`\|a\|^2` = ``grad_sq``."""
    return sigma_sq(law, mu_).subs(G_x**2, grad_sq)


def beta_mu(law: str = "sphere", mu_=mu):
    r"""Bound on the smoothing bias :math:`\|\mathbb E g_x - \nabla_x f\|` (Lemma 2(b))."""
    return L_x * mu_ if _law(law) == "sphere" else L_x * mu_ * sp.sqrt(d)


# -- Lemma 4 (drift) and Theorem 1 ----------------------------------------------------------------
def drift_terms(law: str = "sphere", eta_x_=eta_x, eta_y_=eta_y, mu_=mu):
    r"""(:math:`\bar E_x`, :math:`\bar E_y`) of Lemma 4 (``proofs/03-theorem1.md``)."""
    s2, b = sigma_sq(law, mu_), beta_mu(law, mu_)
    Ex = (2 * L_x**2 * eta_x_**2 * n**2 * G_x**2 + 3 * L_x**2 * eta_x_**2 * n * s2
          + L_c**2 * eta_y_**2 * n**2 * G_y**2 + 3 * b**2)
    Ey = (sp.Rational(4, 3) * L_c**2 * eta_x_**2 * n**2 * G_x**2 + 2 * L_c**2 * eta_x_**2 * n * s2
          + sp.Rational(2, 3) * L_y**2 * eta_y_**2 * n**2 * G_y**2)
    return Ex, Ey


def step_caps():
    r"""Theorem 1's caps :math:`(1/(8n\hat L_x), 1/(4n\hat L_y))`."""
    return 1 / (8 * n * Lhat_x), 1 / (4 * n * Lhat_y)


def theorem1_rhs(law: str = "sphere", eta_x_=eta_x, eta_y_=eta_y, mu_=mu, T_=T):
    r"""W of Theorem 1 (2)."""
    Ex, Ey = drift_terms(law, eta_x_, eta_y_, mu_)
    return 4 * Delta / (n * T_) + 4 * Lhat_x * eta_x_**2 * sigma_sq(law, mu_) + 3 * (eta_x_ * Ex + eta_y_ * Ey)


gx_sq, gy_sq = sp.symbols("g_x g_y", nonnegative=True)   # ||grad_x F(z_t)||^2, ||grad_y F(z_t)||^2


def one_epoch_rhs(law: str = "sphere"):
    r"""Right side of Theorem 1 (1) minus :math:`F(z_t)`."""
    Ex, Ey = drift_terms(law)
    return (-(n / sp.Integer(4)) * (eta_x * gx_sq + eta_y * gy_sq)
            + (3 * n / sp.Integer(4)) * (eta_x * Ex + eta_y * Ey) + Lhat_x * eta_x**2 * n * sigma_sq(law))


# -- Corollary 1 ----------------------------------------------------------------------------------
def k_constants():
    r"""(:math:`K_1`, :math:`K_2`) of Corollary 1."""
    K1 = 6 * L_x**2 * G_x**2 + 3 * rho**2 * L_c**2 * G_y**2 + 4 * rho * L_c**2 * G_x**2 + 2 * rho**3 * L_y**2 * G_y**2
    K2 = 9 * L_x**2 + 6 * rho * L_c**2
    return K1, K2


def corollary1_mu(law: str = "sphere"):
    r"""Corollary 1's smoothing radius (the largest allowed): a ``sympy.Min`` of two rules."""
    if _law(law) == "sphere":
        return sp.Min(eps * sp.sqrt(m / 45) / L_x, sp.sqrt(2 / d) * G_x / L_x)
    return sp.Min(eps * sp.sqrt(m / 45) / (L_x * sp.sqrt(d)), sp.sqrt(2 / (d * (d + 4))) * G_x / L_x)


def corollary1_step_candidates(law: str = "sphere", s2=None):
    r"""The five upper limits on :math:`\eta_x` of Corollary 1, keyed by the T term each one gives.

    ``s2`` is :math:`\sigma^2` (a symbol by default, so the shares can be checked for any value)."""
    s2 = sp.Symbol("sigma2", positive=True) if s2 is None else s2
    K1, K2 = k_constants()
    cx, cy = step_caps()
    return {
        "T_a": cx,
        "T_b": cy / rho,
        "T_c": m * eps**2 / (20 * Lhat_x * s2),
        "T_d": (eps / n) * sp.sqrt(m / (5 * K1)),
        "T_e": eps * sp.sqrt(m / (5 * n * K2 * s2)),
    }


def corollary1_T_terms(s2=None):
    r"""The five T terms, :math:`20\Delta/(m n \eta\varepsilon^2)` at each candidate step."""
    return {k: 20 * Delta / (m * n * v * eps**2) for k, v in corollary1_step_candidates(s2=s2).items()}


def corollary1_T_terms_closed_form(s2=None):
    r"""The same five terms written as in the statement of Corollary 1 (``proofs/04-corollaries.md``)."""
    s2 = sp.Symbol("sigma2", positive=True) if s2 is None else s2
    K1, K2 = k_constants()
    return {
        "T_a": 160 * Delta * Lhat_x / (m * eps**2),
        "T_b": 80 * rho * Delta * Lhat_y / (m * eps**2),
        "T_c": 400 * Delta * Lhat_x * s2 / (m**2 * n * eps**4),
        "T_d": 20 * sp.sqrt(5) * Delta * sp.sqrt(K1) / (m**sp.Rational(3, 2) * eps**3),
        "T_e": 20 * sp.sqrt(5) * Delta * sp.sqrt(s2) * sp.sqrt(K2) / (m**sp.Rational(3, 2) * sp.sqrt(n) * eps**3),
    }


def stationarity_bound_shares(law: str = "sphere"):
    r""":math:`W/(m\eta_x)` with :math:`\eta_y = \rho\eta_x`, split into the five shares of Corollary 1.

    Returns (W/(m eta_x), dict of shares); the proof shows their sum equals the first entry."""
    W = theorem1_rhs(law, eta_x, rho * eta_x, mu, T)
    K1, K2 = k_constants()
    s2, b = sigma_sq(law), beta_mu(law)
    shares = {
        "T": 4 * Delta / (m * n * T * eta_x),
        "noise": 4 * Lhat_x * eta_x * s2 / m,
        "drift": eta_x**2 * n**2 * K1 / m,
        "drift_noise": eta_x**2 * n * s2 * K2 / m,
        "bias": 9 * b**2 / m,
    }
    return W / (m * eta_x), shares


# -- Corollary 2 ----------------------------------------------------------------------------------
def corollary2_bound(law: str = "sphere"):
    r"""Corollary 2: :math:`W/(m\eta_x)` at :math:`\eta_x = \eta_0/(n\sqrt T)`, :math:`\eta_y=\rho\eta_x`,
    :math:`\mu = \mu_0T^{-1/4}`, in the grouped form of the statement."""
    mu_T = mu0 * T ** sp.Rational(-1, 4)
    s2, b = sigma_sq(law, mu_T), beta_mu(law, mu_T)
    K1, K2 = k_constants()
    return ((4 * Delta / eta0 + 4 * Lhat_x * eta0 * s2 / n + 9 * b**2 * sp.sqrt(T)) / (m * sp.sqrt(T))
            + eta0**2 * (K1 + K2 * s2 / n) / (m * T))


def corollary2_T0():
    r""":math:`T_0 = \max\{(8\hat L_x\eta_0)^2, (4\rho\hat L_y\eta_0)^2\}` (the caps hold iff T >= T0)."""
    return sp.Max((8 * Lhat_x * eta0) ** 2, (4 * rho * Lhat_y * eta0) ** 2)


# -- family constants (``proofs/01-hgs.md`` section 1.4) ---------------------------------------------
y = sp.Symbol("y", positive=True)
t = sp.Symbol("t", real=True)
k_pow = sp.Symbol("k", positive=True)


def power_family_L0(k=k_pow):
    r"""Smallest :math:`L_0` with :math:`|f''| \le L_0 + L_1|f'|` for :math:`f = |y|^k`, :math:`k>2`:
    :math:`k(k-2)^{k-2}/L_1^{k-2}`."""
    return k * (k - 2) ** (k - 2) / L1 ** (k - 2)


def power_family_excess(k=k_pow):
    r""":math:`f'' - L_1 f'` on :math:`y>0` for :math:`f = y^k`; its maximum is the smallest valid :math:`L_0`."""
    f = y**k
    return sp.diff(f, y, 2) - L1 * sp.diff(f, y)


def pseudo_huber(delta):
    r""":math:`\rho_\delta(t) = \delta^2(\sqrt{1+t^2/\delta^2}-1)` (HYB's ZO block)."""
    return delta**2 * (sp.sqrt(1 + t**2 / delta**2) - 1)


def logistic_loss():
    r""":math:`\ell(t) = \log(1+e^{-t})` (HYB's and the ramp's FO block)."""
    return sp.log(1 + sp.exp(-t))


def ramp_h(e=eps):
    r""":math:`h_\varepsilon(t) = 2\varepsilon(\sqrt{1+t^2}-1)` (ramp family)."""
    return 2 * e * (sp.sqrt(1 + t**2) - 1)


def corollary2_tuned(law: str = "sphere"):
    r"""Corollary 2 tuned (``proofs/04-corollaries.md`` 4.4): (eta0, A, B, T_req, mu0_max) with
    :math:`\sigma_0^2 = \sigma^2(\mu_0)`, :math:`\eta_0 = \sqrt{n\Delta/(\hat L_x\sigma_0^2)}`,
    :math:`A = 9\sqrt{\Delta\hat L_x\sigma_0^2/n}/m`, :math:`B = \eta_0^2(K_1 + K_2\sigma_0^2/n)/m`,
    :math:`T_{req} = A^2/\varepsilon^4 + 2B/\varepsilon^2`, and the largest :math:`\mu_0` with
    :math:`9\beta_{\mu_0}^2\le\sqrt{\Delta\hat L_x\sigma^2(0)/n}`."""
    s0 = sigma_sq(law, mu0)
    K1, K2 = k_constants()
    e0 = sp.sqrt(n * Delta / (Lhat_x * s0))
    A = 9 * sp.sqrt(Delta * Lhat_x * s0 / n) / m
    B = e0**2 * (K1 + K2 * s0 / n) / m
    s_min = sigma_sq(law, sp.Integer(0))
    mu0_max = sp.sqrt(sp.sqrt(Delta * Lhat_x * s_min / n) / 9) / (L_x if law == "sphere" else L_x * sp.sqrt(d))
    return e0, A, B, A**2 / eps**4 + 2 * B / eps**2, mu0_max


# -- Theorem 2 (``proofs/07-theorem2.md``): heterogeneity instead of bounded gradients ----------------
# L_y is any global y-smoothness constant here (Lemma 1(ii)'s L0 + L1 G_y when (A3) holds on y)
vx, vy = sp.symbols("varsigma_x2 varsigma_y2", nonnegative=True)   # varsigma_x^2, varsigma_y^2
q = sp.Symbol("q", positive=True, integer=True)
LAWS2 = ("sphere", "gaussian", "rademacher")


def zo_moments(law: str = "sphere", mu_=mu):
    r"""Lemma 2 pointwise: (:math:`\kappa`, :math:`r_\mu`, :math:`\beta_\mu`) with
    :math:`\mathbb E\|g\|^2\le\kappa\|\nabla\phi\|^2 + r_\mu` and bias :math:`\le\beta_\mu` (one query)."""
    if law == "sphere":
        return 2 * d, d**2 * L_x**2 * mu_**2 / 2, L_x * mu_
    if law == "gaussian":
        return 2 * (d + 2), mu_**2 * L_x**2 / 2 * d * (d + 2) * (d + 4), L_x * mu_ * sp.sqrt(d)
    if law == "rademacher":
        return 2 * d, d**3 * L_x**2 * mu_**2 / 2, L_x * mu_ * d / 2
    raise ValueError(f"law must be one of {LAWS2}, got {law!r}")


Bx, By = sp.symbols("B_x B_y", nonnegative=True)   # relaxed heterogeneity: <= B ||grad F||^2 + varsigma^2
# the constants of Theorem 2's proof, used by the statement and by the checks of its derivation alike
DESCENT2 = sp.Rational(1, 5)        # descent left per epoch: -(1/5) n eta ||grad||^2
CAP2_X, CAP2_Q, CAP2_Y = 16, 64, 8  # eta_x <= 1/(16 n Lhat_x), q/(64 kappa Lhat_x); eta_y <= 1/(8 n Lhat_y)


def theorem2_caps(law: str = "sphere", Bx_=0, By_=0):
    r"""Theorem 2's caps: :math:`\eta_x\le\min\{1/(16n\hat L_x), q/(64\kappa\hat L_x)\}/(1+B_x)`,
    :math:`\eta_y\le1/(8n\hat L_y(1+B_y))`."""
    kappa = zo_moments(law)[0]
    return (sp.Min(1 / (CAP2_X * n * Lhat_x), q / (CAP2_Q * kappa * Lhat_x)) / (1 + Bx_),
            1 / (CAP2_Y * n * Lhat_y * (1 + By_)))


def theorem2_pieces(law: str = "sphere", eta_x_=eta_x, eta_y_=eta_y, mu_=mu, Ly=None):
    r"""The named quantities of Theorem 2's proof: P, c_X, c_Y, p, r, s, t, A_x^0, A_y^0, kappa, r_mu, beta."""
    Ly = L_y if Ly is None else Ly
    kappa, r_mu, beta = zo_moments(law, mu_)
    P = n**2 + 2 * n * kappa / q
    return {
        "P": P, "kappa": kappa, "r_mu": r_mu, "beta": beta,
        "c_X": sp.Rational(5, 2) * eta_x_ * n * L_x**2 + sp.Rational(5, 4) * eta_y_ * n * L_c**2
        + 4 * (L_x + L_c) * eta_x_**2 * n * kappa * L_x**2 / q,
        "c_Y": sp.Rational(5, 2) * eta_x_ * n * L_c**2 + sp.Rational(5, 4) * eta_y_ * n * Ly**2
        + 4 * (L_x + L_c) * eta_x_**2 * n * kappa * L_c**2 / q,
        "p": 12 * eta_x_**2 * P * L_x**2, "r": 12 * eta_x_**2 * P * L_c**2,
        "s": 4 * eta_y_**2 * n**2 * L_c**2, "t": 4 * eta_y_**2 * n**2 * Ly**2,
        "A_x0": 3 * eta_x_**2 * (P * vx + 2 * n**2 * beta**2 + n * r_mu / q),
        "A_y0": 2 * eta_y_**2 * n**2 * vy,
    }


GAMMA2 = sp.Rational(6, 5)


def theorem2_epoch_error(law: str = "sphere", eta_x_=eta_x, eta_y_=eta_y, mu_=mu, Ly=None):
    r""":math:`E_2` of Theorem 2 (1)."""
    k = theorem2_pieces(law, eta_x_, eta_y_, mu_, Ly)
    return (sp.Rational(5, 4) * eta_x_ * n * k["beta"]**2
            + (L_x + L_c) * eta_x_**2 * (n / q) * (2 * k["kappa"] * vx + k["r_mu"])
            + GAMMA2 * ((k["c_X"] + k["s"] * k["c_Y"]) * k["A_x0"] + (k["r"] * k["c_X"] + k["c_Y"]) * k["A_y0"]))


def theorem2_rhs(law: str = "sphere", eta_x_=eta_x, eta_y_=eta_y, mu_=mu, T_=T, Ly=None):
    r""":math:`W_2 = 5\Delta/(nT) + 5E_2/n` of Theorem 2 (2)."""
    return Delta / (DESCENT2 * n * T_) + theorem2_epoch_error(law, eta_x_, eta_y_, mu_, Ly) / (DESCENT2 * n)


def theorem2_gradient_coefficients(law: str = "sphere", Ly=None, Bx_=0, By_=0):
    r"""Coefficients of :math:`\|\nabla_xF(z_t)\|^2` and :math:`\|\nabla_yF(z_t)\|^2` in the one-epoch bound
    *before* the caps are used (Step 3 of the proof), each divided by :math:`\eta n`:

    x: :math:`-\frac12 + 2u + 2\hat L_x\eta_x\kappa/q + 3\gamma(c_X + sc_Y)\eta_xP/n`,
    y: :math:`-\frac12 + v + 2\gamma(rc_X + c_Y)\eta_yn`, with :math:`u = \eta_xn\hat L_x`, :math:`v = \eta_yn\hat L_y`.
    The proof shows both are :math:`\le-\frac15` under the caps. With relaxed heterogeneity the terms that
    come from the heterogeneity of a block carry the factor :math:`1 + B` of that block."""
    k = theorem2_pieces(law, Ly=Ly)
    Ly = L_y if Ly is None else Ly
    u = eta_x * n * (L_x + L_c)
    v = eta_y * n * (Ly + L_c)
    cx = (-sp.Rational(1, 2) + 2 * u + (1 + Bx_) * (2 * (L_x + L_c) * eta_x * k["kappa"] / q
                                                 + 3 * GAMMA2 * (k["c_X"] + k["s"] * k["c_Y"]) * eta_x * k["P"] / n))
    cy = -sp.Rational(1, 2) + v + (1 + By_) * 2 * GAMMA2 * (k["r"] * k["c_X"] + k["c_Y"]) * eta_y * n
    return cx, cy


# dimensionless step variables of the proof: u = eta_x n Lhat_x, w = eta_x Lhat_x kappa / q, v = eta_y n Lhat_y
u_, w_, v_ = sp.symbols("u w v", nonnegative=True)


def theorem2_coefficient_majorants():
    r"""The polynomials in (u, w, v) that bound the two coefficients (Step 3), increasing in each variable:

    x: :math:`-\frac12 + 2u + 2w + 3\gamma(1 + 4v^2)[(\frac52 + 4w)\Pi + \frac54v(u + 2w)]`, :math:`\Pi = u^2 + 2uw`;
    y: :math:`-\frac12 + v + 2\gamma[12v\Pi(\frac52u + \frac54v + 4wu) + \frac52uv + \frac54v^2 + 4wuv]`;
    and the drift system's determinant :math:`(1 - p)(1 - t) - rs\ge(1 - 12\Pi)(1 - 4v^2) - 48\Pi v^2`."""
    Pi = u_**2 + 2 * u_ * w_
    cx = (-sp.Rational(1, 2) + 2 * u_ + 2 * w_ + 3 * GAMMA2 * (1 + 4 * v_**2)
          * ((sp.Rational(5, 2) + 4 * w_) * Pi + sp.Rational(5, 4) * v_ * (u_ + 2 * w_)))
    cy = (-sp.Rational(1, 2) + v_ + 2 * GAMMA2 * (12 * v_ * Pi * (sp.Rational(5, 2) * u_ + sp.Rational(5, 4) * v_
                                                                   + 4 * w_ * u_)
                                                   + sp.Rational(5, 2) * u_ * v_ + sp.Rational(5, 4) * v_**2
                                                   + 4 * w_ * u_ * v_))
    det = (1 - 12 * Pi) * (1 - 4 * v_**2) - 48 * Pi * v_**2
    return cx, cy, det


# u = eta_x n Lhat_x, w = eta_x Lhat_x kappa/q, v = eta_y n Lhat_y at the caps (kappa = the law's factor)
THEOREM2_CAP_VALUES = {u_: sp.Rational(1, CAP2_X), w_: sp.Rational(1, CAP2_Q), v_: sp.Rational(1, CAP2_Y)}
