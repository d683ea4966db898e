"""The checks of notebook 05_training: right answers (in every standard form: AdamW's for-loop and
foreach orders, float64, the package's own pieces) pass, public and hidden cases; wrong ones fail
naming the input and the first difference; echoing the inputs fails; unwritten says so; each step
hands on yours or the package's piece; changing the inputs in place cannot fool them. Then the
notebook's step and exercise cells."""

import math
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.course import checks as ex
from mini_llm.course.checks import nb05_training as nb05
from mini_llm.schedule import LRPlan
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    assert_proofs_are_portable,
    contract_tests,
    notebook_tests,
    step_tests,
)

# --- step 1: cross_entropy -------------------------------------------------------------------------


def cross_entropy(logits, targets):  # the notebook's: log-softmax of the shifted logits
    N = logits.size(0)
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
    rows = torch.arange(N)
    dlogits = log_probs.exp()
    dlogits[rows, targets] -= 1
    return -log_probs[rows, targets].mean(), dlogits / N


def cross_entropy_one_hot(logits, targets):  # another correct form: float64, softmax, an explicit one-hot, a float back
    z = logits.double()
    p = torch.softmax(z, dim=-1)
    one_hot = F.one_hot(targets, z.size(-1)).double()
    loss = (torch.logsumexp(z, -1) - (z * one_hot).sum(-1)).mean()
    return loss.item(), (p - one_hot) / z.size(0)


def ce_unstable(logits, targets):  # wrong for large logits: exp overflows
    p = logits.exp() / logits.exp().sum(-1, keepdim=True)
    rows = torch.arange(logits.size(0))
    g = p.clone()
    g[rows, targets] -= 1
    return -p[rows, targets].log().mean(), g / logits.size(0)


def ce_sum(logits, targets):  # wrong: the gradient of the sum, not the mean
    loss, grad = cross_entropy(logits, targets)
    return loss, grad * logits.size(0)


def ce_no_one_hot(logits, targets):  # wrong: softmax alone
    loss, _ = cross_entropy(logits, targets)
    return loss, torch.softmax(logits, -1) / logits.size(0)


# --- step 2: adamw_step ------------------------------------------------------------------------------


def adamw_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):  # the notebook's
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps), m, v


def adamw_torch_order(param, grad, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
    """Another correct form: torch's for-loop order (lerp_, addcmul_, the step size folded), in place."""
    param.mul_(1 - lr * weight_decay)
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)
    param.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))
    return param, m, v


def adamw_coupled(param, grad, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):  # wrong: Adam's L2
    return adamw_step(param, grad + weight_decay * param, m, v, t, lr, beta1, beta2, eps, 0.0)


def adamw_no_bias_correction(param, grad, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * m / (v.sqrt() + eps), m, v


def adamw_eps_inside(param, grad, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * (m / (1 - beta1 ** t)) / (v / (1 - beta2 ** t) + eps).sqrt(), m, v


# --- step 3: lr_schedule -----------------------------------------------------------------------------


def lr_package(step, total, max_lr, warmup, min_lr):  # the notebook's
    if step < warmup:
        return max_lr * (step + 1) / warmup
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / total))


def lr_by_lrplan(step, total, max_lr, warmup, min_lr):  # another correct form: the package's LRPlan, as a tensor
    cfg = SimpleNamespace(lr=max_lr, warmup_steps=warmup, min_lr_ratio=min_lr / max_lr)
    return torch.tensor(LRPlan(total).lr(step, 0.0, cfg), dtype=torch.float64)


def lr_nanogpt(step, total, max_lr, warmup, min_lr):  # nanoGPT's get_lr: another convention, not the package's
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    ratio = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


# --- step 4: clip_gradients ----------------------------------------------------------------------------


def clip_gradients(params, max_norm):  # the notebook's
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return norm


def clip_by_python_floats(params, max_norm):  # another correct form: float64 sums, a float back
    grads = [p.grad for p in params if p.grad is not None]
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    if norm > max_norm:
        for g in grads:
            g *= max_norm / (norm + 1e-6)
    return norm


def clip_each_tensor(params, max_norm):  # wrong: clips each gradient on its own
    norms = [torch.nn.utils.clip_grad_norm_([p], max_norm) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


def clip_returns_after(params, max_norm):  # wrong: returns the norm after clipping
    clip_gradients(params, max_norm)
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))


def clip_new_grads(params, max_norm):  # wrong: scales copies, so p.grad is left as it was
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    _ = [g * torch.clamp(max_norm / (norm + 1e-6), max=1.0) for g in grads]
    return norm


# --- step 5: my_train ---------------------------------------------------------------------------------


def draw_batch(ids, B, T, generator):
    starts = torch.randint(len(ids) - T, (B,), generator=generator)
    return torch.stack([ids[s:s + T] for s in starts]), torch.stack([ids[s + 1:s + T + 1] for s in starts])


def param_groups(model, weight_decay):
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


@torch.no_grad()
def evaluate_fixed(model, val_ids, block_size, max_windows):
    from mini_llm.data import eval_windows

    model.eval()
    x, y = eval_windows(val_ids, block_size, max_windows)
    total = sum(model(x[i:i + 32], y[i:i + 32])[1].item() * y[i:i + 32].numel() for i in range(0, len(x), 32))
    model.train()
    return total / y.numel()


def loop_with(fused=True, clip=True, schedule=lr_package, generator_seed=lambda cfg: cfg.seed * 1000, groups=param_groups):
    def my_train(cfg, prepared):
        from mini_llm.device import seed_everything
        from mini_llm.model import MiniGPT

        seed_everything(cfg.seed)
        model = MiniGPT(cfg.model_config(prepared.vocab_size))
        optimizer = torch.optim.AdamW(groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                      fused=fused or None, foreach=None if fused else True)
        generator = torch.Generator().manual_seed(generator_seed(cfg))
        ids = torch.from_numpy(prepared.train.astype("int64"))
        losses, evals = [], []
        for step in range(cfg.max_steps):
            lr = schedule(step, cfg.max_steps, cfg.lr, cfg.warmup_steps, cfg.lr * cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = draw_batch(ids, cfg.batch_size, cfg.block_size, generator)
            _, loss = model(x, y)
            loss.backward()
            if clip:
                clip_gradients(list(model.parameters()), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if (step + 1) % cfg.eval_interval == 0:
                evals.append(evaluate_fixed(model, prepared.val, cfg.block_size, cfg.eval_windows))
                print("an eval")  # the proof keeps what the loop prints out of its own output
        return model, losses, evals

    return my_train


def all_decay(model, weight_decay):
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]


# --- unigram_loss ---------------------------------------------------------------------------------------


def unigram_loss(train_ids, val_ids, V):
    counts = torch.bincount(train_ids, minlength=V).double() + 1
    return -(counts / counts.sum()).log()[val_ids].mean().item()


def unigram_loss_counter(train_ids, val_ids, V):  # another correct form: a Counter, math.log
    import collections

    counts = collections.Counter(train_ids.tolist())
    total = len(train_ids) + V
    return sum(-math.log((counts[t] + 1) / total) for t in val_ids.tolist()) / len(val_ids)


# --- accumulate: gradients of the mean over all tokens, micro-batch by micro-batch --------------


def accumulate(model, batches):
    n = sum(y.numel() for _, y in batches)
    mean = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        (loss * y.numel() / n).backward()
        mean += loss.item() * y.numel() / n
    return mean


def accumulate_summed(model, batches):  # another correct form: summed token losses, a 0-d tensor back
    n = sum(y.numel() for _, y in batches)
    total = torch.zeros(())
    for x, y in batches:
        logits, _ = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="sum") / n
        loss.backward()
        total = total + loss.detach()
    return total


def accumulate_by_k(model, batches):  # right only for equal micro-batches
    mean = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        (loss / len(batches)).backward()
        mean += loss.item() / len(batches)
    return mean


def accumulate_unscaled(model, batches):
    n = sum(y.numel() for _, y in batches)
    mean = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        loss.backward()
        mean += loss.item() * y.numel() / n
    return mean


def accumulate_and_step(model, batches):  # also takes an optimizer step: the weights change
    result = accumulate(model, batches)
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-3 * p.grad
    return result


def accumulate_without_backward(model, batches):
    with torch.no_grad():
        n = sum(y.numel() for _, y in batches)
        return sum(model(x, y)[1].item() * y.numel() / n for x, y in batches)


def accumulate_in_place_trick(model, batches):
    """Rewrites the caller's batches so every target is token 0, then accumulates on them."""
    for _, y in batches:
        y.zero_()
    return accumulate(model, batches)


# --- decay_groups: the module-type rule ----------------------------------------------------------


def decay_groups(model, weight_decay):
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            (decay if isinstance(module, nn.Linear) and name == "weight" and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def decay_groups_per_tensor(model, weight_decay):
    """Another correct form: one group per tensor, a tuple, params as tuples, by names."""
    modules = dict(model.named_modules())
    embedding_tensors = {id(m.weight) for m in modules.values() if isinstance(m, nn.Embedding)}
    groups = []
    for name, p in model.named_parameters():  # tied tensors are listed once
        owner, _, leaf = name.rpartition(".")
        linear = isinstance(modules[owner], nn.Linear) and leaf == "weight"
        groups.append({"params": (p,), "weight_decay": weight_decay if linear and id(p) not in embedding_tensors else 0})
    return tuple(groups)


def decay_groups_generators(model, weight_decay):  # another correct form: generators, by names (a tied tensor is listed once)
    decay = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    named = list(model.named_parameters())
    return [{"params": (p for n, p in named if n.endswith(".weight") and n.rpartition(".")[0] in decay),
             "weight_decay": weight_decay},
            {"params": (p for n, p in named if not (n.endswith(".weight") and n.rpartition(".")[0] in decay)),
             "weight_decay": 0.0}]


def groups_by_dim(model, weight_decay):  # the shape rule of section 4: embeddings decay
    ps = list(model.parameters())
    return [{"params": [p for p in ps if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}]


def groups_tied_twice(model, weight_decay):  # forgets the tie: wte.weight in both groups
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_without_weight_decay_key(model, weight_decay):
    groups = decay_groups(model, weight_decay)
    del groups[1]["weight_decay"]  # AdamW would give it its default, 0.01
    return groups


def groups_decaying_layernorm(model, weight_decay):
    groups = decay_groups(model, weight_decay)
    ln = [p for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
    ids = {id(p) for p in ln}
    return [{"params": groups[0]["params"] + ln, "weight_decay": weight_decay},
            {"params": [p for p in groups[1]["params"] if id(p) not in ids], "weight_decay": 0.0}]


def groups_untie_first(model, weight_decay):
    """In place: unties the LM head (a new tensor), so the naive rule no longer meets a tie."""
    for m in model.modules():
        if hasattr(m, "lm_head"):
            m.lm_head.weight = nn.Parameter(m.lm_head.weight.detach().clone())
    return groups_tied_twice(model, weight_decay)


# check -> (right answers, wrong answers, what echoing the inputs looks like): the steps
STEP_CASES = {
    ex.check_cross_entropy: ([cross_entropy, cross_entropy_one_hot], [ce_unstable, ce_sum, ce_no_one_hot],
                             lambda logits, targets: (logits, logits)),
    ex.check_adamw_step: ([adamw_step, adamw_torch_order], [adamw_coupled, adamw_no_bias_correction, adamw_eps_inside,
                                                            lambda p, g, m, v, t, *rest: adamw_step(p, g, m, v, 1, *rest)],
                          lambda p, g, m, v, *rest: (p, m, v)),
    ex.check_lr_schedule: ([lr_package, lr_by_lrplan], [lr_nanogpt, lambda s, *rest: lr_package(s + 1, *rest)],
                           lambda step, *rest: step),
    ex.check_clip_gradients: ([clip_gradients, clip_by_python_floats], [clip_each_tensor, clip_returns_after, clip_new_grads],
                              lambda params, max_norm: max_norm),
    ex.check_training_loop: ([loop_with(), loop_with(fused=False)],
                             [loop_with(clip=False), loop_with(schedule=lr_nanogpt), loop_with(generator_seed=lambda cfg: cfg.seed),
                              loop_with(groups=all_decay)],
                             lambda cfg, prepared: (None, [], [])),
}
# ... and the exercises
CASES = {
    ex.check_accumulate: ([accumulate, accumulate_summed],
                          [accumulate_by_k, accumulate_unscaled, accumulate_and_step, accumulate_without_backward,
                           lambda model, batches: accumulate(model, batches) + 0.5],
                          lambda model, batches: batches),
    ex.check_decay_groups: ([decay_groups, decay_groups_per_tensor, decay_groups_generators],
                            [groups_by_dim, groups_tied_twice, groups_without_weight_decay_key,
                             groups_decaying_layernorm, lambda model, wd: decay_groups(model, wd)[:1]],
                            lambda model, wd: model),
    ex.check_unigram_loss: ([unigram_loss, unigram_loss_counter],
                            [lambda tr, va, V: unigram_loss(tr, va, V + 1),  # the smoothing over one token too many
                             lambda tr, va, V: -torch.log(torch.bincount(tr, minlength=V).double().clamp(min=1) / len(tr))[va].mean(),
                             lambda tr, va, V: unigram_loss(va, tr, V)],
                            lambda tr, va, V: V),
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES, may_raise=False)
(test_steps_right_answers_pass, test_steps_wrong_answers_fail_naming_the_input, test_steps_echoing_the_inputs_fails,
 test_steps_not_written_yet) = contract_tests(STEP_CASES)

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_cross_entropy: nb05.cross_entropy, ex.check_adamw_step: nb05.adamw_step,
         ex.check_lr_schedule: nb05.lr_schedule, ex.check_clip_gradients: torch.nn.utils.clip_grad_norm_,
         ex.check_training_loop: nb05.my_train}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, STEP_CASES)


def test_the_stand_ins_are_what_train_uses():
    """The pieces handed on when a step fails: autograd's gradient, torch's AdamW, the package's schedule."""
    from mini_llm.schedule import lr_at

    logits, targets = torch.randn(6, 9), torch.tensor([0, 8, 3, 3, 1, 2])
    loss, grad = nb05.cross_entropy(logits, targets)
    assert torch.allclose(loss, F.cross_entropy(logits, targets)) and torch.allclose(grad, cross_entropy(logits, targets)[1], atol=1e-7)
    cfg = SimpleNamespace(lr=3e-3, warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert all(math.isclose(nb05.lr_schedule(s, 100, 3e-3, 10, 3e-4), lr_at(s / 100, s, cfg), rel_tol=1e-12) for s in range(100))
    W, g = torch.randn(4, 3), torch.randn(4, 3)
    p = nn.Parameter(W.clone())
    opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    state = (W, torch.zeros_like(W), torch.zeros_like(W))
    for t in range(1, 4):
        p.grad = g * t
        opt.step()
        state = nb05.adamw_step(state[0], g * t, state[1], state[2], t, 1e-2, 0.9, 0.95, 1e-8, 0.1)
    assert torch.equal(state[0], p.detach())


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public cases passes them and fails the hidden ones."""
    seen = {}

    def recorder(*args):
        key = tuple(a.tolist() if isinstance(a, torch.Tensor) else a for a in args)
        seen[repr(key)] = unigram_loss(*args)
        return seen[repr(key)]

    assert ex.check_unigram_loss(recorder)
    public = dict(seen)
    cheat = lambda *args: public[repr(tuple(a.tolist() if isinstance(a, torch.Tensor) else a for a in args))]  # noqa: E731
    assert ex.check_unigram_loss(cheat)
    result = ex.check_unigram_loss(cheat, hidden=True)
    assert not result and "raised KeyError" in result.message


def test_the_first_difference_is_named():
    message = ex.check_cross_entropy(ce_unstable).message
    assert message.startswith("cross_entropy(logits (3, 5) of size ~100, targets [4, 2, 3]): expected loss ")
    assert "got loss nan" in message and "max" in message
    message = ex.check_cross_entropy(ce_sum).message
    assert "got the right loss, but the gradient at [0, 0]: expected " in message, message
    message = ex.check_adamw_step(adamw_no_bias_correction).message
    assert message.startswith("adamw_step(param (4, 6) and 3 gradients, 0.001, 0.9, 0.95, 1e-08, 0.1): expected "), message
    assert "got after step 1, param at [0, 0]: expected " in message, message
    message = ex.check_adamw_step(adamw_coupled).message
    assert "got after step 1, m at [0, 0]" in message, message
    message = ex.check_clip_gradients(clip_returns_after).message
    assert "clip_gradients(2 params (3, 4), (4,), 1.0): expected norm " in message and "got norm 1, not " in message, message
    message = ex.check_training_loop(loop_with(clip=False)).message
    assert message.startswith("my_train(TrainConfig(seed=1, n_embd=16, n_head=2, n_layer=1, block...): expected train()'s "
                              "6 losses, 2 evaluations and final weights, got "), message
    assert "the final wte.weight at [0, 3]: expected " in message, message
    message = ex.check_training_loop(loop_with(schedule=lr_nanogpt)).message
    assert "got losses[1] = " in message, message


def test_equal_micro_batches_pass_public_but_not_hidden_by_k():
    """Dividing by k is right for equal micro-batches (the notebook's case) and wrong otherwise."""
    result = ex.check_accumulate(accumulate_by_k)
    assert not result and "(2, 16), (3, 5), (1, 9)" in result.message, result.message
    assert "off by up to" in result.message


def test_mutating_the_inputs_cannot_fool_a_check():
    result = ex.check_accumulate(accumulate_in_place_trick)
    assert not result and "off by up to" in result.message, result.message
    result = ex.check_accumulate(accumulate_and_step)
    assert not result and "the weights changed" in result.message
    result = ex.check_decay_groups(groups_untie_first)
    assert not result and "not one of the model's parameters" in result.message, result.message


def test_feedback_is_specific():
    result = ex.check_decay_groups(groups_tied_twice)
    assert "decay groups(MiniGPT(1 layer, 16 wide), 0.1)" in result.message
    assert "wte.weight in two groups" in result.message
    result = ex.check_decay_groups(groups_by_dim)
    assert "wte.weight at weight_decay 0.1: it is an embedding" in result.message, result.message
    result = ex.check_decay_groups(groups_without_weight_decay_key)
    assert "not a list of groups" in result.message and "KeyError" in result.message
    result = ex.check_accumulate(lambda model, batches: model)
    assert "got a MiniGPT: not a loss" in result.message, result.message
    result = ex.check_accumulate(accumulate_without_backward)
    assert ".grad is None" in result.message
    result = ex.check_unigram_loss(CASES[ex.check_unigram_loss][1][2])
    assert result.message.startswith("unigram loss(train [0, 0, 1, 2], val [0, 1], 3): expected "), result.message


def test_the_checks_leave_the_global_rng_alone():
    """The checks build their models under their own seeds and restore the learner's RNG."""
    assert_checks_leave_the_global_rng_alone(CASES)
    assert_checks_leave_the_global_rng_alone({k: v for k, v in STEP_CASES.items() if k is not ex.check_training_loop})
    a, b = ex.check_accumulate(accumulate_by_k, hidden=True), ex.check_accumulate(accumulate_by_k, hidden=True)
    assert a.message == b.message


# --- the notebook's cells --------------------------------------------------------------------------


def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    assert_proofs_are_portable("05_training", 10, 15)


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests("05_training", {**STEP_CASES, **CASES}, ex, {"math": math, "torch": torch})
