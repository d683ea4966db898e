import math

import nbformat
import pytest
import torch

from mini_llm.bpe import merge
from mini_llm.data import TextDataset
from mini_llm.course import checks as ex
from mini_llm.course import exercises
from tests.conftest import REPO


def stub(*args):
    raise NotImplementedError()


def _pairs(ids):
    counts = {}
    for p in zip(ids, ids[1:]):
        counts[p] = counts.get(p, 0) + 1
    return counts


def _attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1)
    return w @ v, w


def _lr(step, total, max_lr, warmup, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / total))


def _top_k(logits, k):
    kth = torch.topk(logits, min(k, logits.numel())).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def _temperature(logits, t):
    if t == 0:
        return torch.nn.functional.one_hot(logits.argmax(), logits.numel()).float()
    return torch.softmax(logits / t, -1)


# check -> (solution, plausible wrong answer)
CASES = {
    ex.check_pair_counts: (_pairs, lambda ids: {p: 1 for p in zip(ids, ids[1:])}),
    ex.check_merge: (lambda *args: merge(*args), lambda ids, pair, new: [new if t == pair[0] else t for t in ids]),
    ex.check_window_dataset: (lambda *args: TextDataset(*args), lambda ids, T, stride=1: TextDataset(ids[:-1], T, stride)),
    ex.check_split: (lambda text, f: (text[:text.rfind("\n", 0, int(len(text) * (1 - f))) + 1],
                                      text[text.rfind("\n", 0, int(len(text) * (1 - f))) + 1:]),
                     lambda text, f: (text[:int(len(text) * (1 - f))], text[int(len(text) * (1 - f)):])),
    ex.check_causal_mask: (lambda T: torch.ones(T, T, dtype=torch.bool).tril(),
                           lambda T: torch.ones(T, T, dtype=torch.bool).triu()),
    ex.check_attention: (_attention, lambda q, k, v, mask=None: _attention(q, k, v, None)),
    ex.check_lr_schedule: (_lr, lambda step, total, max_lr, warmup, min_lr: max_lr),
    ex.check_nats_per_char: (lambda loss, nt, nc: loss * nt / nc, lambda loss, nt, nc: loss * nc / nt),
    ex.check_top_k: (_top_k, lambda logits, k: logits.masked_fill(logits <= torch.topk(logits, min(k, logits.numel())).values[-1], float("-inf"))),
    ex.check_temperature: (_temperature, lambda logits, t: torch.softmax(logits * max(t, 1e-3), -1)),
}


@pytest.mark.parametrize("check", list(CASES), ids=lambda c: c.__name__)
def test_checks_pass_on_solution_and_fail_otherwise(check):
    solution, wrong = CASES[check]
    good = check(solution)
    assert good and repr(good).startswith("✅"), repr(good)
    missing = check(stub)
    assert not missing and "not written yet" in missing.message
    bad = check(wrong)
    assert not bad and "expected" in bad.message and "Hint:" in bad.message, bad.message


def test_every_check_is_used_in_a_notebook():
    sources = "".join(p.read_text() for p in (REPO / "notebooks").glob("*.ipynb"))
    for check in CASES:
        assert check.__name__ in sources, check.__name__


def test_no_two_notebooks_define_a_check_of_the_same_name():
    """checks/__init__ gathers every notebook's checks into one namespace: a second check_decode
    would silently replace the first."""
    import importlib

    from mini_llm.course.checks import NOTEBOOK_MODULES

    seen = {}
    for name in NOTEBOOK_MODULES:
        module = importlib.import_module(f"mini_llm.course.checks.{name}")
        for check in (k for k, v in vars(module).items() if k.startswith("check_") and v.__module__ == module.__name__):
            assert check not in seen, f"{check} in {seen.get(check)} and {name}"
            seen[check] = name


def test_strip_solutions():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n\nprint(f(1))\n"
    assert exercises.strip_solutions(src) == "def f(x):\n    raise NotImplementedError()\n\nprint(f(1))\n"


def test_strip_hidden_tests():
    src = "check_x(f)\n### BEGIN HIDDEN TESTS\ncheck_x(f, hidden=True).assert_passed()\n### END HIDDEN TESTS"
    assert exercises.strip_hidden_tests(src) == "check_x(f)"
    assert exercises.strip_hidden_tests("print(1)\n") == "print(1)\n"


def test_student_copies(tmp_path):
    written = exercises.make_student_copies(REPO / "notebooks", tmp_path / "student")
    assert len(written) >= 7
    for path in written:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        text = "".join(c.source for c in nb.cells)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        assert "HIDDEN TESTS" not in text and "hidden=True" not in text
        assert text.count("raise NotImplementedError()") >= 2, path.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        source = nbformat.read(REPO / "notebooks" / path.name, as_version=4)
        exercises.stamp(source)
        assert [c.metadata.get("nbgrader") for c in nb.cells] == [c.metadata.get("nbgrader") for c in source.cells]
        for cell in nb.cells:
            locked = cell.metadata.get("nbgrader", {}).get("locked", False)
            assert cell.metadata.get("editable", True) is not locked
    with pytest.raises(Exception, match="overwrite the solutions"):
        exercises.make_student_copies(REPO / "notebooks", REPO / "notebooks")



def test_first_difference_names_the_position():
    from mini_llm.course.checks.harness import first_difference

    assert first_difference([258, 100, 97], [258, 100, 99]) == "at [2]: expected 99, got 97"
    assert first_difference({(1, 2): 1}, {(1, 2): 2}) == "at [(1, 2)]: expected 2, got 1"
    assert first_difference({(1, 2): 2, (5, 5): 1}, {(1, 2): 2}) == "at [(5, 5)]: expected no entry, got 1"
    assert first_difference("aaab 👋", "aaab \ufffd") == "at character 5: expected '�', got '👋'"
    assert first_difference([1, 2], [1, 2, 3]) == "in the length: expected 3, got 2"
    assert first_difference(torch.zeros(2, 3), torch.zeros(3, 3)) == "in the shape: expected (3, 3), got (2, 3)"
    want = torch.arange(6.0).view(2, 3)
    assert first_difference(want + torch.tensor([[0, 0, 0], [0, 1e-7, 0.5]]), want) == "at [1, 2]: expected 5.0, got 5.5"
    pairs = [(torch.tensor([1, 2]), torch.tensor([2, 3]))]
    assert first_difference([(torch.tensor([1, 2]), torch.tensor([2, 4]))], pairs) == "at [0][1][1]: expected 3, got 4"
    assert first_difference(5, 6) == "" and first_difference(object(), [1]) == ""  # no position to name


def test_a_generator_answer_is_read_once_and_described():
    from mini_llm.course.checks.harness import run_cases

    def gen(n):
        yield from range(n - 1)

    result = run_cases("numbers", gen, [((3,), [0, 1, 2])], "count up")
    assert "got [0, 1]; first difference in the length: expected 3, got 2" in result.message
