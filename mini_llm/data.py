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

Preparing streams the corpus block by block, so its memory does not grow with the corpus: the
tokenizer trains from an iterator (on a stated sample of a very large training split), the ids
are appended to the .bin files as they come, and meta.json, written last, is what makes a cache
trusted. The token arrays are memory-mapped: batches and windows read only the rows they need.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mini_llm.corpus import Corpus, progress_bar, resolve_sources, scan_corpus
from mini_llm.errors import UserError
from mini_llm.files import atomic_file, atomic_write_bytes, sha256_file
from mini_llm.paths import data_dir, display
from mini_llm.tokenizer import (
    MIN_FREQUENCY,
    VOCAB_SIZE,
    check_vocab_size,
    cut_pieces,
    encode_iterable,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_tokenizer_from_texts,
)

VAL_FRACTION = 0.1  # the last tenth of the text is held out
IGNORE_INDEX = -100  # a target the loss skips: F.cross_entropy's default ignore_index, so MiniGPT's loss skips it too
# 3: streamed, the tokenizer of a large corpus trained on a sample (the key says how large);
# 2: pieces cut only where encoding is unchanged (caches made by 1 hold stray `ĊĊ` ids)
CACHE_VERSION = 3
# The tokenizer trains on the whole training split up to this many characters, and on a sample
# of that size beyond: its trainer's memory grows with the distinct words it sees, and merges
# learned from 250 MB of text are those of more.
TOKENIZER_SAMPLE_CHARS = 250_000_000


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
        ]
        if m.get("tokenizer_trained_on"):
            lines.append(f"tokenizer trained on {m['tokenizer_trained_on']}")
        lines.append(f"tokens: train {len(self.train):,} | val {len(self.val):,} | {m['chars_per_token']:.2f} characters/token")
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
    """Open cached train/val arrays (memory-mapped), refusing arrays encoded with another tokenizer."""
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
        path, count = folder / f"{split}.bin", meta[f"{split}_tokens"]
        if not path.exists() or path.stat().st_size != count * dtype.itemsize:
            raise UserError(f"{display(path)}: missing or truncated; run `mini-llm prepare` again")
        # Memory-mapped: nothing is read until a batch or a window asks for its rows.
        arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype))
    return arrays[0], arrays[1], meta


def prepare_dataset(sources, vocab_size: int = VOCAB_SIZE, min_frequency: int = MIN_FREQUENCY,
                    val_fraction: float = VAL_FRACTION,
                    folder: Path | None = None, log=print, tokenizer=None, progress: bool = True) -> Prepared:
    """Train (or reuse) the tokenizer for `sources` and encode train/val token arrays (or reuse them).

    `sources`: files or folders, or a `Corpus` already scanned. With `tokenizer` (fine-tuning,
    resuming), no tokenizer is trained: the text is encoded with that one, so the ids mean what
    the model learned they mean. Memory stays bounded whatever the corpus size (the module's
    docstring); progress bars show when a stage takes more than a few seconds.
    """
    corpus = sources if isinstance(sources, Corpus) else None
    files = corpus.files if corpus is not None else resolve_sources(sources)
    if tokenizer is not None:
        vocab_size, min_frequency = tokenizer.get_vocab_size(), None
    check_vocab_size(vocab_size)
    folder = Path(folder) if folder else prepared_folder(files, vocab_size, tokenizer)
    key = {"version": CACHE_VERSION, "corpus": _corpus_key(files), "vocab_size_asked": vocab_size,
           "min_frequency": min_frequency, "val_fraction": val_fraction,
           "given_tokenizer": tokenizer_hash(tokenizer) if tokenizer is not None else None,
           "tokenizer_sample_chars": TOKENIZER_SAMPLE_CHARS if tokenizer is None else None}

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

    corpus = corpus if corpus is not None else scan_corpus(files, progress)
    cut = corpus.split_point(val_fraction)
    # From here until the new meta.json, nothing in the folder is trusted: an interrupted prepare
    # leaves no cache that a later run would reuse (and no temporary files from an earlier one).
    meta_path.unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):
        stale.unlink()
    t0 = time.perf_counter()
    # Train the tokenizer on the training split only, so validation text stays unseen.
    tok, trained_on = (tokenizer, None) if tokenizer is not None else \
        _train_tokenizer(corpus, cut, vocab_size, min_frequency, progress)
    t1 = time.perf_counter()
    dtype = token_dtype(tok.get_vocab_size())
    with progress_bar(corpus.bytes, "encode", progress) as bar:
        counts = [_write_tokens(folder / f"{split}.bin", tok, corpus.texts(a, b, bar), dtype, bar)
                  for split, a, b in (("train", 0, cut), ("val", cut, corpus.chars))]
    t2 = time.perf_counter()

    save_tokenizer(tok, folder)
    meta = dict(key, tokenizer_sha256=tokenizer_hash(tok), vocab_size=tok.get_vocab_size(), dtype=np.dtype(dtype).name,
                train_tokens=counts[0], val_tokens=counts[1], train_chars=cut, val_chars=corpus.chars - cut,
                chars_per_token=corpus.chars / max(1, sum(counts)), tokenizer_trained_on=trained_on,
                seconds={"scan": corpus.seconds, "tokenizer": t1 - t0, "encode": t2 - t1})
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())  # last: now the cache is whole
    train, val, meta = load_tokens(folder, tok)
    return Prepared(folder, tok, train, val, meta)


def _train_tokenizer(corpus: Corpus, cut: int, vocab_size: int, min_frequency: int, progress: bool):
    """The tokenizer of the training split (characters [0, cut)): trained on all of it while it
    fits TOKENIZER_SAMPLE_CHARS, else on every k-th block of it; and what it was trained on, in words."""
    spans = list(corpus.spans(0, cut))
    if cut <= TOKENIZER_SAMPLE_CHARS:
        with progress_bar(sum(b.end - b.start for _, b in spans), "train tokenizer", progress) as bar:
            tok = train_tokenizer_from_texts(cut_pieces(corpus.texts(0, cut, bar)), vocab_size, min_frequency)
        return tok, f"the whole training split ({cut:,} characters)"
    every = math.ceil(cut / TOKENIZER_SAMPLE_CHARS)
    sample = [b for offset, b in spans if b.path is not None and offset + b.chars <= cut][::every]
    with progress_bar(sum(b.end - b.start for b in sample), "train tokenizer", progress) as bar:
        tok = train_tokenizer_from_texts(_read_each(corpus, sample, bar), vocab_size, min_frequency)
    return tok, (f"a sample of the training split: 1 block in {every} "
                 f"({sum(b.chars for b in sample):,} of {cut:,} characters)")


def _read_each(corpus: Corpus, blocks, bar):
    for block in blocks:
        bar.update(block.end - block.start)
        yield corpus.read(block)


def _write_tokens(path: Path, tok, texts, dtype, bar) -> int:
    """Encode a stream of text into a token file, appending ids as they come; returns the count.
    The file appears (renamed from a temporary one) only when it is whole."""
    count, start = 0, time.perf_counter()
    with atomic_file(path) as f:
        for ids in encode_iterable(tok, texts):
            f.write(ids.astype(dtype).tobytes())
            count += len(ids)
            bar.set_postfix_str(f"{path.stem} {count:,} tokens, {count / (time.perf_counter() - start):,.0f} tokens/s",
                                refresh=False)
    return count


# ---------------------------------------------------------------------------------------------
# Windows and batches


class TextDataset(Dataset):
    """Sliding windows: item i is x = ids[s:s+T], y = ids[s+1:s+T+1] with s = i*stride.

    stride 1 gives a window at every offset; stride T gives non-overlapping windows. `ids` is kept
    as given (a memory-mapped token file stays on disk): each item reads its own T + 1 ids.
    """

    def __init__(self, ids, block_size: int, stride: int = 1):
        if stride < 1:
            raise UserError(f"stride {stride} must be at least 1")
        self.ids = ids if isinstance(ids, torch.Tensor) else np.asarray(ids)
        if len(self.ids) < block_size + 1:
            raise UserError(f"{len(self.ids):,} tokens cannot fill one window of {block_size} + 1 tokens; use more text or a smaller block size")
        self.block_size, self.stride = block_size, stride

    def __len__(self) -> int:
        return (len(self.ids) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int):
        s = i * self.stride
        chunk = as_tensor(self.ids[s : s + self.block_size + 1])
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


def as_tensor(ids) -> torch.Tensor:
    """Token ids (a tensor, a numpy or memory-mapped array, a list) as an int64 tensor: the rows
    asked for are read and converted, never the whole file."""
    if isinstance(ids, torch.Tensor):
        return ids.long()
    return torch.from_numpy(np.asarray(ids).astype(np.int64))


def make_loader(ids, block_size: int, batch_size: int, stride: int = 1, shuffle: bool = True,
                seed: int = 0, drop_last: bool = True) -> DataLoader:
    """A DataLoader over sliding windows, shuffled reproducibly by `seed`."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TextDataset(ids, block_size, stride), batch_size=batch_size, shuffle=shuffle,
                      generator=g, drop_last=drop_last)


def get_batch(ids, batch_size: int, block_size: int, generator: torch.Generator | None = None):
    """nanoGPT-style batch: `batch_size` windows at random offsets. Returns x, y of shape (B, T)."""
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    return windows_at(ids, starts, block_size)


def windows_at(data, starts: torch.Tensor, block_size: int):
    """Inputs and targets of the windows starting at `starts` (B,): x, y of shape (B, T).
    `data`: a 1-D tensor, or a numpy (memory-mapped) array, of which only these rows are read."""
    index = starts[:, None] + torch.arange(block_size + 1)  # (B, T+1)
    windows = data[index] if isinstance(data, torch.Tensor) else as_tensor(np.asarray(data)[index.numpy()])
    return windows[:, :-1], windows[:, 1:]


def eval_windows(ids, block_size: int, max_windows: int | None = None, first: int = 0):
    """The fixed validation set: non-overlapping windows over the whole split, in order (of packed
    rows: the rows, in order). With `first` and `max_windows`: windows first .. first + max_windows
    - 1 alone, and only their tokens are read (the split may be a memory-mapped file)."""
    n = eval_window_count(ids, block_size, max_windows, first)
    if isinstance(ids, PackedRows):
        return ids.x[first : first + n], ids.y[first : first + n]
    data = as_tensor(ids[first * block_size : (first + n) * block_size + 1])
    x = data[: n * block_size].view(n, block_size)
    y = data[1 : n * block_size + 1].view(n, block_size)
    return x, y


def eval_window_count(ids, block_size: int, max_windows: int | None = None, first: int = 0) -> int:
    """How many windows `eval_windows` gives: those from `first` on that fit, at most `max_windows`."""
    n = max((len(ids) if isinstance(ids, PackedRows) else (len(ids) - 1) // block_size) - first, 0)
    return min(n, max_windows) if max_windows else n
