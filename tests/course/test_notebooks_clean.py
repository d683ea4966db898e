"""Notebooks are committed clean: valid, executed in order, no errors, nothing private."""

import re

import nbformat
import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_course_is_all_there():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_tokenization", "02_datasets", "03_attention", "04_minigpt", "05_training",
                     "06_sampling_and_chat", "07_export", "08_modern_gpt", "09_chat_finetuning",
                     "10_gpt2_and_transformers"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "run top to bottom once, then save"
    assert "NBVAL_IGNORE_OUTPUT" in code[0].source and "device_summary" in code[0].source
    assert sum("# NBVAL_CHECK_OUTPUT" in c.source for c in code) >= 3
    solutions = sum("### BEGIN SOLUTION" in c.source for c in code)
    hidden = sum("### BEGIN HIDDEN TESTS" in c.source for c in code)
    assert solutions >= 3 and hidden == solutions, "at least 3 exercises, each with hidden tests"
    private = re.compile(r"/root\b|/home/\w+|/Users/\w+|/work/|/tmp/|C:\\\\Users")
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", cell.source[:80]
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            assert not private.search(text), (cell.source[:60], text[:200])
            if out.output_type == "execute_result":
                plain = str(out["data"].get("text/plain", ""))
                assert not plain.startswith(("<Figure", "[<matplotlib", "Text(", "<Axes")), "end plot cells with ;"
