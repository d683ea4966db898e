"""What a training run is asked to do: `TrainConfig`, the model's config plus how to train it.

Every field is a flag of `mini-llm train` (`mini_llm/cli/train.py` builds them from here), so each
default is written once, in this file or in `GPTConfig`. A config is checked when it is made:
`TrainConfig(lr=-1)` raises a one-line `UserError`.

The architecture options (`pos`, `norm`, ...) and the optimizer and peak LR default to None,
meaning "as `arch` says": `model.ARCHS` names the options of each architecture and `RECIPES`
the optimizer and LR that measured best with it. A value given overrides the arch's.
"""

from dataclasses import asdict, dataclass, fields

from mini_llm.chunked_loss import CHUNK_ROWS
from mini_llm.data import VAL_FRACTION
from mini_llm.errors import UserError
from mini_llm.model import ARCHS, GPTConfig
from mini_llm.tokenizer import MIN_FREQUENCY

# Each arch trains with the optimizer and peak LR that measured best with it (BENCHMARKS.md: the
# ablation). gpt2 keeps AdamW, the optimizer notebooks 05-07 build and prove against; with Muon
# on the blocks, the AdamW rest (embeddings, gains, biases) does better at a higher LR.
RECIPES = {"gpt2": dict(optimizer="adamw", lr=2e-3), "modern": dict(optimizer="muon", lr=2e-3),
           "tuned": dict(optimizer="muon", lr=3e-3)}
MODEL_FIELDS = tuple(f.name for f in fields(GPTConfig))  # the fields that make the model
# The final evaluation scores the val split's first windows up to this many tokens by default, so
# its cost does not grow with the corpus (the default corpus's val split, about 150k tokens, fits).
FINAL_EVAL_TOKENS = 262_144
STOP_FIELDS = ("epochs", "max_steps", "time_budget")
PRECISIONS = ("auto", "fp32", "bf16")  # the choices of precision and of muon_ns_dtype


@dataclass
class TrainConfig(GPTConfig):
    # model: the sizes, dropout and rope_base are GPTConfig's fields with its defaults.
    # "tuned" (rope + Muon): what measured best here (BENCHMARKS.md); "gpt2": the classic MiniGPT the
    # notebooks build, with AdamW; "modern": every option of the speed records (model.ARCHS)
    arch: str = "tuned"
    pos: str | None = None  # each option None: as `arch` says; a value overrides it
    norm: str | None = None
    qk_norm: bool | None = None
    mlp: str | None = None
    tie_head: bool | None = None
    zero_init: bool | None = None
    bias: bool | None = None
    # data
    chat: bool = False  # fine-tune on conversations (JSONL: mini_llm/conversations.py), the loss on the assistant's replies only
    min_frequency: int = MIN_FREQUENCY
    val_fraction: float = VAL_FRACTION
    batching: str = "random"  # "random": random offsets (nanoGPT); "sliding": every window (data.TextDataset), by epoch
    stride: int = 1  # sliding windows: distance between window starts
    # optimisation
    batch_size: int = 16  # with 50 warmup steps: the best short-run recipe measured (BENCHMARKS.md)
    grad_accum: int = 1
    lr: float | None = None  # AdamW's peak LR; None: as `arch` says (RECIPES)
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    optimizer: str | None = None  # None: as `arch` says; "adamw", or "muon": Muon for the blocks' matrices, AdamW for the rest
    muon_lr: float = 0.02  # Muon's peak LR, scheduled like lr (Keller Jordan's default; 0.04 measured no better here)
    muon_momentum: float = 0.95
    # Muon's own cost (muon.py): Newton-Schulz iterations per step, their dtype ("auto": bf16 where the
    # step runs in bf16, else fp32 on a CPU and bf16 on CUDA), one batched iteration per matrix shape
    # (the same update up to rounding, fewer and larger matmuls: BENCHMARKS.md, issue 25's levers)
    muon_ns_steps: int = 5
    muon_ns_dtype: str = "auto"
    muon_batched: bool = True
    schedule: str = "cosine"  # "cosine"; or "wsd": warmup, hold the peak, decay linearly to the same floor
    decay_fraction: float = 0.2  # wsd: the last share of the run spent decaying (20%: Hagele et al. 2024)
    # when to stop: whichever comes first (none given: one epoch)
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds of training
    # evaluation and bookkeeping
    eval_interval: int = 250
    eval_windows: int = 128  # periodic evals use this many fixed val windows ...
    final_eval_windows: int | None = None  # ... and the final one this many (None: FINAL_EVAL_TOKENS' worth) ...
    final_eval_all: bool = False  # ... or every window of the val split, however long it is
    log_interval: int = 10
    samples: int = 0  # tokens of text generated at step 0 and at every eval, into samples.jsonl (0: none; a chat
    # run always answers a few held-out questions there, in up to this many tokens each; 0: loop.CHAT_SAMPLE_TOKENS)
    sample_prompt: str = "\n"
    seed: int = 1337
    device: str = "auto"
    compile: bool = False  # torch.compile the training forward/backward (needs a C++ compiler on CPU)
    # the training step: "fp32", or "bf16" autocast (fp32 weights and optimizer state; evaluation on a CPU
    # stays fp32); "auto": bf16 on CUDA and on CPUs with bf16 instructions (session.training_precision).
    # A proof that a hand-written fp32 loop is train() bit for bit (notebook 05) needs "fp32" and head_chunk=0.
    precision: str = "auto"
    head_chunk: int = CHUNK_ROWS  # the LM head + cross-entropy this many rows at a time (chunked_loss.py); 0: all at once

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise UserError(f"--arch {self.arch!r}: use one of {', '.join(ARCHS)}")
        # Fill what the user left to the arch, and remember which those were: fine-tuning takes
        # them from the checkpoint's arch instead (session.fine_tune_config).
        self.from_arch = {name for name in {**ARCHS[self.arch], **RECIPES[self.arch]} if getattr(self, name) is None}
        for name in self.from_arch:
            setattr(self, name, {**ARCHS[self.arch], **RECIPES[self.arch]}[name])
        super().__post_init__()  # the model's sizes and options
        self._check_training()

    def updated(self, **changes) -> "TrainConfig":
        """A copy with `changes`; what followed the arch follows the (possibly new) `arch` again."""
        given = {name: value for name, value in asdict(self).items() if name not in self.from_arch}
        return TrainConfig(**{**given, **changes})

    def final_windows(self) -> int | None:
        """How many val windows the final evaluation scores (None: all of them)."""
        if self.final_eval_all:
            return None
        return self.final_eval_windows or max(1, FINAL_EVAL_TOKENS // self.block_size)

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The model this run trains, with the vocabulary the tokenizer really has."""
        return GPTConfig(**dict({name: getattr(self, name) for name in MODEL_FIELDS}, vocab_size=vocab_size))

    def _check_training(self) -> None:
        positive = ["batch_size", "grad_accum", "eval_interval", "eval_windows", "log_interval", "stride",
                    "muon_ns_steps"]
        if self.final_eval_windows is not None:
            positive.append("final_eval_windows")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.final_eval_all and self.final_eval_windows is not None:
            raise UserError("--final-eval-all scores every val window: drop --final-eval-windows, or --final-eval-all")
        if self.samples < 0:
            raise UserError(f"--samples must be 0 (none) or a number of tokens (got {self.samples})")
        if self.samples and not self.sample_prompt:
            raise UserError("--sample-prompt is empty: give at least one character of text")
        if self.warmup_steps < 0:
            raise UserError(f"--warmup-steps must be 0 or more (got {self.warmup_steps})")
        for name in ("lr", "muon_lr"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive (got {getattr(self, name)})")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"--min-lr-ratio must be in [0, 1]: the floor as a share of the peak LR (got {self.min_lr_ratio})")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise UserError(f"--weight-decay and --grad-clip must be 0 (off) or positive "
                            f"(got {self.weight_decay} and {self.grad_clip})")
        for name in ("beta1", "beta2", "muon_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1) (got {getattr(self, name)})")
        if self.optimizer not in ("adamw", "muon"):
            raise UserError(f"--optimizer must be 'adamw' or 'muon' (got {self.optimizer!r})")
        if self.schedule not in ("cosine", "wsd"):
            raise UserError(f"--schedule must be 'cosine' or 'wsd' (got {self.schedule!r})")
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"--decay-fraction must be in (0, 1]: the share of the run that decays "
                            f"(got {self.decay_fraction})")
        for name in ("precision", "muon_ns_dtype"):
            if getattr(self, name) not in PRECISIONS:
                raise UserError(f"--{name.replace('_', '-')} must be auto, fp32 or bf16 (got {getattr(self, name)!r})")
        if self.head_chunk < 0:
            raise UserError(f"--head-chunk must be 0 (the whole head at once) or a number of rows "
                            f"(got {self.head_chunk})")
        if self.batching not in ("random", "sliding"):
            raise UserError(f"--batching must be 'random' or 'sliding' (got {self.batching!r})")
        if self.min_frequency < 1:
            raise UserError(f"--min-frequency must be at least 1 (got {self.min_frequency})")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction must be between 0 and 1, e.g. 0.1 (got {self.val_fraction})")
        for name in STOP_FIELDS:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive (got {value})")
