"""The checks of notebook 03_attention: right answers (in every standard form) pass, public and hidden
cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so. Then the
notebook's exercise cells."""

import math

import torch

from mini_llm.attention import attention
from mini_llm.course import checks as ex
from tests.course.check_contract import (
    contract_tests,
    notebook_tests,
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


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_causal_mask: ([causal_mask, lambda T: torch.ones(T, T, dtype=torch.bool).triu().T],
                           [lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
                            lambda T: torch.ones(T, T).tril(),
                            lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1)],
                           lambda T: T),
    ex.check_attention: ([my_attention, attention],
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
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)


def test_mutating_the_inputs_cannot_fool_a_check():
    """The check calls the function on copies: changing the arguments in place leaves the cases alone."""

    def zero_the_keys(q, k, v, mask=None):
        k.zero_()  # uniform weights, and the expected values were computed from the real k
        return my_attention(q, k, v, mask)

    assert not ex.check_attention(zero_the_keys)


# --- the notebook's exercise cells -----------------------------------------------------------------


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex)


