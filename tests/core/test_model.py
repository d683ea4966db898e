import math

import pytest
import torch

from mini_llm.errors import UserError
from mini_llm.model import GPTConfig, KVCache, MiniGPT

TINY = dict(vocab_size=97, block_size=16, n_embd=32, n_head=4, n_layer=2)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return MiniGPT(GPTConfig(**TINY)).eval()


def test_config_validation():
    with pytest.raises(UserError, match="not divisible by n_head"):
        GPTConfig(n_embd=250, n_head=4)
    with pytest.raises(UserError, match="must be a positive integer"):
        GPTConfig(n_layer=0)


def test_parameter_count_formula():
    cfg = GPTConfig()
    assert MiniGPT(cfg).num_params() == cfg.num_params() == 5_240_320
    for kw in (TINY, dict(TINY, bias=False), dict(TINY, n_layer=3, n_embd=48)):
        c = GPTConfig(**kw)
        assert MiniGPT(c).num_params() == c.num_params()


def test_head_is_tied_to_the_embedding(model):
    assert model.lm_head.weight is model.wte.weight


def test_loss_at_init_is_close_to_uniform():
    torch.manual_seed(0)
    cfg = GPTConfig()
    model = MiniGPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (4, 64))
    y = torch.randint(0, cfg.vocab_size, (4, 64))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.1


@pytest.mark.parametrize("explicit", [False, True])
def test_causality(model, explicit):
    x = torch.randint(0, 97, (2, 16))
    changed = x.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % 97
    a, _ = model(x, explicit=explicit)
    b, _ = model(changed, explicit=explicit)
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_causality_with_cache(model):
    x = torch.randint(0, 97, (1, 16))
    changed = x.clone()
    changed[:, 12:] = (changed[:, 12:] + 5) % 97
    outs = []
    for seq in (x, changed):
        cache = KVCache()
        model(seq[:, :8], cache=cache)
        outs.append(torch.cat([model(seq[:, t : t + 1], cache=cache)[0] for t in range(8, 16)], dim=1))
    assert torch.allclose(outs[0][:, :4], outs[1][:, :4], atol=1e-6)


def test_explicit_path_equals_sdpa(model):
    x = torch.randint(0, 97, (3, 16))
    fast, _ = model(x)
    slow, _ = model(x, explicit=True)
    logits, maps = model.attention_maps(x)
    assert torch.allclose(fast, slow, atol=1e-5) and torch.allclose(fast, logits, atol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (3, 4, 16, 16)
    assert torch.allclose(maps[0].sum(-1), torch.ones(3, 4, 16))
    assert maps[1][0, 0].triu(1).abs().max() == 0  # nothing above the diagonal


def test_kv_cache_matches_full_forward_at_every_step(model):
    x = torch.randint(0, 97, (2, 16))
    full, _ = model(x)
    cache = KVCache()
    logits, _ = model(x[:, :5], cache=cache)
    assert torch.allclose(logits, full[:, :5], atol=1e-5)
    for t in range(5, 16):  # includes the step that reaches block_size
        step, _ = model(x[:, t : t + 1], cache=cache)
        assert torch.allclose(step[:, 0], full[:, t], atol=1e-5), t
    assert cache.pos == 16


def test_the_cache_is_written_in_place(model, monkeypatch):
    """A decode step writes one position into memory allocated once, for block_size positions: no
    layer's keys are concatenated onto, and nothing is stacked again, whatever the length so far."""
    x = torch.randint(0, 97, (2, 16))
    cache = KVCache()
    model(x[:, :5], cache=cache)
    where = cache.past.data_ptr()
    calls = []
    for name in ("cat", "stack"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    for t in range(5, 16):
        model(x[:, t : t + 1], cache=cache)
        assert cache.past.data_ptr() == where and cache.pos == t + 1
    assert calls == [], calls
    monkeypatch.undo()
    full, _ = model(x)
    cache.reset()
    logits, _ = model(x[:, :9], cache=cache)  # a reset cache is written over from position 0
    assert cache.past.data_ptr() == where and torch.allclose(logits, full[:, :9], atol=1e-5)


def test_chunked_prefill_uses_a_bottom_right_mask(model):
    """Several new queries after cached keys (trap 1 in docs/TRAPS.md): still equal to the full forward."""
    x = torch.randint(0, 97, (1, 16))
    full, _ = model(x)
    for explicit in (False, True):
        cache = KVCache()
        model(x[:, :6], cache=cache, explicit=explicit)
        chunk, _ = model(x[:, 6:13], cache=cache, explicit=explicit)
        assert torch.allclose(chunk, full[:, 6:13], atol=1e-5)


def test_too_long_input_fails_clearly(model):
    with pytest.raises(UserError, match="longer than the context"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = KVCache()
    model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
    with pytest.raises(UserError, match="block_size=16"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_vocab_mismatch_is_caught(model):
    from mini_llm.tokenizer import train_tokenizer_from_text

    tok = train_tokenizer_from_text("hello world " * 50, 300)
    with pytest.raises(UserError, match="model was built for 97"):
        model.check_vocab(tok)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = MiniGPT(GPTConfig(**TINY))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 97, (4, 16))
    y = torch.randint(0, 97, (4, 16))
    for step in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.1:
            break
    assert loss.item() < 0.1, loss.item()


def test_state_dict_round_trip(model):
    x = torch.randint(0, 97, (2, 16))
    other = MiniGPT(GPTConfig(**TINY)).eval()
    other.load_state_dict(model.state_dict())
    assert torch.equal(model(x)[0], other(x)[0])


def test_last_only_logits(model):
    x = torch.randint(0, 97, (2, 10))
    full, _ = model(x)
    last, _ = model(x, last_only=True)
    assert last.shape == (2, 1, 97) and torch.allclose(last[:, 0], full[:, -1], atol=1e-6)


