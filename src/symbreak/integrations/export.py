"""``symbreak export RUN_DIR --format hf --out DIR``: a run as a Hugging Face model directory.

At evaluation with mean biases, bQ and bV are constant q and v biases, so they fold exactly into
``c_attn.bias`` (see :mod:`symbreak.train.gpt2_weights`) and the model becomes plain
GPT-2 with qkv biases:

* GELU run -> a standard ``GPT2LMHeadModel`` directory (``config.json``, ``model.safetensors``),
  loadable by ``AutoModelForCausalLM.from_pretrained(DIR)`` with no symbreak installed.
* PReLU run -> the same plus ``modeling_symbreak_gpt2.py`` (GPT-2 with a per-feature PReLU MLP),
  registered in ``config.json``'s ``auto_map``; load it with ``trust_remote_code=True``.
* Both get GPT-2's tokenizer (``vocab.json``, ``merges.txt``, ``tokenizer.json``) built from
  the installed BPE files, so ``AutoTokenizer.from_pretrained(DIR)`` works offline, and
  ``symbreak_export.json`` saying which run, checkpoint and biases the export came from.

The vocabulary is cut from symbreak's padded 50304 rows to GPT-2's 50257: the logits of every
real token are unchanged, and the padding rows (never a target, so never meaningful) are gone,
which keeps the export shape-compatible with every GPT-2 tool. Log-probabilities differ from
symbreak's by the log of the probability the padding rows held, which training drives to ~0.

The directory is written beside ``--out`` under a temporary name and renamed into place, so a
failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from symbreak.atomic import apply_umask, write_text_atomic
from symbreak.errors import SymbreakError, io_errno, write_failure
from symbreak.outputs import portable_path

if TYPE_CHECKING:
    import torch

HF_INSTALL_HINT = "install the Hugging Face extra: pip install 'symbreak[hf]'"
REMOTE_MODULE = "modeling_symbreak_gpt2"
EXPORT_SB_EVAL = ("mean", "zero")


class ExportError(SymbreakError):
    """A run that cannot be exported as asked."""


@dataclass
class ExportResult:
    out: Path
    step: int
    architecture: str
    folded: list[str]
    vocab_size: int


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ExportError(f"this needs the transformers package; {HF_INSTALL_HINT}") from None
    return transformers


def check_exportable(cfg: Any, sb_eval: str | None) -> None:
    """Refuse, with one line, anything the HF model would not reproduce exactly."""
    from symbreak.data.tokenizer import GPT2_VOCAB_SIZE

    m = cfg.model
    if getattr(m, "mlp", "dense") != "dense":
        raise ExportError(
            f"model.mlp={m.mlp} (a mixture of experts) has no Hugging Face GPT-2 equivalent; "
            "only dense-MLP runs can be exported"
        )
    if getattr(m, "mlp_hidden", 0) not in (0, 4 * m.n_embd):
        raise ExportError(
            f"model.mlp_hidden={m.mlp_hidden} is not GPT-2's 4 x n_embd = {4 * m.n_embd}; "
            "only runs of GPT-2's MLP width can be exported"
        )
    if sb_eval is not None and sb_eval not in EXPORT_SB_EVAL:
        raise ExportError(f"--sb-eval {sb_eval} cannot be exported; use mean or zero")
    k = max(getattr(cfg.sb, "q_components", 1), getattr(cfg.sb, "v_components", 1))
    if k > 1 and (sb_eval or cfg.sb.eval) != "mean":
        raise ExportError(
            f"the run has {k} bias components and sb.eval={sb_eval or cfg.sb.eval}, which one "
            "set of weights cannot reproduce; pass --sb-eval mean to fold the average of the "
            "component means, or evaluate it in symbreak (symbreak eval/sample --sb-eval mixture)"
        )
    if (sb_eval or cfg.sb.eval) == "sample":
        raise ExportError(
            "the run evaluates with sb.eval=sample (a new bias draw per forward), which cannot be "
            "folded into fixed weights; pass --sb-eval mean to export with the mean biases"
        )
    if m.vocab_size < GPT2_VOCAB_SIZE or getattr(cfg.data, "source", "") in (
        "shakespeare_char",
        "addition",
    ):
        raise ExportError(
            f"model.vocab_size={m.vocab_size} is not GPT-2's BPE vocabulary (a char-level or "
            "custom-token run); only GPT-2 BPE runs can be exported"
        )
    unsupported = [
        (m.pos_encoding not in ("learned", "none"), f"model.pos_encoding={m.pos_encoding}"),
        (m.mask != "causal", f"model.mask={m.mask}"),
        (m.residual != "both", f"model.residual={m.residual}"),
        (m.activation not in ("gelu", "prelu"), f"model.activation={m.activation}"),
    ]
    for bad, what in unsupported:
        if bad:
            raise ExportError(f"{what} has no Hugging Face GPT-2 equivalent; it cannot be exported")


def export_hf(
    run_dir: str | Path,
    out: str | Path,
    checkpoint: str = "latest",
    sb_eval: str | None = None,
) -> ExportResult:
    """Write ``run_dir``'s checkpoint (``latest``, ``best`` or a step number) as a Hugging Face
    model directory at ``out``; ``sb_eval`` (``mean`` or ``zero``) overrides the run's
    ``sb.eval``. What ``symbreak export`` does.

    >>> from symbreak.integrations import export_hf
    >>> res = export_hf("runs/demo", "exports/demo")  # doctest: +SKIP
    >>> res.architecture, res.folded  # doctest: +SKIP
    ('SymbreakGPT2LMHeadModel (remote code)', ['bQ', 'bV'])
    """
    from symbreak.runs import load_run, load_run_config

    run_dir, out = Path(run_dir), Path(out)
    cfg = load_run_config(run_dir)
    check_exportable(cfg, sb_eval)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} already exists and is not empty; choose a new directory")
    require_transformers()
    run = load_run(run_dir, checkpoint, sb_eval=sb_eval, device="cpu")
    from symbreak.data.tokenizer import GPT2_VOCAB_SIZE
    from symbreak.train.gpt2_weights import to_hf_gpt2

    m = run.cfg.model
    sd = to_hf_gpt2(run.model, GPT2_VOCAB_SIZE)
    model = build_hf_model(run.cfg, GPT2_VOCAB_SIZE)
    model.load_state_dict(sd, strict=True)
    sb = run.cfg.sb
    folded = [f"b{k.upper()}" for k in ("q", "k", "v") if getattr(sb, k) and sb.eval != "zero"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one line of output, not a progress bar per file
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if m.activation == "prelu":
            from symbreak.integrations import hf_remote

            shutil.copy(Path(hf_remote.__file__).parent / f"{REMOTE_MODULE}.py", tmp)
        write_tokenizer(tmp, m.block_size)
        provenance = {
            "format": "hf",
            "run_dir": portable_path(run_dir, out),
            "checkpoint": run.checkpoint.name,
            "step": run.step,
            "sb_eval": run.cfg.sb.eval,
            "folded_biases": folded,
            "sb": run.cfg.to_dict()["sb"],
            "model": run.cfg.to_dict()["model"],
            "vocab": f"first {GPT2_VOCAB_SIZE} of {m.vocab_size} rows (the rest are padding)",
        }
        write_text_atomic(tmp / "symbreak_export.json", json.dumps(provenance, indent=1) + "\n")
        # save_pretrained writes model.safetensors private (0600) like any temporary file;
        # the export is for sharing, so every file gets the mode a plain write would have
        for path in (tmp, *tmp.rglob("*")):
            apply_umask(path)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if io_errno(e) is not None:  # a full disk, a file-size limit: one line, nothing left
            raise SymbreakError(write_failure(f"the export {out}", e)) from None
        raise
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    arch = "GPT2LMHeadModel" if m.activation == "gelu" else "SymbreakGPT2LMHeadModel (remote code)"
    return ExportResult(out, run.step, arch, folded, GPT2_VOCAB_SIZE)


def build_hf_model(cfg: Any, vocab_size: int) -> torch.nn.Module:
    """An (untrained) HF model of the run's shape: GPT-2, or GPT-2 with the PReLU MLP."""
    require_transformers()
    from transformers import GPT2Config, GPT2LMHeadModel

    from symbreak.data.tokenizer import EOT_ID

    m = cfg.model
    kw: dict[str, Any] = {
        "vocab_size": vocab_size,
        "n_positions": m.block_size,
        "n_embd": m.n_embd,
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_inner": None,  # 4 * n_embd, as symbreak
        "activation_function": "gelu_new",  # the tanh form, symbreak's nn.GELU("tanh")
        "resid_pdrop": m.dropout,
        "embd_pdrop": m.dropout,
        "attn_pdrop": m.dropout,
        "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default, what symbreak uses
        "bos_token_id": EOT_ID,
        "eos_token_id": EOT_ID,
        "tie_word_embeddings": True,
    }
    if m.activation == "gelu":
        return GPT2LMHeadModel(GPT2Config(**kw))
    from symbreak.integrations.hf_remote.modeling_symbreak_gpt2 import (
        SymbreakGPT2Config,
        SymbreakGPT2LMHeadModel,
    )

    config = SymbreakGPT2Config(mlp_activation="prelu", **kw)
    config.architectures = ["SymbreakGPT2LMHeadModel"]
    config.auto_map = {
        "AutoConfig": f"{REMOTE_MODULE}.SymbreakGPT2Config",
        "AutoModelForCausalLM": f"{REMOTE_MODULE}.SymbreakGPT2LMHeadModel",
    }
    return SymbreakGPT2LMHeadModel(config)


def write_tokenizer(out: Path, max_length: int) -> None:
    """GPT-2's tokenizer files from the installed BPE files: ``vocab.json`` and ``merges.txt``
    (byte copies of ``encoder.json`` and ``vocab.bpe``), then ``tokenizer.json`` and
    ``tokenizer_config.json`` as transformers writes them."""
    from transformers import GPT2Tokenizer

    from symbreak.data.tokenizer import _bpe_files

    vocab_bpe, encoder_json = _bpe_files()
    shutil.copyfile(encoder_json, out / "vocab.json")
    shutil.copyfile(vocab_bpe, out / "merges.txt")
    tok = GPT2Tokenizer.from_pretrained(str(out), model_max_length=max_length)
    tok.save_pretrained(str(out))
