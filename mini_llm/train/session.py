"""Setting a training session up: a new run, a resumed one, or a fine-tune of another run's model.

`open_session` resolves the run folder and the config, the data (encoded with the right
tokenizer), the model and the optimizer, restoring all of it on `resume` and taking the weights
on `init_from`. Two policies live here:

- **resume** continues a run exactly: its saved config (only how long to go on is the user's new
  choice), the same text (refused if it differs or changed), its tokenizer, weights, optimizer,
  RNGs and batch order.
- **fine-tuning** (`init_from`) starts a new run from another run's weights and tokenizer, with a
  fresh optimizer and schedule. The model's architecture comes from the checkpoint (its weights
  must fit), and so does the recipe (optimizer, LR) of that architecture, unless the user set one.
- **chat fine-tuning** (`cfg.chat`) is fine-tuning on conversations (JSONL, `conversations.py`;
  default: the chatterbot-corpus set) from the given run, or the newest one: the checkpoint's
  tokenizer and model get the chat tokens (`chat_format.add_chat_tokens`), the conversations are
  packed into rows whose targets count only the assistant's replies, and every checkpoint's
  metadata carries the chat template. Resuming it is resuming: the rows are the same again.
"""

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from mini_llm import chat_format
from mini_llm.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_train_state,
    read_meta,
)
from mini_llm.conversations import ChatData, default_chat_sources, prepare_chat
from mini_llm.corpus import default_sources, resolve_sources
from mini_llm.data import Prepared, prepare_dataset
from mini_llm.device import bf16_matmul_speedup, cpu_bf16_flags, get_device, seed_everything
from mini_llm.errors import UserError
from mini_llm.files import sha256_file
from mini_llm.model import ARCHS, GPTConfig, MiniGPT
from mini_llm.optim import configure_optimizer
from mini_llm.paths import display, runs_dir
from mini_llm.schedule import LRPlan
from mini_llm.tokenizer import tokenizer_hash
from mini_llm.train import distributed
from mini_llm.train.batches import Batches
from mini_llm.train.config import MODEL_FIELDS, STOP_FIELDS, TrainConfig


@dataclass
class RunState:
    """Where a run stands: what a checkpoint's meta.json saves and resume restores (beside the
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
        saved = meta.get("train_config", {})
        plan = meta.get("lr_plan") or {"total_steps": saved.get("max_steps"), "time_budget": saved.get("time_budget")}
        return cls(meta["step"], meta.get("best_val_loss", float("inf")), meta.get("tokens_seen", 0),
                   meta.get("train_seconds", 0.0), LRPlan(**plan))


@dataclass
class Session:
    """Everything one training session works with (a run can take several sessions: resumes)."""

    cfg: TrainConfig
    out: Path
    data: list | None
    prepared: Prepared | ChatData
    model: torch.nn.Module  # the model itself: evaluation and checkpoints use it
    step_model: torch.nn.Module  # what the training step calls: the model, DDP around it, or compiled
    optimizer: torch.optim.Optimizer
    batches: Batches
    device: torch.device
    state: RunState
    rank: int = 0
    world: int = 1
    meta_extra: dict = field(default_factory=dict)  # e.g. init_from, data hashes, the precision that ran
    shown: dict = field(default_factory=dict)  # what the progress bar shows after the bar
    precision: str = "fp32"  # what the training step runs in: cfg.precision decided on this machine ...
    precision_reason: str = ""  # ... and why (the header line says both)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.block_size * self.cfg.grad_accum * self.world

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.batches.tokens_per_epoch // self.tokens_per_step)

    @property
    def chars_per_token(self) -> float:
        return self.prepared.meta.get("val_chars", 1) / max(1, self.prepared.meta.get("val_tokens", 1))

    def autocast(self):
        """The training step's context: bf16 autocast when the run's precision is bf16 (matmuls and
        attention in bf16; the weights, their gradients and the optimizer state stay fp32), else none."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def eval_autocast(self):
        """Evaluation's: fp32 on a CPU (val losses comparable between runs whatever their precision),
        on CUDA the training step's."""
        return self.autocast() if self.device.type == "cuda" else contextlib.nullcontext()


def open_session(cfg: TrainConfig, data, out, resume: bool, init_from, prepared: Prepared | ChatData | None, log,
                 rank: int = 0, world: int = 1, local_rank: int = 0) -> Session:
    """Build what a session trains with: restored on `resume`, from another run's weights on `init_from`."""
    if resume and init_from:
        raise UserError("use --resume or --init-from, not both: --resume continues a run, --init-from starts a new one from it")
    if cfg.chat and not resume and not init_from:
        init_from = find_checkpoint(None, which="best")  # chat fine-tuning starts from a model: the newest run's
        log(f"chat fine-tuning the newest run's checkpoint, {display(init_from)} (another: --init-from RUN)")
    out = Path(out) if out else runs_dir() / time.strftime("%Y%m%d-%H%M%S")
    source, meta_extra = None, {}
    if resume:
        source = find_checkpoint(out, which="last")
        cfg, data = resumed_config(cfg, source, data)
    else:
        if init_from:
            source = _init_source(init_from, out)
            cfg = fine_tune_config(cfg, source)
            meta_extra["init_from"] = str(Path(source).resolve())
        if (out / "last" / "meta.json").exists():
            raise UserError(f"{display(out)} already holds a run: use --resume to continue it, or another --out")
    device = training_device(cfg, world, local_rank)
    source_model = tokenizer = None
    if source is not None:
        source_model, tokenizer, source_meta = load_checkpoint(source, "cpu")
        if cfg.chat:
            source_model, tokenizer = chat_format.add_chat_tokens(source_model, tokenizer)
    if prepared is None:
        data, prepared = _prepare_data(cfg, data, tokenizer, log, rank, world)
    elif tokenizer is not None and tokenizer_hash(prepared.tokenizer) != tokenizer_hash(tokenizer):
        raise UserError("the prepared data was encoded with another tokenizer than the checkpoint's")
    if cfg.chat != isinstance(prepared, ChatData):
        raise UserError("chat fine-tuning trains on conversations (conversations.prepare_chat), other runs on text "
                        "(data.prepare_dataset): the prepared data is the other kind")
    prepared.check_block_size(cfg.block_size)
    if data:
        meta_extra["data_sha256"] = [sha256_file(f) for f in resolve_sources(data)]
    if chat_format.is_chat_tokenizer(prepared.tokenizer):
        meta_extra.update(chat_format.metadata())  # the chat template travels with every checkpoint

    precision, reason = distributed.from_rank0(training_precision(cfg.precision, device), world)  # every rank alike
    meta_extra["precision"] = precision  # what ran ("auto" in the config says only who chose)
    seed_everything(cfg.seed)  # the same initial weights on every rank ...
    model = MiniGPT(cfg.model_config(prepared.vocab_size)).to(device)
    if world > 1:
        seed_everything(cfg.seed + rank)  # ... then each rank its own dropout masks
    optimizer = configure_optimizer(model, cfg, device, precision)
    batches = Batches(prepared.train, cfg.block_size, cfg.batch_size, cfg.seed, cfg.batching, cfg.stride, rank, world)
    state = RunState()
    if source_model is not None:
        model.load_state_dict(source_model.state_dict())
    if resume:
        train_state = load_train_state(source)
        optimizer.load_state_dict(train_state["optimizer"])
        batches.load_state(distributed.for_rank(train_state["batches"], rank))
        rng = distributed.for_rank(train_state["rng"], rank) if "rng" in train_state else {"cpu": train_state["torch_rng"]}
        restore_rng_state(rng, device)
        state = RunState.from_meta(source_meta)
        log(f"resuming {display(source)} at step {state.step}")
    elif init_from:
        log(f"fine-tuning {display(source)} (step {source_meta.get('step', '?')}) with its tokenizer"
            f"{' and the chat tokens' if cfg.chat else ''}: "
            f"a fresh optimizer and LR schedule ({cfg.optimizer}, lr {cfg.lr:g})")
    session = Session(cfg, out, data, prepared, model, model, optimizer, batches, device, state, rank, world, meta_extra,
                      precision=precision, precision_reason=reason)
    state.plan = state.plan.extended(state.step, state.train_seconds, total_steps(cfg, session.steps_per_epoch),
                                     cfg.time_budget, cfg)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    session.step_model = distributed.wrap(model, device, world)
    if cfg.compile:  # only the training step; evaluation and checkpoints use the plain model
        session.step_model = torch.compile(session.step_model)
    return session


def resumed_config(cfg: TrainConfig, source: Path, data):
    """The saved run's config (how long to go on, and where, stay the user's new choice) and its
    data, which must be the same text: other text goes through --init-from."""
    meta = read_meta(source)
    saved = {"arch": "gpt2"}  # runs saved before there was a choice: the classic model (with AdamW)
    saved.update({f.name: meta["train_config"][f.name] for f in fields(TrainConfig) if f.name in meta["train_config"]})
    for name in (*STOP_FIELDS, "device", "eval_interval", "final_eval_windows", "final_eval_all", "log_interval", "compile"):
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


def fine_tune_config(cfg: TrainConfig, source: Path) -> TrainConfig:
    """The config of a fine-tune of the checkpoint `source`: its model (sizes and options: the
    weights must fit) and its arch, so that what the user left to the arch (optimizer, LR) is that
    arch's recipe; everything the user chose stays the user's."""
    meta = read_meta(source)
    model = GPTConfig(**meta["model_config"]).to_dict()  # older checkpoints: the classic options
    arch = meta.get("train_config", {}).get("arch", "gpt2")  # saved before there was a choice: classic
    weights = {name: model[name] for name in MODEL_FIELDS if name != "dropout"}
    return cfg.updated(**weights, arch=arch if arch in ARCHS else "gpt2")


def _init_source(init_from, out: Path) -> Path:
    source = find_checkpoint(Path(init_from), which="best")
    if out.resolve() in (source.resolve(), source.parent.resolve()):
        raise UserError(f"--out {display(out)} is the same folder as --init-from: fine-tuning writes a new run, "
                        "so choose another --out (the source stays untouched)")
    return source


def training_device(cfg: TrainConfig, world: int, local_rank: int) -> torch.device:
    device = get_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


BF16_MIN_SPEEDUP = 2.0  # auto on a CPU that does not report its flags: bf16 if its matmuls are this much faster


def training_precision(choice: str, device: torch.device) -> tuple[str, str]:
    """What the training step runs in, "fp32" or "bf16", for --precision `choice` on `device`, and why.

    auto: bf16 on CUDA; fp32 on MPS (trap 9 in docs/TRAPS.md); on a CPU bf16 where it has bf16
    instructions: as its flags say (Linux), else as a short probe measures (`bf16_matmul_speedup`).
    A CPU without them runs bf16 far slower than fp32 (trap 13)."""
    if choice == "bf16" and device.type == "mps":
        raise UserError("--precision bf16 on MPS: half-precision attention there has leaked future tokens "
                        "(trap 9 in docs/TRAPS.md); use --precision fp32 or auto")
    if choice != "auto":
        return choice, f"--precision {choice}"
    if device.type != "cpu":
        return ("bf16", "auto: CUDA") if device.type == "cuda" else ("fp32", f"auto: {device.type} trains in fp32")
    flags = cpu_bf16_flags()
    if flags is not None:
        return ("bf16" if flags else "fp32"), f"auto: the CPU reports {' '.join(flags) or 'no bf16 instructions'}"
    speedup = bf16_matmul_speedup()
    return ("bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"), f"auto: bf16 matmuls measured {speedup:.1f}x fp32's"


def _prepare_data(cfg: TrainConfig, data, tokenizer, log, rank: int, world: int):
    """(data sources, Prepared), encoded with `tokenizer` when given (resume, fine-tuning), else
    with one trained on the data; or, for chat fine-tuning, (sources, ChatData) of the conversations.
    Rank 0 prepares and caches first; the others then read the cache."""
    if data is None:
        files, note = default_chat_sources() if cfg.chat else default_sources()
        log(note)
        data = [str(f) for f in files]
    if rank != 0:
        distributed.barrier(world)
    if cfg.chat:
        prepared = prepare_chat(data, tokenizer, cfg.block_size, cfg.val_fraction, cfg.seed, log)
        for line in prepared.report():
            log(line)
    else:
        prepared = prepare_dataset(data, cfg.vocab_size, cfg.min_frequency, cfg.val_fraction, log=log, tokenizer=tokenizer)
    if rank == 0:
        distributed.barrier(world)
    return data, prepared


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int | None:
    """The step limit (the smallest of max_steps and epochs); None when only a time budget is set."""
    limits = [cfg.max_steps] if cfg.max_steps else []
    limits += [math.ceil(cfg.epochs * steps_per_epoch)] if cfg.epochs else []
    if not limits and not cfg.time_budget:
        limits.append(steps_per_epoch)  # nothing said: one epoch
    return min(limits) if limits else None


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


def _resolved(data) -> list[Path]:
    return [Path(f).resolve() for f in resolve_sources(data)]
