"""Checks of notebook 08 (the modern GPT). Steps: RMSNorm, rotary positions, attention with RoPE and
QK-norm, the MLP (GELU, ReLU², SwiGLU), Newton-Schulz, the Muon step. Exercises: interleaved RoPE,
SwiGLU with three matrices, the most attention QK-norm allows on one key.

Each step is compared with the package (`nn.RMSNorm` as `model.norm_layer` builds it,
`attention.rotary`, `model.CausalSelfAttention`, `model.MLP`, `muon.newton_schulz`, `muon.Muon`)
to a stated tolerance: correct code may sum in another order than the package's."""

import copy
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.course.checks.harness import Label, Result, Verdict, close, run_cases, short, step

EPS = torch.finfo(torch.float32).eps  # nn.RMSNorm's default epsilon for float32


def _randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _as_tensor(got):
    """What a piece returned, as a tensor when it is one (or a nested list of numbers); else as it is,
    so the feedback shows it."""
    if isinstance(got, torch.Tensor):
        return got.detach()
    try:
        return torch.as_tensor(got)
    except (TypeError, ValueError, RuntimeError):
        return got


def _same(tol: float):
    """same() for run_cases: a tensor of the expected shape whose values are within `tol`."""
    return lambda got, want: isinstance(got, torch.Tensor) and close(got, want, tol)


def _tensor_run(fn):
    """run for run_cases: fn's inputs are Labels (shown by their text), passed as fresh copies."""
    return lambda *args: _as_tensor(fn(*(copy.deepcopy(a.value if isinstance(a, Label) else a) for a in args)))


def _first_off(got: torch.Tensor, want: torch.Tensor, tol: float) -> str:
    """'[i, j]: expected a, got b' at the first entry off by more than tol (the check's tolerance)."""
    off = ~torch.isclose(got.double(), want.double(), rtol=tol, atol=tol)
    index = tuple(off.nonzero()[0].tolist())
    return f"[{', '.join(map(str, index))}]: expected {want[index].item():.6g}, got {got[index].item():.6g}"


# --- step 1: RMSNorm ----------------------------------------------------------------------------


def rms_norm(x, weight=None, eps=EPS):
    """mini_llm's RMSNorm as a function: what nn.RMSNorm (norm="rmsnorm") computes."""
    return F.rms_norm(x, (x.size(-1),), weight, eps)


def check_rms_norm(fn, hidden: bool = False) -> Result:
    """Step: fn(x, weight=None, eps=float32's epsilon) -> x / sqrt(mean(x², last dim) + eps) * weight,
    the package's norm for norm="rmsnorm" (nn.RMSNorm with that gain and eps), within 1e-5."""
    from mini_llm.model import GPTConfig, norm_layer

    def case(shape, seed, scale=1.0, shift=0.0, gain=True, eps=None):
        x = _randn(*shape, seed=seed, scale=scale) + shift
        C = shape[-1]
        norm = norm_layer(GPTConfig(n_embd=C, n_head=1, norm="rmsnorm", norm_eps=eps))
        args = [Label(x, f"x {tuple(shape)}" + (f" of size ~{scale:g}" if scale != 1.0 else ""))]
        if gain:
            with torch.no_grad():
                norm.weight.copy_(1 + 0.5 * _randn(C, seed=seed + 100))
            args.append(Label(norm.weight.detach().clone(), f"weight ({C},)"))
        if eps is not None:
            args.append(eps)
        with torch.no_grad():
            return tuple(args), norm(x)

    cases = [case((2, 5, 16), 0, scale=3.0, shift=1.0), case((4, 8), 1, gain=False), case((3, 6), 2, eps=1e-2)]
    hidden_cases = [case((1, 7, 32), 3, scale=1e-4, gain=False), case((2, 3, 4, 8), 4, eps=1e-5),
                    case((5, 1), 5, scale=10.0), case((2, 9, 24), 6, scale=1e-3)]
    return step("rms_norm", fn, rms_norm, run_cases(
        "rms_norm", _tensor_run(fn), cases, "divide each position's vector (the last dimension) by its root mean square, "
        "sqrt(mean(x ** 2) + eps), the eps inside the square root; no mean is subtracted and there is no bias. "
        "Then multiply by weight, channel by channel, when one is given. The default eps is "
        "torch.finfo(torch.float32).eps.", _same(1e-5), hidden_cases=hidden_cases, hidden=hidden))


# --- step 2: rotary positions ----------------------------------------------------------------------


def _rope_case(reference, shape, positions, base, seed):
    """(args, want) of a rotation check: x of `shape`, its `positions` and `base`, and `reference`'s answer."""
    x, positions = _randn(*shape, seed=seed), torch.tensor(list(positions))
    return ((Label(x, f"x {tuple(shape)}"), Label(positions, f"positions {short(positions.tolist(), 40)}"), base),
            reference(x, positions, base))


def check_rope(fn, hidden: bool = False) -> Result:
    """Step: fn(x, positions, base) -> x (..., T, hs) with each channel pair (i, i + hs/2) of
    position p turned by the angle p * base^(-2i/hs): the package's `attention.rotary`, within 1e-4
    (an angle of p radians in float32 is good to about p * 1e-7)."""
    from mini_llm.attention import rotary

    case = functools.partial(_rope_case, rotary)

    cases = [case((3, 4), [0, 1, 2], 10000.0, 0), case((2, 4, 10, 8), range(10), 10000.0, 1),
             case((4, 6), [100, 101, 102, 103], 500.0, 2)]
    hidden_cases = [case((1, 6, 16), range(10, 16), 10000.0, 3), case((2, 3, 4, 2), [5, 1, 0, 9], 500.0, 4),
                    case((2, 4, 32), [3, 3, 3, 3], 10000.0, 5), case((1, 1, 7, 12), range(-3, 4), 50.0, 6)]
    return step("rope", fn, rotary, run_cases(
        "rope", _tensor_run(fn), cases, "pair channel i with channel i + hs/2 (the first half with the second half, not "
        "neighbours); the pair's speed is theta_i = base ** (-2 * i / hs), its angle at position p is p * theta_i, "
        "and the turn is counter-clockwise: (a cos - b sin, a sin + b cos) for the pair (a, b). Position 0 is not "
        "turned at all.", _same(1e-4), hidden_cases=hidden_cases, hidden=hidden))


# --- step 3: attention with RoPE and QK-norm --------------------------------------------------------


def _package_attention():
    """mini_llm's attention as the notebook uses it: cls(config), forward(x (B, T, C)) -> (B, T, C),
    rotary positions 0 .. T - 1 and QK-norm when config.qk_norm (model.CausalSelfAttention)."""
    from mini_llm.attention import rotary_angles
    from mini_llm.model import CausalSelfAttention

    class RopeAttention(CausalSelfAttention):
        def __init__(self, config):
            super().__init__(config)
            self.rope_base = config.rope_base

        def forward(self, x):
            T, hs = x.size(1), x.size(2) // self.n_head
            return super().forward(x, rope=rotary_angles(torch.arange(T), hs, self.rope_base, x.device, x.dtype))[0]

    return RopeAttention


PackageRopeAttention = _package_attention()


def _config_text(config, names) -> str:
    """The options that matter here, shortly: "config(n_embd=32, n_head=4, qk_norm=True, bias=False)"."""
    defaults = {"rope_base": 10000.0}
    shown = [f"{n}={getattr(config, n)!r}" for n in names if defaults.get(n, object()) != getattr(config, n)]
    return f"config({', '.join(shown)})"


def _module_case(package_cls, config, names, x_shape, seed, scale_weights=1.0):
    """((config, x), expected): a package module with random weights (scaled, so every piece
    matters), its state_dict travelling with the config for the learner's module to load."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = package_cls(config).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.mul_(scale_weights)
            else:
                p.add_(0.3 * _randn(*p.shape, seed=seed + 7))  # biases and gains off their initial values
    x = _randn(*x_shape, seed=seed + 1)
    with torch.no_grad():
        want = module(x)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    return ((Label((config, state), _config_text(config, names)), Label(x, f"x {tuple(x_shape)}")), want)


def _module_run(cls, what: str):
    """run for run_cases: build cls(config), load the package module's weights (strict), call it on x."""

    def run(spec, x):
        config, state = spec.value
        with torch.random.fork_rng(devices=[]):  # building it draws initial weights: the learner's RNG is left alone
            module = cls(copy.deepcopy(config))
        try:
            module.load_state_dict(copy.deepcopy(state))
        except RuntimeError as e:
            raise RuntimeError(f"your {what} could not load the package's weights: {str(e).splitlines()[-1].strip()}") from None
        module.eval()
        with torch.no_grad():
            return _as_tensor(module(x.value.clone()))

    return run


def check_rope_attention(cls, hidden: bool = False) -> Result:
    """Step: cls(config) an nn.Module with `c_attn` (C -> 3C: q, k, v) and `c_proj` (C -> C),
    biases as config.bias; forward(x (B, T, C)) -> (B, T, C): causal multi-head attention, queries
    and keys RMS-normalised per head when config.qk_norm, then turned by RoPE at positions
    0 .. T - 1 (config.rope_base). The package's CausalSelfAttention with its weights, within 1e-5."""
    from mini_llm.model import GPTConfig

    names = ("n_embd", "n_head", "qk_norm", "bias", "rope_base")

    def case(C, nh, qk, bias, B, T, seed, base=10000.0, scale=2.0):
        config = GPTConfig(vocab_size=2, block_size=T, n_embd=C, n_head=nh, pos="rope", qk_norm=qk, bias=bias,
                           rope_base=base)
        return _module_case(PackageRopeAttention, config, names, (B, T, C), seed, scale)

    cases = [case(32, 4, True, True, 2, 7, 0), case(16, 2, False, True, 1, 5, 1), case(24, 3, True, False, 2, 6, 2)]
    hidden_cases = [case(8, 1, False, False, 1, 9, 3, base=100.0), case(64, 8, True, True, 1, 12, 4, scale=8.0),
                    case(16, 4, False, True, 3, 1, 5), case(32, 2, True, False, 2, 16, 6, base=500.0)]
    return step("RopeAttention", cls, PackageRopeAttention, run_cases(
        "RopeAttention", _module_run(cls, "RopeAttention"), cases,
        "c_attn gives q, k, v side by side (in that order); split each into n_head heads of hs = C // n_head "
        "channels, (B, nh, T, hs). With config.qk_norm, RMS-normalise q and k over hs (no gain) BEFORE turning "
        "them by RoPE at positions 0 .. T - 1 with config.rope_base; v is neither normalised nor turned. Then "
        "causal softmax(q k^T / sqrt(hs)) v, the heads side by side again, c_proj.",
        _same(1e-5), hidden_cases=hidden_cases, hidden=hidden))


# --- step 4: the MLP ----------------------------------------------------------------------------


def check_mlp_options(cls, hidden: bool = False) -> Result:
    """Step: cls(config) with `c_fc` (C -> H, or C -> 2H for SwiGLU: the gate's H outputs first, then
    the up path's) and `c_proj` (H -> C), H = config.mlp_hidden; forward(x) with GELU (tanh form),
    ReLU² or SwiGLU as config.mlp says: the package's MLP with its weights, within 1e-5."""
    from mini_llm.model import MLP, GPTConfig

    names = ("n_embd", "mlp", "bias")

    def case(C, kind, bias, shape, seed):
        config = GPTConfig(vocab_size=2, n_embd=C, mlp=kind, bias=bias)
        return _module_case(MLP, config, names, (*shape, C), seed)

    cases = [case(32, "gelu", True, (2, 7), 0), case(32, "relu2", True, (2, 7), 1), case(32, "swiglu", False, (2, 7), 2)]
    hidden_cases = [case(16, "swiglu", True, (1, 3), 3), case(48, "relu2", False, (3, 2), 4),
                    case(8, "gelu", False, (5,), 5), case(64, "swiglu", False, (1, 4), 6)]
    return step("MyMLP", cls, MLP, run_cases(
        "MyMLP", _module_run(cls, "MyMLP"), cases,
        "h = c_fc(x); GELU is F.gelu(h, approximate='tanh'); ReLU² is relu(h) ** 2; SwiGLU splits h into the "
        "gate (the first H channels) and the up path (the last H) and computes silu(gate) * up. Then c_proj. "
        "c_fc has 2H outputs only for SwiGLU, H = config.mlp_hidden, and both layers take bias=config.bias.",
        _same(1e-5), hidden_cases=hidden_cases, hidden=hidden))


# --- step 5: Newton-Schulz ------------------------------------------------------------------------


def newton_schulz5(G, steps=5):
    """mini_llm's Newton-Schulz iteration (muon.newton_schulz) in float32."""
    from mini_llm.muon import newton_schulz

    return newton_schulz(G, steps, dtype=torch.float32)


def check_newton_schulz(fn, hidden: bool = False) -> Result:
    """Step: fn(G, steps) -> G / ||G|| (Frobenius), then `steps` quintic iterations
    X <- a X + (b A + c A²) X with A = X Xᵀ, (a, b, c) = (3.4445, -4.7750, 2.0315): the package's
    muon.newton_schulz in float32, within 1e-4 (any side: X Xᵀ or Xᵀ X, with or without a tiny
    epsilon in the norm)."""
    from mini_llm.muon import newton_schulz

    def case(m, n, steps, seed, scale=1.0):
        G = _randn(m, n, seed=seed, scale=scale)
        return ((Label(G, f"G {(m, n)} of norm {G.norm().item():.3g}"), steps), newton_schulz(G, steps, torch.float32))

    cases = [case(8, 16, 5, 0), case(16, 8, 5, 1), case(6, 6, 2, 2, scale=30.0)]
    hidden_cases = [case(4, 12, 0, 3), case(24, 10, 1, 4), case(1, 7, 5, 5), case(32, 64, 5, 6, scale=1e-2),
                    case(20, 20, 8, 7)]
    return step("newton_schulz5", fn, newton_schulz5, run_cases(
        "newton_schulz5", _tensor_run(fn), cases, "first X = G / G.norm() (the Frobenius norm, so no singular value is above "
        "1), then `steps` times: A = X @ X.T, X = a * X + (b * A + c * A @ A) @ X. For a tall G (more rows than "
        "columns) that A is the big square: transpose first, iterate, transpose back (the same result, cheaper). "
        "With steps = 0 return the normalised G.", _same(1e-4), hidden_cases=hidden_cases, hidden=hidden))


# --- step 6: the Muon step --------------------------------------------------------------------------


def muon_step(weight, grad, buf, lr, momentum=0.95, weight_decay=0.0):
    """mini_llm's Muon (muon.Muon, Nesterov, float32 iteration) for one matrix, one step:
    (the new weight, the new momentum buffer)."""
    from mini_llm.muon import Muon

    p = nn.Parameter(weight.detach().clone())
    p.grad = grad.detach().clone()
    optimizer = Muon([p], lr=lr, momentum=momentum, weight_decay=weight_decay, ns_dtype=torch.float32)
    optimizer.state[p]["momentum_buffer"] = buf.detach().clone()
    optimizer.step()
    return p.detach(), optimizer.state[p]["momentum_buffer"]


def check_muon_step(fn, hidden: bool = False) -> Result:
    """Step: fn(weight, grad, buf, lr, momentum, weight_decay) -> (weight, buf) after one Muon step
    (buf: the momentum buffer, zeros before the first step). Run for a few steps with fresh
    gradients, each step's weight and buffer are the package's Muon's within 1e-5."""
    from mini_llm.muon import Muon

    def case(m, n, steps, lr, momentum, weight_decay, seed):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(m, n, generator=g) / math.sqrt(n)
        grads = [torch.randn(m, n, generator=g) * 0.1 for _ in range(steps)]
        p = nn.Parameter(W.clone())
        optimizer = Muon([p], lr=lr, momentum=momentum, weight_decay=weight_decay, ns_dtype=torch.float32)
        trajectory = []
        for grad in grads:
            p.grad = grad.clone()
            optimizer.step()
            trajectory.append((p.detach().clone(), optimizer.state[p]["momentum_buffer"].clone()))
        want = Verdict(True, f"after each of the {steps} steps the package Muon's weight and momentum buffer")
        return ((Label((W, grads, trajectory), f"W {(m, n)} and {steps} gradients"), lr, momentum, weight_decay), want)

    def run(spec, lr, momentum, weight_decay):
        W, grads, trajectory = spec.value
        weight, buf = W.clone(), torch.zeros_like(W)
        for i, (grad, (want_w, want_b)) in enumerate(zip(grads, trajectory), 1):
            got = fn(weight.clone(), grad.clone(), buf.clone(), lr, momentum, weight_decay)
            try:
                weight, buf = (torch.as_tensor(t).detach() for t in got)
            except (TypeError, ValueError):
                return Verdict(False, f"{short(got, 60)}: not a pair (the new weight, the new momentum buffer)")
            for name, have, want in (("buffer", buf, want_b), ("weight", weight, want_w)):
                if have.shape != want.shape:
                    return Verdict(False, f"after step {i}, a {name} of shape {tuple(have.shape)}, not {tuple(want.shape)}")
                if not close(have, want, 1e-5):
                    return Verdict(False, f"after step {i}, the {name} at {_first_off(have, want, 1e-5)}")
        return Verdict(True, "right")

    cases = [case(16, 32, 3, 0.02, 0.95, 0.0, 0), case(32, 16, 3, 0.02, 0.95, 0.0, 1), case(12, 12, 4, 0.05, 0.9, 0.1, 2)]
    hidden_cases = [case(8, 24, 5, 0.02, 0.95, 0.01, 3), case(48, 8, 2, 0.1, 0.5, 0.0, 4), case(1, 6, 3, 0.02, 0.95, 0.0, 5),
                    case(20, 20, 6, 0.01, 0.99, 0.5, 6)]
    return step("muon_step", fn, muon_step, run_cases(
        "muon_step", run, cases, "buf = momentum * buf + (1 - momentum) * grad; the Nesterov look-ahead "
        "u = (1 - momentum) * grad + momentum * buf (the NEW buf); weight *= 1 - lr * weight_decay; then "
        "weight -= lr * sqrt(max(1, rows / cols)) * newton_schulz5(u). Return both: (weight, buf).",
        lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


# --- exercises ----------------------------------------------------------------------------------


def check_rope_interleaved(fn, hidden: bool = False) -> Result:
    """fn(x, positions, base) -> x (..., T, hs) with each channel pair (2i, 2i + 1) of position p
    rotated by the angle p * base^(-2i/hs): RoPE in the interleaved layout of the RoFormer paper
    and Meta's Llama code (the package pairs i with i + hs/2 instead)."""
    from mini_llm.attention import rotary

    def interleaved(x, positions, base):
        hs = x.size(-1)
        order = torch.cat([torch.arange(0, hs, 2), torch.arange(1, hs, 2)])  # pair (2i, 2i+1) -> (i, i + hs/2)
        out = torch.empty_like(x)
        out[..., order] = rotary(x[..., order], positions, base)
        return out

    case = functools.partial(_rope_case, interleaved)

    cases = [case((3, 4), [0, 1, 2], 10000.0, 0), case((2, 2, 5, 8), range(5), 10000.0, 1),
             case((4, 6), [7, 8, 9, 10], 100.0, 2)]
    hidden_cases = [case((1, 6, 16), range(10, 16), 10000.0, 3), case((2, 3, 4, 2), [5, 1, 0, 9], 500.0, 4),
                    case((2, 4, 32), [3, 3, 3, 3], 10000.0, 5), case((1, 1, 7, 12), range(20, 27), 50.0, 6)]
    return run_cases("rope interleaved", _tensor_run(fn), cases, "channels 2i and 2i+1 are one 2-D point (x, y); turn it by the "
                  "angle a = p * base ** (-2 * i / hs), counter-clockwise: (x cos a - y sin a, x sin a + y cos a), "
                  "and put the two results back in channels 2i and 2i+1. Pair 0 turns fastest (one radian per "
                  "position); position 0 is not turned at all.", _same(1e-4), hidden_cases=hidden_cases, hidden=hidden)


def check_swiglu(fn, hidden: bool = False) -> Result:
    """fn(x, w_gate, w_up, w_down) -> SwiGLU's output (..., C): silu(x W_gate^T) * (x W_up^T), then
    times W_down^T; the weights in nn.Linear's (out, in) layout, no biases."""

    def case(batch, C, H, seed):
        x = _randn(*batch, C, seed=seed)
        w_gate, w_up = _randn(H, C, seed=seed + 100, scale=C ** -0.5), _randn(H, C, seed=seed + 200, scale=C ** -0.5)
        w_down = _randn(C, H, seed=seed + 300, scale=H ** -0.5)
        want = F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)
        return ((Label(x, f"x {tuple(x.shape)}"), Label(w_gate, f"w_gate {(H, C)}"), Label(w_up, f"w_up {(H, C)}"),
                 Label(w_down, f"w_down {(C, H)}")), want)

    cases = [case((1,), 4, 6, 0), case((2, 3), 8, 12, 1), case((5,), 6, 16, 2)]
    hidden_cases = [case((), 5, 7, 3), case((2, 2, 5), 16, 40, 4), case((3,), 12, 8, 5)]
    return run_cases("swiglu", _tensor_run(fn), cases, "three matrix products: gate = x @ w_gate.T and up = x @ w_up.T (both "
                  "(..., H)); only the gate goes through SiLU, silu(g) = g * sigmoid(g); multiply the two element "
                  "by element, then @ w_down.T brings the result back to (..., C).",
                  _same(1e-5), hidden_cases=hidden_cases, hidden=hidden)


def check_max_attention_weight(fn, hidden: bool = False) -> Result:
    """fn(head_size, n_keys) -> the largest attention weight one key can get when every score lies
    in [-sqrt(head_size), sqrt(head_size)] (QK-norm's bound): 1 / (1 + (n_keys - 1) e^(-2 sqrt(hs)))."""

    def want(hs, n):
        return 1 / (1 + (n - 1) * math.exp(-2 * math.sqrt(hs)))

    cases = [((64, 2), want(64, 2)), ((16, 10), want(16, 10)), ((4, 128), want(4, 128))]
    hidden_cases = [((hs, n), want(hs, n)) for hs, n in ((1, 1), (64, 1000), (128, 5), (8, 3), (2, 50_000))]

    def same(got, want):
        if isinstance(got, (bool, str)) or got is None:
            return False
        return math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-12)

    return run_cases("max attention weight", fn, cases, "the weight of key j is e^(s_j) / sum_i e^(s_i). It is "
                  "largest when s_j is as high as it can be and every other score as low as it can be; the bound "
                  "on a score is sqrt(head_size) either way, and there are n_keys - 1 other keys.",
                  same, hidden_cases=hidden_cases, hidden=hidden)
