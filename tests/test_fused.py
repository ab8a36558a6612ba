"""One pass per perturbation: the streamed (piece by piece) and kernel paths equal the whole-tensor path, and
a block with mirrors (16-bit weights written as cast(master + s mu u)) equals the in-place reference step by
step, on synthetic problems and a tiny model."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from hybridtheory.algorithm import Direction, ParamGroup, ZOSettings, directions, hybrid_step
from hybridtheory.algorithm.counter import draw_slice

HAVE_TRITON = importlib.util.find_spec("triton") is not None


@pytest.mark.parametrize("law", ["gaussian", "rademacher", "sphere"])
def test_streamed_pieces_equal_whole_tensor_path(law, monkeypatch):
    """Draw-and-apply in pieces (several pieces per tensor) gives the bits of the whole-tensor path."""
    monkeypatch.setattr(directions, "_PIECE", 1000)
    g = torch.Generator().manual_seed(1)
    block = [torch.randn(37, 61, generator=g), torch.randn(5, generator=g)]
    whole = [t.clone() for t in block]
    d = Direction(2024, law)
    inv_whole = Direction(2024, law, cache={}).inverse_norm(whole)
    inv_streamed = d.inverse_norm(block)
    if law == "sphere":
        torch.testing.assert_close(inv_streamed, inv_whole, rtol=1e-6, atol=0)
    Direction(2024, law, cache={}).add_to(whole, [0.3, torch.tensor(-0.7, dtype=torch.float64)], inv_whole,
                                          scale_first=[0.9, 1.0])
    d.add_to(block, [0.3, torch.tensor(-0.7, dtype=torch.float64)], inv_whole, scale_first=[0.9, 1.0])
    for a, b in zip(block, whole):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mirror_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_write_shifted_rounds_once_and_restores_exactly(mirror_dtype):
    g = torch.Generator().manual_seed(2)
    master = [torch.randn(300, generator=g), torch.randn(7, 9, generator=g)]
    keep = [t.clone() for t in master]
    mirrors = [t.to(mirror_dtype, copy=True) for t in master]
    d = Direction(5, "gaussian")
    u = d.materialize(master)
    for alpha in (1e-3, -1e-3):
        d.write_shifted(master, mirrors, alpha)
        for m, t, uk in zip(mirrors, master, u):
            # cast(master + mu u): the float32 value (add may fuse the multiply), then one cast
            assert torch.equal(m, t.add(uk, alpha=alpha).to(mirror_dtype))
            torch.testing.assert_close(m.double(), (t.double() + alpha * uk.double()).to(mirror_dtype).double(),
                                       rtol=0, atol=float(torch.finfo(mirror_dtype).eps) * 4)
    for a, b in zip(master, keep):
        assert torch.equal(a, b)  # the master is never perturbed


def _quadratic_oracle(block, target):
    class Oracle:
        def loss(self):
            return sum(((t.double() - c) ** 2 * (i + 1)).sum() for i, (t, c) in enumerate(zip(block, target)))

        def loss_and_grad(self, params):
            raise AssertionError("no FO group")
    return Oracle()


@pytest.mark.parametrize("law", ["gaussian", "rademacher", "sphere"])
@pytest.mark.parametrize("difference", ["central", "forward"])
def test_mirrored_step_equals_in_place_step(law, difference):
    """float64 mirrors of a float64 master: the mirrored path (never perturbing the master) follows the
    in-place path (perturb, restore, update) step by step up to its restore rounding."""
    g = torch.Generator().manual_seed(3)
    start = [torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(11, generator=g, dtype=torch.float64)]
    target = [torch.randn_like(t) for t in start]
    ref = [t.clone() for t in start]
    master = [t.clone() for t in start]
    model = [t.clone() for t in start]  # what the loss reads on the mirrored path
    zo = ZOSettings(mu=1e-4, law=law, difference=difference, queries=2, dtype=torch.float64)
    for step in range(5):
        i1 = hybrid_step([ParamGroup("x", ref, 0.01, "zo", weight_decay=0.1)], _quadratic_oracle(ref, target), zo,
                         100 + step)
        i2 = hybrid_step([ParamGroup("x", master, 0.01, "zo", weight_decay=0.1, mirrors=model)],
                         _quadratic_oracle(model, target), zo, 100 + step)
        # the in-place path's perturb/restore rounding (~1e-16 |x|) enters c as ~1e-16 |grad| |x| / mu ~ 1e-11
        torch.testing.assert_close(i2.records[0].coeff, i1.records[0].coeff, rtol=1e-8, atol=1e-10)
        for a, b, m in zip(master, ref, model):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
            assert torch.equal(m, a)  # mirror = cast(master) after every step


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (the gpu extra)")
@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_axpy_kernel_equals_eager(law, monkeypatch):
    """The fused kernel (u in registers, one read and write of x, cast into the mirror) against the eager
    path: under TRITON_INTERPRET=1 on CPU, or on CUDA."""
    from hybridtheory.algorithm import kernels
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(1500, generator=g)
    for dtype, mdtype in [(torch.float32, torch.bfloat16), (torch.float64, torch.float32)]:
        x = x0.to(dtype).to(device, copy=True)
        mirror = torch.zeros(1500, dtype=mdtype, device=device)
        coeff = torch.tensor(-0.25, dtype=torch.float64, device=device)
        kernels.axpy(x, mirror, 77, 300, law, coeff, keep=0.5)
        u = draw_slice(77, 300, 1500, law, torch.float64 if dtype == torch.float64 else torch.float32)
        want = 0.5 * x0.to(dtype) + (-0.25) * u.to(dtype)
        tol = dict(rtol=0, atol=1e-6) if dtype == torch.float32 else dict(rtol=0, atol=2e-6)
        torch.testing.assert_close(x.cpu(), want, **tol)
        # CUDA rounds the cast to nearest; Triton's interpreter truncates float32 -> bfloat16 (one ulp)
        ulp = 0 if device == "cuda" else float(torch.finfo(mdtype).eps)
        torch.testing.assert_close(mirror.cpu().double(), x.cpu().to(mdtype).double(), rtol=ulp, atol=0)
        # perturbation only: the master is untouched, the mirror gets cast(x + a u)
        before = x.clone()
        kernels.axpy(x, mirror, 77, 300, law, 1e-3, write_x=False)
        assert torch.equal(x, before)
        torch.testing.assert_close(mirror.cpu().double(), (before.cpu() + 1e-3 * u.to(dtype)).to(mdtype).double(),
                                   rtol=ulp, atol=1e-6)


@pytest.mark.llm
def test_tiny_model_mirrored_master_equals_in_place_reference():
    """A tiny OPT (float64, so rounding is far below what is compared) trained by zo-full and by hybrid: weights
    written from a master (mirrors, the master never perturbed) against the in-place path (no master), step by
    step: losses and ZO displacements agree; the model's weights equal cast(master) after every step."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from llm_experiments.config import TrainConfig
    from llm_experiments.data import collate_candidates, encode_for_training
    from llm_experiments.models import attach_peft, split_parameters
    from llm_experiments.scoring import lm_loss
    from llm_experiments.tasks import get_task
    from llm_experiments.testing import generate_task_examples, tiny_model, tiny_tokenizer
    from llm_experiments.trainer import Trainer

    tok = tiny_tokenizer()
    enc = encode_for_training(generate_task_examples("sst2", 16, seed=0), tok, get_task("sst2"), 64, objective="lm")
    batch = [collate_candidates(enc[:8], tok.pad_token_id)]
    for method in ("zo-full", "hybrid"):
        trainers = []
        for master in ("none", "float64"):
            cfg = TrainConfig(model="tiny", method=method, peft="lora", batch_size=8, steps=3, mu=1e-3,
                              lr_base=1e-4, base_master=master, progress=False, zo_difference="central").validate()
            model = tiny_model("opt", tok).double()
            if cfg.uses_peft:
                model = attach_peft(model, cfg.peft)
            trainers.append(Trainer(model, split_parameters(model), cfg, n_train=16, device=torch.device("cpu"),
                                    loss_fn=lm_loss))
        ref, fused = trainers
        assert fused.master_pairs and not ref.master_pairs
        start = [p.detach().clone() for p in ref.groups[0].params]
        for _ in range(3):
            m_ref, m_fused = ref.step(batch), fused.step(batch)
            assert m_fused["loss"] == pytest.approx(m_ref["loss"], rel=1e-12)
            for (w, master), p, p0 in zip(fused.master_pairs, ref.groups[0].params, start):
                assert torch.equal(w, master)  # the model holds cast(master) (identity here) after the step
                torch.testing.assert_close(master - p0, p - p0, rtol=1e-6, atol=1e-12)
        moved = max(float((p - p0).abs().max()) for p, p0 in zip(ref.groups[0].params, start))
        assert moved > 1e-6  # the comparison is not vacuous


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("law", ["gaussian", "rademacher", "sphere"])
def test_cuda_step_equals_cpu_step(law):
    """The CUDA path (Triton kernel when installed, else torch pieces) against the CPU path: one perturbation
    written into bf16 mirrors and one update with decay, on a block of a few tensors and on its shards."""
    g = torch.Generator().manual_seed(6)
    cpu = [torch.randn(1000, 33, generator=g), torch.randn(77, generator=g)]
    gpu = [t.cuda() for t in cpu]
    mir_cpu = [t.to(torch.bfloat16) for t in cpu]
    mir_gpu = [t.to(torch.bfloat16) for t in gpu]
    d = Direction(31337, law)
    d.write_shifted(cpu, mir_cpu, 1e-3)
    d.write_shifted(gpu, mir_gpu, 1e-3)
    for a, b in zip(mir_cpu, mir_gpu):
        torch.testing.assert_close(b.cpu().double(), a.double(), rtol=float(torch.finfo(torch.bfloat16).eps), atol=0)
    coeff = torch.tensor(0.37, dtype=torch.float64)
    d.add_to(cpu, [coeff * -0.1] * 2, scale_first=[0.99, 1.0], mirrors=mir_cpu)
    d.add_to(gpu, [coeff.cuda() * -0.1] * 2, scale_first=[0.99, 1.0], mirrors=mir_gpu)
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-6)
    # shards of the CUDA tensors (offsets) draw exactly their entries of the whole direction
    full = Direction(7, law).materialize(gpu)
    cut = 12345
    flat = gpu[0].view(-1)
    parts = [Direction(7, law, offsets=(0,)).materialize([flat[:cut]])[0],
             Direction(7, law, offsets=(cut,)).materialize([flat[cut:]])[0]]
    if law != "sphere":
        assert torch.equal(torch.cat(parts), full[0].view(-1))
