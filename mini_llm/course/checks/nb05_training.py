"""Checks of notebook 05 (training): the LR schedule, nats per character, an extended run's LR, gradient
accumulation, weight-decay groups."""

import copy
import math

import torch

from mini_llm.course.checks.harness import (
    Label,
    Result,
    Verdict,
    close,
    run_cases,
    short,
)


def check_lr_schedule(fn, hidden: bool = False) -> Result:
    """fn(step, total_steps, max_lr, warmup_steps, min_lr) -> warmup then cosine."""

    def ref(step, total, max_lr, warmup, min_lr):
        if step < warmup:
            return max_lr * (step + 1) / warmup
        progress = step / total
        return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    args = [(0, 100, 1e-3, 10, 1e-4), (9, 100, 1e-3, 10, 1e-4), (10, 100, 1e-3, 10, 1e-4),
            (50, 100, 1e-3, 10, 1e-4), (100, 100, 1e-3, 10, 1e-4)]
    hidden_args = [(3, 400, 6e-4, 40, 6e-5), (40, 400, 6e-4, 40, 6e-5), (123, 400, 6e-4, 40, 6e-5),
                   (399, 400, 6e-4, 40, 6e-5), (7, 30, 0.1, 1, 0.0)]
    return run_cases("lr schedule", fn, [(a, ref(*a)) for a in args],
                  "warmup: max_lr * (step + 1) / warmup; then min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * step / total)).",
                  lambda g, w: abs(float(g) - w) < 1e-9, hidden_cases=[(a, ref(*a)) for a in hidden_args], hidden=hidden)


def check_nats_per_char(fn, hidden: bool = False) -> Result:
    """fn(loss_per_token, n_tokens, n_chars) -> nats per character."""
    cases = [((2.0, 100, 350), 2.0 * 100 / 350), ((4.2, 10, 10), 4.2)]
    hidden_cases = [((5.195, 1000, 3143), 5.195 * 1000 / 3143), ((0.5, 7, 2), 1.75)]
    return run_cases("nats per character", fn, cases, "total nats = loss * n_tokens; spread over n_chars characters.",
                  lambda g, w: abs(float(g) - w) < 1e-9, hidden_cases=hidden_cases, hidden=hidden)


def _lr_forms():
    """The standard warmup + cosine schedules, as fn(step, total, max_lr, warmup, min_lr): the
    package's (cosine over the whole run) and nanoGPT's (cosine after warmup; its warmup by
    (step + 1) / (warmup + 1), or step / warmup in its first version)."""

    def cosine(progress, start, end):
        progress = min(max(progress, 0.0), 1.0)
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))

    def package(step, total, max_lr, warmup, min_lr):
        if step < warmup:
            return max_lr * (step + 1) / warmup
        return cosine(step / total, max_lr, min_lr)

    def nanogpt(step, total, max_lr, warmup, min_lr, first=False):
        if step < warmup:
            return max_lr * step / warmup if first else max_lr * (step + 1) / (warmup + 1)
        return cosine((step - warmup) / max(total - warmup, 1), max_lr, min_lr)

    return [package, nanogpt, lambda *a: nanogpt(*a, first=True)], cosine


def _one_of(values) -> "Label":
    values = list(dict.fromkeys(values))
    text = f"{values[0]:.6g}" + (f" (or, in nanoGPT's form of the schedule, {' or '.join(f'{v:.6g}' for v in values[1:])})"
                                 if len(values) > 1 else "")
    return Label(values, text)


def check_extended_lr(fn, hidden: bool = False) -> Result:
    """fn(step, total_steps, new_total_steps, resume_step, max_lr, warmup_steps, min_lr) -> the LR
    at `step` of a run planned for total_steps, stopped at resume_step and resumed with the
    horizon new_total_steps (what `schedule.LRPlan.extended` does)."""
    forms, cosine = _lr_forms()

    def extended(base, step, total, new_total, resume, max_lr, warmup, min_lr):
        if step < resume or new_total == total:
            return base(step, total, max_lr, warmup, min_lr)  # the past, or the same plan
        if resume < warmup:
            return base(step, new_total, max_lr, warmup, min_lr)  # as if planned so from the start
        start = base(resume, total, max_lr, warmup, min_lr)
        return cosine((step - resume) / max(new_total - resume, 1), start, min_lr)

    def case(*args):
        return (args, _one_of(extended(form, *args) for form in forms))

    run = (100, 200)  # a run planned for 100 steps, extended to 200
    cases = [case(5, *run, 50, 1e-3, 10, 1e-4), case(50, *run, 50, 1e-3, 10, 1e-4),
             case(120, *run, 50, 1e-3, 10, 1e-4), case(199, *run, 50, 1e-3, 10, 1e-4),
             case(70, 100, 100, 50, 1e-3, 10, 1e-4), case(150, *run, 100, 1e-3, 10, 1e-4),
             case(7, *run, 4, 1e-3, 10, 1e-4), case(60, *run, 4, 1e-3, 10, 1e-4)]
    hidden_cases = [case(s, 1000, 1500, 640, 6e-4, 100, 6e-5) for s in (639, 640, 641, 1000, 1499)]
    hidden_cases += [case(s, 1000, 500, 300, 3e-3, 50, 3e-4) for s in (300, 420, 499)]  # a shorter new horizon
    hidden_cases += [case(s, 60, 90, 60, 2e-3, 10, 2e-4) for s in (59, 60, 89)]  # a finished run extended
    hidden_cases += [case(12, 60, 90, 9, 2e-3, 10, 2e-4), case(700, 1000, 1000, 640, 6e-4, 100, 6e-5)]

    def same(got, want):
        if isinstance(got, bool):
            return False
        return any(math.isclose(float(got), w, rel_tol=1e-9, abs_tol=1e-15) for w in want.value)

    return run_cases("extended lr", fn, cases, "before resume_step the run followed its old plan. From resume_step on, "
                  "a new cosine starts at the LR the old plan had reached there and ends at min_lr at "
                  "new_total_steps. Two special cases: the same horizon changes nothing, and a run stopped during "
                  "warmup gets the plan it would have had with the new horizon from the start.",
                  same, hidden_cases=hidden_cases, hidden=hidden)


def _tiny_gpt(seed: int, **config):
    from mini_llm.model import GPTConfig, MiniGPT

    config = dict(dict(vocab_size=40, block_size=16, n_embd=16, n_head=2, n_layer=1), **config)
    with torch.random.fork_rng(devices=[]):  # the learner's global RNG is left as it was
        torch.manual_seed(seed)
        return MiniGPT(GPTConfig(**config))


def _what(value) -> str:
    """A returned value in a few words (a module by its class, not its many-line repr)."""
    return f"a {type(value).__name__}" if isinstance(value, torch.nn.Module) else short(value, 60)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def check_accumulate(fn, hidden: bool = False) -> Result:
    """fn(model, batches) -> the mean loss over every target token of the micro-batches, having
    left in each p.grad the gradient of that mean (one backward per micro-batch; the micro-
    batches (x, y) may differ in shape, (B_i, T_i))."""

    def case(seed, shapes, **config):
        model = _tiny_gpt(seed, **config)
        g = torch.Generator().manual_seed(seed)
        V = model.config.vocab_size
        batches = [(torch.randint(V, s, generator=g), torch.randint(V, s, generator=g)) for s in shapes]
        ref = copy.deepcopy(model)
        n = sum(y.numel() for _, y in batches)
        loss = sum(ref(x, y)[1] * y.numel() for x, y in batches) / n  # the mean over all n target tokens
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in ref.named_parameters()}
        weights = {name: p.detach().clone() for name, p in model.named_parameters()}
        label = f"{len(shapes)} micro-batch{'es' if len(shapes) > 1 else ''} (B, T) = {', '.join(map(str, shapes))}"
        want = Verdict(True, f"loss {loss.item():.5f} (the mean over all {n} target tokens) and p.grad its gradient")
        return ((Label((model, batches, loss.item(), grads, weights), label),), want)

    def run(spec):
        model, batches, loss, grads, weights = spec.value
        model = copy.deepcopy(model)  # fresh: .grad is None everywhere, as after zero_grad(set_to_none=True)
        got = fn(model, copy.deepcopy(batches))
        try:
            got_loss = float(torch.as_tensor(got).detach())
        except Exception:
            return Verdict(False, f"{_what(got)}: not a loss (return the mean loss as a number or a 0-d tensor)")
        params = dict(model.named_parameters())
        changed = [name for name, p in params.items() if not torch.equal(p.detach(), weights[name])]
        if changed:
            return Verdict(False, f"the weights changed ({changed[0]}): accumulate gradients only, no optimizer step")
        missing = [name for name, p in params.items() if p.grad is None]
        if missing:
            return Verdict(False, f"loss {got_loss:.5f}, but {missing[0]}.grad is None: call backward on each micro-batch")
        off = {name: _max_diff(p.grad, grads[name]) for name, p in params.items()}
        worst = max(off, key=off.get)
        if not all(close(params[name].grad, grads[name], 1e-5) for name in params):
            return Verdict(False, f"loss {got_loss:.5f}; {worst}.grad off by up to {off[worst]:.2g} (ratio to the right "
                                   f"one: {params[worst].grad.norm().item() / max(grads[worst].norm().item(), 1e-30):.3g})")
        if not math.isclose(got_loss, loss, rel_tol=1e-5, abs_tol=1e-6):
            return Verdict(False, f"the right gradients, but loss {got_loss:.5f}")
        return Verdict(True, "right")

    cases = [case(0, [(4, 8), (4, 8)]), case(1, [(2, 16), (3, 5), (1, 9)]), case(2, [(5, 4), (1, 16)])]
    hidden_cases = [case(3, [(3, 7)]), case(4, [(1, 1), (6, 12), (2, 3), (2, 3)]),
                    case(5, [(2, 10), (2, 10), (2, 10)], n_layer=2, bias=False),
                    case(6, [(8, 2), (1, 16)], vocab_size=25, n_embd=24, n_head=3)]
    return run_cases("accumulate", run, cases, "each micro-batch's loss is a mean over its own B_i * T_i target "
                  "tokens; the mean over all of them weighs each micro-batch by its share of the tokens. "
                  "Backward adds into p.grad, so scale each loss before its backward. Dividing by the number of "
                  "micro-batches is right only when they all hold the same number of tokens.",
                  lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden)


def check_decay_groups(fn, hidden: bool = False) -> Result:
    """fn(model, weight_decay) -> AdamW parameter groups where only the weights of nn.Linear layers
    decay; biases, LayerNorm and embeddings (a head tied to an embedding counts as the embedding)
    do not; every parameter in exactly one group."""
    import torch.nn as nn

    def decays(model) -> dict:
        """parameter id -> (should it decay, what it is): the module-type rule, where an
        embedding wins over a Linear layer tied to it."""
        rule = {}
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, nn.Embedding):
                    rule[id(p)] = (False, "an embedding (a tied LM head shares this tensor)")
                elif isinstance(module, nn.Linear) and name == "weight":
                    rule.setdefault(id(p), (True, "a Linear weight"))
                else:
                    rule[id(p)] = (False, f"the {name} of a {type(module).__name__}")
        return rule

    def case(model, text, weight_decay):
        rule = decays(model)
        n_decay = sum(d for d, _ in rule.values())
        want = Verdict(True, f"{n_decay} Linear weights at weight_decay {weight_decay}, the other {len(rule) - n_decay} "
                              f"tensors (embeddings, biases, LayerNorm) at 0.0, each once")
        return ((Label(model, text), weight_decay), want)

    def run(spec, weight_decay):
        model = copy.deepcopy(spec.value)
        names = {id(p): name for name, p in model.named_parameters()}
        rule = decays(model)  # decided before the call: fn may change the model
        got = fn(model, weight_decay)
        try:
            groups = [dict(g) for g in got]
            seen = {}
            for g in groups:
                wd = float(g["weight_decay"])
                params = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])
                for p in params:
                    if id(p) not in names:
                        return Verdict(False, "a tensor that is not one of the model's parameters")
                    if id(p) in seen:
                        return Verdict(False, f"{names[id(p)]} in two groups (AdamW refuses that; a tied weight "
                                               "is one tensor)")
                    seen[id(p)] = wd
        except (TypeError, KeyError, ValueError) as e:
            return Verdict(False, f"{_what(got)}: not a list of groups like {{'params': [...], "
                                   f"'weight_decay': ...}} ({type(e).__name__}: {e})")
        for k, name in names.items():
            if k not in seen:
                return Verdict(False, f"{name} is in no group")
            decay, kind = rule[k]
            want = weight_decay if decay else 0.0
            if not math.isclose(seen[k], want, abs_tol=1e-12):
                return Verdict(False, f"{name} at weight_decay {seen[k]:g}: it is {kind}, so {want:g}")
        return Verdict(True, "right")

    def toy(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3, bias=False))

    cases = [case(_tiny_gpt(0), "MiniGPT(1 layer, 16 wide)", 0.1), case(_tiny_gpt(1, n_layer=2), "MiniGPT(2 layers)", 0.05)]
    hidden_cases = [case(_tiny_gpt(2, bias=False), "MiniGPT(bias=False)", 0.1),
                    case(_tiny_gpt(3, n_layer=3, n_embd=24, n_head=3), "MiniGPT(3 layers, 24 wide)", 0.2),
                    case(toy(4), "Sequential(Embedding, Linear, LayerNorm, GELU, Linear without bias)", 0.01)]
    return run_cases("decay groups", run, cases, "walk over the modules (model.modules() or named_modules()) and sort "
                  "each module's own parameters by the kind of module; the LM head's weight is the token "
                  "embedding's tensor, so decide by the tensor, not by the name, and put each tensor in one group "
                  "only. Give every group its own 'weight_decay'.",
                  lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden)

