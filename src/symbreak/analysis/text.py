"""The held-out tokens the in-context analysis runs on: the run's validation split or a file.

Either way the tokens are cut into consecutive non-overlapping windows of at most
``model.block_size`` tokens (the last may be shorter), each run as its own sequence.
"""

from __future__ import annotations

from pathlib import Path

import torch

from symbreak.analysis.options import DEFAULT_TOKENS
from symbreak.config import Config
from symbreak.data import encode, load_run_data
from symbreak.data.tokenizer import Tokenizer
from symbreak.errors import DataError


def validation_tokens(cfg: Config, n_tokens: int = DEFAULT_TOKENS) -> torch.Tensor:
    """The first ``n_tokens`` tokens of the run's validation split (``data.source``)."""
    bs = cfg.model.block_size
    data = load_run_data(cfg, block_size=bs)
    n_win = min(-(-n_tokens // bs), len(data.val))
    rows = data.val.get(list(range(n_win)))[:, :-1]  # inputs of each window: bs tokens
    return rows.reshape(-1)[:n_tokens].to(torch.long)


def read_text(path: str | Path) -> str:
    """A non-empty UTF-8 text file's text, or a one-line error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read --text {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"--text {path} is not UTF-8 (byte {e.start}: {raw[e.start : e.start + 1]!r}); "
            "convert it to UTF-8"
        ) from None
    if not text:
        raise DataError(f"--text {path} is empty; give a file with some text")
    return text


def file_tokens(
    path: str | Path,
    n_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    text: str | None = None,
) -> torch.Tensor:
    """Tokens of a UTF-8 text file (at most ``n_tokens`` when given), encoded with the run's
    ``tokenizer`` (None: GPT-2 BPE); ``text``: the file's text, when already read."""
    path = Path(path)
    if text is None:
        text = read_text(path)
    ids = encode(text) if tokenizer is None else tokenizer.encode(text)
    if not ids:
        raise DataError(f"--text {path} is empty; give a file with some text")
    t = torch.tensor(ids, dtype=torch.long)
    return t if n_tokens is None else t[:n_tokens]


def windows(tokens: torch.Tensor, block_size: int) -> list[torch.Tensor]:
    """Consecutive non-overlapping windows of at most ``block_size`` tokens."""
    return list(tokens.split(block_size))
