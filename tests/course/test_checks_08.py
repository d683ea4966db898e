"""The checks of notebook 08_modern_gpt: right answers (in every standard form) pass, public and hidden
cases; wrong ones fail naming the input (and the first difference); echoing the inputs fails;
unwritten says so; each step hands on yours or the package's piece; changing the inputs in place
cannot fool them. Then the notebook's step and exercise cells and outputs."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.attention import rotary
from mini_llm.course import checks as ex
from mini_llm.course.checks import nb08_modern_gpt as nb08
from mini_llm.model import MLP
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    assert_proofs_are_portable,
    contract_tests,
    notebook_tests,
    step_tests,
)

NOTEBOOK = "08_modern_gpt"
EPS = torch.finfo(torch.float32).eps

# --- step 1: rms_norm -----------------------------------------------------------------------------


def rms_norm(x, weight=None, eps=EPS):  # the notebook's
    y = x / (x.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()
    return y if weight is None else y * weight


def rms_norm_rsqrt(x, weight=None, eps=EPS):  # another correct form: float64, rsqrt, a gain of ones
    x64 = x.double()
    w = torch.ones(x.size(-1), dtype=torch.float64) if weight is None else weight.double()
    return (x64 * torch.rsqrt(x64.square().mean(-1, keepdim=True) + eps) * w).tolist()


def rms_norm_layernorm(x, weight=None, eps=EPS):  # wrong: takes the mean away first
    return rms_norm(x - x.mean(-1, keepdim=True), weight, eps)


def rms_norm_eps_outside(x, weight=None, eps=EPS):  # wrong: eps added to the root, not under it
    y = x / (x.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps)
    return y if weight is None else y * weight


# --- step 2: rope -----------------------------------------------------------------------------------


def rope(x, positions, base=10000.0):  # the notebook's: pairs as complex numbers
    half = x.size(-1) // 2
    theta = base ** (-torch.arange(half) * 2 / x.size(-1))
    angle = torch.as_tensor(positions, dtype=torch.float32).reshape(-1, 1) * theta
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1)


def rope_cos_sin_float64(x, positions, base=10000.0):  # another correct form: cos and sin in float64
    hs = x.size(-1)
    theta = base ** (-2 * torch.arange(hs // 2, dtype=torch.float64) / hs)
    angle = torch.as_tensor(positions, dtype=torch.float64)[:, None] * theta
    a, b = x[..., : hs // 2].double(), x[..., hs // 2:].double()
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], dim=-1)


def rope_neighbours(x, positions, base=10000.0):  # wrong: pairs (2i, 2i + 1), the other layout
    hs = x.size(-1)
    order = torch.cat([torch.arange(0, hs, 2), torch.arange(1, hs, 2)])
    out = torch.empty_like(x)
    out[..., order] = rotary(x[..., order], positions, base)
    return out


# --- step 3: RopeAttention ------------------------------------------------------------------------


class RopeAttention(nn.Module):  # the notebook's: explicit scores and mask
    def __init__(self, config):
        super().__init__()
        self.n_head, self.qk_norm, self.base = config.n_head, config.qk_norm, config.rope_base
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def heads(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        positions = torch.arange(T)
        return rope(q, positions, self.base), rope(k, positions, self.base), v

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.heads(x)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        return self.c_proj((F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C))


class RopeAttentionSDPA(RopeAttention):  # another correct form: the fused kernel, F.rms_norm
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        q, k = rope_cos_sin_float64(q, torch.arange(T), self.base).float(), rope_cos_sin_float64(k, torch.arange(T), self.base).float()
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class NormAfterRope(RopeAttention):  # wrong order? RMS norm and a rotation commute: still right
    def heads(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        q, k = rope(q, torch.arange(T), self.base), rope(k, torch.arange(T), self.base)
        return (rms_norm(q), rms_norm(k), v) if self.qk_norm else (q, k, v)


class NoQKNorm(RopeAttention):  # wrong: ignores config.qk_norm
    def __init__(self, config):
        super().__init__(config)
        self.qk_norm = False


class NoRope(RopeAttention):  # wrong: no rotation
    def heads(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        return (rms_norm(q), rms_norm(k), v) if self.qk_norm else (q, k, v)


class RopeOnValues(RopeAttention):  # wrong: turns the values too
    def heads(self, x):
        q, k, v = super().heads(x)
        return q, k, rope(v, torch.arange(v.size(2)), self.base)


class SeparateProjections(nn.Module):  # wrong layout: three matrices, so the package's weights do not load
    def __init__(self, config):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(config.n_embd, config.n_embd) for _ in range(3))
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(self.v(x))


# --- step 4: MyMLP --------------------------------------------------------------------------------


class MyMLP(nn.Module):  # the notebook's
    def __init__(self, config):
        super().__init__()
        self.kind, H = config.mlp, config.mlp_hidden
        self.c_fc = nn.Linear(config.n_embd, 2 * H if self.kind == "swiglu" else H, bias=config.bias)
        self.c_proj = nn.Linear(H, config.n_embd, bias=config.bias)

    def activation(self, h):
        if self.kind == "relu2":
            return torch.clamp(h, min=0) ** 2
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            return gate * torch.sigmoid(gate) * up
        return F.gelu(h, approximate="tanh")

    def forward(self, x):
        return self.c_proj(self.activation(self.c_fc(x)))


class MLPByHand(MyMLP):  # another correct form: GELU's tanh formula written out, ReLU² as h * relu(h)
    def activation(self, h):
        if self.kind == "gelu":
            return 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
        if self.kind == "relu2":
            return h * F.relu(h)
        return super().activation(h)


class ExactGELU(MyMLP):  # wrong: the erf GELU, not GPT-2's tanh form
    def activation(self, h):
        return F.gelu(h) if self.kind == "gelu" else super().activation(h)


class UpThenGate(MyMLP):  # wrong: takes the up path from the first half
    def activation(self, h):
        if self.kind == "swiglu":
            up, gate = h.chunk(2, dim=-1)
            return F.silu(gate) * up
        return super().activation(h)


class ReLUOnly(MyMLP):  # wrong: forgets to square
    def activation(self, h):
        return F.relu(h) if self.kind == "relu2" else super().activation(h)


# --- step 5: newton_schulz5 -----------------------------------------------------------------------

A, B, C = 3.4445, -4.7750, 2.0315


def newton_schulz5(G, steps=5):  # the notebook's: the wide side, a tiny epsilon
    X = G / (G.norm() + 1e-7)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    for _ in range(steps):
        S = X @ X.T
        X = A * X + (B * S + C * S @ S) @ X
    return X.T if tall else X


def newton_schulz_other_side(G, steps=5):  # another correct form: Xᵀ X on the right, no transpose, float64
    X = G.double() / torch.linalg.matrix_norm(G.double())
    for _ in range(steps):
        S = X.T @ X
        X = A * X + X @ (B * S + C * S @ S)
    return X


def newton_schulz_spectral(G, steps=5):  # wrong: divides by the largest singular value, not the Frobenius norm
    X = G / torch.linalg.matrix_norm(G, ord=2)
    for _ in range(steps):
        S = X @ X.T
        X = A * X + (B * S + C * S @ S) @ X
    return X


def newton_schulz_cubic(G, steps=5):  # wrong: the classic cubic, not the quintic
    X = G / G.norm()
    for _ in range(steps):
        X = 1.5 * X - 0.5 * X @ X.T @ X
    return X


# --- step 6: muon_step ------------------------------------------------------------------------------


def muon_step(weight, grad, buf, lr, momentum=0.95, weight_decay=0.0):  # the notebook's
    buf = momentum * buf + (1 - momentum) * grad
    update = (1 - momentum) * grad + momentum * buf
    weight = weight * (1 - lr * weight_decay)
    scale = math.sqrt(max(1.0, weight.size(0) / weight.size(1)))
    return weight - lr * scale * newton_schulz5(update), buf


def muon_step_in_place(weight, grad, buf, lr, momentum=0.95, weight_decay=0.0):  # another correct form: lerp_, in place
    buf.lerp_(grad, 1 - momentum)
    weight.mul_(1 - lr * weight_decay)
    weight.sub_(newton_schulz_other_side(grad.lerp(buf, momentum)).float(), alpha=lr * max(1.0, weight.size(0) / weight.size(1)) ** 0.5)
    return weight, buf


def muon_no_nesterov(weight, grad, buf, lr, momentum=0.95, weight_decay=0.0):  # wrong: steps along the buffer
    buf = momentum * buf + (1 - momentum) * grad
    weight = weight * (1 - lr * weight_decay)
    return weight - lr * math.sqrt(max(1.0, weight.size(0) / weight.size(1))) * newton_schulz5(buf), buf


def muon_no_shape_scale(weight, grad, buf, lr, momentum=0.95, weight_decay=0.0):  # wrong: no sqrt(rows / cols)
    buf = momentum * buf + (1 - momentum) * grad
    update = (1 - momentum) * grad + momentum * buf
    return weight * (1 - lr * weight_decay) - lr * newton_schulz5(update), buf


def muon_decay_after(weight, grad, buf, lr, momentum=0.95, weight_decay=0.0):  # wrong: decays by weight_decay alone
    new, buf = muon_step(weight, grad, buf, lr, momentum, 0.0)
    return new * (1 - weight_decay), buf


def muon_old_buffer(weight, grad, buf, lr, momentum=0.95, weight_decay=0.0):  # wrong: the look-ahead with the old buffer
    update = (1 - momentum) * grad + momentum * buf
    buf = momentum * buf + (1 - momentum) * grad
    scale = math.sqrt(max(1.0, weight.size(0) / weight.size(1)))
    return weight * (1 - lr * weight_decay) - lr * scale * newton_schulz5(update), buf


# --- exercises ---------------------------------------------------------------------------------------


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


def swiglu(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_by_hand(x, w_gate, w_up, w_down):  # another correct form: sigmoid written out, F.linear, a list back
    gate = F.linear(x, w_gate)
    return F.linear(gate * torch.sigmoid(gate) * F.linear(x, w_up), w_down).tolist()


def swiglu_untransposed(x, w_gate, w_up, w_down):  # (out, in) weights used as (in, out): raises on shapes
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


def max_attention_weight(head_size, n_keys):
    return 1 / (1 + (n_keys - 1) * math.exp(-2 * math.sqrt(head_size)))


def max_attention_weight_softmax(head_size, n_keys):  # another correct form: the softmax of the extreme scores
    bound = head_size ** 0.5
    scores = torch.full((n_keys,), -bound, dtype=torch.float64)
    scores[0] = bound
    return torch.softmax(scores, dim=0)[0]


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_rms_norm: ([rms_norm, rms_norm_rsqrt],
                        [rms_norm_layernorm, rms_norm_eps_outside, lambda x, weight=None, eps=EPS: rms_norm(x, None, eps),
                         lambda x, weight=None, eps=EPS: rms_norm(x, weight, 1e-5)],
                        lambda x, weight=None, eps=EPS: x),
    ex.check_rope: ([rope, rope_cos_sin_float64],
                    [rope_neighbours, lambda x, p, base=1e4: rope(x, -torch.as_tensor(p), base),
                     lambda x, p, base=1e4: rope(x, torch.as_tensor(p) + 1, base), lambda x, p, base=1e4: rope(x, p)],
                    lambda x, p, base=1e4: x),
    ex.check_rope_attention: ([RopeAttention, RopeAttentionSDPA, NormAfterRope],
                              [NoQKNorm, NoRope, RopeOnValues, SeparateProjections], SeparateProjections),
    ex.check_mlp_options: ([MyMLP, MLPByHand], [ExactGELU, UpThenGate, ReLUOnly], nn.Identity),
    ex.check_newton_schulz: ([newton_schulz5, newton_schulz_other_side],
                             [newton_schulz_spectral, newton_schulz_cubic, lambda G, steps=5: newton_schulz5(G, max(steps - 1, 0)),
                              lambda G, steps=5: newton_schulz5(G, steps) * G.norm()],
                             lambda G, steps=5: G),
    ex.check_muon_step: ([muon_step, muon_step_in_place],
                         [muon_no_nesterov, muon_no_shape_scale, muon_decay_after, muon_old_buffer],
                         lambda weight, grad, buf, lr, momentum=0.95, weight_decay=0.0: (weight, buf)),
    ex.check_rope_interleaved: ([rope_interleaved, rope_interleaved_complex, rope_interleaved_in_place],
                                [lambda x, positions, base: rotary(x, positions, base), rope_interleaved_clockwise,
                                 rope_interleaved_slow_theta, rope_interleaved_but_pairs_stacked,
                                 lambda x, positions, base: rope_interleaved(x, positions + 1, base)],
                                lambda x, positions, base: x),
    ex.check_swiglu: ([swiglu, swiglu_by_hand],
                      [lambda x, g, u, d: (F.silu(x @ u.T) * (x @ g.T)) @ d.T, lambda x, g, u, d: (F.gelu(x @ g.T) * (x @ u.T)) @ d.T,
                       lambda x, g, u, d: ((x @ g.T) * (x @ u.T)) @ d.T, swiglu_untransposed,
                       lambda x, g, u, d: swiglu(x, g, u, d) * 1.001],
                      lambda x, w_gate, w_up, w_down: x),
    ex.check_max_attention_weight: ([max_attention_weight, max_attention_weight_softmax],
                                    [lambda hs, n: 1 / (1 + (n - 1) * math.exp(-math.sqrt(hs))),  # a gap of sqrt(hs) only
                                     lambda hs, n: 1 / (1 + (n - 1) * math.exp(-2 * hs)),  # hs, not its root
                                     lambda hs, n: 1 / (1 + n * math.exp(-2 * math.sqrt(hs)))],  # n other keys
                                    lambda hs, n: hs),
}

(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_rms_norm: nb08.rms_norm, ex.check_rope: rotary, ex.check_rope_attention: nb08.PackageRopeAttention,
         ex.check_mlp_options: MLP, ex.check_newton_schulz: nb08.newton_schulz5, ex.check_muon_step: nb08.muon_step}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_checks_leave_the_global_rng_alone():
    assert_checks_leave_the_global_rng_alone(CASES)


def test_the_stand_ins_are_the_package():
    """The pieces handed on when a step fails compute what the package's model and optimizer do."""
    from mini_llm.attention import rotary_angles
    from mini_llm.model import GPTConfig, MiniGPT
    from mini_llm.muon import Muon

    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    w = torch.rand(16, generator=torch.Generator().manual_seed(1)) + 0.5
    assert torch.allclose(nb08.rms_norm(x, w), nn.RMSNorm(16)(x) * w, atol=1e-6)
    torch.manual_seed(0)
    model = MiniGPT(GPTConfig(vocab_size=50, block_size=8, n_embd=16, n_head=2, n_layer=1, pos="rope", qk_norm=True)).eval()
    attention = nb08.PackageRopeAttention(model.config).eval()
    attention.load_state_dict(model.blocks[0].attn.state_dict())
    h = torch.randn(1, 8, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(attention(h), model.blocks[0].attn(h, rope=rotary_angles(torch.arange(8), 8))[0], atol=1e-6)
    W, g = torch.randn(6, 4), torch.randn(6, 4)
    p = nn.Parameter(W.clone())
    p.grad = g.clone()
    Muon([p], lr=0.02).step()
    assert torch.allclose(nb08.muon_step(W, g, torch.zeros_like(W), 0.02)[0], p.detach(), atol=1e-7)


def test_the_first_difference_is_named():
    message = ex.check_rope_attention(NoQKNorm).message
    assert message.startswith("RopeAttention(config(n_embd=32, n_head=4, qk_norm=True, bias=True), "
                               "x (2, 7, 32)): expected tensor(2, 7, 32)"), message
    assert "first difference at [0, 1, " in message, message
    message = ex.check_muon_step(muon_no_nesterov).message
    assert "muon_step(W (16, 32) and 3 gradients, 0.02, 0.95, 0.0): expected after each" in message
    assert "got after step 2, the weight at [" in message, message
    message = ex.check_muon_step(muon_decay_after).message
    assert "got after step 1, the weight at [0, 0]: expected " in message, message
    message = ex.check_newton_schulz(newton_schulz_cubic).message
    assert message.startswith("newton_schulz5(G (8, 16) of norm "), message
    assert "first difference at [0, 0]" in message, message


def test_feedback_is_specific():
    result = ex.check_rope_attention(SeparateProjections)
    assert "raised RuntimeError: your RopeAttention could not load the package's weights" in result.message, result.message
    result = ex.check_mlp_options(lambda config: nn.Identity())
    assert "raised RuntimeError: your MyMLP could not load the package's weights" in result.message, result.message
    result = ex.check_rms_norm(lambda x, weight=None, eps=EPS: None)
    assert "got None" in result.message
    result = ex.check_rope_interleaved(lambda x, positions, base: rotary(x, positions, base))
    assert result.message.startswith("rope interleaved(x (3, 4), positions [0, 1, 2], 10000.0): expected ")
    assert "channels 2i and 2i+1" in result.message
    result = ex.check_swiglu(swiglu_untransposed)
    assert "raised RuntimeError" in result.message and "x @ w_gate.T" in result.message, result.message
    result = ex.check_max_attention_weight(CASES[ex.check_max_attention_weight][1][0])
    assert result.message.startswith("max attention weight(64, 2): expected 0.9999998"), result.message


def test_mutating_the_inputs_cannot_fool_a_check():
    """Expected values are computed before the call and the function gets copies: writing into
    its inputs changes nothing for the next cases, and a right in-place answer still passes."""
    assert ex.check_rope_interleaved(rope_interleaved_in_place, hidden=True)
    assert ex.check_muon_step(muon_step_in_place, hidden=True)

    def zero_then_echo(x, positions, base):
        x.zero_()
        return x

    assert not ex.check_rope_interleaved(zero_then_echo, hidden=True)


def test_the_expected_values_are_what_the_tasks_say():
    """Independent forms agree with the checks' references: the interleaved RoPE depends only on
    relative positions, and QK-norm's bound is reached by the extreme scores."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)

    def score(m, n):
        return (rope_interleaved(q, torch.tensor([m]), 1e4) * rope_interleaved(k, torch.tensor([n]), 1e4)).sum().item()

    assert math.isclose(score(9, 4), score(105, 100), abs_tol=1e-4)
    assert not math.isclose(score(9, 4), score(9, 5), abs_tol=1e-4)
    hs = 16
    key = F.rms_norm(torch.randn(hs, generator=g), (hs,))
    keys = torch.stack([key] + [-key] * 4)  # one key along the query, four against it
    weights = torch.softmax(keys @ key / math.sqrt(hs), dim=0)
    assert math.isclose(weights[0].item(), max_attention_weight(hs, 5), rel_tol=1e-4)


# --- the notebook's cells ------------------------------------------------------------------------------


def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    assert_proofs_are_portable(NOTEBOOK, 8, 15, false_values=True)  # ARCHS prints qk_norm False


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex, {"math": math, "torch": torch, "F": F, "nn": nn})
