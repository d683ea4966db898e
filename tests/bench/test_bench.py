"""The benchmarks' own logic (their numbers are the record in BENCHMARKS.md, never asserted)."""

import pytest
import torch

from mini_llm.bench.quality import VARIANTS, bench_quality, variant_config
from mini_llm.bench.reference import ReferenceGPT, reference_optimizer
from mini_llm.bench.speed import STEP_VARIANTS, _train_step_fn, bench_step
from mini_llm.cli import build_parser
from mini_llm.cli.train import config_from_args
from mini_llm.errors import UserError
from mini_llm.model import GPTConfig, MiniGPT
from tests.conftest import one_error_line, run_cli


def test_reference_model_is_the_same_size_and_trains():
    cfg = GPTConfig(vocab_size=97, block_size=16, n_embd=32, n_head=4, n_layer=2)
    ref = ReferenceGPT(cfg)
    assert sum(p.numel() for p in ref.parameters()) == MiniGPT(cfg).num_params() == cfg.num_params()
    x = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    step = _train_step_fn(ref, reference_optimizer(ref, torch.device("cpu")), x, x)
    before = ref(x, x)[1].item()
    for _ in range(5):
        step()
    assert ref(x, x)[1].item() < before


def test_step_rows_run_each_lever_at_its_precision_and_the_reference_in_fp32(capsys):
    """Tiny timings, never asserted: which rows run, and in which precision."""
    from mini_llm.train import TrainConfig
    from mini_llm.train.session import training_precision

    for overrides, _ in STEP_VARIANTS.values():
        TrainConfig(**overrides)  # every row is a valid config
    names = ["ours gpt2", "ours tuned bf16 + batched + chunked head + ns 3", "ours default (as mini-llm train runs it)"]
    rows = bench_step(vocab_size=97, batch_sizes=(1,), repeat=1, step_variants=names)
    precision = {row["step"]: row["precision"] for row in rows}
    assert precision == {"reference (nanoGPT layout)": "fp32", "ours gpt2": "fp32", names[1]: "bf16",
                         names[2]: training_precision("auto", torch.device("cpu"))[0]}
    assert "| ours tuned bf16 + batched" in capsys.readouterr().out


def test_every_quality_variant_is_a_valid_change_of_the_default_recipe():
    base = config_from_args(_quality_args("--max-steps", "3"))
    assert base.precision == "auto"  # the base is what `mini-llm train` runs
    for name in VARIANTS:
        variant_config(base, name, 1)
    fast = variant_config(base, "bf16+batched+chunked+ns3", 1)
    assert (fast.arch, fast.precision, fast.muon_batched, fast.head_chunk, fast.muon_ns_steps) == \
        ("tuned", "bf16", True, 512, 3)
    assert variant_config(base, "fp32", 1).muon_ns_dtype == "auto"  # an fp32 step: Muon's iteration in fp32 too
    off = variant_config(base, "no-levers", 1)  # the default recipe before the levers, whatever the defaults are now
    assert (off.precision, off.muon_batched, off.head_chunk, off.muon_ns_steps) == ("fp32", False, 0, 5)
    alone = variant_config(base, "chunked-head", 1)  # a lever alone: the others off
    assert (alone.precision, alone.muon_batched, alone.head_chunk) == ("fp32", False, 512)


def _quality_args(*argv):
    return build_parser().parse_args(["bench", "quality", *argv])


def test_quality_variants_seeds_and_settings(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"LINE {i % 37}: the cat sat on mat number {i % 11}.\n" for i in range(3000)))
    args = _quality_args("--vocab-size", "300", "--n-embd", "32", "--n-layer", "1", "--block-size", "16",
                         "--batch-size", "4", "--max-steps", "3", "--weight-decay", "0", "--zero-init")
    base = config_from_args(args)
    cfg = variant_config(base, "+rope", 2)
    assert (cfg.arch, cfg.pos, cfg.zero_init, cfg.weight_decay, cfg.max_steps, cfg.seed) == ("gpt2", "rope", True, 0.0, 3, 2)
    assert cfg.optimizer == "adamw" and cfg.lr == 2e-3  # the classic recipe: the base left them to its arch
    default = variant_config(base, "default", 1)
    assert (default.arch, default.optimizer, default.pos) == ("tuned", "muon", "rope")  # what `mini-llm train` trains
    assert base.eval_interval == 10**9 and base.time_budget is None  # one final eval; --max-steps alone: no time limit
    rows = bench_quality(base, ["gpt2", "+rope"], [1, 2], corpus, progress=False)
    out = capsys.readouterr().out
    assert out.count("steps,") == 4 and "| +rope " in out and "vs gpt2" in out
    assert [r["variant"] for r in rows] == ["gpt2", "+rope"] and rows[0]["vs gpt2"] == "+0.000"
    with pytest.raises(UserError, match="unknown variant"):
        variant_config(base, "+magic", 1)


def test_quality_without_a_budget_trains_170_seconds_and_needs_the_corpus(tmp_path):
    args = _quality_args()
    assert args.time_budget is None and args.variants == ["default"]
    proc = run_cli("bench", "quality", "--data", tmp_path / "missing.txt")
    assert "missing.txt not found" in one_error_line(proc)


def test_quality_reads_the_corpus_where_prepare_puts_it(home, monkeypatch):
    """The default corpus of `bench quality` is data/tinyshakespeare.txt, the file that
    `mini-llm prepare --source tinyshakespeare` writes; nothing in the package points outside the checkout."""
    from mini_llm.bench.common import tinyshakespeare
    from mini_llm.corpus import prepare_corpus
    from tests.conftest import REPO

    served = []
    monkeypatch.setattr("mini_llm.corpus.download", lambda url, out, sha256, **options: served.append(out))
    try:
        prepare_corpus("tinyshakespeare")
    except UserError:
        pass  # nothing was downloaded: only where it would go matters here
    assert served == [tinyshakespeare()] and tinyshakespeare() == home / "data" / "tinyshakespeare.txt"
    for path in (REPO / "mini_llm").rglob("*.py"):
        assert "shared/data" not in path.read_text() and "../shared" not in path.read_text(), path


def test_bench_chat_on_a_tiny_chat_run(chat_run, trained_run, capsys):
    from mini_llm.bench.chat import bench_chat

    result = bench_chat(chat_run, max_new_tokens=8, verbatim=2)
    out = capsys.readouterr().out
    assert result["loss_before"] > result["loss_after"] > 0  # the source with the chat tokens, then the tuned model
    assert 0 <= result["ended"] <= 1 and "replies ending with <|end|> within 8 tokens" in out
    assert [kind for kind, *_ in result["replies"]] == ["held out"] * 2 + ["seen"] * 2
    assert "an answer in the data" in out
    from tests.conftest import one_error_line, run_cli

    assert "is not chat-tuned" in one_error_line(run_cli("bench", "chat", trained_run))


def test_prepare_corpus_is_varied_and_at_least_the_size(tmp_path):
    from mini_llm.bench.prepare import make_corpus

    a = make_corpus(600_000, tmp_path / "a.txt").read_bytes()
    assert 600_000 <= len(a) < 700_000 and a.endswith(b"\n\n") and a.decode("utf-8")
    assert make_corpus(600_000, tmp_path / "b.txt").read_bytes() == a  # seeded
    speeches = a.split(b"\n\n")
    assert len(set(speeches)) > 0.9 * len(speeches)  # not one text repeated: its speeches in other orders
    assert make_corpus(600_000, tmp_path / "c.txt", seed=1).read_bytes() != a


def test_bench_prepare_measures_a_child_process(tmp_path, capsys):
    """On a tiny corpus (the logic only): prepare and then train in child processes, each with its
    peak memory, the stages from the cache's meta.json, a row per size or for a given corpus."""
    from mini_llm.bench.prepare import bench_prepare

    tiny = ("--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "16", "--batch-size", "2",
            "--final-eval-windows", "2", "--arch", "gpt2")
    rows = bench_prepare([40_000], vocab_size=300, train_steps=2, workdir=str(tmp_path), train_args=tiny)
    row = rows[0]
    assert 0.04 <= row["corpus MB"] < 0.05 and row["tokens"] > 5000 and row["tokenizer on"] == "whole train split"
    assert row["prepare s"] > row["tokenizer s"] > 0 and row["encode tokens/s"] > 0
    assert 10 * 2**20 < row["peak RSS GB"] * 1e9 < 8 * 2**30 and row["train 2 steps s"] > 0
    assert "| corpus MB" in capsys.readouterr().out and not list(tmp_path.iterdir())  # its temporary folder is gone
    given = tmp_path / "given.txt"
    given.write_text("Once upon a time.\n" * 400)
    assert bench_prepare([], corpus=str(given), vocab_size=300, train_steps=0, workdir=str(tmp_path))[0]["corpus MB"] == 0.0072
    with pytest.raises(UserError, match="failed"):
        bench_prepare([], corpus=str(given), vocab_size=100, train_steps=0, workdir=str(tmp_path))


def test_bench_prepare_flags():
    assert "--sizes 'lots' is not a size" in one_error_line(run_cli("bench", "prepare", "--sizes", "lots"))
    assert "--train-steps must be 0" in one_error_line(run_cli("bench", "prepare", "--train-steps", "-1"))
