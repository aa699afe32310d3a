"""Write an analysis: ``analysis.json``, the PNG figures and ``report.html``, atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from symbreak.analysis import figures, report_html
from symbreak.analysis.alignment import ENDS
from symbreak.atomic import apply_umask, fsync_dir, write_bytes_atomic
from symbreak.jsonio import dumps_json
from symbreak.outputs import portable_path


def to_json(result: dict[str, Any]) -> str:
    """Deterministic JSON text (no NaN/inf: those are null already)."""
    return dumps_json(result, ensure_ascii=False)


def write_outputs(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """analysis.json, every figure and report.html in ``out_dir``; returns the paths.

    Everything is written into a temporary directory beside ``out_dir`` first, so a full disk
    leaves nothing behind; then the files are renamed into place (renames need no space), and
    other files already in ``out_dir`` stay as they are."""
    out_dir = Path(out_dir)
    # run directories relative to out_dir, so an analysis folder can be moved with its runs
    for entry in (result.get("run"), (result.get("baseline") or {}).get("run")):
        if entry and entry.get("dir"):
            entry["dir"] = portable_path(entry["dir"], out_dir)
    pngs = figures.render_all(result)
    files = {"analysis.json": to_json(result).encode(), **pngs}
    files["report.html"] = report_html.render(result, pngs).encode()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name, data in files.items():
            write_bytes_atomic(tmp / name, data)
        if not out_dir.exists():
            apply_umask(tmp)
            tmp.rename(out_dir)
        else:
            for name in files:
                os.replace(tmp / name, out_dir / name)
            tmp.rmdir()
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / name for name in files]


def summary_lines(result: dict[str, Any], limit: int = 10) -> list[str]:
    """A short text summary: the heads with the strongest significant class effects."""
    alpha = result["options"]["alpha"]
    rows = []
    for h in result["heads"]:
        for end in ENDS:
            s = h["strongest"][end]
            if s is not None:
                rows.append((s["log2_enrichment"], h, end, s))
    rows.sort(key=lambda r: (-r[0], r[1]["scope"], r[1]["layer"], r[1]["head"], r[2]))
    ctx = result["scopes"]["context"]
    lines = [
        f"{result['run']['name']} {result['checkpoint']['name']}: {result['direction']['source']}",
        f"context: {ctx['tokens']:,} tokens, {ctx['population']:,} token ids with count >= "
        f"{ctx['min_count']}; vocab: {result['scopes']['vocab']['population']:,} ids (layer 0)",
    ]
    if not rows:
        lines.append(f"no head shows a token class with q < {alpha:g}")
    else:
        lines.append(f"strongest class effects (q < {alpha:g}), of {len(rows)}:")
        lines.append(
            f"  {'scope':<8}{'layer':>5}{'head':>5}  {'end':<11}{'class':<15}"
            f"{'log2':>6}{'q':>9}{'select.':>9}{'null%':>6}"
        )
        for _, h, end, s in rows[:limit]:
            comp = f" (component {h['component']})" if "component" in h else ""
            lines.append(
                f"  {h['scope']:<8}{h['layer']:>5}{h['head']:>5}  {end:<11}{s['class']:<15}"
                f"{s['log2_enrichment']:>+6.2f}{s['q_value']:>9.2g}{h['selectivity']:>9.3g}"
                f"{h['null_percentile']:>6.0f}{comp}"
            )
    return lines
