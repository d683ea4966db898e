"""The checks of notebook 02_datasets: right answers (in every standard form) pass, public and hidden
cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so; each step hands
on yours or the package's piece. Then the notebook's step and exercise cells."""


import numpy as np
import torch

from mini_llm.course import checks as ex
from mini_llm.data import TextDataset, get_batch, split_text
from tests.course.check_contract import (
    contract_tests,
    notebook_tests,
    step_tests,
)

NOTEBOOK = "02_datasets"

# --- solutions, written independently of the package where it matters ---------------------------


class WindowDataset:  # the notebook's: a range of starts
    def __init__(self, ids, block_size, stride=1):
        self.ids = torch.from_numpy(np.asarray(ids).astype(np.int64))
        self.T, self.starts = block_size, range(0, len(ids) - block_size, stride)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        return self.ids[s:s + self.T], self.ids[s + 1:s + self.T + 1]


class WindowsByArithmetic:  # another correct form: NumPy slices, the count by formula, a list of ids kept
    def __init__(self, ids, block_size, stride=1):
        self.ids, self.T, self.stride = list(ids), block_size, stride

    def __len__(self):
        return (len(self.ids) - self.T - 1) // self.stride + 1

    def __getitem__(self, i):
        s = i * self.stride
        chunk = np.array(self.ids[s:s + self.T + 1], dtype=np.int64)
        return torch.as_tensor(chunk[:-1]), torch.as_tensor(chunk[1:])


class OneTooFew(WindowDataset):  # wrong: misses the last window
    def __len__(self):
        return len(self.starts) - 1


class NoShift(WindowDataset):  # wrong: the target is the input
    def __getitem__(self, i):
        x, _ = super().__getitem__(i)
        return x, x


class Uint16(WindowDataset):  # wrong: keeps the array's dtype, which an embedding refuses
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x.to(torch.uint16), y.to(torch.uint16)


def split(text, f):
    cut = text.rfind("\n", 0, int(len(text) * (1 - f))) + 1
    return text[:cut], text[cut:]


def get_batch_loop(data, B, T, generator):  # the notebook's
    starts = torch.randint(len(data) - T, (B,), generator=generator)
    return torch.stack([data[s:s + T] for s in starts]), torch.stack([data[s + 1:s + T + 1] for s in starts])


def get_batch_indexing(data, B, T, generator):  # another correct form: torch.randint(low, high, ...) and one gather
    starts = torch.randint(0, len(data) - T, (B,), generator=generator)
    index = starts[:, None] + torch.arange(T + 1)
    return data[index][:, :-1], data[index][:, 1:]


def target_counts(starts, T, n):
    positions = starts[:, None] + torch.arange(1, T + 1)
    return torch.bincount(positions.flatten(), minlength=n)


def target_counts_loop(starts, T, n):  # another correct form: a list, one window at a time
    counts = [0] * n
    for s in starts.tolist():
        for p in range(s + 1, s + T + 1):
            counts[p] += 1
    return counts


def target_counts_index_add(starts, T, n):  # another correct form: a float tensor built with index_add_
    counts = torch.zeros(n)
    for t in range(1, T + 1):
        counts.index_add_(0, starts + t, torch.ones(len(starts)))
    return counts.long()


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
    ex.check_window_dataset: ([WindowDataset, WindowsByArithmetic], [OneTooFew, NoShift, Uint16],
                              lambda ids, T, stride: ids),
    ex.check_split: ([split, lambda text, f: list(split(text, f))],
                     [lambda text, f: (text[:int(len(text) * (1 - f))], text[int(len(text) * (1 - f)):]),
                      lambda text, f: split(text, 1 - f)],
                     lambda text, f: (text, text)),
    ex.check_get_batch: ([get_batch_loop, get_batch_indexing],
                         [lambda d, B, T, g: get_batch_loop(d, B, T, None),  # the global RNG, not the generator
                          lambda d, B, T, g: (get_batch_loop(d, B, T, g)[0],) * 2,
                          lambda d, B, T, g: get_batch_loop(d, B, T + 1, g)],
                         lambda d, B, T, g: (d, d)),
    ex.check_target_counts: ([target_counts, target_counts_loop, target_counts_index_add],
                             [lambda s, T, n: torch.bincount((s[:, None] + torch.arange(T)).flatten(), minlength=n),
                              lambda s, T, n: target_counts(s.unique(), T, n),
                              lambda s, T, n: target_counts(s, T, n)[:-1]],
                             lambda s, T, n: s),
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

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_window_dataset: TextDataset, ex.check_split: split_text, ex.check_get_batch: get_batch}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public cases passes them and fails the hidden ones."""
    seen = {}

    def recorder(*args):
        seen[repr(args)] = target_counts(*args)
        return seen[repr(args)]

    assert ex.check_target_counts(recorder)
    public = dict(seen)
    cheat = lambda *args: public[repr(args)]  # noqa: E731
    assert ex.check_target_counts(cheat)
    result = ex.check_target_counts(cheat, hidden=True)
    assert not result and "raised KeyError" in result.message


def test_feedback_is_specific():
    result = ex.check_target_counts(CASES[ex.check_target_counts][1][0])
    assert not result
    assert "target counts([0, 2], 3, 8): expected [0, 1, 1, 2, 1, 1, 0, 0], got [1, 1, 2, 1, 1, 0, 0, 0]" in result.message
    assert "first difference at [0]: expected 0, got 1" in result.message
    message = ex.check_window_dataset(OneTooFew).message
    assert message.startswith("WindowDataset(uint16 array [100, 101, 102, 103, 104, 105, ...] of 20 ids, 4, 1): expected ")
    assert "first difference in the length: expected 16, got 15" in message
    message = ex.check_window_dataset(Uint16).message
    assert "raised TypeError: item 0: x is a tensor of torch.uint16; return int64 tensors" in message
    message = ex.check_get_batch(CASES[ex.check_get_batch][1][0]).message
    assert "get_batch_mine(tensor(40,) [1000, 1001, 1002, 1003, ...], 4, 8, torch.Generator().manual_seed(0)): expected" in message
    assert "first difference at [0][0, 0]: expected 1012, got " in message


# --- the notebook's exercise cells -----------------------------------------------------------------


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex)


