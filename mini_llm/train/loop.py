"""Training: the loop that notebooks and `mini-llm train` share.

cross-entropy -> AdamW, or Muon + AdamW (`optim.py`) -> linear warmup then cosine or WSD decay
(`schedule.py`) -> gradient clipping -> optional gradient accumulation, on cuda, mps or cpu, in
fp32 or bf16 autocast (`--precision`). Validation on a fixed subset of windows (the one measure that decides `best`;
the final eval also scores the split, up to a fixed number of tokens), `last` and `best` checkpoints, Ctrl-C saves,
metrics to JSONL, a loss-curve PNG and, if asked, generated samples. `session.py` sets a session
up (new, resumed or fine-tuned); `distributed.py` makes it data-parallel under torchrun.

The loop reads top to bottom in `_loop`: decide, set the LR, one optimizer step, log, and every
`eval_interval` steps evaluate and save.

Chat fine-tuning (`cfg.chat`) runs the same loop on rows of conversations whose targets
outside the assistant's replies are IGNORE_INDEX, so the model's loss, and every evaluation, is
the masked loss. It also scores the held-out conversations before the first step (the "before"
of fine-tuning), its samples are replies to held-out questions, and its `best` is where it ends.
"""

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from mini_llm.chat import answer
from mini_llm.checkpoint import save_checkpoint
from mini_llm.corpus import PROGRESS_DELAY
from mini_llm.data import IGNORE_INDEX, Prepared, eval_window_count, eval_windows
from mini_llm.generate import Sampling, TorchRunner, generate
from mini_llm.model import ARCHS
from mini_llm.optim import set_lr
from mini_llm.paths import display
from mini_llm.train import distributed
from mini_llm.train.config import TrainConfig
from mini_llm.train.session import Session, open_session, rng_state

CHAT_SAMPLES = 3  # held-out questions a chat run answers into samples.jsonl at step 0 and every eval ...
CHAT_SAMPLE_TOKENS = 64  # ... in up to this many tokens each, unless cfg.samples says otherwise


@torch.no_grad()
def evaluate(model, val_ids, block_size: int, device, chars_per_token: float, max_windows: int | None = None,
             batch_size: int = 32, autocast=contextlib.nullcontext, progress: bool = False) -> dict:
    """Mean loss per counted token (targets that are not IGNORE_INDEX) over the first `max_windows`
    fixed validation windows (or packed rows; None: all), with perplexity, nats per character and
    what was scored. The windows are read a batch at a time (the split may be a memory-mapped file
    of any size); with `progress`, a bar shows if that takes long."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    n = eval_window_count(val_ids, block_size, max_windows)
    total, count = 0.0, 0
    for i in tqdm(range(0, n, batch_size), desc="final eval", unit="batch", delay=PROGRESS_DELAY, leave=False,
                  disable=not progress, file=sys.stderr):
        x, y = eval_windows(val_ids, block_size, min(batch_size, n - i), first=i)  # windows i .. i + B - 1
        x, y = x.to(device), y.to(device)
        with autocast():
            _, loss = model(x, y)
        counted = int((y != IGNORE_INDEX).sum())  # every target of text; the assistant's of conversations
        total += loss.item() * counted
        count += counted
    model.train(was_training)
    loss = total / max(count, 1)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50)), "val_nats_per_char": loss / chars_per_token,
            "val_tokens": count, "val_windows": n, "val_split_windows": eval_window_count(val_ids, block_size),
            "whole_split": n == eval_window_count(val_ids, block_size)}


def train(cfg: TrainConfig, data=None, out: Path | str | None = None, resume: bool = False,
          prepared: Prepared | None = None, log=print, progress: bool = True, on_step=None,
          init_from: Path | str | None = None) -> dict:
    """Train MiniGPT; returns a summary dict (steps, best val, run folder, ...).

    data: a corpus file, files or folder (None: data/your_data.txt or the Shakespeare corpus).
    out: the run folder (default runs/<timestamp>). resume: continue `out` from its last checkpoint,
    on the same text with the same tokenizer. init_from: start from another run's weights and
    tokenizer (fine-tuning on `data`), with a fresh optimizer and schedule, in a new run folder.
    on_step(step, loss): optional callback after each optimizer step with the mean loss (notebooks, tests).
    """
    rank, world, local_rank = distributed.setup()
    log = log if rank == 0 else (lambda *a, **k: None)
    try:
        session = open_session(cfg, data, out, resume, init_from, prepared, log, rank, world, local_rank)
        return _loop(session, log, progress and rank == 0, on_step)
    finally:
        distributed.teardown(world)


def _loop(session: Session, log, progress: bool, on_step) -> dict:
    cfg, state = session.cfg, session.state
    _log_header(session, log)
    clock = _Clock(state.train_seconds)
    bar = _progress_bar(session, progress)
    speed = _Speed()
    start_step, interrupted = state.step, False
    if state.step == 0:
        if cfg.chat and session.rank == 0:  # the held-out loss before fine-tuning, to compare the evals with
            _write_metrics(session, {"step": 0, **_run_eval(session, cfg.eval_windows), "subset": True})
        _write_sample(session, None)  # what the untrained model writes, to compare later samples with
    try:
        while True:
            seconds = distributed.from_rank0(clock.seconds(), session.world)  # rank 0's clock decides for every rank
            if _should_stop(session, seconds):
                break
            lr = state.plan.lr(state.step, seconds, cfg)
            loss = _optimizer_step(session, lr)
            state.step += 1
            state.tokens_seen += session.tokens_per_step
            speed.add(session.tokens_per_step)
            if on_step is not None:
                on_step(state.step, loss)
            if state.step % cfg.log_interval == 0 or state.step == state.plan.total_steps:
                hint = progress and state.step - start_step == 2 * cfg.log_interval  # what an epoch will cost
                _log_step(session, bar, speed, loss.item(), lr, clock.seconds(), hint)
            bar.update(int(clock.seconds()) - bar.n if state.plan.total_steps is None else 1)
            if state.step % cfg.eval_interval == 0:
                state.train_seconds = clock.seconds()
                _evaluate_and_save(session)
                speed.restart()  # keep eval time out of tokens/s
    except KeyboardInterrupt:
        interrupted = True
        bar.close()
        log(f"\ninterrupted at step {state.step}: saving {display(session.out / 'last')} ...")
    bar.close()
    state.train_seconds = clock.seconds()
    return _finish(session, interrupted, clock, start_step, log, progress)


class _Clock:
    """Seconds of training in the whole run: what earlier sessions did plus this one so far."""

    def __init__(self, before: float):
        self.before, self.start = before, time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def session(self) -> float:
        return time.perf_counter() - self.start


class _Speed:
    """Tokens per second over the steps since the last log (evaluations left out)."""

    def __init__(self):
        self.restart()

    def restart(self):
        self.t, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int):
        self.tokens += tokens

    def take(self) -> float:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.t, 1e-9)
        self.t, self.tokens = now, 0
        return rate


def _should_stop(session: Session, seconds: float) -> bool:
    plan = session.state.plan
    return bool((plan.total_steps is not None and session.state.step >= plan.total_steps)
                or (plan.time_budget and seconds >= plan.time_budget))


def _optimizer_step(session: Session, lr: float) -> torch.Tensor:
    """grad_accum micro-batches, clipping, one optimizer step at `lr` (Muon's groups at their
    lr_scale times it); returns the mean (detached) loss."""
    cfg, model = session.cfg, session.step_model
    set_lr(session.optimizer, lr)
    loss_sum = 0.0
    for micro in range(cfg.grad_accum):
        x, y = session.batches.next()
        x, y = x.to(session.device, non_blocking=True), y.to(session.device, non_blocking=True)
        last = micro == cfg.grad_accum - 1
        # DDP averages gradients on backward; skip that on all but the last micro-batch.
        sync = contextlib.nullcontext() if session.world == 1 or last else model.no_sync()
        with sync, session.autocast():
            _, loss = model(x, y, head_chunk=cfg.head_chunk)
        (loss / cfg.grad_accum).backward()
        loss_sum += loss.detach()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    return loss_sum / cfg.grad_accum


def _evaluate_and_save(session: Session, save_last: bool = True) -> dict:
    """The periodic eval on the fixed val subset; a better loss is the new `best`; then `last`."""
    result = distributed.from_rank0(_run_eval(session, session.cfg.eval_windows) if session.rank == 0 else None, session.world)
    _write_metrics(session, {"step": session.state.step, **result, "subset": True})
    session.shown["val"] = f"{result['val_loss']:.3f}"
    _write_sample(session, result["val_loss"])
    if result["val_loss"] < session.state.best_val:
        session.state.best_val = result["val_loss"]
        if not session.cfg.chat:  # a chat fine-tune's best is its final weights (_finish)
            _save(session, "best", {"val": result})
    if save_last:
        _save(session, "last")
        if session.rank == 0:
            plot_if_possible(session.out)
    return result


def _finish(session: Session, interrupted: bool, clock: "_Clock", start_step: int, log, progress: bool = False) -> dict:
    """Final evals (the subset, which can still win `best`, and the split's first windows up to
    cfg.final_windows(), reported), the last checkpoint, the plot, the summary and what to do next."""
    cfg, state = session.cfg, session.state
    in_sync = distributed.ranks_in_sync(session.model, session.world)
    final = {}
    if not interrupted:
        if state.step % cfg.eval_interval:  # the subset not scored at this step yet: it may still win `best`
            _evaluate_and_save(session, save_last=False)
        final = distributed.from_rank0(_run_eval(session, cfg.final_windows(), progress) if session.rank == 0 else None,
                                       session.world)
        _write_metrics(session, {"step": state.step, **final, "subset": False})  # reported, never compared with the subset
    _save(session, "last", {"val": final} if final else None)
    if cfg.chat and not interrupted:
        # Chat fine-tuning keeps where it ends, as supervised fine-tuning does: the held-out loss (of
        # answers to questions it never saw) bottoms out before the end while the answers it is
        # taught keep improving, and those are what a model this small can give (BENCHMARKS.md, chat).
        _save(session, "best", {"val": final})
    if session.rank == 0:
        plot_if_possible(session.out)
    seconds = clock.session()
    summary = {"run": str(session.out), "steps": state.step, "tokens_seen": state.tokens_seen, "seconds": seconds,
               "tokens_per_s": (state.step - start_step) * session.tokens_per_step / max(seconds, 1e-9),
               "precision": session.precision,
               "best_val_loss": state.best_val, "interrupted": interrupted, "ranks_in_sync": in_sync, **final}
    if final:
        scored = "the whole val split" if final["whole_split"] else (f"the first {final['val_windows']:,} of "
                                                                    f"{final['val_split_windows']:,} val windows "
                                                                    f"({final['val_tokens']:,} tokens; --final-eval-all: all)")
        log(f"done: {state.step:,} steps in {seconds:.0f} s | val loss {final['val_loss']:.3f} | "
            f"perplexity {final['val_ppl']:.1f} | {final['val_nats_per_char']:.3f} nats/char on {scored}")
    out = display(session.out)
    kept = "the final weights, what chat talks to" if cfg.chat else "best val"
    log(f"checkpoints: {out}/best ({kept}), {out}/last (for --resume)")
    done = state.train_seconds
    log(f"continue training: mini-llm train --out {out} --resume --time-budget {int(done) + 600}"
        f"   (budgets count the whole run, {done:.0f} s done; the LR decays on from where it stands)")
    log(f"chat with it:      mini-llm chat --checkpoint {out}")
    return summary


def _log_header(session: Session, log) -> None:
    cfg, plan = session.cfg, session.state.plan
    rules = [f"{plan.total_steps:,} steps"] if plan.total_steps else []
    rules += [f"{plan.time_budget:g} s of training"] if plan.time_budget else []
    log(f"model: {session.model.num_params() / 1e6:.2f}M parameters | vocab {session.prepared.vocab_size:,} | context "
        f"{cfg.block_size} | {cfg.n_layer} layers x {cfg.n_head} heads x {cfg.n_embd} wide | arch {session.model.config.arch_name}"
        + ("" if session.model.config.arch_name != "custom" else f" ({_options_text({k: getattr(cfg, k) for k in ARCHS['gpt2']})})")
        + f" | optimizer {cfg.optimizer}")
    log(f"device: {session.device}{f' x {session.world} processes (DDP)' if session.world > 1 else ''} | "
        f"precision: {'bf16 autocast' if session.precision == 'bf16' else 'fp32'} ({session.precision_reason})")
    p = session.prepared
    data = (f"{len(p.train):,} train / {len(p.val):,} held-out rows of conversations" if cfg.chat
            else f"{len(p.train):,} train / {len(p.val):,} val tokens")
    log(f"data: {data} | {session.tokens_per_step:,} tokens "
        f"per step | {session.steps_per_epoch:,} steps per epoch | stop at {' or '.join(rules)}")
    log(f"run folder: {display(session.out)}")


def _progress_bar(session: Session, progress: bool):
    """A bar over steps; with only a time budget it counts seconds, so its ETA is still right."""
    from tqdm.auto import tqdm

    plan, state = session.state.plan, session.state
    by_time = plan.total_steps is None
    return tqdm(total=int(plan.time_budget) if by_time else plan.total_steps,
                initial=int(state.train_seconds) if by_time else state.step, disable=not progress,
                unit="s" if by_time else "step", dynamic_ncols=True, desc="train", file=sys.stderr,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if by_time else None)


def _log_step(session: Session, bar, speed: _Speed, loss: float, lr: float, seconds: float, hint: bool) -> None:
    tok_s = speed.take()
    _write_metrics(session, {"step": session.state.step, "loss": loss, "lr": lr, "tokens_per_s": tok_s, "elapsed": seconds})
    session.shown.update({"loss": f"{loss:.3f}", "lr": f"{lr:.1e}", "tok/s": f"{tok_s:,.0f}"})
    if session.state.plan.total_steps is None:
        session.shown["step"] = session.state.step
    bar.set_postfix(session.shown, refresh=False)
    if hint:
        epoch_hint(session.steps_per_epoch, session.tokens_per_step, tok_s)


def _run_eval(session: Session, max_windows: int | None, progress: bool = False) -> dict:
    return evaluate(session.model, session.prepared.val, session.cfg.block_size, session.device, session.chars_per_token, max_windows,
                    autocast=session.eval_autocast, progress=progress)


def _write_metrics(session: Session, record: dict) -> None:
    if session.rank == 0:
        with open(session.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def _write_sample(session: Session, val_loss: float | None) -> None:
    """With cfg.samples: the text the model writes now, appended to samples.jsonl (a chat run: its
    replies to the first held-out questions, and whether each ended with <|end|>). Sampled with
    the default settings from a generator seeded by cfg.seed, so every sample of a run starts
    from the same random numbers and only the model differs; training's RNG is not touched."""
    cfg = session.cfg
    if not (cfg.samples or cfg.chat) or session.rank != 0:
        return
    sampling = Sampling(seed=cfg.seed)
    if cfg.chat:  # replies to the first held-out questions
        runner = TorchRunner(session.model)
        records = []
        for messages in session.prepared.prompts[:CHAT_SAMPLES]:
            reply, ended = answer(runner, session.prepared.tokenizer, messages, cfg.samples or CHAT_SAMPLE_TOKENS,
                                  sampling)
            records.append({"messages": messages, "text": reply, "ended": ended})
    else:
        text = generate(session.model, session.prepared.tokenizer, cfg.sample_prompt, cfg.samples, seed=cfg.seed)
        records = [{"prompt": cfg.sample_prompt, "text": text}]
    with open(session.out / "samples.jsonl", "a") as f:
        for record in records:
            f.write(json.dumps({"step": session.state.step, "val_loss": val_loss, **record,
                                "sampling": asdict(sampling)}) + "\n")


def _save(session: Session, name: str, extra: dict | None = None) -> None:
    """Write checkpoint `name` (every rank takes part in gathering the RNG and batch states)."""
    train_state = {"optimizer": session.optimizer.state_dict(), "rng": distributed.gather(rng_state(session.device), session.world),
                   "batches": distributed.gather(session.batches.state(), session.world)}
    if session.rank == 0:
        meta = dict(session.state.to_meta(), epoch=session.state.step / session.steps_per_epoch, train_config=asdict(session.cfg),
                    data=[str(Path(d).resolve()) for d in _as_list(session.data)] if session.data else None,
                    chars_per_token=session.chars_per_token, world_size=session.world, **session.meta_extra, **(extra or {}))
        save_checkpoint(session.out / name, session.model, session.prepared.tokenizer, meta, train_state)


def epoch_hint(steps_per_epoch, tokens_per_step, tok_s) -> None:
    """After the first steps, tell the user what one epoch will cost at the measured speed."""
    from tqdm.auto import tqdm

    minutes = steps_per_epoch * tokens_per_step / max(tok_s, 1e-9) / 60
    tqdm.write(f"measured {tok_s:,.0f} tokens/s: one epoch takes about {minutes:.1f} min", file=sys.stderr)


def plot_if_possible(out: Path) -> None:
    try:
        from mini_llm.plots import plot_losses

        plot_losses(out, save=out / "loss.png")
    except Exception as e:  # a plot must never stop training
        print(f"note: could not draw the loss curve ({e})", file=sys.stderr)


def _as_list(data):
    return [data] if isinstance(data, (str, Path)) else list(data)


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())
