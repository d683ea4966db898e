"""Byte-level BPE from scratch, for the course (in the spirit of karpathy/minbpe).

Training: split the text into chunks with GPT-2's regex (so merges never cross a word and its
leading space, punctuation or digits), count each *unique* chunk once, then repeatedly merge
the most frequent adjacent pair of tokens into a new token. Only the words that contain the
merged pair are touched, and a heap finds the next best pair, so vocab 8000 on a few MB of
text takes seconds, not hours.

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


class BPE:
    def __init__(self, pattern: str = GPT2_PATTERN):
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        self.merges: dict[tuple[int, int], int] = {}  # (a, b) -> new token id, in training order
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        self.special: dict[str, int] = {}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special)

    # -- training ------------------------------------------------------------------------------
    def train(self, text: str, vocab_size: int, min_frequency: int = 2, verbose: bool = False) -> None:
        if vocab_size < 257:
            raise UserError(f"vocab size {vocab_size} too small: byte-level BPE needs at least 257 (256 bytes + {EOT})")
        chunks = Counter(self._regex.findall(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunks]
        freqs = list(chunks.values())

        stats: dict[tuple[int, int], int] = defaultdict(int)  # pair -> weighted count
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words holding it
        for i, word in enumerate(words):
            for pair in zip(word, word[1:]):
                stats[pair] += freqs[i]
                where[pair].add(i)
        heap = [(-count, pair) for pair, count in stats.items()]
        heapq.heapify(heap)

        self.merges, self.vocab, self._cache = {}, {i: bytes([i]) for i in range(256)}, {}
        for new_id in range(256, vocab_size - 1):  # the last id is <|endoftext|>
            pair = self._pop_best(heap, stats)
            if pair is None or stats[pair] < min_frequency:
                break  # nothing frequent enough left: a smaller vocabulary than asked (trap 4 in docs/TRAPS.md)
            self.merges[pair] = new_id
            self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
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
            if verbose and (new_id - 255) % 500 == 0:
                print(f"merge {new_id - 255}: {self.vocab[new_id]!r}")
        self.special = {EOT: len(self.vocab)}

    @staticmethod
    def _pop_best(heap, stats):
        # Lazy deletion: an entry is current only if its count still matches.
        while heap:
            neg, pair = heapq.heappop(heap)
            if stats.get(pair) == -neg and -neg > 0:
                return pair
        return None

    # -- encoding ------------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = list(chunk.encode("utf-8"))
            while len(ids) >= 2:
                # The pair that was merged earliest in training is applied first.
                pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, float("inf")))
                if pair not in self.merges:
                    break
                ids = merge(ids, pair, self.merges[pair])
            self._cache[chunk] = ids
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
        for new_id, (a, b) in enumerate(state["merges"], start=256):
            bpe.merges[(a, b)] = new_id
            bpe.vocab[new_id] = bpe.vocab[a] + bpe.vocab[b]
        bpe.special = dict(state["special"])
        return bpe
