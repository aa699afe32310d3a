"""Character-level data: the tokenizer, shakespeare_char, and training and eval on it."""

from __future__ import annotations

import json

import pytest

from symbreak.cli import main
from symbreak.data import CharTokenizer, load_config, load_data, tokenizer_from_meta
from symbreak.data.corpus import cached_shakespeare
from symbreak.errors import DataError


def test_char_tokenizer_round_trip_and_clear_errors():
    tok = CharTokenizer.from_texts(["hello world\n", "Zebra!"])
    assert tok.chars == "".join(sorted(set("hello world\nZebra!")))
    assert tok.vocab_size == len(tok.chars) + 1 and tok.eot_id == 0
    ids = tok.encode("hello Zebra!")
    assert min(ids) >= 1 and tok.decode(ids) == "hello Zebra!"
    assert tok.decode([0, *ids]) == "hello Zebra!"  # end of text decodes to nothing
    with pytest.raises(DataError, match="'q' is not in this run's character vocabulary"):
        tok.encode("quiz")
    assert tokenizer_from_meta(tok.meta()).chars == tok.chars
    with pytest.raises(DataError, match="unknown tokenizer"):
        tokenizer_from_meta({"tokenizer": "sentencepiece"})


def test_shakespeare_char_is_split_by_work_like_the_gpt2_version(corpus_cache):
    char_dir = cached_shakespeare(corpus_cache, tokenizer="char")
    char = json.loads((char_dir / "meta.json").read_text())
    bpe = json.loads((cached_shakespeare(corpus_cache) / "meta.json").read_text())
    assert char["documents"] == bpe["documents"] and char["characters"] == bpe["characters"]
    assert char["tokenizer"] == "char" and char["vocab_size"] == len(char["vocab"]) + 1
    # one token per character plus one end-of-text per document
    for split in ("train", "val"):
        assert char["tokens"][split] == char["characters"][split] + len(char["documents"][split])


def test_vocab_size_follows_the_data_and_a_mismatch_names_both(corpus_cache):
    cfg = load_config(overrides=["data.source=shakespeare_char", f"data.cache_dir={corpus_cache}"])
    char_dir = cached_shakespeare(corpus_cache, tokenizer="char")
    meta = json.loads((char_dir / "meta.json").read_text())
    assert cfg.model.vocab_size == meta["vocab_size"] < 200
    assert load_config(overrides=[f"data.cache_dir={corpus_cache}"]).model.vocab_size == 50304
    with pytest.raises(DataError, match=r"model.vocab_size=50304 .* has \d+ ids"):
        load_data("shakespeare_char", 32, 50304, cache_dir=corpus_cache)


def test_prepare_char_then_train_sample_and_eval(tmp_path, corpus_cache, capsys):
    text = tmp_path / "text"
    text.mkdir()
    for i in range(4):
        (text / f"doc{i}.txt").write_text("to be or not to be, that is the question\n" * 60)
    data = tmp_path / "data"
    assert main(["prepare", str(text), "--out", str(data), "--tokenizer", "char"]) == 0
    meta = json.loads((data / "meta.json").read_text())
    assert meta["tokenizer"] == "char"
    run = ["train", f"data.source={data}", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
           "model.block_size=16", "train.batch_size=4", "train.max_steps=3", "train.eval_tokens=64",
           f"train.out_dir={tmp_path}", "train.name=c", "train.progress=false"]
    assert main(run) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "c"), "--prompt", "to be", "--max-new-tokens", "5",
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be") and set(out.strip()) <= set(meta["vocab"])
    assert main(["eval", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "puzzle suite is GPT-2 BPE text" in err and err.count("\n") == 1
    assert main(["eval", str(tmp_path / "c"), "--val", "--suite", "none"]) == 0
