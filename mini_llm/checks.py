"""Exercise checks: each `check_...` runs a learner's function on cases and explains the result.

A check returns a `Result` that says what was expected, what came back, for which input, and a
hint that guides without handing over the code. It never raises, so a notebook with unsolved
exercises still runs top to bottom ("not written yet"). Every check has public cases (what the
notebook shows) and hidden ones, run with `hidden=True`: the notebook's hidden-test block,
which the grader always takes from the course, never from a submission, asserts them with
`Result.assert_passed()`.
"""

import math
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


def _short(value, limit: int = 160) -> str:
    text = repr(value.tolist() if isinstance(value, torch.Tensor) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check(name: str, fn, cases, hint: str, same=lambda got, want: got == want, hidden_cases=(),
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
            shown = ", ".join(_short(a, 60) for a in args)
            return Result(False, f"{name}({shown}): expected {_short(want)}, got {_short(got)}. Hint: {hint}")
    return Result(True, f"{name}: correct, all {len(cases)} {'cases (hidden ones included)' if hidden else 'cases'} pass.")


def _close(got, want, tol=1e-5) -> bool:
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    return got.shape == want.shape and torch.allclose(got, want, atol=tol, rtol=tol, equal_nan=False)


# --- 01 tokenization --------------------------------------------------------------------------


def check_pair_counts(fn, hidden: bool = False) -> Result:
    """fn(ids) -> {(a, b): count} of adjacent pairs."""
    cases = [(([1, 2, 3, 1, 2],), {(1, 2): 2, (2, 3): 1, (3, 1): 1}),
             (([97, 97, 97],), {(97, 97): 2}),
             (([5],), {})]
    return _check("pair counts", fn, cases, "zip(ids, ids[1:]) walks over adjacent pairs; overlapping pairs count.",
                  lambda g, w: dict(g) == w, hidden=hidden)


def check_merge(fn, hidden: bool = False) -> Result:
    """fn(ids, pair, new_id) -> ids with every occurrence of pair (left to right) replaced."""
    cases = [(([1, 2, 3, 1, 2], (1, 2), 99), [99, 3, 99]),
             (([97, 97, 97], (97, 97), 256), [256, 97]),
             (([1, 3, 1], (1, 2), 7), [1, 3, 1])]
    return _check("merge", fn, cases, "scan left to right; after a match skip both tokens (i += 2).", hidden=hidden)


# --- 02 datasets ------------------------------------------------------------------------------


def check_windows(fn, hidden: bool = False) -> Result:
    """fn(ids, block_size) -> list of (x, y) sliding windows, y shifted by one."""
    ids = [10, 11, 12, 13, 14]
    want = [([10, 11], [11, 12]), ([11, 12], [12, 13]), ([12, 13], [13, 14])]
    cases = [((ids, 2), want), ((ids, 4), [([10, 11, 12, 13], [11, 12, 13, 14])])]
    return _check("windows", fn, cases, "window t is ids[t:t+T] and its target ids[t+1:t+T+1]; "
                  "there are len(ids) - T of them.", lambda g, w: [(list(x), list(y)) for x, y in g] == w, hidden=hidden)


def check_split(fn, hidden: bool = False) -> Result:
    """fn(text, val_fraction) -> (train, val) with the cut at a line boundary before the fraction."""
    text = "aaaa\nbbbb\ncccc\ndddd\neeee\n"
    cases = [((text, 0.2), ("aaaa\nbbbb\ncccc\ndddd\n", "eeee\n")),
             ((text, 0.5), ("aaaa\nbbbb\n", "cccc\ndddd\neeee\n"))]
    return _check("split", fn, cases, "find the cut with text.rfind('\\n', 0, int(len(text) * (1 - frac))) + 1.", hidden=hidden)


# --- 03 attention -----------------------------------------------------------------------------


def check_causal_mask(fn, hidden: bool = False) -> Result:
    """fn(T) -> (T, T) bool tensor, True where query t may attend to key s <= t."""
    cases = [((1,), torch.ones(1, 1, dtype=torch.bool)), ((4,), torch.ones(4, 4, dtype=torch.bool).tril())]
    return _check("causal mask", fn, cases, "torch.ones(T, T).tril() keeps the lower triangle; make it bool.",
                  lambda g, w: isinstance(g, torch.Tensor) and g.dtype == torch.bool and torch.equal(g, w), hidden=hidden)


def check_attention(fn, hidden: bool = False) -> Result:
    """fn(q, k, v, mask) -> (out, weights) of scaled dot-product attention."""
    from mini_llm.attention import attention, causal_mask

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 8, generator=g) for _ in range(3))
    cases = []
    for mask in (None, causal_mask(5)):
        out, w = attention(q, k, v, mask)
        cases.append(((q, k, v, mask), (out, w)))
    return _check("attention", fn, cases, "scores = q @ k.transpose(-2, -1) / sqrt(head size); masked_fill(~mask, "
                  "-inf); softmax over the last dim; weights @ v.",
                  lambda g_, w_: _close(g_[0], w_[0], 1e-5) and _close(g_[1], w_[1], 1e-5), hidden=hidden)


# --- 04 minigpt -------------------------------------------------------------------------------


def check_param_count(fn, hidden: bool = False) -> Result:
    """fn(vocab_size, block_size, n_embd, n_layer) -> parameters of MiniGPT (bias, tied head)."""
    from mini_llm.model import GPTConfig

    def with_count(shapes):
        return [(s, GPTConfig(vocab_size=s[0], block_size=s[1], n_embd=s[2], n_layer=s[3], n_head=4).num_params())
                for s in shapes]

    cases = with_count([(8000, 128, 256, 4), (100, 16, 32, 2), (50, 8, 64, 1)])
    hidden_cases = with_count([(65, 256, 384, 6), (50257, 1024, 768, 12), (3, 4, 8, 3)])
    return _check("parameter count", fn, cases, "embeddings V*C + T*C; per block 12*C*C + 13*C; final LayerNorm 2*C; "
                  "the tied LM head adds nothing.", hidden_cases=hidden_cases, hidden=hidden)


def check_initial_loss(fn, hidden: bool = False) -> Result:
    """fn(vocab_size) -> the cross-entropy of a uniform guess."""
    cases = [((v,), math.log(v)) for v in (2, 8000, 50257)]
    hidden_cases = [((v,), math.log(v)) for v in (1, 65, 300)]
    return _check("initial loss", fn, cases, "a uniform distribution gives each token probability 1/V; the loss is -log(1/V).",
                  lambda g, w: abs(float(g) - w) < 1e-6, hidden_cases=hidden_cases, hidden=hidden)


# --- 05 training ------------------------------------------------------------------------------


def check_lr_schedule(fn, hidden: bool = False) -> Result:
    """fn(step, total_steps, max_lr, warmup_steps, min_lr) -> warmup then cosine."""

    def ref(step, total, max_lr, warmup, min_lr):
        if step < warmup:
            return max_lr * (step + 1) / warmup
        progress = step / total
        return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    args = [(0, 100, 1e-3, 10, 1e-4), (9, 100, 1e-3, 10, 1e-4), (10, 100, 1e-3, 10, 1e-4),
            (50, 100, 1e-3, 10, 1e-4), (100, 100, 1e-3, 10, 1e-4)]
    hidden_args = [(3, 400, 6e-4, 40, 6e-5), (40, 400, 6e-4, 40, 6e-5), (123, 400, 6e-4, 40, 6e-5),
                   (399, 400, 6e-4, 40, 6e-5), (7, 30, 0.1, 1, 0.0)]
    return _check("lr schedule", fn, [(a, ref(*a)) for a in args],
                  "warmup: max_lr * (step + 1) / warmup; then min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * step / total)).",
                  lambda g, w: abs(float(g) - w) < 1e-9, hidden_cases=[(a, ref(*a)) for a in hidden_args], hidden=hidden)


def check_nats_per_char(fn, hidden: bool = False) -> Result:
    """fn(loss_per_token, n_tokens, n_chars) -> nats per character."""
    cases = [((2.0, 100, 350), 2.0 * 100 / 350), ((4.2, 10, 10), 4.2)]
    hidden_cases = [((5.195, 1000, 3143), 5.195 * 1000 / 3143), ((0.5, 7, 2), 1.75)]
    return _check("nats per character", fn, cases, "total nats = loss * n_tokens; spread over n_chars characters.",
                  lambda g, w: abs(float(g) - w) < 1e-9, hidden_cases=hidden_cases, hidden=hidden)


# --- 06 sampling ------------------------------------------------------------------------------


def check_top_k(fn, hidden: bool = False) -> Result:
    """fn(logits, k) -> logits with all but the k largest set to -inf."""
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5, 4.0])
    inf = float("-inf")
    cases = [((logits, 2), torch.tensor([inf, 3.0, inf, inf, 4.0])),
             ((logits, 1), torch.tensor([inf, inf, inf, inf, 4.0])),
             ((logits, 10), logits.clone())]
    other = torch.tensor([0.25, -2.0, 5.0, 3.0, 3.5, -1.0, 0.0])
    hidden_cases = [((other, 3), torch.tensor([inf, inf, 5.0, 3.0, 3.5, inf, inf])),
                    ((other, 7), other.clone()),
                    ((-other, 2), torch.tensor([inf, 2.0, inf, inf, inf, 1.0, inf]))]
    return _check("top-k", fn, cases, "torch.topk(logits, min(k, len(logits))).values[-1] is the k-th largest; "
                  "mask everything below it.", lambda g, w: torch.equal(torch.as_tensor(g), w),
                  hidden_cases=hidden_cases, hidden=hidden)


def check_temperature(fn, hidden: bool = False) -> Result:
    """fn(logits, temperature) -> probabilities; temperature 0 is a one-hot argmax."""
    logits = torch.tensor([1.0, 2.0, 0.0])
    cases = [((logits, 1.0), torch.softmax(logits, 0)), ((logits, 0.5), torch.softmax(logits / 0.5, 0)),
             ((logits, 0.0), torch.tensor([0.0, 1.0, 0.0]))]
    other = torch.tensor([0.5, -1.0, 2.5, 3.0])
    hidden_cases = [((other, 2.0), torch.softmax(other / 2.0, 0)), ((other, 0.1), torch.softmax(other / 0.1, 0)),
                    ((other, 0.0), torch.tensor([0.0, 0.0, 0.0, 1.0]))]
    return _check("temperature", fn, cases, "softmax(logits / T); at T == 0 do not divide: put all probability on the argmax.",
                  lambda g, w: _close(g, w, 1e-6), hidden_cases=hidden_cases, hidden=hidden)


# --- 07 export --------------------------------------------------------------------------------


def check_crop(fn, hidden: bool = False) -> Result:
    """fn(ids, block_size) -> the last block_size ids (the runtime must crop itself)."""
    cases = [(([1, 2, 3, 4, 5], 3), [3, 4, 5]), (([1, 2], 3), [1, 2]), (([7, 8, 9], 3), [7, 8, 9])]
    hidden_cases = [(([9, 8, 7, 6, 5, 4], 4), [7, 6, 5, 4]), (([], 2), []), (([4, 2, 4, 2], 1), [2])]
    return _check("crop", fn, cases, "ids[-block_size:] keeps the newest tokens.", lambda g, w: list(g) == w,
                  hidden_cases=hidden_cases, hidden=hidden)


def check_kv_cache_bytes(fn, hidden: bool = False) -> Result:
    """fn(n_layer, n_embd, seq_len, batch, bytes_per_value) -> size of a KV cache in bytes."""
    cases = [((4, 256, 128, 1, 4), 2 * 4 * 256 * 128 * 1 * 4), ((12, 768, 1024, 2, 2), 2 * 12 * 768 * 1024 * 2 * 2)]
    hidden_cases = [((6, 384, 256, 8, 2), 2 * 6 * 384 * 256 * 8 * 2), ((1, 64, 1, 3, 1), 2 * 64 * 3)]
    return _check("KV cache size", fn, cases, "keys and values (2) for every layer, every position, every channel.",
                  hidden_cases=hidden_cases, hidden=hidden)
