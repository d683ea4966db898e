"""What every check shares: the `Result` it returns, the case runner, and helpers to compare and describe.

A check returns a `Result` that says what was expected, what came back, for which input (and,
for lists, dicts, strings and tensors, the first position where they differ), and a hint that
guides without handing over the code. It never raises, so a notebook with unsolved steps and
exercises still runs top to bottom ("not written yet"). Every check has public cases (what the
notebook shows) and hidden ones, run with `hidden=True`: the notebook's hidden-test block,
which the grader always takes from the course, never from a submission, asserts them with
`Result.assert_passed()`.

A step's check (a piece the rest of the notebook uses) ends with `step(...)`: its Result also
carries `piece`, what the rest of the notebook goes on with (the learner's when it passed, else
the package's), and `yours`, the piece that was checked; its message ends with one line saying
which one is used.
"""

import copy
import sys
import types
from dataclasses import dataclass

import torch


@dataclass
class Result:
    passed: bool
    message: str
    written: bool = True   # False while the function still raises NotImplementedError
    piece: object = None   # a step's: what the rest of the notebook uses (yours if it passed, else mini_llm's)
    yours: object = None   # a step's: the piece that was checked (the hidden cases run on it)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("✅ " if self.passed else "❌ ") + self.message

    def _ipython_display_(self) -> None:
        # In Jupyter a failed check prints to stderr: nbgrader scores a test cell with stderr
        # output as failed (so `nbgrader validate` flags an unsolved exercise), and the notebook
        # still runs on.
        print(repr(self), file=sys.stdout if self.passed else sys.stderr)

    def assert_passed(self) -> "Result":
        """Raise AssertionError with the feedback unless passed (what a grader's test cell needs)."""
        if not self.passed:
            raise AssertionError(self.message)
        return self


def short(value, limit: int = 160) -> str:
    text = describe(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value) -> str:
    """Small tensors as lists; bigger ones as their shape and first values, rounded."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 16:
            return repr(value.tolist())
        values = value.detach().double().flatten()[:4].tolist() if value.is_floating_point() else value.flatten()[:4].tolist()
        return f"tensor{tuple(value.shape)} [" + ", ".join(f"{v:.4g}" for v in values) + ", ...]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)) and len(value) > 1:
        inner = ", ".join(describe(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


def first_difference(got, want, at: str = "") -> str:
    """Where `got` first differs from `want`, as "at [2][1]: expected 5, got 6" (an index per
    level: list positions, dict keys, tensor indices, a string's character; or "in the length
    of [2]", "in the shape"), or "" when there is no position to name (two numbers, say)."""
    try:
        found = _difference(got, want, at)
    except Exception:  # an answer of a shape no position fits: the whole values are shown anyway
        return ""
    if found is None or found[0] == "at ":
        return ""
    where, expected, gotten = found
    return f"{where}: expected {expected}, got {gotten}"


def _of(at: str) -> str:
    return f" of {at}" if at else ""


def _difference(got, want, at: str):
    """(where, expected, got) of the first difference below the index path `at`, or None."""
    if isinstance(want, torch.Tensor) or type(want).__module__ == "numpy":
        g, w = torch.as_tensor(got), torch.as_tensor(want)
        if g.shape != w.shape:
            return f"in the shape{_of(at)}", tuple(w.shape), tuple(g.shape)
        if w.is_floating_point() or g.is_floating_point():
            g, w = g.double(), w.double()
            off = ~torch.isclose(g, w, rtol=1e-5, atol=1e-5, equal_nan=True)
            if not off.any():  # within these tolerances: point at the largest difference, if any
                gap = (g - w).abs()
                off = (gap == gap.max()) & (gap > 0)
        else:
            off = g != w
        if not off.any() or w.dim() == 0:
            return None if not off.any() else (f"at {at}", short(w.item()), short(g.item()))
        index = tuple(off.nonzero()[0].tolist())
        return f"at {at}[{', '.join(map(str, index))}]", short(w[index].item()), short(g[index].item())
    if isinstance(want, dict):
        got = dict(got)
        for key in want:
            if key not in got:
                return f"at {at}[{key!r}]", short(want[key]), "no entry"
            inner = _difference(got[key], want[key], f"{at}[{key!r}]")
            if inner:
                return inner
        extra = [key for key in got if key not in want]
        return (f"at {at}[{extra[0]!r}]", "no entry", short(got[extra[0]])) if extra else None
    if isinstance(want, str):
        if not isinstance(got, str):
            return f"at {at}", short(want), short(got)
        i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        if got == want:
            return None
        return f"at {at} character {i}".replace("  ", " "), repr(want[i:i + 12]), repr(got[i:i + 12])
    if isinstance(want, (list, tuple)):
        got = got.tolist() if isinstance(got, torch.Tensor) else list(got)
        for i, (g, w) in enumerate(zip(got, want)):
            inner = _difference(g, w, f"{at}[{i}]")
            if inner:
                return inner
        if len(got) != len(want):
            return f"in the length{_of(at)}", len(want), len(got)
        return None
    return None if got == want else (f"at {at}", short(want), short(got))


def run_cases(name: str, fn, cases, hint: str, same=lambda got, want: got == want, hidden_cases=(),
           hidden: bool = False) -> Result:
    """Run fn(*args) for each (args, expected) case and explain the first mismatch; with
    `hidden`, the hidden cases run too (after the public ones)."""
    cases = list(cases) + (list(hidden_cases) if hidden else [])
    for args, want in cases:
        try:
            got = fn(*args)
            if isinstance(got, types.GeneratorType):  # read once, so comparing and describing see the same items
                got = list(got)
        except NotImplementedError:
            return Result(False, f"{name}: not written yet. Replace `raise NotImplementedError()` with your code.",
                          written=False)
        except Exception as e:  # the learner's bug, shown plainly
            return Result(False, f"{name}: your code raised {type(e).__name__}: {e}. Hint: {hint}")
        try:
            ok = bool(same(got, want))
        except Exception:
            ok = False
        if not ok:
            shown = ", ".join(short(a, 60) for a in args)
            where = first_difference(got, want) if isinstance(want, (dict, list, tuple, str, torch.Tensor)) else ""
            return Result(False, f"{name}({shown}): expected {short(want)}, got {short(got)}"
                                 f"{'; first difference ' + where if where else ''}. Hint: {hint}")
    return Result(True, f"{name}: correct, all {len(cases)} {'cases (hidden ones included)' if hidden else 'cases'} pass.")


def step(name: str, yours, package, result: Result) -> Result:
    """A step's proof: `result` (the cases run on `yours`, the learner's piece called `name`)
    decides what the rest of the notebook uses, yours if it passed, else `package`'s, and the
    message ends with one line that says which."""
    if yours is package:  # the proof run again after it handed the package's piece on (or the piece imported)
        return Result(False, f"this {name} is mini_llm's, not yours: run the cell where you write {name} again, "
                             "then this proof.", piece=package, yours=yours)
    if result.passed:
        return Result(True, f"{result.message} The rest of this notebook uses yours.", piece=yours, yours=yours)
    if not result.written:
        return Result(False, f"your {name} is not written yet: the rest of this notebook uses mini_llm's.",
                      written=False, piece=package, yours=yours)
    return Result(False, f"{result.message}\nYour {name} is not right yet: the rest of this notebook uses mini_llm's.",
                  piece=package, yours=yours)


def close(got, want, tol=1e-5) -> bool:
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    return got.shape == want.shape and torch.allclose(got, want, atol=tol, rtol=tol, equal_nan=False)


def on_copies(fn):
    """Call fn on deep copies, so a function that changes its inputs in place cannot change the
    cases (expected values are computed before the call, from the untouched inputs)."""
    return lambda *args: fn(*copy.deepcopy(args))


def as_ints(got) -> list[int]:
    if isinstance(got, (str, dict)):
        raise TypeError("expected a sequence of integers")
    return [int(t) for t in (got.tolist() if isinstance(got, torch.Tensor) else got)]


class Verdict:
    """What a check saw, as one line (its repr goes into the feedback); `ok` when right."""

    def __init__(self, ok: bool, text: str):
        self.ok, self.text = ok, text

    def __repr__(self) -> str:
        return self.text


class Label:
    """An argument shown by a short description in the feedback instead of its (long) repr."""

    def __init__(self, value, text: str):
        self.value, self.text = value, text

    def __repr__(self) -> str:
        return self.text


def small_model(seed: int, **sizes):
    """A small MiniGPT in eval mode, initialised from `seed`; torch's global RNG is left as it was."""
    from mini_llm.model import GPTConfig, MiniGPT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MiniGPT(GPTConfig(**sizes)).eval()

