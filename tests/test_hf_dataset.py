"""prepare --hf-dataset, offline, on a local dataset written by the test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symbreak.cli import main
from symbreak.data import EOT_ID, encode, load_data, read_shard
from symbreak.data.hf_dataset import is_val


@pytest.fixture
def local_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    d = tmp_path / "ds"
    d.mkdir()
    texts = [f"Document {i}: the cat sat on mat number {i}.\n" * (1 + i % 3) for i in range(40)]
    with open(d / "part-0.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"body": t, "id": i}) + "\n")
    return d, texts


def test_streams_tokenizes_and_splits_by_document(local_dataset, tmp_path):
    d, texts = local_dataset
    out = tmp_path / "shards"
    assert main(["prepare", "--hf-dataset", str(d), "--text-field", "body", "--out", str(out),
                 "--val-fraction", "0.25", "--workers", "2"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    expect = {"train": [], "val": []}
    for i, t in enumerate(texts):
        expect["val" if is_val(i, 0.25) else "train"] += [EOT_ID, *encode(t)]
    for split in ("train", "val"):
        (shard,) = sorted(out.glob(f"*_{split}_*.bin"))
        assert np.array_equal(np.asarray(read_shard(shard)), np.array(expect[split]))
        assert meta["tokens"][split] == len(expect[split])
    n_val = sum(is_val(i, 0.25) for i in range(40))
    assert meta["documents"]["val"] == n_val and abs(n_val - 10) <= 2  # about a quarter
    bundle = load_data(str(out), block_size=8, vocab_size=50304)
    assert len(bundle.val) > 0


def test_max_tokens_stops_early_and_bad_field_is_one_line(local_dataset, tmp_path, capsys):
    d, _ = local_dataset
    out = tmp_path / "short"
    assert main(["prepare", "--hf-dataset", str(d), "--text-field", "body", "--out", str(out),
                 "--max-tokens", "200"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    total = sum(meta["tokens"].values())
    assert 200 <= total < 200 + 60  # stops after the document that reaches the budget
    capsys.readouterr()
    assert main(["prepare", "--hf-dataset", str(d), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "has no field 'text'" in err and "--text-field" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()  # nothing half-written
    assert main(["prepare", "--hf-dataset", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "y")]) == 2
    assert "cannot open dataset" in capsys.readouterr().err
    assert main(["prepare", str(d), "--hf-dataset", str(d), "--out", str(tmp_path / "z")]) == 2
