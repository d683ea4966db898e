"""The checks of notebook 01_tokenization: right answers (in every standard form) pass, public and hidden
cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so; each step hands
on yours or the package's piece. Then the notebook's step and exercise cells."""

import codecs
import collections
import math

import torch

from mini_llm import bpe
from mini_llm.bpe import merge as bpe_merge
from mini_llm.course import checks as ex
from mini_llm.course.checks import nb01_tokenization as nb01
from tests.course.check_contract import (
    contract_tests,
    notebook_tests,
    step_tests,
)

NOTEBOOK = "01_tokenization"

# --- solutions, written independently of the package where it matters ---------------------------


def pair_counts(ids):
    counts = {}
    for p in zip(ids, ids[1:]):
        counts[p] = counts.get(p, 0) + 1
    return counts


def merge_by_slices(ids, pair, new_id):  # another correct form: scanned with slices
    out, rest = [], list(ids)
    while rest:
        if rest[:2] == list(pair):
            out, rest = out + [new_id], rest[2:]
        else:
            out, rest = out + rest[:1], rest[1:]
    return out


def merge_in_place(ids, pair, new_id):  # mutates its input: still a right answer
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


def train(ids, num_merges):  # the notebook's: min over (-count, pair)
    merges = {}
    for new_id in range(256, 256 + num_merges):
        counts = pair_counts(ids)
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges[best] = new_id
        ids = merge_in_place(list(ids), best, new_id)
    return merges, ids


def train_sorted(ids, num_merges):  # another correct form: a Counter, sorted by count then pair; a list back
    merges, ids = {}, list(ids)
    while len(merges) < num_merges and len(ids) > 1:
        counts = collections.Counter(zip(ids, ids[1:]))
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        merges[best] = 256 + len(merges)
        ids = bpe_merge(ids, best, merges[best])
    return [merges, torch.tensor(ids, dtype=torch.long)]


def train_first_max(ids, num_merges):  # wrong: ties go to the pair seen first, not the smallest
    merges = {}
    for new_id in range(256, 256 + num_merges):
        counts = pair_counts(ids)
        if not counts:
            break
        best = max(counts, key=counts.get)
        merges[best] = new_id
        ids = bpe_merge(ids, best, new_id)
    return merges, ids


def decode(ids, merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new_id in merges.items():
        vocab[new_id] = vocab[a] + vocab[b]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def decode_unmerging(ids, merges):  # another correct form: expand each token through the merges, then decode
    return bytes(unmerge(ids, merges)).decode("utf-8", errors="replace")


def decode_incremental(ids, merges):  # another correct form: the stdlib's incremental decoder, flushed at the end
    vocab = bpe.token_bytes(merges)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return "".join(decoder.decode(vocab[i]) for i in ids) + decoder.decode(b"", final=True)


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
    ex.check_bpe_train: ([train, train_sorted],
                         [train_first_max, lambda ids, n: train(ids, n + 1), lambda ids, n: (train(ids, n)[0], ids)],
                         lambda ids, n: ids),
    ex.check_encode: ([encode_dict_order, encode_by_rank, encode_sorted_loop],  # the dicts come in rank order here
                      [lambda text, merges: list(text.encode("utf-8")),
                       lambda text, merges: encode_dict_order(text, dict(reversed(list(merges.items()))))],
                      lambda text, merges: text),
    ex.check_decode: ([decode, decode_unmerging, decode_incremental],
                      [lambda ids, merges: "".join(bpe.token_bytes(merges)[i].decode("utf-8", errors="replace") for i in ids),
                       lambda ids, merges: b"".join(bpe.token_bytes(merges)[i] for i in ids).decode("utf-8", errors="ignore"),
                       lambda ids, merges: "".join(chr(b) for b in unmerge(ids, merges))],
                      lambda ids, merges: ids),
    ex.check_pair_counts: ([pair_counts, lambda ids: collections.Counter(zip(ids, ids[1:]))],
                           [lambda ids: {p: 1 for p in zip(ids, ids[1:])},
                            lambda ids: pair_counts(ids[:-1])],
                           lambda ids: ids),
    ex.check_merge: ([merge_by_slices, merge_in_place, lambda *a: torch.tensor(bpe_merge(*a), dtype=torch.long)],
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

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_pair_counts: bpe.pair_counts, ex.check_merge: bpe.merge, ex.check_bpe_train: nb01.bpe_train,
         ex.check_encode: bpe.encode_chunk, ex.check_decode: nb01.decode}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_the_first_disagreement_is_named():
    """A wrong piece gets the input, the first position where it differs, expected vs got."""
    message = ex.check_bpe_train(train_first_max).message
    assert message.startswith("train([97, 97, 97, 98, 100, 97, 97, 97, 98, 97, 99], 3): expected ")
    assert "first difference at [0][(97, 98)]: expected 257, got no entry" in message
    message = ex.check_decode(CASES[ex.check_decode][1][0]).message
    assert "decode([258, 32, 240, 159, 145, 139], " in message and "first difference at character 5: expected '👋'" in message
    assert ex.check_merge(lambda ids, pair, new: ids).message.startswith(
        "merge([1, 2, 3, 1, 2], (1, 2), 99): expected [99, 3, 99], got [1, 2, 3, 1, 2]; first difference at [0]: expected 99, got 1")


def test_the_tie_and_stop_conventions_are_what_the_package_does():
    """The task fixes the conventions (ties: the smallest pair; stop when no pair is left): the
    package's BPE class learns the same merges on one chunk."""
    b = bpe.BPE(pattern=r"(?s).+")  # the whole text as one chunk
    b.train("abcd abcd", vocab_size=256 + 2 + 1, min_frequency=1)
    assert b.merges == train(list(b"abcd abcd"), 2)[0] == {(97, 98): 256, (99, 100): 257}
    assert train(list(b"aaaa"), 5) == nb01.bpe_train(list(b"aaaa"), 5) == ({(97, 97): 256, (256, 256): 257}, [257])


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


