"""--precision: what auto decides on each device, and a bf16 run that records what ran, evaluates
in fp32 and resumes exactly (with the chunked head and the batched Muon iteration too)."""

import json

import pytest
import torch

from mini_llm.checkpoint import load_checkpoint
from mini_llm.errors import UserError
from mini_llm.train import evaluate, train
from mini_llm.train import session as session_module
from mini_llm.train.session import training_precision
from tests.conftest import QUIET, interrupt_at, tiny_config

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


def test_explicit_choices_are_kept_and_bf16_on_mps_is_refused():
    for device in (CPU, CUDA):
        for choice in ("fp32", "bf16"):
            assert training_precision(choice, device)[0] == choice
    assert training_precision("fp32", MPS)[0] == "fp32"
    with pytest.raises(UserError, match="trap 9"):  # MPS half-precision attention: trap 9 in docs/TRAPS.md
        training_precision("bf16", MPS)


def test_auto_is_bf16_on_cuda_fp32_on_mps_and_on_a_cpu_as_its_flags_or_the_probe_say(monkeypatch):
    assert training_precision("auto", CUDA)[0] == "bf16"
    assert training_precision("auto", MPS)[0] == "fp32"

    def never(*args):
        raise AssertionError("the CPU said what it has: no probe needed")

    monkeypatch.setattr(session_module, "bf16_matmul_speedup", never)
    monkeypatch.setattr(session_module, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    assert training_precision("auto", CPU) == ("bf16", "auto: the CPU reports avx512_bf16")
    monkeypatch.setattr(session_module, "cpu_bf16_flags", lambda: [])
    assert training_precision("auto", CPU)[0] == "fp32"
    monkeypatch.setattr(session_module, "cpu_bf16_flags", lambda: None)  # a CPU that does not say: measure
    for speedup, precision in ((4.2, "bf16"), (1.3, "fp32"), (0.01, "fp32")):
        monkeypatch.setattr(session_module, "bf16_matmul_speedup", lambda: speedup)
        assert training_precision("auto", CPU)[0] == precision


def test_a_bf16_run_says_what_ran_and_evaluates_in_fp32(prepared, tmp_path):
    lines = []
    cfg = tiny_config(precision="bf16", max_steps=4, eval_interval=4)
    summary = train(cfg, prepared=prepared, out=tmp_path / "r", log=lines.append, progress=False)
    assert summary["precision"] == "bf16" and "precision: bf16 autocast (--precision bf16)" in "\n".join(lines)
    meta = json.loads((tmp_path / "r" / "last" / "meta.json").read_text())
    assert meta["precision"] == "bf16" and meta["train_config"]["precision"] == "bf16"
    model, _, _ = load_checkpoint(tmp_path / "r", which="last")
    fp32 = evaluate(model, prepared.val, cfg.block_size, "cpu", summary["val_loss"] / summary["val_nats_per_char"])
    assert fp32["val_loss"] == summary["val_loss"]  # the final evaluation ran without autocast


def test_bf16_with_the_chunked_head_and_batched_muon_resumes_exactly(prepared, tmp_path):
    cfg = tiny_config(precision="bf16", head_chunk=40, optimizer="muon", muon_batched=True, max_steps=8,
                      eval_interval=4)
    train(cfg, prepared=prepared, out=tmp_path / "whole", **QUIET)
    train(cfg, prepared=prepared, out=tmp_path / "split", on_step=interrupt_at(4), **QUIET)
    # resume continues the saved run: its precision, head and Muon options, whatever the config passed says
    summary = train(tiny_config(max_steps=8, eval_interval=4), prepared=prepared, out=tmp_path / "split", resume=True,
                    **QUIET)
    assert summary["precision"] == "bf16"
    saved = json.loads((tmp_path / "split" / "last" / "meta.json").read_text())["train_config"]
    assert (saved["head_chunk"], saved["muon_batched"]) == (40, True)
    a = load_checkpoint(tmp_path / "whole", which="last")[0].state_dict()
    b = load_checkpoint(tmp_path / "split", which="last")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_chat_fine_tuning_with_the_chunked_head_follows_the_plain_one(trained_run, chat_file, tmp_path):
    """Chat fine-tuning counts only the assistant's targets (the rest are -100): the chunked head
    gives the same masked losses, step by step, up to float rounding."""
    losses = {}
    for chunk in (0, 24):
        seen = losses[chunk] = []
        train(tiny_config(chat=True, max_steps=5, eval_interval=5, head_chunk=chunk), data=[chat_file],
              out=tmp_path / f"chunk{chunk}", init_from=trained_run, on_step=lambda step, loss: seen.append(loss.item()),
              **QUIET)
    assert losses[0] == pytest.approx(losses[24], rel=1e-4) and len(losses[0]) == 5
