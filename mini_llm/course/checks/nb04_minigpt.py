"""Checks of notebook 04 (MiniGPT): a post-LN block, a decode step on a preallocated cache, previous-token scores."""

import copy
import math

import torch

from mini_llm.course.checks.harness import (
    Label,
    Result,
    Verdict,
    close,
    on_copies,
    run_cases,
    small_model,
)


def _unit_scale(module, g: torch.Generator):
    """Weights of a scale at which every piece matters: Linear weights ~ N(0, 1/fan_in), embeddings
    ~ N(0, 1), LayerNorm weights around 1, biases around 0. Changes `module` in place."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # a LayerNorm weight
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.size(1) if "wte" not in name and "wpe" not in name else 1
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return module


def check_post_ln_block(fn, hidden: bool = False) -> Result:
    """fn(x, weights, n_head) -> a post-LayerNorm block's output (B, T, C):
    x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)), with `weights` named like the package Block's."""
    from mini_llm.model import Block, GPTConfig

    def case(B, T, C, nh, seed):
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            block = Block(GPTConfig(vocab_size=2, block_size=T, n_embd=C, n_head=nh, n_layer=1)).eval()
        _unit_scale(block, g)
        x = torch.randn(B, T, C, generator=g)
        with torch.no_grad():
            h = block.ln_1(x + block.attn(x)[0])  # attention on x itself, LayerNorm after the add
            want = block.ln_2(h + block.mlp(h))
        weights = {name: t.clone() for name, t in block.state_dict().items()}
        return ((x, Label(weights, f"<weights of a Block, n_embd={C}>"), nh), want)

    def run(x, weights, n_head):
        return fn(x.clone(), {name: t.clone() for name, t in weights.value.items()}, n_head)

    cases = [case(2, 5, 16, 4, 0), case(1, 7, 8, 2, 1), case(3, 4, 12, 3, 2)]
    hidden_cases = [case(1, 1, 8, 1, 3), case(2, 9, 24, 6, 4), case(2, 6, 16, 2, 5), case(1, 12, 32, 8, 6)]
    return run_cases("post-LN block", run, cases, "post-LN: attention reads x itself (no LayerNorm before it), then "
                  "x = LayerNorm_1(x + attention); the MLP reads that x, then x = LayerNorm_2(x + MLP). Attention: "
                  "c_attn, split into q, k, v, heads of C // n_head channels, causal softmax(q k^T / sqrt(head "
                  "size)) v, heads side by side again, c_proj. The MLP's GELU is the tanh approximation; "
                  "LayerNorm's eps is 1e-5.",
                  lambda got, want: close(got, want, 1e-4), hidden_cases=hidden_cases, hidden=hidden)


class _Forbidden:
    """Stands in for a forward method the decode-step exercise asks the learner to write."""

    def __init__(self, what: str):
        self.what = what

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} was called: this exercise is to write the step from the model's parts "
                           "(wte, wpe, each block's ln_1, attn.c_attn, attn.c_proj, ln_2, mlp, then ln_f, lm_head)")


def _parts_only(model):
    """A copy of a MiniGPT whose whole-model, block and attention forwards refuse to run."""
    model = copy.deepcopy(model)
    for name in ("forward", "forward_kv", "_hidden", "attention_maps"):
        setattr(model, name, _Forbidden(f"model.{name}"))
    for i, block in enumerate(model.blocks):
        block.forward = _Forbidden(f"model.blocks[{i}] (its forward)")
        block.attn.forward = _Forbidden(f"model.blocks[{i}].attn (its forward)")
    return model


def check_decode_step(fn, hidden: bool = False) -> Result:
    """fn(model, token, cache, pos) -> logits (B, 1, V) (or (B, V)) of the token at position pos,
    after writing its keys and values into the preallocated cache (L, 2, B, nh, block_size, hs)
    in place; positions 0..pos-1 of the cache hold the earlier tokens', the rest is garbage."""

    def case(seed, B, prompt, steps, **sizes):
        model = small_model(seed, **sizes)
        g = torch.Generator().manual_seed(seed)
        _unit_scale(model, g)
        idx = torch.randint(0, model.config.vocab_size, (B, prompt + steps), generator=g)
        with torch.no_grad():
            full, present = model.forward_kv(idx)  # (B, P, V), (L, 2, B, nh, P, hs)
        c = model.config
        text = f"<MiniGPT L={c.n_layer} nh={c.n_head} C={c.n_embd}; B={B}, {prompt} cached, {steps} steps>"
        want = Verdict(True, f"{steps} steps with the logits of the full forward, each token's keys and values "
                              "written at its position, nothing else in the cache changed")
        return ((Label(dict(model=model, idx=idx, full=full, present=present, prompt=prompt, seed=seed), text),), want)

    def run(spec):
        s = spec.value
        model, idx, full, present, prompt = s["model"], s["idx"], s["full"], s["present"], s["prompt"]
        L, _, B, nh, n, hs = present.shape
        V, size = model.config.vocab_size, model.config.block_size
        g = torch.Generator().manual_seed(s["seed"] + 100)
        cache = 3 * torch.randn(L, 2, B, nh, size, hs, generator=g)  # garbage where nothing is cached yet
        cache[..., :prompt, :] = present[..., :prompt, :]
        parts = _parts_only(model)
        for pos in range(prompt, n):
            before = cache.clone()
            with torch.no_grad():
                got = fn(parts, idx[:, pos:pos + 1].clone(), cache, pos)
            if not isinstance(got, torch.Tensor) or got.shape not in ((B, 1, V), (B, V)):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                return Verdict(False, f"at pos {pos}: {shape} came back, not logits of shape {(B, 1, V)}")
            diff = (got.reshape(B, V).double() - full[:, pos].double()).abs().max().item()
            if not diff <= 1e-4 * (1 + full[:, pos].abs().max().item()):
                return Verdict(False, f"at pos {pos}: logits that differ from the full forward's by up to {diff:.3g}")
            if not torch.allclose(cache[..., pos, :], present[..., pos, :], atol=1e-4, rtol=1e-4):
                return Verdict(False, f"at pos {pos}: afterwards the cache does not hold this token's keys and "
                                       f"values at position {pos} (write them into `cache` itself)")
            others = torch.ones(size, dtype=torch.bool)
            others[pos] = False
            if not torch.equal(cache[..., others, :], before[..., others, :]):
                return Verdict(False, f"at pos {pos}: the cache changed at positions other than {pos}")
        return Verdict(True, f"{n - prompt} steps with the logits of the full forward, each token's keys and values "
                              "written at its position, nothing else in the cache changed")

    cases = [case(0, 1, 3, 4, vocab_size=30, block_size=8, n_embd=16, n_head=2, n_layer=1),
             case(1, 2, 5, 6, vocab_size=40, block_size=16, n_embd=16, n_head=4, n_layer=2)]
    hidden_cases = [case(2, 1, 1, 7, vocab_size=20, block_size=8, n_embd=8, n_head=1, n_layer=1),
                    case(3, 3, 4, 3, vocab_size=50, block_size=7, n_embd=24, n_head=3, n_layer=3),
                    case(4, 2, 10, 6, vocab_size=30, block_size=32, n_embd=32, n_head=8, n_layer=2)]
    return run_cases("decode step", run, cases, "the token sits at position pos: its embedding plus wpe at pos. In "
                  "each block, its q, k, v come from c_attn(ln_1(x)); write k and v into cache[layer, 0] and "
                  "cache[layer, 1] at position pos (index assignment changes the tensor in place); the query then "
                  "attends over positions 0..pos only (the slots after pos hold garbage: slice them off; one query "
                  "needs no mask); c_proj and the residual, then the MLP and its residual; ln_f and lm_head last.",
                  lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden)


def check_previous_token_scores(fn, hidden: bool = False) -> Result:
    """fn(maps) -> (L, nh): for each head of attention maps (L, nh, T, T), the mean over rows
    i = 1..T-1 of the weight row i puts on key i - 1."""

    def case(L, nh, T, seed, previous=None):
        g = torch.Generator().manual_seed(seed)
        scores = 2 * torch.randn(L, nh, T, T, generator=g)
        if previous is not None:  # make one head a previous-token head, as training does
            scores[previous][1:, :-1] += 6 * torch.eye(T - 1)
        maps = torch.softmax(scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")), dim=-1)
        want = maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # entries (i, i - 1) for i = 1..T-1
        return ((maps,), want)

    cases = [case(2, 4, 6, 0, previous=(1, 2)), case(1, 2, 5, 1), case(3, 1, 8, 2, previous=(0, 0))]
    hidden_cases = [case(1, 1, 2, 3), case(2, 3, 17, 4, previous=(1, 0)), case(4, 4, 10, 5, previous=(3, 3)),
                    case(1, 2, 3, 6)]
    return run_cases("previous-token scores", on_copies(fn), cases, "row i is query i; the previous token is key "
                  "i - 1, the diagonal just below the main one. Row 0 has no previous token: average over rows "
                  "1..T-1, separately for every layer and head, giving an (L, nh) result.",
                  lambda got, want: close(got, want, 1e-5), hidden_cases=hidden_cases, hidden=hidden)

