"""Public family registration: a family defined in this test file only works with make, the runner,
epoch_complexity (both schedules), `hybridtheory schedule` and `hybridtheory check`."""
from __future__ import annotations

import json
import math

import pytest
import torch

from hybridtheory import bounds, cli, hgs_check
from hybridtheory.assumptions import HGSConstants
from hybridtheory.measurement import epoch_complexity
from hybridtheory.objectives import FAMILIES, families, make, register, unregister
from hybridtheory.objectives.base import DTYPE, FiniteSumProblem
from hybridtheory.runner import RunConfig, run


class ShiftedQuartic(FiniteSumProblem):
    r"""f_i(x, y) = 2 eps (sqrt(1 + x_1^2) - 1) + a_i x_2 + (1/2) y^2 with a_i = +-a: L_x = 1 (eps <= 1/2),
    L_c = 0, (L0, L1) = (1, 0), G_x = sqrt(4 eps^2 + a^2), no G_y; heterogeneity a^2 in x, 0 in y."""

    name = "shifted"

    def __init__(self, eps: float = 0.3, a: float = 0.5, n: int = 2, dx: int = 2):
        self.eps, self.a, self.n, self.dx, self.dy = eps, a, n, dx, 1
        self._a = a * torch.where(torch.arange(n) < n // 2, 1.0, -1.0).to(DTYPE)

    def value(self, j, x, y):
        t = x[..., 0]
        return 2 * self.eps * (torch.sqrt(1 + t * t) - 1) + self._a[j] * x[..., 1] + 0.5 * y[..., 0] ** 2

    def grad(self, j, x, y):
        t = x[..., 0]
        g1, g2 = torch.broadcast_tensors(2 * self.eps * t * torch.rsqrt(1 + t * t), self._a[j])
        parts = [g1.unsqueeze(-1), g2.unsqueeze(-1)] + ([g1.new_zeros(g1.shape + (self.dx - 2,))] if self.dx > 2 else [])
        return torch.cat(parts, -1), torch.broadcast_tensors(y, torch.cat(parts, -1)[..., :1])[0].clone()

    def constants(self):
        return HGSConstants(L_x=1.0, L_c=0.0, L0=1.0, L1=0.0, G_x=math.sqrt(4 * self.eps**2 + self.a**2),
                            G_y=None, F_lower=0.0, region="global (G_y: none)", source="tests/test_registration.py",
                            varsigma_x_sq=self.a**2, varsigma_y_sq=0.0)

    def initial_point(self, batch_shape=()):
        x = torch.zeros(tuple(batch_shape) + (self.dx,), dtype=DTYPE)
        x[..., 0] = 2.0
        return x, torch.ones(tuple(batch_shape) + (1,), dtype=DTYPE)


@pytest.fixture
def shifted():
    register("shifted", ShiftedQuartic)
    yield
    unregister("shifted")


def test_registered_family_works_everywhere(shifted, capsys):
    assert "shifted" in families() and "shifted" not in FAMILIES   # a name imported before registering is a snapshot
    import hybridtheory.objectives as O
    assert "shifted" in O.FAMILIES          # the live view, not a snapshot taken at import
    P = make("shifted", eps=0.4)
    traj = run(P, RunConfig(method="hybrid", eta_x=1e-2, eta_y=1e-2, mu=1e-3, epochs=20, replicates=4))
    assert traj.grad_sq[-1].mean() < traj.grad_sq[0].mean()
    m = epoch_complexity("shifted", [0.45, 0.4], {"a": 0.2}, replicates=2, schedule="corollary3", n_boot=10)
    assert m.details["all_reached"] and m.details["ratio_max"] <= 1
    # Corollary 1 needs (A3): this family has no G_y, so the schedule refuses with a clear error
    with pytest.raises(bounds.BoundError, match="bounded gradients"):
        epoch_complexity("shifted", [0.4], replicates=1)
    # hybridtheory check lists it and reports its soundness rows
    assert hgs_check.main(["--list"]) == 0
    assert "shifted" in capsys.readouterr().out
    rows = [r for r in hgs_check.report(n_pairs=200, n_hess=2) if r["family"] == "shifted"]
    vals = {r["what"]: r["value"] for r in rows if r["kind"] == "soundness"}
    assert set(vals) == {"H1", "H2", "G_x", "G_y"} and math.isnan(vals.pop("G_y"))   # no G_y certified
    assert all(v <= 1 + 1e-9 for v in vals.values())


def test_registration_errors(shifted):
    with pytest.raises(ValueError, match="already registered"):
        register("shifted", ShiftedQuartic)
    register("shifted", ShiftedQuartic, replace=True)
    with pytest.raises(ValueError, match="built-in"):
        register("ramp", ShiftedQuartic, replace=True)
    with pytest.raises(TypeError, match="FiniteSumProblem"):
        register("other", dict)
    with pytest.raises(ValueError, match="unknown problem family"):
        make("never-registered")


def test_schedule_cli_with_import_and_registered_family(shifted, capsys):
    assert cli.main(["schedule", "hyb", "--eps", "0.1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["T"] >= 1
    # a registered family without (A3): one clear line, exit 2
    assert cli.main(["schedule", "shifted", "--eps", "0.1"]) == 2
    assert "bounded gradients" in capsys.readouterr().err
    assert cli.main(["schedule", "hyb", "--eps", "0.1", "--import", "no_such_module_xyz"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err
