"""Muon (muon.py), its parameter groups in the training loop, and the warmup-stable-decay schedule."""


import pytest
import torch

from mini_llm.muon import Muon, newton_schulz

# --- newton_schulz ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (64, 128), (300, 8)])
def test_newton_schulz_moves_every_singular_value_near_one(shape):
    # columns scaled from 0.1 to 1: singular values spread over a factor of 5 to 15
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(-1, 0, shape[1])
    X = newton_schulz(G, steps=5)
    assert X.shape == G.shape and X.dtype == torch.float32  # fp32 on the CPU, never bf16
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.25, s
    s_before = torch.linalg.svdvals(G)
    assert s_before.max() / s_before.min() > 4  # it really had different singular values to equalise


def test_newton_schulz_keeps_the_singular_vectors():
    """A square matrix with a spread of singular values (0.02 .. 1): the result is U f(S) V^T."""
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    V, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    S = torch.linspace(0.02, 1.0, 48)
    X = newton_schulz(U @ torch.diag(S) @ V.T)
    inner = U.T @ X @ V  # diagonal when the singular vectors are kept
    assert (inner - torch.diag(torch.diagonal(inner))).abs().max() < 1e-4
    assert torch.diagonal(inner).min() > 0.6 and torch.diagonal(inner).max() < 1.25


def test_newton_schulz_runs_in_the_dtype_asked_and_refuses_non_matrices():
    G = torch.randn(16, 8)
    assert newton_schulz(G, 5, dtype=torch.bfloat16).dtype == torch.bfloat16  # what CUDA uses
    for not_matrices in (torch.randn(5), torch.randn(2, 3, 4, 5)):
        with pytest.raises(ValueError, match="matrix"):
            newton_schulz(not_matrices)


# The batched iteration does the per-matrix arithmetic with batched matmuls: equal here, but
# another BLAS may block a batched product differently, so it is held to fp32 rounding only.
BATCHED_ATOL = 1e-5


@pytest.mark.parametrize("shape", [(48, 16), (16, 40)])  # tall (worked on transposed) and wide
def test_newton_schulz_of_a_stack_is_each_matrix_orthogonalised(shape):
    stack = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    together = newton_schulz(stack)
    assert together.shape == stack.shape
    for G, X in zip(stack, together):
        assert (X - newton_schulz(G)).abs().max() < BATCHED_ATOL


# --- Muon, the optimizer --------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
@pytest.mark.parametrize("ns_dtype", [torch.bfloat16, None])
def test_muon_follows_torch_optim_muon(ns_dtype):
    """The same update rule as torch's Muon (momentum, Nesterov, weight decay, shape-aware LR):
    three steps on a tall and a wide matrix land where torch's do, up to bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(48, 16, generator=g), torch.randn(16, 40, generator=g)]
    grads = [[torch.randn(*w.shape, generator=g) for w in start] for _ in range(3)]

    def three_steps(make):
        params = [torch.nn.Parameter(w.clone()) for w in start]
        opt = make(params)
        for step_grads in grads:
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            opt.step()
        return params

    ours = three_steps(lambda ps: Muon(ps, lr=0.02, momentum=0.95, weight_decay=0.01, ns_dtype=ns_dtype))
    theirs = three_steps(lambda ps: torch.optim.Muon(ps, lr=0.02, momentum=0.95, weight_decay=0.01))
    for a, b, w in zip(ours, theirs, start):
        moved = (b - w).abs().max()
        assert moved > 0.01 and (a - b).abs().max() < 0.05 * moved


def test_muon_refuses_tensors_that_are_not_matrices():
    with pytest.raises(ValueError, match="AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


SHAPES = [(96, 32), (32, 32), (128, 32), (32, 128)] * 3  # a block's qkv, proj, MLP in and out, three blocks


def _weights_and_grads():
    """Fixed start weights and four steps of gradients for SHAPES."""
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(*shape, generator=g) for shape in SHAPES]
    return weights, [[torch.randn(*shape, generator=g) for shape in SHAPES] for _ in range(4)]


def _muon(params, **options):
    return Muon(params, lr=0.02, momentum=0.95, weight_decay=0.01, **options)


def _step(params, opt, grads):
    for step_grads in grads:
        for p, grad in zip(params, step_grads):
            p.grad = grad.clone()
        opt.step()


def _after(n_steps, **options):
    """(the weights after n_steps Muon steps with `options`, the weights they started from)."""
    weights, grads = _weights_and_grads()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    _step(params, _muon(params, **options), grads[:n_steps])
    return [p.detach() for p in params], weights


def _largest(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def test_batched_muon_equals_the_per_matrix_one():
    """One batched Newton-Schulz per shape (three matrices of each here) moves every matrix where
    the per-matrix loop does, up to fp32 rounding."""
    per_matrix, start = _after(3)
    batched, _ = _after(3, batched=True)
    assert _largest(per_matrix, start) > 0.01
    assert _largest(batched, per_matrix) < BATCHED_ATOL


def test_fewer_and_bf16_iterations_are_options_that_change_the_step():
    five, start = _after(1)
    for options in (dict(ns_steps=3), dict(ns_dtype=torch.bfloat16, batched=True)):
        other, _ = _after(1, **options)
        assert 0 < _largest(other, five) < _largest(five, start)  # another step, in about the same direction
        assert all(p.dtype == torch.float32 for p in other)  # the weights stay fp32


@pytest.mark.parametrize("batched", [False, True])
def test_muon_resumes_exactly_from_its_state_dict(batched):
    """Two steps, the weights and the state_dict through a file as a checkpoint holds them, two
    more: the same weights, bit for bit, as four steps at once."""
    import io

    whole, _ = _after(4, batched=batched)
    weights, grads = _weights_and_grads()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = _muon(params, batched=batched)
    _step(params, opt, grads[:2])
    buffer = io.BytesIO()
    torch.save({"weights": [p.detach() for p in params], "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(w.clone()) for w in saved["weights"]]
    opt = _muon(resumed, batched=batched)
    opt.load_state_dict(saved["optimizer"])
    _step(resumed, opt, grads[2:])
    assert all(torch.equal(a, b) for a, b in zip(whole, resumed))


# --- the warmup-stable-decay schedule --------------------------------------------------------------


# --- flags ----------------------------------------------------------------------------------------


