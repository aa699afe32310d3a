"""``model.init_from=PATH``: start training from existing weights instead of a random init.

``PATH`` is one of

* a symbreak run directory (its latest checkpoint) or one checkpoint directory
  (``RUN/checkpoints/step_N``): the same model shape, weights copied tensor for tensor;
* a local Hugging Face GPT-2 directory (``config.json`` + safetensors; e.g. ``gpt2`` saved with
  ``save_pretrained``, or a ``symbreak export``): mapped by
  :func:`symbreak.train.gpt2_weights.from_hf_gpt2`. GPT-2 uses GELU, so the model must
  have ``model.activation=gelu`` (a PReLU export can start a PReLU model).

Only the network's weights come over. The symmetry-breaking biases are the new run's own
(``sb.*``) and apply from step 0, which is the point: continued pre-training or fine-tuning
with bQ/bV. A source with learned or fixed biases of its own is refused rather than silently
dropping them, unless the new run's ``sb`` matches (then they are copied too). Nothing is read
with pickle; every mismatch is one :class:`~symbreak.errors.CheckpointError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from symbreak.errors import CheckpointError
from symbreak.train.gpt2_weights import _is_sampler_key, from_hf_gpt2, read_hf_gpt2


def init_model_from(model: torch.nn.Module, path: str | Path) -> str:
    """Load the weights at ``path`` into ``model`` (in place). Returns what was loaded."""
    p = Path(path).expanduser()
    origin = f"model.init_from={path}"
    if (p / "config.toml").is_file() or (p / "state.json").is_file():
        ckpt = _symbreak_checkpoint(p)
        sd = _from_symbreak(model, ckpt, origin)
        what = f"symbreak checkpoint {ckpt}"
    elif (p / "config.json").is_file():
        hf_cfg, hf_sd = read_hf_gpt2(p)
        sd = from_hf_gpt2(model, hf_cfg, hf_sd, origin)
        what = f"Hugging Face {hf_cfg.get('model_type')} weights from {p}"
    elif not p.exists():
        raise CheckpointError(f"{origin} does not exist")
    else:
        raise CheckpointError(
            f"{origin} is neither a symbreak run (config.toml), a checkpoint (state.json) nor "
            "a Hugging Face GPT-2 directory (config.json)"
        )
    model.load_state_dict(sd, strict=True)
    return what


def _symbreak_checkpoint(p: Path) -> Path:
    if (p / "state.json").is_file():
        return p
    from symbreak.train.checkpoint import resolve_checkpoint

    return resolve_checkpoint(p)


def _from_symbreak(model: torch.nn.Module, ckpt: Path, origin: str) -> dict[str, torch.Tensor]:
    from symbreak.train.checkpoint import read_tensors

    src = read_tensors(ckpt / "model.safetensors")
    own = model.state_dict()
    missing = sorted(k for k in own if k not in src and not _is_sampler_key(k))
    extra = sorted(k for k in src if k not in own)
    if missing or extra:
        parts = [f"it lacks {missing[:3]}"] if missing else []
        parts += [f"it has {extra[:3]} that this model lacks"] if extra else []
        hint = " (model.activation, model.bias, model.pos_encoding or sb.mode differ?)"
        raise CheckpointError(f"{origin}: {ckpt} does not fit: {'; '.join(parts)}{hint}")
    out = dict(own)
    for k, v in src.items():
        if v.shape != own[k].shape:
            raise CheckpointError(
                f"{origin}: {k} has shape {tuple(v.shape)} in {ckpt}, this model needs "
                f"{tuple(own[k].shape)}; set model.* to the source run's sizes"
            )
        out[k] = v.to(own[k].dtype)
    return out
