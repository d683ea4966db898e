"""The checks of notebook 02_datasets: right answers (in every standard form) pass, public and hidden
cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so. Then the
notebook's exercise cells."""


import numpy as np
import torch

from mini_llm.course import checks as ex
from tests.course.check_contract import (
    contract_tests,
    notebook_tests,
)

NOTEBOOK = "02_datasets"

# --- solutions, written independently of the package where it matters ---------------------------


def windows(ids, T):
    return [(ids[t:t + T], ids[t + 1:t + T + 1]) for t in range(len(ids) - T)]


def split(text, f):
    cut = text.rfind("\n", 0, int(len(text) * (1 - f))) + 1
    return text[:cut], text[cut:]


def count_windows(n, T, stride):
    return max(0, (n - T - 1) // stride + 1)


def count_windows_range(n, T, stride):
    return len(range(0, n - T, stride))


def eval_windows(ids, T):
    n = (len(ids) - 1) // T
    return ids[: n * T].view(n, T), ids[1: n * T + 1].view(n, T)


def eval_windows_lists(ids, T):
    ids = ids.tolist()
    xs = [ids[s:s + T] for s in range(0, len(ids) - T, T)]
    return xs, [ids[s + 1:s + T + 1] for s in range(0, len(ids) - T, T)]


def windows_at(data, starts, T):
    w = data[starts[:, None] + torch.arange(T + 1)]
    return w[:, :-1], w[:, 1:]


def windows_at_stack(data, starts, T):
    return (torch.stack([data[s:s + T] for s in starts]).numpy(),
            torch.stack([data[s + 1:s + T + 1] for s in starts]).numpy())


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_windows: ([windows, lambda ids, T: [(torch.tensor(ids[t:t + T]), np.array(ids[t + 1:t + T + 1]))
                                                 for t in range(len(ids) - T)]],
                       [lambda ids, T: [(ids[t:t + T], ids[t:t + T]) for t in range(len(ids) - T)],
                        lambda ids, T: windows(ids, T)[:-1] if len(ids) > T + 1 else [([0], [0])]],
                       lambda ids, T: ids),
    ex.check_split: ([split, lambda text, f: list(split(text, f))],
                     [lambda text, f: (text[:int(len(text) * (1 - f))], text[int(len(text) * (1 - f)):]),
                      lambda text, f: split(text, 1 - f)],
                     lambda text, f: (text, text)),
    ex.check_count_windows: ([count_windows, count_windows_range, lambda n, T, s: np.int64(count_windows(n, T, s))],
                             [lambda n, T, s: (n - T) // s, lambda n, T, s: (n - T - 1) // s + 1,
                              lambda n, T, s: n // s, lambda n, T, s: float(count_windows(n, T, s)) + 0.5],
                             lambda n, T, s: n),
    ex.check_eval_windows: ([eval_windows, eval_windows_lists],
                            [lambda ids, T: eval_windows(ids[1:], T), lambda ids, T: (eval_windows(ids, T)[0],) * 2,
                             lambda ids, T: (ids[: (len(ids) // T) * T].view(-1, T), ids[1:((len(ids) - 1) // T) * T + 1].view(-1, T))],
                            lambda ids, T: (ids, ids)),
    ex.check_windows_at: ([windows_at, windows_at_stack],
                          [lambda d, s, T: windows_at(d, s + 1, T), lambda d, s, T: (windows_at(d, s, T)[0],) * 2,
                           lambda d, s, T: windows_at(d, s.sort().values, T)],
                          lambda d, s, T: (d, s)),
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public cases passes them and fails the hidden ones."""
    seen = {}

    def recorder(*args):
        seen[repr(args)] = count_windows(*args)
        return seen[repr(args)]

    assert ex.check_count_windows(recorder)
    public = dict(seen)
    cheat = lambda *args: public[repr(args)]  # noqa: E731
    assert ex.check_count_windows(cheat)
    result = ex.check_count_windows(cheat, hidden=True)
    assert not result and "raised KeyError" in result.message


def test_feedback_is_specific():
    result = ex.check_count_windows(lambda n, T, s: (n - T) // s)
    assert not result
    assert "count windows(20, 4, 3): expected 6, got 5" in result.message


# --- the notebook's exercise cells -----------------------------------------------------------------


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex)


