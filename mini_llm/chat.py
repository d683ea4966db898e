"""Chat with a trained MiniGPT on the command line.

The conversation is written the way the model was trained. For the default Shakespeare corpus
that is a play: each turn is a speaker's name and a colon on its own line, the speech under
it, and a blank line between speeches:

    YOU:
    What is AI?

    HAMLET:
    <the model's reply, up to the blank line that ends its speech>

Speaker names are flags (--user-name, --bot-name). A reply ends at the blank line after the
speech or at the next `YOU:` line. The history is kept inside the context window: the oldest
turns are dropped first. Commands: /reset clears the history; exit, quit, Ctrl-D or Ctrl-C end.

    mini-llm chat --prompt "What is AI?"     # one answer, then exit
    mini-llm chat                            # interactive
"""

import argparse
import sys

from mini_llm.errors import UserError
from mini_llm.generate import Sampling, add_model_arguments, add_sampling_arguments, check_prompt, load_runner, stream


class Chat:
    """A conversation: turns -> prompt text within the context window -> streamed replies."""

    def __init__(self, runner, tokenizer, user: str = "YOU", bot: str = "HAMLET", sampling: Sampling | None = None,
                 max_new_tokens: int = 120, notice=None):
        if not user.strip() or not bot.strip():
            raise UserError("speaker names must not be empty")
        self.runner, self.tokenizer = runner, tokenizer
        self.user, self.bot = user.strip(), bot.strip()
        self.sampling = sampling or Sampling()
        self.max_new_tokens = max_new_tokens
        self.generator = self.sampling.generator()
        self.turns: list[tuple[str, str]] = []
        self.notice = notice or (lambda msg: print(msg, file=sys.stderr))

    def reset(self) -> None:
        self.turns = []

    @staticmethod
    def format_turn(name: str, text: str) -> str:
        return f"{name}:\n{text.strip()}\n\n"

    def prompt_ids(self, message: str) -> list[int]:
        """The conversation so far + the new message + the bot's name, cut to fit the window."""
        head = self.format_turn(self.user, message) + f"{self.bot}:\n"
        head_ids = self.tokenizer.encode(head).ids
        budget = self.runner.block_size - min(self.max_new_tokens, self.runner.block_size // 2)
        if len(head_ids) > budget:
            self.notice(f"note: your message is {len(head_ids)} tokens; keeping its last {budget} to fit the context")
            return head_ids[-budget:]
        ids = head_ids
        for name, text in reversed(self.turns):  # newest first, until the window is full
            turn = self.tokenizer.encode(self.format_turn(name, text)).ids
            if len(turn) + len(ids) > budget:
                break
            ids = turn + ids
        return ids

    def reply(self, message: str):
        """Stream the bot's reply to `message` (pieces of text); records both turns."""
        ids = self.prompt_ids(message)
        stops = ["\n\n", f"\n{self.user}:"]
        pieces = []
        for piece in stream(self.runner, self.tokenizer, ids, self.max_new_tokens, self.sampling, stops,
                            generator=self.generator, lstrip=True):
            pieces.append(piece)
            yield piece
        self.turns += [(self.user, message), (self.bot, "".join(pieces).strip() or "...")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--prompt", help="answer this one message and exit (no --prompt: interactive)")
    p.add_argument("--user-name", default="YOU", help="your speaker name (default YOU)")
    p.add_argument("--bot-name", default="HAMLET", help="the model's speaker name (default HAMLET)")
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


def run(args) -> int:
    if args.prompt is not None:
        check_prompt(args.prompt)
        if not args.prompt.strip():
            raise UserError("empty prompt: give some text with --prompt")
    runner, tokenizer, what = load_runner(args)
    chat = Chat(runner, tokenizer, args.user_name, args.bot_name,
                Sampling(args.temperature, args.top_k, args.top_p, args.seed), args.max_new_tokens)
    if args.prompt is not None:
        for piece in chat.reply(args.prompt):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
        return 0
    print(f"[{what}] chatting as {chat.user} with {chat.bot}. /reset clears the history; exit, quit or Ctrl-D ends.")
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
            for piece in chat.reply(message):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            print()
            return 0
        print()


def main(argv=None) -> int:
    from mini_llm.cli import guarded

    p = argparse.ArgumentParser(prog="python -m mini_llm.chat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return guarded(lambda: run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
