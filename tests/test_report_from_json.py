"""``symbreak report --from-json``: a loss report recomputed from its report.json alone gives the
cells and differences of the report built from the runs, in place or moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from symbreak.cli import main
from symbreak.experiments.collect import Collection, Record
from symbreak.experiments.report import build, markdown, write_report
from symbreak.jsonio import dumps_json

# Final losses chosen so that one difference is significant before the correction and not after.
LOSSES = {
    ("adamw", "sym"): [2.000, 2.010, 2.020],
    ("adamw", "bQbV"): [2.050, 2.080, 2.060],
    ("ecd", "sym"): [2.100, 2.150, 2.120],
    ("ecd", "bQbV"): [2.090, 2.160, 2.080],
}


def _records(root: Path) -> list[Record]:
    records = []
    for (panel, variant), finals in LOSSES.items():
        for seed, final in enumerate(finals):
            curve = [3.0, final + 0.05 * (seed % 2), final]
            records.append(
                Record(
                    run_dir=root / "sweep" / f"{panel}-{variant}-seed{seed}",
                    config={},
                    seed=seed,
                    steps=[0, 100, 200],
                    tokens=[0, 1600, 3200],
                    val_loss=curve,
                    tok_per_s=1000.0 + seed,
                    panel=panel,
                    variant=variant,
                )
            )
    return records


@pytest.fixture
def original(tmp_path: Path) -> tuple[Path, dict]:
    """results/report/report.json (and a stand-in figure) written from records of runs that are
    not on disk, as for a committed report whose runs were never published."""
    root = tmp_path / "results"
    out = root / "report"
    out.mkdir(parents=True)
    col = Collection(_records(root), "sweep", "sb", "sym", [], root / "sweep", title="tiny")
    data = build(col, "val_loss", False, out)
    (out / "curves.png").write_bytes(b"png")
    write_report(out, markdown(data, ["curves.png"]), data, ["curves.png"], lambda _: None)
    return out / "report.json", data


def _same_statistics(a: dict, b: dict) -> None:
    """The same figures, to the bit (the same inputs through the same code), as JSON has them."""
    a = json.loads(dumps_json(a))
    for key in ("cells", "differences", "difference_curves"):
        assert b[key] == a[key], key
    assert [r["run_dir"] for r in b["runs"]] == [r["run_dir"] for r in a["runs"]]


def test_a_report_rebuilt_from_its_json_has_the_same_cells_and_differences(
    original, tmp_path, capsys
) -> None:
    path, data = original
    assert any(d["significant_uncorrected"] and not d["significant"] for d in data["differences"])
    elsewhere = tmp_path / "results" / "again"
    assert main(["report", "--from-json", str(path), "--out", str(elsewhere)]) == 0
    again = json.loads((elsewhere / "report.json").read_text())
    _same_statistics(data, again)  # ../sweep/... from both directories
    assert again["sweep_dir"] == data["sweep_dir"] == "../sweep"
    assert again["recomputed_from"]["report"] == "../report/report.json"
    assert again["recomputed_from"]["provenance"] == data["provenance"]
    assert (elsewhere / "curves.png").read_bytes() == b"png"
    assert "![curves.png](curves.png)" in (elsewhere / "report.md").read_text()

    # In place, twice: the file is replaced by the same statistics.
    for _ in range(2):
        assert main(["report", "--from-json", str(path)]) == 0
        _same_statistics(data, json.loads(path.read_text()))
    assert json.loads(path.read_text())["recomputed_from"]["provenance"] == data["provenance"]
    capsys.readouterr()


def test_differences_without_the_correction_get_it(original, capsys) -> None:
    path, data = original
    old = json.loads(path.read_text())
    for d in old["differences"]:  # as written before reports corrected for multiplicity
        for k in ("p_holm", "family_size", "ci_lo_corrected", "ci_hi_corrected"):
            del d[k]
        d["significant"] = d.pop("significant_uncorrected")
    del old["provenance"]
    path.write_text(json.dumps(old))
    assert main(["report", "--from-json", str(path)]) == 0
    _same_statistics(data, json.loads(path.read_text()))
    assert json.loads(path.read_text())["recomputed_from"]["provenance"] is None
    capsys.readouterr()


def test_a_moved_results_folder_rebuilds_with_the_same_relative_paths(
    original, tmp_path, capsys
) -> None:
    path, data = original
    moved = tmp_path / "elsewhere" / "published"
    moved.parent.mkdir()
    shutil.move(str(path.parents[1]), moved)
    assert main(["report", "--from-json", str(moved / "report" / "report.json")]) == 0
    again = json.loads((moved / "report" / "report.json").read_text())
    _same_statistics(data, again)
    assert str(tmp_path) not in (moved / "report" / "report.md").read_text()
    capsys.readouterr()


def test_another_metric_is_recomputed_from_the_stored_figures(original, capsys) -> None:
    path, _ = original
    assert main(["report", "--from-json", str(path), "--metric", "best_val_loss"]) == 0
    again = json.loads(path.read_text())
    assert {d["metric"] for d in again["differences"]} == {"best_val_loss"}
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from-json", "{missing}"], "does not exist"),
        (["--from-json", "{addition}"], "is an addition report"),
        (["--from-json", "{bad}"], "not a report.json"),
        (["--from-json", "{report}", "{report}"], "takes no SWEEP_DIR"),
        (["--from-json", "{report}", "--baseline", "nope"], "is not a variant here"),
        ([], "give a sweep directory"),
    ],
)
def test_bad_input_ends_with_one_line(original, tmp_path, capsys, argv, message) -> None:
    path, _ = original
    (tmp_path / "addition.json").write_text(json.dumps({"threshold": 0.9, "runs": []}))
    (tmp_path / "bad.json").write_text(json.dumps({"runs": [{"seed": 0}]}))
    names = {
        "missing": tmp_path / "nothing.json",
        "addition": tmp_path / "addition.json",
        "bad": tmp_path / "bad.json",
        "report": path,
    }
    assert main(["report", *(a.format(**names) for a in argv)]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
