
import numpy as np
import pytest
import torch

from mini_llm.data import (
    TextDataset,
    eval_windows,
    get_batch,
    load_tokens,
    make_loader,
    prepare_dataset,
    split_text,
    token_dtype,
)
from mini_llm.errors import UserError
from mini_llm.tokenizer import train_tokenizer_from_text
from tests.conftest import make_text


def test_split_at_line_boundary():
    text = "".join(f"line {i}\n" for i in range(100))
    train, val = split_text(text, 0.1)
    assert train + val == text and train.endswith("\n")
    assert 0.08 < len(val) / len(text) < 0.13
    with pytest.raises(UserError, match="val fraction"):
        split_text(text, 1.5)


def test_sliding_windows_are_the_seeds():
    ds = TextDataset(np.arange(10), block_size=4)
    assert len(ds) == 6
    x, y = ds[0]
    assert x.tolist() == [0, 1, 2, 3] and y.tolist() == [1, 2, 3, 4]
    x, y = ds[5]
    assert x.tolist() == [5, 6, 7, 8] and y.tolist() == [6, 7, 8, 9]
    strided = TextDataset(np.arange(10), block_size=4, stride=4)
    assert len(strided) == 2 and strided[1][0].tolist() == [4, 5, 6, 7]
    with pytest.raises(UserError, match="cannot fill one window"):
        TextDataset(np.arange(4), block_size=4)


def test_loader_is_reproducible():
    a = [x.tolist() for x, _ in make_loader(np.arange(100), 8, 4, seed=1)]
    b = [x.tolist() for x, _ in make_loader(np.arange(100), 8, 4, seed=1)]
    assert a == b and len(a) == (100 - 8) // 4


def test_random_batches_shift_by_one():
    ids = np.arange(1000)
    x, y = get_batch(ids, 5, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 16)
    assert torch.equal(y, x + 1)


def test_eval_windows_cover_the_split_in_order():
    x, y = eval_windows(np.arange(101), 10)
    assert x.shape == (10, 10) and x[0, 0] == 0 and x[-1, -1] == 99 and y[-1, -1] == 100


def test_dtype():
    assert token_dtype(8000) == np.uint16 and token_dtype(70000) == np.uint32


def test_prepare_caches_and_rebuilds(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(make_text(400, seed=1))
    first = prepare_dataset([path], vocab_size=300, folder=tmp_path / "prep", log=lambda *a: None)
    assert not first.meta.get("reused") and first.train.dtype == np.uint16
    assert first.tokenizer.decode(first.val.tolist()) == path.read_text()[first.meta["train_chars"]:]
    again = prepare_dataset([path], vocab_size=300, folder=tmp_path / "prep", log=lambda *a: None)
    assert again.meta["reused"] and np.array_equal(again.train, first.train)
    notes = []
    path.write_text(make_text(400, seed=2))  # the corpus changed: never reuse silently
    third = prepare_dataset([path], vocab_size=300, folder=tmp_path / "prep", log=notes.append)
    assert not third.meta.get("reused") and notes and "changed" in notes[0]


def test_cache_from_another_tokenizer_is_refused(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(make_text(400, seed=1))
    prep = prepare_dataset([path], vocab_size=300, folder=tmp_path / "prep", log=lambda *a: None)
    other = train_tokenizer_from_text("something else entirely " * 100, 270)
    with pytest.raises(UserError, match="encoded with a different tokenizer"):
        load_tokens(prep.folder, other)
    (prep.folder / "train.bin").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match="missing or truncated"):
        load_tokens(prep.folder, prep.tokenizer)


def test_split_too_short_for_block(prepared):
    with pytest.raises(UserError, match=r"the val split has [\d,]+ tokens, needs at least 3001"):
        prepared.check_block_size(3000)


# --- streaming prepare: bounded memory, the ids and the tokenizer of the one-shot path ----------

def _tricky_files(folder):
    """Files that test every block rule: multi-byte characters across block ends, CRLF, blank-line
    paragraphs (only the second kind of cut), a line longer than a block, <|endoftext|> lines."""
    folder.mkdir()
    plays = make_text(700, seed=11)
    paragraphs = "\n\n".join(" ".join(make_text(30, seed=s).split()) + " Ωжé 世界 👋" for s in range(12))
    stories = "".join(f"Once upon a time {make_text(8, seed=s)}<|endoftext|>\n" for s in range(40))
    texts = [plays, paragraphs.replace("\n", "\r\n"), "x" * 3000 + "\n" + stories]
    for i, text in enumerate(texts):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8", newline="")
    return sorted(folder.glob("*.txt")), "\n\n".join(texts)


@pytest.fixture()
def small_blocks(monkeypatch):
    """Blocks, pieces and encoding batches a few dozen characters long: every boundary is exercised."""
    from mini_llm import corpus, tokenizer

    monkeypatch.setattr(corpus, "READ_BYTES", 61)
    monkeypatch.setattr(tokenizer, "PIECE_CHARS", 40)
    monkeypatch.setattr(tokenizer, "BATCH_CHARS", 500)


def test_streaming_prepare_gives_the_one_shot_ids_and_tokenizer(small_blocks, tmp_path):
    files, text = _tricky_files(tmp_path / "corpus")
    prep = prepare_dataset(files, vocab_size=400, folder=tmp_path / "prep", log=lambda *a: None, progress=False)
    train_text, val_text = split_text(text, 0.1)
    tok = train_tokenizer_from_text(train_text, 400)
    assert prep.tokenizer.to_str() == tok.to_str()
    assert isinstance(prep.train, np.memmap) and prep.train.dtype == np.uint16
    assert np.array_equal(prep.train, tok.encode(train_text).ids)
    assert np.array_equal(prep.val, tok.encode(val_text).ids)
    assert prep.meta["train_chars"] == len(train_text) and prep.meta["val_chars"] == len(val_text)
    assert prep.meta["tokenizer_trained_on"] == f"the whole training split ({len(train_text):,} characters)"
    assert "tokenizer trained on the whole training split" in "\n".join(prep.report())


def test_split_point_is_split_texts_cut(monkeypatch, tmp_path):
    import random

    from mini_llm import corpus

    rng = random.Random(3)
    for trial in range(40):
        monkeypatch.setattr(corpus, "READ_BYTES", rng.choice([3, 7, 50, 4096]))
        words = [rng.choice(["ab", "é", "世界", " ", "\n", "\n\n", "x" * rng.randint(1, 300)]) for _ in range(400)]
        text = "".join(words) + "." * corpus.MIN_CORPUS_CHARS
        path = tmp_path / f"{trial}.txt"
        path.write_text(text, encoding="utf-8")
        scanned = corpus.scan_corpus([path])
        assert scanned.text == text and scanned.chars == len(text) and scanned.lines == text.count("\n")
        for fraction in (0.01, 0.1, 0.5, 0.99):
            assert scanned.split_point(fraction) == len(split_text(text, fraction)[0]), (trial, fraction)


def test_a_large_training_split_trains_the_tokenizer_on_a_stated_sample(small_blocks, monkeypatch, tmp_path):
    from mini_llm import corpus, data, tokenizer

    monkeypatch.setattr(data, "TOKENIZER_SAMPLE_CHARS", 2000)
    files, text = _tricky_files(tmp_path / "corpus")
    prep = prepare_dataset(files, vocab_size=400, folder=tmp_path / "prep", log=lambda *a: None, progress=False)
    scanned = corpus.scan_corpus(files)
    cut = scanned.split_point(0.1)
    every = -(-cut // 2000)
    sample = [scanned.read(b) for offset, b in scanned.spans(0, cut) if b.path and offset + b.chars <= cut][::every]
    assert prep.tokenizer.to_str() == tokenizer.train_tokenizer_from_texts(sample, 400).to_str()
    assert prep.meta["tokenizer_trained_on"] == (f"a sample of the training split: 1 block in {every} "
                                                 f"({sum(map(len, sample)):,} of {cut:,} characters)")
    assert 1500 < sum(map(len, sample)) <= 2000 + 200
    assert np.array_equal(prep.train, prep.tokenizer.encode(text[:cut]).ids)  # still one call's ids
    assert np.array_equal(prep.val, prep.tokenizer.encode(text[cut:]).ids)


def test_an_interrupted_prepare_leaves_no_cache_a_later_run_trusts(monkeypatch, tmp_path):
    from mini_llm import data

    path = tmp_path / "c.txt"
    path.write_text(make_text(400, seed=1))
    folder = tmp_path / "prep"
    prepare_dataset([path], vocab_size=300, folder=folder, log=lambda *a: None)
    path.write_text(make_text(400, seed=2))  # changed: the next prepare rebuilds, and is stopped

    def interrupted(tok, texts):
        yield np.zeros(5, dtype=np.int64)
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "encode_iterable", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([path], vocab_size=300, folder=folder, log=lambda *a: None)
    assert not (folder / "meta.json").exists() and not list(folder.glob(".*tmp"))
    monkeypatch.undo()
    again = prepare_dataset([path], vocab_size=300, folder=folder, log=lambda *a: None)
    assert not again.meta.get("reused")
    assert np.array_equal(again.train, again.tokenizer.encode(split_text(path.read_text())[0]).ids)


def test_bad_utf8_is_found_at_its_byte_offset_in_any_block(monkeypatch, tmp_path):
    from mini_llm import corpus

    monkeypatch.setattr(corpus, "READ_BYTES", 64)
    data = ("é" * 500 + "\n").encode() * 3
    path = tmp_path / "bad.txt"
    path.write_bytes(data[:1501] + b"\xff" + data[1501:])
    with pytest.raises(UserError, match=r"invalid byte 0xff at byte offset 1501\)"):
        corpus.scan_corpus([path])
    path.write_bytes(data + "é".encode()[:1])  # a character cut off at the very end
    with pytest.raises(UserError, match=f"invalid byte 0xc3 at byte offset {len(data)}"):
        corpus.scan_corpus([path])


def test_memmapped_tokens_give_the_batches_and_windows_of_an_array(prepared):
    train = prepared.train
    assert isinstance(train, np.memmap)
    in_memory = torch.from_numpy(np.array(train).astype(np.int64))
    for seed in range(3):
        a = get_batch(train, 8, 16, torch.Generator().manual_seed(seed))
        b = get_batch(in_memory, 8, 16, torch.Generator().manual_seed(seed))
        assert all(torch.equal(p, q) and p.dtype == torch.int64 for p, q in zip(a, b))
    mapped, array = TextDataset(train, 16, 5), TextDataset(in_memory, 16, 5)
    assert len(mapped) == len(array) and all(torch.equal(p, q) for i in (0, 7, len(array) - 1)
                                             for p, q in zip(mapped[i], array[i]))
    indices = torch.tensor([3, 0, 9])
    assert all(torch.equal(p, q) for p, q in zip(mapped.batch(indices), array.batch(indices)))
    for limit in (None, 5):
        assert all(torch.equal(p, q) for p, q in zip(eval_windows(prepared.val, 16, limit),
                                                     eval_windows(np.array(prepared.val), 16, limit)))


def test_streaming_prepare_of_the_default_corpus_is_one_encode_call_per_split(shakespeare, monkeypatch, tmp_path):
    """The real corpus and the real vocab-8000 tokenizer, read in odd-sized blocks and encoded in
    small batches: the tokenizer of the whole training split, and each split's ids of one call."""
    from mini_llm import corpus, tokenizer

    monkeypatch.setattr(corpus, "READ_BYTES", 100_003)
    monkeypatch.setattr(tokenizer, "BATCH_CHARS", 50_000)
    prep = prepare_dataset([shakespeare], folder=tmp_path / "prep", log=lambda *a: None, progress=False)
    train_text, val_text = split_text(shakespeare.read_text(encoding="utf-8"), 0.1)
    assert prep.tokenizer.to_str() == train_tokenizer_from_text(train_text, 8000, 2).to_str()
    for ids, text in ((prep.train, train_text), (prep.val, val_text)):
        assert np.array_equal(ids, prep.tokenizer.encode(text).ids)
