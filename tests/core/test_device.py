"""device.py: whether this CPU has fast bf16, by its reported flags or by a probe."""

import math

import pytest
import torch

from mini_llm.device import bf16_matmul_speedup, cpu_bf16_flags

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16 avx512_vnni\n"


@pytest.mark.parametrize("text,flags", [
    (X86, ["avx512_bf16", "amx_bf16"]),
    ("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", []),  # AVX-512 without BF16: emulated, slow
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", ["bf16"]),  # ARM (Graviton 3)
    ("processor\t: 0\nmodel name\t: something\n", None),  # says nothing about its instructions
])
def test_the_cpus_reported_bf16_instructions(tmp_path, text, flags):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_bf16_flags(str(cpuinfo)) == flags
    assert cpu_bf16_flags(str(tmp_path / "missing")) is None  # macOS, Windows: no /proc/cpuinfo


def test_the_probe_measures_a_ratio_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    speedup = bf16_matmul_speedup((64, 32, 64), repeat=2)
    assert math.isfinite(speedup) and speedup > 0  # its size is the machine's: BENCHMARKS.md, not a test
    assert torch.equal(torch.get_rng_state(), before)
