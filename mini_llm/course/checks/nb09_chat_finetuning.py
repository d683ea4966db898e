"""Checks of notebook 09 (chat fine-tuning). Steps: the chat template, the chat tokens (a grown
vocabulary), the loss mask, the masked loss. Exercises: a history trimmed by whole exchanges to fit
a budget, the mask of the last reply only, a stop rule for the end of a reply.

The cases run on small byte-level BPE tokenizers trained here on a few sentences (a few
milliseconds) and small MiniGPTs, so no check needs the notebook's model or data; every case gets
its own copies, so a piece that changes its inputs in place cannot change the cases."""

import copy
import functools

import torch

from mini_llm import chat_format
from mini_llm.chat_format import add_chat_tokens, encode_chat, loss_mask, masked_loss, render
from mini_llm.course.checks.harness import Label, Result, Verdict, as_ints, close, on_copies, run_cases, small_model, step
from mini_llm.data import IGNORE_INDEX

_TEXTS = {
    "small": ("What is AI? Artificial intelligence is the science of making machines that think. "
              "Hello! Hi there, how are you? I am fine, thank you. Be brief. Tell me a joke.\n") * 8,
    "verse": ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate. "
              "What is a computer? A machine that follows instructions. Do you like music? Yes, I do!\n") * 8,
}


@functools.lru_cache(maxsize=None)
def _base_tokenizer(name: str, vocab_size: int):
    from mini_llm.tokenizer import train_tokenizer_from_text

    return train_tokenizer_from_text(_TEXTS[name], vocab_size=vocab_size, min_frequency=1)


def _tokenizer(name: str = "small", vocab_size: int = 300, chat: bool = True):
    """A fresh copy of a small tokenizer, with the chat tokens (as chat fine-tuning adds them) or without."""
    tok = copy.deepcopy(_base_tokenizer(name, vocab_size))
    if chat:
        tok.add_special_tokens(list(chat_format.CHAT_TOKENS))
    return tok


def _messages(*pairs, system=None) -> list[dict]:
    """("user text", "assistant text"), ... -> messages (a last pair with None has only the user's)."""
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in pairs:
        messages.append({"role": "user", "content": user})
        if assistant is not None:
            messages.append({"role": "assistant", "content": assistant})
    return messages


_AI = ("What is AI?", "The science of making machines that think.")
_HELLO = ("Hello!", "Hi there, how are you?")
_FINE = ("I am fine, thank you.", "Good. Tell me a joke?")
_MUSIC = ("Do you like music?", "Yes, I do!")


# --- steps --------------------------------------------------------------------------------------


def check_render_chat(fn, hidden: bool = False) -> Result:
    """Step: fn(messages, add_generation_prompt) -> the conversation as one text, as chat_format.render."""
    def case(messages, add_generation_prompt=False):
        return (messages, add_generation_prompt), render(messages, add_generation_prompt)

    cases = [case(_messages(_AI)), case(_messages(_HELLO, system="Be brief.")),
             case(_messages(("  What is AI?\n", None)), add_generation_prompt=True)]
    hidden_cases = [case(_messages(_HELLO, _FINE, _AI)), case(_messages(_MUSIC, ("And poems?", None), system="Be kind."), True),
                    case(_messages(("Two lines:\nfirst\n  second  ", "One\n\nreply "))), case([], True),
                    case(_messages(("Ωж 世界?", "¡Sí! 😀"))), case(_messages(_AI, system=" Answer in one line. "), True)]
    return step("render_chat", fn, render, run_cases(
        "render_chat", on_copies(fn), cases, "for each message: its role's token (<|system|>, <|user|> or "
        "<|assistant|>), its content with the spaces and line breaks at both ends stripped (.strip()), then <|end|>; "
        "all joined with nothing between; with add_generation_prompt, <|assistant|> at the very end.",
        hidden_cases=hidden_cases, hidden=hidden))


def _grown_verdict(got, model, tokenizer, want_model, want_tok, model_before, vocab_before) -> Verdict:
    """Does fn's (model, tokenizer) match add_chat_tokens'? The first thing that does not, in words."""
    if not (isinstance(got, tuple) and len(got) == 2):
        return Verdict(False, f"{type(got).__name__} came back, not a (model, tokenizer) pair")
    got_model, got_tok = got
    if not hasattr(got_tok, "token_to_id"):
        return Verdict(False, f"the second item is a {type(got_tok).__name__}, not a tokenizer")
    if got_tok.get_vocab_size() != want_tok.get_vocab_size():
        return Verdict(False, f"a tokenizer of {got_tok.get_vocab_size()} tokens, not {want_tok.get_vocab_size()}")
    for t in chat_format.CHAT_TOKENS:
        if got_tok.token_to_id(t) != want_tok.token_to_id(t):
            return Verdict(False, f"{t} has id {got_tok.token_to_id(t)}, not {want_tok.token_to_id(t)} "
                                  "(the new tokens go after the old ones, in the order of CHAT_TOKENS)")
    if not chat_format.is_chat_tokenizer(got_tok):
        return Verdict(False, "the chat tokens are not special tokens of the tokenizer (add_special_tokens)")
    sample = render(_messages(_AI, _HELLO, system="Be brief."))
    if got_tok.encode(sample).ids != want_tok.encode(sample).ids:
        return Verdict(False, f"the tokenizer encodes {sample[:40]!r}... into other ids than add_chat_tokens' does")
    if tokenizer.get_vocab_size() != vocab_before:
        return Verdict(False, "the tokenizer you were given changed: add the tokens to a copy "
                              "(Tokenizer.from_str(tokenizer.to_str()))")
    if any(not torch.equal(v, model_before[k]) for k, v in model.state_dict().items()):
        return Verdict(False, "the model you were given changed: grow a copy (copy.deepcopy(model))")
    V, C = want_model.wte.weight.shape
    if not isinstance(got_model, torch.nn.Module) or not hasattr(got_model, "wte"):
        return Verdict(False, f"the first item is a {type(got_model).__name__}, not the grown MiniGPT")
    if getattr(getattr(got_model, "config", None), "vocab_size", None) != V:
        return Verdict(False, f"model.config.vocab_size is {getattr(got_model.config, 'vocab_size', None)}, not {V}")
    for name in ("wte", "lm_head"):
        w, want = getattr(got_model, name).weight, getattr(want_model, name).weight
        if tuple(w.shape) != (V, C):
            return Verdict(False, f"{name}.weight has shape {tuple(w.shape)}, not {(V, C)}")
        old = len(model_before["wte.weight"])
        if not torch.equal(w[:old].detach(), want[:old].detach()):
            return Verdict(False, f"the first {old} rows of {name}.weight are not the old rows, unchanged")
        if not torch.allclose(w[old:].detach(), want[old:].detach(), atol=1e-6, rtol=1e-5):
            return Verdict(False, f"the new rows of {name}.weight are not each the mean of the old rows")
        if not isinstance(w, torch.nn.Parameter):
            return Verdict(False, f"{name}.weight is a plain tensor, not an nn.Parameter: the optimizer would not train it")
    if model.config.tie_head and got_model.lm_head.weight is not got_model.wte.weight:
        return Verdict(False, "lm_head.weight is not wte.weight: the model's head is tied to its embedding, and the "
                              "grown model's must be the same Parameter again (assign it)")
    ids = torch.tensor([want_tok.encode(sample).ids[: want_model.config.block_size]])
    with torch.no_grad():
        same = torch.allclose(got_model.eval()(ids)[0], want_model.eval()(ids)[0], atol=1e-5, rtol=1e-5)
    if not same:
        return Verdict(False, "the grown model's logits for a chat differ from add_chat_tokens' model's")
    return Verdict(True, "the chat tokens after the old ones, the old rows kept, each new row the mean of the old ones")


def check_add_chat_tokens(fn, hidden: bool = False) -> Result:
    """Step: fn(model, tokenizer) -> (model, tokenizer): copies with the chat tokens added, as
    chat_format.add_chat_tokens (the same ids; the old embedding rows kept, each new one their mean;
    a tied head still tied)."""
    def case(name, vocab, seed, **options):
        tok = _tokenizer(name, vocab, chat=False)
        model = small_model(seed, vocab_size=tok.get_vocab_size(), block_size=32, n_embd=16, n_head=2, n_layer=1, **options)
        head = "tied" if model.config.tie_head else "untied"
        args = (Label(model, f"<MiniGPT vocab={tok.get_vocab_size()} C=16, {head} head>"),
                Label(tok, f"<tokenizer of {tok.get_vocab_size()} tokens>"))
        return args, Verdict(True, "the chat tokens after the old ones, the old rows kept, each new row the mean of "
                                   "the old ones")

    def run(model_label, tok_label):
        model, tok = model_label.value, tok_label.value
        model_before, vocab_before = {k: v.clone() for k, v in model.state_dict().items()}, tok.get_vocab_size()
        want_model, want_tok = add_chat_tokens(model, tok)
        got = fn(model, tok)
        return _grown_verdict(got, model, tok, want_model, want_tok, model_before, vocab_before)

    cases = [case("small", 300, 0), case("verse", 280, 1)]
    hidden_cases = [case("small", 270, 2, tie_head=False), case("verse", 320, 3), case("small", 257, 4)]
    return step("add_chat_tokens_mine", fn, add_chat_tokens, run_cases(
        "add_chat_tokens_mine", run, cases, "copy the tokenizer (Tokenizer.from_str(tokenizer.to_str())) and call "
        "add_special_tokens(list(CHAT_TOKENS)) on the copy; deep-copy the model; the new embedding is "
        "torch.cat([old, old.mean(0, keepdim=True).expand(n_new, -1)]) wrapped in a new nn.Embedding (or "
        "nn.Parameter); point lm_head.weight at the same Parameter when the head is tied; set config.vocab_size "
        "(dataclasses.replace).", lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


def _ids_label(tok, messages, add_generation_prompt=False, extra=()):
    """A conversation's ids (plus `extra` ids after it), shown in the feedback as the text they encode."""
    ids = encode_chat(tok, messages, add_generation_prompt) + list(extra)
    text = tok.decode(ids, skip_special_tokens=False)
    return Label(ids, f"<{len(ids)} ids of {text[:36]!r}{'...' if len(text) > 36 else ''}>")


def check_loss_mask(fn, hidden: bool = False) -> Result:
    """Step: fn(ids, tokenizer) -> one bool per id: True where the id counts in the loss (the
    assistant's tokens and the <|end|> closing each reply), as chat_format.loss_mask."""
    tok = _tokenizer()
    eot = tok.token_to_id("<|endoftext|>")

    def case(messages, add_generation_prompt=False, extra=()):
        ids = _ids_label(tok, messages, add_generation_prompt, extra)
        return (ids, Label(tok, "<tokenizer with the chat tokens>")), loss_mask(ids.value, tok)

    two = encode_chat(tok, _messages(_HELLO))  # a packed row: two conversations, then padding
    cases = [case(_messages(_AI)), case(_messages(_HELLO, system="Be brief.")), case(_messages(_HELLO, _FINE))]
    hidden_cases = [case(_messages(_AI), extra=two + [eot] * 5), case(_messages(_MUSIC, ("And poems?", None)), True),
                    case(_messages(_FINE, _AI, _MUSIC, system="Be kind.")), case(_messages(("Hi", "Hello")), extra=[eot]),
                    case(_messages(("Ωж 世界?", "¡Sí! 😀"), _AI))]
    return step("loss_mask_mine", fn, loss_mask, run_cases(
        "loss_mask_mine", lambda ids, t: fn(list(ids.value), t.value), cases,
        "walk over the ids keeping one flag, 'the assistant is speaking': a role token sets it (on for "
        "<|assistant|>, off for the others) and is itself False; any other id gets the flag, and <|end|> turns it "
        "off after counting. Padding after the last <|end|> is False.",
        lambda got, want: len(as_ints(got)) == len(want) and as_ints(got) == [int(w) for w in want],
        hidden_cases=hidden_cases, hidden=hidden))


def check_masked_loss(fn, hidden: bool = False) -> Result:
    """Step: fn(logits (B, T, V), targets (B, T) with IGNORE_INDEX where nothing counts) -> the mean
    cross-entropy over the counted targets, as chat_format.masked_loss (to a relative 1e-5)."""
    def case(seed, B, T, V, counted, scale=3.0):
        g = torch.Generator().manual_seed(seed)
        logits = scale * torch.randn(B, T, V, generator=g)
        targets = torch.randint(0, V, (B, T), generator=g)
        keep = torch.rand(B, T, generator=g) < counted
        keep.view(-1)[int(torch.randint(0, B * T, (1,), generator=g))] = True  # at least one counts
        targets = targets.masked_fill(~keep, IGNORE_INDEX)
        return (logits, targets), masked_loss(logits, targets)

    cases = [case(0, 2, 4, 5, 0.5), case(1, 1, 6, 3, 0.3), case(2, 2, 3, 7, 0.6, scale=60.0)]
    hidden_cases = [case(3, 4, 16, 11, 0.2), case(4, 1, 1, 2, 1.0), case(5, 3, 8, 50, 0.9, scale=100.0),
                    case(6, 2, 10, 4, 0.05), case(7, 8, 32, 100, 0.5, scale=0.1)]
    return step("masked_loss_mine", fn, masked_loss, run_cases(
        "masked_loss_mine", on_copies(fn), cases, "log_softmax over the last dim (stable for large logits, unlike "
        "log(softmax) or exp by hand); pick each position's target with gather (an ignored target is -100, not an "
        "index: replace it first, e.g. clamp(min=0)); sum over the counted positions only and divide by how many "
        "count, not by B * T.", lambda got, want: close(float(got), want, 1e-5), hidden_cases=hidden_cases,
        hidden=hidden))


# --- exercises ----------------------------------------------------------------------------------


def _trimmed(messages, tok, budget):
    """The newest whole exchanges that fit: the system message (if any), then the question."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    talk = messages[len(system):]
    for start in range(0, len(talk), 2):
        if len(encode_chat(tok, system + talk[start:], add_generation_prompt=True)) <= budget:
            return system + talk[start:]
    return system + talk[-1:]


def check_trim_history(fn, hidden: bool = False) -> Result:
    """fn(messages, tokenizer, budget) -> the messages to send: the system message (if any), the
    newest whole exchanges whose prompt (encode_chat with the generation prompt) fits in `budget`
    ids, and the new question; just the system message and the question when nothing else fits."""
    tok = _tokenizer()

    def case(messages, budget):
        size = len(encode_chat(tok, messages, add_generation_prompt=True))
        label = Label(messages, f"<{len(messages)} messages, {size} ids with the generation prompt>")
        return (label, Label(tok, "<tokenizer with the chat tokens>"), budget), _trimmed(messages, tok, budget)

    history = _messages(_AI, _HELLO, _FINE, ("Tell me a joke.", None))
    sizes = [len(encode_chat(tok, history[i:], add_generation_prompt=True)) for i in range(0, 7, 2)]
    kind = _messages(_HELLO, _MUSIC, _AI, ("Hi", None), system="Be kind.")
    kind_sizes = [len(encode_chat(tok, kind[:1] + kind[i:], add_generation_prompt=True)) for i in range(1, 8, 2)]
    cases = [case(history, sizes[0]), case(history, sizes[1]), case(history, sizes[2] - 1)]
    hidden_cases = [case(history, 1000), case(history, sizes[1] - 1), case(history, 3), case(kind, kind_sizes[1]),
                    case(kind, kind_sizes[2] - 1), case(kind, 2), case(_messages(("Hi", None)), 1)]
    return run_cases("trim history", lambda m, t, b: fn(copy.deepcopy(m.value), t.value, b), cases,
                     "keep the system message; drop the oldest exchange (a user message and the assistant's reply, "
                     "two messages) at a time until len(encode_chat(tokenizer, kept, add_generation_prompt=True)) is "
                     "at most the budget; the last message (the question) always stays.",
                     lambda got, want: list(got) == want, hidden_cases=hidden_cases, hidden=hidden)


def _last_reply(ids, tok):
    mask = loss_mask(ids, tok)
    assistant = chat_format.token_ids(tok)[chat_format.ASSISTANT]
    last = max((i for i, t in enumerate(ids) if t == assistant), default=len(ids))
    return [counted and i > last for i, counted in enumerate(mask)]


def check_last_reply_mask(fn, hidden: bool = False) -> Result:
    """fn(ids, tokenizer) -> one bool per id: True only for the tokens of the last assistant message
    and the <|end|> that closes it."""
    tok = _tokenizer()

    def case(messages, add_generation_prompt=False):
        ids = _ids_label(tok, messages, add_generation_prompt)
        return (ids, Label(tok, "<tokenizer with the chat tokens>")), _last_reply(ids.value, tok)

    cases = [case(_messages(_HELLO, _FINE)), case(_messages(_AI)), case(_messages(_HELLO, _MUSIC, _AI, system="Be kind."))]
    hidden_cases = [case(_messages(_FINE, ("Again?", "Yes."), ("And again?", "Again."))), case(_messages(("Hi", None))),
                    case(_messages(_HELLO, ("And you?", None)), True), case(_messages(("Ωж?", "世界"), _MUSIC)),
                    case(_messages(_AI, _AI))]
    return run_cases("last reply mask", lambda ids, t: fn(list(ids.value), t.value), cases,
                     "find the position of the last <|assistant|> token; only the ids after it count, up to and "
                     "including the <|end|> that closes that reply. No assistant token: nothing counts.",
                     lambda got, want: len(as_ints(got)) == len(want) and as_ints(got) == [int(w) for w in want],
                     hidden_cases=hidden_cases, hidden=hidden)


def _cut(generated, end_id, stop_ids, max_new_tokens):
    window = list(generated)[:max_new_tokens]
    for i, t in enumerate(window):
        if t == end_id or t in stop_ids:
            return window[:i], t == end_id
    return window, False


def check_cut_reply(fn, hidden: bool = False) -> Result:
    """fn(generated, end_id, stop_ids, max_new_tokens) -> (reply ids, ended): the ids before the
    first end_id or stop id among the first max_new_tokens; ended only when end_id was met there."""
    def case(generated, end_id, stop_ids, n):
        return (generated, end_id, stop_ids, n), _cut(generated, end_id, stop_ids, n)

    cases = [case([5, 6, 7, 9, 8, 8], 9, [1, 2, 3], 10), case([5, 6, 7, 8], 9, [1, 2, 3], 3),
             case([5, 2, 9, 7], 9, [1, 2, 3], 10)]
    hidden_cases = [case([9, 5], 9, [1], 4), case([], 9, [1], 4), case([4, 4, 4, 9], 9, [1], 4), case([4, 4, 4, 4, 9], 9, [1], 4),
                    case([7, 1, 9], 9, [], 5), case(list(range(10, 80)) + [9], 9, [1, 2, 3], 64), case([3, 9], 9, [1, 2, 3], 1)]
    return run_cases("cut reply", on_copies(fn), cases,
                     "look only at generated[:max_new_tokens]; the reply is everything before the first id that is "
                     "end_id or in stop_ids; ended is True only when that id is end_id (a role token or the budget "
                     "running out is not a proper end).",
                     lambda got, want: len(got) == 2 and as_ints(got[0]) == want[0] and bool(got[1]) == want[1],
                     hidden_cases=hidden_cases, hidden=hidden)
