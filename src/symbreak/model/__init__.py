"""The symmetry-broken GPT: ``GPT(cfg.model, cfg.sb)``."""

from symbreak.model.attention import CausalSelfAttention, SelfAttention
from symbreak.model.bias import BiasSampler
from symbreak.model.gpt import GPT, Block
from symbreak.model.mlp import MLP, FeaturePReLU, MoE

__all__ = [
    "GPT",
    "MLP",
    "BiasSampler",
    "Block",
    "CausalSelfAttention",
    "FeaturePReLU",
    "MoE",
    "SelfAttention",
]
