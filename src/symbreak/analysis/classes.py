"""A documented, deterministic classifier of token ids into (overlapping) classes, for any
tokenizer: the classes come from each token's decoded text.

The class set follows the run's tokenizer (:func:`class_scheme`): ``gpt2`` for GPT-2 BPE and
any vocabulary whose tokens are longer than one character, ``char`` for a vocabulary of single
characters (``symbreak prepare --tokenizer char``, the addition task's table).

**GPT-2 (``gpt2``).** Each token id t < 50257 is turned into its bytes
(``decode_single_token_bytes``). If those bytes are not valid UTF-8 on their own, t is a
``broken_bytes`` piece and gets no string class. Otherwise, with ``s`` its string and
``w = s.strip()``:

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
in no string class. Another multi-character vocabulary gets the same rules on each token's
decoded string (``tokenizer.decode([t])``; never ``broken_bytes``).

**Single characters (``char``).** With ``c`` the token's character:

==================  ==========================================================================
class               rule
==================  ==========================================================================
lowercase           ``c`` is a lower-case letter (``str.isalpha`` and ``str.islower``)
uppercase           ``c`` is an upper-case letter (``str.isalpha`` and ``str.isupper``)
vowels              ``c`` is a Latin vowel a e i o u, either case, accents ignored ("é")
consonants          ``c`` is any other Latin letter b-z, either case, accents ignored (y too)
digits              ``c`` is a decimal digit (``str.isdecimal``: "0"-"9")
space               ``c`` is the space " "
newline             ``c`` is a line break ("\\n" or "\\r")
whitespace          ``c`` is any whitespace (space, newline, tab, ...)
punctuation         ``c`` is Unicode punctuation (category P*: . , ; : ! ? ' " - ( ) ...)
quotes              ``c`` is an apostrophe or a quotation mark (' " ` and their typographic
                    forms); also in ``punctuation``
symbols             ``c`` is a Unicode symbol (category S*: + = < > $ ^ | ~ ...)
frequent, rare      as for GPT-2, on the analysed text
==================  ==========================================================================

The end-of-text id (0 for a ``char`` vocabulary) is in no string class and is shown as
``<|endoftext|>``. With one character per id, ``space`` and ``newline`` have a single member
each: no test on so few ids can be significant (at best p = K/N, see docs/analysis.md); they
are there to be read, and ``whitespace`` pools them.

The member list of every class is written to analysis.json; classes with no member in a scope's
population are not tested.
"""

from __future__ import annotations

import functools
import unicodedata

import torch

from symbreak.data.tokenizer import (
    EOT_ID,
    EOT_TOKEN,
    GPT2_VOCAB_SIZE,
    GPT2Tokenizer,
    Tokenizer,
    get_tokenizer,
)

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

CHAR_STRING_CLASSES = (
    "lowercase",
    "uppercase",
    "vowels",
    "consonants",
    "digits",
    "space",
    "newline",
    "whitespace",
    "punctuation",
    "quotes",
    "symbols",
)
CHAR_CLASS_NAMES = CHAR_STRING_CLASSES + FREQUENCY_CLASSES
QUOTE_CHARS = frozenset(
    "'\"`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb\u2039\u203a"
)
VOWELS = frozenset("aeiou")

SCHEMES = ("gpt2", "char")


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


def char_classes(c: str) -> set[str]:
    """The string classes of one single-character token (see the module table)."""
    if len(c) != 1:
        return set()
    out: set[str] = set()
    if c.isalpha():
        if c.islower():
            out.add("lowercase")
        elif c.isupper():
            out.add("uppercase")
        base = unicodedata.normalize("NFD", c)[0].lower()
        if "a" <= base <= "z":
            out.add("vowels" if base in VOWELS else "consonants")
    if c.isdecimal():
        out.add("digits")
    if c == " ":
        out.add("space")
    if c in "\n\r":
        out.add("newline")
    if c.isspace():
        out.add("whitespace")
    category = unicodedata.category(c)
    if category.startswith("P"):
        out.add("punctuation")
    if c in QUOTE_CHARS:
        out.add("quotes")
    if category.startswith("S"):
        out.add("symbols")
    return out


def is_gpt2(tokenizer: Tokenizer | None) -> bool:
    """None stands for GPT-2 BPE (what a model without a run, as in the tests, is read with)."""
    return tokenizer is None or isinstance(tokenizer, GPT2Tokenizer)


def _texts(tokenizer: Tokenizer, n_vocab: int) -> list[str]:
    """Each id's decoded text, for a tokenizer other than GPT-2 ("" for end of text)."""
    return [tokenizer.decode([t]) for t in range(n_vocab)]


def class_scheme(tokenizer: Tokenizer | None, n_vocab: int | None = None) -> str:
    """``gpt2`` (GPT-2 BPE, or any vocabulary with a token longer than one character) or
    ``char`` (every id decodes to at most one character)."""
    if is_gpt2(tokenizer):
        return "gpt2"
    n = tokenizer.vocab_size if n_vocab is None else min(n_vocab, tokenizer.vocab_size)
    return "char" if all(len(s) <= 1 for s in _texts(tokenizer, n)) else "gpt2"


def class_names(scheme: str) -> tuple[str, ...]:
    """Every class of a scheme, in the order analysis.json lists them."""
    return CHAR_CLASS_NAMES if scheme == "char" else CLASS_NAMES


@functools.cache
def _string_members(n_vocab: int) -> dict[str, tuple[int, ...]]:
    members: dict[str, list[int]] = {name: [] for name in STRING_CLASSES}
    for t, b in enumerate(token_bytes(range(n_vocab))):
        for name in string_classes(b, t):
            members[name].append(t)
    return {name: tuple(ids) for name, ids in members.items()}


def _decoded_members(tokenizer: Tokenizer, n_vocab: int) -> dict[str, list[int]]:
    """String classes of a non-GPT-2 vocabulary, by the rules of its scheme."""
    scheme = class_scheme(tokenizer, n_vocab)
    names = CHAR_STRING_CLASSES if scheme == "char" else STRING_CLASSES
    members: dict[str, list[int]] = {name: [] for name in names}
    for t, text in enumerate(_texts(tokenizer, n_vocab)):
        if t == tokenizer.eot_id:
            continue
        found = char_classes(text) if scheme == "char" else string_classes(text.encode())
        for name in found:
            members[name].append(t)
    return members


def classify_vocab(
    counts: torch.Tensor, n_vocab: int = GPT2_VOCAB_SIZE, tokenizer: Tokenizer | None = None
) -> dict[str, list[int]]:
    """Class name -> sorted member ids among ``0..n_vocab-1`` (every class of the tokenizer's
    scheme, possibly empty). ``tokenizer`` None: GPT-2 BPE."""
    if is_gpt2(tokenizer):
        members = {name: list(ids) for name, ids in _string_members(n_vocab).items()}
    else:
        members = _decoded_members(tokenizer, n_vocab)
    members.update(frequency_classes(counts[:n_vocab]))
    return members


def token_string(t: int, tokenizer: Tokenizer | None = None) -> str:
    """A token's text for display, decoded with ``tokenizer`` (None: GPT-2 BPE): invalid UTF-8
    shown with replacement characters; another tokenizer's end-of-text id as ``<|endoftext|>``."""
    if is_gpt2(tokenizer):
        return get_tokenizer().decode_single_token_bytes(int(t)).decode("utf-8", errors="replace")
    if tokenizer.eot_id is not None and int(t) == tokenizer.eot_id:
        return EOT_TOKEN
    return tokenizer.decode([int(t)])
