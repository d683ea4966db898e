"""`mini-llm bench generate / onnx`: generation speed with and without the KV cache, and
onnxruntime against PyTorch."""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mini_llm.bench.common import machine, median_time, table
from mini_llm.checkpoint import save_checkpoint
from mini_llm.export import OnnxRunner, export_checkpoint
from mini_llm.generate import Sampling, TorchRunner, generate_ids
from mini_llm.model import GPTConfig, MiniGPT
from mini_llm.tokenizer import VOCAB_SIZE, train_tokenizer_from_text


def bench_generate(device: str = "cpu", vocab_size: int = VOCAB_SIZE, new_tokens: int = 256, repeat_gen: int = 3) -> None:
    device = torch.device(device)
    torch.manual_seed(0)
    model = MiniGPT(GPTConfig(vocab_size=vocab_size)).to(device).eval()
    prompt = torch.randint(0, vocab_size, (16,)).tolist()
    rows = []
    for mode in ("cached", "exact"):
        runs = []
        for _ in range(repeat_gen):
            runner = TorchRunner(model)
            t0 = time.perf_counter()
            first = None
            n = 0
            for _token in generate_ids(runner, prompt, new_tokens, Sampling(1.0, 10, None, 0), mode=mode):
                n += 1
                if first is None:
                    first = time.perf_counter() - t0
            runs.append((n / (time.perf_counter() - t0), first))
        tok_s = statistics.median(r[0] for r in runs)
        ttft = statistics.median(r[1] for r in runs)
        rows.append({"mode": mode, "new tokens": new_tokens, "tokens/s": tok_s, "time to first token ms": ttft * 1e3})
    rows[0]["speed-up"] = f"{rows[0]['tokens/s'] / rows[1]['tokens/s']:.1f}x"
    rows[1]["speed-up"] = "1.0x"
    table(rows, f"generation, batch 1, 16-token prompt, default config (random weights), window crossed "
                f"{'yes' if 16 + new_tokens > 128 else 'no'} | {machine()}")


def bench_onnx(vocab_size: int = VOCAB_SIZE, new_tokens: int = 256, repeat: int = 7, repeat_gen: int = 3) -> None:


    torch.manual_seed(0)
    text = "".join(f"{w} " for w in range(20000))
    tok = train_tokenizer_from_text(text, vocab_size, min_frequency=1)
    model = MiniGPT(GPTConfig(vocab_size=tok.get_vocab_size())).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "ckpt", model, tok, {"step": 0})
        out = export_checkpoint(ckpt, Path(tmp) / "onnx", verify=False, log=lambda *a: None)
        runner = OnnxRunner(out)
        idx = torch.randint(0, model.config.vocab_size, (1, 128))
        with torch.inference_mode():
            t_torch = median_time(lambda: model(idx), repeat)
        t_ort = median_time(lambda: runner.logits(idx.numpy()), repeat)
        rows = [{"what": "forward T=128, batch 1", "torch ms": t_torch * 1e3, "onnxruntime ms": t_ort * 1e3,
                 "onnxruntime speed-up": f"{t_torch / t_ort:.2f}x"}]
        prompt = torch.randint(0, model.config.vocab_size, (16,)).tolist()

        def speed(r):
            t0 = time.perf_counter()
            n = sum(1 for _ in generate_ids(r, prompt, new_tokens, Sampling(0.0, None, None, 0)))
            return n / (time.perf_counter() - t0)

        tr = TorchRunner(model)
        s_torch = statistics.median(speed(tr) for _ in range(repeat_gen))
        s_ort = statistics.median(speed(runner) for _ in range(repeat_gen))
        rows.append({"what": f"cached generation, {new_tokens} tokens (tokens/s)", "torch ms": 1e3 / s_torch,
                     "onnxruntime ms": 1e3 / s_ort, "onnxruntime speed-up": f"{s_ort / s_torch:.2f}x"})
        rows[-1]["what"] += f": torch {s_torch:,.0f}, onnxruntime {s_ort:,.0f}"
        np.testing.assert_allclose(runner.logits(idx.numpy()), model(idx)[0].detach().numpy(), atol=1e-4)
    table(rows, f"onnxruntime vs PyTorch eager, default config, fp32 (ms per call / per token) | {machine()}")
