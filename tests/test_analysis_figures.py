"""The analysis figures a reader looks at: each colour scale fits what it shows, a saturated
enrichment says so, empty panels say why instead of showing a meaningless colour bar, and token
labels are legible."""

from __future__ import annotations

from typing import Any

import pytest

from symbreak.analysis import figures

pytest.importorskip("matplotlib")


def _end(cls: str | None, log2: float = 0.0, n_in_end: int = 0, n_pop: int = 0) -> Any:
    if cls is None:
        return None
    return {"class": cls, "log2_enrichment": log2, "n_in_end": n_in_end, "n_in_population": n_pop}


def _head(scope: str, head: int, sel: float, amplified: Any = None) -> dict[str, Any]:
    tok = [{"token": c, "id": i, "bonus": 0.1} for i, c in enumerate("abcdefghijkl")]
    return {
        "scope": scope, "layer": 0, "head": head, "selectivity": sel, "null_percentile": 50.0,
        "strongest": {"amplified": amplified, "suppressed": None},
        "top_tokens": tok, "bottom_tokens": tok,
    }  # fmt: skip


def _result(amplified: Any = None) -> dict[str, Any]:
    heads = [_head("context", h, 0.01 * (h + 1), amplified) for h in range(2)]
    heads += [_head("vocab", h, 1.0 * (h + 1), amplified) for h in range(2)]
    return {
        "heads": heads,
        "options": {"alpha": 0.05, "top": None, "top_used": {"vocab": {"k": 10},
                                                              "context": {"k": 10}}},
        "baseline": None,
    }  # fmt: skip


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the functions draw, kept instead of rendered."""
    figs: list[Any] = []
    monkeypatch.setattr(figures, "_png", lambda fig: figs.append(fig) or b"")
    return figs


def test_the_vocab_panel_has_its_own_colour_scale(drawn):
    figures.selectivity_figure(_result())
    (fig,) = drawn
    images = [ax.images[0] for ax in fig.axes if ax.images]
    (_, ctx_hi), (_, voc_hi) = (im.get_clim() for im in images)
    assert ctx_hi == pytest.approx(0.02) and voc_hi == pytest.approx(2.0)


def test_saturated_enrichment_is_marked():
    assert figures._saturated(_end("digits", 3.0, 10, 40), top=10)  # all K in the class
    assert figures._saturated(_end("space", 6.0, 1, 1), top=10)  # every member in the end
    assert not figures._saturated(_end("digits", 2.0, 7, 40), top=10)


def test_class_panels_label_saturation_and_say_when_they_are_empty(drawn):
    figures.classes_figure(_result(_end("digits", 3.0, 10, 40)))
    (fig,) = drawn
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "digits (max)" in texts
    drawn.clear()
    figures.classes_figure(_result(None))
    (fig,) = drawn
    plots = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 4  # no colour bars beside empty panels
    assert all(any("no head has a class" in t.get_text() for t in ax.texts) for ax in plots)


def test_character_labels_are_upright_and_legible(drawn):
    figures.top_tokens_figure(_result())
    (fig,) = drawn
    labels = [t for ax in fig.axes for t in ax.get_xticklabels()]
    assert labels and all(t.get_rotation() == 0 and t.get_fontsize() >= 9 for t in labels)


def test_run_names_no_font_can_draw_are_named_once(monkeypatch, capsys):
    from symbreak import plotting

    monkeypatch.setattr(plotting, "_warned", set())
    monkeypatch.setattr(plotting, "_coverage", lambda: {ord(c) for c in "abcdefsym-Ω"})
    assert plotting.check_labels(["sym-a", "Ω", "对称-b"]) == "对称"
    assert plotting.check_labels(["对称-c"]) == "对称"  # still missing, but said already
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'对称'" in err and "boxes" in err


def test_latin_greek_and_cyrillic_names_draw_with_the_default_font():
    from symbreak.plotting import missing_glyphs

    assert missing_glyphs(["adamw-bQbV-seed0", "βeta", "Щ", "é"]) == ""
