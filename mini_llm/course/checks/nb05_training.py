"""Checks of notebook 05 (training). Steps: cross-entropy and its gradient by hand, the AdamW
update, gradient clipping, the LR schedule, the training loop. Exercises: gradient accumulation over
unequal micro-batches, weight-decay groups by module type, the unigram baseline loss.

Each step is compared with what the package's training uses (autograd through F.cross_entropy,
torch.optim.AdamW, torch.nn.utils.clip_grad_norm_, schedule.lr_at, train()) to a stated
tolerance: a correct piece may sum in another order (AdamW's foreach, fused and for-loop
implementations differ in the last bits), so nothing here needs bit-for-bit equality."""

import contextlib
import copy
import functools
import io
import math
import tempfile
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from mini_llm.course.checks.harness import (
    Label,
    Result,
    Verdict,
    close,
    run_cases,
    short,
    step,
)


def _randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _off(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> str:
    """'' when got is within (rtol, atol) of want, else 'at [i, j]: expected a, got b' (the first entry off)."""
    got = torch.as_tensor(got).detach().double()
    if got.shape != want.shape:
        return f"of shape {tuple(got.shape)}, not {tuple(want.shape)}"
    off = ~torch.isclose(got, want.double(), rtol=rtol, atol=atol)
    if not off.any():
        return ""
    index = tuple(off.nonzero()[0].tolist())
    where = f"[{', '.join(map(str, index))}]" if index else ""
    return f"at {where}: expected {want[index].item():.6g}, got {got[index].item():.6g}".replace("at :", "is off:")


# --- step 1: cross-entropy and its gradient by hand ---------------------------------------------------


def cross_entropy(logits, targets):
    """mini_llm's: F.cross_entropy (what MiniGPT's loss is) and its gradient, by autograd."""
    logits = logits.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    return loss.detach(), logits.grad


def check_cross_entropy(fn, hidden: bool = False) -> Result:
    """Step: fn(logits (N, V), targets (N,)) -> (loss, dlogits): the mean cross-entropy and its
    gradient with respect to the logits, (softmax - one-hot) / N; autograd's within 1e-5 (relative)."""

    def case(N, V, seed, scale=1.0):
        logits = _randn(N, V, seed=seed, scale=scale)
        targets = torch.randint(V, (N,), generator=torch.Generator().manual_seed(seed + 50))
        loss, grad = cross_entropy(logits, targets)
        text = f"logits ({N}, {V})" + (f" of size ~{scale:g}" if scale != 1.0 else "")
        want = Verdict(True, f"loss {loss.item():.5f} and its gradient, autograd's")
        return ((Label((logits, loss, grad), text), Label(targets, f"targets {short(targets.tolist(), 30)}")), want)

    def run(spec, targets):
        logits, want_loss, want_grad = spec.value
        got = fn(logits.clone(), targets.value.clone())
        try:
            loss, grad = got
            loss = float(torch.as_tensor(loss).detach())
        except (TypeError, ValueError, RuntimeError):
            return Verdict(False, f"{short(got, 60)}: not a pair (the loss, the gradient of the logits)")
        if not math.isclose(loss, want_loss.item(), rel_tol=1e-5, abs_tol=1e-6):
            return Verdict(False, f"loss {loss:.5f}, not {want_loss.item():.5f}")
        off = _off(grad, want_grad, 1e-4, 1e-7)
        return Verdict(False, f"the right loss, but the gradient {off}") if off else Verdict(True, "right")

    cases = [case(4, 6, 0), case(8, 10, 1, scale=5.0), case(3, 5, 2, scale=100.0)]
    hidden_cases = [case(1, 2, 3), case(32, 50, 4, scale=3.0), case(16, 8000, 5), case(5, 7, 6, scale=300.0)]
    return step("cross_entropy", fn, cross_entropy, run_cases(
        "cross_entropy", run, cases, "loss = the mean over the N rows of -log softmax(logits)[target]; subtract each "
        "row's max before exp (softmax does not change, and exp cannot overflow). The gradient of that mean: "
        "softmax(logits), minus 1 at each row's target, divided by N.",
        lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


# --- step 2: the AdamW update ------------------------------------------------------------------------


def adamw_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
    """mini_llm's optimizer (torch.optim.AdamW), one step for one tensor: (param, m, v) after step t."""
    p = torch.nn.Parameter(param.detach().clone())
    p.grad = grad.detach().clone()
    optimizer = torch.optim.AdamW([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    if t > 1:  # the moments so far (step t - 1 of them); at t = 1 AdamW starts them at zero itself
        optimizer.state[p] = {"step": torch.tensor(float(t - 1)), "exp_avg": m.detach().clone(),
                              "exp_avg_sq": v.detach().clone()}
    optimizer.step()
    state = optimizer.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"]


def check_adamw_step(fn, hidden: bool = False) -> Result:
    """Step: fn(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay) -> (param, m, v) after
    AdamW's step t (counting from 1; m and v zeros before the first). Run for a few steps with new
    gradients, each step's param, m and v are torch.optim.AdamW's within 1e-5 (relative; 1e-7 absolute)."""

    def case(shape, steps, lr, betas, eps, weight_decay, seed, grad_scale=0.1):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(*shape, generator=g)
        grads = [torch.randn(*shape, generator=g) * grad_scale for _ in range(steps)]
        p = torch.nn.Parameter(W.clone())
        optimizer = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        trajectory = []
        for grad in grads:
            p.grad = grad.clone()
            optimizer.step()
            state = optimizer.state[p]
            trajectory.append((p.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone()))
        want = Verdict(True, f"after each of the {steps} steps torch.optim.AdamW's param, m and v")
        text = f"param {tuple(shape)} and {steps} gradients" + (f" of size ~{grad_scale:g}" if grad_scale != 0.1 else "")
        return ((Label((W, grads, trajectory), text), lr, *betas, eps, weight_decay), want)

    def run(spec, lr, beta1, beta2, eps, weight_decay):
        W, grads, trajectory = spec.value
        param, m, v = W.clone(), torch.zeros_like(W), torch.zeros_like(W)
        for t, (grad, wants) in enumerate(zip(grads, trajectory), 1):
            got = fn(param.clone(), grad.clone(), m.clone(), v.clone(), t, lr, beta1, beta2, eps, weight_decay)
            try:
                param, m, v = (torch.as_tensor(x).detach() for x in got)
            except (TypeError, ValueError, RuntimeError):
                return Verdict(False, f"{short(got, 60)}: not a triple (param, m, v)")
            for name, have, want in zip(("m", "v", "param"), (m, v, param), wants[1:] + wants[:1]):
                off = _off(have, want, 1e-5, 1e-7)
                if off:
                    return Verdict(False, f"after step {t}, {name} {off}")
        return Verdict(True, "right")

    cases = [case((4, 6), 3, 1e-3, (0.9, 0.95), 1e-8, 0.1, 0), case((10,), 4, 1e-2, (0.8, 0.99), 1e-8, 0.0, 1),
             case((3, 5), 3, 3e-3, (0.9, 0.95), 1e-6, 0.5, 2)]
    hidden_cases = [case((8, 8), 5, 6e-4, (0.9, 0.95), 1e-8, 0.1, 3), case((2, 3), 3, 1e-3, (0.9, 0.999), 1e-8, 0.0, 4, 1e-7),
                    case((7,), 2, 0.1, (0.5, 0.5), 1e-3, 0.01, 5), case((5, 4), 6, 2e-3, (0.9, 0.95), 1e-8, 0.1, 6, 10.0)]
    return step("adamw_step", fn, adamw_step, run_cases(
        "adamw_step", run, cases, "param *= 1 - lr * weight_decay (decoupled: the decay never enters m or v); "
        "m = beta1 * m + (1 - beta1) * grad; v = beta2 * v + (1 - beta2) * grad ** 2; the bias-corrected "
        "m_hat = m / (1 - beta1 ** t) and v_hat = v / (1 - beta2 ** t); param -= lr * m_hat / (sqrt(v_hat) + eps), "
        "eps outside the square root. Return the new (param, m, v).",
        lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


# --- step 3: gradient clipping ------------------------------------------------------------------------


def _with_grads(params):
    """Copies of the parameters with copies of their .grad (copy.deepcopy leaves .grad behind)."""
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(copies, params):
        p.grad = None if q.grad is None else q.grad.clone()
    return copies


def check_clip_gradients(fn, hidden: bool = False) -> Result:
    """Step: fn(params, max_norm) -> the global gradient norm before clipping, having scaled every
    p.grad in place by min(1, max_norm / (norm + 1e-6)): torch.nn.utils.clip_grad_norm_ within 1e-6
    (relative). Parameters without a gradient are left alone."""

    def case(shapes, max_norm, seed, scale=1.0, no_grad=()):
        g = torch.Generator().manual_seed(seed)
        params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
        for i, (p, shape) in enumerate(zip(params, shapes)):
            if i not in no_grad:
                p.grad = torch.randn(*shape, generator=g) * scale
        ref = _with_grads(params)
        norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        want = Verdict(True, f"norm {norm.item():.5g} and the gradients scaled by {min(1.0, max_norm / (norm.item() + 1e-6)):.4g}")
        text = f"{len(shapes)} params {', '.join(str(tuple(s)) for s in shapes)}" + (" (one without a grad)" if no_grad else "")
        return ((Label((params, norm, [p.grad for p in ref]), text), max_norm), want)

    def run(spec, max_norm):
        params, want_norm, want_grads = spec.value
        params = _with_grads(params)  # the learner's changes stay on copies
        got = fn(params, max_norm)
        try:
            norm = float(torch.as_tensor(got).detach())
        except (TypeError, ValueError, RuntimeError):
            return Verdict(False, f"returned {short(got, 60)}, not the norm")
        if not math.isclose(norm, want_norm.item(), rel_tol=1e-6):
            return Verdict(False, f"norm {norm:.6g}, not {want_norm.item():.6g} (the norm of all the gradients as one vector)")
        for i, (p, want) in enumerate(zip(params, want_grads)):
            if want is None:
                if p.grad is not None:
                    return Verdict(False, f"param {i} had no gradient and now has one")
                continue
            off = _off(p.grad, want, 1e-6, 1e-9)
            if off:
                return Verdict(False, f"the right norm, but param {i}'s grad {off}")
        return Verdict(True, "right")

    cases = [case([(3, 4), (4,)], 1.0, 0), case([(2, 2), (5,)], 100.0, 1), case([(6, 3), (3,), (2, 2)], 0.1, 2, 5.0, no_grad=(1,))]
    hidden_cases = [case([(8, 8)], 0.5, 3), case([(4,), (4,), (4,)], 1e-3, 4, 0.01), case([(2, 3)], 2.0, 5, 1e-4),
                    case([(10, 10), (10,)], 1.0, 6, 100.0)]
    return step("clip_gradients", fn, torch.nn.utils.clip_grad_norm_, run_cases(
        "clip_gradients", run, cases, "the global norm is the norm of every gradient entry together: "
        "sqrt(sum of each p.grad's squared norm). Scale each p.grad in place (p.grad.mul_) by "
        "min(1, max_norm / (norm + 1e-6)): only ever shrink. Skip parameters whose grad is None, and return the "
        "norm from before the scaling.", lambda got, want: got.ok, hidden_cases=hidden_cases, hidden=hidden))


# --- step 4: the learning-rate schedule ---------------------------------------------------------------


def lr_schedule(step, total_steps, max_lr, warmup_steps, min_lr):
    """mini_llm's schedule as the notebook's function: schedule.lr_at's warmup, then schedule.cosine."""
    from mini_llm.schedule import cosine

    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return cosine(step / total_steps, max_lr, min_lr)


def _package_lr(step, total_steps, max_lr, warmup_steps, min_lr):
    """What train()'s schedule gives (schedule.lr_at on a fresh run's progress)."""
    from mini_llm.schedule import lr_at

    cfg = SimpleNamespace(lr=max_lr, warmup_steps=warmup_steps, min_lr_ratio=min_lr / max_lr, schedule="cosine")
    return lr_at(step / total_steps, step, cfg)


def check_lr_schedule(fn, hidden: bool = False) -> Result:
    """Step: fn(step, total_steps, max_lr, warmup_steps, min_lr) -> warmup then cosine over the whole
    run: the package's schedule.lr_at (within 1e-12)."""
    args = [(0, 100, 1e-3, 10, 1e-4), (9, 100, 1e-3, 10, 1e-4), (10, 100, 1e-3, 10, 1e-4),
            (50, 100, 1e-3, 10, 1e-4), (100, 100, 1e-3, 10, 1e-4)]
    hidden_args = [(3, 400, 6e-4, 40, 6e-5), (40, 400, 6e-4, 40, 6e-5), (123, 400, 6e-4, 40, 6e-5),
                   (399, 400, 6e-4, 40, 6e-5), (7, 30, 0.1, 1, 0.0)]
    return step("lr_schedule", fn, lr_schedule, run_cases(
        "lr_schedule", fn, [(a, _package_lr(*a)) for a in args],
        "warmup: max_lr * (step + 1) / warmup; then min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * step / total)).",
        lambda g, w: not isinstance(g, (bool, str)) and abs(float(g) - w) < 1e-12,
        hidden_cases=[(a, _package_lr(*a)) for a in hidden_args], hidden=hidden))


# --- step 5: the training loop --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _course_data():
    """The course's prepared data (the notebook's `prepared`: cached in data/prepared/)."""
    from mini_llm.corpus import prepare_corpus
    from mini_llm.data import prepare_dataset

    return prepare_dataset(prepare_corpus().files, vocab_size=8000, log=lambda *a: None, progress=False)


def my_train(cfg, prepared):
    """mini_llm's loop: train() itself, in a scratch folder: (model, losses, evals)."""
    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.plots import read_metrics
    from mini_llm.train import train

    losses = []
    with tempfile.TemporaryDirectory() as folder:
        train(cfg, out=folder, prepared=prepared, progress=False, log=lambda *a: None,
              on_step=lambda step, loss: losses.append(loss.item()))
        model, _, _ = load_checkpoint(folder, which="last")
        _, records = read_metrics(folder)
    return model, losses, [r["val_loss"] for r in records if r["subset"]][: cfg.max_steps // cfg.eval_interval]


LOOP_SIZES = dict(n_embd=16, n_head=2, n_layer=1, block_size=16, batch_size=4, max_steps=6, eval_interval=3)


def _loop_config(seed: int, sizes: tuple):
    """A small TrainConfig of check_training_loop (sizes: LOOP_SIZES's (name, value) pairs to change)."""
    from mini_llm.train import TrainConfig

    return TrainConfig(arch="gpt2", lr=1e-2, warmup_steps=2, eval_windows=4, final_eval_windows=4, log_interval=1000,
                       seed=seed, precision="fp32", head_chunk=0, **dict(LOOP_SIZES, **dict(sizes)))


@functools.lru_cache(maxsize=8)
def _loop_reference(seed: int, sizes: tuple):
    """What train() does with that config: (final weights, losses, evals), computed once."""
    model, losses, evals = my_train(_loop_config(seed, sizes), _course_data())
    return model.state_dict(), losses, evals


def _loop_case(seed, **changes):
    """(args, want) of check_training_loop. train() runs only once the learner's loop has returned
    (so an unwritten loop costs nothing)."""
    sizes = tuple(changes.items())
    cfg = _loop_config(seed, sizes)
    shown = ", ".join(f"{k}={v}" for k, v in dict(LOOP_SIZES, **changes).items())
    want = Verdict(True, f"train()'s {cfg.max_steps} losses, {cfg.max_steps // cfg.eval_interval} evaluations and final weights")
    return ((Label((seed, sizes), f"TrainConfig(seed={seed}, {shown})"),), want)


def _loop_cases(hidden: bool):
    if hidden:
        return [_loop_case(3, n_embd=24, n_head=3, batch_size=2, block_size=8, max_steps=5, eval_interval=5)]
    return [_loop_case(1), _loop_case(2, n_layer=2, max_steps=4, eval_interval=2)]


def check_training_loop(fn, hidden: bool = False) -> Result:
    """Step: fn(cfg, prepared) -> (model, losses, evals): the loop of train() for cfg.max_steps steps
    (batches, forward, backward, clipping, AdamW with the two decay groups, the LR schedule; an
    evaluation every cfg.eval_interval steps). On small configs, every step's loss and every
    evaluation are train()'s within 1e-4 (relative), and so are the final weights (1e-4 absolute:
    the attention's key biases get no true gradient, only rounding noise, which AdamW's normalised
    step turns into tiny moves): any of AdamW's implementations (fused, foreach, a for-loop) passes."""
    prepared = _course_data()

    def run(spec):
        with contextlib.redirect_stdout(io.StringIO()):  # what the loop prints is not part of the proof
            got = fn(_loop_config(*spec.value), prepared)
        weights, losses, evals = _loop_reference(*spec.value)
        try:
            model, got_losses, got_evals = got
            got_losses, got_evals = [float(x) for x in got_losses], [float(x) for x in got_evals]
            state = model.state_dict()
        except (TypeError, ValueError, AttributeError):
            return Verdict(False, f"{short(got, 60)}: not (model, losses, evals)")
        for name, have, want in (("losses", got_losses, losses), ("evaluations", got_evals, evals)):
            if len(have) != len(want):
                return Verdict(False, f"{len(have)} {name}, not {len(want)}")
            for i, (h, w) in enumerate(zip(have, want)):
                if not math.isclose(h, w, rel_tol=1e-4):
                    return Verdict(False, f"{name}[{i}] = {h:.6f}, not {w:.6f}")
        for key, want in weights.items():
            if key not in state:
                return Verdict(False, f"the model has no {key}")
            off = _off(state[key], want, 1e-4, 1e-4)
            if off:
                return Verdict(False, f"the right losses, but the final {key} {off}")
        return Verdict(True, "right")

    return step("my_train", fn, my_train, run_cases(
        "my_train", run, _loop_cases(False), "the order of train(): seed_everything(cfg.seed) then the model; AdamW "
        "on the two decay groups with betas (cfg.beta1, cfg.beta2); the batch generator seeded with cfg.seed * 1000; "
        "per step: set the LR, draw the batch, forward, backward, clip at cfg.grad_clip, optimizer step, zero the "
        "gradients; after every cfg.eval_interval steps, evaluate on the first cfg.eval_windows windows.",
        lambda got, want: got.ok, hidden_cases=_loop_cases(True) if hidden else (), hidden=hidden))


# --- exercises ------------------------------------------------------------------------------------------


def check_nats_per_char(fn, hidden: bool = False) -> Result:
    """fn(loss_per_token, n_tokens, n_chars) -> nats per character."""
    cases = [((2.0, 100, 350), 2.0 * 100 / 350), ((4.2, 10, 10), 4.2)]
    hidden_cases = [((5.195, 1000, 3143), 5.195 * 1000 / 3143), ((0.5, 7, 2), 1.75)]
    return run_cases("nats per character", fn, cases, "total nats = loss * n_tokens; spread over n_chars characters.",
                  lambda g, w: abs(float(g) - w) < 1e-9, hidden_cases=hidden_cases, hidden=hidden)


def check_unigram_loss(fn, hidden: bool = False) -> Result:
    """fn(train_ids, val_ids, vocab_size) -> the mean cross-entropy (nats per token) on val_ids of the
    model that knows only token frequencies: p(t) = (count of t in train_ids + 1) / (len(train_ids) + V)."""

    def want(train_ids, val_ids, V):
        counts = torch.bincount(torch.as_tensor(train_ids, dtype=torch.long), minlength=V).double()
        p = (counts + 1) / (len(train_ids) + V)
        return -p.log()[torch.as_tensor(val_ids, dtype=torch.long)].mean().item()

    def case(train_ids, val_ids, V):
        train_ids, val_ids = torch.tensor(train_ids), torch.tensor(val_ids)
        return ((Label(train_ids, f"train {short(train_ids.tolist(), 40)}"), Label(val_ids, f"val {short(val_ids.tolist(), 30)}"), V),
                want(train_ids, val_ids, V))

    g = torch.Generator().manual_seed(0)
    cases = [case([0, 0, 1, 2], [0, 1], 3), case([1, 1, 1, 1], [0, 1, 2, 3], 4), case([2, 0, 2], [2, 2, 2], 5)]
    hidden_cases = [case([0], [0], 1), case(torch.randint(0, 50, (500,), generator=g).tolist(),
                                           torch.randint(0, 60, (80,), generator=g).tolist(), 64),
                    case([3] * 10, [0, 3], 4), case(list(range(100)), [7, 99, 0], 100)]

    def run(train_ids, val_ids, V):
        return fn(train_ids.value.clone(), val_ids.value.clone(), V)

    def same(got, want):
        return not isinstance(got, (bool, str)) and got is not None and math.isclose(float(got), want, rel_tol=1e-6)

    return run_cases("unigram loss", run, cases, "count each token in the training ids (every id below vocab_size, "
                  "seen or not, gets one extra count); p(t) = count / total count; the loss is the mean of -log p(t) "
                  "over the validation ids, in nats.", same, hidden_cases=hidden_cases, hidden=hidden)


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

