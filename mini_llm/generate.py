"""Text generation: sampling rules and a streaming generator that uses the KV cache.

Sampling (`sample_logits`): temperature 0 is argmax (no division by zero); temperature T
divides the logits (T < 1 sharpens, T > 1 flattens); top-k keeps the k most likely tokens
(clamped to the vocabulary); top-p keeps the smallest set of tokens whose probability adds up
to p (always at least one). Sampling runs on the CPU with a seeded `torch.Generator`, so the
same seed gives the same text on every device (and MPS's multinomial is avoided: trap 9 in docs/TRAPS.md).

Long contexts (trap 7): positions are learned only up to block_size. `mode="cached"` prefills
the prompt's last block_size tokens, then decodes one token per step from the KV cache; when
the window is full it keeps the last half of the context and prefills again, so most steps stay
cheap. `mode="exact"` recomputes the last block_size tokens every step (slow, for comparison).
Both give the same tokens while everything fits in one window.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from mini_llm.errors import UserError
from mini_llm.model import KVCache
from mini_llm.tokenizer import EOT

# The one set of sampling defaults: the library, the CLI and the widgets all start from these.
TEMPERATURE, TOP_K, TOP_P = 0.8, 40, None


def check_sampling(temperature: float = TEMPERATURE, top_k: int | None = TOP_K, top_p: float | None = TOP_P) -> None:
    if temperature is None or temperature < 0:
        raise UserError(f"temperature {temperature} must be >= 0 (0 = always the most likely token)")
    if top_k is not None and top_k < 1:
        raise UserError(f"top-k {top_k} must be >= 1 (1 = greedy), or left out")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top-p {top_p} must be in (0, 1] (1 = no nucleus cut), or left out")


def candidates(logits, temperature: float = TEMPERATURE, top_k: int | None = TOP_K, top_p: float | None = TOP_P):
    """The tokens sampling may pick, most likely first, and their probabilities.

    logits (..., V) -> ids (..., n), probs (..., n) with n = top_k (or V). Working on the
    sorted top-k only is what makes a decode step's sampling cheap: no softmax over all V.
    """
    logits = logits.float() / max(temperature, 1e-8)
    k = logits.size(-1) if top_k is None else min(top_k, logits.size(-1))  # clamp to the vocabulary
    if k == logits.size(-1) and top_p is None:
        ids = torch.arange(k).expand_as(logits)
        return ids, torch.softmax(logits, dim=-1)  # plain sampling: no sort needed
    values, ids = torch.topk(logits, k, dim=-1)  # sorted, largest first
    probs = torch.softmax(values, dim=-1)
    if top_p is not None and top_p < 1.0:
        # drop a token when the ones before it already reach p; the first one always stays
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        drop[..., 0] = False
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return ids, probs


def sample_logits(logits, temperature: float = TEMPERATURE, top_k: int | None = TOP_K, top_p: float | None = TOP_P,
                  generator: torch.Generator | None = None):
    """Sample token ids (...) from logits (..., V)."""
    check_sampling(temperature, top_k, top_p)
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return logits.argmax(dim=-1)
    ids, probs = candidates(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.size(-1))
    pick = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1] + (1,))
    return ids.gather(-1, pick).squeeze(-1)


def next_token_distribution(logits, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P):
    """The full (..., V) distribution that sampling draws from (one-hot argmax at temperature 0)."""
    check_sampling(temperature, top_k, top_p)
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    ids, probs = candidates(logits, temperature, top_k, top_p)
    return torch.zeros_like(logits).scatter(-1, ids, probs)


# ---------------------------------------------------------------------------------------------
# Backends: what the generation loop needs from a model


class _TransposedLinear(nn.Module):
    """nn.Linear with its weight stored transposed, (in, out) and contiguous. A decode step
    multiplies one row by every weight matrix, so it is bound by reading the weights; on CPU
    this layout reads them about 20% faster than F.linear's (measured: `mini-llm bench generate`)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = linear.weight.detach().t().contiguous()  # (in, out)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x):  # (..., in) -> (..., out)
        flat = x.reshape(-1, x.size(-1))
        y = flat @ self.weight_t if self.bias is None else torch.addmm(self.bias, flat, self.weight_t)
        return y.view(*x.shape[:-1], -1)


def inference_copy(model):
    """A frozen copy of the model for generation: eval mode, and on CPU every Linear stored
    transposed. It is a snapshot: make a new runner after more training."""
    model = copy.deepcopy(model).eval().requires_grad_(False)
    if next(model.parameters()).device.type == "cpu":
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(module, name, _TransposedLinear(child))
    return model


class TorchRunner:
    """Next-token logits from a MiniGPT: `start` prefills the cache, `step` decodes one token,
    `full` recomputes a window without a cache."""

    def __init__(self, model):
        self.model = inference_copy(model)
        self.block_size = model.config.block_size
        self.vocab_size = model.config.vocab_size
        self.device = next(model.parameters()).device
        self.cache = KVCache()

    @torch.inference_mode()
    def start(self, ids: list[int]):
        self.cache.reset()
        return self._run(ids[-self.block_size :], self.cache)

    @torch.inference_mode()
    def step(self, token: int):
        return self._run([token], self.cache)

    @property
    def room(self) -> int:
        return self.block_size - self.cache.pos

    @property
    def slides(self) -> bool:
        """Rotary positions: a full cache can drop its oldest position instead of a new prefill."""
        return self.model.config.pos == "rope"

    @torch.inference_mode()
    def slide(self, n: int = 1) -> None:
        self.model.slide(self.cache, n)

    @torch.inference_mode()
    def full(self, ids: list[int]):
        return self._run(ids[-self.block_size :], None)

    def _run(self, ids, cache):
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits, _ = self.model(x, cache=cache, last_only=True)
        return logits[0, -1]  # (V,)


@dataclass
class Sampling:
    temperature: float = TEMPERATURE
    top_k: int | None = TOP_K
    top_p: float | None = TOP_P
    seed: int | None = None

    def __post_init__(self):
        check_sampling(self.temperature, self.top_k, self.top_p)

    def generator(self) -> torch.Generator:
        """A generator of its own: seeded, or from fresh OS entropy without touching torch's global RNG."""
        g = torch.Generator()
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed)
        return g


def generate_ids(runner, ids: list[int], max_new_tokens: int, sampling: Sampling, generator=None,
                 mode: str = "cached", eot_id: int | None = None):
    """Yield new token ids one at a time (stops after max_new_tokens or at eot_id)."""
    if not ids:
        raise UserError("empty prompt: give at least one token of text")
    if mode not in ("cached", "exact"):
        raise UserError(f"mode {mode!r}: use 'cached' or 'exact'")
    generator = generator or sampling.generator()
    context = list(ids)
    logits = runner.start(context) if mode == "cached" else runner.full(context)
    for _ in range(max_new_tokens):
        token = int(sample_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p, generator))
        if token == eot_id:
            return
        yield token
        context.append(token)
        if mode == "exact":
            logits = runner.full(context)
        elif runner.room > 0:
            logits = runner.step(token)
        elif getattr(runner, "slides", False):  # window full, rotary positions: forget the oldest position
            runner.slide()
            logits = runner.step(token)
        else:  # window full, learned positions: keep the last half and prefill again (trap 7)
            logits = runner.start(context[-(runner.block_size // 2) :])


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters might be the start of a stop string (not safe to print yet)."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


def stream(runner, tokenizer, prompt: str | list[int], max_new_tokens: int = 200, sampling: Sampling | None = None,
           stop: list[str] | None = None, mode: str = "cached", generator=None, lstrip: bool = False,
           end: str | None = None):
    """Yield the generated text in pieces as tokens arrive, until max_new_tokens, a stop string or
    the token `end` (default <|endoftext|>; a chat-tuned model's replies end at <|end|>).

    Decodes the whole reply so far and yields only the new, complete suffix: a multi-byte
    character split across tokens is held back until it is whole (trap 2), and so is anything
    that may be the beginning of a stop string. The stop string itself is never yielded.
    With `lstrip`, leading whitespace is dropped and stop strings count only after it (a chat
    reply that opens with a blank line has not ended yet).
    """
    sampling = sampling or Sampling()
    stop = [s for s in (stop or []) if s]
    ids = tokenizer.encode(prompt).ids if isinstance(prompt, str) else list(prompt)
    new: list[int] = []
    emitted = 0
    eot = tokenizer.token_to_id(end or EOT)
    for token in generate_ids(runner, ids, max_new_tokens, sampling, generator, mode, eot):
        new.append(token)
        text = tokenizer.decode(new, skip_special_tokens=False)
        if lstrip:
            text = text.lstrip()
        hits = [text.find(s, max(0, emitted - len(s))) for s in stop]
        hits = [h for h in hits if h >= 0]
        if hits:
            end = min(hits)
            if end > emitted:
                yield text[emitted:end]
            return
        safe = len(text) - _held_back(text, stop)
        while safe > emitted and text[safe - 1] == "\ufffd":
            safe -= 1  # an unfinished multi-byte character
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
    text = tokenizer.decode(new, skip_special_tokens=False)
    text = text.lstrip() if lstrip else text
    if len(text) > emitted:
        yield text[emitted:]


def generate(model_or_runner, tokenizer, prompt, max_new_tokens: int = 200, temperature: float = TEMPERATURE,
             top_k: int | None = TOP_K, top_p: float | None = TOP_P, seed: int | None = None,
             stop: list[str] | None = None, mode: str = "cached") -> str:
    """The generated continuation of `prompt`, as one string."""
    runner = model_or_runner if hasattr(model_or_runner, "start") else TorchRunner(model_or_runner)
    return "".join(stream(runner, tokenizer, prompt, max_new_tokens, Sampling(temperature, top_k, top_p, seed), stop, mode))


def check_prompt(prompt: str) -> str:
    if prompt is None or prompt == "":
        raise UserError("empty prompt: give some text with --prompt")
    if any("\udc80" <= ch <= "\udcff" for ch in prompt):
        raise UserError("the prompt is not valid UTF-8 text: re-type it or fix your terminal's encoding")
    return prompt
