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
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.randn(2, 3, 4))


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


# --- the warmup-stable-decay schedule --------------------------------------------------------------


# --- flags ----------------------------------------------------------------------------------------


