"""The checks of notebook 07: right answers (in every standard form) pass, public and hidden cases;
wrong ones fail naming the input; echoing the inputs fails; unwritten says so; each step hands on
yours or the package's piece; the stand-in sessions of the greedy check behave like the real
exported graphs."""

import re

import numpy as np
import pytest
import torch
from torch.export import Dim

from mini_llm.course import checks as ex
from mini_llm.course.checks import nb07_export as nb07
from mini_llm.export import _Prefill, _Step, decode_shapes
from mini_llm.model import GPTConfig
from tests.course.check_contract import (
    contract_tests,
    notebook_tests,
    step_tests,
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


class Prefill(torch.nn.Module):  # the notebook's
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx):
        return self.model.forward_kv(idx)


class PrefillAsList(torch.nn.Module):  # another correct form: another attribute, a list, past given as None
    def __init__(self, model):
        super().__init__()
        self.gpt = model

    def forward(self, tokens):
        logits, present = self.gpt.forward_kv(tokens, None)
        return [logits, present]


class PrefillLogitsOnly(Prefill):  # wrong: the decode graph needs present too
    def forward(self, idx):
        return self.model.forward_kv(idx)[0]


class PrefillForward(Prefill):  # wrong: the training forward, (logits, loss=None)
    def forward(self, idx):
        return self.model(idx)


class PrefillEcho(Prefill):
    def forward(self, idx):
        return idx, idx


class Decode(Prefill):  # the notebook's
    def forward(self, token, past):
        return self.model.forward_kv(token, past)


class DecodeByKeyword(torch.nn.Module):  # another correct form: keywords, a tuple built by hand
    def __init__(self, model):
        super().__init__()
        self.net = model

    def forward(self, token, past):
        out = self.net.forward_kv(idx=token, past=past)
        return out[0], out[1]


class DecodeNoPast(Decode):  # wrong: the cache is dropped, so the token sits at position 0
    def forward(self, token, past):
        return self.model.forward_kv(token)


class DecodeOldPresent(Decode):  # wrong: hands back the cache it was given
    def forward(self, token, past):
        return self.model.forward_kv(token, past)[0], past


class DecodeEcho(Decode):
    def forward(self, token, past):
        return token, past


def decode_shapes_mine(block_size):  # the notebook's
    batch = Dim("batch", min=1, max=64)
    return {"token": {0: batch}, "past": {2: batch, 4: Dim("cached", min=1, max=block_size - 1)}}


def decode_shapes_tuple(block_size):  # another correct form: positional, no batch bound
    B = Dim("B")
    return ({0: B}, {2: B, 4: Dim("P", max=block_size - 1)})


def decode_shapes_auto(block_size):  # another correct form: let the exporter find the ranges
    return {"token": {0: Dim.AUTO}, "past": {2: Dim.AUTO, 4: Dim.AUTO}}


def decode_feeds_ok(token, past, config):
    if token.dtype != np.int64 or past.dtype != np.float32 or token.ndim != 2 or past.ndim != 6:
        return False
    hs = config.n_embd // config.n_head
    return (token.shape[1] == 1 and past.shape == (config.n_layer, 2, token.shape[0], config.n_head, past.shape[4], hs)
            and 0 < past.shape[4] < config.block_size)


def decode_feeds_ok_by_example(token, past, config):  # another correct form: the shape a model would hand out
    from mini_llm.model import MiniGPT

    if not (token.dtype == np.int64 and past.dtype == np.float32 and token.ndim == 2 and token.shape[1] == 1):
        return False
    P = past.shape[4] if past.ndim == 6 else 0
    if not 1 <= P < config.block_size:
        return False
    with torch.no_grad():
        _, present = MiniGPT(config).forward_kv(torch.zeros(token.shape[0], P, dtype=torch.long))
    return np.bool_(tuple(present.shape) == past.shape)


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
    ex.check_decode_feeds: ([decode_feeds_ok, decode_feeds_ok_by_example],
                            [lambda t, p, c: p.ndim == 6 and p.shape[4] < c.block_size,           # only the room
                             lambda t, p, c: decode_feeds_ok(t, p, c) or p.shape[4:5] == (c.block_size,),  # a full cache too
                             lambda t, p, c: int(decode_feeds_ok(t, p, c)),                         # 1, not True
                             lambda t, p, c: p.ndim == 6 and p.shape[:4] == (c.n_layer, 2, t.shape[0], c.n_head)
                             and 0 < p.shape[4] < c.block_size],                                   # t (1, 2) passes
                            lambda t, p, c: t),
    ex.check_prefill_wrapper: ([Prefill, PrefillAsList], [PrefillLogitsOnly, PrefillForward], PrefillEcho),
    ex.check_decode_wrapper: ([Decode, DecodeByKeyword], [DecodeNoPast, DecodeOldPresent], DecodeEcho),
    ex.check_decode_shapes: ([decode_shapes_mine, decode_shapes_tuple, decode_shapes_auto],
                             [lambda bs: {"token": {0: Dim("B")}, "past": {2: Dim("B"), 4: Dim("P", max=bs)}},
                              lambda bs: {"token": {0: Dim("B")}, "past": {2: Dim("C"), 4: Dim("P", max=bs - 1)}},
                              lambda bs: {"token": None, "past": {4: Dim("P", max=bs - 1)}},
                              lambda bs: None,
                              lambda bs: {"idx": {0: Dim("B")}, "past": {2: Dim("B"), 4: Dim("P", max=bs - 1)}}],
                             lambda bs: bs),
    ex.check_greedy_onnx: ([greedy, greedy_generator],
                           [greedy_no_cache, greedy_stale_past, greedy_full_refill, greedy_no_room_check, greedy_first_row,
                            greedy_int32, greedy_no_crop,
                            lambda p, d, prompt, n, bs: greedy(p, d, prompt, n + 1, bs)[1:]],
                           lambda p, d, prompt, n, bs: prompt),
}
NAMES = lambda c: c.__name__  # noqa: E731
EXERCISES = [ex.check_past_bytes, ex.check_decode_feeds, ex.check_greedy_onnx]


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_prefill_wrapper: _Prefill, ex.check_decode_wrapper: _Step, ex.check_decode_shapes: decode_shapes}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_the_packages_decode_shapes_export_the_decode_graph():
    """export_checkpoint uses the same spec: a decode graph that takes a cache of block_size - 1 positions."""
    spec = decode_shapes(16)
    assert spec["past"][4].min == 1 and spec["past"][4].max == 15 and spec["token"][0] is spec["past"][2]


def test_a_feed_the_config_cannot_have_is_refused():
    cfg = GPTConfig(vocab_size=50, block_size=8, n_embd=12, n_head=3, n_layer=1)
    assert nb07._decode_feeds_ok(np.zeros((1, 1), np.int64), np.zeros((1, 2, 1, 3, 7, 4), np.float32), cfg)
    assert not nb07._decode_feeds_ok([[1]], np.zeros((1, 2, 1, 3, 7, 4), np.float32), cfg)


@pytest.mark.parametrize("check", EXERCISES, ids=NAMES)
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
    result = ex.check_decode_shapes(CASES[ex.check_decode_shapes][1][0])
    assert result.message.startswith("decode_shapes(16): expected 'accepts (B, P) = (1, 1), (3, 15), (2, 8)', "
                                     "got 'torch.export refused the spec: UserError: Constraints violated (P)!")
    result = ex.check_decode_shapes(lambda bs: None)
    assert "refused B=1 rows with P=1 cached positions" in result.message, result.message
    result = ex.check_decode_feeds(CASES[ex.check_decode_feeds][1][0])
    assert result.message.startswith("decode_feeds_ok(int64 (1, 2), float32 (2, 2, 1, 4, 5, 32), L=2, nh=4, C=128, "
                                     "block_size=64): expected False, got True"), result.message
    result = ex.check_prefill_wrapper(PrefillLogitsOnly)
    assert result.message.startswith("Prefill(L=2, idx (2, 5)): expected (tensor(2, 5, 50) "), result.message
    result = ex.check_decode_wrapper(DecodeNoPast)
    assert result.message.startswith("Decode(L=2, token (2, 1), past (2, 2, 2, 2, 5, 8)): expected (tensor(2, 1, 50) ")
    assert "first difference at [0][0, 0, 0]: expected " in result.message
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
 test_every_check_is_used_in_the_notebook) = notebook_tests("07_export", CASES, ex, {"torch": torch, "nn": torch.nn,
                                                                                     "np": np, "Dim": Dim})
