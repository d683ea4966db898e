"""Training: the loop that notebooks and `mini-llm train` share.

cross-entropy -> AdamW (decay / no-decay groups, fused kernels where available) -> linear
warmup then cosine decay -> gradient clipping -> optional gradient accumulation, on cuda
(bf16 autocast), mps or cpu (fp32). Validation on a fixed set of windows, `last` and `best`
checkpoints, exact resume, Ctrl-C saves, metrics to JSONL and a loss-curve PNG. Under
`torchrun` it runs data-parallel (DDP): each rank draws its own batches, gradients are
averaged, rank 0 alone logs, evaluates and writes.

    python -m mini_llm.train --time-budget 300      # or: mini-llm train ...
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist

from mini_llm.checkpoint import find_checkpoint, load_checkpoint, load_train_state, read_meta, save_checkpoint
from mini_llm.corpus import default_sources
from mini_llm.data import Prepared, eval_windows, get_batch, prepare_dataset, windows_at
from mini_llm.device import get_device, seed_everything
from mini_llm.errors import UserError
from mini_llm.model import GPTConfig, MiniGPT
from mini_llm.paths import display, runs_dir


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
    # data
    min_frequency: int = 2
    val_fraction: float = 0.1
    batching: str = "random"  # "random": random offsets (nanoGPT); "sliding": the seed's windows, by epoch
    stride: int = 1  # sliding windows: distance between window starts
    # optimisation
    batch_size: int = 16  # with lr 2e-3 and 50 warmup steps: the best short-run recipe measured (BENCHMARKS.md)
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # when to stop: whichever comes first (none given: one epoch)
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds of training
    # evaluation and bookkeeping
    eval_interval: int = 250
    eval_windows: int = 128  # periodic evals use this many fixed val windows ...
    final_eval_windows: int | None = None  # ... and the final one this many (None: the whole val split)
    log_interval: int = 10
    seed: int = 1337
    device: str = "auto"

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_embd=self.n_embd, n_head=self.n_head,
                         n_layer=self.n_layer, dropout=self.dropout, bias=self.bias)

    def validate(self) -> None:
        positive = ["batch_size", "grad_accum", "eval_interval", "eval_windows", "log_interval", "stride"]
        if self.final_eval_windows is not None:
            positive.append("final_eval_windows")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if self.batching not in ("random", "sliding"):
            raise UserError(f"--batching must be 'random' or 'sliding' (got {self.batching!r})")
        for name in ("epochs", "max_steps", "time_budget"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive (got {value})")


# ---------------------------------------------------------------------------------------------
# Pieces


def configure_optimizer(model, cfg: TrainConfig, device: torch.device):
    """AdamW; weight decay only on matrices (not on biases, LayerNorm or anything 1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters, instead of a loop of small ops per tensor.
    extra = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)


def lr_at(progress: float, step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup_steps`, then cosine from lr to lr * min_lr_ratio as progress goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, val_ids, block_size: int, device, chars_per_token: float, max_windows: int | None = None,
             batch_size: int = 32, autocast=None) -> dict:
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


def train(cfg: TrainConfig, data=None, out: Path | str | None = None, resume: bool = False,
          prepared: Prepared | None = None, log=print, progress: bool = True, on_step=None) -> dict:
    """Train MiniGPT; returns a summary dict (steps, best val, run folder, ...).

    data: a corpus file, files or folder (None: data/your_data.txt or the Shakespeare corpus).
    out: the run folder (default runs/<timestamp>). resume: continue `out` from its last checkpoint.
    on_step(step, loss): optional callback after each optimizer step (notebooks, tests).
    """
    rank, world, local_rank = _ddp_setup()
    main = rank == 0
    log = log if main else (lambda *a, **k: None)
    try:
        return _train(cfg, data, out, resume, prepared, log, progress and main, on_step, rank, world, local_rank)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(cfg, data, out, resume, prepared, log, progress, on_step, rank, world, local_rank):
    from tqdm.auto import tqdm

    cfg.validate()
    out = Path(out) if out else runs_dir() / time.strftime("%Y%m%d-%H%M%S")
    resume_from = None
    if resume:
        cfg, resume_from, data = _resumed_config(cfg, out, data)
    elif (out / "last").exists() and (out / "last" / "meta.json").exists():
        raise UserError(f"{display(out)} already holds a run: use --resume to continue it, or another --out")
    device = _training_device(cfg, world, local_rank)
    seed_everything(cfg.seed + rank)
    if prepared is None:
        data, prepared = _prepare_data(cfg, data, log, rank, world)
    prepared.check_block_size(cfg.block_size)
    vocab = prepared.vocab_size  # the real size, which can be smaller than asked (trap 4)
    chars_per_token = prepared.meta.get("val_chars", 1) / max(1, prepared.meta.get("val_tokens", 1))

    # Model and optimizer.
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = MiniGPT(cfg.model_config(vocab)).to(device)
    optimizer = configure_optimizer(model, cfg, device)
    batches = Batches(prepared.train, cfg, rank, world)
    step, best_val, elapsed_before, tokens_seen = 0, float("inf"), 0.0, 0
    if resume_from is not None:
        model_loaded, _, meta = load_checkpoint(resume_from, device)
        model.load_state_dict(model_loaded.state_dict())
        state = load_train_state(resume_from)
        optimizer.load_state_dict(state["optimizer"])
        batches.load_state(state["batches"][rank] if rank < len(state["batches"]) else state["batches"][0])
        torch.set_rng_state(state["torch_rng"])
        step, best_val = meta["step"], meta.get("best_val_loss", float("inf"))
        elapsed_before, tokens_seen = meta.get("train_seconds", 0.0), meta.get("tokens_seen", 0)
        log(f"resuming {display(resume_from)} at step {step}")
    raw_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = _autocast(device)

    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum * world
    steps_per_epoch = batches.steps_per_epoch
    total_steps = _total_steps(cfg, steps_per_epoch)

    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    n_params = raw_model.num_params()
    rules = [f"{total_steps:,} steps"] if total_steps else []
    rules += [f"{cfg.time_budget:g} s of training"] if cfg.time_budget else []
    stop_rule = " or ".join(rules)
    log(f"model: {n_params / 1e6:.2f}M parameters | vocab {vocab:,} | context {cfg.block_size} | "
        f"{cfg.n_layer} layers x {cfg.n_head} heads x {cfg.n_embd} wide")
    log(f"device: {device}{f' x {world} processes (DDP)' if world > 1 else ''} | "
        f"precision: {'bf16 autocast' if device.type == 'cuda' else 'fp32'}")
    log(f"data: {len(prepared.train):,} train / {len(prepared.val):,} val tokens | {tokens_per_step:,} tokens per step | "
        f"{steps_per_epoch:,} steps per epoch | stop at {stop_rule}")
    log(f"run folder: {display(out)}")

    def meta_now(extra=None):
        return dict({"step": step, "epoch": step / steps_per_epoch, "tokens_seen": tokens_seen,
                     "train_seconds": elapsed_before + (time.perf_counter() - start), "best_val_loss": best_val,
                     "train_config": asdict(cfg), "data": [str(Path(d).resolve()) for d in _as_list(data)] if data else None,
                     "chars_per_token": chars_per_token, "world_size": world}, **(extra or {}))

    def save(name, extra=None):
        state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                 "batches": _gather_batch_states(batches, world)}
        if rank == 0:
            save_checkpoint(out / name, raw_model, prepared.tokenizer, meta_now(extra), state)

    def write_metrics(record):
        if rank == 0:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def run_eval(max_windows):
        return evaluate(raw_model, prepared.val, cfg.block_size, device, chars_per_token, max_windows, autocast=autocast)

    model.train()
    start = time.perf_counter()
    # The bar counts steps; with only a time budget it counts seconds, so its ETA is still right.
    by_time = total_steps is None
    bar = tqdm(total=int(cfg.time_budget) if by_time else total_steps, initial=int(elapsed_before) if by_time else step,
               disable=not progress, unit="s" if by_time else "step", dynamic_ncols=True, desc="train", file=sys.stderr,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if by_time else None)
    last_val, interrupted, loss_value = None, False, float("nan")
    window_t, window_tokens, start_step = time.perf_counter(), 0, step
    try:
        while True:
            elapsed = time.perf_counter() - start
            if total_steps is not None and step >= total_steps:
                break
            if cfg.time_budget and elapsed_before + elapsed >= cfg.time_budget:
                break
            progress_frac = max(step / total_steps if total_steps else 0.0,
                                (elapsed_before + elapsed) / cfg.time_budget if cfg.time_budget else 0.0)
            lr = lr_at(progress_frac, step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = _optimizer_step(model, optimizer, batches, cfg, device, autocast, world)
            step += 1
            tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            if on_step is not None:
                on_step(step, loss_sum)

            if step % cfg.log_interval == 0 or step == total_steps:
                loss_value = (loss_sum / cfg.grad_accum).item()
                now = time.perf_counter()
                tok_s = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                write_metrics({"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": tok_s,
                               "elapsed": elapsed_before + now - start})
                post = {"loss": f"{loss_value:.3f}", "lr": f"{lr:.1e}", "tok/s": f"{tok_s:,.0f}"}
                if last_val is not None:
                    post["val"] = f"{last_val:.3f}"
                if by_time:
                    post["step"] = step
                bar.set_postfix(post, refresh=False)
                if step - start_step == 2 * cfg.log_interval and progress:
                    epoch_hint(steps_per_epoch, tokens_per_step, tok_s)
            bar.update(int(elapsed_before + time.perf_counter() - start) - bar.n if by_time else 1)
            if step % cfg.eval_interval == 0:
                result = _from_rank0(run_eval(cfg.eval_windows) if rank == 0 else None, world)
                last_val = result["val_loss"]
                write_metrics({"step": step, **result, "subset": True})
                if last_val < best_val:
                    best_val = last_val
                    save("best", {"val": result})
                save("last")
                if rank == 0:
                    plot_if_possible(out)
                window_t, window_tokens = time.perf_counter(), 0  # keep eval time out of tokens/s
    except KeyboardInterrupt:
        interrupted = True
        bar.close()
        log(f"\ninterrupted at step {step}: saving {display(out / 'last')} ...")
    bar.close()

    if world > 1:
        _check_ranks_in_sync(raw_model)
    final = {}
    if not interrupted:
        final = _from_rank0(run_eval(cfg.final_eval_windows) if rank == 0 else None, world)
        write_metrics({"step": step, **final, "subset": False})
        if final["val_loss"] < best_val:
            best_val = final["val_loss"]
            save("best", {"val": final})
    save("last", {"val": final} if final else None)
    if rank == 0:
        plot_if_possible(out)
    seconds = time.perf_counter() - start
    summary = {"run": str(out), "steps": step, "tokens_seen": tokens_seen, "seconds": seconds,
               "tokens_per_s": (step - start_step) * tokens_per_step / max(seconds, 1e-9),
               "best_val_loss": best_val, "interrupted": interrupted, **final}
    if final:
        log(f"done: {step:,} steps in {seconds:.0f} s | val loss {final['val_loss']:.3f} | "
            f"perplexity {final['val_ppl']:.1f} | {final['val_nats_per_char']:.3f} nats/char")
    log(f"checkpoints: {display(out / 'best')} (best val), {display(out / 'last')} (for --resume)")
    done = elapsed_before + seconds
    log(f"continue training: mini-llm train --out {display(out)} --resume --time-budget {int(done) + 600}"
        f"   (budgets and step limits count the whole run: {done:.0f} s done)")
    log(f"chat with it:      mini-llm chat --checkpoint {display(out)}")
    return summary


def _resumed_config(cfg: TrainConfig, out: Path, data):
    """The saved run's config (how long to go on stays the user's new choice), checkpoint, data."""
    resume_from = find_checkpoint(out, which="last")
    meta = read_meta(resume_from)
    saved = {f.name: meta["train_config"][f.name] for f in fields(TrainConfig) if f.name in meta["train_config"]}
    for name in ("epochs", "max_steps", "time_budget", "device", "eval_interval", "log_interval"):
        saved[name] = getattr(cfg, name)
    return TrainConfig(**saved), resume_from, data or meta.get("data")


def _training_device(cfg: TrainConfig, world: int, local_rank: int) -> torch.device:
    device = get_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _prepare_data(cfg: TrainConfig, data, log, rank: int, world: int):
    """(data sources, Prepared). Rank 0 prepares and caches first; the others then read the cache."""
    if data is None:
        files, note = default_sources()
        log(note)
        data = [str(f) for f in files]
    if world > 1 and rank != 0:
        dist.barrier()
    prepared = prepare_dataset(data, cfg.vocab_size, cfg.min_frequency, cfg.val_fraction, log=log)
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


def _optimizer_step(model, optimizer, batches: Batches, cfg: TrainConfig, device, autocast, world: int):
    """grad_accum micro-batches, clipping, one AdamW step; returns the summed (detached) loss."""
    loss_sum = 0.0
    for micro in range(cfg.grad_accum):
        x, y = batches.next()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        last = micro == cfg.grad_accum - 1
        # DDP averages gradients on backward; skip that on all but the last micro-batch.
        sync = contextlib.nullcontext() if world == 1 or last else model.no_sync()
        with sync, autocast():
            _, loss = model(x, y)
        (loss / cfg.grad_accum).backward()
        loss_sum += loss.detach()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


def epoch_hint(steps_per_epoch, tokens_per_step, tok_s) -> None:
    """After the first steps, tell the user what one epoch will cost at the measured speed."""
    from tqdm.auto import tqdm

    minutes = steps_per_epoch * tokens_per_step / max(tok_s, 1e-9) / 60
    tqdm.write(f"measured {tok_s:,.0f} tokens/s: one epoch takes about {minutes:.1f} min", file=sys.stderr)


def _from_rank0(obj, world: int):
    """Rank 0's value on every rank (rank 0 alone evaluates; all ranks then decide alike)."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _as_list(data):
    return [data] if isinstance(data, (str, Path)) else list(data)


def _gather_batch_states(batches: Batches, world: int) -> list:
    if world == 1:
        return [batches.state()]
    states = [None] * world
    dist.all_gather_object(states, batches.state())
    return states


def _check_ranks_in_sync(model) -> None:
    """DDP keeps replicas identical; verify it with a checksum of the weights on every rank."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().cpu()
    sums = [None] * dist.get_world_size()
    dist.all_gather_object(sums, checksum.item())
    if dist.get_rank() == 0:
        same = all(s == sums[0] for s in sums)
        print(f"ranks in sync: {same} (weight checksums {sums})", file=sys.stderr)


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
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g = p.add_argument_group("model")
    for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name), help=f"default {getattr(d, name)}")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--no-bias", dest="bias", action="store_false", help="no biases in Linear and LayerNorm")
    g = p.add_argument_group("optimisation")
    for name in ("batch_size", "grad_accum", "warmup_steps"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name), help=f"default {getattr(d, name)}")
    for name in ("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name), help=f"default {getattr(d, name)}")
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
    g.add_argument("--eval-windows", type=int, default=d.eval_windows, help="val windows per periodic eval (the final eval uses all)")
    g.add_argument("--final-eval-windows", type=int, default=None, help="val windows for the final eval (default: all)")
    g.add_argument("--log-interval", type=int, default=d.log_interval)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(config_from_args(args), data=args.data, out=args.out, resume=args.resume,
                    progress=not args.no_progress)
    return 130 if summary["interrupted"] else 0


def main(argv=None) -> int:
    from mini_llm.errors import guarded

    p = argparse.ArgumentParser(prog="python -m mini_llm.train", description="Train MiniGPT (same as `mini-llm train`).")
    add_arguments(p)
    return guarded(lambda: run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
