"""Checks of notebook 06 (sampling and chat). Steps: temperature, top-k, top-p on sorted candidates,
a seeded draw (checked by its distribution, so any candidate order passes), the generation loop,
the cached loop, streaming. Exercises: top-p in vocabulary order, a repetition penalty, a stream that
stops at stop strings."""

import contextlib

import torch

from mini_llm.course.checks.harness import Label, Result, Verdict, close, on_copies, run_cases, small_model, step
from mini_llm.generate import (
    Sampling,
    TorchRunner,
    candidates,
    generate_ids,
    next_token_distribution,
    sample_logits,
    stream,
)
from mini_llm.model import KVCache

# --- the package's pieces, in the notebook's shapes (what the notebook uses when yours is not written) --


def probs_at_temperature(logits, temperature):
    """generate.next_token_distribution with temperature only."""
    return next_token_distribution(logits, temperature, None, None)


def top_k_filter(logits, k):
    """The logits of generate.candidates' top-k, -inf elsewhere."""
    ids, _ = candidates(logits, 1.0, k, None)
    keep = torch.zeros(logits.shape, dtype=torch.bool).scatter(-1, ids, True)
    return logits.masked_fill(~keep, float("-inf"))


def nucleus(probs, top_p):
    """generate.candidates' top-p cut of probabilities sorted largest first, renormalised."""
    return candidates(probs.log(), 1.0, None, top_p)[1]


def sample_next(logits, temperature, top_k, top_p, generator):
    """generate.sample_logits: one token id."""
    return int(sample_logits(logits, temperature, top_k, top_p, generator))


def generate_uncached(model, ids, max_new_tokens, sample):
    """generate.generate_ids(mode="exact") on the model, drawing with sample(logits) -> id."""
    return list(generate_ids(_Drawing(model, sample), ids, max_new_tokens, Sampling(temperature=0.0), mode="exact"))


def generate_cached(model, ids, max_new_tokens, sample):
    """generate.generate_ids (cached, half a window refilled when full), drawing with sample(logits) -> id."""
    return list(generate_ids(_Drawing(model, sample), ids, max_new_tokens, Sampling(temperature=0.0)))


def stream_pieces(tokenizer, ids):
    """generate.stream of a fixed list of ids: the pieces it prints."""
    return list(stream(Script(ids, tokenizer.get_vocab_size()), tokenizer, [0], len(ids), Sampling(temperature=0.0)))


class _Drawing(TorchRunner):
    """A runner over the model itself (no copy) whose logits, once greedy sampling takes their
    argmax, give the token sample(logits) draws: generate_ids's loop with any draw."""

    def __init__(self, model, sample):
        self.model, self.sample = model, sample
        self.block_size, self.vocab_size = model.config.block_size, model.config.vocab_size
        self.device, self.cache = next(model.parameters()).device, KVCache()

    def _run(self, ids, cache):
        logits = super()._run(ids, cache)
        return torch.nn.functional.one_hot(torch.tensor(self.sample(logits)), self.vocab_size).float()


class Script:
    """A stand-in runner whose next token is always the script's next id (what the notebook shows)."""

    block_size = room = 1 << 30

    def __init__(self, ids, vocab_size):
        self.ids, self.i, self.vocab_size = list(ids), 0, vocab_size

    def start(self, context):
        self.i = 0
        return self.step(None)

    def step(self, token):
        logits = torch.full((self.vocab_size,), float("-inf"))
        logits[self.ids[min(self.i, len(self.ids) - 1)]] = 0.0
        self.i += 1
        return logits


@contextlib.contextmanager
def _one_thread():
    """torch on one thread while a check runs its many tiny forwards and draws: on a busy 2-core
    machine a second thread makes each tiny op wait for it (measured: 170 ms a forward instead of 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- steps -----------------------------------------------------------------------------------------


def check_temperature(fn, hidden: bool = False) -> Result:
    """Step: fn(logits, temperature) -> probabilities; temperature 0 is a one-hot argmax."""
    logits = torch.tensor([1.0, 2.0, 0.0])
    cases = [((logits, 1.0), torch.softmax(logits, 0)), ((logits, 0.5), torch.softmax(logits / 0.5, 0)),
             ((logits, 0.0), torch.tensor([0.0, 1.0, 0.0]))]
    other = torch.tensor([0.5, -1.0, 2.5, 3.0])
    hidden_cases = [((other, 2.0), torch.softmax(other / 2.0, 0)), ((other, 0.1), torch.softmax(other / 0.1, 0)),
                    ((other, 0.0), torch.tensor([0.0, 0.0, 0.0, 1.0]))]
    return step("probs_at_temperature", fn, probs_at_temperature, run_cases(
        "temperature", on_copies(fn), cases, "softmax(logits / T); at T == 0 do not divide: put all probability on the argmax.",
        lambda g, w: close(g, w, 1e-6), hidden_cases=hidden_cases, hidden=hidden))


def check_top_k(fn, hidden: bool = False) -> Result:
    """Step: fn(logits, k) -> logits with all but the k largest set to -inf (k clamped to the vocabulary)."""
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5, 4.0])
    inf = float("-inf")
    cases = [((logits, 2), torch.tensor([inf, 3.0, inf, inf, 4.0])),
             ((logits, 1), torch.tensor([inf, inf, inf, inf, 4.0])),
             ((logits, 10), logits.clone())]
    other = torch.tensor([0.25, -2.0, 5.0, 3.0, 3.5, -1.0, 0.0])
    hidden_cases = [((other, 3), torch.tensor([inf, inf, 5.0, 3.0, 3.5, inf, inf])),
                    ((other, 7), other.clone()),
                    ((-other, 2), torch.tensor([inf, 2.0, inf, inf, inf, 1.0, inf]))]
    return step("top_k_filter", fn, top_k_filter, run_cases(
        "top-k", on_copies(fn), cases, "torch.topk(logits, min(k, len(logits))).values[-1] is the k-th largest; "
        "mask everything below it.", lambda g, w: torch.equal(torch.as_tensor(g), w),
        hidden_cases=hidden_cases, hidden=hidden))


def check_nucleus(fn, hidden: bool = False) -> Result:
    """Step: fn(probs, top_p) -> probabilities: probs (..., k) sorted largest first; a token is
    dropped (0) when the ones before it already reach top_p, the first always stays; the kept ones
    renormalised to sum to 1 (to 1e-6)."""
    def case(probs, p):
        probs = torch.tensor(probs)
        probs = probs / probs.sum(-1, keepdim=True)
        return ((probs, p), nucleus(probs, p))

    cases = [case([0.5, 0.25, 0.125, 0.125], 0.3), case([0.25, 0.25, 0.25, 0.25], 0.4), case([0.5, 0.25, 0.125, 0.125], 0.95)]
    hidden_cases = [case([[0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]], 0.75), case([0.5, 0.3, 0.15, 0.05], 0.7), case([0.3, 0.25, 0.2, 0.15, 0.1], 0.99),
                    case([0.6, 0.2, 0.1, 0.05, 0.05], 0.01), case([1.0], 0.9), case([0.35, 0.33, 0.32], 1.0)]
    return step("nucleus", fn, nucleus, run_cases(
        "nucleus", on_copies(fn), cases, "before = probs.cumsum(-1) - probs is the probability of the tokens ahead "
        "of each one; drop those where it already reaches top_p, but never the first; then divide the kept ones by "
        "their sum (keepdim=True, so rows of a batch stay apart).",
        lambda g, w: close(g, w, 1e-6), hidden_cases=hidden_cases, hidden=hidden))


DRAWS = 2000  # per case: each token's frequency within about 0.011 (one standard deviation) of its probability


def _draws(fn, logits, settings, seed, n=DRAWS, global_seed=1):
    """n draws of fn from one generator, torch's global RNG seeded with global_seed meanwhile (and
    restored after): a draw from the global RNG changes with global_seed, one from the generator does not."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(global_seed)
        generator = torch.Generator().manual_seed(seed)
        return [int(fn(logits.clone(), *settings, generator)) for _ in range(n)]


def check_sample_next(fn, hidden: bool = False) -> Result:
    """Step: fn(logits (V,), temperature, top_k, top_p, generator) -> one token id, drawn from
    next_token_distribution with the generator (any order of candidates: the draws' frequencies are
    compared, within 0.04 each, never a token of probability 0); temperature 0 is the argmax; the
    same seed gives the same draws."""
    with _one_thread():
        def case(logits, t, k, p):
            logits = torch.tensor(logits)
            return ((logits, t, k, p), Verdict(True, f"draws from the distribution of temperature {t}, top-k {k}, top-p {p}"))

        def run(logits, t, k, p):
            want = next_token_distribution(logits, t, k, p)
            draws = _draws(fn, logits, (t, k, p), 0)
            if not all(0 <= i < logits.numel() for i in draws):
                return Verdict(False, f"an id outside the vocabulary: {next(i for i in draws if not 0 <= i < logits.numel())}")
            got = torch.bincount(torch.tensor(draws), minlength=logits.numel()) / DRAWS
            if draws[:50] != _draws(fn, logits, (t, k, p), 0, 50, global_seed=2):
                return Verdict(False, "other draws from the same seed: draw with the generator (torch.multinomial(..., "
                                      "generator=generator)), never torch's global random numbers")
            never = (want == 0) & (got > 0)
            if never.any():
                i = int(never.nonzero()[0])
                return Verdict(False, f"token {i} drawn {int(got[i] * DRAWS)} times in {DRAWS}, though its probability is 0")
            off = (got - want).abs()
            if off.max() > 0.04:
                i = int(off.argmax())
                return Verdict(False, f"token {i} drawn in {got[i]:.1%} of {DRAWS} draws, its probability is {want[i]:.1%}")
            return Verdict(True, f"draws from the distribution of temperature {t}, top-k {k}, top-p {p}")

        base = [2.0, 0.5, 1.5, -1.0, 1.0, 0.0, 2.5, -0.5]
        cases = [case(base, 1.0, None, None), case(base, 0.8, 3, None), case(base, 1.0, None, 0.7), case(base, 0.0, None, None)]
        hidden_cases = [case(base, 2.0, 5, 0.9), case(base, 0.5, None, None), case([0.0, 3.0, 0.5, 2.8, 1.0, -2.0], 1.3, 20, None),
                        case([1.0, 1.0, 1.0, 4.0, 0.0], 1.0, None, 0.3), case([0.2, -0.4, 0.9, 0.1], 0.0, 2, 0.5)]
        return step("sample_next", fn, sample_next, run_cases(
            "sample_next", run, cases, "temperature 0: the argmax, nothing drawn. Otherwise the probabilities that "
            "temperature, top-k (if not None) and top-p (if not None) leave, then one torch.multinomial(probs, 1, "
            "generator=generator) draw; map the drawn index back to a token id if you drew from candidates.",
            lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


def _loop_case(seed, prompt, new, settings, **sizes):
    """A small model, its frozen copy's runner, a prompt, and what generate_ids gives (both modes)."""
    model = small_model(seed, **sizes)
    with torch.no_grad():  # weights of unit scale, so the logits differ enough to matter
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / (p.size(1) ** 0.5 if "wte" not in name and "wpe" not in name else 1))
    runner = TorchRunner(model)
    ids = torch.randint(0, model.config.vocab_size, (prompt,), generator=g).tolist()
    t, k, p, draw_seed = settings
    want = {mode: list(generate_ids(runner, ids, new, Sampling(t, k, p, draw_seed), mode=mode)) for mode in ("exact", "cached")}
    c = model.config
    text = f"<MiniGPT block_size={c.block_size}; prompt {prompt}, {new} new, seed {draw_seed}>"
    return Label(dict(model=runner.model, ids=ids, new=new, settings=settings), text), want


def _run_loop(fn, mode):
    def run(spec):
        s = spec.value
        t, k, p, seed = s["settings"]
        generator = torch.Generator().manual_seed(seed)
        got = fn(s["model"], list(s["ids"]), s["new"], lambda logits: int(sample_logits(logits, t, k, p, generator)))
        return [int(i) for i in got]
    return run


def _loop_cases():
    sizes = dict(vocab_size=40, block_size=16, n_embd=16, n_head=2, n_layer=2)
    cases = [_loop_case(0, 5, 8, (1.0, None, None, 0), **sizes), _loop_case(2, 13, 28, (0.5, 10, None, 2), **sizes)]
    hidden = [_loop_case(2, 30, 20, (1.0, None, 0.9, 2), **sizes), _loop_case(3, 1, 40, (1.2, 5, None, 3), **sizes),
              _loop_case(4, 16, 17, (0.0, None, None, 4), **{**sizes, "block_size": 8}),
              _loop_case(5, 10, 30, (0.0, None, None, 5), **sizes)]
    return cases, hidden


def _check_loop(name: str, fn, package, mode: str, hint: str, hidden: bool) -> Result:
    """A generation loop's proof: the tokens of generate_ids in `mode` ("exact" or "cached") from the
    same cases, the loop driven by the package's draw."""
    with _one_thread():
        cases, hidden_cases = _loop_cases()
        return step(name, fn, package, run_cases(
            name, _run_loop(fn, mode), [((spec,), want[mode]) for spec, want in cases], hint, lambda g, w: g == w,
            hidden_cases=[((spec,), want[mode]) for spec, want in hidden_cases], hidden=hidden))


def check_generate_uncached(fn, hidden: bool = False) -> Result:
    """Step: fn(model, ids, max_new_tokens, sample) -> the new ids: each step the model on the last
    block_size tokens of the context, then sample(logits of the last position) -> the next id; the
    same tokens as generate_ids(mode="exact") when sample draws as the package does."""
    return _check_loop("generate_uncached", fn, generate_uncached, "exact",
                       "start from list(ids); each step: window = the last block_size tokens of the context (all of "
                       "them while there are fewer), logits = model(torch.tensor([window]), last_only=True)[0][0, -1], "
                       "token = sample(logits), append it; return only the new tokens.", hidden)


def check_generate_cached(fn, hidden: bool = False) -> Result:
    """Step: fn(model, ids, max_new_tokens, sample) with a KVCache: prefill the last block_size
    tokens, then one token per step; when the cache is full, prefill the last block_size // 2
    tokens of the context again; the same tokens as generate_ids (cached) when sample draws as the
    package does."""
    return _check_loop("generate_cached", fn, generate_cached, "cached",
                       "prefill: cache.reset(), then model(torch.tensor([context[-block_size:]]), cache=cache, "
                       "last_only=True); after each sampled token: while cache.pos < block_size run the model on "
                       "[[token]] with the cache, else prefill context[-(block_size // 2):] again. Sample once per "
                       "new token.", hidden)


class Bytes:
    """A byte-level stand-in tokenizer: token id i is the byte i; decode returns the text so far,
    an unfinished character at the end as "\ufffd" (as a byte-level BPE's decode does)."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")

    def token_to_id(self, token):
        return None

    def get_vocab_size(self):
        return 256


def check_stream_pieces(fn, hidden: bool = False) -> Result:
    """Step: fn(tokenizer, ids) -> the pieces to print as the tokens arrive: after each token the new,
    complete text (an unfinished character held back until its bytes are all there), and what is
    left at the end; the same pieces as generate.stream."""
    tok = Bytes()

    def case(text, cut=0):
        ids = list(text.encode("utf-8"))[: len(text.encode("utf-8")) - cut]
        return ((Label(tok, "<byte-level tokenizer>"), ids), stream_pieces(tok, ids))

    cases = [case("Ωж 世界!"), case("plain ASCII"), case("déjà vu")]
    hidden_cases = [case("🙂 ok"), case("a世"), case("x世", cut=1), case("Ω"), case("naïve café, 東京 🚀!")]
    return step("stream_pieces", fn, stream_pieces, run_cases(
        "stream_pieces", lambda tokenizer, ids: fn(tokenizer.value, list(ids)), cases, "for n = 1 .. len(ids): "
        "decode ids[:n] whole; hold back trailing '\ufffd' characters; print the new part beyond what you "
        "printed (never an empty piece). At the end, print whatever is left of the decoded text.",
        lambda g, w: not isinstance(g, str) and list(g) == w, hidden_cases=hidden_cases, hidden=hidden))


# --- exercises -------------------------------------------------------------------------------------


def _masked_like(got, want) -> bool:
    """Filtered logits: the same shape, -inf exactly where expected, the kept logits unchanged."""
    if isinstance(got, (bool, str)):
        return False
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape or not torch.equal(torch.isneginf(got), torch.isneginf(want)):
        return False
    kept = ~torch.isneginf(want)
    return torch.allclose(got[kept], want[kept], atol=1e-6, rtol=1e-6)


def check_top_p(fn, hidden: bool = False) -> Result:
    """fn(logits, p) -> logits (..., V) in vocabulary order with every token outside the nucleus
    set to -inf: the nucleus is the smallest set of most likely tokens whose probability reaches
    p (always at least the most likely one); the kept logits are unchanged."""
    def case(logits, p):
        logits = torch.tensor(logits)
        kept = next_token_distribution(logits, temperature=1.0, top_k=None, top_p=p) > 0  # the package's rule
        return ((logits, p), logits.masked_fill(~kept, float("-inf")))

    cases = [case([1.0, 3.0, 2.0, 0.5, 4.0], 0.9),  # probabilities .63 .23 .09 ...: three tokens reach 0.9
             case([1.0, 3.0, 2.0, 0.5, 4.0], 0.5),  # the most likely alone is enough
             case([[0.0, 2.5, -1.0, 1.0], [3.0, 2.75, 2.5, -4.0]], 0.8)]  # a batch (B, V): rows keep 2 and 3
    hidden_cases = [case([[[5.0, 1.0, 0.0], [0.125, 0.375, 0.25]], [[-2.0, -1.0, -3.0], [1.5, -0.5, 4.0]]], 0.6),
                    case([0.25, -1.25, 2.25, 0.875, 1.75, -0.5, 0.0, 1.125], 0.95),
                    case([0.25, -1.25, 2.25, 0.875, 1.75, -0.5, 0.0, 1.125], 0.01),
                    case([[7.0, 6.5, 6.0, 5.5, 5.0, 4.5]], 0.7)]
    return run_cases("top-p", on_copies(fn), cases, "softmax over the last dimension, sort it (largest first) and "
                  "take the cumulative sum; a token stays while the probability of the tokens before it is still "
                  "below p, so the first always stays. Then bring that mask back to vocabulary order (scatter it "
                  "with the sort's indices) and set the other logits to -inf.", _masked_like,
                  hidden_cases=hidden_cases, hidden=hidden)


def check_repetition_penalty(fn, hidden: bool = False) -> Result:
    """fn(logits (V,), context_ids, penalty) -> new logits: every token id that occurs in the
    context (once or more) made less likely: a positive logit divided by penalty, a negative one
    multiplied by it (CTRL's rule, as in Hugging Face's RepetitionPenaltyLogitsProcessor)."""

    def case(logits, context, penalty):
        logits = torch.tensor(logits)
        want = logits.clone()
        for i in set(context):
            want[i] = want[i] / penalty if want[i] > 0 else want[i] * penalty
        return ((logits, context, penalty), want)

    cases = [case([2.0, -1.0, 0.5, 3.0, -2.0], [0, 1, 3], 2.0),
             case([2.0, -1.0, 0.5, 3.0, -2.0], [3, 3, 1, 3], 2.0),  # a repeated token is penalised once
             case([1.0, 4.0, -0.5], [], 1.5)]
    hidden_cases = [case([0.75, -0.25, 1.875, -3.0, 0.0, 2.5, -1.125, 0.0625], [7, 2, 2, 3, 6, 7, 7, 4], 1.3),
                    case([0.75, -0.25, 1.875, -3.0, 0.0, 2.5, -1.125, 0.0625], [1], 1.1),
                    case([-5.0, -4.0, -3.0, 6.0], [0, 1, 2, 3, 0, 1, 2, 3], 3.0)]
    return run_cases("repetition penalty", on_copies(fn), cases, "for each distinct id in the context (a set): "
                  "if its logit is positive divide it by the penalty, otherwise multiply it, so both ways it moves "
                  "down. Tokens not in the context keep their logits.",
                  lambda g, w: not isinstance(g, (bool, str)) and close(g, w, 1e-6), hidden_cases=hidden_cases,
                  hidden=hidden)


class _Replay:
    """A stand-in runner and tokenizer for `generate.stream`: the i-th decode of the reply gives
    texts[i - 1], whatever the token ids (so the package's own stream says what to print)."""

    block_size, room = 1 << 30, 1 << 30

    def __init__(self, texts):
        self.texts = list(texts)

    def start(self, ids):
        return torch.zeros(2)

    def step(self, token):
        return torch.zeros(2)

    def token_to_id(self, token):
        return None

    def decode(self, ids, skip_special_tokens=True):
        return self.texts[len(ids) - 1]


def check_stop_stream(fn, hidden: bool = False) -> Result:
    """fn(texts, stops) -> the pieces a streamer prints, where texts[i] is the whole reply decoded
    after its first i + 1 tokens: at each token, the new text that is safe (no unfinished
    character, nothing that may be the start of a stop string); at a stop string, what comes
    before it, then the end; after the last text, whatever is left."""
    def case(texts, stops):
        replay = _Replay(texts)
        want = list(stream(replay, replay, [0], len(texts), Sampling(temperature=0.0, top_k=None), stops))
        return ((texts, stops), want)

    cases = [case(["Ay", "Ay, my", "Ay, my lord.", "Ay, my lord.\n", "Ay, my lord.\n\n", "Ay, my lord.\n\nHORATIO"],
                  ["\n\n"]),
             case(["\ufffd", "Ω", "Ω\ufffd", "Ωж", "Ωж!"], []),
             case(["Go", "Go\n", "Go\nnow", "Go\nnow\n"], ["\n\n"])]  # a held-back "\n" that was no stop
    hidden_cases = [case(["Well", "Well\n", "Well\nHOR", "Well\nHORATIO", "Well\nHORATIO:", "Well\nHORATIO: x\n\n"],
                         ["\n\n", "\nHORATIO:"]),
                    case(["Yes", "Yes sir.\n\nHAMLET:"], ["\n\n"]),
                    case(["To\ufffd", "To世\ufffd", "To世界\n", "To世界\n\n"], ["\n\n"]),
                    case(["\n", "\n\n", "\n\nGone"], ["\n\n"]),
                    case(["a", "ab", "abc", "abcab", "abcabd", "abcabdab"], ["abx", "bd"])]
    return run_cases("stop stream", fn, cases, "keep how much you have printed. At each text: if a stop string occurs, "
                  "print up to its first occurrence and stop. Otherwise hold back the longest end of the text that "
                  "is the beginning of a stop string, then any unfinished '\\ufffd' before that, and print the rest "
                  "that is new. When the texts run out, print what is left.",
                  lambda g, w: not isinstance(g, str) and list(g) == w, hidden_cases=hidden_cases, hidden=hidden)

