"""MiniGPT: a decoder-only transformer in the style of GPT-2 / nanoGPT.

    idx (B, T) -> token embedding + position embedding -> n_layer x Block -> LayerNorm -> LM head
    Block: x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))          (pre-LayerNorm, residuals)

Parameter count (bias=True, LM head tied to the token embedding), with V vocab, T block
size, C n_embd, L n_layer:

    N = V*C + T*C + L*(12*C^2 + 13*C) + 2*C        = 5,240,320 at the defaults

(per block: qkv 3C^2+3C, attention projection C^2+C, MLP 8C^2+5C, two LayerNorms 4C).

The defaults are that classic model (arch "gpt2": what notebooks 03-07 build). The options
below are what recent small-GPT speed records use; `ARCHS["modern"]` turns them on together,
`ARCHS["tuned"]` keeps the ones that paid off at this size in a few CPU minutes (the ablation in
BENCHMARKS.md; `mini-llm train` trains it by default, with Muon):

    pos="rope"       rotary positions inside attention instead of a learned table
    norm="rmsnorm"   RMSNorm (scale only, no mean, no bias) instead of LayerNorm
    qk_norm=True     queries and keys RMS-normalised per head before the dot product
    mlp="relu2"      relu(x)^2 instead of GELU; "swiglu": silu(gate) * up, 2/3 the width
    tie_head=False   an LM head of its own instead of the token embedding
    zero_init=True   output projections (and an untied head) start at zero
    bias=False       no biases in the Linear layers and norms (the speed records have none)
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.attention import HeadedAttention, attention, causal_mask, rotary, rotary_angles, rotate_pairs
from mini_llm.chunked_loss import chunked_cross_entropy
from mini_llm.errors import UserError
from mini_llm.tokenizer import VOCAB_SIZE


@dataclass
class GPTConfig:
    vocab_size: int = VOCAB_SIZE  # the course tokenizer's (a checkpoint stores the real one)
    block_size: int = 128
    n_embd: int = 256
    n_head: int = 4
    n_layer: int = 4
    dropout: float = 0.0
    bias: bool = True
    pos: str = "learned"  # "learned" | "rope"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    qk_norm: bool = False
    mlp: str = "gelu"  # "gelu" | "relu2" | "swiglu"
    tie_head: bool = True
    zero_init: bool = False
    rope_base: float = 10000.0
    norm_eps: float | None = None  # None: each norm's torch default (LayerNorm 1e-5, RMSNorm the dtype's epsilon)
    mlp_width: int | None = None  # the MLP's inner width; None: 4 * n_embd (SwiGLU: 2/3 of it, see mlp_hidden)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: pick sizes where it is")
        if self.mlp_width is not None and int(self.mlp_width) < 1:
            raise UserError(f"mlp_width={self.mlp_width} must be a positive integer (or None: 4 * n_embd)")
        if self.norm_eps is not None and not self.norm_eps > 0:
            raise UserError(f"norm_eps={self.norm_eps} must be positive (or None: the norm's default)")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout={self.dropout} must be in [0, 1)")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name}={getattr(self, name)!r}: use one of {', '.join(map(repr, allowed))}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise UserError(f"rotary positions need an even head size (n_embd/n_head = {self.n_embd // self.n_head})")

    @property
    def arch_name(self) -> str:
        """The name in ARCHS whose options these are ("gpt2": the classic model), or "custom"."""
        options = {name: getattr(self, name) for name in ARCHS["modern"]}
        return next((name for name, preset in ARCHS.items() if options == preset), "custom")

    @property
    def mlp_hidden(self) -> int:
        """The MLP's inner width: `mlp_width` when given (GPT-2's n_inner), else 4C; SwiGLU's two
        input matrices get 2/3 of it (same parameters), rounded up to a multiple of 32 for fast matmuls."""
        if self.mlp_width is not None:
            return self.mlp_width
        if self.mlp == "swiglu":
            return -(-8 * self.n_embd // 3 // 32) * 32
        return 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)

    def num_params(self) -> int:
        """Parameters of the model this config builds (the formula in the docstring, generalised)."""
        V, T, C, L, H = self.vocab_size, self.block_size, self.n_embd, self.n_layer, self.mlp_hidden
        b = int(self.bias)
        norm = C * (1 + b * (self.norm == "layernorm"))  # gain (+ bias)
        mlp_in = 2 * H if self.mlp == "swiglu" else H
        attn = 3 * C * C + 3 * C * b + C * C + C * b
        mlp = C * mlp_in + mlp_in * b + H * C + C * b
        embeddings = V * C + T * C * (self.pos == "learned") + V * C * (not self.tie_head)
        return embeddings + L * (attn + mlp + 2 * norm) + norm

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM / nanoGPT style: 6N + 12*L*C*T,
        with N the parameters that take part in matmuls (not the lookup tables: the position
        embedding, and the token embedding when the head has its own matrix)."""
        T = seq_len or self.block_size
        lookups = self.block_size * self.n_embd * (self.pos == "learned") + self.vocab_size * self.n_embd * (not self.tie_head)
        return 6 * (self.num_params() - lookups) + 12 * self.n_layer * self.n_embd * T


CHOICES = {"pos": ("learned", "rope"), "norm": ("layernorm", "rmsnorm"), "mlp": ("gelu", "relu2", "swiglu")}
ARCHS = {  # the model options each architecture name stands for
    "gpt2": dict(pos="learned", norm="layernorm", qk_norm=False, mlp="gelu", tie_head=True, zero_init=False, bias=True),
    "modern": dict(pos="rope", norm="rmsnorm", qk_norm=True, mlp="relu2", tie_head=False, zero_init=True, bias=False),
    "tuned": dict(pos="rope", norm="layernorm", qk_norm=False, mlp="gelu", tie_head=True, zero_init=False, bias=True),
}


class KVCache:
    """Every layer's keys and values, preallocated for `block_size` positions and written in place.

    buffer: (L, 2, B, nh, block_size, hs), made at the first forward that uses the cache (with
    that forward's batch size, dtype and device); pos: how many positions it holds. A forward of T
    new tokens writes their keys and values at positions pos .. pos + T - 1 of every layer and
    attends over 0 .. pos + T - 1: a decode step copies one position, not the whole cache.
    """

    def __init__(self):
        self.buffer, self.pos = None, 0

    @property
    def past(self) -> torch.Tensor | None:
        """The cached keys and values, (L, 2, B, nh, pos, hs): a view, not a copy."""
        return None if self.buffer is None else self.buffer[..., : self.pos, :]

    def reset(self) -> None:
        self.pos = 0  # the buffer stays, to be written over

    def layers(self, model, batch: int, T: int, dtype, device) -> list["CachedKV"]:
        """One writer per layer for a forward of T new tokens (the buffer made or remade to fit)."""
        cfg = model.config
        shape = (cfg.n_layer, 2, batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        if self.buffer is None or self.buffer.shape != shape or self.buffer.dtype != dtype or self.buffer.device != device:
            if self.pos:
                raise UserError("this KVCache holds another batch size, dtype or device: reset() it first")
            self.buffer = torch.empty(shape, dtype=dtype, device=device)
        return [CachedKV(self.buffer[i], self.pos) for i in range(cfg.n_layer)]

    def slide(self, n: int, rope_base: float) -> None:
        """Drop the n oldest positions, in place, so generation can go on past block_size without a
        new prefill: only for rotary positions (see `slide_past`)."""
        kept = slide_past(self.past, n, rope_base)  # (L, 2, B, nh, pos - n, hs)
        self.pos -= n
        self.buffer[..., : self.pos, :] = kept


class CachedKV:
    """One layer's part of a KVCache during one forward: `add` writes the new keys and values in
    place and returns the layer's keys and values so far (views of the buffer)."""

    def __init__(self, buffer: torch.Tensor, pos: int):
        self.buffer, self.pos = buffer, pos  # buffer (2, B, nh, block_size, hs); pos positions before this forward
        self.empty = pos == 0

    def add(self, k, v):
        """k, v (B, nh, T, hs) of the new positions -> keys and values of all pos + T, each (B, nh, pos + T, hs)."""
        end = self.pos + k.size(2)
        self.buffer[0, :, :, self.pos : end] = k
        self.buffer[1, :, :, self.pos : end] = v
        return self.buffer[0, :, :, :end], self.buffer[1, :, :, :end]


class ExplicitKV:
    """One layer's past keys and values handed in as a tensor, and the present handed back: what
    `forward_kv` (and so an ONNX graph, whose inputs and outputs are tensors) uses."""

    def __init__(self, past: torch.Tensor | None):
        self.past = past  # (2, B, nh, P, hs) or None
        self.empty = past is None  # decided by the input, not by P == 0: P stays symbolic in an export
        self.pos = 0 if past is None else past.size(-2)
        self.present = None

    def add(self, k, v):
        if self.past is not None:
            k, v = torch.cat([self.past[0], k], dim=2), torch.cat([self.past[1], v], dim=2)
        self.present = torch.stack([k, v])  # (2, B, nh, P + T, hs)
        return k, v


class CausalSelfAttention(HeadedAttention):
    """The model's attention: the fused kernel (or, with explicit=True, the explicit matmuls that
    also return the weights), keys and values of earlier positions (`CachedKV` or `ExplicitKV`),
    and the options QK-norm and rotary positions.

    forward(x (B, T, C), kv, rope, explicit) -> y (B, T, C), weights (B, nh, T, P + T) or None."""

    def __init__(self, config: GPTConfig):
        super().__init__(config.n_embd, config.n_head, bias=config.bias, dropout=config.dropout)
        self.qk_norm = config.qk_norm
        self.norm_eps = config.norm_eps  # QK-norm's epsilon too (None: the dtype's)

    def forward(self, x, kv=None, rope=None, explicit: bool = False):
        T = x.size(1)
        q, k, v = self.qkv(x)  # (B, nh, T, hs)
        if self.qk_norm:  # unit-RMS queries and keys: scores stay in range whatever the weights grow to
            q, k = F.rms_norm(q, (q.size(-1),), eps=self.norm_eps), F.rms_norm(k, (k.size(-1),), eps=self.norm_eps)
        if rope is not None:  # (cos, sin) of these T positions; the cache holds keys already rotated
            q, k = rotate_pairs(q, *rope), rotate_pairs(k, *rope)
        if kv is not None:
            k, v = kv.add(k, v)  # (B, nh, P + T, hs)
        P = k.size(2) - T  # positions already seen
        drop = self.attn_dropout if self.training else 0.0
        # Query i sits at position P + i and may see keys 0 .. P + i: a bottom-right-aligned causal
        # mask. SDPA's is_causal aligns top-left (trap 1 in docs/TRAPS.md), so use it only without a past.
        if explicit:
            y, weights = attention(q, k, v, causal_mask(T, x.device, past=P), drop)
            return self.merge_heads(y), weights
        if kv is None or kv.empty:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # one new query sees every key
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, x.device, past=P), dropout_p=drop)
        return self.merge_heads(y), None


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        H = config.mlp_hidden
        self.kind = config.mlp
        # SwiGLU's gate and up projections are one matrix (2H outputs), split after the matmul.
        self.c_fc = nn.Linear(config.n_embd, 2 * H if self.kind == "swiglu" else H, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(H, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, H) -> (B, T, C)
        h = self.c_fc(x)
        if self.kind == "gelu":
            h = self.gelu(h)
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        return self.dropout(self.c_proj(h))


def norm_layer(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)  # None: the dtype's machine epsilon
    if config.norm_eps is None:
        return nn.LayerNorm(config.n_embd, bias=config.bias)  # torch's default eps, 1e-5
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = norm_layer(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm_layer(config)
        self.mlp = MLP(config)

    def forward(self, x, kv=None, rope=None, explicit: bool = False):
        """x (B, T, C) -> x (B, T, C), the attention weights (explicit path) or None."""
        a, weights = self.attn(self.ln_1(x), kv, rope, explicit)
        x = x + a  # residual: attention adds to the stream
        x = x + self.mlp(self.ln_2(x))  # residual: so does the MLP
        return x, weights


class MiniGPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        if config.pos == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned positions
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = norm_layer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_head:
            self.lm_head.weight = self.wte.weight  # weight tying: the same matrix reads and writes tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if config.zero_init and (name.endswith("c_proj.weight") or name == "lm_head.weight"):
                nn.init.zeros_(p)  # each block starts as the identity, the first logits are uniform
            elif name.endswith("c_proj.weight"):
                # GPT-2: scale residual projections so the residual stream's variance does not grow with depth.
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

    def _hidden(self, idx, kvs=None, explicit=False):
        """idx (B, T), kvs: one CachedKV or ExplicitKV per layer (or None) -> the final hidden states
        (B, T, C) and every layer's attention weights (explicit path; else Nones)."""
        B, T = idx.shape
        P = 0 if kvs is None else kvs[0].pos
        if P + T > self.config.block_size:
            raise UserError(
                f"input of {P + T} tokens is longer than the context (block_size={self.config.block_size}); crop it first"
            )
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos == "learned":
            x = x + self.wpe(torch.arange(P, P + T, device=idx.device))
        else:  # rotary: the angles of positions P .. P + T - 1, once for every layer
            rope = rotary_angles(torch.arange(P, P + T, device=idx.device), self.config.n_embd // self.config.n_head,
                                 self.config.rope_base, idx.device, x.dtype)
        x = self.drop(x)
        maps = []
        for i, block in enumerate(self.blocks):
            x, weights = block(x, None if kvs is None else kvs[i], rope, explicit)
            maps.append(weights)
        return self.ln_f(x), maps

    def forward(self, idx, targets=None, cache: KVCache | None = None, last_only: bool = False, explicit: bool = False,
                head_chunk: int = 0):
        """idx (B, T) of token ids -> logits (B, T, V) (or (B, 1, V) with last_only), and the
        mean cross-entropy against targets (B, T) when given (targets of -100 are left out). With a
        cache, the positions in it come first and the new keys/values are written into it.
        head_chunk > 0 (with targets): the head and the loss that many rows at a time
        (`chunked_loss.py`); the logits are never made, and None is returned for them."""
        kvs = None
        if cache is not None:
            kvs = cache.layers(self, idx.size(0), idx.size(1), self.wte.weight.dtype, idx.device)
        x, _ = self._hidden(idx, kvs, explicit)
        if cache is not None:
            cache.pos += idx.size(1)
        if head_chunk and targets is not None:
            x = x.reshape(-1, x.size(-1))  # (B*T, C)
            return None, chunked_cross_entropy(x, self.lm_head.weight, targets.reshape(-1), head_chunk)
        if last_only and targets is None:
            x = x[:, -1:, :]  # generation needs only the next-token distribution
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def forward_kv(self, idx, past=None):
        """The same forward with the keys/values as explicit tensors (what an ONNX graph holds):
        idx (B, T), past (L, 2, B, nh, P, hs) or None -> logits (B, T, V), present (L, 2, B, nh, P + T, hs)."""
        kvs = [ExplicitKV(None if past is None else past[i]) for i in range(self.config.n_layer)]
        x, _ = self._hidden(idx, kvs)
        return self.lm_head(x), torch.stack([kv.present for kv in kvs])

    def slide(self, cache: KVCache, n: int) -> None:
        """Drop the n oldest positions of `cache` so generation can go on past block_size without a
        new prefill (`slide_past`); only rotary positions allow it."""
        if self.config.pos != "rope":
            raise UserError("only a model with rotary positions (pos='rope') can slide its cache; re-prefill instead")
        cache.slide(n, self.config.rope_base)

    @torch.no_grad()
    def attention_maps(self, idx):
        """Logits and attention weights of every layer (list of (B, nh, T, T)), explicit path, in
        eval mode (no dropout; the mode is restored after)."""
        was_training = self.training
        self.eval()
        try:
            x, maps = self._hidden(idx, explicit=True)
            return self.lm_head(x), maps
        finally:
            self.train(was_training)

    def check_vocab(self, tokenizer) -> None:
        """Refuse a tokenizer whose vocabulary is not the one this model was built for."""
        n = tokenizer.get_vocab_size()
        if n != self.config.vocab_size:
            raise UserError(
                f"tokenizer has {n:,} tokens but the model was built for {self.config.vocab_size:,}: "
                "use the tokenizer saved with the checkpoint"
            )


def slide_past(past, n: int, rope_base: float) -> torch.Tensor:
    """past (L, 2, B, nh, P, hs) of a rotary model -> (L, 2, B, nh, P - n, hs) without the n oldest
    positions. Keys hold positions relative to each other, so rotating the kept keys n positions
    back makes them the keys of a sequence that starts n later; values carry no position. (With
    more than one layer the kept entries still remember the dropped tokens through earlier
    layers: sliding is not the same as recomputing the last window, only cheaper.)"""
    keys = rotary(past[:, 0, ..., n:, :], -n, rope_base)
    return torch.stack([keys, past[:, 1, ..., n:, :]], dim=1)
