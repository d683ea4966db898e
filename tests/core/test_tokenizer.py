
import numpy as np
import pytest
from tokenizers import Tokenizer

from mini_llm.errors import UserError
from mini_llm.tokenizer import (
    EOT,
    decode,
    encode,
    encode_fast,
    load_tokenizer,
    save_tokenizer,
    split_for_encoding,
    tokenizer_hash,
    train_tokenizer,
    train_tokenizer_from_text,
)
from tests.conftest import make_text

TRICKY = [
    "Hello, world!",
    "emoji 👋🏽 and 🇬🇧 flags",
    "CJK 世界你好 and ハロー",
    "combining e\u0301 and a\u0308",
    "windows\r\nline\r\nends",
    "tabs\tand\t\ttabs",
    "NUL \x00 byte",
    "   leading spaces",
    "trailing spaces   ",
    f"special {EOT} token{EOT}",
    "",
    "Ωж",
]


@pytest.fixture(scope="module")
def tok(corpus_file):
    return train_tokenizer([corpus_file], vocab_size=400)


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_is_exact(tok, text):
    assert decode(tok, encode(tok, text)) == text


def test_special_token_is_one_id(tok):
    ids = encode(tok, f"a{EOT}b")
    assert tok.token_to_id(EOT) in ids
    assert decode(tok, [tok.token_to_id(EOT)]) == EOT  # not silently skipped (trap 5 in docs/TRAPS.md)


def test_save_and_load(tok, tmp_path):
    path = save_tokenizer(tok, tmp_path)
    assert path.name == "tokenizer.json"
    assert (tmp_path / "vocab.json").exists() and (tmp_path / "merges.txt").exists()
    again = Tokenizer.from_file(str(path))
    assert again.encode("the king spoke").ids == tok.encode("the king spoke").ids
    assert tokenizer_hash(load_tokenizer(tmp_path)) == tokenizer_hash(tok)


def test_loads_with_transformers_when_installed(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    path = save_tokenizer(tok, tmp_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert fast.encode("the king spoke") == tok.encode("the king spoke").ids


def test_small_corpus_gives_smaller_vocab_and_reports_it():
    tok = train_tokenizer_from_text("abc abc abd " * 50, vocab_size=8000)
    assert 257 <= tok.get_vocab_size() < 300


def test_vocab_size_range():
    with pytest.raises(UserError, match="vocab size 100 out of range"):
        train_tokenizer_from_text("abc", vocab_size=100)


def test_missing_and_corrupt_tokenizer_files(tmp_path):
    with pytest.raises(UserError, match="tokenizer file missing"):
        load_tokenizer(tmp_path / "tokenizer.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": ')
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        load_tokenizer(bad)


def test_parallel_encoding_equals_one_call(tok):
    text = make_text(3000, seed=3) + "\n\n\n  x\n\n \n y" + make_text(500, seed=4)
    pieces = split_for_encoding(text, chunk_chars=256)
    assert "".join(pieces) == text and len(pieces) > 10
    assert np.array_equal(encode_fast(tok, text), np.array(tok.encode(text).ids))


def test_parallel_encoding_equals_one_call_on_the_default_corpus(shakespeare):
    """The real corpus and the real vocab-8000 tokenizer: pieces give exactly one call's ids."""
    from mini_llm.data import split_text
    from mini_llm.tokenizer import encode_fast, train_tokenizer_from_text

    train_text, val_text = split_text(shakespeare.read_text(encoding="utf-8"), 0.1)
    tok = train_tokenizer_from_text(train_text, 8000, 2)
    assert tok.get_vocab_size() == 8000
    for text in (train_text, val_text):
        assert np.array_equal(encode_fast(tok, text), np.asarray(tok.encode(text).ids))
    # Trained on what one-call encoding sees: "\n\n" before a speaker's name is never one token.
    double = tok.token_to_id("ĊĊ")
    ids = np.asarray(tok.encode("To be.\n\nHAMLET:\nNo.\n\nHORATIO:\nAy.\n").ids)
    assert double is None or double not in ids


def test_pieces_train_the_same_tokenizer_as_one_text():
    from tokenizers.implementations import ByteLevelBPETokenizer

    from mini_llm.tokenizer import EOT, train_tokenizer_from_text

    text = make_text(2000, seed=5)
    whole = ByteLevelBPETokenizer()
    whole.train_from_iterator([text], vocab_size=400, min_frequency=2, special_tokens=[EOT], show_progress=False)
    assert train_tokenizer_from_text(text, 400, 2).to_str() == whole._tokenizer.to_str()
