"""Chain-of-thought arithmetic (``data.source=cot-arithmetic``): generated problems whose
worked solution is written out step by step, for fine-tuning and exact-match evaluation.

Every item is three parts of plain text::

    prompt  "Q: What is 47 + 18?\\n"
    chain   "47 + 18 = 65\\n"                  the worked steps, one per line
    answer  "Answer: 65\\n"                    always this one line, last

Four types of rising difficulty (``KINDS``):

* ``T1`` one operation (``+``, ``-``, ``*``) on small numbers, one line of working;
* ``T2`` addition or subtraction of 3-4 digit numbers, column by column with carries/borrows;
* ``T3`` a chain of 3-4 operations from a start value, every intermediate result written;
* ``T4`` templated word problems (people, objects, quantities; 2-3 steps), the equations in
  the chain.

The character set is small (letters, digits, space, ``.,:?`` and ``+ - * / =``, newline) so a
character-level run can learn it when its vocabulary holds those characters.

Train and test are disjoint by construction: each problem has a canonical form (its type,
template and numbers; names and objects aside), and a keyed hash of it puts the problem in
the test pool (:data:`TEST_SHARE` of all problems) or the training pool; each split draws only
from its own pool. Test items are also distinct from each other; training items may repeat. The
same ``data.cot_seed`` always gives the same items in the same order.

Training windows (:class:`PackedExamples`) pack whole examples: each epoch shuffles the
examples (seeded by the run's seed and the epoch) and fills windows of ``block_size + 1``
tokens greedily in that order; an example that does not fit starts the next window, the rest
of a window is padding. No example straddles two windows. Only chain and answer tokens are
targets: the prompt's and the padding's are ``IGNORE_INDEX``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from symbreak.data.tokenizer import CharTokenizer, Tokenizer
from symbreak.errors import DataError
from symbreak.seeding import keyed_seed
from symbreak.targets import IGNORE_INDEX

SOURCE = "cot-arithmetic"
KINDS = ("T1", "T2", "T3", "T4")
TEST_SHARE = 0.2  # share of all problems (by canonical hash) reserved for the test split
ANSWER_PREFIX = "Answer:"
ANSWER_RE = re.compile(r"^Answer:\s*(-?\d+)", re.MULTILINE)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CotItem:
    """One problem: ``prompt`` + ``chain`` + ``answer line`` is its whole text."""

    kind: str
    canonical: str  # type, template and numbers: what the train/test partition hashes
    prompt: str
    chain: str
    answer: int

    @property
    def completion(self) -> str:
        """What the model is trained to write: the chain and the answer line."""
        return self.chain + answer_line(self.answer)

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def answer_line(answer: int) -> str:
    return f"{ANSWER_PREFIX} {answer}\n"


def extract_answer(text: str) -> int | None:
    """The integer on the first line that starts with ``Answer:`` (anything after the
    number is ignored), or None when no such line holds a number."""
    m = ANSWER_RE.search(text)
    return int(m.group(1)) if m else None


def answer_complete(text: str) -> bool:
    """True once ``text`` holds a whole answer line (``Answer:`` ... newline)."""
    i = text.find(ANSWER_PREFIX)
    while i >= 0:
        if (i == 0 or text[i - 1] == "\n") and "\n" in text[i:]:
            return True
        i = text.find(ANSWER_PREFIX, i + 1)
    return False


# --------------------------------------------------------------------------------------------
# The four generators
# --------------------------------------------------------------------------------------------

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _t1(rng: random.Random) -> CotItem:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
    c = _OPS[op](a, b)
    return CotItem(
        "T1", f"T1|{a}{op}{b}", f"Q: What is {a} {op} {b}?\n", f"{a} {op} {b} = {c}\n", c
    )


_PLACES = ("units", "tens", "hundreds", "thousands")


def _t2(rng: random.Random) -> CotItem:
    digits = rng.choice((3, 4))
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    op = rng.choice("+-")
    if op == "-" and a < b:
        a, b = b, a
    lines = [f"{a} {op} {b}, column by column:\n"]
    carry = 0
    for i in range(digits):
        da, db = a // 10**i % 10, b // 10**i % 10
        if op == "+":
            s = da + db + carry
            lines.append(
                f"{_PLACES[i]}: {da} + {db} + {carry} = {s}, write {s % 10}, carry {s // 10}\n"
            )
            carry = s // 10
        else:
            d = da - db - carry
            if d >= 0:
                lines.append(f"{_PLACES[i]}: {da} - {db} - {carry} = {d}, write {d}, borrow 0\n")
                carry = 0
            else:
                lines.append(
                    f"{_PLACES[i]}: {da} + 10 - {db} - {carry} = {d + 10}, write {d + 10}, "
                    "borrow 1\n"
                )
                carry = 1
    c = _OPS[op](a, b)
    lines.append(f"{a} {op} {b} = {c}\n")
    return CotItem("T2", f"T2|{a}{op}{b}", f"Q: What is {a} {op} {b}?\n", "".join(lines), c)


_STEP_WORDS = {"+": "add {k}", "-": "subtract {k}", "*": "multiply by {k}"}


def _t3(rng: random.Random) -> CotItem:
    x = start = rng.randint(2, 20)
    steps = []
    for _ in range(rng.choice((3, 4))):
        op = rng.choice("+-*")
        k = rng.randint(2, 4) if op == "*" else rng.randint(1, 20)
        steps.append((op, k))
    words = [_STEP_WORDS[op].format(k=k) for op, k in steps]
    said = ", ".join(words[:-1]) + f", then {words[-1]}"
    prompt = f"Q: Start with {start}. {said[0].upper()}{said[1:]}. What is the result?\n"
    chain = []
    for op, k in steps:
        y = _OPS[op](x, k)
        chain.append(f"{x} {op} {k} = {y}\n")
        x = y
    canonical = "T3|" + str(start) + "".join(f"{op}{k}" for op, k in steps)
    return CotItem("T3", canonical, prompt, "".join(chain), x)


_NAMES = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gina", "Hugo", "Ivy", "Jack", "Lena", "Max")
_OBJECTS = ("apples", "pens", "books", "coins", "stamps", "marbles", "cards", "shells")


def _t4(rng: random.Random) -> CotItem:
    n, m = rng.sample(_NAMES, 2)
    obj = rng.choice(_OBJECTS)
    template = rng.randrange(4)
    if template == 0:  # has, buys more, gives some away
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        c = rng.randint(1, a + b)
        prompt = (
            f"Q: {n} has {a} {obj}. {n} buys {b} more, then gives {c} to {m}. "
            f"How many {obj} does {n} have now?\n"
        )
        chain, r = f"{a} + {b} = {a + b}\n{a + b} - {c} = {a + b - c}\n", a + b - c
        nums = (a, b, c)
    elif template == 1:  # boxes of, gives away
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        c = rng.randint(1, a * b)
        prompt = (
            f"Q: {n} has {a} boxes with {b} {obj} in each box. {n} gives {c} {obj} to {m}. "
            f"How many {obj} does {n} have left?\n"
        )
        chain, r = f"{a} * {b} = {a * b}\n{a * b} - {c} = {a * b - c}\n", a * b - c
        nums = (a, b, c)
    elif template == 2:  # pooled, shared equally
        k, q = rng.randint(2, 6), rng.randint(2, 15)
        t = k * q
        a = rng.randint(1, t - 1)
        b = t - a
        prompt = (
            f"Q: {n} has {a} {obj} and {m} has {b} {obj}. They share all of them equally "
            f"among {k} friends. How many {obj} does each friend get?\n"
        )
        chain, r = f"{a} + {b} = {t}\n{t} / {k} = {q}\n", q
        nums = (a, b, k)
    else:  # three steps: packs, eats some, finds more
        a, b = rng.randint(2, 8), rng.randint(2, 10)
        c, d = rng.randint(1, a * b), rng.randint(1, 30)
        s, t = a * b, a * b - c
        prompt = (
            f"Q: {n} buys {a} packs of {b} {obj}. {n} loses {c} of them, then {m} gives "
            f"{n} {d} more. How many {obj} does {n} have?\n"
        )
        chain, r = f"{a} * {b} = {s}\n{s} - {c} = {t}\n{t} + {d} = {t + d}\n", t + d
        nums = (a, b, c, d)
    canonical = f"T4|{template}|" + ",".join(map(str, nums))
    return CotItem("T4", canonical, prompt, chain, r)


GENERATORS = {"T1": _t1, "T2": _t2, "T3": _t3, "T4": _t4}


def in_test_pool(canonical: str) -> bool:
    """The partition: a problem is a test problem iff its canonical form hashes below
    :data:`TEST_SHARE` (a fixed key, so every seed and every size shares one partition)."""
    h = hashlib.blake2b(canonical.encode(), digest_size=8, key=b"symbreak-cot").digest()
    return int.from_bytes(h, "big") / 2**64 < TEST_SHARE


@dataclass(frozen=True)
class CotSpec:
    """The ``data.cot_*`` settings that decide the items."""

    n_train: int = 10000
    n_test: int = 1000
    mix: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    seed: int = 0

    def check(self) -> None:
        if self.n_train < 1 or self.n_test < 1:
            raise DataError(
                f"data.cot_train and data.cot_test must be at least 1, got {self.n_train} and "
                f"{self.n_test}"
            )
        if len(self.mix) != len(KINDS) or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise DataError(
                f"data.cot_mix must be {len(KINDS)} non-negative weights (T1..T4) with a "
                f"positive sum, got {list(self.mix)}"
            )

    def counts(self, n: int) -> list[int]:
        """Items of each type among ``n``: the weights' shares, rounded by largest remainder."""
        w = np.asarray(self.mix, dtype=np.float64)
        exact = n * w / w.sum()
        out = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - out), kind="stable")[: n - int(out.sum())]:
            out[i] += 1
        return out.tolist()


_MAX_TRIES = 200  # draws per wanted distinct test item before the pool counts as exhausted


def generate_split(spec: CotSpec, split: str) -> list[CotItem]:
    """The items of ``split`` ("train" or "test"), deterministic in ``spec``.

    Train: the types' items shuffled together. Test: distinct problems, interleaved by type
    (T1, T2, T3, T4, T1, ...) so that any prefix (``--problems N``) keeps the mix.
    """
    spec.check()
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    want_test = split == "test"
    n = spec.n_test if want_test else spec.n_train
    per_kind: list[list[CotItem]] = []
    for kind, count in zip(KINDS, spec.counts(n), strict=True):
        rng = random.Random(keyed_seed("cot", spec.seed, split, kind))
        gen, items, seen, tries = GENERATORS[kind], [], set(), 0
        while len(items) < count:
            tries += 1
            if tries > _MAX_TRIES * max(count, 1):
                raise DataError(
                    f"data.cot_test={spec.n_test} asks for more distinct {kind} problems than "
                    "its test pool holds; lower data.cot_test or that type's data.cot_mix weight"
                )
            item = gen(rng)
            if in_test_pool(item.canonical) != want_test:
                continue
            if want_test:
                if item.canonical in seen:
                    continue
                seen.add(item.canonical)
            items.append(item)
        per_kind.append(items)
    if want_test:
        out = []
        for i in range(max(map(len, per_kind))):
            out += [items[i] for items in per_kind if i < len(items)]
        return out
    out = [item for items in per_kind for item in items]
    random.Random(keyed_seed("cot-order", spec.seed)).shuffle(out)
    return out


def task_characters() -> str:
    """Every character the task's items can use, sorted."""
    chars = set("0123456789+-*/=.,:? \n") | set(ANSWER_PREFIX)
    chars |= set("".join(_NAMES) + "".join(_OBJECTS))
    chars |= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return "".join(sorted(chars))


def check_vocabulary(tok: Tokenizer, where: str) -> None:
    """A character-level vocabulary must hold every character of the task: one line naming
    the missing ones otherwise."""
    if not isinstance(tok, CharTokenizer) and tok.name != "chars":
        return
    have = set(tok.chars)
    missing = [c for c in task_characters() if c not in have]
    if missing:
        shown = " ".join(repr(c) for c in missing)
        raise DataError(
            f"{where}'s character vocabulary lacks {shown}, which data.source={SOURCE} writes; "
            "fine-tune a GPT-2-vocabulary run or a character-level run whose data holds them"
        )


# --------------------------------------------------------------------------------------------
# Tokens, masks, packing
# --------------------------------------------------------------------------------------------


@dataclass
class EncodedItems:
    """Items as token ids: item i is ``ids[starts[i]:starts[i] + lengths[i]]``, the first
    ``prompts[i]`` of them its prompt."""

    ids: np.ndarray  # int64, all items concatenated
    starts: np.ndarray
    lengths: np.ndarray
    prompts: np.ndarray
    kinds: list[str]

    def __len__(self) -> int:
        return len(self.lengths)


def encode_items(items: Sequence[CotItem], tok: Tokenizer) -> EncodedItems:
    """Prompt and completion are encoded separately (the prompt ends with a newline, so a
    BPE merge never crosses the boundary)."""
    chunks, prompts, lengths = [], [], []
    for item in items:
        p, c = tok.encode(item.prompt), tok.encode(item.completion)
        chunks.append(p + c)
        prompts.append(len(p))
        lengths.append(len(p) + len(c))
    lengths_a = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths_a)[:-1])).astype(np.int64)
    ids = np.fromiter((t for ch in chunks for t in ch), dtype=np.int64, count=int(lengths_a.sum()))
    return EncodedItems(
        ids, starts, lengths_a, np.asarray(prompts, dtype=np.int64), [i.kind for i in items]
    )


def pack_order(lengths: np.ndarray, order: np.ndarray, window: int) -> list[list[int]]:
    """Greedy packing: examples in ``order`` fill windows of ``window`` tokens; one that does
    not fit in what is left starts the next window."""
    groups: list[list[int]] = []
    used = window + 1  # forces a first window
    for i in order.tolist():
        n = int(lengths[i])
        if n > window:
            raise DataError(f"an example of {n} tokens does not fit a window of {window}")
        if used + n > window:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += n
    return groups


class PackedWindows:
    """Windows of whole examples: ``get`` gives the tokens (``len`` x ``block_size + 1``, the
    interface of :class:`~symbreak.data.loader.TokenWindows`), ``target_mask`` which of the
    ``block_size`` next-token targets are chain or answer tokens."""

    def __init__(self, enc: EncodedItems, groups: list[list[int]], block_size: int, pad: int):
        self.block_size = block_size
        n = len(groups)
        self.tokens = np.full((n, block_size + 1), pad, dtype=np.int64)
        self.targets = np.zeros((n, block_size + 1), dtype=bool)  # per token: is a target
        for w, group in enumerate(groups):
            at = 0
            for i in group:
                s, length, p = enc.starts[i], enc.lengths[i], enc.prompts[i]
                self.tokens[w, at : at + length] = enc.ids[s : s + length]
                self.targets[w, at + p : at + length] = True
                at += length
        self.n_tokens = int(self.tokens.size)

    def __len__(self) -> int:
        return len(self.tokens)

    def get(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        return torch.from_numpy(self.tokens[np.asarray(indices, dtype=np.int64)])

    def target_mask(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        """(n, block_size) bool: position t's target (token t + 1) is trained."""
        return torch.from_numpy(self.targets[np.asarray(indices, dtype=np.int64), 1:])


def masked_pairs(windows: PackedWindows, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of packed windows: y is ``IGNORE_INDEX`` wherever the target is a prompt or a
    padding token."""
    w = windows.get(indices)
    # clone, not contiguous(): a single row's slices are already contiguous views of w
    x, y = w[:, :-1].clone(), w[:, 1:].clone()
    y[~windows.target_mask(indices)] = IGNORE_INDEX
    return x, y


class PackedExamples:
    """The training split as epochs of packed windows: epoch e packs the examples in the
    order of a permutation seeded by ``(seed, e)``. Windows per epoch vary slightly with the
    order; sample s of the run is window ``s - first(e)`` of the epoch e that holds it."""

    def __init__(self, enc: EncodedItems, block_size: int, pad: int, seed: int) -> None:
        too_long = enc.lengths > block_size + 1
        if too_long.any():
            i = int(np.argmax(enc.lengths))
            raise DataError(
                f"a {enc.kinds[i]} example is {int(enc.lengths[i])} tokens, more than "
                f"model.block_size + 1 = {block_size + 1}; fine-tune a model with a longer "
                "context or lower the share of that type (data.cot_mix)"
            )
        self.enc, self.block_size, self.pad, self.seed = enc, block_size, pad, seed
        self._epochs: dict[int, PackedWindows] = {}
        self._sizes: list[int] = []  # windows in epochs 0, 1, ...

    def order(self, epoch: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(keyed_seed("cot-epoch", self.seed, epoch))
        return torch.randperm(len(self.enc), generator=gen).numpy()

    def epoch(self, e: int) -> PackedWindows:
        packed = self._epochs.get(e)
        if packed is None:
            groups = pack_order(self.enc.lengths, self.order(e), self.block_size + 1)
            packed = PackedWindows(self.enc, groups, self.block_size, self.pad)
            if len(self._epochs) >= 2:  # a batch spans at most two epochs
                self._epochs.pop(min(self._epochs))
            self._epochs[e] = packed
        return packed

    def windows_in(self, e: int) -> int:
        while len(self._sizes) <= e:
            k = len(self._sizes)
            self._sizes.append(
                len(pack_order(self.enc.lengths, self.order(k), self.block_size + 1))
            )
        return self._sizes[e]

    def windows_in_epochs(self, epochs: int) -> int:
        return sum(self.windows_in(e) for e in range(epochs))

    def __len__(self) -> int:
        return self.windows_in(0)

    def samples(self, s: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of global samples ``s`` (in that order)."""
        where = []
        for one in s.tolist():
            e, pos = 0, one
            while pos >= self.windows_in(e):
                pos -= self.windows_in(e)
                e += 1
            where.append((e, pos))
        x = torch.empty(len(where), self.block_size, dtype=torch.long)
        y = torch.empty_like(x)
        for e in sorted({e for e, _ in where}):
            rows = [k for k, (ek, _) in enumerate(where) if ek == e]
            x[rows], y[rows] = masked_pairs(self.epoch(e), np.asarray([where[k][1] for k in rows]))
        return x, y


def pad_id(tok: Tokenizer) -> int:
    """Padding: end of text where the tokenizer has one (never a target, never attended to by
    a real token, which all come before it in a window)."""
    return tok.eot_id if tok.eot_id is not None else 0
