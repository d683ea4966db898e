"""`mini-llm export`: a checkpoint to an ONNX folder (prefill and decode graphs) or, with --format hf, a
Hugging Face transformers folder; each checked for parity with the model."""

import argparse

from mini_llm.export import export_checkpoint
from mini_llm.hf import export_hf

OUT = {"onnx": "exports/model", "hf": "exports/hf"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="checkpoint or run folder (same as --checkpoint)")
    p.add_argument("--checkpoint", help="checkpoint or run folder (default: the best checkpoint of the newest run)")
    p.add_argument("--format", choices=list(OUT), default="onnx",
                   help="onnx (default): graphs for onnxruntime; hf: a folder that transformers' AutoModelForCausalLM "
                        "and AutoTokenizer load (needs the hf extra)")
    p.add_argument("--out", help=f"export folder (default {OUT['onnx']}, or {OUT['hf']} with --format hf)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check after exporting")


def cmd_export(args) -> int:
    export = export_hf if args.format == "hf" else export_checkpoint
    export(args.path or args.checkpoint, args.out or OUT[args.format], verify=not args.no_verify)
    return 0
