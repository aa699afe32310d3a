"""Puzzle items: the seeded built-in suite and JSON Lines puzzle files.

Why procedural: a handful of hand-written prompts makes accuracies swing by tens of points on
one item. The built-in suite draws hundreds of items per category from word pools and rules,
so confidence intervals are narrow enough to compare runs, and a seed makes it reproducible.

Two kinds of item:

* completion - ``prompt`` and ``expected``: the model should continue the prompt with the
  expected answer (scored by Top-1/Top-5/rank of its first token and cross-entropies).
* comparison - ``prompt`` (the well-formed or true text) and ``compare`` (the other one): the
  model should give the well-formed text the lower per-token cross-entropy.

Built-in categories (:data:`CATEGORIES`)::

    pattern_numeric   "3, 7, 11, 15," -> " 19"     arithmetic (up or down), counting by k,
                                                   geometric (x2, x3, /2, /3), Fibonacci-like
    pattern_alpha     "X Y Z A" -> " B"            runs with wrap-around, every other letter,
                                                   backwards runs; upper or lower case
    retrieval_near    "The cup is red. ... The box is green. The box is" -> " green"
                      (the queried fact is the last one: 0 distractors between it and the query)
    retrieval_far     the queried fact comes first, then 5 to 9 distractor facts
    simple_inference  modus ponens (two conditionals, one applies), syllogisms (two "All Xs are
                      Ys", one applies), transitive comparisons ("the tallest of the three is")
    copy              "Copy: red fox\\nOutput: red fox\\nCopy: old map\\nOutput:" -> " old map"
    negation          "Fire is hot." vs "Fire is not hot."; half the items have the "not" in
                      the true text ("Fire is not cold." vs "Fire is cold."), so preferring
                      the shorter text is not rewarded
    syntax            a sentence with correct punctuation vs the same words with punctuation
                      shifted, swapped (, <-> .) or detached (" ,")

Single-token answers: every completion answer starts with a space, and its first word is a
*single, common* GPT-2 token: ``encode(" " + word)`` is exactly one id below
:data:`COMMON_ID_LIMIT`. GPT-2's ids follow its BPE merge order, which follows frequency, so a
low id is a frequent token. This is checked with the tokenizer, not assumed: every answer pool
is verified when the suite is built (:func:`check_answer_pools`), numbers are kept to those
that pass (0..120 all do), and the tests check every generated item. The prompt is tokenized on
its own and the answer appended (``encode(prompt) + encode(expected)``); the tests check that
this equals ``encode(prompt + expected)`` for every built-in item.

Determinism: each category has its own random stream keyed by ``(suite seed, category)``, and
only :meth:`random.Random.random` is used (the one part of :mod:`random` whose stream Python
promises to keep across versions; choice and shuffle are built on it here). Items are drawn one
after another and duplicates skipped, so the first k items of ``per_category=n`` are those of
``per_category=k``. :data:`SUITE_VERSION` changes whenever the generator's output changes.

Caveat on independence: negation items reuse ~40 facts under 6 framings, so items sharing a
fact are correlated and their confidence intervals are somewhat optimistic.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from symbreak.data import encode
from symbreak.errors import DataError, SymbreakError
from symbreak.eval.options import DEFAULT_PER_CATEGORY
from symbreak.seeding import keyed_seed

SUITE_VERSION = 1
COMMON_ID_LIMIT = 20000  # "common" GPT-2 token: among the first 20k BPE ids (merge order)
MAX_ANSWER_NUMBER = 120

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One puzzle. Exactly one of ``expected`` (completion) and ``compare`` (comparison) is set.

    ``source`` says where it came from: ``"builtin"`` or ``"FILE:LINE"``.
    """

    category: str
    prompt: str
    expected: str | None = None
    compare: str | None = None
    source: str = "builtin"

    @property
    def kind(self) -> str:
        return "completion" if self.expected is not None else "comparison"

    def to_json(self) -> dict[str, str]:
        """The puzzle-file form of the item (``source`` is not part of the schema)."""
        out = {"category": self.category, "prompt": self.prompt}
        if self.expected is not None:
            out["expected"] = self.expected
        else:
            out["compare"] = self.compare or ""
        return out


# --------------------------------------------------------------------------------------------
# A random stream that is stable across Python versions
# --------------------------------------------------------------------------------------------


class StableRandom:
    """Seeded choices built only on ``random.Random.random()`` (stable across Python versions)."""

    def __init__(self, *key: object) -> None:
        self._r = random.Random(keyed_seed("symbreak-puzzles", *key))

    def random(self) -> float:
        return self._r.random()

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return lo + min(int(self._r.random() * (hi - lo + 1)), hi - lo)

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.randint(0, len(seq) - 1)]

    def shuffle(self, items: list[T]) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.randint(0, i)
            items[i], items[j] = items[j], items[i]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """k distinct elements, in random order."""
        pool = list(seq)
        for i in range(k):
            j = self.randint(i, len(pool) - 1)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


# --------------------------------------------------------------------------------------------
# Word pools (answers are drawn only from pools checked by check_answer_pools)
# --------------------------------------------------------------------------------------------


def _pool(words: str) -> tuple[str, ...]:
    return tuple(words.split())


ENTITIES = _pool(
    "key box door cup car book hat ball bag chair table bed coat shoe bike boat pen clock bell "
    "ring rope wall gate flag shirt bowl plate stone tree flower house road bridge window jar "
    "drum coin map card phone"
)  # all start with a consonant ("a {entity}" is grammatical)
ATTRIBUTES = _pool(
    "red blue green black white yellow brown pink gray purple orange big small old new hot "
    "cold wet dry soft hard heavy light clean dirty open closed broken empty full long short "
    "warm dark bright loud quiet sharp round flat"
)
ROLES = _pool(
    "farmer teacher singer player writer driver king soldier student nurse doctor lawyer pilot "
    "hunter rider worker runner leader cook"
)  # consonant-initial, plural = word + "s"
NAMES = _pool(
    "Anna John Mary Tom Sam Bob Alice Emma Kate Jack Max Ben Dan Paul Mark Rose Adam Ryan Jane "
    "Carl Fred Peter Luke Sarah Laura Mike Nick Tim Steve Lisa Amy Dave Jim Joe Bill Ann Tony "
    "Chris"
)
PLACES = _pool("park school market garden river town city beach forest")
# comparative, superlative of the top, superlative of the bottom
COMPARATIVES = (
    ("taller", "tallest", "shortest"),
    ("older", "oldest", "youngest"),
    ("faster", "fastest", "slowest"),
    ("heavier", "heaviest", "lightest"),
    ("stronger", "strongest", "weakest"),
    ("richer", "richest", "poorest"),
)
# (subject, verb, a true property, a false property)
FACTS = (
    ("fire", "is", "hot", "cold"),
    ("ice", "is", "cold", "hot"),
    ("snow", "is", "white", "black"),
    ("coal", "is", "black", "white"),
    ("the sun", "is", "bright", "dark"),
    ("the night sky", "is", "dark", "bright"),
    ("sugar", "is", "sweet", "bitter"),
    ("honey", "is", "sweet", "sour"),
    ("a lemon", "is", "sour", "sweet"),
    ("water", "is", "wet", "dry"),
    ("the desert", "is", "dry", "wet"),
    ("a feather", "is", "light", "heavy"),
    ("a rock", "is", "hard", "soft"),
    ("a pillow", "is", "soft", "hard"),
    ("an elephant", "is", "big", "small"),
    ("a mouse", "is", "small", "big"),
    ("a giraffe", "is", "tall", "short"),
    ("grass", "is", "green", "red"),
    ("the sky", "is", "blue", "green"),
    ("blood", "is", "red", "blue"),
    ("milk", "is", "white", "black"),
    ("a turtle", "is", "slow", "fast"),
    ("a cheetah", "is", "fast", "slow"),
    ("summer", "is", "warm", "cold"),
    ("winter", "is", "cold", "warm"),
    ("a knife", "is", "sharp", "dull"),
    ("a baby", "is", "young", "old"),
    ("a lion", "is", "strong", "weak"),
    ("a ball", "is", "round", "square"),
    ("steel", "is", "hard", "soft"),
    ("the ocean", "is", "deep", "shallow"),
    ("a whisper", "is", "quiet", "loud"),
    ("thunder", "is", "loud", "quiet"),
    ("a snail", "is", "slow", "fast"),
    ("an ant", "is", "small", "big"),
    ("a mountain", "is", "high", "low"),
    ("chocolate", "is", "sweet", "sour"),
    ("a brick", "is", "heavy", "light"),
    ("lemons", "are", "sour", "sweet"),
    ("rabbits", "are", "fast", "slow"),
    ("stars", "are", "bright", "dark"),
    ("tigers", "are", "dangerous", "harmless"),
)
NEGATION_FRAMES = (
    "{S} {v} {adj}.",
    "It is true that {s} {v} {adj}.",
    "Everyone knows that {s} {v} {adj}.",
    "As we all know, {s} {v} {adj}.",
    "In general, {s} {v} {adj}.",
    "Most people agree that {s} {v} {adj}.",
)
# Well-formed sentences; {N}/{M} names, {o}/{o2}/{o3} entities, {a} attribute, {p} place.
SYNTAX_FRAMES = (
    "{N} saw the {o}, and then {M} went home.",
    "After the rain, {N} took the {o} to the {p}.",
    "{N} bought a {o}, a {o2}, and a {o3}.",
    "When {N} came home, the {o} was {a}.",
    "{N} said that the {o} was {a}, but {M} did not agree.",
    "The {o} was {a}, so {N} stayed in the {p}.",
    "If the {o} is {a}, {N} will call {M}.",
    "{N} and {M} found the {o} near the {p}.",
)

# pools whose words become answers (first word of ``expected``)
ANSWER_POOLS: dict[str, Sequence[str]] = {
    "ENTITIES": ENTITIES,
    "ATTRIBUTES": ATTRIBUTES,
    "ROLES": ROLES,
    "NAMES": NAMES,
    "LETTERS": tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
}


def is_common_single_token(word: str) -> bool:
    """True when ``" " + word`` is one GPT-2 token with an id below :data:`COMMON_ID_LIMIT`."""
    ids = encode(" " + word)
    return len(ids) == 1 and ids[0] < COMMON_ID_LIMIT


@functools.cache
def answer_numbers() -> tuple[int, ...]:
    """Numbers 0..MAX_ANSWER_NUMBER whose " N" is a common single token (all of them, today)."""
    return tuple(n for n in range(MAX_ANSWER_NUMBER + 1) if is_common_single_token(str(n)))


@functools.cache
def check_answer_pools() -> None:
    """Verify with the tokenizer that every answer word is a single, common token.

    The pools are constants, so a failure is a bug in this module (a word added carelessly).
    """
    bad = [w for pool in ANSWER_POOLS.values() for w in pool if not is_common_single_token(w)]
    if bad:
        raise RuntimeError(f"answer words that are not single common GPT-2 tokens: {bad}")


# --------------------------------------------------------------------------------------------
# Generators: one function per category, (rng) -> Item
# --------------------------------------------------------------------------------------------


def _numbers_item(rng: StableRandom) -> tuple[list[int], int] | None:
    kind = rng.random()
    if kind < 0.35:  # arithmetic, up or down
        d = rng.randint(1, 12) * (-1 if rng.random() < 0.25 else 1)
        length = rng.randint(4, 6)
        start = rng.randint(0, 60) if d > 0 else rng.randint(length * -d, 110)
        seq = [start + i * d for i in range(length + 1)]
    elif kind < 0.55:  # counting by k
        k = rng.randint(2, 10)
        length = rng.randint(4, 6)
        start = k * rng.randint(0, 3)
        seq = [start + i * k for i in range(length + 1)]
    elif kind < 0.75:  # geometric: multiply or divide by 2 or 3
        r = rng.choice((2, 3))
        length = rng.randint(4, 5)
        if rng.random() < 0.5:
            start = rng.randint(1, 7)
            seq = [start * r**i for i in range(length + 1)]
        else:
            last = rng.randint(1, 40)
            seq = [last * r ** (length - i) for i in range(length + 1)]
    else:  # Fibonacci-like: each term is the sum of the previous two
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        seq = [a, b]
        for _ in range(rng.randint(4, 5)):  # at least 5 terms shown: unambiguous
            seq.append(seq[-1] + seq[-2])
    if any(x < 0 for x in seq) or seq[-1] not in answer_numbers():
        return None
    return seq[:-1], seq[-1]


def gen_pattern_numeric(rng: StableRandom) -> Item | None:
    drawn = _numbers_item(rng)
    if drawn is None:
        return None
    shown, answer = drawn
    return Item("pattern_numeric", ", ".join(map(str, shown)) + ",", f" {answer}")


def gen_pattern_alpha(rng: StableRandom) -> Item:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if rng.random() < 0.5:
        alphabet = alphabet.lower()
    step = rng.choice((1, 1, 2, -1))  # runs, every other letter, backwards runs
    length = rng.randint(4, 6)
    start = rng.randint(0, 25)
    letters = [alphabet[(start + i * step) % 26] for i in range(length + 1)]
    return Item("pattern_alpha", " ".join(letters[:-1]), " " + letters[-1])


def _retrieval(rng: StableRandom, category: str, target_first: bool) -> Item:
    n = rng.randint(6, 10)
    entities = rng.sample(ENTITIES, n)
    attributes = rng.sample(ATTRIBUTES, n)
    facts = [f"The {e} is {a}." for e, a in zip(entities, attributes, strict=True)]
    target = 0 if target_first else n - 1
    prompt = " ".join(facts) + f" The {entities[target]} is"
    return Item(category, prompt, " " + attributes[target])


def gen_retrieval_near(rng: StableRandom) -> Item:
    return _retrieval(rng, "retrieval_near", target_first=False)


def gen_retrieval_far(rng: StableRandom) -> Item:
    return _retrieval(rng, "retrieval_far", target_first=True)


def gen_simple_inference(rng: StableRandom) -> Item:
    kind = rng.randint(0, 2)
    if kind == 0:  # modus ponens with a second, inapplicable conditional
        e, e2 = rng.sample(ENTITIES, 2)
        a1, a2, b1, b2 = rng.sample(ATTRIBUTES, 4)
        rules = [f"If the {e} is {a1}, the {e2} is {b1}.", f"If the {e} is {a2}, the {e2} is {b2}."]
        rng.shuffle(rules)
        holds, answer = (a1, b1) if rng.random() < 0.5 else (a2, b2)
        prompt = " ".join(rules) + f" The {e} is {holds}. So the {e2} is"
    elif kind == 1:  # syllogism with a second, inapplicable premise
        x, y, z, w = rng.sample(ROLES, 4)
        rules = [f"All {x}s are {y}s.", f"All {z}s are {w}s."]
        rng.shuffle(rules)
        name = rng.choice(NAMES)
        member, answer = (x, y) if rng.random() < 0.5 else (z, w)
        prompt = " ".join(rules) + f" {name} is a {member}. So {name} is a"
    else:  # transitive comparison over three people
        comparative, top, bottom = rng.choice(COMPARATIVES)
        a, b, c = rng.sample(NAMES, 3)  # a > b > c
        rules = [f"{a} is {comparative} than {b}.", f"{b} is {comparative} than {c}."]
        rng.shuffle(rules)
        ask_top = rng.random() < 0.5
        prompt = " ".join(rules) + f" So the {top if ask_top else bottom} of the three is"
        answer = a if ask_top else c
    return Item("simple_inference", prompt, " " + answer)


def _copy_text(rng: StableRandom) -> str:
    if rng.random() < 0.6:
        return " ".join(rng.sample(ATTRIBUTES + ENTITIES, rng.randint(1, 3)))
    return " ".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 5)))


def gen_copy(rng: StableRandom) -> Item:
    demos = [_copy_text(rng) for _ in range(rng.randint(1, 2))]
    query = _copy_text(rng)
    prompt = "".join(f"Copy: {d}\nOutput: {d}\n" for d in demos) + f"Copy: {query}\nOutput:"
    return Item("copy", prompt, " " + query)


def gen_negation(rng: StableRandom) -> Item:
    subject, verb, true_adj, false_adj = rng.choice(FACTS)
    frame = rng.choice(NEGATION_FRAMES)

    def say(adj: str, negated: bool) -> str:
        v = f"{verb} not" if negated else verb
        return frame.format(S=subject[0].upper() + subject[1:], s=subject, v=v, adj=adj)

    if rng.random() < 0.5:  # "Fire is hot." vs "Fire is not hot."
        return Item("negation", say(true_adj, False), compare=say(true_adj, True))
    return Item("negation", say(false_adj, True), compare=say(false_adj, False))  # "not cold"


_PUNCT = ",."


def _words(sentence: str) -> list[tuple[str, str]]:
    """``"Hi there, you."`` -> ``[("Hi", ""), ("there", ","), ("you", ".")]``."""
    return [(w.rstrip(_PUNCT), w[len(w.rstrip(_PUNCT)) :]) for w in sentence.split(" ")]


def _garble(words: list[tuple[str, str]], how: str) -> str:
    marks = [p for _, p in words]
    n = len(words)
    if how == "shift_left":  # every mark one word too early
        marks = [*marks[1:], ""]
    elif how == "shift_right":  # every mark one word too late (the final "." wraps around)
        marks = [marks[-1], *marks[:-1]]
    elif how == "swap":  # commas and periods exchanged
        marks = [p.translate(str.maketrans(",.", ".,")) for p in marks]
    elif how == "detached":  # a space before every mark
        return " ".join(w + (" " + p if p else "") for w, p in words)
    else:
        raise ValueError(how)
    return " ".join(words[i][0] + marks[i] for i in range(n))


GARBLES = ("shift_left", "shift_right", "swap", "detached")


def gen_syntax(rng: StableRandom) -> Item:
    frame = rng.choice(SYNTAX_FRAMES)
    n, m = rng.sample(NAMES, 2)
    o, o2, o3 = rng.sample(ENTITIES, 3)
    good = frame.format(N=n, M=m, o=o, o2=o2, o3=o3, a=rng.choice(ATTRIBUTES), p=rng.choice(PLACES))
    return Item("syntax", good, compare=_garble(_words(good), rng.choice(GARBLES)))


GENERATORS: dict[str, Callable[[StableRandom], Item | None]] = {
    "pattern_numeric": gen_pattern_numeric,
    "pattern_alpha": gen_pattern_alpha,
    "retrieval_near": gen_retrieval_near,
    "retrieval_far": gen_retrieval_far,
    "simple_inference": gen_simple_inference,
    "copy": gen_copy,
    "negation": gen_negation,
    "syntax": gen_syntax,
}
CATEGORIES: tuple[str, ...] = tuple(GENERATORS)


def generate_category(category: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` distinct items of one built-in category, deterministic for ``(seed, category)``."""
    if category not in GENERATORS:
        raise SymbreakError(
            f"unknown built-in category '{category}'; choose from {', '.join(CATEGORIES)}"
        )
    check_answer_pools()
    rng = StableRandom(seed, category)
    out: list[Item] = []
    seen: set[tuple[str, str | None, str | None]] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise SymbreakError(
                f"the built-in category '{category}' has only about {len(out)} distinct items; "
                f"use --per-category {len(out)} or less"
            )
        item = GENERATORS[category](rng)
        if item is None:
            continue
        key = (item.prompt, item.expected, item.compare)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def builtin_suite(
    seed: int = 0,
    per_category: int = DEFAULT_PER_CATEGORY,
    categories: Iterable[str] | None = None,
) -> list[Item]:
    """The built-in suite: ``per_category`` items of each category, in :data:`CATEGORIES` order."""
    if per_category < 1:
        raise SymbreakError(f"--per-category must be at least 1, got {per_category}")
    chosen = CATEGORIES if categories is None else tuple(categories)
    return [item for c in chosen for item in generate_category(c, per_category, seed)]


# --------------------------------------------------------------------------------------------
# JSON Lines puzzle files
# --------------------------------------------------------------------------------------------

_SCHEMA = (
    'each line must be one JSON object: {"category": ..., "prompt": ..., "expected": ...} or '
    '{"category": ..., "prompt": ..., "compare": ...}'
)
_KEYS = {"category", "prompt", "expected", "compare"}
# Rows that eval and compare add after the categories: a category may not be named like them.
AGGREGATE_ROWS = ("macro", "micro")


def parse_puzzle_line(line: str, path: str | Path = "<puzzles>", number: int = 1) -> Item:
    """One JSONL line -> :class:`Item`; every error starts with "FILE line N"."""
    where = f"{path} line {number}"
    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{where}: not valid JSON ({e.msg} at column {e.colno}); {_SCHEMA}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}; {_SCHEMA}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; {_SCHEMA}")
    for key in ("category", "prompt"):
        if key not in obj:
            raise DataError(f"{where}: missing key '{key}'; {_SCHEMA}")
    has_expected, has_compare = "expected" in obj, "compare" in obj
    if has_expected == has_compare:
        which = "both" if has_expected else "neither of"
        raise DataError(
            f"{where}: has {which} 'expected' and 'compare'; give exactly one "
            "('expected' for a completion, 'compare' for a comparison)"
        )
    for key, value in obj.items():
        if not isinstance(value, str):
            raise DataError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    if not obj["category"].strip():
        raise DataError(f"{where}: 'category' is empty; name the category")
    if not re.fullmatch(r"[\w.:-]+", obj["category"]):
        raise DataError(
            f"{where}: category '{obj['category']}' may only use letters, digits and _.:-"
        )
    if obj["category"].casefold() in AGGREGATE_ROWS:
        raise DataError(
            f"{where}: category '{obj['category']}' is the name of an average row in the "
            f"tables ({', '.join(AGGREGATE_ROWS)}); rename the category"
        )
    for key in ("prompt", "expected", "compare"):
        if key in obj and not obj[key].strip():
            raise DataError(f"{where}: '{key}' is empty; every text must have content")
    return Item(
        category=obj["category"],
        prompt=obj["prompt"],
        expected=obj.get("expected"),
        compare=obj.get("compare"),
        source=f"{path}:{number}",
    )


def read_puzzles(path: str | Path) -> list[Item]:
    """Read a JSON Lines puzzle file. Blank lines are skipped; any other bad line is an error
    naming its line number. A category must hold only one kind of item.

    Write answers with their leading space (``" 4"``) and prompts without a trailing one: the
    answer is tokenized on its own and appended to the prompt's tokens, which matches how
    GPT-2 tokenizes the joined text only when the space starts the answer.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"puzzle file {p} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read puzzle file {p} as UTF-8 text: {e}") from None
    items: list[Item] = []
    kinds: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = parse_puzzle_line(line, p, number)
        first = kinds.setdefault(item.category, (item.kind, number))
        if first[0] != item.kind:
            raise DataError(
                f"{p} line {number}: category '{item.category}' mixes {first[0]} items (line "
                f"{first[1]}) with {item.kind} items; use another category name"
            )
        items.append(item)
    if not items:
        raise DataError(f"puzzle file {p} holds no items; {_SCHEMA}")
    return items


def write_puzzles(items: Iterable[Item], path: str | Path) -> None:
    """Write items as JSON Lines (e.g. to freeze the built-in suite into a file)."""
    lines = [json.dumps(item.to_json(), ensure_ascii=False) for item in items]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
