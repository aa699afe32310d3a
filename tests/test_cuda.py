"""The CUDA path: fp32 agreement with the CPU, bf16 autocast, the fused attention kernels, ECD
and the trainer on a GPU, and DDP over NCCL when there are two GPUs.

Marked ``cuda`` and skipped cleanly without a GPU (CI has none); ``benchmarks/gpu_check.sh``
runs them on a lent GPU machine. ``SYMBREAK_TEST_DEVICE=cpu`` runs the same code on the CPU
(everything but the CUDA-only kernel and NCCL checks), which is how the tests' own logic is
checked on a machine without a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from symbreak.config import Config
from symbreak.data import load_config
from symbreak.model import GPT
from symbreak.optim import build_optimizer, optimizer_step

DEVICE = os.environ.get("SYMBREAK_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TINY = ["model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.block_size=64",
        "sb.q=true", "sb.v=true", "sb.v_mean=0.5"]  # fmt: skip


def _model(extra: list[str] = ()) -> tuple[Config, GPT]:
    cfg = load_config(None, [*TINY, *extra])
    torch.manual_seed(0)
    return cfg, GPT(cfg.model, cfg.sb)


def _batch(cfg: Config, B: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    w = torch.randint(0, 50257, (B, cfg.model.block_size + 1), generator=g)
    return w[:, :-1], w[:, 1:]


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 comparisons need true fp32 matmuls (TF32 would round to 10 mantissa bits)."""
    if not ON_CUDA:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("mask", ["causal", "bidirectional"])
def test_fp32_logits_and_loss_match_the_cpu(mask: str) -> None:
    cfg, model = _model([f"model.mask={mask}"])
    model.eval()
    x, y = _batch(cfg)
    ref_logits = model(x)[0]
    ref_loss = model(x, y)[1]
    dev = model.to(DEVICE)
    logits = dev(x.to(DEVICE))[0].cpu()
    loss = dev(x.to(DEVICE), y.to(DEVICE))[1].cpu()
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)


def test_bf16_autocast_step_tracks_fp32() -> None:
    """A training step under bf16 autocast: finite, its loss within bf16 rounding of fp32's,
    and the parameter update pointing the same way (cosine > 0.99)."""
    from symbreak.device import autocast

    cfg, model = _model()
    model.to(DEVICE).train()
    model.pin_biases(0)
    x, y = (t.to(DEVICE) for t in _batch(cfg))
    _, loss32 = model(x, y)
    loss32.backward()
    g32 = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    with autocast(torch.device(DEVICE), torch.bfloat16):
        _, loss16 = model(x, y)
    loss16.backward()
    g16 = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(loss16) and loss16.item() == pytest.approx(loss32.item(), rel=2e-2)
    assert torch.nn.functional.cosine_similarity(g16.float(), g32, dim=0).item() > 0.99


def test_compiled_loss_kernel_tracks_the_eager_one_in_bf16() -> None:
    """train.loss_kernel=compiled on the device (Triton on CUDA): the loss and the gradients
    of a bf16 training forward match the eager kernel's."""
    from symbreak.device import autocast

    cfg, model = _model()
    model.to(DEVICE).train()
    model.pin_biases(0)
    x, y = (t.to(DEVICE) for t in _batch(cfg))
    res = {}
    for kernel in ("eager", "compiled"):
        model.loss_kernel = kernel
        model.zero_grad(set_to_none=True)
        with autocast(torch.device(DEVICE), torch.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        res[kernel] = (loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert res["compiled"][0].item() == pytest.approx(res["eager"][0].item(), rel=1e-4)
    # the two round softmax - onehot to bf16 from fp32 values that may differ in the last bit,
    # so single elements move by a bf16 ulp; the gradient as a whole agrees to ~1e-4
    g_c, g_e = res["compiled"][1], res["eager"][1]
    assert ((g_c - g_e).norm() / g_e.norm()).item() < 1e-3


@pytest.mark.skipif(not ON_CUDA, reason="the flash kernel is CUDA-only")
def test_attention_runs_on_the_flash_kernel_in_bf16() -> None:
    """Adding bQ/bV before scaled_dot_product_attention keeps the fused kernel usable: with
    only FLASH_ATTENTION allowed the forward and backward still run (it raises otherwise)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg, model = _model()
    model.to(DEVICE).train()
    x, y = (t.to(DEVICE) for t in _batch(cfg))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", torch.bfloat16):
        _, loss = model(x, y)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ["adamw", "ecd"])
def test_optimizer_step_matches_the_cpu(name: str) -> None:
    """One step of AdamW (CUDA: the fused kernel) and of ECD gives the CPU's parameters."""
    extra = [f"optim.name={name}", "optim.lr=1e-3" if name == "adamw" else "optim.lr=0.3"]
    if name == "ecd":
        extra += ["optim.F0=0.0", "optim.nu=0.0"]
    cfg, cpu_model = _model(extra)
    _, dev_model = _model(extra)
    dev_model.to(DEVICE)
    x, y = _batch(cfg)
    for model, dev in ((cpu_model, "cpu"), (dev_model, DEVICE)):
        model.train()
        model.pin_biases(0)
        opt = build_optimizer(model, cfg.optim, seed=0)
        _, loss = model(x.to(dev), y.to(dev))
        loss.backward()
        optimizer_step(opt, loss.detach())
    for (k, a), b in zip(cpu_model.state_dict().items(), dev_model.state_dict().values(),
                         strict=True):  # fmt: skip
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5, msg=k)


def test_training_run_on_the_device_with_bf16_and_resume(tmp_path) -> None:
    """The trainer on the device (bf16 autocast, bQ+bV, ECD): finite losses, a checkpoint that
    loads on the CPU, and a resumed run that reaches the same step."""
    from symbreak.runs import load_run
    from symbreak.train.trainer import train

    args = [*TINY, "optim.name=ecd", "optim.lr=0.3", f"train.device={DEVICE}",
            "train.dtype=" + ("bf16" if ON_CUDA else "fp32"), "train.batch_size=4",
            "train.max_steps=4", "train.eval_tokens=512", "train.progress=false",
            "train.checkpoint_every=2", f"train.out_dir={tmp_path}", "train.name=r",
            f"data.cache_dir={tmp_path / 'c'}"]  # fmt: skip
    summary = train(load_config(None, [*args, "train.max_steps=2"]))
    assert summary.steps == 2
    summary = train(load_config(None, args))  # resumes from step 2
    assert summary.steps == 4 and torch.isfinite(torch.tensor(summary.final_val_loss))
    run = load_run(tmp_path / "r", device="cpu")
    assert run.step == 4 and next(run.model.parameters()).device.type == "cpu"


@pytest.mark.skipif(
    not ON_CUDA or torch.cuda.device_count() < 2, reason="DDP over NCCL needs two GPUs"
)
def test_ddp_over_nccl_two_gpus(tmp_path) -> None:
    args = [*TINY, "train.batch_size=4", "train.max_steps=3", "train.eval_tokens=512",
            "train.progress=false", "train.device=cuda", f"train.out_dir={tmp_path}",
            "train.name=ddp", f"data.cache_dir={tmp_path / 'c'}"]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "symbreak", "train", *args],
        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "x 2 processes" in out.stdout
