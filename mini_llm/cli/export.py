"""`mini-llm export`: a checkpoint to an ONNX folder (prefill and decode graphs), checked for parity."""

import argparse

from mini_llm.export import export_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="checkpoint or run folder (same as --checkpoint)")
    p.add_argument("--checkpoint", help="checkpoint or run folder (default: the best checkpoint of the newest run)")
    p.add_argument("--out", default="exports/model", help="export folder (default exports/model)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check after exporting")


def cmd_export(args) -> int:
    export_checkpoint(args.path or args.checkpoint, args.out, verify=not args.no_verify)
    return 0
