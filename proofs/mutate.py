r"""Mutation check: scale each certified constant and each bound coefficient, and see which test catches it.

``python -m proofs.mutate [--only ID ...] [--list] [--write-readme] [--jobs N]``

Each mutation replaces one exact source string in a fresh copy of ``hybridtheory/``, ``proofs/`` and
``tests/`` (the working tree is never touched), runs the listed test files there with ``pytest -x`` and
records the first failing test. A mutation that no test catches is reported as **missed**.

* *Family constants* are halved (or, for the ramp's class constant ``L_x = 1``, set to 0.2 as in the issue):
  a halved constant is wrong wherever the constant is within a factor 2 of tight, which
  ``tests/test_constants_teeth.py`` establishes at witnessed points.
* *Bound coefficients* of ``hybridtheory.bounds`` are moved in the unsafe direction (a smaller bound or a
  larger step cap). ``code`` mutations change the code only (the proofs' SymPy expressions stay: caught when
  code and proofs disagree); ``joint`` mutations change the same constant in ``bounds.py`` **and**
  ``proofs/symbolic.py`` (a wrong theorem: caught only by a check of the derivation itself).

The table in ``proofs/README.md`` is the output of ``python -m proofs.mutate --write-readme``;
``tests/test_mutate.py`` checks that it lists exactly these mutations and runs one of them.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("hybridtheory", "proofs", "tests", "pyproject.toml")
T_TEETH = "tests/test_constants_teeth.py"
T_OBJ = "tests/test_objectives.py"
T_T2 = "tests/test_theorem2.py"
T_AGREE = "tests/test_proofs_bounds_agree.py"
T_SYM = "tests/test_proofs_symbolic.py"
T_API = "tests/test_bounds_api.py"
T_VERIFY = "tests/test_proofs_verify.py"
FAMILY_TESTS = (T_TEETH, T_OBJ, "tests/test_catalogue.py", "tests/test_hgs_check.py")
BOUND_TESTS = (T_T2, T_AGREE, T_SYM, T_API, T_VERIFY)
JOINT_TESTS = (T_T2, T_SYM, T_AGREE, T_VERIFY)
OBJECTIVES = "hybridtheory/objectives/"


@dataclass(frozen=True)
class Mutation:
    id: str
    what: str
    edits: tuple            # ((file, old, new), ...): each ``old`` must occur exactly once
    tests: tuple = FAMILY_TESTS


# Each mutation: (id, what, old, new), ``old`` replaced by ``new``; ``old`` must occur exactly once.
# Family constants, by file in hybridtheory/objectives/.
FAMILY_EDITS = {
    "ramp.py": (
        ("ramp-Lx-0.2", "ramp L_x = 1 -> 0.2 (the issue's example)",
         "HGSConstants(L_x=1.0, L_c=0.0, L0=self.c_y**2 / 4", "HGSConstants(L_x=0.2, L_c=0.0, L0=self.c_y**2 / 4"),
        ("ramp-L0", "ramp L0 x 1/2",
         "L0=self.c_y**2 / 4, L1=0.0,\n                            G_x=math.sqrt(1 + self.beta**2)",
         "L0=self.c_y**2 / 8, L1=0.0,\n                            G_x=math.sqrt(1 + self.beta**2)"),
        ("ramp-Gx", "ramp G_x x 1/2", "G_x=math.sqrt(1 + self.beta**2)", "G_x=0.5 * math.sqrt(1 + self.beta**2)"),
        ("ramp-Gy", "ramp G_y x 1/2",
         "G_y=self.c_y, F_lower=math.log(2),\n                            region=\"global",
         "G_y=0.5 * self.c_y, F_lower=math.log(2),\n                            region=\"global"),
        ("ramp-vx", "ramp varsigma_x^2 x 1/2",
         "varsigma_x_sq=self.beta**2, varsigma_y_sq=self.c_y**2 / 4)",
         "varsigma_x_sq=0.5 * self.beta**2, varsigma_y_sq=self.c_y**2 / 4)"),
        ("ramp-vy", "ramp varsigma_y^2 x 1/2",
         "varsigma_x_sq=self.beta**2, varsigma_y_sq=self.c_y**2 / 4)",
         "varsigma_x_sq=self.beta**2, varsigma_y_sq=self.c_y**2 / 8)"),
    ),
    "hetero.py": (
        ("hetero-Lx", "hetero L_x x 1/2", "HGSConstants(L_x=1.0,", "HGSConstants(L_x=0.5,"),
        ("hetero-L0", "hetero L0 x 1/2", "L0=self.c_y**2 / 4,", "L0=self.c_y**2 / 8,"),
        ("hetero-Gx", "hetero G_x x 1/2",
         "G_x=math.sqrt(4 * self.eps**2 + self.varsigma**2)",
         "G_x=0.5 * math.sqrt(4 * self.eps**2 + self.varsigma**2)"),
        ("hetero-Gy", "hetero G_y x 1/2", "G_y=self.c_y / 2,", "G_y=self.c_y / 4,"),
        ("hetero-vx", "hetero varsigma_x^2 x 1/2",
         "varsigma_x_sq=self.varsigma**2,", "varsigma_x_sq=0.5 * self.varsigma**2,"),
    ),
    "pl.py": (
        ("pl-Lx", "pl L_x x 1/2", "HGSConstants(L_x=1.0,", "HGSConstants(L_x=0.5,"),
        ("pl-L0", "pl L0 x 1/2", "L0=self.c_y**2 / 4,", "L0=self.c_y**2 / 8,"),
        ("pl-Gx", "pl G_x x 1/2", "G_x=self.radius + self.beta,", "G_x=0.5 * (self.radius + self.beta),"),
        ("pl-Gy", "pl G_y x 1/2", "G_y=self.c_y, F_lower", "G_y=0.5 * self.c_y, F_lower"),
        ("pl-vx", "pl varsigma_x^2 x 1/2", "varsigma_x_sq=self.beta**2,", "varsigma_x_sq=0.5 * self.beta**2,"),
        ("pl-vy", "pl varsigma_y^2 x 1/2", "varsigma_y_sq=self.c_y**2 / 4)", "varsigma_y_sq=self.c_y**2 / 8)"),
    ),
    "quadratic.py": (
        ("quad-Lx", "quadratic L_x x 1/2", "\"L_x\": spec(H[:, :dx, :dx])", "\"L_x\": 0.5 * spec(H[:, :dx, :dx])"),
        ("quad-Lc", "quadratic L_c x 1/2", "\"L_c\": spec(H[:, :dx, dx:])", "\"L_c\": 0.5 * spec(H[:, :dx, dx:])"),
        ("quad-L0", "quadratic L0 x 1/2", "\"L0\": spec(H[:, dx:, dx:])", "\"L0\": 0.5 * spec(H[:, dx:, dx:])"),
        ("quad-Gx", "quadratic G_x x 1/2",
         "\"G_x\": spec(H[:, :dx, :]) * radius + np.linalg.norm(c[:, :dx], axis=-1)",
         "\"G_x\": 0.5 * (spec(H[:, :dx, :]) * radius + np.linalg.norm(c[:, :dx], axis=-1))"),
        ("quad-Gy", "quadratic G_y x 1/2",
         "\"G_y\": spec(H[:, dx:, :]) * radius + np.linalg.norm(c[:, dx:], axis=-1)",
         "\"G_y\": 0.5 * (spec(H[:, dx:, :]) * radius + np.linalg.norm(c[:, dx:], axis=-1))"),
    ),
    "lora.py": (
        ("lora-Lx", "LoRA regression L_x x 1/2", "self.comp = {\"L_x\": s**2,", "self.comp = {\"L_x\": 0.5 * s**2,"),
        ("lora-Lc", "LoRA regression L_c x 1/2", "\"L_c\": s**2 * rho,", "\"L_c\": 0.5 * s**2 * rho,"),
        ("lora-L0", "LoRA regression L0 x 1/2 (the issue's example)",
         "\"L0\": s**2 * rho**2 + s * root,", "\"L0\": 0.5 * (s**2 * rho**2 + s * root),"),
        ("lora-Gx", "LoRA regression G_x x 1/2", "\"G_x\": s * root,", "\"G_x\": 0.5 * s * root,"),
        ("lora-Gy", "LoRA regression G_y x 1/2", "\"G_y\": s * root * rho}", "\"G_y\": 0.5 * s * root * rho}"),
    ),
    "hyb.py": (
        ("hyb-Lx", "HYB L_x x 1/2", "\"L_x\": spec_a**2 + kap * npn**2,", "\"L_x\": 0.5 * (spec_a**2 + kap * npn**2),"),
        ("hyb-Lc", "HYB L_c x 1/2", "\"L_c\": kap * npn * nq,", "\"L_c\": 0.5 * kap * npn * nq,"),
        ("hyb-Gx", "HYB G_x x 1/2", "\"G_x\": self.delta * np.minimum", "\"G_x\": 0.5 * self.delta * np.minimum"),
        ("hyb-Gy", "HYB G_y x 1/2", "\"G_y\": nc + kap * nq,", "\"G_y\": 0.5 * (nc + kap * nq),"),
        ("hyb-L0alt", "HYB L0 (L1 = 0 certificate) x 1/2",
         "return float(np.max(np.linalg.eigvals(m).real))", "return 0.5 * float(np.max(np.linalg.eigvals(m).real))"),
    ),
    "catalogue.py": (
        ("cat-power-L0", "catalogue |y|^k L0 x 1/2",
         "Certificate(k * (k - 2) ** (k - 2) / L1 ** (k - 2), L1,",
         "Certificate(0.5 * k * (k - 2) ** (k - 2) / L1 ** (k - 2), L1,"),
        ("cat-power-L1", "catalogue |y|^k L1 x 1/2",
         "Certificate(k * (k - 2) ** (k - 2) / L1 ** (k - 2), L1,",
         "Certificate(k * (k - 2) ** (k - 2) / L1 ** (k - 2), 0.5 * L1,"),
        ("cat-norm4-L0", "catalogue ||y||^4 L0 x 1/2",
         "Certificate(16 / L1**2, L1, tight=True", "Certificate(8 / L1**2, L1, tight=True"),
        ("cat-exp-L1", "catalogue e^y L1 x 1/2",
         "certificates = (Certificate(0.0, 1.0, tight=True, note=\"f'' = |f'| everywhere\"),)",
         "certificates = (Certificate(0.0, 0.5, tight=True, note=\"f'' = |f'| everywhere\"),)"),
        ("cat-cosh-L0", "catalogue cosh L0 x 1/2",
         "certificates = (Certificate(1.0, 1.0, tight=True, note=\"equality at y = 0\"),)",
         "certificates = (Certificate(0.5, 1.0, tight=True, note=\"equality at y = 0\"),)"),
        ("cat-logistic-L0", "catalogue logistic L0 = 1/4 x 1/2",
         "Certificate(0.25, 0.0, tight=True, note=\"equality at t = 0\"))",
         "Certificate(0.125, 0.0, tight=True, note=\"equality at t = 0\"))"),
        ("cat-logreg-L1", "catalogue logistic regression L1 x 1/2",
         "Certificate(0.0, na, tight=True, note=\"sup as b a^T w -> +inf\")",
         "Certificate(0.0, 0.5 * na, tight=True, note=\"sup as b a^T w -> +inf\")"),
        ("cat-lse-L1", "catalogue log-sum-exp L1 x 1/2",
         "Certificate(0.0, math.sqrt(k) / 2, tight=(k == 2)", "Certificate(0.0, math.sqrt(k) / 4, tight=(k == 2)"),
        ("cat-softmax-L1", "catalogue softmax CE L1 x 1/2",
         "Certificate(0.0, 2.0, tight=False", "Certificate(0.0, 1.0, tight=False"),
    ),
}
# Bound coefficients, in hybridtheory/bounds.py only: caught when code and proofs disagree.
CODE_EDITS = (
    ("b-sigma-G", "Lemma 2 sigma^2: 2 d G_x^2 -> d G_x^2 (sphere)",
     "return 2 * d * G**2 + d**2 * L**2 * mu**2 / 2", "return 1 * d * G**2 + d**2 * L**2 * mu**2 / 2"),
    ("b-sigma-mu", "Lemma 2 sigma^2: mu part x 1/2 (sphere)",
     "return 2 * d * G**2 + d**2 * L**2 * mu**2 / 2", "return 2 * d * G**2 + d**2 * L**2 * mu**2 / 4"),
    ("b-beta", "Lemma 2 beta_mu x 1/2 (sphere)", "        return c.L_x * mu\n", "        return 0.5 * c.L_x * mu\n"),
    ("b-capx", "Theorem 1 cap 1/(8 n Lhat_x) -> 1/(4 n Lhat_x)", "1 / (8 * n * c.L_hat_x)", "1 / (4 * n * c.L_hat_x)"),
    ("b-capy", "Theorem 1 cap 1/(4 n Lhat_y) -> 1/(2 n Lhat_y)", "1 / (4 * n * c.L_hat_y)", "1 / (2 * n * c.L_hat_y)"),
    ("b-Ex", "Lemma 4 E_x: 3 beta^2 -> 1.5 beta^2",
     "+ Lc**2 * eta_y**2 * n**2 * Gy**2 + 3 * b**2", "+ Lc**2 * eta_y**2 * n**2 * Gy**2 + 1.5 * b**2"),
    ("b-Ey", "Lemma 4 E_y: (2/3) L_y^2 term x 1/2",
     "+ (2 / 3) * Ly**2 * eta_y**2 * n**2 * Gy**2", "+ (1 / 3) * Ly**2 * eta_y**2 * n**2 * Gy**2"),
    ("b-W-start", "Theorem 1 W: 4 Delta/(nT) -> 2 Delta/(nT)",
     "return 4 * delta / (n * T) + 4 * c.L_hat_x", "return 2 * delta / (n * T) + 4 * c.L_hat_x"),
    ("b-W-noise", "Theorem 1 W: 4 Lhat_x eta^2 sigma^2 -> 2 ...",
     "(n * T) + 4 * c.L_hat_x * eta_x**2", "(n * T) + 2 * c.L_hat_x * eta_x**2"),
    ("b-cor1-Tc", "Corollary 1: eta_c = m eps^2/(20 ...) -> /(10 ...)",
     "\"T_c\": m * eps**2 / (20 * c.L_hat_x * s2)", "\"T_c\": m * eps**2 / (10 * c.L_hat_x * s2)"),
    ("b-cor1-T", "Corollary 1: T = 20 Delta/(...) -> 10 Delta/(...)",
     "T = math.ceil(20 * delta / (m * n * eta_x * eps**2))", "T = math.ceil(10 * delta / (m * n * eta_x * eps**2))"),
    ("b-cor2-A", "Corollary 2: A = 9 sqrt(...) -> 4.5 sqrt(...)",
     "A = 9 * math.sqrt(delta * c.L_hat_x * s0 / n) / m", "A = 4.5 * math.sqrt(delta * c.L_hat_x * s0 / n) / m"),
    ("b-t2-kappa", "Lemma 2 pointwise kappa = 2d -> d (sphere)",
     "return 2.0 * d, d**2 * L**2 * mu**2 / 2, L * mu", "return 1.0 * d, d**2 * L**2 * mu**2 / 2, L * mu"),
    ("b-t2-rmu", "Lemma 2R r_mu x 1/2 (Rademacher)",
     "return 2.0 * d, d**3 * L**2 * mu**2 / 2, L * mu * d / 2",
     "return 2.0 * d, d**3 * L**2 * mu**2 / 4, L * mu * d / 2"),
    ("b-t2-bias", "Theorem 2 E_2: (5/4) eta n beta^2 -> (5/8)",
     "return (1.25 * eta_x * n * beta**2", "return (0.625 * eta_x * n * beta**2"),
    ("b-t2-noise", "Theorem 2 E_2: 2 kappa varsigma^2 -> kappa varsigma^2",
     "(2 * kappa * varsigma_x_sq + r_mu)", "(1 * kappa * varsigma_x_sq + r_mu)"),
    ("b-t2-cX", "Theorem 2 c_X: 5/2 -> 5/4", "c_X = 2.5 * eta_x * n * Lx**2", "c_X = 1.25 * eta_x * n * Lx**2"),
    ("b-t2-Ax", "Theorem 2 A_x: 3 eta^2 -> 1.5 eta^2",
     "A_x = 3 * eta_x**2 * (P * varsigma_x_sq", "A_x = 1.5 * eta_x**2 * (P * varsigma_x_sq"),
    ("b-t2-Ay", "Theorem 2 A_y: 2 eta^2 -> eta^2",
     "A_y = 2 * eta_y**2 * n**2 * varsigma_y_sq", "A_y = 1 * eta_y**2 * n**2 * varsigma_y_sq"),
    ("b-t2-r", "Theorem 2 r: 12 -> 6", "r = 12 * eta_x**2 * P * Lc**2", "r = 6 * eta_x**2 * P * Lc**2"),
    ("b-t2-s", "Theorem 2 s: 4 -> 2", "s = 4 * eta_y**2 * n**2 * Lc**2", "s = 2 * eta_y**2 * n**2 * Lc**2"),
    ("b-t2-cor3-het", "Corollary 3: eta_c = m q eps^2/(50 ...) -> /(25 ...)",
     "else m * q * eps**2 / (50 * c.L_hat_x * kappa * varsigma_x_sq)",
     "else m * q * eps**2 / (25 * c.L_hat_x * kappa * varsigma_x_sq)"),
    ("b-t2-cor3-T", "Corollary 3: T = 25 Delta/(...) -> 12.5 Delta/(...)",
     "T = math.ceil(25 * delta / (m * n * eta_x * eps**2))\n    return Schedule2",
     "T = math.ceil(12.5 * delta / (m * n * eta_x * eps**2))\n    return Schedule2"),
    ("b-t2-mu", "Corollary 3: mu rule bias weight 25/4 -> 25/8",
     "per_mu_sq = 25 / (4 * m) * b1**2", "per_mu_sq = 25 / (8 * m) * b1**2"),
)
# The theorem itself: (id, what, old, new in bounds.py, old, new in proofs/symbolic.py).
JOINT_EDITS = (
    ("j-t2-descent", "Theorem 2 descent 1/5 -> 2/5 (W_2's factor 5 -> 5/2)",
     "T2_DESCENT = 5 ", "T2_DESCENT = 2.5 ",
     "DESCENT2 = sp.Rational(1, 5)", "DESCENT2 = sp.Rational(2, 5)"),
    ("j-t2-gamma", "Theorem 2 gamma 6/5 -> 3/5",
     "T2_GAMMA = 6 / 5 ", "T2_GAMMA = 3 / 5 ",
     "GAMMA2 = sp.Rational(6, 5)", "GAMMA2 = sp.Rational(3, 5)"),
    ("j-t2-capx", "Theorem 2 cap 1/(16 n Lhat_x) -> 1/(8 n Lhat_x)",
     "T2_CAP_X = 16 ", "T2_CAP_X = 8 ",
     "CAP2_X, CAP2_Q, CAP2_Y = 16, 64, 8", "CAP2_X, CAP2_Q, CAP2_Y = 8, 64, 8"),
    ("j-t2-capq", "Theorem 2 extra cap q/(64 kappa Lhat_x) -> q/(16 kappa Lhat_x)",
     "T2_CAP_Q = 64 ", "T2_CAP_Q = 16 ",
     "CAP2_X, CAP2_Q, CAP2_Y = 16, 64, 8", "CAP2_X, CAP2_Q, CAP2_Y = 16, 16, 8"),
    ("j-t2-capy", "Theorem 2 cap 1/(8 n Lhat_y) -> 1/(2 n Lhat_y)",
     "T2_CAP_Y = 8 ", "T2_CAP_Y = 2 ",
     "CAP2_X, CAP2_Q, CAP2_Y = 16, 64, 8", "CAP2_X, CAP2_Q, CAP2_Y = 16, 64, 2"),
    ("j-t1-capx", "Theorem 1 cap 1/(8 n Lhat_x) -> 1/(2 n Lhat_x)",
     "1 / (8 * n * c.L_hat_x)", "1 / (2 * n * c.L_hat_x)",
     "return 1 / (8 * n * Lhat_x), 1 / (4 * n * Lhat_y)", "return 1 / (2 * n * Lhat_x), 1 / (4 * n * Lhat_y)"),
    ("j-t1-sigma", "Lemma 2 sigma^2: 2 d G_x^2 -> d G_x^2 (sphere, code and SymPy)",
     "return 2 * d * G**2 + d**2 * L**2 * mu**2 / 2", "return 1 * d * G**2 + d**2 * L**2 * mu**2 / 2",
     "return 2 * d * G_x**2 + d**2 * L_x**2 * mu_**2 / 2", "return 1 * d * G_x**2 + d**2 * L_x**2 * mu_**2 / 2"),
)

MUTATIONS: tuple[Mutation, ...] = (
    *(Mutation(mid, what, ((OBJECTIVES + file, old, new),), FAMILY_TESTS)
      for file, rows in FAMILY_EDITS.items() for mid, what, old, new in rows),
    *(Mutation(mid, what, (("hybridtheory/bounds.py", old, new),), BOUND_TESTS) for mid, what, old, new in CODE_EDITS),
    *(Mutation(mid, what, (("hybridtheory/bounds.py", code_old, code_new), ("proofs/symbolic.py", sym_old, sym_new)),
               JOINT_TESTS) for mid, what, code_old, code_new, sym_old, sym_new in JOINT_EDITS),
)


def _copy_tree(dst: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis"))
        else:
            shutil.copy2(src, dst / name)


def apply(mut: Mutation, dst: Path) -> None:
    """Apply ``mut`` inside the copy ``dst``; raises ValueError if a source string is not there exactly once."""
    for file, old, new in mut.edits:
        p = dst / file
        text = p.read_text()
        count = text.count(old)
        if count != 1:
            raise ValueError(f"mutation {mut.id}: {file} contains the source string {count} times (expected 1): "
                             f"{old!r}")
        p.write_text(text.replace(old, new))


def check_applicable(root: Path = ROOT) -> list[str]:
    """Mutation ids whose source strings are not present exactly once in the current tree (empty: all apply)."""
    bad = []
    for mut in MUTATIONS:
        for file, old, _ in mut.edits:
            if (root / file).read_text().count(old) != 1:
                bad.append(mut.id)
                break
    return bad


_FAILED = re.compile(r"^FAILED (.+?)(?: - .*)?$", re.M)
_ERROR = re.compile(r"^ERROR (.+?)(?: - .*)?$", re.M)


def run_one(mut: Mutation, tests: tuple | None = None, timeout: int = 1800) -> dict:
    """Apply ``mut`` to a fresh copy and run its tests with ``-x``; returns {id, caught_by, seconds}."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutate-{mut.id}-") as tmp:
        dst = Path(tmp)
        _copy_tree(dst)
        apply(mut, dst)
        env = {**os.environ, "PYTHONPATH": str(dst), "CI": "true", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "pytest", *(tests or mut.tests), "-x", "-q", "-p", "no:cacheprovider",
               "-o", "addopts=-ra", "--no-header"]
        proc = subprocess.run(cmd, cwd=dst, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    m = _FAILED.search(out) or _ERROR.search(out)
    caught = m.group(1) if m else (None if proc.returncode == 0 else f"pytest exit {proc.returncode}")
    return {"id": mut.id, "what": mut.what, "caught_by": caught, "seconds": round(time.perf_counter() - t0, 1),
            "kind": "family" if mut.tests == FAMILY_TESTS else ("code" if mut.tests == BOUND_TESTS else "joint")}


def table(results: list[dict]) -> str:
    lines = ["| mutation | kind | what | caught by |", "|---|---|---|---|"]
    for r in results:
        by = f"`{r['caught_by']}`" if r["caught_by"] else "**missed**"
        lines.append(f"| `{r['id']}` | {r['kind']} | {r['what']} | {by} |")
    caught = sum(1 for r in results if r["caught_by"])
    lines.append("")
    lines.append(f"{caught}/{len(results)} mutations caught.")
    return "\n".join(lines)


START, END = "<!-- mutation-table:start -->", "<!-- mutation-table:end -->"


def write_readme(text: str, readme: Path = ROOT / "proofs" / "README.md") -> None:
    from hybridtheory.io import atomic_write_text
    s = readme.read_text()
    if START not in s or END not in s:
        raise ValueError(f"{readme} has no {START} ... {END} markers")
    head, rest = s.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, head + START + "\n" + text + "\n" + END + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proofs.mutate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="mutation ids (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--write-readme", action="store_true", help="write the table into proofs/README.md")
    ap.add_argument("--jobs", type=int, default=1, help="mutations run in parallel (default 1)")
    args = ap.parse_args(argv)
    by_id = {m.id: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:18s} {m.what}")
        return 0
    unknown = [i for i in (args.only or []) if i not in by_id]
    if unknown:
        print(f"error: unknown mutation id(s) {unknown}; see --list", file=sys.stderr)
        return 2
    bad = check_applicable()
    if bad:
        print(f"error: the source strings of {bad} are not in the tree exactly once: update MUTATIONS", file=sys.stderr)
        return 2
    muts = [by_id[i] for i in args.only] if args.only else list(MUTATIONS)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        results = []
        for r in ex.map(run_one, muts):
            print(f"{r['id']:18s} {r['caught_by'] or 'MISSED'} ({r['seconds']} s)", flush=True)
            results.append(r)
    text = table(results)
    print(text)
    if args.write_readme:
        if args.only:
            print("error: --write-readme needs the full run (no --only)", file=sys.stderr)
            return 2
        write_readme(text)
    return 0 if all(r["caught_by"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
