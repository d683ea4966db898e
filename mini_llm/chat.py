"""A conversation with a trained MiniGPT: turns in, a prompt that fits the context, replies out.

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
was, so turn boundaries get the tokens the model learned. The history is kept inside the context
window: the oldest turns are dropped first. `mini-llm chat` (mini_llm/cli/generate.py) and the
notebooks' chat panel talk through `Chat`.
"""

import sys

from mini_llm.errors import UserError
from mini_llm.generate import Sampling, stream

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
