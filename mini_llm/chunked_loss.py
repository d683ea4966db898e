"""The LM head and the cross-entropy a chunk of rows at a time: the loss and its gradients without
ever holding all (B*T, V) logits.

The plain path, `F.cross_entropy(lm_head(x))`, makes the logits of every position at once: at
batch 16, context 128 and vocabulary 8000 that is a 2048 x 8000 matrix (65 MB in fp32) written,
soft-maxed, kept for the backward pass and read again. Here a custom autograd function computes,
for `chunk` rows at a time, the logits, their log-sum-exp, the loss and the gradient of the loss
with respect to the logits, softmax - one_hot(target), and turns that at once into the gradients
of the hidden states x and of the head's weight; only those two gradients are kept for backward:

    for each chunk of rows:   logits = x_c W^T              (chunk, V)
                              loss  += sum(logsumexp(logits) - logits[target])
                              g      = softmax(logits) - one_hot(target)      rows of ignored targets: 0
                              dx_c   = g W,   dW += g^T x_c
    loss = loss / n_counted;  backward: dx, dW times d(out)/d(loss) / n_counted

The same FLOPs as the plain path, less memory traffic. It matches `F.cross_entropy`'s mean over
the targets that are not `ignore_index` (-100, what supervised fine-tuning uses to mask the
prompt) up to float rounding, not bit for bit: `train()` uses it by default (`head_chunk`), and a
proof that a hand-written loop is `train()` bit for bit turns it off (notebook 05: `head_chunk=0`).
`MiniGPT.forward(..., head_chunk=N)` uses it; under autocast the matmuls run in bf16 like the
plain head's, the softmax in fp32.
"""

import torch

CHUNK_ROWS = 512  # rows per chunk: the fastest of 128/256/512/2048 measured at batch 16 (BENCHMARKS.md)


def chunked_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                          ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of the logits x @ weight.T against targets, `chunk` rows at a time.

    x (N, C) hidden states, weight (V, C) the LM head's (bias-free) matrix, targets (N,) token ids
    or ignore_index. Returns the scalar loss; gradients flow to x and weight. Without gradients
    (evaluation, torch.no_grad) only the loss is computed."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 row (got {chunk})")
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _ChunkedHeadLoss.apply(x, weight, targets, chunk, ignore_index)
    total = x.new_zeros((), dtype=torch.float32)
    for i in range(0, x.size(0), chunk):
        logits = (x[i : i + chunk] @ weight.T).float()  # (chunk, V)
        total += _row_losses(logits, targets[i : i + chunk], ignore_index).sum()
    return total / (targets != ignore_index).sum()


def _row_losses(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """logits (n, V) fp32, targets (n,) -> each row's -log p(target), 0 where the target is ignored."""
    keep = targets != ignore_index
    picked = logits.gather(1, targets.clamp_min(0)[:, None]).squeeze(1)  # (n,); an ignored row picks column 0
    return (logits.logsumexp(-1) - picked) * keep


class _ChunkedHeadLoss(torch.autograd.Function):
    """The loss in forward, the gradients too (chunk by chunk); backward only scales them."""

    @staticmethod
    def forward(ctx, x, weight, targets, chunk, ignore_index):
        grad_x = torch.empty_like(x)  # (N, C)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)  # (V, C), summed over chunks in fp32
        total = x.new_zeros((), dtype=torch.float32)
        for i in range(0, x.size(0), chunk):
            x_c, t_c = x[i : i + chunk], targets[i : i + chunk]
            logits = (x_c @ weight.T).float()  # (n, V)
            total += _row_losses(logits, t_c, ignore_index).sum()
            g = torch.softmax(logits, dim=-1)  # d loss_row / d logits = softmax - one_hot(target) ...
            g[torch.arange(len(t_c), device=g.device), t_c.clamp_min(0)] -= 1.0
            g *= (t_c != ignore_index)[:, None]  # ... and 0 for an ignored row
            grad_x[i : i + chunk] = g @ weight  # (n, C)
            grad_w += g.T @ x_c  # (V, C)
        count = (targets != ignore_index).sum()
        ctx.save_for_backward(grad_x, grad_w.to(weight.dtype), count)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, count = ctx.saved_tensors
        scale = grad_loss / count  # d out / d loss, and the mean's 1 / n_counted
        return grad_x * scale.to(grad_x.dtype), grad_w * scale.to(grad_w.dtype), None, None, None
