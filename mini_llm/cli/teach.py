"""`mini-llm workbook`, `mini-llm grade` and `mini-llm stamp`: the learner's and the teacher's commands.

    mini-llm workbook --out workbook/              the workbook: the notebooks with every step and exercise blank
    mini-llm exercises --out student/              the same (its old name; default folder student/)
    mini-llm grade SUBMISSIONS --out grades.csv    grade submitted notebooks, with feedback per student
    mini-llm stamp [NOTEBOOK ...]                  (re)write nbgrader metadata onto the course notebooks
"""

import argparse
import os
import sys
import time
from pathlib import Path

from mini_llm.course import grade
from mini_llm.course.exercises import course_notebooks, make_student_copies, stamp_files
from mini_llm.course.grade import (
    DEFAULT_TIMEOUT,
    find_submissions,
    grade_all,
    load_course,
    summary,
    write_csv,
    write_feedback,
)
from mini_llm.errors import UserError
from mini_llm.paths import display, project_root

GRADE_HELP = grade.__doc__  # how a submission is graded, for `mini-llm grade --help`


def _course_folder(notebooks: str | None) -> Path:
    return Path(notebooks) if notebooks else project_root() / "notebooks"


# --- mini-llm workbook (and its old name, mini-llm exercises) --------------------------------------


def add_workbook_arguments(p: argparse.ArgumentParser, out: str = "workbook") -> None:
    p.add_argument("--out", default=out, help=f"folder for the workbook's notebooks (default: {out}/)")
    p.add_argument("--notebooks", default=None, help="source folder (default: the repository's notebooks/)")


def add_exercises_arguments(p: argparse.ArgumentParser) -> None:
    add_workbook_arguments(p, out="student")


def cmd_workbook(args) -> int:
    written = make_student_copies(_course_folder(args.notebooks), Path(args.out))
    print(f"wrote {len(written)} notebooks to {display(args.out)}: every step and exercise blank "
          "(`raise NotImplementedError()`), hidden tests removed, nbgrader metadata kept. Each runs top to bottom: "
          "until your piece passes its proof, the package's stands in")
    return 0


def cmd_exercises(args) -> int:
    return cmd_workbook(args)


# --- mini-llm stamp -------------------------------------------------------------------------------


def add_stamp_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebooks", nargs="*", help="notebook files (default: the course's notebooks/NN_*.ipynb)")


def cmd_stamp(args) -> int:
    paths = args.notebooks or course_notebooks(_course_folder(None))
    changed = stamp_files(paths)
    print(f"stamped {len(paths)} notebooks; {len(changed)} changed" + "".join(f"\n  {display(c)}" for c in changed))
    return 0


# --- mini-llm grade -------------------------------------------------------------------------------


def add_grade_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("submissions", metavar="SUBMISSIONS",
                   help="folder with one folder per student (alice/04_minigpt.ipynb) and/or files named "
                        "STUDENT__NOTEBOOK.ipynb (alice__04_minigpt.ipynb); only read, never modified")
    p.add_argument("--out", default="grades.csv", help="the grades CSV to write (default: grades.csv)")
    p.add_argument("--feedback", default=None,
                   help="folder for the feedback files STUDENT/NOTEBOOK.md (default: feedback/ next to --out)")
    p.add_argument("--notebooks", default=None, help="the course's source notebooks (default: the repository's notebooks/)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds allowed per notebook before it is stopped (default {DEFAULT_TIMEOUT})")
    p.add_argument("--jobs", type=int, default=None, help="kernels run at once (default: the number of CPU cores)")
    p.add_argument("--full", action="store_true",
                   help="run every cell of each notebook, not only its imports, steps and exercises (slower)")
    p.add_argument("--summary", action="store_true",
                   help="print a table per step and exercise: mean score, how many solved")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def cmd_grade(args) -> int:
    folder = Path(args.submissions)
    if not folder.is_dir():
        raise UserError(f"{args.submissions}: no such folder (SUBMISSIONS is a folder of student folders or "
                        "STUDENT__NOTEBOOK.ipynb files)")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    jobs = (os.cpu_count() or 1) if args.jobs is None else args.jobs
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    out = Path(args.out)
    feedback = Path(args.feedback) if args.feedback else out.parent / "feedback"
    for what, path in (("--out", out), ("--feedback", feedback)):
        if _inside(path, folder):
            raise UserError(f"{what} {path} is inside SUBMISSIONS; write the grades somewhere else (SUBMISSIONS is never modified)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as grades.csv")
    source = _course_folder(args.notebooks)
    if not source.is_dir():
        raise UserError(f"--notebooks {source}: no such folder")

    course = load_course(source)
    subs, skipped = find_submissions(folder, course)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    students = len({s.student for s in subs})
    print(f"grading {sum(s.path is not None for s in subs)} notebooks from {students} students "
          f"({min(jobs, len(subs))} at a time, {args.timeout:g} s each at most)")
    start = time.perf_counter()
    outcomes = grade_all(subs, course, args.timeout, min(jobs, len(subs)), args.full, not args.no_progress)
    write_csv(out, course, outcomes)
    write_feedback(feedback, outcomes)
    counts = {}
    for o in outcomes:
        counts[o.status.split(":")[0]] = counts.get(o.status.split(":")[0], 0) + 1
    print(f"wrote {display(out)} ({len(outcomes)} rows: "
          f"{', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}) and feedback in {display(feedback)}/ "
          f"in {time.perf_counter() - start:.1f} s")
    if args.summary:
        print("\n".join(summary(course, outcomes)))
    return 0
