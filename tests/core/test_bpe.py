import pytest

from mini_llm.bpe import BPE, EOT
from mini_llm.errors import UserError
from tests.core.test_tokenizer import TRICKY


def test_wikipedia_example():
    bpe = BPE()
    bpe.train("aaabdaaabac", vocab_size=260, min_frequency=1)
    assert bpe.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert bpe.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


@pytest.fixture(scope="module")
def trained(corpus_file):
    bpe = BPE()
    bpe.train(corpus_file.read_text(), vocab_size=400)
    return bpe


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip(trained, text):
    assert trained.decode(trained.encode(text)) == text


def test_special_token(trained):
    ids = trained.encode(f"a{EOT}b")
    assert ids[1] == trained.special[EOT] == trained.vocab_size - 1


def test_save_load(trained, tmp_path):
    trained.save(tmp_path / "bpe.json")
    again = BPE.load(tmp_path / "bpe.json")
    text = "the king and the queen"
    assert again.encode(text) == trained.encode(text)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not a mini_llm BPE file"):
        BPE.load(tmp_path / "bad.json")


def test_too_small_vocab():
    with pytest.raises(UserError, match="at least 257"):
        BPE().train("abc", 200)


def test_compression_matches_the_library_on_the_default_corpus(tmp_path):
    """Same vocab size, same pre-split: characters per token within 2% of HF tokenizers."""
    from mini_llm.corpus import build_shakespeare
    from mini_llm.tokenizer import encode_fast, train_tokenizer_from_text

    text = build_shakespeare(tmp_path / "s.txt").read_text()
    bpe = BPE()
    bpe.train(text, 1000)
    ours = len(text) / len(bpe.encode(text))
    hf = len(text) / len(encode_fast(train_tokenizer_from_text(text, 1000), text))
    assert abs(ours - hf) / hf < 0.02, (ours, hf)
