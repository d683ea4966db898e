import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mini_llm import checkpoint as ckpt
from mini_llm.errors import UserError
from mini_llm.train import TrainConfig, add_arguments, config_from_args, lr_at, train
from tests.conftest import REPO, interrupt_at, one_error_line, run_cli, tiny_config

QUIET = dict(log=lambda *a: None, progress=False)


def test_run_folder_has_everything(trained_run):
    for name in ("best", "last"):
        folder = trained_run / name
        assert {p.name for p in folder.iterdir()} == {"model.safetensors", "meta.json", "tokenizer.json", "train_state.pt"}
    meta = json.loads((trained_run / "last" / "meta.json").read_text())
    assert meta["step"] == 30 and meta["model_config"]["n_layer"] == 2 and len(meta["tokenizer_sha256"]) == 64
    assert meta["train_config"]["max_steps"] == 30
    records = [json.loads(l) for l in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r and "tokens_per_s" in r for r in records)
    final = [r for r in records if r.get("subset") is False]
    assert final and {"val_loss", "val_ppl", "val_nats_per_char"} <= set(final[0])
    assert math.isclose(final[0]["val_ppl"], math.exp(final[0]["val_loss"]), rel_tol=1e-9)
    assert (trained_run / "loss.png").stat().st_size > 1000


def test_training_lowers_the_loss(trained_run):
    records = [json.loads(l) for l in (trained_run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert vals[-1] < math.log(300) - 0.5


def test_checkpoint_loads_and_matches(trained_run):
    model, tok, meta = ckpt.load_checkpoint(trained_run)
    assert meta["folder"].endswith("best") and not model.training
    assert model.config.vocab_size == tok.get_vocab_size() == 300


def test_lr_schedule():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0.0, 0, cfg) == pytest.approx(1e-4)
    assert lr_at(0.1, 9, cfg) == pytest.approx(1e-3)
    assert lr_at(0.0, 10, cfg) == pytest.approx(1e-3)
    assert lr_at(0.5, 50, cfg) == pytest.approx(0.55e-3)
    assert lr_at(1.0, 100, cfg) == pytest.approx(1e-4)


def _weights(run):
    return load_file(str(run / "last" / "model.safetensors"))


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
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_existing_run_is_not_overwritten(trained_run, prepared):
    before = (trained_run / "last" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds a run: use --resume"):
        train(tiny_config(), prepared=prepared, out=trained_run, **QUIET)
    assert (trained_run / "last" / "model.safetensors").read_bytes() == before


def test_time_budget_stops(prepared, tmp_path):
    summary = train(tiny_config(max_steps=None, time_budget=1.0), prepared=prepared, out=tmp_path / "r", **QUIET)
    assert summary["steps"] >= 1 and summary["seconds"] < 30


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


def test_every_hyperparameter_is_a_flag():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--n-embd", "64", "--n-head", "2", "--n-layer", "3", "--block-size", "32", "--lr", "0.01",
                         "--batch-size", "4", "--grad-accum", "2", "--max-steps", "7", "--time-budget", "9",
                         "--epochs", "1.5", "--batching", "sliding", "--stride", "4", "--device", "cpu", "--seed", "3",
                         "--no-bias", "--dropout", "0.1", "--warmup-steps", "3", "--weight-decay", "0.0"])
    cfg = config_from_args(args)
    assert (cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, cfg.lr, cfg.batch_size, cfg.grad_accum) == \
        (64, 2, 3, 32, 0.01, 4, 2)
    assert (cfg.max_steps, cfg.time_budget, cfg.epochs, cfg.batching, cfg.stride, cfg.seed, cfg.bias, cfg.dropout) == \
        (7, 9.0, 1.5, "sliding", 4, 3, False, 0.1)
    fields_with_flags = {a.dest for a in p._actions}
    assert set(TrainConfig.__dataclass_fields__) <= fields_with_flags


def test_cli_train_bad_flags(corpus_file, tmp_path):
    assert "n_embd=30 is not divisible by n_head=4" in one_error_line(
        run_cli("train", "--data", corpus_file, "--n-embd", "30", "--out", tmp_path / "r", module="mini_llm"))
    assert "--lr must be positive" in one_error_line(
        run_cli("--lr", "-1", "--data", corpus_file, module="mini_llm.train"))
    line = one_error_line(run_cli("train", "--data", corpus_file, "--vocab-size", "300", "--block-size", "5000",
                                  "--out", tmp_path / "r2"))
    assert "needs at least 5001 (block_size + 1)" in line
    assert "no such file or folder" in one_error_line(run_cli("train", "--data", tmp_path / "nope.txt"))


def test_cli_train_end_to_end(corpus_file, tmp_path):
    out = tmp_path / "cli-run"
    proc = run_cli("train", "--data", corpus_file, "--vocab-size", "300", "--n-embd", "32", "--n-head", "2",
                   "--n-layer", "1", "--block-size", "16", "--batch-size", "4", "--max-steps", "6",
                   "--eval-interval", "3", "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr.decode()
    text = proc.stdout.decode()
    assert "parameters" in text and "tokens per step" in text and "nats/char" in text and "--resume" in text
    proc = run_cli("--data", corpus_file, "--out", out, "--resume", "--max-steps", "9", "--no-progress",
                   module="mini_llm.train")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "resuming" in proc.stdout.decode()
    assert json.loads((out / "last" / "meta.json").read_text())["step"] == 9


def test_ddp_two_processes_on_cpu(corpus_file, prepared, tmp_path):
    """torchrun with 2 CPU processes (gloo): ranks stay identical, rank 0 writes a loadable checkpoint."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mini_llm.train", "--data", str(corpus_file), "--vocab-size", "300", "--n-embd", "32", "--n-head", "2",
           "--n-layer", "1", "--block-size", "16", "--batch-size", "4", "--max-steps", "6", "--eval-interval", "3",
           "--out", str(out), "--no-progress", "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, timeout=300, env=env, cwd=REPO)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-3000:]
    assert "ranks in sync: True" in err
    assert proc.stdout.decode().count("model:") == 1  # only rank 0 logs
    meta = json.loads((out / "last" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 6
    model, _, _ = ckpt.load_checkpoint(out / "last")
    assert model.config.n_layer == 1


def test_samples_are_written_at_step_0_and_every_eval_without_changing_training(prepared, tmp_path):
    train(tiny_config(), prepared=prepared, out=tmp_path / "plain", **QUIET)
    train(tiny_config(samples=12, sample_prompt="a"), prepared=prepared, out=tmp_path / "sampled", **QUIET)
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "sampled")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # training's RNG untouched
    assert not (tmp_path / "plain" / "samples.jsonl").exists()
    records = [json.loads(l) for l in (tmp_path / "sampled" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 15, 30]
    assert records[0]["val_loss"] is None and all(isinstance(r["val_loss"], float) for r in records[1:])
    assert all(r["prompt"] == "a" and r["text"] and r["sampling"]["seed"] == 0 for r in records)
    assert records[0]["text"] != records[-1]["text"]  # the same random numbers, a trained model


def test_samples_flags(corpus_file, tmp_path):
    args = _parser().parse_args(["--samples", "5", "--sample-prompt", "ROMEO:\\n"])
    assert config_from_args(args).sample_prompt == "ROMEO:\n"
    with pytest.raises(UserError, match="--samples"):
        tiny_config(samples=-1).validate()
    proc = run_cli("train", "--data", corpus_file, "--out", tmp_path / "r", "--samples", "4", "--sample-prompt", "",
                   "--max-steps", "2")
    assert proc.returncode == 2 and "--sample-prompt is empty" in one_error_line(proc)


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_course_model_prefers_a_trained_default_size_run(monkeypatch, tmp_path):
    from mini_llm import course

    monkeypatch.setenv("MINI_LLM_HOME", str(tmp_path))
    assert course.trained_runs() == []
    for name, size, step in [("small", dict(n_layer=2), 900), ("young", {}, 20), ("good", {}, 400),
                             ("rotary", dict(pos="rope", tie_head=False), 900)]:
        meta = tmp_path / "runs" / name / "best" / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"model_config": dict(GPTConfigDefaults(), **size), "step": step}))
    (tmp_path / "runs" / "broken" / "best").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "best" / "meta.json").write_text("{not json")
    assert [r.name for r in course.trained_runs()] == ["good"]


def GPTConfigDefaults():
    from mini_llm.model import GPTConfig

    return GPTConfig().to_dict()


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_saves_plain_checkpoints(prepared, tmp_path):
    """--compile wraps only the training step: checkpoints hold the plain model's names (trap 10)."""
    summary = train(tiny_config(compile=True, max_steps=6, eval_interval=3, n_layer=1), prepared=prepared,
                    out=tmp_path / "c", **QUIET)
    assert summary["steps"] == 6
    names = set(_weights(tmp_path / "c"))
    assert names and not any("_orig_mod" in n for n in names)
    model, _, _ = ckpt.load_checkpoint(tmp_path / "c")
    assert model.config.n_layer == 1
