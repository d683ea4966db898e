"""Chat fine-tuning (`chat=True`, `mini-llm train --chat`): the same loop on packed conversations with
the masked loss, from the API and the CLI; exact resume; what the checkpoint records; chat uses it."""

import json

import torch

from mini_llm import chat_format
from mini_llm.checkpoint import load_checkpoint, read_meta
from mini_llm.train import train
from tests.conftest import QUIET, interrupt_at, last_weights, one_error_line, run_cli, tiny_config


def test_a_chat_run_learns_to_answer_and_records_its_template(chat_run, trained_run):
    model, tok, meta = load_checkpoint(chat_run / "last")
    _, base_tok, base_meta = load_checkpoint(trained_run)
    assert chat_format.is_chat_tokenizer(tok) and not chat_format.is_chat_tokenizer(base_tok)
    assert model.config.vocab_size == base_tok.get_vocab_size() + 4
    assert meta["chat_template"] == chat_format.JINJA and meta["chat"]["end"] == "<|end|>"
    assert meta["train_config"]["chat"] and meta["init_from"].endswith("best")
    assert base_meta["step"] == 30 and "chat" not in base_meta  # the source is untouched
    records = [json.loads(line) for line in (chat_run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_loss" in r]
    assert val[0]["step"] == 0 and val[-1]["step"] == 20  # the held-out masked loss before the first step ...
    assert val[-1]["val_loss"] < val[0]["val_loss"]  # ... and after
    best, last = read_meta(chat_run / "best"), read_meta(chat_run / "last")
    assert best["step"] == last["step"] == 20  # a chat fine-tune keeps its final weights as best, whatever the evals
    assert torch.equal(load_checkpoint(chat_run / "best")[0].lm_head.weight, model.lm_head.weight)
    samples = [json.loads(line) for line in (chat_run / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 10, 20} and len(samples) == 9  # 3 held-out questions per eval
    assert all(s["messages"][-1]["role"] == "user" and isinstance(s["ended"], bool) for s in samples)


def test_a_chat_run_resumes_exactly(trained_run, chat_file, tmp_path):
    cfg = dict(chat=True, max_steps=12, eval_interval=6)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny_config(**cfg), data=[chat_file], out=whole, init_from=trained_run, **QUIET)
    train(tiny_config(**cfg), data=[chat_file], out=parts, init_from=trained_run, on_step=interrupt_at(5), **QUIET)
    train(tiny_config(**cfg), out=parts, resume=True, **QUIET)
    a, b = last_weights(whole), last_weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_meta(parts / "last")["chat_template"] == chat_format.JINJA


def test_chat_fine_tuning_from_the_cli(trained_run, chat_file, tmp_path, monkeypatch):
    out = tmp_path / "chat"
    proc = run_cli("train", "--chat", "--init-from", trained_run, "--data", chat_file, "--out", out, "--max-steps", "3",
                   "--block-size", "32", "--no-progress", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "conversations: " in proc.stdout.decode() and "held-out rows of conversations" in proc.stdout.decode()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(chat_file.read_text().splitlines()[0] + "\n" + '{"messages": [{"role": "user", "content": "Q"}]}\n')
    line = one_error_line(run_cli("train", "--chat", "--init-from", trained_run, "--data", bad, "--out", tmp_path / "x",
                                  "--max-steps", "3"))
    assert "bad.jsonl:2: the conversation ends with the user" in line
    monkeypatch.setenv("MINI_LLM_HOME", str(tmp_path / "empty_home"))  # no runs to start from
    assert "train one first" in one_error_line(run_cli("train", "--chat", "--data", chat_file, "--max-steps", "3"))


def test_chat_on_a_chat_tuned_checkpoint_uses_its_template(chat_run):
    proc = run_cli("chat", chat_run, "--prompt", "the king queen?", "--seed", "0", "--max-new-tokens", "12")
    assert proc.returncode == 0, proc.stderr.decode()
    again = run_cli("chat", chat_run, "--prompt", "the king queen?", "--seed", "0", "--max-new-tokens", "12")
    assert again.stdout == proc.stdout and "<|end|>" not in proc.stdout.decode()
    proc = run_cli("chat", chat_run, "--seed", "0", "--max-new-tokens", "6", stdin=b"the king?\n/reset\nthe fool?\nexit\n")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "(its chat template)" in out and out.count("user> ") == 4 and out.count("assistant> ") == 2
