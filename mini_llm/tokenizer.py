"""Byte-level BPE tokenizer over HuggingFace `tokenizers` (its ByteLevelBPETokenizer).

Byte-level means every string round-trips exactly: text is first mapped to bytes, so emoji,
CJK, `\r\n`, NUL and leading spaces all survive (spaces show up as `Ġ` in the vocabulary).
`<|endoftext|>` is a special token. The whole pipeline is saved as one `tokenizer.json`
(plus the older two-file form, `vocab.json` + `merges.txt`, which loses the special token:
trap 3 in docs/TRAPS.md).
"""

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations import ByteLevelBPETokenizer

from mini_llm.errors import UserError
from mini_llm.files import atomic_write_bytes
from mini_llm.paths import display

EOT = "<|endoftext|>"
VOCAB_SIZE = 8000  # the course's tokenizer: `mini-llm prepare` and `mini-llm train` default to it
MIN_FREQUENCY = 2  # a pair must occur this often to become a merge
MIN_VOCAB = 257  # 256 byte tokens + <|endoftext|>
MAX_VOCAB = 1 << 20  # beyond this the embedding table, not the token array, is the problem

# Cut points for encoding in pieces (in parallel, or a stream a piece at a time), where the
# pieces give exactly the ids of one call. The byte-level pre-tokenizer (GPT-2's split regex) never
# joins a non-space to a space that follows it, and splits a run of whitespace before a word into
# the run minus its last character (`\s+(?!\S)`) and that last character (which starts the next
# pre-token). So two kinds of cut are safe:
#   1. after a single newline between two characters that are not whitespace ("foul.\n|Foul"),
#   2. inside a run of line breaks, before its last "\n" when a non-space follows ("foul.\n|\nFoul"):
#      the piece ends in the run minus its last character, which `\s+(?!\S)` takes whole at the
#      end of a text as it does before that "\n" in the whole text.
# A cut after a whole run would not be safe: a piece ending in "\n\n" keeps it as one pre-token
# (`ĊĊ`) where the whole text has `Ċ`, `Ċ` (trap 12). Not before "<" in the second kind: it may open
# <|endoftext|>, which ends the text the regex sees, so there the whole run is one pre-token.
# Format characters that some regex engines count as spaces are excluded from "non-space" too.
_SOLID = r"[^\s\u180e\u200b-\u200d\u2060\ufeff]"
_CUT = re.compile(rf"(?<={_SOLID}\n)(?={_SOLID})|(?<=[\r\n])(?=\n(?!<){_SOLID})")
PIECE_CHARS = 4096  # text is cut into pieces of about this many characters
BATCH_CHARS = 1 << 20  # a stream is encoded this many characters at a time (pieces in parallel)


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise UserError(
            f"vocab size {vocab_size} out of range: use {MIN_VOCAB} (bytes + <|endoftext|>) to {MAX_VOCAB:,}"
        )


def train_tokenizer(files, vocab_size: int = VOCAB_SIZE, min_frequency: int = MIN_FREQUENCY, show_progress: bool = False) -> Tokenizer:
    """Train a byte-level BPE on text files. The result may hold fewer tokens than asked (trap 4):
    read the real size with `tok.get_vocab_size()`."""
    check_vocab_size(vocab_size)
    bpe = ByteLevelBPETokenizer()
    bpe.train(
        [str(f) for f in files],
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        show_progress=show_progress,
    )
    return bpe._tokenizer  # the plain `Tokenizer`: what `tokenizer.json` holds


def train_tokenizer_from_text(text: str, vocab_size: int = VOCAB_SIZE, min_frequency: int = MIN_FREQUENCY) -> Tokenizer:
    return train_tokenizer_from_texts([text], vocab_size, min_frequency)


def train_tokenizer_from_texts(texts: Iterable[str], vocab_size: int = VOCAB_SIZE,
                               min_frequency: int = MIN_FREQUENCY) -> Tokenizer:
    """Train on texts, each counted as a text of its own and read piece by piece: the trainer keeps
    word counts, not text. For one big text given in chunks, pass `cut_pieces(chunks)`: pieces cut
    where encoding is unchanged count the words of the whole text."""
    check_vocab_size(vocab_size)
    bpe = ByteLevelBPETokenizer()
    # Many small pieces let the Rust trainer count words in parallel (one string would not); cut
    # where encoding is unchanged, they give the same word counts, so the same merges, as one text.
    pieces = (piece for text in texts for piece in cut_pieces([text]))
    bpe.train_from_iterator(pieces, vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=[EOT], show_progress=False)
    return bpe._tokenizer


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> Path:
    """Write `tokenizer.json` (the whole pipeline) and the two-file form `vocab.json` + `merges.txt`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    atomic_write_bytes(path, tok.to_str(pretty=True).encode("utf-8"))
    tok.model.save(str(out_dir))  # vocab.json + merges.txt
    return path


def load_tokenizer(path: Path) -> Tokenizer:
    """Load `tokenizer.json` (or a folder holding it); missing or corrupt files fail in one line."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise UserError(f"{display(path)}: tokenizer file missing; run `mini-llm prepare` to train one")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception:
        raise UserError(f"{display(path)}: not a valid tokenizer.json (corrupt or truncated); run `mini-llm prepare` again") from None
    if tok.token_to_id(EOT) is None:
        raise UserError(f"{display(path)}: tokenizer has no {EOT} token; train it with `mini-llm prepare`")
    return tok


def tokenizer_hash(tok_or_path) -> str:
    """sha256 of the canonical tokenizer JSON: ties checkpoints and token caches to one tokenizer."""
    if isinstance(tok_or_path, Tokenizer):
        data = tok_or_path.to_str().encode()
    else:
        path = Path(tok_or_path)
        data = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path)).to_str().encode()
    return hashlib.sha256(data).hexdigest()


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text).ids


def decode(tok: Tokenizer, ids) -> str:
    # skip_special_tokens=False: otherwise <|endoftext|> silently vanishes (trap 5).
    return tok.decode(list(ids), skip_special_tokens=False)


def split_for_encoding(text: str, chunk_chars: int | None = None) -> list[str]:
    """Split text into ~chunk_chars pieces at cut points that keep ids identical."""
    return list(cut_pieces([text], chunk_chars))


def cut_pieces(chunks: Iterable[str], piece_chars: int | None = None) -> Iterator[str]:
    """Re-cut a stream of text, given in chunks cut anywhere, into pieces of about `piece_chars`
    that end at cut points: encoded one by one, they give the ids of the whole text. Holds one
    chunk plus the text since the last cut, whatever the length of the stream (a stretch with no
    cut point at all, such as one huge line, is held whole)."""
    piece_chars = piece_chars or PIECE_CHARS
    text, scan = "", 0  # the text not yet given out; where the next cut may be
    for chunk in chunks:
        text += chunk
        while (match := _CUT.search(text, max(scan, piece_chars))) is not None:
            yield text[: match.start()]
            text, scan = text[match.start() :], 0
        # A cut needs the character after it (and the "\n" after that): the last one is not decided yet.
        scan = max(len(text) - 1, 0)
    if text:
        yield text


def encode_iterable(tok: Tokenizer, chunks: Iterable[str], batch_chars: int | None = None) -> Iterator[np.ndarray]:
    """Encode a stream of text lazily: yields int64 id arrays, a batch of pieces at a time, that
    concatenated equal `encode` of the whole text. Memory: one batch (`batch_chars` of text and its
    encodings), not the stream."""
    batch_chars = batch_chars or BATCH_CHARS
    batch, size = [], 0
    for piece in cut_pieces(chunks):
        batch.append(piece)
        size += len(piece)
        if size >= batch_chars:
            yield _encode_batch(tok, batch)
            batch, size = [], 0
    if batch:
        yield _encode_batch(tok, batch)


def encode_fast(tok: Tokenizer, text: str) -> np.ndarray:
    """Encode a large text with `encode_batch` (parallel in Rust); same ids as `encode`."""
    return np.concatenate([np.zeros(0, dtype=np.int64), *encode_iterable(tok, [text])])


def _encode_batch(tok: Tokenizer, pieces: list[str]) -> np.ndarray:
    """The pieces' ids, one after the other (encoded in parallel in Rust)."""
    encodings = tok.encode_batch_fast(pieces) if hasattr(tok, "encode_batch_fast") else tok.encode_batch(pieces)
    return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
