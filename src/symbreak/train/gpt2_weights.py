"""symbreak GPT <-> Hugging Face GPT-2 state dicts: one table of names, both directions.

The two models compute the same function; only names and layouts differ:

* HF GPT-2 keeps its projections in ``Conv1D`` modules, ``y = x W + b`` with ``W`` of shape
  (in, out); symbreak's ``nn.Linear`` stores ``W^T`` (out, in). Every projection weight is
  transposed on the way through; biases, LayerNorms, embeddings and PReLU slopes are not.
* ``c_attn`` packs ``[W_Q | W_K | W_V]`` in the same order, heads contiguous (head ``h`` owns
  columns ``h*d_head .. (h+1)*d_head`` of each part) in both.
* Folding the symmetry-breaking biases (export): with evaluation's bias ``b`` (``<bQ>``,
  ``<bV>``; ``bK`` too if a run has one) added per head after the projection,
  ``q + b = x W_Q + (c_Q + b)``, so ``c_Q <- c_Q + b`` (broadcast to every head, or per head
  with ``sb.per_head``) is exact. Likewise ``c_V <- c_V + <bV>`` and ``c_K <- c_K + bK``.
* A tensor one side lacks is zero on the other: ``model.bias=false`` (no Linear/LayerNorm
  biases) exports zero biases, ``model.pos_encoding=none`` exports a zero ``wpe``; importing
  into such a model requires those HF tensors to be zero.
* Vocabulary: symbreak pads GPT-2's 50257 tokens to 50304 rows (faster matmuls); the 47 extra
  rows are never targets. Export keeps the first ``vocab_out`` rows (GPT-2's 50257), so the
  logits of every real token are unchanged. Import pads the other way: new rows are set to the
  mean of the real rows, so each padding logit is the mean real logit and, by Jensen's
  inequality (``mean exp(l) >= exp(mean l)``), the padding rows together hold at most
  ``47/50304`` of the probability at the start instead of swamping it.

Nothing here imports transformers: a GPT-2 directory is read as ``config.json`` plus
safetensors (never a pickled ``pytorch_model.bin``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from symbreak.errors import CheckpointError

LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
NORMS = ("ln_1", "ln_2")
SB_KINDS = ("q", "k", "v")


def name_table(n_layer: int, prelu: bool) -> list[tuple[str, str, bool]]:
    """``(symbreak key, HF key, transpose)`` for every weight of a GPT-2 shaped model."""
    rows = [("wte.weight", "transformer.wte.weight", False)]
    rows.append(("wpe.weight", "transformer.wpe.weight", False))
    for i in range(n_layer):
        s, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ln in NORMS:
            rows += [(f"{s}{ln}.{p}", f"{h}{ln}.{p}", False) for p in ("weight", "bias")]
        for lin in LINEARS:
            rows.append((f"{s}{lin}.weight", f"{h}{lin}.weight", True))
            rows.append((f"{s}{lin}.bias", f"{h}{lin}.bias", False))
        if prelu:
            rows.append((f"{s}mlp.act.weight", f"{h}mlp.act.weight", False))
    rows += [(f"ln_f.{p}", f"transformer.ln_f.{p}", False) for p in ("weight", "bias")]
    return rows


# --------------------------------------------------------------------------------------------
# symbreak -> HF (export)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def eval_biases(model: torch.nn.Module, layer: int) -> dict[str, torch.Tensor | None]:
    """What evaluation adds to q, k, v in ``layer``, as flat (n_embd,) vectors (None: nothing).

    It calls the samplers exactly as an eval-mode forward does (``sb.eval`` mean: ``<b>``, the
    learned vector or the fixed draw; zero: nothing), so the fold is the evaluated model.
    """
    attn = model.blocks[layer].attn
    out: dict[str, torch.Tensor | None] = {}
    for kind in SB_KINDS:
        sampler = getattr(attn, f"bias_{kind}")
        if sampler is None:
            out[kind] = None
            continue
        if sampler.eval_mode == "sample":
            raise ValueError("sb.eval=sample draws a new bias per forward; it cannot be folded")
        was_training = sampler.training
        sampler.eval()
        b = sampler()
        sampler.train(was_training)
        if b is None:
            out[kind] = None
            continue
        # (1, n, 1, d_head) with n = 1 (shared) or n_head (per head) -> (n_head * d_head,)
        b = b.detach().float().expand(1, attn.n_head, 1, attn.d_head)
        out[kind] = b.reshape(attn.n_head * attn.d_head).cpu()
    return out


@torch.no_grad()
def to_hf_gpt2(model: torch.nn.Module, vocab_out: int) -> dict[str, torch.Tensor]:
    """The HF GPT-2 state dict (``transformer.*`` and the tied ``lm_head.weight``) of a symbreak
    GPT in evaluation form: biases folded, missing tensors zero, vocabulary cut to ``vocab_out``.
    """
    cfg = model.cfg
    own = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    C = cfg.n_embd
    shapes = _hf_shapes(cfg.n_layer, C, cfg.block_size, vocab_out)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for skey, hkey, transpose in name_table(cfg.n_layer, cfg.activation == "prelu"):
        if skey in own:
            t = own[skey].t() if transpose else own[skey]
            used.add(skey)
        else:  # model.bias=false or pos_encoding=none: the function has zeros there
            t = torch.zeros(shapes[hkey])
        out[hkey] = t.contiguous().clone()
    out["transformer.wte.weight"] = out["transformer.wte.weight"][:vocab_out].clone()
    for i in range(cfg.n_layer):
        key = f"transformer.h.{i}.attn.c_attn.bias"
        folded = eval_biases(model, i)
        for part, kind in enumerate(SB_KINDS):
            b = folded[kind]
            if b is not None:
                out[key][part * C : (part + 1) * C] += b
    # Every symbreak tensor is accounted for: mapped above, or a bias sampler's (folded).
    left = [k for k in own if k not in used and not _is_sampler_key(k)]
    if left:
        raise AssertionError(f"tensors not exported: {left}")
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def _is_sampler_key(key: str) -> bool:
    return any(f".attn.bias_{k}." in key for k in SB_KINDS)


def _hf_shapes(n_layer: int, C: int, block_size: int, vocab: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"transformer.wpe.weight": (block_size, C)}
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        shapes |= {f"{h}{ln}.bias": (C,) for ln in NORMS}
        shapes |= {f"{h}attn.c_attn.bias": (3 * C,), f"{h}attn.c_proj.bias": (C,)}
        shapes |= {f"{h}mlp.c_fc.bias": (4 * C,), f"{h}mlp.c_proj.bias": (C,)}
    shapes["transformer.ln_f.bias"] = (C,)
    return shapes


# --------------------------------------------------------------------------------------------
# HF -> symbreak (model.init_from)
# --------------------------------------------------------------------------------------------

# GPT-2 settings symbreak's GPT reproduces; anything else changes the function.
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def read_hf_gpt2(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``config.json`` and the weights (``model.safetensors`` or a sharded index) of a local
    Hugging Face GPT-2 directory. Keys are normalised to ``transformer.*`` names."""
    from symbreak.train.checkpoint import read_tensors

    cfg_path = path / "config.json"
    try:
        hf_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is unreadable: {e}") from None
    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{index} is unreadable: {e}") from None
        files = [path / n for n in names]
    else:
        raise CheckpointError(
            f"{path} has no model.safetensors; symbreak reads safetensors only (never pickled "
            ".bin files): convert it with save_pretrained(..., safe_serialization=True)"
        )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        for k, v in read_tensors(f).items():
            sd[k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"] = v
    return hf_cfg, sd


def from_hf_gpt2(
    model: torch.nn.Module, hf_cfg: dict[str, Any], sd: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """A state dict for symbreak ``model`` holding the GPT-2 weights ``sd`` (every mismatch is
    a :class:`CheckpointError` that names it). Bias-sampler tensors keep the model's own."""
    cfg = model.cfg
    _check_hf_config(cfg, hf_cfg, origin)
    own = model.state_dict()
    out = {k: v for k, v in own.items() if _is_sampler_key(k)}
    for skey, hkey, transpose in name_table(cfg.n_layer, prelu=cfg.activation == "prelu"):
        if hkey not in sd:
            raise CheckpointError(f"{origin} has no tensor {hkey}")
        t = sd[hkey].float()
        t = t.t() if transpose else t
        if skey not in own:
            if bool(t.count_nonzero()):
                what = "model.pos_encoding=none" if "wpe" in hkey else "model.bias=false"
                raise CheckpointError(f"{origin}: {hkey} is not zero but the model has {what}")
            continue
        want = tuple(own[skey].shape)
        if skey == "wte.weight":
            t = _pad_vocab(t, want, origin)
        elif skey == "wpe.weight" and t.shape[0] >= want[0] and t.shape[1:] == want[1:]:
            t = t[: want[0]]  # a shorter context uses the first positions
        if tuple(t.shape) != want:
            raise CheckpointError(
                f"{origin}: {hkey} has shape {tuple(sd[hkey].shape)}, but {skey} of this "
                f"model needs {want if not transpose else want[::-1]}; set model.* to its shape"
            )
        out[skey] = t.to(own[skey].dtype).clone()
    lm_head = sd.get("lm_head.weight")
    if lm_head is not None and not torch.equal(lm_head, sd["transformer.wte.weight"]):
        raise CheckpointError(f"{origin}: lm_head.weight is not tied to wte; symbreak ties them")
    return out


def _pad_vocab(t: torch.Tensor, want: tuple[int, ...], origin: str) -> torch.Tensor:
    if t.shape[1:] != want[1:] or t.shape[0] > want[0]:
        raise CheckpointError(
            f"{origin}: transformer.wte.weight has shape {tuple(t.shape)}, the model's wte is "
            f"{want}; set model.vocab_size >= {t.shape[0]} and model.n_embd={t.shape[1]}"
        )
    pad = t.mean(dim=0, keepdim=True).expand(want[0] - t.shape[0], -1)
    return torch.cat([t, pad])


def _check_hf_config(cfg: Any, hf: dict[str, Any], origin: str) -> None:
    kind = hf.get("model_type")
    if cfg.mlp != "dense" or cfg.mlp_hidden not in (0, 4 * cfg.n_embd):
        raise CheckpointError(
            f"{origin} is GPT-2, whose MLP is dense and 4 x n_embd wide; set model.mlp=dense "
            "and model.mlp_hidden=0 to start from it"
        )
    if kind not in ("gpt2", "symbreak_gpt2"):
        raise CheckpointError(
            f"{origin} is a {kind!r} model; model.init_from reads GPT-2 (model_type gpt2), a "
            "symbreak export or a symbreak run"
        )
    if kind == "gpt2" and cfg.activation != "gelu":
        raise CheckpointError(
            f"{origin} is GPT-2, whose MLP uses GELU; set model.activation=gelu "
            f"(model.activation={cfg.activation} has no GPT-2 weights to start from)"
        )
    if kind == "symbreak_gpt2" and cfg.activation != "prelu":
        raise CheckpointError(f"{origin} is a PReLU export; set model.activation=prelu")
    act = hf.get("activation_function", "gelu_new")
    checks = [
        (act in _GELU_TANH, f"activation_function={act!r} (symbreak's GELU is the tanh form)"),
        (hf.get("n_inner") in (None, 4 * cfg.n_embd), f"n_inner={hf.get('n_inner')}"),
        (
            abs(float(hf.get("layer_norm_epsilon", 1e-5)) - 1e-5) < 1e-12,
            f"layer_norm_epsilon={hf.get('layer_norm_epsilon')}",
        ),
        (hf.get("scale_attn_weights", True), "scale_attn_weights=false"),
        (not hf.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx"),
        (not hf.get("add_cross_attention", False), "add_cross_attention"),
        (hf.get("tie_word_embeddings", True), "untied word embeddings"),
    ]
    for ok, what in checks:
        if not ok:
            raise CheckpointError(f"{origin}: GPT-2 with {what} is not supported")
    for key, ours in (("n_layer", cfg.n_layer), ("n_head", cfg.n_head), ("n_embd", cfg.n_embd)):
        if hf.get(key) != ours:
            raise CheckpointError(
                f"{origin} has {key}={hf.get(key)} but model.{key}={ours}; set model.{key}="
                f"{hf.get(key)}"
            )
