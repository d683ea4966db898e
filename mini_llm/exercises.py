"""Exercises in the notebooks: student copies (the checks themselves live in `checks.py`).

In a committed notebook each solution sits between `### BEGIN SOLUTION` and `### END SOLUTION`
(nbgrader's markers), so the notebook runs end to end. `mini-llm exercises --out DIR` writes
student copies with each such region replaced by `raise NotImplementedError()` and outputs
cleared.
"""

import argparse
import re
from pathlib import Path

from mini_llm.errors import UserError

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


# --- student copies ---------------------------------------------------------------------------

_REGION = re.compile(r"^([ \t]*)" + re.escape(BEGIN) + r".*?^[ \t]*" + re.escape(END) + r"[^\n]*\n?", re.S | re.M)


def strip_solutions(source: str) -> str:
    """Replace each solution region (markers included) by `raise NotImplementedError()`."""
    return _REGION.sub(lambda m: f"{m.group(1)}raise NotImplementedError()\n", source)


def make_student_copies(src: Path, out: Path) -> list[Path]:
    import nbformat

    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise UserError("--out must not be the notebooks folder itself: that would overwrite the solutions")
    notebooks = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise UserError(f"{src}: no numbered notebooks found")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = strip_solutions(cell.source)
                cell.outputs, cell.execution_count = [], None
        nbformat.validate(nb)
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="student", help="folder for the student copies (default: student/)")
    p.add_argument("--notebooks", default=None, help="source folder (default: the repository's notebooks/)")


def run(args) -> int:
    from mini_llm.paths import display, project_root

    src = Path(args.notebooks) if args.notebooks else project_root() / "notebooks"
    written = make_student_copies(src, Path(args.out))
    print(f"wrote {len(written)} student notebooks to {display(args.out)} (solutions replaced by NotImplementedError)")
    return 0
