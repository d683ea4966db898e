"""The exercise protocol in nbgrader's terms: stamped metadata, and nbgrader itself on the course.

nbgrader comes with the `teach` extra (CI installs it); without it only its test is skipped.
"""

import os
import subprocess
import sys

import nbformat
import pytest

from mini_llm.course.exercises import BEGIN, BEGIN_HIDDEN, exercises_in, stamp, student_copy
from mini_llm.course.grade import import_lines, needed_from_body
from tests.conftest import REPO, one_error_line, run_cli

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def protocol_notebook(points_comment=""):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"),
                nbformat.v4.new_code_cell("import torch"),
                nbformat.v4.new_markdown_cell("**Exercise 1.** Crop."),
                nbformat.v4.new_code_cell("def crop(ids, block_size):\n    ### BEGIN SOLUTION\n    return ids[-block_size:]\n"
                                          "    ### END SOLUTION"),
                nbformat.v4.new_code_cell(f"{points_comment}from mini_llm.course.checks import check_crop\n\ncheck_crop(crop)\n"
                                          "### BEGIN HIDDEN TESTS\ncheck_crop(crop, hidden=True).assert_passed()\n### END HIDDEN TESTS"),
                nbformat.v4.new_code_cell("print('after')")]
    return nb


def test_stamp_derives_nbgrader_metadata_from_the_cells():
    nb = protocol_notebook()
    nb.cells[5].metadata["nbgrader"] = {"grade": True, "grade_id": "stale", "points": 3}
    assert stamp(nb)
    meta = [c.metadata.get("nbgrader") for c in nb.cells]
    assert meta[0] is None and meta[1] is None and meta[5] is None
    assert meta[2] == {"grade": False, "grade_id": "crop_task", "locked": True, "schema_version": 3, "solution": False, "task": False}
    assert meta[3] == {"grade": False, "grade_id": "crop_solution", "locked": False, "schema_version": 3, "solution": True,
                       "task": False}
    assert meta[4] == {"grade": True, "grade_id": "crop", "locked": True, "points": 1, "schema_version": 3,
                       "solution": False, "task": False}
    assert not stamp(nb)  # stamping twice changes nothing
    worth_two = protocol_notebook("# points: 2\n")
    stamp(worth_two)
    assert worth_two.cells[4].metadata["nbgrader"]["points"] == 2
    assert [e.grade_id for e in exercises_in(worth_two)] == ["crop"] and exercises_in(worth_two)[0].points == 2.0


def test_student_copy_of_a_protocol_notebook():
    copy = student_copy(protocol_notebook())
    assert copy.cells[3].source == "def crop(ids, block_size):\n    raise NotImplementedError()"
    assert copy.cells[4].source == "from mini_llm.course.checks import check_crop\n\ncheck_crop(crop)"
    assert copy.cells[4].metadata["editable"] is False and copy.cells[4].metadata["nbgrader"]["grade_id"] == "crop"
    assert copy.cells[2].metadata["editable"] is False and copy.cells[3].metadata["deletable"] is False
    assert "editable" not in copy.cells[3].metadata


def test_stamp_command(tmp_path):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(protocol_notebook(), path)
    first = run_cli("stamp", path)
    assert first.returncode == 0 and "1 changed" in first.stdout.decode(), first.stderr.decode()
    assert nbformat.read(path, as_version=4).cells[4].metadata["nbgrader"]["grade_id"] == "crop"
    assert "0 changed" in run_cli("stamp", path).stdout.decode()
    assert "no such notebook" in one_error_line(run_cli("stamp", tmp_path / "nope.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_stamped(path):
    nb = nbformat.read(path, as_version=4)
    assert not stamp(nb), f"run: python -m mini_llm.exercises stamp notebooks/{path.name}"


def _follows_the_protocol(path):
    nb = nbformat.read(path, as_version=4)
    if not any(BEGIN_HIDDEN in c.source for c in nb.cells):
        pytest.skip(f"{path.name} has no check cell with hidden tests yet (not converted to the exercise protocol)")
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_solution_cell_is_an_exercise(path):
    nb = _follows_the_protocol(path)
    solutions = [i for i, c in enumerate(nb.cells) if BEGIN in c.source]
    found = exercises_in(nb)
    assert sorted(e.solution for e in found) == solutions
    assert len(found) >= 2 and all(e.task is not None for e in found)


# --- nbgrader itself ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nbgrader_course(tmp_path_factory):
    """An nbgrader course whose assignment `course` holds every protocol notebook, released with
    `nbgrader generate_assignment`."""
    pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install -e '.[teach]')")
    root = tmp_path_factory.mktemp("nbgrader")
    (root / "source" / "course").mkdir(parents=True)
    names = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        if any(BEGIN_HIDDEN in c.source for c in nb.cells):
            nbformat.write(nb, root / "source" / "course" / path.name)
            names.append(path.stem)
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "course", "--force"], cwd=root,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "source" / "course", root / "release" / "course", names


def exercise_part(src, dst, whole=False):
    """The cells nbgrader grades (task, solution and test cells) after the notebook's imports, as
    `mini-llm grade` runs them (the whole notebooks run under nbval), or all of it with `whole`."""
    nb = nbformat.read(src, as_version=4)
    if not whole:
        graded = [c for c in nb.cells if "nbgrader" in c.metadata]
        body = [c for c in nb.cells if c.cell_type == "code" and "nbgrader" not in c.metadata]
        nb.cells = [nbformat.v4.new_code_cell("\n".join(import_lines(body)))] + graded
    nbformat.write(nb, dst)
    return dst


def needs_whole(path):
    """Whether the exercises use names that only the notebook's other cells define (the grader's rule)."""
    nb = nbformat.read(path, as_version=4)
    return bool(needed_from_body(nb.cells, [i for i, c in enumerate(nb.cells)
                                            if c.cell_type == "code" and "nbgrader" in c.metadata]))


def test_release_has_no_solutions_and_no_hidden_tests(nbgrader_course):
    sources, releases, names = nbgrader_course
    assert len(names) >= 4
    for name in names:
        release = nbformat.read(releases / f"{name}.ipynb", as_version=4)
        text = "\n".join(c.source for c in release.cells)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "hidden=True" not in text
        source = nbformat.read(sources / f"{name}.ipynb", as_version=4)
        ids = [(e.grade_id, e.points) for e in exercises_in(source)]
        tests = [(c.metadata.nbgrader.grade_id, c.metadata.nbgrader.points) for c in release.cells
                 if c.metadata.get("nbgrader", {}).get("grade")]
        assert tests == ids and len(ids) >= 2


def validate(source, release):
    """(`nbgrader validate` on the source, `nbgrader validate --invert` on the release)."""
    from nbgrader.validator import Validator

    return Validator().validate(str(source)), Validator(invert=True).validate(str(release))


def test_nbgrader_validate_passes_the_source_and_fails_the_release(nbgrader_course, tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    sources, releases, names = nbgrader_course
    whole = {name: needs_whole(sources / f"{name}.ipynb") for name in names}
    pairs = [(exercise_part(sources / f"{name}.ipynb", tmp_path / f"source_{name}.ipynb", whole[name]),
              exercise_part(releases / f"{name}.ipynb", tmp_path / f"release_{name}.ipynb", whole[name])) for name in names]
    # processes, not threads: nbgrader sets environment variables while it validates
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(validate, *zip(*pairs)))
    for name, (source, release_inverted) in zip(names, results):
        assert source == {}, (name, source)  # every check passes with the solutions
        assert release_inverted == {}, (name, release_inverted)  # --invert: no check passes unsolved
