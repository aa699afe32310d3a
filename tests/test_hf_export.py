"""``symbreak export --format hf``: the loaded export computes symbreak's eval-mode logits."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from symbreak.cli import main
from symbreak.data import GPT2_VOCAB_SIZE, encode
from symbreak.errors import SymbreakError
from symbreak.integrations.export import export_hf
from symbreak.model import GPT

# Offline, and remote code copied into a private directory instead of ~/.cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="symbreak-hf-modules-"))


SIZE = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16}


@pytest.fixture
def random_run(tmp_path: Path, make_run):
    """``random_run(name, model, sb)``: a tiny run directory and its model, every weight
    (biases, LayerNorms, slopes, learned sb) random, so a wrong mapping cannot hide behind zeros
    or ones."""

    def build(name: str, model: dict, sb: dict) -> tuple[Path, GPT]:
        run = make_run(tmp_path, name, model={**SIZE, **model}, sb=sb,
                       checkpoints=((3, 5.0),), noise=0.3)  # fmt: skip
        return run.path, run.model

    return build


def load_export(out: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True).eval()


CASES = {
    "gelu-plain": ({"activation": "gelu"}, {}),
    "gelu-qv-batch-perhead": ({"activation": "gelu"}, {"q": True, "v": True, "per_head": True}),
    "prelu-qv-batch": ({}, {"q": True, "v": True, "v_mean": 0.5}),
    "prelu-qkv-learned-perhead": (  # learned per-head vectors differ in every head
        {},
        {"q": True, "k": True, "v": True, "mode": "learned", "per_head": True},
    ),
    "gelu-qv-4components-mean": (  # folds the average of the component means
        {"activation": "gelu"},
        {"q": True, "v": True, "v_mean": 0.5, "q_components": 4, "per_head": True},
    ),
    "gelu-qv-fixed-nobias-nope": (
        {"activation": "gelu", "bias": False, "pos_encoding": "none"},
        {"q": True, "v": True, "mode": "fixed"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_export_logits_equal_symbreak(tmp_path: Path, case: str, random_run) -> None:
    model_kw, sb = CASES[case]
    run_dir, gpt = random_run(case, model_kw, sb)
    res = export_hf(run_dir, tmp_path / "hf")
    hf = load_export(res.out)
    is_gelu = model_kw.get("activation") == "gelu"
    assert type(hf).__name__ == ("GPT2LMHeadModel" if is_gelu else "SymbreakGPT2LMHeadModel")
    assert hf.config.vocab_size == GPT2_VOCAB_SIZE
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = gpt(idx)[0][..., :GPT2_VOCAB_SIZE]
        theirs = hf(idx).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    meta = json.loads((res.out / "symbreak_export.json").read_text())
    assert meta["step"] == 3 and meta["folded_biases"] == res.folded


def test_export_sb_eval_zero_drops_the_biases(tmp_path: Path, random_run) -> None:
    run_dir, gpt = random_run("z", {"activation": "gelu"}, {"q": True, "v": True})
    hf = load_export(export_hf(run_dir, tmp_path / "hf", sb_eval="zero").out)
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with_mean = gpt(idx)[0][..., :GPT2_VOCAB_SIZE]
        for s in gpt.bias_samplers():
            s.eval_mode = "zero"
        without = gpt(idx)[0][..., :GPT2_VOCAB_SIZE]
        theirs = hf(idx).logits
    torch.testing.assert_close(theirs, without, atol=1e-5, rtol=0)
    assert (theirs - with_mean).abs().max() > 1e-3  # the folded biases do matter


def test_export_generate_and_tokenizer(tmp_path: Path, random_run) -> None:
    from transformers import AutoTokenizer

    run_dir, gpt = random_run("r", {}, {"q": True, "v": True})
    assert main(["export", str(run_dir), "--out", str(tmp_path / "hf")]) == 0
    plain = tmp_path / "plain"
    plain.write_text("")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()}
    assert modes["model.safetensors"] == plain.stat().st_mode & 0o777, modes  # not private
    assert len(set(modes.values())) == 1, modes
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "To be, or not to be: that is the question.\n  Whether 'tis nobler"
    assert tok(text)["input_ids"] == encode(text)
    assert tok.decode(encode(text)) == text
    hf = load_export(tmp_path / "hf")
    prompt = torch.tensor([encode("To be, or")])
    out = hf.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape == (1, prompt.shape[1] + 5)
    # Greedy decoding agrees with symbreak's own argmax, token by token.
    ids = prompt
    with torch.no_grad():
        for _ in range(5):
            nxt = gpt(ids)[0][0, -1, :GPT2_VOCAB_SIZE].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    assert torch.equal(out, ids)


def test_export_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str], random_run) -> None:
    run_dir, _ = random_run("s", {}, {"q": True, "eval": "sample"})
    with pytest.raises(SymbreakError, match="--sb-eval mean"):
        export_hf(run_dir, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    export_hf(run_dir, tmp_path / "a", sb_eval="mean")  # allowed when asked for
    argv = ["export", str(run_dir), "--out", str(tmp_path / "a"), "--sb-eval", "mean"]
    assert main(argv) == 2  # --out is not empty
    assert "already exists" in capsys.readouterr().err
    multi, _ = random_run("m", {}, {"q": True, "q_components": 4, "eval": "mixture"})
    assert main(["export", str(multi), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "4 bias components" in err and "--sb-eval mean" in err and err.count("\n") == 1
    char_run, _ = random_run("c", {"vocab_size": 65}, {})
    assert main(["export", str(char_run), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "GPT-2's BPE" in err and err.count("\n") == 1


@pytest.mark.slow
def test_export_past_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, random_run):
    """Not a mock: the kernel refuses the write (RLIMIT_FSIZE, SIGXFSZ ignored -> EFBIG), which
    safetensors reports as its own error type, not an OSError."""
    import resource
    import signal
    import subprocess
    import sys

    run_dir, _ = random_run("gelu", {"activation": "gelu"}, {"q": True})

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "export"
    before = set(tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "symbreak", "export", str(run_dir), "--out", str(out)],
        capture_output=True, text=True, timeout=300, preexec_fn=limit,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert line.startswith(f"error: could not write the export {out} (File too large)")
    assert "ulimit -f" in line and ".tmp" not in line
    assert set(tmp_path.iterdir()) == before  # no export, no temporary directory
