"""Muon: momentum, then the update matrix orthogonalised by a Newton-Schulz iteration.

Muon (Keller Jordan, 2024; https://kellerjordan.github.io/posts/muon/) trains the hidden 2-D
weight matrices of a transformer. It keeps a momentum buffer like SGD, but instead of stepping
along the momentum M it steps along the nearest orthogonal matrix, U V^T where M = U S V^T: every
direction the matrix can move in gets the same step size, so rare directions are not drowned
out by the few large ones that dominate the gradient. U V^T is approximated by a few
Newton-Schulz iterations, which are only matrix products (no SVD):

    X = M / ||M||                          all singular values now <= 1
    5 times:  X = a X + (b A + c A^2) X    with A = X X^T, (a, b, c) = (3.4445, -4.7750, 2.0315)

The quintic's coefficients push the singular values quickly towards 1: in five steps every one
that is not tiny lands in about 0.7 .. 1.2, not exactly 1, which does not hurt training (one
below ~1/500 of the norm stays small: 3.4445^5 is the most it can grow). Embeddings, the LM head,
gains and biases stay with AdamW (`MuonWithAdamW` holds both, for the training loop).

Library or own code: torch.optim.Muon (torch >= 2.9) has the same algorithm and defaults, but
always runs the iteration in bf16, with no switch, and bf16 on a CPU is fast only where the CPU
has bf16 matrix instructions (AVX512-BF16, AMX); elsewhere it can be far slower than fp32. So
this file has its own small Muon that follows torch's update rule exactly
(same momentum, Nesterov, decoupled weight decay, and shape-aware LR as torch's
adjust_lr_fn="original") and runs the iteration in the dtype it is given (by default bf16 on
CUDA, fp32 everywhere else; `optim.py` picks bf16 where the training step runs in bf16): one
implementation on every device, so a run started on a GPU resumes on a CPU. AdamW is torch's own.

Its cost: five iterations on each of the blocks' matrices, each a few small matmuls, are about a
quarter of a training step on a CPU. Three options trade that down (`mini-llm bench step` and
`bench quality` have a variant for each): fewer iterations (`ns_steps`), bf16 iterations
(`ns_dtype`), and `batched=True`, which stacks the matrices of the same shape (the same
projection in every block) and runs one batched iteration on the stack: fewer, larger matmuls,
the same result up to float rounding.
"""

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic, the same as torch.optim.Muon's


def newton_schulz(G: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The matrix G (m, n) orthogonalised: about U V^T for G = U S V^T, i.e. the same singular
    vectors with every singular value moved near 1. G may also be a stack (k, m, n): each matrix
    orthogonalised on its own, by batched matmuls. Computed in `dtype` (None: bf16 on CUDA, where
    it is fast, fp32 elsewhere) and returned in it."""
    if G.ndim not in (2, 3):
        raise ValueError(f"newton_schulz orthogonalises a matrix or a stack of them, not a {tuple(G.shape)} tensor")
    if dtype is None:
        dtype = torch.bfloat16 if G.is_cuda else torch.float32
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT  # work on the wide side: A = X X^T is then the smaller square
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # each Frobenius norm bounds its largest singular value
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X  # each singular value s goes to a s + b s^3 + c s^5
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weight matrices. Per matrix W of shape (out, in), gradient g:

        m = momentum * m + (1 - momentum) * g          the buffer (an average of gradients)
        u = (1 - momentum) * g + momentum * m          Nesterov: look one step ahead (or u = m)
        W = W * (1 - lr * weight_decay)                decoupled weight decay, as AdamW's
        W = W - lr * sqrt(max(1, out / in)) * newton_schulz(u)

    The sqrt(max(1, out / in)) is Keller Jordan's shape scaling (torch's adjust_lr_fn="original"):
    an orthogonal (out, in) update with out > in has a smaller RMS per entry, so tall matrices
    (the fused q, k, v projection, the MLP's widening matrix) get a larger step to match. With it
    lr ~ 0.02 works across widths; that is the convention of the Muon repository and of torch's
    default, so LRs quoted for either carry over."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, ns_dtype: torch.dtype | None = None,
                 batched: bool = False):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps)
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype  # None: bf16 on CUDA, fp32 elsewhere (see newton_schulz)
        self.batched = batched  # one batched iteration per shape instead of one per matrix
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon trains 2-D weight matrices; give this {tuple(p.shape)} tensor to AdamW")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            params = [p for p in group["params"] if p.grad is not None]
            updates = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                updates.append(p.grad.lerp(buf, momentum) if group["nesterov"] else buf)
            for p, update in zip(params, self._orthogonalised(updates, group["ns_steps"])):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))
        return loss

    def _orthogonalised(self, updates: list[torch.Tensor], steps: int) -> list[torch.Tensor]:
        """newton_schulz of each update: one by one, or (batched) one stack per shape."""
        if not self.batched:
            return [newton_schulz(u, steps, self.ns_dtype) for u in updates]
        by_shape = {}  # shape -> indices of the updates with it
        for i, u in enumerate(updates):
            by_shape.setdefault(u.shape, []).append(i)
        out = [None] * len(updates)
        for indices in by_shape.values():
            stack = newton_schulz(torch.stack([updates[i] for i in indices]), steps, self.ns_dtype)  # (k, m, n)
            for i, X in zip(indices, stack):
                out[i] = X
        return out


class MuonWithAdamW:
    """Muon for some parameters and AdamW for the rest, used by the training loop as one
    optimizer: `param_groups` (both optimizers' groups, whose "lr" the loop sets), `step()`,
    `zero_grad()`, and one `state_dict()` / `load_state_dict()` for the checkpoint."""

    def __init__(self, muon: Muon, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.adamw.param_groups + self.muon.param_groups  # the groups themselves, so setting "lr" sticks

    def step(self, closure=None):
        loss = self.adamw.step(closure)
        self.muon.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])
