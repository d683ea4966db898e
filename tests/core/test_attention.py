"""The attention pieces: the teaching modules and the model's attention share one parameter layout."""

import pytest
import torch

from mini_llm.attention import MultiHeadAttention, SingleHeadAttention, attention, causal_mask


def test_teaching_attention_pieces():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    out, w = SingleHeadAttention(16, 8)(x)
    assert out.shape == (2, 6, 8) and w.shape == (2, 6, 6)
    assert torch.allclose(w.sum(-1), torch.ones(2, 6)) and w[0].triu(1).abs().max() == 0
    mha = MultiHeadAttention(16, 4)
    out, w = mha(x)
    assert out.shape == (2, 6, 16) and w.shape == (2, 4, 6, 6)
    q, k, v = mha.qkv(x)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    mine, _ = attention(q, k, v, causal_mask(6))
    assert torch.allclose(sdpa, mine, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)


def _model(**config):
    from mini_llm.model import GPTConfig, MiniGPT

    torch.manual_seed(0)
    return MiniGPT(GPTConfig(**dict(dict(vocab_size=97, block_size=16, n_embd=32, n_head=4, n_layer=3), **config)))


def test_the_models_attention_does_not_pretend_to_be_the_teaching_one():
    """CausalSelfAttention's forward takes and returns other things than MultiHeadAttention's, so it
    is not its subclass; both stand on the same parameter layout, and the weights load both ways."""
    import inspect

    from mini_llm.attention import HeadedAttention
    from mini_llm.model import CausalSelfAttention, GPTConfig

    assert not issubclass(CausalSelfAttention, MultiHeadAttention)
    assert issubclass(CausalSelfAttention, HeadedAttention) and issubclass(MultiHeadAttention, HeadedAttention)
    assert "forward" not in vars(HeadedAttention)
    assert list(inspect.signature(MultiHeadAttention.forward).parameters) == ["self", "x"]
    torch.manual_seed(0)
    teaching, model = MultiHeadAttention(32, 4), CausalSelfAttention(GPTConfig(n_embd=32, n_head=4, block_size=8))
    model.load_state_dict(teaching.state_dict())
    x = torch.randn(2, 8, 32)
    (out, weights), (y, maps) = teaching(x), model(x, explicit=True)
    assert torch.equal(out, y) and torch.equal(weights, maps)
    # one kind of dropout setting in both: a probability for the weights, a module for the output
    for attn in (MultiHeadAttention(32, 4, dropout=0.25), CausalSelfAttention(GPTConfig(n_embd=32, n_head=4, dropout=0.25))):
        assert attn.attn_dropout == 0.25 and attn.resid_dropout.p == 0.25


def test_the_explicit_path_drops_attention_weights_as_the_fused_one_does():
    """In training with dropout, the explicit matmuls drop weights too (scaled by 1 / (1 - p), like
    SDPA's dropout_p), so the two paths train the same model; evaluation drops nothing."""
    model = _model(dropout=0.5).train()
    x = torch.randint(0, 97, (4, 16))
    _, maps = model._hidden(x, explicit=True)
    w = maps[0]
    visible = w[..., causal_mask(16)]  # the weights the mask lets through (the rest are 0 anyway)
    assert (visible == 0).float().mean() > 0.3  # about half of them dropped ...
    kept = w[w > 0]
    rows = w.sum(-1)
    assert not torch.allclose(rows, torch.ones_like(rows))  # ... so rows no longer sum to 1 ...
    assert rows.mean().item() == pytest.approx(1.0, abs=0.15)  # ... but do on average
    assert kept.max() <= 2.0 + 1e-6  # each kept weight doubled at most (p = 0.5)


def test_attention_maps_are_taken_in_eval_mode():
    model = _model(dropout=0.5).train()
    x = torch.randint(0, 97, (2, 10))
    _, maps = model.attention_maps(x)
    assert model.training  # the mode is restored
    for w in maps:
        assert torch.allclose(w.sum(-1), torch.ones(2, 4, 10), atol=1e-6)  # nothing dropped
    _, again = model.attention_maps(x)
    assert all(torch.equal(a, b) for a, b in zip(maps, again))


def test_rotary_angles_are_computed_once_per_forward(monkeypatch):
    """Every layer turns its queries and keys by the same angles: computed once per forward, not per layer."""
    import mini_llm.model as model_module

    calls = []
    real = model_module.rotary_angles
    monkeypatch.setattr(model_module, "rotary_angles", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = _model(pos="rope", n_layer=3).eval()
    with torch.no_grad():
        model(torch.randint(0, 97, (2, 10)))
    assert len(calls) == 1


def test_rotary_takes_a_row_of_positions_per_sequence():
    """positions (B, T): each sequence turned by its own positions, the same as one at a time."""
    from mini_llm.attention import rotary

    x = torch.randn(2, 4, 5, 8)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    both = rotary(x, positions)
    for b in range(2):
        assert torch.allclose(both[b], rotary(x[b], positions[b]), atol=1e-6)
