"""Resume: exact (weights, optimizer, RNGs, batch order, the LR plan), refused on other text, and extended runs whose LR never jumps."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mini_llm.checkpoint import load_checkpoint
from mini_llm.errors import UserError
from mini_llm.model import ARCHS
from mini_llm.schedule import lr_at
from mini_llm.train import TrainConfig, train
from tests.conftest import (
    QUIET,
    interrupt_at,
    last_weights,
    lr_by_step,
    make_text,
    one_error_line,
    run_cli,
    tiny_config,
)


def test_resume_with_other_data_is_refused(small_run, tmp_path):
    from mini_llm.train import train

    other = tmp_path / "other.txt"
    other.write_text(make_text(600, seed=9).replace("king", "duke"), encoding="utf-8")
    before = (small_run / "last" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="--init-from"):
        train(tiny_config(max_steps=9), data=[other], out=small_run, resume=True, **QUIET)
    line = one_error_line(run_cli("train", "--resume", "--out", small_run, "--data", other, "--max-steps", "9",
                                  "--no-progress"))
    assert "--init-from" in line
    assert (small_run / "last" / "model.safetensors").read_bytes() == before


def test_resume_keeps_the_checkpoints_tokenizer_when_the_cache_changed(small_run, corpus_file):
    from mini_llm.data import prepare_dataset
    from mini_llm.train import train

    saved = json.loads((small_run / "last" / "meta.json").read_text())["tokenizer_sha256"]
    prepare_dataset([corpus_file], vocab_size=300, min_frequency=3, log=lambda *a: None)  # retrains the cache's tokenizer
    train(tiny_config(max_steps=9), out=small_run, resume=True, **QUIET)
    meta = json.loads((small_run / "last" / "meta.json").read_text())
    assert meta["step"] == 9 and meta["tokenizer_sha256"] == saved


def test_resume_refuses_a_corpus_that_changed(small_run, corpus_file):
    from mini_llm.train import train

    original = corpus_file.read_text(encoding="utf-8")
    try:
        corpus_file.write_text(original + "\nKING:\nA new line.\n", encoding="utf-8")
        with pytest.raises(UserError, match="changed since"):
            train(tiny_config(max_steps=9), out=small_run, resume=True, **QUIET)
    finally:
        corpus_file.write_text(original, encoding="utf-8")


def test_extending_a_finished_run_continues_the_lr_without_a_jump(prepared, tmp_path):
    from mini_llm.train import train

    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1)
    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, **QUIET)
    train(tiny_config(max_steps=40, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    after_warmup = [lr[s] for s in sorted(lr) if s > 5]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(after_warmup, after_warmup[1:])), after_warmup
    assert lr[40] == pytest.approx(3e-3 * 0.1, rel=1e-6)


def test_extending_an_interrupted_run_replans_from_the_current_lr(prepared, tmp_path):
    from mini_llm.train import train

    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1)

    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, on_step=interrupt_at(10), **QUIET)
    train(tiny_config(max_steps=60, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    from mini_llm.schedule import lr_at

    where_it_stood = lr_at(10 / 20, 10, tiny_config(**cfg))  # what the 20-step plan gives the 11th step
    assert lr[11] == pytest.approx(where_it_stood, rel=1e-9) and lr[11] <= lr[9]  # continues from there ...
    assert lr[60] == pytest.approx(3e-4, rel=1e-2)  # ... and decays to the floor at the new end


def test_device_rng_state_is_saved_and_restored(monkeypatch):
    from mini_llm.train import session as tr

    saved = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = tr.rng_state(torch.device("cuda"))
    assert torch.equal(state["cuda"][0], saved[0]) and torch.equal(state["cpu"], torch.get_rng_state())
    tr.restore_rng_state(state, torch.device("cuda"))
    assert restored and torch.equal(restored[0][0], saved[0])


@pytest.mark.parametrize("batching", ["random", "sliding"])
def test_resume_is_exact(prepared, tmp_path, batching):
    """2N steps straight == N steps, Ctrl-C, resume, N more steps."""
    cfg = tiny_config(max_steps=16, eval_interval=6, batching=batching, stride=3)
    train(cfg, prepared=prepared, out=tmp_path / "straight", **QUIET)

    summary = train(tiny_config(max_steps=16, eval_interval=6, batching=batching, stride=3), prepared=prepared,
                    out=tmp_path / "resumed", on_step=interrupt_at(8), **QUIET)
    assert summary["interrupted"] and summary["steps"] == 8
    assert json.loads((tmp_path / "resumed" / "last" / "meta.json").read_text())["step"] == 8
    train(tiny_config(max_steps=16, eval_interval=6, batching=batching, stride=3), prepared=prepared,
          out=tmp_path / "resumed", resume=True, **QUIET)
    a, b = last_weights(tmp_path / "straight"), last_weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_with_muon_and_wsd_is_exact(prepared, tmp_path):
    """2N steps straight == N steps, Ctrl-C, resume, N more steps (Muon's momentum is in train_state.pt;
    the interruption falls in WSD's stable phase, the rest of the run decays)."""
    cfg = dict(optimizer="muon", schedule="wsd", decay_fraction=0.4, max_steps=16, eval_interval=6)
    train(tiny_config(**cfg), prepared=prepared, out=tmp_path / "straight", **QUIET)

    summary = train(tiny_config(**cfg), prepared=prepared, out=tmp_path / "resumed", on_step=interrupt_at(8), **QUIET)
    assert summary["interrupted"] and summary["steps"] == 8
    state = torch.load(tmp_path / "resumed" / "last" / "train_state.pt", weights_only=False)
    assert set(state["optimizer"]) == {"adamw", "muon"} and state["optimizer"]["muon"]["state"]
    train(tiny_config(**cfg), prepared=prepared, out=tmp_path / "resumed", resume=True, **QUIET)
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_wsd_extending_a_finished_run_trains_on_at_the_floor(prepared, tmp_path):
    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1, schedule="wsd")
    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, **QUIET)
    train(tiny_config(max_steps=40, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    after_warmup = [lr[s] for s in sorted(lr) if s > 5]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(after_warmup, after_warmup[1:])), after_warmup
    assert lr[6] == 3e-3 and lr[21] == pytest.approx(3e-4) and lr[40] == pytest.approx(3e-4)


def test_wsd_extending_an_interrupted_stable_run_keeps_the_peak(prepared, tmp_path):
    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.5)

    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, on_step=interrupt_at(8), **QUIET)
    train(tiny_config(max_steps=40, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    assert sorted(lr) == [s for s in range(1, 41) if s != 8]  # (step 8's log line was cut by the Ctrl-C)
    assert all(lr[s] == 3e-3 for s in lr if 6 <= s <= 20)  # at the peak until the new horizon's decay: step 20 of 40
    planned_40 = {s: lr_at((s - 1) / 40, s - 1, tiny_config(**cfg)) for s in lr}  # as if planned so from the start
    assert lr == pytest.approx(planned_40, rel=1e-12)


def test_a_run_saved_before_arch_and_optimizer_existed_resumes_as_the_classic_model(prepared, tmp_path):
    cfg = tiny_config(max_steps=8, eval_interval=4)
    train(cfg, prepared=prepared, out=tmp_path / "whole", **QUIET)
    train(cfg, prepared=prepared, out=tmp_path / "old", on_step=interrupt_at(4), **QUIET)
    for path in (tmp_path / "old").glob("*/meta.json"):  # what an older version saved: no arch, options, optimizer
        meta = json.loads(path.read_text())
        for name in ["arch", "optimizer", *ARCHS["gpt2"]]:
            meta["train_config"].pop(name)
        path.write_text(json.dumps(meta))
    resumed = TrainConfig(max_steps=8, eval_interval=4, log_interval=5, device="cpu")  # the default arch: tuned
    train(resumed, prepared=prepared, out=tmp_path / "old", resume=True, **QUIET)
    a = load_checkpoint(tmp_path / "whole", which="last")[0].state_dict()
    b = load_checkpoint(tmp_path / "old", which="last")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same model, same AdamW: the same weights
