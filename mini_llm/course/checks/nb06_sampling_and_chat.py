"""Checks of notebook 06 (sampling and chat): temperature, top-k, top-p, a repetition penalty, a stream
that stops at stop strings."""

import torch

from mini_llm.course.checks.harness import Result, close, on_copies, run_cases


def check_top_k(fn, hidden: bool = False) -> Result:
    """fn(logits, k) -> logits with all but the k largest set to -inf."""
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5, 4.0])
    inf = float("-inf")
    cases = [((logits, 2), torch.tensor([inf, 3.0, inf, inf, 4.0])),
             ((logits, 1), torch.tensor([inf, inf, inf, inf, 4.0])),
             ((logits, 10), logits.clone())]
    other = torch.tensor([0.25, -2.0, 5.0, 3.0, 3.5, -1.0, 0.0])
    hidden_cases = [((other, 3), torch.tensor([inf, inf, 5.0, 3.0, 3.5, inf, inf])),
                    ((other, 7), other.clone()),
                    ((-other, 2), torch.tensor([inf, 2.0, inf, inf, inf, 1.0, inf]))]
    return run_cases("top-k", fn, cases, "torch.topk(logits, min(k, len(logits))).values[-1] is the k-th largest; "
                  "mask everything below it.", lambda g, w: torch.equal(torch.as_tensor(g), w),
                  hidden_cases=hidden_cases, hidden=hidden)


def check_temperature(fn, hidden: bool = False) -> Result:
    """fn(logits, temperature) -> probabilities; temperature 0 is a one-hot argmax."""
    logits = torch.tensor([1.0, 2.0, 0.0])
    cases = [((logits, 1.0), torch.softmax(logits, 0)), ((logits, 0.5), torch.softmax(logits / 0.5, 0)),
             ((logits, 0.0), torch.tensor([0.0, 1.0, 0.0]))]
    other = torch.tensor([0.5, -1.0, 2.5, 3.0])
    hidden_cases = [((other, 2.0), torch.softmax(other / 2.0, 0)), ((other, 0.1), torch.softmax(other / 0.1, 0)),
                    ((other, 0.0), torch.tensor([0.0, 0.0, 0.0, 1.0]))]
    return run_cases("temperature", fn, cases, "softmax(logits / T); at T == 0 do not divide: put all probability on the argmax.",
                  lambda g, w: close(g, w, 1e-6), hidden_cases=hidden_cases, hidden=hidden)


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
    from mini_llm.generate import next_token_distribution

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
    from mini_llm.generate import Sampling, stream

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

