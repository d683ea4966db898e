"""Checks of notebook 10 (GPT-2 and transformers). Steps: GPT-2's config as a GPTConfig, GPT-2's
weights as MiniGPT's state dict, and MiniGPT's back as GPT-2's. Exercises: GPT-2's parameter count
from its config, greedy decoding on a transformers model with its cache, GPT-NeoX's fused qkv layout.

Each step's piece is compared with `mini_llm.hf`'s mapping (the functions `gpt2_config`,
`gpt2_to_minigpt` and `minigpt_to_gpt2` below call it with the learner's arguments: they are the
pieces a step hands on when the learner's is not right yet). transformers is imported only when a
check runs (the hf extra)."""

import copy
from collections.abc import Mapping

import torch

from mini_llm.course.checks.harness import Label, Result, as_ints, run_cases, step
from mini_llm.model import GPTConfig, MiniGPT


def _gpt2_target():
    from mini_llm.hf import TARGETS

    return next(t for t in TARGETS if t.cls == "GPT2LMHeadModel")


# --- the package's pieces, in the steps' signatures --------------------------------------------


def gpt2_config(hf_config) -> GPTConfig:
    """mini_llm's step 1: a transformers GPT2Config as the GPTConfig of the classic model (what
    `mini-llm import-hf` builds; what GPTConfig's defaults already say is left None)."""
    from mini_llm.hf import _defaults_as_none, our_options

    return GPTConfig(**_defaults_as_none(dict(our_options(_gpt2_target(), hf_config), bias=True)))


def _meta_model(config: GPTConfig) -> MiniGPT:
    """A MiniGPT without storage (names and shapes only), made in no time even at GPT-2's size."""
    with torch.device("meta"):
        return MiniGPT(config)


def gpt2_to_minigpt(state: dict, config: GPTConfig) -> dict:
    """mini_llm's step 2: a GPT2LMHeadModel's state dict in MiniGPT's names and layouts."""
    from mini_llm.hf import from_transformers

    names_only = _meta_model(config)
    ours = from_transformers(state, _gpt2_target(), names_only)
    return {name: ours[name] for name in names_only.state_dict()}  # in MiniGPT's order


class _Holding:
    """A state dict and its config, seen as a model by `hf.to_transformers`."""

    def __init__(self, state: dict, config: GPTConfig):
        self._state, self.config = state, config

    def state_dict(self) -> dict:
        return self._state


def minigpt_to_gpt2(state: dict, config: GPTConfig) -> dict:
    """mini_llm's step 3: a MiniGPT (arch gpt2) state dict in GPT2LMHeadModel's names and layouts."""
    import transformers

    from mini_llm.hf import to_transformers, transformers_config

    target = _gpt2_target()
    with torch.device("meta"), _quiet():
        template = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(**transformers_config(target, config, config.vocab_size - 1))).state_dict()
    theirs = to_transformers(_Holding(state, config), target, template)
    return {name: theirs[name] for name in template}  # in GPT2LMHeadModel's order


# --- cases ---------------------------------------------------------------------------------------


def _quiet():
    from mini_llm.hf import quiet_transformers

    return quiet_transformers()


SMALL = dict(vocab_size=257, n_positions=32, n_embd=32, n_layer=2, n_head=2)  # a GPT-2 in miniature


def _hf_config(**sizes):
    """A GPT2Config (GPT-2 124M's where `sizes` says nothing), shown by what differs from GPT2Config(),
    or from SMALL's ("tiny GPT2Config(n_inner=100)")."""
    import transformers

    V = sizes.get("vocab_size", 50257)
    with _quiet():
        config = transformers.GPT2Config(**sizes, bos_token_id=V - 1, eos_token_id=V - 1)
    tiny = SMALL.items() <= sizes.items()
    shown = {k: v for k, v in sizes.items() if not (tiny and k in SMALL)}
    return Label(config, ("tiny " if tiny else "") + "GPT2Config(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")")


CONFIGS = [dict(), SMALL, dict(n_embd=1024, n_layer=24, n_head=16)]  # gpt2, tiny, gpt2-medium
HIDDEN_CONFIGS = [dict(n_layer=6),  # distilgpt2
                  dict(n_embd=1600, n_layer=48, n_head=25),  # gpt2-xl
                  dict(SMALL, n_inner=100), dict(SMALL, layer_norm_epsilon=1e-6), dict(SMALL, tie_word_embeddings=False),
                  dict(vocab_size=1000, n_positions=2048, n_embd=48, n_layer=3, n_head=6, n_inner=64)]


def _gpt2_model(seed: int, scale: float | None = None, **sizes):
    """A GPT2LMHeadModel in eval mode with seeded weights (torch's global RNG is left as it was);
    `scale`: every weight matrix drawn again from N(0, scale^2 / fan-in), so that logits are far apart."""
    import transformers

    config = _hf_config(**sizes).value
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config).eval()
    if scale is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * scale / p.shape[0] ** 0.5)
    return model


def _sizes(config: GPTConfig) -> str:
    return (f"L={config.n_layer}, nh={config.n_head}, C={config.n_embd}, T={config.block_size}, "
            f"V={config.vocab_size}" + ("" if config.tie_head else ", untied head"))


def _on_copies(fn):
    """fn called on copies of a case's state dict and config (the labels' values): a conversion
    that changes its input in place cannot change the case; its answer as a plain dict."""
    return lambda state, config: _state(fn(copy.deepcopy(state.value), copy.deepcopy(config.value)))


def _state(got) -> dict:
    if not isinstance(got, Mapping):
        raise TypeError(f"return a dict of tensors (name -> tensor), got {type(got).__name__}")
    return dict(got)


def _same_tensors(got: dict, want: dict) -> bool:
    """The same names and, for each, a tensor equal to the expected one (layout moves are exact)."""
    if set(got) != set(want):
        return False
    for name, w in want.items():
        g = got[name]
        if not isinstance(g, torch.Tensor) or g.shape != w.shape or not torch.equal(g.to(w.dtype), w):
            return False
    return True


# --- steps ---------------------------------------------------------------------------------------


FIELDS = ("vocab_size", "block_size", "n_embd", "n_head", "n_layer", "pos", "norm", "qk_norm", "mlp", "bias",
          "tie_head")


def _what_it_computes(config) -> dict:
    """The fields of a GPTConfig that decide the model's function; the norm's epsilon and the MLP's
    width as numbers (None and the number it stands for are the same model)."""
    from mini_llm.hf import norm_eps

    if not isinstance(config, GPTConfig):
        raise TypeError(f"return a GPTConfig (from mini_llm.model import GPTConfig), got {type(config).__name__}")
    return {name: getattr(config, name) for name in FIELDS} | {"norm eps": norm_eps(config),
                                                                 "MLP width": config.mlp_hidden}


def check_gpt2_config(fn, hidden: bool = False) -> Result:
    """Step: fn(hf_config) -> a GPTConfig that computes what GPT-2 with that config computes: the
    fields that decide the function (dropout and init do not) equal the package's mapping's, the
    norm's epsilon and the MLP's width compared as numbers."""
    def case(sizes):
        config = _hf_config(**sizes)
        return (config,), _what_it_computes(gpt2_config(config.value))

    return step("gpt2_config", fn, gpt2_config, run_cases(
        "gpt2_config", lambda c: _what_it_computes(fn(copy.deepcopy(c.value))), [case(s) for s in CONFIGS],
        "GPT-2's names -> ours: vocab_size, n_positions -> block_size, n_embd, n_head, n_layer, n_inner (None means "
        "4 * n_embd) -> mlp_width, layer_norm_epsilon -> norm_eps, tie_word_embeddings -> tie_head. GPT-2 has "
        "learned positions, LayerNorm, biases and the tanh GELU: the classic model's options.",
        hidden_cases=[case(s) for s in HIDDEN_CONFIGS], hidden=hidden))


def _weight_case(seed: int, **sizes):
    """(GPT-2's state dict, its GPTConfig) and MiniGPT's state dict for them."""
    model = _gpt2_model(seed, **sizes)
    config = gpt2_config(model.config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return ((Label(state, f"<GPT2LMHeadModel's state_dict, {_sizes(config)}>"), Label(config, f"<GPTConfig {_sizes(config)}>")),
            gpt2_to_minigpt(state, config))


WEIGHT_SIZES = [dict(SMALL), dict(SMALL, n_embd=48, n_head=3, n_layer=1), dict(SMALL, n_layer=3, n_inner=40)]
HIDDEN_WEIGHT_SIZES = [dict(SMALL, tie_word_embeddings=False), dict(SMALL, n_embd=16, n_head=1, n_layer=4),
                       dict(vocab_size=300, n_positions=8, n_embd=24, n_layer=2, n_head=4, n_inner=24)]


def check_gpt2_weights(fn, hidden: bool = False) -> Result:
    """Step: fn(state, config) -> MiniGPT's state dict for GPT2LMHeadModel's `state` (every name, every
    tensor equal to the package's: moving and transposing tensors is exact)."""
    cases = [_weight_case(i, **s) for i, s in enumerate(WEIGHT_SIZES)]
    hidden_cases = [_weight_case(10 + i, **s) for i, s in enumerate(HIDDEN_WEIGHT_SIZES)]

    return step("gpt2_to_minigpt", fn, gpt2_to_minigpt, run_cases(
        "gpt2_to_minigpt", _on_copies(fn), cases,
        "drop the 'transformer.' prefix, 'h.{i}.' becomes 'blocks.{i}.', every other name stays; the weights of "
        "GPT-2's Conv1D layers (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are stored (in, out): transpose "
        "them to nn.Linear's (out, in); biases, LayerNorms and embeddings stay as they are; lm_head.weight is "
        "its own entry (the same tensor as wte's when the head is tied).",
        _same_tensors, hidden_cases=hidden_cases, hidden=hidden))


def _reverse_case(seed: int, **sizes):
    """(MiniGPT's state dict, its config) and GPT2LMHeadModel's state dict for them."""
    config = GPTConfig(**sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MiniGPT(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # biases and norms not at their init values either, so that each one is checked
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return ((Label(state, f"<MiniGPT's state_dict, {_sizes(config)}>"), Label(config, f"<GPTConfig {_sizes(config)}>")),
            minigpt_to_gpt2(state, config))


REVERSE_SIZES = [dict(vocab_size=257, block_size=32, n_embd=32, n_head=2, n_layer=2),
                 dict(vocab_size=300, block_size=16, n_embd=48, n_head=3, n_layer=1)]
HIDDEN_REVERSE_SIZES = [dict(vocab_size=257, block_size=8, n_embd=16, n_head=4, n_layer=3, tie_head=False),
                        dict(vocab_size=500, block_size=24, n_embd=32, n_head=2, n_layer=2, mlp_width=40),
                        dict(vocab_size=260, block_size=4, n_embd=8, n_head=1, n_layer=1, norm_eps=1e-6)]


def check_minigpt_to_gpt2(fn, hidden: bool = False) -> Result:
    """Step: fn(state, config) -> GPT2LMHeadModel's state dict for MiniGPT's (arch gpt2) `state`."""
    cases = [_reverse_case(i, **s) for i, s in enumerate(REVERSE_SIZES)]
    hidden_cases = [_reverse_case(20 + i, **s) for i, s in enumerate(HIDDEN_REVERSE_SIZES)]

    return step("minigpt_to_gpt2", fn, minigpt_to_gpt2, run_cases(
        "minigpt_to_gpt2", _on_copies(fn), cases,
        "step 2 backwards: 'blocks.{i}.' becomes 'transformer.h.{i}.', the embeddings and ln_f go under "
        "'transformer.', lm_head.weight stays lm_head.weight; transpose the weights of attn.c_attn, attn.c_proj, "
        "mlp.c_fc and mlp.c_proj to Conv1D's (in, out).",
        _same_tensors, hidden_cases=hidden_cases, hidden=hidden))


# --- exercises -----------------------------------------------------------------------------------


def _whole_number(got, want: int) -> bool:
    """An integer answer in any standard form (int, numpy or 0-d tensor), not a bool or a fraction."""
    if isinstance(got, (bool, str)):
        return False
    return int(got) == want and float(got) == float(want)


GROUPS = ("token embedding", "position embedding", "attention", "MLP", "LayerNorms", "untied head")


def parameter_groups(model) -> dict:
    """Parameters of a MiniGPT by group (a tied head's matrix is the token embedding's, counted there)."""
    groups = dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():  # a shared tensor is listed once
        group = ("token embedding" if name.startswith("wte") else "position embedding" if name.startswith("wpe")
                 else "untied head" if name.startswith("lm_head") else "attention" if ".attn." in name
                 else "MLP" if ".mlp." in name else "LayerNorms")
        groups[group] += p.numel()
    return groups


def check_gpt2_params(fn, hidden: bool = False) -> Result:
    """fn(hf_config) -> {group: parameters} of GPT2LMHeadModel with that config, for the groups in
    GROUPS (an untied head: 0 when the head is tied)."""
    def case(sizes):
        config = _hf_config(**sizes)
        return (config,), parameter_groups(_meta_model(gpt2_config(config.value)))

    def same(got, want):
        return set(got) == set(want) and all(_whole_number(got[k], want[k]) for k in want)

    def call(config):
        got = fn(copy.deepcopy(config.value))
        if not isinstance(got, Mapping):
            raise TypeError(f"return a dict {{group: parameters}} with the keys {list(GROUPS)}, got {type(got).__name__}")
        return dict(got)

    return run_cases("GPT-2 parameters", call, [case(s) for s in CONFIGS[:2]],
                     "count the numbers in each tensor of one block in section 3's listing (a weight (in, out) holds "
                     "in x out, a bias its length), times n_layer, plus ln_f; n_inner None means 4 * n_embd; a tied "
                     "head adds nothing.", same, hidden_cases=[case(s) for s in CONFIGS[2:] + HIDDEN_CONFIGS], hidden=hidden)


class _Counted:
    """A transformers model that counts its forward calls and the tokens they were given (what a
    cached greedy loop saves); everything else is the model's."""

    def __init__(self, model, text: str):
        self.model, self.text, self.calls, self.fed = model, text, 0, 0

    def __call__(self, input_ids=None, *args, **kwargs):
        if input_ids is None:
            input_ids = kwargs.pop("input_ids")
        self.calls += 1
        self.fed += int(input_ids.shape[-1])
        return self.model(input_ids, *args, **kwargs)

    forward = __call__

    def __getattr__(self, name):  # config, device, ... (only names this object does not hold itself)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return self.text


class _Greedy:
    """Greedy tokens and how many calls, fed how many tokens, produced them (shown in feedback)."""

    def __init__(self, tokens, calls: int, fed: int):
        self.tokens, self.calls, self.fed = tokens, calls, fed

    def __repr__(self) -> str:
        return f"{self.tokens} from {self.calls} calls fed {self.fed} tokens"


def _greedy_uncached(hf_model, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens by the definition, the whole sequence through the model for each one, computed
    by the MiniGPT that holds the transformers model's weights (the same logits, many times faster here)."""
    from mini_llm.hf import minigpt_from

    model, ids = minigpt_from(hf_model, _gpt2_target()), list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    return ids[len(prompt):]


def check_greedy_cached(fn, hidden: bool = False) -> Result:
    """fn(hf_model, prompt, n) -> the n greedy tokens after `prompt` (a list of ids), with one call of
    the model per new token after the prompt's, each given only the newest token and the cache."""
    def case(seed, prompt_len, n, **sizes):
        model = _gpt2_model(seed, scale=3.0, **dict(SMALL, **sizes))
        prompt = torch.randint(0, model.config.vocab_size, (prompt_len,),
                               generator=torch.Generator().manual_seed(seed)).tolist()
        want = _Greedy(_greedy_uncached(model, prompt, n), n, prompt_len + n - 1)
        c = model.config
        return (_Counted(model, f"<GPT2LMHeadModel L={c.n_layer} C={c.n_embd} T={c.n_positions}>"), prompt, n), want

    def run(model, prompt, n):
        model.calls = model.fed = 0
        tokens = as_ints(fn(model, list(prompt), n))
        return _Greedy(tokens, model.calls, model.fed)

    def same(got, want):  # a last call whose logits are not used costs one more, and is fine
        return got.tokens == want.tokens and 1 <= got.calls <= want.calls + 1 and got.fed <= want.fed + 1

    cases = [case(0, 4, 6), case(1, 1, 8), case(2, 9, 3)]
    hidden_cases = [case(3, 2, 1), case(4, 16, 12, n_layer=1), case(5, 5, 9, n_embd=48, n_head=4), case(6, 30, 2)]
    return run_cases("greedy with the cache", run, cases,
                     "call the model once on the whole prompt (shape (1, T)) and keep the cache it returns (out.cache; "
                     "out.past_key_values in older transformers); then, for each new token, take the argmax of the "
                     "LAST position's logits and call the model on that token alone (shape (1, 1)) with that cache "
                     "(cache=...; past_key_values=... in older transformers). Call the model itself (model(...)): "
                     "generate() is what you are writing.",
                     same, hidden_cases=hidden_cases, hidden=hidden)


def check_neox_qkv(fn, hidden: bool = False) -> Result:
    """fn(t, n_head) -> our fused c_attn weight (3C, C) or bias (3C,) in GPT-NeoX's row order."""
    from mini_llm.hf import _relayout

    def case(C, n_head, bias=False):
        t = torch.arange(3 * C, dtype=torch.float32) if bias else torch.arange(3 * C * C, dtype=torch.float32).view(3 * C, C)
        return (t, n_head), _relayout(t, "interleaved", n_head, to_theirs=True)

    cases = [case(4, 2), case(4, 2, bias=True), case(6, 3)]
    hidden_cases = [case(8, 1), case(8, 4, bias=True), case(12, 12), case(32, 4), case(10, 5, bias=True)]
    return run_cases("GPT-NeoX qkv", lambda t, n_head: fn(t.clone(), n_head), cases,
                     "ours: rows 0..C-1 are q (head 0's hs rows, then head 1's, ...), then all of k, then all of v. "
                     "GPT-NeoX's: head 0's q, k, v rows, then head 1's q, k, v, ... View the rows as (3, n_head, hs), "
                     "swap the first two axes, and flatten back; the same works for the bias.",
                     lambda g, w: isinstance(g, torch.Tensor) and g.shape == w.shape and torch.equal(g.to(w.dtype), w),
                     hidden_cases=hidden_cases, hidden=hidden)
