"""Checks of notebook 04 (MiniGPT). Steps: LayerNorm and GELU from scratch, the MLP, the block,
the whole model (tied head, GPT-2 init), the forward with a KV cache. Exercises: a post-LN block,
a decode step on a preallocated cache, previous-token scores."""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.attention import attention, causal_mask
from mini_llm.course.checks.harness import (
    Label,
    Result,
    Verdict,
    close,
    first_difference,
    on_copies,
    run_cases,
    short,
    small_model,
    step,
)
from mini_llm.model import MLP, Block, GPTConfig, MiniGPT


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


def _config(**sizes) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 50, "block_size": 16, **sizes})


def _built(cls, seed: int, *args):
    """cls(*args) made under its own seed, so building it leaves torch's global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(*args)


def _package_and_input(make, seed: int, shape):
    """A package module of unit-scale weights, made by make(), and an input x of `shape`."""
    g = torch.Generator().manual_seed(seed)
    module = _unit_scale(_built(make, seed).eval(), g)
    return module, torch.randn(*shape, generator=g)


def _loaded(cls, seed, args, weights):
    """The learner's module cls(*args), in eval mode, with the package module's weights loaded."""
    mine = _built(cls, seed, *args)
    mine.load_state_dict({name: t.clone() for name, t in weights.items()})
    return mine.eval()


# --- steps -----------------------------------------------------------------------------------------


def check_layer_norm(cls, hidden: bool = False) -> Result:
    """Step: cls(n_embd) is LayerNorm over the last dimension: parameters `weight` (ones) and `bias`
    (zeros) of shape (n_embd,), eps 1e-5, the biased variance; the same as nn.LayerNorm (to 1e-5),
    fresh and with other weights loaded."""
    def case(shape, seed, scale=1.0, offset=0.0):
        C = shape[-1]
        package, x = _package_and_input(lambda: nn.LayerNorm(C), seed, shape)
        x = x * scale + offset  # far from zero mean and unit spread: the statistics matter
        weights = {name: t.clone() for name, t in package.state_dict().items()}
        with torch.no_grad():
            want = (F.layer_norm(x, (C,), eps=1e-5), package(x))
        return ((x, Label(weights, f"<weights of nn.LayerNorm({C})>")), want)

    def run(x, weights):
        C = x.size(-1)
        fresh = _built(cls, 0, C).eval()
        with torch.no_grad():
            return fresh(x.clone()), _loaded(cls, 0, (C,), weights.value)(x.clone())

    cases = [case((2, 5, 16), 0, 3.0, 2.0), case((4, 8), 1), case((1, 3, 7, 12), 2, 0.1, -1.0)]
    hidden_cases = [case((3, 1), 3, 2.0, 5.0), case((2, 9, 64), 4, 10.0, -3.0), case((5, 2), 5), case((1, 1, 256), 6, 1e-2)]
    return step("LayerNorm", cls, nn.LayerNorm, run_cases(
        "LayerNorm", run, cases, "over the last dimension: mean, then the variance as the mean of squared "
        "deviations (the biased one: unbiased=False), x_hat = (x - mean) / sqrt(var + 1e-5), then weight * x_hat "
        "+ bias. weight and bias are nn.Parameter(torch.ones(n_embd)) and nn.Parameter(torch.zeros(n_embd)), "
        "named so that nn.LayerNorm's weights load. The result is (fresh, with weights loaded).",
        lambda got, want: all(close(g, w, 1e-5) for g, w in zip(got, want)) and len(got) == 2,
        hidden_cases=hidden_cases, hidden=hidden))


# model.MLP's activation: GELU, tanh approximation (GPT-2's)
MODEL_GELU = MLP(GPTConfig(vocab_size=1, block_size=1, n_embd=4, n_head=1, n_layer=1)).gelu


def check_gelu(fn, hidden: bool = False) -> Result:
    """Step: fn(x) -> GELU's tanh approximation of x, elementwise (model.MLP's activation, to 1e-6)."""
    g = torch.Generator().manual_seed(0)

    def case(x):
        return ((x,), MODEL_GELU(x))

    cases = [case(torch.linspace(-4, 4, 9)), case(torch.randn(2, 3, 4, generator=g)), case(torch.tensor([0.0, 0.5, -0.5]))]
    hidden_cases = [case(torch.linspace(-8, 8, 161)), case(3 * torch.randn(4, 7, 16, generator=g)),
                    case(torch.tensor([-30.0, -12.0, 12.0, 30.0])), case(torch.tensor(1.25))]
    return step("gelu", fn, MODEL_GELU, run_cases(
        "gelu", on_copies(fn), cases, "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), elementwise, "
        "with torch functions so that any shape works (not the exact erf form: GPT-2 uses the tanh one).",
        lambda got, want: close(got, want, 1e-6), hidden_cases=hidden_cases, hidden=hidden))


def _module_case(make, label, seed, shape):
    package, x = _package_and_input(make, seed, shape)
    with torch.no_grad():
        want = package(x) if not isinstance(package, Block) else package(x, explicit=True)[0]
    weights = {name: t.clone() for name, t in package.state_dict().items()}
    return (x, Label(weights, label)), want


def check_mlp(cls, hidden: bool = False) -> Result:
    """Step: cls(config) is the MLP: c_fc (C -> 4C), GELU, c_proj (4C -> C); model.MLP's weights
    load into it and it gives the same output (to 1e-5)."""
    def case(C, shape, seed):
        config = _config(n_embd=C, n_head=1)
        (x, weights), want = _module_case(lambda: MLP(config), f"<weights of model.MLP, n_embd={C}>", seed, shape)
        return (Label(config, f"GPTConfig(n_embd={C})"), x, weights), want

    def run(config, x, weights):
        with torch.no_grad():
            return _loaded(cls, 0, (config.value,), weights.value)(x.clone())

    cases = [case(16, (2, 5, 16), 0), case(8, (1, 3, 8), 1), case(32, (4, 32), 2)]
    hidden_cases = [case(4, (1, 1, 4), 3), case(64, (2, 7, 64), 4), case(24, (3, 2, 24), 5)]
    return step("MLP", cls, MLP, run_cases(
        "MLP", run, cases, "self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd), self.c_proj = "
        "nn.Linear(4 * config.n_embd, config.n_embd) (these names, so the package's weights load); forward: "
        "c_proj(gelu(c_fc(x))) with your gelu.", lambda got, want: close(got, want, 1e-5),
        hidden_cases=hidden_cases, hidden=hidden))


class PackageBlock(Block):
    """model.Block with the notebook's interface: forward(x) -> x (the package's also returns the
    attention weights, for the explorer, and takes a cache)."""

    def forward(self, x):
        return super().forward(x)[0]


def check_block(cls, hidden: bool = False) -> Result:
    """Step: cls(config) is the pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); model.Block's
    weights load into it and it gives the same output (to 1e-5)."""
    def case(C, nh, shape, seed):
        config = _config(n_embd=C, n_head=nh, block_size=shape[1])
        (x, weights), want = _module_case(lambda: Block(config), f"<weights of model.Block, n_embd={C}>", seed, shape)
        return (Label(config, f"GPTConfig(n_embd={C}, n_head={nh})"), x, weights), want

    def run(config, x, weights):
        with torch.no_grad():
            return _loaded(cls, 0, (config.value,), weights.value)(x.clone())

    cases = [case(16, 4, (2, 5, 16), 0), case(8, 2, (1, 7, 8), 1), case(12, 3, (3, 4, 12), 2)]
    hidden_cases = [case(8, 1, (1, 1, 8), 3), case(24, 6, (2, 9, 24), 4), case(32, 8, (1, 12, 32), 5)]
    return step("Block", cls, PackageBlock, run_cases(
        "Block", run, cases, "ln_1 = LayerNorm(C), attn = CausalSelfAttention(config), ln_2 = LayerNorm(C), "
        "mlp = MLP(config) (these names, so the package's weights load); forward: x = x + attn(ln_1(x)), then "
        "x = x + mlp(ln_2(x)): the residual stream itself is never normalised.",
        lambda got, want: close(got, want, 1e-5), hidden_cases=hidden_cases, hidden=hidden))


def _init_report(model, n_layer: int) -> str:
    """"" when the weights look like GPT-2's initialisation, else what does not."""
    params = dict(model.named_parameters())
    if model.lm_head.weight is not model.wte.weight:
        return "lm_head.weight is not wte.weight (tie them: one tensor, two uses)"
    small = 0.02 / math.sqrt(2 * n_layer)
    for name, p in params.items():
        want = 1.0 if name.endswith("weight") and p.dim() == 1 else 0.0 if name.endswith("bias") or p.dim() == 1 else None
        if want is not None:
            if not torch.all(p == want):
                return f"{name} is not all {want:g} at init"
            continue
        std = small if name.endswith("c_proj.weight") else 0.02
        if abs(p.std().item() - std) > 0.1 * std or abs(p.mean().item()) > 0.1 * std:
            return f"{name} has std {p.std().item():.4f} at init, not about {std:.4f}"
    return ""


def check_gpt(cls, hidden: bool = False) -> Result:
    """Step: cls(config) is the whole model: tied head, GPT-2's init, forward(idx, targets=None) ->
    (logits (B, T, V), loss or None); MiniGPT's weights load into it and it gives the same logits
    and loss (to 1e-5)."""
    def case(V, T, C, nh, L, B, seed):
        config = GPTConfig(vocab_size=V, block_size=T, n_embd=C, n_head=nh, n_layer=L)
        package = _unit_scale(_built(MiniGPT, seed, config).eval(), torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed + 1)
        idx, targets = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)
        with torch.no_grad():
            logits, loss = package(idx, targets, explicit=True)
        text = f"<GPTConfig(vocab_size={V}, block_size={T}, n_embd={C}, n_head={nh}, n_layer={L}); idx ({B}, {T})>"
        spec = dict(config=config, weights=package.state_dict(), idx=idx, targets=targets, logits=logits, loss=loss)
        return ((Label(spec, text),), Verdict(True, "tied, GPT-2's init, MiniGPT's logits and loss with its weights"))

    def run(spec):
        s = spec.value
        config = s["config"]
        wide = config.n_head * (64 // config.n_head)  # enough weights for their spread to say something
        fresh = _built(cls, 0, GPTConfig(**{**vars(config), "n_embd": wide, "vocab_size": 512}))
        wrong = _init_report(fresh, config.n_layer)
        if wrong:
            return Verdict(False, f"a fresh model: {wrong}")
        mine = _built(cls, 0, config)
        mine.load_state_dict({name: t.clone() for name, t in s["weights"].items()})
        mine.eval()
        with torch.no_grad():
            logits, none = mine(s["idx"].clone())
            _, loss = mine(s["idx"].clone(), s["targets"].clone())
        if not (isinstance(logits, torch.Tensor) and logits.shape == s["logits"].shape):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            return Verdict(False, f"logits of shape {shape}, not {tuple(s['logits'].shape)} (B, T, V)")
        if none is not None:
            return Verdict(False, "a loss without targets (return None for it)")
        if not close(logits, s["logits"], 1e-5):
            return Verdict(False, f"with MiniGPT's weights, other logits ({first_difference(logits, s['logits'])})")
        if loss is None or not close(loss, s["loss"], 1e-5):
            return Verdict(False, f"with MiniGPT's weights, loss {short(loss)}, not {s['loss'].item():.6f}")
        return Verdict(True, "tied, GPT-2's init, MiniGPT's logits and loss with its weights")

    cases = [case(50, 8, 16, 2, 1, 2, 0), case(40, 16, 16, 4, 2, 3, 1)]
    hidden_cases = [case(30, 4, 8, 1, 3, 1, 2), case(64, 32, 32, 8, 2, 2, 3), case(20, 12, 24, 3, 4, 4, 4)]
    return step("GPT", cls, MiniGPT, run_cases(
        "GPT", run, cases, "wte = nn.Embedding(V, C), wpe = nn.Embedding(block_size, C), blocks = nn.ModuleList of "
        "n_layer Blocks, ln_f = LayerNorm(C), lm_head = nn.Linear(C, V, bias=False) with lm_head.weight = "
        "wte.weight. Init: every Linear and Embedding weight N(0, 0.02), Linear biases 0, then every "
        "parameter named ...c_proj.weight N(0, 0.02 / sqrt(2 * n_layer)). forward: wte(idx) + wpe(arange(T)), "
        "the blocks, ln_f, lm_head; the loss is F.cross_entropy over all B * T positions when targets are given.",
        lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


def forward_cached(model, idx, past=None):
    """The package's forward with a KV cache, from a model's parts (`model.attention`'s attention and
    causal mask): idx (B, T) after past [(k, v) per layer, each (B, nh, P, hs)] or None -> logits
    (B, T, V) and the cache of all P + T positions. What the notebook uses when yours is not written."""
    B, T = idx.shape
    P = 0 if past is None else past[0][0].size(2)
    nh, C = model.config.n_head, model.config.n_embd
    x = model.wte(idx) + model.wpe(torch.arange(P, P + T, device=idx.device))
    present = []
    for i, block in enumerate(model.blocks):
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in block.attn.c_attn(block.ln_1(x)).split(C, dim=2))
        if past is not None:
            k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
        present.append((k, v))
        y, _ = attention(q, k, v, causal_mask(T, idx.device, past=P))
        x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.ln_f(x)), present


def _as_cache(present) -> torch.Tensor:
    """[(k, v) per layer] (or a tensor (L, 2, B, nh, P, hs)) -> one tensor (L, 2, B, nh, P, hs)."""
    return torch.stack([torch.stack(list(kv)) for kv in present])


def check_forward_cached(fn, hidden: bool = False) -> Result:
    """Step: fn(model, idx, past=None) -> (logits (B, T, V), present): T new tokens after the P cached
    ones in `past` ([(k, v) per layer, each (B, nh, P, hs)], or None), present the same for all P + T
    positions. Called in chunks (a prefill, then one token or several at a time), each chunk's logits
    are the full forward's at those positions and present its keys and values (model.forward_kv's)."""
    def case(seed, B, chunks, **sizes):
        model = small_model(seed, **sizes)
        _unit_scale(model, torch.Generator().manual_seed(seed))
        n = sum(chunks)
        idx = torch.randint(0, model.config.vocab_size, (B, n), generator=torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            full, kv = model.forward_kv(idx)  # (B, n, V), (L, 2, B, nh, n, hs)
        c = model.config
        text = f"<MiniGPT L={c.n_layer} nh={c.n_head} C={c.n_embd}; B={B}, chunks of {', '.join(map(str, chunks))}>"
        spec = dict(model=model, idx=idx, full=full, kv=kv, chunks=chunks)
        return ((Label(spec, text),), Verdict(True, "every chunk's logits and cache are the full forward's"))

    def run(spec):
        s = spec.value
        parts, past, at = _parts_only(s["model"]), None, 0
        for T in s["chunks"]:
            with torch.no_grad():
                got = fn(parts, s["idx"][:, at:at + T].clone(), past)
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                return Verdict(False, f"the chunk at {at}: {type(got).__name__} came back, not (logits, present)")
            logits, past = got
            want = s["full"][:, at:at + T]
            if not (isinstance(logits, torch.Tensor) and logits.shape == want.shape):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                return Verdict(False, f"the chunk at {at}: logits of shape {shape}, not {tuple(want.shape)}")
            if not close(logits, want, 1e-4):
                return Verdict(False, f"the {T} tokens at {at}: logits that differ from the full forward's "
                                      f"({first_difference(logits, want)})")
            at += T
            kv = s["kv"][..., :at, :]
            try:
                cache = _as_cache(past)
            except (TypeError, ValueError, RuntimeError, IndexError):
                return Verdict(False, f"after the chunk ending at {at}: present is not a list of (k, v), one per layer")
            if cache.shape != kv.shape:
                return Verdict(False, f"after the chunk ending at {at}: a cache of shape {tuple(cache.shape)} "
                                      f"(as (L, 2, B, nh, P, hs)), not {tuple(kv.shape)}")
            if not close(cache, kv, 1e-4):
                return Verdict(False, f"after the chunk ending at {at}: other keys or values than the full forward's "
                                      f"({first_difference(cache, kv)})")
        return Verdict(True, "every chunk's logits and cache are the full forward's")

    cases = [case(0, 1, [3, 1, 1, 1], vocab_size=30, block_size=8, n_embd=16, n_head=2, n_layer=1),
             case(1, 2, [5, 1, 4, 2], vocab_size=40, block_size=16, n_embd=16, n_head=4, n_layer=2)]
    hidden_cases = [case(2, 1, [1, 1, 1, 1, 1, 1, 1, 1], vocab_size=20, block_size=8, n_embd=8, n_head=1, n_layer=1),
                    case(3, 3, [7], vocab_size=50, block_size=7, n_embd=24, n_head=3, n_layer=3),
                    case(4, 2, [10, 6, 1, 15], vocab_size=30, block_size=32, n_embd=32, n_head=8, n_layer=2)]
    return step("forward_cached", fn, forward_cached, run_cases(
        "forward_cached", run, cases, "the new tokens sit at positions P .. P+T-1 (their wpe rows); in each block "
        "q, k, v come from c_attn(ln_1(x)) split into model.config.n_head heads; append k and v to the layer's "
        "past along the positions (dim 2) and keep them in present; query i sees keys 0 .. P+i: the causal mask "
        "tril(diagonal=P) of shape (T, P+T) (is_causal=True would align it top left, trap 1 in docs/TRAPS.md); "
        "then c_proj and the residual, the MLP and its residual; ln_f and lm_head last.",
        lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


# --- exercises -------------------------------------------------------------------------------------


def check_post_ln_block(fn, hidden: bool = False) -> Result:
    """fn(x, weights, n_head) -> a post-LayerNorm block's output (B, T, C):
    x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)), with `weights` named like the package Block's."""
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

