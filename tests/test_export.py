import builtins
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from mini_llm.checkpoint import load_checkpoint  # noqa: E402
from mini_llm.errors import UserError  # noqa: E402
from mini_llm.export import OnnxRunner, export_checkpoint, max_abs_diff  # noqa: E402
from mini_llm.generate import Sampling, TorchRunner, generate_ids  # noqa: E402
from tests.conftest import one_error_line, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    return export_checkpoint(trained_run, tmp_path_factory.mktemp("onnx") / "model", log=lambda *a: None)


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


def test_cli_generate_and_chat_on_onnx(exported):
    proc = run_cli("generate", "--backend", "onnx", exported, "--prompt", "KING:\n", "--max-new-tokens", "10", "--seed", "1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("KING:\n")
    proc = run_cli("chat", "--backend", "onnx", exported, "--prompt", "hello", "--max-new-tokens", "10")
    assert proc.returncode == 0, proc.stderr.decode()


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
