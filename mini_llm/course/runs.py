"""The runs the course shows: a trained model to explore, and the committed reference runs.

Notebooks 04 and 06 explore a model that has learned something (attention heads with a job, text
laid out like a play): by default the course's reference checkpoint of the classic model they build
(arch gpt2), shipped in docs/reference_run_gpt2/checkpoint/ (bf16 weights, about 10 MB), so every
learner sees the same heads and text and what the notebooks find in it is checked; or, when the
learner asks for it, their own newest trained run of any arch (`trained_model(yours=True)`).

Notebooks 05 and 06 also show the reference runs' logs: docs/reference_run/ for `mini-llm train`'s
default recipe and docs/reference_run_gpt2/ for the classic model, each as small text files:
metrics.jsonl (loss curves), samples.jsonl (the text it wrote at step 0 and at every evaluation)
and run.json (how it was made). `save_reference_run` writes them (and the checkpoint) from a run.
"""

import json
import shutil
from pathlib import Path

import torch

from mini_llm.checkpoint import load_checkpoint, save_checkpoint
from mini_llm.errors import UserError
from mini_llm.model import GPTConfig
from mini_llm.paths import display, runs_dir

MIN_STEPS = 300  # about 3 minutes on a 2-core CPU at the default size: heads and words have formed
# Committed with the course, beside the package (MINI_LLM_HOME moves data/ and runs/ only).
REFERENCE_RUN = Path(__file__).resolve().parents[2] / "docs" / "reference_run"
CLASSIC_REFERENCE_RUN = REFERENCE_RUN.with_name("reference_run_gpt2")
REFERENCE_CHECKPOINT = CLASSIC_REFERENCE_RUN / "checkpoint"


def your_runs(min_steps: int = MIN_STEPS) -> list[Path]:
    """Run folders under runs/ whose best checkpoint has trained at least `min_steps` steps, any
    arch and size, newest first."""
    found = []
    for meta_path in runs_dir().glob("*/best/meta.json") if runs_dir().exists() else []:
        try:
            meta = json.loads(meta_path.read_text())
            GPTConfig(**meta["model_config"])
            if meta["step"] >= min_steps:
                found.append(meta_path.parent.parent)
        except (OSError, ValueError, KeyError, TypeError, UserError):
            continue  # not a readable checkpoint: not ours to judge here
    return sorted(found, key=lambda run: (run / "best" / "meta.json").stat().st_mtime, reverse=True)


def trained_model(yours: bool = False, log=print):
    """(model, tokenizer, meta) for a notebook to explore: the course's reference checkpoint of the
    classic model; with yours=True, your newest run under runs/ that trained long enough (see
    `your_runs`), or the reference checkpoint when you have none yet (and it says so)."""
    runs = your_runs() if yours else []
    if yours and not runs:
        log(f"no run of yours under runs/ has trained {MIN_STEPS} steps yet (`mini-llm train --time-budget 300` "
            "makes one): using the course's reference checkpoint")
    model, tok, meta = load_checkpoint(runs[0] if runs else REFERENCE_CHECKPOINT)
    arch = GPTConfig(**meta["model_config"]).arch_name
    which = "your run" if runs else "the course's reference checkpoint"
    log(f"using {which} {display(meta['folder'])}: arch {arch}, step {meta['step']:,}")
    return model, tok, meta


def reference_samples(folder: Path = REFERENCE_RUN) -> list[dict]:
    """The reference run's samples, in step order: {step, val_loss, prompt, text, sampling}."""
    lines = (Path(folder) / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda r: r["step"])


def reference_info(folder: Path = REFERENCE_RUN) -> dict:
    """How the reference run was made (run.json): command, machine, model and batch sizes, time."""
    return json.loads((Path(folder) / "run.json").read_text(encoding="utf-8"))


def save_reference_run(run: Path, command: str, machine: str, out: Path = REFERENCE_RUN, weights: bool = False) -> dict:
    """Copy a finished run's metrics.jsonl and samples.jsonl to `out` and write run.json beside
    them (what the notebooks read; no absolute paths); with `weights`, also its last checkpoint,
    in bf16, as out/checkpoint/ (`ship_checkpoint`). Returns run.json's content."""
    run, out = Path(run), Path(out)
    if not (run / "samples.jsonl").exists():
        raise UserError(f"{display(run)} wrote no samples: train the reference run with --samples")
    meta = json.loads((run / "last" / "meta.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "samples.jsonl"):
        shutil.copyfile(run / name, out / name)
    config = GPTConfig(**meta["model_config"])
    info = {"command": command, "machine": machine, "steps": meta["step"], "tokens_seen": meta["tokens_seen"],
            "tokens_per_step": meta["tokens_seen"] // max(meta["step"], 1), "train_seconds": round(meta["train_seconds"]),
            "parameters": config.num_params(), "model_config": meta["model_config"]}
    (out / "run.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if weights:
        ship_checkpoint(run / "last", out / "checkpoint")
    return info


def ship_checkpoint(folder: Path, out: Path) -> Path:
    """The checkpoint in `folder`, written to `out` for the repository: bf16 weights (half the size;
    the model computes in fp32 once loaded), its tokenizer, and its meta without what belongs to the
    machine it was made on (paths) or to resuming it (no optimizer state: it is for exploring)."""
    model, tokenizer, meta = load_checkpoint(folder)
    kept = {k: v for k, v in meta.items() if k not in ("folder", "data", "init_from")}
    return save_checkpoint(out, model.to(torch.bfloat16), tokenizer, kept)
