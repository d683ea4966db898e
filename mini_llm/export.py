"""Export a checkpoint to ONNX and run it with onnxruntime.

An export folder holds:
    model.onnx (+ model.onnx.data)    idx (B, T) -> logits (B, T, V), present (L, 2, B, nh, T, hs)
    decode.onnx (+ decode.onnx.data)  token (B, 1), past (L, 2, B, nh, P, hs) -> logits (B, 1, V), present (.., P+1, ..)
    tokenizer.json                    the checkpoint's tokenizer
    manifest.json                     model config, vocab and block size, opset, hashes of the sources

Both graphs have dynamic batch and sequence axes, bounded by block_size (trap 8). The exported
graph has no Python checks left in it, so `OnnxRunner` crops to block_size itself.
"""

import argparse
import contextlib
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.errors import UserError
from mini_llm.paths import display

FORMAT = "mini-llm-onnx-1"
OPSET = 18
ONNX_HINT = 'ONNX support needs the onnx extra: pip install "mini-llm[onnx]" (or pip install -e ".[onnx]" in a checkout)'


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(ONNX_HINT) from None


class _Decoder(nn.Module):
    """MiniGPT's forward with the cache as explicit tensors: what an ONNX graph can hold."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def run(self, idx, past=None):
        m = self.m
        P = 0 if past is None else past.shape[4]
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device) + P
        x = m.wte(idx) + m.wpe(pos)  # (B, T, C)
        presents = []
        for i, block in enumerate(m.blocks):
            q, k, v = block.attn.qkv(block.ln_1(x))  # (B, nh, T, hs)
            if past is not None:
                k, v = torch.cat([past[i, 0], k], dim=2), torch.cat([past[i, 1], v], dim=2)
                y = F.scaled_dot_product_attention(q, k, v)  # one new query: sees every key
            else:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block.attn.merge_heads(y)
            x = x + block.mlp(block.ln_2(x))
            presents.append(torch.stack([k, v]))
        return m.lm_head(m.ln_f(x)), torch.stack(presents)


class _Prefill(_Decoder):
    def forward(self, idx):
        return self.run(idx)


class _Step(_Decoder):
    def forward(self, token, past):
        return self.run(token, past)


@contextlib.contextmanager
def _quiet_exporter():
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
    import onnx

    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.files import sha256_file

    model, tokenizer, meta = load_checkpoint(checkpoint, "cpu")
    cfg = model.config
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    B, T, P = torch.export.Dim("B", min=1, max=64), torch.export.Dim("T", min=1, max=cfg.block_size), \
        torch.export.Dim("P", min=1, max=cfg.block_size - 1)
    hs = cfg.n_embd // cfg.n_head
    start = time.perf_counter()
    with torch.no_grad(), _quiet_exporter():
        idx = torch.randint(0, cfg.vocab_size, (2, min(8, cfg.block_size)))
        torch.onnx.export(_Prefill(model).eval(), (idx,), str(tmp / "model.onnx"), input_names=["idx"],
                          output_names=["logits", "present"], dynamic_shapes={"idx": {0: B, 1: T}},
                          opset_version=OPSET, dynamo=True, external_data=True, verbose=False)
        past = torch.randn(cfg.n_layer, 2, 2, cfg.n_head, min(5, cfg.block_size - 1), hs)
        token = torch.randint(0, cfg.vocab_size, (2, 1))
        torch.onnx.export(_Step(model).eval(), (token, past), str(tmp / "decode.onnx"), input_names=["token", "past"],
                          output_names=["logits", "present"],
                          dynamic_shapes={"token": {0: B}, "past": {2: B, 4: P}},
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
        err = max_abs_diff(model, OnnxRunner(out), [1, 7, cfg.block_size])
        log(f"parity: max |onnxruntime - torch| logits = {err:.2e}")
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
        logits, self.past = self.decode.run(None, {"token": np.array([[token]], dtype=np.int64), "past": self.past})
        return torch.from_numpy(logits[0, -1])

    @property
    def room(self) -> int:
        return self.block_size - (0 if self.past is None else self.past.shape[4])

    def full(self, ids):
        return torch.from_numpy(self.logits(np.asarray([ids]))[0, -1])


def max_abs_diff(model, runner: OnnxRunner, lengths, batches=(1, 3), seed: int = 0) -> float:
    """Largest |logit difference| between torch and onnxruntime over the given shapes."""
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="checkpoint or run folder (same as --checkpoint)")
    p.add_argument("--checkpoint", help="checkpoint or run folder (default: the best checkpoint of the newest run)")
    p.add_argument("--out", default="exports/model", help="export folder (default exports/model)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check after exporting")


def run(args) -> int:
    export_checkpoint(args.path or args.checkpoint, args.out, verify=not args.no_verify)
    return 0


if __name__ == "__main__":
    from mini_llm.errors import guarded

    p = argparse.ArgumentParser(prog="python -m mini_llm.export")
    add_arguments(p)
    sys.exit(guarded(lambda: run(p.parse_args())))
