"""The chat format of a chat-tuned model: special tokens for the roles and the end of a turn, the
template that renders a conversation, the loss mask and the masked loss of fine-tuning.

A conversation is a list of messages, {"role": "system" | "user" | "assistant", "content": text}
(the convention of the ecosystem's chat data), rendered as one text:

    <|system|>Be brief.<|end|><|user|>What is AI?<|end|><|assistant|>The science of ...<|end|>

and encoded as one text (the special tokens split it, so this equals encoding the pieces one by
one). To ask for a reply the text ends with `<|assistant|>`, and the reply ends at `<|end|>`.

Fine-tuning counts the loss only where the assistant speaks: the tokens of each assistant
message and the `<|end|>` that closes it (`loss_mask`), so the model learns to answer, and to
stop, not to write the user's questions. Every other target is IGNORE_INDEX (`targets`), which
F.cross_entropy skips, so MiniGPT's own loss is the masked loss (`masked_loss` writes it out).

The tokens are added at fine-tune time (`add_chat_tokens`), not reserved when the tokenizer is
trained: checkpoints pretrained before there was a chat format, and GPT-2's imported weights,
have tokenizers that cannot be changed after the fact, so growing the vocabulary has to work
anyway; with it, one way serves every checkpoint. The new rows of the embedding (and of the LM
head, which is the same matrix when tied) start at the mean of the old rows: every new token
starts as an average token, with an average logit, instead of noise that the first steps must
undo. A tokenizer that has the tokens is a chat-tuned model's: `is_chat_tokenizer` is how chat
and the widgets tell the two formats apart (a pretrained model keeps the play of `chat.py`).
"""

import copy
from dataclasses import replace

import torch
import torch.nn as nn

from mini_llm.data import IGNORE_INDEX
from mini_llm.errors import UserError

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CHAT_TOKENS = (*ROLES.values(), END)
FORMAT = "mini-llm-chat-1"

# The same template in Jinja, the language of `chat_template` in HuggingFace's tokenizer_config.json:
# a checkpoint's metadata carries it (`metadata`), and a test renders it beside `render`.
JINJA = ("{% for message in messages %}{{ '<|' + message['role'] + '|>' + (message['content'] | trim) + '<|end|>' }}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def render(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as one text; with add_generation_prompt it ends where the assistant's reply starts."""
    text = "".join(ROLES[m["role"]] + m["content"].strip() + END for m in messages)
    return text + ASSISTANT if add_generation_prompt else text


def encode_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """The conversation's token ids: one encoding of the rendered text (trap 12 in docs/TRAPS.md)."""
    return tokenizer.encode(render(messages, add_generation_prompt)).ids


def is_chat_tokenizer(tokenizer) -> bool:
    """True when the tokenizer has every chat token as a special token (only chat fine-tuning adds them)."""
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    return all(t in special for t in CHAT_TOKENS)


def token_ids(tokenizer) -> dict[str, int]:
    """{token: id} of the chat tokens; a tokenizer without them is refused in one line."""
    if not is_chat_tokenizer(tokenizer):
        raise UserError("this tokenizer has no chat tokens: the model is not chat-tuned "
                        "(fine-tune it with `mini-llm train --chat --init-from RUN`)")
    return {t: tokenizer.token_to_id(t) for t in CHAT_TOKENS}


def loss_mask(ids: list[int], tokenizer) -> list[bool]:
    """For each token: does it count in the loss? True for the tokens of an assistant message and
    the <|end|> that closes it; False for the role tokens, the other roles' messages and padding."""
    tokens = token_ids(tokenizer)
    assistant, end, roles = tokens[ASSISTANT], tokens[END], {tokens[t] for t in ROLES.values()}
    mask, speaking = [], False
    for i in ids:
        if i in roles:
            speaking = i == assistant
            mask.append(False)
        else:
            mask.append(speaking)
            speaking = speaking and i != end
    return mask


def targets(ids: list[int], tokenizer) -> list[int]:
    """The target of position t is ids[t + 1] where that token counts, else IGNORE_INDEX: len(ids) - 1 targets."""
    mask = loss_mask(ids, tokenizer)
    return [i if counted else IGNORE_INDEX for i, counted in zip(ids[1:], mask[1:])]


def masked_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the counted targets only: logits (B, T, V), targets (B, T) with
    IGNORE_INDEX where nothing counts. Written out; equal to MiniGPT's loss (F.cross_entropy)."""
    counted = targets != IGNORE_INDEX  # (B, T)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    nll = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T); ignored ones read id 0
    return (nll * counted).sum() / counted.sum()


def add_chat_tokens(model, tokenizer):
    """(model, tokenizer) with the chat tokens: copies of both, the vocabulary grown by the tokens
    it lacked, each new embedding row (and LM head row) the mean of the old rows. Given a
    tokenizer that has them already, the same two objects come back."""
    if is_chat_tokenizer(tokenizer):
        return model, tokenizer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())
    old = model.config.vocab_size
    if tok.get_vocab_size() != old:
        raise UserError(f"the tokenizer has {tok.get_vocab_size():,} tokens but the model {old:,}: use the checkpoint's own")
    tok.add_special_tokens(list(CHAT_TOKENS))
    new = tok.get_vocab_size()
    if any(tok.token_to_id(t) >= new for t in CHAT_TOKENS):
        raise UserError("the tokenizer gave the chat tokens ids outside its vocabulary; use a plain BPE tokenizer")
    model = copy.deepcopy(model)
    grown = _grow(model.wte.weight, new)
    # from_pretrained and a new Parameter: no initialisation, so the global RNG is not touched
    model.wte = nn.Embedding.from_pretrained(grown, freeze=False)
    model.lm_head.weight = model.wte.weight if model.config.tie_head else nn.Parameter(_grow(model.lm_head.weight, new))
    model.lm_head.out_features = new
    model.config = replace(model.config, vocab_size=new)
    return model, tok


def _grow(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """weight (V, C) -> (rows, C): the old rows, then copies of their mean."""
    weight = weight.detach()
    extra = weight.mean(dim=0, keepdim=True).expand(rows - len(weight), -1)
    return torch.cat([weight, extra]).clone()


def metadata() -> dict:
    """What a chat-tuned checkpoint's meta.json records: the Jinja template under `chat_template`
    (the key of HuggingFace's tokenizer_config.json) and the format spelled out under `chat`."""
    return {"chat_template": JINJA,
            "chat": {"format": FORMAT, "roles": dict(ROLES), "end": END, "generation_prompt": ASSISTANT,
                     "loss": "the tokens of each assistant message and its end token"}}


def first_kept(turns: list, encode, budget: int, group: int = 1) -> int:
    """Where the newest whole turns that fit start: the smallest multiple of `group` (2: whole
    exchanges) such that `encode(turns[first:])` has at most `budget` ids (len(turns) if none fit).
    Per-group lengths only guess where to start (joined text can encode a token shorter or
    longer); the answer is always checked on one encoding of the whole text."""
    base = len(encode([]))
    starts = list(range(0, len(turns), group))
    sizes = [len(encode(turns[s : s + group])) - base for s in starts]
    k, total = len(starts), base
    while k > 0 and total + sizes[k - 1] <= budget:
        k, total = k - 1, total + sizes[k - 1]
    first = starts[k] if k < len(starts) else len(turns)
    while first < len(turns) and len(encode(turns[first:])) > budget:
        first = min(first + group, len(turns))
    return first
