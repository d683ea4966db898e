"""Fine-tuning (`init_from`): a new run from another run's weights and tokenizer, with the recipe of the checkpoint's arch."""

from tests.conftest import QUIET, make_text, one_error_line, run_cli, tiny_config


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


def _fine_tune(source, corpus_file, out, **flags):
    """Fine-tune `source` with the flags a user gives (everything else left to the defaults)."""
    import torch

    from mini_llm.checkpoint import read_meta
    from mini_llm.train import TrainConfig, train

    cfg = TrainConfig(batch_size=8, max_steps=4, eval_interval=4, eval_windows=8, warmup_steps=2, seed=0,
                      device="cpu", **flags)
    train(cfg, data=[corpus_file], out=out, init_from=source, **QUIET)
    saved = read_meta(out / "last")["train_config"]
    state = torch.load(out / "last" / "train_state.pt", weights_only=True)["optimizer"]
    ran = "muon" if set(state) == {"adamw", "muon"} else "adamw"
    return saved, ran


def test_fine_tuning_takes_the_recipe_of_the_checkpoints_arch(small_run, corpus_file, tmp_path):
    """A classic (gpt2) checkpoint fine-tuned with the default flags trains as gpt2 trains (AdamW at
    2e-3), not with the default arch's Muon, and its metadata says what ran; a flag given still wins."""
    saved, ran = _fine_tune(small_run, corpus_file, tmp_path / "a")
    assert (saved["arch"], saved["optimizer"], saved["lr"], ran) == ("gpt2", "adamw", 2e-3, "adamw")
    assert (saved["pos"], saved["n_embd"]) == ("learned", 32)  # the model is the checkpoint's
    saved, ran = _fine_tune(small_run, corpus_file, tmp_path / "b", optimizer="muon")
    assert (saved["arch"], saved["optimizer"], saved["lr"], ran) == ("gpt2", "muon", 2e-3, "muon")
    saved, ran = _fine_tune(small_run, corpus_file, tmp_path / "c", lr=1e-3)
    assert (saved["optimizer"], saved["lr"]) == ("adamw", 1e-3)
