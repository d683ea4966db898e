"""`mini-llm bench WHAT`: measured tables, to run on your own machine (CPU, CUDA or MPS).

    tokenizer   HF BPE training, encoding MB/s, characters/token; the from-scratch BPE
    model       one forward + backward + AdamW step: tokens/s, FLOP/s and MFU vs measured matmul peak
    train       the real training loop's throughput vs the model-only step, same run
    quality     val nats/char after a fixed training-time budget on TinyShakespeare
    generate    KV-cached vs exact-recompute generation: tokens/s and time to first token
    onnx        onnxruntime vs PyTorch: forward latency and cached generation speed

Timings are medians of repeated runs; ratios are measured in the same run, which matters on a
shared, noisy machine. No test asserts a time: these tables are the record (BENCHMARKS.md).
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mini_llm.errors import UserError
from mini_llm.model import GPTConfig, MiniGPT

TINY = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
TINY_HELP = ("TinyShakespeare: give --data PATH, or `mini-llm prepare --source tinyshakespeare` downloads it "
             "to data/tinyshakespeare.txt")


def table(rows: list[dict], title: str = "") -> str:
    """A plain-text table (also valid Markdown) from a list of dicts."""
    if title:
        print(f"\n{title}")
    cols = list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    text = "\n".join(lines)
    print(text)
    return text


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def machine() -> str:
    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {platform.processor() or ''} | {os.cpu_count()} cores | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads | {device} | load {load:.2f}")


def median_time(fn, repeat: int = 7, warmup: int = 2, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peaks(device=None, sizes=(512, 1024, 2048), repeat: int = 11) -> dict:
    """Measured fp32 matmul FLOP/s for square matrices of each size (the MFU denominators)."""
    device = device or torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    peaks = {}
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        peaks[n] = 2 * n**3 / median_time(lambda: a @ b, repeat, 3, sync)
    return peaks


def _mfu(flops: float, peaks: dict) -> dict:
    """MFU against the best measured matmul (strict) and against n=1024 (the usual reference)."""
    return {"GFLOP/s": flops / 1e9, "MFU vs best matmul": f"{flops / max(peaks.values()):.1%}",
            "MFU vs 1024 matmul": f"{flops / peaks[1024]:.1%}"}


def _peaks_text(peaks: dict) -> str:
    return "fp32 matmul peak " + ", ".join(f"n={n}: {p / 1e9:.0f}" for n, p in peaks.items()) + " GFLOP/s"


# ---------------------------------------------------------------------------------------------


def bench_tokenizer(args) -> None:
    from mini_llm.bpe import BPE
    from mini_llm.corpus import build_shakespeare
    from mini_llm.paths import data_dir
    from mini_llm.tokenizer import encode_fast, train_tokenizer_from_text

    corpora = []
    default = data_dir() / "shakespeare.txt"
    if not default.exists():
        build_shakespeare(default)
    corpora.append(("shakespeare (default)", default))
    tiny = Path(args.data) if args.data else TINY
    if tiny.exists():
        corpora.append(("tinyshakespeare", tiny))
    else:
        print(f"(skipping TinyShakespeare: {TINY_HELP})")
    rows = []
    for name, path in corpora:
        text = path.read_text(encoding="utf-8")
        mb = len(text.encode()) / 1e6
        t0 = time.perf_counter()
        tok = train_tokenizer_from_text(text, args.vocab_size)
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
    table(rows, f"HF byte-level BPE (vocab {args.vocab_size}) | {machine()}")
    rows = []
    for name, path in corpora[:1]:
        text = path.read_text(encoding="utf-8")
        for vocab in (1000, args.vocab_size):
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


def _step_fn(model, optimizer, x, y):
    def step():
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def bench_model(args) -> None:
    from mini_llm.train import TrainConfig, configure_optimizer

    device = torch.device(args.device)
    cfg = GPTConfig(vocab_size=args.vocab_size)
    peaks = matmul_peaks(device)
    rows = []
    variants = [("fused AdamW", {"fused": True}), ("foreach AdamW", {"foreach": True}), ("for-loop AdamW", {"foreach": False})]
    for batch in args.batch_sizes:
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
            dt = median_time(_step_fn(model, optimizer, x, y), args.repeat, 3, sync)
            tok_s = batch * cfg.block_size / dt
            rows.append({"batch": batch, "optimizer": name, "step ms": dt * 1e3, "tokens/s": tok_s,
                         **_mfu(tok_s * cfg.flops_per_token(), peaks)})
    table(rows, f"forward + backward + AdamW, default config ({cfg.num_params() / 1e6:.2f}M params, "
                f"{cfg.flops_per_token() / 1e6:.2f} MFLOP/token), T={cfg.block_size}, fp32 | "
                f"{_peaks_text(peaks)} | {machine()}")


class _RefBlock(torch.nn.Module):
    """One block of the reference minimal GPT (nanoGPT's published layout): pre-LayerNorm with
    biases, one qkv matmul, fused causal SDPA, an exact-GELU MLP of width 4C."""

    def __init__(self, C: int, n_head: int):
        super().__init__()
        nn = torch.nn
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.c_attn(self.ln_1(x)).split(C, dim=2))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(torch.nn.functional.gelu(self.c_fc(self.ln_2(x))))


class ReferenceGPT(torch.nn.Module):
    """The comparison model for the step-speed benchmark, written here from the published
    architecture of a well-known minimal GPT (nanoGPT): learned positions, tied head, N(0, 0.02)
    init, and its own optimizer setup (`reference_optimizer`)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        nn = torch.nn
        self.wte, self.wpe = nn.Embedding(cfg.vocab_size, cfg.n_embd), nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(_RefBlock(cfg.n_embd, cfg.n_head) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for block in self.blocks:  # residual projections scaled by depth
            for proj in (block.attn_proj, block.mlp_proj):
                nn.init.normal_(proj.weight, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def reference_optimizer(model, device):
    """The reference's AdamW: decay on matrices only, betas (0.9, 0.95), fused on CUDA only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                             lr=6e-4, betas=(0.9, 0.95), fused=device.type == "cuda")


def _train_step_fn(model, optimizer, x, y):
    """One training step as both loops do it: forward, backward, clip to 1.0, step, zero."""
    def step():
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


# Our side of the step benchmark: TrainConfig overrides (model options, optimizer), and whether to
# torch.compile the model.
STEP_VARIANTS = {
    "ours gpt2": (dict(arch="gpt2"), False),
    "ours modern": (dict(arch="modern", optimizer="adamw"), False),
    "ours tuned (rope + muon)": (dict(arch="tuned"), False),
    "ours gpt2 + muon": (dict(arch="gpt2", optimizer="muon"), False),
    "ours modern + muon": (dict(arch="modern", optimizer="muon"), False),
    "ours gpt2 + compile": (dict(arch="gpt2"), True),
    "ours modern + compile": (dict(arch="modern", optimizer="adamw"), True),
    "ours tuned + compile": (dict(arch="tuned"), True),
}


def bench_step(args) -> None:
    """Tokens/s of one training step (model + optimizer) at the default config: the reference
    minimal GPT and our variants, timed round-robin in one process so load changes hit all alike."""
    from mini_llm.train import TrainConfig, configure_optimizer

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = args.step_variants or list(STEP_VARIANTS)
    steps, compile_s = {}, {}
    for batch in args.batch_sizes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, args.vocab_size, (batch, 128), generator=gen).to(device)
        y = torch.randint(0, args.vocab_size, (batch, 128), generator=gen).to(device)
        torch.manual_seed(0)
        ref = ReferenceGPT(GPTConfig(vocab_size=args.vocab_size)).to(device)
        steps[batch, "reference (nanoGPT layout)"] = _train_step_fn(ref, reference_optimizer(ref, device), x, y)
        for name in names:
            overrides, compiled = STEP_VARIANTS[name]
            cfg = TrainConfig(vocab_size=args.vocab_size, **overrides)
            torch.manual_seed(0)
            model = MiniGPT(cfg.model_config(args.vocab_size)).to(device)
            optimizer = configure_optimizer(model, cfg, device)
            if compiled:
                model = torch.compile(model)
            steps[batch, name] = _train_step_fn(model, optimizer, x, y)
    for key, fn in steps.items():  # warm up (and compile) each before any timing
        t = time.perf_counter()
        for _ in range(3):
            fn()
        sync()
        compile_s[key] = time.perf_counter() - t
    times = {key: [] for key in steps}
    for _ in range(args.repeat):
        for key, fn in steps.items():
            t = time.perf_counter()
            fn()
            sync()
            times[key].append(time.perf_counter() - t)
    rows = []
    for (batch, name), ts in times.items():
        ref_t = statistics.median(times[batch, "reference (nanoGPT layout)"])
        dt = statistics.median(ts)
        rows.append({"batch": batch, "step": name, "step ms": dt * 1e3, "tokens/s": batch * 128 / dt,
                     "vs reference": f"{ref_t / dt:.2f}x", "first 3 steps s": compile_s[batch, name]})
    table(rows, f"training step (forward, backward, clip, optimizer) at the default size, fp32, medians of "
                f"{args.repeat} round-robin repeats | {machine()}")


def bench_train(args) -> None:
    from mini_llm.corpus import default_sources
    from mini_llm.data import prepare_dataset
    from mini_llm.train import TrainConfig, configure_optimizer, train

    device = torch.device(args.device)
    peaks = matmul_peaks(device)
    files, _ = default_sources()
    prepared = prepare_dataset(files, args.vocab_size, log=lambda *a: None)
    vocab = prepared.vocab_size
    rows = []
    for batch in args.batch_sizes:
        cfg = TrainConfig(vocab_size=vocab, batch_size=batch, max_steps=args.steps + 5, eval_interval=10**9,
                          final_eval_windows=4, device=args.device, warmup_steps=5)
        # the model-only step, in the same process, just before the loop
        torch.manual_seed(0)
        model = MiniGPT(cfg.model_config(vocab)).to(device)
        optimizer = configure_optimizer(model, cfg, device)
        x = torch.randint(0, vocab, (batch, cfg.block_size), device=device)
        dt_model = median_time(_step_fn(model, optimizer, x, x), args.repeat, 3)
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
                     "loop / model": f"{tok_loop / tok_model:.1%}", **_mfu(flops, peaks)})
    table(rows, f"the real training loop (batches, forward, backward, clip, AdamW, logging, progress bar) on the "
                f"default corpus vs the model-only step | {_peaks_text(peaks)} | {machine()}")


# The ablation: each option alone on top of the classic recipe, then together. Each entry is a set
# of TrainConfig overrides on top of the recipe flags (`--lr`, `--batch-size`, ...).
VARIANTS = {  # each on top of the classic recipe (arch gpt2, AdamW, cosine)
    "gpt2": dict(arch="gpt2"),
    "+rope": dict(pos="rope"),
    "+rmsnorm": dict(norm="rmsnorm"),
    "+qk-norm": dict(qk_norm=True),
    "+relu2": dict(mlp="relu2"),
    "+swiglu": dict(mlp="swiglu"),
    "+untied": dict(tie_head=False),
    "+zero-init": dict(zero_init=True),
    "+untied+zero-init": dict(tie_head=False, zero_init=True),
    "+muon": dict(optimizer="muon"),
    "+wsd": dict(schedule="wsd"),
    "+rope+muon": dict(pos="rope", optimizer="muon"),
    "+rope+relu2+muon": dict(pos="rope", mlp="relu2", optimizer="muon"),
    "modern": dict(arch="modern", optimizer="adamw"),
    "modern+muon": dict(arch="modern", optimizer="muon"),
    "modern+muon+wsd": dict(arch="modern", optimizer="muon", schedule="wsd"),
    "tuned": dict(arch="tuned"),  # the default of `mini-llm train`: rope + muon
}


def quality_config(args, variant: str, seed: int):
    """The TrainConfig of one quality run: the recipe flags, then the variant's overrides."""
    from mini_llm.train import TrainConfig

    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}: choose from {', '.join(VARIANTS)}")
    recipe = dict(arch="gpt2", vocab_size=args.vocab_size, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
                  block_size=args.block_size, batch_size=args.batch_size, warmup_steps=args.warmup_steps,
                  min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay, eval_interval=10**9,
                  device=args.device, dropout=args.dropout, seed=seed)
    if args.lr:
        recipe["lr"] = args.lr
    if args.steps_budget:
        recipe["max_steps"] = args.steps_budget
    else:
        recipe["time_budget"] = args.budget
    return TrainConfig(**{**recipe, **VARIANTS[variant], **(args.set or {})})


def bench_quality(args) -> None:
    """Val nats/char after a fixed budget (seconds, or steps with --steps-budget), for each variant
    and seed; the median over seeds and the spread (max - min)."""
    from mini_llm.data import prepare_dataset
    from mini_llm.train import train

    path = Path(args.data) if args.data else TINY
    if not path.exists():
        raise UserError(f"{path} not found. {TINY_HELP}")
    variants = args.variants or ["gpt2"]
    configs = {(v, seed): quality_config(args, v, seed) for v in variants for seed in args.seeds}  # all checked first
    prepared = prepare_dataset([path], args.vocab_size, val_fraction=0.1, log=lambda *a: None)
    runs, rows = {}, []
    for (variant, seed), cfg in configs.items():
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(cfg, prepared=prepared, out=Path(tmp) / "run", log=lambda *a: None,
                            progress=not args.no_progress)
        runs[variant, seed] = summary
        print(f"{variant} seed {seed}: {summary['steps']} steps, {summary['tokens_per_s']:,.0f} tokens/s, "
              f"{summary['val_nats_per_char']:.4f} nats/char | load {os.getloadavg()[0]:.2f}", flush=True)
    base = statistics.median(runs["gpt2", s]["val_nats_per_char"] for s in args.seeds) if "gpt2" in variants else None
    for variant in variants:
        scores = [runs[variant, s]["val_nats_per_char"] for s in args.seeds]
        row = {"variant": variant, "options": _overrides_text(VARIANTS[variant]),
               "steps": statistics.median(runs[variant, s]["steps"] for s in args.seeds),
               "tokens/s": statistics.median(runs[variant, s]["tokens_per_s"] for s in args.seeds),
               "nats/char per seed": " ".join(f"{x:.3f}" for x in scores),
               "median nats/char": statistics.median(scores), "spread": max(scores) - min(scores)}
        if base is not None:
            row["vs gpt2"] = f"{row['median nats/char'] - base:+.3f}"
        rows.append(row)
    budget = f"{args.steps_budget} steps" if args.steps_budget else f"{args.budget:g} s"
    table(rows, f"quality in a {budget} training budget on {path.name} (val = held-out last 10%), seeds "
                f"{' '.join(map(str, args.seeds))}, recipe batch {args.batch_size} lr {args.lr or 'as arch'} warmup "
                f"{args.warmup_steps} min-lr-ratio {args.min_lr_ratio:g} wd {args.weight_decay:g}"
                f"{' | set ' + _overrides_text(args.set) if args.set else ''} | {machine()}")


def _overrides_text(overrides: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items())


def _setting(text: str) -> tuple:
    """`--set name=value` -> (name, value) with the value typed like the TrainConfig field's default."""
    from dataclasses import fields

    from mini_llm.train import TrainConfig

    name, _, value = text.partition("=")
    types = {f.name: f.type for f in fields(TrainConfig)}
    if name not in types or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=VALUE with a TrainConfig field name")
    kind = str(types[name])
    if "bool" in kind:
        return name, value.lower() in ("1", "true", "yes")
    for cast in ((int,) if "int" in kind else ()) + ((float,) if "float" in kind else ()):
        try:
            return name, cast(value)
        except ValueError:
            pass
    return name, value


def bench_generate(args) -> None:
    from mini_llm.generate import Sampling, TorchRunner, generate_ids

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MiniGPT(GPTConfig(vocab_size=args.vocab_size)).to(device).eval()
    prompt = torch.randint(0, args.vocab_size, (16,)).tolist()
    rows = []
    for mode in ("cached", "exact"):
        runs = []
        for _ in range(args.repeat_gen):
            runner = TorchRunner(model)
            t0 = time.perf_counter()
            first = None
            n = 0
            for _token in generate_ids(runner, prompt, args.new_tokens, Sampling(1.0, 10, None, 0), mode=mode):
                n += 1
                if first is None:
                    first = time.perf_counter() - t0
            runs.append((n / (time.perf_counter() - t0), first))
        tok_s = statistics.median(r[0] for r in runs)
        ttft = statistics.median(r[1] for r in runs)
        rows.append({"mode": mode, "new tokens": args.new_tokens, "tokens/s": tok_s, "time to first token ms": ttft * 1e3})
    rows[0]["speed-up"] = f"{rows[0]['tokens/s'] / rows[1]['tokens/s']:.1f}x"
    rows[1]["speed-up"] = "1.0x"
    table(rows, f"generation, batch 1, 16-token prompt, default config (random weights), window crossed "
                f"{'yes' if 16 + args.new_tokens > 128 else 'no'} | {machine()}")


def bench_onnx(args) -> None:
    import numpy as np

    from mini_llm.checkpoint import save_checkpoint
    from mini_llm.export import OnnxRunner, export_checkpoint
    from mini_llm.generate import Sampling, TorchRunner, generate_ids
    from mini_llm.tokenizer import train_tokenizer_from_text

    torch.manual_seed(0)
    text = "".join(f"{w} " for w in range(20000))
    tok = train_tokenizer_from_text(text, args.vocab_size, min_frequency=1)
    model = MiniGPT(GPTConfig(vocab_size=tok.get_vocab_size())).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "ckpt", model, tok, {"step": 0})
        out = export_checkpoint(ckpt, Path(tmp) / "onnx", verify=False, log=lambda *a: None)
        runner = OnnxRunner(out)
        idx = torch.randint(0, model.config.vocab_size, (1, 128))
        with torch.inference_mode():
            t_torch = median_time(lambda: model(idx), args.repeat)
        t_ort = median_time(lambda: runner.logits(idx.numpy()), args.repeat)
        rows = [{"what": "forward T=128, batch 1", "torch ms": t_torch * 1e3, "onnxruntime ms": t_ort * 1e3,
                 "onnxruntime speed-up": f"{t_torch / t_ort:.2f}x"}]
        prompt = torch.randint(0, model.config.vocab_size, (16,)).tolist()

        def speed(r):
            t0 = time.perf_counter()
            n = sum(1 for _ in generate_ids(r, prompt, args.new_tokens, Sampling(0.0, None, None, 0)))
            return n / (time.perf_counter() - t0)

        tr = TorchRunner(model)
        s_torch = statistics.median(speed(tr) for _ in range(args.repeat_gen))
        s_ort = statistics.median(speed(runner) for _ in range(args.repeat_gen))
        rows.append({"what": f"cached generation, {args.new_tokens} tokens (tokens/s)", "torch ms": 1e3 / s_torch,
                     "onnxruntime ms": 1e3 / s_ort, "onnxruntime speed-up": f"{s_ort / s_torch:.2f}x"})
        rows[-1]["what"] += f": torch {s_torch:,.0f}, onnxruntime {s_ort:,.0f}"
        np.testing.assert_allclose(runner.logits(idx.numpy()), model(idx)[0].detach().numpy(), atol=1e-4)
    table(rows, f"onnxruntime vs PyTorch eager, default config, fp32 (ms per call / per token) | {machine()}")


BENCHES = {"tokenizer": bench_tokenizer, "model": bench_model, "step": bench_step, "train": bench_train, "quality": bench_quality,
           "generate": bench_generate, "onnx": bench_onnx}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=list(BENCHES) + ["all"], help="which benchmark")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32], help="model/train benches")
    p.add_argument("--repeat", type=int, default=7, help="timed repetitions (median reported)")
    p.add_argument("--steps", type=int, default=20, help="train bench: timed loop steps")
    p.add_argument("--step-variants", nargs="+", choices=list(STEP_VARIANTS),
                   help="step bench: which of our variants to time beside the reference (default all)")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeat-gen", type=int, default=3)
    p.add_argument("--data", help="quality/tokenizer: corpus file (default ../shared/data/tinyshakespeare.txt)")
    q = p.add_argument_group("quality recipe")
    q.add_argument("--budget", type=float, default=170.0, help="seconds of training (default 170)")
    q.add_argument("--steps-budget", type=int, help="train this many steps instead of --budget seconds "
                   "(load-independent; compare with the tokens/s of each variant measured on an idle machine)")
    q.add_argument("--variants", nargs="+", help=f"quality ablation: any of {', '.join(VARIANTS)} (default gpt2)")
    q.add_argument("--seeds", type=int, nargs="+", default=[1337], help="one run per seed (default 1337)")
    q.add_argument("--set", type=_setting, nargs="+", metavar="NAME=VALUE",
                   help="override any TrainConfig field in every variant, e.g. --set lr=3e-3 muon_lr=0.03")
    q.add_argument("--n-embd", type=int, default=256)
    q.add_argument("--n-layer", type=int, default=4)
    q.add_argument("--n-head", type=int, default=4)
    q.add_argument("--block-size", type=int, default=128)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--lr", type=float, help="default: each variant's arch's (train.RECIPES)")
    q.add_argument("--warmup-steps", type=int, default=50)
    q.add_argument("--min-lr-ratio", type=float, default=0.1)
    q.add_argument("--weight-decay", type=float, default=0.1)
    q.add_argument("--dropout", type=float, default=0.0)
    q.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    args.set = dict(args.set) if args.set else None
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in (BENCHES if args.what == "all" else [args.what]):
        BENCHES[name](args)
    return 0
