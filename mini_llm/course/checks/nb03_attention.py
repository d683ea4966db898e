"""Checks of notebook 03 (attention): the causal mask, attention, local attention, a decoding step, one head's weights."""

import torch

from mini_llm.course.checks.harness import Result, close, on_copies, run_cases


def check_causal_mask(fn, hidden: bool = False) -> Result:
    """fn(T) -> (T, T) bool tensor, True where query t may attend to key s <= t."""
    cases = [((1,), torch.ones(1, 1, dtype=torch.bool)), ((4,), torch.ones(4, 4, dtype=torch.bool).tril())]
    hidden_cases = [((T,), torch.ones(T, T, dtype=torch.bool).tril()) for T in (2, 7, 32)]
    return run_cases("causal mask", fn, cases, "keep the lower triangle (diagonal included) of a square of ones; "
                  "the result must be a bool tensor.",
                  lambda g, w: isinstance(g, torch.Tensor) and g.dtype == torch.bool and torch.equal(g, w),
                  hidden_cases=hidden_cases, hidden=hidden)


def _qkv(shape, seed, tk=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, generator=g)
    kshape = shape if tk is None else (*shape[:-2], tk, shape[-1])
    return q, torch.randn(*kshape, generator=g), torch.randn(*kshape, generator=g)


def _out_and_weights(got, want) -> bool:
    return len(got) == 2 and close(got[0], want[0], 1e-5) and close(got[1], want[1], 1e-5)


def check_attention(fn, hidden: bool = False) -> Result:
    """fn(q, k, v, mask) -> (out, weights) of scaled dot-product attention."""
    from mini_llm.attention import attention, causal_mask

    def case(shape, seed, masked):
        q, k, v = _qkv(shape, seed)
        mask = causal_mask(shape[-2]) if masked else None
        return ((q, k, v, mask), attention(q, k, v, mask))

    cases = [case((2, 5, 8), 0, False), case((2, 5, 8), 0, True)]
    hidden_cases = [case((1, 1, 4), 1, True), case((2, 3, 6, 16), 2, True), case((3, 7, 2), 3, False)]
    return run_cases("attention", on_copies(fn), cases, "scores = queries times keys transposed, divided by the square "
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
    return run_cases("local attention", on_copies(fn), cases, "it is the causal mask minus the keys that are too old: "
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
    return run_cases("decode attention", on_copies(fn), cases, "the mask is the causal one aligned to the bottom right: "
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
            len(g) == 3 and all(close(a, b, 0) for a, b in zip(g, w)) for g, w in zip(got, want))

    cases = [case(4, 2, 0), case(8, 4, 1), case(6, 1, 2)]
    hidden_cases = [case(12, 3, 3), case(32, 4, 4), case(2, 2, 5)]
    return run_cases("head weights", on_copies(fn), cases, "c_attn's output rows are [all queries | all keys | all "
                  "values], C rows each; inside each block, head h owns rows h*hs to (h+1)*hs.",
                  same, hidden_cases=hidden_cases, hidden=hidden)

