"""README.md's quickstart commands are what CI runs, and what it says exists."""

import re

from mini_llm.cli import build_parser
from tests.conftest import REPO


def _commands():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return text, [b.strip() for b in blocks]


def test_readme_opens_with_the_two_commands():
    text, blocks = _commands()
    first_two = blocks[:2]
    assert "mini-llm train" in first_two[0] and "mini-llm chat" in first_two[0]
    assert "pytest" in first_two[1]
    assert text.index("```bash") < 1200  # the commands come first


def test_ci_runs_exactly_the_readme_test_command():
    _, blocks = _commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert blocks[1] in ci.splitlines()


def test_every_documented_subcommand_exists():
    text, _ = _commands()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in re.findall(r"mini-llm ([a-z][a-z-]*[a-z])", text):  # hyphenated ones whole (import-hf)
        if name not in ("bench",):
            assert name in sub.choices, name
    bench = sub.choices["bench"]
    what = next(a for a in bench._actions if a.dest == "what")
    for name in re.findall(r"mini-llm bench (\w+)", text):
        assert name in what.choices, name


def test_the_import_cheat_sheet_runs():
    text = (REPO / "README.md").read_text()
    sheet = text[text.index("Import cheat-sheet"):]
    block = re.search(r"```python\n(.*?)```", sheet, re.S).group(1)
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(lines) >= 10 and all(line.startswith("from mini_llm") for line in lines)
    exec("\n".join(lines), {})


def test_the_layout_section_names_what_exists():
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("## Benchmarks")]
    for folder in re.findall(r"^(mini_llm/\w+/|[a-z]+/)\s", layout, re.M):
        assert (REPO / folder).is_dir() or folder in ("data/", "runs/"), folder
    for name in ("train", "course", "bench", "cli"):
        assert f"mini_llm/{name}/" in layout
