"""The checks of notebook 04: right answers (in every standard form) pass, public and hidden cases;
wrong ones fail naming the input; echoing the inputs fails; unwritten says so; changing the inputs
in place cannot fool them; each step hands on yours or the package's piece. Then the notebook's
step and exercise cells."""

import math
import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.course import checks as ex
from mini_llm.course.checks.nb04_minigpt import MODEL_GELU, PackageBlock, forward_cached
from mini_llm.model import MLP, Block, GPTConfig, MiniGPT
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    contract_tests,
    exercise_pairs,
    notebook_code_cells,
    notebook_tests,
    step_tests,
)

# --- the steps: LayerNorm, GELU, MLP, Block, GPT, forward_cached ----------------------------------


class LayerNorm(nn.Module):  # the notebook's
    def __init__(self, n_embd, eps=1e-5):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(n_embd)), nn.Parameter(torch.zeros(n_embd)), eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class LayerNormRsqrt(LayerNorm):  # another correct form: torch.var(unbiased=False) and rsqrt
    def forward(self, x):
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)
        return self.weight * ((x - mean) * torch.rsqrt(var + self.eps)) + self.bias


class LayerNormFunctional(LayerNorm):  # another correct form: F.layer_norm with its own parameters
    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class LayerNormUnbiased(LayerNorm):  # wrong: the unbiased variance (divides by C - 1)
    def forward(self, x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + self.eps) * self.weight + self.bias


class LayerNormNoEps(LayerNorm):  # wrong: no epsilon
    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        return (x - mean) / ((x - mean) ** 2).mean(-1, keepdim=True).sqrt() * self.weight + self.bias


class LayerNormGammaBeta(nn.Module):  # wrong: other parameter names, so nn.LayerNorm's weights do not load
    def __init__(self, n_embd):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.ones(n_embd)), nn.Parameter(torch.zeros(n_embd))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class LayerNormFirstDim(LayerNorm):  # wrong: statistics over the first dimension
    def forward(self, x):
        mean = x.mean(0, keepdim=True)
        var = ((x - mean) ** 2).mean(0, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def gelu(x):  # the notebook's
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_sigmoid(x):  # another correct form: 0.5 (1 + tanh z) = sigmoid(2 z)
    return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3)))


class MLPNotebook(nn.Module):  # the notebook's
    def __init__(self, config):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(config.n_embd, 4 * config.n_embd), nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(gelu(self.c_fc(x)))


class MLPFunctional(MLPNotebook):  # another correct form: a GELU module and F.linear on the weights
    def __init__(self, config):
        super().__init__(config)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, x):
        return F.linear(self.act(F.linear(x, self.c_fc.weight, self.c_fc.bias)), self.c_proj.weight, self.c_proj.bias)


class MLPRelu(MLPNotebook):  # wrong: ReLU
    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)))


class MLPExactGelu(MLPNotebook):  # wrong: the erf GELU
    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class MLPNarrow(MLPNotebook):  # wrong: 2C inside, so the package's weights do not load
    def __init__(self, config):
        nn.Module.__init__(self)
        self.c_fc, self.c_proj = nn.Linear(config.n_embd, 2 * config.n_embd), nn.Linear(2 * config.n_embd, config.n_embd)


def attend(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1) @ v


class CausalSelfAttention(nn.Module):  # the notebook's (shown, not a step)
    def __init__(self, config, causal=True):
        super().__init__()
        self.n_head, self.causal = config.n_head, causal
        self.c_attn, self.c_proj = nn.Linear(config.n_embd, 3 * config.n_embd), nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2)]
        mask = torch.ones(T, T, dtype=torch.bool).tril() if self.causal else torch.ones(T, T, dtype=torch.bool)
        return self.c_proj(attend(q, k, v, mask).transpose(1, 2).reshape(B, T, C))


class BlockNotebook(nn.Module):  # the notebook's
    def __init__(self, config, causal=True):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(config.n_embd), CausalSelfAttention(config, causal)
        self.ln_2, self.mlp = LayerNorm(config.n_embd), MLPNotebook(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class BlockSdpa(nn.Module):  # another correct form: nn.LayerNorm, the fused kernel, the package's MLP
    def __init__(self, config):
        super().__init__()
        self.ln_1, self.ln_2, self.mlp = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd), MLP(config)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = nn.Linear(config.n_embd, 3 * config.n_embd), nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.attn.c_attn(self.ln_1(x)).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn.c_proj(y)
        return x + self.mlp(self.ln_2(x))


class BlockPostLN(BlockNotebook):  # wrong: LayerNorm after the additions
    def forward(self, x):
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


class BlockNoMLPResidual(BlockNotebook):  # wrong: the MLP replaces the stream
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return self.mlp(self.ln_2(x))


class BlockNotCausal(BlockNotebook):  # wrong: attention sees the future
    def __init__(self, config):
        super().__init__(config, causal=False)


class GPTNotebook(nn.Module):  # the notebook's
    def __init__(self, config, tie=True, scale_proj=True, positions=True):
        super().__init__()
        self.config, self.positions = config, positions
        self.wte, self.wpe = nn.Embedding(config.vocab_size, config.n_embd), nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(BlockNotebook(config) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") and scale_proj:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(self, idx, targets=None):
        T = idx.size(1)
        x = self.wte(idx) + (self.wpe(torch.arange(T)) if self.positions else 0)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


class GPTApply(nn.Module):  # another correct form: init by self.apply, nn.LayerNorm, the package's Block
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte, self.wpe = nn.Embedding(config.vocab_size, config.n_embd), nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(PackageBlock(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # tied the other way round: the same tensor
        self.apply(self._init)
        for block in self.blocks:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe.weight[: idx.size(1)]
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class GPTUntied(GPTNotebook):  # wrong: a separate LM head
    def __init__(self, config):
        super().__init__(config, tie=False)


class GPTUnscaledProj(GPTNotebook):  # wrong: c_proj at 0.02 like the rest
    def __init__(self, config):
        super().__init__(config, scale_proj=False)


class GPTLossAlways(GPTNotebook):  # wrong: a loss of 0 without targets
    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        return logits, torch.tensor(0.0) if loss is None else loss


class GPTLastLogits(GPTNotebook):  # wrong: logits of the last position only
    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        return logits[:, -1:], loss


def _cached(model, idx, past, mask_of, positions_from_zero=False, keep_past=True, sdpa=False):
    B, T = idx.shape
    P = 0 if past is None else past[0][0].size(2)
    nh, C = model.config.n_head, model.config.n_embd
    start = 0 if positions_from_zero else P
    x = model.wte(idx) + model.wpe(torch.arange(start, start + T))
    present = []
    for i, block in enumerate(model.blocks):
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in block.attn.c_attn(block.ln_1(x)).split(C, dim=2))
        if past is not None and keep_past:
            k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
        present.append((k, v))
        if sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_of(T, k.size(2) - T))
        else:
            y = attend(q, k, v, mask_of(T, k.size(2) - T))
        x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.ln_f(x)), present


def _shifted(T, P):
    return torch.ones(T, P + T, dtype=torch.bool).tril(diagonal=P)


def forward_cached_notebook(model, idx, past=None):
    return _cached(model, idx, past, _shifted)


def forward_cached_tensor(model, idx, past=None):
    """Another correct form: the fused kernel with the shifted mask, the cache as one tensor (L, 2, B, nh, P, hs)."""
    pairs = None if past is None else [(layer[0], layer[1]) for layer in past]
    logits, present = _cached(model, idx, pairs, _shifted, sdpa=True)
    return logits, torch.stack([torch.stack(kv) for kv in present])


def cached_is_causal(model, idx, past=None):  # trap 1: the mask aligned top left
    return _cached(model, idx, past, lambda T, P: torch.ones(T, P + T, dtype=torch.bool).tril())


def cached_positions_from_zero(model, idx, past=None):
    return _cached(model, idx, past, _shifted, positions_from_zero=True)


def cached_forgets_the_past(model, idx, past=None):
    return _cached(model, idx, past, _shifted, keep_past=False)

# --- post_ln_block: LayerNorm after each residual addition ---------------------------------------


def _attention(x, w, n_head, causal=True, scale=True):
    B, T, C = x.shape
    q, k, v = F.linear(x, w["attn.c_attn.weight"], w["attn.c_attn.bias"]).split(C, dim=2)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / (math.sqrt(C // n_head) if scale else 1.0)
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    return F.linear(y, w["attn.c_proj.weight"], w["attn.c_proj.bias"])


def _mlp(x, w, approximate="tanh"):
    h = F.gelu(F.linear(x, w["mlp.c_fc.weight"], w["mlp.c_fc.bias"]), approximate=approximate)
    return F.linear(h, w["mlp.c_proj.weight"], w["mlp.c_proj.bias"])


def _ln(x, w, name):
    return F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], eps=1e-5)


def post_ln_block(x, w, n_head, approximate="tanh", causal=True, scale=True):
    x = _ln(x + _attention(x, w, n_head, causal, scale), w, "ln_1")
    return _ln(x + _mlp(x, w, approximate), w, "ln_2")


def post_ln_block_modules(x, weights, n_head):
    """Another correct form: the package's modules, SDPA for attention, a numpy array back."""
    B, T, C = x.shape
    block = Block(GPTConfig(vocab_size=2, block_size=T, n_embd=C, n_head=n_head, n_layer=1)).eval()
    block.load_state_dict(weights)
    with torch.no_grad():
        q, k, v = block.attn.qkv(x)
        y = block.attn.merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        h = block.ln_1(x + y)
        return block.ln_2(h + block.mlp(h)).numpy()


def pre_ln_block(x, w, n_head):  # the notebook's block, not this exercise's
    x = x + _attention(_ln(x, w, "ln_1"), w, n_head)
    return x + _mlp(_ln(x, w, "ln_2"), w)


def post_ln_forgets_ln_2(x, w, n_head):
    x = _ln(x + _attention(x, w, n_head), w, "ln_1")
    return x + _mlp(x, w)


def post_ln_in_place_trick(x, w, n_head):
    """Zeroes the caller's attention and MLP weights, then answers for those: right only for a check
    that computes its expected value after the call, from the changed weights."""
    for name, t in w.items():
        if not name.startswith("ln_"):
            t.zero_()
    return post_ln_block(x, w, n_head)


# --- decode_step: one token on a preallocated cache ---------------------------------------------


def _step(model, token, cache, pos, attend, write=True, position=None, slot=None):
    x = model.wte(token) + model.wpe(torch.tensor([pos if position is None else position]))
    B, _, C = x.shape
    nh = cache.size(3)
    for layer, block in enumerate(model.blocks):
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, 1, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        if write:
            cache[layer, 0, :, :, pos if slot is None else slot] = k[:, :, 0]
            cache[layer, 1, :, :, pos if slot is None else slot] = v[:, :, 0]
            keys, values = cache[layer, 0], cache[layer, 1]
        else:  # a copy grown with torch.cat: right logits, the cache never written
            keys = torch.cat([cache[layer, 0, :, :, :pos], k], dim=2)
            values = torch.cat([cache[layer, 1, :, :, :pos], v], dim=2)
        y = attend(q, keys, values, pos)
        x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, 1, C))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.ln_f(x))


def _sliced(q, keys, values, pos):
    return F.softmax(q @ keys[:, :, :pos + 1].transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1) @ values[:, :, :pos + 1]


def _masked(q, keys, values, pos):
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.size(-1))
    scores[..., pos + 1:] = float("-inf")
    return F.softmax(scores, dim=-1) @ values


def decode_step(model, token, cache, pos):
    return _step(model, token, cache, pos, _sliced)


def decode_step_masked_2d(model, token, cache, pos):
    """Another correct form: attends over the whole buffer with the garbage masked, returns (B, V)."""
    return _step(model, token, cache, pos, _masked)[:, 0]


def decode_step_sdpa(model, token, cache, pos):
    """Another correct form: the fused kernel on the filled slots, without is_causal."""
    return _step(model, token, cache, pos,
                 lambda q, k, v, p: F.scaled_dot_product_attention(q, k[:, :, :p + 1], v[:, :, :p + 1]))


def step_reads_garbage(model, token, cache, pos):
    return _step(model, token, cache, pos, lambda q, k, v, p: F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -1) @ v)


def step_is_causal(model, token, cache, pos):  # trap 1 in docs/TRAPS.md: one query, many keys, the mask aligned top left
    return _step(model, token, cache, pos,
                 lambda q, k, v, p: F.scaled_dot_product_attention(q, k[:, :, :p + 1], v[:, :, :p + 1], is_causal=True))


def step_position_zero(model, token, cache, pos):
    return _step(model, token, cache, pos, _sliced, position=0)


def step_without_writing(model, token, cache, pos):
    return _step(model, token, cache, pos, lambda q, k, v, p: F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -1) @ v,
                 write=False)


def step_writes_everywhere_after(model, token, cache, pos):
    logits = decode_step(model, token, cache, pos)
    cache[..., pos + 1:, :] = 0.0  # "cleans" the slots it should leave alone
    return logits


def step_calls_forward_kv(model, token, cache, pos):
    logits, present = model.forward_kv(token, cache[..., :pos, :])
    cache[..., pos, :] = present[..., pos, :]
    return logits


# --- previous_token_scores -------------------------------------------------------------------------


def scores_diagonal(maps):
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def scores_loops(maps):
    """Another correct form: nested Python lists of floats."""
    L, nh, T, _ = maps.shape
    return [[sum(float(maps[l, h, i, i - 1]) for i in range(1, T)) / (T - 1) for h in range(nh)] for l in range(L)]


def scores_numpy(maps):
    m = maps.numpy()
    T = m.shape[-1]
    return np.stack([m[..., i, i - 1] for i in range(1, T)], axis=-1).mean(-1)


def scores_with_row_zero(maps):  # averages over T rows, row 0 contributing 0
    T = maps.size(-1)
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / T


def scores_self(maps):
    return maps.diagonal(dim1=-2, dim2=-1)[..., 1:].mean(-1)


def scores_sum(maps):
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1)


def scores_argmax_share(maps):  # section 6's count, not the mean weight
    T = maps.size(-1)
    return (maps[..., 1:, :].argmax(-1) == torch.arange(T - 1)).float().mean(-1)


def scores_in_place_trick(maps):
    """Zeroes the caller's maps, then returns zeros: right only if the check compared after the call."""
    maps.zero_()
    return maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_layer_norm: ([LayerNorm, LayerNormRsqrt, LayerNormFunctional],
                          [LayerNormUnbiased, LayerNormNoEps, LayerNormGammaBeta, LayerNormFirstDim],
                          lambda C: nn.Identity()),
    ex.check_gelu: ([gelu, gelu_sigmoid, lambda x: F.gelu(x, approximate="tanh")],
                    [F.gelu, lambda x: x * torch.sigmoid(1.702 * x), F.relu,
                     lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.44715 * x ** 3)))],
                    lambda x: x),
    ex.check_mlp: ([MLPNotebook, MLPFunctional], [MLPRelu, MLPExactGelu, MLPNarrow], lambda config: nn.Identity()),
    ex.check_block: ([BlockNotebook, BlockSdpa], [BlockPostLN, BlockNoMLPResidual, BlockNotCausal],
                     lambda config: nn.Identity()),
    ex.check_gpt: ([GPTNotebook, GPTApply], [GPTUntied, GPTUnscaledProj, GPTLossAlways, GPTLastLogits,
                                             lambda config: GPTNotebook(config, positions=False)],
                   lambda config: config),
    ex.check_forward_cached: ([forward_cached_notebook, forward_cached_tensor],
                              [cached_is_causal, cached_positions_from_zero, cached_forgets_the_past],
                              lambda model, idx, past=None: (idx, past)),
    ex.check_post_ln_block: ([post_ln_block, post_ln_block_modules],
                             [pre_ln_block, post_ln_forgets_ln_2, post_ln_in_place_trick,
                              lambda x, w, nh: post_ln_block(x, w, nh, approximate="none"),
                              lambda x, w, nh: post_ln_block(x, w, nh, causal=False),
                              lambda x, w, nh: post_ln_block(x, w, nh, scale=False)],
                             lambda x, w, nh: x),
    ex.check_decode_step: ([decode_step, decode_step_masked_2d, decode_step_sdpa],
                           [step_reads_garbage, step_is_causal, step_position_zero, step_without_writing,
                            step_writes_everywhere_after, step_calls_forward_kv,
                            lambda m, t, c, p: _step(m, t, c, p, lambda q, k, v, pp: _sliced(q, k, v, pp + 1), slot=p + 1)],
                           lambda model, token, cache, pos: token),
    ex.check_previous_token_scores: ([scores_diagonal, scores_loops, scores_numpy],
                                     [scores_with_row_zero, scores_self, scores_sum, scores_argmax_share,
                                      scores_in_place_trick],
                                     lambda maps: maps),
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES, may_raise=True)

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_layer_norm: nn.LayerNorm, ex.check_gelu: MODEL_GELU, ex.check_mlp: MLP, ex.check_block: PackageBlock,
         ex.check_gpt: MiniGPT, ex.check_forward_cached: forward_cached}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_the_stand_ins_are_the_packages():
    """What the notebook goes on with is model.py's: its GELU, its Block (one output), MiniGPT, and a
    cached forward equal to forward_kv."""
    assert MODEL_GELU.approximate == "tanh" and isinstance(MODEL_GELU, nn.GELU)
    config = GPTConfig(vocab_size=30, block_size=8, n_embd=16, n_head=2, n_layer=2)
    torch.manual_seed(0)
    block, x = PackageBlock(config), torch.randn(2, 5, 16)
    assert torch.equal(block(x), Block.forward(block, x)[0])
    model, idx = MiniGPT(config).eval(), torch.randint(0, 30, (2, 8))
    with torch.no_grad():
        logits, present = forward_cached(model, idx[:, :5])
        step_logits, present = forward_cached(model, idx[:, 5:], present)
        full, kv = model.forward_kv(idx)
    assert torch.allclose(torch.cat([logits, step_logits], 1), full, atol=1e-5)
    assert torch.allclose(torch.stack([torch.stack(p) for p in present]), kv, atol=1e-5)


def test_step_feedback_names_the_difference():
    message = ex.check_layer_norm(LayerNormUnbiased).message
    assert message.startswith("LayerNorm(tensor(2, 5, 16)") and "<weights of nn.LayerNorm(16)>" in message, message
    assert "first difference at [0][0, 0, 0]" in message and "biased one" in message
    assert "raised RuntimeError: Error(s) in loading state_dict" in ex.check_layer_norm(LayerNormGammaBeta).message
    message = ex.check_gelu(F.gelu).message
    assert message.startswith("gelu([-4.0, -3.0,") and "first difference at [0]: expected -7.02" in message, message
    assert "GPTConfig(n_embd=16, n_head=4)" in ex.check_block(BlockPostLN).message
    assert "a fresh model: lm_head.weight is not wte.weight" in ex.check_gpt(GPTUntied).message
    message = ex.check_gpt(GPTUnscaledProj).message
    assert "blocks.0.attn.c_proj.weight has std 0.02" in message and "not about 0.0141" in message, message
    assert "a loss without targets" in ex.check_gpt(GPTLossAlways).message
    assert "logits of shape (2, 1, 50), not (2, 8, 50)" in ex.check_gpt(GPTLastLogits).message
    message = ex.check_forward_cached(cached_is_causal).message
    assert "forward_cached(<MiniGPT L=1 nh=2 C=16; B=1, chunks of 3, 1, 1, 1>)" in message, message
    assert "the 1 tokens at 3: logits that differ from the full forward's" in message
    assert "the 3 tokens at 0" not in message  # a prefill without a past is right either way
    message = ex.check_forward_cached(lambda m, idx, past=None: (forward_cached_notebook(m, idx, past)[0], past or []))
    assert "after the chunk ending at 3: present is not a list of (k, v), one per layer" in message.message, message
    message = ex.check_forward_cached(lambda m, idx, past=None: forward_cached_tensor(m, idx, past)[0:1] + (torch.zeros(1, 2, 1, 2, 2, 8),))
    assert "after the chunk ending at 3: a cache of shape (1, 2, 1, 2, 2, 8) (as (L, 2, B, nh, P, hs)), not (1, 2, 1, 2, 3, 8)" in message.message


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public answers passes them and fails the hidden ones."""
    for check, right, key in ((ex.check_previous_token_scores, scores_diagonal, lambda maps: tuple(maps.shape)),
                              (ex.check_post_ln_block, post_ln_block, lambda x, w, nh: (tuple(x.shape), nh))):
        seen = {}

        def recorder(*args):
            seen[key(*args)] = right(*args)
            return seen[key(*args)]

        assert check(recorder)
        public = dict(seen)
        memorised = lambda *args: public[key(*args)]  # noqa: E731
        assert check(memorised)
        result = check(memorised, hidden=True)
        assert not result and "raised KeyError" in result.message, result.message


def test_feedback_is_specific():
    result = ex.check_decode_step(step_is_causal)
    assert "decode step(<MiniGPT L=1 nh=2 C=16; B=1, 3 cached, 4 steps>)" in result.message, result.message
    assert "at pos 3: logits that differ from the full forward's" in result.message
    result = ex.check_decode_step(step_without_writing)
    assert "does not hold this token's keys and values at position 3" in result.message, result.message
    result = ex.check_decode_step(step_writes_everywhere_after)
    assert "the cache changed at positions other than 3" in result.message, result.message
    result = ex.check_decode_step(step_calls_forward_kv)
    assert "raised RuntimeError: model.forward_kv was called" in result.message, result.message
    result = ex.check_decode_step(lambda model, token, cache, pos: token)
    assert "(1, 1) came back, not logits of shape (1, 1, 30)" in result.message, result.message
    result = ex.check_post_ln_block(pre_ln_block)
    assert "post-LN block(tensor(2, 5, 16)" in result.message and "<weights of a Block, n_embd=16>, 4)" in result.message
    assert "LayerNorm_1(x + attention)" in result.message
    result = ex.check_previous_token_scores(scores_with_row_zero)
    assert "previous-token scores(tensor(2, 4, 6, 6)" in result.message and "rows\n1..T-1" not in result.message
    assert "average over rows 1..T-1" in result.message


def test_the_checks_leave_the_global_rng_and_the_model_alone():
    assert_checks_leave_the_global_rng_alone(CASES)
    a, b = ex.check_decode_step(step_is_causal, hidden=True), ex.check_decode_step(step_is_causal, hidden=True)
    assert a.message == b.message


def test_a_block_and_the_model_refuse_to_run_whole_in_the_decode_check():
    """Calling a block (or its attention) is refused with the reason; its pieces still run."""

    def calls_a_block(model, token, cache, pos):
        model.blocks[0](model.wte(token))

    def calls_the_attention(model, token, cache, pos):
        model.blocks[0].attn(model.wte(token))

    for fn, name in ((calls_a_block, "model.blocks[0] (its forward)"), (calls_the_attention, "model.blocks[0].attn (its forward)")):
        result = ex.check_decode_step(fn)
        assert not result and f"{name} was called" in result.message, result.message


# --- the exercise cells of notebook 04 ------------------------------------------------------------


def _exercises():
    return exercise_pairs("04_minigpt")



def test_the_notebook_steps_pass_their_checks():
    """The step cells run in order (with the attention cell they build on): each passes its proof."""
    scope, steps = {}, 0
    for cell in notebook_code_cells("04_minigpt"):
        if "### BEGIN SOLUTION" in cell.source and "proof" not in cell.source:
            exec(cell.source, scope)
        elif "class CausalSelfAttention" in cell.source:
            exec(cell.source.split("\nattn = ")[0], scope)
        elif "proof = check_" in cell.source:
            check, name = re.search(r"^proof = (check_\w+)\((\w+)\)$", cell.source, re.M).groups()
            result = getattr(ex, check)(scope[name], hidden=True)
            assert result and result.piece is scope[name], result.message
            steps += 1
        if steps == 6:
            break
    assert steps == 6


def test_the_notebook_solutions_pass_their_checks():
    for solution, check in _exercises():
        if "proof = " in check.source:
            continue  # a step: above
        scope = {"math": math, "torch": torch, "F": F}
        exec(solution.source, scope)
        name, fn = re.search(r"^(check_\w+)\((\w+)\)$", check.source, re.M).groups()
        result = getattr(ex, name)(scope[fn], hidden=True)
        assert result, result.message



def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    """The committed outputs say True for every proof (torch.equal where the operations are the
    same), and the cells nbval compares print no machine-dependent floating-point values."""
    checked = [c for c in notebook_code_cells("04_minigpt") if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 16
    text = "".join(o.get("text", "") for c in checked for o in c.outputs)
    assert "False" not in text and text.count("True") >= 25, text
    assert "== mini_llm.attention.MultiHeadAttention: True" in text and "loss == MiniGPT's (allclose): True" in text
    assert "previous-token heads (largest weight on the previous token in more than half the rows): [(0, 0)]" in text
    assert not re.search(r"\d\.\d{3,}", text), text
    sources = "".join(c.source for c in notebook_code_cells("04_minigpt"))
    assert "attention_explorer(trained, tok)" in sources and "trained_model()" in sources
    assert "mine.load_state_dict(theirs.state_dict())" in sources


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests("04_minigpt", CASES, ex,
                                                            {"math": math, "torch": torch, "nn": nn, "F": F})
