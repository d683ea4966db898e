"""What every benchmark shares: a Markdown table, the machine it ran on, timing medians, the matmul peak.

Timings are medians of repeated runs; ratios are measured in the same run, which matters on a
shared, noisy machine. No test asserts a time: the tables are the record (BENCHMARKS.md).
"""

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mini_llm.paths import data_dir

# The default recipe's step before the speed levers: fp32, the plain LM head, one Newton-Schulz
# iteration per matrix (the step and quality benches measure each lever against it).
LEVERS_OFF = dict(precision="fp32", head_chunk=0, muon_batched=False)
TINY_HELP = ("TinyShakespeare: `mini-llm prepare --source tinyshakespeare` downloads it to data/tinyshakespeare.txt, "
             "or give --data PATH")


def tinyshakespeare() -> Path:
    """Where `mini-llm prepare --source tinyshakespeare` puts the benchmark corpus."""
    return data_dir() / "tinyshakespeare.txt"


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


def mfu(flops: float, peaks: dict) -> dict:
    """MFU against the best measured matmul (strict) and against n=1024 (the usual reference)."""
    return {"GFLOP/s": flops / 1e9, "MFU vs best matmul": f"{flops / max(peaks.values()):.1%}",
            "MFU vs 1024 matmul": f"{flops / peaks[1024]:.1%}"}


def peaks_text(peaks: dict) -> str:
    return "fp32 matmul peak " + ", ".join(f"n={n}: {p / 1e9:.0f}" for n, p in peaks.items()) + " GFLOP/s"
