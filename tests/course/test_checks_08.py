"""The exercise checks of notebook 08: right answers (in every standard form) pass, public and
hidden cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so;
changing the inputs in place cannot fool them. Then the notebook's exercise cells and outputs."""

import math
import re

import torch
import torch.nn.functional as F

from mini_llm.attention import rotary
from mini_llm.course import checks as ex
from tests.course.check_contract import (
    contract_tests,
    notebook_code_cells,
    notebook_tests,
)

# --- rope_interleaved: pairs (2i, 2i + 1) ---------------------------------------------------------


def rope_interleaved(x, positions, base):
    hs = x.size(-1)
    theta = base ** (-torch.arange(0, hs, 2, dtype=torch.float32) / hs)  # (hs/2,)
    angle = torch.as_tensor(positions, dtype=torch.float32)[:, None] * theta  # (T, hs/2)
    even, odd = x[..., 0::2], x[..., 1::2]
    turned = torch.stack([even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()], dim=-1)
    return turned.flatten(-2)


def rope_interleaved_complex(x, positions, base):  # Meta's Llama form: pairs as complex numbers, float64
    hs = x.size(-1)
    theta = base ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    angle = torch.as_tensor(positions, dtype=torch.float64).reshape(-1, 1) * theta
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], hs // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).flatten(-2).tolist()


def rope_interleaved_in_place(x, positions, base):  # another correct form: writes into x and returns it
    turned = rope_interleaved(x, positions, base)
    x.copy_(turned)
    return x


def rope_interleaved_clockwise(x, positions, base):
    return rope_interleaved(x, -torch.as_tensor(positions), base)


def rope_interleaved_slow_theta(x, positions, base):  # base^(-i/hs): every pair but the first turns too slowly
    hs = x.size(-1)
    theta = base ** (-torch.arange(hs // 2, dtype=torch.float32) / hs)
    angle = torch.as_tensor(positions, dtype=torch.float32)[:, None] * theta
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()], -1).flatten(-2)


def rope_interleaved_but_pairs_stacked(x, positions, base):  # right angles, results left in the half-split layout
    y = rope_interleaved(x, positions, base)
    return torch.cat([y[..., 0::2], y[..., 1::2]], dim=-1)


# --- swiglu ----------------------------------------------------------------------------------------


def swiglu(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_by_hand(x, w_gate, w_up, w_down):  # another correct form: sigmoid written out, F.linear, a list back
    gate = F.linear(x, w_gate)
    return F.linear(gate * torch.sigmoid(gate) * F.linear(x, w_up), w_down).tolist()


def swiglu_swapped(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_up.T) * (x @ w_gate.T)) @ w_down.T


def swiglu_gelu(x, w_gate, w_up, w_down):
    return (F.gelu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_no_gate_activation(x, w_gate, w_up, w_down):
    return ((x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_untransposed(x, w_gate, w_up, w_down):  # (out, in) weights used as (in, out): raises on shapes
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


# --- orthogonalize: the cubic Newton-Schulz iteration ---------------------------------------------------


def orthogonalize(G, steps):
    X = G / G.norm()
    for _ in range(steps):
        X = 1.5 * X - 0.5 * X @ X.T @ X
    return X


def orthogonalize_other_side(G, steps):  # another correct form: X (X^T X), float64, in place on G
    G /= torch.linalg.matrix_norm(G)
    X = G.double()
    for _ in range(steps):
        X = 1.5 * X - 0.5 * X @ (X.T @ X)
    return X


def orthogonalize_unnormalised(G, steps):
    X = G.clone()
    for _ in range(steps):
        X = 1.5 * X - 0.5 * X @ X.T @ X
    return X


def orthogonalize_spectral(G, steps):  # divides by the largest singular value instead: other numbers
    X = G / torch.linalg.matrix_norm(G, ord=2)
    for _ in range(steps):
        X = 1.5 * X - 0.5 * X @ X.T @ X
    return X


def orthogonalize_quintic(G, steps):  # Muon's quintic, not the cubic asked for
    X = G / G.norm()
    for _ in range(steps):
        A = X @ X.T
        X = 3.4445 * X + (-4.7750 * A + 2.0315 * A @ A) @ X
    return X


def orthogonalize_one_step_short(G, steps):
    return orthogonalize(G, max(steps - 1, 0))


def orthogonalize_exact(G, steps):  # the limit (U V^T), not the iteration
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_rope_interleaved: ([rope_interleaved, rope_interleaved_complex, rope_interleaved_in_place],
                                [lambda x, positions, base: rotary(x, positions, base), rope_interleaved_clockwise,
                                 rope_interleaved_slow_theta, rope_interleaved_but_pairs_stacked,
                                 lambda x, positions, base: rope_interleaved(x, positions + 1, base)],
                                lambda x, positions, base: x),
    ex.check_swiglu: ([swiglu, swiglu_by_hand],
                      [swiglu_swapped, swiglu_gelu, swiglu_no_gate_activation, swiglu_untransposed,
                       lambda x, g, u, d: swiglu(x, g, u, d) * 1.001],
                      lambda x, w_gate, w_up, w_down: x),
    ex.check_orthogonalize: ([orthogonalize, orthogonalize_other_side],
                             [orthogonalize_unnormalised, orthogonalize_spectral, orthogonalize_quintic,
                              orthogonalize_one_step_short, orthogonalize_exact],
                             lambda G, steps: G),
}

(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public answers passes them and fails the hidden ones."""
    for check, (right, _, _) in CASES.items():
        seen = []

        def recorder(*args, right=right[0]):
            seen.append(([a.clone() if isinstance(a, torch.Tensor) else a for a in args], right(*args)))
            return seen[-1][1]

        assert check(recorder)
        answers = [(args, out) for args, out in seen]

        def memorised(*args, answers=answers):
            for known, out in answers:
                if all(type(a) is type(b) and (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b)
                       for a, b in zip(known, args)):
                    return out
            return answers[0][1]

        assert check(memorised)
        result = check(memorised, hidden=True)
        assert not result and "expected" in result.message, result.message


def test_mutating_the_inputs_cannot_fool_a_check():
    """Expected values are computed before the call and the function gets copies: writing into
    x or G changes nothing for the next cases, and a right in-place answer still passes."""
    assert ex.check_rope_interleaved(rope_interleaved_in_place, hidden=True)
    assert ex.check_orthogonalize(orthogonalize_other_side, hidden=True)

    def zero_then_echo(x, positions, base):
        x.zero_()
        return x

    assert not ex.check_rope_interleaved(zero_then_echo, hidden=True)


def test_feedback_is_specific():
    result = ex.check_rope_interleaved(lambda x, positions, base: rotary(x, positions, base))
    assert result.message.startswith("rope interleaved(x (3, 4), positions [0, 1, 2], 10000.0): expected tensor(3, 4)")
    assert "channels 2i and 2i+1" in result.message
    result = ex.check_swiglu(swiglu_untransposed)
    assert "raised RuntimeError" in result.message and "x @ w_gate.T" in result.message, result.message
    result = ex.check_swiglu(lambda x, g, u, d: x[..., :2])
    assert "swiglu(x (1, 4), w_gate (6, 4), w_up (6, 4), w_down (4, 6)): expected tensor(1, 4)" in result.message
    assert "got tensor(1, 2)" in result.message, result.message
    result = ex.check_orthogonalize(orthogonalize_unnormalised)
    assert "orthogonalize(G (3, 3) of norm 3.47, 1): expected" in result.message, result.message
    assert "Frobenius" in result.message
    result = ex.check_orthogonalize(lambda G, steps: None)
    assert "got None" in result.message


def test_the_expected_values_are_what_the_exercises_say():
    """The references inside the checks agree with independent forms: the interleaved RoPE is a
    rotation that depends only on relative positions, and the cubic iteration converges to U V^T."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)

    def score(m, n):
        return (rope_interleaved(q, torch.tensor([m]), 1e4) * rope_interleaved(k, torch.tensor([n]), 1e4)).sum().item()

    assert math.isclose(score(9, 4), score(105, 100), abs_tol=1e-4)
    assert not math.isclose(score(9, 4), score(9, 5), abs_tol=1e-4)
    G = torch.randn(12, 20, generator=g)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    assert torch.allclose(orthogonalize(G, 60), U @ Vh, atol=1e-4)


# --- the exercise cells of notebook 08 ------------------------------------------------------------------




def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    """The committed outputs say True for every proof, and the cells nbval compares print no
    floating-point values that depend on the machine."""
    checked = [c for c in notebook_code_cells("08_modern_gpt") if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 8
    text = "".join(o.get("text", "") for c in checked for o in c.outputs)
    assert not re.search(r": False\s*(\||$)", text, re.M) and text.count("True") >= 15, text  # no proof says False
    assert not re.search(r"\d\.\d{3,}", text), text  # no long decimals in compared output


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests("08_modern_gpt", CASES, ex, {"math": math, "torch": torch, "F": F})
