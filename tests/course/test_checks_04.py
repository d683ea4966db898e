"""The exercise checks of notebook 04: right answers (in every standard form) pass, public and
hidden cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so;
changing the inputs in place cannot fool them. Then the notebook's exercise cells."""

import math
import re

import numpy as np
import torch
import torch.nn.functional as F

from mini_llm.course import checks as ex
from mini_llm.model import Block, GPTConfig
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    contract_tests,
    exercise_pairs,
    notebook_code_cells,
    notebook_tests,
)

# --- post_ln_block: LayerNorm after each residual addition ---------------------------------------


def _attention(x, w, n_head, causal=True, scale=True):
    B, T, C = x.shape
    q, k, v = F.linear(x, w["attn.c_attn.weight"], w["attn.c_attn.bias"]).split(C, dim=2)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / (math.sqrt(C // n_head) if scale else 1.0)
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    return F.linear(y, w["attn.c_proj.weight"], w["attn.c_proj.bias"])


def _mlp(x, w, approximate="tanh"):
    h = F.gelu(F.linear(x, w["mlp.c_fc.weight"], w["mlp.c_fc.bias"]), approximate=approximate)
    return F.linear(h, w["mlp.c_proj.weight"], w["mlp.c_proj.bias"])


def _ln(x, w, name):
    return F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], eps=1e-5)


def post_ln_block(x, w, n_head, approximate="tanh", causal=True, scale=True):
    x = _ln(x + _attention(x, w, n_head, causal, scale), w, "ln_1")
    return _ln(x + _mlp(x, w, approximate), w, "ln_2")


def post_ln_block_modules(x, weights, n_head):
    """Another correct form: the package's modules, SDPA for attention, a numpy array back."""
    B, T, C = x.shape
    block = Block(GPTConfig(vocab_size=2, block_size=T, n_embd=C, n_head=n_head, n_layer=1)).eval()
    block.load_state_dict(weights)
    with torch.no_grad():
        q, k, v = block.attn.qkv(x)
        y = block.attn.merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        h = block.ln_1(x + y)
        return block.ln_2(h + block.mlp(h)).numpy()


def pre_ln_block(x, w, n_head):  # the notebook's block, not this exercise's
    x = x + _attention(_ln(x, w, "ln_1"), w, n_head)
    return x + _mlp(_ln(x, w, "ln_2"), w)


def post_ln_forgets_ln_2(x, w, n_head):
    x = _ln(x + _attention(x, w, n_head), w, "ln_1")
    return x + _mlp(x, w)


def post_ln_in_place_trick(x, w, n_head):
    """Zeroes the caller's attention and MLP weights, then answers for those: right only for a check
    that computes its expected value after the call, from the changed weights."""
    for name, t in w.items():
        if not name.startswith("ln_"):
            t.zero_()
    return post_ln_block(x, w, n_head)


# --- decode_step: one token on a preallocated cache ---------------------------------------------


def _step(model, token, cache, pos, attend, write=True, position=None, slot=None):
    x = model.wte(token) + model.wpe(torch.tensor([pos if position is None else position]))
    B, _, C = x.shape
    nh = cache.size(3)
    for layer, block in enumerate(model.blocks):
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, 1, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        if write:
            cache[layer, 0, :, :, pos if slot is None else slot] = k[:, :, 0]
            cache[layer, 1, :, :, pos if slot is None else slot] = v[:, :, 0]
            keys, values = cache[layer, 0], cache[layer, 1]
        else:  # a copy grown with torch.cat: right logits, the cache never written
            keys = torch.cat([cache[layer, 0, :, :, :pos], k], dim=2)
            values = torch.cat([cache[layer, 1, :, :, :pos], v], dim=2)
        y = attend(q, keys, values, pos)
        x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, 1, C))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.ln_f(x))


def _sliced(q, keys, values, pos):
    return F.softmax(q @ keys[:, :, :pos + 1].transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1) @ values[:, :, :pos + 1]


def _masked(q, keys, values, pos):
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.size(-1))
    scores[..., pos + 1:] = float("-inf")
    return F.softmax(scores, dim=-1) @ values


def decode_step(model, token, cache, pos):
    return _step(model, token, cache, pos, _sliced)


def decode_step_masked_2d(model, token, cache, pos):
    """Another correct form: attends over the whole buffer with the garbage masked, returns (B, V)."""
    return _step(model, token, cache, pos, _masked)[:, 0]


def decode_step_sdpa(model, token, cache, pos):
    """Another correct form: the fused kernel on the filled slots, without is_causal."""
    return _step(model, token, cache, pos,
                 lambda q, k, v, p: F.scaled_dot_product_attention(q, k[:, :, :p + 1], v[:, :, :p + 1]))


def step_reads_garbage(model, token, cache, pos):
    return _step(model, token, cache, pos, lambda q, k, v, p: F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -1) @ v)


def step_is_causal(model, token, cache, pos):  # trap 1 in docs/TRAPS.md: one query, many keys, the mask aligned top left
    return _step(model, token, cache, pos,
                 lambda q, k, v, p: F.scaled_dot_product_attention(q, k[:, :, :p + 1], v[:, :, :p + 1], is_causal=True))


def step_position_zero(model, token, cache, pos):
    return _step(model, token, cache, pos, _sliced, position=0)


def step_without_writing(model, token, cache, pos):
    return _step(model, token, cache, pos, lambda q, k, v, p: F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -1) @ v,
                 write=False)


def step_writes_everywhere_after(model, token, cache, pos):
    logits = decode_step(model, token, cache, pos)
    cache[..., pos + 1:, :] = 0.0  # "cleans" the slots it should leave alone
    return logits


def step_calls_forward_kv(model, token, cache, pos):
    logits, present = model.forward_kv(token, cache[..., :pos, :])
    cache[..., pos, :] = present[..., pos, :]
    return logits


# --- previous_token_scores -------------------------------------------------------------------------


def scores_diagonal(maps):
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def scores_loops(maps):
    """Another correct form: nested Python lists of floats."""
    L, nh, T, _ = maps.shape
    return [[sum(float(maps[l, h, i, i - 1]) for i in range(1, T)) / (T - 1) for h in range(nh)] for l in range(L)]


def scores_numpy(maps):
    m = maps.numpy()
    T = m.shape[-1]
    return np.stack([m[..., i, i - 1] for i in range(1, T)], axis=-1).mean(-1)


def scores_with_row_zero(maps):  # averages over T rows, row 0 contributing 0
    T = maps.size(-1)
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / T


def scores_self(maps):
    return maps.diagonal(dim1=-2, dim2=-1)[..., 1:].mean(-1)


def scores_sum(maps):
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1)


def scores_argmax_share(maps):  # section 6's count, not the mean weight
    T = maps.size(-1)
    return (maps[..., 1:, :].argmax(-1) == torch.arange(T - 1)).float().mean(-1)


def scores_in_place_trick(maps):
    """Zeroes the caller's maps, then returns zeros: right only if the check compared after the call."""
    maps.zero_()
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_post_ln_block: ([post_ln_block, post_ln_block_modules],
                             [pre_ln_block, post_ln_forgets_ln_2, post_ln_in_place_trick,
                              lambda x, w, nh: post_ln_block(x, w, nh, approximate="none"),
                              lambda x, w, nh: post_ln_block(x, w, nh, causal=False),
                              lambda x, w, nh: post_ln_block(x, w, nh, scale=False)],
                             lambda x, w, nh: x),
    ex.check_decode_step: ([decode_step, decode_step_masked_2d, decode_step_sdpa],
                           [step_reads_garbage, step_is_causal, step_position_zero, step_without_writing,
                            step_writes_everywhere_after, step_calls_forward_kv,
                            lambda m, t, c, p: _step(m, t, c, p, lambda q, k, v, pp: _sliced(q, k, v, pp + 1), slot=p + 1)],
                           lambda model, token, cache, pos: token),
    ex.check_previous_token_scores: ([scores_diagonal, scores_loops, scores_numpy],
                                     [scores_with_row_zero, scores_self, scores_sum, scores_argmax_share,
                                      scores_in_place_trick],
                                     lambda maps: maps),
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES, may_raise=True)


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public answers passes them and fails the hidden ones."""
    for check, right, key in ((ex.check_previous_token_scores, scores_diagonal, lambda maps: tuple(maps.shape)),
                              (ex.check_post_ln_block, post_ln_block, lambda x, w, nh: (tuple(x.shape), nh))):
        seen = {}

        def recorder(*args):
            seen[key(*args)] = right(*args)
            return seen[key(*args)]

        assert check(recorder)
        public = dict(seen)
        memorised = lambda *args: public[key(*args)]  # noqa: E731
        assert check(memorised)
        result = check(memorised, hidden=True)
        assert not result and "raised KeyError" in result.message, result.message


def test_feedback_is_specific():
    result = ex.check_decode_step(step_is_causal)
    assert "decode step(<MiniGPT L=1 nh=2 C=16; B=1, 3 cached, 4 steps>)" in result.message, result.message
    assert "at pos 3: logits that differ from the full forward's" in result.message
    result = ex.check_decode_step(step_without_writing)
    assert "does not hold this token's keys and values at position 3" in result.message, result.message
    result = ex.check_decode_step(step_writes_everywhere_after)
    assert "the cache changed at positions other than 3" in result.message, result.message
    result = ex.check_decode_step(step_calls_forward_kv)
    assert "raised RuntimeError: model.forward_kv was called" in result.message, result.message
    result = ex.check_decode_step(lambda model, token, cache, pos: token)
    assert "(1, 1) came back, not logits of shape (1, 1, 30)" in result.message, result.message
    result = ex.check_post_ln_block(pre_ln_block)
    assert "post-LN block(tensor(2, 5, 16)" in result.message and "<weights of a Block, n_embd=16>, 4)" in result.message
    assert "LayerNorm_1(x + attention)" in result.message
    result = ex.check_previous_token_scores(scores_with_row_zero)
    assert "previous-token scores(tensor(2, 4, 6, 6)" in result.message and "rows\n1..T-1" not in result.message
    assert "average over rows 1..T-1" in result.message


def test_the_checks_leave_the_global_rng_and_the_model_alone():
    assert_checks_leave_the_global_rng_alone(CASES)
    a, b = ex.check_decode_step(step_is_causal, hidden=True), ex.check_decode_step(step_is_causal, hidden=True)
    assert a.message == b.message


def test_a_block_and_the_model_refuse_to_run_whole_in_the_decode_check():
    """Calling a block (or its attention) is refused with the reason; its pieces still run."""

    def calls_a_block(model, token, cache, pos):
        model.blocks[0](model.wte(token))

    def calls_the_attention(model, token, cache, pos):
        model.blocks[0].attn(model.wte(token))

    for fn, name in ((calls_a_block, "model.blocks[0] (its forward)"), (calls_the_attention, "model.blocks[0].attn (its forward)")):
        result = ex.check_decode_step(fn)
        assert not result and f"{name} was called" in result.message, result.message


# --- the exercise cells of notebook 04 ------------------------------------------------------------


def _exercises():
    return exercise_pairs("04_minigpt")



def test_the_notebook_solutions_pass_their_checks():
    for solution, check in _exercises():
        scope = {"math": math, "torch": torch, "F": F}
        exec(solution.source, scope)
        name, fn = re.search(r"^(check_\w+)\((\w+)\)$", check.source, re.M).groups()
        result = getattr(ex, name)(scope[fn], hidden=True)
        assert result, result.message



def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    """The committed outputs say True for every proof (torch.equal where the operations are the
    same), and the cells nbval compares print no machine-dependent floating-point values."""
    checked = [c for c in notebook_code_cells("04_minigpt") if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 10
    text = "".join(o.get("text", "") for c in checked for o in c.outputs)
    assert "False" not in text and text.count("True") >= 20, text
    assert "torch.equal): True" in text and "loss == MiniGPT's (torch.equal): True" in text
    assert not re.search(r"\d\.\d{3,}", text), text
    sources = "".join(c.source for c in notebook_code_cells("04_minigpt"))
    assert "attention_explorer(trained, tok)" in sources and "trained_model()" in sources
    assert "mine.load_state_dict(theirs.state_dict())" in sources


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests("04_minigpt", CASES, ex, {"math": math, "torch": torch, "F": F})
