
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
