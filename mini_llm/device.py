"""Device choice (cuda > mps > cpu) and seeding, shared by training, generation and notebooks."""

import random

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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def device_summary() -> str:
    """One line for notebooks' first cell: versions and the device that would be used."""
    import tokenizers

    return f"torch {torch.__version__} | tokenizers {tokenizers.__version__} | device {get_device()}"
