"""The comparison model of `mini-llm bench step`: a minimal GPT written from the published
architecture of a well-known one (nanoGPT), with its own optimizer setup."""

import torch

from mini_llm.model import GPTConfig


class _RefBlock(torch.nn.Module):
    """One block of the reference minimal GPT (nanoGPT's published layout): pre-LayerNorm with
    biases, one qkv matmul, fused causal SDPA, an exact-GELU MLP of width 4C."""

    def __init__(self, C: int, n_head: int):
        super().__init__()
        nn = torch.nn
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.c_attn(self.ln_1(x)).split(C, dim=2))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(torch.nn.functional.gelu(self.c_fc(self.ln_2(x))))


class ReferenceGPT(torch.nn.Module):
    """The comparison model for the step-speed benchmark, written here from the published
    architecture of a well-known minimal GPT (nanoGPT): learned positions, tied head, N(0, 0.02)
    init, and its own optimizer setup (`reference_optimizer`)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        nn = torch.nn
        self.wte, self.wpe = nn.Embedding(cfg.vocab_size, cfg.n_embd), nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(_RefBlock(cfg.n_embd, cfg.n_head) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for block in self.blocks:  # residual projections scaled by depth
            for proj in (block.attn_proj, block.mlp_proj):
                nn.init.normal_(proj.weight, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def reference_optimizer(model, device):
    """The reference's AdamW: decay on matrices only, betas (0.9, 0.95), fused on CUDA only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                             lr=6e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
