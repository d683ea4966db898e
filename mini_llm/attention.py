"""Self-attention, written out for teaching: every piece can hand back its attention weights.

    scores  = q @ k^T / sqrt(head_size)     how much each position wants each other position
    causal  = scores with the future masked  position t may only look at positions <= t
    weights = softmax(scores, dim=-1)        each row sums to 1: a weighted average ...
    out     = weights @ v                    ... of the values

`HeadedAttention` is the parameter layout the teaching `MultiHeadAttention` and the model's
attention (`model.py`: the fused kernel, the KV cache, rotary positions) share, so a trained
model's heads can be inspected with exactly this code.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_mask(T: int, device=None, past: int = 0) -> torch.Tensor:
    """(T, past + T) boolean lower triangle: True where query t may attend to key s. Query t sits
    at position past + t, so it sees keys 0 .. past + t (with past = 0: s <= t)."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


def attention(q, k, v, mask: torch.Tensor | None = None, dropout: float = 0.0):
    """Scaled dot-product attention with explicit matmuls.

    q: (..., Tq, hs), k and v: (..., Tk, hs), mask: broadcastable to (..., Tq, Tk), True = keep.
    dropout: the probability of dropping each weight (training only; the rest are scaled up to
    keep the sum's expectation, as F.scaled_dot_product_attention's dropout_p does).
    Returns out (..., Tq, hs) and the weights used (..., Tq, Tk).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return weights @ v, weights


def rotary(x, positions, base: float = 10000.0):
    """Rotary position embedding (RoPE): rotate each pair of channels (i, i + hs/2) of the
    vector at position p by the angle p * base^(-2i/hs).

    x: (..., T, hs) queries or keys; positions: (T,) their positions, (B, T) for a batch whose
    rows sit at different positions (x then (B, nh, T, hs)), or one number for all.
    A query rotated by position m dotted with a key rotated by n depends only on m - n:
    attention sees relative positions, so nothing is added to the token embeddings. Rotations
    compose, so rotating by -n moves every vector n positions back (a sliding KV cache).
    """
    return rotate_pairs(x, *rotary_angles(positions, x.size(-1), base, x.device, x.dtype))


def rotary_angles(positions, head_size: int, base: float = 10000.0, device=None, dtype=torch.float32):
    """(cos, sin) of the angles `rotary` turns by, each (T, hs/2) for positions (T,) or a number,
    (B, 1, T, hs/2) for positions (B, T): computed once, they rotate queries and keys alike
    (`rotate_pairs`), in every layer."""
    half = head_size // 2
    freq = base ** (-torch.arange(half, device=device, dtype=torch.float32) / half)  # (hs/2,)
    positions = torch.as_tensor(positions, device=device, dtype=torch.float32)
    if positions.dim() < 2:
        angle = positions.reshape(-1, 1) * freq  # (T or 1, hs/2)
    else:  # (B, T): each sequence at its own positions, the same for every head
        angle = positions[:, None, :, None] * freq  # (B, 1, T, hs/2)
    return angle.cos().to(dtype), angle.sin().to(dtype)


def rotate_pairs(x, cos, sin):
    """Turn each channel pair (i, i + hs/2) of x (..., T, hs) by the angles given as cos, sin
    (T, hs/2), or any shape that broadcasts to x's (..., T, hs/2)."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SingleHeadAttention(nn.Module):
    """One head: project x to queries, keys and values of size `head_size`, then attend."""

    def __init__(self, n_embd: int, head_size: int, causal: bool = True, bias: bool = False):
        super().__init__()
        self.query = nn.Linear(n_embd, head_size, bias=bias)
        self.key = nn.Linear(n_embd, head_size, bias=bias)
        self.value = nn.Linear(n_embd, head_size, bias=bias)
        self.causal = causal

    def forward(self, x):  # x: (B, T, C)
        q, k, v = self.query(x), self.key(x), self.value(x)  # each (B, T, hs)
        mask = causal_mask(x.size(1), x.device) if self.causal else None
        return attention(q, k, v, mask)  # (B, T, hs), (B, T, T)


class HeadedAttention(nn.Module):
    """The parameters of multi-head attention and how heads are cut and joined; no forward of its
    own. One matmul makes q, k, v for all heads (`c_attn`), each head gets its slice of the
    channels, and `c_proj` mixes the heads' outputs. The teaching `MultiHeadAttention` and the
    model's `CausalSelfAttention` (model.py) both build on it, so their weights load into each other."""

    def __init__(self, n_embd: int, n_head: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head, self.n_embd = n_head, n_embd
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = dropout  # drops attention weights (a probability: SDPA takes it as dropout_p)
        self.resid_dropout = nn.Dropout(dropout)  # drops the output before it joins the residual stream

    def qkv(self, x):
        """x (B, T, C) -> q, k, v, each (B, nh, T, hs)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        return [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]

    def merge_heads(self, y):
        """(B, nh, T, hs) -> (B, T, C), then the output projection."""
        B, nh, T, hs = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, nh * hs)))


class MultiHeadAttention(HeadedAttention):
    """n_head heads in parallel, written out: every head's attention weights come back too.

    forward(x (B, T, C)) -> out (B, T, C), weights (B, nh, T, T)."""

    def __init__(self, n_embd: int, n_head: int, causal: bool = True, bias: bool = True, dropout: float = 0.0):
        super().__init__(n_embd, n_head, bias, dropout)
        self.causal = causal

    def forward(self, x):
        q, k, v = self.qkv(x)
        mask = causal_mask(x.size(1), x.device) if self.causal else None
        y, weights = attention(q, k, v, mask, self.attn_dropout if self.training else 0.0)  # (B, nh, T, hs), (B, nh, T, T)
        return self.merge_heads(y), weights
