"""mini_llm: a GPT-style language model built from scratch, for the notebook course.

One module per idea: corpus, tokenizer (and bpe from scratch), data, attention, model, train,
checkpoint, generate, chat, export, plus plots, widgets and exercises for the notebooks.
"""

import os

# Ops without an MPS kernel fall back to the CPU. PyTorch reads this when it is imported, so it
# is set here, before any mini_llm module imports torch (import mini_llm before torch).
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

__version__ = "0.1.0"

# The oldest torch this package works with: the torch.export-based ONNX exporter (dynamic shapes,
# external data) arrived in 2.6. pyproject.toml and environment.yml state the same (a test checks).
MIN_TORCH = "2.6"
