"""The command-line generate and chat, driven as a user would drive them."""

import shutil

import pytest

from tests.conftest import one_error_line, run_cli


def test_generate_cli(trained_run):
    proc = run_cli("generate", "--checkpoint", trained_run, "--prompt", "KING:\n", "--max-new-tokens", "20", "--seed", "1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("KING:\n")
    assert "best" in proc.stderr.decode()  # names the checkpoint it used
    again = run_cli("generate", trained_run, "--prompt", "KING:\n", "--max-new-tokens", "20", "--seed", "1")
    assert again.stdout == proc.stdout
    two = run_cli("generate", trained_run, "--prompt", "A", "--num-samples", "2", "--max-new-tokens", "5", "--seed", "1")
    assert two.stdout.decode().count("--- sample") == 2


def test_generate_bad_input(trained_run, tmp_path, home):
    assert "temperature -1.0 must be >= 0" in one_error_line(run_cli("generate", trained_run, "--temperature", "-1"))
    assert "top-p 2.0" in one_error_line(run_cli("generate", trained_run, "--top-p", "2"))
    assert "empty prompt" in one_error_line(run_cli("generate", trained_run, "--prompt", ""))
    assert "no such checkpoint" in one_error_line(run_cli("generate", tmp_path / "none"))
    shutil.rmtree(home / "runs", ignore_errors=True)
    assert "train one first with `mini-llm train`" in one_error_line(run_cli("generate"))


def test_long_prompt_keeps_its_last_tokens(trained_run):
    proc = run_cli("generate", trained_run, "--prompt", "the king spoke " * 40, "--max-new-tokens", "3")
    assert proc.returncode == 0
    assert "only its last 32 fit the context" in proc.stderr.decode()


def test_chat_one_shot(trained_run):
    proc = run_cli("chat", trained_run, "--prompt", "What is AI?", "--seed", "0", "--max-new-tokens", "20")
    assert proc.returncode == 0, proc.stderr.decode()
    proc2 = run_cli("chat", "--checkpoint", trained_run, "--prompt", "What is AI?", "--seed", "0", "--max-new-tokens", "20")
    assert proc2.returncode == 0 and proc2.stdout == proc.stdout
    assert "\n\n" not in proc.stdout.decode().rstrip("\n")  # a reply ends at the blank line


def test_chat_interactive_exit_and_reset(trained_run):
    proc = run_cli("chat", trained_run, "--seed", "0", "--max-new-tokens", "8",
                   stdin=b"hello there\n/reset\nwho are you\nexit\nnever read\n")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "(history cleared)" in out and out.count("HORATIO> ") == 4 and out.count("HAMLET> ") == 2


@pytest.mark.parametrize("data", [b"hello\n", b"", b"quit\n"])
def test_chat_ends_cleanly_on_eof_and_quit(trained_run, data):
    proc = run_cli("chat", trained_run, "--max-new-tokens", "4", stdin=data)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr.decode()


def test_chat_non_utf8_input_is_reported(trained_run):
    proc = run_cli("chat", trained_run, "--max-new-tokens", "4", stdin=b"caf\xe9\nexit\n")
    assert proc.returncode == 0
    assert "error: input is not UTF-8 text" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()


def test_chat_bad_input(trained_run, tmp_path):
    assert "empty prompt" in one_error_line(run_cli("chat", trained_run, "--prompt", "  "))
    folder = tmp_path / "ck"
    shutil.copytree(trained_run / "best", folder)
    (folder / "tokenizer.json").unlink()
    assert "tokenizer is missing" in one_error_line(run_cli("chat", folder, "--prompt", "hi"))


def test_cli_generate_and_chat_on_onnx(exported):
    proc = run_cli("generate", "--backend", "onnx", exported, "--prompt", "KING:\n", "--max-new-tokens", "10", "--seed", "1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("KING:\n")
    proc = run_cli("chat", "--backend", "onnx", exported, "--prompt", "hello", "--max-new-tokens", "10")
    assert proc.returncode == 0, proc.stderr.decode()
