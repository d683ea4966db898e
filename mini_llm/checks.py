"""Exercise checks: each `check_...` runs a learner's function on cases and explains the result.

A check returns a `Result` that says what was expected, what came back, for which input, and a
hint that guides without handing over the code. It never raises, so a notebook with unsolved
exercises still runs top to bottom ("not written yet"). Every check has public cases (what the
notebook shows) and hidden ones, run with `hidden=True`: the notebook's hidden-test block,
which the grader always takes from the course, never from a submission, asserts them with
`Result.assert_passed()`.
"""

import copy
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
    text = _describe(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value) -> str:
    """Small tensors as lists; bigger ones as their shape and first values, rounded."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 16:
            return repr(value.tolist())
        values = value.detach().double().flatten()[:4].tolist() if value.is_floating_point() else value.flatten()[:4].tolist()
        return f"tensor{tuple(value.shape)} [" + ", ".join(f"{v:.4g}" for v in values) + ", ...]"
    if isinstance(value, (tuple, list)) and len(value) > 1:
        inner = ", ".join(_describe(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


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


def _on_copies(fn):
    """Call fn on deep copies, so a function that changes its inputs in place cannot change the
    cases (expected values are computed before the call, from the untouched inputs)."""
    return lambda *args: fn(*copy.deepcopy(args))


def _ints(got) -> list[int]:
    if isinstance(got, (str, dict)):
        raise TypeError("expected a sequence of integers")
    return [int(t) for t in (got.tolist() if isinstance(got, torch.Tensor) else got)]


_VERSE = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate: "
          "Rough winds do shake the darling buds of May, and summer's lease hath all too short a date; "
          "Sometime too hot the eye of heaven shines, and often is his gold complexion dimm'd; "
          "And every fair from fair sometime declines, by chance or nature's changing course untrimm'd.\n")


def _bpe(text: str, vocab_size: int, min_frequency: int = 2):
    from mini_llm.bpe import BPE

    bpe = BPE()
    bpe.train(text, vocab_size, min_frequency=min_frequency)
    return bpe


def _shuffled(merges: dict, seed: int) -> dict:
    """The same merges in another dict order: the rank is the new id, not the position."""
    import random

    items = list(merges.items())
    random.Random(seed).shuffle(items)
    return dict(items)


def check_pair_counts(fn, hidden: bool = False) -> Result:
    """fn(ids) -> {(a, b): count} of adjacent pairs."""
    cases = [(([1, 2, 3, 1, 2],), {(1, 2): 2, (2, 3): 1, (3, 1): 1}),
             (([97, 97, 97],), {(97, 97): 2}),
             (([5],), {})]
    hidden_cases = [(([],), {}), (([7, 7, 7, 7, 8, 7, 7],), {(7, 7): 4, (7, 8): 1, (8, 7): 1}),
                    ((list(b"hello hello"),), {(104, 101): 2, (101, 108): 2, (108, 108): 2, (108, 111): 2,
                                               (111, 32): 1, (32, 104): 1})]
    return _check("pair counts", _on_copies(fn), cases, "walk over neighbours (position i and i + 1); "
                  "overlapping pairs count, so 'aaa' holds (a, a) twice.",
                  lambda g, w: dict(g) == w, hidden_cases=hidden_cases, hidden=hidden)


def check_merge(fn, hidden: bool = False) -> Result:
    """fn(ids, pair, new_id) -> ids with every occurrence of pair (left to right) replaced."""
    cases = [(([1, 2, 3, 1, 2], (1, 2), 99), [99, 3, 99]),
             (([97, 97, 97], (97, 97), 256), [256, 97]),
             (([1, 3, 1], (1, 2), 7), [1, 3, 1])]
    hidden_cases = [(([], (1, 2), 5), []), (([2, 2, 2, 2], (2, 2), 9), [9, 9]), (([1, 2], (2, 1), 3), [1, 2]),
                    (([4, 1, 2, 1, 2, 2], (1, 2), 300), [4, 300, 300, 2])]
    return _check("merge", _on_copies(fn), cases, "scan left to right; after a match jump past both tokens, "
                  "so 'aaa' becomes (aa) a, not two overlapping merges.",
                  lambda g, w: _ints(g) == w, hidden_cases=hidden_cases, hidden=hidden)


def check_bpe_encode(fn, hidden: bool = False) -> Result:
    """fn(text, merges) -> ids: the UTF-8 bytes of text with the merges applied in rank order
    (the rank of a merge is its new id; the dict may list them in any order)."""
    wiki = {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    verse = _bpe(_VERSE, 330).merges

    def case(text, merges, seed):
        bpe = _bpe("a", 257)
        bpe.merges = dict(merges)
        return ((text, _shuffled(merges, seed)), bpe._encode_chunk(text))

    cases = [(("aaabdaaabac", dict(reversed(list(wiki.items())))), [258, 100, 258, 97, 99]),
             case("abracadabra", wiki, 1), case(" the summer", verse, 2)]
    hidden_cases = [case("", wiki, 3), case("x", verse, 4), case("Thou art more lovely, thee!", verse, 5),
                    case("fair from fair: déjà vu 👋", verse, 6), case("aaaaaaa", wiki, 7)]
    return _check("BPE encode", _on_copies(fn), cases, "start from the text's UTF-8 bytes; among the pairs present, "
                  "merge the one with the lowest new id first (it was learned first), and stop when no pair "
                  "present is in merges. The dict's order is not the rank.",
                  lambda g, w: _ints(g) == w, hidden_cases=hidden_cases, hidden=hidden)


def check_stream_decode(fn, hidden: bool = False) -> Result:
    """fn(ids, vocab) -> one string per id: the characters completed by that token ("" while a
    multi-byte character is still incomplete)."""
    byte_vocab = {i: bytes([i]) for i in range(256)}
    verse = _bpe(_VERSE + "Ωж 👋 déjà ", 330).vocab

    def case(text, vocab):
        inverse = {b: i for i, b in vocab.items()}
        ids, data = [], text.encode("utf-8")
        while data:  # greedy longest match: any split into vocabulary pieces is a fine input
            n = max(n for n in range(1, len(data) + 1) if data[:n] in inverse)
            ids.append(inverse[data[:n]])
            data = data[n:]
        pieces, buffer = [], b""
        for i in ids:
            buffer += vocab[i]
            for cut in range(len(buffer), -1, -1):
                try:
                    done = buffer[:cut].decode("utf-8")
                    break
                except UnicodeDecodeError:
                    continue
            pieces.append(done)
            buffer = buffer[cut:]
        return ((ids, vocab), pieces)

    cases = [case("Ωж", byte_vocab), case("hi 👋!", byte_vocab), case("Thou art déjà", verse)]
    hidden_cases = [case("", byte_vocab), case("abc", byte_vocab), case("日本語のテキスト", byte_vocab),
                    case("Shall I compare thee 👋 Ωж", verse), case("é👋é", verse)]
    return _check("stream decode", _on_copies(fn), cases, "keep the bytes that do not yet form whole characters in "
                  "a buffer; after each token, hand out the longest prefix of the buffer that decodes as UTF-8 "
                  "and keep the rest for the next token.",
                  lambda g, w: [str(p) for p in g] == w and all(isinstance(p, str) for p in g),
                  hidden_cases=hidden_cases, hidden=hidden)


def check_unmerge(fn, hidden: bool = False) -> Result:
    """fn(ids, merges) -> the byte values (0..255) that the tokens stand for, using only merges."""
    wiki = {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    verse = _bpe(_VERSE, 330)

    def case(text, bpe, seed):
        ids = bpe.encode(text)
        return ((ids, _shuffled(bpe.merges, seed)), list(text.encode("utf-8")))

    cases = [(([258, 100, 258, 97, 99], wiki), list(b"aaabdaaabac")), (([258], wiki), list(b"aaab")),
             case("summer's day", verse, 1)]
    hidden_cases = [(([], wiki), []), (([97, 257, 256], wiki), list(b"aabaa")),
                    case("Rough winds do shake the darling buds of May", verse, 2), case("fair déjà 👋", verse, 3)]
    return _check("unmerge", _on_copies(fn), cases, "a token below 256 is a byte; any other token is the pair it was "
                  "merged from, and each half may itself be a merged token: invert the merges dict and expand "
                  "until only bytes are left.",
                  lambda g, w: _ints(g) == w, hidden_cases=hidden_cases, hidden=hidden)


# --- 02 datasets ------------------------------------------------------------------------------


def check_windows(fn, hidden: bool = False) -> Result:
    """fn(ids, block_size) -> list of (x, y) sliding windows, y shifted by one."""
    ids = [10, 11, 12, 13, 14]
    want = [([10, 11], [11, 12]), ([11, 12], [12, 13]), ([12, 13], [13, 14])]
    cases = [((ids, 2), want), ((ids, 4), [([10, 11, 12, 13], [11, 12, 13, 14])])]
    other = [5, 3, 8, 1, 9, 2]
    hidden_cases = [((other, 1), [([a], [b]) for a, b in zip(other, other[1:])]),
                    ((other, 3), [(other[t:t + 3], other[t + 1:t + 4]) for t in range(3)]),
                    (([1, 2], 2), [])]
    return _check("windows", _on_copies(fn), cases, "window t holds the T tokens from position t on; its target is the "
                  "same span one position later, so the last window ends one token before the text does.", lambda g, w: [(_ints(x), _ints(y)) for x, y in g] == w,
                  hidden_cases=hidden_cases, hidden=hidden)


def check_split(fn, hidden: bool = False) -> Result:
    """fn(text, val_fraction) -> (train, val) with the cut at a line boundary before the fraction."""
    from mini_llm.data import split_text

    text = "aaaa\nbbbb\ncccc\ndddd\neeee\n"
    cases = [((text, 0.2), ("aaaa\nbbbb\ncccc\ndddd\n", "eeee\n")),
             ((text, 0.5), ("aaaa\nbbbb\n", "cccc\ndddd\neeee\n"))]
    hidden_cases = [((t, f), split_text(t, f)) for t, f in
                    (("one\ntwo\nthree\nfour\nfive\nsix\n", 0.1), ("a\nbb\nccc\ndddd\n", 0.3), ("first line\nsecond\nthird line here\n", 0.25))]
    return _check("split", _on_copies(fn), cases, "look for the last newline before the point (1 - fraction) of the "
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
    return _check("count windows", _on_copies(fn), cases, "a window needs T + 1 tokens (inputs and the shifted "
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
    return _check("eval windows", _on_copies(fn), cases, "N = how many whole windows fit when each one needs its "
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
    return _check("windows at", _on_copies(fn), cases, "row b of x is data[s:s+T] for s = starts[b]; y is the same "
                  "window one token later. An index tensor of shape (B, T + 1) gathers them all at once.",
                  _pair_equal, hidden_cases=hidden_cases, hidden=hidden)


# --- 03 attention -----------------------------------------------------------------------------


def check_causal_mask(fn, hidden: bool = False) -> Result:
    """fn(T) -> (T, T) bool tensor, True where query t may attend to key s <= t."""
    cases = [((1,), torch.ones(1, 1, dtype=torch.bool)), ((4,), torch.ones(4, 4, dtype=torch.bool).tril())]
    hidden_cases = [((T,), torch.ones(T, T, dtype=torch.bool).tril()) for T in (2, 7, 32)]
    return _check("causal mask", fn, cases, "keep the lower triangle (diagonal included) of a square of ones; "
                  "the result must be a bool tensor.",
                  lambda g, w: isinstance(g, torch.Tensor) and g.dtype == torch.bool and torch.equal(g, w),
                  hidden_cases=hidden_cases, hidden=hidden)


def _qkv(shape, seed, tk=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, generator=g)
    kshape = shape if tk is None else (*shape[:-2], tk, shape[-1])
    return q, torch.randn(*kshape, generator=g), torch.randn(*kshape, generator=g)


def _out_and_weights(got, want) -> bool:
    return len(got) == 2 and _close(got[0], want[0], 1e-5) and _close(got[1], want[1], 1e-5)


def check_attention(fn, hidden: bool = False) -> Result:
    """fn(q, k, v, mask) -> (out, weights) of scaled dot-product attention."""
    from mini_llm.attention import attention, causal_mask

    def case(shape, seed, masked):
        q, k, v = _qkv(shape, seed)
        mask = causal_mask(shape[-2]) if masked else None
        return ((q, k, v, mask), attention(q, k, v, mask))

    cases = [case((2, 5, 8), 0, False), case((2, 5, 8), 0, True)]
    hidden_cases = [case((1, 1, 4), 1, True), case((2, 3, 6, 16), 2, True), case((3, 7, 2), 3, False)]
    return _check("attention", _on_copies(fn), cases, "scores = queries times keys transposed, divided by the square "
                  "root of the head size; masked positions get -inf before the softmax over the keys; the "
                  "weights then average the values.", _out_and_weights, hidden_cases=hidden_cases, hidden=hidden)


def check_local_attention(fn, hidden: bool = False) -> Result:
    """fn(q, k, v, window) -> (out, weights): causal attention where query t sees only the last
    `window` positions, t - window + 1 .. t."""
    from mini_llm.attention import attention

    def case(shape, window, seed):
        q, k, v = _qkv(shape, seed)
        T = shape[-2]
        mask = torch.ones(T, T, dtype=torch.bool).tril() & torch.ones(T, T, dtype=torch.bool).triu(1 - window)
        return ((q, k, v, window), attention(q, k, v, mask))

    cases = [case((1, 6, 4), 2, 0), case((2, 5, 8), 3, 1), case((2, 4, 8), 4, 2)]
    hidden_cases = [case((1, 5, 4), 1, 3), case((2, 2, 7, 16), 3, 4), case((1, 6, 4), 10, 5)]
    return _check("local attention", _on_copies(fn), cases, "it is the causal mask minus the keys that are too old: "
                  "key s is visible to query t when t - window < s <= t. With window 1 each token sees only itself.",
                  _out_and_weights, hidden_cases=hidden_cases, hidden=hidden)


def check_decode_attention(fn, hidden: bool = False) -> Result:
    """fn(q, k, v) -> (out, weights) where q holds the LAST Tq of Tk positions (a KV-cache step):
    query i sits at position Tk - Tq + i and sees every key up to there."""
    from mini_llm.attention import attention

    def case(shape, tk, seed):
        q, k, v = _qkv(shape, seed, tk)
        tq = shape[-2]
        mask = torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
        return ((q, k, v), attention(q, k, v, mask))

    cases = [case((1, 1, 4), 5, 0), case((2, 3, 8), 6, 1), case((2, 4, 8), 4, 2)]
    hidden_cases = [case((1, 1, 4), 1, 3), case((2, 2, 2, 16), 9, 4), case((1, 5, 4), 7, 5)]
    return _check("decode attention", _on_copies(fn), cases, "the mask is the causal one aligned to the bottom right: "
                  "the last query sees every key, the one before it all but the last key, and so on "
                  "(is_causal=True aligns it top left, which is the bug).",
                  _out_and_weights, hidden_cases=hidden_cases, hidden=hidden)


def check_head_weights(fn, hidden: bool = False) -> Result:
    """fn(c_attn_weight, n_head) -> per head (Wq, Wk, Wv), each (hs, C): the rows of the fused
    (3C, C) weight that head h uses."""

    def case(C, nh, seed):
        w = torch.randn(3 * C, C, generator=torch.Generator().manual_seed(seed))
        hs = C // nh
        want = [tuple(w[part * C + h * hs: part * C + (h + 1) * hs] for part in range(3)) for h in range(nh)]
        return ((w, nh), want)

    def same(got, want):
        got = list(got)
        return len(got) == len(want) and all(
            len(g) == 3 and all(_close(a, b, 0) for a, b in zip(g, w)) for g, w in zip(got, want))

    cases = [case(4, 2, 0), case(8, 4, 1), case(6, 1, 2)]
    hidden_cases = [case(12, 3, 3), case(32, 4, 4), case(2, 2, 5)]
    return _check("head weights", _on_copies(fn), cases, "c_attn's output rows are [all queries | all keys | all "
                  "values], C rows each; inside each block, head h owns rows h*hs to (h+1)*hs.",
                  same, hidden_cases=hidden_cases, hidden=hidden)


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


# The exercises of notebook 05 (their checks build their own tiny models and schedules).


class _Verdict:
    """What a check saw, as one line (its repr goes into the feedback); `ok` when right."""

    def __init__(self, ok: bool, text: str):
        self.ok, self.text = ok, text

    def __repr__(self) -> str:
        return self.text


class _Label:
    """An argument shown by a short description in the feedback instead of its (long) repr."""

    def __init__(self, value, text: str):
        self.value, self.text = value, text

    def __repr__(self) -> str:
        return self.text


def _lr_forms():
    """The standard warmup + cosine schedules, as fn(step, total, max_lr, warmup, min_lr): the
    package's (cosine over the whole run) and nanoGPT's (cosine after warmup; its warmup by
    (step + 1) / (warmup + 1), or step / warmup in its first version)."""

    def cosine(progress, start, end):
        progress = min(max(progress, 0.0), 1.0)
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))

    def package(step, total, max_lr, warmup, min_lr):
        if step < warmup:
            return max_lr * (step + 1) / warmup
        return cosine(step / total, max_lr, min_lr)

    def nanogpt(step, total, max_lr, warmup, min_lr, first=False):
        if step < warmup:
            return max_lr * step / warmup if first else max_lr * (step + 1) / (warmup + 1)
        return cosine((step - warmup) / max(total - warmup, 1), max_lr, min_lr)

    return [package, nanogpt, lambda *a: nanogpt(*a, first=True)], cosine


def _one_of(values) -> "_Label":
    values = list(dict.fromkeys(values))
    text = f"{values[0]:.6g}" + (f" (or, in nanoGPT's form of the schedule, {' or '.join(f'{v:.6g}' for v in values[1:])})"
                                 if len(values) > 1 else "")
    return _Label(values, text)


def check_extended_lr(fn, hidden: bool = False) -> Result:
    """fn(step, total_steps, new_total_steps, resume_step, max_lr, warmup_steps, min_lr) -> the LR
    at `step` of a run planned for total_steps, stopped at resume_step and resumed with the
    horizon new_total_steps (what `schedule.LRPlan.extended` does)."""
    forms, cosine = _lr_forms()

    def extended(base, step, total, new_total, resume, max_lr, warmup, min_lr):
        if step < resume or new_total == total:
            return base(step, total, max_lr, warmup, min_lr)  # the past, or the same plan
        if resume < warmup:
            return base(step, new_total, max_lr, warmup, min_lr)  # as if planned so from the start
        start = base(resume, total, max_lr, warmup, min_lr)
        return cosine((step - resume) / max(new_total - resume, 1), start, min_lr)

    def case(*args):
        return (args, _one_of(extended(form, *args) for form in forms))

    run = (100, 200)  # a run planned for 100 steps, extended to 200
    cases = [case(5, *run, 50, 1e-3, 10, 1e-4), case(50, *run, 50, 1e-3, 10, 1e-4),
             case(120, *run, 50, 1e-3, 10, 1e-4), case(199, *run, 50, 1e-3, 10, 1e-4),
             case(70, 100, 100, 50, 1e-3, 10, 1e-4), case(150, *run, 100, 1e-3, 10, 1e-4),
             case(7, *run, 4, 1e-3, 10, 1e-4), case(60, *run, 4, 1e-3, 10, 1e-4)]
    hidden_cases = [case(s, 1000, 1500, 640, 6e-4, 100, 6e-5) for s in (639, 640, 641, 1000, 1499)]
    hidden_cases += [case(s, 1000, 500, 300, 3e-3, 50, 3e-4) for s in (300, 420, 499)]  # a shorter new horizon
    hidden_cases += [case(s, 60, 90, 60, 2e-3, 10, 2e-4) for s in (59, 60, 89)]  # a finished run extended
    hidden_cases += [case(12, 60, 90, 9, 2e-3, 10, 2e-4), case(700, 1000, 1000, 640, 6e-4, 100, 6e-5)]

    def same(got, want):
        if isinstance(got, bool):
            return False
        return any(math.isclose(float(got), w, rel_tol=1e-9, abs_tol=1e-15) for w in want.value)

    return _check("extended lr", fn, cases, "before resume_step the run followed its old plan. From resume_step on, "
                  "a new cosine starts at the LR the old plan had reached there and ends at min_lr at "
                  "new_total_steps. Two special cases: the same horizon changes nothing, and a run stopped during "
                  "warmup gets the plan it would have had with the new horizon from the start.",
                  same, hidden_cases=hidden_cases, hidden=hidden)


def _tiny_gpt(seed: int, **config):
    from mini_llm.model import GPTConfig, MiniGPT

    config = dict(dict(vocab_size=40, block_size=16, n_embd=16, n_head=2, n_layer=1), **config)
    with torch.random.fork_rng(devices=[]):  # the learner's global RNG is left as it was
        torch.manual_seed(seed)
        return MiniGPT(GPTConfig(**config))


def _what(value) -> str:
    """A returned value in a few words (a module by its class, not its many-line repr)."""
    return f"a {type(value).__name__}" if isinstance(value, torch.nn.Module) else _short(value, 60)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def check_accumulate(fn, hidden: bool = False) -> Result:
    """fn(model, batches) -> the mean loss over every target token of the micro-batches, having
    left in each p.grad the gradient of that mean (one backward per micro-batch; the micro-
    batches (x, y) may differ in shape, (B_i, T_i))."""

    def case(seed, shapes, **config):
        model = _tiny_gpt(seed, **config)
        g = torch.Generator().manual_seed(seed)
        V = model.config.vocab_size
        batches = [(torch.randint(V, s, generator=g), torch.randint(V, s, generator=g)) for s in shapes]
        ref = copy.deepcopy(model)
        n = sum(y.numel() for _, y in batches)
        loss = sum(ref(x, y)[1] * y.numel() for x, y in batches) / n  # the mean over all n target tokens
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in ref.named_parameters()}
        weights = {name: p.detach().clone() for name, p in model.named_parameters()}
        label = f"{len(shapes)} micro-batch{'es' if len(shapes) > 1 else ''} (B, T) = {', '.join(map(str, shapes))}"
        want = _Verdict(True, f"loss {loss.item():.5f} (the mean over all {n} target tokens) and p.grad its gradient")
        return ((_Label((model, batches, loss.item(), grads, weights), label),), want)

    def run(spec):
        model, batches, loss, grads, weights = spec.value
        model = copy.deepcopy(model)  # fresh: .grad is None everywhere, as after zero_grad(set_to_none=True)
        got = fn(model, copy.deepcopy(batches))
        try:
            got_loss = float(torch.as_tensor(got).detach())
        except Exception:
            return _Verdict(False, f"{_what(got)}: not a loss (return the mean loss as a number or a 0-d tensor)")
        params = dict(model.named_parameters())
        changed = [name for name, p in params.items() if not torch.equal(p.detach(), weights[name])]
        if changed:
            return _Verdict(False, f"the weights changed ({changed[0]}): accumulate gradients only, no optimizer step")
        missing = [name for name, p in params.items() if p.grad is None]
        if missing:
            return _Verdict(False, f"loss {got_loss:.5f}, but {missing[0]}.grad is None: call backward on each micro-batch")
        off = {name: _max_diff(p.grad, grads[name]) for name, p in params.items()}
        worst = max(off, key=off.get)
        if not all(_close(params[name].grad, grads[name], 1e-5) for name in params):
            return _Verdict(False, f"loss {got_loss:.5f}; {worst}.grad off by up to {off[worst]:.2g} (ratio to the right "
                                   f"one: {params[worst].grad.norm().item() / max(grads[worst].norm().item(), 1e-30):.3g})")
        if not math.isclose(got_loss, loss, rel_tol=1e-5, abs_tol=1e-6):
            return _Verdict(False, f"the right gradients, but loss {got_loss:.5f}")
        return _Verdict(True, "right")

    cases = [case(0, [(4, 8), (4, 8)]), case(1, [(2, 16), (3, 5), (1, 9)]), case(2, [(5, 4), (1, 16)])]
    hidden_cases = [case(3, [(3, 7)]), case(4, [(1, 1), (6, 12), (2, 3), (2, 3)]),
                    case(5, [(2, 10), (2, 10), (2, 10)], n_layer=2, bias=False),
                    case(6, [(8, 2), (1, 16)], vocab_size=25, n_embd=24, n_head=3)]
    return _check("accumulate", run, cases, "each micro-batch's loss is a mean over its own B_i * T_i target "
                  "tokens; the mean over all of them weighs each micro-batch by its share of the tokens. "
                  "Backward adds into p.grad, so scale each loss before its backward. Dividing by the number of "
                  "micro-batches is right only when they all hold the same number of tokens.",
                  lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden)


def check_decay_groups(fn, hidden: bool = False) -> Result:
    """fn(model, weight_decay) -> AdamW parameter groups where only the weights of nn.Linear layers
    decay; biases, LayerNorm and embeddings (a head tied to an embedding counts as the embedding)
    do not; every parameter in exactly one group."""
    import torch.nn as nn

    def decays(model) -> dict:
        """parameter id -> (should it decay, what it is): the module-type rule, where an
        embedding wins over a Linear layer tied to it."""
        rule = {}
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, nn.Embedding):
                    rule[id(p)] = (False, "an embedding (a tied LM head shares this tensor)")
                elif isinstance(module, nn.Linear) and name == "weight":
                    rule.setdefault(id(p), (True, "a Linear weight"))
                else:
                    rule[id(p)] = (False, f"the {name} of a {type(module).__name__}")
        return rule

    def case(model, text, weight_decay):
        rule = decays(model)
        n_decay = sum(d for d, _ in rule.values())
        want = _Verdict(True, f"{n_decay} Linear weights at weight_decay {weight_decay}, the other {len(rule) - n_decay} "
                              f"tensors (embeddings, biases, LayerNorm) at 0.0, each once")
        return ((_Label(model, text), weight_decay), want)

    def run(spec, weight_decay):
        model = copy.deepcopy(spec.value)
        names = {id(p): name for name, p in model.named_parameters()}
        rule = decays(model)  # decided before the call: fn may change the model
        got = fn(model, weight_decay)
        try:
            groups = [dict(g) for g in got]
            seen = {}
            for g in groups:
                wd = float(g["weight_decay"])
                params = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])
                for p in params:
                    if id(p) not in names:
                        return _Verdict(False, "a tensor that is not one of the model's parameters")
                    if id(p) in seen:
                        return _Verdict(False, f"{names[id(p)]} in two groups (AdamW refuses that; a tied weight "
                                               "is one tensor)")
                    seen[id(p)] = wd
        except (TypeError, KeyError, ValueError) as e:
            return _Verdict(False, f"{_what(got)}: not a list of groups like {{'params': [...], "
                                   f"'weight_decay': ...}} ({type(e).__name__}: {e})")
        for k, name in names.items():
            if k not in seen:
                return _Verdict(False, f"{name} is in no group")
            decay, kind = rule[k]
            want = weight_decay if decay else 0.0
            if not math.isclose(seen[k], want, abs_tol=1e-12):
                return _Verdict(False, f"{name} at weight_decay {seen[k]:g}: it is {kind}, so {want:g}")
        return _Verdict(True, "right")

    def toy(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3, bias=False))

    cases = [case(_tiny_gpt(0), "MiniGPT(1 layer, 16 wide)", 0.1), case(_tiny_gpt(1, n_layer=2), "MiniGPT(2 layers)", 0.05)]
    hidden_cases = [case(_tiny_gpt(2, bias=False), "MiniGPT(bias=False)", 0.1),
                    case(_tiny_gpt(3, n_layer=3, n_embd=24, n_head=3), "MiniGPT(3 layers, 24 wide)", 0.2),
                    case(toy(4), "Sequential(Embedding, Linear, LayerNorm, GELU, Linear without bias)", 0.01)]
    return _check("decay groups", run, cases, "walk over the modules (model.modules() or named_modules()) and sort "
                  "each module's own parameters by the kind of module; the LM head's weight is the token "
                  "embedding's tensor, so decide by the tensor, not by the name, and put each tensor in one group "
                  "only. Give every group its own 'weight_decay'.",
                  lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden)


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


def _whole_number(got, want: int) -> bool:
    """An integer answer in any standard form (int, numpy or 0-d tensor), not a bool or a fraction."""
    if isinstance(got, (bool, str)):
        return False
    return int(got) == want and float(got) == float(want)


def check_past_bytes(fn, hidden: bool = False) -> Result:
    """fn(config, batch, positions, dtype) -> bytes of the decode graph's `past` input: the keys and
    values of `positions` cached positions for a GPTConfig, batch rows and a torch dtype."""
    from mini_llm.model import GPTConfig

    def case(batch, positions, dtype, **sizes):
        cfg = GPTConfig(**sizes)
        shape = (cfg.n_layer, 2, batch, cfg.n_head, positions, cfg.n_embd // cfg.n_head)  # what forward_kv returns
        return ((cfg, batch, positions, dtype), math.prod(shape) * torch.empty((), dtype=dtype).element_size())

    cases = [case(1, 128, torch.float32), case(3, 10, torch.float16, vocab_size=2000, block_size=64, n_embd=128, n_layer=2)]
    hidden_cases = [case(1, 1, torch.float32, vocab_size=50, block_size=8, n_embd=8, n_head=2, n_layer=1),
                    case(8, 1024, torch.bfloat16, vocab_size=50257, block_size=1024, n_embd=768, n_head=12, n_layer=12),
                    case(2, 63, torch.float64, block_size=64, n_embd=96, n_head=1, n_layer=3, bias=False),
                    case(5, 7, torch.float32, n_embd=64, n_head=8, n_layer=6)]
    return _check("past bytes", _on_copies(fn), cases, "look at the shape of `present` printed above: one number per "
                  "layer, key-or-value, batch row, head, position and head channel (the heads' channels add up to "
                  "n_embd); times the bytes one value of that dtype takes (float16 and bfloat16: 2). Vocabulary, "
                  "block size and bias do not enter.", _whole_number, hidden_cases=hidden_cases, hidden=hidden)


def _small_model(seed: int, **sizes):
    """A small MiniGPT in eval mode, initialised from `seed`; torch's global RNG is left as it was."""
    from mini_llm.model import GPTConfig, MiniGPT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MiniGPT(GPTConfig(**sizes)).eval()


class _Score(torch.nn.Module):
    """The scoring graph of exercise 2: idx (B, T), targets (B, T) -> the mean cross-entropy."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, idx, targets):
        return self.m(idx, targets)[1]


def _first_line(error: Exception, limit: int = 110) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith(("Not all values", "Guard failed", "Expected", "Dynamic"))]
    text = f"{type(error).__name__}: {(useful or lines or [''])[0]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_scoring_shapes(fn, hidden: bool = False) -> Result:
    """fn(block_size) -> the `dynamic_shapes` of a scoring graph (forward(idx, targets), both (B, T))
    under which torch.export accepts every batch size and every T from 1 to block_size."""
    from mini_llm.export import quiet_exporter

    def shapes(block_size):
        return [(1, 1), (3, block_size), (2, block_size // 2 + 1)]

    def outcome(block_size):
        spec = fn(block_size)  # NotImplementedError goes up: "not written yet"
        model = _small_model(block_size, vocab_size=50, block_size=block_size, n_embd=8, n_head=2, n_layer=1)
        g = torch.Generator().manual_seed(block_size)
        example = (torch.randint(0, 50, (2, min(5, block_size)), generator=g),
                   torch.randint(0, 50, (2, min(5, block_size)), generator=g))
        try:
            with quiet_exporter():
                program = torch.export.export(_Score(model), example, dynamic_shapes=copy.deepcopy(spec))
        except Exception as e:
            return f"torch.export refused the spec: {_first_line(e)}"
        graph = program.module()
        for B, T in shapes(block_size):
            idx, targets = torch.randint(0, 50, (B, T), generator=g), torch.randint(0, 50, (B, T), generator=g)
            try:
                with torch.no_grad():
                    loss = graph(idx, targets)
            except Exception as e:
                return f"the exported graph refused idx, targets of shape {(B, T)}: {_first_line(e)}"
            if not _close(loss, model(idx, targets)[1], 1e-5):
                return f"the exported graph gave another loss at shape {(B, T)}"
        return "accepts " + ", ".join(str(s) for s in shapes(block_size))

    cases = [((16,), "accepts " + ", ".join(str(s) for s in shapes(16)))]
    hidden_cases = [((8,), "accepts " + ", ".join(str(s) for s in shapes(8)))]  # each case is an export: one is enough
    return _check("scoring shapes", outcome, cases, "give both inputs the same two Dims: a batch Dim and a sequence "
                  "Dim whose max is block_size (the model refuses longer inputs, and the exporter checks that "
                  "every allowed shape passes). The keys are forward's argument names.",
                  lambda g, w: g == w, hidden_cases=hidden_cases, hidden=hidden)


class _Session:
    """A stand-in for an onnxruntime InferenceSession of the prefill or decode graph: the same
    `run(output_names, feeds)` call, the same input names and dtypes, computed by a small MiniGPT.
    It refuses what the real graph gets wrong (a context longer than block_size, a full cache)
    with an error that says so, and counts its runs."""

    def __init__(self, model, role: str):
        self.model, self.role, self.runs = model, role, 0
        self.names = ["idx"] if role == "prefill" else ["token", "past"]

    def __repr__(self) -> str:
        return f"<{self.role} session>"

    def run(self, output_names, feeds):
        import numpy as np

        if set(feeds) != set(self.names):
            raise ValueError(f"the {self.role} graph takes inputs {self.names}, got {sorted(feeds)}")
        for name, value in feeds.items():
            want = np.float32 if name == "past" else np.int64
            if not isinstance(value, np.ndarray) or value.dtype != want:
                raise TypeError(f"input {name!r} must be a numpy array of {np.dtype(want).name}, "
                                f"got {type(value).__name__} {getattr(value, 'dtype', '')}")
        bs = self.model.config.block_size
        if self.role == "prefill":
            idx, past = feeds["idx"], None
            if idx.ndim != 2 or not 1 <= idx.shape[1] <= bs:
                raise RuntimeError(f"the prefill graph takes idx (B, T) with 1 <= T <= block_size={bs}, got shape "
                                   f"{idx.shape}: crop the context first")
        else:
            idx, past = feeds["token"], feeds["past"]
            if idx.ndim != 2 or idx.shape[1] != 1:
                raise RuntimeError(f"the decode graph takes token of shape (B, 1), got {idx.shape}")
            if past.ndim != 6 or not 1 <= past.shape[4] < bs:
                raise RuntimeError(f"past of shape {past.shape}: the decode graph needs 1 to block_size - 1 = {bs - 1} "
                                   "cached positions (the real graph returns empty logits on a full cache)")
        self.runs += 1
        with torch.no_grad():
            logits, present = self.model.forward_kv(torch.from_numpy(idx.copy()),
                                                    None if past is None else torch.from_numpy(past.copy()))
        outputs = {"logits": logits.numpy(), "present": present.numpy()}
        return [outputs[name] for name in (output_names or ["logits", "present"])]


class _Generated:
    """Greedy tokens and how many prefill and decode runs produced them (shown in feedback)."""

    def __init__(self, tokens, prefills: int, decodes: int):
        self.tokens, self.prefills, self.decodes = tokens, prefills, decodes

    def __repr__(self) -> str:
        return f"{_short(self.tokens, 90)} from {self.prefills} prefill and {self.decodes} decode runs"


def check_greedy_onnx(fn, hidden: bool = False) -> Result:
    """fn(prefill, decode, prompt, n, block_size) -> the n greedy tokens after prompt, computed with
    the prefill and decode sessions the way `mini_llm.generate` does: the prompt's last block_size
    tokens prefilled once, then one decode run per new token; when the cache is full, the last
    block_size // 2 tokens of prompt + generated prefilled again."""
    from mini_llm.export import OnnxRunner
    from mini_llm.generate import Sampling, generate_ids

    def case(seed, block_size, prompt_len, n, vocab=40):
        model = _small_model(seed, vocab_size=vocab, block_size=block_size, n_embd=16, n_head=2, n_layer=1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for weight in (p for p in model.parameters() if p.dim() == 2):
                weight.normal_(0.0, 1.0, generator=g)  # large weights: confident predictions, greedy text that varies
        prompt = torch.randint(0, vocab, (prompt_len,), generator=g).tolist()
        # the package's runner over stand-in sessions
        runner = OnnxRunner.from_sessions(_Session(model, "prefill"), _Session(model, "decode"), block_size, vocab)
        tokens = list(generate_ids(runner, prompt, n, Sampling(temperature=0.0, top_k=None)))
        want = _Generated(tokens, runner.prefill.runs, runner.decode.runs)
        return ((_Session(model, "prefill"), _Session(model, "decode"), prompt, n, block_size), want)

    def run(prefill, decode, prompt, n, block_size):
        prefill.runs = decode.runs = 0
        got = fn(prefill, decode, list(prompt), n, block_size)
        return _Generated(_ints(got), prefill.runs, decode.runs)

    def same(got, want):
        # the last decode run of generate_ids computes logits nobody samples from: not needed
        return got.tokens == want.tokens and got.prefills <= want.prefills and got.decodes >= want.decodes - 1

    cases = [case(0, 8, 3, 4), case(1, 8, 3, 14), case(2, 16, 5, 9)]
    hidden_cases = [case(3, 8, 12, 5), case(4, 8, 2, 1), case(5, 16, 16, 30), case(6, 12, 1, 25, vocab=60),
                    case(7, 8, 7, 6)]
    return _check("greedy onnx", run, cases, "prefill once; then for each new token take the argmax of the LAST "
                  "position's logits and run the decode graph on that token (int64, shape (1, 1)) with the "
                  "`present` it returned last. Before a decode run, check the room: block_size minus the positions "
                  "in the cache; with none left, prefill the last block_size // 2 tokens of the whole context.",
                  same, hidden_cases=hidden_cases, hidden=hidden)


# --- 04 minigpt -------------------------------------------------------------------------------
# The exercises of notebook 04: a post-LN block from its weights, a decode step on a preallocated
# KV cache, and the previous-token score of attention heads. Their checks build small models with
# weights of unit scale (GPT-2's 0.02 init would hide mistakes below the tolerance).


def _unit_scale(module, g: torch.Generator):
    """Weights of a scale at which every piece matters: Linear weights ~ N(0, 1/fan_in), embeddings
    ~ N(0, 1), LayerNorm weights around 1, biases around 0. Changes `module` in place."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # a LayerNorm weight
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.size(1) if "wte" not in name and "wpe" not in name else 1
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return module


def check_post_ln_block(fn, hidden: bool = False) -> Result:
    """fn(x, weights, n_head) -> a post-LayerNorm block's output (B, T, C):
    x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)), with `weights` named like the package Block's."""
    from mini_llm.model import Block, GPTConfig

    def case(B, T, C, nh, seed):
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            block = Block(GPTConfig(vocab_size=2, block_size=T, n_embd=C, n_head=nh, n_layer=1)).eval()
        _unit_scale(block, g)
        x = torch.randn(B, T, C, generator=g)
        with torch.no_grad():
            h = block.ln_1(x + block.attn(x)[0])  # attention on x itself, LayerNorm after the add
            want = block.ln_2(h + block.mlp(h))
        weights = {name: t.clone() for name, t in block.state_dict().items()}
        return ((x, _Label(weights, f"<weights of a Block, n_embd={C}>"), nh), want)

    def run(x, weights, n_head):
        return fn(x.clone(), {name: t.clone() for name, t in weights.value.items()}, n_head)

    cases = [case(2, 5, 16, 4, 0), case(1, 7, 8, 2, 1), case(3, 4, 12, 3, 2)]
    hidden_cases = [case(1, 1, 8, 1, 3), case(2, 9, 24, 6, 4), case(2, 6, 16, 2, 5), case(1, 12, 32, 8, 6)]
    return _check("post-LN block", run, cases, "post-LN: attention reads x itself (no LayerNorm before it), then "
                  "x = LayerNorm_1(x + attention); the MLP reads that x, then x = LayerNorm_2(x + MLP). Attention: "
                  "c_attn, split into q, k, v, heads of C // n_head channels, causal softmax(q k^T / sqrt(head "
                  "size)) v, heads side by side again, c_proj. The MLP's GELU is the tanh approximation; "
                  "LayerNorm's eps is 1e-5.",
                  lambda got, want: _close(got, want, 1e-4), hidden_cases=hidden_cases, hidden=hidden)


class _Forbidden:
    """Stands in for a forward method the decode-step exercise asks the learner to write."""

    def __init__(self, what: str):
        self.what = what

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} was called: this exercise is to write the step from the model's parts "
                           "(wte, wpe, each block's ln_1, attn.c_attn, attn.c_proj, ln_2, mlp, then ln_f, lm_head)")


def _parts_only(model):
    """A copy of a MiniGPT whose whole-model, block and attention forwards refuse to run."""
    model = copy.deepcopy(model)
    for name in ("forward", "forward_kv", "_hidden", "attention_maps"):
        setattr(model, name, _Forbidden(f"model.{name}"))
    for i, block in enumerate(model.blocks):
        block.forward = _Forbidden(f"model.blocks[{i}] (its forward)")
        block.attn.forward = _Forbidden(f"model.blocks[{i}].attn (its forward)")
    return model


def check_decode_step(fn, hidden: bool = False) -> Result:
    """fn(model, token, cache, pos) -> logits (B, 1, V) (or (B, V)) of the token at position pos,
    after writing its keys and values into the preallocated cache (L, 2, B, nh, block_size, hs)
    in place; positions 0..pos-1 of the cache hold the earlier tokens', the rest is garbage."""

    def case(seed, B, prompt, steps, **sizes):
        model = _small_model(seed, **sizes)
        g = torch.Generator().manual_seed(seed)
        _unit_scale(model, g)
        idx = torch.randint(0, model.config.vocab_size, (B, prompt + steps), generator=g)
        with torch.no_grad():
            full, present = model.forward_kv(idx)  # (B, P, V), (L, 2, B, nh, P, hs)
        c = model.config
        text = f"<MiniGPT L={c.n_layer} nh={c.n_head} C={c.n_embd}; B={B}, {prompt} cached, {steps} steps>"
        want = _Verdict(True, f"{steps} steps with the logits of the full forward, each token's keys and values "
                              "written at its position, nothing else in the cache changed")
        return ((_Label(dict(model=model, idx=idx, full=full, present=present, prompt=prompt, seed=seed), text),), want)

    def run(spec):
        s = spec.value
        model, idx, full, present, prompt = s["model"], s["idx"], s["full"], s["present"], s["prompt"]
        L, _, B, nh, n, hs = present.shape
        V, size = model.config.vocab_size, model.config.block_size
        g = torch.Generator().manual_seed(s["seed"] + 100)
        cache = 3 * torch.randn(L, 2, B, nh, size, hs, generator=g)  # garbage where nothing is cached yet
        cache[..., :prompt, :] = present[..., :prompt, :]
        parts = _parts_only(model)
        for pos in range(prompt, n):
            before = cache.clone()
            with torch.no_grad():
                got = fn(parts, idx[:, pos:pos + 1].clone(), cache, pos)
            if not isinstance(got, torch.Tensor) or got.shape not in ((B, 1, V), (B, V)):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                return _Verdict(False, f"at pos {pos}: {shape} came back, not logits of shape {(B, 1, V)}")
            diff = (got.reshape(B, V).double() - full[:, pos].double()).abs().max().item()
            if not diff <= 1e-4 * (1 + full[:, pos].abs().max().item()):
                return _Verdict(False, f"at pos {pos}: logits that differ from the full forward's by up to {diff:.3g}")
            if not torch.allclose(cache[..., pos, :], present[..., pos, :], atol=1e-4, rtol=1e-4):
                return _Verdict(False, f"at pos {pos}: afterwards the cache does not hold this token's keys and "
                                       f"values at position {pos} (write them into `cache` itself)")
            others = torch.ones(size, dtype=torch.bool)
            others[pos] = False
            if not torch.equal(cache[..., others, :], before[..., others, :]):
                return _Verdict(False, f"at pos {pos}: the cache changed at positions other than {pos}")
        return _Verdict(True, f"{n - prompt} steps with the logits of the full forward, each token's keys and values "
                              "written at its position, nothing else in the cache changed")

    cases = [case(0, 1, 3, 4, vocab_size=30, block_size=8, n_embd=16, n_head=2, n_layer=1),
             case(1, 2, 5, 6, vocab_size=40, block_size=16, n_embd=16, n_head=4, n_layer=2)]
    hidden_cases = [case(2, 1, 1, 7, vocab_size=20, block_size=8, n_embd=8, n_head=1, n_layer=1),
                    case(3, 3, 4, 3, vocab_size=50, block_size=7, n_embd=24, n_head=3, n_layer=3),
                    case(4, 2, 10, 6, vocab_size=30, block_size=32, n_embd=32, n_head=8, n_layer=2)]
    return _check("decode step", run, cases, "the token sits at position pos: its embedding plus wpe at pos. In "
                  "each block, its q, k, v come from c_attn(ln_1(x)); write k and v into cache[layer, 0] and "
                  "cache[layer, 1] at position pos (index assignment changes the tensor in place); the query then "
                  "attends over positions 0..pos only (the slots after pos hold garbage: slice them off; one query "
                  "needs no mask); c_proj and the residual, then the MLP and its residual; ln_f and lm_head last.",
                  lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden)


def check_previous_token_scores(fn, hidden: bool = False) -> Result:
    """fn(maps) -> (L, nh): for each head of attention maps (L, nh, T, T), the mean over rows
    i = 1..T-1 of the weight row i puts on key i - 1."""

    def case(L, nh, T, seed, previous=None):
        g = torch.Generator().manual_seed(seed)
        scores = 2 * torch.randn(L, nh, T, T, generator=g)
        if previous is not None:  # make one head a previous-token head, as training does
            scores[previous][1:, :-1] += 6 * torch.eye(T - 1)
        maps = torch.softmax(scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")), dim=-1)
        want = maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # entries (i, i - 1) for i = 1..T-1
        return ((maps,), want)

    cases = [case(2, 4, 6, 0, previous=(1, 2)), case(1, 2, 5, 1), case(3, 1, 8, 2, previous=(0, 0))]
    hidden_cases = [case(1, 1, 2, 3), case(2, 3, 17, 4, previous=(1, 0)), case(4, 4, 10, 5, previous=(3, 3)),
                    case(1, 2, 3, 6)]
    return _check("previous-token scores", _on_copies(fn), cases, "row i is query i; the previous token is key "
                  "i - 1, the diagonal just below the main one. Row 0 has no previous token: average over rows "
                  "1..T-1, separately for every layer and head, giving an (L, nh) result.",
                  lambda got, want: _close(got, want, 1e-5), hidden_cases=hidden_cases, hidden=hidden)


# --- 08 modern gpt ----------------------------------------------------------------------------


def _randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _rounded(value) -> "_Label":
    """A returned or expected tensor with its values rounded in the feedback (4 significant digits)."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return _Label(value, _short(value))
    values = [f"{v:.4g}" for v in value.detach().double().flatten()[:6].tolist()]
    more = ", ..." if value.numel() > 6 else ""
    return _Label(value, f"tensor{tuple(value.shape)} [{', '.join(values)}{more}]")


def _tensor_check(fn, tol: float):
    """(run, same) for _check: fn's inputs are _Labels (shown by their text), passed as fresh copies;
    its result must be a tensor (or nested list) of the expected shape and values."""

    def run(*args):
        got = fn(*(copy.deepcopy(a.value if isinstance(a, _Label) else a) for a in args))
        return _rounded(got)

    def same(got, want):
        got = got.value
        if isinstance(got, (bool, str, dict)) or got is None:
            return False
        return _close(torch.as_tensor(got).detach(), want.value, tol)

    return run, same


def check_rope_interleaved(fn, hidden: bool = False) -> Result:
    """fn(x, positions, base) -> x (..., T, hs) with each channel pair (2i, 2i + 1) of position p
    rotated by the angle p * base^(-2i/hs): RoPE in the interleaved layout of the RoFormer paper
    and Meta's Llama code (the package pairs i with i + hs/2 instead)."""
    from mini_llm.attention import rotary

    def interleaved(x, positions, base):
        hs = x.size(-1)
        order = torch.cat([torch.arange(0, hs, 2), torch.arange(1, hs, 2)])  # pair (2i, 2i+1) -> (i, i + hs/2)
        out = torch.empty_like(x)
        out[..., order] = rotary(x[..., order], positions, base)
        return out

    def case(shape, positions, base, seed):
        x, positions = _randn(*shape, seed=seed), torch.tensor(list(positions))
        return ((_Label(x, f"x {tuple(shape)}"), _Label(positions, f"positions {positions.tolist()}"), base),
                _rounded(interleaved(x, positions, base)))

    cases = [case((3, 4), [0, 1, 2], 10000.0, 0), case((2, 2, 5, 8), range(5), 10000.0, 1),
             case((4, 6), [7, 8, 9, 10], 100.0, 2)]
    hidden_cases = [case((1, 6, 16), range(10, 16), 10000.0, 3), case((2, 3, 4, 2), [5, 1, 0, 9], 500.0, 4),
                    case((2, 4, 32), [3, 3, 3, 3], 10000.0, 5), case((1, 1, 7, 12), range(20, 27), 50.0, 6)]
    run, same = _tensor_check(fn, 1e-5)
    return _check("rope interleaved", run, cases, "channels 2i and 2i+1 are one 2-D point (x, y); turn it by the "
                  "angle a = p * base ** (-2 * i / hs), counter-clockwise: (x cos a - y sin a, x sin a + y cos a), "
                  "and put the two results back in channels 2i and 2i+1. Pair 0 turns fastest (one radian per "
                  "position); position 0 is not turned at all.", same, hidden_cases=hidden_cases, hidden=hidden)


def check_swiglu(fn, hidden: bool = False) -> Result:
    """fn(x, w_gate, w_up, w_down) -> SwiGLU's output (..., C): silu(x W_gate^T) * (x W_up^T), then
    times W_down^T; the weights in nn.Linear's (out, in) layout, no biases."""
    import torch.nn.functional as F

    def case(batch, C, H, seed):
        x = _randn(*batch, C, seed=seed)
        w_gate, w_up = _randn(H, C, seed=seed + 100, scale=C ** -0.5), _randn(H, C, seed=seed + 200, scale=C ** -0.5)
        w_down = _randn(C, H, seed=seed + 300, scale=H ** -0.5)
        want = F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)
        return ((_Label(x, f"x {tuple(x.shape)}"), _Label(w_gate, f"w_gate {(H, C)}"), _Label(w_up, f"w_up {(H, C)}"),
                 _Label(w_down, f"w_down {(C, H)}")), _rounded(want))

    cases = [case((1,), 4, 6, 0), case((2, 3), 8, 12, 1), case((5,), 6, 16, 2)]
    hidden_cases = [case((), 5, 7, 3), case((2, 2, 5), 16, 40, 4), case((3,), 12, 8, 5)]
    run, same = _tensor_check(fn, 1e-5)
    return _check("swiglu", run, cases, "three matrix products: gate = x @ w_gate.T and up = x @ w_up.T (both "
                  "(..., H)); only the gate goes through SiLU, silu(g) = g * sigmoid(g); multiply the two element "
                  "by element, then @ w_down.T brings the result back to (..., C).",
                  same, hidden_cases=hidden_cases, hidden=hidden)


def check_orthogonalize(fn, hidden: bool = False) -> Result:
    """fn(G, steps) -> G divided by its Frobenius norm, then `steps` cubic Newton-Schulz iterations
    X <- 1.5 X - 0.5 X X^T X (which converge to U V^T for G = U S V^T)."""

    def case(m, n, steps, seed, scale=1.0):
        G = _randn(m, n, seed=seed, scale=scale)
        X = G / G.norm()
        for _ in range(steps):
            X = 1.5 * X - 0.5 * X @ X.T @ X
        return ((_Label(G, f"G {(m, n)} of norm {G.norm().item():.3g}"), steps), _rounded(X))

    cases = [case(3, 3, 1, 0), case(4, 6, 3, 1), case(6, 4, 10, 2, scale=50.0)]
    hidden_cases = [case(8, 16, 0, 3, scale=3.0), case(16, 8, 25, 4), case(1, 5, 5, 5), case(5, 5, 12, 6, scale=1e-3),
                    case(32, 24, 40, 7, scale=10.0)]
    run, same = _tensor_check(fn, 1e-4)
    return _check("orthogonalize", run, cases, "first X = G / ||G|| with the Frobenius norm (G.norm()), so no "
                  "singular value is above 1; then repeat X = 1.5 * X - 0.5 * X @ X.T @ X `steps` times (that "
                  "product keeps X's shape, tall or wide). With steps = 0 you return the normalised G.",
                  same, hidden_cases=hidden_cases, hidden=hidden)


# --- 06 sampling and chat: the exercises of notebook 06 ------------------------------------------


def _masked_like(got, want) -> bool:
    """Filtered logits: the same shape, -inf exactly where expected, the kept logits unchanged."""
    if isinstance(got, (bool, str)):
        return False
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape or not torch.equal(torch.isneginf(got), torch.isneginf(want)):
        return False
    kept = ~torch.isneginf(want)
    return torch.allclose(got[kept], want[kept], atol=1e-6, rtol=1e-6)


def check_top_p(fn, hidden: bool = False) -> Result:
    """fn(logits, p) -> logits (..., V) in vocabulary order with every token outside the nucleus
    set to -inf: the nucleus is the smallest set of most likely tokens whose probability reaches
    p (always at least the most likely one); the kept logits are unchanged."""
    from mini_llm.generate import next_token_distribution

    def case(logits, p):
        logits = torch.tensor(logits)
        kept = next_token_distribution(logits, temperature=1.0, top_k=None, top_p=p) > 0  # the package's rule
        return ((logits, p), logits.masked_fill(~kept, float("-inf")))

    cases = [case([1.0, 3.0, 2.0, 0.5, 4.0], 0.9),  # probabilities .63 .23 .09 ...: three tokens reach 0.9
             case([1.0, 3.0, 2.0, 0.5, 4.0], 0.5),  # the most likely alone is enough
             case([[0.0, 2.5, -1.0, 1.0], [3.0, 2.75, 2.5, -4.0]], 0.8)]  # a batch (B, V): rows keep 2 and 3
    hidden_cases = [case([[[5.0, 1.0, 0.0], [0.125, 0.375, 0.25]], [[-2.0, -1.0, -3.0], [1.5, -0.5, 4.0]]], 0.6),
                    case([0.25, -1.25, 2.25, 0.875, 1.75, -0.5, 0.0, 1.125], 0.95),
                    case([0.25, -1.25, 2.25, 0.875, 1.75, -0.5, 0.0, 1.125], 0.01),
                    case([[7.0, 6.5, 6.0, 5.5, 5.0, 4.5]], 0.7)]
    return _check("top-p", _on_copies(fn), cases, "softmax over the last dimension, sort it (largest first) and "
                  "take the cumulative sum; a token stays while the probability of the tokens before it is still "
                  "below p, so the first always stays. Then bring that mask back to vocabulary order (scatter it "
                  "with the sort's indices) and set the other logits to -inf.", _masked_like,
                  hidden_cases=hidden_cases, hidden=hidden)


def check_repetition_penalty(fn, hidden: bool = False) -> Result:
    """fn(logits (V,), context_ids, penalty) -> new logits: every token id that occurs in the
    context (once or more) made less likely: a positive logit divided by penalty, a negative one
    multiplied by it (CTRL's rule, as in Hugging Face's RepetitionPenaltyLogitsProcessor)."""

    def case(logits, context, penalty):
        logits = torch.tensor(logits)
        want = logits.clone()
        for i in set(context):
            want[i] = want[i] / penalty if want[i] > 0 else want[i] * penalty
        return ((logits, context, penalty), want)

    cases = [case([2.0, -1.0, 0.5, 3.0, -2.0], [0, 1, 3], 2.0),
             case([2.0, -1.0, 0.5, 3.0, -2.0], [3, 3, 1, 3], 2.0),  # a repeated token is penalised once
             case([1.0, 4.0, -0.5], [], 1.5)]
    hidden_cases = [case([0.75, -0.25, 1.875, -3.0, 0.0, 2.5, -1.125, 0.0625], [7, 2, 2, 3, 6, 7, 7, 4], 1.3),
                    case([0.75, -0.25, 1.875, -3.0, 0.0, 2.5, -1.125, 0.0625], [1], 1.1),
                    case([-5.0, -4.0, -3.0, 6.0], [0, 1, 2, 3, 0, 1, 2, 3], 3.0)]
    return _check("repetition penalty", _on_copies(fn), cases, "for each distinct id in the context (a set): "
                  "if its logit is positive divide it by the penalty, otherwise multiply it, so both ways it moves "
                  "down. Tokens not in the context keep their logits.",
                  lambda g, w: not isinstance(g, (bool, str)) and _close(g, w, 1e-6), hidden_cases=hidden_cases,
                  hidden=hidden)


class _Replay:
    """A stand-in runner and tokenizer for `generate.stream`: the i-th decode of the reply gives
    texts[i - 1], whatever the token ids (so the package's own stream says what to print)."""

    block_size, room = 1 << 30, 1 << 30

    def __init__(self, texts):
        self.texts = list(texts)

    def start(self, ids):
        return torch.zeros(2)

    def step(self, token):
        return torch.zeros(2)

    def token_to_id(self, token):
        return None

    def decode(self, ids, skip_special_tokens=True):
        return self.texts[len(ids) - 1]


def check_stop_stream(fn, hidden: bool = False) -> Result:
    """fn(texts, stops) -> the pieces a streamer prints, where texts[i] is the whole reply decoded
    after its first i + 1 tokens: at each token, the new text that is safe (no unfinished
    character, nothing that may be the start of a stop string); at a stop string, what comes
    before it, then the end; after the last text, whatever is left."""
    from mini_llm.generate import Sampling, stream

    def case(texts, stops):
        replay = _Replay(texts)
        want = list(stream(replay, replay, [0], len(texts), Sampling(temperature=0.0, top_k=None), stops))
        return ((texts, stops), want)

    cases = [case(["Ay", "Ay, my", "Ay, my lord.", "Ay, my lord.\n", "Ay, my lord.\n\n", "Ay, my lord.\n\nHORATIO"],
                  ["\n\n"]),
             case(["\ufffd", "Ω", "Ω\ufffd", "Ωж", "Ωж!"], []),
             case(["Go", "Go\n", "Go\nnow", "Go\nnow\n"], ["\n\n"])]  # a held-back "\n" that was no stop
    hidden_cases = [case(["Well", "Well\n", "Well\nHOR", "Well\nHORATIO", "Well\nHORATIO:", "Well\nHORATIO: x\n\n"],
                         ["\n\n", "\nHORATIO:"]),
                    case(["Yes", "Yes sir.\n\nHAMLET:"], ["\n\n"]),
                    case(["To\ufffd", "To世\ufffd", "To世界\n", "To世界\n\n"], ["\n\n"]),
                    case(["\n", "\n\n", "\n\nGone"], ["\n\n"]),
                    case(["a", "ab", "abc", "abcab", "abcabd", "abcabdab"], ["abx", "bd"])]
    return _check("stop stream", fn, cases, "keep how much you have printed. At each text: if a stop string occurs, "
                  "print up to its first occurrence and stop. Otherwise hold back the longest end of the text that "
                  "is the beginning of a stop string, then any unfinished '\\ufffd' before that, and print the rest "
                  "that is new. When the texts run out, print what is left.",
                  lambda g, w: not isinstance(g, str) and list(g) == w, hidden_cases=hidden_cases, hidden=hidden)
