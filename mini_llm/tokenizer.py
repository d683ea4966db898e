"""Byte-level BPE tokenizer over HuggingFace `tokenizers` (its ByteLevelBPETokenizer).

Byte-level means every string round-trips exactly: text is first mapped to bytes, so emoji,
CJK, `\r\n`, NUL and leading spaces all survive (spaces show up as `Ġ` in the vocabulary).
`<|endoftext|>` is a special token. The whole pipeline is saved as one `tokenizer.json`
(plus the older two-file form, `vocab.json` + `merges.txt`, which loses the special token:
trap 3 in docs/TRAPS.md).
"""

import hashlib
import re
from pathlib import Path

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

# Cut points for parallel encoding: after a single newline that sits between two characters that
# are not whitespace. The byte-level pre-tokenizer (GPT-2's split regex) makes that newline a
# pre-token of its own and starts afresh after it, so the pieces give exactly the ids of one
# call. A cut after a run of newlines would not: a piece ending in "\n\n" keeps it as one
# pre-token (`ĊĊ`) where the whole text has `Ċ`, `Ċ` (trap 12). Format characters that some
# regex engines count as spaces are excluded too, to be safe.
_SOLID = r"[^\s\u180e\u200b-\u200d\u2060\ufeff]"
_CUT = re.compile(rf"(?<={_SOLID}\n)(?={_SOLID})")


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
    check_vocab_size(vocab_size)
    bpe = ByteLevelBPETokenizer()
    # Many small pieces let the Rust trainer count words in parallel (one string would not); cut
    # where encoding is unchanged, they give the same word counts, so the same merges, as one text.
    bpe.train_from_iterator(split_for_encoding(text), vocab_size=vocab_size, min_frequency=min_frequency,
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


def split_for_encoding(text: str, chunk_chars: int = 4096) -> list[str]:
    """Split text into ~chunk_chars pieces at cut points that keep ids identical."""
    pieces, start = [], 0
    while start < len(text):
        end = start + chunk_chars
        if end >= len(text):
            pieces.append(text[start:])
            break
        match = _CUT.search(text, end)
        end = match.start() if match else len(text)
        pieces.append(text[start:end])
        start = end
    return pieces


def encode_fast(tok: Tokenizer, text: str):
    """Encode a large text with `encode_batch` (parallel in Rust); same ids as `encode`."""
    import numpy as np

    pieces = split_for_encoding(text)
    encodings = tok.encode_batch_fast(pieces) if hasattr(tok, "encode_batch_fast") else tok.encode_batch(pieces)
    if not encodings:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
