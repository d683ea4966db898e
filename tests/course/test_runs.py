"""The runs the course shows: the trained model the notebooks explore."""

import json

import pytest


def test_your_runs_are_the_ones_that_trained_long_enough_any_arch(monkeypatch, tmp_path):
    import time

    from mini_llm.course import runs as course
    from mini_llm.model import GPTConfig

    monkeypatch.setenv("MINI_LLM_HOME", str(tmp_path))
    assert course.your_runs() == []
    for name, options, step in [("young", {}, 20), ("small", dict(n_layer=2), 400), ("rotary", dict(pos="rope"), 900)]:
        meta = tmp_path / "runs" / name / "best" / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"model_config": GPTConfig(**options).to_dict(), "step": step}))
        time.sleep(0.02)  # distinct modification times: newest first
    (tmp_path / "runs" / "broken" / "best").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "best" / "meta.json").write_text("{not json")
    assert [r.name for r in course.your_runs()] == ["rotary", "small"]


def _shipped(trained_run, folder):
    from mini_llm.course.runs import ship_checkpoint

    return ship_checkpoint(trained_run / "last", folder)


def test_the_shipped_checkpoint_is_bf16_without_paths_and_computes_like_the_run(trained_run, tmp_path):
    import torch
    from safetensors.torch import load_file

    from mini_llm.checkpoint import load_checkpoint

    out = _shipped(trained_run, tmp_path / "checkpoint")
    weights = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.safetensors", "tokenizer.json"]
    text = (out / "meta.json").read_text()
    assert str(trained_run) not in text and "/" + "home" not in text and '"data"' not in text
    original, _, _ = load_checkpoint(trained_run / "last")
    shipped, _, meta = load_checkpoint(out)
    assert next(shipped.parameters()).dtype == torch.float32  # computes in fp32 once loaded
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = original(x)[0], shipped(x)[0]
    assert (a - b).abs().max() < 0.05 and meta["step"] == 30  # bf16 rounding of the weights, no more


def test_the_notebooks_explore_the_reference_checkpoint_unless_you_ask_for_yours(trained_run, monkeypatch, tmp_path):
    from mini_llm.course import runs as course

    monkeypatch.setattr(course, "REFERENCE_CHECKPOINT", _shipped(trained_run, tmp_path / "checkpoint"))
    monkeypatch.setenv("MINI_LLM_HOME", str(tmp_path / "home"))
    said = []
    _, _, meta = course.trained_model(log=said.append)
    assert meta["folder"] == str(tmp_path / "checkpoint") and "reference checkpoint" in said[-1]
    _, _, meta = course.trained_model(yours=True, log=said.append)  # none of yours yet: the reference, and why
    assert meta["folder"] == str(tmp_path / "checkpoint") and "no run of yours" in said[-2]
    monkeypatch.setattr(course, "MIN_STEPS", 10)
    monkeypatch.setattr(course, "your_runs", lambda min_steps=10: [trained_run])
    _, _, meta = course.trained_model(yours=True, log=said.append)
    assert meta["folder"].startswith(str(trained_run)) and "your run" in said[-1]


def test_saving_a_reference_run_keeps_text_files_only(prepared, trained_run, tmp_path):
    """What docs/reference_run/README.md runs to replace the committed reference run: text files, no
    weights, no paths of this machine; a run without samples is refused (the notebooks show them)."""
    from mini_llm.course.runs import reference_info, reference_samples, save_reference_run
    from mini_llm.errors import UserError
    from mini_llm.train import train
    from tests.conftest import QUIET, tiny_config

    with pytest.raises(UserError, match="--samples"):
        save_reference_run(trained_run, "mini-llm train ...", "the test machine", out=tmp_path / "no")
    run = tmp_path / "run"
    train(tiny_config(max_steps=4, eval_interval=2, samples=5, sample_prompt="a"), prepared=prepared, out=run, **QUIET)
    info = save_reference_run(run, "mini-llm train ...", "the test machine", out=tmp_path / "ref")
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == ["metrics.jsonl", "run.json", "samples.jsonl"]
    assert reference_info(tmp_path / "ref") == info and info["steps"] == 4 and str(tmp_path) not in json.dumps(info)
    assert [r["step"] for r in reference_samples(tmp_path / "ref")] == [0, 2, 4]
