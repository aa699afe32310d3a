"""Checkpoints: safetensors + JSON round trips, strict loading, atomic writes, no pickle."""

from __future__ import annotations

import pickle

import pytest
import torch

from symbreak.config import ModelConfig, OptimConfig, SBConfig
from symbreak.errors import CheckpointError
from symbreak.model import GPT
from symbreak.optim import build_optimizer
from symbreak.train.checkpoint import (
    decode_tree,
    encode_tree,
    load_model_weights,
    load_optimizer_state,
    read_state,
    resolve_checkpoint,
    save_checkpoint,
)


def tiny(seed: int = 0, **model_kw) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        **{"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 50, **model_kw}
    )
    return GPT(cfg, SBConfig(q=True, v=True, mode="fixed", seed=seed))


def trained(model: GPT, name: str = "adamw") -> torch.optim.Optimizer:
    defaults = {"lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.95]}
    opt = build_optimizer(model, OptimConfig(name=name, **defaults))
    x = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(x, x)[1].backward()
        opt.step()
        opt.zero_grad()
    return opt


def test_tree_encoding_is_lossless():
    tree = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
        "param_groups": [{"betas": (0.9, 0.95), "params": [0], "lr": 1e-3, "x": None}],
        "extra": {"P2": 1.5, "flag": True, "name": "s"},
    }
    tensors: dict = {}
    back = decode_tree(encode_tree(tree, tensors), tensors)
    assert back["state"][0]["exp_avg"].equal(tree["state"][0]["exp_avg"])
    assert back["param_groups"][0]["betas"] == (0.9, 0.95)
    assert list(back["state"]) == [0]  # int keys stay ints
    assert back["extra"] == tree["extra"]


@pytest.mark.parametrize("opt_name", ["adamw", "sgdm"])
def test_checkpoint_round_trip(tmp_path, opt_name):
    model = tiny()
    opt = trained(model, opt_name)
    path = save_checkpoint(tmp_path, 7, model, opt, {"tokens": 123, "val_loss": 1.5})
    assert path.name == "step_00000007"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000007"
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))

    other = tiny(seed=1)
    opt2 = build_optimizer(
        other, OptimConfig(name=opt_name, lr=1e-3, weight_decay=0.01, betas=[0.9, 0.95])
    )
    ckpt = resolve_checkpoint(tmp_path)
    state = read_state(ckpt)
    load_model_weights(other, ckpt)
    load_optimizer_state(opt2, ckpt, state)
    for (n, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for key, v in s1["state"][k].items():
            assert torch.equal(v, s2["state"][k][key])
    assert state["tokens"] == 123 and state["step"] == 7


def test_strict_loading_refuses_a_different_shape(tmp_path):
    save_checkpoint(tmp_path, 1, tiny(), None, {})
    with pytest.raises(CheckpointError, match="different config"):
        load_model_weights(tiny(n_embd=32), resolve_checkpoint(tmp_path))
    with pytest.raises(CheckpointError, match="missing"):
        load_model_weights(tiny(n_layer=2), resolve_checkpoint(tmp_path))


def test_missing_incomplete_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)
    path = save_checkpoint(tmp_path, 1, tiny(), None, {})
    (path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model_weights(tiny(), resolve_checkpoint(tmp_path))
    (path / "state.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        resolve_checkpoint(tmp_path)


def test_a_pickle_disguised_as_safetensors_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = save_checkpoint(tmp_path, 1, tiny(), None, {})
    (path / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_model_weights(tiny(), resolve_checkpoint(tmp_path))
    assert not marker.exists()


def test_failed_write_leaves_previous_checkpoint_and_no_temp_dir(tmp_path, monkeypatch):
    model = tiny()
    save_checkpoint(tmp_path, 1, model, None, {})

    import symbreak.train.checkpoint as ck

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, model, None, {})
    assert resolve_checkpoint(tmp_path).name == "step_00000001"
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))
    assert not (tmp_path / "checkpoints" / "step_00000002").exists()


def test_pruning_keeps_the_newest_and_the_best_checkpoint(tmp_path):
    from symbreak.train.checkpoint import best_checkpoint, prune_checkpoints

    model = tiny()
    for step, val in [(1, 3.0), (2, 1.0), (3, 2.5), (4, 2.8)]:
        save_checkpoint(tmp_path, step, model, None, {"val_loss": val})
    assert best_checkpoint(tmp_path).name == "step_00000002"
    removed = prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in removed] == ["step_00000001"]
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_00000002", "step_00000003", "step_00000004"]
    (tmp_path / "checkpoints" / "step_00000002" / "state.json").unlink()  # incomplete now
    assert best_checkpoint(tmp_path).name == "step_00000003"
