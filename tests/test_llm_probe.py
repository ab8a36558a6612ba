"""The probe (llm_experiments.probe): exact constants on a model whose loss is a known quadratic, the HVP
plumbing on a real architecture, and the command end to end on a tiny model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from hybridtheory.hgs_check import autograd_grad_fn, autograd_hvp_fn
from llm_experiments.models import ParamSplit
from llm_experiments.probe import BlockLoss, ProbeSettings, fit_l0_l1, probe_point

DX, DY, N = 12, 5, 8


class QuadraticModel(torch.nn.Module):
    """f_i(x, y) = 1/2 x'Ax + x'Cy + 1/2 y'By + b_i'x + c_i'y: every constant is known in closed form."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        qx = torch.linalg.qr(torch.randn(DX, DX, generator=g, dtype=torch.float64))[0]
        qy = torch.linalg.qr(torch.randn(DY, DY, generator=g, dtype=torch.float64))[0]
        self.eig_a = torch.linspace(-0.5, 2.0, DX, dtype=torch.float64)
        self.eig_a[-1] = 4.0                                   # a clear gap for power iteration
        self.eig_b = torch.tensor([0.3, 0.7, 1.0, 1.2, 3.0], dtype=torch.float64)
        self.register_buffer("A", qx @ torch.diag(self.eig_a) @ qx.T)
        self.register_buffer("B", qy @ torch.diag(self.eig_b) @ qy.T)
        self.register_buffer("C", 0.3 * torch.randn(DX, DY, generator=g, dtype=torch.float64))
        self.register_buffer("bx", torch.randn(N, DX, generator=g, dtype=torch.float64))
        self.register_buffer("by", 0.5 * torch.randn(N, DY, generator=g, dtype=torch.float64))
        self.x = torch.nn.Parameter(torch.randn(DX, generator=g, dtype=torch.float64))
        self.y = torch.nn.Parameter(torch.randn(DY, generator=g, dtype=torch.float64))


def quadratic_loss(model: QuadraticModel, batch: dict) -> torch.Tensor:
    i = batch["input_ids"][:, 0]
    x, y = model.x, model.y
    common = 0.5 * x @ model.A @ x + x @ model.C @ y + 0.5 * y @ model.B @ y
    return common + model.bx[i] @ x + model.by[i] @ y


def _block_loss(model):
    split = ParamSplit(base=[("x", model.x)], adapter=[("y", model.y)])
    idx = torch.arange(N)[:, None]
    batches = [{"input_ids": idx[:5]}, {"input_ids": idx[5:]}]  # uneven batches: F must still be the mean
    return BlockLoss(model, split, batches, loss_fn=quadratic_loss)


def test_probe_returns_the_known_constants_of_a_quadratic():
    model = QuadraticModel()
    settings = ProbeSettings(power_iters=200, hutchinson=200, local_points=2, local_power_steps=40, local_radius=0.5)
    out = probe_point(_block_loss(model), settings)
    A, B, C = model.A, model.B, model.C
    x, y = model.x.detach(), model.y.detach()
    gx = A @ x + C @ y + model.bx.mean(0)
    gy = C.T @ x + B @ y + model.by.mean(0)
    cross = float(torch.linalg.matrix_norm(C, ord=2))
    assert out["loss"] == pytest.approx(float(quadratic_loss(model, {"input_ids": torch.arange(N)[:, None]}).mean().detach()), rel=1e-12)
    assert out["grad_norm"]["base"] == pytest.approx(float(gx.norm()), rel=1e-10)
    assert out["grad_norm"]["adapter"] == pytest.approx(float(gy.norm()), rel=1e-10)
    assert out["hessian"]["base"]["value"] == pytest.approx(4.0, rel=1e-5)
    assert out["hessian"]["base"]["norm"] == pytest.approx(4.0, rel=1e-5)
    assert out["hessian"]["adapter"]["norm"] == pytest.approx(3.0, rel=1e-5)
    assert out["hessian"]["cross"]["norm"] == pytest.approx(cross, rel=1e-5)
    # varsigma^2 = (1/n) sum_i ||b_i - mean b||^2 per block (the point does not matter for a quadratic)
    het_x = float((model.bx - model.bx.mean(0)).square().sum(1).mean())
    het_y = float((model.by - model.by.mean(0)).square().sum(1).mean())
    assert out["heterogeneity"]["base"] == pytest.approx(het_x, rel=1e-9)
    assert out["heterogeneity"]["adapter"] == pytest.approx(het_y, rel=1e-9)
    top_x = max(float((A @ x + C @ y + model.bx[i]).norm()) for i in range(N))
    assert out["max_example_grad"]["base"] == pytest.approx(top_x, rel=1e-10)
    # Hutchinson: unbiased, within 4 standard errors, and the standard error is small
    tr_a = float(model.eig_a.sum())
    t = out["trace"]["base"]
    assert abs(t["mean"] - tr_a) <= 4 * t["stderr"] and t["stderr"] < 0.1 * abs(tr_a)
    assert out["effective_rank"]["base"] == pytest.approx(t["mean"] / 4.0)
    # the toolkit's local estimator (finite differences on a ball) is exact on a quadratic after enough steps
    assert out["local"]["L_x"] == pytest.approx(4.0, rel=1e-4)
    assert out["local"]["L_y"] == pytest.approx(3.0, rel=1e-4)
    assert cross * (1 - 1e-4) <= out["local"]["L_c"] <= max(cross, 4.0) * (1 + 1e-6)
    assert out["dims"] == {"base": DX, "adapter": DY, "examples": N}


def test_l0_l1_fit_of_a_quadratic_is_flat_and_of_a_line_is_the_line():
    model = QuadraticModel()
    bl = _block_loss(model)
    settings = ProbeSettings(power_iters=2, hutchinson=2, local_points=1, local_power_steps=40, local_radius=0.1)
    g, L = [], []
    for shift in (0.0, 1.0, 3.0):
        p = probe_point(bl, settings, ys=[model.y.detach() + shift])
        g.append(p["grad_norm"]["adapter"])
        L.append(p["local"]["L_y"])
    fit = fit_l0_l1(g, L)
    assert fit["L1"] == pytest.approx(0.0, abs=1e-3) and fit["L0"] == pytest.approx(3.0, rel=1e-4)
    line = fit_l0_l1([0.0, 1.0, 2.0, 4.0], [1.0, 3.5, 5.0, 9.0])  # slope 2, one point above the LS line
    assert line["L1"] == pytest.approx(137 / 70)  # sxy / sxx = 17.125 / 8.75
    assert all(line["L0"] + line["L1"] * a >= b - 1e-12 for a, b in zip([0, 1, 2, 4], [1.0, 3.5, 5.0, 9.0]))


def test_hvp_on_a_real_architecture_matches_finite_differences(tok):
    from llm_experiments.data import collate
    from llm_experiments.models import attach_peft, split_parameters
    from llm_experiments.testing import tiny_model

    # OPT: every op runs in float64 (LLaMA's RMSNorm computes in float32, a 1e-7 floor under the differences)
    model = attach_peft(tiny_model("opt", tok, seed=1), "lora", seed=0, lora_r=2).to(torch.float64)
    split = split_parameters(model)
    ids = tok("Zapu melo kira . It was", add_special_tokens=True)["input_ids"] + tok(" great")["input_ids"]
    item = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * (len(ids) - 1) + ids[-1:]}
    bl = BlockLoss(model, split, [collate([item, item], tok.pad_token_id)])
    xs, ys = bl.x0, bl.y0
    gen = torch.Generator().manual_seed(0)
    vx = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in xs]
    vy = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in ys]
    scale = 1 / math.sqrt(sum(float(t.square().sum()) for t in vx + vy))
    vx, vy = [t * scale for t in vx], [t * scale for t in vy]  # a unit vector: central differences O(h^2)
    hx, hy = autograd_hvp_fn(bl.value)(xs, ys, vx, vy)
    grad = autograd_grad_fn(bl.value)
    h = 1e-4
    gp = grad([a + h * b for a, b in zip(xs, vx)], [a + h * b for a, b in zip(ys, vy)])
    gm = grad([a - h * b for a, b in zip(xs, vx)], [a - h * b for a, b in zip(ys, vy)])
    fd = [(a - b) / (2 * h) for a, b in zip(gp[0] + gp[1], gm[0] + gm[1])]
    num = math.sqrt(sum(float((a - b).square().sum()) for a, b in zip(hx + hy, fd)))
    den = math.sqrt(sum(float(a.square().sum()) for a in fd))
    assert den > 0 and num / den < 1e-6
    for p in model.parameters():  # functional_call substituted tensors: the model's own weights got no grads
        assert p.grad is None


def test_probe_command_end_to_end_on_a_tiny_model(tmp_path, tok):
    from llm_experiments.cli import main
    from llm_experiments.testing import generate_task_examples, tiny_model, write_jsonl

    tiny_model("opt", tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    write_jsonl(tmp_path / "data" / "train.jsonl", generate_task_examples("sst2", 40, seed=0))
    write_jsonl(tmp_path / "data" / "validation.jsonl", generate_task_examples("sst2", 10, seed=1))
    out = tmp_path / "probe"
    args = ["probe", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--task", "sst2",
            "--method", "hybrid", "--lora-r", "2", "--n-train", "32", "--n-dev", "4", "--n-eval", "8",
            "--batch-size", "8", "--lr-base=1e-4", "--lr-adapter=1e-2", "--checkpoints", "0", "2", "4",
            "--probe-examples", "8", "--power-iters", "4", "--hutchinson", "2", "--local-points", "1",
            "--local-power-steps", "1", "--output-dir", str(out), "--device", "cpu"]
    assert main(args) == 0
    result = json.loads((out / "probe.json").read_text())
    assert [p["step"] for p in result["checkpoints"]] == [0, 2, 4]
    for p in result["checkpoints"]:
        for v in (p["hessian"]["base"]["norm"], p["hessian"]["cross"]["norm"], p["grad_norm"]["adapter"],
                  p["heterogeneity"]["base"], p["local"]["L_y"]):
            assert math.isfinite(v) and v > 0
    assert result["checkpoints"][0]["displacement"] == {"base": 0.0, "adapter": 0.0}
    assert result["checkpoints"][-1]["displacement"]["base"] > 0
    th = result["theory"]
    assert 0 < th["eta_x_cap"] < math.inf and 0 < th["eta_y_cap"] < math.inf
    assert th["corollary1"]["d_x"]["mu"] > 0
    assert (out / "probe_constants.png").stat().st_size > 0 and (out / "probe_l0l1.png").stat().st_size > 0


def test_probe_command_refuses_a_method_without_adapter(tmp_path, capsys):
    from llm_experiments.cli import main

    code = main(["probe", "--model", str(tmp_path / "nowhere"), "--method", "fo-full", "--checkpoints", "0",
                 "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PEFT" in err[0]
    assert not (tmp_path / "out").exists()
