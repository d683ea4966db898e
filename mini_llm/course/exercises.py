"""Steps and exercises in the notebooks: their structure, nbgrader metadata, and the workbook.

The learner writes every piece a notebook builds (a *step*) and a few end-of-notebook
*exercises*. Both follow one protocol of three cells (the checks themselves live in `checks/`):

    markdown task cell        the instructions                  -> locked
    solution cell             def f(...): / class F(...):       -> the learner's
                                  ### BEGIN SOLUTION ... ### END SOLUTION
    check cell                an exercise:                      -> autograded test, grade_id "x"
                                  check_x(f)
                                  ### BEGIN HIDDEN TESTS
                                  check_x(f, hidden=True).assert_passed()
                                  ### END HIDDEN TESTS
                              a step (its proof):
                                  proof = check_x(f)
                                  f = proof.piece  # yours if it passed, else mini_llm's
                                  ### BEGIN HIDDEN TESTS
                                  check_x(proof.yours, hidden=True).assert_passed()
                                  ### END HIDDEN TESTS
                                  proof

A step's proof hands the piece on: the rest of the notebook uses the learner's piece if it passed
the public cases, else the package's, and the proof says which in one line. The piece is handed
on before the hidden tests, which run on the learner's own piece (`proof.yours`): when the
grader's hidden asserts fail, the notebook still goes on with a working piece, exactly as the
learner's copy did. `check_cell_source` writes both forms.

`exercises_in(nb)` finds steps and exercises from the sources alone, `stamp(nb)` writes nbgrader's
cell metadata from that (so `nbgrader generate_assignment` takes the notebooks unchanged, and
re-stamping changes nothing), and `student_copy(nb)` is the learner's workbook: every solution
replaced by `raise NotImplementedError()`, hidden tests removed, outputs cleared, metadata kept.
A blank workbook runs top to bottom: each step says "not written yet" and the package's piece
stands in. A check cell is worth 1 point unless it holds a comment line `# points: N`.

    mini-llm workbook --out workbook/     the workbook: every numbered notebook, blanked
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
_CHECK_CALL = re.compile(r"^(?:proof\s*=\s*)?check_(\w+)\(\s*(\w+)", re.M)  # check_top_k(top_k_filter ...
_HANDS_ON = re.compile(r"^(\w+)\s*=\s*proof\.piece\b", re.M)  # a step's proof: merge = proof.piece
_POINTS = re.compile(r"^#\s*points:\s*(\d+(?:\.\d+)?)\s*$", re.M)
_DEF = re.compile(r"^(?:def|class)\s+(\w+)\s*[(:]", re.M)


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
    """A step or an exercise (graded alike)."""
    grade_id: str        # from the check's name: check_top_k -> "top_k" (the grades.csv column)
    points: float
    function: str        # the function (or class) the check is called on, defined in the solution cell
    solution: int        # cell indices in the notebook
    test: int
    task: int | None     # the markdown cell just before the solution cell, if any
    step: bool = False   # a step: its proof hands the piece on to the rest of the notebook

    @property
    def kind(self) -> str:
        return "step" if self.step else "exercise"


def defined_names(source: str) -> list[str]:
    """Names of the top-level functions and classes a cell defines (`def name(`, `class Name` at column 0)."""
    return _DEF.findall(source)


def check_cell_source(check: str, function: str, step: bool = False) -> str:
    """A check cell's protocol lines (after its import): an exercise's check and hidden tests, or a
    step's proof, which also hands the piece on before the hidden tests run on the learner's own."""
    tested = "proof.yours" if step else function
    hidden = f"{BEGIN_HIDDEN}\n{check}({tested}, hidden=True).assert_passed()\n{END_HIDDEN}"
    if not step:
        return f"{check}({function})\n{hidden}"
    return f"proof = {check}({function})\n{function} = proof.piece  # yours if it passed, else mini_llm's\n{hidden}\nproof"


def exercises_in(nb) -> list[Exercise]:
    """Every step and exercise of a notebook, found from the cell sources (metadata is not needed)."""
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
        by_name = [s for s in before if function in defined_names(cells[s].source)]
        if not (by_name or before):
            continue  # a check cell with no solution cell above it is not an exercise
        sol = (by_name or before)[-1]
        used.add(sol)
        points = _POINTS.search(cell.source)
        task = sol - 1 if sol > 0 and cells[sol - 1].cell_type == "markdown" else None
        hands_on = _HANDS_ON.search(cell.source)
        found.append(Exercise(name, float(points.group(1)) if points else 1.0, function, sol, i, task,
                              step=bool(hands_on and hands_on.group(1) == function)))
    ids = [e.grade_id for e in found]
    if len(set(ids)) != len(ids):
        raise UserError(f"two check cells call the same check ({', '.join(sorted({g for g in ids if ids.count(g) > 1}))}): "
                        "each step and exercise needs its own check")
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


# --- the workbook -----------------------------------------------------------------------------


def student_copy(nb):
    """The learner's copy (the workbook; nbgrader calls it the release): stamped, every step's and
    exercise's solution and the hidden tests removed, outputs cleared, locked cells read-only in
    Jupyter (as nbgrader's release does)."""
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
    """Write the workbook: a student copy of every numbered notebook in `src` into `out`."""
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
