"""The modern model options (rotary positions, RMSNorm, QK-norm, ReLU^2 / SwiGLU, untied head,
zero-init): cache equality, causality, parameter counts, the sliding rotary cache, checkpoints,
training from the CLI, fine-tuning, and ONNX parity."""


import pytest
import torch

from mini_llm.attention import rotary
from mini_llm.errors import UserError
from mini_llm.generate import Sampling, TorchRunner, generate_ids
from mini_llm.model import ARCHS, GPTConfig, KVCache, MiniGPT
from mini_llm.train import TrainConfig

TINY = dict(vocab_size=97, block_size=16, n_embd=32, n_head=4, n_layer=2)
OPTIONS = {
    "gpt2": {},
    "rope": dict(pos="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp="relu2"),
    "swiglu": dict(mlp="swiglu"),
    "untied": dict(tie_head=False),
    "zero_init": dict(zero_init=True),
    "modern": ARCHS["modern"],
    "tuned": ARCHS["tuned"],
    "modern+swiglu, no bias": dict(ARCHS["modern"], mlp="swiglu", bias=False),
    "mlp_width, norm_eps": dict(ARCHS["modern"], mlp_width=40, norm_eps=1e-6),
}


def _model(options: dict, seed: int = 0) -> MiniGPT:
    """A model whose weights are all random (zero-initialised ones too, so every path shows)."""
    torch.manual_seed(seed)
    model = MiniGPT(GPTConfig(**TINY, **options)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("name", OPTIONS)
def test_cached_decoding_equals_the_full_forward(name):
    model = _model(OPTIONS[name])
    idx = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    full, _ = model(idx)
    cache = KVCache()
    parts = [model(idx[:, :7], cache=cache)[0]]
    parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(7, 12)]
    parts.append(model(idx[:, 12:], cache=cache)[0])  # several new tokens on a cache: the shifted mask
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    logits, past = model.forward_kv(idx[:, :9])
    logits2, _ = model.forward_kv(idx[:, 9:], past)
    torch.testing.assert_close(torch.cat([logits, logits2], dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", OPTIONS)
def test_no_position_sees_the_future(name):
    model = _model(OPTIONS[name])
    idx = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(2))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 97
    a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :10], b[:, :10]) and not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("name", OPTIONS)
def test_parameter_count_formula_covers_every_option(name):
    for size in (TINY, dict(TINY, n_embd=48, n_layer=3)):
        config = GPTConfig(**size, **OPTIONS[name])
        assert MiniGPT(config).num_params() == config.num_params()


def test_arch_names_and_bad_options():
    assert GPTConfig().arch_name == "gpt2" and GPTConfig(**ARCHS["modern"]).arch_name == "modern"
    assert GPTConfig(mlp="swiglu").arch_name == "custom"
    with pytest.raises(UserError, match="pos='absolute'"):
        GPTConfig(pos="absolute")
    with pytest.raises(UserError, match="even head size"):
        GPTConfig(n_embd=12, n_head=4, pos="rope")
    with pytest.raises(UserError, match="--arch 'llama'"):
        TrainConfig(arch="llama")
    # the classic defaults are unchanged: an old checkpoint's config (no option fields) is the gpt2 model
    assert GPTConfig(**{k: v for k, v in GPTConfig().to_dict().items() if k in TINY}).arch_name == "gpt2"


def test_swiglu_keeps_the_parameter_budget_and_zero_init_starts_uniform():
    base, glu = GPTConfig(), GPTConfig(mlp="swiglu")
    assert abs(glu.num_params() - base.num_params()) / base.num_params() < 0.02
    model = MiniGPT(GPTConfig(**TINY, **ARCHS["modern"]))
    logits, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))
    assert torch.equal(logits, torch.zeros_like(logits))  # zero head: the uniform distribution, loss ln V
    assert loss.item() == pytest.approx(torch.log(torch.tensor(97.0)).item(), abs=1e-5)
    assert not model.config.tie_head and model.lm_head.weight is not model.wte.weight


def test_rotary_makes_scores_depend_on_relative_position_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    score = lambda m, n: (rotary(q, m) * rotary(k, n)).sum()  # noqa: E731
    assert torch.allclose(score(5, 2), score(105, 102), atol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-4)
    assert torch.allclose(rotary(q, 7).norm(), q.norm())  # a rotation keeps lengths
    assert torch.allclose(rotary(rotary(q, 7), -7), q, atol=1e-6)  # and composes


def test_sliding_the_rotary_cache_equals_recomputing_the_window_for_one_layer():
    """Past block_size, a rotary model drops its oldest cached position instead of a new prefill.
    With one layer the kept keys and values depend only on their own tokens, so every sliding
    step must equal a full forward over the last block_size tokens."""
    model = MiniGPT(GPTConfig(**dict(TINY, n_layer=1), **ARCHS["modern"])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    runner = TorchRunner(model)
    ids = torch.randint(0, 97, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    runner.start(ids[:16])
    for t in range(16, 40):  # 24 tokens past the window
        assert runner.room == 0 and runner.slides
        runner.slide()
        sliding = runner.step(ids[t])
        torch.testing.assert_close(sliding, runner.full(ids[: t + 1]), rtol=1e-4, atol=1e-4)


def test_generation_past_the_window_slides_with_rope_and_reprefills_without():
    for options, slides in ((ARCHS["modern"], True), ({}, False)):
        runner = TorchRunner(_model(options))
        calls = []
        start = runner.start
        runner.start = lambda ids: (calls.append(len(ids)), start(ids))[1]
        tokens = list(generate_ids(runner, [1, 2, 3], 40, Sampling(seed=0)))
        assert len(tokens) == 40 and runner.slides == slides
        assert calls == ([3] if slides else [3, 8, 8, 8])  # learned positions: prefill half a window again


def test_slide_is_refused_for_learned_positions():
    model = _model({})
    _, past = model.forward_kv(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(UserError, match="rotary"):
        model.slide(past, 1)




def test_norm_eps_and_mlp_width_default_to_todays_model():
    """What GPT-2 and other pretrained models set (hf.py imports them): None is the model as it was, so a
    checkpoint saved before the fields existed loads with the same norms and MLP."""
    for options in ({}, ARCHS["modern"]):
        old = {k: v for k, v in GPTConfig(**TINY, **options).to_dict().items() if k not in ("norm_eps", "mlp_width")}
        model = MiniGPT(GPTConfig(**old))
        assert model.blocks[0].mlp.c_fc.out_features == 4 * 32
        assert model.ln_f.eps == (1e-5 if options.get("norm") != "rmsnorm" else None)  # torch's defaults
        assert model.blocks[0].attn.norm_eps is None  # F.rms_norm's default: the dtype's epsilon
    wide = MiniGPT(GPTConfig(**TINY, mlp_width=40, norm_eps=1e-6, qk_norm=True))
    assert wide.blocks[0].mlp.c_fc.out_features == 40 and wide.blocks[0].mlp.c_proj.in_features == 40
    assert wide.ln_f.eps == 1e-6 and wide.blocks[0].attn.norm_eps == 1e-6
    assert MiniGPT(GPTConfig(**TINY, norm="rmsnorm", norm_eps=1e-6)).ln_f.eps == 1e-6
    assert GPTConfig(**TINY, mlp="swiglu", mlp_width=40).mlp_hidden == 40  # the gate's and the up's width
    with pytest.raises(UserError, match="mlp_width=0 must be a positive integer"):
        GPTConfig(mlp_width=0)
    with pytest.raises(UserError, match="norm_eps=0.0 must be positive"):
        GPTConfig(norm_eps=0.0)


def test_qk_norm_uses_norm_eps():
    """The QK-norm's epsilon is the model's norm_eps: with a huge one the normalised queries shrink."""
    model = _model(dict(qk_norm=True))
    x = torch.randn(1, 5, 32)
    base = model.blocks[0].attn(x)[0]
    model.blocks[0].attn.norm_eps = 1e3
    assert not torch.allclose(model.blocks[0].attn(x)[0], base, atol=1e-4)
