"""`mini-llm bench quality`: validation nats per character after a fixed training budget, per
variant and seed: the ablation behind the default recipe (BENCHMARKS.md).

The base is the recipe `mini-llm train` would run with the same flags; each variant changes a
few of its fields. "default" is the base itself; "gpt2" is the classic MiniGPT with AdamW, and
each "+option" variant adds one option (or two) to that classic model. The base's precision is
auto, as `mini-llm train`'s (bf16 on a CPU with bf16 instructions): "fp32" is the default recipe
in fp32, and the speed variants after it each change one of its levers, then several together.
"""

import os
import statistics
import tempfile
from pathlib import Path

from mini_llm.bench.common import LEVERS_OFF, TINY_HELP, machine, table, tinyshakespeare
from mini_llm.chunked_loss import CHUNK_ROWS
from mini_llm.data import prepare_dataset
from mini_llm.errors import UserError
from mini_llm.train import TrainConfig, train

VARIANTS = {
    "default": dict(),  # what `mini-llm train` trains
    "gpt2": dict(arch="gpt2"),  # the classic model the notebooks build, with AdamW
    "+rope": dict(arch="gpt2", pos="rope"),
    "+rmsnorm": dict(arch="gpt2", norm="rmsnorm"),
    "+qk-norm": dict(arch="gpt2", qk_norm=True),
    "+relu2": dict(arch="gpt2", mlp="relu2"),
    "+swiglu": dict(arch="gpt2", mlp="swiglu"),
    "+untied": dict(arch="gpt2", tie_head=False),
    "+zero-init": dict(arch="gpt2", zero_init=True),
    "+untied+zero-init": dict(arch="gpt2", tie_head=False, zero_init=True),
    "+muon": dict(arch="gpt2", optimizer="muon"),
    "+wsd": dict(arch="gpt2", schedule="wsd"),
    "+rope+muon": dict(arch="gpt2", pos="rope", optimizer="muon"),
    "+rope+relu2+muon": dict(arch="gpt2", pos="rope", mlp="relu2", optimizer="muon"),
    "modern": dict(arch="modern", optimizer="adamw"),
    "modern+muon": dict(arch="modern"),
    "modern+muon+wsd": dict(arch="modern", schedule="wsd"),
    "tuned": dict(arch="tuned"),  # rope + Muon
    # the speed levers of the default recipe, each alone on top of none of them (the default until
    # 2026-12-02), then together; "fp32" is the default on a CPU without bf16 instructions
    "no-levers": dict(LEVERS_OFF),
    "bf16": dict(LEVERS_OFF, precision="bf16"),  # Muon's iteration follows into bf16 ...
    "bf16+ns-fp32": dict(LEVERS_OFF, precision="bf16", muon_ns_dtype="fp32"),  # ... unless told otherwise
    "ns-bf16": dict(LEVERS_OFF, muon_ns_dtype="bf16"),
    "ns3": dict(LEVERS_OFF, muon_ns_steps=3),
    "batched": dict(LEVERS_OFF, muon_batched=True),
    "chunked-head": dict(LEVERS_OFF, head_chunk=CHUNK_ROWS),
    "bf16+batched+chunked": dict(precision="bf16", muon_batched=True, head_chunk=CHUNK_ROWS),
    "bf16+batched+chunked+ns3": dict(precision="bf16", muon_batched=True, head_chunk=CHUNK_ROWS, muon_ns_steps=3),
    "fp32": dict(precision="fp32"),
    "plain-head": dict(head_chunk=0),
    "unbatched": dict(muon_batched=False),
    "gpt2+fp32": dict(LEVERS_OFF, arch="gpt2"),
    "gpt2+bf16+chunked": dict(arch="gpt2", precision="bf16", head_chunk=CHUNK_ROWS),
}


def variant_config(base: TrainConfig, variant: str, seed: int) -> TrainConfig:
    """The TrainConfig of one quality run: the base recipe with the variant's changes and the seed."""
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}: choose from {', '.join(VARIANTS)}")
    return base.updated(**VARIANTS[variant], seed=seed)


def bench_quality(base: TrainConfig, variants=("default",), seeds=(1337,), data: Path | None = None,
                  progress: bool = True) -> list[dict]:
    """Val nats/char after the base's budget for each variant and seed; per variant the median
    over seeds, the spread (max - min) and the difference to the first variant. Returns the rows."""
    path = Path(data) if data else tinyshakespeare()
    if not path.exists():
        raise UserError(f"{path} not found. {TINY_HELP}")
    configs = {(v, seed): variant_config(base, v, seed) for v in variants for seed in seeds}  # all checked first
    prepared = prepare_dataset([path], base.vocab_size, base.min_frequency, base.val_fraction, log=lambda *a: None)
    runs = {}
    for (variant, seed), cfg in configs.items():
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(cfg, prepared=prepared, out=Path(tmp) / "run", log=lambda *a: None, progress=progress)
        runs[variant, seed] = summary
        print(f"{variant} seed {seed}: {summary['precision']}, {summary['steps']} steps, "
              f"{summary['tokens_per_s']:,.0f} tokens/s, {summary['val_nats_per_char']:.4f} nats/char | "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for variant in variants:
        scores = [runs[variant, s]["val_nats_per_char"] for s in seeds]
        rows.append({"variant": variant, "changes": _text(VARIANTS[variant]) or "-",
                     "precision": "/".join(sorted({runs[variant, s]["precision"] for s in seeds})),
                     "steps": statistics.median(runs[variant, s]["steps"] for s in seeds),
                     "tokens/s": statistics.median(runs[variant, s]["tokens_per_s"] for s in seeds),
                     "nats/char per seed": " ".join(f"{x:.3f}" for x in scores),
                     "median nats/char": statistics.median(scores), "spread": max(scores) - min(scores)})
    for row in rows:
        row[f"vs {variants[0]}"] = f"{row['median nats/char'] - rows[0]['median nats/char']:+.3f}"
    budget = " or ".join(([f"{base.max_steps} steps"] if base.max_steps else [])
                         + ([f"{base.time_budget:g} s"] if base.time_budget else []))
    table(rows, f"quality in a {budget} training budget on {path.name} (val = held-out last {base.val_fraction:.0%}), "
                f"seeds {' '.join(map(str, seeds))}, base: {_text(_changed(base)) or 'the defaults'} | {machine()}")
    return rows


def _changed(cfg: TrainConfig) -> dict:
    """The fields of cfg that differ from TrainConfig's defaults (what the user set)."""
    default = TrainConfig()
    keep = ("max_steps", "time_budget", "eval_interval", "device")
    return {k: v for k, v in vars(cfg).items() if k in default.__dataclass_fields__ and k not in keep
            and k not in cfg.from_arch and v != getattr(default, k)}


def _text(changes: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in changes.items())
