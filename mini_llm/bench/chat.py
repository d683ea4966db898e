"""`mini-llm bench chat`: what chat fine-tuning bought, measured on the run's held-out conversations.

For a chat-tuned checkpoint it reads the run's conversations and split again (its data, val
fraction and seed from its metadata) and reports:

- the held-out masked loss (nats per assistant token) before fine-tuning, i.e. of the run's
  --init-from checkpoint with the chat tokens added, as fine-tuning started, and after;
- the share of replies to the held-out questions that end with <|end|> within --max-new-tokens;
- a few replies verbatim, to held-out questions and to questions seen in fine-tuning, each beside
  an answer the data gives.

Replies are sampled with the chat's default settings from a fixed seed, as `mini-llm chat --seed`
would give them.
"""

from pathlib import Path

import torch

from mini_llm import chat_format
from mini_llm.bench.common import machine, table
from mini_llm.chat import answer
from mini_llm.checkpoint import load_checkpoint
from mini_llm.conversations import first_of_each_question, prepare_chat, read_conversations, split_by_question
from mini_llm.errors import UserError
from mini_llm.generate import Sampling, TorchRunner
from mini_llm.paths import display
from mini_llm.train import evaluate

REPLY_TOKENS = 64


def bench_chat(checkpoint=None, data=None, max_new_tokens: int = REPLY_TOKENS, verbatim: int = 5, seed: int = 0,
               device: str = "cpu") -> dict:
    """The figures above, printed as two tables and returned: loss_before (None when the run names
    no --init-from), loss_after, ended (the share), replies [(kind, question, reply, reference)]."""
    device = torch.device(device)
    model, tok, meta = load_checkpoint(checkpoint, device)
    if not chat_format.is_chat_tokenizer(tok):
        raise UserError(f"{display(meta['folder'])} is not chat-tuned: give a run of `mini-llm train --chat`")
    cfg = meta.get("train_config", {})
    data = data or meta.get("data")
    if not data:
        raise UserError("this checkpoint does not name its conversations: give them with --data")
    files = [data] if isinstance(data, (str, Path)) else list(data)
    block, val_fraction, run_seed = model.config.block_size, cfg.get("val_fraction", 0.1), cfg.get("seed", 0)

    def held_out_loss(model, tokenizer) -> float:
        rows = prepare_chat(files, tokenizer, block, val_fraction, run_seed, log=lambda *a: None).val
        return evaluate(model, rows, block, device, 1.0)["val_loss"]

    after, before = held_out_loss(model, tok), None
    if meta.get("init_from"):  # the model fine-tuning started from: the source with the chat tokens added
        source, source_tok, _ = load_checkpoint(Path(meta["init_from"]), device)
        before = held_out_loss(*chat_format.add_chat_tokens(source, source_tok))

    seen, held = split_by_question([c for f in files for c in read_conversations(f)], val_fraction)
    runner, sampling = TorchRunner(model), Sampling(seed=seed)
    ended, replies = 0, []
    for kind, conversations in (("held out", first_of_each_question(held)), ("seen", first_of_each_question(seen))):
        for i, c in enumerate(conversations if kind == "held out" else conversations[:verbatim]):
            text, done = answer(runner, tok, c.prompt, max_new_tokens, sampling)
            ended += done and kind == "held out"
            if i < verbatim:
                replies.append((kind, c.prompt[-1]["content"], text, c.messages[len(c.prompt)]["content"]))
    asked = len(first_of_each_question(held))

    table([{"held-out masked loss before": "n/a" if before is None else before, "after": after,
            "held-out conversations": len(held), f"replies ending with {chat_format.END} within {max_new_tokens} tokens":
            f"{ended}/{asked} ({ended / asked:.0%})"}],
          f"chat fine-tuning, {display(meta['folder'])} (step {meta.get('step', '?')}): nats per assistant token on "
          f"the held-out conversations | {machine()}")
    table([{"kind": kind, "question": q, "reply": _cell(r), "an answer in the data": _cell(ref)}
           for kind, q, r, ref in replies],
          f"replies, sampled at temperature {sampling.temperature}, top-k {sampling.top_k}, seed {seed}")
    return {"loss_before": before, "loss_after": after, "ended": ended / asked, "replies": replies}


def _cell(text: str) -> str:
    """One table cell: newlines and bars written out."""
    return text.replace("\n", "\\n").replace("|", "\\|")
