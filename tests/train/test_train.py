
import json
import math
import shutil

import numpy as np
import pytest
import torch

from mini_llm import checkpoint as ckpt
from mini_llm.checkpoint import load_checkpoint
from mini_llm.errors import UserError
from mini_llm.model import MiniGPT
from mini_llm.schedule import lr_at
from mini_llm.train import train
from tests.conftest import QUIET, interrupt_at, last_weights, tiny_config


def test_run_folder_has_everything(trained_run):
    for name in ("best", "last"):
        folder = trained_run / name
        assert {p.name for p in folder.iterdir()} == {"model.safetensors", "meta.json", "tokenizer.json", "train_state.pt"}
    meta = json.loads((trained_run / "last" / "meta.json").read_text())
    assert meta["step"] == 30 and meta["model_config"]["n_layer"] == 2 and len(meta["tokenizer_sha256"]) == 64
    assert meta["train_config"]["max_steps"] == 30
    records = [json.loads(l) for l in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r and "tokens_per_s" in r for r in records)
    final = [r for r in records if r.get("subset") is False]
    assert final and {"val_loss", "val_ppl", "val_nats_per_char"} <= set(final[0])
    assert math.isclose(final[0]["val_ppl"], math.exp(final[0]["val_loss"]), rel_tol=1e-9)
    assert (trained_run / "loss.png").stat().st_size > 1000


def test_training_lowers_the_loss(trained_run):
    records = [json.loads(l) for l in (trained_run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert vals[-1] < math.log(300) - 0.5


def test_existing_run_is_not_overwritten(trained_run, prepared):
    before = (trained_run / "last" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds a run: use --resume"):
        train(tiny_config(), prepared=prepared, out=trained_run, **QUIET)
    assert (trained_run / "last" / "model.safetensors").read_bytes() == before


def test_time_budget_stops(prepared, tmp_path):
    summary = train(tiny_config(max_steps=None, time_budget=1.0), prepared=prepared, out=tmp_path / "r", **QUIET)
    assert summary["steps"] >= 1 and summary["seconds"] < 30


def test_samples_are_written_at_step_0_and_every_eval_without_changing_training(prepared, tmp_path):
    train(tiny_config(), prepared=prepared, out=tmp_path / "plain", **QUIET)
    train(tiny_config(samples=12, sample_prompt="a"), prepared=prepared, out=tmp_path / "sampled", **QUIET)
    a, b = last_weights(tmp_path / "plain"), last_weights(tmp_path / "sampled")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # training's RNG untouched
    assert not (tmp_path / "plain" / "samples.jsonl").exists()
    records = [json.loads(l) for l in (tmp_path / "sampled" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 15, 30]
    assert records[0]["val_loss"] is None and all(isinstance(r["val_loss"], float) for r in records[1:])
    assert all(r["prompt"] == "a" and r["text"] and r["sampling"]["seed"] == 0 for r in records)
    assert records[0]["text"] != records[-1]["text"]  # the same random numbers, a trained model


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_saves_plain_checkpoints(prepared, tmp_path):
    """--compile wraps only the training step: checkpoints hold the plain model's names (trap 10 in docs/TRAPS.md)."""
    summary = train(tiny_config(compile=True, max_steps=6, eval_interval=3, n_layer=1), prepared=prepared,
                    out=tmp_path / "c", **QUIET)
    assert summary["steps"] == 6
    names = set(last_weights(tmp_path / "c"))
    assert names and not any("_orig_mod" in n for n in names)
    model, _, _ = ckpt.load_checkpoint(tmp_path / "c")
    assert model.config.n_layer == 1


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


def test_evaluate_works_without_autocast(prepared):
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


def test_training_with_muon_lowers_the_loss(prepared, tmp_path):
    seen = {}
    out = tmp_path / "muon"
    train(tiny_config(optimizer="muon", log_interval=1), prepared=prepared, out=out,
          on_step=lambda step, loss: seen.setdefault(step, loss.item()), **QUIET)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert vals[-1] < math.log(300) - 0.5 and seen[30] < seen[1] - 0.5
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lrs[10] == pytest.approx(lr_at(9 / 30, 9, tiny_config()))  # the logged LR is AdamW's (cfg.lr's schedule)


def test_modern_training_checkpoint_resume_and_fine_tune(prepared, tmp_path):
    cfg = tiny_config(arch="modern", max_steps=12, eval_interval=6)
    summary = train(cfg, prepared=prepared, out=tmp_path / "run", **QUIET)
    model, _, meta = load_checkpoint(tmp_path / "run", which="last")
    assert meta["model_config"]["pos"] == "rope" and model.config.arch_name == "modern"
    assert meta["train_config"]["arch"] == "modern"
    assert summary["val_loss"] < torch.log(torch.tensor(300.0)).item()
    # the untied head is stored and loaded (not filled from wte)
    assert not torch.equal(model.lm_head.weight, model.wte.weight)
    # resume is exact with the modern model
    train(cfg, prepared=prepared, out=tmp_path / "split", on_step=interrupt_at(6), **QUIET)
    train(cfg, prepared=prepared, out=tmp_path / "split", resume=True, **QUIET)
    a = load_checkpoint(tmp_path / "run", which="last")[0].state_dict()
    b = load_checkpoint(tmp_path / "split", which="last")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # fine-tuning takes the architecture from the checkpoint, whatever --arch says
    train(tiny_config(max_steps=2), prepared=prepared, out=tmp_path / "tuned", init_from=tmp_path / "run", **QUIET)
    assert load_checkpoint(tmp_path / "tuned")[0].config.arch_name == "modern"


def test_the_final_eval_scores_a_fixed_number_of_tokens_unless_asked_for_all(prepared, tmp_path, monkeypatch):
    """Its cost does not grow with the corpus: the first FINAL_EVAL_TOKENS' worth of windows by
    default, the whole split with final_eval_all; the metrics, the checkpoint and the log say which."""
    from mini_llm.train import config, train

    monkeypatch.setattr(config, "FINAL_EVAL_TOKENS", 5 * 32)  # 5 windows of the tiny config's 32 tokens
    windows = (len(prepared.val) - 1) // 32
    assert windows > 5
    for flags, scored, whole in (({}, 5 * 32, False), ({"final_eval_all": True}, windows * 32, True),
                                 ({"final_eval_windows": 2}, 2 * 32, False)):
        out, lines = tmp_path / str(len(flags) and list(flags)[0]), []
        summary = train(tiny_config(max_steps=2, eval_interval=2, **flags), prepared=prepared, out=out,
                        log=lines.append, progress=False)
        final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
        assert final["subset"] is False and final["val_tokens"] == scored and final["whole_split"] is whole
        assert final["val_split_windows"] == windows and final["val_windows"] == scored // 32
        assert summary["val_tokens"] == scored
        assert json.loads((out / "last" / "meta.json").read_text())["val"]["val_tokens"] == scored
        done = next(line for line in lines if line.startswith("done:"))
        assert ("on the whole val split" in done) is whole
        assert whole or f"the first {scored // 32:,} of {windows:,} val windows ({scored:,} tokens; --final-eval-all: all)" in done
    with pytest.raises(UserError, match="--final-eval-all scores every val window"):
        tiny_config(final_eval_all=True, final_eval_windows=3)


def test_evaluate_reads_the_split_a_batch_at_a_time_with_the_same_result(prepared):
    """Batches read from the memory-mapped split score exactly what the whole windows tensor did."""
    from mini_llm.data import eval_windows
    from mini_llm.train import evaluate

    model = MiniGPT(tiny_config().model_config(prepared.vocab_size)).eval()
    n = (len(prepared.val) - 1) // 16 - 1  # all windows of 16 tokens but one, in batches of 32: the last one short
    assert n > 64 and n % 32
    x_all, y_all = eval_windows(prepared.val, 16, n)
    with torch.no_grad():
        total = sum(model(x_all[i : i + 32], y_all[i : i + 32])[1].item() * y_all[i : i + 32].numel()
                    for i in range(0, n, 32))
    for ids in (prepared.val, np.array(prepared.val), torch.from_numpy(np.array(prepared.val).astype(np.int64))):
        result = evaluate(model, ids, 16, "cpu", 3.0, max_windows=n, progress=True)
        assert result["val_loss"] == total / (n * 16) and result["val_tokens"] == n * 16
        assert result["whole_split"] is False and result["val_split_windows"] == n + 1
