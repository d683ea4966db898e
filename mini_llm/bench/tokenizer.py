"""`mini-llm bench tokenizer`: HF BPE training and encoding speed, characters per token, ids equal to
one call; the from-scratch BPE (`bpe.py`) beside it."""

import time
from pathlib import Path

import numpy as np

from mini_llm.bench.common import TINY_HELP, machine, table, tinyshakespeare
from mini_llm.bpe import BPE
from mini_llm.corpus import build_shakespeare
from mini_llm.paths import data_dir
from mini_llm.tokenizer import VOCAB_SIZE, encode_fast, train_tokenizer_from_text


def bench_tokenizer(vocab_size: int = VOCAB_SIZE, data: str | None = None) -> None:
    corpora = []
    default = data_dir() / "shakespeare.txt"
    if not default.exists():
        build_shakespeare(default)
    corpora.append(("shakespeare (default)", default))
    tiny = Path(data) if data else tinyshakespeare()
    if tiny.exists():
        corpora.append(("tinyshakespeare", tiny))
    else:
        print(f"(skipping TinyShakespeare: {TINY_HELP})")
    rows = []
    for name, path in corpora:
        text = path.read_text(encoding="utf-8")
        mb = len(text.encode()) / 1e6
        t0 = time.perf_counter()
        tok = train_tokenizer_from_text(text, vocab_size)
        t1 = time.perf_counter()
        ids = encode_fast(tok, text)
        t2 = time.perf_counter()
        t3 = time.perf_counter()
        one_call = tok.encode(text).ids  # the reference the parallel pieces must equal exactly
        t4 = time.perf_counter()
        rows.append({"corpus": name, "MB": mb, "vocab": tok.get_vocab_size(), "train s": t1 - t0,
                     "encode s": t2 - t1, "encode MB/s": mb / (t2 - t1),
                     "one-call encode MB/s": mb / (t4 - t3), "train+encode s": t2 - t0,
                     "chars/token": len(text) / len(ids), "ids == one call": bool(np.array_equal(ids, one_call))})
    table(rows, f"HF byte-level BPE (vocab {vocab_size}) | {machine()}")
    rows = []
    for name, path in corpora[:1]:
        text = path.read_text(encoding="utf-8")
        for vocab in (1000, vocab_size):
            t0 = time.perf_counter()
            bpe = BPE()
            bpe.train(text, vocab)
            t1 = time.perf_counter()
            ids = bpe.encode(text)
            t2 = time.perf_counter()
            hf = train_tokenizer_from_text(text, vocab)
            rows.append({"corpus": name, "vocab": vocab, "train s": t1 - t0, "encode s": t2 - t1,
                         "chars/token": len(text) / len(ids),
                         "HF chars/token": len(text) / len(encode_fast(hf, text))})
    table(rows, "from-scratch BPE (mini_llm.bpe)")
