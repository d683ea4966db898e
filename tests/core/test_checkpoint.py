"""Checkpoints: atomic, fsynced writes; loading checks every file; never unpickles code."""

import json
import os
import shutil

import pytest
import torch

from mini_llm import checkpoint as ckpt
from mini_llm.errors import UserError


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fsynced files")
def test_checkpoint_files_are_fsynced_before_the_rename(trained_run, tmp_path, monkeypatch):
    from mini_llm import checkpoint as ckpt

    model, tok, meta = ckpt.load_checkpoint(trained_run)
    events, real_fsync, real_rename = [], os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def rename(a, b):
        events.append(("rename", os.path.basename(str(a))))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    ckpt.save_checkpoint(tmp_path / "ck", model, tok, {"step": 1}, {"x": torch.zeros(1)})
    into_place = next(i for i, (kind, name) in enumerate(events) if kind == "rename" and name.startswith(".ck.tmp"))
    before = {name for kind, name in events[:into_place] if kind == "fsync"}
    for name in ("model.safetensors", "meta.json", "tokenizer.json", "train_state.pt"):
        assert name in before, (name, events)
    assert any(name.startswith(".ck.tmp") for name in before)  # the new folder's entries
    assert ("fsync", tmp_path.name) in events[into_place:]  # and the parent's, after the rename


def test_checkpoint_loads_and_matches(trained_run):
    model, tok, meta = ckpt.load_checkpoint(trained_run)
    assert meta["folder"].endswith("best") and not model.training
    assert model.config.vocab_size == tok.get_vocab_size() == 300


def test_crash_mid_write_leaves_previous_checkpoint_loadable(trained_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    model, tok, meta = ckpt.load_checkpoint(run / "last")
    before = (run / "last" / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.torch, "save", boom)  # dies after the weights, before the train state
    with pytest.raises(OSError):
        ckpt.save_checkpoint(run / "last", model, tok, {"step": 999}, {"x": torch.zeros(1)})
    monkeypatch.undo()
    again, _, meta2 = ckpt.load_checkpoint(run / "last")
    assert meta2["step"] == meta["step"] and (run / "last" / "model.safetensors").read_bytes() == before


def test_crash_between_renames_falls_back_to_old(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "last").rename(run / "last.old")  # as if the process died between the two renames
    shutil.rmtree(run / "best")
    assert ckpt.find_checkpoint(run, "last").name == "last.old"
    ckpt.load_checkpoint(run, which="last")


@pytest.fixture()
def broken(trained_run, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(trained_run / "best", folder)
    return folder


def test_bad_checkpoints(broken, tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no checkpoint in this folder"):
        ckpt.load_checkpoint(empty)

    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        ckpt.load_checkpoint(broken)
    (broken / "model.safetensors").write_bytes(weights)

    meta = (broken / "meta.json").read_text()
    (broken / "meta.json").write_text(meta[:20])
    with pytest.raises(UserError, match="corrupt"):
        ckpt.load_checkpoint(broken)
    (broken / "meta.json").write_text(meta)

    tok = (broken / "tokenizer.json").read_text()
    (broken / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="tokenizer is missing"):
        ckpt.load_checkpoint(broken)
    from mini_llm.tokenizer import train_tokenizer_from_text

    train_tokenizer_from_text("other words entirely " * 80, 300).save(str(broken / "tokenizer.json"))
    with pytest.raises(UserError, match="does not match the tokenizer"):
        ckpt.load_checkpoint(broken)
    (broken / "tokenizer.json").write_text(tok)

    m = json.loads(meta)
    m["model_config"]["vocab_size"] = 301
    (broken / "meta.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="tokenizer has 300 tokens but the model was built for 301"):
        ckpt.load_checkpoint(broken)
    m["model_config"]["vocab_size"] = 300
    m["model_config"]["n_embd"] = 64
    (broken / "meta.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="weights do not fit"):
        ckpt.load_checkpoint(broken)


def test_train_state_is_loaded_without_pickle_code(trained_run, tmp_path):
    state = ckpt.load_train_state(trained_run / "last")
    assert "optimizer" in state and "batches" in state
    (tmp_path / "train_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="corrupt"):
        ckpt.load_train_state(tmp_path)
