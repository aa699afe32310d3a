"""analyze's outputs: a file in the way of --out fails before any work, and a write that fails
(a full disk) leaves neither a partial directory nor temporary files."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from symbreak.analysis import output
from symbreak.cli import main


def test_out_that_is_a_file_fails_before_loading_anything(tmp_path: Path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    assert main(["analyze", str(tmp_path / "no-such-run"), "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a file" in err and "no-such-run" not in err


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch):
    files = {"a.png": b"x", "b.png": b"y"}
    monkeypatch.setattr(output.figures, "render_all", lambda result: files)
    monkeypatch.setattr(output, "to_json", lambda result: "{}")
    monkeypatch.setattr(output.report_html, "render", lambda result, pngs: "<html/>")
    calls = {"n": 0}
    real = output.write_bytes_atomic

    def disk_full_on_the_third(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(output, "write_bytes_atomic", disk_full_on_the_third)
    out = tmp_path / "analysis" / "step_3"
    with pytest.raises(OSError):
        output.write_outputs({}, out)
    assert not out.exists() and list((tmp_path / "analysis").iterdir()) == []

    (out).mkdir(parents=True)
    (out / "mine.txt").write_text("keep")
    monkeypatch.setattr(output, "write_bytes_atomic", real)
    paths = output.write_outputs({}, out)
    assert sorted(p.name for p in paths) == ["a.png", "analysis.json", "b.png", "report.html"]
    assert (out / "mine.txt").read_text() == "keep"
    assert [p.name for p in (tmp_path / "analysis").iterdir()] == ["step_3"]
