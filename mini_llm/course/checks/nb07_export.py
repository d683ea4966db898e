"""Checks of notebook 07 (export). Steps: the prefill wrapper, the decode wrapper, the decode graph's
dynamic shapes. Exercises: the bytes of a KV cache, which feeds the decode graph computes right,
greedy generation on ONNX graphs. (check_crop and check_kv_cache_bytes: the grader's tests use them.)

The wrappers are proved on small models: their outputs against `forward_kv`'s within 1e-5, then
exported with torch.export (B and T symbolic) and run at another shape."""

import copy
import math

import torch

from mini_llm.course.checks.harness import (
    Label,
    Result,
    as_ints,
    close,
    on_copies,
    run_cases,
    short,
    small_model,
    step,
)


def _model(seed: int, **sizes):
    return small_model(seed, **{"vocab_size": 50, "block_size": 16, "n_embd": 16, "n_head": 2, "n_layer": 2, **sizes})


def _pair_close(got, want) -> bool:
    return len(got) == 2 and close(got[0], want[0]) and close(got[1], want[1])


def _wrapper_checked(name, cls, package, inputs, hint, hidden):
    """cls(model) on the `inputs(model, B, T, g)` of public and hidden cases: its (logits, present)
    against forward_kv's; an `export` case runs torch.export first (batch and T symbolic) and the
    exported graph at another shape."""
    from torch.export import Dim

    from mini_llm.export import quiet_exporter

    def case(seed, B, T, export=False, **sizes):
        model = _model(seed, **sizes)
        g = torch.Generator().manual_seed(seed)
        args = inputs(model, B, T, g)
        with torch.no_grad():
            want = tuple(model.forward_kv(*args))
        names = ("idx",) if len(args) == 1 else ("token", "past")
        text = f"L={model.config.n_layer}, " + ", ".join(f"{what} {tuple(a.shape)}" for what, a in zip(names, args))
        if export:
            text = "exported, then " + text
            example = inputs(model, 2, 3, g)
            return (Label((model, args, example), text),), want
        return (Label((model, args, None), text),), want

    def call(label):
        model, args, example = label.value
        with torch.no_grad():
            wrapper = cls(model).eval()
            if example is not None:
                batch, bs = Dim("batch", min=1, max=64), model.config.block_size
                spec = (({0: batch, 1: Dim("seq", min=1, max=bs)},) if len(example) == 1
                        else ({0: batch}, {2: batch, 4: Dim("cached", min=1, max=bs - 1)}))
                with quiet_exporter():
                    wrapper = torch.export.export(wrapper, example, dynamic_shapes=spec).module()
            return tuple(wrapper(*(a.clone() for a in args)))

    cases = [case(0, 2, 5), case(1, 1, 12), case(2, 3, 9, export=True)]
    hidden_cases = [case(3, 1, 1, n_layer=1, n_head=1), case(4, 4, 7, n_embd=24, n_head=3, bias=False),
                    case(5, 2, 14, export=True, n_layer=3)]
    return step(name, cls, package, run_cases(name, call, cases, hint, _pair_close, hidden_cases=hidden_cases,
                                              hidden=hidden))


def check_prefill_wrapper(cls, hidden: bool = False) -> Result:
    """Step: cls(model) is an nn.Module whose forward(idx (B, T)) returns the model's
    forward_kv(idx): logits (B, T, V), present (L, 2, B, nh, T, hs), and exports with torch.export."""
    from mini_llm.export import _Prefill

    def inputs(model, B, T, g):
        return (torch.randint(0, model.config.vocab_size, (B, T), generator=g),)

    return _wrapper_checked("Prefill", cls, _Prefill, inputs, "keep the model as a submodule (self.model = model "
                            "after super().__init__()) and return self.model.forward_kv(idx): both of its outputs, "
                            "as the tuple it returns.", hidden)


def check_decode_wrapper(cls, hidden: bool = False) -> Result:
    """Step: cls(model) is an nn.Module whose forward(token (B, 1), past (L, 2, B, nh, P, hs)) returns
    the model's forward_kv(token, past): logits (B, 1, V), present with P + 1 positions."""
    from mini_llm.export import _Step

    def inputs(model, B, P, g):
        with torch.no_grad():
            _, past = model.forward_kv(torch.randint(0, model.config.vocab_size, (B, P), generator=g))
        return torch.randint(0, model.config.vocab_size, (B, 1), generator=g), past

    return _wrapper_checked("Decode", cls, _Step, inputs, "forward takes the new token and the past and returns "
                            "self.model.forward_kv(token, past): the past is the cache, not more tokens.", hidden)


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


def _first_line(error: Exception, limit: int = 110) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith(("Not all values", "Guard failed", "Expected", "Dynamic"))]
    text = f"{type(error).__name__}: {(useful or lines or [''])[0]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_decode_shapes(fn, hidden: bool = False) -> Result:
    """Step: fn(block_size) -> the `dynamic_shapes` of the decode graph (forward(token, past),
    token (B, 1), past (L, 2, B, nh, P, hs)) under which torch.export accepts every batch size
    and every P from 1 to block_size - 1, and the graph computes the model's numbers there."""
    from mini_llm.export import _Step, decode_shapes, quiet_exporter

    def shapes(block_size):  # (B, P): the smallest cache, the fullest one the graph may take, one between
        return [(1, 1), (3, block_size - 1), (2, block_size // 2)]

    def outcome(block_size):
        spec = fn(block_size)  # NotImplementedError goes up: "not written yet"
        model = small_model(block_size, vocab_size=50, block_size=block_size, n_embd=8, n_head=2, n_layer=2)
        g = torch.Generator().manual_seed(block_size)
        with torch.no_grad():
            _, past = model.forward_kv(torch.randint(0, 50, (2, 3), generator=g))
            example = (torch.randint(0, 50, (2, 1), generator=g), past)
            try:
                with quiet_exporter():
                    program = torch.export.export(_Step(model), example, dynamic_shapes=copy.deepcopy(spec))
            except Exception as e:
                return f"torch.export refused the spec: {_first_line(e)}"
            graph = program.module()
            for B, P in shapes(block_size):
                _, past = model.forward_kv(torch.randint(0, 50, (B, P), generator=g))
                token = torch.randint(0, 50, (B, 1), generator=g)
                try:
                    logits, present = graph(token, past)
                except Exception as e:
                    return f"the exported graph refused B={B} rows with P={P} cached positions: {_first_line(e)}"
                want_logits, want_present = model.forward_kv(token, past)
                if not (close(logits, want_logits) and close(present, want_present)):
                    return f"the exported graph gave other numbers for B={B}, P={P}"
        return "accepts (B, P) = " + ", ".join(str(s) for s in shapes(block_size))

    def case(block_size):
        return (block_size,), "accepts (B, P) = " + ", ".join(str(s) for s in shapes(block_size))

    return step("decode_shapes", fn, decode_shapes, run_cases(
        "decode_shapes", outcome, [case(16)], "token's axis 0 and past's axis 2 are the batch: one Dim for both; "
        "past's axis 4 counts the cached positions, from 1 to block_size - 1 (the new token needs a position of "
        "its own, and the exporter checks every length you allow). The keys are forward's argument names.",
        lambda g, w: g == w, hidden_cases=[case(8)], hidden=hidden))  # each case is an export: one is enough


def _decode_feeds_ok(token, past, config) -> bool:
    """Whether the decode graph computes the right logits for these inputs: token int64 (B, 1), past
    float32 (n_layer, 2, B, n_head, P, head_size) of the same B, with 1 <= P < block_size."""
    import numpy as np

    if not (isinstance(token, np.ndarray) and isinstance(past, np.ndarray)):
        return False
    if token.dtype != np.int64 or past.dtype != np.float32 or token.ndim != 2 or past.ndim != 6:
        return False
    L, two, B, nh, P, hs = past.shape
    return (token.shape[1] == 1 and (L, two, B, nh, hs) == (config.n_layer, 2, token.shape[0], config.n_head,
                                                           config.n_embd // config.n_head)
            and 1 <= P < config.block_size)


def check_decode_feeds(fn, hidden: bool = False) -> Result:
    """fn(token, past, config) -> True when the decode graph of a model with this GPTConfig computes
    the right logits for these inputs, False for anything it would refuse or get wrong."""
    import numpy as np

    from mini_llm.model import GPTConfig

    def array(shape, dtype):
        a = np.zeros(shape, dtype=dtype)
        return Label(a, f"{np.dtype(dtype).name} {tuple(shape)}")

    def case(token, past, config):
        cfg = GPTConfig(**config)
        shown = Label(cfg, f"L={cfg.n_layer}, nh={cfg.n_head}, C={cfg.n_embd}, block_size={cfg.block_size}")
        return (token, past, shown), _decode_feeds_ok(token.value, past.value, cfg)

    c1 = dict(vocab_size=2000, block_size=64, n_embd=128, n_head=4, n_layer=2)
    c2 = dict(vocab_size=50, block_size=8, n_embd=12, n_head=3, n_layer=1)
    i64, f32 = np.int64, np.float32
    cases = [case(array((1, 1), i64), array((2, 2, 1, 4, 5, 32), f32), c1),          # right
             case(array((1, 1), i64), array((2, 2, 1, 4, 64, 32), f32), c1),         # a full cache
             case(array((2, 1), i64), array((2, 2, 2, 4, 63, 32), f32), c1),         # the fullest it may be
             case(array((1, 2), i64), array((2, 2, 1, 4, 5, 32), f32), c1),          # two new tokens
             case(array((2, 1), i64), array((2, 2, 1, 4, 5, 32), f32), c1)]          # batches disagree
    hidden_cases = [case(array((3, 1), i64), array((1, 2, 3, 3, 7, 4), f32), c2),
                    case(array((1, 1), i64), array((1, 2, 1, 3, 8, 4), f32), c2),
                    case(array((1, 1), i64), array((1, 2, 1, 3, 0, 4), f32), c2),     # an empty cache
                    case(array((1, 1), np.int32), array((1, 2, 1, 3, 2, 4), f32), c2),
                    case(array((1, 1), i64), array((1, 2, 1, 3, 2, 4), np.float64), c2),
                    case(array((1, 1), i64), array((1, 2, 1, 4, 2, 3), f32), c2),     # heads and head size swapped
                    case(array((1, 1), i64), array((2, 2, 1, 3, 2, 4), f32), c2),     # another model's layers
                    case(array((1,), i64), array((1, 2, 1, 3, 2, 4), f32), c2),
                    case(array((1, 1), i64), array((2, 1, 4, 5, 32), f32), c1)]
    return run_cases("decode_feeds_ok", lambda t, p, c: fn(t.value.copy(), p.value.copy(), copy.deepcopy(c.value)),
                     cases, "write down the shape present has after P positions (it is printed above) and compare "
                     "every axis with the config and token's batch; the graph has no position for a token after a "
                     "full cache; onnxruntime also wants exactly int64 ids and float32 values.",
                     lambda g, w: type(g) in (bool, np.bool_) and bool(g) == w, hidden_cases=hidden_cases,
                     hidden=hidden)


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

