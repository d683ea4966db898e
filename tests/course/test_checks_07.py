"""The exercise checks of notebook 07: right answers (in every standard form) pass, public and
hidden cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so; the
stand-in sessions of the greedy check behave like the real exported graphs."""

import re

import numpy as np
import pytest
import torch
from torch.export import Dim

from mini_llm.course import checks as ex
from mini_llm.course.checks import nb07_export as nb07
from tests.course.check_contract import (
    contract_tests,
    notebook_tests,
)

# --- solutions, written independently of the package -------------------------------------------


def past_bytes(config, batch, positions, dtype):
    return 2 * config.n_layer * batch * positions * config.n_embd * torch.empty((), dtype=dtype).element_size()


def past_bytes_shape(config, batch, positions, dtype):  # another correct form: a 0-d tensor, via the shape
    hs = config.n_embd // config.n_head
    shape = torch.tensor([config.n_layer, 2, batch, config.n_head, positions, hs])
    return shape.prod() * dtype.itemsize


def past_bytes_numpy(config, batch, positions, dtype):  # another correct form: a numpy integer
    return np.int64(2 * config.n_layer * batch * positions * config.n_embd) * torch.finfo(dtype).bits // 8


def scoring_shapes(block_size):
    batch, seq = Dim("batch"), Dim("seq", max=block_size)
    return {"idx": {0: batch, 1: seq}, "targets": {0: batch, 1: seq}}


def scoring_shapes_tuple(block_size):  # another correct form: positional, with explicit minimums
    batch, seq = Dim("B", min=1, max=1024), Dim("T", min=1, max=block_size)
    return ({0: batch, 1: seq}, {0: batch, 1: seq})


def scoring_shapes_auto(block_size):  # another correct form: let the exporter find the ranges
    return {"idx": {0: Dim.AUTO, 1: Dim.AUTO}, "targets": {0: Dim.AUTO, 1: Dim.AUTO}}


def greedy(prefill, decode, prompt, n, block_size, crop=True):
    context = list(prompt)
    logits, past = prefill.run(None, {"idx": np.array([context[-block_size:] if crop else context], dtype=np.int64)})
    new = []
    while len(new) < n:
        token = int(logits[0, -1].argmax())
        new.append(token)
        context.append(token)
        if len(new) == n:
            break
        if past.shape[4] < block_size:
            logits, past = decode.run(None, {"token": np.array([[token]], dtype=np.int64), "past": past})
        else:
            logits, past = prefill.run(None, {"idx": np.array([context[-(block_size // 2):]], dtype=np.int64)})
    return new


def greedy_generator(prefill, decode, prompt, n, block_size):
    """Another correct form: a generator that appends to the caller's prompt in place, asks for the
    outputs by name, and runs one decode step more than needed (as generate_ids does)."""
    logits, past = prefill.run(["logits", "present"], {"idx": np.asarray(prompt[-block_size:], dtype=np.int64)[None]})
    for _ in range(n):
        token = logits[0, -1].argmax()
        yield token
        prompt.append(int(token))
        if past.shape[-2] == block_size:
            logits, past = prefill.run(["logits", "present"], {"idx": np.asarray([prompt[-(block_size // 2):]], dtype=np.int64)})
        else:
            logits, past = decode.run(["logits", "present"], {"token": np.full((1, 1), int(token), dtype=np.int64), "past": past})


def greedy_no_cache(prefill, decode, prompt, n, block_size):  # wrong: right tokens inside a window, but no cache
    context, new = list(prompt), []
    for _ in range(n):
        logits = prefill.run(["logits"], {"idx": np.array([context[-block_size:]], dtype=np.int64)})[0]
        new.append(int(logits[0, -1].argmax()))
        context.append(new[-1])
    return new


def greedy_stale_past(prefill, decode, prompt, n, block_size):  # wrong: keeps feeding the prefill's cache
    logits, past = prefill.run(None, {"idx": np.array([list(prompt)[-block_size:]], dtype=np.int64)})
    new = []
    for _ in range(n):
        new.append(int(logits[0, -1].argmax()))
        logits, _ = decode.run(None, {"token": np.array([[new[-1]]], dtype=np.int64), "past": past})
    return new


def greedy_full_refill(prefill, decode, prompt, n, block_size):  # wrong: refills a whole window, so no room
    context, new = list(prompt), []
    logits, past = prefill.run(None, {"idx": np.array([context[-block_size:]], dtype=np.int64)})
    for _ in range(n):
        new.append(int(logits[0, -1].argmax()))
        context.append(new[-1])
        if past.shape[4] < block_size:
            logits, past = decode.run(None, {"token": np.array([[new[-1]]], dtype=np.int64), "past": past})
        else:
            logits, past = prefill.run(None, {"idx": np.array([context[-block_size:]], dtype=np.int64)})
    return new


def greedy_no_room_check(prefill, decode, prompt, n, block_size):  # wrong: decodes past the end of the window
    context, new = list(prompt), []
    logits, past = prefill.run(None, {"idx": np.array([context[-block_size:]], dtype=np.int64)})
    for _ in range(n):
        new.append(int(logits[0, -1].argmax()))
        logits, past = decode.run(None, {"token": np.array([[new[-1]]], dtype=np.int64), "past": past})
    return new


def greedy_first_row(prefill, decode, prompt, n, block_size):  # wrong: argmax of the first position
    context, new = list(prompt), []
    logits, past = prefill.run(None, {"idx": np.array([context[-block_size:]], dtype=np.int64)})
    for _ in range(n):
        new.append(int(logits[0, 0].argmax()))
        context.append(new[-1])
        if past.shape[4] < block_size:
            logits, past = decode.run(None, {"token": np.array([[new[-1]]], dtype=np.int64), "past": past})
        else:
            logits, past = prefill.run(None, {"idx": np.array([context[-(block_size // 2):]], dtype=np.int64)})
    return new


def greedy_no_crop(prefill, decode, prompt, n, block_size):  # wrong: a long prompt goes in whole
    return greedy(prefill, decode, prompt, n, block_size, crop=False)


def greedy_int32(prefill, decode, prompt, n, block_size):  # wrong: onnxruntime wants int64 ids
    logits, _ = prefill.run(None, {"idx": np.array([prompt], dtype=np.int32)})
    return [int(logits[0, -1].argmax())] * n


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_past_bytes: ([past_bytes, past_bytes_shape, past_bytes_numpy],
                          [lambda c, b, p, d: c.n_layer * b * p * c.n_embd * d.itemsize,           # keys only
                           lambda c, b, p, d: 2 * c.n_layer * b * p * c.n_embd * 4,                  # always fp32
                           lambda c, b, p, d: 2 * c.n_layer * b * c.block_size * c.n_embd * d.itemsize,  # whole window
                           lambda c, b, p, d: 2 * c.n_layer * b * p * c.n_embd * c.n_head * d.itemsize,
                           lambda c, b, p, d: past_bytes(c, b, p, d) + 0.5,
                           lambda c, b, p, d: past_bytes(c, b, p, d) // 8],                           # bits vs bytes
                          lambda c, b, p, d: c),
    ex.check_scoring_shapes: ([scoring_shapes, scoring_shapes_tuple, scoring_shapes_auto],
                              [lambda bs: {"idx": {0: Dim("B"), 1: Dim("T")}, "targets": {0: Dim("B"), 1: Dim("T")}},
                               lambda bs: {"idx": {0: Dim("B")}, "targets": {0: Dim("B")}},
                               lambda bs: None,
                               lambda bs: {"idx": {0: Dim("B"), 1: Dim("T", max=bs + 1)},
                                           "targets": {0: Dim("B"), 1: Dim("T", max=bs + 1)}},
                               lambda bs: {"idx": {0: Dim("B"), 1: Dim("T", max=bs)}, "targets": None},
                               lambda bs: {"x": {0: Dim("B"), 1: Dim("T", max=bs)}, "y": {0: Dim("B"), 1: Dim("T", max=bs)}}],
                              lambda bs: bs),
    ex.check_greedy_onnx: ([greedy, greedy_generator],
                           [greedy_no_cache, greedy_stale_past, greedy_full_refill, greedy_no_room_check, greedy_first_row,
                            greedy_int32, greedy_no_crop,
                            lambda p, d, prompt, n, bs: greedy(p, d, prompt, n + 1, bs)[1:]],
                           lambda p, d, prompt, n, bs: prompt),
}
NAMES = lambda c: c.__name__  # noqa: E731


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)


@pytest.mark.parametrize("check", list(CASES), ids=NAMES)
def test_hidden_cases_are_different_inputs(check):
    """A function that answers the public cases from memory fails the hidden ones."""
    solution = CASES[check][0][0]
    answers = {}

    def key(args):
        args = [a for a in args if not isinstance(a, nb07._Session)]  # fresh stand-ins in every case
        return repr(args)

    def recorder(*args):
        answers[key(args)] = list(solution(*args)) if check is ex.check_greedy_onnx else solution(*args)
        return answers[key(args)]

    assert check(recorder)
    public = dict(answers)

    def cheat(*args):
        recorder(*args)  # runs the graphs as a right answer would, then answers from memory
        return public[key(args)]

    result = check(cheat, hidden=True)
    assert not result and "raised KeyError" in result.message


def test_feedback_is_specific():
    result = ex.check_past_bytes(lambda c, b, p, d: 2 * c.n_layer * b * p * c.n_embd * 4)
    assert "past bytes(GPTConfig(" in result.message and "torch.float16): expected 30720, got 61440" in result.message
    result = ex.check_scoring_shapes(lambda bs: {"idx": {0: Dim("B"), 1: Dim("T")}, "targets": {0: Dim("B"), 1: Dim("T")}})
    assert "scoring shapes(16)" in result.message and "torch.export refused the spec" in result.message
    result = ex.check_scoring_shapes(lambda bs: None)
    assert "refused idx, targets of shape (1, 1)" in result.message, result.message
    result = ex.check_greedy_onnx(greedy_no_cache)
    assert re.search(r"from 1 prefill and \d+ decode runs, got .* from \d\d? prefill and 0 decode runs", result.message), result.message
    result = ex.check_greedy_onnx(greedy_no_room_check)
    assert "raised RuntimeError" in result.message and "full cache" in result.message, result.message
    result = ex.check_greedy_onnx(greedy_no_crop, hidden=True)
    assert "crop the context first" in result.message, result.message
    result = ex.check_greedy_onnx(greedy_int32)
    assert "must be a numpy array of int64" in result.message, result.message


def test_mutating_the_inputs_cannot_fool_a_check():
    def zero_the_layers(config, batch, positions, dtype):
        answer = past_bytes(config, batch, positions, dtype)
        config.n_layer, config.n_embd = 1, 1  # the expected value was computed from the untouched config
        return answer

    assert ex.check_past_bytes(zero_the_layers, hidden=True)
    assert not ex.check_past_bytes(lambda c, b, p, d: (setattr(c, "n_layer", 0), 0)[1])

    def clear_the_prompt(prefill, decode, prompt, n, block_size):
        new = greedy(prefill, decode, prompt, n, block_size)
        prompt.clear()  # the caller's prompt is a copy: nothing to gain
        return new

    assert ex.check_greedy_onnx(clear_the_prompt, hidden=True)

    def overwrite_the_past(prefill, decode, prompt, n, block_size):
        """Zeroes each cache it is handed back: the stand-ins hand out fresh arrays, so the
        expected tokens (computed before) stay right and this answer is wrong."""
        context, new = list(prompt), []
        logits, past = prefill.run(None, {"idx": np.array([context[-block_size:]], dtype=np.int64)})
        for _ in range(n):
            new.append(int(logits[0, -1].argmax()))
            context.append(new[-1])
            past[...] = 0
            if past.shape[4] < block_size:
                logits, past = decode.run(None, {"token": np.array([[new[-1]]], dtype=np.int64), "past": past})
            else:
                logits, past = prefill.run(None, {"idx": np.array([context[-(block_size // 2):]], dtype=np.int64)})
        return new

    assert not ex.check_greedy_onnx(overwrite_the_past)


# --- the stand-in sessions are faithful to the real graphs ------------------------------------------


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from mini_llm.export import export_checkpoint

    return export_checkpoint(trained_run, tmp_path_factory.mktemp("onnx07") / "model", log=lambda *a: None)


def test_stand_in_sessions_match_the_exported_graphs(trained_run, exported):
    """Same input names and dtypes, same outputs; a greedy loop gives the same tokens on both."""
    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.export import OnnxRunner

    model, tok, _ = load_checkpoint(trained_run)
    real = OnnxRunner(exported)
    stand_in = {role: nb07._Session(model, role) for role in ("prefill", "decode")}
    for role, session in (("prefill", real.prefill), ("decode", real.decode)):
        assert [i.name for i in session.get_inputs()] == stand_in[role].names
        assert [o.name for o in session.get_outputs()] == ["logits", "present"]
    idx = np.array([tok.encode("KING:\nWhat say you").ids], dtype=np.int64)
    (a_logits, a_past), (b_logits, b_past) = real.prefill.run(None, {"idx": idx}), stand_in["prefill"].run(None, {"idx": idx})
    assert a_logits.shape == b_logits.shape and a_past.shape == b_past.shape and a_past.dtype == b_past.dtype
    assert np.abs(a_logits - b_logits).max() < 1e-4
    prompt = tok.encode("KING:\n").ids
    block = model.config.block_size
    on_real = greedy(real.prefill, real.decode, prompt, 70, block)  # crosses the window twice
    assert on_real == greedy(stand_in["prefill"], stand_in["decode"], prompt, 70, block)


# --- the exercise cells of notebook 07 ----------------------------------------------------------------




def test_checks_leave_the_global_rng_alone():
    """A check builds its models from its own seeds: the learner's random stream goes on unchanged."""
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    for check in CASES:
        assert check(CASES[check][0][0], hidden=True)
    assert torch.equal(torch.rand(3), want)


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests("07_export", CASES, ex, {})
