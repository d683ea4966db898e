"""MiniGPT: a decoder-only transformer in the style of GPT-2 / nanoGPT.

    idx (B, T) -> token embedding + position embedding -> n_layer x Block -> LayerNorm -> LM head
    Block: x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))          (pre-LayerNorm, residuals)

Parameter count (bias=True, LM head tied to the token embedding), with V vocab, T block
size, C n_embd, L n_layer:

    N = V*C + T*C + L*(12*C^2 + 13*C) + 2*C        = 5,240,320 at the defaults

(per block: qkv 3C^2+3C, attention projection C^2+C, MLP 8C^2+5C, two LayerNorms 4C).
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.attention import MultiHeadAttention, attention
from mini_llm.errors import UserError


@dataclass
class GPTConfig:
    vocab_size: int = 8000
    block_size: int = 128
    n_embd: int = 256
    n_head: int = 4
    n_layer: int = 4
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: pick sizes where it is")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout={self.dropout} must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    def num_params(self) -> int:
        V, T, C, L = self.vocab_size, self.block_size, self.n_embd, self.n_layer
        if self.bias:
            return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
        return V * C + T * C + L * (12 * C * C + 2 * C) + C  # only the LayerNorm weights remain

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM / nanoGPT style: 6N + 12*L*C*T,
        with N the parameters without the position embedding (a lookup, not a matmul)."""
        T = seq_len or self.block_size
        return 6 * (self.num_params() - self.block_size * self.n_embd) + 12 * self.n_layer * self.n_embd * T


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to block_size.

    kv: (n_layer, 2, B, nh, block_size, hs); `pos` counts the positions filled.
    """

    def __init__(self, config: GPTConfig, batch_size: int = 1, device=None, dtype=torch.float32):
        hs = config.n_embd // config.n_head
        self.kv = torch.zeros(config.n_layer, 2, batch_size, config.n_head, config.block_size, hs,
                              device=device, dtype=dtype)
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0


class CausalSelfAttention(MultiHeadAttention):
    """The teaching MultiHeadAttention plus the fused kernel and the KV cache."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__(config.n_embd, config.n_head, causal=True, bias=config.bias, dropout=config.dropout)
        self.layer = layer

    def forward(self, x, cache: KVCache | None = None, explicit: bool = False):
        T = x.size(1)
        q, k, v = self.qkv(x)  # (B, nh, T, hs)
        P = 0  # positions already in the cache
        if cache is not None:
            P = cache.pos
            cache.kv[self.layer, 0, :, :, P : P + T] = k
            cache.kv[self.layer, 1, :, :, P : P + T] = v
            k, v = cache.kv[self.layer, 0, :, :, : P + T], cache.kv[self.layer, 1, :, :, : P + T]
        # Query i sits at position P + i and may see keys 0 .. P + i: a bottom-right-aligned
        # causal mask. SDPA's is_causal aligns top-left (trap 1), so use it only when P == 0.
        if explicit:
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
            y, weights = attention(q, k, v, mask)
            return self.merge_heads(y), weights
        drop = self.dropout if self.training else 0.0
        if P == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # one new query sees everything
        else:
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.merge_heads(y), None


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, 4C) -> (B, T, C)
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, explicit=False):
        a, weights = self.attn(self.ln_1(x), cache, explicit)
        x = x + a  # residual: attention adds to the stream
        x = x + self.mlp(self.ln_2(x))  # residual: so does the MLP
        return x, weights


class MiniGPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned positions
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: the same matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2: scale residual projections so the residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def _hidden(self, idx, cache=None, explicit=False):
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise UserError(
                f"input of {start + T} tokens is longer than the context (block_size={self.config.block_size}); crop it first"
            )
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        maps = []
        for block in self.blocks:
            x, weights = block(x, cache, explicit)
            maps.append(weights)
        if cache is not None:
            cache.pos += T
        return self.ln_f(x), maps

    def forward(self, idx, targets=None, cache: KVCache | None = None, last_only: bool = False, explicit: bool = False):
        """idx (B, T) of token ids -> logits (B, T, V) (or (B, 1, V) with last_only), and the
        mean cross-entropy against targets (B, T) when given."""
        x, _ = self._hidden(idx, cache, explicit)
        if last_only and targets is None:
            x = x[:, -1:, :]  # generation needs only the next-token distribution
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx):
        """Logits and attention weights of every layer (list of (B, nh, T, T)), explicit path."""
        x, maps = self._hidden(idx, explicit=True)
        return self.lm_head(x), maps

    def check_vocab(self, tokenizer) -> None:
        """Refuse a tokenizer whose vocabulary is not the one this model was built for."""
        n = tokenizer.get_vocab_size()
        if n != self.config.vocab_size:
            raise UserError(
                f"tokenizer has {n:,} tokens but the model was built for {self.config.vocab_size:,}: "
                "use the tokenizer saved with the checkpoint"
            )
