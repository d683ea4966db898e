"""Device choice (cuda > mps > cpu), seeding, and whether bf16 is fast here: shared by training,
generation, benchmarks and notebooks."""

import random
import time

import numpy as np
import torch

from mini_llm.errors import UserError

# PYTORCH_ENABLE_MPS_FALLBACK is set in mini_llm/__init__.py, before anything imports torch.


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def get_device(name: str | None = None) -> torch.device:
    """The best device available, or the one named ('cuda', 'cuda:1', 'mps', 'cpu', 'auto')."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here: use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not _mps_available():
        raise UserError(f"device {name!r} asked for, but MPS is not available here: use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def set_threads(n: int) -> None:
    """Use n CPU threads for torch's operations."""
    if n < 1:
        raise UserError(f"--threads must be at least 1 (got {n})")
    torch.set_num_threads(n)


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86: AVX512-BF16, AMX; ARM: FEAT_BF16


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str] | None:
    """The bf16 instructions the CPU reports (Linux's /proc/cpuinfo: x86 "flags", ARM "Features"),
    an empty list if it reports none, or None where it does not say (macOS, Windows)."""
    try:
        with open(cpuinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return [flag for flag in BF16_FLAGS if flag in value.split()]
    return None


def bf16_matmul_speedup(shape: tuple[int, int, int] = (2048, 256, 1024), repeat: int = 5) -> float:
    """How many times faster a bf16 matmul (m, k) @ (k, n) runs than the same in fp32 on this CPU
    (the default shape is one of the model's: a batch of 16 x 128 positions, 256 wide, into the
    MLP's 1024).

    Above 1 where the CPU has bf16 instructions (AVX512-BF16, AMX; 3-6x on the reference EPYC);
    far below 1 where bf16 is emulated (trap 13 in docs/TRAPS.md). The fastest of `repeat` timings
    of each, taken in turn after one warm-up each (the fastest: what the machine can do, less the
    load of whatever else runs); a bf16 product 8x slower than fp32's ends the probe at once. Its
    own random generator: the global RNGs, and so a seeded run, are untouched."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()

    def seconds(x, y) -> float:
        start = time.perf_counter()
        x @ y
        return time.perf_counter() - start

    seconds(a, b), seconds(a16, b16)  # warm-up: the first call of each sets its kernels up
    fp32, bf16 = [], []
    for _ in range(repeat):
        fp32.append(seconds(a, b))
        bf16.append(seconds(a16, b16))
        if bf16[-1] > 8 * fp32[-1]:
            break  # emulated: no need to look longer
    return min(fp32) / min(bf16)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def device_summary() -> str:
    """One line for notebooks' first cell: versions and the device that would be used."""
    import tokenizers

    return f"torch {torch.__version__} | tokenizers {tokenizers.__version__} | device {get_device()}"
