"""The runs the course shows: a trained model to explore, and the committed reference runs.

Notebooks 04 and 06 explore a model that has learned something (attention heads with a job,
such as finding the latest line break; text laid out like a play). They take the newest run of the
classic model they build (arch gpt2) at the default size that trained long enough, such as
`mini-llm train --arch gpt2 --time-budget 300`; without one they train a short run here, once,
and say so.

Notebooks 05 and 06 also show the course's reference run: a 30-minute run of `mini-llm train`'s
default recipe committed as small text files (no weights) in docs/reference_run/: its
metrics.jsonl (loss curves), samples.jsonl (the text it wrote at step 0 and at every evaluation)
and run.json (how it was made). docs/reference_run_gpt2/ holds the same for the classic model
(arch gpt2, AdamW), the default before the ablation in BENCHMARKS.md.
"""

import json
import shutil
from pathlib import Path

from mini_llm.checkpoint import load_checkpoint
from mini_llm.errors import UserError
from mini_llm.model import GPTConfig
from mini_llm.paths import display, runs_dir
from mini_llm.train import TrainConfig, train

MIN_STEPS = 300  # about 3 minutes on a 2-core CPU at the default size: heads and words have formed
FALLBACK = "course-fallback"
# Committed with the course, beside the package (MINI_LLM_HOME moves data/ and runs/ only).
REFERENCE_RUN = Path(__file__).resolve().parents[2] / "docs" / "reference_run"
CLASSIC_REFERENCE_RUN = REFERENCE_RUN.with_name("reference_run_gpt2")
SIZE = ("vocab_size", "block_size", "n_embd", "n_head", "n_layer")


def trained_runs(min_steps: int = MIN_STEPS) -> list[Path]:
    """Run folders under runs/ whose best checkpoint is the classic model (arch gpt2) at the
    default size and has trained at least `min_steps` steps, newest first."""
    default = GPTConfig()
    found = []
    for meta_path in runs_dir().glob("*/best/meta.json") if runs_dir().exists() else []:
        try:
            meta = json.loads(meta_path.read_text())
            config = meta["model_config"]
            classic = GPTConfig(**config).arch_name == "gpt2"  # the model notebooks 03-07 build, their loops assume it
            fits = classic and all(config[k] == getattr(default, k) for k in SIZE) and meta["step"] >= min_steps
        except (OSError, ValueError, KeyError, TypeError, UserError):
            continue  # not a readable checkpoint: not ours to judge here
        if fits:
            found.append(meta_path.parent.parent)
    return sorted(found, key=lambda run: (run / "best" / "meta.json").stat().st_mtime, reverse=True)


def trained_model(fallback_seconds: float = 45, log=print):
    """(model, tokenizer, meta) of the newest trained run (see `trained_runs`); without one, a
    run of `fallback_seconds` with the default recipe in runs/course-fallback (trained once,
    reused after)."""
    runs = trained_runs()
    if runs:
        model, tok, meta = load_checkpoint(runs[0])
        log(f"using {display(meta['folder'])}: step {meta['step']:,}")
        return model, tok, meta
    fallback = runs_dir() / FALLBACK
    if not (fallback / "best" / "meta.json").exists():
        log(f"no trained classic run of the default size under runs/ (`mini-llm train --arch gpt2 --time-budget 300` "
            f"makes one): training {fallback_seconds:.0f} s here instead; expect rougher heads and text")
        train(TrainConfig(arch="gpt2", time_budget=fallback_seconds, final_eval_windows=64), out=fallback,
              progress=False, log=lambda *a: None)
    model, tok, meta = load_checkpoint(fallback)
    log(f"using {display(meta['folder'])}: step {meta['step']:,} (a short fallback run)")
    return model, tok, meta


def reference_samples(folder: Path = REFERENCE_RUN) -> list[dict]:
    """The reference run's samples, in step order: {step, val_loss, prompt, text, sampling}."""
    lines = (Path(folder) / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda r: r["step"])


def reference_info(folder: Path = REFERENCE_RUN) -> dict:
    """How the reference run was made (run.json): command, machine, model and batch sizes, time."""
    return json.loads((Path(folder) / "run.json").read_text(encoding="utf-8"))


def save_reference_run(run: Path, command: str, machine: str, out: Path = REFERENCE_RUN) -> dict:
    """Copy a finished run's metrics.jsonl and samples.jsonl to `out` and write run.json beside
    them (what the notebooks read; no weights, no absolute paths). Returns run.json's content."""
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
    return info
