"""Checks of notebook 03 (attention). Steps: the causal mask, scaled dot-product attention, one
head, heads in a list, batched multi-head with one qkv matmul, the list's weights as the batched
module's. Exercises: local attention, a decoding step's attention, one head's rows of c_attn.

The modules are proved the way the notebook proves them: the package's weights are loaded into
yours by name, then the outputs and attention weights must agree within 1e-5 (allclose, atol and
rtol): correct code may sum in another order (a list of heads does several small matmuls where the
batched module does one)."""

import torch
import torch.nn as nn

from mini_llm.attention import MultiHeadAttention, SingleHeadAttention, attention, causal_mask
from mini_llm.course.checks.harness import Label, Result, close, on_copies, run_cases, step

TOL = 1e-5  # allclose's atol and rtol for outputs and weights


# --- the package's pieces, in the notebook's signatures ---------------------------------------


class Head(SingleHeadAttention):
    """The package's head in the notebook's signature, Head(n_embd, head_size, bias=False): always causal."""

    def __init__(self, n_embd: int, head_size: int, bias: bool = False):
        super().__init__(n_embd, head_size, causal=True, bias=bias)


class HeadList(nn.Module):
    """Multi-head attention as a list of the package's heads (bias on, as in `MultiHeadAttention`),
    concatenated and mixed by `c_proj`: forward(x) -> out (B, T, C), weights (B, nh, T, T)."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.heads = nn.ModuleList(Head(n_embd, n_embd // n_head, bias=True) for _ in range(n_head))
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        outs, weights = zip(*(h(x) for h in self.heads))
        return self.c_proj(torch.cat(outs, dim=-1)), torch.stack(weights, dim=1)


def heads_to_fused(listed) -> dict:
    """The batched module's state_dict from a list of heads: every head's query rows, then every
    head's key rows, then the value rows make c_attn; c_proj is shared."""
    parts = ("query", "key", "value")
    return {"c_attn.weight": torch.cat([getattr(h, p).weight for p in parts for h in listed.heads]),
            "c_attn.bias": torch.cat([getattr(h, p).bias for p in parts for h in listed.heads]),
            "c_proj.weight": listed.c_proj.weight, "c_proj.bias": listed.c_proj.bias}


def _list_state(mha: MultiHeadAttention) -> dict:
    """A MultiHeadAttention's weights as a list of heads' state_dict (heads.h.query.weight, ...)."""
    C, nh = mha.n_embd, mha.n_head
    hs, state = C // nh, {"c_proj.weight": mha.c_proj.weight, "c_proj.bias": mha.c_proj.bias}
    for i, part in enumerate(("query", "key", "value")):
        for h in range(nh):
            rows = slice(i * C + h * hs, i * C + (h + 1) * hs)
            state[f"heads.{h}.{part}.weight"] = mha.c_attn.weight[rows]
            state[f"heads.{h}.{part}.bias"] = mha.c_attn.bias[rows]
    return state


def _load(mine: nn.Module, state: dict) -> nn.Module:
    """Load `state` into `mine` by name; buffers of yours (a stored mask, say) may stay, but every
    parameter must be one of mini_llm's and every one of mini_llm's must be there."""
    missing, unexpected = mine.load_state_dict(state, strict=False)
    params = {name for name, _ in mine.named_parameters()}
    missing = [name for name in missing if name in params]
    if missing or unexpected:
        raise ValueError(f"your parameters are named {sorted(params)}; mini_llm's are {sorted(state)}")
    return mine


def _seeded(make, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().eval()


def _x(shape, seed: int):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- steps --------------------------------------------------------------------------------------


def check_causal_mask(fn, hidden: bool = False) -> Result:
    """Step: fn(T) -> (T, T) bool tensor, True where query t may attend to key s <= t."""
    cases = [((1,), torch.ones(1, 1, dtype=torch.bool)), ((4,), torch.ones(4, 4, dtype=torch.bool).tril())]
    hidden_cases = [((T,), torch.ones(T, T, dtype=torch.bool).tril()) for T in (2, 7, 32)]
    return step("causal", fn, causal_mask, run_cases(
        "causal", fn, cases, "keep the lower triangle (diagonal included) of a square of ones; the result must be a "
        "bool tensor.", lambda g, w: isinstance(g, torch.Tensor) and g.dtype == torch.bool and torch.equal(g, w),
        hidden_cases=hidden_cases, hidden=hidden))


def _qkv(shape, seed, tk=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, generator=g)
    kshape = shape if tk is None else (*shape[:-2], tk, shape[-1])
    return q, torch.randn(*kshape, generator=g), torch.randn(*kshape, generator=g)


def _out_and_weights(got, want) -> bool:
    return len(got) == 2 and close(got[0], want[0], TOL) and close(got[1], want[1], TOL)


def check_attention(fn, hidden: bool = False) -> Result:
    """Step: fn(q, k, v, mask) -> (out, weights) of scaled dot-product attention."""

    def case(shape, seed, masked):
        q, k, v = _qkv(shape, seed)
        mask = causal_mask(shape[-2]) if masked else None
        return ((q, k, v, mask), attention(q, k, v, mask))

    cases = [case((2, 5, 8), 0, False), case((2, 5, 8), 0, True)]
    hidden_cases = [case((1, 1, 4), 1, True), case((2, 3, 6, 16), 2, True), case((3, 7, 2), 3, False)]
    return step("attend", fn, attention, run_cases(
        "attend", on_copies(fn), cases, "scores = queries times keys transposed, divided by the square root of the "
        "head size; masked positions get -inf before the softmax over the keys; the weights then average the "
        "values.", _out_and_weights, hidden_cases=hidden_cases, hidden=hidden))


def check_head(cls, hidden: bool = False) -> Result:
    """Step: cls(n_embd, head_size, bias) with three Linear maps named query, key, value;
    forward(x (B, T, C)) -> (out (B, T, hs), weights (B, T, T)), causal. SingleHeadAttention's
    weights are loaded into it; then both must agree within TOL."""

    def case(C, hs, bias, shape, seed):
        theirs = _seeded(lambda: SingleHeadAttention(C, hs, bias=bias), seed)
        x = _x((*shape, C), seed + 100)
        with torch.no_grad():
            want = theirs(x)
        return (Label((C, hs, bias, theirs.state_dict(), x), f"n_embd={C}, head_size={hs}, bias={bias}, x {tuple(x.shape)}"),), want

    def call(args):
        C, hs, bias, state, x = args.value
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # your init draws: leave the notebook's RNG alone
            return tuple(_load(cls(C, hs, bias), state).eval()(x.clone()))

    cases = [case(8, 4, False, (2, 6), 0), case(16, 8, True, (1, 5), 1)]
    hidden_cases = [case(8, 8, False, (3, 1), 2), case(32, 4, True, (2, 12), 3), case(4, 2, False, (1, 3), 4)]
    return step("Head", cls, Head, run_cases(
        "Head", call, cases, "three nn.Linear(n_embd, head_size, bias=bias) named query, key and value; forward "
        "projects x with each and calls attend with the causal mask of x's length, returning (out, weights).",
        _out_and_weights, hidden_cases=hidden_cases, hidden=hidden))


def _mha_case(C, nh, shape, seed, to_state):
    """A seeded MultiHeadAttention, its (out, weights) on random x, and its weights as `to_state` gives them."""
    theirs = _seeded(lambda: MultiHeadAttention(C, nh), seed)
    x = _x((*shape, C), seed + 100)
    with torch.no_grad():
        want = theirs(x)
        state = {k: v.clone() for k, v in to_state(theirs).items()}
    return (Label((C, nh, state, x), f"n_embd={C}, n_head={nh}, x {tuple(x.shape)}"),), want


def _mha_checked(name, cls, package, to_state, hint, hidden):
    """Load MultiHeadAttention's weights (as `to_state` lays them out) into cls(C, n_head): the
    same outputs and weights within TOL, on public and hidden sizes."""

    def call(args):
        C, nh, state, x = args.value
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return tuple(_load(cls(C, nh), state).eval()(x.clone()))

    cases = [_mha_case(32, 4, (2, 10), 0, to_state), _mha_case(8, 2, (1, 5), 1, to_state)]
    hidden_cases = [_mha_case(16, 1, (2, 3), 2, to_state), _mha_case(48, 6, (1, 17), 3, to_state),
                    _mha_case(12, 3, (3, 1), 4, to_state)]
    return step(name, cls, package, run_cases(name, call, cases, hint, _out_and_weights,
                                              hidden_cases=hidden_cases, hidden=hidden))


def check_head_list(cls, hidden: bool = False) -> Result:
    """Step: cls(n_embd, n_head) with `heads`, an nn.ModuleList of n_head heads (Head(n_embd,
    n_embd // n_head, bias=True)), and `c_proj`, nn.Linear(n_embd, n_embd); forward(x) -> out
    (B, T, C), weights (B, nh, T, T). MultiHeadAttention's weights, cut into heads, are loaded."""
    return _mha_checked("MultiHeadList", cls, HeadList, _list_state,
                        "run every head on x, concatenate their outputs on the last dimension (head 0 first) and "
                        "apply c_proj; stack the heads' weights on dimension 1.", hidden)


def check_batched_multi_head(cls, hidden: bool = False) -> Result:
    """Step: cls(n_embd, n_head) with c_attn = nn.Linear(C, 3C) and c_proj = nn.Linear(C, C);
    forward(x) -> out (B, T, C), weights (B, nh, T, T). MultiHeadAttention's weights are loaded."""
    return _mha_checked("BatchedMultiHead", cls, MultiHeadAttention, lambda m: m.state_dict(),
                        "split c_attn(x) into q, k, v of C channels each, view each as (B, T, nh, hs) and "
                        "transpose to (B, nh, T, hs); attend with the causal mask; transpose back and view as "
                        "(B, T, C) before c_proj.", hidden)


def check_fused_from_heads(fn, hidden: bool = False) -> Result:
    """Step: fn(listed) -> the batched module's state_dict (c_attn.weight (3C, C), c_attn.bias (3C,),
    c_proj.weight, c_proj.bias) from a list of heads; the rows are copied, so exactly equal."""

    def case(C, nh, seed):
        def make():
            listed = HeadList(C, nh)
            with torch.no_grad():
                for p in listed.parameters():  # biases too, so a misplaced bias shows
                    p.normal_()
            return listed

        listed = _seeded(make, seed)
        want = {k: v.detach().clone() for k, v in heads_to_fused(listed).items()}
        return (Label(listed, f"MultiHeadList(n_embd={C}, n_head={nh})"),), want

    def same(got, want):
        got = dict(got)
        return set(got) == set(want) and all(close(torch.as_tensor(got[k]).detach(), want[k], 0) for k in want)

    cases = [case(8, 2, 0), case(12, 3, 1)]
    hidden_cases = [case(4, 1, 2), case(32, 4, 3), case(24, 6, 4)]
    return step("fused_from_heads", fn, heads_to_fused, run_cases(
        "fused_from_heads", lambda listed: {k: torch.as_tensor(v).detach() for k, v in dict(fn(listed.value)).items()},
        cases, "c_attn's rows are [every head's query rows | every head's key rows | every head's value rows], "
        "head 0 first inside each block; torch.cat them on dimension 0 (the biases alike).",
        same, hidden_cases=hidden_cases, hidden=hidden))


# --- exercises ----------------------------------------------------------------------------------


def check_local_attention(fn, hidden: bool = False) -> Result:
    """fn(q, k, v, window) -> (out, weights): causal attention where query t sees only the last
    `window` positions, t - window + 1 .. t."""
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

