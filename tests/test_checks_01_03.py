"""The exercise checks of notebooks 01-03: right answers (in every standard form) pass, public and
hidden cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so."""

import math

import numpy as np
import pytest
import torch

from mini_llm import checks as ex
from mini_llm.attention import attention
from mini_llm.bpe import merge as bpe_merge
from tests.check_contract import (assert_protocol_cells, assert_student_copies_say_not_written_yet, contract_tests,
                                  exercise_pairs)


# --- solutions, written independently of the package where it matters ---------------------------


def pair_counts(ids):
    counts = {}
    for p in zip(ids, ids[1:]):
        counts[p] = counts.get(p, 0) + 1
    return counts


def merge_in_place(ids, pair, new_id):  # mutates its input: still a right answer
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


def encode_by_rank(text, merges):
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, math.inf))
        if pair not in merges:
            break
        ids = bpe_merge(ids, pair, merges[pair])
    return ids


def encode_sorted_loop(text, merges):  # another correct form: every merge, in rank order
    ids = list(text.encode("utf-8"))
    for pair, new_id in sorted(merges.items(), key=lambda kv: kv[1]):
        ids = bpe_merge(ids, pair, new_id)
    return torch.tensor(ids, dtype=torch.long)


def encode_dict_order(text, merges):  # wrong: trusts the dict's order
    ids = list(text.encode("utf-8"))
    for pair, new_id in merges.items():
        ids = bpe_merge(ids, pair, new_id)
    return ids


def stream_decode(ids, vocab):
    pieces, buffer = [], b""
    for i in ids:
        buffer += vocab[i]
        for cut in range(len(buffer), max(-1, len(buffer) - 4), -1):
            try:
                text = buffer[:cut].decode("utf-8")
                break
            except UnicodeDecodeError:
                pass
        pieces.append(text)
        buffer = buffer[cut:]
    return pieces


def stream_decode_incremental(ids, vocab):  # another correct form, a generator with the stdlib decoder
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")()
    for i in ids:
        yield dec.decode(vocab[i])


def unmerge(ids, merges):
    parts = {new: pair for pair, new in merges.items()}

    def expand(t):
        return [t] if t < 256 else expand(parts[t][0]) + expand(parts[t][1])

    return [b for t in ids for b in expand(t)]


def unmerge_bytes(ids, merges):  # another correct form: a bytes object, built with a vocab table
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new in sorted(merges.items(), key=lambda kv: kv[1]):
        vocab[new] = vocab[a] + vocab[b]
    return b"".join(vocab[t] for t in ids)


def windows(ids, T):
    return [(ids[t:t + T], ids[t + 1:t + T + 1]) for t in range(len(ids) - T)]


def split(text, f):
    cut = text.rfind("\n", 0, int(len(text) * (1 - f))) + 1
    return text[:cut], text[cut:]


def count_windows(n, T, stride):
    return max(0, (n - T - 1) // stride + 1)


def count_windows_range(n, T, stride):
    return len(range(0, n - T, stride))


def eval_windows(ids, T):
    n = (len(ids) - 1) // T
    return ids[: n * T].view(n, T), ids[1: n * T + 1].view(n, T)


def eval_windows_lists(ids, T):
    ids = ids.tolist()
    xs = [ids[s:s + T] for s in range(0, len(ids) - T, T)]
    return xs, [ids[s + 1:s + T + 1] for s in range(0, len(ids) - T, T)]


def windows_at(data, starts, T):
    w = data[starts[:, None] + torch.arange(T + 1)]
    return w[:, :-1], w[:, 1:]


def windows_at_stack(data, starts, T):
    return (torch.stack([data[s:s + T] for s in starts]).numpy(),
            torch.stack([data[s + 1:s + T + 1] for s in starts]).numpy())


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
    ex.check_pair_counts: ([pair_counts, lambda ids: __import__("collections").Counter(zip(ids, ids[1:]))],
                           [lambda ids: {p: 1 for p in zip(ids, ids[1:])},
                            lambda ids: pair_counts(ids[:-1])],
                           lambda ids: ids),
    ex.check_merge: ([bpe_merge, merge_in_place, lambda *a: torch.tensor(bpe_merge(*a), dtype=torch.long)],
                     [lambda ids, pair, new: [new if t == pair[0] else t for t in ids],
                      lambda ids, pair, new: bpe_merge(ids, pair, new)[:-1] if ids else [1]],
                     lambda ids, pair, new: ids),
    ex.check_bpe_encode: ([encode_by_rank, encode_sorted_loop],
                          [encode_dict_order, lambda text, merges: list(text.encode("utf-8"))],
                          lambda text, merges: text),
    ex.check_stream_decode: ([stream_decode, stream_decode_incremental],
                             [lambda ids, vocab: [vocab[i].decode("utf-8", errors="replace") for i in ids],
                              lambda ids, vocab: [b"".join(vocab[i] for i in ids).decode("utf-8")]],
                             lambda ids, vocab: ids),
    ex.check_unmerge: ([unmerge, unmerge_bytes],
                       [lambda ids, merges: [b for t in ids for b in ({n: p for p, n in merges.items()}.get(t, (t,)))],
                        lambda ids, merges: [t for t in ids if t < 256]],
                       lambda ids, merges: ids),
    ex.check_windows: ([windows, lambda ids, T: [(torch.tensor(ids[t:t + T]), np.array(ids[t + 1:t + T + 1]))
                                                 for t in range(len(ids) - T)]],
                       [lambda ids, T: [(ids[t:t + T], ids[t:t + T]) for t in range(len(ids) - T)],
                        lambda ids, T: windows(ids, T)[:-1] if len(ids) > T + 1 else [([0], [0])]],
                       lambda ids, T: ids),
    ex.check_split: ([split, lambda text, f: list(split(text, f))],
                     [lambda text, f: (text[:int(len(text) * (1 - f))], text[int(len(text) * (1 - f)):]),
                      lambda text, f: split(text, 1 - f)],
                     lambda text, f: (text, text)),
    ex.check_count_windows: ([count_windows, count_windows_range, lambda n, T, s: np.int64(count_windows(n, T, s))],
                             [lambda n, T, s: (n - T) // s, lambda n, T, s: (n - T - 1) // s + 1,
                              lambda n, T, s: n // s, lambda n, T, s: float(count_windows(n, T, s)) + 0.5],
                             lambda n, T, s: n),
    ex.check_eval_windows: ([eval_windows, eval_windows_lists],
                            [lambda ids, T: eval_windows(ids[1:], T), lambda ids, T: (eval_windows(ids, T)[0],) * 2,
                             lambda ids, T: (ids[: (len(ids) // T) * T].view(-1, T), ids[1:((len(ids) - 1) // T) * T + 1].view(-1, T))],
                            lambda ids, T: (ids, ids)),
    ex.check_windows_at: ([windows_at, windows_at_stack],
                          [lambda d, s, T: windows_at(d, s + 1, T), lambda d, s, T: (windows_at(d, s, T)[0],) * 2,
                           lambda d, s, T: windows_at(d, s.sort().values, T)],
                          lambda d, s, T: (d, s)),
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


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public cases passes them and fails the hidden ones."""
    seen = {}

    def recorder(*args):
        seen[repr(args)] = count_windows(*args)
        return seen[repr(args)]

    assert ex.check_count_windows(recorder)
    public = dict(seen)
    cheat = lambda *args: public[repr(args)]  # noqa: E731
    assert ex.check_count_windows(cheat)
    result = ex.check_count_windows(cheat, hidden=True)
    assert not result and "raised KeyError" in result.message


def test_mutating_the_inputs_cannot_fool_a_check():
    """The check calls the function on copies: changing the arguments in place leaves the cases alone."""

    def shuffle_then_encode(text, merges):
        ids = encode_dict_order(text, merges)
        items = sorted(merges.items(), key=lambda kv: kv[1])
        merges.clear()
        merges.update(items)  # put the caller's dict in rank order, hoping the next case profits
        return ids

    assert not ex.check_bpe_encode(shuffle_then_encode)

    def zero_the_keys(q, k, v, mask=None):
        k.zero_()  # uniform weights, and the expected values were computed from the real k
        return my_attention(q, k, v, mask)

    assert not ex.check_attention(zero_the_keys)


def test_feedback_is_specific():
    result = ex.check_count_windows(lambda n, T, s: (n - T) // s)
    assert not result
    assert "count windows(20, 4, 3): expected 6, got 5" in result.message
    result = ex.check_bpe_encode(encode_dict_order)
    assert "'aaabdaaabac'" in result.message and "expected [258, 100, 258, 97, 99]" in result.message


# --- the exercise cells of notebooks 01-03 --------------------------------------------------------

NOTEBOOKS = ["01_tokenization", "02_datasets", "03_attention"]


def _exercises(name):
    return exercise_pairs(name)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_three_exercises_with_public_and_hidden_checks(name):
    pairs = _exercises(name)
    assert len(pairs) >= 3, name
    assert_protocol_cells(pairs, CASES, ex)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_student_copy_exercises_say_not_written_yet(name):
    """In a student copy (solutions stripped, hidden tests removed as nbgrader's release does)
    each exercise's check cell runs without raising and reports "not written yet"."""
    assert_student_copies_say_not_written_yet(_exercises(name), {})


def test_every_check_01_03_is_used_in_its_notebooks():
    from tests.conftest import REPO

    sources = "".join((REPO / "notebooks" / f"{n}.ipynb").read_text() for n in NOTEBOOKS)
    for check in CASES:
        assert check.__name__ + "(" in sources, check.__name__
