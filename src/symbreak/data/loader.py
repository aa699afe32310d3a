"""Memory-mapped training windows and deterministic batches.

Training data is the concatenated token stream of a split, cut into non-overlapping windows of
``block_size + 1`` tokens (input + shifted target) with stride ``block_size`` inside each shard.
Batches are a pure function of ``(seed, step, rank, world_size)``: there is no iterator state,
so resuming at step k needs only k, and every rank of a data-parallel job draws disjoint samples
of the same global batch without talking to the others.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from symbreak.config import Config, DataConfig
from symbreak.data.addition import ANSWER, LINE, PROMPT, AdditionSpec, cached_addition
from symbreak.data.addition import VOCAB as ADDITION_VOCAB
from symbreak.data.corpus import (
    META_FILE,
    SHAKESPEARE_SOURCES,
    cached_shakespeare,
    shakespeare_texts,
)
from symbreak.data.cot import (
    SOURCE as COT_SOURCE,
)
from symbreak.data.cot import (
    CotSpec,
    PackedExamples,
    PackedWindows,
    check_vocabulary,
    encode_items,
    generate_split,
    masked_pairs,
    pack_order,
    pad_id,
)
from symbreak.data.shards import read_shard
from symbreak.data.tokenizer import (
    GPT2_VOCAB_SIZE,
    CharTokenizer,
    Tokenizer,
    tokenizer_from_meta,
)
from symbreak.errors import DataError
from symbreak.seeding import keyed_seed
from symbreak.targets import IGNORE_INDEX

Batch = tuple[torch.Tensor, torch.Tensor]


class TokenWindows:
    """The windows of one split, over memory-mapped shards; gathers only the rows asked for.

    Windows never cross a shard boundary (so the tail of each shard that does not fill a window
    is unused); each window is ``block_size + 1`` tokens starting at a multiple of block_size.
    """

    def __init__(
        self,
        paths: list[Path],
        block_size: int,
        vocab_size: int | None,
        name: str = "data",
    ) -> None:
        if block_size < 1:
            raise DataError(f"model.block_size must be at least 1, got {block_size}")
        self.paths = [Path(p) for p in paths]
        self.block_size = block_size
        self.name = name
        self.empty_shards: list[Path] = []
        self._views: list[np.ndarray] = []  # per shard: (n_windows, block_size + 1) strided view
        counts = []
        self.n_tokens = 0
        for path in self.paths:
            tokens = read_shard(path, vocab_size)
            self.n_tokens += len(tokens)
            if len(tokens) == 0:
                self.empty_shards.append(path)
            n_win = max(0, (len(tokens) - 1) // block_size)
            if n_win:
                # A zero-copy view over the memmap: row k is tokens[k*bs : k*bs + bs + 1].
                view = np.lib.stride_tricks.sliding_window_view(tokens, block_size + 1)
                self._views.append(view[::block_size][:n_win])
            else:
                self._views.append(np.zeros((0, block_size + 1), dtype=np.uint16))
            counts.append(n_win)
        if self.empty_shards:
            warnings.warn(
                f"{name} split: {len(self.empty_shards)} empty shard(s), e.g. "
                f"{self.empty_shards[0]}; they contribute nothing",
                stacklevel=2,
            )
        # the window ids of shard i are [ends[i-1], ends[i])
        self._ends = np.cumsum(counts, dtype=np.int64)
        self._len = int(self._ends[-1]) if len(counts) else 0
        if self._len == 0:
            raise DataError(
                f"the {name} split has {self.n_tokens} tokens in {len(self.paths)} shard(s), "
                f"fewer than block_size+1 = {block_size + 1} in any one shard; lower "
                "model.block_size or add data"
            )

    def __len__(self) -> int:
        return self._len

    def get(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        """Windows ``indices`` as a LongTensor (len(indices), block_size + 1).

        Only the requested rows are read from the memmaps and widened to int64.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self._len):
            raise IndexError(f"window index out of range [0, {self._len})")
        out = np.empty((idx.size, self.block_size + 1), dtype=np.int64)
        if len(self._views) == 1:
            out[:] = self._views[0][idx]
        else:
            shard = np.searchsorted(self._ends, idx, side="right")
            starts = np.concatenate(([0], self._ends[:-1]))
            for s in np.unique(shard):
                rows = np.nonzero(shard == s)[0]
                out[rows] = self._views[s][idx[rows] - starts[s]]
        return torch.from_numpy(out)


def find_shards(directory: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """(train, val) shard paths in ``directory``: ``*.bin`` files named with "train" / "val"."""
    d = Path(directory).expanduser()
    hint = f"create it with `symbreak prepare INPUT... --out {d}`"
    if not d.exists():
        raise DataError(f"data directory {d} does not exist; {hint}")
    if not d.is_dir():
        raise DataError(f"data source {d} is not a directory of shards; {hint}")
    bins = sorted(
        (
            p
            for p in d.iterdir()
            if p.suffix == ".bin" and not p.name.startswith(".") and p.is_file()
        ),
        key=lambda p: p.name,
    )
    train = [p for p in bins if "train" in p.name]
    val = [p for p in bins if "val" in p.name and "train" not in p.name]
    for split, found in (("train", train), ("val", val)):
        if not found:
            raise DataError(f"no {split} shards (*{split}*.bin) in {d}; {hint}")
    return train, val


class TrainBatches:
    """Deterministic, resumable, rank-disjoint training batches.

    Global sample s = step * batch_size + j (j < batch_size) is window ``perm_e[s % N]`` of
    epoch e = s // N, where N = len(windows) and perm_e is a seeded permutation: every epoch
    visits each window exactly once. Rank r takes the samples with j % world_size == r and
    splits them into ``accum_steps`` micro-batches of ``micro_batch_size``.
    """

    def __init__(
        self,
        windows: TokenWindows | PackedExamples,
        batch_size: int,
        micro_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        positions: torch.Tensor | None = None,
    ) -> None:
        if batch_size < 1 or micro_batch_size < 1:
            raise DataError(
                f"train.batch_size ({batch_size}) and train.micro_batch_size "
                f"({micro_batch_size}) must be positive"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size % (world_size * micro_batch_size):
            raise DataError(
                f"train.batch_size ({batch_size}) must be divisible by train.micro_batch_size "
                f"({micro_batch_size}) x {world_size} process(es); change one of them"
            )
        self.windows = windows
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.positions = positions
        self._perms: dict[int, np.ndarray] = {}

    @property
    def accum_steps(self) -> int:
        """Micro-batches per optimizer step on each rank."""
        return self.batch_size // (self.world_size * self.micro_batch_size)

    def _perm(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            gen = torch.Generator().manual_seed(keyed_seed("symbreak-epoch", self.seed, epoch))
            perm = torch.randperm(len(self.windows), generator=gen).numpy()
            if len(self._perms) >= 2:  # a batch spans at most two epochs in practice
                self._perms.pop(min(self._perms))
            self._perms[epoch] = perm
        return perm

    def window_indices(self, step: int) -> np.ndarray:
        """This rank's window ids for optimizer step ``step``, in micro-batch order."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        j = np.arange(self.rank, self.batch_size, self.world_size, dtype=np.int64)
        s = step * self.batch_size + j
        n = len(self.windows)
        epochs, pos = np.divmod(s, n)
        out = np.empty_like(s)
        for e in np.unique(epochs):
            mask = epochs == e
            out[mask] = self._perm(int(e))[pos[mask]]
        return out

    def micro_batches(self, step: int) -> list[Batch]:
        """[(x, y)] * accum_steps for ``step``; x, y contiguous LongTensors (mbs, block_size)."""
        if isinstance(self.windows, PackedExamples):  # epochs of packed examples, masked
            j = np.arange(self.rank, self.batch_size, self.world_size, dtype=np.int64)
            x, y = self.windows.samples(step * self.batch_size + j)
            mbs = self.micro_batch_size
            return list(zip(x.split(mbs), y.split(mbs), strict=True))
        w = self.windows.get(self.window_indices(step))
        return [input_targets(chunk, self.positions) for chunk in w.split(self.micro_batch_size)]


def input_targets(w: torch.Tensor, positions: torch.Tensor | None = None) -> Batch:
    """(x, y) of windows of block_size + 1 tokens; targets outside ``positions`` (see
    :func:`loss_positions`) are ``IGNORE_INDEX``. Contiguous, so callers may ``.view(-1)``."""
    x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
    if positions is not None:
        y[:, ~positions] = IGNORE_INDEX
    return x, y


def loss_positions(
    block_size: int, mask: str, source: str, prompt: int = PROMPT
) -> torch.Tensor | None:
    """(block_size,) bool: the window positions whose targets are trained and validated, or
    ``None`` for all of them (the causal mask).

    With the bidirectional mask every trained position costs a forward over its own prefix
    (:class:`~symbreak.model.GPT`), so only the positions worth it carry targets: the last
    one for ordinary text, and for ``data.source=addition`` the four that predict answer
    digits: position t predicts character t + 1, so t mod 13 in 7..10 (the problem's prompt
    ``aaa+bbb=`` is characters 0..7; windows start at a problem when ``block_size`` is a
    multiple of 13, which the config requires for this pair). ``prompt`` is the characters
    before the answer: 8, or 9 with ``data.addition_bos``.
    """
    if mask == "causal":
        return None
    t = torch.arange(block_size)
    if source == "addition":
        return (t % LINE >= prompt - 1) & (t % LINE < prompt - 1 + ANSWER)
    return t == block_size - 1


EVAL_WINDOWS = ("spread", "first")


def val_window_indices(n_windows: int, n_tokens: int, block_size: int, how: str) -> np.ndarray:
    """The windows of the fixed held-out set: n = min(ceil(n_tokens / block_size), n_windows).

    ``spread`` (default): n windows evenly spaced over the whole split, window
    ``floor(i * n_windows / n)`` for i < n, so the set represents the split rather than
    whatever text happens to open it (measured on GPT-2 Shakespeare: the first 64 windows read
    5.58 where every 10th window of the split read 5.32). ``first``: the first n windows, what
    runs made before ``train.eval_windows`` existed used; they keep it on resume.
    """
    if how not in EVAL_WINDOWS:
        raise DataError(f"train.eval_windows must be one of {EVAL_WINDOWS}, got {how!r}")
    n = min(math.ceil(n_tokens / block_size), n_windows)
    if how == "first":
        return np.arange(n, dtype=np.int64)
    return (np.arange(n, dtype=np.int64) * n_windows) // n


def val_batches(
    windows: TokenWindows,
    n_tokens: int,
    micro_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    how: str = "spread",
    positions: torch.Tensor | None = None,
) -> list[Batch]:
    """A fixed held-out set (:func:`val_window_indices`), in order.

    Window i of the set goes to rank i % world_size; chunks of micro_batch_size (the last may be
    smaller; a rank may get one batch fewer than another, so weight losses by token count when
    averaging across ranks). Identical on every call.
    """
    if n_tokens < 1:
        raise DataError(f"the number of evaluation tokens must be positive, got {n_tokens}")
    if micro_batch_size < 1:
        raise DataError(f"train.micro_batch_size must be positive, got {micro_batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    idx = val_window_indices(len(windows), n_tokens, windows.block_size, how)[rank::world_size]
    if idx.size == 0:
        return []
    if isinstance(windows, PackedWindows):
        x, y = masked_pairs(windows, idx)
        return list(zip(x.split(micro_batch_size), y.split(micro_batch_size), strict=True))
    w = windows.get(idx)
    return [input_targets(chunk, positions) for chunk in w.split(micro_batch_size)]


def run_loss_positions(cfg: Config) -> torch.Tensor | None:
    """:func:`loss_positions` for a run's config (the addition prompt length included)."""
    m = cfg.model
    return loss_positions(m.block_size, m.mask, cfg.data.source, addition_spec(cfg.data).prompt)


def addition_spec(data: DataConfig) -> AdditionSpec:
    """The ``data.addition_*`` keys as the generator's :class:`AdditionSpec`."""
    return AdditionSpec(
        data.addition_train,
        data.addition_val,
        data.addition_reverse,
        data.addition_seed,
        data.addition_bos,
    )


@dataclass
class DataBundle:
    """Both splits of a data source, ready for sampling."""

    train: TokenWindows | PackedExamples
    val: TokenWindows | PackedWindows
    source: str
    meta: dict = field(default_factory=dict)

    @property
    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_meta(self.meta)


def cot_spec(data: DataConfig) -> CotSpec:
    """The ``data.cot_*`` keys as the generator's :class:`~symbreak.data.cot.CotSpec`."""
    return CotSpec(data.cot_train, data.cot_test, tuple(data.cot_mix), data.cot_seed)


def cot_tokenizer(data: DataConfig) -> Tokenizer:
    """The tokenizer of ``data.cot_vocab``: GPT-2 BPE, or a character-level source's."""
    if data.cot_vocab == "gpt2":
        return tokenizer_from_meta({})
    cache = Path(data.cache_dir).expanduser() if data.cache_dir else None
    return data_tokenizer(data.cot_vocab, cache)


def load_cot_data(cfg: Config, block_size: int | None = None) -> DataBundle:
    """``data.source=cot-arithmetic``: the training examples as :class:`PackedExamples` (packed
    anew each epoch from ``train.seed``), the test problems as fixed packed windows (their
    chain-token loss is the validation loss)."""
    bs = block_size or cfg.model.block_size
    tok = cot_tokenizer(cfg.data)
    check_vocabulary(tok, f"data.cot_vocab={cfg.data.cot_vocab}")
    if tok.name in ("char", "chars") and cfg.model.vocab_size != tok.vocab_size:
        raise DataError(
            f"model.vocab_size={cfg.model.vocab_size} but data.cot_vocab={cfg.data.cot_vocab} "
            f"has {tok.vocab_size} ids; use the vocabulary the model was trained with"
        )
    spec = cot_spec(cfg.data)
    pad = pad_id(tok)
    train = PackedExamples(
        encode_items(generate_split(spec, "train"), tok), bs, pad, cfg.train.seed
    )
    test = encode_items(generate_split(spec, "test"), tok)
    if (test.lengths > bs + 1).any():
        raise DataError(
            f"a test problem is {int(test.lengths.max())} tokens, more than model.block_size + 1"
            f" = {bs + 1}; fine-tune a model with a longer context"
        )
    val = PackedWindows(test, pack_order(test.lengths, np.arange(len(test)), bs + 1), bs, pad)
    meta = {**tok.meta(), "source": COT_SOURCE, "spec": spec.__dict__}
    return DataBundle(train=train, val=val, source=COT_SOURCE, meta=meta)


def load_run_data(cfg: Config, block_size: int | None = None) -> DataBundle:
    """The data ``cfg`` trains on (:func:`load_data` with its source, context, vocabulary,
    cache and addition settings); ``block_size`` overrides the context."""
    if cfg.data.source == COT_SOURCE:
        return load_cot_data(cfg, block_size)
    return load_data(
        cfg.data.source,
        block_size or cfg.model.block_size,
        cfg.model.vocab_size,
        cache_dir=Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else None,
        addition=addition_spec(cfg.data),
    )


def load_data(
    source: str,
    block_size: int,
    vocab_size: int,
    cache_dir: Path | None = None,
    addition: AdditionSpec | None = None,
) -> DataBundle:
    """Open a data source: "shakespeare" / "shakespeare_char" (prepared once into the cache),
    "addition" (generated once into the cache as ``addition`` describes; default:
    :class:`DataConfig`'s defaults, see :func:`addition_spec`) or a shard directory.

    Every token is checked to be < vocab_size, and a character-level dataset's vocabulary must
    be the model's. ``meta`` is the directory's meta.json, or {} for shards made elsewhere (e.g.
    by llm.c: GPT-2 BPE).
    """
    if source == "addition":
        directory = cached_addition(addition or addition_spec(DataConfig()), cache_dir)
    else:
        directory = data_directory(source, cache_dir)
    train_paths, val_paths = find_shards(directory)
    meta = read_meta(directory)
    tok = tokenizer_from_meta(meta)
    if tok.name == "char" and vocab_size != tok.vocab_size:
        raise DataError(
            f"model.vocab_size={vocab_size} but the character-level data {source} has "
            f"{tok.vocab_size} ids ({tok.vocab_size - 1} characters + end of text); leave "
            "model.vocab_size unset (it follows the data) or set it to "
            f"{tok.vocab_size}"
        )
    return DataBundle(
        train=TokenWindows(train_paths, block_size, vocab_size, name="train"),
        val=TokenWindows(val_paths, block_size, vocab_size, name="val"),
        source=str(source if source in (*SHAKESPEARE_SOURCES, "addition") else directory),
        meta=meta,
    )


def data_directory(source: str, cache_dir: Path | None = None) -> Path:
    """Where a data source's shards are (preparing an installed corpus on first use)."""
    if source in SHAKESPEARE_SOURCES:
        return cached_shakespeare(cache_dir, tokenizer=SHAKESPEARE_SOURCES[source])
    directory = Path(source).expanduser()
    close = difflib.get_close_matches(source.lower(), list(SHAKESPEARE_SOURCES), n=1, cutoff=0.7)
    if close and not directory.exists():
        raise DataError(
            f"data.source {source!r} is neither an installed corpus "
            f"({', '.join(SHAKESPEARE_SOURCES)}) nor an existing directory of shards "
            f"(did you mean '{close[0]}'?)"
        )
    return directory


def read_meta(directory: Path) -> dict:
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(
            f"{meta_path} is not valid JSON ({e}); re-create the data with `symbreak prepare`"
        ) from e
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} is not a JSON object; re-create the data")
    return meta


def data_tokenizer(source: str, cache_dir: Path | None = None) -> Tokenizer:
    """The tokenizer of a data source (from its meta.json; GPT-2 when it has none)."""
    return tokenizer_from_meta(read_meta(data_directory(source, cache_dir)))


def resolve_config(cfg: Config) -> Config:
    """Resolve ``cfg`` (:meth:`Config.resolve`), taking an unset ``model.vocab_size`` from its
    data source (:func:`default_vocab_size`). Returns ``cfg``."""
    vocab = None
    if cfg.model.vocab_size is None:
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
        source = cfg.data.source
        if source == COT_SOURCE:
            source = "shakespeare" if cfg.data.cot_vocab == "gpt2" else cfg.data.cot_vocab
        vocab = default_vocab_size(source, cache)
    return cfg.resolve(vocab)


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Defaults, then the TOML file at ``path``, then ``KEY=VALUE`` overrides; resolved, with
    ``model.vocab_size`` from the data when unset: what ``symbreak train`` runs."""
    return resolve_config(Config.build(path, overrides))


def config_from_dict(tree: dict[str, Any], origin: str = "config") -> Config:
    """:meth:`Config.from_dict` for a tree that may leave ``model.vocab_size`` unset (it then
    comes from the data source, as for :func:`load_config`)."""
    return resolve_config(Config.from_tree(tree, origin))


def default_vocab_size(source: str, cache_dir: Path | None = None) -> int:
    """``model.vocab_size`` when the config leaves it unset: GPT-2's 50257 padded to 50304 (a
    multiple of 64: faster matmuls; the extra rows are never targets), or the exact size of a
    character-level vocabulary. A source that does not exist yet counts as GPT-2 here; loading
    it fails later with its own message."""
    if source == "shakespeare_char":
        return _shakespeare_char_vocab_size()
    if source == "addition":
        return ADDITION_VOCAB
    directory = Path(source).expanduser()
    if source in SHAKESPEARE_SOURCES or not directory.is_dir():
        return PADDED_GPT2_VOCAB
    tok = tokenizer_from_meta(read_meta(directory))
    return tok.vocab_size if tok.name == "char" else PADDED_GPT2_VOCAB


PADDED_GPT2_VOCAB = 64 * -(-GPT2_VOCAB_SIZE // 64)


@functools.cache
def _shakespeare_char_vocab_size() -> int:
    """The installed texts' characters, counted without preparing the corpus (once a process:
    every config resolution of a char run asks)."""
    return CharTokenizer.from_texts(text for _, text in shakespeare_texts()).vocab_size
