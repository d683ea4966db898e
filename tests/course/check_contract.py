"""The contract every check keeps, shared by the per-notebook check tests
(tests/course/test_checks_*.py): right answers pass public and hidden cases, wrong ones fail with a
hint that names the input, echoing the inputs fails, and an unwritten function says so. A step's
check also hands a piece on: yours when it passed, else the package's, saying which in its last line."""

import pytest


def stub(*args):
    raise NotImplementedError()


def assert_passes(check, solution) -> None:
    public = check(solution)
    assert public and repr(public).startswith("✅"), (solution, public.message)
    hidden = check(solution, hidden=True)
    assert hidden and "hidden ones included" in hidden.message, (solution, hidden.message)
    assert hidden.assert_passed() is hidden


def assert_fails_naming_the_input(check, wrong, may_raise: bool = True) -> None:
    """`may_raise`: a wrong answer may also fail by raising (the message then says what it raised)."""
    result = check(wrong, hidden=True)
    assert not result, (wrong, result.message)
    assert "Hint:" in result.message
    said = ("expected", "raised") if may_raise else ("expected",)
    assert any(word in result.message for word in said), result.message
    if "expected" in result.message:
        assert "(" in result.message.split(": expected")[0], result.message  # the call, with its input
    with pytest.raises(AssertionError, match="Hint:"):
        result.assert_passed()


def assert_echo_fails(check, echo) -> None:
    result = check(echo, hidden=True)
    assert not result and "Hint:" in result.message, result.message


def assert_not_written_yet(check) -> None:
    for hidden in (False, True):
        result = check(stub, hidden=hidden)
        assert not result and "not written yet" in result.message
        with pytest.raises(AssertionError, match="not written yet"):
            result.assert_passed()


def step_tests(package: dict, cases: dict):
    """The step contract over {check: the package's piece} (right and wrong answers from `cases`):
    the package's piece passes; a right piece is handed on as yours, a wrong or unwritten one gives
    way to the package's, and the last line of the message says which."""
    parametrize = pytest.mark.parametrize("check", list(package), ids=lambda c: c.__name__)

    @parametrize
    def the_packages_piece_passes(check):
        assert_passes(check, lambda *args: package[check](*args))
        again = check(package[check])  # the proof run twice: what it handed on is not proved as yours
        assert not again and again.piece is package[check] and "is mini_llm's, not yours: run the cell" in again.message

    @parametrize
    def a_step_hands_on_yours_when_right_else_the_packages(check):
        right, wrong = cases[check][0], cases[check][1]
        for fn in [*right, *wrong, stub]:
            for hidden in (False, True):
                result = check(fn, hidden=hidden)
                assert result.yours is fn and result.piece is (fn if result else package[check]), result.message
                last = result.message.splitlines()[-1]
                if result:
                    assert last.endswith("The rest of this notebook uses yours."), last
                else:
                    says = "is not written yet" if fn is stub else "is not right yet"
                    assert fn is not stub or "not written yet" in last
                    assert last.lower().startswith("your ") and last.endswith(f"{says}: the rest of this notebook uses mini_llm's."), last

    return the_packages_piece_passes, a_step_hands_on_yours_when_right_else_the_packages


def contract_tests(cases: dict, may_raise: bool = True):
    """The four contract tests over a table {check: ([right answers], [wrong answers], echo)};
    a test module binds them to `test_...` names so pytest collects them."""
    parametrize = pytest.mark.parametrize("check", list(cases), ids=lambda c: c.__name__)

    @parametrize
    def right_answers_pass_public_and_hidden(check):
        for solution in cases[check][0]:
            assert_passes(check, solution)

    @parametrize
    def wrong_answers_fail_naming_the_input(check):
        for wrong in cases[check][1]:
            assert_fails_naming_the_input(check, wrong, may_raise)

    @parametrize
    def echoing_the_inputs_fails(check):
        assert_echo_fails(check, cases[check][2])

    @parametrize
    def not_written_yet(check):
        assert_not_written_yet(check)

    return (right_answers_pass_public_and_hidden, wrong_answers_fail_naming_the_input, echoing_the_inputs_fails,
            not_written_yet)


def is_step(check_cell) -> bool:
    return "= proof.piece" in check_cell.source


def defined_name(solution_cell) -> str:
    """The function or class a solution cell defines."""
    import re

    return re.search(r"^(?:def|class) (\w+)", solution_cell.source, re.M).group(1)


def assert_protocol_cells(pairs, cases: dict, checks_module) -> set:
    """[(solution cell, check cell)]: each check cell is the protocol's (exercises.check_cell_source):
    a tested check called on the solution's function (or class) and its hidden cases asserted in
    nbgrader's hidden-test block; a step's proof also hands the piece on. Returns the checks used."""
    import re

    from mini_llm.course.exercises import check_cell_source

    used = set()
    for solution, check in pairs:
        fn = defined_name(solution)
        call = re.search(r"^(?:proof = )?(check_\w+)\(" + fn + r"\)$", check.source, re.M)
        assert call, check.source
        assert getattr(checks_module, call.group(1)) in cases, call.group(1)
        used.add(getattr(checks_module, call.group(1)))
        protocol = check_cell_source(call.group(1), fn, step=is_step(check))
        assert check.source.rstrip().endswith("\n" + protocol), check.source
    return used


def assert_student_copies_say_not_written_yet(pairs, namespace: dict) -> None:
    """Run each step and exercise as the workbook has it (solution stripped, hidden block removed):
    the check says "not written yet", and a step's proof hands on the package's piece."""
    import re

    from mini_llm.course.exercises import strip_solutions

    for solution, check in pairs:
        scope = dict(namespace)
        exec(strip_solutions(solution.source), scope)  # defining the function never raises
        yours = scope[defined_name(solution)]
        public = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", "", check.source, flags=re.S).strip()
        *setup, last = public.splitlines()
        exec("\n".join(setup), scope)
        result = eval(last, scope)
        assert not result and "not written yet" in result.message, result
        if is_step(check):
            assert result.yours is yours and scope[defined_name(solution)] is result.piece is not yours


def notebook_code_cells(name: str) -> list:
    """The code cells of a course notebook (`name` with or without .ipynb), in order."""
    import nbformat

    from tests.conftest import REPO

    path = REPO / "notebooks" / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def exercise_pairs(name: str) -> list:
    """(solution cell, check cell) pairs of a course notebook, in order."""
    cells = notebook_code_cells(name)
    return [(cell, cells[i + 1]) for i, cell in enumerate(cells) if "### BEGIN SOLUTION" in cell.source]


def assert_checks_leave_the_global_rng_alone(cases) -> None:
    """Running every check (hidden cases too) on its right answer leaves torch's global RNG as it was."""
    import torch

    torch.manual_seed(123)
    state = torch.get_rng_state()
    for check, (right, _, _) in cases.items():
        check(right[0], hidden=True)
    assert torch.equal(torch.get_rng_state(), state)


def notebook_tests(name: str, cases: dict, checks_module, namespace: dict | None = None):
    """The tests of a notebook's exercise cells, for a test module to bind to `test_...` names:
    at least three exercises, each a solution cell and a check cell that calls a tested check and
    asserts its hidden cases; and in a student copy each check says "not written yet".
    `namespace`: the names the notebook's cells find defined (modules the exercises use)."""

    def three_exercises_with_public_and_hidden_checks():
        pairs = exercise_pairs(name)
        assert sum(not is_step(check) for _, check in pairs) >= 3
        assert assert_protocol_cells(pairs, cases, checks_module) <= set(cases)

    def student_copy_exercises_say_not_written_yet():
        """In the workbook (solutions stripped, hidden tests removed as nbgrader's release does)
        each step's and exercise's check cell runs without raising and reports "not written yet"."""
        assert_student_copies_say_not_written_yet(exercise_pairs(name), dict(namespace or {}))

    def every_check_is_used_in_the_notebook():
        sources = "".join(c.source for c in notebook_code_cells(name))
        for check in cases:
            assert check.__name__ + "(" in sources, check.__name__

    return (three_exercises_with_public_and_hidden_checks, student_copy_exercises_say_not_written_yet,
            every_check_is_used_in_the_notebook)


def assert_proofs_are_portable(name: str, min_cells: int, min_trues: int, false_values: bool = False) -> None:
    """The committed outputs of the cells nbval compares (# NBVAL_CHECK_OUTPUT) say True for every
    proof and print no floating-point values that depend on the machine. With `false_values` the
    output may show False as a value (a config dict), just never as a proof's answer (": False")."""
    import re

    checked = [c for c in notebook_code_cells(name) if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= min_cells
    text = "".join(o.get("text", "") for c in checked for o in c.outputs)
    said_false = re.search(r": False\s*(\||$)", text, re.M) if false_values else "False" in text
    assert not said_false and text.count("True") >= min_trues, text
    assert not re.search(r"\d\.\d{3,}", text), text  # no long decimals in compared output
