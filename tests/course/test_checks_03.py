"""The checks of notebook 03_attention: right answers (in every standard form) pass, public and hidden
cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so; each step hands
on yours or the package's piece. Then the notebook's step and exercise cells."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm import attention as package
from mini_llm.attention import MultiHeadAttention, attention
from mini_llm.course import checks as ex
from mini_llm.course.checks import nb03_attention as nb03
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    contract_tests,
    notebook_tests,
    step_tests,
)

NOTEBOOK = "03_attention"

# --- solutions, written independently of the package where it matters ---------------------------


def causal_mask(T):
    return torch.tril(torch.ones(T, T)).bool()


def my_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1)
    return w @ v, w


def local_attention(q, k, v, window):
    T = q.size(-2)
    t = torch.arange(T)
    mask = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)
    return my_attention(q, k, v, mask)


def local_attention_loop(q, k, v, window):  # another correct form: a list of tensors, row by row
    rows_out, rows_w = [], []
    T = q.size(-2)
    for t in range(T):
        lo = max(0, t - window + 1)
        w = torch.softmax(q[..., t:t + 1, :] @ k[..., lo:t + 1, :].transpose(-2, -1) / math.sqrt(q.size(-1)), -1)
        rows_out.append(w @ v[..., lo:t + 1, :])
        rows_w.append(torch.nn.functional.pad(w, (lo, T - t - 1)))
    return [torch.cat(rows_out, -2), torch.cat(rows_w, -2)]


def decode_attention(q, k, v):
    tq, tk = q.size(-2), k.size(-2)
    mask = torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
    return my_attention(q, k, v, mask)


def decode_attention_sdpa(q, k, v):  # another correct form: SDPA with an explicit mask
    tq, tk = q.size(-2), k.size(-2)
    mask = torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out, my_attention(q, k, v, mask)[1]


def head_weights(w, n_head):
    C = w.size(1)
    hs = C // n_head
    q, k, v = w.split(C, dim=0)
    return [(q[h * hs:(h + 1) * hs], k[h * hs:(h + 1) * hs], v[h * hs:(h + 1) * hs]) for h in range(n_head)]


def head_weights_view(w, n_head):  # another correct form: views and a zip, as lists
    C = w.size(1)
    parts = w.view(3, n_head, C // n_head, C)
    return [list(parts[:, h]) for h in range(n_head)]


class Head(nn.Module):  # the notebook's
    def __init__(self, n_embd, head_size, bias=False):
        super().__init__()
        self.query = nn.Linear(n_embd, head_size, bias=bias)
        self.key = nn.Linear(n_embd, head_size, bias=bias)
        self.value = nn.Linear(n_embd, head_size, bias=bias)

    def forward(self, x):
        return my_attention(self.query(x), self.key(x), self.value(x), causal_mask(x.size(1)))


class HeadWithBuffer(nn.Module):  # another correct form: a stored mask (a buffer), einsum, the scale on q
    def __init__(self, n_embd, head_size, bias=False):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=bias)
        self.query = nn.Linear(n_embd, head_size, bias=bias)
        self.value = nn.Linear(n_embd, head_size, bias=bias)
        self.register_buffer("tril", torch.tril(torch.ones(64, 64)))

    def forward(self, x):
        T = x.size(1)
        q = self.query(x) * self.query.out_features ** -0.5
        w = torch.einsum("btd,bsd->bts", q, self.key(x)).masked_fill(self.tril[:T, :T] == 0, float("-inf")).softmax(-1)
        return torch.einsum("bts,bsd->btd", w, self.value(x)), w


class HeadNoMask(Head):  # wrong: sees the future
    def forward(self, x):
        return my_attention(self.query(x), self.key(x), self.value(x))


class HeadKeysAsQueries(Head):  # wrong: q and k swapped (the weights transposed)
    def forward(self, x):
        return my_attention(self.key(x), self.query(x), self.value(x), causal_mask(x.size(1)))


class HeadNamedDifferently(nn.Module):  # wrong: the package's weights cannot load
    def __init__(self, n_embd, head_size, bias=False):
        super().__init__()
        self.qkv = nn.Linear(n_embd, 3 * head_size, bias=bias)

    def forward(self, x):
        return my_attention(*self.qkv(x).chunk(3, -1), causal_mask(x.size(1)))


class HeadEcho(Head):
    def forward(self, x):
        return x, x


class MultiHeadList(nn.Module):  # the notebook's
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.heads = nn.ModuleList(Head(n_embd, n_embd // n_head, bias=True) for _ in range(n_head))
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        outs, weights = zip(*(h(x) for h in self.heads))
        return self.c_proj(torch.cat(outs, -1)), torch.stack(weights, 1)


class MultiHeadListSummed(MultiHeadList):  # another correct form: c_proj applied head by head and summed
    def forward(self, x):
        hs = self.c_proj.in_features // len(self.heads)
        out, weights = self.c_proj.bias, []
        for h, head in enumerate(self.heads):
            y, w = head(x)
            out = out + y @ self.c_proj.weight[:, h * hs:(h + 1) * hs].T
            weights.append(w)
        return out, torch.stack(weights, 1)


class MultiHeadListReversed(MultiHeadList):  # wrong: the heads concatenated last first
    def forward(self, x):
        outs, weights = zip(*(h(x) for h in self.heads))
        return self.c_proj(torch.cat(outs[::-1], -1)), torch.stack(weights, 1)


class MultiHeadListNoProj(MultiHeadList):  # wrong: c_proj forgotten
    def forward(self, x):
        outs, weights = zip(*(h(x) for h in self.heads))
        return torch.cat(outs, -1), torch.stack(weights, 1)


class MultiHeadListEcho(MultiHeadList):
    def forward(self, x):
        return x, x


class BatchedMultiHead(nn.Module):  # the notebook's
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def heads(self, x):
        B, T, C = x.shape
        return [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, 2)]

    def forward(self, x):
        B, T, C = x.shape
        y, w = my_attention(*self.heads(x), causal_mask(T))
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C)), w


class BatchedSDPA(BatchedMultiHead):  # another correct form: the fused kernel for the output, einops-style permutes
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).reshape(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        w = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~causal_mask(T), float("-inf")).softmax(-1)
        return self.c_proj(y.permute(0, 2, 1, 3).reshape(B, T, C)), w


class BatchedNoTranspose(BatchedMultiHead):  # wrong: views (B, T, C) as (B, nh, T, hs) without the transpose
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.reshape(B, self.n_head, T, C // self.n_head) for t in self.c_attn(x).split(C, 2))
        y, w = my_attention(q, k, v, causal_mask(T))
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C)), w


class BatchedHeadsMixedBack(BatchedMultiHead):  # wrong: (B, nh, T, hs) viewed as (B, T, C) without the transpose back
    def forward(self, x):
        B, T, C = x.shape
        y, w = my_attention(*self.heads(x), causal_mask(T))
        return self.c_proj(y.reshape(B, T, C)), w


class BatchedEcho(BatchedMultiHead):
    def forward(self, x):
        return x, x


def fused_from_heads(listed):
    parts = ("query", "key", "value")
    return {"c_attn.weight": torch.cat([getattr(h, p).weight for p in parts for h in listed.heads]),
            "c_attn.bias": torch.cat([getattr(h, p).bias for p in parts for h in listed.heads]),
            "c_proj.weight": listed.c_proj.weight, "c_proj.bias": listed.c_proj.bias}


def fused_from_heads_stacked(listed):  # another correct form: stacked (3, nh, hs, ...) then flattened, detached copies
    w = torch.stack([torch.stack([h.query.weight, h.key.weight, h.value.weight]) for h in listed.heads], 1)
    b = torch.stack([torch.stack([h.query.bias, h.key.bias, h.value.bias]) for h in listed.heads], 1)
    state = dict(listed.c_proj.state_dict())
    return {"c_attn.weight": w.flatten(0, 2).detach().clone(), "c_attn.bias": b.flatten().detach().clone(),
            **{f"c_proj.{k}": v for k, v in state.items()}}


def fused_head_major(listed):  # wrong: each head's q, k, v together (head 0's q, k, v, then head 1's ...)
    state = fused_from_heads(listed)
    parts = ("query", "key", "value")
    state["c_attn.weight"] = torch.cat([getattr(h, p).weight for h in listed.heads for p in parts])
    return state


def fused_no_bias(listed):  # wrong: c_attn.bias left out
    state = fused_from_heads(listed)
    del state["c_attn.bias"]
    return state


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_causal_mask: ([causal_mask, lambda T: torch.ones(T, T, dtype=torch.bool).triu().T],
                           [lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
                            lambda T: torch.ones(T, T).tril(),
                            lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1)],
                           lambda T: T),
    ex.check_attention: ([my_attention, lambda *args: attention(*args)],
                         [lambda q, k, v, mask=None: my_attention(q, k, v, None),
                          lambda q, k, v, mask=None: my_attention(q * math.sqrt(q.size(-1)), k, v, mask)],
                         lambda q, k, v, mask=None: (q, k)),
    ex.check_local_attention: ([local_attention, local_attention_loop],
                               [lambda q, k, v, w: local_attention(q, k, v, w + 1),
                                lambda q, k, v, w: decode_attention(q, k, v)],
                               lambda q, k, v, w: (q, k)),
    ex.check_decode_attention: ([decode_attention, decode_attention_sdpa],
                                [lambda q, k, v: my_attention(q, k, v, torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()),
                                 lambda q, k, v: my_attention(q, k, v, None)],
                                lambda q, k, v: (q, k)),
    ex.check_head_weights: ([head_weights, head_weights_view],
                            [lambda w, nh: [tuple(p.chunk(nh, 1)[h].T for p in w.chunk(3)) for h in range(nh)],
                             lambda w, nh: [tuple(w[h * 3 * (w.size(1) // nh) + i * (w.size(1) // nh):][:w.size(1) // nh]
                                                  for i in range(3)) for h in range(nh)]],
                            lambda w, nh: [(w, w, w)] * nh),
    ex.check_head: ([Head, HeadWithBuffer], [HeadNoMask, HeadKeysAsQueries, HeadNamedDifferently], HeadEcho),
    ex.check_head_list: ([MultiHeadList, MultiHeadListSummed], [MultiHeadListReversed, MultiHeadListNoProj],
                         MultiHeadListEcho),
    ex.check_batched_multi_head: ([BatchedMultiHead, BatchedSDPA], [BatchedNoTranspose, BatchedHeadsMixedBack],
                                  BatchedEcho),
    ex.check_fused_from_heads: ([fused_from_heads, fused_from_heads_stacked], [fused_head_major, fused_no_bias],
                                lambda listed: listed.state_dict()),
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)


def test_mutating_the_inputs_cannot_fool_a_check():
    """The check calls the function on copies: changing the arguments in place leaves the cases alone."""

    def zero_the_keys(q, k, v, mask=None):
        k.zero_()  # uniform weights, and the expected values were computed from the real k
        return my_attention(q, k, v, mask)

    assert not ex.check_attention(zero_the_keys)


# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_causal_mask: package.causal_mask, ex.check_attention: attention, ex.check_head: nb03.Head,
         ex.check_head_list: nb03.HeadList, ex.check_batched_multi_head: MultiHeadAttention,
         ex.check_fused_from_heads: nb03.heads_to_fused}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_feedback_names_the_first_difference():
    message = ex.check_head(HeadNoMask).message
    assert message.startswith("Head(n_embd=8, head_size=4, bias=False, x (2, 6, 8)): expected (tensor(2, 6, 4) ")
    assert "; first difference at [0][0, 0, 0]: expected " in message
    message = ex.check_head(HeadNamedDifferently).message
    assert "raised ValueError: your parameters are named ['qkv.weight']; mini_llm's are ['key.weight'" in message
    message = ex.check_batched_multi_head(BatchedHeadsMixedBack).message
    assert message.startswith("BatchedMultiHead(n_embd=32, n_head=4, x (2, 10, 32)): expected ")
    assert "first difference at [0][0, 0, " in message
    message = ex.check_fused_from_heads(fused_no_bias).message
    assert "first difference at ['c_attn.bias']: expected tensor(24,) [" in message and "got no entry" in message
    message = ex.check_fused_from_heads(fused_head_major).message
    assert message.startswith("fused_from_heads(MultiHeadList(n_embd=8, n_head=2)): expected ")
    assert "first difference at ['c_attn.weight'][4, 0]: expected " in message


def test_checks_leave_the_global_rng_alone():
    """Building your module inside a proof draws its initial weights: the notebook's RNG is left as it was."""
    assert_checks_leave_the_global_rng_alone(CASES)


def test_the_list_needs_the_tolerance():
    """A right list of heads differs from the batched module in the last bits (other sums), so the
    proof compares with a tolerance, not bit for bit."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(48, 6).eval()
    listed = MultiHeadListSummed(48, 6)
    listed.load_state_dict(nb03._list_state(mha))
    x = torch.randn(2, 17, 48)
    with torch.no_grad():
        (a, _), (b, _) = listed(x), mha(x)
    assert torch.allclose(a, b, atol=nb03.TOL, rtol=nb03.TOL) and not torch.equal(a, b)


# --- the notebook's exercise cells -----------------------------------------------------------------


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex, {"torch": torch, "nn": nn, "F": F, "math": math})


