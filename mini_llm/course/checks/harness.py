"""What every check shares: the `Result` it returns, the case runner, and helpers to compare and describe.

A check returns a `Result` that says what was expected, what came back, for which input, and a
hint that guides without handing over the code. It never raises, so a notebook with unsolved
exercises still runs top to bottom ("not written yet"). Every check has public cases (what the
notebook shows) and hidden ones, run with `hidden=True`: the notebook's hidden-test block,
which the grader always takes from the course, never from a submission, asserts them with
`Result.assert_passed()`.
"""

import copy
import sys
from dataclasses import dataclass

import torch


@dataclass
class Result:
    passed: bool
    message: str

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
    if isinstance(value, (tuple, list)) and len(value) > 1:
        inner = ", ".join(describe(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


def run_cases(name: str, fn, cases, hint: str, same=lambda got, want: got == want, hidden_cases=(),
           hidden: bool = False) -> Result:
    """Run fn(*args) for each (args, expected) case and explain the first mismatch; with
    `hidden`, the hidden cases run too (after the public ones)."""
    cases = list(cases) + (list(hidden_cases) if hidden else [])
    for args, want in cases:
        try:
            got = fn(*args)
        except NotImplementedError:
            return Result(False, f"{name}: not written yet. Replace `raise NotImplementedError()` with your code.")
        except Exception as e:  # the learner's bug, shown plainly
            return Result(False, f"{name}: your function raised {type(e).__name__}: {e}. Hint: {hint}")
        try:
            ok = bool(same(got, want))
        except Exception:
            ok = False
        if not ok:
            shown = ", ".join(short(a, 60) for a in args)
            return Result(False, f"{name}({shown}): expected {short(want)}, got {short(got)}. Hint: {hint}")
    return Result(True, f"{name}: correct, all {len(cases)} {'cases (hidden ones included)' if hidden else 'cases'} pass.")


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

