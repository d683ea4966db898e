"""`mini-llm import-hf`: a transformers model (a local folder, or a name on the Hugging Face Hub such as
gpt2 or distilgpt2) as a mini-llm checkpoint, checked for parity with transformers."""

import argparse

from mini_llm.hf import import_hf

IMPORT_HELP = """Import a transformers model as a mini-llm checkpoint (RUN/best) that generate, chat, export and
`train --init-from` use: the GPT-2 family (gpt2, distilgpt2, gpt2-medium, ...) or a folder that
`mini-llm export --format hf` wrote. A name is downloaded once into the Hugging Face cache (with progress);
with HF_HUB_OFFLINE=1 only that cache is read. Needs the hf extra."""


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="NAME_OR_DIR", help="a transformers model folder, or a model name on the Hub")
    p.add_argument("--out", metavar="RUN", help="run folder to write (default runs/<the model's name>)")
    p.add_argument("--no-verify", action="store_true", help="skip the logit comparison with transformers")


def cmd_import_hf(args) -> int:
    import_hf(args.source, args.out, verify=not args.no_verify)
    return 0
