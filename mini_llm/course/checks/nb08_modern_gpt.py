"""Checks of notebook 08 (the modern GPT): interleaved RoPE, SwiGLU, Newton-Schulz orthogonalisation."""

import copy

import torch

from mini_llm.course.checks.harness import Label, Result, close, run_cases, short


def _randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _rounded(value) -> "Label":
    """A returned or expected tensor with its values rounded in the feedback (4 significant digits)."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return Label(value, short(value))
    values = [f"{v:.4g}" for v in value.detach().double().flatten()[:6].tolist()]
    more = ", ..." if value.numel() > 6 else ""
    return Label(value, f"tensor{tuple(value.shape)} [{', '.join(values)}{more}]")


def _tensor_check(fn, tol: float):
    """(run, same) for run_cases: fn's inputs are _Labels (shown by their text), passed as fresh copies;
    its result must be a tensor (or nested list) of the expected shape and values."""

    def run(*args):
        got = fn(*(copy.deepcopy(a.value if isinstance(a, Label) else a) for a in args))
        return _rounded(got)

    def same(got, want):
        got = got.value
        if isinstance(got, (bool, str, dict)) or got is None:
            return False
        return close(torch.as_tensor(got).detach(), want.value, tol)

    return run, same


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

    def case(shape, positions, base, seed):
        x, positions = _randn(*shape, seed=seed), torch.tensor(list(positions))
        return ((Label(x, f"x {tuple(shape)}"), Label(positions, f"positions {positions.tolist()}"), base),
                _rounded(interleaved(x, positions, base)))

    cases = [case((3, 4), [0, 1, 2], 10000.0, 0), case((2, 2, 5, 8), range(5), 10000.0, 1),
             case((4, 6), [7, 8, 9, 10], 100.0, 2)]
    hidden_cases = [case((1, 6, 16), range(10, 16), 10000.0, 3), case((2, 3, 4, 2), [5, 1, 0, 9], 500.0, 4),
                    case((2, 4, 32), [3, 3, 3, 3], 10000.0, 5), case((1, 1, 7, 12), range(20, 27), 50.0, 6)]
    run, same = _tensor_check(fn, 1e-5)
    return run_cases("rope interleaved", run, cases, "channels 2i and 2i+1 are one 2-D point (x, y); turn it by the "
                  "angle a = p * base ** (-2 * i / hs), counter-clockwise: (x cos a - y sin a, x sin a + y cos a), "
                  "and put the two results back in channels 2i and 2i+1. Pair 0 turns fastest (one radian per "
                  "position); position 0 is not turned at all.", same, hidden_cases=hidden_cases, hidden=hidden)


def check_swiglu(fn, hidden: bool = False) -> Result:
    """fn(x, w_gate, w_up, w_down) -> SwiGLU's output (..., C): silu(x W_gate^T) * (x W_up^T), then
    times W_down^T; the weights in nn.Linear's (out, in) layout, no biases."""
    import torch.nn.functional as F

    def case(batch, C, H, seed):
        x = _randn(*batch, C, seed=seed)
        w_gate, w_up = _randn(H, C, seed=seed + 100, scale=C ** -0.5), _randn(H, C, seed=seed + 200, scale=C ** -0.5)
        w_down = _randn(C, H, seed=seed + 300, scale=H ** -0.5)
        want = F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)
        return ((Label(x, f"x {tuple(x.shape)}"), Label(w_gate, f"w_gate {(H, C)}"), Label(w_up, f"w_up {(H, C)}"),
                 Label(w_down, f"w_down {(C, H)}")), _rounded(want))

    cases = [case((1,), 4, 6, 0), case((2, 3), 8, 12, 1), case((5,), 6, 16, 2)]
    hidden_cases = [case((), 5, 7, 3), case((2, 2, 5), 16, 40, 4), case((3,), 12, 8, 5)]
    run, same = _tensor_check(fn, 1e-5)
    return run_cases("swiglu", run, cases, "three matrix products: gate = x @ w_gate.T and up = x @ w_up.T (both "
                  "(..., H)); only the gate goes through SiLU, silu(g) = g * sigmoid(g); multiply the two element "
                  "by element, then @ w_down.T brings the result back to (..., C).",
                  same, hidden_cases=hidden_cases, hidden=hidden)


def check_orthogonalize(fn, hidden: bool = False) -> Result:
    """fn(G, steps) -> G divided by its Frobenius norm, then `steps` cubic Newton-Schulz iterations
    X <- 1.5 X - 0.5 X X^T X (which converge to U V^T for G = U S V^T)."""

    def case(m, n, steps, seed, scale=1.0):
        G = _randn(m, n, seed=seed, scale=scale)
        X = G / G.norm()
        for _ in range(steps):
            X = 1.5 * X - 0.5 * X @ X.T @ X
        return ((Label(G, f"G {(m, n)} of norm {G.norm().item():.3g}"), steps), _rounded(X))

    cases = [case(3, 3, 1, 0), case(4, 6, 3, 1), case(6, 4, 10, 2, scale=50.0)]
    hidden_cases = [case(8, 16, 0, 3, scale=3.0), case(16, 8, 25, 4), case(1, 5, 5, 5), case(5, 5, 12, 6, scale=1e-3),
                    case(32, 24, 40, 7, scale=10.0)]
    run, same = _tensor_check(fn, 1e-4)
    return run_cases("orthogonalize", run, cases, "first X = G / ||G|| with the Frobenius norm (G.norm()), so no "
                  "singular value is above 1; then repeat X = 1.5 * X - 0.5 * X @ X.T @ X `steps` times (that "
                  "product keeps X's shape, tall or wide). With steps = 0 you return the normalised G.",
                  same, hidden_cases=hidden_cases, hidden=hidden)

