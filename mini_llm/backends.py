"""Which model answers `generate` and `chat`: a checkpoint on PyTorch or an export on onnxruntime.

Choosing the backend sits above both `generate.py` (the torch runner) and `export.py` (the
onnxruntime runner), so neither has to import the other. Both runners offer the same methods
(`start`, `step`, `full`, `room`, `block_size`), which is all the generation loop uses.
"""

import argparse

from mini_llm.errors import UserError


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="checkpoint or run folder (torch) or export folder (onnx); same as --checkpoint")
    p.add_argument("--checkpoint", help="checkpoint or run folder (default: the best checkpoint of the newest run in runs/)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="torch (default) or onnx (an exported folder)")
    p.add_argument("--device", default="auto", help="torch backend: auto, cpu, cuda, mps")


def load_runner(args):
    """(runner, tokenizer, description) for --backend torch or onnx."""
    from mini_llm.paths import display

    path = args.path or args.checkpoint
    if args.backend == "onnx":
        from mini_llm.export import OnnxRunner

        if not path:
            raise UserError("--backend onnx needs the export folder: mini-llm generate --backend onnx DIR")
        runner = OnnxRunner(path)
        return runner, runner.tokenizer, f"onnx export {display(path)}"
    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.device import get_device
    from mini_llm.generate import TorchRunner

    model, tokenizer, meta = load_checkpoint(path, get_device(args.device))
    step = meta.get("step", "?")
    return TorchRunner(model), tokenizer, f"checkpoint {display(meta['folder'])} (step {step})"
