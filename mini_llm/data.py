"""Token datasets: a corpus encoded once to a cached token array, split into train and val,
served as every sliding window (`TextDataset`) or as nanoGPT-style random-offset batches.

Chat fine-tuning trains on `PackedRows` instead: whole conversations packed into rows of the
context, with targets that the loss skips (`IGNORE_INDEX`) outside the assistant's replies
(`conversations.py` builds them).

Layout of a prepared dataset folder (`data/prepared/<corpus>-v<vocab>/`):
    tokenizer.json, vocab.json, merges.txt   the tokenizer trained on this corpus
    train.bin, val.bin                       token ids, uint16 (uint32 for vocabularies > 65,536)
    meta.json                                corpus and tokenizer hashes, counts, timings
A cache is reused only while the corpus files and the tokenizer are byte-for-byte unchanged.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mini_llm.corpus import check_corpus, resolve_sources
from mini_llm.errors import UserError
from mini_llm.files import atomic_write_bytes, sha256_file
from mini_llm.paths import data_dir, display
from mini_llm.tokenizer import (
    MIN_FREQUENCY,
    VOCAB_SIZE,
    check_vocab_size,
    encode_fast,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_tokenizer_from_text,
)

VAL_FRACTION = 0.1  # the last tenth of the text is held out
IGNORE_INDEX = -100  # a target the loss skips: F.cross_entropy's default ignore_index, so MiniGPT's loss skips it too
CACHE_VERSION = 2  # 2: pieces cut only where encoding is unchanged (caches made by 1 hold stray `ĊĊ` ids)


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """The last `val_fraction` of the text is validation, cut at a line boundary."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val fraction {val_fraction} out of range: use a number between 0 and 1, e.g. 0.1")
    cut = text.rfind("\n", 0, int(len(text) * (1 - val_fraction))) + 1
    if cut <= 0:
        cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


@dataclass
class Prepared:
    """A prepared dataset: tokenizer, train/val token arrays and what was measured making them."""

    folder: Path
    tokenizer: object
    train: np.ndarray
    val: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def report(self) -> list[str]:
        m = self.meta
        lines = [
            f"tokenizer: {display(self.folder / 'tokenizer.json')} | vocab {self.vocab_size:,}"
            + (f" (asked {m['vocab_size_asked']:,}: the corpus has fewer merges)" if m["vocab_size_asked"] != self.vocab_size else ""),
            f"tokens: train {len(self.train):,} | val {len(self.val):,} | {m['chars_per_token']:.2f} characters/token",
        ]
        if "seconds" in m:
            s = m["seconds"]
            lines.append(f"time: tokenizer {s['tokenizer']:.2f} s | encode {s['encode']:.2f} s"
                         + ("  (reused the cache)" if m.get("reused") else ""))
        return lines

    def check_block_size(self, block_size: int) -> None:
        for name, ids in (("train", self.train), ("val", self.val)):
            if len(ids) < block_size + 1:
                raise UserError(
                    f"the {name} split has {len(ids):,} tokens, needs at least {block_size + 1} (block_size + 1): "
                    "use more text, a smaller --block-size or a different --val-fraction"
                )


def _corpus_key(files: list[Path]) -> list[list[str]]:
    return [[str(Path(f).resolve()), sha256_file(f)] for f in files]


def prepared_folder(files: list[Path], vocab_size: int, tokenizer=None) -> Path:
    """data/prepared/<corpus>-v<vocab> for a tokenizer trained here, <corpus>-tok<hash> for a given one."""
    name = files[0].stem if len(files) == 1 else Path(files[0]).parent.name or "corpus"
    suffix = f"tok{tokenizer_hash(tokenizer)[:12]}" if tokenizer is not None else f"v{vocab_size}"
    return data_dir() / "prepared" / f"{name}-{suffix}"


def load_tokens(folder: Path, tokenizer) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load cached train/val arrays, refusing arrays that were encoded with another tokenizer."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{display(meta_path)}: missing; run `mini-llm prepare` to encode the corpus") from None
    except json.JSONDecodeError:
        raise UserError(f"{display(meta_path)}: corrupt; run `mini-llm prepare` again") from None
    if meta.get("tokenizer_sha256") != tokenizer_hash(tokenizer):
        raise UserError(
            f"{display(folder)}: the cached token arrays were encoded with a different tokenizer; "
            "run `mini-llm prepare` again to re-encode"
        )
    dtype = np.dtype(meta["dtype"])
    arrays = []
    for split in ("train", "val"):
        path = folder / f"{split}.bin"
        if not path.exists() or path.stat().st_size != meta[f"{split}_tokens"] * dtype.itemsize:
            raise UserError(f"{display(path)}: missing or truncated; run `mini-llm prepare` again")
        arrays.append(np.fromfile(path, dtype=dtype))
    return arrays[0], arrays[1], meta


def prepare_dataset(sources, vocab_size: int = VOCAB_SIZE, min_frequency: int = MIN_FREQUENCY,
                    val_fraction: float = VAL_FRACTION,
                    folder: Path | None = None, log=print, tokenizer=None) -> Prepared:
    """Train (or reuse) the tokenizer for `sources` and encode train/val token arrays (or reuse them).

    With `tokenizer` (fine-tuning, resuming), no tokenizer is trained: the text is encoded with
    that one, so the ids mean what the model learned they mean.
    """
    files = resolve_sources(sources)
    if tokenizer is not None:
        vocab_size, min_frequency = tokenizer.get_vocab_size(), None
    check_vocab_size(vocab_size)
    folder = Path(folder) if folder else prepared_folder(files, vocab_size, tokenizer)
    key = {"version": CACHE_VERSION, "corpus": _corpus_key(files), "vocab_size_asked": vocab_size,
           "min_frequency": min_frequency, "val_fraction": val_fraction,
           "given_tokenizer": tokenizer_hash(tokenizer) if tokenizer is not None else None}

    meta_path = folder / "meta.json"
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if old and all(old.get(k) == v for k, v in key.items()) and (folder / "tokenizer.json").exists():
        tok = load_tokenizer(folder)
        try:
            train, val, meta = load_tokens(folder, tok)
            meta["reused"] = True
            return Prepared(folder, tok, train, val, meta)
        except UserError as e:
            log(f"note: {e}; re-encoding")
    elif old:
        log(f"note: the corpus or settings changed since {display(folder)} was made; rebuilding it")

    text = check_corpus(files)
    train_text, val_text = split_text(text, val_fraction)
    t0 = time.perf_counter()
    # Train the tokenizer on the training split only, so validation text stays unseen.
    tok = tokenizer if tokenizer is not None else train_tokenizer_from_text(train_text, vocab_size, min_frequency)
    t1 = time.perf_counter()
    dtype = token_dtype(tok.get_vocab_size())
    train = encode_fast(tok, train_text).astype(dtype)
    val = encode_fast(tok, val_text).astype(dtype)
    t2 = time.perf_counter()

    save_tokenizer(tok, folder)
    atomic_write_bytes(folder / "train.bin", train.tobytes())
    atomic_write_bytes(folder / "val.bin", val.tobytes())
    meta = dict(key, tokenizer_sha256=tokenizer_hash(tok), vocab_size=tok.get_vocab_size(), dtype=np.dtype(dtype).name,
                train_tokens=len(train), val_tokens=len(val), train_chars=len(train_text), val_chars=len(val_text),
                chars_per_token=len(text) / max(1, len(train) + len(val)),
                seconds={"tokenizer": t1 - t0, "encode": t2 - t1})
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
    return Prepared(folder, tok, train, val, meta)


# ---------------------------------------------------------------------------------------------
# Windows and batches


class TextDataset(Dataset):
    """Sliding windows: item i is x = ids[s:s+T], y = ids[s+1:s+T+1] with s = i*stride.

    stride 1 gives a window at every offset; stride T gives non-overlapping windows.
    """

    def __init__(self, ids, block_size: int, stride: int = 1):
        if stride < 1:
            raise UserError(f"stride {stride} must be at least 1")
        self.ids = torch.from_numpy(np.asarray(ids).astype(np.int64))
        if len(self.ids) < block_size + 1:
            raise UserError(f"{len(self.ids):,} tokens cannot fill one window of {block_size} + 1 tokens; use more text or a smaller block size")
        self.block_size, self.stride = block_size, stride

    def __len__(self) -> int:
        return (len(self.ids) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int):
        s = i * self.stride
        chunk = self.ids[s : s + self.block_size + 1]
        return chunk[:-1], chunk[1:]  # (T,), (T,)

    def batch(self, indices: torch.Tensor):
        """Items `indices` (B,) stacked, in one indexing step: x, y of shape (B, T)."""
        return windows_at(self.ids, indices * self.stride, self.block_size)


class PackedRows(Dataset):
    """Rows of whole sequences packed up to block_size + 1 tokens: x (N, T) the inputs, y (N, T) the
    targets, IGNORE_INDEX where the loss does not count (padding, prompts). Unlike `TextDataset`'s
    windows, a row never starts or ends inside a sequence."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if x.ndim != 2 or x.shape != y.shape or len(x) == 0:
            raise UserError(f"packed rows need inputs and targets of one shape (N, T), N >= 1 (got {tuple(x.shape)}, {tuple(y.shape)})")
        self.x, self.y = x.long(), y.long()

    @property
    def counted(self) -> int:
        """How many targets count in the loss."""
        return int((self.y != IGNORE_INDEX).sum())

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]  # (T,), (T,)

    def batch(self, indices: torch.Tensor):
        """Rows `indices` (B,): x, y of shape (B, T)."""
        return self.x[indices], self.y[indices]


def make_loader(ids, block_size: int, batch_size: int, stride: int = 1, shuffle: bool = True,
                seed: int = 0, drop_last: bool = True) -> DataLoader:
    """A DataLoader over sliding windows, shuffled reproducibly by `seed`."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TextDataset(ids, block_size, stride), batch_size=batch_size, shuffle=shuffle,
                      generator=g, drop_last=drop_last)


def get_batch(ids, batch_size: int, block_size: int, generator: torch.Generator | None = None):
    """nanoGPT-style batch: `batch_size` windows at random offsets. Returns x, y of shape (B, T)."""
    data = ids if isinstance(ids, torch.Tensor) else torch.from_numpy(np.asarray(ids).astype(np.int64))
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    return windows_at(data, starts, block_size)


def windows_at(data: torch.Tensor, starts: torch.Tensor, block_size: int):
    """Inputs and targets of the windows starting at `starts` (B,): x, y of shape (B, T)."""
    windows = data[starts[:, None] + torch.arange(block_size + 1)]  # (B, T+1)
    return windows[:, :-1], windows[:, 1:]


def eval_windows(ids, block_size: int, max_windows: int | None = None):
    """The fixed validation set: non-overlapping windows over the whole split, in order (of packed
    rows: the rows, in order)."""
    if isinstance(ids, PackedRows):
        return ids.x[: max_windows or None], ids.y[: max_windows or None]
    data = torch.from_numpy(np.asarray(ids).astype(np.int64))
    n = (len(data) - 1) // block_size
    if max_windows:
        n = min(n, max_windows)
    x = data[: n * block_size].view(n, block_size)
    y = data[1 : n * block_size + 1].view(n, block_size)
    return x, y
