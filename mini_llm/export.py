"""Export a checkpoint to ONNX and run it with onnxruntime.

An export folder holds:
    model.onnx (+ model.onnx.data)    idx (B, T) -> logits (B, T, V), present (L, 2, B, nh, T, hs)
    decode.onnx (+ decode.onnx.data)  token (B, 1), past (L, 2, B, nh, P, hs) -> logits (B, 1, V), present (.., P+1, ..)
    tokenizer.json                    the checkpoint's tokenizer
    manifest.json                     model config, vocab and block size, opset, hashes of the sources

Both graphs have dynamic batch and sequence axes, bounded by block_size (trap 8 in docs/TRAPS.md). The exported
graph has no Python checks left in it, so `OnnxRunner` crops to block_size itself.
"""

import contextlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from mini_llm.errors import UserError
from mini_llm.paths import display

FORMAT = "mini-llm-onnx-1"
OPSET = 18
PARITY_TOLERANCE = 1e-3  # fp32 graphs agree to ~1e-5; anything near 1e-3 means a wrong graph
ONNX_HINT = 'ONNX support needs the onnx extra: pip install "mini-llm[onnx]" (or pip install -e ".[onnx]" in a checkout)'


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(ONNX_HINT) from None


class _Prefill(nn.Module):
    """The model's own `forward_kv` with no past: idx (B, T) -> logits, present."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, idx):
        return self.m.forward_kv(idx)


class _Step(_Prefill):
    """The same `forward_kv`, one token after P cached positions: token (B, 1), past -> logits, present."""

    def forward(self, token, past):
        return self.m.forward_kv(token, past)


def prefill_shapes(block_size: int) -> dict:
    """The prefill graph's symbolic axes (torch.export's `dynamic_shapes`): 1 to 64 rows of 1 to
    block_size tokens; left out, the example's shape would be baked into the graph."""
    return {"idx": {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("seq", min=1, max=block_size)}}


def decode_shapes(block_size: int) -> dict:
    """The decode graph's: the batch (one Dim shared by token and past, so they must agree) and 1 to
    block_size - 1 cached positions, so the new token still has a position."""
    batch = torch.export.Dim("batch", min=1, max=64)
    return {"token": {0: batch}, "past": {2: batch, 4: torch.export.Dim("cached", min=1, max=block_size - 1)}}


def _require_torch() -> None:
    """The torch.export-based exporter this module uses (dynamic shapes, external data) needs torch >= MIN_TORCH."""
    from mini_llm import MIN_TORCH

    have = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if have < tuple(int(part) for part in MIN_TORCH.split(".")):
        raise UserError(f"ONNX export needs torch >= {MIN_TORCH} (this is {torch.__version__}): pip install -U torch")


@contextlib.contextmanager
def quiet_exporter():
    """The dynamo exporter logs warnings about optional packages (torchvision) and deprecations
    that say nothing about this model; keep them out of the user's terminal and notebooks."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


def export_checkpoint(checkpoint=None, out: Path | str = "exports/model", verify: bool = True, log=print) -> Path:
    """Export a checkpoint (folder, run folder or None for the newest) to an ONNX folder."""
    _require_onnx()
    _require_torch()
    import onnx

    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.files import sha256_file

    model, tokenizer, meta = load_checkpoint(checkpoint, "cpu")
    cfg = model.config
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hs = cfg.n_embd // cfg.n_head
    start = time.perf_counter()
    with torch.no_grad(), quiet_exporter():
        idx = torch.randint(0, cfg.vocab_size, (2, min(8, cfg.block_size)))
        torch.onnx.export(_Prefill(model).eval(), (idx,), str(tmp / "model.onnx"), input_names=["idx"],
                          output_names=["logits", "present"], dynamic_shapes=prefill_shapes(cfg.block_size),
                          opset_version=OPSET, dynamo=True, external_data=True, verbose=False)
        past = torch.randn(cfg.n_layer, 2, 2, cfg.n_head, min(5, cfg.block_size - 1), hs)
        token = torch.randint(0, cfg.vocab_size, (2, 1))
        torch.onnx.export(_Step(model).eval(), (token, past), str(tmp / "decode.onnx"), input_names=["token", "past"],
                          output_names=["logits", "present"],
                          dynamic_shapes=decode_shapes(cfg.block_size),
                          opset_version=OPSET, dynamo=True, external_data=True, verbose=False)
    for name in ("model.onnx", "decode.onnx"):
        onnx.checker.check_model(str(tmp / name))  # path form: works with external data
    tokenizer.save(str(tmp / "tokenizer.json"))
    manifest = {"format": FORMAT, "model_config": cfg.to_dict(), "vocab_size": cfg.vocab_size,
                "block_size": cfg.block_size, "opset": OPSET, "files": {"prefill": "model.onnx", "decode": "decode.onnx"},
                "source_checkpoint": display(meta["folder"]),
                "source_sha256": sha256_file(Path(meta["folder"]) / "model.safetensors"),
                "tokenizer_sha256": meta["tokenizer_sha256"], "step": meta.get("step")}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        if not (out / "manifest.json").exists():
            shutil.rmtree(tmp)
            raise UserError(f"{display(out)} exists and is not an export folder: choose another --out")
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"exported {display(meta['folder'])} -> {display(out)} in {time.perf_counter() - start:.1f} s "
        f"(opset {OPSET}, checked with onnx.checker)")
    if verify:
        report = check_parity(model, OnnxRunner(out))
        log(f"parity: max |onnxruntime - torch| logits = {report['prefill']:.2e} (prefill graph), "
            f"{report['decode']:.2e} (decode graph)")
        if max(report.values()) > PARITY_TOLERANCE:
            raise UserError(f"{display(out)}: the exported graphs disagree with the model (max logit difference "
                            f"{max(report.values()):.2e} > {PARITY_TOLERANCE}); please report this with your torch version")
    return out


# ---------------------------------------------------------------------------------------------
# Serving


class OnnxRunner:
    """The generation backend on onnxruntime: same interface as `generate.TorchRunner`."""

    def __init__(self, folder, threads: int | None = None):
        _require_onnx()
        import onnxruntime as ort

        from mini_llm.tokenizer import load_tokenizer, tokenizer_hash

        folder = Path(folder)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise UserError(f"{display(folder)}: no manifest.json, so not a mini-llm export; run `mini-llm export` first")
        try:
            manifest = json.loads(manifest_path.read_text())
            assert manifest["format"] == FORMAT
            self.block_size, self.vocab_size = int(manifest["block_size"]), int(manifest["vocab_size"])
        except Exception:
            raise UserError(f"{display(manifest_path)}: corrupt or not a mini-llm export manifest; export again") from None
        self.tokenizer = load_tokenizer(folder / "tokenizer.json")
        if tokenizer_hash(self.tokenizer) != manifest["tokenizer_sha256"] or self.tokenizer.get_vocab_size() != self.vocab_size:
            raise UserError(f"{display(folder)}: tokenizer.json does not match manifest.json; export again")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: generation interleaves onnxruntime with Python (sampling),
        # and spinning threads would steal the cores from it (and from anything measured after).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = {}
        for role, name in manifest["files"].items():
            path = folder / name
            if not path.exists():
                raise UserError(f"{display(path)}: missing from the export folder; export again")
            try:
                sessions[role] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception:
                raise UserError(f"{display(path)}: onnxruntime cannot load it (corrupt?); export again") from None
        vocab_dim = sessions["prefill"].get_outputs()[0].shape[-1]
        if vocab_dim != self.vocab_size:
            raise UserError(f"{display(folder)}: the model's vocabulary ({vocab_dim}) does not match manifest.json "
                            f"({self.vocab_size}); export again")
        self.prefill, self.decode = sessions["prefill"], sessions.get("decode")
        self.manifest = manifest
        self.past = None

    @classmethod
    def from_sessions(cls, prefill, decode, block_size: int, vocab_size: int | None = None, tokenizer=None) -> "OnnxRunner":
        """A runner over sessions made elsewhere (or stand-ins with the same `run(names, feeds)`),
        without an export folder: what the exercise checks use to drive a learner's graphs."""
        runner = cls.__new__(cls)
        runner.prefill, runner.decode, runner.block_size, runner.vocab_size = prefill, decode, block_size, vocab_size
        runner.tokenizer, runner.manifest, runner.past = tokenizer, None, None
        return runner

    def logits(self, idx: np.ndarray) -> np.ndarray:
        """Full forward: idx (B, T) -> logits (B, T, V); crops to the last block_size positions."""
        idx = np.ascontiguousarray(np.asarray(idx, dtype=np.int64)[:, -self.block_size :])
        return self.prefill.run(["logits"], {"idx": idx})[0]

    def start(self, ids):
        idx = np.asarray([ids[-self.block_size :]], dtype=np.int64)
        logits, self.past = self.prefill.run(None, {"idx": idx})
        return torch.from_numpy(logits[0, -1])

    def step(self, token: int):
        if self.decode is None:
            raise UserError("this export has no decode graph; export again")
        if self.room <= 0:  # the graph would return an empty array, not an error
            raise UserError(f"the cache is full ({self.block_size} positions): start again with the last tokens")
        logits, self.past = self.decode.run(None, {"token": np.array([[token]], dtype=np.int64), "past": self.past})
        return torch.from_numpy(logits[0, -1])

    @property
    def room(self) -> int:
        return self.block_size - (0 if self.past is None else self.past.shape[4])

    @property
    def slides(self) -> bool:
        """Rotary positions: a full cache drops its oldest position (as `TorchRunner` does)."""
        return bool(self.manifest) and self.manifest["model_config"].get("pos") == "rope"

    def slide(self, n: int = 1) -> None:
        from mini_llm.model import slide_past

        self.past = slide_past(torch.from_numpy(self.past), n, self.manifest["model_config"]["rope_base"]).numpy()

    def full(self, ids):
        return torch.from_numpy(self.logits(np.asarray([ids]))[0, -1])


def max_abs_diff(model, runner: OnnxRunner, lengths, batches=(1, 3), seed: int = 0) -> float:
    """Largest |logit difference| between torch and the prefill graph over the given shapes."""
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batches:
        for t in lengths:
            idx = torch.randint(0, model.config.vocab_size, (b, t), generator=g)
            with torch.no_grad():
                ref, _ = model(idx)
            got = runner.logits(idx.numpy())
            worst = max(worst, float(np.abs(got - ref.numpy()).max()))
    return worst


def decode_abs_diff(model, runner: OnnxRunner, prompt_len: int = 5, steps: int = 4, seed: int = 0) -> float:
    """Largest |logit difference| between torch's cached forward and the decode graph, step by step
    from an onnxruntime prefill (so the graph's own past is what each step reads)."""
    from mini_llm.model import KVCache

    g = torch.Generator().manual_seed(seed)
    steps = min(steps, model.config.block_size - prompt_len)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len + steps), generator=g)
    cache, worst = KVCache(), 0.0
    with torch.no_grad():
        model(ids[:, :prompt_len], cache=cache)
        runner.start(ids[0, :prompt_len].tolist())
        for t in range(prompt_len, prompt_len + steps):
            ref, _ = model(ids[:, t : t + 1], cache=cache)
            got = runner.step(int(ids[0, t]))
            worst = max(worst, float((got - ref[0, -1]).abs().max()))
    return worst


def check_parity(model, runner: OnnxRunner) -> dict:
    """Both graphs against the model: {'prefill': max diff, 'decode': max diff}."""
    prompt_len = min(5, model.config.block_size - 1)
    return {"prefill": max_abs_diff(model, runner, sorted({1, min(7, model.config.block_size), model.config.block_size})),
            "decode": decode_abs_diff(model, runner, prompt_len)}
