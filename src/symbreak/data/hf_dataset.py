"""``symbreak prepare --hf-dataset NAME``: stream a Hugging Face dataset into llm.c shards.

The paper trained on FineWeb-Edu (``HuggingFaceFW/fineweb-edu``, config ``sample-10BT``). The
dataset is read with ``datasets.load_dataset(NAME, CONFIG, split=SPLIT, streaming=True)``, so
nothing but the shards is kept on disk and ``--max-tokens`` stops early; NAME may also be a local
directory of JSON Lines / Parquet / text files (``datasets``' packaged loaders), which needs no
network. ``datasets`` is an optional dependency (the ``hf-data`` extra).

Documents are tokenized with GPT-2 BPE in parallel (tiktoken's batch encoder releases the GIL:
``--workers`` threads over blocks of documents), each preceded by the end-of-text token, exactly
as ``symbreak prepare`` does for files. Split by document, deterministically and without knowing
the stream's length: document i (0-based, in stream order) goes to validation when
``frac(i * phi) < val_fraction`` with phi the golden ratio, a low-discrepancy sequence that
spreads validation documents evenly over the stream (any prefix of the stream holds about
``val_fraction`` of its documents in validation).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from symbreak.data import tokenizer as _tok
from symbreak.data.corpus import FORMAT_VERSION, META_FILE, SPLITS, _ShardWriter, build_output_dir
from symbreak.errors import DataError
from symbreak.progress import Progress

PHI = (math.sqrt(5.0) - 1.0) / 2.0
BLOCK_DOCS = 256  # documents tokenized together (one batch call)
INSTALL_HINT = ".venv/bin/pip install -c constraints.txt 'symbreak[hf-data]' (or datasets)"


def is_val(index: int, val_fraction: float) -> bool:
    return (index * PHI) % 1.0 < val_fraction


def _blocks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    block: list[str] = []
    for t in texts:
        block.append(t)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def stream_texts(
    name: str, config: str | None, split: str, text_field: str
) -> Iterator[str]:
    """The ``text_field`` of every example, in stream order (network access is the user's)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"--hf-dataset needs the datasets package: {INSTALL_HINT}") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # datasets raises many kinds (not found, offline, bad config, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot open dataset {name!r} (split {split!r}): {msg}") from None
    for i, example in enumerate(ds):
        if text_field not in example:
            raise DataError(
                f"dataset {name!r} has no field {text_field!r} (example {i} has "
                f"{', '.join(sorted(example)) or 'no fields'}); pass --text-field"
            )
        text = example[text_field]
        if not isinstance(text, str):
            raise DataError(f"field {text_field!r} of example {i} is not text")
        yield text


def prepare_hf_dataset(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    config: str | None = None,
    split: str = "train",
    text_field: str = "text",
    max_tokens: int = 0,
    val_fraction: float = 0.1,
    workers: int = 0,
    shard_tokens: int = 100_000_000,
    prefix: str = "data",
    show_progress: bool = True,
    texts: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Tokenize a dataset's texts into ``out_dir`` (shards + meta.json); return the meta.

    ``max_tokens`` > 0 stops after the document that reaches it (train + val together).
    ``texts`` replaces the download (tests, or any iterable of documents).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if max_tokens < 0:
        raise DataError(f"--max-tokens must be >= 0, got {max_tokens}")
    workers = workers or os.cpu_count() or 1
    enc = _tok.get_tokenizer()
    stream = texts if texts is not None else stream_texts(name, config, split, text_field)

    def build(tmp: Path) -> dict[str, Any]:
        writers = {s: _ShardWriter(tmp, prefix, s, shard_tokens) for s in SPLITS}
        docs = dict.fromkeys(SPLITS, 0)
        chars = dict.fromkeys(SPLITS, 0)
        total = 0
        start = time.perf_counter()
        bar = Progress(None, enabled=show_progress, desc=f"tokenizing {name}", unit="doc",
                       every=10_000)
        index = 0
        done = False
        for block in _blocks(stream, BLOCK_DOCS):
            ids = enc.encode_ordinary_batch(block, num_threads=workers)
            for text, toks in zip(block, ids, strict=True):
                split = "val" if is_val(index, val_fraction) else "train"
                index += 1
                if not text:
                    continue
                arr = np.empty(len(toks) + 1, dtype=np.uint16)
                arr[0] = _tok.EOT_ID
                arr[1:] = toks
                writers[split].add(arr)
                docs[split] += 1
                chars[split] += len(text)
                total += len(arr)
                bar.set_postfix(tokens=f"{total:,}")
                bar.update(1)
                if max_tokens and total >= max_tokens:
                    done = True
                    break
            if done:
                break
        bar.close()
        for w in writers.values():
            w.close()
        if docs["train"] == 0 or docs["val"] == 0:
            raise DataError(
                f"dataset {name!r} gave {docs['train']} training and {docs['val']} validation "
                "documents; both splits need some: raise --max-tokens or use more data"
            )
        meta = {
            "format_version": FORMAT_VERSION,
            **_tok.GPT2Tokenizer().meta(),
            "source": f"hf:{name}" + (f"/{config}" if config else "") + f":{split}",
            "split_rule": f"by document: document i is validation when frac(i * 0.618...) < "
            f"{val_fraction} (golden-ratio sequence over stream order)",
            "val_fraction": val_fraction,
            "text_field": text_field,
            "max_tokens": max_tokens,
            "documents": docs,
            "characters": chars,
            "tokens": {s: writers[s].total for s in SPLITS},
            "shards": {s: writers[s].files for s in SPLITS},
            "seconds": round(time.perf_counter() - start, 3),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return meta

    return build_output_dir(out_dir, build)
