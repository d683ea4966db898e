"""The package's rooms and the rules between them, checked on the source itself.

    mini_llm/*.py     the core a learner reads: never imports the rooms below
    mini_llm/train/   training: imports the core only
    mini_llm/course/  the course machinery: core and train
    mini_llm/bench/   benchmarks: core and train
    mini_llm/cli/     the command line: anything (nothing imports it)

No import cycle anywhere, module by module, subpackages included. Two thin alias modules
(mini_llm/checks.py, mini_llm/widgets.py) keep old student copies working, and the entry points
(`__main__.py`) reach the command line: both are named exceptions below.
"""

import ast
import re
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "mini_llm"
ROOMS = ("train", "course", "bench", "cli")
ALIASES = {"mini_llm.checks": "mini_llm.course", "mini_llm.widgets": "mini_llm.course"}  # module -> the room it stands for
ALLOWED = {  # room -> the rooms it may import (besides itself)
    "core": set(),
    "train": {"core"},
    "course": {"core", "train"},
    "bench": {"core", "train"},
    "cli": {"core", "train", "course", "bench"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "core"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere in it (at the top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mini_llm"):
            for alias in node.names:  # `from mini_llm.x import y`: y may be a module of x
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mini_llm"))
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, known) - {name} for name, path in mods.items()}


def test_every_room_and_module_is_there():
    mods = modules()
    for name in ("mini_llm.model", "mini_llm.train", "mini_llm.train.loop", "mini_llm.cli", "mini_llm.bench",
                 "mini_llm.course", "mini_llm.course.checks", "mini_llm.course.checks.harness", "mini_llm.optim"):
        assert name in mods, name
    for gone in ("mini_llm.backends", "mini_llm.grade", "mini_llm.exercises", "mini_llm.bench.bench"):
        assert gone not in mods, gone


def test_no_import_cycle_anywhere():
    g = graph()

    def cycle_from(node, stack, seen):
        for dep in sorted(g[node]):
            if dep in stack:
                return stack[stack.index(dep):] + [dep]
            if dep not in seen:
                seen.add(dep)
                found = cycle_from(dep, stack + [dep], seen)
                if found:
                    return found
        return None

    for start in sorted(g):
        cycle = cycle_from(start, [start], {start})
        assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_sees_into_subpackages():
    """The graph has edges between modules of the rooms (not just the flat core)."""
    g = graph()
    assert "mini_llm.train.session" in g["mini_llm.train.loop"]
    assert "mini_llm.course.checks.harness" in g["mini_llm.course.checks.nb01_tokenization"]


def test_imports_flow_one_way_between_rooms():
    for name, deps in graph().items():
        if name in ALIASES or name.endswith("__main__"):
            continue  # the aliases and the entry points, below
        for dep in deps:
            here, there = room(name), room(dep)
            assert there == here or there in ALLOWED[here], f"{name} ({here}) imports {dep} ({there})"


def test_the_exceptions_are_what_they_say():
    """The aliases import their room and nothing else imports them; an entry point imports the CLI."""
    g = graph()
    for alias, target in ALIASES.items():
        assert all(dep.startswith(target) for dep in g[alias]), g[alias]
        assert not [m for m, deps in g.items() if alias in deps], alias
    for name, deps in g.items():
        if name.endswith("__main__"):
            assert deps <= {"mini_llm.cli"}, (name, deps)


def test_every_module_compiles_without_warnings():
    """An invalid escape in a docstring is a SyntaxWarning on Python 3.12+ (a DeprecationWarning before)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_text(), str(path), "exec")


def test_every_module_says_what_it_is_for():
    for path in sorted(PACKAGE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 20, path


def _sources(*patterns) -> dict[Path, str]:
    files = [p for pattern in patterns for p in REPO.glob(pattern)]
    return {p: p.read_text(encoding="utf-8") for p in files if ".venv" not in p.parts}


def test_every_trap_reference_points_to_the_list():
    """'trap N' means entry N of docs/TRAPS.md, and a file that cites one says where the list is."""
    listed = [int(n) for n in re.findall(r"^(\d+)\. ", (REPO / "docs" / "TRAPS.md").read_text(), re.M)]
    assert listed == list(range(1, len(listed) + 1))
    for path, text in _sources("mini_llm/**/*.py", "tests/**/*.py", "notebooks/*.ipynb", "*.md", "docs/**/*.md").items():
        if path.name == "TRAPS.md" or path == Path(__file__):
            continue
        numbers = [int(n) for n in re.findall(r"\btrap (\d+)", text)]
        if numbers:
            assert "TRAPS.md" in text, f"{path} cites trap {numbers[0]} without naming docs/TRAPS.md"
            assert all(n in listed for n in numbers), (path, numbers)


def test_no_reference_to_the_seed_project():
    """'the seed's' named the project this course grew from: readers took it for the RNG seed."""
    for path, text in _sources("mini_llm/**/*.py", "notebooks/*.ipynb", "*.md", "docs/**/*.md").items():
        assert "the seed's" not in text, path


def test_comments_and_docstrings_name_modules_that_exist():
    """A module named as `name.py` in the package's text exists in the package (or the repository)."""
    known = {p.name for p in PACKAGE.rglob("*.py")} | {p.name for p in REPO.glob("tests/**/*.py")}
    for path, text in _sources("mini_llm/**/*.py").items():
        for name in re.findall(r"\b([a-z_][a-z0-9_]*\.py)\b", text):
            assert name in known, f"{path} names {name}, which does not exist"
        for dotted in re.findall(r"\bmini_llm(?:\.[a-z_0-9]+)+", text):
            parts = dotted.split(".")
            assert (REPO.joinpath(*parts).with_suffix(".py").exists() or REPO.joinpath(*parts).is_dir()
                    or REPO.joinpath(*parts[:-1]).with_suffix(".py").exists()), f"{path} names {dotted}"


def test_the_package_map_lists_every_module_and_room():
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem not in ("__init__", "__main__") and path.stem not in ("checks", "widgets"):
            assert f"{path.stem}.py" in doc, path.name
    for name in ROOMS:
        assert f"{name}/" in doc, name


def test_names_say_what_the_thing_is():
    """No function or class called run/Run (a Run object, a run folder and a CLI entry were all
    "run"); the CLI's entries are cmd_<command> (import-hf: cmd_import_hf); the training session's
    module is `step_model`."""
    from mini_llm.train.session import Session

    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name.lower() != "run", f"{path}: {node.name}"
    assert "step_model" in Session.__dataclass_fields__ and "ddp" not in Session.__dataclass_fields__
    from mini_llm.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert parser.get_default("func").__name__ == f"cmd_{name.replace('-', '_')}", name


@pytest.mark.parametrize("module", ["mini_llm.checks", "mini_llm.widgets"])
def test_old_student_copies_still_import(module):
    import importlib

    m = importlib.import_module(module)
    if module == "mini_llm.checks":
        assert m.check_top_k and m.check_pair_counts and m.Result
    else:
        assert m.sampling_playground and m.attention_explorer and m.chat_panel
