"""Training: the loop that notebooks and `mini-llm train` share.

cross-entropy -> AdamW (decay / no-decay groups, fused kernels where available) -> linear
warmup then cosine decay (`schedule.py`) -> gradient clipping -> optional gradient accumulation,
on cuda (bf16 autocast), mps or cpu (fp32). Validation on a fixed subset of windows (the one
measure that decides `best`; the final eval also scores the whole split), `last` and `best`
checkpoints, exact resume (same text, the checkpoint's tokenizer), fine-tuning from another
run (`init_from`), Ctrl-C saves, metrics to JSONL and a loss-curve PNG. Under `torchrun` it
runs data-parallel (DDP): each rank draws its own batches and dropout masks, gradients are
averaged, rank 0 alone logs, evaluates and writes, and rank 0's clock decides for every rank
when to stop and which LR to use.
Options: `optimizer="muon"` trains the blocks' weight matrices with Muon (`muon.py`) instead of
AdamW (the default arch, "tuned", does); `schedule="wsd"` holds the peak LR and decays only at
the end (`schedule.py`).

The loop reads top to bottom in `_loop`: decide, set the LR, one optimizer step, log, and
every `eval_interval` steps evaluate and save; `open_run` builds what it works with.

    python -m mini_llm.train --time-budget 300      # or: mini-llm train ...
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist

from mini_llm.checkpoint import find_checkpoint, load_checkpoint, load_train_state, read_meta, save_checkpoint
from mini_llm.corpus import default_sources, resolve_sources
from mini_llm.data import Prepared, eval_windows, get_batch, prepare_dataset, windows_at
from mini_llm.device import get_device, seed_everything
from mini_llm.errors import UserError
from mini_llm.files import sha256_file
from mini_llm.model import ARCHS, CHOICES, GPTConfig, MiniGPT
from mini_llm.muon import Muon, MuonWithAdamW
from mini_llm.paths import display, runs_dir
from mini_llm.schedule import LRPlan, lr_at  # noqa: F401  (lr_at: the schedule notebooks and tests import from here)
from mini_llm.tokenizer import tokenizer_hash


@dataclass
class TrainConfig:
    # model: flat here so every field is a CLI flag; defaults are GPTConfig's (the seed's)
    vocab_size: int = GPTConfig.vocab_size
    block_size: int = GPTConfig.block_size
    n_embd: int = GPTConfig.n_embd
    n_head: int = GPTConfig.n_head
    n_layer: int = GPTConfig.n_layer
    dropout: float = GPTConfig.dropout
    bias: bool = GPTConfig.bias
    # "tuned" (rope + Muon): what measured best here (BENCHMARKS.md); "gpt2": the classic MiniGPT the
    # notebooks build, with AdamW; "modern": every option of the speed records (model.ARCHS)
    arch: str = "tuned"
    pos: str | None = None  # each option None: as `arch` says; a value overrides it
    norm: str | None = None
    qk_norm: bool | None = None
    mlp: str | None = None
    tie_head: bool | None = None
    zero_init: bool | None = None
    rope_base: float = GPTConfig.rope_base
    # data
    min_frequency: int = 2
    val_fraction: float = 0.1
    batching: str = "random"  # "random": random offsets (nanoGPT); "sliding": the seed's windows, by epoch
    stride: int = 1  # sliding windows: distance between window starts
    # optimisation
    batch_size: int = 16  # with 50 warmup steps: the best short-run recipe measured (BENCHMARKS.md; lr: RECIPES)
    grad_accum: int = 1
    lr: float | None = None  # None: as `arch` says (RECIPES)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    optimizer: str | None = None  # None: as `arch` says; "adamw", or "muon": Muon for the blocks' matrices, AdamW for the rest
    muon_lr: float = 0.02  # Muon's peak LR, scheduled like lr (Keller Jordan's default; 0.04 measured no better here)
    muon_momentum: float = 0.95
    schedule: str = "cosine"  # "cosine"; or "wsd": warmup, hold the peak, decay linearly to the same floor
    decay_fraction: float = 0.2  # wsd: the last share of the run spent decaying (20%: Hagele et al. 2024)
    # when to stop: whichever comes first (none given: one epoch)
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds of training
    # evaluation and bookkeeping
    eval_interval: int = 250
    eval_windows: int = 128  # periodic evals use this many fixed val windows ...
    final_eval_windows: int | None = None  # ... and the final one this many (None: the whole val split)
    log_interval: int = 10
    samples: int = 0  # tokens of text generated at step 0 and at every eval, into samples.jsonl (0: none)
    sample_prompt: str = "\n"
    seed: int = 1337
    device: str = "auto"
    compile: bool = False  # torch.compile the training forward/backward (needs a C++ compiler on CPU)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise UserError(f"--arch {self.arch!r}: use one of {', '.join(ARCHS)}")
        for name, value in {**ARCHS[self.arch], **RECIPES[self.arch]}.items():
            if getattr(self, name) is None:  # fill the options the user left to the arch
                setattr(self, name, value)

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, **{name: getattr(self, name) for name in MODEL_FIELDS if name != "vocab_size"})

    def validate(self) -> None:
        positive = ["batch_size", "grad_accum", "eval_interval", "eval_windows", "log_interval", "stride"]
        if self.samples < 0:
            raise UserError(f"--samples must be 0 (none) or a number of tokens (got {self.samples})")
        if self.samples and not self.sample_prompt:
            raise UserError("--sample-prompt is empty: give at least one character of text")
        if self.final_eval_windows is not None:
            positive.append("final_eval_windows")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if self.optimizer not in ("adamw", "muon"):
            raise UserError(f"--optimizer must be 'adamw' or 'muon' (got {self.optimizer!r})")
        if self.muon_lr <= 0:
            raise UserError(f"--muon-lr must be positive (got {self.muon_lr})")
        if not 0 <= self.muon_momentum < 1:
            raise UserError(f"--muon-momentum must be in [0, 1) (got {self.muon_momentum})")
        if self.schedule not in ("cosine", "wsd"):
            raise UserError(f"--schedule must be 'cosine' or 'wsd' (got {self.schedule!r})")
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"--decay-fraction must be in (0, 1]: the share of the run that decays "
                            f"(got {self.decay_fraction})")
        if self.batching not in ("random", "sliding"):
            raise UserError(f"--batching must be 'random' or 'sliding' (got {self.batching!r})")
        for name in ("epochs", "max_steps", "time_budget"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive (got {value})")


MODEL_FIELDS = tuple(f.name for f in fields(GPTConfig))  # the TrainConfig fields that make the model
# Each arch trains with the optimizer and peak LR that measured best with it (BENCHMARKS.md: the
# ablation). gpt2 keeps AdamW, the optimizer notebooks 05-07 build and prove against; with Muon
# on the blocks, the AdamW rest (embeddings, gains, biases) does better at a higher LR.
RECIPES = {"gpt2": dict(optimizer="adamw", lr=2e-3), "modern": dict(optimizer="muon", lr=2e-3),
           "tuned": dict(optimizer="muon", lr=3e-3)}


# ---------------------------------------------------------------------------------------------
# Pieces


def configure_optimizer(model, cfg: TrainConfig, device: torch.device):
    """AdamW; weight decay only on matrices (not on biases, LayerNorm or anything 1-D). With
    cfg.optimizer "muon": Muon for the 2-D weights inside the blocks, AdamW as above for the rest
    (embeddings, LM head, gains, biases), held together as one optimizer."""
    params = [p for p in model.parameters() if p.requires_grad]
    muon = [p for p in muon_params(model) if p.requires_grad] if cfg.optimizer == "muon" else []
    taken = {id(p) for p in muon}
    params = [p for p in params if id(p) not in taken]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters, instead of a loop of small ops per tensor.
    extra = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    adamw = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)
    if not muon:
        return adamw
    # The loop sets every group's LR to the schedule's LR times lr_scale: Muon's runs at muon_lr.
    # Its weight decay is scaled so that a matrix shrinks by lr * weight_decay per step under
    # either optimizer (with the defaults: 0.01 at LR 0.02, the Muon repository's recipe).
    scale = cfg.muon_lr / cfg.lr
    group = {"params": muon, "lr_scale": scale, "weight_decay": cfg.weight_decay / scale}
    return MuonWithAdamW(Muon([group], lr=cfg.muon_lr, momentum=cfg.muon_momentum), adamw)


def muon_params(model) -> list:
    """The parameters Muon trains: the 2-D weight matrices inside the transformer blocks
    (attention and MLP projections). Embeddings and the LM head read or write tokens rather
    than mix hidden features, so they stay with AdamW, like everything 1-D."""
    return [p for p in model.blocks.parameters() if p.dim() == 2]


@torch.no_grad()
def evaluate(model, val_ids, block_size: int, device, chars_per_token: float, max_windows: int | None = None,
             batch_size: int = 32, autocast=contextlib.nullcontext) -> dict:
    """Mean loss per token over the fixed validation windows, with perplexity and nats per character."""
    was_training = model.training
    model.eval()
    x_all, y_all = eval_windows(val_ids, block_size, max_windows)
    total, count = 0.0, 0
    for i in range(0, len(x_all), batch_size):
        x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
        with autocast():
            _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    loss = total / max(count, 1)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50)), "val_nats_per_char": loss / chars_per_token,
            "val_tokens": count}


class Batches:
    """Training batches, reproducible and resumable: random offsets, or the seed's sliding
    windows visited in a seeded random order per epoch."""

    def __init__(self, ids, cfg: TrainConfig, rank: int = 0, world: int = 1):
        self.ids = torch.from_numpy(ids.astype("int64"))
        self.cfg, self.rank, self.world = cfg, rank, world
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
        self.n_windows = (len(self.ids) - cfg.block_size - 1) // cfg.stride + 1
        self.epoch, self.index = 0, 0  # sliding mode: position in the epoch's order
        self._order = None

    @property
    def steps_per_epoch(self) -> int:
        tokens = self.n_windows * self.cfg.stride if self.cfg.batching == "sliding" else len(self.ids)
        return max(1, tokens // (self.cfg.batch_size * self.cfg.block_size * self.cfg.grad_accum * self.world))

    def next(self):
        cfg = self.cfg
        if cfg.batching == "random":
            return get_batch(self.ids, cfg.batch_size, cfg.block_size, self.generator)
        if self._order is None or self.index + cfg.batch_size * self.world > len(self._order):
            if self._order is not None:
                self.epoch, self.index = self.epoch + 1, 0
            self._order = self._epoch_order()
        take = self._order[self.index + self.rank * cfg.batch_size : self.index + (self.rank + 1) * cfg.batch_size]
        self.index += cfg.batch_size * self.world
        return windows_at(self.ids, take * cfg.stride, cfg.block_size)

    def _epoch_order(self) -> torch.Tensor:
        """The order of the sliding windows in this epoch: seeded, the same on every rank."""
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + self.epoch)
        return torch.randperm(self.n_windows, generator=g)

    def state(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        if self.cfg.batching == "sliding" and self.index:
            self._order = self._epoch_order()


def _autocast(device: torch.device):
    # bf16 autocast only on CUDA: bf16 is ~100x slower on this kind of CPU, and MPS half
    # precision attention has leaked future tokens (trap 9), so both stay fp32.
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _ddp_setup():
    """(rank, world, local_rank) under torchrun, else (0, 1, 0)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class RunState:
    """Where a run stands: what a checkpoint's meta.json saves and --resume restores (beside the
    weights, the optimizer, the RNGs and the batch order in train_state.pt)."""

    step: int = 0
    best_val: float = float("inf")  # best loss on the fixed val subset (the one measure for `best`)
    tokens_seen: int = 0
    train_seconds: float = 0.0  # training time of the whole run, every session included
    plan: LRPlan = field(default_factory=LRPlan)

    def to_meta(self) -> dict:
        return {"step": self.step, "best_val_loss": self.best_val, "tokens_seen": self.tokens_seen,
                "train_seconds": self.train_seconds, "lr_plan": asdict(self.plan)}

    @classmethod
    def from_meta(cls, meta: dict) -> "RunState":
        plan = meta.get("lr_plan") or {"total_steps": meta.get("train_config", {}).get("max_steps"),
                                       "time_budget": meta.get("train_config", {}).get("time_budget")}
        return cls(meta["step"], meta.get("best_val_loss", float("inf")), meta.get("tokens_seen", 0),
                   meta.get("train_seconds", 0.0), LRPlan(**plan))


@dataclass
class Run:
    """Everything one training session works with (built by `open_run`)."""

    cfg: TrainConfig
    out: Path
    data: list | None
    prepared: Prepared
    model: torch.nn.Module  # the raw model (DDP wraps it in `ddp` below)
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: "Batches"
    device: torch.device
    autocast: object
    state: RunState
    rank: int = 0
    world: int = 1
    meta_extra: dict = field(default_factory=dict)  # e.g. init_from, data hashes
    shown: dict = field(default_factory=dict)  # what the progress bar shows after the bar

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.block_size * self.cfg.grad_accum * self.world

    @property
    def chars_per_token(self) -> float:
        return self.prepared.meta.get("val_chars", 1) / max(1, self.prepared.meta.get("val_tokens", 1))


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
    rank, world, local_rank = _ddp_setup()
    log = log if rank == 0 else (lambda *a, **k: None)
    try:
        run = open_run(cfg, data, out, resume, init_from, prepared, log, rank, world, local_rank)
        return _loop(run, log, progress and rank == 0, on_step)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _loop(run: Run, log, progress: bool, on_step) -> dict:
    cfg, state = run.cfg, run.state
    _log_header(run, log)
    clock = _Clock(state.train_seconds)
    bar = _progress_bar(run, progress)
    speed = _Speed()
    start_step, interrupted = state.step, False
    if state.step == 0:
        _write_sample(run, None)  # what the untrained model writes, to compare later samples with
    try:
        while True:
            seconds = _from_rank0(clock.seconds(), run.world)  # rank 0's clock decides for every rank
            if _should_stop(run, seconds):
                break
            lr = state.plan.lr(state.step, seconds, cfg)
            loss = _optimizer_step(run, lr)
            state.step += 1
            state.tokens_seen += run.tokens_per_step
            speed.add(run.tokens_per_step)
            if on_step is not None:
                on_step(state.step, loss)
            if state.step % cfg.log_interval == 0 or state.step == state.plan.total_steps:
                hint = progress and state.step - start_step == 2 * cfg.log_interval  # what an epoch will cost
                _log_step(run, bar, speed, loss.item(), lr, clock.seconds(), hint)
            bar.update(int(clock.seconds()) - bar.n if state.plan.total_steps is None else 1)
            if state.step % cfg.eval_interval == 0:
                state.train_seconds = clock.seconds()
                _evaluate_and_save(run)
                speed.restart()  # keep eval time out of tokens/s
    except KeyboardInterrupt:
        interrupted = True
        bar.close()
        log(f"\ninterrupted at step {state.step}: saving {display(run.out / 'last')} ...")
    bar.close()
    state.train_seconds = clock.seconds()
    return _finish(run, interrupted, clock, start_step, log)


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


def _should_stop(run: Run, seconds: float) -> bool:
    plan = run.state.plan
    return bool((plan.total_steps is not None and run.state.step >= plan.total_steps)
                or (plan.time_budget and seconds >= plan.time_budget))


def _optimizer_step(run: Run, lr: float) -> torch.Tensor:
    """grad_accum micro-batches, clipping, one optimizer step at `lr` (Muon's groups at their
    lr_scale times it); returns the mean (detached) loss."""
    cfg, model = run.cfg, run.ddp
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
    loss_sum = 0.0
    for micro in range(cfg.grad_accum):
        x, y = run.batches.next()
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        last = micro == cfg.grad_accum - 1
        # DDP averages gradients on backward; skip that on all but the last micro-batch.
        sync = contextlib.nullcontext() if run.world == 1 or last else model.no_sync()
        with sync, run.autocast():
            _, loss = model(x, y)
        (loss / cfg.grad_accum).backward()
        loss_sum += loss.detach()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum / cfg.grad_accum


def _evaluate_and_save(run: Run, save_last: bool = True) -> dict:
    """The periodic eval on the fixed val subset; a better loss is the new `best`; then `last`."""
    result = _from_rank0(_run_eval(run, run.cfg.eval_windows) if run.rank == 0 else None, run.world)
    _write_metrics(run, {"step": run.state.step, **result, "subset": True})
    run.shown["val"] = f"{result['val_loss']:.3f}"
    _write_sample(run, result["val_loss"])
    if result["val_loss"] < run.state.best_val:
        run.state.best_val = result["val_loss"]
        _save(run, "best", {"val": result})
    if save_last:
        _save(run, "last")
        if run.rank == 0:
            plot_if_possible(run.out)
    return result


def _finish(run: Run, interrupted: bool, clock: _Clock, start_step: int, log) -> dict:
    """Final evals (the subset, which can still win `best`, and the whole split, reported), the
    last checkpoint, the plot, the summary and what to do next."""
    cfg, state = run.cfg, run.state
    in_sync = _check_ranks_in_sync(run.model) if run.world > 1 else True
    final = {}
    if not interrupted:
        if state.step % cfg.eval_interval:  # the subset not scored at this step yet: it may still win `best`
            _evaluate_and_save(run, save_last=False)
        final = _from_rank0(_run_eval(run, cfg.final_eval_windows) if run.rank == 0 else None, run.world)
        _write_metrics(run, {"step": state.step, **final, "subset": False})  # reported, never compared with the subset
    _save(run, "last", {"val": final} if final else None)
    if run.rank == 0:
        plot_if_possible(run.out)
    seconds = clock.session()
    summary = {"run": str(run.out), "steps": state.step, "tokens_seen": state.tokens_seen, "seconds": seconds,
               "tokens_per_s": (state.step - start_step) * run.tokens_per_step / max(seconds, 1e-9),
               "best_val_loss": state.best_val, "interrupted": interrupted, "ranks_in_sync": in_sync, **final}
    if final:
        log(f"done: {state.step:,} steps in {seconds:.0f} s | val loss {final['val_loss']:.3f} | "
            f"perplexity {final['val_ppl']:.1f} | {final['val_nats_per_char']:.3f} nats/char")
    out = display(run.out)
    log(f"checkpoints: {out}/best (best val), {out}/last (for --resume)")
    done = state.train_seconds
    log(f"continue training: mini-llm train --out {out} --resume --time-budget {int(done) + 600}"
        f"   (budgets count the whole run, {done:.0f} s done; the LR decays on from where it stands)")
    log(f"chat with it:      mini-llm chat --checkpoint {out}")
    return summary


# --- setting a run up ---------------------------------------------------------------------------


def open_run(cfg: TrainConfig, data, out, resume: bool, init_from, prepared: Prepared | None, log,
             rank: int = 0, world: int = 1, local_rank: int = 0) -> Run:
    """Resolve the run folder and config, the data (with the right tokenizer), the model and the
    optimizer, restoring them on --resume and taking the weights on --init-from."""
    cfg.validate()
    if resume and init_from:
        raise UserError("use --resume or --init-from, not both: --resume continues a run, --init-from starts a new one from it")
    out = Path(out) if out else runs_dir() / time.strftime("%Y%m%d-%H%M%S")
    source, meta_extra = None, {}
    if resume:
        source = find_checkpoint(out, which="last")
        cfg, data = _resumed_config(cfg, source, data)
    else:
        if init_from:
            source = _init_source(init_from, out)
            cfg = _fine_tune_config(cfg, source)
            meta_extra["init_from"] = str(Path(source).resolve())
        if (out / "last" / "meta.json").exists():
            raise UserError(f"{display(out)} already holds a run: use --resume to continue it, or another --out")
    device = _training_device(cfg, world, local_rank)
    source_model = tokenizer = None
    if source is not None:
        source_model, tokenizer, source_meta = load_checkpoint(source, "cpu")
    if prepared is None:
        data, prepared = _prepare_data(cfg, data, tokenizer, log, rank, world)
    elif tokenizer is not None and tokenizer_hash(prepared.tokenizer) != tokenizer_hash(tokenizer):
        raise UserError("the prepared data was encoded with another tokenizer than the checkpoint's")
    prepared.check_block_size(cfg.block_size)
    if data:
        meta_extra["data_sha256"] = [sha256_file(f) for f in resolve_sources(data)]

    seed_everything(cfg.seed)  # the same initial weights on every rank ...
    model = MiniGPT(cfg.model_config(prepared.vocab_size)).to(device)
    if world > 1:
        seed_everything(cfg.seed + rank)  # ... then each rank its own dropout masks
    optimizer = configure_optimizer(model, cfg, device)
    batches = Batches(prepared.train, cfg, rank, world)
    state = RunState()
    if source_model is not None:
        model.load_state_dict(source_model.state_dict())
    if resume:
        train_state = load_train_state(source)
        optimizer.load_state_dict(train_state["optimizer"])
        batches.load_state(_for_rank(train_state["batches"], rank))
        restore_rng_state(_for_rank(train_state["rng"], rank) if "rng" in train_state else {"cpu": train_state["torch_rng"]},
                          device)
        state = RunState.from_meta(source_meta)
        log(f"resuming {display(source)} at step {state.step}")
    elif init_from:
        log(f"fine-tuning {display(source)} (step {source_meta.get('step', '?')}) with its tokenizer: "
            "a fresh optimizer and LR schedule")
    total_steps = _total_steps(cfg, batches.steps_per_epoch)
    state.plan = state.plan.extended(state.step, state.train_seconds, total_steps, cfg.time_budget, cfg)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    ddp = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:  # only the training step; evaluation and checkpoints use the plain model
        ddp = torch.compile(ddp)
    return Run(cfg, out, data, prepared, model, ddp, optimizer, batches, device, _autocast(device), state, rank, world,
               meta_extra)


def _resumed_config(cfg: TrainConfig, source: Path, data):
    """The saved run's config (how long to go on stays the user's new choice) and its data, which
    must be the same text: other text goes through --init-from."""
    meta = read_meta(source)
    saved = {"arch": "gpt2"}  # runs saved before there was a choice: the classic model (with AdamW)
    saved.update({f.name: meta["train_config"][f.name] for f in fields(TrainConfig) if f.name in meta["train_config"]})
    for name in ("epochs", "max_steps", "time_budget", "device", "eval_interval", "log_interval", "compile"):
        saved[name] = getattr(cfg, name)
    saved_data = meta.get("data")
    if data and saved_data and _resolved(data) != _resolved(saved_data):
        raise UserError(f"this run was trained on {', '.join(map(display, saved_data))}; --resume continues on the same "
                        f"text: drop --data, or start a new run from it with --init-from {display(source)} --data ...")
    data = data or saved_data
    if data and meta.get("data_sha256") and [sha256_file(f) for f in resolve_sources(data)] != meta["data_sha256"]:
        raise UserError(f"{', '.join(map(display, _resolved(data)))} changed since this run started; --resume needs the "
                        f"same text: restore it, or fine-tune on the new text with --init-from {display(source)}")
    return TrainConfig(**saved), data


def _init_source(init_from, out: Path) -> Path:
    source = find_checkpoint(Path(init_from), which="best")
    if out.resolve() in (source.resolve(), source.parent.resolve()):
        raise UserError(f"--out {display(out)} is the same folder as --init-from: fine-tuning writes a new run, "
                        "so choose another --out (the source stays untouched)")
    return source


def _fine_tune_config(cfg: TrainConfig, source: Path) -> TrainConfig:
    """The architecture comes from the checkpoint (its weights must fit); training choices stay the user's."""
    model = GPTConfig(**read_meta(source)["model_config"]).to_dict()  # older checkpoints: the classic options
    arch = {name: model[name] for name in MODEL_FIELDS if name != "dropout"}
    return TrainConfig(**dict(asdict(cfg), **arch))


def _log_header(run: Run, log) -> None:
    cfg, plan = run.cfg, run.state.plan
    rules = [f"{plan.total_steps:,} steps"] if plan.total_steps else []
    rules += [f"{plan.time_budget:g} s of training"] if plan.time_budget else []
    log(f"model: {run.model.num_params() / 1e6:.2f}M parameters | vocab {run.prepared.vocab_size:,} | context "
        f"{cfg.block_size} | {cfg.n_layer} layers x {cfg.n_head} heads x {cfg.n_embd} wide | arch {run.model.config.arch}"
        + ("" if run.model.config.arch != "custom" else f" ({_options_text({k: getattr(cfg, k) for k in ARCHS['gpt2']})})")
        + f" | optimizer {cfg.optimizer}")
    log(f"device: {run.device}{f' x {run.world} processes (DDP)' if run.world > 1 else ''} | "
        f"precision: {'bf16 autocast' if run.device.type == 'cuda' else 'fp32'}")
    log(f"data: {len(run.prepared.train):,} train / {len(run.prepared.val):,} val tokens | {run.tokens_per_step:,} tokens "
        f"per step | {run.batches.steps_per_epoch:,} steps per epoch | stop at {' or '.join(rules)}")
    log(f"run folder: {display(run.out)}")


def _progress_bar(run: Run, progress: bool):
    """A bar over steps; with only a time budget it counts seconds, so its ETA is still right."""
    from tqdm.auto import tqdm

    plan, state = run.state.plan, run.state
    by_time = plan.total_steps is None
    return tqdm(total=int(plan.time_budget) if by_time else plan.total_steps,
                initial=int(state.train_seconds) if by_time else state.step, disable=not progress,
                unit="s" if by_time else "step", dynamic_ncols=True, desc="train", file=sys.stderr,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if by_time else None)


def _log_step(run: Run, bar, speed: _Speed, loss: float, lr: float, seconds: float, hint: bool) -> None:
    tok_s = speed.take()
    _write_metrics(run, {"step": run.state.step, "loss": loss, "lr": lr, "tokens_per_s": tok_s, "elapsed": seconds})
    run.shown.update({"loss": f"{loss:.3f}", "lr": f"{lr:.1e}", "tok/s": f"{tok_s:,.0f}"})
    if run.state.plan.total_steps is None:
        run.shown["step"] = run.state.step
    bar.set_postfix(run.shown, refresh=False)
    if hint:
        epoch_hint(run.batches.steps_per_epoch, run.tokens_per_step, tok_s)


def _run_eval(run: Run, max_windows: int | None) -> dict:
    return evaluate(run.model, run.prepared.val, run.cfg.block_size, run.device, run.chars_per_token, max_windows,
                    autocast=run.autocast)


def _write_metrics(run: Run, record: dict) -> None:
    if run.rank == 0:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def _write_sample(run: Run, val_loss: float | None) -> None:
    """With cfg.samples: the text the model writes now, appended to samples.jsonl. Sampled with
    the default settings from a generator seeded by cfg.seed, so every sample of a run starts
    from the same random numbers and only the model differs; training's RNG is not touched."""
    if not run.cfg.samples or run.rank != 0:
        return
    from mini_llm.generate import Sampling, generate  # generation sits beside training; imported only when sampling

    text = generate(run.model, run.prepared.tokenizer, run.cfg.sample_prompt, run.cfg.samples,
                    seed=run.cfg.seed)
    record = {"step": run.state.step, "val_loss": val_loss, "prompt": run.cfg.sample_prompt, "text": text,
              "sampling": asdict(Sampling(seed=run.cfg.seed))}
    with open(run.out / "samples.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _save(run: Run, name: str, extra: dict | None = None) -> None:
    """Write checkpoint `name` (every rank takes part in gathering the RNG and batch states)."""
    train_state = {"optimizer": run.optimizer.state_dict(), "rng": _gather(rng_state(run.device), run.world),
                   "batches": _gather(run.batches.state(), run.world)}
    if run.rank == 0:
        meta = dict(run.state.to_meta(), epoch=run.state.step / run.batches.steps_per_epoch, train_config=asdict(run.cfg),
                    data=[str(Path(d).resolve()) for d in _as_list(run.data)] if run.data else None,
                    chars_per_token=run.chars_per_token, world_size=run.world, **run.meta_extra, **(extra or {}))
        save_checkpoint(run.out / name, run.model, run.prepared.tokenizer, meta, train_state)


def rng_state(device: torch.device) -> dict:
    """The RNG states a resume needs: the CPU's, and the accelerator's when training on one
    (dropout masks are drawn there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda" and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])
    elif "mps" in state and device.type == "mps":
        torch.mps.set_rng_state(state["mps"])


def _training_device(cfg: TrainConfig, world: int, local_rank: int) -> torch.device:
    device = get_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _prepare_data(cfg: TrainConfig, data, tokenizer, log, rank: int, world: int):
    """(data sources, Prepared), encoded with `tokenizer` when given (resume, fine-tuning), else
    with one trained on the data. Rank 0 prepares and caches first; the others then read the cache."""
    if data is None:
        files, note = default_sources()
        log(note)
        data = [str(f) for f in files]
    if world > 1 and rank != 0:
        dist.barrier()
    prepared = prepare_dataset(data, cfg.vocab_size, cfg.min_frequency, cfg.val_fraction, log=log, tokenizer=tokenizer)
    if world > 1 and rank == 0:
        dist.barrier()
    return data, prepared


def _total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int | None:
    """The step limit (the smallest of max_steps and epochs); None when only a time budget is set."""
    limits = [cfg.max_steps] if cfg.max_steps else []
    limits += [math.ceil(cfg.epochs * steps_per_epoch)] if cfg.epochs else []
    if not limits and not cfg.time_budget:
        limits.append(steps_per_epoch)  # nothing said: one epoch
    return min(limits) if limits else None


def epoch_hint(steps_per_epoch, tokens_per_step, tok_s) -> None:
    """After the first steps, tell the user what one epoch will cost at the measured speed."""
    from tqdm.auto import tqdm

    minutes = steps_per_epoch * tokens_per_step / max(tok_s, 1e-9) / 60
    tqdm.write(f"measured {tok_s:,.0f} tokens/s: one epoch takes about {minutes:.1f} min", file=sys.stderr)


def _from_rank0(obj, world: int):
    """Rank 0's value on every rank (rank 0 alone evaluates and keeps the clock; all ranks then decide alike)."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj, world: int) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if world == 1:
        return [obj]
    objs = [None] * world
    dist.all_gather_object(objs, obj)
    return objs


def _for_rank(states: list, rank: int):
    return states[rank] if rank < len(states) else states[0]


def _as_list(data):
    return [data] if isinstance(data, (str, Path)) else list(data)


def _resolved(data) -> list[Path]:
    return [Path(f).resolve() for f in resolve_sources(data)]


def _check_ranks_in_sync(model) -> bool:
    """DDP keeps replicas identical; verify it with a checksum of the weights on every rank."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().cpu().item()
    sums = _gather(checksum, dist.get_world_size())
    same = all(s == sums[0] for s in sums)
    if dist.get_rank() == 0:
        print(f"ranks in sync: {same} (weight checksums {sums})", file=sys.stderr)
    return same


def plot_if_possible(out: Path) -> None:
    try:
        from mini_llm.plots import plot_losses

        plot_losses(out, save=out / "loss.png")
    except Exception as e:  # a plot must never stop training
        print(f"note: could not draw the loss curve ({e})", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", nargs="+", help="corpus: a file, several files or a folder of .txt "
                   "(default: data/your_data.txt if present, else the Shakespeare corpus)")
    p.add_argument("--out", help="run folder (default: runs/<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(same text, same tokenizer; a longer budget decays the LR on from where it stands)")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint or run folder's weights and tokenizer, with a fresh "
                        "optimizer and schedule, in a new run folder (the model flags come from the checkpoint)")
    g = p.add_argument_group("model")
    for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name), help=f"default {getattr(d, name)}")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--no-bias", dest="bias", action="store_false", help="no biases in Linear and LayerNorm")
    g.add_argument("--arch", choices=list(ARCHS), default=d.arch,
                   help=f"tuned (default): pos=rope, trained with Muon, what measured best in a few CPU minutes; gpt2: "
                        f"the classic MiniGPT of the notebooks, with AdamW; modern: {_options_text(ARCHS['modern'])}, "
                        f"with Muon. The flags below (and --optimizer, --lr) override single choices")
    for name, choices in CHOICES.items():
        g.add_argument(f"--{name}", choices=choices, default=None, help="default: as --arch says")
    for name in ("qk_norm", "tie_head", "zero_init"):
        g.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None,
                       help="default: as --arch says")
    g.add_argument("--rope-base", type=float, default=d.rope_base, help=f"rotary positions' base (default {d.rope_base:g})")
    g = p.add_argument_group("optimisation")
    for name in ("batch_size", "grad_accum", "warmup_steps"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name), help=f"default {getattr(d, name)}")
    g.add_argument("--lr", type=float, default=None, help="peak LR (of AdamW; default: as --arch says: "
                   + ", ".join(f"{arch} {recipe['lr']:g}" for arch, recipe in RECIPES.items()) + ")")
    for name in ("min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name), help=f"default {getattr(d, name)}")
    g.add_argument("--optimizer", default=None,  # checked by TrainConfig.validate: a one-line error
                   help="adamw, or muon: Muon for the blocks' weight matrices, AdamW for the rest "
                        "(default: as --arch says: " + ", ".join(f"{a} {r['optimizer']}" for a, r in RECIPES.items()) + ")")
    g.add_argument("--muon-lr", type=float, default=d.muon_lr, help=f"Muon's peak LR (default {d.muon_lr})")
    g.add_argument("--muon-momentum", type=float, default=d.muon_momentum, help=f"default {d.muon_momentum}")
    g.add_argument("--schedule", default=d.schedule,
                   help="LR after warmup: cosine (default) down to lr * min-lr-ratio, or wsd: hold the peak, then "
                        "decay linearly to it over the last --decay-fraction of the run")
    g.add_argument("--decay-fraction", type=float, default=d.decay_fraction, help=f"wsd: default {d.decay_fraction}")
    g = p.add_argument_group("data")
    g.add_argument("--batching", choices=["random", "sliding"], default=d.batching,
                   help="random offsets (default) or the seed's sliding windows, visited by epoch")
    g.add_argument("--stride", type=int, default=d.stride, help="sliding windows: step between window starts (default 1)")
    g.add_argument("--min-frequency", type=int, default=d.min_frequency)
    g.add_argument("--val-fraction", type=float, default=d.val_fraction)
    g = p.add_argument_group("how long (first reached wins; none given: one epoch)")
    g.add_argument("--epochs", type=float)
    g.add_argument("--max-steps", type=int)
    g.add_argument("--time-budget", type=float, help="seconds of training")
    g = p.add_argument_group("other")
    g.add_argument("--eval-interval", type=int, default=d.eval_interval)
    g.add_argument("--eval-windows", type=int, default=d.eval_windows,
                   help="the fixed val subset every eval scores (it alone decides best); the final eval also scores the whole split")
    g.add_argument("--final-eval-windows", type=int, default=None, help="val windows for the final eval (default: all)")
    g.add_argument("--log-interval", type=int, default=d.log_interval)
    g.add_argument("--samples", type=int, default=d.samples, metavar="TOKENS",
                   help="write this many tokens of generated text to samples.jsonl at step 0 and at every eval (default 0: none)")
    g.add_argument("--sample-prompt", default=d.sample_prompt,
                   help=r"the text samples continue (default a newline; \n in it means a newline)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step: faster steps after a "
                   "compile of about a minute (on CPU it needs a C++ compiler); see BENCHMARKS.md")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def config_from_args(args) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if "sample_prompt" in values:
        values["sample_prompt"] = values["sample_prompt"].replace("\\n", "\n")  # a shell cannot type a newline easily
    return TrainConfig(**values)


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(config_from_args(args), data=args.data, out=args.out, resume=args.resume,
                    init_from=args.init_from, progress=not args.no_progress)
    return 130 if summary["interrupted"] else 0


def main(argv=None) -> int:
    from mini_llm.errors import guarded

    p = argparse.ArgumentParser(prog="python -m mini_llm.train", description="Train MiniGPT (same as `mini-llm train`).")
    add_arguments(p)
    return guarded(lambda: run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
