"""Checks of notebook 02 (datasets). Steps: the window dataset, the train/val split, get_batch.
Exercises: how often each token is a target, the fixed validation windows, windows in one indexing step."""

import numpy as np
import torch

from mini_llm.course.checks.harness import Label, Result, as_ints, on_copies, run_cases, step
from mini_llm.data import TextDataset, get_batch, split_text


def _items(dataset) -> list:
    """Every (x, y) of a dataset, by len() and indexing; x and y must be int64 tensors."""
    items = []
    for i in range(len(dataset)):
        x, y = dataset[i]
        for name, t in (("x", x), ("y", y)):
            if not (isinstance(t, torch.Tensor) and t.dtype == torch.long):
                kind = f"a tensor of {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"item {i}: {name} is {kind}; return int64 tensors (torch.long), "
                                "which an embedding takes")
        items.append((x, y))
    return items


def _ids(values, dtype=np.uint16):
    """A NumPy array of ids (as prepared.train is), shown by its dtype, first values and length."""
    ids = np.asarray(values, dtype=dtype)
    first = ", ".join(str(int(v)) for v in ids[:6]) + (", ..." if len(ids) > 6 else "")
    return Label(ids, f"{np.dtype(dtype).name} array [{first}] of {len(ids)} ids")


def check_window_dataset(cls, hidden: bool = False) -> Result:
    """Step: cls(ids, block_size, stride) is a Dataset of every window: len() of them, item i is
    (x, y) with x = ids[s:s+T], y = ids[s+1:s+T+1], s = i * stride, as int64 tensors."""
    def case(values, T, stride, dtype=np.uint16):
        ids = _ids(values, dtype)
        return (ids, T, stride), _items(TextDataset(ids.value, T, stride))

    rng = np.random.default_rng(0)
    cases = [case(range(100, 120), 4, 1), case(range(100, 120), 4, 3), case([5, 3, 8, 1, 9, 2], 5, 1)]
    hidden_cases = [case(rng.integers(0, 8000, 50), 8, 8), case(range(30), 4, 7), case(range(7), 6, 5),
                    case(rng.integers(0, 60000, 40), 1, 1), case(range(1000, 1064), 16, 16, np.int64)]
    return step("WindowDataset", cls, TextDataset, run_cases(
        "WindowDataset", lambda ids, T, stride: _items(cls(ids.value.copy(), T, stride)), cases,
        "window i starts at s = i * stride and needs T + 1 tokens (x and its target y, one later), so the last "
        "start is at most len(ids) - T - 1; count the starts that fit for __len__.",
        lambda g, w: len(g) == len(w) and all(torch.equal(a, b) for got, want in zip(g, w) for a, b in zip(got, want)),
        hidden_cases=hidden_cases, hidden=hidden))


def check_split(fn, hidden: bool = False) -> Result:
    """Step: fn(text, val_fraction) -> (train, val) with the cut at a line boundary before the fraction."""
    text = "aaaa\nbbbb\ncccc\ndddd\neeee\n"
    cases = [((text, 0.2), ("aaaa\nbbbb\ncccc\ndddd\n", "eeee\n")),
             ((text, 0.5), ("aaaa\nbbbb\n", "cccc\ndddd\neeee\n"))]
    hidden_cases = [((t, f), split_text(t, f)) for t, f in
                    (("one\ntwo\nthree\nfour\nfive\nsix\n", 0.1), ("a\nbb\nccc\ndddd\n", 0.3), ("first line\nsecond\nthird line here\n", 0.25))]
    return step("split_at_line", fn, split_text, run_cases(
        "split_at_line", on_copies(fn), cases, "look for the last newline before the point (1 - fraction) of the "
        "way in; the cut goes just after it.", lambda g, w: tuple(g) == w, hidden_cases=hidden_cases, hidden=hidden))


def check_get_batch(fn, hidden: bool = False) -> Result:
    """Step: fn(data, batch_size, block_size, generator) -> x, y (B, T): the package's get_batch
    for the same seed (starts drawn by one torch.randint call on the generator)."""
    def case(data, B, T, seed):
        want = get_batch(data, B, T, torch.Generator().manual_seed(seed))
        return (data, B, T, Label(seed, f"torch.Generator().manual_seed({seed})")), want

    def call(data, B, T, seed):
        return fn(data.clone(), B, T, torch.Generator().manual_seed(seed.value))

    perm = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    cases = [case(torch.arange(1000, 1040), 4, 8, 0), case(torch.arange(1000, 1040), 2, 3, 1),
             case(torch.arange(50), 8, 5, 2)]
    hidden_cases = [case(perm, 16, 32, 3), case(perm[:9], 1, 8, 4), case(perm, 3, 1, 5), case(perm[:100], 64, 12, 6)]
    return step("get_batch_mine", fn, get_batch, run_cases(
        "get_batch_mine", call, cases, "draw the B starts with one torch.randint(len(data) - block_size, "
        "(batch_size,), generator=generator) call (the generator, never the global RNG), then cut x = data[s:s+T] "
        "and y = data[s+1:s+T+1] at each start and stack them.",
        _pair_equal, hidden_cases=hidden_cases, hidden=hidden))


# --- exercises ----------------------------------------------------------------------------------


def _target_counts(starts, block_size, n_tokens):
    positions = starts[:, None] + torch.arange(1, block_size + 1)  # (B, T): where each window's targets sit
    return torch.bincount(positions.flatten(), minlength=n_tokens)


def check_target_counts(fn, hidden: bool = False) -> Result:
    """fn(starts, block_size, n_tokens) -> (n_tokens,): how many of the windows starting at
    `starts` have the token at each position among their targets."""
    def case(starts, T, n):
        starts = torch.as_tensor(starts, dtype=torch.long)
        return (starts, T, n), _target_counts(starts, T, n)

    g = torch.Generator().manual_seed(0)
    cases = [case([0, 2], 3, 8), case([5, 5, 0], 2, 8), case([3], 1, 5)]
    hidden_cases = [case([], 4, 6), case([0, 0, 0, 0], 5, 6), case(torch.randint(0, 90, (40,), generator=g), 10, 100),
                    case(torch.randint(0, 2, (7,), generator=g), 1, 3), case(list(range(0, 60, 6)), 6, 66)]
    return run_cases("target counts", on_copies(fn), cases, "the window starting at s predicts the tokens at "
                     "positions s + 1 ... s + T; add one at each of them, for every start (starts may repeat).",
                     lambda g, w: len(as_ints(g)) == len(w) and as_ints(g) == as_ints(w),
                     hidden_cases=hidden_cases, hidden=hidden)


def _pair_equal(got, want) -> bool:
    x, y = got
    return all(torch.equal(torch.as_tensor(a).long(), b) for a, b in ((x, want[0]), (y, want[1])))


def check_eval_windows(fn, hidden: bool = False) -> Result:
    """fn(ids, block_size) -> x, y (N, T): non-overlapping windows over the whole 1-D tensor, in order."""
    from mini_llm.data import eval_windows

    def case(n, T, start=0):
        ids = torch.arange(start, start + n)
        return ((ids, T), eval_windows(ids.numpy(), T))

    cases = [case(9, 4), case(10, 3, 100), case(13, 4)]
    hidden_cases = [case(5, 4), case(2, 1, 7), case(101, 10), case(1_000, 16, 3), case(17, 4, 50)]
    return run_cases("eval windows", on_copies(fn), cases, "N = how many whole windows fit when each one needs its "
                  "target's extra token; x is the first N*T ids viewed as (N, T), y the same one token later.",
                  _pair_equal, hidden_cases=hidden_cases, hidden=hidden)


def check_windows_at(fn, hidden: bool = False) -> Result:
    """fn(data, starts, block_size) -> x, y (B, T): the windows starting at starts and their targets."""
    from mini_llm.data import windows_at

    def case(n, starts, T, seed=0):
        data = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) + 1000
        starts = torch.tensor(starts)
        return ((data, starts, T), windows_at(data, starts, T))

    cases = [case(20, [0, 5], 4), case(12, [7, 7, 0], 3), case(30, [25], 4)]
    hidden_cases = [case(50, [3, 1, 4, 1, 5], 8, 1), case(6, [0], 5, 2), case(100, list(range(0, 90, 9)), 10, 3)]
    return run_cases("windows at", on_copies(fn), cases, "row b of x is data[s:s+T] for s = starts[b]; y is the same "
                  "window one token later. An index tensor of shape (B, T + 1) gathers them all at once.",
                  _pair_equal, hidden_cases=hidden_cases, hidden=hidden)

