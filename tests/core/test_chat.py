"""The Chat class: the conversation encoded as one text, trimmed by whole turns to fit the context."""

import types

from mini_llm.chat import Chat
from mini_llm.checkpoint import load_checkpoint
from mini_llm.generate import Sampling, TorchRunner
from tests.conftest import make_text


def _tokenizer_that_knows_double_newlines():
    """A tokenizer that learned the `ĊĊ` merge (as one trained on unsafe pieces did)."""
    from tokenizers.implementations import ByteLevelBPETokenizer

    from mini_llm.tokenizer import EOT

    bpe = ByteLevelBPETokenizer()
    lines = make_text(400, seed=2).splitlines(keepends=True)
    bpe.train_from_iterator([line + "\n" for line in lines], vocab_size=400, min_frequency=2,
                            special_tokens=[EOT], show_progress=False)
    assert bpe._tokenizer.token_to_id("ĊĊ") is not None
    return bpe._tokenizer


def test_chat_prompt_is_one_encoding_of_the_conversation():
    from mini_llm.chat import Chat

    tok = _tokenizer_that_knows_double_newlines()
    chat = Chat(types.SimpleNamespace(block_size=256), tok, max_new_tokens=16)
    chat.turns = [(chat.user, "the king spoke"), (chat.bot, "and the queen"), (chat.user, "fair words")]
    ids = chat.prompt_ids("what news?")
    text = tok.decode(ids)
    assert text.startswith(f"{chat.user}:\nthe king spoke\n\n") and text.endswith(f"what news?\n\n{chat.bot}:\n")
    assert ids == tok.encode(text).ids
    assert tok.token_to_id("ĊĊ") not in ids


def test_chat_trims_whole_turns_and_still_encodes_once():
    from mini_llm.chat import Chat

    tok = _tokenizer_that_knows_double_newlines()
    chat = Chat(types.SimpleNamespace(block_size=64), tok, max_new_tokens=16)
    chat.turns = [(chat.user if i % 2 == 0 else chat.bot, f"the king and queen spoke {i}") for i in range(12)]
    ids = chat.prompt_ids("and then?")
    assert len(ids) <= 64 - 16
    text = tok.decode(ids)
    assert text.startswith(f"{chat.bot}:\n") or text.startswith(f"{chat.user}:\n")  # whole turns only
    assert ids == tok.encode(text).ids


def test_default_speakers_are_names_the_corpus_knows(shakespeare, prepared):
    from mini_llm.chat import BOT, USER, Chat

    chat = Chat(types.SimpleNamespace(block_size=32), prepared.tokenizer)  # a pretrained model's: a play
    assert (chat.user, chat.bot) == (USER, BOT) and not chat.tuned
    text = shakespeare.read_text(encoding="utf-8")
    for name in (USER, BOT):
        assert text.count(f"\n{name}:\n") > 100, name


def test_history_stays_inside_the_window(trained_run):
    model, tok, _ = load_checkpoint(trained_run)
    notes = []
    chat = Chat(TorchRunner(model), tok, sampling=Sampling(0.0, None, None, 0), max_new_tokens=8, notice=notes.append)
    for i in range(6):
        "".join(chat.reply(f"the king spoke {i}"))
    ids = chat.prompt_ids("and then?")
    assert len(ids) <= model.config.block_size - 8
    assert tok.decode(ids).endswith("HORATIO:\nand then?\n\nHAMLET:\n")
    assert len(chat.turns) == 12
    chat.reset()
    assert chat.turns == []
    long_ids = chat.prompt_ids("word " * 100)
    assert len(long_ids) == model.config.block_size - 8 and notes
