"""mini_llm: a GPT-style language model built from scratch, for the notebook course.

The core, one module per idea, in the order the course builds them:

    corpus.py       the text: the offline Shakespeare default, TinyShakespeare, or your files
    tokenizer.py    byte-level BPE (HuggingFace tokenizers); bpe.py: the same from scratch
    data.py         token arrays cached on disk, sliding windows, random-offset batches
    attention.py    self-attention written out, heads, rotary positions
    model.py        MiniGPT: config, blocks, KV cache, the modern options
    chunked_loss.py the LM head + cross-entropy a chunk of rows at a time (no full logits)
    schedule.py     the learning-rate schedule; muon.py: the Muon optimizer; optim.py: both, set up
    checkpoint.py   safetensors weights + JSON metadata, written atomically
    generate.py     sampling and the generation loop; chat.py: a conversation as a play, or in the
                    chat template of a chat-tuned model
    chat_format.py  that template: the chat tokens, the loss mask and masked loss of chat fine-tuning
    conversations.py  JSONL conversations, the chatterbot-corpus default, the held-out split, packing
    export.py       ONNX export and onnxruntime
    hf.py           Hugging Face transformers: export to the class that computes the same, import GPT-2
    plots.py        pictures for notebooks and runs
    device.py, paths.py, files.py, errors.py   the device, seeds and fast bf16, where files go, atomic
                                               writes, the one-line errors users see

and the rooms built on it (imports flow one way: core <- train <- course, bench <- cli):

    train/     TrainConfig and train(): the loop, resume, fine-tuning, data-parallel
    course/    what the notebooks show and grade: reference runs, widgets, checks, exercises, grading
    bench/     `mini-llm bench`: speed and quality benchmarks
    cli/       `mini-llm`: the command line, a thin layer over the functions above

checks.py and widgets.py at the top only hand on course/checks and course/widgets, for student
copies of the notebooks made before the package had rooms.
"""

import os

# Ops without an MPS kernel fall back to the CPU. PyTorch reads this when it is imported, so it
# is set here, before any mini_llm module imports torch (import mini_llm before torch).
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

__version__ = "0.1.0"

# The oldest torch this package works with: the torch.export-based ONNX exporter (dynamic shapes,
# external data) arrived in 2.6. pyproject.toml and environment.yml state the same (a test checks).
MIN_TORCH = "2.6"
