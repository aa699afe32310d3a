"""``symbreak analyze`` on any vocabulary: character-level runs decode with their own
tokenizer, get character classes and a K that fits their population; GPT-2 is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from symbreak.analysis.alignment import Options, analyze_model, choose_top
from symbreak.analysis.classes import (
    CHAR_CLASS_NAMES,
    CLASS_NAMES,
    char_classes,
    class_scheme,
    classify_vocab,
    token_string,
)
from symbreak.analysis.options import auto_top
from symbreak.cli import main
from symbreak.data import config_from_dict, prepare_texts
from symbreak.data.tokenizer import CharTokenizer, GPT2Tokenizer, TableTokenizer
from symbreak.errors import SymbreakError
from symbreak.model import GPT
from symbreak.train.checkpoint import save_checkpoint

TEXT = (
    'It\'s 10 past 45 and the quick brown fox, "Jumps" over 23 lazy dogs. Why? Because!\n'
    "Queen Victoria (1837-1901) said 'We are not amused.' 6789 Xylophones and Zebras\n"
)
TOK = CharTokenizer.from_texts([TEXT])
DIGITS = sorted(TOK.encode("0123456789"))


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads crawl on a busy 2-core machine; one is faster and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def char_model(seed: int) -> GPT:
    cfg = config_from_dict(
        {
            "model": {
                "n_layer": 2,
                "n_head": 2,
                "n_embd": 32,
                "block_size": 64,
                "vocab_size": TOK.vocab_size,
            },
            "sb": {"q": True},
        }
    )
    torch.manual_seed(seed)
    return GPT(cfg.model, cfg.sb).eval()


def char_tokens(n: int, seed: int) -> torch.Tensor:
    """Uniformly random ids of the character vocabulary (every id seen ~n/V times)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, TOK.vocab_size, (n,), generator=gen)


def planted_char_model() -> tuple[GPT, list[int], list[int]]:
    """Layer 0 head 0 aligns the keys of digits with <bQ> and of punctuation against it, as
    ``planted_model`` in test_analysis.py does for GPT-2 classes: the embeddings of the two
    classes get +/-0.2 u, u is projected out of every key map, and W_K of layer 0 head 0 gets
    bQ_hat u_hat^T."""
    model = char_model(0)
    classes = classify_vocab(torch.zeros(TOK.vocab_size, dtype=torch.long), TOK.vocab_size, TOK)
    up, down = classes["digits"], classes["punctuation"]
    c = model.cfg.n_embd
    d = c // model.cfg.n_head
    u = torch.randn(c, generator=torch.Generator().manual_seed(5))
    u = (u - u.mean()) / u.std(correction=0)
    u_hat = u / u.norm()
    bq = model.blocks[0].attn.bias_q.expected()[0, 0, 0]
    with torch.no_grad():
        model.wte.weight[up] += 0.2 * u
        model.wte.weight[down] -= 0.2 * u
        for layer, block in enumerate(model.blocks):
            w_k = block.attn.c_attn.weight[c : 2 * c]
            w_k -= torch.outer(w_k @ u_hat, u_hat)
            if layer == 0:
                w_k[:d] += torch.outer(bq / bq.norm(), u_hat)
    return model.eval(), up, down


def entry(result: dict, scope: str, layer: int, head: int) -> dict:
    (e,) = [
        h for h in result["heads"] if (h["scope"], h["layer"], h["head"]) == (scope, layer, head)
    ]
    return e


def row(e: dict, cls: str, end: str) -> dict:
    (r,) = [r for r in e["enrichment"] if (r["class"], r["end"]) == (cls, end)]
    return r


# --------------------------------------------------------------------------------------------
# Classes and token strings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "want"),
    [
        (" ", {"space", "whitespace"}),
        ("\n", {"newline", "whitespace"}),
        ("\t", {"whitespace"}),
        ("'", {"punctuation", "quotes"}),
        ('"', {"punctuation", "quotes"}),
        ("\u2019", {"punctuation", "quotes"}),
        (".", {"punctuation"}),
        ("E", {"uppercase", "vowels"}),
        ("y", {"lowercase", "consonants"}),
        ("\u00e9", {"lowercase", "vowels"}),
        ("7", {"digits"}),
        ("+", {"symbols"}),
        ("", set()),
    ],
)
def test_character_classes(char, want):
    assert char_classes(char) == want


def test_a_character_vocabulary_gets_character_classes_and_its_own_strings():
    assert class_scheme(TOK) == "char"
    counts = torch.bincount(torch.tensor(TOK.encode(TEXT)), minlength=TOK.vocab_size)
    classes = classify_vocab(counts, TOK.vocab_size, TOK)
    assert tuple(classes) == CHAR_CLASS_NAMES
    assert classes["digits"] == DIGITS
    assert classes["space"] == TOK.encode(" ") and classes["newline"] == TOK.encode("\n")
    assert classes["whitespace"] == sorted(TOK.encode(" \n"))
    assert classes["quotes"] == sorted(TOK.encode("'\""))
    assert classes["vowels"] == sorted(TOK.encode("aeiouI"))  # "It's": the one capital vowel
    assert 0 not in {t for name, ids in classes.items() if name not in ("rare",) for t in ids}
    assert token_string(TOK.encode(" ")[0], TOK) == " "  # not GPT-2's id-for-id '#'
    assert token_string(TOK.encode("\n")[0], TOK) == "\n"
    assert token_string(0, TOK) == "<|endoftext|>"
    # the addition task's fixed table: digits 0-9 are ids 0-9
    table = TableTokenizer("0123456789+=\n")
    tc = classify_vocab(torch.zeros(13, dtype=torch.long), 13, table)
    assert tc["digits"] == list(range(10)) and tc["symbols"] == [10, 11] and tc["newline"] == [12]


class PieceTokenizer:
    """A made-up vocabulary of multi-character pieces (neither GPT-2 nor characters)."""

    name = "pieces"
    eot_id = None
    pieces = ("the", " cat", "!", " 42", "\n\n")
    vocab_size = len(pieces)

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_a_vocabulary_of_pieces_gets_the_token_classes_on_its_decoded_strings():
    tok = PieceTokenizer()
    assert class_scheme(tok) == "gpt2"
    classes = classify_vocab(torch.zeros(5, dtype=torch.long), 5, tok)
    assert tuple(classes) == CLASS_NAMES
    assert classes["function_words"] == [0] and classes["word_start"] == [1]
    assert classes["punctuation"] == [2] and classes["numbers"] == [3]
    assert classes["newlines"] == [4] and classes["broken_bytes"] == []
    assert token_string(1, tok) == " cat"


def test_gpt2_strings_and_classes_are_unchanged():
    gpt2 = GPT2Tokenizer()
    assert class_scheme(gpt2) == class_scheme(None) == "gpt2"
    counts = torch.zeros(1024, dtype=torch.long)
    counts[[5, 6, 7]] = torch.tensor([10, 6, 1])
    assert classify_vocab(counts, 1024, gpt2) == classify_vocab(counts, 1024)
    assert tuple(classify_vocab(counts, 1024)) == CLASS_NAMES
    for t in (0, 11, 220, 198, 262, 171, 50256):  # '!', ',', ' ', '\n', ' the', a byte piece, EOT
        assert token_string(t, gpt2) == token_string(t)
    assert token_string(220) == " " and token_string(50256) == "<|endoftext|>"
    assert token_string(171) == "\ufffd"  # a piece of a character: replacement character


# --------------------------------------------------------------------------------------------
# K: the default fits the population
# --------------------------------------------------------------------------------------------


def test_the_default_k_adapts_and_an_explicit_one_must_fit():
    assert auto_top(50257) == 50 and auto_top(250) == 50
    assert auto_top(249) == 49 and auto_top(85) == 17 and auto_top(12) == 5
    used = choose_top(None, 85, "vocab")
    assert used["k"] == 17 and "85 token ids" in used["rule"]
    assert choose_top(None, 5000, "context") == {"k": 50, "population": 5000, "rule": "default"}
    assert choose_top(30, 85, "vocab")["k"] == 30
    with pytest.raises(SymbreakError, match="--top 50 is larger than the vocab population"):
        choose_top(50, 85, "vocab")
    with pytest.raises(SymbreakError, match="9 token ids, too few"):
        choose_top(None, 9, "context")


# --------------------------------------------------------------------------------------------
# The science on a character vocabulary
# --------------------------------------------------------------------------------------------


def test_planted_character_classes_are_found_with_the_default_options():
    model, _, _ = planted_char_model()
    result = analyze_model(model, char_tokens(4096, 1), Options(), tokenizer=TOK)
    assert result["classes"]["digits"] == DIGITS
    for scope in ("vocab", "context"):
        assert result["top_used"][scope]["k"] == TOK.vocab_size // 5
        e = entry(result, scope, 0, 0)
        assert e["strongest"]["amplified"]["class"] == "digits"
        assert e["strongest"]["amplified"]["q_value"] < 0.01
        assert e["strongest"]["suppressed"]["class"] == "punctuation"
        assert e["strongest"]["suppressed"]["q_value"] < 0.01
        others = [
            h for h in result["heads"] if h["scope"] == scope and (h["layer"], h["head"]) != (0, 0)
        ]
        assert others
        for h in others:
            assert row(h, "digits", "amplified")["q_value"] >= 0.05, (scope, h["layer"])
            assert row(h, "punctuation", "suppressed")["q_value"] >= 0.05, (scope, h["layer"])
    top = entry(result, "vocab", 0, 0)["top_tokens"]
    assert top[0]["token"].isdigit() and top[0]["bonus"] > 0


@pytest.mark.parametrize("zipf", [False, True])
def test_random_character_models_stay_within_the_fdr_bound(zipf):
    """Under the complete null every discovery is false: BH at 0.05 keeps P(any) <= 0.05."""
    fractions, any_rejection = [], 0
    weights = 1.0 / torch.arange(1, TOK.vocab_size + 1, dtype=torch.float64)
    for seed in range(4):
        if zipf:  # character frequencies of real text are Zipf-like: rare ids are noisier
            gen = torch.Generator().manual_seed(seed)
            tokens = torch.multinomial(weights, 4096, replacement=True, generator=gen)
        else:
            tokens = char_tokens(4096, seed)
        result = analyze_model(
            char_model(100 + seed),
            tokens,
            Options(permutations=200, null_directions=20, seed=seed),
            tokenizer=TOK,
        )
        qs = [r["q_value"] for h in result["heads"] for r in h["enrichment"]]
        rejected = sum(q < 0.05 for q in qs)
        fractions.append(rejected / len(qs))
        any_rejection += rejected > 0
    assert sum(fractions) / len(fractions) <= 0.05
    assert any_rejection <= 1


# --------------------------------------------------------------------------------------------
# The command on a character-level run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def char_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("char")
    text = "".join(f"{TEXT}Line {i % 97}: {'ab' * (i % 5)} ok.\n" for i in range(120))
    prepare_texts([("doc", text)], root / "data", show_progress=False, tokenizer="char")
    cfg = config_from_dict(
        {
            "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64},
            "sb": {"q": True},
            "data": {"source": str(root / "data")},
            "train": {"out_dir": str(root), "name": "c", "seed": 0},
        }
    )
    assert cfg.model.vocab_size < 100
    run_dir = root / "c"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(cfg.to_toml())
    torch.manual_seed(0)
    save_checkpoint(run_dir, 3, GPT(cfg.model, cfg.sb), None, {"config": cfg.to_dict()})
    return run_dir


def test_analyze_a_character_run_with_the_default_options(char_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(char_run), "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "char tokenizer" in err and "a fifth of the" in err
    result = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    meta = json.loads((char_run.parent / "data" / "meta.json").read_text(encoding="utf-8"))
    tok = CharTokenizer(meta["vocab"])
    n = result["scopes"]["vocab"]["population"]
    assert n == tok.vocab_size
    assert result["options"]["top"] is None
    assert result["options"]["top_used"]["vocab"]["k"] == n // 5
    classes = result["classes"]
    assert classes["digits"] == sorted(tok.encode("0123456789"))
    assert classes["space"] == tok.encode(" ") and classes["newline"] == tok.encode("\n")
    assert classes["whitespace"] and "numbers" not in classes
    shown = [t for h in result["heads"] for t in h["top_tokens"] + h["bottom_tokens"]]
    for t in shown:
        assert t["token"] == (tok.decode([t["id"]]) if t["id"] else "<|endoftext|>")
    assert "#" not in tok.chars
    assert all(t["token"] != "#" for t in shown)
    assert "in the vocab scope" in (out / "report.html").read_text(encoding="utf-8")


def test_a_character_run_reads_text_with_its_tokenizer_and_names_a_bad_top(
    char_run, tmp_path, capsys
):
    good = tmp_path / "good.txt"
    good.write_text(TEXT * 20, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["analyze", str(char_run), "--text", str(good), "--permutations", "100",
            "--null-directions", "10", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    result = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert result["scopes"]["context"]["tokens"] == len(TEXT * 20)  # one token per character

    bad = tmp_path / "bad.txt"
    bad.write_text("\u00fcber", encoding="utf-8")
    assert main(["analyze", str(char_run), "--text", str(bad), "--device", "cpu"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in this run's character vocabulary" in err[0]

    assert main(["analyze", str(char_run), "--top", "40", "--device", "cpu"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--top 40 is larger than the vocab population" in err[0]
    assert "token ids" in err[0]
