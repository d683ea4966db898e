"""Pictures for notebooks and runs: loss curves, the LR schedule, attention maps, token stats."""

import json
from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget", "ipympl"):
    matplotlib.use("Agg")  # no screen needed outside notebooks
import matplotlib.pyplot as plt


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training records, validation records) from a run's metrics.jsonl."""
    train, val = [], []
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        (val if "val_loss" in record else train).append(record)
    return train, val


def plot_losses(run_dir: Path, ax=None, save: Path | None = None):
    """Train loss (per logged step) and validation loss against steps; returns the Axes."""
    train, val = read_metrics(run_dir)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", alpha=0.8)
    # Periodic evals use a fixed subset of the val windows (they decide `best`); the final one
    # also scores the whole split (or, on a large corpus, its first windows up to a fixed number of
    # tokens). Different sets give different numbers: draw them apart.
    subset = [r for r in val if r.get("subset", True)]
    whole = [r for r in val if not r.get("subset", True)]
    if subset:
        ax.plot([r["step"] for r in subset], [r["val_loss"] for r in subset], "o-", label="val (fixed subset: decides best)")
    if whole:
        scored = "whole split" if whole[-1].get("whole_split", True) else f"first {whole[-1]['val_tokens']:,} tokens"
        ax.plot([r["step"] for r in whole], [r["val_loss"] for r in whole], "*", markersize=12, label=f"val ({scored})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(f"loss curves: {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a resumed run may have logged nothing yet
        ax.legend()
    if save is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(save, dpi=100)
        if own:
            plt.close(ax.figure)
    return ax


def plot_val_by_tokens(runs, ax=None):
    """Validation loss against tokens seen for several runs, [(label, run folder, tokens per step)]:
    a fair x axis for runs with different batch sizes (a step of one is not a step of another).
    The periodic evaluations (each run's fixed subset) as lines, the final whole-split one as a star."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for label, folder, tokens_per_step in runs:
        _, val = read_metrics(folder)
        subset = [r for r in val if r.get("subset", True)]
        whole = [r for r in val if not r.get("subset", True)]
        line, = ax.plot([r["step"] * tokens_per_step for r in subset], [r["val_loss"] for r in subset], "o-",
                        markersize=3, label=label)
        ax.plot([r["step"] * tokens_per_step for r in whole], [r["val_loss"] for r in whole], "*", markersize=12,
                color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen (log scale)")
    ax.set_ylabel("val loss (nats / token)")
    ax.set_title("validation loss (star: the whole val split at the end)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax


def plot_attention(weights, tokens: list[str], ax=None, title: str = ""):
    """One head's (T, T) attention weights as a heatmap, queries down, keys across."""
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    ax.imshow(weights, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    ax.set_title(title)
    return ax


def plot_distribution(probs, labels: list[str], ax=None, title: str = "next-token distribution"):
    """A bar chart of the most likely next tokens."""
    ax = ax or plt.subplots(figsize=(7, 3))[1]
    ax.bar(range(len(probs)), probs)
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=8)
    ax.set_ylabel("probability")
    ax.set_title(title)
    return ax
