"""`mini-llm grade`: grade a folder of submitted notebooks into grades.csv, with feedback per student.

SUBMISSIONS holds either one folder per student (`alice/04_minigpt.ipynb`, ...) or flat files
named `STUDENT__NOTEBOOK.ipynb` (`alice__04_minigpt.ipynb`), or both. A file is matched to the
course notebook of the same name, or else of the same two-digit number (`04_minigpt (1).ipynb`).

How one submission is graded. The course's own notebook is the template: each solution cell
(of a step or an exercise) is replaced by the student's (found by its nbgrader grade_id, or
else by the function or class it defines); every other cell, the check cells with their hidden
tests included, is the course's, so an edited or deleted check cannot pass. It runs in a fresh
kernel in a scratch folder, with a time limit for the whole notebook. A step or an exercise
scores its points when its check cell runs without raising (public and hidden cases pass),
else 0, with the check's message as feedback. A step that fails hands the package's piece on,
as in the student's own notebook, so the steps after it are graded on their own.

What runs. The notebook's imports and its step and exercise cells (seconds per notebook), unless
a solution or a check uses a name that some other cell of the course defines (a model, a
variable...): then, and always with --full, the whole notebook runs, as nbgrader's autograde
would (as long as the notebook takes: up to a few minutes).

Outputs: grades.csv (student, notebook, one column per step and exercise, total, max, status) and a
markdown feedback file per student and notebook. SUBMISSIONS is only read.
"""

import ast
import builtins
import copy
import csv
import math
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from mini_llm.course.exercises import (
    Exercise,
    course_notebooks,
    defined_names,
    exercises_in,
    stamp,
    strip_solutions,
)
from mini_llm.errors import UserError

FLAT = "__"  # alice__04_minigpt.ipynb
DEFAULT_TIMEOUT = 300


# --- the course: the reference copy of every solution and test cell ---------------------------


@dataclass
class CourseNotebook:
    name: str             # file name, e.g. 04_minigpt.ipynb
    nb: object            # the stamped source notebook
    exercises: list[Exercise]

    @property
    def max_points(self) -> float:
        return sum(e.points for e in self.exercises)


def load_course(folder: Path) -> dict[str, CourseNotebook]:
    import nbformat

    course = {}
    for path in course_notebooks(folder):
        nb = nbformat.read(path, as_version=4)
        stamp(nb)  # in memory: the grader follows the protocol even on a notebook not stamped yet
        course[path.name] = CourseNotebook(path.name, nb, exercises_in(nb))
    ids = [e.grade_id for c in course.values() for e in c.exercises]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise UserError(f"{folder}: steps or exercises {', '.join(twice)} appear in two notebooks; grades.csv needs unique names")
    return course


# --- the submissions ---------------------------------------------------------------------------


@dataclass
class Submission:
    student: str
    notebook: str         # the course notebook's file name
    path: Path | None     # None: not handed in


def match_notebook(filename: str, course) -> str | None:
    if filename in course:
        return filename
    number = re.match(r"(\d\d)", filename)
    same = [n for n in course if number and n.startswith(number.group(1) + "_")]
    return same[0] if len(same) == 1 else None


def find_submissions(folder: Path, course) -> tuple[list[Submission], list[str]]:
    """Every (student, notebook) pair: handed in or not, for each notebook anybody handed in.
    Also returns what was skipped, one line each."""
    found, skipped = {}, []

    def add(student: str, filename: str, path: Path) -> None:
        name = match_notebook(filename, course)
        if not student or name is None:
            skipped.append(f"{path.name}: no course notebook matches '{filename}'" if student else
                           f"{path.name}: empty student name")
        elif (student, name) in found:
            skipped.append(f"{path.name}: {student} already handed in {name} as {found[student, name].path.name}")
        else:
            found[student, name] = Submission(student, name, path)

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for path in sorted(entry.glob("*.ipynb")):
                add(entry.name, path.name, path)
        elif entry.suffix == ".ipynb" and FLAT in entry.name:
            student, filename = entry.name.split(FLAT, 1)
            add(student, filename, entry)
        else:
            skipped.append(f"{entry.name}: neither a student folder nor a STUDENT__NOTEBOOK.ipynb file")
    if not found:
        raise UserError(f"{folder}: no submissions found; expected STUDENT/NN_name.ipynb or STUDENT__NN_name.ipynb")
    students = sorted({s for s, _ in found})
    notebooks = sorted({n for _, n in found})
    return [found.get((s, n)) or Submission(s, n, None) for s in students for n in notebooks], skipped


# --- what runs: the graded notebook -----------------------------------------------------------

_IPYTHON_NAMES = {"display", "get_ipython", "In", "Out", "_", "__", "___", "exit", "quit"}


def _python(source: str) -> str:
    """A cell as plain Python (IPython's %magics and !commands translated)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _parse(source: str):
    try:
        return ast.parse(_python(source))
    except SyntaxError:
        return None


def names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell reads, names it binds anywhere). Binding anywhere counts, which can only
    under-count what a cell needs from outside: good enough to decide what must run before it."""
    tree = _parse(source)
    read, bound = set(), set()
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return read, bound


def import_lines(cells) -> list[str]:
    """The top-level import statements of some code cells, in order, each once."""
    lines = []
    for cell in cells:
        tree = _parse(cell.source)
        for node in tree.body if tree else ():
            if isinstance(node, (ast.Import, ast.ImportFrom)) and ast.unparse(node) not in lines:
                lines.append(ast.unparse(node))
    return lines


def _body(cells, exercise_cells) -> list:
    return [c for i, c in enumerate(cells) if c.cell_type == "code" and i not in exercise_cells]


def needed_from_body(cells, exercise_cells) -> list[str]:
    """Names the exercise cells read that only the rest of the notebook defines (not its imports):
    when there are any, the whole notebook must run."""
    body = _body(cells, exercise_cells)
    need, have = set(), names("\n".join(import_lines(body)))[1]
    for i in exercise_cells:
        read, bound = names(cells[i].source)
        need |= read
        have |= bound
    defined = set().union(*(names(c.source)[1] for c in body))
    return sorted((need - have - set(dir(builtins)) - _IPYTHON_NAMES) & defined)


def _clean(source: str) -> str:
    """A cell's code without comments and blank lines: to tell an untouched solution cell (nbgrader's
    release adds `# YOUR CODE HERE`)."""
    return "\n".join(line.rstrip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))


@dataclass
class Plan:
    """The notebook to run for one submission, and where its exercises sit in it."""
    nb: object
    solutions: dict[str, int]      # grade_id -> cell index in nb
    tests: dict[str, int]
    attempted: dict[str, bool]
    notes: dict[str, str]          # grade_id -> a remark for the feedback (e.g. solution cell not found)
    kinds: dict[str, str]          # grade_id -> "step" or "exercise"
    full: bool
    why_full: str = ""

    def where(self, index: int) -> str:
        """A cell of the graded notebook as a teacher knows it."""
        for gid in self.tests:
            if index in (self.tests[gid], self.solutions[gid]):
                return f"{self.kinds[gid]} {gid}"
        return f"cell {index + 1} of the notebook" if self.full else "the notebook's imports"


def student_solutions(student_nb, exercises) -> dict[str, str | None]:
    """grade_id -> the student's solution cell source (None when no cell can be found)."""
    code = [c for c in student_nb.cells if c.cell_type == "code"]
    found = {}
    for ex in exercises:
        by_id = [c for c in code if c.metadata.get("nbgrader", {}).get("grade_id") == f"{ex.grade_id}_solution"]
        by_def = [c for c in code if ex.function in defined_names(c.source)]
        cells = by_id or by_def
        found[ex.grade_id] = cells[-1].source if cells else None
    return found


def _guard(grade_id: str) -> str:
    """A line run before each check cell: the check comes fresh from the course's checks, whatever
    a solution cell defined or patched. The harness is reloaded first, then the notebook's module
    (which takes the harness's fresh pieces), then the package that hands its checks on."""
    from mini_llm.course import checks

    module = checks.module_of(f"check_{grade_id}")
    if module is None:
        return ""
    return ("import importlib as _grader_importlib, mini_llm.course.checks as _grader_checks, "
            f"mini_llm.course.checks.harness as _grader_harness, {module.__name__} as _grader_module; "
            "[_grader_importlib.reload(m) for m in (_grader_harness, _grader_module, _grader_checks)]; "
            f"from {module.__name__} import check_{grade_id}\n")


def plan(course: CourseNotebook, student_nb, full: bool = False) -> Plan:
    import nbformat

    exercises = course.exercises
    mine = student_solutions(student_nb, exercises)
    template = copy.deepcopy(course.nb)
    notes, attempted = {}, {}
    for ex in exercises:
        reference = template.cells[ex.solution].source
        source = mine[ex.grade_id]
        if source is None:
            notes[ex.grade_id] = f"no solution cell found (no cell defines `{ex.function}`): graded as not attempted"
            source = strip_solutions(reference)
        attempted[ex.grade_id] = _clean(source) != _clean(strip_solutions(reference))
        template.cells[ex.solution].source = source
        template.cells[ex.test].source = _guard(ex.grade_id) + template.cells[ex.test].source

    exercise_cells = sorted({i for ex in exercises for i in (ex.solution, ex.test)})
    why = ""
    if not full:
        from_body = needed_from_body(template.cells, exercise_cells)
        if from_body:
            full, why = True, f"the steps and exercises use {', '.join(from_body)} from other cells of the notebook"

    if full:
        cells = template.cells
        index = {i: i for i in range(len(cells))}
    else:
        setup = "\n".join(import_lines(_body(template.cells, exercise_cells)))
        cells = [nbformat.v4.new_code_cell(setup)] + [template.cells[i] for i in exercise_cells]
        index = {i: k + 1 for k, i in enumerate(exercise_cells)}
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    template.cells = cells
    return Plan(template, {e.grade_id: index[e.solution] for e in exercises},
                {e.grade_id: index[e.test] for e in exercises}, attempted, notes, {e.grade_id: e.kind for e in exercises},
                full, why)


# --- running it -------------------------------------------------------------------------------


def execute(nb, timeout: float, workdir: Path, threads: int = 1) -> tuple[set[int], str, int | None]:
    """Run nb's code cells in a fresh kernel (errors do not stop it) within `timeout` seconds in
    all. Returns (indices of the cells that finished, status, the cell running when it stopped)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), MPLBACKEND="Agg",
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    client = NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=math.ceil(timeout),
                            resources={"metadata": {"path": str(workdir)}})
    done, current = set(), None
    try:
        client.reset_execution_trackers()
        with client.setup_kernel(env=env, stderr=subprocess.DEVNULL):  # the kernel's own log lines
            deadline = time.monotonic() + timeout
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                current = index
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CellTimeoutError("out of time")
                client.timeout = max(1, math.ceil(left))
                client.execute_cell(cell, index)
                done.add(index)
    except (CellTimeoutError, TimeoutError):
        return done, f"timeout: still running after {timeout:g} s", current
    except DeadKernelError:
        return done, "error: the kernel died", current
    return done, "graded", None


@dataclass
class Outcome:
    student: str
    notebook: str
    scores: dict[str, float]                       # grade_id -> points
    max_points: float
    status: str
    feedback: list[tuple[str, float, float, str]] = field(default_factory=list)  # (grade_id, got, max, message)
    remark: str = ""

    @property
    def total(self) -> float:
        return sum(self.scores.values())


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type == "execute_result":
            parts.append(str(out.data.get("text/plain", "")))
    return "".join(parts).strip()


def _error(outputs) -> str | None:
    for out in outputs:
        if out.output_type == "error":
            return out.evalue if out.ename == "AssertionError" else f"{out.ename}: {out.evalue}"
    return None


def score(plan_: Plan, exercise: Exercise, done: set[int]) -> tuple[float, str]:
    """(points, message) of one exercise in an executed plan: full points when its check cell ran
    without raising."""
    gid = exercise.grade_id
    test, solution = plan_.nb.cells[plan_.tests[gid]], plan_.nb.cells[plan_.solutions[gid]]
    if not plan_.attempted[gid]:
        return 0.0, plan_.notes.get(gid, "not attempted (the solution cell is unchanged)")
    if plan_.tests[gid] not in done:
        return 0.0, "not graded: the notebook stopped before this check finished"
    failure = _error(test.outputs)
    broken = _error(solution.outputs)
    if broken:
        failure = f"your solution cell raised {broken}. " + (failure or "")
    if failure:
        return 0.0, failure.strip()
    return exercise.points, _text(test.outputs) or "passed"


def grade_one(sub: Submission, course: CourseNotebook, timeout: float, full: bool = False, threads: int = 1) -> Outcome:
    """Grade one submission; never raises (whatever happens becomes the row's status)."""
    import nbformat

    out = Outcome(sub.student, sub.notebook, {e.grade_id: 0.0 for e in course.exercises}, course.max_points, "graded")
    if sub.path is None:
        out.status = "missing: not handed in"
        out.feedback = [(e.grade_id, 0.0, e.points, "not handed in") for e in course.exercises]
        return out
    try:
        student_nb = nbformat.read(sub.path, as_version=4)
        the_plan = plan(course, student_nb, full)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:120]
        out.status = f"error: not a readable notebook ({type(e).__name__}: {first})"
        return out
    if not any(the_plan.attempted.values()):
        out.status = "not attempted" if course.exercises else "no exercises"
        out.feedback = [(e.grade_id, 0.0, e.points, the_plan.notes.get(e.grade_id, "not attempted (the solution cell is unchanged)"))
                        for e in course.exercises]
        return out
    try:
        with tempfile.TemporaryDirectory(prefix="mini-llm-grade-") as workdir:
            done, out.status, stopped = execute(the_plan.nb, timeout, Path(workdir), threads)
    except Exception as e:  # a kernel that would not start, or anything else: this row only
        done, out.status, stopped = set(), f"error: {type(e).__name__}: {str(e).strip()[:120]}", None
    stop = out.status
    if stopped is not None:
        out.status += f" in {the_plan.where(stopped)}"
    for ex in course.exercises:
        got, message = score(the_plan, ex, done)
        if stopped in (the_plan.solutions[ex.grade_id], the_plan.tests[ex.grade_id]):
            message = f"{stop} in this {ex.kind} (an endless loop? a crash?)"
        out.scores[ex.grade_id] = got
        out.feedback.append((ex.grade_id, got, ex.points, message))
    out.remark = f"The whole notebook ran ({the_plan.why_full or '--full'})." if the_plan.full else ""
    return out


def grade_all(subs: list[Submission], course, timeout: float, jobs: int, full: bool = False,
              progress: bool = True) -> list[Outcome]:
    """Grade every submission, `jobs` kernels at a time, in a stable order."""
    from tqdm import tqdm

    threads = max(1, (os.cpu_count() or 1) // jobs)
    outcomes = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(subs), desc="grading", unit="notebook", disable=not progress) as bar:
        futures = [pool.submit(grade_one, s, course[s.notebook], timeout, full, threads) for s in subs]
        try:
            for future in as_completed(futures):
                outcomes.append(future.result())
                bar.update()
        except KeyboardInterrupt:  # start nothing new; the kernels running now end within their timeout
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return sorted(outcomes, key=lambda o: (o.student, o.notebook))


# --- reporting --------------------------------------------------------------------------------


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def columns(course, outcomes) -> list[str]:
    """Exercise columns, in course order, for the notebooks that appear."""
    present = {o.notebook for o in outcomes}
    return [e.grade_id for name, c in course.items() if name in present for e in c.exercises]


def write_csv(path: Path, course, outcomes) -> None:
    exercise_columns = columns(course, outcomes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["student", "notebook", *exercise_columns, "total", "max", "status"])
        for o in outcomes:
            w.writerow([o.student, Path(o.notebook).stem, *(_num(o.scores[c]) if c in o.scores else "" for c in exercise_columns),
                        _num(o.total), _num(o.max_points), o.status])


def feedback_markdown(o: Outcome) -> str:
    lines = [f"# {Path(o.notebook).stem}: feedback for {o.student}", "",
             f"Score: {_num(o.total)} / {_num(o.max_points)} ({o.status})", ""]
    if o.remark:
        lines += [o.remark, ""]
    for gid, got, most, message in o.feedback:
        message = message.removeprefix("✅ ").removeprefix("❌ ")
        lines += [f"## {gid}: {_num(got)} / {_num(most)}", "", ("✅ " if got == most else "❌ ") + message, ""]
    if not o.feedback and o.status.startswith("error"):
        lines += ["The notebook could not be graded; hand in the .ipynb file saved from Jupyter.", ""]
    return "\n".join(lines)


def write_feedback(folder: Path, outcomes) -> None:
    for o in outcomes:
        target = folder / o.student / f"{Path(o.notebook).stem}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(feedback_markdown(o), encoding="utf-8")


def summary(course, outcomes) -> list[str]:
    """Per exercise: mean score and how many rows solved it (full points)."""
    rows = [("exercise", "notebook", "mean", "solved")]
    for name, c in course.items():
        mine = [o for o in outcomes if o.notebook == name]
        for e in c.exercises if mine else ():
            got = [o.scores[e.grade_id] for o in mine]
            rows.append((e.grade_id, Path(name).stem, f"{sum(got) / len(got):.2f} / {_num(e.points)}",
                         f"{sum(g == e.points for g in got)} of {len(got)}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
