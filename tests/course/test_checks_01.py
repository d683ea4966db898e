"""The checks of notebook 01_tokenization: right answers (in every standard form) pass, public and hidden
cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so. Then the
notebook's exercise cells."""

import collections
import math

import torch

from mini_llm.bpe import merge as bpe_merge
from mini_llm.course import checks as ex
from tests.course.check_contract import (
    contract_tests,
    notebook_tests,
)

NOTEBOOK = "01_tokenization"

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


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_pair_counts: ([pair_counts, lambda ids: collections.Counter(zip(ids, ids[1:]))],
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
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)


def test_mutating_the_inputs_cannot_fool_a_check():
    """The check calls the function on copies: changing the arguments in place leaves the cases alone."""

    def shuffle_then_encode(text, merges):
        ids = encode_dict_order(text, merges)
        items = sorted(merges.items(), key=lambda kv: kv[1])
        merges.clear()
        merges.update(items)  # put the caller's dict in rank order, hoping the next case profits
        return ids

    assert not ex.check_bpe_encode(shuffle_then_encode)


def test_feedback_is_specific():
    result = ex.check_bpe_encode(encode_dict_order)
    assert "'aaabdaaabac'" in result.message and "expected [258, 100, 258, 97, 99]" in result.message


# --- the notebook's exercise cells -----------------------------------------------------------------


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex)


