"""Where the project keeps its data and runs.

In a checkout (the usual case for the course) that is `data/` and `runs/` at the repository
root, wherever the command is started from (notebooks run inside `notebooks/`). Elsewhere it
is `./data` and `./runs`. `MINI_LLM_HOME` overrides the root (tests use it).
"""

import os
from pathlib import Path


def project_root() -> Path:
    if os.environ.get("MINI_LLM_HOME"):
        return Path(os.environ["MINI_LLM_HOME"])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists() and (checkout / "mini_llm").is_dir():
        return checkout
    return Path.cwd()


def data_dir() -> Path:
    return project_root() / "data"


def runs_dir() -> Path:
    return project_root() / "runs"


def display(path: Path | str) -> str:
    """A path as users should see it: relative to the project root or cwd when inside them."""
    path = Path(path).resolve()
    for base in (Path.cwd().resolve(), project_root().resolve()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)
