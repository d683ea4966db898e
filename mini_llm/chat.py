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

A chat-tuned model (its tokenizer has the chat tokens: `chat_format.is_chat_tokenizer`) is talked
to in its own format instead: the history as user and assistant messages rendered by
`chat_format.render`, the oldest whole exchanges dropped to fit, the reply ending at `<|end|>`.
"""

import sys

from mini_llm import chat_format
from mini_llm.errors import UserError
from mini_llm.generate import Sampling, generate_ids, stream

USER, BOT = "HORATIO", "HAMLET"  # two speakers of one play, both frequent in the default corpus
CHAT_USER, CHAT_BOT = "user", "assistant"  # the names a chat-tuned model's turns are shown with


class Chat:
    """A conversation: turns -> prompt ids within the context window -> streamed replies.

    The format follows the model: a play for a pretrained one, the chat template for a chat-tuned
    one (`self.tuned`). Speaker names default to the format's (HORATIO and HAMLET, or user and
    assistant); a chat-tuned model only shows them."""

    def __init__(self, runner, tokenizer, user: str | None = None, bot: str | None = None,
                 sampling: Sampling | None = None, max_new_tokens: int = 120, notice=None):
        self.tuned = chat_format.is_chat_tokenizer(tokenizer)
        user = (CHAT_USER if self.tuned else USER) if user is None else user
        bot = (CHAT_BOT if self.tuned else BOT) if bot is None else bot
        if not user.strip() or not bot.strip():
            raise UserError("speaker names must not be empty")
        self.runner, self.tokenizer = runner, tokenizer
        self.user, self.bot = user.strip(), bot.strip()
        self.sampling = sampling or Sampling()
        self.max_new_tokens = max_new_tokens
        self.generator = self.sampling.generator()
        self.turns: list[tuple[str, str]] = []  # (speaker, text), the user's and the bot's in turn
        self.notice = notice or (lambda msg: print(msg, file=sys.stderr))

    def reset(self) -> None:
        self.turns = []

    @staticmethod
    def format_turn(name: str, text: str) -> str:
        return f"{name}:\n{text.strip()}\n\n"

    def prompt_text(self, message: str, turns=None) -> str:
        """The conversation (`turns`, default all) + the new message, ending where the reply starts."""
        turns = self.turns if turns is None else turns
        if self.tuned:
            return chat_format.render(self.messages(turns, message), add_generation_prompt=True)
        return "".join(self.format_turn(n, t) for n, t in turns) + self.format_turn(self.user, message) + f"{self.bot}:\n"

    def messages(self, turns, message: str) -> list[dict]:
        """`turns` (the user's first, then the bot's, in turn) and the new message as chat messages."""
        roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
        return [{"role": r, "content": t} for r, (_, t) in zip(roles, turns)] + [{"role": "user", "content": message}]

    def prompt_ids(self, message: str) -> list[int]:
        """The prompt encoded as one text, oldest whole turns (whole exchanges for a chat-tuned
        model, which was fine-tuned on conversations that start with the user) dropped until it
        fits the window (room is left for the reply)."""
        budget = self.runner.block_size - min(self.max_new_tokens, self.runner.block_size // 2)
        encode = lambda turns: self.tokenizer.encode(self.prompt_text(message, turns)).ids  # noqa: E731
        ids = encode(self.turns[chat_format.first_kept(self.turns, encode, budget, 2 if self.tuned else 1):])
        if len(ids) > budget:
            self.notice(f"note: your message is {len(ids)} tokens; keeping its last {budget} to fit the context")
            return ids[-budget:]
        return ids

    def reply(self, message: str):
        """Stream the bot's reply to `message` (pieces of text); records both turns."""
        ids = self.prompt_ids(message)
        if self.tuned:  # the reply ends at <|end|>, or wherever another turn would start
            end, stops = chat_format.END, [t for t in chat_format.CHAT_TOKENS if t != chat_format.END]
        else:
            end, stops = None, ["\n\n", f"\n{self.user}:"]
        pieces = []
        for piece in stream(self.runner, self.tokenizer, ids, self.max_new_tokens, self.sampling, stops,
                            generator=self.generator, lstrip=True, end=end):
            pieces.append(piece)
            yield piece
        self.turns += [(self.user, message), (self.bot, "".join(pieces).strip() or "...")]


def answer(runner, tokenizer, messages: list[dict], max_new_tokens: int = 64, sampling: Sampling | None = None):
    """A chat-tuned model's reply to `messages` (ending with the user's) and whether it ended with
    <|end|> within max_new_tokens: (text, ended). What fine-tuning samples and `bench chat` score."""
    sampling = sampling or Sampling()
    ids = chat_format.encode_chat(tokenizer, messages, add_generation_prompt=True)
    end = chat_format.token_ids(tokenizer)[chat_format.END]
    new = list(generate_ids(runner, ids, max_new_tokens, sampling, eot_id=end))
    return tokenizer.decode(new, skip_special_tokens=False).strip(), len(new) < max_new_tokens
