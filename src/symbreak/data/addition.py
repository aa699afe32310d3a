"""Three-digit addition as a character-level language-modelling task (``data.source=addition``).

Format: one problem per line, every line 13 characters::

    "042+917=0959\\n"        a + b = c, a and b zero-padded to 3 digits, c = a + b to 4
    "042+917=9590\\n"        the same with ``data.addition_reverse=true``: c's digits reversed
                            (least significant first, the order in which carries are made)

The vocabulary is the 13 characters ``0123456789+=\\n`` with ids 0..12 in that order (so
``model.vocab_size`` must be at least 13; 16 is a good choice). The prompt of a problem is
its first 8 characters (``"042+917="``), the answer the next 4.

Splits share no problem, not even a commuted one: the unordered pairs ``{a, b}`` (a, b in
0..999) are shuffled with a generator seeded by ``data.addition_seed``; validation takes pairs
from the front until it holds ``data.addition_val`` problems (a pair gives a+b and b+a, or one
problem when a = b), training takes the next pairs until it holds ``data.addition_train``.
Each split's problems are then shuffled and written as one stream of lines, so the same seed
always gives the same files. With ``model.block_size`` a multiple of 13 every training window
starts at the beginning of a problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from symbreak.data.corpus import META_FILE, build_in_cache, default_cache_dir
from symbreak.data.shards import write_shard
from symbreak.errors import DataError
from symbreak.seeding import keyed_seed

CHARS = "0123456789+=\n"
STOI = {c: i for i, c in enumerate(CHARS)}
VOCAB = len(CHARS)
LINE = 13  # "aaa+bbb=cccc\n"
PROMPT = 8  # "aaa+bbb="
ANSWER = 4  # "cccc"
N_PAIRS = 1000 * 1001 // 2  # unordered pairs {a, b}; 1,000,000 ordered problems
FORMAT_VERSION = 1


def encode_chars(text: str) -> list[int]:
    """Characters -> ids; anything outside the 13 characters is an error."""
    try:
        return [STOI[c] for c in text]
    except KeyError as e:
        raise DataError(f"character {e.args[0]!r} is not in the addition vocabulary") from None


def decode_chars(ids: list[int] | np.ndarray) -> str:
    return "".join(CHARS[i] if 0 <= i < VOCAB else "?" for i in ids)


def answer_text(a: int, b: int, reverse: bool = False) -> str:
    c = f"{a + b:04d}"
    return c[::-1] if reverse else c


def line_text(a: int, b: int, reverse: bool = False) -> str:
    return f"{a:03d}+{b:03d}={answer_text(a, b, reverse)}\n"


@dataclass(frozen=True)
class AdditionSpec:
    """What identifies a generated dataset (the cache key and meta.json)."""

    n_train: int
    n_val: int
    reverse: bool
    seed: int
    bos: bool = False  # "\naaa+bbb=cccc" lines: the newline first, as a start token

    @property
    def prompt(self) -> int:
        """Characters before the answer: ``aaa+bbb=`` (8), or 9 with the leading newline."""
        return PROMPT + int(self.bos)

    def check(self) -> None:
        if self.n_train < 1 or self.n_val < 1:
            raise DataError(
                "data.addition_train and data.addition_val must be at least 1, got "
                f"{self.n_train} and {self.n_val}"
            )
        if self.n_train + self.n_val > 1_000_000 - 1000:
            raise DataError(
                f"data.addition_train + data.addition_val = {self.n_train + self.n_val} problems, "
                "more than the 999,000 that disjoint splits of three-digit addition can hold"
            )

    @property
    def key(self) -> str:
        return (
            f"v{FORMAT_VERSION}-t{self.n_train}-v{self.n_val}-"
            f"{'rev' if self.reverse else 'fwd'}-s{self.seed}{'-bos' if self.bos else ''}"
        )


def split_problems(spec: AdditionSpec) -> dict[str, np.ndarray]:
    """``{"train": (n_train, 2), "val": (n_val, 2)}`` int64 operand pairs (see module doc)."""
    spec.check()
    a, b = np.triu_indices(1000)  # a <= b: every unordered pair once
    rng = np.random.default_rng(keyed_seed(spec.seed, "addition-split"))
    order = rng.permutation(N_PAIRS)
    # problems contributed by each pair, in shuffled order: 1 if a == b else 2
    sizes = np.where(a[order] == b[order], 1, 2)
    ends = np.cumsum(sizes)
    n_val_pairs = int(np.searchsorted(ends, spec.n_val)) + 1
    n_all_pairs = int(np.searchsorted(ends, ends[n_val_pairs - 1] + spec.n_train)) + 1
    out = {}
    for split, pairs, want in (
        ("val", order[:n_val_pairs], spec.n_val),
        ("train", order[n_val_pairs:n_all_pairs], spec.n_train),
    ):
        pa, pb = a[pairs], b[pairs]
        both = pa != pb
        probs = np.concatenate([np.stack([pa, pb], 1), np.stack([pb[both], pa[both]], 1)])
        rng_split = np.random.default_rng(keyed_seed(spec.seed, "addition-order", split))
        # shuffle, then drop the surplus of the last pair (at most one problem)
        out[split] = probs[rng_split.permutation(len(probs))][:want].astype(np.int64)
    return out


def encode_problems(problems: np.ndarray, reverse: bool, bos: bool = False) -> np.ndarray:
    """(N, 2) operands -> the (N * 13,) uint16 id stream of their lines (vectorised); with
    ``bos`` each line is ``"\n" + "aaa+bbb=cccc"``, the newline moved to the front."""
    a, b = problems[:, 0], problems[:, 1]
    c = a + b

    def digits(x: np.ndarray, n: int) -> np.ndarray:  # most significant first, ids = digits
        return np.stack([(x // 10 ** (n - 1 - i)) % 10 for i in range(n)], 1)

    ans = digits(c, ANSWER)
    if reverse:
        ans = ans[:, ::-1]
    n = len(problems)
    newline = np.full((n, 1), STOI["\n"])
    cols = [
        digits(a, 3),
        np.full((n, 1), STOI["+"]),
        digits(b, 3),
        np.full((n, 1), STOI["="]),
        ans,
    ]
    cols = [newline, *cols] if bos else [*cols, newline]
    return np.concatenate(cols, 1).astype(np.uint16).reshape(-1)


def cached_addition(spec: AdditionSpec, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Generate the dataset once into ``cache_dir/addition-<key>/`` (atomic rename); return it."""
    spec.check()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / f"addition-{spec.key}"

    def build(tmp: Path) -> None:
        splits = split_problems(spec)
        for split, probs in splits.items():
            ids = encode_problems(probs, spec.reverse, spec.bos)
            write_shard(tmp / f"addition_{split}_000000.bin", ids)
        meta = {
            "source": "addition",
            "format_version": FORMAT_VERSION,
            "tokenizer": "chars",
            "chars": CHARS,
            "line": "\\naaa+bbb=cccc" if spec.bos else "aaa+bbb=cccc\\n",
            "reverse": spec.reverse,
            "seed": spec.seed,
            "problems": {s: len(p) for s, p in splits.items()},
            "tokens": {s: len(p) * LINE for s, p in splits.items()},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    return build_in_cache(cache, target, build)
