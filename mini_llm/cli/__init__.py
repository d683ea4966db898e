"""`mini-llm`: one command, with subcommands, over the same functions the notebooks use.

    mini-llm prepare            corpus + tokenizer + token arrays
    mini-llm train              train MiniGPT (also: python -m mini_llm.train)
    mini-llm generate           sample text from a checkpoint
    mini-llm chat               talk to it
    mini-llm export             ONNX export for serving, or a Hugging Face transformers folder
    mini-llm import-hf          GPT-2 (or a transformers folder) as a checkpoint
    mini-llm bench WHAT         benchmarks that print a table
    mini-llm workbook           write the workbook: the notebooks with every step and exercise blank
    mini-llm exercises          the same (the old name)
    mini-llm grade SUBMISSIONS  grade submitted notebooks into grades.csv
    mini-llm stamp              write nbgrader metadata onto the course notebooks
"""

import argparse

from mini_llm import __version__
from mini_llm.cli import bench, export, generate, hf, prepare, teach, train
from mini_llm.errors import guarded


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mini-llm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mini-llm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, add_arguments, func, description: str | None = None) -> None:
        s = sub.add_parser(name, help=help, description=description or help,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(s)
        s.set_defaults(func=func)

    command("prepare", "build the corpus, train the tokenizer, encode token arrays", prepare.add_arguments,
            prepare.cmd_prepare, "Build or check a corpus, train the byte-level BPE tokenizer, write cached token arrays.")
    command("train", "train MiniGPT", train.add_arguments, train.cmd_train,
            "Train MiniGPT; under torchrun it runs data-parallel.")
    command("generate", "generate text from a checkpoint", generate.add_generate_arguments, generate.cmd_generate)
    command("chat", "chat with a trained model", generate.add_chat_arguments, generate.cmd_chat, generate.CHAT_HELP)
    command("export", "export a checkpoint to ONNX or to transformers", export.add_arguments, export.cmd_export)
    command("import-hf", "import GPT-2 (or a transformers folder) as a checkpoint", hf.add_import_arguments,
            hf.cmd_import_hf, hf.IMPORT_HELP)
    command("bench", "benchmarks that print a table", bench.add_arguments, bench.cmd_bench)
    command("workbook", "write the workbook: the notebooks with every step and exercise blank",
            teach.add_workbook_arguments, teach.cmd_workbook)
    command("exercises", "the old name of `workbook` (default folder student/)", teach.add_exercises_arguments,
            teach.cmd_exercises)
    command("grade", "grade a folder of submitted notebooks into grades.csv", teach.add_grade_arguments,
            teach.cmd_grade, teach.GRADE_HELP)
    command("stamp", "write nbgrader metadata onto the course notebooks", teach.add_stamp_arguments, teach.cmd_stamp)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return guarded(lambda: args.func(args))

