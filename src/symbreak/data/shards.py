"""Token shards in llm.c's binary format.

Layout (all little-endian): a header of 256 int32 — ``[0]`` magic 20240520, ``[1]`` version 1,
``[2]`` number of tokens — followed by the tokens as uint16. We keep this format so shards can
be exchanged with llm.c / nanoGPT-style tooling, and because a flat uint16 body can be
memory-mapped: training reads only the windows it samples, never the whole file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from symbreak.atomic import apply_umask
from symbreak.errors import DataError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKEN_ID = 65535  # uint16
_MAX_TOKENS = 2**31 - 1  # the count must fit in header[2], an int32

_REMAKE = "re-create it with `symbreak prepare`"


def write_shard(path: str | os.PathLike[str], tokens: ArrayLike) -> None:
    """Write ``tokens`` (1-D, ids in [0, 65535]) as an llm.c shard, atomically.

    The data goes to a temp file in the same directory, is fsync'ed, then renamed over
    ``path``: a crash never leaves a half-written shard under the final name.
    """
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise DataError(f"shard {path}: tokens must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"shard {path}: tokens must be integers, got dtype {arr.dtype}")
    if arr.size > _MAX_TOKENS:
        raise DataError(
            f"shard {path}: {arr.size} tokens do not fit one shard (max {_MAX_TOKENS}); "
            "use a smaller shard size"
        )
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > MAX_TOKEN_ID:
            bad = lo if lo < 0 else hi
            raise DataError(
                f"shard {path}: token id {bad} does not fit uint16 [0, {MAX_TOKEN_ID}]; "
                "llm.c shards only hold vocabularies of at most 65536 tokens"
            )
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    body = arr.astype("<u2", copy=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.tobytes())
            f.write(body.tobytes())
            f.flush()
            os.fsync(f.fileno())
        apply_umask(tmp)  # mkstemp made it 0600; a shard is ordinary, shareable data
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_header(path: str | os.PathLike[str]) -> int:
    """Validate a shard's header and size; return its token count. Reads only 1 KiB."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"shard {path}: no such file; check the data directory or {_REMAKE}")
    if not path.is_file():
        raise DataError(f"shard {path}: not a regular file; point the data source at shards")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise DataError(
            f"shard {path}: {size} bytes, smaller than the {HEADER_BYTES}-byte header; "
            f"the file is truncated or not a shard; {_REMAKE}"
        )
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, n = (int(v) for v in header[:3])
    if magic != MAGIC:
        raise DataError(
            f"shard {path}: bad magic {magic} (expected {MAGIC}); is this an llm.c shard? {_REMAKE}"
        )
    if version != VERSION:
        raise DataError(
            f"shard {path}: unsupported version {version} (expected {VERSION}: uint16 tokens); "
            f"{_REMAKE}"
        )
    if n < 0:
        raise DataError(f"shard {path}: negative token count {n} in header; {_REMAKE}")
    expected, actual = 2 * n, size - HEADER_BYTES
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"shard {path}: {what}: header says {n} tokens = {expected} bytes, "
            f"file body has {actual} bytes; {_REMAKE}"
        )
    return n


def read_shard(path: str | os.PathLike[str], vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a shard's tokens as a read-only uint16 array of shape (n,).

    Nothing is loaded up front: pages are read when sampled. With ``vocab_size`` every token is
    checked to be < vocab_size (a streaming max over the file, no int64 copy), so a shard made
    with a bigger tokenizer fails here with a clear message instead of inside an embedding.
    An empty shard (n == 0) gives an empty, non-mapped array; callers decide whether that is ok.
    """
    path = Path(path)
    n = read_header(path)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
    if vocab_size is not None:
        top = int(tokens.max())
        if top >= vocab_size:
            raise DataError(
                f"shard {path}: token id {top} >= vocab size {vocab_size}; the data was made with "
                "a bigger vocabulary: raise model.vocab_size or re-create the data with "
                "`symbreak prepare`"
            )
    return tokens
