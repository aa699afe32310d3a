"""A documented, deterministic classifier of GPT-2 tokens into (overlapping) classes.

Each token id t < 50257 is turned into its bytes (``decode_single_token_bytes``). If those bytes
are not valid UTF-8 on their own, t is a ``broken_bytes`` piece and gets no string class.
Otherwise, with ``s`` its string and ``w = s.strip()``:

==================  ==========================================================================
class               rule
==================  ==========================================================================
punctuation         ``w`` non-empty and every character is Unicode punctuation (category P*)
numbers             ``w`` non-empty and every character is a decimal digit (``str.isdigit``)
whitespace          ``s`` non-empty and all whitespace (spaces, tabs, newlines)
newlines            whitespace that contains a newline
function_words      ``w.lower()`` in :data:`FUNCTION_WORDS` (closed list, minus logical words)
logical             ``w.lower()`` in :data:`LOGICAL_WORDS` ("if", "given", "assuming", ...):
                    with or without a leading space, any capitalisation
capitalised         ``w`` alphabetic and its first letter upper case
lowercase           ``w`` alphabetic and all lower case
word_start          ``s`` starts with one space followed by a letter (" the", " Given")
continuation        ``s`` starts with a letter (no leading space: "ing", "tion")
markup              ``w`` contains one of ``<>[]{}=_|\\/`~^#@$%&*+`` or is one symbol repeated
                    3+ times ("----", "...."): brackets, braces, code and markup debris
broken_bytes        the token's bytes are not valid UTF-8 alone (a piece of a character)
frequent            the most common ids of the analysed text that together make up half of
                    its tokens (ties: lower id first)
rare                ids seen at most once in the analysed text
==================  ==========================================================================

Classes overlap (" If" is logical, capitalised and word_start). The end-of-text token 50256 is
in no string class. The member list of every class is written to analysis.json.
"""

from __future__ import annotations

import functools
import unicodedata

import torch

from symbreak.data.tokenizer import EOT_ID, GPT2_VOCAB_SIZE, get_tokenizer

# closed word lists, matched on the lower-cased stripped token
_LOGICAL = """if then else given assuming assume suppose supposing therefore thus hence because
    since so not no all some every each any none unless implies imply either neither nor whether
    when whenever only and or but true false let consequently"""
_FUNCTION = """a an the this that these those of to in on at by for with from into onto upon about
    over under between through during before after above below as than is are was were be been
    being am do does did have has had having will would shall should can could may might must
    i me my mine you your yours he him his she her hers it its we us our ours they them their
    theirs who whom whose which what where how why there here also very too just much many more
    most such own same other another again further once both few s t"""
LOGICAL_WORDS = frozenset(_LOGICAL.split())
FUNCTION_WORDS = frozenset(_FUNCTION.split()) - LOGICAL_WORDS

MARKUP_CHARS = frozenset("<>[]{}=_|\\/`~^#@$%&*+")

STRING_CLASSES = (
    "punctuation",
    "numbers",
    "whitespace",
    "newlines",
    "function_words",
    "logical",
    "capitalised",
    "lowercase",
    "word_start",
    "continuation",
    "markup",
    "broken_bytes",
)
FREQUENCY_CLASSES = ("frequent", "rare")
CLASS_NAMES = STRING_CLASSES + FREQUENCY_CLASSES


def token_bytes(ids: range | list[int]) -> list[bytes]:
    enc = get_tokenizer()
    return [enc.decode_single_token_bytes(int(t)) for t in ids]


def string_classes(b: bytes, token_id: int = -1) -> set[str]:
    """The string classes of one token given its bytes (see the module table)."""
    if token_id == EOT_ID:
        return set()
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return {"broken_bytes"}
    out: set[str] = set()
    w = s.strip()
    if w and all(unicodedata.category(c).startswith("P") for c in w):
        out.add("punctuation")
    if w and w.isdigit():
        out.add("numbers")
    if s and s.isspace():
        out.add("whitespace")
        if "\n" in s:
            out.add("newlines")
    low = w.lower()
    if low in LOGICAL_WORDS:
        out.add("logical")
    elif low in FUNCTION_WORDS:
        out.add("function_words")
    if w.isalpha() and w[0].isupper():
        out.add("capitalised")
    elif w.isalpha() and w.islower():
        out.add("lowercase")
    if len(s) >= 2 and s[0] == " " and s[1].isalpha():
        out.add("word_start")
    elif s and s[0].isalpha():
        out.add("continuation")
    repeated_symbol = len(w) >= 3 and len(set(w)) == 1 and not w[0].isalnum()
    if w and (repeated_symbol or any(c in MARKUP_CHARS for c in w)):
        out.add("markup")
    return out


def frequency_classes(counts: torch.Tensor) -> dict[str, list[int]]:
    """``frequent`` (most common ids covering half the tokens) and ``rare`` (count <= 1).

    ``counts``: occurrences per token id in the analysed text (length >= the population)."""
    counts = counts.to(torch.int64)
    total = int(counts.sum())
    # most common first; ties by lower id (stable sort of -count over ascending ids)
    order = torch.sort(-counts, stable=True).indices
    covered = torch.cumsum(counts[order], 0)
    n_frequent = int(torch.searchsorted(covered, (total + 1) // 2)) + 1 if total else 0
    frequent = sorted(order[:n_frequent].tolist())
    rare = torch.nonzero(counts <= 1).flatten().tolist()
    return {"frequent": frequent, "rare": rare}


@functools.cache
def _string_members(n_vocab: int) -> dict[str, tuple[int, ...]]:
    members: dict[str, list[int]] = {name: [] for name in STRING_CLASSES}
    for t, b in enumerate(token_bytes(range(n_vocab))):
        for name in string_classes(b, t):
            members[name].append(t)
    return {name: tuple(ids) for name, ids in members.items()}


def classify_vocab(counts: torch.Tensor, n_vocab: int = GPT2_VOCAB_SIZE) -> dict[str, list[int]]:
    """Class name -> sorted member ids among ``0..n_vocab-1`` (every class, possibly empty)."""
    members = {name: list(ids) for name, ids in _string_members(n_vocab).items()}
    members.update(frequency_classes(counts[:n_vocab]))
    return members


def token_string(t: int) -> str:
    """A token's text for display: invalid UTF-8 shown with replacement characters."""
    return get_tokenizer().decode_single_token_bytes(int(t)).decode("utf-8", errors="replace")
