"""Conversation data: JSONL checked line by line, the held-out split by question, trimming to the
context, packing, and the offline chatterbot-corpus default."""

import json

import pytest
import torch

from mini_llm import chat_format
from mini_llm.conversations import (
    Conversation,
    build_chat_corpus,
    fit_ids,
    pack,
    prepare_chat,
    read_conversations,
    split_by_question,
)
from mini_llm.data import IGNORE_INDEX
from mini_llm.errors import UserError
from mini_llm.model import GPTConfig, MiniGPT
from tests.conftest import make_conversations, write_jsonl


def _user(text):
    return {"role": "user", "content": text}


def _bot(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def chat_tok(prepared):
    model = MiniGPT(GPTConfig(vocab_size=prepared.vocab_size, block_size=32, n_embd=16, n_head=2, n_layer=1))
    return chat_format.add_chat_tokens(model, prepared.tokenizer)[1]


def test_reads_conversations_and_skips_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."}, _user(" Hi "), _bot("Hello.")],
                                "topic": "greetings"}) + "\n\n" + json.dumps({"messages": [_user("Q"), _bot("A")]}) + "\n")
    first, second = read_conversations(path)
    assert first.messages[1] == _user("Hi") and first.where.endswith("c.jsonl:1") and second.where.endswith("c.jsonl:3")
    assert first.prompt == first.messages[:2] and first.question == "hi"


@pytest.mark.parametrize("line, says", [
    ('{"messages": [', "not valid JSON"),
    ('["a list"]', 'non-empty "messages" list'),
    ('{"messages": []}', 'non-empty "messages" list'),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "role 'bot'; use system, user or assistant"),
    ('{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "A"}]}', "message 1 (user) has empty content"),
    ('{"messages": [{"role": "user", "content": "Q"}]}', "ends with the user, not the assistant"),
    ('{"messages": [{"role": "assistant", "content": "A"}]}', "message 1 is the assistant's where the user speaks"),
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]}',
     "message 2 is the system's where the assistant speaks"),
    ('{"messages": [{"role": "user", "content": "Q<|end|>"}, {"role": "assistant", "content": "A"}]}',
     "contains <|end|>, a token of the chat format"),
])
def test_each_bad_line_is_one_error_naming_the_file_and_line(tmp_path, line, says):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": [_user("Q"), _bot("A")]}) + "\n" + line + "\n")
    with pytest.raises(UserError, match="bad.jsonl:2: ") as e:
        read_conversations(path)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: not UTF-8 \(invalid byte 0xe9"):
        read_conversations(path)


def test_missing_empty_and_folder_are_refused(tmp_path):
    for path, says in ((tmp_path / "none.jsonl", "no such file"), (tmp_path, "is a folder")):
        with pytest.raises(UserError, match=says):
            read_conversations(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no conversations in it"):
        read_conversations(tmp_path / "empty.jsonl")


def test_the_split_is_by_question_and_ignores_order_case_and_spaces():
    conversations = [Conversation([_user(f"Question {i % 50}?" if i % 3 else f"  question {i % 50}? "), _bot(str(i))], "x")
                     for i in range(300)]
    train, val = split_by_question(conversations, 0.2)
    assert {c.question for c in train}.isdisjoint({c.question for c in val})
    assert 0 < len({c.question for c in val}) < 50 and len(train) + len(val) == 300
    again_train, again_val = split_by_question(conversations[::-1], 0.2)
    assert {c.question for c in again_val} == {c.question for c in val}


def test_a_long_conversation_loses_its_oldest_whole_exchanges(chat_tok):
    talk = [m for i in range(6) for m in (_user(f"the king {i}?"), _bot(f"the queen {i}."))]
    conversation = Conversation([{"role": "system", "content": "Be kind."}, *talk], "f:1")
    full = chat_format.encode_chat(chat_tok, conversation.messages)
    ids, dropped = fit_ids(conversation, chat_tok, len(full) - 1)
    assert dropped >= 1 and len(ids) <= len(full) - 1
    text = chat_tok.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|system|>Be kind.<|end|><|user|>") and text.endswith("the queen 5.<|end|>")
    assert ids == chat_format.encode_chat(chat_tok, [conversation.messages[0], *talk[2 * dropped:]])
    assert fit_ids(conversation, chat_tok, 10)[0] is None  # the last exchange alone does not fit: left out


def test_packing_keeps_conversations_whole_and_counts_only_the_assistant(chat_tok):
    sequences = [chat_format.encode_chat(chat_tok, c["messages"]) for c in make_conversations()[:6]]
    T = 2 * max(map(len, sequences))
    rows = pack(sequences, chat_tok, T)
    assert rows.x.shape[1] == T and len(rows) < len(sequences)  # several in a row
    assert rows.counted == sum(sum(chat_format.loss_mask(s, chat_tok)) for s in sequences)
    starts = (rows.x == chat_tok.token_to_id(chat_format.USER)).sum()
    assert starts == len(sequences)  # every conversation is in, none cut in two
    one_each = pack(sequences, chat_tok, T, one_per_row=True)
    assert len(one_each) == len(sequences) and one_each.counted == rows.counted
    first = sequences[0]
    assert one_each.x[0, : len(first) - 1].tolist() == first[:-1]
    assert (one_each.y[0, len(first) - 1 :] == IGNORE_INDEX).all()  # padding is never a target


def test_prepare_chat_splits_packs_and_refuses_what_cannot_train(chat_file, chat_tok, prepared, tmp_path):
    notes = []
    data = prepare_chat([chat_file], chat_tok, 32, seed=0, log=notes.append)
    assert data.meta["train_conversations"] + data.meta["val_conversations"] == 64
    assert data.prompts and all(p[-1]["role"] == "user" for p in data.prompts)
    assert torch.equal(prepare_chat([chat_file], chat_tok, 32, seed=0, log=notes.append).train.x, data.train.x)
    assert not torch.equal(prepare_chat([chat_file], chat_tok, 32, seed=1, log=notes.append).train.x, data.train.x)
    # one conversation per row, training rows too: a reply is learned from its question, never from
    # the conversations that happened to share its row (packed, a small model learned those instead)
    starts = chat_tok.token_to_id(chat_format.USER)
    assert data.meta["train_conversations"] == len(data.train.x)
    assert all(int((row == starts).sum()) == 1 and int(row[0]) == starts for row in data.train.x)
    with pytest.raises(UserError, match="no chat tokens"):
        prepare_chat([chat_file], prepared.tokenizer, 32)
    with pytest.raises(UserError, match="no train conversation fits the context of 8 tokens"):
        prepare_chat([chat_file], chat_tok, 8, log=notes.append)
    assert any("left out" in n for n in notes)
    one = write_jsonl(tmp_path / "one.jsonl", make_conversations()[:1])
    with pytest.raises(UserError, match="1 distinct questions leave no"):
        prepare_chat([one], chat_tok, 32)


def test_the_default_set_is_chatterbot_corpus_in_english(tmp_path):
    path = build_chat_corpus(tmp_path / "chat.jsonl")
    conversations = read_conversations(path)  # every line passes the checks
    assert len(conversations) > 800
    assert len({tuple(map(str, c.messages)) for c in conversations}) == len(conversations)  # repeats kept once
    assert any(c.question == "what is ai?" for c in conversations)
    assert build_chat_corpus(tmp_path / "again.jsonl").read_bytes() == path.read_bytes()
    train, val = split_by_question(conversations)
    assert 0.05 < len(val) / len(conversations) < 0.2
