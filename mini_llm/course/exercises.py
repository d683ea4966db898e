"""Exercises in the notebooks: their structure, nbgrader metadata, and student copies.

An exercise follows one protocol (the checks themselves live in `checks/`):

    markdown task cell        the instructions                  -> locked
    solution cell             def f(...): ### BEGIN SOLUTION ... ### END SOLUTION
    check cell                check_x(f)                        -> autograded test, grade_id "x"
                              ### BEGIN HIDDEN TESTS
                              check_x(f, hidden=True).assert_passed()
                              ### END HIDDEN TESTS

`exercises_in(nb)` finds them from the sources alone, `stamp(nb)` writes nbgrader's cell
metadata from that (so `nbgrader generate_assignment` takes the notebooks unchanged, and
re-stamping changes nothing), and `student_copy(nb)` is what a student gets: solutions replaced
by `raise NotImplementedError()`, hidden tests removed, outputs cleared, metadata kept. A check
cell is worth 1 point unless it holds a comment line `# points: N`.

    mini-llm exercises --out student/     student copies of every numbered notebook
    mini-llm stamp [NB..]                 (re)stamp nbgrader metadata onto notebooks
"""

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from mini_llm.errors import UserError

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def _region(begin: str, end: str) -> re.Pattern:
    return re.compile(r"^([ \t]*)" + re.escape(begin) + r".*?^[ \t]*" + re.escape(end) + r"[^\n]*\n?", re.S | re.M)


_SOLUTION, _HIDDEN = _region(BEGIN, END), _region(BEGIN_HIDDEN, END_HIDDEN)
_CHECK_CALL = re.compile(r"^check_(\w+)\(\s*(\w+)", re.M)  # check_top_k(top_k_filter ...
_POINTS = re.compile(r"^#\s*points:\s*(\d+(?:\.\d+)?)\s*$", re.M)
_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.M)


def strip_solutions(source: str) -> str:
    """Replace each solution region (markers included) by `raise NotImplementedError()`."""
    return _SOLUTION.sub(lambda m: f"{m.group(1)}raise NotImplementedError()" + "\n" * m.group(0).endswith("\n"), source)


def strip_hidden_tests(source: str) -> str:
    """Remove each hidden-test region, markers included (and the newline left dangling before it)."""
    stripped = _HIDDEN.sub("", source)
    return stripped.rstrip("\n") if stripped != source else source


# --- the structure of a notebook's exercises --------------------------------------------------


@dataclass
class Exercise:
    grade_id: str        # from the check's name: check_top_k -> "top_k" (the grades.csv column)
    points: float
    function: str        # the function the check is called on, defined in the solution cell
    solution: int        # cell indices in the notebook
    test: int
    task: int | None     # the markdown cell just before the solution cell, if any


def defined_functions(source: str) -> list[str]:
    """Names of the top-level functions a cell defines (`def name(` at column 0)."""
    return _DEF.findall(source)


def exercises_in(nb) -> list[Exercise]:
    """Every exercise of a notebook, found from the cell sources (metadata is not needed)."""
    cells = nb.cells
    solutions = [i for i, c in enumerate(cells) if c.cell_type == "code" and BEGIN in c.source]
    found, used = [], set()
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or BEGIN_HIDDEN not in cell.source or BEGIN in cell.source:
            continue
        call = _CHECK_CALL.search(cell.source)
        if not call:
            continue
        name, function = call.groups()
        before = [s for s in solutions if s < i and s not in used]
        by_name = [s for s in before if function in defined_functions(cells[s].source)]
        if not (by_name or before):
            continue  # a check cell with no solution cell above it is not an exercise
        sol = (by_name or before)[-1]
        used.add(sol)
        points = _POINTS.search(cell.source)
        task = sol - 1 if sol > 0 and cells[sol - 1].cell_type == "markdown" else None
        found.append(Exercise(name, float(points.group(1)) if points else 1.0, function, sol, i, task))
    ids = [e.grade_id for e in found]
    if len(set(ids)) != len(ids):
        raise UserError(f"two check cells call the same check ({', '.join(sorted({g for g in ids if ids.count(g) > 1}))}): "
                        "each exercise needs its own check")
    return found


# --- nbgrader metadata ------------------------------------------------------------------------


def _meta(grade_id: str, *, grade=False, solution=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if points is not None:
        meta["points"] = int(points) if float(points).is_integer() else points
    return meta


def nbgrader_metadata(nb) -> dict[int, dict]:
    """Cell index -> the nbgrader metadata the protocol gives it (cells not listed get none)."""
    meta = {}
    for ex in exercises_in(nb):
        if ex.task is not None:
            meta[ex.task] = _meta(f"{ex.grade_id}_task", locked=True)
        meta[ex.solution] = _meta(f"{ex.grade_id}_solution", solution=True)
        meta[ex.test] = _meta(ex.grade_id, grade=True, locked=True, points=ex.points)
    return meta


def stamp(nb) -> bool:
    """Write nbgrader metadata onto the exercise cells (and remove stale metadata elsewhere).
    Returns whether anything changed; stamping a stamped notebook changes nothing."""
    wanted, changed = nbgrader_metadata(nb), False
    for i, cell in enumerate(nb.cells):
        if i in wanted and cell.metadata.get("nbgrader") != wanted[i]:
            cell.metadata["nbgrader"] = wanted[i]
            changed = True
        elif i not in wanted and "nbgrader" in cell.metadata:
            del cell.metadata["nbgrader"]
            changed = True
    return changed


# --- student copies ---------------------------------------------------------------------------


def student_copy(nb):
    """A student's copy: stamped, solutions and hidden tests removed, outputs cleared, locked
    cells read-only in Jupyter (as nbgrader's release does)."""
    nb = copy.deepcopy(nb)
    stamp(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_hidden_tests(strip_solutions(cell.source))
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        grader = cell.metadata.get("nbgrader", {})
        if grader.get("locked"):
            cell.metadata["editable"] = False
        if grader.get("locked") or grader.get("solution"):
            cell.metadata["deletable"] = False
    return nb


def course_notebooks(src: Path) -> list[Path]:
    notebooks = sorted(Path(src).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise UserError(f"{src}: no numbered notebooks (NN_name.ipynb) found")
    return notebooks


def make_student_copies(src: Path, out: Path) -> list[Path]:
    import nbformat

    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise UserError("--out must not be the notebooks folder itself: that would overwrite the solutions")
    notebooks = course_notebooks(src)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = student_copy(nbformat.read(path, as_version=4))
        nbformat.validate(nb)
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def stamp_files(paths) -> list[Path]:
    """Stamp notebooks in place; only files whose metadata changed are rewritten."""
    import nbformat

    changed = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"{path}: no such notebook")
        nb = nbformat.read(path, as_version=4)
        if stamp(nb):
            nbformat.write(nb, path)
            changed.append(path)
    return changed
