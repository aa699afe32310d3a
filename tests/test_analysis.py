"""``symbreak analyze``: planted classes are found, nulls hold, keys are the model's own."""

from __future__ import annotations

import base64
import binascii
import html.parser
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from symbreak.analysis import enrichment as enr
from symbreak.analysis.alignment import Options, analyze_model, key_bonus
from symbreak.analysis.classes import classify_vocab, string_classes
from symbreak.analysis.directions import probe_direction
from symbreak.analysis.keys import KeyCapture, context_stats, vocab_keys
from symbreak.analysis.text import windows
from symbreak.cli import main
from symbreak.config import Config
from symbreak.data import config_from_dict, prepare_texts
from symbreak.model import GPT

SMALL_VOCAB = 1024  # GPT-2 ids < 1024 hold every byte, digits, punctuation and common pieces


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads crawl on a busy 2-core machine; one is faster and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(**sb) -> Config:
    return config_from_dict(
        {
            "model": {
                "n_layer": 2,
                "n_head": 2,
                "n_embd": 32,
                "block_size": 64,
                "vocab_size": SMALL_VOCAB,
            },
            "sb": {"q": True, **sb},
        }
    )


def random_tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, SMALL_VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def planted_model() -> tuple[GPT, list[int], list[int]]:
    """Layer 0 head 0 aligns the keys of numbers with <bQ> and of broken byte pieces against it.

    Embeddings of the two classes get +/-0.2 u (u: zero mean, unit std, so LN keeps it); u is
    projected out of every key map, then W_K of layer 0 head 0 gets bQ_hat u_hat^T: only that
    head turns u into a bonus. Elsewhere those tokens' keys shrink towards 0 (LN divides by the
    large u part), the middle of the ranking, never an end."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = GPT(cfg.model, cfg.sb)
    classes = classify_vocab(torch.zeros(SMALL_VOCAB, dtype=torch.long), SMALL_VOCAB)
    up, down = classes["numbers"], classes["broken_bytes"]
    c, d = cfg.model.n_embd, cfg.model.n_embd // cfg.model.n_head
    u = torch.randn(c, generator=torch.Generator().manual_seed(5))
    u = (u - u.mean()) / u.std(correction=0)
    u_hat = u / u.norm()
    bq = model.blocks[0].attn.bias_q.expected()[0, 0, 0]
    with torch.no_grad():
        model.wte.weight[up] += 0.2 * u
        model.wte.weight[down] -= 0.2 * u
        for layer, block in enumerate(model.blocks):
            w_k = block.attn.c_attn.weight[c : 2 * c]  # rows of W_K (a view)
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
# The science: planted classes found, no false discoveries
# --------------------------------------------------------------------------------------------


def test_planted_amplified_and_suppressed_classes_are_found_in_that_head_only():
    """With the default options: the q-values come from the exact p, so no permutation count
    caps them (with Monte Carlo p and 1,000 permutations BH could not go below ~0.1 here)."""
    model, _, _ = planted_model()
    result = analyze_model(model, random_tokens(4096, 1), Options())
    for scope in ("vocab", "context"):
        e = entry(result, scope, 0, 0)
        assert e["strongest"]["amplified"]["class"] == "numbers"
        assert e["strongest"]["amplified"]["q_value"] < 0.01
        assert e["strongest"]["suppressed"]["class"] == "broken_bytes"
        assert e["strongest"]["suppressed"]["q_value"] < 0.01
        assert e["null_percentile"] == 100.0  # far more selective than random directions
        others = [
            h for h in result["heads"] if h["scope"] == scope and (h["layer"], h["head"]) != (0, 0)
        ]
        assert others
        for h in others:
            assert row(h, "numbers", "amplified")["q_value"] >= 0.05, (scope, h["layer"])
            assert row(h, "broken_bytes", "suppressed")["q_value"] >= 0.05, (scope, h["layer"])
    top = entry(result, "vocab", 0, 0)["top_tokens"]
    assert top[0]["token"].strip().isdigit() and top[0]["bonus"] > 0


def zipf_tokens(n: int, seed: int) -> torch.Tensor:
    """Zipf-distributed ids whose frequency follows their class, as in real text: lowercase
    words the most frequent, capitalised ones the rarest (so per-id means of rare classes are
    noisier: a trap for a test that ignores it)."""
    classes = classify_vocab(torch.zeros(SMALL_VOCAB, dtype=torch.long), SMALL_VOCAB)
    low, cap = set(classes["lowercase"]), set(classes["capitalised"])
    order = sorted(range(SMALL_VOCAB), key=lambda t: (0 if t in low else 2 if t in cap else 1, t))
    weights = 1.0 / torch.arange(1, SMALL_VOCAB + 1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(order)[torch.multinomial(weights, n, replacement=True, generator=gen)]


@pytest.mark.parametrize("tokens", [random_tokens, zipf_tokens])
def test_random_models_stay_within_the_fdr_bound(tokens):
    """Under the complete null every discovery is false: BH at 0.05 keeps P(any) <= 0.05."""
    fractions, any_rejection = [], 0
    for seed in range(4):
        torch.manual_seed(100 + seed)
        cfg = tiny_cfg()
        model = GPT(cfg.model, cfg.sb).eval()
        result = analyze_model(
            model,
            tokens(4096, seed),
            Options(top=20, permutations=200, null_directions=20, min_count=3, seed=seed),
        )
        qs = [r["q_value"] for h in result["heads"] for r in h["enrichment"]]
        rejected = sum(q < 0.05 for q in qs)
        fractions.append(rejected / len(qs))
        any_rejection += rejected > 0
    assert sum(fractions) / len(fractions) <= 0.05
    assert any_rejection <= 1


# --------------------------------------------------------------------------------------------
# Keys: the model's own
# --------------------------------------------------------------------------------------------


class SDPASpy:
    """Records the k argument of every scaled_dot_product_attention call (the kernel's input)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[torch.Tensor] = []
        real = torch.nn.functional.scaled_dot_product_attention

        def spy(q, k, v, *args, **kwargs):
            self.keys.append(k.detach().clone())
            return real(q, k, v, *args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)


def test_vocab_bonus_equals_a_real_layer0_forward_in_float64(monkeypatch):
    cfg = tiny_cfg()
    cfg.model.pos_encoding = "none"
    torch.manual_seed(3)
    model = GPT(cfg.model, cfg.sb).double().eval()
    with torch.no_grad():  # non-trivial LN and c_K so every term of the formula matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids = torch.arange(SMALL_VOCAB)
    dirs = probe_direction(model).vectors[0]
    ours = key_bonus(vocab_keys(model, ids), dirs)  # (H, N)

    spy = SDPASpy(monkeypatch)
    with torch.no_grad():
        model(ids[:, None])  # every token as its own one-token sequence, positions off
    k0 = spy.keys[0][:, :, 0, :]  # layer 0: (N, H, d)
    real = torch.einsum("nhd,hd->hn", k0, dirs) / k0.shape[-1] ** 0.5
    torch.testing.assert_close(ours, real, rtol=0, atol=1e-10)

    # and the formula itself: k_t = W_K^h LN_1(e_t) + c_K^h
    block, c, d = model.blocks[0], cfg.model.n_embd, cfg.model.n_embd // cfg.model.n_head
    x = torch.nn.functional.layer_norm(
        model.wte.weight[ids], (c,), block.ln_1.weight, block.ln_1.bias
    )
    w_k, c_k = block.attn.c_attn.weight[c : 2 * c], block.attn.c_attn.bias[c : 2 * c]
    k = (x @ w_k.T + c_k).view(-1, cfg.model.n_head, d)
    torch.testing.assert_close(ours, key_bonus(k, dirs), rtol=0, atol=1e-10)


def test_vocab_keys_with_mean_positions_match_a_forward_with_averaged_positions(monkeypatch):
    cfg = tiny_cfg()
    torch.manual_seed(4)
    model = GPT(cfg.model, cfg.sb).double().eval()
    ids = torch.arange(0, SMALL_VOCAB, 7)
    ours = vocab_keys(model, ids, positions="mean")
    with torch.no_grad():
        model.wpe.weight.copy_(model.wpe.weight.mean(0, keepdim=True).expand_as(model.wpe.weight))
    spy = SDPASpy(monkeypatch)
    with torch.no_grad():
        model(ids[:, None])
    torch.testing.assert_close(ours, spy.keys[0][:, :, 0, :], rtol=0, atol=1e-12)


def test_captured_keys_are_the_keys_inside_attention(monkeypatch):
    cfg = tiny_cfg(k=True, per_head=True)  # bK too: the seam sits after every key term
    torch.manual_seed(5)
    model = GPT(cfg.model, cfg.sb).eval()
    idx = random_tokens(3 * 40, 2).view(3, 40)
    captured: dict[int, torch.Tensor] = {}
    spy = SDPASpy(monkeypatch)
    with torch.no_grad(), KeyCapture(model, lambda layer, k: captured.setdefault(layer, k)):
        model(idx)
    assert len(spy.keys) == len(captured) == cfg.model.n_layer
    for layer, k in enumerate(spy.keys):
        assert torch.equal(captured[layer], k)

    # the per-id sums of the in-context pass are sums of exactly those keys
    counts = torch.bincount(idx.flatten(), minlength=SMALL_VOCAB)
    population = torch.nonzero(counts >= 1).flatten()
    direction = probe_direction(model)
    inside = list(spy.keys)
    stats = context_stats(model, list(idx), direction.vectors, population, counts)
    for layer, k in enumerate(inside):
        flat = k.transpose(1, 2).reshape(-1, cfg.model.n_head, k.shape[-1]).double()
        for j in (0, 5, len(population) - 1):
            t = int(population[j])
            want = flat[idx.flatten() == t].sum(0)
            torch.testing.assert_close(stats.key_sums[layer, j], want, rtol=1e-12, atol=1e-12)


def test_bf16_context_keys_track_fp32():
    model, _, _ = planted_model()
    tokens = random_tokens(2048, 3)
    counts = torch.bincount(tokens, minlength=SMALL_VOCAB)
    population = torch.nonzero(counts >= 1).flatten()
    dirs = probe_direction(model).vectors
    ws = windows(tokens, 64)
    fp32 = context_stats(model, ws, dirs, population, counts)
    bf16 = context_stats(
        model, ws, dirs, population, counts, ctx=torch.autocast("cpu", dtype=torch.bfloat16)
    )
    a = key_bonus(fp32.mean_keys()[0], dirs[0]).flatten()
    b = key_bonus(bf16.mean_keys()[0], dirs[0]).flatten()
    assert not torch.equal(a, b)  # the autocast really ran
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.999


# --------------------------------------------------------------------------------------------
# Statistics and classes
# --------------------------------------------------------------------------------------------


def test_permutation_pvalues_converge_to_the_exact_hypergeometric_tail():
    gen = torch.Generator().manual_seed(0)
    n, k = 400, 25
    member = (torch.rand(4, n, generator=gen) < torch.tensor([[0.03], [0.1], [0.3], [0.6]])).float()
    null_top, null_bottom = enr.permutation_null(member, k, 4000, gen)
    observed = torch.tensor([[2.0, 5, 11, 18], [0, 2, 7, 15]])
    exact = enr.exact_pvalues(observed, member.sum(1), n, k)
    for null in (null_top, null_bottom):
        perm = enr.permutation_pvalues(observed, null)
        # Monte Carlo error of a proportion from 4000 draws: < 4 standard errors
        se = (exact * (1 - exact) / 4000).sqrt() + 1 / 4000
        assert ((perm - exact).abs() <= 4 * se).all()
    # exact tail against a direct sum of hypergeometric probabilities
    from math import comb

    nc, a = int(member[1].sum()), 5
    direct = sum(comb(nc, j) * comb(n - nc, k - j) for j in range(a, min(nc, k) + 1)) / comb(n, k)
    assert exact[0, 1].item() == pytest.approx(direct, rel=1e-9)


def test_bh_qvalues_match_the_textbook_procedure():
    p = torch.rand(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 3
    q = enr.bh_qvalues(p)
    m = len(p)
    srt = sorted(p.tolist())
    for i, pi in enumerate(p.tolist()):
        want = min(min(1.0, srt[j] * m / (j + 1)) for j in range(srt.index(pi), m))
        assert q[i].item() == pytest.approx(want, rel=1e-12)
    # reject at 0.1 exactly the hypotheses BH's step-up rule rejects
    kmax = max([j + 1 for j in range(m) if srt[j] <= 0.1 * (j + 1) / m], default=0)
    assert int((q <= 0.1).sum()) == kmax


def test_end_sets_enrichment_and_percentile():
    scores = torch.tensor([[0.5, 3.0, -1.0, 2.0, 0.0, -2.0]])
    top, bottom = enr.end_indices(scores, 2)
    assert top.tolist() == [[1, 3]] and bottom.tolist() == [[5, 2]]
    member = torch.tensor([[0.0, 1, 0, 1, 0, 0], [1.0, 0, 0, 0, 0, 0]])
    obs = enr.end_counts(member, top)
    assert obs.tolist() == [[2, 0]]
    log2 = enr.log2_enrichment(obs, member.sum(1), 6, 2)
    assert log2[0, 0].item() == pytest.approx(1.584962500721156)  # log2((2/2)/(2/6))
    assert log2[0, 1].item() == float("-inf")
    null = torch.tensor([1.0, 2, 3, 4])
    assert enr.percentile(torch.tensor(3.0), null).item() == 62.5


@pytest.mark.parametrize(
    ("token", "want"),
    [
        (" If", {"logical", "capitalised", "word_start"}),
        ("Given", {"logical", "capitalised", "continuation"}),
        (" the", {"function_words", "lowercase", "word_start"}),
        ("ing", {"lowercase", "continuation"}),
        (" 2019", {"numbers"}),
        (".", {"punctuation"}),
        ("\n\n", {"whitespace", "newlines"}),
        (" {", {"punctuation", "markup"}),
        ("==", {"markup"}),
        ("----", {"punctuation", "markup"}),
    ],
)
def test_token_classes(token, want):
    from symbreak.data import encode

    (t,) = encode(token)
    assert string_classes(token.encode(), t) == want


def test_broken_byte_pieces_and_frequency_classes():
    assert string_classes(b"\xe2\x80", 1) == {"broken_bytes"}
    counts = torch.zeros(SMALL_VOCAB, dtype=torch.long)
    counts[[5, 6, 7]] = torch.tensor([10, 6, 1])
    classes = classify_vocab(counts, SMALL_VOCAB)
    assert classes["frequent"] == [5]  # 10 of 17 tokens: already half
    assert 7 in classes["rare"] and 6 not in classes["rare"] and 0 in classes["rare"]
    assert classes["broken_bytes"] and all(t < SMALL_VOCAB for t in classes["broken_bytes"])


def test_windows_cut_at_block_size():
    w = windows(torch.arange(10), 4)
    assert [x.tolist() for x in w] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# --------------------------------------------------------------------------------------------
# The command: determinism, outputs, bad input
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_run) -> dict[str, Path]:
    """Untrained 1-layer runs on a small prepared text: seed 0 has bQ, the others are symmetric."""
    root = tmp_path_factory.mktemp("runs")
    words = "If the cat is 3, then (x) = {y}; given that, assume not all of them. \n"
    text = "".join(f"{words} Item {i % 37}: the {i % 11} dogs ran.\n" for i in range(300))
    prepare_texts([("doc", text)], root / "data", show_progress=False)

    def run(name: str, seed: int, **model) -> Path:
        sb = {"q": seed == 0, "v": True}
        return make_run(root, name, model=model, sb=sb, data=root / "data", seed=seed).path

    return {"root": root, "a": run("a", 0), "sym": run("sym", 1), "wide": run("wide", 2, n_embd=64)}


FAST = ["--tokens", "3000", "--top", "10", "--permutations", "200", "--null-directions", "20",
        "--min-count", "3", "--device", "cpu"]  # fmt: skip


@pytest.mark.slow
def test_analyze_twice_gives_identical_json_and_a_valid_report(runs, tmp_path, capsys):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    base = ["analyze", str(runs["a"]), *FAST, "--baseline", str(runs["sym"])]
    assert main([*base, "--out", str(out1)]) == 0
    printed = capsys.readouterr().out
    assert "a step_00000003" in printed and "wrote analysis.json" in printed
    assert main([*base, "--out", str(out2)]) == 0
    assert (out1 / "analysis.json").read_bytes() == (out2 / "analysis.json").read_bytes()

    result = json.loads((out1 / "analysis.json").read_text())
    assert result["run"]["name"] == "a" and result["checkpoint"]["step"] == 3
    # run directories relative to the analysis folder, so it moves with its runs
    assert (out1 / result["run"]["dir"]).resolve() == runs["a"].resolve()
    assert not result["run"]["dir"].startswith("/")
    assert (out1 / result["baseline"]["run"]["dir"]).resolve() == runs["sym"].resolve()
    assert {h["scope"] for h in result["heads"]} == {"vocab", "context"}
    assert len(result["heads"]) == 2 + 2  # vocab: layer 0 only; context: every layer
    assert result["scopes"]["vocab"]["note"].endswith("position is left out")
    h = result["heads"][0]
    for key in ("selectivity", "null_percentile", "top_tokens", "bottom_tokens", "enrichment"):
        assert key in h
    assert set(h["top_tokens"][0]) == {"token", "id", "bonus", "cosine", "count"}
    assert set(h["enrichment"][0]) >= {"class", "end", "log2_enrichment", "p_value", "q_value",
                                       "p_permutation", "n_in_end", "n_in_population"}  # fmt: skip
    assert result["classes"]["logical"] and result["direction"]["layers"][0]["heads"][0]["norm"]
    assert "sb.q=false" in result["baseline"]["direction"]["source"]
    norm = result["baseline"]["direction"]["layers"][0]["heads"][0]["norm"]
    assert norm == pytest.approx(0.5 * 16**0.5, rel=1e-5)  # sb.q_mean in every dimension

    class Parser(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.images: list[str] = []
            self.details = 0

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.images.append(dict(attrs)["src"])
            self.details += tag == "details"

    parser = Parser()
    parser.feed((out1 / "report.html").read_text(encoding="utf-8"))
    parser.close()
    assert len(parser.images) == 4 and parser.details == len(result["heads"])
    for src in parser.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        try:
            data = base64.b64decode(src[len(prefix) :], validate=True)
        except binascii.Error as e:
            pytest.fail(f"bad base64: {e}")
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            assert im.format == "PNG"
    for name in ("selectivity.png", "classes.png", "top_tokens.png", "position.png"):
        assert (out1 / name).stat().st_size > 1000


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_input_fails_in_one_line(runs, tmp_path, capsys):
    a = str(runs["a"])
    assert "not a run directory" in _error(capsys, ["analyze", str(tmp_path), *FAST])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "is empty" in _error(capsys, ["analyze", a, "--text", str(empty)])
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    assert "not UTF-8" in _error(capsys, ["analyze", a, "--text", str(latin)])
    assert "--top 5000" in _error(capsys, ["analyze", a, *FAST, "--top", "5000"])
    assert "itself" in _error(capsys, ["analyze", a, *FAST, "--baseline", a + "/"])
    import shutil

    twin = tmp_path / "twin"  # another run with bQ: not a symmetric baseline
    shutil.copytree(runs["a"], twin)
    assert "sb.q=true" in _error(capsys, ["analyze", a, *FAST, "--baseline", str(twin)])
    assert "model.n_embd" in _error(capsys, ["analyze", a, *FAST, "--baseline", str(runs["wide"])])
    assert "step 9" in _error(capsys, ["analyze", a, *FAST, "--checkpoint", "9"])

    broken = runs["root"] / "broken"
    shutil.copytree(runs["a"], broken)
    (broken / "checkpoints" / "step_00000003" / "model.safetensors").write_bytes(b"garbage")
    assert "safetensors" in _error(capsys, ["analyze", str(broken), *FAST])
