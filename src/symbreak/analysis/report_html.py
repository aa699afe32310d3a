"""One self-contained ``report.html``: summary, figures (inlined base64 PNGs), per-head tables.

No scripts, no external files or fonts: it opens offline in any browser. Each head is a
collapsible ``<details>`` with its top/bottom tokens and its significant classes. Every string
from the data (token text, paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from symbreak.analysis.alignment import ENDS

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:0.85em;margin:0.4em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4} td.t{text-align:left;font-family:monospace;white-space:pre}
details{margin:0.3em 0} summary{cursor:pointer}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
.note{color:#555;font-size:0.9em} .amp{color:#b35900} .sup{color:#1f5fa0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _tok(s: str) -> str:
    """Token text with whitespace made visible (repr without the quotes)."""
    return _e(repr(s)[1:-1])


def _num(x: Any, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(name)}" src="data:image/png;base64,{data}">'


def _token_table(tokens: list[dict[str, Any]], cls: str) -> str:
    rows = "".join(
        f'<tr><td class="t {cls}">{_tok(t["token"])}</td><td>{t["id"]}</td>'
        f"<td>{_num(t['bonus'])}</td><td>{_num(t['cosine'], '.2f')}</td><td>{t['count']}</td></tr>"
        for t in tokens
    )
    return (
        "<table><tr><th>token</th><th>id</th><th>bonus</th><th>cos</th><th>count</th></tr>"
        f"{rows}</table>"
    )


def _classes_table(entry: dict[str, Any], alpha: float) -> str:
    sig = [r for r in entry["enrichment"] if r["q_value"] is not None and r["q_value"] < alpha]
    if not sig:
        return f'<p class="note">no class with q &lt; {alpha:g}</p>'
    sig.sort(key=lambda r: (r["end"], r["q_value"]))
    rows = "".join(
        f'<tr><td class="t {"amp" if r["end"] == "amplified" else "sup"}">{_e(r["class"])}</td>'
        f"<td>{_e(r['end'])}</td><td>{_num(r['log2_enrichment'], '.2f')}</td>"
        f"<td>{r['n_in_end']}/{r['n_in_population']}</td><td>{_num(r['p_value'])}</td>"
        f"<td>{_num(r['q_value'])}</td></tr>"
        for r in sig
    )
    return (
        "<table><tr><th>class</th><th>end</th><th>log2 enr.</th><th>in end / in pop.</th>"
        f"<th>p</th><th>q</th></tr>{rows}</table>"
    )


def _strongest(entry: dict[str, Any], end: str) -> str:
    s = entry["strongest"][end]
    if s is None:
        return "-"
    return f"{_e(s['class'])} ({s['log2_enrichment']:+.2f}, q={s['q_value']:.2g})"


def _head_section(entry: dict[str, Any], alpha: float, k_show: int) -> str:
    title = (
        f"layer {entry['layer']} head {entry['head']} ({_e(entry['scope'])}"
        + (f", component {_e(str(entry['component']))}" if "component" in entry else "")
        + "): selectivity "
        f"{_num(entry['selectivity'])} nats, {_num(entry['null_percentile'], '.0f')}th percentile "
        f"of random directions; amplified: {_strongest(entry, 'amplified')}; "
        f"suppressed: {_strongest(entry, 'suppressed')}"
    )
    return (
        f"<details><summary>{title}</summary>"
        '<div style="display:flex;gap:1.5em;flex-wrap:wrap">'
        f"<div><b class=amp>amplified (top)</b>"
        f"{_token_table(entry['top_tokens'][:k_show], 'amp')}</div>"
        f"<div><b class=sup>suppressed (bottom)</b>"
        f"{_token_table(entry['bottom_tokens'][:k_show], 'sup')}</div>"
        f"<div><b>significant classes</b>{_classes_table(entry, alpha)}</div>"
        "</div></details>"
    )


def _summary_table(heads: list[dict[str, Any]], alpha: float, limit: int = 20) -> str:
    rows = []
    for h in heads:
        for end in ENDS:
            s = h["strongest"][end]
            if s is not None:
                rows.append((s["log2_enrichment"], h, end, s))
    rows.sort(key=lambda r: (-r[0], r[1]["scope"], r[1]["layer"], r[1]["head"], r[2]))
    if not rows:
        return f'<p class="note">No head shows a class with q &lt; {alpha:g}.</p>'
    body = "".join(
        f"<tr><td>{_e(h['scope'])}</td><td>{h['layer']}</td><td>{h['head']}</td>"
        f'<td class="t {"amp" if end == "amplified" else "sup"}">{_e(end)}</td>'
        f'<td class="t">{_e(s["class"])}</td><td>{s["log2_enrichment"]:+.2f}</td>'
        f"<td>{s['q_value']:.2g}</td><td>{_num(h['selectivity'])}</td>"
        f"<td>{_num(h['null_percentile'], '.0f')}</td></tr>"
        for _, h, end, s in rows[:limit]
    )
    return (
        "<table><tr><th>scope</th><th>layer</th><th>head</th><th>end</th><th>class</th>"
        "<th>log2 enr.</th><th>q</th><th>selectivity</th><th>null pct.</th></tr>"
        f"{body}</table>"
    )


def _k_note(opts: dict[str, Any]) -> str:
    """K of each scope, and why when it is not the requested or default one."""
    used = opts.get("top_used")
    if not used:
        return f"K = {opts['top']}"
    parts = []
    for scope, u in used.items():
        why = "" if u["rule"] == "default" or u["rule"].startswith("--top") else f": {u['rule']}"
        parts.append(f"K = {u['k']} in the {scope} scope{_e(why)}")
    return "; ".join(parts)


def render(result: dict[str, Any], figures: dict[str, bytes], k_show: int = 20) -> str:
    """The report as one HTML string."""
    opts = result["options"]
    alpha = opts["alpha"]
    ctx = result["scopes"]["context"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>symbreak analysis: {_e(result['run']['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Which tokens does &lt;bQ&gt; amplify? {_e(result['run']['name'])}, "
        f"{_e(result['checkpoint']['name'])}</h1>",
        "<p>With an unlearned query bias, (q + bQ)&middot;k = q&middot;k + bQ&middot;k: every "
        "key t of a head gets the query-independent logit bonus &lt;bQ&gt;&middot;k<sub>t</sub>"
        "/&radic;d (nats). Per head: its <b>selectivity</b> (std of the bonus over token ids), "
        "compared with random directions of the same norm, and which token classes are "
        "over-represented among the top-K (<span class=amp>amplified</span>) and bottom-K "
        "(<span class=sup>suppressed</span>) token ids, with permutation p-values and "
        "Benjamini-Hochberg q-values.</p>",
        '<p class="note">',
        f"Direction: {_e(result['direction']['source'])}.<br>",
        f"Vocabulary scope: {_e(result['scopes']['vocab']['note'])} "
        f"({result['scopes']['vocab']['population']} ids).<br>",
        f"Context scope: {ctx['tokens']} tokens of {_e(opts['text'])} in {ctx['windows']} "
        f"windows; {ctx['population']} token ids seen at least {ctx['min_count']} times.<br>",
        f"{_k_note(opts)}, {opts['permutations']} permutations, {opts['null_directions']} "
        f"random directions, seed {opts['seed']}, alpha = {alpha:g}.</p>",
    ]
    if result.get("baseline"):
        b = result["baseline"]
        parts.append(
            f'<p class="note">Baseline: {_e(b["run"]["name"])} {_e(b["checkpoint"]["name"])}, '
            f"{_e(b['direction']['source'])}.</p>"
        )
    parts += [
        "<h2>Strongest significant class effects</h2>",
        _summary_table(result["heads"], alpha),
    ]
    if result.get("baseline"):
        parts += [
            "<h3>Baseline (symmetric run), same analysis</h3>",
            _summary_table(result["baseline"]["heads"], alpha),
        ]
    captions = {
        "selectivity.png": "Selectivity per layer and head",
        "classes.png": "Strongest significant class per head",
        "top_tokens.png": "Top and bottom tokens of the most selective heads",
        "position.png": "Mean bonus by layer and position",
    }
    for name, png in figures.items():
        parts += [f"<h2>{_e(captions.get(name, name))}</h2>", _img(name, png)]
    for scope in ("context", "vocab"):
        parts.append(f"<h2>Heads, {scope} scope</h2>")
        parts += [_head_section(h, alpha, k_show) for h in result["heads"] if h["scope"] == scope]
    parts.append("</body></html>\n")
    return "\n".join(parts)
