"""`mini-llm export --format hf` and `mini-llm import-hf`, driven as a user would: a local folder, a
model name read offline from a Hub cache filled here (HF_HUB_OFFLINE=1: never the network), and what
generate, chat, `train --init-from` and `train --chat` do with the imported run."""

import pytest

from tests.conftest import one_error_line, run_cli

pytest.importorskip("transformers")

from mini_llm.hf import tiny_gpt2  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """HF_HOME with mini-llm-test/tiny-gpt2 in its Hub cache (the layout huggingface_hub writes:
    refs/main names the commit, snapshots/<commit>/ holds the files), and the Hub switched off."""
    repo = tmp_path / "hf_home" / "hub" / "models--mini-llm-test--tiny-gpt2"
    tiny_gpt2(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo


def test_export_hf_then_import_hf_gives_the_same_generations(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = run_cli("export", trained_run, "--format", "hf", "--out", tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "as GPT2LMHeadModel" in out and "tokens: the same; tokenizer: the same ids" in out
    proc = run_cli("import-hf", tmp_path / "hf", "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "imported GPT2LMHeadModel" in proc.stdout.decode() and (tmp_path / "run" / "best" / "meta.json").exists()
    args = ("--prompt", "KING:\n", "--max-new-tokens", "15", "--seed", "1")
    again, first = run_cli("generate", tmp_path / "run", *args), run_cli("generate", trained_run, *args)
    assert again.returncode == 0 and again.stdout == first.stdout  # the weights came back exactly
    assert "already holds a checkpoint" in one_error_line(run_cli("import-hf", tmp_path / "hf", "--out", tmp_path / "run"))


def test_import_hf_by_name_offline_from_the_hub_cache(hub_cache, tmp_path, corpus_file, chat_file):
    proc = run_cli("import-hf", "mini-llm-test/tiny-gpt2", "--out", tmp_path / "gpt2")
    assert proc.returncode == 0, proc.stderr.decode()
    assert f"from the Hub cache (commit {COMMIT[:8]})" in proc.stdout.decode()
    chat = run_cli("chat", tmp_path / "gpt2", "--prompt", "hello", "--max-new-tokens", "5", "--seed", "0")
    assert chat.returncode == 0, chat.stderr.decode()
    tune = run_cli("train", "--init-from", tmp_path / "gpt2", "--data", corpus_file, "--out", tmp_path / "tuned",
                   "--max-steps", "2", "--batch-size", "2", "--eval-interval", "2", "--eval-windows", "2",
                   "--final-eval-windows", "2", "--no-progress", "--device", "cpu", timeout=300)
    assert tune.returncode == 0, tune.stderr.decode()
    assert (tmp_path / "tuned" / "best" / "meta.json").exists()
    chat = run_cli("train", "--chat", "--init-from", tmp_path / "gpt2", "--data", chat_file, "--out", tmp_path / "chat",
                   "--max-steps", "2", "--batch-size", "2", "--no-progress", "--device", "cpu", timeout=300)
    assert chat.returncode == 0, chat.stderr.decode()  # chat fine-tuning grows GPT-2's vocabulary by its tokens


def test_import_hf_errors_are_one_line(hub_cache, tmp_path):
    assert "not in the Hub cache" in one_error_line(run_cli("import-hf", "mini-llm-test/not-cached", "--out", tmp_path / "a"))
    assert "not a model name on the Hub" in one_error_line(run_cli("import-hf", tmp_path / "no" / "such" / "dir"))
    (tmp_path / "file.txt").write_text("x")
    assert "is a file" in one_error_line(run_cli("import-hf", tmp_path / "file.txt"))
    assert "no config.json" in one_error_line(run_cli("import-hf", tmp_path, "--out", tmp_path / "b"))


def test_export_hf_refusals_are_one_line(prepared, tmp_path):
    from mini_llm.checkpoint import save_checkpoint
    from mini_llm.model import ARCHS, GPTConfig, MiniGPT

    biased = dict(ARCHS["modern"], bias=True)  # modern with biases: no class computes its MLP biases
    modern = MiniGPT(GPTConfig(vocab_size=300, block_size=16, n_embd=16, n_head=2, n_layer=1, **biased))
    checkpoint = save_checkpoint(tmp_path / "modern", modern, prepared.tokenizer, {"step": 0})
    line = one_error_line(run_cli("export", checkpoint, "--format", "hf", "--out", tmp_path / "hf"))
    assert "bias=True has no counterpart in ApertusForCausalLM" in line and "--no-bias" in line
    assert "invalid choice: 'gguf'" in run_cli("export", checkpoint, "--format", "gguf").stderr.decode()
