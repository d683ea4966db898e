"""Data-parallel training under torchrun on the CPU (gloo): ranks agree and stay in sync."""

import json
import os
import subprocess
import sys

from mini_llm import checkpoint as ckpt
from tests.conftest import REPO

DDP_SCRIPT = """
import hashlib, json, os, sys, time
import torch
from mini_llm.train import TrainConfig, train

def log(msg="", *a, **k):
    if str(msg).startswith("run folder"):
        time.sleep(1.5)  # rank 0 (the only one that logs) starts its clock 1.5 s after rank 1

first = {}
def on_step(step, loss):
    if step == 1:
        first["rng"] = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()

cfg = TrainConfig(vocab_size=300, block_size=16, n_embd=32, n_head=2, n_layer=1, batch_size=4, dropout=0.1,
                  time_budget=4.0, eval_interval=1000, warmup_steps=2, seed=0, device="cpu")
summary = train(cfg, data=[sys.argv[1]], out=sys.argv[2], log=log, progress=False, on_step=on_step)
with open(os.path.join(sys.argv[2], f"summary-{os.environ['RANK']}.json"), "w") as f:
    json.dump({"steps": summary["steps"], "in_sync": summary["ranks_in_sync"], "rng": first["rng"]}, f)
"""


def test_ddp_time_budget_ends_with_identical_ranks(corpus_file, prepared, tmp_path):
    script = tmp_path / "ddp_budget.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(corpus_file), str(out)]
    proc = subprocess.run(cmd, capture_output=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ranks = [json.loads((out / f"summary-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] >= 1
    assert ranks[0]["in_sync"] and ranks[1]["in_sync"]
    assert ranks[0]["rng"] != ranks[1]["rng"]  # each rank draws its own dropout masks


def test_ddp_two_processes_on_cpu(corpus_file, prepared, tmp_path):
    """torchrun with 2 CPU processes (gloo): ranks stay identical, rank 0 writes a loadable checkpoint."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mini_llm.train", "--data", str(corpus_file), "--vocab-size", "300", "--n-embd", "32", "--n-head", "2",
           "--n-layer", "1", "--block-size", "16", "--batch-size", "4", "--max-steps", "6", "--eval-interval", "3",
           "--out", str(out), "--no-progress", "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, timeout=300, env=env, cwd=REPO)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-3000:]
    assert "ranks in sync: True" in err
    assert proc.stdout.decode().count("model:") == 1  # only rank 0 logs
    meta = json.loads((out / "last" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 6
    model, _, _ = ckpt.load_checkpoint(out / "last")
    assert model.config.n_layer == 1
