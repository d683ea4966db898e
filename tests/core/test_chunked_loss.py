"""The chunked LM head + cross-entropy (chunked_loss.py): the plain path's loss and gradients up to
float rounding, masked targets (-100) honoured, through the model with a tied and an untied head."""

import pytest
import torch
import torch.nn.functional as F

from mini_llm.chunked_loss import chunked_cross_entropy
from mini_llm.model import GPTConfig, MiniGPT

# fp32: the same sums in another order. Measured differences are ~1e-7 of the loss and ~1e-8 of
# gradient entries of ~0.1; the bounds leave a factor of ten or more for other BLAS libraries.
LOSS_RTOL, GRAD_ATOL = 1e-5, 1e-6


def _problem(N=70, C=16, V=50, masked_every=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, generator=g)
    w = torch.randn(V, C, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    if masked_every:
        targets[::masked_every] = -100  # what supervised fine-tuning does to the prompt's positions
    return x, w, targets


def _plain(x, w, targets, scale=1.0):
    """Loss, d/dx and d/dw of the plain path (all logits, F.cross_entropy), the loss scaled by `scale` for backward."""
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    loss = F.cross_entropy(x @ w.T, targets)
    (loss * scale).backward()
    return loss.detach(), x.grad, w.grad


def _chunked(x, w, targets, chunk, scale=1.0):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    loss = chunked_cross_entropy(x, w, targets, chunk)
    (loss * scale).backward()
    return loss.detach(), x.grad, w.grad


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])  # one row, chunks that do not divide N, one chunk for all
def test_loss_and_gradients_equal_the_plain_path(chunk):
    x, w, targets = _problem()
    plain, chunked = _plain(x, w, targets, scale=0.25), _chunked(x, w, targets, chunk, scale=0.25)  # e.g. grad_accum 4
    assert torch.allclose(chunked[0], plain[0], rtol=LOSS_RTOL, atol=0)
    for ours, theirs in zip(chunked[1:], plain[1:]):
        assert theirs.abs().max() > 1e-3  # real gradients to compare
        assert (ours - theirs).abs().max() < GRAD_ATOL


def test_masked_targets_count_for_nothing():
    """Rows with target -100 add no loss and no gradient; the mean is over the other rows, as
    F.cross_entropy's: the same as leaving those rows out."""
    x, w, targets = _problem(masked_every=3)
    loss, grad_x, grad_w = _chunked(x, w, targets, chunk=16)
    kept = targets != -100
    alone, grad_x_alone, grad_w_alone = _plain(x[kept], w, targets[kept])
    assert torch.allclose(loss, alone, rtol=LOSS_RTOL, atol=0)
    assert torch.equal(grad_x[~kept], torch.zeros_like(grad_x[~kept]))
    assert (grad_x[kept] - grad_x_alone).abs().max() < GRAD_ATOL and (grad_w - grad_w_alone).abs().max() < GRAD_ATOL
    everything_masked = torch.full_like(targets, -100)
    assert chunked_cross_entropy(x, w, everything_masked, 16).isnan()  # 0 / 0, as F.cross_entropy's
    assert F.cross_entropy(x @ w.T, everything_masked).isnan()


def test_without_gradients_only_the_loss_is_computed():
    x, w, targets = _problem()
    with_grad = chunked_cross_entropy(x.clone().requires_grad_(), w, targets, 16)
    with torch.no_grad():
        without = chunked_cross_entropy(x.clone().requires_grad_(), w, targets, 16)
    assert without.grad_fn is None and torch.equal(without, with_grad.detach())
    with pytest.raises(ValueError, match="chunk"):
        chunked_cross_entropy(x, w, targets, 0)


def test_under_bf16_autocast_it_follows_the_plain_path_in_bf16():
    """Matmuls in bf16 as the plain head's under autocast, softmax in fp32; gradients come back in
    the inputs' dtype (fp32 master weights). bf16 has 8 bits of mantissa: close, not equal."""
    x, w, targets = _problem()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, chunked = _plain(x, w, targets), _chunked(x, w, targets, 16)
    assert torch.allclose(chunked[0], plain[0], rtol=1e-3)
    for ours, theirs in zip(chunked[1:], plain[1:]):
        assert ours.dtype == torch.float32 and (ours - theirs).abs().max() < 0.02 * theirs.abs().max()


@pytest.mark.parametrize("arch", ["gpt2", "modern"])  # the head tied to the token embedding, and one of its own
def test_the_model_with_a_chunked_head_matches_the_plain_one(arch):
    from mini_llm.model import ARCHS

    cfg = GPTConfig(vocab_size=97, block_size=16, n_embd=32, n_head=4, n_layer=2, **ARCHS[arch])
    torch.manual_seed(0)
    model = MiniGPT(cfg)
    if arch == "modern":
        torch.nn.init.normal_(model.lm_head.weight, std=0.02)  # zero-init would give it no gradient to compare
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 97, (4, 16), generator=g), torch.randint(0, 97, (4, 16), generator=g)
    y[:, :5] = -100

    def loss_and_grads(**kw):
        model.zero_grad(set_to_none=True)
        logits, loss = model(x, y, **kw)
        loss.backward()
        return logits, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_logits, plain, plain_grads = loss_and_grads()
    no_logits, chunked, chunked_grads = loss_and_grads(head_chunk=24)
    assert plain_logits.shape == (4, 16, 97) and no_logits is None  # never made
    assert torch.allclose(chunked, plain, rtol=LOSS_RTOL, atol=0)
    assert plain_grads.keys() == chunked_grads.keys() == {n for n, _ in model.named_parameters()}
    for name in plain_grads:
        assert (chunked_grads[name] - plain_grads[name]).abs().max() < GRAD_ATOL, name
    logits, loss = model(x, None, head_chunk=24)  # no targets: the logits as always
    assert loss is None and torch.equal(logits, model(x)[0])
