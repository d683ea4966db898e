"""`mini-llm prepare`: what it reports and what it refuses."""

import pytest

from tests.conftest import one_error_line, run_cli


def test_cli_prepare_reports_what_it_wrote(corpus_file):
    proc = run_cli("prepare", "--source", corpus_file, "--vocab-size", "300")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "bytes" in out and "characters" in out and "lines" in out
    assert "vocab 300" in out and "characters/token" in out and "total:" in out
    assert "tokenizer trained on the whole training split" in out


@pytest.mark.parametrize("name, content, message", [
    ("missing.txt", None, "no such file or folder"),
    ("empty.txt", b"", "the file is empty"),
    ("latin1.txt", "caf\xe9 ".encode("latin-1") * 800, "byte offset 3"),
    ("short.txt", b"Hello there.\n", "corpus too short"),
])
def test_cli_prepare_bad_input(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    before = path.read_bytes() if path.exists() else None
    line = one_error_line(run_cli("prepare", "--source", path))
    assert message in line
    assert (path.read_bytes() if path.exists() else None) == before  # never modified


def test_prepare_source_chat_writes_the_default_chat_set(home):
    from mini_llm.conversations import read_conversations

    proc = run_cli("prepare", "--source", "chat")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "held out by question" in proc.stdout.decode()
    assert len(read_conversations(home / "data" / "chat.jsonl")) > 800


@pytest.mark.parametrize("args, message", [
    (["--max-bytes", "5MB"], "--max-bytes takes a prefix of --source tinystories"),
    (["--source", "tinystories", "--max-bytes", "fifty"], "--max-bytes 'fifty' is not a size"),
])
def test_cli_prepare_bad_max_bytes(args, message):
    assert message in one_error_line(run_cli("prepare", *args))
