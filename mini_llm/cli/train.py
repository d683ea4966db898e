"""`mini-llm train`: every TrainConfig field is a flag, with TrainConfig's default (one source).

`add_config_arguments` is shared with `mini-llm bench quality`, which trains with the same recipe.
"""

import argparse
from dataclasses import fields

from mini_llm.device import set_threads
from mini_llm.model import ARCHS, CHOICES
from mini_llm.train import RECIPES, TrainConfig, train
from mini_llm.train.config import FINAL_EVAL_TOKENS, PRECISIONS

DEFAULT = {f.name: f.default for f in fields(TrainConfig)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add(group, name: str, kind=None, help: str = "", **kw) -> None:
    """A flag for the TrainConfig field `name`, defaulting to the field's default."""
    default = DEFAULT[name]
    shown = f"default {default}" if default is not None else ""
    group.add_argument(_flag(name), type=kind or type(default), default=default,
                       help="; ".join(t for t in (help, shown) if t), **kw)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that make a TrainConfig (see `config_from_args`)."""
    g = p.add_argument_group("model")
    for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"):
        _add(g, name)
    _add(g, "dropout")
    g.add_argument("--arch", choices=list(ARCHS), default=DEFAULT["arch"],
                   help=f"{DEFAULT['arch']} (default) or another name in model.ARCHS: the model options below and the "
                        "recipe (--optimizer, --lr) at once. " + "; ".join(
                            f"{arch}: {_options_text(ARCHS[arch])}, {RECIPES[arch]['optimizer']} at lr {RECIPES[arch]['lr']:g}"
                            for arch in ARCHS) + ". A flag given overrides its part")
    for name, choices in CHOICES.items():
        g.add_argument(_flag(name), choices=choices, default=None, help="default: as --arch says")
    for name in ("qk_norm", "tie_head", "zero_init", "bias"):
        g.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help="default: as --arch says")
    _add(g, "rope_base", help="rotary positions' base")
    g.add_argument("--norm-eps", type=float, default=None,
                   help="the norms' epsilon (default: LayerNorm 1e-5, RMSNorm the dtype's; GPT-2 uses 1e-5)")
    g.add_argument("--mlp-width", type=int, default=None, help="the MLP's inner width (default 4 x n_embd; SwiGLU 2/3 of it)")

    g = p.add_argument_group("optimisation")
    for name in ("batch_size", "grad_accum", "warmup_steps"):
        _add(g, name)
    g.add_argument("--lr", type=float, default=None, help="peak LR (of AdamW); default: as --arch says")
    for name in ("min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip"):
        _add(g, name)
    g.add_argument("--optimizer", default=None,  # checked by TrainConfig: a one-line error
                   help="adamw, or muon: Muon for the blocks' weight matrices, AdamW for the rest; default: as --arch says")
    _add(g, "muon_lr", help="Muon's peak LR")
    _add(g, "muon_momentum")
    _add(g, "muon_ns_steps", help="Muon's Newton-Schulz iterations per step")
    _add(g, "muon_ns_dtype", choices=list(PRECISIONS),
         help="their dtype; auto: bf16 where the step runs in bf16 (--precision), else fp32 (bf16 on CUDA)")
    g.add_argument("--muon-batched", action=argparse.BooleanOptionalAction, default=DEFAULT["muon_batched"],
                   help="one batched Newton-Schulz per matrix shape instead of one per matrix (the same update up "
                        "to float rounding)")
    _add(g, "schedule", help="LR after warmup: cosine down to lr * min-lr-ratio, or wsd: hold the peak, then decay "
                             "linearly to it over the last --decay-fraction of the run")
    _add(g, "decay_fraction", help="wsd")

    g = p.add_argument_group("data")
    _add(g, "batching", help="random offsets, or every sliding window (data.TextDataset) visited by epoch",
         choices=["random", "sliding"])
    _add(g, "stride", help="sliding windows: step between window starts")
    _add(g, "min_frequency", help="tokenizer: minimum pair count for a merge")
    _add(g, "val_fraction", help="last part of the text held out")

    g = p.add_argument_group("how long (first reached wins; none given: one epoch)")
    g.add_argument("--epochs", type=float)
    g.add_argument("--max-steps", type=int)
    g.add_argument("--time-budget", type=float, help="seconds of training")

    g = p.add_argument_group("evaluation, samples and the machine")
    _add(g, "eval_interval")
    _add(g, "eval_windows", help="the fixed val subset every eval scores (it alone decides best); "
                                 "the final eval also scores a larger share of the split")
    g.add_argument("--final-eval-windows", type=int, default=None,
                   help=f"val windows for the final eval (default: the first {FINAL_EVAL_TOKENS:,} tokens' worth)")
    g.add_argument("--final-eval-all", action="store_true", help="the final eval scores the whole val split")
    _add(g, "log_interval")
    _add(g, "samples", metavar="TOKENS", help="write this many tokens of generated text to samples.jsonl at step 0 "
                                              "and at every eval (0: none); with --chat, replies to 3 held-out "
                                              "questions are always written, in up to this many tokens (0: 64)")
    g.add_argument("--sample-prompt", default=DEFAULT["sample_prompt"],
                   help=r"the text samples continue (default a newline; \n in it means a newline)")
    _add(g, "seed")
    _add(g, "device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step: faster steps after a "
                   "compile of about a minute (on CPU it needs a C++ compiler); see BENCHMARKS.md")
    _add(g, "precision", choices=list(PRECISIONS),
         help="the training step in fp32 or under bf16 autocast (the weights and the optimizer state stay fp32); "
              "auto: bf16 on CUDA and on a CPU with bf16 instructions (AVX512-BF16, AMX), fp32 elsewhere")
    _add(g, "head_chunk", metavar="ROWS", help="compute the LM head and the loss this many rows at a time, "
                                               "never all logits at once (e.g. 512); 0: all at once")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", help="corpus: a file, several files or a folder of .txt "
                   "(default: data/your_data.txt if present, else the Shakespeare corpus); with --chat: JSONL files of "
                   "conversations (default: data/chat.jsonl, the chatterbot-corpus set, built if missing)")
    p.add_argument("--out", help="run folder (default: runs/<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(same text, same tokenizer; a longer budget decays the LR on from where it stands)")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint or run folder's weights and tokenizer, with a fresh "
                        "optimizer and schedule, in a new run folder (the model and its arch's recipe come from the "
                        "checkpoint; flags you give override the recipe)")
    p.add_argument("--chat", action="store_true",
                   help="chat fine-tuning: train on conversations ({\"messages\": [{\"role\": \"user\", ...}, ...]} per "
                        "line) with the loss on the assistant's replies only, from --init-from (default: the newest run); "
                        "the model gets the chat tokens and `mini-llm chat` then uses its template")
    add_config_arguments(p)
    g = p.add_argument_group("this process")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _options_text(options: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def config_from_args(args) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if "sample_prompt" in values:
        values["sample_prompt"] = values["sample_prompt"].replace("\\n", "\n")  # a shell cannot type a newline easily
    return TrainConfig(**values)


def cmd_train(args) -> int:
    cfg = config_from_args(args)
    if args.threads is not None:
        set_threads(args.threads)
    summary = train(cfg, data=args.data, out=args.out, resume=args.resume, init_from=args.init_from,
                    progress=not args.no_progress)
    return 130 if summary["interrupted"] else 0
