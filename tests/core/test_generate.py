
import argparse
import inspect
from collections import Counter

import pytest
import torch

from mini_llm.errors import UserError
from mini_llm.generate import (
    Sampling,
    TorchRunner,
    candidates,
    generate,
    generate_ids,
    next_token_distribution,
    sample_logits,
    stream,
)
from mini_llm.model import GPTConfig, MiniGPT
from mini_llm.tokenizer import EOT, train_tokenizer_from_text
from tests.conftest import make_text


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer_from_text(make_text(300) + "Ωж 世界 👋 " * 20, 320)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return MiniGPT(GPTConfig(vocab_size=tok.get_vocab_size(), block_size=32, n_embd=32, n_head=2, n_layer=2)).eval()


def test_sampling_parameters_are_checked():
    logits = torch.randn(10)
    for kw, msg in [({"temperature": -0.1}, "temperature -0.1 must be >= 0"), ({"top_k": 0}, "top-k 0 must be >= 1"),
                    ({"top_p": 0.0}, r"top-p 0.0 must be in \(0, 1\]"), ({"top_p": 1.5}, "top-p 1.5")]:
        with pytest.raises(UserError, match=msg):
            sample_logits(logits, **kw)


def test_temperature_zero_and_top_k_one_are_greedy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50)
    greedy = logits.argmax(-1)
    assert torch.equal(sample_logits(logits, temperature=0.0), greedy)
    assert torch.equal(sample_logits(logits, temperature=1.5, top_k=1, generator=g), greedy)
    assert torch.equal(sample_logits(logits, temperature=1.0, top_k=None, top_p=1e-6, generator=g), greedy)
    assert not torch.isnan(next_token_distribution(logits, temperature=0.0)).any()


def test_top_k_is_clamped_to_the_vocabulary():
    logits = torch.randn(7)
    ids, probs = candidates(logits, 1.0, top_k=1000)
    assert ids.numel() == 7 and torch.isclose(probs.sum(), torch.tensor(1.0))


def test_top_k_never_samples_outside_the_k_largest():
    g = torch.Generator().manual_seed(123)
    logits = torch.randn(100, generator=g)
    allowed = set(torch.topk(logits, 5).indices.tolist())
    draws = [int(sample_logits(logits, 2.0, top_k=5, generator=g)) for _ in range(2000)]
    assert set(draws) <= allowed
    assert len(set(draws)) == 5  # and all of them do get drawn at a high temperature


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    kept = next_token_distribution(logits, 1.0, top_k=None, top_p=0.8)
    assert torch.allclose(kept, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    kept = next_token_distribution(logits, 1.0, top_k=None, top_p=0.81)
    assert (kept > 0).tolist() == [True, True, True, False]
    g = torch.Generator().manual_seed(0)
    counts = Counter(int(sample_logits(logits, 1.0, None, 0.8, g)) for _ in range(3000))
    assert set(counts) == {0, 1} and abs(counts[0] / 3000 - 0.625) < 0.04


def test_same_seed_same_text(model, tok):
    a = generate(model, tok, "KING:\n", 30, temperature=1.0, top_k=20, seed=7)
    b = generate(model, tok, "KING:\n", 30, temperature=1.0, top_k=20, seed=7)
    c = generate(model, tok, "KING:\n", 30, temperature=1.0, top_k=20, seed=8)
    assert a == b and a != c


@pytest.mark.parametrize("sampling", [Sampling(0.0, None, None, 0), Sampling(1.0, 20, None, 3), Sampling(0.9, None, 0.9, 5)])
def test_cached_equals_exact_while_the_context_fits(model, sampling):
    runner = TorchRunner(model)
    prompt = torch.randint(0, model.config.vocab_size, (5,), generator=torch.Generator().manual_seed(1)).tolist()
    cached = list(generate_ids(runner, prompt, 27, sampling, mode="cached"))  # 5 + 27 = block_size
    exact = list(generate_ids(runner, prompt, 27, sampling, mode="exact"))
    assert cached == exact and len(cached) == 27


def test_generation_goes_past_the_window(model):
    runner = TorchRunner(model)
    out = list(generate_ids(runner, [1, 2, 3], 100, Sampling(0.0, None, None, 0), mode="cached"))
    assert len(out) == 100
    exact = list(generate_ids(runner, [1, 2, 3], 100, Sampling(0.0, None, None, 0), mode="exact"))
    assert out[:29] == exact[:29]  # identical while everything fits in the window


class ScriptedRunner:
    """A runner that 'generates' a fixed token sequence: for testing the text stream."""

    def __init__(self, script, vocab):
        self.script, self.vocab, self.block_size, self.i = list(script), vocab, 64, 0
        self.room = 64

    def _next(self):
        logits = torch.full((self.vocab,), -1e9)
        logits[self.script[min(self.i, len(self.script) - 1)]] = 0.0
        self.i += 1
        return logits

    def start(self, ids):
        self.i = 0
        return self._next()

    def step(self, token):
        return self._next()

    full = start


def test_stream_keeps_multibyte_characters_whole(tok):
    text = "Ωж 世界 👋"
    ids = tok.encode(text).ids
    byte_pieces = [tok.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in byte_pieces) or len(ids) > 1  # one token at a time would break it (trap 2 in docs/TRAPS.md)
    runner = ScriptedRunner(ids + [tok.token_to_id(EOT)], tok.get_vocab_size())
    pieces = list(stream(runner, tok, [0], 50, Sampling(0.0, None, None, 0)))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stream_stops_at_stop_strings_without_printing_them(tok):
    ids = tok.encode("the king spoke\n\nQUEEN:\nno").ids
    runner = ScriptedRunner(ids, tok.get_vocab_size())
    pieces = list(stream(runner, tok, [0], 50, Sampling(0.0, None, None, 0), stop=["\n\n"]))
    assert "".join(pieces) == "the king spoke"


def test_stream_stops_at_end_of_text(tok):
    ids = tok.encode("fair").ids + [tok.token_to_id(EOT)] + tok.encode("never").ids
    runner = ScriptedRunner(ids, tok.get_vocab_size())
    assert "".join(stream(runner, tok, [0], 50, Sampling(0.0, None, None, 0))) == "fair"


def test_empty_prompt_is_refused(model, tok):
    with pytest.raises(UserError, match="empty prompt"):
        list(generate_ids(TorchRunner(model), [], 5, Sampling()))


def test_unseeded_sampling_leaves_the_global_rng_alone():
    from mini_llm.generate import Sampling

    state = torch.get_rng_state()
    a, b = Sampling(seed=None).generator(), Sampling(seed=None).generator()
    assert torch.equal(state, torch.get_rng_state())
    assert a.initial_seed() != b.initial_seed()


def test_one_set_of_sampling_defaults(monkeypatch, trained_run):
    """The library, the CLI and the widgets all start from generate's TEMPERATURE, TOP_K, TOP_P."""
    from mini_llm import generate as gen
    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.cli.generate import add_sampling_arguments
    from mini_llm.course import widgets

    d = gen.Sampling()
    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    args = p.parse_args([])
    assert (args.temperature, args.top_k, args.top_p) == (d.temperature, d.top_k, d.top_p)
    for fn in (gen.generate, gen.sample_logits, gen.candidates, gen.next_token_distribution, widgets.sampling_from,
               widgets.sampling_view):
        params = inspect.signature(fn).parameters
        for name in ("temperature", "top_k", "top_p"):
            assert params[name].default is getattr(gen, name.upper()), (fn.__name__, name)  # the constant itself
    # the sliders start where the constants say, whatever they say
    monkeypatch.setattr(widgets, "TEMPERATURE", 0.55)
    monkeypatch.setattr(widgets, "TOP_K", 17)
    model, tok, _ = load_checkpoint(trained_run)
    for ui in (widgets.sampling_playground(model, tok), widgets.chat_panel(model, tok)):
        sliders = {c.description: c.value for c in _controls(ui) if hasattr(c, "description") and hasattr(c, "value")}
        assert sliders["temperature"] == 0.55 and sliders["top-k"] == 17, sliders


def _controls(widget):
    """Every widget inside `widget`, depth first."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _controls(child)
