"""Checks of notebook 02 (datasets): windows, the train/val split, counting windows, the fixed validation windows."""

import torch

from mini_llm.course.checks.harness import Result, as_ints, on_copies, run_cases


def check_windows(fn, hidden: bool = False) -> Result:
    """fn(ids, block_size) -> list of (x, y) sliding windows, y shifted by one."""
    ids = [10, 11, 12, 13, 14]
    want = [([10, 11], [11, 12]), ([11, 12], [12, 13]), ([12, 13], [13, 14])]
    cases = [((ids, 2), want), ((ids, 4), [([10, 11, 12, 13], [11, 12, 13, 14])])]
    other = [5, 3, 8, 1, 9, 2]
    hidden_cases = [((other, 1), [([a], [b]) for a, b in zip(other, other[1:])]),
                    ((other, 3), [(other[t:t + 3], other[t + 1:t + 4]) for t in range(3)]),
                    (([1, 2], 2), [])]
    return run_cases("windows", on_copies(fn), cases, "window t holds the T tokens from position t on; its target is the "
                  "same span one position later, so the last window ends one token before the text does.", lambda g, w: [(as_ints(x), as_ints(y)) for x, y in g] == w,
                  hidden_cases=hidden_cases, hidden=hidden)


def check_split(fn, hidden: bool = False) -> Result:
    """fn(text, val_fraction) -> (train, val) with the cut at a line boundary before the fraction."""
    from mini_llm.data import split_text

    text = "aaaa\nbbbb\ncccc\ndddd\neeee\n"
    cases = [((text, 0.2), ("aaaa\nbbbb\ncccc\ndddd\n", "eeee\n")),
             ((text, 0.5), ("aaaa\nbbbb\n", "cccc\ndddd\neeee\n"))]
    hidden_cases = [((t, f), split_text(t, f)) for t, f in
                    (("one\ntwo\nthree\nfour\nfive\nsix\n", 0.1), ("a\nbb\nccc\ndddd\n", 0.3), ("first line\nsecond\nthird line here\n", 0.25))]
    return run_cases("split", on_copies(fn), cases, "look for the last newline before the point (1 - fraction) of the "
                  "way in; the cut goes just after it.", lambda g, w: tuple(g) == w,
                  hidden_cases=hidden_cases, hidden=hidden)


def check_count_windows(fn, hidden: bool = False) -> Result:
    """fn(n_tokens, block_size, stride) -> how many (x, y) windows fit (what len(TextDataset) says)."""
    from mini_llm.data import TextDataset

    def case(n, T, s):
        return ((n, T, s), len(TextDataset(range(n), T, s)) if n > T else 0)

    cases = [case(20, 4, 1), case(20, 4, 4), case(20, 4, 3), case(5, 4, 1)]
    hidden_cases = [case(4, 4, 1), case(3, 4, 2), case(1, 8, 1), case(21, 4, 4), case(100, 7, 10), case(129, 128, 128),
                    case(1_000, 1, 1), case(1_000, 64, 1_000)]
    hidden_cases.append(((10 ** 12, 128, 64), (10 ** 12 - 129) // 64 + 1))
    return run_cases("count windows", on_copies(fn), cases, "a window needs T + 1 tokens (inputs and the shifted "
                  "target); starts go 0, stride, 2*stride, ... as long as the window still fits. "
                  "A text shorter than T + 1 tokens has none.",
                  lambda g, w: not isinstance(g, bool) and int(g) == g and int(g) == w,
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

