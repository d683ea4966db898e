"""Checkpoints: a folder per checkpoint that travels on its own.

    runs/<run>/last/   model.safetensors   weights (safetensors: loading never runs code)
                       meta.json           model config, train config, step, metrics, tokenizer hash
                       tokenizer.json      the tokenizer the model was trained with
                       train_state.pt      optimizer + RNG state for exact resume (tensors only,
                                           loaded with weights_only=True)
    runs/<run>/best/   the same, for the best validation loss so far

Writing is atomic: everything goes to a temporary folder, each file and the folder are flushed
to the disk (fsync), then it replaces the old one by renames and the parent folder is flushed
too. A crash or a power cut mid-write leaves the previous checkpoint loadable (as `last` or, if
it fell between the two renames, as `last.old`, which `load` also finds).
"""

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mini_llm.errors import UserError
from mini_llm.files import fsync_path
from mini_llm.model import GPTConfig, MiniGPT
from mini_llm.paths import display, runs_dir
from mini_llm.tokenizer import load_tokenizer, tokenizer_hash

FORMAT = "mini-llm-checkpoint-1"


def save_checkpoint(folder: Path, model, tokenizer, meta: dict, train_state: dict | None = None) -> Path:
    """Atomically write a checkpoint folder (model weights, meta, tokenizer, optional train state)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = getattr(model, "module", model)  # unwrap DDP
    raw = getattr(raw, "_orig_mod", raw)  # unwrap torch.compile (trap 10 in docs/TRAPS.md)
    tied = raw.config.tie_head
    state = {k: v.detach().to("cpu").contiguous() for k, v in raw.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, tmp / "model.safetensors")  # a head tied to wte is stored once
    tokenizer.save(str(tmp / "tokenizer.json"))
    meta = dict(meta, format=FORMAT, model_config=raw.config.to_dict(), tokenizer_sha256=tokenizer_hash(tokenizer))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
    for path in [*tmp.iterdir(), tmp]:  # the data, then the folder's entries, are on the disk ...
        fsync_path(path)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(folder, old)
    os.rename(tmp, folder)
    fsync_path(folder.parent)  # ... before and after the renames
    shutil.rmtree(old, ignore_errors=True)
    return folder


def find_checkpoint(path: Path | None = None, which: str = "best") -> Path:
    """Resolve a checkpoint folder: a checkpoint itself, a run folder (its best, else last), or,
    with no path, the newest run under runs/."""
    if path is None:
        runs = [p for p in runs_dir().glob("*") if p.is_dir()] if runs_dir().exists() else []
        runs = [r for r in runs if _candidates(r, which)]
        if not runs:
            raise UserError("no checkpoint found under runs/: train one first with `mini-llm train`")
        path = max(runs, key=lambda r: max(c.stat().st_mtime for c in _candidates(r, which)))
    path = Path(path)
    if not path.exists():
        raise UserError(f"{display(path)}: no such checkpoint or run folder; train one with `mini-llm train`")
    if (path / "meta.json").exists() or (path / "model.safetensors").exists():
        return path
    found = _candidates(path, which)
    if not found:
        raise UserError(f"{display(path)}: no checkpoint in this folder (expected best/ or last/); train with `mini-llm train --out {display(path)}`")
    return found[0]


def _candidates(run: Path, which: str) -> list[Path]:
    order = [which, "last" if which == "best" else "best"]
    names = [n for w in order for n in (w, w + ".old")]
    return [run / n for n in names if (run / n / "meta.json").exists()]


def read_meta(folder: Path) -> dict:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise UserError(f"{display(path)}: missing; this is not a complete checkpoint folder")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{display(path)}: corrupt (not valid JSON); use another checkpoint or retrain") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{display(path)}: not a mini-llm checkpoint (format {meta.get('format')!r})")
    return meta


def load_checkpoint(path: Path | None = None, device="cpu", which: str = "best"):
    """Load (model in eval mode, tokenizer, meta), checking every file; one-line errors."""
    folder = find_checkpoint(path, which)
    meta = read_meta(folder)
    tok_path = folder / "tokenizer.json"
    if not tok_path.exists():
        raise UserError(f"{display(tok_path)}: the checkpoint's tokenizer is missing; copy it back or retrain")
    tokenizer = load_tokenizer(tok_path)
    if tokenizer_hash(tokenizer) != meta["tokenizer_sha256"]:
        raise UserError(f"{display(tok_path)}: does not match the tokenizer this model was trained with (hash differs)")
    try:
        config = GPTConfig(**meta["model_config"])
    except (TypeError, KeyError):
        raise UserError(f"{display(folder / 'meta.json')}: model config missing or invalid") from None
    model = MiniGPT(config)
    model.check_vocab(tokenizer)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise UserError(f"{display(weights)}: missing; the checkpoint is incomplete")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError):
        raise UserError(f"{display(weights)}: corrupt or truncated; use the other checkpoint (best/last) or retrain") from None
    if config.tie_head:
        state["lm_head.weight"] = state.get("wte.weight")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise UserError(f"{display(weights)}: weights do not fit the model config in meta.json; the files belong to different runs") from None
    model.to(device).eval()
    meta["folder"] = str(folder)
    return model, tokenizer, meta


def load_train_state(folder: Path) -> dict:
    path = Path(folder) / "train_state.pt"
    if not path.exists():
        raise UserError(f"{display(path)}: missing; cannot resume exactly from this checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{display(path)}: corrupt or not a mini-llm train state; resume from another checkpoint") from None
