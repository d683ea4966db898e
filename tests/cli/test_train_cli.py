"""`mini-llm train` (and `python -m mini_llm.train`): every TrainConfig field is a flag, bad values are one line."""

import argparse
import json

import pytest

from mini_llm.cli.train import add_arguments, config_from_args
from mini_llm.errors import UserError
from mini_llm.model import GPTConfig
from mini_llm.train import TrainConfig
from tests.conftest import one_error_line, run_cli, tiny_config


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


def test_samples_flags(corpus_file, tmp_path):
    args = _parser().parse_args(["--samples", "5", "--sample-prompt", "ROMEO:\\n"])
    assert config_from_args(args).sample_prompt == "ROMEO:\n"
    with pytest.raises(UserError, match="--samples"):
        tiny_config(samples=-1)
    proc = run_cli("train", "--data", corpus_file, "--out", tmp_path / "r", "--samples", "4", "--sample-prompt", "",
                   "--max-steps", "2")
    assert proc.returncode == 2 and "--sample-prompt is empty" in one_error_line(proc)


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_the_flags_set_the_fields():
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--optimizer", "muon", "--muon-lr", "0.05", "--muon-momentum", "0.9",
                                         "--schedule", "wsd", "--decay-fraction", "0.3"]))
    assert (cfg.optimizer, cfg.muon_lr, cfg.muon_momentum, cfg.schedule, cfg.decay_fraction) == \
        ("muon", 0.05, 0.9, "wsd", 0.3)
    defaults = config_from_args(p.parse_args([]))
    assert (defaults.arch, defaults.optimizer, defaults.lr, defaults.schedule) == ("tuned", "muon", 3e-3, "cosine")
    classic = config_from_args(p.parse_args(["--arch", "gpt2"]))  # no flag's default may pin the arch's choices
    assert (classic.optimizer, classic.lr, classic.pos) == ("adamw", 2e-3, "learned")


def test_the_speed_flags_set_the_fields():
    p = _parser()
    cfg = config_from_args(p.parse_args(["--precision", "bf16", "--head-chunk", "512", "--muon-ns-steps", "3",
                                         "--muon-ns-dtype", "fp32", "--muon-batched"]))
    assert (cfg.precision, cfg.head_chunk, cfg.muon_ns_steps, cfg.muon_ns_dtype, cfg.muon_batched) == \
        ("bf16", 512, 3, "fp32", True)
    defaults = config_from_args(p.parse_args([]))  # what `mini-llm train` runs: precision decided per machine
    assert (defaults.precision, defaults.head_chunk, defaults.muon_ns_dtype, defaults.muon_batched) == \
        ("auto", 512, "auto", True)
    plain = config_from_args(p.parse_args(["--head-chunk", "0", "--no-muon-batched"]))  # each lever can be turned off
    assert (plain.head_chunk, plain.muon_batched) == (0, False)
    with pytest.raises(SystemExit):
        p.parse_args(["--precision", "fp16"])


def test_cli_bad_values_give_one_line(corpus_file):
    assert "--decay-fraction must be in (0, 1]" in one_error_line(
        run_cli("train", "--data", corpus_file, "--schedule", "wsd", "--decay-fraction", "0"))
    assert "--optimizer must be 'adamw' or 'muon' (got 'sgd')" in one_error_line(
        run_cli("train", "--data", corpus_file, "--optimizer", "sgd"))


def test_cli_arch_and_option_flags(corpus_file, tmp_path):
    out = tmp_path / "r"
    proc = run_cli("train", "--data", corpus_file, "--out", out, "--arch", "modern", "--mlp", "swiglu", "--no-qk-norm",
                   "--vocab-size", "300", "--n-embd", "32", "--n-layer", "1", "--block-size", "16", "--max-steps", "2",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr.decode()
    config = json.loads((out / "last" / "meta.json").read_text())["model_config"]
    assert (config["pos"], config["mlp"], config["qk_norm"], config["tie_head"]) == ("rope", "swiglu", False, False)
    assert "arch custom" in proc.stdout.decode()
    proc = run_cli("generate", out, "--prompt", "KING:\n", "--max-new-tokens", "40", "--seed", "1")  # past the window
    assert proc.returncode == 0 and proc.stdout.decode().startswith("KING:\n"), proc.stderr.decode()
    proc = run_cli("train", "--data", corpus_file, "--out", tmp_path / "bad", "--pos", "absolute")
    assert proc.returncode == 2 and "argument --pos: invalid choice: 'absolute'" in proc.stderr.decode()


def test_cli_trains_the_tuned_arch_by_default_and_the_classic_one_on_request(corpus_file, tmp_path):
    small = ["--data", corpus_file, "--vocab-size", "300", "--n-embd", "32", "--n-layer", "1", "--block-size", "16",
             "--max-steps", "2", "--no-progress"]
    for flags, arch, optimizer in (([], "tuned", "muon"), (["--arch", "gpt2"], "gpt2", "adamw")):
        proc = run_cli("train", *small, "--out", tmp_path / arch, *flags)
        assert proc.returncode == 0, proc.stderr.decode()
        assert f"arch {arch} | optimizer {optimizer}" in proc.stdout.decode()
        meta = json.loads((tmp_path / arch / "last" / "meta.json").read_text())
        assert (meta["train_config"]["arch"], meta["train_config"]["optimizer"]) == (arch, optimizer)
        assert GPTConfig(**meta["model_config"]).arch_name == arch
