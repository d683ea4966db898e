"""The workbook (`mini-llm workbook`): every step and exercise of the course blanked, and still a
notebook that runs top to bottom, the package's pieces standing in for the learner's; the
protocol's cells (exercises.check_cell_source), and a step graded on its own when an earlier one failed."""

import nbformat
import pytest

from mini_llm.course import grade
from mini_llm.course.exercises import check_cell_source, exercises_in, stamp, strip_hidden_tests, student_copy
from tests.conftest import REPO

COURSE = REPO / "notebooks"
# the notebooks whose build cells are steps (issue 21); 03-08 join as they are converted
CONVERTED = ["01_tokenization", "02_datasets", "03_attention", "04_minigpt", "05_training", "06_sampling_and_chat",
             "07_export", "08_modern_gpt", "09_chat_finetuning", "10_gpt2_and_transformers"]


def course_nb(name):
    nb = nbformat.read(COURSE / f"{name}.ipynb", as_version=4)
    stamp(nb)
    return nb


# --- the protocol ------------------------------------------------------------------------------


def test_check_cell_source_writes_an_exercise_and_a_step():
    assert check_cell_source("check_crop", "crop") == (
        "check_crop(crop)\n### BEGIN HIDDEN TESTS\ncheck_crop(crop, hidden=True).assert_passed()\n### END HIDDEN TESTS")
    step = check_cell_source("check_block", "Block", step=True)
    assert step == ("proof = check_block(Block)\nBlock = proof.piece  # yours if it passed, else mini_llm's\n"
                    "### BEGIN HIDDEN TESTS\ncheck_block(proof.yours, hidden=True).assert_passed()\n### END HIDDEN TESTS\n"
                    "proof")
    # the workbook's proof: hands the piece on and shows the verdict
    assert strip_hidden_tests(step) == "proof = check_block(Block)\nBlock = proof.piece  # yours if it passed, else mini_llm's\nproof"


def protocol_notebook():
    """A step (a class, its methods blanked one by one) and an exercise."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("**Step 1.** A dataset."),
                nbformat.v4.new_code_cell("class Windows:\n    def __init__(self, ids, block_size, stride=1):\n"
                                          "        ### BEGIN SOLUTION\n        self.ids = ids\n        ### END SOLUTION\n\n"
                                          "    def __len__(self):\n        ### BEGIN SOLUTION\n        return 0\n"
                                          "        ### END SOLUTION"),
                nbformat.v4.new_code_cell("from mini_llm.course.checks import check_window_dataset\n\n"
                                          + check_cell_source("check_window_dataset", "Windows", step=True)),
                nbformat.v4.new_markdown_cell("**Exercise 1.** Crop."),
                nbformat.v4.new_code_cell("def crop(ids, block_size):\n    ### BEGIN SOLUTION\n    return ids[-block_size:]\n"
                                          "    ### END SOLUTION"),
                nbformat.v4.new_code_cell("# points: 2\nfrom mini_llm.course.checks import check_crop\n\n"
                                          + check_cell_source("check_crop", "crop"))]
    return nb


def test_steps_are_found_stamped_and_blanked_like_exercises():
    nb = protocol_notebook()
    found = exercises_in(nb)
    assert [(e.grade_id, e.function, e.kind, e.points, e.solution, e.test, e.task) for e in found] == [
        ("window_dataset", "Windows", "step", 1.0, 1, 2, 0), ("crop", "crop", "exercise", 2.0, 4, 5, 3)]
    assert stamp(nb) and nb.cells[2].metadata["nbgrader"]["grade_id"] == "window_dataset"
    assert nb.cells[1].metadata["nbgrader"]["solution"] and nb.cells[2].metadata["nbgrader"]["grade"]
    copy = student_copy(nb)
    assert copy.cells[1].source == ("class Windows:\n    def __init__(self, ids, block_size, stride=1):\n"
                                    "        raise NotImplementedError()\n\n    def __len__(self):\n"
                                    "        raise NotImplementedError()")
    assert copy.cells[2].source.endswith("proof = check_window_dataset(Windows)\n"
                                         "Windows = proof.piece  # yours if it passed, else mini_llm's\nproof")
    assert copy.cells[2].metadata["editable"] is False


@pytest.mark.parametrize("name", CONVERTED)
def test_every_build_cell_of_a_converted_notebook_is_a_step(name):
    """The steps come first, then at least three exercises; every step has a task above it."""
    found = exercises_in(course_nb(name))
    kinds = [e.kind for e in found]
    assert kinds == sorted(kinds, key=lambda k: k != "step") and kinds.count("step") >= 3 and kinds.count("exercise") >= 3
    assert all(e.task is not None for e in found)


def test_workbook_command_and_its_old_name(tmp_path, capsys):
    from mini_llm.cli import build_parser

    for command, out in (("workbook", "wb"), ("exercises", "student")):
        args = build_parser().parse_args([command, "--out", str(tmp_path / out), "--notebooks", str(COURSE)])
        assert args.func(args) == 0
    assert "every step and exercise blank" in capsys.readouterr().out
    assert build_parser().parse_args(["workbook"]).out == "workbook"
    assert build_parser().parse_args(["exercises"]).out == "student"  # the old name keeps its folder
    names = sorted(p.name for p in (tmp_path / "wb").glob("*.ipynb"))
    assert names == sorted(p.name for p in COURSE.glob("[0-9][0-9]_*.ipynb"))
    for n in names:
        assert (tmp_path / "wb" / n).read_bytes() == (tmp_path / "student" / n).read_bytes()
    text = (tmp_path / "wb" / "01_tokenization.ipynb").read_text()
    assert "BEGIN SOLUTION" not in text and "hidden=True" not in text and "counts.get(pair, 0)" not in text


# --- the blank workbook runs -------------------------------------------------------------------


def _printed(cell) -> str:
    return "".join(o.get("text", "") if o.output_type == "stream" else str(o.get("data", {}).get("text/plain", ""))
                   for o in cell.outputs if o.output_type in ("stream", "execute_result"))


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    """Each converted notebook's workbook, executed in a fresh kernel: {name: (course, executed, status)}."""
    ran = {}
    for name in CONVERTED:
        course = course_nb(name)
        nb = student_copy(course)
        done, status, _ = grade.execute(nb, timeout=300, workdir=tmp_path_factory.mktemp(name), threads=2)
        ran[name] = (course, nb, status, done)
    return ran


@pytest.mark.parametrize("name", CONVERTED)
def test_a_blank_workbook_runs_top_to_bottom(blank, name):
    course, nb, status, done = blank[name]
    assert status == "graded"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert i in done and not [o for o in cell.outputs if o.output_type == "error"], (i, cell.source[:200], cell.outputs)


@pytest.mark.parametrize("name", CONVERTED)
def test_each_step_says_not_written_yet_and_the_package_stands_in(blank, name):
    course, nb, _, _ = blank[name]
    for e in exercises_in(course):
        said = _printed(nb.cells[e.test]) + "".join(o.get("text", "") for o in nb.cells[e.test].outputs)
        if e.step:
            assert f"your {e.function} is not written yet: the rest of this notebook uses mini_llm's." in said, said
        else:
            assert "not written yet" in said, said


@pytest.mark.parametrize("name", CONVERTED)
def test_with_the_packages_pieces_the_notebook_shows_what_the_course_shows(blank, name):
    """Every cell nbval compares, other than the proofs and checks, prints what the course notebook
    (the learner's pieces all written) committed: the package's pieces stand in exactly."""
    course, nb, _, _ = blank[name]
    graded = {i for e in exercises_in(course) for i in (e.solution, e.test)}
    compared = 0
    for i, (mine, theirs) in enumerate(zip(nb.cells, course.cells)):
        if mine.cell_type == "code" and mine.source.startswith("# NBVAL_CHECK_OUTPUT") and i not in graded:
            assert _printed(mine) == _printed(theirs), (i, mine.source[:200])
            compared += 1
    assert compared >= 8


# --- grading a partly written notebook ---------------------------------------------------------


def test_a_step_after_a_failed_one_is_graded_on_its_own(tmp_path):
    """pair_counts left blank, merge wrong, train right: the proofs hand the package's pair_counts
    and merge on, so train scores, in the grader as in the learner's notebook."""
    name = "01_tokenization.ipynb"
    course = grade.load_course(COURSE)[name]
    nb = student_copy(course.nb)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    cells["merge_solution"].source = "def merge(ids, pair, new_id):\n    return list(ids)\n"
    cells["bpe_train_solution"].source = next(c.source for c in course.nb.cells
                                              if c.metadata.get("nbgrader", {}).get("grade_id") == "bpe_train_solution")
    path = tmp_path / "zoe" / name
    path.parent.mkdir()
    nbformat.write(nb, path)
    o = grade.grade_one(grade.Submission("zoe", name, path), course, timeout=120)
    assert o.status == "graded", o.status
    assert {k: v for k, v in o.scores.items() if v} == {"bpe_train": 1.0}
    feedback = {gid: message for gid, _, _, message in o.feedback}
    assert feedback["pair_counts"].startswith("not attempted")
    assert "merge([1, 2, 3, 1, 2], (1, 2), 99): expected [99, 3, 99], got [1, 2, 3, 1, 2]; first difference at [0]" in feedback["merge"]
    assert "Your merge is not right yet: the rest of this notebook uses mini_llm's." in feedback["merge"]
    assert "train: correct" in feedback["bpe_train"]
