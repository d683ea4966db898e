"""TrainConfig: one source of each default, checked when made, and each arch's recipe."""


import re
from dataclasses import fields

import pytest

from mini_llm.errors import UserError
from mini_llm.model import ARCHS, GPTConfig
from mini_llm.train import TrainConfig
from tests.conftest import tiny_config


@pytest.mark.parametrize("field,value,message", [
    ("optimizer", "sgd", "--optimizer must be 'adamw' or 'muon'"), ("schedule", "linear", "--schedule must be"),
    ("muon_lr", 0.0, "--muon-lr must be positive"), ("muon_momentum", 1.0, "--muon-momentum must be in [0, 1)"),
    ("decay_fraction", 0.0, "--decay-fraction must be in (0, 1]"), ("decay_fraction", 1.5, "--decay-fraction")])
def test_bad_values_are_refused(field, value, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**{field: value})


def test_the_default_arch_is_tuned_with_muon_and_gpt2_stays_classic_with_adamw():
    default, classic = TrainConfig(), TrainConfig(arch="gpt2")
    assert (default.arch_name, default.pos, default.mlp, default.tie_head, default.optimizer, default.lr) == \
        ("tuned", "rope", "gelu", True, "muon", 3e-3)
    assert GPTConfig(**{k: getattr(default, k) for k in ARCHS["tuned"]}).arch_name == "tuned"
    assert (classic.pos, classic.norm, classic.optimizer, classic.lr) == ("learned", "layernorm", "adamw", 2e-3)
    assert TrainConfig(lr=1e-3).lr == 1e-3
    assert TrainConfig(arch="modern").optimizer == "muon"
    assert TrainConfig(arch="gpt2", optimizer="muon").optimizer == "muon"  # a flag beats the arch
    assert TrainConfig(optimizer="adamw", pos="learned").optimizer == "adamw"
    assert GPTConfig().arch_name == "gpt2"  # the model's own defaults stay the classic model the notebooks build


@pytest.mark.parametrize("field,value,message", [
    ("lr", -1.0, "--lr must be positive"), ("batch_size", 0, "--batch-size must be at least 1"),
    ("n_embd", 30, "not divisible by n_head"), ("dropout", 1.0, "dropout=1.0 must be in"),
    ("val_fraction", 1.5, "--val-fraction must be between 0 and 1"), ("min_frequency", 0, "--min-frequency"),
    ("beta2", 1.0, "--beta2 must be in"), ("min_lr_ratio", 2.0, "--min-lr-ratio"), ("max_steps", 0, "--max-steps"),
    ("warmup_steps", -1, "--warmup-steps"), ("samples", -1, "--samples"),
    ("precision", "fp16", "--precision must be auto, fp32 or bf16"), ("head_chunk", -1, "--head-chunk must be 0"),
    ("muon_ns_steps", 0, "--muon-ns-steps must be at least 1"), ("muon_ns_dtype", "fp8", "--muon-ns-dtype must be")])
def test_a_config_is_checked_when_it_is_made(field, value, message):
    """Not later, when a run opens: TrainConfig(lr=-1) itself is refused, with the flag's name."""
    with pytest.raises(UserError, match=re.escape(message)):
        TrainConfig(**{field: value})


def test_each_default_is_written_once():
    """The model's fields are GPTConfig's own (not restated); the data defaults are the tokenizer's
    and the dataset's; `mini-llm prepare`, `train` and `bench quality` show those same defaults."""
    from mini_llm.cli import build_parser
    from mini_llm.data import VAL_FRACTION
    from mini_llm.tokenizer import MIN_FREQUENCY, VOCAB_SIZE
    from mini_llm.train.config import MODEL_FIELDS

    train_fields = {f.name: f for f in fields(TrainConfig)}
    for f in fields(GPTConfig):
        if f.name not in ARCHS["gpt2"]:  # the arch options alone differ: None, "as the arch says"
            assert train_fields[f.name].default == f.default, f.name
    assert issubclass(TrainConfig, GPTConfig) and set(MODEL_FIELDS) <= set(train_fields)
    assert (TrainConfig().vocab_size, TrainConfig().min_frequency, TrainConfig().val_fraction) == \
        (VOCAB_SIZE, MIN_FREQUENCY, VAL_FRACTION)
    parser = build_parser()
    prepare = parser.parse_args(["prepare"])
    assert (prepare.vocab_size, prepare.min_frequency, prepare.val_fraction) == (VOCAB_SIZE, MIN_FREQUENCY, VAL_FRACTION)
    for command in (["train"], ["bench", "quality"]):
        args = vars(parser.parse_args(command))
        for name, f in train_fields.items():
            if name in args and name != "eval_interval":  # bench quality evaluates once, at the end
                assert args[name] == f.default, (command, name)
