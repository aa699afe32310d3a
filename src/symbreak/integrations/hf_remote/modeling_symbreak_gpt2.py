"""GPT-2 with a PReLU MLP: the architecture of a symbreak model trained with PReLU.

Shipped by ``symbreak export --format hf`` next to ``config.json`` and ``model.safetensors``;
load it with ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)``. It imports
only torch and transformers, so symbreak need not be installed where the export is used.

Everything is Hugging Face's GPT-2 (pre-LayerNorm blocks, learned positions, tied embeddings,
qkv biases, caching, ``generate``) except the MLP activation::

    PReLU(x)_j = max(0, x_j) + a_j * min(0, x_j)      one learned slope a_j per hidden feature

The symmetry-breaking biases of training (bQ, bV at their mean) are already folded into the
q and v parts of ``c_attn.bias``, so no symbreak-specific attention code is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel


class SymbreakGPT2Config(GPT2Config):
    """GPT-2's config plus the MLP activation (``"prelu"``)."""

    model_type = "symbreak_gpt2"

    def __init__(self, mlp_activation: str = "prelu", **kwargs) -> None:
        self.mlp_activation = mlp_activation
        super().__init__(**kwargs)


class FeaturePReLU(nn.Module):
    """``max(0, x) + a * min(0, x)`` with one slope per feature (the last dimension)."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((n_features,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., F) -> (N, F) puts the feature on dimension 1, where F.prelu expects it.
        return F.prelu(x.reshape(-1, x.shape[-1]), self.weight.to(x.dtype)).view(x.shape)


class SymbreakGPT2LMHeadModel(GPT2LMHeadModel):
    """``GPT2LMHeadModel`` whose MLP activation is :class:`FeaturePReLU`."""

    config_class = SymbreakGPT2Config

    def __init__(self, config: SymbreakGPT2Config) -> None:
        super().__init__(config)
        if config.mlp_activation != "prelu":
            raise ValueError(f"unsupported mlp_activation {config.mlp_activation!r}")
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        for block in self.transformer.h:
            block.mlp.act = FeaturePReLU(inner)
