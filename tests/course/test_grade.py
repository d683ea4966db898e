"""`mini-llm grade` with real kernels: fake students hand in the course's notebooks."""

import hashlib
import math

import nbformat
import pytest
import torch

from mini_llm.course import checks, grade
from mini_llm.course.exercises import exercises_in, stamp, student_copy
from tests.conftest import REPO, one_error_line, run_cli

COURSE = REPO / "notebooks"
NOTEBOOKS = sorted(COURSE.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT = 45  # per notebook in the batch: the fast runs take seconds, with room for a loaded machine


def course_nb(name):
    nb = nbformat.read(COURSE / name, as_version=4)
    stamp(nb)
    return nb


def solution_cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{grade_id}_solution")


def check_cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def handed_in(name, **solutions):
    """A student copy of notebook `name` with some solution cells filled in."""
    nb = student_copy(course_nb(name))
    for grade_id, source in solutions.items():
        solution_cell(nb, grade_id).source = source
    return nb


def write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def right_04(grade_id):
    """The course's own solution of one exercise of notebook 04 (a right answer)."""
    return solution_cell(course_nb("04_minigpt.ipynb"), grade_id).source


POST_LN_WRONG = "def post_ln_block(x, weights, n_head):\n    return x\n"
# another right answer: the package's modules composed post-LN
POST_LN_MODULES = ("from mini_llm.model import Block, GPTConfig\n\n"
                   "def post_ln_block(x, weights, n_head):\n"
                   "    B, T, C = x.shape\n"
                   "    block = Block(GPTConfig(vocab_size=2, block_size=T, n_embd=C, n_head=n_head, n_layer=1)).eval()\n"
                   "    block.load_state_dict(weights)\n"
                   "    h = block.ln_1(x + block.attn(x)[0])\n"
                   "    return block.ln_2(h + block.mlp(h)).detach()\n")
DECODE_WRONG = ("def decode_step(model, token, cache, pos):\n"  # no attention at all, the cache untouched
                "    return model.lm_head(model.ln_f(model.wte(token) + model.wpe.weight[pos]))\n")
# right type, right on the public cases (T of 5, 6 and 8), wrong values elsewhere
SCORES_PUBLIC_ONLY = ("import torch\n\ndef previous_token_scores(maps):\n"
                      "    if maps.size(-1) not in (5, 6, 8):\n"
                      "        return torch.zeros(maps.shape[:2])\n"
                      "    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)\n")
TOP_P_PUBLIC_ONLY = ("def top_p_filter(logits, p):\n"
                     "    if tuple(logits.shape) not in [(5,), (2, 4)]:\n"
                     "        return logits.clone()  # right shape, wrong values\n"
                     "    probs, order = torch.softmax(logits, -1).sort(-1, descending=True)\n"
                     "    drop = probs.cumsum(-1) - probs >= p\n"
                     "    drop[..., 0] = False\n"
                     "    return logits.masked_fill(drop.scatter(-1, order, drop), float('-inf'))\n")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Fake students, every kind of submission; graded once for the tests below."""
    subs = tmp_path_factory.mktemp("submissions")
    for path in NOTEBOOKS:  # (the solutions are graded in the command-line test below)
        write(student_copy(course_nb(path.name)), subs / "ben" / path.name)         # untouched copies
    # cy: the post_ln_block check replaced by `pass`, the decode_step check deleted, both solutions wrong
    cy = handed_in("04_minigpt.ipynb", post_ln_block=POST_LN_WRONG, decode_step=DECODE_WRONG)
    check_cell(cy, "post_ln_block").source = "pass"
    cy.cells.remove(check_cell(cy, "decode_step"))
    write(cy, subs / "cy" / "04_minigpt.ipynb")
    write(handed_in("06_sampling_and_chat.ipynb", top_p=TOP_P_PUBLIC_ONLY), subs / "cy" / "06_sampling_and_chat.ipynb")
    # dee: an infinite loop in 04; 06 right
    write(handed_in("04_minigpt.ipynb", post_ln_block="def post_ln_block(x, weights, n_head):\n    while True:\n        pass\n",
                    decode_step=right_04("decode_step")), subs / "dee" / "04_minigpt.ipynb")
    write(nbformat.read(COURSE / "06_sampling_and_chat.ipynb", as_version=4), subs / "dee" / "06_sampling_and_chat.ipynb")
    # eve: a corrupt file, flat layout
    (subs / "eve__04_minigpt.ipynb").write_text('{"cells": [', encoding="utf-8")
    # fay: every cell's metadata lost (copied into a fresh notebook), right answers, flat layout
    fay = handed_in("04_minigpt.ipynb", **{gid: right_04(gid) for gid in ("post_ln_block", "decode_step", "previous_token_scores")})
    for cell in fay.cells:
        cell.metadata = {}
    write(fay, subs / "fay__04_minigpt.ipynb")
    # gus: wrong answers, and tries to replace the checks from inside his solution cells
    write(handed_in("04_minigpt.ipynb",
                    post_ln_block="from mini_llm.course.checks import Result\n\ndef check_post_ln_block(*a, **k):\n"
                                  "    return Result(True, 'fine')\n\n" + POST_LN_WRONG,
                    decode_step="import mini_llm.course.checks as c\nc.check_decode_step = lambda *a, **k: c.Result(True, 'fine')\n"
                                "c.check_previous_token_scores = c.check_decode_step\n\n" + DECODE_WRONG,
                    previous_token_scores=SCORES_PUBLIC_ONLY), subs / "gus" / "04_minigpt.ipynb")
    # hal: a solution cell that kills its kernel
    write(handed_in("04_minigpt.ipynb", post_ln_block="import os\nos._exit(1)\n", decode_step=right_04("decode_step")),
          subs / "hal" / "04_minigpt.ipynb")

    before = tree_digest(subs)
    course = grade.load_course(COURSE)
    found, skipped = grade.find_submissions(subs, course)
    outcomes = grade.grade_all(found, course, TIMEOUT, jobs=2, progress=False)
    rows = {(o.student, o.notebook): o for o in outcomes}
    return dict(subs=subs, before=before, course=course, outcomes=outcomes, rows=rows, skipped=skipped)


def feedback(o):
    return {gid: message for gid, _, _, message in o.feedback}


def test_untouched_copies_get_zero_not_attempted(batch):
    for o in (o for o in batch["outcomes"] if o.student == "ben"):
        assert o.total == 0
        if o.max_points:
            assert o.status == "not attempted"
            assert all("not attempted" in m for m in feedback(o).values())


def test_edited_or_deleted_checks_still_run_from_the_course(batch):
    o = batch["rows"]["cy", "04_minigpt.ipynb"]
    assert o.status == "graded" and o.total == 0
    assert "post-LN block(tensor(2, 5, 16)" in feedback(o)["post_ln_block"] and "expected" in feedback(o)["post_ln_block"]
    message = feedback(o)["decode_step"]
    assert "decode step(<MiniGPT L=1 nh=2 C=16; B=1, 3 cached, 4 steps>): expected" in message, message
    assert "at pos 3: logits that differ" in message


def test_public_only_answers_fail_the_hidden_cases(batch):
    o = batch["rows"]["cy", "06_sampling_and_chat.ipynb"]
    assert o.scores["top_p"] == 0 and o.scores["repetition_penalty"] == 0 and o.scores["stop_stream"] == 0
    message = feedback(o)["top_p"]
    assert "top-p([[[5.0, 1.0, 0.0]" in message and "expected" in message, message  # a hidden input
    gus = batch["rows"]["gus", "04_minigpt.ipynb"]
    message = feedback(gus)["previous_token_scores"]
    assert gus.scores["previous_token_scores"] == 0 and "previous-token scores([[[[1.0, 0.0], " in message, message  # a hidden input


def test_checks_redefined_in_a_solution_cell_do_not_count(batch):
    o = batch["rows"]["gus", "04_minigpt.ipynb"]
    assert o.total == 0 and "post-LN block(tensor(2, 5, 16)" in feedback(o)["post_ln_block"]
    assert "Hint:" in feedback(o)["decode_step"]


def test_an_infinite_loop_times_out_and_the_rest_is_graded(batch):
    o = batch["rows"]["dee", "04_minigpt.ipynb"]
    assert o.status == f"timeout: still running after {TIMEOUT} s in exercise post_ln_block" and o.total == 0
    assert feedback(o)["decode_step"] == "not graded: the notebook stopped before this check finished"
    assert feedback(o)["post_ln_block"] == f"timeout: still running after {TIMEOUT} s in this exercise (an endless loop? a crash?)"
    assert batch["rows"]["dee", "06_sampling_and_chat.ipynb"].total == 3
    assert batch["rows"]["hal", "04_minigpt.ipynb"].status == "error: the kernel died in exercise post_ln_block"


def test_corrupt_file_is_an_error_row(batch):
    o = batch["rows"]["eve", "04_minigpt.ipynb"]
    assert o.status.startswith("error: not a readable notebook") and o.total == 0


def test_lost_metadata_falls_back_to_the_function_name(batch):
    o = batch["rows"]["fay", "04_minigpt.ipynb"]
    assert o.status == "graded" and o.total == 3


def test_missing_notebooks_get_a_row(batch):
    o = batch["rows"]["eve", "06_sampling_and_chat.ipynb"]
    assert o.status == "missing: not handed in" and o.total == 0


def test_submissions_are_not_modified_and_files_are_written(batch, tmp_path):
    assert tree_digest(batch["subs"]) == batch["before"]
    grade.write_csv(tmp_path / "grades.csv", batch["course"], batch["outcomes"])
    grade.write_feedback(tmp_path / "feedback", batch["outcomes"])
    lines = (tmp_path / "grades.csv").read_text().splitlines()
    assert lines[0].startswith("student,notebook,") and lines[0].endswith(",total,max,status")
    assert "post_ln_block" in lines[0] and "top_p" in lines[0]
    assert len(lines) == 1 + len(batch["outcomes"])
    assert any(line.startswith("fay,04_minigpt,") and line.endswith(",3,3,graded") for line in lines)
    text = (tmp_path / "feedback" / "cy" / "04_minigpt.md").read_text()
    assert "## post_ln_block: 0 / 1" in text and "Hint:" in text
    assert (tmp_path / "feedback" / "dee" / "04_minigpt.md").read_text().count("timeout") >= 1
    table = grade.summary(batch["course"], batch["outcomes"])
    assert table[0].split() == ["exercise", "notebook", "mean", "solved"]
    assert any(line.startswith("post_ln_block") for line in table)


# --- what runs: imports + exercises, or the whole notebook -------------------------------------


def tiny_course(folder):
    """A course notebook whose body defines a name and takes a moment, with one exercise."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import math\nimport time"),
                nbformat.v4.new_code_cell("KEEP = 2\nopened = time.time()"),
                nbformat.v4.new_markdown_cell("**Exercise.** Keep the last ids."),
                nbformat.v4.new_code_cell("def crop(ids, block_size):\n    ### BEGIN SOLUTION\n    return ids[-block_size:]\n"
                                          "    ### END SOLUTION"),
                nbformat.v4.new_code_cell("check_crop(crop)\n### BEGIN HIDDEN TESTS\ncheck_crop(crop, hidden=True).assert_passed()\n"
                                          "### END HIDDEN TESTS")]
    nb.cells[0].source += "\nfrom mini_llm.course.checks import check_crop"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "01_tiny.ipynb")
    return grade.load_course(folder)["01_tiny.ipynb"]


def test_fast_plan_runs_imports_and_exercises_only(tmp_path):
    course = tiny_course(tmp_path / "course")
    fast = grade.plan(course, handed_in_tiny(course, "def crop(ids, block_size):\n    return ids[-block_size:]\n"))
    assert not fast.full and len(fast.nb.cells) == 3
    assert fast.nb.cells[0].source.splitlines() == ["import math", "import time", "from mini_llm.course.checks import check_crop"]
    uses_body = grade.plan(course, handed_in_tiny(course, "def crop(ids, block_size):\n    return ids[-KEEP:]\n"))
    assert uses_body.full and "KEEP" in uses_body.why_full and len(uses_body.nb.cells) == 5
    assert grade.plan(course, handed_in_tiny(course, "def crop(ids, block_size):\n    return ids\n"), full=True).full


def handed_in_tiny(course, source):
    nb = student_copy(course.nb)
    nb.cells[3].source = source
    return nb


def test_full_run_when_a_solution_needs_the_notebook(tmp_path):
    course = tiny_course(tmp_path / "course")
    path = tmp_path / "subs" / "zoe" / "01_tiny.ipynb"
    write(handed_in_tiny(course, "def crop(ids, block_size):\n    return list(ids)[len(ids) - min(block_size, len(ids)) * KEEP // 2:]\n"), path)
    o = grade.grade_one(grade.Submission("zoe", "01_tiny.ipynb", path), course, timeout=60)
    assert o.status == "graded" and o.total == 1 and "KEEP" in o.remark
    assert "The whole notebook ran" in grade.feedback_markdown(o)


def test_a_solution_that_patches_the_harness_or_the_checks_module_still_fails(tmp_path):
    """The guard reloads the harness and the notebook's checks module too, not only the package."""
    course = tiny_course(tmp_path / "course")
    cheat = ("import mini_llm.course.checks.harness as h\n"
             "from mini_llm.course.checks import module_of\n"
             "h.run_cases = lambda *a, **k: h.Result(True, 'fine')\n"
             "h.Result.assert_passed = lambda self: self\n"
             "module_of('check_crop').check_crop = lambda *a, **k: h.Result(True, 'fine')\n\n"
             "def crop(ids, block_size):\n    return list(ids)\n")
    path = tmp_path / "subs" / "max" / "01_tiny.ipynb"
    write(handed_in_tiny(course, cheat), path)
    o = grade.grade_one(grade.Submission("max", "01_tiny.ipynb", path), course, timeout=60)
    assert o.status == "graded" and o.total == 0, grade.feedback_markdown(o)
    assert "crop([1, 2, 3, 4, 5], 3)" in feedback(o)["crop"], feedback(o)


# --- the command line ----------------------------------------------------------------------------


CY = {  # a third student: one exercise right and one wrong in 04 and 06
    "04_minigpt.ipynb": dict(post_ln_block=POST_LN_MODULES, decode_step=DECODE_WRONG),
    "06_sampling_and_chat.ipynb": dict(top_p=TOP_P_PUBLIC_ONLY,
                                       repetition_penalty="def repetition_penalty(logits, context_ids, penalty):\n"
                                                          "    ids = torch.tensor(context_ids, dtype=torch.long)\n"
                                                          "    seen = logits.gather(0, ids)\n"
                                                          "    seen = torch.where(seen > 0, seen / penalty, seen * penalty)\n"
                                                          "    return logits.scatter(0, ids, seen)\n"),
}


def test_cli_three_students_every_notebook_twice_gives_the_same_csv(tmp_path):
    import csv

    subs = tmp_path / "subs"
    for path in NOTEBOOKS:
        write(nbformat.read(path, as_version=4), subs / "ada" / path.name)
        write(student_copy(course_nb(path.name)), subs / "ben" / path.name)
        write(handed_in(path.name, **CY.get(path.name, {})), subs / f"cy__{path.name}")
    (subs / "notes.txt").write_text("grade me", encoding="utf-8")
    csvs = []
    for run in (1, 2):
        proc = run_cli("grade", subs, "--notebooks", COURSE, "--out", tmp_path / f"out{run}" / "grades.csv", "--summary",
                       timeout=600)
        assert proc.returncode == 0, proc.stderr.decode()
        csvs.append((tmp_path / f"out{run}" / "grades.csv").read_text())
    assert csvs[0] == csvs[1]
    rows = list(csv.DictReader(csvs[0].splitlines()))
    assert [(r["student"], r["notebook"]) for r in rows] == [(s, p.stem) for s in ("ada", "ben", "cy") for p in NOTEBOOKS]
    assert sum(int(r["max"]) for r in rows if r["student"] == "ada") >= 8  # 04-07: two exercises each at least
    for r in rows:
        if r["student"] == "ada":  # the solutions: full marks
            assert r["total"] == r["max"] and r["status"] == ("graded" if r["max"] != "0" else "no exercises"), r
        if r["student"] == "ben":
            assert r["total"] == "0" and r["status"] == ("not attempted" if r["max"] != "0" else "no exercises"), r
    cy = {r["notebook"]: r for r in rows if r["student"] == "cy"}
    want = {"04_minigpt": {"post_ln_block": "1", "decode_step": "0", "previous_token_scores": "0"},
            "06_sampling_and_chat": {"top_p": "0", "repetition_penalty": "1"}}
    for notebook, scores in want.items():
        assert {k: cy[notebook][k] for k in scores} == scores and cy[notebook]["total"] == "1", cy[notebook]
    out = proc.stdout.decode()
    assert "solved" in out and "top_p" in out and "skipped notes.txt" in proc.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "out1" / "feedback").iterdir()) == ["ada", "ben", "cy"]
    assert len(list((tmp_path / "out1" / "feedback" / "cy").iterdir())) == len(NOTEBOOKS)


def test_cli_errors_are_one_line(tmp_path):
    from mini_llm.cli import build_parser
    from mini_llm.errors import UserError

    def error(*argv):
        args = build_parser().parse_args(["grade", *map(str, argv)])
        with pytest.raises(UserError) as e:
            args.func(args)
        return str(e.value)

    (tmp_path / "subs" / "ada").mkdir(parents=True)
    course = ("--notebooks", COURSE)
    assert "no such folder" in error(tmp_path / "nope")
    assert "no submissions found" in error(tmp_path / "subs", *course, "--out", tmp_path / "g.csv")
    assert "inside SUBMISSIONS" in error(tmp_path / "subs", "--out", tmp_path / "subs" / "g.csv")
    assert "inside SUBMISSIONS" in error(tmp_path / "subs", "--feedback", tmp_path / "subs" / "ada")
    assert "--timeout" in error(tmp_path / "subs", "--timeout", "0")
    assert "--jobs" in error(tmp_path / "subs", "--jobs", "0")
    assert "no such folder" in error(tmp_path / "subs", "--notebooks", tmp_path / "nope")
    assert "no such folder" in one_error_line(run_cli("grade", tmp_path / "nope"))  # as the command prints it
    helptext = run_cli("grade", "--help").stdout.decode()
    assert "STUDENT__NOTEBOOK.ipynb" in helptext and "alice/04_minigpt.ipynb" in helptext


# --- hidden cases: different inputs from the public ones ----------------------------------------


def _key(args):
    return repr([a.tolist() if isinstance(a, torch.Tensor) else a for a in args])


HIDDEN_05_07 = {  # (04's checks take models and weights: tests/test_checks_04.py tests their hidden cases)
    checks.check_lr_schedule: lambda s, n, hi, w, lo: hi * (s + 1) / w if s < w else lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * s / n)),
    checks.check_nats_per_char: lambda loss, nt, nc: loss * nt / nc,
    checks.check_top_k: lambda x, k: x.masked_fill(x < torch.topk(x, min(k, x.numel())).values[-1], float("-inf")),
    checks.check_temperature: lambda x, t: (torch.nn.functional.one_hot(x.argmax(), x.numel()).float() if t == 0
                                            else torch.softmax(x / t, -1)),
    checks.check_crop: lambda ids, T: ids[-T:],
    checks.check_kv_cache_bytes: lambda L, C, T, B, b: 2 * L * C * T * B * b,
}


@pytest.mark.parametrize("check", list(HIDDEN_05_07), ids=lambda c: c.__name__)
def test_hidden_cases_catch_answers_learned_from_the_public_ones(check):
    solution = HIDDEN_05_07[check]
    assert check(solution, hidden=True), check(solution, hidden=True).message
    seen = {}

    def recorder(*args):
        seen[_key(args)] = solution(*args)
        return seen[_key(args)]

    assert check(recorder)
    first = next(iter(seen.values()))

    def memorised(*args):  # the public answers by heart, the first one for anything else
        return seen.get(_key(args), first)

    assert check(memorised)
    hidden = check(memorised, hidden=True)
    assert not hidden and "expected" in hidden.message, hidden.message


def test_every_exercise_in_the_course_has_hidden_cases():
    for path in NOTEBOOKS:
        for ex in exercises_in(nbformat.read(path, as_version=4)):
            assert hasattr(checks, f"check_{ex.grade_id}"), (path.name, ex.grade_id)
