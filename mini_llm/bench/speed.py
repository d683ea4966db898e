"""`mini-llm bench model / step / train`: tokens per second of one training step, against the
reference minimal GPT, and of the real training loop.

    model   one forward + backward + AdamW step: tokens/s, FLOP/s and MFU against the measured matmul peak
    step    the reference minimal GPT and our variants, timed round-robin in one process
    train   the training loop's throughput against the model-only step, in the same run
"""

import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mini_llm.bench.common import (
    LEVERS_OFF,
    machine,
    matmul_peaks,
    median_time,
    mfu,
    peaks_text,
    table,
)
from mini_llm.bench.reference import ReferenceGPT, reference_optimizer
from mini_llm.chunked_loss import CHUNK_ROWS
from mini_llm.corpus import default_sources
from mini_llm.data import prepare_dataset
from mini_llm.model import GPTConfig, MiniGPT
from mini_llm.optim import configure_optimizer
from mini_llm.tokenizer import VOCAB_SIZE
from mini_llm.train import TrainConfig, train
from mini_llm.train.session import training_precision


def _step_fn(model, optimizer, x, y):
    def step():
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def _train_step_fn(model, optimizer, x, y, autocast=contextlib.nullcontext, **forward):
    """One training step as both loops do it: forward (under `autocast`, with the `forward` options:
    head_chunk), backward, clip to 1.0, step, zero."""
    def step():
        with autocast():
            _, loss = model(x, y, **forward)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def bench_model(device: str = "cpu", vocab_size: int = VOCAB_SIZE, batch_sizes=(16, 32), repeat: int = 7) -> None:
    device = torch.device(device)
    cfg = GPTConfig(vocab_size=vocab_size)
    peaks = matmul_peaks(device)
    rows = []
    variants = [("fused AdamW", {"fused": True}), ("foreach AdamW", {"foreach": True}), ("for-loop AdamW", {"foreach": False})]
    for batch in batch_sizes:
        for name, opt_kw in variants:
            torch.manual_seed(0)
            model = MiniGPT(cfg).to(device)
            if name == "fused AdamW":
                optimizer = configure_optimizer(model, TrainConfig(arch="gpt2"), device)
            else:
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **opt_kw)
            x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=device)
            y = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=device)
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            dt = median_time(_step_fn(model, optimizer, x, y), repeat, 3, sync)
            tok_s = batch * cfg.block_size / dt
            rows.append({"batch": batch, "optimizer": name, "step ms": dt * 1e3, "tokens/s": tok_s,
                         **mfu(tok_s * cfg.flops_per_token(), peaks)})
    table(rows, f"forward + backward + AdamW, default config ({cfg.num_params() / 1e6:.2f}M params, "
                f"{cfg.flops_per_token() / 1e6:.2f} MFLOP/token), T={cfg.block_size}, fp32 | "
                f"{peaks_text(peaks)} | {machine()}")


# Our side of the step benchmark: TrainConfig overrides (model options, optimizer, precision, head,
# Muon's iteration), and whether to torch.compile the model. The first rows are as the steps were
# measured before the speed levers (fp32, plain head, one Newton-Schulz per matrix); then each
# lever alone, then together, then the default.
STEP_VARIANTS = {
    "ours gpt2": (dict(arch="gpt2", **LEVERS_OFF), False),
    "ours modern": (dict(arch="modern", optimizer="adamw", **LEVERS_OFF), False),
    "ours tuned (rope + muon)": (dict(arch="tuned", **LEVERS_OFF), False),
    "ours gpt2 + muon": (dict(arch="gpt2", optimizer="muon", **LEVERS_OFF), False),
    "ours modern + muon": (dict(arch="modern", optimizer="muon", **LEVERS_OFF), False),
    "ours gpt2 + compile": (dict(arch="gpt2", **LEVERS_OFF), True),
    "ours modern + compile": (dict(arch="modern", optimizer="adamw", **LEVERS_OFF), True),
    "ours tuned + compile": (dict(arch="tuned", **LEVERS_OFF), True),
    # bf16 autocast (Muon's iteration follows it into bf16 unless told otherwise)
    "ours gpt2 bf16": (dict(LEVERS_OFF, arch="gpt2", precision="bf16"), False),
    "ours tuned bf16 (ns fp32)": (dict(LEVERS_OFF, precision="bf16", muon_ns_dtype="fp32"), False),
    "ours tuned bf16": (dict(LEVERS_OFF, precision="bf16"), False),
    # Muon's iteration, in an fp32 step
    "ours tuned ns 3": (dict(LEVERS_OFF, muon_ns_steps=3), False),
    "ours tuned ns bf16": (dict(LEVERS_OFF, muon_ns_dtype="bf16"), False),
    "ours tuned ns batched": (dict(LEVERS_OFF, muon_batched=True), False),
    # the chunked LM head + cross-entropy
    "ours gpt2 chunked head": (dict(LEVERS_OFF, arch="gpt2", head_chunk=CHUNK_ROWS), False),
    "ours tuned chunked head": (dict(LEVERS_OFF, head_chunk=CHUNK_ROWS), False),
    # together
    "ours gpt2 bf16 + chunked head": (dict(arch="gpt2", precision="bf16", head_chunk=CHUNK_ROWS), False),
    "ours tuned bf16 + batched": (dict(LEVERS_OFF, precision="bf16", muon_batched=True), False),
    "ours tuned bf16 + batched + chunked head": (dict(precision="bf16", muon_batched=True, head_chunk=CHUNK_ROWS),
                                                 False),
    "ours tuned bf16 + batched + chunked head + ns 3": (dict(precision="bf16", muon_batched=True, head_chunk=CHUNK_ROWS,
                                                             muon_ns_steps=3), False),
    "ours tuned bf16 + compile": (dict(LEVERS_OFF, precision="bf16"), True),
    "ours tuned fp32 + batched + chunked head": (dict(precision="fp32", muon_batched=True, head_chunk=CHUNK_ROWS),
                                                 False),  # the default on a CPU without bf16 instructions
    "ours default (as mini-llm train runs it)": (dict(), False),  # precision auto: decided on this machine
    "ours default + compile": (dict(), True),
}


def bench_step(device: str = "cpu", vocab_size: int = VOCAB_SIZE, batch_sizes=(16, 32), repeat: int = 7,
               step_variants=None) -> list[dict]:
    """Tokens/s of one training step (model + optimizer) at the default config: the reference
    minimal GPT and our variants, timed round-robin in one process so load changes hit all alike."""

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = step_variants or list(STEP_VARIANTS)
    steps, compile_s, precisions = {}, {}, {"reference (nanoGPT layout)": "fp32"}  # the reference as its users run it
    for batch in batch_sizes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, vocab_size, (batch, 128), generator=gen).to(device)
        y = torch.randint(0, vocab_size, (batch, 128), generator=gen).to(device)
        torch.manual_seed(0)
        ref = ReferenceGPT(GPTConfig(vocab_size=vocab_size)).to(device)
        steps[batch, "reference (nanoGPT layout)"] = _train_step_fn(ref, reference_optimizer(ref, device), x, y)
        for name in names:
            overrides, compiled = STEP_VARIANTS[name]
            cfg = TrainConfig(vocab_size=vocab_size, **overrides)
            precisions[name] = training_precision(cfg.precision, device)[0]
            torch.manual_seed(0)
            model = MiniGPT(cfg.model_config(vocab_size)).to(device)
            optimizer = configure_optimizer(model, cfg, device, precisions[name])
            if compiled:
                model = torch.compile(model)
            steps[batch, name] = _train_step_fn(model, optimizer, x, y, _autocast(precisions[name], device),
                                                head_chunk=cfg.head_chunk)
    for key, fn in steps.items():  # warm up (and compile) each before any timing
        t = time.perf_counter()
        for _ in range(3):
            fn()
        sync()
        compile_s[key] = time.perf_counter() - t
    times = {key: [] for key in steps}
    for _ in range(repeat):
        for key, fn in steps.items():
            t = time.perf_counter()
            fn()
            sync()
            times[key].append(time.perf_counter() - t)
    rows = []
    for (batch, name), ts in times.items():
        ref_t = statistics.median(times[batch, "reference (nanoGPT layout)"])
        dt = statistics.median(ts)
        rows.append({"batch": batch, "step": name, "precision": precisions[name], "step ms": dt * 1e3,
                     "tokens/s": batch * 128 / dt, "vs reference": f"{ref_t / dt:.2f}x",
                     "first 3 steps s": compile_s[batch, name]})
    table(rows, f"training step (forward, backward, clip, optimizer) at the default size, medians of {repeat} "
                f"round-robin repeats | {machine()}")
    return rows


def _autocast(precision: str, device: torch.device):
    """The step's context for a precision: bf16 autocast, or none (fp32)."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def bench_train(device: str = "cpu", vocab_size: int = VOCAB_SIZE, batch_sizes=(16, 32), repeat: int = 7, steps: int = 20) -> None:
    device = torch.device(device)
    peaks = matmul_peaks(device)
    files, _ = default_sources()
    prepared = prepare_dataset(files, vocab_size, log=lambda *a: None)
    vocab = prepared.vocab_size
    rows = []
    for batch in batch_sizes:
        cfg = TrainConfig(vocab_size=vocab, batch_size=batch, max_steps=steps + 5, eval_interval=10**9,
                          final_eval_windows=4, device=str(device), warmup_steps=5, **LEVERS_OFF)
        # the model-only step (the same plain fp32 step), in the same process, just before the loop
        torch.manual_seed(0)
        model = MiniGPT(cfg.model_config(vocab)).to(device)
        optimizer = configure_optimizer(model, cfg, device)
        x = torch.randint(0, vocab, (batch, cfg.block_size), device=device)
        dt_model = median_time(_step_fn(model, optimizer, x, x), repeat, 3)
        times, last = [], [time.perf_counter()]

        def on_step(step, loss):
            now = time.perf_counter()
            if step > 5:  # skip warm-up steps
                times.append(now - last[0])
            last[0] = now

        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, prepared=prepared, out=Path(tmp) / "run", log=lambda *a: None, progress=True, on_step=on_step)
        dt_loop = statistics.median(times)
        tok_model, tok_loop = batch * cfg.block_size / dt_model, batch * cfg.block_size / dt_loop
        flops = tok_loop * cfg.model_config(vocab).flops_per_token()
        rows.append({"batch": batch, "model-only tokens/s": tok_model, "train loop tokens/s": tok_loop,
                     "loop / model": f"{tok_loop / tok_model:.1%}", **mfu(flops, peaks)})
    table(rows, f"the real training loop (batches, forward, backward, clip, AdamW, logging, progress bar) on the "
                f"default corpus vs the model-only step | {peaks_text(peaks)} | {machine()}")
