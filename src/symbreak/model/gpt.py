"""GPT-2 style decoder with symmetry-breaking attention biases.

Reads top to bottom like the paper::

    h_0 = wte[x] + wpe[0..T)                      learned absolute positions (or none)
    h_l = h_{l-1} + Attn_l(LN(h_{l-1}))           pre-LayerNorm blocks, biases bQ/bK/bV inside
    h_l = h_l     + MLP_l(LN(h_l))                PReLU (per-feature slope) or GELU; with
                                                  model.mlp=moe a mixture of experts (mlp.py)
    logits = LN_f(h_L) wte^T                      tied input/output embeddings

The positional switches (``model.pos_encoding``, ``model.mask``; see positional.py) change
where position enters: ``wpe`` is a learned table, a fixed sinusoidal one or absent; RoPE and
ALiBi act inside attention. ``model.residual`` drops residual connections: with ``attn`` only
the attention sub-layer keeps its ``h +``, with ``mlp`` only the MLP, with ``none`` neither
(``h_l = Attn_l(LN(h_{l-1}))`` etc.).

Training targets. Causal: every position t predicts ``x_{t+1}`` from ``x_0..x_t`` (its
context never contains its target). Bidirectional: position t attends to ``x_{t+1}``, its own
target, so a target can only be trained from a forward over its prefix ``x_0..x_t`` alone: each
position t that has a target (not ``IGNORE_INDEX``) gets its own forward over ``x[:, :t+1]``,
whose last hidden state predicts ``x_{t+1}``. The data decides which positions carry targets
(:func:`symbreak.data.loss_positions`): for ordinary text only the last one, so the trunk runs
once per window as in the causal case; for addition the 4 answer digits of each problem, 4
prefix forwards per window. That price is intrinsic to next-token prediction without a mask.

Evaluation with several bias components (``sb.eval=mixture``, bias.py): the model's next-token
distribution is the average over the K components of the model at component k's mean,
``p(y | x) = (1/K) sum_k softmax(z_k)[y]``, so evaluation runs the trunk K times (K x the
forward FLOPs and time of one evaluation; training is unchanged). The loss is
``-log p(y | x)``, computed as ``log K - logsumexp_k log softmax(z_k)[y]``; the logits handed out
are ``log p`` itself (normalised, so a softmax or log-softmax of them is the mixture's).

Initialisation is nanoGPT's: weights ~ N(0, 0.02), biases 0, and the two residual output
projections of each block (attention ``c_proj``, MLP ``c_proj``) ~ N(0, 0.02 / sqrt(2 L)) so the
residual stream's variance does not grow with depth.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from symbreak.config import ModelConfig, SBConfig
from symbreak.model.attention import SelfAttention
from symbreak.model.bias import BiasSampler
from symbreak.model.loss import IGNORE_INDEX, linear_cross_entropy, target_logprobs
from symbreak.model.mlp import MLP, MoE
from symbreak.model.positional import sinusoidal_table


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, sb: SBConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = SelfAttention(cfg, sb, layer)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp: nn.Module = MoE(cfg, cfg.n_layer) if cfg.mlp == "moe" else MLP(cfg)
        self.res_attn = cfg.residual in ("both", "attn")
        self.res_mlp = cfg.residual in ("both", "mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.ln_1(x))
        x = x + a if self.res_attn else a
        m = self.mlp(self.ln_2(x))
        return x + m if self.res_mlp else m


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, sb: SBConfig | None = None) -> None:
        super().__init__()
        sb = sb if sb is not None else SBConfig(seed=0)
        self.cfg, self.sb = cfg, sb
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = (
            nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos_encoding == "learned" else None
        )
        if cfg.pos_encoding == "sinusoidal":  # fixed, so a non-persistent buffer
            self.register_buffer(
                "sinusoid", sinusoidal_table(cfg.block_size, cfg.n_embd), persistent=False
            )
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, sb, layer) for layer in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # how the loss's elementwise work runs (loss.py): an implementation choice, not part of
        # the architecture, so the trainer sets it (train.loss_kernel)
        self.loss_kernel = "eager"
        self.reset_parameters()

    # ---- initialisation ---------------------------------------------------------------

    def reset_parameters(self) -> None:
        std = 0.02
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scale = 1.0 / math.sqrt(2 * self.cfg.n_layer) if name.endswith("c_proj") else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, MoE):
                module.reset_parameters(std)

    # ---- forward --------------------------------------------------------------------------

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``idx``: (B, T) token ids.

        Without ``targets``: ``(logits (B, T, V), None)``. With ``targets`` (B, T):
        ``(None, mean cross-entropy)`` over the targets that are not ``IGNORE_INDEX``, computed
        by the fused path of ``loss.py``. With the bidirectional mask each such position is
        predicted from its own prefix (see the module docstring).
        """
        if self.mixing:
            return self._mixture_forward(idx, targets)
        if targets is not None and self.cfg.mask == "bidirectional":
            return None, self._prefix_loss(idx, targets)
        x = self.hidden(idx)
        if targets is None:
            return self.output(x), None
        # Training and validation need only the loss: fused, chunked, no (B, T, V) logits.
        return None, linear_cross_entropy(x, self.wte.weight, targets, kernel=self.loss_kernel)

    def _prefix_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Bidirectional loss: ``CE(LN_f(h_L(x_0..x_t))_t W^T, y_t)`` for every position t with
        a target, one trunk forward per such t (so no target is ever in its own context)."""
        h, y = self._prefix_hidden(idx, targets)
        return linear_cross_entropy(h, self.wte.weight, y, kernel=self.loss_kernel)

    def _prefix_hidden(
        self, idx: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The bidirectional loss's hidden states and their targets, (B, P, C) and (B, P)."""
        cols = torch.nonzero((targets != IGNORE_INDEX).any(0)).flatten().tolist()
        if not cols:
            cols = [idx.shape[1] - 1]  # all ignored: the loss is 0 over 0 targets, as causal
        h = torch.stack([self.hidden(idx[:, : t + 1])[:, -1] for t in cols], dim=1)
        return h, targets[:, cols].contiguous()

    # ---- evaluation over bias components (sb.eval=mixture) ----------------------------------

    @property
    def n_components(self) -> int:
        """K: the bias components a forward chooses among (1 without components)."""
        return max((s.n_components for s in self.bias_samplers()), default=1)

    @property
    def mixing(self) -> bool:
        """Whether a forward now averages over components: eval mode, ``sb.eval=mixture``,
        K > 1."""
        return not self.training and self.sb.eval == "mixture" and self.n_components > 1

    @contextlib.contextmanager
    def component(self, k: int) -> Iterator[None]:
        """Every eval-mode forward inside uses component ``k``'s mean (``sb.eval=mixture``)."""
        samplers = list(self.bias_samplers())
        for s in samplers:
            s.eval_component = k
        try:
            yield
        finally:
            for s in samplers:
                s.eval_component = None

    def hiddens(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`hidden` once per component when mixing, else ``[hidden(idx)]``; pair with
        :meth:`mixture_output`."""
        if not self.mixing:
            return [self.hidden(idx)]
        out = []
        for k in range(self.n_components):
            with self.component(k):
                out.append(self.hidden(idx))
        return out

    def mixture_output(self, hs: list[torch.Tensor]) -> torch.Tensor:
        """Logits for hidden states of :meth:`hiddens`: :meth:`output` of a single one, else
        the mixture's log-probabilities ``log (1/K) sum_k softmax(h_k W^T)``."""
        if len(hs) == 1:
            return self.output(hs[0])
        acc = torch.float64 if hs[0].dtype == torch.float64 else torch.float32
        logp = torch.stack([F.log_softmax(self.output(h).to(acc), dim=-1) for h in hs])
        return torch.logsumexp(logp, dim=0) - math.log(len(hs))

    def _mixture_forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if targets is None:
            return self.mixture_output(self.hiddens(idx)), None
        lps, y = [], targets
        for k in range(self.n_components):
            with self.component(k):
                if self.cfg.mask == "bidirectional":
                    h, y = self._prefix_hidden(idx, targets)
                else:
                    h = self.hidden(idx)
                lps.append(target_logprobs(h, self.wte.weight, y))
        logp = torch.logsumexp(torch.stack(lps), dim=0) - math.log(len(lps))
        valid = y != IGNORE_INDEX
        return None, -(logp * valid).sum() / valid.sum().clamp_min(1)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The trunk: ``LN_f(h_L)``, (B, T, C), everything before the output layer."""
        _, T = idx.shape
        if self.cfg.block_size < T:
            raise ValueError(f"sequence length {T} exceeds model.block_size={self.cfg.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        elif self.cfg.pos_encoding == "sinusoidal":
            x = x + self.sinusoid[:T].to(x.dtype)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``h wte^T`` (tied embeddings) for hidden states ``h`` (..., C); scoring calls
        it only at the positions it needs instead of materialising (B, T, V)."""
        return F.linear(h, self.wte.weight)

    # ---- symmetry-breaking biases -------------------------------------------------------

    def bias_samplers(self) -> Iterator[BiasSampler]:
        for m in self.modules():
            if isinstance(m, BiasSampler):
                yield m

    def pin_biases(self, step: int, rows: list[int] | None = None) -> None:
        """Fix the batch-mode draws of every layer to those of optimizer step ``step``;
        ``rows``: the global batch indices of the next forward's sequences, which pick their
        components with ``sb.component_unit=sequence``."""
        for s in self.bias_samplers():
            s.pin(step, rows)

    @property
    def components_per_sequence(self) -> bool:
        """Whether training forwards need :meth:`pin_biases`'s ``rows``."""
        return self.n_components > 1 and self.sb.component_unit == "sequence"

    def unpin_biases(self) -> None:
        for s in self.bias_samplers():
            s.unpin()

    # ---- mixture of experts ----------------------------------------------------------------

    def moe_layers(self) -> list[MoE]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, MoE)]

    def moe_terms(self) -> MoETerms | None:
        """The routing terms of the last forward (None for a dense MLP): the penalty the
        training loss adds, ``moe_aux_loss * aux + moe_z_loss * z`` with ``aux`` and ``z`` the
        means over layers (mlp.py has their maths), and the per-layer load fractions."""
        layers = self.moe_layers()
        if not layers or any(m.aux is None for m in layers):
            return None
        aux = torch.stack([m.aux for m in layers]).mean()  # type: ignore[misc]
        z = torch.stack([m.z for m in layers]).mean()  # type: ignore[misc]
        penalty = self.cfg.moe_aux_loss * aux + self.cfg.moe_z_loss * z
        load = torch.stack([m.load for m in layers])  # type: ignore[misc]
        return MoETerms(penalty, aux.detach(), z.detach(), load)

    def num_active_params(self, non_embedding: bool = False) -> int:
        """Parameters one token meets: with a mixture of experts, only ``moe_top_k`` of each
        layer's E experts (the router counts whole); the dense model's :meth:`num_params`."""
        n = self.num_params(non_embedding)
        for m in self.moe_layers():
            experts = sum(p.numel() for name, p in m.named_parameters() if name != "router.weight")
            n -= experts * (m.n_experts - m.top_k) // m.n_experts
        return n

    # ---- bookkeeping ------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
        return n


@dataclass
class MoETerms:
    """:meth:`GPT.moe_terms`: ``penalty`` (in the graph: the training loss adds it), ``aux``
    and ``z`` (detached means over layers), ``load`` ((n_layer, E) token-slot fractions)."""

    penalty: torch.Tensor
    aux: torch.Tensor
    z: torch.Tensor
    load: torch.Tensor

    def values(self) -> torch.Tensor:
        """``[aux, z, load...]`` as one detached float64-able vector (for logging)."""
        return torch.cat(
            (self.aux.reshape(1), self.z.reshape(1), self.load.reshape(-1).to(self.aux.dtype))
        )
