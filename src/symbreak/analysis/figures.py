"""PNG figures of an analysis.json dict (matplotlib, Agg backend; rendered to bytes).

* ``selectivity.png``: layer x head heatmaps of the selectivity (std of the bonus, nats), each
  cell annotated with its percentile among random directions; context, vocab (layer 0) and, with
  a baseline, the baseline's context map on the same colour scale.
* ``classes.png``: layer x head grids of the strongest significant class (q < alpha), amplified
  and suppressed, per scope; colour = log2 enrichment, text = class name.
* ``top_tokens.png``: bar charts of the top and bottom tokens of the most selective heads.
* ``position.png``: layer x position heatmap of the mean bonus (averaged over heads).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from symbreak import plotting

N_BAR_HEADS = 4
N_BAR_TOKENS = 12


def require_matplotlib() -> None:
    """Fail early, in one line, when matplotlib (the ``plot`` extra) is missing."""
    plotting.require_matplotlib("analyze draws figures")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # no timestamps or software version in the file: identical inputs give identical bytes
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def primary_heads(heads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of the direction evaluation adds (with several bQ components, the mean's):
    the grids have one cell per layer and head."""
    return [h for h in heads if h.get("component", "mean") == "mean"]


def _grid(heads: list[dict[str, Any]], scope: str, key: Any) -> np.ndarray:
    rows = [h for h in heads if h["scope"] == scope]
    n_layer = max(h["layer"] for h in rows) + 1
    n_head = max(h["head"] for h in rows) + 1
    g = np.full((n_layer, n_head), np.nan)
    for h in rows:
        v = key(h)
        g[h["layer"], h["head"]] = np.nan if v is None else v
    return g


def _heatmap(
    ax: Any, grid: np.ndarray, title: str, labels: np.ndarray | None = None, **kw: Any
) -> Any:
    im = ax.imshow(grid, aspect="auto", origin="upper", **kw)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(grid.shape[1]))
    ax.set_yticks(range(grid.shape[0]))
    if labels is not None:
        for (i, j), text in np.ndenumerate(labels):
            if text:
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="black",
                    bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
                )
    return im


def selectivity_figure(result: dict[str, Any]) -> bytes:
    """Selectivity per head. The context panels (the run and its baseline) share one colour
    scale so they can be compared; the vocabulary scope measures something else (every token
    id once, no context) with values of another size, so it gets its own scale."""
    plt = _plt()
    panels = [("context", primary_heads(result["heads"]), "context: selectivity (nats)")]
    panels.append(("vocab", primary_heads(result["heads"]), "vocab, layer 0: selectivity (nats)"))
    if result.get("baseline"):
        panels.append(
            ("context", primary_heads(result["baseline"]["heads"]), "baseline context (symmetric)")
        )
    grids = [_grid(h, s, lambda e: e["selectivity"]) for s, h, _ in panels]
    vmax = {
        scope: max(
            (float(np.nanmax(g)) for (s, _, _), g in zip(panels, grids, strict=True) if s == scope),
            default=1.0,
        )
        for scope in ("context", "vocab")
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (scope, heads, title), g in zip(axes[0], panels, grids, strict=True):
        pct = _grid(heads, scope, lambda e: e["null_percentile"])
        labels = np.vectorize(lambda p: "" if np.isnan(p) else f"{p:.0f}")(pct)
        im = _heatmap(
            ax,
            g,
            title + "\n(numbers: percentile vs random directions)",
            labels,
            cmap="viridis",
            vmin=0,
            vmax=vmax[scope] or 1.0,
        )
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _png(fig)


def _saturated(e: dict[str, Any], top: int) -> bool:
    """Every one of the end's ``top`` tokens is in the class (or every class member is in it):
    the enrichment is at its ceiling, log2(N / min(K, n_class)), and cannot show more."""
    return e["n_in_end"] >= min(top, e["n_in_population"])


def classes_figure(result: dict[str, Any]) -> bytes:
    plt = _plt()
    alpha = result["options"]["alpha"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 9), squeeze=False)
    for i, scope in enumerate(("context", "vocab")):
        top = result["options"]["top_used"][scope]["k"]
        for j, end in enumerate(("amplified", "suppressed")):

            def best(e: dict[str, Any], end: str = end) -> Any:
                s = e["strongest"][end]
                return None if s is None else s["log2_enrichment"]

            def name(e: dict[str, Any], end: str = end, top: int = top) -> str:
                s = e["strongest"][end]
                if s is None:
                    return ""
                return s["class"].replace("_", "\n") + (" (max)" if _saturated(s, top) else "")

            g = _grid(primary_heads(result["heads"]), scope, best)
            rows = [h for h in primary_heads(result["heads"]) if h["scope"] == scope]
            labels = np.full(g.shape, "", dtype=object)
            for h in rows:
                labels[h["layer"], h["head"]] = name(h)
            ax = axes[i, j]
            title = f"{scope}: strongest significant {end} class"
            if np.all(np.isnan(g)):  # no colour scale to show: say so instead
                _heatmap(ax, np.zeros_like(g), title, cmap="Greys", vmin=0, vmax=1)
                ax.text(
                    0.5, 0.5, f"no head has a class\nwith q < {alpha:g}", transform=ax.transAxes,
                    ha="center", va="center", fontsize=11,
                )  # fmt: skip
                continue
            im = _heatmap(
                ax,
                g,
                title + "\n(colour: log2 enrichment; blank: none with q < alpha;\n"
                "(max): all top tokens in the class, the enrichment's ceiling)",
                labels,
                cmap="Oranges" if end == "amplified" else "Blues",
                vmin=0,
            )
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _png(fig)


def most_selective(heads: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Context heads with the highest selectivity percentile vs the null (then selectivity)."""
    rows = [h for h in heads if h["scope"] == "context"]
    rows.sort(
        key=lambda h: (
            -(h["null_percentile"] or 0),
            -(h["selectivity"] or 0),
            h["layer"],
            h["head"],
        )
    )
    return rows[:n]


def _label(token: str) -> str:
    """Token text for an axis: spaces as a visible "␣", newlines and the like escaped."""
    return repr(token)[1:-1].replace(" ", "\u2423")


def top_tokens_figure(result: dict[str, Any]) -> bytes:
    plt = _plt()
    heads = most_selective(primary_heads(result["heads"]), N_BAR_HEADS)
    fig, axes = plt.subplots(len(heads), 1, figsize=(12, 3.6 * len(heads)), squeeze=False)
    for ax, h in zip(axes[:, 0], heads, strict=True):
        toks = h["top_tokens"][:N_BAR_TOKENS] + h["bottom_tokens"][:N_BAR_TOKENS][::-1]
        vals = [t["bonus"] for t in toks]
        colors = ["tab:orange"] * min(N_BAR_TOKENS, len(h["top_tokens"])) + ["tab:blue"] * (
            len(toks) - min(N_BAR_TOKENS, len(h["top_tokens"]))
        )
        ax.bar(range(len(toks)), vals, color=colors)
        ax.set_xticks(range(len(toks)))
        labels = [_label(t["token"]) for t in toks]
        short = max((len(x) for x in labels), default=0) <= 3  # characters: upright
        ax.set_xticklabels(labels, rotation=0 if short else 45, ha="center" if short else "right",
                           fontsize=10 if short else 9)  # fmt: skip
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel("bonus (nats)")
        ax.set_title(
            f"layer {h['layer']} head {h['head']} (context): top and bottom tokens by mean bonus",
            fontsize=10,
        )
    fig.tight_layout()
    return _png(fig)


def position_figure(result: dict[str, Any]) -> bytes:
    plt = _plt()
    rows = [h for h in primary_heads(result["heads"]) if h["scope"] == "context"]
    n_layer = max(h["layer"] for h in rows) + 1
    profiles = np.array([[np.nan if v is None else v for v in h["position_profile"]] for h in rows])
    layers = np.array([h["layer"] for h in rows])
    grid = np.stack([np.nanmean(profiles[layers == layer], 0) for layer in range(n_layer)])
    fig, ax = plt.subplots(figsize=(10, 0.4 * n_layer + 2))
    im = ax.imshow(
        grid,
        aspect="auto",
        cmap="coolwarm",
        vmin=-np.nanmax(np.abs(grid)),
        vmax=np.nanmax(np.abs(grid)),
    )
    ax.set_xlabel("position in the window")
    ax.set_ylabel("layer")
    ax.set_yticks(range(n_layer))
    ax.set_title("mean bonus <bQ>.k/sqrt(d) by position (nats, mean over heads)", fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _png(fig)


def render_all(result: dict[str, Any]) -> dict[str, bytes]:
    """File name -> PNG bytes for every figure."""
    return {
        "selectivity.png": selectivity_figure(result),
        "classes.png": classes_figure(result),
        "top_tokens.png": top_tokens_figure(result),
        "position.png": position_figure(result),
    }
