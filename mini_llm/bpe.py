"""Byte-level BPE from scratch, for the course (in the spirit of karpathy/minbpe).

The pieces notebook 01 builds, then the tokenizer made of them:

    pair_counts, merge      count adjacent pairs; replace one pair by a new id
    learn_merges            training: merge the most frequent pair again and again
    encode_chunk            encoding: the earliest-learned pair present first
    token_bytes             decoding: the bytes each id stands for
    BPE                     split the text into chunks with GPT-2's regex (so merges never cross a
                            word and its leading space, punctuation or digits), train on each
                            *distinct* chunk once, weighted by its count; encode, decode, save, load

    >>> bpe = BPE(); bpe.train("aaabdaaabac", vocab_size=260, min_frequency=1)
    >>> bpe.encode("aaabdaaabac")
    [258, 100, 258, 97, 99]
"""

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path

import regex

from mini_llm.errors import UserError

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


def pair_counts(ids: list[int]) -> dict[tuple[int, int], int]:
    """{(a, b): how often b directly follows a in ids}; overlapping pairs count ("aaa" holds (a, a) twice)."""
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` (left to right) by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(words: list[list[int]], freqs: list[int], num_merges: int,
                 min_frequency: int = 2) -> tuple[dict[tuple[int, int], int], list[list[int]]]:
    """Up to `num_merges` merges learned on `words` (lists of ids, word i counted freqs[i] times):
    each time the most frequent adjacent pair (ties: the smallest pair) becomes the next id, 256,
    257, ... Stops early when the best pair occurs fewer than `min_frequency` times. Returns the
    merges {(a, b): new_id} in the order learned, and the words merged.

    Only the words that contain the merged pair are touched, and a heap finds the next best pair,
    so thousands of merges on a few MB of text take seconds."""
    words = [list(w) for w in words]
    stats: dict[tuple[int, int], int] = defaultdict(int)  # pair -> weighted count
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words holding it
    for i, word in enumerate(words):
        for pair, n in pair_counts(word).items():
            stats[pair] += n * freqs[i]
            where[pair].add(i)
    heap = [(-count, pair) for pair, count in stats.items()]
    heapq.heapify(heap)

    merges = {}
    for new_id in range(256, 256 + num_merges):
        pair = _pop_best(heap, stats)
        if pair is None or stats[pair] < min_frequency:
            break  # nothing frequent enough left: a smaller vocabulary than asked (trap 4 in docs/TRAPS.md)
        merges[pair] = new_id
        changed = set()
        for i in where.pop(pair):
            old, f = words[i], freqs[i]
            new = merge(old, pair, new_id)
            for p in zip(old, old[1:]):
                stats[p] -= f
                changed.add(p)
            for p in zip(new, new[1:]):
                stats[p] += f
                where[p].add(i)
                changed.add(p)
            words[i] = new
        del stats[pair]
        changed.discard(pair)
        for p in changed:
            heapq.heappush(heap, (-stats[p], p))
    return merges, words


def _pop_best(heap, stats):
    # Lazy deletion: an entry is current only if its count still matches.
    while heap:
        neg, pair = heapq.heappop(heap)
        if stats.get(pair) == -neg and -neg > 0:
            return pair
    return None


def encode_chunk(chunk: str, merges: dict[tuple[int, int], int]) -> list[int]:
    """The ids of one chunk: its UTF-8 bytes, then again and again the pair present that was
    merged earliest in training (the lowest new id), until no pair present has a merge."""
    ids = list(chunk.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge(ids, pair, merges[pair])
    return ids


def token_bytes(merges: dict[tuple[int, int], int]) -> dict[int, bytes]:
    """{id: the bytes it stands for}: the 256 bytes, then each merge in rank order."""
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new_id in sorted(merges.items(), key=lambda item: item[1]):
        vocab[new_id] = vocab[a] + vocab[b]
    return vocab


class BPE:
    def __init__(self, pattern: str = GPT2_PATTERN):
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        self.merges: dict[tuple[int, int], int] = {}  # (a, b) -> new token id, in training order
        self.vocab: dict[int, bytes] = token_bytes({})
        self.special: dict[str, int] = {}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special)

    # -- training ------------------------------------------------------------------------------
    def train(self, text: str, vocab_size: int, min_frequency: int = 2) -> None:
        if vocab_size < 257:
            raise UserError(f"vocab size {vocab_size} too small: byte-level BPE needs at least 257 (256 bytes + {EOT})")
        chunks = Counter(self._regex.findall(text))  # each distinct chunk once, with its count
        words = [list(chunk.encode("utf-8")) for chunk in chunks]
        # 256 bytes + the merges + <|endoftext|> (the last id)
        self.merges, _ = learn_merges(words, list(chunks.values()), vocab_size - 257, min_frequency)
        self.vocab, self._cache = token_bytes(self.merges), {}
        self.special = {EOT: len(self.vocab)}

    # -- encoding ------------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = self._cache[chunk] = encode_chunk(chunk, self.merges)
        return ids

    def encode(self, text: str) -> list[int]:
        ids = []
        parts = regex.split("(" + regex.escape(EOT) + ")", text) if self.special else [text]
        for part in parts:
            if part in self.special:
                ids.append(self.special[part])
                continue
            for chunk in self._regex.findall(part):
                ids.extend(self._encode_chunk(chunk))
        return ids

    def decode(self, ids) -> str:
        inverse = {i: s.encode("utf-8") for s, i in self.special.items()}
        data = b"".join(inverse[i] if i in inverse else self.vocab[i] for i in ids)
        return data.decode("utf-8", errors="replace")

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        state = {"type": "mini_llm.bpe", "pattern": self.pattern,
                 "merges": [[a, b] for (a, b) in self.merges], "special": self.special}
        Path(path).write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "BPE":
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
            assert state["type"] == "mini_llm.bpe"
        except FileNotFoundError:
            raise UserError(f"{path}: no such BPE file; train one and save it first") from None
        except Exception:
            raise UserError(f"{path}: not a mini_llm BPE file (corrupt or wrong format)") from None
        bpe = cls(state["pattern"])
        bpe.merges = {(a, b): new_id for new_id, (a, b) in enumerate(state["merges"], start=256)}
        bpe.vocab = token_bytes(bpe.merges)
        bpe.special = dict(state["special"])
        return bpe
