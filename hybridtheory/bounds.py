r"""Theorem 1 and Corollaries 1-2 as code (proved in ``proofs/03-theorem1.md`` and ``proofs/04-corollaries.md``).

Every function takes the certified constants ``c`` (:class:`~hybridtheory.assumptions.HGSConstants`),
the number of components ``n``, the ZO dimension ``dx`` and the direction law, and returns plain
floats. Notation: :math:`L_y = L_0 + L_1 G_y`, :math:`\hat L_x = L_x + L_c`, :math:`\hat L_y = L_y + L_c`.

* ZO second moment and bias (Lemma 2):
  sphere :math:`\sigma^2 = 2 d G_x^2 + d^2 L_x^2\mu^2/2`, :math:`\beta_\mu = L_x\mu`;
  Gaussian :math:`\sigma^2 = 2(d+2)G_x^2 + \tfrac{\mu^2L_x^2}{2}d(d+2)(d+4)`, :math:`\beta_\mu = L_x\mu\sqrt d`.
* Drift (Lemma 4): :math:`\bar E_x = 2L_x^2\eta_x^2n^2G_x^2 + 3L_x^2\eta_x^2n\sigma^2 + L_c^2\eta_y^2n^2G_y^2 + 3\beta_\mu^2`,
  :math:`\bar E_y = \tfrac43L_c^2\eta_x^2n^2G_x^2 + 2L_c^2\eta_x^2n\sigma^2 + \tfrac23L_y^2\eta_y^2n^2G_y^2`.
* Theorem 1: under (A1)-(A3) and the caps :math:`\eta_x\le 1/(8n\hat L_x)`, :math:`\eta_y \le 1/(4n\hat L_y)`,

  .. math:: \frac1T\sum_{t<T}\mathbb E[\eta_x\|\nabla_xF(z_t)\|^2 + \eta_y\|\nabla_yF(z_t)\|^2] \le
            W := \frac{4\Delta}{nT} + 4\hat L_x\eta_x^2\sigma^2 + 3(\eta_x\bar E_x + \eta_y\bar E_y).

* Corollary 1: :func:`corollary1_schedule` (mu, eta_x, eta_y, T and the five T terms).
* Corollary 2: :func:`corollary2_bound` (the anytime bound at a horizon T) and
  :func:`corollary2_schedule` (tuned eta0, mu0 and the horizon that guarantees eps).

Every expression here is also built in SymPy in ``proofs/symbolic.py``; ``tests/test_proofs_bounds_agree.py``
requires the two to agree to rounding at random parameter points.

Inputs that make the theorem inapplicable raise :class:`BoundError` naming the quantity.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from .algorithm.directions import LAWS
from .assumptions import HGSConstants


class BoundError(ValueError):
    """The theorem does not apply to these inputs (the message names the quantity)."""


def _positive(name: str, v: float, strict: bool = True) -> float:
    # numbers.Real accepts numpy scalars (np.float32, np.int64) as well as Python numbers; bool is rejected
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or math.isnan(v) or (v <= 0 if strict else v < 0) \
            or math.isinf(v):
        raise BoundError(f"{name} must be {'> 0' if strict else '>= 0'} and finite, got {v!r}")
    return float(v)


def _check(c: HGSConstants, n: int, dx: int, law: str) -> None:
    if not isinstance(c, HGSConstants):
        raise BoundError(f"constants must be an HGSConstants, got {type(c).__name__}")
    if not c.bounded_gradients:
        raise BoundError("Theorem 1 needs bounded gradients (A3): this problem certifies no G_x/G_y "
                         f"(region: {c.region})")
    if int(n) != n or n < 1:
        raise BoundError(f"n must be an integer >= 1, got {n!r}")
    if int(dx) != dx or dx < 1:
        raise BoundError(f"dx must be an integer >= 1, got {dx!r}")
    if law not in LAWS:
        raise BoundError(f"direction law must be one of {LAWS}, got {law!r}")


def sigma_sq(c: HGSConstants, dx: int, mu: float, law: str = "sphere") -> float:
    """Bound on E||g_x||^2 of one ZO estimate (Lemma 2)."""
    _positive("mu", mu)
    d, G, L = dx, c.G_x, c.L_x
    if law == "sphere":
        return 2 * d * G**2 + d**2 * L**2 * mu**2 / 2
    if law == "gaussian":
        return 2 * (d + 2) * G**2 + mu**2 * L**2 / 2 * d * (d + 2) * (d + 4)
    raise BoundError(f"direction law must be one of {LAWS}, got {law!r}")


def beta_mu(c: HGSConstants, dx: int, mu: float, law: str = "sphere") -> float:
    """Bound on the smoothing bias ||E g_x - grad_x f|| (Lemma 2)."""
    _positive("mu", mu)
    if law == "sphere":
        return c.L_x * mu
    if law == "gaussian":
        return c.L_x * mu * math.sqrt(dx)
    raise BoundError(f"direction law must be one of {LAWS}, got {law!r}")


def step_caps(c: HGSConstants, n: int) -> tuple[float, float]:
    """Theorem 1's caps (eta_x_max, eta_y_max) = (1/(8 n Lhat_x), 1/(4 n Lhat_y)); inf if the constant is 0."""
    if not isinstance(c, HGSConstants):
        raise BoundError(f"constants must be an HGSConstants, got {type(c).__name__}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise BoundError(f"n must be an integer >= 1, got {n!r}")
    cx = math.inf if c.L_hat_x == 0 else 1 / (8 * n * c.L_hat_x)
    cy = math.inf if c.L_hat_y == 0 else 1 / (4 * n * c.L_hat_y)
    return cx, cy


def drift_terms(c: HGSConstants, n: int, dx: int, eta_x: float, eta_y: float, mu: float,
                law: str = "sphere") -> tuple[float, float]:
    """(E_x_bar, E_y_bar) of Lemma 4."""
    s2, b = sigma_sq(c, dx, mu, law), beta_mu(c, dx, mu, law)
    Lx, Lc, Ly, Gx, Gy = c.L_x, c.L_c, c.L_y, c.G_x, c.G_y
    Ex = 2 * Lx**2 * eta_x**2 * n**2 * Gx**2 + 3 * Lx**2 * eta_x**2 * n * s2 \
        + Lc**2 * eta_y**2 * n**2 * Gy**2 + 3 * b**2
    Ey = (4 / 3) * Lc**2 * eta_x**2 * n**2 * Gx**2 + 2 * Lc**2 * eta_x**2 * n * s2 \
        + (2 / 3) * Ly**2 * eta_y**2 * n**2 * Gy**2
    return Ex, Ey


def _check_steps(c: HGSConstants, n: int, eta_x: float, eta_y: float, enforce_caps: bool) -> None:
    _positive("eta_x", eta_x)
    _positive("eta_y", eta_y)
    if enforce_caps:
        cx, cy = step_caps(c, n)
        if eta_x > cx * (1 + 1e-12):
            raise BoundError(f"eta_x = {eta_x:.4g} exceeds Theorem 1's cap 1/(8 n Lhat_x) = {cx:.4g}")
        if eta_y > cy * (1 + 1e-12):
            raise BoundError(f"eta_y = {eta_y:.4g} exceeds Theorem 1's cap 1/(4 n Lhat_y) = {cy:.4g}")


def theorem1_rhs(c: HGSConstants, n: int, dx: int, eta_x: float, eta_y: float, mu: float, T: int,
                 delta: float, law: str = "sphere", enforce_caps: bool = True) -> float:
    """W of Theorem 1 (2): bound on (1/T) sum_t E[eta_x ||grad_x F||^2 + eta_y ||grad_y F||^2]."""
    _check(c, n, dx, law)
    _check_steps(c, n, eta_x, eta_y, enforce_caps)
    _positive("delta", delta, strict=False)
    if int(T) != T or T < 1:
        raise BoundError(f"T must be an integer >= 1, got {T!r}")
    Ex, Ey = drift_terms(c, n, dx, eta_x, eta_y, mu, law)
    return 4 * delta / (n * T) + 4 * c.L_hat_x * eta_x**2 * sigma_sq(c, dx, mu, law) + 3 * (eta_x * Ex + eta_y * Ey)


def one_epoch_rhs(c: HGSConstants, n: int, dx: int, eta_x: float, eta_y: float, mu: float,
                  gx_sq: float, gy_sq: float, law: str = "sphere", enforce_caps: bool = True) -> float:
    """Right side of Theorem 1 (1) minus F(z_t): bound on E[F(z_{t+1}) | F_t] - F(z_t),
    given ||grad_x F(z_t)||^2 = gx_sq and ||grad_y F(z_t)||^2 = gy_sq."""
    _check(c, n, dx, law)
    _check_steps(c, n, eta_x, eta_y, enforce_caps)
    Ex, Ey = drift_terms(c, n, dx, eta_x, eta_y, mu, law)
    return (-(n / 4) * (eta_x * gx_sq + eta_y * gy_sq) + (3 * n / 4) * (eta_x * Ex + eta_y * Ey)
            + c.L_hat_x * eta_x**2 * n * sigma_sq(c, dx, mu, law))


def k_constants(c: HGSConstants, rho: float) -> tuple[float, float]:
    """(K1, K2) of Corollary 1 for the ratio rho = eta_y / eta_x."""
    Lx, Lc, Ly, Gx, Gy = c.L_x, c.L_c, c.L_y, c.G_x, c.G_y
    K1 = 6 * Lx**2 * Gx**2 + 3 * rho**2 * Lc**2 * Gy**2 + 4 * rho * Lc**2 * Gx**2 + 2 * rho**3 * Ly**2 * Gy**2
    K2 = 9 * Lx**2 + 6 * rho * Lc**2
    return K1, K2


@dataclass(frozen=True)
class Schedule:
    """Corollary 1's choice for one eps: parameters, the epoch count T, and its five terms."""

    eps: float
    mu: float
    eta_x: float
    eta_y: float
    T: int
    T_terms: dict  # T_a (x-cap), T_b (y-cap), T_c (ZO noise), T_d (RR drift), T_e (drift from ZO noise)
    binding: str   # which term gives T
    sigma_sq: float

    def to_dict(self) -> dict:
        return asdict(self)


def corollary1_schedule(c: HGSConstants, n: int, dx: int, eps: float, delta: float, rho: float = 1.0,
                        law: str = "sphere") -> Schedule:
    """Corollary 1: mu, eta_x, eta_y = rho*eta_x and T with (1/T) sum_t E||grad F(z_t)||^2 <= eps^2."""
    _check(c, n, dx, law)
    _positive("eps", eps)
    _positive("delta", delta)
    _positive("rho", rho)
    m = min(1.0, rho)
    Lx, Gx = c.L_x, c.G_x
    if Lx == 0:
        raise BoundError("L_x = 0: the ZO block is linear; Corollary 1's mu rule divides by L_x")
    if law == "sphere":
        mu = min(eps * math.sqrt(m / 45) / Lx, math.sqrt(2 / dx) * Gx / Lx)
    else:
        mu = min(eps * math.sqrt(m / 45) / (Lx * math.sqrt(dx)), math.sqrt(2 / (dx * (dx + 4))) * Gx / Lx)
    if mu <= 0:
        raise BoundError("mu came out 0 (G_x = 0?): the ZO block has no gradient to estimate")
    s2 = sigma_sq(c, dx, mu, law)
    K1, K2 = k_constants(c, rho)
    cx, cy = step_caps(c, n)
    cands = {
        "T_a": cx,
        "T_b": cy / rho,
        "T_c": m * eps**2 / (20 * c.L_hat_x * s2),
        "T_d": math.inf if K1 == 0 else (eps / n) * math.sqrt(m / (5 * K1)),
        "T_e": math.inf if K2 * s2 == 0 else eps * math.sqrt(m / (5 * n * K2 * s2)),
    }
    eta_x = min(cands.values())
    terms = {k: (0.0 if math.isinf(v) else 20 * delta / (m * n * v * eps**2)) for k, v in cands.items()}
    T = math.ceil(20 * delta / (m * n * eta_x * eps**2))
    binding = min(cands, key=cands.get)
    return Schedule(eps=eps, mu=mu, eta_x=eta_x, eta_y=rho * eta_x, T=T, T_terms=terms, binding=binding,
                    sigma_sq=s2)


def corollary1_T(c: HGSConstants, n: int, dx: int, eps: float, delta: float, rho: float = 1.0,
                 law: str = "sphere") -> int:
    """T_bound(eps): Corollary 1's epoch count."""
    return corollary1_schedule(c, n, dx, eps, delta, rho, law).T


def corollary2_bound(c: HGSConstants, n: int, dx: int, eta0: float, rho: float, mu0: float, T: int,
                     delta: float, law: str = "sphere") -> float:
    """Corollary 2 (anytime): with eta_x = eta0/(n sqrt T), eta_y = rho eta_x, mu = mu0 T^(-1/4),
    bound on (1/T) sum_t E||grad F(z_t)||^2 (valid for T >= T0 = max{(8 Lhat_x eta0)^2, (4 rho Lhat_y eta0)^2})."""
    _check(c, n, dx, law)
    _positive("eta0", eta0)
    _positive("rho", rho)
    _positive("mu0", mu0)
    _positive("delta", delta, strict=False)
    T0 = max((8 * c.L_hat_x * eta0) ** 2, (4 * rho * c.L_hat_y * eta0) ** 2)
    if T < T0:
        raise BoundError(f"T = {T} is below Corollary 2's T0 = {T0:.4g} (the step caps fail)")
    m = min(1.0, rho)
    mu = mu0 * T ** -0.25
    s2, b = sigma_sq(c, dx, mu, law), beta_mu(c, dx, mu, law)
    K1, K2 = k_constants(c, rho)
    sq = math.sqrt(T)
    return ((4 * delta / eta0 + 4 * c.L_hat_x * eta0 * s2 / n + 9 * b**2 * sq) / (m * sq)
            + eta0**2 * (K1 + K2 * s2 / n) / (m * T))


@dataclass(frozen=True)
class AnytimeSchedule:
    """Corollary 2's tuned choice for one eps (``proofs/04-corollaries.md`` section 4.4).

    Run with eta_x = eta0/(n sqrt T), eta_y = rho eta_x, mu = mu0 T^(-1/4) for this T."""

    eps: float
    eta0: float
    mu0: float
    T: int
    T0: float        # smallest T for which the step caps hold
    leading: float   # A^2/eps^4 = 81 Delta Lhat_x sigma0^2/(m^2 n eps^4), the eps^-4 term of T
    sigma0_sq: float

    def to_dict(self) -> dict:
        return asdict(self)


def corollary2_mu0_max(c: HGSConstants, n: int, dx: int, delta: float, law: str = "sphere") -> float:
    """Largest mu0 with 9 beta_{mu0}^2 <= sqrt(Delta Lhat_x sigma_min^2 / n), sigma_min^2 = sigma^2 at mu -> 0
    (2 d G_x^2 sphere, 2 (d+2) G_x^2 Gaussian); this implies Corollary 2's condition for every sigma0^2."""
    _check(c, n, dx, law)
    _positive("delta", delta)
    if c.L_x == 0:
        raise BoundError("L_x = 0: no smoothing bias, any mu0 works; pass mu0 explicitly")
    s_min = 2 * (dx if law == "sphere" else dx + 2) * c.G_x**2
    beta_sq = math.sqrt(delta * c.L_hat_x * s_min / n) / 9
    return math.sqrt(beta_sq) / (c.L_x * (1.0 if law == "sphere" else math.sqrt(dx)))


def corollary2_schedule(c: HGSConstants, n: int, dx: int, eps: float, delta: float, rho: float = 1.0,
                        mu0: float | None = None, law: str = "sphere") -> AnytimeSchedule:
    """Corollary 2 tuned: eta0 = sqrt(n Delta/(Lhat_x sigma0^2)) and the horizon
    T = ceil(max{T0, A^2/eps^4 + 2B/eps^2}) with A = 9 sqrt(Delta Lhat_x sigma0^2/n)/m,
    B = eta0^2 (K1 + K2 sigma0^2/n)/m; then corollary2_bound(...) <= eps^2 at this T."""
    _check(c, n, dx, law)
    _positive("eps", eps)
    _positive("delta", delta)
    _positive("rho", rho)
    if mu0 is None:
        mu0 = corollary2_mu0_max(c, n, dx, delta, law)
    s0 = sigma_sq(c, dx, mu0, law)
    if 9 * beta_mu(c, dx, mu0, law) ** 2 > math.sqrt(delta * c.L_hat_x * s0 / n) * (1 + 1e-12):
        raise BoundError(f"mu0 = {mu0:.4g} is too large: Corollary 2 needs 9 beta_mu0^2 <= sqrt(Delta Lhat_x sigma0^2/n)")
    if c.L_hat_x * s0 == 0:
        raise BoundError("Lhat_x sigma0^2 = 0: Corollary 2's eta0 is undefined (no ZO noise)")
    m = min(1.0, rho)
    eta0 = math.sqrt(n * delta / (c.L_hat_x * s0))
    K1, K2 = k_constants(c, rho)
    A = 9 * math.sqrt(delta * c.L_hat_x * s0 / n) / m
    B = eta0**2 * (K1 + K2 * s0 / n) / m
    T0 = max((8 * c.L_hat_x * eta0) ** 2, (4 * rho * c.L_hat_y * eta0) ** 2)
    T = math.ceil(max(T0, A**2 / eps**4 + 2 * B / eps**2))
    return AnytimeSchedule(eps=eps, eta0=eta0, mu0=mu0, T=T, T0=T0, leading=A**2 / eps**4, sigma0_sq=s0)


# -- Theorem 2: heterogeneity instead of bounded gradients (proofs/07-theorem2.md) ------------------
#
# Assumptions: (A1); block smoothness of every f_i with (L_x, L_c, L_y) (under HGS + a y-gradient bound
# this is Lemma 1(ii)'s L_y = L0 + L1 G_y); bounded heterogeneity per block,
#   (1/n) sum_i ||grad_b f_i(z) - grad_b F(z)||^2 <= varsigma_b^2   for all z, b in {x, y};
# no gradient bound. Lemma 2 is used in its pointwise form E||g||^2 <= kappa ||grad||^2 + r_mu, with the
# 1/q variance of q averaged queries.

THEOREM2_LAWS = ("sphere", "gaussian", "rademacher")
# the constant factors of Theorem 2's proof (07-theorem2.md, Step 2); the mutation check scales them
T2_DESCENT = 5       # the caps leave -(1/5) n eta ||grad||^2 of descent per epoch
T2_GAMMA = 6 / 5     # inverse of the drift system's determinant bound (>= 5/6 under the caps)
T2_CAP_X = 16        # eta_x <= 1/(16 n Lhat_x)
T2_CAP_Q = 64        # eta_x <= q/(64 kappa Lhat_x)  (the extra cap: c/(d_x L_x) with c = q/128 for the sphere)
T2_CAP_Y = 8         # eta_y <= 1/(8 n Lhat_y)


def zo_moments(dx: int, mu: float, L_x: float, law: str = "sphere") -> tuple[float, float, float]:
    r"""Lemma 2 in pointwise form for one query: ``(kappa, r_mu, beta)`` with
    :math:`\mathbb E\|g\|^2 \le \kappa\|\nabla\phi(x)\|^2 + r_\mu` and :math:`\|\mathbb E g - \nabla\phi(x)\|\le\beta`
    for an :math:`L_x`-smooth :math:`\phi` (no convexity; central or forward difference).

    sphere: (2d, d^2 L^2 mu^2/2, L mu); Gaussian: (2(d+2), mu^2 L^2 d(d+2)(d+4)/2, L mu sqrt d);
    Rademacher: (2d, d^3 L^2 mu^2/2, L mu d/2) (``proofs/02-estimators.md``, Lemma 2R)."""
    _positive("mu", mu)
    if int(dx) != dx or dx < 1:
        raise BoundError(f"dx must be an integer >= 1, got {dx!r}")
    d, L = dx, L_x
    if law == "sphere":
        return 2.0 * d, d**2 * L**2 * mu**2 / 2, L * mu
    if law == "gaussian":
        return 2.0 * (d + 2), mu**2 * L**2 / 2 * d * (d + 2) * (d + 4), L * mu * math.sqrt(d)
    if law == "rademacher":
        return 2.0 * d, d**3 * L**2 * mu**2 / 2, L * mu * d / 2
    raise BoundError(f"direction law must be one of {THEOREM2_LAWS}, got {law!r}")


def _check2(c: HGSConstants, n: int, dx: int, law: str, q: int, varsigma_x_sq: float,
            varsigma_y_sq: float) -> None:
    if not isinstance(c, HGSConstants):
        raise BoundError(f"constants must be an HGSConstants, got {type(c).__name__}")
    if int(n) != n or n < 1:
        raise BoundError(f"n must be an integer >= 1, got {n!r}")
    if int(dx) != dx or dx < 1:
        raise BoundError(f"dx must be an integer >= 1, got {dx!r}")
    if int(q) != q or q < 1:
        raise BoundError(f"q (queries per step) must be an integer >= 1, got {q!r}")
    if law not in THEOREM2_LAWS:
        raise BoundError(f"direction law must be one of {THEOREM2_LAWS}, got {law!r}")
    _positive("varsigma_x_sq", varsigma_x_sq, strict=False)
    _positive("varsigma_y_sq", varsigma_y_sq, strict=False)
    try:
        c.L_y
    except ValueError as e:
        raise BoundError(f"Theorem 2 needs a global y-smoothness constant L_y: {e}") from None


def theorem2_caps(c: HGSConstants, n: int, dx: int, q: int = 1, law: str = "sphere", B_x: float = 0.0,
                  B_y: float = 0.0) -> tuple[float, float]:
    r"""Theorem 2's caps :math:`\eta_x\le\min\{1/(16n\hat L_x),\ q/(64\kappa\hat L_x)\}/(1+B_x)`,
    :math:`\eta_y\le1/(8n\hat L_y(1+B_y))` (:math:`\kappa = 2d_x` for sphere and Rademacher, :math:`2(d_x+2)` Gaussian;
    the second x-cap is the extra cap :math:`c/(d_x\hat L_x)` that absorbs the multiplicative ZO noise).
    ``B_x``, ``B_y``: the multiplicative part of relaxed heterogeneity
    :math:`\frac1n\sum_i\|\nabla_bf_i - \nabla_bF\|^2\le B_b\|\nabla_bF\|^2 + \varsigma_b^2` (0: plain bound).
    ``inf`` where a constant is 0."""
    _check2(c, n, dx, law, q, 0.0, 0.0)
    _positive("B_x", B_x, strict=False)
    _positive("B_y", B_y, strict=False)
    kappa = zo_moments(dx, 1.0, c.L_x, law)[0]
    cx = math.inf if c.L_hat_x == 0 else \
        min(1 / (T2_CAP_X * n * c.L_hat_x), q / (T2_CAP_Q * kappa * c.L_hat_x)) / (1 + B_x)
    cy = math.inf if c.L_hat_y == 0 else 1 / (T2_CAP_Y * n * c.L_hat_y * (1 + B_y))
    return cx, cy


def theorem2_epoch_error(c: HGSConstants, n: int, dx: int, eta_x: float, eta_y: float, mu: float,
                         varsigma_x_sq: float, varsigma_y_sq: float, q: int = 1, law: str = "sphere",
                         enforce_caps: bool = True, B_x: float = 0.0, B_y: float = 0.0) -> float:
    r"""E_2 of Theorem 2 (1): the additive error of one epoch,
    :math:`\mathbb E[F(z_{t+1})\mid\mathcal F_t]\le F(z_t) - \frac n5(\eta_x\|\nabla_xF\|^2 + \eta_y\|\nabla_yF\|^2) + E_2`.

    .. math:: E_2 = \tfrac54\eta_xn\beta_\mu^2 + \hat L_x\eta_x^2\tfrac nq(2\kappa\varsigma_x^2 + r_\mu)
              + \gamma\big[(c_X + s\,c_Y)A_x + (r\,c_X + c_Y)A_y\big]

    with :math:`P = n^2 + 2n\kappa/q`, :math:`\gamma = 6/5`,
    :math:`A_x = 3\eta_x^2(P\varsigma_x^2 + 2n^2\beta_\mu^2 + nr_\mu/q)`, :math:`A_y = 2\eta_y^2n^2\varsigma_y^2`,
    :math:`c_X = \tfrac52\eta_xnL_x^2 + \tfrac54\eta_ynL_c^2 + 4\hat L_x\eta_x^2n\kappa L_x^2/q`,
    :math:`c_Y = \tfrac52\eta_xnL_c^2 + \tfrac54\eta_ynL_y^2 + 4\hat L_x\eta_x^2n\kappa L_c^2/q`,
    :math:`r = 12\eta_x^2PL_c^2`, :math:`s = 4\eta_y^2n^2L_c^2`.
    The :math:`\varsigma_x^2` term linear in :math:`\eta_x` is the only one that survives as
    :math:`\eta\to0` at fixed :math:`\mu`: it carries :math:`d_x\varsigma_x^2/q`, not :math:`d_xG_x^2`."""
    _check2(c, n, dx, law, q, varsigma_x_sq, varsigma_y_sq)
    _positive("eta_x", eta_x)
    _positive("eta_y", eta_y)
    if enforce_caps:
        cx, cy = theorem2_caps(c, n, dx, q, law, B_x, B_y)
        if eta_x > cx * (1 + 1e-12):
            raise BoundError(f"eta_x = {eta_x:.4g} exceeds Theorem 2's cap {cx:.4g}")
        if eta_y > cy * (1 + 1e-12):
            raise BoundError(f"eta_y = {eta_y:.4g} exceeds Theorem 2's cap 1/(8 n Lhat_y (1 + B_y)) = {cy:.4g}")
    kappa, r_mu, beta = zo_moments(dx, mu, c.L_x, law)
    Lx, Lc, Ly, Lhx = c.L_x, c.L_c, c.L_y, c.L_hat_x
    P = n**2 + 2 * n * kappa / q
    c_X = 2.5 * eta_x * n * Lx**2 + 1.25 * eta_y * n * Lc**2 + 4 * Lhx * eta_x**2 * n * kappa * Lx**2 / q
    c_Y = 2.5 * eta_x * n * Lc**2 + 1.25 * eta_y * n * Ly**2 + 4 * Lhx * eta_x**2 * n * kappa * Lc**2 / q
    r = 12 * eta_x**2 * P * Lc**2
    s = 4 * eta_y**2 * n**2 * Lc**2
    A_x = 3 * eta_x**2 * (P * varsigma_x_sq + 2 * n**2 * beta**2 + n * r_mu / q)
    A_y = 2 * eta_y**2 * n**2 * varsigma_y_sq
    return (1.25 * eta_x * n * beta**2 + Lhx * eta_x**2 * (n / q) * (2 * kappa * varsigma_x_sq + r_mu)
            + T2_GAMMA * ((c_X + s * c_Y) * A_x + (r * c_X + c_Y) * A_y))


def theorem2_rhs(c: HGSConstants, n: int, dx: int, eta_x: float, eta_y: float, mu: float, T: int, delta: float,
                 varsigma_x_sq: float, varsigma_y_sq: float, q: int = 1, law: str = "sphere",
                 enforce_caps: bool = True, B_x: float = 0.0, B_y: float = 0.0) -> float:
    r"""W_2 of Theorem 2 (2): bound on :math:`\frac1T\sum_{t<T}\mathbb E[\eta_x\|\nabla_xF(z_t)\|^2 + \eta_y\|\nabla_yF(z_t)\|^2]`,
    :math:`W_2 = 5\Delta/(nT) + 5E_2/n` (no gradient bound; heterogeneity :math:`\varsigma_x^2, \varsigma_y^2`)."""
    _positive("delta", delta, strict=False)
    if int(T) != T or T < 1:
        raise BoundError(f"T must be an integer >= 1, got {T!r}")
    E2 = theorem2_epoch_error(c, n, dx, eta_x, eta_y, mu, varsigma_x_sq, varsigma_y_sq, q, law, enforce_caps,
                              B_x, B_y)
    return T2_DESCENT * delta / (n * T) + T2_DESCENT * E2 / n


def theorem2_stationarity(c: HGSConstants, n: int, dx: int, eta_x: float, eta_y: float, mu: float, T: int,
                          delta: float, varsigma_x_sq: float, varsigma_y_sq: float, q: int = 1,
                          law: str = "sphere", B_x: float = 0.0, B_y: float = 0.0) -> dict:
    r"""Theorem 2's consequences per block and jointly: with :math:`W_2` as above,
    :math:`\frac1T\sum\mathbb E\|\nabla_xF\|^2\le W_2/\eta_x`, :math:`\frac1T\sum\mathbb E\|\nabla_yF\|^2\le W_2/\eta_y`
    (Corollary 5, block-wise rates) and :math:`\frac1T\sum\mathbb E\|\nabla F\|^2\le W_2/\min(\eta_x,\eta_y)`."""
    W = theorem2_rhs(c, n, dx, eta_x, eta_y, mu, T, delta, varsigma_x_sq, varsigma_y_sq, q, law, True, B_x, B_y)
    return {"W2": W, "grad_x_sq": W / eta_x, "grad_y_sq": W / eta_y, "grad_sq": W / min(eta_x, eta_y)}


def corollary3_mu(c: HGSConstants, dx: int, eps: float, rho: float = 1.0, law: str = "sphere") -> float:
    r"""Corollary 3's smoothing radius: the largest :math:`\mu` with
    :math:`\frac{25}{4m}\beta_\mu^2 + \frac{5r_\mu}{64\kappa m}\le\varepsilon^2/5` (bias share plus the
    :math:`\mu`-part of the noise share at the extra cap); both sides are quadratic in :math:`\mu`."""
    _positive("eps", eps)
    _positive("rho", rho)
    if c.L_x == 0:
        raise BoundError("L_x = 0: the ZO block is linear, there is no smoothing bias; pass mu explicitly")
    m = min(1.0, rho)
    kappa, r1, b1 = zo_moments(dx, 1.0, c.L_x, law)   # r_mu = r1 mu^2, beta = b1 mu
    per_mu_sq = 25 / (4 * m) * b1**2 + 5 * r1 / (T2_CAP_Q * kappa * m)
    return eps / math.sqrt(5 * per_mu_sq)


@dataclass(frozen=True)
class Schedule2:
    """Corollary 3's choice for one eps (Theorem 2 under heterogeneity): parameters, T and its terms."""

    eps: float
    mu: float
    eta_x: float
    eta_y: float
    T: int
    T_terms: dict  # T_cap (caps incl. the extra cap), T_het (ZO noise from heterogeneity: eps^-4), T_drift
    binding: str
    varsigma_x_sq: float
    varsigma_y_sq: float
    q: int

    def to_dict(self) -> dict:
        return asdict(self)


def _corollary3_drift_share(c, n, dx, eta_x, rho, mu, vx, vy, q, law) -> float:
    """5 * (drift part of E_2) / (n m eta_x): the shares of order eta^2 and higher."""
    m = min(1.0, rho)
    kappa, r_mu, beta = zo_moments(dx, mu, c.L_x, law)
    E2 = theorem2_epoch_error(c, n, dx, eta_x, rho * eta_x, mu, vx, vy, q, law, enforce_caps=False)
    first = 1.25 * eta_x * n * beta**2 + c.L_hat_x * eta_x**2 * (n / q) * (2 * kappa * vx + r_mu)
    return T2_DESCENT * max(E2 - first, 0.0) / (n * m * eta_x)


def corollary3_schedule(c: HGSConstants, n: int, dx: int, eps: float, delta: float, varsigma_x_sq: float,
                        varsigma_y_sq: float, rho: float = 1.0, q: int = 1, law: str = "sphere",
                        B_x: float = 0.0, B_y: float = 0.0) -> Schedule2:
    r"""Corollary 3: :math:`\mu`, :math:`\eta_x`, :math:`\eta_y = \rho\eta_x`, T with
    :math:`\frac1T\sum_t\mathbb E\|\nabla F(z_t)\|^2\le\varepsilon^2` under Theorem 2's assumptions.

    :math:`\bar\eta` = the caps (with :math:`\rho`), :math:`\eta_c = mq\varepsilon^2/(50\hat L_x\kappa\varsigma_x^2)`
    (ZO noise from heterogeneity), :math:`\eta_d = \bar\eta\sqrt{\varepsilon^2/(5D(\bar\eta))}` where D is the
    drift share (order :math:`\eta^2` and higher, so :math:`D(\eta)\le(\eta/\bar\eta)^2D(\bar\eta)`);
    :math:`\eta_x = \min`, :math:`T = \lceil25\Delta/(mn\eta_x\varepsilon^2)\rceil`. Terms:
    :math:`T_{het} = 1250\,\Delta\hat L_x\kappa\varsigma_x^2/(m^2nq\varepsilon^4)` (sphere: :math:`\kappa = 2d_x`, so the
    :math:`\varepsilon^{-4}` coefficient is :math:`d_x\varsigma_x^2/q`); with :math:`\varsigma_x = \varsigma_y = 0`
    (interpolation in this strong sense) every term is :math:`O(\varepsilon^{-2})` and
    :math:`T_{cap}\propto\kappa/q\propto d_x/q` (Corollary 4). ``B_x``, ``B_y``: relaxed heterogeneity
    (:func:`theorem2_caps`); they only shrink the caps, so :math:`\varsigma = 0` with ``B > 0`` (components
    sharing stationary points, e.g. quadratics with a common minimiser) keeps :math:`O(\varepsilon^{-2})`."""
    _check2(c, n, dx, law, q, varsigma_x_sq, varsigma_y_sq)
    _positive("eps", eps)
    _positive("delta", delta)
    _positive("rho", rho)
    m = min(1.0, rho)
    mu = corollary3_mu(c, dx, eps, rho, law)
    kappa = zo_moments(dx, mu, c.L_x, law)[0]
    cx, cy = theorem2_caps(c, n, dx, q, law, B_x, B_y)
    eta_bar = min(cx, cy / rho)
    if math.isinf(eta_bar):
        raise BoundError("Lhat_x = Lhat_y = 0: no step cap; Corollary 3 needs a smooth problem")
    D_bar = _corollary3_drift_share(c, n, dx, eta_bar, rho, mu, varsigma_x_sq, varsigma_y_sq, q, law)
    cands = {
        "T_cap": eta_bar,
        "T_het": math.inf if varsigma_x_sq * c.L_hat_x == 0
        else m * q * eps**2 / (50 * c.L_hat_x * kappa * varsigma_x_sq),
        "T_drift": eta_bar if D_bar <= eps**2 / 5 else eta_bar * math.sqrt(eps**2 / (5 * D_bar)),
    }
    eta_x = min(cands.values())
    terms = {k: (0.0 if math.isinf(v) else 25 * delta / (m * n * v * eps**2)) for k, v in cands.items()}
    T = math.ceil(25 * delta / (m * n * eta_x * eps**2))
    return Schedule2(eps=eps, mu=mu, eta_x=eta_x, eta_y=rho * eta_x, T=T, T_terms=terms,
                     binding=min(cands, key=cands.get), varsigma_x_sq=varsigma_x_sq,
                     varsigma_y_sq=varsigma_y_sq, q=q)
