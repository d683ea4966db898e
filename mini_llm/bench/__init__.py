"""Benchmarks that print a Markdown table, to run on your own machine (CPU, CUDA or MPS): `mini-llm bench WHAT`.

    common.py      the table, the machine line, timing medians, the matmul peak
    reference.py   the reference minimal GPT the step benchmark compares with
    speed.py       model, step, train: tokens per second of a training step and of the loop
    quality.py     quality: nats per character after a fixed training budget (the ablation)
    tokenizer.py   tokenizer: BPE training and encoding speed
    prepare.py     prepare: `mini-llm prepare` on a corpus of any size, time per stage and peak memory
    inference.py   generate, onnx: generation speed, onnxruntime against PyTorch
    chat.py        chat: what chat fine-tuning bought, on the held-out conversations

No test asserts a time: the tables, with the machine and its load, are the record (BENCHMARKS.md).
"""
