"""The runs the course shows: the trained model the notebooks explore."""

import json

import pytest


def test_course_model_prefers_a_trained_default_size_run(monkeypatch, tmp_path):
    from mini_llm.course import runs as course

    monkeypatch.setenv("MINI_LLM_HOME", str(tmp_path))
    assert course.trained_runs() == []
    for name, size, step in [("small", dict(n_layer=2), 900), ("young", {}, 20), ("good", {}, 400),
                             ("rotary", dict(pos="rope", tie_head=False), 900)]:
        meta = tmp_path / "runs" / name / "best" / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"model_config": dict(GPTConfigDefaults(), **size), "step": step}))
    (tmp_path / "runs" / "broken" / "best").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "best" / "meta.json").write_text("{not json")
    assert [r.name for r in course.trained_runs()] == ["good"]


def GPTConfigDefaults():
    from mini_llm.model import GPTConfig

    return GPTConfig().to_dict()


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
