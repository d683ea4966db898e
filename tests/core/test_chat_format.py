"""The chat format: template (and its Jinja twin), one encoding, the loss mask, the masked loss, and
the vocabulary grown by the chat tokens."""

import math
import types

import pytest
import torch

from mini_llm import chat_format
from mini_llm.chat_format import ASSISTANT, END, USER, add_chat_tokens, encode_chat, loss_mask, masked_loss, render, targets
from mini_llm.data import IGNORE_INDEX
from mini_llm.model import GPTConfig, MiniGPT

TALK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is AI?"},
        {"role": "assistant", "content": "The science of thinking machines."}, {"role": "user", "content": " And you? "},
        {"role": "assistant", "content": "A small one."}]


@pytest.fixture(scope="module")
def chat_tok(prepared):
    model = MiniGPT(GPTConfig(vocab_size=prepared.vocab_size, block_size=32, n_embd=16, n_head=2, n_layer=1))
    return add_chat_tokens(model, prepared.tokenizer)[1]


def test_render_and_its_jinja_twin_agree():
    import jinja2

    template = jinja2.Environment().from_string(chat_format.JINJA)
    for gen in (False, True):
        assert template.render(messages=TALK, add_generation_prompt=gen) == render(TALK, gen)
    assert render(TALK[:2], True) == "<|system|>Be brief.<|end|><|user|>What is AI?<|end|><|assistant|>"
    assert chat_format.metadata()["chat_template"] == chat_format.JINJA


def test_one_encoding_round_trips_and_equals_the_pieces(chat_tok):
    ids = encode_chat(chat_tok, TALK)
    assert chat_tok.decode(ids, skip_special_tokens=False) == render(TALK)
    pieces = [chat_tok.encode(t).ids for m in TALK for t in (chat_format.ROLES[m["role"]], m["content"].strip(), END)]
    assert ids == [i for piece in pieces for i in piece]  # the special tokens split the text: no token spans two parts
    assert all(chat_tok.token_to_id(t) in ids for t in (USER, ASSISTANT, END))


def test_the_mask_counts_the_assistants_tokens_and_end_only(chat_tok):
    ids = encode_chat(chat_tok, TALK)
    mask = loss_mask(ids, chat_tok)
    counted = chat_tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert counted == "The science of thinking machines.<|end|>A small one.<|end|>"
    y = targets(ids, chat_tok)
    assert len(y) == len(ids) - 1
    assert [t for t in y if t != IGNORE_INDEX] == [i for i, m in zip(ids, mask) if m]


def test_changing_a_user_token_changes_no_counted_target(chat_tok):
    ids = encode_chat(chat_tok, TALK)
    where = ids.index(chat_tok.token_to_id(USER)) + 2  # inside the first user message
    other = list(ids)
    other[where] = (ids[where] + 1) % chat_tok.token_to_id(chat_format.SYSTEM)  # another ordinary token
    assert targets(other, chat_tok) == targets(ids, chat_tok)
    assert targets(ids, chat_tok)[where - 1] == IGNORE_INDEX  # the user token is never a target


def test_masked_loss_by_hand_and_equal_to_the_models():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])  # (1, 3, 3)
    y = torch.tensor([[0, IGNORE_INDEX, 1]])
    by_hand = (-math.log(math.e**2 / (math.e**2 + 2)) - math.log(1 / (2 + math.e**3))) / 2
    assert masked_loss(logits, y).item() == pytest.approx(by_hand, rel=1e-6)

    torch.manual_seed(0)
    model = MiniGPT(GPTConfig(vocab_size=50, block_size=8, n_embd=16, n_head=2, n_layer=1))
    x = torch.randint(0, 50, (2, 8))
    y = torch.randint(0, 50, (2, 8))
    y[:, :3] = IGNORE_INDEX
    logits, loss = model(x, y)
    assert torch.allclose(masked_loss(logits, y), loss)
    logits = logits.detach().requires_grad_()
    masked_loss(logits, y).backward()
    assert logits.grad[:, :3].abs().sum() == 0  # an ignored position teaches nothing


@pytest.mark.parametrize("tie", [True, False])
def test_adding_the_tokens_grows_the_vocabulary_and_keeps_the_old_model(prepared, tie):
    torch.manual_seed(0)
    model = MiniGPT(GPTConfig(vocab_size=prepared.vocab_size, block_size=16, n_embd=16, n_head=2, n_layer=1,
                              tie_head=tie)).eval()
    tok = prepared.tokenizer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    grown, chat_tok = add_chat_tokens(model, tok)
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drawn from the global RNG
    V = prepared.vocab_size
    assert chat_format.is_chat_tokenizer(chat_tok) and not chat_format.is_chat_tokenizer(tok)
    assert chat_tok.get_vocab_size() == grown.config.vocab_size == V + 4
    assert sorted(chat_format.token_ids(chat_tok).values()) == list(range(V, V + 4))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched
    assert torch.equal(grown.wte.weight[:V], before["wte.weight"])
    assert torch.allclose(grown.wte.weight[V:], before["wte.weight"].mean(0).expand(4, -1))
    assert (grown.lm_head.weight is grown.wte.weight) == tie
    assert torch.allclose(grown.lm_head.weight[V:], before["lm_head.weight"].mean(0).expand(4, -1))
    x = torch.randint(0, V, (1, 10))
    with torch.no_grad():
        assert torch.allclose(grown(x)[0][..., :V], model(x)[0])  # the old tokens' logits are the old model's
    assert add_chat_tokens(grown, chat_tok) == (grown, chat_tok)  # once is enough


def test_a_tokenizer_without_the_tokens_is_refused_in_one_line(prepared):
    from mini_llm.errors import UserError

    with pytest.raises(UserError, match="not chat-tuned"):
        loss_mask([1, 2, 3], prepared.tokenizer)


def test_chat_in_the_template_trims_whole_exchanges_and_encodes_once(chat_tok):
    from mini_llm.chat import Chat

    chat = Chat(types.SimpleNamespace(block_size=128), chat_tok, max_new_tokens=16)
    assert chat.tuned and (chat.user, chat.bot) == ("user", "assistant")
    chat.turns = [(chat.user if i % 2 == 0 else chat.bot, f"the king and queen spoke {i}") for i in range(12)]
    ids = chat.prompt_ids("and then?")
    assert len(ids) <= 128 - 16
    text = chat_tok.decode(ids, skip_special_tokens=False)
    assert text.startswith(USER) and text.endswith(f"{USER}and then?{END}{ASSISTANT}")  # whole exchanges only
    assert ids == chat_tok.encode(text).ids
    assert "spoke 11" in text and "spoke 0" not in text  # the newest exchanges stay, the oldest go
