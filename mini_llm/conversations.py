"""Conversations for chat fine-tuning: JSONL files in the ecosystem's convention, checked line by
line; the offline default set from chatterbot-corpus; a held-out split by question; and rows of
the context, one conversation each, with the loss mask of `chat_format`.

A file holds one conversation per line:

    {"messages": [{"role": "user", "content": "What is AI?"}, {"role": "assistant", "content": "..."}]}

An optional system message comes first, then the user and the assistant take turns, and the
assistant speaks last (its last message is what the conversation teaches). Other keys are
ignored. A bad line stops with one line naming the file and the line number.

Rows: one conversation per row of block_size + 1 tokens, padded (the padding's targets are
IGNORE_INDEX), the training conversations shuffled by the run's seed. Packing several into a row
would waste less compute, but the rows would be the same every epoch, and a small model then
learns each reply from the unrelated conversations before it in its row, not from its question:
measured on the default set (BENCHMARKS.md, chat), in its own row the packed model gave the first
token of a reply it had learned 0.996 and alone, as `mini-llm chat` asks it, 0.006. One per row is
how it is asked. `pack` still packs, for other uses. A conversation longer than the context loses
its oldest whole exchanges (user + assistant) until it fits; one whose last exchange alone is too
long is left out. Both are said.

The held-out split is by question (the first user message, compared without case or extra
spaces): a question's conversations are all held out or all trained on, decided by a hash of
the question, so the split does not depend on the order of the file or on the seed.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mini_llm import chat_format
from mini_llm.data import IGNORE_INDEX, VAL_FRACTION, PackedRows
from mini_llm.errors import UserError
from mini_llm.files import atomic_write_bytes
from mini_llm.paths import data_dir, display
from mini_llm.tokenizer import EOT

CHAT_FILE = "chat.jsonl"  # the default set, under data/
SHAPE = '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'


@dataclass
class Conversation:
    messages: list[dict]
    where: str  # "data/chat.jsonl:12": what messages about it name

    @property
    def question(self) -> str:
        """The first user message, compared without case or extra spaces."""
        return " ".join(self.prompt[-1]["content"].casefold().split())

    @property
    def prompt(self) -> list[dict]:
        """The messages up to the first user message (a system message too): what asks the first reply."""
        return self.messages[: next(i for i, m in enumerate(self.messages) if m["role"] == "user") + 1]


def first_of_each_question(conversations: list[Conversation]) -> list[Conversation]:
    """Each question's first conversation, in order."""
    first = {}
    for c in conversations:
        first.setdefault(c.question, c)
    return list(first.values())


# ---------------------------------------------------------------------------------------------
# Reading and checking


def read_conversations(path) -> list[Conversation]:
    """Every conversation in a JSONL file (blank lines skipped); the first bad line raises UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{display(path)}: no such file; give a JSONL file of conversations, one per line: {SHAPE}")
    if path.is_dir():
        raise UserError(f"{display(path)}: is a folder; give JSONL files of conversations")
    conversations = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{display(path)}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{where}: not UTF-8 (invalid byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "re-save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line is one "
                                f"conversation: {SHAPE}") from None
            conversations.append(Conversation(check_messages(record, where), where))
    if not conversations:
        raise UserError(f"{display(path)}: no conversations in it; write one per line: {SHAPE}")
    return conversations


def check_messages(record, where: str) -> list[dict]:
    """The conversation's messages as {"role", "content"} dicts, checked; UserError naming `where`."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: expected an object with a non-empty \"messages\" list: {SHAPE}")
    out = []
    for k, m in enumerate(messages, 1):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in chat_format.ROLES:
            raise UserError(f"{where}: message {k} has role {role!r}; use system, user or assistant")
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise UserError(f"{where}: message {k} ({role}) has empty content; give it some text")
        for token in chat_format.CHAT_TOKENS:
            if token in content:
                raise UserError(f"{where}: message {k} contains {token}, a token of the chat format; remove it")
        out.append({"role": role, "content": content.strip()})
    talk = out[1:] if out[0]["role"] == "system" else out
    for k, m in enumerate(talk):
        expected = "user" if k % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise UserError(f"{where}: message {k + 1 + len(out) - len(talk)} is the {m['role']}'s where the {expected} "
                            "speaks: after an optional system message first, the user and the assistant take turns")
    if out[-1]["role"] != "assistant":
        raise UserError(f"{where}: the conversation ends with the {out[-1]['role']}, not the assistant; end it with "
                        "the assistant's reply (the part fine-tuning learns)")
    return out


def split_by_question(conversations: list[Conversation], val_fraction: float = VAL_FRACTION):
    """(train, held out): a question's conversations all go to one side, chosen by a hash of it."""
    if not 0 < val_fraction < 1:
        raise UserError(f"val fraction {val_fraction} out of range: use a number between 0 and 1, e.g. 0.1")
    held = [_held_out(c.question, val_fraction) for c in conversations]
    return ([c for c, h in zip(conversations, held) if not h], [c for c, h in zip(conversations, held) if h])


def _held_out(question: str, val_fraction: float) -> bool:
    return int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:8], "big") < val_fraction * 2**64


# ---------------------------------------------------------------------------------------------
# Encoding and packing


def fit_ids(conversation: Conversation, tokenizer, length: int) -> tuple[list[int] | None, int]:
    """(ids, exchanges dropped): the conversation in at most `length` tokens, its oldest whole
    exchanges dropped (a system message stays); None when its last exchange alone is longer."""
    ids = chat_format.encode_chat(tokenizer, conversation.messages)
    if len(ids) <= length:
        return ids, 0
    system = conversation.messages[:1] if conversation.messages[0]["role"] == "system" else []
    talk = conversation.messages[len(system):]
    encode = lambda turns: chat_format.encode_chat(tokenizer, system + turns)  # noqa: E731
    first = chat_format.first_kept(talk, encode, length, group=2)
    if first == len(talk):
        return None, len(talk) // 2
    return encode(talk[first:]), first // 2


def pack(sequences: list[list[int]], tokenizer, block_size: int, one_per_row: bool = False) -> PackedRows:
    """Rows of block_size + 1 tokens, each holding whole sequences (as many as fit, or one), padded:
    x (N, T) the inputs, y (N, T) the targets (`chat_format.targets`; IGNORE_INDEX at the padding)."""
    pad = tokenizer.token_to_id(EOT)
    rows, row = [], []
    for ids in sequences:
        if row and (one_per_row or len(row) + len(ids) > block_size + 1):
            rows.append(row)
            row = []
        row = row + ids
    rows.append(row)
    x = torch.full((len(rows), block_size), pad, dtype=torch.long)
    y = torch.full((len(rows), block_size), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        x[i, : len(row) - 1] = torch.tensor(row[:-1])
        y[i, : len(row) - 1] = torch.tensor(chat_format.targets(row, tokenizer))
    return PackedRows(x, y)


@dataclass
class ChatData:
    """Conversations ready to train on: what `data.Prepared` is for text, with packed rows."""

    tokenizer: object
    train: PackedRows
    val: PackedRows
    prompts: list[list[dict]]  # held-out questions (each with its system message, if any): what samples answer
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def check_block_size(self, block_size: int) -> None:
        if self.train.x.shape[1] != block_size:
            raise UserError(f"these conversations were packed for a context of {self.train.x.shape[1]}, "
                            f"not {block_size}: prepare them again")

    def report(self) -> list[str]:
        m = self.meta
        return [f"conversations: {m['train_conversations']:,} train / {m['val_conversations']:,} held out "
                f"({m['val_questions']:,} of {m['questions']:,} questions) | {len(self.train):,} train rows of "
                f"{self.train.x.shape[1]} tokens ({m['train_fill']:.0%} filled) | {self.train.counted:,} train / "
                f"{self.val.counted:,} held-out assistant tokens in the loss"]


def prepare_chat(sources, tokenizer, block_size: int, val_fraction: float = VAL_FRACTION, seed: int = 0,
                 log=print) -> ChatData:
    """Read, check, split, encode and pack the conversations in `sources` (JSONL files) for a model
    with `tokenizer` (which must have the chat tokens) and context `block_size`."""
    chat_format.token_ids(tokenizer)  # refuses a tokenizer without the chat tokens
    files = [sources] if isinstance(sources, (str, Path)) else list(sources)
    conversations = [c for f in files for c in read_conversations(f)]
    train, val = split_by_question(conversations, val_fraction)
    if not train or not val:
        raise UserError(f"{len({c.question for c in conversations})} distinct questions leave "
                        f"{'no held-out' if not val else 'no training'} conversation at val fraction {val_fraction:g}: "
                        "add conversations with more questions, or change --val-fraction")
    random.Random(seed).shuffle(train)  # so a row's conversations are unrelated, whatever the file's order
    sequences = {}
    for name, part in (("train", train), ("val", val)):
        fitted = [(c, *fit_ids(c, tokenizer, block_size + 1)) for c in part]
        _say_trimmed(name, fitted, block_size, log)
        sequences[name] = [(c, ids) for c, ids, _ in fitted if ids is not None]
        if not sequences[name]:
            raise UserError(f"no {name} conversation fits the context of {block_size} tokens: use a larger --block-size "
                            "or shorter conversations")
    train_rows = pack([ids for _, ids in sequences["train"]], tokenizer, block_size, one_per_row=True)
    val_rows = pack([ids for _, ids in sequences["val"]], tokenizer, block_size, one_per_row=True)
    prompts = [c.prompt for c in first_of_each_question([c for c, _ in sequences["val"]])]
    meta = {"files": [str(f) for f in files], "train_conversations": len(sequences["train"]),
            "val_conversations": len(sequences["val"]), "questions": len({c.question for c in conversations}),
            "val_questions": len(prompts), "val_fraction": val_fraction,
            "train_fill": sum(len(ids) for _, ids in sequences["train"]) / (len(train_rows) * (block_size + 1)),
            # nats per character of what the loss scores: the assistant's text (its end tokens count as tokens)
            "val_chars": sum(len(m["content"]) for c, _ in sequences["val"] for m in c.messages if m["role"] == "assistant"),
            "val_tokens": val_rows.counted}
    return ChatData(tokenizer, train_rows, val_rows, prompts, meta)


def _say_trimmed(name: str, fitted: list, block_size: int, log) -> None:
    trimmed = [c.where for c, ids, dropped in fitted if ids is not None and dropped]
    skipped = [c.where for c, ids, _ in fitted if ids is None]
    if trimmed:
        log(f"note: {len(trimmed)} {name} conversation(s) longer than the context ({block_size} tokens) lost their "
            f"oldest whole exchanges to fit (the first: {trimmed[0]})")
    if skipped:
        log(f"note: {len(skipped)} {name} conversation(s) left out: their last exchange alone is longer than the "
            f"context of {block_size} tokens (the first: {skipped[0]})")


# ---------------------------------------------------------------------------------------------
# The offline default: chatterbot-corpus's English conversations


def chatterbot_conversations() -> list[dict]:
    """The English conversations of the chatterbot-corpus package (BSD-3), as JSONL records:
    lines alternate user and assistant; a last question with no answer is dropped; exact
    repeats (the tech-support topic repeats its ten questions over a thousand times) are kept once."""
    import yaml

    spec = importlib.util.find_spec("chatterbot_corpus")  # locates the data without running the package
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the 'chatterbot-corpus' package is missing: run pip install -e . (it ships the default chat set)")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "english"
    records, seen = [], set()
    for path in sorted(folder.glob("*.yml")):
        for lines in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            if not all(isinstance(line, str) and line.strip() for line in lines):
                continue
            lines = [line.strip() for line in lines][: len(lines) // 2 * 2]
            if not lines or tuple(lines) in seen:
                continue
            seen.add(tuple(lines))
            roles = ["user", "assistant"] * (len(lines) // 2)
            records.append({"messages": [{"role": r, "content": t} for r, t in zip(roles, lines)], "topic": path.stem})
    return records


def build_chat_corpus(out: Path | None = None) -> Path:
    """Write the default chat set to data/chat.jsonl (byte-identical for a chatterbot-corpus version)."""
    out = Path(out) if out else data_dir() / CHAT_FILE
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in chatterbot_conversations()]
    atomic_write_bytes(out, "".join(lines).encode("utf-8"))
    return out


def default_chat_sources() -> tuple[list[Path], str]:
    """What chat fine-tuning uses when the user names nothing: data/chat.jsonl, built if missing."""
    path = data_dir() / CHAT_FILE
    if not path.exists():
        build_chat_corpus(path)
    return [path], f"using the default chat set at {display(path)} (chatterbot-corpus, English)"


def prepare_chat_corpus(val_fraction: float = VAL_FRACTION) -> list[str]:
    """`mini-llm prepare --source chat`: build data/chat.jsonl and say what it holds and what is held out."""
    path = build_chat_corpus()
    conversations = read_conversations(path)
    train, val = split_by_question(conversations, val_fraction)
    version = importlib.metadata.version("chatterbot-corpus")
    return [f"built the chat set from chatterbot-corpus {version} (English) at {display(path)}",
            f"conversations: {len(conversations):,} ({len({c.question for c in conversations}):,} distinct questions) | "
            f"held out by question: {len(val):,} conversations, {len({c.question for c in val}):,} questions "
            f"(val fraction {val_fraction:g})",
            "fine-tune on it: mini-llm train --chat --init-from RUN (or without --init-from: the newest run)"]
