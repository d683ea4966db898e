"""The benchmarks' own logic (their numbers are the record in BENCHMARKS.md, never asserted)."""

import argparse

import pytest
import torch

from mini_llm import bench
from mini_llm.errors import UserError
from mini_llm.model import GPTConfig, MiniGPT


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(list(argv))
    args.set = dict(args.set) if args.set else None
    return args


def test_reference_model_is_the_same_size_and_trains():
    cfg = GPTConfig(vocab_size=97, block_size=16, n_embd=32, n_head=4, n_layer=2)
    ref = bench.ReferenceGPT(cfg)
    assert sum(p.numel() for p in ref.parameters()) == MiniGPT(cfg).num_params() == cfg.num_params()
    x = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    step = bench._train_step_fn(ref, bench.reference_optimizer(ref, torch.device("cpu")), x, x)
    before = ref(x, x)[1].item()
    for _ in range(5):
        step()
    assert ref(x, x)[1].item() < before


def test_quality_variants_seeds_and_settings(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"LINE {i % 37}: the cat sat on mat number {i % 11}.\n" for i in range(3000)))
    args = _args("quality", "--data", str(corpus), "--vocab-size", "300", "--n-embd", "32", "--n-layer", "1",
                 "--block-size", "16", "--batch-size", "4", "--steps-budget", "3", "--variants", "gpt2", "+rope",
                 "--seeds", "1", "2", "--set", "weight_decay=0.0", "zero_init=true", "--no-progress")
    assert args.set == {"weight_decay": 0.0, "zero_init": True}
    cfg = bench.quality_config(args, "+rope", 2)
    assert (cfg.pos, cfg.zero_init, cfg.weight_decay, cfg.max_steps, cfg.seed) == ("rope", True, 0.0, 3, 2)
    bench.bench_quality(args)
    out = capsys.readouterr().out
    assert out.count("steps,") == 4 and "| +rope " in out and "vs gpt2" in out
    with pytest.raises(UserError, match="unknown variant"):
        bench.quality_config(args, "+magic", 1)
    with pytest.raises(SystemExit):
        _args("quality", "--set", "no_such_field=1")
