"""`mini-llm generate` and `mini-llm chat`: which model answers, the sampling flags, the chat loop.

A model is a checkpoint on PyTorch (`generate.TorchRunner`) or an export on onnxruntime
(`export.OnnxRunner`); both offer what the generation loop uses (`start`, `step`, `full`, `room`,
`block_size`), and choosing between them is the command line's business, so neither core module
imports the other.
"""

import argparse
import sys

from mini_llm.chat import BOT, CHAT_BOT, CHAT_USER, USER, Chat
from mini_llm.errors import UserError
from mini_llm.generate import TEMPERATURE, TOP_K, Sampling, check_prompt, stream
from mini_llm.paths import display


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="checkpoint or run folder (torch) or export folder (onnx); same as --checkpoint")
    p.add_argument("--checkpoint", help="checkpoint or run folder (default: the best checkpoint of the newest run in runs/)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="torch (default) or onnx (an exported folder)")
    p.add_argument("--device", default="auto", help="torch backend: auto, cpu, cuda, mps")


def add_sampling_arguments(p: argparse.ArgumentParser, max_new_tokens: int = 200) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=f"default {max_new_tokens}")
    g.add_argument("--temperature", type=float, default=TEMPERATURE,
                   help=f"0 = greedy; <1 sharper, >1 wilder (default {TEMPERATURE})")
    g.add_argument("--top-k", type=int, default=TOP_K, help=f"sample from the k most likely tokens (default {TOP_K})")
    g.add_argument("--top-p", type=float, default=None, help="nucleus: smallest set of tokens with probability >= p")
    g.add_argument("--seed", type=int, default=None, help="same seed, same text (default: random)")


def load_runner(args):
    """(runner, tokenizer, description) for --backend torch or onnx."""
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


def _sampling(args) -> Sampling:
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1")
    return Sampling(args.temperature, args.top_k, args.top_p, args.seed)


# --- mini-llm generate ---------------------------------------------------------------------------


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--prompt", default="\n", help="text to continue (default: a new line)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--mode", choices=["cached", "exact"], default="cached",
                   help="cached: KV cache (fast); exact: recompute the window every step")
    add_sampling_arguments(p)


def cmd_generate(args) -> int:
    prompt = check_prompt(args.prompt)
    if args.num_samples < 1:
        raise UserError("--num-samples must be at least 1")
    sampling = _sampling(args)
    runner, tokenizer, what = load_runner(args)
    print(f"[{what}]", file=sys.stderr)
    ids = tokenizer.encode(prompt).ids
    if len(ids) > runner.block_size:
        print(f"note: the prompt has {len(ids)} tokens; only its last {runner.block_size} fit the context", file=sys.stderr)
    generator = sampling.generator()
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        sys.stdout.write(prompt)
        for piece in stream(runner, tokenizer, ids, args.max_new_tokens, sampling, mode=args.mode, generator=generator):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
    return 0


# --- mini-llm chat -------------------------------------------------------------------------------

CHAT_HELP = """Chat with a trained model: with a chat-tuned one (mini-llm train --chat) in its chat template,
with a pretrained one as a play (see mini_llm/chat.py).

    mini-llm chat --prompt "What is AI?"     # one answer, then exit
    mini-llm chat                            # interactive: /reset clears the history; exit, quit,
                                             # Ctrl-D or Ctrl-C end
"""


def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--prompt", help="answer this one message and exit (no --prompt: interactive)")
    p.add_argument("--user-name", help=f"your speaker name (default {USER}; a chat-tuned model: {CHAT_USER}, shown only)")
    p.add_argument("--bot-name", help=f"the model's speaker name (default {BOT}; a chat-tuned model: {CHAT_BOT}, shown only)")
    add_sampling_arguments(p, max_new_tokens=120)


def _read_line(prompt: str) -> str | None:
    """One line of input, None at EOF; bytes that are not UTF-8 raise UserError."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    raw = sys.stdin.buffer.readline()
    if not raw:
        return None
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise UserError(f"input is not UTF-8 text (invalid byte at offset {e.start}); type plain text") from None


def _say(chat: Chat, message: str) -> None:
    """Stream the reply to `message`; Ctrl-C stops it (and is passed on)."""
    for piece in chat.reply(message):
        sys.stdout.write(piece)
        sys.stdout.flush()
    print()


def cmd_chat(args) -> int:
    if args.prompt is not None:
        check_prompt(args.prompt)
        if not args.prompt.strip():
            raise UserError("empty prompt: give some text with --prompt")
    sampling = _sampling(args)
    runner, tokenizer, what = load_runner(args)
    chat = Chat(runner, tokenizer, args.user_name, args.bot_name, sampling, args.max_new_tokens)
    if args.prompt is not None:
        _say(chat, args.prompt)
        return 0
    form = "its chat template" if chat.tuned else "a play"
    print(f"[{what}] chatting as {chat.user} with {chat.bot} ({form}). /reset clears the history; exit, quit or Ctrl-D ends.")
    while True:
        try:
            line = _read_line(f"{chat.user}> ")
        except KeyboardInterrupt:
            print()
            return 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        if line is None:
            print()
            return 0
        message = line.strip()
        if message.lower() in ("exit", "quit"):
            return 0
        if message == "/reset":
            chat.reset()
            print("(history cleared)")
            continue
        if not message:
            continue
        sys.stdout.write(f"{chat.bot}> ")
        try:
            _say(chat, message)
        except KeyboardInterrupt:
            print()
            return 0
