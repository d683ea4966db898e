"""Checks of notebook 07 (export): cropping, KV-cache bytes, scoring graphs' shapes, greedy generation on
ONNX graphs."""

import copy
import math

import torch

from mini_llm.course.checks.harness import (
    Result,
    as_ints,
    close,
    on_copies,
    run_cases,
    short,
    small_model,
)


def check_crop(fn, hidden: bool = False) -> Result:
    """fn(ids, block_size) -> the last block_size ids (the runtime must crop itself)."""
    cases = [(([1, 2, 3, 4, 5], 3), [3, 4, 5]), (([1, 2], 3), [1, 2]), (([7, 8, 9], 3), [7, 8, 9])]
    hidden_cases = [(([9, 8, 7, 6, 5, 4], 4), [7, 6, 5, 4]), (([], 2), []), (([4, 2, 4, 2], 1), [2])]
    return run_cases("crop", fn, cases, "ids[-block_size:] keeps the newest tokens.", lambda g, w: list(g) == w,
                  hidden_cases=hidden_cases, hidden=hidden)


def check_kv_cache_bytes(fn, hidden: bool = False) -> Result:
    """fn(n_layer, n_embd, seq_len, batch, bytes_per_value) -> size of a KV cache in bytes."""
    cases = [((4, 256, 128, 1, 4), 2 * 4 * 256 * 128 * 1 * 4), ((12, 768, 1024, 2, 2), 2 * 12 * 768 * 1024 * 2 * 2)]
    hidden_cases = [((6, 384, 256, 8, 2), 2 * 6 * 384 * 256 * 8 * 2), ((1, 64, 1, 3, 1), 2 * 64 * 3)]
    return run_cases("KV cache size", fn, cases, "keys and values (2) for every layer, every position, every channel.",
                  hidden_cases=hidden_cases, hidden=hidden)


def _whole_number(got, want: int) -> bool:
    """An integer answer in any standard form (int, numpy or 0-d tensor), not a bool or a fraction."""
    if isinstance(got, (bool, str)):
        return False
    return int(got) == want and float(got) == float(want)


def check_past_bytes(fn, hidden: bool = False) -> Result:
    """fn(config, batch, positions, dtype) -> bytes of the decode graph's `past` input: the keys and
    values of `positions` cached positions for a GPTConfig, batch rows and a torch dtype."""
    from mini_llm.model import GPTConfig

    def case(batch, positions, dtype, **sizes):
        cfg = GPTConfig(**sizes)
        shape = (cfg.n_layer, 2, batch, cfg.n_head, positions, cfg.n_embd // cfg.n_head)  # what forward_kv returns
        return ((cfg, batch, positions, dtype), math.prod(shape) * torch.empty((), dtype=dtype).element_size())

    cases = [case(1, 128, torch.float32), case(3, 10, torch.float16, vocab_size=2000, block_size=64, n_embd=128, n_layer=2)]
    hidden_cases = [case(1, 1, torch.float32, vocab_size=50, block_size=8, n_embd=8, n_head=2, n_layer=1),
                    case(8, 1024, torch.bfloat16, vocab_size=50257, block_size=1024, n_embd=768, n_head=12, n_layer=12),
                    case(2, 63, torch.float64, block_size=64, n_embd=96, n_head=1, n_layer=3, bias=False),
                    case(5, 7, torch.float32, n_embd=64, n_head=8, n_layer=6)]
    return run_cases("past bytes", on_copies(fn), cases, "look at the shape of `present` printed above: one number per "
                  "layer, key-or-value, batch row, head, position and head channel (the heads' channels add up to "
                  "n_embd); times the bytes one value of that dtype takes (float16 and bfloat16: 2). Vocabulary, "
                  "block size and bias do not enter.", _whole_number, hidden_cases=hidden_cases, hidden=hidden)


class _Score(torch.nn.Module):
    """The scoring graph of exercise 2: idx (B, T), targets (B, T) -> the mean cross-entropy."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, idx, targets):
        return self.m(idx, targets)[1]


def _first_line(error: Exception, limit: int = 110) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith(("Not all values", "Guard failed", "Expected", "Dynamic"))]
    text = f"{type(error).__name__}: {(useful or lines or [''])[0]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_scoring_shapes(fn, hidden: bool = False) -> Result:
    """fn(block_size) -> the `dynamic_shapes` of a scoring graph (forward(idx, targets), both (B, T))
    under which torch.export accepts every batch size and every T from 1 to block_size."""
    from mini_llm.export import quiet_exporter

    def shapes(block_size):
        return [(1, 1), (3, block_size), (2, block_size // 2 + 1)]

    def outcome(block_size):
        spec = fn(block_size)  # NotImplementedError goes up: "not written yet"
        model = small_model(block_size, vocab_size=50, block_size=block_size, n_embd=8, n_head=2, n_layer=1)
        g = torch.Generator().manual_seed(block_size)
        example = (torch.randint(0, 50, (2, min(5, block_size)), generator=g),
                   torch.randint(0, 50, (2, min(5, block_size)), generator=g))
        try:
            with quiet_exporter():
                program = torch.export.export(_Score(model), example, dynamic_shapes=copy.deepcopy(spec))
        except Exception as e:
            return f"torch.export refused the spec: {_first_line(e)}"
        graph = program.module()
        for B, T in shapes(block_size):
            idx, targets = torch.randint(0, 50, (B, T), generator=g), torch.randint(0, 50, (B, T), generator=g)
            try:
                with torch.no_grad():
                    loss = graph(idx, targets)
            except Exception as e:
                return f"the exported graph refused idx, targets of shape {(B, T)}: {_first_line(e)}"
            if not close(loss, model(idx, targets)[1], 1e-5):
                return f"the exported graph gave another loss at shape {(B, T)}"
        return "accepts " + ", ".join(str(s) for s in shapes(block_size))

    cases = [((16,), "accepts " + ", ".join(str(s) for s in shapes(16)))]
    hidden_cases = [((8,), "accepts " + ", ".join(str(s) for s in shapes(8)))]  # each case is an export: one is enough
    return run_cases("scoring shapes", outcome, cases, "give both inputs the same two Dims: a batch Dim and a sequence "
                  "Dim whose max is block_size (the model refuses longer inputs, and the exporter checks that "
                  "every allowed shape passes). The keys are forward's argument names.",
                  lambda g, w: g == w, hidden_cases=hidden_cases, hidden=hidden)


class _Session:
    """A stand-in for an onnxruntime InferenceSession of the prefill or decode graph: the same
    `run(output_names, feeds)` call, the same input names and dtypes, computed by a small MiniGPT.
    It refuses what the real graph gets wrong (a context longer than block_size, a full cache)
    with an error that says so, and counts its runs."""

    def __init__(self, model, role: str):
        self.model, self.role, self.runs = model, role, 0
        self.names = ["idx"] if role == "prefill" else ["token", "past"]

    def __repr__(self) -> str:
        return f"<{self.role} session>"

    def run(self, output_names, feeds):
        import numpy as np

        if set(feeds) != set(self.names):
            raise ValueError(f"the {self.role} graph takes inputs {self.names}, got {sorted(feeds)}")
        for name, value in feeds.items():
            want = np.float32 if name == "past" else np.int64
            if not isinstance(value, np.ndarray) or value.dtype != want:
                raise TypeError(f"input {name!r} must be a numpy array of {np.dtype(want).name}, "
                                f"got {type(value).__name__} {getattr(value, 'dtype', '')}")
        bs = self.model.config.block_size
        if self.role == "prefill":
            idx, past = feeds["idx"], None
            if idx.ndim != 2 or not 1 <= idx.shape[1] <= bs:
                raise RuntimeError(f"the prefill graph takes idx (B, T) with 1 <= T <= block_size={bs}, got shape "
                                   f"{idx.shape}: crop the context first")
        else:
            idx, past = feeds["token"], feeds["past"]
            if idx.ndim != 2 or idx.shape[1] != 1:
                raise RuntimeError(f"the decode graph takes token of shape (B, 1), got {idx.shape}")
            if past.ndim != 6 or not 1 <= past.shape[4] < bs:
                raise RuntimeError(f"past of shape {past.shape}: the decode graph needs 1 to block_size - 1 = {bs - 1} "
                                   "cached positions (the real graph returns empty logits on a full cache)")
        self.runs += 1
        with torch.no_grad():
            logits, present = self.model.forward_kv(torch.from_numpy(idx.copy()),
                                                    None if past is None else torch.from_numpy(past.copy()))
        outputs = {"logits": logits.numpy(), "present": present.numpy()}
        return [outputs[name] for name in (output_names or ["logits", "present"])]


class _Generated:
    """Greedy tokens and how many prefill and decode runs produced them (shown in feedback)."""

    def __init__(self, tokens, prefills: int, decodes: int):
        self.tokens, self.prefills, self.decodes = tokens, prefills, decodes

    def __repr__(self) -> str:
        return f"{short(self.tokens, 90)} from {self.prefills} prefill and {self.decodes} decode runs"


def check_greedy_onnx(fn, hidden: bool = False) -> Result:
    """fn(prefill, decode, prompt, n, block_size) -> the n greedy tokens after prompt, computed with
    the prefill and decode sessions the way `mini_llm.generate` does: the prompt's last block_size
    tokens prefilled once, then one decode run per new token; when the cache is full, the last
    block_size // 2 tokens of prompt + generated prefilled again."""
    from mini_llm.export import OnnxRunner
    from mini_llm.generate import Sampling, generate_ids

    def case(seed, block_size, prompt_len, n, vocab=40):
        model = small_model(seed, vocab_size=vocab, block_size=block_size, n_embd=16, n_head=2, n_layer=1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for weight in (p for p in model.parameters() if p.dim() == 2):
                weight.normal_(0.0, 1.0, generator=g)  # large weights: confident predictions, greedy text that varies
        prompt = torch.randint(0, vocab, (prompt_len,), generator=g).tolist()
        # the package's runner over stand-in sessions
        runner = OnnxRunner.from_sessions(_Session(model, "prefill"), _Session(model, "decode"), block_size, vocab)
        tokens = list(generate_ids(runner, prompt, n, Sampling(temperature=0.0, top_k=None)))
        want = _Generated(tokens, runner.prefill.runs, runner.decode.runs)
        return ((_Session(model, "prefill"), _Session(model, "decode"), prompt, n, block_size), want)

    def run(prefill, decode, prompt, n, block_size):
        prefill.runs = decode.runs = 0
        got = fn(prefill, decode, list(prompt), n, block_size)
        return _Generated(as_ints(got), prefill.runs, decode.runs)

    def same(got, want):
        # the last decode run of generate_ids computes logits nobody samples from: not needed
        return got.tokens == want.tokens and got.prefills <= want.prefills and got.decodes >= want.decodes - 1

    cases = [case(0, 8, 3, 4), case(1, 8, 3, 14), case(2, 16, 5, 9)]
    hidden_cases = [case(3, 8, 12, 5), case(4, 8, 2, 1), case(5, 16, 16, 30), case(6, 12, 1, 25, vocab=60),
                    case(7, 8, 7, 6)]
    return run_cases("greedy onnx", run, cases, "prefill once; then for each new token take the argmax of the LAST "
                  "position's logits and run the decode graph on that token (int64, shape (1, 1)) with the "
                  "`present` it returned last. Before a decode run, check the room: block_size minus the positions "
                  "in the cache; with none left, prefill the last block_size // 2 tokens of the whole context.",
                  same, hidden_cases=hidden_cases, hidden=hidden)

