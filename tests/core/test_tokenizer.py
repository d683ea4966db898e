
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


# --- streams: pieces cut where the ids provably stay the same --------------------------------

ALPHABET = ["a", "Zb", " ", "  ", "\n", "\n", "\n", "\r", "\t", "\u00a0", "\u2028", "\u3000", "\x0b", "\x85",
            "é", "1", ".", "'s", EOT, "\u200b", "\ufeff", "<"]


@pytest.fixture(scope="module")
def space_tok():
    """A tokenizer with merges for runs of whitespace (`ĊĊ`, `čĊ`, ...): where a cut changed the
    pre-tokens, its ids would differ."""
    return train_tokenizer_from_text(make_text(2000, seed=1) + "\r\n\n \t\n\n\nx" * 100, 400)


def test_every_cut_point_keeps_the_ids(space_tok):
    """Both kinds of cut (after "x\\n" before a non-space; inside a run of line breaks, before its
    last "\\n") on random strings of whitespace, words, special tokens and format characters."""
    import random

    from mini_llm.tokenizer import _CUT

    tok = space_tok
    rng = random.Random(0)
    checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 30)))
        whole = tok.encode(text).ids
        for cut in (m.start() for m in _CUT.finditer(text)):
            checked += 1
            assert tok.encode(text[:cut]).ids + tok.encode(text[cut:]).ids == whole, (text, cut)
    assert checked > 500


def test_blank_line_paragraphs_can_be_cut(tok):
    """One-line paragraphs between blank lines have no single newline between words: the second
    kind of cut still splits them (and Windows line ends), so memory stays bounded."""
    for sep in ("\n\n", "\r\n\r\n", "\n\n\n"):
        text = sep.join(make_text(400, seed=7).replace("\n", " ").split(". ")) + "\n"
        pieces = split_for_encoding(text, chunk_chars=256)
        assert "".join(pieces) == text and len(pieces) > 10, repr(sep)
        assert np.array_equal(encode_fast(tok, text), np.array(tok.encode(text).ids))


def test_a_stream_in_any_chunks_encodes_like_one_call(tok):
    import random

    from mini_llm.tokenizer import cut_pieces, encode_iterable

    rng = random.Random(1)
    text = make_text(600, seed=8) + "\n\n\n  x\r\n\r\ny" + "".join(rng.choice(ALPHABET) for _ in range(3000))
    bounds = sorted(rng.sample(range(1, len(text)), 40))
    chunks = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)])]
    pieces = list(cut_pieces(chunks, piece_chars=64))
    assert "".join(pieces) == text and len(pieces) > 20
    batches = list(encode_iterable(tok, chunks, batch_chars=500))
    assert len(batches) > 5 and all(b.dtype == np.int64 for b in batches)
    assert np.array_equal(np.concatenate(batches), tok.encode(text).ids)
    assert list(encode_iterable(tok, [])) == [] and len(encode_fast(tok, "")) == 0


def test_a_tokenizer_trained_on_a_stream_is_the_one_of_the_whole_text():
    from mini_llm.tokenizer import cut_pieces, train_tokenizer_from_texts

    text = make_text(1500, seed=9).replace(".\n", ".\n\n")
    chunks = [text[i : i + 777] for i in range(0, len(text), 777)]
    streamed = train_tokenizer_from_texts(cut_pieces(chunks, piece_chars=100), 400, 2)
    assert streamed.to_str() == train_tokenizer_from_text(text, 400, 2).to_str()
