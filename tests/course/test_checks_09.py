"""The checks of notebook 09_chat_finetuning: the package's pieces and correct alternatives pass, public
and hidden cases; wrong ones fail naming the input and the first difference; echoing the inputs
fails; unwritten says so; each step hands on yours or the package's piece. Then the notebook's step
and exercise cells."""

import copy
import re
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer

from mini_llm import chat_format
from mini_llm.chat_format import ASSISTANT, CHAT_TOKENS, END, ROLES, add_chat_tokens, encode_chat, loss_mask, masked_loss, render
from mini_llm.course import checks as ex
from mini_llm.course.checks import nb09_chat_finetuning as nb09
from mini_llm.data import IGNORE_INDEX
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    assert_proofs_are_portable,
    contract_tests,
    notebook_tests,
    step_tests,
)

NOTEBOOK = "09_chat_finetuning"

# --- solutions, written independently of the package where it matters ---------------------------


def render_chat(messages, add_generation_prompt=False):  # the notebook's
    text = "".join(ROLES[m["role"]] + m["content"].strip() + END for m in messages)
    return text + ASSISTANT if add_generation_prompt else text


def render_by_parts(messages, add_generation_prompt=False):  # another correct form: the role's name in the token
    parts = [f"<|{m['role']}|>{m['content'].strip()}<|end|>" for m in messages]
    return "".join(parts + ["<|assistant|>"] * add_generation_prompt)


def add_chat_tokens_mine(model, tokenizer):  # the notebook's
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.add_special_tokens(list(CHAT_TOKENS))
    model = copy.deepcopy(model)
    old = model.wte.weight.detach()
    new = torch.cat([old, old.mean(0, keepdim=True).expand(len(CHAT_TOKENS), -1)])
    model.wte = nn.Embedding.from_pretrained(new, freeze=False)
    if model.config.tie_head:
        model.lm_head.weight = model.wte.weight
    else:
        head = model.lm_head.weight.detach()
        model.lm_head.weight = nn.Parameter(torch.cat([head, head.mean(0, keepdim=True).expand(len(CHAT_TOKENS), -1)]))
    model.config = replace(model.config, vocab_size=tok.get_vocab_size())
    return model, tok


def add_chat_tokens_in_place_params(model, tokenizer):  # another correct form: new Parameters in the old modules
    tok = copy.deepcopy(tokenizer)
    for t in CHAT_TOKENS:
        tok.add_special_tokens([t])
    model = copy.deepcopy(model)

    def grown(w):
        w = w.detach()
        return torch.cat([w] + [w.sum(0, keepdim=True) / len(w)] * len(CHAT_TOKENS))

    model.wte.weight = nn.Parameter(grown(model.wte.weight))
    model.wte.num_embeddings = len(model.wte.weight)
    model.lm_head.weight = model.wte.weight if model.config.tie_head else nn.Parameter(grown(model.lm_head.weight))
    model.config = replace(model.config, vocab_size=len(model.wte.weight))
    return model, tok


def untied(model, tokenizer):  # wrong: the head gets a copy of the grown embedding, no longer the same Parameter
    model, tok = add_chat_tokens_mine(model, tokenizer)
    model.lm_head.weight = nn.Parameter(model.wte.weight.detach().clone())
    return model, tok


def random_rows(model, tokenizer):  # wrong: the new rows drawn at random
    model, tok = add_chat_tokens_mine(model, tokenizer)
    with torch.no_grad():
        model.wte.weight[-len(CHAT_TOKENS):] = torch.randn(len(CHAT_TOKENS), model.wte.weight.shape[1])
    return model, tok


def grows_the_given_tokenizer(model, tokenizer):  # wrong: adds the tokens to the caller's tokenizer
    tokenizer.add_special_tokens(list(CHAT_TOKENS))
    return add_chat_tokens_mine(model, Tokenizer.from_str(tokenizer.to_str()))


def loss_mask_mine(ids, tokenizer):  # the notebook's
    role_ids = {tokenizer.token_to_id(t): t for t in ROLES.values()}
    end = tokenizer.token_to_id(END)
    mask, speaking = [], False
    for i in ids:
        if i in role_ids:
            speaking = role_ids[i] == ASSISTANT
            mask.append(False)
        else:
            mask.append(speaking)
            if i == end:
                speaking = False
    return mask


def loss_mask_by_spans(ids, tokenizer):  # another correct form: each reply's span, from its <|assistant|> to its <|end|>
    ids = torch.tensor(ids)
    mask = torch.zeros(len(ids), dtype=torch.bool)
    end = tokenizer.token_to_id(END)
    for start in (ids == tokenizer.token_to_id(ASSISTANT)).nonzero().flatten().tolist():
        ends = (ids[start + 1:] == end).nonzero().flatten()
        stop = start + 1 + int(ends[0]) + 1 if len(ends) else len(ids)
        mask[start + 1:stop] = True
    return mask


def counts_the_role_token(ids, tokenizer):  # wrong: <|assistant|> itself counted
    a = tokenizer.token_to_id(ASSISTANT)
    return [m or i == a for i, m in zip(ids, loss_mask(ids, tokenizer))]


def no_end(ids, tokenizer):  # wrong: the <|end|> closing a reply not counted (the model never learns to stop)
    e = tokenizer.token_to_id(END)
    return [m and i != e for i, m in zip(ids, loss_mask(ids, tokenizer))]


def every_message(ids, tokenizer):  # wrong: every message's text counts, the user's too
    roles = {tokenizer.token_to_id(t) for t in ROLES.values()}
    return [i not in roles for i in ids]


def masked_loss_mine(logits, targets):  # the notebook's
    counted = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * counted).sum() / counted.sum()


def masked_loss_cross_entropy(logits, targets):  # another correct form: what MiniGPT's loss does
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def masked_loss_float64(logits, targets):  # another correct form: the counted rows first, logsumexp in float64
    keep = targets != IGNORE_INDEX
    rows, t = logits[keep].double(), targets[keep]
    return (torch.logsumexp(rows, -1) - rows[torch.arange(len(t)), t]).mean().item()


def mean_over_all(logits, targets):  # wrong: divided by every position, counted or not
    counted = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(logp * counted).sum() / targets.numel()


def log_of_softmax(logits, targets):  # wrong for large logits: softmax underflows to 0, its log to -inf
    counted = targets != IGNORE_INDEX
    logp = torch.log(torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True))
    return -(logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * counted).sum() / counted.sum()


def ignored_read_as_token_0(logits, targets):  # wrong: the ignored positions scored as if their target were token 0
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.clamp(min=0).reshape(-1))


def trim_history(messages, tokenizer, budget):  # the notebook's
    system = messages[:1] if messages[0]["role"] == "system" else []
    talk = messages[len(system):]
    while len(talk) > 1 and len(encode_chat(tokenizer, system + talk, add_generation_prompt=True)) > budget:
        talk = talk[2:]
    return system + talk


def trim_by_sizes(messages, tokenizer, budget):  # another correct form: exchanges added newest first, by their sizes
    system = [m for m in messages if m["role"] == "system"]
    talk = [m for m in messages if m["role"] != "system"]
    kept = talk[-1:]
    for k in range(len(talk) - 3, -1, -2):
        if len(encode_chat(tokenizer, system + talk[k:k + 2] + kept, add_generation_prompt=True)) > budget:
            break
        kept = talk[k:k + 2] + kept
    return system + kept


def trim_single_messages(messages, tokenizer, budget):  # wrong: drops one message at a time, splitting exchanges
    kept = list(messages)
    while len(kept) > 1 and len(encode_chat(tokenizer, kept, add_generation_prompt=True)) > budget:
        kept = kept[1:]
    return kept


def trim_the_system_message_too(messages, tokenizer, budget):  # wrong: the system message dropped with the first exchange
    kept = list(messages)
    while len(kept) > 1 and len(encode_chat(tokenizer, kept, add_generation_prompt=True)) > budget:
        kept = kept[2:] if len(kept) > 2 else kept[-1:]
    return kept


def trim_without_the_prompt(messages, tokenizer, budget):  # wrong: measures the history without <|assistant|>
    system = messages[:1] if messages[0]["role"] == "system" else []
    talk = messages[len(system):]
    while len(talk) > 1 and len(encode_chat(tokenizer, system + talk)) > budget:
        talk = talk[2:]
    return system + talk


def last_reply_mask(ids, tokenizer):  # the notebook's
    mask = loss_mask(ids, tokenizer)
    a = tokenizer.token_to_id(ASSISTANT)
    last = max((i for i, t in enumerate(ids) if t == a), default=len(ids))
    return [m and i > last for i, m in enumerate(mask)]


def last_reply_backwards(ids, tokenizer):  # another correct form: from the end back to the last <|assistant|>
    a, e = tokenizer.token_to_id(ASSISTANT), tokenizer.token_to_id(END)
    mask = torch.zeros(len(ids), dtype=torch.long)
    if a not in ids:
        return mask
    start = len(ids) - 1 - ids[::-1].index(a)
    stop = next((i for i in range(start + 1, len(ids)) if ids[i] == e), len(ids) - 1)
    mask[start + 1:stop + 1] = 1
    return mask


def first_reply_only(ids, tokenizer):  # wrong: the first reply, not the last
    a = tokenizer.token_to_id(ASSISTANT)
    first = ids.index(a) if a in ids else len(ids)
    mask = loss_mask(ids, tokenizer)
    e = tokenizer.token_to_id(END)
    end = next((i for i in range(first, len(ids)) if ids[i] == e), len(ids))
    return [m and i <= end for i, m in enumerate(mask)]


def cut_reply(generated, end_id, stop_ids, max_new_tokens):  # the notebook's
    reply = []
    for token in generated[:max_new_tokens]:
        if token == end_id or token in stop_ids:
            return reply, token == end_id
        reply.append(token)
    return reply, False


def cut_reply_by_index(generated, end_id, stop_ids, max_new_tokens):  # another correct form: tensors
    window = torch.tensor(generated[:max_new_tokens], dtype=torch.long)
    stops = torch.isin(window, torch.tensor([end_id, *stop_ids], dtype=torch.long))
    if not stops.any():
        return window, False
    first = int(stops.nonzero()[0])
    return window[:first], bool(window[first] == end_id)


def ended_when_out_of_budget(generated, end_id, stop_ids, max_new_tokens):  # wrong: running out is no end
    reply, ended = cut_reply(generated, end_id, stop_ids, max_new_tokens)
    return reply, ended or len(reply) == min(len(generated), max_new_tokens)


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_render_chat: ([render_chat, render_by_parts],
                           [lambda m, g=False: "".join(ROLES[x["role"]] + x["content"] + END for x in m) + ASSISTANT * g,
                            lambda m, g=False: "".join(ROLES[x["role"]] + x["content"].strip() for x in m) + ASSISTANT * g,
                            lambda m, g=False: render(m, False),
                            lambda m, g=False: "\n".join(ROLES[x["role"]] + x["content"].strip() + END for x in m) + ASSISTANT * g],
                           lambda m, g=False: m),
    ex.check_add_chat_tokens: ([add_chat_tokens_mine, add_chat_tokens_in_place_params],
                               [untied, random_rows, grows_the_given_tokenizer, lambda m, t: (m, t)],
                               lambda m, t: (m, t)),
    ex.check_loss_mask: ([loss_mask_mine, loss_mask_by_spans], [counts_the_role_token, no_end, every_message],
                         lambda ids, t: ids),
    ex.check_masked_loss: ([masked_loss_mine, masked_loss_cross_entropy, masked_loss_float64],
                           [mean_over_all, log_of_softmax, ignored_read_as_token_0], lambda logits, targets: logits),
    ex.check_trim_history: ([trim_history, trim_by_sizes],
                            [trim_single_messages, trim_the_system_message_too, trim_without_the_prompt,
                             lambda m, t, b: m[-1:]], lambda m, t, b: m),
    ex.check_last_reply_mask: ([last_reply_mask, last_reply_backwards], [first_reply_only, loss_mask,
                                                                          lambda ids, t: no_end(ids, t)],
                               lambda ids, t: ids),
    ex.check_cut_reply: ([cut_reply, cut_reply_by_index],
                         [ended_when_out_of_budget, lambda g, e, s, n: cut_reply(g, e, [], n),
                          lambda g, e, s, n: (g[:g.index(e) + 1] if e in g[:n] else g[:n], e in g[:n])],
                         lambda g, e, s, n: g),
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_render_chat: render, ex.check_add_chat_tokens: add_chat_tokens, ex.check_loss_mask: loss_mask,
         ex.check_masked_loss: masked_loss}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_feedback_names_the_first_difference():
    message = ex.check_render_chat(CASES[ex.check_render_chat][1][0]).message
    assert message.startswith("render_chat([{'role': 'user', 'content': '  What is AI?\\n'}], True): expected ")
    assert "first difference at character 8: expected 'What is AI?<'" in message
    message = ex.check_loss_mask(no_end).message
    assert message.startswith("loss_mask_mine(<") and "ids of '<|user|>What is AI?<|end|>" in message
    assert re.search(r"first difference at \[\d+\]: expected True, got False", message), message
    message = ex.check_masked_loss(mean_over_all).message
    assert message.startswith("masked_loss_mine(tensor(2, 4, 5) [") and "expected " in message
    assert "divide by how many count" in message
    message = ex.check_masked_loss(log_of_softmax).message
    assert "got nan" in message or "got inf" in message, message
    message = ex.check_add_chat_tokens(untied).message
    assert "add_chat_tokens_mine(<MiniGPT vocab=300 C=16, tied head>, <tokenizer of 300 tokens>): expected " in message
    assert "lm_head.weight is not wte.weight" in message
    assert "the new rows of wte.weight are not each the mean" in ex.check_add_chat_tokens(random_rows).message
    assert "the tokenizer you were given changed" in ex.check_add_chat_tokens(grows_the_given_tokenizer).message
    message = ex.check_trim_history(trim_single_messages).message
    assert message.startswith("trim history(<7 messages, ") and "first difference at [0]" in message
    message = ex.check_cut_reply(ended_when_out_of_budget).message
    assert "cut reply([5, 6, 7, 8], 9, [1, 2, 3], 3): expected ([5, 6, 7], False), got ([5, 6, 7], True)" in message


def test_the_references_agree_with_the_package():
    """The exercises' references are what the package does where it does the same thing: trimming
    is `first_kept` over whole exchanges (as `Chat.prompt_ids`), and the last reply's mask is part
    of the whole mask."""
    tok = nb09._tokenizer()
    history = nb09._messages(nb09._AI, nb09._HELLO, nb09._FINE, nb09._MUSIC, ("Hi", None))
    for budget in range(1, 120):
        talk = history[:-1]
        encode = lambda turns: encode_chat(tok, turns + history[-1:], add_generation_prompt=True)  # noqa: E731
        first = chat_format.first_kept(talk, encode, budget, group=2)
        assert nb09._trimmed(history, tok, budget) == talk[first:] + history[-1:]
    ids = encode_chat(tok, history[:-1])
    last = nb09._last_reply(ids, tok)
    assert sum(last) > 0 and all(m for m, l in zip(loss_mask(ids, tok), last) if l)


def test_mutating_the_inputs_cannot_fool_a_check():
    """Every case gets its own copies: a piece that changes its arguments in place changes no case."""

    def emptying(messages, tokenizer, budget):
        kept = trim_history(messages, tokenizer, budget)
        messages.clear()
        return kept

    def zeroing(logits, targets):
        loss = masked_loss_mine(logits, targets)
        targets.fill_(IGNORE_INDEX)
        return loss

    assert ex.check_trim_history(emptying, hidden=True)
    assert ex.check_masked_loss(zeroing, hidden=True)


def test_the_checks_leave_the_global_rng_alone():
    assert_checks_leave_the_global_rng_alone(CASES)


# --- the notebook's step and exercise cells -----------------------------------------------------------


def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    assert_proofs_are_portable(NOTEBOOK, 8, 10)


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex, {"torch": torch})
