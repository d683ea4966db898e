"""`mini-llm bench WHAT`: one subcommand per benchmark, each with its own flags."""

import argparse

from mini_llm.bench import speed
from mini_llm.bench.chat import REPLY_TOKENS, bench_chat
from mini_llm.bench.inference import bench_generate, bench_onnx
from mini_llm.bench.prepare import bench_prepare
from mini_llm.bench.quality import VARIANTS, bench_quality
from mini_llm.bench.speed import STEP_VARIANTS
from mini_llm.bench.tokenizer import bench_tokenizer
from mini_llm.cli.train import add_config_arguments, config_from_args
from mini_llm.corpus import parse_size
from mini_llm.device import set_threads
from mini_llm.errors import UserError
from mini_llm.tokenizer import VOCAB_SIZE

QUALITY_BUDGET = 170.0  # seconds: the ablation's budget (BENCHMARKS.md)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    def bench(name: str, help: str, machine: bool = True) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help)
        s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
        if machine:
            s.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
            s.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help=f"default {VOCAB_SIZE}")
        return s

    s = bench("tokenizer", "HF BPE training and encoding speed, characters per token; the from-scratch BPE", machine=False)
    s.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help=f"default {VOCAB_SIZE}")
    s.add_argument("--data", help="a second corpus beside the default one (default: data/tinyshakespeare.txt if there)")
    s = bench("prepare", "`mini-llm prepare` on a corpus of each size in a child process: time per stage, tokens/s, "
                         "peak memory; then `train --max-steps N` on it", machine=False)
    s.add_argument("--sizes", nargs="+", default=["50MB"], metavar="SIZE",
                   help="corpus sizes (e.g. 250MB 1GB), each built from the Shakespeare corpus with variation "
                        "in a temporary folder (default 50MB)")
    s.add_argument("--corpus", help="prepare this file instead (e.g. data/tinystories.txt)")
    s.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help=f"default {VOCAB_SIZE}")
    s.add_argument("--train-steps", type=int, default=5, help="then `mini-llm train --max-steps N` on it (0: no training; default 5)")
    s.add_argument("--workdir", help="where the temporary folders go (default: the system's temp folder; "
                                     "it needs about twice the corpus size free)")
    s = bench("model", "one forward + backward + AdamW step: tokens/s, FLOP/s and MFU against the matmul peak")
    _add_timed(s)
    s = bench("step", "one training step against the reference minimal GPT's, timed round-robin in one process")
    _add_timed(s)
    s.add_argument("--step-variants", nargs="+", choices=list(STEP_VARIANTS), help="ours to time (default all)")
    s = bench("train", "the real training loop's tokens/s against the model-only step, in the same run")
    _add_timed(s)
    s.add_argument("--steps", type=int, default=20, help="timed loop steps (default 20)")
    s = bench("generate", "generation with and without the KV cache: tokens/s, time to first token")
    _add_generation(s)
    s = bench("onnx", "onnxruntime against PyTorch: forward latency and cached generation", machine=False)
    s.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help=f"default {VOCAB_SIZE}")
    s.add_argument("--repeat", type=int, default=7, help="timed repetitions (default 7)")
    _add_generation(s)

    s = bench("chat", "chat fine-tuning on its held-out conversations: masked loss before and after, replies that "
                      "end with the end token, replies verbatim", machine=False)
    s.add_argument("checkpoint", nargs="?", help="a chat-tuned checkpoint or run (default: the newest run)")
    s.add_argument("--data", nargs="+", help="its conversations (default: those it was trained on)")
    s.add_argument("--max-new-tokens", type=int, default=REPLY_TOKENS, help=f"default {REPLY_TOKENS}")
    s.add_argument("--verbatim", type=int, default=5, help="replies shown, held out and seen (default 5 each)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")

    s = sub.add_parser("quality", help="val nats/char after a fixed training budget, per variant and seed (the ablation)",
                       description="Trains each variant with each seed on TinyShakespeare for the budget and reports "
                                   "the validation nats per character. The flags are `mini-llm train`'s: they set the "
                                   "base recipe that every variant changes.")
    s.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS), metavar="VARIANT",
                   help=f"any of {', '.join(VARIANTS)} (default: default, the recipe of `mini-llm train`)")
    s.add_argument("--seeds", type=int, nargs="+", default=[1337], help="one run per seed (default 1337)")
    s.add_argument("--data", help="corpus file (default data/tinyshakespeare.txt: `mini-llm prepare --source tinyshakespeare`)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    s.add_argument("--no-progress", action="store_true")
    add_config_arguments(s)
    s.set_defaults(eval_interval=10**9)  # one evaluation, at the end: the budget goes to training


def _add_timed(s) -> None:
    s.add_argument("--repeat", type=int, default=7, help="timed repetitions: the median is reported (default 7)")
    s.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32], help="default 16 32")


def _add_generation(s) -> None:
    s.add_argument("--new-tokens", type=int, default=256, help="default 256")
    s.add_argument("--repeat-gen", type=int, default=3, help="generations timed (default 3)")


def cmd_bench(args) -> int:
    for name in ("repeat", "repeat_gen", "new_tokens", "steps"):
        if getattr(args, name, 1) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if any(b < 1 for b in getattr(args, "batch_sizes", [1])):
        raise UserError("--batch-sizes must all be at least 1")
    if args.threads is not None:
        set_threads(args.threads)
    if args.what == "quality":
        if args.time_budget is None and args.max_steps is None:
            args.time_budget = QUALITY_BUDGET
        bench_quality(config_from_args(args), args.variants, args.seeds, args.data, progress=not args.no_progress)
    elif args.what == "chat":
        if args.max_new_tokens < 1 or args.verbatim < 0:
            raise UserError("--max-new-tokens must be at least 1 and --verbatim 0 or more")
        bench_chat(args.checkpoint, args.data, args.max_new_tokens, args.verbatim, args.seed, args.device)
    elif args.what == "prepare":
        if args.train_steps < 0:
            raise UserError("--train-steps must be 0 (no training) or more")
        bench_prepare([parse_size(size, "--sizes") for size in args.sizes], args.corpus, args.vocab_size,
                      args.train_steps, args.workdir)
    elif args.what == "tokenizer":
        bench_tokenizer(args.vocab_size, args.data)
    elif args.what in ("model", "step", "train"):
        common = dict(device=args.device, vocab_size=args.vocab_size, batch_sizes=args.batch_sizes, repeat=args.repeat)
        if args.what == "model":
            speed.bench_model(**common)
        elif args.what == "step":
            speed.bench_step(**common, step_variants=args.step_variants)
        else:
            speed.bench_train(**common, steps=args.steps)
    elif args.what == "generate":
        bench_generate(args.device, args.vocab_size, args.new_tokens, args.repeat_gen)
    else:
        bench_onnx(args.vocab_size, args.new_tokens, args.repeat, args.repeat_gen)
    return 0
