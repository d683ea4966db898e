
import builtins
import json
import shutil

import numpy as np
import pytest
import torch

from mini_llm.checkpoint import load_checkpoint
from mini_llm.errors import UserError
from mini_llm.generate import Sampling, TorchRunner, generate_ids
from mini_llm.train import train
from tests.conftest import QUIET, REPO, one_error_line, run_cli, tiny_config

pytest.importorskip("onnxruntime")

from mini_llm.export import OnnxRunner, export_checkpoint, max_abs_diff  # noqa: E402


def test_folder_layout(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"model.onnx", "decode.onnx", "tokenizer.json", "manifest.json"} <= names
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["block_size"] == 32 and manifest["vocab_size"] == 300 and manifest["opset"] >= 17
    assert len(manifest["source_sha256"]) == 64


def test_parity_within_1e4(trained_run, exported):
    model, _, _ = load_checkpoint(trained_run)
    runner = OnnxRunner(exported)
    assert max_abs_diff(model, runner, [1, 7, 16, 32], batches=(1, 3)) < 1e-4


def test_runtime_crops_to_block_size(trained_run, exported):
    model, _, _ = load_checkpoint(trained_run)
    runner = OnnxRunner(exported)
    idx = np.random.default_rng(0).integers(0, 300, (1, 50))
    out = runner.logits(idx)
    assert out.shape == (1, 32, 300)
    ref, _ = model(torch.from_numpy(idx[:, -32:]))
    assert np.abs(out - ref.detach().numpy()).max() < 1e-4


def test_greedy_tokens_match_torch(trained_run, exported):
    model, tok, _ = load_checkpoint(trained_run)
    prompt = tok.encode("KING:\n").ids
    greedy = Sampling(0.0, None, None, 0)
    ours = list(generate_ids(OnnxRunner(exported), prompt, 60, greedy))  # crosses the window too
    theirs = list(generate_ids(TorchRunner(model), prompt, 60, greedy))
    assert ours == theirs


def test_bad_export_folders(exported, tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        OnnxRunner(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["vocab_size"] = 999
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="does not match manifest.json"):
        OnnxRunner(bad)
    (bad / "manifest.json").write_text("{")
    assert "corrupt or not a mini-llm export manifest" in one_error_line(
        run_cli("generate", "--backend", "onnx", bad, "--prompt", "x"))


def test_missing_onnx_extra_says_what_to_install(trained_run, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(UserError, match=r'pip install "mini-llm\[onnx\]"'):
        export_checkpoint(trained_run, tmp_path / "x")


def test_decode_step_on_a_full_cache_is_refused_clearly(trained_run, exported):
    runner = OnnxRunner(exported)
    model, _, _ = load_checkpoint(trained_run)
    runner.start(list(range(model.config.block_size)))
    assert runner.room == 0
    with pytest.raises(UserError, match="the cache is full"):
        runner.step(5)


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


@pytest.mark.parametrize("arch", ["modern", "tuned"])
def test_onnx_parity_for_the_rotary_archs(arch, prepared, tmp_path):
    pytest.importorskip("onnxruntime")
    from mini_llm.export import OnnxRunner, check_parity, export_checkpoint

    train(tiny_config(arch=arch, max_steps=6, eval_interval=6), prepared=prepared, out=tmp_path / "run", **QUIET)
    folder = export_checkpoint(tmp_path / "run", tmp_path / "onnx", log=lambda *a: None)
    model, tok, _ = load_checkpoint(tmp_path / "run")
    runner = OnnxRunner(folder)
    parity = check_parity(model, runner)
    assert max(parity.values()) < 1e-4, parity
    prompt = tok.encode("KING:\n").ids
    greedy = Sampling(0.0, None, None, 0)
    # 50 tokens cross the 32-token window: both runners slide their caches the same way
    assert list(generate_ids(runner, prompt, 50, greedy)) == list(generate_ids(TorchRunner(model), prompt, 50, greedy))
