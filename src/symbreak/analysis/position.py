"""Where a model keeps position: linear probes and vertical-slice similarity, per layer.

Hidden states. ``h_l[s, k]`` (C numbers) is the residual stream of sequence s at position k
after layer l: l = 0 is the embedding output (token embedding plus any added position table),
l = 1..L the block outputs (before the final LayerNorm).

**Linear probes** (closed-form ridge, float64). Per layer, the rows ``h_l[s, k]`` of the *fit*
sequences, standardised with the fit set's mean and standard deviation, are regressed on

* the position k itself (regression): ``W = (X^T X + lambda I)^-1 X^T (y - mean y)``, scored on
  other sequences by ``R^2 = 1 - sum (y - yhat)^2 / sum (y - mean y)^2``;
* one-hot positions (classification by ridge, the "least-squares classifier"): the predicted
  position is the argmax of the T outputs; scored by accuracy (chance: 1 / T).

``lambda = alpha * N`` with N fit rows (for standardised features ``X^T X`` has trace ``N C``,
so alpha is relative). Controls: the same probe on hidden states of a *randomly initialised*
model of the same config (another seed), and on the trained model with the fit labels
*shuffled* (a random permutation of the fit rows' positions, scored against true positions:
about 0 R^2 and chance accuracy when the probe has no real signal to exploit).

**Vertical-slice similarity.** Per layer, ``S[i, j]`` = the cosine similarity of ``h_l[s, i]``
and ``h_l[s, j]`` averaged over the scored sequences (T x T). The *adjacency score* is the mean of
``S[i, j]`` over near pairs (``1 <= |i - j| <= near``) minus the mean over distant pairs
(``|i - j| >= T / 2``): positive when neighbouring positions are more alike than distant ones.
Controls: the random-init model, and the same matrix with its positions relabelled by random
permutations (the mean over 20; about 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from symbreak.model import GPT
from symbreak.plotting import check_labels
from symbreak.seeding import keyed_seed

DEFAULT_ALPHA = 1e-3
DEFAULT_NEAR = 2


@torch.no_grad()
def layer_states(model: GPT, tokens: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(L + 1, S, T, C) float64 hidden states: the embedding output, then every block's."""
    outs: list[torch.Tensor] = []
    hooks = [model.drop.register_forward_hook(lambda _m, _i, o: outs.append(o))]
    hooks += [b.register_forward_hook(lambda _m, _i, o: outs.append(o)) for b in model.blocks]
    was_training = model.training
    model.eval()
    per_batch = []
    try:
        for chunk in tokens.split(batch_size):
            outs.clear()
            model.hidden(chunk.to(next(model.parameters()).device))
            per_batch.append(torch.stack([o.detach().double().cpu() for o in outs]))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return torch.cat(per_batch, dim=1)


def _standardise(fit: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, sd = fit.mean(0), fit.std(0).clamp_min(1e-12)
    return (fit - mu) / sd, (score - mu) / sd


def ridge(X: torch.Tensor, Y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` of ridge regression ``Y ~ X W + b`` (float64; the intercept is not penalised):
    ``W = (Xc^T Xc + alpha N I)^-1 Xc^T (Y - mean Y)`` with ``Xc = X - mean X``."""
    x_mean, y_mean = X.mean(0), Y.mean(0)
    Xc = X - x_mean
    A = Xc.T @ Xc + alpha * X.shape[0] * torch.eye(X.shape[1], dtype=X.dtype)
    W = torch.linalg.solve(A, Xc.T @ (Y - y_mean))
    return W, y_mean - x_mean @ W


def r_squared(y: torch.Tensor, pred: torch.Tensor) -> float:
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def probe_layer(
    fit: torch.Tensor,
    score: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    shuffle_seed: int | None = None,
) -> tuple[float, float]:
    """``(R^2, accuracy)`` of position probes fit on ``fit`` (S_f, T, C) and scored on
    ``score`` (S_s, T, C). ``shuffle_seed``: permute the fit labels first (the control)."""
    T = fit.shape[1]
    Xf, Xs = _standardise(fit.reshape(-1, fit.shape[-1]), score.reshape(-1, score.shape[-1]))
    pos_f = torch.arange(T).repeat(fit.shape[0])
    pos_s = torch.arange(T).repeat(score.shape[0])
    if shuffle_seed is not None:
        gen = torch.Generator().manual_seed(keyed_seed(shuffle_seed, "shuffled-labels"))
        pos_f = pos_f[torch.randperm(pos_f.numel(), generator=gen)]
    targets = torch.cat(
        [pos_f[:, None].double(), torch.nn.functional.one_hot(pos_f, T).double()], dim=1
    )
    W, b = ridge(Xf, targets, alpha)
    pred = Xs @ W + b
    r2 = r_squared(pos_s.double(), pred[:, 0])
    acc = float((pred[:, 1:].argmax(1) == pos_s).double().mean())
    return r2, acc


def similarity(states: torch.Tensor) -> torch.Tensor:
    """(T, T) cosine similarity of positions, averaged over sequences; ``states`` (S, T, C)."""
    u = states / states.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return (u @ u.transpose(1, 2)).mean(0)


def adjacency_score(S: torch.Tensor, near: int = DEFAULT_NEAR) -> float:
    """Mean similarity of near pairs (1 <= |i-j| <= near) minus distant ones (|i-j| >= T/2)."""
    T = S.shape[0]
    d = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs()
    near_mask, far_mask = (d >= 1) & (d <= near), d >= T / 2
    if not near_mask.any() or not far_mask.any():
        raise ValueError(f"sequences of {T} positions are too short for an adjacency score")
    return float(S[near_mask].mean() - S[far_mask].mean())


def shuffled_adjacency(S: torch.Tensor, near: int, seed: int, draws: int = 20) -> float:
    """The adjacency score after relabelling positions by a random permutation, averaged over
    ``draws`` permutations (the control: about 0)."""
    gen = torch.Generator().manual_seed(keyed_seed(seed, "shuffled-positions"))
    scores = []
    for _ in range(draws):
        p = torch.randperm(S.shape[0], generator=gen)
        scores.append(adjacency_score(S[p][:, p], near))
    return sum(scores) / draws


@dataclass
class LayerProbe:
    layer: int
    r2: float
    accuracy: float
    r2_random_init: float
    accuracy_random_init: float
    r2_shuffled: float
    accuracy_shuffled: float
    adjacency: float
    adjacency_random_init: float
    adjacency_shuffled: float


@dataclass
class PositionProbe:
    """Every figure for one model; ``similarity`` is per layer, (T, T) as nested lists."""

    label: str
    length: int
    fit_sequences: int
    score_sequences: int
    alpha: float
    near: int
    layers: list[LayerProbe] = field(default_factory=list)
    similarity: list[list[list[float]]] = field(default_factory=list)
    similarity_random_init: list[list[list[float]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "length": self.length,
            "fit_sequences": self.fit_sequences,
            "score_sequences": self.score_sequences,
            "alpha": self.alpha,
            "near": self.near,
            "chance_accuracy": 1.0 / self.length,
            "layers": [vars(layer) for layer in self.layers],
            "similarity": self.similarity,
            "similarity_random_init": self.similarity_random_init,
        }


def probe_positions(
    label: str,
    model: GPT,
    control: GPT,
    fit_tokens: torch.Tensor,
    score_tokens: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    near: int = DEFAULT_NEAR,
    seed: int = 0,
) -> PositionProbe:
    """Probes and similarity for every layer of ``model``, with ``control`` (a random-init
    model of the same config) and shuffled labels as the controls."""
    trained_f, trained_s = layer_states(model, fit_tokens), layer_states(model, score_tokens)
    control_f, control_s = layer_states(control, fit_tokens), layer_states(control, score_tokens)
    T = fit_tokens.shape[1]
    out = PositionProbe(label, T, fit_tokens.shape[0], score_tokens.shape[0], alpha, near)
    for layer in range(trained_f.shape[0]):
        r2, acc = probe_layer(trained_f[layer], trained_s[layer], alpha)
        r2_c, acc_c = probe_layer(control_f[layer], control_s[layer], alpha)
        r2_sh, acc_sh = probe_layer(trained_f[layer], trained_s[layer], alpha, shuffle_seed=seed)
        S, S_c = similarity(trained_s[layer]), similarity(control_s[layer])
        out.layers.append(
            LayerProbe(
                layer,
                r2,
                acc,
                r2_c,
                acc_c,
                r2_sh,
                acc_sh,
                adjacency_score(S, near),
                adjacency_score(S_c, near),
                shuffled_adjacency(S, near, seed),
            )
        )
        out.similarity.append(S.round(decimals=5).tolist())
        out.similarity_random_init.append(S_c.round(decimals=5).tolist())
    return out


def format_table(probes: list[PositionProbe]) -> str:
    lines = []
    for p in probes:
        lines += [
            f"{p.label}: {p.length} positions (chance accuracy {1 / p.length:.3f}), "
            f"fit on {p.fit_sequences} sequences, scored on {p.score_sequences}",
            f"{'layer':>5} {'R2':>7} {'acc':>6} | {'R2 init':>7} {'acc init':>8} | "
            f"{'R2 shuf':>7} {'acc shuf':>8} | {'adj':>7} {'adj init':>8} {'adj shuf':>8}",
        ]
        for r in p.layers:
            lines.append(
                f"{r.layer:>5} {r.r2:>7.3f} {r.accuracy:>6.3f} | {r.r2_random_init:>7.3f} "
                f"{r.accuracy_random_init:>8.3f} | {r.r2_shuffled:>7.3f} "
                f"{r.accuracy_shuffled:>8.3f} | {r.adjacency:>7.3f} "
                f"{r.adjacency_random_init:>8.3f} {r.adjacency_shuffled:>8.3f}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def plot_probes(probes: list[PositionProbe], r2_png: str, sim_png: str) -> None:
    """R^2 by layer (all models overlaid; dashed: random init, dotted: shuffled labels) and the
    similarity heatmaps (one row per model, one column per layer)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_labels(p.label for p in probes)
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    for i, p in enumerate(probes):
        color = f"C{i % 10}"
        layers = [r.layer for r in p.layers]
        ax.plot(layers, [r.r2 for r in p.layers], "o-", color=color, label=p.label)
        ax.plot(layers, [r.r2_random_init for r in p.layers], "--", color=color, alpha=0.7)
        ax.plot(layers, [r.r2_shuffled for r in p.layers], ":", color=color, alpha=0.7)
    ax.set_xticks(range(max(len(p.layers) for p in probes)))
    ax.set_xlabel("layer (0 = embedding output)")
    ax.set_ylabel("position probe R^2 (held-out text)")
    ax.set_title("solid: model, dashed: random init, dotted: shuffled labels", fontsize=9)
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(r2_png)

    n_layers = max(len(p.layers) for p in probes)
    fig = Figure(figsize=(2.0 * n_layers + 1.2, 2.1 * len(probes) + 0.8), layout="constrained")
    axes = fig.subplots(len(probes), n_layers, squeeze=False)
    for row, p in enumerate(probes):
        for col in range(n_layers):
            ax = axes[row][col]
            ax.tick_params(labelsize=6)
            if col < len(p.similarity):
                t = len(p.similarity[col])
                im = ax.imshow(p.similarity[col], vmin=-1, vmax=1, cmap="RdBu_r")
                ax.set_xticks([0, t - 1])  # positions: the first and the last
                ax.set_yticks([0, t - 1] if col == 0 else [])
                ax.set_title(f"layer {col}: adj {p.layers[col].adjacency:.2f}", fontsize=7)
            else:
                ax.axis("off")
            if col == 0:
                ax.set_ylabel(f"{p.label[:28]}\nposition i", fontsize=7)
            if row == len(probes) - 1:
                ax.set_xlabel("position j", fontsize=7)
    fig.suptitle(
        "cosine similarity of hidden states at positions i and j (rows: models, columns: layers)",
        fontsize=8,
    )
    fig.colorbar(im, ax=axes, shrink=0.6, label="cosine similarity")
    FigureCanvasAgg(fig).print_png(sim_png)
