"""Chat with a trained MiniGPT on the command line.

The conversation is written the way the model was trained. For the default Shakespeare corpus
that is a play: each turn is a speaker's name and a colon on its own line, the speech under
it, and a blank line between speeches:

    HORATIO:
    What is AI?

    HAMLET:
    <the model's reply, up to the blank line that ends its speech>

Speaker names are flags (--user-name, --bot-name); the defaults, HORATIO asking and HAMLET
answering, are speakers the default corpus knows (a name the model never saw, like YOU, is
just three odd tokens to it). A reply ends at the blank line after the speech or at the next
line naming the user. The conversation is encoded as one text, exactly as a play in the corpus
was, so turn boundaries get the tokens the model learned. The history is kept inside the context window: the oldest
turns are dropped first. Commands: /reset clears the history; exit, quit, Ctrl-D or Ctrl-C end.

    mini-llm chat --prompt "What is AI?"     # one answer, then exit
    mini-llm chat                            # interactive
"""

import argparse
import sys

from mini_llm.backends import add_model_arguments, load_runner
from mini_llm.errors import UserError
from mini_llm.generate import Sampling, add_sampling_arguments, check_prompt, stream

USER, BOT = "HORATIO", "HAMLET"  # two speakers of one play, both frequent in the default corpus


class Chat:
    """A conversation: turns -> prompt text within the context window -> streamed replies."""

    def __init__(self, runner, tokenizer, user: str = USER, bot: str = BOT, sampling: Sampling | None = None,
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

    def prompt_text(self, message: str, turns=None) -> str:
        """The conversation (`turns`, default all) + the new message + the bot's name, as a play."""
        turns = self.turns if turns is None else turns
        return "".join(self.format_turn(n, t) for n, t in turns) + self.format_turn(self.user, message) + f"{self.bot}:\n"

    def prompt_ids(self, message: str) -> list[int]:
        """The prompt encoded as one text, oldest whole turns dropped until it fits the window
        (room is left for the reply)."""
        budget = self.runner.block_size - min(self.max_new_tokens, self.runner.block_size // 2)
        encode = lambda turns: self.tokenizer.encode(self.prompt_text(message, turns)).ids  # noqa: E731
        # Per-turn lengths only guess where to start (joined text can encode a token shorter or
        # longer); the final answer is always one encoding of the whole text.
        sizes = [len(self.tokenizer.encode(self.format_turn(n, t)).ids) for n, t in self.turns]
        first, total = len(sizes), len(encode([]))
        while first > 0 and total + sizes[first - 1] <= budget:
            first, total = first - 1, total + sizes[first - 1]
        ids = encode(self.turns[first:])
        while len(ids) > budget and first < len(self.turns):
            first += 1
            ids = encode(self.turns[first:])
        if len(ids) > budget:
            self.notice(f"note: your message is {len(ids)} tokens; keeping its last {budget} to fit the context")
            return ids[-budget:]
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
    p.add_argument("--user-name", default=USER, help=f"your speaker name (default {USER})")
    p.add_argument("--bot-name", default=BOT, help=f"the model's speaker name (default {BOT})")
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
    from mini_llm.errors import guarded

    p = argparse.ArgumentParser(prog="python -m mini_llm.chat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return guarded(lambda: run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
