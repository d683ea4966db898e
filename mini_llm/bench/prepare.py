"""`mini-llm bench prepare`: `mini-llm prepare` on a corpus of a given size, run as a user runs it
(a child process, its own data/ folder): wall time and the time of each stage, tokens/s, and the
child's peak memory (its max RSS, from the operating system); then, if asked, `mini-llm train
--max-steps N` on the prepared corpus, timed the same way.

The corpus is built from the Shakespeare corpus with variation (`make_corpus`), or is a file you
give (TinyStories, your own). Nothing here is timed inside a test: the table is the record.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mini_llm.bench.common import machine, table
from mini_llm.corpus import build_shakespeare, size_name
from mini_llm.errors import UserError
from mini_llm.paths import data_dir, display

VOWELS = "aeiouAEIOU"


def make_corpus(size: int, out: Path, seed: int = 0) -> Path:
    """A corpus of at least `size` bytes (ending after a whole speech) from the Shakespeare corpus,
    copied with variation so that it is not one text repeated: each copy has the speeches in its
    own seeded order, and one speech in 20 with its vowels permuted (new word forms, so the
    tokenizer's trainer meets a growing vocabulary, as in real text)."""
    source = data_dir() / "shakespeare.txt"
    if not source.exists():
        build_shakespeare(source)
    speeches = source.read_text(encoding="utf-8").split("\n\n")
    written = 0
    with open(out, "w", encoding="utf-8") as f:
        for copy in range(10**9):
            rng = random.Random(seed * 1_000_003 + copy)
            order = rng.sample(speeches, len(speeches))
            vowels = list(VOWELS[:5])
            rng.shuffle(vowels)
            swap = str.maketrans(VOWELS, "".join(vowels) + "".join(vowels).upper())
            for i in range(0, len(order), 20):
                order[i] = order[i].translate(swap)
            text = "\n\n".join(order) + "\n\n"
            data = text.encode("utf-8")
            if written + len(data) >= size:  # the last copy: only up to the first speech end past `size`
                end = text.find("\n\n", len(data[: size - written].decode("utf-8", "ignore")))
                text = text[: end + 2] if end >= 0 else text
                f.write(text)
                break
            f.write(text)
            written += len(data)
    return out


def run_child(args: list[str], env: dict, log: Path) -> dict:
    """Run `python -m mini_llm ARGS` with its output in `log`: wall seconds and peak RSS in bytes."""
    if not hasattr(os, "wait4"):
        raise UserError("bench prepare measures a child process's peak memory with os.wait4: run it on Linux or macOS")
    start = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "mini_llm", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    if child.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise UserError(f"`mini-llm {' '.join(args)}` failed (exit {child.returncode}): {' / '.join(tail)}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"seconds": seconds, "peak_rss": usage.ru_maxrss * scale}


def bench_prepare(sizes: list[int], corpus: str | None = None, vocab_size: int = 8000, train_steps: int = 5,
                  workdir: str | None = None, train_args: tuple = ()) -> list[dict]:
    """One row per corpus: `mini-llm prepare` (and `train --max-steps train_steps`) in a child
    process whose data/ and runs/ are in a fresh temporary folder (under `workdir`)."""
    rows = []
    for size in ([None] if corpus else sizes):
        with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-prepare-") as tmp:
            tmp = Path(tmp)
            env = dict(os.environ, MINI_LLM_HOME=str(tmp))
            if corpus:
                path = Path(corpus).resolve()
                if not path.is_file():
                    raise UserError(f"--corpus {display(path)}: no such file")
            else:
                start = time.perf_counter()
                path = make_corpus(size, tmp / f"corpus-{size_name(size)}.txt")
                print(f"made {display(path)}: {path.stat().st_size:,} bytes in {time.perf_counter() - start:.0f} s")
            run = run_child(["prepare", "--source", str(path), "--vocab-size", str(vocab_size), "--no-progress"],
                            env, tmp / "prepare.log")
            meta = json.loads(next((tmp / "data" / "prepared").glob("*/meta.json")).read_text())
            stages, tokens = meta["seconds"], meta["train_tokens"] + meta["val_tokens"]
            row = {"corpus MB": path.stat().st_size / 1e6, "prepare s": run["seconds"], "scan s": stages["scan"],
                   "tokenizer s": stages["tokenizer"], "encode s": stages["encode"], "tokens": tokens,
                   "encode tokens/s": tokens / max(stages["encode"], 1e-9), "peak RSS GB": run["peak_rss"] / 1e9,
                   "tokenizer on": "whole train split" if meta["tokenizer_trained_on"].startswith("the whole")
                   else "a sample"}
            if train_steps:
                run = run_child(["train", "--data", str(path), "--max-steps", str(train_steps), "--no-progress",
                                 "--vocab-size", str(vocab_size), "--out", str(tmp / "runs" / "bench"), *train_args],
                                env, tmp / "train.log")
                row.update({f"train {train_steps} steps s": run["seconds"], "train peak RSS GB": run["peak_rss"] / 1e9})
            rows.append(row)
    table(rows, f"mini-llm prepare (and train) in a child process | {machine()}")
    return rows
